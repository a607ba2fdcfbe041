//! `/v1/cluster/*`, `/v1/health` and `/metrics`: what a node says about itself and its cluster.

use super::error::ApiError;
use super::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

pub async fn members(State(state): State<AppState>) -> Json<Value> {
    let id = state.node.id().to_string();
    Json(json!({
        "self": id,
        "members": [{
            "id": id,
            "gossip_addr": state.settings.gossip_addr.to_string(),
            "http_addr": state.settings.http_addr.to_string(),
            "state": "alive",
            "incarnation": 0,
        }],
    }))
}

pub async fn digest(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let root = state.node.digest().await?;
    Ok(Json(json!({
        "node": state.node.id().to_string(),
        "root": root.hex(),
        "keys": root.count,
    })))
}

/// Answers, then stops the server gracefully (as SIGTERM does).
pub async fn leave(State(state): State<AppState>) -> Json<Value> {
    tracing::info!("leave requested over HTTP; shutting down");
    state.leave.notify_one();
    Json(json!({ "node": state.node.id().to_string(), "left": true }))
}

pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "node": state.node.id().to_string() }))
}

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let root = state.node.digest().await?;
    state.metrics.keys.set(root.count as i64);
    state
        .metrics
        .store_bytes
        .set(state.node.reader().size_on_disk() as i64);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    ))
}
