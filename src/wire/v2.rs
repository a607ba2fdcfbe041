//! Codec version 2: the message shapes the last build speaking it had (commit e4d617d), frozen,
//! and their conversions to and from the current types. Fixtures written by that build pin the
//! bytes (`tests/fixtures/wire/v2/`, checked by `tests/wire_versions.rs`).
//!
//! What version 3 changed, and how each change converts:
//! - `SwimMessage::Ack` gained `clock_ms`: a version-2 Ack decodes with `clock_ms: 0`, which the
//!   prober takes as "no clock" (no clock sample); encoding drops the clock.
//! - Rumor origins, pull ranges, set dots and version vector entries name a replica (node id and
//!   storage epoch) instead of a node: version 2 names decode as epoch 0, the epoch of a data
//!   directory that predates epochs; a replica of another epoch has no version-2 form.
//! - Keys of the counters keyspace and counter states, registers with an expiry or with what
//!   their writer observed, the frames `Replicate`, `Replicated`, `ReadRequest`, `ReadReply`,
//!   `ReadRepair` and the anti-entropy messages `FetchLeaves` and `LeafStates` were added: none
//!   has a version-2 form except what a writer observed, which is dropped (a writer that did not
//!   say, which version 2 could not).
//!
//! Owns only these shapes and conversions: the types here must never change (a change is a new
//! version), and nothing here may touch what the messages mean.

use super::WireError;
use crate::clock::{NodeId, ReplicaId, Timestamp};
use crate::gossip::{rumor, sync};
use crate::{crdt, membership, store};
use core::net::SocketAddr;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub(super) const VERSION: u8 = 2;

fn absent(what: &'static str) -> WireError {
    WireError::NotInVersion {
        version: VERSION,
        what,
    }
}

/// A version-2 node name: the replica of epoch 0.
fn replica(node: NodeId) -> ReplicaId {
    ReplicaId::new(node, 0)
}

/// The version-2 name of a replica, which only epoch 0 has.
fn node_of(replica: &ReplicaId) -> Result<NodeId, WireError> {
    match replica.epoch {
        0 => Ok(replica.node.clone()),
        _ => Err(absent("a replica with a storage epoch")),
    }
}

fn all<T, U>(
    items: &[T],
    convert: impl Fn(&T) -> Result<U, WireError>,
) -> Result<Vec<U>, WireError> {
    items.iter().map(convert).collect()
}

#[derive(Serialize, Deserialize)]
pub(super) struct Datagram {
    from: Member,
    swim: Option<SwimMessage>,
    updates: Vec<Member>,
    rumors: Vec<Rumor>,
    pull: Option<SeenSummary>,
}

impl Datagram {
    pub(super) fn into_current(self) -> Result<super::Datagram, WireError> {
        Ok(super::Datagram {
            from: self.from.into_current(),
            swim: self.swim.map(SwimMessage::into_current),
            updates: self.updates.into_iter().map(Member::into_current).collect(),
            rumors: self
                .rumors
                .into_iter()
                .map(Rumor::into_current)
                .collect::<Result<_, _>>()?,
            pull: self.pull.map(SeenSummary::into_current),
        })
    }

