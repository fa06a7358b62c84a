//! The reliable, ordered message channel under the data-channel protocol
//! (protocol §5), free of I/O. It is symmetric: the client engine sends
//! `input_stream_data`, a test peer can run the same code as the agent.
//!
//! Rules kept here:
//! * every stream message consumes one sequence number of its direction;
//! * each received stream message is acknowledged at once, duplicates are
//!   acknowledged again, messages from the future are buffered (and acked)
//!   and delivered in order;
//! * a message is resent, with its original bytes, when it is found lost: a
//!   message sent at least a reorder window after it has been acknowledged
//!   (acks are per message, so this is RACK's time-based rule, RFC 8985).
//!   When nothing later is acknowledged, the RTO resends only the oldest
//!   message in flight and doubles for each timeout in a row, as TCP does: a
//!   stall that delays every ack costs one resend, not the whole flight. RTT
//!   samples come only from messages sent once (Karn);
//! * the number of unacknowledged messages is bounded (backpressure, never
//!   eviction); `pause_publication` stops stream transmission, for at most
//!   [`PAUSE_LIMIT`];
//! * when paced, new messages in flight are held to what the pace fills in
//!   the shortest round trip seen plus [`QUEUE_ALLOWANCE`], so a queue at the
//!   service (acks late, not lost) cannot grow past the RTO and turn every
//!   message into a resend.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::frame::{header_flags, message_type, payload_type, Frame};
use crate::pacing::Pacer;
use crate::payload::Acknowledge;
use crate::rto::RtoEstimator;

/// The most bytes put in one stream message, as every official producer does.
pub const MAX_PAYLOAD: usize = 1024;
/// Timeouts in a row that double the RTO; later ones keep the last value.
const MAX_BACKOFF_EXPONENT: u32 = 5;
/// How late a message may arrive behind one sent after it before it counts as
/// lost: a quarter of the shortest RTT (RACK's), within these bounds.
const REORDER_WINDOW_MIN: Duration = Duration::from_millis(2);
const REORDER_WINDOW_MAX: Duration = Duration::from_millis(50);
/// The longest a backed-off resend waits: the agent
/// and the plugin re-check every 100 ms with an RTO of at most 1 s, so a
/// longer wait would only stall a recovery that the peer is ready for.
pub const MAX_RESEND_WAIT: Duration = Duration::from_secs(2);
/// How long a `pause_publication` holds without a `start_publication`: the
/// service may lose the latter, and a stall for good is worse than a few
/// messages sent into a pause (they are resent if lost).
pub const PAUSE_LIMIT: Duration = Duration::from_secs(5);

/// How much queueing beyond the shortest round trip a paced channel allows
/// in flight: enough for the peer's own delays, well under the 1 s RTO cap.
/// Without a bound, a service relaying a little slower than the pace (or
/// acks queued behind the peer's data) grows the queue until RTTs pass the
/// RTO cap, and every message is then sent twice: half the throughput.
pub const QUEUE_ALLOWANCE: Duration = Duration::from_millis(200);
/// The fewest new messages a paced channel may have in flight.
const MIN_IN_FLIGHT: usize = 32;

/// Tunables of a [`Channel`].
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Stream messages transmitted per second (new or resent); `None` = unlimited.
    pub pacing: Option<u32>,
    /// Most unacknowledged outgoing messages (sent or queued) before `send_data` refuses.
    pub window: usize,
    /// Most out-of-order incoming messages buffered (beyond it they are neither kept nor acked).
    pub receive_buffer: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            pacing: Some(1000),
            window: 2048,
            receive_buffer: 10_000,
        }
    }
}

/// Counters for diagnostics and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Stream messages transmitted for the first time.
    pub messages_sent: u64,
    /// Retransmissions of stream messages.
    pub resends: u64,
    /// Acknowledgements sent (including re-acks of duplicates).
    pub acks_sent: u64,
    /// Acknowledgements received that matched an outstanding message.
    pub acks_received: u64,
    /// Stream messages delivered in order.
    pub messages_delivered: u64,
    /// Stream messages received more than once.
    pub duplicates: u64,
    /// Stream messages received ahead of a gap.
    pub out_of_order: u64,
    /// Frames dropped because their payload digest did not match.
    pub digest_drops: u64,
    /// Frames dropped because they could not be decoded.
    pub undecodable: u64,
}

