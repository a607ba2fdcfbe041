//! The store's two write-ahead logs (`wal.log`, `wal-2.log`), used in turn so that a checkpoint
//! never stops the core. A checkpoint rotates: new entries go to the spare log (started at the
//! next generation), and the retired log is cleared off the core's thread once the database and
//! the file system are synced, which makes everything it held durable there. Until it is cleared
//! no further rotation happens, so at most one log waits for its checkpoint.
//!
//! At start-up both logs are read; the one with the older generation is replayed first (merges
//! are idempotent and commute, so replaying a log already covered by a checkpoint is harmless).

use super::wal::{self, Wal};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Where an entry is in the sequence of everything ever logged: generations only grow, and
/// within one, offsets do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    pub generation: u64,
    pub offset: u64,
}

impl LogPosition {
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.generation.to_be_bytes());
        out[8..].copy_from_slice(&self.offset.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<LogPosition> {
        let raw: &[u8; 16] = bytes.try_into().ok()?;
        let (generation, offset) = raw.split_at(8);
        Some(LogPosition {
            generation: u64::from_be_bytes(generation.try_into().ok()?),
            offset: u64::from_be_bytes(offset.try_into().ok()?),
        })
    }
}

/// A logged entry read at start-up, with its position.
pub type Logged = (LogPosition, Vec<u8>);

pub struct Logs {
    logs: [Wal; 2],
    active: usize,
    /// The other log holds nothing to replay, so a rotation may switch to it.
    spare_clear: bool,
}

/// A log retired by a rotation; clear it (off the core's thread) once the database and the file
/// system are synced.
pub struct Retired {
    file: Arc<File>,
}

impl Retired {
    pub fn clear(self) -> std::io::Result<()> {
        wal::clear(&self.file)
    }
}

impl Logs {
    /// Opens (or creates) both logs in `dir`; returns them with the entries to replay, older
    /// generation first.
    pub fn open(dir: &Path) -> std::io::Result<(Logs, Vec<Logged>)> {
        let positioned = |wal: &Wal, payloads: Vec<Vec<u8>>| -> Vec<Logged> {
            let generation = wal.generation();
            let offsets: Vec<u64> = wal::offsets(&payloads).collect();
            offsets
                .into_iter()
                .map(|offset| LogPosition { generation, offset })
                .zip(payloads)
                .collect()
        };
        let (first, first_payloads) = Wal::open(&dir.join("wal.log"), 1)?;
        let (second, second_payloads) = Wal::open(&dir.join("wal-2.log"), 0)?;
        let first_entries = positioned(&first, first_payloads);
        let second_entries = positioned(&second, second_payloads);
        let active = usize::from(second.generation() > first.generation());
        let replay = if active == 0 {
            second_entries.into_iter().chain(first_entries).collect()
        } else {
            first_entries.into_iter().chain(second_entries).collect()
        };
        let logs = [first, second];
        let spare_clear = logs[1 - active].generation() == 0;
        Ok((
            Logs {
                logs,
                active,
                spare_clear,
            },
            replay,
        ))
    }

    /// The log new entries go to.
    pub fn active(&mut self) -> &mut Wal {
        &mut self.logs[self.active]
    }

    /// Where the next entry goes: (log index, offset).
    pub fn position(&self) -> (usize, u64) {
        (self.active, self.logs[self.active].position())
    }

    /// Where the next entry goes, in the sequence of everything logged.
    pub fn next_position(&self) -> LogPosition {
        let active = &self.logs[self.active];
        LogPosition {
            generation: active.generation(),
            offset: active.position(),
        }
    }

    /// Drops the entries of log `index` from `offset` on, durably (a rolled-back commit's).
    pub fn truncate(&mut self, index: usize, offset: u64) -> std::io::Result<()> {
        self.logs[index].truncate(offset)
    }

    /// Bytes of entries in the active log.
    pub fn len(&self) -> u64 {
        self.logs[self.active].len()
    }

    /// Switches new entries to the spare log and returns the retired one, or `None` while the
    /// spare still waits for its own checkpoint. Call between groups (nothing pending).
    pub fn rotate(&mut self) -> std::io::Result<Option<Retired>> {
        if !self.spare_clear {
            return Ok(None);
        }
        self.logs[self.active].write()?;
        let next = self.logs[self.active].generation() + 1;
        let spare = 1 - self.active;
        self.logs[spare].restart(next)?;
        let retired = Retired {
            file: self.logs[self.active].file(),
        };
        self.active = spare;
        self.spare_clear = false;
        Ok(Some(retired))
    }

    /// The retired log was cleared: the next rotation may use it.
    pub fn spare_cleared(&mut self) {
        self.spare_clear = true;
    }

    /// Starts both logs over, durably; only once everything they hold is durable in the
    /// database (a checkpoint done in place, at start-up or shutdown).
    pub fn clear_all(&mut self) -> std::io::Result<()> {
        let spare = 1 - self.active;
        wal::clear(&self.logs[spare].file())?;
        self.spare_clear = true;
        let next = self.logs[self.active].generation().max(1) + 1;
        let active = &mut self.logs[self.active];
        active.restart(next)?;
        active.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(dir: &Path) -> Vec<Vec<u8>> {
        payloads(Logs::open(dir).unwrap().1)
    }

    fn payloads(entries: Vec<Logged>) -> Vec<Vec<u8>> {
        entries.into_iter().map(|(_, payload)| payload).collect()
    }

    #[test]
    fn a_rotation_keeps_both_logs_until_the_retired_one_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let (mut logs, entries) = Logs::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        logs.active().append(b"a1");
        logs.active().sync().unwrap();
        let retired = logs.rotate().unwrap().expect("the spare is clear");
        logs.active().append(b"b1");
        logs.active().sync().unwrap();
        // No second rotation while the first waits for its checkpoint.
        assert!(logs.rotate().unwrap().is_none());
        // A crash now replays both, older first.
        assert_eq!(replay(dir.path()), vec![b"a1".to_vec(), b"b1".to_vec()]);
        retired.clear().unwrap();
        logs.spare_cleared();
        assert_eq!(replay(dir.path()), vec![b"b1".to_vec()]);
        // The next rotation goes back to the first file, at a newer generation.
        let retired = logs.rotate().unwrap().expect("cleared");
        logs.active().append(b"a2");
        logs.active().sync().unwrap();
        assert_eq!(replay(dir.path()), vec![b"b1".to_vec(), b"a2".to_vec()]);
        retired.clear().unwrap();
        drop(logs);
        let (mut logs, entries) = Logs::open(dir.path()).unwrap();
        assert_eq!(payloads(entries.clone()), vec![b"a2".to_vec()]);
        // Positions order entries across logs and generations, and name where the next one goes.
        assert!(
            entries[0].0
                > LogPosition {
                    generation: 2,
                    offset: u64::MAX
                }
        );
        assert!(logs.next_position() > entries[0].0);
        assert_eq!(
            LogPosition::from_bytes(&logs.next_position().to_bytes()),
            Some(logs.next_position())
        );
        logs.clear_all().unwrap();
        assert!(replay(dir.path()).is_empty());
    }
}
