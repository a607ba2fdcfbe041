//! The cluster half of the core: membership (SWIM), rumor mongering of deltas and Merkle
//! anti-entropy (`anti_entropy.rs`), composed over the node's store. Inputs are decoded messages and timer ticks with
//! the current time; outputs are [`Outbound`] messages collected in an outbox that the driver
//! drains (`outbox.rs` packs them into datagrams and frames). Randomness comes from the node's
//! own seeded generator.

use super::anti_entropy::Session;
use super::clock_watch::{self, ClockStatus};
use super::peer_input::RefusalLog;
use super::replication_lag::ReplicationLag;
use super::tombstones::TombstoneConfig;
use super::{Applied, Node};
use crate::clock::{NodeId, Timestamp, DEFAULT_MAX_CLOCK_SKEW_MS};
use crate::crdt::KeyState;
use crate::gossip::rumor::{Rumor, RumorConfig, RumorMill};
use crate::membership::{
    ClockSample, ForceLeaveError, Member, MemberEvent, MemberState, Membership, MembershipConfig,
    SwimMessage,
};
use crate::store::{Store, StoreError, StoreKey, WriteBatch};
use crate::wire::{encoded_len, Datagram, Frame, FrameBody, MAX_DATAGRAM};
use core::net::SocketAddr;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};

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
    /// A contact attempt waits for seed `name` (`host:port`) to be resolved: the driver
    /// resolves it and hands every address to [`Node::handle_seed_resolved`].
    ResolveSeed { name: String },
}

/// How a node takes part in its cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub gossip_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Cluster addresses to join through.
    pub seeds: Vec<SocketAddr>,
    /// Seeds given by name (`host:port`), resolved again at every contact attempt.
    pub seed_names: Vec<String>,
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
    /// The wall-clock time the node is opened at (milliseconds): a new data directory's clock
    /// starts above it plus the skew bound.
    pub opened_at_ms: u64,
    /// How far ahead of this node's wall clock a peer's timestamp may be (milliseconds, default
    /// 500); further ahead, the message carrying it is dropped. Larger tolerates worse clocks
    /// and lets a fast clock's writes beat later writes by up to this much.
    pub max_clock_skew_ms: u64,
    /// Below this much free space on the data directory's file system (bytes, default 128 MiB)
    /// the node refuses writes; it takes them again at one and a half times as much. Leave room
    /// for the database to compact and for a checkpoint.
    pub disk_reserve_bytes: u64,
}

impl ClusterConfig {
    /// A node alone (no peers known), for tests and tools.
    pub fn standalone() -> Self {
        let nowhere = SocketAddr::from(([127, 0, 0, 1], 0));
        ClusterConfig {
            gossip_addr: nowhere,
            http_addr: nowhere,
            seeds: Vec::new(),
            seed_names: Vec::new(),
            membership: MembershipConfig::lan(),
            rumor: RumorConfig::default(),
            anti_entropy_interval_ms: 2_000,
            rng_seed: 0,
            resync_first: false,
            tombstones: TombstoneConfig::default(),
            opened_at_ms: 0,
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
            disk_reserve_bytes: 128 << 20,
        }
    }
}

