//! Members that will never return, with real processes: an operator forces a dead member out
//! with `DELETE /v1/cluster/members/{id}`, and every node then lists it as left; a member that is
//! alive cannot be forced out, and unknown ids are a 404; a member that left and is started again
//! without seeds rejoins the members it knew.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{eventually, member_state, path_str, Proc};
use reqwest::Client;
use serde_json::Value;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(30);

/// The state `observer` lists for member `id`.
async fn state_of(c: &Client, observer: &Proc, id: &str) -> Option<String> {
    member_state(c, observer, id).await.map(|(state, _)| state)
}

/// n1, then n2 and n3 joining through it, each on its data directory `data(id)`.
fn three_nodes(data: &dyn Fn(&str) -> String) -> [Proc; 3] {
    let n1 = Proc::serve(&["--node-id", "n1", "--data", &data("n1")]);
    let joining =
        |id: &str| Proc::serve(&["--node-id", id, "--data", &data(id), "--seeds", &n1.gossip]);
    let (n2, n3) = (joining("n2"), joining("n3"));
    [n1, n2, n3]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_forces_a_dead_member_out_and_every_node_lists_it_as_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = |id: &str| path_str(&dir.path().join(id)).to_string();
    let [n1, n2, mut n3] = three_nodes(&data);
    let c = Client::new();
    for observer in [&n1, &n2] {
        eventually("n3 alive", WITHIN, || async {
            (state_of(&c, observer, "n3").await? == "alive").then_some(())
        })
        .await;
    }
    let alive = c
        .delete(n1.url("/v1/cluster/members/n3"))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), 409);
    let body: Value = alive.json().await.unwrap();
    assert_eq!(body["code"], "member_alive");
    let unknown = c
        .delete(n1.url("/v1/cluster/members/n9"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let itself = c
        .delete(n1.url("/v1/cluster/members/n1"))
        .send()
        .await
        .unwrap();
    assert_eq!(itself.status(), 409);
    let body: Value = itself.json().await.unwrap();
    assert_eq!(body["code"], "itself");

    n3.kill9();
    eventually("n3 dead on n1", WITHIN, || async {
        (state_of(&c, &n1, "n3").await? == "dead").then_some(())
    })
    .await;
    let removed = c
        .delete(n1.url("/v1/cluster/members/n3"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    let body: Value = removed.json().await.unwrap();
    assert_eq!(body["state"], "left", "{body}");
    for observer in [&n1, &n2] {
        eventually("n3 left everywhere", WITHIN, || async {
            (state_of(&c, observer, "n3").await? == "left").then_some(())
        })
        .await;
    }
}

/// The README's sequence: a member leaves with `POST /v1/cluster/leave`, then is started again on
/// its data directory with the README's command, which gives no seeds. It rejoins the members it
/// knew before leaving (remembered in its data directory), and its writes reach them.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_left_rejoins_the_members_it_knew_when_started_again_without_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let data = |id: &str| path_str(&dir.path().join(id)).to_string();
    let [n1, n2, mut n3] = three_nodes(&data);
    let c = Client::new();
    for (observer, id) in [(&n1, "n3"), (&n2, "n3"), (&n3, "n2")] {
        eventually("every member alive", WITHIN, || async {
            (state_of(&c, observer, id).await? == "alive").then_some(())
        })
        .await;
    }
    let left = c.post(n3.url("/v1/cluster/leave")).send().await.unwrap();
    assert_eq!(left.status(), 200);
    n3.wait_exit(WITHIN).expect("n3 stops after leaving");
    for observer in [&n1, &n2] {
        eventually("n3 left", WITHIN, || async {
            (state_of(&c, observer, "n3").await? == "left").then_some(())
        })
        .await;
    }
    // Started again as the README says: same id, data and cluster address, no seeds.
    let gossip = n3.gossip.clone();
    drop(n3);
    let n3 = Proc::serve(&[
        "--node-id",
        "n3",
        "--data",
        &data("n3"),
        "--gossip",
        &gossip,
    ]);
    for (observer, id) in [(&n1, "n3"), (&n2, "n3"), (&n3, "n1"), (&n3, "n2")] {
        eventually("n3 back among the members", WITHIN, || async {
            (state_of(&c, observer, id).await? == "alive").then_some(())
        })
        .await;
    }
    let put = c
        .put(n3.url("/v1/kv/after-rejoin"))
        .body("here")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    for observer in [&n1, &n2] {
        eventually("n3's write everywhere", WITHIN, || async {
            let r = c
                .get(observer.url("/v1/kv/after-rejoin"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }
}
