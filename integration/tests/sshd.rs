//! The embedded SSH server against the system OpenSSH client.

use std::path::PathBuf;
use std::process::{Output, Stdio};

use sm_ssh_integration::sshd::{EmbeddedSshServer, SshdConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

/// A home with a client key, and an instance folder with `etc/ssh`.
struct Fixture {
    dir: tempfile::TempDir,
    server: EmbeddedSshServer,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let ssh = dir.path().join("instance/etc/ssh");
        std::fs::create_dir_all(ssh.join("authorized_keys.d")).expect("mkdir");
        let workdir = dir.path().join("instance/home");
        std::fs::create_dir_all(&workdir).expect("mkdir");
        let config = SshdConfig::new(
            vec![ssh.join("authorized_keys"), ssh.join("authorized_keys.d")],
            &workdir,
        );
        let server = EmbeddedSshServer::start(config).await.expect("start sshd");
        let fixture = Fixture { dir, server };
        let known_hosts = fixture
            .server
            .known_hosts_line(&format!("[127.0.0.1]:{}", fixture.server.port()));
        std::fs::write(fixture.path("known_hosts"), known_hosts + "\n").expect("known_hosts");
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn workdir(&self) -> PathBuf {
        self.path("instance/home")
    }

    /// A new client key `name`; its public half is returned, not pushed.
    fn keygen(&self, name: &str) -> String {
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(self.path(name))
            .status()
            .expect("ssh-keygen");
        assert!(status.success());
        std::fs::read_to_string(self.path(&format!("{name}.pub"))).expect("public key")
    }

    /// What the key push does on an instance: one file per key in
    /// `authorized_keys.d`.
    fn push(&self, name: &str, public: &str) {
        let file = self.path(&format!("instance/etc/ssh/authorized_keys.d/{name}.pub"));
        std::fs::write(file, public).expect("push key");
    }

    fn ssh(&self, key: &str, user: &str) -> Command {
        let mut command = Command::new("ssh");
        command
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.path("known_hosts").display()
            ))
            .arg("-i")
            .arg(self.path(key))
            .args(["-p", &self.server.port().to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }
}

async fn run(mut command: Command) -> Output {
    command.output().await.expect("run ssh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn exec_returns_output_stderr_and_exit_status() {
    let f = Fixture::start().await;
    let public = f.keygen("id");
    f.push("id", &public);

    let mut ssh = f.ssh("id", "sagemaker-user");
    ssh.arg("echo hello; echo oops >&2; pwd; echo $USER; exit 3");
    let out = run(ssh).await;

    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    let workdir = f.workdir();
    assert_eq!(
        text(&out.stdout),
        format!("hello\n{}\nsagemaker-user\n", workdir.display())
    );
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(f.server.authenticated_users(), ["sagemaker-user"]);
}

#[tokio::test]
async fn exec_reads_stdin_until_eof() {
    let f = Fixture::start().await;
    let public = f.keygen("id");
    f.push("id", &public);

    let mut ssh = f.ssh("id", "root");
    ssh.arg("wc -c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = ssh.spawn().expect("spawn ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&vec![b'x'; 100_000]).await.expect("write");
    drop(stdin);
    let out = child.wait_with_output().await.expect("ssh");

    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "100000");
}

#[tokio::test]
async fn a_key_that_was_not_pushed_is_rejected_until_it_is() {
    let f = Fixture::start().await;
    let pushed = f.keygen("pushed");
    f.push("pushed", &pushed);
    let other = f.keygen("other");

    let mut ssh = f.ssh("other", "root");
    ssh.arg("true");
    let refused = run(ssh).await;
    assert_eq!(refused.status.code(), Some(255));
    assert!(
        text(&refused.stderr).contains("Permission denied"),
        "{}",
        text(&refused.stderr)
    );
    assert!(f.server.authenticated_users().is_empty());

    // The files are read on each attempt: a key pushed now works now, and
    // the single authorized_keys file counts as well as the folder.
    std::fs::write(f.path("instance/etc/ssh/authorized_keys"), other).expect("write");
    let mut ssh = f.ssh("other", "root");
    ssh.arg("echo in");
    let accepted = run(ssh).await;
    assert!(
        accepted.status.success(),
        "stderr: {}",
        text(&accepted.stderr)
    );
    assert_eq!(text(&accepted.stdout), "in\n");
}

#[tokio::test]
async fn direct_tcpip_reaches_a_port_on_the_instance() {
    let f = Fixture::start().await;
    let public = f.keygen("id");
    f.push("id", &public);
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo_port = echo.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let (mut socket, _) = echo.accept().await.expect("accept");
        let (mut r, mut w) = socket.split();
        tokio::io::copy(&mut r, &mut w).await.expect("echo");
    });

    // `ssh -W` opens a direct-tcpip channel, the same one `ssh -L` opens per connection.
    let mut ssh = f.ssh("id", "root");
    ssh.args(["-W", &format!("127.0.0.1:{echo_port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = ssh.spawn().expect("spawn ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    stdin
        .write_all(b"ping through the tunnel")
        .await
        .expect("write");
    let mut echoed = [0u8; 23];
    stdout.read_exact(&mut echoed).await.expect("read echo");
    assert_eq!(&echoed, b"ping through the tunnel");
    drop(stdin);
    let status = child.wait().await.expect("ssh");
    assert!(status.success());
}

#[tokio::test]
async fn direct_tcpip_to_a_closed_port_is_refused() {
    let f = Fixture::start().await;
    let public = f.keygen("id");
    f.push("id", &public);
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);

    let mut ssh = f.ssh("id", "root");
    ssh.args(["-W", &format!("127.0.0.1:{port}")]);
    let out = run(ssh).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("forwarding failed"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn shell_runs_on_a_terminal() {
    let f = Fixture::start().await;
    let public = f.keygen("id");
    f.push("id", &public);

    let mut ssh = f.ssh("id", "root");
    // ssh puts its own TERM in the pty request; the caller's may be unset (CI).
    ssh.arg("-tt")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = ssh.spawn().expect("spawn ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"test -t 0 && echo \"on a $TERM terminal\"; exit 7\n")
        .await
        .expect("write");
    let out = child.wait_with_output().await.expect("ssh");

    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("on a "), "{}", text(&out.stdout));
    assert!(
        !text(&out.stdout).contains("on a  terminal"),
        "TERM unset: {}",
        text(&out.stdout)
    );
}
