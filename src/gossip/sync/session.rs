//! The initiator's side of an exchange: the session state machine that walks down the differing
//! subtrees and then repairs the differing leaves.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `Root` sent.
    Root,
    /// Walking down the tree, one level at a time.
    Descend,
    /// Exchanging key lists and states of the differing leaves.
    Repair,
    Done,
}

/// The initiator's side of one exchange with one peer.
#[derive(Clone, Debug)]
pub struct SyncSession {
    phase: Phase,
    /// Encoded size the requests aim to stay under.
    budget: usize,
    /// The tree level of `frontier` and `asked_nodes`.
    level: usize,
    /// Differing nodes at `level` whose children are still to be asked for.
    frontier: VecDeque<u16>,
    /// Differing nodes found so far at `level + 1`, ascending.
    next: Vec<u16>,
    /// The nodes of the outstanding `GetChildren`.
    asked_nodes: Vec<u16>,
    /// Differing leaves whose key lists are still to be asked for, ascending.
    leaves: VecDeque<u16>,
    /// A leaf whose key list arrived in part, with the keys so far.
    partial: Option<(u16, Vec<(StoreKey, HashPrefix)>)>,
    /// The leaves of the outstanding `Repair`.
    asked_leaves: Vec<u16>,
    /// Whether the outstanding `Repair` resumes `partial` (as its first leaf).
    asked_partial: bool,
    /// Keys whose local states the responder lacks or holds differently.
    push: VecDeque<StoreKey>,
    /// Keys whose remote states this replica lacks or holds differently.
    want: VecDeque<StoreKey>,
    /// The wanted keys of the outstanding `Repair`.
    asked_want: Vec<StoreKey>,
    /// Differing leaves fetched whole (this replica holds nothing), ascending.
    fetch: VecDeque<u16>,
    /// Where the first leaf of `fetch` resumes (its states arrived in part up to this key).
    fetch_after: Option<StoreKey>,
    /// The leaves of the outstanding `FetchLeaves`.
    asked_fetch: Vec<u16>,
    /// Whether this exchange may fetch whole leaves at all.
    may_fetch: bool,
    stats: SyncStats,
}

impl SyncSession {
    /// Opens an exchange: returns the session and the first request for the peer. With `fetch`,
    /// a replica that holds nothing fetches the differing leaves whole (`FetchLeaves`); without
    /// it, or holding anything, it compares key lists (`Repair`).
    pub fn start(source: &impl SyncSource, fetch: bool) -> (SyncSession, SyncMessage) {
        Self::start_within(source, MESSAGE_BUDGET, fetch)
    }

    pub(super) fn start_within(
        source: &impl SyncSource,
        budget: usize,
        fetch: bool,
    ) -> (SyncSession, SyncMessage) {
        let mut session = SyncSession {
            phase: Phase::Root,
            budget,
            may_fetch: fetch,
            level: 0,
            frontier: VecDeque::new(),
            next: Vec::new(),
            asked_nodes: Vec::new(),
            leaves: VecDeque::new(),
            partial: None,
            asked_leaves: Vec::new(),
            asked_partial: false,
            push: VecDeque::new(),
            want: VecDeque::new(),
            asked_want: Vec::new(),
            fetch: VecDeque::new(),
            fetch_after: None,
            asked_fetch: Vec::new(),
            stats: SyncStats::default(),
        };
        let request = SyncMessage::Root {
            root: source.merkle().root(),
        };
        session.stats.bytes_sent += request.encoded_len() as u64;
        (session, request)
    }

    /// The peer's reply arrived; returns what to send next, states to merge locally, and whether
    /// the exchange is over. The caller merges before the next call, though the exchange
    /// converges either way.
    pub fn handle(&mut self, source: &impl SyncSource, reply: SyncMessage) -> SyncStep {
        if self.phase == Phase::Done {
            return SyncStep {
                done: true,
                ..SyncStep::default()
            };
        }
        self.stats.rounds += 1;
        self.stats.bytes_received += reply.encoded_len() as u64;
        let mut merge = Vec::new();
        let fits = match (self.phase, reply) {
            (Phase::Root, SyncMessage::InSync) => {
                self.phase = Phase::Done;
                true
            }
            (Phase::Root, SyncMessage::Children { hashes }) => {
                self.phase = Phase::Descend;
                self.asked_nodes = vec![0];
                self.take_children(source, &hashes)
            }
            (Phase::Descend, SyncMessage::Children { hashes }) => {
                self.take_children(source, &hashes)
            }
            (
                Phase::Repair,
                SyncMessage::Repaired {
                    keys,
                    states,
                    answered,
                },
            ) => self.take_repaired(source, keys, states, answered, &mut merge),
            (
                Phase::Repair,
                SyncMessage::LeafStates {
                    states: PackedStates(states),
                    complete,
                },
            ) => self.take_leaf_states(states, complete, &mut merge),
            _ => false,
        };
        if !fits {
            self.stats.aborted = true;
            self.phase = Phase::Done;
        }
        let send = self.next_request(source);
        if let Some(request) = &send {
            self.stats.bytes_sent += request.encoded_len() as u64;
        } else {
            self.phase = Phase::Done;
        }
        SyncStep {
            done: send.is_none(),
            send,
            merge,
        }
    }

    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// Whether this exchange fetches whole leaves (this replica held nothing when it began).
    pub fn is_fetching(&self) -> bool {
        !self.fetch.is_empty() || !self.asked_fetch.is_empty()
    }

