//! Consistency levels (`?w=` on writes, `?r=` on reads): a client write answered once enough
//! members hold it durably, and a read that merges what enough members hold.
//!
//! A write that waits sends its rumor straight to every member up ([`FrameBody::Replicate`]);
//! each merges it as it would any rumor and answers [`FrameBody::Replicated`], which the driver
//! releases only once the merge is durable (after the group's sync), so an acknowledgement means
//! "on that member's disk". A read asks every member up for its state of the key
//! ([`FrameBody::ReadRequest`]), merges each answer into this node's store (which repairs this
//! node), and once enough have answered sends the merged state to those that held less
//! ([`FrameBody::ReadRepair`]). Members that have not answered are asked again every
//! [`ASK_AGAIN_MS`] until the deadline, so a member that comes back in time still counts.
//!
//! Owns the waits, their tallies and deadlines; answers no client itself: the driver takes each
//! [`WaitOutcome`] and answers. The write and the merges themselves go through the node's usual
//! paths (`handle_write_if`, `merge_from_peer`); nothing here decides what wins.

use super::{Applied, Node};
use crate::clock::{NodeId, ReplicaId, Timestamp};
use crate::crdt::KeyState;
use crate::gossip::rumor::Rumor;
use crate::membership::MemberState;
use crate::store::{Store, StoreError, StoreKey};
use crate::wire::{encoded_len, ForgetValue, FrameBody, MAX_DATAGRAM};
use std::collections::{BTreeMap, BTreeSet};

/// Members that have not answered are asked again this often (milliseconds).
pub const ASK_AGAIN_MS: u64 = 500;
/// Most waits open at once; one more ends unmet without waiting (a write's once it is
/// durable here; the HTTP layer bounds requests in flight far below this). So does a wait for
/// more members than this node knows (that did not leave): it could not be met.
pub const MAX_WAITS: usize = 16_384;
/// The longest a client may ask a wait to last (milliseconds).
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// How long a wait lasts when the client does not say (milliseconds).
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// How many members must answer: `?w=` and `?r=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// This many members, this node included (at least 1).
    Count(usize),
    /// More than half of the members that did not leave.
    Majority,
    /// Every member that did not leave.
    All,
}

impl Level {
    /// `1`, `2`, … (at most 1,000), `majority` or `all`.
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "majority" => Some(Level::Majority),
            "all" => Some(Level::All),
            _ => match text.parse::<usize>() {
                Ok(n @ 1..=1_000) if !text.starts_with('+') && !text.starts_with('0') => {
                    Some(Level::Count(n))
                }
                _ => None,
            },
        }
    }

    /// How many members answer it among `members` that did not leave (this node included).
    pub fn required(self, members: usize) -> usize {
        match self {
            Level::Count(n) => n,
            Level::Majority => members / 2 + 1,
            Level::All => members,
        }
    }
}

/// What a client asked to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub level: Level,
    /// How long to wait at most (milliseconds, at most [`MAX_TIMEOUT_MS`]).
    pub timeout_ms: u64,
}

/// Who answered a wait, this node first, and how many it needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    pub answered: Vec<NodeId>,
    pub required: usize,
}

impl Tally {
    /// Enough members answered.
    pub fn met(&self) -> bool {
        self.answered.len() >= self.required
    }
}

/// How a wait ended (met, or timed out with what it had); the driver answers the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// A write's wait. `undone`: a failed sync rolled the write back on this node, so it holds
    /// nowhere and the client gets an error.
    Write {
        request: u64,
        tally: Tally,
        undone: bool,
    },
    /// A read's wait: this node's store now holds the merge of every state counted.
    Read { request: u64, tally: Tally },
}

impl WaitOutcome {
    pub fn request(&self) -> u64 {
        match self {
            WaitOutcome::Write { request, .. } | WaitOutcome::Read { request, .. } => *request,
        }
    }
}

