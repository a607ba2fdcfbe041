//! Merkle anti-entropy as the core runs it: starting an exchange with one peer per interval
//! (random, without repetition until every peer had its turn), answering peers' requests, merging
//! what each step brings in both directions, and what a completed exchange means for tombstone
//! collection (the stability mark, the peer's collection horizon). The comparison itself lives in
//! [`crate::gossip::sync`]; this file only feeds it the node's state and carries its messages.
//!
//! Never touches sockets or clocks: requests go to the outbox, replies come back through
//! [`Node::handle_sync_reply`].

use super::cluster::Outbound;
use super::{Applied, Node, Refusal};
use crate::clock::{NodeId, Timestamp};
use crate::crdt::KeyState;
use crate::gossip::sync::{respond, SyncMessage, SyncSession, SyncSource};
use crate::membership::MemberState;
use crate::store::{MerkleIndex, Store, StoreError, StoreKey};
use crate::wire::{FrameBody, SyncAnswer, SyncRequest, SyncStart};
use rand::seq::SliceRandom;

/// An anti-entropy session with no answer for this long is abandoned (one that keeps getting
/// answers goes on: a catch-up of millions of keys takes minutes).
const SESSION_TIMEOUT_MS: u64 = 60_000;
/// A peer that fetched whole leaves this recently is still catching up (the rounds of an
/// exchange follow each other within a round trip).
const ANSWERING_MS: u64 = 250;

pub(super) struct Session {
    peer: NodeId,
    sync: SyncSession,
    /// When the session started or last heard from its peer (local milliseconds).
    heard_ms: u64,
    /// This node's clock when the session started.
    started: Timestamp,
    /// The peer's tombstone collection horizon, from its first answer.
    peer_horizon: Option<Timestamp>,
}

/// The node's replicated state as anti-entropy sees it.
struct SyncView<'a, S: Store> {
    merkle: &'a MerkleIndex,
    store: &'a S,
}

impl<S: Store> SyncSource for SyncView<'_, S> {
    fn merkle(&self) -> &MerkleIndex {
        self.merkle
    }

    fn leaf_keys(&self, leaf: u16) -> Vec<(StoreKey, [u8; 8])> {
        self.store.leaf_keys(leaf).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the key index; anti-entropy skips a leaf");
            Vec::new()
        })
    }

    fn state(&self, key: &StoreKey) -> Option<KeyState> {
        self.store.get(key).ok().flatten()
    }
}