    /// Leaves out the rumors and pull ranges version 2 cannot carry (see `encode_datagram_as`).
    pub(super) fn from_current(datagram: &super::Datagram) -> Self {
        Datagram {
            from: Member::from_current(&datagram.from),
            swim: datagram.swim.as_ref().map(SwimMessage::from_current),
            updates: datagram.updates.iter().map(Member::from_current).collect(),
            rumors: datagram
                .rumors
                .iter()
                .filter_map(|r| Rumor::from_current(r).ok())
                .collect(),
            pull: datagram.pull.as_ref().map(SeenSummary::from_current),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Member {
    id: NodeId,
    gossip_addr: SocketAddr,
    http_addr: SocketAddr,
    state: MemberState,
    incarnation: u64,
}

impl Member {
    fn into_current(self) -> membership::Member {
        membership::Member {
            id: self.id,
            gossip_addr: self.gossip_addr,
            http_addr: self.http_addr,
            state: self.state.into_current(),
            incarnation: self.incarnation,
        }
    }

    fn from_current(member: &membership::Member) -> Self {
        Member {
            id: member.id.clone(),
            gossip_addr: member.gossip_addr,
            http_addr: member.http_addr,
            state: MemberState::from_current(member.state),
            incarnation: member.incarnation,
        }
    }
}

#[derive(Serialize, Deserialize)]
enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
    fn into_current(self) -> membership::MemberState {
        match self {
            MemberState::Alive => membership::MemberState::Alive,
            MemberState::Suspect => membership::MemberState::Suspect,
            MemberState::Dead => membership::MemberState::Dead,
            MemberState::Left => membership::MemberState::Left,
        }
    }

    fn from_current(state: membership::MemberState) -> Self {
        match state {
            membership::MemberState::Alive => MemberState::Alive,
            membership::MemberState::Suspect => MemberState::Suspect,
            membership::MemberState::Dead => MemberState::Dead,
            membership::MemberState::Left => MemberState::Left,
        }
    }
}

#[derive(Serialize, Deserialize)]
enum SwimMessage {
    Ping {
        probe: u64,
    },
    Ack {
        probe: u64,
    },
    PingReq {
        probe: u64,
        target: NodeId,
        target_addr: SocketAddr,
    },
}

impl SwimMessage {
    fn into_current(self) -> membership::SwimMessage {
        match self {
            SwimMessage::Ping { probe } => membership::SwimMessage::Ping { probe },
            // No clock: the prober takes no clock sample from an Ack saying 0.
            SwimMessage::Ack { probe } => membership::SwimMessage::Ack { probe, clock_ms: 0 },
            SwimMessage::PingReq {
                probe,
                target,
                target_addr,
            } => membership::SwimMessage::PingReq {
                probe,
                target,
                target_addr,
            },
        }
    }

    fn from_current(message: &membership::SwimMessage) -> Self {
        match message {
            membership::SwimMessage::Ping { probe } => SwimMessage::Ping { probe: *probe },
            membership::SwimMessage::Ack { probe, clock_ms: _ } => {
                SwimMessage::Ack { probe: *probe }
            }
            membership::SwimMessage::PingReq {
                probe,
                target,
                target_addr,
            } => SwimMessage::PingReq {
                probe: *probe,
                target: target.clone(),
                target_addr: *target_addr,
            },
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Rumor {
    origin: NodeId,
    seq: u64,
    key: StoreKey,
    delta: KeyState,
}

impl Rumor {
    fn into_current(self) -> Result<rumor::Rumor, WireError> {
        Ok(rumor::Rumor {
            origin: replica(self.origin),
            seq: self.seq,
            key: self.key.into_current(),
            delta: self.delta.into_current()?,
        })
    }

    fn from_current(r: &rumor::Rumor) -> Result<Self, WireError> {
        Ok(Rumor {
            origin: node_of(&r.origin)?,
            seq: r.seq,
            key: StoreKey::from_current(&r.key)?,
            delta: KeyState::from_current(&r.delta)?,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct SeenSummary {
    origins: Vec<SeenRange>,
}

#[derive(Serialize, Deserialize)]
struct SeenRange {
    origin: NodeId,
    contiguous: u64,
    above: Vec<u64>,
}

impl SeenSummary {
    fn into_current(self) -> rumor::SeenSummary {
        rumor::SeenSummary {
            origins: self
                .origins
                .into_iter()
                .map(|r| rumor::SeenRange {
                    origin: replica(r.origin),
                    contiguous: r.contiguous,
                    above: r.above,
                })
                .collect(),
        }
    }

    /// Origins with a storage epoch are left out: a version-2 node holds none of their rumors.
    /// The rest stay sorted (epoch 0 sorts as its node id does).
    fn from_current(summary: &rumor::SeenSummary) -> Self {
        SeenSummary {
            origins: summary
                .origins
                .iter()
                .filter_map(|r| {
                    Some(SeenRange {
                        origin: node_of(&r.origin).ok()?,
                        contiguous: r.contiguous,
                        above: r.above.clone(),
                    })
                })
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoreKey {
    space: Keyspace,
    name: String,
}

#[derive(Serialize, Deserialize)]
enum Keyspace {
    Kv,
    Sets,
}

impl StoreKey {
    fn into_current(self) -> store::StoreKey {
        let space = match self.space {
            Keyspace::Kv => store::Keyspace::Kv,
            Keyspace::Sets => store::Keyspace::Sets,
        };
        store::StoreKey {
            space,
            name: self.name,
        }
    }

    fn from_current(key: &store::StoreKey) -> Result<Self, WireError> {
        let space = match key.space {
            store::Keyspace::Kv => Keyspace::Kv,
            store::Keyspace::Sets => Keyspace::Sets,
            store::Keyspace::Counters => return Err(absent("the counters keyspace")),
        };
        Ok(StoreKey {
            space,
            name: key.name.clone(),
        })
    }
}

#[derive(Serialize, Deserialize)]
enum KeyState {
    Register(Register),
    Set(OrSet),
}

#[derive(Serialize, Deserialize)]
struct Register {
    timestamp: Timestamp,
    node: NodeId,
    value: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct Value {
    content_type: String,
    /// A sequence of bytes, as version 2 encoded a `Vec<u8>`: postcard writes the same bytes for
    /// both, and reads these at once.
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

impl KeyState {
    fn into_current(self) -> Result<crdt::KeyState, WireError> {
        Ok(match self {
            KeyState::Register(r) => crdt::KeyState::Register(crdt::LwwRegister::write(
                r.timestamp,
                r.node,
                r.value.map(|v| crdt::Value {
                    content_type: v.content_type,
                    data: v.data,
                }),
            )),
            KeyState::Set(set) => crdt::KeyState::Set(set.into_current()?),
        })
    }

    fn from_current(state: &crdt::KeyState) -> Result<Self, WireError> {
        Ok(match state {
            crdt::KeyState::Register(r) => {
                if r.expires.is_some() {
                    return Err(absent("a value with an expiry"));
                }
                // `r.observed` has no version-2 form: dropped.
                KeyState::Register(Register {
                    timestamp: r.timestamp,
                    node: r.node.clone(),
                    value: r.value.as_ref().map(|v| Value {
                        content_type: v.content_type.clone(),
                        data: v.data.clone(),
                    }),
                })
            }
            crdt::KeyState::Set(set) => KeyState::Set(OrSet::from_current(set)?),
            crdt::KeyState::Counter(_) => return Err(absent("a counter")),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct OrSet {
    context: CausalContext,
    entries: BTreeMap<String, BTreeSet<Dot>>,
}

#[derive(Serialize, Deserialize)]
struct CausalContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

#[derive(Serialize, Deserialize)]
struct VersionVector(BTreeMap<NodeId, u64>);

#[derive(PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Dot {
    node: NodeId,
    counter: u64,
}

/// The serde form of today's [`crdt::OrSet`], whose fields are its own: a version-2 set is
/// converted by encoding this form and decoding it as an `OrSet`, which checks and indexes it
/// as it does any set from a peer (and the other way round). Pinned with the set's own bytes by
/// the golden vector of `tests/store_migrations.rs` and by the fixtures.
#[derive(Serialize, Deserialize)]
struct SetForm {
    context: ContextForm,
    entries: BTreeMap<String, BTreeSet<crate::clock::Dot>>,
}

#[derive(Serialize, Deserialize)]
struct ContextForm {
    /// A `VersionVector`, a newtype postcard writes as its map.
    vv: BTreeMap<ReplicaId, u64>,
    cloud: BTreeSet<crate::clock::Dot>,
}

fn dot_into_current(dot: Dot) -> crate::clock::Dot {
    crate::clock::Dot::new(replica(dot.node), dot.counter)
}

fn dot_from_current(dot: &crate::clock::Dot) -> Result<Dot, WireError> {
    Ok(Dot {
        node: node_of(&dot.replica)?,
        counter: dot.counter,
    })
}

impl OrSet {
    fn into_current(self) -> Result<crdt::OrSet, WireError> {
        let form = SetForm {
            context: ContextForm {
                vv: (self.context.vv.0.into_iter())
                    .map(|(node, counter)| (replica(node), counter))
                    .collect(),
                cloud: self
                    .context
                    .cloud
                    .into_iter()
                    .map(dot_into_current)
                    .collect(),
            },
            entries: self
                .entries
                .into_iter()
                .map(|(element, dots)| (element, dots.into_iter().map(dot_into_current).collect()))
                .collect(),
        };
        let bytes = postcard::to_stdvec(&form).map_err(|e| WireError::Garbage(e.to_string()))?;
        postcard::from_bytes(&bytes).map_err(|e| WireError::Garbage(e.to_string()))
    }

    fn from_current(set: &crdt::OrSet) -> Result<Self, WireError> {
        let bytes = postcard::to_stdvec(set).map_err(|e| WireError::Garbage(e.to_string()))?;
        let form: SetForm =
            postcard::from_bytes(&bytes).map_err(|e| WireError::Garbage(e.to_string()))?;
        let mut vv = BTreeMap::new();
        for (replica, counter) in &form.context.vv {
            vv.insert(node_of(replica)?, *counter);
        }
        let cloud = form
            .context
            .cloud
            .iter()
            .map(dot_from_current)
            .collect::<Result<_, _>>()?;
        let entries = form
            .entries
            .iter()
            .map(|(element, dots)| {
                let dots = dots
                    .iter()
                    .map(dot_from_current)
                    .collect::<Result<_, _>>()?;
                Ok((element.clone(), dots))
            })
            .collect::<Result<_, WireError>>()?;
        Ok(OrSet {
            context: CausalContext {
                vv: VersionVector(vv),
                cloud,
            },
            entries,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct Frame {
    from: NodeId,
    body: FrameBody,
}

#[derive(Serialize, Deserialize)]
enum FrameBody {
    Rumors(Vec<Rumor>),
    SyncRequest(SyncRequest),
    SyncReply(Option<SyncAnswer>),
    Forget(Vec<ForgetValue>),
}

#[derive(Serialize, Deserialize)]
struct SyncRequest {
    start: Option<SyncStart>,
    message: SyncMessage,
}

#[derive(Serialize, Deserialize)]
struct SyncStart {
    clock: Timestamp,
    stable: Vec<(NodeId, Timestamp)>,
    collected_through: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct SyncAnswer {
    collected_through: Timestamp,
    message: SyncMessage,
}

#[derive(Serialize, Deserialize)]
struct ForgetValue {
    key: StoreKey,
    timestamp: Timestamp,
    node: NodeId,
}

impl Frame {
    pub(super) fn into_current(self) -> Result<super::Frame, WireError> {
        let body = match self.body {
            FrameBody::Rumors(rumors) => super::FrameBody::Rumors(
                rumors
                    .into_iter()
                    .map(Rumor::into_current)
                    .collect::<Result<_, _>>()?,
            ),
            FrameBody::SyncRequest(request) => super::FrameBody::SyncRequest(super::SyncRequest {
                start: request.start.map(|start| super::SyncStart {
                    clock: start.clock,
                    stable: start.stable,
                    collected_through: start.collected_through,
                }),
                message: request.message.into_current()?,
            }),
            FrameBody::SyncReply(answer) => super::FrameBody::SyncReply(match answer {
                Some(answer) => Some(super::SyncAnswer {
                    collected_through: answer.collected_through,
                    message: answer.message.into_current()?,
                }),
                None => None,
            }),
            FrameBody::Forget(values) => super::FrameBody::Forget(
                values
                    .into_iter()
                    .map(|v| super::ForgetValue {
                        key: v.key.into_current(),
                        timestamp: v.timestamp,
                        node: v.node,
                    })
                    .collect(),
            ),
        };
        Ok(super::Frame {
            from: self.from,
            body,
        })
    }

    /// Fails on what version 2 cannot carry, but for rumors (see `encode_frame_as`).
    pub(super) fn from_current(frame: &super::Frame) -> Result<Self, WireError> {
        let body = match &frame.body {
            super::FrameBody::Rumors(rumors) => FrameBody::Rumors(
                rumors
                    .iter()
                    .filter_map(|r| Rumor::from_current(r).ok())
                    .collect(),
            ),
            super::FrameBody::SyncRequest(request) => FrameBody::SyncRequest(SyncRequest {
                start: request.start.as_ref().map(|start| SyncStart {
                    clock: start.clock,
                    stable: start.stable.clone(),
                    collected_through: start.collected_through,
                }),
                message: SyncMessage::from_current(&request.message)?,
            }),
            super::FrameBody::SyncReply(answer) => FrameBody::SyncReply(match answer {
                Some(answer) => Some(SyncAnswer {
                    collected_through: answer.collected_through,
                    message: SyncMessage::from_current(&answer.message)?,
                }),
                None => None,
            }),
            super::FrameBody::Forget(values) => FrameBody::Forget(all(values, |v| {
                Ok(ForgetValue {
                    key: StoreKey::from_current(&v.key)?,
                    timestamp: v.timestamp,
                    node: v.node.clone(),
                })
            })?),
            super::FrameBody::Replicate(_) => return Err(absent("the frame Replicate")),
            super::FrameBody::Replicated { .. } => return Err(absent("the frame Replicated")),
            super::FrameBody::ReadRequest { .. } => return Err(absent("the frame ReadRequest")),
            super::FrameBody::ReadReply { .. } => return Err(absent("the frame ReadReply")),
            super::FrameBody::ReadRepair { .. } => return Err(absent("the frame ReadRepair")),
        };
        Ok(Frame {
            from: frame.from.clone(),
            body,
        })
    }
}

#[derive(Serialize, Deserialize)]
enum SyncMessage {
    Root {
        root: Leaf,
    },
    InSync,
    GetChildren {
        level: u8,
        nodes: Vec<u16>,
    },
    Children {
        hashes: Vec<[u8; 8]>,
    },
    Repair {
        leaves: Vec<u16>,
        after: Option<StoreKey>,
        push: Vec<(StoreKey, KeyState)>,
        want: Vec<StoreKey>,
    },
    Repaired {
        keys: Vec<LeafKeys>,
        states: Vec<(StoreKey, KeyState)>,
        answered: u32,
    },
}

#[derive(Serialize, Deserialize)]
struct Leaf {
    hash: [u8; 32],
    count: u64,
}

#[derive(Serialize, Deserialize)]
struct LeafKeys {
    leaf: u16,
    keys: Vec<(StoreKey, [u8; 8])>,
    complete: bool,
}

fn states_into_current(
    states: Vec<(StoreKey, KeyState)>,
) -> Result<Vec<(store::StoreKey, crdt::KeyState)>, WireError> {
    states
        .into_iter()
        .map(|(key, state)| Ok((key.into_current(), state.into_current()?)))
        .collect()
}

fn states_from_current(
    states: &[(store::StoreKey, crdt::KeyState)],
) -> Result<Vec<(StoreKey, KeyState)>, WireError> {
    all(states, |(key, state)| {
        Ok((StoreKey::from_current(key)?, KeyState::from_current(state)?))
    })
}

impl SyncMessage {
    fn into_current(self) -> Result<sync::SyncMessage, WireError> {
        Ok(match self {
            SyncMessage::Root { root } => sync::SyncMessage::Root {
                root: store::Leaf {
                    hash: root.hash,
                    count: root.count,
                },
            },
            SyncMessage::InSync => sync::SyncMessage::InSync,
            SyncMessage::GetChildren { level, nodes } => {
                sync::SyncMessage::GetChildren { level, nodes }
            }
            SyncMessage::Children { hashes } => sync::SyncMessage::Children { hashes },
            SyncMessage::Repair {
                leaves,
                after,
                push,
                want,
            } => sync::SyncMessage::Repair {
                leaves,
                after: after.map(StoreKey::into_current),
                push: states_into_current(push)?,
                want: want.into_iter().map(StoreKey::into_current).collect(),
            },
            SyncMessage::Repaired {
                keys,
                states,
                answered,
            } => sync::SyncMessage::Repaired {
                keys: keys
                    .into_iter()
                    .map(|k| sync::LeafKeys {
                        leaf: k.leaf,
                        keys: k
                            .keys
                            .into_iter()
                            .map(|(key, hash)| (key.into_current(), hash))
                            .collect(),
                        complete: k.complete,
                    })
                    .collect(),
                states: states_into_current(states)?,
                answered,
            },
        })
    }

    fn from_current(message: &sync::SyncMessage) -> Result<Self, WireError> {
        Ok(match message {
            sync::SyncMessage::Root { root } => SyncMessage::Root {
                root: Leaf {
                    hash: root.hash,
                    count: root.count,
                },
            },
            sync::SyncMessage::InSync => SyncMessage::InSync,
            sync::SyncMessage::GetChildren { level, nodes } => SyncMessage::GetChildren {
                level: *level,
                nodes: nodes.clone(),
            },
            sync::SyncMessage::Children { hashes } => SyncMessage::Children {
                hashes: hashes.clone(),
            },
            sync::SyncMessage::Repair {
                leaves,
                after,
                push,
                want,
            } => SyncMessage::Repair {
                leaves: leaves.clone(),
                after: after.as_ref().map(StoreKey::from_current).transpose()?,
                push: states_from_current(push)?,
                want: all(want, StoreKey::from_current)?,
            },
            sync::SyncMessage::Repaired {
                keys,
                states,
                answered,
            } => SyncMessage::Repaired {
                keys: all(keys, |k| {
                    Ok(LeafKeys {
                        leaf: k.leaf,
                        keys: all(&k.keys, |(key, hash)| {
                            Ok((StoreKey::from_current(key)?, *hash))
                        })?,
                        complete: k.complete,
                    })
                })?,
                states: states_from_current(states)?,
                answered: *answered,
            },
            sync::SyncMessage::FetchLeaves { .. } => {
                return Err(absent("the anti-entropy message FetchLeaves"))
            }
            sync::SyncMessage::LeafStates { .. } => {
                return Err(absent("the anti-entropy message LeafStates"))
            }
        })
    }
}
