//! Deterministic simulation testing: random workloads (kv writes and deletes, one put in four
//! expiring after 0.5 to 8 s, one kv write in three waiting for `w=all` or `w=majority`,
//! `r=majority` reads, set adds and removes) under random faults, over many seeds, on the
//! production protocol code. The disks
//! behave as in production: a group of writes is durable only once its simulated fsync completes
//! (0.1 to 5 ms), and only then are its acknowledgements, anti-entropy answers and messages
//! released, so a client learns of its write asynchronously and a crash loses what was not yet
//! durable. Network faults are always on (loss, duplication, latency with per-link delays, small
//! clock skew and drift); up to two of these faults at once, starting and ending mid-run:
//!
//! - a partition, a crash (then a restart from what was durable), a pause (SIGSTOP);
//! - a clock stepped seconds to minutes ahead or behind on one node, then fixed (timers keep
//!   running through the steps back: a node stepped behind still probes, finds out that its
//!   clock is off and refuses writes);
//! - a full disk on one node (every store write fails), then room again;
//! - syncs that fail on one node for a while (a failed group must leave no trace);
//! - a hostile participant that joins like a member and sends well-formed lies (`hostile.rs`),
//!   then falls silent and is forced out by an operator.
//!
//! Tombstones are always collected (two-second minimum age). In half of the seeds the grace and
//! reap periods last days, as by default; in the other half dead members are reaped within a
//! minute (so that a hostile participant forced out stops holding collection back within the
//! run), and the workload writes more keys and deletes more, so keys stay deleted long enough to
//! be collected. Half of those (a quarter of all seeds) have grace and reap periods of seconds
//! instead, and a partition, crash or pause sometimes outlasts them, so a node comes back after
//! the others collected without it and loses its unreplicated older writes, as documented; in
//! the other seeds no fault keeps a node away for long.
//!
//! What is checked:
//! - right after each write, at the node that took it (before it is durable): it reads its own
//!   write (a kv write's timestamp exceeds all the node has seen; a removed element is gone; an
//!   add minted one fresh dot of the node's own), and the write's timestamp is within the skew
//!   bound of the writer's own clock (no peer dragged its clock ahead).
//! - after every step, and every 500 ms while waiting for convergence, on every node (a crashed
//!   node's durable store too): each register is a write the node took, with its value, and
//!   never one answered with an error or refused; a node's register never goes back to an older
//!   write, so once a node has seen a delete the key never shows there again until a newer write
//!   (after a crash, "older" is judged against what was durable), and it drops a value only as
//!   the grace period allows (below); likewise an add's dot that a node dropped never comes back
//!   there, and no dot of a failed add ever shows. A node whose clock is off from enough
//!   reachable peers to tell ([`measurable`]) refuses writes within [`MEASURE_MS`]. Every lie
//!   the hostile participant tells that a core can detect is counted by its target (indirect
//!   probes of strangers and anti-entropy pushes of the wrong kind included).
//! - after every heal of all faults (the workload holds meanwhile) and at the end: all honest
//!   nodes converge (equal digests, everyone alive in every view, the hostile participants
//!   gone) within [`CONVERGE_MS`] plus however far ahead of real time the furthest write is
//!   stamped (a write from a clock nobody could measure waits until real time reaches it);
//!   every node that had a disk fault takes writes again; then every key holds its last
//!   acknowledged write unless that write may be lost as documented: a node away longer than
//!   the grace period loses its unreplicated writes older than the collected tombstones
//!   ([`Oracle::excusable`]); an acknowledged write may lose to a write issued before it in real
//!   time only if that write came from a node whose clock was within the bound, or one that
//!   could not yet have measured its own; every set equals an add-wins oracle on every node;
//!   rumor bookkeeping stays bounded by the number of members.
//! - at the end: every tombstone is collected on every node within [`COLLECT_MS`] (plus however
//!   far ahead a clock ran; a disk fault that dropped an anti-entropy request fails its session
//!   at once, so it does not stall the stability reports), and the cluster still matches the
//!   oracles.
//! - consistency levels: one kv write in three waits for other members (`w=all` or
//!   `w=majority`, for 200 ms to 5 s; the simulator answers it as the runtime does, once the
//!   core ends the wait, after the sync of the group that ended it), and at one step in four an
//!   `r=majority` read of a kv key starts at a random node (half of the time a key with a
//!   `w=majority` write answered as met). Each wait's tally names its node first and nobody
//!   twice and requires what the level asks of the members its node counted; a wait ends unmet
//!   no earlier than its deadline (unless its node's clock was stepped meanwhile); a write
//!   answered met or timed out counts as acknowledged (it is durable on its node), one answered
//!   with an error as failed (it must leave no trace), one whose node crashed first as unknown
//!   (it spread before its answer: a delete of unknown fate may be what a node collected). A
//!   write answered as met is, at that moment, on the disk of every node its tally counts and,
//!   with `w=all`, of every member its writer counted: what each disk holds of the key is that
//!   write or a newer one ([`Oracle::check_waited`], by `Sim::durable_change`). An
//!   `r=majority` read answered as met that started after a `w=majority` write of its key was
//!   answered as met, its reader counting the same members as the writer did, sees that write
//!   or a newer one, unless the key was collected since or the write lost as the grace period
//!   allows ([`Oracle::check_read`]).
//!
//! A write whose node crashed before it was acknowledged is unknown: it may or may not survive,
//! but if it shows anywhere it is the value written (for sets: its dot, under its element). The
//! set oracle follows dots: each add is identified by the dot it minted (read back from the
//! adding node's set), and each add or remove records the dots of its element visible at its
//! node just before it: what it observed, and so removed (a remove) or replaced by its own dot
//! (an add). An acknowledged add's dot survives iff no acknowledged operation observed it; one
//! observed only by unknown operations, or minted by an unknown add, may or may not. A rule that
//! does not depend on dots backs it up: an element added after every remove of it was issued
//! must be present.
//!
//! A failing seed prints the command that replays it (a panic in the core fails the seed too).
//! Seeds run on every core.
//!
//!     HEARSAY_DST_SEEDS=5000 cargo test --release --test sim_dst     # a longer run
//!     HEARSAY_DST_SEED=1234 cargo test --test sim_dst                 # replay one seed
//!     HEARSAY_DST_SEED=1234 HEARSAY_DST_TRACE=1 cargo test --test sim_dst -- --nocapture
//!                                                # what happens in it (faults, outcomes)
//!     HEARSAY_DST_COVERAGE=1 cargo test --test sim_dst -- --nocapture
//!                                                # how often each fault and allowance came up
//!
//! Switches (`HEARSAY_DST_SWITCHES`, comma-separated, all off by default) add faults the core
//! does not withstand yet, or break the simulator on purpose to show that an oracle catches it:
//!
//! - `insider-lies`: the hostile participant also tells lies stamped within the skew bound
//!   (horizons, stability reports, `Forget` frames it is entitled to by its own horizon) and
//!   plausible verdicts that a member left.
//! - `release-before-sync`: the simulated driver releases acknowledgements and messages before
//!   the group's sync completes.
//! - `unbounded-skew`: the nodes accept peer timestamps however far ahead (a skew bound of
//!   centuries), while the oracles keep the contract's 500 ms.
//! - `no-ttl`: no put expires: the runs every seed had before TTLs (seeds recorded then replay
//!   with it).
//! - `counters`: one set write in ten is a counter add; every node must end between the sum of
//!   the acknowledged adds and that sum plus the adds of unknown fate. It changes every seed's
//!   run: with `no-ttl`, seeds 470 and 497 found a kv bug there (a deleted key back, see
//!   `a_value_forgotten_on_a_peers_word_is_not_taken_back`), and 579 ended with tombstones never
//!   collected 60 s after the heal (it no longer does: the runs changed since). The cause is
//!   what `no-levels` seed 259 still shows: one node's exchanges with one peer keep failing for
//!   a minute, because an exchange takes several rounds and the simulator loses each like a
//!   datagram (7% there), where production sends them over TCP; a pair of members that cannot
//!   complete an exchange holds collection back by design. 1,000 seeds pass with it.
//! - `no-levels`: no consistency levels in the workload: the runs seeds had before them (the
//!   regression seeds recorded then replay with it). Consistency levels found two bugs when
//!   they came, fixed since: a write that waited, durable and spread, was answered with an
//!   error when the group carrying its answer failed its sync later, in about one seed in eight;
//!   and a `w=all` write was answered as met though a member its writer counted never
//!   acknowledged it (an acknowledgement from a member that joined the writer's view during the
//!   wait stood in for it), in about one seed in seventy. With `no-ttl`, seed 914 found a third,
//!   fixed too: a stale `r=majority` read. n4, cut off longer than the grace and reap periods,
//!   still held a value older than a delete that the others took with `w=majority` and
//!   collected without it; its read was answered by n3, which had collected that delete and so
//!   answered nothing, and n4 returned its old value. A read's answer now carries the
//!   answerer's collection horizon: the reader forgets a value no newer (as a peer's `Forget`
//!   makes it), and does not count an answer whose horizon is beyond its clock bound.

use hearsay::clock::{Dot, NodeId, Timestamp};
use hearsay::crdt::{KeyState, OrSet, Value};
use hearsay::gossip::rumor::SEEN_WINDOW;
use hearsay::membership::{MemberState, MembershipConfig};
use hearsay::node::{Level, Tally, TombstoneConfig, Wait, Write};
use hearsay::sim::hostile::Lie;
use hearsay::sim::{
    ReadOutcome, Refused, Sim, SimConfig, SimStats, Waited, WriteOutcome, SIM_EPOCH_MS,
};
use hearsay::store::{Leaf, Store, StoreKey};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

/// Seeds a plain `cargo test` runs (about a minute on two cores); `HEARSAY_DST_SEEDS` runs more.
const DEFAULT_SEEDS: u64 = 300;
const NODES: usize = 5;
/// Kv keys written; in the seeds that reap dead members within the run, [`MANY_KEYS`], so that a
/// key stays deleted long enough for its tombstone to be collected.
const KEYS: usize = 12;
const MANY_KEYS: usize = 60;
const SETS: usize = 3;
const ELEMENTS: usize = 4;
/// Virtual milliseconds of workload, and the bound on convergence once everything heals.
const WORKLOAD_MS: u64 = 15_000;
const CONVERGE_MS: u64 = 40_000;
/// The bound on collecting every tombstone once the cluster has converged.
const COLLECT_MS: u64 = 60_000;
/// The contract's skew bound (`--max-clock-skew-ms`, default 500).
const BOUND_MS: u64 = 500;
/// Two clocks further apart than this are certainly beyond the bound for a probe's measurement
/// (the bound plus the largest round-trip uncertainty, with room to spare).
const BEYOND_MS: u64 = BOUND_MS + 400;
/// A node whose clock is off and that can measure enough peers ([`measurable`]) refuses writes
/// within this long: a few rounds of probes (one peer per second, lost ones included) and a tick.
const MEASURE_MS: u64 = 20_000;
/// Simulated fsync latency, microseconds.
const FSYNC_US: (u64, u64) = (100, 5_000);
/// A member declared dead takes at least this long after it went away (a probe period, then the
/// suspicion timeout): the grace period starts only then.
const DETECTION_MS: u64 = 3_000;
/// Unless grace periods are meant to elapse (a quarter of the seeds), no fault that keeps a node away is
/// injected while some node has been away this long, well short of the shortest reap period.
const AWAY_GUARD_MS: u64 = 20_000;

/// Faults and broken drivers that are off by default (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Switches {
    /// Counter adds in the workload (off by default: seed 579, with `no_ttl`, then ends with
    /// tombstones never collected; see the module doc).
    counters: bool,
    /// No TTLs in the workload: the runs seeds had before puts could expire (the regression
    /// seeds recorded then replay with it).
    no_ttl: bool,
    insider_lies: bool,
    release_before_sync: bool,
    unbounded_skew: bool,
    /// No consistency levels in the workload: the runs seeds had before them (the regression
    /// seeds recorded then replay with it).
    no_levels: bool,
}

