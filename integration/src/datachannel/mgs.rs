//! The fake Message Gateway Service: the websocket endpoint, the per-session
//! hub that outlives client websockets, and the frames MGS itself originates.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{BufMut, Bytes, BytesMut};
use sm_ssh_proxy::frame::{message_type, payload_type, Frame, SHORT_HEADER_LENGTH};
use sm_ssh_proxy::payload::{ChannelClosed, OpenDataChannel};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval_at, sleep_until, timeout_at, Instant};
use uuid::Uuid;

use super::agent::{version, Agent, AgentEvent};
use super::faults::{Direction, Kind, Lane, Relayed};
use super::{pacing, DataPlane, Stats};
use crate::world::{Grant, SharedWorld};

/// How long MGS waits for the OpenDataChannel message.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The agent's keepalive ping interval; MGS pings its clients as often.
const PING_INTERVAL: Duration = Duration::from_secs(54);
/// Close code for a refused OpenDataChannel (policy violation).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_NORMAL: u16 = 1000;

/// Milliseconds since the Unix epoch, never zero.
pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
        .max(1)
}

/// Serves one client websocket of `session_id` until it closes.
pub(crate) async fn serve(world: SharedWorld, session_id: String, mut socket: WebSocket) {
    let plane = world
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .data_plane
        .clone();
    let grant = match open(&world, &session_id, &mut socket).await {
        Ok(grant) => grant,
        Err(reason) => {
            plane.stats.refused_tokens.fetch_add(1, Relaxed);
            tracing::info!(session_id, reason, "data channel refused");
            close(&mut socket, CLOSE_POLICY, &reason).await;
            return;
        }
    };
    let cut_after = grant.faults.cut_after_messages;
    let cut_every = grant.faults.cut_every_ms.map(Duration::from_millis);
    let (hub, mut attachment) = Hub::join(&plane, &world, grant);
    let cut_at = cut_every.map(|every| Instant::now() + every);
    let mut ping = interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut relayed = 0u64;
    let mut unsent = None;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(bytes))) => {
                    hub.relay_to_agent(bytes);
                    relayed += 1;
                }
                // Both ends parse text messages as binary frames too.
                Some(Ok(Message::Text(text))) => {
                    hub.relay_to_agent(Bytes::copy_from_slice(text.as_str().as_bytes()));
                    relayed += 1;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            outgoing = attachment.rx.recv() => {
                let Some(message) = outgoing else { break };
                let last = message.last;
                if socket.send(Message::Binary(message.bytes.clone())).await.is_err() {
                    unsent = Some(message);
                    break;
                }
                relayed += 1;
                if last {
                    close(&mut socket, CLOSE_NORMAL, "session closed").await;
                    break;
                }
            }
            _ = &mut attachment.kicked => break,
            _ = sleep_until(cut_at.unwrap_or_else(Instant::now)), if cut_at.is_some() => {
                cut(&plane, &mut socket).await;
                break;
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::from_static(b"keepalive"))).await.is_err() {
                    break;
                }
            }
        }
        if cut_after.is_some_and(|limit| relayed >= limit) {
            cut(&plane, &mut socket).await;
            break;
        }
    }
    hub.detach(attachment, unsent);
}

/// Reads and checks the OpenDataChannel message; the reason on refusal.
/// Pings and pongs before it are skipped: the plugin starts pinging as soon
/// as the socket opens (`websocketchannel.go` `Open` → `StartPings`).
async fn open(
    world: &SharedWorld,
    session_id: &str,
    socket: &mut WebSocket,
) -> Result<Grant, String> {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    let text = loop {
        match timeout_at(deadline, socket.recv()).await {
            Ok(Some(Ok(Message::Text(text)))) => break text,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(_))) => return Err("expected an OpenDataChannel text message".into()),
            Ok(_) => return Err("connection closed before OpenDataChannel".into()),
            Err(_) => return Err("timed out waiting for OpenDataChannel".into()),
        }
    };
    let request: OpenDataChannel = serde_json::from_str(text.as_str())
        .map_err(|e| format!("malformed OpenDataChannel: {e}"))?;
    let mut world = world.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(minimum) = &world.data_channel.min_client_version {
        let reported = request.client_version.as_deref().unwrap_or_default();
        if version(reported) < version(minimum) {
            return Err(format!(
                "ClientVersion {reported:?} is below the minimum supported {minimum}; \
                 update the Session Manager plugin"
            ));
        }
    }
    world
        .redeem_token(session_id, &request.token_value)
        .map_err(|e| format!("token refused: {e}"))
}

