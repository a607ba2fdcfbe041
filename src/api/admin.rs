//! `/v1/admin/faults`: fault injection for partition tests. Every route answers 404 unless the
//! node was started with `--fault-injection`.

use super::body::{json_object, BoundedBody};
use super::error::ApiError;
use super::AppState;
use crate::clock::NodeId;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    drop: Vec<String>,
}

fn enabled(state: &AppState) -> Result<(), ApiError> {
    if state.settings.fault_injection {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "fault injection is off; start the node with --fault-injection",
        ))
    }
}

fn reply(state: &AppState) -> Json<Value> {
    let drop: Vec<String> = state
        .faults
        .dropped()
        .iter()
        .map(|n| n.to_string())
        .collect();
    Json(json!({ "drop": drop }))
}

pub async fn get(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    enabled(&state)?;
    Ok(reply(&state))
}

pub async fn put(
    State(state): State<AppState>,
    BoundedBody(body): BoundedBody,
) -> Result<Json<Value>, ApiError> {
    enabled(&state)?;
    let request: FaultRequest = json_object(&body, r#"{"drop": [node ids]}"#)?;
    let ids = request
        .drop
        .into_iter()
        .map(NodeId::new)
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| ApiError::bad_request("bad_node_id", e))?;
    tracing::warn!(?ids, "fault injection: dropping cluster traffic");
    state.faults.set_dropped(ids);
    Ok(reply(&state))
}

pub async fn delete(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    enabled(&state)?;
    state.faults.set_dropped(BTreeSet::new());
    tracing::warn!("fault injection: healed");
    Ok(reply(&state))
}
