//! A tiny loopback "MGS + agent" speaking the agent side of the data channel
//! over real websockets, for driver tests. Sessions survive websocket
//! reconnects; tokens are single use; faults are injected per connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sm_ssh_proxy::channel::ChannelConfig;
use sm_ssh_proxy::frame::payload_type;
use sm_ssh_proxy::handshake::version_greater;
use sm_ssh_proxy::payload::{flag, OpenDataChannel};
use sm_ssh_proxy::{ControlError, SessionControl, StreamTarget};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::Request;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::agent::{channel_closed, AgentPeer};

#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Document properties echoed in the HandshakeRequest.
    pub properties: Option<Value>,
    /// Extra handshake action (e.g. KMSEncryption).
    pub extra_action: Option<Value>,
    /// Never send the HandshakeRequest.
    pub silent: bool,
    /// Close each websocket with `1000 Bye` after this many received binary frames.
    pub recycle_after: Option<usize>,
    /// Drop each websocket without a close frame after this many received frames.
    pub cut_after: Option<usize>,
    /// Stop reading and writing (but keep the TCP connection) after this many frames, once.
    pub stall_after: Option<usize>,
    /// Fail this many smux stream dials with ConnectToPortError.
    pub fail_dials: usize,
    /// Send `channel_closed` with this output after echoing this many bytes.
    pub close_after: Option<(usize, String)>,
    /// Refuse every reconnect (token check fails).
    pub refuse_reconnects: bool,
    /// Bytes the target sends first, unasked (like an SSH banner).
    pub greeting: Vec<u8>,
}

#[derive(Default)]
pub struct Record {
    pub opens: Vec<OpenDataChannel>,
    /// Per websocket upgrade, whether it carried the header `FakeControl` signs with.
    pub signed_upgrades: Vec<bool>,
    pub flags: Vec<u32>,
    pub connections: usize,
    /// TCP connections accepted (a websocket's, or one that never upgraded).
    pub accepted: usize,
    pub streams_opened: usize,
}

struct Session {
    agent: AgentPeer,
    echo: VecDeque<u8>,
    echoed: usize,
    smux: Option<SmuxServer>,
    closed: bool,
    /// `channel_closed` to send (with this Output) once the echo is delivered.
    close_output: Option<String>,
}

pub struct FakeAgent {
    pub url_base: String,
    behaviour: Behaviour,
    tokens: Mutex<HashMap<String, String>>,
    sessions: Mutex<HashMap<String, Session>>,
    pub record: Mutex<Record>,
    stalled: Mutex<HashSet<String>>,
    counter: AtomicUsize,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }
}

impl FakeAgent {
    pub async fn start(behaviour: Behaviour) -> Arc<FakeAgent> {
        Self::listen(behaviour, None).await
    }

    /// The same agent behind TLS, at `wss://localhost:PORT` (listening on 127.0.0.1).
    pub async fn start_tls(behaviour: Behaviour, tls: Arc<rustls::ServerConfig>) -> Arc<FakeAgent> {
        Self::listen(behaviour, Some(TlsAcceptor::from(tls))).await
    }

