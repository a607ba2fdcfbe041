//! TTLs and the watch stream against real processes on 127.0.0.1: a value written with `?ttl=`
//! expires on every node and stays gone; `GET /v1/watch` delivers a change made on another node
//! at once, resumes after `Last-Event-ID` without losing one, filters by prefix, announces
//! expiries, and tells a watcher whose position is gone to re-list.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{eventually, get_json, member_state, Proc};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(30);

/// n1, and n2 seeded with it, both seeing each other alive.
async fn pair(c: &Client) -> (Proc, Proc) {
    pair_with(c, &[]).await
}

/// [`pair`], both started with `extra` arguments.
async fn pair_with(c: &Client, extra: &[&str]) -> (Proc, Proc) {
    let n1 = Proc::serve(&[&["--node-id", "n1"][..], extra].concat());
    let n2 = Proc::serve(&[&["--node-id", "n2", "--seeds", &n1.gossip][..], extra].concat());
    for (observer, id) in [(&n1, "n2"), (&n2, "n1")] {
        eventually(&format!("{id} alive"), CONVERGE, || async {
            (member_state(c, observer, id).await?.0 == "alive").then_some(())
        })
        .await;
    }
    (n1, n2)
}

/// The JSON reply to a PUT of `body` at `url`.
async fn put_reply(c: &Client, url: String, body: &'static str) -> Value {
    c.put(url)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The wall-clock part of a write reply's HLC timestamp (milliseconds since the epoch).
fn written_ms(reply: &Value) -> u64 {
    reply["timestamp"]
        .as_str()
        .and_then(|t| t.parse::<u64>().ok())
        .map(|t| t >> 16)
        .expect("a timestamp")
}

/// The wall clock, in milliseconds since the epoch.
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn status_of(c: &Client, url: String) -> StatusCode {
    c.get(url).send().await.unwrap().status()
}

async fn listed(c: &Client, node: &Proc, prefix: &str) -> Vec<String> {
    let page = get_json(c, node.url(&format!("/v1/kv?prefix={prefix}")))
        .await
        .unwrap();
    serde_json::from_value(page["keys"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_with_a_ttl_expires_on_every_node_and_stays_gone() {
    let c = Client::new();
    let (n1, n2) = pair(&c).await;
    for bad in ["0", "-1", "1.5", "abc", "315360001", ""] {
        let resp = c
            .put(n1.url(&format!("/v1/kv/t?ttl={bad}")))
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "ttl={bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "bad_ttl", "ttl={bad}");
    }
    // A TTL means something only on a put.
    assert_eq!(status_of(&c, n1.url("/v1/kv/t?ttl=5")).await, 400);

    let before = epoch_ms();
    let reply = put_reply(&c, n1.url("/v1/kv/lease/a?ttl=2"), "held").await;
    let expires = reply["expires"]
        .as_u64()
        .expect("the reply names the expiry");
    assert!(
        (before + 2_000..before + 3_000).contains(&expires),
        "expires {expires}, written after {before}"
    );
    c.put(n1.url("/v1/kv/lease/b"))
        .body("kept")
        .send()
        .await
        .unwrap();
    for node in [&n1, &n2] {
        let resp = eventually("the value on both nodes", CONVERGE, || async {
            let resp = c.get(node.url("/v1/kv/lease/a")).send().await.ok()?;
            (resp.status() == 200).then_some(resp)
        })
        .await;
        assert_eq!(
            resp.headers()["x-hearsay-expires"].to_str().unwrap(),
            expires.to_string()
        );
        eventually("both keys listed", CONVERGE, || async {
            (listed(&c, node, "lease/").await == ["lease/a", "lease/b"]).then_some(())
        })
        .await;
    }
    // Gone everywhere once expired: reads, listings and a create-only put agree.
    for node in [&n1, &n2] {
        eventually("the value expired", Duration::from_secs(10), || async {
            (status_of(&c, node.url("/v1/kv/lease/a")).await == 404).then_some(())
        })
        .await;
        let now = epoch_ms();
        assert!(now >= expires, "gone at {now}, before its expiry {expires}");
        assert_eq!(listed(&c, node, "lease/").await, ["lease/b"]);
    }
    let body: Value = c
        .get(n2.url("/v1/kv/lease/a"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // A later write wins, without an expiry of its own; it replicates as usual.
    let resp = c
        .put(n2.url("/v1/kv/lease/a"))
        .header("if-none-match", "*")
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reply: Value = resp.json().await.unwrap();
    assert!(reply.get("expires").is_none(), "{reply}");
    eventually("the new write on n1", CONVERGE, || async {
        let resp = c.get(n1.url("/v1/kv/lease/a")).send().await.ok()?;
        let fresh = resp.status() == 200 && resp.headers().get("x-hearsay-expires").is_none();
        fresh.then_some(())
    })
    .await;
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// A watch stream being read.
struct Watch {
    response: reqwest::Response,
    buffer: String,
}

impl Watch {
    async fn open(c: &Client, node: &Proc, query: &str, last_id: Option<u64>) -> Watch {
        let mut request = c.get(node.url(&format!("/v1/watch{query}")));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Watch {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` if none comes within `within`.
    async fn next(&mut self, within: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(v.trim().to_string());
                    }
                }
                // A comment (keep-alive) carries no data.
                let Some(data) = data else { continue };
                event.data = serde_json::from_str(&data).unwrap();
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event that is not a keep-alive, failing the test if none comes soon.
    async fn expect(&mut self) -> Sse {
        self.next(Duration::from_secs(10))
            .await
            .expect("an event within 10 s")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_sees_writes_from_other_nodes_at_once_and_resumes_without_a_gap() {
    let c = Client::new();
    let (n1, n2) = pair(&c).await;
    let mut watch = Watch::open(&c, &n2, "?prefix=app", None).await;

    // Writes on n1 reach n2's watchers as they replicate.
    let mut latencies = Vec::new();
    let mut last_id = 0;
    for i in 0..20 {
        let started = Instant::now();
        let resp = c
            .put(n1.url(&format!("/v1/kv/app/k{i}")))
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
        let reply: Value = resp.json().await.unwrap();
        let event = watch.expect().await;
        latencies.push(started.elapsed());
        assert_eq!(event.event, "kv");
        assert_eq!(event.data["key"], format!("app/k{i}"));
        assert_eq!(event.data["node"], "n1");
        assert_eq!(event.data["deleted"], false);
        assert_eq!(event.data["timestamp"], reply["timestamp"]);
        // When n2 applied it: on n2's (HLC) clock, no earlier than the write and not later than
        // now (give or take how far a hybrid clock may lead the wall clock).
        let written_ms = written_ms(&reply);
        let applied_ms = event.data["applied_ms"].as_u64().expect("applied_ms");
        assert!(
            applied_ms >= written_ms && applied_ms <= epoch_ms() + 1_000,
            "applied at {applied_ms}, written at {written_ms}"
        );
        let id = event.id.unwrap();
        assert!(id > last_id, "ids increase: {id} after {last_id}");
        last_id = id;
        // Another prefix is never shown.
        c.put(n1.url(&format!("/v1/kv/other/k{i}")))
            .body("x")
            .send()
            .await
            .unwrap();
    }
    latencies.sort();
    eprintln!(
        "watch: a write on n1 seen by a watcher on n2 after p50 {:?}, max {:?} (PUT included)",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    drop(watch);

    // While no one watches: a delete, a set add, a counter add and a short TTL, all on n1.
    c.delete(n1.url("/v1/kv/app/k0")).send().await.unwrap();
    c.put(n1.url("/v1/sets/app-team/alice"))
        .send()
        .await
        .unwrap();
    c.post(n1.url("/v1/counters/app-hits"))
        .json(&serde_json::json!({"add": 3}))
        .send()
        .await
        .unwrap();
    let ttl = put_reply(&c, n1.url("/v1/kv/app/lease?ttl=1"), "brief").await;

    // Resuming from the last id seen brings exactly what was missed, in order.
    let mut resumed = Watch::open(&c, &n2, "?prefix=app", Some(last_id)).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = resumed.expect().await;
        seen.push((
            event.event.clone(),
            event.data["key"].clone(),
            event.data["deleted"].clone(),
        ));
        if event.data["key"] == "app/lease" {
            assert_eq!(event.data["expires"], ttl["expires"]);
        }
    }
    let want = |kind: &str, key: &str, deleted: bool| {
        (kind.to_string(), Value::from(key), Value::from(deleted))
    };
    assert_eq!(
        seen,
        [
            want("kv", "app/k0", true),
            want("set", "app-team", false),
            want("counter", "app-hits", false),
            want("kv", "app/lease", false),
        ]
    );
    // The TTL's expiry is announced as a deletion.
    let expired = resumed.expect().await;
    assert_eq!(
        (
            expired.event.as_str(),
            &expired.data["key"],
            &expired.data["deleted"]
        ),
        ("kv", &Value::from("app/lease"), &Value::from(true))
    );
    drop(resumed);

    // `?since=` is the same as Last-Event-ID.
    let mut since = Watch::open(&c, &n2, &format!("?prefix=app/k0&since={last_id}"), None).await;
    let event = since.expect().await;
    assert_eq!(
        (event.data["key"].as_str(), event.data["deleted"].as_bool()),
        (Some("app/k0"), Some(true))
    );

    // A position this node does not hold (here: before it started) is a reset, then the stream
    // follows on from the reset's id.
    let mut stale = Watch::open(&c, &n2, "?prefix=app", Some(1)).await;
    let reset = stale.expect().await;
    assert_eq!(reset.event, "reset");
    c.put(n1.url("/v1/kv/app/after-reset"))
        .body("v")
        .send()
        .await
        .unwrap();
    let event = stale.expect().await;
    assert_eq!(event.data["key"], "app/after-reset");
    assert!(event.id.unwrap() > reset.id.unwrap());

    // A bad position is a 400.
    let resp = c
        .get(n2.url("/v1/watch?since=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bad_position");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_open_watches_stops_promptly() {
    let c = Client::new();
    let mut n1 = Proc::serve(&["--node-id", "n1"]);
    let mut watch = Watch::open(&c, &n1, "", None).await;
    c.put(n1.url("/v1/kv/k")).body("v").send().await.unwrap();
    assert_eq!(watch.expect().await.data["key"], "k");
    let started = Instant::now();
    n1.signal(libc::SIGTERM);
    let status = n1.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "the node did not stop: {status:?}"
    );
    eprintln!("stopped with a watch open in {:?}", started.elapsed());
    // The stream ended with the node.
    assert!(watch.next(Duration::from_secs(5)).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_that_waited_out_a_partition_tells_how_late_it_arrived() {
    let c = Client::new();
    let (n1, n2) = pair_with(&c, &["--fault-injection"]).await;
    let mut watch = Watch::open(&c, &n2, "?prefix=late", None).await;
    let drop = |node: &Proc, other: &str| {
        let body = format!(r#"{{"drop": ["{other}"], "loss": 0, "delay_ms": 0}}"#);
        c.put(node.url("/v1/admin/faults")).body(body).send()
    };
    assert!(drop(&n1, "n2").await.unwrap().status().is_success());
    assert!(drop(&n2, "n1").await.unwrap().status().is_success());
    let reply = put_reply(&c, n1.url("/v1/kv/late"), "v").await;
    let cut = Instant::now();
    // The cut lasts until n2 notices it (a second or more).
    eventually("n1 suspect at n2", CONVERGE, || async {
        (member_state(&c, &n2, "n1").await?.0 != "alive").then_some(())
    })
    .await;
    let away = cut.elapsed().as_millis() as u64;
    for node in [&n1, &n2] {
        c.delete(node.url("/v1/admin/faults")).send().await.unwrap();
    }
    let event = watch.expect().await;
    assert_eq!(event.data["key"], "late");
    let written_ms = written_ms(&reply);
    let applied_ms = event.data["applied_ms"].as_u64().expect("applied_ms");
    // Give or take how far the writer's clock ran ahead of n2's (the same host's, but its
    // hybrid clock may lead the wall clock by a few tens of milliseconds).
    assert!(
        applied_ms + 200 >= written_ms + away,
        "applied {} ms after the write, which was cut off for {away} ms",
        applied_ms as i64 - written_ms as i64
    );
}
