//! `/v1/kv`: last-writer-wins keys. PUT stores the raw body and its `Content-Type`; GET returns
//! them with `ETag` and `X-Hearsay-Timestamp`; DELETE writes a tombstone; listing pages through
//! live keys by prefix.

use super::body::BoundedBody;
use super::error::ApiError;
use super::{check_name, AppState};
use crate::crdt::{KeyState, Value};
use crate::node::{Write, WriteAck};
use crate::store::{Keyspace, StoreKey};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
const MAX_CONTENT_TYPE: usize = 256;
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Serialize)]
pub struct WriteReply {
    pub key: String,
    /// The HLC timestamp, as a decimal string (it exceeds 2^53).
    pub timestamp: String,
    pub node: String,
}

impl WriteReply {
    fn new(key: String, ack: &WriteAck) -> Self {
        WriteReply {
            key,
            timestamp: ack.timestamp.to_string(),
            node: ack.node.to_string(),
        }
    }
}

fn key_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) = path?;
    check_name("key", &key)?;
    Ok(key)
}

pub async fn put(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    BoundedBody(body): BoundedBody,
) -> Result<Json<WriteReply>, ApiError> {
    let key = key_of(path)?;
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
    let ack = state
        .node
        .write(Write::KvPut {
            key: key.clone(),
            value: Value { content_type, data },
        })
        .await?;
    Ok(Json(WriteReply::new(key, &ack)))
}

pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    super::authoritative(&state)?;
    let record = match state.reader.get(&StoreKey::kv(&key))? {
        Some(KeyState::Register(r)) => r,
        _ => return Err(ApiError::not_found(format!("no key {key:?}"))),
    };
    let Some(value) = record.value else {
        return Err(ApiError::not_found(format!("key {key:?} was deleted")));
    };
    let content_type = HeaderValue::from_str(&value.content_type)
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    let mut response = (StatusCode::OK, value.data).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    let etag = format!("\"{}-{}\"", record.timestamp, record.node);
    for (name, v) in [
        ("etag", etag),
        ("x-hearsay-timestamp", record.timestamp.to_string()),
        ("x-hearsay-node", record.node.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(name, v);
        }
    }
    Ok(response)
}

pub async fn delete(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WriteReply>, ApiError> {
    let key = key_of(path)?;
    let ack = state
        .node
        .write(Write::KvDelete { key: key.clone() })
        .await?;
    Ok(Json(WriteReply::new(key, &ack)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    after: Option<String>,
}

#[derive(Serialize)]
pub struct ListReply {
    keys: Vec<String>,
    next: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListReply>, ApiError> {
    let Query(params) = query?;
    super::authoritative(&state)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let page =
        state
            .reader
            .list_live(Keyspace::Kv, &params.prefix, params.after.as_deref(), limit)?;
    Ok(Json(ListReply {
        keys: page.keys,
        next: page.next,
    }))
}
