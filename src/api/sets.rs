//! `/v1/sets`: add-wins observed-remove sets of strings. Single adds and removes go through the
//! path; `POST /v1/sets/{key}` applies a batch of both in one write; `DELETE /v1/sets/{key}`
//! removes every element this node observed; `GET /v1/sets/{key}/{element}` tests one element
//! (reading that element alone); `GET /v1/sets` lists set keys.

use super::body::{json_object, BoundedBody};
use super::consistency::{self, Acked, ReadLevel, WriteLevel};
use super::error::ApiError;
use super::listing::{ListParams, ListReply};
use super::{check_name, key_of, AppState};
use crate::crdt::KeyState;
use crate::node::{Precondition, Write, WriteAck};
use crate::store::{Keyspace, StoreKey};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
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

impl EditReply {
    fn new(key: String, ack: &WriteAck) -> Self {
        EditReply {
            key,
            size: ack.size.unwrap_or_default(),
            timestamp: ack.timestamp.to_string(),
            node: ack.node.to_string(),
        }
    }
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
    level: ReadLevel,
) -> Result<Json<SetReply>, ApiError> {
    let key = key_of(path)?;
    super::authoritative(&state)?;
    consistency::read_from(&state, StoreKey::set(&key), &level).await?;
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
    level: WriteLevel,
) -> Result<Json<Acked<EditReply>>, ApiError> {
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
    let write = Write::SetEdit {
        key: key.clone(),
        add,
        remove,
    };
    consistency::write(state, write, Precondition::default(), level, |ack| {
        EditReply::new(key, ack)
    })
    .await
}

#[derive(Serialize)]
pub struct MemberReply {
    key: String,
    element: String,
    present: bool,
}

pub async fn contains(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    level: ReadLevel,
) -> Result<Json<MemberReply>, ApiError> {
    let Path((key, element)) = path?;
    check_name("key", &key)?;
    check_name("element", &element)?;
    super::authoritative(&state)?;
    consistency::read_from(&state, StoreKey::set(&key), &level).await?;
    match state.reader.set_contains(&StoreKey::set(&key), &element)? {
        Some(true) => Ok(Json(MemberReply {
            key,
            element,
            present: true,
        })),
        Some(false) => Err(ApiError::not_found(format!(
            "set {key:?} does not hold {element:?}"
        ))),
        None => Err(ApiError::not_found(format!("no set {key:?}"))),
    }
}

pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListReply>, ApiError> {
    super::listing::list(&state, query, Keyspace::Sets)
}

/// Removes every element this node has observed; 404 for a set it never saw.
pub async fn clear(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    level: WriteLevel,
) -> Result<Json<Acked<EditReply>>, ApiError> {
    let key = key_of(path)?;
    let write = Write::SetClear { key: key.clone() };
    consistency::write(&state, write, Precondition::default(), level, |ack| {
        EditReply::new(key, ack)
    })
    .await
}

pub async fn add(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    level: WriteLevel,
) -> Result<Json<Acked<EditReply>>, ApiError> {
    let Path((key, element)) = path?;
    edit(&state, key, vec![element], vec![], level).await
}

pub async fn remove(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    level: WriteLevel,
) -> Result<Json<Acked<EditReply>>, ApiError> {
    let Path((key, element)) = path?;
    edit(&state, key, vec![], vec![element], level).await
}

pub async fn batch(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    level: WriteLevel,
    BoundedBody(body): BoundedBody,
) -> Result<Json<Acked<EditReply>>, ApiError> {
    let Path(key) = path?;
    // Parsed whatever the Content-Type, so `curl -d` works as well as `-H 'Content-Type: ...'`.
    let request: BatchRequest = json_object(&body, r#"{"add": [...], "remove": [...]}"#)?;
    edit(&state, key, request.add, request.remove, level).await
}
