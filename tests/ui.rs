//! The dashboard's server side: `/` redirects to `/ui`, the page and its assets are served from
//! the binary with a policy that lets them load and fetch only from the node, nothing in them
//! names another origin, and they are served without the API token while the API still needs
//! it. What the page shows in a browser is tested separately.

mod common;

use common::start;
use reqwest::{redirect, Client};

const TOKEN: &str = "s3cret-token";

fn no_redirects() -> Client {
    Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_assets_come_from_the_node_alone() {
    let server = start(|_| {}).await;
    let c = no_redirects();
    let root = c.get(server.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/ui");

    let mut bodies = Vec::new();
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let resp = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let policy = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        let body = resp.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        bodies.push((path, body));
    }
    for (path, body) in &bodies {
        // No URL with a host: the only one is the SVG namespace, an identifier, never fetched
        // (the member selector builds `http://` + a member's address, to open its page).
        let body = body.replace("http://www.w3.org/2000/svg", "");
        let outside = body
            .match_indices("://")
            .any(|(at, _)| body[at + 3..].starts_with(|c: char| c.is_ascii_alphanumeric()));
        assert!(!outside, "{path} names another origin");
    }
    let page = &bodies[0].1;
    assert!(page.contains(r#"src="/ui/app.js""#) && page.contains(r#"href="/ui/style.css""#));
    let bad = c.get(server.url("/ui?x=1")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stats_the_time_series_draw_count_what_the_node_did() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let stats = |c: Client, url: String| async move {
        let reply: serde_json::Value = c.get(url).send().await.unwrap().json().await.unwrap();
        reply
    };
    let before = stats(c.clone(), server.url("/v1/cluster/stats")).await;
    for field in [
        "at_ms",
        "keys",
        "rumors_published",
        "rumors_pushed",
        "rumors_received",
        "rumors_merged",
        "sync_sessions",
        "sync_keys_repaired",
        "conflicts",
        "tombstones_held",
        "tombstones_collected",
        "heals",
    ] {
        assert!(before[field].is_u64(), "{field}: {before}");
    }
    assert_eq!(before["node"], "n1");
    for i in 0..3 {
        let put = c
            .put(server.url(&format!("/v1/kv/k{i}")))
            .body("v")
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success());
    }
    c.delete(server.url("/v1/kv/k0")).send().await.unwrap();
    let after = stats(c.clone(), server.url("/v1/cluster/stats")).await;
    let grew = |f: &str| after[f].as_u64().unwrap() - before[f].as_u64().unwrap();
    assert_eq!(grew("rumors_published"), 4, "{after}");
    assert_eq!(grew("keys"), 3, "{after}");
    assert_eq!(grew("tombstones_held"), 1, "{after}");
    assert!(after["at_ms"].as_u64() >= before["at_ms"].as_u64());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_needs_no_token_but_what_it_reads_does() {
    let server = start(|config| config.api_token = Some(TOKEN.into())).await;
    let c = no_redirects();
    for path in ["/", "/ui", "/ui/app.js", "/ui/style.css"] {
        let resp = c.get(server.url(path)).send().await.unwrap();
        assert!(
            resp.status() == 200 || resp.status() == 307,
            "{path}: {resp:?}"
        );
    }
    let members = c
        .get(server.url("/v1/cluster/members"))
        .send()
        .await
        .unwrap();
    assert_eq!(members.status(), 401);
    let with_token = c
        .get(server.url("/v1/cluster/members"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);
    server.stop().await;
}

/// The state `observer` lists for member `id`.
async fn state_at(c: &Client, observer: &common::Proc, id: &str) -> Option<String> {
    common::member_state(c, observer, id).await.map(|(s, _)| s)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cut_button_isolates_a_member_from_every_other_and_heal_brings_it_back() {
    use common::{eventually, Proc};
    use std::time::Duration;
    let within = Duration::from_secs(30);
    let n1 = Proc::serve(&["--node-id", "n1", "--fault-injection"]);
    let join =
        |id: &str| Proc::serve(&["--node-id", id, "--fault-injection", "--seeds", &n1.gossip]);
    let (n2, n3) = (join("n2"), join("n3"));
    let c = Client::new();
    for observer in [&n1, &n2, &n3] {
        for id in ["n1", "n2", "n3"] {
            eventually("all alive", within, || async {
                (state_at(&c, observer, id).await? == "alive").then_some(())
            })
            .await;
        }
    }
    // One request to n1 cuts n3 off from both others, on every member.
    let cut = c
        .put(n1.url("/v1/admin/isolation"))
        .body(r#"{"members": ["n3"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(cut.status(), 200);
    let reply: serde_json::Value = cut.json().await.unwrap();
    assert_eq!(reply["isolated"], serde_json::json!(["n3"]));
    for member in reply["members"].as_array().unwrap() {
        assert_eq!(member["reached"], true, "{reply}");
    }
    let faults: serde_json::Value = c
        .get(n3.url("/v1/admin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["drop"], serde_json::json!(["n1", "n2"]));
    for (observer, id) in [(&n1, "n3"), (&n2, "n3"), (&n3, "n1")] {
        eventually("n3 declared dead on the other side", within, || async {
            (state_at(&c, observer, id).await? == "dead").then_some(())
        })
        .await;
    }
    assert_eq!(state_at(&c, &n1, "n2").await.as_deref(), Some("alive"));
    // Each member's health, as the status gathers it: the cut member, alone, is in a minority;
    // a member not alive has none.
    let status = |node: &Proc| {
        let url = node.url("/v1/cluster/status");
        let c = c.clone();
        async move { common::get_json(&c, url).await.unwrap() }
    };
    let row = |status: &serde_json::Value, id: &str| {
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == id).cloned())
            .unwrap_or_else(|| panic!("no {id} in {status}"))
    };
    // Once n3 has declared the other two dead (suspect members still count towards a majority).
    eventually("n3 in a minority", within, || async {
        let n3_row = row(&status(&n3).await, "n3");
        let minority = n3_row["reasons"]
            .as_array()
            .is_some_and(|r| r.contains(&"minority".into()));
        (n3_row["health"] == "degraded" && minority).then_some(())
    })
    .await;
    let from_n1 = status(&n1).await;
    assert_eq!(
        row(&from_n1, "n3")["health"],
        serde_json::Value::Null,
        "{from_n1}"
    );
    assert_eq!(row(&from_n1, "n2")["health"], "ok", "{from_n1}");
    assert_eq!(
        row(&from_n1, "n2")["reasons"],
        serde_json::json!([]),
        "{from_n1}"
    );

    let healed = c
        .put(n2.url("/v1/admin/isolation"))
        .body(r#"{"members": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(healed.status(), 200);
    for observer in [&n1, &n2, &n3] {
        for id in ["n1", "n2", "n3"] {
            eventually("all alive again", within, || async {
                (state_at(&c, observer, id).await? == "alive").then_some(())
            })
            .await;
        }
    }
    // Without --fault-injection there is nothing to cut with.
    let plain = Proc::serve(&["--node-id", "p1"]);
    let refused = c
        .put(plain.url("/v1/admin/isolation"))
        .body(r#"{"members": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
}
