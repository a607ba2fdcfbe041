//! Repair of the persisted Merkle index after a crash, where the write-ahead log names keys.
//!
//! The store persists the Merkle leaves and its per-leaf key lists together at each checkpoint;
//! every later change to a record is logged before the database takes it, with the key's item
//! hash just before the change. After a crash the database may hold some of those changes and
//! not others, so the leaves of the keys the log names are corrected: a leaf's persisted value
//! with, for each key logged after it was written, the hash the leaf held for the key (its first
//! such entry's prior hash) taken out and the hash of what the database holds now put in. That
//! reads only the named keys' records. A leaf with a key whose prior is unknown (entries of an
//! older layout, or no recorded position for the leaves) is recomputed from the records of all
//! its keys instead. Reads the store; never touches a clock.

use super::Node;
use crate::store::merkle;
use crate::store::{Leaf, Prior, Store, StoreError, StoreKey, WriteBatch};
use std::collections::{BTreeMap, BTreeSet};

/// How a start-up repaired the persisted Merkle leaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafRepair {
    /// Leaves corrected from the log's prior hashes and the named keys' records alone.
    pub from_log: usize,
    /// Leaves recomputed from the records of all their keys.
    pub recomputed: usize,
}

impl<S: Store> Node<S> {
    /// Repairs the leaves holding `named` (the keys the log named), given their values as
    /// persisted (`persisted`, read before the replay changed them) and the store's prior hashes.
    pub(super) fn repair_leaves(
        &mut self,
        named: Vec<StoreKey>,
        persisted: &BTreeMap<u16, Leaf>,
        priors: BTreeMap<StoreKey, Prior>,
    ) -> Result<LeafRepair, StoreError> {
        let named: BTreeSet<StoreKey> = named.into_iter().collect();
        let unknown: BTreeSet<u16> = priors
            .iter()
            .filter(|(_, prior)| **prior == Prior::Unknown)
            .map(|(key, _)| merkle::bucket_of(key))
            .collect();
        let mut corrected: BTreeMap<u16, Leaf> = BTreeMap::new();
        let mut recomputed: BTreeMap<u16, Leaf> = BTreeMap::new();
        for key in &named {
            let bucket = merkle::bucket_of(key);
            if unknown.contains(&bucket) {
                recomputed.insert(bucket, Leaf::default());
            } else {
                let leaf = persisted.get(&bucket).copied().unwrap_or_default();
                corrected.insert(bucket, leaf);
            }
        }
        // Every key of the leaves to recompute: the ones their lists hold and the ones named.
        let mut keys = named.clone();
        for &bucket in recomputed.keys() {
            keys.extend(
                self.store
                    .leaf_keys(bucket)?
                    .into_iter()
                    .map(|(key, _)| key),
            );
        }
        // Read in key order, so that neighbouring records share the database's pages.
        let mut batch = WriteBatch::default();
        for key in keys {
            let bucket = merkle::bucket_of(&key);
            let now = self.store.item_hash(&key)?;
            if let Some(leaf) = recomputed.get_mut(&bucket) {
                if let Some(hash) = &now {
                    leaf.add_item(hash);
                }
            } else if let (Some(leaf), Some(Prior::Known(prior))) =
                (corrected.get_mut(&bucket), priors.get(&key))
            {
                if let Some(prior) = prior {
                    leaf.remove_item(prior);
                }
                if let Some(hash) = &now {
                    leaf.add_item(hash);
                }
            }
            if named.contains(&key) {
                match now {
                    Some(hash) => batch.key_hashes.push((key, hash)),
                    None => batch.removals.push((key, None)),
                }
            }
        }
        let repair = LeafRepair {
            from_log: corrected.len(),
            recomputed: recomputed.len(),
        };
        for (bucket, leaf) in corrected.into_iter().chain(recomputed) {
            self.merkle.replace_leaf(bucket, leaf);
            self.dirty_leaves.insert(bucket);
        }
        self.store.apply(batch)?;
        Ok(repair)
    }
}
