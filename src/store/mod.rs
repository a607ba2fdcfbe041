//! Persistence behind a trait: [`SledStore`] (sled 0.34 plus a write-ahead log) in production,
//! [`MemoryStore`] in the simulator and in unit tests.
//!
//! A store keeps one record per key (a register's whole state, in a versioned encoding; a set's
//! header, its elements being readable one by one: [`StoredSet`]), the leaves of the Merkle
//! index, and node metadata. It makes no protocol decisions: the core ([`crate::node`]) decides
//! what to write and hands it over as one atomic [`WriteBatch`].

pub mod backup_file;
mod compact;
mod key_lists;
mod legacy;
mod log_entry;
mod logs;
mod memory;
pub mod merkle;
pub mod migrate;
pub mod record;
mod set_header;
mod set_rows;
mod sled_store;
mod stored_set;
mod undo;
mod wal;

pub use compact::{compact, dir_bytes, Compaction};
pub use log_entry::{LogEntry, LoggedDelta, LoggedDeltaRef, Prior};
pub use memory::{MemoryStore, MemorySync};
pub use merkle::{Leaf, MerkleIndex};
pub use set_header::SetHeader;
pub use sled_store::{SledStore, DEFAULT_CACHE_BYTES};
pub use stored_set::StoredSet;

use crate::clock::{Dot, NodeId, ReplicaId, Timestamp, VersionVector};
use crate::crdt::{ElementChange, KeyState};
use core::net::SocketAddr;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Which keyspace a key belongs to; the same name in two keyspaces is two keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Keyspace {
    Kv,
    Sets,
    Counters,
}

impl Keyspace {
    fn tag(self) -> u8 {
        match self {
            Keyspace::Kv => b'k',
            Keyspace::Sets => b's',
            Keyspace::Counters => b'c',
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            b'k' => Some(Keyspace::Kv),
            b's' => Some(Keyspace::Sets),
            b'c' => Some(Keyspace::Counters),
            _ => None,
        }
    }
}

/// A key with its keyspace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StoreKey {
    pub space: Keyspace,
    pub name: String,
}

impl StoreKey {
    pub fn kv(name: impl Into<String>) -> Self {
        StoreKey {
            space: Keyspace::Kv,
            name: name.into(),
        }
    }

    pub fn set(name: impl Into<String>) -> Self {
        StoreKey {
            space: Keyspace::Sets,
            name: name.into(),
        }
    }

    pub fn counter(name: impl Into<String>) -> Self {
        StoreKey {
            space: Keyspace::Counters,
            name: name.into(),
        }
    }

    /// Whether `state` is of the kind this key's keyspace holds: a register under `/v1/kv`, a
    /// set under `/v1/sets`. Anything else can only come from a corrupt or lying peer.
    pub fn holds(&self, state: &KeyState) -> bool {
        matches!(
            (self.space, state),
            (Keyspace::Kv, KeyState::Register(_))
                | (Keyspace::Sets, KeyState::Set(_))
                | (Keyspace::Counters, KeyState::Counter(_))
        )
    }

    /// The byte form used as the storage key and hashed by the Merkle index: keyspace tag, then
    /// the UTF-8 name. Sorting these bytes sorts keys by name within a keyspace.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.name.len());
        out.push(self.space.tag());
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&tag, name) = bytes.split_first()?;
        Some(StoreKey {
            space: Keyspace::from_tag(tag)?,
            name: String::from_utf8(name.to_vec()).ok()?,
        })
    }
}

/// Node metadata, persisted once per group commit (the write-ahead log restores what a crash
/// loses of it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The node id this data directory belongs to (set on first start).
    pub node_id: Option<NodeId>,
    /// The greatest HLC timestamp issued or observed: the clock restarts above it.
    pub hlc: Timestamp,
    /// Per origin replica, the highest delta sequence number merged here (this node's own entry
    /// is its last local write).
    pub seen: VersionVector,
    /// This node's last membership incarnation: a restart continues above it, so the node can
    /// refute verdicts made about its previous run.
    pub incarnation: u64,
    /// The storage epoch of this data directory: with the node id, its replica identity. Chosen
    /// at random (never 0) when the directory is created; 0 for a directory that predates epochs.
    pub epoch: u64,
    /// The greatest stable timestamp this node ever reported (see `node/tombstones.rs`): a
    /// collection horizon above it means collections happened without this node.
    pub stable_reported: Timestamp,
    /// Retired (always zero): kept so that the layout does not change.
    pub forgettable_through: Timestamp,
    /// The node stopped cleanly (everything it had was made durable); false while it runs.
    pub closed_cleanly: bool,
}

