//! The driver loop: owns the core ([`Node`]) on a dedicated thread, feeds it commands from the
//! HTTP handlers, reads the wall clock, fires the store's timer, and implements group commit:
//! the core applies every write that has arrived, writes their log entries and hands one
//! `fdatasync` for the whole group to a sync thread, which acknowledges the group once it is
//! durable; meanwhile the core applies the next group. Cluster messages from the transport go
//! through the same queue, and what the core wants sent goes out to the transport after each
//! group. No protocol decisions live here.

use crate::clock::{ClockAhead, NodeId};
use crate::membership::{ForceLeaveError, Member};
use crate::node::{ClusterStats, Node, Outbound, Refusal, Write, WriteAck, WriteError};
use crate::store::{Leaf, PendingSync, Store, StoreError, StoreRead};
use crate::wire::{Datagram, Frame, SyncAnswer, SyncRequest};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Most commands handled per group commit.
const MAX_GROUP: usize = 1024;

/// The wall clock in milliseconds since the Unix epoch: the one place the core's time comes from.
#[allow(clippy::disallowed_methods)] // the driver's wall clock, by design
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

enum Command {
    Write(Write, oneshot::Sender<Result<WriteAck, WriteError>>),
    Digest(oneshot::Sender<Leaf>),
    Members(oneshot::Sender<Vec<Member>>),
    RemoveMember(NodeId, oneshot::Sender<Result<Member, ForceLeaveError>>),
    Stats(oneshot::Sender<CoreStats>),
    Datagram(SocketAddr, Datagram),
    Frame(Frame),
    SyncRequest(NodeId, SyncRequest, oneshot::Sender<Option<SyncAnswer>>),
    SyncReply(u64, Option<SyncAnswer>),
    Leave(oneshot::Sender<()>),
    Tick,
    Shutdown(oneshot::Sender<()>),
}

/// What the metrics endpoint reads from the core.
#[derive(Clone, Debug)]
pub struct CoreStats {
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
    /// The core refused a write it was asked to make.
    #[error("the write was not applied ({0:?})")]
    NotApplied(Refusal),
}

impl From<WriteError> for CoreError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Store(e) => CoreError::Store(e),
            WriteError::ClockSkew(ahead) => CoreError::ClockSkew(ahead),
            WriteError::NotApplied(why) => CoreError::NotApplied(why),
        }
    }
}

/// A cheap, cloneable handle on the core for the HTTP handlers and the transport: it sends
/// commands. (Reads go to the store's reader, which [`start`] returns beside it.)
#[derive(Clone)]
pub struct NodeHandle {
    id: NodeId,
    commands: mpsc::Sender<Command>,
    /// What the core says about itself, mirrored after every group of commands.
    signals: Arc<Signals>,
}

/// The core's view of its own condition, readable without a round trip to the core thread (the
/// health endpoint must answer when the core is busy).
#[derive(Default)]
struct Signals {
    /// [`Node::is_resyncing`].
    resyncing: AtomicBool,
    /// [`Node::clock_status`]: out of bounds, and the median offset of the peers' clocks.
    clock_out_of_bounds: AtomicBool,
    clock_offset_ms: AtomicI64,
}

impl Signals {
    fn mirror<S: Store>(&self, node: &Node<S>) {
        self.resyncing.store(node.is_resyncing(), Ordering::Relaxed);
        let clock = node.clock_status();
        self.clock_out_of_bounds
            .store(clock.out_of_bounds, Ordering::Relaxed);
        self.clock_offset_ms
            .store(clock.median_offset_ms, Ordering::Relaxed);
    }
}

