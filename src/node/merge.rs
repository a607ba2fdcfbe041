//! Merging one delta (a client's write, a replayed log entry or a peer's state) into the key it
//! names: the checks its source calls for, the merge itself, and the one store batch that records
//! the result with its log entry and index updates.
//!
//! A register or a counter is merged whole. A set is merged as a plan against the stored set
//! ([`set_merge::plan`]), which reads and writes only the elements the delta touches, so the cost
//! follows the delta, not the set. Nothing changes in memory before the store has taken the
//! change, so a store error leaves no trace.

use super::{tombstones, Applied, KeyChange, Node, Refusal, Source};
use crate::clock::{ReplicaId, Timestamp};
use crate::crdt::{set_merge, KeyState, OrSet, SetReplica};
use crate::store::{
    merkle, record, LoggedDeltaRef, SetWrite, Store, StoreError, StoreKey, StoredSet, WriteBatch,
};
use crate::wire::MAX_STATE_BYTES;

/// A set state naming more than one element in this many of the stored set's is planned against
/// the whole set, read in one scan: a scan reads an element several times faster than a lookup.
const WHOLE_READ_RATIO: u64 = 8;

/// What a merge writes for its key: a register's or counter's new state, or the changed elements
/// of a set.
enum Change {
    Whole(KeyState),
    Set(SetWrite),
}

/// What a merge will write, ready for the store.
struct Prepared {
    change: Change,
    old_hash: Option<[u8; 32]>,
    new_hash: [u8; 32],
    old_tombstone: Option<Timestamp>,
    new_tombstone: Option<Timestamp>,
}

