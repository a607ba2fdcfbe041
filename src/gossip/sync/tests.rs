//! Exchanges between in-memory replicas: convergence in every shape of difference, bounded
//! messages, and hostile requests.

use super::*;
use crate::clock::{NodeId, Timestamp};
use crate::crdt::{LwwRegister, OrSet, Value};
use proptest::prelude::*;

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn actor(id: &str) -> crate::clock::ReplicaId {
    crate::clock::ReplicaId::new(node(id), 0)
}

fn register(ts: u64, origin: &str, value: &str) -> KeyState {
    KeyState::Register(LwwRegister::write(
        Timestamp::from_raw(ts),
        node(origin),
        Some(Value {
            content_type: "text/plain".into(),
            data: value.as_bytes().to_vec(),
        }),
    ))
}

fn replica(keys: impl IntoIterator<Item = (String, u64)>) -> MemoryReplica {
    let mut r = MemoryReplica::new();
    for (name, ts) in keys {
        r.merge(StoreKey::kv(name), register(ts, "n1", "v"));
    }
    r
}

/// What a wire would do to a message: encode it, check the bound, decode it.
fn carry(message: SyncMessage, bound: usize, largest: &mut usize) -> SyncMessage {
    let bytes = postcard::to_stdvec(&message).unwrap();
    assert_eq!(bytes.len(), message.encoded_len());
    assert!(
        bytes.len() <= bound,
        "a message of {} bytes exceeds {bound}",
        bytes.len()
    );
    *largest = (*largest).max(bytes.len());
    postcard::from_bytes(&bytes).unwrap()
}

struct Outcome {
    stats: SyncStats,
    largest: usize,
    /// `FetchLeaves` requests sent.
    fetches: usize,
}

/// Runs one exchange, `a` initiating, merging each side's outputs as a driver would.
fn exchange(a: &mut MemoryReplica, b: &mut MemoryReplica, budget: usize) -> Outcome {
    exchange_with(a, b, budget, true)
}

/// [`exchange`], `a` fetching whole leaves if it holds nothing only when `fetch` says so.
fn exchange_with(
    a: &mut MemoryReplica,
    b: &mut MemoryReplica,
    budget: usize,
    fetch: bool,
) -> Outcome {
    // Descent messages are bounded by their node count, not by the budget.
    let bound = budget.max(MAX_NODES_PER_REQUEST * FANOUT * 8 + RESERVE);
    let mut largest = 0;
    let mut fetches = 0;
    let (mut session, mut request) = SyncSession::start_within(a, budget, fetch);
    loop {
        fetches += usize::from(matches!(request, SyncMessage::FetchLeaves { .. }));
        let request_in = carry(request, bound, &mut largest);
        let (reply, merges) = respond_within(b, request_in, budget);
        for (key, state) in merges {
            b.merge(key, state);
        }
        let reply = carry(reply.expect("a well-formed request"), bound, &mut largest);
        let step = session.handle(a, reply);
        for (key, state) in step.merge {
            a.merge(key, state);
        }
        if step.done {
            assert!(step.send.is_none());
            break;
        }
        request = step.send.expect("a session that is not done sends");
        assert!(
            session.stats().rounds < 100_000,
            "the exchange does not end"
        );
    }
    assert!(!session.stats().aborted);
    Outcome {
        stats: session.stats(),
        largest,
        fetches,
    }
}

fn assert_converged(a: &MemoryReplica, b: &MemoryReplica) {
    assert_eq!(a.merkle().root(), b.merkle().root());
    assert_eq!(a.len(), b.len());
}

fn keys(range: std::ops::Range<u32>) -> impl Iterator<Item = (String, u64)> {
    range.map(|i| (format!("key-{i}"), 1))
}

#[test]
fn identical_replicas_finish_in_one_round_trip() {
    let mut a = replica(keys(0..200));
    let mut b = a.clone();
    let out = exchange(&mut a, &mut b, MESSAGE_BUDGET);
    assert_eq!(out.stats.rounds, 1);
    assert_eq!(out.stats.keys_sent + out.stats.keys_received, 0);
    assert!(out.stats.bytes() < 100, "{} bytes", out.stats.bytes());
}

