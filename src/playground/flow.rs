//! The scripted run: resolve, push the key, ssh through `sm-ssh proxy`, run
//! a command; one stderr line per step with the time since the start.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use tokio::process::Command;

use super::{Demo, DEMO_HOST};
use crate::keypush::{self, PushKey};
use crate::keys::Identity;
use crate::resolve::{self, ResolveOptions};
use crate::ssh_client::{self, Login};
use crate::target::Target;

/// Which SSH client carries the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Client {
    /// OpenSSH's `ssh` when it is on PATH, else the built-in client.
    #[default]
    Auto,
    /// The system OpenSSH client.
    Openssh,
    /// sm-ssh's own client (russh).
    Builtin,
}

pub struct FlowOptions {
    pub client: Client,
    /// Run on the far side.
    pub command: String,
    /// Then an interactive shell, when on a terminal.
    pub shell: bool,
}

/// Prints `  1.234s  text` on stderr.
struct Steps {
    start: Instant,
}

impl Steps {
    fn say(&self, text: impl AsRef<str>) {
        let elapsed = self.start.elapsed().as_secs_f64();
        eprintln!("{elapsed:8.3}s  {}", text.as_ref());
    }
}

pub async fn run_flow(options: FlowOptions) -> anyhow::Result<ExitCode> {
    let steps = Steps {
        start: Instant::now(),
    };
    let demo = Demo::start().await?;
    steps.say(format!(
        "fake AWS on {} ({}); {DEMO_HOST} is {}, its sshd on {}",
        demo.fake.endpoint(),
        demo.fake.region(),
        demo.instance_id,
        demo.sshd.addr()
    ));
    let sdk = demo.sdk_config().await;

    // 1. Resolution, as `sm-ssh proxy` and `connect` do it.
    let target = Target::parse(DEMO_HOST).map_err(|e| anyhow::anyhow!("{e}"))?;
    let resolved = resolve::resolve(&sdk, &target, &ResolveOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message(None)))?;
    if resolved.instance_id != demo.instance_id {
        bail!(
            "resolution found {}, but the demo instance is {}",
            resolved.instance_id,
            demo.instance_id
        );
    }
    steps.say(format!(
        "1/4 resolved {DEMO_HOST} to {} ({}, tags SSHOwner/SSHResourceName)",
        resolved.instance_id, resolved.ping_status
    ));

    // 2. The key push: SendCommand writes the key where the instance's sshd reads.
    let data_dir = demo.scratch.path().join("sm-ssh-home");
    let identity = Identity::ensure_at(&data_dir.join("id_ed25519"))?;
    let user = resolved.default_user;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    keypush::ensure(
        &ssm,
        &resolved.instance_id,
        user,
        &identity.public_key_line(),
        PushKey::Always,
        &keypush::default_state_file(&data_dir),
    )
    .await
    .context("the key push failed")?;
    steps.say(format!(
        "2/4 pushed key {} with SendCommand into {}",
        identity.fingerprint(),
        demo.sandbox.join("etc/ssh/authorized_keys.d").display()
    ));

    // 3. and 4. ssh through `sm-ssh proxy`, one command on the far side.
    let files = SshFiles::write(&demo, &identity)?;
    let client = match options.client {
        Client::Auto if find_on_path("ssh").is_some() => Client::Openssh,
        Client::Auto => Client::Builtin,
        chosen => chosen,
    };
    let proxy = ProxyCommand::new(&demo, &data_dir)?;
    let (status, login) = match client {
        Client::Openssh => {
            steps.say(format!(
                "3/4 ssh {user}@{DEMO_HOST} with OpenSSH, ProxyCommand `sm-ssh proxy %h`"
            ));
            let status = openssh(&files, &proxy, user, &options.command, false).await?;
            (status, "OpenSSH")
        }
        Client::Builtin | Client::Auto => {
            let login = Login {
                user: user.to_string(),
                key: Arc::new(identity.private_key().clone()),
                host_key: demo.sshd.host_public_key().clone().into(),
            };
            let connection = ssh_client::Connection::over_proxy(proxy.command(), &login)
                .await
                .context("the built-in SSH client could not log in through `sm-ssh proxy`")?;
            steps.say(format!(
                "3/4 logged in as {user}@{DEMO_HOST} with the built-in client through `sm-ssh proxy`"
            ));
            let status = connection
                .exec(
                    &options.command,
                    tokio::io::empty(),
                    tokio::io::stdout(),
                    tokio::io::stderr(),
                )
                .await?;
            if options.shell && is_terminal() {
                connection.interactive_shell().await?;
            }
            connection.close().await?;
            (status, "built-in client")
        }
    };
    let users = demo.sshd.authenticated_users();
    steps.say(format!(
        "4/4 the command exited with status {status} ({login}; the instance's sshd saw logins as {})",
        users.join(", ")
    ));
    if options.shell && client == Client::Openssh {
        if is_terminal() {
            openssh(&files, &proxy, user, "", true).await?;
        } else {
            eprintln!("--shell needs a terminal; skipped");
        }
    }
    if status != 0 {
        bail!("the command on {DEMO_HOST} failed with status {status}");
    }
    // The same instance through a Session Manager shell: no sshd, no key.
    steps.say(format!(
        "and without sshd: `sm-ssh shell {DEMO_HOST}` (a Session Manager shell session)"
    ));
    shell_session(&proxy, &options.command).await?;
    steps.say("done; the fake AWS and the SSH server stop now");
    Ok(ExitCode::SUCCESS)
}

