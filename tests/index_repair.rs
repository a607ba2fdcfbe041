//! After a crash, the Merkle index persisted at the last checkpoint is repaired where the
//! write-ahead log names keys, not rebuilt from every record; the result must equal a rebuild.

mod common;

use hearsay::clock::NodeId;
use hearsay::node::{Node, Write};
use hearsay::store::{merkle, migrate, Durability, SledStore, Store, StoreKey};
use std::path::Path;

const NOW: u64 = 1_800_000_000_000;

fn open(dir: &Path) -> Node<SledStore> {
    Node::open(
        SledStore::open(dir, Durability::Fsync).unwrap(),
        NodeId::new("n1").unwrap(),
    )
    .unwrap()
}

fn put(node: &mut Node<SledStore>, key: &str, value: &str) {
    node.handle_write(NOW, Write::put_text(key, value)).unwrap();
}

/// A leaf and its keys with their item hash prefixes.
type LeafList = (u16, Vec<(StoreKey, [u8; 8])>);

/// Every leaf's keys, sorted.
fn key_index(node: &Node<SledStore>) -> Vec<LeafList> {
    (0..merkle::LEAVES as u32)
        .filter_map(|leaf| {
            let mut keys = node.store().leaf_keys(leaf as u16).unwrap();
            keys.sort();
            (!keys.is_empty()).then_some((leaf as u16, keys))
        })
        .collect()
}

/// Overwrites `k0..k{overwrites}`, adds `{round}-new0..`, deletes `k{100+i}` and adds to a set:
/// committed, as a client's writes are.
fn change(node: &mut Node<SledStore>, round: &str, overwrites: usize) {
    for i in 0..overwrites {
        put(node, &format!("k{i}"), round);
        put(node, &format!("{round}-new{i}"), "new");
        node.handle_write(
            NOW,
            Write::KvDelete {
                key: format!("k{}", 100 + i),
            },
        )
        .unwrap();
    }
    node.handle_write(
        NOW,
        Write::SetEdit {
            key: "team".into(),
            add: vec![format!("{round}-a"), format!("{round}-b")],
            remove: vec![],
        },
    )
    .unwrap();
    node.commit().unwrap().complete().unwrap();
}

/// Opens `dir` after a crash and checks that the repaired index has `digest` and `index`, with
/// every repaired leaf corrected from the log (none recomputed); then that a rebuild from every
/// record agrees.
fn reopen_and_check(dir: &Path, digest: merkle::Leaf, index: Vec<LeafList>) {
    let repaired = open(dir);
    assert_eq!(repaired.digest(), digest, "the repaired index differs");
    assert_eq!(key_index(&repaired), index);
    let repair = repaired.index_repair();
    assert!(repair.from_log > 0, "{repair:?}");
    assert_eq!(repair.recomputed, 0, "{repair:?}");
    drop(repaired);
    rebuild_agrees(dir, digest, index);
}

fn rebuild_agrees(dir: &Path, digest: merkle::Leaf, index: Vec<LeafList>) {
    {
        let db = common::open_sled(dir);
        db.remove(migrate::MERKLE_COMPLETE_KEY).unwrap();
        db.flush().unwrap();
    }
    let rebuilt = open(dir);
    assert_eq!(rebuilt.digest(), digest);
    assert_eq!(key_index(&rebuilt), index);
}

fn fill(node: &mut Node<SledStore>, keys: usize) {
    for i in 0..keys {
        put(node, &format!("k{i}"), "first");
    }
}

/// A node in `dir` takes `keys` keys and checkpoints, then makes the changes of `after` and
/// crashes (it is dropped without closing: the database may hold every change while the
/// persisted leaves hold none of them). Returns its digest and key index before the crash.
fn crashed(
    dir: &Path,
    keys: usize,
    after: impl FnOnce(&mut Node<SledStore>),
) -> (merkle::Leaf, Vec<LeafList>) {
    let mut node = open(dir);
    fill(&mut node, keys);
    node.checkpoint().unwrap();
    after(&mut node);
    (node.digest(), key_index(&node))
}

#[test]
fn a_crash_after_a_checkpoint_repairs_the_leaves_the_log_names() {
    let dir = tempfile::tempdir().unwrap();
    let (digest, index) = crashed(dir.path(), 300, |node| change(node, "second", 40));
    reopen_and_check(dir.path(), digest, index);
}

#[test]
fn a_checkpoint_of_many_leaves_written_in_parts_repairs_as_one() {
    let dir = tempfile::tempdir().unwrap();
    // More key lists and leaves than one batch takes (4,096 rows).
    let (digest, index) = crashed(dir.path(), 6000, |node| change(node, "second", 40));
    reopen_and_check(dir.path(), digest, index);
}

#[test]
fn entries_logged_before_the_persisted_leaves_are_already_in_them() {
    let dir = tempfile::tempdir().unwrap();
    let (digest, index) = crashed(dir.path(), 300, |node| {
        change(node, "second", 40);
        // The log as it stands: entries the next checkpoint's leaves will hold.
        std::fs::copy(dir.path().join("wal.log"), dir.path().join("kept.log")).unwrap();
        node.checkpoint().unwrap();
        // Keys changed on both sides of the checkpoint, and keys changed after it only.
        change(node, "third", 20);
    });
    // A crash before the older log was cleared: it is replayed too (it holds an older
    // generation), and its entries' prior hashes are older than the persisted leaves.
    std::fs::rename(dir.path().join("kept.log"), dir.path().join("wal-2.log")).unwrap();
    reopen_and_check(dir.path(), digest, index);
}

#[test]
fn a_database_that_lost_logged_writes_is_repaired_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    {
        let mut node = open(dir.path());
        fill(&mut node, 300);
        node.close().unwrap();
    }
    // The database as the checkpoint left it.
    copy_dir(&dir.path().join("db"), saved.path());
    let (digest, index) = {
        let mut node = open(dir.path());
        change(&mut node, "second", 40);
        (node.digest(), key_index(&node))
    };
    // A crash that kept the log but none of the database's later writes.
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    copy_dir(saved.path(), &dir.path().join("db"));
    reopen_and_check(dir.path(), digest, index);
}

#[test]
fn a_layout_10_directory_recomputes_the_leaves_its_log_names() {
    let dir = tempfile::tempdir().unwrap();
    let (digest, index) = crashed(dir.path(), 300, |node| change(node, "second", 40));
    // Layout 10 recorded no log position for its leaves.
    {
        let db = common::open_sled(dir.path());
        db.remove("meta/leaves-at").unwrap().expect("recorded");
        db.insert(migrate::LAYOUT_KEY, &10u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let repaired = open(dir.path());
    assert_eq!(repaired.digest(), digest);
    assert_eq!(key_index(&repaired), index);
    let repair = repaired.index_repair();
    assert_eq!(repair.from_log, 0, "{repair:?}");
    assert!(repair.recomputed > 0, "{repair:?}");
    drop(repaired);
    rebuild_agrees(dir.path(), digest, index);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
