//! Consistency levels with real processes on 127.0.0.1: a `w=all` write is acknowledged by every
//! member on a healthy cluster and times out (504 `write_timeout`, naming who acked) while one is
//! cut off, yet stays applied and still spreads; an `r=majority` read returns a value that only
//! the two other nodes hold, and leaves it on the reader.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{eventually, get_text, member_state, metric, path_str, Proc};
use reqwest::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(30);

/// Three nodes with fault injection, every one seeing the three alive; `extra` goes to each.
async fn three_nodes(c: &Client, dir: &tempfile::TempDir, extra: &[&str]) -> [Proc; 3] {
    let start = |id: &str, seeds: Option<&str>| {
        let data = dir.path().join(id);
        let mut args = vec![
            "--node-id",
            id,
            "--fault-injection",
            "--data",
            path_str(&data),
        ];
        if let Some(seeds) = seeds {
            args.extend(["--seeds", seeds]);
        }
        args.extend(extra);
        Proc::serve(&args)
    };
    let n1 = start("n1", None);
    let n2 = start("n2", Some(&n1.gossip));
    let n3 = start("n3", Some(&n1.gossip));
    let nodes = [n1, n2, n3];
    for observer in &nodes {
        for id in ["n1", "n2", "n3"] {
            eventually(&format!("{id} alive"), CONVERGE, || async {
                (member_state(c, observer, id).await?.0 == "alive").then_some(())
            })
            .await;
        }
    }
    nodes
}

