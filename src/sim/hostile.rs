//! A hostile participant for the simulator: not a core, but something that joins like a member
//! (every datagram it sends carries a plausible [`Member`] envelope, it answers probes and
//! refutes verdicts about itself, so the cluster keeps it as a live member) and then sends
//! well-formed lies at random: registers and anti-entropy states stamped far in the future,
//! states of the wrong kind for their key, membership updates with impossible incarnations about
//! others and about the target, plausible suspect and dead verdicts about members (which only the
//! member itself can refute), horizons from the future, `Forget` frames naming live values,
//! indirect probes of addresses that are no member, and anti-entropy requests from an unknown id.
//!
//! Each lie says which drop counter of [`crate::node::ClusterStats`] its target must raise
//! ([`Lie::counted_as`]); the simulator checks it on delivery and reports it
//! ([`super::LieReport`]). Insider lies (stamped within the skew bound, so no clock check can
//! refuse them, and plausible verdicts that a member left) are sent only when [`Hostile::new`] is
//! told to.
//!
//! Owns no clock and no network: the simulator gives it the time and carries its messages.

use crate::clock::{NodeId, Timestamp};
use crate::crdt::{KeyState, LwwRegister, OrSet, Value};
use crate::gossip::rumor::Rumor;
use crate::gossip::sync::SyncMessage;
use crate::membership::{Member, MemberState, SwimMessage, MAX_INCARNATION};
use crate::store::{Leaf, StoreKey};
use crate::wire::{Datagram, ForgetValue, Frame, FrameBody, SyncAnswer, SyncRequest, SyncStart};
use core::net::SocketAddr;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Values remembered from rumors, to name in `Forget` frames.
const VALUES_KEPT: usize = 64;
/// The least a lie from the future is ahead of real time: a day, beyond any clock the simulator
/// skews (minutes), so no target's clock check can let it through.
const FAR_AHEAD_MS: u64 = 86_400_000;

/// The drop counter of [`crate::node::ClusterStats`] a lie must raise at its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    ClockSkew,
    WrongKind,
    Invalid,
}

/// One kind of lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lie {
    /// A rumor carrying a register stamped far in the future.
    FutureRegister,
    /// An anti-entropy request pushing a register stamped far in the future.
    FutureSyncPush,
    /// An anti-entropy request whose start is stamped far in the future.
    FutureSyncStart,
    /// An anti-entropy request announcing a collection horizon far in the future.
    FutureHorizon,
    /// An answer to a member's anti-entropy request announcing a horizon far in the future.
    FutureAnswerHorizon,
    /// A rumor of a set under a kv key, or of a register under a set key.
    WrongKindRumor,
    /// An anti-entropy request pushing a state of the wrong kind for its key.
    WrongKindSyncPush,
    /// A membership update at an impossible incarnation (above the greatest a member may
    /// reach) declaring another member dead.
    ImpossibleIncarnationAboutOther,
    /// The same, about the target itself.
    ImpossibleIncarnationAboutTarget,
    /// A plausible verdict (suspect or dead) about a member, at an incarnation raised by up to a
    /// million: nothing tells it from the truth; the member refutes it.
    Verdict,
    /// Insider: a plausible verdict that a member left, at an incarnation raised by up to a
    /// million. Members that left are never contacted again, so only a member that contacts the
    /// others itself can refute it.
    LeftVerdict,
    /// A `Forget` frame naming a value the target holds, without ever having announced a horizon
    /// that covers it.
    ForgetLive,
    /// An indirect probe of an address that is no member's.
    PingReqStranger,
    /// An anti-entropy request from an id that is no member's.
    SyncFromStranger,
    /// Insider: an anti-entropy request announcing a horizon within the skew bound, at the
    /// target's clock less the tombstones' minimum age (as if everything that old had been
    /// collected everywhere).
    InsiderHorizon,
    /// Insider: a `Forget` frame naming a live value no newer than the horizon it announced.
    InsiderForget,
    /// Insider: stability reports claiming every member holds every write up to now.
    InsiderStable,
}

