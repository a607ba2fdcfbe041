//! The core state machine of one node: it turns client writes and remote deltas into merged
//! states, Merkle updates and store batches. Time comes in as an argument (`wall_ms`), never from
//! a clock (timers run on it with steps back absorbed, see `timer_clock.rs`); the store is any
//! [`Store`], so the simulator drives this very code with memory stores.
//!
//! Never touches sockets, threads or the wall clock; never decides when to sync (the driver calls
//! [`Node::commit`] once per group of writes before acknowledging them).

use crate::clock::{ClockAhead, Hlc, NodeId, ReplicaId, Timestamp};
use crate::crdt::{set_merge, KeyState, LwwRegister, OrSet, PnCounter, Value};
use crate::store::{
    merkle, CheckpointWork, Leaf, MerkleIndex, Meta, PendingSync, Store, StoreError, StoreKey,
    StoredSet, WriteBatch,
};
use crate::wire::MAX_STATE_BYTES;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod anti_entropy;
mod backup;
mod changes;
mod clock_watch;
mod cluster;
mod cluster_view;
mod collection;
mod conflicts;
mod disk_watch;
mod heal;
mod index_repair;
mod merge;
mod outbox;
mod peer_input;
mod precondition;
mod quorum;
mod replication_lag;
mod roster;
mod timer_clock;
mod tombstones;

pub use backup::BACKUP_LEAVES_PER_CHUNK;
pub use changes::KeyChange;
pub use clock_watch::ClockStatus;
pub use cluster::{ClusterConfig, ClusterStats, Outbound};
pub use cluster_view::ClusterView;
pub use conflicts::Overwritten;
pub use heal::HealReport;
pub use index_repair::LeafRepair;
pub use precondition::{EtagCondition, Precondition};
pub use quorum::{Level, Tally, Wait, WaitOutcome, WaitStats, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS};
pub use replication_lag::{ReplicationLag, LAG_BOUNDS_MS};
pub use tombstones::TombstoneConfig;

/// What merging a state into this node did.
#[must_use = "a refused state must not be acknowledged or counted as merged"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// The node already held everything the state carries.
    Unchanged,
    /// The state was not merged, and why: nothing changed.
    Refused(Refusal),
}

/// Why a state was not merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Of the wrong kind for its keyspace (a set under a kv key): a corrupt or lying peer.
    WrongKind,
    /// A register for a key this node lacks, no newer than a tombstone it has collected: it may
    /// be a deleted value coming back.
    Collected,
    /// Stamped too far ahead of this node's wall clock (`--max-clock-skew-ms`).
    ClockSkew(ClockAhead),
    /// This node's disk is below its free-space reserve: peers' states wait (anti-entropy
    /// brings them once there is room).
    DiskFull,
    /// A local write whose state would be `bytes` encoded, over [`MAX_STATE_BYTES`]: it could
    /// never replicate.
    TooLarge { bytes: usize },
}

/// Where a state to merge comes from, which decides what is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A client's write on this node, stamped by its own clock.
    Local,
    /// This node's own write-ahead log, redone at start-up.
    Replay,
    /// A peer, received at this node's wall time `now_ms`.
    Peer { now_ms: u64 },
}

/// A client's write, validated by the API layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    KvPut {
        key: String,
        value: Value,
        /// The value expires this long after the write's timestamp (`PUT ?ttl=`).
        ttl_ms: Option<u64>,
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
    /// Removes every element this node has observed (an add it has not seen survives).
    SetClear {
        key: String,
    },
    /// Adds `amount` (negative: subtracts) to a counter.
    CounterAdd {
        key: String,
        amount: i64,
    },
}

impl Write {
    /// A put of `text` under `key`, as `text/plain` (tools and tests).
    pub fn put_text(key: &str, text: &str) -> Write {
        Write::KvPut {
            key: key.into(),
            value: Value {
                content_type: "text/plain".into(),
                data: text.as_bytes().to_vec(),
            },
            ttl_ms: None,
        }
    }
}

/// What a client is told once its write is applied (and, after commit, durable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteAck {
    pub timestamp: Timestamp,
    pub node: NodeId,
    /// How many elements the set holds after a set edit.
    pub size: Option<u64>,
    /// The counter's value on this node after a counter update.
    pub value: Option<i128>,
    /// When the value expires, for a put with a TTL.
    pub expires: Option<Timestamp>,
    /// The write's sequence number among this replica's writes (its rumor's).
    pub seq: u64,
    /// The request whose [`WaitOutcome`] answers the client, when the write waits for other
    /// members to hold it (see [`Node::handle_write_waiting`]).
    pub awaiting: Option<u64>,
    /// Who holds the write, once such a wait ended (the driver fills it in).
    pub replicas: Option<Tally>,
}

