//! What a peer sends is validated before it touches state: one core ([`Node`] over a memory store)
//! driven by hand with well-formed lies from a peer: timestamps at the end of time, states of the
//! wrong kind, horizons from the future, incarnations that cannot be refuted, `Forget` frames and
//! indirect probes from strangers; and what a core trusts of its peers about tombstone
//! collection (which `Forget` requests it honours, what it reports holding after a restart).
//! Each test is a bug the core once had.

use hearsay::clock::{NodeId, ReplicaId, Timestamp};
use hearsay::crdt::{KeyState, LwwRegister, OrSet, Value};
use hearsay::gossip::rumor::Rumor;
use hearsay::gossip::sync::SyncMessage;
use hearsay::membership::{Member, MemberState, SwimMessage};
use hearsay::node::{ClusterConfig, Node, Outbound, Write};
use hearsay::store::{MemoryStore, Store, StoreKey};
use hearsay::wire::{Datagram, ForgetValue, Frame, FrameBody, SyncAnswer, SyncRequest, SyncStart};
use std::net::SocketAddr;

/// Wall-clock milliseconds at which these tests run (an arbitrary day in 2026).
const NOW: u64 = 1_790_000_000_000;

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn member(name: &str, port: u16, incarnation: u64) -> Member {
    Member::new(id(name), addr(port), addr(port + 1000), incarnation)
}

fn text(v: &str) -> Value {
    Value {
        content_type: "text/plain".into(),
        data: v.as_bytes().to_vec(),
    }
}

fn envelope(from: &Member) -> Datagram {
    Datagram {
        from: from.clone(),
        swim: None,
        updates: Vec::new(),
        rumors: Vec::new(),
        pull: None,
    }
}

/// Node "a" on port 7101 that has heard from peer "b" (port 7102).
fn a_with_peer_b() -> (Node<MemoryStore>, Member) {
    let mut config = ClusterConfig::standalone();
    config.gossip_addr = addr(7101);
    let mut node = Node::open_in_cluster(MemoryStore::new(), id("a"), config).unwrap();
    let b = member("b", 7102, 1);
    node.handle_datagram(NOW, b.gossip_addr, envelope(&b))
        .unwrap();
    node.take_outbound();
    (node, b)
}

fn rumor_from(b: &Member, seq: u64, key: StoreKey, delta: KeyState) -> Datagram {
    Datagram {
        rumors: vec![Rumor {
            origin: ReplicaId::new(b.id.clone(), 1),
            seq,
            key,
            delta,
        }],
        ..envelope(b)
    }
}

fn register(ts: Timestamp, node: &str, v: &str) -> KeyState {
    KeyState::Register(LwwRegister::write(ts, id(node), Some(text(v))))
}

fn value_of(node: &Node<MemoryStore>, key: &str) -> Option<String> {
    match node.store().get(&StoreKey::kv(key)).unwrap() {
        Some(KeyState::Register(r)) => r
            .value
            .map(|v| String::from_utf8_lossy(&v.data).into_owned()),
        _ => None,
    }
}

#[test]
fn a_register_stamped_at_the_end_of_time_does_not_pin_the_clock() {
    let (mut a, b) = a_with_peer_b();
    let end_of_time = register(Timestamp::from_raw(u64::MAX), "b", "doom");
    let _ = a.handle_datagram(
        NOW,
        b.gossip_addr,
        rumor_from(&b, 1, StoreKey::kv("x"), end_of_time),
    );
    // Two later writes of one key: the second must win (before, both got u64::MAX and the value
    // bytes decided, so "a" lost to "b").
    let first = a.handle_write(NOW + 1, Write::put_text("k", "b"));
    let second = a.handle_write(NOW + 2, Write::put_text("k", "a"));
    if let (Ok(first), Ok(second)) = (&first, &second) {
        assert!(second.timestamp > first.timestamp);
        assert!(second.timestamp.wall_ms() < NOW + 1_000);
    }
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(value_of(&a, "k").as_deref(), Some("a"));
    assert_eq!(value_of(&a, "x"), None, "the far-future value is refused");
}

#[test]
fn a_set_rumored_under_a_kv_key_is_refused_and_later_puts_are_stored() {
    let (mut a, b) = a_with_peer_b();
    let mut set = OrSet::new();
    let delta = set.add(&ReplicaId::new(id("b"), 1), "e");
    let _ = a.handle_datagram(
        NOW,
        b.gossip_addr,
        rumor_from(&b, 1, StoreKey::kv("k"), KeyState::Set(delta)),
    );
    let ack = a.handle_write(NOW + 1, Write::put_text("k", "v"));
    assert!(ack.is_ok(), "{ack:?}");
    assert_eq!(value_of(&a, "k").as_deref(), Some("v"));
}

