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

pub use context::CausalContext;
pub use lww::{LwwRegister, Value};
pub use orset::OrSet;

use serde::{Deserialize, Serialize};

/// The replicated state of one key, whichever keyspace it lives in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Register(LwwRegister),
    Set(OrSet),
}

impl KeyState {
    /// Merges `other` into `self`. States of different kinds never share a key (the keyspace is part
    /// of the key), so a mismatch means a corrupt peer; it is ignored and reported as no change.
    pub fn merge(&mut self, other: &KeyState) -> bool {
        match (self, other) {
            (KeyState::Register(a), KeyState::Register(b)) => a.merge(b),
            (KeyState::Set(a), KeyState::Set(b)) => a.merge(b),
            _ => false,
        }
    }
}
