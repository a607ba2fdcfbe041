//! The documented price of the tombstone grace period, in the deterministic simulator with
//! production durability: a node away longer than the grace period loses its unreplicated writes
//! older than the tombstones the others collected meanwhile, and only those; no deleted key comes
//! back, and the cluster converges.

use hearsay::crdt::KeyState;
use hearsay::node::{TombstoneConfig, Write};
use hearsay::sim::{Sim, SimConfig};
use hearsay::store::{Store, StoreKey};

fn delete(key: &str) -> Write {
    Write::KvDelete { key: key.into() }
}

fn value(sim: &Sim, i: usize, key: &str) -> Option<String> {
    match sim.read(i, &StoreKey::kv(key)) {
        Some(KeyState::Register(r)) => r.value.map(|v| String::from_utf8_lossy(&v.data).into()),
        _ => None,
    }
}

const GRACE_MS: u64 = 5_000;

fn cluster(seed: u64) -> Sim {
    let mut config = SimConfig::new(5, seed);
    config.fsync_us = Some((100, 5_000));
    config.tombstones = TombstoneConfig {
        min_age_ms: 1_000,
        grace_ms: GRACE_MS,
    };
    let mut sim = Sim::new(config);
    sim.run_for(8_000);
    sim
}

#[test]
fn a_node_away_past_the_grace_period_loses_only_its_unreplicated_writes_older_than_collected_tombstones(
) {
    let mut sim = cluster(41);
    sim.write(0, Write::put_text("k", "old")).expect("written");
    sim.write(0, Write::put_text("kept", "before"))
        .expect("written");
    sim.run_for(1_000);
    sim.write(0, delete("k")).expect("deleted");
    sim.run_for(1_000);
    // n5 goes away and writes: "k" again (after its delete), and a key nobody else has.
    sim.partition(&[0, 0, 0, 0, 1]);
    sim.run_for(500);
    sim.write(4, Write::put_text("k", "away"))
        .expect("n5 writes while away");
    sim.write(4, Write::put_text("kept", "away"))
        .expect("n5 writes while away");
    sim.run_for(500);
    // The others delete another key later, and collect both tombstones once n5 has been down
    // for the grace period.
    sim.write(1, Write::put_text("j", "x")).expect("written");
    sim.run_for(500);
    sim.write(1, delete("j")).expect("deleted");
    sim.run_for(GRACE_MS + 15_000);
    for i in 0..4 {
        let node = sim.node(i).expect("up");
        assert_eq!(
            node.tombstones_held(),
            0,
            "n{} still holds tombstones",
            i + 1
        );
    }
    let horizon = sim.store(0).collected_through();
    sim.heal();
    sim.run_for(30_000);
    let first = sim.digest(0);
    assert!((1..5).all(|i| sim.digest(i) == first), "no convergence");
    for i in 0..5 {
        // "k" was deleted and collected by the others before n5's write reached them: n5's
        // write is older than their newest collected tombstone, so it is dropped everywhere.
        assert_eq!(value(&sim, i, "k"), None, "n{}", i + 1);
        assert_eq!(value(&sim, i, "j"), None, "n{}", i + 1);
        // "kept" is held by the others, so n5's newer write merges as usual.
        assert_eq!(
            value(&sim, i, "kept").as_deref(),
            Some("away"),
            "n{}",
            i + 1
        );
    }
    assert!(horizon > hearsay::clock::Timestamp::ZERO);
    let forgotten = sim
        .node(4)
        .map_or(0, |n| n.cluster_stats().values_forgotten);
    assert_eq!(forgotten, 1, "n5 dropped its write of k");
}