/// Running totals of the waits, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaitStats {
    pub write_met: u64,
    pub write_timeout: u64,
    pub read_met: u64,
    pub read_timeout: u64,
    /// States a read merged into this node (members' answers, or a reader's repair) that
    /// changed it.
    pub read_merged: u64,
    /// Merged states a read sent to members that held less.
    pub repair_sent: u64,
}

/// When a wait ends, and when the members that have not answered are asked again.
struct Timing {
    deadline_ms: u64,
    ask_at_ms: u64,
}

impl Timing {
    /// Asked now (at `now_ms`), for `timeout_ms` at most. `now_ms` is a whole millisecond that
    /// may have begun up to a millisecond ago: the deadline is one later, so that no wait ends
    /// before its full timeout (a test saw a 700 ms wait answered after 699.9 ms).
    fn starting(now_ms: u64, timeout_ms: u64) -> Self {
        Timing {
            deadline_ms: now_ms + timeout_ms.min(MAX_TIMEOUT_MS) + 1,
            ask_at_ms: now_ms,
        }
    }

    fn is_due(&self, now_ms: u64) -> bool {
        self.ask_at_ms <= now_ms || self.is_over(now_ms)
    }

    fn is_over(&self, now_ms: u64) -> bool {
        self.deadline_ms <= now_ms
    }
}

/// The requests among `waits` due at `now_ms`.
fn due<W>(waits: &BTreeMap<u64, W>, timing: impl Fn(&W) -> &Timing, now_ms: u64) -> Vec<u64> {
    waits
        .iter()
        .filter(|(_, w)| timing(w).is_due(now_ms))
        .map(|(r, _)| *r)
        .collect()
}

/// A write waiting for acknowledgements.
struct WriteWait {
    rumor: Rumor,
    /// The members counted when the wait began (this node included): only their
    /// acknowledgements count, so a member that joined meanwhile never stands in for one of
    /// them.
    counted: BTreeSet<NodeId>,
    answered: BTreeSet<NodeId>,
    required: usize,
    timing: Timing,
    /// Past its deadline, but the write is not yet known durable here: it ends once it is (or
    /// as undone, if its sync fails), so that an answer never precedes the write's own sync.
    overdue: bool,
}

/// A read waiting for answers.
struct ReadWait {
    key: StoreKey,
    /// The members counted when the wait began (this node included).
    counted: BTreeSet<NodeId>,
    /// Each counted member that answered, with the state it held (`None`: nothing).
    answered: BTreeMap<NodeId, Option<KeyState>>,
    required: usize,
    timing: Timing,
}

/// The open waits of one node.
#[derive(Default)]
pub(super) struct Waits {
    next_request: u64,
    writes: BTreeMap<u64, WriteWait>,
    /// Which write wait an acknowledgement of (origin, sequence number) belongs to.
    by_rumor: BTreeMap<(ReplicaId, u64), u64>,
    reads: BTreeMap<u64, ReadWait>,
    done: Vec<WaitOutcome>,
}

impl Waits {
    fn open(&self) -> usize {
        self.writes.len() + self.reads.len()
    }

    fn next(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }
}

impl<S: Store> Node<S> {
    /// Members that did not leave, this node included.
    fn staying_members(&self) -> BTreeSet<NodeId> {
        self.cluster
            .membership
            .members()
            .filter(|m| m.state != MemberState::Left)
            .map(|m| m.id.clone())
            .collect()
    }

    /// Whether this node knows the write of `wait` durable: its sequence number is synced, or
    /// it was made in an earlier storage epoch (a failed sync since would have undone it).
    fn is_durable(&self, wait: &WriteWait) -> bool {
        wait.rumor.origin != self.replica || wait.rumor.seq <= self.durable_seq
    }

    /// Peers up (alive or suspect) not in `answered`, with their addresses.
    fn peers_to_ask(
        &self,
        answered: impl Fn(&NodeId) -> bool,
    ) -> Vec<(NodeId, core::net::SocketAddr)> {
        self.cluster
            .membership
            .members()
            .filter(|m| m.id != self.id && m.state.is_up() && !answered(&m.id))
            .map(|m| (m.id.clone(), m.gossip_addr))
            .collect()
    }

