//! An in-memory replica with its Merkle index, for tests, benchmarks and simulations.

use super::*;

/// A replica held in memory, with its Merkle index: the [`SyncSource`] of tests, benchmarks and
/// simulations.
#[derive(Clone, Debug)]
pub struct MemoryReplica {
    merkle: MerkleIndex,
    /// Per leaf, each key's state and item hash.
    leaves: Vec<BTreeMap<StoreKey, (KeyState, [u8; 32])>>,
    len: usize,
}

impl Default for MemoryReplica {
    fn default() -> Self {
        MemoryReplica {
            merkle: MerkleIndex::default(),
            leaves: vec![BTreeMap::new(); LEAVES],
            len: 0,
        }
    }
}

impl MemoryReplica {
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges `state` into `key`'s state (or stores it, for a new key) and updates the index;
    /// returns whether anything changed.
    pub fn merge(&mut self, key: StoreKey, state: KeyState) -> bool {
        let leaf = &mut self.leaves[usize::from(merkle::bucket_of(&key))];
        match leaf.get_mut(&key) {
            Some((current, hash)) => {
                // The exchange only hands over states of the right kind for their key.
                if current.merge(&state) != Ok(crate::crdt::Merged::Changed) {
                    return false;
                }
                self.merkle.update(&key, Some(*hash), current);
                *hash = merkle::item_hash(&key, current);
            }
            None => {
                self.merkle.update(&key, None, &state);
                let hash = merkle::item_hash(&key, &state);
                leaf.insert(key, (state, hash));
                self.len += 1;
            }
        }
        true
    }

    pub fn get(&self, key: &StoreKey) -> Option<&KeyState> {
        self.leaves[usize::from(merkle::bucket_of(key))]
            .get(key)
            .map(|(state, _)| state)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl SyncSource for MemoryReplica {
    fn merkle(&self) -> &MerkleIndex {
        &self.merkle
    }

    fn leaf_keys(&self, leaf: u16) -> Vec<(StoreKey, HashPrefix)> {
        self.leaves[usize::from(leaf)]
            .iter()
            .map(|(key, (_, hash))| (key.clone(), prefix(hash)))
            .collect()
    }

    fn state(&self, key: &StoreKey) -> Option<KeyState> {
        self.get(key).cloned()
    }
}
