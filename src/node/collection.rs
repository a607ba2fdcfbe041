//! The core's side of tombstone collection (the rule itself is in `tombstones.rs`): collection
//! passes that remove tombstones every member has seen, refusing registers that may be deleted
//! values coming back, and forgetting such values when a peer refused them.
//!
//! Never touches sockets or clocks; removals go to the store as one batch per pass.

use super::tombstones::tombstone_of;
use super::{Applied, KeyChange, Node, Refusal, Source};
use crate::clock::{NodeId, ReplicaId, Timestamp};
use crate::crdt::KeyState;
use crate::node::cluster::Outbound;
use crate::store::{merkle, Store, StoreError, StoreKey, WriteBatch};
use crate::wire::{ForgetValue, FrameBody};

/// Values named per `Forget` frame (keys are at most 1 KiB, so a frame stays near 1 MiB).
const FORGET_PER_FRAME: usize = 1_000;

impl<S: Store> Node<S> {
    /// Whether `delta`, for a key this node lacks, is no newer than a tombstone collected here
    /// (every write that old reached this node before the collection, so the key was deleted),
    /// or is a value of the key this node forgot on a peer's word (see `merge_from_peer`).
    pub(super) fn may_be_collected(&self, key: &StoreKey, delta: &KeyState) -> bool {
        let horizon = self.store.collected_through();
        let KeyState::Register(r) = delta else {
            return false;
        };
        (horizon > Timestamp::ZERO && r.timestamp <= horizon)
            || self.tombstones.was_forgotten(key, r.timestamp)
    }

    /// Tombstones held, and values due to expire (collected ones are gone).
    pub fn tombstones_held(&self) -> usize {
        self.tombstones.held()
    }

    /// Removes the tombstones every member has seen (at most one pass per second).
    pub(super) fn collect_tombstones(&mut self, now_ms: u64) -> Result<(), StoreError> {
        if !self.tombstones.pass_due(now_ms) {
            return Ok(());
        }
        let members = self.collection_members(now_ms);
        let clock = self.hlc.high_water_mark();
        let horizon = self.tombstones.horizon(&self.id, &members, now_ms, clock);
        let due = self.tombstones.take_collectable(horizon);
        let mut through = self.store.collected_through();
        let mut collected = Vec::new();
        for (ts, key) in due {
            let Some(state) = self.store.get(&key)? else {
                continue;
            };
            if tombstone_of(&state) != Some(ts) {
                continue;
            }
            through = through.max(ts);
            collected.push((key, state));
        }
        if collected.is_empty() {
            return Ok(());
        }
        let count = collected.len() as u64;
        let keys: Vec<(StoreKey, Timestamp)> = collected
            .iter()
            .filter_map(|(key, state)| Some((key.clone(), tombstone_of(state)?)))
            .collect();
        if let Err(e) = self.remove_records(collected, Some(through), None) {
            // Still held: a later pass tries again.
            for (key, ts) in keys {
                self.tombstones.track(&key, None, Some(ts));
            }
            return Err(e);
        }
        self.tombstones.horizon_reached(through);
        tracing::debug!(count, through = %through, "collected tombstones");
        self.cluster.stats.tombstones_collected += count;
        Ok(())
    }

    /// A completed exchange brought everything a peer held, and the peer refuses registers up to
    /// `horizon` for keys it lacks: so may this node now (see `SyncAnswer`).
    /// The horizon was checked against this node's clock on arrival.
    pub(super) fn adopt_horizon(&mut self, horizon: Timestamp) -> Result<(), StoreError> {
        if horizon <= self.store.collected_through() {
            return Ok(());
        }
        // Local writes from now on are newer than the horizon, so none is ever refused by it.
        self.hlc.recover(horizon);
        self.meta_dirty = true;
        self.store.apply(WriteBatch {
            collected_through: Some(horizon),
            ..WriteBatch::default()
        })?;
        self.tombstones.horizon_reached(horizon);
        Ok(())
    }

    /// Removes records, and their Merkle and key-index entries, in one store batch (with the new
    /// collection horizon when they are collected tombstones). Memory follows only once the store
    /// has taken the batch.
    fn remove_records(
        &mut self,
        records: Vec<(StoreKey, KeyState)>,
        collected_through: Option<Timestamp>,
        forgotten: Option<Vec<(StoreKey, Timestamp)>>,
    ) -> Result<(), StoreError> {
        let removals = records
            .iter()
            .map(|(key, state)| (key.clone(), Some(merkle::item_hash(key, state))))
            .collect();
        let leaves_complete = self.leaves_marked_stale();
        self.store.apply(WriteBatch {
            removals,
            collected_through,
            leaves_complete,
            forgotten,
            ..WriteBatch::default()
        })?;
        self.leaves_persisted = false;
        self.meta_dirty = true;
        for (key, state) in records {
            let (bucket, _) = self.merkle.remove(&key, merkle::item_hash(&key, &state));
            self.dirty_leaves.insert(bucket);
            // A forgotten value may have been due to expire (a collected one is already out).
            self.tombstones.track(&key, tombstone_of(&state), None);
        }
        Ok(())
    }

