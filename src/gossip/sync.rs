//! Merkle anti-entropy: one exchange between an initiator ([`SyncSession`]) and a responder
//! ([`respond`]) after which each holds the other's differing states.
//!
//! Owns the comparison of two [`MerkleIndex`]es and the choice of what to send; never applies a
//! merge itself (both sides hand their merges to the caller), never encodes frames, never reads a
//! clock and never waits: the driver carries each message and calls back when the reply arrives.
//!
//! One exchange, in request/reply round trips (the initiator keeps all session state; the
//! responder is stateless and answers each request from its current state):
//!
//! ```text
//! initiator                                   responder
//! Root { root }                          -->  equal: InSync (the exchange ends here)
//!                                        <--  Children: 8-byte prefixes of the root's 16 children
//! GetChildren { level, nodes }           -->  (only the nodes whose prefixes differed)
//!                                        <--  Children: 16 prefixes per node
//!   ... once per level, down to the 65,536 leaves ...
//! Repair { leaves, after, push, want }   -->  merges `push`
//!                                        <--  Repaired { keys of those leaves, states wanted }
//!   ... until no leaf, push or want is left ...
//! ```
//!
//! At a differing leaf the initiator compares the responder's `(key, item hash prefix)` list with
//! its own: keys it lacks or holds differently it *wants*, keys the responder lacks or holds
//! differently it *pushes* (a differing key goes both ways, and both sides end with the merge of
//! the two states, since CRDT merges commute). Key lists, pushes and wanted states travel in the
//! same `Repair` round trips, so a handful of differences costs one round trip per level plus two.
//!
//! Every message aims to stay under [`MESSAGE_BUDGET`] encoded: large differences (an empty replica
//! against a full one) proceed in chunks over several round trips: at most
//! [`MAX_NODES_PER_REQUEST`] nodes per `GetChildren`, at most [`MAX_LEAVES_PER_REQUEST`] leaves and
//! [`MAX_KEYS_PER_REQUEST`] keys per `Repair`; a reply stops at the budget and the initiator asks
//! again for the rest (a leaf's key list resumes after the last key received). The initiator stops
//! fetching key lists while many repairs are queued, so its memory stays bounded too. A single
//! state larger than the budget still travels, alone; one larger than a frame cannot.
//!
//! The responder rejects (answers `None` to) anything out of range or over the limits; the
//! initiator ends its session (marking it [`SyncStats::aborted`]) on a reply that does not fit its
//! request. Neither panics on peer input.
//!
//! Wire compatibility: messages are postcard-encoded, where an enum variant is its index, so new
//! variants go at the end and existing ones never change shape.

use crate::crdt::KeyState;
use crate::store::merkle::{self, MerkleIndex, DEPTH, FANOUT, LEAVES};
use crate::store::{Keyspace, Leaf, StoreKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The encoded size one message aims to stay under (frames carry at most 4 MiB).
pub const MESSAGE_BUDGET: usize = 1 << 20;
/// Nodes whose children one `GetChildren` asks for: the reply carries 16 prefixes of 8 bytes for
/// each, 256 KiB at most.
pub const MAX_NODES_PER_REQUEST: usize = 2048;
/// Leaves whose key lists one `Repair` asks for.
pub const MAX_LEAVES_PER_REQUEST: usize = 4096;
/// Keys one `Repair` pushes, and keys it wants.
pub const MAX_KEYS_PER_REQUEST: usize = 16_384;

/// The share of a request that wanted keys may take (keys are short; the rest carries pushes).
const WANT_BUDGET: usize = MESSAGE_BUDGET / 4;
/// Keys queued for pushing or fetching above which no further key lists are asked for.
const QUEUE_LIMIT: usize = 16_384;
/// Room kept in every message for variant tags, list lengths and counters.
const RESERVE: usize = 1024;
/// Upper bound of the encoded size of a [`LeafKeys`] without its keys.
const LEAF_OVERHEAD: usize = 8;
/// Upper bound of the encoded size of a leaf index.
const LEAF_INDEX_LEN: usize = 3;

/// The first 8 bytes of a Merkle node hash or of an item hash ([`merkle::item_hash`]): enough to
/// tell versions apart (a false match has probability 2^-64) at a quarter of the bytes.
pub type HashPrefix = [u8; 8];

/// What a replica exposes to anti-entropy.
pub trait SyncSource {
    fn merkle(&self) -> &MerkleIndex;
    /// The keys in leaf `leaf`, each with the first 8 bytes of its item hash
    /// ([`merkle::item_hash`]), in any order.
    fn leaf_keys(&self, leaf: u16) -> Vec<(StoreKey, HashPrefix)>;
    fn state(&self, key: &StoreKey) -> Option<KeyState>;
}

/// The messages of one exchange. Requests go from initiator to responder, replies back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// Request, opens an exchange: the initiator's root (full hash and key count).
    Root { root: Leaf },
    /// Reply to `Root`: the roots are equal, nothing to repair.
    InSync,
    /// Request: the hash prefixes of the children of `nodes` (indexes at `level`, `level < 4`).
    GetChildren { level: u8, nodes: Vec<u16> },
    /// Reply to `Root` (the root's children) or `GetChildren`: 16 prefixes per node, in order.
    Children { hashes: Vec<HashPrefix> },
    /// Request: the key lists of `leaves` (the first one resumed strictly after `after`), states
    /// for the responder to merge, and keys whose states the initiator wants.
    Repair {
        leaves: Vec<u16>,
        after: Option<StoreKey>,
        push: Vec<(StoreKey, KeyState)>,
        want: Vec<StoreKey>,
    },
    /// Reply to `Repair`: key lists for a prefix of the requested leaves (only the last may be
    /// incomplete), and the states of the first `answered` wanted keys (a wanted key the
    /// responder does not hold is answered by omission).
    Repaired {
        keys: Vec<LeafKeys>,
        states: Vec<(StoreKey, KeyState)>,
        answered: u32,
    },
}

