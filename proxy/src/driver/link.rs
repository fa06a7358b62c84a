//! The engine loop shared by `bridge` and `MuxSession`: one [`Connection`] over
//! a websocket that is replaced (ResumeSession + redial) whenever it dies.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::predial::Predial;
use super::socket::{self, Socket};
use super::{Options, SessionControl, SessionError, SessionStats, StreamTarget};
use crate::channel::ChannelConfig;
use crate::connection::{Connection, EngineConfig, EngineError, Event};
use crate::handshake::SessionMode;

const PING_PAYLOAD: &[u8] = b"keepalive";
/// How soon a ping that found the writer queue full is tried again.
const PING_RETRY: Duration = Duration::from_millis(200);
/// Dials of the first websocket before giving up (the token is still unused).
const INITIAL_DIAL_ATTEMPTS: u32 = 3;

pub(crate) struct Link<C> {
    pub conn: Connection,
    control: Arc<C>,
    options: Options,
    session_id: String,
    socket: Socket,
    /// True once any frame arrived on the current socket.
    heard: bool,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
    reconnects: u64,
    /// Reconnect attempts used in the current outage: a new socket only counts as
    /// a recovery once something (a frame or a pong) arrives on it.
    failed_attempts: u32,
    /// HandshakeComplete's CustomerMessage ("This session is encrypted using AWS KMS.").
    pub customer_message: String,
}

