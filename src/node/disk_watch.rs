//! Whether the data directory's file system has room for more writes. Below a reserve of free
//! space the node refuses client writes (507 `insufficient_storage`) and peers' states (rumors,
//! anti-entropy), so the database never reaches a full disk: every acknowledged write stays
//! readable, and the node takes writes again by itself once space is back (with some margin, so
//! it does not flap). Tombstone collection goes on: it frees space.
//!
//! Pure: the free space is read through the store when a check is due, and time comes in as an
//! argument.

/// Milliseconds between checks of the free space.
const CHECK_EVERY_MS: u64 = 1_000;

/// The free-space verdict, kept between checks.
#[derive(Clone, Debug)]
pub(super) struct DiskWatch {
    /// Below this many free bytes, the disk counts as full.
    reserve: u64,
    full: bool,
    free: Option<u64>,
    next_check_ms: u64,
}

impl DiskWatch {
    pub(super) fn new(reserve: u64) -> Self {
        DiskWatch {
            reserve,
            full: false,
            free: None,
            next_check_ms: 0,
        }
    }

    /// Whether writes are refused.
    pub(super) fn is_full(&self) -> bool {
        self.full
    }

    /// Free bytes at the last check (`None`: unknown, as for a memory store).
    pub(super) fn free(&self) -> Option<u64> {
        self.free
    }

    /// Reads the free space with `free` if a check is due at `now_ms` (or `force`); returns the
    /// new verdict when it changed.
    pub(super) fn check(
        &mut self,
        now_ms: u64,
        force: bool,
        free: impl FnOnce() -> Option<u64>,
    ) -> Option<bool> {
        if !force && now_ms < self.next_check_ms {
            return None;
        }
        self.next_check_ms = now_ms + CHECK_EVERY_MS;
        self.free = free();
        let full = match self.free {
            None => false,
            // Room again only with half the reserve to spare, so that writes do not flap.
            Some(free) if self.full => free < self.reserve + self.reserve / 2,
            Some(free) => free < self.reserve,
        };
        (full != self.full).then(|| {
            self.full = full;
            full
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_is_full_below_the_reserve_and_has_room_again_above_one_and_a_half() {
        let mut watch = DiskWatch::new(100);
        assert_eq!(watch.check(0, false, || Some(150)), None);
        assert_eq!(watch.check(500, false, || Some(10)), None, "not due yet");
        assert_eq!(watch.check(1_000, false, || Some(99)), Some(true));
        assert!(watch.is_full());
        assert_eq!(watch.check(2_000, false, || Some(120)), None);
        assert_eq!(watch.check(3_000, false, || Some(150)), Some(false));
        assert_eq!(watch.check(3_001, true, || None), None);
        assert_eq!(watch.free(), None);
    }
}
