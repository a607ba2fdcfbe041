//! A node that comes back with its data lost (a replaced disk, `--recover`, or a crash under
//! `none` durability) is a new lifetime of that node: a new storage epoch, so nothing it mints
//! can be mistaken for something its peers saw from the earlier one, and a clock that starts
//! above every timestamp the earlier one can have issued. Two cores driven by hand.

use hearsay::crdt::{KeyState, Value};
use hearsay::gossip::rumor::{Rumor, RumorMill};
use hearsay::node::{ClusterConfig, Node, Write};
use hearsay::store::{MemoryStore, Store, StoreKey};

/// Wall-clock milliseconds at which these tests run.
const NOW: u64 = 1_790_000_000_000;

fn open<S: Store>(store: S, id: &str, now: u64) -> Node<S> {
    let mut config = ClusterConfig::standalone();
    config.opened_at_ms = now;
    config.rng_seed = now ^ id.len() as u64;
    Node::open_in_cluster(store, hearsay::clock::NodeId::new(id).unwrap(), config).unwrap()
}

fn add(element: &str) -> Write {
    Write::SetEdit {
        key: "team".into(),
        add: vec![element.into()],
        remove: vec![],
    }
}

fn team(node: &Node<MemoryStore>) -> KeyState {
    node.store().get(&StoreKey::set("team")).unwrap().unwrap()
}

fn elements(node: &Node<MemoryStore>) -> Vec<String> {
    match team(node) {
        KeyState::Set(set) => set.elements().map(str::to_string).collect(),
        other => panic!("not a set: {other:?}"),
    }
}

#[test]
fn a_node_back_with_its_data_lost_mints_no_dot_its_peers_have_seen() {
    let mut n1 = open(MemoryStore::new(), "n1", NOW);
    let mut n2 = open(MemoryStore::new(), "n2", NOW);
    n1.handle_write(NOW, add("alice")).unwrap();
    n1.handle_write(NOW + 1, add("bob")).unwrap();
    let _ = n2
        .merge_delta(NOW + 2, StoreKey::set("team"), team(&n1))
        .unwrap();
    // n1's disk is replaced: it comes back empty under its old id and adds carol.
    let mut n1 = open(MemoryStore::new(), "n1", NOW + 10);
    n1.handle_write(NOW + 10, add("carol")).unwrap();
    let _ = n2
        .merge_delta(NOW + 11, StoreKey::set("team"), team(&n1))
        .unwrap();
    // Before storage epochs, carol's add reused dot (n1, 1): it removed alice on n2, which no
    // one had removed, and was taken for already seen, so n2 ended with ["bob"].
    assert_eq!(elements(&n2), ["alice", "bob", "carol"]);
}

#[test]
fn a_node_back_with_its_data_lost_reuses_no_rumor_sequence_number() {
    let mut n1 = open(MemoryStore::new(), "n1", NOW);
    n1.handle_write(NOW, add("alice")).unwrap();
    let before = n1.replica().clone();
    let n1 = open(MemoryStore::new(), "n1", NOW + 10);
    assert_ne!(n1.replica(), &before, "a new data directory is a new epoch");
    assert_eq!(n1.replica().node, before.node);
    // A peer that saw rumor 1 of the earlier lifetime takes rumor 1 of the new one as new.
    let mut peer = RumorMill::new(Default::default());
    let rumor = |origin: &hearsay::clock::ReplicaId| Rumor {
        origin: origin.clone(),
        seq: 1,
        key: StoreKey::set("team"),
        delta: KeyState::Set(Default::default()),
    };
    let from = hearsay::clock::NodeId::new("n1").unwrap();
    assert!(peer.receive(rumor(&before), &from, 3, true));
    assert!(peer.receive(rumor(n1.replica()), &from, 3, true));
}

#[test]
fn a_new_lifetime_stamps_above_anything_the_earlier_one_can_have_issued() {
    let mut n1 = open(MemoryStore::new(), "n1", NOW);
    // The earlier lifetime took in a peer's timestamp just within the skew bound ahead.
    let ahead = KeyState::Register(hearsay::crdt::LwwRegister::write(
        hearsay::clock::Timestamp::new(NOW + 450, 0),
        hearsay::clock::NodeId::new("n2").unwrap(),
        Some(Value {
            content_type: "text/plain".into(),
            data: b"peer".to_vec(),
        }),
    ));
    let _ = n1.merge_delta(NOW, StoreKey::kv("k"), ahead).unwrap();
    let put = |v: &str| Write::put_text("k", v);
    let earlier = n1.handle_write(NOW + 1, put("earlier")).unwrap();
    // Replaced 100 ms later: its first write must still be later than the earlier lifetime's.
    let mut n1 = open(MemoryStore::new(), "n1", NOW + 100);
    let later = n1.handle_write(NOW + 100, put("later")).unwrap();
    assert!(later.timestamp > earlier.timestamp);
}

#[test]
fn a_directory_that_acknowledged_before_syncing_starts_a_new_lifetime_after_a_crash() {
    use hearsay::store::{Durability, SledStore};
    let epoch_after = |durability: Durability, close: bool| {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), durability).unwrap();
        let mut node = open(store, "n1", NOW);
        node.handle_write(NOW, add("alice")).unwrap();
        let _ = node.commit().unwrap().complete();
        let before = node.replica().clone();
        if close {
            node.close().unwrap();
        }
        // Dropped without closing: as after kill -9 (the database handle is released).
        drop(node);
        let store = SledStore::open(dir.path(), durability).unwrap();
        let after = open(store, "n1", NOW + 10).replica().clone();
        (before, after)
    };
    // `none` may have lost acknowledged writes its peers hold: a new lifetime.
    let (before, after) = epoch_after(Durability::None, false);
    assert_ne!(before, after);
    // Closed cleanly, or under `fsync` (nothing acknowledged is ever lost): the same lifetime.
    let (before, after) = epoch_after(Durability::None, true);
    assert_eq!(before, after);
    let (before, after) = epoch_after(Durability::Fsync, false);
    assert_eq!(before, after);
}
