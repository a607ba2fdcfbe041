//! Cluster frames on a TCP stream, end to end: encode, seal, frame and write; read (holding
//! memory only for bytes that arrived), open, decode. Counts the traffic and every frame it
//! drops, with its reason. Makes no decision about a connection: callers choose deadlines and
//! what to do when a frame does not come.

use super::framing::{self, FrameError};
use super::seal::{SealError, Sealer};
use super::versions::PeerVersions;
use crate::clock::NodeId;
use crate::metrics::{DropLabels, Metrics, TrafficLabels};
use crate::runtime::wall_ms;
use crate::wire::{self, Frame, MAX_FRAME};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Sealing adds a nonce and a tag (and the sender's clock) to every message.
pub const SEAL_OVERHEAD: usize = 24 + 16 + 8;

/// Why no frame was read.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed the stream between frames.
    Closed,
    /// The deadline passed with no byte of a new frame: the connection was idle.
    Quiet,
    /// A frame was dropped (already counted with its reason).
    Dropped,
}

/// Seals, frames and counts; cheap to clone.
#[derive(Clone)]
pub struct SealedFrames {
    sealer: Sealer,
    metrics: Arc<Metrics>,
    /// When traffic that failed authentication was last logged, and how much failed since.
    auth_log: Arc<Mutex<(Option<Instant>, u64)>>,
    /// The codec version each peer speaks, learned from what it sends.
    versions: PeerVersions,
}

/// Traffic failing authentication is logged at most this often.
const AUTH_LOG_EVERY: Duration = Duration::from_secs(10);

impl SealedFrames {
    pub fn new(sealer: Sealer, metrics: Arc<Metrics>) -> Self {
        SealedFrames {
            sealer,
            metrics,
            auth_log: Arc::default(),
            versions: PeerVersions::default(),
        }
    }

    pub fn versions(&self) -> &PeerVersions {
        &self.versions
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts one message of `kind` (`datagram`, `frame`) in `direction` (`in`, `out`).
    pub fn count(&self, kind: &'static str, direction: &'static str, bytes: usize) {
        let labels = TrafficLabels { kind, direction };
        self.metrics.cluster_messages.get_or_create(&labels).inc();
        self.metrics
            .cluster_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);
    }

    /// Counts a dropped input (or an outgoing message that could not leave) by reason.
    pub fn drop_counted(&self, reason: &'static str) {
        self.metrics
            .cluster_dropped
            .get_or_create(&DropLabels { reason })
            .inc();
    }

    /// Opens a sealed message from `from` (when known), counting a failure.
    pub fn open(&self, bytes: &[u8], from: Option<SocketAddr>) -> Option<Vec<u8>> {
        self.open_or_stale(bytes, from).ok()
    }

    /// Opens a sealed message from `from` (when known), counting a failure; an authentic but
    /// stale one is handed back with the time its sender sealed it.
    pub fn open_or_stale(
        &self,
        bytes: &[u8],
        from: Option<SocketAddr>,
    ) -> Result<Vec<u8>, Option<(u64, Vec<u8>)>> {
        match self.sealer.open(bytes, wall_ms()) {
            Ok(plain) => Ok(plain),
            Err(SealError::Unauthentic) => {
                self.drop_counted("auth");
                self.log_unauthentic(from);
                Err(None)
            }
            Err(SealError::Stale { sent_ms, payload }) => {
                self.drop_counted("stale");
                Err(Some((sent_ms, payload)))
            }
        }
    }

    /// Logs traffic that failed authentication, naming its source, at most once per
    /// [`AUTH_LOG_EVERY`] (with how much failed since the last line).
    #[allow(clippy::disallowed_methods)] // the driver's own log pacing, not protocol time
    fn log_unauthentic(&self, from: Option<SocketAddr>) {
        let mut log = self.auth_log.lock().unwrap_or_else(|e| e.into_inner());
        log.1 += 1;
        let now = Instant::now();
        if log.0.is_some_and(|last| now < last + AUTH_LOG_EVERY) {
            return;
        }
        let failed = std::mem::take(&mut log.1);
        log.0 = Some(now);
        let from = from.map_or_else(|| "a peer".to_string(), |a| a.to_string());
        tracing::warn!(%from, failed, "dropped cluster traffic that failed authentication: a node with another cluster key (or none), or garbage");
    }

    /// Reads one frame that must be complete by `deadline`; `heard` is called whenever bytes
    /// arrive. A frame cut short, oversized, late once started, unauthentic or undecodable is
    /// dropped and counted.
    pub async fn read<S: AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        from: Option<SocketAddr>,
        deadline: Instant,
        mut heard: impl FnMut(),
    ) -> Result<Frame, Ended> {
        let mut body = Vec::new();
        let mut started = false;
        let limit = MAX_FRAME + SEAL_OVERHEAD;
        let read = framing::read_frame(stream, limit, &mut body, |_| {
            started = true;
            heard();
        });
        let outcome = tokio::time::timeout_at(deadline, read).await;
        let reason = match outcome {
            Ok(Ok(())) => return self.decode(&body, from),
            Err(_elapsed) if !started => return Err(Ended::Quiet),
            Err(_elapsed) => "timeout",
            Ok(Err(FrameError::Closed)) => return Err(Ended::Closed),
            Ok(Err(FrameError::Io(_))) if !started => return Err(Ended::Closed),
            Ok(Err(FrameError::Truncated | FrameError::Io(_))) => "truncated",
            Ok(Err(FrameError::Oversized(_))) => "oversized",
        };
        self.drop_counted(reason);
        Err(Ended::Dropped)
    }

    fn decode(&self, sealed: &[u8], from: Option<SocketAddr>) -> Result<Frame, Ended> {
        self.count("frame", "in", sealed.len() + framing::HEADER);
        let plain = self.open(sealed, from).ok_or(Ended::Dropped)?;
        let (version, frame) = wire::decode_frame_versioned(&plain).map_err(|e| {
            tracing::debug!(error = %e, "dropping an undecodable frame");
            self.drop_counted("decode");
            Ended::Dropped
        })?;
        self.versions.heard(&frame.from, version);
        Ok(frame)
    }

    /// `frame` encoded in the version `to` speaks (this build's when unknown); `None`, counted,
    /// when that version has no form for it (an older peer cannot take it).
    pub fn encode(&self, frame: &Frame, to: Option<&NodeId>) -> Option<Vec<u8>> {
        let version = to
            .and_then(|peer| self.versions.of(peer))
            .unwrap_or(wire::VERSION);
        match wire::encode_frame_as(frame, version) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::debug!(error = %e, "a frame the peer's codec version cannot carry");
                self.drop_counted("version");
                None
            }
        }
    }

    /// Seals and writes one frame in the version `to` speaks, giving up after `timeout`;
    /// `false` when it could not be written (the connection is then unusable) or has no form in
    /// that version.
    pub async fn write<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        frame: &Frame,
        to: Option<&NodeId>,
        timeout: Duration,
    ) -> bool {
        match self.encode(frame, to) {
            Some(encoded) => self.write_encoded(stream, &encoded, timeout).await,
            None => false,
        }
    }

    /// Seals and writes one frame already encoded ([`SealedFrames::encode`]).
    pub async fn write_encoded<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        encoded: &[u8],
        timeout: Duration,
    ) -> bool {
        let sealed = self.sealer.seal(encoded, wall_ms());
        let out = framing::frame_bytes(&sealed);
        self.count("frame", "out", out.len());
        matches!(
            tokio::time::timeout(timeout, stream.write_all(&out)).await,
            Ok(Ok(()))
        )
    }
}
