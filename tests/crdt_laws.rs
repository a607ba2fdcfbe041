//! Merge laws of the replicated types, checked with proptest: merge is commutative, associative
//! and idempotent; exchanging deltas equals merging states; an OR-set remove only removes the adds
//! it observed (checked against an add-wins oracle); the LWW register keeps the greatest
//! (timestamp, node id). The OR-set's indexed merge, its local operations and batch edits equal a
//! straightforward reference implementation kept here, on random states and deltas, down to the
//! encoded bytes.

use hearsay::clock::{Dot, NodeId, ReplicaId, Timestamp, VersionVector};
use hearsay::crdt::{KeyState, LwwRegister, OrSet, Value};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const NODES: [&str; 3] = ["a", "b", "c"];
/// The last is longer than the OR-set's index keeps inline.
const ELEMENTS: [&str; 4] = ["w", "x", "y", "z-a-name-of-more-than-22-bytes"];

fn node(i: usize) -> NodeId {
    NodeId::new(NODES[i % NODES.len()]).unwrap()
}

/// The replicas that mint dots: n1 and n2 in epoch 0, and n1 again in a later epoch (its data
/// lost and started over), a replica of its own.
fn actor(i: usize) -> ReplicaId {
    ReplicaId::new(node(i % 2), (i / 2 % 2) as u64)
}

