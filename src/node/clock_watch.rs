//! Whether this node's clock is the odd one out (CockroachDB's RemoteClockMonitor): each peer's
//! clock is measured by timed probe round trips ([`ClockSample`]); when most of the cluster is
//! certainly more than the skew bound away from this node, it is this node's clock that is wrong.
//! Such a node says so in its health, logs it, and refuses client writes rather than stamp them
//! with a clock that would make them beat later writes of every other node (or lose to earlier
//! ones).
//!
//! The verdict rests on the latest sample of every member that has not left, up or not: a node
//! cut off from its peers keeps the verdict it last had (a node whose clock was off must not start
//! writing again because a partition hides the evidence), and a fixed clock is cleared by the
//! next samples.
//!
//! Pure: samples come in as arguments.

use crate::membership::ClockSample;

/// What this node knows of its clock against the cluster's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockStatus {
    /// This node's clock is more than the bound away from a majority of the cluster (this node
    /// counted as agreeing with itself): it refuses client writes until that changes.
    pub out_of_bounds: bool,
    /// Peers measured (members that did not leave).
    pub measured: usize,
    /// Of those, the peers whose clocks are certainly more than the bound away from this one.
    pub beyond: usize,
    /// The median offset of the measured peers' clocks from this node's, in milliseconds
    /// (positive: they are ahead, so this node's clock is behind).
    pub median_offset_ms: i64,
}

/// Judges this node's clock from the latest `samples` of the peers that count (members that did
/// not leave: the caller picks them), against a bound of `bound_ms`. `joined`: some other member is
/// up; a node that has joined no one and whom every peer it hears from finds far off (its
/// traffic arrives outside the cluster key's freshness window, so it can join no one either) is
/// out of bounds too.
pub fn judge<'a>(
    samples: impl Iterator<Item = &'a ClockSample>,
    joined: bool,
    bound_ms: u64,
) -> ClockStatus {
    let mut offsets = Vec::new();
    let mut beyond = 0;
    for sample in samples {
        offsets.push(sample.offset_ms);
        beyond += usize::from(sample.beyond(bound_ms));
    }
    offsets.sort_unstable();
    let measured = offsets.len();
    ClockStatus {
        // A strict majority of the measured peers and this node: with one peer alone, neither
        // can tell whose clock is wrong, and neither stops while they can talk.
        out_of_bounds: beyond * 2 > measured + 1 || (!joined && beyond > 0 && beyond == measured),
        measured,
        beyond,
        median_offset_ms: offsets.get(measured / 2).copied().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(offsets: &[i64]) -> Vec<ClockSample> {
        offsets
            .iter()
            .map(|&offset_ms| ClockSample {
                offset_ms,
                uncertainty_ms: 5,
                at_ms: 100_000,
            })
            .collect()
    }

    fn status(offsets: &[i64]) -> ClockStatus {
        let s = samples(offsets);
        judge(s.iter(), true, 500)
    }

    #[test]
    fn a_clock_far_from_most_of_the_cluster_is_out_of_bounds() {
        // This node is 30 s ahead of both others (they read -30 s).
        let ahead = status(&[-30_000, -30_010]);
        assert!(ahead.out_of_bounds);
        assert_eq!((ahead.measured, ahead.beyond), (2, 2));
        assert_eq!(ahead.median_offset_ms, -30_000);
        // One of the two others is off: this node is not the odd one out.
        assert!(!status(&[-30_000, 3]).out_of_bounds);
        // Two nodes: neither can tell.
        assert!(!status(&[-30_000]).out_of_bounds);
        // Within the bound, or not certainly beyond it.
        assert!(!status(&[400, -503, 200]).out_of_bounds);
        // Five nodes, this one and another 5 minutes behind the other three.
        assert!(status(&[300_000, 300_002, 299_990, 10]).out_of_bounds);
    }

    #[test]
    fn one_peer_cannot_tell_unless_this_node_joined_no_one() {
        let s = samples(&[-30_000]);
        let one = judge(s.iter(), true, 500);
        assert_eq!((one.measured, one.out_of_bounds), (1, false));
        // Joined to no one, and far from the one peer it hears: out of bounds.
        let alone = judge(s.iter(), false, 500);
        assert!(alone.out_of_bounds);
    }
}