impl Lie {
    /// The counter its target must raise; `None` for lies nothing can tell from the truth.
    pub fn counted_as(self) -> Option<Counter> {
        match self {
            Lie::FutureRegister
            | Lie::FutureSyncPush
            | Lie::FutureSyncStart
            | Lie::FutureHorizon
            | Lie::FutureAnswerHorizon => Some(Counter::ClockSkew),
            Lie::WrongKindRumor | Lie::WrongKindSyncPush => Some(Counter::WrongKind),
            Lie::ImpossibleIncarnationAboutOther
            | Lie::ImpossibleIncarnationAboutTarget
            | Lie::ForgetLive
            | Lie::PingReqStranger
            | Lie::SyncFromStranger => Some(Counter::Invalid),
            Lie::Verdict
            | Lie::LeftVerdict
            | Lie::InsiderHorizon
            | Lie::InsiderForget
            | Lie::InsiderStable => None,
        }
    }

    /// The lies sent unprompted; `insider` adds the insider lies.
    fn unprompted(insider: bool) -> &'static [Lie] {
        /// Every unprompted lie: the outsider's first, then the insider's.
        static ALL: [Lie; 16] = [
            Lie::FutureRegister,
            Lie::FutureSyncPush,
            Lie::FutureSyncStart,
            Lie::FutureHorizon,
            Lie::WrongKindRumor,
            Lie::WrongKindSyncPush,
            Lie::ImpossibleIncarnationAboutOther,
            Lie::ImpossibleIncarnationAboutTarget,
            Lie::Verdict,
            Lie::ForgetLive,
            Lie::PingReqStranger,
            Lie::SyncFromStranger,
            Lie::LeftVerdict,
            Lie::InsiderHorizon,
            Lie::InsiderForget,
            Lie::InsiderStable,
        ];
        const OUTSIDER: usize = 12;
        if insider {
            &ALL
        } else {
            &ALL[..OUTSIDER]
        }
    }
}

/// What the hostile participant sends to one target.
#[derive(Clone, Debug)]
pub(super) enum Message {
    Datagram(Datagram),
    Frame(Frame),
    /// An anti-entropy request, claiming to come from `from` (not always its own id).
    SyncRequest {
        from: NodeId,
        request: SyncRequest,
    },
}

/// The hostile participant (see the module doc).
pub struct Hostile {
    me: Member,
    rng: SmallRng,
    insider: bool,
    /// The tombstones' minimum age in the cluster, for insider horizons.
    min_age_ms: u64,
    /// Stops sending and answering (an operator may then force it out).
    silent: bool,
    /// Members learned from envelopes and updates.
    members: BTreeMap<NodeId, Member>,
    /// Values seen in rumors pushed to it.
    values: Vec<ForgetValue>,
    /// Keys seen in rumors.
    kv_keys: Vec<String>,
    set_keys: Vec<String>,
    next_seq: u64,
    next_probe: u64,
    strangers: u64,
}

impl Hostile {
    /// A hostile participant `id` at `addr`; `insider` adds the insider lies.
    pub fn new(id: NodeId, addr: SocketAddr, seed: u64, insider: bool, min_age_ms: u64) -> Self {
        Hostile {
            me: Member::new(id, addr, addr, 1),
            rng: SmallRng::seed_from_u64(seed),
            insider,
            min_age_ms,
            silent: false,
            members: BTreeMap::new(),
            values: Vec::new(),
            kv_keys: Vec::new(),
            set_keys: Vec::new(),
            next_seq: 0,
            next_probe: 0,
            strangers: 0,
        }
    }

    pub fn id(&self) -> &NodeId {
        &self.me.id
    }

    pub fn addr(&self) -> SocketAddr {
        self.me.gossip_addr
    }

    pub fn is_silent(&self) -> bool {
        self.silent
    }

