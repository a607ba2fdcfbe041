//! Last-writer-wins register: the value written with the greatest (HLC timestamp, node id) wins.
//! A delete is a write of "no value" (a tombstone) and wins or loses by the same rule.
//!
//! A value may carry an expiry (`PUT ?ttl=`): an HLC time fixed when it is written, the same on
//! every replica, from which the register reads as deleted. It is part of the write, so a later
//! write (with or without an expiry) replaces it, and an expired value never comes back: every
//! replica holds the same expiry and compares it with its own clock.

use super::Merged;
use crate::clock::{NodeId, Timestamp};
use serde::{Deserialize, Serialize};

/// The greatest wall time a timestamp holds (48 bits of milliseconds: the year 10889).
const MAX_WALL_MS: u64 = u64::MAX >> 16;

/// A value as the client wrote it: bytes and their `Content-Type`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Value {
    pub content_type: String,
    /// Encoded as bytes, not as a sequence of numbers: the same bytes in postcard, decoded at once.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Field order matters: the derived `Ord` compares timestamp, then node, then the value, then the
/// expiry (the last two only break ties that a correct node never produces, keeping merge
/// deterministic regardless). Encoded by [`super::KeyState`]'s codec (`state_codec.rs`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LwwRegister {
    pub timestamp: Timestamp,
    pub node: NodeId,
    /// `None` is a tombstone.
    pub value: Option<Value>,
    /// From this time on the register reads as deleted (`None`: never).
    pub expires: Option<Timestamp>,
    /// The timestamp of the write its writer held for the key when it made this one (`None`:
    /// none, or a writer that did not say). A write it did not observe and now replaces, or
    /// loses to, was concurrent with it: a conflict (see [`LwwRegister::concurrent_with`]).
    pub observed: Option<Timestamp>,
}

impl LwwRegister {
    /// The delta of writing `value` (or deleting, with `None`) at `timestamp` on `node`. A register
    /// is its own delta: merging it into any replica applies the write.
    pub fn write(timestamp: Timestamp, node: NodeId, value: Option<Value>) -> Self {
        LwwRegister {
            timestamp,
            node,
            value,
            expires: None,
            observed: None,
        }
    }

    /// The same write, made by a writer that held the write stamped `observed` for the key.
    pub fn observing(mut self, observed: Option<Timestamp>) -> Self {
        self.observed = observed;
        self
    }

    /// Whether this write and `other` (a different write of the same key) were made without
    /// either writer having seen the other: last-writer-wins then discards one of them
    /// unseen. A writer that said nothing about what it observed counts as having seen
    /// nothing.
    pub fn concurrent_with(&self, other: &LwwRegister) -> bool {
        let (older, newer) = if self < other {
            (self, other)
        } else {
            (other, self)
        };
        older != newer && newer.observed.is_none_or(|seen| seen < older.timestamp)
    }

    /// The same write, expiring `ttl_ms` after its timestamp (the same logical part, so the
    /// expiry is later than the write whatever the TTL).
    pub fn expiring_after(mut self, ttl_ms: u64) -> Self {
        let at = self
            .timestamp
            .wall_ms()
            .saturating_add(ttl_ms)
            .min(MAX_WALL_MS);
        self.expires = Some(Timestamp::new(at, self.timestamp.logical()));
        self
    }