/// A change to some elements of one set, as the core planned it against the stored set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetWrite {
    pub key: StoreKey,
    /// The set's header after the change.
    pub header: SetHeader,
    /// Each element whose dots change, with its dots before and after.
    pub elements: BTreeMap<String, ElementChange>,
}

/// Everything one step of the core writes, applied atomically.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// New whole states of changed keys (a set's replaces every element it had).
    pub records: Vec<(StoreKey, KeyState)>,
    /// Changes to some elements of sets.
    pub sets: Vec<SetWrite>,
    /// The deltas that produced them, encoded as [`LoggedDelta`]s for the write-ahead log
    /// (replaying merges is idempotent).
    pub deltas: Vec<Vec<u8>>,
    /// Each changed key's item hash, for the per-leaf key index that anti-entropy reads
    /// ([`Store::leaf_keys`]) and that repairs the Merkle leaves after a crash.
    pub key_hashes: Vec<(StoreKey, [u8; 32])>,
    /// Merkle leaves to persist.
    pub leaves: Vec<(u16, Leaf)>,
    /// `Some(true)`: the persisted leaves now cover every record; `Some(false)`: they no longer
    /// do (records change ahead of them). Applied atomically with the records.
    pub leaves_complete: Option<bool>,
    /// Write the per-leaf key index changed since it was last written, with the leaves.
    pub flush_key_index: bool,
    /// Drop the whole per-leaf key index first (a rebuild from the records follows).
    pub key_index_reset: bool,
    pub meta: Option<Meta>,
    /// Keys whose records (and key-index and tombstone-index entries) are deleted: collected
    /// tombstones and forgotten values; each with its item hash before the removal (`None`: no
    /// record), which the write-ahead log keeps ([`Prior`]).
    pub removals: Vec<(StoreKey, Option<[u8; 32]>)>,
    /// Changes to the tombstone index ([`Store::tombstones`]): per key, the timestamp from which
    /// its record is a tombstone (a delete, or a value's expiry), or `None` once it no longer
    /// is one. Only keys whose answer changed are named.
    pub tombstones: Vec<(StoreKey, Option<Timestamp>)>,
    /// The new collection horizon ([`Store::collected_through`]), applied before the removals.
    pub collected_through: Option<Timestamp>,
    /// Records that this data directory has been part of a cluster ([`Store::clustered`]).
    pub clustered: bool,
    /// The other members this node knows of now ([`Store::roster`]), replacing the previous list.
    pub roster: Option<Vec<NodeId>>,
    /// The cluster addresses of those members ([`Store::member_addrs`]), replacing the previous
    /// list.
    pub member_addrs: Option<Vec<(NodeId, SocketAddr)>>,
    /// The values this node forgot on a peer's word ([`Store::forgotten`]), replacing the
    /// previous list; applied atomically with the removals.
    pub forgotten: Option<Vec<(StoreKey, Timestamp)>>,
}

/// What is left to do, after [`Store::commit`], before the committed writes are durable. A driver
/// does it off the core's thread, overlapping the sync with the next group's work.
#[must_use = "the writes are not durable until the pending sync completes"]
pub enum PendingSync {
    /// Nothing: the writes are as durable as the durability mode promises.
    Done,
    /// `fdatasync` this file (a write-ahead log, already written) before acknowledging.
    Log(std::sync::Arc<std::fs::File>),
    /// Acknowledge now, and `fdatasync` this file within a few milliseconds (`batch`
    /// durability).
    Soon(std::sync::Arc<std::fs::File>),
    /// The memory store's modelled sync (see [`MemoryStore::with_crashes`]).
    Memory(MemorySync),
}

impl PendingSync {
    /// Blocks until the committed writes are as durable as the mode promises before an
    /// acknowledgement (a `Soon` sync is left to the caller's timer).
    pub fn complete(self) -> Result<(), StoreError> {
        match self {
            PendingSync::Done | PendingSync::Soon(_) => Ok(()),
            PendingSync::Log(file) => Ok(file.sync_data()?),
            PendingSync::Memory(sync) => sync.complete(),
        }
    }
}

/// The slow part of a checkpoint (flushing the database, syncing the file system, clearing the
/// retired log), to run off the core's thread; report its outcome with
/// [`Store::checkpoint_done`].
pub struct CheckpointWork(Box<dyn FnOnce() -> Result<(), StoreError> + Send>);

impl CheckpointWork {
    pub fn new(work: impl FnOnce() -> Result<(), StoreError> + Send + 'static) -> Self {
        CheckpointWork(Box::new(work))
    }

    pub fn run(self) -> Result<(), StoreError> {
        (self.0)()
    }
}

/// A record changed by [`Store::rollback`]: its state before the undo, and after it (`None`:
/// absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undone {
    pub key: StoreKey,
    pub before: Option<KeyState>,
    pub after: Option<KeyState>,
}

