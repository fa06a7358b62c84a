//! The SSM agent's side of one session, per `session-manager-protocol.md`
//! §5–§7: the handshake, the receiver and sender rules with head-only
//! retransmission, and the port plugin (basic raw bytes or an smux v1 server).
//!
//! The agent outlives client websockets: MGS pauses it while the client is
//! away and restarts it when a websocket re-attaches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sm_ssh_proxy::frame::{header_flags, message_type, payload_type, Frame, FrameError};
use sm_ssh_proxy::payload::{
    action_status, action_type, flag, flag_payload, parse_flag, Acknowledge, EncryptionChallenge,
    HandshakeComplete, HandshakeResponse,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::crypto::BlockCipher;
use super::faults::{Kind, Relayed};
use super::mgs::{now_millis, Hub};
use super::shell::{Shell, ShellEvent, ShellSpec};
use super::smux::{self, Demuxer, SmuxFrame};
use super::target::{self, Conn, TargetEvent};
use super::{pacing, DataPlane};
use crate::world::{Grant, Pacing, SharedWorld, SmuxKeepAlive};

/// The agent version announced in the HandshakeRequest when the instance has none.
const DEFAULT_AGENT_VERSION: &str = "3.3.1802.0";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
const RESEND_INTERVAL: Duration = Duration::from_millis(100);
/// How long the agent waits for its outgoing buffer to drain before closing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The agent's buffer capacities, in messages.
const OUTGOING_CAPACITY: usize = 100_000;
const INCOMING_CAPACITY: usize = 100_000;
/// Target events waiting for the agent; small, so a paused agent stops its readers.
const TARGET_QUEUE: usize = 16;
/// Most stream messages sent and not yet acknowledged before the agent stops
/// reading its target. The real agent sends each message with a blocking
/// websocket write (datachannel.go `SendStreamDataMessage` → `SendMessage`),
/// so its reads run at most the network's buffers ahead of the client; how
/// much MGS buffers is not public, so this stands in for both (4 MiB of
/// 1 KiB messages). Without it a fast target was read whole at once and the
/// 2 s closing drain ran out before a client could take it.
const READ_AHEAD: usize = 4096;
/// The first client version that speaks smux for LocalPortForwarding
/// (port.go `muxSupportedClientVersion`).
const MUX_MIN_CLIENT_VERSION: [u64; 3] = [1, 1, 70];
/// Agents after this one have the smux port plugin (3.0.222.0 added it).
const MUX_AGENT_AFTER: [u64; 4] = [3, 0, 196, 0];
/// 3.1.1446.0 turned smux keep-alive off for every client …
const KEEPALIVE_OFF_FROM_AGENT: [u64; 4] = [3, 1, 1446, 0];
/// … and 3.1.1575.0 only for clients above this one
/// (port.go `muxKeepAliveDisabledAfterThisClientVersion`).
const KEEPALIVE_CLIENT_GATE_FROM_AGENT: [u64; 4] = [3, 1, 1575, 0];
const KEEPALIVE_OFF_AFTER_CLIENT: [u64; 4] = [1, 2, 331, 0];
const HANDSHAKE_TIMEOUT_MESSAGE: &str =
    "Handshake timed out. Please ensure that you have the latest version of the session manager plugin.";

/// What MGS hands the agent.
pub(crate) enum AgentEvent {
    /// A websocket message from the client (after the to-agent lane).
    Frame(Bytes),
    /// `pause_publication` (true) or `start_publication` (false).
    Publication { pause: bool },
}

/// The RTO estimator of §5.4 (same constants as the plugin).
struct Rto {
    srtt: f64,
    rttvar: f64,
    rto: Duration,
}

impl Rto {
    fn new() -> Rto {
        Rto {
            srtt: 0.1,
            rttvar: 0.0,
            rto: Duration::from_millis(200),
        }
    }

    fn sample(&mut self, rtt: Duration) {
        let r = rtt.as_secs_f64();
        self.rttvar = 0.75 * self.rttvar + 0.25 * (self.srtt - r).abs();
        self.srtt = 0.875 * self.srtt + 0.125 * r;
        let rto = self.srtt + (4.0 * self.rttvar).max(0.010);
        self.rto = Duration::from_secs_f64(rto.min(1.0));
    }
}

struct Sent {
    seq: i64,
    bytes: Bytes,
    last_sent: Instant,
}

enum Phase {
    /// HandshakeRequest sent, waiting for the response until the deadline.
    Handshake {
        deadline: Instant,
    },
    Running,
    /// The session is over; waiting (≤ 2 s) for the outgoing buffer to drain.
    Draining {
        deadline: Instant,
        output: String,
    },
}

/// The session plugin, once the handshake picked a mode.
enum Plugin {
    None,
    Shell(Shell),
    Basic { ssh: bool, conn: BasicConn },
    Mux(Mux),
}

enum BasicConn {
    Dialing {
        id: u64,
    },
    Open {
        id: u64,
        conn: Conn,
    },
    /// After DisconnectToPort or a target EOF in port forwarding: redial on the next Output.
    Closed,
}

struct Mux {
    demuxer: Demuxer,
    streams: HashMap<u32, MuxStream>,
    /// Accepted streams waiting for their dial; the agent dials one at a
    /// time, in order (port_mux.go `handleServerConnections`). The front is
    /// being dialled.
    dial_queue: VecDeque<u32>,
    pipe: mpsc::Sender<Bytes>,
    control: mpsc::UnboundedSender<Bytes>,
    /// smux keep-alive, when this agent and client version run it.
    keepalive: Option<SmuxKeepAlive>,
    /// When the last smux frame (of any kind) came from the client.
    last_frame: Instant,
}

enum MuxStream {
    Dialing { pending: Vec<Bytes>, fin: bool },
    Open(Conn),
}

/// Whether the plugin took a message; "not ready" leaves it unacknowledged.
#[derive(PartialEq, Eq)]
enum Taken {
    Ready,
    NotReady,
}

pub(crate) struct Agent {
    session_id: String,
    target_id: String,
    properties: Value,
    ports: BTreeMap<u16, SocketAddr>,
    remote_hosts: BTreeMap<String, SocketAddr>,
    agent_version: String,
    pacing: Pacing,
    smux_keepalive: SmuxKeepAlive,
    withhold_acks: bool,
    fail_target_dial: bool,
    short_channel_closed: bool,
    session_type: String,
    /// The KMS key the session is encrypted with (shell types only).
    kms_key: Option<String>,
    kms_wrong_key: bool,
    /// Set once the client's data key is decrypted.
    cipher: Option<BlockCipher>,
    /// The random bytes of the encryption challenge, while it is outstanding.
    challenge: Option<Vec<u8>>,
    shell_profile: String,
    sandbox: Option<std::path::PathBuf>,
    world: SharedWorld,
    plane: DataPlane,
    terminated: watch::Receiver<bool>,
    to_client: mpsc::UnboundedSender<Relayed>,
    events: mpsc::UnboundedReceiver<AgentEvent>,
    target_tx: mpsc::Sender<TargetEvent>,
    target_rx: mpsc::Receiver<TargetEvent>,
    tasks: JoinSet<()>,

    next_seq: i64,
    outgoing: VecDeque<Sent>,
    rto: Rto,
    paused: bool,
    expected: i64,
    incoming: BTreeMap<i64, Frame>,
    phase: Phase,
    handshake_started: Instant,
    /// Set by a HandshakeResponse; completed once its ack is out.
    handshake_accepted: Option<String>,
    plugin: Plugin,
    next_conn_id: u64,
    /// Set when the session must end: the `channel_closed` Output, and whether to drain first.
    ending: Option<(String, bool)>,
}

impl Agent {
    pub(crate) fn new(
        grant: Grant,
        world: SharedWorld,
        plane: DataPlane,
        to_client: mpsc::UnboundedSender<Relayed>,
        events: mpsc::UnboundedReceiver<AgentEvent>,
    ) -> Agent {
        let agent_version = world
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .instances
            .get(&grant.target)
            .map(|i| i.agent_version.clone())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_AGENT_VERSION.to_owned());
        let (target_tx, target_rx) = mpsc::channel(TARGET_QUEUE);
        Agent {
            session_id: grant.session_id,
            target_id: grant.target,
            properties: grant.properties,
            ports: grant.ports,
            remote_hosts: grant.remote_hosts,
            agent_version,
            pacing: grant.pacing,
            smux_keepalive: grant.smux_keepalive,
            withhold_acks: grant.faults.withhold_acks,
            fail_target_dial: grant.faults.fail_target_dial,
            short_channel_closed: grant.faults.short_channel_closed,
            session_type: grant.session_type,
            kms_key: grant.kms_key,
            kms_wrong_key: grant.faults.kms_wrong_key,
            cipher: None,
            challenge: None,
            shell_profile: grant.shell_profile,
            sandbox: grant.sandbox,
            world,
            plane,
            terminated: grant.terminated,
            to_client,
            events,
            target_tx,
            target_rx,
            tasks: JoinSet::new(),
            next_seq: 0,
            outgoing: VecDeque::new(),
            rto: Rto::new(),
            paused: false,
            expected: 0,
            incoming: BTreeMap::new(),
            // The agent starts its handshake when the session starts
            // (datachannel.go, handshakeTimeout), not when the client connects.
            phase: Phase::Handshake {
                deadline: Instant::from_std(grant.started) + HANDSHAKE_TIMEOUT,
            },
            handshake_started: Instant::from_std(grant.started),
            handshake_accepted: None,
            plugin: Plugin::None,
            next_conn_id: 0,
            ending: None,
        }
    }

    pub(crate) async fn run(mut self) {
        // `sessionplugin.go` `Execute`: Port and NonInteractiveCommands always
        // shake hands, the shells only when the session is encrypted.
        let handshake = matches!(
            self.session_type.as_str(),
            "Port" | "NonInteractiveCommands"
        ) || self.kms_key.is_some();
        if handshake {
            let mut actions = vec![json!({
                "ActionType": action_type::SESSION_TYPE,
                "ActionParameters": {"SessionType": self.session_type, "Properties": self.properties},
            })];
            if let Some(key) = &self.kms_key {
                actions.push(json!({
                    "ActionType": action_type::KMS_ENCRYPTION,
                    "ActionParameters": {"KMSKeyId": key, "Challenge": random_base64(16)},
                }));
            }
            let request = json!({
                "AgentVersion": self.agent_version,
                "RequestedClientActions": actions,
            });
            self.send_stream(payload_type::HANDSHAKE_REQUEST, json_bytes(&request));
        } else {
            self.phase = Phase::Running;
            self.start_plugin(sm_ssh_proxy::CLIENT_VERSION);
        }
        let mut resend = interval(RESEND_INTERVAL);
        resend.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut keepalive = interval(Duration::from_millis(
            self.smux_keepalive.interval_ms.max(1),
        ));
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let output = loop {
            if let Some(output) = self.check_end() {
                break output;
            }
            let deadline = match &self.phase {
                Phase::Handshake { deadline } | Phase::Draining { deadline, .. } => Some(*deadline),
                Phase::Running => None,
            };
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(AgentEvent::Frame(bytes)) => self.on_message(bytes).await,
                    Some(AgentEvent::Publication { pause }) => self.paused = pause,
                    None => break String::new(),
                },
                event = self.target_rx.recv(), if !self.paused && self.outgoing.len() < READ_AHEAD => {
                    if let Some(event) = event {
                        self.on_target(event).await;
                    }
                }
                _ = resend.tick() => self.resend(),
                _ = keepalive.tick(), if self.keepalive_on() => self.keepalive(),
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    match std::mem::replace(&mut self.phase, Phase::Running) {
                        Phase::Draining { output, .. } => break output,
                        _ => self.end(HANDSHAKE_TIMEOUT_MESSAGE, false),
                    }
                }
                changed = self.terminated.changed() => {
                    if changed.is_err() || *self.terminated.borrow() {
                        break "Session terminated".to_owned();
                    }
                }
            }
        };
        self.close(&output);
    }

    /// Moves a pending end forward: drains first if asked, then yields the Output.
    fn check_end(&mut self) -> Option<String> {
        if let Some((output, drain)) = self.ending.take() {
            if !drain || self.outgoing.is_empty() {
                return Some(output);
            }
            self.phase = Phase::Draining {
                deadline: Instant::now() + DRAIN_TIMEOUT,
                output,
            };
        }
        if let Phase::Draining { output, .. } = &self.phase {
            if self.outgoing.is_empty() {
                return Some(output.clone());
            }
        }
        None
    }

    fn end(&mut self, output: &str, drain: bool) {
        if self.ending.is_none() && !matches!(self.phase, Phase::Draining { .. }) {
            self.ending = Some((output.to_owned(), drain));
        }
    }

    /// The agent is done: MGS sends `channel_closed`, the session is over for
    /// the control plane too, and the target connections go.
    fn close(mut self, output: &str) {
        tracing::info!(session_id = self.session_id, output, "session closed");
        let message = Hub::channel_closed(
            &self.session_id,
            &self.target_id,
            output,
            self.short_channel_closed,
        );
        let _ = self.to_client.send(message);
        self.plane.stats.sessions_closed.fetch_add(1, Relaxed);
        self.plane.hubs().remove(&self.session_id);
        if let Some(session) = self
            .world
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .get(&self.session_id)
        {
            session.terminated.send_replace(true);
        }
        self.plugin = Plugin::None;
        self.tasks.abort_all();
    }

    async fn on_message(&mut self, bytes: Bytes) {
        let frame = match decode_unverified(&bytes) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!(
                    session_id = self.session_id,
                    "agent dropped a malformed message: {e}"
                );
                return;
            }
        };
        match frame.message_type.as_str() {
            message_type::INPUT_STREAM_DATA => {
                self.paused = false;
                self.on_stream(frame).await;
            }
            message_type::ACKNOWLEDGE => {
                self.paused = false;
                self.on_ack(&frame);
            }
            message_type::PAUSE_PUBLICATION => self.paused = true,
            message_type::START_PUBLICATION => self.paused = false,
            message_type::CHANNEL_CLOSED => self.end("", false),
            other => tracing::debug!(
                session_id = self.session_id,
                other,
                "agent ignored a message"
            ),
        }
    }

    /// The receiver rules of §5.2.
    async fn on_stream(&mut self, frame: Frame) {
        let seq = frame.sequence_number;
        if seq == self.expected {
            if self.take(&frame).await == Taken::NotReady {
                return;
            }
            self.ack(&frame);
            self.expected += 1;
            self.after_ack().await;
            self.drain_incoming().await;
        } else if seq > self.expected {
            if self.incoming.len() < INCOMING_CAPACITY {
                self.ack(&frame);
                self.incoming.entry(seq).or_insert(frame);
            }
        } else {
            self.ack(&frame);
        }
    }

    /// Processes buffered messages that are now in sequence (acked when they arrived).
    async fn drain_incoming(&mut self) {
        while let Some(frame) = self.incoming.remove(&self.expected) {
            if self.take(&frame).await == Taken::NotReady {
                self.incoming.insert(frame.sequence_number, frame);
                return;
            }
            self.expected += 1;
            self.after_ack().await;
        }
    }

    /// Hands an in-sequence stream message to the handshake or the plugin.
    async fn take(&mut self, frame: &Frame) -> Taken {
        match self.phase {
            Phase::Handshake { .. } => {
                match frame.payload_type {
                    payload_type::HANDSHAKE_RESPONSE => self.on_handshake_response(&frame.payload),
                    payload_type::ENC_CHALLENGE_RESPONSE => {
                        self.on_challenge_response(&frame.payload)
                    }
                    // Anything else before HandshakeComplete is acked and discarded.
                    _ => {}
                }
                Taken::Ready
            }
            Phase::Running | Phase::Draining { .. } => match frame.payload_type {
                payload_type::OUTPUT => {
                    // `processStreamDataMessage`: only Output is encrypted by clients.
                    let payload = match &self.cipher {
                        None => frame.payload.clone(),
                        Some(cipher) => match cipher.decrypt(&frame.payload) {
                            Some(plain) => plain.into(),
                            None => {
                                self.end("Error decrypting stream data message", false);
                                return Taken::Ready;
                            }
                        },
                    };
                    self.on_output(payload).await
                }
                payload_type::SIZE => match &mut self.plugin {
                    Plugin::Shell(shell) if !shell.resize(&frame.payload) => Taken::NotReady,
                    _ => Taken::Ready,
                },
                payload_type::FLAG => {
                    self.on_flag(parse_flag(&frame.payload));
                    Taken::Ready
                }
                _ => Taken::Ready,
            },
        }
    }

    fn on_handshake_response(&mut self, payload: &[u8]) {
        let response: HandshakeResponse = match serde_json::from_slice(payload) {
            Ok(response) => response,
            Err(e) => return self.end(&format!("Malformed HandshakeResponse: {e}"), false),
        };
        if let Some(failed) = response
            .processed_client_actions
            .iter()
            .find(|a| a.action_status != action_status::SUCCESS)
        {
            let output = format!(
                "Client failed to perform {} (status {}): {}",
                failed.action_type, failed.action_status, failed.error
            );
            return self.end(&output, false);
        }
        if self.kms_key.is_some() {
            let result = response
                .processed_client_actions
                .iter()
                .find(|a| a.action_type == action_type::KMS_ENCRYPTION)
                .map(|a| a.action_result.clone());
            if let Err(why) = self.finalize_kms(result) {
                let output = format!("Encountered error while initiating handshake. {why}");
                return self.end(&output, false);
            }
        }
        self.handshake_accepted = Some(response.client_version);
    }

    /// `datachannel.go` `finalizeKMSEncryption`: KMS Decrypt of the client's
    /// data key with the session's context, as the instance.
    fn finalize_kms(&mut self, result: Option<Value>) -> Result<(), String> {
        let blob = result
            .as_ref()
            .and_then(|r| r.get("KMSCipherTextKey"))
            .and_then(Value::as_str)
            .and_then(|b| BASE64.decode(b).ok())
            .ok_or("client did not return a KMSCipherTextKey")?;
        let key = self.kms_key.clone().unwrap_or_default();
        let context = BTreeMap::from([
            ("aws:ssm:SessionId".to_owned(), self.session_id.clone()),
            ("aws:ssm:TargetId".to_owned(), self.target_id.clone()),
        ]);
        let world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let denied = world.denials.actions.contains("kms:Decrypt");
        let plaintext = if denied {
            Err(crate::ssm::access_denied(
                &world,
                "kms:Decrypt",
                &crate::kms::key_arn(&world, &key),
            ))
        } else {
            world
                .kms
                .decrypt(&blob, Some(&key), &context)
                .map_err(|e| crate::kms::decrypt_error(&world, e))
        }
        .map_err(|e| {
            format!(
                "Unable to retrieve data key, {}",
                crate::kms::error_text(&e)
            )
        })?;
        drop(world);
        self.cipher = Some(
            BlockCipher::new(&plaintext, self.kms_wrong_key)
                .ok_or("the data key is not 64 bytes")?,
        );
        Ok(())
    }

    /// EncChallengeResponse: it must be our challenge, sealed with the client's key.
    fn on_challenge_response(&mut self, payload: &[u8]) {
        let (Some(cipher), Some(expected)) = (&self.cipher, self.challenge.take()) else {
            return;
        };
        let answer = serde_json::from_slice::<EncryptionChallenge>(payload)
            .ok()
            .and_then(|c| BASE64.decode(c.challenge).ok())
            .and_then(|sealed| cipher.decrypt(&sealed));
        if answer.as_deref() != Some(&expected[..]) {
            return self.end(
                "Encountered error while initiating handshake. Encryption challenge does not match!",
                false,
            );
        }
        self.complete_handshake();
    }

    /// After the HandshakeResponse's ack: the encryption challenge if the
    /// session is encrypted, else HandshakeComplete and the plugin.
    async fn after_ack(&mut self) {
        if self.handshake_accepted.is_none() {
            return;
        }
        if let Some(cipher) = &self.cipher {
            if self.challenge.is_none() {
                // `sendEncryptionChallenge`: 64 random bytes, sealed with the agent's key.
                let mut challenge = vec![0u8; 64];
                rand::Rng::fill(&mut rand::rng(), &mut challenge[..]);
                let request = EncryptionChallenge {
                    challenge: BASE64.encode(cipher.encrypt(&challenge)),
                };
                self.challenge = Some(challenge);
                let payload = serde_json::to_vec(&request).expect("challenge serialises");
                self.send_stream(payload_type::ENC_CHALLENGE_REQUEST, payload.into());
                self.phase = Phase::Handshake {
                    deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                };
            }
            return;
        }
        self.complete_handshake();
    }

    fn complete_handshake(&mut self) {
        let Some(client_version) = self.handshake_accepted.take() else {
            return;
        };
        let complete = HandshakeComplete {
            handshake_time_to_complete: self.handshake_started.elapsed().as_nanos() as i64,
            customer_message: if self.cipher.is_some() {
                "This session is encrypted using AWS KMS.".to_owned()
            } else {
                String::new()
            },
        };
        let payload = serde_json::to_vec(&complete).expect("HandshakeComplete serialises");
        self.send_stream(payload_type::HANDSHAKE_COMPLETE, payload.into());
        self.phase = Phase::Running;
        self.start_plugin(&client_version);
    }

    /// §6.1 and §12: basic raw bytes unless LocalPortForwarding with an
    /// agent that has smux and a smux-capable client (port.go `GetSession`).
    fn start_plugin(&mut self, client_version: &str) {
        if self.session_type != "Port" {
            let linux = self.properties.get("linux");
            let text = |key: &str| {
                linux
                    .and_then(|l| l.get(key))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let separate = linux
                .and_then(|l| l.get("separateOutputStream"))
                .is_some_and(|v| v == &json!(true) || v == &json!("true"));
            let spec = ShellSpec {
                session_type: self.session_type.clone(),
                commands: text("commands"),
                separate_output: separate,
                sandbox: self.sandbox.clone(),
                shell_profile: self.shell_profile.clone(),
                pause: pacing::pump_pause(self.pacing),
            };
            let shell = Shell::start(spec, self.target_tx.clone(), &mut self.tasks);
            self.plugin = Plugin::Shell(shell);
            return;
        }
        if self.property("portNumber").is_none() {
            return self.end(
                "Unable to start the port plugin: portNumber is required",
                false,
            );
        }
        let forwarding = self.property("type").as_deref() == Some("LocalPortForwarding");
        let agent = version(&self.agent_version);
        let mux_agent = agent > MUX_AGENT_AFTER.to_vec();
        if forwarding && mux_agent && version(client_version) >= MUX_MIN_CLIENT_VERSION.to_vec() {
            let (pipe, frames) = mpsc::channel(TARGET_QUEUE);
            let (control, control_rx) = mpsc::unbounded_channel();
            let pause = pacing::pump_pause(self.pacing);
            target::spawn_pipe(
                frames,
                control_rx,
                self.target_tx.clone(),
                pause,
                &mut self.tasks,
            );
            let keepalive =
                keepalive_runs(&agent, &version(client_version)).then_some(self.smux_keepalive);
            self.plugin = Plugin::Mux(Mux {
                demuxer: Demuxer::default(),
                streams: HashMap::new(),
                dial_queue: VecDeque::new(),
                pipe,
                control,
                keepalive,
                last_frame: Instant::now(),
            });
        } else {
            let id = self.spawn_dial(None);
            self.plugin = Plugin::Basic {
                ssh: !forwarding,
                conn: BasicConn::Dialing { id },
            };
        }
    }

    /// A string property of the session (numbers are accepted too).
    fn property(&self, key: &str) -> Option<String> {
        match self.properties.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Where `localhost:<portNumber>` (or `host:portNumber`) leads on this instance.
    fn target_addr(&self) -> Result<SocketAddr, String> {
        let port = self.property("portNumber").unwrap_or_default();
        let unreachable = |what: &str| format!("dial tcp {what}: connect: connection refused");
        match self.property("host") {
            Some(host) if !host.is_empty() => {
                let key = format!("{host}:{port}");
                self.remote_hosts
                    .get(&key)
                    .copied()
                    .ok_or_else(|| unreachable(&key))
            }
            _ => port
                .parse::<u16>()
                .ok()
                .and_then(|p| self.ports.get(&p).copied())
                .ok_or_else(|| unreachable(&format!("localhost:{port}"))),
        }
    }

    /// Dials in the background; the result comes back as `Dialed { id }`.
    /// Basic connections get a fresh id; smux streams use their stream id.
    fn spawn_dial(&mut self, stream: Option<u32>) -> u64 {
        let id = match stream {
            Some(sid) => u64::from(sid),
            None => {
                self.next_conn_id += 1;
                self.next_conn_id
            }
        };
        let addr = self.target_addr();
        let fail = self.fail_target_dial;
        let events = self.target_tx.clone();
        self.tasks.spawn(async move {
            let result = target::dial(addr, fail).await;
            let _ = events.send(TargetEvent::Dialed { id, result }).await;
        });
        id
    }

    async fn on_output(&mut self, payload: Bytes) -> Taken {
        match &mut self.plugin {
            Plugin::None => Taken::Ready,
            Plugin::Shell(shell) => {
                if payload.is_empty() || shell.input(payload) {
                    Taken::Ready
                } else {
                    Taken::NotReady
                }
            }
            Plugin::Basic { conn, .. } => match conn {
                BasicConn::Open { conn, .. } => {
                    conn.write(payload);
                    Taken::Ready
                }
                // Data before the first dial completes is not acknowledged.
                BasicConn::Dialing { .. } => Taken::NotReady,
                BasicConn::Closed => {
                    // Reconnect on demand, in line, as the agent does.
                    self.next_conn_id += 1;
                    let id = self.next_conn_id;
                    match target::dial(self.target_addr(), self.fail_target_dial).await {
                        Ok(stream) => {
                            let conn = self.open_basic(stream, id);
                            conn.write(payload);
                            self.set_basic(BasicConn::Open { id, conn });
                        }
                        Err(e) => self.dial_failed(&e),
                    }
                    Taken::Ready
                }
            },
            Plugin::Mux(mux) => {
                mux.demuxer.push(&payload);
                while let Plugin::Mux(mux) = &mut self.plugin {
                    match mux.demuxer.next_frame() {
                        Ok(Some(frame)) => {
                            mux.last_frame = Instant::now();
                            self.on_smux(frame);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.end(&e, false);
                            break;
                        }
                    }
                }
                Taken::Ready
            }
        }
    }

    fn on_smux(&mut self, frame: SmuxFrame) {
        match frame {
            SmuxFrame::Syn(sid) => {
                let Plugin::Mux(mux) = &mut self.plugin else {
                    return;
                };
                if mux.streams.contains_key(&sid) {
                    return;
                }
                mux.streams.insert(
                    sid,
                    MuxStream::Dialing {
                        pending: Vec::new(),
                        fin: false,
                    },
                );
                mux.dial_queue.push_back(sid);
                if mux.dial_queue.len() == 1 {
                    self.spawn_dial(Some(sid));
                }
            }
            SmuxFrame::Psh(sid, data) => {
                let Plugin::Mux(mux) = &mut self.plugin else {
                    return;
                };
                match mux.streams.get_mut(&sid) {
                    Some(MuxStream::Open(conn)) => conn.write(data),
                    Some(MuxStream::Dialing { pending, .. }) => pending.push(data),
                    None => {}
                }
            }
            SmuxFrame::Fin(sid) => {
                let Plugin::Mux(mux) = &mut self.plugin else {
                    return;
                };
                match mux.streams.get_mut(&sid) {
                    // No half-close: io.Copy ends at the FIN and the agent closes
                    // the target connection, then the stream (port_mux.go
                    // handleDataTransfer). Dropping the Conn writes what is queued
                    // and closes the socket.
                    Some(MuxStream::Open(_)) => {
                        mux.streams.remove(&sid);
                        let _ = mux.control.send(smux::encode(smux::CMD_FIN, sid, b""));
                    }
                    Some(MuxStream::Dialing { fin, .. }) => *fin = true,
                    None => {}
                }
            }
            SmuxFrame::Nop => {}
        }
    }

    fn on_flag(&mut self, value: Option<u32>) {
        match value {
            Some(flag::DISCONNECT_TO_PORT) => {
                if let Plugin::Basic { conn, .. } = &mut self.plugin {
                    *conn = BasicConn::Closed;
                }
            }
            Some(flag::TERMINATE_SESSION) => self.end("", false),
            _ => {}
        }
    }

    async fn on_target(&mut self, event: TargetEvent) {
        match event {
            TargetEvent::Dialed { id, result } => self.on_dialed(id, result).await,
            TargetEvent::Data { id, bytes } => {
                if self.basic_id() == Some(id) {
                    self.send_stream(payload_type::OUTPUT, bytes);
                }
            }
            TargetEvent::Closed { id, error } => {
                if self.basic_id() != Some(id) {
                    return;
                }
                let Plugin::Basic { ssh, .. } = self.plugin else {
                    return;
                };
                if ssh {
                    match error {
                        None => self.end("", true),
                        Some(e) => self.end(&format!("Failed to read from the target: {e}"), true),
                    }
                } else {
                    // Port forwarding: wait for the next Output to redial.
                    self.set_basic(BasicConn::Closed);
                }
            }
            TargetEvent::MuxBytes(chunk) => self.send_stream(payload_type::OUTPUT, chunk),
            TargetEvent::Shell(event) => self.on_shell(event),
            // The target ended (its FIN is on the pipe): the connection closes both ways.
            TargetEvent::MuxEnded(sid) => {
                if let Plugin::Mux(mux) = &mut self.plugin {
                    if matches!(mux.streams.get(&sid), Some(MuxStream::Open(_))) {
                        mux.streams.remove(&sid);
                    }
                }
            }
        }
    }

    async fn on_dialed(&mut self, id: u64, result: Result<tokio::net::TcpStream, String>) {
        match &self.plugin {
            Plugin::Basic {
                conn: BasicConn::Dialing { id: dialing },
                ..
            } if *dialing == id => {
                match result {
                    Ok(stream) => {
                        let conn = self.open_basic(stream, id);
                        self.set_basic(BasicConn::Open { id, conn });
                        // Messages held back as "not ready" can go now.
                        self.drain_incoming().await;
                    }
                    Err(e) => self.dial_failed(&e),
                }
            }
            Plugin::Mux(_) => {
                let sid = id as u32;
                let target_tx = self.target_tx.clone();
                let Plugin::Mux(mux) = &mut self.plugin else {
                    return;
                };
                if mux.dial_queue.front() == Some(&sid) {
                    mux.dial_queue.pop_front();
                }
                let next = mux.dial_queue.front().copied();
                if let Some(MuxStream::Dialing { pending, fin }) = mux.streams.remove(&sid) {
                    match result {
                        Ok(stream) => {
                            let conn = target::open_mux(
                                stream,
                                sid,
                                mux.pipe.clone(),
                                target_tx,
                                &mut self.tasks,
                            );
                            for data in pending {
                                conn.write(data);
                            }
                            if fin {
                                // The client is gone already: write what it sent, then close.
                                drop(conn);
                                let _ = mux.control.send(smux::encode(smux::CMD_FIN, sid, b""));
                            } else {
                                mux.streams.insert(sid, MuxStream::Open(conn));
                            }
                        }
                        Err(e) => {
                            tracing::info!(
                                session_id = self.session_id,
                                sid,
                                "mux dial failed: {e}"
                            );
                            self.plane.stats.dial_failures.fetch_add(1, Relaxed);
                            // The flag, then the stream's FIN (port_mux.go
                            // handleServerConnections: SendStreamDataMessage, then
                            // stream.Close): the FIN goes round the pipe, so it
                            // reaches the client after the flag.
                            let fin = smux::encode(smux::CMD_FIN, sid, b"");
                            let _ = mux.control.send(fin);
                            let payload = flag_payload(flag::CONNECT_TO_PORT_ERROR);
                            self.send_stream(payload_type::FLAG, Bytes::copy_from_slice(&payload));
                        }
                    }
                }
                if let Some(next) = next {
                    self.spawn_dial(Some(next));
                }
            }
            _ => {}
        }
    }

    fn on_shell(&mut self, event: ShellEvent) {
        match event {
            ShellEvent::Ready(control) => {
                if let Plugin::Shell(shell) = &mut self.plugin {
                    shell.on_ready(control);
                }
            }
            ShellEvent::Output(bytes) => self.send_stream(payload_type::OUTPUT, bytes),
            ShellEvent::StdErr(bytes) => self.send_stream(payload_type::STDERR, bytes),
            ShellEvent::ExitCode(code) => {
                let text = format!("EXIT_CODE: {code}");
                self.send_stream(payload_type::EXIT_CODE, Bytes::from(text));
            }
            ShellEvent::Done => self.end("", true),
            ShellEvent::Failed(why) => self.end(&why, true),
        }
    }

    fn keepalive_on(&self) -> bool {
        matches!(&self.plugin, Plugin::Mux(mux) if mux.keepalive.is_some())
    }

    /// smux keep-alive (xtaci/smux `keepalive`): a NOP every interval; the
    /// smux session, and with it the agent's port plugin and the session,
    /// ends once nothing came from the client for the timeout.
    fn keepalive(&mut self) {
        let Plugin::Mux(mux) = &self.plugin else {
            return;
        };
        let Some(keepalive) = mux.keepalive else {
            return;
        };
        if mux.last_frame.elapsed() >= Duration::from_millis(keepalive.timeout_ms) {
            tracing::info!(session_id = self.session_id, "smux keep-alive timed out");
            // The real Output is not public; the plugin ends with the session.
            return self.end("", false);
        }
        let _ = mux.control.send(smux::encode(smux::CMD_NOP, 0, b""));
    }

    fn dial_failed(&mut self, error: &str) {
        self.plane.stats.dial_failures.fetch_add(1, Relaxed);
        self.end(
            &format!("Unable to connect to specified port: {error}"),
            false,
        );
    }

    fn open_basic(&mut self, stream: tokio::net::TcpStream, id: u64) -> Conn {
        let pause = pacing::pump_pause(self.pacing);
        target::open_basic(stream, id, self.target_tx.clone(), pause, &mut self.tasks)
    }

    fn set_basic(&mut self, next: BasicConn) {
        if let Plugin::Basic { conn, .. } = &mut self.plugin {
            *conn = next;
        }
    }

    fn basic_id(&self) -> Option<u64> {
        match &self.plugin {
            Plugin::Basic {
                conn: BasicConn::Open { id, .. },
                ..
            } => Some(*id),
            _ => None,
        }
    }

    /// Sequences, buffers and (unless paused) sends one `output_stream_data`.
    fn send_stream(&mut self, payload_type: u32, payload: Bytes) {
        // `SendStreamDataMessage`: Output, StdErr and ExitCode are encrypted.
        let payload = match &self.cipher {
            Some(cipher)
                if matches!(
                    payload_type,
                    payload_type::OUTPUT | payload_type::STDERR | payload_type::EXIT_CODE
                ) =>
            {
                Bytes::from(cipher.encrypt(&payload))
            }
            _ => payload,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let flags = if seq == 0 {
            header_flags::SYN
        } else {
            header_flags::NONE
        };
        let frame = Frame::new(
            message_type::OUTPUT_STREAM_DATA,
            now_millis(),
            seq,
            flags,
            payload_type,
            payload,
        );
        let bytes = frame.encode();
        if self.outgoing.len() < OUTGOING_CAPACITY {
            self.outgoing.push_back(Sent {
                seq,
                bytes: bytes.clone(),
                last_sent: Instant::now(),
            });
        }
        if !self.paused {
            self.emit(bytes, Kind::Stream);
        }
    }

    fn emit(&self, bytes: Bytes, kind: Kind) {
        let _ = self.to_client.send(Relayed {
            bytes,
            kind,
            last: false,
        });
    }

    fn ack(&self, frame: &Frame) {
        if self.withhold_acks {
            self.plane.stats.acks_withheld.fetch_add(1, Relaxed);
            return;
        }
        let ack = Acknowledge {
            message_type: frame.message_type.clone(),
            message_id: frame.message_id.to_string(),
            sequence_number: frame.sequence_number,
            is_sequential: true,
        };
        let payload = serde_json::to_vec(&ack).expect("Acknowledge serialises");
        let frame = Frame::new(
            message_type::ACKNOWLEDGE,
            now_millis(),
            0,
            header_flags::ACK,
            payload_type::NONE,
            payload,
        );
        self.emit(frame.encode(), Kind::Ack);
    }

    fn on_ack(&mut self, frame: &Frame) {
        let Ok(ack) = serde_json::from_slice::<Acknowledge>(&frame.payload) else {
            return;
        };
        if let Some(at) = self
            .outgoing
            .iter()
            .position(|s| s.seq == ack.sequence_number)
        {
            let sent = self.outgoing.remove(at).expect("position is in range");
            self.rto.sample(sent.last_sent.elapsed());
        }
    }

    /// Head-only retransmission, every 100 ms, skipped while paused.
    fn resend(&mut self) {
        if self.paused {
            return;
        }
        let rto = self.rto.rto;
        let Some(head) = self.outgoing.front_mut() else {
            return;
        };
        if head.last_sent.elapsed() > rto {
            head.last_sent = Instant::now();
            let bytes = head.bytes.clone();
            self.plane.stats.resends.fetch_add(1, Relaxed);
            self.emit(bytes, Kind::Stream);
        }
    }
}

/// Decodes a frame the way the agent does: without checking the digest.
fn decode_unverified(bytes: &[u8]) -> Result<Frame, FrameError> {
    match Frame::decode(bytes) {
        Err(FrameError::DigestMismatch) => {
            let mut fixed = bytes.to_vec();
            let hl = u32::from_be_bytes(fixed[..4].try_into().expect("4 bytes")) as usize;
            let len = u32::from_be_bytes(fixed[hl..hl + 4].try_into().expect("4 bytes")) as usize;
            let digest = Sha256::digest(&fixed[hl + 4..hl + 4 + len]);
            fixed[80..112].copy_from_slice(&digest);
            Frame::decode(&fixed)
        }
        other => other,
    }
}

/// Whether an agent of version `agent` runs smux keep-alive with a client of
/// version `client`: 3.0.222.0 to 3.1.1445 always, 3.1.1446.0 to 3.1.1574 never
/// (5bdad830), later ones for clients up to 1.2.331.0 (4426b37d, port_mux.go
/// `initialize`).
fn keepalive_runs(agent: &[u64], client: &[u64]) -> bool {
    if agent < &KEEPALIVE_OFF_FROM_AGENT[..] {
        true
    } else if agent < &KEEPALIVE_CLIENT_GATE_FROM_AGENT[..] {
        false
    } else {
        client <= &KEEPALIVE_OFF_AFTER_CLIENT[..]
    }
}

/// A version's numeric components; fewer components compare smaller.
pub(crate) fn version(text: &str) -> Vec<u64> {
    text.split('.')
        .map(|c| c.trim().parse().unwrap_or(0))
        .collect()
}

fn random_base64(bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), &mut random[..]);
    BASE64.encode(random)
}

