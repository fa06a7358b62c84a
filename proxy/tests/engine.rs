//! The sans-I/O engine against a minimal agent and hand-made frames: every
//! receiver rule, retransmission, Karn's rule, the window, publication control,
//! the handshake variants and resume.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use sm_ssh_proxy::channel::{ChannelConfig, MAX_PAYLOAD, MAX_RESEND_WAIT, PAUSE_LIMIT};
use sm_ssh_proxy::crypto::KeyError;
use sm_ssh_proxy::frame::{header_flags, message_type, payload_type, Frame};
use sm_ssh_proxy::payload::{flag, Acknowledge};
use sm_ssh_proxy::{Connection, EngineConfig, EngineError, Event, SessionMode};
use support::agent::{channel_closed, service_frame, AgentPeer};

fn unpaced() -> ChannelConfig {
    ChannelConfig {
        pacing: None,
        ..ChannelConfig::default()
    }
}

fn client(now: Instant, channel: ChannelConfig) -> Connection {
    Connection::new(
        EngineConfig {
            channel,
            ..EngineConfig::default()
        },
        now,
    )
}

/// Moves frames both ways without loss until neither side has anything to say.
fn exchange(now: Instant, client: &mut Connection, agent: &mut AgentPeer) {
    loop {
        let mut moved = false;
        while let Some(bytes) = client.poll_transmit(now) {
            agent.handle(now, &bytes);
            moved = true;
        }
        while let Some(bytes) = agent.poll_transmit(now) {
            client.handle_frame(now, &bytes);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn events(client: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| client.poll_event()).collect()
}

fn established(now: Instant, channel: ChannelConfig) -> (Connection, AgentPeer) {
    let mut c = client(now, channel);
    let mut agent = AgentPeer::ssh(now, unpaced());
    exchange(now, &mut c, &mut agent);
    assert!(c.is_established());
    events(&mut c);
    (c, agent)
}

fn agent_frame(seq: i64, pt: u32, payload: &[u8]) -> Frame {
    Frame::new(
        message_type::OUTPUT_STREAM_DATA,
        1_700_000_000_000,
        seq,
        0,
        pt,
        payload.to_vec(),
    )
}

fn decode_all(client: &mut Connection, now: Instant) -> Vec<Frame> {
    std::iter::from_fn(|| client.poll_transmit(now))
        .map(|b| Frame::decode(&b).unwrap())
        .collect()
}

fn acked_seqs(frames: &[Frame]) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f.message_type == message_type::ACKNOWLEDGE)
        .map(|f| {
            serde_json::from_slice::<Acknowledge>(&f.payload)
                .unwrap()
                .sequence_number
        })
        .collect()
}

fn handshake_request(properties: Value, extra: Option<Value>) -> Vec<u8> {
    let mut actions = vec![
        json!({"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":properties}}),
    ];
    actions.extend(extra);
    serde_json::to_vec(&json!({"AgentVersion":"3.3.1802.0","RequestedClientActions":actions}))
        .unwrap()
}

#[test]
fn ssh_handshake_then_data_both_ways() {
    let now = Instant::now();
    let mut c = client(now, unpaced());
    let mut agent = AgentPeer::ssh(now, unpaced());
    assert_eq!(
        c.send_data(b"too early"),
        0,
        "no data before HandshakeComplete"
    );
    exchange(now, &mut c, &mut agent);
    assert_eq!(
        events(&mut c),
        vec![Event::HandshakeComplete {
            mode: SessionMode::Stream,
            agent_version: "3.3.1802.0".into(),
            customer_message: String::new()
        }]
    );
    let response = agent.response.clone().unwrap();
    assert_eq!(response.client_version, "1.2.764.0");
    assert_eq!(response.processed_client_actions[0].action_status, 1);
    assert_eq!(c.send_data(b"SSH-2.0-client\r\n"), 16);
    agent.send_data(b"SSH-2.0-server\r\n");
    exchange(now, &mut c, &mut agent);
    assert_eq!(agent.received, b"SSH-2.0-client\r\n");
    assert_eq!(
        events(&mut c),
        vec![Event::Data(Bytes::from_static(b"SSH-2.0-server\r\n"))]
    );
    assert_eq!(agent.early, 0);
    assert!(c.is_flushed());
}

