//! The cost of set writes on one node's core thread, with a memory store and with a sled store
//! under the default durability (fsync, commit included):
//!
//!     cargo bench --bench sets
//!     HEARSAY_SETS_BATCH=2000 HEARSAY_SETS_ELEMENTS=10000 HEARSAY_SETS_RUNS=3 cargo bench --bench sets
//!
//! It measures a batch of HEARSAY_SETS_BATCH adds (default 10,000) to a new set through
//! `Node::handle_write`, then, on a set that already holds HEARSAY_SETS_ELEMENTS elements
//! (default 100,000): a single add (split into the core's work and the commit), a single remove,
//! a peer's delta of one add, and a merge of a whole replica of that set in memory. Each figure is
//! the median over HEARSAY_SETS_RUNS runs (default 5), with the minimum and maximum.
//!
//! The big set is built outside the timed part (minted one add at a time, merged pairwise, merged
//! into the node once). A set's elements are kept one per row (layout 7), so an add reads and
//! writes the rows of the element it names and the set's header, whatever the set's size.
#![allow(clippy::disallowed_methods)] // tests and benchmarks measure real time

use hearsay::clock::{NodeId, ReplicaId};
use hearsay::crdt::{KeyState, OrSet};
use hearsay::node::{Node, Write};
use hearsay::store::{Durability, MemoryStore, SledStore, Store, StoreKey};
use std::time::{Duration, Instant};

// The allocator the server runs with: decoding, cloning and dropping a big set is mostly allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn element(i: usize) -> String {
    format!("e{i:06}")
}

/// Median, minimum and maximum of `runs` timings of `f` (given the run's index).
fn measure(runs: usize, mut f: impl FnMut(usize) -> Duration) -> (Duration, Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs.max(1)).map(&mut f).collect();
    times.sort();
    (times[times.len() / 2], times[0], times[times.len() - 1])
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{:.1} µs", ms * 1e3)
    } else {
        format!("{ms:.1} ms")
    }
}

