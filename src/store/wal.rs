//! One write-ahead log file (the store keeps two and uses them in turn: see `logs.rs`). sled
//! 0.34's `flush()` relies on `sync_file_range`, which does not flush a drive's volatile cache
//! (sled #1452, #1351), so every acknowledged delta is first written here and `fdatasync`ed. At
//! start-up the entries are merged again (merging is idempotent, so replaying entries the database
//! already holds is harmless).
//!
//! The file is preallocated with zeros and overwritten in place, so that `fdatasync` only has to
//! write data blocks, never the inode (an append changes the file size, which costs a second
//! synchronous write per sync). A log starts over by writing a new generation in its header, not
//! by clearing the file: every entry's checksum covers the generation, so older entries read as
//! the end. Generation 0 marks a log with nothing to replay.
//!
//! Layout: header = magic `HSYWAL01` + generation (u64 LE); then entries = payload length
//! (u32 LE), first 8 bytes of BLAKE3(generation LE ‖ payload), payload. Reading stops at the first
//! entry that does not check: a torn tail can only be an unacknowledged write.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"HSYWAL01";
const HEADER: u64 = 16;
const ENTRY_HEADER: usize = 12;
/// Entries larger than this are treated as corrupt when reading.
const MAX_ENTRY: usize = 256 << 20;
/// Bytes of zeros written when a log is created; a log grows past it if it must.
pub const PREALLOCATED: u64 = 32 << 20;

pub struct Wal {
    /// Shared so that a driver may `fdatasync` it off the core's thread (see [`Wal::file`]).
    file: Arc<File>,
    generation: u64,
    /// Entries appended but not yet written to the file.
    pending: Vec<u8>,
    /// Offset just past the last written entry.
    end: u64,
    /// Written since the last `fdatasync`.
    unsynced: bool,
}

fn checksum(generation: u64, payload: &[u8]) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    out
}

impl Wal {
    /// Opens (or creates, at generation `fresh`) a log and returns it with the payloads of its
    /// intact entries. A log that cannot be preallocated (a nearly full disk) is left short and
    /// grows as it is written; nothing half-written stays behind.
    pub fn open(path: &Path, fresh: u64) -> std::io::Result<(Wal, Vec<Vec<u8>>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let header = bytes.get(..HEADER as usize);
        let (generation, payloads, end) = match header {
            Some(h) if &h[..8] == MAGIC => {
                let generation = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
                let (payloads, end) = parse(&bytes[HEADER as usize..], generation);
                (generation, payloads, HEADER + end as u64)
            }
            _ if bytes.iter().all(|&b| b == 0) => {
                // New (or never written): preallocate and stamp the fresh generation.
                if let Err(e) = preallocate(&mut file) {
                    tracing::warn!(log = %path.display(), error = %e, "cannot preallocate the write-ahead log; it grows as it is written (each sync then costs two writes)");
                    file.set_len(0)?;
                }
                write_header(&file, fresh)?;
                file.sync_all()?;
                (fresh, Vec::new(), HEADER)
            }
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a hearsay write-ahead log", path.display()),
                ))
            }
        };
        let wal = Wal {
            file: Arc::new(file),
            generation,
            pending: Vec::new(),
            end,
            unsynced: false,
        };
        Ok((wal, payloads))
    }

    /// The generation whose entries this log holds (0: none to replay).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn append(&mut self, payload: &[u8]) {
        self.pending
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.pending
            .extend_from_slice(&checksum(self.generation, payload));
        self.pending.extend_from_slice(payload);
    }

    /// Writes pending entries to the file (the page cache: survives a process crash). They go
    /// at the log's end by position: after a failed or short write (a full disk), the next
    /// attempt rewrites them from the same offset, so no torn entry is ever left mid-log.
    pub fn write(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all_at(&self.pending, self.end)?;
            self.end += self.pending.len() as u64;
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

    /// The log file, for a driver that syncs it on another thread. `fdatasync` on it covers
    /// everything [`Wal::write`] wrote before the call.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// The offset at which the next appended entry will start.
    pub fn position(&self) -> u64 {
        self.end + self.pending.len() as u64
    }

    /// Drops every entry from `offset` on (a rolled-back commit's), durably: the entry header at
    /// `offset` is zeroed, so reading stops there, and new entries are written from there.
    pub fn truncate(&mut self, offset: u64) -> std::io::Result<()> {
        let offset = offset.max(HEADER);
        self.pending.clear();
        if offset < self.end {
            self.file.write_all_at(&[0u8; ENTRY_HEADER], offset)?;
            self.end = offset;
        }
        self.file.sync_data()?;
        self.unsynced = false;
        Ok(())
    }

    /// Bytes of entries in the log.
    pub fn len(&self) -> u64 {
        self.end - HEADER + self.pending.len() as u64
    }

    /// Starts the log over at `generation` (its older entries no longer read). Not synced: the
    /// first sync of new entries covers the header too, and until then nothing here matters.
    /// Only call once everything the log holds is durable elsewhere.
    pub fn restart(&mut self, generation: u64) -> std::io::Result<()> {
        self.pending.clear();
        write_header(&self.file, generation)?;
        self.generation = generation;
        self.end = HEADER;
        self.unsynced = true;
        Ok(())
    }
}

