//! SWIM membership and failure detection (Das et al., 2002) with Lifeguard (Dadgar et al., 2018:
//! local health, suspicions that need confirming, the buddy system): who is in the cluster, who
//! is up, and which news about members to piggyback next.
//!
//! A pure state machine in foca's shape. The driver hands in what arrived
//! ([`Membership::handle_message`], [`Membership::apply_updates_from`]), the time as `now_ms` and a seeded
//! RNG ([`Membership::handle_tick`]); the membership answers by pushing [`Outgoing`] messages into
//! an outbox, by handing out updates to piggyback ([`Membership::updates_to_send`]) and by recording
//! [`MemberEvent`]s. It never reads a clock, never touches a socket, never encodes bytes, and never
//! forgets a member: Dead members stay in the table and are re-contacted at a low rate, so a
//! healed partition re-forms without a restart.
//!
//! Files: [`member`] (records and precedence), [`config`] (timings), [`message`] (the wire
//! messages), `broadcast` (the retransmission queue), `probe` (failure detection: probes, indirect
//! probes, resends, suspicion, the local health score), `suspicion` (one suspicion's shrinking
//! timeout), `contact` (joining through seeds, re-contacting Dead members, announcing news,
//! introducing this node to members it heard of).
//!
//! # Driver contract
//!
//! - Every datagram carries the sender's own record ([`Membership::me`]) as its envelope and up to
//!   `max_piggyback` updates from [`Membership::updates_to_send`].
//! - On receipt: [`Membership::handle_message`] (or, for a datagram without a probe message or a
//!   frame, [`Membership::heard_from`] the sender), then [`Membership::apply_updates_from`] with
//!   the piggybacked updates, then build the replies, adding [`Membership::correction_for`] the
//!   sender to each reply addressed to `from_addr` (adding it to every datagram for a member, found
//!   with [`Membership::member_by_addr`], is also fine), and putting
//!   [`Membership::suspicion_to_tell`] first in anything sent to a member this node suspects.
//! - Call [`Membership::handle_tick`] again no later than [`Membership::next_wakeup_ms`], and
//!   after any other input.
//! - Resolve every seed name [`Membership::take_resolve_wanted`] hands out (after any input) and
//!   hand the addresses, or the failure, to [`Membership::seed_resolved`].

mod broadcast;
mod clock_sample;
pub mod config;
mod contact;
pub mod member;
pub mod message;
mod probe;
mod suspicion;

#[cfg(test)]
mod tests;

pub use clock_sample::ClockSample;
pub use config::MembershipConfig;
pub use member::{up_majority, Member, MemberEvent, MemberState, MAX_INCARNATION};
pub use message::{Outgoing, SwimMessage};

use crate::clock::NodeId;
use broadcast::Broadcasts;
use core::net::SocketAddr;
use probe::Prober;
use std::collections::BTreeMap;
use suspicion::Suspicion;

/// Why a member could not be forced out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForceLeaveError {
    #[error("no such member")]
    Unknown,
    #[error("the member is alive: ask it to leave instead")]
    Alive,
    #[error("a node cannot force itself out: make it leave")]
    Itself,
}

/// The membership as one node sees it, and the protocol that keeps it current.
#[derive(Debug)]
pub struct Membership {
    me: Member,
    config: MembershipConfig,
    /// Addresses to join through, without our own.
    seeds: Vec<SocketAddr>,
    /// Seeds given by name (`host:port`), with the addresses each last resolved to: the driver
    /// resolves a name again at every contact attempt (see `contact.rs`).
    seed_names: Vec<NamedSeed>,
    /// Names whose resolution a contact attempt waits for, until the driver takes them.
    resolve_wanted: Vec<String>,
    /// Addresses that turned out to be this node's own (its datagram came back).
    own_addrs: Vec<SocketAddr>,
    /// Every member heard of, except this node; a member dead or gone for `reap_after_ms` is
    /// forgotten ([`MemberEvent::Reaped`]).
    peers: BTreeMap<NodeId, Peer>,
    /// The latest measurement of each peer's clock against ours (from timed Acks).
    clocks: BTreeMap<NodeId, ClockSample>,
    prober: Prober,
    broadcasts: Broadcasts,
    events: Vec<MemberEvent>,
    next_join_ms: u64,
    next_rejoin_ms: u64,
    /// We have news of our own (a verdict, a refutation, a leave) to push to a few members at the
    /// next tick instead of waiting for the next probe to carry it.
    announce: bool,
    /// Members that joined or came back, in a Ping or PingReq of their own, since the driver
    /// last asked: each is sent the whole member list (see [`Membership::take_list_wanted`]).
    list_wanted: Vec<SocketAddr>,
    /// Members learned of from others' gossip since the last tick: this node introduces itself
    /// to each (see `contact.rs`).
    introductions: Vec<SocketAddr>,
    /// How far the times passed in are ahead of this node's wall clock (the core runs timers on
    /// a clock that absorbs steps back): Acks carry, and clock samples compare, wall time.
    wall_behind_ms: u64,
}

