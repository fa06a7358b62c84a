//! Port-forwarding sessions for `forward` and the plugin mode: several
//! started and connected concurrently (the agent's 15 s handshake clock runs
//! from StartSession), in the mode the agent's handshake chose, and the
//! sessions that cannot be used terminated.

use std::future::Future;
use std::sync::Arc;

use sm_ssh_proxy::{
    connect_port, splice, BasicSession, MuxSession, MuxStream, Options, PortSession,
    SessionControl, SessionError, StreamTarget,
};
use tokio::net::TcpStream;

use crate::error::AwsError;
use crate::session::Sessions;

/// Connected sessions, in the agent's mode.
pub enum Opened {
    /// smux: every session serves many connections.
    Mux(Vec<MuxSession>),
    /// The agent has no smux (3.0.196.0 or older): one session, one
    /// connection at a time; the other sessions were terminated.
    Basic(Box<BasicSession<Sessions>>),
}

/// Why opening failed; every session started was terminated.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Start(AwsError),
    #[error(transparent)]
    Connect(SessionError),
}

/// Starts `n` sessions with `start` and connects each as soon as it is
/// started, all at once: starting them all first and connecting afterwards
/// would let the first ones' handshakes time out on a slow API.
pub async fn open<F, Fut>(
    sessions: &Arc<Sessions>,
    options: &Options,
    n: u16,
    start: F,
) -> Result<Opened, OpenError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<StreamTarget, AwsError>>,
{
    let opening = (0..n).map(|_| async {
        let target = start().await.map_err(OpenError::Start)?;
        let id = target.session_id.clone();
        match connect_port(target, sessions.clone(), options.clone()).await {
            Ok(session) => Ok(session),
            Err(error) => {
                // The token is spent: end the session rather than leave it open.
                let _ = sessions.terminate(&id).await;
                Err(OpenError::Connect(error))
            }
        }
    });
    let mut results = futures_util::future::join_all(opening).await;
    if let Some(at) = results.iter().position(Result::is_err) {
        let error = results.swap_remove(at).err().expect("an error");
        close_all(results.into_iter().filter_map(Result::ok)).await;
        return Err(error);
    }
    let mut ported: Vec<PortSession<Sessions>> =
        results.into_iter().map(|r| r.expect("ok")).collect();
    if let Some(at) = ported
        .iter()
        .position(|s| matches!(s, PortSession::Basic(_)))
    {
        let PortSession::Basic(basic) = ported.swap_remove(at) else {
            unreachable!("found above")
        };
        close_all(ported).await;
        return Ok(Opened::Basic(basic));
    }
    Ok(Opened::Mux(
        ported
            .into_iter()
            .map(|s| match s {
                PortSession::Mux(session) => session,
                PortSession::Basic(_) => unreachable!("no basic session left"),
            })
            .collect(),
    ))
}

/// Ends sessions that will not be used: TerminateSession flag and API.
pub async fn close_all(sessions: impl IntoIterator<Item = PortSession<Sessions>>) {
    let closing = sessions.into_iter().map(|session| async move {
        let id = session.session_id().to_owned();
        let ended = match session {
            PortSession::Mux(session) => session.close().await,
            PortSession::Basic(session) => session.close().await,
        };
        if let Err(error) = ended {
            tracing::debug!(session = id, %error, "closing an unused session");
        }
    });
    futures_util::future::join_all(closing).await;
}

/// Carries one accepted connection over an smux stream (see
/// docs/user-guide.md for what a half-close does).
pub async fn carry(socket: TcpStream, stream: MuxStream, options: &Options) -> std::io::Result<()> {
    splice(socket, stream, options.half_close_grace).await
}
