//! Installing our public key on an instance with SSM SendCommand, once per
//! instance and key.
//!
//! The key goes where the instance's sshd looks: `/etc/ssh/authorized_keys.d/`
//! and `/etc/ssh/authorized_keys` (the layout sagemaker-ssh-helper's server
//! side configures) and the login user's `~/.ssh/authorized_keys`. The script
//! appends only missing lines, so pushing twice changes nothing. A state file
//! in the data directory remembers which (instance, key) pairs were pushed
//! when, so that reconnects within [`KEY_TTL`] skip the round trip.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationError;
use aws_sdk_ssm::types::CommandInvocationStatus;
use sha2::{Digest, Sha256};

use crate::error::AwsError;

/// When to push the key (`--push-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PushKey {
    /// Push unless the state file says this key is already on this instance.
    #[default]
    Auto,
    /// Push every time.
    Always,
    /// Never push; the key must already be authorised.
    Never,
}

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pushed,
    AlreadyPushed,
    Skipped,
}

/// SendCommand's `TimeoutSeconds`: how long the command may wait to be
/// delivered to the agent (not how long it runs; the minimum the API allows).
const COMMAND_TIMEOUT_SECONDS: i32 = 30;
/// AWS-RunShellScript's `executionTimeout`: how long the pushed script may
/// run once delivered (the document's default is 3600 s; it takes a moment).
const EXECUTION_TIMEOUT_SECONDS: &str = "60";
/// How long we poll for its result before giving up (the command's own
/// timeout plus delivery slack).
const POLL_BUDGET: Duration = Duration::from_secs(60);
/// The first GetCommandInvocation comes this soon (the script takes the
/// agent a moment to pick up), and the interval grows by half each time:
/// most pushes end within the first few polls, and a slow one costs few calls.
const FIRST_POLL: Duration = Duration::from_millis(50);
const MAX_POLL: Duration = Duration::from_millis(500);
/// How long a recorded push is trusted without pushing again: within it a
/// reconnect takes no SendCommand; after it the key is pushed again (while
/// the session is set up), so a key the instance lost comes back by itself.
pub const KEY_TTL: Duration = Duration::from_secs(600);

/// Makes sure `public_key` is authorised for `user` on `instance_id`.
pub async fn ensure(
    ssm: &aws_sdk_ssm::Client,
    instance_id: &str,
    user: &str,
    public_key: &str,
    mode: PushKey,
    state_file: &Path,
) -> anyhow::Result<Outcome> {
    let key = normalise_key(public_key)?;
    let fingerprint = fingerprint(&key);
    match mode {
        PushKey::Never => return Ok(Outcome::Skipped),
        PushKey::Auto if State::load(state_file)?.contains(instance_id, &fingerprint) => {
            tracing::debug!(instance_id, %fingerprint, "key already pushed; skipping SendCommand");
            return Ok(Outcome::AlreadyPushed);
        }
        PushKey::Auto | PushKey::Always => {}
    }
    push(ssm, instance_id, user, &key, &fingerprint).await?;
    State::record(state_file, instance_id, &fingerprint)?;
    Ok(Outcome::Pushed)
}

/// Where the pushed-key state lives by default.
pub fn default_state_file(data_dir: &Path) -> PathBuf {
    data_dir.join("pushed-keys")
}

/// The `type base64` part of an OpenSSH public key line, checked.
pub(crate) fn normalise_key(public_key: &str) -> anyhow::Result<String> {
    let line = public_key.trim();
    let mut fields = line.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        bail!("the public key is not in OpenSSH format (`<type> <base64> [comment]`)");
    };
    let kind_ok = kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
    let blob_ok = blob
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    if !kind_ok || !blob_ok || line.contains('\n') {
        bail!("the public key is not in OpenSSH format (`<type> <base64> [comment]`)");
    }
    // The comment is dropped: it is free text we would have to quote, and sshd ignores it.
    Ok(format!("{kind} {blob} sm-ssh"))
}

