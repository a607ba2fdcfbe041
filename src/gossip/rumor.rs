//! Rumor mongering of deltas (Demers et al., 1987): every local write becomes a [`Rumor`] tagged
//! with its origin and a per-origin sequence number. A new rumor is pushed at once to `fanout`
//! random peers, then piggybacked on protocol traffic for a bounded number of transmissions
//! (proportional to log n, the counter-based stopping rule). A receiver merges a rumor that is new
//! to it and forwards it the same way.
//!
//! Each queued rumor remembers which peers are known to hold it (its origin, whoever sent it
//! here, every peer it was pushed or piggybacked to, every peer that sent it again): pushes and
//! piggybacks skip them, and once every peer up holds it nothing more is sent. A rumor that came
//! straight from its origin when the origin's fanout covers every member (direct mail: three
//! nodes with the default fanout) is not sent on at all. A rumor with nothing left to send stays
//! queued for [`PULL_WINDOW_MS`] to answer pulls, which is how a peer that lost a push gets it.
//!
//! "Seen" is tracked per origin as the highest contiguous sequence number plus a small bounded
//! set of sequence numbers above it, so memory grows with the number of members, never with the
//! number of writes. A gap that never fills is given up on after [`SEEN_WINDOW`] newer rumors from
//! the same origin: anti-entropy repairs whatever rumors missed.
//!
//! Owns no sockets and no clock; it never merges state itself (the node does).

use crate::clock::{NodeId, ReplicaId};
use crate::crdt::KeyState;
use crate::store::StoreKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How many sequence numbers above the contiguous mark are remembered per origin.
pub const SEEN_WINDOW: usize = 1024;
/// Most rumors kept for retransmission. Under a write rate higher than piggybacking can carry,
/// the oldest are dropped first (they were already pushed to `fanout` peers, and anti-entropy
/// repairs whatever they did not reach).
pub const MAX_QUEUED: usize = 8192;
/// Queued rumors a piggyback looks at, newest first: under a write load the queue holds
/// thousands, nearly all spent, and each datagram would otherwise scan them all.
const MAX_PIGGYBACK_SCAN: usize = 1024;
/// At most this many peers beyond the fanout are picked as candidates for a round of pushes,
/// to make up for peers known to hold the rumors already.
const MAX_PICK_EXTRA: usize = 16;
/// With more peers than this, whether all of them hold a rumor is not tracked (pushes and
/// piggybacks still skip the known holders): it cannot happen with a small fanout, and comparing
/// the peer list on every flush would cost more than it saves.
const MAX_TRACKED_PEERS: usize = 64;
/// How long a rumor with nothing left to push or piggyback stays queued to answer pulls
/// (milliseconds): about two probe periods, after which anti-entropy repairs what is missing.
pub const PULL_WINDOW_MS: u64 = 2_000;

/// One delta in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rumor {
    /// The replica that made the write (its node id and storage epoch).
    pub origin: ReplicaId,
    pub seq: u64,
    pub key: StoreKey,
    pub delta: KeyState,
}

/// Tuning of dissemination.
#[derive(Clone, Debug)]
pub struct RumorConfig {
    /// Peers a fresh rumor is pushed to (default 3), and the rumors of this node's own writes
    /// too unless `origin_fanout` says otherwise. Higher spreads faster and costs more messages
    /// per write. 0: rumors from peers are not pushed on, only piggybacked on probes and
    /// answered to pulls (anti-entropy repairs the rest); use with a large `origin_fanout`.
    pub fanout: usize,
    /// Peers the rumors of this node's own writes are pushed to (default: `fanout`, and one
    /// more while relays are paced: the first hop never waits, so reaching one more peer with it
    /// saves a paced hop for many). A value at least the number of peers sends every write
    /// straight to every member (direct mail, Demers et al. 1987): one hop, but n - 1 messages
    /// per push round.
    pub origin_fanout: Option<usize>,
    /// Piggyback transmissions per rumor are `retransmit_mult * ceil(log2(n + 1))` (default 3).
    pub retransmit_mult: u32,
    /// Rumors received from peers are pushed on in rounds at most this many milliseconds
    /// apart (0: at once). One arriving sooner waits, with the others, for the next round:
    /// fewer, fuller datagrams under load, for up to this much added latency per hop. A node's
    /// own writes are always pushed at once, and a node that pushed nothing for this long
    /// pushes at once, so light traffic never waits. `None` (the default): half the round trip
    /// that probes measure ([`RumorMill::set_round_trip`]), so a LAN never waits and slow links
    /// batch (see [`adaptive_push_interval_ms`]).
    pub push_interval_ms: Option<u64>,
    /// Which peers fresh rumors are pushed to (default: random ones).
    pub plan: PushPlan,
}

/// Which peers a node pushes fresh rumors to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushPlan {
    /// `origin_fanout` and `fanout` random peers (their holders skipped): every member gets
    /// a write about `fanout` times, which rides over lost messages and differing member lists.
    #[default]
    Random,
    /// The members, sorted by id, fill a square grid row by row: an origin pushes its write to
    /// one member of every other column, and it and each of them push it on along their own
    /// column, in rounds at multiples of the push interval. Every member gets a write once, in
    /// two hops: about half the messages of `random` on a LAN and, with batching, the fewest on
    /// slow links; a lost push or a member list that differs leaves a member to pulls,
    /// retransmissions and anti-entropy.
    Grid,
}

/// A round trip shorter than this (milliseconds) paces nothing: a LAN pushes at once.
pub const PACE_FROM_ROUND_TRIP_MS: u64 = 20;
/// The longest interval the round trip sets (milliseconds).
pub const MAX_ADAPTIVE_PUSH_MS: u64 = 250;

/// The push interval that a measured round trip sets: half of it, 0 under
/// [`PACE_FROM_ROUND_TRIP_MS`], at most [`MAX_ADAPTIVE_PUSH_MS`]. Half a round trip is one
/// link's latency: a relay waits about as long as the hop it saves takes.
pub fn adaptive_push_interval_ms(round_trip_ms: u64) -> u64 {
    if round_trip_ms < PACE_FROM_ROUND_TRIP_MS {
        0
    } else {
        (round_trip_ms / 2).min(MAX_ADAPTIVE_PUSH_MS)
    }
}

