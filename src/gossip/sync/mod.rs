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
//! An initiator that holds nothing at all (a new or wiped replica catching up) skips the key
//! lists: `FetchLeaves { leaves, after }` asks for every state of the differing leaves and
//! `LeafStates` streams them in leaf and key order, one budget per reply, so that a catch-up moves
//! each state once and nothing else. A replica that holds some keys compares key lists even for
//! its empty leaves: fetching those whole let the simulator find deleted values coming back
//! (`sim_dst` seeds 815 and 974, not yet understood).
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
use crate::store::{Leaf, StoreKey};
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
    /// Request: every state of `leaves` (the first one resumed strictly after `after`), from an
    /// initiator that holds nothing: the states come at once, without key lists or wanted keys.
    FetchLeaves {
        leaves: Vec<u16>,
        after: Option<StoreKey>,
    },
    /// Reply to `FetchLeaves`: states of the requested leaves, in their order and sorted by key
    /// within each; the first `complete` leaves are covered whole, the next one up to the last
    /// state of it.
    LeafStates { states: PackedStates, complete: u32 },
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

mod packed;
mod replica;
mod respond;
mod session;
#[cfg(test)]
mod tests;

pub use packed::PackedStates;
pub use replica::MemoryReplica;
pub use respond::respond;
#[cfg(test)]
use respond::respond_within;
pub use session::SyncSession;

/// States of the wrong kind for their keyspace come only from a corrupt or hostile peer: merging
/// one into an absent key would store it as is.
fn kind_matches(key: &StoreKey, state: &KeyState) -> bool {
    key.holds(state)
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
