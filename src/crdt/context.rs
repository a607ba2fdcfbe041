//! Causal context: the set of dots a replica has observed, kept as a version vector plus a "cloud"
//! of dots that are not yet contiguous (Almeida et al., "Delta State Replicated Data Types", 2018).
//! Deltas carry arbitrary dot sets, so a context must hold gaps; it compacts them away as they fill.
//!
//! Costs, for a context whose cloud holds c dots: `contains`, `next_dot` and `insert` take
//! O(log c); `merge` takes O(size of the other context · log c), whatever the size of this one.

use crate::clock::{Dot, ReplicaId, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::ops::RangeInclusive;

/// Whoever mints dots: one entry of a version vector.
pub(super) type Actor = ReplicaId;

// The only places that look inside a `Dot` or build one.

pub(super) fn actor(dot: &Dot) -> &Actor {
    &dot.replica
}

pub(super) fn counter(dot: &Dot) -> u64 {
    dot.counter
}

pub(super) fn dot(actor: &Actor, counter: u64) -> Dot {
    Dot::new(actor.clone(), counter)
}

/// Counters start at 1; a dot with counter 0 is never minted, yet every context covers it (as a
/// version vector covers every counter up to its entry, 0 for an absent actor).
pub(super) fn never_minted(dot: &Dot) -> bool {
    counter(dot) == 0
}

/// Every possible dot of `actor` with a counter up to `last`, in `Dot` order.
fn dots_up_to(actor: &Actor, last: u64) -> RangeInclusive<Dot> {
    dot(actor, 0)..=dot(actor, last)
}

/// Invariant (kept by every method, and restored on decode): no cloud dot is covered by the
/// vector, and no cloud dot directly extends it. Equal dot sets therefore have equal
/// representations, which the Merkle hashes rely on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredContext")]
pub struct CausalContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

/// The encoded form, identical to the context's own; decoding compacts it.
#[derive(Deserialize)]
#[serde(rename = "CausalContext")]
struct StoredContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

impl From<StoredContext> for CausalContext {
    fn from(stored: StoredContext) -> Self {
        let mut ctx = CausalContext {
            vv: stored.vv,
            cloud: stored.cloud,
        };
        ctx.compact();
        ctx
    }
}

impl CausalContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// A context holding exactly `dots`.
    pub fn from_dots(dots: impl IntoIterator<Item = Dot>) -> Self {
        let mut ctx = CausalContext {
            vv: VersionVector::new(),
            cloud: dots.into_iter().collect(),
        };
        ctx.compact();
        ctx
    }

    pub fn contains(&self, dot: &Dot) -> bool {
        self.vv.contains(dot) || self.cloud.contains(dot)
    }

    /// The next dot for `node`. Only a replica mints its own dots, and it mints them in order, so
    /// its own entry is always contiguous.
    pub fn next_dot(&self, node: &ReplicaId) -> Dot {
        let in_cloud = self
            .cloud
            .range(dots_up_to(node, u64::MAX))
            .next_back()
            .map_or(0, counter);
        dot(node, self.vv.get(node).max(in_cloud) + 1)
    }

    pub fn insert(&mut self, dot: Dot) {
        if !self.contains(&dot) {
            let actor = actor(&dot).clone();
            self.cloud.insert(dot);
            self.compact_actor(&actor);
        }
    }

    /// Joins `other` into `self`; returns whether `self` gained a dot. Only the actors `other`
    /// brings new dots of are compacted, so the cost follows `other`, not `self`.
    pub fn merge(&mut self, other: &CausalContext) -> bool {
        let mut touched: BTreeSet<&Actor> = BTreeSet::new();
        for (actor, last) in other.vv.iter() {
            // `self` never holds the dot right after its vector entry in its cloud, so a greater
            // entry always brings at least that dot.
            if last > self.vv.get(actor) {
                self.vv.advance(actor, last);
                touched.insert(actor);
            }
        }
        for dot in &other.cloud {
            if !self.contains(dot) {
                self.cloud.insert(dot.clone());
                touched.insert(actor(dot));
            }
        }
        for actor in &touched {
            self.compact_actor(actor);
        }
        !touched.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// The dots of `self` as runs of counters of one actor, (actor, first, last): one per vector
    /// entry (from counter 0, which the vector covers too) and one per cloud dot. Together they
    /// cover the context's dots and nothing else, and there are as many runs as entries.
    pub(super) fn ranges(&self) -> impl Iterator<Item = (&Actor, u64, u64)> + '_ {
        let vector = self.vv.iter().map(|(actor, last)| (actor, 0, last));
        vector.chain(
            self.cloud
                .iter()
                .map(|d| (actor(d), counter(d), counter(d))),
        )
    }

    /// Folds cloud dots into the vector where they extend it and drops those it already covers.
    /// The cloud is sorted by (node, counter), so one pass suffices.
    fn compact(&mut self) {
        let cloud = std::mem::take(&mut self.cloud);
        for dot in cloud {
            let have = self.vv.get(actor(&dot));
            if counter(&dot) == have + 1 {
                self.vv.advance(actor(&dot), counter(&dot));
            } else if counter(&dot) > have {
                self.cloud.insert(dot);
            }
        }
    }

    /// [`CausalContext::compact`] for one actor's dots alone: its cloud dots are sorted by
    /// counter, so only the lowest ones can be covered by the vector or extend it.
    fn compact_actor(&mut self, actor: &Actor) {
        loop {
            let have = self.vv.get(actor);
            let lowest = match self.cloud.range(dots_up_to(actor, u64::MAX)).next() {
                Some(dot) if counter(dot) <= have + 1 => dot.clone(),
                _ => return,
            };
            self.cloud.remove(&lowest);
            self.vv.advance(actor, counter(&lowest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(node: &str) -> ReplicaId {
        ReplicaId::new(crate::clock::NodeId::new(node).unwrap(), 0)
    }

    fn dot(node: &str, counter: u64) -> Dot {
        Dot::new(replica(node), counter)
    }

    #[test]
    fn merge_compacts_what_fills_a_gap_and_reports_only_new_dots() {
        let mut a = CausalContext::from_dots([dot("a", 1), dot("a", 3), dot("b", 2)]);
        assert_eq!(a.next_dot(&replica("a")), dot("a", 4));
        assert!(!a.merge(&CausalContext::from_dots([dot("a", 3)])));
        assert!(a.merge(&CausalContext::from_dots([dot("a", 2), dot("b", 1)])));
        assert_eq!(
            a,
            CausalContext::from_dots(
                (1..=3)
                    .map(|c| dot("a", c))
                    .chain([dot("b", 1), dot("b", 2)])
            )
        );
        assert_eq!(a.cloud, BTreeSet::new());
        assert!(a.merge(&CausalContext::from_dots((1..=5).map(|c| dot("b", c)))));
        assert!(!a.merge(&a.clone()));
    }

    #[test]
    fn decoding_compacts_a_context() {
        // A cloud dot the vector covers and one that extends it, as no replica would encode them.
        let mut vv = VersionVector::new();
        vv.advance(&replica("a"), 2);
        let stored = StoredContext {
            vv,
            cloud: [dot("a", 1), dot("a", 3), dot("a", 5)].into(),
        };
        let decoded = CausalContext::from(stored);
        let expected = CausalContext::from_dots([1, 2, 3, 5].map(|c| dot("a", c)));
        assert_eq!(decoded, expected);
    }
}
