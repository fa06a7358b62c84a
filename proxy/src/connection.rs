//! The client engine of one session, free of I/O (quinn-proto style): feed it
//! websocket messages and timeouts, take frames to write and events.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::channel::{Channel, ChannelConfig, Stats};
use crate::frame::{message_type, payload_type, Frame, FrameError};
use crate::handshake::{self, SessionMode};
use crate::payload::{flag, parse_flag, HandshakeComplete, HandshakeRequest};

/// Tunables of a [`Connection`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub channel: ChannelConfig,
    /// Reported in the HandshakeResponse; decides smux and keep-alive on the agent.
    pub client_version: String,
    /// How long to wait for HandshakeComplete.
    pub handshake_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            channel: ChannelConfig::default(),
            client_version: handshake::CLIENT_VERSION.to_owned(),
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the engine gave up on the session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("no handshake from the agent within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("the agent asked for something this client does not support: {0}")]
    Unsupported(String),
    #[error("the agent sent a handshake this client cannot parse: {0}")]
    BadHandshake(String),
}

/// What the engine reports to its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The session is ready for data.
    HandshakeComplete {
        mode: SessionMode,
        agent_version: String,
        customer_message: String,
    },
    /// Output bytes from the agent, in order.
    Data(Bytes),
    /// The agent could not reach the target (mux: for one stream).
    ConnectToPortError,
    /// The service ended the session (`channel_closed`); `output` may say why.
    Closed { output: String },
    /// The session cannot go on.
    Failed(EngineError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Handshaking,
    Established,
    Over,
}

/// One client session's protocol state.
pub struct Connection {
    config: EngineConfig,
    channel: Channel,
    state: State,
    mode: Option<SessionMode>,
    agent_version: String,
    handshake_deadline: Instant,
    events: VecDeque<Event>,
}

impl Connection {
    pub fn new(config: EngineConfig, now: Instant) -> Connection {
        Connection {
            channel: Channel::new(config.channel.clone(), message_type::INPUT_STREAM_DATA, now),
            handshake_deadline: now + config.handshake_timeout,
            config,
            state: State::Handshaking,
            mode: None,
            agent_version: String::new(),
            events: VecDeque::new(),
        }
    }

