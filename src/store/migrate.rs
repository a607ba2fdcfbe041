//! On-disk layout versions and the steps that upgrade an older data directory at start-up. Each
//! step is described in `migrations/NNNN_*.md`; the layout version lives in the database under
//! [`LAYOUT_KEY`]. Steps are applied in order, each as one atomic batch, so a crash during an
//! upgrade leaves the directory in either the old layout or the new one.

use super::key_lists::{self, KeyList};
use super::sled_store::{key_hash_key, tombstone_key, TreeBatch, KEY_HASH_PREFIX};
use super::{record, set_rows, StoreError, StoreKey};
use crate::crdt::KeyState;
use std::path::Path;

/// The layout this build writes.
pub const CURRENT_LAYOUT: u32 = 12;

pub const LAYOUT_KEY: &[u8] = b"meta/layout";
/// The node metadata ([`super::Meta`]).
pub const META_KEY: &[u8] = b"meta/node";
/// Present when the persisted Merkle leaves cover every record.
pub const MERKLE_COMPLETE_KEY: &[u8] = b"meta/merkle";
/// Prefix of record keys (followed by the encoded `StoreKey`).
pub const RECORD_PREFIX: u8 = b'r';

/// Reads the layout, upgrades it to [`CURRENT_LAYOUT`], and stamps a fresh database. Returns
/// the layout found.
pub fn upgrade(db: &sled::Db, dir: &Path) -> Result<u32, StoreError> {
    let found = match db.get(LAYOUT_KEY)? {
        Some(v) => decode_layout(&v)?,
        None if db.is_empty() => {
            db.insert(LAYOUT_KEY, &CURRENT_LAYOUT.to_be_bytes())?;
            return Ok(CURRENT_LAYOUT);
        }
        None => {
            return Err(StoreError::Damaged {
                dir: dir.to_path_buf(),
                reason: "the database holds data but no layout version".into(),
            })
        }
    };
    if found > CURRENT_LAYOUT {
        return Err(StoreError::NewerLayout {
            dir: dir.to_path_buf(),
            found,
            supported: CURRENT_LAYOUT,
        });
    }
    let mut layout = found;
    while layout < CURRENT_LAYOUT {
        match layout {
            1 => v1_to_v2(db)?,
            2 => v2_to_v3(db)?,
            3 => v3_to_v4(db)?,
            4 => v4_to_v5(db)?,
            5 => v5_to_v6(db)?,
            6 => v6_to_v7(db)?,
            7 => v7_to_v8(db)?,
            8 => v8_to_v9(db)?,
            9 => v9_to_v10(db)?,
            10 => v10_to_v11(db)?,
            11 => v11_to_v12(db)?,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "no upgrade step from layout {other}"
                )))
            }
        }
        layout += 1;
        tracing::info!(dir = %dir.display(), layout, "upgraded the data directory layout");
    }
    Ok(found)
}

fn decode_layout(bytes: &[u8]) -> Result<u32, StoreError> {
    let raw: [u8; 4] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("bad layout version".into()))?;
    Ok(u32::from_be_bytes(raw))
}

/// Layout 5 (`migrations/0005_storage_epochs.md`): dots name replica ids (node id and storage
/// epoch), so states are encoded differently. Records keep their format-1 encoding until they
/// are next written (they are read through `legacy`); the metadata is converted here, and the
/// Merkle leaves, which hash the encoding, are rebuilt at start-up.
fn v4_to_v5(db: &sled::Db) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    if let Some(bytes) = db.get(META_KEY)? {
        let meta = super::legacy::decode_meta(&bytes)?;
        batch.insert(META_KEY, record::to_bytes(&meta));
    }
    batch.remove(MERKLE_COMPLETE_KEY);
    batch.insert(LAYOUT_KEY, &5u32.to_be_bytes());
    db.apply_batch(batch)?;
    Ok(())
}

/// Layout 4 (`migrations/0004_two_write_ahead_logs.md`) keeps the write-ahead log in two files
/// used in turn (`wal.log`, `wal-2.log`): nothing to rewrite (the existing log becomes the first),
/// but an older build must refuse the directory, since it would not replay the second file.
fn v3_to_v4(db: &sled::Db) -> Result<(), StoreError> {
    db.insert(LAYOUT_KEY, &4u32.to_be_bytes())?;
    Ok(())
}

/// Layout 3 (`migrations/0003_tombstone_collection_horizon.md`) adds `meta/collected`, absent
/// meaning that no tombstone was collected yet: nothing to rewrite, but an older build must refuse
/// the directory, since it would ignore the horizon and take back values a collected tombstone
/// deleted.
fn v2_to_v3(db: &sled::Db) -> Result<(), StoreError> {
    db.insert(LAYOUT_KEY, &3u32.to_be_bytes())?;
    Ok(())
}

/// Layout 6 (`migrations/0006_member_roster.md`) adds `meta/members`, absent until the node
/// first records the members it knows: nothing to rewrite.
fn v5_to_v6(db: &sled::Db) -> Result<(), StoreError> {
    db.insert(LAYOUT_KEY, &6u32.to_be_bytes())?;
    Ok(())
}

/// Layout 8 (`migrations/0008_forgotten_values.md`) adds `meta/forgotten`, absent until the
/// node first forgets a value on a peer's word: nothing to rewrite, but an older build must
/// refuse the directory, since it would take those values back.
fn v7_to_v8(db: &sled::Db) -> Result<(), StoreError> {
    db.insert(LAYOUT_KEY, &8u32.to_be_bytes())?;
    Ok(())
}

