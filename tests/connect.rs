//! `sm-ssh connect` end to end: the system ssh through `sm-ssh proxy` to a
//! real sshd behind the fake; remote commands, exit status, `-L` passed
//! through; and the ssh settings for Studio, read back with `ssh -G` (the
//! test's sshd cannot log in a `sagemaker-user` that does not exist here).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use common::{assert_exit, caller, sagemaker_instance, seed_with, training_instance, Env};
use sm_ssh_integration::openssh::OpenSshServer;

const INSTANCE: &str = "mi-0a1b2c3d4e5f60718";
const HOST: &str = "my-job.training.sagemaker";

struct World {
    env: Env,
    _sshd: OpenSshServer,
}

fn start() -> World {
    let env = Env::start(seed_with(vec![]));
    let sandbox = env
        .fake
        .add_instance(training_instance(INSTANCE, "my-job", 1_700_000_000))
        .unwrap();
    let sshd = OpenSshServer::start(&sandbox).expect("sshd starts (install openssh-server)");
    env.fake.map_port(INSTANCE, 22, sshd.addr());
    World { env, _sshd: sshd }
}

/// The user the tests run as: the only user the test's sshd can log in.
fn me() -> String {
    let output = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn connect(world: &World, args: &[&str]) -> std::process::Command {
    let me = me();
    world
        .env
        .sm_ssh(["connect", "--user", &me, HOST].iter().chain(args))
}

#[test]
fn connect_runs_a_command_and_passes_on_its_exit_status() {
    let world = start();
    let output = connect(&world, &["echo", "hello", "from", "connect"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, _) = assert_exit(&output, 0);
    assert_eq!(stdout, "hello from connect\n");

    let output = connect(&world, &["exit 7"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&output, 7);

    // The host key was pinned under the instance id in sm-ssh's own file.
    let known = std::fs::read_to_string(world.env.data_dir().join("known_hosts")).unwrap();
    assert!(known.lines().any(|l| l.starts_with(INSTANCE)), "{known}");
    let pushes = world
        .env
        .fake
        .events()
        .iter()
        .filter(|e| e.action == "ssm:SendCommand")
        .count();
    assert_eq!(pushes, 1);
}

#[test]
fn connect_passes_local_forwards_to_ssh() {
    let world = start();
    // A one-line TCP service "behind" the instance (sshd is on this machine).
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let service_port = service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut socket in service.incoming().map_while(Result::ok) {
            let _ = socket.write_all(b"hello through -L\n");
        }
    });
    let local_port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let flag = tempfile::tempdir().unwrap();
    let done = flag.path().join("done");
    let forward = format!("{local_port}:127.0.0.1:{service_port}");
    let wait = format!("while [ ! -e {} ]; do sleep 0.1; done", done.display());
    let mut child = connect(
        &world,
        &["-L", &forward, "-o", "ExitOnForwardFailure=yes", &wait],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // ssh listens once the session is up; until then connections are refused.
    let mut answer = String::new();
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("connect exited early ({status}): {stderr}");
        }
        if let Ok(mut socket) = TcpStream::connect(("127.0.0.1", local_port)) {
            socket.read_to_string(&mut answer).unwrap();
            if !answer.is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answer, "hello through -L\n");
    std::fs::write(&done, "").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 0);
}

#[test]
fn studio_logs_in_as_sagemaker_user_with_pinned_host_keys() {
    let env = Env::start(seed_with(vec![sagemaker_instance(
        "mi-0000000000000abcd",
        &caller().user_id,
        "default",
        "app/d-abc123/my-space/jupyterlab/default",
        1_700_000_000,
    )]));
    // `ssh -G` prints the settings ssh would use, without connecting.
    let output = env.run([
        "connect",
        "--push-key",
        "never",
        "default.my-space.d-abc123.studio.sagemaker",
        "-G",
    ]);
    let (stdout, _) = assert_exit(&output, 0);
    let setting = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{stdout}"))
            .to_owned()
    };
    assert_eq!(setting("user"), "sagemaker-user");
    assert_eq!(setting("hostkeyalias"), "mi-0000000000000abcd");
    assert_eq!(setting("identitiesonly"), "yes");
    assert_eq!(setting("serveraliveinterval"), "15");
    assert_eq!(setting("serveralivecountmax"), "8");
    assert_eq!(setting("stricthostkeychecking"), "accept-new");
    let data_dir = env.data_dir();
    assert_eq!(
        setting("userknownhostsfile"),
        data_dir.join("known_hosts").display().to_string()
    );
    assert!(setting("identityfile").ends_with("id_ed25519"));
    let proxy = setting("proxycommand");
    assert!(
        proxy.contains(env!("CARGO_BIN_EXE_sm-ssh"))
            && proxy.contains(" proxy --push-key never --port %p ")
            && proxy.ends_with(" mi-0000000000000abcd"),
        "{proxy}"
    );
}

/// A real login for Studio: the embedded SSH server (which, unlike the test's
/// sshd, accepts any user name whose key is authorized) sees `sagemaker-user`.
/// The key is put in place by hand: the key push rightly refuses a login user
/// that does not exist on the instance, and no `sagemaker-user` exists here.
#[test]
fn studio_really_logs_in_as_sagemaker_user() {
    use sm_ssh_integration::sshd::{EmbeddedSshServer, SshdConfig};

    let env = Env::start(seed_with(vec![]));
    let sandbox = env
        .fake
        .add_instance(sagemaker_instance(
            "mi-0000000000000beef",
            &caller().user_id,
            "default",
            "app/d-abc123/my-space/jupyterlab/default",
            1_700_000_000,
        ))
        .unwrap();
    let authorized_keys = sandbox.join("etc/ssh/authorized_keys");
    let sshd = env
        .runtime()
        .block_on(EmbeddedSshServer::start(SshdConfig::new(
            vec![authorized_keys.clone()],
            sandbox.join("home"),
        )))
        .unwrap();
    env.fake.map_port("mi-0000000000000beef", 22, sshd.addr());
    let host = "default.my-space.d-abc123.studio.sagemaker";

    // The first connect makes sm-ssh's key; the server does not know it yet.
    let refused = env
        .sm_ssh(["connect", "--push-key", "never", host, "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(refused.status.code(), Some(0));
    let public_key = std::fs::read_to_string(env.data_dir().join("id_ed25519.pub")).unwrap();
    std::fs::create_dir_all(authorized_keys.parent().unwrap()).unwrap();
    std::fs::write(&authorized_keys, public_key).unwrap();

    let output = env
        .sm_ssh([
            "connect",
            "--push-key",
            "never",
            host,
            "echo",
            "studio-$((6*7))",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, _) = assert_exit(&output, 0);
    assert_eq!(stdout, "studio-42\n");
    assert_eq!(
        sshd.authenticated_users(),
        vec!["sagemaker-user".to_string()]
    );
}
