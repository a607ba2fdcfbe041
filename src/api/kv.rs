//! `/v1/kv`: last-writer-wins keys. PUT stores the raw body and its `Content-Type`, expiring
//! after `?ttl=` seconds when given; GET returns them with `ETag`, `X-Hearsay-Timestamp` and
//! `X-Hearsay-Expires` (304 when `If-None-Match` names that ETag; 404 once expired); DELETE
//! writes a tombstone; PUT and DELETE take `If-Match` and `If-None-Match`, checked by the core
//! against this node's value (412 otherwise); listing pages through live keys by prefix.

use super::body::BoundedBody;
use super::consistency::{self, Acked, ReadLevel, WriteLevel};
use super::error::ApiError;
use super::listing::{ListParams, ListReply};
use super::{key_of, AppState};
use crate::crdt::{KeyState, Value};
use crate::node::{EtagCondition, Precondition, Write, WriteAck};
use crate::store::{Keyspace, StoreKey};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
const MAX_CONTENT_TYPE: usize = 256;
/// Longest TTL accepted: ten years.
const MAX_TTL_SECONDS: u64 = 10 * 365 * 86_400;

#[derive(Serialize)]
pub struct WriteReply {
    pub key: String,
    /// The HLC timestamp, as a decimal string (it exceeds 2^53).
    pub timestamp: String,
    pub node: String,
    /// When the value expires, in milliseconds since the epoch (a put with `?ttl=` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

impl WriteReply {
    fn new(key: String, ack: &WriteAck) -> Self {
        WriteReply {
            key,
            timestamp: ack.timestamp.to_string(),
            node: ack.node.to_string(),
            expires: ack.expires.map(|e| e.wall_ms()),
        }
    }
}

/// Besides `w` and `timeout_ms` ([`WriteLevel`]).
#[derive(Deserialize)]
pub struct PutParams {
    /// Kept as text so that a bad value gets its own error.
    ttl: Option<String>,
}

/// The TTL of a put, in milliseconds: whole seconds from 1 to [`MAX_TTL_SECONDS`].
fn ttl_ms(params: &PutParams) -> Result<Option<u64>, ApiError> {
    let Some(text) = &params.ttl else {
        return Ok(None);
    };
    match text.parse::<u64>() {
        Ok(seconds) if (1..=MAX_TTL_SECONDS).contains(&seconds) => Ok(Some(seconds * 1_000)),
        _ => Err(ApiError::bad_request(
            "bad_ttl",
            format!("ttl must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}"),
        )),
    }
}

/// The write's conditions from `If-Match` and `If-None-Match` (see [`EtagCondition::parse`]; a
/// value that is not text matches nothing).
fn precondition(headers: &HeaderMap) -> Precondition {
    let condition = |name: header::HeaderName| {
        headers
            .get(name)
            .map(|v| EtagCondition::parse(v.to_str().unwrap_or_default()))
    };
    Precondition {
        if_match: condition(header::IF_MATCH),
        if_none_match: condition(header::IF_NONE_MATCH),
    }
}

pub async fn put(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PutParams>, QueryRejection>,
    level: WriteLevel,
    headers: HeaderMap,
    BoundedBody(body): BoundedBody,
) -> Result<Json<Acked<WriteReply>>, ApiError> {
    let key = key_of(path)?;
    let Query(params) = query?;
    let ttl_ms = ttl_ms(&params)?;
    let precondition = precondition(&headers);
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => DEFAULT_CONTENT_TYPE.to_string(),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| s.len() <= MAX_CONTENT_TYPE)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_content_type",
                    "Content-Type must be short, visible ASCII",
                )
            })?
            .to_string(),
    };
    let data = body.to_vec();
    let write = Write::KvPut {
        key: key.clone(),
        value: Value { content_type, data },
        ttl_ms,
    };
    consistency::write(&state, write, precondition, level, |ack| {
        WriteReply::new(key, ack)
    })
    .await
}

