//! On-disk formats: a data directory written in the previous layout opens and is upgraded in
//! place, and the current record encoding is pinned by a golden vector so an accidental format
//! change fails here instead of in a user's data directory.

mod common;

use hearsay::clock::{NodeId, ReplicaId, Timestamp};
use hearsay::crdt::{KeyState, LwwRegister, OrSet, Value};
use hearsay::node::Node;
use hearsay::store::{migrate, record, Durability, MemoryStore, SledStore, Store, StoreKey};

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

/// Node `n1` on a sled store in `dir`, upgraded to the current layout.
fn open_node(dir: &std::path::Path) -> Node<SledStore> {
    Node::open(SledStore::open(dir, Durability::Fsync).unwrap(), id("n1")).unwrap()
}

/// The replica of node `s` in epoch 0: what every dot was before storage epochs.
fn actor(s: &str) -> ReplicaId {
    ReplicaId::new(id(s), 0)
}

/// Wall-clock milliseconds at which the fixture's states arrive (after they were written).
const NOW: u64 = 1_700_000_001_000;

fn fixture() -> Vec<(StoreKey, KeyState)> {
    let value = |s: &str| Value {
        content_type: "text/plain".into(),
        data: s.as_bytes().to_vec(),
    };
    let mut set = OrSet::new();
    set.add(&actor("n1"), "x");
    set.add(&actor("n2"), "y");
    set.add(&actor("n1"), "z");
    set.remove("z");
    vec![
        (
            StoreKey::kv("greeting"),
            KeyState::Register(LwwRegister::write(
                Timestamp::new(1_700_000_000_000, 3),
                id("n2"),
                Some(value("hello")),
            )),
        ),
        (
            StoreKey::kv("deleted"),
            KeyState::Register(LwwRegister::write(
                Timestamp::new(1_700_000_000_500, 0),
                id("n1"),
                None,
            )),
        ),
        (StoreKey::set("team"), KeyState::Set(set)),
    ]
}

#[test]
fn a_layout_1_directory_is_upgraded_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = common::open_sled(dir.path());
        for (key, state) in fixture() {
            migrate::write_layout1_record(&db, &key, &state);
        }
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path(), Durability::Fsync).unwrap();
    let node = Node::open(store, id("n1")).unwrap();
    for (key, state) in fixture() {
        assert_eq!(node.store().get(&key).unwrap(), Some(state), "{key:?}");
    }
    let page = node
        .store()
        .reader()
        .list_live(hearsay::store::Keyspace::Kv, "", None, 10, 0)
        .unwrap();
    assert_eq!(page.keys, vec!["greeting"]);

    // The rebuilt Merkle index equals the one a node that wrote the same states keeps.
    let mut reference = Node::open(MemoryStore::new(), id("n1")).unwrap();
    for (key, state) in fixture() {
        let _ = reference.merge_delta(NOW, key, state).unwrap();
    }
    assert_eq!(node.digest(), reference.digest());
    let digest = node.digest();
    drop(node);

    // The layout is now current, and a second start reuses the persisted index as is.
    let db = common::open_sled(dir.path());
    let layout = db.get(migrate::LAYOUT_KEY).unwrap().unwrap();
    assert_eq!(layout.as_ref(), &migrate::CURRENT_LAYOUT.to_be_bytes());
    assert!(db.get(migrate::MERKLE_COMPLETE_KEY).unwrap().is_some());
    drop(db);
    let node = open_node(dir.path());
    assert_eq!(node.digest(), digest);
}