    /// Handles one websocket message (binary or text) from the service.
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) {
        let frame = match Frame::decode(bytes) {
            Ok(frame) => frame,
            Err(FrameError::DigestMismatch) => {
                self.channel.stats_mut().digest_drops += 1;
                tracing::debug!("dropped a frame whose payload digest does not match");
                return;
            }
            Err(error) => {
                self.channel.stats_mut().undecodable += 1;
                tracing::debug!(%error, "dropped an undecodable frame");
                return;
            }
        };
        match frame.message_type.as_str() {
            message_type::CHANNEL_CLOSED => self.finish(Event::Closed {
                output: channel_closed_output(&frame.payload),
            }),
            message_type::PAUSE_PUBLICATION => self.channel.set_paused(now, true),
            message_type::START_PUBLICATION => self.channel.set_paused(now, false),
            message_type::ACKNOWLEDGE => self.channel.receive(now, frame),
            _ if frame.is_stream_data() => {
                self.channel.receive(now, frame);
                while let Some(frame) = self.channel.poll_delivered() {
                    self.on_delivered(frame);
                }
            }
            other => tracing::debug!(message_type = other, "ignored a frame of unknown type"),
        }
    }

    fn on_delivered(&mut self, frame: Frame) {
        if self.state == State::Over {
            return;
        }
        match frame.payload_type {
            payload_type::HANDSHAKE_REQUEST => self.on_handshake_request(&frame.payload),
            payload_type::HANDSHAKE_COMPLETE => self.on_handshake_complete(&frame.payload),
            payload_type::OUTPUT => {
                if !frame.payload.is_empty() {
                    self.events.push_back(Event::Data(frame.payload));
                }
            }
            payload_type::FLAG => match parse_flag(&frame.payload) {
                Some(flag::CONNECT_TO_PORT_ERROR) => {
                    self.events.push_back(Event::ConnectToPortError)
                }
                other => tracing::debug!(?other, "ignored an unexpected flag from the agent"),
            },
            payload_type::ENC_CHALLENGE_REQUEST => self.finish(Event::Failed(
                EngineError::Unsupported("KMS encryption challenge".to_owned()),
            )),
            other => tracing::debug!(payload_type = other, "ignored a payload type"),
        }
    }

    fn on_handshake_request(&mut self, payload: &[u8]) {
        let request: HandshakeRequest = match serde_json::from_slice(payload) {
            Ok(request) => request,
            Err(e) => return self.finish(Event::Failed(EngineError::BadHandshake(e.to_string()))),
        };
        let outcome = handshake::answer(&request, &self.config.client_version);
        // The response goes out even when it refuses: that is how the agent learns to stop.
        self.channel
            .send_message(payload_type::HANDSHAKE_RESPONSE, &outcome.response);
        self.agent_version = outcome.agent_version;
        match outcome.result {
            Ok(mode) => self.mode = Some(mode),
            Err(why) => self.finish(Event::Failed(EngineError::Unsupported(why))),
        }
    }

    fn on_handshake_complete(&mut self, payload: &[u8]) {
        let Some(mode) = self.mode else {
            return self.finish(Event::Failed(EngineError::BadHandshake(
                "HandshakeComplete before HandshakeRequest".to_owned(),
            )));
        };
        let complete: HandshakeComplete =
            serde_json::from_slice(payload).unwrap_or(HandshakeComplete {
                handshake_time_to_complete: 0,
                customer_message: String::new(),
            });
        self.state = State::Established;
        self.events.push_back(Event::HandshakeComplete {
            mode,
            agent_version: self.agent_version.clone(),
            customer_message: complete.customer_message,
        });
    }

    fn finish(&mut self, event: Event) {
        if self.state != State::Over {
            self.state = State::Over;
            self.events.push_back(event);
        }
    }

    /// Queues Output bytes; returns how many were accepted. Nothing is accepted
    /// before HandshakeComplete or when the window is full.
    pub fn send_data(&mut self, bytes: &[u8]) -> usize {
        if self.state != State::Established {
            return 0;
        }
        self.channel.send_data(bytes)
    }

    /// Whether `send_data` would accept at least one byte.
    pub fn can_send(&self) -> bool {
        self.state == State::Established && self.channel.window_available() > 0
    }

    /// Queues a flag (`DisconnectToPort`, `TerminateSession`) behind the data
    /// already queued. Ignored before the handshake completes.
    pub fn send_flag(&mut self, value: u32) {
        if self.mode.is_some() {
            self.channel
                .send_message(payload_type::FLAG, &crate::payload::flag_payload(value));
        }
    }

    /// The next frame to write to the websocket.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.channel.poll_transmit(now)
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call `handle_timeout` and `poll_transmit` next.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        let channel = self.channel.poll_timeout(now);
        if self.state == State::Handshaking {
            Some(channel.map_or(self.handshake_deadline, |t| t.min(self.handshake_deadline)))
        } else {
            channel
        }
    }

    /// Advances timers (the handshake deadline; resends are taken by `poll_transmit`).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Handshaking && now >= self.handshake_deadline {
            self.finish(Event::Failed(EngineError::HandshakeTimeout(
                self.config.handshake_timeout,
            )));
        }
    }

    /// A new websocket carries the session: resume sending, resend what is in flight.
    pub fn on_reconnected(&mut self) {
        self.channel.on_reconnected();
    }

    /// True once the session has ended (closed, failed or timed out).
    pub fn is_over(&self) -> bool {
        self.state == State::Over
    }

    /// True once HandshakeComplete arrived (and the session has not ended).
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// The agent version of the HandshakeRequest (empty before it).
    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// The mode agreed in the handshake.
    pub fn mode(&self) -> Option<SessionMode> {
        self.mode
    }

    /// Everything queued has been acknowledged.
    pub fn is_flushed(&self) -> bool {
        self.channel.is_flushed()
    }

    pub fn stats(&self) -> &Stats {
        self.channel.stats()
    }

    /// The reliable channel underneath (RTO, window, sequence numbers).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// `channel_closed`'s Output, read leniently: whatever else in the body is
/// missing or mistyped (the service's JSON has varied), a string Output is kept.
fn channel_closed_output(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|body| body.get("Output")?.as_str().map(str::to_owned))
        .unwrap_or_default()
}
