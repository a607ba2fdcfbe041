//! Compaction of a stopped node's database: every row copied, in key order, into a fresh sled
//! database that then replaces the old one. sled reuses the space of deleted and overwritten rows
//! inside its file but gives it back to the file system only when the file's last segments are
//! free, so after deleting much of the data only a copy makes the directory small again.
//!
//! The replacement survives a crash at any point: the copy is built in `db.compacting`, checked
//! against the original (sled's checksum of every row) and flushed; then `db` becomes `db.old`,
//! `db.compacting` becomes `db`, and `db.old` is removed. [`restore_database`], run before every
//! open, finishes a replacement a crash interrupted; [`remove_leftovers`], run once the database
//! is open (and so locked against another process), removes what a crash left beside it. The write-ahead logs are not touched: the
//! database's rows, the log positions they record included, are the same after the copy.
//!
//! Owns only the database directory's replacement; it makes no decision about the rows.

use super::StoreError;
use std::path::Path;

const DATABASE: &str = "db";
const COPY: &str = "db.compacting";
const REPLACED: &str = "db.old";
/// Rows written per sled batch while copying.
const ROWS_PER_BATCH: usize = 4096;

/// What a compaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// Rows copied, over every tree.
    pub rows: u64,
    /// Bytes of the database directory before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Compacts the database of the data directory `dir`, which no running node may hold (refused
