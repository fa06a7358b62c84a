//! sm-ssh as `session-manager-plugin` under the real AWS CLI
//! (`SM_SSH_TEST_AWS_CLI`, set by scripts/test): `aws ssm start-session` as
//! an ssh ProxyCommand, and port forwarding on `localPortNumber`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{assert_exit, me, seed_with, training_instance, Env};
use sm_ssh_integration::openssh::OpenSshServer;

const INSTANCE: &str = "mi-0a1b2c3d4e5f60718";

fn aws_cli() -> Option<PathBuf> {
    match std::env::var_os("SM_SSH_TEST_AWS_CLI") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            eprintln!("SM_SSH_TEST_AWS_CLI is unset (scripts/test sets it); skipping");
            None
        }
    }
}

/// A directory holding `session-manager-plugin` → the sm-ssh binary.
fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_sm-ssh"),
        dir.path().join("session-manager-plugin"),
    )
    .unwrap();
    dir
}

/// `program` with the fake's environment and the plugin first on PATH.
fn command(env: &Env, program: &Path, plugins: &Path) -> Command {
    let mut command = Command::new(program);
    common::isolate(&mut command, env.home());
    command.env("SM_SSH_HOME", env.data_dir());
    for (key, value) in env.fake.env() {
        command.env(key, value);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![plugins.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    command.env("PATH", std::env::join_paths(paths).unwrap());
    command
}

#[test]
fn version_and_installation_check() {
    let env = Env::start(seed_with(vec![]));
    let plugins = plugin_dir();
    let plugin = plugins.path().join("session-manager-plugin");
    let output = command(&env, &plugin, plugins.path())
        .arg("--version")
        .output()
        .unwrap();
    let (stdout, _) = assert_exit(&output, 0);
    let version = stdout.trim();
    assert_eq!(version.split('.').count(), 4, "{version}");
    assert!(
        version.split('.').all(|n| n.parse::<u32>().is_ok()),
        "{version}"
    );
    let output = command(&env, &plugin, plugins.path()).output().unwrap();
    assert_exit(&output, 0);
}

#[test]
fn shell_documents_are_refused_clearly() {
    let env = Env::start(seed_with(vec![]));
    let plugins = plugin_dir();
    let plugin = plugins.path().join("session-manager-plugin");
    let response = r#"{"SessionId":"alice-0123456789abcdef0","TokenValue":"t","StreamUrl":"ws://127.0.0.1:9/v1/data-channel/alice-0123456789abcdef0"}"#;
    let request =
        format!(r#"{{"Target":"{INSTANCE}","DocumentName":"SSM-SessionManagerRunShell"}}"#);
    let output = command(&env, &plugin, plugins.path())
        .args([
            response,
            "eu-west-1",
            "StartSession",
            "",
            &request,
            &env.fake.endpoint(),
        ])
        .output()
        .unwrap();
    let (_, stderr) = assert_exit(&output, 2);
    assert!(stderr.contains("SSM-SessionManagerRunShell"), "{stderr}");
    assert!(stderr.contains("AWS-StartSSHSession"), "{stderr}");
}

#[test]
fn aws_cli_start_session_works_as_ssh_proxy_command() {
    let Some(aws) = aws_cli() else { return };
    let env = Env::start(seed_with(vec![]));
    let sandbox = env
        .fake
        .add_instance(training_instance(INSTANCE, "my-job", 1_700_000_000))
        .unwrap();
    let sshd = OpenSshServer::start(&sandbox).expect("sshd starts");
    env.fake.map_port(INSTANCE, 22, sshd.addr());
    // Authorise sm-ssh's key by hand: this test is about the plugin path.
    let config = env.home().join("ssh_config");
    assert_exit(
        &env.run([
            "config".as_ref(),
            "install".as_ref(),
            "--file".as_ref(),
            config.as_os_str(),
        ]),
        0,
    );
    let identity = env.data_dir().join("id_ed25519");
    let public = std::fs::read_to_string(identity.with_extension("pub")).unwrap();
    std::fs::write(sandbox.join("etc/ssh/authorized_keys"), public).unwrap();

    let plugins = plugin_dir();
    let proxy = format!(
        "{} ssm start-session --endpoint-url {} --target %h --document-name AWS-StartSSHSession --parameters portNumber=%p",
        aws.display(),
        env.fake.endpoint()
    );
    let output = command(&env, Path::new("ssh"), plugins.path())
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-o")
        .arg(format!("ProxyCommand={proxy}"))
        .arg("-i")
        .arg(&identity)
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            env.home().join("known_hosts").display()
        ))
        .args(["-o", "StrictHostKeyChecking=accept-new"])
        .arg(format!("{}@{INSTANCE}", me()))
        .arg("echo through the AWS CLI")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, _) = assert_exit(&output, 0);
    assert_eq!(stdout, "through the AWS CLI\n");
}

