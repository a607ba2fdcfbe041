//! The partition demo, end to end: three nodes in this process (real sockets on 127.0.0.1),
//! a partition {n1} | {n2, n3} by fault injection, conflicting writes and set edits on both
//! sides, then the heal. Prints who won and how long convergence took.
//!
//!     cargo run --release --example partition_heal
#![allow(clippy::disallowed_methods)] // an example measures real time

use hearsay::server;
use reqwest::Client;
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let urls = server::spawn_cluster(3, dir.path())
        .await
        .expect("start the cluster");
    let c = Client::new();
    let (n1, n2, n3) = (&urls[0], &urls[1], &urls[2]);
    println!("three nodes: n1 {n1}, n2 {n2}, n3 {n3}");
    wait_all_alive(&c, &urls, "all three see each other alive").await;
    post(
        &c,
        &format!("{n1}/v1/sets/team"),
        r#"{"add": ["alice", "bob"]}"#,
    )
    .await;
    wait_converged(&c, &urls).await;

    println!("\npartition: {{n1}} | {{n2, n3}}");
    put(
        &c,
        &format!("{n1}/v1/admin/faults"),
        r#"{"drop": ["n2", "n3"]}"#,
    )
    .await;
    put(&c, &format!("{n2}/v1/admin/faults"), r#"{"drop": ["n1"]}"#).await;
    put(&c, &format!("{n3}/v1/admin/faults"), r#"{"drop": ["n1"]}"#).await;
    wait_until("n1 marks n2 and n3 unreachable", || async {
        alive_count(&c, n1).await == 1
    })
    .await;

    println!("  n1: color = red;   team: remove bob, add carol");
    put(&c, &format!("{n1}/v1/kv/color"), "red").await;
    post(
        &c,
        &format!("{n1}/v1/sets/team"),
        r#"{"remove": ["bob"], "add": ["carol"]}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    println!("  n2: color = blue;  team: remove alice, re-add bob");
    put(&c, &format!("{n2}/v1/kv/color"), "blue").await;
    post(
        &c,
        &format!("{n2}/v1/sets/team"),
        r#"{"remove": ["alice"], "add": ["bob"]}"#,
    )
    .await;
    for u in &urls {
        println!(
            "  during: {u} color={:?}",
            text(&c, &format!("{u}/v1/kv/color")).await
        );
    }

    println!("\nheal");
    let healed = Instant::now();
    for u in &urls {
        c.delete(format!("{u}/v1/admin/faults"))
            .send()
            .await
            .expect("heal");
    }
    wait_converged(&c, &urls).await;
    let converged = healed.elapsed();
    wait_all_alive(&c, &urls, "membership re-formed").await;
    let reformed = healed.elapsed();
    for u in &urls {
        let team: Value = c
            .get(format!("{u}/v1/sets/team"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        println!(
            "  after: {u} color={:?} team={}",
            text(&c, &format!("{u}/v1/kv/color")).await,
            team["elements"]
        );
    }
    println!("\ncolor: the later write (n2's blue) wins by HLC timestamp everywhere.");
    println!("team: bob survives n1's remove because n2 re-added him concurrently (add wins);");
    println!("      alice is gone (n2 removed the add it had seen); carol was added on n1.");
    println!(
        "digests equal {} ms after the heal; all members alive after {} ms",
        converged.as_millis(),
        reformed.as_millis()
    );
}

async fn put(c: &Client, url: &str, body: &str) {
    c.put(url).body(body.to_string()).send().await.expect("PUT");
}

async fn post(c: &Client, url: &str, body: &str) {
    c.post(url)
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
}

async fn text(c: &Client, url: &str) -> Option<String> {
    let r = c.get(url).send().await.ok()?;
    if r.status() == 200 {
        r.text().await.ok()
    } else {
        None
    }
}

async fn alive_count(c: &Client, url: &str) -> usize {
    let Ok(r) = c.get(format!("{url}/v1/cluster/members")).send().await else {
        return 0;
    };
    let Ok(v) = r.json::<Value>().await else {
        return 0;
    };
    v["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count())
}

/// Waits until every node sees all of them alive.
async fn wait_all_alive(c: &Client, urls: &[String], what: &str) {
    wait_until(what, || async {
        for u in urls {
            if alive_count(c, u).await != urls.len() {
                return false;
            }
        }
        true
    })
    .await;
}

async fn wait_converged(c: &Client, urls: &[String]) {
    wait_until("equal digests", || async {
        let mut roots = Vec::new();
        for u in urls {
            let Ok(r) = c.get(format!("{u}/v1/cluster/digest")).send().await else {
                return false;
            };
            let Ok(v) = r.json::<Value>().await else {
                return false;
            };
            roots.push(v["root"].clone());
        }
        roots.windows(2).all(|w| w[0] == w[1])
    })
    .await;
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
