//! Focused scenarios in the deterministic simulator: each isolates one mechanism of the
//! replication protocol (rumors alone, anti-entropy alone, a consistency level) and checks what
//! it must achieve.

use hearsay::clock::Timestamp;
use hearsay::crdt::KeyState;
use hearsay::node::{Level, Tally, Wait, Write};
use hearsay::sim::{ReadOutcome, Sim, SimConfig, WriteOutcome};
use hearsay::store::{Store, StoreKey};

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
    assert!(sim.write(0, Write::put_text("k", "v")).is_some());
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
        sim.write(i % 4, Write::put_text(&format!("k{i}"), "v"));
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

/// A node that holds nothing fetches whole leaves from its peers; a peer of a version without
/// that request drops it. The empty node must then catch up by comparing key lists with it.
#[test]
fn an_empty_node_catches_up_from_a_peer_that_predates_fetching_whole_leaves() {
    let mut config = SimConfig::new(2, 5);
    config.latency_ms = (1, 5);
    // Only the empty node starts exchanges, so only its own can bring the keys.
    config.passive = vec![0];
    let mut sim = Sim::new(config);
    sim.predate_fetch(0);
    sim.run_for(8_000);
    sim.partition(&[0, 1]);
    for i in 0..300 {
        sim.write(0, Write::put_text(&format!("k{i}"), "v"));
    }
    // Long enough for every rumor to run out of retransmissions.
    sim.run_for(20_000);
    assert!(!holds(&sim, 1, "k0"));
    sim.heal();
    assert!(
        run_until(&mut sim, 30_000, |sim| same_digests(sim, 0..2)),
        "n2 did not catch up; {} fetches refused",
        sim.stats.fetch_refused
    );
    assert_eq!(sim.stats.fetch_refused, 1, "fetched again after a refusal");
    let failed = sim.node(1).map(|n| n.cluster_stats().sync_fetch_failed);
    assert_eq!(failed, Some(1));
}

/// An exchange is abandoned only when its peer stops answering, not because it is long: a
/// catch-up over slow links takes many round trips.
#[test]
fn a_catch_up_longer_than_a_minute_is_one_exchange_to_the_end() {
    let mut config = SimConfig::new(2, 9);
    // Two seconds each way: every round trip of the exchange takes four.
    config.latency_ms = (2_000, 2_000);
    config.sync_timeout_ms = 20_000;
    config.membership.probe_interval_ms = 20_000;
    config.membership.probe_timeout_ms = 10_000;
    config.passive = vec![0];
    let mut sim = Sim::new(config);
    sim.run_for(30_000);
    sim.crash(1);
    // About 20 MB: some 20 replies of at most 1 MiB, 80 seconds at least.
    let value = "v".repeat(10_000);
    for i in 0..2_000 {
        sim.write(0, Write::put_text(&format!("k{i}"), &value));
    }
    sim.restart(1);
    assert!(
        run_until(&mut sim, 400_000, |sim| same_digests(sim, 0..2)),
        "n2 did not catch up"
    );
    let stats = sim.node(1).map(|n| n.cluster_stats()).unwrap();
    assert!(stats.sync_rounds >= 20, "{} rounds", stats.sync_rounds);
    assert_eq!(
        stats.sync_abandoned, 0,
        "an exchange that kept getting answers was abandoned"
    );
}

fn delete(key: &str) -> Write {
    Write::KvDelete { key: key.into() }
}

/// Whether node `i` has any record of `key` (a value or a tombstone).
fn has_record(sim: &Sim, i: usize, key: &str) -> bool {
    sim.read(i, &StoreKey::kv(key)).is_some()
}

fn tombstones_held(sim: &Sim, i: usize) -> usize {
    sim.node(i).map_or(0, |n| n.tombstones_held())
}

/// Runs until `done` holds, checking every 500 virtual ms; false if `limit_ms` passes first.
fn run_until(sim: &mut Sim, limit_ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
    let deadline = sim.now() + limit_ms;
    while sim.now() < deadline {
        sim.run_for(500);
        if done(sim) {
            return true;
        }
    }
    false
}

