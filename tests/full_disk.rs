//! A full disk, with real processes on a small tmpfs (root only: elsewhere each test says it is
//! skipped). Below its free-space reserve a node refuses writes with 507 `insufficient_storage`
//! and says `disk_full` in its health, every acknowledged write stays readable, and it takes
//! writes again by itself once space is freed. A node started on a nearly full disk starts, serves
//! reads, and leaves no half-written log behind.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{eventually, get_json, path_str, Proc};
use hearsay::testing::SmallDisk;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(20);
const MIB: u64 = 1 << 20;

async fn health(c: &Client, node: &Proc) -> Option<Value> {
    get_json(c, node.url("/v1/health")).await
}

async fn put(c: &Client, node: &Proc, key: &str, value: &str) -> StatusCode {
    c.put(node.url(&format!("/v1/kv/{key}")))
        .body(value.to_string())
        .send()
        .await
        .unwrap()
        .status()
}

async fn assert_readable(c: &Client, node: &Proc, keys: &[String]) {
    for key in keys {
        let resp = c
            .get(node.url(&format!("/v1/kv/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{key}");
        assert_eq!(resp.text().await.unwrap(), format!("value of {key}"));
    }
}

fn serve(dir: &std::path::Path) -> Proc {
    Proc::serve(&[
        "--node-id",
        "n1",
        "--data",
        path_str(dir),
        "--disk-reserve-mb",
        "32",
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_keeps_what_was_acknowledged_and_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount(256 * MIB) else {
        return;
    };
    let node = serve(&disk.path().join("n1"));
    let c = Client::new();
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert_eq!(put(&c, &node, key, &format!("value of {key}")).await, 200);
    }

    let filler = disk.fill(8 * MIB);
    let refused = eventually("writes refused with 507", WITHIN, || async {
        let resp = c.put(node.url("/v1/kv/more")).body("x").send().await.ok()?;
        (resp.status() == 507).then_some(resp)
    })
    .await;
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "insufficient_storage", "{body}");
    let h = health(&c, &node).await.unwrap();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["reasons"].to_string().contains("disk_full"), "{h}");
    assert_readable(&c, &node, &keys).await;

    std::fs::remove_file(filler).unwrap();
    eventually("writes taken again", WITHIN, || async {
        (put(&c, &node, "after", "value of after").await == 200).then_some(())
    })
    .await;
    assert_eq!(health(&c, &node).await.unwrap()["status"], "ok");
    assert_readable(&c, &node, &keys).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_started_on_a_nearly_full_disk_serves_reads_leaves_no_half_written_log_and_recovers()
{
    let Some(disk) = SmallDisk::mount(256 * MIB) else {
        return;
    };
    let c = Client::new();
    let old = disk.path().join("old");
    let keys = vec!["k".to_string()];
    {
        let mut node = serve(&old);
        assert_eq!(put(&c, &node, "k", "value of k").await, 200);
        node.signal(libc::SIGTERM);
        assert!(node.wait_exit(WITHIN).is_some());
    }
    let filler = disk.fill(16 * MIB);
    // A new data directory on a nearly full disk: its logs cannot be preallocated.
    let fresh = serve(&disk.path().join("fresh"));
    assert_eq!(put(&c, &fresh, "x", "y").await, 507);
    assert_eq!(health(&c, &fresh).await.unwrap()["status"], "degraded");
    let free = free_bytes(disk.path());
    assert!(
        free > 8 * MIB,
        "starting took the disk's last space: {free} bytes left"
    );
    // The old directory restarts on the nearly full disk and serves what it holds.
    let node = serve(&old);
    assert_readable(&c, &node, &keys).await;
    assert_eq!(put(&c, &node, "x", "y").await, 507);
    assert_eq!(put(&c, &fresh, "x", "y").await, 507);
    std::fs::remove_file(filler).unwrap();
    // Both take writes again once there is room, without a restart.
    for node in [&node, &fresh] {
        eventually("writes taken again", WITHIN, || async {
            (put(&c, node, "x", "value of x").await == 200).then_some(())
        })
        .await;
    }
    assert_readable(&c, &fresh, &["x".to_string()]).await;
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}
