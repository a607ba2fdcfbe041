//! Pooled one-way connections: every one-way frame (rumors too large for a datagram, `Forget`)
//! to a peer goes through one persistent connection to that peer, fed by a bounded queue and
//! written by one task. Queues are bounded in frames per peer and in bytes over all peers; a
//! frame that does not fit is dropped and counted (`queue_full`): anti-entropy repairs what a
//! dropped rumor carried. A peer that cannot be reached is retried after a
//! backoff that doubles up to a limit, and frames for it meanwhile are dropped and counted
//! (`unreachable`). A link with nothing to send for a while closes, and its task ends. The pool
//! never decides what to send or to whom; it never reads from the connection except to notice
//! that the peer closed it.

use super::sealed::SealedFrames;
use super::tally::Tally;
use crate::clock::NodeId;
use crate::wire::Frame;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

/// How links behave; [`Settings::DEFAULT`] in production.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Frames waiting for one peer's connection; more are dropped.
    pub queue: usize,
    /// Encoded bytes of the frames waiting, over all peers; more are dropped. A frame of rumors
    /// holds one value (at most the value limit, 1 MiB by default).
    pub queued_bytes: usize,
    /// Links (peers with a connection or a queue) at once; frames for one more peer are dropped.
    pub links: usize,
    /// A link with nothing to send for this long closes. Shorter than the receiver's idle
    /// timeout, so that the sender is the one that closes.
    pub idle: Duration,
    /// Waits before a new connection attempt after a failure: the first, and the most.
    pub backoff: (Duration, Duration),
    /// Connecting gives up after this long.
    pub connect: Duration,
    /// Writing one frame gives up after this long.
    pub write: Duration,
}

impl Settings {
    pub const DEFAULT: Settings = Settings {
        queue: 64,
        queued_bytes: 64 << 20,
        links: 256,
        idle: Duration::from_secs(30),
        backoff: (Duration::from_millis(100), Duration::from_secs(10)),
        connect: Duration::from_secs(2),
        write: Duration::from_secs(30),
    };
}

/// The links, by peer address. Owned by the one task that dispatches outbound messages.
pub struct Pool {
    frames: SealedFrames,
    settings: Settings,
    links: HashMap<SocketAddr, mpsc::Sender<Queued>>,
}

/// A frame waiting for its connection, with its encoded size (counted in
/// `hearsay_cluster_frames_queued_bytes` until the link takes it).
struct Queued {
    /// The frame, encoded in the version its peer speaks.
    encoded: Vec<u8>,
    size: i64,
}

impl Pool {
    pub fn new(frames: SealedFrames, settings: Settings) -> Pool {
        Pool {
            frames,
            settings,
            links: HashMap::new(),
        }
    }

    /// Queues `frame` for `to` (member `to_id`, whose codec version it is encoded in),
    /// starting a link if there is none; never waits.
    pub fn send(&mut self, to: SocketAddr, to_id: Option<&NodeId>, frame: Frame) {
        let queued_bytes = &self.frames.metrics().cluster_frames_queued_bytes;
        let Some(encoded) = self.frames.encode(&frame, to_id) else {
            return;
        };
        let size = encoded.len() as i64;
        // Only this task adds to the gauge (links subtract), so checking then adding is exact
        // enough: the bound can only be undershot.
        if queued_bytes.get() + size > self.settings.queued_bytes as i64 {
            self.frames.drop_counted("queue_full");
            return;
        }
        let queued = Queued { encoded, size };
        let queued = match self.links.get(&to) {
            None => queued,
            Some(link) => match link.try_send(queued) {
                Ok(()) => {
                    queued_bytes.inc_by(size);
                    return;
                }
                Err(TrySendError::Full(_)) => {
                    self.frames.drop_counted("queue_full");
                    return;
                }
                // The link closed after being idle: start another.
                Err(TrySendError::Closed(queued)) => {
                    self.links.remove(&to);
                    queued
                }
            },
        };
        if self.links.len() >= self.settings.links {
            self.links.retain(|_, link| !link.is_closed());
            if self.links.len() >= self.settings.links {
                self.frames.drop_counted("overload");
                return;
            }
        }
        let (link, queue) = mpsc::channel(self.settings.queue.max(1));
        // A new channel with room for one frame at least.
        if link.try_send(queued).is_ok() {
            queued_bytes.inc_by(size);
        }
        tokio::spawn(run_link(self.frames.clone(), self.settings, to, queue));
        self.links.insert(to, link);
    }
}

