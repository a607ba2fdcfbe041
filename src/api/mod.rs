//! The HTTP API (axum): routes, shared state, limits and the metrics middleware. Handlers turn
//! requests into core commands through [`NodeHandle`] and read the store directly; they make no
//! replication decisions. Every request passes, outermost first: `observe` (metrics, JSON
//! errors), the API token ([`auth`]), the in-flight limit ([`limits`]), the request-line checks
//! (`guard`), then its handler. [`serve`] is the accept loop that serves the router under the connection cap and
//! the header and idle timeouts.

mod admin;
pub mod auth;
mod backup;
mod body;
mod cluster;
mod consistency;
mod counters;
mod deadline_io;
pub mod error;
mod guard;
mod isolation;
mod kv;
pub mod limits;
mod listing;
mod serve;
mod sets;
mod status;
mod ui;
mod watch;

pub use limits::HttpLimits;
pub use serve::serve;

use crate::metrics::{HttpLabels, Metrics};
use crate::net::faults::Faults;
use crate::runtime::NodeHandle;
use crate::store::StoreRead;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
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
    /// Caps the watch streams open at once ([`watch::MAX_WATCHERS`]).
    pub watchers: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The semaphore for [`AppState::watchers`].
    pub fn watcher_slots() -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(watch::MAX_WATCHERS))
    }
}

/// Fixed settings the handlers need.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub max_value_bytes: usize,
    pub fault_injection: bool,
    /// Longest time a request body may take to arrive, from when its handler starts reading it.
    pub body_timeout: std::time::Duration,
    /// Requests handled at once (see [`HttpLimits::max_in_flight`]).
    pub max_in_flight: usize,
    /// The token requests must carry (see [`auth`]).
    pub api_token: auth::ApiToken,
}

// Route patterns, named once for the router and the metrics labels.
const KV_LIST: &str = "/v1/kv";
const KV_KEY: &str = "/v1/kv/{*key}";
const SET_LIST: &str = "/v1/sets";
const SET: &str = "/v1/sets/{key}";
const SET_ELEMENT: &str = "/v1/sets/{key}/{element}";
const COUNTER: &str = "/v1/counters/{key}";
const MEMBERS: &str = "/v1/cluster/members";
const MEMBER: &str = "/v1/cluster/members/{id}";
const DIGEST: &str = "/v1/cluster/digest";
const STATUS: &str = "/v1/cluster/status";
const STATS: &str = "/v1/cluster/stats";
const LEAVE: &str = "/v1/cluster/leave";
const HEALTH: &str = "/v1/health";
const METRICS: &str = "/metrics";
const FAULTS: &str = "/v1/admin/faults";
const BACKUP: &str = "/v1/admin/backup";
const ISOLATION: &str = "/v1/admin/isolation";
const WATCH: &str = "/v1/watch";
const ROOT: &str = "/";
const UI: &str = "/ui";
const UI_SCRIPT: &str = "/ui/app.js";
const UI_STYLE: &str = "/ui/style.css";
const ROUTES: [&str; 22] = [
    KV_LIST,
    KV_KEY,
    SET_LIST,
    SET,
    SET_ELEMENT,
    COUNTER,
    MEMBERS,
    MEMBER,
    DIGEST,
    STATUS,
    STATS,
    LEAVE,
    HEALTH,
    METRICS,
    FAULTS,
    BACKUP,
    ISOLATION,
    WATCH,
    ROOT,
    UI,
    UI_SCRIPT,
    UI_STYLE,
];

/// The query parameters a route takes with `method`; any other is a 400 `bad_query`. A method
/// the route does not take gets them all, so that the router answers it 405 whatever its query.
pub fn query_parameters(route: &str, method: &Method) -> &'static [&'static str] {
    match (route, method) {
        (KV_LIST | SET_LIST, _) => &["prefix", "limit", "after"],
        (KV_KEY, &Method::GET | &Method::HEAD) => &["explain", "r", "timeout_ms"],
        (KV_KEY, &Method::PUT) => &["ttl", "w", "timeout_ms"],
        (KV_KEY, &Method::DELETE) => &["w", "timeout_ms"],
        (KV_KEY, _) => &["ttl", "explain", "w", "r", "timeout_ms"],
        (SET | SET_ELEMENT | COUNTER, &Method::GET | &Method::HEAD) => &["r", "timeout_ms"],
        (SET, &Method::POST | &Method::DELETE)
        | (SET_ELEMENT, &Method::PUT | &Method::DELETE)
        | (COUNTER, &Method::POST) => &["w", "timeout_ms"],
        (SET | SET_ELEMENT | COUNTER, _) => &["w", "r", "timeout_ms"],
        (WATCH, _) => &["prefix", "since"],
        _ => &[],
    }
}

