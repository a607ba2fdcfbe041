//! The production store: one sled 0.34 tree plus the write-ahead log ([`super::wal`]).
//!
//! Keys in the tree: `r` + encoded key → record (a set's header; its element and dot rows are laid
//! out by [`super::set_rows`]); `k` + leaf (u16 BE) → the leaf's keys and item hash prefixes
//! ([`super::key_lists`]); `l` + leaf index (u16 BE) → Merkle leaf; `t` + encoded key → the timestamp (8 bytes BE) from which the key's
//! record is a tombstone (the tombstone index, read at start-up instead of every record);
//! `meta/...` → layout version, node metadata, Merkle completeness marker, tombstone collection
//! horizon (`meta/collected`, 8 bytes BE, absent meaning none collected), whether the node ever
//! met another member (`meta/clustered`), the other members it last knew of (`meta/members`,
//! absent meaning none recorded) and their cluster addresses (`meta/member-addrs`), the log
//! position of the persisted leaves (`meta/leaves-at`). A batch's deltas and removals go to the log file first (written,
//! not synced), then the batch to the tree atomically; [`Store::commit`] syncs the log. So a crash
//! that keeps a change to the tree keeps its log entry too, and the Merkle leaves and key lists
//! persisted at the last checkpoint are repaired at start-up where the log names keys.

use super::key_lists::{self, PendingKeys, KEY_LIST_PREFIX};
use super::logs::{LogPosition, Logs};
use super::merkle::prefix8;
use super::migrate::{self, MERKLE_COMPLETE_KEY, META_KEY, RECORD_PREFIX};
use super::undo::UndoLog;
use super::{
    merkle, record, set_rows, CheckpointWork, Durability, KeyPage, KeyState, Keyspace, Leaf,
    LogEntry, LoggedDelta, Meta, PendingSync, Prior, SetHeader, Store, StoreError, StoreKey,
    StoreRead, Undone, WriteBatch,
};
use crate::clock::{Dot, NodeId, ReplicaId, Timestamp};
use core::net::SocketAddr;
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const COLLECTED_KEY: &[u8] = b"meta/collected";
const CLUSTERED_KEY: &[u8] = b"meta/clustered";
const ROSTER_KEY: &[u8] = b"meta/members";
const FORGOTTEN_KEY: &[u8] = b"meta/forgotten";
const MEMBER_ADDRS_KEY: &[u8] = b"meta/member-addrs";
/// The log position at which the persisted Merkle leaves were written (16 bytes: generation and
/// offset, BE): they hold every change logged before it and none logged after.
const LEAVES_AT_KEY: &[u8] = b"meta/leaves-at";
const LEAF_PREFIX: u8 = b'l';
/// The per-key index rows of layouts up to 9 (`h` + leaf + encoded key → item hash prefix).
pub(super) const KEY_HASH_PREFIX: u8 = b'h';
pub(super) const TOMBSTONE_PREFIX: u8 = b't';
/// A checkpoint starts once the active log grows past this.
const CHECKPOINT_BYTES: u64 = super::wal::PREALLOCATED * 3 / 4;

pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    meta: Meta,
    collected_through: Timestamp,
    clustered: bool,
    roster: Vec<NodeId>,
    member_addrs: Vec<(NodeId, SocketAddr)>,
    forgotten: Vec<(StoreKey, Timestamp)>,
    /// The write-ahead logs (none under `none` durability).
    wal: Option<Logs>,
    /// A checkpoint's work is running off the core's thread.
    checkpointing: bool,
    /// What the batches not yet known to be durable overwrote.
    undo: UndoLog,
    durability: Durability,
    replay: Vec<LoggedDelta>,
    replayed_removals: Vec<StoreKey>,
    /// See [`Store::take_priors`].
    priors: BTreeMap<StoreKey, Prior>,
    /// Changes to the key lists not yet written to their rows.
    pending_keys: PendingKeys,
}

pub(super) fn record_key(key: &StoreKey) -> Vec<u8> {
    record_key_of(key.encode())
}

/// The tree key of a record, from its encoded `StoreKey`.
fn record_key_of(encoded: Vec<u8>) -> Vec<u8> {
    let mut k = vec![RECORD_PREFIX];
    k.extend(encoded);
    k
}

/// `h` + leaf (u16 BE) + encoded key: a row of the per-key index of layouts up to 9.
pub(super) fn key_hash_key(key: &StoreKey) -> Vec<u8> {
    let [a, b] = merkle::bucket_of(key).to_be_bytes();
    let mut k = vec![KEY_HASH_PREFIX, a, b];
    k.extend(key.encode());
    k
}

/// `t` + encoded key: the key's entry in the tombstone index.
pub(super) fn tombstone_key(key: &StoreKey) -> Vec<u8> {
    let mut k = vec![TOMBSTONE_PREFIX];
    k.extend(key.encode());
    k
}

fn leaf_key(index: u16) -> [u8; 3] {
    let [a, b] = index.to_be_bytes();
    [LEAF_PREFIX, a, b]
}

/// The database's page cache when none is given: what `hearsay serve --cache-mb` defaults to.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

impl SledStore {
    /// Opens (creating if needed) the data directory, upgrades its layout and reads the log,
    /// with the default page cache ([`DEFAULT_CACHE_BYTES`]).
    pub fn open(dir: &Path, durability: Durability) -> Result<SledStore, StoreError> {
        Self::open_with_cache(dir, durability, DEFAULT_CACHE_BYTES)
    }

