//! Two hearsay cores driven by hand, with no network, threads or clock: concurrent writes on
//! both, then each merges the other's state, and their digests agree. This is the sans-IO core
//! that the HTTP server and the simulator both drive.
//!
//!     cargo run --example two_cores

use hearsay::clock::NodeId;
use hearsay::crdt::{KeyState, Value};
use hearsay::node::{Node, Write};
use hearsay::store::{MemoryStore, Store, StoreKey};

fn main() {
    let mut a = Node::open(MemoryStore::new(), NodeId::new("a").unwrap()).unwrap();
    let mut b = Node::open(MemoryStore::new(), NodeId::new("b").unwrap()).unwrap();
    let text = |s: &str| Value {
        content_type: "text/plain".into(),
        data: s.as_bytes().to_vec(),
    };
    let set_edit = |add: &[&str], remove: &[&str]| Write::SetEdit {
        key: "team".into(),
        add: add.iter().map(|s| s.to_string()).collect(),
        remove: remove.iter().map(|s| s.to_string()).collect(),
    };

    // Both start from the same set, then edit it and one key concurrently ("during a partition").
    a.handle_write(1_000, set_edit(&["alice", "bob"], &[]))
        .unwrap();
    exchange(&mut a, &mut b, &StoreKey::set("team"));
    a.handle_write(
        2_000,
        Write::KvPut {
            key: "color".into(),
            value: text("red"),
            ttl_ms: None,
        },
    )
    .unwrap();
    b.handle_write(
        2_001,
        Write::KvPut {
            key: "color".into(),
            value: text("blue"),
            ttl_ms: None,
        },
    )
    .unwrap();
    a.handle_write(2_002, set_edit(&[], &["bob"])).unwrap();
    b.handle_write(2_003, set_edit(&["bob", "carol"], &[]))
        .unwrap();
    println!("before: a {} / b {}", a.digest().hex(), b.digest().hex());

    // Heal: each side merges the other's state for every key.
    for key in [StoreKey::kv("color"), StoreKey::set("team")] {
        exchange(&mut a, &mut b, &key);
    }
    println!("after:  a {} / b {}", a.digest().hex(), b.digest().hex());
    assert_eq!(a.digest(), b.digest());
    if let Some(KeyState::Register(r)) = a.store().get(&StoreKey::kv("color")).unwrap() {
        let value = r
            .value
            .map(|v| String::from_utf8_lossy(&v.data).into_owned());
        println!(
            "color = {value:?} (written by {} at {}: the later HLC timestamp wins)",
            r.node, r.timestamp
        );
    }
    if let Some(KeyState::Set(s)) = a.store().get(&StoreKey::set("team")).unwrap() {
        let elements: Vec<&str> = s.elements().collect();
        println!("team = {elements:?} (bob's concurrent re-add survives the remove: add wins)");
    }
}

/// Merges each node's state of `key` into the other (a state is a valid delta).
fn exchange(a: &mut Node<MemoryStore>, b: &mut Node<MemoryStore>, key: &StoreKey) {
    let from_a = a.store().get(key).unwrap();
    let from_b = b.store().get(key).unwrap();
    if let Some(state) = from_a {
        let _ = b.merge_delta(3_000, key.clone(), state).unwrap();
    }
    if let Some(state) = from_b {
        let _ = a.merge_delta(3_000, key.clone(), state).unwrap();
    }
}