/// with [`StoreError::InUse`] otherwise). The copy uses a page cache of `cache_bytes`.
pub fn compact(dir: &Path, cache_bytes: u64) -> Result<Compaction, StoreError> {
    restore_database(dir)?;
    let database = dir.join(DATABASE);
    if !database.is_dir() {
        return Err(StoreError::Corrupt(format!(
            "{} holds no database to compact",
            dir.display()
        )));
    }
    let copy_path = dir.join(COPY);
    let (rows, bytes_before) = {
        let old = super::sled_store::open_db(dir, false, cache_bytes)?;
        remove_leftovers(dir)?;
        let bytes_before = dir_bytes(&database)?;
        let copy = sled::Config::new()
            .path(&copy_path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .create_new(true)
            .open()?;
        let rows = copy_rows(&old, &copy)?;
        if old.checksum()? != copy.checksum()? {
            return Err(StoreError::Corrupt(
                "the compacted copy differs from the database; the original is kept".into(),
            ));
        }
        copy.flush()?;
        (rows, bytes_before)
    };
    // Both handles are dropped: sled has released the directories (open_db waits for that).
    std::fs::rename(&database, dir.join(REPLACED))?;
    std::fs::rename(&copy_path, &database)?;
    sync_dir(dir)?;
    remove_dir(&dir.join(REPLACED))?;
    Ok(Compaction {
        rows,
        bytes_before,
        bytes_after: dir_bytes(&database)?,
    })
}

/// Finishes a replacement a crash interrupted between its renames: with no database, a copy
/// beside a replaced database is finished (it was renamed only once complete) and becomes the
/// database; a replaced database alone goes back.
pub(super) fn restore_database(dir: &Path) -> Result<(), StoreError> {
    let database = dir.join(DATABASE);
    let copy = dir.join(COPY);
    let replaced = dir.join(REPLACED);
    if database.exists() || !replaced.is_dir() {
        return Ok(());
    }
    let finished = if copy.is_dir() { copy } else { replaced };
    std::fs::rename(&finished, &database)?;
    sync_dir(dir)
}

/// Removes what an interrupted compaction left beside the database: an unfinished copy, or the
/// database it replaced. Called only with the database open, so no compaction is running.
pub(super) fn remove_leftovers(dir: &Path) -> Result<(), StoreError> {
    remove_dir(&dir.join(COPY))?;
    remove_dir(&dir.join(REPLACED))
}

/// Copies every row of every tree of `from` into `to`, in key order; returns the rows copied.
fn copy_rows(from: &sled::Db, to: &sled::Db) -> Result<u64, StoreError> {
    let mut rows = 0u64;
    for name in from.tree_names() {
        let source = from.open_tree(&name)?;
        let target = to.open_tree(&name)?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for row in source.iter() {
            let (key, value) = row?;
            batch.insert(key, value);
            in_batch += 1;
            if in_batch == ROWS_PER_BATCH {
                target.apply_batch(std::mem::take(&mut batch))?;
                rows += in_batch as u64;
                in_batch = 0;
            }
        }
        target.apply_batch(batch)?;
        rows += in_batch as u64;
    }
    Ok(rows)
}

fn remove_dir(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The bytes of the files under `path`.
pub fn dir_bytes(path: &Path) -> Result<u64, StoreError> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(dir: &Path, rows: u32) -> sled::Db {
        let db = super::super::sled_store::open_db(dir, false, 1 << 20).unwrap();
        let value = vec![7u8; 512];
        for i in 0..rows {
            db.insert(format!("r{i:08}"), value.clone()).unwrap();
        }
        db.insert("meta/x", b"meta".to_vec()).unwrap();
        db.flush().unwrap();
        db
    }

    fn rows_of(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        let db = super::super::sled_store::open_db(dir, false, 1 << 20).unwrap();
        db.iter()
            .map(|row| {
                let (k, v) = row.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }

    /// The rows as a node's store sees them after a restart (which removes leftovers).
    fn rows_of_reopened(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        restore_database(dir).unwrap();
        let rows = rows_of(dir);
        let db = super::super::sled_store::open_db(dir, false, 1 << 20).unwrap();
        remove_leftovers(dir).unwrap();
        drop(db);
        rows
    }

    #[test]
    fn a_compaction_keeps_every_row_and_gives_back_the_space_of_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = filled(dir.path(), 20_000);
            for i in (0..20_000).filter(|i| i % 10 != 0) {
                db.remove(format!("r{i:08}")).unwrap();
            }
            db.flush().unwrap();
        }
        let before = rows_of(dir.path());
        assert_eq!(before.len(), 2_001);
        let done = compact(dir.path(), 1 << 20).unwrap();
        assert_eq!(done.rows, 2_001);
        assert_eq!(rows_of(dir.path()), before);
        assert!(
            done.bytes_after * 3 < done.bytes_before,
            "{} bytes before, {} after",
            done.bytes_before,
            done.bytes_after
        );
        assert!(!dir.path().join(COPY).exists() && !dir.path().join(REPLACED).exists());
    }

    #[test]
    fn a_database_in_use_is_not_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let _held = filled(dir.path(), 10);
        match compact(dir.path(), 1 << 20) {
            Err(StoreError::InUse { .. }) => {}
            other => panic!("compacted a database in use: {other:?}"),
        }
    }

    #[test]
    fn a_crash_before_the_copy_replaced_the_database_keeps_the_original() {
        let dir = tempfile::tempdir().unwrap();
        drop(filled(dir.path(), 100));
        let original = rows_of(dir.path());
        // An unfinished copy beside the database.
        std::fs::create_dir_all(dir.path().join(COPY)).unwrap();
        std::fs::write(dir.path().join(COPY).join("conf"), b"partial").unwrap();
        restore_database(dir.path()).unwrap();
        assert_eq!(rows_of_reopened(dir.path()), original);
        assert!(!dir.path().join(COPY).exists());
    }

    #[test]
    fn a_crash_between_the_renames_finishes_the_replacement() {
        let dir = tempfile::tempdir().unwrap();
        drop(filled(dir.path(), 100));
        let original = rows_of(dir.path());
        // The finished copy is the database itself here; the old one was renamed away.
        std::fs::rename(dir.path().join(DATABASE), dir.path().join(COPY)).unwrap();
        std::fs::create_dir_all(dir.path().join(REPLACED)).unwrap();
        restore_database(dir.path()).unwrap();
        assert_eq!(rows_of_reopened(dir.path()), original);
        assert!(!dir.path().join(COPY).exists() && !dir.path().join(REPLACED).exists());
    }

    #[test]
    fn a_crash_before_the_old_database_was_removed_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        drop(filled(dir.path(), 100));
        let original = rows_of(dir.path());
        std::fs::create_dir_all(dir.path().join(REPLACED)).unwrap();
        restore_database(dir.path()).unwrap();
        assert_eq!(rows_of_reopened(dir.path()), original);
        assert!(!dir.path().join(REPLACED).exists());
    }
}
