//! The time a core's timers run on: its wall clock with every step back absorbed.
//!
//! Probes, suspicions, exchanges, collection passes and the like are scheduled in this time, so a
//! wall clock stepped back by D (an operator or NTP fixing a clock that ran ahead) does not stall
//! them for D. Forward steps pass through, as they do for the wall clock. What compares with
//! timestamps or with other nodes' clocks (the HLC, the skew bound, the minimum age of a
//! tombstone, clock samples) keeps using the wall clock: [`TimerClock::wall`] gives it back.
//!
//! Pure arithmetic; the core converts at its entry points.

/// Converts the wall times the driver passes in to timer time and back.
#[derive(Debug, Default)]
pub(super) struct TimerClock {
    /// The last wall time seen.
    last_wall_ms: Option<u64>,
    /// How far the wall clock was stepped back in all, since the core started.
    behind_ms: u64,
}

impl TimerClock {
    /// The timer time at wall time `wall_ms` (a wall time before the last one seen is a step back,
    /// absorbed from now on).
    pub(super) fn timer(&mut self, wall_ms: u64) -> u64 {
        if let Some(last) = self.last_wall_ms {
            if wall_ms < last {
                self.behind_ms = self.behind_ms.saturating_add(last - wall_ms);
            }
        }
        self.last_wall_ms = Some(wall_ms);
        wall_ms.saturating_add(self.behind_ms)
    }

    /// The wall time at timer time `timer_ms`.
    pub(super) fn wall(&self, timer_ms: u64) -> u64 {
        timer_ms.saturating_sub(self.behind_ms)
    }

    /// How far timer time is ahead of the wall clock.
    pub(super) fn behind_ms(&self) -> u64 {
        self.behind_ms
    }
}

#[cfg(test)]
mod tests {
    use super::TimerClock;

    #[test]
    fn a_step_back_is_absorbed_and_a_step_forward_passes_through() {
        let mut clock = TimerClock::default();
        assert_eq!(clock.timer(100_000), 100_000);
        assert_eq!(clock.timer(100_500), 100_500);
        // Stepped back by 30 s: timer time goes on from where it was.
        assert_eq!(clock.timer(70_500), 100_500);
        assert_eq!(clock.timer(71_000), 101_000);
        assert_eq!(clock.wall(101_000), 71_000);
        // Stepped forward by a minute: so is timer time.
        assert_eq!(clock.timer(131_000), 161_000);
        assert_eq!(clock.behind_ms(), 30_000);
    }
}
