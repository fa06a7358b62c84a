//! The Session Manager data-channel protocol, as spoken by `session-manager-plugin`.
//!
//! `frame` and `payload` are the wire formats. [`connection::Connection`] is the
//! protocol engine, free of I/O (`channel`, `rto`, `pacing`, `handshake`, `smux`
//! are its parts); [`driver`] connects it to websockets, stdio and TCP sockets.
//! See `docs/protocol.md`.

pub mod channel;
pub mod connection;
pub mod crypto;
pub mod driver;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod pacing;
pub mod payload;
pub mod rto;
pub mod smux;

pub use connection::{Connection, EngineConfig, EngineError, Event};
pub use driver::{
    bridge, bridge_open, connect_port, forward_basic, is_presigned, open, shell, shell_open,
    splice, BasicSession, ControlError, MuxPool, MuxSession, MuxStream, OpenSession, Options,
    PortSession, Predial, SessionControl, SessionEnd, SessionError, SessionStats, ShellEnd,
    ShellIo, StreamTarget,
};
pub use handshake::{SessionMode, CLIENT_VERSION};
