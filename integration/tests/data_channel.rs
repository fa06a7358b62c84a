//! The fake data plane (MGS + agent) driven by a scripted client written
//! here from the protocol document: raw websocket and the frame codec, not
//! the proxy engine, so the two implementations check each other.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sm_ssh_integration::datachannel::{serve_router, DataPlane};
use sm_ssh_integration::world::{
    DirectionFaults, Faults, Instance, Pacing, Session, SharedWorld, World,
};
use sm_ssh_proxy::frame::{header_flags, message_type, payload_type, Frame, FrameError};
use sm_ssh_proxy::payload::{
    flag, flag_payload, parse_flag, Acknowledge, ChannelClosed, HandshakeRequest,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

const INSTANCE: &str = "mi-0123456789abcdef0";
const SESSION: &str = "alice-0123456789abcdef0";
/// Generous bound on any single wait, so a broken fake fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);
/// Client retransmission interval in the scripted client.
const CLIENT_RESEND: Duration = Duration::from_millis(150);
const SSH_PROPERTIES: &str = r#"{"portNumber":"22"}"#;
const FORWARD_PROPERTIES: &str =
    r#"{"localPortNumber":"0","portNumber":"8080","type":"LocalPortForwarding"}"#;
/// A client version that makes the agent choose basic mode for port forwarding.
const OLD_CLIENT: &str = "0.0.1";
const NEW_CLIENT: &str = "1.2.707.0";

// ---------------------------------------------------------------- fixtures --

/// A TCP server on loopback: echo, or a banner followed by EOF.
struct Target {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target {
    async fn echo() -> Target {
        Target::serve(None).await
    }

    async fn banner_then_eof(banner: &'static [u8]) -> Target {
        Target::serve(Some(banner)).await
    }

    async fn serve(banner: Option<&'static [u8]>) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Some(banner) = banner {
                        let _ = stream.write_all(banner).await;
                        return;
                    }
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        Target {
            addr,
            accepted,
            task,
        }
    }
}

/// The data plane alone, on a loopback port, around a hand-seeded world.
struct Fake {
    world: SharedWorld,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start(target: &Target, pacing: Pacing, faults: Faults) -> Fake {
        let instance = Instance {
            id: INSTANCE.into(),
            ports: BTreeMap::from([(22, target.addr), (8080, target.addr)]),
            remote_hosts: BTreeMap::from([("db.internal:5432".to_string(), target.addr)]),
            ..Instance::default()
        };
        let world = World {
            instances: BTreeMap::from([(INSTANCE.to_string(), instance)]),
            pacing,
            faults,
            ..World::default()
        };
        let world: SharedWorld = Arc::new(Mutex::new(world));
        let (addr, task) = serve_router(world.clone()).await.unwrap();
        Fake { world, addr, task }
    }

    async fn echo(pacing: Pacing, faults: Faults) -> (Fake, Target) {
        let target = Target::echo().await;
        (Fake::start(&target, pacing, faults).await, target)
    }

    /// The usual start: an unpaced echo fake with one SSH session (token
    /// `t1`) and a client that has completed a new client's handshake on it.
    async fn ssh_session(faults: Faults) -> (Fake, Target, Client) {
        let (fake, target) = Fake::echo(Pacing::Unconstrained, faults).await;
        fake.add_session(SSH_PROPERTIES, &["t1"]);
        let mut client = fake.connect("t1").await;
        client.handshake(NEW_CLIENT).await;
        (fake, target, client)
    }

    /// What StartSession would create: a session with these tokens.
    fn add_session(&self, properties: &str, tokens: &[&str]) {
        let (terminated, _) = watch::channel(false);
        let session = Session {
            id: SESSION.into(),
            target: INSTANCE.into(),
            document: "AWS-StartSSHSession".into(),
            properties: serde_json::from_str(properties).unwrap(),
            unused_tokens: tokens.iter().map(|t| t.to_string()).collect::<HashSet<_>>(),
            terminated,
            started: std::time::Instant::now(),
        };
        self.world
            .lock()
            .unwrap()
            .sessions
            .insert(SESSION.into(), session);
    }

    fn plane(&self) -> DataPlane {
        self.world.lock().unwrap().data_plane.clone()
    }

    fn terminate(&self) {
        self.world.lock().unwrap().sessions[SESSION]
            .terminated
            .send_replace(true);
    }

    fn is_terminated(&self) -> bool {
        *self.world.lock().unwrap().sessions[SESSION]
            .terminated
            .borrow()
    }

    async fn connect(&self, token: &str) -> Client {
        Client::connect(self.addr, token).await
    }
}

// ------------------------------------------------------- scripted client --

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Something the client read that is not in-sequence agent data.
#[derive(Debug)]
enum Event {
    Closed(Option<CloseFrame>),
    Undecodable(FrameError),
}

/// A data-channel client scripted from the protocol document.
struct Client {
    ws: Ws,
    next_seq: i64,
    /// The next agent sequence number we expect.
    expected: i64,
    /// Agent messages that arrived ahead of `expected`.
    ahead: BTreeMap<i64, Frame>,
    /// Sequence numbers of every agent stream message seen (with repeats).
    seen: Vec<i64>,
    /// Our messages the agent acknowledged (with repeats).
    acks: Vec<i64>,
    /// Our messages not yet acknowledged.
    unacked: BTreeMap<i64, Frame>,
    /// MGS messages (channel_closed, publications) in arrival order.
    service: VecDeque<Frame>,
    /// Raw bytes of MGS messages, for header checks.
    service_raw: VecDeque<Bytes>,
    events: VecDeque<Event>,
    /// Acknowledge the agent's messages (tests turn it off to provoke resends).
    send_acks: bool,
}

impl Client {
    async fn open(addr: SocketAddr, token: &str) -> Ws {
        let url = format!("ws://{addr}/v1/data-channel/{SESSION}?role=publish_subscribe");
        let (mut ws, _) = connect_async(url).await.unwrap();
        let open = json!({
            "MessageSchemaVersion": "1.0",
            "RequestId": uuid::Uuid::new_v4().to_string(),
            "TokenValue": token,
            "ClientId": "6a0e6c2f-6f58-4a3b-8a39-54b0d9b2f1c1",
            "ClientVersion": "1.2.707.0",
        });
        ws.send(Message::Text(open.to_string().into()))
            .await
            .unwrap();
        ws
    }

    async fn connect(addr: SocketAddr, token: &str) -> Client {
        Client {
            ws: Client::open(addr, token).await,
            next_seq: 0,
            expected: 0,
            ahead: BTreeMap::new(),
            seen: Vec::new(),
            acks: Vec::new(),
            unacked: BTreeMap::new(),
            service: VecDeque::new(),
            service_raw: VecDeque::new(),
            events: VecDeque::new(),
            send_acks: true,
        }
    }

    /// Replaces the websocket (a resume), keeping all sequencing state.
    async fn reconnect(&mut self, addr: SocketAddr, token: &str) {
        self.ws = Client::open(addr, token).await;
    }

    async fn send_frame(&mut self, frame: &Frame) {
        self.ws.send(Message::Binary(frame.encode())).await.unwrap();
    }

    /// Sends one stream message with the next sequence number.
    async fn send(&mut self, payload_type: u32, payload: impl Into<Bytes>) -> Frame {
        let frame = self.stream_frame(self.next_seq, payload_type, payload);
        self.next_seq += 1;
        self.send_frame(&frame).await;
        self.unacked.insert(frame.sequence_number, frame.clone());
        frame
    }

    fn stream_frame(&self, seq: i64, payload_type: u32, payload: impl Into<Bytes>) -> Frame {
        Frame::new(
            message_type::INPUT_STREAM_DATA,
            now_millis(),
            seq,
            header_flags::NONE,
            payload_type,
            payload,
        )
    }

    /// Sends `data` and reads it back from the echoing target.
    async fn echoes(&mut self, data: Vec<u8>) {
        self.send_data(&data).await;
        assert_eq!(self.read_output(data.len()).await, data);
    }

    async fn send_data(&mut self, data: &[u8]) {
        for chunk in data.chunks(1024) {
            self.send(payload_type::OUTPUT, Bytes::copy_from_slice(chunk))
                .await;
        }
    }

    async fn send_flag(&mut self, value: u32) {
        self.send(payload_type::FLAG, flag_payload(value).to_vec())
            .await;
    }

    async fn ack(&mut self, frame: &Frame) {
        if !self.send_acks {
            return;
        }
        let ack = Acknowledge {
            message_type: frame.message_type.clone(),
            message_id: frame.message_id.to_string(),
            sequence_number: frame.sequence_number,
            is_sequential: true,
        };
        let ack = Frame::new(
            message_type::ACKNOWLEDGE,
            now_millis(),
            0,
            header_flags::ACK,
            payload_type::NONE,
            serde_json::to_vec(&ack).unwrap(),
        );
        self.send_frame(&ack).await;
    }

    /// Reads one websocket message and files it. False when nothing came
    /// within `wait` (or the socket ended).
    async fn pump(&mut self, wait: Duration) -> bool {
        let message = match timeout(wait, self.ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) => {
                self.events.push_back(Event::Closed(None));
                return false;
            }
            Ok(Some(Ok(message))) => message,
        };
        let bytes = match message {
            Message::Binary(bytes) => bytes,
            Message::Close(close) => {
                self.events.push_back(Event::Closed(close));
                return true;
            }
            _ => return true,
        };
        let frame = match Frame::decode(&bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.events.push_back(Event::Undecodable(e));
                return true;
            }
        };
        match frame.message_type.as_str() {
            message_type::OUTPUT_STREAM_DATA => {
                let seq = frame.sequence_number;
                self.seen.push(seq);
                self.ack(&frame).await;
                if seq >= self.expected {
                    self.ahead.entry(seq).or_insert(frame);
                }
            }
            message_type::ACKNOWLEDGE => {
                let ack: Acknowledge = serde_json::from_slice(&frame.payload).unwrap();
                self.unacked.remove(&ack.sequence_number);
                self.acks.push(ack.sequence_number);
            }
            _ => {
                self.service_raw.push_back(bytes);
                self.service.push_back(frame);
            }
        }
        true
    }

    /// Retransmits the oldest unacknowledged message, as a client's resend timer would.
    async fn resend_head(&mut self) {
        if let Some(frame) = self.unacked.values().next().cloned() {
            self.send_frame(&frame).await;
        }
    }

    /// Pumps (resending our head when idle) until `done` holds.
    async fn until(&mut self, what: &str, mut done: impl FnMut(&mut Client) -> bool) {
        let give_up = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < give_up,
                "timed out waiting for {what}; events {:?}, acks {:?}",
                self.events,
                self.acks
            );
            if !self.pump(CLIENT_RESEND).await {
                if matches!(self.events.back(), Some(Event::Closed(_))) {
                    assert!(done(self), "socket closed while waiting for {what}");
                    return;
                }
                self.resend_head().await;
            }
        }
    }

    /// The next in-sequence agent stream message.
    async fn next_stream(&mut self) -> Frame {
        self.until("the next agent message", |c| {
            c.ahead.contains_key(&c.expected)
        })
        .await;
        let frame = self.ahead.remove(&self.expected).unwrap();
        self.expected += 1;
        frame
    }

    /// Collects `n` bytes of Output from the agent.
    async fn read_output(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let frame = self.next_stream().await;
            assert_eq!(frame.payload_type, payload_type::OUTPUT, "{frame:?}");
            assert!(frame.payload.len() <= 1024);
            out.extend_from_slice(&frame.payload);
        }
        assert_eq!(out.len(), n, "more output than expected");
        out
    }

    async fn wait_acked(&mut self) {
        self.until("acks for everything sent", |c| c.unacked.is_empty())
            .await;
    }

    async fn next_service(&mut self) -> Frame {
        self.until("an MGS message", |c| !c.service.is_empty())
            .await;
        self.service_raw.pop_front();
        self.service.pop_front().unwrap()
    }

    async fn channel_closed(&mut self) -> ChannelClosed {
        let frame = self.next_service().await;
        assert_eq!(frame.message_type, message_type::CHANNEL_CLOSED);
        serde_json::from_slice(&frame.payload).unwrap()
    }

    async fn closed(&mut self) -> Option<CloseFrame> {
        let give_up = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(at) = self
                .events
                .iter()
                .position(|e| matches!(e, Event::Closed(_)))
            {
                let Some(Event::Closed(close)) = self.events.remove(at) else {
                    unreachable!()
                };
                return close;
            }
            assert!(tokio::time::Instant::now() < give_up, "socket never closed");
            self.pump(CLIENT_RESEND).await;
        }
    }

    /// The handshake of §4.4; returns the agent's HandshakeRequest.
    async fn handshake(&mut self, client_version: &str) -> HandshakeRequest {
        let request = self.next_stream().await;
        assert_eq!(request.sequence_number, 0);
        assert_eq!(request.flags, header_flags::SYN);
        assert_eq!(request.payload_type, payload_type::HANDSHAKE_REQUEST);
        let request: HandshakeRequest = serde_json::from_slice(&request.payload).unwrap();
        self.respond(client_version, 1).await;
        let complete = self.next_stream().await;
        assert_eq!(complete.payload_type, payload_type::HANDSHAKE_COMPLETE);
        request
    }

    async fn respond(&mut self, client_version: &str, status: i64) {
        let response = json!({
            "ClientVersion": client_version,
            "ProcessedClientActions": [{
                "ActionType": "SessionType", "ActionStatus": status,
                "ActionResult": null, "Error": if status == 1 { "" } else { "not supported" },
            }],
            "Errors": null,
        });
        self.send(
            payload_type::HANDSHAKE_RESPONSE,
            serde_json::to_vec(&response).unwrap(),
        )
        .await;
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn faults(edit: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults {
        seed: 7,
        ..Faults::default()
    };
    edit(&mut faults);
    faults
}

/// Reads smux frames out of the agent's Output stream.
async fn read_smux(client: &mut Client, buf: &mut Vec<u8>) -> (u8, u32, Vec<u8>) {
    loop {
        if buf.len() >= 8 {
            let len = u16::from_le_bytes([buf[2], buf[3]]) as usize;
            if buf.len() >= 8 + len {
                assert_eq!(buf[0], 1, "smux version");
                let cmd = buf[1];
                let sid = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let data = buf[8..8 + len].to_vec();
                buf.drain(..8 + len);
                return (cmd, sid, data);
            }
        }
        let frame = client.next_stream().await;
        assert_eq!(frame.payload_type, payload_type::OUTPUT);
        buf.extend_from_slice(&frame.payload);
    }
}

fn smux(cmd: u8, sid: u32, data: &[u8]) -> Vec<u8> {
    let mut out = vec![1, cmd];
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(&sid.to_le_bytes());
    out.extend_from_slice(data);
    out
}

// ------------------------------------------------------------------ tests --

#[tokio::test]
async fn handshake_announces_a_port_session_and_completes() {
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, Faults::default()).await;
    fake.add_session(SSH_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    let request = client.next_stream().await;
    assert_eq!(
        (request.sequence_number, request.flags, request.payload_type),
        (0, header_flags::SYN, payload_type::HANDSHAKE_REQUEST)
    );
    let body: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(body["AgentVersion"], "3.3.1802.0");
    assert_eq!(
        body["RequestedClientActions"],
        json!([{"ActionType": "SessionType",
                "ActionParameters": {"SessionType": "Port", "Properties": {"portNumber": "22"}}}])
    );
    client.respond(NEW_CLIENT, 1).await;
    let response_id = client.unacked[&0].message_id;
    client
        .until("the ack of the response", |c| c.acks == [0])
        .await;
    let complete = client.next_stream().await;
    assert_eq!(complete.sequence_number, 1);
    assert_eq!(complete.payload_type, payload_type::HANDSHAKE_COMPLETE);
    let body: Value = serde_json::from_slice(&complete.payload).unwrap();
    assert!(body["HandshakeTimeToComplete"].as_i64().unwrap() > 0);
    assert_eq!(body["CustomerMessage"], "");
    assert!(
        client.unacked.is_empty(),
        "response {response_id} was acked"
    );
}

#[tokio::test]
async fn ssh_bytes_flow_both_ways_through_a_tcp_echo() {
    let (_fake, target, mut client) = Fake::ssh_session(Faults::default()).await;
    client.echoes(pattern(100_000)).await;
    client.wait_acked().await;
    assert_eq!(target.accepted.load(Ordering::SeqCst), 1);
    // Every message the client sent was acked exactly once.
    let acks: BTreeSet<i64> = client.acks.iter().copied().collect();
    assert_eq!(acks.len(), client.acks.len());
    assert_eq!(acks.len() as i64, client.next_seq);
}

#[tokio::test]
async fn a_duplicate_is_acked_again_and_not_delivered_twice() {
    let (_fake, _target, mut client) = Fake::ssh_session(Faults::default()).await;
    let first = client.send(payload_type::OUTPUT, &b"abc"[..]).await;
    client.wait_acked().await;
    client.send_frame(&first).await;
    client
        .until("the re-ack", |c| {
            c.acks.iter().filter(|s| **s == 1).count() == 2
        })
        .await;
    client.send_data(b"X").await;
    assert_eq!(client.read_output(4).await, b"abcX");
}

#[tokio::test]
async fn out_of_order_messages_are_acked_at_once_and_delivered_in_order() {
    let (_fake, _target, mut client) = Fake::ssh_session(Faults::default()).await;
    let second = client.stream_frame(2, payload_type::OUTPUT, &b"world"[..]);
    client.send_frame(&second).await;
    client
        .until("the ack of seq 2", |c| c.acks.contains(&2))
        .await;
    let first = client.stream_frame(1, payload_type::OUTPUT, &b"hello "[..]);
    client.send_frame(&first).await;
    client.next_seq = 3;
    assert_eq!(client.read_output(11).await, b"hello world");
    client
        .until("the ack of seq 1", |c| c.acks.contains(&1))
        .await;
}

#[tokio::test]
async fn data_before_handshake_complete_is_acked_and_discarded() {
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, Faults::default()).await;
    fake.add_session(SSH_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    client.next_stream().await;
    client.send_data(b"early").await;
    client.wait_acked().await;
    client.respond(NEW_CLIENT, 1).await;
    let complete = client.next_stream().await;
    assert_eq!(complete.payload_type, payload_type::HANDSHAKE_COMPLETE);
    client.send_data(b"late").await;
    assert_eq!(client.read_output(4).await, b"late");
}

#[tokio::test]
async fn a_failed_client_action_cancels_the_session() {
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, Faults::default()).await;
    fake.add_session(SSH_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    client.next_stream().await;
    client.respond(NEW_CLIENT, 3).await;
    let closed = client.channel_closed().await;
    assert!(closed.output.contains("SessionType"), "{closed:?}");
    assert_eq!(closed.session_id, SESSION);
    assert_eq!(closed.destination_id, INSTANCE);
    assert!(fake.is_terminated());
}

#[tokio::test]
async fn resume_with_a_fresh_token_keeps_both_sequences() {
    let (fake, target) = Fake::echo(Pacing::Unconstrained, Faults::default()).await;
    fake.add_session(SSH_PROPERTIES, &["t1", "t2"]);
    let mut client = fake.connect("t1").await;
    client.handshake(NEW_CLIENT).await;
    client.send_data(b"before").await;
    assert_eq!(client.read_output(6).await, b"before");
    client.wait_acked().await;
    // Drop the socket without a close frame, as the plugin does.
    client.reconnect(fake.addr, "t2").await;
    client.send_data(b"after").await;
    assert_eq!(client.read_output(5).await, b"after");
    client.wait_acked().await;
    assert_eq!(client.next_seq, 3, "HandshakeResponse, before, after");
    assert_eq!(client.expected, 4, "request, complete, two outputs");
    assert_eq!(fake.plane().stats().reconnects, 1);
    assert_eq!(
        target.accepted.load(Ordering::SeqCst),
        1,
        "same target connection"
    );
}

#[tokio::test]
async fn refused_and_reused_tokens_close_with_1008() {
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, Faults::default()).await;
    fake.add_session(SSH_PROPERTIES, &["t1"]);
    let mut wrong = fake.connect("nope").await;
    let close = wrong.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("token"), "{close:?}");

    let mut first = fake.connect("t1").await;
    first.handshake(NEW_CLIENT).await;
    let mut reused = fake.connect("t1").await;
    let close = reused.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(fake.plane().stats().refused_tokens, 2);

    let refusing = faults(|f| f.refuse_token = true);
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, refusing).await;
    fake.add_session(SSH_PROPERTIES, &["t1"]);
    let mut refused = fake.connect("t1").await;
    let close = refused.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
}

