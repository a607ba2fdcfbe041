//! The cluster transport (tokio): one UDP socket for datagrams, one TCP listener for frames
//! ([`super::inbound`]), pooled connections for one-way frames ([`super::pool`]) and one
//! connection per anti-entropy session. It encodes, seals, sends, receives, opens, decodes and
//! hands messages to the core; it enforces injected faults and counts what it drops. It makes no
//! protocol decisions.

use super::faults::Faults;
use super::inbound;
use super::pool::{self, Pool};
use super::seal::Sealer;
use super::sealed::{Ended, SealedFrames, SEAL_OVERHEAD};
use super::tally::Tally;
use crate::clock::NodeId;
use crate::metrics::Metrics;
use crate::node::Outbound;
use crate::runtime::{wall_ms, NodeHandle};
use crate::wire::{self, Frame, FrameBody, MAX_DATAGRAM_RECEIVED};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// An anti-entropy request's reply must arrive this long after the request was written (the
/// responder may take a while to answer a large request).
const SYNC_REPLY: Duration = Duration::from_secs(30);
const SYNC_CONNECT: Duration = Duration::from_secs(2);

/// Shared by the transport's tasks.
#[derive(Clone)]
pub(super) struct Shared {
    udp: Arc<UdpSocket>,
    pub(super) frames: SealedFrames,
    pub(super) faults: Faults,
    pub(super) core: NodeHandle,
    /// Cluster address → node id, learned from received messages, so that faults also apply to
    /// messages addressed by address only (seeds).
    ids: Arc<RwLock<HashMap<SocketAddr, NodeId>>>,
}

impl Shared {
    fn learn(&self, addr: SocketAddr, id: &NodeId) {
        let known = self
            .ids
            .read()
            .map(|m| m.get(&addr) == Some(id))
            .unwrap_or(false);
        if !known {
            if let Ok(mut m) = self.ids.write() {
                m.insert(addr, id.clone());
            }
        }
    }

    /// The member last heard from at cluster address `addr`, if any.
    fn id_at(&self, addr: SocketAddr) -> Option<NodeId> {
        self.ids.read().ok().and_then(|m| m.get(&addr).cloned())
    }

    /// True when traffic to member `to_id` (`None`: an address no member was heard from) must be
    /// dropped (fault injection: cut off, or lost at random).
    fn blocked(&self, to_id: Option<&NodeId>) -> bool {
        match to_id {
            Some(id) => self.faults.drops(id),
            None => self.faults.loses(),
        }
    }
}