/// A seed given by name, and the addresses it resolved to last.
#[derive(Debug)]
struct NamedSeed {
    name: String,
    addrs: Vec<SocketAddr>,
}

/// Where a record about a member came from.
#[derive(Clone, Copy, Debug)]
enum Via<'a> {
    /// The member's own record, in the envelope of a message it sent; `asks` when that message
    /// expects an answer (a Ping or a PingReq: a joining or restarted node's first messages).
    Envelope { asks: bool },
    /// Gossiped (piggybacked) by this member.
    Gossip(&'a NodeId),
    /// Handed in without its sender.
    Unknown,
    /// This node's own verdict.
    Local,
}

#[derive(Debug)]
struct Peer {
    member: Member,
    /// The running suspicion (when it is declared Dead unless it refutes); None unless Suspect.
    suspicion: Option<Suspicion>,
    /// When a message from the member itself last arrived (any datagram or frame).
    heard_ms: Option<u64>,
    /// When we last pinged this member only to carry a correction to it (rate limit).
    corrected_ms: Option<u64>,
    /// Since when (our clock) the member has been Dead or Left; None while it is up.
    down_since_ms: Option<u64>,
}

impl Membership {
    /// `me` is this node (state Alive, its starting incarnation); `seeds` are cluster addresses to
    /// join through (may include our own address: ignore it).
    ///
    /// Panics if `config` fails [`MembershipConfig::validate`].
    pub fn new(me: Member, seeds: Vec<SocketAddr>, config: MembershipConfig) -> Self {
        if let Err(problem) = config.validate() {
            panic!("invalid membership config: {problem}");
        }
        let me = me.with_state(MemberState::Alive);
        let mut unique = Vec::new();
        for seed in seeds {
            if seed != me.gossip_addr && !unique.contains(&seed) {
                unique.push(seed);
            }
        }
        Membership {
            me,
            config,
            seeds: unique,
            seed_names: Vec::new(),
            resolve_wanted: Vec::new(),
            own_addrs: Vec::new(),
            peers: BTreeMap::new(),
            clocks: BTreeMap::new(),
            prober: Prober::default(),
            broadcasts: Broadcasts::default(),
            events: Vec::new(),
            next_join_ms: 0,
            next_rejoin_ms: 0,
            announce: false,
            list_wanted: Vec::new(),
            introductions: Vec::new(),
            wall_behind_ms: 0,
        }
    }

    /// Times passed in from now on are `behind_ms` ahead of this node's wall clock.
    pub fn set_wall_behind(&mut self, behind_ms: u64) {
        self.wall_behind_ms = behind_ms;
    }

