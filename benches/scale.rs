//! Membership and convergence at scale with real processes on 127.0.0.1 (`hearsay serve`, one
//! process per node, as in production):
//!
//! - cold start: HEARSAY_SCALE_NODES nodes (default 30) started one after another, each seeded
//!   with the first; time until every node lists every member alive, from the last start;
//! - idle cost per node over 10 s: CPU (share of one core) and resident memory;
//! - kill -9 of one node: time until every other lists it dead; its restart (same directory and
//!   address): time until it lists every member alive, and until every other lists it alive;
//! - 100 writes spread over the nodes: time from the last acknowledgement until every digest is
//!   equal;
//! - dissemination under load: three fresh nodes, HEARSAY_SCALE_CONNECTIONS connections (default
//!   64) writing 100-byte values to all
//!   three for HEARSAY_SCALE_LOAD_S seconds (default 15): how many times each node received each
//!   write made elsewhere (`hearsay_rumors_total{event="received"}`; 1 is the minimum), and the
//!   replication lag (a PUT on the first node, from its sending until a watch stream on the third
//!   delivers it), idle and under that load; and, from the third node's
//!   `hearsay_replication_lag_seconds` histogram, the lag of every write made elsewhere under that
//!   load, from its timestamp at its origin to its merge there (the HTTP queues left out);
//! - loss: three fresh nodes, each losing HEARSAY_SCALE_LOSS (default 0.05) of its cluster
//!   datagrams and frames in and out (about 10% of the messages between two of them), for
//!   HEARSAY_SCALE_LOSS_S seconds (default 300; 0 skips it): suspicions raised, transitions to
//!   suspect and false deaths; then one node is killed (-9) under that loss: time until both
//!   others list it dead.
//!
//! Run it:
//!
//!     cargo bench --bench scale
//!     HEARSAY_SCALE_NODES=40 HEARSAY_SCALE_LOSS_S=60 cargo bench --bench scale
#![allow(clippy::disallowed_methods)] // a benchmark measures real time

#[path = "../tests/common/mod.rs"]
mod common;

use common::{get_json, metric, Proc};
use reqwest::Client;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

struct Node {
    id: String,
    data: tempfile::TempDir,
    gossip: String,
    proc: Option<Proc>,
}

impl Node {
    fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("running")
    }
}

fn start(id: &str, data: &std::path::Path, gossip: Option<&str>, seeds: Option<&str>) -> Proc {
    let data = data.to_str().expect("utf-8 path");
    let mut args = vec![
        "--node-id",
        id,
        "--data",
        data,
        "--durability",
        "none",
        "--fault-injection",
    ];
    if let Some(gossip) = gossip {
        args.extend(["--gossip", gossip]);
    }
    if let Some(seeds) = seeds {
        args.extend(["--seeds", seeds]);
    }
    Proc::serve(&args)
}

/// How `observer` lists each member: (alive, and the state of `id` if given).
async fn members(c: &Client, observer: &Proc) -> Option<Vec<(String, String)>> {
    let list = get_json(c, observer.url("/v1/cluster/members")).await?;
    Some(
        list["members"]
            .as_array()?
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap_or_default().to_string(),
                    m["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    )
}

async fn alive_count(c: &Client, observer: &Proc) -> usize {
    members(c, observer).await.map_or(0, |m| {
        m.iter().filter(|(_, state)| state == "alive").count()
    })
}

async fn state_of(c: &Client, observer: &Proc, id: &str) -> Option<String> {
    members(c, observer)
        .await?
        .into_iter()
        .find_map(|(member, state)| (member == id).then_some(state))
}

/// Polls every `procs` until `done` holds for all of them; the time it took from `since`.
async fn until_all<'a, F, Fut>(
    procs: impl Iterator<Item = &'a Proc> + Clone,
    since: Instant,
    within: Duration,
    mut done: F,
) -> Option<Duration>
where
    F: FnMut(&'a Proc) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut pending: Vec<&Proc> = procs.collect();
    while since.elapsed() < within {
        let mut left = Vec::new();
        for p in pending {
            if !done(p).await {
                left.push(p);
            }
        }
        if left.is_empty() {
            return Some(since.elapsed());
        }
        pending = left;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Polls every one of `procs` until each lists member `id` in `state`; the time from `since`.
async fn until_all_list<'a>(
    c: &Client,
    procs: impl Iterator<Item = &'a Proc> + Clone,
    id: &str,
    state: &str,
    since: Instant,
    within: Duration,
) -> Option<Duration> {
    until_all(procs, since, within, |p| async move {
        state_of(c, p, id).await.as_deref() == Some(state)
    })
    .await
}

/// (utime + stime) of a process in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("not within the limit".into(), |d| {
        format!("{:.2} s", d.as_secs_f64())
    })
}

