//! `hearsay restore FILE --data DIR`: makes a data directory from a backup (the format is
//! `store::backup_file`; `hearsay backup` takes one from a live node). The directory starts as a
//! new lifetime of the node it is restored as: a storage epoch of its own, so none of its dots
//! or rumor numbers can be one the original node issued, and a clock above every timestamp in
//! the backup. Started with seeds, it catches up with the cluster by anti-entropy.
//!
//! Every record is merged through the core as a peer's state would be (so the indexes, the
//! Merkle tree and the tombstone bookkeeping are the core's own), into a temporary directory
//! that takes `DIR`'s name only once the backup was read whole and the restored digest equals
//! the backup's root. A tool: it touches no socket.

use crate::clock::NodeId;
use crate::node::{Applied, ClusterConfig, Node, NodeError};
use crate::runtime::wall_ms;
use crate::store::backup_file::{BackupError, BackupReader};
use crate::store::merkle::Leaf;
use crate::store::{Durability, SledStore, StoreError, DEFAULT_CACHE_BYTES};
use std::path::{Path, PathBuf};

/// Records merged between two commits of the restored directory.
const RECORDS_PER_COMMIT: u64 = 1_000;

/// What a restore made.
#[derive(Debug)]
pub struct Restored {
    /// The node the backup was taken from.
    pub from: NodeId,
    /// The node id the directory belongs to.
    pub node: NodeId,
    pub records: u64,
    /// The restored directory's Merkle root (equal to the backup's).
    pub root: Leaf,
    /// When the backup started, on its node's clock (milliseconds since the epoch).
    pub started_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read backup {file}: {source}")]
    Backup { file: PathBuf, source: BackupError },
    #[error("{0} exists and is not empty: restore into a new directory")]
    NotEmpty(PathBuf),
    #[error("record {key} of the backup was refused: {why}")]
    Refused { key: String, why: String },
    #[error("the restored directory's digest {restored} differs from the backup's root {backup}")]
    Mismatch { restored: String, backup: String },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot move the restored directory into place: {0}")]
    Io(#[from] std::io::Error),
}

/// Restores the backup in `file` into the new data directory `dir`, as node `as_node` (default:
/// the node the backup was taken from: a replacement for it, which must then be gone).
pub fn restore(file: &Path, dir: &Path, as_node: Option<NodeId>) -> Result<Restored, RestoreError> {
    let backup_error = |source| RestoreError::Backup {
        file: file.to_path_buf(),
        source,
    };
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e.into()),
    };
    if !empty {
        return Err(RestoreError::NotEmpty(dir.to_path_buf()));
    }
    let input = std::fs::File::open(file).map_err(|e| backup_error(e.into()))?;
    let mut reader = BackupReader::open(std::io::BufReader::new(input)).map_err(backup_error)?;
    let header = reader.header().clone();
    let node_id = as_node.unwrap_or_else(|| header.node.clone());
    let mut staging = dir.as_os_str().to_owned();
    staging.push(format!(".restoring-{}", std::process::id()));
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_dir_all(&staging);
    let (records, root) = match fill(file, &staging, &node_id, &mut reader) {
        Ok(filled) => filled,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if dir.exists() {
        std::fs::remove_dir(dir)?;
    }
    std::fs::rename(&staging, dir)?;
    Ok(Restored {
        from: header.node,
        node: node_id,
        records,
        root,
        started_ms: header.started_ms,
    })
}

/// Merges every record of the backup in `file` (read by `reader`) into a new directory at
/// `staging` and closes it cleanly.
fn fill(
    file: &Path,
    staging: &Path,
    node_id: &NodeId,
    reader: &mut BackupReader<impl std::io::Read>,
) -> Result<(u64, Leaf), RestoreError> {
    let store = SledStore::open_with_cache(staging, Durability::None, DEFAULT_CACHE_BYTES)?;
    let mut config = ClusterConfig::standalone();
    config.opened_at_ms = wall_ms();
    // The new storage epoch is drawn from this: fresh entropy, never the standalone default.
    config.rng_seed = rand::RngCore::next_u64(&mut rand::rngs::OsRng);
    // The backup's timestamps are the cluster's, whatever this machine's clock says: none is
    // refused as too far ahead (the restored clock moves past them instead).
    config.max_clock_skew_ms = u64::MAX / 4;
    let mut node = Node::open_in_cluster(store, node_id.clone(), config)?;
    let mut records = 0u64;
    while let Some((key, state)) = reader
        .next_record()
        .map_err(|source| RestoreError::Backup {
            file: file.to_path_buf(),
            source,
        })?
    {
        let shown = format!("{:?} {:?}", key.space, key.name);
        if let Applied::Refused(why) = node.merge_delta(wall_ms(), key, state)? {
            return Err(RestoreError::Refused {
                key: shown,
                why: format!("{why:?}"),
            });
        }
        records += 1;
        if records.is_multiple_of(RECORDS_PER_COMMIT) {
            node.commit()?.complete()?;
        }
    }
    let backup_root = reader.end().map(|end| end.root).unwrap_or_default();
    let root = node.digest();
    if root != backup_root {
        return Err(RestoreError::Mismatch {
            restored: root.hex(),
            backup: backup_root.hex(),
        });
    }
    node.close()?;
    Ok((records, root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Write;
    use crate::store::backup_file::{BackupHeader, BackupWriter};
    use crate::store::merkle::LEAVES;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn a_restored_directory_is_a_new_lifetime_of_its_node_with_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("n1"), Durability::None).unwrap();
        let mut source = Node::open(store, id("n1")).unwrap();
        let now = wall_ms();
        let mut newest = None;
        for i in 0..50 {
            let ack = source
                .handle_write(now, Write::put_text(&format!("k{i}"), "v"))
                .unwrap();
            newest = Some(ack.timestamp);
        }
        source.commit().unwrap().complete().unwrap();

        let header = BackupHeader {
            node: id("n1"),
            started_ms: now,
            codec: crate::wire::VERSION,
        };
        let (mut writer, mut bytes) = BackupWriter::start(header);
        for (key, state) in source.backup_chunk(0..LEAVES as u32).unwrap() {
            bytes.extend(writer.record(key, state));
        }
        bytes.extend(writer.finish().0);
        let file = dir.path().join("n1.backup");
        std::fs::write(&file, bytes).unwrap();

        let target = dir.path().join("restored");
        let restored = restore(&file, &target, None).unwrap();
        assert_eq!((restored.node.as_str(), restored.records), ("n1", 50));
        assert_eq!(restored.root, source.digest());

        let store = SledStore::open(&target, Durability::None).unwrap();
        let mut copy = Node::open(store, id("n1")).unwrap();
        assert_eq!(copy.digest(), source.digest());
        assert_eq!(copy.replica().node, source.replica().node);
        assert_ne!(
            copy.replica().epoch,
            source.replica().epoch,
            "the restored directory must not issue the original's dots"
        );
        let ack = copy
            .handle_write(now, Write::put_text("k0", "newer"))
            .unwrap();
        assert!(
            Some(ack.timestamp) > newest,
            "its clock starts past the backup's"
        );
    }
}
