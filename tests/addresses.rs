//! The addresses a node is known by, with real processes: what it advertises when bound to every
//! interface (`--advertise-gossip`, `--advertise-http`, refused when unspecified), a cluster on
//! the IPv6 loopback, and seeds given by name (resolved again at every contact attempt, so a
//! seed that comes up late is still found). Crossing real interfaces between hosts is
//! tests/multi_host.rs.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{eventually, get_json, run_to_exit, Proc};
use reqwest::Client;
use serde_json::Value;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(30);

/// The addresses `observer` lists for member `id`: (gossip_addr, http_addr).
async fn addresses_of(c: &Client, observer: &Proc, id: &str) -> Option<(String, String)> {
    let members = get_json(c, observer.url("/v1/cluster/members")).await?;
    members["members"].as_array()?.iter().find_map(|m| {
        (m["id"] == id && m["state"] == "alive").then(|| {
            let text = |field: &str| m[field].as_str().unwrap_or_default().to_string();
            (text("gossip_addr"), text("http_addr"))
        })
    })
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

#[test]
fn a_node_refuses_to_advertise_an_address_that_means_every_interface() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let data = data.to_str().unwrap();
    let refused = [
        (&["--gossip", "0.0.0.0:0"][..], "--advertise-gossip"),
        (&["--gossip", "[::]:0"][..], "--advertise-gossip"),
        (
            &["--gossip", "127.0.0.1:0", "--advertise-gossip", "::"][..],
            "--advertise-gossip",
        ),
        (
            &[
                "--gossip",
                "127.0.0.1:0",
                "--advertise-http",
                "0.0.0.0:7001",
            ][..],
            "--advertise-http",
        ),
    ];
    for (flags, named) in refused {
        let mut args = vec!["serve", "--http", "127.0.0.1:0", "--data", data];
        args.extend_from_slice(flags);
        let (code, stderr) = run_to_exit(&args, Duration::from_secs(30));
        assert_eq!(code, Some(1), "{flags:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: cannot advertise") && last.contains(named),
            "{flags:?}: {stderr}"
        );
    }
    let (code, stderr) = run_to_exit(
        &["serve", "--data", data, "--advertise-gossip", "node-1:7101"],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not an IP address"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_and_clients_see_the_advertised_addresses_not_the_bound_ones() {
    // n1 binds every interface, as in a container, and advertises its address without a port:
    // the bound ports go with it, and HTTP is advertised at the same IP.
    let n1 = Proc::serve(&[
        "--node-id",
        "n1",
        "--gossip",
        "0.0.0.0:0",
        "--http",
        "0.0.0.0:0",
        "--advertise-gossip",
        "127.0.0.1",
    ]);
    assert!(n1.gossip.starts_with("127.0.0.1:"), "{}", n1.gossip);
    assert!(n1.base.starts_with("http://127.0.0.1:"), "{}", n1.base);
    let n2 = Proc::serve(&["--node-id", "n2", "--seeds", &n1.gossip]);
    let c = Client::new();
    let (gossip, http) = eventually("n2 lists n1", WITHIN, || addresses_of(&c, &n2, "n1")).await;
    assert_eq!(gossip, n1.gossip);
    assert_eq!(format!("http://{http}"), n1.base);
    let own = eventually("n1 lists itself", WITHIN, || addresses_of(&c, &n1, "n1")).await;
    assert_eq!(own, (gossip, http));

    // An advertised port that differs from the bound one (a port mapping) is what peers use.
    let n3 = Proc::serve(&[
        "--node-id",
        "n3",
        "--seeds",
        &n1.gossip,
        "--advertise-http",
        "127.0.0.1:8999",
    ]);
    let (_, http) = eventually("n2 lists n3", WITHIN, || addresses_of(&c, &n2, "n3")).await;
    assert_eq!(http, "127.0.0.1:8999");
    assert_ne!(port_of(&n3.base), "8999");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_on_the_ipv6_loopback_forms_and_replicates() {
    let v6 = ["--gossip", "[::1]:0", "--http", "[::1]:0"];
    let n1 = Proc::serve(&[&["--node-id", "n1"][..], &v6].concat());
    assert!(n1.gossip.starts_with("[::1]:"), "{}", n1.gossip);
    let n2 = Proc::serve(&[&["--node-id", "n2", "--seeds", &n1.gossip][..], &v6].concat());
    let c = Client::new();
    let (gossip, http) = eventually("n1 lists n2", WITHIN, || addresses_of(&c, &n1, "n2")).await;
    assert_eq!(gossip, n2.gossip);
    assert_eq!(format!("http://{http}"), n2.base);

    let put = c.put(n1.url("/v1/kv/v6")).body("over ipv6").send().await;
    assert!(put.unwrap().status().is_success());
    eventually("the write reaches n2", WITHIN, || async {
        let got = c.get(n2.url("/v1/kv/v6")).send().await.ok()?;
        (got.status() == 200 && got.text().await.ok()? == "over ipv6").then_some(())
    })
    .await;

    // The command-line client reaches a node by its IPv6 address too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["kv", "get", "v6", "--addr", &n2.base])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over ipv6");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seed_given_by_name_is_found_even_when_it_starts_later() {
    // The seed's port is chosen first and nothing listens there yet: n2 keeps resolving the
    // name and pinging until n1 starts on that port.
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let seed = format!("localhost:{port}");
    let n2 = Proc::serve(&["--node-id", "n2", "--seeds", &seed]);
    let gossip = format!("127.0.0.1:{port}");
    let n1 = Proc::serve(&["--node-id", "n1", "--gossip", &gossip]);
    let c = Client::new();
    let (listed, _) = eventually("n2 joins n1", WITHIN, || addresses_of(&c, &n2, "n1")).await;
    assert_eq!(listed, gossip);
    eventually("n1 lists n2", WITHIN, || addresses_of(&c, &n1, "n2")).await;
    let members: Value = get_json(&c, n2.url("/v1/cluster/members")).await.unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 2);

    // A seed that is not host:port is refused at start with one line.
    let (code, stderr) = run_to_exit(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
            "--seeds",
            "fd00::5:7101",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("bad seed") && stderr.contains("brackets"),
        "{stderr}"
    );
}
