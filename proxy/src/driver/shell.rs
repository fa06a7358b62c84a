//! Shell and command sessions (`Standard_Stream`, `InteractiveCommands`,
//! `NonInteractiveCommands`): keystrokes and terminal sizes to the agent;
//! Output, StdErr and the exit code from it, until the service closes the
//! channel. The terminal itself (raw mode, SIGWINCH) is the binary's.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use super::link::{fatal, Link, Turn};
use super::open::{open, OpenSession};
use super::pump::{write_loop, OUTPUT_QUEUE};
use super::{Options, SessionControl, SessionError, SessionStats, StreamTarget};
use crate::connection::Event;
use crate::handshake::SessionMode;
use crate::payload::Size;

/// The local ends of a shell session.
pub struct ShellIo<O, E> {
    /// Keystrokes and the bytes of forwarded signals. Closing it stops input
    /// only: the session runs on until the remote side ends it.
    pub input: mpsc::Receiver<Bytes>,
    /// Terminal sizes: the first as soon as there is one, then each change.
    pub sizes: mpsc::Receiver<Size>,
    /// Where Output goes.
    pub stdout: O,
    /// Where StdErr goes (non-interactive commands with separate streams).
    pub stderr: E,
}

/// How a shell session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellEnd {
    /// `channel_closed` Output (empty when the agent gave no reason).
    pub output: String,
    /// The remote command's status, when the agent sent one (non-interactive
    /// commands with separate streams do; shells do not).
    pub exit_code: Option<i32>,
    /// False when the session ended because the local output went away
    /// (then we sent TerminateSession ourselves).
    pub closed_by_service: bool,
    pub stats: SessionStats,
}

/// Opens a shell session and runs it (see [`shell_open`]).
pub async fn shell<C, O, E>(
    target: StreamTarget,
    control: Arc<C>,
    options: Options,
    io: ShellIo<O, E>,
) -> Result<ShellEnd, SessionError>
where
    C: SessionControl,
    O: AsyncWrite + Unpin + Send,
    E: AsyncWrite + Unpin + Send,
{
    shell_open(open(target, control, options, None).await?, io).await
}