impl Switches {
    fn from_env() -> Self {
        let mut switches = Switches::default();
        let names = std::env::var("HEARSAY_DST_SWITCHES").unwrap_or_default();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "counters" => switches.counters = true,
                "no-ttl" => switches.no_ttl = true,
                "insider-lies" => switches.insider_lies = true,
                "release-before-sync" => switches.release_before_sync = true,
                "unbounded-skew" => switches.unbounded_skew = true,
                "no-levels" => switches.no_levels = true,
                other => panic!("unknown switch {other:?} in HEARSAY_DST_SWITCHES"),
            }
        }
        switches
    }

    /// The environment that replays a seed under these switches.
    fn replay(&self, seed: u64) -> String {
        let names = std::env::var("HEARSAY_DST_SWITCHES").unwrap_or_default();
        if names.trim().is_empty() {
            format!("HEARSAY_DST_SEED={seed} cargo test --test sim_dst")
        } else {
            format!(
                "HEARSAY_DST_SEED={seed} HEARSAY_DST_SWITCHES={} cargo test --test sim_dst",
                names.trim()
            )
        }
    }
}

/// Runs one seed; on success returns what a replay must reproduce exactly: the converged digest,
/// the network counters and the virtual time at the end.
fn run_seed(seed: u64, switches: Switches) -> Result<(Option<Leaf>, SimStats, u64), String> {
    let mut config = SimConfig::new(NODES, seed);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    config.loss = rng.gen_range(0.0..0.1);
    config.duplicate = rng.gen_range(0.0..0.05);
    config.latency_ms = (1, rng.gen_range(2..60));
    config.max_skew_ms = rng.gen_range(0..200);
    config.max_drift_ppm = rng.gen_range(0..500);
    config.link_spread_ms = rng.gen_range(0..30);
    config.fsync_us = Some(FSYNC_US);
    config.release_before_sync = switches.release_before_sync;
    if switches.unbounded_skew {
        config.max_clock_skew_ms = 100 * 365 * 86_400_000;
    }
    // Half of the seeds keep the default grace and reap periods (days). In the other half, dead
    // members are reaped within a minute, so that a hostile participant forced out stops holding
    // collection back within the run; in half of those, grace and reap periods last seconds
    // instead, and faults outlast them.
    let short = rng.gen_bool(0.5);
    let elapses = short && rng.gen_bool(0.5);
    if elapses {
        let grace_ms = rng.gen_range(3_000..12_000);
        config.tombstones = TombstoneConfig {
            min_age_ms: 2_000,
            grace_ms,
        };
        config.membership = MembershipConfig {
            reap_after_ms: rng.gen_range(4_000..30_000),
            ..MembershipConfig::for_sim()
        };
    } else if short {
        config.membership = MembershipConfig {
            reap_after_ms: rng.gen_range(40_000..60_000),
            ..MembershipConfig::for_sim()
        };
    }
    // Keys also stay deleted longer in those (more keys, more deletes), so that a node coming
    // back after collections may hold writes of keys the others collected.
    let workload = if short {
        Workload {
            keys: MANY_KEYS,
            deletes: rng.gen_range(1..=3),
            counters: switches.counters,
            ttl: !switches.no_ttl,
        }
    } else {
        Workload {
            keys: KEYS,
            deletes: 1,
            counters: switches.counters,
            ttl: !switches.no_ttl,
        }
    };
    let away_ms = config
        .tombstones
        .grace_ms
        .min(config.membership.reap_after_ms);
    let sim_reap_ms = config.membership.reap_after_ms;
    trace_config(&config);
    let mut sim = Sim::new(config);
    let mut world = World::new(&sim, elapses.then_some(away_ms), switches);
    world.reap_ms = short.then_some(sim_reap_ms);
    let mut oracle = Oracle::default();
    // Consistency levels draw from their own generator, so that without them seeds replay the
    // runs they had before.
    let mut levels = SmallRng::seed_from_u64(seed ^ 0x1e7e1);
    sim.run_for(3_000);
    world.observe(&sim);

    let mut end = sim.now() + WORKLOAD_MS;
    // Up to two faults at once (a crash during a partition, say): (ends at, what to undo).
    let mut faults: Vec<(u64, Fault)> = Vec::new();
    // New faults start until the end of the workload; the workload goes on until the last one
    // ended.
    while sim.now() < end || !faults.is_empty() {
        let ms = rng.gen_range(5..60);
        step(&mut sim, &mut oracle, &mut world, switches, ms)?;
        // The write goes first, so that a crash injected now may catch it before it is durable.
        let writer = rng.gen_range(0..NODES);
        let write = random_write(&mut rng, workload, format!("{seed}-{}", sim.now()));
        let wait = random_wait(&mut levels, switches, &write);
        oracle.write(&mut sim, &world, writer, write, wait)?;
        if !switches.no_levels && levels.gen_bool(0.25) {
            oracle.read(&mut sim, &mut levels, workload);
        }
        let now = sim.now();
        let (over, active): (Vec<_>, Vec<_>) = faults.iter().partition(|(until, _)| now >= *until);
        faults = active;
        for (_, f) in &over {
            trace(&sim, format_args!("undo {f:?}"));
            undo(&mut sim, &mut world, *f);
        }
        if !over.is_empty() && faults.is_empty() {
            // Everything healed: the workload holds until the cluster converges; the wait does
            // not count.
            let healed = sim.now();
            after_heal(&mut sim, &mut oracle, &mut world, switches)
                .map_err(|e| format!("after undoing {over:?} at {healed} ms: {e}"))?;
            end += sim.now() - healed;
        } else if faults.len() < 2 && sim.now() < end && rng.gen_bool(0.012) {
            let injected = inject(&mut sim, &mut oracle, &mut rng, &mut world, &faults, writer);
            if let Some(f) = injected {
                trace(&sim, format_args!("inject {f:?}"));
                note(format!(
                    "fault {}",
                    format!("{f:?}").split('(').next().unwrap_or_default()
                ));
                let long = world.away_ms.filter(|_| {
                    matches!(f, Fault::Partition | Fault::Crash(_) | Fault::Pause(_))
                        && rng.gen_bool(0.35)
                });
                let lasts = match (f, long) {
                    (_, Some(away)) => {
                        note("fault outlasting the grace or reap period");
                        away + DETECTION_MS + rng.gen_range(1_000..10_000)
                    }
                    (Fault::Skew(_), _) => rng.gen_range(2_000..60_000),
                    (Fault::Hostile, _) => rng.gen_range(3_000..15_000),
                    _ => rng.gen_range(500..8_000),
                };
                faults.push((sim.now() + lasts, f));
            }
        }
    }
    sim.heal();
    world.observe(&sim);
    after_heal(&mut sim, &mut oracle, &mut world, switches)
        .map_err(|e| format!("after the final heal: {e}"))?;
    collect_everything(&mut sim, &mut oracle, &mut world, switches)?;
    for i in 0..NODES {
        if let Some(stats) = sim.node(i).map(|n| n.cluster_stats()) {
            if stats.stale_values_refused > 0 {
                note("a node refused values older than a collected tombstone");
            }
            if stats.values_forgotten > 0 {
                note("a node forgot values a peer refused");
            }
        }
    }
    SIMULATED_MS.fetch_add(sim.now(), std::sync::atomic::Ordering::Relaxed);
    note(format!(
        "runs of {:>3}0 simulated seconds",
        sim.now() / 10_000
    ));
    Ok((sim.digest(0), sim.stats.clone(), sim.now()))
}