    pub(super) fn silence(&mut self) {
        self.silent = true;
    }

    fn envelope(&self) -> Datagram {
        Datagram {
            from: self.me.clone(),
            swim: None,
            updates: Vec::new(),
            rumors: Vec::new(),
            pull: None,
        }
    }

    /// A Ping announcing itself, to join through a member.
    pub(super) fn join(&mut self) -> Datagram {
        self.next_probe += 1;
        Datagram {
            swim: Some(SwimMessage::Ping {
                probe: self.next_probe,
            }),
            ..self.envelope()
        }
    }

    /// Learns from what a member sent (its envelope, updates, rumors) and refutes any verdict
    /// about itself; answers a Ping with an Ack carrying its true clock (`now_ms`).
    pub(super) fn handle_datagram(&mut self, now_ms: u64, datagram: Datagram) -> Option<Datagram> {
        if self.silent {
            return None;
        }
        for member in std::iter::once(&datagram.from).chain(&datagram.updates) {
            self.learn(member);
        }
        self.learn_rumors(&datagram.rumors);
        let Some(SwimMessage::Ping { probe }) = datagram.swim else {
            return None;
        };
        Some(Datagram {
            swim: Some(SwimMessage::Ack {
                probe,
                clock_ms: now_ms,
            }),
            ..self.envelope()
        })
    }

    pub(super) fn handle_frame(&mut self, frame: Frame) {
        if let FrameBody::Rumors(rumors) = frame.body {
            self.learn_rumors(&rumors);
        }
    }

    fn learn(&mut self, member: &Member) {
        if member.id == self.me.id {
            // A verdict about itself: refute it, as a member would.
            if member.state != MemberState::Alive && member.incarnation >= self.me.incarnation {
                self.me.incarnation = (member.incarnation + 1).min(MAX_INCARNATION);
            }
            return;
        }
        let known = self
            .members
            .entry(member.id.clone())
            .or_insert_with(|| member.clone());
        if member.incarnation > known.incarnation {
            *known = member.clone();
        }
    }

    fn learn_rumors(&mut self, rumors: &[Rumor]) {
        for rumor in rumors {
            let names = match rumor.key.space {
                crate::store::Keyspace::Kv => &mut self.kv_keys,
                crate::store::Keyspace::Sets => &mut self.set_keys,
                // The workload writes no counters.
                crate::store::Keyspace::Counters => continue,
            };
            if !names.contains(&rumor.key.name) {
                names.push(rumor.key.name.clone());
            }
            if let KeyState::Register(r) = &rumor.delta {
                if r.is_tombstone() {
                    continue;
                }
                if self.values.len() >= VALUES_KEPT {
                    self.values.remove(0);
                }
                self.values.push(ForgetValue {
                    key: rumor.key.clone(),
                    timestamp: r.timestamp,
                    node: r.node.clone(),
                });
            }
        }
    }

    /// The answer to a member's anti-entropy request: a refusal, an honest-looking "in sync" (it
    /// holds nothing, and collected nothing), or a horizon from the future.
    pub(super) fn answer(&mut self, now_ms: u64) -> (Option<SyncAnswer>, Option<Lie>) {
        if self.silent {
            return (None, None);
        }
        match self.rng.gen_range(0..3) {
            0 => (None, None),
            1 => (
                Some(SyncAnswer {
                    collected_through: Timestamp::ZERO,
                    message: SyncMessage::InSync,
                }),
                None,
            ),
            _ => (
                Some(SyncAnswer {
                    collected_through: self.future(now_ms),
                    message: SyncMessage::InSync,
                }),
                Some(Lie::FutureAnswerHorizon),
            ),
        }
    }

    /// A timestamp far in the future (sometimes the very last one).
    fn future(&mut self, now_ms: u64) -> Timestamp {
        if self.rng.gen_bool(0.2) {
            return Timestamp::from_raw(u64::MAX);
        }
        let ahead = FAR_AHEAD_MS.saturating_mul(self.rng.gen_range(1..10_000));
        Timestamp::new(now_ms.saturating_add(ahead).min((1 << 48) - 1), 0)
    }

