//! Port forwarding over smux: many TCP connections over one session, and a
//! pool of sessions for throughput.

use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::link::{fatal, Link, Turn};
use super::port::{connect_port, PortSession};
use super::{Options, SessionControl, SessionEnd, SessionError, SessionStats, StreamTarget};
use crate::connection::Event;
use crate::handshake::agent_needs_keepalive;
use crate::smux::{Mux, MuxEvent};

/// Bytes buffered inside each stream's in-memory pipe.
const STREAM_BUFFER: usize = 64 * 1024;
/// smux bytes waiting for the engine's window before local reads pause.
const MUX_BACKLOG: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// What a stream's read fails with when the agent could not dial for it.
const DIAL_FAILED: &str =
    "the agent could not connect to the destination port (see the SSM agent logs)";

type ErrorSlot = Arc<Mutex<Option<String>>>;

enum Command {
    Open(oneshot::Sender<MuxStream>),
    Data(u32, Bytes),
    Fin(u32),
    Close,
}

enum Inbound {
    Data(Bytes),
    /// The stream is over abnormally; the reason is in the stream's error slot.
    Fail,
}

struct StreamHandle {
    tx: mpsc::UnboundedSender<Inbound>,
    error: ErrorSlot,
}

/// One smux stream: a TCP connection's worth of bytes to the target.
/// Shut it down (or drop it) to send FIN. A read fails with the agent's reason
/// when it could not reach the target (ConnectToPortError).
pub struct MuxStream {
    inner: DuplexStream,
    error: ErrorSlot,
}

impl AsyncRead for MuxStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            if buf.filled().len() == before && buf.remaining() > 0 {
                if let Some(message) = self.error.lock().expect("error slot").clone() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        message,
                    )));
                }
            }
        }
        result
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An smux port-forwarding session (AWS-StartPortForwardingSession[ToRemoteHost]).
pub struct MuxSession {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Result<SessionEnd, SessionError>>,
    session_id: String,
    stats: Arc<Mutex<SessionStats>>,
}

impl MuxSession {
    /// Opens the data channel and completes the handshake; fails unless the agent
    /// agreed to multiplexed port forwarding (a session it cannot use is
    /// terminated). [`connect_port`] takes either mode.
    pub async fn connect<C: SessionControl>(
        target: StreamTarget,
        control: Arc<C>,
        options: Options,
    ) -> Result<MuxSession, SessionError> {
        match connect_port(target, control, options).await? {
            PortSession::Mux(session) => Ok(session),
            PortSession::Basic(basic) => {
                let _ = basic.close().await;
                Err(SessionError::Unsupported(
                    "the agent chose basic port forwarding, not smux (agent 3.0.196.0 or older, or ClientVersion below 1.1.70); the session was terminated: use connect_port or forward_basic".to_owned(),
                ))
            }
        }
    }

    /// Starts the session task on a link whose handshake chose smux.
    pub(crate) fn start<C: SessionControl>(link: Link<C>, pending: Vec<Event>) -> MuxSession {
        let session_id = link.session_id().to_owned();
        // The plugin's rule: NOPs for agents that may run smux keep-alive.
        let keepalive = link
            .options()
            .smux_keepalive
            .filter(|_| agent_needs_keepalive(link.conn.agent_version()));
        let (commands, rx) = mpsc::channel(64);
        let stats = Arc::new(Mutex::new(link.stats()));
        let task = tokio::spawn(run(
            link,
            rx,
            commands.downgrade(),
            pending,
            stats.clone(),
            keepalive,
        ));
        MuxSession {
            commands,
            task,
            session_id,
            stats,
        }
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        self.stats.lock().expect("stats").clone()
    }

    /// False once the session has ended.
    pub fn is_alive(&self) -> bool {
        !self.task.is_finished()
    }

