//! An in-memory store for the simulator and unit tests. Cloning a `MemoryStore` shares its
//! contents, which is how the simulator restarts a node on what it had persisted.
//!
//! By default every applied batch is durable at once. [`MemoryStore::with_crashes`] models a disk
//! instead: a batch becomes durable only when the sync of its commit completes, and
//! [`MemoryStore::reopen`] (a restart after a crash) finds only what was durable. Faults can be
//! injected: syncs that fail, and a full disk on which every write fails. A node's failed group is
//! rolled back with [`Store::rollback`], which returns the store to what was durable.

use super::{
    merkle, CheckpointWork, KeyPage, KeyState, Keyspace, Leaf, LoggedDelta, Meta, PendingSync,
    SetHeader, Store, StoreError, StoreKey, StoreRead, Undone, WriteBatch,
};
use crate::clock::{Dot, NodeId, ReplicaId, Timestamp};
use crate::crdt::{OrSet, SetChange, SetReplica};
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

#[derive(Clone, Default)]
struct Contents {
    records: BTreeMap<Vec<u8>, KeyState>,
    /// The header of each set in `records`, by encoded key.
    set_headers: BTreeMap<Vec<u8>, SetHeader>,
    /// (leaf, encoded key) → item hash prefix.
    key_hashes: BTreeMap<(u16, Vec<u8>), [u8; 8]>,
    leaves: Option<Vec<Leaf>>,
    leaves_complete: bool,
    meta: Meta,
    collected_through: Timestamp,
    clustered: bool,
    roster: Vec<NodeId>,
    member_addrs: Vec<(NodeId, core::net::SocketAddr)>,
    forgotten: Vec<(StoreKey, Timestamp)>,
    /// Encoded key → timestamp from which its record is a tombstone.
    tombstones: BTreeMap<Vec<u8>, Timestamp>,
}

impl Contents {
    fn apply(&mut self, batch: &WriteBatch) {
        if let Some(horizon) = batch.collected_through {
            self.collected_through = horizon;
        }
        self.clustered |= batch.clustered;
        if let Some(addrs) = &batch.member_addrs {
            self.member_addrs = addrs.clone();
        }
        if let Some(roster) = &batch.roster {
            self.roster = roster.clone();
        }
        if let Some(forgotten) = &batch.forgotten {
            self.forgotten = forgotten.clone();
        }
        for (key, _) in &batch.removals {
            let encoded = key.encode();
            self.key_hashes
                .remove(&(merkle::bucket_of(key), encoded.clone()));
            self.set_headers.remove(&encoded);
            self.tombstones.remove(&encoded);
            self.records.remove(&encoded);
        }
        for (key, from) in &batch.tombstones {
            match from {
                Some(ts) => self.tombstones.insert(key.encode(), *ts),
                None => self.tombstones.remove(&key.encode()),
            };
        }
        for (key, state) in &batch.records {
            match state {
                KeyState::Set(set) => self.set_headers.insert(key.encode(), SetHeader::of(set)),
                KeyState::Register(_) | KeyState::Counter(_) => {
                    self.set_headers.remove(&key.encode())
                }
            };
            self.records.insert(key.encode(), state.clone());
        }
        for write in &batch.sets {
            let encoded = write.key.encode();
            let record = self
                .records
                .entry(encoded.clone())
                .or_insert_with(|| KeyState::Set(OrSet::new()));
            if let KeyState::Set(set) = record {
                set.apply(SetChange {
                    context: write.header.context.clone(),
                    elements: write.elements.clone(),
                });
            }
            self.set_headers.insert(encoded, write.header.clone());
        }
        if batch.key_index_reset {
            self.key_hashes.clear();
        }
        for (key, hash) in &batch.key_hashes {
            self.key_hashes.insert(
                (merkle::bucket_of(key), key.encode()),
                merkle::prefix8(hash),
            );
        }
        if !batch.leaves.is_empty() {
            let leaves = self
                .leaves
                .get_or_insert_with(|| vec![Leaf::default(); merkle::LEAVES]);
            for (i, leaf) in &batch.leaves {
                leaves[*i as usize] = *leaf;
            }
        }
        if let Some(complete) = batch.leaves_complete {
            self.leaves_complete = complete;
        }
        if let Some(meta) = &batch.meta {
            self.meta = meta.clone();
        }
    }
}

/// What a simulated disk holds, and the faults injected into it.
#[derive(Default)]
struct Disk {
    /// What readers see: every applied batch.
    applied: Contents,
    /// What survives a crash, with the crash model: the batches whose sync completed.
    durable: Option<Contents>,
    /// Syncs fail (the batches they cover never become durable).
    fail_syncs: bool,
    /// The disk is full: every write fails.
    full: bool,
}

