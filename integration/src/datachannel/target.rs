//! The agent's TCP side: dialing the target, one reader (the agent's pump)
//! and one writer task per connection, and the pipe that turns the smux
//! server's frames into Output-sized chunks.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::timeout;

use super::pacing::{RateLimiter, READ_CHUNK};
use super::smux;

/// How long a dial to the target may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// What one read of a mux stream's target takes at most (one PSH frame).
const MUX_READ: usize = 8192;

/// What the target side tells the agent.
pub(crate) enum TargetEvent {
    /// A dial finished; `id` is the basic connection's number or the smux stream id.
    Dialed {
        id: u64,
        result: Result<TcpStream, String>,
    },
    /// Bytes read from the basic connection `id`.
    Data { id: u64, bytes: Bytes },
    /// The basic connection `id` reached EOF (`error` is None) or failed.
    Closed { id: u64, error: Option<String> },
    /// A chunk (≤ 1024 bytes) of the smux server's outgoing byte stream.
    MuxBytes(Bytes),
    /// The target of smux stream `sid` ended; its FIN is on the pipe.
    MuxEnded(u32),
    /// What the shell plugin's process did.
    Shell(super::shell::ShellEvent),
}

/// Dials `addr`, or fails as the `fail_target_dial` fault asks.
pub(crate) async fn dial(
    addr: Result<SocketAddr, String>,
    fail: bool,
) -> Result<TcpStream, String> {
    if fail {
        return Err("connection refused (injected fault)".into());
    }
    let addr = addr?;
    match timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connection timed out".into()),
    }
}

/// One open target connection. Dropping it stops the reader and, once the
/// writer has flushed, closes the socket.
pub(crate) struct Conn {
    writer: mpsc::UnboundedSender<Bytes>,
    reader: AbortHandle,
}

impl Conn {
    pub(crate) fn write(&self, bytes: Bytes) {
        let _ = self.writer.send(bytes);
    }
}

/// The reader stops at once; the writer writes what is queued and then the
/// socket closes in both directions.
impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A basic-mode connection: reads become `Data` events, ≤ 1024 bytes each,
/// with the pump's pause after each.
pub(crate) fn open_basic(
    stream: TcpStream,
    id: u64,
    events: mpsc::Sender<TargetEvent>,
    pause: Option<Duration>,
    tasks: &mut JoinSet<()>,
) -> Conn {
    let (mut read, write) = stream.into_split();
    let mut pause = pause.map(RateLimiter::every);
    let reader = tasks.spawn(async move {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let event = match read.read(&mut buf).await {
                Ok(0) => TargetEvent::Closed { id, error: None },
                Ok(n) => TargetEvent::Data {
                    id,
                    bytes: Bytes::copy_from_slice(&buf[..n]),
                },
                Err(e) => TargetEvent::Closed {
                    id,
                    error: Some(e.to_string()),
                },
            };
            let done = !matches!(event, TargetEvent::Data { .. });
            if events.send(event).await.is_err() || done {
                return;
            }
            if let Some(pause) = &mut pause {
                pause.wait().await;
            }
        }
    });
    Conn {
        writer: spawn_writer(write, tasks),
        reader,
    }
}

/// A mux stream's connection: reads become smux PSH frames on the pipe; EOF
/// or an error a FIN, and `MuxEnded` so that the agent closes the connection.
pub(crate) fn open_mux(
    stream: TcpStream,
    sid: u32,
    pipe: mpsc::Sender<Bytes>,
    events: mpsc::Sender<TargetEvent>,
    tasks: &mut JoinSet<()>,
) -> Conn {
    let (mut read, write) = stream.into_split();
    let reader = tasks.spawn(async move {
        let mut buf = vec![0u8; MUX_READ];
        loop {
            match read.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    if pipe
                        .send(smux::encode(smux::CMD_PSH, sid, &buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                _ => {
                    let _ = pipe.send(smux::encode(smux::CMD_FIN, sid, b"")).await;
                    let _ = events.send(TargetEvent::MuxEnded(sid)).await;
                    return;
                }
            }
        }
    });
    Conn {
        writer: spawn_writer(write, tasks),
        reader,
    }
}

fn spawn_writer(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    tasks: &mut JoinSet<()>,
) -> mpsc::UnboundedSender<Bytes> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    tasks.spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    tx
}

/// The smux session's write side, read back as the agent's pump reads it
/// (`port_mux.go`: smux writes to a unix socket, `transferDataToMgs` reads
/// it 1024 bytes at a time): ≤ 1024 bytes per Output, with the pump's pause
/// after each. `frames` carries the streams' data (bounded: backpressure),
/// `control` the agent's own frames.
pub(crate) fn spawn_pipe(
    mut frames: mpsc::Receiver<Bytes>,
    mut control: mpsc::UnboundedReceiver<Bytes>,
    events: mpsc::Sender<TargetEvent>,
    pause: Option<Duration>,
    tasks: &mut JoinSet<()>,
) {
    let mut pause = pause.map(RateLimiter::every);
    tasks.spawn(async move {
        let mut buf = BytesMut::new();
        loop {
            let next = tokio::select! {
                frame = frames.recv() => frame,
                frame = control.recv() => frame,
            };
            let Some(frame) = next else { return };
            buf.extend_from_slice(&frame);
            loop {
                // Each read of the unix socket returns up to 1024 bytes of
                // whatever smux has written by then, across frame boundaries.
                while buf.len() < READ_CHUNK {
                    match control.try_recv().ok().or_else(|| frames.try_recv().ok()) {
                        Some(frame) => buf.extend_from_slice(&frame),
                        None => break,
                    }
                }
                if buf.is_empty() {
                    break;
                }
                let chunk = buf.split_to(buf.len().min(READ_CHUNK)).freeze();
                if events.send(TargetEvent::MuxBytes(chunk)).await.is_err() {
                    return;
                }
                if let Some(pause) = &mut pause {
                    pause.wait().await;
                }
            }
        }
    });
}