    fn send_frame(&mut self, to: (NodeId, core::net::SocketAddr), body: FrameBody) {
        let frame = self.frame(body);
        self.cluster.outbox.push(super::Outbound::Frame {
            to: to.1,
            to_id: Some(to.0),
            frame,
        });
    }

    /// After a write this node just made (`seq`: its sequence number, [`super::WriteAck::seq`])
    /// succeeded: waits until `wait.level` members hold it. `None`: this node alone is enough,
    /// answer now; else the request whose [`WaitOutcome`] comes later.
    pub(super) fn await_replicas(
        &mut self,
        now_ms: u64,
        key: StoreKey,
        delta: KeyState,
        seq: u64,
        wait: Wait,
    ) -> Option<u64> {
        let counted = self.staying_members();
        let required = wait.level.required(counted.len());
        if required <= 1 {
            return None;
        }
        // More than there are members cannot be met: not waited for (it ends once durable).
        let hopeless = required > counted.len() || self.waits.open() >= MAX_WAITS;
        let timeout_ms = if hopeless { 0 } else { wait.timeout_ms };
        let request = self.waits.next();
        let rumor = Rumor {
            origin: self.replica.clone(),
            seq,
            key,
            delta,
        };
        self.waits
            .by_rumor
            .insert((rumor.origin.clone(), seq), request);
        self.waits.writes.insert(
            request,
            WriteWait {
                rumor,
                counted,
                answered: BTreeSet::from([self.id.clone()]),
                required,
                timing: Timing::starting(now_ms, timeout_ms),
                overdue: false,
            },
        );
        self.ask_again(now_ms);
        Some(request)
    }

    /// Starts a read of `key` from `wait.level` members, at wall time `wall_ms`. `None`: this
    /// node alone is enough, read it now; else the request whose [`WaitOutcome`] comes later
    /// (read this node's store then: it holds the merge).
    pub fn start_read(&mut self, wall_ms: u64, key: StoreKey, wait: Wait) -> Option<u64> {
        let now_ms = self.clock_in(wall_ms);
        let counted = self.staying_members();
        let required = wait.level.required(counted.len());
        if required <= 1 {
            return None;
        }
        let hopeless = required > counted.len() || self.waits.open() >= MAX_WAITS;
        let request = self.waits.next();
        let mine = self.store.get(&key).ok().flatten();
        self.waits.reads.insert(
            request,
            ReadWait {
                key,
                counted,
                answered: BTreeMap::from([(self.id.clone(), mine)]),
                required,
                timing: Timing::starting(now_ms, wait.timeout_ms),
            },
        );
        match hopeless {
            true => self.end_read(request),
            false => self.ask_again(now_ms),
        }
        Some(request)
    }

    /// The outcomes of waits that ended since the last call.
    pub fn take_wait_outcomes(&mut self) -> Vec<WaitOutcome> {
        std::mem::take(&mut self.waits.done)
    }

    /// Sends what each wait due asks for to the members up that have not answered, and ends
    /// the waits past their deadline (at every tick).
    pub(super) fn ask_again(&mut self, now_ms: u64) {
        for request in due(&self.waits.writes, |w| &w.timing, now_ms) {
            let Some(wait) = self.waits.writes.get_mut(&request) else {
                continue;
            };
            if wait.timing.is_over(now_ms) {
                wait.overdue = true;
                self.end_write_once_durable(request);
                continue;
            }
            wait.timing.ask_at_ms = now_ms + ASK_AGAIN_MS;
            let rumor = wait.rumor.clone();
            let (counted, answered) = (wait.counted.clone(), wait.answered.clone());
            for peer in self.peers_to_ask(|id| !counted.contains(id) || answered.contains(id)) {
                self.send_frame(peer, FrameBody::Replicate(rumor.clone()));
            }
        }
        for request in due(&self.waits.reads, |w| &w.timing, now_ms) {
            let Some(wait) = self.waits.reads.get_mut(&request) else {
                continue;
            };
            if wait.timing.is_over(now_ms) {
                self.end_read(request);
                continue;
            }
            wait.timing.ask_at_ms = now_ms + ASK_AGAIN_MS;
            let key = wait.key.clone();
            let counted = wait.counted.clone();
            let answered: BTreeSet<NodeId> = wait.answered.keys().cloned().collect();
            let peers = self.peers_to_ask(|id| !counted.contains(id) || answered.contains(id));
            for peer in peers {
                let body = FrameBody::ReadRequest {
                    request,
                    key: key.clone(),
                };
                self.send_frame(peer, body);
            }
        }
    }

