//! Failure detection (SWIM §3 and §4.3): once per protocol period, probe the next member of a
//! shuffled round-robin order; without an Ack by `probe_timeout_ms`, ask `indirect_probes` others
//! to probe it; without any Ack by the end of the period, and without any other message from it
//! since the probe began, suspect it. A Ping whose Ack has not come is sent again every half
//! timeout until the period ends, and a relay pings once more too: on a link that loses one
//! message in ten, one lost datagram must not be enough to suspect a member. Suspects that do not refute within
//! the suspicion timeout are declared Dead. Also relays other members' indirect probes.
//!
//! The local health score (Lifeguard §4.1) lives here: a failed probe raises it, a probe
//! answered lowers it, and the period and timeout stretch by `1 + score`, so a node that is
//! itself slow or losing packets probes more patiently instead of blaming its peers.
//!
//! Owns the probe in flight, the round-robin order, the relayed probes and the health score;
//! member records and their precedence belong to the parent module. Sends only through the
//! outbox.

use super::{ClockSample, MemberState, Membership, Outgoing, SwimMessage, Via};
use crate::clock::NodeId;
use core::net::SocketAddr;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// Relayed probes kept at once; PingReqs beyond it are ignored, so a flood cannot grow memory.
const MAX_RELAYS: usize = 1024;
/// Pings whose sending time is remembered (to time their Acks); the oldest go first.
const MAX_TIMED_PINGS: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Prober {
    /// The rest of this round's order, taken from the back (SWIM §4.3: every member is probed
    /// once per round, in a fresh random order each round).
    ring: Vec<NodeId>,
    current: Option<Probe>,
    next_probe_ms: u64,
    last_id: u64,
    /// Our probe number for a relayed Ping -> who asked, and under which number.
    relays: BTreeMap<u64, Relay>,
    /// Probe number -> when we sent that Ping, to time its Ack (a clock sample).
    sent_ms: BTreeMap<u64, u64>,
    /// The local health score (0 = healthy).
    health: u32,
    /// Members this node's own probes suspected (each suspicion it raised, right or wrong).
    raised: u64,
}

/// Our probe in flight.
#[derive(Debug)]
struct Probe {
    id: u64,
    target: NodeId,
    started_ms: u64,
    /// When the PingReqs went out.
    indirect_ms: Option<u64>,
    /// When the Ping is sent again if no Ack has come.
    resend_ms: u64,
}

#[derive(Debug)]
struct Relay {
    requester: SocketAddr,
    probe: u64,
    expires_ms: u64,
    target_addr: SocketAddr,
    /// When the relayed Ping is sent once more if no Ack has come; None once it was.
    resend_ms: Option<u64>,
}

impl Prober {
    /// A probe number not used before by this node, for a Ping sent at `now_ms`. Pings sent for
    /// other reasons (joining, announcing) take one too: their Acks time the round trip (a clock
    /// sample) and otherwise match nothing.
    pub(super) fn fresh_id(&mut self, now_ms: u64) -> u64 {
        self.last_id += 1;
        if self.sent_ms.len() >= MAX_TIMED_PINGS {
            self.sent_ms.pop_first();
        }
        self.sent_ms.insert(self.last_id, now_ms);
        self.last_id
    }

    /// When the Ping numbered `probe` was sent, once (a second Ack for it times nothing).
    pub(super) fn take_sent(&mut self, probe: u64) -> Option<u64> {
        self.sent_ms.remove(&probe)
    }

    /// Forgets the sending times of Pings older than `before_ms` (their Acks are lost or late).
    pub(super) fn forget_sent_before(&mut self, before_ms: u64) {
        self.sent_ms.retain(|_, sent| *sent >= before_ms);
    }

    pub(super) fn abandon(&mut self) {
        self.current = None;
    }

    pub(super) fn health(&self) -> u32 {
        self.health
    }

    pub(super) fn raised(&self) -> u64 {
        self.raised
    }

    /// Something suggests that this node is the unhealthy one.
    pub(super) fn worse(&mut self, max: u32) {
        self.health = (self.health + 1).min(max);
    }

    fn better(&mut self) {
        self.health = self.health.saturating_sub(1);
    }

    /// The probe period and timeout, stretched by the health score.
    fn timings(&self, interval_ms: u64, timeout_ms: u64) -> (u64, u64) {
        let scale = 1 + u64::from(self.health);
        (interval_ms * scale, timeout_ms * scale)
    }
}

impl Probe {
    /// When the probe moves to its next step: indirect probes, then the verdict.
    fn deadline_ms(&self, interval: u64, timeout: u64) -> u64 {
        match self.indirect_ms {
            None => self.started_ms + timeout,
            // The indirect probes get the rest of the period. A tick that comes late (this process
            // was paused or starved) extends it rather than blaming the target for our own delay.
            Some(sent) => (self.started_ms + interval).max(sent + (interval - timeout)),
        }
    }
}