fn same_digests(sim: &Sim, nodes: std::ops::Range<usize>) -> bool {
    let first = sim.digest(nodes.start);
    nodes.into_iter().all(|i| sim.digest(i) == first)
}

#[test]
fn tombstones_go_once_every_member_has_seen_them() {
    let mut sim = Sim::new(SimConfig::new(4, 21));
    sim.run_for(8_000);
    for i in 0..6 {
        sim.write(i % 4, Write::put_text(&format!("k{i}"), "v"));
    }
    sim.run_for(1_000);
    for i in 0..3 {
        sim.write(3 - i, delete(&format!("k{i}")));
    }
    sim.run_for(500);
    assert!((0..4).all(|i| tombstones_held(&sim, i) == 3));
    let collected = run_until(&mut sim, 60_000, |sim| {
        (0..4).all(|i| tombstones_held(sim, i) == 0) && same_digests(sim, 0..4)
    });
    assert!(
        collected,
        "tombstones still held: {:?}",
        (0..4).map(|i| tombstones_held(&sim, i)).collect::<Vec<_>>()
    );
    for i in 0..4 {
        for k in 0..3 {
            assert!(
                !has_record(&sim, i, &format!("k{k}")),
                "n{} kept k{k}",
                i + 1
            );
        }
        for k in 3..6 {
            assert!(holds(&sim, i, &format!("k{k}")), "n{} lost k{k}", i + 1);
        }
        assert_eq!(sim.digest(i).map(|d| d.count), Some(3));
    }
}

#[test]
fn a_member_back_after_the_grace_period_does_not_bring_deleted_keys_back() {
    let mut config = SimConfig::new(4, 23);
    config.tombstones.grace_ms = 20_000;
    let mut sim = Sim::new(config);
    sim.run_for(8_000);
    sim.write(0, Write::put_text("gone", "old"));
    sim.write(1, Write::put_text("kept", "v"));
    sim.run_for(1_000);
    assert!((0..4).all(|i| holds(&sim, i, "gone")));
    // n4 goes down holding "gone"; the others delete it.
    sim.crash(3);
    sim.run_for(1_000);
    sim.write(0, delete("gone"));
    // Within the grace period the down member holds collection back.
    sim.run_for(15_000);
    assert!((0..3).all(|i| tombstones_held(&sim, i) == 1));
    // After it, the others collect without it.
    assert!(run_until(&mut sim, 40_000, |sim| (0..3)
        .all(|i| tombstones_held(sim, i) == 0)));
    assert!((0..3).all(|i| !has_record(&sim, i, "gone")));
    // n4 returns with its old value: it must not spread it, and ends up dropping it.
    sim.restart(3);
    assert!(holds(&sim, 3, "gone"));
    let healed = run_until(&mut sim, 60_000, |sim| {
        same_digests(sim, 0..4) && !has_record(sim, 3, "gone")
    });
    assert!(healed, "no convergence after n4 came back");
    for i in 0..4 {
        assert!(
            !has_record(&sim, i, "gone"),
            "n{} has the deleted key back",
            i + 1
        );
        assert!(holds(&sim, i, "kept"));
    }
    let forgotten: u64 = sim
        .node(3)
        .map_or(0, |n| n.cluster_stats().values_forgotten);
    assert_eq!(forgotten, 1);
    // Having resynced, n4 refuses such old values itself from now on.
    let horizon = sim.store(3).collected_through();
    assert!(horizon > Timestamp::ZERO && horizon == sim.store(0).collected_through());
}

