//! What one write-ahead log entry holds and how it is encoded: a delta to merge again, or a key a
//! batch removed, each with the key's item hash before the change (its [`Prior`]).
//!
//! The prior hash lets a repair after a crash correct a persisted Merkle leaf by XOR (take out
//! what the leaf held for the key, put in what the database holds now) instead of recomputing it
//! from every record of the leaf (see `node::index_repair`). Entries written before layout 11
//! carry none and read as [`Prior::Unknown`].
//!
//! Owns the entry formats; never reads or writes a file (see `wal.rs`).

use super::{legacy, record, StoreError, StoreKey};
use crate::clock::{ReplicaId, Timestamp};
use crate::crdt::KeyState;
use serde::{Deserialize, Serialize};

/// A delta entry written since storage epochs (layout 5), without a prior hash. Entries written
/// before began with their key's keyspace index (0 or 1), so the formats never mix up.
const LOGGED_FORMAT: u8 = 2;
/// A removal entry of layout 10, without a prior hash.
const REMOVED_FORMAT: u8 = 3;
/// A delta entry with the key's prior hash (layout 11).
const LOGGED_WITH_PRIOR: u8 = 4;
/// A removal entry with the key's prior hash (layout 11).
const REMOVED_WITH_PRIOR: u8 = 5;

/// A delta as the write-ahead log keeps it: enough to redo its merge and to restore the clock and
/// the per-origin sequence it advanced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedDelta {
    pub key: StoreKey,
    pub delta: KeyState,
    /// The HLC high-water mark once the delta was applied.
    pub hlc: Timestamp,
    /// The origin replica and its sequence number for this delta, when it has one.
    pub origin_seq: Option<(ReplicaId, u64)>,
}

/// The borrowed form of [`LoggedDelta`], encoded identically, so the core logs a delta without
/// copying it.
#[derive(Serialize)]
pub struct LoggedDeltaRef<'a> {
    pub key: &'a StoreKey,
    pub delta: &'a KeyState,
    pub hlc: Timestamp,
    pub origin_seq: Option<(&'a ReplicaId, u64)>,
}

/// What a log entry says of its key's item hash ([`super::merkle::item_hash`]) just before the
/// change it records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prior {
    /// This hash; `None`: the key had no record.
    Known(Option<[u8; 32]>),
    /// An entry written before prior hashes were logged.
    Unknown,
}

/// What a write-ahead log entry holds.
pub enum LogEntry {
    /// A delta to merge again.
    Delta(LoggedDelta, Prior),
    /// A key whose record a batch removed: nothing to redo, but its Merkle leaf may need repair.
    Removed(StoreKey, Prior),
}

fn push_prior(out: &mut Vec<u8>, prior: Option<&[u8; 32]>) {
    match prior {
        Some(hash) => {
            out.push(1);
            out.extend_from_slice(hash);
        }
        None => out.push(0),
    }
}

/// Splits a known prior hash off the front of `bytes`.
fn split_prior(bytes: &[u8]) -> Result<(Prior, &[u8]), StoreError> {
    let bad = || StoreError::Corrupt("bad prior hash in a log entry".into());
    match bytes.split_first() {
        Some((0, rest)) => Ok((Prior::Known(None), rest)),
        Some((1, rest)) => {
            let hash: [u8; 32] = rest
                .get(..32)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?;
            Ok((Prior::Known(Some(hash)), &rest[32..]))
        }
        _ => Err(bad()),
    }
}

fn decode_key(bytes: &[u8]) -> Result<StoreKey, StoreError> {
    StoreKey::decode(bytes).ok_or_else(|| StoreError::Corrupt("bad removal log entry".into()))
}

impl LogEntry {
    /// The log entry of a removal of `key`, whose item hash was `prior` (`None`: no record).
    pub fn removed(key: &StoreKey, prior: Option<&[u8; 32]>) -> Vec<u8> {
        let mut out = vec![REMOVED_WITH_PRIOR];
        push_prior(&mut out, prior);
        out.extend(key.encode());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<LogEntry, StoreError> {
        match bytes.split_first() {
            Some((&REMOVED_WITH_PRIOR, rest)) => {
                let (prior, key) = split_prior(rest)?;
                Ok(LogEntry::Removed(decode_key(key)?, prior))
            }
            Some((&LOGGED_WITH_PRIOR, rest)) => {
                let (prior, delta) = split_prior(rest)?;
                Ok(LogEntry::Delta(record::from_bytes(delta)?, prior))
            }
            Some((&REMOVED_FORMAT, key)) => Ok(LogEntry::Removed(decode_key(key)?, Prior::Unknown)),
            _ => LoggedDelta::decode(bytes).map(|delta| LogEntry::Delta(delta, Prior::Unknown)),
        }
    }
}

impl LoggedDeltaRef<'_> {
    /// The log entry of this delta, merged into a key whose item hash was `prior` (`None`: no
    /// record).
    pub fn encode(&self, prior: Option<&[u8; 32]>) -> Vec<u8> {
        let mut out = vec![LOGGED_WITH_PRIOR];
        push_prior(&mut out, prior);
        out.extend(record::to_bytes(self));
        out
    }
}

impl LoggedDelta {
    /// Decodes a delta entry without a prior hash: written before layout 11 (format 2), or
    /// before storage epochs.
    pub fn decode(bytes: &[u8]) -> Result<LoggedDelta, StoreError> {
        match bytes.split_first() {
            Some((&LOGGED_FORMAT, rest)) => record::from_bytes(rest),
            _ => legacy::decode_logged(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta() -> (StoreKey, KeyState) {
        let state = KeyState::Counter(Default::default());
        (StoreKey::counter("c"), state)
    }

    #[test]
    fn entries_carry_their_prior_hash_and_older_formats_read_as_unknown() {
        let (key, state) = delta();
        let logged = LoggedDeltaRef {
            key: &key,
            delta: &state,
            hlc: Timestamp::new(5, 0),
            origin_seq: None,
        };
        for prior in [None, Some([7u8; 32])] {
            match LogEntry::decode(&logged.encode(prior.as_ref())).unwrap() {
                LogEntry::Delta(d, p) => {
                    assert_eq!((d.key, d.delta), (key.clone(), state.clone()));
                    assert_eq!(p, Prior::Known(prior));
                }
                LogEntry::Removed(..) => panic!("a delta decoded as a removal"),
            }
            match LogEntry::decode(&LogEntry::removed(&key, prior.as_ref())).unwrap() {
                LogEntry::Removed(k, p) => assert_eq!((k, p), (key.clone(), Prior::Known(prior))),
                LogEntry::Delta(..) => panic!("a removal decoded as a delta"),
            }
        }
        // Layout 10's formats: a delta (2) and a removal (3), with no prior hash.
        let mut old_delta = vec![LOGGED_FORMAT];
        old_delta.extend(record::to_bytes(&logged));
        assert!(matches!(
            LogEntry::decode(&old_delta).unwrap(),
            LogEntry::Delta(_, Prior::Unknown)
        ));
        let mut old_removal = vec![REMOVED_FORMAT];
        old_removal.extend(key.encode());
        assert!(matches!(
            LogEntry::decode(&old_removal).unwrap(),
            LogEntry::Removed(_, Prior::Unknown)
        ));
        // A truncated prior hash is corrupt, never a panic.
        assert!(LogEntry::decode(&[LOGGED_WITH_PRIOR, 1, 2, 3]).is_err());
        assert!(LogEntry::decode(&[REMOVED_WITH_PRIOR]).is_err());
    }
}
