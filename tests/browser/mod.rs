//! A headless Chromium driven over WebDriver (chromedriver), for the dashboard's tests: open a
//! page, find and click elements, type, run a script, read the console, save a screenshot.
//!
//! It needs `chromium` and `chromium-driver` (Debian's packages, which `.ci/run` installs).
//! Without them [`Browser::start`] prints why the test is skipped and gives `None`; with
//! `HEARSAY_REQUIRE_BROWSER=1` (set by `.ci/run`) it panics instead.
#![allow(dead_code)] // a driver: not every test uses all of it

use crate::common::eventually;
use reqwest::Client;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session; both end when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: Client,
}

impl Browser {
    pub async fn start() -> Option<Browser> {
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
        // In a process group of its own, with the browser it starts: dropping the Browser ends
        // them all.
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
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
                         "--disable-crash-reporter", "--disable-breakpad",
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

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        value_of(self.http.post(url).json(&body)).await
    }

    pub async fn command(&self, path: &str, body: Value) -> Value {
        self.post(&format!("/session/{}{path}", self.session), body)
            .await
    }

    pub async fn open(&self, url: &str) {
        self.command("/url", json!({ "url": url })).await;
    }

    pub async fn script(&self, script: &str) -> Value {
        self.command("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// The WebDriver id of the element `css` selects.
    pub async fn find(&self, css: &str) -> String {
        let found = self
            .command("/element", json!({ "using": "css selector", "value": css }))
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no {css}: {found}"))
            .to_string()
    }

    /// Clicks the element `css` selects, as a user would.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command(&format!("/element/{id}/click"), json!({}))
            .await;
    }

    /// Types `text` into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    /// The member rows' states, by id.
    pub async fn states(&self) -> Vec<(String, String)> {
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

    pub async fn state_of(&self, id: &str) -> Option<String> {
        self.states()
            .await
            .into_iter()
            .find(|(m, _)| m == id)
            .map(|(_, s)| s)
    }

    /// Console messages at level SEVERE so far.
    pub async fn console_errors(&self) -> Vec<String> {
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

    pub async fn screenshot(&self, name: &str) {
        let url = format!("{}/session/{}/screenshot", self.base, self.session);
        let png = base64_decode(value_of(self.http.get(url)).await.as_str().unwrap_or(""));
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

impl Drop for Browser {
    /// Ends the session (chromedriver quits the browser), then kills whatever is left of the
    /// process group: also after a failed test, which never reaches an await again.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = end_session(&self.base, &self.session);
        }
        // SAFETY: kill(2) on the process group this Browser started; no memory is touched.
        unsafe {
            libc::kill(-(self.driver.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// The `value` of chromedriver's answer to `request`.
async fn value_of(request: reqwest::RequestBuilder) -> Value {
    let reply: Value = request.send().await.unwrap().json().await.unwrap();
    reply["value"].clone()
}

/// `DELETE /session/{id}` over a plain socket (a drop cannot await), within a few seconds.
fn end_session(base: &str, session: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "DELETE /session/{session} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(())
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
