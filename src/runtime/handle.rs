//! How the rest of the process reaches the core: [`NodeHandle`] puts commands on one of two
//! queues and rings the core's doorbell. Cluster input (the transport's datagrams, frames and
//! anti-entropy) has its own bounded queue, drained first and dropped (and counted) when full, so
//! it never waits behind client writes; client commands have theirs, and a handler waits for room.
//! [`Signals`] mirror what health checks need without a round trip to the core thread.

use crate::clock::{ClockAhead, NodeId};
use crate::crdt::KeyState;
use crate::membership::{ForceLeaveError, Member};
use crate::node::{
    ClusterStats, ClusterView, Node, Overwritten, Precondition, Refusal, Tally, Wait, Write,
    WriteAck, WriteError,
};
use crate::store::{Leaf, Store, StoreError, StoreKey};
use crate::wire::{Datagram, Frame, SyncAnswer, SyncRequest};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What HTTP handlers and the server ask of the core.
pub(super) enum ClientCommand {
    Write(
        Write,
        Precondition,
        Option<Wait>,
        oneshot::Sender<Result<WriteAck, WriteError>>,
    ),
    /// A read at a consistency level: answered `None` when this node alone is enough, else
    /// once the members' states are merged (or the wait timed out).
    Read(StoreKey, Wait, oneshot::Sender<Option<Tally>>),
    Digest(oneshot::Sender<Leaf>),
    /// The records of these Merkle leaves, for a backup.
    BackupChunk(
        std::ops::Range<u32>,
        oneshot::Sender<Result<Vec<(StoreKey, KeyState)>, StoreError>>,
    ),
    Members(oneshot::Sender<Vec<Member>>),
    RemoveMember(NodeId, oneshot::Sender<Result<Member, ForceLeaveError>>),
    Stats(oneshot::Sender<CoreStats>),
    Overwritten(StoreKey, oneshot::Sender<Vec<Overwritten>>),
    Leave(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// What the transport and the driver's own threads hand the core.
pub(super) enum ClusterCommand {
    Datagram(SocketAddr, Datagram),
    Frame(Frame),
    SyncRequest(NodeId, SyncRequest, oneshot::Sender<Option<SyncAnswer>>),
    SyncReply(u64, Option<SyncAnswer>),
    /// An authentic datagram from this node id, sealed at this time, arrived outside the
    /// freshness window.
    Stale(SocketAddr, NodeId, u64),
    /// A seed name resolved to these addresses (`None`: the resolution failed).
    SeedResolved(String, Option<Vec<SocketAddr>>),
    /// The checkpoint work handed to the checkpoint thread finished.
    CheckpointDone(Result<(), StoreError>),
    /// The sync thread: every commit up to this number is durable.
    Synced(u64),
    /// The sync thread: a sync failed; it fails every group from then on until the core, having
    /// rolled back, sends a group marked as resuming.
    SyncFailed,
}

/// What the metrics endpoint reads from the core.
#[derive(Clone, Debug)]
pub struct CoreStats {
    /// The catch-up after members came back from dead (see [`Node::heal_report`]).
    pub heal: Option<crate::node::HealReport>,
    pub digest: Leaf,
    pub cluster: ClusterStats,
    pub members: Vec<Member>,
    pub seen_entries: usize,
}

/// What a handler gets when the core cannot do what it asked.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The core is gone (shutting down, or stopped by a storage error).
    #[error("the node is shutting down")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This node's clock is out of bounds: it does not stamp writes.
    #[error("this node's clock is out of bounds: {0}")]
    ClockSkew(ClockAhead),
    /// The data directory's disk is below its free-space reserve.
    #[error("{0}")]
    DiskFull(WriteError),
    /// The write would make the key's state too large to replicate.
    #[error("{0}")]
    TooLarge(WriteError),
    /// The core refused a write it was asked to make.
    #[error("the write was not applied ({0:?})")]
    NotApplied(Refusal),
    /// A remove from a set this node never saw written.
    #[error("no set {0:?} on this node")]
    NoSuchSet(String),
    /// This node's running total for a counter would pass 2^64 - 1.
    #[error(transparent)]
    CounterOverflow(crate::crdt::CounterOverflow),
    /// The write's precondition does not hold on this node, whose value has ETag `current`
    /// (`None`: no live value).
    #[error("the precondition does not hold on this node (current ETag: {})", current.as_deref().unwrap_or("none, no live value"))]
    PreconditionFailed { current: Option<String> },
}

impl From<WriteError> for CoreError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Store(e) => CoreError::Store(e),
            WriteError::ClockSkew(ahead) => CoreError::ClockSkew(ahead),
            WriteError::NotApplied(why) => CoreError::NotApplied(why),
            full @ WriteError::DiskFull { .. } => CoreError::DiskFull(full),
            large @ WriteError::TooLarge { .. } => CoreError::TooLarge(large),
            WriteError::PreconditionFailed { current } => CoreError::PreconditionFailed { current },
            WriteError::NoSuchSet(key) => CoreError::NoSuchSet(key),
            WriteError::CounterOverflow(e) => CoreError::CounterOverflow(e),
        }
    }
}