#[test]
fn every_stream_message_is_acked_at_once_with_its_id() {
    let now = Instant::now();
    let mut c = client(now, unpaced());
    let request = agent_frame(
        0,
        payload_type::HANDSHAKE_REQUEST,
        &handshake_request(json!({"portNumber":"22"}), None),
    );
    c.handle_frame(now, &request.encode());
    let out = decode_all(&mut c, now);
    let ack = &out[0];
    assert_eq!(ack.message_type, message_type::ACKNOWLEDGE);
    assert_eq!(
        (ack.sequence_number, ack.flags, ack.payload_type),
        (0, header_flags::ACK, payload_type::NONE)
    );
    let body: Acknowledge = serde_json::from_slice(&ack.payload).unwrap();
    assert_eq!(body.message_id, request.message_id.to_string());
    assert_eq!(body.message_type, message_type::OUTPUT_STREAM_DATA);
    assert_eq!(body.sequence_number, 0);
    // Then the HandshakeResponse, our seq 0.
    assert_eq!(out[1].message_type, message_type::INPUT_STREAM_DATA);
    assert_eq!(
        (out[1].sequence_number, out[1].payload_type),
        (0, payload_type::HANDSHAKE_RESPONSE)
    );
}

#[test]
fn duplicates_are_reacked_and_not_delivered_twice() {
    let now = Instant::now();
    let (mut c, _agent) = established(now, unpaced());
    let data = agent_frame(2, payload_type::OUTPUT, b"once").encode();
    c.handle_frame(now, &data);
    c.handle_frame(now, &data);
    assert_eq!(acked_seqs(&decode_all(&mut c, now)), vec![2, 2]);
    assert_eq!(
        events(&mut c),
        vec![Event::Data(Bytes::from_static(b"once"))]
    );
    assert_eq!(c.stats().duplicates, 1);
}

#[test]
fn out_of_order_messages_are_acked_buffered_and_delivered_in_order() {
    let now = Instant::now();
    let (mut c, _agent) = established(now, unpaced());
    for seq in [4, 3, 5] {
        c.handle_frame(
            now,
            &agent_frame(seq, payload_type::OUTPUT, format!("{seq}").as_bytes()).encode(),
        );
    }
    assert!(events(&mut c).is_empty(), "nothing until seq 2 arrives");
    c.handle_frame(now, &agent_frame(4, payload_type::OUTPUT, b"4").encode());
    c.handle_frame(now, &agent_frame(2, payload_type::OUTPUT, b"2").encode());
    assert_eq!(acked_seqs(&decode_all(&mut c, now)), vec![4, 3, 5, 4, 2]);
    let data: Vec<Event> = events(&mut c);
    let text: String = data
        .iter()
        .map(|e| match e {
            Event::Data(b) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(text, "2345");
    assert_eq!(c.channel().expected_seq(), 6);
}

#[test]
fn after_the_rto_only_the_oldest_message_is_resent_and_the_timeout_doubles() {
    let now = Instant::now();
    let (mut c, _agent) = established(now, unpaced());
    let rto = c.channel().current_rto();
    c.send_data(&[1u8; 3000]);
    let first: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(now)).collect();
    assert_eq!(
        first.len(),
        3,
        "3000 bytes are three messages of at most 1024"
    );
    assert!(first
        .iter()
        .all(|b| Frame::decode(b).unwrap().payload.len() <= MAX_PAYLOAD));
    assert_eq!(c.poll_timeout(now), Some(now + rto));
    assert!(c
        .poll_transmit(now + rto - Duration::from_millis(1))
        .is_none());
    let resent: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(now + rto)).collect();
    assert_eq!(
        resent,
        first[..1],
        "the oldest alone, same bytes, same seq and MessageId"
    );
    // Still no ack: the next oldest goes after twice the RTO (counted from
    // its own transmission), the one after that after four times.
    assert_eq!(c.poll_timeout(now + rto), Some(now + 2 * rto));
    assert_eq!(c.poll_transmit(now + 2 * rto).as_ref(), Some(&first[1]));
    assert_eq!(c.poll_timeout(now + 2 * rto), Some(now + 4 * rto));
    assert_eq!(c.poll_transmit(now + 4 * rto).as_ref(), Some(&first[2]));
    assert_eq!(c.stats().resends, 3);
}