    /// Compares the children of the asked nodes with the local ones; returns false when the
    /// reply does not fit the request.
    fn take_children(&mut self, source: &impl SyncSource, hashes: &[HashPrefix]) -> bool {
        let asked = std::mem::take(&mut self.asked_nodes);
        if hashes.len() != asked.len() * FANOUT {
            return false;
        }
        let merkle = source.merkle();
        for (&node, theirs) in asked.iter().zip(hashes.chunks_exact(FANOUT)) {
            let mine = merkle.children(self.level, usize::from(node));
            for (c, (m, t)) in mine.iter().zip(theirs).enumerate() {
                if prefix(&m.hash) != *t {
                    // At most 16^4 - 1 = u16::MAX: the tree has 65,536 leaves.
                    self.next.push((usize::from(node) * FANOUT + c) as u16);
                }
            }
        }
        true
    }

    fn take_repaired(
        &mut self,
        source: &impl SyncSource,
        keys: Vec<LeafKeys>,
        states: Vec<(StoreKey, KeyState)>,
        answered: u32,
        merge: &mut Vec<(StoreKey, KeyState)>,
    ) -> bool {
        let asked_leaves = std::mem::take(&mut self.asked_leaves);
        let asked_want = std::mem::take(&mut self.asked_want);
        let answered = answered as usize;
        let covered = keys.len();
        // Check the whole reply before changing anything.
        if covered > asked_leaves.len() || answered > asked_want.len() {
            return false;
        }
        let in_order = keys
            .iter()
            .zip(&asked_leaves)
            .enumerate()
            .all(|(j, (entry, &leaf))| entry.leaf == leaf && (entry.complete || j + 1 == covered));
        let asked_anything = !asked_leaves.is_empty() || !asked_want.is_empty();
        // A correct responder always answers something, so a reply without progress would loop.
        if !in_order || (asked_anything && covered == 0 && answered == 0) {
            return false;
        }

        // What the reply did not cover goes back to the front of the queues, in order.
        for key in asked_want.into_iter().skip(answered).rev() {
            self.want.push_front(key);
        }
        let resumed = self.asked_partial && !asked_leaves.is_empty();
        let skip = if covered == 0 && resumed { 1 } else { covered };
        for &leaf in asked_leaves.iter().skip(skip).rev() {
            self.leaves.push_front(leaf);
        }

        let mut partial = self.partial.take();
        for (j, entry) in keys.into_iter().enumerate() {
            let mut theirs = match (j, resumed, partial.take()) {
                (0, true, Some((_, so_far))) => so_far,
                (_, _, other) => {
                    partial = other;
                    Vec::new()
                }
            };
            theirs.extend(entry.keys);
            if entry.complete {
                self.compare_leaf(source, entry.leaf, theirs);
            } else {
                self.partial = Some((entry.leaf, theirs));
            }
        }
        if partial.is_some() {
            // Not resumed this time (or not answered): keep it for the next request.
            self.partial = partial;
        }

        self.received(states, merge);
        true
    }

    /// Hands the states of the right kind for their keys to the caller to merge.
    fn received(
        &mut self,
        states: Vec<(StoreKey, KeyState)>,
        merge: &mut Vec<(StoreKey, KeyState)>,
    ) {
        merge.extend(
            states
                .into_iter()
                .filter(|(key, state)| kind_matches(key, state)),
        );
        self.stats.keys_received += merge.len() as u64;
    }

    /// Takes the states of whole leaves ([`SyncMessage::LeafStates`]); returns false when the
    /// reply does not fit the request.
    fn take_leaf_states(
        &mut self,
        states: Vec<(StoreKey, KeyState)>,
        complete: u32,
        merge: &mut Vec<(StoreKey, KeyState)>,
    ) -> bool {
        let asked = std::mem::take(&mut self.asked_fetch);
        let complete = complete as usize;
        if complete > asked.len() || (complete == 0 && states.is_empty()) {
            return false;
        }
        // Every state belongs to a leaf asked for, in order, none past the partial one; the
        // first leaf's resume point holds too.
        let covered = &asked[..(complete + 1).min(asked.len())];
        let mut position = 0;
        let mut last: Option<&StoreKey> = None;
        for (key, _) in &states {
            let leaf = merkle::bucket_of(key);
            let Some(offset) = covered[position..].iter().position(|&l| l == leaf) else {
                return false;
            };
            if offset > 0 {
                last = None;
            }
            position += offset;
            let floor = if position == 0 {
                last.or(self.fetch_after.as_ref())
            } else {
                last
            };
            if floor.is_some_and(|floor| key <= floor) {
                return false;
            }
            last = Some(key);
        }
        let partial = asked.get(complete).copied();
        let resume = match (partial, states.last()) {
            (Some(leaf), Some((key, _))) if merkle::bucket_of(key) == leaf => Some(key.clone()),
            (Some(_), _) if complete == 0 => self.fetch_after.clone(),
            _ => None,
        };
        for &leaf in asked[complete..].iter().rev() {
            self.fetch.push_front(leaf);
        }
        self.fetch_after = resume;
        self.received(states, merge);
        true
    }

