//! A node whose clock is off, with real processes: three nodes on 127.0.0.1, one of them started
//! under libfaketime (the Debian package `faketime`, which `.ci/run` installs) with its clock five
//! minutes ahead. It must find out from its peers, say so in `/v1/health`, refuse client writes
//! with 503 `clock_skew`, and drag no other node's clock; its peers count its traffic as dropped.
//! Without libfaketime the test says it is skipped.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{eventually, get_json, metric, path_str, Proc};
use reqwest::Client;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const WITHIN: Duration = Duration::from_secs(20);

async fn health(c: &Client, node: &Proc) -> Option<Value> {
    get_json(c, node.url("/v1/health")).await
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Three nodes, n3 started five minutes ahead; `extra` goes to every node.
fn trio_with_n3_ahead(dir: &std::path::Path, extra: &[&str]) -> Option<[Proc; 3]> {
    if !std::path::Path::new(LIBFAKETIME).exists() {
        eprintln!("SKIPPED: {LIBFAKETIME} is missing (apt-get install faketime)");
        return None;
    }
    let args = |id: &str, seed: Option<&str>| {
        let data = path_str(&dir.join(id)).to_string();
        let mut args = vec!["--node-id".to_string(), id.into(), "--data".into(), data];
        if let Some(seed) = seed {
            args.extend(["--seeds".to_string(), seed.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let n1 = Proc::serve(&refs(&args("n1", None)));
    let n2 = Proc::serve(&refs(&args("n2", Some(&n1.gossip))));
    let ahead = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", "+300"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let n3 = Proc::serve_with_env(&refs(&args("n3", Some(&n1.gossip))), &ahead);
    Some([n1, n2, n3])
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_cluster_key_a_node_five_minutes_ahead_still_learns_its_clock_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "7".repeat(64)).unwrap();
    // Every message between n3 and the others falls outside the key's freshness window.
    let extra = ["--cluster-key-file", path_str(&key)];
    let Some([n1, _n2, n3]) = trio_with_n3_ahead(dir.path(), &extra) else {
        return;
    };
    let c = Client::new();
    eventually("n3 reports clock_skew", WITHIN, || async {
        let h = health(&c, &n3).await?;
        h["reasons"]
            .to_string()
            .contains("clock_skew")
            .then_some(())
    })
    .await;
    let refused = c
        .put(n3.url("/v1/kv/k"))
        .body("ahead")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(health(&c, &n1).await.unwrap()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_five_minutes_ahead_reports_clock_skew_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let Some([n1, n2, n3]) = trio_with_n3_ahead(dir.path(), &[]) else {
        return;
    };
    let c = Client::new();

    let report = eventually("n3 reports clock_skew", WITHIN, || async {
        let h = health(&c, &n3).await?;
        (h["status"] == "degraded" && h["reasons"].to_string().contains("clock_skew")).then_some(h)
    })
    .await;
    // Its peers' clocks read about five minutes behind its own.
    let offset = report["clock_offset_ms"].as_i64().unwrap();
    assert!((-310_000..-290_000).contains(&offset), "{report}");

    let refused = c
        .put(n3.url("/v1/kv/k"))
        .body("ahead")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "clock_skew", "{body}");

    for node in [&n1, &n2] {
        let h = health(&c, node).await.unwrap();
        assert_eq!(h["status"], "ok", "{h}");
    }
    let ack: Value = c
        .put(n1.url("/v1/kv/k"))
        .body("now")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ts: u64 = ack["timestamp"].as_str().unwrap().parse().unwrap();
    let wall_ms = ts >> 16;
    assert!(
        wall_ms <= now_ms() + 1_000,
        "n1's clock was dragged ahead: {ack}"
    );

    let dropped = eventually("n1 counts n3's skewed traffic", WITHIN, || async {
        let series = "hearsay_cluster_dropped_total{reason=\"clock_skew\"}";
        let count = metric(&c, &n1, series).await?;
        (count > 0).then_some(count)
    })
    .await;
    assert!(dropped > 0);
}