impl NodeHandle {
    pub fn id(&self) -> &NodeId {
        &self.id
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

    /// Applies a write and returns once it is durable (per the durability mode).
    pub async fn write(&self, write: Write) -> Result<WriteAck, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Write(write, tx)).await?;
        Ok(rx.await.map_err(|_| CoreError::Stopped)??)
    }

    /// The Merkle root of all replicated state.
    pub async fn digest(&self) -> Result<Leaf, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Digest(tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    /// Members as this node sees them, itself included.
    pub async fn members(&self) -> Result<Vec<Member>, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Members(tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    /// Forces member `id` out of the cluster (it is marked left everywhere).
    pub async fn remove_member(
        &self,
        id: NodeId,
    ) -> Result<Result<Member, ForceLeaveError>, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::RemoveMember(id, tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    pub async fn stats(&self) -> Result<CoreStats, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stats(tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    /// Announces that this node leaves the cluster; returns once the announcement is queued.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Hands a received datagram to the core; `false` if the core's queue is full (dropped).
    pub fn deliver_datagram(&self, from: SocketAddr, datagram: Datagram) -> bool {
        self.commands
            .try_send(Command::Datagram(from, datagram))
            .is_ok()
    }

    /// Hands a received one-way frame to the core (dropped if the queue is full: anti-entropy
    /// repairs what a dropped rumor carried).
    pub fn deliver_frame(&self, _from: SocketAddr, frame: Frame) {
        let _ = self.commands.try_send(Command::Frame(frame));
    }

    /// Asks the core to answer an anti-entropy request (`None`: refused or shutting down).
    pub async fn sync_request(
        &self,
        from: NodeId,
        request: SyncRequest,
    ) -> Option<Option<SyncAnswer>> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::SyncRequest(from, request, tx))
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Hands the reply of an anti-entropy request (or its failure, `None`) to the core.
    pub fn sync_reply(&self, session: u64, reply: Option<SyncAnswer>) {
        let commands = self.commands.clone();
        // Must not be lost (the session would stay open until it times out), so wait for room.
        tokio::spawn(async move {
            let _ = commands.send(Command::SyncReply(session, reply)).await;
        });
    }

    /// Stops the core after checkpointing the store; returns when it is done.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn send(&self, command: Command) -> Result<(), CoreError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| CoreError::Stopped)
    }
}

/// Starts the core thread and its timer (`tick` apart); what the core sends goes to `outbound`.
/// Returns the handle on the core and a reader of its store. Must be called inside a tokio
/// runtime.
pub fn start<S: Store>(
    node: Node<S>,
    tick: Duration,
    outbound: mpsc::UnboundedSender<Outbound>,
) -> (NodeHandle, Arc<dyn StoreRead>) {
    let (commands, rx) = mpsc::channel(4 * MAX_GROUP);
    let reader = node.store().reader();
    let signals = Arc::new(Signals::default());
    signals.mirror(&node);
    let handle = NodeHandle {
        id: node.id().clone(),
        commands: commands.clone(),
        signals: signals.clone(),
    };
    std::thread::Builder::new()
        .name("hearsay-core".into())
        .spawn(move || run_core(node, rx, outbound, signals))
        .map(drop)
        .unwrap_or_else(|e| panic!("cannot start the core thread: {e}"));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            // A full queue already wakes the core; a missed tick is harmless.
            if let Err(mpsc::error::TrySendError::Closed(_)) = commands.try_send(Command::Tick) {
                break;
            }
        }
    });
    (handle, reader)
}

/// Acknowledgements waiting for their group's writes to become durable.
type Acks = Vec<(
    oneshot::Sender<Result<WriteAck, WriteError>>,
    Result<WriteAck, WriteError>,
)>;