#[test]
fn a_minority_keeps_its_tombstones_while_the_majority_collects() {
    let mut config = SimConfig::new(3, 29);
    config.tombstones.grace_ms = 10_000;
    let mut sim = Sim::new(config);
    sim.run_for(8_000);
    sim.write(0, Write::put_text("a", "v"));
    sim.write(1, Write::put_text("b", "v"));
    sim.run_for(1_000);
    sim.partition(&[0, 1, 1]);
    sim.write(0, delete("a"));
    sim.write(1, delete("b"));
    // Long past the grace period: only the majority side collects.
    assert!(run_until(&mut sim, 60_000, |sim| (1..3)
        .all(|i| tombstones_held(sim, i) == 0)));
    sim.run_for(20_000);
    assert_eq!(tombstones_held(&sim, 0), 1, "the minority node collected");
    sim.heal();
    let healed = run_until(&mut sim, 60_000, |sim| {
        same_digests(sim, 0..3) && (0..3).all(|i| tombstones_held(sim, i) == 0)
    });
    assert!(healed, "no convergence after the heal");
    for i in 0..3 {
        assert!(!has_record(&sim, i, "a") && !has_record(&sim, i, "b"));
    }
}

#[test]
fn a_restarted_node_without_seeds_waits_to_rejoin_before_collecting() {
    let mut sim = Sim::new(SimConfig::new(3, 31));
    sim.run_for(8_000);
    sim.write(0, Write::put_text("k", "v"));
    sim.run_for(500);
    // n2 and n3 are cut off before the delete reaches them.
    sim.partition(&[0, 1, 1]);
    sim.write(0, delete("k"));
    // n1 (started without seeds) restarts knowing no member: it is not alone, it has not
    // rejoined yet, so it must keep its tombstone however long it waits.
    sim.crash(0);
    sim.restart(0);
    sim.run_for(30_000);
    assert_eq!(tombstones_held(&sim, 0), 1, "n1 collected while cut off");
    assert!((1..3).all(|i| holds(&sim, i, "k")));
    sim.heal();
    let collected = run_until(&mut sim, 60_000, |sim| {
        (0..3).all(|i| !has_record(sim, i, "k")) && same_digests(sim, 0..3)
    });
    assert!(collected, "the delete did not win and go everywhere");
}

/// A put of `text` under `key` that expires `ttl_ms` after its timestamp.
fn put_expiring(key: &str, text: &str, ttl_ms: u64) -> Write {
    match Write::put_text(key, text) {
        Write::KvPut { key, value, .. } => Write::KvPut {
            key,
            value,
            ttl_ms: Some(ttl_ms),
        },
        other => other,
    }
}

/// The value node `i` serves for `key` now, by its own clock (`None`: absent, deleted or
/// expired).
fn live_text(sim: &Sim, i: usize, key: &str) -> Option<String> {
    match sim.read(i, &StoreKey::kv(key)) {
        Some(KeyState::Register(r)) => r
            .live_value(sim.clock_of(i))
            .map(|v| String::from_utf8_lossy(&v.data).into_owned()),
        _ => None,
    }
}

#[test]
fn an_expired_value_is_gone_on_every_node_is_collected_and_never_returns() {
    for seed in [41, 42, 43] {
        let mut config = SimConfig::new(3, seed);
        config.tombstones.grace_ms = 10_000;
        let mut sim = Sim::new(config);
        // Clocks a little apart, within the bound.
        sim.set_skew(1, 150);
        sim.set_skew(2, -150);
        sim.run_for(8_000);
        let ack = sim.write(0, put_expiring("lease", "held", 5_000)).unwrap();
        let expires = ack.expires.expect("the ack names the expiry").wall_ms();
        assert_eq!(expires, ack.timestamp.wall_ms() + 5_000);
        assert!(run_until(&mut sim, 2_000, |sim| (0..3).all(|i| live_text(
            sim, i, "lease"
        )
        .as_deref()
            == Some("held"))));
        // n3 is cut off holding the value; everyone's copy expires by its own clock.
        sim.partition(&[0, 0, 1]);
        assert!(run_until(&mut sim, 8_000, |sim| (0..3)
            .all(|i| live_text(sim, i, "lease").is_none())));
        for i in 0..3 {
            assert!(
                sim.clock_of(i) + 200 >= expires,
                "seed {seed}: n{i} saw it expire early"
            );
        }
        // The majority collects it like a tombstone; the minority keeps its copy.
        assert!(
            run_until(&mut sim, 90_000, |sim| !has_record(sim, 0, "lease")
                && !has_record(sim, 1, "lease")),
            "seed {seed}: the expired value was not collected"
        );
        assert!(has_record(&sim, 2, "lease"));
        sim.heal();
        let healed = run_until(&mut sim, 60_000, |sim| {
            same_digests(sim, 0..3) && (0..3).all(|i| !has_record(sim, i, "lease"))
        });
        assert!(healed, "seed {seed}: the expired value came back or stayed");
        assert_eq!(tombstones_held(&sim, 2), 0);
    }
}