/// Why a client's write was not applied (nothing of it stays behind).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This node's clock is out of bounds (its wall clock went back behind timestamps it already
    /// issued): it refuses to stamp writes rather than stamp them in the future.
    #[error("this node's clock is out of bounds: {0}")]
    ClockSkew(ClockAhead),
    /// The data directory's file system is below its free-space reserve: writes wait until
    /// space is freed.
    #[error("the disk is full: {free_bytes} bytes free, below the reserve of {reserve_bytes} (--disk-reserve-mb)")]
    DiskFull { free_bytes: u64, reserve_bytes: u64 },
    /// The key's state would grow over [`MAX_STATE_BYTES`] (a set with too many elements): a
    /// state that large could never travel to another node.
    #[error("the key's state would be {bytes} bytes encoded; the limit is {limit}")]
    TooLarge { bytes: usize, limit: usize },
    /// The core refused the write it was asked to make; reported instead of acknowledged.
    #[error("the write was not applied ({0:?})")]
    NotApplied(Refusal),
    /// This node's running total for the counter would pass 2^64 - 1.
    #[error(transparent)]
    CounterOverflow(#[from] crate::crdt::CounterOverflow),
    /// A remove from a set this node never saw written: there is nothing it observed to remove.
    #[error("no set {0:?} on this node")]
    NoSuchSet(String),
    /// The write's precondition does not hold for the value this node holds (whose ETag is
    /// `current`; `None`: no live value).
    #[error("the precondition does not hold on this node (current ETag: {})", current.as_deref().unwrap_or("none, no live value"))]
    PreconditionFailed { current: Option<String> },
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
    /// This lifetime of the node: its id and its data directory's storage epoch. Dots and rumor
    /// sequence numbers are minted under it.
    replica: ReplicaId,
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
    /// This node's clock against its peers', judged at every tick.
    clock: ClockStatus,
    /// Per commit not yet known to be synced: its number and this node's last own rumor
    /// sequence number in it.
    own_seq_at: VecDeque<(u64, u64)>,
    /// This node's last own rumor sequence number known to be durable.
    durable_seq: u64,
    /// A rollback failed: what the store holds is no longer known, so no write is taken.
    storage_failed: bool,
    disk: disk_watch::DiskWatch,
    /// The members this node remembers across restarts (see `roster.rs`).
    roster: roster::Roster,
    /// The time timers run on: wall time with steps back absorbed (see `timer_clock.rs`).
    timers: timer_clock::TimerClock,
    /// Changes not yet taken by the driver; `None` when not recording (see `changes.rs`).
    changes: Option<Vec<KeyChange>>,
    /// Values expiring up to this time were announced as changes.
    expiries_announced: Timestamp,
    /// What was last logged about the cluster view (see `cluster_view.rs`).
    view_log: cluster_view::ViewLog,
    /// Writes last-writer-wins discarded unseen (see `conflicts.rs`).
    conflicts: conflicts::ConflictLog,
    /// The catch-up after members came back (see `heal.rs`).
    heal: heal::HealWatch,
    /// Writes and reads waiting for other members (see `quorum.rs`).
    waits: quorum::Waits,
    /// How the start-up repaired the persisted Merkle leaves after a crash.
    index_repair: LeafRepair,
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
        mut config: ClusterConfig,
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
        // A new (or recovered, or replaced) data directory is a new lifetime of this node: a new
        // storage epoch, so that none of its dots or rumor sequence numbers can be one its peers
        // saw from an earlier lifetime; and a clock that starts above every timestamp the earlier
        // lifetime can have issued (at most the skew bound ahead of its wall clock, which was
        // behind this one's).
        // So is a directory that acknowledged writes before they were durable (`batch` and
        // `none` durability) and was not closed cleanly: it may have lost what peers hold.
        let fresh =
            meta.node_id.is_none() || (!meta.closed_cleanly && store.acknowledges_before_sync());
        meta.closed_cleanly = false;
        let mut hlc_floor = Timestamp::ZERO;
        if fresh {
            meta.epoch = new_epoch(config.rng_seed);
            hlc_floor = Timestamp::new(config.opened_at_ms + config.max_clock_skew_ms, 0);
            tracing::info!(
                epoch = format!("{:016x}", meta.epoch),
                "a new data directory: a new storage epoch"
            );
        }
        meta.node_id = Some(id.clone());
        let replica = ReplicaId::new(id.clone(), meta.epoch);
        // The tombstones come from the store's index, without reading any record.
        let (merkle, dirty_leaves, leaves_persisted) = match store.load_leaves()? {
            Some(leaves) => (MerkleIndex::from_leaves(leaves), BTreeSet::new(), true),
            None => {
                let merkle = rebuild_merkle(&mut store)?;
                let dirty = (0..=u16::MAX).collect();
                (merkle, dirty, false)
            }
        };
        let found = store.tombstones()?;
        meta.incarnation += 1;
        let has_seeds = !config.seeds.is_empty() || !config.seed_names.is_empty();
        let mut tombstones = tombstones::TombstoneCollector::new(
            config.tombstones.clone(),
            has_seeds || store.clustered(),
        );
        for (key, ts) in found {
            tombstones.track(&key, None, Some(ts));
        }
        tombstones.restore_own(&id, meta.stable_reported);
        tombstones.restore_forgotten(store.forgotten(), store.collected_through());
        meta.forgettable_through = Timestamp::ZERO;
        let max_clock_skew_ms = config.max_clock_skew_ms;
        let disk_reserve_bytes = config.disk_reserve_bytes;
        let remembered = store.roster();
        let remembered_addrs = store.member_addrs();
        if !has_seeds && !remembered_addrs.is_empty() {
            let addrs: Vec<String> = remembered_addrs
                .iter()
                .map(|(id, addr)| format!("{id}@{addr}"))
                .collect();
            tracing::info!(
                members = %addrs.join(","),
                "no seeds given: joining through the members known before the restart"
            );
            config.seeds = remembered_addrs.iter().map(|(_, addr)| *addr).collect();
        }
        if !remembered.is_empty() {
            let ids: Vec<String> = remembered.iter().map(ToString::to_string).collect();
            tracing::info!(
                members = %ids.join(","),
                "counting the members known before the restart until they are heard of again (DELETE /v1/cluster/members/{{id}} forgets one that will not return)"
            );
        }
        let roster = roster::Roster::restore(
            remembered,
            remembered_addrs,
            config.opened_at_ms,
            config.membership.reap_after_ms,
        );
        let mut cluster = cluster::Cluster::new(id.clone(), meta.incarnation, config);
        for (origin, seq) in meta.seen.iter() {
            cluster.rumors_mut().restore(origin, seq);
        }
        let mut node = Node {
            id,
            replica,
            cluster,
            hlc: Hlc::restore(meta.hlc.max(hlc_floor), max_clock_skew_ms),
            meta,
            meta_dirty: true,
            merkle,
            dirty_leaves,
            leaves_persisted,
            store,
            tombstones,
            clock: ClockStatus::default(),
            own_seq_at: VecDeque::new(),
            durable_seq: 0,
            storage_failed: false,
            disk: disk_watch::DiskWatch::new(disk_reserve_bytes),
            roster,
            timers: timer_clock::TimerClock::default(),
            changes: None,
            expiries_announced: Timestamp::ZERO,
            view_log: Default::default(),
            conflicts: Default::default(),
            heal: Default::default(),
            waits: Default::default(),
            index_repair: LeafRepair::default(),
        };
        node.watch_disk(0, true);
        let replay = node.store.take_replay();
        let mut named = node.store.take_replayed_removals();
        if !replay.is_empty() {
            tracing::info!(entries = replay.len(), "redoing the write-ahead log");
        }
        named.extend(replay.iter().map(|logged| logged.key.clone()));
        let repairing =
            leaves_persisted && node.store.repairs_index_from_log() && !named.is_empty();
        // The leaves of the named keys as persisted, before the replay's merges change them.
        let persisted: BTreeMap<u16, Leaf> = if repairing {
            named
                .iter()
                .map(|key| {
                    let bucket = merkle::bucket_of(key);
                    (bucket, node.merkle.leaves()[bucket as usize])
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        for logged in replay {
            node.hlc.recover(logged.hlc);
            if let Some((origin, seq)) = &logged.origin_seq {
                node.meta.seen.advance(origin, *seq);
            }
            // A replayed delta that is refused now (older than a horizon adopted since) was
            // refused on its way in too, or collected: nothing to redo.
            let _ = node.merge_checked(logged.key, logged.delta, None, Source::Replay)?;
        }
        // The database may hold changes the persisted leaves do not: the replay's merges found
        // some already there, so the leaves of every key the log names are repaired.
        if repairing {
            let priors = node.store.take_priors();
            let repair = node.repair_leaves(named, &persisted, priors)?;
            tracing::info!(
                from_log = repair.from_log,
                recomputed = repair.recomputed,
                "repaired the Merkle leaves the log named"
            );
            node.index_repair = repair;
        }
        // Persist the node id, the clock and the index, then start with an empty log. On a disk
        // below its reserve the node still starts, to serve reads (writes get 507): the log is
        // kept, and the database is flushed once there is room.
        if node.disk.is_full() {
            // sled remembers a failed write for good (its "global error"): a flush that runs
            // out of space would leave the database unwritable until a restart.
            tracing::warn!("no checkpoint at start-up on a disk below its reserve; the write-ahead log is kept until there is room");
        } else {
            node.checkpoint()?;
        }
        Ok(node)
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// This lifetime of the node: its id and its data directory's storage epoch.
    pub fn replica(&self) -> &ReplicaId {
        &self.replica
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

    /// How the start-up repaired the persisted Merkle leaves after a crash (nothing when there
    /// was no crash, or the leaves were rebuilt from every record).
    pub fn index_repair(&self) -> LeafRepair {
        self.index_repair
    }

    /// Applies a client write at wall time `wall_ms`. The change is visible to readers on return;
    /// the caller commits the store before acknowledging it. A write that is not applied returns
    /// an error and leaves nothing behind.
    pub fn handle_write(&mut self, wall_ms: u64, write: Write) -> Result<WriteAck, WriteError> {
        self.handle_write_if(wall_ms, write, &Precondition::default())
    }

    /// [`Node::handle_write`] under a precondition on the key's current value (kv writes only),
    /// checked here, where no other write can come between the check and the write.
    pub fn handle_write_if(
        &mut self,
        wall_ms: u64,
        write: Write,
        precondition: &Precondition,
    ) -> Result<WriteAck, WriteError> {
        self.handle_write_waiting(wall_ms, write, precondition, None)
    }

    /// [`Node::handle_write_if`] answered once `wait.level` members hold the write durably:
    /// when this node alone is not enough, the ack names the request (`awaiting`) whose
    /// [`WaitOutcome`] comes later (see `quorum.rs`).
    pub fn handle_write_waiting(
        &mut self,
        wall_ms: u64,
        write: Write,
        precondition: &Precondition,
        wait: Option<Wait>,
    ) -> Result<WriteAck, WriteError> {
        // A full disk first: it is what an operator can act on, and what made the store fail
        // when it did (a sync and its undo can both run out of space).
        if self.disk.is_full() {
            return Err(WriteError::DiskFull {
                free_bytes: self.disk.free().unwrap_or(0),
                reserve_bytes: self.disk_reserve_bytes(),
            });
        }
        if self.storage_failed {
            return Err(WriteError::Store(StoreError::Io(
                "the store failed to undo a failed sync; restart the node".into(),
            )));
        }
        if self.clock.out_of_bounds {
            return Err(WriteError::ClockSkew(ClockAhead {
                ahead_ms: self.clock.median_offset_ms.unsigned_abs(),
                bound_ms: self.hlc.max_ahead_ms(),
            }));
        }
        // A kv write names the write it replaces on this node: a peer that held another one
        // the writer never saw knows the two were concurrent (a conflict).
        let held = match &write {
            Write::KvPut { key, .. } | Write::KvDelete { key } => {
                match self.store.get(&StoreKey::kv(key))? {
                    Some(KeyState::Register(r)) => Some(r),
                    _ => None,
                }
            }
            _ => None,
        };
        if !precondition.is_none() {
            let current = held.as_ref().and_then(|r| r.etag(wall_ms));
            if !precondition.holds(current.as_deref()) {
                return Err(WriteError::PreconditionFailed { current });
            }
        }
        let observed = held.map(|r| r.timestamp);
        let now_ms = self.clock_in(wall_ms);
        let timestamp = self.hlc.tick(wall_ms).map_err(WriteError::ClockSkew)?;
        let mut value = None;
        let (key, delta, size) = match write {
            Write::KvPut { key, value, ttl_ms } => {
                let mut register =
                    LwwRegister::write(timestamp, self.id.clone(), Some(value)).observing(observed);
                if let Some(ttl_ms) = ttl_ms {
                    register = register.expiring_after(ttl_ms);
                }
                (StoreKey::kv(key), KeyState::Register(register), None)
            }
            Write::KvDelete { key } => {
                let tombstone =
                    LwwRegister::write(timestamp, self.id.clone(), None).observing(observed);
                (StoreKey::kv(key), KeyState::Register(tombstone), None)
            }
            Write::SetEdit { key, add, remove } => {
                let key = StoreKey::set(key);
                // The edit reads only the elements it names: its delta is the one an edit of the
                // whole set would produce.
                let stored = StoredSet::open(&self.store, &key)?;
                // Removes alone observe nothing in a set never seen (an empty batch is a no-op).
                if !stored.existed() && add.is_empty() && !remove.is_empty() {
                    return Err(WriteError::NoSuchSet(key.name));
                }
                let named = remove.iter().chain(&add).map(String::as_str);
                let mut excerpt = set_merge::excerpt(&stored, named)?;
                let others = stored.header().count.saturating_sub(excerpt.len() as u64);
                // One delta for the whole edit: merging each element's delta into a growing one
                // cost the square of the batch.
                let delta = excerpt.edit(
                    &self.replica,
                    remove.iter().map(String::as_str),
                    add.iter().map(String::as_str),
                );
                let size = others + excerpt.len() as u64;
                (key, KeyState::Set(delta), Some(size))
            }
            Write::SetClear { key } => {
                let key = StoreKey::set(key);
                let Some(header) = self.store.set_header(&key)? else {
                    return Err(WriteError::NoSuchSet(key.name));
                };
                // Every dot this node has seen: merged anywhere, it removes the elements whose
                // adds this node observed, and no other.
                let delta = OrSet::from_parts(header.context, Default::default());
                (key, KeyState::Set(delta), Some(0))
            }
            Write::CounterAdd { key, amount } => {
                let key = StoreKey::counter(key);
                let mut counter = match self.store.get(&key)? {
                    Some(KeyState::Counter(counter)) => counter,
                    _ => PnCounter::new(),
                };
                let delta = counter.add(&self.replica, amount)?;
                value = Some(counter.value());
                (key, KeyState::Counter(delta), None)
            }
        };
        let expires = match &delta {
            KeyState::Register(r) => r.expires,
            _ => None,
        };
        let seq = self.meta.seen.get(&self.replica) + 1;
        let origin = Some((self.replica.clone(), seq));
        let applied = self.merge_checked(key.clone(), delta.clone(), origin, Source::Local)?;
        match applied {
            Applied::Refused(Refusal::TooLarge { bytes }) => {
                return Err(WriteError::TooLarge {
                    bytes,
                    limit: MAX_STATE_BYTES,
                })
            }
            Applied::Refused(why) => return Err(WriteError::NotApplied(why)),
            Applied::Changed | Applied::Unchanged => {}
        }
        self.meta.seen.advance(&self.replica, seq);
        let awaiting = match wait {
            Some(wait) => self.await_replicas(now_ms, key.clone(), delta.clone(), seq, wait),
            None => None,
        };
        if self.has_peers() {
            self.spread_local(key, delta, seq);
        }
        // With nobody to tell, anti-entropy brings peers up to date when they appear.
        Ok(WriteAck {
            timestamp,
            node: self.id.clone(),
            size,
            value,
            expires,
            seq,
            awaiting,
            replicas: None,
        })
    }

    /// Merges a state received from a peer at wall time `now_ms` (outside any rumor or exchange:
    /// tools and tests). Returns what happened.
    pub fn merge_delta(
        &mut self,
        now_ms: u64,
        key: StoreKey,
        delta: KeyState,
    ) -> Result<Applied, StoreError> {
        let now_ms = self.clock_in(now_ms);
        self.merge_checked(key, delta, None, Source::Peer { now_ms })
    }

    /// The timer time at wall time `wall_ms`, passed in by the driver: every public entry point
    /// that takes a time converts it once, here (see `timer_clock.rs`); what compares with
    /// timestamps converts back with [`Node::wall`].
    pub(super) fn clock_in(&mut self, wall_ms: u64) -> u64 {
        let now_ms = self.timers.timer(wall_ms);
        let behind_ms = self.timers.behind_ms();
        self.cluster.membership.set_wall_behind(behind_ms);
        self.tombstones.set_wall_behind(behind_ms);
        now_ms
    }

    /// The wall time at timer time `now_ms`.
    pub(super) fn wall(&self, now_ms: u64) -> u64 {
        self.timers.wall(now_ms)
    }

    /// Starts making every change so far durable (per the durability mode): the driver calls
    /// this once per group of writes and acknowledges them once the returned sync completes.
    pub fn commit(&mut self) -> Result<PendingSync, StoreError> {
        // On a disk below its reserve, writes and peers' states are refused: what is left is
        // metadata, which waits for room (the log replays what it would record). A sync that
        // ran out of space there could leave the store unable to undo it.
        if !self.disk.is_full() {
            self.commit_metadata()?;
        }
        let pending = self.store.commit()?;
        self.own_seq_at
            .push_back((self.store.commits(), self.meta.seen.get(&self.replica)));
        Ok(pending)
    }

    /// Hands the store the metadata and the roster changed since the last commit.
    fn commit_metadata(&mut self) -> Result<(), StoreError> {
        if self.meta_dirty {
            self.meta.hlc = self.hlc.high_water_mark();
            for (origin, seq) in self.cluster.rumors().contiguous() {
                self.meta.seen.advance(origin, seq);
            }
            self.meta.incarnation = self.meta.incarnation.max(self.incarnation());
            self.meta.stable_reported = self.tombstones.own_report(&self.id);
            self.store.apply(WriteBatch {
                meta: Some(self.meta.clone()),
                ..WriteBatch::default()
            })?;
            self.meta_dirty = false;
        }
        self.persist_roster()
    }

    /// Whether the data directory's file system is below its free-space reserve (writes and
    /// peers' states are refused meanwhile).
    pub fn is_disk_full(&self) -> bool {
        self.disk.is_full()
    }

    fn disk_reserve_bytes(&self) -> u64 {
        self.cluster.disk_reserve_bytes
    }

    /// Checks the free space when due (or now, with `force`), and logs when the verdict changes.
    pub(super) fn watch_disk(&mut self, now_ms: u64, force: bool) {
        let store = &self.store;
        if let Some(full) = self.disk.check(now_ms, force, || store.free_bytes()) {
            let free_bytes = self.disk.free().unwrap_or(0);
            let reserve_bytes = self.disk_reserve_bytes();
            if full {
                tracing::error!(free_bytes, reserve_bytes, "the data directory's disk is nearly full: refusing writes (507) until space is freed");
            } else {
                tracing::warn!(
                    free_bytes,
                    "the data directory's disk has room again: taking writes"
                );
            }
        }
    }

    /// The number of the last commit (as the store counts them, from 1).
    pub fn commits(&self) -> u64 {
        self.store.commits()
    }

    /// The syncs of every commit up to number `commit` completed: nothing of them will be rolled
    /// back.
    pub fn synced_through(&mut self, commit: u64) {
        while self
            .own_seq_at
            .front()
            .is_some_and(|(number, _)| *number <= commit)
        {
            if let Some((_, seq)) = self.own_seq_at.pop_front() {
                self.durable_seq = seq;
            }
        }
        self.store.synced_through(commit);
        self.end_durable_waits();
    }

    /// A sync failed: undoes everything since the last commit known to be durable, in the
    /// store, in the Merkle index and the tombstone bookkeeping, and withdraws this node's own
    /// rumors of the undone writes, so none of them takes effect or reaches a peer (the driver
    /// answered those writes with errors and sent nothing of their groups); the node goes on in
    /// a new storage epoch. What the core produced and the driver has not taken yet was built on
    /// the undone writes: it is dropped, and an exchange whose request is dropped ends at once.
    pub fn rollback(&mut self) -> Result<(), StoreError> {
        for message in std::mem::take(&mut self.cluster.outbox) {
            if let Outbound::SyncRequest { session, .. } = message {
                if self.cluster.sessions.remove(&session).is_some() {
                    self.cluster.outbox.push(Outbound::SyncDone { session });
                }
            }
        }
        // The writes after the last durable one are undone even if the undo below fails.
        let replica = self.replica.clone();
        self.undo_waits(&replica, self.durable_seq);
        let undone = match self.store.rollback() {
            Ok(undone) => undone,
            Err(e) => {
                tracing::error!(error = %e, "cannot roll back the writes whose sync failed; refusing writes until a restart");
                self.storage_failed = true;
                return Err(e);
            }
        };
        tracing::warn!(
            records = undone.len(),
            "rolled back the writes whose sync failed"
        );
        // Nothing recorded since the last durable sync happened after all.
        if let Some(changes) = &mut self.changes {
            changes.clear();
        }
        for crate::store::Undone { key, before, after } in undone {
            let before_hash = before.as_ref().map(|s| merkle::item_hash(&key, s));
            let after_hash = after.as_ref().map(|s| merkle::item_hash(&key, s));
            let bucket = match (before_hash, after_hash) {
                (old, Some(new)) => self.merkle.update_hashed(&key, old, new).0,
                (Some(old), None) => self.merkle.remove(&key, old).0,
                (None, None) => continue,
            };
            self.dirty_leaves.insert(bucket);
            let tomb = |s: &Option<KeyState>| s.as_ref().and_then(tombstones::tombstone_of);
            self.tombstones.track(&key, tomb(&before), tomb(&after));
        }
        self.own_seq_at.clear();
        self.cluster
            .rumors
            .withdraw(&self.replica, self.durable_seq);
        // The undone writes minted dots and rumor numbers that the restored state no longer
        // remembers; none of them left the node, but a new lifetime makes sure none is minted
        // twice.
        let seed = rand::RngCore::next_u64(&mut self.cluster.rng);
        self.meta.epoch = new_epoch(seed);
        self.replica = ReplicaId::new(self.id.clone(), self.meta.epoch);
        self.durable_seq = 0;
        // Exchanges completed since then may have brought states now undone: their marks no
        // longer say what this node holds.
        self.tombstones.forget_syncs();
        // The undo restored the store's copy of the index as it was when last durable, and its
        // mark saying whether that copy is complete: it may say so (it was, for the state
        // restored). The next change must clear that mark again, and the next copy must write
        // every leaf (leaves persisted in the undone window went back too).
        self.leaves_persisted = true;
        self.dirty_leaves.extend(0..merkle::LEAVES as u16);
        self.meta_dirty = true;
        // The roster written with the undone group is undone too.
        self.roster.changed();
        Ok(())
    }

    /// True when changes wait for [`Node::commit`].
    pub fn has_uncommitted(&self) -> bool {
        (self.meta_dirty || self.roster.is_dirty()) && !self.disk.is_full()
    }

    /// Starts a checkpoint once the store's log has grown large (call after a commit):
    /// persists the Merkle index, retires the log, and returns the slow part, which the driver
    /// runs off the core's thread and reports with [`Node::checkpoint_done`].
    pub fn begin_checkpoint(&mut self) -> Result<Option<CheckpointWork>, StoreError> {
        // On a disk below its reserve the flush waits for room (see `open_in_cluster`).
        if !self.store.wants_checkpoint() || self.disk.is_full() {
            return Ok(None);
        }
        self.persist_leaves()?;
        self.store.begin_checkpoint()
    }

    /// The work of the last [`Node::begin_checkpoint`] finished.
    pub fn checkpoint_done(&mut self, result: Result<(), StoreError>) {
        if let Err(e) = &result {
            tracing::error!(error = %e, "checkpoint failed; the log is kept and retried later");
        }
        self.store.checkpoint_done(result.is_ok());
    }

    /// Checkpoints and marks the data directory as closed cleanly: the next start continues
    /// this lifetime (see [`Node::open_in_cluster`]). The node takes no more input after it.
    pub fn close(&mut self) -> Result<(), StoreError> {
        self.meta.closed_cleanly = true;
        self.meta_dirty = true;
        self.checkpoint()
    }

    /// Persists the Merkle index and metadata, flushes the database and empties the logs, in
    /// place (at start-up and shutdown).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.persist_leaves()?;
        // The checkpoint syncs the whole file system, which covers the pending log sync.
        let _covered = self.commit()?;
        self.store.checkpoint()?;
        self.synced_through(self.store.commits());
        Ok(())
    }

    /// What a batch that changes records says of the persisted Merkle leaves: on a store that
    /// repairs them from its log after a crash, nothing; otherwise the first change after they
    /// were persisted marks them stale, in the same atomic batch, so that a crash from then on
    /// rebuilds them from the records.
    pub(super) fn leaves_marked_stale(&self) -> Option<bool> {
        (self.leaves_persisted && !self.store.repairs_index_from_log()).then_some(false)
    }

    /// Writes the Merkle leaves changed since they were last persisted, marked complete, with the
    /// store's per-leaf key index.
    fn persist_leaves(&mut self) -> Result<(), StoreError> {
        let leaves = self.merkle.leaves();
        let changed: Vec<(u16, Leaf)> = self
            .dirty_leaves
            .iter()
            .map(|&i| (i, leaves[i as usize]))
            .collect();
        self.store.apply(WriteBatch {
            leaves: changed,
            leaves_complete: Some(true),
            flush_key_index: true,
            ..WriteBatch::default()
        })?;
        self.dirty_leaves.clear();
        self.leaves_persisted = true;
        Ok(())
    }
}

/// A storage epoch drawn from `seed` (the driver's fresh entropy): never 0, the epoch of
/// directories that predate epochs.
fn new_epoch(seed: u64) -> u64 {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x6570_6f63_6800_0000);
    rng.gen_range(1..=u64::MAX)
}

/// Rebuilds the Merkle index and the per-leaf key index from the records.
fn rebuild_merkle<S: Store>(store: &mut S) -> Result<MerkleIndex, StoreError> {
    const CHUNK: usize = 10_000;
    let mut index = MerkleIndex::default();
    let mut key_hashes = Vec::new();
    store.for_each_record(&mut |key, state| {
        let hash = merkle::item_hash(&key, &state);
        index.update_hashed(&key, None, hash);
        key_hashes.push((key, hash));
        Ok(())
    })?;
    // The first batch drops whatever key index there was.
    let mut reset = true;
    while reset || !key_hashes.is_empty() {
        let rest = key_hashes.split_off(key_hashes.len().saturating_sub(CHUNK));
        store.apply(WriteBatch {
            key_hashes: rest,
            key_index_reset: std::mem::take(&mut reset),
            ..WriteBatch::default()
        })?;
    }
    tracing::info!(
        keys = index.root().count,
        "rebuilt the Merkle index from the data"
    );
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn writes_advance_the_clock_sequence_and_digest() {
        let mut node = Node::open(MemoryStore::new(), id("n1")).unwrap();
        let empty = node.digest();
        let a = node.handle_write(1_000, Write::put_text("k", "1")).unwrap();
        let b = node.handle_write(900, Write::put_text("k", "2")).unwrap();
        assert!(b.timestamp > a.timestamp);
        assert_eq!(node.digest().count, 1);
        assert_ne!(node.digest(), empty);
        node.commit().unwrap().complete().unwrap();
        assert_eq!(node.store().meta().seen.get(node.replica()), 2);
    }

    #[test]
    fn a_restart_finds_exactly_the_tombstones_held_through_the_stores_index() {
        let store = MemoryStore::new();
        let mut node = Node::open(store.clone(), id("n1")).unwrap();
        let delete = |k: &str| Write::KvDelete { key: k.into() };
        node.handle_write(1_000, Write::put_text("a", "1")).unwrap();
        node.handle_write(1_000, Write::put_text("b", "1")).unwrap();
        node.handle_write(1_001, delete("a")).unwrap();
        node.handle_write(1_001, delete("b")).unwrap();
        // Written again: no longer a tombstone, and no longer indexed as one.
        node.handle_write(1_002, Write::put_text("b", "2")).unwrap();
        assert_eq!(node.tombstones_held(), 1);
        node.close().unwrap();
        let indexed: Vec<String> = store
            .tombstones()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.name)
            .collect();
        assert_eq!(indexed, ["a"]);
        let reopened = Node::open(store.reopen(), id("n1")).unwrap();
        assert_eq!(reopened.tombstones_held(), 1);
    }

    #[test]
    fn a_node_that_rolled_back_and_crashed_does_not_load_a_stale_index() {
        let store = MemoryStore::with_crashes();
        let mut node = Node::open(store.reopen(), id("n1")).unwrap();
        node.handle_write(1_000, Write::put_text("a", "1")).unwrap();
        // The index is persisted and marked complete, durably.
        node.checkpoint().unwrap();
        store.fail_syncs(true);
        node.handle_write(1_001, Write::put_text("b", "1")).unwrap();
        assert!(node.commit().unwrap().complete().is_err());
        node.rollback().unwrap();
        store.fail_syncs(false);
        // Writes after the rollback are durable, and the node crashes.
        node.handle_write(1_002, Write::put_text("c", "1")).unwrap();
        node.commit().unwrap().complete().unwrap();
        node.synced_through(node.commits());
        let digest = node.digest();
        assert_eq!(digest.count, 2);
        drop(node);
        let again = Node::open(store.reopen(), id("n1")).unwrap();
        assert_eq!(
            again.digest(),
            digest,
            "the index loaded after the crash is stale"
        );
    }

    #[test]
    fn a_value_forgotten_on_a_peers_word_stays_refused_after_a_restart() {
        use crate::crdt::Value;
        use crate::membership::{Member, MemberState};
        use crate::wire::ForgetValue;
        let store = MemoryStore::with_crashes();
        let mut node = Node::open(store.reopen(), id("n1")).unwrap();
        let n2 = Member {
            id: id("n2"),
            gossip_addr: "127.0.0.1:2".parse().unwrap(),
            http_addr: "127.0.0.1:3".parse().unwrap(),
            state: MemberState::Alive,
            incarnation: 1,
        };
        node.cluster.membership.apply_updates(1_000, &[n2]);
        let key = StoreKey::kv("k");
        let written = Timestamp::new(900, 0);
        let value = Value {
            content_type: "text/plain".into(),
            data: b"old".to_vec(),
        };
        let register =
            || KeyState::Register(LwwRegister::write(written, id("n3"), Some(value.clone())));
        assert_eq!(
            node.merge_delta(1_000, key.clone(), register()).unwrap(),
            Applied::Changed
        );
        // n2 collected a newer tombstone of k and refused the value: n1 forgets it.
        node.cluster
            .peer_horizons
            .insert(id("n2"), Timestamp::new(950, 0));
        let forget = ForgetValue {
            key: key.clone(),
            timestamp: written,
            node: id("n3"),
        };
        node.forget(1_000, &id("n2"), vec![forget]).unwrap();
        assert_eq!(node.store().get(&key).unwrap(), None);
        node.commit().unwrap().complete().unwrap();
        node.synced_through(node.commits());
        drop(node);
        // After a crash, another member that missed the collection offers it again: refused.
        let mut again = Node::open(store.reopen(), id("n1")).unwrap();
        assert_eq!(
            again.merge_delta(1_100, key.clone(), register()).unwrap(),
            Applied::Refused(Refusal::Collected)
        );
        assert_eq!(again.store().get(&key).unwrap(), None);
    }

    #[test]
    fn reopening_restores_clock_and_index_and_refuses_another_node_id() {
        let store = MemoryStore::new();
        let mut node = Node::open(store.reopen(), id("n1")).unwrap();
        let ack = node.handle_write(5_000, Write::put_text("k", "v")).unwrap();
        node.commit().unwrap().complete().unwrap();
        let digest = node.digest();
        // No checkpoint: the index was not persisted after the write, so it is rebuilt.
        drop(node);
        let mut again = Node::open(store.reopen(), id("n1")).unwrap();
        assert_eq!(again.digest(), digest);
        // The wall clock went back 5 s: the restored clock refuses to stamp from the future...
        assert!(matches!(
            again.handle_write(1, Write::put_text("k", "w")),
            Err(WriteError::ClockSkew(_))
        ));
        // ... and within the skew bound it continues above what it issued before the restart.
        assert!(
            again
                .handle_write(4_600, Write::put_text("k", "w"))
                .unwrap()
                .timestamp
                > ack.timestamp
        );
        assert!(matches!(
            Node::open(store.reopen(), id("n2")),
            Err(NodeError::WrongNode { .. })
        ));
    }

    #[test]
    fn a_set_that_would_grow_too_large_to_replicate_is_refused_and_left_as_it_was() {
        let mut node = Node::open(MemoryStore::new(), id("n1")).unwrap();
        let long = |i: usize| format!("{i:0>1000}");
        let batch = |from: usize| Write::SetEdit {
            key: "big".into(),
            add: (from..from + 1_000).map(long).collect(),
            remove: vec![],
        };
        let mut added = 0;
        let refused = loop {
            match node.handle_write(1 + added as u64, batch(added)) {
                Ok(_) => added += 1_000,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(refused, WriteError::TooLarge { bytes, limit } if bytes > limit && limit == MAX_STATE_BYTES),
            "{refused:?}"
        );
        assert!(added >= 3_000, "refused too early, at {added} elements");
        match node.store().get(&StoreKey::set("big")).unwrap() {
            Some(KeyState::Set(set)) => assert_eq!(set.len(), added),
            other => panic!("{other:?}"),
        }
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
        assert_eq!(ack.size, Some(2));
        match node.store().get(&StoreKey::set("s")).unwrap() {
            Some(KeyState::Set(set)) => assert_eq!(set.elements().collect::<Vec<_>>(), ["a", "c"]),
            other => panic!("expected a set, got {other:?}"),
        }
    }

    #[test]
    fn leaf_key_index_follows_writes_and_rebuilds() {
        let store = MemoryStore::new();
        let mut node = Node::open(store.reopen(), id("n1")).unwrap();
        node.handle_write(1, Write::put_text("k", "1")).unwrap();
        node.handle_write(2, Write::put_text("k", "2")).unwrap();
        let key = StoreKey::kv("k");
        let state = node.store().get(&key).unwrap().unwrap();
        let expected = vec![(
            key.clone(),
            merkle::prefix8(&merkle::item_hash(&key, &state)),
        )];
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
            node.handle_write(i, Write::put_text(&format!("k{}", i % 7), "v"))
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
            rebuild_merkle(&mut rebuilt).unwrap()
        };
        assert_eq!(merkle.root(), node.digest());
    }
}