    /// Merges a state that `peer` sent at this node's wall time `now_ms`. A value refused as
    /// possibly collected is added to `refused`, to be handed back with
    /// [`Node::tell_to_forget`]; other refusals are counted and logged.
    pub(super) fn merge_from_peer(
        &mut self,
        now_ms: u64,
        peer: &NodeId,
        key: StoreKey,
        state: KeyState,
        origin_seq: Option<(ReplicaId, u64)>,
        refused: &mut Vec<ForgetValue>,
    ) -> Result<Applied, StoreError> {
        let value = match &state {
            KeyState::Register(r) if !r.is_tombstone() => Some((r.timestamp, r.node.clone())),
            _ => None,
        };
        let applied =
            self.merge_checked(key.clone(), state, origin_seq, Source::Peer { now_ms })?;
        match applied {
            Applied::Refused(Refusal::Collected) => {
                self.cluster.stats.stale_values_refused += 1;
                if let Some((timestamp, node)) = value {
                    refused.push(ForgetValue {
                        key,
                        timestamp,
                        node,
                    });
                }
            }
            Applied::Refused(why) => self.refused_input(now_ms, peer, why),
            Applied::Changed | Applied::Unchanged => {}
        }
        Ok(applied)
    }

    /// Tells `peer` to drop the values this node refused from it.
    pub(super) fn tell_to_forget(&mut self, peer: &NodeId, refused: Vec<ForgetValue>) {
        if refused.is_empty() {
            return;
        }
        let Some(to) = self.address_of(peer) else {
            return;
        };
        for chunk in refused.chunks(FORGET_PER_FRAME) {
            self.cluster.outbox.push(Outbound::Frame {
                to,
                to_id: Some(peer.clone()),
                frame: self.frame(FrameBody::Forget(chunk.to_vec())),
            });
        }
    }

    /// `peer` refused these values (older than a tombstone it collected): drops each one this
    /// node still holds unchanged, if `peer` is a member that is up and each value is no newer
    /// than the horizon it announced in an exchange (anything else is a stranger's or a liar's
    /// request, dropped and counted).
    ///
    /// An honest peer refuses a value only if it was overwritten by a delete that every member
    /// counted saw and that was collected since, or if its writer was left out of a collection
    /// (away longer than the grace period: its writes older than the horizon are the price). In
    /// both cases the peer will never take it, so the cluster converges only if it goes here
    /// too, whoever wrote it.
    pub(super) fn forget(
        &mut self,
        now_ms: u64,
        peer: &NodeId,
        values: Vec<ForgetValue>,
    ) -> Result<(), StoreError> {
        let horizon = self.peer_horizon(peer);
        let mut forgotten = Vec::new();
        for value in values {
            if horizon.is_none_or(|h| value.timestamp > h) {
                self.invalid_input(
                    now_ms,
                    peer,
                    "a request to forget a value it cannot have refused",
                );
                continue;
            }
            let Some(state) = self.store.get(&value.key)? else {
                continue;
            };
            let KeyState::Register(r) = &state else {
                continue;
            };
            if r.is_tombstone() || r.timestamp != value.timestamp || r.node != value.node {
                continue;
            }
            forgotten.push((value.key, state));
        }
        if forgotten.is_empty() {
            return Ok(());
        }
        let count = forgotten.len() as u64;
        let marks: Vec<(StoreKey, Timestamp)> = forgotten
            .iter()
            .filter_map(|(key, state)| match state {
                KeyState::Register(r) => Some((key.clone(), r.timestamp)),
                _ => None,
            })
            .collect();
        if self.changes.is_some() {
            let clock = self.hlc.high_water_mark();
            for (key, _) in &forgotten {
                self.changed(KeyChange {
                    deleted: true,
                    ..KeyChange::to(key, None, clock, Some(peer))
                });
            }
        }
        // Another peer left out of the same collection may still hold these values and offer
        // them again: they are refused as collected, until this node's horizon covers them. The
        // marks are stored with the removals, so a restart does not lose them.
        for (key, timestamp) in marks {
            self.tombstones.forgot(&key, timestamp);
        }
        let marks = self.tombstones.forgotten_marks();
        self.remove_records(forgotten, None, Some(marks))?;
        tracing::info!(
            count,
            peer = %peer,
            "dropped values older than tombstones a peer collected"
        );
        self.cluster.stats.values_forgotten += count;
        Ok(())
    }
}