impl Default for RumorConfig {
    fn default() -> Self {
        RumorConfig {
            fanout: 3,
            origin_fanout: None,
            retransmit_mult: 3,
            push_interval_ms: None,
            plan: PushPlan::Random,
        }
    }
}

/// Per-origin record of the sequence numbers seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen {
    /// Every sequence number up to this one was seen.
    contiguous: u64,
    /// Seen sequence numbers above `contiguous + 1`, at most [`SEEN_WINDOW`].
    above: BTreeSet<u64>,
}

impl Seen {
    fn contains(&self, seq: u64) -> bool {
        seq <= self.contiguous || self.above.contains(&seq)
    }

    fn insert(&mut self, seq: u64) {
        if seq <= self.contiguous {
            return;
        }
        self.above.insert(seq);
        if self.above.len() > SEEN_WINDOW {
            // Give up on the oldest gap: anti-entropy fills it.
            if let Some(&lowest) = self.above.iter().next() {
                self.contiguous = lowest;
            }
        }
        while self.above.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        let contiguous = self.contiguous;
        self.above.retain(|&s| s > contiguous);
    }
}

struct Queued {
    rumor: Rumor,
    /// The peer it came from (never sent back there).
    from: Option<NodeId>,
    /// Peers known to hold it, its origin and `from` included: nothing is sent to them.
    holders: Vec<NodeId>,
    /// Piggyback transmissions left.
    transmits_left: u32,
    /// Not yet pushed to `fanout` peers.
    fresh: bool,
    /// When it was queued (the mill's clock).
    queued_ms: u64,
    /// Grid plan: still to be pushed along this node's column.
    column_pending: bool,
}

impl Queued {
    fn held_by(&self, peer: &NodeId) -> bool {
        self.holders.contains(peer)
    }

    /// `peer` holds it; once every one of `peers` does, nothing more is piggybacked.
    fn hold(&mut self, peer: &NodeId, peers: &[NodeId]) {
        if !self.held_by(peer) {
            self.holders.push(peer.clone());
            if !peers.is_empty() && peers.iter().all(|p| self.held_by(p)) {
                self.transmits_left = 0;
            }
        }
    }

    /// Nothing left to push or piggyback: kept only to answer pulls.
    fn spent(&self) -> bool {
        !self.fresh && !self.column_pending && self.transmits_left == 0
    }
}

/// Per origin, the sequence numbers a node has seen: what a pull request carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenSummary {
    /// Sorted by origin.
    pub origins: Vec<SeenRange>,
}

/// The sequence numbers seen from one origin: all up to `contiguous`, plus `above` (sorted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRange {
    pub origin: ReplicaId,
    pub contiguous: u64,
    pub above: Vec<u64>,
}

impl SeenSummary {
    /// Whether the summarised node has seen rumor `seq` of `origin`.
    pub fn has_seen(&self, origin: &ReplicaId, seq: u64) -> bool {
        match self.origins.binary_search_by(|r| r.origin.cmp(origin)) {
            Ok(i) => {
                let range = &self.origins[i];
                seq <= range.contiguous || range.above.binary_search(&seq).is_ok()
            }
            Err(_) => false,
        }
    }
}

/// The rumor engine of one node.
pub struct RumorMill {
    config: RumorConfig,
    seen: BTreeMap<ReplicaId, Seen>,
    /// Rumors still to be pushed or retransmitted, oldest first.
    queue: VecDeque<Queued>,
    /// Every rumor before this index is neither fresh nor waiting for a column round: a round
    /// looks at the rest only.
    fresh_from: usize,
    /// The latest time the node told (milliseconds; see [`RumorMill::tick`]).
    now_ms: u64,
    /// No pushes before this time (with a `push_interval_ms`).
    next_push_ms: u64,
    /// The round trip to peers that probes measure (milliseconds; 0 until known).
    round_trip_ms: u64,
    /// Peers up, as the node last said (None until it says).
    peers_up: Option<usize>,
    /// The peers of the last [`RumorMill::flush`] (none past [`MAX_TRACKED_PEERS`]): a rumor
    /// they all hold is not piggybacked.
    peers: Vec<NodeId>,
    /// This node, for the grid plan.
    me: Option<NodeId>,
}

/// What [`RumorMill::flush`] asks the node to send: each peer's batch of fresh rumors.
pub type Pushes = Vec<(NodeId, Vec<Rumor>)>;

impl RumorMill {
    pub fn new(config: RumorConfig) -> Self {
        RumorMill {
            config,
            seen: BTreeMap::new(),
            queue: VecDeque::new(),
            fresh_from: 0,
            now_ms: 0,
            next_push_ms: 0,
            round_trip_ms: 0,
            peers_up: None,
            peers: Vec::new(),
            me: None,
        }
    }

    /// This node's id (the grid plan places it among its peers).
    pub fn set_me(&mut self, me: NodeId) {
        self.me = Some(me);
    }

    /// How many peers are up now: a rumor straight from an origin whose fanout covers them all
    /// is not sent on (direct mail).
    pub fn set_peers_up(&mut self, peers_up: usize) {
        self.peers_up = Some(peers_up);
    }

    pub fn config(&self) -> &RumorConfig {
        &self.config
    }

    /// The typical round trip to peers (the node passes the median its probes measured): it
    /// sets the push interval unless the config fixes one.
    pub fn set_round_trip(&mut self, round_trip_ms: u64) {
        self.round_trip_ms = round_trip_ms;
    }

    /// Peers the rumors of this node's own writes are pushed to now.
    pub fn origin_fanout(&self) -> usize {
        let paced = self.push_interval_ms() > 0;
        self.config
            .origin_fanout
            .unwrap_or(self.config.fanout + usize::from(paced))
    }

    /// How far apart relayed rumors are pushed now (milliseconds; 0: at once).
    pub fn push_interval_ms(&self) -> u64 {
        self.config
            .push_interval_ms
            .unwrap_or_else(|| adaptive_push_interval_ms(self.round_trip_ms))
    }