    fn value(&self) -> Value {
        Value {
            content_type: "text/plain".into(),
            data: b"a lie".to_vec(),
        }
    }

    fn kv_key(&mut self) -> StoreKey {
        let name = self
            .kv_keys
            .choose(&mut self.rng)
            .cloned()
            .unwrap_or_else(|| "k0".into());
        StoreKey::kv(name)
    }

    fn set_key(&mut self) -> StoreKey {
        let name = self
            .set_keys
            .choose(&mut self.rng)
            .cloned()
            .unwrap_or_else(|| "s0".into());
        StoreKey::set(name)
    }

    fn rumor(&mut self, key: StoreKey, delta: KeyState) -> Datagram {
        self.next_seq += 1;
        Datagram {
            rumors: vec![Rumor {
                origin: crate::clock::ReplicaId::new(self.me.id.clone(), 1),
                seq: self.next_seq,
                key,
                delta,
            }],
            ..self.envelope()
        }
    }

    fn sync(&self, start: Option<SyncStart>, message: SyncMessage) -> Message {
        Message::SyncRequest {
            from: self.me.id.clone(),
            request: SyncRequest { start, message },
        }
    }

    fn push(&self, key: StoreKey, state: KeyState) -> Message {
        self.sync(
            None,
            SyncMessage::Repair {
                leaves: Vec::new(),
                after: None,
                push: vec![(key, state)],
                want: Vec::new(),
            },
        )
    }

    fn start(&self, clock: Timestamp, collected_through: Timestamp) -> SyncStart {
        SyncStart {
            clock,
            stable: vec![(self.me.id.clone(), clock)],
            collected_through,
        }
    }

    fn root(&self) -> SyncMessage {
        SyncMessage::Root {
            root: Leaf::default(),
        }
    }