    /// The wall time at time `now_ms` (as passed in).
    fn wall(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.wall_behind_ms)
    }

    /// A datagram's membership part arrived. `sender` is the sender's self-description carried in
    /// every datagram's envelope (id, addrs, state, incarnation); `from_addr` is the UDP source
    /// address. The envelope is applied as an update (a new member becomes known as Alive, and a
    /// member's addresses are learned); a Ping is answered, a PingReq relayed, an Ack matched to
    /// our probe or forwarded to whoever asked for it. A sender that is out of date about itself
    /// always gets a reply (a Ping if nothing else), so it can be given its correction.
    pub fn handle_message(
        &mut self,
        now_ms: u64,
        sender: &Member,
        from_addr: SocketAddr,
        msg: SwimMessage,
        out: &mut Vec<Outgoing>,
    ) {
        if sender.id == self.me.id {
            // Our own datagram came back: that seed is another name for our own address.
            self.seeds.retain(|seed| *seed != from_addr);
            if !self.own_addrs.contains(&from_addr) {
                self.own_addrs.push(from_addr);
            }
            return;
        }
        if !sender.is_plausible() {
            return;
        }
        let asks = matches!(msg, SwimMessage::Ping { .. } | SwimMessage::PingReq { .. });
        self.apply(now_ms, sender.clone(), Via::Envelope { asks });
        self.heard_from(now_ms, &sender.id);
        let replied = match msg {
            SwimMessage::Ping { probe } => {
                out.push(Outgoing {
                    to: from_addr,
                    msg: SwimMessage::Ack {
                        probe,
                        clock_ms: self.wall(now_ms),
                    },
                });
                true
            }
            SwimMessage::Ack { probe, clock_ms } => {
                self.handle_ack(now_ms, &sender.id, probe, clock_ms, out);
                false
            }
            SwimMessage::PingReq {
                probe,
                target,
                target_addr,
            } => self.handle_ping_req(now_ms, from_addr, probe, target, target_addr, out),
        };
        if !replied {
            self.ping_to_correct(now_ms, sender, from_addr, out);
        }
    }

    /// Piggybacked updates arrived, their sender unknown (records remembered, tests).
    pub fn apply_updates(&mut self, now_ms: u64, updates: &[Member]) {
        for update in updates {
            self.apply(now_ms, update.clone(), Via::Unknown);
        }
    }

    /// Updates piggybacked by member `from` arrived: a suspicion it sends confirms the one this
    /// node holds (Lifeguard's dynamic suspicion timeout).
    pub fn apply_updates_from(&mut self, now_ms: u64, from: &NodeId, updates: &[Member]) {
        for update in updates {
            self.apply(now_ms, update.clone(), Via::Gossip(from));
        }
    }

    /// A message sent by member `id` itself arrived (a datagram without a probe message, or a
    /// frame): the member is up, whatever became of the probes in flight.
    pub fn heard_from(&mut self, now_ms: u64, id: &NodeId) {
        if let Some(peer) = self.peers.get_mut(id) {
            peer.heard_ms = Some(now_ms);
        }
    }

    /// Our record of `member` (as [`Membership::member_by_addr`] found it for an address we
    /// send to) when we suspect it, to piggyback first on what we send it, so that it refutes at
    /// once (Lifeguard's buddy system).
    pub fn suspicion_to_tell(&self, member: &Member) -> Option<Member> {
        (member.state == MemberState::Suspect && member.id != self.me.id).then(|| member.clone())
    }

    /// How many members are up, this node excluded (as many as [`Membership::alive_peers`]
    /// lists, counted without building the list).
    pub fn peers_up(&self) -> usize {
        self.up_count() - 1
    }

    /// This node's local health score (Lifeguard's LHM, 0 = healthy, at most
    /// `max_local_health`): its probes run `1 + score` times more slowly.
    pub fn local_health(&self) -> u32 {
        self.prober.health()
    }

    /// Suspicions this node's own probes raised (each a member suspected, rightly or not; the
    /// transitions it then sees are counted by the caller).
    pub fn suspicions_raised(&self) -> u64 {
        self.prober.raised()
    }

    /// Timers: probe schedule, probe timeouts -> indirect probes -> suspicion, suspicion timeouts
    /// -> dead, low-rate re-contact of dead members and seeds, join retries, and news to announce.
    /// Calling it early or often is harmless.
    pub fn handle_tick(&mut self, now_ms: u64, rng: &mut impl rand::Rng, out: &mut Vec<Outgoing>) {
        self.reap(now_ms);
        self.expire_suspicions(now_ms);
        self.tick_probe(now_ms, rng, out);
        self.tick_contact(now_ms, rng, out);
        self.tick_announce(now_ms, rng, out);
        self.tick_introduce(now_ms, out);
    }

    /// Graceful leave: marks this node Left with a higher incarnation, queues that, and sends it
    /// directly to up to `indirect_probes` (at least one) members that are up. Afterwards the node
    /// still answers pings (its envelope says Left) but neither probes nor re-contacts anyone.
    pub fn leave(&mut self, now_ms: u64, rng: &mut impl rand::Rng, out: &mut Vec<Outgoing>) {
        if self.me.state == MemberState::Left {
            return;
        }
        let from = self.me.state;
        self.me.state = MemberState::Left;
        self.me.incarnation += 1;
        self.broadcasts.queue(self.me.clone());
        self.events.push(MemberEvent::StateChanged {
            member: self.me.clone(),
            from,
        });
        self.prober.abandon();
        self.announce = true;
        self.tick_announce(now_ms, rng, out);
    }

    /// Updates to piggyback on the next outgoing datagram, at most `max`; each update is
    /// retransmitted `retransmit_mult * ceil(log2(n+1))` times then dropped (newer updates about
    /// the same member replace older ones).
    pub fn updates_to_send(&mut self, max: usize) -> Vec<Member> {
        let limit = self.config.retransmit_limit(1 + self.peers.len());
        self.broadcasts.take(max, limit)
    }

    /// Our record of the given peer when it is out of date about itself, that is when our record
    /// overrides its own claim (we hold Suspect, Dead or Left for it with an incarnation >= what it
    /// claims, or Alive with a higher one): the node piggybacks this in replies to that peer so that
    /// it refutes.
    pub fn correction_for(&self, peer: &Member) -> Option<Member> {
        let held = &self.peers.get(&peer.id)?.member;
        held.supersedes(peer).then(|| held.clone())
    }

    pub fn me(&self) -> &Member {
        &self.me
    }

    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// The seeds it joins through, as given (addresses, its own left out, then names).
    pub fn seeds(&self) -> Vec<String> {
        let addrs = self.seeds.iter().map(SocketAddr::to_string);
        addrs
            .chain(self.seed_names.iter().map(|seed| seed.name.clone()))
            .collect()
    }

    /// Every member known, this node first, then by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        std::iter::once(&self.me).chain(self.peers.values().map(|peer| &peer.member))
    }

    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        if *id == self.me.id {
            return Some(&self.me);
        }
        self.peers.get(id).map(|peer| &peer.member)
    }

    /// The addresses of the members that joined, or came back (from Dead or Left, or Alive at a
    /// higher incarnation: restarted), in a Ping or PingReq of their own since the last call: a
    /// joining or restarted node learns every member at once from the first member it reaches
    /// (memberlist's push-pull on join does this), instead of one per gossip round.
    pub fn take_list_wanted(&mut self) -> Vec<SocketAddr> {
        let mut wanted = std::mem::take(&mut self.list_wanted);
        wanted.sort();
        wanted.dedup();
        wanted
    }

    /// The member (this node included) whose gossip address is `addr`, if any.
    pub fn member_by_addr(&self, addr: SocketAddr) -> Option<&Member> {
        self.members().find(|member| member.gossip_addr == addr)
    }

    /// Alive and Suspect members, excluding this node.
    pub fn alive_peers(&self) -> Vec<&Member> {
        self.peers
            .values()
            .map(|peer| &peer.member)
            .filter(|member| member.state.is_up())
            .collect()
    }

    /// The latest measurement of each peer's clock against this node's (peers that are known;
    /// see [`ClockSample`]).
    pub fn clock_samples(&self) -> impl Iterator<Item = (&NodeId, &ClockSample)> {
        self.clocks.iter()
    }

    /// The median round trip of the latest probe to each member up (milliseconds, from the
    /// clock samples; None before any was timed). The rumor engine paces relays by it.
    pub fn median_round_trip_ms(&self) -> Option<u64> {
        let mut trips: Vec<u64> = self
            .clocks
            .iter()
            .filter(|(id, _)| self.peers.get(*id).is_some_and(|p| p.member.state.is_up()))
            .map(|(_, sample)| sample.uncertainty_ms * 2)
            .collect();
        trips.sort_unstable();
        trips.get(trips.len() / 2).copied()
    }

    /// Keeps a measurement of `peer`'s clock, if `peer` is a member.
    fn record_clock(&mut self, peer: &NodeId, sample: ClockSample) {
        if self.peers.contains_key(peer) {
            self.clocks.insert(peer.clone(), sample);
        }
    }

    pub fn drain_events(&mut self) -> Vec<MemberEvent> {
        std::mem::take(&mut self.events)
    }

    /// The earliest time at which [`Membership::handle_tick`] has something to do (`u64::MAX` if
    /// nothing is scheduled). A time in the past means now.
    pub fn next_wakeup_ms(&self) -> u64 {
        if self.announce || !self.introductions.is_empty() {
            return 0;
        }
        let suspicions = self
            .peers
            .values()
            .filter_map(|p| p.suspicion.as_ref().map(Suspicion::deadline_ms));
        let timers = [self.next_probe_wakeup_ms(), self.next_contact_wakeup_ms()];
        suspicions
            .chain(timers.into_iter().flatten())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Members up, this node included: the `n` of the suspicion timeout.
    fn up_count(&self) -> usize {
        1 + self
            .peers
            .values()
            .filter(|p| p.member.state.is_up())
            .count()
    }

    /// Applies one record about a member (an envelope, a piggybacked update or our own verdict):
    /// adopts it if it is news by the precedence rule, queues it for gossip and records the event.
    fn apply(&mut self, now_ms: u64, update: Member, via: Via) {
        let from_envelope = matches!(via, Via::Envelope { .. });
        // Only a member whose own message asks for an answer is sent the list: an introduction
        // (an Ack) comes from a node that has the list already.
        let wants_list = matches!(via, Via::Envelope { asks: true });
        if !update.is_plausible() {
            // No honest member sends it; the driver counts such records before they get here.
            return;
        }
        if update.id == self.me.id {
            return self.apply_about_me(update);
        }
        let Some(peer) = self.peers.get_mut(&update.id) else {
            self.peers.insert(
                update.id.clone(),
                Peer {
                    member: update.clone(),
                    suspicion: None,
                    heard_ms: None,
                    corrected_ms: None,
                    down_since_ms: None,
                },
            );
            self.on_new_state(now_ms, &update.id, via);
            if wants_list {
                self.list_wanted.push(update.gossip_addr);
            }
            if matches!(via, Via::Gossip(from) if *from != update.id) && update.state.is_up() {
                // Heard of from someone else: it does not know this node yet, perhaps.
                self.introductions.push(update.gossip_addr);
            }
            self.broadcasts.queue(update.clone());
            self.events.push(MemberEvent::Joined(update));
            return;
        };
        if update.supersedes(&peer.member) {
            let from = peer.member.state;
            // Back from Dead or Left, or Alive again at a higher incarnation: a restart (or a
            // refutation of a suspicion this node missed, which costs one needless list).
            let back = update.state == MemberState::Alive
                && (matches!(from, MemberState::Dead | MemberState::Left)
                    || (from == MemberState::Alive
                        && update.incarnation > peer.member.incarnation));
            if wants_list && back {
                self.list_wanted.push(update.gossip_addr);
            }
            peer.member = update.clone();
            self.on_new_state(now_ms, &update.id, via);
            if from != update.state {
                self.events.push(MemberEvent::StateChanged {
                    member: update.clone(),
                    from,
                });
            }
            self.broadcasts.queue(update);
        } else if let (Via::Gossip(from), Some(suspicion)) = (via, peer.suspicion.as_mut()) {
            // Another member sends the suspicion this node holds: a confirmation.
            if update.state == MemberState::Suspect
                && update.incarnation == peer.member.incarnation
                && *from != update.id
            {
                suspicion.confirm(from);
            }
        } else if from_envelope
            && update.incarnation >= peer.member.incarnation
            && (update.gossip_addr, update.http_addr)
                != (peer.member.gossip_addr, peer.member.http_addr)
        {
            // A member is the authority on its own addresses (a restart may move its HTTP port).
            peer.member.gossip_addr = update.gossip_addr;
            peer.member.http_addr = update.http_addr;
        }
    }

    /// Starts or stops the suspicion timer after a peer's record changed (`via`: where the new
    /// record came from).
    fn on_new_state(&mut self, now_ms: u64, id: &NodeId, via: Via) {
        let up = self.up_count();
        let bounds = self.config.suspicion_bounds_ms(up);
        // Members that could confirm: every member up but this node and the suspect.
        let expected = self.config.indirect_probes.min(up.saturating_sub(2));
        let first = match via {
            Via::Gossip(from) => Some(from.clone()),
            Via::Local => Some(self.me.id.clone()),
            Via::Envelope { .. } | Via::Unknown => None,
        };
        if let Some(peer) = self.peers.get_mut(id) {
            // A Suspect record only replaces another at a higher incarnation: a new suspicion.
            peer.suspicion = (peer.member.state == MemberState::Suspect)
                .then(|| Suspicion::new(now_ms, first, bounds, expected));
            peer.down_since_ms = match peer.member.state {
                MemberState::Alive | MemberState::Suspect => None,
                MemberState::Dead | MemberState::Left => Some(peer.down_since_ms.unwrap_or(now_ms)),
            };
        }
    }

    /// Forgets the members that have been Dead or Left for `reap_after_ms` (memberlist and Serf
    /// reap too): they are no longer re-contacted, counted or listed. One that comes back is
    /// learned again as new, from its own messages.
    ///
    /// A Dead member is forgotten only by a node among a majority of the members ([`up_majority`]):
    /// a minority that forgot the majority would count itself a majority, collect tombstones
    /// without it and, once the partition heals, make it forget its writes. A member that left
    /// (or that an operator forced out) is forgotten on any side.
    fn reap(&mut self, now_ms: u64) {
        let after = self.config.reap_after_ms;
        let majority = up_majority(self.members());
        let gone: Vec<NodeId> = self
            .peers
            .values()
            .filter(|p| {
                (majority || p.member.state == MemberState::Left)
                    && p.down_since_ms
                        .is_some_and(|since| now_ms.saturating_sub(since) >= after)
            })
            .map(|p| p.member.id.clone())
            .collect();
        for id in gone {
            if let Some(peer) = self.peers.remove(&id) {
                self.clocks.remove(&id);
                self.events.push(MemberEvent::Reaped(peer.member));
            }
        }
    }

    /// Marks `id` as Left, as if it had left gracefully, and tells the cluster (an operator's
    /// "this member will never return"). A member that is in fact alive refutes it.
    pub fn force_leave(&mut self, now_ms: u64, id: &NodeId) -> Result<Member, ForceLeaveError> {
        if *id == self.me.id {
            return Err(ForceLeaveError::Itself);
        }
        let held = self.member(id).ok_or(ForceLeaveError::Unknown)?.clone();
        if held.state == MemberState::Alive {
            return Err(ForceLeaveError::Alive);
        }
        let verdict = held.with_state(MemberState::Left);
        self.apply(now_ms, verdict.clone(), Via::Local);
        self.announce = true;
        Ok(verdict)
    }

    /// A record about ourselves: refute it if it would override ours (SWIM §4.2), unless we are
    /// leaving. This is how a restarted node, or a paused one that resumes, clears stale verdicts.
    fn apply_about_me(&mut self, claim: Member) {
        if self.me.state == MemberState::Left || !claim.supersedes(&self.me) {
            return;
        }
        if claim.incarnation >= MAX_INCARNATION {
            // Its refutation would carry an incarnation no member accepts: only a liar sends
            // this, and answering it would cut this node off from everyone.
            return;
        }
        self.me.incarnation = claim.incarnation + 1;
        // Having to refute suggests that this node is the slow or lossy one (Lifeguard).
        self.prober.worse(self.config.max_local_health);
        self.broadcasts.queue(self.me.clone());
        self.events.push(MemberEvent::Refuted {
            claim,
            incarnation: self.me.incarnation,
        });
        self.announce = true;
    }
}
