//! Sets kept one element per row (layout 7): a node on a sled store merges peers' set deltas and
//! whole states by reading and writing only the elements they touch. Whatever arrives, the stored
//! set, read back whole, must equal the same merges done on a set in memory; its Merkle item hash,
//! kept from the set's header, must equal the hash of that whole set; a restart and a rollback
//! must keep both true.

use hearsay::clock::{Dot, NodeId, ReplicaId};
use hearsay::crdt::{CausalContext, KeyState, OrSet};
use hearsay::node::{Node, Write};
use hearsay::store::{merkle, Durability, SledStore, Store, StoreKey};
use proptest::prelude::*;
use std::collections::BTreeSet;

const NOW: u64 = 1_790_000_000_000;

fn replica(i: usize) -> ReplicaId {
    ReplicaId::new(NodeId::new(format!("p{i}")).unwrap(), 7)
}

fn open(dir: &std::path::Path) -> Node<SledStore> {
    let store = SledStore::open(dir, Durability::Fsync).unwrap();
    Node::open(store, NodeId::new("n1").unwrap()).unwrap()
}

fn stored(node: &Node<SledStore>, key: &StoreKey) -> Option<OrSet> {
    match node.store().get(key).unwrap() {
        Some(KeyState::Set(set)) => Some(set),
        None => None,
        Some(other) => panic!("a set key holds {other:?}"),
    }
}

/// The node holds exactly `mirror` under `key`, and its digest is the hash of that whole set.
fn assert_holds(node: &Node<SledStore>, key: &StoreKey, mirror: &Option<OrSet>) {
    assert_eq!(&stored(node, key), mirror);
    let expected = mirror.as_ref().map_or([0; 32], |set| {
        merkle::item_hash(key, &KeyState::Set(set.clone()))
    });
    assert_eq!(node.digest().hash, expected, "digest of {mirror:?}");
}