/// One leaf's keys (or the next part of them) with their item hash prefixes, sorted by key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafKeys {
    pub leaf: u16,
    pub keys: Vec<(StoreKey, HashPrefix)>,
    /// False when the list stopped at the message budget; the rest follows the last key.
    pub complete: bool,
}

impl SyncMessage {
    /// The postcard-encoded size in bytes (without the frame's length prefix).
    pub fn encoded_len(&self) -> usize {
        encoded_len(self)
    }
}

/// What the initiator does after a reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStep {
    /// The next request, `None` once the exchange is over.
    pub send: Option<SyncMessage>,
    /// Remote states to merge into the local replica (merging is idempotent, so a state the
    /// replica already dominates is harmless).
    pub merge: Vec<(StoreKey, KeyState)>,
    /// The exchange is over: nothing to send, no reply to wait for.
    pub done: bool,
}

/// Counters of one session, from the initiator's side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Request/reply round trips completed.
    pub rounds: u32,
    /// States pushed to the responder.
    pub keys_sent: u64,
    /// States received from the responder.
    pub keys_received: u64,
    /// Encoded size of the requests sent.
    pub bytes_sent: u64,
    /// Encoded size of the replies received.
    pub bytes_received: u64,
    /// The session ended early on a reply that did not fit its request.
    pub aborted: bool,
}

impl SyncStats {
    /// Bytes exchanged in both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes_sent + self.bytes_received
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `Root` sent.
    Root,
    /// Walking down the tree, one level at a time.
    Descend,
    /// Exchanging key lists and states of the differing leaves.
    Repair,
    Done,
}

/// The initiator's side of one exchange with one peer.
#[derive(Clone, Debug)]
pub struct SyncSession {
    phase: Phase,
    /// Encoded size the requests aim to stay under.
    budget: usize,
    /// The tree level of `frontier` and `asked_nodes`.
    level: usize,
    /// Differing nodes at `level` whose children are still to be asked for.
    frontier: VecDeque<u16>,
    /// Differing nodes found so far at `level + 1`, ascending.
    next: Vec<u16>,
    /// The nodes of the outstanding `GetChildren`.
    asked_nodes: Vec<u16>,
    /// Differing leaves whose key lists are still to be asked for, ascending.
    leaves: VecDeque<u16>,
    /// A leaf whose key list arrived in part, with the keys so far.
    partial: Option<(u16, Vec<(StoreKey, HashPrefix)>)>,
    /// The leaves of the outstanding `Repair`.
    asked_leaves: Vec<u16>,
    /// Whether the outstanding `Repair` resumes `partial` (as its first leaf).
    asked_partial: bool,
    /// Keys whose local states the responder lacks or holds differently.
    push: VecDeque<StoreKey>,
    /// Keys whose remote states this replica lacks or holds differently.
    want: VecDeque<StoreKey>,
    /// The wanted keys of the outstanding `Repair`.
    asked_want: Vec<StoreKey>,
    stats: SyncStats,
}

impl SyncSession {
    /// Opens an exchange: returns the session and the first request for the peer.
    pub fn start(source: &impl SyncSource) -> (SyncSession, SyncMessage) {
        Self::start_within(source, MESSAGE_BUDGET)
    }

    fn start_within(source: &impl SyncSource, budget: usize) -> (SyncSession, SyncMessage) {
        let mut session = SyncSession {
            phase: Phase::Root,
            budget,
            level: 0,
            frontier: VecDeque::new(),
            next: Vec::new(),
            asked_nodes: Vec::new(),
            leaves: VecDeque::new(),
            partial: None,
            asked_leaves: Vec::new(),
            asked_partial: false,
            push: VecDeque::new(),
            want: VecDeque::new(),
            asked_want: Vec::new(),
            stats: SyncStats::default(),
        };
        let request = SyncMessage::Root {
            root: source.merkle().root(),
        };
        session.stats.bytes_sent += request.encoded_len() as u64;
        (session, request)
    }