    /// The next lie for member `target` at real time `now_ms` (`target_clock_ms`: the target's
    /// clock, for insider lies stamped within its bound). `None` when silent.
    pub(super) fn lie(
        &mut self,
        now_ms: u64,
        target: &NodeId,
        target_clock_ms: u64,
    ) -> Option<(Lie, Message)> {
        if self.silent {
            return None;
        }
        let lies = Lie::unprompted(self.insider);
        let mut lie = *lies.choose(&mut self.rng)?;
        if matches!(lie, Lie::ForgetLive | Lie::InsiderForget) && self.values.is_empty() {
            lie = Lie::FutureRegister;
        }
        let now = Timestamp::new(now_ms, 0);
        let message = match lie {
            Lie::FutureRegister => {
                let key = self.kv_key();
                let ts = self.future(now_ms);
                let register = LwwRegister::write(ts, self.me.id.clone(), Some(self.value()));
                Message::Datagram(self.rumor(key, KeyState::Register(register)))
            }
            Lie::FutureSyncPush => {
                let key = self.kv_key();
                let ts = self.future(now_ms);
                let register = LwwRegister::write(ts, self.me.id.clone(), Some(self.value()));
                self.push(key, KeyState::Register(register))
            }
            Lie::FutureSyncStart => {
                let clock = self.future(now_ms);
                let start = self.start(clock, Timestamp::ZERO);
                self.sync(Some(start), self.root())
            }
            Lie::FutureHorizon | Lie::FutureAnswerHorizon => {
                let horizon = self.future(now_ms);
                self.sync(Some(self.start(now, horizon)), self.root())
            }
            Lie::WrongKindRumor | Lie::WrongKindSyncPush => {
                let (key, state) = if self.rng.gen_bool(0.5) {
                    let mut set = OrSet::new();
                    let delta = set.add(
                        &crate::clock::ReplicaId::new(self.me.id.clone(), 1),
                        "a lie",
                    );
                    (self.kv_key(), KeyState::Set(delta))
                } else {
                    let register = LwwRegister::write(now, self.me.id.clone(), Some(self.value()));
                    (self.set_key(), KeyState::Register(register))
                };
                if lie == Lie::WrongKindRumor {
                    Message::Datagram(self.rumor(key, state))
                } else {
                    self.push(key, state)
                }
            }
            Lie::ImpossibleIncarnationAboutOther | Lie::ImpossibleIncarnationAboutTarget => {
                let others: Vec<&Member> =
                    self.members.values().filter(|m| m.id != *target).collect();
                let about = match (lie, others.choose(&mut self.rng)) {
                    (Lie::ImpossibleIncarnationAboutOther, Some(other)) => (*other).clone(),
                    _ => self
                        .members
                        .get(target)
                        .cloned()
                        .unwrap_or_else(|| self.me.clone()),
                };
                let incarnation = self.rng.gen_range(MAX_INCARNATION + 1..=u64::MAX);
                let update = Member {
                    state: MemberState::Dead,
                    incarnation,
                    ..about
                };
                Message::Datagram(Datagram {
                    updates: vec![update],
                    ..self.envelope()
                })
            }
            Lie::Verdict | Lie::LeftVerdict => {
                let members: Vec<&Member> = self.members.values().collect();
                let about = members.choose(&mut self.rng).map(|m| (*m).clone())?;
                let state = match lie {
                    Lie::LeftVerdict => MemberState::Left,
                    _ => *[MemberState::Suspect, MemberState::Dead].choose(&mut self.rng)?,
                };
                let incarnation = about.incarnation + self.rng.gen_range(1..1_000_000);
                Message::Datagram(Datagram {
                    updates: vec![Member {
                        state,
                        incarnation,
                        ..about
                    }],
                    ..self.envelope()
                })
            }
            Lie::ForgetLive | Lie::InsiderForget => {
                let value = self.values.choose(&mut self.rng)?.clone();
                Message::Frame(Frame {
                    from: self.me.id.clone(),
                    body: FrameBody::Forget(vec![value]),
                })
            }
            Lie::PingReqStranger => {
                self.strangers += 1;
                let target_addr =
                    SocketAddr::from(([192, 0, 2, (self.strangers % 250) as u8 + 1], 7000));
                let target = if self.rng.gen_bool(0.5) {
                    NodeId::new(format!("stranger{}", self.strangers))
                        .unwrap_or_else(|_| self.me.id.clone())
                } else {
                    // A member's id at an address that is not its own.
                    self.members
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .choose(&mut self.rng)
                        .cloned()
                        .unwrap_or_else(|| self.me.id.clone())
                };
                self.next_probe += 1;
                Message::Datagram(Datagram {
                    swim: Some(SwimMessage::PingReq {
                        probe: self.next_probe,
                        target,
                        target_addr,
                    }),
                    ..self.envelope()
                })
            }
            Lie::SyncFromStranger => {
                self.strangers += 1;
                let from = NodeId::new(format!("stranger{}", self.strangers))
                    .unwrap_or_else(|_| self.me.id.clone());
                Message::SyncRequest {
                    from,
                    request: SyncRequest {
                        start: Some(self.start(now, Timestamp::ZERO)),
                        message: self.root(),
                    },
                }
            }
            Lie::InsiderHorizon => {
                let horizon = Timestamp::new(target_clock_ms.saturating_sub(self.min_age_ms), 0);
                let start = self.start(Timestamp::new(target_clock_ms, 0), horizon);
                self.sync(Some(start), self.root())
            }
            Lie::InsiderStable => {
                let clock = Timestamp::new(target_clock_ms, 0);
                let mut start = self.start(clock, Timestamp::ZERO);
                start.stable = self
                    .members
                    .keys()
                    .chain([target, &self.me.id])
                    .map(|id| (id.clone(), clock))
                    .collect();
                self.sync(Some(start), self.root())
            }
        };
        Some((lie, message))
    }
}
