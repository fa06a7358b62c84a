//! The Session Manager data-channel protocol, as spoken by `session-manager-plugin`.
//!
//! `frame` and `payload` are the wire formats. [`connection::Connection`] is the
//! protocol engine, free of I/O (`channel`, `rto`, `pacing`, `handshake`, `smux`
//! are its parts); [`driver`] connects it to websockets, stdio and TCP sockets.
//! See `docs/protocol.md`.

pub mod channel;
pub mod connection;
pub mod driver;
pub mod frame;
pub mod handshake;
pub mod pacing;
pub mod payload;
pub mod rto;
pub mod smux;

pub use connection::{Connection, EngineConfig, EngineError, Event};
pub use driver::{
    bridge, connect_port, forward_basic, splice, BasicSession, ControlError, MuxPool, MuxSession,
    MuxStream, Options, PortSession, SessionControl, SessionEnd, SessionError, SessionStats,
    StreamTarget,
};
pub use handshake::{SessionMode, CLIENT_VERSION};
