//! A write whose sync fails: the driver answers it with an error, sends nothing of its group to
//! any peer, and the core undoes it, so it never takes effect, now or after a restart. Driven
//! through the production runtime over a memory store that models a disk (a batch is durable
//! once its sync completes) and fails syncs on demand.

use hearsay::clock::NodeId;
use hearsay::crdt::KeyState;
use hearsay::membership::{Member, SwimMessage};
use hearsay::node::{ClusterConfig, Node, Outbound, Write};
use hearsay::runtime::{self, NodeHandle};
use hearsay::store::{MemoryStore, Store, StoreKey};
use hearsay::wire::Datagram;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn from_b(b: &Member, swim: Option<SwimMessage>) -> Datagram {
    Datagram {
        from: b.clone(),
        swim,
        updates: Vec::new(),
        rumors: Vec::new(),
        pull: None,
    }
}

/// Node "a" on the runtime, over `store`, knowing peer "b"; returns its handle and what it sends.
async fn a_knowing_b(
    store: &MemoryStore,
) -> (NodeHandle, mpsc::UnboundedReceiver<Outbound>, Member) {
    let mut config = ClusterConfig::standalone();
    config.gossip_addr = addr(7101);
    let node = Node::open_in_cluster(store.reopen(), id("a"), config).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (handle, _reader) = runtime::start(node, Duration::from_millis(20), tx);
    let b = Member::new(id("b"), addr(7102), addr(8102), 1);
    assert!(handle.deliver_datagram(b.gossip_addr, from_b(&b, None)));
    for _ in 0..200 {
        if handle.members().await.unwrap().iter().any(|m| m.id == b.id) {
            return (handle, rx, b);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("a never learned b");
}

/// Pings `a` from `b` until one of the Acks comes out (a group failed with the sync before it
/// is dropped, so the first may be lost), and returns every datagram `a` sent meanwhile: the
/// Ack leaves after everything produced before it.
async fn until_acked(
    a: &NodeHandle,
    b: &Member,
    rx: &mut mpsc::UnboundedReceiver<Outbound>,
) -> Vec<Datagram> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for probe in 1_000.. {
        assert!(tokio::time::Instant::now() < deadline, "no Ack came out");
        let ping = from_b(b, Some(SwimMessage::Ping { probe }));
        assert!(a.deliver_datagram(b.gossip_addr, ping));
        let wait = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Some(message)) = tokio::time::timeout_at(wait, rx.recv()).await {
            if let Outbound::Datagram { datagram, .. } = message {
                let acked =
                    matches!(datagram.swim, Some(SwimMessage::Ack { probe: p, .. }) if p >= 1_000);
                seen.push(datagram);
                if acked {
                    return seen;
                }
            }
        }
    }
    unreachable!()
}

fn rumors_of(sent: &[Datagram], key: &str) -> usize {
    sent.iter()
        .flat_map(|d| &d.rumors)
        .filter(|r| r.key == StoreKey::kv(key))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_whose_sync_fails_is_refused_sent_nowhere_and_undone() {
    let store = MemoryStore::with_crashes();
    let (a, mut sent, b) = a_knowing_b(&store).await;
    let durable = a.write(Write::put_text("k", "durable")).await;
    assert!(durable.is_ok(), "{durable:?}");

    store.fail_syncs(true);
    let failed = a.write(Write::put_text("k", "lost")).await;
    assert!(
        failed.is_err(),
        "a write whose sync failed was acknowledged: {failed:?}"
    );
    store.fail_syncs(false);

    // Pings from b: an Ack leaves after everything the failed group produced.
    let out = until_acked(&a, &b, &mut sent).await;
    let leaked: Vec<_> = out
        .iter()
        .flat_map(|d| &d.rumors)
        .filter(|r| matches!(&r.delta, KeyState::Register(reg) if reg.value.as_ref().is_some_and(|v| v.data == b"lost")))
        .collect();
    assert!(
        leaked.is_empty(),
        "the failed write reached a peer: {leaked:?}"
    );
    assert!(
        rumors_of(&out, "k") >= 1,
        "the durable write was pushed: {out:?}"
    );

    // Undone: the key reads as before, now and after a restart, and a later write is taken.
    let reads = |store: &MemoryStore| match store.get(&StoreKey::kv("k")).unwrap() {
        Some(KeyState::Register(r)) => r.value.map(|v| v.data),
        _ => None,
    };
    assert_eq!(reads(&store).as_deref(), Some(&b"durable"[..]));
    let again = a.write(Write::put_text("k", "after")).await;
    assert!(again.is_ok(), "{again:?}");
    a.shutdown().await;
    assert_eq!(reads(&store.reopen()).as_deref(), Some(&b"after"[..]));
}
