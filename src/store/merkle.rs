//! The Merkle index over all replicated state (tombstones included). Pure: the store persists its
//! leaves, anti-entropy reads its nodes.
//!
//! Shape: a fixed tree of fanout 16 and depth 4 (65,536 leaves). A key goes to the leaf named by
//! the first 16 bits of the BLAKE3 hash of its encoded name. Every node holds the XOR of the item
//! hashes below it and their count, where an item hash is BLAKE3(encoded key, encoded state) for
//! a register and BLAKE3(encoded key, context, element count, XOR of the element entries' hashes)
//! for a set ([`set_item_hash`]). XOR makes an update O(depth) without reading the leaf's other
//! keys: the old item hash is XORed out and the new one in, along the path to the root. The root
//! is therefore an O(1) digest, and two replicas descend only into children whose hashes differ.

use super::{record, SetHeader, StoreKey};
use crate::crdt::KeyState;
use serde::{Deserialize, Serialize};

pub const FANOUT: usize = 16;
pub const DEPTH: usize = 4;
pub const LEAVES: usize = 1 << 16;

/// A tree node: XOR of the item hashes below it and how many keys that covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    pub hash: [u8; 32],
    pub count: u64,
}

impl Leaf {
    fn xor(&mut self, item: &[u8; 32]) {
        for (a, b) in self.hash.iter_mut().zip(item) {
            *a ^= b;
        }
    }

    /// Adds one key's item hash to this node.
    pub fn add_item(&mut self, item: &[u8; 32]) {
        self.xor(item);
        self.count += 1;
    }

    /// Takes one key's item hash out of this node.
    pub fn remove_item(&mut self, item: &[u8; 32]) {
        self.xor(item);
        self.count = self.count.saturating_sub(1);
    }

    /// The hash as lowercase hex.
    pub fn hex(&self) -> String {
        self.hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[derive(Clone, Debug)]
pub struct MerkleIndex {
    /// `levels[0]` is the root alone; `levels[DEPTH]` holds the leaves.
    levels: Vec<Vec<Leaf>>,
}

impl Default for MerkleIndex {
    fn default() -> Self {
        Self::from_leaves(vec![Leaf::default(); LEAVES])
    }
}

/// The first 8 bytes of an item hash: what the per-leaf key index and anti-entropy compare.
pub fn prefix8(hash: &[u8; 32]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&hash[..8]);
    out
}

/// The leaf a key belongs to.
pub fn bucket_of(key: &StoreKey) -> u16 {
    let h = blake3::hash(&key.encode());
    u16::from_be_bytes([h.as_bytes()[0], h.as_bytes()[1]])
}

/// The hash of one key's state: equal exactly when key and state are equal.
pub fn item_hash(key: &StoreKey, state: &KeyState) -> [u8; 32] {
    match state {
        KeyState::Set(set) => set_item_hash(key, &SetHeader::of(set)),
        KeyState::Register(_) | KeyState::Counter(_) => {
            item_hash_of(key, &record::encode_state(state))
        }
    }
}

fn key_hasher(key: &StoreKey) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    let name = key.encode();
    hasher.update(&(name.len() as u64).to_le_bytes());
    hasher.update(&name);
    hasher
}

/// [`item_hash`] of a register or counter already encoded ([`record::encode_state`]).
pub fn item_hash_of(key: &StoreKey, encoded_state: &[u8]) -> [u8; 32] {
    let mut hasher = key_hasher(key);
    hasher.update(encoded_state);
    *hasher.finalize().as_bytes()
}

/// [`item_hash`] of a set, from its header: the context, the element count and the XOR of the
/// elements' entry hashes, so that a change to a few elements re-hashes only them.
pub fn set_item_hash(key: &StoreKey, header: &SetHeader) -> [u8; 32] {
    let mut hasher = key_hasher(key);
    hasher.update(&record::to_bytes(&header.context));
    hasher.update(&header.count.to_le_bytes());
    hasher.update(&header.entries_xor);
    *hasher.finalize().as_bytes()
}

impl MerkleIndex {
    /// Builds the inner levels from a full set of leaves (`LEAVES` of them).
    pub fn from_leaves(leaves: Vec<Leaf>) -> Self {
        assert_eq!(
            leaves.len(),
            LEAVES,
            "a Merkle index has exactly {LEAVES} leaves"
        );
        let mut levels = vec![leaves];
        while levels[0].len() > 1 {
            let parent = levels[0]
                .chunks(FANOUT)
                .map(|children| {
                    let mut node = Leaf::default();
                    for c in children {
                        node.xor(&c.hash);
                        node.count += c.count;
                    }
                    node
                })
                .collect();
            levels.insert(0, parent);
        }
        MerkleIndex { levels }
    }

    pub fn root(&self) -> Leaf {
        self.levels[0][0]
    }

    pub fn leaves(&self) -> &[Leaf] {
        &self.levels[DEPTH]
    }

    /// The children of node `index` at `level` (`level < DEPTH`).
    pub fn children(&self, level: usize, index: usize) -> &[Leaf] {
        let start = index * FANOUT;
        &self.levels[level + 1][start..start + FANOUT]
    }