    /// [`SledStore::open`] with a page cache of `cache_bytes`: the memory the database keeps of
    /// what it read or wrote (the node's resident memory is about this plus its own state).
    pub fn open_with_cache(
        dir: &Path,
        durability: Durability,
        cache_bytes: u64,
    ) -> Result<SledStore, StoreError> {
        let unwritable = |cause| StoreError::Unwritable {
            dir: dir.to_path_buf(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(unwritable)?;
        // sled reports a read-only directory obscurely; probe it first.
        let probe = dir.join(".write-probe");
        std::fs::write(&probe, b"").map_err(unwritable)?;
        let _ = std::fs::remove_file(&probe);
        // With a write-ahead log, the database is flushed only by checkpoints, which wait while
        // the disk is below its reserve: sled remembers a failed write for good (its "global
        // error"), so a background flush that ran out of space would leave the database
        // unwritable until a restart. Without a log, the background flush is all there is.
        super::compact::restore_database(dir)?;
        let db = open_db(dir, durability == Durability::None, cache_bytes)?;
        super::compact::remove_leftovers(dir)?;
        migrate::upgrade(&db, dir)?;
        let meta = match db.get(META_KEY)? {
            Some(bytes) => record::from_bytes(&bytes)?,
            None => Meta::default(),
        };
        let collected_through = read_horizon(&db)?;
        let clustered = db.get(CLUSTERED_KEY)?.is_some();
        let roster = read_roster(&db)?;
        let member_addrs = read_member_addrs(&db)?;
        let forgotten = read_forgotten(&db)?;
        let (wal, replay_payloads) = if durability == Durability::None {
            (None, Vec::new())
        } else {
            let (wal, payloads) = Logs::open(dir).map_err(unwritable)?;
            (Some(wal), payloads)
        };
        let leaves_at = match db.get(LEAVES_AT_KEY)? {
            Some(bytes) => Some(LogPosition::from_bytes(&bytes).ok_or_else(|| {
                StoreError::Corrupt("bad log position of the persisted leaves".into())
            })?),
            None => None,
        };
        let mut replay = Vec::new();
        let mut replayed_removals = Vec::new();
        let mut priors = BTreeMap::new();
        for (at, entry) in replay_payloads
            .iter()
            .filter_map(|(at, p)| Some((*at, LogEntry::decode(p).ok()?)))
        {
            let (key, prior) = match entry {
                LogEntry::Delta(delta, prior) => {
                    let key = delta.key.clone();
                    replay.push(delta);
                    (key, prior)
                }
                LogEntry::Removed(key, prior) => {
                    replayed_removals.push(key.clone());
                    (key, prior)
                }
            };
            // What the persisted leaves hold for a key is what its first entry after them says
            // it had; without a recorded position, nothing is known.
            match leaves_at {
                Some(leaves_at) if at < leaves_at => {}
                Some(_) => {
                    priors.entry(key).or_insert(prior);
                }
                None => {
                    priors.insert(key, Prior::Unknown);
                }
            }
        }
        Ok(SledStore {
            dir: dir.to_path_buf(),
            db,
            meta,
            collected_through,
            clustered,
            roster,
            member_addrs,
            forgotten,
            wal,
            checkpointing: false,
            undo: UndoLog::default(),
            durability,
            replay,
            replayed_removals,
            priors,
            pending_keys: PendingKeys::default(),
        })
    }
}

/// A sled batch that remembers which keys it writes.
#[derive(Default)]
pub(super) struct TreeBatch {
    batch: sled::Batch,
    /// Each key written, with what it held before when the writer knows it (`None`: read it).
    keys: Vec<(Vec<u8>, Option<Option<sled::IVec>>)>,
}

impl TreeBatch {
    pub(super) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl Into<sled::IVec>) {
        let key = key.as_ref().to_vec();
        self.batch.insert(key.as_slice(), value);
        self.keys.push((key, None));
    }

    pub(super) fn remove(&mut self, key: impl AsRef<[u8]>) {
        let key = key.as_ref().to_vec();
        self.batch.remove(key.as_slice());
        self.keys.push((key, None));
    }

    /// Writes `key` (`None`: removes it), which the caller knows held `before`: a rollback
    /// needs no read to restore it.
    pub(super) fn replace_known(
        &mut self,
        key: Vec<u8>,
        value: Option<sled::IVec>,
        before: Option<sled::IVec>,
    ) {
        match value {
            Some(value) => self.batch.insert(key.as_slice(), value),
            None => self.batch.remove(key.as_slice()),
        }
        self.keys.push((key, Some(before)));
    }

    pub(super) fn into_batch(self) -> sled::Batch {
        self.batch
    }
}

/// The members recorded (`meta/members`), none when absent.
/// The members' cluster addresses recorded (`meta/member-addrs`), none when absent.
fn read_member_addrs(db: &sled::Db) -> Result<Vec<(NodeId, SocketAddr)>, StoreError> {
    match db.get(MEMBER_ADDRS_KEY)? {
        Some(bytes) => record::from_bytes(&bytes),
        None => Ok(Vec::new()),
    }
}

fn read_roster(db: &sled::Db) -> Result<Vec<NodeId>, StoreError> {
    match db.get(ROSTER_KEY)? {
        Some(bytes) => record::from_bytes(&bytes),
        None => Ok(Vec::new()),
    }
}

/// The values forgotten on a peer's word (`meta/forgotten`), none when absent.
fn read_forgotten(db: &sled::Db) -> Result<Vec<(StoreKey, Timestamp)>, StoreError> {
    match db.get(FORGOTTEN_KEY)? {
        Some(bytes) => record::from_bytes(&bytes),
        None => Ok(Vec::new()),
    }
}

/// The tombstone collection horizon (`meta/collected`), [`Timestamp::ZERO`] when absent.
fn read_horizon(db: &sled::Db) -> Result<Timestamp, StoreError> {
    match db.get(COLLECTED_KEY)? {
        Some(bytes) => {
            let raw: [u8; 8] = bytes
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("bad tombstone collection horizon".into()))?;
            Ok(Timestamp::from_raw(u64::from_be_bytes(raw)))
        }
        None => Ok(Timestamp::ZERO),
    }
}

