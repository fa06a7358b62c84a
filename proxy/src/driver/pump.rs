//! The loop between a [`Link`] and the application's bytes, shared by `bridge`
//! (one stream for the whole session) and `forward_basic` (one TCP connection
//! after another, and stretches with no local connection at all).

use std::collections::VecDeque;
use std::future::Future;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::link::{fatal, Link, Turn};
use super::{SessionControl, SessionEnd, SessionError};
use crate::connection::Event;
use crate::payload::flag;

/// Output chunks held for the application before reading the websocket pauses.
pub(crate) const OUTPUT_QUEUE: usize = 256;
const READ_CHUNK: usize = 16 * 1024;

/// The application end attached to the session: where input comes from and
/// where received bytes go.
pub(crate) struct Local<'a> {
    /// `None` once the local side has ended its input (basic mode's half-close grace).
    pub input: Option<&'a mut mpsc::Receiver<Bytes>>,
    pub output: &'a mpsc::Sender<Bytes>,
}

/// Why [`Pump::run`] returned.
pub(crate) enum Stop<A> {
    /// `channel_closed` from the service, with its Output (already handed to
    /// the local output, if one was attached).
    Closed(String),
    /// The local input ended (EOF or a read error).
    InputEnded,
    /// The local output is gone (its writer failed).
    OutputGone,
    /// The caller's own future finished.
    App(A),
}

pub(crate) struct Pump<C> {
    pub link: Link<C>,
    /// Received bytes not yet taken by the application; bounded by pausing the
    /// websocket at `OUTPUT_QUEUE` chunks.
    output: VecDeque<Bytes>,
    /// Input the engine has not accepted yet (its window is full).
    input: Option<Bytes>,
    events: Vec<Event>,
}

enum Wake<A> {
    Input(Option<Bytes>),
    OutputReady,
    Other(A),
}

impl<C: SessionControl> Pump<C> {
    /// `events` are those that arrived with the handshake.
    pub fn new(link: Link<C>, events: Vec<Event>) -> Pump<C> {
        Pump {
            link,
            output: VecDeque::new(),
            input: None,
            events,
        }
    }

    /// Moves bytes between the session and `local` until the session closes,
    /// `local` ends, or `other` finishes. Without `local`, received bytes are
    /// held (see docs/protocol.md, basic port forwarding).
    pub async fn run<A>(
        &mut self,
        mut local: Option<Local<'_>>,
        other: impl Future<Output = A>,
    ) -> Result<Stop<A>, SessionError> {
        tokio::pin!(other);
        loop {
            let link = &mut self.link;
            self.events
                .extend(std::iter::from_fn(|| link.conn.poll_event()));
            for event in std::mem::take(&mut self.events) {
                match event {
                    Event::Data(bytes) => self.output.push_back(bytes),
                    Event::Closed { output: text } => {
                        if let Some(local) = &local {
                            send_all(local.output, std::mem::take(&mut self.output)).await;
                        }
                        return Ok(Stop::Closed(text));
                    }
                    Event::ConnectToPortError => {
                        tracing::warn!("the agent could not connect to the destination port")
                    }
                    Event::HandshakeComplete { .. } => {}
                    other => {
                        return Err(fatal(&other).unwrap_or_else(|| {
                            SessionError::Protocol(format!("unexpected event {other:?}"))
                        }))
                    }
                }
            }
            if let Some(local) = &local {
                if !self.offer(local.output) {
                    return Ok(Stop::OutputGone);
                }
            }
            if let Some(bytes) = self.input.take() {
                let accepted = self.link.conn.send_data(&bytes);
                if accepted < bytes.len() {
                    self.input = Some(bytes.slice(accepted..));
                }
            }
            let attached = local.is_some();
            let (in_rx, out_tx) = match &mut local {
                Some(local) => (local.input.as_deref_mut(), Some(local.output)),
                None => (None, None),
            };
            let want_input = in_rx.is_some() && self.input.is_none() && self.link.conn.can_send();
            let want_output = attached && !self.output.is_empty();
            let other = &mut other;
            let app = async move {
                tokio::select! {
                    received = async { in_rx.expect("attached").recv().await }, if want_input => {
                        Wake::Input(received)
                    }
                    _ = async { out_tx.expect("attached").reserve().await }, if want_output => {
                        Wake::OutputReady
                    }
                    a = other => Wake::Other(a),
                }
            };
            match self
                .link
                .turn(self.output.len() < OUTPUT_QUEUE, app)
                .await?
            {
                Turn::App(Wake::Input(Some(bytes))) => self.input = Some(bytes),
                Turn::App(Wake::Input(None)) => return Ok(Stop::InputEnded),
                Turn::App(Wake::Other(a)) => return Ok(Stop::App(a)),
                Turn::App(Wake::OutputReady) | Turn::Engine => {}
            }
        }
    }

