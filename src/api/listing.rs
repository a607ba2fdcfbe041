//! Key listings (`GET /v1/kv`, `GET /v1/sets`): live keys of one keyspace by prefix, sorted, in
//! pages that the client walks by passing `next` back as `after`.

use super::error::ApiError;
use super::AppState;
use crate::store::Keyspace;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::Json;
use serde::{Deserialize, Serialize};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

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

pub fn list(
    state: &AppState,
    query: Result<Query<ListParams>, QueryRejection>,
    space: Keyspace,
) -> Result<Json<ListReply>, ApiError> {
    let Query(params) = query?;
    super::authoritative(state)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let page = state.reader.list_live(
        space,
        &params.prefix,
        params.after.as_deref(),
        limit,
        crate::runtime::wall_ms(),
    )?;
    Ok(Json(ListReply {
        keys: page.keys,
        next: page.next,
    }))
}
