//! `/v1/cluster/*`, `/v1/health` and `/metrics`: what a node says about itself and its cluster.

use super::error::ApiError;
use super::AppState;
use crate::clock::NodeId;
use crate::membership::{ForceLeaveError, MemberState};
use crate::metrics::{EventLabels, Metrics, StateLabels};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

fn state_label(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}

pub async fn members(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut members = state.node.members().await?;
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let members: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({
                "id": m.id.to_string(),
                "gossip_addr": m.gossip_addr.to_string(),
                "http_addr": m.http_addr.to_string(),
                "state": m.state.to_string(),
                "incarnation": m.incarnation,
            })
        })
        .collect();
    Ok(Json(
        json!({ "self": state.node.id().to_string(), "members": members }),
    ))
}

pub async fn digest(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let root = state.node.digest().await?;
    Ok(Json(json!({
        "node": state.node.id().to_string(),
        "root": root.hex(),
        "keys": root.count,
    })))
}

/// `DELETE /v1/cluster/members/{id}`: forces out a member that will never return.
pub async fn remove_member(
    State(state): State<AppState>,
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Path(id) = path?;
    let id = NodeId::new(id).map_err(|e| ApiError::bad_request("bad_node_id", e))?;
    match state.node.remove_member(id.clone()).await? {
        Ok(member) => Ok(Json(json!({
            "id": member.id.to_string(),
            "state": member.state.to_string(),
            "incarnation": member.incarnation,
        }))),
        Err(ForceLeaveError::Unknown) => Err(ApiError::not_found(format!("no member {id}"))),
        Err(e @ ForceLeaveError::Alive) => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "member_alive",
            e.to_string(),
        )),
        Err(e @ ForceLeaveError::Itself) => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "itself",
            e.to_string(),
        )),
    }
}

/// Answers, then stops the server gracefully (as SIGTERM does).
pub async fn leave(State(state): State<AppState>) -> Json<Value> {
    tracing::info!("leave requested over HTTP; shutting down");
    state.leave.notify_one();
    Json(json!({ "node": state.node.id().to_string(), "left": true }))
}

pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let (reasons, clock_offset_ms) = state.node.health_reasons();
    let view = state.node.cluster_view();
    let status = health_status(&reasons);
    let mut body = json!({
        "status": status,
        "node": state.node.id().to_string(),
        "reasons": reasons,
        "members": {
            "alive": view.alive,
            "suspect": view.suspect,
            "dead": view.dead,
            "left": view.left,
        },
        "majority": view.majority,
    });
    if let (Some(map), Some(offset)) = (body.as_object_mut(), clock_offset_ms) {
        map.insert("clock_offset_ms".into(), offset.into());
    }
    Json(body)
}

/// `/v1/health`'s status for these reasons: `ok` without any, else `degraded`.
pub(super) fn health_status(reasons: &[&str]) -> &'static str {
    if reasons.is_empty() {
        "ok"
    } else {
        "degraded"
    }
}