    /// Hands held output to `out` as far as it has room without waiting.
    /// False when `out` is closed.
    pub fn offer(&mut self, out: &mpsc::Sender<Bytes>) -> bool {
        while let Some(bytes) = self.output.pop_front() {
            match out.try_send(bytes) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(bytes)) => {
                    self.output.push_front(bytes);
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(bytes)) => {
                    self.output.push_front(bytes);
                    return false;
                }
            }
        }
        true
    }

    /// Basic port forwarding: the local connection is over. Input it sent but
    /// the engine has not taken yet goes with it.
    pub fn disconnect(&mut self) {
        self.input = None;
        self.link.conn.send_flag(flag::DISCONNECT_TO_PORT);
    }

    /// Stream messages delivered so far (to tell whether the agent sent anything).
    pub fn delivered(&self) -> u64 {
        self.link.conn.stats().messages_delivered
    }

    pub fn end(self, output: String) -> SessionEnd {
        SessionEnd {
            output,
            stats: self.link.stats(),
        }
    }

    /// Local end: TerminateSession flag, wait for acks, TerminateSession API;
    /// what arrives meanwhile goes to `out`, if any.
    pub async fn terminate(
        mut self,
        out: Option<&mpsc::Sender<Bytes>>,
    ) -> Result<SessionEnd, SessionError> {
        self.link.conn.send_flag(flag::TERMINATE_SESSION);
        let mut events = Vec::new();
        let drained = self.link.drain(&mut events).await;
        let mut text = String::new();
        for event in events {
            match event {
                Event::Data(bytes) => self.output.push_back(bytes),
                Event::Closed { output } => text = output,
                _ => {}
            }
        }
        let link = &self.link;
        if let Err(error) = link.control().terminate(link.session_id()).await {
            tracing::debug!(%error, "TerminateSession failed");
        }
        if let Some(out) = out {
            send_all(out, std::mem::take(&mut self.output)).await;
        }
        if let Err(error) = drained {
            tracing::debug!(%error, "the session ended while draining");
        }
        Ok(self.end(text))
    }
}

async fn send_all(out_tx: &mpsc::Sender<Bytes>, output: VecDeque<Bytes>) {
    for bytes in output {
        if out_tx.send(bytes).await.is_err() {
            return;
        }
    }
}

/// Reads the application's input into `tx` until EOF or an error.
pub(crate) async fn read_loop(mut reader: impl AsyncRead + Unpin, tx: mpsc::Sender<Bytes>) {
    loop {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) => return,
            Ok(_) => {
                if tx.send(buf.freeze()).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "input read failed; ending the stream");
                return;
            }
        }
    }
}

/// Writes what arrives on `rx` until it closes, flushing whenever it is empty.
pub(crate) async fn write_loop(
    mut writer: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<()> {
    while let Some(bytes) = rx.recv().await {
        writer.write_all(&bytes).await?;
        if rx.is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await
}
