//! The agent's shell plugin (agent `session/shell/shell.go`, `shell_unix.go`)
//! for `Standard_Stream`, `InteractiveCommands` and `NonInteractiveCommands`:
//! a real pseudo-terminal running `sh` in the instance's sandbox, or, for
//! non-interactive commands, the command with pipes, its stderr apart and its
//! exit code at the end.
//!
//! The process starts in a task; until it runs, input and Size are "not
//! ready" (the agent then leaves them unacknowledged, so the client resends).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sm_ssh_proxy::payload::Size;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::pacing::RateLimiter;
use super::target::TargetEvent;

/// The agent's `StreamDataPayloadSize`: at most this much per read.
const READ_CHUNK: usize = 1024;

/// What a session's shell needs to start.
pub(crate) struct ShellSpec {
    /// The document's `sessionType`.
    pub session_type: String,
    /// `properties.linux.commands` (empty: an interactive `sh`).
    pub commands: String,
    /// `properties.linux.separateOutputStream`.
    pub separate_output: bool,
    /// The instance's sandbox: the shell's HOME and working directory.
    pub sandbox: Option<PathBuf>,
    /// Session preferences `shellProfile.linux`, written into new shells.
    pub shell_profile: String,
    pub pause: Option<Duration>,
}

impl ShellSpec {
    fn non_interactive(&self) -> bool {
        self.session_type == "NonInteractiveCommands"
    }
}

/// What the shell task reports to the agent.
pub(crate) enum ShellEvent {
    /// The process runs: from now on input is taken.
    Ready(Control),
    /// The process could not start: the session fails with this.
    Failed(String),
    Output(Bytes),
    StdErr(Bytes),
    /// `EXIT_CODE: <n>` (non-interactive commands with separate streams).
    ExitCode(i32),
    /// The process ended and its output is read.
    Done,
}

/// The agent's handle on a running process.
pub(crate) enum Control {
    /// Keystrokes and sizes for the pty, through its writer task.
    Pty(mpsc::UnboundedSender<PtyInput>),
    /// A non-interactive command: control bytes become signals.
    Process(u32),
}

pub(crate) enum PtyInput {
    Bytes(Bytes),
    Size(Size),
}

/// The shell plugin as the agent holds it.
pub(crate) struct Shell {
    control: Option<Control>,
}

/// Whether the shell took a message; `false` = not ready (leave it unacked).
pub(crate) type Ready = bool;

impl Shell {
    /// Starts the process in the background; its events arrive on `events`.
    pub(crate) fn start(
        spec: ShellSpec,
        events: mpsc::Sender<TargetEvent>,
        tasks: &mut JoinSet<()>,
    ) -> Shell {
        tasks.spawn(async move {
            let failed = events.clone();
            if let Err(error) = run(spec, events).await {
                let _ = failed
                    .send(TargetEvent::Shell(ShellEvent::Failed(error)))
                    .await;
            }
        });
        Shell { control: None }
    }

    pub(crate) fn on_ready(&mut self, control: Control) {
        self.control = Some(control);
    }

    /// Client Output (`shell_unix.go` `InputStreamMessageHandler`).
    pub(crate) fn input(&mut self, payload: Bytes) -> Ready {
        match &self.control {
            None => false,
            Some(Control::Pty(tx)) => {
                let _ = tx.send(PtyInput::Bytes(payload));
                true
            }
            Some(Control::Process(pid)) => {
                // Only control characters mean something to a command without a terminal.
                if let Some(signal) = payload.iter().find_map(|&b| control_signal(b)) {
                    signal_process(*pid, signal);
                }
                true
            }
        }
    }

    /// A Size payload: resize the pty (ignored without one).
    pub(crate) fn resize(&self, payload: &[u8]) -> Ready {
        match &self.control {
            None => false,
            Some(Control::Pty(tx)) => {
                if let Ok(size) = serde_json::from_slice::<Size>(payload) {
                    let _ = tx.send(PtyInput::Size(size));
                }
                true
            }
            Some(Control::Process(_)) => true,
        }
    }
}

/// The agent's `ByteControlSignalsLinux`.
fn control_signal(byte: u8) -> Option<rustix::process::Signal> {
    use rustix::process::Signal;
    match byte {
        0x03 => Some(Signal::INT),
        0x1c => Some(Signal::QUIT),
        0x1a => Some(Signal::TSTP),
        _ => None,
    }
}

fn signal_process(pid: u32, signal: rustix::process::Signal) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// The environment of the shell: PATH, HOME, TERM=xterm-256color and
/// LANG=C.UTF-8 as the agent sets them (`shell_unix.go`
/// `StartCommandExecutor`), nothing of the test's own (no credentials).
fn environment(home: &str) -> Vec<(&'static str, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    vec![
        ("PATH", path),
        ("HOME", home.to_owned()),
        ("TERM", "xterm-256color".to_owned()),
        ("LANG", "C.UTF-8".to_owned()),
    ]
}

