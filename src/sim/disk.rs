//! A simulated node's sync thread, ordered as `src/runtime/release.rs` orders the real one: each
//! event a core handles is one group (the client's answer, the answers of waits that ended (`?w=`,
//! `?r=`), the anti-entropy answer, the messages the core produced, and the pending sync of the
//! group's commit). A sync covers every group
//! queued while the previous sync ran; once it completes, its groups are released in order. A
//! failed sync (or a failed commit) turns its group's acknowledgements into errors and its
//! answers into refusals, and sends nothing of it; so for every later group, built on it, until
//! the core has rolled back (which the simulator has it do at once). A crash drops everything
//! not yet released.
//!
//! Owns no protocol logic and no clock: the simulator says when a sync completes.

use crate::clock::NodeId;
use crate::node::{KeyChange, Outbound, Tally, WriteAck, WriteError};
use crate::store::{PendingSync, StoreError, StoreKey};
use crate::wire::SyncAnswer;

/// Who sent an anti-entropy request, so that its answer can go back: a node, in the life
/// (epoch) its core had then (a core restarted since has no such session: the connection the
/// answer would travel on is gone), or the hostile participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Requester {
    Node { index: usize, epoch: u64 },
    Hostile,
}

/// One thing a group produced, released once the group is durable.
pub(super) enum Release {
    /// A client's write, answered.
    Ack {
        id: u64,
        result: Result<WriteAck, WriteError>,
    },
    /// A client's write that waited for other members, answered once its wait ended: the
    /// acknowledgement with who holds it (met or timed out), or an error when a failed sync
    /// undid it. Sent as it is even in a failed group.
    Waited {
        id: u64,
        key: StoreKey,
        result: Result<WriteAck, WriteError>,
    },
    /// A client's read that waited for other members, answered once its wait ended (`None`:
    /// the group's sync failed, and with it what the read merged: the client gets an error).
    Read {
        id: u64,
        key: StoreKey,
        tally: Option<Tally>,
    },
    /// The answer to an anti-entropy request (`None`: refused).
    Answer {
        to: Requester,
        to_id: NodeId,
        session: u64,
        answer: Option<SyncAnswer>,
    },
    Send(Outbound),
}

impl Release {
    /// What a failed sync makes of it: an error in place of an acknowledgement, a refusal in
    /// place of an answer, and nothing in place of a message.
    pub(super) fn failed(self, e: &StoreError) -> Option<Release> {
        match self {
            Release::Ack { id, result } => Some(Release::Ack {
                id,
                result: result.and(Err(WriteError::Store(StoreError::Io(e.to_string())))),
            }),
            // The core ends a write's wait only once the write is durable (or undone): a
            // later group's failure does not change its answer (as `runtime/release.rs`).
            waited @ Release::Waited { .. } => Some(waited),
            Release::Read { id, key, .. } => Some(Release::Read {
                id,
                key,
                tally: None,
            }),
            Release::Answer {
                to, to_id, session, ..
            } => Some(Release::Answer {
                to,
                to_id,
                session,
                answer: None,
            }),
            Release::Send(_) => None,
        }
    }
}

/// What one event at a node produced, and the sync it waits for.
pub(super) struct Group {
    /// The number of the node's last commit when the group was produced.
    pub(super) commit: u64,
    /// Why its commit failed, if it did: it fails like a failed sync.
    pub(super) failed: Option<StoreError>,
    pub(super) pending: PendingSync,
    pub(super) releases: Vec<Release>,
    /// The key changes the core recorded in the group: once it is durable, what the node's
    /// disk holds (never released early, whatever the driver).
    pub(super) changes: Vec<KeyChange>,
    /// Simulated time the group was produced (microseconds).
    pub(super) at_us: u64,
}

/// What to do with a group just queued.
pub(super) enum Queued {
    /// Nothing to wait for: release it now.
    Release(Group),
    /// Its commit failed: fail it and roll back.
    Fail(Group),
    /// A sync starts: schedule its completion.
    StartSync,
    /// It waits for the sync in progress.
    Waiting,
}