/// Simulated time over all seeds run (printed with the coverage).
static SIMULATED_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How often each fault and each allowance of the oracles came up, over all seeds run (printed
/// with `HEARSAY_DST_COVERAGE` set): a check that never fires proves nothing.
static COVERAGE: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

fn note(what: impl Into<String>) {
    let mut coverage = COVERAGE.lock().unwrap_or_else(|e| e.into_inner());
    *coverage.entry(what.into()).or_default() += 1;
}

/// With `HEARSAY_DST_TRACE` set, a replayed seed tells what happens to it.
fn tracing() -> bool {
    std::env::var_os("HEARSAY_DST_TRACE").is_some()
}

fn trace(sim: &Sim, what: std::fmt::Arguments) {
    if tracing() {
        eprintln!("{:>7} ms  {what}", sim.now());
    }
}

/// With `HEARSAY_DST_TRACE` set, shows the records the nodes disagree on (after no convergence).
fn trace_differences(sim: &Sim) {
    use hearsay::store::Store;
    use std::collections::{BTreeMap, BTreeSet};
    if !tracing() {
        return;
    }
    let mut records: Vec<BTreeMap<String, String>> = Vec::new();
    for i in 0..NODES {
        let mut held = BTreeMap::new();
        let store = sim.store(i);
        let _ = store.for_each_record(&mut |key, state| {
            held.insert(format!("{key:?}"), format!("{state:?}"));
            Ok(())
        });
        let mut count = 0;
        let mut xor = [0u8; 32];
        let _ = store.for_each_record(&mut |key, state| {
            count += 1;
            let h = hearsay::store::merkle::item_hash(&key, &state);
            xor.iter_mut().zip(h).for_each(|(a, b)| *a ^= b);
            Ok(())
        });
        let index = sim.node(i).map(|n| n.digest().count);
        eprintln!(
            "node {i} collected through {:?}; {count} records (xor {:02x}{:02x}), the index counts {index:?}",
            store.collected_through(),
            xor[0],
            xor[1]
        );
        records.push(held);
    }
    let keys: BTreeSet<&String> = records.iter().flat_map(|held| held.keys()).collect();
    for key in keys {
        let states: Vec<Option<&String>> = records.iter().map(|held| held.get(key)).collect();
        if states.iter().any(|state| *state != states[0]) {
            eprintln!("differs: {key}: {states:?}");
        }
    }
}

fn trace_config(config: &SimConfig) {
    if tracing() {
        eprintln!(
            "loss {:.3}, duplicate {:.3}, latency {:?} ms, grace {} ms, reap {} ms",
            config.loss,
            config.duplicate,
            config.latency_ms,
            config.tombstones.grace_ms,
            config.membership.reap_after_ms
        );
    }
}

/// Runs `ms` more milliseconds, learns what happened (write outcomes, lies told), and checks
/// what needs no convergence.
fn step(
    sim: &mut Sim,
    oracle: &mut Oracle,
    world: &mut World,
    switches: Switches,
    ms: u64,
) -> Result<(), String> {
    if let Some(e) = world.failure.take() {
        return Err(e);
    }
    sim.run_for(ms);
    oracle.outcomes(sim, world)?;
    oracle.read_outcomes(sim, world)?;
    // A node that rolled back a failed sync holds what it held at its last durable sync, as
    // after a crash.
    for i in sim.take_rollbacks() {
        oracle.crashed(sim, world, i)?;
    }
    world.observe(sim);
    world.check_lies(sim, switches)?;
    world.check_clocks(sim)?;
    oracle.check_held(sim, world)
}

/// Picks a fault that fits beside the ones active and injects it.
fn inject(
    sim: &mut Sim,
    oracle: &mut Oracle,
    rng: &mut SmallRng,
    world: &mut World,
    faults: &[(u64, Fault)],
    writer: usize,
) -> Option<Fault> {
    let switches = world.switches;
    let touched = |i: usize| {
        faults.iter().any(|(_, f)| {
            matches!(f, Fault::Crash(j) | Fault::Pause(j) | Fault::Skew(j)
                | Fault::DiskFull(j) | Fault::FailingSyncs(j) if *j == i)
        })
    };
    let partitioned = faults.iter().any(|(_, f)| matches!(f, Fault::Partition));
    // Unless grace periods are meant to elapse, no node stays away for long: faults that keep
    // it away wait.
    let kept_away = world.away_ms.is_none()
        && (0..NODES)
            .any(|i| world.away_since[i].is_some_and(|since| sim.now() - since > AWAY_GUARD_MS));
    let hostile = faults.iter().any(|(_, f)| matches!(f, Fault::Hostile));
    // Half of the time the node that just took a write, whose group may not be durable yet.
    let i = if rng.gen_bool(0.5) {
        writer
    } else {
        rng.gen_range(0..NODES)
    };
    let f = match rng.gen_range(0..7) {
        0 if !partitioned && !kept_away => {
            let groups: Vec<u32> = (0..NODES).map(|_| rng.gen_range(0..2)).collect();
            trace(sim, format_args!("partition groups {groups:?}"));
            sim.partition(&groups);
            Fault::Partition
        }
        1 if !touched(i) && !kept_away => {
            // At some point of the fsync window.
            sim.run_for_us(rng.gen_range(0..2 * FSYNC_US.1));
            sim.crash(i);
            // What it holds from now on is what was durable, which includes every write it
            // acknowledged.
            if let Err(e) = oracle.crashed(sim, world, i) {
                world.failure.get_or_insert(e);
            }
            Fault::Crash(i)
        }
        2 if !touched(i) && !kept_away => {
            sim.pause(i);
            Fault::Pause(i)
        }
        3 if !touched(i) => {
            // Seconds to minutes, log-uniform; at most two minutes ahead (a write stamped that
            // far ahead waits that long to replicate), ten minutes behind.
            let ahead = rng.gen_bool(0.5);
            let max: f64 = if ahead { 120_000.0 } else { 600_000.0 };
            let ms = rng.gen_range(1_500f64.ln()..max.ln()).exp() as i64;
            let skew = if ahead { ms } else { -ms };
            sim.set_skew(i, world.base_skew[i] + skew);
            world.skew_steps[i] += 1;
            Fault::Skew(i)
        }
        4 if !touched(i) => {
            sim.set_disk_full(i, true);
            world.disk_full[i] = true;
            Fault::DiskFull(i)
        }
        5 if !touched(i) => {
            sim.fail_syncs(i, true);
            world.failing[i] = true;
            Fault::FailingSyncs(i)
        }
        6 if !hostile && world.reap_ms.is_some() => {
            // Only where a member forced out stops holding collection back within the run (it
            // counts until the grace period has passed or it is reaped).
            let id = NodeId::new(format!("m{}", world.hostiles.len() + 1)).ok()?;
            sim.add_hostile(id.clone(), switches.insider_lies);
            world.hostiles.push((id, false));
            Fault::Hostile
        }
        _ => return None,
    };
    world.observe(sim);
    Some(f)
}

/// Once nothing is faulty: nodes that had disk faults take writes again, convergence within
/// the bound, then the oracles, then bounded rumor bookkeeping.
fn after_heal(
    sim: &mut Sim,
    oracle: &mut Oracle,
    world: &mut World,
    switches: Switches,
) -> Result<(), String> {
    for i in std::mem::take(&mut world.must_serve) {
        oracle.serves(sim, world, switches, i)?;
    }
    converge(sim, oracle, world, switches)?;
    oracle.check_converged(sim, world)?;
    let origins = NODES + world.hostiles.len();
    for i in 0..NODES {
        let seen = sim.node(i).map_or(0, |n| n.seen_entries());
        if seen > origins * (SEEN_WINDOW + 1) {
            return Err(format!("node {i} remembers {seen} rumor entries"));
        }
    }
    Ok(())
}

/// What the workload writes.
#[derive(Clone, Copy)]
struct Workload {
    keys: usize,
    /// Kv deletes in ten writes (kv writes are five in ten).
    deletes: u32,
    /// One set write in ten is a counter add instead.
    counters: bool,
    /// One put in four expires.
    ttl: bool,
}

/// 50% kv writes (puts and deletes); 50% set writes (adds, removes, or both on one set; one in
/// twenty clears the set) or, with the `counters` switch, one in ten of those counter adds.
fn random_write(rng: &mut SmallRng, workload: Workload, data: String) -> Write {
    // Distinct elements within a list: adding one element twice in one edit mints two dots,
    // the first replaced at once.
    let elements = |rng: &mut SmallRng, n: usize| -> Vec<String> {
        let first = rng.gen_range(0..ELEMENTS);
        (0..n)
            .map(|k| format!("e{}", (first + k) % ELEMENTS))
            .collect()
    };
    let key = format!("k{}", rng.gen_range(0..workload.keys));
    match rng.gen_range(0..10) {
        n if n < workload.deletes => Write::KvDelete { key },
        0..=4 => match Write::put_text(&key, &data) {
            // One put in four expires, after half a second to eight seconds.
            Write::KvPut { key, value, .. } if workload.ttl && rng.gen_ratio(1, 4) => {
                Write::KvPut {
                    key,
                    value,
                    ttl_ms: Some(rng.gen_range(500..8_000)),
                }
            }
            put => put,
        },
        n => {
            let key = format!("s{}", rng.gen_range(0..SETS));
            if rng.gen_ratio(1, 20) {
                return Write::SetClear { key };
            }
            if workload.counters && rng.gen_ratio(1, 10) {
                return Write::CounterAdd {
                    key: format!("c{}", rng.gen_range(0..2)),
                    amount: rng.gen_range(1..=5),
                };
            }
            let (adds, removes) = match n {
                5..=6 => (rng.gen_range(1..=2), 0),
                7..=8 => (0, rng.gen_range(1..=2)),
                _ => (1, 1),
            };
            Write::SetEdit {
                key,
                add: elements(rng, adds),
                remove: elements(rng, removes),
            }
        }
    }
}

/// One kv write (put or delete) in three waits for other members: half with `w=all`, half with
/// `w=majority`, for 200 ms to 5 s.
fn random_wait(rng: &mut SmallRng, switches: Switches, write: &Write) -> Option<Wait> {
    let kv = matches!(write, Write::KvPut { .. } | Write::KvDelete { .. });
    if switches.no_levels || !kv || !rng.gen_ratio(1, 3) {
        return None;
    }
    let level = if rng.gen_bool(0.5) {
        Level::All
    } else {
        Level::Majority
    };
    Some(Wait {
        level,
        timeout_ms: rng.gen_range(200..=5_000),
    })
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Partition,
    Crash(usize),
    Pause(usize),
    /// The node's clock stepped seconds to minutes away.
    Skew(usize),
    DiskFull(usize),
    FailingSyncs(usize),
    /// A hostile participant joined and lies.
    Hostile,
}

fn undo(sim: &mut Sim, world: &mut World, fault: Fault) {
    match fault {
        Fault::Partition => sim.heal(),
        Fault::Crash(i) => sim.restart(i),
        Fault::Pause(i) => sim.resume(i),
        Fault::Skew(i) => {
            // The clock is fixed; its HLC may stay ahead until real time catches up.
            let ahead = sim.skew_of(i) - world.base_skew[i];
            if ahead > 0 {
                world.catch_up = world.catch_up.max(sim.now() + ahead as u64);
            }
            sim.set_skew(i, world.base_skew[i]);
            world.skew_steps[i] += 1;
        }
        Fault::DiskFull(i) => {
            sim.set_disk_full(i, false);
            world.disk_full[i] = false;
            world.disk_room_since[i] = sim.now();
            world.must_serve.insert(i);
        }
        Fault::FailingSyncs(i) => {
            sim.fail_syncs(i, false);
            world.failing[i] = false;
            world.must_serve.insert(i);
        }
        Fault::Hostile => sim.silence_hostile(),
    }
    world.observe(sim);
}

/// Runs until [`converged`], at most [`CONVERGE_MS`] plus however far ahead of real time a
/// write is stamped, checking on the way what needs no convergence. An operator forces out
/// each hostile participant once it fell silent and some node sees it down.
fn converge(
    sim: &mut Sim,
    oracle: &mut Oracle,
    world: &mut World,
    switches: Switches,
) -> Result<(), String> {
    let deadline = sim.now() + CONVERGE_MS + oracle.ahead_ms(sim).max(world.ahead_ms(sim));
    loop {
        step(sim, oracle, world, switches, 500)?;
        world.force_out_hostiles(sim);
        if converged(sim, world) {
            return Ok(());
        }
        if sim.now() >= deadline {
            let digests: Vec<String> = (0..NODES)
                .map(|i| {
                    sim.digest(i)
                        .map(|d| d.hex()[..8].to_string())
                        .unwrap_or_default()
                })
                .collect();
            trace_differences(sim);
            return Err(format!(
                "no convergence within {CONVERGE_MS} ms: digests {digests:?}, views {:?}",
                (0..NODES).map(|i| sim.view(i)).collect::<Vec<_>>()
            ));
        }
    }
}

/// Once the workload is over and all is healed, every tombstone goes everywhere within a bound,
/// and the cluster then still matches the oracles.
fn collect_everything(
    sim: &mut Sim,
    oracle: &mut Oracle,
    world: &mut World,
    switches: Switches,
) -> Result<(), String> {
    let mut deadline = sim.now() + COLLECT_MS + oracle.ahead_ms(sim).max(world.ahead_ms(sim));
    // A member forced out holds collection back until it is reaped.
    deadline += world.reaped_by.saturating_sub(sim.now());
    loop {
        step(sim, oracle, world, switches, 500)?;
        let held: Vec<usize> = (0..NODES)
            .map(|i| sim.node(i).map_or(0, |n| n.tombstones_held()))
            .collect();
        if tracing() {
            let horizons: Vec<_> = (0..NODES)
                .map(|i| sim.store(i).collected_through())
                .collect();
            let stats: Vec<_> = (0..NODES)
                .map(|i| sim.node(i).map(|n| n.cluster_stats()))
                .collect();
            let stable: Vec<_> = (0..NODES)
                .map(|i| sim.node(i).map(|n| n.store().meta().stable_reported))
                .collect();
            trace(
                sim,
                format_args!(
                    "held {held:?}, horizons {horizons:?}, stable {stable:?}, stats {stats:?}"
                ),
            );
        }
        if held.iter().all(|&h| h == 0) && converged(sim, world) {
            return oracle.check_converged(sim, world);
        }
        if sim.now() >= deadline {
            return Err(format!(
                "tombstones still held {COLLECT_MS} ms after the final heal: {held:?}"
            ));
        }
    }
}

/// Equal digests everywhere, everyone honest sees every honest node alive, and no hostile
/// participant up.
fn converged(sim: &Sim, world: &World) -> bool {
    let first = sim.digest(0);
    let honest: Vec<&NodeId> = (0..NODES).map(|i| sim.id(i)).collect();
    (0..NODES).all(|i| sim.digest(i) == first)
        && (0..NODES).all(|i| {
            let view = sim.view(i);
            let alive = view
                .iter()
                .filter(|(id, s)| honest.contains(&id) && *s == MemberState::Alive)
                .count();
            let hostile_up = view.iter().any(|(id, s)| world.is_hostile(id) && s.is_up());
            alive == NODES && !hostile_up
        })
}

/// Whether node `i`'s clock is off from enough peers it can reach that its probes must find out
/// (its judge needs a strict majority of the members it holds samples of, itself counted as
/// agreeing with itself).
fn measurable(sim: &Sim, world: &World, i: usize) -> bool {
    if !sim.is_up(i) {
        return false;
    }
    let mine = sim.clock_of(i) as i64;
    let beyond = |clock: u64| (mine - clock as i64).unsigned_abs() > BEYOND_MS;
    let mut count = (0..NODES)
        .filter(|&p| {
            p != i && sim.is_up(p) && sim.group_of(p) == sim.group_of(i) && beyond(sim.clock_of(p))
        })
        .count();
    let hostile = sim.hostile().is_some_and(|h| !h.is_silent());
    // The hostile participant answers probes with the true time.
    if hostile && beyond(sim.real_clock()) {
        count += 1;
    }
    let members = NODES - 1 + world.hostiles.iter().filter(|(_, out)| !out).count();
    count * 2 > members + 1
}

/// What the simulated world was like over time, as the oracles need it.
struct World {
    switches: Switches,
    /// A check that failed where no error could be returned (when a fault was injected).
    failure: Option<String>,
    base_skew: [i64; NODES],
    /// The shorter of the grace and reap periods, in the runs where they elapse.
    away_ms: Option<u64>,
    /// The reap period, in the runs where a member forced out is reaped within the run.
    reap_ms: Option<u64>,
    /// When the last hostile participant forced out is reaped everywhere (simulated ms).
    reaped_by: u64,
    /// Per node: since when it has been away from a majority (crashed, paused or cut off), and
    /// the periods it was.
    away_since: [Option<u64>; NODES],
    away: [Vec<(u64, u64)>; NODES],
    /// Per node: since when it has been [`measurable`].
    measurable_since: [Option<u64>; NODES],
    /// Per node: it knew its clock was off at the last step (for coverage).
    found_out: [bool; NODES],
    /// Per node: how many times its clock was stepped (a step forward ends waits early).
    skew_steps: [u32; NODES],
    disk_full: [bool; NODES],
    /// When each node's disk last got room again (simulated ms).
    disk_room_since: [u64; NODES],
    failing: [bool; NODES],
    /// Real time (simulated ms) by which every clock that ran ahead has been caught up by real
    /// time (until then its node's clock may refuse to stamp).
    catch_up: u64,
    /// Nodes whose disk fault ended: they must take writes again.
    must_serve: BTreeSet<usize>,
    /// Every hostile participant, and whether an operator forced it out.
    hostiles: Vec<(NodeId, bool)>,
}

impl World {
    fn new(sim: &Sim, away_ms: Option<u64>, switches: Switches) -> Self {
        World {
            switches,
            failure: None,
            base_skew: std::array::from_fn(|i| sim.skew_of(i)),
            away_ms,
            reap_ms: None,
            reaped_by: 0,
            away_since: [None; NODES],
            away: Default::default(),
            measurable_since: [None; NODES],
            found_out: [false; NODES],
            skew_steps: [0; NODES],
            disk_full: [false; NODES],
            disk_room_since: [0; NODES],
            failing: [false; NODES],
            catch_up: 0,
            must_serve: BTreeSet::new(),
            hostiles: Vec::new(),
        }
    }

    fn is_hostile(&self, id: &NodeId) -> bool {
        self.hostiles.iter().any(|(h, _)| h == id)
    }

    /// How much longer than usual convergence may take because a clock ran ahead.
    fn ahead_ms(&self, sim: &Sim) -> u64 {
        self.catch_up.saturating_sub(sim.now())
    }

    /// Notes who is away and whose clock is measurable now (faults change between steps).
    fn observe(&mut self, sim: &Sim) {
        let now = sim.now();
        for i in 0..NODES {
            let with = (0..NODES)
                .filter(|&p| sim.is_up(p) && sim.group_of(p) == sim.group_of(i))
                .count();
            // A node restarted is still away until another node sees it up again (it may
            // not rejoin at once: its seeds may be down).
            let id = sim.id(i);
            let seen = (0..NODES)
                .filter(|&p| p != i && sim.is_up(p) && sim.group_of(p) == sim.group_of(i))
                .any(|p| {
                    sim.view(p)
                        .iter()
                        .any(|(m, state)| m == id && state.is_up())
                });
            let away = !sim.is_up(i) || with * 2 <= NODES || !seen;
            match (away, self.away_since[i]) {
                (true, None) => self.away_since[i] = Some(now),
                (false, Some(since)) => {
                    self.away[i].push((since, now));
                    self.away_since[i] = None;
                }
                _ => {}
            }
            let measurable = measurable(sim, self, i);
            match (measurable, self.measurable_since[i]) {
                (true, None) => self.measurable_since[i] = Some(now),
                (false, Some(_)) => self.measurable_since[i] = None,
                _ => {}
            }
        }
    }

    /// When node `i` came back (`now` if it has not) from the first time it was away longer
    /// than the grace (or reap) period after `t` (it was away then, or went away later).
    fn back_from_long_away(&self, i: usize, t: u64, now: u64) -> Option<u64> {
        let limit = self.away_ms?;
        let long = |&(a, b): &(u64, u64)| b > t && b - a > limit + DETECTION_MS;
        let ongoing = self.away_since[i].map(|a| (a, now));
        self.away[i]
            .iter()
            .chain(ongoing.as_ref())
            .find(|p| long(p))
            .map(|&(_, b)| b)
    }

    /// A node that has been able to measure its clock for [`MEASURE_MS`] refuses writes.
    fn check_clocks(&mut self, sim: &Sim) -> Result<(), String> {
        for i in 0..NODES {
            let Some(since) = self.measurable_since[i] else {
                self.found_out[i] = false;
                continue;
            };
            let status = sim.node(i).map(|n| n.clock_status());
            if status.is_some_and(|s| s.out_of_bounds) && !self.found_out[i] {
                let after = (sim.now() - since) / 1_000;
                note(format!("an off clock found out after {after:>2} s"));
            }
            if sim.now() - since >= MEASURE_MS {
                note("an off clock measurable for the whole bound (checked)");
            }
            if sim.now() - since >= MEASURE_MS && !status.is_some_and(|s| s.out_of_bounds) {
                return Err(format!(
                    "node {i}'s clock is {} ms off real time and it could measure enough peers for {} ms, yet it does not know: {status:?}",
                    sim.clock_of(i) as i64 - sim.real_clock() as i64,
                    sim.now() - since
                ));
            }
            self.found_out[i] = status.is_some_and(|s| s.out_of_bounds);
        }
        Ok(())
    }

    /// Every lie a core can detect is counted by its target.
    fn check_lies(&self, sim: &mut Sim, switches: Switches) -> Result<(), String> {
        for report in sim.take_lie_reports() {
            note(format!("lie {:?}, counted: {}", report.lie, report.counted));
            if report.counted || report.lie.counted_as().is_none() {
                continue;
            }
            // With an in-bound horizon announced, a forget request may be entitled.
            let entitled = switches.insider_lies && report.lie == Lie::ForgetLive;
            if entitled {
                continue;
            }
            return Err(format!(
                "node {} did not count a lie of the hostile participant at {} ms: {:?} (expected in {:?})",
                report.target,
                report.at_ms,
                report.lie,
                report.lie.counted_as()
            ));
        }
        if sim.stats.to_strangers > 0 {
            return Err(format!(
                "nodes sent {} messages to addresses no participant has (a reflected probe)",
                sim.stats.to_strangers
            ));
        }
        Ok(())
    }

    /// An operator forces out every silent hostile participant some node sees down.
    fn force_out_hostiles(&mut self, sim: &mut Sim) {
        for (id, out) in &mut self.hostiles {
            if *out {
                continue;
            }
            for i in 0..NODES {
                let down = sim
                    .view(i)
                    .iter()
                    .any(|(m, s)| m == id && !s.is_up() && *s != MemberState::Left);
                if down && sim.remove_member(i, id).is_ok() {
                    note("a hostile participant forced out");
                    let reap = self.reap_ms.unwrap_or(0);
                    self.reaped_by = self.reaped_by.max(sim.now() + reap + DETECTION_MS);
                    *out = true;
                    break;
                }
            }
        }
    }
}

/// A kv write's identity: its timestamp and node, ordered as the LWW register orders them.
type Stamp = (Timestamp, NodeId);

/// What a client knows of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Taken by the core, not yet answered.
    Pending,
    Acked,
    /// Answered with an error after the core had applied it: it must leave no trace.
    Failed,
    /// Its node crashed before answering: it may or may not survive.
    Unknown,
}

