//! The core state machine of one node: it turns client writes and remote deltas into merged
//! states, Merkle updates and store batches. Time comes in as an argument (`wall_ms`), never from
//! a clock; the store is any [`Store`], so the simulator drives this very code with memory stores.
//!
//! Never touches sockets, threads or the wall clock; never decides when to sync (the driver calls
//! [`Node::commit`] once per group of writes before acknowledging them).

use crate::clock::{Hlc, NodeId, Timestamp};
use crate::crdt::{KeyState, LwwRegister, OrSet, Value};
use crate::store::{
    merkle, Leaf, LoggedDeltaRef, MerkleIndex, Meta, PendingSync, Store, StoreError, StoreKey,
    WriteBatch,
};
use std::collections::BTreeSet;

mod anti_entropy;
mod cluster;
mod collection;
mod outbox;
mod tombstones;

pub use cluster::{ClusterConfig, ClusterStats, Outbound};
pub use tombstones::TombstoneConfig;

/// What merging a delta did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Merge {
    Changed,
    Unchanged,
    /// A register for a key this node lacks, no newer than a tombstone it has collected: it may
    /// be a deleted value coming back, so it is not stored.
    Refused,
}

/// A client's write, validated by the API layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    KvPut {
        key: String,
        value: Value,
    },
    KvDelete {
        key: String,
    },
    /// Removes are applied before adds, so an element named in both ends up present.
    SetEdit {
        key: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
}

/// What a client is told once its write is applied (and, after commit, durable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteAck {
    pub timestamp: Timestamp,
    pub node: NodeId,
    /// The set's elements after a set edit.
    pub elements: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the data directory belongs to node {stored:?}, not {given:?}; pass --node-id {stored} or use another --data directory")]
    WrongNode { stored: NodeId, given: NodeId },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Node<S: Store> {
    id: NodeId,
    hlc: Hlc,
    meta: Meta,
    /// `meta` changed since it was last handed to the store.
    meta_dirty: bool,
    merkle: MerkleIndex,
    /// Leaves changed since the index was last persisted.
    dirty_leaves: BTreeSet<u16>,
    /// Whether the store holds a complete, current copy of the index.
    leaves_persisted: bool,
    store: S,
    cluster: cluster::Cluster,
    tombstones: tombstones::TombstoneCollector,
}

impl<S: Store> Node<S> {
    /// Opens the node on `store`: checks the node id, loads (or rebuilds) the Merkle index and
    /// redoes the deltas of the write-ahead log.
    pub fn open(store: S, id: NodeId) -> Result<Self, NodeError> {
        Self::open_in_cluster(store, id, ClusterConfig::standalone())
    }

