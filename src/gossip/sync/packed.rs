//! The encoding of [`super::SyncMessage::LeafStates`]: a catch-up moves every state a replica
//! holds, so the node ids and content types its registers repeat go once into a table, and each
//! register names them by index. Sets and counters go as they are.
//!
//! Owns only this encoding; decoding checks every index and refuses a state that names none.

use crate::clock::{NodeId, Timestamp};
use crate::crdt::{KeyState, LwwRegister, Value};
use crate::store::StoreKey;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;

/// States in the order given, encoded with shared tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedStates(pub Vec<(StoreKey, KeyState)>);

/// Variant order is the encoding: never reorder, only append.
#[derive(Serialize, Deserialize)]
enum Packed<R, S> {
    Register(R),
    Other(S),
}

#[derive(Serialize, Deserialize)]
struct PackedRegister<D> {
    timestamp: Timestamp,
    /// Index into the node table.
    node: u32,
    /// Index into the content type table and the bytes; `None` is a tombstone.
    value: Option<(u32, D)>,
    expires: Option<Timestamp>,
    observed: Option<Timestamp>,
}

#[derive(Serialize)]
struct Tables<'a> {
    nodes: Vec<&'a NodeId>,
    content_types: Vec<&'a str>,
    states: Vec<(
        &'a StoreKey,
        Packed<PackedRegister<&'a serde_bytes::Bytes>, &'a KeyState>,
    )>,
}

#[derive(Deserialize)]
struct OwnedTables {
    nodes: Vec<NodeId>,
    content_types: Vec<String>,
    states: Vec<(
        StoreKey,
        Packed<PackedRegister<serde_bytes::ByteBuf>, KeyState>,
    )>,
}

/// The index of `item` in `table`, adding it when new.
fn index_of<'a, T: ?Sized + Eq + std::hash::Hash>(
    item: &'a T,
    table: &mut Vec<&'a T>,
    seen: &mut HashMap<&'a T, u32>,
) -> u32 {
    *seen.entry(item).or_insert_with(|| {
        table.push(item);
        (table.len() - 1) as u32
    })
}

impl<'a> PackedRegister<&'a serde_bytes::Bytes> {
    /// `r` with its node id and content type (if it holds a value) at these table indexes.
    fn of(r: &'a LwwRegister, node: u32, content_type: impl FnOnce(&'a str) -> u32) -> Self {
        PackedRegister {
            timestamp: r.timestamp,
            node,
            value: r.value.as_ref().map(|v| {
                (
                    content_type(v.content_type.as_str()),
                    serde_bytes::Bytes::new(&v.data),
                )
            }),
            expires: r.expires,
            observed: r.observed,
        }
    }
}

/// Sizes packed states one at a time, as a reply fills up to its budget.
#[derive(Default)]
pub struct PackedSize {
    nodes: std::collections::HashSet<NodeId>,
    content_types: std::collections::HashSet<String>,
}

impl PackedSize {
    /// The bytes `state` under `key` adds to the encoding, its new table entries included (an
    /// index is counted at its largest, so the sum never falls short).
    pub fn add(&mut self, key: &StoreKey, state: &KeyState) -> usize {
        let KeyState::Register(r) = state else {
            return super::encoded_len(&(key, Packed::<(), _>::Other(state)));
        };
        let mut tables = 0;
        if !self.nodes.contains(&r.node) {
            tables += super::encoded_len(&r.node);
            self.nodes.insert(r.node.clone());
        }
        if let Some(v) = &r.value {
            if !self.content_types.contains(&v.content_type) {
                tables += super::encoded_len(v.content_type.as_str());
                self.content_types.insert(v.content_type.clone());
            }
        }
        let packed = PackedRegister::of(r, u32::MAX, |_| u32::MAX);
        tables + super::encoded_len(&(key, Packed::<_, ()>::Register(packed)))
    }
}