struct KvWrite {
    value: Option<Vec<u8>>,
    /// When the value expires (a put with a TTL).
    expires: Option<Timestamp>,
    status: Status,
    writer: usize,
    /// Simulated time it was issued (ms).
    issued: u64,
    /// The writer's clock was within the bound of real time.
    clock_ok: bool,
    /// The writer's clock was off and it had been able to measure that for long enough.
    known_off: bool,
    /// Nodes that held it durably, and since when.
    settled: BTreeMap<usize, u64>,
    /// The error it was answered with, and whether it waited for other members.
    failure: Option<(String, bool)>,
}

/// One add or remove of one element.
struct SetOp {
    element: String,
    /// The dot an add minted.
    dot: Option<Dot>,
    /// The dots of the element visible at the node just before: removed or replaced.
    observed: BTreeSet<Dot>,
    status: Status,
    /// Issue order.
    seq: u64,
}

impl KvWrite {
    /// The timestamp from which the write reads as a delete (written at `stamp`): its own for a
    /// delete, its expiry for a value that expires, none for a value that never does. A record
    /// of it may be collected once that time is below the collection horizon.
    fn gone_at(&self, stamp: &Stamp) -> Option<Timestamp> {
        match &self.value {
            None => Some(stamp.0),
            Some(_) => self.expires,
        }
    }
}

/// What was submitted under one write id.
enum Submitted {
    Kv {
        key: String,
        stamp: Stamp,
    },
    Set {
        key: String,
        ops: Vec<usize>,
    },
    /// A counter add, its amount.
    Counter {
        key: String,
        amount: i64,
    },
    /// Refused by the core at once: the outcome must be an error.
    Refused,
}

/// A kv write that waits for other members (`?w=`), until answered.
struct WaitInfo {
    key: String,
    stamp: Stamp,
    writer: usize,
    level: Level,
    timeout_ms: u64,
    /// The members its writer counted when it took the write (those not left, itself
    /// included).
    members: BTreeSet<NodeId>,
    /// Simulated time it was issued (µs).
    issued_us: u64,
    /// How many times the writer's clock had been stepped then ([`World::skew_steps`]).
    skew_steps: u32,
}

/// A `w=majority` write answered as met.
#[derive(Clone)]
struct MetWrite {
    stamp: Stamp,
    /// The members its writer counted.
    members: BTreeSet<NodeId>,
    /// The members that held it durably when it was answered.
    answered: BTreeSet<NodeId>,
}

/// An `r=majority` read not yet answered.
struct ReadInfo {
    key: String,
    reader: usize,
    /// The members the reader counted when it started.
    members: BTreeSet<NodeId>,
    /// The `w=majority` writes of the key answered as met before it started.
    after: Vec<MetWrite>,
}

fn value_of(
    kv: &BTreeMap<String, BTreeMap<Stamp, KvWrite>>,
    key: &str,
    stamp: &Stamp,
) -> Option<Vec<u8>> {
    kv.get(key)
        .and_then(|k| k.get(stamp))
        .and_then(|w| w.value.clone())
}

/// The members node `i` counts for a consistency level: those not left, itself included.
fn staying(sim: &Sim, i: usize) -> BTreeSet<NodeId> {
    sim.view(i)
        .into_iter()
        .filter(|(_, state)| *state != MemberState::Left)
        .map(|(id, _)| id)
        .collect()
}

/// The real node `id` names (`None`: a hostile participant).
fn index_of(sim: &Sim, id: &NodeId) -> Option<usize> {
    (0..NODES).find(|&j| sim.id(j) == id)
}

fn level_name(level: Level) -> String {
    match level {
        Level::All => "all".into(),
        Level::Majority => "majority".into(),
        Level::Count(n) => n.to_string(),
    }
}

/// A wait's tally names its own node first and nobody twice, and requires what `level` asks
/// of the `members` its node counted when the wait began.
fn check_tally(first: &NodeId, tally: &Tally, level: Level, members: usize) -> Result<(), String> {
    if tally.answered.first() != Some(first) {
        return Err(format!("its tally does not name {first} first: {tally:?}"));
    }
    let distinct: BTreeSet<&NodeId> = tally.answered.iter().collect();
    if distinct.len() != tally.answered.len() {
        return Err(format!("its tally names a member twice: {tally:?}"));
    }
    if tally.required != level.required(members) {
        return Err(format!(
            "its tally requires {} answers, though w or r={} of {members} members requires {}",
            tally.required,
            level_name(level),
            level.required(members)
        ));
    }
    Ok(())
}

/// What one node held at a check point (shared, not copied, between the latest and the durable
/// ones).
#[derive(Default)]
struct View {
    kv: BTreeMap<String, Stamp>,
    /// Per set: the dots held.
    sets: BTreeMap<String, BTreeSet<Dot>>,
}

/// What the writes say the cluster must hold.
#[derive(Default)]
struct Oracle {
    kv: BTreeMap<String, BTreeMap<Stamp, KvWrite>>,
    /// Values of writes the core refused (never applied): they must never show.
    refused: BTreeSet<Vec<u8>>,
    sets: BTreeMap<String, Vec<SetOp>>,
    /// Per counter: the sum of the acknowledged adds, and of those whose outcome is not known
    /// (pending, or lost with their node's crash): every node must end between the first and
    /// both together (the workload adds only positive amounts).
    counters: BTreeMap<String, (i128, i128)>,
    /// Per set: every dot minted, by which operation.
    minted: BTreeMap<String, BTreeMap<Dot, usize>>,
    /// Per set: dots of unknown adds minted again by a later add (the first add must then
    /// never show, under its element).
    reused: BTreeMap<String, BTreeSet<(Dot, String)>>,
    seq: u64,
    submitted: BTreeMap<u64, Submitted>,
    views: [Rc<View>; NODES],
    /// Per node and set: the dots held once and gone since, and when they were first seen gone
    /// (µs): they must never come back.
    gone: [BTreeMap<String, BTreeMap<Dot, u64>>; NODES],
    /// Per node: the latest view known durable and its time (µs), and the later ones.
    durable: [(u64, Rc<View>); NODES],
    recent: [VecDeque<(u64, Rc<View>)>; NODES],
    /// Per node: its digest at the last check point (`None` while crashed). A node whose
    /// replicated state has not changed since holds what it held then.
    checked: [Option<Option<Leaf>>; NODES],
    /// What the checks judge by changed (a write failed, a dot was minted again, a node
    /// crashed): every node is checked again in full.
    recheck: bool,
    /// Kv writes waiting for other members, by write id, until answered.
    waits: BTreeMap<u64, WaitInfo>,
    /// Per kv key, its `w=majority` writes answered as met.
    met: BTreeMap<String, Vec<MetWrite>>,
    /// `r=majority` reads not yet answered, by read id.
    reads: BTreeMap<u64, ReadInfo>,
}

