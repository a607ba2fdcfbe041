//! HTTP overload degrades, never breaks: stalled clients are cut off by the header, body and idle
//! timeouts, connections over the cap wait instead of exhausting file descriptors, requests over
//! the in-flight limit get 503 `overloaded` with `Retry-After`, and a graceful stop finishes the
//! requests in flight. Figures are printed (`--nocapture`), not asserted beyond generous bounds.
#![allow(clippy::disallowed_methods)] // tests measure real time

mod common;

use common::raw_http::{self, RawResponse};
use common::{eventually, start, Proc, TestServerParts};
use reqwest::Client;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WITHIN: Duration = Duration::from_secs(30);

/// Opens a connection and sends `bytes` on it, leaving the rest of the request unsent.
async fn stalled(base: &str, bytes: &[u8]) -> TcpStream {
    let mut stream = raw_http::connect(base).await;
    stream.write_all(bytes).await.expect("write");
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn half_requests_over_the_connection_cap_neither_stop_the_node_nor_stay_open() {
    // 256 open files leave room for 64 HTTP connections; 300 stalled clients would exhaust the
    // descriptors of a server without a cap, and it would never answer anyone again.
    const OPEN_FILES: u64 = 256;
    const STALLED: usize = 300;
    let header_timeout = Duration::from_millis(1000);
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::serve_with_open_file_limit(
        &[
            "--data",
            common::path_str(dir.path()),
            "--http-header-timeout-ms",
            &header_timeout.as_millis().to_string(),
        ],
        OPEN_FILES,
    );
    // Each stalled client notes how long its connection lived.
    let mut lifetimes = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let opened = Instant::now();
        let mut stream = stalled(&node.base, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n").await;
        lifetimes.push(tokio::spawn(async move {
            raw_http::closed_within(&mut stream, WITHIN)
                .await
                .map(|_| opened.elapsed())
        }));
    }

    let asked = Instant::now();
    let client = Client::builder().timeout(WITHIN).build().unwrap();
    let health = client.get(node.url("/v1/health")).send().await;
    let answered_after = asked.elapsed();
    assert_eq!(
        health.expect("the node answers while flooded").status(),
        200
    );
    eprintln!(
        "{STALLED} stalled connections, {OPEN_FILES} open files: a GET was answered after {answered_after:?}"
    );

    let metrics = client.get(node.url("/metrics")).send().await.unwrap();
    let open = metric(&metrics.text().await.unwrap(), "hearsay_http_connections");
    assert!(open <= 64.0, "{open} connections open, over the cap");
    eprintln!("open HTTP connections meanwhile: {open}");
    let mut closed = Vec::with_capacity(STALLED);
    for lifetime in lifetimes {
        closed.push(lifetime.await.unwrap());
    }
    let lifetimes = closed;
    assert!(
        lifetimes.iter().all(Option::is_some),
        "{} stalled connections still open after {WITHIN:?}",
        lifetimes.iter().filter(|l| l.is_none()).count()
    );
    let lifetimes: Vec<Duration> = lifetimes.into_iter().flatten().collect();
    // The server's deadline starts at its accept, after the client's connect: never sooner.
    let shortest = lifetimes.iter().min().copied().unwrap_or_default();
    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    assert!(shortest >= header_timeout, "closed after {shortest:?}");
    eprintln!("stalled connections closed after {shortest:?} to {longest:?}");

    // And the node still does its job.
    let put = client
        .put(node.url("/v1/kv/after"))
        .body("flood")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let get = client.get(node.url("/v1/kv/after")).send().await.unwrap();
    assert_eq!(get.text().await.unwrap(), "flood");
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_heads_and_idle_connections_are_closed_after_their_timeouts() {
    let header = Duration::from_millis(300);
    let idle = Duration::from_millis(1500);
    let server = start(|c| {
        c.http.header_timeout = header;
        c.http.idle_timeout = idle;
    })
    .await;
    // Silent, and half a head: both closed after the header timeout.
    for bytes in [&b""[..], b"PUT /v1/kv/k HTTP/1.1\r\nContent-Le"] {
        let opened = Instant::now();
        let mut stream = stalled(&server.base, bytes).await;
        raw_http::closed_within(&mut stream, WITHIN)
            .await
            .expect("closed");
        let lived = opened.elapsed();
        assert!(lived >= header && lived < idle, "{bytes:?}: {lived:?}");
    }
    // After an answer the connection may idle longer than the header timeout, then is closed.
    let mut stream = raw_http::connect(&server.base).await;
    let health = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(
        raw_http::exchange(&mut stream, health, WITHIN).await.status,
        200
    );
    let answered = Instant::now();
    raw_http::closed_within(&mut stream, WITHIN)
        .await
        .expect("closed");
    let idled = answered.elapsed();
    assert!(idled >= idle, "closed after {idled:?} idle");
    eprintln!(
        "header timeout {header:?}, idle timeout {idle:?}: idle connection closed after {idled:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_is_not_stored() {
    let timeout = Duration::from_millis(500);
    let server = start(|c| c.http.body_timeout = timeout).await;
    let sent = Instant::now();
    let mut stream = stalled(
        &server.base,
        b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello",
    )
    .await;
    let resp: RawResponse = raw_http::read_response(&mut stream, WITHIN).await;
    let waited = sent.elapsed();
    assert_eq!((resp.status, resp.code().as_str()), (408, "body_timeout"));
    assert!(waited >= timeout, "answered after {waited:?}");
    // The rest of the body is never read: the connection is closed.
    raw_http::closed_within(&mut stream, WITHIN)
        .await
        .expect("closed after the 408");
    let c = Client::new();
    let get = c.get(server.url("/v1/kv/slow")).send().await.unwrap();
    assert_eq!(get.status(), 404);
    server.stop().await;
}

/// Sends a PUT of `key` with half its 10-byte body, then waits until the server counts it in
/// flight.
async fn put_in_flight(c: &Client, base: &str, key: &str) -> TcpStream {
    let head = format!("PUT /v1/kv/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello");
    let stream = stalled(base, head.as_bytes()).await;
    eventually("the slow PUT is in flight", WITHIN, || async {
        let metrics = c
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics
            .contains("hearsay_http_requests_in_flight 1")
            .then_some(())
    })
    .await;
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_over_the_in_flight_limit_get_503_overloaded_with_retry_after() {
    let server = start(|c| c.http.max_in_flight = 1).await;
    let c = Client::builder().timeout(WITHIN).build().unwrap();
    let mut slow = put_in_flight(&c, &server.base, "slow").await;
    for req in [
        c.get(server.url("/v1/kv/other")),
        c.put(server.url("/v1/kv/other")).body("v"),
        c.get(server.url("/v1/cluster/members")),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "overloaded", "{body}");
    }
    // An operator can still look at the saturated node.
    assert_eq!(
        c.get(server.url("/v1/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = c.get(server.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(
            r#"hearsay_http_requests_total{method="GET",route="/v1/kv/{*key}",status="503"} 1"#
        ),
        "{metrics}"
    );
    // The request in flight completes, and the slot is free again.
    let resp = raw_http::exchange(&mut slow, b"world", WITHIN).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let get = c.get(server.url("/v1/kv/slow")).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.text().await.unwrap(), "helloworld");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_finishes_the_request_in_flight_and_stops_accepting() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let base = server.base.clone();
    let mut slow = put_in_flight(&c, &base, "last").await;
    let leave = c
        .post(server.url("/v1/cluster/leave"))
        .send()
        .await
        .unwrap();
    assert_eq!(leave.status(), 200);
    eventually("the server stops accepting", WITHIN, || async {
        TcpStream::connect(raw_http::host_of(&base)).await.err()
    })
    .await;
    let resp = raw_http::exchange(&mut slow, b"world", WITHIN).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let TestServerParts { dir, task } = server.into_parts();
    tokio::time::timeout(WITHIN, task)
        .await
        .expect("the server stops once the request is answered")
        .unwrap()
        .unwrap();
    // The answered write is durable.
    let again = common::start_in(dir, |_| {}).await;
    let get = c.get(again.url("/v1/kv/last")).send().await.unwrap();
    assert_eq!(get.text().await.unwrap(), "helloworld");
    again.stop().await;
}
