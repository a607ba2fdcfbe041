//! Add/remove races in observed-remove sets: a remove that a concurrent add outlived (add wins).
//!
//! A remove leaves no trace in an OR-set (it mints no dot), so a race is recognized from the dots
//! an element lost on this replica (removed, or replaced by a newer add of it), remembered for a
//! while in [`LostDots`]:
//! - a state without the element that saw a dot it lost here (so it removed the element), while
//!   the element holds a dot that state never saw: the remove missed a concurrent add;
//! - a delta (one write's) that brings back an element absent here and replaces a dot it lost
//!   here: its writer saw that dot still live, so it had not seen the remove. (A whole state
//!   cannot say this: its context covers every dot its replica saw, removed or not.)
//! - and, with no memory needed, a state without the element that removes some of its dots here
//!   while others, which it never saw, keep it.
//!
//! Each race is found once per replica: the lost dots that showed it are forgotten. Pure: no I/O;
//! the replica's current dots come in through a function.

use super::set_merge::SetChange;
use super::OrSet;
use crate::clock::Dot;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The dots elements lost on this replica, by set key, the oldest forgotten beyond a bound.
pub struct LostDots<K> {
    lost: BTreeMap<(K, Dot), String>,
    order: VecDeque<(K, Dot)>,
    capacity: usize,
}