impl Serialize for PackedStates {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut nodes = Vec::new();
        let mut content_types = Vec::new();
        let (mut seen_nodes, mut seen_types) = (HashMap::new(), HashMap::new());
        let states = self
            .0
            .iter()
            .map(|(key, state)| {
                let packed = match state {
                    KeyState::Register(r) => {
                        let node = index_of(&r.node, &mut nodes, &mut seen_nodes);
                        Packed::Register(PackedRegister::of(r, node, |content_type| {
                            index_of(content_type, &mut content_types, &mut seen_types)
                        }))
                    }
                    other => Packed::Other(other),
                };
                (key, packed)
            })
            .collect();
        Tables {
            nodes,
            content_types,
            states,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PackedStates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let tables = OwnedTables::deserialize(deserializer)?;
        let lookup = |table_len: usize, index: u32| {
            usize::try_from(index)
                .ok()
                .filter(|&i| i < table_len)
                .ok_or_else(|| D::Error::custom("a packed state names no table entry"))
        };
        let mut states = Vec::with_capacity(tables.states.len());
        for (key, packed) in tables.states {
            let state = match packed {
                Packed::Other(state) => state,
                Packed::Register(r) => {
                    let node = tables.nodes[lookup(tables.nodes.len(), r.node)?].clone();
                    let value = match r.value {
                        None => None,
                        Some((content_type, data)) => Some(Value {
                            content_type: tables.content_types
                                [lookup(tables.content_types.len(), content_type)?]
                            .clone(),
                            data: data.into_vec(),
                        }),
                    };
                    let mut register =
                        LwwRegister::write(r.timestamp, node, value).observing(r.observed);
                    register.expires = r.expires;
                    KeyState::Register(register)
                }
            };
            states.push((key, state));
        }
        Ok(PackedStates(states))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{OrSet, PnCounter};

    fn register(ts: u64, node: &str, value: Option<(&str, &[u8])>) -> KeyState {
        KeyState::Register(LwwRegister::write(
            Timestamp::from_raw(ts),
            NodeId::new(node).unwrap(),
            value.map(|(content_type, data)| Value {
                content_type: content_type.into(),
                data: data.to_vec(),
            }),
        ))
    }

    #[test]
    fn every_kind_of_state_comes_back_as_it_went() {
        let mut expiring = LwwRegister::write(
            Timestamp::from_raw(9 << 16),
            NodeId::new("n2").unwrap(),
            Some(Value {
                content_type: "application/json".into(),
                data: b"{}".to_vec(),
            }),
        )
        .observing(Some(Timestamp::from_raw(3 << 16)));
        expiring.expires = Some(Timestamp::from_raw(99 << 16));
        let states = PackedStates(vec![
            (
                StoreKey::kv("a"),
                register(1 << 16, "n1", Some(("text/plain", b"x"))),
            ),
            (StoreKey::kv("b"), register(2 << 16, "n2", None)),
            (StoreKey::kv("c"), KeyState::Register(expiring)),
            (
                StoreKey::kv("d"),
                register(4 << 16, "n1", Some(("text/plain", b""))),
            ),
            (StoreKey::set("s"), KeyState::Set(OrSet::default())),
            (
                StoreKey::counter("n"),
                KeyState::Counter(PnCounter::default()),
            ),
        ]);
        let bytes = postcard::to_stdvec(&states).unwrap();
        let back: PackedStates = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, states);
    }

    #[test]
    fn repeated_node_ids_and_content_types_are_sent_once() {
        let states: Vec<_> = (0..1000)
            .map(|i| {
                let key = StoreKey::kv(format!("{i:08}"));
                let value = [b'x'; 100];
                (
                    key,
                    register(
                        1 << 40,
                        "node-one",
                        Some(("application/octet-stream", &value)),
                    ),
                )
            })
            .collect();
        let plain = postcard::to_stdvec(&states).unwrap().len();
        let packed = postcard::to_stdvec(&PackedStates(states)).unwrap().len();
        // Each register saves its node id and content type but for an index each (8 + 24
        // bytes), and says it has no expiry and observed nothing (2 bytes).
        assert!(
            packed + 1000 * 29 <= plain,
            "packed {packed} bytes, plain {plain}"
        );
    }

    #[test]
    fn the_sizes_of_the_states_add_up_to_no_less_than_their_encoding() {
        let states: Vec<_> = (0..300u64)
            .map(|i| {
                let node = format!("n{}", i % 7);
                let content_type = format!("type/{}", i % 5);
                let value = vec![b'v'; (i % 40) as usize];
                let state = match i % 4 {
                    0 => register(i << 20, &node, None),
                    1 => KeyState::Counter(PnCounter::default()),
                    _ => register(i << 20, &node, Some((&content_type, &value))),
                };
                (StoreKey::kv(format!("key-{i}")), state)
            })
            .collect();
        let mut size = PackedSize::default();
        let summed: usize = states.iter().map(|(k, s)| size.add(k, s)).sum();
        let encoded = postcard::to_stdvec(&PackedStates(states.clone()))
            .unwrap()
            .len();
        // The three table lengths and the state count: a few bytes each.
        assert!(summed + 16 >= encoded, "summed {summed}, encoded {encoded}");
        assert!(
            summed <= encoded + 300 * 8,
            "summed {summed}, encoded {encoded}"
        );
    }

    #[test]
    fn an_index_past_its_table_is_refused() {
        let key = StoreKey::kv("a");
        let forged = Tables {
            nodes: vec![],
            content_types: vec![],
            states: vec![(
                &key,
                Packed::Register(PackedRegister {
                    timestamp: Timestamp::from_raw(1),
                    node: 0,
                    value: None,
                    expires: None,
                    observed: None,
                }),
            )],
        };
        let bytes = postcard::to_stdvec(&forged).unwrap();
        assert!(postcard::from_bytes::<PackedStates>(&bytes).is_err());
    }
}
