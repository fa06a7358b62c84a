//! The binary frame of the data channel ("ClientMessage" / "AgentMessage").
//!
//! Layout (all integers big-endian), see `docs/protocol.md`:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | HeaderLength, 116 when written |
//! | 4 | 32 | MessageType, ASCII padded with spaces |
//! | 36 | 4 | SchemaVersion (1) |
//! | 40 | 8 | CreatedDate, epoch milliseconds |
//! | 48 | 8 | SequenceNumber |
//! | 56 | 8 | Flags |
//! | 64 | 16 | MessageId, UUID with its 8-byte halves swapped |
//! | 80 | 32 | SHA-256 of the payload |
//! | 112 | 4 | PayloadType (absent when HeaderLength is 112) |
//! | HL | 4 | PayloadLength |
//! | HL+4 | n | Payload |

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use thiserror::Error;
use uuid::Uuid;

/// HeaderLength as every writer puts it: the bytes before PayloadLength.
pub const HEADER_LENGTH: usize = 116;
/// The shortest HeaderLength accepted: MGS has been seen sending `channel_closed`
/// frames without the PayloadType field.
pub const SHORT_HEADER_LENGTH: usize = 112;
/// Header plus PayloadLength: where the payload of a written frame starts.
pub const PAYLOAD_OFFSET: usize = HEADER_LENGTH + 4;
const MESSAGE_TYPE_LEN: usize = 32;

/// The MessageType strings of the data channel.
pub mod message_type {
    pub const INPUT_STREAM_DATA: &str = "input_stream_data";
    pub const OUTPUT_STREAM_DATA: &str = "output_stream_data";
    pub const ACKNOWLEDGE: &str = "acknowledge";
    pub const CHANNEL_CLOSED: &str = "channel_closed";
    pub const START_PUBLICATION: &str = "start_publication";
    pub const PAUSE_PUBLICATION: &str = "pause_publication";
}

/// The PayloadType values.
pub mod payload_type {
    pub const NONE: u32 = 0;
    pub const OUTPUT: u32 = 1;
    pub const ERROR: u32 = 2;
    pub const SIZE: u32 = 3;
    pub const PARAMETER: u32 = 4;
    pub const HANDSHAKE_REQUEST: u32 = 5;
    pub const HANDSHAKE_RESPONSE: u32 = 6;
    pub const HANDSHAKE_COMPLETE: u32 = 7;
    pub const ENC_CHALLENGE_REQUEST: u32 = 8;
    pub const ENC_CHALLENGE_RESPONSE: u32 = 9;
    pub const FLAG: u32 = 10;
    pub const STDERR: u32 = 11;
    pub const EXIT_CODE: u32 = 12;
}

/// Header flag bits (informational: no receiver interprets them).
pub mod header_flags {
    pub const NONE: u64 = 0;
    pub const SYN: u64 = 1;
    pub const FIN: u64 = 2;
    /// What both plugin and agent put on `acknowledge` frames.
    pub const ACK: u64 = 3;
}

/// One protocol message, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub message_type: String,
    pub schema_version: u32,
    pub created_date: u64,
    pub sequence_number: i64,
    pub flags: u64,
    pub message_id: Uuid,
    pub payload_type: u32,
    pub payload: Bytes,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than its header")]
    TooShort(usize),
    #[error("unsupported header length {0}")]
    HeaderLength(u32),
    #[error("frame has an empty message type")]
    EmptyMessageType,
    #[error("message type is not ASCII")]
    MessageTypeNotAscii,
    #[error("frame has a zero creation date")]
    ZeroCreatedDate,
    #[error("payload length {declared} exceeds the {available} bytes present")]
    PayloadTruncated { declared: usize, available: usize },
    #[error("payload digest mismatch")]
    DigestMismatch,
}

impl Frame {
    /// A frame with a fresh random MessageId.
    pub fn new(
        message_type: &str,
        created_date: u64,
        sequence_number: i64,
        flags: u64,
        payload_type: u32,
        payload: impl Into<Bytes>,
    ) -> Frame {
        Frame {
            message_type: message_type.to_owned(),
            schema_version: 1,
            created_date,
            sequence_number,
            flags,
            message_id: Uuid::new_v4(),
            payload_type,
            payload: payload.into(),
        }
    }