    /// Ends the write wait `request` if the write is durable here; else it waits for that.
    fn end_write_once_durable(&mut self, request: u64) {
        if self
            .waits
            .writes
            .get(&request)
            .is_some_and(|wait| self.is_durable(wait))
        {
            self.end_write(request, false);
        }
    }

    /// The writes made durable up to now: ends the waits that were only waiting for that.
    pub(super) fn end_durable_waits(&mut self) {
        let overdue: Vec<u64> = self
            .waits
            .writes
            .iter()
            .filter(|(_, wait)| wait.overdue)
            .map(|(request, _)| *request)
            .collect();
        for request in overdue {
            self.end_write_once_durable(request);
        }
    }

    fn end_write(&mut self, request: u64, undone: bool) {
        if let Some(wait) = self.waits.writes.remove(&request) {
            self.waits
                .by_rumor
                .remove(&(wait.rumor.origin.clone(), wait.rumor.seq));
            let tally = self.tally(wait.answered.into_iter(), wait.required);
            let stats = &mut self.cluster.stats.waits;
            match (undone, tally.met()) {
                (true, _) => {}
                (false, true) => stats.write_met += 1,
                (false, false) => stats.write_timeout += 1,
            }
            self.waits.done.push(WaitOutcome::Write {
                request,
                tally,
                undone,
            });
        }
    }

    /// Ends a read: sends the merged state to the members whose answer held less, and reports.
    fn end_read(&mut self, request: u64) {
        let Some(wait) = self.waits.reads.remove(&request) else {
            return;
        };
        let merged = self.store.get(&wait.key).ok().flatten();
        let answered: Vec<NodeId> = wait.answered.keys().cloned().collect();
        if let Some(merged) = merged {
            for (peer, held) in &wait.answered {
                if *peer == self.id || held.as_ref() == Some(&merged) {
                    continue;
                }
                if let Some(addr) = self.address_of(peer) {
                    let body = FrameBody::ReadRepair {
                        key: wait.key.clone(),
                        state: merged.clone(),
                    };
                    self.send_frame((peer.clone(), addr), body);
                    self.cluster.stats.waits.repair_sent += 1;
                }
            }
        }
        let tally = self.tally(answered.into_iter(), wait.required);
        match tally.met() {
            true => self.cluster.stats.waits.read_met += 1,
            false => self.cluster.stats.waits.read_timeout += 1,
        }
        self.waits.done.push(WaitOutcome::Read { request, tally });
    }

    /// This node first, then the others in order.
    fn tally(&self, answered: impl Iterator<Item = NodeId>, required: usize) -> Tally {
        let mut answered: Vec<NodeId> = answered.collect();
        answered.sort_by_key(|id| (*id != self.id, id.clone()));
        Tally { answered, required }
    }

    /// A failed sync undid this node's writes after sequence number `durable_seq` of
    /// `replica`: their waits end as undone (the client gets an error, not a timeout).
    pub(super) fn undo_waits(&mut self, replica: &ReplicaId, durable_seq: u64) {
        let undone: Vec<u64> = self
            .waits
            .by_rumor
            .iter()
            .filter(|((origin, seq), _)| origin == replica && *seq > durable_seq)
            .map(|(_, request)| *request)
            .collect();
        for request in undone {
            self.end_write(request, true);
        }
    }