    /// Opens a new stream; the agent dials the target for it.
    pub async fn open_stream(&self) -> Result<MuxStream, SessionError> {
        let ended = || SessionError::Closed("the port-forwarding session has ended".to_owned());
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Open(tx))
            .await
            .map_err(|_| ended())?;
        rx.await.map_err(|_| ended())
    }

    /// Ends the session: Flag TerminateSession, wait for acknowledgements, then the
    /// TerminateSession API.
    pub async fn close(self) -> Result<SessionEnd, SessionError> {
        let _ = self.commands.send(Command::Close).await;
        self.join().await
    }

    /// Waits for the session to end by itself (e.g. `channel_closed`).
    pub async fn join(self) -> Result<SessionEnd, SessionError> {
        match self.task.await {
            Ok(result) => result,
            Err(error) => Err(SessionError::Protocol(format!(
                "session task failed: {error}"
            ))),
        }
    }
}

async fn run<C: SessionControl>(
    mut link: Link<C>,
    mut rx: mpsc::Receiver<Command>,
    // Weak, so that the session ends once the MuxSession and all streams are gone.
    commands: mpsc::WeakSender<Command>,
    mut events: Vec<Event>,
    stats: Arc<Mutex<SessionStats>>,
    keepalive: Option<Duration>,
) -> Result<SessionEnd, SessionError> {
    let mut mux = Mux::new();
    let mut streams: HashMap<u32, StreamHandle> = HashMap::new();
    // The agent reports a failed dial with a bare ConnectToPortError flag and
    // then a FIN on that stream (port_mux.go, handleServerConnections): each
    // flag not yet matched waits for the next FIN of a stream that never
    // received data.
    let mut dial_errors = DialErrors::default();
    let mut next_nop = keepalive.map(|every| Instant::now() + every);
    let mut detached = false;
    let result = loop {
        events.extend(std::iter::from_fn(|| link.conn.poll_event()));
        let mut outcome = None;
        for event in events.drain(..) {
            match event {
                Event::Data(bytes) => {
                    if let Err(error) = mux.handle_input(&bytes) {
                        outcome = Some(Err(SessionError::Protocol(error.to_string())));
                        break;
                    }
                    dispatch(&mut mux, &mut streams, &mut dial_errors);
                }
                Event::ConnectToPortError => dial_errors.unmatched += 1,
                Event::Closed { output } => {
                    outcome = Some(Ok(output));
                    break;
                }
                Event::HandshakeComplete { .. } => {}
                other => {
                    outcome = Some(Err(fatal(&other).unwrap_or_else(|| {
                        SessionError::Protocol(format!("unexpected event {other:?}"))
                    })));
                    break;
                }
            }
        }
        if let Some(outcome) = outcome {
            break outcome;
        }
        if mux.pending_output() > 0 && link.conn.can_send() {
            let out = mux.take_output();
            let accepted = link.conn.send_data(&out);
            if accepted < out.len() {
                mux.unsend(&out[accepted..]);
            }
        }
        *stats.lock().expect("stats") = link.stats();
        if detached && streams.is_empty() {
            break Ok(link.terminate().await);
        }
        let accept = !detached && mux.pending_output() < MUX_BACKLOG;
        let app = async {
            tokio::select! {
                command = rx.recv(), if accept => Some(command),
                () = sleep_until_opt(next_nop) => None,
            }
        };
        match link.turn(true, app).await {
            Err(error) => break Err(error),
            Ok(Turn::Engine) => {}
            // smux keep-alive: the agent closes the session after 30 s without a frame.
            Ok(Turn::App(None)) => {
                mux.nop();
                next_nop = keepalive.map(|every| Instant::now() + every);
            }
            Ok(Turn::App(Some(Some(Command::Close)))) => break Ok(link.terminate().await),
            // The MuxSession and every stream's writer are gone: finish once the
            // agent has closed the remaining streams.
            Ok(Turn::App(Some(None))) => detached = true,
            Ok(Turn::App(Some(Some(Command::Open(reply))))) => {
                // The requester holds a sender, so the upgrade succeeds.
                let Some(commands) = commands.upgrade() else {
                    continue;
                };
                let id = mux.open();
                let (stream, handle) = spawn_stream(id, commands);
                streams.insert(id, handle);
                dial_errors.silent.insert(id);
                let _ = reply.send(stream);
            }
            Ok(Turn::App(Some(Some(Command::Data(id, bytes))))) => mux.write(id, &bytes),
            Ok(Turn::App(Some(Some(Command::Fin(id))))) => mux.finish(id),
        }
    };
    *stats.lock().expect("stats") = link.stats();
    let failure = match &result {
        Ok(_) => "the port-forwarding session has ended".to_owned(),
        Err(error) => error.to_string(),
    };
    for handle in streams.into_values() {
        *handle.error.lock().expect("error slot") = Some(failure.clone());
        let _ = handle.tx.send(Inbound::Fail);
    }
    result.map(|output| SessionEnd {
        output,
        stats: link.stats(),
    })
}