    async fn listen(behaviour: Behaviour, tls: Option<TlsAcceptor>) -> Arc<FakeAgent> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url_base = match tls {
            None => format!("ws://{addr}/v1/data-channel"),
            Some(_) => format!("wss://localhost:{}/v1/data-channel", addr.port()),
        };
        let fake = Arc::new(FakeAgent {
            url_base,
            behaviour,
            tokens: Mutex::default(),
            sessions: Mutex::default(),
            record: Mutex::default(),
            stalled: Mutex::default(),
            counter: AtomicUsize::new(0),
            server: Mutex::default(),
        });
        let weak = Arc::downgrade(&fake);
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Some(fake) = weak.upgrade() else { return };
                fake.record.lock().unwrap().accepted += 1;
                let tls = tls.clone();
                tokio::spawn(async move {
                    let record = fake.clone();
                    // The shape is tungstenite's handshake callback.
                    #[allow(clippy::result_large_err)]
                    let note = move |request: &Request, response| {
                        let signed = request.headers().contains_key("x-test-signed");
                        record.record.lock().unwrap().signed_upgrades.push(signed);
                        Ok(response)
                    };
                    match tls {
                        None => {
                            if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, note).await {
                                fake.serve(ws).await;
                            }
                        }
                        Some(tls) => {
                            let Ok(stream) = tls.accept(tcp).await else {
                                return;
                            };
                            if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, note).await
                            {
                                fake.serve(ws).await;
                            }
                        }
                    }
                });
            }
        });
        *fake.server.lock().unwrap() = Some(server);
        fake
    }

    /// StartSession: a new session and its first token.
    pub fn start_session(&self) -> StreamTarget {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let session_id = format!("alice-{n:017x}");
        let properties = self
            .behaviour
            .properties
            .clone()
            .unwrap_or(serde_json::json!({"portNumber": "22"}));
        let agent = AgentPeer::with_extra_action(
            Instant::now(),
            ChannelConfig {
                pacing: None,
                ..ChannelConfig::default()
            },
            properties.clone(),
            self.behaviour.extra_action.clone(),
        );
        let mux = properties.get("type").and_then(Value::as_str) == Some("LocalPortForwarding");
        self.sessions.lock().unwrap().insert(
            session_id.clone(),
            Session {
                agent,
                echo: self.behaviour.greeting.iter().copied().collect(),
                echoed: 0,
                smux: mux.then(SmuxServer::default),
                closed: false,
                close_output: None,
            },
        );
        self.issue(&session_id)
    }

    fn issue(&self, session_id: &str) -> StreamTarget {
        let token = format!(
            "token-{}-secret",
            self.counter.fetch_add(1, Ordering::SeqCst)
        );
        self.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), session_id.to_owned());
        StreamTarget {
            session_id: session_id.to_owned(),
            stream_url: format!("{}/{session_id}?role=publish_subscribe", self.url_base),
            token,
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        self: Arc<Self>,
        mut ws: tokio_tungstenite::WebSocketStream<S>,
    ) {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            return;
        };
        let Ok(open) = serde_json::from_str::<OpenDataChannel>(&text) else {
            return;
        };
        let session_id = self.tokens.lock().unwrap().remove(&open.token_value);
        // The agent runs smux only for clients reporting 1.1.70 or later (§6.1).
        let basic = open
            .client_version
            .as_deref()
            .is_some_and(|v| version_greater("1.1.70", v));
        let reconnect = {
            let mut record = self.record.lock().unwrap();
            record.opens.push(open);
            record.connections += 1;
            record.connections > 1
        };
        let refused = session_id.is_none() || (reconnect && self.behaviour.refuse_reconnects);
        let Some(session_id) = session_id.filter(|_| !refused) else {
            let _ = ws
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Policy,
                    reason: "invalid token".into(),
                })))
                .await;
            return;
        };
        if let Some(session) = self.sessions.lock().unwrap().get_mut(&session_id) {
            if reconnect {
                session.agent.channel.on_reconnected();
            } else if basic {
                session.smux = None;
            }
        }
        let mut received = 0usize;
        loop {
            let frames = self.outgoing(&session_id);
            if !self.behaviour.silent {
                for bytes in frames {
                    if ws.feed(Message::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            let wake = self.poll_timeout(&session_id);
            let message = tokio::select! {
                m = ws.next() => m,
                _ = sleep_until_opt(wake) => continue,
            };
            match message {
                Some(Ok(Message::Binary(bytes))) => {
                    received += 1;
                    self.incoming(&session_id, &bytes);
                }
                Some(Ok(_)) => continue,
                _ => return,
            }
            if self.behaviour.recycle_after.is_some_and(|n| received >= n) {
                let _ = ws
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "Bye".into(),
                    })))
                    .await;
                return;
            }
            if self.behaviour.cut_after.is_some_and(|n| received >= n) {
                return; // dropping the socket: no close frame
            }
            if self.behaviour.stall_after.is_some_and(|n| received >= n)
                && self.stalled.lock().unwrap().insert(session_id.clone())
            {
                // Hold the socket open, reading nothing (so no pongs either).
                std::future::pending::<()>().await;
            }
        }
    }

    /// True once everything the target sent so far was acknowledged by the client.
    pub fn all_acked(&self, session_id: &str) -> bool {
        let sessions = self.sessions.lock().unwrap();
        let session = &sessions[session_id];
        session.echo.is_empty() && session.agent.channel.is_flushed()
    }

    fn outgoing(&self, session_id: &str) -> Vec<bytes::Bytes> {
        let mut sessions = self.sessions.lock().unwrap();
        let session = sessions.get_mut(session_id).unwrap();
        let now = Instant::now();
        while !session.echo.is_empty() {
            let chunk: Vec<u8> = session.echo.iter().take(4096).copied().collect();
            let n = session.agent.send_data(&chunk);
            if n == 0 {
                break;
            }
            session.echo.drain(..n);
            session.echoed += n;
        }
        let mut out: Vec<_> = std::iter::from_fn(|| session.agent.poll_transmit(now)).collect();
        if let Some((limit, output)) = &self.behaviour.close_after {
            if session.echoed >= *limit && session.close_output.is_none() {
                session.close_output = Some(output.clone());
            }
        }
        if !session.closed && session.echo.is_empty() && session.agent.channel.is_flushed() {
            if let Some(output) = &session.close_output {
                session.closed = true;
                out.push(channel_closed(output));
            }
        }
        out
    }

    fn poll_timeout(&self, session_id: &str) -> Option<Instant> {
        let mut sessions = self.sessions.lock().unwrap();
        sessions
            .get_mut(session_id)
            .unwrap()
            .agent
            .channel
            .poll_timeout(Instant::now())
    }

    fn incoming(&self, session_id: &str, bytes: &[u8]) {
        let mut sessions = self.sessions.lock().unwrap();
        let session = sessions.get_mut(session_id).unwrap();
        session.agent.handle(Instant::now(), bytes);
        let data = std::mem::take(&mut session.agent.received);
        let flags = std::mem::take(&mut session.agent.flags);
        let mut record = self.record.lock().unwrap();
        for &value in &flags {
            record.flags.push(value);
            if value == flag::TERMINATE_SESSION {
                session.close_output.get_or_insert_with(String::new);
            }
        }
        match &mut session.smux {
            None => session.echo.extend(data),
            Some(smux) => {
                let mut failures = self
                    .behaviour
                    .fail_dials
                    .saturating_sub(record.streams_opened);
                let replies = smux.handle(&data, &mut |_| {
                    record.streams_opened += 1;
                    if failures > 0 {
                        failures -= 1;
                        false
                    } else {
                        true
                    }
                });
                for reply in replies {
                    match reply {
                        Reply::Bytes(bytes) => session.echo.extend(bytes),
                        Reply::DialFailed(id) => {
                            session.agent.channel.send_message(
                                payload_type::FLAG,
                                &flag::CONNECT_TO_PORT_ERROR.to_be_bytes(),
                            );
                            session.echo.extend(smux_frame(1, id, &[]));
                        }
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn smux_frame(cmd: u8, id: u32, data: &[u8]) -> Vec<u8> {
    let mut out = vec![1, cmd];
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(data);
    out
}

enum Reply {
    Bytes(Vec<u8>),
    DialFailed(u32),
}

/// The agent's smux server with an echo "target" behind every stream; a
/// failed dial sends Flag ConnectToPortError, then the stream's FIN.
#[derive(Default)]
struct SmuxServer {
    buffer: Vec<u8>,
    open: HashSet<u32>,
}

impl SmuxServer {
    fn handle(&mut self, data: &[u8], dial: &mut dyn FnMut(u32) -> bool) -> Vec<Reply> {
        self.buffer.extend_from_slice(data);
        let mut replies = Vec::new();
        while self.buffer.len() >= 8 {
            assert_eq!(self.buffer[0], 1, "smux version 1");
            let cmd = self.buffer[1];
            let len = u16::from_le_bytes([self.buffer[2], self.buffer[3]]) as usize;
            if self.buffer.len() < 8 + len {
                break;
            }
            let id = u32::from_le_bytes(self.buffer[4..8].try_into().unwrap());
            let body: Vec<u8> = self.buffer[8..8 + len].to_vec();
            self.buffer.drain(..8 + len);
            match cmd {
                0 => {
                    assert!(id % 2 == 1 && id >= 3, "client stream ids are odd from 3");
                    if dial(id) {
                        self.open.insert(id);
                    } else {
                        replies.push(Reply::DialFailed(id));
                    }
                }
                // No half-close, as on the agent (port_mux.go handleDataTransfer):
                // the client's FIN closes the echo target both ways; it answers
                // FIN and drops whatever comes later for the stream.
                1 => {
                    if self.open.remove(&id) {
                        replies.push(Reply::Bytes(smux_frame(1, id, &[])));
                    }
                }
                2 => {
                    if self.open.contains(&id) {
                        replies.push(Reply::Bytes(smux_frame(2, id, &body)));
                    }
                }
                other => panic!("unexpected smux command {other}"),
            }
        }
        replies
    }
}

/// SessionControl over the fake: ResumeSession issues a fresh token.
pub struct FakeControl {
    pub fake: Arc<FakeAgent>,
    pub resumes: AtomicUsize,
    pub terminated: Mutex<Vec<String>>,
    /// The StreamUrl of every upgrade the driver asked to have signed.
    pub signed: Mutex<Vec<String>>,
}

impl FakeControl {
    pub fn new(fake: &Arc<FakeAgent>) -> Arc<FakeControl> {
        Arc::new(FakeControl {
            fake: fake.clone(),
            resumes: AtomicUsize::new(0),
            terminated: Mutex::default(),
            signed: Mutex::default(),
        })
    }
}

impl SessionControl for FakeControl {
    async fn resume(&self, session_id: &str) -> Result<StreamTarget, ControlError> {
        self.resumes.fetch_add(1, Ordering::SeqCst);
        Ok(self.fake.issue(session_id))
    }

    async fn terminate(&self, session_id: &str) -> Result<(), ControlError> {
        self.terminated.lock().unwrap().push(session_id.to_owned());
        Ok(())
    }

    async fn upgrade_headers(
        &self,
        stream_url: &str,
    ) -> Result<Vec<(String, String)>, ControlError> {
        self.signed.lock().unwrap().push(stream_url.to_owned());
        Ok(vec![("x-test-signed".to_owned(), "yes".to_owned())])
    }
}
