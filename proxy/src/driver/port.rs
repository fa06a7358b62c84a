//! Opening a port-forwarding session whose mode only the agent's handshake
//! decides: smux (agents after 3.0.196.0) or basic (older agents).

use std::sync::Arc;

use super::basic::BasicSession;
use super::link::Link;
use super::{MuxSession, Options, SessionControl, SessionError, StreamTarget};
use crate::handshake::SessionMode;

/// A port-forwarding session in the mode the agent chose.
pub enum PortSession<C> {
    /// Many connections at once over smux.
    Mux(MuxSession),
    /// One connection at a time (agent 3.0.196.0 or older).
    Basic(Box<BasicSession<C>>),
}

impl<C: SessionControl> PortSession<C> {
    pub fn session_id(&self) -> &str {
        match self {
            PortSession::Mux(session) => session.session_id(),
            PortSession::Basic(session) => session.session_id(),
        }
    }
}

/// Opens the data channel of a port-forwarding session (AWS-StartPortForwardingSession
/// or …ToRemoteHost) and completes the handshake. A session whose agent chose a
/// plain stream (not a port-forwarding document) is terminated and refused.
pub async fn connect_port<C: SessionControl>(
    target: StreamTarget,
    control: Arc<C>,
    options: Options,
) -> Result<PortSession<C>, SessionError> {
    let mut pending = Vec::new();
    let (mut link, mode) = Link::connect(target, control, options, None, &mut pending).await?;
    match mode {
        SessionMode::MuxPort => Ok(PortSession::Mux(MuxSession::start(link, pending))),
        SessionMode::BasicPort => Ok(PortSession::Basic(Box::new(BasicSession::new(
            link, pending,
        )))),
        SessionMode::Stream | SessionMode::Shell => {
            link.terminate().await;
            Err(SessionError::Unsupported(
                "the agent opened a plain stream, not port forwarding (an SSH document?); the session was terminated: use bridge".to_owned(),
            ))
        }
    }
}