enum Slot {
    /// Queued, not yet on the wire; Output payloads may still grow.
    Unsent {
        payload_type: u32,
        payload: BytesMut,
    },
    Sent {
        bytes: Bytes,
        first_sent: Instant,
        last_sent: Instant,
        resends: u32,
    },
    Acked,
}

/// One direction's sender plus the other direction's receiver.
pub struct Channel {
    config: ChannelConfig,
    outgoing_type: &'static str,
    epoch_ms_at_start: u64,
    start: Instant,
    /// Outgoing messages from `base_seq` on; the unsent ones form a suffix.
    outgoing: VecDeque<Slot>,
    base_seq: i64,
    next_unsent: i64,
    /// (last transmission, seq) in transmission order; an entry is stale once
    /// its message is acknowledged, found lost or sent again.
    sent_order: VecDeque<(Instant, i64)>,
    /// Sent messages to retransmit as soon as possible (after a reconnect).
    urgent: VecDeque<i64>,
    /// Sent messages found lost, to retransmit before anything new, with the
    /// transmission found lost (stale once the message is acked or sent again).
    lost: VecDeque<(Instant, i64)>,
    /// The latest transmission time among acknowledged messages.
    latest_acked_send: Option<Instant>,
    /// RTO expiries since the last acknowledgement (the backoff exponent).
    timeouts: u32,
    /// When the last acknowledgement of a message in flight arrived: the RTO
    /// runs from it as well (RFC 6298 5.3), so acks that still flow hold it off.
    last_ack: Option<Instant>,
    control: VecDeque<Bytes>,
    rto: RtoEstimator,
    /// The shortest RTT sample on the current websocket.
    min_rtt: Option<Duration>,
    /// Messages sent and not yet acknowledged.
    in_flight: usize,
    pacer: Pacer,
    /// When `pause_publication` arrived, while it is in force.
    paused: Option<Instant>,
    expected: i64,
    reorder: BTreeMap<i64, Frame>,
    delivered: VecDeque<Frame>,
    stats: Stats,
}