impl<K: Ord + Clone> LostDots<K> {
    /// Remembers at most `capacity` lost dots.
    pub fn new(capacity: usize) -> Self {
        LostDots {
            lost: BTreeMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// How many lost dots are remembered.
    pub fn len(&self) -> usize {
        self.lost.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lost.is_empty()
    }

    /// Remembers the dots `change` takes from elements of set `key`.
    pub fn record(&mut self, key: &K, change: &SetChange) {
        for (element, dots) in &change.elements {
            for dot in dots.lost() {
                let at = (key.clone(), dot.clone());
                if self.lost.insert(at.clone(), element.clone()).is_none() {
                    self.order.push_back(at);
                }
            }
        }
        // The order also keeps dots forgotten since (a race showed them): it is trimmed too.
        while self.lost.len() > self.capacity || self.order.len() > 2 * self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.lost.remove(&oldest);
        }
    }

    /// The elements of set `key` whose remove raced a concurrent add, found while merging
    /// `other` (a single write's delta when `delta`), which changes the set by `change`;
    /// `held` gives an element's dots on this replica before the merge. Then remembers the
    /// dots the merge takes.
    pub fn merged(
        &mut self,
        key: &K,
        other: &OrSet,
        change: Option<&SetChange>,
        delta: bool,
        mut held: impl FnMut(&str) -> BTreeSet<Dot>,
    ) -> BTreeSet<String> {
        let changed = |element: &str| change.and_then(|c| c.elements.get(element));
        let mut raced = BTreeSet::new();
        if let Some(change) = change {
            for (element, dots) in &change.elements {
                let removed_some = dots.lost().any(|d| other.context().contains(d));
                if !other.contains(element) && removed_some && !dots.after.is_empty() {
                    raced.insert(element.clone());
                }
            }
        }
        let mut shown: Vec<(K, Dot)> = Vec::new();
        for (actor, first, last) in other.context().ranges() {
            let from = (key.clone(), Dot::new(actor.clone(), first));
            let to = (key.clone(), Dot::new(actor.clone(), last));
            for ((_, dot), element) in self.lost.range(from..=to) {
                let race = if other.contains(element) {
                    delta
                        && changed(element)
                            .is_some_and(|c| c.before.is_empty() && !c.after.is_empty())
                } else {
                    match changed(element) {
                        Some(c) => !c.after.is_empty(),
                        None => !held(element).is_empty(),
                    }
                };
                if race {
                    raced.insert(element.clone());
                    shown.push((key.clone(), dot.clone()));
                }
            }
        }
        for at in shown {
            self.lost.remove(&at);
        }
        if let Some(change) = change {
            self.record(key, change);
        }
        raced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{NodeId, ReplicaId};
    use crate::crdt::set_merge;

    fn replica(s: &str) -> ReplicaId {
        ReplicaId::new(NodeId::new(s).unwrap(), 1)
    }

    /// One replica of set "s" with its lost-dot memory.
    struct Replica {
        set: OrSet,
        lost: LostDots<&'static str>,
        races: usize,
    }

    impl Replica {
        fn new() -> Self {
            Replica {
                set: OrSet::new(),
                lost: LostDots::new(100),
                races: 0,
            }
        }

        /// A local write (`write` returns its delta): applied, its lost dots remembered, no
        /// race looked for.
        fn local(&mut self, write: impl FnOnce(&mut OrSet) -> OrSet) -> OrSet {
            let mut set = self.set.clone();
            let delta = write(&mut set);
            let Ok(planned) = set_merge::plan(&self.set, &delta);
            let change = planned.expect("a local write changes its own replica");
            self.lost.record(&"s", &change);
            self.set.apply(change);
            delta
        }

        /// Merges a peer's delta (`delta`) or whole state.
        fn merge(&mut self, other: &OrSet, delta: bool) {
            let Ok(change) = set_merge::plan(&self.set, other);
            let set = self.set.clone();
            let held = |e: &str| set.dots(e).cloned().collect();
            let raced = self.lost.merged(&"s", other, change.as_ref(), delta, held);
            self.races += raced.len();
            if let Some(change) = change {
                self.set.apply(change);
            }
        }
    }

    /// Three replicas that all hold "e", added by the first.
    fn three() -> [Replica; 3] {
        let mut all = [Replica::new(), Replica::new(), Replica::new()];
        let add = all[0].local(|s| s.add(&replica("a"), "e"));
        all[1].merge(&add, true);
        all[2].merge(&add, true);
        all
    }

    #[test]
    fn a_remove_and_a_concurrent_add_race_once_on_every_replica_whatever_the_order() {
        for remove_first_on_c in [true, false] {
            let [mut a, mut b, mut c] = three();
            let remove = a.local(|s| s.remove("e"));
            let add = b.local(|s| s.add(&replica("b"), "e"));
            a.merge(&add, true);
            b.merge(&remove, true);
            if remove_first_on_c {
                c.merge(&remove, true);
                c.merge(&add, true);
            } else {
                c.merge(&add, true);
                c.merge(&remove, true);
            }
            for (name, r) in [("a", &a), ("b", &b), ("c", &c)] {
                assert!(r.set.contains("e"), "{name}: the add wins");
                assert_eq!(
                    r.races, 1,
                    "{name} (remove first on c: {remove_first_on_c})"
                );
            }
            // Seen again (rumors repeat, anti-entropy sends whole states): not counted twice.
            for r in [&mut a, &mut b, &mut c] {
                r.merge(&add, true);
                r.merge(&remove, true);
            }
            let (sa, sb) = (a.set.clone(), b.set.clone());
            c.merge(&sa, false);
            c.merge(&sb, false);
            a.merge(&sb, false);
            b.merge(&sa, false);
            assert_eq!([a.races, b.races, c.races], [1, 1, 1]);
        }
    }

    #[test]
    fn an_add_after_seeing_the_remove_or_a_remove_after_seeing_the_add_is_no_race() {
        // The adder saw the remove.
        let [mut a, mut b, mut c] = three();
        let remove = a.local(|s| s.remove("e"));
        b.merge(&remove, true);
        c.merge(&remove, true);
        let add = b.local(|s| s.add(&replica("b"), "e"));
        a.merge(&add, true);
        // c learns of the add from b's whole state only: its context covers the removed dot
        // (b saw it) though the add did not replace it.
        let (sa, sb) = (a.set.clone(), b.set.clone());
        c.merge(&sb, false);
        a.merge(&sb, false);
        b.merge(&sa, false);
        assert_eq!([a.races, b.races, c.races], [0, 0, 0]);
        assert!(a.set.contains("e") && c.set.contains("e"));

        // The remover saw the add.
        let [mut a, mut b, mut c] = three();
        let add = b.local(|s| s.add(&replica("b"), "e"));
        a.merge(&add, true);
        let remove = a.local(|s| s.remove("e"));
        b.merge(&remove, true);
        c.merge(&add, true);
        c.merge(&remove, true);
        assert_eq!([a.races, b.races, c.races], [0, 0, 0]);
        assert!(!b.set.contains("e") && !c.set.contains("e"));
    }

    #[test]
    fn a_clear_that_missed_a_concurrent_add_races_and_one_that_saw_it_does_not() {
        let [mut a, mut b, _] = three();
        let add = b.local(|s| s.add(&replica("b"), "f"));
        let clear = a.local(|s| OrSet::from_parts(s.context().clone(), BTreeMap::new()));
        b.merge(&clear, true);
        assert_eq!(
            b.races, 0,
            "f was never in a's view, and e had no concurrent add"
        );
        assert!(b.set.contains("f") && !b.set.contains("e"));
        a.merge(&add, true);
        assert_eq!(a.races, 0);
        // A second adder re-adds e without having seen the clear.
        let [mut a, mut b, _] = three();
        let readd = b.local(|s| s.add(&replica("b"), "e"));
        let clear = a.local(|s| OrSet::from_parts(s.context().clone(), BTreeMap::new()));
        b.merge(&clear, true);
        a.merge(&readd, true);
        assert_eq!([a.races, b.races], [1, 1]);
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut lost = LostDots::new(3);
        let mut set = OrSet::new();
        for i in 0..10 {
            let element = format!("e{i}");
            let _ = set.add(&replica("a"), &element);
            let before = set.clone();
            let delta = set.remove(&element);
            let Ok(planned) = set_merge::plan(&before, &delta);
            lost.record(
                &"s",
                &planned.expect("a remove of a live element changes the set"),
            );
        }
        assert_eq!(lost.len(), 3);
        assert!(lost.order.len() <= 6);
    }
}
