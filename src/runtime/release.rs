//! What leaves the node once a group of writes is durable, and the threads that wait on disks:
//! the sync thread completes each group's log sync and only then sends the group's
//! acknowledgements, anti-entropy answers and cluster messages, in order, so no write reaches a
//! client or a peer before it is on disk (a write whose sync fails is answered with an error and
//! goes nowhere). Under `batch` durability it also syncs the log every few milliseconds. The
//! checkpoint thread flushes the database and syncs the file system, which can take long, so
//! the core never waits on it.

use super::handle::{ClusterCommand, Doorbell};
use crate::node::{Outbound, WriteAck, WriteError};
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
}

/// A committed group: its pending sync and what waits for it.
pub(super) struct Group {
    pub(super) pending: PendingSync,
    pub(super) releases: Vec<Release>,
}

/// The sync thread's loop (see the module doc). Every group queued while a sync ran was written
/// before the next sync starts, so one sync per log file covers all of them.
pub(super) fn run_syncer(
    groups: std::sync::mpsc::Receiver<Group>,
    outbound: mpsc::UnboundedSender<Outbound>,
) {
    // Log files written under `batch` durability and not yet synced.
    let mut unsynced: Vec<Arc<File>> = Vec::new();
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
        let mut batch = vec![first];
        batch.extend(groups.try_iter());
        let mut now: Vec<Arc<File>> = Vec::new();
        let mut failure = None;
        let mut releases = Vec::with_capacity(batch.len());
        for group in batch {
            match group.pending {
                PendingSync::Done => {}
                PendingSync::Log(file) => add_once(&mut now, &file),
                PendingSync::Soon(file) => add_once(&mut unsynced, &file),
                memory @ PendingSync::Memory(_) => {
                    if let Err(e) = memory.complete() {
                        failure.get_or_insert(e);
                    }
                }
            }
            releases.push(group.releases);
        }
        if let Err(e) = now.iter().try_for_each(|file| file.sync_data()) {
            failure.get_or_insert(StoreError::Io(e.to_string()));
        }
        if let Some(e) = &failure {
            tracing::error!(error = %e, "log sync failed; the writes of this group are not acknowledged and nothing of it is sent");
        }
        for group in releases {
            release(group, failure.as_ref(), &outbound);
        }
    }
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
            (Release::Send(_), Some(_)) => {}
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
