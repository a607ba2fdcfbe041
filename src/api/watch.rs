//! `GET /v1/watch?prefix=P`: a Server-Sent Events stream of the changes this node makes durable,
//! from any origin: `id: <local sequence>`, `event: kv|set|counter`, `data: {key, timestamp,
//! node, deleted[, expires], applied_ms}`. It follows on from `Last-Event-ID` (or `?since=`); a
//! position the node no longer holds gives `event: reset` (re-list, then follow from the reset's
//! id).
//!
//! A watcher holds its position and at most one batch of events; it reads the feed only as fast
//! as its client takes what it sends, so a slow watcher costs the writers nothing (it falls
//! behind and is reset). Watchers are capped at [`MAX_WATCHERS`].

use super::error::ApiError;
use super::AppState;
use crate::node::KeyChange;
use crate::runtime::{ChangeFeed, FeedEvent, FeedRead};
use crate::store::Keyspace;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit};

/// Watch streams open at once; more are refused with 503 `overloaded`.
pub const MAX_WATCHERS: usize = 256;
/// Events a watcher takes from the feed at a time.
const BATCH: usize = 64;
/// A comment line this often keeps proxies and clients from timing the stream out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchParams {
    #[serde(default)]
    prefix: String,
    /// Like `Last-Event-ID` (which wins when both are given).
    since: Option<String>,
}

/// The `data` of one event.
#[derive(Serialize)]
struct ChangeData<'a> {
    key: &'a str,
    /// The HLC timestamp, as a decimal string (it exceeds 2^53).
    timestamp: String,
    node: Option<&'a str>,
    deleted: bool,
    /// When the value expires, in milliseconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
    /// When this node made the change, in milliseconds since the epoch on its clock.
    applied_ms: u64,
}

fn event_of(event: &FeedEvent) -> Event {
    let change = &event.change;
    let kind = match change.key.space {
        Keyspace::Kv => "kv",
        Keyspace::Sets => "set",
        Keyspace::Counters => "counter",
    };
    let data = ChangeData {
        key: &change.key.name,
        timestamp: change.timestamp.to_string(),
        node: change.node.as_ref().map(|n| n.as_str()),
        deleted: change.deleted,
        expires: change.expires.map(|e| e.wall_ms()),
        applied_ms: change.applied.wall_ms(),
    };
    Event::default()
        .id(event.seq.to_string())
        .event(kind)
        .data(serde_json::to_string(&data).unwrap_or_default())
}

fn reset_event(latest: u64) -> Event {
    Event::default().id(latest.to_string()).event("reset").data(
        r#"{"reason":"changes after the position asked for are no longer held here; list again, then follow from this event"}"#,
    )
}

/// One open stream's state.
struct Watcher {
    feed: Arc<ChangeFeed>,
    published: watch::Receiver<u64>,
    /// The last sequence number read (sent, or skipped by the prefix).
    position: u64,
    prefix: String,
    ready: VecDeque<Event>,
    _slot: OwnedSemaphorePermit,
}

impl Watcher {
    fn wanted(&self) -> impl Fn(&KeyChange) -> bool + '_ {
        |change| change.key.name.starts_with(&self.prefix)
    }

    /// The next event to send, waiting for one; `None` once the node is shutting down.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.feed.is_closed() {
                return None;
            }
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            // Marks what is published now as seen before reading it, so that a change
            // published after the read wakes the wait below.
            let latest = *self.published.borrow_and_update();
            match self.feed.read_after(self.position, BATCH, self.wanted()) {
                FeedRead::Events { events, through } => {
                    self.position = through;
                    self.ready.extend(events.iter().map(event_of));
                    if self.ready.is_empty() && through >= latest {
                        self.published.changed().await.ok()?;
                    }
                }
                FeedRead::Gone { latest } => {
                    self.position = latest;
                    self.ready.push_back(reset_event(latest));
                }
            }
        }
    }
}

/// The position a watch starts after: `Last-Event-ID`, else `?since=`, else what is published
/// now (only changes from now on).
fn start_position(
    headers: &HeaderMap,
    since: Option<&str>,
    feed: &ChangeFeed,
) -> Result<u64, ApiError> {
    let given = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().unwrap_or("?")),
        None => since,
    };
    match given {
        None => Ok(feed.latest()),
        Some(text) => text.trim().parse().map_err(|_| {
            ApiError::bad_request(
                "bad_position",
                format!("{text:?} is not an event id: give the id of the last event received"),
            )
        }),
    }
}

pub async fn watch(
    State(state): State<AppState>,
    query: Result<Query<WatchParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(params) = query?;
    let feed = state.node.feed().clone();
    let position = start_position(&headers, params.since.as_deref(), &feed)?;
    let Ok(slot) = state.watchers.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("{MAX_WATCHERS} watch streams are open on this node; retry later or watch another node"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
    };
    let watcher = Watcher {
        published: feed.subscribe(),
        feed,
        position,
        prefix: params.prefix,
        ready: VecDeque::new(),
        _slot: slot,
    };
    let events = stream::unfold(watcher, |mut watcher| async move {
        let event = watcher.next().await?;
        Some((Ok::<_, Infallible>(event), watcher))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies must pass events on as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