/// True when the peer has closed a connection it never writes on.
fn closed_by_peer(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    !matches!(stream.try_read(&mut probe), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Connects to `to` within `timeout`, with Nagle's algorithm off (frames are written whole).
pub(super) async fn connect(to: SocketAddr, timeout: Duration) -> Option<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(to))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    Some(stream)
}

/// One peer's link: writes queued frames on one connection, opened when needed.
async fn run_link(
    frames: SealedFrames,
    settings: Settings,
    to: SocketAddr,
    mut queue: mpsc::Receiver<Queued>,
) {
    let mut conn: Option<(TcpStream, Tally)> = None;
    let mut backoff = settings.backoff.0;
    let mut retry_at: Option<Instant> = None;
    loop {
        let frame = match tokio::time::timeout(settings.idle, queue.recv()).await {
            Ok(Some(Queued { encoded, size })) => {
                frames.metrics().cluster_frames_queued_bytes.dec_by(size);
                encoded
            }
            // Closed and drained (the pool let go of the link, or it went idle below).
            Ok(None) => return,
            Err(_idle) => {
                // Refuse new frames (the pool starts another link for them), but write those
                // already queued before ending.
                queue.close();
                continue;
            }
        };
        if retry_at.is_some_and(|at| Instant::now() < at) {
            frames.drop_counted("unreachable");
            continue;
        }
        if conn.as_ref().is_some_and(|(s, _)| closed_by_peer(s)) {
            conn = None;
        }
        let stream = match &mut conn {
            Some((stream, _)) => stream,
            None => match connect(to, settings.connect).await {
                Some(stream) => {
                    retry_at = None;
                    backoff = settings.backoff.0;
                    let tally = Tally::open(frames.metrics(), "out", "frames");
                    &mut conn.insert((stream, tally)).0
                }
                None => {
                    tracing::debug!(%to, ?backoff, "cannot connect to a peer for frames");
                    frames.drop_counted("unreachable");
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(settings.backoff.1);
                    continue;
                }
            },
        };
        if !frames.write_encoded(stream, &frame, settings.write).await {
            frames.drop_counted("unreachable");
            conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::NodeId;
    use crate::metrics::{ConnectionLabels, DropLabels, Metrics};
    use crate::net::framing;
    use crate::net::seal::Sealer;
    use crate::wire::FrameBody;
    use std::sync::Arc;
    use tokio::net::TcpListener;

    fn frames() -> SealedFrames {
        SealedFrames::new(Sealer::new(Some([3; 32])), Arc::new(Metrics::new()))
    }

    fn frame(forget: usize) -> Frame {
        let value = crate::wire::ForgetValue {
            key: crate::store::StoreKey::kv("k"),
            timestamp: crate::clock::Timestamp::default(),
            node: NodeId::new("n1").unwrap(),
        };
        Frame {
            from: NodeId::new("n1").unwrap(),
            body: FrameBody::Forget(vec![value; forget]),
        }
    }

    fn dropped(frames: &SealedFrames, reason: &'static str) -> u64 {
        frames
            .metrics()
            .cluster_dropped
            .get_or_create(&DropLabels { reason })
            .get()
    }

    fn open_links(frames: &SealedFrames) -> i64 {
        let labels = ConnectionLabels {
            direction: "out",
            role: "frames",
        };
        frames
            .metrics()
            .cluster_connections
            .get_or_create(&labels)
            .get()
    }

    /// Reads frames from every accepted connection; returns the listener's address and a
    /// channel of (connection number, frame size).
    async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<(usize, usize)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for n in 0.. {
                let (mut s, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut body = Vec::new();
                    while framing::read_frame(&mut s, usize::MAX, &mut body, |_| ())
                        .await
                        .is_ok()
                    {
                        let _ = tx.send((n, body.len()));
                    }
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn frames_to_one_peer_share_one_connection_until_it_goes_idle() {
        let (addr, mut received) = receiver().await;
        let frames = frames();
        let settings = Settings {
            idle: Duration::from_millis(200),
            ..Settings::DEFAULT
        };
        let mut pool = Pool::new(frames.clone(), settings);
        for round in 0..2 {
            for _ in 0..50 {
                pool.send(addr, None, frame(3));
            }
            for _ in 0..50 {
                let (connection, _) = received.recv().await.unwrap();
                assert_eq!(connection, round, "one connection per round");
            }
            assert_eq!(open_links(&frames), 1);
            // Idle past the link's timeout: it closes, and the next frame opens another.
            tokio::time::timeout(Duration::from_secs(10), async {
                while open_links(&frames) != 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("the idle link closes");
        }
        assert_eq!(dropped(&frames, "queue_full"), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        // A peer that accepts and never reads: the link's writes stall once the socket buffers
        // are full, and then its queue fills.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(s);
        });
        let frames = frames();
        let settings = Settings {
            queue: 4,
            ..Settings::DEFAULT
        };
        let mut pool = Pool::new(frames.clone(), settings);
        let big = frame(40_000); // about 1 MB
        for _ in 0..200 {
            pool.send(addr, None, big.clone());
            tokio::task::yield_now().await;
        }
        let full = dropped(&frames, "queue_full");
        assert!(full >= 150, "only {full} of 200 frames dropped");
        assert!(full < 200);
        assert_eq!(pool.links.len(), 1);
        held.abort();
    }

    #[tokio::test]
    async fn queued_bytes_are_capped_over_all_peers() {
        // Two peers that never read.
        let mut peers = Vec::new();
        let mut held = Vec::new();
        for _ in 0..2 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            peers.push(listener.local_addr().unwrap());
            held.push(tokio::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                std::future::pending::<()>().await;
                drop(s);
            }));
        }
        let frames = frames();
        let budget = 3 << 20;
        let settings = Settings {
            queue: 64,
            queued_bytes: budget,
            ..Settings::DEFAULT
        };
        let mut pool = Pool::new(frames.clone(), settings);
        let big = frame(40_000); // about 1 MB
        let queued = &frames.metrics().cluster_frames_queued_bytes;
        for i in 0..100 {
            pool.send(peers[i % 2], None, big.clone());
            assert!(queued.get() <= budget as i64, "{} queued", queued.get());
            tokio::task::yield_now().await;
        }
        assert!(dropped(&frames, "queue_full") >= 50);
        for h in held {
            h.abort();
        }
    }

    #[tokio::test]
    async fn an_unreachable_peer_is_retried_after_a_backoff() {
        // A port with nothing listening.
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let frames = frames();
        let settings = Settings {
            backoff: (Duration::from_millis(300), Duration::from_secs(1)),
            ..Settings::DEFAULT
        };
        let mut pool = Pool::new(frames.clone(), settings);
        pool.send(addr, None, frame(1));
        // Wait until the first attempt failed.
        tokio::time::timeout(Duration::from_secs(10), async {
            while dropped(&frames, "unreachable") == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        // Within the backoff, frames are dropped without another attempt.
        let listener = TcpListener::bind(addr).await.unwrap();
        for _ in 0..10 {
            pool.send(addr, None, frame(1));
        }
        let mut body = Vec::new();
        let accepted = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                // After the backoff the next frame connects.
                pool.send(addr, None, frame(1));
                if let Ok(Ok((mut s, _))) =
                    tokio::time::timeout(Duration::from_millis(50), listener.accept()).await
                {
                    framing::read_frame(&mut s, usize::MAX, &mut body, |_| ())
                        .await
                        .unwrap();
                    return s;
                }
            }
        })
        .await;
        assert!(accepted.is_ok(), "the link reconnects after its backoff");
        assert!(dropped(&frames, "unreachable") >= 11);
    }
}