#[test]
fn after_an_rto_an_ack_of_newer_data_shows_the_rest_of_the_flight_lost() {
    let now = Instant::now();
    let (mut c, mut agent) = established(now, unpaced());
    let rto = c.channel().current_rto();
    c.send_data(&[2u8; 3000]);
    let first: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(now)).collect();
    let probe = c.poll_transmit(now + rto).unwrap();
    // The resend's ack alone proves nothing (it may be the original's) ...
    let later = now + rto + Duration::from_millis(20);
    agent.handle(later, &probe);
    c.handle_frame(later, &agent.poll_transmit(later).unwrap());
    assert!(c.poll_transmit(later).is_none());
    // ... an ack of a message first sent after it does.
    c.send_data(b"new");
    let fresh = c.poll_transmit(later).unwrap();
    let after = later + Duration::from_millis(20);
    agent.handle(after, &fresh);
    c.handle_frame(after, &agent.poll_transmit(after).unwrap());
    let rest: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(after)).collect();
    assert_eq!(
        rest,
        first[1..],
        "lost: sent before a message that got through"
    );
}

#[test]
fn a_message_lost_among_acked_ones_is_resent_before_its_rto() {
    let now = Instant::now();
    let (mut c, mut agent) = established(now, unpaced());
    let ms = Duration::from_millis;
    let mut sent = Vec::new();
    for (i, at) in [now, now + ms(5), now + ms(10)].into_iter().enumerate() {
        c.send_data(&[i as u8; 10]);
        sent.push((at, c.poll_transmit(at).unwrap()));
    }
    // The middle one is lost; the others arrive and are acked 1 ms later.
    for (at, bytes) in [&sent[0], &sent[2]] {
        agent.handle(*at + ms(1), bytes);
        while let Some(ack) = agent.poll_transmit(*at + ms(1)) {
            c.handle_frame(*at + ms(1), &ack);
        }
    }
    let at = now + ms(11);
    assert!(at < now + ms(5) + c.channel().current_rto());
    assert_eq!(c.poll_transmit(at), Some(sent[1].1.clone()));
    assert_eq!(c.stats().resends, 1);
}

#[test]
fn acks_that_all_come_late_cost_one_resend_not_the_flight() {
    let now = Instant::now();
    let (mut c, mut agent) = established(now, unpaced());
    c.send_data(&[3u8; 50 * MAX_PAYLOAD]);
    let flight: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(now)).collect();
    assert_eq!(flight.len(), 50);
    // The service stalls for 300 ms, past the RTO, then delivers everything in order.
    let stall = now + Duration::from_millis(300);
    let resent: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(stall)).collect();
    assert_eq!(resent, flight[..1]);
    for bytes in flight.iter().chain(&resent) {
        agent.handle(stall, bytes);
    }
    exchange(stall, &mut c, &mut agent);
    assert!(c.is_flushed());
    assert_eq!(c.stats().resends, 1);
    assert_eq!(agent.received, vec![3u8; 50 * MAX_PAYLOAD]);
}

#[test]
fn only_messages_sent_once_feed_the_rtt_estimate() {
    let now = Instant::now();
    let (mut c, mut agent) = established(now, unpaced());
    let before = c.channel().rto().clone();
    c.send_data(b"a");
    let original = c.poll_transmit(now).unwrap();
    let rto = c.channel().current_rto();
    let resent = c.poll_transmit(now + rto).unwrap();
    assert_eq!(original, resent);
    agent.handle(now + rto, &resent);
    let ack = agent.poll_transmit(now + rto).unwrap();
    c.handle_frame(now + rto + Duration::from_millis(5), &ack);
    assert_eq!(
        c.channel().rto(),
        &before,
        "Karn: no sample from a retransmitted message"
    );
    assert!(c.is_flushed());
    c.send_data(b"b");
    let fresh = c.poll_transmit(now).unwrap();
    agent.handle(now, &fresh);
    c.handle_frame(
        now + Duration::from_millis(30),
        &agent.poll_transmit(now).unwrap(),
    );
    assert_ne!(c.channel().rto(), &before);
    assert!(c.channel().rto().srtt() < before.srtt());
}

