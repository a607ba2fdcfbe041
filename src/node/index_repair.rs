//! Repair of the persisted Merkle index after a crash, where the write-ahead log names keys.
//!
//! The store persists the Merkle leaves and its per-leaf key lists together at each checkpoint;
//! every later change to a record is logged before the database takes it. After a crash the
//! database may hold some of those changes and not others, so the leaves of the keys the log
//! names are recomputed from the records (the keys of such a leaf: its list and the logged keys),
//! instead of the whole index from every record. Reads the store; never touches a clock.

use super::Node;
use crate::store::merkle;
use crate::store::{Leaf, Store, StoreError, StoreKey, WriteBatch};
use std::collections::{BTreeMap, BTreeSet};

impl<S: Store> Node<S> {
    /// Recomputes the leaves holding `named` (the keys the log named) from the records of all
    /// their keys; returns how many leaves it recomputed.
    pub(super) fn repair_leaves(&mut self, named: Vec<StoreKey>) -> Result<usize, StoreError> {
        let named: BTreeSet<StoreKey> = named.into_iter().collect();
        let mut leaves: BTreeMap<u16, Leaf> = named
            .iter()
            .map(|key| (merkle::bucket_of(key), Leaf::default()))
            .collect();
        // Every key of those leaves: the ones their lists hold and the ones the log names.
        let mut keys = named.clone();
        for &bucket in leaves.keys() {
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
            match self.store.item_hash(&key)? {
                Some(hash) => {
                    if let Some(leaf) = leaves.get_mut(&bucket) {
                        leaf.add_item(&hash);
                    }
                    if named.contains(&key) {
                        batch.key_hashes.push((key, hash));
                    }
                }
                None => batch.removals.push(key),
            }
        }
        let repaired = leaves.len();
        for (bucket, leaf) in leaves {
            self.merkle.replace_leaf(bucket, leaf);
            self.dirty_leaves.insert(bucket);
        }
        self.store.apply(batch)?;
        Ok(repaired)
    }
}