#[test]
fn aws_cli_port_forwarding_listens_on_the_local_port() {
    let Some(aws) = aws_cli() else { return };
    let env = Env::start(seed_with(vec![]));
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let service_addr = service.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut socket in service.incoming().map_while(Result::ok) {
            let _ = socket.write_all(b"forwarded by the plugin\n");
        }
    });
    let mut instance = training_instance(INSTANCE, "my-job", 1_700_000_000);
    instance.ports.insert(8080, service_addr);
    env.fake.add_instance(instance).unwrap();

    let plugins = plugin_dir();
    let (child, port) = start_port_forwarding(&env, &aws, plugins.path());
    for _ in 0..3 {
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "forwarded by the plugin\n");
    }
    let (_, terminated) = interrupt_and_count(child, &env);
    assert_eq!(terminated, 1, "Ctrl-C ends the session");
}

#[test]
fn aws_cli_port_forwarding_uses_basic_mode_with_an_old_agent() {
    let Some(aws) = aws_cli() else { return };
    let env = Env::start(seed_with(vec![]));
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let service_addr = service.local_addr().unwrap();
    std::thread::spawn(move || {
        for socket in service.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(socket);
            let mut line = String::new();
            if reader.read_line(&mut line).is_ok() {
                let _ = reader
                    .get_mut()
                    .write_all(format!("echo {line}").as_bytes());
            }
        }
    });
    let mut instance = training_instance(INSTANCE, "old-job", 1_700_000_000);
    instance.agent_version = "3.0.196.0".into();
    instance.ports.insert(8080, service_addr);
    env.fake.add_instance(instance).unwrap();

    let plugins = plugin_dir();
    let (child, port) = start_port_forwarding(&env, &aws, plugins.path());
    // Basic mode: one connection after the other over the one session.
    for n in 0..2 {
        let socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut reader = BufReader::new(socket);
        reader
            .get_mut()
            .write_all(format!("ping {n}\n").as_bytes())
            .unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        assert_eq!(answer, format!("echo ping {n}\n"));
    }
    assert_eq!(interrupt_and_count(child, &env), (1, 1));
}

/// `aws ssm start-session` with AWS-StartPortForwardingSession to the
/// instance's port 8080 on any local port: the child and that port.
fn start_port_forwarding(env: &Env, aws: &Path, plugins: &Path) -> (std::process::Child, u16) {
    let mut child = command(env, aws, plugins)
        .args([
            "ssm",
            "start-session",
            "--endpoint-url",
            &env.fake.endpoint(),
        ])
        .args([
            "--target",
            INSTANCE,
            "--document-name",
            "AWS-StartPortForwardingSession",
        ])
        .args(["--parameters", "portNumber=8080,localPortNumber=0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group, so Ctrl-C can reach the plugin under the CLI.
        .process_group(0)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("the plugin announces its port")
            .unwrap();
        if let Some(rest) = line.strip_prefix("Port ") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep reading, so that the plugin's last lines never meet a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, port)
}

/// Ctrl-C to the CLI's process group; once it exited 0, the successful
/// StartSession and TerminateSession calls.
fn interrupt_and_count(mut child: std::process::Child, env: &Env) -> (usize, usize) {
    let group = format!("-{}", child.id());
    let status = Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let events = env.fake.events();
    let calls = |action: &str| {
        events
            .iter()
            .filter(|e| e.action == action && e.error.is_none())
            .count()
    };
    (calls("ssm:StartSession"), calls("ssm:TerminateSession"))
}
