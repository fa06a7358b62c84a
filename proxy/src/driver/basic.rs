//! Basic port forwarding (protocol §6.3), for agents that do not speak smux:
//! one local TCP connection at a time over one session, Flag DisconnectToPort
//! between connections (the agent redials the target on the next input).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::link::Link;
use super::port::{connect_port, PortSession};
use super::pump::{read_loop, write_loop, Local, Pump, Stop, OUTPUT_QUEUE};
use super::{Options, SessionControl, SessionEnd, SessionError, StreamTarget};
use crate::connection::Event;

/// Pause after a failed accept (e.g. out of file descriptors) before retrying.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves the connections of `listener` one after the other over one basic
/// port-forwarding session (see [`BasicSession::serve`]). Fails with
/// `Unsupported` if the agent chose smux (use [`MuxSession`](super::MuxSession);
/// the session is terminated) or a plain stream (use [`bridge`](super::bridge)).
pub async fn forward_basic<C: SessionControl>(
    target: StreamTarget,
    control: Arc<C>,
    options: Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<SessionEnd, SessionError> {
    match connect_port(target, control, options).await? {
        PortSession::Basic(session) => session.serve(&listener, None, shutdown).await,
        PortSession::Mux(session) => {
            let _ = session.close().await;
            Err(SessionError::Unsupported(
                "the agent chose smux, not basic port forwarding; the session was terminated: use MuxSession (or connect_port)".to_owned(),
            ))
        }
    }
}

/// A basic port-forwarding session whose handshake is complete (agent
/// 3.0.196.0 or older, or a ClientVersion below 1.1.70).
pub struct BasicSession<C> {
    pump: Pump<C>,
}

enum Linger {
    Quiet,
    Closed(String),
    Shutdown,
}

impl<C: SessionControl> BasicSession<C> {
    pub(crate) fn new(link: Link<C>, events: Vec<Event>) -> BasicSession<C> {
        BasicSession {
            pump: Pump::new(link, events),
        }
    }

    pub fn session_id(&self) -> &str {
        self.pump.link.session_id()
    }

    /// Ends the session unused: Flag TerminateSession, drain, the API.
    pub async fn close(self) -> Result<SessionEnd, SessionError> {
        self.pump.terminate(None).await
    }

    /// Serves `first` (if given) and then the connections of `listener`, one
    /// at a time:
    ///
    /// * a local connection fails or its writer is gone: Flag DisconnectToPort
    ///   and the next one is accepted; further clients wait in the listen
    ///   backlog meanwhile;
    /// * a local connection ends its input (EOF, possibly a half-close): the
    ///   agent cannot pass a half-close on (DisconnectToPort closes the target
    ///   connection), so the answer is still delivered until the agent has been
    ///   quiet for `half_close_grace`; then DisconnectToPort;
    /// * agent data arriving while no connection is open is held (the websocket
    ///   pauses after `OUTPUT_QUEUE` chunks) and delivered to the next connection;
    /// * `shutdown` completes (Ctrl-C): Flag TerminateSession, drain, then
    ///   `control.terminate`; returns `Ok`;
    /// * `channel_closed` from the service: returns `Ok(SessionEnd { output })`.
    pub async fn serve(
        self,
        listener: &TcpListener,
        mut first: Option<TcpStream>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<SessionEnd, SessionError> {
        let mut pump = self.pump;
        let grace = pump.link.options().half_close_grace;
        tokio::pin!(shutdown);
        loop {
            let stream = match first.take() {
                Some(stream) => stream,
                None => {
                    let idle = async {
                        tokio::select! {
                            accepted = listener.accept() => Some(accepted),
                            () = &mut shutdown => None,
                        }
                    };
                    match pump.run(None, idle).await? {
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
                        Stop::InputEnded | Stop::OutputGone => {
                            unreachable!("no local connection attached")
                        }
                    }
                }
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
                input: Some(&mut in_rx),
                output: &out_tx,
            };
            let stop = pump.run(Some(local), &mut shutdown).await;
            reader.abort();
            match stop? {
                Stop::Closed(text) => return Ok(pump.end(text)),
                Stop::App(()) => return pump.terminate(Some(&out_tx)).await,
                Stop::InputEnded => match linger(&mut pump, &out_tx, grace, &mut shutdown).await? {
                    Linger::Closed(text) => return Ok(pump.end(text)),
                    Linger::Shutdown => return pump.terminate(Some(&out_tx)).await,
                    Linger::Quiet => {}
                },
                Stop::OutputGone => {}
            }
            // What already arrived belongs to this connection, as far as it takes it.
            pump.offer(&out_tx);
            pump.disconnect();
            tracing::debug!("local connection closed; sent DisconnectToPort");
        }
    }
}

/// After a local EOF: keeps delivering the agent's output to the connection
/// until nothing has arrived for `grace`, its writer is gone, or the session ends.
async fn linger<C: SessionControl>(
    pump: &mut Pump<C>,
    out: &mpsc::Sender<Bytes>,
    grace: Duration,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Linger, SessionError> {
    enum Wake {
        Grace,
        Shutdown,
    }
    loop {
        let before = pump.delivered();
        let local = Local {
            input: None,
            output: out,
        };
        let wake = async {
            tokio::select! {
                () = tokio::time::sleep(grace) => Wake::Grace,
                () = &mut *shutdown => Wake::Shutdown,
            }
        };
        match pump.run(Some(local), wake).await? {
            Stop::Closed(text) => return Ok(Linger::Closed(text)),
            Stop::App(Wake::Shutdown) => return Ok(Linger::Shutdown),
            Stop::App(Wake::Grace) if pump.delivered() == before => return Ok(Linger::Quiet),
            Stop::App(Wake::Grace) => {}
            Stop::OutputGone | Stop::InputEnded => return Ok(Linger::Quiet),
        }
    }
}
