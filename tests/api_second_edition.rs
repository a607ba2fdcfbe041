//! The second edition of the HTTP API against a real server on a free port: conditional writes and
//! 304s, whole-set operations (listing, membership of one element, clearing), counters.

mod common;

use common::start;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn put(
    c: &Client,
    url: String,
    body: &str,
    condition: Option<(&str, &str)>,
) -> reqwest::Response {
    let mut request = c.put(url).body(body.to_string());
    if let Some((name, value)) = condition {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

/// A GET with `If-None-Match: tag`.
async fn get_unless(c: &Client, url: String, tag: &str) -> reqwest::Response {
    c.get(url)
        .header("if-none-match", tag)
        .send()
        .await
        .unwrap()
}

async fn etag_of(c: &Client, url: String) -> String {
    let resp = c.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["etag"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_writes_are_checked_against_this_nodes_value() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let url = || server.url("/v1/kv/config");

    // If-None-Match: * creates only when no live value exists.
    let resp = put(&c, url(), "v1", Some(("if-none-match", "*"))).await;
    assert_eq!(resp.status(), 200);
    let resp = put(&c, url(), "v1 again", Some(("if-none-match", "*"))).await;
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let current = etag_of(&c, url()).await;
    assert_eq!(resp.headers()["etag"], current.as_str());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "precondition_failed");
    assert_eq!(body["etag"], current.as_str());

    // If-Match: the write goes through only with the current ETag; a stale one is refused and
    // leaves the value as it was.
    let resp = put(&c, url(), "v2", Some(("if-match", current.as_str()))).await;
    assert_eq!(resp.status(), 200);
    let resp = put(
        &c,
        url(),
        "lost update",
        Some(("if-match", current.as_str())),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        c.get(url()).send().await.unwrap().text().await.unwrap(),
        "v2"
    );
    let latest = etag_of(&c, url()).await;
    assert_ne!(latest, current);
    let list = format!("\"0-n9\", {latest}");
    assert_eq!(
        put(&c, url(), "v3", Some(("if-match", list.as_str())))
            .await
            .status(),
        200
    );

    // DELETE takes If-Match too; once deleted, If-Match: * fails and If-None-Match: * creates.
    let stale = c
        .delete(url())
        .header("if-match", latest.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let latest = etag_of(&c, url()).await;
    let deleted = c
        .delete(url())
        .header("if-match", latest.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(c.get(url()).send().await.unwrap().status(), 404);
    let resp = put(&c, url(), "x", Some(("if-match", "*"))).await;
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["etag"], Value::Null);
    assert_eq!(
        put(&c, url(), "v4", Some(("if-none-match", "*")))
            .await
            .status(),
        200
    );

    // A tag not written as ETag gives it matches nothing: If-Match fails, If-None-Match holds.
    for odd in ["abc", "\"unterminated", ""] {
        let resp = put(&c, url(), "not written", Some(("if-match", odd))).await;
        assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED, "{odd:?}");
    }
    assert_eq!(
        c.get(url()).send().await.unwrap().text().await.unwrap(),
        "v4"
    );
    let resp = put(&c, url(), "v5", Some(("if-none-match", "abc"))).await;
    assert_eq!(resp.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_with_the_current_etag_is_304() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let url = || server.url("/v1/kv/page");
    put(&c, url(), "body", None).await;
    let etag = etag_of(&c, url()).await;
    let resp = get_unless(&c, url(), &etag).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"], etag.as_str());
    assert!(resp.bytes().await.unwrap().is_empty());
    let weak = format!("W/{etag}");
    let resp = get_unless(&c, url(), &weak).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    // Once the value changes, the old ETag gets the new value.
    put(&c, url(), "changed", None).await;
    let resp = get_unless(&c, url(), &etag).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "changed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edit_reply_gives_the_size_not_the_set() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let resp = c
        .post(server.url("/v1/sets/team"))
        .body(r#"{"add": ["a", "b", "c"]}"#)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["size"], json!(3));
    assert!(body.get("elements").is_none(), "{body}");
    let resp = c
        .delete(server.url("/v1/sets/team/b"))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["size"], json!(2));
    server.stop().await;
}

/// Sends a request; its status and JSON body.
async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    json_of(request.send().await.unwrap()).await
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn sets_are_listed_tested_for_one_element_and_cleared_whole() {
    let server = start(|_| {}).await;
    let c = Client::new();
    for (key, elements) in [
        ("team/a", r#"["x", "y"]"#),
        ("team/b", r#"["z"]"#),
        ("other", r#"["w"]"#),
    ] {
        let body = format!(r#"{{"add": {elements}}}"#);
        let resp = c
            .post(server.url(&format!("/v1/sets/{}", key.replace('/', "%2F"))))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{key}");
    }
    // A kv key of the same name is another keyspace.
    c.put(server.url("/v1/kv/team%2Fkv"))
        .body("v")
        .send()
        .await
        .unwrap();

    let (status, page) = call(c.get(server.url("/v1/sets?prefix=team/&limit=1"))).await;
    assert_eq!(status, 200);
    assert_eq!(page, json!({"keys": ["team/a"], "next": "team/a"}));
    let (_, page) = call(c.get(server.url("/v1/sets?prefix=team/&after=team/a"))).await;
    assert_eq!(page, json!({"keys": ["team/b"], "next": null}));
    let resp = c
        .get(server.url("/v1/sets?colour=blue"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(resp).await.1["code"], "bad_query");

    // Membership of one element.
    let (status, body) = call(c.get(server.url("/v1/sets/team%2Fa/x"))).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"key": "team/a", "element": "x", "present": true})
        )
    );
    let (status, body) = call(c.get(server.url("/v1/sets/team%2Fa/nope"))).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let (status, _) = call(c.get(server.url("/v1/sets/never/x"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // DELETE of the whole set removes every element; the set still exists, empty.
    let (status, body) = call(c.delete(server.url("/v1/sets/team%2Fa"))).await;
    assert_eq!((status, body["size"].clone()), (StatusCode::OK, json!(0)));
    let (status, body) = call(c.get(server.url("/v1/sets/team%2Fa"))).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"key": "team/a", "elements": []}))
    );
    let (_, body) = call(c.get(server.url("/v1/sets/team%2Fb"))).await;
    assert_eq!(body["elements"], json!(["z"]), "another set is untouched");

    // Removing from a set this node never saw is a 404 and creates nothing.
    for resp in [
        c.delete(server.url("/v1/sets/never")).send().await.unwrap(),
        c.delete(server.url("/v1/sets/never/x"))
            .send()
            .await
            .unwrap(),
        c.post(server.url("/v1/sets/never"))
            .body(r#"{"remove": ["x"]}"#)
            .send()
            .await
            .unwrap(),
    ] {
        let (status, body) = json_of(resp).await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::NOT_FOUND, json!("not_found"))
        );
    }
    // An empty batch is valid and changes nothing, set or no set.
    let (status, _) = call(c.post(server.url("/v1/sets/never")).body("{}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(c.get(server.url("/v1/sets/never"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_add_up_and_refuse_what_is_not_a_64_bit_add() {
    let server = start(|_| {}).await;
    let c = Client::new();
    let url = || server.url("/v1/counters/visits%2Ftoday");
    let (status, body) = call(c.get(url())).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let mut expected: i128 = 0;
    for add in [5i64, -2, i64::MAX, i64::MIN, 7] {
        expected += add as i128;
        let body = format!(r#"{{"add": {add}}}"#);
        let (status, reply) = call(c.post(url()).body(body)).await;
        assert_eq!(status, 200);
        // Exact, past 64 bits too.
        assert_eq!(reply["key"], "visits/today");
        assert_eq!(reply["value"].to_string(), expected.to_string());
    }
    let (_, body) = call(c.get(url())).await;
    assert_eq!(body, json!({"key": "visits/today", "value": 9}));
    // Another keyspace: a kv key or a set of the same name is another key.
    assert_eq!(
        c.get(server.url("/v1/kv/visits%2Ftoday"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    for bad in [
        r#"{"add": 1.5}"#,
        r#"{"add": 9223372036854775808}"#,
        r#"{"add": -9223372036854775809}"#,
        r#"{"add": 1e19}"#,
        r#"{"add": "1"}"#,
        r#"{}"#,
        r#"{"add": 1, "x": 2}"#,
        "[1]",
    ] {
        let (status, body) = call(c.post(url()).body(bad)).await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("bad_json")),
            "{bad}"
        );
    }
    let (_, body) = call(c.get(url())).await;
    assert_eq!(body["value"], 9, "refused adds left nothing behind");
    // JSON Schema counts 2.0 as an integer, and so does the API.
    let (status, body) = call(c.post(url()).body(r#"{"add": 2.0}"#)).await;
    assert_eq!((status, body["value"].clone()), (StatusCode::OK, json!(11)));
    // Exactly, even where the default float parser is one unit off in the last place.
    let (status, body) = call(c.post(url()).body(r#"{"add": -2251799813685247.0}"#)).await;
    assert_eq!(
        (status, body["value"].clone()),
        (StatusCode::OK, json!(11 - 2_251_799_813_685_247_i64))
    );
    // A total past 64 bits is answered exactly, with or without a consistency level.
    for (key, query) in [("low", ""), ("lower", "?w=1")] {
        let add = |n: &str| {
            c.post(server.url(&format!("/v1/counters/{key}{query}")))
                .body(format!(r#"{{"add": {n}}}"#))
        };
        let (status, _) = call(add("-9223372036854775808")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(add("-1")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body["value"].as_f64().is_some_and(|v| v < -9.2e18),
            "{body}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_api_token_every_request_but_health_and_metrics_needs_it() {
    const TOKEN: &str = "0123456789abcdef-token";
    let server = start(|config| config.api_token = Some(TOKEN.into())).await;
    let c = Client::new();
    let bearer = |request: reqwest::RequestBuilder, token: &str| {
        request.header("authorization", format!("Bearer {token}"))
    };
    // Without the token, or with another: 401, and nothing happens (leave does not stop it).
    for request in [
        c.put(server.url("/v1/kv/k")).body("v"),
        c.get(server.url("/v1/kv/k")),
        c.post(server.url("/v1/cluster/leave")),
        c.get(server.url("/v1/cluster/members")),
        bearer(
            c.put(server.url("/v1/kv/k")).body("v"),
            "0123456789abcdef-tokeN",
        ),
        c.get(server.url("/v1/kv/k")).header("authorization", TOKEN),
    ] {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let (status, body) = json_of(resp).await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::UNAUTHORIZED, json!("unauthorized"))
        );
    }
    // Health and metrics stay open, for probes and scrapers.
    assert_eq!(
        c.get(server.url("/v1/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(server.url("/metrics")).send().await.unwrap().status(),
        200
    );
    // With the token, the API answers as usual.
    let resp = bearer(c.put(server.url("/v1/kv/k")).body("v"), TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = bearer(c.get(server.url("/v1/kv/k")), TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "v");
    server.stop().await;
}