/// `sm-ssh shell <demo>` as a child with `command` typed into it, then `exit`.
async fn shell_session(proxy: &ProxyCommand, command: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(&proxy.exe);
    // Its terminal output goes to stderr with the steps: stdout is the command's.
    child
        .args(["shell", DEMO_HOST])
        .stdin(Stdio::piped())
        .stdout(std::io::stderr());
    proxy.apply_env(&mut child);
    let mut child = child.spawn().context("cannot start `sm-ssh shell`")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(format!("{command}\nexit\n").as_bytes())
        .await?;
    drop(stdin);
    let status = child.wait().await?;
    if !status.success() {
        bail!("`sm-ssh shell {DEMO_HOST}` failed ({status})");
    }
    Ok(())
}

fn is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// `sm-ssh proxy <host>` as a child: this very binary, with the fake's
/// environment.
pub(super) struct ProxyCommand {
    exe: PathBuf,
    env: Vec<(String, String)>,
}

impl ProxyCommand {
    pub(super) fn new(demo: &Demo, data_dir: &Path) -> anyhow::Result<ProxyCommand> {
        Ok(ProxyCommand {
            exe: std::env::current_exe().context("cannot tell where the sm-ssh binary is")?,
            env: demo.child_env(data_dir),
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.exe);
        command.args(["proxy", DEMO_HOST]);
        self.apply_env(&mut command);
        command
    }

    fn apply_env(&self, command: &mut Command) {
        for key in Demo::leaking_env() {
            command.env_remove(key);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
    }

    /// The ProxyCommand line for ssh: the binary's path, quoted for the shell.
    pub(super) fn ssh_option(&self) -> String {
        format!("{} proxy %h", shell_quote(&self.exe.display().to_string()))
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The files OpenSSH needs: a known_hosts pinning the demo's host key.
struct SshFiles {
    known_hosts: PathBuf,
    identity: PathBuf,
}

impl SshFiles {
    fn write(demo: &Demo, identity: &Identity) -> anyhow::Result<SshFiles> {
        let known_hosts = demo.scratch.path().join("known_hosts");
        std::fs::write(&known_hosts, demo.known_hosts_line() + "\n")
            .context("cannot write the playground's known_hosts")?;
        Ok(SshFiles {
            known_hosts,
            identity: identity.path().to_path_buf(),
        })
    }
}

/// Runs OpenSSH with only the options given here (`-F /dev/null`), so the
/// user's own ssh configuration plays no part.
async fn openssh(
    files: &SshFiles,
    proxy: &ProxyCommand,
    user: &str,
    command: &str,
    interactive: bool,
) -> anyhow::Result<u32> {
    let mut ssh = Command::new("ssh");
    ssh.args([
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
        files.known_hosts.display()
    ))
    .arg("-o")
    .arg(format!("ProxyCommand={}", proxy.ssh_option()))
    .arg("-i")
    .arg(&files.identity)
    .arg(format!("{user}@{DEMO_HOST}"));
    if interactive {
        ssh.arg("-t");
    } else {
        ssh.arg("--").arg(command).stdin(Stdio::null());
    }
    proxy.apply_env(&mut ssh);
    let status = ssh
        .status()
        .await
        .context("cannot run ssh (is OpenSSH installed? `--client builtin` needs none)")?;
    match status.code() {
        Some(255) => {
            bail!("ssh could not connect to {DEMO_HOST} (exit status 255; see its message above)")
        }
        Some(code) => Ok(code as u32),
        None => bail!("ssh was killed ({status})"),
    }
}

/// The first `name` on PATH that is an executable file.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn find_on_path_finds_sh_only_as_an_executable() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("no-such-program-sm-ssh").is_none());
    }
}
