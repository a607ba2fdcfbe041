//! The serde form of [`KeyState`], which records, write-ahead log entries, cluster messages and
//! Merkle item hashes all use. A register with neither an expiry nor what its writer observed
//! keeps the form it had before those existed (so none of those changed for it); one with either
//! is a variant of its own, added after the others (a build that predates it refuses such a
//! state as undecodable).
//!
//! Owns only the mapping between the in-memory types and their encoding; no I/O.

use super::{KeyState, LwwRegister, OrSet, PnCounter, Value};
use crate::clock::{NodeId, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize)]
struct RegisterRef<'a> {
    timestamp: Timestamp,
    node: &'a NodeId,
    value: &'a Option<Value>,
}

/// The encoded fields of a register, its expiry aside.
#[derive(Deserialize)]
pub(crate) struct RegisterFields {
    timestamp: Timestamp,
    node: NodeId,
    value: Option<Value>,
}

impl RegisterFields {
    pub(crate) fn register(self) -> LwwRegister {
        LwwRegister::write(self.timestamp, self.node, self.value)
    }
}

/// What a register may carry beyond its fields.
#[derive(Serialize, Deserialize)]
struct RegisterExtras {
    expires: Option<Timestamp>,
    observed: Option<Timestamp>,
}

/// Variant order is the encoding: never reorder, only append.
#[derive(Serialize)]
enum StateRef<'a> {
    Register(RegisterRef<'a>),
    Set(&'a OrSet),
    Counter(&'a PnCounter),
    RegisterWithExtras(RegisterRef<'a>, RegisterExtras),
}

#[derive(Deserialize)]
enum StateOwned {
    Register(RegisterFields),
    Set(OrSet),
    Counter(PnCounter),
    RegisterWithExtras(RegisterFields, RegisterExtras),
}

impl Serialize for KeyState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn fields(r: &LwwRegister) -> RegisterRef<'_> {
            RegisterRef {
                timestamp: r.timestamp,
                node: &r.node,
                value: &r.value,
            }
        }
        match self {
            KeyState::Register(r) => match (r.expires, r.observed) {
                (None, None) => StateRef::Register(fields(r)),
                (expires, observed) => {
                    StateRef::RegisterWithExtras(fields(r), RegisterExtras { expires, observed })
                }
            },
            KeyState::Set(set) => StateRef::Set(set),
            KeyState::Counter(counter) => StateRef::Counter(counter),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for KeyState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match StateOwned::deserialize(deserializer)? {
            StateOwned::Register(fields) => KeyState::Register(fields.register()),
            StateOwned::RegisterWithExtras(fields, extras) => {
                let mut register = fields.register().observing(extras.observed);
                register.expires = extras.expires;
                KeyState::Register(register)
            }
            StateOwned::Set(set) => KeyState::Set(set),
            StateOwned::Counter(counter) => KeyState::Counter(counter),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{from_bytes, to_bytes};

    /// The form registers had before expiries: what older records, logs and digests hold.
    #[derive(Serialize)]
    enum Before {
        Register(RegisterBefore),
    }

    #[derive(Serialize)]
    struct RegisterBefore {
        timestamp: Timestamp,
        node: NodeId,
        value: Option<Value>,
    }

    fn register() -> LwwRegister {
        LwwRegister::write(
            Timestamp::new(1_000, 3),
            NodeId::new("n1").unwrap(),
            Some(Value {
                content_type: "text/plain".into(),
                data: b"v".to_vec(),
            }),
        )
    }

    #[test]
    fn a_register_without_expiry_keeps_its_encoding() {
        let r = register();
        let before = to_bytes(&Before::Register(RegisterBefore {
            timestamp: r.timestamp,
            node: r.node.clone(),
            value: r.value.clone(),
        }));
        assert_eq!(to_bytes(&KeyState::Register(r.clone())), before);
        assert_eq!(
            from_bytes::<KeyState>(&before).unwrap(),
            KeyState::Register(r)
        );
    }

    #[test]
    fn what_a_writer_observed_survives_encoding() {
        for expiring in [false, true] {
            let mut r = register().observing(Some(Timestamp::new(900, 1)));
            if expiring {
                r = r.expiring_after(10);
            }
            let state = KeyState::Register(r);
            assert_eq!(from_bytes::<KeyState>(&to_bytes(&state)).unwrap(), state);
        }
    }

    #[test]
    fn an_expiry_survives_encoding() {
        let state = KeyState::Register(register().expiring_after(5_000));
        let bytes = to_bytes(&state);
        assert_eq!(from_bytes::<KeyState>(&bytes).unwrap(), state);
        let KeyState::Register(r) = from_bytes::<KeyState>(&bytes).unwrap() else {
            panic!("not a register");
        };
        assert_eq!(r.expires, Some(Timestamp::new(6_000, 3)));
    }
}