#[test]
fn the_window_applies_backpressure_and_never_evicts() {
    let now = Instant::now();
    let (mut c, mut agent) = established(
        now,
        ChannelConfig {
            window: 4,
            ..unpaced()
        },
    );
    let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let accepted = c.send_data(&data);
    assert_eq!(accepted, 4 * MAX_PAYLOAD);
    assert!(!c.can_send());
    assert_eq!(c.send_data(&data[accepted..]), 0);
    // Lose everything once: still nothing evicted, and after acks there is room.
    let _lost: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(now)).collect();
    let later = now + Duration::from_secs(1);
    let mut offset = accepted;
    let mut t = later;
    while offset < data.len() || !c.is_flushed() {
        exchange(t, &mut c, &mut agent);
        offset += c.send_data(&data[offset..]);
        t += Duration::from_secs(1);
    }
    assert_eq!(agent.received, data);
}

#[test]
fn small_writes_are_coalesced_until_sent() {
    let now = Instant::now();
    let (mut c, _agent) = established(now, unpaced());
    for _ in 0..10 {
        c.send_data(b"abc");
    }
    let frames = decode_all(&mut c, now);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].payload.len(), 30);
}

#[test]
fn pause_publication_holds_data_and_start_publication_releases_it() {
    let now = Instant::now();
    let (mut c, mut agent) = established(now, unpaced());
    c.handle_frame(now, &service_frame(message_type::PAUSE_PUBLICATION, b""));
    c.send_data(b"held");
    assert!(c.poll_transmit(now).is_none());
    assert_eq!(c.poll_timeout(now), Some(now + PAUSE_LIMIT));
    // Acks still flow while paused.
    c.handle_frame(now, &agent_frame(2, payload_type::OUTPUT, b"x").encode());
    c.handle_frame(now, &service_frame(message_type::PAUSE_PUBLICATION, b""));
    let out = decode_all(&mut c, now);
    assert_eq!(acked_seqs(&out), vec![2]);
    assert_eq!(out.len(), 1);
    c.handle_frame(now, &service_frame(message_type::START_PUBLICATION, b""));
    exchange(now, &mut c, &mut agent);
    assert_eq!(agent.received, b"held");
}

#[test]
fn a_pause_without_start_publication_lapses_by_itself() {
    let now = Instant::now();
    let (mut c, mut agent) = established(now, unpaced());
    c.handle_frame(now, &service_frame(message_type::PAUSE_PUBLICATION, b""));
    c.send_data(b"not stuck");
    let lapse = now + PAUSE_LIMIT;
    assert!(c.poll_transmit(lapse - Duration::from_millis(1)).is_none());
    assert_eq!(c.poll_timeout(now), Some(lapse));
    exchange(lapse, &mut c, &mut agent);
    assert_eq!(agent.received, b"not stuck");
}

#[test]
fn publication_frames_are_exempt_from_validation() {
    let now = Instant::now();
    let (mut c, mut agent) = established(now, unpaced());
    // CreatedDate 0 and a payload whose digest does not match: the plugin
    // skips validation for these two types (messageparser.go).
    let odd = |kind: &str| {
        let mut bytes = Frame::new(kind, 1, 0, 0, payload_type::NONE, b"{}".to_vec())
            .encode()
            .to_vec();
        bytes[40..48].copy_from_slice(&0u64.to_be_bytes());
        bytes[80] ^= 0xff;
        bytes
    };
    c.handle_frame(now, &odd(message_type::PAUSE_PUBLICATION));
    c.send_data(b"held");
    assert!(c.poll_transmit(now).is_none(), "paused");
    c.handle_frame(now, &odd(message_type::START_PUBLICATION));
    exchange(now, &mut c, &mut agent);
    assert_eq!(agent.received, b"held");
    assert_eq!(c.stats().undecodable + c.stats().digest_drops, 0);
}

#[test]
fn resends_back_off_but_never_wait_more_than_the_cap() {
    let now = Instant::now();
    let (mut c, _agent) = established(now, unpaced());
    c.send_data(b"lost forever");
    let mut at = now;
    assert!(c.poll_transmit(at).is_some());
    let mut waits = Vec::new();
    for _ in 0..12 {
        let next = c.poll_timeout(at).expect("a resend is due later");
        waits.push(next - at);
        at = next;
        assert!(c.poll_transmit(at).is_some(), "resent at its deadline");
    }
    assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
    assert_eq!(*waits.last().unwrap(), MAX_RESEND_WAIT, "{waits:?}");
    assert!(waits.iter().all(|w| *w <= MAX_RESEND_WAIT), "{waits:?}");
}