/// Counters of the cluster protocol, exported as metrics by the driver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Last-writer-wins writes this node merged that discarded a concurrent write (kv).
    pub conflicts: u64,
    /// Set elements whose remove a concurrent add outlived, as this node merged them.
    pub set_conflicts: u64,
    /// Heals this node followed to convergence (see `heal.rs`).
    pub heals: u64,
    pub rumors_published: u64,
    pub rumors_pushed: u64,
    pub rumors_received: u64,
    pub rumors_merged: u64,
    /// How long the writes made elsewhere took to arrive, by rumor (see `replication_lag.rs`).
    pub replication_lag: ReplicationLag,
    pub sync_sessions: u64,
    /// Exchanges a peer started that this node declined while it caught up from that peer.
    pub sync_declined: u64,
    /// Exchanges fetching whole leaves that failed (the next one with that peer compares key
    /// lists instead).
    pub sync_fetch_failed: u64,
    /// Exchanges abandoned after no answer for a minute.
    pub sync_abandoned: u64,
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
    /// Peer messages or states dropped because a timestamp was too far ahead of this node's
    /// clock.
    pub dropped_clock_skew: u64,
    /// Peer states dropped because their kind did not match their keyspace.
    pub dropped_wrong_kind: u64,
    /// Peer messages dropped as invalid (from strangers, impossible incarnations, requests to
    /// forget values the peer cannot have refused).
    pub dropped_invalid: u64,
    /// Peer states and exchanges refused while the disk was full.
    pub dropped_disk_full: u64,
    /// Consistency-level waits (`?w=`, `?r=`).
    pub waits: super::quorum::WaitStats,
    /// Other members this node saw become Suspect, and Dead (transitions, however learned).
    pub members_suspected: u64,
    pub members_declared_dead: u64,
    /// Suspicions of itself this node refuted.
    pub refutations: u64,
    /// Suspicions this node's own probes raised (the failure detector's verdicts, right or
    /// wrong; each is then seen as a transition by every node that hears of it).
    pub suspicions_raised: u64,
    /// The local health score now (Lifeguard: 0 = healthy; its probes run `1 + score` times
    /// more slowly).
    pub local_health: u64,
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
    /// Per peer, when it last fetched whole leaves from this node (local milliseconds): it is
    /// catching up, so no exchange is started with it meanwhile.
    pub(super) answered_ms: BTreeMap<NodeId, u64>,
    /// Peers with which the last exchange fetching whole leaves failed: the next exchange with
    /// each compares key lists instead (a peer of a version without `FetchLeaves` drops it).
    pub(super) fetch_failed: BTreeSet<NodeId>,
    pub(super) outbox: Vec<Outbound>,
    pub(super) stats: ClusterStats,
    /// Reads are not authoritative until a full exchange with a peer completes.
    pub(super) resyncing: bool,
    pub(super) disk_reserve_bytes: u64,
    /// Per peer, the greatest collection horizon it announced in an exchange (checked against
    /// this node's clock): it bounds what that peer may ask this node to forget.
    pub(super) peer_horizons: BTreeMap<NodeId, Timestamp>,
    pub(super) refusals: RefusalLog,
    /// Clocks of peers whose authentic messages arrive outside the freshness window (so no
    /// probe can measure them), and when this node last answered one: at most
    /// [`MAX_STALE_CLOCKS`].
    pub(super) stale_clocks: BTreeMap<NodeId, (ClockSample, u64)>,
}

/// Peers whose stale clocks are remembered.
const MAX_STALE_CLOCKS: usize = 64;
/// A peer whose messages arrive stale gets at most one answer this often (milliseconds): a
/// bare datagram, stale for it too, so that it learns its clock is off.
const STALE_ANSWER_EVERY_MS: u64 = 5_000;

impl Cluster {
    pub(super) fn new(id: NodeId, incarnation: u64, config: ClusterConfig) -> Self {
        let me = Member {
            id,
            gossip_addr: config.gossip_addr,
            http_addr: config.http_addr,
            state: MemberState::Alive,
            incarnation,
        };
        let mut rumors = RumorMill::new(config.rumor);
        rumors.set_me(me.id.clone());
        Cluster {
            membership: Membership::new(me, config.seeds, config.membership)
                .with_seed_names(config.seed_names),
            rumors,
            rng: SmallRng::seed_from_u64(config.rng_seed),
            sessions: BTreeMap::new(),
            next_session: 1,
            next_sync_ms: 0,
            anti_entropy_interval_ms: config.anti_entropy_interval_ms,
            sync_soon: Vec::new(),
            visited: BTreeSet::new(),
            answered_ms: BTreeMap::new(),
            fetch_failed: BTreeSet::new(),
            outbox: Vec::new(),
            stats: ClusterStats::default(),
            resyncing: config.resync_first,
            disk_reserve_bytes: config.disk_reserve_bytes,
            peer_horizons: BTreeMap::new(),
            refusals: RefusalLog::default(),
            stale_clocks: BTreeMap::new(),
        }
    }

    pub(super) fn rumors_mut(&mut self) -> &mut RumorMill {
        &mut self.rumors
    }

    pub(super) fn rumors(&self) -> &RumorMill {
        &self.rumors
    }
}

impl<S: Store> Node<S> {
    /// Every member this node knows, itself included.
    pub fn members(&self) -> Vec<Member> {
        self.cluster.membership.members().cloned().collect()
    }