    /// A write a peer waits for: merged like a rumor, and acknowledged (once durable: the
    /// driver releases messages after the group's sync) unless refused.
    pub(super) fn receive_replicate(
        &mut self,
        now_ms: u64,
        from: &NodeId,
        rumor: Rumor,
    ) -> Result<(), StoreError> {
        self.cluster.stats.rumors_received += 1;
        if let Err(why) = self.vet(&rumor.key, &rumor.delta, now_ms) {
            self.refused_input(now_ms, from, why);
            return Ok(());
        }
        let (origin, seq) = (rumor.origin.clone(), rumor.seq);
        let (key, delta) = (rumor.key.clone(), rumor.delta.clone());
        let members = self.cluster.membership.members().count();
        let small = encoded_len(&rumor) <= MAX_DATAGRAM / 2;
        // Marked as seen (and passed on when new); merged whether new or not, so that the
        // acknowledgement stands for this very merge.
        if self.cluster.rumors.receive(rumor, from, members, small) {
            self.cluster.stats.replication_lag.record(now_ms, &delta);
        }
        let mut refused = Vec::new();
        let applied = self.merge_from_peer(
            now_ms,
            from,
            key,
            delta,
            Some((origin.clone(), seq)),
            &mut refused,
        )?;
        self.meta_dirty = true;
        self.tell_to_forget(from, refused);
        match applied {
            Applied::Refused(_) => {}
            Applied::Changed | Applied::Unchanged => {
                if applied == Applied::Changed {
                    self.cluster.stats.rumors_merged += 1;
                }
                if let Some(addr) = self.address_of(from) {
                    self.send_frame((from.clone(), addr), FrameBody::Replicated { origin, seq });
                }
            }
        }
        Ok(())
    }

    /// `from` holds this node's write (`origin`, `seq`) durably.
    pub(super) fn receive_replicated(&mut self, from: &NodeId, origin: ReplicaId, seq: u64) {
        let Some(&request) = self.waits.by_rumor.get(&(origin, seq)) else {
            return; // over already, or never asked
        };
        let Some(wait) = self.waits.writes.get_mut(&request) else {
            return;
        };
        if !wait.counted.contains(from) {
            return; // joined since the wait began: it does not stand in for a member counted
        }
        wait.answered.insert(from.clone());
        if wait.answered.len() >= wait.required {
            // Its peers had it only once it was durable here.
            self.end_write(request, false);
        }
    }

    /// A peer asks for this node's state of `key` for its read. A node still recovering its
    /// data does not answer: what it lacks might be exactly the write the reader must see.
    pub(super) fn answer_read(
        &mut self,
        from: &NodeId,
        request: u64,
        key: StoreKey,
    ) -> Result<(), StoreError> {
        if self.cluster.resyncing {
            return Ok(());
        }
        let state = self.store.get(&key)?;
        if let Some(addr) = self.address_of(from) {
            let body = FrameBody::ReadReply {
                request,
                key,
                state,
                collected_through: self.store.collected_through(),
            };
            self.send_frame((from.clone(), addr), body);
        }
        Ok(())
    }