#[test]
fn channel_closed_output_survives_a_malformed_body() {
    let now = Instant::now();
    let (mut c, _agent) = established(now, unpaced());
    let body = json!({"Output": "Idle timeout", "SchemaVersion": "one", "CreatedDate": 5, "MessageId": null});
    c.handle_frame(
        now,
        &service_frame(
            message_type::CHANNEL_CLOSED,
            &serde_json::to_vec(&body).unwrap(),
        ),
    );
    assert_eq!(
        events(&mut c),
        vec![Event::Closed {
            output: "Idle timeout".into()
        }]
    );
}

#[test]
fn bad_digests_and_garbage_are_dropped_and_counted() {
    let now = Instant::now();
    let (mut c, _agent) = established(now, unpaced());
    let mut bad = agent_frame(2, payload_type::OUTPUT, b"evil")
        .encode()
        .to_vec();
    bad[90] ^= 1;
    c.handle_frame(now, &bad);
    c.handle_frame(now, b"not a frame at all");
    assert!(c.poll_transmit(now).is_none(), "no ack for a dropped frame");
    assert!(events(&mut c).is_empty());
    assert_eq!((c.stats().digest_drops, c.stats().undecodable), (1, 1));
}

#[test]
fn channel_closed_ends_the_session_with_its_output() {
    let now = Instant::now();
    let (mut c, _agent) = established(now, unpaced());
    c.handle_frame(now, &channel_closed("Session terminated by alice"));
    assert_eq!(
        events(&mut c),
        vec![Event::Closed {
            output: "Session terminated by alice".into()
        }]
    );
    assert!(c.is_over());
    assert_eq!(c.send_data(b"x"), 0);
}

#[test]
fn connect_to_port_error_is_reported() {
    let now = Instant::now();
    let (mut c, _agent) = established(now, unpaced());
    c.handle_frame(
        now,
        &agent_frame(
            2,
            payload_type::FLAG,
            &flag::CONNECT_TO_PORT_ERROR.to_be_bytes(),
        )
        .encode(),
    );
    assert_eq!(events(&mut c), vec![Event::ConnectToPortError]);
    assert!(!c.is_over(), "only the current stream fails");
}

#[test]
fn flags_follow_the_data_queued_before_them() {
    let now = Instant::now();
    let (mut c, mut agent) = established(now, unpaced());
    c.send_data(b"last words");
    c.send_flag(flag::TERMINATE_SESSION);
    let frames = decode_all(&mut c, now);
    assert_eq!(frames[0].payload_type, payload_type::OUTPUT);
    assert_eq!(frames[1].payload_type, payload_type::FLAG);
    assert_eq!(frames[1].sequence_number, frames[0].sequence_number + 1);
    for f in &frames {
        agent.handle(now, &f.encode());
    }
    assert_eq!(agent.flags, vec![flag::TERMINATE_SESSION]);
}

