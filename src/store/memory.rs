//! An in-memory store for the simulator and unit tests. Cloning a `MemoryStore` shares its
//! contents, which is how the simulator "restarts" a node on the state it had persisted.

use super::{
    merkle, KeyPage, KeyState, Keyspace, Leaf, LoggedDelta, Meta, PendingSync, Store, StoreError,
    StoreKey, StoreRead, WriteBatch,
};
use crate::clock::Timestamp;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Default)]
struct Contents {
    records: BTreeMap<Vec<u8>, KeyState>,
    /// (leaf, encoded key) → item hash prefix.
    key_hashes: BTreeMap<(u16, Vec<u8>), [u8; 8]>,
    leaves: Option<Vec<Leaf>>,
    leaves_complete: bool,
    meta: Meta,
    collected_through: Timestamp,
    clustered: bool,
}

#[derive(Clone, Default)]
pub struct MemoryStore {
    contents: Arc<RwLock<Contents>>,
    meta: Meta,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle on the same persisted contents, as a restarted node would open them.
    pub fn reopen(&self) -> Self {
        let meta = read(&self.contents).meta.clone();
        MemoryStore {
            contents: self.contents.clone(),
            meta,
        }
    }
}

fn read(c: &RwLock<Contents>) -> std::sync::RwLockReadGuard<'_, Contents> {
    // A panic while holding the lock cannot leave the maps half-updated (each update is a single
    // insert), so a poisoned lock is still safe to use.
    c.read().unwrap_or_else(|e| e.into_inner())
}

fn write(c: &RwLock<Contents>) -> std::sync::RwLockWriteGuard<'_, Contents> {
    c.write().unwrap_or_else(|e| e.into_inner())
}

/// One page of live keys from an iterator over (encoded-key-without-keyspace, state) in key order
/// that starts at the listing's prefix. Shared by both stores.
pub(super) fn page_of(
    iter: impl Iterator<Item = Result<(Vec<u8>, KeyState), StoreError>>,
    after: Option<&str>,
    limit: usize,
) -> Result<KeyPage, StoreError> {
    let mut keys = Vec::new();
    for item in iter {
        let (name, state) = item?;
        if after.is_some_and(|a| name.as_slice() <= a.as_bytes()) {
            continue;
        }
        let live = match &state {
            KeyState::Register(r) => !r.is_tombstone(),
            KeyState::Set(_) => true,
        };
        if !live {
            continue;
        }
        if keys.len() == limit {
            let next = keys.last().cloned();
            return Ok(KeyPage { keys, next });
        }
        keys.push(String::from_utf8(name).map_err(|e| StoreError::Corrupt(e.to_string()))?);
    }
    Ok(KeyPage { keys, next: None })
}

struct MemoryReader {
    contents: Arc<RwLock<Contents>>,
}

impl StoreRead for MemoryReader {
    fn get(&self, key: &StoreKey) -> Result<Option<KeyState>, StoreError> {
        Ok(read(&self.contents).records.get(&key.encode()).cloned())
    }

