//! Property tests: whatever the network does (drop, duplicate, reorder, delay,
//! websocket replaced, publication paused), each side receives exactly the
//! byte stream the other sent. Plus fuzzing of the engine with arbitrary input.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sm_ssh_proxy::channel::ChannelConfig;
use sm_ssh_proxy::frame::{message_type, Frame};
use sm_ssh_proxy::{Connection, EngineConfig, Event};
use support::agent::{service_frame, AgentPeer};

#[derive(Clone, Debug)]
struct Faults {
    drop: f64,
    duplicate: f64,
    max_delay_ms: u64,
    reconnect_every_ms: Option<u64>,
    pause: bool,
}

/// Frames in flight, keyed by delivery time (ties keep their order).
#[derive(Default)]
struct Wire {
    queue: BTreeMap<(Instant, u64), Bytes>,
    counter: u64,
}

impl Wire {
    fn send(&mut self, rng: &mut StdRng, faults: &Faults, now: Instant, bytes: Bytes) {
        if rng.random_bool(faults.drop) {
            return;
        }
        let copies = if rng.random_bool(faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = Duration::from_millis(rng.random_range(0..=faults.max_delay_ms));
            self.counter += 1;
            self.queue
                .insert((now + delay, self.counter), bytes.clone());
        }
    }

    fn due(&mut self, now: Instant) -> Option<Bytes> {
        let (&key, _) = self.queue.first_key_value()?;
        (key.0 <= now).then(|| self.queue.remove(&key).unwrap())
    }

    fn next(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|(k, _)| k.0)
    }
}

struct Outcome {
    to_agent: Vec<u8>,
    to_client: Vec<u8>,
    resends: u64,
}

