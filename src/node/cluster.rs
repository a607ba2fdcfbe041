//! The cluster half of the core: membership (SWIM), rumor mongering of deltas and Merkle
//! anti-entropy, composed over the node's store. Inputs are decoded messages and timer ticks with
//! the current time; outputs are [`Outbound`] messages collected in an outbox that the driver
//! drains (`outbox.rs` packs them into datagrams and frames). Randomness comes from the node's
//! own seeded generator.

use super::tombstones::TombstoneConfig;
use super::{Merge, Node};
use crate::clock::{NodeId, Timestamp};
use crate::crdt::KeyState;
use crate::gossip::rumor::{Rumor, RumorConfig, RumorMill};
use crate::gossip::sync::{respond, SyncSession, SyncSource};
use crate::membership::{Member, MemberEvent, MemberState, Membership, MembershipConfig};
use crate::store::{MerkleIndex, Store, StoreError, StoreKey};
use crate::wire::{
    encoded_len, Datagram, Frame, FrameBody, SyncAnswer, SyncRequest, SyncStart, MAX_DATAGRAM,
};
use core::net::SocketAddr;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};

/// An anti-entropy session with no answer for this long is abandoned.
const SESSION_TIMEOUT_MS: u64 = 60_000;

/// What the core asks the transport to send.
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    Datagram {
        to: SocketAddr,
        to_id: Option<NodeId>,
        datagram: Datagram,
    },
    /// A one-way frame (rumors too large for a datagram).
    Frame {
        to: SocketAddr,
        to_id: Option<NodeId>,
        frame: Frame,
    },
    /// One request of anti-entropy session `session`; its reply comes back through
    /// [`Node::handle_sync_reply`].
    SyncRequest {
        session: u64,
        to: SocketAddr,
        to_id: NodeId,
        frame: Frame,
    },
    /// Session `session` is over: its connection may close.
    SyncDone { session: u64 },
}

/// How a node takes part in its cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub gossip_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Cluster addresses to join through.
    pub seeds: Vec<SocketAddr>,
    pub membership: MembershipConfig,
    pub rumor: RumorConfig,
    /// Milliseconds between anti-entropy exchanges with one random peer (default 2,000).
    /// Lower repairs faster after loss or partitions at the cost of more root comparisons.
    pub anti_entropy_interval_ms: u64,
    /// Seed of the node's random choices (the driver passes fresh entropy; the simulator a
    /// fixed seed).
    pub rng_seed: u64,
    /// The node starts from an empty store after losing its data (`--recover`): its reads are
    /// not authoritative until one anti-entropy exchange with a peer has completed.
    pub resync_first: bool,
    pub tombstones: TombstoneConfig,
}

impl ClusterConfig {
    /// A node alone (no peers known), for tests and tools.
    pub fn standalone() -> Self {
        let nowhere = SocketAddr::from(([127, 0, 0, 1], 0));
        ClusterConfig {
            gossip_addr: nowhere,
            http_addr: nowhere,
            seeds: Vec::new(),
            membership: MembershipConfig::lan(),
            rumor: RumorConfig::default(),
            anti_entropy_interval_ms: 2_000,
            rng_seed: 0,
            resync_first: false,
            tombstones: TombstoneConfig::default(),
        }
    }
}

/// Counters of the cluster protocol, exported as metrics by the driver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub rumors_published: u64,
    pub rumors_pushed: u64,
    pub rumors_received: u64,
    pub rumors_merged: u64,
    pub sync_sessions: u64,
    pub sync_rounds: u64,
    pub sync_keys_repaired: u64,
    pub sync_bytes: u64,
    pub tombstones_collected: u64,
    /// Registers refused because they were no newer than a collected tombstone.
    pub stale_values_refused: u64,
    /// Values dropped because a peer refused them.
    pub values_forgotten: u64,
    /// Tombstones currently held.
    pub tombstones_held: u64,
}

pub(super) struct Session {
    peer: NodeId,
    sync: SyncSession,
    started_ms: u64,
    /// This node's clock when the session started.
    started: Timestamp,
    /// The peer's tombstone collection horizon, from its first answer.
    peer_horizon: Option<Timestamp>,
}