/// Which streams a ConnectToPortError can belong to.
#[derive(Default)]
struct DialErrors {
    /// Flags received and not yet matched to a stream.
    unmatched: usize,
    /// Open streams that have not received any data.
    silent: HashSet<u32>,
}

fn dispatch(mux: &mut Mux, streams: &mut HashMap<u32, StreamHandle>, dial: &mut DialErrors) {
    while let Some(event) = mux.poll_event() {
        match event {
            MuxEvent::Data(id, bytes) => {
                dial.silent.remove(&id);
                if let Some(handle) = streams.get(&id) {
                    let _ = handle.tx.send(Inbound::Data(bytes));
                }
            }
            MuxEvent::Fin(id) => {
                // Dropping the sender ends the pipe: the application reads EOF,
                // or the dial error if this FIN follows a ConnectToPortError.
                let handle = streams.remove(&id);
                if dial.silent.remove(&id) && dial.unmatched > 0 {
                    dial.unmatched -= 1;
                    if let Some(handle) = handle {
                        *handle.error.lock().expect("error slot") = Some(DIAL_FAILED.to_owned());
                        let _ = handle.tx.send(Inbound::Fail);
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Connects the application's end of a pipe to the session task: one task
/// copies application writes into smux, another agent data into the pipe.
fn spawn_stream(id: u32, commands: mpsc::Sender<Command>) -> (MuxStream, StreamHandle) {
    let (user, ours) = tokio::io::duplex(STREAM_BUFFER);
    let (mut read_half, mut write_half) = tokio::io::split(ours);
    let error: ErrorSlot = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let mut buf = BytesMut::with_capacity(READ_CHUNK);
            match read_half.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {
                    if commands
                        .send(Command::Data(id, buf.freeze()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                _ => {
                    let _ = commands.send(Command::Fin(id)).await;
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(inbound) = rx.recv().await {
            match inbound {
                Inbound::Data(bytes) => {
                    if write_half.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Inbound::Fail => break,
            }
        }
        let _ = write_half.shutdown().await;
    });
    let stream = MuxStream {
        inner: user,
        error: error.clone(),
    };
    (stream, StreamHandle { tx, error })
}

/// Several sessions to the same target, used in turn, so that aggregate
/// throughput grows with the number of sessions (each is paced on its own).
pub struct MuxPool {
    sessions: Vec<MuxSession>,
    next: AtomicUsize,
}

impl MuxPool {
    /// Connects one session per target (from separate StartSession calls), concurrently.
    pub async fn connect<C: SessionControl>(
        targets: Vec<StreamTarget>,
        control: Arc<C>,
        options: Options,
    ) -> Result<MuxPool, SessionError> {
        let connecting = targets
            .into_iter()
            .map(|target| MuxSession::connect(target, control.clone(), options.clone()));
        let sessions = futures_util::future::join_all(connecting)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MuxPool {
            sessions,
            next: AtomicUsize::new(0),
        })
    }

    /// A pool of sessions already connected.
    pub fn from_sessions(sessions: Vec<MuxSession>) -> MuxPool {
        MuxPool {
            sessions,
            next: AtomicUsize::new(0),
        }
    }

    pub fn sessions(&self) -> &[MuxSession] {
        &self.sessions
    }

    /// Opens a stream on the next live session, round-robin.
    pub async fn open_stream(&self) -> Result<MuxStream, SessionError> {
        let mut last = SessionError::Closed("the pool has no sessions".to_owned());
        for _ in 0..self.sessions.len() {
            let index = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
            let session = &self.sessions[index];
            if !session.is_alive() {
                continue;
            }
            match session.open_stream().await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// Closes every session.
    pub async fn close(self) -> Vec<Result<SessionEnd, SessionError>> {
        futures_util::future::join_all(self.sessions.into_iter().map(MuxSession::close)).await
    }
}
