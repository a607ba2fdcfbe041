//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver; see
//! `browser/`) against real clusters.
//!
//! - 3 nodes: the page loads with no console error and shows three members alive; clicking
//!   "cut" on n3 shows it suspect, then dead, within 10 s; a PUT made on another node appears in
//!   the change feed within 1 s; clicking "heal" brings back "converged". It saves a screenshot
//!   of each state under the target directory (`dashboard-screenshots/`).
//! - With `--api-token-file`, the page asks for the token, and once given, shows the cluster,
//!   and keeps the token when it opens the page of another member.
//! - The key browser shows a value with its ETag, expiry and conflict history, and a set; the
//!   loss slider sets the node's loss; a cut made elsewhere shows as one after a reload, and its
//!   "heal" button lifts it.
//! - 40 nodes: every member in the ring and the table, nothing overlapping, no horizontal
//!   scrolling, rows updated in place; a cut member is named in the ring. It prints how long the
//!   page took to show them and how long its polls and scripts took.
//!
//! Without chromium and chromium-driver each test prints why it is skipped; with
//! `HEARSAY_REQUIRE_BROWSER=1` (set by `.ci/run`) it fails instead.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod browser;
mod common;

use browser::Browser;
use common::{eventually, Proc};
use reqwest::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

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
    // Each member's own health, as the node serving the page gathered it.
    eventually("every member's health", Duration::from_secs(10), || async {
        let health = browser
            .script("return [...document.querySelectorAll('#members tbody tr')].map(r => r.cells[7].textContent);")
            .await;
        (health == json!(["ok", "ok", "ok"])).then_some(())
    })
    .await;
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
    // n3 dead, and the PUT in the feed (the README's screenshot).
    browser.screenshot("3-dead.png").await;

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
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_api_token_the_page_asks_for_it_and_keeps_it_for_the_session_on_every_member() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "page-token-0123456789\n").unwrap();
    let token = common::path_str(&token_file);
    let n1 = Proc::serve(&["--node-id", "n1", "--api-token-file", token]);
    let n2 = Proc::serve(&[
        "--node-id",
        "n2",
        "--api-token-file",
        token,
        "--seeds",
        &n1.gossip,
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
    let both_alive = |states: Vec<(String, String)>| {
        states == [("n1".into(), "alive".into()), ("n2".into(), "alive".into())]
    };
    eventually(
        "the cluster once the token is given",
        Duration::from_secs(30),
        || async { both_alive(browser.states().await).then_some(()) },
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
        || async { (browser.states().await.len() == 2).then_some(()) },
    )
    .await;
    let hidden = browser
        .script("return document.getElementById('token-form').hidden;")
        .await;
    assert_eq!(hidden, true);
    // Seen from n2 (another origin, another session store): no prompt there either, and the
    // token does not stay in the address.
    browser
        .click(&format!("#view-from option[value='{}']", n2.url("/ui")))
        .await;
    eventually(
        "n2's page, with the cluster",
        Duration::from_secs(10),
        || async {
            let at = browser
                .script("return [location.href, document.getElementById('node').textContent];")
                .await;
            let shown = both_alive(browser.states().await);
            (at == json!([n2.url("/ui"), "n2"]) && shown).then_some(())
        },
    )
    .await;
    let hidden = browser
        .script("return document.getElementById('token-form').hidden;")
        .await;
    assert_eq!(hidden, true, "n2's page asked for the token again");
}

/// The text of the element `css` selects (`null` when there is none).
async fn text_of(browser: &Browser, css: &str) -> Value {
    let script = format!("const e = document.querySelector({css:?}); return e && e.textContent;");
    browser.script(&script).await
}

async fn faults_of(c: &Client, node: &Proc) -> Value {
    common::get_json(c, node.url("/v1/admin/faults"))
        .await
        .expect("the node's faults")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_browser_shows_values_and_sets_and_the_fault_controls_follow_the_cluster() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let n1 = Proc::serve(&["--node-id", "n1", "--fault-injection"]);
    let n2 = Proc::serve(&[
        "--node-id",
        "n2",
        "--fault-injection",
        "--seeds",
        &n1.gossip,
    ]);
    let c = Client::new();
    let put = |node: &Proc, path: &str, body: &'static str| {
        let request = c.put(node.url(path)).body(body);
        async move {
            let resp = request.send().await.unwrap();
            assert!(resp.status().is_success(), "{resp:?}");
        }
    };
    // Each knows the other (the cut below reaches only the members n2 knows).
    for (observer, id) in [(&n1, "n2"), (&n2, "n1")] {
        eventually("both alive", Duration::from_secs(30), || async {
            let state = common::member_state(&c, observer, id).await?.0;
            (state == "alive").then_some(())
        })
        .await;
    }
    // A cut made with curl through n2, during which both sides write app/color: n2 last.
    let cut = c
        .put(n2.url("/v1/admin/isolation"))
        .body(r#"{"members": ["n2"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(cut.status(), 200);
    put(&n1, "/v1/kv/app/color", "red").await;
    put(&n2, "/v1/kv/app/color", "blue").await;
    put(&n1, "/v1/kv/app/motd?ttl=300", "hello").await;
    put(&n1, "/v1/sets/team/alice", "").await;

    // A page opened now shows the cut: n2's button heals, and clicking it lifts every fault.
    browser.open(&n1.url("/ui")).await;
    eventually("n2's heal button", Duration::from_secs(10), || async {
        let action = browser
            .script("const b = document.querySelector(\"button[data-member='n2']\"); return b && !b.hidden && b.dataset.action;")
            .await;
        (action == "heal").then_some(())
    })
    .await;
    assert_eq!(
        text_of(&browser, "button[data-member='n1']").await,
        "cut",
        "n1 is on the side not cut off"
    );
    browser.click("button[data-member='n2']").await;
    for node in [&n1, &n2] {
        eventually("no fault left", Duration::from_secs(10), || async {
            (faults_of(&c, node).await["drop"] == json!([])).then_some(())
        })
        .await;
    }
    common::converged(&c, &[&n1, &n2], Duration::from_secs(30)).await;

    // The loss slider sets this node's loss (keys, as a user without a mouse would).
    browser.type_into("#loss", "\u{E014}\u{E014}").await; // ArrowRight twice: 0.1
    eventually("the loss set", Duration::from_secs(10), || async {
        let loss = faults_of(&c, &n1).await["loss"].as_f64()?;
        ((loss - 0.1).abs() < 1e-9).then_some(())
    })
    .await;
    assert_eq!(text_of(&browser, "#loss-value").await, "0.1");
    assert_eq!(faults_of(&c, &n2).await["loss"], 0.0, "only this node's");

    // The key browser: list by prefix, then a value with its ETag, expiry and history.
    browser.type_into("#prefix", "app/").await;
    browser.click("#key-search button").await;
    eventually("the keys listed", Duration::from_secs(10), || async {
        let keys = browser
            .script(
                "return [...document.querySelectorAll('#keys button')].map(b => b.textContent);",
            )
            .await;
        (keys == json!(["app/color", "app/motd"])).then_some(())
    })
    .await;
    let motd = c.get(n1.url("/v1/kv/app/motd")).send().await.unwrap();
    let etag = motd.headers()["etag"].to_str().unwrap().to_string();
    browser.click("#keys button[data-key='app/motd']").await;
    let detail = eventually("the value shown", Duration::from_secs(10), || async {
        let detail = text_of(&browser, "#key-detail").await;
        let detail = detail.as_str()?.to_string();
        detail.contains("hello").then_some(detail)
    })
    .await;
    assert!(detail.contains(&format!("ETag: {etag}")), "{detail}");
    let expires_in = detail
        .split("(in ")
        .nth(1)
        .and_then(|rest| rest.split(" s)").next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        expires_in.is_some_and(|s| (250..=300).contains(&s)),
        "{detail}"
    );
    // Whichever write won (the later timestamp), the other one is its conflict.
    let color = c.get(n1.url("/v1/kv/app/color")).send().await.unwrap();
    let winner = color.headers()["x-hearsay-node"]
        .to_str()
        .unwrap()
        .to_string();
    let (value, loser) = match winner.as_str() {
        "n2" => ("blue", "n1"),
        _ => ("red", "n2"),
    };
    browser.click("#keys button[data-key='app/color']").await;
    let detail = eventually("the conflict shown", Duration::from_secs(10), || async {
        let detail = text_of(&browser, "#key-detail").await;
        let detail = detail.as_str()?.to_string();
        detail.contains("overwritten: ").then_some(detail)
    })
    .await;
    assert!(
        detail.contains(value) && detail.contains("Expires: never"),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("held: {winner} at"))
            && detail.contains(&format!("overwritten: {loser} at")),
        "{detail}"
    );

    // Sets are browsed the same way.
    browser
        .script("const s = document.getElementById('keyspace'); s.value = 'sets'; return null;")
        .await;
    browser.click("#key-search button").await; // the prefix app/ matches no set
    eventually("no set listed", Duration::from_secs(10), || async {
        let more = text_of(&browser, "#keys-more").await;
        (more == "no key starts with this prefix").then_some(())
    })
    .await;
    browser
        .script("document.getElementById('prefix').value = 'te'; return null;")
        .await;
    browser.click("#key-search button").await;
    eventually("the set listed", Duration::from_secs(10), || async {
        let found = browser
            .script("return document.querySelector(\"#keys button[data-key='team']\") !== null;")
            .await;
        (found == true).then_some(())
    })
    .await;
    browser.click("#keys button[data-key='team']").await;
    eventually("the set shown", Duration::from_secs(10), || async {
        let detail = text_of(&browser, "#key-detail").await;
        detail.as_str()?.contains("alice").then_some(())
    })
    .await;
    // A write from the page, then a delete: the node holds, then refuses, the value.
    browser.type_into("#write-key", "from/page").await;
    browser.type_into("#write-value", "clicked").await;
    browser.click("#key-write button[data-action='put']").await;
    eventually("the page's write", Duration::from_secs(10), || async {
        let written = common::get_text(&c, n1.url("/v1/kv/from/page")).await?;
        (written == "clicked").then_some(())
    })
    .await;
    let said = text_of(&browser, "#write-result").await;
    assert!(
        said.as_str().is_some_and(|s| s.starts_with("written at ")),
        "{said}"
    );
    browser
        .click("#key-write button[data-action='delete']")
        .await;
    eventually("the page's delete", Duration::from_secs(10), || async {
        let status = c
            .get(n1.url("/v1/kv/from/page"))
            .send()
            .await
            .ok()?
            .status();
        (status == 404).then_some(())
    })
    .await;
    browser.screenshot("5-key-browser.png").await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

/// The numbers of `entries` (milliseconds) at the middle and the top.
fn p50_max(mut entries: Vec<f64>) -> (f64, f64) {
    entries.sort_by(f64::total_cmp);
    let p50 = entries.get(entries.len() / 2).copied().unwrap_or(0.0);
    (p50, entries.last().copied().unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread")]
async fn at_forty_members_the_page_stays_readable_and_responsive() {
    const MEMBERS: usize = 40;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let quiet = ["--fault-injection", "--durability", "none"];
    let n1 = Proc::serve(&[&["--node-id", "n1"][..], &quiet].concat());
    let mut nodes = vec![n1];
    for i in 2..=MEMBERS {
        let id = format!("n{i}");
        let seed = nodes[0].gossip.clone();
        nodes.push(Proc::serve(
            &[&["--node-id", &id, "--seeds", &seed][..], &quiet].concat(),
        ));
    }
    let opened = Instant::now();
    browser.open(&nodes[0].url("/ui")).await;
    // Long tasks (over 50 ms) on the page's main thread, from here on.
    browser
        .script("window.longTasks = []; new PerformanceObserver((l) => window.longTasks.push(...l.getEntries().map((e) => e.duration))).observe({ type: 'longtask', buffered: true }); performance.setResourceTimingBufferSize(100000); return null;")
        .await;
    let all_alive = |states: &[(String, String)]| {
        states.len() == MEMBERS && states.iter().all(|(_, s)| s == "alive")
    };
    eventually(
        "forty members alive in the page",
        Duration::from_secs(60),
        || async { all_alive(&browser.states().await).then_some(()) },
    )
    .await;
    let shown_after = opened.elapsed();
    // In id order (n2 before n10), one dot each, named only in the count while all are alive.
    let ids: Vec<String> = browser
        .states()
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let expected: Vec<String> = (1..=MEMBERS).map(|i| format!("n{i}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(
        text_of(&browser, "#member-summary").await,
        "40 members: 40 alive"
    );
    assert_eq!(text_of(&browser, ".ring-count").await, "40/40 alive");
    let layout = browser
        .script(
            "const dots = [...document.querySelectorAll('#ring circle')].map(c => [+c.getAttribute('cx'), +c.getAttribute('cy'), +c.getAttribute('r')]);
             const scroll = document.querySelector('#members-section .scroll');
             return { dots, labels: document.querySelectorAll('#ring text[data-member]').length,
               overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
               table_overflow: scroll.scrollWidth - scroll.clientWidth,
               box: scroll.getBoundingClientRect().height, viewport: window.innerHeight };",
        )
        .await;
    let dots = layout["dots"].as_array().unwrap();
    assert_eq!(dots.len(), MEMBERS, "{layout}");
    let dot = |i: usize| -> (f64, f64, f64) {
        let d = &dots[i];
        (
            d[0].as_f64().unwrap(),
            d[1].as_f64().unwrap(),
            d[2].as_f64().unwrap(),
        )
    };
    for i in 0..MEMBERS {
        let ((x1, y1, r1), (x2, y2, r2)) = (dot(i), dot((i + 1) % MEMBERS));
        let gap = ((x1 - x2).powi(2) + (y1 - y2).powi(2)).sqrt() - r1 - r2;
        assert!(
            gap > 0.0,
            "dots {i} and {} touch: {layout}",
            (i + 1) % MEMBERS
        );
    }
    assert_eq!(layout["labels"], 0, "{layout}");
    assert_eq!(layout["overflow"], 0, "the page scrolls sideways: {layout}");
    assert_eq!(
        layout["table_overflow"], 0,
        "the member table scrolls sideways: {layout}"
    );
    assert!(
        layout["box"].as_f64() < layout["viewport"].as_f64(),
        "the member table scrolls in a box shorter than the window: {layout}"
    );
    // Rows are updated in place: a row element seen now is the same one a few polls later.
    browser
        .script(
            "document.querySelector(\"#members tr[data-member='n7']\").marked = true; return null;",
        )
        .await;
    let polled = browser
        .script("return performance.getEntriesByName(new URL('/v1/cluster/status', location).href).length;")
        .await
        .as_u64()
        .unwrap();
    eventually("three more polls", Duration::from_secs(10), || async {
        let now = browser
            .script("return performance.getEntriesByName(new URL('/v1/cluster/status', location).href).length;")
            .await
            .as_u64()?;
        (now >= polled + 3).then_some(())
    })
    .await;
    let kept = browser
        .script("return document.querySelector(\"#members tr[data-member='n7']\").marked === true;")
        .await;
    assert_eq!(kept, true, "the row was replaced");
    browser.screenshot("6-forty-members.png").await;

    // Cut n40: the page shows it dead and names it in the ring, clear of every other label.
    browser
        .click("button[data-action='cut'][data-member='n40']")
        .await;
    let clicked = Instant::now();
    eventually("n40 dead in the page", Duration::from_secs(60), || async {
        (browser.state_of("n40").await? == "dead").then_some(())
    })
    .await;
    let dead_after = clicked.elapsed();
    let labels = browser
        .script("return [...document.querySelectorAll('#ring text')].map(t => { const b = t.getBBox(); return [t.textContent, b.x, b.y, b.width, b.height]; });")
        .await;
    let labels = labels.as_array().unwrap();
    let names: Vec<&str> = labels.iter().filter_map(|l| l[0].as_str()).collect();
    assert!(names.contains(&"n40"), "{labels:?}");
    for (i, a) in labels.iter().enumerate() {
        for b in &labels[i + 1..] {
            let r = |l: &Value, k: usize| l[k].as_f64().unwrap();
            let apart = r(a, 1) + r(a, 3) <= r(b, 1)
                || r(b, 1) + r(b, 3) <= r(a, 1)
                || r(a, 2) + r(a, 4) <= r(b, 2)
                || r(b, 2) + r(b, 4) <= r(a, 2);
            assert!(apart, "labels overlap: {a} {b}");
        }
    }
    browser.screenshot("7-forty-members-one-cut.png").await;
    browser
        .click("button[data-action='heal'][data-member='n40']")
        .await;
    let healed = Instant::now();
    eventually("converged in the page", Duration::from_secs(90), || async {
        let badge = text_of(&browser, "#converged").await;
        (badge == "converged" && all_alive(&browser.states().await)).then_some(())
    })
    .await;
    let converged_after = healed.elapsed();

    // Figures: how long the page's polls took, and its longest scripts.
    let timings = browser
        .script("const of = (path) => performance.getEntriesByName(new URL(path, location).href).map(e => e.duration);
                 return { status: of('/v1/cluster/status'), members: of('/v1/cluster/members'), long: window.longTasks };")
        .await;
    let durations = |name: &str| -> Vec<f64> {
        timings[name]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (status_p50, status_max) = p50_max(durations("status"));
    let (members_p50, members_max) = p50_max(durations("members"));
    let long = durations("long");
    eprintln!(
        "dashboard at {MEMBERS} members: shown all alive {shown_after:?} after opening; n40 dead in the page {dead_after:?} after the click; converged in the page {converged_after:?} after heal; \
         status poll p50 {status_p50:.0} ms, max {status_max:.0} ms ({} polls); members poll p50 {members_p50:.0} ms, max {members_max:.0} ms; \
         {} main-thread tasks over 50 ms, longest {:.0} ms",
        durations("status").len(),
        long.len(),
        long.iter().copied().fold(0.0, f64::max)
    );
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
}