pub(super) struct Cluster {
    pub(super) membership: Membership,
    pub(super) rumors: RumorMill,
    pub(super) rng: SmallRng,
    pub(super) sessions: BTreeMap<u64, Session>,
    pub(super) next_session: u64,
    pub(super) next_sync_ms: u64,
    pub(super) anti_entropy_interval_ms: u64,
    /// Peers to run anti-entropy with soon (just joined or came back).
    pub(super) sync_soon: Vec<NodeId>,
    /// Peers already chosen for anti-entropy in the current cycle: random choice without
    /// replacement, so every peer is visited once per cycle (which bounds how long tombstone
    /// collection waits for an exchange with each member).
    pub(super) visited: BTreeSet<NodeId>,
    pub(super) outbox: Vec<Outbound>,
    pub(super) stats: ClusterStats,
    /// Reads are not authoritative until a full exchange with a peer completes.
    pub(super) resyncing: bool,
}

impl Cluster {
    pub(super) fn new(id: NodeId, incarnation: u64, config: ClusterConfig) -> Self {
        let me = Member {
            id,
            gossip_addr: config.gossip_addr,
            http_addr: config.http_addr,
            state: MemberState::Alive,
            incarnation,
        };
        Cluster {
            membership: Membership::new(me, config.seeds, config.membership),
            rumors: RumorMill::new(config.rumor),
            rng: SmallRng::seed_from_u64(config.rng_seed),
            sessions: BTreeMap::new(),
            next_session: 1,
            next_sync_ms: 0,
            anti_entropy_interval_ms: config.anti_entropy_interval_ms,
            sync_soon: Vec::new(),
            visited: BTreeSet::new(),
            outbox: Vec::new(),
            stats: ClusterStats::default(),
            resyncing: config.resync_first,
        }
    }

    pub(super) fn rumors_mut(&mut self) -> &mut RumorMill {
        &mut self.rumors
    }

    pub(super) fn rumors(&self) -> &RumorMill {
        &self.rumors
    }
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

    /// Every member this node knows, itself included.
    pub fn members(&self) -> Vec<Member> {
        self.cluster.membership.members().cloned().collect()
    }

    pub fn cluster_stats(&self) -> ClusterStats {
        let mut stats = self.cluster.stats.clone();
        stats.rumors_published = self.meta.seen.get(&self.id);
        stats.tombstones_held = self.tombstones.held() as u64;
        stats
    }

    /// Entries of the rumor "seen" tracker (bounded by members, not writes).
    pub fn seen_entries(&self) -> usize {
        self.cluster.rumors.seen_entries()
    }

