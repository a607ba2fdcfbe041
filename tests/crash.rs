//! Crash safety of the real binary: hundreds of concurrent writes are acknowledged, the process is
//! killed with SIGKILL while more are in flight, and a restart on the same directory must return
//! every acknowledged write (default `fsync` durability).

mod common;

use common::{path_str, Proc};
use reqwest::Client;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

const WRITERS: usize = 32;
const ACKED_BEFORE_KILL: usize = 400;

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let mut node = Proc::serve(&["--node-id", "n1", "--data", path_str(&data)]);
    let client = Client::new();
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let enough = Arc::new(Notify::new());
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, acked, enough, base) = (
            client.clone(),
            acked.clone(),
            enough.clone(),
            node.base.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                // Half the writers overwrite a shared key, so the last acknowledged value matters.
                let key = if w % 2 == 0 {
                    format!("w{w}/k{i}")
                } else {
                    format!("shared{w}")
                };
                let value = format!("value-{w}-{i}");
                let sent = client
                    .put(format!("{base}/v1/kv/{key}"))
                    .body(value.clone())
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status() == 200 => {
                        let mut acked = acked.lock().unwrap();
                        acked.insert(key, value);
                        if acked.len() >= ACKED_BEFORE_KILL {
                            enough.notify_one();
                        }
                    }
                    // The node is gone: stop writing.
                    _ => return,
                }
            }
        }));
    }
    enough.notified().await;
    node.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    let node = Proc::serve(&["--node-id", "n1", "--data", path_str(&data)]);
    let mut lost = Vec::new();
    for (key, value) in &acked {
        let resp = client
            .get(node.url(&format!("/v1/kv/{key}")))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        // A writer has at most one write in flight at the kill; it may or may not have landed.
        let in_flight = next_value(value);
        if status != 200 || (&body != value && body != in_flight) {
            lost.push(format!("{key}: expected {value:?}, got {status} {body:?}"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

/// The value a writer sends after `value` (`value-W-I` → `value-W-I+1`).
fn next_value(value: &str) -> String {
    let (prefix, i) = value.rsplit_once('-').unwrap();
    format!("{prefix}-{}", i.parse::<u64>().unwrap() + 1)
}