async fn run(spec: ShellSpec, events: mpsc::Sender<TargetEvent>) -> Result<(), String> {
    let home = spec
        .sandbox
        .as_ref()
        .map(|s| s.join("home"))
        .unwrap_or_else(std::env::temp_dir);
    let env = environment(&home.display().to_string());
    if spec.non_interactive() {
        return run_command(&spec, env, home, events).await;
    }
    let mut args = Vec::new();
    if !spec.commands.trim().is_empty() {
        args = vec!["-c".to_owned(), spec.commands.clone()];
    }
    let (terminal, pts) = pty_process::open().map_err(|e| format!("Failed to start pty: {e}"))?;
    let mut child = pty_process::Command::new("sh")
        .args(&args)
        .env_clear()
        .envs(env)
        .current_dir(&home)
        .kill_on_drop(true)
        .spawn(pts)
        .map_err(|e| format!("Failed to start pty: {e}"))?;
    let (output, mut input) = terminal.into_split();
    if spec.session_type == "Standard_Stream" && !spec.shell_profile.trim().is_empty() {
        // `runShellProfile`: the profile and a newline, typed into the new shell.
        let profile = format!("{}\n", spec.shell_profile);
        input
            .write_all(profile.as_bytes())
            .await
            .map_err(|e| format!("Encountered an error while executing shell profile: {e}"))?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<PtyInput>();
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            match message {
                PtyInput::Bytes(bytes) => {
                    if input.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                PtyInput::Size(size) => {
                    let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
                    let _ =
                        input.resize(pty_process::Size::new(clamp(size.rows), clamp(size.cols)));
                }
            }
        }
    });
    if events
        .send(TargetEvent::Shell(ShellEvent::Ready(Control::Pty(tx))))
        .await
        .is_err()
    {
        return Ok(());
    }
    // The pty reports EIO once the shell and everything it started closed it.
    pump(output, ShellEvent::Output, spec.pause, &events).await;
    let _ = child.wait().await;
    writer.abort();
    let _ = events.send(TargetEvent::Shell(ShellEvent::Done)).await;
    Ok(())
}

/// `NonInteractiveCommands`: the command split shell-style and run without a
/// shell (`shlex.Split`), stdout and stderr as pipes.
async fn run_command(
    spec: &ShellSpec,
    env: Vec<(&'static str, String)>,
    home: PathBuf,
    events: mpsc::Sender<TargetEvent>,
) -> Result<(), String> {
    let words = shlex::split(&spec.commands)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| format!("Failed to parse commands input: {}", spec.commands))?;
    let spawned = tokio::process::Command::new(&words[0])
        .args(&words[1..])
        .env_clear()
        .envs(env)
        .current_dir(&home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            // `processCommandsWithOutputStreamSeparate`: exit code 1, and the
            // plugin fails with the reason.
            let _ = events
                .send(TargetEvent::Shell(ShellEvent::Ready(Control::Process(0))))
                .await;
            if spec.separate_output {
                let _ = events
                    .send(TargetEvent::Shell(ShellEvent::ExitCode(1)))
                    .await;
            }
            return Err(format!(
                "Error occurred starting the command: exec: \"{}\": {error}",
                words[0]
            ));
        }
    };
    let pid = child.id().unwrap_or_default();
    if events
        .send(TargetEvent::Shell(ShellEvent::Ready(Control::Process(pid))))
        .await
        .is_err()
    {
        return Ok(());
    }
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let err_kind = if spec.separate_output {
        ShellEvent::StdErr
    } else {
        ShellEvent::Output
    };
    tokio::join!(
        pump(stdout, ShellEvent::Output, spec.pause, &events),
        pump(stderr, err_kind, spec.pause, &events),
    );
    let code = child.wait().await.ok().map(|s| s.code().unwrap_or(1));
    finish(spec, code, &events).await
}

async fn finish(
    spec: &ShellSpec,
    code: Option<i32>,
    events: &mpsc::Sender<TargetEvent>,
) -> Result<(), String> {
    if spec.separate_output {
        let code = code.unwrap_or(1);
        let _ = events
            .send(TargetEvent::Shell(ShellEvent::ExitCode(code)))
            .await;
    }
    let _ = events.send(TargetEvent::Shell(ShellEvent::Done)).await;
    Ok(())
}

/// Reads ≤ 1024 bytes at a time and sends them, holding back an incomplete
/// UTF-8 sequence at the end of a read for the next one (`processStdoutData`).
async fn pump(
    mut reader: impl AsyncRead + Unpin,
    kind: fn(Bytes) -> ShellEvent,
    pause: Option<Duration>,
    events: &mpsc::Sender<TargetEvent>,
) {
    let mut pause = pause.map(RateLimiter::every);
    let mut held = BytesMut::new();
    let mut buf = [0u8; READ_CHUNK];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        held.extend_from_slice(&buf[..n]);
        let ready = held.len() - incomplete_tail(&held);
        let chunk = held.split_to(ready).freeze();
        if !chunk.is_empty() && events.send(TargetEvent::Shell(kind(chunk))).await.is_err() {
            return;
        }
        if let Some(pause) = &mut pause {
            pause.wait().await;
        }
    }
    if !held.is_empty() {
        let _ = events.send(TargetEvent::Shell(kind(held.freeze()))).await;
    }
}

/// How many bytes at the end start a UTF-8 sequence that is not complete yet
/// (at most 3); invalid bytes are sent as they are.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        let needed = match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            0x80..=0xbf => continue,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_utf8_at_the_end_is_held_back() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_tail(&"é".as_bytes()[..1]), 1);
        assert_eq!(incomplete_tail(&"€".as_bytes()[..2]), 2);
        assert_eq!(incomplete_tail(&"😀".as_bytes()[..3]), 3);
        assert_eq!(incomplete_tail(&[b'a', 0xff]), 0);
    }
}