    /// Messages for the transport, in the order they were produced.
    pub fn take_outbound(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.cluster.outbox)
    }

    /// True when some other member is up (alive or suspect).
    pub(super) fn has_peers(&self) -> bool {
        self.cluster
            .membership
            .members()
            .any(|m| m.id != self.id && m.state.is_up())
    }

    /// Queues the rumor of a local write and pushes it at once.
    pub(super) fn spread_local(&mut self, key: StoreKey, delta: KeyState, seq: u64) {
        let members = self.cluster.membership.members().count();
        let rumor = Rumor {
            origin: self.id.clone(),
            seq,
            key,
            delta,
        };
        let small = encoded_len(&rumor) <= MAX_DATAGRAM / 2;
        self.cluster.rumors.publish(rumor, members, small);
        self.push_fresh_rumors();
    }

    /// A datagram arrived from `from_addr`.
    pub fn handle_datagram(
        &mut self,
        now_ms: u64,
        from_addr: SocketAddr,
        datagram: Datagram,
    ) -> Result<(), StoreError> {
        let Datagram {
            from,
            swim,
            updates,
            rumors,
            pull,
        } = datagram;
        let mut out = Vec::new();
        match swim {
            Some(message) => self
                .cluster
                .membership
                .handle_message(now_ms, &from, from_addr, message, &mut out),
            None => self
                .cluster
                .membership
                .apply_updates(now_ms, std::slice::from_ref(&from)),
        }
        self.cluster.membership.apply_updates(now_ms, &updates);
        if let Some(correction) = self.cluster.membership.correction_for(&from) {
            let datagram = self.datagram(None, Some(&from.id), vec![correction]);
            self.cluster.outbox.push(Outbound::Datagram {
                to: from_addr,
                to_id: Some(from.id.clone()),
                datagram,
            });
        }
        self.receive_rumors(&from.id, rumors)?;
        if let Some(summary) = pull {
            self.answer_pull(from_addr, &from.id, &summary);
        }
        self.send_swim(out);
        self.after_membership_change();
        self.push_fresh_rumors();
        Ok(())
    }

    /// A one-way frame arrived (rumors too large for datagrams).
    pub fn handle_frame(&mut self, frame: Frame) -> Result<(), StoreError> {
        match frame.body {
            FrameBody::Rumors(rumors) => {
                self.receive_rumors(&frame.from, rumors)?;
                self.push_fresh_rumors();
            }
            FrameBody::Forget(values) => self.forget(values)?,
            FrameBody::SyncRequest(_) | FrameBody::SyncReply(_) => {}
        }
        Ok(())
    }

    fn receive_rumors(&mut self, from: &NodeId, rumors: Vec<Rumor>) -> Result<(), StoreError> {
        let members = self.cluster.membership.members().count();
        let mut refused = Vec::new();
        for rumor in rumors {
            self.cluster.stats.rumors_received += 1;
            let small = encoded_len(&rumor) <= MAX_DATAGRAM / 2;
            let (key, delta, origin, seq) = (
                rumor.key.clone(),
                rumor.delta.clone(),
                rumor.origin.clone(),
                rumor.seq,
            );
            if self.cluster.rumors.receive(rumor, from, members, small) {
                let merge = self.merge_from_peer(key, delta, Some((origin, seq)), &mut refused)?;
                if merge == Merge::Changed {
                    self.cluster.stats.rumors_merged += 1;
                }
                self.meta_dirty = true;
            }
        }
        self.tell_to_forget(from, refused);
        Ok(())
    }

    /// An anti-entropy request from `from`: merge what it brings, answer.
    pub fn handle_sync_request(
        &mut self,
        from: &NodeId,
        request: SyncRequest,
    ) -> Result<Option<SyncAnswer>, StoreError> {
        if let Some(start) = request.start {
            // Every write from here on is newer than the exchange's start (see `tombstones.rs`).
            self.hlc.observe(start.clock);
            self.meta_dirty = true;
            self.tombstones.merge_reports(&start.stable);
            self.tombstones.collected_by_peer(start.collected_through);
        }
        let (reply, merges) = respond(&self.sync_view(), request.message);
        self.merge_repairs(from, merges)?;
        tracing::trace!(peer = %from, "answered an anti-entropy request");
        Ok(reply.map(|message| SyncAnswer {
            collected_through: self.store.collected_through(),
            message,
        }))
    }

    /// Merges the states an anti-entropy exchange with `peer` brought.
    fn merge_repairs(
        &mut self,
        peer: &NodeId,
        merges: Vec<(StoreKey, KeyState)>,
    ) -> Result<(), StoreError> {
        let mut refused = Vec::new();
        for (key, state) in merges {
            if self.merge_from_peer(key, state, None, &mut refused)? == Merge::Changed {
                self.cluster.stats.sync_keys_repaired += 1;
            }
        }
        self.tell_to_forget(peer, refused);
        Ok(())
    }

    /// The reply to a request of session `session` (`None`: the exchange failed).
    pub fn handle_sync_reply(
        &mut self,
        session: u64,
        reply: Option<SyncAnswer>,
    ) -> Result<(), StoreError> {
        let Some(mut current) = self.cluster.sessions.remove(&session) else {
            return Ok(());
        };
        let Some(SyncAnswer {
            collected_through,
            message,
        }) = reply
        else {
            self.cluster.outbox.push(Outbound::SyncDone { session });
            return Ok(());
        };
        current.peer_horizon.get_or_insert(collected_through);
        self.tombstones.collected_by_peer(collected_through);
        let step = current.sync.handle(&self.sync_view(), message);
        self.cluster.stats.sync_rounds += 1;
        self.merge_repairs(&current.peer, step.merge)?;
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
                    self.cluster.sessions.insert(session, current);
                    return Ok(());
                }
                // The peer is no longer known: the exchange ends unfinished.
                self.cluster.outbox.push(Outbound::SyncDone { session });
                Ok(())
            }
            _ => self.finish_session(session, &current),
        }
    }

    /// True while this node, restarted empty after losing its data, has not yet completed an
    /// exchange with a peer: its reads would not be authoritative.
    pub fn is_resyncing(&self) -> bool {
        self.cluster.resyncing
    }

    fn finish_session(&mut self, session: u64, done: &Session) -> Result<(), StoreError> {
        let stats = done.sync.stats();
        if !stats.aborted {
            self.tombstones.synced_with(&done.peer, done.started);
            if let Some(horizon) = done.peer_horizon {
                self.adopt_horizon(horizon)?;
            }
        }
        if self.cluster.resyncing && !stats.aborted {
            tracing::info!(peer = %done.peer, "resynced from a peer; serving reads again");
            self.cluster.resyncing = false;
        }
        self.cluster.stats.sync_bytes += stats.bytes();
        self.cluster.outbox.push(Outbound::SyncDone { session });
        Ok(())
    }

    /// Timers: probes, suspicion, re-contact, anti-entropy, rumor retransmission.
    pub fn handle_tick(&mut self, now_ms: u64) -> Result<(), StoreError> {
        let mut out = Vec::new();
        self.cluster
            .membership
            .handle_tick(now_ms, &mut self.cluster.rng, &mut out);
        self.send_swim(out);
        self.after_membership_change();
        self.expire_sessions(now_ms);
        if now_ms >= self.cluster.next_sync_ms || !self.cluster.sync_soon.is_empty() {
            self.start_anti_entropy(now_ms);
        }
        self.cluster.rumors.tick(now_ms);
        self.push_fresh_rumors();
        self.collect_tombstones(now_ms)
    }

    /// Graceful leave: tell peers this node is leaving.
    pub fn leave(&mut self, now_ms: u64) {
        let mut out = Vec::new();
        self.cluster
            .membership
            .leave(now_ms, &mut self.cluster.rng, &mut out);
        self.send_swim(out);
        self.meta_dirty = true;
    }

    /// This node's incarnation (persisted, so a restart starts above it).
    pub fn incarnation(&self) -> u64 {
        self.cluster.membership.me().incarnation
    }

    fn after_membership_change(&mut self) {
        for event in self.cluster.membership.drain_events() {
            let (member, from) = match &event {
                MemberEvent::Joined(m) => (m, None),
                MemberEvent::StateChanged { member, from } => (member, Some(*from)),
                MemberEvent::Refuted { claim, incarnation } => {
                    tracing::info!(claim = %claim.state, claimed_incarnation = claim.incarnation, incarnation, "refuted an out-of-date verdict about this node");
                    self.meta_dirty = true;
                    continue;
                }
            };
            if member.id == self.id {
                tracing::info!(incarnation = member.incarnation, state = %member.state, "this node's membership record changed");
                self.meta_dirty = true;
                continue;
            }
            match from {
                None => {
                    tracing::info!(member = %member.id, gossip = %member.gossip_addr, http = %member.http_addr, state = %member.state, "member joined")
                }
                Some(from) => {
                    tracing::info!(member = %member.id, from = %from, to = %member.state, incarnation = member.incarnation, "member state changed")
                }
            }
            if member.state == MemberState::Alive && !self.cluster.sync_soon.contains(&member.id) {
                // Catch up with a member that just (re)appeared.
                self.cluster.sync_soon.push(member.id.clone());
            }
        }
    }

    fn expire_sessions(&mut self, now_ms: u64) {
        let expired: Vec<u64> = self
            .cluster
            .sessions
            .iter()
            .filter(|(_, s)| now_ms.saturating_sub(s.started_ms) > SESSION_TIMEOUT_MS)
            .map(|(id, _)| *id)
            .collect();
        for session in expired {
            self.cluster.sessions.remove(&session);
            self.cluster.outbox.push(Outbound::SyncDone { session });
        }
    }

    fn start_anti_entropy(&mut self, now_ms: u64) {
        self.cluster.next_sync_ms = now_ms + self.cluster.anti_entropy_interval_ms;
        let busy: Vec<NodeId> = self
            .cluster
            .sessions
            .values()
            .map(|s| s.peer.clone())
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
        let (sync, first) = SyncSession::start(&self.sync_view());
        let session = self.cluster.next_session;
        self.cluster.next_session += 1;
        self.cluster.stats.sync_sessions += 1;
        let started = self.hlc.tick(now_ms);
        self.meta_dirty = true;
        let members = self.members();
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
                started_ms: now_ms,
                started,
                peer_horizon: None,
            },
        );
    }
}
