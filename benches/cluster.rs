//! Cluster timings on loopback with three real nodes in this process (real UDP/TCP sockets):
//!
//! - replication latency: a PUT acknowledged on n1 until it is readable on n2 and n3;
//! - failure detection: a node cut off (all its traffic dropped, as if killed) until every
//!   other member marks it dead;
//! - convergence: after a healed partition {n1} | {n2, n3} (long enough for both sides to declare
//!   the other dead) with writes on both sides, until all digests are equal and all members alive.
//!
//!     cargo bench --bench cluster                    # HEARSAY_BENCH_WRITES=300 by default
#![allow(clippy::disallowed_methods)] // a benchmark measures real time

use hearsay::server;
use reqwest::Client;
use serde_json::Value;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let writes: usize = std::env::var("HEARSAY_BENCH_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().expect("temp dir");
    let urls = server::spawn_cluster(3, dir.path())
        .await
        .expect("start the cluster");
    let c = Client::new();
    wait_until(&c, &urls, |alive| alive == 3).await;

    // Replication latency.
    let mut latencies = Vec::with_capacity(writes);
    for i in 0..writes {
        let key = format!("{}/v1/kv/lat/{i}", "");
        let r = c
            .put(format!("{}{key}", urls[0]))
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let acked = Instant::now();
        for u in &urls[1..] {
            loop {
                let r = c.get(format!("{u}{key}")).send().await.unwrap();
                if r.status() == 200 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        latencies.push(acked.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "replication latency, PUT acked on n1 until readable on n2 and n3 ({writes} writes): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*latencies.last().unwrap())
    );

    // Failure detection: cut n3 off completely.
    let cut = Instant::now();
    faults(&c, &urls[0], r#"["n3"]"#).await;
    faults(&c, &urls[1], r#"["n3"]"#).await;
    faults(&c, &urls[2], r#"["n1","n2"]"#).await;
    for u in &urls[..2] {
        while member_state(&c, u, "n3").await.as_deref() != Some("dead") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    println!(
        "failure detection, n3 cut off until n1 and n2 both mark it dead: {:.0} ms",
        ms(cut.elapsed())
    );

    // Partition {n1} | {n2, n3}, writes on both sides, heal.
    heal(&c, &urls).await;
    wait_until(&c, &urls, |alive| alive == 3).await;
    faults(&c, &urls[0], r#"["n2","n3"]"#).await;
    faults(&c, &urls[1], r#"["n1"]"#).await;
    faults(&c, &urls[2], r#"["n1"]"#).await;
    // A long partition: both sides have declared the other dead.
    while member_state(&c, &urls[0], "n2").await.as_deref() != Some("dead")
        || member_state(&c, &urls[1], "n1").await.as_deref() != Some("dead")
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..100 {
        c.put(format!("{}/v1/kv/split/{i}", urls[0]))
            .body("left")
            .send()
            .await
            .unwrap();
        c.put(format!("{}/v1/kv/split/{i}", urls[1]))
            .body("right")
            .send()
            .await
            .unwrap();
        c.put(format!("{}/v1/sets/split/e{i}", urls[2]))
            .send()
            .await
            .unwrap();
    }
    let healed = Instant::now();
    heal(&c, &urls).await;
    loop {
        let mut roots = Vec::new();
        for u in &urls {
            let d: Value = c
                .get(format!("{u}/v1/cluster/digest"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            roots.push(d["root"].clone());
        }
        if roots.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let converged = healed.elapsed();
    wait_until(&c, &urls, |alive| alive == 3).await;
    println!(
        "convergence after a healed partition (300 writes during it): digests equal after {:.0} ms, all members alive after {:.0} ms",
        ms(converged),
        ms(healed.elapsed())
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn faults(c: &Client, url: &str, drop: &str) {
    c.put(format!("{url}/v1/admin/faults"))
        .body(format!(r#"{{"drop": {drop}}}"#))
        .send()
        .await
        .expect("faults");
}

async fn heal(c: &Client, urls: &[String]) {
    for u in urls {
        c.delete(format!("{u}/v1/admin/faults"))
            .send()
            .await
            .expect("heal");
    }
}

async fn member_state(c: &Client, url: &str, id: &str) -> Option<String> {
    let v: Value = c
        .get(format!("{url}/v1/cluster/members"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["state"].as_str().unwrap_or("").to_string())
}

async fn wait_until(c: &Client, urls: &[String], ok: impl Fn(usize) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = true;
        for u in urls {
            let v: Value = match c.get(format!("{u}/v1/cluster/members")).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            let alive = v["members"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count());
            all &= ok(alive);
        }
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "cluster did not form");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