    fn list_live(
        &self,
        space: Keyspace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, StoreError> {
        let (start, from) = super::listing_bounds(space, prefix, after);
        let contents = read(&self.contents);
        let iter = contents
            .records
            .range(from..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(k, v)| Ok((k[1..].to_vec(), v.clone())));
        page_of(iter, after, limit)
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}

impl Store for MemoryStore {
    fn reader(&self) -> Arc<dyn StoreRead> {
        Arc::new(MemoryReader {
            contents: self.contents.clone(),
        })
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn collected_through(&self) -> Timestamp {
        read(&self.contents).collected_through
    }

    fn clustered(&self) -> bool {
        read(&self.contents).clustered
    }

    fn get(&self, key: &StoreKey) -> Result<Option<KeyState>, StoreError> {
        Ok(read(&self.contents).records.get(&key.encode()).cloned())
    }

    fn leaf_keys(&self, leaf: u16) -> Result<Vec<(StoreKey, [u8; 8])>, StoreError> {
        let c = read(&self.contents);
        let range = c
            .key_hashes
            .range((leaf, Vec::new())..)
            .take_while(|((l, _), _)| *l == leaf);
        Ok(range
            .filter_map(|((_, k), h)| Some((StoreKey::decode(k)?, *h)))
            .collect())
    }

    fn load_leaves(&self) -> Result<Option<Vec<Leaf>>, StoreError> {
        let c = read(&self.contents);
        Ok(c.leaves.clone().filter(|_| c.leaves_complete))
    }

    fn for_each_record(
        &self,
        f: &mut dyn FnMut(StoreKey, KeyState) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let records: Vec<_> = read(&self.contents)
            .records
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in records {
            let key = StoreKey::decode(&k).ok_or_else(|| StoreError::Corrupt("bad key".into()))?;
            f(key, v)?;
        }
        Ok(())
    }

    fn take_replay(&mut self) -> Vec<LoggedDelta> {
        Vec::new()
    }

    fn apply(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut c = write(&self.contents);
        if let Some(horizon) = batch.collected_through {
            c.collected_through = horizon;
        }
        c.clustered |= batch.clustered;
        for key in batch.removals {
            let encoded = key.encode();
            c.key_hashes
                .remove(&(merkle::bucket_of(&key), encoded.clone()));
            c.records.remove(&encoded);
        }
        for (key, state) in batch.records {
            c.records.insert(key.encode(), state);
        }
        for (key, hash) in batch.key_hashes {
            c.key_hashes
                .insert((merkle::bucket_of(&key), key.encode()), hash);
        }
        if !batch.leaves.is_empty() {
            let leaves = c
                .leaves
                .get_or_insert_with(|| vec![Leaf::default(); merkle::LEAVES]);
            for (i, leaf) in batch.leaves {
                leaves[i as usize] = leaf;
            }
        }
        if let Some(complete) = batch.leaves_complete {
            c.leaves_complete = complete;
        }
        if let Some(meta) = batch.meta {
            c.meta = meta.clone();
            self.meta = meta;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<PendingSync, StoreError> {
        Ok(PendingSync::Done)
    }

    fn wants_checkpoint(&self) -> bool {
        false
    }

    fn begin_checkpoint(&mut self) -> Result<Option<super::CheckpointWork>, StoreError> {
        Ok(None)
    }

    fn checkpoint_done(&mut self, _completed: bool) {}

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{NodeId, Timestamp};
    use crate::crdt::LwwRegister;

    #[test]
    fn listing_pages_through_live_keys_of_one_keyspace_by_prefix() {
        let mut store = MemoryStore::new();
        let reg = |value: bool| {
            KeyState::Register(LwwRegister::write(
                Timestamp::from_raw(1),
                NodeId::new("n1").unwrap(),
                value.then(|| crate::crdt::Value {
                    content_type: "x".into(),
                    data: vec![1],
                }),
            ))
        };
        let records = ["a/1", "a/2", "a/3", "a/4", "b/1"]
            .map(|k| (StoreKey::kv(k), reg(k != "a/3")))
            .into_iter()
            .chain([(StoreKey::set("a/0"), KeyState::Set(Default::default()))])
            .collect();
        store
            .apply(WriteBatch {
                records,
                ..WriteBatch::default()
            })
            .unwrap();
        let reader = store.reader();
        let page = reader.list_live(Keyspace::Kv, "a/", None, 2).unwrap();
        assert_eq!(page.keys, vec!["a/1", "a/2"]);
        assert_eq!(page.next.as_deref(), Some("a/2"));
        let page = reader
            .list_live(Keyspace::Kv, "a/", Some("a/2"), 2)
            .unwrap();
        assert_eq!(
            page,
            KeyPage {
                keys: vec!["a/4".into()],
                next: None
            }
        );
        // `after` before the prefix starts at the prefix.
        let page = reader
            .list_live(Keyspace::Kv, "b/", Some("a/9"), 5)
            .unwrap();
        assert_eq!(page.keys, vec!["b/1"]);
    }
}