    /// The frame as written on the wire (always HeaderLength 116).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(PAYLOAD_OFFSET + self.payload.len());
        out.put_u32(HEADER_LENGTH as u32);
        let mut message_type = [b' '; MESSAGE_TYPE_LEN];
        let name = self.message_type.as_bytes();
        let n = name.len().min(MESSAGE_TYPE_LEN);
        message_type[..n].copy_from_slice(&name[..n]);
        out.put_slice(&message_type);
        out.put_u32(self.schema_version);
        out.put_u64(self.created_date);
        out.put_i64(self.sequence_number);
        out.put_u64(self.flags);
        out.put_slice(&swap_halves(self.message_id.as_bytes()));
        out.put_slice(&Sha256::digest(&self.payload));
        out.put_u32(self.payload_type);
        out.put_u32(self.payload.len() as u32);
        out.put_slice(&self.payload);
        out.freeze()
    }

    /// Parses one websocket message. Never panics; the payload is a copy of at
    /// most the input's length. A digest mismatch on a non-empty payload is an
    /// error, except for the publication messages that nobody validates.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() < SHORT_HEADER_LENGTH + 4 {
            return Err(FrameError::TooShort(bytes.len()));
        }
        let header_length = be_u32(bytes, 0);
        let hl = header_length as usize;
        if !(SHORT_HEADER_LENGTH..=HEADER_LENGTH).contains(&hl) {
            return Err(FrameError::HeaderLength(header_length));
        }
        if bytes.len() < hl + 4 {
            return Err(FrameError::TooShort(bytes.len()));
        }
        let message_type = parse_message_type(&bytes[4..36])?;
        // The plugin skips validation for the publication messages
        // (messageparser.go, Validate): no CreatedDate or digest check.
        let unchecked = message_type == message_type::START_PUBLICATION
            || message_type == message_type::PAUSE_PUBLICATION;
        let created_date = be_u64(bytes, 40);
        if created_date == 0 && !unchecked {
            return Err(FrameError::ZeroCreatedDate);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[64..80]);
        let payload_type = if hl >= HEADER_LENGTH {
            be_u32(bytes, 112)
        } else {
            payload_type::NONE
        };
        let declared = be_u32(bytes, hl) as usize;
        let available = bytes.len() - (hl + 4);
        if declared > available {
            return Err(FrameError::PayloadTruncated {
                declared,
                available,
            });
        }
        let payload = &bytes[hl + 4..hl + 4 + declared];
        if !payload.is_empty() && !unchecked && Sha256::digest(payload)[..] != bytes[80..112] {
            return Err(FrameError::DigestMismatch);
        }
        Ok(Frame {
            message_type,
            schema_version: be_u32(bytes, 36),
            created_date,
            sequence_number: be_u64(bytes, 48) as i64,
            flags: be_u64(bytes, 56),
            message_id: Uuid::from_bytes(swap_halves(&id)),
            payload_type,
            payload: Bytes::copy_from_slice(payload),
        })
    }

    /// True for `input_stream_data` and `output_stream_data`: the sequenced messages.
    pub fn is_stream_data(&self) -> bool {
        self.message_type == message_type::INPUT_STREAM_DATA
            || self.message_type == message_type::OUTPUT_STREAM_DATA
    }
}

/// Trims NUL padding (seen from MGS and third-party clients), then whitespace.
fn parse_message_type(raw: &[u8]) -> Result<String, FrameError> {
    let text = std::str::from_utf8(raw).map_err(|_| FrameError::MessageTypeNotAscii)?;
    let trimmed = text.trim_matches('\0').trim();
    if trimmed.is_empty() {
        return Err(FrameError::EmptyMessageType);
    }
    Ok(trimmed.to_owned())
}