/// Every reason `/v1/health` can give, for the gauges.
const HEALTH_REASONS: [&str; 5] = [
    "minority",
    "isolated",
    "clock_skew",
    "disk_full",
    "resyncing",
];

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let stats = state.node.stats().await?;
    let m = &state.metrics;
    let (reasons, _) = state.node.health_reasons();
    for reason in HEALTH_REASONS {
        m.health_degraded
            .get_or_create(&crate::metrics::ReasonLabels { reason })
            .set(i64::from(reasons.contains(&reason)));
    }
    m.keys.set(stats.digest.count as i64);
    for member_state in [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Dead,
        MemberState::Left,
    ] {
        let label = StateLabels {
            state: state_label(member_state),
        };
        let count = stats
            .members
            .iter()
            .filter(|x| x.state == member_state)
            .count();
        m.members.get_or_create(&label).set(count as i64);
    }
    let c = &stats.cluster;
    for (event, total) in [
        ("published", c.rumors_published),
        ("pushed", c.rumors_pushed),
        ("received", c.rumors_received),
        ("merged", c.rumors_merged),
    ] {
        Metrics::raise(&m.rumors.get_or_create(&EventLabels { event }), total);
    }
    for (event, total) in [
        ("sessions", c.sync_sessions),
        ("declined", c.sync_declined),
        ("fetch_failed", c.sync_fetch_failed),
        ("abandoned", c.sync_abandoned),
        ("rounds", c.sync_rounds),
        ("keys_repaired", c.sync_keys_repaired),
    ] {
        Metrics::raise(&m.anti_entropy.get_or_create(&EventLabels { event }), total);
    }
    Metrics::raise(&m.anti_entropy_bytes, c.sync_bytes);
    for (event, total) in [
        ("collected", c.tombstones_collected),
        ("refused", c.stale_values_refused),
        ("forgotten", c.values_forgotten),
    ] {
        Metrics::raise(&m.tombstones.get_or_create(&EventLabels { event }), total);
    }
    m.tombstones_held.set(c.tombstones_held as i64);
    for (keyspace, total) in [("kv", c.conflicts), ("sets", c.set_conflicts)] {
        Metrics::raise(
            &m.conflicts
                .get_or_create(&crate::metrics::KeyspaceLabels { keyspace }),
            total,
        );
    }
    Metrics::raise(&m.heals, c.heals);
    for (event, total) in [
        ("suspected", c.members_suspected),
        ("declared_dead", c.members_declared_dead),
        ("refuted", c.refutations),
        ("suspicion_raised", c.suspicions_raised),
    ] {
        Metrics::raise(
            &m.member_events.get_or_create(&EventLabels { event }),
            total,
        );
    }
    m.local_health.set(c.local_health as i64);
    let lag = &c.replication_lag;
    m.replication_lag.set(
        lag.sum_ms() as f64 / 1000.0,
        lag.count(),
        lag.buckets()
            .map(|(bound, n)| (bound.map(|ms| ms as f64 / 1000.0), n)),
    );
    for (event, total) in [
        ("write_met", c.waits.write_met),
        ("write_timeout", c.waits.write_timeout),
        ("read_met", c.waits.read_met),
        ("read_timeout", c.waits.read_timeout),
        ("read_merged", c.waits.read_merged),
        ("repair_sent", c.waits.repair_sent),
    ] {
        Metrics::raise(&m.consistency.get_or_create(&EventLabels { event }), total);
    }
    // Peer input the core refused joins what the transport dropped.
    for (reason, total) in [
        ("clock_skew", c.dropped_clock_skew),
        ("wrong_kind", c.dropped_wrong_kind),
        ("invalid", c.dropped_invalid),
        ("disk_full", c.dropped_disk_full),
    ] {
        let labels = crate::metrics::DropLabels { reason };
        Metrics::raise(&m.cluster_dropped.get_or_create(&labels), total);
    }
    m.rumor_seen_entries.set(stats.seen_entries as i64);
    state
        .metrics
        .store_bytes
        .set(state.reader.size_on_disk() as i64);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    ))
}

/// `GET /v1/cluster/stats`: this node's protocol counters as JSON, for the dashboard's time
/// series (the same figures `/metrics` exposes, without parsing its text). Counters only grow
/// while the node runs; `at_ms` is this node's clock when they were read.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let stats = state.node.stats().await?;
    let c = &stats.cluster;
    Ok(Json(json!({
        "node": state.node.id().to_string(),
        "at_ms": crate::runtime::wall_ms(),
        "keys": stats.digest.count,
        "rumors_published": c.rumors_published,
        "rumors_pushed": c.rumors_pushed,
        "rumors_received": c.rumors_received,
        "rumors_merged": c.rumors_merged,
        "sync_sessions": c.sync_sessions,
        "sync_keys_repaired": c.sync_keys_repaired,
        "conflicts": c.conflicts + c.set_conflicts,
        "tombstones_held": c.tombstones_held,
        "tombstones_collected": c.tombstones_collected,
        "heals": c.heals,
    })))
}