/// Layout 6 kept a set as one record (format 2): the upgrade splits it into its header and element
/// rows, drops a register stored under a set key, and the index is rebuilt with set hashes taken
/// from headers.
#[test]
fn a_layout_6_set_record_is_split_into_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (key, set) = fixture().pop().unwrap();
    let stray = StoreKey::set("stray");
    {
        let db = common::open_sled(dir.path());
        let row = |key: &StoreKey| [b"r".as_slice(), &key.encode()].concat();
        db.insert(row(&key), record::encode_record(&set)).unwrap();
        let (_, register) = fixture().swap_remove(0);
        db.insert(row(&stray), record::encode_record(&register))
            .unwrap();
        db.insert(migrate::LAYOUT_KEY, &6u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let node = open_node(dir.path());
    assert_eq!(node.store().get(&key).unwrap(), Some(set.clone()));
    assert_eq!(node.store().get(&stray).unwrap(), None);
    let mut reference = Node::open(MemoryStore::new(), id("n1")).unwrap();
    let _ = reference.merge_delta(NOW, key.clone(), set).unwrap();
    assert_eq!(node.digest(), reference.digest());
    // The set's elements are rows: an edit of one reads it alone and sees the others kept.
    let mut node = node;
    let ack = node
        .handle_write(
            NOW,
            hearsay::node::Write::SetEdit {
                key: "team".into(),
                add: vec!["w".into()],
                remove: vec!["x".into()],
            },
        )
        .unwrap();
    assert_eq!(ack.size, Some(2));
}

#[test]
fn a_missing_merkle_index_is_rebuilt_from_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let digest = {
        let mut node = open_node(dir.path());
        for (key, state) in fixture() {
            let _ = node.merge_delta(NOW, key, state).unwrap();
        }
        node.store_mut().checkpoint().unwrap();
        node.digest()
    };
    {
        let db = common::open_sled(dir.path());
        db.remove(migrate::MERKLE_COMPLETE_KEY).unwrap();
        for leaf in db.scan_prefix(b"l").keys() {
            db.remove(leaf.unwrap()).unwrap();
        }
        db.flush().unwrap();
    }
    let node = open_node(dir.path());
    assert_eq!(node.digest(), digest);
    assert_eq!(node.digest().count, 3);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn record_encoding_matches_its_golden_vector() {
    // Format 2 of a record (migrations/0005). If this changes, add a layout and a migration.
    let (_, state) = &fixture()[0];
    assert_eq!(hex_of(&record::encode_record(state)), GOLDEN_GREETING);
    assert_eq!(
        &record::decode_record(&hex_bytes(GOLDEN_GREETING)).unwrap(),
        state
    );
    // Format 1 (migrations/0002, before epochs) still reads.
    assert_eq!(
        &record::decode_record(&hex_bytes(GOLDEN_GREETING_BEFORE_EPOCHS)).unwrap(),
        state
    );
}

/// A set whose context has both a version vector and a cloud (a dot of n3 past a gap), one element
/// kept by two concurrent adds and one removed element.
fn golden_set() -> KeyState {
    let mut set = OrSet::new();
    set.add(&actor("n1"), "x");
    set.add(&actor("n1"), "gone");
    let mut other = OrSet::new();
    let _ = set.merge(&other.add(&actor("n2"), "x"));
    let mut far = OrSet::new();
    far.add(&actor("n3"), "w");
    let _ = set.merge(&far.add(&actor("n3"), "v"));
    set.remove("gone");
    KeyState::Set(set)
}

#[test]
fn set_record_encoding_matches_its_golden_vector() {
    // The OR-set's in-memory form may change; its record, Merkle item hash and wire bytes may not.
    let state = golden_set();
    assert_eq!(hex_of(&record::encode_record(&state)), GOLDEN_SET);
    let decoded = record::decode_record(&hex_bytes(GOLDEN_SET)).unwrap();
    assert_eq!(decoded, state);
    // Before epochs, its dots named bare node ids; read, they are epoch 0's.
    let before = record::decode_record(&hex_bytes(GOLDEN_SET_BEFORE_EPOCHS)).unwrap();
    assert_eq!(before, state);
    let KeyState::Set(set) = decoded else {
        panic!("not a set")
    };
    assert_eq!(set.elements().collect::<Vec<_>>(), vec!["v", "x"]);
}

#[test]
fn memory_store_survives_a_simulated_restart() {
    let store = MemoryStore::new();
    let mut node = Node::open(store.reopen(), id("n1")).unwrap();
    for (key, state) in fixture() {
        let _ = node.merge_delta(NOW, key, state).unwrap();
    }
    let digest = node.digest();
    drop(node);
    let node = Node::open(store.reopen(), id("n1")).unwrap();
    assert_eq!(node.digest(), digest);
}

const GOLDEN_GREETING: &str = "0200838080c0d6fcf3c501026e32010a746578742f706c61696e0568656c6c6f";
const GOLDEN_SET: &str =
    "020102026e310002026e32000101026e33000202017601026e330002017802026e310001026e320001";
const GOLDEN_GREETING_BEFORE_EPOCHS: &str =
    "0100838080c0d6fcf3c501026e32010a746578742f706c61696e0568656c6c6f";
const GOLDEN_SET_BEFORE_EPOCHS: &str =
    "010102026e3102026e320101026e330202017601026e3302017802026e3101026e3201";

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_write_ahead_log_alone_restores_committed_writes() {
    use hearsay::node::Write;
    // Node A commits writes (log synced, database not checkpointed). A fresh directory that
    // holds only A's log must come up with the same state: that is what a restart after a
    // power loss relies on when sled's own files lag behind.
    let a_dir = tempfile::tempdir().unwrap();
    let mut a = Node::open(
        SledStore::open(a_dir.path(), Durability::Fsync).unwrap(),
        id("n1"),
    )
    .unwrap();
    for i in 0..50 {
        let value = Value {
            content_type: "text/plain".into(),
            data: format!("v{i}").into_bytes(),
        };
        a.handle_write(
            1_000 + i,
            Write::KvPut {
                key: format!("k{}", i % 20),
                value,
                ttl_ms: None,
            },
        )
        .unwrap();
    }
    a.handle_write(
        2_000,
        Write::SetEdit {
            key: "s".into(),
            add: vec!["x".into(), "y".into()],
            remove: vec![],
        },
    )
    .unwrap();
    a.handle_write(2_001, Write::KvDelete { key: "k3".into() })
        .unwrap();
    a.commit().unwrap().complete().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    std::fs::copy(a_dir.path().join("wal.log"), b_dir.path().join("wal.log")).unwrap();
    let b = Node::open(
        SledStore::open(b_dir.path(), Durability::Fsync).unwrap(),
        id("n1"),
    )
    .unwrap();
    assert_eq!(b.digest(), a.digest());
    assert_eq!(b.digest().count, 21);
    assert_eq!(
        b.store().get(&StoreKey::kv("k19")).unwrap(),
        a.store().get(&StoreKey::kv("k19")).unwrap()
    );
    // The clock resumes above everything the log saw.
    assert_eq!(b.store().meta().hlc, a.store().meta().hlc);
}

#[test]
fn the_tombstone_collection_horizon_removals_roster_and_forgotten_values_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let horizon = Timestamp::new(1_700_000_000_500, 0);
    {
        let mut store = SledStore::open(&path, Durability::Fsync).unwrap();
        assert_eq!(store.collected_through(), Timestamp::ZERO);
        assert!(!store.clustered());
        assert!(store.roster().is_empty());
        assert!(store.member_addrs().is_empty());
        assert!(store.forgotten().is_empty());
        store
            .apply(hearsay::store::WriteBatch {
                records: fixture(),
                ..Default::default()
            })
            .unwrap();
        store
            .apply(hearsay::store::WriteBatch {
                removals: vec![(StoreKey::kv("deleted"), None)],
                collected_through: Some(horizon),
                clustered: true,
                roster: Some(vec![NodeId::new("n2").unwrap(), NodeId::new("n3").unwrap()]),
                member_addrs: Some(vec![(
                    NodeId::new("n2").unwrap(),
                    "127.0.0.1:7102".parse().unwrap(),
                )]),
                forgotten: Some(vec![(StoreKey::kv("forgotten"), horizon)]),
                ..Default::default()
            })
            .unwrap();
        store.checkpoint().unwrap();
    }
    let store = SledStore::open(&path, Durability::Fsync).unwrap();
    assert_eq!(store.collected_through(), horizon);
    assert!(store.clustered());
    assert_eq!(
        store.roster(),
        [NodeId::new("n2").unwrap(), NodeId::new("n3").unwrap()]
    );
    assert_eq!(
        store.member_addrs(),
        [(
            NodeId::new("n2").unwrap(),
            "127.0.0.1:7102".parse().unwrap()
        )]
    );
    assert_eq!(store.forgotten(), [(StoreKey::kv("forgotten"), horizon)]);
    assert!(store.get(&StoreKey::kv("deleted")).unwrap().is_none());
    assert!(store.get(&StoreKey::kv("greeting")).unwrap().is_some());
    let leaf = hearsay::store::merkle::bucket_of(&StoreKey::kv("deleted"));
    assert!(store
        .leaf_keys(leaf)
        .unwrap()
        .iter()
        .all(|(k, _)| *k != StoreKey::kv("deleted")));
}

