//! The data plane of the fake: the `ssmmessages` websocket endpoint (MGS) and
//! the SSM agent behind it, emulated per session.
//!
//! `router` serves `GET /v1/data-channel/{session_id}`. The first websocket
//! message must be an OpenDataChannel text frame whose token the `World`
//! redeems; the session's agent is created on the first redeem and outlives
//! any one websocket, so a client can resume with a fresh token.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::world::SharedWorld;

/// The websocket endpoint of the data channel, backed by `world`.
pub fn router(world: SharedWorld) -> Router {
    Router::new()
        .route("/v1/data-channel/{session_id}", get(upgrade))
        .with_state(world)
}

async fn upgrade(
    State(world): State<SharedWorld>,
    Path(session_id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| serve(world, session_id, socket))
}

async fn serve(_world: SharedWorld, _session_id: String, mut socket: WebSocket) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1008,
            reason: "data plane not implemented yet".into(),
        })))
        .await;
}
