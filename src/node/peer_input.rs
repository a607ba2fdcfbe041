//! Checks on what peers send, before any of it touches state: a state's kind must match its
//! keyspace, a timestamp must not be further ahead of this node's wall clock than the skew bound,
//! a collection horizon must be one the peer announced, requests come from members. What fails is
//! dropped, counted (`hearsay_cluster_dropped_total{reason}`: `clock_skew`, `wrong_kind`,
//! `invalid`) and logged at most once per peer and reason every [`LOG_EVERY_MS`].
//!
//! Never touches sockets or clocks (time comes in as `now_ms`); never merges anything itself.

use super::{Node, Refusal};
use crate::clock::{ClockAhead, NodeId, Timestamp};
use crate::crdt::KeyState;
use crate::store::{Store, StoreKey};
use std::collections::BTreeMap;

/// A refusal of one kind from one peer is logged at most this often (milliseconds).
const LOG_EVERY_MS: u64 = 10_000;
/// Peers and reasons remembered for rate-limiting logs; beyond it the memory starts over.
const MAX_LOGGED: usize = 1_024;

/// When each (peer, reason) was last logged.
#[derive(Default)]
pub(super) struct RefusalLog {
    last: BTreeMap<(NodeId, &'static str), u64>,
}

impl RefusalLog {
    /// Whether a refusal of `reason` from `peer` at `now_ms` should be logged.
    pub(super) fn due(&mut self, peer: &NodeId, reason: &'static str, now_ms: u64) -> bool {
        if self.last.len() >= MAX_LOGGED {
            self.last.clear();
        }
        let last = self.last.entry((peer.clone(), reason)).or_insert(0);
        if *last != 0 && now_ms < *last + LOG_EVERY_MS {
            return false;
        }
        *last = now_ms.max(1);
        true
    }
}

impl<S: Store> Node<S> {
    /// Whether a peer's state may be merged at all: of the right kind, and stamped within the
    /// skew bound of wall time `now_ms`. Checked before a rumor is even marked as seen.
    pub(super) fn vet(&self, key: &StoreKey, state: &KeyState, now_ms: u64) -> Result<(), Refusal> {
        if !key.holds(state) {
            return Err(Refusal::WrongKind);
        }
        if let KeyState::Register(r) = state {
            self.check_clock(r.timestamp, now_ms)
                .map_err(Refusal::ClockSkew)?;
        }
        // Lies first: a state that could never be taken is counted as what it is.
        if self.disk.is_full() {
            return Err(Refusal::DiskFull);
        }
        Ok(())
    }

    /// Whether a peer's timestamp is within the skew bound of the wall time at timer time
    /// `now_ms`.
    pub(super) fn check_clock(&self, ts: Timestamp, now_ms: u64) -> Result<(), ClockAhead> {
        self.hlc.check(ts, self.wall(now_ms))
    }

    /// Counts and logs a state from `peer` that was not merged.
    pub(super) fn refused_input(&mut self, now_ms: u64, peer: &NodeId, why: Refusal) {
        let stats = &mut self.cluster.stats;
        match why {
            Refusal::WrongKind => {
                stats.dropped_wrong_kind += 1;
                if self.cluster.refusals.due(peer, "wrong_kind", now_ms) {
                    tracing::warn!(peer = %peer, "dropped a state of the wrong kind for its keyspace from a peer");
                }
            }
            Refusal::ClockSkew(ahead) => self.clock_skew_from(now_ms, peer, ahead),
            // Logged once, when the disk filled up.
            Refusal::DiskFull => stats.dropped_disk_full += 1,
            // Counted where it is answered (the sender is told to forget the value); a size is
            // only checked on local writes.
            Refusal::Collected | Refusal::TooLarge { .. } => {}
        }
    }

    /// Counts and logs a message from `peer` carrying a timestamp `ahead` of this node's clock.
    pub(super) fn clock_skew_from(&mut self, now_ms: u64, peer: &NodeId, ahead: ClockAhead) {
        self.cluster.stats.dropped_clock_skew += 1;
        if self.cluster.refusals.due(peer, "clock_skew", now_ms) {
            tracing::warn!(
                peer = %peer,
                ahead_ms = ahead.ahead_ms,
                bound_ms = ahead.bound_ms,
                "dropped a message stamped ahead of this node's clock by more than --max-clock-skew-ms; check both clocks"
            );
        }
    }

    /// Counts and logs a message from `peer` that no honest member sends.
    pub(super) fn invalid_input(&mut self, now_ms: u64, peer: &NodeId, what: &'static str) {
        self.cluster.stats.dropped_invalid += 1;
        if self.cluster.refusals.due(peer, "invalid", now_ms) {
            tracing::warn!(peer = %peer, what, "dropped invalid cluster input");
        }
    }

    /// Whether `peer` is a member this node knows and that has not left: only members may ask
    /// for exchanges, send frames or ask this node to forget values.
    pub(super) fn is_member(&self, peer: &NodeId) -> bool {
        *peer != self.id
            && self
                .cluster
                .membership
                .member(peer)
                .is_some_and(|m| m.state.is_up())
    }

    /// The collection horizon `peer` announced in its last exchange with this node (checked
    /// against this node's clock then), if it is still a member that is up.
    pub(super) fn peer_horizon(&self, peer: &NodeId) -> Option<Timestamp> {
        if !self.is_member(peer) {
            return None;
        }
        self.cluster.peer_horizons.get(peer).copied()
    }

    /// Records the horizon `peer` announced, once checked against this node's clock.
    pub(super) fn note_peer_horizon(&mut self, peer: &NodeId, horizon: Timestamp) {
        let mark = self.cluster.peer_horizons.entry(peer.clone()).or_default();
        *mark = (*mark).max(horizon);
    }
}