pub fn router(state: AppState) -> Router {
    let in_flight = limits::InFlight::new(
        state.settings.max_in_flight,
        state.metrics.http_in_flight.clone(),
    );
    Router::new()
        .route(KV_LIST, get(kv::list))
        .route(KV_KEY, get(kv::get).put(kv::put).delete(kv::delete))
        .route(SET_LIST, get(sets::list))
        .route(SET, get(sets::get).post(sets::batch).delete(sets::clear))
        .route(
            SET_ELEMENT,
            get(sets::contains).put(sets::add).delete(sets::remove),
        )
        .route(COUNTER, get(counters::get).post(counters::add))
        .route(MEMBERS, get(cluster::members))
        .route(MEMBER, axum::routing::delete(cluster::remove_member))
        .route(DIGEST, get(cluster::digest))
        .route(STATUS, get(status::status))
        .route(STATS, get(cluster::stats))
        .route(WATCH, get(watch::watch))
        .route(LEAVE, post(cluster::leave))
        .route(HEALTH, get(cluster::health))
        .route(METRICS, get(cluster::metrics))
        .route(
            FAULTS,
            get(admin::get).put(admin::put).delete(admin::delete),
        )
        .route(BACKUP, get(backup::backup))
        .route(ISOLATION, axum::routing::put(isolation::put))
        .route(ROOT, get(ui::root))
        .route(UI, get(ui::page))
        .route(UI_SCRIPT, get(ui::script))
        .route(UI_STYLE, get(ui::style))
        .fallback(unmatched)
        .layer(middleware::from_fn(guard::check_request))
        .layer(middleware::from_fn_with_state(
            in_flight,
            limits::limit_in_flight,
        ))
        .layer(middleware::from_fn_with_state(
            state.settings.api_token.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// No route matched. A path that names an empty key or element (`/v1/kv/`, `/v1/sets/s/`,
/// `/v1/sets//e`) is a bad name, not an unknown endpoint: the router never matches an empty
/// segment.
async fn unmatched(uri: Uri) -> ApiError {
    let path = uri.path();
    if path == "/v1/kv/" || path == "/v1/counters/" {
        return empty_name("key");
    }
    if let Some(rest) = path.strip_prefix("/v1/sets/") {
        // `{key}` or `{key}/{element}`, one of them empty.
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.len() <= 2 {
            if let Some(i) = segments.iter().position(|s| s.is_empty()) {
                return empty_name(["key", "element"][i]);
            }
        }
    }
    ApiError::not_found("no such endpoint")
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

/// The routes whose writes change data (and so carry `X-Hearsay-Minority`).
const DATA_ROUTES: [&str; 4] = [KV_KEY, SET, SET_ELEMENT, COUNTER];

/// Marks a write answered while this node cannot see a majority of the members: under
/// last-writer-wins, the majority side may overwrite it when the cluster heals.
fn mark_minority(state: &AppState, response: &mut Response) {
    if !state.node.cluster_view().majority {
        response.headers_mut().insert(
            "x-hearsay-minority",
            axum::http::HeaderValue::from_static("true"),
        );
    }
}

/// Runs around every request: gives error responses from outside our handlers the JSON shape
/// (see [`error::json_errors`]), marks writes answered without a majority
/// ([`mark_minority`]) and records the request count and latency by route and status.
#[allow(clippy::disallowed_methods)] // request latency is measured by the HTTP driver
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| ROUTES.iter().find(|r| **r == p.as_str()).copied())
        .unwrap_or("unmatched");
    let writes = request.method() != Method::GET && request.method() != Method::HEAD;
    let mut response = error::json_errors(next.run(request).await);
    if writes && response.status().is_success() && DATA_ROUTES.contains(&route) {
        mark_minority(&state, &mut response);
    }
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

fn empty_name(what: &str) -> ApiError {
    ApiError::bad_request("empty_name", format!("the {what} must not be empty"))
}

/// The key a route's `{key}` names, checked.
pub fn key_of(
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    let axum::extract::Path(key) = path?;
    check_name("key", &key)?;
    Ok(key)
}

/// Checks a key or element name from a path or body.
pub fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(empty_name(what));
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