#[test]
fn keys_missing_on_either_side_are_copied_both_ways() {
    let mut a = replica(keys(0..300));
    let mut b = replica(keys(20..320));
    let out = exchange(&mut a, &mut b, MESSAGE_BUDGET);
    assert_converged(&a, &b);
    assert_eq!(a.len(), 320);
    assert_eq!(out.stats.keys_sent, 20);
    assert_eq!(out.stats.keys_received, 20);
    // Root, three inner levels, the leaves' key lists, the states.
    assert_eq!(out.stats.rounds, 6);
}

#[test]
fn conflicting_versions_converge_on_the_later_write_on_both_sides() {
    let mut a = replica(keys(0..100));
    let mut b = a.clone();
    let (older, newer) = (StoreKey::kv("key-7"), StoreKey::kv("key-8"));
    // b wrote key-7 later; a wrote key-8 later.
    b.merge(older.clone(), register(9, "n2", "b wins"));
    a.merge(older.clone(), register(5, "n1", "a loses"));
    a.merge(newer.clone(), register(12, "n1", "a wins"));
    b.merge(newer.clone(), register(11, "n2", "b loses"));
    exchange(&mut a, &mut b, MESSAGE_BUDGET);
    assert_converged(&a, &b);
    for r in [&a, &b] {
        assert_eq!(r.get(&older), Some(&register(9, "n2", "b wins")));
        assert_eq!(r.get(&newer), Some(&register(12, "n1", "a wins")));
    }
}

#[test]
fn disjoint_key_sets_end_up_united() {
    let mut a = replica(keys(0..500));
    let mut b = replica(keys(500..900));
    exchange(&mut a, &mut b, MESSAGE_BUDGET);
    assert_converged(&a, &b);
    assert_eq!(a.len(), 900);
}

fn big_replica(n: u32) -> MemoryReplica {
    let value = "x".repeat(1000);
    let mut r = MemoryReplica::new();
    for i in 0..n {
        r.merge(
            StoreKey::kv(format!("key-{i}")),
            register(u64::from(i) + 1, "n1", &value),
        );
    }
    r
}

#[test]
fn an_empty_replica_fetches_5000_keys_in_bounded_chunks() {
    let mut a = MemoryReplica::new();
    let mut b = big_replica(5000);
    let out = exchange(&mut a, &mut b, MESSAGE_BUDGET);
    assert_converged(&a, &b);
    assert_eq!(out.stats.keys_received, 5000);
    assert!(out.largest <= MESSAGE_BUDGET, "{}", out.largest);
    assert!(out.fetches > 0);
    // About 5 MB of states cannot travel in one message.
    assert!(out.stats.rounds > 8, "{} rounds", out.stats.rounds);
    // Every leaf is fetched whole: each state travels once, with no key lists or wanted keys.
    let states: usize = (0..5000)
        .map(|i| {
            let key = StoreKey::kv(format!("key-{i}"));
            encoded_len(&(&key, b.get(&key).unwrap()))
        })
        .sum();
    // The descent: 16 child prefixes for every node of `b` that holds a key (`a` holds none).
    let merkle = b.merkle();
    let descent: usize = (0..DEPTH)
        .map(|level| {
            (0..FANOUT.pow(level as u32))
                .filter(|&node| merkle.children(level, node).iter().any(|c| c.count > 0))
                .count()
                * FANOUT
                * 8
        })
        .sum();
    assert!(
        out.stats.bytes_received as usize <= states + descent + out.stats.rounds as usize * 64,
        "{} bytes received: {states} of states, {descent} of descent",
        out.stats.bytes_received
    );
}

/// After a fetch failed (a peer of a version without `FetchLeaves` drops the request), the
/// next exchange compares key lists, which every version answers.
#[test]
fn an_empty_replica_told_not_to_fetch_compares_key_lists_and_converges() {
    let mut a = MemoryReplica::new();
    let mut b = big_replica(5000);
    let out = exchange_with(&mut a, &mut b, MESSAGE_BUDGET, false);
    assert_converged(&a, &b);
    assert_eq!(out.fetches, 0);
    assert_eq!(out.stats.keys_received, 5000);
}

#[test]
fn an_empty_replica_fetches_one_state_per_message_resuming_after_the_last() {
    let crowded = same_leaf_names("crowded", 4);
    let mut a = MemoryReplica::new();
    let mut b = replica(keys(0..5));
    for name in &crowded {
        b.merge(StoreKey::kv(name.as_str()), register(3, "n2", "b"));
    }
    let out = exchange(&mut a, &mut b, 0);
    assert_converged(&a, &b);
    assert_eq!(out.stats.keys_received, crowded.len() as u64 + 5);
    assert_eq!(out.stats.keys_sent, 0);
}

