//! Repair of the persisted Merkle index after a crash, where the write-ahead log names keys.
//!
//! The store persists the Merkle leaves and its per-leaf key lists together at each checkpoint;
//! every later change to a record is logged before the database takes it. After a crash the
//! database may hold some of those changes and not others, so the leaves of the keys the log
//! names are recomputed from the records (the keys of such a leaf: its list and the logged keys),
//! instead of the whole index from every record. Reads the store; never touches a clock.

use super::Node;
use crate::store::merkle::{self, prefix8};
use crate::store::{Keyspace, Leaf, Store, StoreError, StoreKey, WriteBatch};
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
        for (bucket, mut keys) in by_leaf {
            keys.extend(self.store.leaf_keys(bucket)?.into_iter().map(|(k, _)| k));
            let mut leaf = Leaf::default();
            for key in keys {
                match self.stored_item_hash(&key)? {
                    Some(hash) => {
                        leaf.add_item(&hash);
                        batch.key_hashes.push((key, prefix8(&hash)));
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

    /// The item hash of what the store holds for `key` (a set's, from its header alone).
    fn stored_item_hash(&self, key: &StoreKey) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(match key.space {
            Keyspace::Sets => self
                .store
                .set_header(key)?
                .map(|header| merkle::set_item_hash(key, &header)),
            Keyspace::Kv | Keyspace::Counters => self
                .store
                .get(key)?
                .map(|state| merkle::item_hash(key, &state)),
        })
    }
}