async fn cut(plane: &DataPlane, socket: &mut WebSocket) {
    plane.stats.cuts.fetch_add(1, Relaxed);
    close(socket, CLOSE_NORMAL, "Bye").await;
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    // A close reason must fit in a control frame (123 bytes).
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// A session as MGS sees it: the two relay lanes and the client websocket
/// currently attached, if any.
pub(crate) struct Hub {
    to_agent: mpsc::UnboundedSender<Relayed>,
    to_client: mpsc::UnboundedSender<Relayed>,
    agent: mpsc::UnboundedSender<AgentEvent>,
    client: Mutex<Attached>,
    generations: AtomicU64,
    stats: Arc<Stats>,
}

/// The websocket attached to a hub, and what MGS holds for the next one.
#[derive(Default)]
struct Attached {
    client: Option<Client>,
    /// Agent messages no websocket took (none attached, or cut before they
    /// were written), oldest first.
    held: VecDeque<Relayed>,
}

/// The websocket attached to a hub.
struct Client {
    generation: u64,
    tx: mpsc::UnboundedSender<Relayed>,
    /// Dropped (which wakes the connection) when a newer websocket attaches.
    _kick: oneshot::Sender<()>,
}

/// What a connection gets from attaching.
pub(crate) struct Attachment {
    generation: u64,
    rx: mpsc::UnboundedReceiver<Relayed>,
    kicked: oneshot::Receiver<()>,
}

impl Hub {
    /// Attaches a websocket to the session of `grant`, starting the session's
    /// lanes and agent on its first attach.
    fn join(plane: &DataPlane, world: &SharedWorld, grant: Grant) -> (Arc<Hub>, Attachment) {
        let mut hubs = plane.hubs();
        if let Some(hub) = hubs.get(&grant.session_id).cloned() {
            drop(hubs);
            let attachment = hub.attach();
            plane.stats.reconnects.fetch_add(1, Relaxed);
            // MGS tells the agent its peer is back.
            let _ = hub.agent.send(AgentEvent::Publication { pause: false });
            return (hub, attachment);
        }
        let (to_agent, to_agent_rx) = mpsc::unbounded_channel();
        let (to_client, to_client_rx) = mpsc::unbounded_channel();
        let (agent_tx, agent_rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub {
            to_agent,
            to_client: to_client.clone(),
            agent: agent_tx.clone(),
            client: Mutex::default(),
            generations: AtomicU64::new(0),
            stats: plane.stats.clone(),
        });
        let attachment = hub.attach();
        hubs.insert(grant.session_id.clone(), hub.clone());
        drop(hubs);

        let lane = lane_for(&grant, Direction::ToAgent, plane.stats.clone());
        tokio::spawn(lane.run(to_agent_rx, move |message| {
            agent_tx.send(AgentEvent::Frame(message.bytes)).is_ok()
        }));
        let lane = lane_for(&grant, Direction::ToClient, plane.stats.clone());
        let weak: Weak<Hub> = Arc::downgrade(&hub);
        tokio::spawn(lane.run(to_client_rx, move |message| match weak.upgrade() {
            Some(hub) => {
                hub.deliver(message);
                true
            }
            None => false,
        }));
        let agent = Agent::new(grant, world.clone(), plane.clone(), to_client, agent_rx);
        tokio::spawn(agent.run());
        (hub, attachment)
    }

    /// A new websocket takes over the session, starting with what MGS held.
    fn attach(&self) -> Attachment {
        let generation = self.generations.fetch_add(1, Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let (kick, kicked) = oneshot::channel();
        let mut attached = self.lock_client();
        for message in attached.held.drain(..) {
            let _ = tx.send(message);
        }
        let previous = attached.client.replace(Client {
            generation,
            tx,
            _kick: kick,
        });
        drop(attached);
        drop(previous);
        Attachment {
            generation,
            rx,
            kicked,
        }
    }

    /// A websocket ended: what it had not written (`unsent`, then its queue)
    /// goes to the websocket that replaced it, or is held for the next one.
    fn detach(&self, mut attachment: Attachment, unsent: Option<Relayed>) {
        let mut attached = self.lock_client();
        let mut left: VecDeque<Relayed> = unsent.into_iter().collect();
        while let Ok(message) = attachment.rx.try_recv() {
            left.push_back(message);
        }
        let ours = attached
            .client
            .as_ref()
            .is_some_and(|c| c.generation == attachment.generation);
        if !ours {
            if let Some(newer) = &attached.client {
                for message in left {
                    let _ = newer.tx.send(message);
                }
            } else {
                attached.held.extend(left);
            }
            return;
        }
        attached.client = None;
        left.append(&mut attached.held);
        attached.held = left;
        drop(attached);
        // MGS tells the agent its peer is gone.
        let _ = self.agent.send(AgentEvent::Publication { pause: true });
    }

    fn relay_to_agent(&self, bytes: Bytes) {
        let _ = self.to_agent.send(Relayed::new(bytes));
    }

    /// Hands a message that came out of the to-client lane to the websocket.
    /// With no websocket attached MGS holds the message for the next one.
    fn deliver(&self, message: Relayed) {
        let mut attached = self.lock_client();
        let message = match &attached.client {
            Some(client) => match client.tx.send(message) {
                Ok(()) => return,
                Err(mpsc::error::SendError(message)) => message,
            },
            None => message,
        };
        self.stats.held_detached.fetch_add(1, Relaxed);
        attached.held.push_back(message);
    }

    pub(crate) fn publication_to_client(&self, pause: bool) -> bool {
        self.to_client.send(publication(pause)).is_ok()
    }

    /// The `channel_closed` MGS sends when the session is over.
    pub(crate) fn channel_closed(
        session_id: &str,
        target: &str,
        output: &str,
        short: bool,
    ) -> Relayed {
        let body = ChannelClosed {
            message_id: Uuid::new_v4().to_string(),
            created_date: now_millis().to_string(),
            destination_id: target.to_owned(),
            session_id: session_id.to_owned(),
            message_type: message_type::CHANNEL_CLOSED.to_owned(),
            schema_version: 1,
            output: output.to_owned(),
        };
        let payload = serde_json::to_vec(&body).expect("ChannelClosed serialises");
        let frame = Frame::new(
            message_type::CHANNEL_CLOSED,
            now_millis(),
            0,
            0,
            payload_type::NONE,
            payload,
        );
        let bytes = if short {
            short_header(&frame)
        } else {
            frame.encode()
        };
        Relayed {
            bytes,
            kind: Kind::Service,
            last: true,
        }
    }

    fn lock_client(&self) -> std::sync::MutexGuard<'_, Attached> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The lane relaying one direction of a session, with that direction's
/// faults and the session's latency and rate ceiling.
fn lane_for(grant: &Grant, direction: Direction, stats: Arc<Stats>) -> Lane {
    let faults = &grant.faults;
    let one_way = match direction {
        Direction::ToAgent => &faults.to_agent,
        Direction::ToClient => &faults.to_client,
    };
    Lane::new(
        one_way.clone(),
        faults.seed,
        faults.latency_ms,
        pacing::ceiling(grant.pacing),
        direction,
        stats,
    )
}

/// `pause_publication` or `start_publication`, as MGS sends them.
fn publication(pause: bool) -> Relayed {
    let name = if pause {
        message_type::PAUSE_PUBLICATION
    } else {
        message_type::START_PUBLICATION
    };
    let frame = Frame::new(name, now_millis(), 0, 0, payload_type::NONE, Bytes::new());
    Relayed {
        bytes: frame.encode(),
        kind: Kind::Service,
        last: false,
    }
}

/// The form some MGS `channel_closed` frames have been seen in: HeaderLength
/// 112 (no PayloadType) and the type padded with NULs.
fn short_header(frame: &Frame) -> Bytes {
    let full = frame.encode();
    let mut out = BytesMut::with_capacity(full.len() - 4);
    out.put_u32(SHORT_HEADER_LENGTH as u32);
    let mut name = [0u8; 32];
    let len = frame.message_type.len().min(32);
    name[..len].copy_from_slice(&frame.message_type.as_bytes()[..len]);
    out.put_slice(&name);
    out.put_slice(&full[36..SHORT_HEADER_LENGTH]);
    out.put_u32(frame.payload.len() as u32);
    out.put_slice(&frame.payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_channel_closed_decodes_with_the_shared_codec() {
        let message = Hub::channel_closed("s-1", "mi-0123", "bye", true);
        assert_eq!(&message.bytes[..4], &112u32.to_be_bytes());
        assert_eq!(message.bytes[4 + 14], 0, "type is NUL padded");
        let frame = Frame::decode(&message.bytes).unwrap();
        assert_eq!(frame.message_type, message_type::CHANNEL_CLOSED);
        let body: ChannelClosed = serde_json::from_slice(&frame.payload).unwrap();
        assert_eq!(body.output, "bye");
        assert_eq!(body.session_id, "s-1");
        assert_eq!(body.destination_id, "mi-0123");
    }
}
