//! Port forwarding over smux: many TCP connections over one session, and a
//! pool of sessions for throughput.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::link::{fatal, Link, Turn};
use super::open::{open, OpenSession};
use super::{Options, SessionControl, SessionEnd, SessionError, SessionStats, StreamTarget};
use crate::connection::Event;
use crate::handshake::SessionMode;
use crate::payload::flag;
use crate::smux::{Mux, MuxEvent};

/// Bytes buffered inside each stream's in-memory pipe.
const STREAM_BUFFER: usize = 64 * 1024;
/// smux bytes waiting for the engine's window before local reads pause.
const MUX_BACKLOG: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// Closed streams remembered for a late ConnectToPortError, at most.
const MAX_AWAITING: usize = 256;

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
    /// agreed to multiplexed port forwarding.
    pub async fn connect<C: SessionControl>(
        target: StreamTarget,
        control: Arc<C>,
        options: Options,
    ) -> Result<MuxSession, SessionError> {
        MuxSession::from_open(open(target, control, options).await?)
    }

    /// [`connect`](Self::connect) on a session [`open`] established.
    pub fn from_open<C: SessionControl>(
        session: OpenSession<C>,
    ) -> Result<MuxSession, SessionError> {
        let OpenSession {
            link,
            mode,
            pending,
        } = session;
        let session_id = link.session_id().to_owned();
        if mode != SessionMode::MuxPort {
            return Err(SessionError::Unsupported(format!(
                "the agent chose {mode:?} mode, not multiplexed port forwarding (agent 3.0.196.0 or older, ClientVersion below 1.1.70, or not a port-forwarding document); for BasicPort use forward_basic with a new session"
            )));
        }
        let (commands, rx) = mpsc::channel(64);
        let stats = Arc::new(Mutex::new(link.stats()));
        let task = tokio::spawn(run(link, rx, commands.downgrade(), pending, stats.clone()));
        Ok(MuxSession {
            commands,
            task,
            session_id,
            stats,
        })
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
) -> Result<SessionEnd, SessionError> {
    let mut mux = Mux::new();
    let mut streams: HashMap<u32, StreamHandle> = HashMap::new();
    // Streams that have not heard from the target yet, oldest first: the agent
    // reports a failed dial with a bare ConnectToPortError flag, which we pin on
    // the oldest of them.
    let mut awaiting: VecDeque<u32> = VecDeque::new();
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
                    dispatch(&mut mux, &mut streams, &mut awaiting);
                }
                Event::ConnectToPortError => match awaiting.pop_front() {
                    Some(id) => match streams.remove(&id) {
                        Some(handle) => {
                            let why = "the agent could not connect to the destination port (see the SSM agent logs)";
                            *handle.error.lock().expect("error slot") = Some(why.to_owned());
                            let _ = handle.tx.send(Inbound::Fail);
                            mux.forget(id);
                        }
                        // The agent closed that stream before reporting it.
                        None => tracing::debug!(
                            stream = id,
                            "the agent could not connect for a closed stream"
                        ),
                    },
                    None => {
                        tracing::debug!("ConnectToPortError with no stream awaiting its target")
                    }
                },
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
            break terminate(&mut link).await;
        }
        let accept = !detached && mux.pending_output() < MUX_BACKLOG;
        let app = async {
            if accept {
                rx.recv().await
            } else {
                std::future::pending().await
            }
        };
        match link.turn(true, app).await {
            Err(error) => break Err(error),
            Ok(Turn::Engine) => {}
            Ok(Turn::App(Some(Command::Close))) => break terminate(&mut link).await,
            // The MuxSession and every stream's writer are gone: finish once the
            // agent has closed the remaining streams.
            Ok(Turn::App(None)) => detached = true,
            Ok(Turn::App(Some(Command::Open(reply)))) => {
                // The requester holds a sender, so the upgrade succeeds.
                let Some(commands) = commands.upgrade() else {
                    continue;
                };
                let id = mux.open();
                let (stream, handle) = spawn_stream(id, commands);
                streams.insert(id, handle);
                awaiting.push_back(id);
                let _ = reply.send(stream);
            }
            Ok(Turn::App(Some(Command::Data(id, bytes)))) => mux.write(id, &bytes),
            Ok(Turn::App(Some(Command::Fin(id)))) => mux.finish(id),
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

fn dispatch(mux: &mut Mux, streams: &mut HashMap<u32, StreamHandle>, awaiting: &mut VecDeque<u32>) {
    while let Some(event) = mux.poll_event() {
        match event {
            MuxEvent::Data(id, bytes) => {
                awaiting.retain(|&a| a != id);
                if let Some(handle) = streams.get(&id) {
                    let _ = handle.tx.send(Inbound::Data(bytes));
                }
            }
            MuxEvent::Fin(id) => {
                // Stays in `awaiting`: a ConnectToPortError may follow the FIN.
                // Dropping the sender ends the pipe: the application reads EOF.
                streams.remove(&id);
                if awaiting.len() > MAX_AWAITING {
                    awaiting.retain(|a| streams.contains_key(a));
                }
            }
        }
    }
}

async fn terminate<C: SessionControl>(link: &mut Link<C>) -> Result<String, SessionError> {
    link.conn.send_flag(flag::TERMINATE_SESSION);
    let mut events = Vec::new();
    let drained = link.drain(&mut events).await;
    if let Err(error) = link.control().terminate(link.session_id()).await {
        tracing::debug!(%error, "TerminateSession failed");
    }
    if let Err(error) = drained {
        tracing::debug!(%error, "the session ended while draining");
    }
    Ok(events
        .into_iter()
        .find_map(|e| match e {
            Event::Closed { output } => Some(output),
            _ => None,
        })
        .unwrap_or_default())
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