/// Marks a log file as holding nothing to replay (generation 0), durably. For a retired log
/// whose entries a checkpoint made durable in the database; safe on any thread.
pub fn clear(file: &File) -> std::io::Result<()> {
    write_header(file, 0)?;
    file.sync_data()
}

fn preallocate(file: &mut File) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    file.seek(SeekFrom::Start(0))?;
    for _ in 0..PREALLOCATED >> 20 {
        file.write_all(&zeros)?;
    }
    file.sync_all()
}

fn write_header(file: &File, generation: u64) -> std::io::Result<()> {
    let mut header = [0u8; HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&generation.to_le_bytes());
    file.write_all_at(&header, 0)
}

/// The offset in its file of each entry of `payloads` (as [`Wal::open`] returned them), in order.
pub fn offsets(payloads: &[Vec<u8>]) -> impl Iterator<Item = u64> + '_ {
    payloads.iter().scan(HEADER, |at, payload| {
        let offset = *at;
        *at += (ENTRY_HEADER + payload.len()) as u64;
        Some(offset)
    })
}

/// Splits the entries of `generation` into payloads; also returns how many bytes they take.
fn parse(bytes: &[u8], generation: u64) -> (Vec<Vec<u8>>, usize) {
    let mut payloads = Vec::new();
    if generation == 0 {
        return (payloads, 0);
    }
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + ENTRY_HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_ENTRY {
            break;
        }
        let Some(payload) = bytes.get(at + ENTRY_HEADER..at + ENTRY_HEADER + len) else {
            break;
        };
        if checksum(generation, payload) != header[4..ENTRY_HEADER] {
            break;
        }
        payloads.push(payload.to_vec());
        at += ENTRY_HEADER + len;
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
        let (mut wal, replay) = Wal::open(&path, 1).unwrap();
        assert!(replay.is_empty());
        wal.append(b"one");
        wal.append(b"two");
        wal.sync().unwrap();
        // A torn third entry: its header promises 100 bytes, only 3 arrive.
        let end = wal.end;
        drop(wal);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        let mut w = &f;
        w.seek(SeekFrom::Start(end)).unwrap();
        w.write_all(&100u32.to_le_bytes()).unwrap();
        w.write_all(b"abcdefghxyz").unwrap();
        drop(f);
        let (mut wal, replay) = Wal::open(&path, 1).unwrap();
        assert_eq!(replay, vec![b"one".to_vec(), b"two".to_vec()]);
        // New entries overwrite the torn one.
        wal.append(b"three");
        wal.sync().unwrap();
        drop(wal);
        let (mut wal, replay) = Wal::open(&path, 1).unwrap();
        assert_eq!(replay.len(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATED);
        // After a restart the old entries no longer read, though their bytes are still there.
        wal.restart(2).unwrap();
        wal.append(b"four");
        wal.sync().unwrap();
        drop(wal);
        let (wal, replay) = Wal::open(&path, 1).unwrap();
        assert_eq!(replay, vec![b"four".to_vec()]);
        // Cleared, it holds nothing to replay.
        clear(&wal.file()).unwrap();
        drop(wal);
        let (wal, replay) = Wal::open(&path, 1).unwrap();
        assert_eq!((wal.generation(), replay.len()), (0, 0));
    }

    #[test]
    fn a_corrupt_entry_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 1).unwrap();
        wal.append(b"good");
        wal.append(b"flipped");
        wal.sync().unwrap();
        let last = (wal.end - 1) as usize;
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Wal::open(&path, 1).unwrap().1, vec![b"good".to_vec()]);
    }

    #[test]
    fn a_short_write_on_a_full_disk_is_rewritten_from_the_same_offset() {
        let Some(disk) = crate::testing::SmallDisk::mount(PREALLOCATED + (4 << 20)) else {
            return;
        };
        let path = disk.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 1).unwrap();
        // Room for part of one more entry past the preallocated log.
        let filler = disk.fill(0);
        let entry = vec![7u8; 64 << 10];
        let mut written = 0;
        loop {
            wal.append(&entry);
            if wal.write().is_err() {
                break;
            }
            written += 1;
        }
        assert!(
            wal.end > PREALLOCATED - (64 << 10),
            "the log filled its preallocation"
        );
        // Some space back: the pending entries go out whole, after the last good one.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap()
            .set_len(0);
        wal.append(b"after");
        wal.sync().unwrap();
        drop(wal);
        let (_, replay) = Wal::open(&path, 1).unwrap();
        assert_eq!(replay.len(), written + 2);
        assert_eq!(replay.last().unwrap(), b"after");
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        std::fs::write(&path, b"something else entirely").unwrap();
        assert!(Wal::open(&path, 1).is_err());
    }
}
