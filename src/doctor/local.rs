//! Check 8: this machine — the OpenSSH client, sm-ssh's block in
//! `~/.ssh/config`, and the permissions of the key files ssh insists on.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::report::Check;
use crate::sshconfig::BEGIN as CONFIG_MARKER;

pub fn checks() -> Vec<Check> {
    let home = dirs::home_dir();
    vec![
        ssh_client(),
        ssh_config(home.as_deref()),
        // sm-ssh's own key lives in its data directory.
        keys(home.as_deref(), &crate::keys::data_dir().ok()),
    ]
}

fn ssh_client() -> Check {
    match Command::new("ssh").arg("-V").output() {
        Ok(output) => {
            // `ssh -V` prints its version on stderr.
            let text = String::from_utf8_lossy(&output.stderr);
            let version = text.lines().next().unwrap_or("").trim();
            if version.starts_with("OpenSSH") {
                Check::pass("ssh-client", version.to_owned())
            } else {
                Check::warn(
                    "ssh-client",
                    format!("`ssh -V` answered {version:?}, not OpenSSH"),
                    "install OpenSSH (Debian/Ubuntu: sudo apt-get install openssh-client; macOS ships it; Windows: Settings → Optional features → OpenSSH Client)",
                )
            }
        }
        Err(error) => Check::fail(
            "ssh-client",
            format!("no `ssh` on PATH ({error})"),
            "install OpenSSH (Debian/Ubuntu: sudo apt-get install openssh-client; macOS ships it; Windows: Settings → Optional features → OpenSSH Client)",
        ),
    }
}

fn ssh_config(home: Option<&Path>) -> Check {
    let Some(home) = home else {
        return Check::skip("ssh-config", "no home directory");
    };
    let path = home.join(".ssh/config");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    if text
        .lines()
        .any(|line| line.trim_start().starts_with(CONFIG_MARKER))
    {
        Check::pass(
            "ssh-config",
            format!("{} has sm-ssh's block", path.display()),
        )
    } else {
        Check::warn(
            "ssh-config",
            format!(
                "{} has no sm-ssh block: plain `ssh <name>.training.sagemaker` and IDEs will not find instances (sm-ssh connect still works)",
                path.display()
            ),
            "sm-ssh config install",
        )
    }
}

/// Private keys readable by others make ssh refuse them; a writable `~/.ssh`
/// lets others plant keys or config.
fn keys(home: Option<&Path>, data_dir: &Option<PathBuf>) -> Check {
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    let mut seen = 0;
    if let Some(home) = home {
        let dir = home.join(".ssh");
        if let Some(mode) = mode(&dir) {
            if mode & 0o022 != 0 {
                problems.push(format!(
                    "{} is writable by others (mode {mode:o})",
                    dir.display()
                ));
                fixes.push(format!("chmod 700 {}", dir.display()));
            }
        }
    }
    let candidates = home
        .map(|h| h.join(".ssh"))
        .into_iter()
        .chain(data_dir.clone());
    for dir in candidates {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !is_private_key(&path) {
                continue;
            }
            seen += 1;
            if let Some(mode) = mode(&path) {
                if mode & 0o077 != 0 {
                    problems.push(format!(
                        "{} is readable by others (mode {mode:o}); ssh refuses it",
                        path.display()
                    ));
                    fixes.push(format!("chmod 600 {}", path.display()));
                }
            }
        }
    }
    if problems.is_empty() {
        Check::pass(
            "ssh-keys",
            format!("{seen} private key files, none readable by others"),
        )
    } else {
        Check::fail("ssh-keys", problems.join("; "), fixes.join("\n"))
    }
}

fn is_private_key(path: &Path) -> bool {
    use std::io::Read;
    if path.extension().is_some_and(|e| e == "pub") || !path.is_file() {
        return false;
    }
    let mut head = [0u8; 64];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let read = file.read(&mut head).unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..read]);
    head.starts_with("-----BEGIN") && head.contains("PRIVATE KEY")
}

#[cfg(unix)]
fn mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn mode(_path: &Path) -> Option<u32> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::doctor::report::Status;

    #[test]
    fn key_permissions_and_config_block() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = ssh.join("id_ed25519");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n").unwrap();
        std::fs::write(ssh.join("id_ed25519.pub"), "ssh-ed25519 AAAA").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(keys(Some(home.path()), &None).status, Status::Pass);

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let check = keys(Some(home.path()), &None);
        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.fix.unwrap(), format!("chmod 600 {}", key.display()));

        assert_eq!(ssh_config(Some(home.path())).status, Status::Warn);
        std::fs::write(
            ssh.join("config"),
            "Host x\n# >>> sm-ssh >>> managed\nHost *.sagemaker\n# <<< sm-ssh <<<\n",
        )
        .unwrap();
        assert_eq!(ssh_config(Some(home.path())).status, Status::Pass);
    }
}
