//! The driver loop: owns the core ([`Node`]) on a dedicated thread and feeds it, reads the wall
//! clock, fires its timer, and implements group commit. No protocol decisions live here.
//!
//! Each round the core drains its cluster queue first (the transport's input: probes and their
//! answers never wait behind client writes), fires its timer when due, then applies up to
//! [`MAX_GROUP`] client commands. One commit covers the round; the sync thread (`release.rs`)
//! completes its `fdatasync` while the core goes on with the next round, and only then sends the
//! round's acknowledgements, anti-entropy answers and cluster messages, so nothing leaves the
//! node before the writes it carries are durable. Checkpoints run on their own thread.
//!
//! Files: `handle.rs` (the queues and [`NodeHandle`]), `release.rs` (the sync and checkpoint
//! threads).

mod feed;
mod handle;
mod release;

pub use feed::{ChangeFeed, FeedEvent, FeedRead, FEED_CAPACITY};
pub use handle::{CoreError, CoreStats, NodeHandle};

use crate::node::{Node, Outbound, Tally, WaitOutcome, WriteAck, WriteError};
use crate::store::{PendingSync, Store, StoreError, StoreRead};
use handle::{ClientCommand, ClusterCommand, Doorbell, Signals};
use release::{Group, Release};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::sync::oneshot;

/// Most client commands applied per round (one group commit).
const MAX_GROUP: usize = 1024;
/// Client commands stop being taken in a round after this long, so that cluster input and timers
/// never wait long behind large writes.
const ROUND_BUDGET: Duration = Duration::from_millis(20);
/// Most cluster inputs handled per round, so client writes still progress under a flood.
const MAX_CLUSTER: usize = 4096;
/// Capacity of each queue. Cluster input beyond it is dropped and counted by the transport;
/// client handlers wait for room (the HTTP layer bounds how many are in flight).
const QUEUE: usize = 4096;

/// The wall clock in milliseconds since the Unix epoch: the one place the core's time comes from.
#[allow(clippy::disallowed_methods)] // the driver's wall clock, by design
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts the core thread (its timer fires every `tick`) and its sync and checkpoint threads;
/// what the core sends goes to `outbound`. Returns the handle on the core and a reader of its
/// store. Must be called inside a tokio runtime.
pub fn start<S: Store>(
    mut node: Node<S>,
    tick: Duration,
    outbound: mpsc::UnboundedSender<Outbound>,
) -> (NodeHandle, Arc<dyn StoreRead>) {
    let (clients, client_rx) = mpsc::channel(QUEUE);
    let (cluster, cluster_rx) = mpsc::channel(QUEUE);
    let (ring, rung) = std::sync::mpsc::sync_channel(1);
    let reader = node.store().reader();
    let signals = Arc::new(Signals::default());
    signals.mirror(&node);
    node.record_changes();
    let feed = Arc::new(ChangeFeed::starting_at(wall_ms()));
    let handle = NodeHandle {
        id: node.id().clone(),
        clients,
        cluster,
        doorbell: Doorbell(ring),
        signals: signals.clone(),
        feed: feed.clone(),
    };
    let core = Core {
        feed,
        clients: client_rx,
        cluster: cluster_rx,
        doorbell: rung,
        signals,
        tick,
        rolled_back: false,
        waiting: HashMap::new(),
    };
    let back = (handle.cluster.clone(), handle.doorbell.clone());
    std::thread::Builder::new()
        .name("hearsay-core".into())
        .spawn(move || core.run(node, outbound, back))
        .map(drop)
        .unwrap_or_else(|e| panic!("cannot start the core thread: {e}"));
    (handle, reader)
}

/// The core thread's end of the queues.
struct Core {
    clients: mpsc::Receiver<ClientCommand>,
    cluster: mpsc::Receiver<ClusterCommand>,
    doorbell: std::sync::mpsc::Receiver<()>,
    signals: Arc<Signals>,
    /// Where the sync thread publishes durable changes.
    feed: Arc<ChangeFeed>,
    tick: Duration,
    /// A rollback happened since the last group was sent: the next one resumes the sync thread.
    rolled_back: bool,
    /// Clients whose write or read waits for other members, by the core's request number.
    waiting: HashMap<u64, Waiter>,
}

/// A client waiting for a [`WaitOutcome`].
enum Waiter {
    Write(oneshot::Sender<Result<WriteAck, WriteError>>, WriteAck),
    Read(oneshot::Sender<Option<Tally>>),
}

