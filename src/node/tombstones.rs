//! When a tombstone may be dropped without its key ever coming back.
//!
//! **Stability.** An anti-entropy exchange that this node starts with peer `p` at clock `T`
//! carries `T`; `p`'s clock moves past it, so every write `p` makes afterwards is newer than `T`,
//! and every write `p` held before is in what the exchange compares. Once that exchange completes,
//! this node holds every write `p` ever made or held with a timestamp up to `T` (or something newer
//! for the same key). This node's *stable* timestamp is the least such `T` over its members: it
//! holds every write up to it. Nodes report their stable timestamps to each other (with the first
//! request of each exchange, passed on transitively); the least report over all members is the
//! *horizon*: every member has seen every write up to it, so a tombstone at or below the horizon
//! has been seen everywhere (or overwritten) and may go. A tombstone is also kept for at least
//! `min_age_ms`, which leaves room for membership news and clock skew.
//!
//! A node that knows no other member holds everything there is only if it is truly alone (no
//! seeds, and its directory never met another member); otherwise it has not joined yet. After a
//! restart, the members it knew before and has not heard of since count as down (the core passes
//! them in, see `roster.rs`): a node that restarted beside part of its cluster must not report
//! holding what the rest wrote meanwhile.
//!
//! **Grace.** A dead or departed member would hold collection back forever; once it has been down
//! for `grace_ms` it no longer counts, but only for a node among a majority of the members (after
//! a long partition, the minority is the side that was away). Should it come back, its old state
//! must not bring deleted keys back: the core refuses any register for a key it lacks whose
//! timestamp is at or below the newest tombstone it ever collected (such a value can only be
//! older than a collected delete), and tells the sender to forget it, which it does (as does any
//! node that took such a value before it heard of the collection; a node that forgot a value
//! refuses it again, from another node left out with it, until its own horizon covers it). So a
//! node away longer than
//! the grace period keeps only what the others still have or what is newer than their
//! collections: its unreplicated old writes are dropped. That is the price of collecting without
//! it; the default grace is a day. A collection it was left out of is its own only once an
//! exchange with a peer completes, bringing what was written while it was away.
//!
//! Pure bookkeeping: no store, no I/O, no clock (time comes in as arguments). The core
//! ([`super::Node`]) removes the records and persists the collection horizon.

use crate::clock::{NodeId, Timestamp};
use crate::crdt::KeyState;
use crate::membership::{up_majority, Member, MemberState};
use crate::store::StoreKey;
use std::collections::{BTreeMap, BTreeSet};

/// At most this many tombstones are collected per pass, so one store batch stays bounded.
const MAX_PER_PASS: usize = 10_000;
/// Milliseconds between collection passes.
const PASS_INTERVAL_MS: u64 = 1_000;

/// Tuning of tombstone collection.
#[derive(Clone, Debug)]
pub struct TombstoneConfig {
    /// A tombstone is kept at least this long after its timestamp (default one minute).
    pub min_age_ms: u64,
    /// A member down (dead or left) this long no longer holds collection back (default one
    /// day). If it comes back, its unreplicated writes older than the collected tombstones are
    /// dropped.
    pub grace_ms: u64,
}

impl Default for TombstoneConfig {
    fn default() -> Self {
        TombstoneConfig {
            min_age_ms: 60_000,
            grace_ms: 86_400_000,
        }
    }
}

/// The timestamp from which `state` is a tombstone: a delete's own, or the expiry of a value
/// written with one (such a value is collected like a delete at that time, once every member has
/// seen every write up to it).
pub(super) fn tombstone_of(state: &KeyState) -> Option<Timestamp> {
    match state {
        KeyState::Register(r) => r.deleted_from(),
        _ => None,
    }
}

