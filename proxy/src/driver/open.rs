//! A session whose handshake is done but whose bytes are not yet put to use:
//! for callers that choose how to use it from the session type the agent
//! names (the plugin mode runs whatever document the AWS CLI started).

use std::sync::Arc;

use super::basic::BasicSession;
use super::link::Link;
use super::predial::Predial;
use super::{MuxSession, Options, PortSession, SessionControl, SessionError, StreamTarget};
use crate::connection::Event;
use crate::handshake::SessionMode;

/// An established session: pass it to [`bridge_open`](super::bridge::bridge_open),
/// [`into_port`](Self::into_port) or [`shell_open`](super::shell::shell_open)
/// as its [`mode`](Self::mode) says.
pub struct OpenSession<C> {
    pub(crate) link: Link<C>,
    pub(crate) mode: SessionMode,
    /// Events that arrived with the handshake (e.g. a shell's first Output).
    pub(crate) pending: Vec<Event>,
}

/// Opens the data channel and completes the handshake (or, for a shell
/// session without one, takes the agent's first Output). A `predial` to the
/// StreamUrl's origin, started before StartSession answered, saves the
/// connection's TCP and TLS round trips.
pub async fn open<C: SessionControl>(
    target: StreamTarget,
    control: Arc<C>,
    options: Options,
    predial: Option<Predial>,
) -> Result<OpenSession<C>, SessionError> {
    let mut pending = Vec::new();
    let (link, mode) = Link::connect(target, control, options, predial, &mut pending).await?;
    Ok(OpenSession {
        link,
        mode,
        pending,
    })
}

impl<C: SessionControl> OpenSession<C> {
    /// What the agent's handshake (or first message) made of the session.
    pub fn mode(&self) -> SessionMode {
        self.mode
    }

    pub fn session_id(&self) -> &str {
        self.link.session_id()
    }

    /// HandshakeComplete's CustomerMessage, e.g. "This session is encrypted
    /// using AWS KMS." (empty when the agent sent none).
    pub fn customer_message(&self) -> &str {
        &self.link.customer_message
    }

    /// Whether every payload is KMS-encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.link.conn.is_encrypted()
    }

    /// Gives up on a session this caller cannot use: TerminateSession flag,
    /// then the TerminateSession API.
    pub async fn abandon(mut self) {
        self.link.terminate().await;
    }

    /// A port-forwarding session in the mode the agent chose (smux or basic).
    pub fn into_port(self) -> Result<PortSession<C>, SessionError> {
        match self.mode {
            SessionMode::MuxPort => {
                Ok(PortSession::Mux(MuxSession::start(self.link, self.pending)))
            }
            SessionMode::BasicPort => Ok(PortSession::Basic(Box::new(BasicSession::new(
                self.link,
                self.pending,
            )))),
            other => Err(SessionError::Unsupported(format!(
                "the agent chose {other:?} mode, not port forwarding"
            ))),
        }
    }
}