    /// The highest contiguous sequence number seen from each origin (persisted by the node, so
    /// that a restarted node neither re-forwards old rumors nor reuses its own numbers).
    pub fn contiguous(&self) -> impl Iterator<Item = (&ReplicaId, u64)> {
        self.seen.iter().map(|(n, s)| (n, s.contiguous))
    }

    /// Marks everything up to `seq` from `origin` as seen (restoring persisted state).
    pub fn restore(&mut self, origin: &ReplicaId, seq: u64) {
        let seen = self.seen.entry(origin.clone()).or_default();
        if seq > seen.contiguous {
            seen.contiguous = seq;
            seen.above.retain(|&s| s > seq);
        }
    }

    /// Withdraws `origin`'s queued rumors numbered above `seq` (writes undone before they left
    /// the node): they are neither pushed nor piggybacked.
    pub fn withdraw(&mut self, origin: &ReplicaId, seq: u64) {
        self.queue
            .retain(|q| !(q.rumor.origin == *origin && q.rumor.seq > seq));
        self.fresh_from = 0;
        self.skip_spent_fresh();
    }

    /// Forgets what was seen from every lifetime of `node` (a member that was reaped): should it
    /// come back, its rumors are taken as new, and merging one again changes nothing.
    pub fn forget_origin(&mut self, node: &NodeId) {
        self.seen.retain(|origin, _| origin.node != *node);
    }

    /// Origins with remembered sequence numbers (bounded by the members known).
    pub fn seen_entries(&self) -> usize {
        self.seen.values().map(|s| 1 + s.above.len()).sum()
    }

    /// Rumors still queued for retransmission.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Queues a rumor this node originated (its delta is already merged locally). A rumor too
    /// large to piggyback (`small == false`) is only pushed, once, to `fanout` peers.
    pub fn publish(&mut self, rumor: Rumor, members: usize, small: bool) {
        self.seen
            .entry(rumor.origin.clone())
            .or_default()
            .insert(rumor.seq);
        self.enqueue(rumor, None, members, small);
    }

    /// A rumor arrived from `from`. Returns `true` when it is new here: the node must merge its
    /// delta; it is then queued for forwarding (never back to `from`). Returns `false` for a
    /// rumor seen before, which is dropped.
    pub fn receive(&mut self, rumor: Rumor, from: &NodeId, members: usize, small: bool) -> bool {
        let seen = self.seen.entry(rumor.origin.clone()).or_default();
        if seen.contains(rumor.seq) {
            // `from` holds it: nothing more goes there.
            if let Some(queued) = self
                .queue
                .iter_mut()
                .rev()
                .find(|q| q.rumor.seq == rumor.seq && q.rumor.origin == rumor.origin)
            {
                queued.hold(from, &self.peers);
            }
            return false;
        }
        seen.insert(rumor.seq);
        // Direct mail: its origin pushed it to every peer up (the origin's peers are this node's
        // peers up, the origin among them, with this node instead).
        let direct = self.config.plan == PushPlan::Random
            && rumor.origin.node == *from
            && self.peers_up.is_some_and(|up| up <= self.origin_fanout());
        self.enqueue(rumor, Some(from.clone()), members, small);
        if direct {
            if let Some(queued) = self.queue.back_mut() {
                queued.fresh = false;
                queued.transmits_left = 0;
            }
        }
        true
    }

    fn enqueue(&mut self, rumor: Rumor, from: Option<NodeId>, members: usize, small: bool) {
        let rounds = usize::BITS - members.leading_zeros(); // ceil(log2(n + 1)) for n >= 1
        let transmits_left = if small {
            self.config.retransmit_mult * rounds.max(1)
        } else {
            0
        };
        let mut holders = vec![rumor.origin.node.clone()];
        holders.extend(from.iter().filter(|f| **f != rumor.origin.node).cloned());
        if self.queue.is_empty() {
            // Most nodes hold one rumor at a time when writes are rare (and in the round model
            // of 100,000 nodes): no room for four.
            self.queue.reserve_exact(1);
        }
        self.queue.push_back(Queued {
            rumor,
            from,
            holders,
            transmits_left,
            fresh: true,
            queued_ms: self.now_ms,
            column_pending: false,
        });
        while self.queue.len() > MAX_QUEUED {
            self.queue.pop_front();
            self.fresh_from = self.fresh_from.saturating_sub(1);
        }
    }

    /// Pushes every fresh rumor to `fanout` of `peers` (chosen by `pick`, which returns up to
    /// `k` distinct peers from a list), skipping the peer each came from and its origin. Rumors
    /// bound for the same peer travel together (batching under load).
    ///
    /// `pick` is asked for `fanout` peers plus as many as the most holders a rumor of the round
    /// has (at least two, at most 16; once per round for own rumors and once for relayed ones),
    /// and the holders are dropped from its answer, so the cost does not grow with the length of
    /// `peers` (the round model passes 100,000 of them).
    pub fn flush(
        &mut self,
        peers: &[NodeId],
        mut pick: impl FnMut(&[NodeId], usize) -> Vec<NodeId>,
    ) -> Pushes {
        if self.config.plan == PushPlan::Grid {
            if let Some(me) = self.me.clone() {
                return self.flush_grid(&me, peers);
            }
        }
        if peers.len() > MAX_TRACKED_PEERS {
            self.peers.clear();
        } else if self.peers != peers {
            self.peers = peers.to_vec();
        }
        let interval = self.push_interval_ms();
        let paced = interval > 0;
        let origin_fanout = self.origin_fanout();
        // A node's own writes never wait: the first hop is the one the writer waits on.
        let relay_due = !paced || self.now_ms >= self.next_push_ms;
        let mut batches: BTreeMap<NodeId, Vec<Rumor>> = BTreeMap::new();
        let mut pushed = false;
        // One choice of peers per round for own rumors and one for relayed ones, so that a
        // round's rumors share datagrams; each rumor still reaches `fanout` uniformly random
        // peers.
        let mut own: Option<Vec<NodeId>> = None;
        let mut relayed: Option<Vec<NodeId>> = None;
        // Enough candidates that the known holders (never pushed to) leave `fanout` of them.
        let most_holders = |relay: bool| {
            self.queue
                .range(self.fresh_from..)
                .filter(|q| q.fresh && q.from.is_some() == relay)
                .map(|q| q.holders.len())
                .max()
                .unwrap_or(0)
                .clamp(2, MAX_PICK_EXTRA)
        };
        let (own_extra, relayed_extra) = (most_holders(false), most_holders(true));
        let fresh_from = self.fresh_from;
        for queued in self.queue.range_mut(fresh_from..).filter(|q| q.fresh) {
            if queued.from.is_some() && !relay_due {
                continue;
            }
            queued.fresh = false;
            pushed |= queued.from.is_some();
            let (fanout, candidates, extra) = match queued.from {
                None => (origin_fanout, &mut own, own_extra),
                Some(_) => (self.config.fanout, &mut relayed, relayed_extra),
            };
            let candidates = candidates.get_or_insert_with(|| pick(peers, fanout + extra));
            // Peers this round already sends to come first: a rumor whose usual peers hold it
            // goes in a datagram that leaves anyway rather than in a new one.
            let (sending, idle): (Vec<&NodeId>, Vec<&NodeId>) =
                candidates.iter().partition(|p| batches.contains_key(*p));
            let chosen: Vec<NodeId> = sending
                .into_iter()
                .chain(idle)
                .filter(|p| !queued.held_by(p))
                .take(fanout)
                .cloned()
                .collect();
            push_to(queued, &chosen, &self.peers, &mut batches);
        }
        if paced && pushed {
            self.next_push_ms = self.now_ms + interval;
        }
        self.retire();
        batches.into_iter().collect()
    }

