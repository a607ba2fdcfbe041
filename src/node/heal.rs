//! Heal reports: when members this node had declared dead come back alive (a partition heals, a
//! node rejoins), it follows the catch-up until an exchange with each of them finds nothing left
//! to repair and no other member has come back for [`SETTLE_MS`] (the members of one heal come
//! back over a moment), then logs one line and keeps the report for `GET /v1/cluster/status`:
//! which members came back, how many keys this node repaired, how many bytes its exchanges
//! moved, how many conflicts it resolved meanwhile, and how long convergence took.
//!
//! Pure bookkeeping: the core passes in the time and its running totals.

use super::Node;
use crate::clock::NodeId;
use crate::store::Store;
use std::collections::BTreeSet;

/// A heal is reported once it has been converged this long with no member coming back.
const SETTLE_MS: u64 = 2_000;

/// A heal, in progress (`converged_after_ms` is `None`) or done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealReport {
    /// The members that came back.
    pub peers: Vec<NodeId>,
    /// Wall time the first of them came back (ms since the epoch).
    pub started_ms: u64,
    /// Keys this node repaired from its peers since then.
    pub keys_repaired: u64,
    /// Bytes its anti-entropy exchanges moved since then.
    pub bytes: u64,
    /// Conflicts it resolved since then (see `conflicts.rs`).
    pub conflicts: u64,
    /// From the first member back to an exchange with each that found nothing to repair.
    pub converged_after_ms: Option<u64>,
}

/// The running totals a report is measured by.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Totals {
    pub(super) keys_repaired: u64,
    pub(super) bytes: u64,
    pub(super) conflicts: u64,
}

/// A heal in progress.
struct Healing {
    report: HealReport,
    /// The totals when it began.
    base: Totals,
    /// Members back but not yet converged with.
    waiting: BTreeSet<NodeId>,
    /// Its start, and when every member back was last converged with (timer time).
    started_ms: u64,
    converged_ms: Option<u64>,
}

#[derive(Default)]
pub(super) struct HealWatch {
    current: Option<Healing>,
    last: Option<HealReport>,
    /// Heals completed since the node started.
    pub(super) completed: u64,
}

impl HealWatch {
    /// `peer` came back alive from dead at timer time `now_ms` (wall time `wall_ms`).
    pub(super) fn came_back(&mut self, peer: &NodeId, now_ms: u64, wall_ms: u64, totals: Totals) {
        let healing = self.current.get_or_insert_with(|| Healing {
            report: HealReport {
                peers: Vec::new(),
                started_ms: wall_ms,
                keys_repaired: 0,
                bytes: 0,
                conflicts: 0,
                converged_after_ms: None,
            },
            base: totals,
            waiting: BTreeSet::new(),
            started_ms: now_ms,
            converged_ms: None,
        });
        if !healing.report.peers.contains(peer) {
            healing.report.peers.push(peer.clone());
        }
        healing.waiting.insert(peer.clone());
        healing.converged_ms = None;
    }

    /// Whether `peer` is one this node still waits to converge with.
    pub(super) fn waits_for(&self, peer: &NodeId) -> bool {
        self.current
            .as_ref()
            .is_some_and(|h| h.waiting.contains(peer))
    }

    /// An exchange with `peer` completed at timer time `now_ms`, with nothing to repair
    /// (`clean`) or not.
    pub(super) fn exchanged(&mut self, peer: &NodeId, clean: bool, now_ms: u64, totals: Totals) {
        let Some(healing) = self.current.as_mut() else {
            return;
        };
        healing.report.keys_repaired = totals.keys_repaired - healing.base.keys_repaired;
        healing.report.bytes = totals.bytes - healing.base.bytes;
        healing.report.conflicts = totals.conflicts - healing.base.conflicts;
        if clean && healing.waiting.remove(peer) && healing.waiting.is_empty() {
            healing.converged_ms = Some(now_ms);
        }
    }