/// What a completed sync releases.
pub(super) struct Completed {
    /// The groups it made durable, to release in order.
    pub(super) groups: Vec<Group>,
    /// With a failure, the groups that fail with it (the failed one and every later one): the
    /// core must roll back.
    pub(super) failed: Vec<Group>,
    pub(super) failure: Option<StoreError>,
    /// Groups queued meanwhile with nothing to sync, released right after.
    pub(super) then: Vec<Group>,
    /// The other queued groups form the next sync: schedule its completion.
    pub(super) sync_again: bool,
}

/// One node's sync thread.
#[derive(Default)]
pub(super) struct Syncer {
    /// The groups the sync in progress covers (empty when idle).
    running: Vec<Group>,
    busy: bool,
    /// Groups queued while a sync runs: the next sync covers them all.
    waiting: Vec<Group>,
    /// Bumped at every crash, so that a completion scheduled before it is ignored.
    pub(super) epoch: u64,
    /// Every group produced up to this time (microseconds) is durable.
    pub(super) durable_through_us: u64,
}

impl Syncer {
    pub(super) fn queue(&mut self, group: Group) -> Queued {
        if self.busy {
            self.waiting.push(group);
            return Queued::Waiting;
        }
        if group.failed.is_some() {
            return Queued::Fail(group);
        }
        if matches!(group.pending, PendingSync::Done) {
            self.durable(group.at_us);
            return Queued::Release(group);
        }
        self.running.push(group);
        self.busy = true;
        Queued::StartSync
    }

    /// The sync in progress completed: runs the pending syncs of its groups, in order, up to
    /// the first that fails. Queued groups become the next sync, unless none of them has
    /// anything to sync: those are released right after, as a batch of their own. After a
    /// failure every later group fails too.
    pub(super) fn complete(&mut self) -> Completed {
        let mut groups = Vec::new();
        let mut failed = Vec::new();
        let mut failure = None;
        for mut group in std::mem::take(&mut self.running) {
            if failure.is_none() {
                let pending = std::mem::replace(&mut group.pending, PendingSync::Done);
                match group.failed.take().map_or_else(|| pending.complete(), Err) {
                    Ok(()) => {
                        self.durable(group.at_us);
                        groups.push(group);
                        continue;
                    }
                    Err(e) => failure = Some(e),
                }
            }
            failed.push(group);
        }
        let next = std::mem::take(&mut self.waiting);
        if failure.is_some() {
            failed.extend(next);
            self.busy = false;
            return Completed {
                groups,
                failed,
                failure,
                then: Vec::new(),
                sync_again: false,
            };
        }
        if next
            .iter()
            .all(|g| g.failed.is_none() && matches!(g.pending, PendingSync::Done))
        {
            self.busy = false;
            if let Some(last) = next.last() {
                self.durable(last.at_us);
            }
            return Completed {
                groups,
                failed,
                failure,
                then: next,
                sync_again: false,
            };
        }
        self.running = next;
        Completed {
            groups,
            failed,
            failure,
            then: Vec::new(),
            sync_again: true,
        }
    }

    /// The node crashed: returns what was never released.
    pub(super) fn crash(&mut self) -> Vec<Release> {
        self.epoch += 1;
        self.busy = false;
        std::mem::take(&mut self.running)
            .into_iter()
            .chain(std::mem::take(&mut self.waiting))
            .flat_map(|g| g.releases)
            .collect()
    }

    /// The node (re)started at `now_us` on a store whose contents are all durable.
    pub(super) fn restarted(&mut self, now_us: u64) {
        self.durable_through_us = self.durable_through_us.max(now_us);
    }

    fn durable(&mut self, at_us: u64) {
        self.durable_through_us = self.durable_through_us.max(at_us);
    }
}