    /// [`PushPlan::Grid`]: the members (this node and `peers`), sorted by id, fill a grid of
    /// `ceil(sqrt(n))` columns row by row. An origin pushes its write at once to one member of
    /// every other column (the one in its own row, or in the first row where its row is short),
    /// and it and each of them push it on along their own column in the next round (rounds at
    /// multiples of the push interval, so that all columns go together).
    fn flush_grid(&mut self, me: &NodeId, peers: &[NodeId]) -> Pushes {
        let waiting = self.queue.range(self.fresh_from..);
        if waiting.clone().all(|q| !q.fresh && !q.column_pending) {
            self.retire();
            return Vec::new();
        }
        if peers.len() > MAX_TRACKED_PEERS {
            self.peers.clear();
        } else if self.peers != peers {
            self.peers = peers.to_vec();
        }
        let mut members: Vec<&NodeId> = peers.iter().chain(std::iter::once(me)).collect();
        members.sort();
        members.dedup();
        let n = members.len();
        let side = (1..=n).find(|s| s * s >= n).unwrap_or(1);
        let Some(mine) = members.iter().position(|m| *m == me) else {
            return Vec::new();
        };
        let (my_row, my_col) = (mine / side, mine % side);
        let row: Vec<NodeId> = (0..side)
            .filter(|&c| c != my_col)
            .filter_map(|c| {
                members
                    .get(my_row * side + c)
                    .or_else(|| members.get(c))
                    .map(|m| (*m).clone())
            })
            .collect();
        let column: Vec<NodeId> = (0..n)
            .filter(|&i| i % side == my_col && i != mine)
            .map(|i| members[i].clone())
            .collect();
        let interval = self.push_interval_ms();
        let column_due = interval == 0 || self.now_ms >= self.next_push_ms;
        let mut batches: BTreeMap<NodeId, Vec<Rumor>> = BTreeMap::new();
        let mut pushed = false;
        let fresh_from = self.fresh_from;
        for queued in self.queue.range_mut(fresh_from..) {
            if queued.fresh {
                queued.fresh = false;
                match &queued.from {
                    None => {
                        push_to(queued, &row, &self.peers, &mut batches);
                        queued.column_pending = true;
                    }
                    Some(from) if *from == queued.rumor.origin.node => queued.column_pending = true,
                    Some(_) => {}
                }
            }
            if queued.column_pending && column_due {
                queued.column_pending = false;
                pushed = true;
                push_to(queued, &column, &self.peers, &mut batches);
            }
        }
        if interval > 0 && pushed {
            // Rounds at multiples of the interval: the members of every column push a write
            // on at the same time, so the last column waits no longer than the first.
            self.next_push_ms = (self.now_ms / interval + 1) * interval;
        }
        self.retire();
        batches.into_iter().collect()
    }

    /// Tells the mill the time (milliseconds, the node's clock): pushes held back by
    /// `push_interval_ms` go out at the first [`RumorMill::flush`] once it is due.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// What this node has seen, for a pull request (Karp et al., 2000, push-pull): a peer
    /// answers it with [`RumorMill::answer_pull`]. Its size grows with the origins seen and the
    /// out-of-order sequence numbers (at most [`SEEN_WINDOW`] per origin), never with writes.
    pub fn summary(&self) -> SeenSummary {
        SeenSummary {
            origins: self
                .seen
                .iter()
                .map(|(origin, seen)| SeenRange {
                    origin: origin.clone(),
                    contiguous: seen.contiguous,
                    above: seen.above.iter().copied().collect(),
                })
                .collect(),
        }
    }

    /// Answers a pull request from `asker`: the queued rumors its `summary` shows it lacks,
    /// oldest first, while `fits` accepts them. Answering does not use up piggyback
    /// transmissions: the asker asked, so nothing is sent blindly.
    pub fn answer_pull(
        &self,
        summary: &SeenSummary,
        mut fits: impl FnMut(&Rumor) -> bool,
    ) -> Vec<Rumor> {
        self.queue
            .iter()
            .map(|q| &q.rumor)
            .filter(|r| !summary.has_seen(&r.origin, r.seq))
            .filter(|r| fits(r))
            .cloned()
            .collect()
    }

