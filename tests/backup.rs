//! Backup and restore with real processes: `hearsay backup` streams a live node's state while
//! both nodes of its cluster take writes, `hearsay restore` makes a new data directory of it
//! (refusing a damaged or cut-short file and a directory in use), and a node started on that
//! directory catches up by anti-entropy until every digest is equal.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{converged, eventually, get_json, path_str, Proc};
use reqwest::Client;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

fn hearsay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(args)
        .output()
        .expect("run hearsay")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes on `nodes` in turn until `stop`; returns how many were acknowledged.
fn write_load(bases: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let c = Client::new();
        let done = AtomicU64::new(0);
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let base = &bases[(i % bases.len() as u64) as usize];
            let url = match i % 3 {
                0 => format!("{base}/v1/kv/load/{i}"),
                1 => format!("{base}/v1/sets/load/e{i}"),
                _ => format!("{base}/v1/kv/load/{}", i / 2),
            };
            let resp = c.put(url).body(format!("v{i}")).send().await;
            if resp.is_ok_and(|r| r.status().is_success()) {
                done.fetch_add(1, Ordering::Relaxed);
            }
            i += 1;
        }
        done.load(Ordering::Relaxed)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_under_write_load_restores_into_a_replica_that_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Proc::serve(&["--node-id", "n1", "--durability", "batch"]);
    let n2 = Proc::serve(&[
        "--node-id",
        "n2",
        "--seeds",
        &n1.gossip,
        "--durability",
        "batch",
    ]);
    let c = Client::new();
    // Some of every kind, and a tombstone.
    for i in 0..200 {
        let put = c.put(n1.url(&format!("/v1/kv/k{i}"))).body(format!("v{i}"));
        assert!(put.send().await.unwrap().status().is_success());
    }
    c.delete(n1.url("/v1/kv/k7")).send().await.unwrap();
    c.post(n2.url("/v1/counters/hits"))
        .body(r#"{"add": 5}"#)
        .send()
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(vec![n1.base.clone(), n2.base.clone()], stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await; // the load is under way
    let file = dir.path().join("n1.backup");
    let (addr, out) = (n1.base.clone(), path_str(&file).to_string());
    let taken =
        tokio::task::spawn_blocking(move || hearsay(&["backup", "--addr", &addr, "--out", &out]))
            .await
            .unwrap();
    stop.store(true, Ordering::Relaxed);
    let writes = load.await.unwrap();
    assert!(taken.status.success(), "{taken:?}");
    let said = text(&taken.stdout);
    assert!(
        said.starts_with("backed up ") && said.contains(" records of n1 "),
        "{said}"
    );
    assert!(writes > 0, "the backup ran under load");
    assert!(!Path::new(&format!("{}.partial", file.display())).exists());

    // A damaged or cut-short backup is refused, and no directory is left behind.
    let bytes = std::fs::read(&file).unwrap();
    let bad = dir.path().join("bad.backup");
    let target = dir.path().join("refused");
    for (what, altered) in [
        ("damaged", {
            let mut b = bytes.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
            b
        }),
        ("cut short", bytes[..bytes.len() - 10].to_vec()),
    ] {
        std::fs::write(&bad, altered).unwrap();
        let refused = hearsay(&["restore", path_str(&bad), "--data", path_str(&target)]);
        assert_eq!(refused.status.code(), Some(1), "{what}: {refused:?}");
        assert!(
            text(&refused.stderr).contains("cannot read backup"),
            "{what}: {refused:?}"
        );
        assert!(!target.exists(), "{what}: a directory was left behind");
    }

    // Restored as a new member n3.
    let n3_data = dir.path().join("n3");
    let restored = hearsay(&[
        "restore",
        path_str(&file),
        "--data",
        path_str(&n3_data),
        "--node-id",
        "n3",
    ]);
    assert!(restored.status.success(), "{restored:?}");
    let said = text(&restored.stdout);
    assert!(
        said.starts_with("restored ") && said.contains(" as node n3 "),
        "{said}"
    );
    let again = hearsay(&["restore", path_str(&file), "--data", path_str(&n3_data)]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(text(&again.stderr).contains("not empty"), "{again:?}");

    // Its digest at start is the backup's; it then catches up with writes made since.
    let n3 = Proc::serve(&[
        "--node-id",
        "n3",
        "--data",
        path_str(&n3_data),
        "--seeds",
        &n1.gossip,
    ]);
    for i in 0..20 {
        let put = c.put(n2.url(&format!("/v1/kv/after/{i}"))).body("x");
        assert!(put.send().await.unwrap().status().is_success());
    }
    converged(&c, &[&n1, &n2, &n3], CONVERGE).await;
    let hits = get_json(&c, n3.url("/v1/counters/hits")).await.unwrap();
    assert_eq!(hits["value"], 5);
    let gone = c.get(n3.url("/v1/kv/k7")).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    // A write on the restored node reaches the others.
    let put = c.put(n3.url("/v1/kv/from-n3")).body("restored");
    assert!(put.send().await.unwrap().status().is_success());
    eventually("n3's write reaches n1", CONVERGE, || async {
        let got = c.get(n1.url("/v1/kv/from-n3")).send().await.ok()?;
        (got.status() == 200).then_some(())
    })
    .await;
}
