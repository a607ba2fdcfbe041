//! Timings and fan-outs of the membership protocol, with presets named by scenario, and the two
//! formulas derived from them (suspicion timeout and retransmission limit).
//!
//! Plain data: nothing here reads a clock or keeps state. Times are in milliseconds because the
//! protocol core takes time as `now_ms: u64`.

/// How the membership probes, suspects and gossips. Check a hand-made config with
/// [`MembershipConfig::validate`]; [`super::Membership::new`] refuses an invalid one.
///
/// With [`MembershipConfig::lan`] a killed member is first probed by someone within about one
/// probe interval, suspected when that probe's period ends and declared Dead one suspicion timeout
/// later; the verdict is announced at once. In a simulated 5-node cluster that takes 3.9 s in the
/// median and at most 4.8 s in 90% of runs (the tail is a member that happens to come late in
/// every prober's round-robin order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// The protocol period: every member probes one other member this often (SWIM's T').
    /// Milliseconds, > `probe_timeout_ms`. Lower detects faster and costs n messages per period
    /// cluster-wide; 1000 on a LAN, several seconds on a WAN.
    pub probe_interval_ms: u64,
    /// How long to wait for a direct Ack before asking others to probe. Milliseconds, from a few
    /// round-trip times up to about half of `probe_interval_ms`, so that the indirect probes have
    /// the rest of the period to come back.
    pub probe_timeout_ms: u64,
    /// How many members are asked to probe indirectly (SWIM's k). 0 to about 5; 3 makes a false
    /// suspicion from one lossy path unlikely. Also the number of members told directly of news
    /// (a verdict, a refutation, a leave).
    pub indirect_probes: usize,
    /// Suspicion timeout in probe intervals, before scaling by max(1, log10(n)) (Lifeguard):
    /// the timeout of a suspicion that enough other members confirmed. At least 1. Higher gives
    /// a paused or overloaded member more time to refute; lower detects faster. 3 to 5 is usual.
    pub suspicion_mult: u32,
    /// A suspicion no other member confirmed waits this many times longer (Lifeguard's β; the
    /// timeout then falls towards the minimum with each confirmation). At least 1 (1: no
    /// dynamic timeout). 2 by default (memberlist uses 6): a node cut off from everyone, which
    /// no one can confirm, declares the others dead about twice as late.
    pub suspicion_max_mult: u32,
    /// The most the local health score may reach (Lifeguard's S): a node whose own probes fail
    /// or that must refute suspicions of itself is probably the slow or lossy one, and probes
    /// `1 + score` times more slowly and patiently. 0 turns it off; memberlist uses 8.
    pub max_local_health: u32,
    /// Each update is piggybacked `retransmit_mult * ceil(log2(n + 1))` times, then dropped (SWIM
    /// §4.1). At least 1; raise it under heavy loss. 4 is usual.
    pub retransmit_mult: u32,
    /// While no other member is known to be up, every seed is pinged this often. Milliseconds, > 0.
    /// Short, so that a starting cluster forms quickly; seeds are few.
    pub join_interval_ms: u64,
    /// Once joined, one random Dead member or unanswered seed is pinged this often, forever, so
    /// that partitions heal without a restart. Milliseconds, > 0. It bounds how long a heal goes
    /// unnoticed; the cost is one datagram per interval.
    pub rejoin_interval_ms: u64,
    /// How many updates the driver piggybacks per datagram (the `max` it passes to
    /// [`super::Membership::updates_to_send`]). At least 1; one update is under 120 bytes encoded,
    /// so keep `max_piggyback * 120` well inside the datagram budget left by other payloads.
    pub max_piggyback: usize,
    /// A member Dead or Left this long is forgotten: no longer re-contacted, counted in the
    /// majority, listed or kept in any table. Milliseconds, > 0. Long, because a partition that
    /// outlasts it heals only through seeds (both sides forget each other); 3 days by default
    /// (Serf waits 24 hours to reap, memberlist less).
    pub reap_after_ms: u64,
}

impl MembershipConfig {
    /// A LAN: detects a killed node everywhere in about 4 s (under 5 s in 90% of cases), at the
    /// cost of one probe per node per 800 ms.
    pub fn lan() -> Self {
        MembershipConfig {
            probe_interval_ms: 800,
            probe_timeout_ms: 400,
            indirect_probes: 3,
            suspicion_mult: 3,
            suspicion_max_mult: 2,
            max_local_health: 8,
            retransmit_mult: 4,
            join_interval_ms: 500,
            rejoin_interval_ms: 2_000,
            max_piggyback: 8,
            reap_after_ms: 3 * 24 * 3_600_000,
        }
    }