/// Starts an exchange from `a` and returns its session number.
fn start_exchange(a: &mut Node<MemoryStore>, now: u64) -> u64 {
    a.handle_tick(now).unwrap();
    a.take_outbound()
        .into_iter()
        .find_map(|o| match o {
            Outbound::SyncRequest { session, .. } => Some(session),
            _ => None,
        })
        .expect("an anti-entropy exchange starts")
}

#[test]
fn a_collection_horizon_from_the_future_is_not_adopted() {
    let (mut a, _b) = a_with_peer_b();
    let session = start_exchange(&mut a, NOW);
    let future = Timestamp::new(NOW + 10 * 60_000, 0);
    let _ = a.handle_sync_reply(
        NOW,
        session,
        Some(SyncAnswer {
            collected_through: future,
            message: SyncMessage::InSync,
        }),
    );
    assert!(a.store().collected_through() < future);
    let ack = a.handle_write(NOW + 1_000, Write::put_text("new", "v"));
    assert!(ack.is_ok(), "{ack:?}");
    assert_eq!(value_of(&a, "new").as_deref(), Some("v"));
}

#[test]
fn a_claim_about_this_node_at_the_last_incarnation_is_refused_without_panicking() {
    let (mut a, b) = a_with_peer_b();
    let before = a.incarnation();
    let doomed = Member {
        state: MemberState::Dead,
        ..member("a", 7101, u64::MAX)
    };
    let datagram = Datagram {
        updates: vec![doomed],
        ..envelope(&b)
    };
    a.handle_datagram(NOW, b.gossip_addr, datagram).unwrap();
    assert_eq!(a.incarnation(), before);
    let me = a.members().into_iter().find(|m| m.id == id("a")).unwrap();
    assert_eq!(me.state, MemberState::Alive);
}

#[test]
fn a_forget_frame_from_a_stranger_is_ignored() {
    let (mut a, _b) = a_with_peer_b();
    let ack = a.handle_write(NOW, Write::put_text("k", "v")).unwrap();
    let forged = Frame {
        from: id("mallory"),
        body: FrameBody::Forget(vec![ForgetValue {
            key: StoreKey::kv("k"),
            timestamp: ack.timestamp,
            node: ack.node,
        }]),
    };
    let _ = a.handle_frame(NOW, forged);
    assert_eq!(value_of(&a, "k").as_deref(), Some("v"));
}

#[test]
fn an_indirect_probe_of_an_address_that_is_no_member_is_not_relayed() {
    let (mut a, b) = a_with_peer_b();
    let victim = addr(9999);
    let datagram = Datagram {
        swim: Some(SwimMessage::PingReq {
            probe: 5,
            target: id("victim"),
            target_addr: victim,
        }),
        ..envelope(&b)
    };
    a.handle_datagram(NOW, b.gossip_addr, datagram).unwrap();
    let sent_to_victim = a
        .take_outbound()
        .into_iter()
        .filter(|o| matches!(o, Outbound::Datagram { to, .. } if *to == victim))
        .count();
    assert_eq!(sent_to_victim, 0);
}

/// Peer "b" collected up to `horizon` and says so with the start of an exchange.
fn b_announces_horizon(a: &mut Node<MemoryStore>, now: u64, horizon: Timestamp) {
    let request = SyncRequest {
        start: Some(SyncStart {
            clock: Timestamp::new(now, 0),
            stable: Vec::new(),
            collected_through: horizon,
        }),
        message: SyncMessage::Root { root: a.digest() },
    };
    let answer = a.handle_sync_request(now, &id("b"), request).unwrap();
    assert!(answer.is_some(), "the exchange is answered");
}

fn forget_frame(key: &str, timestamp: Timestamp, node: &NodeId) -> Frame {
    Frame {
        from: id("b"),
        body: FrameBody::Forget(vec![ForgetValue {
            key: StoreKey::kv(key),
            timestamp,
            node: node.clone(),
        }]),
    }
}

/// A value that "b" refuses as older than a tombstone it collected is one "b" will never take
/// (overwritten by a delete everyone counted saw, or written by a node left out of the
/// collection): "a" drops it when asked, whoever wrote it, so the cluster converges. (Before, a
/// node counted in the collection kept every such value, and the cluster never converged.) One
/// newer than the horizon "b" announced, "b" cannot have refused: a lie, kept.
#[test]
fn a_value_a_collecting_peer_will_never_take_goes_but_not_one_above_its_horizon() {
    let (mut a, b) = a_with_peer_b();
    let mine = a
        .handle_write(NOW, Write::put_text("mine", "dropped"))
        .unwrap();
    let theirs = Timestamp::new(NOW - 5_000, 0);
    a.handle_datagram(
        NOW,
        b.gossip_addr,
        rumor_from(
            &b,
            1,
            StoreKey::kv("theirs"),
            register(theirs, "c", "dropped"),
        ),
    )
    .unwrap();
    // "a" completes an exchange with "b" and reports holding every write up to its start: the
    // collection "b" announces next counted "a".
    let session = start_exchange(&mut a, NOW + 1_000);
    a.handle_sync_reply(
        NOW + 1_000,
        session,
        Some(SyncAnswer {
            collected_through: Timestamp::ZERO,
            message: SyncMessage::InSync,
        }),
    )
    .unwrap();
    start_exchange(&mut a, NOW + 3_000);
    let newer = a
        .handle_write(NOW + 3_000, Write::put_text("newer", "kept"))
        .unwrap();
    b_announces_horizon(&mut a, NOW + 3_000, Timestamp::new(NOW + 1, 0));
    for (key, ts, node) in [
        ("theirs", theirs, id("c")),
        ("mine", mine.timestamp, mine.node.clone()),
        ("newer", newer.timestamp, newer.node.clone()),
    ] {
        a.handle_frame(NOW + 3_000, forget_frame(key, ts, &node))
            .unwrap();
    }
    assert_eq!(value_of(&a, "theirs"), None);
    assert_eq!(value_of(&a, "mine"), None);
    assert_eq!(value_of(&a, "newer").as_deref(), Some("kept"));
}