impl<S: Store> Node<S> {
    /// Merges a delta (local, replayed or from a peer) into the key's state and hands the result
    /// to the store, after the checks its source calls for.
    pub(crate) fn merge_checked(
        &mut self,
        key: StoreKey,
        delta: KeyState,
        origin_seq: Option<(ReplicaId, u64)>,
        source: Source,
    ) -> Result<Applied, StoreError> {
        let vetted = match source {
            Source::Peer { now_ms } => self.vet(&key, &delta, now_ms),
            Source::Local | Source::Replay if !key.holds(&delta) => Err(Refusal::WrongKind),
            Source::Local | Source::Replay => Ok(()),
        };
        if let Err(why) = vetted {
            return Ok(Applied::Refused(why));
        }
        let prepared = match &delta {
            KeyState::Register(r) => {
                match source {
                    Source::Peer { now_ms } => {
                        if let Err(ahead) = self.hlc.observe(r.timestamp, self.wall(now_ms)) {
                            return Ok(Applied::Refused(Refusal::ClockSkew(ahead)));
                        }
                    }
                    Source::Replay => self.hlc.recover(r.timestamp),
                    Source::Local => {}
                }
                self.merge_whole(&key, &delta, source)?
            }
            KeyState::Counter(_) => self.merge_whole(&key, &delta, source)?,
            KeyState::Set(set) => self.merge_set(&key, set, source, origin_seq.is_some())?,
        };
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(outcome) => return Ok(outcome),
        };
        let hlc = self.hlc.high_water_mark();
        let logged = LoggedDeltaRef {
            key: &key,
            delta: &delta,
            hlc,
            origin_seq: origin_seq.as_ref().map(|(n, s)| (n, *s)),
        }
        .encode(prepared.old_hash.as_ref());
        let key_hash = (key.clone(), prepared.new_hash);
        let leaves_complete = self.leaves_marked_stale();
        let mut batch = WriteBatch {
            key_hashes: vec![key_hash],
            deltas: vec![logged],
            leaves_complete,
            ..WriteBatch::default()
        };
        if prepared.old_tombstone != prepared.new_tombstone {
            batch.tombstones = vec![(key.clone(), prepared.new_tombstone)];
        }
        let origin = origin_seq.as_ref().map(|(replica, _)| &replica.node);
        let recorded = self.changes.is_some() && source != Source::Replay;
        let change = recorded.then(|| {
            let mut change = match &prepared.change {
                Change::Whole(state) => KeyChange::to(&key, Some(state), hlc, origin),
                Change::Set(_) => KeyChange::to(&key, None, hlc, origin),
            };
            if let Source::Peer { now_ms } = source {
                // Arrived now: the clock's high-water mark may still be the write's own stamp.
                change.applied = change.applied.max(Timestamp::new(self.wall(now_ms), 0));
                // A peer's value that expired before it arrived reads as deleted at once.
                if let Some(expires) = change.expires {
                    change.deleted |= expires.wall_ms() <= self.wall(now_ms);
                }
            }
            change
        });
        match prepared.change {
            Change::Whole(state) => batch.records.push((key.clone(), state)),
            Change::Set(write) => batch.sets.push(write),
        }
        self.store.apply(batch)?;
        if let Some(change) = change {
            self.changed(change);
        }
        self.leaves_persisted = false;
        self.meta.hlc = hlc;
        self.meta_dirty = true;
        self.tombstones
            .track(&key, prepared.old_tombstone, prepared.new_tombstone);
        let (bucket, _) = self
            .merkle
            .update_hashed(&key, prepared.old_hash, prepared.new_hash);
        self.dirty_leaves.insert(bucket);
        Ok(Applied::Changed)
    }

    /// Merges a register or a counter into the stored state, read and written whole. `Err`
    /// carries the outcome when there is nothing to write.
    fn merge_whole(
        &mut self,
        key: &StoreKey,
        delta: &KeyState,
        source: Source,
    ) -> Result<Result<Prepared, Applied>, StoreError> {
        let stored = self.store.get(key)?;
        let old_hash = stored.as_ref().map(|state| merkle::item_hash(key, state));
        // A stored state of the wrong kind can only be what a lying peer left before states were
        // checked: it is replaced, as if absent.
        let old = stored.filter(|state| key.holds(state));
        if old.is_none() && self.may_be_collected(key, delta) {
            return Ok(Err(Applied::Refused(Refusal::Collected)));
        }
        if let (Source::Peer { .. }, Some(KeyState::Register(held)), KeyState::Register(came)) =
            (source, &old, delta)
        {
            let (winner, loser) = if came > held {
                (came, held)
            } else {
                (held, came)
            };
            self.conflicts.merged(key, winner, loser);
        }
        let old_tombstone = old.as_ref().and_then(tombstones::tombstone_of);
        // Only a delta that changes the state is logged (duplicates are common: rumors arrive
        // more than once and anti-entropy resends what a peer already merged).
        let new = match old {
            Some(mut state) => match state.merge(delta) {
                Ok(crate::crdt::Merged::Changed) => state,
                Ok(crate::crdt::Merged::Unchanged) => return Ok(Err(Applied::Unchanged)),
                Err(_) => return Ok(Err(Applied::Refused(Refusal::WrongKind))),
            },
            None => delta.clone(),
        };
        let encoded = record::encode_state(&new);
        if source == Source::Local && encoded.len() > MAX_STATE_BYTES {
            return Ok(Err(Applied::Refused(Refusal::TooLarge {
                bytes: encoded.len(),
            })));
        }
        let new_tombstone = tombstones::tombstone_of(&new);
        Ok(Ok(Prepared {
            new_hash: merkle::item_hash_of(key, &encoded),
            change: Change::Whole(new),
            old_hash,
            old_tombstone,
            new_tombstone,
        }))
    }

    /// Merges a set state or delta into the stored set, reading only the elements it touches.
    /// `Err` carries the outcome when there is nothing to write. `one_write`: the state is the
    /// delta of one write (a rumor), not a whole replica; it tells add/remove races apart.
    fn merge_set(
        &mut self,
        key: &StoreKey,
        delta: &OrSet,
        source: Source,
        one_write: bool,
    ) -> Result<Result<Prepared, Applied>, StoreError> {
        if delta.is_noop_delta() {
            return Ok(Err(Applied::Unchanged));
        }
        let stored = StoredSet::open(&self.store, key)?;
        // A state naming a good part of the set (a whole replica from anti-entropy) is planned
        // against the whole set, read in one scan, rather than one lookup per element.
        let planned = if delta.len() as u64 * WHOLE_READ_RATIO > stored.header().count {
            match self.store.get(key)? {
                Some(KeyState::Set(whole)) => {
                    let Ok(planned) = set_merge::plan(&whole, delta);
                    planned
                }
                _ => set_merge::plan(&stored, delta)?,
            }
        } else {
            set_merge::plan(&stored, delta)?
        };
        // Races are looked for even when nothing changes: a remove that a concurrent add here
        // outlived may find nothing left to remove.
        if let Source::Peer { .. } = source {
            let held = |element: &str| {
                stored
                    .dots(element)
                    .map(|dots| dots.into_owned())
                    .unwrap_or_default()
            };
            let raced =
                self.conflicts
                    .lost_dots
                    .merged(key, delta, planned.as_ref(), one_write, held);
            self.conflicts.set_races += raced.len() as u64;
        }
        let Some(change) = planned else {
            return Ok(Err(Applied::Unchanged));
        };
        let header = stored.header().after(&change);
        if source == Source::Local {
            let bytes = header.encoded_len();
            if bytes > MAX_STATE_BYTES {
                return Ok(Err(Applied::Refused(Refusal::TooLarge { bytes })));
            }
            self.conflicts.lost_dots.record(key, &change);
        }
        let old_hash = stored
            .existed()
            .then(|| merkle::set_item_hash(key, stored.header()));
        Ok(Ok(Prepared {
            new_hash: merkle::set_item_hash(key, &header),
            change: Change::Set(SetWrite {
                key: key.clone(),
                header,
                elements: change.elements,
            }),
            old_hash,
            old_tombstone: None,
            new_tombstone: None,
        }))
    }
}
