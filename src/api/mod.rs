//! The HTTP API (axum): routes, shared state, limits and the metrics middleware. Handlers turn
//! requests into core commands through [`NodeHandle`] and read the store directly; they make no
//! replication decisions.

mod admin;
mod body;
mod cluster;
pub mod error;
mod kv;
mod sets;

use crate::metrics::{HttpLabels, Metrics};
use crate::net::faults::Faults;
use crate::runtime::NodeHandle;
use crate::store::StoreRead;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use error::ApiError;
use std::sync::Arc;
use std::time::Instant;

/// Longest key or set element accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub node: NodeHandle,
    /// Reads go straight to the store: every acknowledged write is visible there.
    pub reader: Arc<dyn StoreRead>,
    pub metrics: Arc<Metrics>,
    pub faults: Faults,
    pub settings: Arc<ApiSettings>,
    /// Fired by `POST /v1/cluster/leave`: the server stops after answering.
    pub leave: Arc<tokio::sync::Notify>,
}

/// Fixed settings the handlers need.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub max_value_bytes: usize,
    pub fault_injection: bool,
}

// Route patterns, named once for the router and the metrics labels.
const KV_LIST: &str = "/v1/kv";
const KV_KEY: &str = "/v1/kv/{*key}";
const SET: &str = "/v1/sets/{key}";
const SET_ELEMENT: &str = "/v1/sets/{key}/{element}";
const MEMBERS: &str = "/v1/cluster/members";
const MEMBER: &str = "/v1/cluster/members/{id}";
const DIGEST: &str = "/v1/cluster/digest";
const LEAVE: &str = "/v1/cluster/leave";
const HEALTH: &str = "/v1/health";
const METRICS: &str = "/metrics";
const FAULTS: &str = "/v1/admin/faults";
const ROUTES: [&str; 11] = [
    KV_LIST,
    KV_KEY,
    SET,
    SET_ELEMENT,
    MEMBERS,
    MEMBER,
    DIGEST,
    LEAVE,
    HEALTH,
    METRICS,
    FAULTS,
];

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(KV_LIST, get(kv::list))
        .route(KV_KEY, get(kv::get).put(kv::put).delete(kv::delete))
        .route(SET, get(sets::get).post(sets::batch))
        .route(SET_ELEMENT, put(sets::add).delete(sets::remove))
        .route(MEMBERS, get(cluster::members))
        .route(MEMBER, axum::routing::delete(cluster::remove_member))
        .route(DIGEST, get(cluster::digest))
        .route(LEAVE, post(cluster::leave))
        .route(HEALTH, get(cluster::health))
        .route(METRICS, get(cluster::metrics))
        .route(
            FAULTS,
            get(admin::get).put(admin::put).delete(admin::delete),
        )
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

fn method_label(method: &Method) -> &'static str {
    [
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::HEAD,
        Method::PATCH,
        Method::OPTIONS,
    ]
    .iter()
    .zip(["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"])
    .find(|(m, _)| *m == method)
    .map_or("other", |(_, label)| label)
}

/// Runs around every request: gives error responses from outside our handlers the JSON shape
/// (see [`error::json_errors`]) and records the request count and latency by route and status.
#[allow(clippy::disallowed_methods)] // request latency is measured by the HTTP driver
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| ROUTES.iter().find(|r| **r == p.as_str()).copied())
        .unwrap_or("unmatched");
    let response = error::json_errors(next.run(request).await);
    let labels = HttpLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state
        .metrics
        .http_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Refuses reads while the node recovers its data from peers: its answers would not be
/// authoritative (writes are still accepted).
pub fn authoritative(state: &AppState) -> Result<(), ApiError> {
    if state.node.is_resyncing() {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "resyncing",
            "this node is recovering its data from its peers; read from another node or retry shortly",
        ));
    }
    Ok(())
}

/// Checks a key or element name from a path or body.
pub fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "empty_name",
            format!("the {what} must not be empty"),
        ));
    }
    if name.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(
            "name_too_long",
            format!(
                "the {what} is {} bytes long; the limit is {MAX_KEY_BYTES}",
                name.len()
            ),
        ));
    }
    Ok(())
}