    /// The peer's reply arrived; returns what to send next, states to merge locally, and whether
    /// the exchange is over. The caller merges before the next call, though the exchange
    /// converges either way.
    pub fn handle(&mut self, source: &impl SyncSource, reply: SyncMessage) -> SyncStep {
        if self.phase == Phase::Done {
            return SyncStep {
                done: true,
                ..SyncStep::default()
            };
        }
        self.stats.rounds += 1;
        self.stats.bytes_received += reply.encoded_len() as u64;
        let mut merge = Vec::new();
        let fits = match (self.phase, reply) {
            (Phase::Root, SyncMessage::InSync) => {
                self.phase = Phase::Done;
                true
            }
            (Phase::Root, SyncMessage::Children { hashes }) => {
                self.phase = Phase::Descend;
                self.asked_nodes = vec![0];
                self.take_children(source, &hashes)
            }
            (Phase::Descend, SyncMessage::Children { hashes }) => {
                self.take_children(source, &hashes)
            }
            (
                Phase::Repair,
                SyncMessage::Repaired {
                    keys,
                    states,
                    answered,
                },
            ) => self.take_repaired(source, keys, states, answered, &mut merge),
            _ => false,
        };
        if !fits {
            self.stats.aborted = true;
            self.phase = Phase::Done;
        }
        let send = self.next_request(source);
        if let Some(request) = &send {
            self.stats.bytes_sent += request.encoded_len() as u64;
        } else {
            self.phase = Phase::Done;
        }
        SyncStep {
            done: send.is_none(),
            send,
            merge,
        }
    }

    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// Compares the children of the asked nodes with the local ones; returns false when the
    /// reply does not fit the request.
    fn take_children(&mut self, source: &impl SyncSource, hashes: &[HashPrefix]) -> bool {
        let asked = std::mem::take(&mut self.asked_nodes);
        if hashes.len() != asked.len() * FANOUT {
            return false;
        }
        let merkle = source.merkle();
        for (&node, theirs) in asked.iter().zip(hashes.chunks_exact(FANOUT)) {
            let mine = merkle.children(self.level, usize::from(node));
            for (c, (m, t)) in mine.iter().zip(theirs).enumerate() {
                if prefix(&m.hash) != *t {
                    // At most 16^4 - 1 = u16::MAX: the tree has 65,536 leaves.
                    self.next.push((usize::from(node) * FANOUT + c) as u16);
                }
            }
        }
        true
    }

    fn take_repaired(
        &mut self,
        source: &impl SyncSource,
        keys: Vec<LeafKeys>,
        states: Vec<(StoreKey, KeyState)>,
        answered: u32,
        merge: &mut Vec<(StoreKey, KeyState)>,
    ) -> bool {
        let asked_leaves = std::mem::take(&mut self.asked_leaves);
        let asked_want = std::mem::take(&mut self.asked_want);
        let answered = answered as usize;
        let covered = keys.len();
        // Check the whole reply before changing anything.
        if covered > asked_leaves.len() || answered > asked_want.len() {
            return false;
        }
        let in_order = keys
            .iter()
            .zip(&asked_leaves)
            .enumerate()
            .all(|(j, (entry, &leaf))| entry.leaf == leaf && (entry.complete || j + 1 == covered));
        let asked_anything = !asked_leaves.is_empty() || !asked_want.is_empty();
        // A correct responder always answers something, so a reply without progress would loop.
        if !in_order || (asked_anything && covered == 0 && answered == 0) {
            return false;
        }

        // What the reply did not cover goes back to the front of the queues, in order.
        for key in asked_want.into_iter().skip(answered).rev() {
            self.want.push_front(key);
        }
        let resumed = self.asked_partial && !asked_leaves.is_empty();
        let skip = if covered == 0 && resumed { 1 } else { covered };
        for &leaf in asked_leaves.iter().skip(skip).rev() {
            self.leaves.push_front(leaf);
        }

        let mut partial = self.partial.take();
        for (j, entry) in keys.into_iter().enumerate() {
            let mut theirs = match (j, resumed, partial.take()) {
                (0, true, Some((_, so_far))) => so_far,
                (_, _, other) => {
                    partial = other;
                    Vec::new()
                }
            };
            theirs.extend(entry.keys);
            if entry.complete {
                self.compare_leaf(source, entry.leaf, theirs);
            } else {
                self.partial = Some((entry.leaf, theirs));
            }
        }
        if partial.is_some() {
            // Not resumed this time (or not answered): keep it for the next request.
            self.partial = partial;
        }

        merge.extend(
            states
                .into_iter()
                .filter(|(key, state)| kind_matches(key, state)),
        );
        self.stats.keys_received += merge.len() as u64;
        true
    }

    /// Queues the keys of one differing leaf: wanted where the responder holds something this
    /// replica lacks, pushed where this replica holds something the responder lacks.
    fn compare_leaf(
        &mut self,
        source: &impl SyncSource,
        leaf: u16,
        theirs: Vec<(StoreKey, HashPrefix)>,
    ) {
        let mut mine: BTreeMap<StoreKey, HashPrefix> = source.leaf_keys(leaf).into_iter().collect();
        for (key, hash) in theirs {
            match mine.remove(&key) {
                Some(own) if own == hash => {}
                Some(_) => {
                    self.push.push_back(key.clone());
                    self.want.push_back(key);
                }
                None => self.want.push_back(key),
            }
        }
        self.push.extend(mine.into_keys());
    }

