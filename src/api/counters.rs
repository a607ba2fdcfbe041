//! `/v1/counters`: PN-counters. `POST /v1/counters/{key}` with `{"add": n}` (a signed 64-bit
//! integer) adds to it on this node; `GET` reads its value. Increments and decrements made on
//! every node add up once they meet.

use super::body::{json_object, BoundedBody};
use super::consistency::{self, Acked, ReadLevel, WriteLevel};
use super::error::ApiError;
use super::{key_of, AppState};
use crate::crdt::KeyState;
use crate::node::{Precondition, Write};
use crate::store::StoreKey;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
pub struct CounterReply {
    key: String,
    /// Exact: the sum of every replica's adds may pass 64 bits.
    value: i128,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    #[serde(deserialize_with = "super::body::whole_i64")]
    add: i64,
}

pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    level: ReadLevel,
) -> Result<Json<CounterReply>, ApiError> {
    let key = key_of(path)?;
    super::authoritative(&state)?;
    consistency::read_from(&state, StoreKey::counter(&key), &level).await?;
    match state.reader.get(&StoreKey::counter(&key))? {
        Some(KeyState::Counter(counter)) => Ok(Json(CounterReply {
            value: counter.value(),
            key,
        })),
        _ => Err(ApiError::not_found(format!("no counter {key:?}"))),
    }
}

pub async fn add(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    level: WriteLevel,
    BoundedBody(body): BoundedBody,
) -> Result<Json<Acked<CounterReply>>, ApiError> {
    let key = key_of(path)?;
    // Parsed whatever the Content-Type, so `curl -d` works.
    let request: AddRequest = json_object(&body, r#"{"add": <signed 64-bit integer>}"#)?;
    let write = Write::CounterAdd {
        key: key.clone(),
        amount: request.add,
    };
    consistency::write(&state, write, Precondition::default(), level, |ack| {
        CounterReply {
            value: ack.value.unwrap_or_default(),
            key,
        }
    })
    .await
}
