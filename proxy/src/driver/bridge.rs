//! One raw byte stream over one session: SSH ProxyCommand (stdin/stdout) or a
//! single forwarded connection.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::open::{open, OpenSession};
use super::pump::{read_loop, write_loop, Local, Pump, Stop, OUTPUT_QUEUE};
use super::{Options, SessionControl, SessionEnd, SessionError, StreamTarget};
use crate::handshake::SessionMode;

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
    bridge_open(open(target, control, options, None).await?, reader, writer).await
}

/// [`bridge`] on a session [`open`] established.
pub async fn bridge_open<C: SessionControl>(
    session: OpenSession<C>,
    reader: impl AsyncRead + Unpin + Send,
    writer: impl AsyncWrite + Unpin + Send,
) -> Result<SessionEnd, SessionError> {
    let OpenSession {
        link,
        mode,
        pending,
    } = session;
    match mode {
        SessionMode::MuxPort => {
            return Err(SessionError::Unsupported(
                "this port-forwarding session multiplexes connections (smux); use MuxSession"
                    .to_owned(),
            ))
        }
        SessionMode::Shell => {
            return Err(SessionError::Unsupported(
                "this is a shell session; use shell".to_owned(),
            ))
        }
        SessionMode::Stream | SessionMode::BasicPort => {}
    }
    let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(4);
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
    let reading = async {
        read_loop(reader, in_tx).await;
        std::future::pending::<()>().await
    };
    // Owns `out_tx`, so the writer ends when the session does.
    let driving = async move {
        let mut pump = Pump::new(link, pending);
        let local = Local {
            input: Some(&mut in_rx),
            output: &out_tx,
        };
        match pump
            .run(Some(local), std::future::pending::<Infallible>())
            .await?
        {
            Stop::Closed(text) => Ok(pump.end(text)),
            Stop::InputEnded | Stop::OutputGone => pump.terminate(Some(&out_tx)).await,
            Stop::App(never) => match never {},
        }
    };
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
