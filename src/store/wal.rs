//! The write-ahead log that makes `fsync` durability real. sled 0.34's `flush()` relies on
//! `sync_file_range`, which does not flush a drive's volatile cache (sled #1452, #1351), so every
//! acknowledged delta is first appended here and `fdatasync`ed. At start-up the entries are
//! merged again (merging is idempotent, so replaying entries the database already holds is
//! harmless); after a checkpoint (database flushed, file system synced) the log is emptied.
//!
//! Entry: payload length (u32 LE), first 4 bytes of the payload's BLAKE3 hash, payload. Reading
//! stops at the first torn or corrupt entry: it can only be the tail of an unacknowledged write.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Entries larger than this are treated as corrupt when reading.
const MAX_ENTRY: usize = 256 << 20;

pub struct Wal {
    file: File,
    /// Entries appended but not yet written to the file.
    pending: Vec<u8>,
    /// Bytes in the file.
    len: u64,
    /// Written since the last `fdatasync`.
    unsynced: bool,
}

impl Wal {
    /// Opens (or creates) the log and returns it with the payloads of its intact entries.
    pub fn open(path: &Path) -> std::io::Result<(Wal, Vec<Vec<u8>>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (payloads, intact) = parse(&bytes);
        if intact < bytes.len() {
            tracing::warn!(
                torn_bytes = bytes.len() - intact,
                "write-ahead log ends in a torn entry (an unacknowledged write); dropping it"
            );
            file.set_len(intact as u64)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::Start(intact as u64))?;
        let wal = Wal {
            file,
            pending: Vec::new(),
            len: intact as u64,
            unsynced: false,
        };
        Ok((wal, payloads))
    }

    pub fn append(&mut self, payload: &[u8]) {
        self.pending
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.pending
            .extend_from_slice(&blake3::hash(payload).as_bytes()[..4]);
        self.pending.extend_from_slice(payload);
    }

    /// Writes pending entries to the file (the page cache: survives a process crash).
    pub fn write(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending)?;
            self.len += self.pending.len() as u64;
            self.pending.clear();
            self.unsynced = true;
        }
        Ok(())
    }

    /// Writes pending entries and `fdatasync`s the file (survives power loss).
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.write()?;
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len + self.pending.len() as u64
    }

    /// Empties the log. Only call once everything it holds is durable elsewhere.
    pub fn reset(&mut self) -> std::io::Result<()> {
        self.pending.clear();
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.sync_data()?;
        self.len = 0;
        self.unsynced = false;
        Ok(())
    }
}

/// Splits a log into payloads; also returns how many leading bytes were intact.
fn parse(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut payloads = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_ENTRY {
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if blake3::hash(payload).as_bytes()[..4] != header[4..8] {
            break;
        }
        payloads.push(payload.to_vec());
        at += 8 + len;
    }
    (payloads, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, replay) = Wal::open(&path).unwrap();
        assert!(replay.is_empty());
        wal.append(b"one");
        wal.append(b"two");
        wal.sync().unwrap();
        drop(wal);
        // A torn third entry: header promises 100 bytes, only 3 arrive.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&100u32.to_le_bytes()).unwrap();
        f.write_all(b"abcdxyz").unwrap();
        drop(f);
        let (mut wal, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay, vec![b"one".to_vec(), b"two".to_vec()]);
        wal.append(b"three");
        wal.sync().unwrap();
        drop(wal);
        let (mut wal, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.len(), 3);
        wal.reset().unwrap();
        drop(wal);
        assert!(Wal::open(&path).unwrap().1.is_empty());
    }

    #[test]
    fn a_corrupt_entry_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(b"good");
        wal.append(b"flipped");
        wal.sync().unwrap();
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Wal::open(&path).unwrap().1, vec![b"good".to_vec()]);
    }
}