/// The tombstone bookkeeping of one node.
pub(super) struct TombstoneCollector {
    config: TombstoneConfig,
    /// The tombstones this node holds, by timestamp.
    held: BTreeSet<(Timestamp, StoreKey)>,
    /// Per peer: the clock at the start of the last exchange with it that this node initiated
    /// and that completed.
    synced: BTreeMap<NodeId, Timestamp>,
    /// Stability reports: node → a timestamp up to which it held every write.
    reports: BTreeMap<NodeId, Timestamp>,
    /// Members seen dead or left, since when (local milliseconds).
    down_since: BTreeMap<NodeId, u64>,
    next_pass_ms: u64,
    /// The node was given seeds, or its data directory was ever part of a cluster: knowing no
    /// other member then means it has not (re)joined yet, not that it is alone.
    expects_peers: bool,
    /// How far the time passed in (timer time) is ahead of the wall clock (see the core's
    /// `timer_clock.rs`): the minimum age compares with timestamps, in wall time.
    wall_behind_ms: u64,
    /// The newest tombstone some peer collected in a collection that counted this node, or
    /// that an exchange with it completed since: every member had seen every write up to it.
    collected_elsewhere: Timestamp,
    /// Keys whose value this node forgot because a peer had collected a newer tombstone, with
    /// the newest timestamp forgotten: a register that old for the key is refused again, from
    /// whichever peer still holds it, until this node's own horizon covers it. Persisted with
    /// the removals (the store's `forgotten`), so a restart does not let the value back.
    forgotten: BTreeMap<StoreKey, Timestamp>,
}

impl TombstoneCollector {
    pub(super) fn new(config: TombstoneConfig, expects_peers: bool) -> Self {
        TombstoneCollector {
            config,
            held: BTreeSet::new(),
            synced: BTreeMap::new(),
            reports: BTreeMap::new(),
            down_since: BTreeMap::new(),
            next_pass_ms: 0,
            expects_peers,
            wall_behind_ms: 0,
            collected_elsewhere: Timestamp::ZERO,
            forgotten: BTreeMap::new(),
        }
    }

    /// This node forgot the value of `key` written at `timestamp`: it is older than a tombstone
    /// a peer collected.
    pub(super) fn forgot(&mut self, key: &StoreKey, timestamp: Timestamp) {
        let mark = self.forgotten.entry(key.clone()).or_insert(timestamp);
        *mark = (*mark).max(timestamp);
    }

    /// The marks, for the store.
    pub(super) fn forgotten_marks(&self) -> Vec<(StoreKey, Timestamp)> {
        self.forgotten
            .iter()
            .map(|(k, t)| (k.clone(), *t))
            .collect()
    }

    /// Restores the marks persisted before a restart; those at or below `horizon` go (the
    /// horizon refuses those values by itself).
    pub(super) fn restore_forgotten(
        &mut self,
        marks: Vec<(StoreKey, Timestamp)>,
        horizon: Timestamp,
    ) {
        for (key, timestamp) in marks {
            self.forgot(&key, timestamp);
        }
        self.horizon_reached(horizon);
    }

    /// Whether a register for `key` written at `timestamp` is one this node forgot (or older).
    pub(super) fn was_forgotten(&self, key: &StoreKey, timestamp: Timestamp) -> bool {
        self.forgotten
            .get(key)
            .is_some_and(|mark| timestamp <= *mark)
    }

    /// The store's collection horizon reached `through`: it refuses what the marks up to it
    /// refused, so they can go.
    pub(super) fn horizon_reached(&mut self, through: Timestamp) {
        self.forgotten.retain(|_, mark| *mark > through);
    }

    /// Times passed in are this far ahead of the wall clock.
    pub(super) fn set_wall_behind(&mut self, behind_ms: u64) {
        self.wall_behind_ms = behind_ms;
    }

    /// Restores, at start-up, the greatest stable timestamp this node (`me`) ever reported
    /// (persisted).
    pub(super) fn restore_own(&mut self, me: &NodeId, reported: Timestamp) {
        let mark = self.reports.entry(me.clone()).or_default();
        *mark = (*mark).max(reported);
    }

    /// The greatest stable timestamp this node (`me`) ever reported.
    pub(super) fn own_report(&self, me: &NodeId) -> Timestamp {
        self.reports.get(me).copied().unwrap_or_default()
    }

