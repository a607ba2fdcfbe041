//! A node whose clock is off, with real processes: three nodes on 127.0.0.1, one of them started
//! under libfaketime (the Debian package `faketime`, which `.ci/run` installs) with its clock five
//! minutes ahead. It must find out from its peers, say so in `/v1/health`, refuse client writes
//! with 503 `clock_skew`, and drag no other node's clock; its peers count its traffic as dropped.
//! Without libfaketime the test says it is skipped.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{eventually, path_str, Proc};
use reqwest::Client;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const WITHIN: Duration = Duration::from_secs(20);

async fn health(c: &Client, node: &Proc) -> Option<Value> {
    c.get(node.url("/v1/health"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_five_minutes_ahead_reports_clock_skew_and_refuses_writes() {
    if !std::path::Path::new(LIBFAKETIME).exists() {
        eprintln!("SKIPPED: {LIBFAKETIME} is missing (apt-get install faketime)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = |id: &str| path_str(&dir.path().join(id)).to_string();
    let n1 = Proc::serve(&["--node-id", "n1", "--data", &data("n1")]);
    let n2 = Proc::serve(&[
        "--node-id",
        "n2",
        "--data",
        &data("n2"),
        "--seeds",
        &n1.gossip,
    ]);
    let ahead = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", "+300"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let n3 = Proc::serve_with_env(
        &[
            "--node-id",
            "n3",
            "--data",
            &data("n3"),
            "--seeds",
            &n1.gossip,
        ],
        &ahead,
    );
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
        let text = c
            .get(n1.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with("hearsay_cluster_dropped_total{reason=\"clock_skew\"}"))?
            .to_string();
        let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
        (count > 0.0).then_some(count)
    })
    .await;
    assert!(dropped > 0.0);
}
