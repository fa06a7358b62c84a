//! xtaci/smux protocol version 1, client side, free of I/O (protocol §6.4).
//!
//! Frame: `ver:u8 = 1 | cmd:u8 | length:u16 LE | stream id:u32 LE | data`.
//! Commands SYN (open), FIN (close), PSH (data), NOP (keep-alive: the driver
//! sends one every 10 s to agents that need it, see
//! `handshake::agent_needs_keepalive`). Client stream ids are odd, from 3.
//! Version 1 has no flow control. The agent has no half-close: a FIN either
//! way ends the whole connection to the target.

use std::collections::{HashMap, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const VERSION: u8 = 1;
pub const HEADER: usize = 8;
/// The largest data field we write, smux's default.
pub const MAX_FRAME: usize = 32768;

pub mod cmd {
    pub const SYN: u8 = 0;
    pub const FIN: u8 = 1;
    pub const PSH: u8 = 2;
    pub const NOP: u8 = 3;
}

/// What the peer did to our streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxEvent {
    Data(u32, Bytes),
    /// The peer will send no more on this stream.
    Fin(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    #[error("smux frame with version {0}, expected 1")]
    Version(u8),
    #[error("smux frame with unknown command {0}")]
    Command(u8),
}

#[derive(Default)]
struct StreamState {
    local_fin: bool,
    remote_fin: bool,
}

/// The client end of one smux session.
pub struct Mux {
    next_id: u32,
    streams: HashMap<u32, StreamState>,
    output: BytesMut,
    input: BytesMut,
    events: VecDeque<MuxEvent>,
}

impl Default for Mux {
    fn default() -> Self {
        Mux {
            next_id: 1,
            streams: HashMap::new(),
            output: BytesMut::new(),
            input: BytesMut::new(),
            events: VecDeque::new(),
        }
    }
}

impl Mux {
    pub fn new() -> Mux {
        Mux::default()
    }

    fn put_frame(&mut self, command: u8, id: u32, data: &[u8]) {
        self.output.reserve(HEADER + data.len());
        self.output.put_u8(VERSION);
        self.output.put_u8(command);
        self.output.put_u16_le(data.len() as u16);
        self.output.put_u32_le(id);
        self.output.put_slice(data);
    }

    /// Opens a stream (SYN) and returns its id.
    pub fn open(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(2);
        let id = self.next_id;
        self.streams.insert(id, StreamState::default());
        self.put_frame(cmd::SYN, id, &[]);
        id
    }

    /// Queues data on an open stream, in frames of at most [`MAX_FRAME`] bytes.
    /// Data for a stream already finished locally or unknown is dropped.
    pub fn write(&mut self, id: u32, data: &[u8]) {
        if self.streams.get(&id).is_none_or(|s| s.local_fin) {
            return;
        }
        for chunk in data.chunks(MAX_FRAME) {
            self.put_frame(cmd::PSH, id, chunk);
        }
    }

    /// Half-closes a stream (FIN). Forgets it once both sides have finished.
    pub fn finish(&mut self, id: u32) {
        let Some(state) = self.streams.get_mut(&id) else {
            return;
        };
        if state.local_fin {
            return;
        }
        state.local_fin = true;
        let done = state.remote_fin;
        self.put_frame(cmd::FIN, id, &[]);
        if done {
            self.streams.remove(&id);
        }
    }

    /// Queues a keep-alive NOP (stream id 0, as smux sends it).
    pub fn nop(&mut self) {
        self.put_frame(cmd::NOP, 0, &[]);
    }

    /// Streams still open in either direction.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes waiting to be sent.
    pub fn pending_output(&self) -> usize {
        self.output.len()
    }

    /// The bytes to send, all of them.
    pub fn take_output(&mut self) -> Bytes {
        self.output.split().freeze()
    }

    /// Gives back the unsent tail of what `take_output` returned.
    pub fn unsend(&mut self, rest: &[u8]) {
        let mut merged = BytesMut::with_capacity(rest.len() + self.output.len());
        merged.put_slice(rest);
        merged.put_slice(&self.output);
        self.output = merged;
    }

    /// Feeds bytes received from the agent (any split). A version or command error
    /// poisons the session: smux has no way to resynchronise.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), MuxError> {
        self.input.extend_from_slice(data);
        while self.input.len() >= HEADER {
            let version = self.input[0];
            if version != VERSION {
                return Err(MuxError::Version(version));
            }
            let command = self.input[1];
            let length = u16::from_le_bytes([self.input[2], self.input[3]]) as usize;
            if self.input.len() < HEADER + length {
                break;
            }
            let id = u32::from_le_bytes(self.input[4..8].try_into().expect("4 bytes"));
            self.input.advance(HEADER);
            let body = self.input.split_to(length).freeze();
            match command {
                cmd::PSH => {
                    if self.streams.get(&id).is_some_and(|s| !s.remote_fin) && !body.is_empty() {
                        self.events.push_back(MuxEvent::Data(id, body));
                    }
                }
                cmd::FIN => {
                    if let Some(state) = self.streams.get_mut(&id) {
                        if !state.remote_fin {
                            state.remote_fin = true;
                            if state.local_fin {
                                self.streams.remove(&id);
                            }
                            self.events.push_back(MuxEvent::Fin(id));
                        }
                    }
                }
                // The agent never opens streams towards the client; refuse politely.
                cmd::SYN => self.put_frame(cmd::FIN, id, &[]),
                cmd::NOP => {}
                other => return Err(MuxError::Command(other)),
            }
        }
        Ok(())
    }

    pub fn poll_event(&mut self) -> Option<MuxEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(command: u8, id: u32, data: &[u8]) -> Vec<u8> {
        let mut out = vec![VERSION, command];
        out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn client_ids_are_odd_from_three_and_syn_is_encoded() {
        let mut mux = Mux::new();
        assert_eq!(mux.open(), 3);
        assert_eq!(mux.open(), 5);
        let out = mux.take_output();
        assert_eq!(
            &out[..],
            &[[1, 0, 0, 0, 3, 0, 0, 0], [1, 0, 0, 0, 5, 0, 0, 0]].concat()[..]
        );
    }

    #[test]
    fn writes_are_split_into_32k_psh_frames() {
        let mut mux = Mux::new();
        let id = mux.open();
        mux.take_output();
        let data = vec![7u8; MAX_FRAME + 10];
        mux.write(id, &data);
        let out = mux.take_output();
        assert_eq!(out.len(), 2 * HEADER + data.len());
        assert_eq!(&out[..8], &[1, cmd::PSH, 0x00, 0x80, 3, 0, 0, 0]);
        assert_eq!(
            &out[HEADER + MAX_FRAME..HEADER + MAX_FRAME + 8],
            &[1, cmd::PSH, 10, 0, 3, 0, 0, 0]
        );
    }

    #[test]
    fn input_split_anywhere_yields_the_same_events() {
        let mut wire = frame(cmd::PSH, 3, b"hello");
        wire.extend(frame(cmd::NOP, 0, b""));
        wire.extend(frame(cmd::PSH, 3, b" world"));
        wire.extend(frame(cmd::FIN, 3, b""));
        for split in 0..wire.len() {
            let mut mux = Mux::new();
            mux.open();
            mux.handle_input(&wire[..split]).unwrap();
            mux.handle_input(&wire[split..]).unwrap();
            let mut data = Vec::new();
            let mut fin = false;
            while let Some(event) = mux.poll_event() {
                match event {
                    MuxEvent::Data(3, bytes) => data.extend_from_slice(&bytes),
                    MuxEvent::Fin(3) => fin = true,
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(data, b"hello world");
            assert!(fin);
        }
    }

    #[test]
    fn stream_is_forgotten_after_both_fins() {
        let mut mux = Mux::new();
        let id = mux.open();
        mux.finish(id);
        assert_eq!(mux.open_streams(), 1);
        mux.handle_input(&frame(cmd::FIN, id, b"")).unwrap();
        assert_eq!(mux.open_streams(), 0);
        // Writing after FIN is dropped.
        mux.take_output();
        mux.write(id, b"late");
        assert_eq!(mux.pending_output(), 0);
    }

    #[test]
    fn server_initiated_streams_are_refused_and_bad_frames_are_errors() {
        let mut mux = Mux::new();
        mux.handle_input(&frame(cmd::SYN, 2, b"")).unwrap();
        assert_eq!(&mux.take_output()[..], &frame(cmd::FIN, 2, b"")[..]);
        assert_eq!(
            mux.handle_input(&[2, 0, 0, 0, 0, 0, 0, 0]),
            Err(MuxError::Version(2))
        );
        let mut other = Mux::new();
        assert_eq!(
            other.handle_input(&frame(9, 1, b"")),
            Err(MuxError::Command(9))
        );
    }

    #[test]
    fn nop_is_an_empty_frame_on_stream_zero() {
        let mut mux = Mux::new();
        mux.nop();
        assert_eq!(&mux.take_output()[..], &frame(cmd::NOP, 0, b"")[..]);
    }

    #[test]
    fn unsend_puts_bytes_back_in_front() {
        let mut mux = Mux::new();
        let id = mux.open();
        let first = mux.take_output();
        mux.write(id, b"x");
        mux.unsend(&first[4..]);
        let out = mux.take_output();
        assert_eq!(&out[..4], &first[4..]);
        assert_eq!(&out[4..], &frame(cmd::PSH, id, b"x")[..]);
    }
}