impl Membership {
    pub(super) fn tick_probe(
        &mut self,
        now_ms: u64,
        rng: &mut impl rand::Rng,
        out: &mut Vec<Outgoing>,
    ) {
        self.prober
            .relays
            .retain(|_, relay| relay.expires_ms > now_ms);
        for (id, relay) in self.prober.relays.iter_mut() {
            if relay.resend_ms.is_some_and(|at| at <= now_ms) {
                relay.resend_ms = None;
                out.push(Outgoing {
                    to: relay.target_addr,
                    msg: SwimMessage::Ping { probe: *id },
                });
            }
        }
        self.prober
            .forget_sent_before(now_ms.saturating_sub(2 * self.config.probe_interval_ms));
        if self.me.state == MemberState::Left {
            return;
        }
        self.advance_probe(now_ms, rng, out);
        if self.prober.current.is_none() && now_ms >= self.prober.next_probe_ms {
            if let Some(target) = self.next_target(rng) {
                let id = self.prober.fresh_id(now_ms);
                out.push(Outgoing {
                    to: self.peers[&target].member.gossip_addr,
                    msg: SwimMessage::Ping { probe: id },
                });
                let (interval, timeout) = self.probe_timings();
                self.prober.current = Some(Probe {
                    id,
                    target,
                    started_ms: now_ms,
                    indirect_ms: None,
                    resend_ms: now_ms + resend_after(timeout),
                });
                self.prober.next_probe_ms = now_ms + interval;
            }
        }
    }

    /// The probe period and timeout now (stretched by the local health score).
    fn probe_timings(&self) -> (u64, u64) {
        self.prober
            .timings(self.config.probe_interval_ms, self.config.probe_timeout_ms)
    }

    /// Moves the probe in flight on: the Ping again every half timeout, PingReqs after the
    /// timeout, a verdict at the end.
    fn advance_probe(&mut self, now_ms: u64, rng: &mut impl rand::Rng, out: &mut Vec<Outgoing>) {
        let (interval, timeout) = self.probe_timings();
        let Some(mut probe) = self.prober.current.take() else {
            return;
        };
        let Some(peer) = self.peers.get(&probe.target) else {
            return;
        };
        let target = peer.member.clone();
        if peer.heard_ms.is_some_and(|heard| heard >= probe.started_ms) {
            // No Ack, but the member itself sent something since: it is up, and it reaches us.
            return;
        }
        if now_ms < probe.deadline_ms(interval, timeout) {
            if now_ms >= probe.resend_ms {
                // The Ping or its Ack may have been lost.
                out.push(Outgoing {
                    to: target.gossip_addr,
                    msg: SwimMessage::Ping { probe: probe.id },
                });
                probe.resend_ms = now_ms + resend_after(timeout);
            }
            self.prober.current = Some(probe);
            return;
        }
        if probe.indirect_ms.is_none() {
            out.push(Outgoing {
                to: target.gossip_addr,
                msg: SwimMessage::Ping { probe: probe.id },
            });
            probe.resend_ms = now_ms + resend_after(timeout);
            let relays: Vec<SocketAddr> = self
                .peers
                .values()
                .filter(|p| p.member.state == MemberState::Alive && p.member.id != target.id)
                .map(|p| p.member.gossip_addr)
                .collect();
            for relay in relays.choose_multiple(rng, self.config.indirect_probes) {
                out.push(Outgoing {
                    to: *relay,
                    msg: SwimMessage::PingReq {
                        probe: probe.id,
                        target: target.id.clone(),
                        target_addr: target.gossip_addr,
                    },
                });
            }
            probe.indirect_ms = Some(now_ms);
            self.prober.current = Some(probe);
            return;
        }
        // No Ack, direct or relayed, for a whole period: suspect it (incarnation unchanged). A
        // member already Suspect keeps its running timer, which this confirms; Dead or Left ones
        // are not probed again.
        self.prober.worse(self.config.max_local_health);
        match target.state {
            MemberState::Alive => {
                self.prober.raised += 1;
                self.apply(now_ms, target.with_state(MemberState::Suspect), Via::Local);
                self.announce = true;
            }
            MemberState::Suspect => {
                let me = self.me.id.clone();
                if let Some(suspicion) = self
                    .peers
                    .get_mut(&target.id)
                    .and_then(|p| p.suspicion.as_mut())
                {
                    suspicion.confirm(&me);
                }
            }
            MemberState::Dead | MemberState::Left => {}
        }
    }

