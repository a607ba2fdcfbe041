//! `PUT /v1/admin/isolation`: cuts members off from the rest of the cluster, from any one node
//! (the dashboard's cut and heal buttons, and a one-request partition for demos and tests). The
//! serving node sets every member's injected faults over that member's own HTTP API
//! (`/v1/admin/faults`): a member named in the body drops the cluster traffic of every member not
//! named, the others drop the named ones; an empty list heals. Each member keeps its injected
//! loss and delay. Like the faults themselves, it answers 404 unless the node was started with
//! `--fault-injection` (the members it asks need it too).

use super::body::{json_object, BoundedBody};
use super::error::ApiError;
use super::status::member_client;
use super::AppState;
use crate::client::http::{Body, Call};
use crate::clock::NodeId;
use crate::membership::{Member, MemberState};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// A member that does not answer within this long is reported as not reached.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IsolationRequest {
    members: Vec<String>,
}

/// The faults a member reports (`GET /v1/admin/faults`).
#[derive(Deserialize)]
struct Faults {
    loss: f64,
    delay_ms: u64,
}

pub async fn put(
    State(state): State<AppState>,
    BoundedBody(body): BoundedBody,
) -> Result<Json<Value>, ApiError> {
    if !state.settings.fault_injection {
        return Err(ApiError::not_found(
            "fault injection is off; start the node with --fault-injection",
        ));
    }
    let request: IsolationRequest = json_object(&body, r#"{"members": [node ids]}"#)?;
    let isolated = request
        .members
        .into_iter()
        .map(NodeId::new)
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| ApiError::bad_request("bad_node_id", e))?;
    let members: Vec<Member> = state
        .node
        .members()
        .await?
        .into_iter()
        .filter(|m| m.state != MemberState::Left)
        .collect();
    let token = state.settings.api_token.0.clone();
    let mut asks = tokio::task::JoinSet::new();
    for member in &members {
        let drop: Vec<String> = members
            .iter()
            .filter(|other| isolated.contains(&other.id) != isolated.contains(&member.id))
            .map(|other| other.id.to_string())
            .collect();
        let (member, token) = (member.clone(), token.clone());
        asks.spawn(async move {
            let reached = set_drops(&member, token.as_deref(), drop).await;
            (member.id.to_string(), reached)
        });
    }
    let mut reached = Vec::new();
    while let Some(Ok(answer)) = asks.join_next().await {
        reached.push(answer);
    }
    reached.sort();
    let isolated: Vec<String> = isolated.iter().map(ToString::to_string).collect();
    tracing::warn!(?isolated, "fault injection: members isolated from the rest");
    let members: Vec<Value> = reached
        .into_iter()
        .map(|(id, reached)| json!({ "id": id, "reached": reached }))
        .collect();
    Ok(Json(json!({ "isolated": isolated, "members": members })))
}

/// Sets `member`'s dropped members to `drop`, keeping its loss and delay; whether it took them.
async fn set_drops(member: &Member, token: Option<&str>, drop: Vec<String>) -> bool {
    let Some(mut client) = member_client(member, token, ASK_TIMEOUT) else {
        return false;
    };
    let get = Call {
        method: hyper::Method::GET,
        target: "/v1/admin/faults",
        body: None,
    };
    let Ok(now) = client.call_json::<Faults>(get).await else {
        return false;
    };
    let body = json!({ "drop": drop, "loss": now.loss, "delay_ms": now.delay_ms });
    let put = Call {
        method: hyper::Method::PUT,
        target: "/v1/admin/faults",
        body: Some(Body {
            content_type: HeaderValue::from_static("application/json"),
            bytes: body.to_string().into(),
        }),
    };
    client.call(put).await.is_ok()
}
