//! Injected loss and delay (`PUT /v1/admin/faults` with `loss` and `delay_ms`) with real
//! processes on 127.0.0.1: a delay holds every outgoing cluster message back, total loss on one
//! node cuts it off in both directions until it is lifted, and partial loss is reported back.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{eventually, member_state, Proc};
use reqwest::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(30);

fn pair() -> (Proc, Proc) {
    let n1 = Proc::serve(&[
        "--node-id",
        "n1",
        "--fault-injection",
        "--durability",
        "none",
    ]);
    let n2 = Proc::serve(&[
        "--node-id",
        "n2",
        "--fault-injection",
        "--durability",
        "none",
        "--seeds",
        &n1.gossip,
    ]);
    (n1, n2)
}

async fn inject(c: &Client, node: &Proc, faults: Value) {
    let r = c
        .put(node.url("/v1/admin/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn sees(c: &Client, observer: &Proc, id: &str, state: &str) -> Option<()> {
    let (seen, _) = member_state(c, observer, id).await?;
    (seen == state).then_some(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_holds_back_what_a_node_sends_to_the_cluster() {
    let c = Client::new();
    let (n1, n2) = pair();
    eventually("n2 sees n1 alive", WITHIN, || sees(&c, &n2, "n1", "alive")).await;
    inject(&c, &n1, json!({"delay_ms": 400})).await;
    let r = c.put(n1.url("/v1/kv/slow")).body("v").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let written = Instant::now();
    eventually("the write reaches n2", WITHIN, || async {
        let r = c.get(n2.url("/v1/kv/slow")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let took = written.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "the write reached n2 {took:?} after it was acknowledged, inside the injected delay"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn total_loss_on_one_node_cuts_it_off_both_ways_until_it_is_lifted() {
    let c = Client::new();
    let (n1, n2) = pair();
    eventually("n1 sees n2 alive", WITHIN, || sees(&c, &n1, "n2", "alive")).await;
    // Injected on n2 alone: what it sends and what it receives are lost.
    inject(&c, &n2, json!({"loss": 1.0})).await;
    eventually("n1 declares n2 dead", WITHIN, || {
        sees(&c, &n1, "n2", "dead")
    })
    .await;
    eventually("n2 declares n1 dead", WITHIN, || {
        sees(&c, &n2, "n1", "dead")
    })
    .await;
    let r = c.get(n2.url("/v1/admin/faults")).send().await.unwrap();
    let faults: Value = r.json().await.unwrap();
    assert_eq!(faults, json!({"drop": [], "loss": 1.0, "delay_ms": 0}));
    inject(&c, &n2, json!({"loss": 0.0})).await;
    eventually("n1 sees n2 alive again", WITHIN, || {
        sees(&c, &n1, "n2", "alive")
    })
    .await;
    eventually("n2 sees n1 alive again", WITHIN, || {
        sees(&c, &n2, "n1", "alive")
    })
    .await;
}
