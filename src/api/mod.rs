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
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use error::ApiError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Longest key or set element accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub node: NodeHandle,
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
    pub http_addr: SocketAddr,
    pub gossip_addr: SocketAddr,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/kv", get(kv::list))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/sets/{key}", get(sets::get).post(sets::batch))
        .route(
            "/v1/sets/{key}/{element}",
            put(sets::add).delete(sets::remove),
        )
        .route("/v1/cluster/members", get(cluster::members))
        .route("/v1/cluster/digest", get(cluster::digest))
        .route("/v1/cluster/leave", post(cluster::leave))
        .route("/v1/health", get(cluster::health))
        .route("/metrics", get(cluster::metrics))
        .route(
            "/v1/admin/faults",
            get(admin::get).put(admin::put).delete(admin::delete),
        )
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(middleware::from_fn(error::json_errors))
        .with_state(state)
}

#[allow(clippy::disallowed_methods)] // request latency is measured by the HTTP driver
async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
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