    /// Rumors to piggyback on a message to `peer`, newest first, while `fits` accepts them
    /// (the caller checks the datagram budget). Each one sent uses up one transmission; rumors
    /// with none left are dropped. Newest first: under more writes than the budget carries,
    /// the rumors sent least (the ones most nodes still lack) go before old ones, which have
    /// had their chances and which anti-entropy repairs anyway.
    pub fn piggyback(&mut self, peer: &NodeId, mut fits: impl FnMut(&Rumor) -> bool) -> Vec<Rumor> {
        let mut out = Vec::new();
        for queued in self.queue.iter_mut().rev().take(MAX_PIGGYBACK_SCAN) {
            if queued.transmits_left == 0 || queued.held_by(peer) {
                continue;
            }
            if !fits(&queued.rumor) {
                continue;
            }
            queued.transmits_left -= 1;
            queued.hold(peer, &self.peers);
            out.push(queued.rumor.clone());
        }
        self.retire();
        out
    }

    /// Drops the oldest rumors while they have nothing left to send and their pull window has
    /// passed (a rumor still retransmitting keeps the ones behind it a while longer: the queue
    /// stays ordered, and is trimmed from its front only, at no cost per rumor kept).
    fn retire(&mut self) {
        let now = self.now_ms;
        while self
            .queue
            .front()
            .is_some_and(|q| q.spent() && now.saturating_sub(q.queued_ms) >= PULL_WINDOW_MS)
        {
            self.queue.pop_front();
            self.fresh_from = self.fresh_from.saturating_sub(1);
        }
        self.skip_spent_fresh();
    }

    /// Moves `fresh_from` past the rumors that are no longer fresh or waiting for a column.
    fn skip_spent_fresh(&mut self) {
        while self
            .queue
            .get(self.fresh_from)
            .is_some_and(|q| !q.fresh && !q.column_pending)
        {
            self.fresh_from += 1;
        }
    }
}

