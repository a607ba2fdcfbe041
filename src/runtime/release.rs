//! What leaves the node once a group of writes is durable, and the threads that wait on disks:
//! the sync thread completes each group's log sync and only then sends the group's
//! acknowledgements, anti-entropy answers and cluster messages, in order, so no write reaches a
//! client or a peer before it is on disk (a write whose sync fails is answered with an error and
//! goes nowhere). Under `batch` durability it also syncs the log every few milliseconds. The
//! checkpoint thread flushes the database and syncs the file system, which can take long, so
//! the core never waits on it.

use super::handle::{ClusterCommand, Doorbell};
use crate::node::{KeyChange, Outbound, Tally, WriteAck, WriteError};
use crate::store::{CheckpointWork, PendingSync, StoreError};
use crate::wire::SyncAnswer;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long `batch` durability leaves written log entries unsynced.
const BATCH_SYNC_EVERY: Duration = Duration::from_millis(5);

/// One thing a group produced, released once the group is durable.
pub(super) enum Release {
    Ack(
        oneshot::Sender<Result<WriteAck, WriteError>>,
        Result<WriteAck, WriteError>,
    ),
    /// The answer to a peer's anti-entropy request.
    Answer(oneshot::Sender<Option<SyncAnswer>>, Option<SyncAnswer>),
    Send(Outbound),
    /// Key changes, for the watchers ([`super::ChangeFeed`]).
    Changes(Vec<KeyChange>),
    /// The end of a read's wait: the states it merged are durable.
    Read(oneshot::Sender<Option<Tally>>, Tally),
    /// The answer to a write that waited for other members: the core ends such a wait only
    /// once the write is durable here (or undone), so no later failure changes it.
    Waited(
        oneshot::Sender<Result<WriteAck, WriteError>>,
        Result<WriteAck, WriteError>,
    ),
}

/// A committed group: its pending sync and what waits for it.
pub(super) struct Group {
    /// The number of the last commit the group includes.
    pub(super) commit: u64,
    /// What remains before it is durable, or why its commit failed.
    pub(super) pending: Result<PendingSync, StoreError>,
    /// The first group after a rollback: the sync thread stops failing groups.
    pub(super) resumes: bool,
    pub(super) releases: Vec<Release>,
}

/// Where the sync thread tells the core thread what became of its syncs, and publishes the
/// changes made durable.
pub(super) struct Reports {
    pub(super) core: mpsc::Sender<ClusterCommand>,
    pub(super) doorbell: Doorbell,
    pub(super) feed: Arc<super::ChangeFeed>,
}

/// Reports syncs to the core, each commit once.
struct Reporter {
    reports: Reports,
    last_synced: u64,
}

impl Reporter {
    fn send(&self, command: ClusterCommand) {
        if self.reports.core.blocking_send(command).is_ok() {
            self.reports.doorbell.ring();
        }
    }

    fn synced(&mut self, commit: u64) {
        if commit > self.last_synced {
            self.last_synced = commit;
            self.send(ClusterCommand::Synced(commit));
        }
    }
}

