//! Who may hold an inbound cluster connection. A connection that has not yet delivered an
//! authentic frame is *pending*: pending connections share a small table, and when it is full
//! a newcomer evicts the pending connection that has been quiet the longest (the one whose last
//! byte arrived earliest), so idle or trickling strangers cannot keep a real peer, whose frame
//! is streaming in, from being heard. A connection that authenticates leaves the table for a
//! separate, larger budget of peer connections. Owns the tables only: no sockets, no clock (the
//! order of "heard" events stands for time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Admission limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Pending (not yet authenticated) connections held at once; a newcomer evicts the quietest.
    /// Each holds at most one frame's bytes as they arrive, for at most the handshake deadline.
    pub pending: usize,
    /// Authenticated peer connections held at once; one more is closed after its first frame.
    /// A peer holds one pooled connection plus one per anti-entropy session.
    pub peers: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        pending: 16,
        peers: 256,
    };
}

struct Entry {
    id: u64,
    heard: Arc<AtomicU64>,
    /// Tells the connection it was evicted.
    evict: Arc<Notify>,
}

struct Table {
    next_id: u64,
    pending: Vec<Entry>,
}

/// The inbound connection tables, shared by the accept loop and the connection tasks.
#[derive(Clone)]
pub struct Admission {
    limits: Limits,
    table: Arc<Mutex<Table>>,
    peers: Arc<Semaphore>,
    /// Logical time of "a byte arrived" events, for choosing the quietest pending connection.
    events: Arc<AtomicU64>,
}

/// A pending connection's place in the table; leaves the table when dropped.
pub struct Pending {
    id: u64,
    heard: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    evict: Arc<Notify>,
    admission: Admission,
}

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        Admission {
            limits,
            table: Arc::new(Mutex::new(Table {
                next_id: 0,
                pending: Vec::with_capacity(limits.pending),
            })),
            peers: Arc::new(Semaphore::new(limits.peers)),
            events: Arc::default(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection as pending, evicting the quietest pending connection if the
    /// table is full.
    pub fn admit(&self) -> Pending {
        let now = self.events.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        let heard = Arc::new(AtomicU64::new(now));
        let mut table = self.table();
        if table.pending.len() >= self.limits.pending.max(1) {
            let quietest = table
                .pending
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.heard.load(Ordering::Relaxed))
                .map(|(i, _)| i);
            if let Some(i) = quietest {
                // Remembered by the notification if the connection is not waiting right now.
                table.pending.swap_remove(i).evict.notify_one();
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        table.pending.push(Entry {
            id,
            heard: heard.clone(),
            evict: evict.clone(),
        });
        Pending {
            id,
            heard,
            events: self.events.clone(),
            evict,
            admission: self.clone(),
        }
    }

    /// Pending connections held now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.table().pending.len()
    }

    fn remove(&self, id: u64) -> bool {
        let mut table = self.table();
        let before = table.pending.len();
        table.pending.retain(|e| e.id != id);
        table.pending.len() < before
    }
}

impl Pending {
    /// Records that bytes arrived on this connection (it is not quiet).
    pub fn heard(&self) {
        let now = self.events.fetch_add(1, Ordering::Relaxed);
        self.heard.store(now, Ordering::Relaxed);
    }

    /// Completes when this connection has been evicted to make room for a newer one.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// The connection delivered an authentic frame: it leaves the pending table and takes a
    /// place among peer connections, held by the returned permit. `None` when it was evicted
    /// meanwhile or every peer place is taken.
    pub fn authenticate(self) -> Option<OwnedSemaphorePermit> {
        if !self.admission.remove(self.id) {
            return None;
        }
        self.admission.peers.clone().try_acquire_owned().ok()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.admission.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn was_evicted(p: &Pending) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(1), p.evicted())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_connection_quiet_the_longest() {
        let admission = Admission::new(Limits {
            pending: 3,
            peers: 8,
        });
        let mut held: Vec<Pending> = (0..3).map(|_| admission.admit()).collect();
        for p in &held {
            assert!(!was_evicted(p).await, "room for three");
        }
        // The oldest keeps talking; the second has been quiet the longest.
        held[0].heard();
        held[2].heard();
        let newcomer = admission.admit();
        assert!(was_evicted(&held[1]).await);
        assert!(!was_evicted(&held[0]).await && !was_evicted(&held[2]).await);
        assert!(!was_evicted(&newcomer).await);
        assert_eq!(admission.pending(), 3);
        // An evicted connection cannot authenticate; the others can.
        let evicted = held.remove(1);
        assert!(evicted.authenticate().is_none());
        assert!(held.pop().unwrap().authenticate().is_some());
        assert_eq!(admission.pending(), 2);
        drop(newcomer);
        assert_eq!(
            admission.pending(),
            1,
            "a closed connection leaves the table"
        );
    }

    #[test]
    fn peers_have_their_own_budget() {
        let admission = Admission::new(Limits {
            pending: 2,
            peers: 1,
        });
        let first = admission.admit().authenticate();
        assert!(first.is_some());
        assert_eq!(admission.pending(), 0);
        // Peer places are taken, but strangers are still admitted (and refused only later).
        let second = admission.admit();
        assert_eq!(admission.pending(), 1);
        assert!(second.authenticate().is_none(), "no peer place left");
        drop(first);
        assert!(admission.admit().authenticate().is_some());
    }
}
