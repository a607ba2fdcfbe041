//! Inbound cluster connections: the accept loop and one task per connection. The loop never
//! waits for room: every connection is admitted as pending (see [`super::admission`]) and must
//! deliver a complete, authentic frame within [`HANDSHAKE`], or it is closed and counted
//! (`timeout`; `overload` when a newer stranger evicted it). A connection that authenticated is
//! a peer's: it may stay idle up to [`PEER_IDLE`] between frames (a pooled link sending rumors
//! now and then, an anti-entropy session between requests), and waits as long as the core takes
//! to answer a request, up to [`ANSWER`]. Frames go to the core as they are; no protocol
//! decision is made here.

use super::admission::{Admission, Limits, Pending};
use super::sealed::Ended;
use super::tally::Tally;
use super::transport::Shared;
use crate::wire::{Frame, FrameBody};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A new connection's first complete, authentic frame must arrive within this. Loopback and
/// LAN peers deliver a first frame in milliseconds (a full 8 MiB frame takes under a second at
/// 100 Mbit/s).
pub const HANDSHAKE: Duration = Duration::from_secs(5);
/// A peer's connection may wait this long for its next frame; then it is closed quietly. Longer
/// than the sender's pooled-link idle timeout, so that senders close first.
pub const PEER_IDLE: Duration = Duration::from_secs(60);
/// The core's answer to an anti-entropy request, and writing it, may take this long.
pub const ANSWER: Duration = Duration::from_secs(30);

pub async fn accept(shared: Shared, tcp: TcpListener) {
    let admission = Admission::new(Limits::DEFAULT);
    loop {
        match tcp.accept().await {
            Ok((stream, from)) => {
                let _ = stream.set_nodelay(true);
                let pending = admission.admit();
                let tally = Tally::open(shared.frames.metrics(), "in", "unauthenticated");
                tokio::spawn(serve(shared.clone(), stream, from, pending, tally));
            }
            Err(e) => {
                // Out of file descriptors, most likely: pending connections end within the
                // handshake deadline and free theirs.
                tracing::warn!(error = %e, "cluster TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(
    shared: Shared,
    mut stream: TcpStream,
    from: SocketAddr,
    pending: Pending,
    tally: Tally,
) {
    let deadline = Instant::now() + HANDSHAKE;
    let first = tokio::select! {
        frame = shared.frames.read(&mut stream, Some(from), deadline, || pending.heard()) => frame,
        () = pending.evicted() => {
            shared.frames.drop_counted("overload");
            return;
        }
    };
    let mut frame = match first {
        Ok(frame) => frame,
        Err(Ended::Quiet) => {
            shared.frames.drop_counted("timeout");
            return;
        }
        Err(Ended::Closed | Ended::Dropped) => return,
    };
    let Some(_place) = pending.authenticate() else {
        shared.frames.drop_counted("overload");
        return;
    };
    let _tally = tally.promote("peer");
    while handle(&shared, &mut stream, from, frame).await {
        let deadline = Instant::now() + PEER_IDLE;
        frame = match shared
            .frames
            .read(&mut stream, Some(from), deadline, || ())
            .await
        {
            Ok(frame) => frame,
            Err(_) => return,
        };
    }
}

/// Hands one authentic frame to the core (and writes the answer to a request); `false` when
/// the connection must close.
async fn handle(shared: &Shared, stream: &mut TcpStream, from: SocketAddr, frame: Frame) -> bool {
    if shared.faults.drops(&frame.from) {
        shared.frames.drop_counted("fault");
        // A one-way frame is simply lost; a request's connection closes, so its sender gives
        // up on the answer at once.
        return !matches!(frame.body, FrameBody::SyncRequest(_));
    }
    match frame.body {
        FrameBody::Rumors(_)
        | FrameBody::Forget(_)
        | FrameBody::Replicate(_)
        | FrameBody::Replicated { .. }
        | FrameBody::ReadRequest { .. }
        | FrameBody::ReadReply { .. }
        | FrameBody::ReadRepair { .. } => {
            if !shared.core.deliver_frame(from, frame) {
                // The core's cluster queue is full: anti-entropy repairs what this carried.
                shared.frames.drop_counted("overload");
            }
            true
        }
        FrameBody::SyncRequest(request) => {
            let peer = frame.from;
            let asked = shared.core.sync_request(peer.clone(), request);
            let answer = match tokio::time::timeout(ANSWER, asked).await {
                Ok(Some(answer)) => answer,
                // The core is shutting down.
                Ok(None) => return false,
                Err(_) => {
                    shared.frames.drop_counted("timeout");
                    return false;
                }
            };
            let frame = Frame {
                from: shared.core.id().clone(),
                body: FrameBody::SyncReply(answer),
            };
            // An injected delay holds back answers too: every outgoing cluster message.
            let delay = shared.faults.delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            shared
                .frames
                .write(stream, &frame, Some(&peer), ANSWER)
                .await
        }
        FrameBody::SyncReply(_) => {
            shared.frames.drop_counted("decode");
            false
        }
    }
}