    fn next_request(&mut self, source: &impl SyncSource) -> Option<SyncMessage> {
        if self.phase == Phase::Descend {
            if self.frontier.is_empty() {
                // This level is done: its differing children are the next frontier.
                self.level += 1;
                self.frontier = std::mem::take(&mut self.next).into();
            }
            if self.level == DEPTH {
                self.leaves = std::mem::take(&mut self.frontier);
                self.phase = Phase::Repair;
            } else if self.frontier.is_empty() {
                // The roots differed but no child prefix does (the peer changed meanwhile).
                return None;
            } else {
                let n = self.frontier.len().min(MAX_NODES_PER_REQUEST);
                self.asked_nodes = self.frontier.drain(..n).collect();
                return Some(SyncMessage::GetChildren {
                    level: self.level as u8,
                    nodes: self.asked_nodes.clone(),
                });
            }
        }
        if self.phase == Phase::Repair {
            return self.next_repair(source);
        }
        None
    }

    fn next_repair(&mut self, source: &impl SyncSource) -> Option<SyncMessage> {
        loop {
            let idle = self.leaves.is_empty()
                && self.partial.is_none()
                && self.push.is_empty()
                && self.want.is_empty();
            if idle {
                return None;
            }
            let mut size = RESERVE;
            let mut leaves = Vec::new();
            let mut after = None;
            self.asked_partial = false;
            if self.push.len() + self.want.len() < QUEUE_LIMIT {
                if let Some((leaf, so_far)) = &self.partial {
                    leaves.push(*leaf);
                    after = so_far.last().map(|(key, _)| key.clone());
                    size += encoded_len(&after);
                    self.asked_partial = true;
                }
                while leaves.len() < MAX_LEAVES_PER_REQUEST {
                    let Some(leaf) = self.leaves.pop_front() else {
                        break;
                    };
                    leaves.push(leaf);
                }
                size += LEAF_INDEX_LEN * leaves.len();
            }

            let mut want = Vec::new();
            let mut want_size = 0;
            while want.len() < MAX_KEYS_PER_REQUEST {
                let Some(key) = self.want.pop_front() else {
                    break;
                };
                let len = encoded_len(&key);
                if want_size + len > WANT_BUDGET.min(self.budget) && !want.is_empty() {
                    self.want.push_front(key);
                    break;
                }
                want_size += len;
                want.push(key);
            }
            size += want_size;

            let mut push = Vec::new();
            while push.len() < MAX_KEYS_PER_REQUEST {
                let Some(key) = self.push.pop_front() else {
                    break;
                };
                // Read now rather than when queued: the replica may have merged since.
                let Some(state) = source.state(&key) else {
                    continue;
                };
                let len = encoded_len(&(&key, &state));
                // The first state goes even when alone it exceeds the budget.
                if size + len > self.budget && !push.is_empty() {
                    self.push.push_front(key);
                    break;
                }
                size += len;
                push.push((key, state));
            }

            if leaves.is_empty() && want.is_empty() && push.is_empty() {
                // Only vanished states were queued; the queues are shorter now, so go again.
                continue;
            }
            self.stats.keys_sent += push.len() as u64;
            self.asked_leaves = leaves.clone();
            self.asked_want = want.clone();
            return Some(SyncMessage::Repair {
                leaves,
                after,
                push,
                want,
            });
        }
    }
}

/// The responder's side: stateless, one reply per request (every request carries what the
/// responder needs). Returns the reply, `None` for a malformed or out-of-range request (and for
/// replies sent as requests), and the pushed states to merge locally.
pub fn respond(
    source: &impl SyncSource,
    request: SyncMessage,
) -> (Option<SyncMessage>, Vec<(StoreKey, KeyState)>) {
    respond_within(source, request, MESSAGE_BUDGET)
}

fn respond_within(
    source: &impl SyncSource,
    request: SyncMessage,
    budget: usize,
) -> (Option<SyncMessage>, Vec<(StoreKey, KeyState)>) {
    match request {
        SyncMessage::Root { root } => {
            let merkle = source.merkle();
            let reply = if merkle.root() == root {
                SyncMessage::InSync
            } else {
                SyncMessage::Children {
                    hashes: prefixes(merkle.children(0, 0)),
                }
            };
            (Some(reply), Vec::new())
        }
        SyncMessage::GetChildren { level, nodes } => {
            (children_of(source.merkle(), level, &nodes), Vec::new())
        }
        SyncMessage::Repair {
            leaves,
            after,
            push,
            want,
        } => {
            let acceptable = leaves.len() <= MAX_LEAVES_PER_REQUEST
                && push.len() <= MAX_KEYS_PER_REQUEST
                && want.len() <= MAX_KEYS_PER_REQUEST
                && push.iter().all(|(key, state)| kind_matches(key, state));
            if !acceptable {
                return (None, Vec::new());
            }
            let reply = repaired(source, &leaves, after.as_ref(), &want, budget);
            (Some(reply), push)
        }
        SyncMessage::InSync | SyncMessage::Children { .. } | SyncMessage::Repaired { .. } => {
            (None, Vec::new())
        }
    }
}