/// Runs `a` from `from` to `to` ms with `peers` answering its probes and every exchange it starts
/// completing at once; returns what it reported holding about itself in each exchange it started.
fn run_answered(
    a: &mut Node<MemoryStore>,
    from: u64,
    to: u64,
    peers: &[&Member],
) -> Vec<Timestamp> {
    let mut reports = Vec::new();
    for now in (from..to).step_by(100) {
        a.handle_tick(now).unwrap();
        for out in a.take_outbound() {
            match out {
                Outbound::Datagram {
                    to,
                    datagram:
                        Datagram {
                            swim: Some(SwimMessage::Ping { probe }),
                            ..
                        },
                    ..
                } => {
                    let Some(peer) = peers.iter().find(|p| p.gossip_addr == to) else {
                        continue;
                    };
                    let ack = Datagram {
                        swim: Some(SwimMessage::Ack {
                            probe,
                            clock_ms: now,
                        }),
                        ..envelope(peer)
                    };
                    a.handle_datagram(now, to, ack).unwrap();
                }
                Outbound::SyncRequest {
                    session,
                    frame:
                        Frame {
                            body: FrameBody::SyncRequest(SyncRequest { start, .. }),
                            ..
                        },
                    ..
                } => {
                    if let Some(own) = start.and_then(|s| {
                        s.stable
                            .into_iter()
                            .find(|(n, _)| *n == id("a"))
                            .map(|(_, t)| t)
                    }) {
                        reports.push(own);
                    }
                    a.handle_sync_reply(
                        now,
                        session,
                        Some(SyncAnswer {
                            collected_through: Timestamp::ZERO,
                            message: SyncMessage::InSync,
                        }),
                    )
                    .unwrap();
                }
                _ => {}
            }
        }
    }
    reports
}

/// A node restarted beside part of its cluster (the rest cut off, or not heard from yet) must
/// not count only the members it hears from: it would report holding every write up to now
/// while it lacks what the others wrote meanwhile, and a collection counting that report would
/// drop deletes it never saw. The members it knew before the restart count as down until it
/// hears of them again. (Before, "a" reported holding everything up to its first exchange with
/// "b" after the restart.)
#[test]
fn a_restarted_node_counts_the_members_it_knew_until_it_hears_of_them_again() {
    let store = MemoryStore::new();
    let mut config = ClusterConfig::standalone();
    config.gossip_addr = addr(7101);
    let mut a = Node::open_in_cluster(store.clone(), id("a"), config.clone()).unwrap();
    let (b, c) = (member("b", 7102, 1), member("c", 7103, 1));
    a.handle_datagram(NOW, b.gossip_addr, envelope(&b)).unwrap();
    a.handle_datagram(NOW, c.gossip_addr, envelope(&c)).unwrap();
    a.commit().unwrap().complete().unwrap();
    drop(a);

    let restart = NOW + 10_000;
    config.opened_at_ms = restart;
    let mut a = Node::open_in_cluster(store, id("a"), config).unwrap();
    a.handle_datagram(restart, b.gossip_addr, envelope(&b))
        .unwrap();
    let reports = run_answered(&mut a, restart, restart + 10_000, &[&b]);
    assert!(reports.len() >= 3, "{reports:?}");
    assert!(
        reports.iter().all(|r| *r < Timestamp::new(NOW, 0)),
        "reported {reports:?}"
    );

    // Heard of again and exchanged with, "c" no longer holds the report back.
    a.handle_datagram(restart + 10_000, c.gossip_addr, envelope(&c))
        .unwrap();
    let reports = run_answered(&mut a, restart + 10_000, restart + 30_000, &[&b, &c]);
    let last = reports.last().copied().unwrap_or_default();
    assert!(
        last > Timestamp::new(restart + 10_000, 0),
        "reported {reports:?}"
    );
}