    /// Holds no value at all: a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Whether the value has expired by wall time `now_ms` (a value expiring at millisecond `e`
    /// is gone from the start of `e`).
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires.is_some_and(|e| e.wall_ms() <= now_ms)
    }

    /// The value a read at wall time `now_ms` sees: none for a tombstone or an expired value.
    pub fn live_value(&self, now_ms: u64) -> Option<&Value> {
        self.value.as_ref().filter(|_| !self.expired_at(now_ms))
    }

    /// The timestamp from which this register is a tombstone for collection purposes: its own
    /// for a delete, its expiry for an expiring value, none for a value that never expires.
    pub fn deleted_from(&self) -> Option<Timestamp> {
        match (&self.value, self.expires) {
            (None, _) => Some(self.timestamp),
            (Some(_), expires) => expires,
        }
    }

    /// The entity tag of the live value a read at `now_ms` sees (`None` for a tombstone or an
    /// expired value): its write's timestamp and node, quoted, as HTTP wants it.
    pub fn etag(&self, now_ms: u64) -> Option<String> {
        self.live_value(now_ms)
            .map(|_| format!("\"{}-{}\"", self.timestamp, self.node))
    }

    /// Keeps the greater of the two writes.
    pub fn merge(&mut self, other: &LwwRegister) -> Merged {
        if *other > *self {
            *self = other.clone();
            Merged::Changed
        } else {
            Merged::Unchanged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(ts: u64, node: &str, v: &str) -> LwwRegister {
        LwwRegister::write(
            Timestamp::from_raw(ts),
            NodeId::new(node).unwrap(),
            Some(Value {
                content_type: "text/plain".into(),
                data: v.as_bytes().to_vec(),
            }),
        )
    }

    #[test]
    fn later_timestamp_wins_then_node_id_breaks_ties() {
        let mut a = reg(5, "n1", "old");
        assert_eq!(a.merge(&reg(6, "n1", "new")), Merged::Changed);
        assert_eq!(a.value.as_ref().unwrap().data, b"new");
        assert_eq!(a.merge(&reg(6, "n2", "tie")), Merged::Changed);
        assert_eq!(a.merge(&reg(6, "n1", "loser")), Merged::Unchanged);
        assert_eq!(a.node.as_str(), "n2");
    }

    #[test]
    fn an_expiring_value_reads_as_deleted_from_its_expiry_and_a_later_write_replaces_it() {
        let expiring = reg(Timestamp::new(1_000, 2).raw(), "n1", "v").expiring_after(5_000);
        assert_eq!(expiring.expires, Some(Timestamp::new(6_000, 2)));
        assert_eq!(expiring.deleted_from(), expiring.expires);
        assert!(expiring.live_value(5_999).is_some() && expiring.etag(5_999).is_some());
        assert!(expiring.live_value(6_000).is_none() && expiring.etag(6_000).is_none());
        // A write after it (before or after the expiry) replaces it, expiry and all.
        let mut a = expiring.clone();
        assert_eq!(
            a.merge(&reg(Timestamp::new(2_000, 0).raw(), "n2", "w")),
            Merged::Changed
        );
        assert_eq!((a.expires, a.deleted_from()), (None, None));
        assert!(a.live_value(1 << 40).is_some());
        // An older write does not revive an expired value.
        let mut b = expiring.clone();
        assert_eq!(
            b.merge(&reg(Timestamp::new(900, 0).raw(), "n2", "old")),
            Merged::Unchanged
        );
        assert!(b.live_value(6_000).is_none());
        // A delete is a tombstone from its own timestamp; a plain value never expires.
        let delete = LwwRegister::write(Timestamp::new(7, 0), NodeId::new("n1").unwrap(), None);
        assert_eq!(delete.deleted_from(), Some(Timestamp::new(7, 0)));
        assert_eq!(reg(5, "n1", "v").deleted_from(), None);
        // An expiry past what a timestamp holds is capped, never wraps.
        let far = reg(Timestamp::new(1_000, 0).raw(), "n1", "v").expiring_after(u64::MAX);
        assert!(far.expires.unwrap() > far.timestamp);
    }

    #[test]
    fn later_delete_wins_over_earlier_write() {
        let mut a = reg(5, "n1", "v");
        let _ = a.merge(&LwwRegister::write(
            Timestamp::from_raw(7),
            NodeId::new("n2").unwrap(),
            None,
        ));
        assert!(a.is_tombstone());
        assert_eq!(a.merge(&reg(6, "n3", "stale")), Merged::Unchanged);
    }
}
