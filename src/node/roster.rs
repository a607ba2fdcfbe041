//! What a node remembers of its cluster across restarts: the ids and cluster addresses of the
//! other members it knows (but those that left), persisted whenever membership changes, and,
//! after a restart, the members it knew before and has not heard of since. A node started
//! without seeds joins through the remembered addresses (see `Node::open_in_cluster`), so that a
//! member that left, or whose seeds are gone, finds its cluster again.
//!
//! Membership itself starts empty after a restart and is learned again from seeds and peers.
//! Tombstone collection must not: a node that restarted on one side of a partition would
//! otherwise count only the members it hears from, report holding every write up to recent
//! timestamps while it lacks the other side's writes, and collect (and refuse) without them. So
//! until it hears of them again (or an operator forces them out, or the reap period passes),
//! the remembered members count for collection as down since the restart: they hold collection
//! back unless this node is among a majority and the grace period passes, as any member that
//! is down does. They are not probed or gossiped about: a member reaped while this node was
//! away must not come back to the others' tables.
//!
//! Owns no I/O: the core ([`super::Node`]) writes the roster with its next commit.

use super::Node;
use crate::clock::NodeId;
use crate::membership::{Member, MemberState};
use crate::store::{Store, StoreError, WriteBatch};
use core::net::{Ipv4Addr, SocketAddr};
use std::collections::BTreeMap;

/// The remembered members not heard of since the restart, and whether the persisted roster is
/// out of date.
#[derive(Debug, Default)]
pub(super) struct Roster {
    /// Member id → when it stops being expected (this node's clock, milliseconds).
    unheard: BTreeMap<NodeId, u64>,
    /// The cluster addresses recorded before the restart, kept for the members still unheard.
    addrs: BTreeMap<NodeId, SocketAddr>,
    dirty: bool,
}

impl Roster {
    /// The members `persisted` (with the cluster addresses `addrs`) before a restart at
    /// `now_ms`, expected for `reap_after_ms`.
    pub(super) fn restore(
        persisted: Vec<NodeId>,
        addrs: Vec<(NodeId, SocketAddr)>,
        now_ms: u64,
        reap_after_ms: u64,
    ) -> Self {
        let until = now_ms.saturating_add(reap_after_ms);
        Roster {
            unheard: persisted.into_iter().map(|id| (id, until)).collect(),
            addrs: addrs.into_iter().collect(),
            dirty: false,
        }
    }

    /// Membership changed (a member joined, changed state or was forgotten), or the roster last
    /// written was rolled back: it is written again.
    pub(super) fn changed(&mut self) {
        self.dirty = true;
    }

    /// Member `id` was heard of again (or forgotten for good): it is no longer only remembered.
    pub(super) fn heard_of(&mut self, id: &NodeId) {
        if self.unheard.remove(id).is_some() {
            self.dirty = true;
        }
    }

    /// Whether the roster changed since it was last written.
    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Whether `id` is a remembered member not heard of since the restart.
    pub(super) fn is_unheard(&self, id: &NodeId) -> bool {
        self.unheard.contains_key(id)
    }

    /// Drops the remembered members whose reap period passed at `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        let before = self.unheard.len();
        self.unheard.retain(|_, until| *until > now_ms);
        if self.unheard.len() != before {
            self.dirty = true;
        }
    }
}

/// A remembered member as collection sees it: down, at no address.
fn unheard_member(id: &NodeId) -> Member {
    let nowhere = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    Member::new(id.clone(), nowhere, nowhere, 0).with_state(MemberState::Dead)
}

impl<S: Store> Node<S> {
    /// The members tombstone collection counts at `now_ms`: every member known, and the members
    /// remembered from before a restart and not heard of since, as down.
    pub(super) fn collection_members(&mut self, now_ms: u64) -> Vec<Member> {
        self.roster.expire(now_ms);
        let mut members = self.members();
        for id in self.roster.unheard.keys() {
            if !members.iter().any(|m| m.id == *id) {
                members.push(unheard_member(id));
            }
        }
        members
    }

    /// Writes the roster with the current group if it changed: the ids of the members known
    /// (except those that left: gone for good, they need not hold collection back after a
    /// restart) and of those still remembered.
    pub(super) fn persist_roster(&mut self) -> Result<(), StoreError> {
        if !self.roster.dirty {
            return Ok(());
        }
        let mut addrs: BTreeMap<NodeId, SocketAddr> = self
            .cluster
            .membership
            .members()
            .filter(|m| m.id != self.id && m.state != MemberState::Left)
            .map(|m| (m.id.clone(), m.gossip_addr))
            .collect();
        let unheard = &self.roster.unheard;
        self.roster.addrs.retain(|id, _| unheard.contains_key(id));
        for (id, addr) in &self.roster.addrs {
            addrs.entry(id.clone()).or_insert(*addr);
        }
        let mut ids: Vec<NodeId> = addrs.keys().cloned().collect();
        ids.extend(unheard.keys().cloned());
        ids.sort();
        ids.dedup();
        self.store.apply(WriteBatch {
            roster: Some(ids),
            member_addrs: Some(addrs.into_iter().collect()),
            ..WriteBatch::default()
        })?;
        self.roster.dirty = false;
        Ok(())
    }

    /// Forgets remembered member `id` (an operator forced it out before this node heard of it
    /// again). Returns its record, as left.
    pub(super) fn forget_unheard(&mut self, id: &NodeId) -> Option<Member> {
        if !self.roster.is_unheard(id) {
            return None;
        }
        self.roster.heard_of(id);
        self.tombstones.forget_member(id);
        Some(unheard_member(id).with_state(MemberState::Left))
    }
}
