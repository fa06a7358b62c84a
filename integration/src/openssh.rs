//! `OpenSshServer`: Debian's real sshd on 127.0.0.1, reading authorized keys
//! from an instance sandbox (`<sandbox>/etc/ssh/authorized_keys` and
//! `authorized_keys.d/%u`), so end-to-end tests log in with keys pushed by
//! SendCommand exactly as on a SageMaker container, and from the sandbox's
//! `home/.ssh/authorized_keys`: the sandbox's HOME is the home of the one
//! user the fake runs everything as, so a key written into the login user's
//! own `~/.ssh` (the HyperPod key install) counts too.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const SSHD_CANDIDATES: &[&str] = &["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"];
/// How long sshd may take to listen before start gives up.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A running sshd. Killed when dropped.
pub struct OpenSshServer {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl OpenSshServer {
    /// Starts sshd on a free loopback port with a fresh ed25519 host key.
    pub fn start(sandbox: &Path) -> anyhow::Result<OpenSshServer> {
        let sshd = find_sshd()?;
        let dir = tempfile::Builder::new().prefix("sm-ssh-sshd-").tempdir()?;
        let host_key = dir.path().join("ssh_host_ed25519_key");
        let keygen = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "sm-ssh-test-host",
                "-f",
            ])
            .arg(&host_key)
            .stdin(Stdio::null())
            .output()
            .context("cannot run ssh-keygen (install openssh-client)")?;
        if !keygen.status.success() {
            bail!(
                "ssh-keygen failed: {}",
                String::from_utf8_lossy(&keygen.stderr).trim()
            );
        }
        std::fs::create_dir_all(sandbox.join("etc/ssh/authorized_keys.d"))?;
        // sshd refuses to start without its privilege separation directory;
        // it only exists where the openssh-server service has run once.
        let _ = std::fs::create_dir_all("/run/sshd");
        let config = dir.path().join("sshd_config");
        std::fs::write(&config, config_text(dir.path(), &host_key, sandbox))?;
        // A port picked here may be taken before sshd binds it: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let log_path = dir.path().join("sshd.log");
            let log = File::create(&log_path)?;
            let mut child = Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .args(["-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", sshd.display()))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_listening(&mut child, addr) {
                Ok(()) => return Ok(OpenSshServer { child, addr, dir }),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last_error = format!("{e}; sshd said: {}", log.trim());
                    if !log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        bail!("sshd did not start: {last_error}")
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What sshd logged so far (`-e`: to this file), for test diagnostics.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for OpenSshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_sshd() -> anyhow::Result<PathBuf> {
    SSHD_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "OpenSSH's sshd is not installed (looked in {}); run scripts/test, \
                 which installs openssh-server",
                SSHD_CANDIDATES.join(", ")
            )
        })
}

fn config_text(dir: &Path, host_key: &Path, sandbox: &Path) -> String {
    let keys = sandbox.join("etc/ssh");
    format!(
        "ListenAddress 127.0.0.1\n\
         HostKey {host_key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {keys}/authorized_keys {keys}/authorized_keys.d/%u {home}/.ssh/authorized_keys\n\
         StrictModes no\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         PermitRootLogin prohibit-password\n\
         AllowTcpForwarding yes\n\
         AllowStreamLocalForwarding yes\n\
         X11Forwarding no\n\
         PrintMotd no\n\
         UseDNS no\n\
         LogLevel VERBOSE\n\
         Subsystem sftp internal-sftp\n\
         MaxStartups 200\n",
        host_key = host_key.display(),
        pid = dir.join("sshd.pid").display(),
        keys = keys.display(),
        home = sandbox.join("home").display(),
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until sshd accepts connections, or fails if it exits first.
fn wait_listening(child: &mut Child, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("sshd exited with {status}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("sshd did not listen on {addr} within {START_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
