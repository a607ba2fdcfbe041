//! Three "hosts" with real network interfaces: one network namespace each, joined by a bridge
//! (in a namespace of its own) on a private test range (198.18.0.0/15, RFC 2544), with host
//! names in `/etc/netns/<ns>/hosts`. Every node binds `0.0.0.0`, advertises its namespace's
//! address and joins through host names. Then: one host is cut off with nftables inside its
//! namespace, both sides take writes, the cut is lifted, and the cluster converges with the same
//! outcomes as the loopback partition test (last writer wins, add wins, every counter add
//! counts); finally that host's node is killed with SIGKILL, its namespace re-addressed, its
//! name pointed at the new address, and it is started again under the same id knowing only its
//! own name: the others find it by resolving its name again.
//!
//! A second test runs the rolling-upgrade procedure on the same kind of hosts: one node leaves,
//! its process exits, it starts again on the same data directory, and the cluster converges;
//! with `HEARSAY_PREVIOUS_BINARY` set to an earlier release's binary, that node runs the earlier
//! release until then, so the cluster is mixed meanwhile.
//!
//! It needs root (network namespaces, nftables). Elsewhere it prints why it is skipped; with
//! `HEARSAY_REQUIRE_NETNS=1` (set by `.ci/run`) it fails instead. The README's "Running on
//! several machines" lists the same commands to do this by hand.
#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{converged, digest, eventually, get_json, get_text, member_state, path_str, Proc};
use reqwest::Client;
use std::process::Command;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(45);

/// Runs a command; its stderr is the error.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces of one test run and the addresses in them; removed when dropped.
struct Hosts {
    /// Prefix of every name this run creates (namespaces, the root side's link).
    prefix: String,
    /// The third octet of this run's /24 in 198.18.0.0/15.
    subnet: u8,
    /// Host name -> last octet of its address.
    hosts: Vec<(&'static str, u8)>,
}

impl Hosts {
    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn switch(&self) -> String {
        self.ns("sw")
    }

    fn root_link(&self) -> String {
        format!("{}r", self.prefix)
    }

    fn ip(&self, octet: u8) -> String {
        format!("198.18.{}.{octet}", self.subnet)
    }

    fn ip_of(&self, host: &str) -> String {
        let octet = self.hosts.iter().find(|(h, _)| *h == host).unwrap().1;
        self.ip(octet)
    }

    /// A bridge in its own namespace, one namespace per host with an `eth0` on it, and a link
    /// from this (the test's) namespace so that it reaches every node's HTTP API.
    fn create(tag: u8, hosts: &[(&'static str, u8)]) -> Result<Hosts, String> {
        let pid = std::process::id();
        let made = Hosts {
            prefix: format!("hs{pid}{}", char::from(b'a' + tag)),
            subnet: ((pid % 120) * 2) as u8 + tag + 1,
            hosts: hosts.to_vec(),
        };
        let sw = made.switch();
        run(&["ip", "netns", "add", &sw])?;
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
        for (i, (host, octet)) in hosts.iter().enumerate() {
            let ns = made.ns(host);
            let port = format!("p{i}");
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ])?;
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", made.ip(*octet)),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        let root = made.root_link();
        run(&[
            "ip", "link", "add", &root, "type", "veth", "peer", "name", "pr", "netns", &sw,
        ])?;
        run(&["ip", "-n", &sw, "link", "set", "pr", "master", "br0", "up"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", made.ip(254)),
            "dev",
            &root,
        ])?;
        run(&["ip", "link", "set", &root, "up"])?;
        made.write_host_names()?;
        Ok(made)
    }

    /// Writes every namespace's `/etc/netns/<ns>/hosts` in place (`ip netns exec` bind-mounts
    /// it over `/etc/hosts`, so a running node sees the new contents at its next lookup).
    fn write_host_names(&self) -> Result<(), String> {
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (host, octet) in &self.hosts {
            text.push_str(&format!("{} host-{host}\n", self.ip(*octet)));
        }
        for (host, _) in &self.hosts {
            let dir = format!("/etc/netns/{}", self.ns(host));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{dir}: {e}"))?;
            std::fs::write(format!("{dir}/hosts"), &text).map_err(|e| format!("{dir}: {e}"))?;
        }
        Ok(())
    }

    /// Moves `host` to a new address and points its name at it.
    fn readdress(&mut self, host: &str, octet: u8) -> Result<(), String> {
        let ns = self.ns(host);
        let old = format!("{}/24", self.ip_of(host));
        run(&["ip", "-n", &ns, "addr", "del", &old, "dev", "eth0"])?;
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", self.ip(octet)),
            "dev",
            "eth0",
        ])?;
        for entry in self.hosts.iter_mut().filter(|(h, _)| *h == host) {
            entry.1 = octet;
        }
        self.write_host_names()
    }

