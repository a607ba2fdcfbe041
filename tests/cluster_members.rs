//! Members that will never return, with real processes: an operator forces a dead member out
//! with `DELETE /v1/cluster/members/{id}`, and every node then lists it as left; a member that is
//! alive cannot be forced out, and unknown ids are a 404.
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

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_forces_a_dead_member_out_and_every_node_lists_it_as_left() {
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
    let mut n3 = Proc::serve(&[
        "--node-id",
        "n3",
        "--data",
        &data("n3"),
        "--seeds",
        &n1.gossip,
    ]);
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
