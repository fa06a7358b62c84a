//! The data plane of the fake: the `ssmmessages` websocket endpoint (MGS) and
//! the SSM agent behind it, emulated per session.
//!
//! `router` serves `GET /v1/data-channel/{session_id}`. The upgrade must be
//! SigV4-signed or presigned (`World::check_upgrade`); the first websocket
//! message (pings aside) must be an OpenDataChannel text frame from a recent
//! enough client whose token the `World` redeems; the session's agent is created on the first redeem and outlives
//! any one websocket, so a client can resume with a fresh token.
//!
//! - `mgs`: the websocket endpoint, the per-session hub and MGS's own frames;
//! - `faults`: one relay direction with its seeded faults, delay and ceiling;
//! - `agent`: the agent's session (handshake, sequencing, port plugin);
//! - `shell`: the agent's shell plugin (pty shells and commands);
//! - `crypto`: the agent's KMS session encryption;
//! - `target`: the agent's TCP connections to the target;
//! - `smux`: the smux v1 server of mux port forwarding;
//! - `pacing`: the pump pause and the message-rate ceiling.

mod agent;
mod crypto;
mod faults;
mod mgs;
mod pacing;
mod shell;
mod smux;
mod target;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, Path, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::world::SharedWorld;

/// The websocket endpoint of the data channel, backed by `world`.
/// The data plane's state lives in `World::data_plane`.
pub fn router(world: SharedWorld) -> Router {
    Router::new()
        .route("/v1/data-channel/{session_id}", get(upgrade))
        .with_state(world)
}

/// Serves [`router`] for `world` on 127.0.0.1, on a port of the system's
/// choosing, until the returned task is aborted: for tests and benchmarks
/// that build their own `World` rather than a whole `FakeAws`.
pub async fn serve_router(world: SharedWorld) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = router(world);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// Serves [`router`] for `world` on a listener the caller made (e.g. in a
/// network namespace), until the returned task is aborted. Call it inside a
/// tokio runtime.
pub fn serve_listener(
    world: SharedWorld,
    listener: std::net::TcpListener,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let app = router(world);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

/// Checks the upgrade's signature (as the URL the client signed: its Host
/// and the raw path and query) before accepting the websocket.
async fn upgrade(
    State(world): State<SharedWorld>,
    Path(session_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("ws://{host}{path}");
    let checked = {
        let world = world.lock().unwrap_or_else(|e| e.into_inner());
        world
            .check_upgrade(&url, &headers)
            .map_err(|refusal| (refusal, world.data_plane.stats.clone()))
    };
    if let Err((refusal, stats)) = checked {
        stats.refused_upgrades.fetch_add(1, Relaxed);
        tracing::info!(session_id, code = refusal.code, "websocket upgrade refused");
        let body = serde_json::json!({ "__type": refusal.code, "message": refusal.message });
        return (refusal.status, body.to_string()).into_response();
    }
    ws.on_upgrade(move |socket| mgs::serve(world, session_id, socket))
}

/// The live sessions of the data plane and its counters. Cheap to clone; one
/// per `World`, so tests and benchmarks read it with
/// `world.lock().unwrap().data_plane.clone()`.
#[derive(Clone, Default)]
pub struct DataPlane {
    stats: Arc<Stats>,
    hubs: Arc<Mutex<HashMap<String, Arc<mgs::Hub>>>>,
}

impl DataPlane {
    /// The counters so far, across all sessions.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Ids of the sessions whose agent is running.
    pub fn live_sessions(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.hubs().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Test hook: MGS sends `pause_publication` (`pause = true`) or
    /// `start_publication` to the client of `session_id`. False when the
    /// session has no agent running.
    pub fn publish_to_client(&self, session_id: &str, pause: bool) -> bool {
        let hub = self.hubs().get(session_id).cloned();
        match hub {
            Some(hub) => hub.publication_to_client(pause),
            None => false,
        }
    }

    fn hubs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<mgs::Hub>>> {
        self.hubs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPlane")
            .field("live_sessions", &self.live_sessions())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counters of the data plane, shared by all its tasks.
#[derive(Debug, Default)]
struct Stats {
    frames_to_agent: AtomicU64,
    frames_to_client: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    corrupted: AtomicU64,
    held_detached: AtomicU64,
    resends: AtomicU64,
    acks_withheld: AtomicU64,
    reconnects: AtomicU64,
    cuts: AtomicU64,
    refused_tokens: AtomicU64,
    refused_upgrades: AtomicU64,
    dial_failures: AtomicU64,
    sessions_closed: AtomicU64,
}

/// A copy of the data plane's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Messages MGS delivered to the agent (after faults).
    pub frames_to_agent: u64,
    /// Messages MGS delivered towards the client (after faults).
    pub frames_to_client: u64,
    /// Stream and ack messages dropped by the `drop` fault.
    pub dropped: u64,
    /// Messages delivered twice by the `duplicate` fault.
    pub duplicated: u64,
    /// Messages held back behind their successor by the `reorder` fault.
    pub reordered: u64,
    /// Messages whose digest the `corrupt_digest` fault spoiled.
    pub corrupted: u64,
    /// Agent messages MGS held because no client websocket took them (none
    /// attached, or cut before writing them); the next websocket gets them.
    pub held_detached: u64,
    /// Agent retransmissions (head-only resend).
    pub resends: u64,
    /// Acknowledgements the agent did not send (`withhold_acks`).
    pub acks_withheld: u64,
    /// Websockets that re-attached to a running session.
    pub reconnects: u64,
    /// Websockets MGS closed with `1000 Bye` (the cut faults).
    pub cuts: u64,
    /// OpenDataChannel messages refused (bad, reused or refused token, old client).
    pub refused_tokens: u64,
    /// Websocket upgrades refused (missing, bad or stale signature; expired credentials).
    pub refused_upgrades: u64,
    /// Target dials that failed.
    pub dial_failures: u64,
    /// Sessions that ended with `channel_closed`.
    pub sessions_closed: u64,
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            frames_to_agent: self.frames_to_agent.load(Relaxed),
            frames_to_client: self.frames_to_client.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            duplicated: self.duplicated.load(Relaxed),
            reordered: self.reordered.load(Relaxed),
            corrupted: self.corrupted.load(Relaxed),
            held_detached: self.held_detached.load(Relaxed),
            resends: self.resends.load(Relaxed),
            acks_withheld: self.acks_withheld.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            cuts: self.cuts.load(Relaxed),
            refused_tokens: self.refused_tokens.load(Relaxed),
            refused_upgrades: self.refused_upgrades.load(Relaxed),
            dial_failures: self.dial_failures.load(Relaxed),
            sessions_closed: self.sessions_closed.load(Relaxed),
        }
    }
}