/// Layout 12 (`migrations/0012_member_addresses.md`) adds `meta/member-addrs`, absent until the
/// next membership change: nothing to rewrite, but an older build must refuse the directory,
/// since it would ignore the addresses and, started without seeds, stay alone.
fn v11_to_v12(db: &sled::Db) -> Result<(), StoreError> {
    db.insert(LAYOUT_KEY, &12u32.to_be_bytes())?;
    Ok(())
}

/// Layout 11 (`migrations/0011_prior_hashes.md`) logs each key's prior item hash and records the
/// log position of the persisted leaves (`meta/leaves-at`, absent until the first checkpoint):
/// nothing to rewrite, but an older build must refuse the directory, since it would skip the
/// entries of the new formats.
fn v10_to_v11(db: &sled::Db) -> Result<(), StoreError> {
    db.insert(LAYOUT_KEY, &11u32.to_be_bytes())?;
    Ok(())
}

/// Layout 10 (`migrations/0010_key_lists.md`) keeps the per-leaf key index in one row per leaf
/// (`k` + leaf → every key of the leaf with its item hash prefix) instead of one row per key
/// (`h` + leaf + key): the lists are built from the per-key rows, which are removed.
fn v9_to_v10(db: &sled::Db) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut lists: std::collections::BTreeMap<u16, KeyList> = Default::default();
    for item in db.scan_prefix([KEY_HASH_PREFIX]) {
        let (row, hash) = item?;
        let (Some(leaf), Some(key), Ok(hash)) = (
            row.get(1..3).map(|l| u16::from_be_bytes([l[0], l[1]])),
            row.get(3..),
            <[u8; 8]>::try_from(hash.as_ref()),
        ) else {
            return Err(StoreError::Corrupt("bad key index row".into()));
        };
        lists.entry(leaf).or_default().insert(key.to_vec(), hash);
        batch.remove(row);
    }
    for (leaf, list) in &lists {
        batch.insert(&key_lists::row_key(*leaf), key_lists::encode(list));
    }
    batch.insert(LAYOUT_KEY, &10u32.to_be_bytes());
    db.apply_batch(batch)?;
    Ok(())
}

/// Layout 9 (`migrations/0009_tombstone_index.md`) adds the tombstone index (`t` + encoded key →
/// the timestamp from which the record is a tombstone), so that a start reads the tombstones
/// without decoding every record: every register record is read once here to build it.
fn v8_to_v9(db: &sled::Db) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for item in db.scan_prefix([RECORD_PREFIX]) {
        let (row, value) = item?;
        if set_rows::is_header(&value) {
            continue;
        }
        let Some(key) = StoreKey::decode(&row[1..]) else {
            return Err(StoreError::Corrupt("undecodable key".into()));
        };
        if let state @ KeyState::Register(register) = &record::decode_record(&value)? {
            if let (true, Some(from)) = (key.holds(state), register.deleted_from()) {
                batch.insert(tombstone_key(&key), &from.raw().to_be_bytes());
            }
        }
    }
    batch.insert(LAYOUT_KEY, &9u32.to_be_bytes());
    db.apply_batch(batch)?;
    Ok(())
}

/// Layout 7 (`migrations/0007_set_element_rows.md`) keeps each set's elements and dots in rows of
/// their own and only a header in the set's record, and hashes a set from its header: every set
/// record is split into rows, and the Merkle leaves are rebuilt at start-up. A record of the wrong
/// kind under a set key (only a lying peer could have left one, before kinds were checked) is
/// dropped, with its key-index entry.
fn v6_to_v7(db: &sled::Db) -> Result<(), StoreError> {
    let mut batch = TreeBatch::default();
    for item in db.scan_prefix([RECORD_PREFIX, b's']) {
        let (row, value) = item?;
        let Some(key) = StoreKey::decode(&row[1..]) else {
            return Err(StoreError::Corrupt("undecodable key".into()));
        };
        match record::decode_record(&value)? {
            KeyState::Set(set) => set_rows::replace(db, &mut batch, &key, &set)?,
            KeyState::Register(_) | KeyState::Counter(_) => {
                tracing::warn!(key = %key.name, "dropped a state of another kind stored under a set key");
                batch.remove(&row);
                batch.remove(key_hash_key(&key));
            }
        }
    }
    batch.remove(MERKLE_COMPLETE_KEY);
    batch.insert(LAYOUT_KEY, &7u32.to_be_bytes());
    db.apply_batch(batch.into_batch())?;
    Ok(())
}

/// Layout 1 stored each record as the bare postcard encoding of its state and kept no Merkle
/// leaves. Layout 2 (`migrations/0002_record_format_and_merkle_leaves.md`) prefixes every record
/// with a format byte; the leaves are rebuilt by the core at start-up because the completeness
/// marker is absent.
fn v1_to_v2(db: &sled::Db) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for item in db.scan_prefix([RECORD_PREFIX]) {
        let (key, value) = item?;
        // Checked, then kept as it is behind format byte 1 (the encoding before epochs).
        super::legacy::decode_state(&value)?;
        let mut record = vec![record::RECORD_FORMAT_BEFORE_EPOCHS];
        record.extend_from_slice(&value);
        batch.insert(key, record);
    }
    batch.remove(MERKLE_COMPLETE_KEY);
    batch.insert(LAYOUT_KEY, &2u32.to_be_bytes());
    db.apply_batch(batch)?;
    Ok(())
}

/// Writes a record in layout 1 (`state` must be of epoch 0, as everything then was). Kept for
/// the upgrade tests, which build a layout-1 directory.
pub fn write_layout1_record(db: &sled::Db, key: &super::StoreKey, state: &KeyState) {
    let mut k = vec![RECORD_PREFIX];
    k.extend(key.encode());
    let _ = db.insert(k, super::legacy::encode_state(state));
    let _ = db.insert(LAYOUT_KEY, &1u32.to_be_bytes());
}
