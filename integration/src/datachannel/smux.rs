//! The server side of xtaci/smux protocol version 1, as much as the agent's
//! mux port forwarding needs: parse the client's frames, write our own.
//!
//! Frame: `ver:u8 (1) | cmd:u8 | length:u16 LE | stream_id:u32 LE | data`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub(crate) const VERSION: u8 = 1;
pub(crate) const CMD_SYN: u8 = 0;
pub(crate) const CMD_FIN: u8 = 1;
pub(crate) const CMD_PSH: u8 = 2;
pub(crate) const CMD_NOP: u8 = 3;
const HEADER: usize = 8;
/// The largest data a frame may carry (smux's default max frame size).
pub(crate) const MAX_FRAME_DATA: usize = 32768;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SmuxFrame {
    Syn(u32),
    Fin(u32),
    Psh(u32, Bytes),
    Nop,
}

/// Reassembles smux frames from Output payloads, whose boundaries mean nothing.
#[derive(Default)]
pub(crate) struct Demuxer {
    buf: BytesMut,
}

impl Demuxer {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub(crate) fn next_frame(&mut self) -> Result<Option<SmuxFrame>, String> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let version = self.buf[0];
        let cmd = self.buf[1];
        let length = u16::from_le_bytes([self.buf[2], self.buf[3]]) as usize;
        let sid = u32::from_le_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        if version != VERSION {
            return Err(format!("smux: unsupported protocol version {version}"));
        }
        if self.buf.len() < HEADER + length {
            return Ok(None);
        }
        self.buf.advance(HEADER);
        let data = self.buf.split_to(length).freeze();
        match cmd {
            CMD_SYN => Ok(Some(SmuxFrame::Syn(sid))),
            CMD_FIN => Ok(Some(SmuxFrame::Fin(sid))),
            CMD_PSH => Ok(Some(SmuxFrame::Psh(sid, data))),
            CMD_NOP => Ok(Some(SmuxFrame::Nop)),
            other => Err(format!("smux: invalid command {other}")),
        }
    }
}

/// One smux v1 frame on the wire.
pub(crate) fn encode(cmd: u8, sid: u32, data: &[u8]) -> Bytes {
    debug_assert!(data.len() <= MAX_FRAME_DATA);
    let mut out = BytesMut::with_capacity(HEADER + data.len());
    out.put_u8(VERSION);
    out.put_u8(cmd);
    out.put_u16_le(data.len() as u16);
    out.put_u32_le(sid);
    out.put_slice(data);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_pushes_are_reassembled() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode(CMD_SYN, 3, b""));
        wire.extend_from_slice(&encode(CMD_PSH, 3, b"hello"));
        wire.extend_from_slice(&encode(CMD_FIN, 3, b""));
        let mut demux = Demuxer::default();
        let mut frames = Vec::new();
        for byte in &wire {
            demux.push(&[*byte]);
            while let Some(frame) = demux.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            vec![
                SmuxFrame::Syn(3),
                SmuxFrame::Psh(3, Bytes::from_static(b"hello")),
                SmuxFrame::Fin(3)
            ]
        );
    }

    #[test]
    fn header_is_little_endian() {
        assert_eq!(
            &encode(CMD_PSH, 5, b"ab")[..],
            &[1, 2, 2, 0, 5, 0, 0, 0, b'a', b'b']
        );
    }

    #[test]
    fn version_two_is_refused() {
        let mut demux = Demuxer::default();
        demux.push(&[2, 0, 0, 0, 3, 0, 0, 0]);
        assert!(demux.next_frame().is_err());
    }
}
