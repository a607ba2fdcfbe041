//! The change feed behind `GET /v1/watch`: the last [`FEED_CAPACITY`] changes this node made
//! durable, numbered by a local sequence, and a signal that wakes watchers when more arrive.
//!
//! The sync thread publishes each group's changes once the group is durable (a change undone by
//! a failed sync is never published). Publishing appends to a ring and bumps a counter; it never
//! waits for a watcher. Each watcher keeps only its position and reads a bounded batch at a time;
//! one that falls further behind than the ring holds gets [`FeedRead::Gone`] and must re-list
//! (like etcd's compacted revision).
//!
//! Sequence numbers start at the wall clock's milliseconds times 2^16 when the process starts,
//! so a position from an earlier run of the node is older than anything this run holds (and is
//! told so) rather than taken for one of this run's.

use crate::node::KeyChange;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Changes kept for watchers that resume or fall behind.
pub const FEED_CAPACITY: usize = 16_384;
/// Most changes looked at per read, so a watcher with a narrow prefix holds the lock briefly.
const SCAN_PER_READ: usize = 1_024;

/// One published change and its position.
#[derive(Clone, Debug)]
pub struct FeedEvent {
    pub seq: u64,
    pub change: Arc<KeyChange>,
}

/// What a watcher reads after its position.
#[derive(Debug)]
pub enum FeedRead {
    /// The matching changes after the position (possibly none), and the position to read from
    /// next.
    Events {
        events: Vec<FeedEvent>,
        through: u64,
    },
    /// Changes after the position are no longer held (or the position was never this run's):
    /// re-list, then follow from `latest`.
    Gone { latest: u64 },
}

struct Ring {
    events: VecDeque<FeedEvent>,
    /// The sequence number the next change gets.
    next: u64,
}

pub struct ChangeFeed {
    ring: Mutex<Ring>,
    /// The last sequence number published.
    latest: watch::Sender<u64>,
    /// The node is stopping: watchers end their streams.
    closed: AtomicBool,
}

impl ChangeFeed {
    /// A feed whose first change gets sequence number `first`.
    pub fn new(first: u64) -> Self {
        ChangeFeed {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                next: first.max(1),
            }),
            latest: watch::Sender::new(first.max(1) - 1),
            closed: AtomicBool::new(false),
        }
    }

    /// Ends every watch: the node is stopping.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Wakes every watcher without changing the position.
        self.latest.send_modify(|_| {});
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A feed numbered from wall time `wall_ms` (see the module doc).
    pub fn starting_at(wall_ms: u64) -> Self {
        Self::new(wall_ms.saturating_mul(1 << 16))
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding the lock leaves a consistent ring: every change is whole.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends durable changes and wakes the watchers.
    pub fn publish(&self, changes: Vec<KeyChange>) {
        if changes.is_empty() {
            return;
        }
        let latest = {
            let mut ring = self.ring();
            for change in changes {
                let seq = ring.next;
                ring.next += 1;
                if ring.events.len() == FEED_CAPACITY {
                    ring.events.pop_front();
                }
                ring.events.push_back(FeedEvent {
                    seq,
                    change: Arc::new(change),
                });
            }
            ring.next - 1
        };
        self.latest.send_replace(latest);
    }

    /// The last sequence number published (a watcher starting now follows from it).
    pub fn latest(&self) -> u64 {
        *self.latest.borrow()
    }

    /// A receiver that changes whenever something is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Up to `max` changes after position `after` that `wanted` accepts.
    pub fn read_after(
        &self,
        after: u64,
        max: usize,
        wanted: impl Fn(&KeyChange) -> bool,
    ) -> FeedRead {
        let ring = self.ring();
        let latest = ring.next - 1;
        let oldest = ring.events.front().map_or(ring.next, |e| e.seq);
        if after > latest || after + 1 < oldest {
            return FeedRead::Gone { latest };
        }
        let start = (after + 1 - oldest) as usize;
        let mut events = Vec::new();
        let mut through = after;
        for event in ring.events.range(start..).take(SCAN_PER_READ) {
            if events.len() == max {
                break;
            }
            through = event.seq;
            if wanted(&event.change) {
                events.push(event.clone());
            }
        }
        FeedRead::Events { events, through }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::store::StoreKey;

    fn change(name: &str) -> KeyChange {
        KeyChange {
            key: StoreKey::kv(name),
            timestamp: Timestamp::new(1, 0),
            node: None,
            deleted: false,
            expires: None,
            applied: Timestamp::new(1, 0),
        }
    }

    fn names(read: FeedRead) -> (Vec<String>, u64) {
        match read {
            FeedRead::Events { events, through } => (
                events.iter().map(|e| e.change.key.name.clone()).collect(),
                through,
            ),
            FeedRead::Gone { latest } => (vec![format!("gone@{latest}")], latest),
        }
    }

    #[test]
    fn a_watcher_reads_what_follows_its_position_filtered_and_bounded() {
        let feed = ChangeFeed::new(100);
        assert_eq!(feed.latest(), 99);
        feed.publish(["a/1", "b/1", "a/2", "a/3"].map(change).to_vec());
        assert_eq!(feed.latest(), 103);
        let a = |c: &KeyChange| c.key.name.starts_with("a/");
        assert_eq!(
            names(feed.read_after(99, 10, a)),
            (vec!["a/1".into(), "a/2".into(), "a/3".into()], 103)
        );
        assert_eq!(
            names(feed.read_after(99, 2, a)),
            (vec!["a/1".into(), "a/2".into()], 102)
        );
        assert_eq!(
            names(feed.read_after(102, 10, a)),
            (vec!["a/3".into()], 103)
        );
        assert_eq!(names(feed.read_after(103, 10, a)), (vec![], 103));
        // A position from the future, or one before this run, is gone.
        assert_eq!(names(feed.read_after(104, 10, a)).0, ["gone@103"]);
        assert_eq!(names(feed.read_after(50, 10, a)).0, ["gone@103"]);
    }

    #[test]
    fn a_watcher_behind_what_the_ring_holds_is_told_to_relist() {
        let feed = ChangeFeed::new(1);
        let all = |_: &KeyChange| true;
        for i in 0..FEED_CAPACITY + 10 {
            feed.publish(vec![change(&format!("k{i}"))]);
        }
        let latest = feed.latest();
        assert_eq!(latest, (FEED_CAPACITY + 10) as u64);
        assert_eq!(
            names(feed.read_after(0, 1, all)).0,
            [format!("gone@{latest}")]
        );
        assert_eq!(
            names(feed.read_after(9, 1, all)).0,
            [format!("gone@{latest}")]
        );
        // The oldest change held is the eleventh.
        assert_eq!(names(feed.read_after(10, 1, all)), (vec!["k10".into()], 11));
    }
}
