//! The versioned on-disk encoding of one key's record and of the other values the store keeps.
//!
//! A record is one format byte followed by the postcard encoding of its [`KeyState`]. The format
//! byte lets a later layout change the encoding while still reading the old one; `migrations/`
//! lists every change. Format 1 (layouts 2 to 4) predates storage epochs: its dots name bare node
//! ids, and it is read through [`super::legacy`]; format 2 (layout 5) names replica ids.

use super::StoreError;
use crate::crdt::KeyState;
use serde::{de::DeserializeOwned, Serialize};

/// The format byte of records written by this build.
pub const RECORD_FORMAT: u8 = 2;
/// The format of records written before storage epochs.
pub const RECORD_FORMAT_BEFORE_EPOCHS: u8 = 1;

/// The canonical bytes of a state (also what the Merkle index hashes).
pub fn encode_state(state: &KeyState) -> Vec<u8> {
    to_bytes(state)
}

pub fn encode_record(state: &KeyState) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    out.extend(to_bytes(state));
    out
}

pub fn decode_record(bytes: &[u8]) -> Result<KeyState, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_FORMAT, rest)) => from_bytes(rest),
        Some((&RECORD_FORMAT_BEFORE_EPOCHS, rest)) => super::legacy::decode_state(rest),
        Some((other, _)) => Err(StoreError::Corrupt(format!(
            "unknown record format {other}"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain data types into a Vec cannot fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}