fn read_set(sim: &Sim, i: usize, key: &str) -> Result<OrSet, String> {
    match sim.read(i, &StoreKey::set(key)) {
        None => Ok(OrSet::new()),
        Some(KeyState::Set(set)) => Ok(set),
        Some(other) => Err(format!("node {i} set {key}: not a set: {other:?}")),
    }
}

fn show(value: &Option<Vec<u8>>) -> String {
    match value {
        Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
        None => "deleted".into(),
    }
}

impl Oracle {
    /// Issues `write` at node `i` (a kv write waiting for other members with `wait`), checks
    /// what the core did at once, and records it.
    fn write(
        &mut self,
        sim: &mut Sim,
        world: &World,
        i: usize,
        write: Write,
        wait: Option<Wait>,
    ) -> Result<(), String> {
        let (key, value) = match &write {
            Write::KvPut { key, value, .. } => (key.clone(), Some(value.data.clone())),
            Write::KvDelete { key } => (key.clone(), None),
            Write::SetEdit { .. } | Write::SetClear { .. } => {
                return self.set_edit(sim, world, i, write)
            }
            Write::CounterAdd { .. } => return self.counter_add(sim, world, i, write),
        };
        let clock = sim.clock_of(i);
        let members = staying(sim, i);
        let submitted = match wait {
            Some(wait) => sim.submit_waiting(i, write, wait),
            None => sim.submit(i, write),
        };
        let Some(submitted) = submitted else {
            return Ok(());
        };
        let ack = match submitted.applied {
            Ok(ack) => ack,
            Err(why) => {
                check_refusal(world, sim.now(), i, why)?;
                self.refused.extend(value);
                self.submitted.insert(submitted.id, Submitted::Refused);
                return Ok(());
            }
        };
        let stamp = (ack.timestamp, ack.node);
        // No peer dragged the writer's clock beyond the bound.
        if stamp.0.wall_ms() > clock + BOUND_MS {
            return Err(format!(
                "node {i} stamped a write {} ms ahead of its own clock: its clock was dragged beyond the bound",
                stamp.0.wall_ms() - clock
            ));
        }
        // The write's timestamp exceeds all the node has seen, so the node now holds it.
        match sim.read(i, &StoreKey::kv(key.as_str())) {
            Some(KeyState::Register(r)) if (r.timestamp, &r.node) == (stamp.0, &stamp.1) => {}
            other => {
                return Err(format!(
                    "node {i} key {key}: right after writing {} at {} it holds {other:?}",
                    show(&value),
                    stamp.0
                ))
            }
        }
        let clock_ok = (clock as i64 - sim.real_clock() as i64).unsigned_abs() <= BOUND_MS;
        let known_off = world.measurable_since[i].is_some_and(|t| sim.now() - t >= MEASURE_MS);
        if !clock_ok {
            note("a write stamped by an off clock nobody had found out yet");
        }
        let write = KvWrite {
            value,
            expires: ack.expires,
            status: Status::Pending,
            writer: i,
            issued: sim.now(),
            clock_ok,
            known_off,
            settled: BTreeMap::new(),
            failure: None,
        };
        self.kv
            .entry(key.clone())
            .or_default()
            .insert(stamp.clone(), write);
        if let Some(wait) = wait {
            // The core waits exactly when it alone is not enough.
            let required = wait.level.required(members.len());
            let name = level_name(wait.level);
            match ack.awaiting {
                Some(_) if required > 1 => {
                    note(format!("a write waiting with w={name}"));
                    trace(
                        sim,
                        format_args!(
                            "node {i} key {key}: write {} of {} at {} waits with w={name} among {members:?}",
                            submitted.id,
                            show(&value_of(&self.kv, &key, &stamp)),
                            stamp.0
                        ),
                    );
                    let info = WaitInfo {
                        key: key.clone(),
                        stamp: stamp.clone(),
                        writer: i,
                        level: wait.level,
                        timeout_ms: wait.timeout_ms,
                        members,
                        issued_us: sim.now_us(),
                        skew_steps: world.skew_steps[i],
                    };
                    self.waits.insert(submitted.id, info);
                }
                None if required <= 1 => note("a w= write its node alone was enough for"),
                awaiting => {
                    return Err(format!(
                        "node {i} key {key}: a write with w={name} among {} members awaits {awaiting:?}",
                        members.len()
                    ))
                }
            }
        }
        self.submitted
            .insert(submitted.id, Submitted::Kv { key, stamp });
        Ok(())
    }

    /// Starts an `r=majority` read of a kv key at a random node (half of the time a key with a
    /// `w=majority` write answered as met).
    fn read(&mut self, sim: &mut Sim, rng: &mut SmallRng, workload: Workload) {
        let reader = rng.gen_range(0..NODES);
        let key = match self.met.len() {
            n if n > 0 && rng.gen_bool(0.5) => {
                let k = rng.gen_range(0..n);
                self.met.keys().nth(k).cloned().unwrap_or_default()
            }
            _ => format!("k{}", rng.gen_range(0..workload.keys)),
        };
        let wait = Wait {
            level: Level::Majority,
            timeout_ms: rng.gen_range(200..=5_000),
        };
        let members = staying(sim, reader);
        let Some(id) = sim.start_read(reader, StoreKey::kv(key.as_str()), wait) else {
            return;
        };
        let after = self.met.get(&key).cloned().unwrap_or_default();
        self.reads.insert(
            id,
            ReadInfo {
                key,
                reader,
                members,
                after,
            },
        );
    }

    fn set_edit(
        &mut self,
        sim: &mut Sim,
        world: &World,
        i: usize,
        edit: Write,
    ) -> Result<(), String> {
        let (key, add, remove, clears) = match edit.clone() {
            Write::SetEdit { key, add, remove } => (key, add, remove, false),
            Write::SetClear { key } => (key, Vec::new(), Vec::new(), true),
            _ => return Ok(()),
        };
        // What the edit observes: the node's set just before it.
        let before = read_set(sim, i, &key)?;
        // A clear removes every element the node holds, as an edit removing each would.
        let remove = match clears {
            true => before.elements().map(str::to_string).collect(),
            false => remove,
        };
        let Some(submitted) = sim.submit(i, edit) else {
            return Ok(());
        };
        if let Err(why) = submitted.applied {
            // A remove from a set the node never saw is refused: it observed nothing to remove.
            let never_seen = sim.read(i, &StoreKey::set(key.as_str())).is_none();
            if why != Refused::NoSuchSet || !never_seen || !add.is_empty() {
                check_refusal(world, sim.now(), i, why)?;
            }
            self.submitted.insert(submitted.id, Submitted::Refused);
            return Ok(());
        }
        let after = read_set(sim, i, &key)?;
        if clears && !after.is_empty() {
            return Err(format!(
                "node {i} set {key}: right after a clear it holds {after:?}"
            ));
        }
        // Removes apply before adds (`Write::SetEdit`).
        for element in &remove {
            if !add.contains(element) && after.contains(element) {
                return Err(format!(
                    "node {i} set {key}: right after removing {element} it holds dots {:?}",
                    after.dots(element).collect::<Vec<_>>()
                ));
            }
        }
        let ops = self.sets.entry(key.clone()).or_default();
        let minted = self.minted.entry(key.clone()).or_default();
        let mut indexes = Vec::new();
        for element in &remove {
            self.seq += 1;
            indexes.push(ops.len());
            ops.push(SetOp {
                element: element.clone(),
                dot: None,
                observed: before.dots(element).cloned().collect(),
                status: Status::Pending,
                seq: self.seq,
            });
        }
        for element in &add {
            self.seq += 1;
            let dot = match after.dots(element).collect::<Vec<_>>()[..] {
                [dot] if dot.replica.node == *sim.id(i) => dot.clone(),
                ref dots => {
                    return Err(format!(
                        "node {i} set {key}: adding {element} left dots {dots:?}, not one dot of its own"
                    ))
                }
            };
            // Dots belong to the set: no other add of any element minted this one before,
            // unless that add's fate is unknown (its node crashed before it was durable, so
            // the dot counter restarted below it); that add must then never show.
            if let Some(&earlier) = minted.get(&dot) {
                let first = &ops[earlier];
                if first.status != Status::Unknown {
                    return Err(format!(
                        "node {i} set {key}: adding {element} minted {dot:?} again, already minted for {} by a write that is {:?}",
                        first.element, first.status
                    ));
                }
                note("a dot minted again after a crash lost its first add");
                self.recheck = true;
                // Under the same element the two cannot be told apart (and the first is gone);
                // under another, the first must never show.
                if first.element != *element {
                    self.reused
                        .entry(key.clone())
                        .or_default()
                        .insert((dot.clone(), first.element.clone()));
                }
            }
            let observed = if remove.contains(element) {
                BTreeSet::new()
            } else {
                before.dots(element).cloned().collect()
            };
            trace(
                sim,
                format_args!(
                    "node {i} set {key}: add {element} minted {dot:?}, id {}",
                    submitted.id
                ),
            );
            minted.insert(dot.clone(), ops.len());
            indexes.push(ops.len());
            ops.push(SetOp {
                element: element.clone(),
                dot: Some(dot),
                observed,
                status: Status::Pending,
                seq: self.seq,
            });
        }
        self.submitted
            .insert(submitted.id, Submitted::Set { key, ops: indexes });
        Ok(())
    }

    fn counter_add(
        &mut self,
        sim: &mut Sim,
        world: &World,
        i: usize,
        add: Write,
    ) -> Result<(), String> {
        let Write::CounterAdd { key, amount } = add.clone() else {
            return Ok(());
        };
        let Some(submitted) = sim.submit(i, add) else {
            return Ok(());
        };
        if let Err(why) = submitted.applied {
            check_refusal(world, sim.now(), i, why)?;
            self.submitted.insert(submitted.id, Submitted::Refused);
            return Ok(());
        }
        self.counters.entry(key.clone()).or_default().1 += amount as i128;
        self.submitted
            .insert(submitted.id, Submitted::Counter { key, amount });
        Ok(())
    }

    /// Learns the outcomes of submitted writes; checks those of writes that waited for other
    /// members.
    fn outcomes(&mut self, sim: &mut Sim, world: &World) -> Result<(), String> {
        for (id, outcome) in sim.take_outcomes() {
            let waited = self.waits.remove(&id);
            let Some(submitted) = self.submitted.remove(&id) else {
                return Err(format!("write {id} answered twice: {outcome:?}"));
            };
            let status = match (&submitted, &outcome) {
                (Submitted::Refused, WriteOutcome::Failed(_) | WriteOutcome::Unknown) => continue,
                (Submitted::Refused, WriteOutcome::Acked(ack)) => {
                    return Err(format!(
                        "a write the core refused was acknowledged at {}",
                        ack.timestamp
                    ))
                }
                (Submitted::Refused, WriteOutcome::Waited(w)) => {
                    return Err(format!(
                        "a write the core refused was answered as replicated at {}",
                        w.ack.timestamp
                    ))
                }
                (_, WriteOutcome::Waited(w)) => {
                    let Some(info) = &waited else {
                        return Err(format!(
                            "write {id} did not wait, yet was answered with a tally: {w:?}"
                        ));
                    };
                    // Met or timed out, it applied on its node and is durable there: an
                    // acknowledged write like any other from now on.
                    self.check_waited(sim, world, info, w)?;
                    Status::Acked
                }
                (_, WriteOutcome::Acked(ack)) if waited.is_some() => {
                    return Err(format!(
                        "write {id} waited for other members, yet was answered without a tally: {ack:?}"
                    ))
                }
                (_, WriteOutcome::Acked(_)) => Status::Acked,
                (_, WriteOutcome::Failed(_)) => {
                    if let (Some(_), WriteOutcome::Failed(e)) = (&waited, &outcome) {
                        // It must then leave no trace, as any write answered with an error.
                        if e.to_string().contains("undone") {
                            note("a w= write answered with an error: undone by a failed sync");
                        } else {
                            note("a w= write answered with an error: its answer's group failed");
                        }
                    }
                    Status::Failed
                }
                (_, WriteOutcome::Unknown) => {
                    if waited.is_some() {
                        note("a w= write of unknown fate (its node crashed)");
                    }
                    Status::Unknown
                }
            };
            note(format!("write {status:?}"));
            self.recheck |= status == Status::Failed;
            if status != Status::Acked {
                trace(sim, format_args!("write {id}: {outcome:?}"));
            }
            match submitted {
                Submitted::Kv { key, stamp } => {
                    if let Some(w) = self.kv.get_mut(&key).and_then(|k| k.get_mut(&stamp)) {
                        w.status = status;
                        if let WriteOutcome::Failed(e) = &outcome {
                            w.failure = Some((e.to_string(), waited.is_some()));
                        }
                        if status == Status::Acked {
                            let writer = w.writer;
                            w.settled.entry(writer).or_insert(sim.now());
                        }
                    }
                }
                Submitted::Set { key, ops } => {
                    if let Some(all) = self.sets.get_mut(&key) {
                        for op in ops {
                            all[op].status = status;
                        }
                    }
                }
                Submitted::Counter { key, amount } => {
                    let (acked, unknown) = self.counters.entry(key).or_default();
                    match status {
                        Status::Acked => {
                            *acked += amount as i128;
                            *unknown -= amount as i128;
                        }
                        Status::Failed => *unknown -= amount as i128,
                        _ => {}
                    }
                }
                Submitted::Refused => {}
            }
        }
        Ok(())
    }