    /// Records that `key` changed from the state whose [`item_hash`] is `old` (`None` for a new
    /// key) to `new`; returns the changed leaf.
    pub fn update(&mut self, key: &StoreKey, old: Option<[u8; 32]>, new: &KeyState) -> (u16, Leaf) {
        self.update_hashed(key, old, item_hash(key, new))
    }

    /// [`MerkleIndex::update`] for a caller that already has the new state's item hash.
    pub fn update_hashed(
        &mut self,
        key: &StoreKey,
        old: Option<[u8; 32]>,
        new: [u8; 32],
    ) -> (u16, Leaf) {
        let bucket = bucket_of(key);
        let mut diff = new;
        if let Some(old) = old {
            for (d, o) in diff.iter_mut().zip(old) {
                *d ^= o;
            }
        }
        let added = u64::from(old.is_none());
        for level in 0..=DEPTH {
            let index = bucket as usize >> (4 * (DEPTH - level));
            let node = &mut self.levels[level][index];
            node.xor(&diff);
            node.count += added;
        }
        (bucket, self.levels[DEPTH][bucket as usize])
    }

    /// Replaces leaf `bucket` with `leaf` (recomputed from the records), adjusting every node
    /// above it.
    pub fn replace_leaf(&mut self, bucket: u16, leaf: Leaf) {
        let old = self.levels[DEPTH][bucket as usize];
        let mut diff = leaf;
        diff.xor(&old.hash);
        for level in 0..=DEPTH {
            let index = bucket as usize >> (4 * (DEPTH - level));
            let node = &mut self.levels[level][index];
            node.xor(&diff.hash);
            node.count = (node.count + leaf.count).saturating_sub(old.count);
        }
    }

    /// Records that `key`, whose state had item hash `old`, is gone; returns the changed leaf.
    pub fn remove(&mut self, key: &StoreKey, old: [u8; 32]) -> (u16, Leaf) {
        let bucket = bucket_of(key);
        for level in 0..=DEPTH {
            let index = bucket as usize >> (4 * (DEPTH - level));
            let node = &mut self.levels[level][index];
            node.xor(&old);
            node.count = node.count.saturating_sub(1);
        }
        (bucket, self.levels[DEPTH][bucket as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{NodeId, Timestamp};
    use crate::crdt::LwwRegister;

    fn state(ts: u64) -> KeyState {
        KeyState::Register(LwwRegister::write(
            Timestamp::from_raw(ts),
            NodeId::new("n1").unwrap(),
            None,
        ))
    }

    #[test]
    fn incremental_updates_match_a_rebuild_and_do_not_depend_on_order() {
        let mut a = MerkleIndex::default();
        let mut b = MerkleIndex::default();
        let keys: Vec<StoreKey> = (0..50).map(|i| StoreKey::kv(format!("k{i}"))).collect();
        for k in &keys {
            a.update(k, None, &state(1));
        }
        for k in keys.iter().rev() {
            b.update(k, None, &state(1));
        }
        assert_eq!(a.root(), b.root());
        // Changing one key and changing it back restores the root.
        let before = a.root();
        let hash = |ts| Some(item_hash(&keys[3], &state(ts)));
        a.update(&keys[3], hash(1), &state(2));
        assert_ne!(a.root(), before);
        assert_eq!(a.root().count, 50);
        a.update(&keys[3], hash(2), &state(1));
        assert_eq!(a.root(), before);
        let rebuilt = MerkleIndex::from_leaves(a.leaves().to_vec());
        assert_eq!(rebuilt.root(), a.root());
    }

    #[test]
    fn a_replaced_leaf_updates_every_node_above_it() {
        let keys: Vec<StoreKey> = (0..40).map(|i| StoreKey::kv(format!("k{i}"))).collect();
        let mut index = MerkleIndex::default();
        let mut stale = MerkleIndex::default();
        for k in &keys {
            index.update(k, None, &state(1));
            stale.update(k, None, &state(1));
        }
        // `stale` misses one change; replacing that key's leaf with the right one repairs it.
        let (bucket, right) =
            index.update(&keys[7], Some(item_hash(&keys[7], &state(1))), &state(2));
        stale.replace_leaf(bucket, right);
        assert_eq!(stale.root(), index.root());
        assert_eq!(
            MerkleIndex::from_leaves(stale.leaves().to_vec()).root(),
            stale.root()
        );
    }

    #[test]
    fn removing_a_key_equals_never_having_added_it() {
        let mut with = MerkleIndex::default();
        let mut without = MerkleIndex::default();
        let keys: Vec<StoreKey> = (0..20).map(|i| StoreKey::kv(format!("k{i}"))).collect();
        for (i, k) in keys.iter().enumerate() {
            with.update(k, None, &state(i as u64));
            if i != 7 {
                without.update(k, None, &state(i as u64));
            }
        }
        assert_ne!(with.root(), without.root());
        with.remove(&keys[7], item_hash(&keys[7], &state(7)));
        assert_eq!(with.root(), without.root());
        assert_eq!(with.root().count, 19);
    }
}