/// The sync thread's loop (see the module doc). Every group queued while a sync ran was written
/// before the next sync starts, so one sync per log file covers all of them. After a failure,
/// every group fails until the core has rolled back (it marks the next group as resuming): what
/// they hold was applied on top of the failed writes.
pub(super) fn run_syncer(
    groups: std::sync::mpsc::Receiver<Group>,
    outbound: mpsc::UnboundedSender<Outbound>,
    reports: Reports,
) {
    // Log files written under `batch` durability and not yet synced.
    let mut unsynced: Vec<Arc<File>> = Vec::new();
    let mut failing: Option<StoreError> = None;
    let mut reports = Reporter {
        reports,
        last_synced: 0,
    };
    loop {
        let first = if unsynced.is_empty() {
            match groups.recv() {
                Ok(group) => group,
                Err(_) => return,
            }
        } else {
            match groups.recv_timeout(BATCH_SYNC_EVERY) {
                Ok(group) => group,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    for file in unsynced.drain(..) {
                        if let Err(e) = file.sync_data() {
                            tracing::error!(error = %e, "periodic log sync failed");
                        }
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        // Groups waiting for the log files in `files`, released once one sync of each is done.
        let mut held: Vec<Group> = Vec::new();
        let mut files: Vec<Arc<File>> = Vec::new();
        for mut group in std::iter::once(first).chain(groups.try_iter()) {
            if group.resumes {
                failing = None;
            }
            if let Some(e) = &failing {
                release(
                    std::mem::take(&mut group.releases),
                    Some(e),
                    &outbound,
                    &reports,
                );
                continue;
            }
            let failure = match std::mem::replace(&mut group.pending, Ok(PendingSync::Done)) {
                Ok(PendingSync::Done) => None,
                Ok(PendingSync::Log(file)) => {
                    add_once(&mut files, &file);
                    None
                }
                Ok(PendingSync::Soon(file)) => {
                    add_once(&mut unsynced, &file);
                    None
                }
                // A memory sync: everything held before it must be durable first.
                Ok(memory @ PendingSync::Memory(_)) => {
                    sync_held(&mut held, &mut files, &outbound, &mut reports)
                        .err()
                        .or_else(|| memory.complete().err())
                }
                Err(e) => Some(e),
            };
            match failure {
                None => held.push(group),
                Some(e) => {
                    let e = match sync_held(&mut held, &mut files, &outbound, &mut reports) {
                        Err(earlier) => earlier,
                        Ok(()) => e,
                    };
                    tracing::error!(error = %e, "a log sync failed: the writes since the last durable commit are refused, undone and sent nowhere");
                    release(group.releases, Some(&e), &outbound, &reports);
                    reports.send(ClusterCommand::SyncFailed);
                    failing = Some(e);
                }
            }
        }
        if let Err(e) = sync_held(&mut held, &mut files, &outbound, &mut reports) {
            tracing::error!(error = %e, "a log sync failed: the writes since the last durable commit are refused, undone and sent nowhere");
            reports.send(ClusterCommand::SyncFailed);
            failing = Some(e);
        }
    }
}

/// Syncs `files` once each, then releases the `held` groups (or fails them all).
fn sync_held(
    held: &mut Vec<Group>,
    files: &mut Vec<Arc<File>>,
    outbound: &mpsc::UnboundedSender<Outbound>,
    reports: &mut Reporter,
) -> Result<(), StoreError> {
    let synced = files
        .drain(..)
        .try_for_each(|file| file.sync_data())
        .map_err(|e| StoreError::Io(e.to_string()));
    let last = held.last().map(|g| g.commit);
    for group in held.drain(..) {
        release(group.releases, synced.as_ref().err(), outbound, reports);
    }
    if let (Ok(()), Some(commit)) = (&synced, last) {
        reports.synced(commit);
    }
    synced
}

fn add_once(files: &mut Vec<Arc<File>>, file: &Arc<File>) {
    if !files.iter().any(|f| Arc::ptr_eq(f, file)) {
        files.push(file.clone());
    }
}

/// Sends a group's acknowledgements, answers and messages; after a failed sync, errors in place
/// of acknowledgements, refusals in place of answers, and no messages.
fn release(
    releases: Vec<Release>,
    failure: Option<&StoreError>,
    outbound: &mpsc::UnboundedSender<Outbound>,
    reports: &Reporter,
) {
    for item in releases {
        match (item, failure) {
            (Release::Ack(reply, result), None) => {
                let _ = reply.send(result);
            }
            (Release::Ack(reply, result), Some(e)) => {
                let failed = result.and(Err(WriteError::Store(StoreError::Io(e.to_string()))));
                let _ = reply.send(failed);
            }
            (Release::Answer(reply, answer), None) => {
                let _ = reply.send(answer);
            }
            (Release::Answer(reply, _), Some(_)) => {
                let _ = reply.send(None);
            }
            (Release::Send(message), None) => {
                let _ = outbound.send(message);
            }
            // An exchange whose request never leaves fails at once, instead of waiting for its
            // timeout (which would hold tombstone collection back).
            (Release::Send(Outbound::SyncRequest { session, .. }), Some(_)) => {
                reports.send(ClusterCommand::SyncReply(session, None));
            }
            (Release::Send(_), Some(_)) => {}
            (Release::Changes(changes), None) => reports.reports.feed.publish(changes),
            // Undone by the rollback that follows: they never happened.
            (Release::Changes(_), Some(_)) => {}
            (Release::Waited(reply, result), _) => {
                let _ = reply.send(result);
            }
            (Release::Read(reply, tally), None) => {
                let _ = reply.send(Some(tally));
            }
            // What it merged is undone: the reader is told the node failed (dropped reply).
            (Release::Read(..), Some(_)) => {}
        }
    }
}

/// The checkpoint thread's loop: runs each checkpoint's slow part and tells the core.
pub(super) fn run_checkpointer(
    work: std::sync::mpsc::Receiver<CheckpointWork>,
    core: mpsc::Sender<ClusterCommand>,
    doorbell: Doorbell,
) {
    while let Ok(checkpoint) = work.recv() {
        let result = checkpoint.run();
        if core
            .blocking_send(ClusterCommand::CheckpointDone(result))
            .is_err()
        {
            return;
        }
        doorbell.ring();
    }
}
