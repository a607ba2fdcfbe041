//! Focused scenarios in the deterministic simulator: each isolates one mechanism of the
//! replication protocol (rumors alone, anti-entropy alone) and checks what it must achieve.

use hearsay::crdt::{KeyState, Value};
use hearsay::node::Write;
use hearsay::sim::{Sim, SimConfig};
use hearsay::store::StoreKey;

fn put(key: &str, value: &str) -> Write {
    Write::KvPut {
        key: key.into(),
        value: Value {
            content_type: "text/plain".into(),
            data: value.as_bytes().to_vec(),
        },
    }
}

fn holds(sim: &Sim, i: usize, key: &str) -> bool {
    matches!(sim.read(i, &StoreKey::kv(key)), Some(KeyState::Register(r)) if r.value.is_some())
}

#[test]
fn rumors_alone_reach_every_node_within_a_few_hops() {
    let mut config = SimConfig::new(10, 7);
    config.latency_ms = (1, 5);
    config.anti_entropy_interval_ms = u64::MAX / 4; // rumors only
    let mut sim = Sim::new(config);
    sim.run_for(8_000);
    assert!(sim.write(0, put("k", "v")).is_some());
    // A few hops of at most 5 ms each (fanout 3 over 10 nodes), plus piggybacked copies.
    sim.run_for(100);
    let missing: Vec<usize> = (0..10).filter(|&i| !holds(&sim, i, "k")).collect();
    assert!(
        missing.is_empty(),
        "nodes without the write after 100 ms: {missing:?}"
    );
    let repaired: u64 = (0..10)
        .filter_map(|i| sim.node(i))
        .map(|n| n.cluster_stats().sync_keys_repaired)
        .sum();
    assert_eq!(repaired, 0, "anti-entropy was off");
}

#[test]
fn anti_entropy_repairs_what_rumors_could_not_deliver() {
    let mut config = SimConfig::new(5, 11);
    config.latency_ms = (1, 10);
    let mut sim = Sim::new(config);
    sim.run_for(8_000);
    // n5 is cut off while 40 writes happen and their rumors run out of retransmissions.
    sim.partition(&[0, 0, 0, 0, 1]);
    for i in 0..40 {
        sim.write(i % 4, put(&format!("k{i}"), "v"));
        sim.run_for(20);
    }
    sim.run_for(20_000);
    assert!(!holds(&sim, 4, "k0"));
    sim.heal();
    sim.run_for(15_000);
    for i in 0..40 {
        assert!(holds(&sim, 4, &format!("k{i}")), "k{i} not repaired on n5");
    }
    let first = sim.digest(0);
    assert!((1..5).all(|i| sim.digest(i) == first));
    let repaired: u64 = (0..5)
        .filter_map(|i| sim.node(i))
        .map(|n| n.cluster_stats().sync_keys_repaired)
        .sum();
    assert!(repaired >= 40, "anti-entropy repaired {repaired} keys");
}
