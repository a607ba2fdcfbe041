//! Storage at scale, with the real binary (release build) on loopback:
//!
//!     cargo bench --bench storage                              # 1,000,000 keys
//!     HEARSAY_STORAGE_KEYS=100000 cargo bench --bench storage  # scaled down
//!
//! One node under the default `fsync` durability takes HEARSAY_STORAGE_KEYS keys of 8 bytes with
//! 100-byte values over HTTP (64 connections), and the benchmark prints:
//! - bytes on disk (allocated blocks of the data directory, measured after a clean stop) after the
//!   inserts, after overwriting every key once, after deleting half and collecting every
//!   tombstone, then after `hearsay compact` (with its time, and the digest checked unchanged),
//!   and on a replica filled by anti-entropy alone, each against the live data;
//! - resident memory with the keys loaded and of an empty idle node;
//! - time to serving (and the digest after it) of a restart after `kill -9` with writes in the
//!   log, after SIGTERM, and after an idle `kill -9`;
//! - catch-up of an empty node from the full one: time, keys per second, cluster bytes received;
//! - a set of HEARSAY_STORAGE_SET_ELEMENTS elements (default 100,000): one add's latency and the
//!   cluster bytes it sends, and the set's catch-up;
//! - `GET /v1/kv?limit=100` over a range of deleted keys (tombstones not yet collected), and once
//!   they are collected (the replica takes part, as collection waits for every member).
#![allow(clippy::disallowed_methods)] // a benchmark measures real time

#[path = "../tests/common/mod.rs"]
mod common;

use common::{get_json, get_text, run_to_exit, Proc};
use reqwest::Client;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 64;
const VALUE_BYTES: usize = 100;
const KEY_BYTES: usize = 8;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn key(i: usize) -> String {
    format!("{i:08}")
}

fn value(i: usize, round: usize) -> String {
    let head = format!("{round}:{i}:");
    format!("{head}{}", "x".repeat(VALUE_BYTES - head.len()))
}

/// Allocated bytes of every file under `dir` (what `du` reports).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += disk_bytes(&entry.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// Runs `op(i)` for every `i` in `range` on CONNECTIONS concurrent tasks; returns the elapsed
/// time. Every request must succeed.
async fn drive<F, Fut>(range: std::ops::Range<usize>, op: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(range.start));
    let op = Arc::new(op);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (next, op, end) = (next.clone(), op.clone(), range.end);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return;
                }
                let mut tries = 0;
                while !op(i).await {
                    tries += 1;
                    assert!(tries < 50, "request {i} kept failing");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("load task");
    }
    started.elapsed()
}