/// The transport's running tasks.
pub struct TransportHandle {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TransportHandle {
    /// Stops receiving and sending (closes the sockets); open connections end with their peers.
    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Starts the transport's tasks; the core's outbound messages arrive on `outbound`.
pub fn spawn(
    udp: UdpSocket,
    tcp: TcpListener,
    sealer: Sealer,
    faults: Faults,
    metrics: Arc<Metrics>,
    core: NodeHandle,
    outbound: mpsc::UnboundedReceiver<Outbound>,
) -> TransportHandle {
    if !sealer.is_keyed() {
        tracing::warn!(
            "no --cluster-key-file: cluster traffic is neither encrypted nor authenticated"
        );
    }
    let shared = Shared {
        udp: Arc::new(udp),
        frames: SealedFrames::new(sealer, metrics),
        faults,
        core,
        ids: Arc::default(),
    };
    TransportHandle {
        tasks: vec![
            tokio::spawn(receive_datagrams(shared.clone())),
            tokio::spawn(inbound::accept(shared.clone(), tcp)),
            tokio::spawn(send_outbound(shared, outbound)),
        ],
    }
}

async fn receive_datagrams(shared: Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (len, from) = match shared.udp.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors (a peer's port closed) surface here; they are not fatal, but a
                // persistent error must not spin.
                tracing::debug!(error = %e, "UDP receive error");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        shared.frames.count("datagram", "in", len);
        if len > MAX_DATAGRAM_RECEIVED + SEAL_OVERHEAD {
            shared.frames.drop_counted("oversized");
            continue;
        }
        let plain = match shared.frames.open_or_stale(&buf[..len], Some(from)) {
            Ok(plain) => plain,
            Err(Some((sent_ms, payload))) => {
                // Authentic but stale: the core learns how far off the sender's clock is.
                if let Ok(datagram) = wire::decode_datagram(&payload) {
                    shared.core.deliver_stale(from, datagram.from.id, sent_ms);
                }
                continue;
            }
            Err(None) => continue,
        };
        let datagram = match wire::decode_datagram_versioned(&plain) {
            Ok((version, d)) => {
                shared.frames.versions().heard(&d.from.id, version);
                d
            }
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropping an undecodable datagram");
                shared.frames.drop_counted("decode");
                continue;
            }
        };
        if shared.faults.drops(&datagram.from.id) {
            shared.frames.drop_counted("fault");
            continue;
        }
        shared.learn(datagram.from.gossip_addr, &datagram.from.id);
        if !shared.core.deliver_datagram(from, datagram) {
            shared.frames.drop_counted("overload");
        }
    }
}

async fn send_outbound(shared: Shared, mut outbound: mpsc::UnboundedReceiver<Outbound>) {
    let mut pool = Pool::new(shared.frames.clone(), pool::Settings::DEFAULT);
    // Open anti-entropy sessions: session id → the channel feeding its connection task.
    let mut sessions: HashMap<u64, mpsc::UnboundedSender<wire::Frame>> = HashMap::new();
    // Messages held back by an injected delay come back here when it has passed.
    let (delayed_tx, mut delayed) = mpsc::unbounded_channel::<Outbound>();
    loop {
        let message = tokio::select! {
            Some(message) = delayed.recv() => message,
            message = outbound.recv() => {
                let Some(message) = message else { return };
                let delay = shared.faults.delay();
                if !delay.is_zero() {
                    let back = delayed_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = back.send(message);
                    });
                    continue;
                }
                message
            }
        };
        match message {
            Outbound::Datagram {
                to,
                to_id,
                datagram,
            } => {
                let to_id = to_id.or_else(|| shared.id_at(to));
                if shared.blocked(to_id.as_ref()) {
                    shared.frames.drop_counted("fault");
                    continue;
                }
                for version in shared.frames.versions().to_send(to_id.as_ref()) {
                    let Ok(encoded) = wire::encode_datagram_as(&datagram, version) else {
                        shared.frames.drop_counted("version");
                        continue;
                    };
                    let sealed = shared.frames.sealer().seal(&encoded, wall_ms());
                    shared.frames.count("datagram", "out", sealed.len());
                    if let Err(e) = shared.udp.send_to(&sealed, to).await {
                        tracing::debug!(%to, error = %e, "UDP send failed");
                    }
                }
            }
            Outbound::Frame { to, to_id, frame } => {
                let to_id = to_id.or_else(|| shared.id_at(to));
                if shared.blocked(to_id.as_ref()) {
                    shared.frames.drop_counted("fault");
                    continue;
                }
                pool.send(to, to_id.as_ref(), frame);
            }
            Outbound::SyncRequest {
                session,
                to,
                to_id,
                frame,
            } => {
                if shared.blocked(Some(&to_id)) {
                    shared.frames.drop_counted("fault");
                    shared.core.sync_reply(session, None);
                    continue;
                }
                let feed = sessions.entry(session).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(run_session(shared.clone(), session, to, to_id.clone(), rx));
                    tx
                });
                let _ = feed.send(frame);
            }
            Outbound::SyncDone { session } => {
                sessions.remove(&session);
            }
            Outbound::ResolveSeed { name } => {
                tokio::spawn(resolve_seed(shared.clone(), name));
            }
        }
    }
}

/// A lookup slower than this counts as failed (the next contact attempt tries again).
const SEED_LOOKUP: Duration = Duration::from_secs(5);

/// Resolves a seed name with the system resolver (so `/etc/hosts`, and a headless Service's one
/// address per pod, both count) and hands every address to the core.
async fn resolve_seed(shared: Shared, name: String) {
    let looked_up = tokio::time::timeout(SEED_LOOKUP, tokio::net::lookup_host(name.clone())).await;
    let addrs = match looked_up {
        Ok(Ok(addrs)) => Some(addrs.collect::<Vec<_>>()),
        Ok(Err(e)) => {
            tracing::debug!(seed = %name, error = %e, "seed did not resolve");
            None
        }
        Err(_) => {
            tracing::debug!(seed = %name, "seed lookup timed out");
            None
        }
    };
    shared.core.deliver_seed_resolution(name, addrs);
}

/// One anti-entropy session's connection: each request from the core is written, its reply
/// read and handed back to the core, until the core ends the session.
async fn run_session(
    shared: Shared,
    session: u64,
    to: SocketAddr,
    to_id: NodeId,
    mut requests: mpsc::UnboundedReceiver<Frame>,
) {
    let Some(mut stream) = pool::connect(to, SYNC_CONNECT).await else {
        shared.frames.drop_counted("unreachable");
        shared.core.sync_reply(session, None);
        return;
    };
    let _tally = Tally::open(shared.frames.metrics(), "out", "sync");
    while let Some(request) = requests.recv().await {
        let reply = if shared
            .frames
            .write(&mut stream, &request, Some(&to_id), SYNC_REPLY)
            .await
        {
            let deadline = Instant::now() + SYNC_REPLY;
            match shared
                .frames
                .read(&mut stream, Some(to), deadline, || ())
                .await
            {
                Err(Ended::Quiet) => {
                    shared.frames.drop_counted("timeout");
                    None
                }
                reply => reply.ok(),
            }
        } else {
            None
        };
        match reply.map(|frame| frame.body) {
            Some(FrameBody::SyncReply(reply)) => shared.core.sync_reply(session, reply),
            other => {
                if other.is_some() {
                    // A peer answering a request with anything but a reply.
                    shared.frames.drop_counted("decode");
                }
                shared.core.sync_reply(session, None);
                return;
            }
        }
    }
}