fn row(rows: &mut Vec<(String, String)>, figure: impl Into<String>, value: impl Into<String>) {
    let (figure, value) = (figure.into(), value.into());
    eprintln!("=== {figure}: {value}");
    rows.push((figure, value));
}

async fn digest(c: &Client, node: &Proc) -> Option<String> {
    let d = get_json(c, node.url("/v1/cluster/digest")).await?;
    Some(d["root"].as_str()?.to_string())
}

#[tokio::main]
async fn main() {
    let n: usize = env("HEARSAY_SCALE_NODES", 30);
    let loss: f64 = env("HEARSAY_SCALE_LOSS", 0.05);
    let loss_s: u64 = env("HEARSAY_SCALE_LOSS_S", 300);
    let c = Client::new();
    let mut rows = Vec::new();
    let limit = Duration::from_secs(120);

    // Cold start.
    let mut nodes: Vec<Node> = Vec::new();
    let started = Instant::now();
    for i in 1..=n {
        let id = format!("n{i}");
        let data = tempfile::tempdir().expect("temp dir");
        let seeds = nodes.first().map(|first| first.gossip.clone());
        let proc = start(&id, data.path(), None, seeds.as_deref());
        nodes.push(Node {
            id,
            data,
            gossip: proc.gossip.clone(),
            proc: Some(proc),
        });
    }
    let last_started = Instant::now();
    let formed = until_all(nodes.iter().map(Node::proc), last_started, limit, |p| {
        let c = &c;
        async move { alive_count(c, p).await == n }
    })
    .await;
    row(
        &mut rows,
        format!("cold start of {n}: every node lists {n} alive, after the last start"),
        format!(
            "{} (starting them took {:.2} s)",
            secs(formed),
            (last_started - started).as_secs_f64()
        ),
    );

    // Idle cost.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ticks_before: Vec<u64> = nodes
        .iter()
        .map(|n| cpu_ticks(n.proc().pid()).unwrap_or(0))
        .collect();
    let idle = Duration::from_secs(10);
    tokio::time::sleep(idle).await;
    let hz = 100.0; // USER_HZ on Linux
    let cpu: Vec<f64> = nodes
        .iter()
        .zip(&ticks_before)
        .map(|(n, before)| {
            let after = cpu_ticks(n.proc().pid()).unwrap_or(*before);
            (after - before) as f64 / hz / idle.as_secs_f64() * 100.0
        })
        .collect();
    let rss: Vec<f64> = nodes
        .iter()
        .filter_map(|n| n.proc().rss_mib())
        .map(|mib| mib * 1.048576)
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    row(
        &mut rows,
        format!("idle, per node ({n} nodes)"),
        format!(
            "CPU {:.2}% of a core (max {:.2}%), RSS {:.0} MB (max {:.0} MB)",
            mean(&cpu),
            max(&cpu),
            mean(&rss),
            max(&rss)
        ),
    );

    // Kill -9 and restart.
    let victim = n / 2;
    let victim_id = nodes[victim].id.clone();
    if let Some(mut p) = nodes[victim].proc.take() {
        p.kill9();
    }
    let killed = Instant::now();
    let dead = until_all_list(
        &c,
        others(&nodes, victim),
        &victim_id,
        "dead",
        killed,
        limit,
    )
    .await;
    row(
        &mut rows,
        format!("kill -9 of {victim_id}: every other node lists it dead"),
        secs(dead),
    );
    let seeds = nodes[0].gossip.clone();
    let restarted_proc = start(
        &victim_id,
        nodes[victim].data.path(),
        Some(&nodes[victim].gossip),
        Some(&seeds),
    );
    let restarted = Instant::now();
    nodes[victim].proc = Some(restarted_proc);
    let lists = until_all(
        std::iter::once(nodes[victim].proc()),
        restarted,
        limit,
        |p| {
            let c = &c;
            async move { alive_count(c, p).await == n }
        },
    )
    .await;
    let seen_back = until_all_list(
        &c,
        others(&nodes, victim),
        &victim_id,
        "alive",
        restarted,
        limit,
    )
    .await;
    row(
        &mut rows,
        format!("{victim_id} restarted: it lists {n} alive / every other lists it alive"),
        format!("{} / {}", secs(lists), secs(seen_back)),
    );

    // Convergence after 100 writes.
    for i in 0..100 {
        let node = nodes[i % n].proc();
        let r = c
            .put(node.url(&format!("/v1/kv/scale/{i}")))
            .body(format!("v{i}"))
            .send()
            .await
            .expect("write");
        assert!(r.status().is_success());
    }
    let written = Instant::now();
    let converged = loop {
        let mut roots = Vec::new();
        for node in &nodes {
            roots.push(digest(&c, node.proc()).await);
        }
        if roots.iter().all(|r| r.is_some() && *r == roots[0]) {
            break Some(written.elapsed());
        }
        if written.elapsed() > limit {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    row(
        &mut rows,
        format!("100 writes over {n} nodes: every digest equal after the last acknowledgement"),
        secs(converged),
    );
    drop(nodes);

    let load_s: u64 = env("HEARSAY_SCALE_LOAD_S", 15);
    if load_s > 0 {
        loaded_trio(&c, &mut rows, load_s).await;
    }
    if loss_s > 0 {
        lossy_trio(&c, &mut rows, loss, loss_s).await;
    }

    println!("| figure | value |");
    println!("|---|---|");
    for (figure, value) in rows {
        println!("| {figure} | {value} |");
    }
}

/// Every node but the `victim`-th.
fn others(nodes: &[Node], victim: usize) -> impl Iterator<Item = &Proc> + Clone {
    nodes
        .iter()
        .enumerate()
        .filter(move |(i, _)| *i != victim)
        .map(|(_, n)| n.proc())
}

/// Sums over `procs` of the membership events: suspicions raised, transitions to suspect, and
/// to dead.
async fn member_events(c: &Client, procs: &[Proc]) -> [u64; 3] {
    let mut sums = [0u64; 3];
    for p in procs {
        for (k, event) in ["suspicion_raised", "suspected", "declared_dead"]
            .iter()
            .enumerate()
        {
            let series = format!("hearsay_member_events_total{{event=\"{event}\"}}");
            sums[k] += metric(c, p, &series).await.unwrap_or(0);
        }
    }
    sums
}

/// Three fresh nodes, the first of them seeding the others, all alive.
async fn trio(c: &Client, prefix: &str, dirs: &[tempfile::TempDir]) -> Vec<Proc> {
    let first = start(&format!("{prefix}1"), dirs[0].path(), None, None);
    let seeds = first.gossip.clone();
    let procs = vec![
        first,
        start(&format!("{prefix}2"), dirs[1].path(), None, Some(&seeds)),
        start(&format!("{prefix}3"), dirs[2].path(), None, Some(&seeds)),
    ];
    let formed = until_all(
        procs.iter(),
        Instant::now(),
        Duration::from_secs(60),
        |p| async move { alive_count(c, p).await == 3 },
    )
    .await;
    assert!(formed.is_some(), "three nodes did not form a cluster");
    procs
}

/// Replication lags: writes on `from` one after another until `until`, each timed from when its
/// PUT was sent until a watch stream on `to` delivers it (the PUT's own round trip included, no
/// polling: the stream delivers each change as `to` makes it durable).
async fn lags(c: &Client, from: &Proc, to: &Proc, tag: &str, until: Instant) -> Vec<Duration> {
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let prefix = format!("lag/{tag}/");
    let mut stream = c
        .get(to.url(&format!("/v1/watch?prefix={prefix}")))
        .send()
        .await
        .expect("watch");
    assert_eq!(stream.status(), 200);
    let seen = arrivals.clone();
    let reader = tokio::spawn(async move {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            let now = Instant::now();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                for line in block.lines() {
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let event: serde_json::Value =
                        serde_json::from_str(data.trim()).unwrap_or_default();
                    if let Some(key) = event["key"].as_str() {
                        seen.lock().unwrap().insert(key.to_string(), now);
                    }
                }
            }
        }
    });
    let mut sent = Vec::new();
    let mut i = 0;
    while Instant::now() < until {
        let key = format!("{prefix}{i}");
        i += 1;
        let started = Instant::now();
        let r = c
            .put(from.url(&format!("/v1/kv/{key}")))
            .body("v")
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            sent.push((key, started));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last ones may still be on their way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
    let arrivals = arrivals.lock().unwrap();
    let mut lags: Vec<Duration> = sent
        .iter()
        .map(|(key, started)| {
            arrivals
                .get(key)
                .map_or(Duration::from_secs(3600), |at| at.duration_since(*started))
        })
        .collect();
    lags.sort();
    lags
}

fn percentiles(lags: &[Duration]) -> String {
    let pct = |p: f64| {
        lags.get(((lags.len() as f64 * p) as usize).min(lags.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    format!(
        "p50 {:.1} ms, p99 {:.1} ms ({} samples)",
        pct(0.5),
        pct(0.99),
        lags.len()
    )
}

/// `hearsay_replication_lag_seconds` of `p`: each bucket's bound (seconds, `INFINITY` last)
/// and its cumulative count.
async fn lag_buckets(c: &Client, p: &Proc) -> Vec<(f64, u64)> {
    let text = c
        .get(p.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("hearsay_replication_lag_seconds_bucket{le=\"")?;
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect()
}

/// The bucket bounds holding the 50th and 99th percentile of the lags counted between
/// `before` and `after` (two readings of [`lag_buckets`]).
fn lag_percentiles(before: &[(f64, u64)], after: &[(f64, u64)]) -> String {
    let counted: Vec<(f64, u64)> = after
        .iter()
        .map(|&(bound, n)| {
            let earlier = before.iter().find(|(b, _)| *b == bound).map_or(0, |x| x.1);
            (bound, n.saturating_sub(earlier))
        })
        .collect();
    let total = counted.last().map_or(0, |x| x.1);
    let bound = |p: f64| {
        let rank = (total as f64 * p).ceil() as u64;
        counted
            .iter()
            .find(|(_, n)| *n >= rank.max(1))
            .map_or(f64::NAN, |(b, _)| b * 1000.0)
    };
    format!(
        "p50 <= {} ms, p99 <= {} ms ({total} writes)",
        bound(0.5),
        bound(0.99)
    )
}

async fn received(c: &Client, p: &Proc) -> u64 {
    metric(c, p, "hearsay_rumors_total{event=\"received\"}")
        .await
        .unwrap_or(0)
}

/// Three nodes under a write load of HEARSAY_SCALE_CONNECTIONS connections for `secs_` seconds.
async fn loaded_trio(c: &Client, rows: &mut Vec<(String, String)>, secs_: u64) {
    let connections: usize = env("HEARSAY_SCALE_CONNECTIONS", 64);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let procs = trio(c, "w", &dirs).await;
    let idle = lags(
        c,
        &procs[0],
        &procs[2],
        "idle",
        Instant::now() + Duration::from_secs(5),
    )
    .await;
    let mut before = Vec::new();
    for p in &procs {
        before.push(received(c, p).await);
    }
    let lag_before = lag_buckets(c, &procs[2]).await;
    let until = Instant::now() + Duration::from_secs(secs_);
    let bases: Vec<String> = procs.iter().map(|p| p.base.clone()).collect();
    let mut writers = Vec::new();
    for w in 0..connections {
        let (c, bases) = (c.clone(), bases.clone());
        writers.push(tokio::spawn(async move {
            let mut done = [0u64; 3];
            let mut i = 0u64;
            while Instant::now() < until {
                let node = (w + i as usize) % 3;
                let url = format!("{}/v1/kv/load/{w}/{i}", bases[node]);
                i += 1;
                let r = c.put(url).body(vec![b'v'; 100]).send().await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    done[node] += 1;
                }
            }
            done
        }));
    }
    let loaded = lags(c, &procs[0], &procs[2], "load", until).await;
    let mut written = [0u64; 3];
    for w in writers {
        let done = w.await.unwrap_or_default();
        for k in 0..3 {
            written[k] += done[k];
        }
    }
    // Let the last rumors arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lag_after = lag_buckets(c, &procs[2]).await;
    let mut receipts = Vec::new();
    for (k, p) in procs.iter().enumerate() {
        let got = received(c, p).await - before[k];
        let elsewhere = written.iter().sum::<u64>() - written[k];
        receipts.push(got as f64 / elsewhere.max(1) as f64);
    }
    let total: u64 = written.iter().sum();
    row(
        rows,
        format!("3 nodes, {connections} connections writing for {secs_} s"),
        format!(
            "{total} writes ({:.0}/s); each node received each write made elsewhere {:.2} / {:.2} / {:.2} times",
            total as f64 / secs_ as f64,
            receipts[0],
            receipts[1],
            receipts[2]
        ),
    );
    row(rows, "replication lag n1 -> n3, idle", percentiles(&idle));
    row(
        rows,
        "replication lag n1 -> n3, under that load",
        percentiles(&loaded),
    );
    row(
        rows,
        "replication lag on n3 under that load, origin timestamp -> merge (every write)",
        lag_percentiles(&lag_before, &lag_after),
    );
}

/// Three nodes losing `loss` of their cluster traffic each way for `secs` seconds.
async fn lossy_trio(c: &Client, rows: &mut Vec<(String, String)>, loss: f64, secs_: u64) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = start("l1", dirs[0].path(), None, None);
    let seeds = first.gossip.clone();
    let mut procs = vec![
        first,
        start("l2", dirs[1].path(), None, Some(&seeds)),
        start("l3", dirs[2].path(), None, Some(&seeds)),
    ];
    let formed = until_all(
        procs.iter(),
        Instant::now(),
        Duration::from_secs(60),
        |p| async move { alive_count(c, p).await == 3 },
    )
    .await;
    assert!(formed.is_some(), "the lossy trio did not form");
    for p in &procs {
        let r = c
            .put(p.url("/v1/admin/faults"))
            .json(&json!({ "loss": loss }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let per_message = 1.0 - (1.0 - loss) * (1.0 - loss);
    let before = member_events(c, &procs).await;
    tokio::time::sleep(Duration::from_secs(secs_)).await;
    let after = member_events(c, &procs).await;
    let [raised, suspected, dead] = [0, 1, 2].map(|k| after[k] - before[k]);
    row(
        rows,
        format!(
            "3 nodes, loss {loss} in and out at each ({:.1}% of messages), {secs_} s",
            per_message * 100.0
        ),
        format!(
            "{raised} suspicions raised ({suspected} transitions to suspect), {dead} false deaths"
        ),
    );
    if let Some(mut p) = procs.pop() {
        p.kill9();
    }
    let killed = Instant::now();
    let seen = until_all_list(
        c,
        procs.iter(),
        "l3",
        "dead",
        killed,
        Duration::from_secs(60),
    )
    .await;
    row(
        rows,
        "under that loss, kill -9 of l3: both others list it dead",
        secs(seen),
    );
}
