//! The cost of set writes on one node's core thread, with a memory store and with a sled store
//! under the default durability (fsync, commit included):
//!
//!     cargo bench --bench sets
//!     HEARSAY_SETS_BATCH=2000 HEARSAY_SETS_ELEMENTS=10000 HEARSAY_SETS_RUNS=3 cargo bench --bench sets
//!
//! It measures a batch of HEARSAY_SETS_BATCH adds (default 10,000) to a new set through
//! `Node::handle_write`, then a single add to a set that already holds HEARSAY_SETS_ELEMENTS
//! elements (default 100,000) and where that time goes: reading the record, the CRDT operation
//! and merge, encoding, hashing, writing. Each figure is the median over HEARSAY_SETS_RUNS runs
//! (default 5), with the minimum and maximum.
//!
//! The big set is built outside the timed part (minted one add at a time, merged pairwise, merged
//! into the node once). The whole set is one record, so every write reads, re-encodes, re-hashes
//! and rewrites all of it; the breakdown shows how much of a single add that is.
#![allow(clippy::disallowed_methods)] // tests and benchmarks measure real time

use hearsay::clock::NodeId;
use hearsay::crdt::{KeyState, OrSet};
use hearsay::node::{Node, Write};
use hearsay::store::{merkle, record, Durability, MemoryStore, SledStore, Store, StoreKey};
use std::time::{Duration, Instant};

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
fn big_set(node: &NodeId, n: usize) -> OrSet {
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
                    joined.merge(other);
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

fn bench_single_add<S: Store>(
    open: &mut dyn FnMut() -> Node<S>,
    big: &OrSet,
    node_id: &NodeId,
    runs: usize,
) {
    let key = StoreKey::set("big");
    let mut node = open();
    node.merge_delta(key.clone(), KeyState::Set(big.clone()), None)
        .expect("prefill");
    node.checkpoint().expect("checkpoint");
    let mut wall = 10u64;
    let mut tick = || {
        wall += 1;
        wall
    };
    report(
        "single add (handle_write + commit)",
        measure(runs, |run| {
            write_and_commit(&mut node, tick(), add("big", vec![format!("new{run}")]))
        }),
    );
    report(
        "  of which handle_write",
        measure(runs, |run| {
            let write = add("big", vec![format!("again{run}")]);
            let (_, elapsed) = time(|| node.handle_write(tick(), write).expect("write"));
            node.commit().expect("commit").complete().expect("sync");
            elapsed
        }),
    );

    // The parts, each timed alone on the same state.
    let state = || node.store().get(&key).expect("get").expect("present");
    report(
        "read the record (x2 per write)",
        measure(runs, |_| time(state).1),
    );
    let KeyState::Set(set) = state() else {
        panic!("not a set")
    };
    report(
        "CRDT: OrSet::add (the local operation)",
        measure(runs, |run| {
            let mut copy = set.clone();
            time(|| copy.add(node_id, &format!("part{run}"))).1
        }),
    );
    let delta = set.clone().add(node_id, "merged");
    report(
        "CRDT: merge the delta into the stored state",
        measure(runs, |_| {
            let mut copy = KeyState::Set(set.clone());
            let delta = KeyState::Set(delta.clone());
            time(|| copy.merge(&delta)).1
        }),
    );
    let mut replica = set.clone();
    replica.add(&NodeId::new("n2").expect("node id"), "elsewhere");
    let replica = KeyState::Set(replica);
    report(
        "CRDT: merge a whole replica (one element more)",
        measure(runs, |_| {
            let mut copy = KeyState::Set(set.clone());
            time(|| copy.merge(&replica)).1
        }),
    );
    let whole = KeyState::Set(set.clone());
    let (bytes, _) = time(|| record::encode_state(&whole));
    report(
        &format!("encode the state ({} KB)", bytes.len() / 1000),
        measure(runs, |_| time(|| record::encode_state(&whole)).1),
    );
    report(
        "hash the encoded state (blake3)",
        measure(runs, |_| time(|| blake3::hash(&bytes)).1),
    );
    report(
        "item hash = encode + hash (x2 per write)",
        measure(runs, |_| time(|| merkle::item_hash(&key, &whole)).1),
    );
    report(
        "decode the record",
        measure(runs, |_| {
            let encoded = record::encode_record(&whole);
            time(|| record::decode_record(&encoded).expect("decode")).1
        }),
    );
    report(
        "clone the state",
        measure(runs, |_| time(|| whole.clone()).1),
    );
    report(
        "drop the state",
        measure(runs, |_| {
            let copy = whole.clone();
            time(|| drop(copy)).1
        }),
    );
    report(
        "store the record (apply)",
        measure(runs, |_| {
            let batch = hearsay::store::WriteBatch {
                records: vec![(key.clone(), whole.clone())],
                ..Default::default()
            };
            time(|| node.store_mut().apply(batch).expect("apply")).1
        }),
    );
    report(
        "commit with nothing to log",
        measure(runs, |_| {
            time(|| node.commit().expect("commit").complete().expect("sync")).1
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

    let (big, built) = time(|| big_set(&node_id, elements));
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