fn children_of(merkle: &MerkleIndex, level: u8, nodes: &[u16]) -> Option<SyncMessage> {
    let level = usize::from(level);
    if level >= DEPTH || nodes.is_empty() || nodes.len() > MAX_NODES_PER_REQUEST {
        return None;
    }
    let width = FANOUT.pow(level as u32);
    if nodes.iter().any(|&node| usize::from(node) >= width) {
        return None;
    }
    let hashes = nodes
        .iter()
        .flat_map(|&node| prefixes(merkle.children(level, usize::from(node))))
        .collect();
    Some(SyncMessage::Children { hashes })
}

/// Answers wanted keys first, then fills what is left of the budget with key lists. Always
/// answers at least one wanted key or one key (or complete leaf), so every round makes progress.
fn repaired(
    source: &impl SyncSource,
    leaves: &[u16],
    after: Option<&StoreKey>,
    want: &[StoreKey],
    budget: usize,
) -> SyncMessage {
    let mut size = RESERVE;
    let mut states = Vec::new();
    let mut answered = 0;
    for key in want {
        if let Some(state) = source.state(key) {
            let len = encoded_len(&(key, &state));
            if size + len > budget && answered > 0 {
                break;
            }
            size += len;
            states.push((key.clone(), state));
        }
        answered += 1;
    }

    let mut progress = answered > 0;
    let mut keys = Vec::new();
    'leaves: for (i, &leaf) in leaves.iter().enumerate() {
        size += LEAF_OVERHEAD;
        if size > budget && progress {
            break;
        }
        let mut list = source.leaf_keys(leaf);
        list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let resume = if i == 0 { after } else { None };
        let mut entry = LeafKeys {
            leaf,
            keys: Vec::new(),
            complete: true,
        };
        for (key, hash) in list {
            if resume.is_some_and(|after| key <= *after) {
                continue;
            }
            let len = encoded_len(&key) + hash.len();
            if size + len > budget && progress {
                if !entry.keys.is_empty() {
                    entry.complete = false;
                    keys.push(entry);
                }
                break 'leaves;
            }
            size += len;
            entry.keys.push((key, hash));
            progress = true;
        }
        keys.push(entry);
        progress = true;
    }
    SyncMessage::Repaired {
        keys,
        states,
        answered: answered as u32,
    }
}

/// States of the wrong kind for their keyspace come only from a corrupt or hostile peer: merging
/// one into an absent key would store it as is.
fn kind_matches(key: &StoreKey, state: &KeyState) -> bool {
    matches!(
        (key.space, state),
        (Keyspace::Kv, KeyState::Register(_)) | (Keyspace::Sets, KeyState::Set(_))
    )
}

fn prefix(hash: &[u8; 32]) -> HashPrefix {
    let mut out = [0; 8];
    out.copy_from_slice(&hash[..8]);
    out
}

fn prefixes(nodes: &[Leaf]) -> Vec<HashPrefix> {
    nodes.iter().map(|node| prefix(&node.hash)).collect()
}

fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    // Sizing these plain data types cannot fail.
    postcard::experimental::serialized_size(value).unwrap_or_default()
}

/// A replica held in memory, with its Merkle index: the [`SyncSource`] of tests, benchmarks and
/// simulations.
#[derive(Clone, Debug)]
pub struct MemoryReplica {
    merkle: MerkleIndex,
    /// Per leaf, each key's state and item hash.
    leaves: Vec<BTreeMap<StoreKey, (KeyState, [u8; 32])>>,
    len: usize,
}

impl Default for MemoryReplica {
    fn default() -> Self {
        MemoryReplica {
            merkle: MerkleIndex::default(),
            leaves: vec![BTreeMap::new(); LEAVES],
            len: 0,
        }
    }
}

impl MemoryReplica {
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges `state` into `key`'s state (or stores it, for a new key) and updates the index;
    /// returns whether anything changed.
    pub fn merge(&mut self, key: StoreKey, state: KeyState) -> bool {
        let leaf = &mut self.leaves[usize::from(merkle::bucket_of(&key))];
        match leaf.get_mut(&key) {
            Some((current, hash)) => {
                if !current.merge(&state) {
                    return false;
                }
                self.merkle.update(&key, Some(*hash), current);
                *hash = merkle::item_hash(&key, current);
            }
            None => {
                self.merkle.update(&key, None, &state);
                let hash = merkle::item_hash(&key, &state);
                leaf.insert(key, (state, hash));
                self.len += 1;
            }
        }
        true
    }

