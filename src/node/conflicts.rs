//! Conflicts: a last-writer-wins write that replaced, or lost to, a write of the same key its
//! writer had not seen (see [`LwwRegister::concurrent_with`]). Each one this node merges is
//! counted by keyspace, and the last few writes discarded so are kept per key, in memory, for
//! `GET /v1/kv/{key}?explain=true`. In sets, a remove that a concurrent add outlived (see
//! `crdt/set_races.rs`) is counted too.
//!
//! Pure bookkeeping: bounded maps, no store, no clock.

use super::Node;
use crate::clock::{NodeId, Timestamp};
use crate::crdt::{LostDots, LwwRegister};
use crate::store::{Store, StoreKey};
use std::collections::{BTreeMap, VecDeque};

/// Discarded writes kept per key.
const PER_KEY: usize = 4;
/// Keys with discarded writes kept; the key whose last conflict is oldest goes first.
const KEYS: usize = 10_000;
/// Dots that set elements lost, remembered to recognize add/remove races (a few MB at most): a
/// race whose remove and add arrive further apart than this many removes goes uncounted.
const LOST_DOTS: usize = 50_000;

/// A write last-writer-wins discarded though its writer had not seen the winner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overwritten {
    pub timestamp: Timestamp,
    pub node: NodeId,
    /// Bytes of its value (`None`: it was a delete).
    pub size: Option<usize>,
    /// The write that won over it.
    pub by: (Timestamp, NodeId),
}

pub(super) struct ConflictLog {
    by_key: BTreeMap<StoreKey, VecDeque<Overwritten>>,
    /// Keys by the order of their last conflict (a sequence number), to drop the stalest.
    order: BTreeMap<u64, StoreKey>,
    last_of: BTreeMap<StoreKey, u64>,
    next: u64,
    /// Conflicts counted, kv keyspace (the only one with last-writer-wins registers).
    pub(super) counted: u64,
    /// Set elements whose remove a concurrent add outlived, counted (see `crdt/set_races.rs`).
    pub(super) set_races: u64,
    /// The dots set elements lost here, to recognize those races.
    pub(super) lost_dots: LostDots<StoreKey>,
}

impl Default for ConflictLog {
    fn default() -> Self {
        ConflictLog {
            by_key: BTreeMap::new(),
            order: BTreeMap::new(),
            last_of: BTreeMap::new(),
            next: 0,
            counted: 0,
            set_races: 0,
            lost_dots: LostDots::new(LOST_DOTS),
        }
    }
}

impl ConflictLog {
    /// Records that `loser` was discarded for `winner` if the two were concurrent; returns
    /// whether it counted (a write already recorded as discarded, seen again, does not).
    pub(super) fn merged(
        &mut self,
        key: &StoreKey,
        winner: &LwwRegister,
        loser: &LwwRegister,
    ) -> bool {
        if !winner.concurrent_with(loser) {
            return false;
        }
        let entry = Overwritten {
            timestamp: loser.timestamp,
            node: loser.node.clone(),
            size: loser.value.as_ref().map(|v| v.data.len()),
            by: (winner.timestamp, winner.node.clone()),
        };
        let kept = self.by_key.entry(key.clone()).or_default();
        if kept
            .iter()
            .any(|o| (o.timestamp, &o.node) == (entry.timestamp, &entry.node))
        {
            return false;
        }
        if kept.len() == PER_KEY {
            kept.pop_front();
        }
        kept.push_back(entry);
        if let Some(seq) = self.last_of.insert(key.clone(), self.next) {
            self.order.remove(&seq);
        }
        self.order.insert(self.next, key.clone());
        self.next += 1;
        while self.by_key.len() > KEYS {
            let Some((_, stalest)) = self.order.pop_first() else {
                break;
            };
            self.by_key.remove(&stalest);
            self.last_of.remove(&stalest);
        }
        self.counted += 1;
        true
    }

    /// The discarded writes kept for `key`, oldest first.
    pub(super) fn of(&self, key: &StoreKey) -> Vec<Overwritten> {
        self.by_key
            .get(key)
            .map(|kept| kept.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl<S: Store> Node<S> {
    /// The concurrent writes of `key` that last-writer-wins discarded on this node since it
    /// started (the last few), oldest first.
    pub fn overwritten(&self, key: &StoreKey) -> Vec<Overwritten> {
        self.conflicts.of(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::Value;

    fn write(ms: u64, node: &str, observed: Option<u64>) -> LwwRegister {
        LwwRegister::write(
            Timestamp::new(ms, 0),
            NodeId::new(node).unwrap(),
            Some(Value {
                content_type: "text/plain".into(),
                data: b"v".to_vec(),
            }),
        )
        .observing(observed.map(|ms| Timestamp::new(ms, 0)))
    }

    #[test]
    fn only_writes_made_unseen_count_and_each_once() {
        let key = StoreKey::kv("k");
        let mut log = ConflictLog::default();
        let first = write(10, "n1", None);
        // A write made after seeing the first replaces it: no conflict.
        assert!(!log.merged(&key, &write(20, "n2", Some(10)), &first));
        // One made without seeing it (from the other side of a partition) is a conflict, once.
        let blind = write(15, "n3", Some(5));
        assert!(log.merged(&key, &blind, &first));
        assert!(!log.merged(&key, &blind, &first));
        // Losing counts too: the later write had not seen the earlier concurrent one.
        assert!(log.merged(&key, &write(30, "n1", Some(10)), &write(25, "n2", Some(10))));
        let kept = log.of(&key);
        assert_eq!(kept.len(), 2);
        assert_eq!(
            (kept[0].timestamp, kept[0].size),
            (Timestamp::new(10, 0), Some(1))
        );
        assert_eq!(kept[1].by.0, Timestamp::new(30, 0));
        assert_eq!(log.counted, 2);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut log = ConflictLog::default();
        for i in 0..(KEYS as u64 + 10) {
            let key = StoreKey::kv(format!("k{i}"));
            for j in 0..(PER_KEY as u64 + 2) {
                log.merged(&key, &write(100 + j, "n2", None), &write(1 + j, "n1", None));
            }
        }
        assert_eq!(log.by_key.len(), KEYS);
        assert!(log.by_key.values().all(|kept| kept.len() == PER_KEY));
        assert!(
            log.of(&StoreKey::kv("k0")).is_empty(),
            "the stalest key went first"
        );
        assert_eq!(log.order.len(), KEYS);
    }
}