    /// At timer time `now_ms`: the report, once the heal has settled.
    pub(super) fn settled(&mut self, now_ms: u64) -> Option<HealReport> {
        let converged = self.current.as_ref()?.converged_ms?;
        if now_ms < converged + SETTLE_MS {
            return None;
        }
        let mut healing = self.current.take()?;
        healing.report.converged_after_ms = Some(converged.saturating_sub(healing.started_ms));
        self.last = Some(healing.report.clone());
        self.completed += 1;
        Some(healing.report)
    }

    /// The heal in progress, else the last one.
    pub(super) fn report(&self) -> Option<HealReport> {
        match &self.current {
            Some(healing) => Some(healing.report.clone()),
            None => self.last.clone(),
        }
    }
}

impl<S: Store> Node<S> {
    /// Logs and keeps the heal report once the heal has settled (at each tick).
    pub(super) fn report_heal(&mut self, now_ms: u64) {
        if let Some(report) = self.heal.settled(now_ms) {
            tracing::info!(
                members = ?report.peers.iter().map(NodeId::as_str).collect::<Vec<_>>(),
                keys_repaired = report.keys_repaired,
                bytes = report.bytes,
                conflicts = report.conflicts,
                converged_after_ms = report.converged_after_ms,
                "healed: members back from dead and converged with"
            );
        }
    }

    pub(super) fn heal_totals(&self) -> Totals {
        Totals {
            keys_repaired: self.cluster.stats.sync_keys_repaired,
            bytes: self.cluster.stats.sync_bytes,
            conflicts: self.conflicts.counted + self.conflicts.set_races,
        }
    }

    /// The heal in progress, else the last one this node saw since it started.
    pub fn heal_report(&self) -> Option<HealReport> {
        self.heal.report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn totals(keys: u64) -> Totals {
        Totals {
            keys_repaired: keys,
            bytes: keys * 100,
            conflicts: keys / 2,
        }
    }

    #[test]
    fn a_heal_ends_once_an_exchange_with_every_member_back_is_clean() {
        let mut watch = HealWatch::default();
        assert_eq!(watch.report(), None);
        watch.came_back(&id("n2"), 1_000, 50_000, totals(10));
        watch.came_back(&id("n3"), 1_200, 50_200, totals(10));
        assert!(watch.waits_for(&id("n2")) && !watch.waits_for(&id("n1")));
        watch.exchanged(&id("n2"), false, 1_300, totals(14));
        watch.exchanged(&id("n2"), true, 1_400, totals(14));
        assert_eq!(
            watch.settled(1_400 + SETTLE_MS),
            None,
            "n3 is not converged with"
        );
        assert_eq!(watch.report().unwrap().converged_after_ms, None);
        watch.exchanged(&id("n3"), true, 1_700, totals(16));
        assert_eq!(watch.settled(1_700 + SETTLE_MS - 1), None);
        let done = watch.settled(1_700 + SETTLE_MS).unwrap();
        assert_eq!(watch.completed, 1);
        assert_eq!(done.peers, [id("n2"), id("n3")]);
        assert_eq!(done.started_ms, 50_000);
        assert_eq!(
            (done.keys_repaired, done.bytes, done.conflicts),
            (6, 600, 3)
        );
        assert_eq!(done.converged_after_ms, Some(700));
        assert_eq!(watch.report(), Some(done));
        assert!(!watch.waits_for(&id("n3")));
    }

    #[test]
    fn a_member_back_while_the_heal_settles_joins_it() {
        let mut watch = HealWatch::default();
        watch.came_back(&id("n2"), 1_000, 50_000, totals(0));
        watch.exchanged(&id("n2"), true, 1_100, totals(2));
        watch.came_back(&id("n3"), 1_500, 50_500, totals(2));
        assert_eq!(watch.settled(1_100 + SETTLE_MS), None);
        watch.exchanged(&id("n3"), true, 1_900, totals(4));
        let done = watch.settled(1_900 + SETTLE_MS).unwrap();
        assert_eq!(done.peers, [id("n2"), id("n3")]);
        assert_eq!(
            (done.keys_repaired, done.converged_after_ms),
            (4, Some(900))
        );
    }
}
