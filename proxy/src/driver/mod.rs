//! The tokio driver: websockets, timers, reconnects, and the byte streams of
//! the application, around the I/O-free [`Connection`](crate::connection::Connection).
//!
//! * [`bridge`] carries one raw byte stream (SSH ProxyCommand);
//! * [`forward_basic`] serves local TCP connections one at a time (basic port
//!   forwarding, agents without smux);
//! * [`MuxSession`] carries many TCP connections over smux (port forwarding);
//! * [`MuxPool`] spreads connections over several sessions for throughput;
//! * [`shell`] runs a shell or command session (keystrokes, Size, StdErr, ExitCode);
//! * [`open`] completes the handshake first, for callers that choose one of
//!   the above from the session type the agent names (the plugin mode).
//!
//! AWS calls (ResumeSession, TerminateSession) are made by the binary through
//! [`SessionControl`]; this crate never depends on the AWS SDK.

mod basic;
mod bridge;
mod link;
mod mux;
mod open;
mod port;
mod predial;
mod pump;
mod shell;
mod socket;
mod splice;
mod tunnel;

use std::future::Future;
use std::time::Duration;

pub use basic::{forward_basic, BasicSession};
pub use bridge::{bridge, bridge_open};
pub use mux::{MuxPool, MuxSession, MuxStream};
pub use open::{open, OpenSession};
pub use port::{connect_port, PortSession};
pub use predial::Predial;
pub use shell::{shell, shell_open, ShellEnd, ShellIo};
pub use splice::splice;

use crate::channel::Stats;
use crate::crypto::{DataKey, KeyError};
use crate::handshake::CLIENT_VERSION;

/// The plugin's smux keep-alive period (smux's `DefaultConfig`).
pub const SMUX_KEEPALIVE: Duration = Duration::from_secs(10);

/// Default of [`Options::half_close_grace`].
pub const HALF_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Where and how to open a session's data channel: the StartSession or
/// ResumeSession answer. `Debug` hides the token.
#[derive(Clone)]
pub struct StreamTarget {
    pub session_id: String,
    pub stream_url: String,
    pub token: String,
}

impl std::fmt::Debug for StreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTarget")
            .field("session_id", &self.session_id)
            .field("stream_url", &self.stream_url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A failed control-plane call. `retryable: false` ends reconnecting at once
/// (e.g. the session is terminated or timed out); its message must not hold secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    pub message: String,
    pub retryable: bool,
}