    /// Drops all traffic between `host` and the other hosts, inside `host`'s namespace (the
    /// test's own link still reaches it).
    fn cut_off(&self, host: &str) -> Result<(), String> {
        let others: Vec<String> = self
            .hosts
            .iter()
            .filter(|(h, _)| *h != host)
            .map(|(_, octet)| self.ip(*octet))
            .collect();
        let set = others.join(", ");
        let rules = format!(
            "table inet partition {{\n\
               chain input {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n\
               chain output {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        );
        let file = std::env::temp_dir().join(format!("{}-partition.nft", self.prefix));
        std::fs::write(&file, rules).map_err(|e| e.to_string())?;
        let result = run(&[
            "ip",
            "netns",
            "exec",
            &self.ns(host),
            "nft",
            "-f",
            path_str(&file),
        ]);
        let _ = std::fs::remove_file(&file);
        result
    }

    fn heal(&self, host: &str) -> Result<(), String> {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns(host),
            "nft",
            "delete",
            "table",
            "inet",
            "partition",
        ])
    }

    /// Starts `host`'s node: binds every interface, advertises the namespace's address.
    fn serve(&self, host: &str, data: &str, seeds: &str) -> Proc {
        let ns = self.ns(host);
        let ip = self.ip_of(host);
        Proc::serve_via(
            &["ip", "netns", "exec", &ns],
            &[
                "--node-id",
                host,
                "--data",
                data,
                "--http",
                "0.0.0.0:7001",
                "--gossip",
                "0.0.0.0:7101",
                "--advertise-gossip",
                &ip,
                "--seeds",
                seeds,
                "--durability",
                "batch",
            ],
        )
    }
}

impl Hosts {
    /// Starts `host`'s node with another build, bound to the namespace's address (builds
    /// before `--advertise-gossip` cannot bind every interface).
    fn serve_previous(&self, binary: &str, host: &str, data: &str, seeds: &str) -> Proc {
        let ns = self.ns(host);
        let ip = self.ip_of(host);
        let (gossip, http) = (format!("{ip}:7101"), format!("{ip}:7001"));
        Proc::serve_binary_via(
            &["ip", "netns", "exec", &ns],
            binary,
            &[
                "--node-id",
                host,
                "--data",
                data,
                "--gossip",
                &gossip,
                "--http",
                &http,
                "--seeds",
                seeds,
            ],
        )
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.root_link()]);
        for (host, _) in &self.hosts {
            let _ = run(&["ip", "netns", "del", &self.ns(host)]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.ns(host)));
        }
        let _ = run(&["ip", "netns", "del", &self.switch()]);
    }
}