impl Channel {
    /// A channel whose outgoing stream messages have type `outgoing_type`.
    pub fn new(config: ChannelConfig, outgoing_type: &'static str, now: Instant) -> Channel {
        let epoch_ms_at_start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        Channel {
            pacer: Pacer::new(config.pacing, now),
            config,
            outgoing_type,
            epoch_ms_at_start,
            start: now,
            outgoing: VecDeque::new(),
            base_seq: 0,
            next_unsent: 0,
            sent_order: VecDeque::new(),
            urgent: VecDeque::new(),
            lost: VecDeque::new(),
            latest_acked_send: None,
            timeouts: 0,
            last_ack: None,
            control: VecDeque::new(),
            rto: RtoEstimator::default(),
            min_rtt: None,
            in_flight: 0,
            paused: None,
            expected: 0,
            reorder: BTreeMap::new(),
            delivered: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// CreatedDate for a frame made at `now`: never zero.
    pub fn created_date(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.start).as_millis() as u64;
        (self.epoch_ms_at_start + since).max(1)
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counters, writable by the layer that decodes frames.
    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    /// The RTO estimator.
    pub fn rto(&self) -> &RtoEstimator {
        &self.rto
    }

    /// Outgoing stream messages not yet acknowledged (queued or in flight).
    pub fn unacked(&self) -> usize {
        self.outgoing
            .iter()
            .filter(|slot| !matches!(slot, Slot::Acked))
            .count()
    }

    /// True when everything queued has been acknowledged.
    pub fn is_flushed(&self) -> bool {
        self.outgoing.is_empty() && self.control.is_empty()
    }

    /// The next sequence number this side will assign.
    pub fn next_seq(&self) -> i64 {
        self.base_seq + self.outgoing.len() as i64
    }

    /// The next sequence number expected from the peer.
    pub fn expected_seq(&self) -> i64 {
        self.expected
    }

    /// Whether `pause_publication` is in force at `now` (it lapses after [`PAUSE_LIMIT`]).
    pub fn is_paused(&mut self, now: Instant) -> bool {
        if self.paused.is_some_and(|since| now >= since + PAUSE_LIMIT) {
            tracing::debug!("no start_publication within {PAUSE_LIMIT:?}; resuming");
            self.paused = None;
        }
        self.paused.is_some()
    }

    /// `pause_publication` (true) / `start_publication` (false), received at `now`.
    pub fn set_paused(&mut self, now: Instant, paused: bool) {
        self.paused = paused.then_some(now);
    }

    /// Room left in the outgoing window, in messages.
    pub fn window_available(&self) -> usize {
        self.config.window.saturating_sub(self.outgoing.len())
    }

    /// Queues Output bytes in messages of at most [`MAX_PAYLOAD`] bytes, topping up the
    /// last unsent message first. Returns how many bytes were accepted (0 when the
    /// window is full).
    pub fn send_data(&mut self, data: &[u8]) -> usize {
        let mut accepted = 0;
        if let Some(Slot::Unsent {
            payload_type: payload_type::OUTPUT,
            payload,
        }) = self.outgoing.back_mut()
        {
            let n = (MAX_PAYLOAD - payload.len()).min(data.len());
            payload.extend_from_slice(&data[..n]);
            accepted = n;
        }
        while accepted < data.len() && self.outgoing.len() < self.config.window {
            let n = MAX_PAYLOAD.min(data.len() - accepted);
            self.push(
                payload_type::OUTPUT,
                BytesMut::from(&data[accepted..accepted + n]),
            );
            accepted += n;
        }
        accepted
    }

    /// Queues one stream message regardless of the window (handshake, flags), so
    /// control never waits behind data. Returns its sequence number.
    pub fn send_message(&mut self, payload_type: u32, payload: &[u8]) -> i64 {
        self.push(payload_type, BytesMut::from(payload))
    }

    fn push(&mut self, payload_type: u32, payload: BytesMut) -> i64 {
        let seq = self.next_seq();
        self.outgoing.push_back(Slot::Unsent {
            payload_type,
            payload,
        });
        seq
    }

    /// Handles a decoded stream-data or acknowledge frame from the peer.
    pub fn receive(&mut self, now: Instant, frame: Frame) {
        if frame.message_type == message_type::ACKNOWLEDGE {
            if let Ok(ack) = serde_json::from_slice::<Acknowledge>(&frame.payload) {
                self.on_ack(now, ack.sequence_number);
            } else {
                self.stats.undecodable += 1;
            }
            // Any sign of life from the peer lifts a pause, as the agent does.
            self.paused = None;
            return;
        }
        if !frame.is_stream_data() {
            return;
        }
        self.paused = None;
        let seq = frame.sequence_number;
        if seq < self.expected {
            self.stats.duplicates += 1;
            self.ack(now, &frame);
        } else if seq == self.expected {
            self.ack(now, &frame);
            self.deliver(frame);
            while let Some(next) = self.reorder.remove(&self.expected) {
                self.deliver(next);
            }
        } else if self.reorder.contains_key(&seq) {
            self.stats.duplicates += 1;
            self.ack(now, &frame);
        } else if self.reorder.len() < self.config.receive_buffer {
            self.stats.out_of_order += 1;
            self.ack(now, &frame);
            self.reorder.insert(seq, frame);
        }
    }

    fn deliver(&mut self, frame: Frame) {
        self.expected += 1;
        self.stats.messages_delivered += 1;
        self.delivered.push_back(frame);
    }

    fn ack(&mut self, now: Instant, frame: &Frame) {
        let ack = Acknowledge {
            message_type: frame.message_type.clone(),
            message_id: frame.message_id.to_string(),
            sequence_number: frame.sequence_number,
            is_sequential: true,
        };
        let payload = serde_json::to_vec(&ack).expect("acknowledge serialises");
        let bytes = Frame::new(
            message_type::ACKNOWLEDGE,
            self.created_date(now),
            0,
            header_flags::ACK,
            payload_type::NONE,
            payload,
        )
        .encode();
        self.stats.acks_sent += 1;
        self.control.push_back(bytes);
    }

    fn on_ack(&mut self, now: Instant, seq: i64) {
        let Some(index) = seq
            .checked_sub(self.base_seq)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let Some(slot) = self.outgoing.get_mut(index) else {
            return;
        };
        if let Slot::Sent {
            first_sent,
            last_sent,
            resends,
            ..
        } = slot
        {
            let (first_sent, last_sent, resends) = (*first_sent, *last_sent, *resends);
            *slot = Slot::Acked;
            self.in_flight -= 1;
            self.stats.acks_received += 1;
            self.timeouts = 0;
            self.last_ack = Some(now);
            if resends == 0 {
                let rtt = now.saturating_duration_since(first_sent);
                self.rto.sample(rtt);
                self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
            }
            // An ack of a resent message may be the original's, late: taking
            // it as the resend's would find the whole flight lost after a
            // stall. Only messages sent once say what got through (as F-RTO).
            if resends == 0 && self.latest_acked_send.is_none_or(|t| t < last_sent) {
                self.latest_acked_send = Some(last_sent);
            }
        }
        while let Some(Slot::Acked) = self.outgoing.front() {
            self.outgoing.pop_front();
            self.base_seq += 1;
        }
        self.find_lost();
    }

    /// Moves every message sent a reorder window or more before the latest
    /// acknowledged transmission to the lost queue.
    fn find_lost(&mut self) {
        let Some(latest) = self.latest_acked_send else {
            return;
        };
        let window = self.reorder_window();
        while let Some(&(at, seq)) = self.sent_order.front() {
            if self.is_current(at, seq) {
                if at + window > latest {
                    break;
                }
                self.lost.push_back((at, seq));
            }
            self.sent_order.pop_front();
        }
    }

    fn reorder_window(&self) -> Duration {
        let rtt = self.min_rtt.unwrap_or(crate::rto::INITIAL_SRTT);
        (rtt / 4).clamp(REORDER_WINDOW_MIN, REORDER_WINDOW_MAX)
    }

    /// Whether `(at, seq)` is the latest transmission of a message still in flight.
    fn is_current(&self, at: Instant, seq: i64) -> bool {
        matches!(self.slot(seq), Some(Slot::Sent { last_sent, .. }) if *last_sent == at)
    }

    /// The next in-order stream message from the peer.
    pub fn poll_delivered(&mut self) -> Option<Frame> {
        self.delivered.pop_front()
    }

    /// After a new websocket is up: lift any pause and resend everything in flight
    /// at once (it may have died with the old socket).
    pub fn on_reconnected(&mut self) {
        self.paused = None;
        self.min_rtt = None;
        self.timeouts = 0;
        self.lost.clear();
        self.urgent.clear();
        for (i, slot) in self.outgoing.iter().enumerate() {
            if matches!(slot, Slot::Sent { .. }) {
                self.urgent.push_back(self.base_seq + i as i64);
            }
        }
    }

    /// The next frame to write to the websocket: acks first, then retransmissions,
    /// then new messages, paced.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        if let Some(bytes) = self.control.pop_front() {
            return Some(bytes);
        }
        if self.is_paused(now) {
            return None;
        }
        let seq = self.next_stream_candidate(now)?;
        if !self.pacer.try_take(now) {
            return None;
        }
        Some(self.transmit(now, seq))
    }

