//! Bodies of the fuzz targets (not an API): each takes arbitrary bytes, drives
//! one parser or the engine with them, and panics when an invariant breaks.
//! `fuzz/` (cargo-fuzz, nightly) calls them under libFuzzer, and
//! `tests/fuzz_replay.rs` replays the committed corpus plus random inputs
//! through them on the stable toolchain, so the targets cannot rot.
//! Deterministic: every input always takes the same path.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use crate::channel::ChannelConfig;
use crate::frame::{message_type, payload_type, Frame};
use crate::handshake::{self, version_greater, CLIENT_VERSION};
use crate::payload::{
    self, Acknowledge, ChannelClosed, HandshakeComplete, HandshakeRequest, HandshakeResponse,
    OpenDataChannel, SessionTypeParameters,
};
use crate::smux::{Mux, MuxEvent};
use crate::{Connection, EngineConfig, Event};

/// Reads fields off the fuzz input; past its end every read yields zeros.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data, at: 0 }
    }

    fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let byte = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        byte
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.u8()))
    }

    fn bytes(&mut self, len: usize) -> &'a [u8] {
        let start = self.at.min(self.data.len());
        let end = (start + len).min(self.data.len());
        self.at = start + len;
        &self.data[start..end]
    }
}

/// `Frame::decode` never panics, never returns more payload than it was given,
/// and what it returns encodes to a frame that decodes to the same value.
pub fn frame(data: &[u8]) {
    if let Ok(frame) = Frame::decode(data) {
        assert!(frame.payload.len() <= data.len());
        let again = Frame::decode(&frame.encode()).expect("a decoded frame re-encodes");
        assert_eq!(again, frame, "decode(encode(f)) != f");
    }
    // The same bytes as a payload: encode then decode is the identity.
    let built = Frame {
        message_type: message_type::OUTPUT_STREAM_DATA.to_owned(),
        schema_version: 1,
        created_date: 1,
        sequence_number: data.len() as i64,
        flags: 0,
        message_id: Uuid::from_u128(data.len() as u128),
        payload_type: payload_type::OUTPUT,
        payload: Bytes::copy_from_slice(data),
    };
    assert_eq!(Frame::decode(&built.encode()), Ok(built));
}

/// The smux parser: no panic; events only for streams we opened, none after
/// their FIN; and the same events and error however the input is split.
pub fn smux(data: &[u8]) {
    let mut input = Input::new(data);
    let streams = input.u8() % 8;
    let chunk = usize::from(input.u8()).max(1);
    let wire = &data[data.len().min(2)..];
    let run = |pieces: &mut dyn Iterator<Item = &[u8]>| {
        let mut mux = Mux::new();
        let opened: Vec<u32> = (0..streams).map(|_| mux.open()).collect();
        mux.take_output();
        let mut events = Vec::new();
        let mut result = Ok(());
        for piece in pieces {
            result = mux.handle_input(piece);
            while let Some(event) = mux.poll_event() {
                events.push(event);
            }
            // Refusals of agent-opened streams are the only output: 8 bytes each.
            assert_eq!(mux.take_output().len() % 8, 0);
            if result.is_err() {
                break;
            }
        }
        (opened, events, result)
    };
    let (opened, whole, whole_result) = run(&mut std::iter::once(wire));
    let (_, split, split_result) = run(&mut wire.chunks(chunk));
    assert_eq!(whole, split, "events depend on how the input is split");
    assert_eq!(whole_result, split_result);
    let mut finished = Vec::new();
    for event in &whole {
        let id = match event {
            MuxEvent::Data(id, body) => {
                assert!(!body.is_empty() && body.len() <= usize::from(u16::MAX));
                *id
            }
            MuxEvent::Fin(id) => *id,
        };
        assert!(opened.contains(&id), "event for stream {id} never opened");
        assert!(
            !finished.contains(&id),
            "event for stream {id} after its FIN"
        );
        if matches!(event, MuxEvent::Fin(_)) {
            finished.push(id);
        }
    }
}