#[derive(Clone, Default)]
pub struct MemoryStore {
    disk: Arc<RwLock<Disk>>,
    meta: Meta,
    /// With the crash model: batches applied since the last commit.
    uncommitted: Vec<WriteBatch>,
    /// Commits made since this handle was opened.
    commits: u64,
    /// With the crash model: the keys each commit not yet known to be synced changed.
    unsynced: Vec<(u64, BTreeSet<StoreKey>)>,
}

/// The record keys a batch changes.
fn keys_of(batch: &WriteBatch) -> impl Iterator<Item = &StoreKey> {
    batch
        .records
        .iter()
        .map(|(key, _)| key)
        .chain(batch.sets.iter().map(|write| &write.key))
        .chain(batch.removals.iter().map(|(key, _)| key))
}

impl MemoryStore {
    /// A store on which every applied batch is durable at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that models a disk: a batch is durable once the sync of its commit completes, and
    /// a crash ([`MemoryStore::reopen`]) loses the rest.
    pub fn with_crashes() -> Self {
        let store = Self::default();
        write(&store.disk).durable = Some(Contents::default());
        store
    }

    /// The same disk as a restarted node opens it: with the crash model, only what was durable.
    pub fn reopen(&self) -> Self {
        let meta = {
            let mut disk = write(&self.disk);
            if let Some(durable) = disk.durable.clone() {
                disk.applied = durable;
            }
            disk.applied.meta.clone()
        };
        MemoryStore {
            disk: self.disk.clone(),
            meta,
            ..MemoryStore::default()
        }
    }

    /// From now on, syncs fail (`true`) or succeed again.
    pub fn fail_syncs(&self, fail: bool) {
        write(&self.disk).fail_syncs = fail;
    }

    /// From now on, the disk is full (`true`: every write fails) or has room again.
    pub fn set_full(&self, full: bool) {
        write(&self.disk).full = full;
    }
}

/// The sync of one commit under the crash model: completing it makes its batches durable.
pub struct MemorySync {
    disk: Arc<RwLock<Disk>>,
    batches: Vec<WriteBatch>,
}

impl MemorySync {
    pub fn complete(self) -> Result<(), StoreError> {
        let mut disk = write(&self.disk);
        if disk.fail_syncs {
            return Err(StoreError::Io("sync failed (injected)".into()));
        }
        if let Some(durable) = &mut disk.durable {
            for batch in &self.batches {
                durable.apply(batch);
            }
        }
        Ok(())
    }
}

fn read(d: &RwLock<Disk>) -> std::sync::RwLockReadGuard<'_, Disk> {
    // A panic while holding the lock cannot leave the maps half-updated (each update is a single
    // insert), so a poisoned lock is still safe to use.
    d.read().unwrap_or_else(|e| e.into_inner())
}

fn write(d: &RwLock<Disk>) -> std::sync::RwLockWriteGuard<'_, Disk> {
    d.write().unwrap_or_else(|e| e.into_inner())
}

/// Rows a page may read per key it may hold (and a few more): deleted keys cost a read each, so
/// a page that passes many stops early, holding fewer keys, with `next` where it stopped.
const ROWS_PER_LISTED_KEY: usize = 8;
const ROWS_PER_PAGE: usize = 64;