/// Runs a shell session [`open`] established until the service closes it
/// (the shell exited, the command ended, the session was terminated).
/// stdout and stderr are flushed before it returns. If a local writer fails,
/// the session is ended (TerminateSession flag, then the API).
pub async fn shell_open<C, O, E>(
    session: OpenSession<C>,
    io: ShellIo<O, E>,
) -> Result<ShellEnd, SessionError>
where
    C: SessionControl,
    O: AsyncWrite + Unpin + Send,
    E: AsyncWrite + Unpin + Send,
{
    if session.mode != SessionMode::Shell {
        return Err(SessionError::Unsupported(format!(
            "the agent chose {:?} mode, not a shell session",
            session.mode
        )));
    }
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
    let (err_tx, err_rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
    let ShellIo {
        input,
        sizes,
        stdout,
        stderr,
    } = io;
    let driving = Driver {
        link: session.link,
        events: session.pending,
        stdout: VecDeque::new(),
        stderr: VecDeque::new(),
        held: None,
        exit_code: None,
    }
    .run(input, sizes, out_tx, err_tx);
    let writing = async { tokio::join!(write_loop(stdout, out_rx), write_loop(stderr, err_rx)) };
    let (ended, (out, err)) = tokio::join!(driving, writing);
    let end = ended?;
    if end.closed_by_service {
        for written in [out, err] {
            written.map_err(|e| SessionError::Io(format!("writing the output failed: {e}")))?;
        }
    }
    Ok(end)
}

struct Driver<C> {
    link: Link<C>,
    events: Vec<Event>,
    stdout: VecDeque<Bytes>,
    stderr: VecDeque<Bytes>,
    /// Input the engine has not accepted yet (its window is full).
    held: Option<Bytes>,
    exit_code: Option<i32>,
}

enum Wake {
    Input(Option<Bytes>),
    Size(Option<Size>),
    Writable,
}

impl<C: SessionControl> Driver<C> {
    async fn run(
        mut self,
        mut input: mpsc::Receiver<Bytes>,
        mut sizes: mpsc::Receiver<Size>,
        out_tx: mpsc::Sender<Bytes>,
        err_tx: mpsc::Sender<Bytes>,
    ) -> Result<ShellEnd, SessionError> {
        let (mut input_open, mut sizes_open) = (true, true);
        loop {
            let link = &mut self.link;
            self.events
                .extend(std::iter::from_fn(|| link.conn.poll_event()));
            for event in std::mem::take(&mut self.events) {
                match event {
                    Event::Data(bytes) => self.stdout.push_back(bytes),
                    Event::StdErr(bytes) => self.stderr.push_back(bytes),
                    Event::ExitCode(code) => self.exit_code = Some(code),
                    Event::Closed { output } => {
                        flush(&out_tx, &mut self.stdout).await;
                        flush(&err_tx, &mut self.stderr).await;
                        return Ok(self.end(output, true));
                    }
                    Event::HandshakeComplete { .. }
                    | Event::ConnectToPortError
                    | Event::DataKeyNeeded { .. } => {}
                    Event::Failed(_) => {
                        return Err(fatal(&event).expect("a failure is fatal"));
                    }
                }
            }
            if !offer(&out_tx, &mut self.stdout) || !offer(&err_tx, &mut self.stderr) {
                return self.terminate().await;
            }
            if let Some(bytes) = self.held.take() {
                let accepted = self.link.conn.send_data(&bytes);
                if accepted < bytes.len() {
                    self.held = Some(bytes.slice(accepted..));
                }
            }
            let want_input = input_open && self.held.is_none() && self.link.conn.can_send();
            let (want_out, want_err) = (!self.stdout.is_empty(), !self.stderr.is_empty());
            let (input, sizes, out_tx, err_tx) = (&mut input, &mut sizes, &out_tx, &err_tx);
            let app = async move {
                tokio::select! {
                    bytes = input.recv(), if want_input => Wake::Input(bytes),
                    size = sizes.recv(), if sizes_open => Wake::Size(size),
                    _ = out_tx.reserve(), if want_out => Wake::Writable,
                    _ = err_tx.reserve(), if want_err => Wake::Writable,
                    else => std::future::pending().await,
                }
            };
            let room = self.stdout.len() + self.stderr.len() < OUTPUT_QUEUE;
            match self.link.turn(room, app).await? {
                Turn::App(Wake::Input(Some(bytes))) => self.held = Some(bytes),
                Turn::App(Wake::Input(None)) => input_open = false,
                Turn::App(Wake::Size(Some(size))) => self.link.conn.send_size(size),
                Turn::App(Wake::Size(None)) => sizes_open = false,
                Turn::App(Wake::Writable) | Turn::Engine => {}
            }
        }
    }

    fn end(&self, output: String, closed_by_service: bool) -> ShellEnd {
        ShellEnd {
            output,
            exit_code: self.exit_code,
            closed_by_service,
            stats: self.link.stats(),
        }
    }

    /// The local output is gone: end the session ourselves.
    async fn terminate(mut self) -> Result<ShellEnd, SessionError> {
        // The agent's closing Output is of no use once nobody reads it.
        let _ = self.link.terminate().await;
        Ok(self.end(String::new(), false))
    }
}

/// Hands queued bytes to `tx` as far as it has room; false once it is closed.
fn offer(tx: &mpsc::Sender<Bytes>, queue: &mut VecDeque<Bytes>) -> bool {
    while let Some(bytes) = queue.pop_front() {
        match tx.try_send(bytes) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(bytes)) => {
                queue.push_front(bytes);
                return true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    true
}

async fn flush(tx: &mpsc::Sender<Bytes>, queue: &mut VecDeque<Bytes>) {
    for bytes in queue.drain(..) {
        if tx.send(bytes).await.is_err() {
            return;
        }
    }
}