    /// The sequence number of the next stream message due, without taking it:
    /// after a reconnect everything in flight, then the lost, then the oldest
    /// message in flight once its (backed-off) RTO has passed, then new ones.
    fn next_stream_candidate(&mut self, now: Instant) -> Option<i64> {
        self.drop_stale();
        if let Some(&seq) = self
            .urgent
            .front()
            .or(self.lost.front().map(|(_, seq)| seq))
        {
            return Some(seq);
        }
        if let Some((deadline, seq)) = self.timeout() {
            if deadline <= now {
                return Some(seq);
            }
        }
        self.may_send_new().then_some(self.next_unsent)
    }

    /// Takes acknowledged (and, for the lost, already resent) messages off
    /// the fronts of the resend queues.
    fn drop_stale(&mut self) {
        while self.urgent.front().is_some_and(|&seq| !self.is_sent(seq)) {
            self.urgent.pop_front();
        }
        while self
            .lost
            .front()
            .is_some_and(|&(at, seq)| !self.is_current(at, seq))
        {
            self.lost.pop_front();
        }
    }

    /// Whether a new message is queued and the flight limit lets it go.
    fn may_send_new(&self) -> bool {
        self.next_unsent < self.next_seq() && self.in_flight < self.flight_limit()
    }

    /// The most messages in flight: the pace times (shortest RTT + allowance).
    fn flight_limit(&self) -> usize {
        let Some(rate) = self.config.pacing else {
            return usize::MAX;
        };
        let rtt = self.min_rtt.unwrap_or(crate::rto::INITIAL_SRTT) + QUEUE_ALLOWANCE;
        ((rtt.as_secs_f64() * f64::from(rate)) as usize).max(MIN_IN_FLIGHT)
    }