impl<S: Store> Node<S> {
    fn sync_view(&self) -> SyncView<'_, S> {
        SyncView {
            merkle: &self.merkle,
            store: &self.store,
        }
    }

    /// An anti-entropy request from `from`, received at this node's wall time `now_ms`: merge
    /// what it brings, answer (`None`: refused, for a stranger or a start stamped beyond the skew
    /// bound).
    pub fn handle_sync_request(
        &mut self,
        now_ms: u64,
        from: &NodeId,
        request: SyncRequest,
    ) -> Result<Option<SyncAnswer>, StoreError> {
        let now_ms = self.clock_in(now_ms);
        if !self.is_member(from) {
            self.invalid_input(now_ms, from, "an exchange from a stranger");
            return Ok(None);
        }
        if let Some(start) = &request.start {
            let stamps = std::iter::once(start.clock)
                .chain([start.collected_through])
                .chain(start.stable.iter().map(|(_, ts)| *ts));
            for ts in stamps {
                if let Err(ahead) = self.check_clock(ts, now_ms) {
                    self.clock_skew_from(now_ms, from, ahead);
                    return Ok(None);
                }
            }
        }
        // Lies among the pushed states are counted as what they are, whatever becomes of the
        // request: one of the wrong kind refuses it whole (`respond` does too).
        let pushes: &[(StoreKey, KeyState)] = match &request.message {
            SyncMessage::Repair { push, .. } => push,
            _ => &[],
        };
        let lies: Vec<Refusal> = pushes
            .iter()
            .filter_map(|(key, state)| self.vet(key, state, now_ms).err())
            .filter(|why| !matches!(why, Refusal::DiskFull))
            .collect();
        let wrong_kind = lies.contains(&Refusal::WrongKind);
        let disk_full = self.is_disk_full();
        if wrong_kind || disk_full {
            for why in lies {
                self.refused_input(now_ms, from, why);
            }
            if disk_full && !wrong_kind {
                // It would bring states this node has no room for; the peer retries later.
                self.cluster.stats.dropped_disk_full += 1;
            }
            return Ok(None);
        }
        // A node that holds nothing, or is catching up from `from` by fetching whole leaves,
        // declines an exchange `from` starts: it would push every state the fetch brings, a
        // second time. It fetches from `from` instead, at once; `from` tries again later, by when
        // there is little left to repair.
        if let SyncMessage::Root { root } = &request.message {
            let fetching = self
                .cluster
                .sessions
                .values()
                .any(|s| s.peer == *from && s.sync.is_fetching());
            let empty = self.merkle.root().count == 0;
            if *root != self.merkle.root() && (empty || fetching) {
                self.cluster.stats.sync_declined += 1;
                if empty && !self.cluster.sync_soon.contains(from) {
                    self.cluster.sync_soon.push(from.clone());
                }
                return Ok(None);
            }
        }
        if let Some(start) = request.start {
            // Every write from here on is newer than the exchange's start (see `tombstones.rs`).
            self.hlc.recover(start.clock);
            self.meta_dirty = true;
            let members = self.collection_members(now_ms);
            self.tombstones.merge_reports(&start.stable, &members);
            self.tombstones
                .collected_by_peer(&self.id, start.collected_through);
            self.note_peer_horizon(from, start.collected_through);
        }
        if matches!(request.message, SyncMessage::FetchLeaves { .. }) {
            self.cluster.answered_ms.insert(from.clone(), now_ms);
        }
        let (reply, merges) = respond(&self.sync_view(), request.message);
        self.merge_repairs(now_ms, from, merges)?;
        tracing::trace!(peer = %from, "answered an anti-entropy request");
        Ok(reply.map(|message| SyncAnswer {
            collected_through: self.store.collected_through(),
            message,
        }))
    }

    /// Merges the states an anti-entropy exchange with `peer` brought.
    fn merge_repairs(
        &mut self,
        now_ms: u64,
        peer: &NodeId,
        merges: Vec<(StoreKey, KeyState)>,
    ) -> Result<(), StoreError> {
        let mut refused = Vec::new();
        for (key, state) in merges {
            let applied = self.merge_from_peer(now_ms, peer, key, state, None, &mut refused)?;
            if applied == Applied::Changed {
                self.cluster.stats.sync_keys_repaired += 1;
            }
        }
        self.tell_to_forget(peer, refused);
        Ok(())
    }

    /// The reply to a request of session `session`, received at this node's wall time `now_ms`
    /// (`None`: the exchange failed).
    pub fn handle_sync_reply(
        &mut self,
        now_ms: u64,
        session: u64,
        reply: Option<SyncAnswer>,
    ) -> Result<(), StoreError> {
        let now_ms = self.clock_in(now_ms);
        let Some(mut current) = self.cluster.sessions.remove(&session) else {
            return Ok(());
        };
        let Some(SyncAnswer {
            collected_through,
            message,
        }) = reply
        else {
            if current.sync.is_fetching() {
                // Perhaps a peer that predates fetching: the next exchange with it compares key
                // lists, which brings everything as well (and after it this node holds keys, so
                // it fetches no more). A passing failure costs one slower exchange.
                self.cluster.stats.sync_fetch_failed += 1;
                self.cluster.fetch_failed.insert(current.peer);
            }
            self.cluster.outbox.push(Outbound::SyncDone { session });
            return Ok(());
        };
        if let Err(ahead) = self.check_clock(collected_through, now_ms) {
            // An exchange with a peer whose horizon is from the future ends here, unfinished.
            self.clock_skew_from(now_ms, &current.peer, ahead);
            self.cluster.outbox.push(Outbound::SyncDone { session });
            return Ok(());
        }
        current.peer_horizon.get_or_insert(collected_through);
        self.tombstones
            .collected_by_peer(&self.id, collected_through);
        self.note_peer_horizon(&current.peer, collected_through);
        let step = current.sync.handle(&self.sync_view(), message);
        self.cluster.stats.sync_rounds += 1;
        self.merge_repairs(now_ms, &current.peer, step.merge)?;
        match step.send {
            Some(next) if !step.done => {
                let to_id = current.peer.clone();
                if let Some(to) = self.address_of(&to_id) {
                    self.cluster.outbox.push(Outbound::SyncRequest {
                        session,
                        to,
                        to_id,
                        frame: self.frame(FrameBody::SyncRequest(SyncRequest {
                            start: None,
                            message: next,
                        })),
                    });
                    current.heard_ms = now_ms;
                    self.cluster.sessions.insert(session, current);
                    return Ok(());
                }
                // The peer is no longer known: the exchange ends unfinished.
                self.cluster.outbox.push(Outbound::SyncDone { session });
                Ok(())
            }
            _ => self.finish_session(session, &current, now_ms),
        }
    }

    /// True while this node, restarted empty after losing its data, has not yet completed an
    /// exchange with a peer: its reads would not be authoritative.
    pub fn is_resyncing(&self) -> bool {
        self.cluster.resyncing
    }

    fn finish_session(
        &mut self,
        session: u64,
        done: &Session,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let stats = done.sync.stats();
        if !stats.aborted {
            self.tombstones.synced_with(&done.peer, done.started);
            if let Some(horizon) = done.peer_horizon {
                self.adopt_horizon(horizon)?;
                self.tombstones.adopted(horizon);
            }
            if self.cluster.resyncing {
                tracing::info!(peer = %done.peer, "resynced from a peer; serving reads again");
                self.cluster.resyncing = false;
            }
        }
        self.cluster.stats.sync_bytes += stats.bytes();
        self.cluster.outbox.push(Outbound::SyncDone { session });
        if !stats.aborted && self.heal.waits_for(&done.peer) {
            let clean = stats.keys_sent == 0 && stats.keys_received == 0;
            let totals = self.heal_totals();
            self.heal.exchanged(&done.peer, clean, now_ms, totals);
            if !clean && !self.cluster.sync_soon.contains(&done.peer) {
                // Check again at once whether anything is left.
                self.cluster.sync_soon.push(done.peer.clone());
            }
        }
        Ok(())
    }

    pub(super) fn expire_sessions(&mut self, now_ms: u64) {
        let expired: Vec<u64> = self
            .cluster
            .sessions
            .iter()
            .filter(|(_, s)| now_ms.saturating_sub(s.heard_ms) > SESSION_TIMEOUT_MS)
            .map(|(id, _)| *id)
            .collect();
        for session in expired {
            self.cluster.stats.sync_abandoned += 1;
            self.cluster.sessions.remove(&session);
            self.cluster.outbox.push(Outbound::SyncDone { session });
        }
    }

    pub(super) fn start_anti_entropy(&mut self, now_ms: u64) {
        self.cluster.next_sync_ms = now_ms + self.cluster.anti_entropy_interval_ms;
        if self.is_disk_full() {
            return;
        }
        // Peers in an exchange: one this node started, or one catching up from this node (it
        // fetched whole leaves a moment ago): an exchange started with it now would push it the
        // same states again.
        self.cluster
            .answered_ms
            .retain(|_, at| now_ms.saturating_sub(*at) < ANSWERING_MS);
        let busy: Vec<NodeId> = self
            .cluster
            .sessions
            .values()
            .map(|s| s.peer.clone())
            .chain(self.cluster.answered_ms.keys().cloned())
            .collect();
        let peer = loop {
            match self.cluster.sync_soon.pop() {
                Some(p) if busy.contains(&p) => continue,
                Some(p) => break Some(p),
                None => break None,
            }
        };
        let peer = peer.or_else(|| {
            let alive: Vec<NodeId> = self
                .cluster
                .membership
                .alive_peers()
                .into_iter()
                .filter(|m| m.state == MemberState::Alive && !busy.contains(&m.id))
                .map(|m| m.id.clone())
                .collect();
            let visited = &self.cluster.visited;
            let fresh: Vec<&NodeId> = alive.iter().filter(|p| !visited.contains(*p)).collect();
            if fresh.is_empty() {
                self.cluster.visited.clear();
                alive.choose(&mut self.cluster.rng).cloned()
            } else {
                fresh.choose(&mut self.cluster.rng).map(|p| (*p).clone())
            }
        });
        let Some(peer) = peer else {
            return;
        };
        self.cluster.visited.insert(peer.clone());
        let Some(to) = self.address_of(&peer) else {
            return;
        };
        // A clock beyond the bound (the wall clock went back) would stamp the start in the
        // future, which the peer refuses: wait until the wall clock catches up.
        let Ok(started) = self.hlc.tick(self.wall(now_ms)) else {
            return;
        };
        let fetch = !self.cluster.fetch_failed.remove(&peer);
        let (sync, first) = SyncSession::start(&self.sync_view(), fetch);
        let session = self.cluster.next_session;
        self.cluster.next_session += 1;
        self.cluster.stats.sync_sessions += 1;
        self.meta_dirty = true;
        let members = self.collection_members(now_ms);
        let stable = self
            .tombstones
            .reports_to_send(&self.id, &members, now_ms, started);
        let start = SyncStart {
            clock: started,
            stable,
            collected_through: self.store.collected_through(),
        };
        self.cluster.outbox.push(Outbound::SyncRequest {
            session,
            to,
            to_id: peer.clone(),
            frame: self.frame(FrameBody::SyncRequest(SyncRequest {
                start: Some(start),
                message: first,
            })),
        });
        self.cluster.sessions.insert(
            session,
            Session {
                peer,
                sync,
                heard_ms: now_ms,
                started,
                peer_horizon: None,
            },
        );
    }
}
