//! Clocks and causality: node ids, replica ids, the hybrid logical clock (HLC), dots and version
//! vectors.
//!
//! Pure: the wall clock is never read here. Callers pass the current wall time in milliseconds, so
//! the same code runs under the real clock and the simulator's. Owns no I/O and no persistence; the
//! store persists the HLC high-water mark that [`Hlc::restore`] is given at start-up.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Longest node id accepted, in bytes.
pub const MAX_NODE_ID_LEN: usize = 64;

/// The stable name of a node (`n1`, `eu-west-3`, ...). Ties between equal timestamps are broken by
/// comparing node ids, so they are totally ordered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(String);

impl NodeId {
    /// Validates a node id: 1 to 64 bytes of ASCII letters, digits, `-`, `_` and `.`.
    pub fn new(id: impl Into<String>) -> Result<Self, String> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= MAX_NODE_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(NodeId(id))
        } else {
            Err(format!(
                "invalid node id {id:?}: use 1 to {MAX_NODE_ID_LEN} ASCII letters, digits, '-', '_' or '.'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for NodeId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NodeId::new(s)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One lifetime of a node's data: its node id and the storage epoch of its data directory. A new
/// or recovered directory gets a new epoch (random, never 0; 0 is the epoch of directories that
/// predate epochs), so a node that comes back empty under its old id never mints a dot or a rumor
/// sequence number its peers have already seen from an earlier lifetime.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId {
    pub node: NodeId,
    pub epoch: u64,
}

impl ReplicaId {
    pub fn new(node: NodeId, epoch: u64) -> Self {
        ReplicaId { node, epoch }
    }
}

/// `n1` for the first lifetime of a directory that predates epochs, `n1~3f2a…` otherwise.
impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch == 0 {
            write!(f, "{}", self.node)
        } else {
            write!(f, "{}~{:016x}", self.node, self.epoch)
        }
    }
}

/// An HLC timestamp: 48 bits of wall-clock milliseconds since the Unix epoch and a 16-bit logical
/// counter, packed into one `u64` so that timestamps compare as integers.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(u64);

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MAX: u64 = (1 << LOGICAL_BITS) - 1;

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn new(wall_ms: u64, logical: u16) -> Self {
        Timestamp((wall_ms << LOGICAL_BITS) | logical as u64)
    }

    pub fn from_raw(raw: u64) -> Self {
        Timestamp(raw)
    }

    pub fn raw(self) -> u64 {
        self.0
    }

    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MAX) as u16
    }

    /// The smallest timestamp greater than `self`, if any.
    fn successor(self) -> Option<Self> {
        self.0.checked_add(1).map(Timestamp)
    }
}

/// Rendered as the packed integer in decimal: it is what the HTTP API returns in `timestamp`,
/// `ETag` and `X-Hearsay-Timestamp`. It is sent as a JSON string because it exceeds 2^53.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A timestamp further ahead of a node's wall clock than the cluster's skew bound allows: a peer
/// whose clock runs ahead (or that lies), or this node's own clock, gone back behind timestamps
/// it already issued. Such a timestamp is never observed and never issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a timestamp {ahead_ms} ms ahead of this node's wall clock (the bound is {bound_ms} ms)")]
pub struct ClockAhead {
    /// How far ahead of the wall clock the timestamp is, in milliseconds.
    pub ahead_ms: u64,
    /// The bound it exceeds (`--max-clock-skew-ms`).
    pub bound_ms: u64,
}

/// The default bound on how far a timestamp may be ahead of a node's wall clock (as
/// CockroachDB's default maximum offset).
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 500;

/// A hybrid logical clock (Kulkarni et al., 2014). It issues strictly increasing timestamps that
/// stay close to the wall clock, and never goes backwards, even when the wall clock does.
///
/// It never takes in a timestamp more than `max_ahead_ms` ahead of the wall clock, so one peer
/// with a bad clock (or one lie) cannot drag it into the future, and it never issues one that far
/// ahead either: a write stamped so far ahead would beat later writes of every other node. So the
/// clock never saturates, and a node whose wall clock went back behind what it already issued
/// refuses to stamp until its wall clock catches up.
#[derive(Clone, Debug)]
pub struct Hlc {
    last: Timestamp,
    max_ahead_ms: u64,
}

impl Hlc {
    /// A clock that will only issue timestamps above `high_water_mark` (the greatest timestamp this
    /// node ever issued or observed, as persisted by the store), and never more than
    /// `max_ahead_ms` ahead of the wall clock.
    pub fn restore(high_water_mark: Timestamp, max_ahead_ms: u64) -> Self {
        Hlc {
            last: high_water_mark,
            max_ahead_ms,
        }
    }

    /// The greatest timestamp issued or observed so far; persist it to survive restarts.
    pub fn high_water_mark(&self) -> Timestamp {
        self.last
    }

    /// The bound, in milliseconds, on how far ahead of the wall clock a timestamp may be.
    pub fn max_ahead_ms(&self) -> u64 {
        self.max_ahead_ms
    }

    /// Whether `ts` is within the bound of wall time `wall_ms`.
    pub fn check(&self, ts: Timestamp, wall_ms: u64) -> Result<(), ClockAhead> {
        let ahead_ms = ts.wall_ms().saturating_sub(wall_ms);
        if ahead_ms > self.max_ahead_ms {
            return Err(ClockAhead {
                ahead_ms,
                bound_ms: self.max_ahead_ms,
            });
        }
        Ok(())
    }