/// Besides `r` and `timeout_ms` ([`ReadLevel`]).
#[derive(Deserialize)]
pub struct GetParams {
    explain: Option<String>,
}

pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<GetParams>, QueryRejection>,
    level: ReadLevel,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let Query(params) = query?;
    match params.explain.as_deref() {
        None | Some("false") => {}
        Some("true") => return explain(&state, key).await,
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_query",
                "explain must be true or false",
            ))
        }
    }
    let unless = precondition(&headers).if_none_match;
    super::authoritative(&state)?;
    consistency::read_from(&state, StoreKey::kv(&key), &level).await?;
    let record = match state.reader.get(&StoreKey::kv(&key))? {
        Some(KeyState::Register(r)) => r,
        _ => return Err(ApiError::not_found(format!("no key {key:?}"))),
    };
    let now_ms = crate::runtime::wall_ms();
    let (Some(etag), Some(value)) = (record.etag(now_ms), record.live_value(now_ms)) else {
        let why = if record.is_tombstone() {
            "was deleted"
        } else {
            "has expired"
        };
        return Err(ApiError::not_found(format!("key {key:?} {why}")));
    };
    let mut response = match unless.is_some_and(|c| c.matches_weakly(&etag)) {
        true => StatusCode::NOT_MODIFIED.into_response(),
        false => {
            let mut response = (StatusCode::OK, value.data.clone()).into_response();
            let content_type = HeaderValue::from_str(&value.content_type)
                .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
            response
        }
    };
    let headers = response.headers_mut();
    let expires = record.expires.map(|e| e.wall_ms().to_string());
    let named = [
        ("etag", Some(etag)),
        ("x-hearsay-timestamp", Some(record.timestamp.to_string())),
        ("x-hearsay-node", Some(record.node.to_string())),
        ("x-hearsay-expires", expires),
    ];
    for (name, v) in named.into_iter().filter_map(|(n, v)| Some((n, v?))) {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(name, v);
        }
    }
    Ok(response)
}

/// `?explain=true`: the write this node holds for the key and the concurrent writes that
/// last-writer-wins discarded for it here (the last few since the node started).
async fn explain(state: &AppState, key: String) -> Result<Response, ApiError> {
    super::authoritative(state)?;
    let store_key = StoreKey::kv(&key);
    let held = match state.reader.get(&store_key)? {
        Some(KeyState::Register(r)) => r,
        _ => return Err(ApiError::not_found(format!("no key {key:?}"))),
    };
    let overwritten = state.node.overwritten(store_key).await?;
    let now_ms = crate::runtime::wall_ms();
    let overwritten: Vec<_> = overwritten
        .iter()
        .map(|o| {
            serde_json::json!({
                "timestamp": o.timestamp.to_string(),
                "node": o.node.to_string(),
                "deleted": o.size.is_none(),
                "size": o.size,
                "by": {"timestamp": o.by.0.to_string(), "node": o.by.1.to_string()},
            })
        })
        .collect();
    let body = serde_json::json!({
        "key": key,
        "winner": {
            "timestamp": held.timestamp.to_string(),
            "node": held.node.to_string(),
            "deleted": held.live_value(now_ms).is_none(),
            "size": held.value.as_ref().map(|v| v.data.len()),
            "expires": held.expires.map(|e| e.wall_ms()),
            "observed": held.observed.map(|t| t.to_string()),
        },
        "overwritten": overwritten,
    });
    Ok(Json(body).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    level: WriteLevel,
    headers: HeaderMap,
) -> Result<Json<Acked<WriteReply>>, ApiError> {
    let key = key_of(path)?;
    let precondition = precondition(&headers);
    let write = Write::KvDelete { key: key.clone() };
    consistency::write(&state, write, precondition, level, |ack| {
        WriteReply::new(key, ack)
    })
    .await
}

pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListReply>, ApiError> {
    super::listing::list(&state, query, Keyspace::Kv)
}