    /// The next member to probe, skipping those no longer up; a new shuffled round when the
    /// current one is exhausted.
    fn next_target(&mut self, rng: &mut impl rand::Rng) -> Option<NodeId> {
        for _ in 0..2 {
            while let Some(id) = self.prober.ring.pop() {
                if self.peers.get(&id).is_some_and(|p| p.member.state.is_up()) {
                    return Some(id);
                }
            }
            self.prober.ring = self
                .peers
                .values()
                .filter(|p| p.member.state.is_up())
                .map(|p| p.member.id.clone())
                .collect();
            self.prober.ring.shuffle(rng);
        }
        None
    }

    /// Suspects whose timeout has passed are declared Dead at the same incarnation.
    pub(super) fn expire_suspicions(&mut self, now_ms: u64) {
        let expired: Vec<_> = self
            .peers
            .values()
            .filter(|p| {
                p.suspicion
                    .as_ref()
                    .is_some_and(|suspicion| suspicion.deadline_ms() <= now_ms)
            })
            .map(|p| p.member.with_state(MemberState::Dead))
            .collect();
        for verdict in expired {
            self.apply(now_ms, verdict, Via::Local);
            self.announce = true;
        }
    }

    /// An Ack from `sender`, sent at its wall clock `clock_ms`, arrived at `now_ms`.
    pub(super) fn handle_ack(
        &mut self,
        now_ms: u64,
        sender: &NodeId,
        probe: u64,
        clock_ms: u64,
        out: &mut Vec<Outgoing>,
    ) {
        if let Some(sent_ms) = self.prober.take_sent(probe) {
            // `clock_ms` 0 is no clock: the codec gives it to an Ack from a peer speaking codec
            // version 2, whose Acks carried none (no wall clock reads 1970 to the millisecond).
            if clock_ms != 0 {
                // Our times are timer times: the peer's clock is compared with our wall clock.
                let clock_ms = clock_ms.saturating_add(self.wall_behind_ms);
                self.record_clock(sender, ClockSample::new(sent_ms, clock_ms, now_ms));
            }
        }
        if self.prober.current.as_ref().is_some_and(|p| p.id == probe) {
            self.prober.current = None;
            self.prober.better();
        } else if let Some(relay) = self.prober.relays.remove(&probe) {
            out.push(Outgoing {
                to: relay.requester,
                msg: SwimMessage::Ack {
                    probe: relay.probe,
                    clock_ms: self.wall(now_ms),
                },
            });
        }
    }

    /// Probes `target` for the member at `from_addr`. Returns whether that member was answered
    /// directly (it asked about us).
    pub(super) fn handle_ping_req(
        &mut self,
        now_ms: u64,
        from_addr: SocketAddr,
        probe: u64,
        target: NodeId,
        target_addr: SocketAddr,
        out: &mut Vec<Outgoing>,
    ) -> bool {
        if target == self.me.id {
            out.push(Outgoing {
                to: from_addr,
                msg: SwimMessage::Ack {
                    probe,
                    clock_ms: self.wall(now_ms),
                },
            });
            return true;
        }
        if self.me.state == MemberState::Left || self.prober.relays.len() >= MAX_RELAYS {
            return false;
        }
        // Only a member this node knows at that very address is probed for someone else: the
        // node is never a reflector that pings any address a stranger names.
        let known = self
            .peers
            .get(&target)
            .is_some_and(|p| p.member.gossip_addr == target_addr && p.member.state.is_up());
        if !known {
            return false;
        }
        let id = self.prober.fresh_id(now_ms);
        self.prober.relays.insert(
            id,
            Relay {
                requester: from_addr,
                probe,
                expires_ms: now_ms + self.config.probe_interval_ms,
                target_addr,
                resend_ms: Some(now_ms + resend_after(self.config.probe_timeout_ms)),
            },
        );
        out.push(Outgoing {
            to: target_addr,
            msg: SwimMessage::Ping { probe: id },
        });
        false
    }

    pub(super) fn next_probe_wakeup_ms(&self) -> Option<u64> {
        if self.me.state == MemberState::Left {
            return None;
        }
        let (interval, timeout) = self.probe_timings();
        let relays = self.prober.relays.values().filter_map(|r| r.resend_ms);
        let probe = match &self.prober.current {
            Some(probe) => Some(probe.deadline_ms(interval, timeout).min(probe.resend_ms)),
            None if self.peers.values().any(|p| p.member.state.is_up()) => {
                Some(self.prober.next_probe_ms)
            }
            None => None,
        };
        relays.chain(probe).min()
    }
}

/// How long a Ping waits for its Ack before it is sent again: half the probe timeout.
fn resend_after(timeout_ms: u64) -> u64 {
    (timeout_ms / 2).max(1)
}