    /// Issues a new timestamp for a local event at wall time `wall_ms`; refuses when the clock is
    /// already beyond the bound ahead of the wall clock (the wall clock went back).
    pub fn tick(&mut self, wall_ms: u64) -> Result<Timestamp, ClockAhead> {
        let wall = Timestamp::new(wall_ms, 0);
        let next = if wall > self.last {
            wall
        } else {
            // Same millisecond, or the wall clock went backwards: count logically. When the logical
            // counter is exhausted the packed value carries into the milliseconds, which keeps the
            // clock strictly increasing.
            self.last.successor().ok_or(ClockAhead {
                ahead_ms: u64::MAX,
                bound_ms: self.max_ahead_ms,
            })?
        };
        self.check(next, wall_ms)?;
        self.last = next;
        Ok(next)
    }

    /// Takes a timestamp seen from another node into account, so later local timestamps exceed
    /// it; refuses one beyond the bound ahead of wall time `wall_ms` (and changes nothing).
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) -> Result<(), ClockAhead> {
        self.check(remote, wall_ms)?;
        self.last = self.last.max(remote);
        Ok(())
    }

    /// Takes a timestamp from this node's own write-ahead log into account (it issued or observed
    /// it before a crash, so it was checked then).
    pub fn recover(&mut self, own: Timestamp) {
        self.last = self.last.max(own);
    }
}

/// One event of one replica: the `counter`-th event that `replica` generated (counters start at
/// 1).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub replica: ReplicaId,
    pub counter: u64,
}

impl Dot {
    pub fn new(replica: ReplicaId, counter: u64) -> Self {
        Dot { replica, counter }
    }
}

/// For each replica, the greatest counter such that all of its events up to it are included.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<ReplicaId, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The greatest contiguous counter seen from `replica` (0 when none).
    pub fn get(&self, replica: &ReplicaId) -> u64 {
        self.0.get(replica).copied().unwrap_or(0)
    }

    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(&dot.replica)
    }

    /// Raises the entry of `replica` to at least `counter`.
    pub fn advance(&mut self, replica: &ReplicaId, counter: u64) {
        if counter > self.get(replica) {
            self.0.insert(replica.clone(), counter);
        }
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VersionVector) {
        for (node, &counter) in &other.0 {
            self.advance(node, counter);
        }
    }

    /// True when every event in `other` is also in `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(node, &c)| self.get(node) >= c)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ReplicaId, u64)> {
        self.0.iter().map(|(n, &c)| (n, c))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_strictly_increasing_when_the_wall_clock_stalls_or_goes_back() {
        let mut hlc = Hlc::restore(Timestamp::ZERO, 500);
        let a = hlc.tick(1_000).unwrap();
        let b = hlc.tick(1_000).unwrap();
        let c = hlc.tick(600).unwrap();
        assert!(a < b && b < c);
        assert_eq!(c.wall_ms(), 1_000);
        assert_eq!(c.logical(), 2);
        let d = hlc.tick(2_000).unwrap();
        assert_eq!(d, Timestamp::new(2_000, 0));
    }

    #[test]
    fn restored_hlc_never_issues_below_its_high_water_mark() {
        let mut before = Hlc::restore(Timestamp::ZERO, 500);
        let issued = before.tick(5_000).unwrap();
        let mut after = Hlc::restore(before.high_water_mark(), 500);
        // The wall clock went back by 400 ms across the restart: within the bound.
        assert!(after.tick(4_600).unwrap() > issued);
        // Back by four seconds: it refuses to stamp rather than issue from the future.
        assert_eq!(
            after.tick(1_000),
            Err(ClockAhead {
                ahead_ms: 4_000,
                bound_ms: 500
            })
        );
        assert!(after.tick(5_000).unwrap() > issued);
    }

    #[test]
    fn observing_a_remote_timestamp_moves_the_clock_past_it() {
        let mut hlc = Hlc::restore(Timestamp::ZERO, 500);
        hlc.observe(Timestamp::new(9_000, 7), 8_600).unwrap();
        assert_eq!(hlc.tick(8_700), Ok(Timestamp::new(9_000, 8)));
    }

    #[test]
    fn logical_overflow_carries_into_milliseconds() {
        let mut hlc = Hlc::restore(Timestamp::new(10, u16::MAX), 500);
        assert_eq!(hlc.tick(10), Ok(Timestamp::new(11, 0)));
    }

    #[test]
    fn a_timestamp_beyond_the_bound_is_never_observed_and_the_clock_never_saturates() {
        let mut hlc = Hlc::restore(Timestamp::ZERO, 500);
        let end_of_time = Timestamp::from_raw(u64::MAX);
        assert!(hlc.observe(end_of_time, 1_000).is_err());
        assert!(hlc.observe(Timestamp::new(1_501, 0), 1_000).is_err());
        hlc.observe(Timestamp::new(1_500, 3), 1_000).unwrap();
        let a = hlc.tick(1_001).unwrap();
        let b = hlc.tick(1_002).unwrap();
        assert!(a < b && b.wall_ms() == 1_500);
        // A clock restored at the end of time (a store written before the bound existed) refuses
        // to stamp instead of issuing the same timestamp forever.
        let mut pinned = Hlc::restore(end_of_time, 500);
        assert!(pinned.tick(1_000).is_err());
    }

    #[test]
    fn node_ids_are_validated() {
        assert!(NodeId::new("n1").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a b").is_err());
        assert!(NodeId::new("x".repeat(65)).is_err());
    }

    #[test]
    fn version_vector_merge_is_pointwise_max() {
        let a = ReplicaId::new(NodeId::new("a").unwrap(), 0);
        let b = ReplicaId::new(NodeId::new("a").unwrap(), 7);
        let mut x = VersionVector::new();
        x.advance(&a, 3);
        let mut y = VersionVector::new();
        y.advance(&a, 1);
        y.advance(&b, 2);
        x.merge(&y);
        assert_eq!((x.get(&a), x.get(&b)), (3, 2));
        assert!(x.dominates(&y) && !y.dominates(&x));
    }
}
