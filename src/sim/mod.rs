//! The deterministic simulator: many cores ([`Node`] over [`MemoryStore`]s) driven by a virtual
//! clock, a seeded random generator and a simulated network with per-link latency, loss,
//! duplication, reordering and partitions, crashes with restart from persisted state, pauses and
//! per-node clock skew and drift. The protocol code is the production code; only time, randomness,
//! the disks and the network are simulated, so a run is a pure function of its seed.
//!
//! Every datagram goes through the real codec (encode, then decode on delivery), as on a socket.
//!
//! With [`SimConfig::fsync_us`] the disks behave as in production: every node runs on
//! [`MemoryStore::with_crashes`], each event a core handles is one group whose sync completes
//! after a simulated fsync latency, and only then are the group's acknowledgements, anti-entropy
//! answers and messages released, in order (`disk.rs`, mirroring `src/runtime/release.rs`). A
//! crash loses what was not durable and everything not yet released; clients then learn the fate
//! of a write asynchronously ([`Sim::submit`], [`Sim::take_outcomes`]). Consistency levels go
//! through the core's waits as in production: a write that waits for other members
//! ([`Sim::submit_waiting`]) or a read that does ([`Sim::start_read`]) is answered once the core
//! reports its wait over, in the group of the event that ended it, after that group's sync (the
//! runtime's `Waiter`s). Injected disk faults
//! (failing syncs, a full disk) come from the memory store. A hostile participant
//! (`hostile.rs`) can join and lie. Time inside the simulator is counted in microseconds, so a
//! sync can take a fraction of a millisecond; the cores are given milliseconds.

pub mod broadcast;
mod disk;
pub mod figure;
pub mod hostile;
pub mod rounds;

use crate::clock::{NodeId, DEFAULT_MAX_CLOCK_SKEW_MS};
use crate::crdt::KeyState;
use crate::gossip::sync::SyncMessage;
use crate::membership::MembershipConfig;
use crate::node::{
    ClusterConfig, KeyChange, Node, Outbound, Precondition, Tally, TombstoneConfig, Wait,
    WaitOutcome, Write, WriteAck, WriteError,
};
use crate::store::{Leaf, MemoryStore, PendingSync, Store, StoreError, StoreKey};
use crate::wire::{self, Frame, SyncAnswer, SyncRequest};
use core::net::SocketAddr;
use disk::{Group, Queued, Release, Requester, Syncer};
use hostile::{Counter, Hostile, Lie};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// The wall-clock time (milliseconds since the Unix epoch) at which a simulation starts: a day
/// in 2023, so that clocks minutes behind real time stay well above zero.
pub const SIM_EPOCH_MS: u64 = 1_700_000_000_000;

/// Microseconds per millisecond.
const US: u64 = 1_000;

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
    /// Nodes that never start an anti-entropy exchange (they still answer them).
    pub passive: Vec<usize>,
    pub tombstones: TombstoneConfig,
    /// Membership timings of every node ([`MembershipConfig::for_sim`] by default).
    pub membership: MembershipConfig,
    /// Disks as in production (see the module doc): a sync takes a latency uniform in this
    /// range (microseconds), and what a group produced waits for it. `None` (the default): every
    /// write is durable at once and nothing waits.
    pub fsync_us: Option<(u64, u64)>,
    /// `max_clock_skew_ms` of every node's [`ClusterConfig`] (default 500).
    pub max_clock_skew_ms: u64,
    /// A broken driver, to show that the simulation tests catch one: a group's
    /// acknowledgements, answers and messages leave at once, before its sync completes (which
    /// still decides what survives a crash). Never set outside such a demonstration.
    pub release_before_sync: bool,
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
            passive: Vec::new(),
            // Short enough that simulated runs of a minute collect.
            tombstones: TombstoneConfig {
                min_age_ms: 2_000,
                ..TombstoneConfig::default()
            },
            membership: MembershipConfig::for_sim(),
            fsync_us: None,
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
            release_before_sync: false,
        }
    }
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    /// Messages a node sent to an address where no participant ever was (a reflected probe).
    pub to_strangers: u64,
    /// `FetchLeaves` requests dropped by a node that predates them ([`Sim::predate_fetch`]).
    pub fetch_refused: u64,
    /// Messages the nodes sent, by kind ([`MessageKind`]), lost ones included.
    pub by_kind: std::collections::BTreeMap<MessageKind, u64>,
}

/// What a message the simulator carries is, for [`SimStats::by_kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A datagram with a probe message (Ping, Ack, PingReq), rumors piggybacked or not.
    Probe,
    /// A datagram of rumors, membership updates or a pull summary, without a probe message.
    RumorDatagram,
    /// A frame of rumors too large for a datagram.
    RumorFrame,
    /// Any other frame (replication for `?w=`, reads for `?r=`, forget, read repair).
    OtherFrame,
    /// An anti-entropy request.
    SyncRequest,
    /// An anti-entropy answer.
    SyncAnswer,
}

impl MessageKind {
    fn of(message: &Outbound) -> Option<MessageKind> {
        Some(match message {
            Outbound::Datagram { datagram, .. } if datagram.swim.is_some() => MessageKind::Probe,
            Outbound::Datagram { .. } => MessageKind::RumorDatagram,
            Outbound::Frame { frame, .. } => match frame.body {
                wire::FrameBody::Rumors(_) => MessageKind::RumorFrame,
                _ => MessageKind::OtherFrame,
            },
            Outbound::SyncRequest { .. } => MessageKind::SyncRequest,
            Outbound::SyncDone { .. } | Outbound::ResolveSeed { .. } => return None,
        })
    }
}

/// What a client learns of a write it submitted ([`Sim::submit`]), once the node released the
/// answer, or once the node crashed before it could.
#[derive(Debug)]
pub enum WriteOutcome {
    /// Durable and acknowledged.
    Acked(WriteAck),
    /// A write that waited for other members ([`Sim::submit_waiting`]) answered once its wait
    /// ended: met or timed out (`ack.replicas`, always `Some`, tells which); durable on its
    /// node either way.
    Waited(Box<Waited>),
    /// Answered with an error: refused by the core, its group's sync failed, or (a write that
    /// waited) a failed sync undid it or failed the group that ended its wait.
    Failed(WriteError),
    /// The node crashed before the write's group was released: the client never heard back.
    Unknown,
}