impl Waiter {
    /// What the client gets once its wait ended.
    fn release(self, outcome: WaitOutcome) -> Option<Release> {
        match (self, outcome) {
            (Waiter::Write(reply, _), WaitOutcome::Write { undone: true, .. }) => {
                let undone = StoreError::Io("the write's sync failed: it was undone".into());
                Some(Release::Waited(reply, Err(WriteError::Store(undone))))
            }
            (Waiter::Write(reply, mut ack), WaitOutcome::Write { tally, .. }) => {
                ack.replicas = Some(tally);
                Some(Release::Waited(reply, Ok(ack)))
            }
            (Waiter::Read(reply), WaitOutcome::Read { tally, .. }) => {
                Some(Release::Read(reply, tally))
            }
            _ => None,
        }
    }
}

impl Core {
    #[allow(clippy::disallowed_methods)] // the driver's own timer, not protocol time
    fn run<S: Store>(
        mut self,
        mut node: Node<S>,
        outbound: mpsc::UnboundedSender<Outbound>,
        (back, bell): (mpsc::Sender<ClusterCommand>, Doorbell),
    ) {
        let (to_syncer, groups) = std::sync::mpsc::channel::<Group>();
        let (to_checkpointer, checkpoints) = std::sync::mpsc::channel();
        let reports = release::Reports {
            core: back.clone(),
            doorbell: bell.clone(),
            feed: self.feed.clone(),
        };
        let started = std::thread::Builder::new()
            .name("hearsay-sync".into())
            .spawn(move || release::run_syncer(groups, outbound, reports))
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("hearsay-checkpoint".into())
                    .spawn(move || release::run_checkpointer(checkpoints, back, bell))
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the sync threads");
            return;
        }
        let mut next_tick = Instant::now();
        loop {
            self.wait(next_tick);
            let mut releases = Vec::new();
            let mut writes = false;
            let mut shutdown = None;
            let open = self.cluster_input(&mut node, &mut releases);
            let resumes = std::mem::take(&mut self.rolled_back);
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + self.tick;
                if let Err(e) = node.handle_tick(wall_ms()) {
                    tracing::error!(error = %e, "storage error while collecting tombstones");
                }
            }
            let round_started = Instant::now();
            for _ in 0..MAX_GROUP {
                // Cluster input waits at most one round: a round of large writes ends early.
                if round_started.elapsed() > ROUND_BUDGET {
                    break;
                }
                let Ok(command) = self.clients.try_recv() else {
                    break;
                };
                writes |= matches!(command, ClientCommand::Write(..));
                if let Some(reply) =
                    client_command(&mut node, command, &mut releases, &mut self.waiting)
                {
                    shutdown = Some(reply);
                    break;
                }
            }
            for outcome in node.take_wait_outcomes() {
                let waiter = self.waiting.remove(&outcome.request());
                releases.extend(waiter.and_then(|w| w.release(outcome)));
            }
            releases.extend(node.take_outbound().into_iter().map(Release::Send));
            let changes = node.take_changes();
            if !changes.is_empty() {
                releases.push(Release::Changes(changes));
            }
            self.signals.mirror(&node);
            let committing = writes || node.has_uncommitted();
            let pending = if committing {
                node.commit()
            } else {
                Ok(PendingSync::Done)
            };
            // A failed commit fails at the sync thread like a failed sync, in order, so that the
            // groups before it are released first and the core rolls back after them.
            if committing || resumes || !releases.is_empty() {
                let _ = to_syncer.send(Group {
                    commit: node.commits(),
                    pending,
                    resumes,
                    releases,
                });
            }
            match node.begin_checkpoint() {
                Ok(Some(work)) => {
                    let _ = to_checkpointer.send(work);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "cannot start a checkpoint"),
            }
            if let Some(reply) = shutdown {
                if let Err(e) = node.close() {
                    tracing::error!(error = %e, "final checkpoint failed; the log will be replayed at the next start");
                }
                // Close the store before answering, so the data directory is free once shutdown
                // returns (readers still held by HTTP handlers keep only their own handles).
                drop(node);
                let _ = reply.send(());
                return;
            }
            if !open {
                return;
            }
        }
    }

    /// Handles the queued cluster input (at most [`MAX_CLUSTER`]); `false` once the queue is
    /// closed (the node is gone).
    fn cluster_input<S: Store>(&mut self, node: &mut Node<S>, releases: &mut Vec<Release>) -> bool {
        for _ in 0..MAX_CLUSTER {
            let command = match self.cluster.try_recv() {
                Ok(command) => command,
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            };
            let now = wall_ms();
            let result = match command {
                ClusterCommand::Datagram(from, datagram) => {
                    node.handle_datagram(now, from, datagram)
                }
                ClusterCommand::Frame(frame) => node.handle_frame(now, frame),
                ClusterCommand::SyncRequest(from, request, reply) => node
                    .handle_sync_request(now, &from, request)
                    .map(|answer| releases.push(Release::Answer(reply, answer))),
                ClusterCommand::SyncReply(session, reply) => {
                    node.handle_sync_reply(now, session, reply)
                }
                ClusterCommand::Stale(from, peer, sent_ms) => {
                    node.handle_stale(now, from, &peer, sent_ms);
                    Ok(())
                }
                ClusterCommand::SeedResolved(name, addrs) => {
                    node.handle_seed_resolved(now, &name, addrs);
                    Ok(())
                }
                ClusterCommand::CheckpointDone(result) => {
                    node.checkpoint_done(result);
                    Ok(())
                }
                ClusterCommand::Synced(commit) => {
                    node.synced_through(commit);
                    Ok(())
                }
                ClusterCommand::SyncFailed => {
                    self.rolled_back = true;
                    // What this round produced so far was built on the undone writes: the
                    // answers taken from the core go unanswered (it drops the rest itself).
                    for item in releases.iter_mut() {
                        if let Release::Answer(_, answer) = item {
                            *answer = None;
                        }
                    }
                    node.rollback()
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "storage error while merging cluster input");
            }
        }
        true
    }

    /// Waits until a queue has something or the timer is due. Under load the next command
    /// arrives within microseconds, and parking the thread would make it wait for a scheduler
    /// wake-up (hundreds of microseconds on a busy machine); so it first yields the CPU for a
    /// short while, staying runnable, and parks only when nothing comes.
    #[allow(clippy::disallowed_methods)] // the driver's own scheduling, not protocol time
    fn wait(&self, next_tick: Instant) {
        const STAY_RUNNABLE: Duration = Duration::from_micros(200);
        let spin_until = Instant::now() + STAY_RUNNABLE;
        loop {
            if !self.cluster.is_empty() || !self.clients.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= next_tick {
                return;
            }
            if now >= spin_until {
                let _ = self.doorbell.recv_timeout(next_tick - now);
                return;
            }
            std::thread::yield_now();
        }
    }
}

