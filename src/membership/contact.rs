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
//!
//! A seed given by name is resolved again at every contact attempt (on Kubernetes a pod keeps its
//! name and changes its address when rescheduled): the attempt asks the driver to resolve it
//! ([`Membership::take_resolve_wanted`]), and the answer ([`Membership::seed_resolved`]) pings
//! every address the name has (a headless Service's name has one per pod, this node's own among
//! them, which is left out).

use super::{Member, MemberState, Membership, NamedSeed, Outgoing, SwimMessage};
use core::net::SocketAddr;
use rand::seq::SliceRandom;

/// The probe number of an introduction: no probe is ever numbered 0.
pub(super) const INTRODUCTION: u64 = 0;

/// One choice of the low-rate re-contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contact {
    Addr(SocketAddr),
    /// The seed name at this index in `seed_names`: resolved, then each address pinged.
    Name(usize),
}

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
            for i in 0..self.seed_names.len() {
                self.want_resolved(i);
            }
        }
        if now_ms >= self.next_rejoin_ms {
            self.next_rejoin_ms = now_ms + self.config.rejoin_interval_ms;
            match self.recontact_candidates(joined).choose(rng) {
                Some(Contact::Addr(addr)) => self.ping(*addr, now_ms, out),
                Some(Contact::Name(i)) => self.want_resolved(*i),
                None => {}
            }
        }
    }

    /// Seeds given by name (`host:port`), resolved by the driver at every contact attempt.
    pub fn with_seed_names(mut self, names: Vec<String>) -> Self {
        for name in names {
            if !self.seed_names.iter().any(|seed| seed.name == name) {
                self.seed_names.push(NamedSeed {
                    name,
                    addrs: Vec::new(),
                });
            }
        }
        self
    }

    /// Seed names a contact attempt waits to have resolved: the driver resolves each and hands
    /// the answer to [`Membership::seed_resolved`].
    pub fn take_resolve_wanted(&mut self) -> Vec<String> {
        std::mem::take(&mut self.resolve_wanted)
    }

    /// The driver resolved seed `name` to `addrs` (`None`: the resolution failed). Pings each
    /// address that is not this node's and not a member already up or gone; a failed
    /// resolution pings the addresses the name had last, if any.
    pub fn seed_resolved(
        &mut self,
        now_ms: u64,
        name: &str,
        addrs: Option<Vec<SocketAddr>>,
        out: &mut Vec<Outgoing>,
    ) {
        if self.me.state == MemberState::Left {
            return;
        }
        let Some(i) = self.seed_names.iter().position(|seed| seed.name == name) else {
            return;
        };
        if let Some(mut addrs) = addrs {
            addrs.sort_unstable();
            addrs.dedup();
            self.seed_names[i].addrs = addrs;
        }
        let targets: Vec<SocketAddr> = self.seed_names[i]
            .addrs
            .iter()
            .copied()
            .filter(|addr| self.worth_contacting(*addr))
            .collect();
        for addr in targets {
            self.ping(addr, now_ms, out);
        }
    }

    fn want_resolved(&mut self, i: usize) {
        let name = &self.seed_names[i].name;
        if !self.resolve_wanted.contains(name) {
            self.resolve_wanted.push(name.clone());
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
        let seeds = !self.seeds_to_contact().is_empty() || !self.seed_names.is_empty();
        let join = (!joined && seeds).then_some(self.next_join_ms);
        let rejoin = (!self.recontact_candidates(joined).is_empty()).then_some(self.next_rejoin_ms);
        join.into_iter().chain(rejoin).min()
    }

    /// Whether some other member is up.
    fn is_joined(&self) -> bool {
        self.peers.values().any(|p| p.member.state.is_up())
    }

    /// Seed addresses not known as the address of a member that is up or Left (those are
    /// contacted by probes, or not at all).
    fn seeds_to_contact(&self) -> Vec<SocketAddr> {
        self.seeds
            .iter()
            .copied()
            .filter(|seed| self.worth_contacting(*seed))
            .collect()
    }

    /// Whether a seed address may be pinged: not this node's, not a member's that is up or Left.
    fn worth_contacting(&self, addr: SocketAddr) -> bool {
        addr != self.me.gossip_addr
            && !self.own_addrs.contains(&addr)
            && !self
                .peers
                .values()
                .any(|p| p.member.gossip_addr == addr && p.member.state != MemberState::Dead)
    }

    /// What the low-rate re-contact picks from: every Dead member, and, once joined, the seeds
    /// (before that, all seeds are contacted every join interval anyway), each name once.
    fn recontact_candidates(&self, joined: bool) -> Vec<Contact> {
        let mut candidates: Vec<Contact> = self
            .peers
            .values()
            .filter(|p| p.member.state == MemberState::Dead)
            .map(|p| Contact::Addr(p.member.gossip_addr))
            .collect();
        if joined {
            for seed in self.seeds_to_contact() {
                if !candidates.contains(&Contact::Addr(seed)) {
                    candidates.push(Contact::Addr(seed));
                }
            }
            candidates.extend((0..self.seed_names.len()).map(Contact::Name));
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