    /// Queues the keys of one differing leaf: wanted where the responder holds something this
    /// replica lacks, pushed where this replica holds something the responder lacks.
    fn compare_leaf(
        &mut self,
        source: &impl SyncSource,
        leaf: u16,
        theirs: Vec<(StoreKey, HashPrefix)>,
    ) {
        let mut mine: BTreeMap<StoreKey, HashPrefix> = source.leaf_keys(leaf).into_iter().collect();
        for (key, hash) in theirs {
            match mine.remove(&key) {
                Some(own) if own == hash => {}
                Some(_) => {
                    self.push.push_back(key.clone());
                    self.want.push_back(key);
                }
                None => self.want.push_back(key),
            }
        }
        self.push.extend(mine.into_keys());
    }

    fn next_request(&mut self, source: &impl SyncSource) -> Option<SyncMessage> {
        if self.phase == Phase::Descend {
            if self.frontier.is_empty() {
                // This level is done: its differing children are the next frontier.
                self.level += 1;
                self.frontier = std::mem::take(&mut self.next).into();
            }
            if self.level == DEPTH {
                // A replica that holds nothing fetches every leaf whole (unless told not to);
                // others compare key lists.
                let differing = std::mem::take(&mut self.frontier);
                if self.may_fetch && source.merkle().root().count == 0 {
                    self.fetch = differing;
                } else {
                    self.leaves = differing;
                }
                self.phase = Phase::Repair;
            } else if self.frontier.is_empty() {
                // The roots differed but no child prefix does (the peer changed meanwhile).
                return None;
            } else {
                let n = self.frontier.len().min(MAX_NODES_PER_REQUEST);
                self.asked_nodes = self.frontier.drain(..n).collect();
                return Some(SyncMessage::GetChildren {
                    level: self.level as u8,
                    nodes: self.asked_nodes.clone(),
                });
            }
        }
        if self.phase == Phase::Repair {
            return self.next_repair(source);
        }
        None
    }

    fn next_repair(&mut self, source: &impl SyncSource) -> Option<SyncMessage> {
        if !self.fetch.is_empty() {
            let n = self.fetch.len().min(MAX_LEAVES_PER_REQUEST);
            self.asked_fetch = self.fetch.drain(..n).collect();
            return Some(SyncMessage::FetchLeaves {
                leaves: self.asked_fetch.clone(),
                after: self.fetch_after.clone(),
            });
        }
        loop {
            let idle = self.leaves.is_empty()
                && self.partial.is_none()
                && self.push.is_empty()
                && self.want.is_empty();
            if idle {
                return None;
            }
            let mut size = RESERVE;
            let mut leaves = Vec::new();
            let mut after = None;
            self.asked_partial = false;
            if self.push.len() + self.want.len() < QUEUE_LIMIT {
                if let Some((leaf, so_far)) = &self.partial {
                    leaves.push(*leaf);
                    after = so_far.last().map(|(key, _)| key.clone());
                    size += encoded_len(&after);
                    self.asked_partial = true;
                }
                while leaves.len() < MAX_LEAVES_PER_REQUEST {
                    let Some(leaf) = self.leaves.pop_front() else {
                        break;
                    };
                    leaves.push(leaf);
                }
                size += LEAF_INDEX_LEN * leaves.len();
            }

            let mut want = Vec::new();
            let mut want_size = 0;
            while want.len() < MAX_KEYS_PER_REQUEST {
                let Some(key) = self.want.pop_front() else {
                    break;
                };
                let len = encoded_len(&key);
                if want_size + len > WANT_BUDGET.min(self.budget) && !want.is_empty() {
                    self.want.push_front(key);
                    break;
                }
                want_size += len;
                want.push(key);
            }
            size += want_size;

            let mut push = Vec::new();
            while push.len() < MAX_KEYS_PER_REQUEST {
                let Some(key) = self.push.pop_front() else {
                    break;
                };
                // Read now rather than when queued: the replica may have merged since.
                let Some(state) = source.state(&key) else {
                    continue;
                };
                let len = encoded_len(&(&key, &state));
                // The first state goes even when alone it exceeds the budget.
                if size + len > self.budget && !push.is_empty() {
                    self.push.push_front(key);
                    break;
                }
                size += len;
                push.push((key, state));
            }

            if leaves.is_empty() && want.is_empty() && push.is_empty() {
                // Only vanished states were queued; the queues are shorter now, so go again.
                continue;
            }
            self.stats.keys_sent += push.len() as u64;
            self.asked_leaves = leaves.clone();
            self.asked_want = want.clone();
            return Some(SyncMessage::Repair {
                leaves,
                after,
                push,
                want,
            });
        }
    }
}