#[derive(Clone, Debug)]
enum Step {
    /// Peer `r` adds and removes elements; its delta reaches the node when `ship`.
    Edit {
        r: usize,
        remove: Vec<usize>,
        add: Vec<usize>,
        ship: bool,
    },
    /// Peer `r` sends its whole state.
    Whole { r: usize },
    /// Peer `r` merges peer `from`'s whole state.
    Gossip { r: usize, from: usize },
    /// A lying peer gives one dot to two elements, in its context or not.
    Lie {
        first: usize,
        second: usize,
        counter: u64,
        in_context: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let names = || proptest::collection::vec(0usize..6, 0..4);
    prop_oneof![
        4 => (0usize..3, names(), names(), proptest::bool::weighted(0.8))
            .prop_map(|(r, remove, add, ship)| Step::Edit { r, remove, add, ship }),
        1 => (0usize..3).prop_map(|r| Step::Whole { r }),
        1 => (0usize..3, 0usize..3).prop_map(|(r, from)| Step::Gossip { r, from }),
        1 => (0usize..6, 0usize..6, 1u64..4, proptest::bool::ANY).prop_map(
            |(first, second, counter, in_context)| Step::Lie { first, second, counter, in_context }
        ),
    ]
}

fn element(i: usize) -> String {
    // Names of every length class the rows must keep apart: empty-free, short, one a prefix of
    // another, long, and not ASCII.
    ["a", "ab", "b", "élodie", "x/y", &"long-".repeat(10)][i].to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn stored_sets_merge_as_sets_in_memory(steps in proptest::collection::vec(step(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::set("s");
        let mut node = open(dir.path());
        let mut peers = vec![OrSet::new(); 3];
        let mut mirror: Option<OrSet> = None;
        let merge = |node: &mut Node<SledStore>, mirror: &mut Option<OrSet>, state: OrSet| {
            if state.is_noop_delta() {
                return;
            }
            let _ = node.merge_delta(NOW, key.clone(), KeyState::Set(state.clone())).unwrap();
            let _ = mirror.get_or_insert_with(OrSet::new).merge(&state);
        };
        for step in steps {
            match step {
                Step::Edit { r, remove, add, ship } => {
                    let (remove, add): (Vec<String>, Vec<String>) = (
                        remove.into_iter().map(element).collect(),
                        add.into_iter().map(element).collect(),
                    );
                    let delta = peers[r].edit(
                        &replica(r),
                        remove.iter().map(String::as_str),
                        add.iter().map(String::as_str),
                    );
                    if ship {
                        merge(&mut node, &mut mirror, delta);
                    }
                }
                Step::Whole { r } => merge(&mut node, &mut mirror, peers[r].clone()),
                Step::Lie { first, second, counter, in_context } => {
                    let dot = Dot::new(replica(0), counter);
                    let context = match in_context {
                        true => CausalContext::from_dots([dot.clone()]),
                        false => CausalContext::new(),
                    };
                    let entries = [first, second]
                        .map(|e| (element(e), BTreeSet::from([dot.clone()])))
                        .into_iter()
                        .collect();
                    merge(&mut node, &mut mirror, OrSet::from_parts(context, entries));
                }
                Step::Gossip { r, from } => {
                    let whole = peers[from].clone();
                    let _ = peers[r].merge(&whole);
                }
            }
            assert_holds(&node, &key, &mirror);
        }
        drop(node);
        let node = open(dir.path());
        assert_holds(&node, &key, &mirror);
    }
}

fn add(key: &str, elements: &[&str]) -> Write {
    Write::SetEdit {
        key: key.into(),
        add: elements.iter().map(|e| e.to_string()).collect(),
        remove: vec![],
    }
}

#[test]
fn local_edits_read_and_write_only_their_elements_and_report_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = open(dir.path());
    let many: Vec<String> = (0..500).map(|i| format!("e{i:03}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let ack = node.handle_write(NOW, add("s", &many)).unwrap();
    assert_eq!(ack.size, Some(500));
    let ack = node
        .handle_write(
            NOW + 1,
            Write::SetEdit {
                key: "s".into(),
                add: vec!["e000".into(), "new".into()],
                remove: vec!["e001".into(), "e002".into(), "absent".into()],
            },
        )
        .unwrap();
    assert_eq!(ack.size, Some(499));
    // A set with a neighbour whose name extends it: their rows must not mix.
    node.handle_write(NOW + 2, add("s2", &["only"])).unwrap();
    let set = stored(&node, &StoreKey::set("s")).unwrap();
    assert_eq!(set.len(), 499);
    assert!(set.contains("new") && set.contains("e000") && !set.contains("e001"));
    assert_eq!(
        stored(&node, &StoreKey::set("s2"))
            .unwrap()
            .elements()
            .collect::<Vec<_>>(),
        ["only"]
    );
    let digest = node.digest();
    drop(node);
    let node = open(dir.path());
    assert_eq!(node.digest(), digest);
    assert_eq!(stored(&node, &StoreKey::set("s")).unwrap(), set);
}

#[test]
fn a_rolled_back_set_edit_leaves_no_row_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = open(dir.path());
    node.handle_write(NOW, add("s", &["kept", "also"])).unwrap();
    node.commit().unwrap().complete().unwrap();
    node.synced_through(node.commits());
    let before = (node.digest(), stored(&node, &StoreKey::set("s")));
    node.handle_write(
        NOW + 1,
        Write::SetEdit {
            key: "s".into(),
            add: vec!["undone".into()],
            remove: vec!["also".into()],
        },
    )
    .unwrap();
    node.handle_write(NOW + 2, add("t", &["undone"])).unwrap();
    let _sync_that_fails = node.commit().unwrap();
    node.rollback().unwrap();
    assert_eq!((node.digest(), stored(&node, &StoreKey::set("s"))), before);
    assert_eq!(stored(&node, &StoreKey::set("t")), None);
    // The next edit plans against the restored rows.
    let ack = node.handle_write(NOW + 3, add("s", &["later"])).unwrap();
    assert_eq!(ack.size, Some(3));
    drop(node);
    let node = open(dir.path());
    let elements: Vec<String> = stored(&node, &StoreKey::set("s"))
        .unwrap()
        .elements()
        .map(str::to_string)
        .collect();
    assert_eq!(elements, ["also", "kept", "later"]);
}

#[test]
fn clearing_a_set_removes_what_this_node_observed_and_no_concurrent_add() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut n1 = open(dirs.0.path());
    let mut n2 = Node::open(
        SledStore::open(dirs.1.path(), Durability::Fsync).unwrap(),
        NodeId::new("n2").unwrap(),
    )
    .unwrap();
    let key = StoreKey::set("s");
    n1.handle_write(NOW, add("s", &["a", "b"])).unwrap();
    let _ = n2
        .merge_delta(NOW, key.clone(), KeyState::Set(stored(&n1, &key).unwrap()))
        .unwrap();
    // n2 adds c and re-adds a, unseen by n1, which then clears the set.
    n2.handle_write(NOW + 1, add("s", &["c", "a"])).unwrap();
    let ack = n1
        .handle_write(NOW + 2, Write::SetClear { key: "s".into() })
        .unwrap();
    assert_eq!(ack.size, Some(0));
    assert_eq!(stored(&n1, &key).unwrap().len(), 0);
    let _ = n2
        .merge_delta(
            NOW + 3,
            key.clone(),
            KeyState::Set(stored(&n1, &key).unwrap()),
        )
        .unwrap();
    let _ = n1
        .merge_delta(
            NOW + 3,
            key.clone(),
            KeyState::Set(stored(&n2, &key).unwrap()),
        )
        .unwrap();
    for node in [&n1, &n2] {
        let elements: Vec<String> = stored(node, &key)
            .unwrap()
            .elements()
            .map(str::to_string)
            .collect();
        assert_eq!(elements, ["a", "c"], "add-wins over the clear");
    }
    assert_eq!(n1.digest(), n2.digest());
}
