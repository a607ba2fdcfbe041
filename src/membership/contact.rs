//! Reaching out beyond the probe schedule: joining through seeds, re-contacting Dead members and
//! unanswered seeds at a low rate forever (so a healed partition re-forms with no restart), telling
//! a few members our news at once, and pinging a member only to carry its correction.
//!
//! Every message sent here is a Ping with a fresh probe number: its Ack matches nothing, what
//! counts is the envelope and piggybacked updates it carries both ways. The one exception is an
//! introduction: an Ack that answers nothing (probe 0), sent once to each member this node learned
//! of from someone else's gossip, so that its envelope makes this node known there at once (a
//! joining node learns every member from the first one it reaches, and introduces itself to each).
//! Left members are never contacted.

use super::{Member, MemberState, Membership, Outgoing, SwimMessage};
use core::net::SocketAddr;
use rand::seq::SliceRandom;

/// The probe number of an introduction: no probe is ever numbered 0.
pub(super) const INTRODUCTION: u64 = 0;

impl Membership {
    pub(super) fn tick_contact(
        &mut self,
        now_ms: u64,
        rng: &mut impl rand::Rng,
        out: &mut Vec<Outgoing>,
    ) {
        if self.me.state == MemberState::Left {
            return;
        }
        let joined = self.is_joined();
        if !joined && now_ms >= self.next_join_ms {
            self.next_join_ms = now_ms + self.config.join_interval_ms;
            for seed in self.seeds_to_contact() {
                self.ping(seed, now_ms, out);
            }
        }
        if now_ms >= self.next_rejoin_ms {
            self.next_rejoin_ms = now_ms + self.config.rejoin_interval_ms;
            if let Some(addr) = self.recontact_candidates(joined).choose(rng) {
                self.ping(*addr, now_ms, out);
            }
        }
    }

    /// Tells up to `indirect_probes` (at least one) random members that are up about our news: the
    /// driver piggybacks the freshest updates on these pings, and the Acks carry them back.
    pub(super) fn tick_announce(
        &mut self,
        now_ms: u64,
        rng: &mut impl rand::Rng,
        out: &mut Vec<Outgoing>,
    ) {
        if !std::mem::take(&mut self.announce) {
            return;
        }
        let up: Vec<SocketAddr> = self.alive_peers().iter().map(|m| m.gossip_addr).collect();
        for addr in up.choose_multiple(rng, self.config.indirect_probes.max(1)) {
            self.ping(*addr, now_ms, out);
        }
    }

    /// Introduces this node to the members it learned of from others: one Ack each, answering
    /// nothing, whose envelope the receiver applies (a Ping would make it push its member list
    /// back, which this node already has).
    pub(super) fn tick_introduce(&mut self, now_ms: u64, out: &mut Vec<Outgoing>) {
        let introductions = std::mem::take(&mut self.introductions);
        if self.me.state == MemberState::Left {
            return;
        }
        for to in introductions {
            out.push(Outgoing {
                to,
                msg: SwimMessage::Ack {
                    probe: INTRODUCTION,
                    clock_ms: self.wall(now_ms),
                },
            });
        }
    }

    /// When `sender` is out of date about itself and this message needs no reply of its own, a
    /// Ping gives the driver a reply to carry the correction. At most one per probe timeout per
    /// member, so two nodes cannot bounce pings while a correction is lost or ignored.
    pub(super) fn ping_to_correct(
        &mut self,
        now_ms: u64,
        sender: &Member,
        from_addr: SocketAddr,
        out: &mut Vec<Outgoing>,
    ) {
        if self.correction_for(sender).is_none() {
            return;
        }
        let gap = self.config.probe_timeout_ms;
        let Some(peer) = self.peers.get_mut(&sender.id) else {
            return;
        };
        if peer.corrected_ms.is_some_and(|last| now_ms < last + gap) {
            return;
        }
        peer.corrected_ms = Some(now_ms);
        self.ping(from_addr, now_ms, out);
    }

    pub(super) fn next_contact_wakeup_ms(&self) -> Option<u64> {
        if self.me.state == MemberState::Left {
            return None;
        }
        let joined = self.is_joined();
        let join = (!joined && !self.seeds_to_contact().is_empty()).then_some(self.next_join_ms);
        let rejoin = (!self.recontact_candidates(joined).is_empty()).then_some(self.next_rejoin_ms);
        join.into_iter().chain(rejoin).min()
    }

    /// Whether some other member is up.
    fn is_joined(&self) -> bool {
        self.peers.values().any(|p| p.member.state.is_up())
    }

    /// Seeds not known as the address of a member that is up or Left (those are contacted by
    /// probes, or not at all).
    fn seeds_to_contact(&self) -> Vec<SocketAddr> {
        self.seeds
            .iter()
            .filter(|seed| {
                !self
                    .peers
                    .values()
                    .any(|p| p.member.gossip_addr == **seed && p.member.state != MemberState::Dead)
            })
            .copied()
            .collect()
    }

    /// What the low-rate re-contact picks from: every Dead member, and, once joined, the seeds
    /// (before that, all seeds are pinged every join interval anyway).
    fn recontact_candidates(&self, joined: bool) -> Vec<SocketAddr> {
        let mut candidates: Vec<SocketAddr> = self
            .peers
            .values()
            .filter(|p| p.member.state == MemberState::Dead)
            .map(|p| p.member.gossip_addr)
            .collect();
        if joined {
            for seed in self.seeds_to_contact() {
                if !candidates.contains(&seed) {
                    candidates.push(seed);
                }
            }
        }
        candidates
    }

    fn ping(&mut self, to: SocketAddr, now_ms: u64, out: &mut Vec<Outgoing>) {
        let probe = self.prober.fresh_id(now_ms);
        out.push(Outgoing {
            to,
            msg: SwimMessage::Ping { probe },
        });
    }
}