    /// A write that waited answered, met or timed out (oracles a and c). Its tally is
    /// consistent; a timed-out wait ended no earlier than its deadline (unless its writer's
    /// clock was stepped meanwhile); a met one is held durably, at the moment it was answered,
    /// by every node it counted and, with `w=all`, by every member its writer counted: what
    /// each one's disk holds of the key is that write or a newer one.
    fn check_waited(
        &mut self,
        sim: &Sim,
        world: &World,
        info: &WaitInfo,
        waited: &Waited,
    ) -> Result<(), String> {
        let name = level_name(info.level);
        let (key, stamp) = (&info.key, &info.stamp);
        let what = || {
            let value = self
                .kv
                .get(key)
                .and_then(|k| k.get(stamp))
                .map(|w| &w.value);
            format!(
                "node {} key {key}: the write {} at {} from {} with w={name}",
                info.writer,
                value.map(show).unwrap_or_default(),
                stamp.0,
                stamp.1
            )
        };
        if (waited.ack.timestamp, &waited.ack.node) != (stamp.0, &stamp.1) {
            return Err(format!("{} was answered as {:?}", what(), waited.ack));
        }
        let Some(tally) = &waited.ack.replicas else {
            return Err(format!("{} was answered without its tally", what()));
        };
        check_tally(sim.id(info.writer), tally, info.level, info.members.len())
            .map_err(|e| format!("{}: {e}", what()))?;
        if !tally.met() {
            note(format!(
                "w={name} write timed out (acknowledged on its node)"
            ));
            // The deadline is on the writer's timer clock, which drifts by at most 500 ppm; a
            // clock stepped forward reaches it early.
            if world.skew_steps[info.writer] == info.skew_steps {
                let waited_ms = waited.at_us.saturating_sub(info.issued_us) / 1_000;
                let slack = info.timeout_ms / 1_000 + 2;
                if waited_ms + slack < info.timeout_ms {
                    return Err(format!(
                        "{} timed out after {waited_ms} ms, before its timeout of {} ms: {tally:?}",
                        what(),
                        info.timeout_ms
                    ));
                }
                note("a timed-out write answered no earlier than its deadline (checked)");
            }
            return Ok(());
        }
        let mut holders: BTreeSet<usize> = tally
            .answered
            .iter()
            .filter_map(|id| index_of(sim, id))
            .collect();
        if info.level == Level::All {
            holders.extend(info.members.iter().filter_map(|id| index_of(sim, id)));
            if holders.len() < NODES {
                note("w=all met while a node was no member of its writer's (not checked there)");
            }
        }
        for &j in &holders {
            let held = waited.durable.get(j).cloned().flatten();
            let holds = held
                .as_ref()
                .and_then(|c| c.node.as_ref().map(|n| (c.timestamp, n.clone())))
                .is_some_and(|h| h >= *stamp);
            if !holds {
                let counted = if tally.answered.contains(sim.id(j)) {
                    "it was counted"
                } else {
                    "a member its writer counted, not counted"
                };
                return Err(format!(
                    "{} was answered as met ({tally:?}) at {} µs, but node {j} does not hold it durably ({counted}): its disk holds {held:?}",
                    what(),
                    waited.at_us
                ));
            }
        }
        note(format!(
            "w={name} met: the disks of the nodes counted hold it (checked)"
        ));
        for _ in &holders {
            note(format!("w={name} met: one node's disk holds it (checked)"));
        }
        if info.level == Level::Majority {
            self.met.entry(key.clone()).or_default().push(MetWrite {
                stamp: stamp.clone(),
                members: info.members.clone(),
                answered: tally.answered.iter().cloned().collect(),
            });
        }
        Ok(())
    }

    /// Learns the outcomes of `r=majority` reads (oracle b): a read answered as met that
    /// started after a `w=majority` write of its key was answered as met, the reader counting
    /// the same members as the writer did, sees that write or a newer one (in LWW order), or
    /// the key is gone as the other oracles allow (a newer delete or an expiry collected, the
    /// write lost as the grace period allows).
    fn read_outcomes(&mut self, sim: &mut Sim, world: &World) -> Result<(), String> {
        for (id, outcome) in sim.take_read_outcomes() {
            let Some(info) = self.reads.remove(&id) else {
                return Err(format!("read {id} answered twice: {outcome:?}"));
            };
            let reader = info.reader;
            let key = &info.key;
            let (tally, state) = match outcome {
                ReadOutcome::Local(_) => {
                    if Level::Majority.required(info.members.len()) > 1 {
                        return Err(format!(
                            "node {reader} key {key}: an r=majority read among {} members was read locally",
                            info.members.len()
                        ));
                    }
                    note("an r=majority read its node alone was enough for");
                    continue;
                }
                ReadOutcome::Failed => {
                    note("an r=majority read answered with an error");
                    continue;
                }
                ReadOutcome::Unknown => {
                    note("an r=majority read of unknown fate (its node crashed)");
                    continue;
                }
                ReadOutcome::Answered { tally, state, .. } => (tally, state),
            };
            check_tally(sim.id(reader), &tally, Level::Majority, info.members.len())
                .map_err(|e| format!("node {reader} key {key}: an r=majority read: {e}"))?;
            if !tally.met() {
                note("an r=majority read timed out");
                continue;
            }
            note("an r=majority read met");
            let held = match &state {
                Some(KeyState::Register(r)) => Some((r.timestamp, r.node.clone())),
                None => None,
                Some(other) => {
                    return Err(format!(
                        "node {reader} key {key}: an r=majority read found {other:?}"
                    ))
                }
            };
            for w in &info.after {
                self.check_read(sim, world, &info, &tally, held.as_ref(), w)?;
            }
        }
        Ok(())
    }

    /// Read `info`, answered as met by `tally` with the reader holding `held`, sees `w`.
    fn check_read(
        &self,
        sim: &Sim,
        world: &World,
        info: &ReadInfo,
        tally: &Tally,
        held: Option<&Stamp>,
        w: &MetWrite,
    ) -> Result<(), String> {
        // Majorities of the same members intersect, and only then.
        if w.members != info.members {
            note("an r=majority read after a w=majority write skipped: other members counted");
            return Ok(());
        }
        // Only real nodes' answers count here: a hostile participant never holds anything.
        let members = &info.members;
        let real = |ids: &mut dyn Iterator<Item = &NodeId>| -> BTreeSet<NodeId> {
            ids.filter(|id| members.contains(*id) && index_of(sim, id).is_some())
                .cloned()
                .collect()
        };
        let wrote = real(&mut w.answered.iter());
        let read = real(&mut tally.answered.iter());
        let majority = Level::Majority.required(members.len());
        if wrote.len() < majority || read.len() < majority {
            note("an r=majority read after a w=majority write skipped: answers from outside the members");
            return Ok(());
        }
        let common: Vec<&NodeId> = wrote.intersection(&read).collect();
        if held.is_some_and(|h| *h >= w.stamp) {
            note("an r=majority read sees an earlier w=majority write (checked)");
            return Ok(());
        }
        let key = &info.key;
        let writes = &self.kv[key];
        let collected = (0..NODES)
            .map(|n| sim.store(n).collected_through())
            .max()
            .unwrap_or_default();
        // The reader holds nothing, or an older delete (a member away while the others collected
        // keeps its tombstone): either way the key reads as deleted, which is right once the
        // write, or a later one, is gone and collected.
        let reads_deleted = held.is_none_or(|h| writes.get(h).is_some_and(|x| x.value.is_none()));
        let gone = reads_deleted
            && writes.range(w.stamp.clone()..).any(|(s, x)| {
                x.status != Status::Failed && x.gone_at(s).is_some_and(|t| t <= collected)
            });
        if gone {
            note("an r=majority read finds a w=majority write's key collected since");
            return Ok(());
        }
        if self.excusable(sim, world, key, &w.stamp) {
            note("an r=majority read misses a w=majority write lost as the grace period allows");
            return Ok(());
        }
        let holds = match held {
            Some(h) => format!("{} at {} from {}", show(&writes[h].value), h.0, h.1),
            None => "nothing".into(),
        };
        Err(format!(
            "node {} key {key}: an r=majority read answered by {:?} (both counted {:?}) holds {holds}, though the w=majority write {} at {} from {} held by {:?} was answered as met before the read started (common: {common:?}; collection horizons {:?})",
            info.reader,
            tally.answered,
            members,
            show(&writes[&w.stamp].value),
            w.stamp.0,
            w.stamp.1,
            w.answered,
            (0..NODES)
                .map(|n| sim.store(n).collected_through())
                .collect::<Vec<_>>()
        ))
    }

    /// Node `i` crashed: what it holds now is what was durable, judged from the latest check
    /// point known durable; and it still holds every kv write it acknowledged (or a newer
    /// write of the key), unless the grace period let it drop one.
    fn crashed(&mut self, sim: &mut Sim, world: &World, i: usize) -> Result<(), String> {
        self.outcomes(sim, world)?;
        let (at, durable) = self.durable[i].clone();
        self.views[i] = durable;
        self.recheck = true;
        self.recent[i].clear();
        // A removal seen after the last durable check point may not have been durable.
        for gone in self.gone[i].values_mut() {
            gone.retain(|_, since| *since <= at);
        }
        for (key, writes) in &self.kv {
            let acked = writes
                .iter()
                .rev()
                .find(|(_, w)| w.writer == i && w.status == Status::Acked);
            let Some((stamp, w)) = acked else {
                continue;
            };
            let held = match sim.read(i, &StoreKey::kv(key.as_str())) {
                Some(KeyState::Register(r)) => Some((r.timestamp, r.node)),
                _ => None,
            };
            // Nothing held: a delete (this one or a newer one) was collected since; a value is
            // otherwise only forgotten as the grace period allows.
            let deleted = writes
                .range(stamp.clone()..)
                .any(|(s, w)| w.gone_at(s).is_some() && w.status != Status::Failed);
            let kept = held.as_ref().is_some_and(|h| h >= stamp)
                || (held.is_none() && deleted)
                || self.excusable(sim, world, key, stamp);
            if !kept {
                return Err(format!(
                    "node {i} key {key}: lost {} at {} in a crash, a write it had acknowledged (it holds {held:?})",
                    show(&w.value),
                    stamp.0
                ));
            }
        }
        Ok(())
    }

    /// How far ahead of real time the furthest write is stamped (ms).
    fn ahead_ms(&self, sim: &Sim) -> u64 {
        let real = sim.real_clock();
        self.kv
            .values()
            .flat_map(|writes| writes.keys())
            .map(|(ts, _)| ts.wall_ms().saturating_sub(real))
            .max()
            .unwrap_or(0)
    }