/// The answer to a write that waited for other members.
#[derive(Debug)]
pub struct Waited {
    /// The acknowledgement, with `replicas: Some(tally)`.
    pub ack: WriteAck,
    /// Simulated time the answer was released (microseconds).
    pub at_us: u64,
    /// Per node, what its disk held of the write's key at that moment ([`Sim::durable_change`]).
    pub durable: Vec<Option<KeyChange>>,
}

/// What a client learns of a read it started ([`Sim::start_read`]).
#[derive(Debug)]
pub enum ReadOutcome {
    /// The node alone was enough: read from its store at once.
    Local(Option<KeyState>),
    /// The wait ended (met or timed out: `tally`) and the group that ended it was durable:
    /// `state` is what the node's store held then, what the client reads.
    Answered {
        tally: Tally,
        state: Option<KeyState>,
        /// Simulated time the answer was released (microseconds).
        at_us: u64,
    },
    /// The group that ended the wait failed to sync (what the read merged was undone): an
    /// error.
    Failed,
    /// The node crashed before answering: the client never heard back.
    Unknown,
}

/// Why the core did not apply a write (the client hears it once the group is released).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The node's clock is out of bounds.
    ClockSkew,
    /// The store failed.
    Store,
    /// The node's disk is below its free-space reserve.
    DiskFull,
    /// The core refused the state it was asked to write.
    NotApplied,
    /// A remove from a set the node never saw written.
    NoSuchSet,
}

/// A write handed to a node's core.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// Names its [`WriteOutcome`] in [`Sim::take_outcomes`].
    pub id: u64,
    /// What the core did with it at once (visible to readers of that node at once; not yet
    /// durable, and the client is not told before the group is released).
    pub applied: Result<WriteAck, Refused>,
}

/// One lie of the hostile participant delivered to a node, and whether the node counted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LieReport {
    pub lie: Lie,
    pub target: usize,
    /// Whether the target raised the counter expected ([`Lie::counted_as`]), or counted it as
    /// invalid (from a sender it did not know yet); for lies nothing can tell from the truth,
    /// whether it raised none.
    pub counted: bool,
    /// Simulated time of delivery (milliseconds).
    pub at_ms: u64,
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
    syncer: Syncer,
    /// Clients whose write or read waits for other members, by the request number the core
    /// gave it (in this life of the core).
    waiting: BTreeMap<u64, Waiter>,
    /// Per key, the last change the core recorded in a group made durable since the simulation
    /// started: what the node's disk holds ([`Sim::durable_change`]).
    durable: BTreeMap<StoreKey, KeyChange>,
}

/// A client waiting for its [`WaitOutcome`], as the runtime's `Waiter`.
enum Waiter {
    Write {
        id: u64,
        key: StoreKey,
        ack: WriteAck,
    },
    Read {
        id: u64,
        key: StoreKey,
    },
}

impl Waiter {
    /// What the client gets once its wait ended (as `src/runtime/mod.rs` has it).
    fn release(self, outcome: WaitOutcome) -> Option<Release> {
        match (self, outcome) {
            (Waiter::Write { id, key, .. }, WaitOutcome::Write { undone: true, .. }) => {
                let undone = StoreError::Io("the write's sync failed: it was undone".into());
                Some(Release::Waited {
                    id,
                    key,
                    result: Err(WriteError::Store(undone)),
                })
            }
            (Waiter::Write { id, key, mut ack }, WaitOutcome::Write { tally, .. }) => {
                ack.replicas = Some(tally);
                Some(Release::Waited {
                    id,
                    key,
                    result: Ok(ack),
                })
            }
            (Waiter::Read { id, key }, WaitOutcome::Read { tally, .. }) => Some(Release::Read {
                id,
                key,
                tally: Some(tally),
            }),
            _ => None,
        }
    }
}

/// The key a write changes.
fn key_of(write: &Write) -> StoreKey {
    match write {
        Write::KvPut { key, .. } | Write::KvDelete { key } => StoreKey::kv(key.as_str()),
        Write::SetEdit { key, .. } | Write::SetClear { key } => StoreKey::set(key.as_str()),
        Write::CounterAdd { key, .. } => StoreKey::counter(key.as_str()),
    }
}

enum Event {
    /// Node `.0`'s timer, for the life of the core started in epoch `.1`.
    Tick(usize, u64),
    Datagram {
        to: usize,
        from_addr: SocketAddr,
        bytes: Vec<u8>,
        lie: Option<Lie>,
    },
    Frame {
        to: usize,
        frame: Frame,
        lie: Option<Lie>,
    },
    SyncRequest {
        to: usize,
        from: Requester,
        from_id: NodeId,
        session: u64,
        message: SyncRequest,
        lie: Option<Lie>,
    },
    /// The answer to a request node `to` sent in epoch `epoch` of its core.
    SyncReply {
        to: usize,
        epoch: u64,
        session: u64,
        reply: Option<SyncAnswer>,
        lie: Option<Lie>,
    },
    /// The sync in progress at node `node` completes (if the node has not crashed since).
    SyncDone {
        node: usize,
        epoch: u64,
    },
    HostileTick {
        generation: u64,
    },
    HostileDatagram {
        bytes: Vec<u8>,
    },
    HostileFrame {
        frame: Frame,
    },
    HostileSyncRequest {
        from: usize,
        epoch: u64,
        session: u64,
    },
}

/// Where a message addressed to a cluster address goes.
enum Route {
    Node(usize),
    Hostile,
    /// A hostile participant that is gone: nobody answers.
    Gone,
    /// No participant ever had this address.
    Stranger,
}