enum Wake {
    Message(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Writer(bool),
    Timer,
}

/// What woke one turn of the loop, when it concerns the caller.
pub(crate) enum Turn<A> {
    App(A),
    Engine,
}

impl<C: SessionControl> Link<C> {
    /// Opens the data channel and completes the handshake.
    /// A `predial` serves the first dial.
    pub async fn connect(
        target: StreamTarget,
        control: Arc<C>,
        options: Options,
        mut predial: Option<Predial>,
        pending: &mut Vec<Event>,
    ) -> Result<(Link<C>, SessionMode), SessionError> {
        // A failed dial has not used the token: retry it a few times, as the plugin does.
        let mut attempt = 1;
        let socket = loop {
            match socket::open(
                &target,
                control.as_ref(),
                &options.client_version,
                options.connect_timeout,
                predial.take(),
            )
            .await
            {
                Ok(socket) => break socket,
                Err(error) if attempt < INITIAL_DIAL_ATTEMPTS && !is_final(&error) => {
                    tracing::debug!(attempt, %error, "opening the data channel failed; retrying");
                    sleep(backoff(&options, attempt)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        let config = EngineConfig {
            channel: ChannelConfig {
                pacing: options.pacing,
                window: options.window,
                ..ChannelConfig::default()
            },
            client_version: options.client_version.clone(),
            handshake_timeout: options.handshake_timeout,
        };
        let now = Instant::now();
        let mut link = Link {
            conn: Connection::new(config, now.into_std()),
            session_id: target.session_id,
            control,
            socket,
            heard: false,
            next_ping: now,
            pong_deadline: None,
            reconnects: 0,
            failed_attempts: 0,
            customer_message: String::new(),
            options,
        };
        loop {
            link.turn(true, std::future::pending::<()>()).await?;
            while let Some(event) = link.conn.poll_event() {
                match event {
                    Event::HandshakeComplete {
                        mode,
                        customer_message,
                        ..
                    } => {
                        tracing::debug!(?mode, "handshake complete");
                        if !customer_message.is_empty() {
                            link.customer_message = customer_message;
                        }
                        return Ok((link, mode));
                    }
                    Event::DataKeyNeeded { key_id } => {
                        let key = link.control.data_key(&link.session_id, &key_id).await;
                        link.conn.provide_data_key(key);
                    }
                    other => pending.push(other),
                }
            }
            if let Some(error) = pending.iter().find_map(fatal) {
                // Let the refusal reach the agent so it stops waiting.
                link.flush_briefly().await;
                return Err(error);
            }
        }
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub fn control(&self) -> &Arc<C> {
        &self.control
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            protocol: self.conn.stats().clone(),
            reconnects: self.reconnects,
        }
    }

    /// Writes whatever the engine has to send, as far as the writer queue allows.
    /// Returns false when the queue is full.
    fn transmit(&mut self) -> bool {
        let now = Instant::now().into_std();
        loop {
            let permit = match self.socket.write.try_reserve() {
                Ok(permit) => permit,
                Err(TrySendError::Full(())) => return false,
                // The writer died; the read side will report it.
                Err(TrySendError::Closed(())) => return true,
            };
            match self.conn.poll_transmit(now) {
                Some(bytes) => permit.send(Message::Binary(bytes)),
                None => return true,
            }
        }
    }

    /// One turn: send what is due, then wait for the websocket, a timer, the
    /// writer, or `app`. `read` false stops reading (the application is full).
    pub async fn turn<A>(
        &mut self,
        read: bool,
        app: impl Future<Output = A>,
    ) -> Result<Turn<A>, SessionError> {
        let writer_open = self.transmit();
        let now = Instant::now();
        let mut deadline = self.next_ping;
        if writer_open {
            if let Some(at) = self.conn.poll_timeout(now.into_std()) {
                deadline = deadline.min(Instant::from_std(at));
            }
        }
        if let Some(pong) = self.pong_deadline.filter(|_| read) {
            deadline = deadline.min(pong);
        }
        let writer_closed = self.socket.write.is_closed();
        let wake = tokio::select! {
            biased;
            message = self.socket.read.next(), if read && !writer_closed => Wake::Message(message),
            permit = self.socket.write.reserve(), if !writer_open => Wake::Writer(permit.is_ok()),
            _ = std::future::ready(()), if writer_closed => Wake::Writer(false),
            _ = sleep_until(deadline) => Wake::Timer,
            a = app => return Ok(Turn::App(a)),
        };
        match wake {
            Wake::Message(message) => self.on_message(message).await?,
            Wake::Writer(true) => {}
            Wake::Writer(false) => self.reconnect("websocket write failed".to_owned()).await?,
            Wake::Timer => self.on_timer(read).await?,
        }
        Ok(Turn::Engine)
    }

    async fn on_timer(&mut self, reading: bool) -> Result<(), SessionError> {
        let now = Instant::now();
        self.conn.handle_timeout(now.into_std());
        match self.pong_deadline {
            Some(pong) if now >= pong && reading => {
                return self
                    .reconnect(format!("no pong within {:?}", self.options.pong_timeout))
                    .await;
            }
            // Not reading means pongs are not being read either: do not count it.
            Some(pong) if now >= pong => self.pong_deadline = Some(now + self.options.pong_timeout),
            _ => {}
        }
        if now >= self.next_ping {
            let ping = Message::Ping(Bytes::from_static(PING_PAYLOAD));
            self.next_ping = if self.socket.write.try_send(ping).is_ok() {
                now + self.options.ping_interval
            } else {
                // The writer queue is full (a socket taking no bytes looks like
                // this): retry soon, and let the deadline run from now all the same.
                now + PING_RETRY
            };
            if self.pong_deadline.is_none() {
                self.pong_deadline = Some(now + self.options.pong_timeout);
            }
        }
        Ok(())
    }

    async fn on_message(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), SessionError> {
        let now = Instant::now().into_std();
        if let Some(Ok(Message::Binary(_) | Message::Text(_) | Message::Pong(_))) = &message {
            self.heard = true;
            self.failed_attempts = 0;
        }
        match message {
            Some(Ok(Message::Binary(bytes))) => self.conn.handle_frame(now, &bytes),
            Some(Ok(Message::Text(text))) => self.conn.handle_frame(now, text.as_bytes()),
            Some(Ok(Message::Pong(_))) => self.pong_deadline = None,
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                if !self.heard
                    && self.reconnects == 0
                    && frame.as_ref().is_some_and(|f| f.code == CloseCode::Policy)
                {
                    return Err(SessionError::TokenRefused);
                }
                let why = frame.map_or("websocket closed".to_owned(), |f| {
                    format!("websocket closed ({} {})", u16::from(f.code), f.reason)
                });
                self.reconnect(why).await?;
            }
            Some(Err(error)) => self.reconnect(error.to_string()).await?,
            None => {
                self.reconnect("websocket closed without a close frame".to_owned())
                    .await?
            }
        }
        Ok(())
    }

    /// Replaces a dead websocket: ResumeSession for a new token, redial, a fresh
    /// OpenDataChannel. Sequence state stays; data queued meanwhile waits.
    async fn reconnect(&mut self, why: String) -> Result<(), SessionError> {
        if self.conn.is_over() {
            return Ok(());
        }
        tracing::debug!(session = %self.session_id, reason = %why, "data channel lost; reconnecting");
        let mut last = why;
        let attempts = self.options.max_reconnects;
        for attempt in self.failed_attempts + 1..=attempts {
            self.failed_attempts = attempt;
            sleep(backoff(&self.options, attempt)).await;
            let target = match self.control.resume(&self.session_id).await {
                Ok(target) => target,
                Err(error) if !error.retryable => return Err(SessionError::Resume(error.message)),
                Err(error) => {
                    last = format!("ResumeSession: {}", error.message);
                    continue;
                }
            };
            match socket::open(
                &target,
                self.control.as_ref(),
                &self.options.client_version,
                self.options.connect_timeout,
                None,
            )
            .await
            {
                Ok(socket) => {
                    self.socket = socket;
                    self.heard = false;
                    self.pong_deadline = None;
                    self.next_ping = Instant::now();
                    self.reconnects += 1;
                    self.conn.on_reconnected();
                    tracing::debug!(session = %self.session_id, attempt, "data channel reconnected");
                    return Ok(());
                }
                Err(error) if is_final(&error) => return Err(error),
                Err(error) => {
                    tracing::debug!(attempt, %error, "reconnect attempt failed");
                    last = error.to_string();
                }
            }
        }
        Err(SessionError::Disconnected { attempts, last })
    }

    /// Gives queued frames (a refusal, a TerminateSession flag) a moment to leave.
    pub async fn flush_briefly(&mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while !self.transmit() {
                if self.socket.write.reserve().await.is_err() {
                    return;
                }
            }
            // Wait for the writer to drain its queue.
            while self.socket.write.capacity() < self.socket.write.max_capacity()
                && !self.socket.write.is_closed()
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Ends the session from our side: Flag TerminateSession, wait for the
    /// acknowledgements (≤ `drain_timeout`), then the TerminateSession API.
    /// Returns the `channel_closed` Output if one came meanwhile.
    pub async fn terminate(&mut self) -> String {
        self.conn.send_flag(crate::payload::flag::TERMINATE_SESSION);
        let mut events = Vec::new();
        let drained = self.drain(&mut events).await;
        if let Err(error) = self.control.terminate(&self.session_id).await {
            tracing::debug!(%error, "TerminateSession failed");
        }
        if let Err(error) = drained {
            tracing::debug!(%error, "the session ended while draining");
        }
        events
            .into_iter()
            .find_map(|e| match e {
                Event::Closed { output } => Some(output),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Waits until everything queued is acknowledged, the session ends, or the
    /// drain timeout passes.
    pub async fn drain(&mut self, events: &mut Vec<Event>) -> Result<(), SessionError> {
        let deadline = Instant::now() + self.options.drain_timeout;
        while !self.conn.is_flushed() && !self.conn.is_over() {
            match self.turn(true, sleep_until(deadline)).await? {
                Turn::App(()) => break,
                Turn::Engine => events.extend(std::iter::from_fn(|| self.conn.poll_event())),
            }
        }
        Ok(())
    }
}

/// Exponential backoff from `reconnect_initial_delay`, capped, with jitter in
/// A dial failure that another attempt cannot cure: no credentials to sign with.
fn is_final(error: &SessionError) -> bool {
    matches!(error, SessionError::Sign(_))
}

/// [50 %, 100 %] so that many sessions do not redial in lockstep.
fn backoff(options: &Options, attempt: u32) -> Duration {
    let base = options
        .reconnect_initial_delay
        .saturating_mul(1u32 << (attempt - 1).min(16))
        .min(options.reconnect_max_delay);
    base.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// The error an engine event means, if it is fatal.
pub(crate) fn fatal(event: &Event) -> Option<SessionError> {
    match event {
        Event::Failed(EngineError::HandshakeTimeout(t)) => Some(SessionError::HandshakeTimeout(*t)),
        Event::Failed(EngineError::Unsupported(why)) => {
            Some(SessionError::Unsupported(why.clone()))
        }
        Event::Failed(EngineError::BadHandshake(why)) => Some(SessionError::Protocol(why.clone())),
        Event::Failed(EngineError::Kms(why)) => Some(SessionError::Kms(why.clone())),
        Event::Failed(EngineError::Decrypt(why)) => Some(SessionError::Decrypt(why.clone())),
        Event::Closed { output } => Some(SessionError::Closed(if output.is_empty() {
            "no reason given".to_owned()
        } else {
            output.clone()
        })),
        _ => None,
    }
}