/// Applies one client command; returns the reply channel of a shutdown (which ends the loop).
fn client_command<S: Store>(
    node: &mut Node<S>,
    command: ClientCommand,
    releases: &mut Vec<Release>,
    waiting: &mut HashMap<u64, Waiter>,
) -> Option<oneshot::Sender<()>> {
    let now = wall_ms();
    match command {
        ClientCommand::Write(write, precondition, wait, reply) => {
            match node.handle_write_waiting(now, write, &precondition, wait) {
                Ok(ack) => match ack.awaiting {
                    Some(request) => {
                        waiting.insert(request, Waiter::Write(reply, ack));
                    }
                    None => releases.push(Release::Ack(reply, Ok(ack))),
                },
                Err(e) => releases.push(Release::Ack(reply, Err(e))),
            }
        }
        ClientCommand::Read(key, wait, reply) => match node.start_read(now, key, wait) {
            Some(request) => {
                waiting.insert(request, Waiter::Read(reply));
            }
            None => {
                let _ = reply.send(None);
            }
        },
        ClientCommand::Digest(reply) => {
            let _ = reply.send(node.digest());
        }
        ClientCommand::BackupChunk(leaves, reply) => {
            let _ = reply.send(node.backup_chunk(leaves));
        }
        ClientCommand::Members(reply) => {
            let _ = reply.send(node.members());
        }
        ClientCommand::RemoveMember(id, reply) => {
            let _ = reply.send(node.remove_member(now, &id));
        }
        ClientCommand::Overwritten(key, reply) => {
            let _ = reply.send(node.overwritten(&key));
        }
        ClientCommand::Stats(reply) => {
            let _ = reply.send(CoreStats {
                heal: node.heal_report(),
                digest: node.digest(),
                cluster: node.cluster_stats(),
                members: node.members(),
                seen_entries: node.seen_entries(),
            });
        }
        ClientCommand::Leave(reply) => {
            node.leave(now);
            let _ = reply.send(());
        }
        ClientCommand::Shutdown(reply) => return Some(reply),
    }
    None
}