#[test]
fn a_write_after_an_expiring_value_replaces_it_and_its_expiry() {
    let mut sim = Sim::new(SimConfig::new(3, 47));
    sim.run_for(8_000);
    sim.write(0, put_expiring("k", "short", 2_000)).unwrap();
    sim.run_for(500);
    // A plain write on another node before the expiry: it wins and never expires.
    sim.write(1, Write::put_text("k", "kept")).unwrap();
    // And an expiring write on a key deleted before it: it lives until its own expiry.
    sim.write(2, delete("d")).unwrap();
    sim.run_for(10);
    let ack = sim.write(2, put_expiring("d", "again", 30_000)).unwrap();
    sim.run_for(5_000);
    for i in 0..3 {
        assert_eq!(live_text(&sim, i, "k").as_deref(), Some("kept"), "n{i}");
        assert_eq!(live_text(&sim, i, "d").as_deref(), Some("again"), "n{i}");
    }
    assert!(same_digests(&sim, 0..3));
    let expires = ack.expires.unwrap().wall_ms();
    sim.run_for(expires.saturating_sub(sim.clock_of(2)) + 1_000);
    assert!((0..3).all(|i| live_text(&sim, i, "d").is_none()));
}

/// The text node `i` holds for `key` (its store, what a client reads there).
fn text(sim: &Sim, i: usize, key: &str) -> Option<String> {
    match sim.read(i, &StoreKey::kv(key)) {
        Some(KeyState::Register(r)) => r.value.map(|v| String::from_utf8_lossy(&v.data).into()),
        _ => None,
    }
}

/// Whether node `i`'s disk holds `key`'s register written at `timestamp` (as the simulator
/// tracks what each node made durable).
fn durable_at(sim: &Sim, i: usize, key: &str, timestamp: Timestamp) -> bool {
    sim.durable_change(i, &StoreKey::kv(key))
        .is_some_and(|c| c.timestamp == timestamp)
}

fn names(tally: &Tally) -> Vec<String> {
    tally.answered.iter().map(|id| id.to_string()).collect()
}

/// Three nodes with disks that sync in 0.1 to 2 ms (answers wait for the sync, as in
/// production), started and joined.
fn three_with_disks(seed: u64, anti_entropy: bool) -> Sim {
    let mut config = SimConfig::new(3, seed);
    config.latency_ms = (1, 5);
    config.fsync_us = Some((100, 2_000));
    if !anti_entropy {
        config.anti_entropy_interval_ms = u64::MAX / 4; // rumors only
    }
    let mut sim = Sim::new(config);
    sim.run_for(8_000);
    sim
}

