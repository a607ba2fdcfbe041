//! What the core tells watchers: one [`KeyChange`] per merge that changed a key's state (a
//! client's write, a peer's rumor or an exchange), and per value dropped on a peer's word.
//! Recording is off until the driver asks for it (a core driven by tests or the simulator would
//! otherwise keep every change); the driver takes the changes with each group of writes and
//! publishes them once the group is durable, so a change undone by a failed sync is never seen.
//!
//! Pure: builds the records from states; never touches the store or a clock.

use super::Node;
use crate::clock::{NodeId, Timestamp};
use crate::crdt::KeyState;
use crate::store::{Store, StoreKey};

/// One change of a key's state on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    pub key: StoreKey,
    /// A register's write timestamp; for a set or a counter, this node's clock when it merged.
    pub timestamp: Timestamp,
    /// Who made the change: a register's writer; for a set or a counter, the replica whose
    /// write it was when known (a rumor's origin), else `None` (an anti-entropy repair).
    pub node: Option<NodeId>,
    /// The key reads as deleted now (a register's tombstone, or a value dropped).
    pub deleted: bool,
    /// When the new value expires (`PUT ?ttl=`).
    pub expires: Option<Timestamp>,
}

impl KeyChange {
    /// The change that made `key` hold `state`, at this node's clock `clock`, brought by
    /// `origin` (when known).
    pub(super) fn to(
        key: &StoreKey,
        state: Option<&KeyState>,
        clock: Timestamp,
        origin: Option<&NodeId>,
    ) -> KeyChange {
        let (timestamp, node, deleted, expires) = match state {
            Some(KeyState::Register(r)) => {
                (r.timestamp, Some(r.node.clone()), r.is_tombstone(), r.expires)
            }
            _ => (clock, origin.cloned(), false, None),
        };
        KeyChange {
            key: key.clone(),
            timestamp,
            node,
            deleted,
            expires,
        }
    }
}

impl<S: Store> Node<S> {
    /// Starts keeping a [`KeyChange`] for every change, until taken with
    /// [`Node::take_changes`].
    pub fn record_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The changes recorded since the last call (none unless recording).
    pub fn take_changes(&mut self) -> Vec<KeyChange> {
        match &mut self.changes {
            Some(changes) => std::mem::take(changes),
            None => Vec::new(),
        }
    }

    /// Records a change, if recording (callers check `self.changes` first to skip building it).
    pub(super) fn changed(&mut self, change: KeyChange) {
        if let Some(changes) = &mut self.changes {
            changes.push(change);
        }
    }
}