/// The hosts, or `None` (with the reason printed) where namespaces cannot be made. `tag` tells
/// apart the namespaces and subnets of the tests running at once.
fn hosts_or_skip(tag: u8, hosts: &[(&'static str, u8)]) -> Option<Hosts> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let made = if root {
        Hosts::create(tag, hosts)
    } else {
        Err("not running as root".to_string())
    };
    match made {
        Ok(hosts) => Some(hosts),
        Err(why) if std::env::var_os("HEARSAY_REQUIRE_NETNS").is_some() => {
            panic!("HEARSAY_REQUIRE_NETNS is set but network namespaces cannot be made: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED multi-host test: it needs root, `ip netns` and nftables ({why})");
            None
        }
    }
}

/// Waits until `observer` lists `id` in `state` at cluster address `gossip` (any, if `None`).
async fn listed(c: &Client, observer: &Proc, id: &str, state: &str, gossip: Option<&str>) {
    eventually(
        &format!("{} lists {id} {state} at {gossip:?}", observer.base),
        CONVERGE,
        || async {
            let members = get_json(c, observer.url("/v1/cluster/members")).await?;
            let m = members["members"]
                .as_array()?
                .iter()
                .find(|m| m["id"] == id)?;
            let at = gossip.is_none_or(|g| m["gossip_addr"] == g);
            (m["state"] == state && at).then_some(())
        },
    )
    .await;
}

async fn send(c: &Client, request: reqwest::RequestBuilder) {
    let _ = c;
    let resp = request.send().await.expect("request");
    assert!(resp.status().is_success(), "{resp:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_on_real_interfaces_partition_heal_and_one_comes_back_at_a_new_address() {
    let Some(mut net) = hosts_or_skip(0, &[("a", 1), ("b", 2), ("c", 3)]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = |host: &str| path_str(&dir.path().join(host)).to_string();
    let seeds = "host-a:7101,host-b:7101,host-c:7101";
    let a = net.serve("a", &data("a"), seeds);
    let b = net.serve("b", &data("b"), seeds);
    let mut c3 = net.serve("c", &data("c"), seeds);
    assert_eq!(a.base, format!("http://{}:7001", net.ip_of("a")));
    let c = Client::new();
    let nodes = [("a", &a), ("b", &b), ("c", &c3)];
    for (_, observer) in nodes {
        for (id, _) in nodes {
            let at = format!("{}:7101", net.ip_of(id));
            listed(&c, observer, id, "alive", Some(&at)).await;
        }
    }
    let members = get_json(&c, b.url("/v1/cluster/members")).await.unwrap();
    let listed_a = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "a")
        .unwrap()
        .clone();
    assert_eq!(listed_a["http_addr"], format!("{}:7001", net.ip_of("a")));
    send(&c, c.post(a.url("/v1/sets/s")).body(r#"{"add": ["x"]}"#)).await;
    converged(&c, &[&a, &b, &c3], CONVERGE).await;

    // Cut c off from a and b inside its namespace.
    net.cut_off("c").unwrap();
    for (observer, id) in [(&a, "c"), (&c3, "a")] {
        eventually("the cut is seen", CONVERGE, || async {
            (member_state(&c, observer, id).await?.0 != "alive").then_some(())
        })
        .await;
    }
    // Both sides take writes: the later color (on a) wins; a removes x while c re-adds it, so x
    // stays (add wins); every counter add counts once healed.
    send(&c, c.put(c3.url("/v1/kv/color")).body("red")).await;
    send(&c, c.put(c3.url("/v1/sets/s/x"))).await;
    send(&c, c.put(c3.url("/v1/sets/s/left"))).await;
    tokio::time::sleep(Duration::from_millis(5)).await; // a later HLC timestamp on a
    send(&c, c.put(a.url("/v1/kv/color")).body("blue")).await;
    send(&c, c.delete(a.url("/v1/sets/s/x"))).await;
    send(&c, c.put(b.url("/v1/sets/s/right"))).await;
    for (node, add) in [(&c3, 10), (&a, -3), (&b, 100), (&c3, 1)] {
        let body = format!(r#"{{"add": {add}}}"#);
        send(&c, c.post(node.url("/v1/counters/hits")).body(body)).await;
    }
    let on_c = get_json(&c, c3.url("/v1/counters/hits")).await.unwrap();
    assert_eq!(on_c["value"], 11, "c sees only its side: {on_c}");
    assert_ne!(digest(&c, &c3).await, digest(&c, &a).await);

    net.heal("c").unwrap();
    for (_, observer) in nodes {
        for (id, _) in nodes {
            listed(&c, observer, id, "alive", None).await;
        }
    }
    converged(&c, &[&a, &b, &c3], CONVERGE).await;
    for node in [&a, &b, &c3] {
        assert_eq!(
            get_text(&c, node.url("/v1/kv/color")).await.unwrap(),
            "blue"
        );
        let set = get_json(&c, node.url("/v1/sets/s")).await.unwrap();
        assert_eq!(set["elements"], serde_json::json!(["left", "right", "x"]));
        let hits = get_json(&c, node.url("/v1/counters/hits")).await.unwrap();
        assert_eq!(hits["value"], 108);
    }

    // kill -9 c; the others declare it dead and take writes it misses.
    c3.kill9();
    for observer in [&a, &b] {
        listed(&c, observer, "c", "dead", None).await;
    }
    for i in 0..20 {
        send(
            &c,
            c.put(a.url(&format!("/v1/kv/missed/{i}")))
                .body(format!("v{i}")),
        )
        .await;
    }
    // The host comes back at a new address under the same id and data, knowing only its own
    // name (as a first pod does under a headless Service): a and b, whose seeds include
    // host-c, resolve it again and find it there.
    net.readdress("c", 13).unwrap();
    let c3 = net.serve("c", &data("c"), "host-c:7101");
    let moved = format!("{}:7101", net.ip_of("c"));
    for observer in [&a, &b] {
        listed(&c, observer, "c", "alive", Some(&moved)).await;
    }
    listed(&c, &c3, "a", "alive", None).await;
    converged(&c, &[&a, &b, &c3], CONVERGE).await;
    assert_eq!(
        get_text(&c, c3.url("/v1/kv/missed/19")).await.unwrap(),
        "v19"
    );
    send(&c, c.put(c3.url("/v1/kv/from-c")).body("moved")).await;
    eventually("c's write reaches a", CONVERGE, || async {
        (get_text(&c, a.url("/v1/kv/from-c")).await? == "moved").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_one_host_at_a_time_keeps_the_cluster_whole() {
    let Some(net) = hosts_or_skip(1, &[("a", 1), ("b", 2), ("c", 3)]) else {
        return;
    };
    // With HEARSAY_PREVIOUS_BINARY (an earlier release's binary), c runs it until its upgrade:
    // the cluster is mixed meanwhile. Without it, c's upgrade restarts this same build.
    let previous = std::env::var("HEARSAY_PREVIOUS_BINARY").ok();
    match &previous {
        Some(binary) => eprintln!("c runs the previous release {binary} until it is upgraded"),
        None => eprintln!(
            "HEARSAY_PREVIOUS_BINARY is not set: c is upgraded from this build to this build"
        ),
    }
    let dir = tempfile::tempdir().unwrap();
    let data = |host: &str| path_str(&dir.path().join(host)).to_string();
    let seeds = "host-a:7101,host-b:7101,host-c:7101";
    let a = net.serve("a", &data("a"), seeds);
    let b = net.serve("b", &data("b"), seeds);
    let mut c3 = match &previous {
        Some(binary) => net.serve_previous(binary, "c", &data("c"), seeds),
        None => net.serve("c", &data("c"), seeds),
    };
    let c = Client::new();
    let nodes = [&a, &b, &c3];
    for observer in nodes {
        for id in ["a", "b", "c"] {
            listed(&c, observer, id, "alive", None).await;
        }
    }
    // Writes on every node reach every other across the versions.
    for (i, node) in nodes.iter().enumerate() {
        send(
            &c,
            c.put(node.url(&format!("/v1/kv/before/{i}")))
                .body(format!("v{i}")),
        )
        .await;
    }
    for node in nodes {
        for i in 0..3 {
            let key = format!("/v1/kv/before/{i}");
            eventually(
                "a write before the upgrade everywhere",
                CONVERGE,
                || async { (get_text(&c, node.url(&key)).await? == format!("v{i}")).then_some(()) },
            )
            .await;
        }
    }

    // The procedure: leave, wait for the process to exit, replace the binary, start it on the
    // same data directory and flags, wait for convergence.
    let left = c.post(c3.url("/v1/cluster/leave")).send().await.unwrap();
    assert!(left.status().is_success(), "{left:?}");
    let status = c3
        .wait_exit(Duration::from_secs(30))
        .expect("c exits after leaving");
    assert!(status.success(), "{status:?}");
    for observer in [&a, &b] {
        listed(&c, observer, "c", "left", None).await;
    }
    send(&c, c.put(a.url("/v1/kv/during")).body("while c was away")).await;
    let c3 = net.serve("c", &data("c"), seeds);
    for observer in [&a, &b] {
        let at = format!("{}:7101", net.ip_of("c"));
        listed(&c, observer, "c", "alive", Some(&at)).await;
    }
    converged(&c, &[&a, &b, &c3], CONVERGE).await;
    assert_eq!(
        get_text(&c, c3.url("/v1/kv/during")).await.unwrap(),
        "while c was away"
    );
    assert_eq!(get_text(&c, c3.url("/v1/kv/before/0")).await.unwrap(), "v0");
    send(&c, c.put(c3.url("/v1/kv/after")).body("upgraded")).await;
    eventually(
        "c's write after its upgrade reaches b",
        CONVERGE,
        || async { (get_text(&c, b.url("/v1/kv/after")).await? == "upgraded").then_some(()) },
    )
    .await;
}
