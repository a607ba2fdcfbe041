//! How the sled store lays out a set: one row per element and one per dot, beside the set's
//! record, which holds only its [`SetHeader`]. An edit of a few elements reads and writes a few
//! rows, whatever the size of the set.
//!
//! Rows, where `K` is the set's encoded key prefixed with its length (u16 BE), so that one set's
//! rows never run into another's:
//! - `r` + encoded key → [`SET_HEADER_FORMAT`] + the header (the record row);
//! - `e` + K + element → the element's dots;
//! - `d` + K + actor (node id length u16 BE, node id, epoch u64 BE) + counter (u64 BE) + the
//!   element holding that dot → nothing. Sorted by actor then counter, so the dots of a run are
//!   one range; the element is part of the key because a state from a lying peer may give one dot
//!   to two elements, and each must be found as a set in memory finds it.
//!
//! Owns the row keys and encodings; the sled store decides when to read and write them.

use super::sled_store::TreeBatch;
use super::{record, SetHeader, SetWrite, StoreError, StoreKey};
use crate::clock::{Dot, ReplicaId};
use crate::crdt::OrSet;
use std::collections::{BTreeMap, BTreeSet};

/// The format byte of a set's record: its header, the elements being in their own rows.
pub(super) const SET_HEADER_FORMAT: u8 = 3;
const ELEMENT_PREFIX: u8 = b'e';
const DOT_PREFIX: u8 = b'd';

/// `tag` + the key's length (u16 BE) + the encoded key.
fn set_prefix(tag: u8, key: &StoreKey) -> Vec<u8> {
    let encoded = key.encode();
    let mut out = Vec::with_capacity(3 + encoded.len());
    out.push(tag);
    out.extend((encoded.len() as u16).to_be_bytes());
    out.extend(encoded);
    out
}

fn element_key(key: &StoreKey, element: &str) -> Vec<u8> {
    let mut out = set_prefix(ELEMENT_PREFIX, key);
    out.extend(element.as_bytes());
    out
}

fn actor_prefix(key: &StoreKey, actor: &ReplicaId) -> Vec<u8> {
    let mut out = set_prefix(DOT_PREFIX, key);
    let node = actor.node.as_str().as_bytes();
    out.extend((node.len() as u16).to_be_bytes());
    out.extend(node);
    out.extend(actor.epoch.to_be_bytes());
    out
}

fn dot_key(key: &StoreKey, dot: &Dot, element: &str) -> Vec<u8> {
    let mut out = actor_prefix(key, &dot.replica);
    out.extend(dot.counter.to_be_bytes());
    out.extend(element.as_bytes());
    out
}

pub(super) fn encode_header(header: &SetHeader) -> Vec<u8> {
    let mut out = vec![SET_HEADER_FORMAT];
    out.extend(record::to_bytes(header));
    out
}

/// Whether a record row holds a set header.
pub(super) fn is_header(row: &[u8]) -> bool {
    row.first() == Some(&SET_HEADER_FORMAT)
}

pub(super) fn decode_header(row: &[u8]) -> Result<SetHeader, StoreError> {
    match row.split_first() {
        Some((&SET_HEADER_FORMAT, rest)) => record::from_bytes(rest),
        _ => Err(StoreError::Corrupt(
            "a set's record does not hold a set header".into(),
        )),
    }
}

pub(super) fn read_dots(
    db: &sled::Db,
    key: &StoreKey,
    element: &str,
) -> Result<BTreeSet<Dot>, StoreError> {
    match db.get(element_key(key, element))? {
        Some(bytes) => record::from_bytes(&bytes),
        None => Ok(BTreeSet::new()),
    }
}

pub(super) fn for_each_holding(
    db: &sled::Db,
    key: &StoreKey,
    actor: &ReplicaId,
    first: u64,
    last: u64,
    found: &mut dyn FnMut(Dot, &str),
) -> Result<(), StoreError> {
    let prefix = actor_prefix(key, actor);
    let mut start = prefix.clone();
    start.extend(first.to_be_bytes());
    for item in db.range(start..) {
        let (row, _) = item?;
        let Some(rest) = row.strip_prefix(prefix.as_slice()) else {
            break;
        };
        let (counter, element) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| StoreError::Corrupt("bad dot row".into()))?;
        let counter = u64::from_be_bytes(*counter);
        if counter > last {
            break;
        }
        let element = std::str::from_utf8(element)
            .map_err(|_| StoreError::Corrupt("a dot row names no element".into()))?;
        found(Dot::new(actor.clone(), counter), element);
    }
    Ok(())
}

/// The whole set whose header is `header`, from its element rows.
pub(super) fn assemble(
    db: &sled::Db,
    key: &StoreKey,
    header: SetHeader,
) -> Result<OrSet, StoreError> {
    let prefix = set_prefix(ELEMENT_PREFIX, key);
    let mut entries = BTreeMap::new();
    for item in db.scan_prefix(&prefix) {
        let (row, dots) = item?;
        let element = String::from_utf8(row[prefix.len()..].to_vec())
            .map_err(|_| StoreError::Corrupt("an element row's name is not UTF-8".into()))?;
        entries.insert(element, record::from_bytes(&dots)?);
    }
    Ok(OrSet::from_parts(header.context, entries))
}

/// Adds the rows of a planned change to `batch`.
pub(super) fn write(batch: &mut TreeBatch, write: &SetWrite) {
    // The plan read each element's row, and a dot row exists exactly when its element holds the
    // dot: what every row held before is known, so a rollback needs no read of it.
    let empty = || Some(sled::IVec::default());
    let dots_row = |dots: &BTreeSet<Dot>| (!dots.is_empty()).then(|| record::to_bytes(dots).into());
    for (element, change) in &write.elements {
        for dot in change.lost() {
            batch.replace_known(dot_key(&write.key, dot, element), None, empty());
        }
        for dot in change.gained() {
            batch.replace_known(dot_key(&write.key, dot, element), empty(), None);
        }
        batch.replace_known(
            element_key(&write.key, element),
            dots_row(&change.after),
            dots_row(&change.before),
        );
    }
    batch.insert(
        super::sled_store::record_key(&write.key),
        encode_header(&write.header),
    );
}

/// Adds to `batch` the removal of every row of set `key` (its record row aside).
pub(super) fn remove_all(
    db: &sled::Db,
    batch: &mut TreeBatch,
    key: &StoreKey,
) -> Result<(), StoreError> {
    for tag in [ELEMENT_PREFIX, DOT_PREFIX] {
        for item in db.scan_prefix(set_prefix(tag, key)) {
            let (row, _) = item?;
            batch.remove(row);
        }
    }
    Ok(())
}

/// Adds to `batch` the rows of the whole set `set`, replacing whatever set `key` held.
pub(super) fn replace(
    db: &sled::Db,
    batch: &mut TreeBatch,
    key: &StoreKey,
    set: &OrSet,
) -> Result<(), StoreError> {
    remove_all(db, batch, key)?;
    for (element, dots) in set.entries() {
        for dot in dots {
            batch.insert(dot_key(key, dot, element), &[]);
        }
        batch.insert(element_key(key, element), record::to_bytes(dots));
    }
    batch.insert(
        super::sled_store::record_key(key),
        encode_header(&SetHeader::of(set)),
    );
    Ok(())
}
