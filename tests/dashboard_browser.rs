//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! against a real 3-node cluster. The page loads with no console error and shows three members
//! alive; clicking "cut" on n3 shows it suspect, then dead, within 10 s; a PUT made on another
//! node appears in the change feed within 1 s; clicking "heal" brings back "converged". It saves
//! a screenshot of each state under the target directory (`dashboard-screenshots/`).
//!
//! With `--api-token-file`, the page asks for the token, and once given, shows the cluster.
//!
//! It needs `chromium` and `chromium-driver` (Debian's packages, which `.ci/run` installs).
//! Elsewhere it prints why it is skipped; with `HEARSAY_REQUIRE_BROWSER=1` (set by `.ci/run`) it
//! fails instead.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{eventually, Proc};
use reqwest::Client;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session; both end when dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: Client,
}

impl Browser {
    async fn start() -> Option<Browser> {
        let missing = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .find(|path| !std::path::Path::new(path).exists());
        if let Some(path) = missing {
            if std::env::var_os("HEARSAY_REQUIRE_BROWSER").is_some() {
                panic!("HEARSAY_REQUIRE_BROWSER is set but {path} is missing");
            }
            eprintln!("SKIPPED browser test: {path} is missing (apt-get install chromium chromium-driver)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = Client::new();
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
        };
        let status = format!("{}/status", browser.base);
        eventually("chromedriver ready", Duration::from_secs(30), || async {
            let s: Value = browser
                .http
                .get(&status)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (s["value"]["ready"] == true).then_some(())
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--window-size=1280,1000"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let created = browser.post("/session", capabilities).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        Some(browser)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let reply: Value = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["value"].clone()
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        self.post(&format!("/session/{}{path}", self.session), body)
            .await
    }

    async fn open(&self, url: &str) {
        self.command("/url", json!({ "url": url })).await;
    }

    async fn script(&self, script: &str) -> Value {
        self.command("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// The WebDriver id of the element `css` selects.
    async fn find(&self, css: &str) -> String {
        let found = self
            .command("/element", json!({ "using": "css selector", "value": css }))
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no {css}: {found}"))
            .to_string()
    }

    /// Clicks the element `css` selects, as a user would.
    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command(&format!("/element/{id}/click"), json!({}))
            .await;
    }

    /// Types `text` into the element `css` selects.
    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    /// The member rows' states, by id.
    async fn states(&self) -> Vec<(String, String)> {
        let rows = self
            .script("return [...document.querySelectorAll('#members tbody tr')].map(r => [r.dataset.member, r.dataset.state]);")
            .await;
        rows.as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        (
                            r[0].as_str().unwrap_or("").into(),
                            r[1].as_str().unwrap_or("").into(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn state_of(&self, id: &str) -> Option<String> {
        self.states()
            .await
            .into_iter()
            .find(|(m, _)| m == id)
            .map(|(_, s)| s)
    }

    /// Console messages at level SEVERE so far.
    async fn console_errors(&self) -> Vec<String> {
        let log = self.command("/se/log", json!({ "type": "browser" })).await;
        log.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn screenshot(&self, name: &str) {
        let url = format!("{}/session/{}/screenshot", self.base, self.session);
        let reply: Value = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let png = base64_decode(reply["value"].as_str().unwrap_or(""));
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_partition_happen_and_heal() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let n1 = Proc::serve(&["--node-id", "n1", "--fault-injection"]);
    let join =
        |id: &str| Proc::serve(&["--node-id", id, "--fault-injection", "--seeds", &n1.gossip]);
    let (n2, _n3) = (join("n2"), join("n3"));
    browser.open(&n1.url("/ui")).await;
    let all_alive =
        |states: &[(String, String)]| states.len() == 3 && states.iter().all(|(_, s)| s == "alive");
    eventually(
        "three members alive in the page",
        Duration::from_secs(30),
        || async { all_alive(&browser.states().await).then_some(()) },
    )
    .await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    // The time series fill in, one point a second.
    eventually("time series drawn", Duration::from_secs(10), || async {
        let points = browser
            .script("return [...document.querySelectorAll('svg.spark polyline')].map(p => p.getAttribute('points').split(' ').length);")
            .await;
        let counts: Vec<u64> = points.as_array()?.iter().filter_map(Value::as_u64).collect();
        (counts.len() == 4 && counts.iter().all(|n| *n >= 2)).then_some(())
    })
    .await;
    browser.screenshot("1-alive.png").await;

    // Cut n3 off: the page shows it suspect, then dead, within 10 s.
    browser
        .click("button[data-action='cut'][data-member='n3']")
        .await;
    let clicked = Instant::now();
    let mut seen = Vec::new();
    while clicked.elapsed() < Duration::from_secs(10) {
        if let Some(state) = browser.state_of("n3").await {
            if seen.last() != Some(&state) {
                if state == "suspect" {
                    browser.screenshot("2-suspect.png").await;
                }
                seen.push(state.clone());
            }
            if state == "dead" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.contains(&"suspect".to_string()) && seen.last().map(String::as_str) == Some("dead"),
        "n3 went through {seen:?} in {:?}",
        clicked.elapsed()
    );
    browser.screenshot("3-dead.png").await;

    // A PUT on n2 appears in n1's change feed within 1 s.
    let c = Client::new();
    let put = c
        .put(n2.url("/v1/kv/from-curl"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let put_at = Instant::now();
    let mut arrived = false;
    while put_at.elapsed() < Duration::from_secs(1) {
        let row = browser
            .script("return document.querySelector(\"#feed tr[data-key='from-curl']\") !== null;")
            .await;
        if row == true {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        arrived,
        "the PUT did not appear in the change feed within 1 s"
    );
    let row = browser
        .script("return [...document.querySelectorAll(\"#feed tr[data-key='from-curl'] td\")].map(td => td.textContent);")
        .await;
    assert_eq!(row[1], "n2", "{row}");
    assert!(
        row[2].as_str().is_some_and(|lag| lag.ends_with(" ms")),
        "{row}"
    );

    // Heal: the page says converged again.
    browser
        .click("button[data-action='heal'][data-member='n3']")
        .await;
    eventually("converged in the page", Duration::from_secs(30), || async {
        let badge = browser
            .script("return document.getElementById('converged').textContent;")
            .await;
        let states = browser.states().await;
        (badge == "converged" && all_alive(&states)).then_some(())
    })
    .await;
    browser.screenshot("4-converged.png").await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.command("", json!({})).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_api_token_the_page_asks_for_it_and_then_shows_the_cluster() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "page-token-0123456789\n").unwrap();
    let n1 = Proc::serve(&[
        "--node-id",
        "n1",
        "--api-token-file",
        common::path_str(&token_file),
    ]);
    browser.open(&n1.url("/ui")).await;
    eventually("the token prompt", Duration::from_secs(10), || async {
        let hidden = browser
            .script("return document.getElementById('token-form').hidden;")
            .await;
        (hidden == false).then_some(())
    })
    .await;
    assert!(
        browser.states().await.is_empty(),
        "nothing shown without the token"
    );
    browser.type_into("#token", "page-token-0123456789").await;
    browser.click("#token-form button").await;
    eventually(
        "the cluster once the token is given",
        Duration::from_secs(10),
        || async {
            let states = browser.states().await;
            (states == [("n1".to_string(), "alive".to_string())]).then_some(())
        },
    )
    .await;
    let hidden = browser
        .script("return document.getElementById('token-form').hidden;")
        .await;
    assert_eq!(hidden, true);
    // Kept for the session: a reload needs no prompt.
    browser.open(&n1.url("/ui")).await;
    eventually(
        "the cluster after a reload",
        Duration::from_secs(10),
        || async { (browser.states().await.len() == 1).then_some(()) },
    )
    .await;
    let hidden = browser
        .script("return document.getElementById('token-form').hidden;")
        .await;
    assert_eq!(hidden, true);
}