async fn put_all(c: &Client, node: &Proc, range: std::ops::Range<usize>, round: usize) -> Duration {
    let (c, base) = (c.clone(), node.base.clone());
    drive(range, move |i| {
        let request = c
            .put(format!("{base}/v1/kv/{}", key(i)))
            .body(value(i, round));
        async move { request.send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await
}

async fn delete_all(c: &Client, node: &Proc, range: std::ops::Range<usize>) -> Duration {
    let (c, base) = (c.clone(), node.base.clone());
    drive(range, move |i| {
        let request = c.delete(format!("{base}/v1/kv/{}", key(i)));
        async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await
}

/// The node's digest: (root, keys).
async fn digest(c: &Client, node: &Proc) -> Option<(String, u64)> {
    let d = get_json(c, node.url("/v1/cluster/digest")).await?;
    Some((d["root"].as_str()?.to_string(), d["keys"].as_u64()?))
}

/// The sum of every series of `name` in the node's metrics.
async fn metric_sum(c: &Client, node: &Proc, name: &str) -> f64 {
    let text = get_text(c, node.url("/metrics")).await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn serve(data: &Path, extra: &[&str]) -> (Proc, Duration) {
    let data = data.to_str().expect("utf-8 path").to_string();
    let mut args = vec!["--data", data.as_str(), "--tombstone-min-age-ms", "1000"];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let proc = Proc::serve(&args);
    (proc, started.elapsed())
}

/// Stops the node with SIGTERM and waits for it to exit.
fn stop(mut node: Proc) {
    node.signal(libc::SIGTERM);
    node.wait_exit(Duration::from_secs(120))
        .expect("the node stops after SIGTERM");
}

async fn wait_for<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Fut,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return (found, started.elapsed());
        }
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Row {
    figure: String,
    value: String,
}

fn row(rows: &mut Vec<Row>, figure: impl Into<String>, value: impl Into<String>) {
    let (figure, value) = (figure.into(), value.into());
    eprintln!("=== {figure}: {value}");
    rows.push(Row { figure, value });
}

fn ratio(bytes: u64, live: u64) -> String {
    format!("{} ({:.1}× live)", mb(bytes), bytes as f64 / live as f64)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn rss(node: &Proc) -> String {
    let mb = |mib: Option<f64>| mib.map_or("?".into(), |m| format!("{:.0} MB", m * 1.048576));
    format!("{} (peak {})", mb(node.rss_mib()), mb(node.peak_rss_mib()))
}

#[tokio::main]
async fn main() {
    let keys = env("HEARSAY_STORAGE_KEYS", 1_000_000);
    let set_elements = env("HEARSAY_STORAGE_SET_ELEMENTS", 100_000);
    let live = (keys * (KEY_BYTES + VALUE_BYTES)) as u64;
    let c = Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    let root = tempfile::tempdir().expect("temp dir");
    let (a_dir, b_dir, e_dir) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("e"),
    );
    let mut rows = Vec::new();
    row(
        &mut rows,
        "keys",
        format!(
            "{keys} of {KEY_BYTES} bytes, {VALUE_BYTES}-byte values ({} live)",
            mb(live)
        ),
    );

    // An empty idle node.
    let (empty, _) = serve(&e_dir, &["--node-id", "e"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let empty_rss = rss(&empty);
    stop(empty);

    // Inserts.
    let (a, _) = serve(&a_dir, &["--node-id", "a"]);
    let took = put_all(&c, &a, 0..keys, 0).await;
    row(
        &mut rows,
        "inserts",
        format!(
            "{} ({:.0} writes/s)",
            secs(took),
            keys as f64 / took.as_secs_f64()
        ),
    );
    row(&mut rows, "RSS with the keys (after the inserts)", rss(&a));
    row(&mut rows, "RSS of an empty idle node", empty_rss);
    stop(a);
    row(
        &mut rows,
        "on disk after the inserts",
        ratio(disk_bytes(&a_dir), live),
    );

    // Restart after SIGTERM.
    let (a, took) = serve(&a_dir, &["--node-id", "a"]);
    row(&mut rows, "restart after SIGTERM", secs(took));
    row(&mut rows, "RSS with the keys (after a restart)", rss(&a));

    // Overwrites.
    let took = put_all(&c, &a, 0..keys, 1).await;
    row(
        &mut rows,
        "overwrites",
        format!(
            "{} ({:.0} writes/s)",
            secs(took),
            keys as f64 / took.as_secs_f64()
        ),
    );
    stop(a);
    row(
        &mut rows,
        "on disk after overwriting every key once",
        ratio(disk_bytes(&a_dir), live),
    );

    // kill -9 with writes in the log.
    let (mut a, _) = serve(&a_dir, &["--node-id", "a"]);
    let logged = (keys / 100).max(1000).min(keys);
    put_all(&c, &a, 0..logged, 2).await;
    let before = digest(&c, &a).await.expect("digest");
    a.kill9();
    let (a, took) = serve(&a_dir, &["--node-id", "a"]);
    let after = digest(&c, &a).await.expect("digest");
    row(
        &mut rows,
        format!("restart after kill -9 with {logged} writes in the log"),
        format!(
            "{} (digest {})",
            secs(took),
            if after == before { "same" } else { "DIFFERENT" }
        ),
    );

    // Idle kill -9.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut a = a;
    a.kill9();
    let (a, took) = serve(&a_dir, &["--node-id", "a"]);
    row(&mut rows, "restart after an idle kill -9", secs(took));

    // A big set, then catch-up of an empty node.
    let set_url = a.url("/v1/sets/big");
    let mut added = 0;
    while added < set_elements {
        let batch: Vec<String> = (added..(added + 5_000).min(set_elements))
            .map(|i| format!("e{i:07}"))
            .collect();
        added += batch.len();
        let r = c
            .post(&set_url)
            .json(&serde_json::json!({ "add": batch }))
            .send()
            .await
            .expect("set batch");
        assert!(r.status().is_success(), "set batch: {}", r.status());
    }
    let a_gossip = a.gossip.clone();
    let (b, _) = serve(&b_dir, &["--node-id", "b", "--seeds", &a_gossip]);
    let target = digest(&c, &a).await.expect("digest");
    let ((), took) = wait_for("catch-up", Duration::from_secs(600), || async {
        (digest(&c, &b).await.as_ref() == Some(&target)).then_some(())
    })
    .await;
    let mut received = 0.0;
    for kind in ["frame", "datagram"] {
        let series = format!("hearsay_cluster_bytes_total{{kind=\"{kind}\",direction=\"in\"}}");
        received += metric_sum(&c, &b, &series).await;
    }
    let mut events = Vec::new();
    for event in ["sessions", "declined", "fetch_failed", "rounds"] {
        let series = format!("hearsay_anti_entropy_total{{event=\"{event}\"}}");
        events.push(format!("{event} {}", metric_sum(&c, &b, &series).await));
    }
    row(
        &mut rows,
        "catch-up of an empty node",
        format!(
            "{} ({:.0} keys/s), {} received ({:.2}× live)",
            secs(took),
            keys as f64 / took.as_secs_f64(),
            mb(received as u64),
            received / live as f64
        ),
    );
    row(&mut rows, "its anti-entropy exchanges", events.join(", "));

    // One add to the big set, replicated to b.
    let mut latencies = Vec::new();
    let sent_before = metric_sum(&c, &a, "hearsay_cluster_bytes_total").await;
    let adds = 50;
    for i in 0..adds {
        let started = Instant::now();
        let r = c
            .put(a.url(&format!("/v1/sets/big/extra{i}")))
            .send()
            .await
            .expect("set add");
        assert!(r.status().is_success());
        latencies.push(started.elapsed());
    }
    let sent = metric_sum(&c, &a, "hearsay_cluster_bytes_total").await - sent_before;
    latencies.sort();
    let last = format!("/v1/sets/big/extra{}", adds - 1);
    wait_for("the set's adds on b", Duration::from_secs(60), || async {
        let r = c.get(b.url(&last)).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    row(
        &mut rows,
        format!("one add to a set of {set_elements} elements"),
        format!(
            "median {:.2} ms, {:.0} cluster bytes per add (both directions, b attached)",
            latencies[latencies.len() / 2].as_secs_f64() * 1e3,
            sent / adds as f64
        ),
    );
    stop(b);
    row(
        &mut rows,
        "on disk, a replica filled by anti-entropy",
        ratio(disk_bytes(&b_dir), live),
    );
    // b comes back for the deletes: a tombstone is collected once every member has seen it.
    let (b, _) = serve(&b_dir, &["--node-id", "b", "--seeds", &a_gossip]);

    // Deletes: the first half, so listing from the start walks their tombstones.
    let half = keys / 2;
    delete_all(&c, &a, 0..half).await;
    let page = |c: Client, url: String| async move {
        let started = Instant::now();
        let page = get_json(&c, url).await.expect("list");
        (
            started.elapsed(),
            page["keys"][0].as_str().map(str::to_string),
        )
    };
    let (took, first) = page(c.clone(), a.url("/v1/kv?limit=100")).await;
    row(
        &mut rows,
        format!("GET /v1/kv?limit=100 past {half} tombstones"),
        format!("{:.1} ms (first key {first:?})", took.as_secs_f64() * 1e3),
    );
    let (_, took) = wait_for("tombstone collection", Duration::from_secs(600), || async {
        let held = metric_sum(&c, &a, "hearsay_tombstones_held").await
            + metric_sum(&c, &b, "hearsay_tombstones_held").await;
        (held == 0.0).then_some(())
    })
    .await;
    row(
        &mut rows,
        "tombstone collection after the deletes",
        secs(took),
    );
    let (took, _) = page(c.clone(), a.url("/v1/kv?limit=100")).await;
    row(
        &mut rows,
        "GET /v1/kv?limit=100 once collected",
        format!("{:.1} ms", took.as_secs_f64() * 1e3),
    );
    let collected = digest(&c, &a).await.expect("digest before the compaction");
    stop(a);
    stop(b);
    let remaining = live - (half * (KEY_BYTES + VALUE_BYTES)) as u64;
    let bytes = disk_bytes(&a_dir);
    row(
        &mut rows,
        "on disk after deleting half and collecting",
        format!(
            "{} ({:.1}× the remaining live data)",
            mb(bytes),
            bytes as f64 / remaining as f64
        ),
    );
    let a_data = a_dir.to_str().expect("utf-8 path");
    let started = Instant::now();
    let (code, stderr) = run_to_exit(&["compact", "--data", a_data], Duration::from_secs(600));
    assert_eq!(code, Some(0), "hearsay compact failed: {stderr}");
    let took = started.elapsed();
    let bytes = disk_bytes(&a_dir);
    row(
        &mut rows,
        "on disk after that and `hearsay compact`",
        format!(
            "{} ({:.1}× the remaining live data), compacted in {}",
            mb(bytes),
            bytes as f64 / remaining as f64,
            secs(took)
        ),
    );
    let (a, _) = serve(&a_dir, &["--node-id", "a"]);
    let compacted = digest(&c, &a).await.expect("digest after the compaction");
    assert_eq!(compacted, collected, "the compaction changed the data");
    row(
        &mut rows,
        "keys after the compaction",
        format!("{} (same digest as before)", compacted.1),
    );
    stop(a);

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!("storage benchmark (load average: {})", load.trim());
    for Row { figure, value } in &rows {
        println!("  {figure:<52} {value}");
    }
}
