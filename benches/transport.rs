//! The cluster transport under a connection flood, with two real node processes (the release
//! binary) on loopback sharing a cluster key:
//!
//! - resident memory (VmRSS) of both nodes before, during and after 64 connections per node
//!   that each declare an 8 MiB frame, send 1 MiB of it and then trickle (each reopened as
//!   soon as the node closes it);
//! - replication of a 150 KB value (PUT acknowledged on one node until the other serves it),
//!   both ways, without and with 64 idle connections per node (each declaring an 8 MiB frame
//!   and sending nothing more, reopened likewise);
//! - TCP connections opened to carry 1,000 rumors too large for a datagram.
//!
//!     cargo bench --bench transport              # HEARSAY_BENCH_VALUES=20 replications per phase
#![allow(clippy::disallowed_methods)] // a benchmark measures real time

#[path = "../tests/common/mod.rs"]
mod common;

use common::flood::Flood;
use common::{member_state, metric, path_str, Proc};
use reqwest::Client;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const ATTACKERS: usize = 64;
const FLOOD_FOR: Duration = Duration::from_secs(8);

#[tokio::main]
async fn main() {
    let values: usize = std::env::var("HEARSAY_BENCH_VALUES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    let node = |id: &str, seeds: Option<&str>| {
        let data = dir.path().join(id);
        let mut args = vec![
            "--node-id",
            id,
            "--data",
            path_str(&data),
            "--cluster-key-file",
            path_str(&key),
        ];
        args.extend(seeds.map(|s| ["--seeds", s]).into_iter().flatten());
        Proc::serve(&args)
    };
    let n1 = node("n1", None);
    let n2 = node("n2", Some(&n1.gossip));
    let nodes = [&n1, &n2];
    let c = Client::new();
    while !(alive(&c, &n1, "n2").await && alive(&c, &n2, "n1").await) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let targets = nodes.map(|n| n.gossip.parse::<SocketAddr>().unwrap());
    let value: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();

    // First, before any large value: 64 connections per node declaring 8 MiB, sending 1 MiB
    // of it, then trickling.
    let rss_before = rss(&nodes);
    let flood = Flood::start(&targets, ATTACKERS, 1 << 20, true);
    let started = Instant::now();
    let mut peak = rss_before;
    while started.elapsed() < FLOOD_FOR {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (p, now) in peak.iter_mut().zip(rss(&nodes)) {
            *p = p.max(now);
        }
    }
    let opened = flood.opened();
    drop(flood);
    // After: the nodes have closed every flood connection (or 10 s passed), plus a second.
    let settle = Instant::now();
    let pending = "hearsay_cluster_connections{direction=\"in\",role=\"unauthenticated\"}";
    while settle.elapsed() < Duration::from_secs(10) {
        let mut open = 0;
        for n in nodes {
            open += metric(&c, n, pending).await.unwrap_or(0);
        }
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss(&nodes);
    println!(
        "RSS MiB (n1/n2): before {}, peak during {:.0} s of {ATTACKERS} connections per node \
         declaring 8 MiB and sending 1 MiB ({opened} opened) {}, after {}",
        pair(rss_before),
        FLOOD_FOR.as_secs_f64(),
        pair(peak),
        pair(rss_after)
    );

    // 150 KB values, spread over as long as a flood lasts, without and with a flood of 64 idle
    // connections per node (longer than the handshake deadline, so the nodes close some).
    let quiet = replications(&c, &nodes, "quiet", &value, values).await;
    println!(
        "150 KB replication, no flood ({values} values): {}",
        summary(&quiet)
    );
    let flood = Flood::start(&targets, ATTACKERS, 0, false);
    let flooded = replications(&c, &nodes, "flooded", &value, values).await;
    let opened = flood.opened();
    drop(flood);
    println!(
        "150 KB replication, {ATTACKERS} idle connections per node ({values} values, \
         {opened} flood connections opened): {}",
        summary(&flooded)
    );

    // 1,000 rumors too large for a datagram, from n1 to its only peer.
    let opened_out = "hearsay_cluster_connections_opened_total{direction=\"out\",role=\"frames\"}";
    let accepted =
        "hearsay_cluster_connections_opened_total{direction=\"in\",role=\"unauthenticated\"}";
    let frames_out = "hearsay_cluster_messages_total{kind=\"frame\",direction=\"out\"}";
    let before = [
        metric(&c, &n1, opened_out).await.unwrap_or(0),
        metric(&c, &n2, accepted).await.unwrap_or(0),
        metric(&c, &n1, frames_out).await.unwrap_or(0),
    ];
    let started = Instant::now();
    let large = vec![b'r'; 2_000];
    for i in 0..1_000 {
        let r = c
            .put(n1.url(&format!("/v1/kv/rumor/{i}")))
            .body(large.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    while !serves(&c, &n2, "/v1/kv/rumor/999").await {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let after = [
        metric(&c, &n1, opened_out).await.unwrap_or(0),
        metric(&c, &n2, accepted).await.unwrap_or(0),
        metric(&c, &n1, frames_out).await.unwrap_or(0),
    ];
    let total_out = after[0];
    let [opened, accepted, frames] = [0, 1, 2].map(|i| after[i] - before[i]);
    println!(
        "1,000 rumors of 2 KB from n1 to n2 in {:.2} s ({frames} frames): n1 opened {opened} \
         connections for frames ({total_out} since it started); n2 accepted {accepted} \
         connections (anti-entropy sessions included)",
        took.as_secs_f64()
    );
}

/// `count` values written alternately on each node, each timed until the other serves it,
/// spread over [`FLOOD_FOR`].
async fn replications(
    c: &Client,
    nodes: &[&Proc; 2],
    name: &str,
    value: &[u8],
    count: usize,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let (from, to) = (nodes[i % 2], nodes[(i + 1) % 2]);
        let path = format!("/v1/kv/{name}/{i}");
        let r = c
            .put(from.url(&path))
            .body(value.to_vec())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let acked = Instant::now();
        while !serves(c, to, &path).await {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(acked.elapsed());
        tokio::time::sleep(FLOOD_FOR / count as u32).await;
    }
    times
}

async fn serves(c: &Client, node: &Proc, path: &str) -> bool {
    matches!(c.get(node.url(path)).send().await, Ok(r) if r.status() == 200)
}

async fn alive(c: &Client, observer: &Proc, id: &str) -> bool {
    member_state(c, observer, id)
        .await
        .is_some_and(|(state, _)| state == "alive")
}

fn rss(nodes: &[&Proc; 2]) -> [f64; 2] {
    nodes.map(|n| n.rss_mib().unwrap_or(0.0))
}

fn pair([a, b]: [f64; 2]) -> String {
    format!("{a:.0}/{b:.0}")
}

fn summary(times: &[Duration]) -> String {
    let mut sorted = times.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms, max {:.1} ms",
        ms(sorted[sorted.len() / 2]),
        ms(*sorted.last().unwrap())
    )
}