/// Writes, deletes and writes with an expiry (a TTL of 0 to 2 ms).
fn register() -> impl Strategy<Value = LwwRegister> {
    (
        0u64..6,
        0usize..3,
        proptest::option::of(0u8..3),
        proptest::option::of(0u64..3),
    )
        .prop_map(|(ts, n, v, ttl)| {
            let write = LwwRegister::write(
                Timestamp::new(ts, 0),
                node(n),
                v.map(|b| Value {
                    content_type: "text/plain".into(),
                    data: vec![b],
                }),
            );
            match (ttl, write.is_tombstone()) {
                (Some(ttl), false) => write.expiring_after(ttl),
                _ => write,
            }
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
                deltas.push(sets[replica].add(&actor(replica), ELEMENTS[element]));
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

// The reference OR-set: the straightforward algorithm (every merge walks every element of both
// sides), over mirrors of the encoded forms of `CausalContext` and `OrSet`. Values cross between
// the two through their encoding, so the comparison covers the bytes as well.

/// Mirrors `CausalContext`'s encoded form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RefContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

/// Mirrors `OrSet`'s encoded form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RefSet {
    context: RefContext,
    entries: BTreeMap<String, BTreeSet<Dot>>,
}

// The only places here that look inside a `Dot`.
fn actor_of(dot: &Dot) -> &ReplicaId {
    &dot.replica
}

fn counter_of(dot: &Dot) -> u64 {
    dot.counter
}

impl RefContext {
    fn from_dots(dots: impl IntoIterator<Item = Dot>) -> Self {
        let mut ctx = RefContext {
            vv: VersionVector::new(),
            cloud: dots.into_iter().collect(),
        };
        ctx.compact();
        ctx
    }

    fn contains(&self, dot: &Dot) -> bool {
        self.vv.contains(dot) || self.cloud.contains(dot)
    }

    fn next_dot(&self, node: &ReplicaId) -> Dot {
        let in_cloud = self
            .cloud
            .iter()
            .filter(|d| actor_of(d) == node)
            .map(counter_of)
            .max()
            .unwrap_or(0);
        Dot::new(node.clone(), self.vv.get(node).max(in_cloud) + 1)
    }

    fn merge(&mut self, other: &RefContext) {
        self.vv.merge(&other.vv);
        self.cloud.extend(other.cloud.iter().cloned());
        self.compact();
    }

    fn compact(&mut self) {
        let cloud = std::mem::take(&mut self.cloud);
        for dot in cloud {
            let have = self.vv.get(actor_of(&dot));
            if counter_of(&dot) == have + 1 {
                self.vv.advance(actor_of(&dot), counter_of(&dot));
            } else if counter_of(&dot) > have {
                self.cloud.insert(dot);
            }
        }
    }
}

impl RefSet {
    fn dots_of(&self, element: &str) -> Vec<Dot> {
        self.entries
            .get(element)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn add(&mut self, node: &ReplicaId, element: &str) -> RefSet {
        let dot = self.context.next_dot(node);
        let mut seen = self.dots_of(element);
        seen.push(dot.clone());
        let delta = RefSet {
            context: RefContext::from_dots(seen),
            entries: BTreeMap::from([(element.to_string(), BTreeSet::from([dot]))]),
        };
        self.merge(&delta);
        delta
    }

    fn remove(&mut self, element: &str) -> RefSet {
        let delta = RefSet {
            context: RefContext::from_dots(self.dots_of(element)),
            entries: BTreeMap::new(),
        };
        self.merge(&delta);
        delta
    }

    fn merge(&mut self, other: &RefSet) -> bool {
        let context_before = self.context.clone();
        let mut changed = false;
        let keys: BTreeSet<String> = self
            .entries
            .keys()
            .chain(other.entries.keys())
            .cloned()
            .collect();
        for key in keys {
            let empty = BTreeSet::new();
            let mine = self.entries.get(&key).unwrap_or(&empty);
            let theirs = other.entries.get(&key).unwrap_or(&empty);
            let kept: BTreeSet<Dot> = mine
                .iter()
                .filter(|d| theirs.contains(d) || !other.context.contains(d))
                .chain(
                    theirs
                        .iter()
                        .filter(|d| !mine.contains(d) && !self.context.contains(d)),
                )
                .cloned()
                .collect();
            if &kept != mine {
                changed = true;
                if kept.is_empty() {
                    self.entries.remove(&key);
                } else {
                    self.entries.insert(key, kept);
                }
            }
        }
        self.context.merge(&other.context);
        changed || context_before != self.context
    }
}

fn reencode<T: Serialize, U: serde::de::DeserializeOwned>(value: &T) -> U {
    postcard::from_bytes(&postcard::to_stdvec(value).unwrap()).unwrap()
}

fn to_orset(set: &RefSet) -> OrSet {
    reencode(set)
}

fn to_ref(set: &OrSet) -> RefSet {
    reencode(set)
}

fn any_dot() -> impl Strategy<Value = Dot> {
    (0usize..3, 0u64..9).prop_map(|(n, c)| Dot::new(actor(n), c))
}

/// Any state as it could arrive encoded: a context with a version vector and a cloud (which may
/// overlap or extend the vector), and elements with up to three dots each. Mostly every dot an
/// element holds is also in the context, as replicas keep it; sometimes not, and then an element
/// may also hold no dot or share one with another.
fn ref_set(max_elements: usize) -> impl Strategy<Value = RefSet> {
    (
        proptest::collection::vec(0u64..5, 3),
        proptest::collection::vec(any_dot(), 0..6),
        proptest::collection::vec(
            (0usize..4, proptest::collection::vec(any_dot(), 0..4)),
            0..=max_elements,
        ),
        proptest::bool::weighted(0.8),
    )
        .prop_map(|(vv, cloud, elements, consistent)| {
            let mut set = RefSet::default();
            for (n, counter) in vv.into_iter().enumerate() {
                set.context.vv.advance(&actor(n), counter);
            }
            set.context.cloud.extend(cloud);
            for (element, dots) in elements {
                if consistent && dots.is_empty() {
                    continue;
                }
                if consistent {
                    set.context.cloud.extend(dots.iter().cloned());
                }
                set.entries
                    .entry(ELEMENTS[element].to_string())
                    .or_default()
                    .extend(dots);
            }
            set
        })
}

/// What happens next to the replica under test.
#[derive(Clone, Debug)]
enum Step {
    /// Merge a delta (or a whole state) from elsewhere.
    Merge(RefSet),
    Add(usize, usize),
    Remove(usize),
    Edit {
        node: usize,
        remove: Vec<usize>,
        add: Vec<usize>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let elements = || proptest::collection::vec(0usize..4, 0..4);
    prop_oneof![
        3 => ref_set(2).prop_map(Step::Merge),
        1 => ref_set(4).prop_map(Step::Merge),
        2 => (0usize..3, 0usize..4).prop_map(|(n, e)| Step::Add(n, e)),
        2 => (0usize..4).prop_map(Step::Remove),
        1 => (0usize..3, elements(), elements()).prop_map(|(node, remove, add)| Step::Edit { node, remove, add }),
    ]
}

proptest! {
    #[test]
    fn decoding_normalizes_only_what_no_replica_writes_and_encoding_keeps_the_bytes(set in ref_set(4)) {
        let decoded = to_orset(&set);
        // Decoding compacts the context and drops the dots no replica mints (counter 0, which
        // every context covers, so any merge would drop them); nothing else.
        let mut normal = set.clone();
        normal.context.compact();
        normal.entries.retain(|_, dots| {
            let held = !dots.is_empty();
            dots.retain(|dot| counter_of(dot) > 0);
            !held || !dots.is_empty()
        });
        prop_assert_eq!(to_ref(&decoded), normal.clone());
        prop_assert_eq!(
            postcard::to_stdvec(&decoded).unwrap(),
            postcard::to_stdvec(&normal).unwrap()
        );
    }

    #[test]
    fn orset_equals_the_reference_through_merges_and_operations(
        start in ref_set(4),
        steps in proptest::collection::vec(step(), 1..12),
    ) {
        let mut fast = to_orset(&start);
        let mut slow = to_ref(&fast);
        for step in steps {
            match step {
                Step::Merge(delta) => {
                    let delta = to_orset(&delta);
                    let changed = fast.merge(&delta).changed();
                    prop_assert_eq!(changed, slow.merge(&to_ref(&delta)), "changed, merging {:?}", delta);
                }
                Step::Add(n, e) => {
                    let delta = fast.add(&actor(n), ELEMENTS[e]);
                    prop_assert_eq!(to_ref(&delta), slow.add(&actor(n), ELEMENTS[e]));
                }
                Step::Remove(e) => {
                    let delta = fast.remove(ELEMENTS[e]);
                    prop_assert_eq!(to_ref(&delta), slow.remove(ELEMENTS[e]));
                }
                Step::Edit { node: n, remove, add } => {
                    let names = |list: &[usize]| list.iter().map(|&e| ELEMENTS[e]).collect::<Vec<_>>();
                    let delta = fast.edit(&actor(n), names(&remove), names(&add));
                    // The reference joins each operation's delta into a growing one.
                    let mut joined = RefSet::default();
                    for e in names(&remove) {
                        joined.merge(&slow.remove(e));
                    }
                    for e in names(&add) {
                        joined.merge(&slow.add(&actor(n), e));
                    }
                    prop_assert_eq!(to_ref(&delta), joined);
                }
            }
            prop_assert_eq!(to_ref(&fast), slow.clone());
        }
        // Whatever the index went through, it agrees with a set decoded afresh: removing every
        // element (found only through the index when it arrives as a remove delta) empties both.
        let mut decoded = to_orset(&slow);
        prop_assert_eq!(&decoded, &fast);
        for element in slow.entries.keys() {
            let delta = to_orset(&slow.clone().remove(element));
            prop_assert_eq!(fast.merge(&delta), decoded.merge(&delta));
        }
        prop_assert_eq!(&fast, &decoded);
        prop_assert_eq!(to_ref(&fast), {
            let mut emptied = slow.clone();
            for element in slow.entries.keys() {
                emptied.remove(element);
            }
            emptied
        });
    }

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
    fn an_expired_value_never_comes_back_whatever_the_merge_order(regs in proptest::collection::vec(register(), 1..8)) {
        let mut forward = regs[0].clone();
        for r in &regs[1..] {
            let _ = forward.merge(r);
        }
        let mut backward = regs[regs.len() - 1].clone();
        for r in regs.iter().rev().skip(1) {
            let _ = backward.merge(r);
        }
        let mut gone_at = None;
        for now_ms in 0..12 {
            // Every replica reads the same at the same time, whatever order it merged in.
            prop_assert_eq!(forward.live_value(now_ms), backward.live_value(now_ms));
            match (forward.live_value(now_ms), gone_at) {
                (None, None) => gone_at = Some(now_ms),
                (Some(_), Some(t)) => prop_assert!(false, "gone at {} and back at {}", t, now_ms),
                _ => {}
            }
        }
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
    let (a, b) = (actor(0), actor(1));
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