fn run_core<S: Store>(
    mut node: Node<S>,
    mut rx: mpsc::Receiver<Command>,
    outbound: mpsc::UnboundedSender<Outbound>,
    signals: Arc<Signals>,
) {
    // The log sync runs on its own thread, so the core applies the next group while the disk
    // syncs this one.
    let (to_syncer, syncer_rx) = std::sync::mpsc::channel::<(PendingSync, Acks)>();
    let syncer = std::thread::Builder::new()
        .name("hearsay-sync".into())
        .spawn(move || run_syncer(syncer_rx));
    if let Err(e) = syncer {
        tracing::error!(error = %e, "cannot start the sync thread");
        return;
    }
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = next_command(&mut rx) {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        let mut shutdown = None;
        let mut tick = false;
        for command in group.drain(..) {
            let now = wall_ms();
            let result = match command {
                Command::Write(write, reply) => {
                    acks.push((reply, node.handle_write(now, write)));
                    Ok(())
                }
                Command::Digest(reply) => {
                    let _ = reply.send(node.digest());
                    Ok(())
                }
                Command::Members(reply) => {
                    let _ = reply.send(node.members());
                    Ok(())
                }
                Command::RemoveMember(id, reply) => {
                    let _ = reply.send(node.remove_member(now, &id));
                    Ok(())
                }
                Command::Stats(reply) => {
                    let _ = reply.send(CoreStats {
                        digest: node.digest(),
                        cluster: node.cluster_stats(),
                        members: node.members(),
                        seen_entries: node.seen_entries(),
                    });
                    Ok(())
                }
                Command::Datagram(from, datagram) => node.handle_datagram(now, from, datagram),
                Command::Frame(frame) => node.handle_frame(now, frame),
                Command::SyncRequest(from, request, reply) => {
                    node.handle_sync_request(now, &from, request).map(|answer| {
                        let _ = reply.send(answer);
                    })
                }
                Command::SyncReply(session, reply) => node.handle_sync_reply(now, session, reply),
                Command::Leave(reply) => {
                    node.leave(now);
                    let _ = reply.send(());
                    Ok(())
                }
                Command::Tick => {
                    tick = true;
                    Ok(())
                }
                Command::Shutdown(reply) => {
                    shutdown = Some(reply);
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "storage error while merging cluster input");
            }
        }
        if tick {
            if let Err(e) = node.handle_tick(wall_ms()) {
                tracing::error!(error = %e, "storage error while collecting tombstones");
            }
        }
        for message in node.take_outbound() {
            let _ = outbound.send(message);
        }
        signals.mirror(&node);
        if !acks.is_empty() || node.has_uncommitted() {
            // Group commit: one sync makes every write of the group durable.
            match node.commit() {
                Ok(PendingSync::Done) => send_acks(acks, Ok(())),
                Ok(pending) => {
                    if let Err(std::sync::mpsc::SendError((_, acks))) =
                        to_syncer.send((pending, acks))
                    {
                        send_acks(acks, Err(StoreError::Io("the sync thread stopped".into())));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; the writes of this group are not acknowledged");
                    send_acks(acks, Err(e));
                }
            }
        }
        if tick {
            if let Err(e) = node.maintain_store() {
                tracing::error!(error = %e, "store housekeeping failed");
            }
        }
        if let Some(reply) = shutdown {
            if let Err(e) = node.checkpoint() {
                tracing::error!(error = %e, "final checkpoint failed; the log will be replayed at the next start");
            }
            // Close the store before answering, so the data directory is free once shutdown
            // returns (readers still held by HTTP handlers keep only their own handles).
            drop(node);
            let _ = reply.send(());
            return;
        }
    }
}

/// Waits for the next command. Under load the next write arrives within microseconds, and
/// parking the thread would make it wait for a scheduler wake-up (hundreds of microseconds on a
/// busy machine); so it first yields the CPU for a short while, staying runnable, and parks only
/// when the queue stays empty.
fn next_command(rx: &mut mpsc::Receiver<Command>) -> Option<Command> {
    stay_runnable(
        rx,
        |rx| match rx.try_recv() {
            Ok(command) => Some(Some(command)),
            Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
            Err(mpsc::error::TryRecvError::Empty) => None,
        },
        |rx| rx.blocking_recv(),
    )
}

/// Polls `poll` (yielding the CPU in between) for a short while, then blocks in `block`.
#[allow(clippy::disallowed_methods)] // the driver's own scheduling, not protocol time
fn stay_runnable<R, T>(
    source: &mut R,
    mut poll: impl FnMut(&mut R) -> Option<T>,
    block: impl FnOnce(&mut R) -> T,
) -> T {
    const STAY_RUNNABLE: Duration = Duration::from_micros(200);
    let until = std::time::Instant::now() + STAY_RUNNABLE;
    loop {
        if let Some(found) = poll(source) {
            return found;
        }
        if std::time::Instant::now() >= until {
            return block(source);
        }
        std::thread::yield_now();
    }
}

/// Completes pending log syncs and then sends their acknowledgements. Every group queued while a
/// sync ran was written before the next sync starts, so one sync covers all of them.
fn run_syncer(rx: std::sync::mpsc::Receiver<(PendingSync, Acks)>) {
    while let Ok((pending, mut acks)) = rx.recv() {
        let mut last = pending;
        while let Ok((more, more_acks)) = rx.try_recv() {
            // Every queued group's entries are already written, so the newest sync covers them.
            let _covered = std::mem::replace(&mut last, more);
            acks.extend(more_acks);
        }
        let synced = last.complete();
        if let Err(e) = &synced {
            tracing::error!(error = %e, "log sync failed; the writes of this group are not acknowledged");
        }
        send_acks(acks, synced);
    }
}

/// Sends each acknowledgement, or the sync error in place of successful results.
fn send_acks(acks: Acks, synced: Result<(), StoreError>) {
    for (reply, result) in acks {
        let result = match (&synced, result) {
            (Err(e), Ok(_)) => Err(WriteError::Store(StoreError::Io(e.to_string()))),
            (_, result) => result,
        };
        let _ = reply.send(result);
    }
}
