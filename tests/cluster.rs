//! Multi-node behaviour with real processes on 127.0.0.1: replication, partitions and healing,
//! crashes and restarts, paused processes, hostile packets and mismatched cluster keys. Every
//! wait is a poll with a deadline, never a fixed sleep.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{converged, digest, eventually, get_json, get_text, member_state, path_str, Proc};
use reqwest::Client;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(30);

/// Waits until every node sees every other as alive.
async fn all_alive(c: &Client, nodes: &[(&str, &Proc)]) {
    for (_, observer) in nodes {
        for (id, _) in nodes {
            eventually(
                &format!("{id} alive at {}", observer.base),
                CONVERGE,
                || async { (member_state(c, observer, id).await?.0 == "alive").then_some(()) },
            )
            .await;
        }
    }
}

struct Trio {
    _dir: tempfile::TempDir,
    n1: Proc,
    n2: Proc,
    n3: Proc,
}

fn start_trio(extra: &[&str]) -> Trio {
    let dir = tempfile::tempdir().unwrap();
    let data = |id: &str| dir.path().join(id);
    let with = |mut args: Vec<String>| {
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let n1_args = with(vec![
        "--node-id".into(),
        "n1".into(),
        "--data".into(),
        path_str(&data("n1")).into(),
    ]);
    let n1 = Proc::serve(&n1_args.iter().map(String::as_str).collect::<Vec<_>>());
    let peer = |id: &str| {
        let args = with(vec![
            "--node-id".into(),
            id.into(),
            "--data".into(),
            path_str(&data(id)).into(),
            "--seeds".into(),
            n1.gossip.clone(),
        ]);
        Proc::serve(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let n2 = peer("n2");
    let n3 = peer("n3");
    Trio {
        _dir: dir,
        n1,
        n2,
        n3,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_find_each_other_and_replicate_writes() {
    let t = start_trio(&[]);
    let c = Client::new();
    all_alive(&c, &[("n1", &t.n1), ("n2", &t.n2), ("n3", &t.n3)]).await;
    c.put(t.n1.url("/v1/kv/greeting"))
        .body("hello")
        .send()
        .await
        .unwrap();
    c.put(t.n3.url("/v1/sets/team/alice")).send().await.unwrap();
    for node in [&t.n1, &t.n2, &t.n3] {
        eventually("the write replicated", CONVERGE, || async {
            (get_text(&c, node.url("/v1/kv/greeting")).await? == "hello").then_some(())
        })
        .await;
        eventually("the set add replicated", CONVERGE, || async {
            let set = get_json(&c, node.url("/v1/sets/team")).await?;
            (set["elements"] == serde_json::json!(["alice"])).then_some(())
        })
        .await;
    }
    converged(&c, &[&t.n1, &t.n2, &t.n3], CONVERGE).await;
    // Members learn each other's HTTP address.
    let members = get_json(&c, t.n1.url("/v1/cluster/members")).await.unwrap();
    let n2 = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "n2")
        .unwrap();
    assert_eq!(
        format!("http://{}", n2["http_addr"].as_str().unwrap()),
        t.n2.base
    );
    // The kv write came to n2 and n3 by rumor and was timed there; n1 made it (and the set add,
    // which carries no time, is not timed).
    for (node, timed) in [(&t.n1, false), (&t.n2, true), (&t.n3, true)] {
        let metrics = get_text(&c, node.url("/metrics")).await.unwrap();
        let value = |prefix: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        let count = value("hearsay_replication_lag_seconds_count").unwrap();
        let all = value("hearsay_replication_lag_seconds_bucket{le=\"+Inf\"}").unwrap();
        let sum = value("hearsay_replication_lag_seconds_sum").unwrap();
        assert_eq!(count > 0.0, timed, "{} timed {count} writes", node.base);
        assert_eq!(all, count, "every lag falls in some bucket");
        assert!(
            (0.0..30.0).contains(&sum),
            "lags of {sum} s at {}",
            node.base
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_grid_plan_writes_reach_every_node_by_rumor() {
    let t = start_trio(&["--push-plan", "grid"]);
    let c = Client::new();
    all_alive(&c, &[("n1", &t.n1), ("n2", &t.n2), ("n3", &t.n3)]).await;
    for (i, origin) in [&t.n1, &t.n2, &t.n3].into_iter().enumerate() {
        let r = c
            .put(origin.url(&format!("/v1/kv/grid/{i}")))
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for node in [&t.n1, &t.n2, &t.n3] {
        for i in 0..3 {
            eventually("the write replicated", CONVERGE, || async {
                get_text(&c, node.url(&format!("/v1/kv/grid/{i}"))).await
            })
            .await;
        }
        // The two made elsewhere came by rumor (timed), not only by anti-entropy.
        eventually("both rumors timed", CONVERGE, || async {
            let metrics = get_text(&c, node.url("/metrics")).await?;
            let timed = metrics
                .lines()
                .find(|l| l.starts_with("hearsay_replication_lag_seconds_count"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())?;
            (timed == 2.0).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tombstones_are_collected_once_every_node_has_seen_them() {
    let t = start_trio(&[
        "--tombstone-min-age-ms",
        "300",
        "--anti-entropy-interval-ms",
        "200",
    ]);
    let c = Client::new();
    let nodes = [&t.n1, &t.n2, &t.n3];
    all_alive(&c, &[("n1", &t.n1), ("n2", &t.n2), ("n3", &t.n3)]).await;
    for key in ["gone", "kept"] {
        let resp = c
            .put(t.n1.url(&format!("/v1/kv/{key}")))
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = c.delete(t.n2.url("/v1/kv/gone")).send().await.unwrap();
    assert!(resp.status().is_success());
    // The digest counts tombstones: one key left everywhere once "gone" is collected.
    for node in nodes {
        eventually("the tombstone collected", CONVERGE, || async {
            let d = get_json(&c, node.url("/v1/cluster/digest")).await?;
            (d["keys"] == 1).then_some(())
        })
        .await;
        let metrics = get_text(&c, node.url("/metrics")).await.unwrap();
        let collected = metrics
            .lines()
            .find(|l| l.starts_with("hearsay_tombstones_total{event=\"collected\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
        assert_eq!(collected, Some(1), "metrics of {}", node.base);
        assert_eq!(
            get_text(&c, node.url("/v1/kv/kept")).await.as_deref(),
            Some("v")
        );
        let resp = c.get(node.url("/v1/kv/gone")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
    }
    converged(&c, &nodes, CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_heals_by_itself_and_conflicts_resolve() {
    let t = start_trio(&["--fault-injection"]);
    let c = Client::new();
    all_alive(&c, &[("n1", &t.n1), ("n2", &t.n2), ("n3", &t.n3)]).await;
    c.post(t.n1.url("/v1/sets/s"))
        .body(r#"{"add": ["x"]}"#)
        .send()
        .await
        .unwrap();
    converged(&c, &[&t.n1, &t.n2, &t.n3], CONVERGE).await;

    // Partition {n1} | {n2, n3}.
    for (node, drop) in [
        (&t.n1, r#"["n2","n3"]"#),
        (&t.n2, r#"["n1"]"#),
        (&t.n3, r#"["n1"]"#),
    ] {
        let r = c
            .put(node.url("/v1/admin/faults"))
            .body(format!(r#"{{"drop": {drop}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    eventually("n1 loses sight of n2", CONVERGE, || async {
        (member_state(&c, &t.n1, "n2").await?.0 != "alive").then_some(())
    })
    .await;
    // Both sides keep serving: conflicting writes, the later one (on n2) must win; n2 removes
    // x while n1 concurrently re-adds it, so x must survive (add wins).
    c.put(t.n1.url("/v1/kv/color"))
        .body("red")
        .send()
        .await
        .unwrap();
    c.put(t.n1.url("/v1/sets/s/x")).send().await.unwrap();
    c.put(t.n1.url("/v1/sets/s/left")).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await; // a later HLC timestamp on n2
    c.put(t.n2.url("/v1/kv/color"))
        .body("blue")
        .send()
        .await
        .unwrap();
    c.delete(t.n2.url("/v1/sets/s/x")).send().await.unwrap();
    c.put(t.n3.url("/v1/sets/s/right")).send().await.unwrap();
    // Counters: the adds made on both sides all count once healed.
    for (node, add) in [(&t.n1, 10), (&t.n2, -3), (&t.n3, 100), (&t.n1, 1)] {
        let r = c
            .post(node.url("/v1/counters/hits"))
            .body(format!(r#"{{"add": {add}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let on_n1 = get_json(&c, t.n1.url("/v1/counters/hits")).await.unwrap();
    assert_eq!(on_n1["value"], 11, "n1 sees only its side: {on_n1}");
    // The cluster's status, asked of n2, says the two sides differ.
    let status = get_json(&c, t.n2.url("/v1/cluster/status")).await.unwrap();
    assert_eq!(status["converged"], false, "{status}");
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert_eq!(get_text(&c, t.n1.url("/v1/kv/color")).await.unwrap(), "red");
    assert_ne!(digest(&c, &t.n1).await, digest(&c, &t.n2).await);

    // Heal: no restart, no operator action beyond lifting the fault.
    for node in [&t.n1, &t.n2, &t.n3] {
        c.delete(node.url("/v1/admin/faults")).send().await.unwrap();
    }
    all_alive(&c, &[("n1", &t.n1), ("n2", &t.n2), ("n3", &t.n3)]).await;
    converged(&c, &[&t.n1, &t.n2, &t.n3], CONVERGE).await;
    // Once healed, any node's view of the cluster's status agrees.
    let status = eventually("a converged status", CONVERGE, || async {
        let status = get_json(&c, t.n3.url("/v1/cluster/status")).await?;
        (status["converged"] == true).then_some(status)
    })
    .await;
    for (node, id) in status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["n1", "n2", "n3"])
    {
        assert_eq!(node["id"], id);
        assert_eq!(node["state"], "alive");
        assert!(
            node["root"].is_string() && node["keys"].is_u64(),
            "{status}"
        );
    }
    for node in [&t.n1, &t.n2, &t.n3] {
        assert_eq!(
            get_text(&c, node.url("/v1/kv/color")).await.unwrap(),
            "blue"
        );
        let set = get_json(&c, node.url("/v1/sets/s")).await.unwrap();
        assert_eq!(set["elements"], serde_json::json!(["left", "right", "x"]));
        let hits = get_json(&c, node.url("/v1/counters/hits")).await.unwrap();
        assert_eq!(hits["value"], 108);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_is_declared_dead_then_rejoins_and_catches_up() {
    let mut t = start_trio(&[]);
    let c = Client::new();
    all_alive(&c, &[("n1", &t.n1), ("n2", &t.n2), ("n3", &t.n3)]).await;
    let (_, before) = member_state(&c, &t.n1, "n3").await.unwrap();
    let n3_gossip = t.n3.gossip.clone();
    let n3_data = t._dir.path().join("n3");
    t.n3.kill9();
    for observer in [&t.n1, &t.n2] {
        eventually("n3 declared dead", CONVERGE, || async {
            (member_state(&c, observer, "n3").await?.0 == "dead").then_some(())
        })
        .await;
    }
    for i in 0..50 {
        c.put(t.n1.url(&format!("/v1/kv/missed/{i}")))
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
    }
    // Restart on the same directory and address, with no seeds: the others' re-contact of dead
    // members brings it back.
    t.n3 = Proc::serve(&[
        "--node-id",
        "n3",
        "--data",
        path_str(&n3_data),
        "--gossip",
        &n3_gossip,
    ]);
    for observer in [&t.n1, &t.n2] {
        eventually(
            "n3 alive again with a higher incarnation",
            CONVERGE,
            || async {
                let (state, inc) = member_state(&c, observer, "n3").await?;
                (state == "alive" && inc > before).then_some(())
            },
        )
        .await;
    }
    converged(&c, &[&t.n1, &t.n2, &t.n3], CONVERGE).await;
    assert_eq!(
        get_text(&c, t.n3.url("/v1/kv/missed/49")).await.unwrap(),
        "v49"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_process_refutes_suspicion_when_it_resumes() {
    let t = start_trio(&[]);
    let c = Client::new();
    all_alive(&c, &[("n1", &t.n1), ("n2", &t.n2), ("n3", &t.n3)]).await;
    t.n3.signal(libc::SIGSTOP);
    eventually("n3 suspected or dead", CONVERGE, || async {
        (member_state(&c, &t.n1, "n3").await?.0 != "alive").then_some(())
    })
    .await;
    t.n3.signal(libc::SIGCONT);
    all_alive(&c, &[("n1", &t.n1), ("n2", &t.n2), ("n3", &t.n3)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_leave_is_seen_as_left() {
    let mut t = start_trio(&[]);
    let c = Client::new();
    all_alive(&c, &[("n1", &t.n1), ("n2", &t.n2), ("n3", &t.n3)]).await;
    t.n3.signal(libc::SIGTERM);
    assert!(
        t.n3.wait_exit(Duration::from_secs(30)).is_some(),
        "SIGTERM stops the node"
    );
    for observer in [&t.n1, &t.n2] {
        eventually("n3 left", CONVERGE, || async {
            (member_state(&c, observer, "n3").await?.0 == "left").then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_cluster_port_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::serve(&["--data", path_str(dir.path())]);
    let c = Client::new();
    let addr: std::net::SocketAddr = node.gossip.parse().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![1, 255, 255, 255, 255, 255],
        vec![0xff; 1400],
        vec![7; 9000],
    ];
    let mut x = 0x9e3779b97f4a7c15u64;
    for len in [3usize, 50, 400, 1300] {
        junk.push(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect(),
        );
    }
    for packet in &junk {
        udp.send_to(packet, addr).unwrap();
    }
    // Frames: an absurd length prefix, a truncated frame, and garbage of a plausible length.
    use std::io::Write;
    for frame in [
        u32::MAX.to_be_bytes().to_vec(),
        [0, 0, 0, 100, 1, 2].to_vec(),
        [&5u32.to_be_bytes()[..], b"junk!"].concat(),
    ] {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.write_all(&frame).unwrap();
    }
    eventually("drops are counted", CONVERGE, || async {
        let metrics = get_text(&c, node.url("/metrics")).await?;
        let decode = metrics
            .lines()
            .find(|l| l.starts_with("hearsay_cluster_dropped_total{reason=\"decode\"}"))?;
        let oversized = metrics
            .lines()
            .find(|l| l.starts_with("hearsay_cluster_dropped_total{reason=\"oversized\"}"))?;
        let n = |line: &str| line.rsplit(' ').next()?.parse::<u64>().ok();
        (n(decode)? >= 5 && n(oversized)? >= 2).then_some(())
    })
    .await;
    let r = c
        .put(node.url("/v1/kv/still"))
        .body("alive")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_another_cluster_key_never_joins() {
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str, byte: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, byte.repeat(64)).unwrap();
        path
    };
    let (good, bad) = (key("good.key", "a"), key("bad.key", "b"));
    let n1 = Proc::serve(&[
        "--node-id",
        "n1",
        "--data",
        path_str(&dir.path().join("n1")),
        "--cluster-key-file",
        path_str(&good),
    ]);
    let n2 = Proc::serve(&[
        "--node-id",
        "n2",
        "--data",
        path_str(&dir.path().join("n2")),
        "--cluster-key-file",
        path_str(&good),
        "--seeds",
        &n1.gossip,
    ]);
    let n3 = Proc::serve(&[
        "--node-id",
        "n3",
        "--data",
        path_str(&dir.path().join("n3")),
        "--cluster-key-file",
        path_str(&bad),
        "--seeds",
        &n1.gossip,
    ]);
    let c = Client::new();
    all_alive(&c, &[("n1", &n1), ("n2", &n2)]).await;
    c.put(n3.url("/v1/kv/intruder"))
        .body("x")
        .send()
        .await
        .unwrap();
    c.put(n1.url("/v1/kv/inside"))
        .body("y")
        .send()
        .await
        .unwrap();
    eventually("n2 has n1's write", CONVERGE, || async {
        get_text(&c, n2.url("/v1/kv/inside")).await
    })
    .await;
    eventually("n1 counts unauthentic messages", CONVERGE, || async {
        let metrics = get_text(&c, n1.url("/metrics")).await?;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("hearsay_cluster_dropped_total{reason=\"auth\"}"))?;
        (line.rsplit(' ').next()?.parse::<u64>().ok()? > 0).then_some(())
    })
    .await;
    assert!(
        member_state(&c, &n1, "n3").await.is_none(),
        "n3 must never become a member"
    );
    assert!(get_text(&c, n1.url("/v1/kv/intruder")).await.is_none());
    assert!(get_text(&c, n3.url("/v1/kv/inside")).await.is_none());
}

/// A base port with `n` free consecutive ports (checked, then released: a tiny race remains).
fn free_port_run(n: u16) -> u16 {
    'search: for attempt in 0..200u16 {
        let base = 20_000 + (std::process::id() as u16 % 20_000) + attempt * 13;
        for p in base..base + n {
            let tcp = std::net::TcpListener::bind(("127.0.0.1", p));
            let udp = std::net::UdpSocket::bind(("127.0.0.1", p));
            if tcp.is_err() || udp.is_err() {
                continue 'search;
            }
        }
        return base;
    }
    panic!("no run of {n} free ports");
}

#[tokio::test(flavor = "multi_thread")]
async fn hearsay_cluster_starts_a_working_local_cluster_and_stops_it_on_sigint() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let http = free_port_run(3);
    let gossip = free_port_run(3 + 3) + 3;
    let mut launcher = Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["cluster", "--nodes", "3"])
        .args([
            "--http-base",
            &http.to_string(),
            "--gossip-base",
            &gossip.to_string(),
        ])
        .arg("--data")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = Client::new();
    let url = |i: u16, path: &str| format!("http://127.0.0.1:{}{path}", http + i);
    eventually("all three nodes alive in n3's view", CONVERGE, || async {
        let v = get_json(&c, url(2, "/v1/cluster/members")).await?;
        let alive = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["state"] == "alive")
            .count();
        (alive == 3).then_some(())
    })
    .await;
    c.put(url(0, "/v1/kv/hello"))
        .body("world")
        .send()
        .await
        .unwrap();
    eventually("n3 reads n1's write", CONVERGE, || async {
        (get_text(&c, url(2, "/v1/kv/hello")).await? == "world").then_some(())
    })
    .await;
    // Fault injection is on in the local cluster (the README's partition demo relies on it).
    let r = c.get(url(1, "/v1/admin/faults")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // SIGINT (Ctrl-C) stops the launcher and every node.
    unsafe {
        libc::kill(launcher.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = std::time::Instant::now() + CONVERGE;
    let stopped = loop {
        if let Some(status) = launcher.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the launcher did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(stopped.success(), "{stopped:?}");
    for i in 0..3 {
        assert!(
            c.get(url(i, "/v1/health")).send().await.is_err(),
            "node {i} still serves"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_recovered_from_a_damaged_directory_resyncs_from_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (dir.path().join("n1"), dir.path().join("n2"));
    let n1 = Proc::serve(&["--node-id", "n1", "--data", path_str(&d1)]);
    let mut n2 = Proc::serve(&[
        "--node-id",
        "n2",
        "--data",
        path_str(&d2),
        "--seeds",
        &n1.gossip,
    ]);
    let c = Client::new();
    all_alive(&c, &[("n1", &n1), ("n2", &n2)]).await;
    for i in 0..20 {
        c.put(n1.url(&format!("/v1/kv/k{i}")))
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
    }
    converged(&c, &[&n1, &n2], CONVERGE).await;
    n2.kill9();
    // The database is damaged beyond sled's ability to open it.
    std::fs::remove_dir_all(d2.join("db")).unwrap();
    std::fs::write(d2.join("db"), b"garbage").unwrap();
    let n2 = Proc::serve(&[
        "--node-id",
        "n2",
        "--data",
        path_str(&d2),
        "--seeds",
        &n1.gossip,
        "--recover",
    ]);
    eventually(
        "the recovered node serves what it lost",
        CONVERGE,
        || async { (get_text(&c, n2.url("/v1/kv/k19")).await? == "v19").then_some(()) },
    )
    .await;
    converged(&c, &[&n1, &n2], CONVERGE).await;
}
