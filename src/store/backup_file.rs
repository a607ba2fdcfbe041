//! The backup file format: what `GET /v1/admin/backup` streams and `hearsay restore` reads.
//! Pure: it turns records into bytes and bytes back into records, checking them; it reads no
//! file and opens no database (the API streams what [`BackupWriter`] returns, `crate::backup`
//! restores what [`BackupReader`] yields).
//!
//! Layout: the 8-byte magic `HSBACKUP`, a format byte, then items, each a 4-byte little-endian
//! length and a postcard encoding (the cluster codec's types, of codec version
//! [`BackupHeader::codec`]): first a [`BackupHeader`], then one record per key (tombstones
//! included), then the end: how many records, the Merkle root of exactly those records (what
//! `/v1/cluster/digest` of a node holding them says) and a BLAKE3 checksum of every byte before
//! the end. A file cut short has no end and is refused, as is one whose checksum, count or root
//! does not match.

use super::merkle::{Leaf, MerkleIndex};
use super::StoreKey;
use crate::clock::NodeId;
use crate::crdt::KeyState;
use serde::{Deserialize, Serialize};
use std::io::Read;

pub const MAGIC: &[u8; 8] = b"HSBACKUP";
/// The layout this build writes and reads.
pub const FORMAT: u8 = 1;
/// Largest item accepted: a record holds one key's state, at most half a cluster frame.
const MAX_ITEM: usize = crate::wire::MAX_FRAME;

/// Who took the backup, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The node the backup was taken from.
    pub node: NodeId,
    /// Its wall clock when the backup started (milliseconds since the epoch).
    pub started_ms: u64,
    /// The cluster codec version the records are encoded in.
    pub codec: u8,
}

/// What the end of a backup says of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupEnd {
    pub records: u64,
    /// The Merkle root of the records: hash and key count.
    pub root: Leaf,
    /// BLAKE3 of every byte before this item.
    pub checksum: [u8; 32],
}

#[derive(Serialize, Deserialize)]
enum Item {
    Header(BackupHeader),
    Record(StoreKey, KeyState),
    End(BackupEnd),
}

/// Why a backup cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a hearsay backup (no HSBACKUP magic)")]
    NotABackup,
    #[error("backup format {0} is not one this build reads (format {FORMAT})")]
    Format(u8),
    #[error("backup of codec version {0}, which this build does not decode")]
    Codec(u8),
    #[error("the backup ends early (after {records} records): it was cut short")]
    Truncated { records: u64 },
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Builds a backup item by item, keeping the running checksum and root.
pub struct BackupWriter {
    checksum: blake3::Hasher,
    merkle: MerkleIndex,
    records: u64,
}

impl BackupWriter {
    /// The writer and the bytes that open the backup (magic, format, header).
    pub fn start(header: BackupHeader) -> (Self, Vec<u8>) {
        let mut writer = BackupWriter {
            checksum: blake3::Hasher::new(),
            merkle: MerkleIndex::default(),
            records: 0,
        };
        let mut bytes = MAGIC.to_vec();
        bytes.push(FORMAT);
        bytes.extend(frame(&Item::Header(header)));
        writer.checksum.update(&bytes);
        (writer, bytes)
    }

    /// The bytes of one record.
    pub fn record(&mut self, key: StoreKey, state: KeyState) -> Vec<u8> {
        self.merkle.update(&key, None, &state);
        self.records += 1;
        let bytes = frame(&Item::Record(key, state));
        self.checksum.update(&bytes);
        bytes
    }

    /// The root of the records so far.
    pub fn root(&self) -> Leaf {
        self.merkle.root()
    }

    /// The bytes that end the backup, and what they say.
    pub fn finish(self) -> (Vec<u8>, BackupEnd) {
        let end = BackupEnd {
            records: self.records,
            root: self.merkle.root(),
            checksum: *self.checksum.finalize().as_bytes(),
        };
        (frame(&Item::End(end.clone())), end)
    }
}

fn frame(item: &Item) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    let body = postcard::to_stdvec(item).unwrap_or_default();
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend(body);
    bytes
}

/// Reads a backup record by record, checking it as it goes; the last call (`Ok(None)`) checks
/// the end: count, root and checksum.
pub struct BackupReader<R> {
    input: R,
    header: BackupHeader,
    checksum: blake3::Hasher,
    merkle: MerkleIndex,
    records: u64,
    end: Option<BackupEnd>,
}

impl<R: Read> BackupReader<R> {
    /// Reads the magic, format and header.
    pub fn open(mut input: R) -> Result<Self, BackupError> {
        let mut lead = [0u8; 9];
        read_exact(&mut input, &mut lead).map_err(|e| match e {
            BackupError::Truncated { .. } => BackupError::NotABackup,
            other => other,
        })?;
        if &lead[..8] != MAGIC {
            return Err(BackupError::NotABackup);
        }
        if lead[8] != FORMAT {
            return Err(BackupError::Format(lead[8]));
        }
        let mut checksum = blake3::Hasher::new();
        checksum.update(&lead);
        let (item, bytes) = read_item(&mut input, 0)?;
        checksum.update(&bytes);
        let Item::Header(header) = item else {
            return Err(BackupError::Damaged(
                "the first item is not the header".into(),
            ));
        };
        if header.codec != crate::wire::VERSION {
            return Err(BackupError::Codec(header.codec));
        }
        Ok(BackupReader {
            input,
            header,
            checksum,
            merkle: MerkleIndex::default(),
            records: 0,
            end: None,
        })
    }

    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// The next record, or `None` once the end has been read and checked.
    pub fn next_record(&mut self) -> Result<Option<(StoreKey, KeyState)>, BackupError> {
        if self.end.is_some() {
            return Ok(None);
        }
        let (item, bytes) = read_item(&mut self.input, self.records)?;
        match item {
            Item::Record(key, state) => {
                self.checksum.update(&bytes);
                self.merkle.update(&key, None, &state);
                self.records += 1;
                Ok(Some((key, state)))
            }
            Item::End(end) => {
                self.check_end(&end)?;
                self.end = Some(end);
                Ok(None)
            }
            Item::Header(_) => Err(BackupError::Damaged("a second header".into())),
        }
    }