#[test]
fn a_full_replica_pushes_5000_keys_to_an_empty_one_in_bounded_chunks() {
    let mut a = big_replica(5000);
    let mut b = MemoryReplica::new();
    let out = exchange(&mut a, &mut b, MESSAGE_BUDGET);
    assert_converged(&a, &b);
    assert_eq!(out.stats.keys_sent, 5000);
    assert!(out.largest <= MESSAGE_BUDGET, "{}", out.largest);
    assert!(out.stats.rounds > 8, "{} rounds", out.stats.rounds);
}

/// Names (beyond `first`) of keys that land in the same leaf as `first`.
fn same_leaf_names(first: &str, count: usize) -> Vec<String> {
    let leaf = merkle::bucket_of(&StoreKey::kv(first));
    let mut names = vec![first.to_string()];
    let mut i = 0u64;
    while names.len() <= count {
        let name = format!("collide-{i}");
        if merkle::bucket_of(&StoreKey::kv(name.as_str())) == leaf {
            names.push(name);
        }
        i += 1;
    }
    names
}

#[test]
fn one_item_per_message_still_converges_resuming_inside_a_leaf() {
    // A zero budget leaves room for one state or one key per message, so a leaf's key list
    // arrives over several replies and each resumes after the last key received.
    let crowded = same_leaf_names("crowded", 3);
    let mut a = replica(keys(0..40));
    let mut b = replica(keys(20..60));
    for name in &crowded {
        b.merge(StoreKey::kv(name.as_str()), register(3, "n2", "b"));
    }
    a.merge(StoreKey::kv(crowded[1].as_str()), register(4, "n1", "a"));
    let out = exchange(&mut a, &mut b, 0);
    assert_converged(&a, &b);
    assert_eq!(
        b.get(&StoreKey::kv(crowded[1].as_str())),
        Some(&register(4, "n1", "a"))
    );
    assert!(out.stats.rounds > 40, "{} rounds", out.stats.rounds);
}

#[test]
fn set_states_merge_adds_from_both_sides() {
    let key = StoreKey::set("colours");
    let mut a = replica(keys(0..50));
    let mut b = a.clone();
    let mut set_a = OrSet::new();
    set_a.add(&actor("n1"), "red");
    set_a.add(&actor("n1"), "green");
    let mut set_b = OrSet::new();
    set_b.add(&actor("n2"), "blue");
    a.merge(key.clone(), KeyState::Set(set_a));
    b.merge(key.clone(), KeyState::Set(set_b));
    let mut only_b = OrSet::new();
    only_b.add(&actor("n2"), "x");
    b.merge(StoreKey::set("only-b"), KeyState::Set(only_b));
    exchange(&mut a, &mut b, MESSAGE_BUDGET);
    assert_converged(&a, &b);
    for r in [&a, &b] {
        let Some(KeyState::Set(set)) = r.get(&key) else {
            panic!("the set is missing")
        };
        assert_eq!(set.elements().collect::<Vec<_>>(), ["blue", "green", "red"]);
        assert!(r.get(&StoreKey::set("only-b")).is_some());
    }
}

#[test]
fn the_responder_rejects_hostile_requests() {
    let r = replica(keys(0..100));
    let reject = |request: SyncMessage| {
        let (reply, merges) = respond(&r, request);
        assert!(reply.is_none() && merges.is_empty());
    };
    for (level, nodes) in [
        (4, vec![0]),
        (255, vec![0]),
        (0, vec![1]),
        (1, vec![16]),
        (3, vec![4096]),
        (3, vec![u16::MAX]),
        (2, vec![]),
        (1, vec![0; MAX_NODES_PER_REQUEST + 1]),
    ] {
        reject(SyncMessage::GetChildren { level, nodes });
    }
    let repair = |leaves: Vec<u16>, push, want| SyncMessage::Repair {
        leaves,
        after: None,
        push,
        want,
    };
    reject(repair(vec![0; MAX_LEAVES_PER_REQUEST + 1], vec![], vec![]));
    reject(repair(
        vec![],
        vec![],
        vec![StoreKey::kv("k"); MAX_KEYS_PER_REQUEST + 1],
    ));
    let pushed = (StoreKey::kv("k"), register(1, "n1", "v"));
    reject(repair(
        vec![],
        vec![pushed; MAX_KEYS_PER_REQUEST + 1],
        vec![],
    ));
    // A set state under a kv key.
    reject(repair(
        vec![],
        vec![(StoreKey::kv("k"), KeyState::Set(OrSet::new()))],
        vec![],
    ));
    // Replies are not requests.
    reject(SyncMessage::InSync);
    reject(SyncMessage::Children { hashes: vec![] });
    reject(SyncMessage::Repaired {
        keys: vec![],
        states: vec![],
        answered: 0,
    });
    // Odd but harmless requests are answered.
    let (reply, _) = respond(
        &r,
        SyncMessage::Repair {
            leaves: vec![7, 7, 3],
            after: Some(StoreKey::set("zzz")),
            push: vec![],
            want: vec![StoreKey::kv("absent")],
        },
    );
    assert!(matches!(
        reply,
        Some(SyncMessage::Repaired { answered: 1, .. })
    ));
}