    pub fn cluster_stats(&self) -> ClusterStats {
        let mut stats = self.cluster.stats.clone();
        stats.rumors_published = self.meta.seen.get(&self.replica);
        stats.tombstones_held = self.tombstones.held() as u64;
        stats.conflicts = self.conflicts.counted;
        stats.set_conflicts = self.conflicts.set_races;
        stats.heals = self.heal.completed;
        stats.local_health = u64::from(self.cluster.membership.local_health());
        stats.suspicions_raised = self.cluster.membership.suspicions_raised();
        stats
    }

    /// Entries of the rumor "seen" tracker (bounded by members, not writes).
    pub fn seen_entries(&self) -> usize {
        self.cluster.rumors.seen_entries()
    }

    /// Messages for the transport, in the order they were produced, ending with the pushes of
    /// the rumors that became fresh since the last call (this node's writes, and rumors from
    /// peers to pass on): the driver takes them once per round, so a round's rumors share
    /// datagrams (they leave with the round's commit anyway), and a rumor that several peers
    /// sent during the round goes to none of them.
    pub fn take_outbound(&mut self) -> Vec<Outbound> {
        self.push_fresh_rumors();
        std::mem::take(&mut self.cluster.outbox)
    }

    /// True when some other member is up (alive or suspect).
    pub(super) fn has_peers(&self) -> bool {
        self.cluster
            .membership
            .members()
            .any(|m| m.id != self.id && m.state.is_up())
    }

    /// Queues the rumor of a local write; [`Node::take_outbound`] pushes it with the others of
    /// its round.
    pub(super) fn spread_local(&mut self, key: StoreKey, delta: KeyState, seq: u64) {
        let members = self.cluster.membership.members().count();
        let rumor = Rumor {
            origin: self.replica.clone(),
            seq,
            key,
            delta,
        };
        let small = encoded_len(&rumor) <= MAX_DATAGRAM / 2;
        self.cluster.rumors.publish(rumor, members, small);
    }

    /// A datagram arrived from `from_addr`.
    pub fn handle_datagram(
        &mut self,
        now_ms: u64,
        from_addr: SocketAddr,
        datagram: Datagram,
    ) -> Result<(), StoreError> {
        let now_ms = self.clock_in(now_ms);
        let Datagram {
            from,
            swim,
            updates,
            rumors,
            pull,
        } = datagram;
        if !from.is_plausible() {
            self.invalid_input(now_ms, &from.id, "an impossible incarnation for itself");
            return Ok(());
        }
        let (updates, implausible): (Vec<Member>, Vec<Member>) =
            updates.into_iter().partition(Member::is_plausible);
        if !implausible.is_empty() {
            self.invalid_input(now_ms, &from.id, "an impossible incarnation for a member");
        }
        if let Some(SwimMessage::PingReq {
            target,
            target_addr,
            ..
        }) = &swim
        {
            // Known at that very address (this node too: no honest prober names it as well).
            let known = self
                .cluster
                .membership
                .member(target)
                .is_some_and(|m| m.gossip_addr == *target_addr);
            if !known {
                // Membership ignores it: this node is never a reflector for strangers.
                self.invalid_input(now_ms, &from.id, "an indirect probe of a stranger");
            }
        }
        let mut out = Vec::new();
        match swim {
            Some(message) => self
                .cluster
                .membership
                .handle_message(now_ms, &from, from_addr, message, &mut out),
            None => {
                let membership = &mut self.cluster.membership;
                membership.apply_updates_from(now_ms, &from.id, std::slice::from_ref(&from));
                membership.heard_from(now_ms, &from.id);
            }
        }
        self.cluster
            .membership
            .apply_updates_from(now_ms, &from.id, &updates);
        if let Some(correction) = self.cluster.membership.correction_for(&from) {
            let datagram = self.datagram(None, Some(&from.id), vec![correction]);
            self.cluster.outbox.push(Outbound::Datagram {
                to: from_addr,
                to_id: Some(from.id.clone()),
                datagram,
            });
        }
        self.receive_rumors(now_ms, &from.id, rumors)?;
        if let Some(summary) = pull {
            self.answer_pull(from_addr, &from.id, &summary);
        }
        self.send_swim(out);
        self.send_member_lists();
        self.after_membership_change(now_ms);
        Ok(())
    }