    /// [`Node::open`] for a node that takes part in a cluster.
    pub fn open_in_cluster(
        mut store: S,
        id: NodeId,
        config: ClusterConfig,
    ) -> Result<Self, NodeError> {
        let mut meta = store.meta().clone();
        if let Some(stored) = &meta.node_id {
            if *stored != id {
                return Err(NodeError::WrongNode {
                    stored: stored.clone(),
                    given: id,
                });
            }
        }
        meta.node_id = Some(id.clone());
        // One pass over the records finds the tombstones; a rebuild of the index is that pass.
        let (merkle, dirty_leaves, leaves_persisted, found) = match store.load_leaves()? {
            Some(leaves) => {
                let found = collection::tombstones_in(&store)?;
                (
                    MerkleIndex::from_leaves(leaves),
                    BTreeSet::new(),
                    true,
                    found,
                )
            }
            None => {
                let (merkle, found) = rebuild_merkle(&mut store)?;
                let dirty = (0..=u16::MAX).collect();
                (merkle, dirty, false, found)
            }
        };
        meta.incarnation += 1;
        let mut tombstones = tombstones::TombstoneCollector::new(
            config.tombstones.clone(),
            !config.seeds.is_empty() || store.clustered(),
        );
        for (key, ts) in found {
            tombstones.track(&key, None, Some(ts));
        }
        let mut cluster = cluster::Cluster::new(id.clone(), meta.incarnation, config);
        for (origin, seq) in meta.seen.iter() {
            cluster.rumors_mut().restore(origin, seq);
        }
        let mut node = Node {
            id,
            cluster,
            hlc: Hlc::restore(meta.hlc),
            meta,
            meta_dirty: true,
            merkle,
            dirty_leaves,
            leaves_persisted,
            store,
            tombstones,
        };
        let replay = node.store.take_replay();
        if !replay.is_empty() {
            tracing::info!(entries = replay.len(), "redoing the write-ahead log");
        }
        for logged in replay {
            node.hlc.observe(logged.hlc);
            if let Some((origin, seq)) = &logged.origin_seq {
                node.meta.seen.advance(origin, *seq);
            }
            node.merge_delta(logged.key, logged.delta, None)?;
        }
        // Persist the node id, the clock and the index, then start with an empty log.
        node.checkpoint()?;
        Ok(node)
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The Merkle root: hash and key count of all replicated state.
    pub fn digest(&self) -> Leaf {
        self.merkle.root()
    }

    pub fn merkle(&self) -> &MerkleIndex {
        &self.merkle
    }

    /// Applies a client write at wall time `wall_ms`. The change is visible to readers on return;
    /// the caller commits the store before acknowledging it.
    pub fn handle_write(&mut self, wall_ms: u64, write: Write) -> Result<WriteAck, StoreError> {
        let timestamp = self.hlc.tick(wall_ms);
        let (key, delta, elements) = match write {
            Write::KvPut { key, value } => (
                StoreKey::kv(key),
                self.register(timestamp, Some(value)),
                None,
            ),
            Write::KvDelete { key } => (StoreKey::kv(key), self.register(timestamp, None), None),
            Write::SetEdit { key, add, remove } => {
                let key = StoreKey::set(key);
                let mut set = match self.store.get(&key)? {
                    Some(KeyState::Set(set)) => set,
                    _ => OrSet::new(),
                };
                // One delta for the whole edit: merging each element's delta into a growing one
                // cost the square of the batch.
                let delta = set.edit(
                    &self.id,
                    remove.iter().map(String::as_str),
                    add.iter().map(String::as_str),
                );
                let elements = set.elements().map(str::to_string).collect();
                (key, KeyState::Set(delta), Some(elements))
            }
        };
        let seq = self.meta.seen.get(&self.id) + 1;
        self.meta.seen.advance(&self.id, seq);
        let origin = Some((self.id.clone(), seq));
        if self.has_peers() {
            self.merge_delta(key.clone(), delta.clone(), origin)?;
            self.spread_local(key, delta, seq);
        } else {
            // Nobody to tell: anti-entropy brings peers up to date when they appear.
            self.merge_delta(key, delta, origin)?;
        }
        Ok(WriteAck {
            timestamp,
            node: self.id.clone(),
            elements,
        })
    }

    fn register(&self, timestamp: Timestamp, value: Option<Value>) -> KeyState {
        KeyState::Register(LwwRegister::write(timestamp, self.id.clone(), value))
    }

    /// Merges a delta (local, remote or replayed) into the key's state and hands the result to
    /// the store. Returns whether the state changed.
    pub fn merge_delta(
        &mut self,
        key: StoreKey,
        delta: KeyState,
        origin_seq: Option<(NodeId, u64)>,
    ) -> Result<bool, StoreError> {
        Ok(self.merge_checked(key, delta, origin_seq)? == Merge::Changed)
    }

    /// [`Node::merge_delta`], telling a refused delta apart from one that changed nothing.
    pub(crate) fn merge_checked(
        &mut self,
        key: StoreKey,
        delta: KeyState,
        origin_seq: Option<(NodeId, u64)>,
    ) -> Result<Merge, StoreError> {
        if let KeyState::Register(r) = &delta {
            self.hlc.observe(r.timestamp);
        }
        if matches!(&delta, KeyState::Set(s) if s.is_noop_delta()) {
            return Ok(Merge::Unchanged);
        }
        let old = self.store.get(&key)?;
        if old.is_none() && self.may_be_collected(&delta) {
            return Ok(Merge::Refused);
        }
        let old_tombstone = old.as_ref().and_then(tombstones::tombstone_of);
        let old_hash = old.as_ref().map(|state| merkle::item_hash(&key, state));
        self.meta.hlc = self.hlc.high_water_mark();
        let hlc = self.meta.hlc;
        let log = |delta: &KeyState| {
            LoggedDeltaRef {
                key: &key,
                delta,
                hlc,
                origin_seq: origin_seq.as_ref().map(|(n, s)| (n, *s)),
            }
            .encode()
        };
        // Only a delta that changes the state is logged (duplicates are common: rumors arrive
        // more than once and anti-entropy resends what a peer already merged).
        let (new, logged) = match old {
            Some(mut state) => {
                if !state.merge(&delta) {
                    return Ok(Merge::Unchanged);
                }
                let logged = log(&delta);
                (state, logged)
            }
            None => {
                let logged = log(&delta);
                (delta, logged)
            }
        };
        self.tombstones
            .track(&key, old_tombstone, tombstones::tombstone_of(&new));
        let new_hash = merkle::item_hash(&key, &new);
        let (bucket, _) = self.merkle.update_hashed(&key, old_hash, new_hash);
        self.dirty_leaves.insert(bucket);
        let key_hash = (key.clone(), prefix8(&new_hash));
        self.meta_dirty = true;
        // The first change after the index was persisted marks the persisted copy stale, in the
        // same atomic batch: a crash from here on rebuilds the index from the records.
        let leaves_complete = self.stale_leaves();
        self.store.apply(WriteBatch {
            records: vec![(key, new)],
            key_hashes: vec![key_hash],
            deltas: vec![logged],
            leaves_complete,
            ..WriteBatch::default()
        })?;
        Ok(Merge::Changed)
    }

    /// Marks the persisted Merkle leaves stale before the first change after they were
    /// persisted (applied in the same batch as that change).
    fn stale_leaves(&mut self) -> Option<bool> {
        if self.leaves_persisted {
            self.leaves_persisted = false;
            Some(false)
        } else {
            None
        }
    }

    /// Starts making every change so far durable (per the durability mode): the driver calls
    /// this once per group of writes and acknowledges them once the returned sync completes.
    pub fn commit(&mut self) -> Result<PendingSync, StoreError> {
        if self.meta_dirty {
            self.meta.hlc = self.hlc.high_water_mark();
            for (origin, seq) in self.cluster.rumors().contiguous() {
                self.meta.seen.advance(origin, seq);
            }
            self.meta.incarnation = self.meta.incarnation.max(self.incarnation());
            self.store.apply(WriteBatch {
                meta: Some(self.meta.clone()),
                ..WriteBatch::default()
            })?;
            self.meta_dirty = false;
        }
        self.store.commit()
    }

    /// True when changes wait for [`Node::commit`].
    pub fn has_uncommitted(&self) -> bool {
        self.meta_dirty
    }

    /// Periodic housekeeping: the store's timed sync, and a checkpoint once its log is large.
    pub fn maintain_store(&mut self) -> Result<(), StoreError> {
        self.store.tick()?;
        if self.store.wants_checkpoint() {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Persists the Merkle index and metadata, flushes the database and empties the log.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        let leaves = self.merkle.leaves();
        let changed = std::mem::take(&mut self.dirty_leaves);
        self.store.apply(WriteBatch {
            leaves: changed
                .into_iter()
                .map(|i| (i, leaves[i as usize]))
                .collect(),
            leaves_complete: Some(true),
            ..WriteBatch::default()
        })?;
        self.leaves_persisted = true;
        // The checkpoint syncs the whole file system, which covers the pending log sync.
        let _covered = self.commit()?;
        self.store.checkpoint()
    }
}

/// The first 8 bytes of an item hash: what the per-leaf key index and anti-entropy compare.
pub fn prefix8(hash: &[u8; 32]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&hash[..8]);
    out
}

/// Keys holding a tombstone, with its timestamp.
type Tombstones = Vec<(StoreKey, Timestamp)>;

/// Rebuilds the Merkle index and the per-leaf key index from the records; also returns the
/// tombstones among them.
fn rebuild_merkle<S: Store>(store: &mut S) -> Result<(MerkleIndex, Tombstones), StoreError> {
    const CHUNK: usize = 10_000;
    let mut index = MerkleIndex::default();
    let mut key_hashes = Vec::new();
    let mut found = Vec::new();
    store.for_each_record(&mut |key, state| {
        if let Some(ts) = tombstones::tombstone_of(&state) {
            found.push((key.clone(), ts));
        }
        let hash = merkle::item_hash(&key, &state);
        index.update_hashed(&key, None, hash);
        key_hashes.push((key, prefix8(&hash)));
        Ok(())
    })?;
    while !key_hashes.is_empty() {
        let rest = key_hashes.split_off(key_hashes.len().saturating_sub(CHUNK));
        store.apply(WriteBatch {
            key_hashes: rest,
            ..WriteBatch::default()
        })?;
    }
    tracing::info!(
        keys = index.root().count,
        "rebuilt the Merkle index from the data"
    );
    Ok((index, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn put(key: &str, v: &str) -> Write {
        Write::KvPut {
            key: key.into(),
            value: Value {
                content_type: "text/plain".into(),
                data: v.as_bytes().to_vec(),
            },
        }
    }

    #[test]
    fn writes_advance_the_clock_sequence_and_digest() {
        let mut node = Node::open(MemoryStore::new(), id("n1")).unwrap();
        let empty = node.digest();
        let a = node.handle_write(1_000, put("k", "1")).unwrap();
        let b = node.handle_write(900, put("k", "2")).unwrap();
        assert!(b.timestamp > a.timestamp);
        assert_eq!(node.digest().count, 1);
        assert_ne!(node.digest(), empty);
        node.commit().unwrap().complete().unwrap();
        assert_eq!(node.store().meta().seen.get(&id("n1")), 2);
    }

    #[test]
    fn reopening_restores_clock_and_index_and_refuses_another_node_id() {
        let store = MemoryStore::new();
        let mut node = Node::open(store.reopen(), id("n1")).unwrap();
        let ack = node.handle_write(5_000, put("k", "v")).unwrap();
        node.commit().unwrap().complete().unwrap();
        let digest = node.digest();
        // No checkpoint: the index was not persisted after the write, so it is rebuilt.
        drop(node);
        let mut again = Node::open(store.reopen(), id("n1")).unwrap();
        assert_eq!(again.digest(), digest);
        assert!(again.handle_write(1, put("k", "w")).unwrap().timestamp > ack.timestamp);
        assert!(matches!(
            Node::open(store.reopen(), id("n2")),
            Err(NodeError::WrongNode { .. })
        ));
    }

    #[test]
    fn set_edit_applies_removes_before_adds() {
        let mut node = Node::open(MemoryStore::new(), id("n1")).unwrap();
        let edit = |add: &[&str], remove: &[&str]| Write::SetEdit {
            key: "s".into(),
            add: add.iter().map(|s| s.to_string()).collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        };
        node.handle_write(1, edit(&["a", "b"], &[])).unwrap();
        let ack = node
            .handle_write(2, edit(&["c", "a"], &["a", "b"]))
            .unwrap();
        assert_eq!(ack.elements.unwrap(), vec!["a", "c"]);
    }

    #[test]
    fn leaf_key_index_follows_writes_and_rebuilds() {
        let store = MemoryStore::new();
        let mut node = Node::open(store.reopen(), id("n1")).unwrap();
        node.handle_write(1, put("k", "1")).unwrap();
        node.handle_write(2, put("k", "2")).unwrap();
        let key = StoreKey::kv("k");
        let state = node.store().get(&key).unwrap().unwrap();
        let expected = vec![(key.clone(), prefix8(&merkle::item_hash(&key, &state)))];
        let leaf = merkle::bucket_of(&key);
        assert_eq!(node.store().leaf_keys(leaf).unwrap(), expected);
        // A store whose index is missing gets it back from the records.
        let mut bare = MemoryStore::new();
        bare.apply(WriteBatch {
            records: vec![(key.clone(), state)],
            ..WriteBatch::default()
        })
        .unwrap();
        let rebuilt = Node::open(bare, id("n1")).unwrap();
        assert_eq!(rebuilt.store().leaf_keys(leaf).unwrap(), expected);
        assert_eq!(rebuilt.digest(), node.digest());
    }

    #[test]
    fn merged_index_equals_a_rebuilt_one() {
        let store = MemoryStore::new();
        let mut node = Node::open(store.reopen(), id("n1")).unwrap();
        for i in 0..20 {
            node.handle_write(i, put(&format!("k{}", i % 7), "v"))
                .unwrap();
        }
        let mut rebuilt = MemoryStore::new();
        let merkle = {
            node.store()
                .for_each_record(&mut |k, s| {
                    rebuilt.apply(WriteBatch {
                        records: vec![(k, s)],
                        ..WriteBatch::default()
                    })
                })
                .unwrap();
            rebuild_merkle(&mut rebuilt).unwrap().0
        };
        assert_eq!(merkle.root(), node.digest());
    }
}
