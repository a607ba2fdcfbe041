//! The cluster transport (tokio): one UDP socket for datagrams, one TCP listener for frames, and
//! outgoing TCP connections for anti-entropy sessions and large rumors. It encodes, seals, sends,
//! receives, opens, decodes and hands messages to the core; it enforces injected faults and
//! counts what it drops. It makes no protocol decisions.

use super::faults::Faults;
use super::seal::{SealError, Sealer};
use super::tally::Tally;
use crate::clock::NodeId;
use crate::metrics::{Metrics, TrafficLabels};
use crate::node::Outbound;
use crate::runtime::{wall_ms, NodeHandle};
use crate::wire::{self, Frame, FrameBody, MAX_DATAGRAM_RECEIVED, MAX_FRAME};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// Sealing adds a nonce and a tag (and the sender's clock) to every message.
const SEAL_OVERHEAD: usize = 24 + 16 + 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A sync round trip or an idle inbound connection longer than this is abandoned.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared by the transport's tasks.
#[derive(Clone)]
struct Shared {
    udp: Arc<UdpSocket>,
    sealer: Sealer,
    faults: Faults,
    metrics: Arc<Metrics>,
    core: NodeHandle,
    /// Cluster address → node id, learned from received messages, so that faults also apply to
    /// messages addressed by address only (seeds).
    ids: Arc<RwLock<HashMap<SocketAddr, NodeId>>>,
}

impl Shared {
    fn count(&self, kind: &'static str, direction: &'static str, bytes: usize) {
        let labels = TrafficLabels { kind, direction };
        self.metrics.cluster_messages.get_or_create(&labels).inc();
        self.metrics
            .cluster_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);
    }

    fn drop_counted(&self, reason: &'static str) {
        self.metrics
            .cluster_dropped
            .get_or_create(&crate::metrics::DropLabels { reason })
            .inc();
    }

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

    /// True when traffic to this destination must be dropped (fault injection).
    fn blocked(&self, to: SocketAddr, to_id: Option<&NodeId>) -> bool {
        if let Some(id) = to_id {
            return self.faults.drops(id);
        }
        let id = self.ids.read().ok().and_then(|m| m.get(&to).cloned());
        id.is_some_and(|id| self.faults.drops(&id))
    }

    fn open(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        match self.sealer.open(bytes, wall_ms()) {
            Ok(plain) => Some(plain),
            Err(SealError::Unauthentic) => {
                self.drop_counted("auth");
                None
            }
            Err(SealError::Stale) => {
                self.drop_counted("stale");
                None
            }
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
        sealer,
        faults,
        metrics,
        core,
        ids: Arc::default(),
    };
    TransportHandle {
        tasks: vec![
            tokio::spawn(receive_datagrams(shared.clone())),
            tokio::spawn(accept_frames(shared.clone(), tcp)),
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
        shared.count("datagram", "in", len);
        if len > MAX_DATAGRAM_RECEIVED + SEAL_OVERHEAD {
            shared.drop_counted("oversized");
            continue;
        }
        let Some(plain) = shared.open(&buf[..len]) else {
            continue;
        };
        let datagram = match wire::decode_datagram(&plain) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropping an undecodable datagram");
                shared.drop_counted("decode");
                continue;
            }
        };
        if shared.faults.drops(&datagram.from.id) {
            shared.drop_counted("fault");
            continue;
        }
        shared.learn(datagram.from.gossip_addr, &datagram.from.id);
        if !shared.core.deliver_datagram(from, datagram) {
            shared.drop_counted("overload");
        }
    }
}

/// Inbound cluster connections served at once; more wait in the listen backlog. Each may hold a
/// frame buffer of up to [`MAX_FRAME`], so this bounds that memory too.
const MAX_INBOUND: usize = 64;

