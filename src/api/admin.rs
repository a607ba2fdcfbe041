//! `/v1/admin/faults`: fault injection for partition, loss and slow-link tests. Every route
//! answers 404 unless the node was started with `--fault-injection`.

use super::body::{json_object, BoundedBody};
use super::error::ApiError;
use super::AppState;
use crate::clock::NodeId;
use crate::net::faults::{FaultSet, MAX_DELAY_MS};
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    #[serde(default)]
    drop: Vec<String>,
    #[serde(default)]
    loss: f64,
    #[serde(default, deserialize_with = "super::body::whole_u64")]
    delay_ms: u64,
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
    let faults = state.faults.current();
    let drop: Vec<String> = faults.dropped.iter().map(|n| n.to_string()).collect();
    Json(json!({ "drop": drop, "loss": faults.loss, "delay_ms": faults.delay_ms }))
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
    let request: FaultRequest = json_object(
        &body,
        r#"{"drop": [node ids], "loss": 0.0-1.0, "delay_ms": N}"#,
    )?;
    let dropped = request
        .drop
        .into_iter()
        .map(NodeId::new)
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| ApiError::bad_request("bad_node_id", e))?;
    if !(0.0..=1.0).contains(&request.loss) {
        return Err(ApiError::bad_request(
            "bad_loss",
            format!("loss is {}; it must be between 0.0 and 1.0", request.loss),
        ));
    }
    if request.delay_ms > MAX_DELAY_MS {
        return Err(ApiError::bad_request(
            "bad_delay",
            format!(
                "delay_ms is {}; it must be at most {MAX_DELAY_MS}",
                request.delay_ms
            ),
        ));
    }
    let faults = FaultSet {
        dropped,
        loss: request.loss,
        delay_ms: request.delay_ms,
    };
    tracing::warn!(dropped = ?faults.dropped, loss = faults.loss, delay_ms = faults.delay_ms, "fault injection: cluster traffic impaired");
    state.faults.set(faults);
    Ok(reply(&state))
}

pub async fn delete(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    enabled(&state)?;
    state.faults.set(FaultSet::default());
    tracing::warn!("fault injection: healed");
    Ok(reply(&state))
}