#[test]
fn a_write_for_every_member_times_out_while_one_is_cut_off_and_is_met_once_healed() {
    let mut sim = three_with_disks(61, true);
    sim.partition(&[0, 0, 1]);
    let all = |timeout_ms| Wait {
        level: Level::All,
        timeout_ms,
    };
    let issued = sim.now();
    let Some(WriteOutcome::Waited(cut)) =
        sim.write_waiting(0, Write::put_text("k", "v1"), all(1_000))
    else {
        panic!("the write was not answered after waiting");
    };
    let tally = cut.ack.replicas.clone().expect("a tally");
    assert!(!tally.met(), "met while n3 was cut off: {tally:?}");
    assert_eq!(
        (names(&tally), tally.required),
        (vec!["n1".into(), "n2".into()], 3)
    );
    // Answered at its deadline, not before.
    assert!(
        cut.at_us / 1_000 >= issued + 1_000,
        "timed out after {} ms",
        cut.at_us / 1_000 - issued
    );
    // The write stays applied where it was taken and spreads to whom it can.
    assert_eq!(text(&sim, 0, "k").as_deref(), Some("v1"));
    assert_eq!(text(&sim, 1, "k").as_deref(), Some("v1"));
    assert_eq!(text(&sim, 2, "k"), None);
    sim.heal();
    sim.run_for(2_000);
    let Some(WriteOutcome::Waited(healed)) =
        sim.write_waiting(0, Write::put_text("k", "v2"), all(5_000))
    else {
        panic!("the write was not answered after waiting");
    };
    let tally = healed.ack.replicas.clone().expect("a tally");
    assert!(tally.met(), "not met once healed: {tally:?}");
    assert_eq!(
        (names(&tally), tally.required),
        (vec!["n1".into(), "n2".into(), "n3".into()], 3)
    );
    // When it was answered, every node's disk held it.
    for (i, durable) in healed.durable.iter().enumerate() {
        let at = durable.as_ref().map(|c| c.timestamp);
        assert_eq!(at, Some(healed.ack.timestamp), "node {i}'s disk");
    }
    assert!((0..3).all(|i| durable_at(&sim, i, "k", healed.ack.timestamp)));
    assert!((0..3).all(|i| text(&sim, i, "k").as_deref() == Some("v2")));
}

#[test]
fn a_majority_read_brings_what_the_others_hold_and_repairs_the_stale() {
    // Anti-entropy off: only rumors and reads carry writes. A node misses a write while its
    // disk is full (it cannot merge) until the write's rumors give up, staying a member all
    // along (a partition would have the others catch it up with an exchange when it is back).
    let mut sim = three_with_disks(67, false);
    let majority = Wait {
        level: Level::Majority,
        timeout_ms: 2_000,
    };
    let miss = |sim: &mut Sim, stale: usize, writer: usize, key: &str, text: &str| {
        sim.set_disk_full(stale, true);
        let written = sim
            .write(writer, Write::put_text(key, text))
            .expect("an ack");
        sim.run_for(20_000);
        sim.set_disk_full(stale, false);
        sim.run_for(2_000);
        assert!(
            !has_record(sim, stale, key),
            "node {stale} got {key} without a read"
        );
        written
    };
    // n3 misses "a", held by the two others; a read at n3 brings it.
    let written = miss(&mut sim, 2, 0, "a", "held by two");
    assert!(holds(&sim, 0, "a") && holds(&sim, 1, "a"));
    let Some(ReadOutcome::Answered { tally, state, .. }) =
        sim.read_waiting(2, StoreKey::kv("a"), majority)
    else {
        panic!("the read was not answered after waiting");
    };
    assert!(tally.met(), "{tally:?}");
    assert_eq!((tally.answered.len(), tally.required), (2, 2));
    assert!(matches!(state, Some(KeyState::Register(r)) if r.timestamp == written.timestamp));
    // The reader keeps what it read, durably.
    assert_eq!(text(&sim, 2, "a").as_deref(), Some("held by two"));
    assert!(durable_at(&sim, 2, "a", written.timestamp));

    // n2 misses "b"; a read at n1 while n3 is cut off is answered by n2, which the read then
    // repairs.
    let written = miss(&mut sim, 1, 0, "b", "new");
    assert!(holds(&sim, 2, "b"));
    sim.partition(&[0, 0, 1]);
    let Some(ReadOutcome::Answered { tally, state, .. }) =
        sim.read_waiting(0, StoreKey::kv("b"), majority)
    else {
        panic!("the read was not answered after waiting");
    };
    assert!(tally.met(), "{tally:?}");
    assert_eq!(names(&tally), vec!["n1".to_string(), "n2".to_string()]);
    assert!(matches!(state, Some(KeyState::Register(r)) if r.timestamp == written.timestamp));
    sim.run_for(100);
    assert_eq!(
        text(&sim, 1, "b").as_deref(),
        Some("new"),
        "n2 not repaired"
    );
    assert!(durable_at(&sim, 1, "b", written.timestamp));
}