/// The core's view of its own condition, readable without a round trip to the core thread (the
/// health endpoint must answer when the core is busy).
#[derive(Default)]
pub(super) struct Signals {
    /// [`Node::is_resyncing`].
    resyncing: AtomicBool,
    /// [`Node::clock_status`]: out of bounds, and the median offset of the peers' clocks.
    clock_out_of_bounds: AtomicBool,
    clock_offset_ms: AtomicI64,
    /// [`Node::is_disk_full`].
    disk_full: AtomicBool,
    /// [`Node::cluster_view`].
    view: std::sync::Mutex<ClusterView>,
}

impl Signals {
    pub(super) fn mirror<S: Store>(&self, node: &Node<S>) {
        self.resyncing.store(node.is_resyncing(), Ordering::Relaxed);
        let clock = node.clock_status();
        self.clock_out_of_bounds
            .store(clock.out_of_bounds, Ordering::Relaxed);
        self.clock_offset_ms
            .store(clock.median_offset_ms, Ordering::Relaxed);
        self.disk_full.store(node.is_disk_full(), Ordering::Relaxed);
        let view = node.cluster_view();
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
    }
}

/// Wakes the core thread: producers ring after queueing; one pending ring is enough.
#[derive(Clone)]
pub(super) struct Doorbell(pub(super) std::sync::mpsc::SyncSender<()>);

impl Doorbell {
    pub(super) fn ring(&self) {
        let _ = self.0.try_send(());
    }
}

/// A cheap, cloneable handle on the core for the HTTP handlers and the transport: it sends
/// commands. (Reads go to the store's reader, which [`super::start`] returns beside it.)
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) id: NodeId,
    pub(super) clients: mpsc::Sender<ClientCommand>,
    pub(super) cluster: mpsc::Sender<ClusterCommand>,
    pub(super) doorbell: Doorbell,
    pub(super) signals: Arc<Signals>,
    /// The changes this node made durable, for watchers.
    pub(super) feed: Arc<super::ChangeFeed>,
}

impl NodeHandle {
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The changes this node made durable, for watchers.
    pub fn feed(&self) -> &Arc<super::ChangeFeed> {
        &self.feed
    }

    /// True while the node recovers its data from peers (reads are not authoritative).
    pub fn is_resyncing(&self) -> bool {
        self.signals.resyncing.load(Ordering::Relaxed)
    }

