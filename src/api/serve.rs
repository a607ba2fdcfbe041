//! The HTTP server's accept loop: serves a router over HTTP/1.1 on a bound listener with at most
//! `max_connections` connections open (more wait in the kernel's listen backlog, so the node
//! never runs out of file descriptors), each under the header and idle deadlines of
//! [`super::deadline_io`]. On stop it closes the listener, lets requests in flight finish and
//! closes idle connections. Knows nothing of routes or of the node.

use super::deadline_io::{DeadlineIo, Deadlines, RequestPhase};
use super::limits::HttpLimits;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::gauge::Gauge;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// After a stop, the longest wait for open connections to finish their requests.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// The pause after an accept fails for want of resources (file descriptors, memory): the
/// connection stays in the backlog and is retried, instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `stop` completes, then shuts down gracefully.
/// `connections` counts the open connections (`hearsay_http_connections`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    connections: Gauge,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping, stopped) = watch::channel(false);
    let deadlines = Deadlines {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
    };
    let mut failed_accepts = 0u64;
    tokio::pin!(stop);
    loop {
        // A free slot first: without one, the next connection stays in the backlog.
        let slot = tokio::select! {
            _ = &mut stop => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    failed_accepts += 1;
                    if failed_accepts.is_power_of_two() {
                        tracing::warn!(error = %e, failed_accepts, "HTTP accept failed");
                    }
                    if !is_per_connection(&e) {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
        };
        let connection = Connection {
            app: app.clone(),
            deadlines,
            _slot: slot,
            _open: OpenConnection::new(connections.clone()),
            stopped: stopped.clone(),
        };
        tokio::spawn(connection.run(stream));
    }
    drop(listener);
    stopping.send_replace(true);
    // Every slot back means every connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(STOP_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the stop grace period; leaving them");
    }
}

fn is_event_stream<B>(
    response: &Result<axum::http::Response<B>, std::convert::Infallible>,
) -> bool {
    response.as_ref().is_ok_and(|r| {
        r.headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
    })
}

/// Accept errors about one connection (it was reset before it was accepted), as opposed to the
/// node running out of resources.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Completes once the server stops (or is gone).
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// Counts one open connection in the gauge while it lives.
struct OpenConnection(Gauge);

impl OpenConnection {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One accepted connection and what it holds until it ends.
struct Connection {
    app: Router,
    deadlines: Deadlines,
    _slot: OwnedSemaphorePermit,
    _open: OpenConnection,
    stopped: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        // Answers are written whole; without Nagle's delay they leave at once.
        let _ = stream.set_nodelay(true);
        let phase = RequestPhase::new();
        let io = TokioIo::new(DeadlineIo::new(stream, self.deadlines, phase.clone()));
        let router = TowerToHyperService::new(self.app);
        let service = hyper::service::service_fn(move |request| {
            phase.handling();
            let phase = phase.clone();
            let response = hyper::service::Service::call(&router, request);
            async move {
                let response = response.await;
                // A stream of events is still being answered while its body flows: the idle
                // deadline starts when it ends (it ends the connection).
                if !is_event_stream(&response) {
                    phase.answered();
                }
                response
            }
        });
        let connection = http1::Builder::new()
            // The deadlines are DeadlineIo's; hyper's own header timer would also count idle
            // time between requests as header time.
            .header_read_timeout(None)
            .serve_connection(io, service);
        tokio::pin!(connection);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "HTTP connection ended");
                }
            }
            () = stopping(&mut self.stopped) => {
                // Finishes the request in progress, if any, then closes.
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}