    /// Forgets a member that was reaped (or never to return): its exchange marks, reports and
    /// down time.
    pub(super) fn forget_member(&mut self, id: &NodeId) {
        self.synced.remove(id);
        self.reports.remove(id);
        self.down_since.remove(id);
    }

    /// Forgets every completed exchange (after a rollback undid what some of them brought):
    /// stability is rebuilt by the next exchanges.
    pub(super) fn forget_syncs(&mut self) {
        self.synced.clear();
    }

    /// Whether the node was given seeds or its directory was ever part of a cluster.
    pub(super) fn expects_peers(&self) -> bool {
        self.expects_peers
    }

    /// The node has met another member: from now on (and after restarts, which the core
    /// persists), knowing no member means not joined yet.
    pub(super) fn met_peers(&mut self) {
        self.expects_peers = true;
    }

    /// A peer collected tombstones up to `collected_through`: it had found that every member had
    /// seen every write that old, so this node may collect up to there too. Once one node has
    /// collected, the others follow within an exchange (their digests agree again sooner).
    ///
    /// Only if the collection counted this node (`me`), that is if the horizon is no newer than
    /// what this node reported holding. One above it was made without this node (away longer
    /// than the grace period): this node lacks the writes made while it was away, some of them
    /// no newer than the horizon, and may not treat the horizon as its own (refuse what it lacks
    /// below it) until an exchange with a peer completes and brings them
    /// ([`TombstoneCollector::adopted`]).
    pub(super) fn collected_by_peer(&mut self, me: &NodeId, collected_through: Timestamp) {
        if collected_through <= self.own_report(me) {
            self.collected_elsewhere = self.collected_elsewhere.max(collected_through);
        }
    }

    /// An exchange with a peer that had collected up to `horizon` completed: this node now holds
    /// everything the peer held, so it may collect up to there too.
    pub(super) fn adopted(&mut self, horizon: Timestamp) {
        self.collected_elsewhere = self.collected_elsewhere.max(horizon);
    }

    /// Raises this node's own report to `stable`: a horizon it computes, and so anything it
    /// collects, is never above what it reports as held (else a peer following its collection
    /// would look like one that collected without it).
    fn raise_own(&mut self, me: &NodeId, stable: Timestamp) {
        let mark = self.reports.entry(me.clone()).or_default();
        *mark = (*mark).max(stable);
    }

    /// The held entries (tombstones, and values due to expire) with timestamps after `after`
    /// and at or before `through`, oldest first, at most `max`.
    pub(super) fn held_between(
        &self,
        after: Timestamp,
        through: Timestamp,
        max: usize,
    ) -> Vec<(Timestamp, StoreKey)> {
        let from = (
            Timestamp::from_raw(after.raw().saturating_add(1)),
            StoreKey::kv(""),
        );
        self.held
            .range(from..)
            .take_while(|(ts, _)| *ts <= through)
            .take(max)
            .cloned()
            .collect()
    }

    /// Tombstones held, and values held that are due to expire (collected alike).
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Follows a key from holding a tombstone at `before` (or none) to one at `after`.
    pub(super) fn track(
        &mut self,
        key: &StoreKey,
        before: Option<Timestamp>,
        after: Option<Timestamp>,
    ) {
        if before == after {
            return;
        }
        if let Some(ts) = before {
            self.held.remove(&(ts, key.clone()));
        }
        if let Some(ts) = after {
            self.held.insert((ts, key.clone()));
        }
    }

    /// An exchange this node started with `peer` at clock `started` completed.
    pub(super) fn synced_with(&mut self, peer: &NodeId, started: Timestamp) {
        let mark = self.synced.entry(peer.clone()).or_default();
        *mark = (*mark).max(started);
    }

    /// Merges stability reports received from a peer (each only ever grows). Reports about
    /// nodes that are not `members` here are ignored: a stranger's report would otherwise hold
    /// collection back forever, and the table would grow with every name a peer invents. (A
    /// member's own report already accounts for the members it knows and this node does not:
    /// its stable timestamp waits for its exchanges with them.)
    pub(super) fn merge_reports(&mut self, reports: &[(NodeId, Timestamp)], members: &[Member]) {
        for (node, ts) in reports {
            if !members.iter().any(|m| m.id == *node) {
                continue;
            }
            let mark = self.reports.entry(node.clone()).or_default();
            *mark = (*mark).max(*ts);
        }
    }

