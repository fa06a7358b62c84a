//! One direction of the relay through the fake MGS: seeded faults (drop,
//! duplicate, reorder, corrupt digest), a fixed delay, then the rate ceiling.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};

use super::pacing::RateLimiter;
use super::Stats;
use crate::world::DirectionFaults;

/// How long a frame held back for reordering waits for a successor before it
/// goes out anyway.
const REORDER_HOLD: Duration = Duration::from_millis(20);
/// Offset of the payload digest in a frame.
const DIGEST_OFFSET: usize = 80;
/// Offset of the payload in a frame written with HeaderLength 116.
const PAYLOAD_OFFSET: usize = 120;

/// What a relayed websocket message is, as far as MGS cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `input_stream_data` / `output_stream_data`, relayed end to end.
    Stream,
    /// `acknowledge`, relayed end to end.
    Ack,
    /// Originated by MGS itself (`channel_closed`, publication messages); never faulted.
    Service,
}

impl Kind {
    /// Classifies a binary message by its MessageType field.
    pub(crate) fn of(bytes: &[u8]) -> Kind {
        let name = bytes.get(4..36).unwrap_or_default();
        let name = std::str::from_utf8(name).unwrap_or_default();
        match name.trim_matches('\0').trim() {
            "input_stream_data" | "output_stream_data" => Kind::Stream,
            "acknowledge" => Kind::Ack,
            _ => Kind::Service,
        }
    }
}

/// One message on its way through MGS.
#[derive(Clone, Debug)]
pub(crate) struct Relayed {
    pub bytes: Bytes,
    pub kind: Kind,
    /// The session is over once this one is delivered: the socket closes after it.
    pub last: bool,
}

impl Relayed {
    pub(crate) fn new(bytes: Bytes) -> Relayed {
        let kind = Kind::of(&bytes);
        Relayed {
            bytes,
            kind,
            last: false,
        }
    }
}

/// Which way a lane runs, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    ToAgent,
    ToClient,
}

pub(crate) struct Lane {
    faults: DirectionFaults,
    rng: StdRng,
    delay: Duration,
    ceiling: Option<RateLimiter>,
    direction: Direction,
    stats: Arc<Stats>,
}

impl Lane {
    pub(crate) fn new(
        faults: DirectionFaults,
        seed: u64,
        extra_latency_ms: u64,
        ceiling: Option<RateLimiter>,
        direction: Direction,
        stats: Arc<Stats>,
    ) -> Lane {
        let salt = match direction {
            Direction::ToAgent => 0x5eed_a6e7,
            Direction::ToClient => 0x5eed_c11e,
        };
        Lane {
            delay: Duration::from_millis(faults.delay_ms + extra_latency_ms),
            faults,
            rng: StdRng::seed_from_u64(seed ^ salt),
            ceiling,
            direction,
            stats,
        }
    }

    /// Relays everything `rx` yields into `sink` until `rx` closes or the
    /// sink refuses (returns false).
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Relayed>,
        mut sink: impl FnMut(Relayed) -> bool,
    ) {
        let mut held: Option<Relayed> = None;
        let mut delayed: VecDeque<(Instant, Relayed)> = VecDeque::new();
        let mut open = true;
        while open || held.is_some() || !delayed.is_empty() {
            let due = delayed.front().map(|(at, _)| *at);
            let ready = tokio::select! {
                message = rx.recv(), if open => match message {
                    Some(message) => self.inject(message, &mut held),
                    None => { open = false; held.take().into_iter().collect() }
                },
                _ = sleep(REORDER_HOLD), if held.is_some() => held.take().into_iter().collect(),
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let (_, message) = delayed.pop_front().expect("due implies a frame");
                    if !self.emit(message, &mut sink).await {
                        return;
                    }
                    Vec::new()
                }
            };
            for message in ready {
                if self.delay.is_zero() {
                    if !self.emit(message, &mut sink).await {
                        return;
                    }
                } else {
                    delayed.push_back((Instant::now() + self.delay, message));
                }
            }
        }
    }

    async fn emit(&mut self, message: Relayed, sink: &mut impl FnMut(Relayed) -> bool) -> bool {
        if let Some(ceiling) = &mut self.ceiling {
            ceiling.wait().await;
        }
        let counter = match self.direction {
            Direction::ToAgent => &self.stats.frames_to_agent,
            Direction::ToClient => &self.stats.frames_to_client,
        };
        counter.fetch_add(1, Relaxed);
        sink(message)
    }

    /// Applies the random faults to one message; returns what goes out now, in order.
    fn inject(&mut self, mut message: Relayed, held: &mut Option<Relayed>) -> Vec<Relayed> {
        let mut out = Vec::with_capacity(3);
        if message.kind != Kind::Service {
            if self.chance(self.faults.drop) {
                self.stats.dropped.fetch_add(1, Relaxed);
                return out;
            }
            if message.bytes.len() > PAYLOAD_OFFSET && self.chance(self.faults.corrupt_digest) {
                let mut bytes = message.bytes.to_vec();
                bytes[DIGEST_OFFSET] ^= 0xff;
                message.bytes = bytes.into();
                self.stats.corrupted.fetch_add(1, Relaxed);
            }
            if held.is_none() && self.chance(self.faults.reorder) {
                self.stats.reordered.fetch_add(1, Relaxed);
                *held = Some(message);
                return out;
            }
            if self.chance(self.faults.duplicate) {
                self.stats.duplicated.fetch_add(1, Relaxed);
                out.push(message.clone());
            }
        }
        out.push(message);
        out.extend(held.take());
        out
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.rng.random_bool(probability.clamp(0.0, 1.0))
    }
}
