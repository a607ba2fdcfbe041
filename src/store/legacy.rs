//! Encodings written before storage epochs (layouts 1 to 4), decoded into today's types. Then a
//! dot's actor was a bare node id; now it is a replica id (node id and storage epoch), and
//! everything a directory of that age holds was made in the epoch 0 of each node. Read when a
//! record carries format byte 1, when a layout-4 directory's metadata is upgraded, and when its
//! write-ahead log is replayed.
//!
//! Owns only the mirror types and their conversion; never writes anything.

use super::{LoggedDelta, Meta, StoreError, StoreKey};
use crate::clock::{Dot, NodeId, ReplicaId, Timestamp, VersionVector};
use crate::crdt::{KeyState, LwwRegister, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

fn replica(node: NodeId) -> ReplicaId {
    ReplicaId::new(node, 0)
}

#[derive(Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct DotV1 {
    node: NodeId,
    counter: u64,
}

impl DotV1 {
    fn current(self) -> Dot {
        Dot::new(replica(self.node), self.counter)
    }
}

#[derive(Serialize, Deserialize)]
struct ContextV1 {
    vv: BTreeMap<NodeId, u64>,
    cloud: BTreeSet<DotV1>,
}

#[derive(Serialize, Deserialize)]
struct OrSetV1 {
    context: ContextV1,
    entries: BTreeMap<String, BTreeSet<DotV1>>,
}

/// A register as every format encodes one without an expiry.
#[derive(Serialize, Deserialize)]
struct RegisterV1 {
    timestamp: Timestamp,
    node: NodeId,
    value: Option<Value>,
}

impl From<LwwRegister> for RegisterV1 {
    fn from(r: LwwRegister) -> Self {
        RegisterV1 {
            timestamp: r.timestamp,
            node: r.node,
            value: r.value,
        }
    }
}

#[derive(Serialize, Deserialize)]
enum KeyStateV1 {
    Register(RegisterV1),
    Set(OrSetV1),
}

/// Today's encoding of a set, built from its parts, to be decoded as an [`crate::crdt::OrSet`]
/// (which keeps its fields to itself and checks them as it decodes).
#[derive(Serialize, Deserialize)]
struct ContextV2 {
    vv: BTreeMap<ReplicaId, u64>,
    cloud: BTreeSet<Dot>,
}

#[derive(Serialize, Deserialize)]
struct OrSetV2 {
    context: ContextV2,
    entries: BTreeMap<String, BTreeSet<Dot>>,
}

#[derive(Serialize, Deserialize)]
enum KeyStateV2 {
    Register(RegisterV1),
    Set(OrSetV2),
}

impl KeyStateV1 {
    fn current(self) -> Result<KeyState, StoreError> {
        let v2 = match self {
            KeyStateV1::Register(r) => {
                return Ok(KeyState::Register(LwwRegister::write(
                    r.timestamp,
                    r.node,
                    r.value,
                )))
            }
            KeyStateV1::Set(set) => KeyStateV2::Set(OrSetV2 {
                context: ContextV2 {
                    vv: set
                        .context
                        .vv
                        .into_iter()
                        .map(|(node, counter)| (replica(node), counter))
                        .collect(),
                    cloud: set.context.cloud.into_iter().map(DotV1::current).collect(),
                },
                entries: set
                    .entries
                    .into_iter()
                    .map(|(element, dots)| {
                        (element, dots.into_iter().map(DotV1::current).collect())
                    })
                    .collect(),
            }),
        };
        super::record::from_bytes(&super::record::to_bytes(&v2))
    }
}

/// A state encoded before epochs (the body of a format-1 record).
pub fn decode_state(bytes: &[u8]) -> Result<KeyState, StoreError> {
    super::record::from_bytes::<KeyStateV1>(bytes)?.current()
}

/// A state of epoch 0 as it was encoded before epochs: for tests that build an old directory.
/// (Dots of other epochs cannot be written so; they come out as epoch 0.)
pub fn encode_state(state: &KeyState) -> Vec<u8> {
    let old = match super::record::from_bytes(&super::record::to_bytes(state)) {
        Ok(KeyStateV2::Set(set)) => KeyStateV1::Set(OrSetV1 {
            context: ContextV1 {
                vv: set
                    .context
                    .vv
                    .into_iter()
                    .map(|(replica, counter)| (replica.node, counter))
                    .collect(),
                cloud: set.context.cloud.into_iter().map(DotV1::from).collect(),
            },
            entries: set
                .entries
                .into_iter()
                .map(|(element, dots)| (element, dots.into_iter().map(DotV1::from).collect()))
                .collect(),
        }),
        Ok(KeyStateV2::Register(r)) => KeyStateV1::Register(r),
        Err(_) => return Vec::new(),
    };
    super::record::to_bytes(&old)
}