/// Opens the database, waiting up to two seconds for a handle this process just dropped: sled
/// releases the directory's lock from its own threads shortly after the last handle goes (a node
/// reopened in place, a test). Another process holding it is still refused after that.
pub(super) fn open_db(
    dir: &Path,
    background_flush: bool,
    cache_bytes: u64,
) -> Result<sled::Db, StoreError> {
    const TRIES: u32 = 200;
    for _ in 1..TRIES {
        match open_db_once(dir, background_flush, cache_bytes) {
            Err(StoreError::InUse { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            result => return result,
        }
    }
    open_db_once(dir, background_flush, cache_bytes)
}

fn open_db_once(
    dir: &Path,
    background_flush: bool,
    cache_bytes: u64,
) -> Result<sled::Db, StoreError> {
    // sled 0.34 can panic, not just fail, on some damaged files (sled #1533, #1527, #1189): a
    // damaged directory must end in a clear message, so a panic here is an error too.
    let config = sled::Config::new()
        .path(dir.join("db"))
        .cache_capacity(cache_bytes)
        .flush_every_ms(background_flush.then_some(500));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
        .unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "sled panicked while opening it".into());
            Err(sled::Error::Unsupported(reason))
        });
    result.map_err(|e| match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => StoreError::InUse {
            dir: dir.to_path_buf(),
        },
        sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::InUse {
            dir: dir.to_path_buf(),
        },
        other => StoreError::Damaged {
            dir: dir.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

struct SledReader {
    db: sled::Db,
}

/// The state a record row holds: the row itself, or for a set, its header and its element rows.
fn state_of(db: &sled::Db, key: &StoreKey, row: &[u8]) -> Result<KeyState, StoreError> {
    if set_rows::is_header(row) {
        let header = set_rows::decode_header(row)?;
        return Ok(KeyState::Set(set_rows::assemble(db, key, header)?));
    }
    record::decode_record(row)
}

/// Whether a record row holds a live value at wall time `now_ms` (a set always does).
fn row_is_live(row: &[u8], now_ms: u64) -> Result<bool, StoreError> {
    if set_rows::is_header(row) {
        return Ok(true);
    }
    Ok(record::decode_record(row)?.is_live_at(now_ms))
}

/// The item hash of what the database holds for `key` (see [`Store::item_hash`]).
pub(super) fn stored_item_hash(
    db: &sled::Db,
    key: &StoreKey,
) -> Result<Option<[u8; 32]>, StoreError> {
    let Some(row) = db.get(record_key(key))? else {
        return Ok(None);
    };
    if set_rows::is_header(&row) {
        let header = set_rows::decode_header(&row)?;
        return Ok(Some(merkle::set_item_hash(key, &header)));
    }
    // A register's or counter's record is its format byte and then the very bytes the item hash
    // covers: no need to decode it.
    match row.split_first() {
        Some((&record::RECORD_FORMAT, encoded)) => Ok(Some(merkle::item_hash_of(key, encoded))),
        _ => Ok(Some(merkle::item_hash(key, &record::decode_record(&row)?))),
    }
}

fn read_state(db: &sled::Db, key: &StoreKey) -> Result<Option<KeyState>, StoreError> {
    match db.get(record_key(key))? {
        Some(row) => Ok(Some(state_of(db, key, &row)?)),
        None => Ok(None),
    }
}

impl StoreRead for SledReader {
    fn get(&self, key: &StoreKey) -> Result<Option<KeyState>, StoreError> {
        read_state(&self.db, key)
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
        let (start, from) = (record_key_of(start), record_key_of(from));
        // The range ends at the first row past the prefix, before its value is read: rows of
        // other kinds (the tombstone index) follow the records.
        let iter = self
            .db
            .range(from..)
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(&start)))
            .map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), row_is_live(&v, now_ms)?))
            });
        super::memory::page_of(
            iter.map(|item| item.map(|(k, v)| (k[2..].to_vec(), v))),
            after,
            limit,
        )
    }

    fn set_contains(&self, key: &StoreKey, element: &str) -> Result<Option<bool>, StoreError> {
        if !self.db.contains_key(record_key(key))? {
            return Ok(None);
        }
        Ok(Some(
            !set_rows::read_dots(&self.db, key, element)?.is_empty(),
        ))
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Store for SledStore {
    fn reader(&self) -> Arc<dyn StoreRead> {
        Arc::new(SledReader {
            db: self.db.clone(),
        })
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn collected_through(&self) -> Timestamp {
        self.collected_through
    }

    fn clustered(&self) -> bool {
        self.clustered
    }

    fn roster(&self) -> Vec<NodeId> {
        self.roster.clone()
    }

    fn member_addrs(&self) -> Vec<(NodeId, SocketAddr)> {
        self.member_addrs.clone()
    }

    fn forgotten(&self) -> Vec<(StoreKey, Timestamp)> {
        self.forgotten.clone()
    }

    fn get(&self, key: &StoreKey) -> Result<Option<KeyState>, StoreError> {
        read_state(&self.db, key)
    }

    fn set_header(&self, key: &StoreKey) -> Result<Option<SetHeader>, StoreError> {
        match self.db.get(record_key(key))? {
            Some(row) => Ok(Some(set_rows::decode_header(&row)?)),
            None => Ok(None),
        }
    }

    fn set_dots(&self, key: &StoreKey, element: &str) -> Result<BTreeSet<Dot>, StoreError> {
        set_rows::read_dots(&self.db, key, element)
    }

    fn set_holding(
        &self,
        key: &StoreKey,
        actor: &ReplicaId,
        first: u64,
        last: u64,
        found: &mut dyn FnMut(Dot, &str),
    ) -> Result<(), StoreError> {
        set_rows::for_each_holding(&self.db, key, actor, first, last, found)
    }

    fn item_hash(&self, key: &StoreKey) -> Result<Option<[u8; 32]>, StoreError> {
        stored_item_hash(&self.db, key)
    }

    fn leaf_keys(&self, leaf: u16) -> Result<Vec<(StoreKey, [u8; 8])>, StoreError> {
        self.key_list(leaf)?
            .into_iter()
            .map(|(k, hash)| {
                let key = StoreKey::decode(&k).ok_or_else(|| {
                    StoreError::Corrupt("undecodable key in the key index".into())
                })?;
                Ok((key, hash))
            })
            .collect()
    }

    fn load_leaves(&self) -> Result<Option<Vec<Leaf>>, StoreError> {
        if self.db.get(MERKLE_COMPLETE_KEY)?.is_none() {
            return Ok(None);
        }
        let mut leaves = vec![Leaf::default(); merkle::LEAVES];
        for item in self.db.scan_prefix([LEAF_PREFIX]) {
            let (k, v) = item?;
            if k.len() != 3 {
                return Err(StoreError::Corrupt("bad Merkle leaf key".into()));
            }
            leaves[u16::from_be_bytes([k[1], k[2]]) as usize] = record::from_bytes(&v)?;
        }
        Ok(Some(leaves))
    }

    fn tombstones(&self) -> Result<Vec<(StoreKey, Timestamp)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([TOMBSTONE_PREFIX]) {
            let (k, v) = item?;
            let key = StoreKey::decode(&k[1..]).ok_or_else(|| {
                StoreError::Corrupt("undecodable key in the tombstone index".into())
            })?;
            let raw: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("bad tombstone index entry".into()))?;
            out.push((key, Timestamp::from_raw(u64::from_be_bytes(raw))));
        }
        Ok(out)
    }

    fn for_each_record(
        &self,
        f: &mut dyn FnMut(StoreKey, KeyState) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for item in self.db.scan_prefix([RECORD_PREFIX]) {
            let (k, v) = item?;
            let key = StoreKey::decode(&k[1..])
                .ok_or_else(|| StoreError::Corrupt("undecodable key".into()))?;
            let state = state_of(&self.db, &key, &v)?;
            f(key, state)?;
        }
        Ok(())
    }

    fn take_replay(&mut self) -> Vec<LoggedDelta> {
        std::mem::take(&mut self.replay)
    }

    fn take_replayed_removals(&mut self) -> Vec<StoreKey> {
        std::mem::take(&mut self.replayed_removals)
    }

    fn take_priors(&mut self) -> BTreeMap<StoreKey, Prior> {
        std::mem::take(&mut self.priors)
    }

    fn repairs_index_from_log(&self) -> bool {
        self.wal.is_some()
    }

    fn apply(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        // The log entries first, written to the file (a process crash keeps them): whatever of
        // the batch a crash keeps in the tree, the log names its keys.
        let mut logged_from = None;
        if let Some(wal) = &mut self.wal {
            if !batch.deltas.is_empty() || !batch.removals.is_empty() {
                let position = wal.position();
                self.undo.mark_log(|| position);
                let log = wal.active();
                for delta in &batch.deltas {
                    log.append(delta);
                }
                for (key, prior) in &batch.removals {
                    log.append(&LogEntry::removed(key, prior.as_ref()));
                }
                log.write()?;
                logged_from = Some(position);
            }
        }
        // Leaves persisted as complete hold everything logged so far (this batch's own entries
        // included).
        let leaves_at = match (&self.wal, batch.leaves_complete) {
            (Some(wal), Some(true)) => Some(wal.next_position()),
            _ => None,
        };
        if let Err(e) = self.apply_to_tree(&batch, leaves_at) {
            // A batch the database refused leaves nothing to redo.
            if let (Some(wal), Some((log, offset))) = (&mut self.wal, logged_from) {
                if let Err(undo) = wal.truncate(log, offset) {
                    tracing::error!(error = %undo, "cannot withdraw the log entries of a refused batch");
                }
            }
            return Err(e);
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<PendingSync, StoreError> {
        self.undo.commit();
        let Some(wal) = &mut self.wal else {
            return Ok(PendingSync::Done);
        };
        let log = wal.active();
        log.write()?;
        Ok(match self.durability {
            Durability::Fsync => PendingSync::Log(log.file()),
            _ => PendingSync::Soon(log.file()),
        })
    }

    fn commits(&self) -> u64 {
        self.undo.commits()
    }

    fn synced_through(&mut self, commit: u64) {
        self.undo.synced_through(commit);
    }

    fn rollback(&mut self) -> Result<Vec<Undone>, StoreError> {
        let commits = self.undo.take_all();
        let mut records: BTreeMap<Vec<u8>, Option<KeyState>> = BTreeMap::new();
        for (key, _) in commits.iter().flat_map(|c| &c.entries) {
            if key.first() == Some(&RECORD_PREFIX) && !records.contains_key(key) {
                let before = match StoreKey::decode(&key[1..]) {
                    Some(store_key) => read_state(&self.db, &store_key)?,
                    None => None,
                };
                records.insert(key.clone(), before);
            }
        }
        // The log first: once its entries are gone, a crash can no longer redo the commits.
        if let Some(wal) = &mut self.wal {
            let mut starts: BTreeMap<usize, u64> = BTreeMap::new();
            for (log, offset) in commits.iter().filter_map(|c| c.log_mark) {
                let start = starts.entry(log).or_insert(offset);
                *start = (*start).min(offset);
            }
            for (log, offset) in starts {
                wal.truncate(log, offset)?;
            }
        }
        for (key, old) in commits.iter().rev().flat_map(|c| c.entries.iter().rev()) {
            // Key lists are not undone: a row may still name an undone key (the key's pending
            // entry, set from its restored record below, overrides it), but never lacks a key
            // that has a record, other than those the log names (a repair after a crash reads
            // the records of a row's keys, and of the keys the log names).
            if key.first() == Some(&KEY_LIST_PREFIX) {
                continue;
            }
            match old {
                Some(value) => self.db.insert(key.as_slice(), value.clone())?,
                None => self.db.remove(key.as_slice())?,
            };
        }
        flush_and_sync(&self.db, &self.dir)?;
        self.meta = match self.db.get(META_KEY)? {
            Some(bytes) => record::from_bytes(&bytes)?,
            None => Meta::default(),
        };
        self.collected_through = read_horizon(&self.db)?;
        self.clustered = self.db.get(CLUSTERED_KEY)?.is_some();
        self.roster = read_roster(&self.db)?;
        self.member_addrs = read_member_addrs(&self.db)?;
        self.forgotten = read_forgotten(&self.db)?;
        let mut undone = Vec::new();
        // The key lists of the undone keys' leaves are written at once, durably: their rows were
        // not undone, and the log, truncated, no longer names those keys for a repair.
        let mut touched = BTreeSet::new();
        for (tree_key, before) in records {
            let Some(key) = StoreKey::decode(&tree_key[1..]) else {
                continue;
            };
            touched.insert(merkle::bucket_of(&key));
            let after = read_state(&self.db, &key)?;
            let hash = after
                .as_ref()
                .map(|state| prefix8(&merkle::item_hash(&key, state)));
            self.pending_keys.note(&key, hash);
            if before != after {
                undone.push(Undone { key, before, after });
            }
        }
        self.write_key_lists(&touched)?;
        flush_and_sync(&self.db, &self.dir)?;
        Ok(undone)
    }

    fn acknowledges_before_sync(&self) -> bool {
        self.durability != Durability::Fsync
    }

    fn free_bytes(&self) -> Option<u64> {
        free_bytes(&self.dir).ok()
    }

    fn wants_checkpoint(&self) -> bool {
        !self.checkpointing
            && self
                .wal
                .as_ref()
                .is_some_and(|w| w.len() > CHECKPOINT_BYTES)
    }

    fn begin_checkpoint(&mut self) -> Result<Option<CheckpointWork>, StoreError> {
        let Some(wal) = &mut self.wal else {
            return Ok(None);
        };
        if self.checkpointing {
            return Ok(None);
        }
        let Some(retired) = wal.rotate()? else {
            return Ok(None);
        };
        self.checkpointing = true;
        let (db, dir) = (self.db.clone(), self.dir.clone());
        Ok(Some(CheckpointWork::new(move || {
            flush_and_sync(&db, &dir)?;
            retired.clear()?;
            Ok(())
        })))
    }

    fn checkpoint_done(&mut self, completed: bool) {
        self.checkpointing = false;
        if completed {
            if let Some(wal) = &mut self.wal {
                wal.spare_cleared();
            }
        }
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        flush_and_sync(&self.db, &self.dir)?;
        if let Some(wal) = &mut self.wal {
            wal.clear_all()?;
        }
        Ok(())
    }
}

/// Makes everything the database holds durable: sled's flush stops at the page cache on some
/// kernels and drives, so `syncfs` then pushes the whole file system (sled's files included) to
/// stable storage.
fn flush_and_sync(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    db.flush()?;
    sync_file_system(dir)
}

impl SledStore {
    /// Leaf `leaf`'s key list: its row with the pending changes applied.
    fn key_list(&self, leaf: u16) -> Result<key_lists::KeyList, StoreError> {
        let row = match self.db.get(key_lists::row_key(leaf))? {
            Some(row) => key_lists::decode(&row)?,
            None => key_lists::KeyList::new(),
        };
        Ok(self.pending_keys.apply_to(leaf, row))
    }

    /// Leaf `leaf`'s key list row with its pending changes: the row's key and its new value
    /// (`None`: the leaf holds no key, the row goes).
    fn key_list_row(&self, leaf: u16) -> Result<([u8; 3], Option<Vec<u8>>), StoreError> {
        let list = self.key_list(leaf)?;
        Ok((
            key_lists::row_key(leaf),
            (!list.is_empty()).then(|| key_lists::encode(&list)),
        ))
    }

    /// Writes the key lists of `leaves` with their pending changes, in one batch.
    fn write_key_lists(&mut self, leaves: &BTreeSet<u16>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for &leaf in leaves {
            match self.key_list_row(leaf)? {
                (row_key, Some(list)) => batch.insert(&row_key, list),
                (row_key, None) => batch.remove(&row_key),
            }
        }
        self.db.apply_batch(batch)?;
        self.pending_keys
            .written(&leaves.iter().copied().collect::<Vec<_>>());
        Ok(())
    }

    /// Adds to `tree_batch` the key list rows of `lists` (with their pending changes) and the
    /// rows of `leaves`; notes the lists in `lists_written`.
    fn add_index_rows(
        &self,
        tree_batch: &mut TreeBatch,
        lists: Vec<u16>,
        leaves: Vec<(u16, Leaf)>,
        lists_written: &mut Vec<u16>,
    ) -> Result<(), StoreError> {
        for leaf in lists {
            match self.key_list_row(leaf)? {
                (row_key, Some(list)) => tree_batch.insert(row_key, list),
                (row_key, None) => tree_batch.remove(row_key),
            }
            lists_written.push(leaf);
        }
        for (index, leaf) in leaves {
            if leaf.count == 0 {
                // An empty leaf has no row; most were never written (a rebuild of an empty
                // index names all 65,536).
                if self.db.contains_key(leaf_key(index))? {
                    tree_batch.remove(leaf_key(index));
                }
            } else {
                tree_batch.insert(leaf_key(index), record::to_bytes(&leaf));
            }
        }
        Ok(())
    }

    /// Applies `tree_batch` atomically, remembering what each key held for a rollback.
    fn apply_recorded(&mut self, tree_batch: TreeBatch) -> Result<(), StoreError> {
        let mut old = Vec::with_capacity(tree_batch.keys.len());
        for (key, known) in tree_batch.keys {
            let before = match known {
                Some(before) => before,
                None => self.db.get(&key)?,
            };
            old.push((key, before));
        }
        self.db.apply_batch(tree_batch.batch)?;
        for (key, value) in old {
            self.undo.record(key, value);
        }
        Ok(())
    }

    /// The database part of [`Store::apply`]: one atomic sled batch, except for the common case
    /// of one record alone.
    fn apply_to_tree(
        &mut self,
        batch: &WriteBatch,
        leaves_at: Option<LogPosition>,
    ) -> Result<(), StoreError> {
        // The common case, one record alone: plain inserts are much cheaper than a batch. They
        // are not atomic together, but the persisted Merkle index is already marked stale by
        // then (see `WriteBatch::leaves_complete`), so a crash between them leads to a rebuild
        // of the index and of the key hashes from the records.
        if batch.records.len() <= 1
            && batch
                .records
                .iter()
                .all(|(_, state)| !matches!(state, KeyState::Set(_)))
            && batch.sets.is_empty()
            && batch.key_hashes.len() <= 1
            && batch.leaves.is_empty()
            && batch.leaves_complete.is_none()
            && !batch.flush_key_index
            && !batch.key_index_reset
            && batch.meta.is_none()
            && batch.removals.is_empty()
            && batch.tombstones.is_empty()
            && batch.collected_through.is_none()
            && !batch.clustered
            && batch.roster.is_none()
            && batch.member_addrs.is_none()
            && batch.forgotten.is_none()
        {
            for (key, state) in &batch.records {
                let tree_key = record_key(key);
                let old = self
                    .db
                    .insert(tree_key.as_slice(), record::encode_record(state))?;
                self.undo.record(tree_key, old);
            }
            for (key, hash) in &batch.key_hashes {
                self.pending_keys.note(key, Some(prefix8(hash)));
            }
            return Ok(());
        }
        let mut tree_batch = TreeBatch::default();
        if let Some(horizon) = batch.collected_through {
            tree_batch.insert(COLLECTED_KEY, &horizon.raw().to_be_bytes());
        }
        if batch.clustered {
            tree_batch.insert(CLUSTERED_KEY, b"1");
        }
        if let Some(addrs) = &batch.member_addrs {
            tree_batch.insert(MEMBER_ADDRS_KEY, record::to_bytes(addrs));
        }
        if let Some(roster) = &batch.roster {
            tree_batch.insert(ROSTER_KEY, record::to_bytes(roster));
        }
        if let Some(forgotten) = &batch.forgotten {
            tree_batch.insert(FORGOTTEN_KEY, record::to_bytes(forgotten));
        }
        for (key, _) in &batch.removals {
            if key.space == Keyspace::Sets {
                set_rows::remove_all(&self.db, &mut tree_batch, key)?;
            }
            tree_batch.remove(record_key(key));
            tree_batch.remove(tombstone_key(key));
        }
        for (key, from) in &batch.tombstones {
            match from {
                Some(ts) => tree_batch.insert(tombstone_key(key), &ts.raw().to_be_bytes()),
                None => tree_batch.remove(tombstone_key(key)),
            }
        }
        for (key, state) in &batch.records {
            match state {
                KeyState::Set(set) => set_rows::replace(&self.db, &mut tree_batch, key, set)?,
                KeyState::Register(_) | KeyState::Counter(_) => {
                    tree_batch.insert(record_key(key), record::encode_record(state))
                }
            }
        }
        for write in &batch.sets {
            set_rows::write(&mut tree_batch, write);
        }
        if batch.key_index_reset {
            for row in self.db.scan_prefix([KEY_LIST_PREFIX]).keys() {
                tree_batch.remove(row?);
            }
        }
        // The key lists with the changes pending, written with the leaves (a checkpoint): those of
        // all but the last range of leaves in batches of their own first (see
        // `INDEX_RANGES`), each leaf's row with its list; the last range with the rest.
        let lists: Vec<u16> = if batch.flush_key_index && !batch.key_index_reset {
            self.pending_keys.leaves().collect()
        } else {
            Vec::new()
        };
        let mut lists_written = Vec::new();
        let mut ranges = split_index_rows(&lists, &batch.leaves, batch.key_index_reset);
        let last = ranges.pop().unwrap_or_default();
        for (i, (lists, leaves)) in ranges.into_iter().enumerate() {
            let mut part = TreeBatch::default();
            if i == 0 {
                // Until the last range is written, the leaves hold no single log position.
                part.remove(LEAVES_AT_KEY);
            }
            self.add_index_rows(&mut part, lists, leaves, &mut lists_written)?;
            self.apply_recorded(part)?;
        }
        let (lists, leaves) = last;
        self.add_index_rows(&mut tree_batch, lists, leaves, &mut lists_written)?;
        if let Some(at) = leaves_at {
            tree_batch.insert(LEAVES_AT_KEY, &at.to_bytes());
        }
        match batch.leaves_complete {
            Some(true) => tree_batch.insert(MERKLE_COMPLETE_KEY, b"1"),
            Some(false) => tree_batch.remove(MERKLE_COMPLETE_KEY),
            None => {}
        }
        if let Some(meta) = &batch.meta {
            tree_batch.insert(META_KEY, record::to_bytes(meta));
        }
        self.apply_recorded(tree_batch)?;
        // What the store keeps in memory follows the database, never leads it.
        if batch.key_index_reset {
            self.pending_keys.clear();
        }
        self.pending_keys.written(&lists_written);
        for (key, _) in &batch.removals {
            self.pending_keys.note(key, None);
        }
        for (key, hash) in &batch.key_hashes {
            self.pending_keys.note(key, Some(prefix8(hash)));
        }
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
        if let Some(meta) = &batch.meta {
            self.meta = meta.clone();
        }
        Ok(())
    }
}

/// Index rows (key lists and leaves) past this many are written in several batches: sled keeps
/// every intermediate version of the nodes a batch rewrites until the batch ends, so one batch
/// of a checkpoint's ~110,000 rows held about 280 MB at once (the node's resident memory peaked
/// at 650 MB right after 1,000,000 writes).
const INDEX_ROWS_PER_BATCH: usize = 4096;

/// The key lists and leaves to write, split into ranges of leaf indexes of about
/// [`INDEX_ROWS_PER_BATCH`] rows (one range when they are fewer, or for a `whole` rebuild):
/// each leaf's list goes with its row. Never empty.
type IndexRange = (Vec<u16>, Vec<(u16, Leaf)>);
fn split_index_rows(lists: &[u16], leaves: &[(u16, Leaf)], whole: bool) -> Vec<IndexRange> {
    let rows = lists.len() + leaves.len();
    if whole || rows <= INDEX_ROWS_PER_BATCH {
        return vec![(lists.to_vec(), leaves.to_vec())];
    }
    let count = rows.div_ceil(INDEX_ROWS_PER_BATCH);
    let width = (merkle::LEAVES).div_ceil(count);
    let mut ranges: Vec<IndexRange> = vec![Default::default(); count];
    for &leaf in lists {
        ranges[leaf as usize / width].0.push(leaf);
    }
    for &(index, leaf) in leaves {
        ranges[index as usize / width].1.push((index, leaf));
    }
    ranges.retain(|(lists, leaves)| !lists.is_empty() || !leaves.is_empty());
    if ranges.is_empty() {
        ranges.push(Default::default());
    }
    ranges
}

/// Bytes available to this process on the file system holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills the zeroed struct it is given from a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    Ok(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

fn sync_file_system(dir: &Path) -> Result<(), StoreError> {
    let handle = std::fs::File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open for the call.
    let rc = unsafe { libc::syncfs(handle.as_raw_fd()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::NodeId;
    use crate::crdt::{LwwRegister, Value};
    use crate::store::LoggedDeltaRef;

    fn register(ts: u64, v: &str) -> KeyState {
        KeyState::Register(LwwRegister::write(
            Timestamp::from_raw(ts),
            NodeId::new("n1").unwrap(),
            Some(Value {
                content_type: "text/plain".into(),
                data: v.as_bytes().to_vec(),
            }),
        ))
    }

    fn write(store: &mut SledStore, key: &str, state: KeyState) {
        write_after(store, key, state, None);
    }

    /// [`write`] of a key whose item hash was `prior`.
    fn write_after(store: &mut SledStore, key: &str, state: KeyState, prior: Option<[u8; 32]>) {
        let key = StoreKey::kv(key);
        let delta = LoggedDeltaRef {
            key: &key,
            delta: &state,
            hlc: Timestamp::ZERO,
            origin_seq: None,
        }
        .encode(prior.as_ref());
        store
            .apply(WriteBatch {
                records: vec![(key.clone(), state)],
                key_hashes: vec![(key, [7; 32])],
                deltas: vec![delta],
                ..WriteBatch::default()
            })
            .unwrap();
    }

    #[test]
    fn removals_are_logged_so_that_a_restart_repairs_their_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStore::open(dir.path(), Durability::Fsync).unwrap();
        write(&mut store, "a", register(1, "kept"));
        store.checkpoint().unwrap();
        store
            .apply(WriteBatch {
                removals: vec![(StoreKey::kv("a"), Some([1; 32]))],
                ..WriteBatch::default()
            })
            .unwrap();
        store.commit().unwrap().complete().unwrap();
        drop(store);
        let mut reopened = SledStore::open(dir.path(), Durability::Fsync).unwrap();
        assert!(reopened.take_replay().is_empty());
        assert_eq!(reopened.take_replayed_removals(), [StoreKey::kv("a")]);
        assert!(reopened.repairs_index_from_log());
        // No leaves were persisted: nothing is known of what they hold.
        assert_eq!(
            reopened.take_priors().into_iter().collect::<Vec<_>>(),
            [(StoreKey::kv("a"), Prior::Unknown)]
        );
    }

    #[test]
    fn many_index_rows_are_split_by_leaf_range_with_each_list_beside_its_leaf() {
        let lists: Vec<u16> = (0..=u16::MAX).step_by(8).collect();
        let leaves: Vec<(u16, Leaf)> = lists.iter().map(|&i| (i, Leaf::default())).collect();
        assert_eq!(
            split_index_rows(&lists[..10], &leaves[..10], false).len(),
            1
        );
        assert_eq!(split_index_rows(&lists, &leaves, true).len(), 1);
        let ranges = split_index_rows(&lists, &leaves, false);
        assert_eq!(ranges.len(), 4);
        let mut seen: Vec<u16> = Vec::new();
        for (lists, leaves) in &ranges {
            assert!(lists.len() + leaves.len() <= INDEX_ROWS_PER_BATCH);
            assert_eq!(lists, &leaves.iter().map(|(i, _)| *i).collect::<Vec<_>>());
            seen.extend(lists.iter().copied());
        }
        assert_eq!(seen, lists);
        assert_eq!(split_index_rows(&[], &[], false).len(), 1);
    }

    #[test]
    fn priors_say_what_the_persisted_leaves_hold_for_each_key_logged_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStore::open(dir.path(), Durability::Fsync).unwrap();
        write_after(&mut store, "before", register(1, "x"), None);
        write_after(&mut store, "both", register(2, "x"), None);
        store.commit().unwrap().complete().unwrap();
        // The leaves are persisted here: they hold both keys' first writes.
        store
            .apply(WriteBatch {
                leaves: vec![(0, Leaf::default())],
                leaves_complete: Some(true),
                flush_key_index: true,
                ..WriteBatch::default()
            })
            .unwrap();
        write_after(&mut store, "both", register(3, "y"), Some([2; 32]));
        write_after(&mut store, "both", register(4, "z"), Some([3; 32]));
        write_after(&mut store, "after", register(5, "x"), None);
        store
            .apply(WriteBatch {
                removals: vec![(StoreKey::kv("gone"), Some([9; 32]))],
                ..WriteBatch::default()
            })
            .unwrap();
        store.commit().unwrap().complete().unwrap();
        drop(store);
        let mut reopened = SledStore::open(dir.path(), Durability::Fsync).unwrap();
        assert_eq!(reopened.take_replay().len(), 5);
        assert_eq!(
            reopened.take_priors().into_iter().collect::<Vec<_>>(),
            [
                (StoreKey::kv("after"), Prior::Known(None)),
                (StoreKey::kv("both"), Prior::Known(Some([2; 32]))),
                (StoreKey::kv("gone"), Prior::Known(Some([9; 32]))),
            ]
        );
    }

    #[test]
    fn a_rollback_undoes_the_database_and_the_log_back_to_the_last_synced_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStore::open(dir.path(), Durability::Fsync).unwrap();
        write(&mut store, "a", register(1, "kept"));
        store.commit().unwrap().complete().unwrap();
        store.synced_through(store.commits());
        // Not known to be synced: an overwrite, a new key, a horizon and a removal.
        write(&mut store, "a", register(2, "undone"));
        let _in_flight = store.commit().unwrap();
        write(&mut store, "b", register(3, "undone"));
        store
            .apply(WriteBatch {
                collected_through: Some(Timestamp::from_raw(9)),
                removals: vec![(StoreKey::kv("zzz"), None)],
                ..WriteBatch::default()
            })
            .unwrap();
        let undone = store.rollback().unwrap();
        let mut keys: Vec<(String, bool)> = undone
            .iter()
            .map(|u| (u.key.name.clone(), u.after.is_some()))
            .collect();
        keys.sort();
        assert_eq!(keys, [("a".into(), true), ("b".into(), false)]);
        assert_eq!(
            store.get(&StoreKey::kv("a")).unwrap(),
            Some(register(1, "kept"))
        );
        assert_eq!(store.get(&StoreKey::kv("b")).unwrap(), None);
        assert_eq!(store.collected_through(), Timestamp::ZERO);
        assert_eq!(
            store
                .leaf_keys(merkle::bucket_of(&StoreKey::kv("b")))
                .unwrap(),
            []
        );
        // The log no longer holds the undone deltas; later ones follow the kept one.
        write(&mut store, "c", register(4, "later"));
        store.commit().unwrap().complete().unwrap();
        drop(store);
        let mut reopened = SledStore::open(dir.path(), Durability::Fsync).unwrap();
        let replayed: Vec<String> = reopened
            .take_replay()
            .into_iter()
            .map(|d| d.key.name)
            .collect();
        assert_eq!(replayed, ["a", "c"]);
    }
}
