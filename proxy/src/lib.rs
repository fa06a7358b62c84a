//! The Session Manager data-channel protocol, as spoken by `session-manager-plugin`.
//!
//! `frame` and `payload` are the wire formats. The protocol engine is free of I/O;
//! a thin tokio driver connects it to the websocket, stdio and TCP sockets.

pub mod frame;
pub mod payload;
