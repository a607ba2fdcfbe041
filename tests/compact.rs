//! `hearsay compact` on the real binary: refused while the node runs; once it is stopped, the
//! database shrinks after most keys were deleted and their tombstones collected, and the restarted
//! node holds exactly what it held before.

mod common;

use common::{eventually, get_json, metric, path_str, run_to_exit, Proc};
use reqwest::Client;
use std::time::Duration;

const KEYS: usize = 3_000;
const KEPT_EVERY: usize = 10;

async fn digest(c: &Client, node: &Proc) -> (String, u64) {
    let d = get_json(c, node.url("/v1/cluster/digest"))
        .await
        .expect("digest");
    (
        d["root"].as_str().expect("root").to_string(),
        d["keys"].as_u64().expect("keys"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_gives_back_the_space_of_deleted_keys_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let args = [
        "--node-id",
        "n1",
        "--data",
        path_str(&data),
        "--tombstone-min-age-ms",
        "0",
    ];
    let mut node = Proc::serve(&args);
    let c = Client::new();
    let value = "v".repeat(2_000);
    for i in 0..KEYS {
        let resp = c
            .put(node.url(&format!("/v1/kv/k{i:05}")))
            .body(value.clone())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT k{i}: {}", resp.status());
    }
    for i in (0..KEYS).filter(|i| i % KEPT_EVERY != 0) {
        let resp = c
            .delete(node.url(&format!("/v1/kv/k{i:05}")))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "DELETE k{i}: {}", resp.status());
    }
    eventually(
        "every tombstone collected",
        Duration::from_secs(30),
        || async { (metric(&c, &node, "hearsay_tombstones_held").await == Some(0)).then_some(()) },
    )
    .await;
    let before = digest(&c, &node).await;
    assert_eq!(before.1, (KEYS / KEPT_EVERY) as u64);

    let (code, stderr) = run_to_exit(
        &["compact", "--data", path_str(&data)],
        Duration::from_secs(60),
    );
    assert_ne!(code, Some(0), "compacted the database of a running node");
    assert!(stderr.contains("in use"), "{stderr}");

    node.signal(libc::SIGTERM);
    node.wait_exit(Duration::from_secs(30))
        .expect("the node stops after SIGTERM");
    drop(node);
    let db = data.join("db");
    let bytes_before = hearsay::store::dir_bytes(&db).unwrap();
    let (code, stderr) = run_to_exit(
        &["compact", "--data", path_str(&data)],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let bytes_after = hearsay::store::dir_bytes(&db).unwrap();
    assert!(
        bytes_after * 2 < bytes_before,
        "{bytes_before} bytes before the compaction, {bytes_after} after"
    );

    let node = Proc::serve(&args);
    assert_eq!(digest(&c, &node).await, before);
    let kept = c.get(node.url("/v1/kv/k00010")).send().await.unwrap();
    assert_eq!(kept.status(), 200);
    assert_eq!(kept.text().await.unwrap(), value);
    let deleted = c.get(node.url("/v1/kv/k00011")).send().await.unwrap();
    assert_eq!(deleted.status(), 404);
}
