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

#[test]
fn a_crash_after_a_checkpoint_repairs_the_leaves_the_log_names() {
    let dir = tempfile::tempdir().unwrap();
    let (digest, index) = {
        let mut node = open(dir.path());
        for i in 0..300 {
            put(&mut node, &format!("k{i}"), "first");
        }
        node.checkpoint().unwrap();
        // After the checkpoint: overwrites, new keys, deletes, a set; committed, then a crash
        // (the node is dropped without closing: the database may hold every change while the
        // persisted leaves hold none of them).
        for i in 0..40 {
            put(&mut node, &format!("k{i}"), "second");
            put(&mut node, &format!("new{i}"), "new");
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
                add: vec!["a".into(), "b".into()],
                remove: vec![],
            },
        )
        .unwrap();
        node.commit().unwrap().complete().unwrap();
        (node.digest(), key_index(&node))
    };
    let repaired = open(dir.path());
    assert_eq!(repaired.digest(), digest, "the repaired index differs");
    assert_eq!(key_index(&repaired), index);
    drop(repaired);
    // A rebuild from every record agrees.
    {
        let db = common::open_sled(dir.path());
        db.remove(migrate::MERKLE_COMPLETE_KEY).unwrap();
        db.flush().unwrap();
    }
    let rebuilt = open(dir.path());
    assert_eq!(rebuilt.digest(), digest);
    assert_eq!(key_index(&rebuilt), index);
}