    /// What the end said, once [`BackupReader::next_record`] has returned `None`.
    pub fn end(&self) -> Option<&BackupEnd> {
        self.end.as_ref()
    }

    fn check_end(&mut self, end: &BackupEnd) -> Result<(), BackupError> {
        if *self.checksum.finalize().as_bytes() != end.checksum {
            return Err(BackupError::Damaged("the checksum does not match".into()));
        }
        if end.records != self.records {
            return Err(BackupError::Damaged(format!(
                "the end counts {} records, the file holds {}",
                end.records, self.records
            )));
        }
        if end.root != self.merkle.root() {
            return Err(BackupError::Damaged(
                "the records do not hash to the root the backup names".into(),
            ));
        }
        let mut rest = [0u8; 1];
        if self.input.read(&mut rest)? != 0 {
            return Err(BackupError::Damaged("bytes after the end".into()));
        }
        Ok(())
    }
}

/// Reads one item; `records` so far, for the error of a file cut short.
fn read_item(input: &mut impl Read, records: u64) -> Result<(Item, Vec<u8>), BackupError> {
    let mut len = [0u8; 4];
    read_exact(input, &mut len).map_err(|e| cut_after(e, records))?;
    let size = u32::from_le_bytes(len) as usize;
    if size > MAX_ITEM {
        return Err(BackupError::Damaged(format!("an item of {size} bytes")));
    }
    let mut bytes = len.to_vec();
    bytes.resize(4 + size, 0);
    read_exact(input, &mut bytes[4..]).map_err(|e| cut_after(e, records))?;
    let item = postcard::from_bytes(&bytes[4..])
        .map_err(|e| BackupError::Damaged(format!("an undecodable item: {e}")))?;
    Ok((item, bytes))
}

fn cut_after(e: BackupError, records: u64) -> BackupError {
    match e {
        BackupError::Truncated { .. } => BackupError::Truncated { records },
        other => other,
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), BackupError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => BackupError::Truncated { records: 0 },
        _ => BackupError::Io(e),
    })
}

/// The Merkle root of a set of records, as a node holding exactly them reports it.
pub fn root_of<'a>(records: impl IntoIterator<Item = (&'a StoreKey, &'a KeyState)>) -> Leaf {
    let mut index = MerkleIndex::default();
    for (key, state) in records {
        index.update(key, None, state);
    }
    index.root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::crdt::{LwwRegister, Value};

    fn record(i: u32) -> (StoreKey, KeyState) {
        let value = Value {
            content_type: "text/plain".into(),
            data: format!("v{i}").into_bytes(),
        };
        let register = LwwRegister::write(
            Timestamp::new(1_000 + u64::from(i), 0),
            NodeId::new("n1").unwrap(),
            Some(value),
        );
        (StoreKey::kv(format!("k{i}")), KeyState::Register(register))
    }

    fn backup(n: u32) -> (Vec<u8>, BackupEnd) {
        let header = BackupHeader {
            node: NodeId::new("n1").unwrap(),
            started_ms: 5,
            codec: crate::wire::VERSION,
        };
        let (mut writer, mut bytes) = BackupWriter::start(header);
        for i in 0..n {
            let (key, state) = record(i);
            bytes.extend(writer.record(key, state));
        }
        let (end_bytes, end) = writer.finish();
        bytes.extend(end_bytes);
        (bytes, end)
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(StoreKey, KeyState)>, BackupError> {
        let mut reader = BackupReader::open(bytes)?;
        let mut out = Vec::new();
        while let Some(record) = reader.next_record()? {
            out.push(record);
        }
        Ok(out)
    }

    #[test]
    fn a_backup_reads_back_record_for_record_with_its_root() {
        let (bytes, end) = backup(50);
        let records = read_all(&bytes).unwrap();
        assert_eq!(records, (0..50).map(record).collect::<Vec<_>>());
        assert_eq!(end.records, 50);
        assert_eq!(end.root, root_of(records.iter().map(|(k, s)| (k, s))));
        assert_eq!(end.root.count, 50);
        assert!(read_all(&backup(0).0).unwrap().is_empty());
    }

    #[test]
    fn a_backup_cut_short_or_altered_anywhere_is_refused() {
        let (bytes, _) = backup(5);
        for cut in 0..bytes.len() {
            let refused = read_all(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(
                    refused,
                    BackupError::Truncated { .. } | BackupError::NotABackup
                ),
                "cut at {cut}: {refused}"
            );
        }
        for at in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[at] ^= 0x01;
            assert!(
                read_all(&altered).is_err(),
                "a flipped bit at {at} went unnoticed"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(read_all(&longer), Err(BackupError::Damaged(_))));
        let mut other_format = bytes;
        other_format[8] = FORMAT + 1;
        assert!(matches!(
            read_all(&other_format),
            Err(BackupError::Format(_))
        ));
    }
}
