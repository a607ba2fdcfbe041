//! The deterministic simulator: many cores ([`Node`] over [`MemoryStore`]s) driven by a virtual
//! clock, a seeded random generator and a simulated network with per-link latency, loss,
//! duplication, reordering and partitions, crashes with restart from persisted state, pauses and
//! per-node clock skew and drift. The protocol code is the production code; only time, randomness
//! and the network are simulated, so a run is a pure function of its seed.
//!
//! Every datagram goes through the real codec (encode, then decode on delivery), as on a socket.

pub mod broadcast;
pub mod figure;
pub mod rounds;

use crate::clock::NodeId;
use crate::membership::MembershipConfig;
use crate::node::{ClusterConfig, Node, Outbound, TombstoneConfig, Write, WriteAck};
use crate::store::{Leaf, MemoryStore, Store};
use crate::wire::{self, Frame, SyncAnswer, SyncRequest};
use core::net::SocketAddr;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The wall-clock time (milliseconds since the Unix epoch) at which a simulation starts: a day
/// in 2023, so that clocks minutes behind real time stay well above zero.
pub const SIM_EPOCH_MS: u64 = 1_700_000_000_000;

/// How the simulated world behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    /// Dissemination settings of every node.
    pub rumor: crate::gossip::rumor::RumorConfig,
    /// One-way latency of a message, uniform in this range (milliseconds).
    pub latency_ms: (u64, u64),
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a delivered message is delivered twice.
    pub duplicate: f64,
    /// Each node's timer fires about this often (milliseconds).
    pub tick_ms: u64,
    /// Each node's clock is off by up to this much, either way (milliseconds).
    pub max_skew_ms: u64,
    /// Each node's clock runs fast or slow by up to this many parts per million.
    pub max_drift_ppm: u64,
    /// Each link (ordered pair of nodes) adds its own fixed delay, up to this much
    /// (milliseconds), on top of the latency range.
    pub link_spread_ms: u64,
    /// An anti-entropy request with no reply is failed after this long (milliseconds).
    pub sync_timeout_ms: u64,
    pub anti_entropy_interval_ms: u64,
    pub tombstones: TombstoneConfig,
    /// Membership timings of every node ([`MembershipConfig::for_sim`] by default).
    pub membership: MembershipConfig,
}

impl SimConfig {
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            rumor: Default::default(),
            latency_ms: (1, 20),
            loss: 0.0,
            duplicate: 0.0,
            tick_ms: 50,
            max_skew_ms: 0,
            max_drift_ppm: 0,
            link_spread_ms: 0,
            sync_timeout_ms: 1_000,
            anti_entropy_interval_ms: 2_000,
            // Short enough that simulated runs of a minute collect.
            tombstones: TombstoneConfig {
                min_age_ms: 2_000,
                ..TombstoneConfig::default()
            },
            membership: MembershipConfig::for_sim(),
        }
    }
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
}

struct SimNode {
    id: NodeId,
    addr: SocketAddr,
    store: MemoryStore,
    node: Option<Node<MemoryStore>>,
    skew_ms: i64,
    /// How fast the clock runs, in parts per million off real time.
    drift_ppm: i64,
    paused: bool,
    /// Partition group: messages only flow within a group.
    group: u32,
}

enum Event {
    Tick(usize),
    Datagram {
        to: usize,
        from_addr: SocketAddr,
        bytes: Vec<u8>,
    },
    Frame {
        to: usize,
        frame: Frame,
    },
    SyncRequest {
        to: usize,
        from: usize,
        session: u64,
        message: SyncRequest,
    },
    SyncReply {
        to: usize,
        session: u64,
        reply: Option<SyncAnswer>,
    },
}

/// A simulated cluster.
pub struct Sim {
    config: SimConfig,
    now: u64,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: std::collections::HashMap<u64, Event>,
    next_event: u64,
    pub stats: SimStats,
}