fn run(seed: u64, up: &[u8], down: &[u8], window: usize, faults: Faults) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut now = start;
    let config = ChannelConfig {
        pacing: None,
        window,
        receive_buffer: 10_000,
    };
    let mut client = Connection::new(
        EngineConfig {
            channel: config.clone(),
            handshake_timeout: Duration::from_secs(3600),
            ..EngineConfig::default()
        },
        now,
    );
    let mut agent = AgentPeer::ssh(now, config);
    let (mut c2a, mut a2c) = (Wire::default(), Wire::default());
    let (mut up_sent, mut down_sent) = (0, 0);
    let mut received = Vec::new();
    let mut next_reconnect = faults
        .reconnect_every_ms
        .map(|ms| start + Duration::from_millis(ms));
    let mut paused_until: Option<Instant> = None;
    // Bounded in simulated time, so that a stall fails fast instead of spinning.
    while now < start + Duration::from_secs(300) {
        if client.is_established() {
            let n = rng.random_range(1..=3000).min(up.len() - up_sent);
            up_sent += client.send_data(&up[up_sent..up_sent + n]);
        }
        if agent.established {
            let n = rng.random_range(1..=3000).min(down.len() - down_sent);
            down_sent += agent.send_data(&down[down_sent..down_sent + n]);
        }
        while let Some(bytes) = client.poll_transmit(now) {
            c2a.send(&mut rng, &faults, now, bytes);
        }
        while let Some(bytes) = agent.poll_transmit(now) {
            a2c.send(&mut rng, &faults, now, bytes);
        }
        while let Some(bytes) = c2a.due(now) {
            agent.handle(now, &bytes);
        }
        while let Some(bytes) = a2c.due(now) {
            client.handle_frame(now, &bytes);
        }
        while let Some(event) = client.poll_event() {
            match event {
                Event::Data(bytes) => received.extend_from_slice(&bytes),
                Event::HandshakeComplete { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        if faults.pause && paused_until.is_none() && rng.random_bool(0.001) {
            client.handle_frame(now, &service_frame(message_type::PAUSE_PUBLICATION, b""));
            paused_until = Some(now + Duration::from_millis(rng.random_range(1..200)));
        }
        if paused_until.is_some_and(|t| now >= t) {
            paused_until = None;
            client.handle_frame(now, &service_frame(message_type::START_PUBLICATION, b""));
        }
        if next_reconnect.is_some_and(|t| now >= t) {
            // The websocket dies: everything in flight is lost, both ends resume.
            c2a.queue.clear();
            a2c.queue.clear();
            client.on_reconnected();
            agent.channel.on_reconnected();
            next_reconnect = Some(now + Duration::from_millis(faults.reconnect_every_ms.unwrap()));
        }
        let done = up_sent == up.len()
            && down_sent == down.len()
            && agent.received.len() == up.len()
            && received.len() == down.len()
            && client.is_flushed()
            && agent.channel.is_flushed();
        if done {
            return Outcome {
                to_agent: agent.received,
                to_client: received,
                resends: client.stats().resends,
            };
        }
        let mut wake = now + Duration::from_millis(50);
        for t in [
            c2a.next(),
            a2c.next(),
            client.poll_timeout(now),
            agent.channel.poll_timeout(now),
            paused_until,
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(t);
        }
        now = wake.max(now + Duration::from_micros(100));
    }
    panic!(
        "no progress in 300 simulated seconds: up {}/{} down {}/{} (agent got {}, client got {})",
        up_sent,
        up.len(),
        down_sent,
        down.len(),
        agent.received.len(),
        received.len()
    );
}

fn faults() -> impl Strategy<Value = Faults> {
    (
        0.0..0.3f64,
        0.0..0.3f64,
        0u64..80,
        proptest::option::of(300u64..3000),
        any::<bool>(),
    )
        .prop_map(
            |(drop, duplicate, max_delay_ms, reconnect_every_ms, pause)| Faults {
                drop,
                duplicate,
                max_delay_ms,
                reconnect_every_ms,
                pause,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn delivered_stream_equals_sent_stream(
        seed in any::<u64>(),
        up in proptest::collection::vec(any::<u8>(), 0..20_000),
        down in proptest::collection::vec(any::<u8>(), 0..20_000),
        window in 1usize..64,
        faults in faults(),
    ) {
        let outcome = run(seed, &up, &down, window, faults);
        prop_assert_eq!(outcome.to_agent, up);
        prop_assert_eq!(outcome.to_client, down);
    }
}

#[test]
fn heavy_loss_is_recovered_by_resending() {
    let up: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let down: Vec<u8> = (0..200_000u32).map(|i| (i * 13) as u8).collect();
    let outcome = run(
        7,
        &up,
        &down,
        256,
        Faults {
            drop: 0.25,
            duplicate: 0.1,
            max_delay_ms: 40,
            reconnect_every_ms: Some(700),
            pause: true,
        },
    );
    assert_eq!(outcome.to_agent, up);
    assert_eq!(outcome.to_client, down);
    assert!(outcome.resends > 0);
}

/// A structurally valid frame with arbitrary fields: what a confused or hostile
/// peer could send.
fn arbitrary_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(message_type::OUTPUT_STREAM_DATA),
            Just(message_type::ACKNOWLEDGE),
            Just(message_type::CHANNEL_CLOSED),
            Just(message_type::PAUSE_PUBLICATION),
            Just(message_type::START_PUBLICATION),
            Just("mystery"),
        ],
        -3i64..40,
        0u32..14,
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(|(kind, seq, pt, payload, json_ack)| {
            let payload = if json_ack {
                format!(
                    r#"{{"AcknowledgedMessageType":"input_stream_data","AcknowledgedMessageId":"x","AcknowledgedMessageSequenceNumber":{seq},"IsSequentialMessage":true}}"#
                )
                .into_bytes()
            } else {
                payload
            };
            Frame::new(kind, 1, seq, 0, pt, payload).encode().to_vec()
        })
}

/// Fuzz cases per run: 256 in `cargo test`; set `SM_SSH_FUZZ_CASES` for a long run.
fn fuzz_cases() -> u32 {
    std::env::var("SM_SSH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    /// The engine never panics and keeps its invariants on arbitrary input.
    #[test]
    fn engine_survives_arbitrary_frames(
        inputs in proptest::collection::vec(
            prop_oneof![arbitrary_frame(), proptest::collection::vec(any::<u8>(), 0..300)],
            0..40,
        ),
        writes in proptest::collection::vec(0usize..5000, 0..10),
    ) {
        let start = Instant::now();
        let mut client = Connection::new(EngineConfig::default(), start);
        let mut now = start;
        for (i, input) in inputs.iter().enumerate() {
            client.handle_frame(now, input);
            if let Some(&n) = writes.get(i) {
                client.send_data(&vec![0u8; n]);
            }
            while let Some(bytes) = client.poll_transmit(now) {
                prop_assert!(Frame::decode(&bytes).is_ok(), "the engine only writes valid frames");
            }
            while client.poll_event().is_some() {}
            if let Some(t) = client.poll_timeout(now) {
                prop_assert!(t >= now || t + Duration::from_secs(3600) > now);
                now = now.max(t);
                client.handle_timeout(now);
            }
            prop_assert!(client.channel().unacked() <= EngineConfig::default().channel.window + 2);
        }
    }
}