#[test]
fn the_initiator_gives_up_on_replies_that_do_not_fit() {
    let a = replica(keys(0..10));
    let wrong_replies = [
        SyncMessage::Children {
            hashes: vec![[0; 8]; 3],
        },
        SyncMessage::Root {
            root: Leaf::default(),
        },
        SyncMessage::Repaired {
            keys: vec![],
            states: vec![],
            answered: 5,
        },
    ];
    for reply in wrong_replies {
        let (mut session, _) = SyncSession::start(&a, true);
        let step = session.handle(&a, reply);
        assert!(step.done && step.send.is_none());
        assert!(session.stats().aborted);
        // Further replies are ignored.
        assert!(session.handle(&a, SyncMessage::InSync).done);
    }
}

#[test]
fn the_initiator_drops_states_of_the_wrong_kind() {
    let a = replica(keys(0..10));
    let b = replica(keys(5..10));
    let (mut session, request) = SyncSession::start(&a, true);
    let mut reply = respond(&b, request).0.unwrap();
    // Walk down to the first Repair, then answer it with a state of the wrong kind.
    let leaf = loop {
        match session.handle(&a, reply).send {
            Some(SyncMessage::Repair { leaves, .. }) => break leaves[0],
            Some(request) => reply = respond(&b, request).0.unwrap(),
            None => panic!("the replicas differ, so a repair follows"),
        }
    };
    let hostile = SyncMessage::Repaired {
        keys: vec![LeafKeys {
            leaf,
            keys: vec![],
            complete: true,
        }],
        states: vec![(StoreKey::kv("key-1"), KeyState::Set(OrSet::new()))],
        answered: 0,
    };
    let step = session.handle(&a, hostile);
    assert!(step.merge.is_empty());
    assert!(!session.stats().aborted);
}

/// Built once: a replica costs a few milliseconds, a property test runs 256 cases.
fn small_replica() -> &'static MemoryReplica {
    static REPLICA: std::sync::OnceLock<MemoryReplica> = std::sync::OnceLock::new();
    REPLICA.get_or_init(|| replica(keys(0..20)))
}

proptest! {
    #[test]
    fn the_responder_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let r = small_replica();
        if let Ok(request) = postcard::from_bytes::<SyncMessage>(&bytes) {
            let _ = respond(r, request);
        }
    }

    #[test]
    fn the_responder_survives_arbitrary_node_requests(
        level in any::<u8>(),
        nodes in prop::collection::vec(any::<u16>(), 0..64),
    ) {
        let r = small_replica();
        let _ = respond(r, SyncMessage::GetChildren { level, nodes });
    }

    #[test]
    fn the_responder_survives_arbitrary_repairs(
        leaves in prop::collection::vec(any::<u16>(), 0..64),
        after in proptest::option::of("[a-z0-9-]{0,8}"),
        want in prop::collection::vec("[a-z0-9-]{0,8}", 0..16),
    ) {
        let r = small_replica();
        let _ = respond(r, SyncMessage::Repair {
            leaves,
            after: after.map(StoreKey::kv),
            push: vec![],
            want: want.into_iter().map(StoreKey::kv).collect(),
        });
    }

    #[test]
    fn the_responder_survives_arbitrary_fetches(
        leaves in prop::collection::vec(any::<u16>(), 0..64),
        after in proptest::option::of("[a-z0-9-]{0,8}"),
    ) {
        let r = small_replica();
        let _ = respond(r, SyncMessage::FetchLeaves { leaves, after: after.map(StoreKey::kv) });
    }
}