    /// A peer's answer to a read: merged into this node's store (whether or not the read still
    /// waits: it repairs this node either way), and counted unless refused. A peer that holds
    /// nothing of the key, with a collection horizon at or above the value this node holds,
    /// would refuse that value as collected: this node forgets it, as it would on that peer's
    /// word after an exchange.
    pub(super) fn receive_read_reply(
        &mut self,
        now_ms: u64,
        from: &NodeId,
        request: u64,
        key: StoreKey,
        state: Option<KeyState>,
        collected_through: Timestamp,
    ) -> Result<(), StoreError> {
        // An answer this node cannot take (refused) is not counted.
        let taken = match state {
            Some(_) => true,
            None => self.forget_collected_elsewhere(now_ms, from, &key, collected_through)?,
        };
        if !taken {
            return Ok(());
        }
        if let Some(held) = &state {
            let applied = self.merge_read_state(now_ms, from, key.clone(), held.clone())?;
            if matches!(applied, Applied::Refused(_)) {
                return Ok(());
            }
        }
        let Some(wait) = self.waits.reads.get_mut(&request) else {
            return Ok(());
        };
        if wait.key != key {
            self.invalid_input(now_ms, from, "an answer to a read of another key");
            return Ok(());
        }
        if !wait.counted.contains(from) {
            return Ok(()); // merged, but it does not stand in for a member counted
        }
        wait.answered.insert(from.clone(), state);
        if wait.answered.len() >= wait.required {
            self.end_read(request);
        }
        Ok(())
    }

    /// `peer` holds nothing of `key` and refuses registers up to `horizon` for keys it lacks:
    /// a value this node holds that old was deleted there and the delete collected (every
    /// member had seen it), so this node forgets it, as a peer's `Forget` makes it do. `false`:
    /// the horizon is beyond this node's clock bound, so the answer cannot be taken.
    fn forget_collected_elsewhere(
        &mut self,
        now_ms: u64,
        peer: &NodeId,
        key: &StoreKey,
        horizon: Timestamp,
    ) -> Result<bool, StoreError> {
        if horizon == Timestamp::ZERO {
            return Ok(true);
        }
        if let Err(ahead) = self.check_clock(horizon, now_ms) {
            self.clock_skew_from(now_ms, peer, ahead);
            return Ok(false);
        }
        let Some(KeyState::Register(held)) = self.store.get(key)? else {
            return Ok(true);
        };
        if held.is_tombstone() || held.timestamp > horizon {
            return Ok(true);
        }
        self.note_peer_horizon(peer, horizon);
        let value = ForgetValue {
            key: key.clone(),
            timestamp: held.timestamp,
            node: held.node.clone(),
        };
        self.forget(now_ms, peer, vec![value])?;
        Ok(true)
    }

    /// The merged state of a read, sent to a member that held less.
    pub(super) fn receive_read_repair(
        &mut self,
        now_ms: u64,
        from: &NodeId,
        key: StoreKey,
        state: KeyState,
    ) -> Result<(), StoreError> {
        self.merge_read_state(now_ms, from, key, state).map(drop)
    }

    /// Merges a state a read brought (an answer, or a reader's repair) as any peer's state is
    /// merged (checked, refusals counted, a value refused as collected handed back to be
    /// forgotten), counting it when it changed this node.
    fn merge_read_state(
        &mut self,
        now_ms: u64,
        from: &NodeId,
        key: StoreKey,
        state: KeyState,
    ) -> Result<Applied, StoreError> {
        let mut refused = Vec::new();
        let applied = self.merge_from_peer(now_ms, from, key, state, None, &mut refused)?;
        self.tell_to_forget(from, refused);
        if applied == Applied::Changed {
            self.cluster.stats.waits.read_merged += 1;
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::Level;

    #[test]
    fn levels_parse_and_count_members() {
        assert_eq!(Level::parse("1"), Some(Level::Count(1)));
        assert_eq!(Level::parse("1000"), Some(Level::Count(1000)));
        assert_eq!(Level::parse("majority"), Some(Level::Majority));
        assert_eq!(Level::parse("all"), Some(Level::All));
        for bad in ["", "0", "01", "+2", "-1", "1001", "most", "ALL", "2.0"] {
            assert_eq!(Level::parse(bad), None, "{bad:?}");
        }
        let counts =
            |members| [Level::Count(2), Level::Majority, Level::All].map(|l| l.required(members));
        assert_eq!(counts(1), [2, 1, 1]);
        assert_eq!(counts(3), [2, 2, 3]);
        assert_eq!(counts(4), [2, 3, 4]);
        assert_eq!(counts(5), [2, 3, 5]);
    }
}
