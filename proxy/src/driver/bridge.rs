//! One raw byte stream over one session: SSH ProxyCommand (stdin/stdout) or a
//! single forwarded connection.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::link::{fatal, Link, Turn};
use super::{Options, SessionControl, SessionEnd, SessionError, StreamTarget};
use crate::connection::Event;
use crate::handshake::SessionMode;
use crate::payload::flag;

/// Output chunks held for the application before reading the websocket pauses.
const OUTPUT_QUEUE: usize = 256;
const READ_CHUNK: usize = 16 * 1024;

/// Carries `reader` → agent and agent → `writer` over one session
/// (AWS-StartSSHSession, or basic port forwarding) until one side ends.
///
/// * EOF on `reader`: sends Flag TerminateSession, waits (≤ `drain_timeout`) for
///   outstanding data to be acknowledged, calls `control.terminate`, flushes
///   `writer` and returns `Ok`.
/// * `channel_closed` from the service: flushes `writer` and returns
///   `Ok(SessionEnd { output })`; print `output` on stderr.
/// * The websocket dies: reconnects through `control.resume` without losing or
///   duplicating a byte; gives up after `max_reconnects` attempts per outage.
pub async fn bridge<C: SessionControl>(
    target: StreamTarget,
    control: Arc<C>,
    options: Options,
    reader: impl AsyncRead + Unpin + Send,
    writer: impl AsyncWrite + Unpin + Send,
) -> Result<SessionEnd, SessionError> {
    let mut pending = Vec::new();
    let (link, mode) = Link::connect(target, control, options, &mut pending).await?;
    if mode == SessionMode::MuxPort {
        return Err(SessionError::Unsupported(
            "this port-forwarding session multiplexes connections (smux); use MuxSession"
                .to_owned(),
        ));
    }
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(4);
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
    let reading = async {
        read_loop(reader, in_tx).await;
        std::future::pending::<()>().await
    };
    let driving = drive(link, in_rx, out_tx, pending);
    let writing = write_loop(writer, out_rx);
    tokio::select! {
        (ended, written) = async { tokio::join!(driving, writing) } => {
            let end = ended?;
            written.map_err(|e| SessionError::Io(format!("writing the output failed: {e}")))?;
            Ok(end)
        }
        _ = reading => unreachable!("the reader parks after EOF"),
    }
}

async fn read_loop(mut reader: impl AsyncRead + Unpin, tx: mpsc::Sender<Bytes>) {
    loop {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) => return,
            Ok(_) => {
                if tx.send(buf.freeze()).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "input read failed; ending the session");
                return;
            }
        }
    }
}

async fn write_loop(
    mut writer: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<()> {
    while let Some(bytes) = rx.recv().await {
        writer.write_all(&bytes).await?;
        if rx.is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await
}

enum Wake {
    Input(Option<Bytes>),
    OutputReady,
}

async fn drive<C: SessionControl>(
    mut link: Link<C>,
    mut in_rx: mpsc::Receiver<Bytes>,
    out_tx: mpsc::Sender<Bytes>,
    mut events: Vec<Event>,
) -> Result<SessionEnd, SessionError> {
    let mut input: Option<Bytes> = None;
    let mut output: VecDeque<Bytes> = VecDeque::new();
    loop {
        events.extend(std::iter::from_fn(|| link.conn.poll_event()));
        for event in events.drain(..) {
            match event {
                Event::Data(bytes) => output.push_back(bytes),
                Event::Closed { output: text } => {
                    send_all(&out_tx, output).await;
                    return Ok(SessionEnd {
                        output: text,
                        stats: link.stats(),
                    });
                }
                Event::ConnectToPortError => {
                    tracing::warn!("the agent could not connect to the destination port")
                }
                Event::HandshakeComplete { .. } => {}
                other => {
                    return Err(fatal(&other).unwrap_or_else(|| {
                        SessionError::Protocol(format!("unexpected event {other:?}"))
                    }))
                }
            }
        }
        while let Some(bytes) = output.pop_front() {
            match out_tx.try_send(bytes) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(bytes)) => {
                    output.push_front(bytes);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::debug!("output closed; ending the session");
                    return terminate(link, out_tx, output).await;
                }
            }
        }
        if let Some(bytes) = input.take() {
            let accepted = link.conn.send_data(&bytes);
            if accepted < bytes.len() {
                input = Some(bytes.slice(accepted..));
            }
        }
        let want_input = input.is_none() && link.conn.can_send();
        let want_output = !output.is_empty();
        let app = async {
            tokio::select! {
                received = in_rx.recv(), if want_input => Wake::Input(received),
                _ = out_tx.reserve(), if want_output => Wake::OutputReady,
                else => std::future::pending().await,
            }
        };
        match link.turn(output.len() < OUTPUT_QUEUE, app).await? {
            Turn::App(Wake::Input(Some(bytes))) => input = Some(bytes),
            Turn::App(Wake::Input(None)) => return terminate(link, out_tx, output).await,
            Turn::App(Wake::OutputReady) | Turn::Engine => {}
        }
    }
}

/// Local end: TerminateSession flag, wait for acks, TerminateSession API.
async fn terminate<C: SessionControl>(
    mut link: Link<C>,
    out_tx: mpsc::Sender<Bytes>,
    mut output: VecDeque<Bytes>,
) -> Result<SessionEnd, SessionError> {
    link.conn.send_flag(flag::TERMINATE_SESSION);
    let mut events = Vec::new();
    let drained = link.drain(&mut events).await;
    let mut text = String::new();
    for event in events {
        match event {
            Event::Data(bytes) => output.push_back(bytes),
            Event::Closed { output } => text = output,
            _ => {}
        }
    }
    if let Err(error) = link.control().terminate(link.session_id()).await {
        tracing::debug!(%error, "TerminateSession failed");
    }
    send_all(&out_tx, output).await;
    if let Err(error) = drained {
        tracing::debug!(%error, "the session ended while draining");
    }
    Ok(SessionEnd {
        output: text,
        stats: link.stats(),
    })
}

async fn send_all(out_tx: &mpsc::Sender<Bytes>, output: VecDeque<Bytes>) {
    for bytes in output {
        if out_tx.send(bytes).await.is_err() {
            return;
        }
    }
}
