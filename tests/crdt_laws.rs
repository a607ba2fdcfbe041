//! Merge laws of the replicated types, checked with proptest: merge is commutative, associative
//! and idempotent; exchanging deltas equals merging states; an OR-set remove only removes the adds
//! it observed (checked against an add-wins oracle); the LWW register keeps the greatest
//! (timestamp, node id).

use hearsay::clock::{NodeId, Timestamp};
use hearsay::crdt::{KeyState, LwwRegister, OrSet, Value};
use proptest::prelude::*;
use std::collections::BTreeSet;

const NODES: [&str; 3] = ["a", "b", "c"];
const ELEMENTS: [&str; 4] = ["w", "x", "y", "z"];

fn node(i: usize) -> NodeId {
    NodeId::new(NODES[i % NODES.len()]).unwrap()
}

fn register() -> impl Strategy<Value = LwwRegister> {
    (0u64..6, 0usize..3, proptest::option::of(0u8..3)).prop_map(|(ts, n, v)| {
        LwwRegister::write(
            Timestamp::from_raw(ts),
            node(n),
            v.map(|b| Value {
                content_type: "text/plain".into(),
                data: vec![b],
            }),
        )
    })
}

fn merged<T: Clone, R>(a: &T, b: &T, merge: impl Fn(&mut T, &T) -> R) -> T {
    let mut out = a.clone();
    let _ = merge(&mut out, b);
    out
}

