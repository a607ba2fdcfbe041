//! The cluster transport under hostile and heavy input, against real processes on 127.0.0.1:
//! connections that declare huge frames and never send them cost no memory and cannot starve
//! real peers; stalled connections are closed after a short deadline; truncated frames are
//! counted; large rumors to one peer share one pooled connection. Every wait is a poll with a
//! deadline.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::flood::Flood;
use common::{eventually, member_state, metric, path_str, Proc};
use reqwest::Client;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const CONVERGE: Duration = Duration::from_secs(30);

async fn dropped(c: &Client, node: &Proc, reason: &str) -> u64 {
    let series = format!("hearsay_cluster_dropped_total{{reason=\"{reason}\"}}");
    metric(c, node, &series).await.unwrap_or(0)
}

/// Resident memory of a node in MiB.
fn rss_mib(node: &Proc) -> f64 {
    node.rss_mib().expect("VmRSS in /proc/<pid>/status")
}

/// Waits until `observer` lists `id` as alive.
async fn alive(c: &Client, observer: &Proc, id: &str) {
    eventually(&format!("{id} alive"), CONVERGE, || async {
        (member_state(c, observer, id).await?.0 == "alive").then_some(())
    })
    .await;
}

/// Two nodes sharing a cluster key, `n2` joined through `n1`, both seeing each other alive.
async fn keyed_pair(dir: &tempfile::TempDir) -> (Proc, Proc) {
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    let n1 = Proc::serve(&[
        "--node-id",
        "n1",
        "--data",
        path_str(&dir.path().join("n1")),
        "--cluster-key-file",
        path_str(&key),
    ]);
    let n2 = Proc::serve(&[
        "--node-id",
        "n2",
        "--data",
        path_str(&dir.path().join("n2")),
        "--cluster-key-file",
        path_str(&key),
        "--seeds",
        &n1.gossip,
    ]);
    let c = Client::new();
    alive(&c, &n1, "n2").await;
    alive(&c, &n2, "n1").await;
    (n1, n2)
}

/// Writes `value` under `key` on `from` and returns how long until `to` serves it.
async fn replicate(c: &Client, from: &Proc, to: &Proc, key: &str, value: &[u8]) -> Duration {
    let r = c
        .put(from.url(&format!("/v1/kv/{key}")))
        .body(value.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let acked = Instant::now();
    loop {
        if let Ok(r) = c.get(to.url(&format!("/v1/kv/{key}"))).send().await {
            if r.status() == 200 && r.bytes().await.ok().as_deref() == Some(value) {
                return acked.elapsed();
            }
        }
        assert!(
            acked.elapsed() < CONVERGE,
            "{key} never reached {}",
            to.base
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_declaring_huge_frames_cost_no_memory_and_do_not_starve_peers() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = keyed_pair(&dir).await;
    let c = Client::new();
    let value: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    // No large value yet: the first one under attack needs a new connection each way.
    let before = [rss_mib(&n1), rss_mib(&n2)];

    let targets = [&n1, &n2].map(|n| n.gossip.parse::<SocketAddr>().unwrap());
    // Without the key: each connection declares an 8 MiB frame, sends 1 KiB of it, then
    // trickles.
    let flood = Flood::start(&targets, 64, 1024, true);
    // Let the attack take hold: every attack connection opened once, and each node holding
    // a dozen of them at least.
    eventually("the attack is under way", CONVERGE, || async {
        let series = "hearsay_cluster_connections{direction=\"in\",role=\"unauthenticated\"}";
        let held = [
            metric(&c, &n1, series).await?,
            metric(&c, &n2, series).await?,
        ];
        (flood.opened() >= 128 && held.iter().all(|&n| n >= 12)).then_some(())
    })
    .await;
    let mut worst = Duration::ZERO;
    for i in 0..3 {
        worst = worst.max(replicate(&c, &n2, &n1, &format!("big/a{i}"), &value).await);
        worst = worst.max(replicate(&c, &n1, &n2, &format!("big/b{i}"), &value).await);
    }
    let during = [rss_mib(&n1), rss_mib(&n2)];
    let opened = flood.opened();
    drop(flood);
    eprintln!(
        "RSS MiB before {before:?}, under attack {during:?} after {opened} attack connections; \
         slowest replication {worst:?}"
    );
    assert!(
        worst < Duration::from_secs(5),
        "a 150 KB value took {worst:?} to replicate under attack"
    );
    for (b, d) in before.iter().zip(&during) {
        assert!(
            d - b < 64.0,
            "RSS grew from {b:.0} MiB to {d:.0} MiB under the attack"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_connections_are_closed_after_a_short_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::serve(&["--data", path_str(dir.path())]);
    let c = Client::new();
    let addr: SocketAddr = node.gossip.parse().unwrap();
    let stalls: [&[u8]; 3] = [
        &[],                          // connects and says nothing
        &[0, 0],                      // half a length prefix
        &[0, 0, 1, 0, 1, 2, 3, 4, 5], // a 256-byte frame, 5 bytes of it
    ];
    let started = Instant::now();
    let mut waits = Vec::new();
    for stall in stalls {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, stall)
            .await
            .unwrap();
        waits.push(tokio::spawn(async move {
            let mut buf = [0u8; 16];
            // The node never writes on an inbound connection before a request: the first read
            // ends when the node closes it.
            let closed = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
            assert!(
                matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
                "a stalled connection is still open after 20 s"
            );
        }));
    }
    for w in waits {
        w.await.unwrap();
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "closed after {took:?}");
    eventually("stalled connections are counted", CONVERGE, || async {
        (dropped(&c, &node, "timeout").await >= 3).then_some(())
    })
    .await;
    let r = c.put(node.url("/v1/kv/k")).body("v").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_frames_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::serve(&["--data", path_str(dir.path())]);
    let c = Client::new();
    let addr: SocketAddr = node.gossip.parse().unwrap();
    let cut: [&[u8]; 3] = [
        &[0, 0],               // a length prefix cut short
        &[0, 0, 0, 100, 1, 2], // 2 bytes of a 100-byte frame
        &[0, 0, 0, 3, 1, 2],   // 2 bytes of a 3-byte frame
    ];
    for bytes in cut {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(bytes).unwrap();
        // Dropping the stream closes it: the node sees the end of the stream mid-frame.
    }
    eventually("truncated frames are counted", CONVERGE, || async {
        (dropped(&c, &node, "truncated").await >= 3).then_some(())
    })
    .await;
    let r = c.put(node.url("/v1/kv/k")).body("v").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_rumors_to_one_peer_share_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Proc::serve(&[
        "--node-id",
        "n1",
        "--data",
        path_str(&dir.path().join("n1")),
    ]);
    let n2 = Proc::serve(&[
        "--node-id",
        "n2",
        "--data",
        path_str(&dir.path().join("n2")),
        "--seeds",
        &n1.gossip,
    ]);
    let c = Client::new();
    alive(&c, &n1, "n2").await;
    alive(&c, &n2, "n1").await;
    // Each value is too large for a datagram, so each write's rumor travels as a frame.
    let writes = 40;
    for i in 0..writes {
        let value = format!("{i:04}").repeat(500);
        replicate(&c, &n1, &n2, &format!("large/{i}"), value.as_bytes()).await;
    }
    let opened = metric(
        &c,
        &n1,
        "hearsay_cluster_connections_opened_total{direction=\"out\",role=\"frames\"}",
    )
    .await
    .unwrap_or(0);
    assert!(
        (1..=2).contains(&opened),
        "{writes} large rumors to one peer opened {opened} connections"
    );
}