/// An identifier for the key in the state file: sha256 of `type base64`.
pub(crate) fn fingerprint(key: &str) -> String {
    let material: Vec<&str> = key.split_whitespace().take(2).collect();
    let digest = Sha256::digest(material.join(" ").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The shell script SendCommand runs as root on the instance. `key` holds only
/// `[A-Za-z0-9+/=-]`, spaces and the fixed comment, so single quotes suffice.
fn script(user: &str, key: &str, fingerprint: &str) -> Vec<String> {
    let short = &fingerprint["sha256:".len().."sha256:".len() + 16];
    let user = shell_quote(user);
    vec![
        "set -eu".into(),
        format!("key='{key}'"),
        // Appends the key unless an identical line exists; repairs a missing final newline.
        "add_key() { mkdir -p \"$(dirname \"$1\")\"; touch \"$1\"; \
         if grep -qxF \"$key\" \"$1\"; then return 0; fi; \
         if [ -s \"$1\" ] && [ -n \"$(tail -c 1 \"$1\")\" ]; then echo >> \"$1\"; fi; \
         printf '%s\\n' \"$key\" >> \"$1\"; }"
            .into(),
        "mkdir -p /etc/ssh/authorized_keys.d".into(),
        format!("printf '%s\\n' \"$key\" > /etc/ssh/authorized_keys.d/sm-ssh-{short}.pub"),
        "add_key /etc/ssh/authorized_keys".into(),
        format!("user={user}"),
        // The user running the script (root on a real instance) has HOME;
        // others come from the passwd database.
        "if [ \"$user\" = \"$(id -un)\" ]; then home=\"${HOME:-/root}\"; \
         else home=\"$(getent passwd \"$user\" | cut -d: -f6)\"; fi"
            .into(),
        "if [ -z \"$home\" ]; then echo \"sm-ssh: user $user does not exist on this instance\" >&2; exit 3; fi".into(),
        "add_key \"$home/.ssh/authorized_keys\"".into(),
        "chmod 700 \"$home/.ssh\"; chmod 600 \"$home/.ssh/authorized_keys\"".into(),
        "if [ \"$user\" != root ] && [ \"$(id -u)\" = 0 ]; then chown -R \"$user\" \"$home/.ssh\"; fi".into(),
        "echo sm-ssh: key installed".into(),
    ]
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

async fn push(
    ssm: &aws_sdk_ssm::Client,
    instance_id: &str,
    user: &str,
    key: &str,
    fingerprint: &str,
) -> anyhow::Result<()> {
    tracing::info!(instance_id, %fingerprint, "pushing the SSH public key with SendCommand");
    let sent = ssm
        .send_command()
        .instance_ids(instance_id)
        .document_name("AWS-RunShellScript")
        .comment("sm-ssh: authorise SSH public key")
        .timeout_seconds(COMMAND_TIMEOUT_SECONDS)
        .parameters("commands", script(user, key, fingerprint))
        .parameters(
            "executionTimeout",
            vec![EXECUTION_TIMEOUT_SECONDS.to_owned()],
        )
        .send()
        .await
        .map_err(|error| {
            anyhow::Error::new(AwsError::from_sdk("ssm:SendCommand", &error)).context(format!(
                "pushing the SSH key to {instance_id} with AWS-RunShellScript \
                 (if the key is already authorised there, pass --push-key never)"
            ))
        })?;
    let command_id = sent
        .command()
        .and_then(|c| c.command_id())
        .context("SendCommand returned no CommandId")?
        .to_owned();
    wait_for(ssm, instance_id, &command_id).await
}

/// Whether an invocation in `status` may still change (no status yet counts).
/// `Cancelling` is not over: it ends as `Cancelled`, or finishes first.
fn still_running(status: Option<&CommandInvocationStatus>) -> bool {
    matches!(
        status,
        None | Some(
            CommandInvocationStatus::Pending
                | CommandInvocationStatus::InProgress
                | CommandInvocationStatus::Delayed
                | CommandInvocationStatus::Cancelling
        )
    )
}

/// Polls GetCommandInvocation with a short, growing interval until the
/// command ends.
async fn wait_for(
    ssm: &aws_sdk_ssm::Client,
    instance_id: &str,
    command_id: &str,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let mut delay = FIRST_POLL;
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(MAX_POLL);
        let result = ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await;
        let invocation = match result {
            Ok(invocation) => invocation,
            // The invocation appears shortly after SendCommand returns.
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    GetCommandInvocationError::InvocationDoesNotExist(_)
                ) =>
            {
                if started.elapsed() > POLL_BUDGET {
                    bail!("the key-push command {command_id} never reached {instance_id}; is its SSM agent online?");
                }
                continue;
            }
            Err(error) => {
                return Err(anyhow::Error::new(AwsError::from_sdk(
                    "ssm:GetCommandInvocation",
                    &error,
                ))
                .context(format!(
                    "checking the key-push command {command_id} on {instance_id}"
                )));
            }
        };
        match invocation.status() {
            Some(CommandInvocationStatus::Success) => return Ok(()),
            status if still_running(status) => {
                if started.elapsed() > POLL_BUDGET {
                    bail!("the key-push command {command_id} on {instance_id} did not finish within {}s", POLL_BUDGET.as_secs());
                }
            }
            status => {
                let status = status.map_or("unknown", |s| s.as_str());
                let stderr = invocation.standard_error_content().unwrap_or("").trim();
                let detail = if stderr.is_empty() {
                    invocation
                        .status_details()
                        .unwrap_or("no details")
                        .to_owned()
                } else {
                    stderr.to_owned()
                };
                bail!(
                    "pushing the SSH key to {instance_id} failed (command {command_id}: {status}, exit {}): {detail}",
                    invocation.response_code()
                );
            }
        }
    }
}

/// The pushed-key state file: one `instance-id fingerprint epoch-seconds`
/// line per push (lines without a time, from older versions, count as old).
pub(crate) struct State {
    lines: Vec<(String, String, u64)>,
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl State {
    pub(crate) fn load(path: &Path) -> anyhow::Result<State> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let lines = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let instance = fields.next()?.to_owned();
                let fingerprint = fields.next()?.to_owned();
                let at = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                Some((instance, fingerprint, at))
            })
            .collect();
        Ok(State { lines })
    }

    /// Whether the key was pushed to the instance less than [`KEY_TTL`] ago.
    pub(crate) fn contains(&self, instance_id: &str, fingerprint: &str) -> bool {
        let now = epoch_now();
        self.lines.iter().any(|(i, f, at)| {
            i == instance_id && f == fingerprint && now.saturating_sub(*at) < KEY_TTL.as_secs()
        })
    }

    /// Records a push now, dropping the pair's older line and lines past
    /// their time; rewrites the file atomically.
    pub(crate) fn record(path: &Path, instance_id: &str, fingerprint: &str) -> anyhow::Result<()> {
        let now = epoch_now();
        let mut state = Self::load(path)?;
        state.lines.retain(|(i, f, at)| {
            !(i == instance_id && f == fingerprint) && now.saturating_sub(*at) < KEY_TTL.as_secs()
        });
        state
            .lines
            .push((instance_id.to_owned(), fingerprint.to_owned(), now));
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let text: String = state
            .lines
            .iter()
            .map(|(i, f, at)| format!("{i} {f} {at}\n"))
            .collect();
        let mut temp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("writing {}", path.display()))?;
        use std::io::Write;
        temp.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        temp.persist(path)
            .map(|_| ())
            .with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOBnsOmFo4wvE0xd1Fv+VSG8HUbB0KZ5Xh0n7jt5RWg2 me@laptop";

    #[test]
    fn keys_are_normalised_and_checked() {
        assert_eq!(
            normalise_key(KEY).unwrap(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOBnsOmFo4wvE0xd1Fv+VSG8HUbB0KZ5Xh0n7jt5RWg2 sm-ssh"
        );
        assert!(normalise_key("").is_err());
        assert!(normalise_key("ssh-ed25519").is_err());
        assert!(normalise_key("ssh-ed25519 AAAA';rm -rf /").is_err());
        assert!(normalise_key("-----BEGIN OPENSSH PRIVATE KEY-----\nabc").is_err());
    }

    #[test]
    fn fingerprint_ignores_the_comment() {
        let a = fingerprint(&normalise_key(KEY).unwrap());
        let b = fingerprint(&normalise_key(&KEY.replace("me@laptop", "other")).unwrap());
        assert_eq!(a, b);
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
    }

    #[test]
    fn state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/pushed-keys");
        assert!(!State::load(&path).unwrap().contains("mi-1", "sha256:a"));
        State::record(&path, "mi-1", "sha256:a").unwrap();
        State::record(&path, "mi-1", "sha256:a").unwrap();
        State::record(&path, "mi-2", "sha256:b").unwrap();
        let state = State::load(&path).unwrap();
        assert!(state.contains("mi-1", "sha256:a"));
        assert!(state.contains("mi-2", "sha256:b"));
        assert!(!state.contains("mi-1", "sha256:b"));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        // Lines without a time (older versions) and old pushes count as not pushed.
        std::fs::write(
            &path,
            format!(
                "mi-1 sha256:a\nmi-2 sha256:b {}\n",
                epoch_now() - KEY_TTL.as_secs()
            ),
        )
        .unwrap();
        let state = State::load(&path).unwrap();
        assert!(!state.contains("mi-1", "sha256:a"));
        assert!(!state.contains("mi-2", "sha256:b"));
    }

    /// Runs the generated script with `/etc/ssh` redirected into a temporary
    /// directory, twice, and checks each file holds the key exactly once.
    #[test]
    fn cancelling_is_still_in_progress() {
        assert!(still_running(Some(&CommandInvocationStatus::Cancelling)));
        assert!(still_running(None));
        assert!(!still_running(Some(&CommandInvocationStatus::Cancelled)));
        assert!(!still_running(Some(&CommandInvocationStatus::Success)));
    }

    #[test]
    fn script_installs_the_key_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let etc = root.join("etc/ssh");
        std::fs::create_dir_all(&etc).unwrap();
        // An existing key without a final newline must survive intact.
        std::fs::write(etc.join("authorized_keys"), "ssh-rsa AAAAother old").unwrap();
        let key = normalise_key(KEY).unwrap();
        let me = String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let lines = script(me.trim(), &key, &fingerprint(&key));
        let text = lines
            .join("\n")
            .replace("/etc/ssh", &etc.display().to_string());
        for _ in 0..2 {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(&text)
                .env("HOME", root.join("home"))
                .output()
                .unwrap();
            assert!(status.status.success(), "{status:?}");
        }
        let global = std::fs::read_to_string(etc.join("authorized_keys")).unwrap();
        assert_eq!(global, format!("ssh-rsa AAAAother old\n{key}\n"));
        let user = std::fs::read_to_string(root.join("home/.ssh/authorized_keys")).unwrap();
        assert_eq!(user, format!("{key}\n"));
        let dropped: Vec<_> = std::fs::read_dir(etc.join("authorized_keys.d"))
            .unwrap()
            .collect();
        assert_eq!(dropped.len(), 1);
    }

    #[test]
    fn script_reports_a_missing_user() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc/ssh");
        let key = normalise_key(KEY).unwrap();
        let text = script("no-such-user-sm-ssh", &key, &fingerprint(&key))
            .join("\n")
            .replace("/etc/ssh", &etc.display().to_string());
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&text)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
    }
}