/// Layout 8 had no tombstone index: the upgrade builds it from the records, so a start finds the
/// tombstones (and values with an expiry) without reading a record, and collects them.
#[test]
fn a_layout_8_directory_gains_its_tombstone_index() {
    let dir = tempfile::tempdir().unwrap();
    let expiring = StoreKey::kv("expiring");
    let expires = Timestamp::new(1_700_000_000_900, 0);
    {
        let mut node = open_node(dir.path());
        let mut states = fixture();
        let mut with_expiry = LwwRegister::write(
            Timestamp::new(1_700_000_000_100, 0),
            id("n2"),
            Some(Value {
                content_type: "text/plain".into(),
                data: b"soon".to_vec(),
            }),
        );
        with_expiry.expires = Some(expires);
        states.push((expiring.clone(), KeyState::Register(with_expiry)));
        for (key, state) in states {
            let _ = node.merge_delta(NOW, key, state).unwrap();
        }
        assert_eq!(node.tombstones_held(), 2);
        node.close().unwrap();
    }
    {
        // What a layout-8 build left: the same records, no index.
        let db = common::open_sled(dir.path());
        assert_eq!(
            db.scan_prefix(b"t").count(),
            2,
            "the current build indexes tombstones"
        );
        for row in db.scan_prefix(b"t").keys() {
            db.remove(row.unwrap()).unwrap();
        }
        db.insert(migrate::LAYOUT_KEY, &8u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path(), Durability::Fsync).unwrap();
    let mut found = store.tombstones().unwrap();
    found.sort();
    assert_eq!(
        found,
        [
            (
                StoreKey::kv("deleted"),
                Timestamp::new(1_700_000_000_500, 0)
            ),
            (expiring, expires),
        ]
    );
    let node = Node::open(store, id("n1")).unwrap();
    assert_eq!(node.tombstones_held(), 2);
}

/// Layout 9 kept one key-index row per key (`h` + leaf + key → hash prefix); layout 10 keeps one
/// row per leaf. The upgrade moves every entry and anti-entropy sees the same keys.
#[test]
fn a_layout_9_key_index_becomes_one_list_per_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let keys_of = |node: &Node<SledStore>| {
        let mut all = Vec::new();
        for leaf in 0..hearsay::store::merkle::LEAVES as u32 {
            all.extend(node.store().leaf_keys(leaf as u16).unwrap());
        }
        all.sort();
        all
    };
    let (digest, keys) = {
        let mut node = open_node(dir.path());
        for (key, state) in fixture() {
            let _ = node.merge_delta(NOW, key, state).unwrap();
        }
        node.close().unwrap();
        (node.digest(), keys_of(&node))
    };
    assert_eq!(keys.len(), 3);
    {
        // What a layout-9 build left: a row per key, no lists.
        let db = common::open_sled(dir.path());
        let lists: Vec<_> = db.scan_prefix(b"k").collect::<Result<_, _>>().unwrap();
        assert!(!lists.is_empty());
        for (row, _) in lists {
            db.remove(row).unwrap();
        }
        for (key, hash) in &keys {
            let leaf = hearsay::store::merkle::bucket_of(key).to_be_bytes();
            let row = [b"h".as_slice(), &leaf, &key.encode()].concat();
            db.insert(row, hash.as_slice()).unwrap();
        }
        db.insert(migrate::LAYOUT_KEY, &9u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let node = open_node(dir.path());
    assert_eq!(node.digest(), digest);
    assert_eq!(keys_of(&node), keys);
    drop(node);
    let db = common::open_sled(dir.path());
    assert_eq!(db.scan_prefix(b"h").count(), 0, "the per-key rows are gone");
}

/// Layout 11 recorded no member addresses: the upgrade to 12 rewrites nothing, and the store
/// reads none until the next membership change records them.
#[test]
fn a_layout_11_directory_starts_with_no_member_addresses() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = SledStore::open(dir.path(), Durability::Fsync).unwrap();
        store
            .apply(hearsay::store::WriteBatch {
                records: fixture(),
                roster: Some(vec![NodeId::new("n2").unwrap()]),
                ..Default::default()
            })
            .unwrap();
        store.checkpoint().unwrap();
    }
    {
        let db = common::open_sled(dir.path());
        db.insert(migrate::LAYOUT_KEY, &11u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(store.roster(), [NodeId::new("n2").unwrap()]);
    assert!(store.member_addrs().is_empty());
    assert!(store.get(&StoreKey::kv("greeting")).unwrap().is_some());
    drop(store);
    let db = common::open_sled(dir.path());
    let layout = db.get(migrate::LAYOUT_KEY).unwrap().unwrap();
    assert_eq!(layout.as_ref(), &migrate::CURRENT_LAYOUT.to_be_bytes());
}