    pub fn get(&self, key: &StoreKey) -> Option<&KeyState> {
        self.leaves[usize::from(merkle::bucket_of(key))]
            .get(key)
            .map(|(state, _)| state)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl SyncSource for MemoryReplica {
    fn merkle(&self) -> &MerkleIndex {
        &self.merkle
    }

    fn leaf_keys(&self, leaf: u16) -> Vec<(StoreKey, HashPrefix)> {
        self.leaves[usize::from(leaf)]
            .iter()
            .map(|(key, (_, hash))| (key.clone(), prefix(hash)))
            .collect()
    }

    fn state(&self, key: &StoreKey) -> Option<KeyState> {
        self.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{NodeId, Timestamp};
    use crate::crdt::{LwwRegister, OrSet, Value};
    use proptest::prelude::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn register(ts: u64, origin: &str, value: &str) -> KeyState {
        KeyState::Register(LwwRegister::write(
            Timestamp::from_raw(ts),
            node(origin),
            Some(Value {
                content_type: "text/plain".into(),
                data: value.as_bytes().to_vec(),
            }),
        ))
    }

    fn replica(keys: impl IntoIterator<Item = (String, u64)>) -> MemoryReplica {
        let mut r = MemoryReplica::new();
        for (name, ts) in keys {
            r.merge(StoreKey::kv(name), register(ts, "n1", "v"));
        }
        r
    }

    /// What a wire would do to a message: encode it, check the bound, decode it.
    fn carry(message: SyncMessage, bound: usize, largest: &mut usize) -> SyncMessage {
        let bytes = postcard::to_stdvec(&message).unwrap();
        assert_eq!(bytes.len(), message.encoded_len());
        assert!(
            bytes.len() <= bound,
            "a message of {} bytes exceeds {bound}",
            bytes.len()
        );
        *largest = (*largest).max(bytes.len());
        postcard::from_bytes(&bytes).unwrap()
    }

    struct Outcome {
        stats: SyncStats,
        largest: usize,
    }

    /// Runs one exchange, `a` initiating, merging each side's outputs as a driver would.
    fn exchange(a: &mut MemoryReplica, b: &mut MemoryReplica, budget: usize) -> Outcome {
        // Descent messages are bounded by their node count, not by the budget.
        let bound = budget.max(MAX_NODES_PER_REQUEST * FANOUT * 8 + RESERVE);
        let mut largest = 0;
        let (mut session, mut request) = SyncSession::start_within(a, budget);
        loop {
            let request_in = carry(request, bound, &mut largest);
            let (reply, merges) = respond_within(b, request_in, budget);
            for (key, state) in merges {
                b.merge(key, state);
            }
            let reply = carry(reply.expect("a well-formed request"), bound, &mut largest);
            let step = session.handle(a, reply);
            for (key, state) in step.merge {
                a.merge(key, state);
            }
            if step.done {
                assert!(step.send.is_none());
                break;
            }
            request = step.send.expect("a session that is not done sends");
            assert!(
                session.stats().rounds < 100_000,
                "the exchange does not end"
            );
        }
        assert!(!session.stats().aborted);
        Outcome {
            stats: session.stats(),
            largest,
        }
    }

    fn assert_converged(a: &MemoryReplica, b: &MemoryReplica) {
        assert_eq!(a.merkle().root(), b.merkle().root());
        assert_eq!(a.len(), b.len());
    }

    fn keys(range: std::ops::Range<u32>) -> impl Iterator<Item = (String, u64)> {
        range.map(|i| (format!("key-{i}"), 1))
    }

    #[test]
    fn identical_replicas_finish_in_one_round_trip() {
        let mut a = replica(keys(0..200));
        let mut b = a.clone();
        let out = exchange(&mut a, &mut b, MESSAGE_BUDGET);
        assert_eq!(out.stats.rounds, 1);
        assert_eq!(out.stats.keys_sent + out.stats.keys_received, 0);
        assert!(out.stats.bytes() < 100, "{} bytes", out.stats.bytes());
    }

    #[test]
    fn keys_missing_on_either_side_are_copied_both_ways() {
        let mut a = replica(keys(0..300));
        let mut b = replica(keys(20..320));
        let out = exchange(&mut a, &mut b, MESSAGE_BUDGET);
        assert_converged(&a, &b);
        assert_eq!(a.len(), 320);
        assert_eq!(out.stats.keys_sent, 20);
        assert_eq!(out.stats.keys_received, 20);
        // Root, three inner levels, the leaves' key lists, the states.
        assert_eq!(out.stats.rounds, 6);
    }

    #[test]
    fn conflicting_versions_converge_on_the_later_write_on_both_sides() {
        let mut a = replica(keys(0..100));
        let mut b = a.clone();
        let (older, newer) = (StoreKey::kv("key-7"), StoreKey::kv("key-8"));
        // b wrote key-7 later; a wrote key-8 later.
        b.merge(older.clone(), register(9, "n2", "b wins"));
        a.merge(older.clone(), register(5, "n1", "a loses"));
        a.merge(newer.clone(), register(12, "n1", "a wins"));
        b.merge(newer.clone(), register(11, "n2", "b loses"));
        exchange(&mut a, &mut b, MESSAGE_BUDGET);
        assert_converged(&a, &b);
        for r in [&a, &b] {
            assert_eq!(r.get(&older), Some(&register(9, "n2", "b wins")));
            assert_eq!(r.get(&newer), Some(&register(12, "n1", "a wins")));
        }
    }

    #[test]
    fn disjoint_key_sets_end_up_united() {
        let mut a = replica(keys(0..500));
        let mut b = replica(keys(500..900));
        exchange(&mut a, &mut b, MESSAGE_BUDGET);
        assert_converged(&a, &b);
        assert_eq!(a.len(), 900);
    }

    fn big_replica(n: u32) -> MemoryReplica {
        let value = "x".repeat(1000);
        let mut r = MemoryReplica::new();
        for i in 0..n {
            r.merge(
                StoreKey::kv(format!("key-{i}")),
                register(u64::from(i) + 1, "n1", &value),
            );
        }
        r
    }

    #[test]
    fn an_empty_replica_fetches_5000_keys_in_bounded_chunks() {
        let mut a = MemoryReplica::new();
        let mut b = big_replica(5000);
        let out = exchange(&mut a, &mut b, MESSAGE_BUDGET);
        assert_converged(&a, &b);
        assert_eq!(out.stats.keys_received, 5000);
        assert!(out.largest <= MESSAGE_BUDGET, "{}", out.largest);
        // About 5 MB of states cannot travel in one message.
        assert!(out.stats.rounds > 8, "{} rounds", out.stats.rounds);
    }

    #[test]
    fn a_full_replica_pushes_5000_keys_to_an_empty_one_in_bounded_chunks() {
        let mut a = big_replica(5000);
        let mut b = MemoryReplica::new();
        let out = exchange(&mut a, &mut b, MESSAGE_BUDGET);
        assert_converged(&a, &b);
        assert_eq!(out.stats.keys_sent, 5000);
        assert!(out.largest <= MESSAGE_BUDGET, "{}", out.largest);
        assert!(out.stats.rounds > 8, "{} rounds", out.stats.rounds);
    }

    /// Names (beyond `first`) of keys that land in the same leaf as `first`.
    fn same_leaf_names(first: &str, count: usize) -> Vec<String> {
        let leaf = merkle::bucket_of(&StoreKey::kv(first));
        let mut names = vec![first.to_string()];
        let mut i = 0u64;
        while names.len() <= count {
            let name = format!("collide-{i}");
            if merkle::bucket_of(&StoreKey::kv(name.as_str())) == leaf {
                names.push(name);
            }
            i += 1;
        }
        names
    }

    #[test]
    fn one_item_per_message_still_converges_resuming_inside_a_leaf() {
        // A zero budget leaves room for one state or one key per message, so a leaf's key list
        // arrives over several replies and each resumes after the last key received.
        let crowded = same_leaf_names("crowded", 3);
        let mut a = replica(keys(0..40));
        let mut b = replica(keys(20..60));
        for name in &crowded {
            b.merge(StoreKey::kv(name.as_str()), register(3, "n2", "b"));
        }
        a.merge(StoreKey::kv(crowded[1].as_str()), register(4, "n1", "a"));
        let out = exchange(&mut a, &mut b, 0);
        assert_converged(&a, &b);
        assert_eq!(
            b.get(&StoreKey::kv(crowded[1].as_str())),
            Some(&register(4, "n1", "a"))
        );
        assert!(out.stats.rounds > 40, "{} rounds", out.stats.rounds);
    }

    #[test]
    fn set_states_merge_adds_from_both_sides() {
        let key = StoreKey::set("colours");
        let mut a = replica(keys(0..50));
        let mut b = a.clone();
        let mut set_a = OrSet::new();
        set_a.add(&node("n1"), "red");
        set_a.add(&node("n1"), "green");
        let mut set_b = OrSet::new();
        set_b.add(&node("n2"), "blue");
        a.merge(key.clone(), KeyState::Set(set_a));
        b.merge(key.clone(), KeyState::Set(set_b));
        let mut only_b = OrSet::new();
        only_b.add(&node("n2"), "x");
        b.merge(StoreKey::set("only-b"), KeyState::Set(only_b));
        exchange(&mut a, &mut b, MESSAGE_BUDGET);
        assert_converged(&a, &b);
        for r in [&a, &b] {
            let Some(KeyState::Set(set)) = r.get(&key) else {
                panic!("the set is missing")
            };
            assert_eq!(set.elements().collect::<Vec<_>>(), ["blue", "green", "red"]);
            assert!(r.get(&StoreKey::set("only-b")).is_some());
        }
    }

    #[test]
    fn the_responder_rejects_hostile_requests() {
        let r = replica(keys(0..100));
        let reject = |request: SyncMessage| {
            let (reply, merges) = respond(&r, request);
            assert!(reply.is_none() && merges.is_empty());
        };
        for (level, nodes) in [
            (4, vec![0]),
            (255, vec![0]),
            (0, vec![1]),
            (1, vec![16]),
            (3, vec![4096]),
            (3, vec![u16::MAX]),
            (2, vec![]),
            (1, vec![0; MAX_NODES_PER_REQUEST + 1]),
        ] {
            reject(SyncMessage::GetChildren { level, nodes });
        }
        let repair = |leaves: Vec<u16>, push, want| SyncMessage::Repair {
            leaves,
            after: None,
            push,
            want,
        };
        reject(repair(vec![0; MAX_LEAVES_PER_REQUEST + 1], vec![], vec![]));
        reject(repair(
            vec![],
            vec![],
            vec![StoreKey::kv("k"); MAX_KEYS_PER_REQUEST + 1],
        ));
        let pushed = (StoreKey::kv("k"), register(1, "n1", "v"));
        reject(repair(
            vec![],
            vec![pushed; MAX_KEYS_PER_REQUEST + 1],
            vec![],
        ));
        // A set state under a kv key.
        reject(repair(
            vec![],
            vec![(StoreKey::kv("k"), KeyState::Set(OrSet::new()))],
            vec![],
        ));
        // Replies are not requests.
        reject(SyncMessage::InSync);
        reject(SyncMessage::Children { hashes: vec![] });
        reject(SyncMessage::Repaired {
            keys: vec![],
            states: vec![],
            answered: 0,
        });
        // Odd but harmless requests are answered.
        let (reply, _) = respond(
            &r,
            SyncMessage::Repair {
                leaves: vec![7, 7, 3],
                after: Some(StoreKey::set("zzz")),
                push: vec![],
                want: vec![StoreKey::kv("absent")],
            },
        );
        assert!(matches!(
            reply,
            Some(SyncMessage::Repaired { answered: 1, .. })
        ));
    }

    #[test]
    fn the_initiator_gives_up_on_replies_that_do_not_fit() {
        let a = replica(keys(0..10));
        let wrong_replies = [
            SyncMessage::Children {
                hashes: vec![[0; 8]; 3],
            },
            SyncMessage::Root {
                root: Leaf::default(),
            },
            SyncMessage::Repaired {
                keys: vec![],
                states: vec![],
                answered: 5,
            },
        ];
        for reply in wrong_replies {
            let (mut session, _) = SyncSession::start(&a);
            let step = session.handle(&a, reply);
            assert!(step.done && step.send.is_none());
            assert!(session.stats().aborted);
            // Further replies are ignored.
            assert!(session.handle(&a, SyncMessage::InSync).done);
        }
    }

    #[test]
    fn the_initiator_drops_states_of_the_wrong_kind() {
        let a = replica(keys(0..10));
        let b = replica(keys(5..10));
        let (mut session, request) = SyncSession::start(&a);
        let mut reply = respond(&b, request).0.unwrap();
        // Walk down to the first Repair, then answer it with a state of the wrong kind.
        let leaf = loop {
            match session.handle(&a, reply).send {
                Some(SyncMessage::Repair { leaves, .. }) => break leaves[0],
                Some(request) => reply = respond(&b, request).0.unwrap(),
                None => panic!("the replicas differ, so a repair follows"),
            }
        };
        let hostile = SyncMessage::Repaired {
            keys: vec![LeafKeys {
                leaf,
                keys: vec![],
                complete: true,
            }],
            states: vec![(StoreKey::kv("key-1"), KeyState::Set(OrSet::new()))],
            answered: 0,
        };
        let step = session.handle(&a, hostile);
        assert!(step.merge.is_empty());
        assert!(!session.stats().aborted);
    }

    /// Built once: a replica costs a few milliseconds, a property test runs 256 cases.
    fn small_replica() -> &'static MemoryReplica {
        static REPLICA: std::sync::OnceLock<MemoryReplica> = std::sync::OnceLock::new();
        REPLICA.get_or_init(|| replica(keys(0..20)))
    }

    proptest! {
        #[test]
        fn the_responder_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let r = small_replica();
            if let Ok(request) = postcard::from_bytes::<SyncMessage>(&bytes) {
                let _ = respond(r, request);
            }
        }

        #[test]
        fn the_responder_survives_arbitrary_node_requests(
            level in any::<u8>(),
            nodes in prop::collection::vec(any::<u16>(), 0..64),
        ) {
            let r = small_replica();
            let _ = respond(r, SyncMessage::GetChildren { level, nodes });
        }

        #[test]
        fn the_responder_survives_arbitrary_repairs(
            leaves in prop::collection::vec(any::<u16>(), 0..64),
            after in proptest::option::of("[a-z0-9-]{0,8}"),
            want in prop::collection::vec("[a-z0-9-]{0,8}", 0..16),
        ) {
            let r = small_replica();
            let _ = respond(r, SyncMessage::Repair {
                leaves,
                after: after.map(StoreKey::kv),
                push: vec![],
                want: want.into_iter().map(StoreKey::kv).collect(),
            });
        }
    }
}