/// How hard a store works to keep acknowledged writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// A write is acknowledged once its log entry is `fdatasync`ed; concurrent writes share one
    /// sync (group commit). Survives `kill -9`, OS crashes and power loss.
    #[default]
    Fsync,
    /// The log is written before acknowledging and synced every few milliseconds: survives
    /// `kill -9`; an OS crash or power loss may lose the last few milliseconds.
    Batch,
    /// No log: sled flushes on its own every 500 ms. `kill -9` may lose the last half second.
    None,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "batch" => Ok(Durability::Batch),
            "none" => Ok(Durability::None),
            other => Err(format!(
                "unknown durability {other:?}: expected fsync, batch or none"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use data directory {dir}: {cause}")]
    Unwritable { dir: PathBuf, cause: std::io::Error },
    #[error("data directory {dir} is in use by another hearsay process")]
    InUse { dir: PathBuf },
    #[error(
        "cannot open the database in {dir}: {reason}. To recover, run the same command with \
         --recover: the damaged directory is moved aside and the node resyncs from its peers"
    )]
    Damaged { dir: PathBuf, reason: String },
    #[error(
        "data directory {dir} was written by a newer hearsay (layout {found}; this build reads up \
         to layout {supported}); upgrade hearsay"
    )]
    NewerLayout {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("storage I/O failed: {0}")]
    Io(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// The encoded-key bounds of a listing of `space` by `prefix`, strictly after `after`: the
/// prefix every listed key has, and where the scan starts (both stores list the same way).
fn listing_bounds(space: Keyspace, prefix: &str, after: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let encode = |name: &str| {
        StoreKey {
            space,
            name: name.to_string(),
        }
        .encode()
    };
    let start = encode(prefix);
    let from = after.map_or(start.clone(), |a| encode(a).max(start.clone()));
    (start, from)
}

/// One page of a key listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Read access that HTTP handlers use concurrently with the core's writes. Reads see every
/// acknowledged write (a batch is applied before it is acknowledged).
pub trait StoreRead: Send + Sync {
    fn get(&self, key: &StoreKey) -> Result<Option<KeyState>, StoreError>;
    /// Live keys of `space` starting with `prefix`, sorted, strictly after `after`, at most
    /// `limit`, as a read at wall time `now_ms` sees them (expired values are not live).
    fn list_live(
        &self,
        space: Keyspace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<KeyPage, StoreError>;
    /// Whether set `key` holds `element`; `None` when the set was never written. Reads that
    /// element alone.
    fn set_contains(&self, key: &StoreKey, element: &str) -> Result<Option<bool>, StoreError>;
    /// Bytes the store occupies on disk (0 for memory).
    fn size_on_disk(&self) -> u64;
}

/// The write side, owned by the core.
pub trait Store: Send + 'static {
    fn reader(&self) -> Arc<dyn StoreRead>;
    fn meta(&self) -> &Meta;
    /// The greatest timestamp of any tombstone this store has collected ([`Timestamp::ZERO`]
    /// when none): a register this old or older for a key the store lacks may be a deleted value
    /// coming back, so the core refuses it.
    fn collected_through(&self) -> Timestamp;
    /// Whether this data directory's node ever met another member. A node that did and knows no
    /// member after a restart has not rejoined yet; it is not alone, so it must not collect
    /// tombstones as if it were.
    fn clustered(&self) -> bool;
    /// The other members this node knew of when it last recorded them (empty if it never did):
    /// after a restart, until it hears of them again, they are members it must not collect
    /// tombstones without.
    fn roster(&self) -> Vec<NodeId>;
    /// The cluster addresses of the members in [`Store::roster`] when it was last recorded (empty
    /// if never): a node started without seeds rejoins them.
    fn member_addrs(&self) -> Vec<(NodeId, SocketAddr)>;
    /// Per key, the newest value this node forgot because a peer had collected a newer
    /// tombstone (empty if none): such a value is refused again, from whichever peer still
    /// holds it, until this node's own horizon covers it.
    fn forgotten(&self) -> Vec<(StoreKey, Timestamp)>;
    fn get(&self, key: &StoreKey) -> Result<Option<KeyState>, StoreError>;
    /// The header of set `key`; `None` for a set never written.
    fn set_header(&self, key: &StoreKey) -> Result<Option<SetHeader>, StoreError>;
    /// The dots of `element` in set `key` (empty when absent).
    fn set_dots(&self, key: &StoreKey, element: &str) -> Result<BTreeSet<Dot>, StoreError>;
    /// Calls `found` with (dot, element) for each dot of `actor` numbered `first..=last` that an
    /// element of set `key` holds, in dot order.
    fn set_holding(
        &self,
        key: &StoreKey,
        actor: &ReplicaId,
        first: u64,
        last: u64,
        found: &mut dyn FnMut(Dot, &str),
    ) -> Result<(), StoreError>;
    /// The keys of Merkle leaf `leaf`, with the first 8 bytes of their item hashes.
    fn leaf_keys(&self, leaf: u16) -> Result<Vec<(StoreKey, [u8; 8])>, StoreError>;
    /// The item hash ([`merkle::item_hash`]) of what the store holds for `key` (a set's from its
    /// header alone), `None` when it holds nothing.
    fn item_hash(&self, key: &StoreKey) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(match key.space {
            Keyspace::Sets => self
                .set_header(key)?
                .map(|header| merkle::set_item_hash(key, &header)),
            Keyspace::Kv | Keyspace::Counters => {
                self.get(key)?.map(|state| merkle::item_hash(key, &state))
            }
        })
    }
    /// The persisted Merkle leaves, or `None` when they are missing and must be rebuilt.
    fn load_leaves(&self) -> Result<Option<Vec<Leaf>>, StoreError>;
    /// The keys whose records are tombstones (deletes, or values written with an expiry), with
    /// the timestamp from which each is one: read at start-up from an index, without decoding
    /// any record.
    fn tombstones(&self) -> Result<Vec<(StoreKey, Timestamp)>, StoreError>;
    /// Visits every record (for rebuilding the Merkle index).
    fn for_each_record(
        &self,
        f: &mut dyn FnMut(StoreKey, KeyState) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Deltas logged but possibly not in the database at the last stop; the core merges them at
    /// start-up and then calls [`Store::checkpoint`].
    fn take_replay(&mut self) -> Vec<LoggedDelta>;
    /// Keys whose removal was logged since the last checkpoint (see [`Store::take_replay`]).
    fn take_replayed_removals(&mut self) -> Vec<StoreKey> {
        Vec::new()
    }
    /// Per key the log names after the point at which the persisted Merkle leaves were written,
    /// what its first entry from there says its item hash was: what those leaves hold for it.
    /// Keys the log names only before that point are absent (the leaves hold their logged
    /// changes). See [`Store::take_replay`].
    fn take_priors(&mut self) -> BTreeMap<StoreKey, Prior> {
        BTreeMap::new()
    }
    /// Whether the persisted Merkle leaves stay valid after a crash, to be repaired where the
    /// log's entries (deltas and removals) name keys: every change to a record is logged before
    /// the database takes it. Otherwise a change marks them stale
    /// ([`WriteBatch::leaves_complete`]) and a crash rebuilds them from every record.
    fn repairs_index_from_log(&self) -> bool {
        false
    }
    /// Applies a batch atomically; visible to readers at once, durable after [`Store::commit`].
    fn apply(&mut self, batch: WriteBatch) -> Result<(), StoreError>;
    /// Starts making every applied batch as durable as the durability mode promises; they are
    /// once the returned [`PendingSync`] completes. One call covers any number of batches
    /// (group commit). Commits are numbered 1, 2, ... ([`Store::commits`]).
    fn commit(&mut self) -> Result<PendingSync, StoreError>;
    /// How many commits this store has made since it was opened: the number of the last one.
    fn commits(&self) -> u64;
    /// The syncs of every commit up to number `commit` completed: they can no longer be rolled
    /// back.
    fn synced_through(&mut self, commit: u64);
    /// Undoes every batch applied since the last commit whose sync completed (a sync failed),
    /// durably: the database and the log then hold what they held at that commit. Returns each
    /// record it changed, with its state before and after the undo.
    fn rollback(&mut self) -> Result<Vec<Undone>, StoreError>;
    /// Whether writes are acknowledged, and sent to peers, before they are durable (`batch` and
    /// `none` durability): a crash may then lose what peers already hold.
    fn acknowledges_before_sync(&self) -> bool;
    /// Free bytes on the file system holding the data (`None`: not on a disk).
    fn free_bytes(&self) -> Option<u64>;
    /// True when the log has grown enough that a checkpoint should retire it (and none is under
    /// way).
    fn wants_checkpoint(&self) -> bool;
    /// Starts a checkpoint without waiting for it: later log entries go to a fresh log, and the
    /// returned work (run off the core's thread) makes the database durable and clears the
    /// retired log. `None` when there is nothing to do or a checkpoint is under way.
    fn begin_checkpoint(&mut self) -> Result<Option<CheckpointWork>, StoreError>;
    /// The work of the last [`Store::begin_checkpoint`] finished (`completed`: successfully).
    fn checkpoint_done(&mut self, completed: bool);
    /// Flushes the database to disk and empties the logs, in place (start-up and shutdown).
    fn checkpoint(&mut self) -> Result<(), StoreError>;
}
