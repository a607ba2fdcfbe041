//! The queue of membership updates waiting to be piggybacked: infection-style dissemination with
//! counter-based stopping (SWIM §4.1; Demers et al. 1987).
//!
//! Holds at most one update per member (a newer one replaces the older), so its size is bounded by
//! the number of members. Knows nothing of timers or addresses; the caller passes the limit.

use super::member::Member;
use crate::clock::NodeId;
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub(super) struct Broadcasts {
    pending: BTreeMap<NodeId, Pending>,
    /// Orders updates by age, so the newest go first among equally sent ones.
    next_seq: u64,
}

#[derive(Debug)]
struct Pending {
    update: Member,
    sent: u32,
    seq: u64,
}

impl Broadcasts {
    /// Queues `update`, replacing (and restarting the count of) any pending update about the same
    /// member.
    pub(super) fn queue(&mut self, update: Member) {
        self.next_seq += 1;
        let pending = Pending {
            update,
            sent: 0,
            seq: self.next_seq,
        };
        self.pending.insert(pending.update.id.clone(), pending);
    }

    /// Up to `max` updates to piggyback on one datagram: the least sent first, the newest first
    /// among those. Each is counted as sent once and dropped after its `limit`-th sending.
    pub(super) fn take(&mut self, max: usize, limit: u32) -> Vec<Member> {
        let mut order: Vec<(u32, std::cmp::Reverse<u64>, NodeId)> = self
            .pending
            .values()
            .map(|p| (p.sent, std::cmp::Reverse(p.seq), p.update.id.clone()))
            .collect();
        order.sort_unstable();
        let mut taken = Vec::with_capacity(max.min(order.len()));
        for (_, _, id) in order.into_iter().take(max) {
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            pending.sent += 1;
            taken.push(pending.update.clone());
            if pending.sent >= limit {
                self.pending.remove(&id);
            }
        }
        taken
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::MemberState;
    use core::net::SocketAddr;

    fn update(name: &str, state: MemberState, incarnation: u64) -> Member {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7101));
        Member::new(NodeId::new(name).unwrap(), addr, addr, incarnation).with_state(state)
    }

    #[test]
    fn least_sent_and_newest_updates_go_first() {
        let mut queue = Broadcasts::default();
        queue.queue(update("a", MemberState::Alive, 0));
        queue.queue(update("b", MemberState::Alive, 0));
        let first: Vec<String> = queue.take(1, 10).iter().map(|m| m.id.to_string()).collect();
        assert_eq!(first, ["b"]);
        queue.queue(update("c", MemberState::Alive, 0));
        let next: Vec<String> = queue.take(2, 10).iter().map(|m| m.id.to_string()).collect();
        assert_eq!(next, ["c", "a"]);
    }

    #[test]
    fn a_newer_update_replaces_the_pending_one_and_restarts_its_count() {
        let mut queue = Broadcasts::default();
        queue.queue(update("a", MemberState::Suspect, 0));
        queue.take(8, 3);
        queue.take(8, 3);
        queue.queue(update("a", MemberState::Dead, 0));
        let sent: Vec<Member> = (0..5).flat_map(|_| queue.take(8, 3)).collect();
        assert_eq!(sent, vec![update("a", MemberState::Dead, 0); 3]);
        assert_eq!(queue.len(), 0);
    }
}