/// One step of a replicated history over three replicas.
#[derive(Clone, Debug)]
enum Op {
    Add {
        replica: usize,
        element: usize,
    },
    Remove {
        replica: usize,
        element: usize,
    },
    /// `to` merges the state of `from`.
    Sync {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3, 0usize..4).prop_map(|(replica, element)| Op::Add { replica, element }),
        (0usize..3, 0usize..4).prop_map(|(replica, element)| Op::Remove { replica, element }),
        (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

/// The add-wins specification: every add is a unique tag; a remove cancels the tags its replica
/// has observed for that element; an element is present while any of its tags is uncancelled.
#[derive(Clone, Default)]
struct Oracle {
    added: BTreeSet<(usize, u64)>,
    tags: BTreeSet<(usize, u64, usize)>, // (replica, counter, element)
    cancelled: BTreeSet<(usize, u64)>,
}

impl Oracle {
    fn merge(&mut self, other: &Oracle) {
        self.added.extend(other.added.iter().copied());
        self.tags.extend(other.tags.iter().copied());
        self.cancelled.extend(other.cancelled.iter().copied());
    }

    fn elements(&self) -> Vec<String> {
        let live: BTreeSet<usize> = self
            .tags
            .iter()
            .filter(|(r, c, _)| !self.cancelled.contains(&(*r, *c)))
            .map(|(_, _, e)| *e)
            .collect();
        live.into_iter().map(|e| ELEMENTS[e].to_string()).collect()
    }
}

/// Runs a history; returns the replicas, every delta each produced, and the oracle per replica.
fn run(ops: &[Op]) -> (Vec<OrSet>, Vec<OrSet>, Vec<Oracle>) {
    let mut sets = vec![OrSet::new(); 3];
    let mut oracles = vec![Oracle::default(); 3];
    let mut deltas = Vec::new();
    let mut counter = 0u64;
    for op in ops {
        match *op {
            Op::Add { replica, element } => {
                deltas.push(sets[replica].add(&node(replica), ELEMENTS[element]));
                counter += 1;
                let o = &mut oracles[replica];
                o.added.insert((replica, counter));
                o.tags.insert((replica, counter, element));
            }
            Op::Remove { replica, element } => {
                deltas.push(sets[replica].remove(ELEMENTS[element]));
                let o = &mut oracles[replica];
                let seen: Vec<(usize, u64)> = o
                    .tags
                    .iter()
                    .filter(|(r, c, e)| *e == element && !o.cancelled.contains(&(*r, *c)))
                    .map(|(r, c, _)| (*r, *c))
                    .collect();
                o.cancelled.extend(seen);
            }
            Op::Sync { from, to } => {
                let source = sets[from].clone();
                let _ = sets[to].merge(&source);
                let source = oracles[from].clone();
                oracles[to].merge(&source);
            }
        }
    }
    (sets, deltas, oracles)
}

fn elements(set: &OrSet) -> Vec<String> {
    set.elements().map(str::to_string).collect()
}

proptest! {
    #[test]
    fn lww_merge_is_commutative_associative_idempotent(a in register(), b in register(), c in register()) {
        let m = |x: &mut LwwRegister, y: &LwwRegister| x.merge(y);
        prop_assert_eq!(merged(&a, &b, m), merged(&b, &a, m));
        prop_assert_eq!(merged(&merged(&a, &b, m), &c, m), merged(&a, &merged(&b, &c, m), m));
        prop_assert_eq!(merged(&a, &a, m), a.clone());
    }

    #[test]
    fn lww_keeps_the_greatest_timestamp_then_node(regs in proptest::collection::vec(register(), 1..8)) {
        let mut state = regs[0].clone();
        for r in &regs[1..] {
            let _ = state.merge(r);
        }
        let best = regs.iter().max_by(|x, y| (x.timestamp, &x.node).cmp(&(y.timestamp, &y.node))).unwrap();
        prop_assert_eq!((state.timestamp, &state.node), (best.timestamp, &best.node));
    }

    #[test]
    fn orset_merge_is_commutative_associative_idempotent(ops in proptest::collection::vec(op(), 0..40)) {
        let (sets, _, _) = run(&ops);
        let m = |x: &mut OrSet, y: &OrSet| x.merge(y);
        let (a, b, c) = (&sets[0], &sets[1], &sets[2]);
        prop_assert_eq!(merged(a, b, m), merged(b, a, m));
        prop_assert_eq!(merged(&merged(a, b, m), c, m), merged(a, &merged(b, c, m), m));
        prop_assert_eq!(merged(a, a, m), a.clone());
    }

    #[test]
    fn orset_matches_the_add_wins_oracle_at_every_replica(ops in proptest::collection::vec(op(), 0..40)) {
        let (sets, _, oracles) = run(&ops);
        for (set, oracle) in sets.iter().zip(&oracles) {
            prop_assert_eq!(elements(set), oracle.elements());
        }
        // After a full exchange every replica agrees with the merged oracle.
        let mut all = OrSet::new();
        let mut oracle = Oracle::default();
        for (set, o) in sets.iter().zip(&oracles) {
            let _ = all.merge(set);
            oracle.merge(o);
        }
        prop_assert_eq!(elements(&all), oracle.elements());
    }

    #[test]
    fn merging_all_deltas_in_any_order_equals_merging_the_states(
        ops in proptest::collection::vec(op(), 0..40),
        seed in any::<u64>(),
    ) {
        let (sets, mut deltas, _) = run(&ops);
        let mut from_states = OrSet::new();
        for s in &sets {
            let _ = from_states.merge(s);
        }
        // Shuffle deterministically and deliver some deltas twice.
        let mut x = seed | 1;
        for i in (1..deltas.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            deltas.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut from_deltas = OrSet::new();
        for (i, d) in deltas.iter().enumerate() {
            let _ = from_deltas.merge(d);
            if i % 3 == 0 {
                let _ = from_deltas.merge(d);
            }
        }
        prop_assert_eq!(from_deltas, from_states);
    }

    #[test]
    fn delta_of_a_register_write_equals_state_merge(a in register(), b in register()) {
        // A register is its own delta: applying the write as a delta or merging the writer's
        // whole state gives the same result.
        let mut writer = a.clone();
        let _ = writer.merge(&b);
        let mut receiver = KeyState::Register(a.clone());
        let _ = receiver.merge(&KeyState::Register(b.clone()));
        prop_assert_eq!(receiver, KeyState::Register(writer));
    }
}

#[test]
fn remove_only_removes_observed_adds() {
    let (a, b) = (node(0), node(1));
    let mut left = OrSet::new();
    let mut right = OrSet::new();
    let first = left.add(&a, "x");
    let _ = right.merge(&first);
    // Concurrently: right removes the add it saw, left adds x again.
    let removal = right.remove("x");
    let readd = left.add(&a, "x");
    let other = right.add(&b, "y");
    let _ = left.merge(&removal);
    let _ = left.merge(&other);
    let _ = right.merge(&readd);
    assert_eq!(elements(&left), vec!["x", "y"]);
    assert_eq!(left, right);
}
