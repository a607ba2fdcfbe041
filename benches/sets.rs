//! The cost of set writes on one node's core thread, with a memory store and with a sled store
//! under the default durability (fsync, commit included):
//!
//!     cargo bench --bench sets
//!     HEARSAY_SETS_BATCH=2000 HEARSAY_SETS_ELEMENTS=10000 HEARSAY_SETS_RUNS=3 cargo bench --bench sets
//!
//! It measures a batch of HEARSAY_SETS_BATCH adds (default 10,000) to a new set through
//! `Node::handle_write`, then a single add to a set that already holds HEARSAY_SETS_ELEMENTS
//! elements (default 100,000), then the same add replayed step by step to show where its time
//! goes (reading the record, the CRDT operation and merge, encoding, hashing, writing, syncing),
//! then a merge of a whole replica of that set. Each figure is the median over HEARSAY_SETS_RUNS
//! runs (default 5), with the minimum and maximum.
//!
//! The big set is built outside the timed part (minted one add at a time, merged pairwise, merged
//! into the node once). The whole set is one record, so every write reads, re-encodes, re-hashes
//! and rewrites all of it; the breakdown shows how much of a single add that is.
#![allow(clippy::disallowed_methods)] // tests and benchmarks measure real time

use hearsay::clock::{NodeId, ReplicaId, Timestamp};
use hearsay::crdt::{KeyState, OrSet};
use hearsay::node::{Node, Write};
use hearsay::store::{
    record, Durability, LoggedDeltaRef, MemoryStore, SledStore, Store, StoreKey, WriteBatch,
};
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
    report(
        &format!("batch of {batch} adds to a new set"),
        measure(runs, |_| {
            let mut node = open();
            write_and_commit(&mut node, 1, add("batch", elements.clone()))
        }),
    );
}

/// The steps of a set write at the node, in its order: the SetEdit arm of `handle_write` (read,
/// edit, list the elements for the reply), then `merge_checked` (read again, hash the old state,
/// merge, hash the new state, log and write the record), then the commit.
const STEPS: [&str; 13] = [
    "read the record (to build the delta)",
    "CRDT: the add (OrSet::add, as edit does it)",
    "list the elements for the reply",
    "drop that copy of the state",
    "read the record again (to merge into)",
    "encode the old state (its item hash)",
    "blake3 the old state",
    "CRDT: merge the delta",
    "encode the new state (its item hash)",
    "blake3 the new state",
    "encode the logged delta",
    "write the record (store apply)",
    "commit (log write + fdatasync)",
];

fn bench_single_add<S: Store>(
    open: &mut dyn FnMut() -> Node<S>,
    big: &OrSet,
    node_id: &NodeId,
    runs: usize,
) {
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

    // The same write replayed step by step on the store, each step timed. (The node's Merkle
    // index is left behind, so this comes last.)
    let read = |node: &Node<S>| match node.store().get(&key).expect("get") {
        Some(KeyState::Set(set)) => set,
        _ => panic!("the set is missing"),
    };
    let mut steps: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len()];
    for run in 0..runs.max(1) {
        let element = format!("step{run}");
        let mut t = Vec::with_capacity(STEPS.len());
        let (mut set, d) = time(|| read(&node));
        t.push(d);
        let actor = ReplicaId::new(node_id.clone(), 0);
        let (delta, d) = time(|| set.add(&actor, &element));
        t.push(d);
        let (elements, d) = time(|| set.elements().map(str::to_string).collect::<Vec<_>>());
        t.push(d);
        assert!(elements.contains(&element));
        t.push(time(|| drop(set)).1);
        let (old, d) = time(|| KeyState::Set(read(&node)));
        t.push(d);
        let (bytes, d) = time(|| record::encode_state(&old));
        t.push(d);
        t.push(time(|| blake3::hash(&bytes)).1);
        let mut new = old;
        let delta = KeyState::Set(delta);
        let (changed, d) = time(|| new.merge(&delta));
        t.push(d);
        assert_eq!(changed, Ok(hearsay::crdt::Merged::Changed));
        let (bytes, d) = time(|| record::encode_state(&new));
        t.push(d);
        t.push(time(|| blake3::hash(&bytes)).1);
        let logged = LoggedDeltaRef {
            key: &key,
            delta: &delta,
            hlc: Timestamp::ZERO,
            origin_seq: Some((&actor, 1)),
        };
        let (logged, d) = time(|| logged.encode());
        t.push(d);
        let batch = WriteBatch {
            records: vec![(key.clone(), new)],
            deltas: vec![logged],
            ..Default::default()
        };
        t.push(time(|| node.store_mut().apply(batch).expect("apply")).1);
        t.push(time(|| node.commit().expect("commit").complete().expect("sync")).1);
        for (step, d) in steps.iter_mut().zip(t) {
            step.push(d);
        }
    }
    println!("  the same write, step by step:");
    let mut sum = Duration::ZERO;
    for (name, mut times) in STEPS.iter().zip(steps) {
        times.sort();
        let median = times[times.len() / 2];
        sum += median;
        report(
            &format!("  {name}"),
            (median, times[0], times[times.len() - 1]),
        );
    }
    println!("  {:<44} {:>10}", "  sum of the step medians", ms(sum));

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
    bench_single_add(&mut memory, &big, &node_id, runs);
    println!(" sled store, durability {:?}", Durability::default());
    bench_single_add(&mut sled, &big, &node_id, runs);
}