/// The wire order of a MessageId: bytes 8..16 of the UUID, then bytes 0..8.
fn swap_halves(id: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&id[8..]);
    out[8..].copy_from_slice(&id[..8]);
    out
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: String = s.split_whitespace().collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    const EXAMPLE_ID: &str = "dd01e56b-ff48-483e-a508-b5f073f31b16";
    const EXAMPLE_DATE: u64 = 1503434274948;

    /// Protocol document, section 3.2.
    #[test]
    fn input_stream_data_hello_matches_the_reference_bytes() {
        let frame = Frame {
            message_id: EXAMPLE_ID.parse().unwrap(),
            ..Frame::new(
                message_type::INPUT_STREAM_DATA,
                EXAMPLE_DATE,
                0,
                0,
                payload_type::OUTPUT,
                &b"hello"[..],
            )
        };
        let expected = hex("00 00 00 74 69 6e 70 75 74 5f 73 74 72 65 61 6d
             5f 64 61 74 61 20 20 20 20 20 20 20 20 20 20 20
             20 20 20 20 00 00 00 01 00 00 01 5e 0b aa 78 84
             00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
             a5 08 b5 f0 73 f3 1b 16 dd 01 e5 6b ff 48 48 3e
             2c f2 4d ba 5f b0 a3 0e 26 e8 3b 2a c5 b9 e2 9e
             1b 16 1e 5c 1f a7 42 5e 73 04 33 62 93 8b 98 24
             00 00 00 01 00 00 00 05 68 65 6c 6c 6f");
        let encoded = frame.encode();
        assert_eq!(&encoded[..], &expected[..]);
        assert_eq!(Frame::decode(&expected).unwrap(), frame);
    }

    /// Protocol document, section 3.3.
    #[test]
    fn acknowledge_frame_matches_the_reference_layout() {
        let payload = br#"{"AcknowledgedMessageType":"input_stream_data","AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16","AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}"#;
        assert_eq!(payload.len(), 175);
        let frame = Frame::new(
            message_type::ACKNOWLEDGE,
            EXAMPLE_DATE,
            0,
            header_flags::ACK,
            payload_type::NONE,
            &payload[..],
        );
        let encoded = frame.encode();
        assert_eq!(encoded.len(), 295);
        assert_eq!(
            &encoded[40..64],
            &hex("00 00 01 5e 0b aa 78 84 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 03")[..]
        );
        assert_eq!(&encoded[112..120], &hex("00 00 00 00 00 00 00 af")[..]);
        assert_eq!(Frame::decode(&encoded).unwrap(), frame);
    }

    /// Protocol document, section 3.4.
    #[test]
    fn terminate_session_flag_matches_the_reference_layout() {
        let frame = Frame::new(
            message_type::INPUT_STREAM_DATA,
            EXAMPLE_DATE,
            7,
            0,
            payload_type::FLAG,
            2u32.to_be_bytes().to_vec(),
        );
        let encoded = frame.encode();
        assert_eq!(encoded.len(), 124);
        assert_eq!(
            &encoded[48..64],
            &hex("00 00 00 00 00 00 00 07 00 00 00 00 00 00 00 00")[..]
        );
        assert_eq!(
            &encoded[112..124],
            &hex("00 00 00 0a 00 00 00 04 00 00 00 02")[..]
        );
    }

    #[test]
    fn short_header_channel_closed_with_nul_padding_parses() {
        let payload = br#"{"Output":"bye"}"#;
        let full = Frame::new(
            message_type::CHANNEL_CLOSED,
            EXAMPLE_DATE,
            0,
            0,
            payload_type::NONE,
            &payload[..],
        )
        .encode();
        // Rebuild it with HL = 112, no PayloadType, and a NUL-padded type.
        let mut short = Vec::new();
        short.extend_from_slice(&112u32.to_be_bytes());
        let mut name = [0u8; 32];
        name[..14].copy_from_slice(b"channel_closed");
        short.extend_from_slice(&name);
        short.extend_from_slice(&full[36..112]);
        short.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        short.extend_from_slice(payload);
        let frame = Frame::decode(&short).unwrap();
        assert_eq!(frame.message_type, message_type::CHANNEL_CLOSED);
        assert_eq!(frame.payload_type, payload_type::NONE);
        assert_eq!(&frame.payload[..], &payload[..]);
    }

    #[test]
    fn corrupted_digest_is_rejected() {
        let mut bytes = Frame::new(
            message_type::OUTPUT_STREAM_DATA,
            EXAMPLE_DATE,
            3,
            0,
            payload_type::OUTPUT,
            &b"data"[..],
        )
        .encode()
        .to_vec();
        bytes[80] ^= 0xff;
        assert_eq!(Frame::decode(&bytes), Err(FrameError::DigestMismatch));
    }

    #[test]
    fn malformed_headers_are_errors() {
        let good = Frame::new(
            message_type::OUTPUT_STREAM_DATA,
            EXAMPLE_DATE,
            1,
            0,
            payload_type::OUTPUT,
            &b"x"[..],
        )
        .encode();
        assert!(matches!(
            Frame::decode(&good[..50]),
            Err(FrameError::TooShort(50))
        ));
        let mut bad_hl = good.to_vec();
        bad_hl[3] = 200;
        assert_eq!(Frame::decode(&bad_hl), Err(FrameError::HeaderLength(200)));
        let mut zero_date = good.to_vec();
        zero_date[40..48].fill(0);
        assert_eq!(Frame::decode(&zero_date), Err(FrameError::ZeroCreatedDate));
        let mut blank_type = good.to_vec();
        blank_type[4..36].fill(b' ');
        assert_eq!(
            Frame::decode(&blank_type),
            Err(FrameError::EmptyMessageType)
        );
        let mut long_len = good.to_vec();
        long_len[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Frame::decode(&long_len),
            Err(FrameError::PayloadTruncated { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = Frame::decode(&bytes);
        }

        #[test]
        fn encode_then_decode_is_identity(
            seq in 0i64..i64::MAX,
            flags in proptest::num::u64::ANY,
            pt in 0u32..13,
            date in 1u64..u64::MAX,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
        ) {
            let frame = Frame::new(message_type::OUTPUT_STREAM_DATA, date, seq, flags, pt, payload);
            proptest::prop_assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
    }
}