    /// A one-way frame (rumors too large for datagrams, or values to forget) arrived at this
    /// node's wall time `now_ms`. Only members send frames.
    pub fn handle_frame(&mut self, now_ms: u64, frame: Frame) -> Result<(), StoreError> {
        let now_ms = self.clock_in(now_ms);
        if !self.is_member(&frame.from) {
            self.invalid_input(now_ms, &frame.from, "a frame from a stranger");
            return Ok(());
        }
        self.cluster.membership.heard_from(now_ms, &frame.from);
        match frame.body {
            FrameBody::Rumors(rumors) => self.receive_rumors(now_ms, &frame.from, rumors)?,
            FrameBody::Forget(values) => self.forget(now_ms, &frame.from, values)?,
            FrameBody::Replicate(rumor) => self.receive_replicate(now_ms, &frame.from, rumor)?,
            FrameBody::Replicated { origin, seq } => {
                self.receive_replicated(&frame.from, origin, seq)
            }
            FrameBody::ReadRequest { request, key } => {
                self.answer_read(&frame.from, request, key)?
            }
            FrameBody::ReadReply {
                request,
                key,
                state,
                collected_through,
            } => self.receive_read_reply(
                now_ms,
                &frame.from,
                request,
                key,
                state,
                collected_through,
            )?,
            FrameBody::ReadRepair { key, state } => {
                self.receive_read_repair(now_ms, &frame.from, key, state)?
            }
            FrameBody::SyncRequest(_) | FrameBody::SyncReply(_) => {
                self.invalid_input(
                    now_ms,
                    &frame.from,
                    "an exchange message as a one-way frame",
                );
            }
        }
        Ok(())
    }

    /// Rumors from `from`: each is checked before it is marked as seen, so a refused one is
    /// neither merged nor passed on (anti-entropy brings it later if it becomes acceptable).
    fn receive_rumors(
        &mut self,
        now_ms: u64,
        from: &NodeId,
        rumors: Vec<Rumor>,
    ) -> Result<(), StoreError> {
        let members = self.cluster.membership.members().count();
        let mut refused = Vec::new();
        for rumor in rumors {
            self.cluster.stats.rumors_received += 1;
            if let Err(why) = self.vet(&rumor.key, &rumor.delta, now_ms) {
                self.refused_input(now_ms, from, why);
                continue;
            }
            let small = encoded_len(&rumor) <= MAX_DATAGRAM / 2;
            let (key, delta, origin, seq) = (
                rumor.key.clone(),
                rumor.delta.clone(),
                rumor.origin.clone(),
                rumor.seq,
            );
            if self.cluster.rumors.receive(rumor, from, members, small) {
                self.cluster.stats.replication_lag.record(now_ms, &delta);
                let applied = self.merge_from_peer(
                    now_ms,
                    from,
                    key,
                    delta,
                    Some((origin, seq)),
                    &mut refused,
                )?;
                if applied == Applied::Changed {
                    self.cluster.stats.rumors_merged += 1;
                }
                self.meta_dirty = true;
            }
        }
        self.tell_to_forget(from, refused);
        Ok(())
    }

    /// Timers: probes, suspicion, re-contact, anti-entropy, rumor retransmission.
    pub fn handle_tick(&mut self, now_ms: u64) -> Result<(), StoreError> {
        let announced = self.announce_expiries(now_ms);
        let now_ms = self.clock_in(now_ms);
        let mut out = Vec::new();
        self.cluster
            .membership
            .handle_tick(now_ms, &mut self.cluster.rng, &mut out);
        self.send_swim(out);
        self.after_membership_change(now_ms);
        self.expire_sessions(now_ms);
        if now_ms >= self.cluster.next_sync_ms || !self.cluster.sync_soon.is_empty() {
            self.start_anti_entropy(now_ms);
        }
        self.cluster.rumors.tick(now_ms);
        if let Some(round_trip) = self.cluster.membership.median_round_trip_ms() {
            self.cluster.rumors.set_round_trip(round_trip);
        }
        let peers_up = self.cluster.membership.peers_up();
        self.cluster.rumors.set_peers_up(peers_up);
        self.push_fresh_rumors();
        self.ask_again(now_ms);
        self.watch_clock();
        self.log_cluster_view(now_ms);
        self.report_heal(now_ms);
        self.watch_disk(now_ms, false);
        announced.and(self.collect_tombstones(now_ms))
    }