#[test]
fn kms_request_is_refused_with_status_unsupported() {
    let now = Instant::now();
    let mut c = client(now, unpaced());
    let request = handshake_request(
        json!({"portNumber":"22"}),
        Some(
            json!({"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"k","Challenge":"AA=="}}),
        ),
    );
    c.handle_frame(
        now,
        &agent_frame(0, payload_type::HANDSHAKE_REQUEST, &request).encode(),
    );
    assert_eq!(
        events(&mut c),
        [Event::DataKeyNeeded {
            key_id: "k".to_owned()
        }]
    );
    c.provide_data_key(Err(KeyError::Unsupported(
        "KMS encryption is not available".to_owned(),
    )));
    let frames = decode_all(&mut c, now);
    let response: Value = serde_json::from_slice(&frames[1].payload).unwrap();
    assert_eq!(response["ProcessedClientActions"][1]["ActionStatus"], 3);
    match &events(&mut c)[..] {
        [Event::Failed(EngineError::Unsupported(why))] => assert!(why.contains("KMS"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn port_forwarding_handshake_selects_mux() {
    let now = Instant::now();
    let mut c = client(now, unpaced());
    let mut agent = AgentPeer::new(
        now,
        unpaced(),
        json!({"localPortNumber":"0","portNumber":"80","type":"LocalPortForwarding"}),
    );
    exchange(now, &mut c, &mut agent);
    assert_eq!(c.mode(), Some(SessionMode::MuxPort));
}

#[test]
fn no_handshake_within_the_timeout_fails() {
    let now = Instant::now();
    let mut c = client(now, unpaced());
    let deadline = c.poll_timeout(now).unwrap();
    assert_eq!(deadline, now + EngineConfig::default().handshake_timeout);
    c.handle_timeout(deadline - Duration::from_millis(1));
    assert!(events(&mut c).is_empty());
    c.handle_timeout(deadline);
    assert!(matches!(
        &events(&mut c)[..],
        [Event::Failed(EngineError::HandshakeTimeout(_))]
    ));
}

#[test]
fn after_a_reconnect_everything_in_flight_is_resent_at_once() {
    let now = Instant::now();
    let (mut c, mut agent) = established(now, unpaced());
    c.send_data(&[7u8; 2048]);
    let lost: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(now)).collect();
    assert_eq!(lost.len(), 2);
    c.handle_frame(now, &service_frame(message_type::PAUSE_PUBLICATION, b""));
    c.on_reconnected();
    let later = now + Duration::from_millis(1);
    let resent: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(later)).collect();
    assert_eq!(resent, lost, "before the RTO, identical bytes");
    for bytes in &resent {
        agent.handle(later, bytes);
    }
    exchange(later, &mut c, &mut agent);
    assert_eq!(agent.received, vec![7u8; 2048]);
    assert!(c.is_flushed());
}

#[test]
fn pacing_limits_the_message_rate() {
    let now = Instant::now();
    let (mut c, _agent) = established(
        now,
        ChannelConfig {
            pacing: Some(100),
            ..ChannelConfig::default()
        },
    );
    c.send_data(&vec![0u8; 50 * MAX_PAYLOAD]);
    // The handshake used one token of the burst of 10.
    let burst = std::iter::from_fn(|| c.poll_transmit(now)).count();
    assert_eq!(burst, 9);
    let next = c.poll_timeout(now).unwrap();
    assert!(
        next > now && next <= now + Duration::from_millis(11),
        "{:?}",
        next - now
    );
    assert!(c.poll_transmit(next).is_some());
}

/// A service that relays the client's frames 5% slower than the client's
/// pace: without a flight limit its queue grows to the whole window (about
/// 2 s), past the 1 s RTO cap, and every message goes twice.
#[test]
fn acks_queued_at_a_slower_service_do_not_turn_into_resends() {
    let start = Instant::now();
    let (mut c, mut agent) = established(start, ChannelConfig::default());
    let slot = Duration::from_secs(1) / 950;
    let mut queue: std::collections::VecDeque<Bytes> = Default::default();
    let mut next_slot = start;
    let chunk = vec![7u8; 64 * MAX_PAYLOAD];
    let seconds = 20;
    for ms in 0..seconds * 1000 {
        let now = start + Duration::from_millis(ms);
        while c.send_data(&chunk) == chunk.len() {}
        queue.extend(std::iter::from_fn(|| c.poll_transmit(now)));
        while next_slot <= now {
            next_slot += slot;
            if let Some(bytes) = queue.pop_front() {
                agent.handle(now, &bytes);
            }
        }
        while let Some(bytes) = agent.poll_transmit(now) {
            c.handle_frame(now, &bytes);
        }
    }
    let delivered = agent.received.len() / MAX_PAYLOAD;
    let resends = c.stats().resends;
    assert!(
        resends < 20,
        "{resends} resends for {delivered} messages delivered"
    );
    // Every slot the service offered carried new data.
    assert!(delivered as u64 > 950 * seconds * 98 / 100, "{delivered}");
}

#[test]
fn a_message_both_resent_after_a_reconnect_and_found_lost_goes_once() {
    let now = Instant::now();
    let (mut c, mut agent) = established(now, unpaced());
    let ms = Duration::from_millis;
    c.send_data(&[4u8; 2048]);
    let early: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(now)).collect();
    c.send_data(b"late");
    let late = c.poll_transmit(now + ms(10)).unwrap();
    c.on_reconnected();
    // The late message got through: the two early ones are found lost too.
    agent.handle(now + ms(11), &late);
    c.handle_frame(now + ms(11), &agent.poll_transmit(now + ms(11)).unwrap());
    let resent: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit(now + ms(11))).collect();
    assert_eq!(resent, early, "each once");
    assert_eq!(c.stats().resends, 2);
}
