//! How long writes made elsewhere took to arrive here: from a write's timestamp at its origin
//! to the moment this node merged it, as a histogram of fixed buckets (the driver exports it
//! as `hearsay_replication_lag_seconds`). Owns the buckets only: no clock of its own (the node
//! passes its time) and no I/O.
//!
//! Only last-writer-wins writes (the kv keyspace) carry the time they were made; set and
//! counter deltas are not timed. The lag is measured against this node's clock, so between
//! machines it includes the clocks' offset (which `/v1/health` bounds, see `clock_watch.rs`).

use crate::crdt::KeyState;

/// Upper bounds of the buckets (milliseconds), finest where replication on a LAN lands; a
/// last bucket (`+Inf`) takes the rest.
pub const LAG_BOUNDS_MS: [u64; 16] = [
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 200, 500, 1_000, 5_000, 30_000,
];

/// Cumulative counts of replication lags, one per bucket of [`LAG_BOUNDS_MS`] plus `+Inf`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationLag {
    /// Lags per bucket (not cumulative): `counts[i]` fell in `(LAG_BOUNDS_MS[i-1],
    /// LAG_BOUNDS_MS[i]]`, the last one above every bound.
    counts: [u64; LAG_BOUNDS_MS.len() + 1],
    sum_ms: u64,
    count: u64,
}

impl ReplicationLag {
    /// Records the lag of `delta`, made elsewhere and merged here at `now_ms` (wall clock),
    /// when it says when it was made. A write stamped ahead of this clock counts as 0.
    pub fn record(&mut self, now_ms: u64, delta: &KeyState) {
        if let KeyState::Register(register) = delta {
            self.record_ms(now_ms.saturating_sub(register.timestamp.wall_ms()));
        }
    }

    pub fn record_ms(&mut self, lag_ms: u64) {
        let bucket = LAG_BOUNDS_MS
            .iter()
            .position(|&bound| lag_ms <= bound)
            .unwrap_or(LAG_BOUNDS_MS.len());
        self.counts[bucket] += 1;
        self.sum_ms = self.sum_ms.saturating_add(lag_ms);
        self.count += 1;
    }

    /// Lags recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the lags recorded (milliseconds).
    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }

    /// Each bucket's upper bound (milliseconds; `None` for `+Inf`) and its count (not
    /// cumulative).
    pub fn buckets(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &n)| (LAG_BOUNDS_MS.get(i).copied(), n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{NodeId, Timestamp};
    use crate::crdt::LwwRegister;

    #[test]
    fn a_lag_lands_in_the_first_bucket_whose_bound_holds_it() {
        let mut lag = ReplicationLag::default();
        for ms in [0, 1, 2, 20, 21, 40_000] {
            lag.record_ms(ms);
        }
        let counts: Vec<(Option<u64>, u64)> = lag.buckets().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            counts,
            vec![
                (Some(1), 2),
                (Some(2), 1),
                (Some(20), 1),
                (Some(30), 1),
                (None, 1)
            ]
        );
        assert_eq!((lag.count(), lag.sum_ms()), (6, 40_044));
    }

    #[test]
    fn a_register_is_timed_from_its_timestamp_and_one_from_the_future_counts_as_zero() {
        let node = NodeId::new("a").unwrap();
        let at = |ms: u64| {
            KeyState::Register(LwwRegister::write(
                Timestamp::from_raw(ms << 16),
                node.clone(),
                None,
            ))
        };
        let mut lag = ReplicationLag::default();
        lag.record(10_007, &at(10_000));
        lag.record(10_000, &at(10_500));
        assert_eq!(lag.sum_ms(), 7);
        assert_eq!(lag.count(), 2);
    }
}
