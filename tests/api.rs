//! The HTTP contract against a real server on a free port: every endpoint, and bad input that must
//! get a clear 4xx JSON error (never a 5xx, never a crash).

mod common;

use common::{start, TestServerParts};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn error_code(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().await.expect("error bodies are JSON");
    assert!(body["error"].is_string(), "error message missing: {body}");
    (status, body["code"].as_str().unwrap().to_string())
}

/// Sends each of `bodies` to `url` with `method` and expects 400 `bad_json` for every one.
async fn expect_bad_json(c: &Client, method: reqwest::Method, url: String, bodies: &[&str]) {
    for body in bodies {
        let resp = c
            .request(method.clone(), &url)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(resp).await,
            (StatusCode::BAD_REQUEST, "bad_json".into()),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_put_get_delete_round_trip_keeps_content_type_and_headers() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let resp = c
        .put(server.url("/v1/kv/greeting"))
        .header("content-type", "text/plain; charset=utf-8")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(ack["key"], "greeting");
    assert_eq!(ack["node"], "n1");
    let ts = ack["timestamp"].as_str().unwrap().to_string();
    assert!(ts.parse::<u64>().unwrap() > 0);

    let resp = c.get(server.url("/v1/kv/greeting")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    assert_eq!(h["x-hearsay-timestamp"], ts.as_str());
    assert_eq!(h["etag"], format!("\"{ts}-n1\"").as_str());
    assert_eq!(resp.text().await.unwrap(), "hello");

    // A later write wins and carries a greater timestamp.
    let ack2: Value = c
        .put(server.url("/v1/kv/greeting"))
        .body(vec![0u8, 159, 146, 150])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ack2["timestamp"].as_str().unwrap().parse::<u64>().unwrap() > ts.parse().unwrap());
    let resp = c.get(server.url("/v1/kv/greeting")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &[0u8, 159, 146, 150]);

    for _ in 0..2 {
        let resp = c
            .delete(server.url("/v1/kv/greeting"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "delete is idempotent");
    }
    let resp = c.get(server.url("/v1/kv/greeting")).send().await.unwrap();
    assert_eq!(
        error_code(resp).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let resp = c.get(server.url("/v1/kv/never")).send().await.unwrap();
    assert_eq!(error_code(resp).await.0, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_may_hold_slashes_and_any_percent_encoded_utf8() {
    let server = start(|_| {}).await;
    let c = Client::new();
    for (path, key) in [
        ("/v1/kv/app/config/db", "app/config/db"),
        ("/v1/kv/caf%C3%A9%20%F0%9F%8D%B0", "café 🍰"),
        ("/v1/kv/a%2Fb", "a/b"),
    ] {
        let ack: Value = c
            .put(server.url(path))
            .body("v")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ack["key"], key);
        assert_eq!(c.get(server.url(path)).send().await.unwrap().status(), 200);
    }
    let resp = c.get(server.url("/v1/kv/bad%FF")).send().await.unwrap();
    assert_eq!(
        error_code(resp).await,
        (StatusCode::BAD_REQUEST, "bad_path".into())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_pages_through_live_keys_by_prefix() {
    let server = start(|_| {}).await;
    let c = Client::new();
    for k in ["user/3", "user/1", "user/2", "user/4", "other"] {
        c.put(server.url(&format!("/v1/kv/{k}")))
            .body("x")
            .send()
            .await
            .unwrap();
    }
    c.delete(server.url("/v1/kv/user/2")).send().await.unwrap();
    let page: Value = c
        .get(server.url("/v1/kv?prefix=user/&limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        page,
        json!({"keys": ["user/1", "user/3"], "next": "user/3"})
    );
    let page: Value = c
        .get(server.url("/v1/kv?prefix=user/&limit=2&after=user/3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page, json!({"keys": ["user/4"], "next": null}));
    let all: Value = c
        .get(server.url("/v1/kv"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["keys"].as_array().unwrap().len(), 4);
    for bad in [
        "/v1/kv?limit=0",
        "/v1/kv?limit=5000",
        "/v1/kv?limit=abc",
        "/v1/kv?bogus=1",
    ] {
        let (status, _) = error_code(c.get(server.url(bad)).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sets_add_remove_and_batch() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let resp = c.get(server.url("/v1/sets/team")).send().await.unwrap();
    assert_eq!(error_code(resp).await.0, StatusCode::NOT_FOUND);
    // Removing from a set that does not exist is a 404 and does not create it.
    let r = c
        .delete(server.url("/v1/sets/team/ghost"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let resp = c.get(server.url("/v1/sets/team")).send().await.unwrap();
    assert_eq!(error_code(resp).await.0, StatusCode::NOT_FOUND);
    for e in ["carol", "alice", "bob"] {
        let r = c
            .put(server.url(&format!("/v1/sets/team/{e}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .delete(server.url("/v1/sets/team/bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set: Value = c
        .get(server.url("/v1/sets/team"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set, json!({"key": "team", "elements": ["alice", "carol"]}));
    // Batch: no JSON Content-Type needed (as with curl -d).
    let r: Value = c
        .post(server.url("/v1/sets/team"))
        .body(r#"{"add": ["dave", "élodie"], "remove": ["alice"]}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["size"], json!(3), "the set's size after the edit: {r}");
    let set: Value = c
        .get(server.url("/v1/sets/team"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set["elements"], json!(["carol", "dave", "élodie"]));
    // Removing everything leaves an empty set, which exists.
    c.post(server.url("/v1/sets/team"))
        .json(&json!({"remove": ["carol", "dave", "élodie"]}))
        .send()
        .await
        .unwrap();
    let set: Value = c
        .get(server.url("/v1/sets/team"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set["elements"], json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_4xx_json_error() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let long = "k".repeat(5 * 1024);
    let cases = [
        c.put(server.url(&format!("/v1/kv/{long}"))).body("v"),
        c.get(server.url(&format!("/v1/kv/{long}"))),
        c.put(server.url(&format!("/v1/sets/{long}/e"))),
        c.put(server.url(&format!("/v1/sets/s/{long}"))),
        c.post(server.url("/v1/sets/s"))
            .body(format!(r#"{{"add": ["{long}"]}}"#)),
    ];
    for req in cases {
        let (status, code) = error_code(req.send().await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "name_too_long")
        );
    }
    let big = vec![b'x'; 8 << 20];
    let resp = c
        .put(server.url("/v1/kv/big"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(resp).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large".into())
    );
    assert_eq!(
        c.get(server.url("/v1/kv/big"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let bodies = ["{not json", r#"{"add": "notalist"}"#, r#"{"plus": []}"#, ""];
    expect_bad_json(&c, reqwest::Method::POST, server.url("/v1/sets/s"), &bodies).await;
    let resp = c.patch(server.url("/v1/kv/x")).send().await.unwrap();
    assert!(resp.headers()["allow"].to_str().unwrap().contains("PUT"));
    assert_eq!(
        error_code(resp).await,
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
    let resp = c
        .post(server.url("/v1/cluster/digest"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.0, StatusCode::METHOD_NOT_ALLOWED);
    for path in ["/nope", "/v1", "/v1/sets/a/b/c"] {
        let resp = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(
            error_code(resp).await,
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{path}"
        );
    }
    // The server still works after all of that.
    assert_eq!(
        c.get(server.url("/v1/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn value_limit_is_configurable_and_exact() {
    let server = start(|c| c.max_value_bytes = 1000).await;
    let c = Client::new();
    let ok = c
        .put(server.url("/v1/kv/a"))
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let over = c
        .put(server.url("/v1/kv/a"))
        .body(vec![1u8; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(over).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_endpoints_describe_this_node() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let members: Value = c
        .get(server.url("/v1/cluster/members"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members["self"], "n1");
    let me = &members["members"][0];
    assert_eq!(
        (me["id"].as_str(), me["state"].as_str()),
        (Some("n1"), Some("alive"))
    );
    assert_eq!(
        me["http_addr"].as_str().unwrap(),
        server.base.trim_start_matches("http://")
    );

    let d0: Value = c
        .get(server.url("/v1/cluster/digest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d0["keys"], 0);
    assert_eq!(d0["root"].as_str().unwrap().len(), 64);
    c.put(server.url("/v1/kv/a"))
        .body("1")
        .send()
        .await
        .unwrap();
    c.put(server.url("/v1/sets/s/e")).send().await.unwrap();
    let d1: Value = c
        .get(server.url("/v1/cluster/digest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d1["keys"], 2);
    assert_ne!(d1["root"], d0["root"]);
    // Tombstones are replicated state: a delete changes the digest but keeps the key counted.
    c.delete(server.url("/v1/kv/a")).send().await.unwrap();
    let d2: Value = c
        .get(server.url("/v1/cluster/digest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d2["keys"], 2);
    assert_ne!(d2["root"], d1["root"]);

    let health: Value = c
        .get(server.url("/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"hearsay_http_requests_total{method="PUT",route="/v1/kv/{*key}",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("hearsay_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("hearsay_keys 2"));
    assert!(metrics.contains("hearsay_store_bytes"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_recovering_from_peers_refuses_reads_but_takes_writes() {
    let server = start(|c| c.cluster.resync_first = true).await;
    let c = Client::new();
    let put = c
        .put(server.url("/v1/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    for path in ["/v1/kv/k", "/v1/kv", "/v1/sets/s"] {
        let resp = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(
            error_code(resp).await,
            (StatusCode::SERVICE_UNAVAILABLE, "resyncing".into()),
            "{path}"
        );
    }
    assert_eq!(
        c.get(server.url("/v1/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_endpoint_is_404_unless_enabled() {
    let off = start(|_| {}).await;
    let c = Client::new();
    for req in [
        c.get(off.url("/v1/admin/faults")),
        c.put(off.url("/v1/admin/faults"))
            .body(r#"{"drop": ["n2"]}"#),
        c.delete(off.url("/v1/admin/faults")),
    ] {
        assert_eq!(
            error_code(req.send().await.unwrap()).await.0,
            StatusCode::NOT_FOUND
        );
    }
    off.stop().await;

    let on = start(|c| c.fault_injection = true).await;
    let put_faults = |body: &'static str| {
        let request = c.put(on.url("/v1/admin/faults")).body(body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let r = put_faults(r#"{"drop": ["n3", "n2"]}"#).await;
    assert_eq!(r, json!({"drop": ["n2", "n3"], "loss": 0.0, "delay_ms": 0}));
    let r = put_faults(r#"{"loss": 0.25, "delay_ms": 40}"#).await;
    assert_eq!(r, json!({"drop": [], "loss": 0.25, "delay_ms": 40}));
    let r: Value = c
        .get(on.url("/v1/admin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"drop": [], "loss": 0.25, "delay_ms": 40}));
    // A whole number written with a fraction is an integer to JSON Schema (and openapi.yaml).
    let r = put_faults(r#"{"loss": 0.25, "delay_ms": 40.0}"#).await;
    assert_eq!(r, json!({"drop": [], "loss": 0.25, "delay_ms": 40}));
    for (body, code) in [
        (r#"{"delay_ms": 40.5}"#, "bad_json"),
        (r#"{"drop": ["not an id"]}"#, "bad_node_id"),
        (r#"{"loss": 1.5}"#, "bad_loss"),
        (r#"{"loss": -0.1}"#, "bad_loss"),
        (r#"{"delay_ms": 3600000}"#, "bad_delay"),
        (r#"{"delay_ms": -1}"#, "bad_json"),
    ] {
        let bad = c
            .put(on.url("/v1/admin/faults"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(bad).await,
            (StatusCode::BAD_REQUEST, code.into()),
            "{body}"
        );
    }
    let r: Value = c
        .delete(on.url("/v1/admin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"drop": [], "loss": 0.0, "delay_ms": 0}));
    on.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_a_clean_restart_and_leave_stops_the_server() {
    let server = start(|_| {}).await;
    let c = Client::new();
    c.put(server.url("/v1/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    c.put(server.url("/v1/sets/s/e")).send().await.unwrap();
    let digest: Value = c
        .get(server.url("/v1/cluster/digest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .post(server.url("/v1/cluster/leave"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Leave stops the server by itself: the task ends without a stop signal.
    let dir = {
        let TestServerParts { dir, task } = server.into_parts();
        tokio::time::timeout(std::time::Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        dir
    };
    let again = common::start_in(dir, |_| {}).await;
    assert_eq!(
        c.get(again.url("/v1/kv/k"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "v"
    );
    let d2: Value = c
        .get(again.url("/v1/cluster/digest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d2["root"], digest["root"]);
    again.stop().await;
}

/// The live keys of the server, to show a refused request stored nothing.
async fn live_keys(c: &Client, server: &common::TestServer) -> Value {
    c.get(server.url("/v1/kv"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["keys"]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_bodies_must_be_objects_not_arrays() {
    let server = start(|c| c.fault_injection = true).await;
    let c = Client::new();
    // serde reads a struct from a sequence of its fields: an array must not pass for an object.
    let bodies = [
        r#"[["x","y"],["y"]]"#,
        r#"[["x"]]"#,
        "[]",
        "\"add\"",
        "null",
    ];
    expect_bad_json(&c, reqwest::Method::POST, server.url("/v1/sets/s"), &bodies).await;
    let resp = c.get(server.url("/v1/sets/s")).send().await.unwrap();
    assert_eq!(error_code(resp).await.0, StatusCode::NOT_FOUND);
    let bodies = [r#"[["n2"]]"#, "[]"];
    expect_bad_json(
        &c,
        reqwest::Method::PUT,
        server.url("/v1/admin/faults"),
        &bodies,
    )
    .await;
    let faults: Value = c
        .get(server.url("/v1/admin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults, json!({"drop": [], "loss": 0.0, "delay_ms": 0}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_percent_escapes_are_refused_not_stored_literally() {
    let server = start(|_| {}).await;
    let c = Client::new();
    for path in [
        "/v1/kv/%",
        "/v1/kv/a%ZZ",
        "/v1/kv/a%2",
        "/v1/kv/ok/%g0",
        "/v1/sets/a%/x",
        "/v1/sets/a/x%",
    ] {
        for req in [c.put(server.url(path)).body("v"), c.get(server.url(path))] {
            let resp = req.send().await.unwrap();
            assert_eq!(
                error_code(resp).await,
                (StatusCode::BAD_REQUEST, "bad_path".into()),
                "{path}"
            );
        }
    }
    let resp = c.get(server.url("/v1/kv?prefix=%ZZ")).send().await.unwrap();
    assert_eq!(
        error_code(resp).await,
        (StatusCode::BAD_REQUEST, "bad_query".into())
    );
    assert_eq!(live_keys(&c, &server).await, json!([]));
    let resp = c.get(server.url("/v1/sets/a%25")).send().await.unwrap();
    assert_eq!(error_code(resp).await.0, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_keys_and_elements_are_400_empty_name() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let cases = [
        c.put(server.url("/v1/sets/x/")),
        c.delete(server.url("/v1/sets/x/")),
        c.put(server.url("/v1/sets//e")),
        c.get(server.url("/v1/sets/")),
        c.post(server.url("/v1/sets/")).body("{}"),
        c.put(server.url("/v1/kv/")).body("v"),
        c.get(server.url("/v1/kv/")),
    ];
    for req in cases {
        let resp = req.send().await.unwrap();
        let url = resp.url().to_string();
        assert_eq!(
            error_code(resp).await,
            (StatusCode::BAD_REQUEST, "empty_name".into()),
            "{url}"
        );
    }
    let resp = c.get(server.url("/v1/sets/x")).send().await.unwrap();
    assert_eq!(error_code(resp).await.0, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn encoded_bodies_are_refused_not_stored_as_values() {
    use common::raw_http;
    let server = start(|_| {}).await;
    let c = Client::new();
    let within = std::time::Duration::from_secs(10);
    // A transfer coding other than chunked: the body would reach the handler still gzipped.
    let mut stream = raw_http::connect(&server.base).await;
    let request = b"PUT /v1/kv/te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let resp = raw_http::exchange(&mut stream, request, within).await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (415, "unsupported_encoding"),
        "{resp:?}"
    );
    let mut stream = raw_http::connect(&server.base).await;
    let request = b"POST /v1/sets/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: deflate, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let resp = raw_http::exchange(&mut stream, request, within).await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (415, "unsupported_encoding")
    );
    // A content coding: the server does not decode it, so it must not store it as the value.
    for coding in ["gzip", "br", "identity, gzip"] {
        let resp = c
            .put(server.url("/v1/kv/ce"))
            .header("content-encoding", coding)
            .body(vec![0x1f, 0x8b, 8, 0])
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(resp).await,
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding".into()
            ),
            "{coding}"
        );
    }
    let resp = c
        .post(server.url("/v1/sets/s"))
        .header("content-encoding", "gzip")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(live_keys(&c, &server).await, json!([]));
    // Identity is no coding at all; plain chunked bodies are decoded by the server.
    let resp = c
        .put(server.url("/v1/kv/plain"))
        .header("content-encoding", "identity")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = raw_http::connect(&server.base).await;
    let request = b"PUT /v1/kv/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(
        raw_http::exchange(&mut stream, request, within)
            .await
            .status,
        200
    );
    let value = c.get(server.url("/v1/kv/chunked")).send().await.unwrap();
    assert_eq!(value.text().await.unwrap(), "hello");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_query_parameters_are_400_bad_query_on_every_route() {
    let server = start(|c| c.fault_injection = true).await;
    let c = Client::new();
    let q = "?bogus=1";
    let cases = [
        c.get(server.url(&format!("/v1/kv/k{q}"))),
        c.put(server.url(&format!("/v1/kv/k{q}"))).body("v"),
        c.delete(server.url(&format!("/v1/kv/k{q}"))),
        c.get(server.url(&format!("/v1/kv{q}"))),
        c.get(server.url(&format!("/v1/sets/s{q}"))),
        c.post(server.url(&format!("/v1/sets/s{q}")))
            .body(r#"{"add": ["e"]}"#),
        c.put(server.url(&format!("/v1/sets/s/e{q}"))),
        c.delete(server.url(&format!("/v1/sets/s/e{q}"))),
        c.get(server.url(&format!("/v1/cluster/members{q}"))),
        c.get(server.url(&format!("/v1/cluster/digest{q}"))),
        c.post(server.url(&format!("/v1/cluster/leave{q}"))),
        c.get(server.url(&format!("/v1/health{q}"))),
        c.get(server.url(&format!("/metrics{q}"))),
        c.get(server.url(&format!("/v1/admin/faults{q}"))),
        c.put(server.url(&format!("/v1/admin/faults{q}")))
            .body(r#"{"drop": ["n2"]}"#),
        c.delete(server.url(&format!("/v1/admin/faults{q}"))),
        c.get(server.url("/v1/kv/k?prefix=a")),
        c.put(server.url("/v1/kv/k?limit=1")).body("v"),
    ];
    for req in cases {
        let resp = req.send().await.unwrap();
        let url = resp.url().to_string();
        assert_eq!(
            error_code(resp).await,
            (StatusCode::BAD_REQUEST, "bad_query".into()),
            "{url}"
        );
    }
    // Nothing was written, and the refused leave did not stop the node.
    assert_eq!(live_keys(&c, &server).await, json!([]));
    let resp = c.get(server.url("/v1/sets/s")).send().await.unwrap();
    assert_eq!(error_code(resp).await.0, StatusCode::NOT_FOUND);
    let faults: Value = c
        .get(server.url("/v1/admin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults, json!({"drop": [], "loss": 0.0, "delay_ms": 0}));
    // Known parameters, and an empty query, still work.
    for path in ["/v1/kv?prefix=a&limit=5&after=a", "/v1/kv?", "/v1/health?"] {
        let resp = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    server.stop().await;
}