impl Sim {
    /// Builds the cluster: node 0 starts it, every other node joins through node 0.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let addr =
            |i: usize| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 7000));
        let mut nodes = Vec::with_capacity(config.nodes);
        for i in 0..config.nodes {
            let skew = if config.max_skew_ms == 0 {
                0
            } else {
                rng.gen_range(-(config.max_skew_ms as i64)..=config.max_skew_ms as i64)
            };
            let drift_ppm = if config.max_drift_ppm == 0 {
                0
            } else {
                rng.gen_range(-(config.max_drift_ppm as i64)..=config.max_drift_ppm as i64)
            };
            nodes.push(SimNode {
                id: NodeId::new(format!("n{}", i + 1)).unwrap_or_else(|e| panic!("{e}")),
                addr: addr(i),
                store: MemoryStore::new(),
                node: None,
                skew_ms: skew,
                drift_ppm,
                paused: false,
                group: 0,
            });
        }
        let mut sim = Sim {
            config,
            now: 0,
            rng,
            nodes,
            queue: BinaryHeap::new(),
            events: Default::default(),
            next_event: 0,
            stats: SimStats::default(),
        };
        for i in 0..sim.nodes.len() {
            sim.start(i);
        }
        sim
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s clock: real time counted from [`SIM_EPOCH_MS`], off by its skew, and running
    /// fast or slow by its drift.
    fn local_time(&self, i: usize) -> u64 {
        let node = &self.nodes[i];
        let drift = self.now as i128 * node.drift_ppm as i128 / 1_000_000;
        let real = i128::from(SIM_EPOCH_MS + self.now);
        (real + node.skew_ms as i128 + drift).max(0) as u64
    }

    fn cluster_config(&mut self, i: usize) -> ClusterConfig {
        let seeds = if i == 0 {
            Vec::new()
        } else {
            vec![self.nodes[0].addr]
        };
        let mut config = ClusterConfig::standalone();
        config.gossip_addr = self.nodes[i].addr;
        config.rumor = self.config.rumor.clone();
        config.http_addr = self.nodes[i].addr;
        config.seeds = seeds;
        config.membership = self.config.membership.clone();
        config.anti_entropy_interval_ms = self.config.anti_entropy_interval_ms;
        config.tombstones = self.config.tombstones.clone();
        config.rng_seed = self.rng.gen();
        config.opened_at_ms = self.local_time(i);
        config
    }

    /// Opens node `i` on its persisted store (a first start or a restart).
    fn start(&mut self, i: usize) {
        let config = self.cluster_config(i);
        let store = self.nodes[i].store.reopen();
        let id = self.nodes[i].id.clone();
        match Node::open_in_cluster(store, id, config) {
            Ok(node) => self.nodes[i].node = Some(node),
            Err(e) => panic!("simulated node {i} cannot open its store: {e}"),
        }
        let first = self.rng.gen_range(0..self.config.tick_ms.max(1));
        self.schedule(first, Event::Tick(i));
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].node.is_some() && !self.nodes[i].paused
    }

    /// Stops node `i` abruptly; what it had applied stays in its store.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].node = None;
    }

    /// Restarts a crashed node from its persisted state.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].node.is_none() {
            self.start(i);
        }
    }

    /// Sets node `i`'s clock to run `skew_ms` ahead of real time (behind when negative), as a
    /// misconfigured or stepped clock would.
    pub fn set_skew(&mut self, i: usize, skew_ms: i64) {
        self.nodes[i].skew_ms = skew_ms;
    }

    /// Node `i`'s wall clock now (what its core is given as the time).
    pub fn clock_of(&self, i: usize) -> u64 {
        self.local_time(i)
    }

    /// Freezes node `i` (as SIGSTOP): it neither receives nor fires timers until resumed.
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.nodes[i].paused = false;
    }

    /// Splits the nodes into groups that cannot talk to each other (`group[i]` per node).
    pub fn partition(&mut self, groups: &[u32]) {
        for (node, &group) in self.nodes.iter_mut().zip(groups) {
            node.group = group;
        }
    }

    pub fn heal(&mut self) {
        for node in &mut self.nodes {
            node.group = 0;
        }
    }

    /// An operator at node `i` forces member `id` out (`DELETE /v1/cluster/members/{id}`).
    pub fn remove_member(
        &mut self,
        i: usize,
        id: &NodeId,
    ) -> Result<crate::membership::Member, crate::membership::ForceLeaveError> {
        let now = self.local_time(i);
        let node = self.nodes[i]
            .node
            .as_mut()
            .ok_or(crate::membership::ForceLeaveError::Unknown)?;
        let removed = node.remove_member(now, id);
        self.after(i);
        removed
    }

    /// A client write at node `i`; `None` when the node is down or paused.
    pub fn write(&mut self, i: usize, write: Write) -> Option<WriteAck> {
        if !self.is_up(i) {
            return None;
        }
        let now = self.local_time(i);
        let node = self.nodes[i].node.as_mut()?;
        let ack = node.handle_write(now, write).ok()?;
        self.after(i);
        Some(ack)
    }

    pub fn node(&self, i: usize) -> Option<&Node<MemoryStore>> {
        self.nodes[i].node.as_ref()
    }

    pub fn id(&self, i: usize) -> &NodeId {
        &self.nodes[i].id
    }

    pub fn store(&self, i: usize) -> &MemoryStore {
        &self.nodes[i].store
    }

    pub fn digest(&self, i: usize) -> Option<Leaf> {
        self.node(i).map(|n| n.digest())
    }

    /// Runs events until virtual time `until`.
    pub fn run_until(&mut self, until: u64) {
        while let Some(Reverse((at, id))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            if let Some(event) = self.events.remove(&id) {
                self.handle(event);
            }
        }
        self.now = until;
    }

    /// Runs for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until);
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.queue.push(Reverse((self.now + delay, id)));
        self.events.insert(id, event);
    }

    /// The delay of one message from `from` to `to`: the link's own fixed extra delay plus a
    /// random draw from the latency range (so messages on one link can overtake each other).
    fn latency(&mut self, from: usize, to: usize) -> u64 {
        let (lo, hi) = self.config.latency_ms;
        let link = match self.config.link_spread_ms {
            0 => 0,
            spread => mix(self.config.seed ^ ((from as u64) << 32) ^ to as u64) % (spread + 1),
        };
        link + self.rng.gen_range(lo..=hi.max(lo))
    }

    /// Fails anti-entropy session `session` of node `to` once the request timeout has passed (no
    /// reply is coming).
    fn fail_sync(&mut self, to: usize, session: u64) {
        let timeout = self.config.sync_timeout_ms;
        self.schedule(
            timeout,
            Event::SyncReply {
                to,
                session,
                reply: None,
            },
        );
    }

    /// Whether a message from `from` to `to` is lost (partition or random loss).
    fn lost(&mut self, from: usize, to: usize) -> bool {
        self.stats.sent += 1;
        let lost = self.nodes[from].group != self.nodes[to].group
            || self.rng.gen_bool(self.config.loss.clamp(0.0, 1.0));
        if lost {
            self.stats.dropped += 1;
        }
        lost
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick(i) => {
                if self.nodes[i].node.is_none() {
                    return; // crashed: restart schedules a new tick
                }
                let jitter = self.rng.gen_range(0..=self.config.tick_ms / 5);
                self.schedule(self.config.tick_ms + jitter, Event::Tick(i));
                if self.nodes[i].paused {
                    return;
                }
                let now = self.local_time(i);
                if let Some(node) = self.nodes[i].node.as_mut() {
                    let _ = node.handle_tick(now);
                }
                self.after(i);
            }
            Event::Datagram {
                to,
                from_addr,
                bytes,
            } => {
                if !self.is_up(to) {
                    return;
                }
                self.stats.delivered += 1;
                let Ok(datagram) = wire::decode_datagram(&bytes) else {
                    panic!("the codec rejected a datagram it encoded");
                };
                let now = self.local_time(to);
                if let Some(node) = self.nodes[to].node.as_mut() {
                    let _ = node.handle_datagram(now, from_addr, datagram);
                }
                self.after(to);
            }
            Event::Frame { to, frame } => {
                if !self.is_up(to) {
                    return;
                }
                self.stats.delivered += 1;
                let now = self.local_time(to);
                if let Some(node) = self.nodes[to].node.as_mut() {
                    let _ = node.handle_frame(now, frame);
                }
                self.after(to);
            }
            Event::SyncRequest {
                to,
                from,
                session,
                message,
            } => {
                if !self.is_up(to) {
                    self.fail_sync(from, session);
                    return;
                }
                self.stats.delivered += 1;
                let from_id = self.nodes[from].id.clone();
                let now = self.local_time(to);
                let reply = self.nodes[to]
                    .node
                    .as_mut()
                    .and_then(|n| n.handle_sync_request(now, &from_id, message).ok())
                    .flatten();
                self.after(to);
                if self.lost(to, from) {
                    self.fail_sync(from, session);
                } else {
                    let delay = self.latency(to, from);
                    self.schedule(
                        delay,
                        Event::SyncReply {
                            to: from,
                            session,
                            reply,
                        },
                    );
                }
            }
            Event::SyncReply { to, session, reply } => {
                if self.nodes[to].node.is_none() {
                    return;
                }
                if self.nodes[to].paused {
                    // Delivered once it resumes: retry shortly.
                    self.schedule(self.config.tick_ms, Event::SyncReply { to, session, reply });
                    return;
                }
                let now = self.local_time(to);
                if let Some(node) = self.nodes[to].node.as_mut() {
                    let _ = node.handle_sync_reply(now, session, reply);
                }
                self.after(to);
            }
        }
    }

    /// Commits node `i`'s changes (memory stores are durable at once) and puts what it wants
    /// to send on the network.
    fn after(&mut self, i: usize) {
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        if node.has_uncommitted() {
            if let Ok(pending) = node.commit() {
                if pending.complete().is_ok() {
                    node.synced_through(node.commits());
                }
            }
        }
        let outbound = node.take_outbound();
        for message in outbound {
            self.send(i, message);
        }
    }

    fn send(&mut self, from: usize, message: Outbound) {
        let from_addr = self.nodes[from].addr;
        match message {
            Outbound::Datagram { to, datagram, .. } => {
                let Some(target) = self.index_of(to) else {
                    return;
                };
                if self.lost(from, target) {
                    return;
                }
                let bytes = wire::encode_datagram(&datagram);
                let copies = if self.rng.gen_bool(self.config.duplicate.clamp(0.0, 1.0)) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay = self.latency(from, target);
                    self.schedule(
                        delay,
                        Event::Datagram {
                            to: target,
                            from_addr,
                            bytes: bytes.clone(),
                        },
                    );
                }
            }
            Outbound::Frame { to, frame, .. } => {
                let Some(target) = self.index_of(to) else {
                    return;
                };
                if !self.lost(from, target) {
                    let delay = self.latency(from, target);
                    self.schedule(delay, Event::Frame { to: target, frame });
                }
            }
            Outbound::SyncRequest {
                session, to, frame, ..
            } => {
                let message = match frame.body {
                    wire::FrameBody::SyncRequest(message) => message,
                    _ => return,
                };
                match self.index_of(to) {
                    Some(target) if !self.lost(from, target) => {
                        let delay = self.latency(from, target);
                        self.schedule(
                            delay,
                            Event::SyncRequest {
                                to: target,
                                from,
                                session,
                                message,
                            },
                        );
                    }
                    _ => self.fail_sync(from, session),
                }
            }
            Outbound::SyncDone { .. } => {}
        }
    }

    /// The ids node `i` sees in each state.
    pub fn view(&self, i: usize) -> Vec<(NodeId, crate::membership::MemberState)> {
        self.node(i)
            .map(|n| n.members().into_iter().map(|m| (m.id, m.state)).collect())
            .unwrap_or_default()
    }

    /// Reads a store directly (what a client would read from node `i`).
    pub fn read(&self, i: usize, key: &crate::store::StoreKey) -> Option<crate::crdt::KeyState> {
        self.nodes[i].store.get(key).ok().flatten()
    }
}

/// A fixed pseudo-random function of `x` (SplitMix64's finalizer): per-link properties derived
/// from the seed without storing one per pair of nodes.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
