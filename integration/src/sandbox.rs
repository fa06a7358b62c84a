//! Where SendCommand runs scripts: a folder per instance standing in for its
//! file system, with `home/` as HOME and `etc/ssh/` for authorized keys.
//!
//! The real service runs scripts as root on the instance; the fake runs them
//! as the test's user with `/bin/sh -c`, after pointing the literal path
//! `/etc/ssh` at the sandbox so key pushes land where the test's sshd looks.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::world::Instance;

/// The temporary sandboxes the fake created; removed when the fake stops.
#[derive(Debug, Default)]
pub struct Sandboxes {
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

impl Sandboxes {
    /// Gives the instance a sandbox (a new temp dir when it has none) and
    /// makes sure its `home/` and `etc/ssh/` exist.
    pub fn provision(&self, instance: &mut Instance) -> std::io::Result<PathBuf> {
        let path = match &instance.sandbox {
            Some(p) => p.clone(),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("sm-ssh-fake-{}-", sanitize(&instance.id)))
                    .tempdir()?;
                let path = dir.path().to_path_buf();
                self.dirs.lock().unwrap().push(dir);
                path
            }
        };
        std::fs::create_dir_all(path.join("home"))?;
        std::fs::create_dir_all(path.join("etc/ssh"))?;
        instance.sandbox = Some(path.clone());
        Ok(path)
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Replaces each `/etc/ssh` that starts a path (not `/x/etc/ssh`) with
/// `<sandbox>/etc/ssh`.
pub fn rewrite_etc_ssh(script: &str, sandbox: &Path) -> String {
    const NEEDLE: &str = "/etc/ssh";
    let replacement = format!("{}/etc/ssh", sandbox.display());
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(at) = rest.find(NEEDLE) {
        let before = rest[..at].chars().last().or_else(|| out.chars().last());
        let after = rest[at + NEEDLE.len()..].chars().next();
        let starts_path = !before.is_some_and(|c| c.is_ascii_alphanumeric() || "/._-~".contains(c));
        let ends_name = !after.is_some_and(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        out.push_str(&rest[..at]);
        out.push_str(if starts_path && ends_name {
            &replacement
        } else {
            NEEDLE
        });
        rest = &rest[at + NEEDLE.len()..];
    }
    out.push_str(rest);
    out
}

/// How a script ended.
#[derive(Debug)]
pub struct Outcome {
    /// None when it was killed at the time limit.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `script` with `/bin/sh -c` in `dir`, HOME at `<sandbox>/home`,
/// killing its whole process group after `limit`.
pub async fn run(
    script: &str,
    sandbox: &Path,
    dir: &Path,
    limit: Duration,
) -> std::io::Result<Outcome> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(rewrite_etc_ssh(script, sandbox))
        .current_dir(dir)
        .env("HOME", sandbox.join("home"))
        .env("SM_SSH_FAKE_SANDBOX", sandbox)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let exit_code = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => Some(status?.code().unwrap_or(-1)),
        Err(_) => {
            if let Some(pid) = child.id() {
                // The script's children share its process group: end them all,
                // or an orphan would hold the output pipes open.
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
            let _ = child.kill().await;
            None
        }
    };
    Ok(Outcome {
        exit_code,
        stdout: stdout.await.unwrap_or_default(),
        stderr: stderr.await.unwrap_or_default(),
    })
}

fn collect<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    pipe: Option<R>,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf).await;
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_paths_starting_with_etc_ssh() {
        let sb = Path::new("/tmp/sb");
        assert_eq!(
            rewrite_etc_ssh("mkdir -p /etc/ssh/authorized_keys.d/ && cat x > /etc/ssh/authorized_keys", sb),
            "mkdir -p /tmp/sb/etc/ssh/authorized_keys.d/ && cat x > /tmp/sb/etc/ssh/authorized_keys"
        );
        assert_eq!(
            rewrite_etc_ssh("ls /opt/etc/ssh /etc/sshd", sb),
            "ls /opt/etc/ssh /etc/sshd"
        );
        assert_eq!(rewrite_etc_ssh("\"/etc/ssh\"", sb), "\"/tmp/sb/etc/ssh\"");
    }
}