/// Drops `node`'s cluster traffic with `peers` (both ways); an empty list heals it.
async fn cut(c: &Client, node: &Proc, peers: &[&str]) {
    let resp = c
        .put(node.url("/v1/admin/faults"))
        .json(&json!({ "drop": peers }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// PUTs `value` under `key` on `node` with `query`; the status and the JSON body.
async fn put(c: &Client, node: &Proc, key: &str, query: &str, value: &str) -> (u16, Value) {
    let resp = c
        .put(node.url(&format!("/v1/kv/{key}?{query}")))
        .body(value.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn names(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn w_all_is_acked_by_every_member_and_times_out_while_one_is_cut_off_yet_still_spreads() {
    let c = Client::new();
    let dir = tempfile::tempdir().unwrap();
    let [n1, n2, n3] = three_nodes(&c, &dir, &[]).await;

    // Healthy: every member acknowledges, this node first.
    let mut took = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let (status, body) = put(&c, &n1, &format!("healthy{i}"), "w=all", "v").await;
        took.push(started.elapsed());
        assert_eq!(status, 200, "{body}");
        assert_eq!(names(&body["acked"]), ["n1", "n2", "n3"], "{body}");
    }
    took.sort();
    eprintln!(
        "w=all on a healthy cluster: median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        took[took.len() / 2] < Duration::from_millis(50),
        "w=all took {took:?}"
    );
    // The members that acknowledged hold it: a plain read on each finds it at once.
    for node in [&n2, &n3] {
        assert_eq!(
            get_text(&c, node.url("/v1/kv/healthy0")).await.as_deref(),
            Some("v")
        );
    }
    // Sets and counters take levels too.
    let resp = c
        .put(n2.url("/v1/sets/s/e?w=majority"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(names(&body["acked"]).len(), 2, "{body}");
    assert_eq!(names(&body["acked"])[0], "n2", "{body}");

    // n3 cut off: w=all cannot be met; the answer names who acked and how many were needed.
    cut(&c, &n3, &["n1", "n2"]).await;
    let started = Instant::now();
    let (status, body) = put(&c, &n1, "during", "w=all&timeout_ms=700", "cut").await;
    let waited = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "write_timeout");
    assert_eq!(names(&body["acked"]), ["n1", "n2"], "{body}");
    assert_eq!(body["required"], 3);
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );
    // A majority is still there.
    let (status, body) = put(&c, &n1, "majority", "w=majority", "m").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body["acked"]).len(), 2, "{body}");
    // The timed-out write stayed applied, and spreads to n3 once the cut heals.
    assert_eq!(
        get_text(&c, n1.url("/v1/kv/during")).await.as_deref(),
        Some("cut")
    );
    cut(&c, &n3, &[]).await;
    eventually("the timed-out write reaches n3", CONVERGE, || async {
        (get_text(&c, n3.url("/v1/kv/during")).await.as_deref() == Some("cut")).then_some(())
    })
    .await;
    // Healed: w=all is met again.
    eventually("w=all met after the heal", CONVERGE, || async {
        let (status, _) = put(&c, &n1, "after", "w=all&timeout_ms=500", "a").await;
        (status == 200).then_some(())
    })
    .await;
    assert!(metric(
        &c,
        &n1,
        "hearsay_consistency_total{event=\"write_timeout\"}"
    )
    .await
    .is_some_and(|n| n >= 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn r_majority_returns_a_value_only_two_of_three_hold_and_leaves_it_on_the_reader() {
    let c = Client::new();
    let dir = tempfile::tempdir().unwrap();
    // No periodic anti-entropy and no relaying of rumors: what n3 lacks stays lacking long
    // enough to read it (n2 still piggybacks what it learned on its probes now and then).
    let quiet = ["--anti-entropy-interval-ms", "3600000", "--fanout", "0"];
    let [n1, n2, n3] = three_nodes(&c, &dir, &quiet).await;

    // Cut off from both others, n3 cannot read from a majority.
    cut(&c, &n3, &["n1", "n2"]).await;
    let resp = c
        .get(n3.url("/v1/kv/k?r=majority&timeout_ms=300"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "read_timeout", "{body}");
    assert_eq!(names(&body["answered"]), ["n3"], "{body}");
    assert_eq!(body["required"], 2);
    cut(&c, &n3, &[]).await;

    // n1 and n3 cannot talk (n2 still relays their probes, so neither suspects the other): a
    // write on n1 acknowledged by n2 is on two nodes of three. Each round checks that n3 lacks
    // it before the read; a round where n2's piggybacking won the race proves nothing, and the
    // next key is tried.
    cut(&c, &n1, &["n3"]).await;
    cut(&c, &n3, &["n1"]).await;
    let merged = || async {
        metric(&c, &n3, "hearsay_consistency_total{event=\"read_merged\"}")
            .await
            .unwrap_or(0)
    };
    let mut shown = false;
    for round in 0..20 {
        let key = format!("two{round}");
        let (status, body) = put(&c, &n1, &key, "w=2", "held by two").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(names(&body["acked"]), ["n1", "n2"], "{body}");
        let before = merged().await;
        let lacking = get_text(&c, n3.url(&format!("/v1/kv/{key}")))
            .await
            .is_none();
        let resp = c
            .get(n3.url(&format!("/v1/kv/{key}?r=majority")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        assert_eq!(resp.text().await.unwrap(), "held by two");
        // The read merged the value into n3's store: a plain read finds it now.
        assert_eq!(
            get_text(&c, n3.url(&format!("/v1/kv/{key}")))
                .await
                .as_deref(),
            Some("held by two")
        );
        if lacking && merged().await > before {
            eprintln!("round {round}: n3 lacked {key}; r=majority returned it and kept it");
            shown = true;
            break;
        }
    }
    assert!(shown, "n3 never lacked a value when its read began");
    // A read from every member cannot be met while n1 and n3 are cut from each other.
    let resp = c
        .get(n3.url("/v1/kv/two0?r=all&timeout_ms=300"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(names(&body["answered"]), ["n3", "n2"], "{body}");
    drop((n1, n2));
}

#[tokio::test(flavor = "multi_thread")]
async fn levels_are_checked_and_a_lone_node_answers_them_itself() {
    let c = Client::new();
    let n1 = Proc::serve(&[]);
    for (path, method, code) in [
        ("/v1/kv/k?w=0", "PUT", "bad_query"),
        ("/v1/kv/k?w=most", "PUT", "bad_query"),
        ("/v1/kv/k?w=1&timeout_ms=0", "PUT", "bad_query"),
        ("/v1/kv/k?w=1&timeout_ms=60001", "PUT", "bad_query"),
        ("/v1/kv/k?r=all", "PUT", "bad_query"),
        ("/v1/kv/k?w=all", "GET", "bad_query"),
        ("/v1/kv/k?r=-1", "GET", "bad_query"),
        ("/v1/sets/s?r=2", "POST", "bad_query"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = c
            .request(method.clone(), n1.url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], code, "{method} {path}: {body}");
    }
    // Alone, a majority and "all" are this node.
    let (status, body) = put(&c, &n1, "k", "w=all", "v").await;
    assert_eq!(
        (status, names(&body["acked"])),
        (200, vec!["n1".to_string()])
    );
    let resp = c.get(n1.url("/v1/kv/k?r=majority")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // More members than there are cannot be met: answered at once, not after the timeout.
    let started = Instant::now();
    let (status, body) = put(&c, &n1, "k", "w=2&timeout_ms=60000", "v2").await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["required"], 2);
    assert_eq!(names(&body["acked"]), ["n1"]);
    assert_eq!(
        get_text(&c, n1.url("/v1/kv/k")).await.as_deref(),
        Some("v2"),
        "a timed-out write stays applied"
    );
    let resp = c
        .post(n1.url("/v1/counters/c?w=1"))
        .body(r#"{"add": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"key": "c", "value": 3, "acked": ["n1"]}));
}
