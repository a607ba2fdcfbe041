//! Cluster traffic and timers never wait behind client writes: with far more writes queued than
//! the core takes in a round, a probe from a peer is still taken and answered at once, and the
//! node's own probes still go out. (With one shared queue, a full queue dropped pings, acks and
//! timer ticks, and a busy node was declared dead.) Driven through the production runtime.

use hearsay::clock::NodeId;
use hearsay::crdt::Value;
use hearsay::membership::{Member, SwimMessage};
use hearsay::node::{ClusterConfig, Node, Outbound, Write};
use hearsay::runtime;
use hearsay::store::MemoryStore;
use hearsay::wire::Datagram;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn from(member: &Member, swim: Option<SwimMessage>) -> Datagram {
    Datagram {
        from: member.clone(),
        swim,
        updates: Vec::new(),
        rumors: Vec::new(),
        pull: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_are_answered_and_sent_while_client_writes_flood_the_core() {
    let mut config = ClusterConfig::standalone();
    config.gossip_addr = addr(7101);
    let node =
        Node::open_in_cluster(MemoryStore::new(), NodeId::new("a").unwrap(), config).unwrap();
    let (tx, mut sent) = mpsc::unbounded_channel();
    let (a, _reader) = runtime::start(node, Duration::from_millis(20), tx);
    let b = Member::new(NodeId::new("b").unwrap(), addr(7102), addr(8102), 1);
    assert!(a.deliver_datagram(b.gossip_addr, from(&b, None)));

    // Many more writes than the core's queue holds, each with a sizeable value.
    let mut writers = Vec::new();
    for i in 0..12_000 {
        let a = a.clone();
        writers.push(tokio::spawn(async move {
            let value = Value {
                content_type: "application/octet-stream".into(),
                data: vec![(i % 251) as u8; 16 << 10],
            };
            a.write(Write::KvPut {
                key: format!("k{i}"),
                value,
                ttl_ms: None,
            })
            .await
        }));
    }
    tokio::task::yield_now().await;

    let mut answered = false;
    let mut probed = false;
    let mut refused = 0;
    for probe in 1_000..1_050 {
        let ping = from(&b, Some(SwimMessage::Ping { probe }));
        if !a.deliver_datagram(b.gossip_addr, ping) {
            refused += 1;
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(50);
        while let Ok(Some(message)) = tokio::time::timeout_at(until, sent.recv()).await {
            if let Outbound::Datagram { datagram, to, .. } = message {
                match datagram.swim {
                    Some(SwimMessage::Ack { probe: p, .. }) if p >= 1_000 => answered = true,
                    Some(SwimMessage::Ping { .. }) if to == b.gossip_addr => probed = true,
                    _ => {}
                }
            }
        }
        if answered && probed {
            break;
        }
    }
    let unfinished = writers.iter().filter(|w| !w.is_finished()).count();
    assert_eq!(refused, 0, "pings dropped while writes queued");
    assert!(answered, "no ping answered while writes queued");
    assert!(probed, "the node's own probes stopped while writes queued");
    assert!(
        unfinished > 0,
        "the flood was over before the probes: not a test of it"
    );
    for writer in writers {
        assert!(writer.await.unwrap().is_ok());
    }
}