/// A simulated cluster.
pub struct Sim {
    config: SimConfig,
    /// Virtual time in microseconds.
    now_us: u64,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: std::collections::HashMap<u64, Event>,
    next_event: u64,
    pub stats: SimStats,
    next_write: u64,
    outcomes: Vec<(u64, WriteOutcome)>,
    next_read: u64,
    read_outcomes: Vec<(u64, ReadOutcome)>,
    /// Nodes that rolled back since [`Sim::take_rollbacks`] was last called.
    rollbacks: Vec<usize>,
    hostile: Option<Hostile>,
    /// Bumped with every hostile participant, so that an old one's timer stops.
    hostile_generation: u64,
    gone: Vec<SocketAddr>,
    lies: Vec<LieReport>,
    /// Nodes that behave as a version without `FetchLeaves`: they drop the request undecoded.
    predate_fetch: BTreeSet<usize>,
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
            let store = if config.fsync_us.is_some() {
                MemoryStore::with_crashes()
            } else {
                MemoryStore::new()
            };
            nodes.push(SimNode {
                id: NodeId::new(format!("n{}", i + 1)).unwrap_or_else(|e| panic!("{e}")),
                addr: addr(i),
                store,
                node: None,
                skew_ms: skew,
                drift_ppm,
                paused: false,
                group: 0,
                syncer: Syncer::default(),
                waiting: BTreeMap::new(),
                durable: BTreeMap::new(),
            });
        }
        let mut sim = Sim {
            config,
            now_us: 0,
            rng,
            nodes,
            queue: BinaryHeap::new(),
            events: Default::default(),
            next_event: 0,
            stats: SimStats::default(),
            next_write: 0,
            outcomes: Vec::new(),
            next_read: 0,
            read_outcomes: Vec::new(),
            rollbacks: Vec::new(),
            hostile: None,
            hostile_generation: 0,
            gone: Vec::new(),
            lies: Vec::new(),
            predate_fetch: BTreeSet::new(),
        };
        for i in 0..sim.nodes.len() {
            sim.start(i);
        }
        sim
    }

    /// Simulated time in milliseconds.
    pub fn now(&self) -> u64 {
        self.now_us / US
    }

    /// Simulated time in microseconds.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Real wall-clock time now (what a correct clock reads).
    pub fn real_clock(&self) -> u64 {
        SIM_EPOCH_MS + self.now()
    }

    /// Node `i`'s clock: real time counted from [`SIM_EPOCH_MS`], off by its skew, and running
    /// fast or slow by its drift.
    fn local_time(&self, i: usize) -> u64 {
        let node = &self.nodes[i];
        let now = self.now() as i128;
        let drift = now * node.drift_ppm as i128 / 1_000_000;
        let real = i128::from(SIM_EPOCH_MS) + now;
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
        config.anti_entropy_interval_ms = if self.config.passive.contains(&i) {
            u64::MAX / 4
        } else {
            self.config.anti_entropy_interval_ms
        };
        config.tombstones = self.config.tombstones.clone();
        config.max_clock_skew_ms = self.config.max_clock_skew_ms;
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
            Ok(mut node) => {
                // What each group changed, to know what the disk holds once it is durable.
                node.record_changes();
                self.nodes[i].node = Some(node);
            }
            Err(e) => panic!("simulated node {i} cannot open its store: {e}"),
        }
        let now_us = self.now_us;
        self.nodes[i].syncer.restarted(now_us);
        let first = self.rng.gen_range(0..self.config.tick_ms.max(1));
        let epoch = self.nodes[i].syncer.epoch;
        self.schedule(first * US, Event::Tick(i, epoch));
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].node.is_some() && !self.nodes[i].paused
    }

    /// Stops node `i` abruptly. With [`SimConfig::fsync_us`], what was not durable is lost
    /// (its store now reads as a restart will find it), and so is everything it had not
    /// released: writes waiting for their sync, and writes and reads waiting for other members,
    /// end [`WriteOutcome::Unknown`] ([`ReadOutcome::Unknown`]), anti-entropy requests it was
    /// answering fail.
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].node.take().is_none() {
            return;
        }
        for waiter in std::mem::take(&mut self.nodes[i].waiting).into_values() {
            match waiter {
                Waiter::Write { id, .. } => self.outcomes.push((id, WriteOutcome::Unknown)),
                Waiter::Read { id, .. } => self.read_outcomes.push((id, ReadOutcome::Unknown)),
            }
        }
        for release in self.nodes[i].syncer.crash() {
            match release {
                Release::Ack { id, .. } | Release::Waited { id, .. } => {
                    self.outcomes.push((id, WriteOutcome::Unknown))
                }
                Release::Read { id, .. } => self.read_outcomes.push((id, ReadOutcome::Unknown)),
                Release::Answer {
                    to: Requester::Node { index, epoch },
                    session,
                    ..
                } => self.fail_sync(index, epoch, session),
                Release::Answer { .. } | Release::Send(_) => {}
            }
        }
        self.nodes[i].store = self.nodes[i].store.reopen();
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

    /// Node `i`'s skew (milliseconds ahead of real time; drift not included).
    pub fn skew_of(&self, i: usize) -> i64 {
        self.nodes[i].skew_ms
    }

    /// Node `i`'s wall clock now (what its core is given as the time).
    pub fn clock_of(&self, i: usize) -> u64 {
        self.local_time(i)
    }

    /// Freezes node `i` (as SIGSTOP): it neither receives nor fires timers, and its sync does
    /// not complete, until resumed.
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.nodes[i].paused = false;
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// Node `i` behaves as a version without `FetchLeaves`: it drops that request, undecoded, and
    /// the exchange that sent it fails.
    pub fn predate_fetch(&mut self, i: usize) {
        self.predate_fetch.insert(i);
    }

    /// From now on node `i`'s syncs fail (`true`) or succeed again.
    pub fn fail_syncs(&mut self, i: usize, fail: bool) {
        self.nodes[i].store.fail_syncs(fail);
    }

    /// From now on node `i`'s disk is full (`true`: every store write fails) or has room again.
    pub fn set_disk_full(&mut self, i: usize, full: bool) {
        self.nodes[i].store.set_full(full);
    }

    /// Everything node `i` produced up to this time (microseconds) is durable: a crash now
    /// keeps at least what its store showed then.
    pub fn durable_through_us(&self, i: usize) -> u64 {
        self.nodes[i].syncer.durable_through_us
    }

    /// Splits the nodes into groups that cannot talk to each other (`group[i]` per node). The
    /// hostile participant, if any, reaches every group.
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

    /// The partition group of node `i`.
    pub fn group_of(&self, i: usize) -> u32 {
        self.nodes[i].group
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
        self.after(i, Vec::new());
        removed
    }

    /// Hands a client write to node `i`'s core; `None` when the node is down or paused. Its
    /// outcome comes later through [`Sim::take_outcomes`] (at once without
    /// [`SimConfig::fsync_us`]).
    pub fn submit(&mut self, i: usize, write: Write) -> Option<Submitted> {
        self.submit_inner(i, write, None)
    }

    /// [`Sim::submit`] with a consistency level (`?w=`): a write the core applied and that waits
    /// for other members ([`WriteAck::awaiting`]) is not answered with its group; its outcome
    /// ([`WriteOutcome::Waited`], or [`WriteOutcome::Failed`] when undone) comes once the core
    /// reports the wait over, released after the sync of the group that ended it, as the
    /// runtime does. A write this node alone was enough for is answered as usual.
    pub fn submit_waiting(&mut self, i: usize, write: Write, wait: Wait) -> Option<Submitted> {
        self.submit_inner(i, write, Some(wait))
    }

    fn submit_inner(&mut self, i: usize, write: Write, wait: Option<Wait>) -> Option<Submitted> {
        if !self.is_up(i) {
            return None;
        }
        let now = self.local_time(i);
        let key = key_of(&write);
        let node = self.nodes[i].node.as_mut()?;
        let result = node.handle_write_waiting(now, write, &Precondition::default(), wait);
        let applied = match &result {
            Ok(ack) => Ok(ack.clone()),
            Err(WriteError::ClockSkew(_)) => Err(Refused::ClockSkew),
            Err(WriteError::Store(_)) => Err(Refused::Store),
            Err(WriteError::DiskFull { .. }) => Err(Refused::DiskFull),
            Err(WriteError::TooLarge { .. })
            | Err(WriteError::NotApplied(_))
            | Err(WriteError::PreconditionFailed { .. })
            | Err(WriteError::CounterOverflow(_)) => Err(Refused::NotApplied),
            Err(WriteError::NoSuchSet(_)) => Err(Refused::NoSuchSet),
        };
        let id = self.next_write;
        self.next_write += 1;
        let releases = match result {
            Ok(ack) if ack.awaiting.is_some() => {
                let request = ack.awaiting.unwrap_or_default();
                let waiter = Waiter::Write { id, key, ack };
                self.nodes[i].waiting.insert(request, waiter);
                Vec::new()
            }
            result => vec![Release::Ack { id, result }],
        };
        self.after_event(i, releases, true);
        Some(Submitted { id, applied })
    }

    /// A client reads `key` at node `i` with a consistency level (`?r=`); `None` when the node
    /// is down or paused. Returns the read's id; its [`ReadOutcome`] comes through
    /// [`Sim::take_read_outcomes`]: at once when this node alone is enough
    /// ([`ReadOutcome::Local`]), else once the core reports the wait over, after the sync of the
    /// group that ended it (the merge it read is durable then), as the runtime does.
    pub fn start_read(&mut self, i: usize, key: StoreKey, wait: Wait) -> Option<u64> {
        if !self.is_up(i) {
            return None;
        }
        let now = self.local_time(i);
        let id = self.next_read;
        self.next_read += 1;
        let node = self.nodes[i].node.as_mut()?;
        match node.start_read(now, key.clone(), wait) {
            Some(request) => {
                self.nodes[i]
                    .waiting
                    .insert(request, Waiter::Read { id, key });
            }
            None => {
                let state = self.read(i, &key);
                self.read_outcomes.push((id, ReadOutcome::Local(state)));
            }
        }
        self.after(i, Vec::new());
        Some(id)
    }

    /// The outcomes of reads started with [`Sim::start_read`] learned since the last call, in
    /// the order learned.
    pub fn take_read_outcomes(&mut self) -> Vec<(u64, ReadOutcome)> {
        std::mem::take(&mut self.read_outcomes)
    }

    /// What node `i`'s disk holds of `key`, as the last change of it the core recorded in a
    /// group made durable: for a kv key, the register (its `timestamp` and `node`) or, when a
    /// value was dropped on a peer's word, a deletion stamped with the node's clock then. A
    /// record collected since (a tombstone, an expired value) still shows. `None`: no change of
    /// the key was ever durable there. Exact under [`SimConfig::fsync_us`]; without it, what the
    /// store holds.
    pub fn durable_change(&self, i: usize, key: &StoreKey) -> Option<&KeyChange> {
        self.nodes[i].durable.get(key)
    }

    /// Runs until `found` takes what it looks for (at most a minute of simulated time).
    fn run_until_found<T>(&mut self, mut found: impl FnMut(&mut Sim) -> Option<T>) -> Option<T> {
        let deadline = self.now() + 60_000;
        loop {
            if let Some(thing) = found(self) {
                return Some(thing);
            }
            if self.now() >= deadline {
                return None;
            }
            self.run_for(1);
        }
    }

    /// Runs until the outcome of write `id` is known (at most a minute of simulated time).
    fn await_outcome(&mut self, id: u64) -> Option<WriteOutcome> {
        self.run_until_found(|sim| take_by_id(&mut sim.outcomes, id))
    }

    /// A client write at node `i` with a consistency level, waiting for its answer:
    /// [`WriteOutcome::Waited`] or [`WriteOutcome::Acked`] (this node alone was enough). `None`
    /// when the node is down or paused, or no answer came within a simulated minute.
    pub fn write_waiting(&mut self, i: usize, write: Write, wait: Wait) -> Option<WriteOutcome> {
        let submitted = self.submit_waiting(i, write, wait)?;
        self.await_outcome(submitted.id)
    }

    /// A client read at node `i` with a consistency level, waiting for its answer; `None` when
    /// the node is down or paused, or no answer came within a simulated minute.
    pub fn read_waiting(&mut self, i: usize, key: StoreKey, wait: Wait) -> Option<ReadOutcome> {
        let id = self.start_read(i, key, wait)?;
        self.run_until_found(|sim| take_by_id(&mut sim.read_outcomes, id))
    }

    /// The outcomes of submitted writes learned since the last call, in the order learned.
    pub fn take_outcomes(&mut self) -> Vec<(u64, WriteOutcome)> {
        std::mem::take(&mut self.outcomes)
    }

    /// A client write at node `i`, waiting for its answer (with [`SimConfig::fsync_us`] the
    /// simulation runs until then); `None` when the node is down or paused, refused the write,
    /// failed it or crashed first.
    pub fn write(&mut self, i: usize, write: Write) -> Option<WriteAck> {
        let submitted = self.submit(i, write)?;
        match self.await_outcome(submitted.id)? {
            WriteOutcome::Acked(ack) => Some(ack),
            WriteOutcome::Waited(waited) => Some(waited.ack),
            WriteOutcome::Failed(_) | WriteOutcome::Unknown => None,
        }
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

    /// A hostile participant `id` joins through a random node and starts lying (see
    /// `hostile.rs`); `insider` adds the lies stamped within the skew bound. A previous one is
    /// silenced first.
    pub fn add_hostile(&mut self, id: NodeId, insider: bool) {
        if let Some(old) = self.hostile.take() {
            self.gone.push(old.addr());
        }
        self.hostile_generation += 1;
        let generation = self.hostile_generation;
        let addr = SocketAddr::from(([10, 0, 200, (generation % 250) as u8 + 1], 7000));
        let seed = self.rng.gen();
        let min_age_ms = self.config.tombstones.min_age_ms;
        let mut hostile = Hostile::new(id, addr, seed, insider, min_age_ms);
        let join = hostile.join();
        self.hostile = Some(hostile);
        let target = self.rng.gen_range(0..self.nodes.len());
        self.hostile_send(target, hostile::Message::Datagram(join), None);
        let first = self.rng.gen_range(50..300);
        self.schedule(first * US, Event::HostileTick { generation });
    }

    /// The hostile participant stops sending and answering.
    pub fn silence_hostile(&mut self) {
        if let Some(hostile) = &mut self.hostile {
            hostile.silence();
        }
    }

    pub fn hostile(&self) -> Option<&Hostile> {
        self.hostile.as_ref()
    }

    /// The lies delivered since the last call.
    pub fn take_lie_reports(&mut self) -> Vec<LieReport> {
        std::mem::take(&mut self.lies)
    }

    /// Runs events until virtual time `until` (milliseconds).
    pub fn run_until(&mut self, until: u64) {
        let us = (until * US).saturating_sub(self.now_us);
        self.run_for_us(us);
    }

    /// Runs until `done` holds, checking it at once and then every `step_ms`: the virtual
    /// milliseconds that took, or `None` once more than `limit_ms` passed first.
    pub fn run_until_holds(
        &mut self,
        limit_ms: u64,
        step_ms: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<u64> {
        let started = self.now();
        while self.now() - started <= limit_ms {
            if done(self) {
                return Some(self.now() - started);
            }
            self.run_for(step_ms);
        }
        None
    }

    /// Runs for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now() + ms;
        self.run_until(until);
    }

    /// Runs for `us` more microseconds (to stop inside a sync, say).
    pub fn run_for_us(&mut self, us: u64) {
        let until_us = self.now_us + us;
        while let Some(Reverse((at, id))) = self.queue.peek().copied() {
            if at > until_us {
                break;
            }
            self.queue.pop();
            self.now_us = at;
            if let Some(event) = self.events.remove(&id) {
                self.handle(event);
            }
        }
        self.now_us = until_us;
    }

    /// Schedules `event` in `delay_us` microseconds.
    fn schedule(&mut self, delay_us: u64, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.queue.push(Reverse((self.now_us + delay_us, id)));
        self.events.insert(id, event);
    }

    /// The delay of one message from `from` to `to` (microseconds): the link's own fixed extra
    /// delay plus a random draw from the latency range (so messages on one link can overtake
    /// each other).
    fn latency(&mut self, from: usize, to: usize) -> u64 {
        let (lo, hi) = self.config.latency_ms;
        let link = match self.config.link_spread_ms {
            0 => 0,
            spread => mix(self.config.seed ^ ((from as u64) << 32) ^ to as u64) % (spread + 1),
        };
        (link + self.rng.gen_range(lo..=hi.max(lo))) * US
    }

    /// Fails anti-entropy session `session` of node `to` (in epoch `epoch`) once the request
    /// timeout has passed (no reply is coming).
    /// Fails anti-entropy session `session` of node `i`'s current core at once.
    fn fail_sync_now(&mut self, i: usize, session: u64) {
        let epoch = self.nodes[i].syncer.epoch;
        self.schedule(
            0,
            Event::SyncReply {
                to: i,
                epoch,
                session,
                reply: None,
                lie: None,
            },
        );
    }

    fn fail_sync(&mut self, to: usize, epoch: u64, session: u64) {
        let timeout = self.config.sync_timeout_ms * US;
        self.schedule(
            timeout,
            Event::SyncReply {
                to,
                epoch,
                session,
                reply: None,
                lie: None,
            },
        );
    }

    /// Whether a message from `from` to `to` is lost (partition or random loss).
    fn lost(&mut self, from: usize, to: usize) -> bool {
        let cut = self.nodes[from].group != self.nodes[to].group;
        self.lost_unless(cut)
    }

    /// Whether a message on a link that `cut` or not is lost (random loss).
    fn lost_unless(&mut self, cut: bool) -> bool {
        self.stats.sent += 1;
        let lost = cut || self.rng.gen_bool(self.config.loss.clamp(0.0, 1.0));
        if lost {
            self.stats.dropped += 1;
        }
        lost
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    fn route(&self, addr: SocketAddr) -> Route {
        if let Some(i) = self.index_of(addr) {
            return Route::Node(i);
        }
        match &self.hostile {
            Some(h) if h.addr() == addr => Route::Hostile,
            _ if self.gone.contains(&addr) => Route::Gone,
            _ => Route::Stranger,
        }
    }

    /// The drop counters of node `i`: clock skew, wrong kind, invalid.
    fn drops(&self, i: usize) -> Option<(u64, u64, u64)> {
        let stats = self.nodes[i].node.as_ref()?.cluster_stats();
        Some((
            stats.dropped_clock_skew,
            stats.dropped_wrong_kind,
            stats.dropped_invalid,
        ))
    }

    /// Records whether node `i` counted `lie`, from its counters `before` handling it.
    fn note_lie(&mut self, i: usize, lie: Option<Lie>, before: Option<(u64, u64, u64)>) {
        let (Some(lie), Some(before), Some(after)) = (lie, before, self.drops(i)) else {
            return;
        };
        let raised = |c: Counter| match c {
            Counter::ClockSkew => after.0 > before.0,
            Counter::WrongKind => after.1 > before.1,
            Counter::Invalid => after.2 > before.2,
        };
        // A target that does not know the sender yet counts anything from it as invalid.
        let counted = match lie.counted_as() {
            Some(counter) => raised(counter) || raised(Counter::Invalid),
            None => after == before,
        };
        let at_ms = self.now();
        self.lies.push(LieReport {
            lie,
            target: i,
            counted,
            at_ms,
        });
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick(i, epoch) => {
                if self.nodes[i].node.is_none() || self.nodes[i].syncer.epoch != epoch {
                    return; // crashed: restart schedules a new tick
                }
                let jitter = self.rng.gen_range(0..=self.config.tick_ms / 5);
                self.schedule((self.config.tick_ms + jitter) * US, Event::Tick(i, epoch));
                if self.nodes[i].paused {
                    return;
                }
                let now = self.local_time(i);
                if let Some(node) = self.nodes[i].node.as_mut() {
                    let _ = node.handle_tick(now);
                }
                self.after(i, Vec::new());
            }
            Event::Datagram {
                to,
                from_addr,
                bytes,
                lie,
            } => {
                if !self.is_up(to) {
                    return;
                }
                self.stats.delivered += 1;
                let Ok(datagram) = wire::decode_datagram(&bytes) else {
                    panic!("the codec rejected a datagram it encoded");
                };
                let before = lie.and_then(|_| self.drops(to));
                let now = self.local_time(to);
                if let Some(node) = self.nodes[to].node.as_mut() {
                    let _ = node.handle_datagram(now, from_addr, datagram);
                }
                self.note_lie(to, lie, before);
                self.after(to, Vec::new());
            }
            Event::Frame { to, frame, lie } => {
                if !self.is_up(to) {
                    return;
                }
                self.stats.delivered += 1;
                let before = lie.and_then(|_| self.drops(to));
                let now = self.local_time(to);
                if let Some(node) = self.nodes[to].node.as_mut() {
                    let _ = node.handle_frame(now, frame);
                }
                self.note_lie(to, lie, before);
                self.after(to, Vec::new());
            }
            Event::SyncRequest {
                to,
                from,
                from_id,
                session,
                message,
                lie,
            } => {
                if !self.is_up(to) {
                    if let Requester::Node { index, epoch } = from {
                        self.fail_sync(index, epoch, session);
                    }
                    return;
                }
                self.stats.delivered += 1;
                let before = lie.and_then(|_| self.drops(to));
                let now = self.local_time(to);
                let answer = self.nodes[to]
                    .node
                    .as_mut()
                    .and_then(|n| n.handle_sync_request(now, &from_id, message).ok())
                    .flatten();
                self.note_lie(to, lie, before);
                let release = Release::Answer {
                    to: from,
                    to_id: from_id,
                    session,
                    answer,
                };
                self.after(to, vec![release]);
            }
            Event::SyncReply {
                to,
                epoch,
                session,
                reply,
                lie,
            } => {
                if self.nodes[to].node.is_none() || self.nodes[to].syncer.epoch != epoch {
                    return;
                }
                if self.nodes[to].paused {
                    // Delivered once it resumes: retry shortly.
                    let retry = Event::SyncReply {
                        to,
                        epoch,
                        session,
                        reply,
                        lie,
                    };
                    self.schedule(self.config.tick_ms * US, retry);
                    return;
                }
                let before = lie.and_then(|_| self.drops(to));
                let now = self.local_time(to);
                if let Some(node) = self.nodes[to].node.as_mut() {
                    let _ = node.handle_sync_reply(now, session, reply);
                }
                self.note_lie(to, lie, before);
                self.after(to, Vec::new());
            }
            Event::SyncDone { node: i, epoch } => {
                if self.nodes[i].syncer.epoch != epoch || self.nodes[i].node.is_none() {
                    return;
                }
                if self.nodes[i].paused {
                    // A stopped process's sync thread is stopped too.
                    self.schedule(self.config.tick_ms * US, Event::SyncDone { node: i, epoch });
                    return;
                }
                let done = self.nodes[i].syncer.complete();
                self.released(i, done.groups);
                if let Some(failure) = done.failure {
                    self.failed_groups(i, done.failed, &failure);
                }
                self.released(i, done.then);
                if done.sync_again {
                    self.schedule_sync(i);
                }
            }
            Event::HostileTick { generation } => self.hostile_tick(generation),
            Event::HostileDatagram { bytes } => {
                let Ok(datagram) = wire::decode_datagram(&bytes) else {
                    panic!("the codec rejected a datagram it encoded");
                };
                let from = datagram.from.gossip_addr;
                let now = self.real_clock();
                let Some(hostile) = self.hostile.as_mut() else {
                    return;
                };
                if let Some(reply) = hostile.handle_datagram(now, datagram) {
                    if let Route::Node(to) = self.route(from) {
                        self.hostile_send(to, hostile::Message::Datagram(reply), None);
                    }
                }
            }
            Event::HostileFrame { frame } => {
                if let Some(hostile) = self.hostile.as_mut() {
                    hostile.handle_frame(frame);
                }
            }
            Event::HostileSyncRequest {
                from,
                epoch,
                session,
            } => {
                let now = self.real_clock();
                let Some(hostile) = self.hostile.as_mut() else {
                    return;
                };
                if hostile.is_silent() {
                    self.fail_sync(from, epoch, session);
                    return;
                }
                let (reply, lie) = hostile.answer(now);
                if self.lost_unless(false) {
                    self.fail_sync(from, epoch, session);
                    return;
                }
                let delay = self.latency(from, from);
                self.schedule(
                    delay,
                    Event::SyncReply {
                        to: from,
                        epoch,
                        session,
                        reply,
                        lie,
                    },
                );
            }
        }
    }

    /// Schedules the completion of node `i`'s sync after a simulated fsync latency.
    fn schedule_sync(&mut self, i: usize) {
        let (lo, hi) = self.config.fsync_us.unwrap_or((0, 0));
        let latency = self.rng.gen_range(lo..=hi.max(lo));
        let epoch = self.nodes[i].syncer.epoch;
        self.schedule(latency, Event::SyncDone { node: i, epoch });
    }

    /// Ends node `i`'s event: commits its changes, and queues what it produced (`releases`,
    /// the answers of the waits that ended, then its messages) behind the commit's sync, as
    /// the runtime does.
    fn after(&mut self, i: usize, releases: Vec<Release>) {
        self.after_event(i, releases, false);
    }

    /// [`Sim::after`]; `writes`: the event was a client write (its group commits).
    fn after_event(&mut self, i: usize, mut releases: Vec<Release>, writes: bool) {
        let at_us = self.now_us;
        let sim_node = &mut self.nodes[i];
        let Some(node) = sim_node.node.as_mut() else {
            return;
        };
        let writes = writes || releases.iter().any(|r| matches!(r, Release::Ack { .. }));
        releases.extend(ended_waits(node, &mut sim_node.waiting));
        releases.extend(node.take_outbound().into_iter().map(Release::Send));
        let changes = node.take_changes();
        let pending = if writes || node.has_uncommitted() {
            node.commit()
        } else {
            Ok(PendingSync::Done)
        };
        let commit = node.commits();
        // A group whose commit failed fails at the sync thread, in order, like a failed sync.
        let (pending, failed) = match pending {
            Ok(pending) => (pending, None),
            Err(e) => (PendingSync::Done, Some(e)),
        };
        let mut group = Group {
            commit,
            failed,
            pending,
            releases,
            changes,
            at_us,
        };
        if self.config.release_before_sync {
            let early = std::mem::take(&mut group.releases);
            self.release(i, early, None);
        }
        match self.nodes[i].syncer.queue(group) {
            Queued::Release(group) => self.released(i, vec![group]),
            Queued::Fail(mut group) => {
                let failure = group
                    .failed
                    .take()
                    .unwrap_or(crate::store::StoreError::Io("the commit failed".into()));
                self.failed_groups(i, vec![group], &failure);
            }
            Queued::StartSync => self.schedule_sync(i),
            Queued::Waiting => {}
        }
    }

    /// Releases groups node `i` made durable, and tells its core they are.
    fn released(&mut self, i: usize, groups: Vec<Group>) {
        let Some(last) = groups.last().map(|g| g.commit) else {
            return;
        };
        if let Some(node) = self.nodes[i].node.as_mut() {
            node.synced_through(last);
        }
        for group in groups {
            let durable = &mut self.nodes[i].durable;
            for change in group.changes {
                // An expiry announced is no change of the record (a register's change carries
                // its own timestamp, below its expiry).
                if change.expires != Some(change.timestamp) {
                    durable.insert(change.key.clone(), change);
                }
            }
            self.release(i, group.releases, None);
        }
        self.answer_ended_waits(i);
    }

    /// Answers the waits node `i`'s core ended outside an event it handled (on learning that a
    /// sync completed, or rolling back after one failed), in a group of their own, as the
    /// runtime answers them in the round that learns of the sync.
    fn answer_ended_waits(&mut self, i: usize) {
        let sim_node = &mut self.nodes[i];
        let Some(node) = sim_node.node.as_mut() else {
            return;
        };
        let releases = ended_waits(node, &mut sim_node.waiting);
        if !releases.is_empty() {
            self.after(i, releases);
        }
    }

    /// Fails groups of node `i` after a failed sync or commit (errors, refusals, nothing sent)
    /// and has its core roll back everything not known to be durable, as the runtime does.
    fn failed_groups(&mut self, i: usize, groups: Vec<Group>, failure: &crate::store::StoreError) {
        for group in groups {
            self.release(i, group.releases, Some(failure));
        }
        if let Some(node) = self.nodes[i].node.as_mut() {
            // The core drops what it produced on the undone writes itself.
            let _ = node.rollback();
            self.rollbacks.push(i);
            self.answer_ended_waits(i);
        }
    }

    /// The nodes that rolled back (after a failed sync) since the last call, in order: each now
    /// holds what it held at its last durable sync.
    pub fn take_rollbacks(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.rollbacks)
    }

    /// Lets what node `i` produced go: acknowledgements to clients, answers and messages onto
    /// the network; after a failed sync, errors, refusals and nothing.
    fn release(
        &mut self,
        i: usize,
        releases: Vec<Release>,
        failure: Option<&crate::store::StoreError>,
    ) {
        for release in releases {
            if let (Some(_), Release::Send(Outbound::SyncRequest { session, .. })) =
                (failure, &release)
            {
                // An exchange whose request never leaves fails at once, as the runtime has it.
                self.fail_sync_now(i, *session);
                continue;
            }
            let release = match failure {
                Some(e) => match release.failed(e) {
                    Some(r) => r,
                    None => continue,
                },
                None => release,
            };
            match release {
                Release::Ack { id, result } => {
                    let outcome = match result {
                        Ok(ack) => WriteOutcome::Acked(ack),
                        Err(e) => WriteOutcome::Failed(e),
                    };
                    self.outcomes.push((id, outcome));
                }
                Release::Waited { id, key, result } => {
                    let outcome = match result {
                        Ok(ack) => WriteOutcome::Waited(Box::new(Waited {
                            ack,
                            at_us: self.now_us,
                            durable: (0..self.nodes.len())
                                .map(|j| self.durable_change(j, &key).cloned())
                                .collect(),
                        })),
                        Err(e) => WriteOutcome::Failed(e),
                    };
                    self.outcomes.push((id, outcome));
                }
                Release::Read { id, key, tally } => {
                    let outcome = match tally {
                        Some(tally) => ReadOutcome::Answered {
                            tally,
                            state: self.read(i, &key),
                            at_us: self.now_us,
                        },
                        None => ReadOutcome::Failed,
                    };
                    self.read_outcomes.push((id, outcome));
                }
                Release::Answer {
                    to: Requester::Node { index: j, epoch },
                    session,
                    answer,
                    ..
                } => {
                    *self
                        .stats
                        .by_kind
                        .entry(MessageKind::SyncAnswer)
                        .or_default() += 1;
                    if self.lost(i, j) {
                        self.fail_sync(j, epoch, session);
                    } else {
                        let delay = self.latency(i, j);
                        let reply = Event::SyncReply {
                            to: j,
                            epoch,
                            session,
                            reply: answer,
                            lie: None,
                        };
                        self.schedule(delay, reply);
                    }
                }
                // The hostile participant ignores answers.
                Release::Answer { .. } => {}
                Release::Send(message) => self.send(i, message),
            }
        }
    }

    fn send(&mut self, from: usize, message: Outbound) {
        if let Some(kind) = MessageKind::of(&message) {
            *self.stats.by_kind.entry(kind).or_default() += 1;
        }
        let from_addr = self.nodes[from].addr;
        let (to, frame_or_datagram) = match message {
            Outbound::Datagram { to, datagram, .. } => (to, Ok(datagram)),
            Outbound::Frame { to, frame, .. } => (to, Err(frame)),
            Outbound::SyncRequest {
                session, to, frame, ..
            } => {
                let message = match frame.body {
                    wire::FrameBody::SyncRequest(message) => message,
                    _ => return,
                };
                let epoch = self.nodes[from].syncer.epoch;
                match self.route(to) {
                    Route::Node(target)
                        if self.predate_fetch.contains(&target)
                            && matches!(message.message, SyncMessage::FetchLeaves { .. }) =>
                    {
                        self.stats.fetch_refused += 1;
                        self.fail_sync(from, epoch, session);
                    }
                    Route::Node(target) if !self.lost(from, target) => {
                        let delay = self.latency(from, target);
                        let from_id = self.nodes[from].id.clone();
                        self.schedule(
                            delay,
                            Event::SyncRequest {
                                to: target,
                                from: Requester::Node { index: from, epoch },
                                from_id,
                                session,
                                message,
                                lie: None,
                            },
                        );
                    }
                    Route::Hostile if !self.lost_unless(false) => {
                        let delay = self.latency(from, from);
                        let event = Event::HostileSyncRequest {
                            from,
                            epoch,
                            session,
                        };
                        self.schedule(delay, event);
                    }
                    Route::Stranger => {
                        self.stats.to_strangers += 1;
                        self.fail_sync(from, epoch, session);
                    }
                    _ => self.fail_sync(from, epoch, session),
                }
                return;
            }
            // The simulated nodes are given addresses, never names.
            Outbound::SyncDone { .. } | Outbound::ResolveSeed { .. } => return,
        };
        match self.route(to) {
            Route::Node(target) => {
                if self.lost(from, target) {
                    return;
                }
                match frame_or_datagram {
                    Ok(datagram) => {
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
                                    lie: None,
                                },
                            );
                        }
                    }
                    Err(frame) => {
                        let delay = self.latency(from, target);
                        self.schedule(
                            delay,
                            Event::Frame {
                                to: target,
                                frame,
                                lie: None,
                            },
                        );
                    }
                }
            }
            Route::Hostile => {
                if self.lost_unless(false) {
                    return;
                }
                let delay = self.latency(from, from);
                let event = match frame_or_datagram {
                    Ok(datagram) => Event::HostileDatagram {
                        bytes: wire::encode_datagram(&datagram),
                    },
                    Err(frame) => Event::HostileFrame { frame },
                };
                self.schedule(delay, event);
            }
            Route::Gone => {
                self.lost_unless(true);
            }
            Route::Stranger => self.stats.to_strangers += 1,
        }
    }

    /// The hostile participant's timer: one lie to a random node, and now and then a Ping to
    /// stay known.
    fn hostile_tick(&mut self, generation: u64) {
        if generation != self.hostile_generation {
            return;
        }
        let target = self.rng.gen_range(0..self.nodes.len());
        let now = self.real_clock();
        let target_clock = self.local_time(target);
        let target_id = self.nodes[target].id.clone();
        let Some(hostile) = self.hostile.as_mut() else {
            return;
        };
        if hostile.is_silent() {
            return;
        }
        let join = self.rng.gen_bool(0.1).then(|| hostile.join());
        let lie = hostile.lie(now, &target_id, target_clock);
        if let Some(join) = join {
            let to = self.rng.gen_range(0..self.nodes.len());
            self.hostile_send(to, hostile::Message::Datagram(join), None);
        }
        if let Some((lie, message)) = lie {
            self.hostile_send(target, message, Some(lie));
        }
        let next = self.rng.gen_range(100..400);
        self.schedule(next * US, Event::HostileTick { generation });
    }

    /// Puts a message of the hostile participant to node `to` on the network.
    fn hostile_send(&mut self, to: usize, message: hostile::Message, lie: Option<Lie>) {
        let Some(from_addr) = self.hostile.as_ref().map(|h| h.addr()) else {
            return;
        };
        if self.lost_unless(false) {
            return;
        }
        let delay = self.latency(to, to);
        let event = match message {
            hostile::Message::Datagram(datagram) => Event::Datagram {
                to,
                from_addr,
                bytes: wire::encode_datagram(&datagram),
                lie,
            },
            hostile::Message::Frame(frame) => Event::Frame { to, frame, lie },
            hostile::Message::SyncRequest { from, request } => Event::SyncRequest {
                to,
                from: Requester::Hostile,
                from_id: from,
                session: 0,
                message: request,
                lie,
            },
        };
        self.schedule(delay, event);
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
/// The answers of the waits `node` ended since last asked, to the clients in `waiting`.
fn ended_waits(node: &mut Node<MemoryStore>, waiting: &mut BTreeMap<u64, Waiter>) -> Vec<Release> {
    node.take_wait_outcomes()
        .into_iter()
        .filter_map(|outcome| waiting.remove(&outcome.request())?.release(outcome))
        .collect()
}

/// Takes the entry of `id` out of `list`, if there.
fn take_by_id<T>(list: &mut Vec<(u64, T)>, id: u64) -> Option<T> {
    let at = list.iter().position(|(entry, _)| *entry == id)?;
    Some(list.remove(at).1)
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
