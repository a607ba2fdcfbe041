//! Replicated data types and their merge laws. Pure: no I/O, no clocks, no randomness; callers
//! pass the timestamps and dots an operation needs.
//!
//! Every local operation returns a *delta*: a small state of the same type that, merged into any
//! replica, has the operation's effect. Merges are commutative, associative and idempotent, so
//! deltas and states may arrive in any order, any number of times (see `tests/crdt_laws.rs`).

mod context;
mod dot_index;
mod lww;
mod orset;
mod pncounter;
pub mod set_merge;
mod set_races;
mod state_codec;

pub use context::CausalContext;
pub use lww::{LwwRegister, Value};
pub use orset::OrSet;
pub use pncounter::{CounterOverflow, PnCounter};
pub use set_merge::{ElementChange, SetChange, SetReplica};
pub use set_races::LostDots;

/// What a merge did to the replica it was merged into.
#[must_use = "a merge says whether the replica changed"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    Changed,
    /// The replica already held everything merged in.
    Unchanged,
}

impl Merged {
    pub fn changed(self) -> bool {
        self == Merged::Changed
    }
}

/// Two states of different kinds (a register and a set) cannot be merged: a key's keyspace fixes
/// its kind, so this can only come from a corrupt or lying peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot merge states of different kinds")]
pub struct KindMismatch;

/// The replicated state of one key, whichever keyspace it lives in. Encoded by
/// `state_codec.rs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    Register(LwwRegister),
    Set(OrSet),
    Counter(PnCounter),
}

impl KeyState {
    /// Merges `other` into `self`. States of different kinds never share a key (the keyspace is part
    /// of the key), so a mismatch means a corrupt peer: `self` is left as it was.
    pub fn merge(&mut self, other: &KeyState) -> Result<Merged, KindMismatch> {
        match (self, other) {
            (KeyState::Register(a), KeyState::Register(b)) => Ok(a.merge(b)),
            (KeyState::Set(a), KeyState::Set(b)) => Ok(a.merge(b)),
            (KeyState::Counter(a), KeyState::Counter(b)) => Ok(a.merge(b)),
            _ => Err(KindMismatch),
        }
    }

    /// Whether the state is a live value at wall time `now_ms`: a register that is neither a
    /// tombstone nor expired, or any set or counter (an empty set exists).
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        match self {
            KeyState::Register(r) => r.live_value(now_ms).is_some(),
            KeyState::Set(_) | KeyState::Counter(_) => true,
        }
    }
}
