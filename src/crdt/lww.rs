//! Last-writer-wins register: the value written with the greatest (HLC timestamp, node id) wins.
//! A delete is a write of "no value" (a tombstone) and wins or loses by the same rule.

use super::Merged;
use crate::clock::{NodeId, Timestamp};
use serde::{Deserialize, Serialize};

/// A value as the client wrote it: bytes and their `Content-Type`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Value {
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Field order matters: the derived `Ord` compares timestamp, then node, then the value (the last
/// only breaks ties that a correct node never produces, keeping merge deterministic regardless).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LwwRegister {
    pub timestamp: Timestamp,
    pub node: NodeId,
    /// `None` is a tombstone.
    pub value: Option<Value>,
}

impl LwwRegister {
    /// The delta of writing `value` (or deleting, with `None`) at `timestamp` on `node`. A register
    /// is its own delta: merging it into any replica applies the write.
    pub fn write(timestamp: Timestamp, node: NodeId, value: Option<Value>) -> Self {
        LwwRegister {
            timestamp,
            node,
            value,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The entity tag of the live value this register holds (`None` for a tombstone): its write's
    /// timestamp and node, quoted, as HTTP wants it.
    pub fn etag(&self) -> Option<String> {
        self.value
            .as_ref()
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