async fn accept_frames(shared: Shared, tcp: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_INBOUND));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match tcp.accept().await {
            Ok((stream, from)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let tally = Tally::open(&shared.metrics, "in", "unauthenticated");
                tokio::spawn(async move {
                    serve_connection(shared, stream, from, tally).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one length-prefixed sealed frame; `None` on end of stream, timeout or bad input.
async fn read_frame(shared: &Shared, stream: &mut TcpStream) -> Option<Frame> {
    let read = async {
        let len = stream.read_u32().await.ok()? as usize;
        if len > MAX_FRAME + SEAL_OVERHEAD {
            shared.drop_counted("oversized");
            return None;
        }
        // Bounded above, so a lying length field cannot make us allocate more than a frame.
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await.ok()?;
        shared.count("frame", "in", len + 4);
        let plain = shared.open(&buf)?;
        match wire::decode_frame(&plain) {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::debug!(error = %e, "dropping an undecodable frame");
                shared.drop_counted("decode");
                None
            }
        }
    };
    tokio::time::timeout(IO_TIMEOUT, read).await.ok().flatten()
}

async fn write_frame(shared: &Shared, stream: &mut TcpStream, frame: &Frame) -> bool {
    let sealed = shared.sealer.seal(&wire::encode_frame(frame), wall_ms());
    let mut out = Vec::with_capacity(4 + sealed.len());
    out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
    out.extend_from_slice(&sealed);
    shared.count("frame", "out", out.len());
    matches!(
        tokio::time::timeout(IO_TIMEOUT, stream.write_all(&out)).await,
        Ok(Ok(()))
    )
}

async fn serve_connection(shared: Shared, mut stream: TcpStream, from: SocketAddr, tally: Tally) {
    let mut tally = Some(tally);
    while let Some(frame) = read_frame(&shared, &mut stream).await {
        if let Some(pending) = tally.take() {
            tally = Some(pending.promote("peer"));
        }
        if shared.faults.drops(&frame.from) {
            shared.drop_counted("fault");
            return;
        }
        match frame.body {
            FrameBody::Rumors(_) | FrameBody::Forget(_) => shared.core.deliver_frame(from, frame),
            FrameBody::SyncRequest(request) => {
                let sender = frame.from.clone();
                let Some(reply) = shared.core.sync_request(sender, request).await else {
                    return;
                };
                let frame = Frame {
                    from: shared.core.id().clone(),
                    body: FrameBody::SyncReply(reply),
                };
                if !write_frame(&shared, &mut stream, &frame).await {
                    return;
                }
            }
            FrameBody::SyncReply(_) => {
                shared.drop_counted("decode");
                return;
            }
        }
    }
}

async fn send_outbound(shared: Shared, mut outbound: mpsc::UnboundedReceiver<Outbound>) {
    // Open anti-entropy sessions: session id → the channel feeding its connection task.
    let mut sessions: HashMap<u64, mpsc::UnboundedSender<wire::Frame>> = HashMap::new();
    while let Some(message) = outbound.recv().await {
        match message {
            Outbound::Datagram {
                to,
                to_id,
                datagram,
            } => {
                if shared.blocked(to, to_id.as_ref()) {
                    shared.drop_counted("fault");
                    continue;
                }
                let sealed = shared
                    .sealer
                    .seal(&wire::encode_datagram(&datagram), wall_ms());
                shared.count("datagram", "out", sealed.len());
                if let Err(e) = shared.udp.send_to(&sealed, to).await {
                    tracing::debug!(%to, error = %e, "UDP send failed");
                }
            }
            Outbound::Frame { to, to_id, frame } => {
                if shared.blocked(to, to_id.as_ref()) {
                    shared.drop_counted("fault");
                    continue;
                }
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Some(mut stream) = connect(to).await {
                        let _tally = Tally::open(&shared.metrics, "out", "frames");
                        write_frame(&shared, &mut stream, &frame).await;
                    }
                });
            }
            Outbound::SyncRequest {
                session,
                to,
                to_id,
                frame,
            } => {
                if shared.blocked(to, Some(&to_id)) {
                    shared.drop_counted("fault");
                    shared.core.sync_reply(session, None);
                    continue;
                }
                let feed = sessions.entry(session).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(run_session(shared.clone(), session, to, rx));
                    tx
                });
                let _ = feed.send(frame);
            }
            Outbound::SyncDone { session } => {
                sessions.remove(&session);
            }
        }
    }
}

async fn connect(to: SocketAddr) -> Option<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    Some(stream)
}

/// One anti-entropy session's connection: each request from the core is written, its reply
/// read and handed back to the core, until the core ends the session.
async fn run_session(
    shared: Shared,
    session: u64,
    to: SocketAddr,
    mut requests: mpsc::UnboundedReceiver<Frame>,
) {
    let Some(mut stream) = connect(to).await else {
        shared.core.sync_reply(session, None);
        return;
    };
    let _tally = Tally::open(&shared.metrics, "out", "sync");
    while let Some(request) = requests.recv().await {
        let reply = if write_frame(&shared, &mut stream, &request).await {
            read_frame(&shared, &mut stream).await
        } else {
            None
        };
        match reply {
            Some(Frame {
                body: FrameBody::SyncReply(reply),
                ..
            }) => shared.core.sync_reply(session, reply),
            _ => {
                shared.core.sync_reply(session, None);
                return;
            }
        }
    }
}