fn report(what: &str, (median, min, max): (Duration, Duration, Duration)) {
    println!(
        "  {what:<44} {:>10}   (min {}, max {})",
        ms(median),
        ms(min),
        ms(max)
    );
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

/// A set holding `n` elements, each added once by `node` (dots 1..=n), as sequential adds would
/// leave it. Minted one add at a time on a set that never holds more than one element, then merged
/// pairwise, so building it stays cheap whatever a merge into a big set costs.
fn big_set(node: &ReplicaId, n: usize) -> OrSet {
    let mut mint = OrSet::new();
    let mut level: Vec<OrSet> = (0..n)
        .map(|i| {
            let delta = mint.add(node, &element(i));
            mint.remove(&element(i));
            delta
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| {
                let mut joined = pair[0].clone();
                if let Some(other) = pair.get(1) {
                    let _ = joined.merge(other);
                }
                joined
            })
            .collect();
    }
    level.pop().unwrap_or_default()
}

fn add(key: &str, elements: Vec<String>) -> Write {
    Write::SetEdit {
        key: key.into(),
        add: elements,
        remove: Vec::new(),
    }
}

/// One client write and its commit, as the runtime does it before acknowledging.
fn write_and_commit<S: Store>(node: &mut Node<S>, wall_ms: u64, write: Write) -> Duration {
    let (_, elapsed) = time(|| {
        node.handle_write(wall_ms, write).expect("write");
        node.commit().expect("commit").complete().expect("sync");
    });
    elapsed
}

fn bench_batch<S: Store>(open: &mut dyn FnMut() -> Node<S>, batch: usize, runs: usize) {
    let elements: Vec<String> = (0..batch).map(element).collect();
    let mut core = Vec::new();
    report(
        &format!("batch of {batch} adds to a new set"),
        measure(runs, |_| {
            let mut node = open();
            let write = add("batch", elements.clone());
            let (_, in_core) = time(|| node.handle_write(1, write).expect("write"));
            let (_, commit) = time(|| node.commit().expect("commit").complete().expect("sync"));
            core.push(in_core);
            in_core + commit
        }),
    );
    core.sort();
    report(
        "  of which the core's work (handle_write)",
        (core[core.len() / 2], core[0], core[core.len() - 1]),
    );
}

fn bench_single_add<S: Store>(open: &mut dyn FnMut() -> Node<S>, big: &OrSet, runs: usize) {
    let key = StoreKey::set("big");
    let mut node = open();
    let _ = node
        .merge_delta(0, key.clone(), KeyState::Set(big.clone()))
        .expect("prefill");
    node.checkpoint().expect("checkpoint");
    let mut wall = 10u64;
    report(
        "single add (handle_write + commit)",
        measure(runs, |run| {
            wall += 1;
            write_and_commit(&mut node, wall, add("big", vec![format!("new{run}")]))
        }),
    );
    let mut commits = Vec::new();
    report(
        "  of which the core's work (handle_write)",
        measure(runs, |run| {
            wall += 1;
            let write = add("big", vec![format!("core{run}")]);
            let (_, elapsed) = time(|| node.handle_write(wall, write).expect("write"));
            let (_, commit) = time(|| node.commit().expect("commit").complete().expect("sync"));
            commits.push(commit);
            elapsed
        }),
    );
    commits.sort();
    report(
        "  and the commit (log write + fdatasync)",
        (
            commits[commits.len() / 2],
            commits[0],
            commits[commits.len() - 1],
        ),
    );
    report(
        "single remove (handle_write + commit)",
        measure(runs, |run| {
            wall += 1;
            let write = Write::SetEdit {
                key: "big".into(),
                add: Vec::new(),
                remove: vec![element(run)],
            };
            write_and_commit(&mut node, wall, write)
        }),
    );
    let peer = ReplicaId::new(NodeId::new("n2").expect("node id"), 0);
    let mut minted = OrSet::new();
    report(
        "a peer's delta of one add (merge_delta)",
        measure(runs, |run| {
            let delta = minted.add(&peer, &format!("peer{run}"));
            wall += 1;
            time(|| node.merge_delta(wall, key.clone(), KeyState::Set(delta))).1
        }),
    );
    let KeyState::Set(set) = node.store().get(&key).expect("get").expect("present") else {
        panic!("not a set")
    };
    let mut replica = set.clone();
    replica.add(
        &ReplicaId::new(NodeId::new("n2").expect("node id"), 0),
        "elsewhere",
    );
    let replica = KeyState::Set(replica);
    report(
        "CRDT: merge a whole replica (one element more)",
        measure(runs, |_| {
            let mut copy = KeyState::Set(set.clone());
            time(|| copy.merge(&replica)).1
        }),
    );
}

fn main() {
    let batch = env("HEARSAY_SETS_BATCH", 10_000);
    let elements = env("HEARSAY_SETS_ELEMENTS", 100_000);
    let runs = env("HEARSAY_SETS_RUNS", 5);
    let node_id = NodeId::new("n1").expect("node id");
    let dirs = tempfile::tempdir().expect("temp dir");
    let mut opened = 0;
    let mut memory = || Node::open(MemoryStore::new(), node_id.clone()).expect("open");
    let mut sled = || {
        opened += 1;
        let store = SledStore::open(
            &dirs.path().join(format!("n{opened}")),
            Durability::default(),
        )
        .expect("sled store");
        Node::open(store, node_id.clone()).expect("open")
    };

    println!("batch: {batch} adds to a new set, median of {runs} runs");
    println!(" memory store");
    bench_batch(&mut memory, batch, runs);
    println!(" sled store, durability {:?}", Durability::default());
    bench_batch(&mut sled, batch, runs);

    let (big, built) = time(|| big_set(&ReplicaId::new(node_id.clone(), 0), elements));
    assert_eq!(big.len(), elements);
    println!(
        "\nsingle add to a set of {elements} elements, median of {runs} runs (set built in {})",
        ms(built)
    );
    println!(" memory store");
    bench_single_add(&mut memory, &big, runs);
    println!(" sled store, durability {:?}", Durability::default());
    bench_single_add(&mut sled, &big, runs);
}