#[tokio::test]
async fn disconnect_to_port_closes_the_target_and_the_next_output_redials() {
    let (fake, target) = Fake::echo(Pacing::Unconstrained, Faults::default()).await;
    fake.add_session(FORWARD_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    client.handshake(OLD_CLIENT).await;
    client.send_data(b"one").await;
    assert_eq!(client.read_output(3).await, b"one");
    client.send_flag(flag::DISCONNECT_TO_PORT).await;
    client.wait_acked().await;
    client.send_data(b"two").await;
    assert_eq!(client.read_output(3).await, b"two");
    assert_eq!(target.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn terminate_session_flag_ends_the_session() {
    let (fake, _target, mut client) = Fake::ssh_session(Faults::default()).await;
    client.send_flag(flag::TERMINATE_SESSION).await;
    let closed = client.channel_closed().await;
    assert_eq!(closed.output, "");
    assert_eq!(closed.message_type, "channel_closed");
    assert_eq!(closed.schema_version, 1);
    let close = client.closed().await;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1000));
    assert!(fake.is_terminated());
    assert!(fake.plane().live_sessions().is_empty());
}

#[tokio::test]
async fn mux_streams_echo_independently() {
    let (fake, target) = Fake::echo(Pacing::Realistic, Faults::default()).await;
    fake.add_session(FORWARD_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    client.handshake(NEW_CLIENT).await;
    let mut wire = smux(0, 3, b"");
    wire.extend(smux(0, 5, b""));
    wire.extend(smux(2, 3, b"three"));
    wire.extend(smux(2, 5, b"five"));
    client.send_data(&wire).await;
    let mut buf = Vec::new();
    let mut got = BTreeMap::new();
    while got.len() < 2 {
        let (cmd, sid, data) = read_smux(&mut client, &mut buf).await;
        assert_eq!(cmd, 2, "PSH");
        got.insert(sid, data);
    }
    assert_eq!(got[&3], b"three");
    assert_eq!(got[&5], b"five");
    // FIN on stream 3: the echo sees EOF and closes, the agent answers FIN.
    client.send_data(&smux(1, 3, b"")).await;
    assert_eq!(read_smux(&mut client, &mut buf).await, (1, 3, Vec::new()));
    client.send_data(&smux(2, 5, b"still")).await;
    assert_eq!(
        read_smux(&mut client, &mut buf).await,
        (2, 5, b"still".to_vec())
    );
    assert_eq!(target.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn mux_dial_failure_sends_connect_to_port_error_and_fin() {
    let failing = faults(|f| f.fail_target_dial = true);
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, failing).await;
    fake.add_session(FORWARD_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    client.handshake(NEW_CLIENT).await;
    client.send_data(&smux(0, 3, b"")).await;
    // The flag and the FIN (an Output) may come in either order.
    let mut flag_seen = false;
    let mut output = Vec::new();
    while !flag_seen || output.len() < 8 {
        let frame = client.next_stream().await;
        match frame.payload_type {
            payload_type::FLAG => {
                assert_eq!(
                    parse_flag(&frame.payload),
                    Some(flag::CONNECT_TO_PORT_ERROR)
                );
                flag_seen = true;
            }
            payload_type::OUTPUT => output.extend_from_slice(&frame.payload),
            other => panic!("unexpected payload type {other}"),
        }
    }
    assert_eq!(output, smux(1, 3, b""), "FIN on stream 3");
    assert_eq!(fake.plane().stats().dial_failures, 1);
}

#[tokio::test]
async fn basic_dial_failure_closes_the_channel() {
    let failing = faults(|f| f.fail_target_dial = true);
    let (_fake, _target, mut client) = Fake::ssh_session(failing).await;
    let closed = client.channel_closed().await;
    assert!(
        closed
            .output
            .starts_with("Unable to connect to specified port"),
        "{closed:?}"
    );
}

#[tokio::test]
async fn target_eof_drains_then_sends_channel_closed() {
    let target = Target::banner_then_eof(b"SSH-2.0-OpenSSH_9.6\r\n").await;
    let fake = Fake::start(&target, Pacing::Realistic, Faults::default()).await;
    fake.add_session(SSH_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    client.handshake(NEW_CLIENT).await;
    assert_eq!(client.read_output(21).await, b"SSH-2.0-OpenSSH_9.6\r\n");
    let closed = client.channel_closed().await;
    assert_eq!(closed.output, "");
    assert!(fake.is_terminated());
    assert_eq!(fake.plane().stats().sessions_closed, 1);
}

#[tokio::test]
async fn terminate_session_api_sends_channel_closed_with_output() {
    let (fake, _target, mut client) = Fake::ssh_session(Faults::default()).await;
    fake.terminate();
    let closed = client.channel_closed().await;
    assert_eq!(closed.output, "Session terminated");
    client.closed().await;
}

#[tokio::test]
async fn short_channel_closed_has_header_length_112_and_nul_padding() {
    let short = faults(|f| f.short_channel_closed = true);
    let (fake, _target, mut client) = Fake::ssh_session(short).await;
    fake.terminate();
    client
        .until("channel_closed", |c| !c.service.is_empty())
        .await;
    let raw = client.service_raw[0].clone();
    assert_eq!(&raw[..4], &112u32.to_be_bytes());
    assert_eq!(&raw[4..18], b"channel_closed");
    assert!(raw[18..36].iter().all(|b| *b == 0));
    let closed = client.channel_closed().await;
    assert_eq!(closed.output, "Session terminated");
}

#[tokio::test]
async fn publication_hook_reaches_the_client() {
    let (fake, _target, mut client) = Fake::ssh_session(Faults::default()).await;
    assert!(fake.plane().publish_to_client(SESSION, true));
    assert_eq!(
        client.next_service().await.message_type,
        "pause_publication"
    );
    assert!(fake.plane().publish_to_client(SESSION, false));
    assert_eq!(
        client.next_service().await.message_type,
        "start_publication"
    );
    assert!(!fake.plane().publish_to_client("no-such-session", true));
}

#[tokio::test]
async fn agent_output_while_detached_is_resent_after_resume() {
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, Faults::default()).await;
    fake.add_session(SSH_PROPERTIES, &["t1", "t2"]);
    let mut client = fake.connect("t1").await;
    client.handshake(NEW_CLIENT).await;
    // Send data and vanish before the echo comes back: that output is lost
    // with the socket (or held by the paused agent) and must be resent.
    client.send_data(b"lost in transit").await;
    client.ws.close(None).await.ok();
    client.reconnect(fake.addr, "t2").await;
    assert_eq!(client.read_output(15).await, b"lost in transit");
}

// ----------------------------------------------------------- fault knobs --

#[tokio::test]
async fn drop_fault_loses_frames_and_retransmission_recovers() {
    let lossy = faults(|f| {
        f.to_client.drop = 0.2;
        f.to_agent.drop = 0.2;
    });
    let (fake, _target, mut client) = Fake::ssh_session(lossy).await;
    client.echoes(pattern(20 * 1024)).await;
    let stats = fake.plane().stats();
    assert!(stats.dropped > 0, "{stats:?}");
    assert!(stats.resends > 0, "{stats:?}");
}

#[tokio::test]
async fn duplicate_fault_delivers_agent_messages_twice() {
    let dup = faults(|f| f.to_client.duplicate = 0.5);
    let (fake, _target, mut client) = Fake::ssh_session(dup).await;
    client.echoes(pattern(10 * 1024)).await;
    let distinct: BTreeSet<i64> = client.seen.iter().copied().collect();
    assert!(
        client.seen.len() > distinct.len(),
        "some message came twice"
    );
    assert!(fake.plane().stats().duplicated > 0);
}

#[tokio::test]
async fn reorder_fault_delivers_agent_messages_out_of_order() {
    let reorder = faults(|f| f.to_client.reorder = 0.3);
    let (fake, _target, mut client) = Fake::ssh_session(reorder).await;
    client.echoes(pattern(20 * 1024)).await;
    assert!(
        client.seen.windows(2).any(|w| w[1] < w[0]),
        "a message arrived after its successor: {:?}",
        client.seen
    );
    assert!(fake.plane().stats().reordered > 0);
}

#[tokio::test]
async fn corrupt_digest_fault_is_caught_by_the_client_and_resent() {
    let corrupt = faults(|f| f.to_client.corrupt_digest = 0.2);
    let (fake, _target, mut client) = Fake::ssh_session(corrupt).await;
    client.echoes(pattern(10 * 1024)).await;
    assert!(client
        .events
        .iter()
        .any(|e| matches!(e, Event::Undecodable(FrameError::DigestMismatch))));
    let stats = fake.plane().stats();
    assert!(stats.corrupted > 0 && stats.resends > 0, "{stats:?}");
}

#[tokio::test]
async fn delay_fault_longer_than_the_rto_makes_the_agent_resend() {
    // Acks reach the agent 300 ms late, after its initial 200 ms RTO.
    let slow = faults(|f| f.to_agent.delay_ms = 300);
    let (fake, _target, client) = Fake::ssh_session(slow).await;
    assert!(fake.plane().stats().resends > 0);
    let seq0 = client.seen.iter().filter(|s| **s == 0).count();
    assert!(seq0 >= 2, "HandshakeRequest resent: {:?}", client.seen);
}

#[tokio::test]
async fn cut_after_messages_closes_with_bye_and_resume_continues() {
    let cut = faults(|f| f.cut_after_messages = Some(6));
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, cut).await;
    fake.add_session(SSH_PROPERTIES, &["t1", "t2", "t3", "t4"]);
    let mut client = fake.connect("t1").await;
    client.handshake(NEW_CLIENT).await;
    let close = client.closed().await.expect("a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1000, "Bye")
    );
    client.reconnect(fake.addr, "t2").await;
    client.send_data(b"ok").await;
    assert_eq!(client.read_output(2).await, b"ok");
    let stats = fake.plane().stats();
    assert_eq!((stats.cuts, stats.reconnects), (1, 1), "{stats:?}");
}

#[tokio::test]
async fn cut_every_ms_closes_with_bye() {
    let cut = faults(|f| f.cut_every_ms = Some(50));
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, cut).await;
    fake.add_session(SSH_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    let close = client.closed().await.expect("a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1000, "Bye")
    );
    assert_eq!(fake.plane().stats().cuts, 1);
}

#[tokio::test]
async fn withheld_acks_never_arrive_but_data_still_flows() {
    let mute = faults(|f| f.withhold_acks = true);
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, mute).await;
    fake.add_session(SSH_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    client.next_stream().await;
    client.respond(NEW_CLIENT, 1).await;
    client.next_stream().await;
    client.send_data(b"ping").await;
    assert_eq!(client.read_output(4).await, b"ping");
    assert!(client.acks.is_empty());
    assert!(fake.plane().stats().acks_withheld >= 2);
}

#[tokio::test]
async fn an_unacknowledged_agent_message_is_resent_with_the_same_bytes() {
    let (fake, _target) = Fake::echo(Pacing::Unconstrained, Faults::default()).await;
    fake.add_session(SSH_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    client.send_acks = false;
    client
        .until("a resent HandshakeRequest", |c| c.seen.len() >= 2)
        .await;
    assert_eq!(client.seen[..2], [0, 0]);
    assert!(fake.plane().stats().resends >= 1);
    // Acked now: the handshake proceeds.
    client.send_acks = true;
    let request = client.next_stream().await;
    client.ack(&request).await;
    client.respond(NEW_CLIENT, 1).await;
    let complete = client.next_stream().await;
    assert_eq!(complete.payload_type, payload_type::HANDSHAKE_COMPLETE);
}

#[tokio::test]
async fn remote_host_sessions_dial_the_seeded_address() {
    let (fake, target) = Fake::echo(Pacing::Unconstrained, Faults::default()).await;
    fake.add_session(
        r#"{"host":"db.internal","localPortNumber":"0","portNumber":"5432","type":"LocalPortForwarding"}"#,
        &["t1"],
    );
    let mut client = fake.connect("t1").await;
    client.handshake(OLD_CLIENT).await;
    client.send_data(b"select 1").await;
    assert_eq!(client.read_output(8).await, b"select 1");
    assert_eq!(target.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unused_direction_faults_change_nothing() {
    // A seed with every probability at zero behaves like no faults at all.
    let calm = faults(|f| f.to_client = DirectionFaults::default());
    let (fake, _target) = Fake::echo(Pacing::Realistic, calm).await;
    fake.add_session(SSH_PROPERTIES, &["t1"]);
    let mut client = fake.connect("t1").await;
    client.handshake(NEW_CLIENT).await;
    client.send_data(b"calm").await;
    assert_eq!(client.read_output(4).await, b"calm");
    let stats = fake.plane().stats();
    assert_eq!(
        (
            stats.dropped,
            stats.duplicated,
            stats.reordered,
            stats.corrupted
        ),
        (0, 0, 0, 0)
    );
}

/// Not a test of behaviour: prints echo throughput through the fake for
/// each pacing (`cargo test -p sm-ssh-integration --test data_channel --
/// --ignored --nocapture`). Speed is measured here, never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn measure_echo_throughput() {
    for pacing in [Pacing::Unconstrained, Pacing::Realistic] {
        let (fake, _target) = Fake::echo(pacing, Faults::default()).await;
        fake.add_session(SSH_PROPERTIES, &["t1"]);
        let mut client = fake.connect("t1").await;
        client.handshake(NEW_CLIENT).await;
        let batch = pattern(64 * 1024);
        let total = 4 * 1024 * 1024;
        let start = std::time::Instant::now();
        for _ in 0..total / batch.len() {
            client.send_data(&batch).await;
            assert_eq!(client.read_output(batch.len()).await, batch);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{pacing:?}: {:.2} MB/s echoed (each direction), {} agent resends",
            total as f64 / secs / 1e6,
            fake.plane().stats().resends
        );
    }
}
