//! How much HTTP a node takes on at once, and the limit on requests in flight. [`HttpLimits`]
//! holds the `--http-*` settings (the connection cap, derived by default from the open-file
//! limit, and the header, body and idle timeouts); [`InFlight`] answers requests over its limit
//! with 503 `overloaded` and `Retry-After`. The accept loop (`api::serve`) and the body
//! extractor (`api::body`) enforce the rest. Touches no store and no node state.

use super::error::ApiError;
use super::{HEALTH, METRICS};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// File descriptors kept for everything but HTTP connections: the database and its write-ahead
/// log, the cluster transport (up to 64 inbound connections and the outgoing ones), the
/// listeners, the standard streams and the async runtime's own.
pub const RESERVED_FILES: u64 = 192;
/// The default connection cap never exceeds this, however high the open-file limit: each
/// connection costs buffers, and more clients than this belong behind more nodes.
pub const MAX_DEFAULT_CONNECTIONS: usize = 16_384;
/// The most `--http-max-connections` accepted, whatever the open-file limit.
pub const MAX_CONNECTIONS: usize = 1 << 20;
/// What a client is told to wait before retrying an `overloaded` request.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The HTTP server's limits (`hearsay serve --http-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once. Over it, new connections wait in the listen backlog until
    /// one closes. Default: what the open-file limit leaves after [`RESERVED_FILES`], at most
    /// [`MAX_DEFAULT_CONNECTIONS`]. Raise the open-file limit (`ulimit -n`) to raise it.
    pub max_connections: usize,
    /// Requests handled at once; more are answered 503 `overloaded` at once. Each may hold a body
    /// of up to `--max-value-bytes`, so this also bounds that memory. `/v1/health` and
    /// `/metrics` are not counted: an operator can still look at a saturated node. Default 512.
    pub max_in_flight: usize,
    /// Longest wait for a whole request head, from the connection's accept or the request's
    /// first byte. Default 10 s; a slow client on a bad link needs a few seconds.
    pub header_timeout: Duration,
    /// Longest wait for a whole request body, from when its handler starts reading it. Default
    /// 30 s, which takes a 4 MiB value at 140 KB/s.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed. Default 60 s, under the
    /// 90 s most client pools keep idle connections (they retry a request on a connection the
    /// server closed just before).
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: default_connections(open_file_limit()),
            max_in_flight: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl HttpLimits {
    /// Checks the limits against each other and against the open-file limit `open_files`
    /// (`None`: unlimited), naming the flag at fault.
    pub fn validate(&self, open_files: Option<u64>) -> Result<(), String> {
        for (value, flag) in [
            (self.max_connections, "--http-max-connections"),
            (self.max_in_flight, "--http-max-in-flight"),
        ] {
            if value == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        for (value, flag) in [
            (self.header_timeout, "--http-header-timeout-ms"),
            (self.body_timeout, "--http-body-timeout-ms"),
            (self.idle_timeout, "--http-idle-timeout-ms"),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        if self.max_connections > MAX_CONNECTIONS {
            return Err(format!(
                "--http-max-connections must be at most {MAX_CONNECTIONS}"
            ));
        }
        if let Some(files) = open_files {
            let most = most_connections(files);
            if self.max_connections as u64 > most {
                return Err(format!(
                    "--http-max-connections {} does not fit in the open-file limit of {files} \
                     (at most {most} beside the database and the cluster transport); raise the \
                     limit (ulimit -n) or lower the flag",
                    self.max_connections
                ));
            }
        }
        Ok(())
    }
}

/// The soft limit on open files (`RLIMIT_NOFILE`), `None` when unlimited or unknown.
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The most HTTP connections `open_files` descriptors can hold beside the rest of the node (at
/// least a quarter of them, for very low limits).
fn most_connections(open_files: u64) -> u64 {
    open_files
        .saturating_sub(RESERVED_FILES)
        .max(open_files / 4)
        .max(1)
}

/// The default connection cap for an open-file limit (`None`: unlimited).
pub fn default_connections(open_files: Option<u64>) -> usize {
    open_files.map_or(MAX_DEFAULT_CONNECTIONS, |files| {
        most_connections(files).min(MAX_DEFAULT_CONNECTIONS as u64) as usize
    })
}

/// The limit on requests in flight, shared by every connection of one server.
#[derive(Clone)]
pub struct InFlight {
    slots: Arc<Semaphore>,
    /// Requests in flight now (`hearsay_http_requests_in_flight`).
    gauge: Gauge,
}

impl InFlight {
    pub fn new(limit: usize, gauge: Gauge) -> Self {
        InFlight {
            slots: Arc::new(Semaphore::new(limit)),
            gauge,
        }
    }
}

/// A request being counted; uncounted when it ends, also when its client goes away.
struct Counted {
    _slot: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn overloaded() -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "this node is handling as many requests as it takes (--http-max-in-flight); retry shortly",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// Runs the request if a slot is free, else answers 503 `overloaded` at once (queueing would
/// only add latency to a node that is already behind). Health and metrics are never refused.
pub async fn limit_in_flight(
    State(limit): State<InFlight>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>();
    if route.is_some_and(|r| [HEALTH, METRICS].contains(&r.as_str())) {
        return next.run(request).await;
    }
    let Ok(slot) = limit.slots.clone().try_acquire_owned() else {
        return overloaded();
    };
    limit.gauge.inc();
    let _counted = Counted {
        _slot: slot,
        gauge: limit.gauge.clone(),
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_connection_cap_leaves_room_for_the_rest_of_the_node() {
        assert_eq!(default_connections(Some(1024)), 1024 - 192);
        assert_eq!(default_connections(Some(256)), 64);
        assert_eq!(default_connections(Some(100)), 25);
        assert_eq!(default_connections(Some(1 << 20)), MAX_DEFAULT_CONNECTIONS);
        assert_eq!(default_connections(None), MAX_DEFAULT_CONNECTIONS);
    }

    #[test]
    fn limits_that_cannot_work_are_refused_naming_their_flag() {
        let ok = HttpLimits {
            max_connections: 800,
            ..HttpLimits::default()
        };
        assert_eq!(ok.validate(Some(1024)), Ok(()));
        assert_eq!(ok.validate(None), Ok(()));
        let too_many = HttpLimits {
            max_connections: 900,
            ..ok.clone()
        };
        let e = too_many.validate(Some(1024)).unwrap_err();
        assert!(
            e.contains("--http-max-connections 900") && e.contains("832"),
            "{e}"
        );
        let absurd = HttpLimits {
            max_connections: MAX_CONNECTIONS + 1,
            ..ok.clone()
        };
        assert!(absurd
            .validate(None)
            .unwrap_err()
            .contains("--http-max-connections"));
        let no_in_flight = HttpLimits {
            max_in_flight: 0,
            ..ok.clone()
        };
        assert!(no_in_flight
            .validate(None)
            .unwrap_err()
            .contains("--http-max-in-flight"));
        let no_header_time = HttpLimits {
            header_timeout: Duration::ZERO,
            ..ok
        };
        assert!(no_header_time
            .validate(None)
            .unwrap_err()
            .contains("--http-header-timeout-ms"));
    }
}