    /// The reports to send with an exchange: this node's own stable timestamp and every report
    /// it holds about the `members`.
    pub(super) fn reports_to_send(
        &mut self,
        me: &NodeId,
        members: &[Member],
        now_ms: u64,
        clock: Timestamp,
    ) -> Vec<(NodeId, Timestamp)> {
        let counted = self.counted(me, members, now_ms);
        let own = self.stable(&counted, me, members, clock);
        self.raise_own(me, own);
        members
            .iter()
            .filter_map(|m| Some((m.id.clone(), *self.reports.get(&m.id)?)))
            .collect()
    }

    /// Whether `member` still holds collection back: up, or down for less than the grace period,
    /// or down longer but this node is not among a majority of the members that did not leave
    /// (`majority`). So after a long partition, the minority side is the one that was away.
    fn counts(&mut self, member: &Member, now_ms: u64, majority: bool) -> bool {
        if member.state.is_up() {
            self.down_since.remove(&member.id);
            return true;
        }
        let since = *self.down_since.entry(member.id.clone()).or_insert(now_ms);
        let expired = now_ms.saturating_sub(since) >= self.config.grace_ms;
        !(expired && (majority || member.state == MemberState::Left))
    }

    /// The nodes that count, other than `me`: the members up or not down for long.
    fn counted(&mut self, me: &NodeId, members: &[Member], now_ms: u64) -> Vec<NodeId> {
        let majority = up_majority(members);
        let mut counted = Vec::new();
        for member in members.iter().filter(|m| m.id != *me) {
            if self.counts(member, now_ms, majority) {
                counted.push(member.id.clone());
            }
        }
        counted
    }

    /// The timestamp up to which this node holds every write: the least exchange start over the
    /// nodes that count (`clock`, this node's own clock, when it is truly alone).
    fn stable(
        &self,
        counted: &[NodeId],
        me: &NodeId,
        members: &[Member],
        clock: Timestamp,
    ) -> Timestamp {
        if counted.is_empty() && self.expects_peers && members.iter().all(|m| m.id == *me) {
            // Not joined yet.
            return Timestamp::ZERO;
        }
        counted
            .iter()
            .map(|node| self.synced.get(node).copied().unwrap_or_default())
            .fold(clock, Timestamp::min)
    }

    /// The timestamp up to which every node that counts has seen every write, capped by the
    /// minimum age, or up to which a peer already collected.
    pub(super) fn horizon(
        &mut self,
        me: &NodeId,
        members: &[Member],
        now_ms: u64,
        clock: Timestamp,
    ) -> Timestamp {
        let counted = self.counted(me, members, now_ms);
        let mut horizon = self.stable(&counted, me, members, clock);
        self.raise_own(me, horizon);
        for node in &counted {
            let report = self.reports.get(node).copied().unwrap_or_default();
            horizon = horizon.min(report);
        }
        // What a peer collected, everyone had seen; but no tombstone goes before the minimum
        // age by this node's own clock, whatever a peer says.
        let old_enough = now_ms
            .saturating_sub(self.wall_behind_ms)
            .saturating_sub(self.config.min_age_ms);
        horizon
            .max(self.collected_elsewhere)
            .min(Timestamp::new(old_enough, u16::MAX))
    }

    /// Whether a collection pass is due at `now_ms` (one per second; a pass with nothing to
    /// collect still keeps track of how long members have been down).
    pub(super) fn pass_due(&mut self, now_ms: u64) -> bool {
        if now_ms < self.next_pass_ms {
            return false;
        }
        self.next_pass_ms = now_ms + PASS_INTERVAL_MS;
        true
    }

