//! The client engine of one session, free of I/O (quinn-proto style): feed it
//! websocket messages and timeouts, take frames to write and events.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::channel::{Channel, ChannelConfig, Stats};
use crate::crypto::{DataKey, KeyError, SessionCipher};
use crate::frame::{message_type, payload_type, Frame, FrameError};
use crate::handshake::{self, KmsAnswer, SessionMode};
use crate::payload::{
    flag, parse_exit_code, parse_flag, EncryptionChallenge, HandshakeComplete, HandshakeRequest,
    Size,
};

/// Plaintext bytes per encrypted Output message (the plugin's stdin read size).
const SEALED_CHUNK: usize = 1024;

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
    /// GenerateDataKey failed; the text comes from the binary's KMS call.
    #[error("{0}")]
    Kms(String),
    #[error("{0}")]
    Decrypt(String),
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
    /// Output bytes from the agent, in order (decrypted when the session is).
    Data(Bytes),
    /// StdErr bytes (payload type 11: non-interactive commands with separate streams).
    StdErr(Bytes),
    /// The remote command's exit status (payload type 12, `EXIT_CODE: <n>`).
    ExitCode(i32),
    /// The agent asked for KMS encryption: call GenerateDataKey for `key_id`
    /// and hand the answer to [`Connection::provide_data_key`].
    DataKeyNeeded { key_id: String },
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
    /// A HandshakeRequest waiting for its data key.
    awaiting_key: Option<HandshakeRequest>,
    cipher: Option<SessionCipher>,
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
            awaiting_key: None,
            cipher: None,
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
        let payload = match frame.payload_type {
            payload_type::OUTPUT | payload_type::STDERR | payload_type::EXIT_CODE => {
                match self.decrypted(frame.payload) {
                    Some(payload) => payload,
                    None => return,
                }
            }
            _ => frame.payload,
        };
        match frame.payload_type {
            payload_type::HANDSHAKE_REQUEST => self.on_handshake_request(&payload),
            payload_type::HANDSHAKE_COMPLETE => self.on_handshake_complete(&payload),
            payload_type::ENC_CHALLENGE_REQUEST => self.on_challenge(&payload),
            payload_type::OUTPUT => {
                if self.state == State::Handshaking
                    && self.mode.is_none()
                    && self.awaiting_key.is_none()
                {
                    // No handshake: a shell session (plugin `session.go` `ProcessFirstMessage`).
                    self.mode = Some(SessionMode::Shell);
                    self.state = State::Established;
                    self.events.push_back(Event::HandshakeComplete {
                        mode: SessionMode::Shell,
                        agent_version: String::new(),
                        customer_message: String::new(),
                    });
                }
                if !payload.is_empty() {
                    self.events.push_back(Event::Data(payload));
                }
            }
            payload_type::STDERR => {
                if !payload.is_empty() {
                    self.events.push_back(Event::StdErr(payload));
                }
            }
            payload_type::EXIT_CODE => match parse_exit_code(&payload) {
                Some(code) => self.events.push_back(Event::ExitCode(code)),
                None => tracing::debug!("ignored a malformed ExitCode payload"),
            },
            payload_type::FLAG => match parse_flag(&payload) {
                Some(flag::CONNECT_TO_PORT_ERROR) => {
                    self.events.push_back(Event::ConnectToPortError)
                }
                other => tracing::debug!(?other, "ignored an unexpected flag from the agent"),
            },
            other => tracing::debug!(payload_type = other, "ignored a payload type"),
        }
    }

    /// The payload as sent, or decrypted when the session is encrypted; None
    /// (and the session failed) when it does not decrypt.
    fn decrypted(&mut self, payload: Bytes) -> Option<Bytes> {
        let Some(cipher) = &self.cipher else {
            return Some(payload);
        };
        match cipher.open(&payload) {
            Ok(plain) => Some(plain.into()),
            Err(error) => {
                self.finish(Event::Failed(EngineError::Decrypt(format!(
                    "a payload from the agent does not decrypt ({error}); the agent and this client disagree on the session's KMS data key"
                ))));
                None
            }
        }
    }

    fn on_handshake_request(&mut self, payload: &[u8]) {
        let request: HandshakeRequest = match serde_json::from_slice(payload) {
            Ok(request) => request,
            Err(e) => return self.finish(Event::Failed(EngineError::BadHandshake(e.to_string()))),
        };
        // How a path announces its session type is not always public (Studio spaces): log it.
        tracing::debug!(?request, "HandshakeRequest");
        match handshake::kms_key_id(&request) {
            Some(Ok(key_id)) => {
                self.agent_version = request.agent_version.clone();
                self.awaiting_key = Some(request);
                self.events.push_back(Event::DataKeyNeeded { key_id });
            }
            Some(Err(why)) => self.respond(&request, Some(&KmsAnswer::Unsupported(why))),
            None => self.respond(&request, None),
        }
    }

    /// The answer to [`Event::DataKeyNeeded`]: completes the HandshakeResponse.
    pub fn provide_data_key(&mut self, key: Result<DataKey, KeyError>) {
        let Some(request) = self.awaiting_key.take() else {
            return;
        };
        let answer = match key {
            Ok(key) => match SessionCipher::client(&key) {
                Ok(cipher) => {
                    self.cipher = Some(cipher);
                    KmsAnswer::Key(key.ciphertext)
                }
                Err(error) => KmsAnswer::Failed(format!("kms:GenerateDataKey: {error}")),
            },
            Err(KeyError::Failed(why)) => KmsAnswer::Failed(why),
            Err(KeyError::Unsupported(why)) => KmsAnswer::Unsupported(why),
        };
        self.respond(&request, Some(&answer));
    }

    fn respond(&mut self, request: &HandshakeRequest, kms: Option<&KmsAnswer>) {
        let outcome = handshake::answer(request, &self.config.client_version, kms);
        // The response goes out even when it refuses: that is how the agent learns to stop.
        self.channel
            .send_message(payload_type::HANDSHAKE_RESPONSE, &outcome.response);
        self.agent_version = outcome.agent_version;
        match outcome.result {
            Ok(mode) => self.mode = Some(mode),
            Err(why) => {
                self.cipher = None;
                let error = match kms {
                    Some(KmsAnswer::Failed(why)) => EngineError::Kms(why.clone()),
                    _ => EngineError::Unsupported(why),
                };
                self.finish(Event::Failed(error))
            }
        }
    }

    /// EncChallengeRequest: decrypt with the agent's key, encrypt with ours,
    /// send it back (plugin `streaming.go` `handleEncryptionChallengeRequest`).
    fn on_challenge(&mut self, payload: &[u8]) {
        let Some(cipher) = &self.cipher else {
            return self.finish(Event::Failed(EngineError::BadHandshake(
                "an encryption challenge in a session without KMS".to_owned(),
            )));
        };
        let opened = serde_json::from_slice::<EncryptionChallenge>(payload)
            .map_err(|e| e.to_string())
            .and_then(|c| BASE64.decode(c.challenge).map_err(|e| e.to_string()))
            .and_then(|sealed| cipher.open(&sealed).map_err(|e| e.to_string()));
        match opened {
            Ok(plain) => {
                let answer = EncryptionChallenge {
                    challenge: BASE64.encode(cipher.seal(&plain)),
                };
                let body = serde_json::to_vec(&answer).expect("challenge serialises");
                self.channel
                    .send_message(payload_type::ENC_CHALLENGE_RESPONSE, &body);
            }
            Err(why) => self.finish(Event::Failed(EngineError::Decrypt(format!(
                "the agent's KMS encryption challenge does not decrypt with the data key ({why}); \
                 the agent used another key or encryption context"
            )))),
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
        let Some(cipher) = &self.cipher else {
            return self.channel.send_data(bytes);
        };
        let mut accepted = 0;
        while accepted < bytes.len() && self.channel.window_available() > 0 {
            let n = SEALED_CHUNK.min(bytes.len() - accepted);
            let sealed = cipher.seal(&bytes[accepted..accepted + n]);
            self.channel.send_message(payload_type::OUTPUT, &sealed);
            accepted += n;
        }
        accepted
    }

    /// Queues a Size message (shell sessions; never encrypted, as the plugin
    /// sends it). Ignored before the session is established.
    pub fn send_size(&mut self, size: Size) {
        if self.state == State::Established {
            let body = serde_json::to_vec(&size).expect("size serialises");
            self.channel.send_message(payload_type::SIZE, &body);
        }
    }

    /// True when the agent asked for KMS and every payload is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
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
