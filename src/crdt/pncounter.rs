//! PN-counter: increments and decrements from every replica add up. Each replica (node id and
//! storage epoch) keeps its own running totals of increments and of decrements, only ever growing;
//! a merge keeps the greater total of each, and the value is the sum of the increments minus the
//! sum of the decrements. A node back with its data lost counts under a new epoch, so what its
//! earlier lifetime counted is neither lost nor counted twice.
//!
//! Pure; the caller names the replica.

use super::Merged;
use crate::clock::ReplicaId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnCounter {
    /// Per replica, the total of its increments.
    increments: BTreeMap<ReplicaId, u64>,
    /// Per replica, the total of its decrements (as a positive number).
    decrements: BTreeMap<ReplicaId, u64>,
}

/// A replica's running total would pass `u64::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this node's running total for the counter would pass 2^64 - 1")]
pub struct CounterOverflow;

impl PnCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter's value: every increment minus every decrement (exact: it may pass 64 bits).
    pub fn value(&self) -> i128 {
        let sum = |totals: &BTreeMap<ReplicaId, u64>| -> i128 {
            totals.values().map(|&t| t as i128).sum()
        };
        sum(&self.increments) - sum(&self.decrements)
    }

    /// Adds `amount` (negative: subtracts) as `replica`, applies it to `self` and returns the
    /// delta: that replica's new total alone.
    pub fn add(&mut self, replica: &ReplicaId, amount: i64) -> Result<PnCounter, CounterOverflow> {
        let (totals, magnitude) = match amount {
            0.. => (&mut self.increments, amount.unsigned_abs()),
            _ => (&mut self.decrements, amount.unsigned_abs()),
        };
        let total = totals.get(replica).copied().unwrap_or(0);
        let total = total.checked_add(magnitude).ok_or(CounterOverflow)?;
        totals.insert(replica.clone(), total);
        let mut delta = PnCounter::new();
        match amount {
            0.. => delta.increments.insert(replica.clone(), total),
            _ => delta.decrements.insert(replica.clone(), total),
        };
        Ok(delta)
    }

    /// Keeps the greater total of each replica.
    pub fn merge(&mut self, other: &PnCounter) -> Merged {
        let mut changed = false;
        for (mine, theirs) in [
            (&mut self.increments, &other.increments),
            (&mut self.decrements, &other.decrements),
        ] {
            for (replica, &total) in theirs {
                let entry = mine.entry(replica.clone()).or_insert(0);
                if total > *entry {
                    *entry = total;
                    changed = true;
                }
            }
        }
        match changed {
            true => Merged::Changed,
            false => Merged::Unchanged,
        }
    }

    /// True when merging `self` into anything changes nothing.
    pub fn is_noop_delta(&self) -> bool {
        self.increments
            .values()
            .chain(self.decrements.values())
            .all(|&t| t == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::NodeId;

    fn replica(s: &str, epoch: u64) -> ReplicaId {
        ReplicaId::new(NodeId::new(s).unwrap(), epoch)
    }

    #[test]
    fn adds_from_every_replica_sum_and_merges_are_idempotent() {
        let (a, b) = (replica("a", 1), replica("b", 1));
        let mut x = PnCounter::new();
        let mut y = PnCounter::new();
        let d1 = x.add(&a, 5).unwrap();
        let d2 = x.add(&a, -2).unwrap();
        let d3 = y.add(&b, i64::MIN).unwrap();
        for d in [&d3, &d1, &d2, &d1] {
            let _ = x.merge(d);
        }
        for d in [&d2, &d1] {
            let _ = y.merge(d);
        }
        assert_eq!(x.value(), 3 + i64::MIN as i128);
        assert_eq!(x, y);
        assert_eq!(y.merge(&x), Merged::Unchanged);
    }

    #[test]
    fn a_new_epoch_counts_beside_the_old_one() {
        let mut c = PnCounter::new();
        c.add(&replica("a", 1), 10).unwrap();
        let mut fresh = PnCounter::new();
        let delta = fresh.add(&replica("a", 2), 1).unwrap();
        let _ = c.merge(&delta);
        assert_eq!(c.value(), 11);
    }

    #[test]
    fn a_running_total_never_wraps() {
        let a = replica("a", 1);
        let mut c = PnCounter::new();
        c.add(&a, i64::MAX).unwrap();
        c.add(&a, i64::MAX).unwrap();
        c.add(&a, 1).unwrap();
        assert_eq!(c.add(&a, 1), Err(CounterOverflow));
        assert_eq!(c.value(), u64::MAX as i128);
        assert!(PnCounter::new().add(&a, 0).unwrap().is_noop_delta());
    }
}
