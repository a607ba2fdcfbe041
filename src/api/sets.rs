//! `/v1/sets`: add-wins observed-remove sets of strings. Single adds and removes go through the
//! path; `POST /v1/sets/{key}` applies a batch of both in one write.

use super::body::{json_object, BoundedBody};
use super::error::ApiError;
use super::{check_name, AppState};
use crate::crdt::KeyState;
use crate::node::Write;
use crate::store::StoreKey;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

/// Most elements one batch may name.
const MAX_BATCH: usize = 10_000;

#[derive(Serialize)]
pub struct SetReply {
    key: String,
    elements: Vec<String>,
}

#[derive(Serialize)]
pub struct EditReply {
    key: String,
    /// How many elements the set holds after the edit.
    size: u64,
    timestamp: String,
    node: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SetReply>, ApiError> {
    let Path(key) = path?;
    check_name("key", &key)?;
    super::authoritative(&state)?;
    match state.reader.get(&StoreKey::set(&key))? {
        Some(KeyState::Set(set)) => Ok(Json(SetReply {
            elements: set.elements().map(str::to_string).collect(),
            key,
        })),
        _ => Err(ApiError::not_found(format!("no set {key:?}"))),
    }
}

async fn edit(
    state: &AppState,
    key: String,
    add: Vec<String>,
    remove: Vec<String>,
) -> Result<Json<EditReply>, ApiError> {
    check_name("key", &key)?;
    if add.len() + remove.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!("a batch may name at most {MAX_BATCH} elements"),
        ));
    }
    for element in add.iter().chain(&remove) {
        check_name("element", element)?;
    }
    let ack = state
        .node
        .write(Write::SetEdit {
            key: key.clone(),
            add,
            remove,
        })
        .await?;
    Ok(Json(EditReply {
        key,
        size: ack.size.unwrap_or_default(),
        timestamp: ack.timestamp.to_string(),
        node: ack.node.to_string(),
    }))
}

pub async fn add(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<EditReply>, ApiError> {
    let Path((key, element)) = path?;
    edit(&state, key, vec![element], vec![]).await
}

pub async fn remove(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<EditReply>, ApiError> {
    let Path((key, element)) = path?;
    edit(&state, key, vec![], vec![element]).await
}

pub async fn batch(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    BoundedBody(body): BoundedBody,
) -> Result<Json<EditReply>, ApiError> {
    let Path(key) = path?;
    // Parsed whatever the Content-Type, so `curl -d` works as well as `-H 'Content-Type: ...'`.
    let request: BatchRequest = json_object(&body, r#"{"add": [...], "remove": [...]}"#)?;
    edit(&state, key, request.add, request.remove).await
}