impl From<Dot> for DotV1 {
    fn from(dot: Dot) -> Self {
        DotV1 {
            node: dot.replica.node,
            counter: dot.counter,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct MetaV1 {
    node_id: Option<NodeId>,
    hlc: Timestamp,
    seen: BTreeMap<NodeId, u64>,
    incarnation: u64,
}

/// Node metadata written before epochs.
pub fn decode_meta(bytes: &[u8]) -> Result<Meta, StoreError> {
    let old: MetaV1 = super::record::from_bytes(bytes)?;
    let mut seen = VersionVector::new();
    for (node, seq) in old.seen {
        seen.advance(&replica(node), seq);
    }
    Ok(Meta {
        node_id: old.node_id,
        hlc: old.hlc,
        seen,
        incarnation: old.incarnation,
        ..Meta::default()
    })
}

#[derive(Serialize, Deserialize)]
struct LoggedDeltaV1 {
    key: StoreKey,
    delta: KeyStateV1,
    hlc: Timestamp,
    origin_seq: Option<(NodeId, u64)>,
}

/// A write-ahead log entry written before epochs.
pub fn decode_logged(bytes: &[u8]) -> Result<LoggedDelta, StoreError> {
    let old: LoggedDeltaV1 = super::record::from_bytes(bytes)?;
    Ok(LoggedDelta {
        key: old.key,
        delta: old.delta.current()?,
        hlc: old.hlc,
        origin_seq: old.origin_seq.map(|(node, seq)| (replica(node), seq)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::OrSet;
    use crate::node::Node;
    use crate::store::migrate::{LAYOUT_KEY, META_KEY, RECORD_PREFIX};
    use crate::store::wal::Wal;
    use crate::store::{record, Durability, SledStore, Store};

    fn n1() -> NodeId {
        NodeId::new("n1").unwrap()
    }

    #[test]
    fn a_layout_4_directory_keeps_its_data_its_metadata_and_its_log_across_the_epoch_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = OrSet::new();
        let _ = set.add(&replica(n1()), "x");
        let set = KeyState::Set(set);
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            db.insert(LAYOUT_KEY, &4u32.to_be_bytes()).unwrap();
            let meta = MetaV1 {
                node_id: Some(n1()),
                hlc: Timestamp::new(1_000, 0),
                seen: BTreeMap::from([(n1(), 5)]),
                incarnation: 3,
            };
            db.insert(META_KEY, record::to_bytes(&meta)).unwrap();
            let mut key = vec![RECORD_PREFIX];
            key.extend(StoreKey::set("s").encode());
            let mut value = vec![record::RECORD_FORMAT_BEFORE_EPOCHS];
            value.extend(encode_state(&set));
            db.insert(key, value).unwrap();
            db.flush().unwrap();
            // The log holds a write acknowledged just before a crash, in the old encoding.
            let (mut wal, _) = Wal::open(&dir.path().join("wal.log"), 1).unwrap();
            let logged = LoggedDeltaV1 {
                key: StoreKey::set("t"),
                delta: record::from_bytes(&encode_state(&set)).unwrap(),
                hlc: Timestamp::new(1_001, 0),
                origin_seq: Some((n1(), 6)),
            };
            wal.append(&record::to_bytes(&logged));
            wal.sync().unwrap();
        }
        let mut store = SledStore::open(dir.path(), Durability::Fsync).unwrap();
        let meta = store.meta().clone();
        assert_eq!((meta.epoch, meta.incarnation), (0, 3));
        assert_eq!(meta.seen.get(&replica(n1())), 5);
        let replay = store.take_replay();
        assert_eq!(replay.len(), 1);
        assert_eq!(replay[0].origin_seq, Some((replica(n1()), 6)));
        assert_eq!(replay[0].delta, set);
        drop(store);
        let store = SledStore::open(dir.path(), Durability::Fsync).unwrap();
        let node = Node::open(store, n1()).unwrap();
        assert_eq!(node.replica(), &replica(n1()));
        // Both sets read, the one from the log included (the log was read before the reopen
        // above took it: it is still there until a checkpoint).
        assert_eq!(
            node.store().get(&StoreKey::set("s")).unwrap(),
            Some(set.clone())
        );
        assert_eq!(node.store().get(&StoreKey::set("t")).unwrap(), Some(set));
    }
}
