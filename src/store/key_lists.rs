//! The per-leaf key index of the sled store: for each Merkle leaf, the keys it holds with the
//! first 8 bytes of their item hashes (what anti-entropy compares, [`super::Store::leaf_keys`]).
//! Whole hashes would let a repair after a crash skip reading the records of a leaf's other keys
//! (1,000,000 keys, 10,000 logged writes: 0.19 s instead of 1.1 s), but rows four times as large,
//! rewritten at every checkpoint, cost 190 MB more on disk after 1,000,000 inserts and 500 MB more
//! after overwriting them.
//!
//! One row per leaf (`k` + leaf, u16 BE), written only when the Merkle leaves are persisted (a
//! checkpoint) or a batch removes keys; the changes in between wait in memory
//! ([`PendingKeys`]). A row per key, inserted in hash order with every write, cost more than the
//! records themselves on disk (sled rewrites the pages of randomly placed inserts): 1,000,000
//! keys took 450 MB of key index for 360 MB of records. After a crash, the core repairs the
//! leaves the write-ahead log names from the records (see `Node::open_in_cluster`); a leaf's row
//! and persisted Merkle leaf are always written together.
//!
//! Owns the row encoding and the merge of pending changes into rows; never decides what to write.

use super::{StoreError, StoreKey};
use std::collections::BTreeMap;

pub const KEY_LIST_PREFIX: u8 = b'k';
/// The format byte of a key list row.
const FORMAT: u8 = 1;

/// A leaf's keys: encoded key → item hash prefix.
pub type KeyList = BTreeMap<Vec<u8>, [u8; 8]>;

/// `k` + leaf: the row holding a leaf's key list.
pub fn row_key(leaf: u16) -> [u8; 3] {
    let [a, b] = leaf.to_be_bytes();
    [KEY_LIST_PREFIX, a, b]
}

pub fn encode(list: &KeyList) -> Vec<u8> {
    let entries: Vec<(&[u8], &[u8; 8])> = list.iter().map(|(k, h)| (k.as_slice(), h)).collect();
    let mut out = vec![FORMAT];
    out.extend(super::record::to_bytes(&entries));
    out
}

pub fn decode(row: &[u8]) -> Result<KeyList, StoreError> {
    match row.split_first() {
        Some((&FORMAT, rest)) => {
            let entries: Vec<(Vec<u8>, [u8; 8])> = super::record::from_bytes(rest)?;
            Ok(entries.into_iter().collect())
        }
        _ => Err(StoreError::Corrupt("bad key list row".into())),
    }
}

/// Changes to the key lists not yet written to their rows: per leaf, per encoded key, the new
/// item hash prefix or `None` for a key gone.
#[derive(Default)]
pub struct PendingKeys {
    by_leaf: BTreeMap<u16, BTreeMap<Vec<u8>, Option<[u8; 8]>>>,
}

impl PendingKeys {
    pub fn note(&mut self, key: &StoreKey, hash: Option<[u8; 8]>) {
        self.by_leaf
            .entry(super::merkle::bucket_of(key))
            .or_default()
            .insert(key.encode(), hash);
    }

    /// `list` (a leaf's row) with the pending changes of `leaf` applied.
    pub fn apply_to(&self, leaf: u16, mut list: KeyList) -> KeyList {
        for (key, hash) in self.by_leaf.get(&leaf).into_iter().flatten() {
            match hash {
                Some(hash) => list.insert(key.clone(), *hash),
                None => list.remove(key),
            };
        }
        list
    }

    /// The leaves with pending changes.
    pub fn leaves(&self) -> impl Iterator<Item = u16> + '_ {
        self.by_leaf.keys().copied()
    }

    /// Forgets the pending changes of `leaves` (written to their rows).
    pub fn written(&mut self, leaves: &[u16]) {
        for leaf in leaves {
            self.by_leaf.remove(leaf);
        }
    }

    pub fn clear(&mut self) {
        self.by_leaf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_pending_changes_override_them() {
        let (a, b) = (StoreKey::kv("a"), StoreKey::kv("b"));
        let mut list = KeyList::new();
        list.insert(a.encode(), [1; 8]);
        list.insert(b.encode(), [2; 8]);
        assert_eq!(decode(&encode(&list)).unwrap(), list);
        assert!(decode(b"\x09junk").is_err());
        let mut pending = PendingKeys::default();
        pending.note(&a, None);
        pending.note(&b, Some([3; 8]));
        let leaf_a = super::super::merkle::bucket_of(&a);
        let leaf_b = super::super::merkle::bucket_of(&b);
        let merged = pending.apply_to(leaf_b, pending.apply_to(leaf_a, list));
        assert_eq!(
            merged.into_iter().collect::<Vec<_>>(),
            [(b.encode(), [3; 8])]
        );
        pending.written(&[leaf_a, leaf_b]);
        assert_eq!(pending.leaves().count(), 0);
    }
}
