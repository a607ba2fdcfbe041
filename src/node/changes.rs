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
use crate::store::{Store, StoreError, StoreKey};

/// Most expiries announced per tick (the rest follow at the next ticks).
const EXPIRIES_PER_TICK: usize = 1_000;

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
    /// This node's clock when it made the change (for a register, `timestamp` minus this is how
    /// long the write took to arrive here, give or take the two clocks' skew).
    pub applied: Timestamp,
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
            Some(KeyState::Register(r)) => (
                r.timestamp,
                Some(r.node.clone()),
                r.is_tombstone(),
                r.expires,
            ),
            _ => (clock, origin.cloned(), false, None),
        };
        KeyChange {
            key: key.clone(),
            timestamp,
            node,
            deleted,
            expires,
            applied: clock,
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

    /// Records the values that expired since the last call, by wall time `wall_ms`, as
    /// deletions (if recording). Values that expired before recording started, or while the node
    /// was down, are not announced: no watcher was there to be told.
    pub(super) fn announce_expiries(&mut self, wall_ms: u64) -> Result<(), StoreError> {
        if self.changes.is_none() {
            return Ok(());
        }
        // Every value expiring at millisecond `wall_ms` or before is gone.
        let now = Timestamp::new(wall_ms, u16::MAX);
        if self.expiries_announced == Timestamp::ZERO || now <= self.expiries_announced {
            self.expiries_announced = self.expiries_announced.max(now);
            return Ok(());
        }
        let due = self
            .tombstones
            .held_between(self.expiries_announced, now, EXPIRIES_PER_TICK);
        let through = match due.last() {
            Some((ts, _)) if due.len() == EXPIRIES_PER_TICK => *ts,
            _ => now,
        };
        for (expires, key) in due {
            // Held entries are tombstones too, and values may have changed since.
            let Some(KeyState::Register(r)) = self.store.get(&key)? else {
                continue;
            };
            if r.value.is_some() && r.expires == Some(expires) {
                self.changed(KeyChange {
                    key,
                    timestamp: expires,
                    node: Some(r.node),
                    deleted: true,
                    expires: Some(expires),
                    applied: Timestamp::new(wall_ms, 0),
                });
            }
        }
        self.expiries_announced = through;
        Ok(())
    }

    /// Records a change, if recording (callers check `self.changes` first to skip building it).
    pub(super) fn changed(&mut self, change: KeyChange) {
        if let Some(changes) = &mut self.changes {
            changes.push(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Write;
    use crate::store::MemoryStore;

    #[test]
    fn writes_and_expiries_are_recorded_only_once_asked() {
        let mut node = Node::open(MemoryStore::new(), NodeId::new("n1").unwrap()).unwrap();
        node.handle_write(1_000, Write::put_text("quiet", "v"))
            .unwrap();
        assert!(node.take_changes().is_empty());

        node.record_changes();
        node.handle_tick(1_000).unwrap();
        let mut put = Write::put_text("lease", "v");
        if let Write::KvPut { ttl_ms, .. } = &mut put {
            *ttl_ms = Some(2_000);
        }
        let ack = node.handle_write(1_001, put).unwrap();
        node.handle_write(
            1_002,
            Write::KvDelete {
                key: "quiet".into(),
            },
        )
        .unwrap();
        let changes = node.take_changes();
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.key.name.as_str(), c.deleted, c.expires))
            .collect();
        assert_eq!(
            summary,
            [("lease", false, ack.expires), ("quiet", true, None)]
        );
        assert_eq!(changes[0].timestamp, ack.timestamp);

        // Nothing before the expiry; one deletion once it passes, announced once.
        let expires = ack.expires.unwrap();
        node.handle_tick(expires.wall_ms() - 1).unwrap();
        assert!(node.take_changes().is_empty());
        node.handle_tick(expires.wall_ms()).unwrap();
        node.handle_tick(expires.wall_ms() + 500).unwrap();
        let expired = node.take_changes();
        assert_eq!(expired.len(), 1, "{expired:?}");
        assert_eq!(
            (expired[0].key.name.as_str(), expired[0].deleted),
            ("lease", true)
        );
    }
}