    /// Whether acknowledged write `stamp` of `key` may be lost as documented: it is no newer
    /// than a tombstone collected somewhere, and it was unreplicated when its writer came back
    /// from an absence longer than the grace period: the writer was away that long after writing
    /// it, and so was every other node that held it durably before the writer came back (a
    /// minority that was away together).
    fn excusable(&self, sim: &Sim, world: &World, key: &str, stamp: &Stamp) -> bool {
        let Some(w) = self.kv.get(key).and_then(|k| k.get(stamp)) else {
            return false;
        };
        let horizon = (0..NODES)
            .map(|i| sim.store(i).collected_through())
            .max()
            .unwrap_or_default();
        let now = sim.now();
        let Some(back) = world.back_from_long_away(w.writer, w.issued, now) else {
            return false;
        };
        stamp.0 <= horizon
            && w.settled.iter().all(|(&i, &since)| {
                i == w.writer || since >= back || world.back_from_long_away(i, since, now).is_some()
            })
    }

    /// Checks that need no convergence, on every node (a crashed node's durable store too):
    /// each register is a write the node took, never one answered with an error or refused;
    /// no node's register goes back to an older write since the last check point, or drops a
    /// value unless the grace period allows it; no add dot a node dropped comes back there, and
    /// no dot of a failed add or of an add whose dot was minted again shows.
    fn check_held(&mut self, sim: &Sim, world: &World) -> Result<(), String> {
        let recheck = std::mem::take(&mut self.recheck);
        for i in 0..NODES {
            let digest = sim.digest(i);
            if !recheck && self.checked[i].as_ref() == Some(&digest) {
                self.settle(sim, i);
                continue;
            }
            self.checked[i] = Some(digest);
            let mut view = View::default();
            for (key, writes) in &self.kv {
                let previous = self.views[i].kv.get(key);
                let register = match sim.read(i, &StoreKey::kv(key.as_str())) {
                    Some(KeyState::Register(r)) => r,
                    None => match previous {
                        None => continue,
                        Some(previous) => {
                            // A collected tombstone: the key stays deleted (an older write
                            // coming back later is caught below, as the view keeps the
                            // tombstone's stamp). A value gone: a newer delete came and was
                            // collected between two check points, or it was forgotten as the
                            // grace period allows.
                            // The delete that explains it is no newer than some node's
                            // collection horizon (a delete stamped by a clock far ahead may
                            // be newer still, and refused everywhere meanwhile).
                            let collected = (0..NODES)
                                .map(|n| sim.store(n).collected_through())
                                .max()
                                .unwrap_or_default();
                            // A value that expired goes like a tombstone: by itself.
                            let value = writes
                                .get(previous)
                                .filter(|w| w.gone_at(previous).is_none_or(|t| t > collected))
                                .and_then(|w| w.value.as_ref());
                            let deleted = writes
                                .range(previous.clone()..)
                                .rev()
                                .filter(|(s, w)| w.gone_at(s).is_some_and(|t| t <= collected))
                                .find(|(_, w)| w.status != Status::Failed)
                                .map(|(stamp, _)| stamp);
                            match (value, deleted) {
                                (None, _) => {}
                                (Some(_), Some(tombstone)) => {
                                    view.kv.insert(key.clone(), tombstone.clone());
                                    continue;
                                }
                                (Some(value), None) => {
                                    if !self.excusable(sim, world, key, previous) {
                                        if let Some(w) = writes.get(previous) {
                                            trace(sim, format_args!("writer {} issued {} settled {:?}, away {:?} since {:?}", w.writer, w.issued, w.settled, world.away, world.away_since));
                                        }
                                        return Err(format!(
                                            "node {i} key {key}: dropped its value {} at {} from {}",
                                            show(&Some(value.clone())),
                                            previous.0,
                                            previous.1
                                        ));
                                    }
                                    note("a node dropped a value as the grace period allows");
                                }
                            }
                            view.kv.insert(key.clone(), previous.clone());
                            continue;
                        }
                    },
                    other => {
                        return Err(format!(
                            "node {i} key {key}: expected a register, found {other:?}"
                        ))
                    }
                };
                let got = register.value.map(|v| v.data);
                let stamp = (register.timestamp, register.node);
                match writes.get(&stamp) {
                    Some(w) if w.value == got && w.status != Status::Failed => {}
                    Some(w) if w.value == got => {
                        let (error, waited) = w.failure.clone().unwrap_or_default();
                        let waited = if waited {
                            "waiting for other members, "
                        } else {
                            ""
                        };
                        return Err(format!(
                            "node {i} key {key}: holds {} at {} from {}, a write answered with an error ({waited}{error:?})",
                            show(&got),
                            stamp.0,
                            stamp.1
                        ));
                    }
                    _ => {
                        let what = if got.as_ref().is_some_and(|v| self.refused.contains(v)) {
                            "a write the core refused"
                        } else {
                            "no write any node took"
                        };
                        return Err(format!(
                            "node {i} key {key}: holds {} at {} from {}, which is {what}",
                            show(&got),
                            stamp.0,
                            stamp.1
                        ));
                    }
                }
                if let Some(previous) = previous {
                    if stamp < *previous && self.excusable(sim, world, key, previous) {
                        // The newer value was dropped as the grace period allows; what it had
                        // overwritten may come back in its place.
                        note("a node went back past a value dropped as the grace period allows");
                    } else if stamp < *previous {
                        let was = &writes[previous].value;
                        let what = if was.is_none() && got.is_some() {
                            "a deleted key came back"
                        } else {
                            "went back to an older write"
                        };
                        return Err(format!(
                            "node {i} key {key}: {what}: held {} at {} from {}, now {} at {} from {}",
                            show(was),
                            previous.0,
                            previous.1,
                            show(&got),
                            stamp.0,
                            stamp.1
                        ));
                    }
                }
                view.kv.insert(key.clone(), stamp);
            }
            for s in 0..SETS {
                let key = format!("s{s}");
                let set = read_set(sim, i, &key)?;
                let empty = BTreeSet::new();
                let holding = self.views[i].sets.get(&key).unwrap_or(&empty);
                let gone = self.gone[i].entry(key.clone()).or_default();
                let ops = self.sets.get(&key);
                let minted = self.minted.get(&key);
                let reused = self.reused.get(&key);
                let mut now = BTreeSet::new();
                for element in set.elements() {
                    for dot in set.dots(element) {
                        if gone.contains_key(dot) {
                            return Err(format!(
                                "node {i} set {key}: a removed element came back: {element} by {dot:?}"
                            ));
                        }
                        let op = minted
                            .and_then(|m| m.get(dot))
                            .and_then(|&o| ops.map(|ops| &ops[o]));
                        match op {
                            Some(op) if op.element != element => {
                                return Err(format!(
                                    "node {i} set {key}: holds {element} by {dot:?}, a dot minted for {}",
                                    op.element
                                ))
                            }
                            Some(op) if op.status == Status::Failed => {
                                return Err(format!(
                                    "node {i} set {key}: holds {element} by {dot:?}, an add answered with an error"
                                ))
                            }
                            Some(_) => {}
                            None => {
                                return Err(format!(
                                    "node {i} set {key}: holds {element} by {dot:?}, which no add minted"
                                ))
                            }
                        }
                        if reused.is_some_and(|r| r.contains(&(dot.clone(), element.to_string()))) {
                            return Err(format!(
                                "node {i} set {key}: holds {element} by {dot:?}, a dot its node minted again for another add after a crash (an identity reused)"
                            ));
                        }
                        now.insert(dot.clone());
                    }
                }
                let at = sim.now_us();
                gone.extend(holding.difference(&now).map(|d| (d.clone(), at)));
                view.sets.insert(key, now);
            }
            self.views[i] = Rc::new(view);
            self.settle(sim, i);
        }
        Ok(())
    }

    /// Moves node `i`'s check points that are durable now into its durable view, noting which
    /// writes it held durably.
    fn settle(&mut self, sim: &Sim, i: usize) {
        self.recent[i].push_back((sim.now_us(), Rc::clone(&self.views[i])));
        let durable = sim.durable_through_us(i);
        while let Some((at, _)) = self.recent[i].front() {
            if *at > durable {
                break;
            }
            let Some((at, view)) = self.recent[i].pop_front() else {
                break;
            };
            for (key, stamp) in &view.kv {
                if let Some(w) = self.kv.get_mut(key).and_then(|k| k.get_mut(stamp)) {
                    w.settled.entry(i).or_insert(at / 1_000);
                }
            }
            self.durable[i] = (at, view);
        }
    }

    /// Node `i`, whose disk fault ended, takes a write again.
    fn serves(
        &mut self,
        sim: &mut Sim,
        world: &mut World,
        switches: Switches,
        i: usize,
    ) -> Result<(), String> {
        let key = format!("k{}", i % KEYS);
        let value = Value {
            content_type: "text/plain".into(),
            data: format!("serves-{i}-{}", sim.now()).into_bytes(),
        };
        let data = value.data.clone();
        let write = Write::KvPut {
            key: key.clone(),
            value,
            ttl_ms: None,
        };
        // The node finds room again at its next check of the free space.
        let room_from = sim.now();
        let submitted = loop {
            let Some(submitted) = sim.submit(i, write.clone()) else {
                return Err(format!("node {i} is not up after its disk fault ended"));
            };
            match submitted.applied {
                Err(Refused::DiskFull) if sim.now() < room_from + DISK_CHECK_MS => {
                    self.submitted.insert(submitted.id, Submitted::Refused);
                    step(sim, self, world, switches, 50)?;
                }
                _ => break submitted,
            }
        };
        let stamp = match submitted.applied {
            // Its clock may still be catching up with its HLC, or be judged off.
            Err(Refused::ClockSkew) => {
                self.refused.insert(data);
                self.submitted.insert(submitted.id, Submitted::Refused);
                return Ok(());
            }
            Err(why) => {
                return Err(format!(
                    "node {i} refuses writes ({why:?}) after its disk fault ended"
                ))
            }
            Ok(ack) => (ack.timestamp, ack.node),
        };
        let w = KvWrite {
            value: Some(data),
            expires: None,
            status: Status::Pending,
            writer: i,
            issued: sim.now(),
            clock_ok: true,
            known_off: false,
            settled: BTreeMap::new(),
            failure: None,
        };
        self.kv
            .entry(key.clone())
            .or_default()
            .insert(stamp.clone(), w);
        self.submitted.insert(
            submitted.id,
            Submitted::Kv {
                key: key.clone(),
                stamp: stamp.clone(),
            },
        );
        for _ in 0..100 {
            step(sim, self, world, switches, 20)?;
            match self.kv[&key][&stamp].status {
                Status::Pending => continue,
                Status::Acked => return Ok(()),
                other => {
                    return Err(format!(
                        "node {i}'s first write after its disk fault ended is {other:?}"
                    ))
                }
            }
        }
        Err(format!(
            "node {i} did not answer a write within 2 s after its disk fault ended"
        ))
    }

