//! What the sled store keeps to undo batches whose commit's sync failed: for every database key a
//! batch writes, the value it had before (sled hands it back on insert, or it is read first),
//! grouped by commit, with where the commit's log entries start. Once a commit's sync is known to
//! have completed, its entries are dropped; until then (a few commits at most, one per sync in
//! flight) they cost memory proportional to the writes.
//!
//! Owns no database and no file: [`super::SledStore::rollback`] applies what it returns.

use sled::IVec;
use std::collections::VecDeque;

/// Where a commit's entries start in the write-ahead logs: (log index, byte offset).
pub(super) type LogMark = (usize, u64);

#[derive(Default)]
pub(super) struct Commit {
    number: u64,
    /// (database key, its value before this commit's first write to it), in write order.
    pub(super) entries: Vec<(Vec<u8>, Option<IVec>)>,
    pub(super) log_mark: Option<LogMark>,
}

#[derive(Default)]
pub(super) struct UndoLog {
    /// What the batches applied since the last commit overwrote.
    current: Commit,
    /// Commits whose syncs are not yet known to have completed, oldest first.
    in_flight: VecDeque<Commit>,
    commits: u64,
}

impl UndoLog {
    /// `key` is about to be (or was just) overwritten; `old` is what it held.
    pub(super) fn record(&mut self, key: Vec<u8>, old: Option<IVec>) {
        self.current.entries.push((key, old));
    }

    /// The current commit's log entries start at `mark`, unless an earlier mark was noted.
    pub(super) fn mark_log(&mut self, mark: impl FnOnce() -> LogMark) {
        if self.current.log_mark.is_none() {
            self.current.log_mark = Some(mark());
        }
    }

    /// Closes the current commit; returns its number.
    pub(super) fn commit(&mut self) -> u64 {
        self.commits += 1;
        let mut done = std::mem::take(&mut self.current);
        done.number = self.commits;
        if !done.entries.is_empty() || done.log_mark.is_some() {
            self.in_flight.push_back(done);
        }
        self.commits
    }

    pub(super) fn commits(&self) -> u64 {
        self.commits
    }

    /// Commits up to `commit` are durable.
    pub(super) fn synced_through(&mut self, commit: u64) {
        while self.in_flight.front().is_some_and(|c| c.number <= commit) {
            self.in_flight.pop_front();
        }
    }

    /// Everything not known to be durable, oldest first (the current batches last).
    pub(super) fn take_all(&mut self) -> Vec<Commit> {
        let mut all: Vec<Commit> = self.in_flight.drain(..).collect();
        all.push(std::mem::take(&mut self.current));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_kept_until_known_to_be_synced() {
        let mut undo = UndoLog::default();
        undo.record(b"a".to_vec(), None);
        undo.mark_log(|| (0, 16));
        undo.mark_log(|| (0, 99));
        assert_eq!(undo.commit(), 1);
        assert_eq!(undo.commit(), 2); // nothing written: nothing to keep
        undo.record(b"b".to_vec(), Some(IVec::from(&b"old"[..])));
        assert_eq!(undo.commit(), 3);
        undo.record(b"c".to_vec(), None);
        undo.synced_through(1);
        let all = undo.take_all();
        let keys: Vec<&[u8]> = all
            .iter()
            .flat_map(|c| c.entries.iter().map(|(k, _)| k.as_slice()))
            .collect();
        assert_eq!(keys, [&b"b"[..], &b"c"[..]]);
        assert_eq!(all[0].log_mark, None);
        assert_eq!(undo.commits(), 3);
    }
}
