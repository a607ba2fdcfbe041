//! Honest health with real processes on 127.0.0.1: a node cut off from the others says so
//! (`degraded`, `minority`, `isolated`, member counts, gauges, one log line), marks the writes it
//! answers alone with `X-Hearsay-Minority: true`, and stops once the cut heals; a node whose
//! seeds never answer is `isolated`; traffic under another cluster key is logged with its source.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{eventually, get_json, member_state, metric, path_str, Proc};
use reqwest::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(30);

async fn health(c: &Client, node: &Proc) -> Value {
    get_json(c, node.url("/v1/health")).await.unwrap()
}

fn reasons(health: &Value) -> Vec<String> {
    serde_json::from_value(health["reasons"].clone()).unwrap()
}

/// Writes on `node` and returns whether the answer carried `X-Hearsay-Minority: true`.
async fn minority_write(c: &Client, node: &Proc, key: &str) -> bool {
    let resp = c
        .put(node.url(&format!("/v1/kv/{key}")))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    match resp.headers().get("x-hearsay-minority") {
        None => false,
        Some(v) => {
            assert_eq!(v, "true");
            true
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_reports_minority_and_marks_its_writes_until_the_cut_heals() {
    let c = Client::new();
    let dir = tempfile::tempdir().unwrap();
    let data = |id: &str| dir.path().join(id);
    let n1 = Proc::serve(&[
        "--node-id",
        "n1",
        "--fault-injection",
        "--data",
        path_str(&data("n1")),
    ]);
    let peer = |id: &str| {
        Proc::serve(&[
            "--node-id",
            id,
            "--fault-injection",
            "--data",
            path_str(&data(id)),
            "--seeds",
            &n1.gossip,
        ])
    };
    let (n2, n3) = (peer("n2"), peer("n3"));
    for observer in [&n1, &n2, &n3] {
        for id in ["n1", "n2", "n3"] {
            eventually(&format!("{id} alive"), CONVERGE, || async {
                (member_state(&c, observer, id).await?.0 == "alive").then_some(())
            })
            .await;
        }
    }
    let h = health(&c, &n3).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["majority"], true);
    assert_eq!(
        h["members"],
        json!({"alive": 3, "suspect": 0, "dead": 0, "left": 0})
    );
    assert!(!minority_write(&c, &n3, "before").await);

    // Cut n3 off from both others.
    let cut = Instant::now();
    let resp = c
        .put(n3.url("/v1/admin/faults"))
        .json(&json!({"drop": ["n1", "n2"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Nobody can confirm its suspicions (Lifeguard): it declares the others dead about twice as
    // late as they declare it (8 s here).
    let h = eventually("n3 reports minority", Duration::from_secs(20), || async {
        let h = health(&c, &n3).await;
        reasons(&h).contains(&"minority".to_string()).then_some(h)
    })
    .await;
    eprintln!("n3 reported minority {:?} after the cut", cut.elapsed());
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["majority"], false);
    assert!(reasons(&h).contains(&"isolated".to_string()), "{h}");
    assert_eq!(
        metric(&c, &n3, "hearsay_health_degraded{reason=\"minority\"}").await,
        Some(1)
    );
    assert_eq!(
        metric(&c, &n3, "hearsay_health_degraded{reason=\"isolated\"}").await,
        Some(1)
    );
    assert!(minority_write(&c, &n3, "alone").await);
    assert!(
        n3.log_line(&["WARN", "isolated"], Duration::from_secs(15))
            .is_some(),
        "no log line says n3 is isolated"
    );
    // The majority side stays healthy once it has given up on n3, and its writes are plain.
    let h = eventually("n1 sees n3 gone", CONVERGE, || async {
        let h = health(&c, &n1).await;
        (h["members"]["alive"] == 2).then_some(h)
    })
    .await;
    assert_eq!(
        (h["status"].as_str(), h["majority"].as_bool()),
        (Some("ok"), Some(true)),
        "{h}"
    );
    assert!(!minority_write(&c, &n1, "majority").await);
    assert_eq!(
        metric(&c, &n1, "hearsay_health_degraded{reason=\"minority\"}").await,
        Some(0)
    );

    // Healed: n3 is healthy again and its writes plain.
    c.delete(n3.url("/v1/admin/faults")).send().await.unwrap();
    eventually("n3 healthy again", CONVERGE, || async {
        (health(&c, &n3).await["status"] == "ok").then_some(())
    })
    .await;
    assert!(!minority_write(&c, &n3, "after").await);
    // Both sides report the heal once their exchanges find nothing left to repair.
    for (node, back) in [(&n1, json!(["n3"])), (&n3, json!(["n1", "n2"]))] {
        let heal = eventually("a heal report", CONVERGE, || async {
            let status = get_json(&c, node.url("/v1/cluster/status")).await?;
            let heal = status["heal"].clone();
            heal["converged_after_ms"].as_u64().map(|_| heal)
        })
        .await;
        let mut members = heal["members"].as_array().unwrap().clone();
        members.sort_by_key(|m| m.to_string());
        assert_eq!(Value::from(members), back, "{heal}");
        eprintln!("heal report on {}: {heal}", node.base);
    }
    assert!(
        n1.log_line(&["healed", "n3"], Duration::from_secs(5))
            .is_some(),
        "n1 logs the heal"
    );
    assert_eq!(metric(&c, &n1, "hearsay_heals_total").await, Some(1));
    drop((n1, n2, n3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_seeds_never_answer_is_isolated_and_says_so() {
    let c = Client::new();
    // A port nothing listens on.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed = dead.local_addr().unwrap().to_string();
    drop(dead);
    let node = Proc::serve(&["--node-id", "lonely", "--seeds", &seed]);
    let h = health(&c, &node).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(reasons(&h), ["isolated"]);
    assert_eq!(h["members"]["alive"], 1);
    let line = node
        .log_line(&["WARN", "isolated"], Duration::from_secs(15))
        .expect("a log line says the node is isolated");
    assert!(line.contains(&seed), "the line names the seeds: {line}");
    // A lone node started without seeds is simply healthy.
    let alone = Proc::serve(&["--node-id", "alone"]);
    let h = health(&c, &alone).await;
    assert_eq!(
        (h["status"].as_str(), h["majority"].as_bool()),
        (Some("ok"), Some(true)),
        "{h}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_under_another_cluster_key_is_logged_with_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str, byte: char| {
        let path = dir.path().join(name);
        std::fs::write(&path, std::iter::repeat_n(byte, 64).collect::<String>()).unwrap();
        path
    };
    let (a_key, b_key) = (key("a.key", 'a'), key("b.key", 'b'));
    let n1 = Proc::serve(&["--node-id", "n1", "--cluster-key-file", path_str(&a_key)]);
    let stranger = Proc::serve(&[
        "--node-id",
        "n2",
        "--cluster-key-file",
        path_str(&b_key),
        "--seeds",
        &n1.gossip,
    ]);
    let line = n1
        .log_line(&["WARN", "failed authentication"], Duration::from_secs(15))
        .expect("n1 logs the traffic it cannot authenticate");
    assert!(
        line.contains("from=127.0.0.1:"),
        "the line names the source: {line}"
    );
    let c = Client::new();
    let h = health(&c, &stranger).await;
    assert_eq!(reasons(&h), ["isolated"], "{h}");
}

/// Writes `value` as the color on `node` and returns the write's timestamp.
async fn put_color(c: &Client, node: &Proc, value: &str) -> u64 {
    let resp = c
        .put(node.url("/v1/kv/color"))
        .body(value.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reply: Value = resp.json().await.unwrap();
    reply["timestamp"].as_str().unwrap().parse().unwrap()
}

async fn color(c: &Client, node: &Proc) -> Option<String> {
    c.get(node.url("/v1/kv/color"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

async fn conflicts(c: &Client, node: &Proc) -> Option<u64> {
    metric(c, node, "hearsay_conflicts_total{keyspace=\"kv\"}").await
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_made_on_both_sides_of_a_partition_are_counted_as_conflicts_and_explained() {
    let c = Client::new();
    // No periodic anti-entropy: the writes travel as rumors (pulled after the heal). The node
    // that removed a set element can tell that a re-add raced its remove only from the re-add's
    // delta; a whole state, which anti-entropy might bring first, cannot show it
    // (crdt/set_races.rs).
    let rumors_only = ["--fault-injection", "--anti-entropy-interval-ms", "600000"];
    let n1 = Proc::serve(&[&["--node-id", "n1"][..], &rumors_only].concat());
    let n2 = Proc::serve(
        &[
            &["--node-id", "n2", "--seeds", &n1.gossip][..],
            &rumors_only,
        ]
        .concat(),
    );
    for (observer, id) in [(&n1, "n2"), (&n2, "n1")] {
        eventually(&format!("{id} alive"), CONVERGE, || async {
            (member_state(&c, observer, id).await?.0 == "alive").then_some(())
        })
        .await;
    }
    // One write both nodes see, then one made after seeing it: no conflict.
    put_color(&c, &n1, "green").await;
    eventually("green on n2", CONVERGE, || async {
        (color(&c, &n2).await? == "green").then_some(())
    })
    .await;
    put_color(&c, &n2, "yellow").await;
    eventually("yellow on n1", CONVERGE, || async {
        (color(&c, &n1).await? == "yellow").then_some(())
    })
    .await;
    assert_eq!(conflicts(&c, &n1).await, Some(0));
    assert_eq!(conflicts(&c, &n2).await, Some(0));
    // A set element both see, removed and added again after seeing that: no race.
    let element = |node: &Proc| node.url("/v1/sets/team/alice");
    assert_eq!(c.put(element(&n1)).send().await.unwrap().status(), 200);
    let present = |node: &'static str| {
        let (c, url) = (
            c.clone(),
            [&n1, &n2][(node == "n2") as usize].url("/v1/sets/team/alice"),
        );
        async move { c.get(url).send().await.ok().map(|r| r.status() == 200) }
    };
    eventually("alice on n2", CONVERGE, || async {
        present("n2").await?.then_some(())
    })
    .await;
    assert_eq!(c.delete(element(&n2)).send().await.unwrap().status(), 200);
    eventually("alice gone on n1", CONVERGE, || async {
        (!present("n1").await?).then_some(())
    })
    .await;
    assert_eq!(c.put(element(&n1)).send().await.unwrap().status(), 200);
    eventually("alice back on n2", CONVERGE, || async {
        present("n2").await?.then_some(())
    })
    .await;
    for node in [&n1, &n2] {
        let races = metric(&c, node, "hearsay_conflicts_total{keyspace=\"sets\"}").await;
        assert_eq!(races, Some(0));
    }

    // A partition; each side writes without seeing the other's write.
    for (node, other) in [(&n1, "n2"), (&n2, "n1")] {
        c.put(node.url("/v1/admin/faults"))
            .json(&json!({"drop": [other]}))
            .send()
            .await
            .unwrap();
    }
    let red = put_color(&c, &n1, "red").await;
    let blue = put_color(&c, &n2, "blue").await;
    // n1 removes alice while n2 adds her again: the add wins, and both count the race.
    assert_eq!(c.delete(element(&n1)).send().await.unwrap().status(), 200);
    assert_eq!(c.put(element(&n2)).send().await.unwrap().status(), 200);
    // Last-writer-wins keeps the later stamp, the node id breaking a tie (blue, almost always).
    let (winner, loser, kept) = if (blue, "n2") > (red, "n1") {
        ("n2", "n1", "blue")
    } else {
        ("n1", "n2", "red")
    };
    for node in [&n1, &n2] {
        c.delete(node.url("/v1/admin/faults")).send().await.unwrap();
    }
    for node in [&n1, &n2] {
        eventually("one color everywhere", CONVERGE, || async {
            (color(&c, node).await? == kept).then_some(())
        })
        .await;
        eventually("the conflict counted", CONVERGE, || async {
            (conflicts(&c, node).await? == 1).then_some(())
        })
        .await;
        eventually("the set race counted", CONVERGE, || async {
            let races = metric(&c, node, "hearsay_conflicts_total{keyspace=\"sets\"}").await?;
            (races == 1).then_some(())
        })
        .await;
    }
    for node in ["n1", "n2"] {
        assert_eq!(present(node).await, Some(true), "the add wins on {node}");
    }
    let explained = get_json(&c, n1.url("/v1/kv/color?explain=true"))
        .await
        .unwrap();
    assert_eq!(explained["winner"]["node"], winner, "{explained}");
    assert_eq!(explained["winner"]["size"], kept.len());
    let overwritten = explained["overwritten"].as_array().unwrap();
    assert_eq!(overwritten.len(), 1, "{explained}");
    assert_eq!(overwritten[0]["node"], loser);
    assert_eq!(overwritten[0]["size"], 7 - kept.len());
    assert_eq!(
        overwritten[0]["by"]["timestamp"],
        explained["winner"]["timestamp"]
    );
    // The writes replaced knowingly before the partition (green, yellow) are not there.
    assert_eq!(
        get_json(&c, n1.url("/v1/kv/nothing?explain=true")).await,
        None
    );
    let resp = c
        .get(n1.url("/v1/kv/color?explain=maybe"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}
