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
    /// Recomputes the leaves holding `named` (the keys the log named) from the records, with
    /// their key lists; returns how many leaves it recomputed.
    pub(super) fn repair_leaves(&mut self, named: Vec<StoreKey>) -> Result<usize, StoreError> {
        let mut by_leaf: BTreeMap<u16, BTreeSet<StoreKey>> = BTreeMap::new();
        for key in named {
            by_leaf
                .entry(merkle::bucket_of(&key))
                .or_default()
                .insert(key);
        }
        let repaired = by_leaf.len();
        let mut batch = WriteBatch::default();
        for (bucket, named) in by_leaf {
            // The keys the log does not name are as the list holds them; the others are read.
            let mut leaf = Leaf::default();
            for (key, listed) in self.store.leaf_item_hashes(bucket)? {
                if !named.contains(&key) {
                    leaf.add_item(&listed);
                }
            }
            for key in named {
                match self.store.item_hash(&key)? {
                    Some(hash) => {
                        leaf.add_item(&hash);
                        batch.key_hashes.push((key, hash));
                    }
                    None => batch.removals.push(key),
                }
            }
            self.merkle.replace_leaf(bucket, leaf);
            self.dirty_leaves.insert(bucket);
        }
        self.store.apply(batch)?;
        Ok(repaired)
    }
}