/// One page of live keys from an iterator over (encoded-key-without-keyspace, whether it is
/// live) in key order that starts at the listing's prefix. Shared by both stores. It reads at
/// most [`ROWS_PER_LISTED_KEY`] rows per key of `limit` (plus [`ROWS_PER_PAGE`]): a range of
/// deleted keys ends the page early, with `next` at the last one read.
pub(super) fn page_of(
    iter: impl Iterator<Item = Result<(Vec<u8>, bool), StoreError>>,
    after: Option<&str>,
    limit: usize,
) -> Result<KeyPage, StoreError> {
    let mut keys = Vec::new();
    let mut budget = limit
        .saturating_mul(ROWS_PER_LISTED_KEY)
        .saturating_add(ROWS_PER_PAGE);
    for item in iter {
        let (name, live) = item?;
        if after.is_some_and(|a| name.as_slice() <= a.as_bytes()) {
            continue;
        }
        budget = budget.saturating_sub(1);
        if !live {
            if budget == 0 {
                let next =
                    String::from_utf8(name).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                return Ok(KeyPage {
                    keys,
                    next: Some(next),
                });
            }
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
    disk: Arc<RwLock<Disk>>,
}

impl StoreRead for MemoryReader {
    fn get(&self, key: &StoreKey) -> Result<Option<KeyState>, StoreError> {
        Ok(read(&self.disk).applied.records.get(&key.encode()).cloned())
    }

    fn list_live(
        &self,
        space: Keyspace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<KeyPage, StoreError> {
        let (start, from) = super::listing_bounds(space, prefix, after);
        let disk = read(&self.disk);
        let iter = disk
            .applied
            .records
            .range(from..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(k, v)| Ok((k[1..].to_vec(), v.is_live_at(now_ms))));
        page_of(iter, after, limit)
    }

    fn set_contains(&self, key: &StoreKey, element: &str) -> Result<Option<bool>, StoreError> {
        Ok(match read(&self.disk).applied.records.get(&key.encode()) {
            Some(KeyState::Set(set)) => Some(set.contains(element)),
            _ => None,
        })
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}

impl Store for MemoryStore {
    fn reader(&self) -> Arc<dyn StoreRead> {
        Arc::new(MemoryReader {
            disk: self.disk.clone(),
        })
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn collected_through(&self) -> Timestamp {
        read(&self.disk).applied.collected_through
    }

    fn clustered(&self) -> bool {
        read(&self.disk).applied.clustered
    }

    fn roster(&self) -> Vec<NodeId> {
        read(&self.disk).applied.roster.clone()
    }

    fn member_addrs(&self) -> Vec<(NodeId, core::net::SocketAddr)> {
        read(&self.disk).applied.member_addrs.clone()
    }

    fn forgotten(&self) -> Vec<(StoreKey, Timestamp)> {
        read(&self.disk).applied.forgotten.clone()
    }

    fn get(&self, key: &StoreKey) -> Result<Option<KeyState>, StoreError> {
        Ok(read(&self.disk).applied.records.get(&key.encode()).cloned())
    }

    fn set_header(&self, key: &StoreKey) -> Result<Option<SetHeader>, StoreError> {
        Ok(read(&self.disk)
            .applied
            .set_headers
            .get(&key.encode())
            .cloned())
    }

    fn set_dots(&self, key: &StoreKey, element: &str) -> Result<BTreeSet<Dot>, StoreError> {
        Ok(match read(&self.disk).applied.records.get(&key.encode()) {
            Some(KeyState::Set(set)) => set.dots(element).cloned().collect(),
            _ => BTreeSet::new(),
        })
    }

    fn set_holding(
        &self,
        key: &StoreKey,
        actor: &ReplicaId,
        first: u64,
        last: u64,
        found: &mut dyn FnMut(Dot, &str),
    ) -> Result<(), StoreError> {
        if let Some(KeyState::Set(set)) = read(&self.disk).applied.records.get(&key.encode()) {
            let Ok(()) = set.for_each_holding(actor, first, last, found);
        }
        Ok(())
    }

    fn leaf_keys(&self, leaf: u16) -> Result<Vec<(StoreKey, [u8; 8])>, StoreError> {
        let disk = read(&self.disk);
        let range = disk
            .applied
            .key_hashes
            .range((leaf, Vec::new())..)
            .take_while(|((l, _), _)| *l == leaf);
        Ok(range
            .filter_map(|((_, k), h)| Some((StoreKey::decode(k)?, *h)))
            .collect())
    }

    fn load_leaves(&self) -> Result<Option<Vec<Leaf>>, StoreError> {
        let disk = read(&self.disk);
        let c = &disk.applied;
        Ok(c.leaves.clone().filter(|_| c.leaves_complete))
    }

    fn tombstones(&self) -> Result<Vec<(StoreKey, Timestamp)>, StoreError> {
        Ok(read(&self.disk)
            .applied
            .tombstones
            .iter()
            .filter_map(|(k, ts)| Some((StoreKey::decode(k)?, *ts)))
            .collect())
    }

    fn for_each_record(
        &self,
        f: &mut dyn FnMut(StoreKey, KeyState) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let records: Vec<_> = read(&self.disk)
            .applied
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
        let mut disk = write(&self.disk);
        if disk.full {
            return Err(StoreError::Io(
                "No space left on device (os error 28; injected)".into(),
            ));
        }
        disk.applied.apply(&batch);
        let crashes = disk.durable.is_some();
        drop(disk);
        if let Some(meta) = &batch.meta {
            self.meta = meta.clone();
        }
        if crashes {
            self.uncommitted.push(batch);
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<PendingSync, StoreError> {
        self.commits += 1;
        if read(&self.disk).durable.is_none() {
            return Ok(PendingSync::Done);
        }
        let batches = std::mem::take(&mut self.uncommitted);
        let keys = batches.iter().flat_map(keys_of).cloned().collect();
        self.unsynced.push((self.commits, keys));
        Ok(PendingSync::Memory(MemorySync {
            disk: self.disk.clone(),
            batches,
        }))
    }

    fn commits(&self) -> u64 {
        self.commits
    }

    fn synced_through(&mut self, commit: u64) {
        self.unsynced.retain(|(number, _)| *number > commit);
    }

    fn rollback(&mut self) -> Result<Vec<Undone>, StoreError> {
        let mut disk = write(&self.disk);
        let Some(durable) = disk.durable.clone() else {
            return Err(StoreError::Io(
                "this store makes every write durable at once and cannot roll back".into(),
            ));
        };
        let keys: BTreeSet<StoreKey> = self
            .unsynced
            .drain(..)
            .flat_map(|(_, keys)| keys)
            .chain(
                self.uncommitted
                    .drain(..)
                    .flat_map(|b| keys_of(&b).cloned().collect::<Vec<_>>()),
            )
            .collect();
        let undone = keys
            .into_iter()
            .filter_map(|key| {
                let encoded = key.encode();
                let before = disk.applied.records.get(&encoded).cloned();
                let after = durable.records.get(&encoded).cloned();
                (before != after).then_some(Undone { key, before, after })
            })
            .collect();
        self.meta = durable.meta.clone();
        disk.applied = durable;
        Ok(undone)
    }

    fn acknowledges_before_sync(&self) -> bool {
        false
    }

    fn free_bytes(&self) -> Option<u64> {
        // A full simulated disk has no room; otherwise there is no disk to run out of.
        read(&self.disk).full.then_some(0)
    }

    fn wants_checkpoint(&self) -> bool {
        false
    }

    fn begin_checkpoint(&mut self) -> Result<Option<CheckpointWork>, StoreError> {
        Ok(None)
    }

    fn checkpoint_done(&mut self, _completed: bool) {}

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        // Everything applied becomes durable, as a flushed database would.
        let mut disk = write(&self.disk);
        if disk.fail_syncs {
            return Err(StoreError::Io("sync failed (injected)".into()));
        }
        self.uncommitted.clear();
        let applied = disk.applied.clone();
        if let Some(durable) = &mut disk.durable {
            *durable = applied;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{NodeId, Timestamp};
    use crate::crdt::LwwRegister;

    /// A register holding a value (`live`) or a tombstone.
    fn reg(live: bool) -> KeyState {
        KeyState::Register(LwwRegister::write(
            Timestamp::from_raw(1),
            NodeId::new("n1").unwrap(),
            live.then(|| crate::crdt::Value {
                content_type: "x".into(),
                data: vec![1],
            }),
        ))
    }

    /// A store holding `records`.
    fn holding(records: Vec<(StoreKey, KeyState)>) -> MemoryStore {
        let mut store = MemoryStore::new();
        store
            .apply(WriteBatch {
                records,
                ..WriteBatch::default()
            })
            .unwrap();
        store
    }

    #[test]
    fn a_page_past_many_deleted_keys_stops_early_and_paging_goes_on_from_there() {
        let store = holding(
            (0..1000)
                .map(|i| (StoreKey::kv(format!("d/{i:04}")), reg(false)))
                .chain([(StoreKey::kv("d/live"), reg(true))])
                .collect(),
        );
        let reader = store.reader();
        let (mut after, mut pages, mut found) = (None::<String>, 0, Vec::new());
        loop {
            let page = reader
                .list_live(Keyspace::Kv, "d/", after.as_deref(), 10, 0)
                .unwrap();
            pages += 1;
            found.extend(page.keys);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(found, ["d/live"]);
        // Each page read at most 8 rows per key it may hold, plus 64: 144 of the 1,000.
        assert_eq!(pages, 1000 / 144 + 1);
    }

    #[test]
    fn listing_pages_through_live_keys_of_one_keyspace_by_prefix() {
        let store = holding(
            ["a/1", "a/2", "a/3", "a/4", "b/1"]
                .map(|k| (StoreKey::kv(k), reg(k != "a/3")))
                .into_iter()
                .chain([(StoreKey::set("a/0"), KeyState::Set(Default::default()))])
                .collect(),
        );
        let reader = store.reader();
        let page = reader.list_live(Keyspace::Kv, "a/", None, 2, 0).unwrap();
        assert_eq!(page.keys, vec!["a/1", "a/2"]);
        assert_eq!(page.next.as_deref(), Some("a/2"));
        let page = reader
            .list_live(Keyspace::Kv, "a/", Some("a/2"), 2, 0)
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
            .list_live(Keyspace::Kv, "b/", Some("a/9"), 5, 0)
            .unwrap();
        assert_eq!(page.keys, vec!["b/1"]);
    }
}
