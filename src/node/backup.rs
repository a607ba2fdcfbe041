//! Reading the whole state out for a backup, a few Merkle leaves at a time: each call runs
//! between other events of the core, so every key is read whole (a set's header and rows
//! together) and writes go on between calls. The file format is `store::backup_file`; the
//! streaming is the API's.

use super::Node;
use crate::crdt::KeyState;
use crate::store::merkle::LEAVES;
use crate::store::{Store, StoreError, StoreKey};
use std::ops::Range;

/// Leaves read per call: 64 calls cover the index, each a short pause for the core.
pub const BACKUP_LEAVES_PER_CHUNK: u32 = 1_024;

impl<S: Store> Node<S> {
    /// Every key of Merkle leaves `leaves` (clamped to the index) with its state, tombstones
    /// included, in leaf order.
    pub fn backup_chunk(
        &self,
        leaves: Range<u32>,
    ) -> Result<Vec<(StoreKey, KeyState)>, StoreError> {
        let end = leaves.end.min(LEAVES as u32);
        let mut records = Vec::new();
        for leaf in leaves.start..end {
            // Leaves are numbered below 65,536: the clamp above keeps `leaf` a u16.
            for (key, _) in self.store.leaf_keys(leaf as u16)? {
                if let Some(state) = self.store.get(&key)? {
                    records.push((key, state));
                }
            }
        }
        Ok(records)
    }
}