impl ControlError {
    pub fn retryable(message: impl Into<String>) -> ControlError {
        ControlError {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn fatal(message: impl Into<String>) -> ControlError {
        ControlError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Supplied by the binary: AWS calls the library needs but must not make itself.
pub trait SessionControl: Send + Sync + 'static {
    /// ResumeSession: a fresh token (and possibly a new StreamUrl) for a reconnect.
    fn resume(
        &self,
        session_id: &str,
    ) -> impl Future<Output = Result<StreamTarget, ControlError>> + Send;
    /// The TerminateSession API.
    fn terminate(&self, session_id: &str) -> impl Future<Output = Result<(), ControlError>> + Send;
    /// Headers to add to the websocket upgrade `GET stream_url`: the SigV4
    /// signature (`Authorization`, `X-Amz-Date`, `X-Amz-Security-Token`) made
    /// with freshly resolved credentials. Called before every dial and redial,
    /// but not for a presigned URL ([`is_presigned`]), which is sent as it is.
    /// A non-retryable error (no credentials to be had) ends the session.
    fn upgrade_headers(
        &self,
        stream_url: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, ControlError>> + Send;
    /// `kms:GenerateDataKey` for an encrypted session: `key_id` from the
    /// agent's request, [`DATA_KEY_BYTES`](crate::crypto::DATA_KEY_BYTES) bytes,
    /// the context of [`encryption_context`](crate::crypto::encryption_context)
    /// with the session's target. Without KMS the agent is told Unsupported.
    fn data_key(
        &self,
        session_id: &str,
        key_id: &str,
    ) -> impl Future<Output = Result<DataKey, KeyError>> + Send {
        let _ = (session_id, key_id);
        async {
            Err(KeyError::Unsupported(
                "KMS encryption is not available to this client".to_owned(),
            ))
        }
    }
}

/// The query parameters that make a StreamUrl presigned: such a URL is sent
/// as it is, unsigned (the plugin's `isPresignedURL`).
pub const PRESIGN_PARAMETERS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// Whether `url` carries its own signature in its query.
pub fn is_presigned(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or(pair);
        PRESIGN_PARAMETERS.contains(&name)
    })
}

/// Tunables of a session. `Default` is what `sm-ssh` uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// ClientVersion reported to the agent (see docs/protocol.md before changing it).
    pub client_version: String,
    /// Stream messages per second (1 KiB each at most); `None` = unlimited.
    pub pacing: Option<u32>,
    /// Most unacknowledged outgoing messages before reading from the application pauses.
    pub window: usize,
    /// Websocket ping period.
    pub ping_interval: Duration,
    /// A ping without a pong for this long means the websocket is dead: reconnect.
    pub pong_timeout: Duration,
    /// Reconnect attempts per outage before giving up.
    pub max_reconnects: u32,
    /// First reconnect delay (plus jitter); doubles per attempt up to `reconnect_max_delay`.
    pub reconnect_initial_delay: Duration,
    pub reconnect_max_delay: Duration,
    /// Websocket dial (TCP, TLS, upgrade) limit per attempt.
    pub connect_timeout: Duration,
    /// How long to wait for HandshakeComplete after opening the data channel.
    pub handshake_timeout: Duration,
    /// On local EOF, how long to wait for outstanding data to be acknowledged.
    pub drain_timeout: Duration,
    /// smux NOP period on mux sessions with agents that need keep-alive
    /// (3.1.1511.0 and older); `None` never sends them.
    pub smux_keepalive: Option<Duration>,
    /// After a local client half-closes a forwarded connection, how long the
    /// target may stay quiet before the connection is closed (the agent has no
    /// half-close; see docs/user-guide.md).
    pub half_close_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            client_version: CLIENT_VERSION.to_owned(),
            pacing: Some(1000),
            window: 2048,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(20),
            max_reconnects: 12,
            reconnect_initial_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            smux_keepalive: Some(SMUX_KEEPALIVE),
            half_close_grace: HALF_CLOSE_GRACE,
        }
    }
}

/// Counters of a session, for logs and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub protocol: Stats,
    /// Websocket reconnects that succeeded.
    pub reconnects: u64,
}

/// How a session ended normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEnd {
    /// `channel_closed` Output (empty when we ended it ourselves); print on stderr.
    pub output: String,
    pub stats: SessionStats,
}

/// Why a session failed. Messages are one line and never hold the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("could not open the data channel websocket to {host}: {reason}")]
    Dial { host: String, reason: String },
    #[error(
        "the service refused the session token (expired or already used); start a new session"
    )]
    TokenRefused,
    #[error("the data channel websocket died and {attempts} reconnect attempts failed (last error: {last})")]
    Disconnected { attempts: u32, last: String },
    #[error("could not sign the data channel websocket: {0}")]
    Sign(String),
    #[error("could not resume the session: {0}")]
    Resume(String),
    #[error("no handshake from the agent within {0:?}; is the SSM agent on the target running and up to date?")]
    HandshakeTimeout(Duration),
    #[error("the agent asked for something sm-ssh does not support: {0}")]
    Unsupported(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// GenerateDataKey failed; the binary's message (action, key, fix).
    #[error("{0}")]
    Kms(String),
    #[error("{0}")]
    Decrypt(String),
    #[error("the session was closed by the service: {0}")]
    Closed(String),
    #[error("local stream error: {0}")]
    Io(String),
}