/// The JSON payloads: whatever parses re-serialises to the same value; the
/// handshake answer to any request is a parseable response with one verdict
/// per action; version comparison is a strict order.
pub fn payloads(data: &[u8]) {
    fn round_trip<T>(data: &[u8])
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        if let Ok(value) = serde_json::from_slice::<T>(data) {
            let text = serde_json::to_vec(&value).expect("a parsed payload serialises");
            let again: T = serde_json::from_slice(&text).expect("serialised payload parses");
            // serde_json's float parsing is not correctly rounded (a fuzz finding):
            // numbers inside free-form parameters may move by an ulp, and we
            // never interpret them, so those compare by their shape only.
            if !has_float(&serde_json::to_value(&value).expect("serialises")) {
                assert_eq!(again, value);
            }
        }
    }
    round_trip::<OpenDataChannel>(data);
    round_trip::<Acknowledge>(data);
    round_trip::<ChannelClosed>(data);
    round_trip::<HandshakeComplete>(data);
    round_trip::<HandshakeResponse>(data);
    round_trip::<SessionTypeParameters>(data);
    round_trip::<HandshakeRequest>(data);
    if let Ok(request) = serde_json::from_slice::<HandshakeRequest>(data) {
        let outcome = handshake::answer(&request, CLIENT_VERSION, None);
        let response: HandshakeResponse =
            serde_json::from_slice(&outcome.response).expect("our HandshakeResponse parses");
        assert_eq!(
            response.processed_client_actions.len(),
            request.requested_client_actions.len()
        );
        assert_eq!(response.client_version, CLIENT_VERSION);
        // Every refused action is named in Errors, and a refusal fails the session.
        let refused = response
            .processed_client_actions
            .iter()
            .filter(|action| action.action_status != 1)
            .count();
        assert_eq!(response.errors.map_or(0, |errors| errors.len()), refused);
        assert!(refused == 0 || outcome.result.is_err());
    }
    let _ = payload::parse_flag(data);
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once(' ').unwrap_or((&text, ""));
    assert!(!(version_greater(a, b) && version_greater(b, a)));
    assert!(!version_greater(a, a));
}

