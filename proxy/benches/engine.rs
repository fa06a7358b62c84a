//! Messages per second through the sans-I/O engine on one core: a client
//! `Connection` and an agent-side `Channel` exchanging 1024-byte Output
//! messages, each acknowledged, everything encoded, decoded and digested.
//! Run: `cargo bench -p sm-ssh-proxy --bench engine`

#[path = "../tests/support/agent.rs"]
#[allow(dead_code)] // the bench uses only part of the test agent
mod agent;

use std::time::Instant;

use agent::AgentPeer;
use sm_ssh_proxy::channel::ChannelConfig;
use sm_ssh_proxy::{Connection, EngineConfig, Event};

const MESSAGES: usize = 400_000;

fn config() -> ChannelConfig {
    ChannelConfig {
        pacing: None,
        window: 4096,
        receive_buffer: 10_000,
    }
}

fn pair(now: Instant) -> (Connection, AgentPeer) {
    let mut client = Connection::new(
        EngineConfig {
            channel: config(),
            ..EngineConfig::default()
        },
        now,
    );
    let mut agent = AgentPeer::ssh(now, config());
    while !client.is_established() {
        while let Some(b) = client.poll_transmit(now) {
            agent.handle(now, &b);
        }
        while let Some(b) = agent.poll_transmit(now) {
            client.handle_frame(now, &b);
        }
    }
    while client.poll_event().is_some() {}
    (client, agent)
}

/// Client → agent: data messages one way, acks the other.
fn upload() -> f64 {
    let now = Instant::now();
    let (mut client, mut agent) = pair(now);
    let chunk = vec![0x33u8; 1024 * 64];
    let start = Instant::now();
    let mut received = 0;
    while received < MESSAGES * 1024 {
        client.send_data(&chunk);
        while let Some(b) = client.poll_transmit(now) {
            agent.handle(now, &b);
        }
        while let Some(b) = agent.poll_transmit(now) {
            client.handle_frame(now, &b);
        }
        received += agent.received.len();
        agent.received.clear();
    }
    rate(start)
}

/// Agent → client: data messages to the client, which acks each and emits events.
fn download() -> f64 {
    let now = Instant::now();
    let (mut client, mut agent) = pair(now);
    let chunk = vec![0x44u8; 1024 * 64];
    let start = Instant::now();
    let mut received = 0;
    while received < MESSAGES * 1024 {
        agent.send_data(&chunk);
        while let Some(b) = agent.poll_transmit(now) {
            client.handle_frame(now, &b);
        }
        while let Some(event) = client.poll_event() {
            if let Event::Data(bytes) = event {
                received += bytes.len();
            }
        }
        while let Some(b) = client.poll_transmit(now) {
            agent.handle(now, &b);
        }
    }
    rate(start)
}

fn rate(start: Instant) -> f64 {
    MESSAGES as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    for (name, run) in [
        ("client -> agent", upload as fn() -> f64),
        ("agent -> client", download),
    ] {
        let best = (0..3).map(|_| run()).fold(0.0, f64::max);
        println!(
            "{name}: {best:.0} messages/s ({:.0} MB/s of payload), each encoded, digested, decoded and acknowledged",
            best * 1024.0 / 1e6
        );
    }
}
