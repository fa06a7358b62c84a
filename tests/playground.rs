//! `sm-ssh playground`: the scripted flow with OpenSSH and with the built-in
//! client, and `--serve` driven from "another terminal" (this test).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

const SM_SSH: &str = env!("CARGO_BIN_EXE_sm-ssh");

/// `sm-ssh playground <args>` with a private HOME and data dir.
fn playground(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(SM_SSH);
    command.arg("playground").args(args);
    common::isolate(&mut command, home);
    command.env("SM_SSH_HOME", home.join("sm-ssh-data"));
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_flow(out: &Output, client: &str) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for step in [
        "1/4 resolved demo.training.sagemaker to mi-",
        "2/4 pushed key SHA256:",
        "4/4 the command exited with status 0",
        "saw logins as root",
        "and without sshd: `sm-ssh shell demo.training.sagemaker`",
        "Exiting session with sessionId",
    ] {
        assert!(stderr.contains(step), "no {step:?} in:\n{stderr}");
    }
    assert!(stderr.contains(client), "not with {client}:\n{stderr}");
    // Computed on the far side, so it cannot come from anywhere else.
    assert_eq!(stdout, "marker-42\n", "stderr:\n{stderr}");
    // And again through the shell session (the typed line shows only the formula).
    assert!(stderr.contains("marker-42"), "{stderr}");
}

#[test]
fn scripted_run_with_openssh() {
    let home = tempfile::tempdir().unwrap();
    let out = playground(home.path(), &["--command", "echo marker-$((6*7))"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_flow(&out, "with OpenSSH");
}

#[test]
fn scripted_run_with_the_builtin_client_when_openssh_is_not_installed() {
    let home = tempfile::tempdir().unwrap();
    // A PATH with every program of this machine but ssh.
    let bin = home.path().join("bin-without-ssh");
    std::fs::create_dir(&bin).unwrap();
    for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let link = bin.join(entry.file_name());
            if entry.file_name() != "ssh" && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    assert!(!bin.join("ssh").exists());

    let out = playground(home.path(), &["--command", "echo marker-$((6*7))"])
        .env("PATH", &bin)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_flow(&out, "with the built-in client");
}

/// `sm-ssh playground --serve`, stopped with SIGTERM when dropped.
struct Serving {
    child: Child,
    env: Vec<(String, String)>,
    ssh_config: String,
}

impl Serving {
    fn start(home: &Path) -> Serving {
        let mut child = playground(home, &["--serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut env = Vec::new();
        let mut ssh_config = None;
        let stdout = BufReader::new(child.stdout.take().unwrap());
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(assignment) = line.strip_prefix("export ") {
                let (key, value) = assignment.split_once('=').unwrap();
                env.push((key.to_string(), value.to_string()));
            }
            if let Some(path) = line.strip_prefix("#   ssh -F ") {
                ssh_config = path.split_whitespace().next().map(str::to_string);
            }
            if line == "# Ctrl-C stops the playground." {
                break;
            }
        }
        Serving {
            child,
            env,
            ssh_config: ssh_config.expect("the ssh config path is printed"),
        }
    }

    /// A command from "another terminal": the printed exports and nothing else of AWS.
    fn command(&self, home: &Path, program: &str) -> Command {
        let mut command = Command::new(program);
        common::isolate(&mut command, home);
        command
            .env("SM_SSH_HOME", home.join("sm-ssh-data"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        command
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_answers_list_ssh_and_forward_from_another_terminal() {
    let home = tempfile::tempdir().unwrap();
    let serving = Serving::start(home.path());
    let keys: Vec<&str> = serving.env.iter().map(|(k, _)| k.as_str()).collect();
    for key in [
        "AWS_ENDPOINT_URL_SSM",
        "AWS_ENDPOINT_URL_STS",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(keys.contains(&key), "{key} not exported: {keys:?}");
    }

    let list = serving
        .command(home.path(), SM_SSH)
        .arg("list")
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        text(&list.stdout).contains("demo.training.sagemaker"),
        "{}",
        text(&list.stdout)
    );

    // ssh through the printed config: ProxyCommand `sm-ssh proxy %h` pushes the key.
    let ssh = serving
        .command(home.path(), "ssh")
        .args(["-F", &serving.ssh_config, "-o", "BatchMode=yes"])
        .args(["demo.training.sagemaker", "echo via-$((40+2))"])
        .output()
        .unwrap();
    assert!(ssh.status.success(), "{}", text(&ssh.stderr));
    assert_eq!(text(&ssh.stdout), "via-42\n");

    // A key nobody pushed is refused by the instance's sshd.
    let stranger = home.path().join("stranger");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(keygen.success());
    let config = std::fs::read_to_string(&serving.ssh_config).unwrap();
    let without_key: String = config
        .lines()
        .filter(|line| !line.trim_start().starts_with("IdentityFile"))
        .map(|line| format!("{line}\n"))
        .collect();
    let stranger_config = home.path().join("stranger_config");
    std::fs::write(&stranger_config, without_key).unwrap();
    let refused = serving
        .command(home.path(), "ssh")
        .arg("-F")
        .arg(&stranger_config)
        .args(["-o", "BatchMode=yes", "-i"])
        .arg(&stranger)
        .args(["demo.training.sagemaker", "true"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(255));
    assert!(
        text(&refused.stderr).contains("Permission denied"),
        "{}",
        text(&refused.stderr)
    );

    // sm-ssh forward: the instance's port 22 on a local port answers with the SSH banner.
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut forward = serving
        .command(home.path(), SM_SSH)
        .args([
            "forward",
            "demo.training.sagemaker",
            "-L",
            &format!("{port}:22"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let banner = read_banner_when_listening(port, &mut forward);
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
}

/// Connects to the forwarded port once `sm-ssh forward` listens (it says so
/// on stderr) and reads the server's first line.
fn read_banner_when_listening(port: u16, forward: &mut Child) -> String {
    let stderr = forward.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let mut banner = [0u8; 8];
            stream.read_exact(&mut banner).unwrap();
            return text(&banner);
        }
        // Not listening yet: wait for the next line forward prints.
        match lines.next() {
            Some(Ok(line)) => seen.push_str(&line),
            _ => panic!("sm-ssh forward ended without listening on {port}: {seen}"),
        }
    }
}
