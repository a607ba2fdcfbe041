//! One running suspicion and its timeout, which shrinks as independent confirmations arrive
//! (Lifeguard §4.2, "dynamic suspicion timeouts"): a member suspected by one observer alone
//! gets the longest time to refute, one that several observers suspect is declared Dead sooner.
//!
//! Plain data and arithmetic: the caller says who confirmed and when; nothing here reads a clock.

use crate::clock::NodeId;
use std::collections::BTreeSet;

/// A suspicion of one member at one incarnation, as this node holds it.
#[derive(Debug)]
pub(super) struct Suspicion {
    started_ms: u64,
    /// The members that suspected it as far as this node knows: whoever told this node first
    /// (or this node itself), then every other member that sent the suspicion or, for this node,
    /// whose own probe of the suspect failed too. Confirmations are all but the first.
    by: BTreeSet<NodeId>,
    /// Timeout with no confirmation, and with `expected` of them.
    max_ms: u64,
    min_ms: u64,
    /// How many confirmations shrink the timeout to `min_ms` (Lifeguard's K).
    expected: usize,
}

impl Suspicion {
    /// A suspicion heard of first from `first` (`None`: from a record of unknown origin).
    pub(super) fn new(
        now_ms: u64,
        first: Option<NodeId>,
        (min_ms, max_ms): (u64, u64),
        expected: usize,
    ) -> Self {
        Suspicion {
            started_ms: now_ms,
            by: first.into_iter().collect(),
            max_ms: max_ms.max(min_ms),
            min_ms,
            expected,
        }
    }

    /// `by` suspects the member too. Returns whether that is a new confirmation.
    pub(super) fn confirm(&mut self, by: &NodeId) -> bool {
        self.by.len() <= self.expected && self.by.insert(by.clone())
    }

    pub(super) fn confirmations(&self) -> usize {
        self.by.len().saturating_sub(1)
    }

    /// When the member is declared Dead unless it refutes first:
    /// `max - (max - min) * ln(c + 1) / ln(k + 1)` after the start, never under `min`, for `c`
    /// confirmations of `k` expected; `min` when none can be expected.
    pub(super) fn deadline_ms(&self) -> u64 {
        let timeout = if self.expected == 0 {
            self.min_ms
        } else {
            let c = self.confirmations().min(self.expected) as f64;
            let fraction = (c + 1.0).ln() / (self.expected as f64 + 1.0).ln();
            let span = (self.max_ms - self.min_ms) as f64;
            (self.max_ms as f64 - span * fraction).round() as u64
        };
        self.started_ms + timeout.max(self.min_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> NodeId {
        NodeId::new(name.to_string()).unwrap()
    }

    #[test]
    fn the_timeout_falls_from_max_to_min_as_confirmations_arrive() {
        let mut s = Suspicion::new(1_000, Some(id("a")), (2_000, 8_000), 3);
        assert_eq!(s.deadline_ms(), 9_000);
        assert!(s.confirm(&id("b")));
        let one = s.deadline_ms();
        assert!(!s.confirm(&id("b")), "the same member confirms once");
        assert_eq!(s.deadline_ms(), one);
        assert!(s.confirm(&id("c")));
        let two = s.deadline_ms();
        assert!(s.confirm(&id("d")));
        assert_eq!(s.deadline_ms(), 3_000);
        assert!(9_000 > one && one > two && two > 3_000, "{one} {two}");
        assert!(!s.confirm(&id("e")), "no more than expected are counted");
        assert_eq!(s.deadline_ms(), 3_000);
    }

    #[test]
    fn with_no_one_to_confirm_the_timeout_is_the_minimum() {
        let s = Suspicion::new(0, Some(id("a")), (2_000, 8_000), 0);
        assert_eq!(s.deadline_ms(), 2_000);
    }
}
