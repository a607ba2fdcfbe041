//! Consistency levels on the API: `?w=1|2|…|majority|all` on every write and `?r=…` on reads of
//! keys, sets and counters, each with `?timeout_ms=` (default 5,000, at most 60,000). A write
//! answers 200 with `acked` (the members holding it durably, this node first) once enough hold
//! it, else 504 `write_timeout` with `{acked, required}`: the write stays applied here and
//! still spreads (a CRDT write is never rolled back). A read answers from this node's store once
//! enough members' states are merged into it, else 504 `read_timeout` with `{answered,
//! required}`. The core does the waiting (`node/quorum.rs`); this module parses and renders.

use super::error::ApiError;
use super::AppState;
use crate::node::{
    Level, Precondition, Tally, Wait, Write, WriteAck, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS,
};
use crate::store::StoreKey;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

/// `?w=` and `?timeout_ms=` of a write (`None`: answer once this node holds it).
pub struct WriteLevel(pub Option<Wait>);

/// `?r=` and `?timeout_ms=` of a read (`None`: read this node's store).
pub struct ReadLevel(pub Option<Wait>);

/// The level named by `name` (`w` or `r`) and `timeout_ms` in a query.
fn wait_of(parts: &Parts, name: &str) -> Result<Option<Wait>, ApiError> {
    let query = parts.uri.query().unwrap_or("");
    let (mut level, mut timeout) = (None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == name {
            level = Some(Level::parse(&value).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_query",
                    format!("{name} must be a number of members from 1 to 1000, majority or all"),
                )
            })?);
        } else if key == "timeout_ms" {
            timeout = Some(match value.parse::<u64>() {
                Ok(ms @ 1..=MAX_TIMEOUT_MS) => ms,
                _ => {
                    return Err(ApiError::bad_request(
                        "bad_query",
                        format!("timeout_ms must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}"),
                    ))
                }
            });
        }
    }
    // Without a level nothing waits, whatever `timeout_ms` says.
    Ok(level.map(|level| Wait {
        level,
        timeout_ms: timeout.unwrap_or(DEFAULT_TIMEOUT_MS),
    }))
}

impl<S: Send + Sync> FromRequestParts<S> for WriteLevel {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        wait_of(parts, "w").map(WriteLevel)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ReadLevel {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        wait_of(parts, "r").map(ReadLevel)
    }
}

fn names(tally: &Tally) -> Vec<String> {
    tally.answered.iter().map(ToString::to_string).collect()
}

/// A write's reply, with `acked` when the client asked for a level.
#[derive(Serialize)]
pub struct Acked<T> {
    #[serde(flatten)]
    reply: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    acked: Option<Vec<String>>,
}

/// Makes a client's write at its level and renders the reply `reply` makes of its ack, or the
/// 504 when too few members acknowledged it in time.
pub async fn write<T: Serialize>(
    state: &AppState,
    write: Write,
    precondition: Precondition,
    level: WriteLevel,
    reply: impl FnOnce(&WriteAck) -> T,
) -> Result<Json<Acked<T>>, ApiError> {
    let ack = state
        .node
        .write_waiting(write, precondition, level.0)
        .await?;
    let reply = reply(&ack);
    if level.0.is_none() {
        return Ok(Json(Acked { reply, acked: None }));
    }
    // No wait was needed (this node alone was enough) when the core kept none.
    let tally = ack.replicas.unwrap_or_else(|| Tally {
        answered: vec![ack.node.clone()],
        required: 1,
    });
    if !tally.met() {
        let why = "acknowledged the write in time; it stays applied on this node and still spreads";
        return Err(timed_out("write_timeout", "acked", why, &tally));
    }
    Ok(Json(Acked {
        reply,
        acked: Some(names(&tally)),
    }))
}

/// Before a read at `level`: merges the states of enough members into this node's store (the
/// handler then reads it as usual), or the 504 when too few answered in time.
pub async fn read_from(state: &AppState, key: StoreKey, level: &ReadLevel) -> Result<(), ApiError> {
    let Some(wait) = level.0 else {
        return Ok(());
    };
    let Some(tally) = state.node.read_from(key, wait).await? else {
        return Ok(());
    };
    match tally.met() {
        true => Ok(()),
        false => Err(timed_out(
            "read_timeout",
            "answered",
            "answered in time",
            &tally,
        )),
    }
}

/// The 504 of a wait that was not met: `code`, the members who answered under `field`, and how
/// many were required.
fn timed_out(code: &'static str, field: &str, what: &str, tally: &Tally) -> ApiError {
    let message = format!(
        "{} of the {} members required {what}",
        tally.answered.len(),
        tally.required
    );
    ApiError::new(StatusCode::GATEWAY_TIMEOUT, code, message)
        .with(field, names(tally).into())
        .with("required", tally.required.into())
}