    /// Checks a converged cluster: every key holds its last acknowledged write unless that
    /// write may be lost as documented, no acknowledged write lost to one issued before it
    /// from a clock that could have known better, every set equals the add-wins oracle.
    fn check_converged(&mut self, sim: &Sim, world: &World) -> Result<(), String> {
        self.check_held(sim, world)?;
        for (key, &(acked, unknown)) in &self.counters {
            for i in 0..NODES {
                let value = match sim.read(i, &StoreKey::counter(key.as_str())) {
                    Some(KeyState::Counter(c)) => c.value(),
                    None => 0,
                    Some(other) => return Err(format!("node {i} counter {key}: {other:?}")),
                };
                if value < acked || value > acked + unknown {
                    return Err(format!(
                        "node {i} counter {key}: value {value}, but the acknowledged adds sum to {acked} and those of unknown fate to {unknown}"
                    ));
                }
            }
        }
        for (key, writes) in &self.kv {
            for i in 0..NODES {
                let held = self.views[i].kv.get(key);
                // What the node holds: a register, or nothing (never written, or a collected
                // tombstone: `held` then keeps its stamp but the store has no record).
                let present = sim.read(i, &StoreKey::kv(key.as_str())).is_some();
                let h = held.filter(|_| present);
                // From the greatest acknowledged write down to what is held: each is either
                // excusably lost, or a tombstone when nothing is held.
                for (stamp, w) in writes.iter().rev() {
                    if h.is_some_and(|h| stamp <= h) {
                        break;
                    }
                    if w.status != Status::Acked {
                        // A delete (or an expiring value) of unknown fate this node was seen
                        // holding may be what was collected: a write that waits for other
                        // members spreads before it is answered, and its node may crash first.
                        let collected = h.is_none() && held == Some(stamp);
                        if collected && w.status != Status::Failed && w.gone_at(stamp).is_some() {
                            note("a key held nowhere after a write of unknown fate collected");
                            break;
                        }
                        continue;
                    }
                    if w.gone_at(stamp).is_some() && h.is_none() {
                        if w.value.is_some() {
                            note("a key whose last acknowledged write expired is collected");
                        }
                        break;
                    }
                    if self.excusable(sim, world, key, stamp) {
                        note("an acknowledged write lost as the grace period allows");
                        continue;
                    }
                    let what = if w.value.is_none() {
                        "a deleted key reads as present"
                    } else {
                        "lost its last acknowledged write"
                    };
                    let holds = match h {
                        Some(h) => format!("{} at {} from {}", show(&writes[h].value), h.0, h.1),
                        None => "nothing".into(),
                    };
                    return Err(format!(
                        "node {i} key {key}: {what}: holds {holds}, the last acknowledged write is {} at {} from {} (issued at {} ms by node {})",
                        show(&w.value),
                        stamp.0,
                        stamp.1,
                        w.issued,
                        w.writer
                    ));
                }
                // An acknowledged write issued after the winner, yet older by timestamp, lost
                // to it: only a clock within the bound, or one nobody could measure yet, may
                // stamp so (a clock judged off refuses writes: `check_clocks`).
                let Some(h) = h else { continue };
                let winner = &writes[h];
                let ahead = h.0.wall_ms() as i64 - (SIM_EPOCH_MS + winner.issued) as i64;
                let dragged = winner.clock_ok && ahead > 2 * BOUND_MS as i64;
                if !(dragged || winner.known_off) {
                    continue;
                }
                let lost = writes
                    .range(..h.clone())
                    .find(|(_, w)| w.status == Status::Acked && w.issued > winner.issued);
                if let Some((stamp, w)) = lost {
                    let why = if dragged {
                        format!("from a node whose clock was within the bound, stamped {ahead} ms ahead of real time")
                    } else {
                        "from a node that could have known its clock was off".into()
                    };
                    return Err(format!(
                        "node {i} key {key}: {} at {} from {} (issued at {} ms) lost to {} at {} from {}, issued earlier ({} ms) {why}",
                        show(&w.value),
                        stamp.0,
                        stamp.1,
                        w.issued,
                        show(&winner.value),
                        h.0,
                        h.1,
                        winner.issued
                    ));
                }
            }
        }
        for s in 0..SETS {
            let key = format!("s{s}");
            let empty = Vec::new();
            let ops = self.sets.get(&key).unwrap_or(&empty);
            let reused = self.reused.get(&key);
            let mut elements: BTreeSet<&str> = BTreeSet::new();
            elements.extend(ops.iter().map(|o| o.element.as_str()));
            for i in 0..NODES {
                let set = read_set(sim, i, &key)?;
                if let Some(stray) = set.elements().find(|e| !elements.contains(e)) {
                    return Err(format!(
                        "node {i} set {key}: holds {stray}, which was never added"
                    ));
                }
                for element in &elements {
                    let of = |o: &&SetOp| o.element == *element;
                    let observed = |status: fn(Status) -> bool| -> BTreeSet<Dot> {
                        ops.iter()
                            .filter(of)
                            .filter(|o| status(o.status))
                            .flat_map(|o| o.observed.iter().cloned())
                            .collect()
                    };
                    let by_acked = observed(|s| s == Status::Acked);
                    let by_unsure = observed(|s| matches!(s, Status::Unknown | Status::Pending));
                    let mut definite = BTreeSet::new();
                    let mut maybe = BTreeSet::new();
                    for op in ops.iter().filter(of) {
                        let Some(dot) = &op.dot else { continue };
                        if by_acked.contains(dot)
                            || reused
                                .is_some_and(|r| r.contains(&(dot.clone(), op.element.clone())))
                        {
                            continue;
                        }
                        match op.status {
                            Status::Acked if !by_unsure.contains(dot) => {
                                definite.insert(dot.clone());
                            }
                            Status::Acked | Status::Unknown | Status::Pending => {
                                maybe.insert(dot.clone());
                            }
                            Status::Failed => {}
                        }
                    }
                    let got: BTreeSet<Dot> = set.dots(element).cloned().collect();
                    let missing: Vec<&Dot> = definite.difference(&got).collect();
                    let extra: Vec<&Dot> = got
                        .iter()
                        .filter(|d| !definite.contains(*d) && !maybe.contains(*d))
                        .collect();
                    if !missing.is_empty() || !extra.is_empty() {
                        return Err(format!(
                            "node {i} set {key} element {element}: holds dots {got:?}, the add-wins oracle expects {definite:?} and allows {maybe:?} (missing {missing:?}, unexpected {extra:?})"
                        ));
                    }
                    let last_add = ops
                        .iter()
                        .filter(of)
                        .filter(|o| o.dot.is_some() && o.status == Status::Acked)
                        .map(|o| o.seq)
                        .max();
                    let last_remove = ops
                        .iter()
                        .filter(of)
                        .filter(|o| o.dot.is_none() && o.status != Status::Failed)
                        .map(|o| o.seq)
                        .max();
                    if last_add > last_remove && !set.contains(element) {
                        return Err(format!(
                            "node {i} set {key}: {element} is absent, yet it was added after every remove of it"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// How often a node checks its free space (`node/disk_watch.rs`), with a tick of slack.
const DISK_CHECK_MS: u64 = 1_100;

/// A write the core refused at once must have a reason the faults explain.
fn check_refusal(world: &World, now: u64, i: usize, why: Refused) -> Result<(), String> {
    note(format!("write refused at once: {why:?}"));
    match why {
        // A clock refusal is the core's call (its verdict, or a wall clock behind its HLC).
        Refused::ClockSkew => Ok(()),
        Refused::Store if world.disk_full[i] || world.failing[i] => Ok(()),
        // The free space is checked once a second: a node refuses for up to a check after the
        // disk has room again (and may see the disk full up to a check before a store write
        // fails).
        Refused::DiskFull
            if world.disk_full[i] || now < world.disk_room_since[i] + DISK_CHECK_MS =>
        {
            Ok(())
        }
        other => Err(format!(
            "node {i} refused a write ({other:?}) with no disk fault"
        )),
    }
}

/// Runs every seed in `seeds` on all cores; returns the failures.
fn run_seeds(seeds: std::ops::Range<u64>, switches: Switches) -> Vec<u64> {
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let failures = std::sync::Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                if let Err(e) = run_caught(seed, switches) {
                    eprintln!(
                        "seed {seed} failed: {e}\n  replay: {}",
                        switches.replay(seed)
                    );
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(seed);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_unstable();
    failures
}

/// [`run_seed`], with a panic (in the core or the simulator) reported as a failure.
fn run_caught(seed: u64, switches: Switches) -> Result<(Option<Leaf>, SimStats, u64), String> {
    std::panic::catch_unwind(|| run_seed(seed, switches)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("panicked: {what}"))
    })
}

#[test]
fn random_workloads_under_random_faults_converge_without_losing_writes() {
    let switches = Switches::from_env();
    if let Ok(seed) = std::env::var("HEARSAY_DST_SEED") {
        let seed: u64 = seed.parse().expect("HEARSAY_DST_SEED is a number");
        if let Err(e) = run_caught(seed, switches) {
            panic!("seed {seed}: {e}\n  replay: {}", switches.replay(seed));
        }
        return;
    }
    let seeds: u64 = std::env::var("HEARSAY_DST_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    let failures = run_seeds(0..seeds, switches);
    if std::env::var_os("HEARSAY_DST_COVERAGE").is_some() {
        for (what, n) in COVERAGE.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            eprintln!("{n:>8}  {what}");
        }
        let simulated = SIMULATED_MS.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("{:>8}  simulated seconds", simulated / 1_000);
    }
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed: {failures:?}",
        failures.len()
    );
}

#[test]
fn a_dst_seed_replays_exactly() {
    let switches = Switches::default();
    let run = run_seed(7, switches).unwrap_or_else(|e| panic!("seed 7: {e}"));
    assert_eq!(run_seed(7, switches), Ok(run.clone()));
    assert_ne!(run_seed(8, switches).map(|r| r.1), Ok(run.1));
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut sim = Sim::new(SimConfig {
            loss: 0.05,
            duplicate: 0.02,
            fsync_us: Some(FSYNC_US),
            ..SimConfig::new(4, seed)
        });
        sim.run_for(2_000);
        for i in 0..50u64 {
            let key = format!("k{}", i % 7);
            let value = Value {
                content_type: "x".into(),
                data: vec![i as u8],
            };
            let ttl_ms = None;
            sim.submit((i % 4) as usize, Write::KvPut { key, value, ttl_ms });
            sim.run_for(37);
        }
        sim.partition(&[0, 0, 1, 1]);
        sim.run_for(3_000);
        sim.heal();
        sim.run_for(10_000);
        (
            (0..4).map(|i| sim.digest(i)).collect::<Vec<_>>(),
            sim.stats.clone(),
            sim.view(2),
        )
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42).1, run(43).1);
}

/// The oracles are not blind: a driver that acknowledges writes before they are durable loses
/// acknowledged writes in a crash (and, with consistency levels, answers writes as held by
/// members whose disks do not hold them yet), and a core that lets peers drag its clock without
/// bound stamps writes beyond the skew bound; each is caught within a few seeds.
/// With the counter workload, these seeds brought a deleted key back: a node left out of a
/// collection forgot a value on a peer's word, then took it again from another node left out
/// with it, which had not heard of the collection yet. A forgotten value is now refused until the
/// node's own horizon covers it (`node/tombstones.rs`).
#[test]
fn a_value_forgotten_on_a_peers_word_is_not_taken_back() {
    // The runs these seeds had when they found the bug, before puts could expire.
    let counters = Switches {
        counters: true,
        no_ttl: true,
        no_levels: true,
        ..Switches::default()
    };
    for seed in [470, 497] {
        if let Err(e) = run_caught(seed, counters) {
            panic!("seed {seed}: {e}\n  replay: HEARSAY_DST_SEED={seed} HEARSAY_DST_SWITCHES=counters,no-ttl,no-levels cargo test --test sim_dst");
        }
    }
}

/// Seeds where consistency levels found bugs (see the `no-levels` switch in the module doc): 94
/// (an acknowledgement from a member that joined the writer's view counted for one it had
/// counted), 19 (a waited write, durable and spread, answered with an error when a later
/// group failed) and 914 with `no-ttl` (an `r=majority` read returned a value a collected delete
/// had removed everywhere else).
#[test]
fn consistency_levels_keep_their_promises_where_they_were_broken() {
    let no_ttl = Switches {
        no_ttl: true,
        ..Switches::default()
    };
    for (seed, switches, named) in [
        (94, Switches::default(), ""),
        (19, Switches::default(), ""),
        (914, no_ttl, "HEARSAY_DST_SWITCHES=no-ttl "),
    ] {
        if let Err(e) = run_caught(seed, switches) {
            panic!("seed {seed}: {e}\n  replay: HEARSAY_DST_SEED={seed} {named}cargo test --test sim_dst");
        }
    }
}

#[test]
fn the_oracles_catch_drivers_that_break_the_contract() {
    let caught = |switches: Switches, what: &str| {
        (0..40).any(|seed| matches!(run_caught(seed, switches), Err(e) if e.contains(what)))
    };
    // The runs these checks had before consistency levels.
    let release_early = Switches {
        release_before_sync: true,
        no_levels: true,
        ..Switches::default()
    };
    assert!(
        caught(release_early, "a write it had acknowledged"),
        "no seed lost an acknowledged write released before its sync"
    );
    // With consistency levels, a member's acknowledgement leaves before the merge it stands
    // for is durable: a write answered as held by members' disks is not on one of them.
    let release_early = Switches {
        release_before_sync: true,
        ..Switches::default()
    };
    assert!(
        caught(release_early, "does not hold it durably"),
        "no seed answered a write as held by members that had not made it durable"
    );
    let unbounded = Switches {
        unbounded_skew: true,
        no_levels: true,
        ..Switches::default()
    };
    assert!(
        caught(unbounded, "beyond the bound"),
        "no seed noticed a clock dragged beyond the bound"
    );
}