    /// Seed `name` resolved to `addrs` (`None`: the resolution failed): each address is
    /// contacted, unless it is this node's or a member's that is up.
    pub fn handle_seed_resolved(
        &mut self,
        now_ms: u64,
        name: &str,
        addrs: Option<Vec<SocketAddr>>,
    ) {
        let now_ms = self.clock_in(now_ms);
        if addrs.is_none()
            && self
                .cluster
                .refusals
                .due(&self.id, "seed_unresolved", now_ms)
        {
            tracing::warn!(seed = %name, "seed name did not resolve; trying its last addresses, and resolving it again at the next contact attempt");
        }
        let mut out = Vec::new();
        self.cluster
            .membership
            .seed_resolved(now_ms, name, addrs, &mut out);
        self.send_swim(out);
    }

    /// This node's clock against its peers' (see `clock_watch.rs`).
    pub fn clock_status(&self) -> ClockStatus {
        self.clock
    }

    /// An authentic datagram from `peer` (at `from`), sealed at its clock's `sent_ms`, arrived
    /// at `now_ms` outside the cluster key's freshness window, and was dropped: a replay, or a
    /// clock far off. Its offset counts for the clock verdict when no probe can measure that
    /// peer, and the peer gets a bare datagram now and then, stale for it too, so that it
    /// learns the same about its own clock.
    pub fn handle_stale(&mut self, now_ms: u64, from: SocketAddr, peer: &NodeId, sent_ms: u64) {
        if *peer == self.id {
            return;
        }
        let now_ms = self.clock_in(now_ms);
        // One way: the message took between nothing and about a second to arrive.
        let sample = ClockSample {
            offset_ms: (i128::from(sent_ms) - i128::from(self.wall(now_ms)))
                .clamp(i64::MIN.into(), i64::MAX.into()) as i64
                + 500,
            uncertainty_ms: 500,
            at_ms: now_ms,
        };
        if self.cluster.refusals.due(peer, "stale", now_ms) {
            tracing::warn!(peer = %peer, %from, offset_ms = sample.offset_ms, "dropped cluster traffic sealed outside the freshness window: a replay, or this node's or the peer's clock is far off");
        }
        let clocks = &mut self.cluster.stale_clocks;
        if !clocks.contains_key(peer) && clocks.len() >= MAX_STALE_CLOCKS {
            let oldest = clocks
                .iter()
                .min_by_key(|(_, (s, _))| s.at_ms)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                clocks.remove(&oldest);
            }
        }
        let answered = clocks.get(peer).map_or(0, |(_, at)| *at);
        let answer = answered == 0 || now_ms >= answered + STALE_ANSWER_EVERY_MS;
        let last = if answer { now_ms.max(1) } else { answered };
        clocks.insert(peer.clone(), (sample, last));
        if answer {
            let datagram = self.bare_datagram();
            self.cluster.outbox.push(Outbound::Datagram {
                to: from,
                to_id: Some(peer.clone()),
                datagram,
            });
        }
    }

    /// Judges this node's clock from the latest samples, and logs when the verdict changes.
    fn watch_clock(&mut self) {
        let membership = &self.cluster.membership;
        let staying = |peer: &NodeId| {
            membership
                .member(peer)
                .is_some_and(|m| m.state != MemberState::Left)
        };
        // Probes measure members; a peer no probe reaches (its messages arrive stale) counts by
        // what its stale messages said.
        let mut samples: Vec<(NodeId, ClockSample)> = membership
            .clock_samples()
            .filter(|(peer, _)| staying(peer))
            .map(|(peer, s)| (peer.clone(), *s))
            .collect();
        for (peer, (sample, _)) in &self.cluster.stale_clocks {
            if !samples.iter().any(|(p, _)| p == peer) {
                samples.push((peer.clone(), *sample));
            }
        }
        let bound_ms = self.hlc.max_ahead_ms();
        let joined = self.has_peers();
        let status = clock_watch::judge(samples.iter().map(|(_, s)| s), joined, bound_ms);
        if status.out_of_bounds != self.clock.out_of_bounds {
            if status.out_of_bounds {
                tracing::error!(
                    offset_ms = status.median_offset_ms,
                    peers_beyond = status.beyond,
                    peers_measured = status.measured,
                    bound_ms,
                    "this node's clock is off from most of the cluster's by more than --max-clock-skew-ms (offset_ms > 0: this clock is behind); refusing client writes until it is fixed"
                );
            } else {
                tracing::warn!(
                    offset_ms = status.median_offset_ms,
                    peers_measured = status.measured,
                    "this node's clock agrees with the cluster's again; accepting writes"
                );
            }
        }
        self.clock = status;
    }

    /// Graceful leave: tell peers this node is leaving.
    pub fn leave(&mut self, now_ms: u64) {
        let now_ms = self.clock_in(now_ms);
        let mut out = Vec::new();
        self.cluster
            .membership
            .leave(now_ms, &mut self.cluster.rng, &mut out);
        self.send_swim(out);
        self.meta_dirty = true;
    }

    /// Drops what this node keeps about a member it no longer knows: every table that grows
    /// with members shrinks with them.
    fn forget_member(&mut self, id: &NodeId) {
        self.tombstones.forget_member(id);
        self.cluster.rumors.forget_origin(id);
        self.cluster.peer_horizons.remove(id);
        self.cluster.visited.remove(id);
        self.cluster.sync_soon.retain(|p| p != id);
    }

    /// Forces member `id` out of the cluster (`DELETE /v1/cluster/members/{id}`): it is marked
    /// Left everywhere, as if it had left, stops counting in the majority at once and is
    /// forgotten after the reap period. For a member that will never return; one that is in
    /// fact alive refutes it.
    pub fn remove_member(&mut self, now_ms: u64, id: &NodeId) -> Result<Member, ForceLeaveError> {
        let now_ms = self.clock_in(now_ms);
        let removed = match self.cluster.membership.force_leave(now_ms, id) {
            Err(ForceLeaveError::Unknown) => {
                // Remembered from before a restart and not heard of since: only this node
                // counts it.
                let removed = self.forget_unheard(id).ok_or(ForceLeaveError::Unknown)?;
                tracing::warn!(member = %id, "remembered member forced out by an operator");
                return Ok(removed);
            }
            other => other?,
        };
        tracing::warn!(member = %id, "member forced out by an operator");
        let mut out = Vec::new();
        self.cluster
            .membership
            .handle_tick(now_ms, &mut self.cluster.rng, &mut out);
        self.send_swim(out);
        self.after_membership_change(now_ms);
        Ok(removed)
    }

    /// This node's own member record: the addresses it advertises, its state and incarnation.
    pub fn me(&self) -> &Member {
        self.cluster.membership.me()
    }

    /// This node's incarnation (persisted, so a restart starts above it).
    pub fn incarnation(&self) -> u64 {
        self.cluster.membership.me().incarnation
    }

    /// Follows the membership events of the call at timer time `now_ms`.
    fn after_membership_change(&mut self, now_ms: u64) {
        for event in self.cluster.membership.drain_events() {
            let (member, from) = match &event {
                MemberEvent::Joined(m) => (m, None),
                MemberEvent::StateChanged { member, from } => (member, Some(*from)),
                MemberEvent::Refuted { claim, incarnation } => {
                    self.cluster.stats.refutations += 1;
                    tracing::info!(claim = %claim.state, claimed_incarnation = claim.incarnation, incarnation, "refuted an out-of-date verdict about this node");
                    self.meta_dirty = true;
                    continue;
                }
                MemberEvent::Reaped(m) => {
                    tracing::info!(member = %m.id, state = %m.state, "forgot a member gone for the reap period");
                    self.forget_member(&m.id);
                    self.roster.changed();
                    continue;
                }
            };
            if member.id != self.id {
                self.roster.heard_of(&member.id);
                self.roster.changed();
            }
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
                    match member.state {
                        MemberState::Suspect => self.cluster.stats.members_suspected += 1,
                        MemberState::Dead => self.cluster.stats.members_declared_dead += 1,
                        MemberState::Alive | MemberState::Left => {}
                    }
                    tracing::info!(member = %member.id, from = %from, to = %member.state, incarnation = member.incarnation, "member state changed")
                }
            }
            if !self.store.clustered() {
                self.tombstones.met_peers();
                let marked = self.store.apply(WriteBatch {
                    clustered: true,
                    ..WriteBatch::default()
                });
                if let Err(e) = marked {
                    tracing::error!(error = %e, "cannot record that this node joined a cluster");
                }
            }
            if member.state == MemberState::Alive && from == Some(MemberState::Dead) {
                let totals = self.heal_totals();
                let wall_ms = self.wall(now_ms);
                self.heal.came_back(&member.id, now_ms, wall_ms, totals);
            }
            if member.state == MemberState::Alive && !self.cluster.sync_soon.contains(&member.id) {
                // Catch up with a member that just (re)appeared.
                self.cluster.sync_soon.push(member.id.clone());
            }
        }
    }
}