/// Adds `queued` to the batch of each of `targets` that is not known to hold it (`tracked`: the
/// peers whose holding ends its retransmissions).
fn push_to(
    queued: &mut Queued,
    targets: &[NodeId],
    tracked: &[NodeId],
    batches: &mut BTreeMap<NodeId, Vec<Rumor>>,
) {
    for peer in targets {
        if !queued.held_by(peer) {
            queued.hold(peer, tracked);
            batches
                .entry(peer.clone())
                .or_default()
                .push(queued.rumor.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::crdt::LwwRegister;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn replica(s: &str) -> ReplicaId {
        ReplicaId::new(id(s), 0)
    }

    fn rumor(origin: &str, seq: u64) -> Rumor {
        Rumor {
            origin: replica(origin),
            seq,
            key: StoreKey::kv(format!("k{seq}")),
            delta: KeyState::Register(LwwRegister::write(
                Timestamp::from_raw(seq),
                id(origin),
                None,
            )),
        }
    }

    fn first_k(peers: &[NodeId], k: usize) -> Vec<NodeId> {
        peers.iter().take(k).cloned().collect()
    }

    #[test]
    fn a_rumor_is_new_once_and_never_pushed_back_to_its_sender() {
        let mut mill = RumorMill::new(RumorConfig::default());
        assert!(mill.receive(rumor("a", 1), &id("b"), 4, true));
        let peers = [id("a"), id("b"), id("c"), id("d")];
        let pushes = mill.flush(&peers, first_k);
        let targets: Vec<&str> = pushes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            targets,
            vec!["c", "d"],
            "neither the sender b nor the origin a"
        );
        for peer in ["a", "b", "c", "d"] {
            assert!(
                mill.piggyback(&id(peer), |_| true).is_empty(),
                "{peer} holds it"
            );
        }
    }

    #[test]
    fn peers_known_to_hold_a_rumor_are_sent_nothing_more() {
        let mut mill = RumorMill::new(RumorConfig::default());
        assert!(mill.receive(rumor("a", 1), &id("b"), 6, true));
        // c sent it too: c holds it.
        assert!(!mill.receive(rumor("a", 1), &id("c"), 6, true));
        let peers = [id("a"), id("b"), id("c"), id("d"), id("e"), id("f")];
        let pushes = mill.flush(&peers, first_k);
        let targets: Vec<&str> = pushes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(targets, vec!["d", "e", "f"]);
        // Piggybacked once per peer at most, and never to a holder.
        let mut mill = RumorMill::new(RumorConfig::default());
        mill.publish(rumor("me", 1), 6, true);
        let _ = mill.flush(&[], first_k);
        assert_eq!(mill.piggyback(&id("x"), |_| true).len(), 1);
        assert!(mill.piggyback(&id("x"), |_| true).is_empty());
        assert_eq!(mill.piggyback(&id("y"), |_| true).len(), 1);
    }

    #[test]
    fn direct_mail_from_the_origin_is_not_sent_on_but_still_answers_pulls() {
        // Three nodes: the origin's fanout (3) covers its two peers.
        let mut mill = RumorMill::new(RumorConfig::default());
        mill.set_peers_up(2);
        assert!(mill.receive(rumor("a", 1), &id("a"), 3, true));
        assert!(mill.flush(&[id("a"), id("c")], first_k).is_empty());
        assert!(mill.piggyback(&id("c"), |_| true).is_empty());
        let answer = mill.answer_pull(&SeenSummary::default(), |_| true);
        assert_eq!(answer.len(), 1, "c lost the origin's push: a pull gets it");
        mill.tick(PULL_WINDOW_MS);
        mill.retire();
        assert_eq!(mill.queued(), 0, "kept for the pull window only");
        // Relayed (not from its origin), or with more peers than the fanout: sent on.
        let mut relay = RumorMill::new(RumorConfig::default());
        relay.set_peers_up(2);
        assert!(relay.receive(rumor("a", 1), &id("b"), 3, true));
        assert_eq!(relay.flush(&[id("b"), id("c")], first_k).len(), 1);
        let mut wide = RumorMill::new(RumorConfig::default());
        wide.set_peers_up(5);
        assert!(wide.receive(rumor("a", 1), &id("a"), 6, true));
        let peers: Vec<NodeId> = ["a", "c", "d", "e", "f"].map(id).to_vec();
        assert_eq!(wide.flush(&peers, first_k).len(), 3);
        // The origin itself stops once every peer up holds its rumor.
        let mut origin = RumorMill::new(RumorConfig::default());
        origin.publish(rumor("me", 1), 3, true);
        assert_eq!(origin.flush(&[id("b"), id("c")], first_k).len(), 2);
        assert!(origin.piggyback(&id("b"), |_| true).is_empty());
        assert!(origin.piggyback(&id("c"), |_| true).is_empty());
    }

    #[test]
    fn a_rumor_goes_to_the_peers_its_round_already_sends_to_before_any_other() {
        // Relayed rumors: r1 came from c (a holder), r2 from x (not a peer). The round's
        // candidates are b, c, d, e, f: r1 goes to b, d, e; r2, which none of them holds, goes to
        // the same three rather than to b, c, d (a fourth datagram, to c).
        let mut mill = RumorMill::new(RumorConfig {
            push_interval_ms: Some(0),
            ..RumorConfig::default()
        });
        assert!(mill.receive(rumor("a", 1), &id("c"), 7, true));
        assert!(mill.receive(rumor("a", 2), &id("x"), 7, true));
        let peers = ["b", "c", "d", "e", "f", "g"].map(id);
        let pushes = mill.flush(&peers, first_k);
        let targets: Vec<(&str, usize)> = pushes
            .iter()
            .map(|(p, batch)| (p.as_str(), batch.len()))
            .collect();
        assert_eq!(targets, vec![("b", 2), ("d", 2), ("e", 2)]);
    }

    fn grid_mill(me: &str, interval: u64) -> RumorMill {
        let mut mill = RumorMill::new(RumorConfig {
            plan: PushPlan::Grid,
            push_interval_ms: Some(interval),
            ..RumorConfig::default()
        });
        mill.set_me(id(me));
        mill
    }

    fn targets(pushes: &Pushes) -> Vec<&str> {
        pushes.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn the_grid_plan_pushes_along_the_origins_row_at_once_then_along_columns_in_rounds() {
        // a b c / d e f / g h i: e's row is d, f; its column b, h.
        let peers: Vec<NodeId> = ["a", "b", "c", "d", "f", "g", "h", "i"].map(id).to_vec();
        let mut mill = grid_mill("e", 100);
        mill.tick(150);
        mill.publish(rumor("e", 1), 9, true);
        assert_eq!(
            targets(&mill.flush(&peers, first_k)),
            vec!["b", "d", "f", "h"]
        );
        mill.publish(rumor("e", 2), 9, true);
        assert_eq!(
            targets(&mill.flush(&peers, first_k)),
            vec!["d", "f"],
            "the column waits for the next round, at 200"
        );
        mill.tick(200);
        assert_eq!(targets(&mill.flush(&peers, first_k)), vec!["b", "h"]);
        // A write that came straight from its origin d goes on along e's column; one that came
        // from anyone else has made its two hops.
        mill.tick(300);
        assert!(mill.receive(rumor("d", 1), &id("d"), 9, true));
        assert!(mill.receive(rumor("a", 1), &id("d"), 9, true));
        let pushes = mill.flush(&peers, first_k);
        assert_eq!(targets(&pushes), vec!["b", "h"]);
        assert!(pushes
            .iter()
            .all(|(_, batch)| batch.len() == 1 && batch[0].origin == replica("d")));
        // Four members (a b / c d): the origin a reaches b and c, and b passes it on to d (no
        // direct mail: the origin did not push to every peer).
        let mut b = grid_mill("b", 0);
        b.set_peers_up(3);
        assert!(b.receive(rumor("a", 1), &id("a"), 4, true));
        let peers: Vec<NodeId> = ["a", "c", "d"].map(id).to_vec();
        assert_eq!(targets(&b.flush(&peers, first_k)), vec!["d"]);
        // A short last row: g (a b c / d e f / g) reaches columns 1 and 2 through b and c.
        let peers: Vec<NodeId> = ["a", "b", "c", "d", "e", "f"].map(id).to_vec();
        let mut corner = grid_mill("g", 0);
        corner.publish(rumor("g", 1), 7, true);
        assert_eq!(
            targets(&corner.flush(&peers, first_k)),
            vec!["a", "b", "c", "d"]
        );
    }

    #[test]
    fn rounds_skip_only_rumors_with_nothing_left_to_push_and_the_queue_stays_bounded() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let peers: Vec<NodeId> = ["b", "c", "d", "e", "f"].map(id).to_vec();
        for plan in [PushPlan::Random, PushPlan::Grid] {
            let mut mill = RumorMill::new(RumorConfig {
                plan,
                push_interval_ms: Some(50),
                ..RumorConfig::default()
            });
            mill.set_me(id("a"));
            let mut now = 0;
            for step in 0..20_000u64 {
                match rng.gen_range(0..6) {
                    0 => mill.publish(rumor("a", step), 6, true),
                    1 => {
                        let from = &peers[rng.gen_range(0..peers.len())];
                        let origin = ["b", "c", "x"][rng.gen_range(0..3)];
                        mill.receive(rumor(origin, step), from, 6, true);
                    }
                    2 => {
                        now += rng.gen_range(0..40);
                        mill.tick(now);
                    }
                    3 => {
                        let peer = &peers[rng.gen_range(0..peers.len())];
                        let _ = mill.piggyback(peer, |_| true);
                    }
                    4 => mill.withdraw(&replica("a"), step.saturating_sub(3)),
                    _ => {
                        let _ = mill.flush(&peers, first_k);
                    }
                }
                let skipped = mill.queue.range(..mill.fresh_from);
                assert!(
                    skipped.clone().all(|q| !q.fresh && !q.column_pending),
                    "{plan:?} step {step}"
                );
                assert!(mill.fresh_from <= mill.queue.len());
                assert!(mill.queue.len() <= MAX_QUEUED);
            }
            // Time passes and rounds run: everything is pushed, spent and dropped.
            for _ in 0..200 {
                now += 100;
                mill.tick(now);
                let _ = mill.flush(&peers, first_k);
                for peer in &peers {
                    let _ = mill.piggyback(peer, |_| true);
                }
            }
            assert_eq!(mill.queued(), 0, "{plan:?}");
        }
    }

    #[test]
    fn fresh_rumors_for_one_peer_travel_together() {
        let mut mill = RumorMill::new(RumorConfig::default());
        for seq in 1..=5 {
            mill.publish(rumor("me", seq), 3, true);
        }
        let pushes = mill.flush(&[id("x"), id("y")], first_k);
        assert_eq!(pushes.len(), 2);
        assert!(pushes.iter().all(|(_, batch)| batch.len() == 5));
        assert!(mill.flush(&[id("x")], first_k).is_empty(), "pushed once");
    }

    #[test]
    fn piggybacking_stops_after_bounded_transmissions() {
        let mut mill = RumorMill::new(RumorConfig {
            fanout: 1,
            retransmit_mult: 2,
            ..RumorConfig::default()
        });
        mill.publish(rumor("me", 1), 3, true); // ceil(log2(4)) = 2 rounds, x2 = 4 transmissions
        let _ = mill.flush(&[], first_k);
        let sent: usize = (0..10)
            .map(|i| mill.piggyback(&id(&format!("p{i}")), |_| true).len())
            .sum();
        assert_eq!(sent, 4);
        assert_eq!(mill.queued(), 1, "kept to answer pulls");
        mill.tick(PULL_WINDOW_MS);
        assert!(mill.piggyback(&id("q"), |_| true).is_empty());
        assert_eq!(mill.queued(), 0);
    }

    #[test]
    fn seen_memory_stays_bounded_with_gaps_and_out_of_order_arrivals() {
        let mut mill = RumorMill::new(RumorConfig::default());
        // Seq 1 never arrives; 2..=5000 arrive out of order.
        let mut seqs: Vec<u64> = (2..=5000).collect();
        seqs.reverse();
        for seq in seqs {
            mill.receive(rumor("a", seq), &id("b"), 3, true);
        }
        assert!(mill.seen_entries() <= SEEN_WINDOW + 1);
        assert!(
            !mill.receive(rumor("a", 4999), &id("b"), 3, true),
            "still known as seen"
        );
        // In-order arrivals keep it at one entry.
        for seq in 1..=3000 {
            mill.receive(rumor("c", seq), &id("b"), 3, true);
        }
        let c: Vec<u64> = mill
            .contiguous()
            .filter(|(n, _)| n.node.as_str() == "c")
            .map(|(_, s)| s)
            .collect();
        assert_eq!(c, vec![3000]);
    }

    #[test]
    fn the_retransmission_queue_stays_bounded_under_a_write_storm() {
        let mut mill = RumorMill::new(RumorConfig::default());
        for seq in 1..=(MAX_QUEUED as u64 * 3) {
            mill.publish(rumor("me", seq), 3, true);
        }
        assert_eq!(mill.queued(), MAX_QUEUED);
        // The newest survive.
        let pushes = mill.flush(&[id("x")], first_k);
        assert_eq!(pushes[0].1.last().unwrap().seq, MAX_QUEUED as u64 * 3);
    }

    #[test]
    fn restored_sequence_numbers_count_as_seen() {
        let mut mill = RumorMill::new(RumorConfig::default());
        mill.restore(&replica("a"), 10);
        assert!(!mill.receive(rumor("a", 7), &id("b"), 3, true));
        assert!(mill.receive(rumor("a", 11), &id("b"), 3, true));
    }

    #[test]
    fn a_summary_lists_contiguous_and_out_of_order_sequence_numbers() {
        let mut mill = RumorMill::new(RumorConfig::default());
        for seq in [1, 2, 3, 5, 7] {
            mill.receive(rumor("a", seq), &id("b"), 3, true);
        }
        mill.publish(rumor("me", 1), 3, true);
        let summary = mill.summary();
        assert_eq!(
            summary.origins,
            vec![
                SeenRange {
                    origin: replica("a"),
                    contiguous: 3,
                    above: vec![5, 7],
                },
                SeenRange {
                    origin: replica("me"),
                    contiguous: 1,
                    above: vec![],
                },
            ]
        );
        for (origin, seq, seen) in [
            ("a", 3, true),
            ("a", 4, false),
            ("a", 7, true),
            ("a", 8, false),
            ("me", 1, true),
            ("z", 1, false),
        ] {
            assert_eq!(
                summary.has_seen(&replica(origin), seq),
                seen,
                "{origin} {seq}"
            );
        }
        assert_eq!(
            RumorMill::new(RumorConfig::default()).summary(),
            SeenSummary::default()
        );
    }

    #[test]
    fn a_pull_is_answered_with_exactly_the_queued_rumors_the_asker_lacks() {
        let mut holder = RumorMill::new(RumorConfig::default());
        for seq in 1..=4 {
            holder.publish(rumor("h", seq), 3, true);
        }
        holder.receive(rumor("x", 1), &id("x"), 3, true);
        let mut asker = RumorMill::new(RumorConfig::default());
        asker.receive(rumor("h", 1), &id("h"), 3, true);
        asker.receive(rumor("h", 3), &id("h"), 3, true);
        let answer = holder.answer_pull(&asker.summary(), |_| true);
        let got: Vec<(&str, u64)> = answer
            .iter()
            .map(|r| (r.origin.node.as_str(), r.seq))
            .collect();
        assert_eq!(got, vec![("h", 2), ("h", 4), ("x", 1)]);
        // The asker merges them and has nothing left to ask for.
        for r in answer {
            assert!(asker.receive(r, &id("h"), 3, true));
        }
        assert!(holder.answer_pull(&asker.summary(), |_| true).is_empty());
        // The budget is respected, and answering uses up no piggyback transmissions.
        let mut budget = 1;
        let one = holder.answer_pull(&SeenSummary::default(), |_| {
            budget -= 1;
            budget >= 0
        });
        assert_eq!(one.len(), 1);
        let _ = holder.flush(&[], first_k);
        let piggybacked = holder.piggyback(&id("p"), |_| true).len();
        assert_eq!(piggybacked, 5, "every queued rumor still has transmissions");
    }

    #[test]
    fn a_rumor_dropped_from_the_queue_is_no_longer_offered_to_pulls() {
        let mut mill = RumorMill::new(RumorConfig {
            fanout: 1,
            retransmit_mult: 1,
            ..RumorConfig::default()
        });
        mill.publish(rumor("me", 1), 1, true); // one piggyback transmission
        let _ = mill.flush(&[], first_k);
        assert_eq!(mill.answer_pull(&SeenSummary::default(), |_| true).len(), 1);
        assert_eq!(mill.piggyback(&id("p"), |_| true).len(), 1);
        mill.tick(PULL_WINDOW_MS);
        mill.retire();
        assert!(mill
            .answer_pull(&SeenSummary::default(), |_| true)
            .is_empty());
    }

    #[test]
    fn pushes_go_to_fanout_peers_however_long_the_peer_list() {
        let mut mill = RumorMill::new(RumorConfig {
            fanout: 3,
            retransmit_mult: 1,
            ..RumorConfig::default()
        });
        mill.receive(rumor("n0", 1), &id("n1"), 100_000, true);
        let peers: Vec<NodeId> = (0..100_000).map(|i| id(&format!("n{i}"))).collect();
        let mut asked = Vec::new();
        let pushes = mill.flush(&peers, |list, k| {
            asked.push((list.len(), k));
            first_k(list, k)
        });
        assert_eq!(asked, vec![(100_000, 5)], "one pick of fanout + 2");
        let targets: Vec<&str> = pushes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(targets, vec!["n2", "n3", "n4"], "sender and origin skipped");
    }

    #[test]
    fn own_rumors_and_relayed_rumors_use_their_own_fanouts() {
        let mut mill = RumorMill::new(RumorConfig {
            fanout: 0,
            origin_fanout: Some(10),
            ..RumorConfig::default()
        });
        mill.publish(rumor("me", 1), 5, true);
        mill.receive(rumor("a", 1), &id("b"), 5, true);
        let peers = [id("a"), id("b"), id("c"), id("d")];
        let pushes = mill.flush(&peers, first_k);
        let targets: Vec<&str> = pushes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(targets, vec!["a", "b", "c", "d"], "every peer");
        assert!(
            pushes
                .iter()
                .all(|(_, batch)| batch.len() == 1 && batch[0].origin == replica("me")),
            "a relayed rumor is not pushed with fanout 0"
        );
        assert_eq!(
            mill.piggyback(&id("c"), |_| true).len(),
            1,
            "the relayed rumor still piggybacks; c holds the pushed one"
        );
    }

    #[test]
    fn a_push_interval_batches_relayed_rumors_but_never_delays_own_writes() {
        let mut mill = RumorMill::new(RumorConfig {
            fanout: 1,
            push_interval_ms: Some(100),
            ..RumorConfig::default()
        });
        let peers = [id("x")];
        let seqs = |pushes: &Pushes| -> Vec<(String, u64)> {
            pushes
                .iter()
                .flat_map(|(_, batch)| batch.iter().map(|r| (r.origin.to_string(), r.seq)))
                .collect()
        };
        mill.tick(1_000);
        mill.receive(rumor("a", 1), &id("b"), 3, true);
        assert_eq!(seqs(&mill.flush(&peers, first_k)).len(), 1, "idle: at once");
        mill.tick(1_010);
        mill.receive(rumor("a", 2), &id("b"), 3, true);
        mill.tick(1_050);
        mill.receive(rumor("a", 3), &id("b"), 3, true);
        assert!(mill.flush(&peers, first_k).is_empty(), "held back");
        mill.publish(rumor("me", 1), 3, true);
        assert_eq!(
            seqs(&mill.flush(&peers, first_k)),
            vec![("me".to_string(), 1)],
            "an own write goes at once"
        );
        mill.tick(1_100);
        let round = mill.flush(&peers, first_k);
        assert_eq!(round.len(), 1, "one datagram");
        assert_eq!(
            seqs(&round),
            vec![("a".to_string(), 2), ("a".to_string(), 3)]
        );
        // That round makes the next one due at 1,200.
        mill.tick(1_150);
        mill.receive(rumor("a", 4), &id("b"), 3, true);
        assert!(mill.flush(&peers, first_k).is_empty());
        mill.tick(1_200);
        assert_eq!(mill.flush(&peers, first_k).len(), 1);
    }

    #[test]
    fn without_a_push_interval_every_flush_pushes() {
        let mut mill = RumorMill::new(RumorConfig {
            push_interval_ms: Some(0),
            ..RumorConfig::default()
        });
        mill.set_round_trip(200);
        for seq in 1..=3 {
            mill.publish(rumor("me", seq), 2, true);
            assert_eq!(mill.flush(&[id("x")], first_k).len(), 1, "no clock needed");
        }
    }

    #[test]
    fn by_default_the_round_trip_sets_the_push_interval() {
        let mut mill = RumorMill::new(RumorConfig::default());
        assert_eq!(mill.push_interval_ms(), 0, "nothing measured yet");
        mill.set_round_trip(1);
        assert_eq!(mill.push_interval_ms(), 0, "a LAN never waits");
        mill.set_round_trip(200);
        assert_eq!(mill.push_interval_ms(), 100, "half of a slow round trip");
        mill.set_round_trip(10_000);
        assert_eq!(mill.push_interval_ms(), MAX_ADAPTIVE_PUSH_MS);
        // Paced: a relayed rumor waits for the next round.
        let peers = [id("x"), id("y"), id("z")];
        mill.tick(1_000);
        mill.set_round_trip(200);
        assert!(mill.receive(rumor("o", 1), &id("y"), 4, true));
        assert_eq!(
            mill.flush(&peers, first_k).len(),
            2,
            "the first round at once, to x and z (not back to y)"
        );
        assert!(mill.receive(rumor("o", 2), &id("y"), 4, true));
        assert!(
            mill.flush(&peers, first_k).is_empty(),
            "waits for the round"
        );
        mill.tick(1_100);
        assert_eq!(mill.flush(&peers, first_k).len(), 2);
        // The own writes of a paced node go to one peer more than the relays.
        assert_eq!(mill.origin_fanout(), 4);
        mill.set_round_trip(0);
        assert_eq!(mill.origin_fanout(), 3);
        let fixed = RumorMill::new(RumorConfig {
            push_interval_ms: Some(30),
            ..RumorConfig::default()
        });
        assert_eq!(fixed.push_interval_ms(), 30, "a fixed interval wins");
    }
}
