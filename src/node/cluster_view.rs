//! What this node can see of its cluster, for health checks and the minority header: member
//! counts by state, whether the members up make a majority of those that did not leave, and
//! whether it is isolated (it expects peers, or knows some, and sees none up). Logs each change
//! of that verdict once (and, while isolated, a reminder now and then naming the seeds).
//!
//! Pure: counts members and compares verdicts; time comes in as an argument.

use super::Node;
use crate::membership::{up_majority, MemberState};
use crate::store::Store;

/// While isolated, the reminder naming the seeds comes at most this often.
const ISOLATED_REMINDER_MS: u64 = 60_000;
/// A verdict is logged once it has held this long (a node joining through its seeds is isolated
/// for a moment; a flapping member changes nothing worth a line).
const STEADY_MS: u64 = 5_000;

/// This node's view of its cluster (itself included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub alive: u32,
    pub suspect: u32,
    pub dead: u32,
    pub left: u32,
    /// The members up (alive or suspect) are more than half of those that did not leave.
    pub majority: bool,
    /// It expects peers (it was given seeds, or was part of a cluster) or knows some, and sees
    /// none up.
    pub isolated: bool,
}

impl ClusterView {
    /// The health reasons this view gives (`minority`, `isolated`).
    pub fn reasons(&self) -> impl Iterator<Item = &'static str> {
        [(!self.majority, "minority"), (self.isolated, "isolated")]
            .into_iter()
            .filter_map(|(on, reason)| on.then_some(reason))
    }
}

/// The last verdict logged, the one seen since when, and when the isolation reminder is next
/// due.
#[derive(Default)]
pub(super) struct ViewLog {
    logged: Option<(bool, bool)>,
    seen: Option<((bool, bool), u64)>,
    remind_at_ms: u64,
}

impl<S: Store> Node<S> {
    /// What this node sees of its cluster now.
    pub fn cluster_view(&self) -> ClusterView {
        let mut view = ClusterView::default();
        let members = || self.cluster.membership.members();
        for member in members() {
            match member.state {
                MemberState::Alive => view.alive += 1,
                MemberState::Suspect => view.suspect += 1,
                MemberState::Dead => view.dead += 1,
                MemberState::Left => view.left += 1,
            }
        }
        view.majority = up_majority(members());
        let others_known = members().any(|m| m.id != self.id && m.state != MemberState::Left);
        view.isolated = !self.has_peers() && (others_known || self.tombstones.expects_peers());
        view
    }

    /// Logs a change of the verdict (and the isolation reminder) at timer time `now_ms`.
    pub(super) fn log_cluster_view(&mut self, now_ms: u64) {
        let view = self.cluster_view();
        let verdict = (view.majority, view.isolated);
        let log = &mut self.view_log;
        match log.seen {
            Some((seen, _)) if seen == verdict => {}
            _ => log.seen = Some((verdict, now_ms)),
        }
        let steady = log
            .seen
            .is_some_and(|(_, since)| now_ms >= since + STEADY_MS);
        if !steady {
            return;
        }
        let changed = log.logged != Some(verdict);
        // A node that starts healthy says nothing.
        let first = log.logged.is_none();
        log.logged = Some(verdict);
        let up = view.alive + view.suspect;
        let staying = up + view.dead;
        if view.isolated && (changed || now_ms >= log.remind_at_ms) {
            log.remind_at_ms = now_ms + ISOLATED_REMINDER_MS;
            let seeds = self.cluster.membership.seeds();
            tracing::warn!(
                known = staying,
                seeds = %seeds.join(","),
                "isolated: no other member is reachable (seeds unreachable, a network cut, or another cluster key?); writes are taken here alone"
            );
        } else if changed && !view.majority {
            tracing::warn!(
                up,
                of = staying,
                "this node cannot see a majority of the members: its writes are answered with X-Hearsay-Minority and may be overwritten when the cluster heals"
            );
        } else if changed && !first {
            tracing::info!(
                up,
                of = staying,
                "this node sees a majority of the members again"
            );
        }
    }
}