    fn is_sent(&self, seq: i64) -> bool {
        self.slot(seq)
            .is_some_and(|s| matches!(s, Slot::Sent { .. }))
    }

    fn slot(&self, seq: i64) -> Option<&Slot> {
        let index = usize::try_from(seq.checked_sub(self.base_seq)?).ok()?;
        self.outgoing.get(index)
    }

    /// The oldest message in flight and when its RTO, doubled per timeout in
    /// a row up to [`MAX_RESEND_WAIT`], runs out (counted from its
    /// transmission or the last ack, whichever is later).
    fn timeout(&mut self) -> Option<(Instant, i64)> {
        while let Some(&(at, seq)) = self.sent_order.front() {
            if self.is_current(at, seq) {
                let wait = self.rto.rto() * (1 << self.timeouts.min(MAX_BACKOFF_EXPONENT));
                let from = self.last_ack.map_or(at, |ack| ack.max(at));
                return Some((from + wait.min(MAX_RESEND_WAIT), seq));
            }
            self.sent_order.pop_front();
        }
        None
    }

    fn transmit(&mut self, now: Instant, seq: i64) -> Bytes {
        let index = (seq - self.base_seq) as usize;
        let created_date = self.created_date(now);
        let outgoing_type = self.outgoing_type;
        let slot = &mut self.outgoing[index];
        let bytes = match slot {
            Slot::Unsent {
                payload_type,
                payload,
            } => {
                let bytes = Frame::new(
                    outgoing_type,
                    created_date,
                    seq,
                    header_flags::NONE,
                    *payload_type,
                    std::mem::take(payload).freeze(),
                )
                .encode();
                *slot = Slot::Sent {
                    bytes: bytes.clone(),
                    first_sent: now,
                    last_sent: now,
                    resends: 0,
                };
                self.next_unsent = seq + 1;
                self.in_flight += 1;
                self.stats.messages_sent += 1;
                bytes
            }
            Slot::Sent {
                bytes,
                last_sent,
                resends,
                ..
            } => {
                let timed_out = *last_sent;
                *last_sent = now;
                *resends += 1;
                self.stats.resends += 1;
                if self.urgent.front() == Some(&seq) {
                    self.urgent.pop_front();
                } else if self.lost.front().map(|(_, s)| *s) == Some(seq) {
                    self.lost.pop_front();
                } else if self.sent_order.front() == Some(&(timed_out, seq)) {
                    self.timeouts += 1;
                }
                bytes.clone()
            }
            Slot::Acked => unreachable!("acked messages are never candidates"),
        };
        self.sent_order.push_back((now, seq));
        bytes
    }

    /// When `poll_transmit` may next have something that it does not have now.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        if let Some(since) = self.paused {
            return Some(since + PAUSE_LIMIT);
        }
        self.drop_stale();
        let pending = !self.urgent.is_empty() || !self.lost.is_empty() || self.may_send_new();
        let resend = self.timeout().map(|(deadline, _)| deadline);
        let wanted = if pending { Some(now) } else { resend };
        wanted.map(|at| at.max(self.pacer.next_token(now)))
    }

    /// The current RTO.
    pub fn current_rto(&self) -> Duration {
        self.rto.rto()
    }
}