fn json_bytes(value: &Value) -> Bytes {
    serde_json::to_vec(value)
        .expect("JSON value serialises")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_follows_the_reference_estimator() {
        let mut rto = Rto::new();
        assert_eq!(rto.rto, Duration::from_millis(200));
        rto.sample(Duration::from_millis(100));
        // SRTT stays 100 ms, RTTVAR 0: RTO = 100 ms + 10 ms.
        assert!(
            (rto.rto.as_secs_f64() - 0.110).abs() < 1e-9,
            "{:?}",
            rto.rto
        );
        for _ in 0..50 {
            rto.sample(Duration::from_secs(5));
        }
        assert_eq!(rto.rto, Duration::from_secs(1), "capped at one second");
    }

    #[test]
    fn versions_compare_component_wise() {
        assert!(version("1.2.707.0") >= MUX_MIN_CLIENT_VERSION.to_vec());
        assert!(version("1.1.70.0") >= MUX_MIN_CLIENT_VERSION.to_vec());
        assert!(version("1.1.69.9") < MUX_MIN_CLIENT_VERSION.to_vec());
        assert!(version("0.0.1") < MUX_MIN_CLIENT_VERSION.to_vec());
        assert!(version("1.1") < MUX_MIN_CLIENT_VERSION.to_vec());
    }

    #[test]
    fn keepalive_follows_the_agent_and_client_versions() {
        let runs = |agent: &str, client: &str| keepalive_runs(&version(agent), &version(client));
        assert!(runs("3.0.222.0", "1.2.764.0"));
        assert!(runs("3.1.1000.0", "1.2.764.0"));
        assert!(!runs("3.1.1446.0", "1.0.0.0"));
        assert!(!runs("3.1.1511.0", "1.2.764.0"));
        assert!(runs("3.1.1575.0", "1.2.331.0"));
        assert!(!runs("3.1.1575.0", "1.2.332.0"));
        assert!(!runs("3.3.1802.0", "1.2.764.0"));
        assert!(version("3.0.196.0") <= MUX_AGENT_AFTER.to_vec());
        assert!(version("3.0.222.0") > MUX_AGENT_AFTER.to_vec());
    }

    #[test]
    fn digest_is_not_checked_by_the_agent() {
        let frame = Frame::new(
            message_type::INPUT_STREAM_DATA,
            1,
            4,
            0,
            payload_type::OUTPUT,
            &b"data"[..],
        );
        let mut bytes = frame.encode().to_vec();
        bytes[80] ^= 0xff;
        assert_eq!(decode_unverified(&bytes).unwrap(), frame);
    }
}