    /// Takes the held tombstones at or below `horizon`, oldest first (at most a bounded number
    /// per pass). The caller removes them from the store.
    pub(super) fn take_collectable(&mut self, horizon: Timestamp) -> Vec<(Timestamp, StoreKey)> {
        let mut due = Vec::new();
        while due.len() < MAX_PER_PASS {
            match self.held.first() {
                Some((ts, _)) if *ts <= horizon => due.extend(self.held.pop_first()),
                _ => break,
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::LwwRegister;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn member(name: &str, state: MemberState) -> Member {
        Member {
            id: id(name),
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            http_addr: "127.0.0.1:2".parse().unwrap(),
            state,
            incarnation: 1,
        }
    }

    fn ts(ms: u64) -> Timestamp {
        Timestamp::new(ms, 0)
    }

    fn tombstone(ms: u64) -> KeyState {
        KeyState::Register(LwwRegister::write(ts(ms), id("n1"), None))
    }

    fn collector(min_age_ms: u64, grace_ms: u64) -> TombstoneCollector {
        TombstoneCollector::new(
            TombstoneConfig {
                min_age_ms,
                grace_ms,
            },
            true,
        )
    }

    #[test]
    fn tracks_tombstones_as_keys_change() {
        let mut c = collector(0, 1_000);
        let k = StoreKey::kv("k");
        assert_eq!(tombstone_of(&tombstone(5)), Some(ts(5)));
        let value = KeyState::Register(LwwRegister::write(
            ts(10),
            id("n2"),
            Some(crate::crdt::Value {
                content_type: "text/plain".into(),
                data: Vec::new(),
            }),
        ));
        assert_eq!(tombstone_of(&value), None);
        c.track(&k, None, Some(ts(5)));
        c.track(&k, Some(ts(5)), Some(ts(7)));
        assert_eq!(c.held(), 1);
        assert_eq!(c.take_collectable(ts(6)), vec![]);
        assert_eq!(c.take_collectable(ts(7)), vec![(ts(7), k.clone())]);
        c.track(&k, None, Some(ts(9)));
        c.track(&k, Some(ts(9)), None);
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn the_horizon_waits_for_every_member_to_sync_and_report() {
        let me = id("n1");
        let members = [
            member("n1", MemberState::Alive),
            member("n2", MemberState::Alive),
            member("n3", MemberState::Suspect),
        ];
        let mut c = collector(0, 1_000);
        let clock = ts(100);
        assert_eq!(c.horizon(&me, &members, 100, clock), Timestamp::ZERO);
        c.synced_with(&id("n2"), ts(50));
        c.synced_with(&id("n3"), ts(60));
        // This node holds everything up to 50, but nobody else has said so.
        assert_eq!(
            c.reports_to_send(&me, &members, 100, clock),
            vec![(id("n1"), ts(50))]
        );
        assert_eq!(c.horizon(&me, &members, 100, clock), Timestamp::ZERO);
        c.merge_reports(&[(id("n2"), ts(40)), (id("n3"), ts(70))], &members);
        assert_eq!(c.horizon(&me, &members, 100, clock), ts(40));
        // Reports only grow.
        c.merge_reports(&[(id("n2"), ts(10))], &members);
        assert_eq!(c.horizon(&me, &members, 100, clock), ts(40));
        // Reports about strangers are ignored: they neither count nor hold collection back.
        c.merge_reports(&[(id("ghost"), ts(1))], &members);
        assert_eq!(c.horizon(&me, &members, 100, clock), ts(40));
        assert!(!c
            .reports_to_send(&me, &members, 100, clock)
            .iter()
            .any(|(n, _)| *n == id("ghost")));
        // The minimum age caps it.
        let mut young = collector(90, 1_000);
        young.synced_with(&id("n2"), ts(50));
        young.synced_with(&id("n3"), ts(60));
        young.merge_reports(&[(id("n2"), ts(40)), (id("n3"), ts(70))], &members);
        assert_eq!(
            young.horizon(&me, &members, 100, clock),
            Timestamp::new(10, u16::MAX)
        );
        // What a peer already collected (counting this node, which holds everything up to 50),
        // every member had seen; the minimum age still applies.
        young.collected_by_peer(&me, ts(45));
        assert_eq!(
            young.horizon(&me, &members, 100, clock),
            Timestamp::new(10, u16::MAX)
        );
        assert_eq!(young.horizon(&me, &members, 200, clock), ts(45));
    }

    #[test]
    fn a_member_down_longer_than_the_grace_period_stops_counting() {
        let me = id("n1");
        let mut members = vec![
            member("n1", MemberState::Alive),
            member("n2", MemberState::Alive),
        ];
        let mut c = collector(0, 1_000);
        c.synced_with(&id("n2"), ts(50));
        c.merge_reports(&[(id("n2"), ts(50))], &members);
        assert_eq!(c.horizon(&me, &members, 100, ts(100)), ts(50));
        members.push(member("n3", MemberState::Dead));
        assert_eq!(c.horizon(&me, &members, 100, ts(100)), Timestamp::ZERO);
        assert_eq!(c.horizon(&me, &members, 1_099, ts(1_099)), Timestamp::ZERO);
        assert_eq!(c.horizon(&me, &members, 1_100, ts(1_100)), ts(50));
        // Back up: it counts again, from scratch.
        members[2].state = MemberState::Alive;
        assert_eq!(c.horizon(&me, &members, 1_200, ts(1_200)), Timestamp::ZERO);
        // Alone, a node holds everything there is; with seeds it is only not joined yet.
        let mut joining = collector(0, 1_000);
        assert_eq!(
            joining.horizon(&me, &members[..1], 100, ts(99)),
            Timestamp::ZERO
        );
        let mut alone = TombstoneCollector::new(TombstoneConfig::default(), false);
        assert_eq!(alone.horizon(&me, &members[..1], 100_000, ts(99)), ts(99));
    }

    /// Node n1 with peer n2; an exchange with n2 completed, and n1 reported holding every write
    /// up to 50.
    fn reported_holding_50() -> (NodeId, [Member; 2], TombstoneCollector) {
        let me = id("n1");
        let members = [
            member("n1", MemberState::Alive),
            member("n2", MemberState::Alive),
        ];
        let mut c = collector(0, 1_000);
        c.synced_with(&id("n2"), ts(50));
        c.reports_to_send(&me, &members, 100, ts(100));
        (me, members, c)
    }

    #[test]
    fn what_this_node_reported_survives_a_restart() {
        let (me, members, c) = reported_holding_50();
        let mut again = collector(0, 1_000);
        again.restore_own(&me, c.own_report(&me));
        assert_eq!(again.own_report(&me), ts(50));
        // So a peer's collection it was counted in is followed at once after the restart.
        again.collected_by_peer(&me, ts(45));
        assert_eq!(again.horizon(&me, &members, 100, ts(100)), ts(45));
    }

    #[test]
    fn a_horizon_collected_without_this_node_is_its_own_only_after_an_exchange_completes() {
        let (me, members, mut c) = reported_holding_50();
        // A horizon it was counted in may be followed at once.
        c.collected_by_peer(&me, ts(40));
        assert_eq!(c.horizon(&me, &members, 100, ts(100)), ts(40));
        // One above its report: it lacks what was written while it was away, some of it older
        // than the horizon, so it does not collect (nor refuse) up to there yet...
        c.collected_by_peer(&me, ts(70));
        assert_eq!(c.horizon(&me, &members, 100, ts(100)), ts(40));
        // ...until an exchange with that peer brought what the peer held.
        c.adopted(ts(70));
        assert_eq!(c.horizon(&me, &members, 100, ts(100)), ts(70));
    }

    #[test]
    fn a_collection_counting_what_it_holds_now_is_followed_before_it_reports_again() {
        let (me, members, mut c) = reported_holding_50();
        c.merge_reports(&[(id("n2"), ts(10))], &members);
        // Its stable timestamp moved past what it last sent: a pass takes note.
        c.synced_with(&id("n2"), ts(80));
        assert_eq!(c.horizon(&me, &members, 100, ts(100)), ts(10));
        assert_eq!(c.own_report(&me), ts(80));
        // A peer that collected up to 75 counted it (the peer had its report, or followed one
        // that did): this node follows at once.
        c.collected_by_peer(&me, ts(75));
        assert_eq!(c.horizon(&me, &members, 100, ts(100)), ts(75));
    }
}
