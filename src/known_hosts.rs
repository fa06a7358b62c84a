//! Host keys, pinned per instance in sm-ssh's own known-hosts file.
//!
//! `connect` gives ssh `HostKeyAlias=<instance id>`, so each instance's key is
//! pinned under its id. Through `~/.ssh/config` ssh pins the key under the
//! host name (`my-job.training.sagemaker`), which a new run of a job with the
//! same name reuses with a new instance and a new host key. The proxy knows
//! which instance a name resolved to, so it calls [`rebind`]: when the
//! instance behind a name changes, the name's old key is forgotten and
//! `StrictHostKeyChecking accept-new` pins the new one. A changed key for the
//! *same* instance is still refused by ssh.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

const BINDINGS_FILE: &str = "host-instances";

/// Records that `host` now reaches `instance_id`; if it reached another
/// instance before, removes `host`'s lines from the known-hosts file.
/// Returns whether a key was forgotten.
pub fn rebind(host: &str, instance_id: &str) -> anyhow::Result<bool> {
    rebind_in(&crate::keys::data_dir()?, host, instance_id)
}

/// [`rebind`] with the data directory given.
pub fn rebind_in(data_dir: &Path, host: &str, instance_id: &str) -> anyhow::Result<bool> {
    let bindings_path = data_dir.join(BINDINGS_FILE);
    let bindings = fs::read_to_string(&bindings_path).unwrap_or_default();
    let mut previous = None;
    let mut kept: Vec<&str> = Vec::new();
    for line in bindings.lines() {
        match line.split_once(' ') {
            Some((name, id)) if name == host => previous = Some(id.to_string()),
            _ => kept.push(line),
        }
    }
    if previous.as_deref() == Some(instance_id) {
        return Ok(false);
    }
    crate::keys::create_private_dir(data_dir)?;
    let forgot = match previous {
        Some(_) => forget(&data_dir.join("known_hosts"), host)?,
        None => false,
    };
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&format!("{host} {instance_id}\n"));
    write_atomically(&bindings_path, &text)?;
    if forgot {
        tracing::info!(%host, %instance_id, "new instance behind the host name: forgot its old host key");
    }
    Ok(forgot)
}

/// Removes the lines of `known_hosts` whose host list names `host` (ssh
/// writes host names lowercased; `%n` keeps the user's case).
pub fn forget(known_hosts: &Path, host: &str) -> anyhow::Result<bool> {
    let Ok(text) = fs::read_to_string(known_hosts) else {
        return Ok(false);
    };
    let names = |line: &str| -> bool {
        line.split_whitespace()
            .next()
            .is_some_and(|hosts| hosts.split(',').any(|name| name.eq_ignore_ascii_case(host)))
    };
    let kept: Vec<&str> = text.lines().filter(|line| !names(line)).collect();
    if kept.len() == text.lines().count() {
        return Ok(false);
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    write_atomically(known_hosts, &out)?;
    Ok(true)
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file =
        fs::File::create(&temp).with_context(|| format!("writing {}", temp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_instance_behind_a_name_forgets_only_that_names_key() {
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        fs::write(
            &known_hosts,
            "job.training.sagemaker ssh-ed25519 AAAAold\nother.training.sagemaker ssh-ed25519 AAAAkeep\nmi-0123456789abcdef0 ssh-ed25519 AAAAid\n",
        )
        .unwrap();
        assert!(!rebind_in(dir.path(), "job.training.sagemaker", "mi-00000001").unwrap());
        assert!(!rebind_in(dir.path(), "job.training.sagemaker", "mi-00000001").unwrap());
        assert!(fs::read_to_string(&known_hosts)
            .unwrap()
            .contains("AAAAold"));
        assert!(rebind_in(dir.path(), "job.training.sagemaker", "mi-00000002").unwrap());
        let text = fs::read_to_string(&known_hosts).unwrap();
        assert!(!text.contains("AAAAold"));
        assert!(text.contains("other.training.sagemaker ssh-ed25519 AAAAkeep"));
        assert!(text.contains("mi-0123456789abcdef0 ssh-ed25519 AAAAid"));
        let bindings = fs::read_to_string(dir.path().join(BINDINGS_FILE)).unwrap();
        assert_eq!(bindings, "job.training.sagemaker mi-00000002\n");
    }
}
