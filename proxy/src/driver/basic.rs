//! Basic port forwarding (protocol §6.3), for agents that do not speak smux:
//! one local TCP connection at a time over one session, Flag DisconnectToPort
//! between connections (the agent redials the target on the next input).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::open::{open, OpenSession};
use super::pump::{read_loop, write_loop, Local, Pump, Stop, OUTPUT_QUEUE};
use super::{Options, SessionControl, SessionEnd, SessionError, StreamTarget};
use crate::handshake::SessionMode;

/// Pause after a failed accept (e.g. out of file descriptors) before retrying.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves the connections of `listener` one after the other over one basic
/// port-forwarding session (the agent chose basic mode: agent ≤ 3.0.196.0, or
/// `options.client_version` below 1.1.70).
///
/// * A local connection ends (EOF or error): sends Flag DisconnectToPort and
///   accepts the next one; further clients wait in the listen backlog meanwhile.
/// * Agent data arriving while no connection is open is held (the websocket
///   pauses after `OUTPUT_QUEUE` chunks) and delivered to the next connection.
/// * `shutdown` completes (Ctrl-C): Flag TerminateSession, drain, then
///   `control.terminate`; returns `Ok`.
/// * `channel_closed` from the service: returns `Ok(SessionEnd { output })`.
///
/// Fails with `Unsupported` if the agent chose smux (use [`MuxSession`](super::MuxSession))
/// or a plain stream (use [`bridge`](super::bridge)).
pub async fn forward_basic<C: SessionControl>(
    target: StreamTarget,
    control: Arc<C>,
    options: Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<SessionEnd, SessionError> {
    forward_basic_open(open(target, control, options).await?, listener, shutdown).await
}

/// [`forward_basic`] on a session [`open`] established.
pub async fn forward_basic_open<C: SessionControl>(
    session: OpenSession<C>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<SessionEnd, SessionError> {
    let OpenSession {
        link,
        mode,
        pending,
    } = session;
    if mode != SessionMode::BasicPort {
        return Err(SessionError::Unsupported(format!(
            "the agent chose {mode:?} mode, not basic port forwarding; use MuxSession for smux sessions and bridge for SSH sessions"
        )));
    }
    let mut pump = Pump::new(link, pending);
    tokio::pin!(shutdown);
    loop {
        let idle = async {
            tokio::select! {
                accepted = listener.accept() => Some(accepted),
                () = &mut shutdown => None,
            }
        };
        let stream = match pump.run(None, idle).await? {
            Stop::Closed(text) => return Ok(pump.end(text)),
            Stop::App(None) => return pump.terminate(None).await,
            Stop::App(Some(Ok((stream, peer)))) => {
                tracing::debug!(%peer, "local connection accepted");
                stream
            }
            Stop::App(Some(Err(error))) => {
                tracing::warn!(%error, "accepting a local connection failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
            Stop::InputEnded | Stop::OutputGone => unreachable!("no local connection attached"),
        };
        let (read_half, write_half) = stream.into_split();
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(4);
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
        let reader = tokio::spawn(read_loop(read_half, in_tx));
        // Detached: it writes what is queued, then closes the connection.
        tokio::spawn(async move {
            if let Err(error) = write_loop(write_half, out_rx).await {
                tracing::debug!(%error, "writing to the local connection failed");
            }
        });
        let local = Local {
            input: &mut in_rx,
            output: &out_tx,
        };
        let stop = pump.run(Some(local), &mut shutdown).await;
        reader.abort();
        match stop? {
            Stop::Closed(text) => return Ok(pump.end(text)),
            Stop::App(()) => return pump.terminate(Some(&out_tx)).await,
            Stop::InputEnded | Stop::OutputGone => {
                // What already arrived belongs to this connection, as far as it takes it.
                pump.offer(&out_tx);
                pump.disconnect();
                tracing::debug!("local connection closed; sent DisconnectToPort");
            }
        }
    }
}