    /// The deterministic simulator: the LAN shape with every period a multiple of 500 ms, so that
    /// a simulator stepping by 100, 250 or 500 ms hits each deadline exactly. Keep simulated
    /// one-way latency under `probe_timeout_ms / 2`.
    pub fn for_sim() -> Self {
        MembershipConfig {
            probe_interval_ms: 1_000,
            probe_timeout_ms: 500,
            ..MembershipConfig::lan()
        }
    }

    /// Checks the bounds documented on each field.
    pub fn validate(&self) -> Result<(), String> {
        let problems = [
            (self.probe_interval_ms == 0, "probe_interval_ms must be > 0"),
            (
                self.probe_timeout_ms == 0 || self.probe_timeout_ms >= self.probe_interval_ms,
                "probe_timeout_ms must be > 0 and < probe_interval_ms",
            ),
            (self.suspicion_mult == 0, "suspicion_mult must be >= 1"),
            (
                self.suspicion_max_mult == 0,
                "suspicion_max_mult must be >= 1",
            ),
            (self.retransmit_mult == 0, "retransmit_mult must be >= 1"),
            (self.join_interval_ms == 0, "join_interval_ms must be > 0"),
            (
                self.rejoin_interval_ms == 0,
                "rejoin_interval_ms must be > 0",
            ),
            (self.max_piggyback == 0, "max_piggyback must be >= 1"),
            (self.reap_after_ms == 0, "reap_after_ms must be > 0"),
        ];
        match problems.iter().find(|(bad, _)| *bad) {
            Some((_, problem)) => Err(problem.to_string()),
            None => Ok(()),
        }
    }

    /// How long a member stays Suspect before it is declared Dead, with `n` members up (this node
    /// included): `suspicion_mult * max(1, log10(n)) * probe_interval_ms`. It grows with the
    /// cluster because a suspicion takes about log n periods to reach everyone, the suspect
    /// included, and the suspect needs that long to hear of it and refute (Lifeguard §4.2).
    pub fn suspicion_timeout_ms(&self, n: usize) -> u64 {
        let scale = (n.max(1) as f64).log10().max(1.0);
        (self.suspicion_mult as f64 * scale * self.probe_interval_ms as f64).round() as u64
    }

    /// The suspicion timeout with enough confirmations, and with none (see
    /// [`MembershipConfig::suspicion_max_mult`]), with `n` members up.
    pub fn suspicion_bounds_ms(&self, n: usize) -> (u64, u64) {
        let min = self.suspicion_timeout_ms(n);
        (min, min * u64::from(self.suspicion_max_mult))
    }

    /// How many times one update is piggybacked with `n` members known:
    /// `retransmit_mult * ceil(log2(n + 1))` (SWIM §4.1; enough rounds for an epidemic to reach
    /// everyone with high probability).
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        // For n >= 1, the bit length of n is ceil(log2(n + 1)).
        let rounds = usize::BITS - n.max(1).leading_zeros();
        self.retransmit_mult * rounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        assert_eq!(MembershipConfig::lan().validate(), Ok(()));
        assert_eq!(MembershipConfig::for_sim().validate(), Ok(()));
        let bad = MembershipConfig {
            probe_timeout_ms: 1_000,
            ..MembershipConfig::lan()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn suspicion_timeout_grows_with_cluster_size() {
        let config = MembershipConfig::lan();
        assert_eq!(config.suspicion_timeout_ms(1), 2_400);
        assert_eq!(config.suspicion_timeout_ms(5), 2_400);
        assert_eq!(config.suspicion_timeout_ms(10), 2_400);
        assert_eq!(config.suspicion_timeout_ms(100), 4_800);
        assert_eq!(config.suspicion_timeout_ms(1_000), 7_200);
        assert!(config.suspicion_timeout_ms(50) > config.suspicion_timeout_ms(20));
    }

    #[test]
    fn retransmit_limit_is_a_multiple_of_ceil_log2_of_n_plus_one() {
        let config = MembershipConfig::lan();
        let rounds: Vec<u32> = [1, 2, 3, 4, 7, 8, 100]
            .iter()
            .map(|&n| config.retransmit_limit(n) / 4)
            .collect();
        assert_eq!(rounds, [1, 2, 2, 3, 3, 4, 7]);
    }
}