    /// `Some(median offset of the peers' clocks, ms)` while this node's clock is out of bounds
    /// with most of the cluster (it then refuses client writes).
    pub fn clock_skew(&self) -> Option<i64> {
        self.signals
            .clock_out_of_bounds
            .load(Ordering::Relaxed)
            .then(|| self.signals.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// True while the data directory's disk is below its free-space reserve (writes are
    /// refused).
    pub fn is_disk_full(&self) -> bool {
        self.signals.disk_full.load(Ordering::Relaxed)
    }

    /// What the node sees of its cluster (as of the core's last round).
    pub fn cluster_view(&self) -> ClusterView {
        *self.signals.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every reason the node's health is degraded now (empty: healthy), with the clock offset
    /// when its clock is out of bounds.
    pub fn health_reasons(&self) -> (Vec<&'static str>, Option<i64>) {
        let mut reasons: Vec<&'static str> = self.cluster_view().reasons().collect();
        let skew = self.clock_skew();
        if skew.is_some() {
            reasons.push("clock_skew");
        }
        if self.is_disk_full() {
            reasons.push("disk_full");
        }
        if self.is_resyncing() {
            reasons.push("resyncing");
        }
        (reasons, skew)
    }

    /// Applies a write and returns once it is durable (per the durability mode).
    pub async fn write(&self, write: Write) -> Result<WriteAck, CoreError> {
        self.write_waiting(write, Precondition::default(), None)
            .await
    }

    /// A write under a precondition on the key's current value on this node, answered once
    /// `wait.level` members hold it durably, or once the wait timed out
    /// ([`WriteAck::replicas`] says who holds it).
    pub async fn write_waiting(
        &self,
        write: Write,
        precondition: Precondition,
        wait: Option<Wait>,
    ) -> Result<WriteAck, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.ask(ClientCommand::Write(write, precondition, wait, tx))
            .await?;
        Ok(rx.await.map_err(|_| CoreError::Stopped)??)
    }

    /// Merges the states of `key` that `wait.level` members hold into this node's store;
    /// returns who answered (`None`: this node alone is enough). Read the store afterwards.
    pub async fn read_from(&self, key: StoreKey, wait: Wait) -> Result<Option<Tally>, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.ask(ClientCommand::Read(key, wait, tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    /// The Merkle root of all replicated state.
    pub async fn digest(&self) -> Result<Leaf, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.ask(ClientCommand::Digest(tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    /// Every record of Merkle leaves `leaves`, read between other events (see
    /// [`Node::backup_chunk`]).
    pub async fn backup_chunk(
        &self,
        leaves: std::ops::Range<u32>,
    ) -> Result<Vec<(StoreKey, KeyState)>, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.ask(ClientCommand::BackupChunk(leaves, tx)).await?;
        Ok(rx.await.map_err(|_| CoreError::Stopped)??)
    }

    /// Members as this node sees it, itself included.
    pub async fn members(&self) -> Result<Vec<Member>, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.ask(ClientCommand::Members(tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    /// Forces member `id` out of the cluster (it is marked left everywhere).
    pub async fn remove_member(
        &self,
        id: NodeId,
    ) -> Result<Result<Member, ForceLeaveError>, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.ask(ClientCommand::RemoveMember(id, tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    pub async fn stats(&self) -> Result<CoreStats, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.ask(ClientCommand::Stats(tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    /// The concurrent writes of `key` that last-writer-wins discarded on this node (the last
    /// few since it started).
    pub async fn overwritten(&self, key: StoreKey) -> Result<Vec<Overwritten>, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.ask(ClientCommand::Overwritten(key, tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    /// Announces that this node leaves the cluster; returns once the announcement is queued.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ask(ClientCommand::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the core after checkpointing the store; returns when it is done.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ask(ClientCommand::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Hands a received datagram to the core; `false` if its cluster queue is full (dropped).
    pub fn deliver_datagram(&self, from: SocketAddr, datagram: Datagram) -> bool {
        self.tell(ClusterCommand::Datagram(from, datagram))
    }

    /// Hands a received one-way frame to the core; `false` if its cluster queue is full
    /// (dropped: anti-entropy repairs what a dropped rumor carried).
    pub fn deliver_frame(&self, _from: SocketAddr, frame: Frame) -> bool {
        self.tell(ClusterCommand::Frame(frame))
    }

    /// Tells the core that an authentic datagram sealed at `sent_ms` by `peer` arrived outside
    /// the freshness window (dropped if the queue is full).
    pub fn deliver_stale(&self, from: SocketAddr, peer: NodeId, sent_ms: u64) {
        self.tell(ClusterCommand::Stale(from, peer, sent_ms));
    }

    /// Hands the core the addresses seed `name` resolved to (`None`: it did not resolve); dropped
    /// if the queue is full (the next contact attempt resolves it again).
    pub fn deliver_seed_resolution(&self, name: String, addrs: Option<Vec<SocketAddr>>) {
        self.tell(ClusterCommand::SeedResolved(name, addrs));
    }

    /// Asks the core to answer an anti-entropy request (`None`: refused, or the core is busy
    /// or shutting down).
    pub async fn sync_request(
        &self,
        from: NodeId,
        request: SyncRequest,
    ) -> Option<Option<SyncAnswer>> {
        let (tx, rx) = oneshot::channel();
        if !self.tell(ClusterCommand::SyncRequest(from, request, tx)) {
            return Some(None);
        }
        rx.await.ok()
    }

    /// Hands the reply of an anti-entropy request (or its failure, `None`) to the core.
    pub fn sync_reply(&self, session: u64, reply: Option<SyncAnswer>) {
        let (cluster, doorbell) = (self.cluster.clone(), self.doorbell.clone());
        // Must not be lost (the session would stay open until it times out), so wait for room.
        tokio::spawn(async move {
            if cluster
                .send(ClusterCommand::SyncReply(session, reply))
                .await
                .is_ok()
            {
                doorbell.ring();
            }
        });
    }

    /// Queues a client command, waiting for room.
    async fn ask(&self, command: ClientCommand) -> Result<(), CoreError> {
        self.clients
            .send(command)
            .await
            .map_err(|_| CoreError::Stopped)?;
        self.doorbell.ring();
        Ok(())
    }

    /// Queues cluster input if there is room.
    fn tell(&self, command: ClusterCommand) -> bool {
        let queued = self.cluster.try_send(command).is_ok();
        if queued {
            self.doorbell.ring();
        }
        queued
    }
}
