//! Members that never return, in the deterministic simulator. When two of five die for good, the
//! three left are a majority: once the dead have been down for the grace period they stop holding
//! tombstone collection back, and after `reap_after_ms` they are forgotten. When half of a
//! six-node cluster dies, the live half cannot tell death from a partition (the other half may be
//! serving, and collecting, on its own): it forgets nobody and collection waits, until an operator
//! forces the dead out.

use hearsay::membership::MembershipConfig;
use hearsay::node::{TombstoneConfig, Write};
use hearsay::sim::{Sim, SimConfig};

fn put(key: &str) -> Write {
    Write::put_text(key, "v")
}

const GRACE_MS: u64 = 10_000;

/// `nodes` nodes; a key written and deleted; then the last `dying` crash for good.
fn losing(nodes: usize, dying: usize, seed: u64, reap_after_ms: u64) -> Sim {
    let mut config = SimConfig::new(nodes, seed);
    config.tombstones = TombstoneConfig {
        min_age_ms: 1_000,
        grace_ms: GRACE_MS,
    };
    config.membership = MembershipConfig {
        reap_after_ms,
        ..MembershipConfig::for_sim()
    };
    let mut sim = Sim::new(config);
    sim.run_for(8_000);
    sim.write(0, put("k")).expect("written");
    sim.run_for(1_000);
    sim.write(1, Write::KvDelete { key: "k".into() })
        .expect("deleted");
    sim.run_for(1_000);
    for i in nodes - dying..nodes {
        sim.crash(i);
    }
    sim
}

/// Six nodes, and n4, n5 and n6 die.
fn half_dead(seed: u64, reap_after_ms: u64) -> Sim {
    losing(6, 3, seed, reap_after_ms)
}

/// Tombstones held by the first three nodes (alive in every test).
fn tombstones_held(sim: &Sim) -> Vec<usize> {
    (0..3)
        .map(|i| sim.node(i).map_or(0, |n| n.tombstones_held()))
        .collect()
}

#[test]
fn without_reaping_the_dead_half_stops_collection() {
    let mut sim = half_dead(31, u64::MAX / 4);
    sim.run_for(3 * GRACE_MS);
    assert_eq!(tombstones_held(&sim), [1, 1, 1]);
}

#[test]
fn a_majority_forgets_members_that_never_return() {
    let mut sim = losing(5, 2, 32, 20_000);
    sim.run_for(20_000 + GRACE_MS + 10_000);
    assert_eq!(tombstones_held(&sim), [0, 0, 0]);
    let view = sim.view(0);
    assert_eq!(view.len(), 3, "the dead are forgotten: {view:?}");
}

#[test]
fn half_of_the_cluster_does_not_forget_the_other_half() {
    let mut sim = half_dead(32, 20_000);
    sim.run_for(20_000 + GRACE_MS + 10_000);
    assert_eq!(tombstones_held(&sim), [1, 1, 1]);
    let view = sim.view(0);
    assert_eq!(view.len(), 6, "the other half may be alive: {view:?}");
}

#[test]
fn a_member_forced_out_stops_counting_in_the_majority_at_once() {
    let mut sim = half_dead(33, u64::MAX / 4);
    sim.run_for(10_000);
    for i in 3..6 {
        let id = sim.id(i).clone();
        sim.remove_member(0, &id)
            .expect("a dead member can be forced out");
    }
    sim.run_for(GRACE_MS + 10_000);
    assert_eq!(tombstones_held(&sim), [0, 0, 0]);
    // Forced out on n1, it is marked left everywhere.
    for i in 0..3 {
        let left = sim
            .view(i)
            .iter()
            .filter(|(_, s)| *s == hearsay::membership::MemberState::Left)
            .count();
        assert_eq!(left, 3, "node {i}: {:?}", sim.view(i));
    }
}

/// How many members node `i` lists alive (0 while it is down).
fn alive_count(sim: &Sim, i: usize) -> usize {
    sim.node(i).map_or(0, |node| {
        node.members()
            .iter()
            .filter(|m| m.state == hearsay::membership::MemberState::Alive)
            .count()
    })
}

/// Milliseconds (simulated) until node `i` lists every one of the `n` members alive, checked
/// every 50 ms, at most `limit_ms`.
fn until_all_alive(sim: &mut Sim, i: usize, n: usize, limit_ms: u64) -> Option<u64> {
    sim.run_until_holds(limit_ms, 50, |sim| alive_count(sim, i) == n)
}

/// A restarted member learns the whole membership in one exchange with the first member it
/// reaches (a push of the member list), not one member per gossip round: with 40 nodes and the
/// LAN timings it listed everyone alive after about 38 s before.
#[test]
fn a_restarted_member_of_forty_lists_every_member_alive_within_three_seconds() {
    const N: usize = 40;
    let mut config = SimConfig::new(N, 7);
    config.membership = MembershipConfig::lan();
    let mut sim = Sim::new(config);
    until_all_alive(&mut sim, N - 1, N, 120_000).expect("the cluster forms");
    // Restarted before the others declare it dead (they hold it alive, at its old incarnation),
    // and after.
    for (restarted, down_ms) in [(N - 1, 500), (N / 2, 10_000)] {
        sim.crash(restarted);
        sim.run_for(down_ms);
        sim.restart(restarted);
        let took = until_all_alive(&mut sim, restarted, N, 30_000);
        assert!(
            took.is_some_and(|ms| ms <= 3_000),
            "node {restarted} listed every member alive after {took:?} ms"
        );
    }
}

/// A cold start: forty nodes start at once, all seeded with the first. Each learns every member
/// from the first one it reaches (the member-list push) and introduces itself to each member it
/// learned of that way, so the earlier joiners learn the later ones at once instead of by
/// gossip (about 8 s on real processes before).
#[test]
fn forty_nodes_started_at_once_all_list_every_member_alive_within_five_seconds() {
    const N: usize = 40;
    let mut config = SimConfig::new(N, 11);
    config.membership = MembershipConfig::lan();
    let mut sim = Sim::new(config);
    let took = sim.run_until_holds(30_000, 50, |sim| (0..N).all(|i| alive_count(sim, i) == N));
    println!("forty nodes listed every member alive after {took:?} ms");
    assert!(
        took.is_some_and(|ms| ms <= 5_000),
        "every node listed every member alive after {took:?} ms"
    );
}
