//! One measurement of a peer's clock against this node's, from a timed round trip (as
//! CockroachDB's RemoteClockMonitor does): a Ping leaves at our `sent_ms`, the Ack carries the
//! peer's wall clock as it answered, and arrives at our `received_ms`. The peer answered in
//! between, so its offset is `clock_ms - midpoint`, give or take half the round trip.
//!
//! Plain data: no table, no timers (the membership keeps the latest sample per peer; the node
//! judges whether its own clock is the odd one out).

/// A peer's clock offset from this node's, measured at `at_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// The peer's clock minus ours, in milliseconds (positive: the peer is ahead).
    pub offset_ms: i64,
    /// How far the true offset may be from `offset_ms`: half the round trip.
    pub uncertainty_ms: u64,
    /// When the measurement was taken (our clock).
    pub at_ms: u64,
}

impl ClockSample {
    /// The sample from a Ping sent at `sent_ms`, answered at the peer's `clock_ms` and received
    /// at `received_ms` (all milliseconds).
    pub fn new(sent_ms: u64, clock_ms: u64, received_ms: u64) -> Self {
        let received_ms = received_ms.max(sent_ms);
        let round_trip = received_ms - sent_ms;
        let midpoint = sent_ms + round_trip / 2;
        ClockSample {
            offset_ms: (i128::from(clock_ms) - i128::from(midpoint))
                .clamp(i64::MIN.into(), i64::MAX.into()) as i64,
            uncertainty_ms: round_trip.div_ceil(2),
            at_ms: received_ms,
        }
    }

    /// Whether the peer's clock is certainly more than `bound_ms` away from ours.
    pub fn beyond(&self, bound_ms: u64) -> bool {
        self.offset_ms
            .unsigned_abs()
            .saturating_sub(self.uncertainty_ms)
            > bound_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_taken_at_the_midpoint_with_half_the_round_trip_as_uncertainty() {
        let ahead = ClockSample::new(1_000, 31_010, 1_020);
        assert_eq!(
            ahead,
            ClockSample {
                offset_ms: 30_000,
                uncertainty_ms: 10,
                at_ms: 1_020
            }
        );
        assert!(ahead.beyond(500));
        let behind = ClockSample::new(1_000, 400, 1_000);
        assert_eq!((behind.offset_ms, behind.uncertainty_ms), (-600, 0));
        assert!(behind.beyond(500));
        // A slow round trip cannot prove an offset it does not exceed.
        assert!(!ClockSample::new(0, 1_500, 2_000).beyond(500));
        assert!(!ClockSample::new(1_000, 1_400, 1_020).beyond(500));
    }
}