fn has_float(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(items) => items.iter().any(has_float),
        serde_json::Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

/// HandshakeRequest payloads the engine target can pick, so it reaches every mode.
const HANDSHAKES: [&str; 5] = [
    r#"{"AgentVersion":"3.3.0.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{}}}]}"#,
    r#"{"AgentVersion":"3.3.0.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"type":"LocalPortForwarding"}}}]}"#,
    r#"{"AgentVersion":"3.0.100.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"type":"LocalPortForwarding"}}}]}"#,
    r#"{"AgentVersion":"3.3.0.0","RequestedClientActions":[{"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"k"}}]}"#,
    r#"{"AgentVersion":"3.3.0.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Standard_Stream","Properties":{}}}]}"#,
];

/// The application's byte stream: position-dependent, so a reordered or
/// duplicated chunk cannot pass for the right one.
fn app_byte(i: usize) -> u8 {
    ((i ^ (i >> 8) ^ (i >> 16)).wrapping_mul(131) % 251) as u8
}

/// What the fuzzer, playing the agent, sent at one sequence number.
type Sent = BTreeMap<i64, Vec<(u32, Bytes)>>;

/// The client engine fed an arbitrary sequence of frames (well-formed or not),
/// acks, application writes, flags, reconnects and clock jumps. Invariants:
/// no panic; the output delivered to the application is, in order, the agent's
/// Output messages with nothing skipped; every frame the engine writes decodes,
/// and a resend is byte-identical to the first transmission; the input stream
/// messages it writes carry a prefix of what the application wrote; the window
/// bounds what it holds.
pub fn engine(data: &[u8]) {
    let mut input = Input::new(data);
    let setup = input.u8();
    let window = 1 + usize::from(input.u8() % 64);
    let config = EngineConfig {
        channel: ChannelConfig {
            pacing: (setup & 1 == 1).then_some(100 + u32::from(setup >> 1) * 10),
            window,
            receive_buffer: 1 + usize::from(input.u8() % 64),
        },
        client_version: CLIENT_VERSION.to_owned(),
        handshake_timeout: Duration::from_millis(1 + u64::from(input.u16())),
    };
    let start = Instant::now();
    let mut now = start;
    let mut conn = Connection::new(config, now);
    let mut agent = Agent::default();
    let mut client = Written::default();
    let mut app_written = 0usize;
    let mut control_messages = 0usize;
    let mut ids = 0u128;
    while !input.is_empty() {
        match input.u8() % 10 {
            0 => {
                let len = usize::from(input.u8());
                let raw = input.bytes(len);
                if let Ok(frame) = Frame::decode(raw) {
                    control_messages += agent.record(&frame);
                }
                conn.handle_frame(now, raw);
            }
            1 | 2 => {
                let seq = match input.u8() {
                    255 => input.u64() as i64,
                    small => i64::from(small % 64),
                };
                let kind = input.u8();
                let (payload_type, payload) = match kind % 8 {
                    0..=3 => (payload_type::OUTPUT, agent_output(seq, input.u8())),
                    4 => {
                        let pick = input.u8();
                        let json = match HANDSHAKES.get(usize::from(pick % 8)) {
                            Some(json) => Bytes::from_static(json.as_bytes()),
                            None => Bytes::copy_from_slice(input.bytes(usize::from(pick))),
                        };
                        (payload_type::HANDSHAKE_REQUEST, json)
                    }
                    5 => (
                        payload_type::HANDSHAKE_COMPLETE,
                        Bytes::from_static(
                            br#"{"HandshakeTimeToComplete":1,"CustomerMessage":"hi"}"#,
                        ),
                    ),
                    6 => (
                        payload_type::FLAG,
                        Bytes::copy_from_slice(&payload::flag_payload(u32::from(input.u8() % 4))),
                    ),
                    _ => {
                        let len = usize::from(input.u8());
                        (
                            u32::from(kind >> 3),
                            Bytes::copy_from_slice(input.bytes(len)),
                        )
                    }
                };
                ids += 1;
                let frame = Frame {
                    message_type: message_type::OUTPUT_STREAM_DATA.to_owned(),
                    schema_version: 1,
                    created_date: 1 + now.duration_since(start).as_millis() as u64,
                    sequence_number: seq,
                    flags: 0,
                    message_id: Uuid::from_u128(ids),
                    payload_type,
                    payload,
                };
                control_messages += agent.record(&frame);
                conn.handle_frame(now, &frame.encode());
            }
            3 => {
                let pick = usize::from(input.u16());
                let seq = match client.frames.keys().nth(pick % client.frames.len().max(1)) {
                    Some(seq) if pick & 0x8000 == 0 => *seq,
                    _ => i64::from(input.u8()),
                };
                let ack = Acknowledge {
                    message_type: message_type::INPUT_STREAM_DATA.to_owned(),
                    message_id: Uuid::from_u128(seq as u128).to_string(),
                    sequence_number: seq,
                    is_sequential: true,
                };
                let frame = Frame::new(
                    message_type::ACKNOWLEDGE,
                    1,
                    0,
                    3,
                    payload_type::NONE,
                    serde_json::to_vec(&ack).expect("ack serialises"),
                );
                conn.handle_frame(now, &frame.encode());
            }
            4 => {
                let (kind, payload) = match input.u8() % 3 {
                    0 => (message_type::PAUSE_PUBLICATION, Bytes::new()),
                    1 => (message_type::START_PUBLICATION, Bytes::new()),
                    _ => (
                        message_type::CHANNEL_CLOSED,
                        Bytes::from_static(br#"{"Output":"bye","SessionId":"s"}"#),
                    ),
                };
                let frame = Frame::new(kind, 1, 0, 0, payload_type::NONE, payload);
                conn.handle_frame(now, &frame.encode());
            }
            5 | 6 => {
                now += Duration::from_millis(u64::from(input.u16()));
                conn.handle_timeout(now);
            }
            7 => {
                let len = usize::from(input.u16() % 4096);
                let chunk: Vec<u8> = (app_written..app_written + len).map(app_byte).collect();
                let accepted = conn.send_data(&chunk);
                assert!(accepted <= len);
                app_written += accepted;
            }
            8 => conn.on_reconnected(),
            _ => {
                control_messages += 1;
                conn.send_flag(u32::from(input.u8() % 4));
            }
        }
        // The driver writes everything the engine offers, after every input.
        let mut written = 0;
        while let Some(bytes) = conn.poll_transmit(now) {
            written += 1;
            assert!(written < 100_000, "poll_transmit never runs dry");
            client.check(&bytes, &agent);
        }
        while let Some(event) = conn.poll_event() {
            if let Event::Data(bytes) = event {
                agent.delivered(&bytes);
            }
        }
        let _ = conn.poll_timeout(now);
        assert!(
            conn.channel().unacked() <= window + control_messages,
            "{} messages held with a window of {window}",
            conn.channel().unacked()
        );
    }
    client.check_prefix(app_written);
}

/// The payload of the agent's Output message `seq`: self-describing.
fn agent_output(seq: i64, len: u8) -> Bytes {
    let mut payload = seq.to_be_bytes().to_vec();
    payload.extend((0..len).map(|i| i ^ seq as u8));
    Bytes::from(payload)
}

/// The agent side: what it sent, and what reached the application.
#[derive(Default)]
struct Agent {
    sent: Sent,
    last_delivered: Option<i64>,
}

impl Agent {
    /// Records a frame fed to the engine; returns 1 for a HandshakeRequest,
    /// which makes the engine queue a response outside the window.
    fn record(&mut self, frame: &Frame) -> usize {
        if !frame.is_stream_data() {
            return 0;
        }
        self.sent
            .entry(frame.sequence_number)
            .or_default()
            .push((frame.payload_type, frame.payload.clone()));
        usize::from(frame.payload_type == payload_type::HANDSHAKE_REQUEST)
    }

    /// Output delivered to the application must be the next Output message
    /// after the last one, and no Output-only message in between may be skipped.
    fn delivered(&mut self, bytes: &Bytes) {
        // Sequence numbers start at 0: negative ones are never expected.
        let after = self.last_delivered.map_or(0, |s| s + 1);
        let seq = self
            .sent
            .range(after..)
            .find(|(_, variants)| {
                variants
                    .iter()
                    .any(|v| v == &(payload_type::OUTPUT, bytes.clone()))
            })
            .map(|(seq, _)| *seq)
            .expect("delivered output the agent never sent, or out of order");
        for (skipped, variants) in self.sent.range(after..seq) {
            let only_output = variants
                .iter()
                .all(|(kind, payload)| *kind == payload_type::OUTPUT && !payload.is_empty());
            assert!(!only_output, "agent Output message {skipped} was skipped");
        }
        self.last_delivered = Some(seq);
    }
}

/// What the engine wrote: its stream messages by sequence number.
#[derive(Default)]
struct Written {
    frames: BTreeMap<i64, Bytes>,
}

impl Written {
    fn check(&mut self, bytes: &Bytes, agent: &Agent) {
        let frame = Frame::decode(bytes).expect("the engine writes decodable frames");
        match frame.message_type.as_str() {
            message_type::ACKNOWLEDGE => {
                let ack: Acknowledge =
                    serde_json::from_slice(&frame.payload).expect("our acks parse");
                assert!(
                    agent.sent.contains_key(&ack.sequence_number),
                    "acked {} which the agent never sent",
                    ack.sequence_number
                );
            }
            message_type::INPUT_STREAM_DATA => {
                assert!(matches!(
                    frame.payload_type,
                    payload_type::OUTPUT | payload_type::FLAG | payload_type::HANDSHAKE_RESPONSE
                ));
                let first = self
                    .frames
                    .entry(frame.sequence_number)
                    .or_insert_with(|| bytes.clone());
                assert_eq!(first, bytes, "a resend differs from the first transmission");
            }
            other => panic!("the engine wrote a {other} frame"),
        }
    }

    /// Sequence numbers are used from 0 without gaps, and the Output messages
    /// carry a prefix of what the application wrote.
    fn check_prefix(&self, app_written: usize) {
        let mut at = 0;
        for (expected, (seq, bytes)) in self.frames.iter().enumerate() {
            assert_eq!(*seq, expected as i64, "gap in the sequence numbers");
            let frame = Frame::decode(bytes).expect("checked when written");
            if frame.payload_type == payload_type::OUTPUT {
                for (i, byte) in frame.payload.iter().enumerate() {
                    assert_eq!(*byte, app_byte(at + i), "output byte {} is wrong", at + i);
                }
                at += frame.payload.len();
            }
        }
        assert!(at <= app_written);
    }
}

/// Inputs for a replay on the stable toolchain: each seed as is, then `cases`
/// mutants (byte flips, insertions, deletions, splices of two seeds, runs of
/// random bytes), reproducible from `seed`.
pub fn mutants(seeds: &[Vec<u8>], cases: usize, seed: u64) -> Vec<Vec<u8>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out: Vec<Vec<u8>> = seeds.to_vec();
    for _ in 0..cases {
        let mut input = if seeds.is_empty() {
            Vec::new()
        } else {
            seeds[rng.random_range(0..seeds.len())].clone()
        };
        for _ in 0..rng.random_range(1..=8) {
            let at = rng.random_range(0..=input.len());
            match rng.random_range(0..5) {
                0 if at < input.len() => input[at] ^= 1 << rng.random_range(0..8),
                1 => input.insert(at, rng.random()),
                2 if at < input.len() => {
                    input.remove(at);
                }
                3 if !seeds.is_empty() => {
                    let other = &seeds[rng.random_range(0..seeds.len())];
                    let from = rng.random_range(0..=other.len());
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
                _ => {
                    let run: Vec<u8> = (0..rng.random_range(1..32)).map(|_| rng.random()).collect();
                    input.splice(at..at, run);
                }
            }
        }
        out.push(input);
    }
    out
}

/// Runs `target` over the corpus in `dir` (one input per file) and then
/// [`mutants`] of it, `SM_SSH_FUZZ_REPLAY_CASES` of them (default 3000): what
/// the stable replay tests do. Panics, naming the directory, if it is empty.
pub fn replay(dir: &std::path::Path, target: fn(&[u8])) {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.expect("corpus entry").path()).expect("corpus file"))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    let cases = std::env::var("SM_SSH_FUZZ_REPLAY_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    for input in mutants(&seeds, cases, 17) {
        target(&input);
    }
}
