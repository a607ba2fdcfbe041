//! Deadlines on one HTTP connection's socket: a request head must arrive whole within the header
//! timeout (so half a request cannot hold a connection slot for ever), and a connection with no
//! request in progress is closed after the idle timeout. The connection's service marks when a
//! request is being handled ([`RequestPhase`]); [`DeadlineIo`] turns a missed deadline into an
//! I/O error, on which hyper drops the connection. Bodies have their own timeout
//! (`api::body`); a request being handled has none here. Owns no socket policy beyond that.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const HEAD: u8 = 0;
const HANDLING: u8 = 1;
const IDLE: u8 = 2;

/// Where a connection is between requests, shared by its socket and its service.
#[derive(Clone, Debug)]
pub struct RequestPhase(Arc<AtomicU8>);

impl RequestPhase {
    /// A new connection waits for its first request head.
    pub fn new() -> Self {
        RequestPhase(Arc::new(AtomicU8::new(HEAD)))
    }

    /// A request head arrived: its handler runs without a deadline here.
    pub fn handling(&self) {
        self.0.store(HANDLING, Ordering::Relaxed);
    }

    /// The handler answered: the connection is idle until the next request's first byte.
    pub fn answered(&self) {
        self.0.store(IDLE, Ordering::Relaxed);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for RequestPhase {
    fn default() -> Self {
        Self::new()
    }
}

/// The two deadlines enforced by [`DeadlineIo`].
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// From a connection's first byte of a request (or its accept) to the end of that head.
    pub header: Duration,
    /// From an answer to the next request's first byte; it also bounds writing the answer to a
    /// client that does not read it.
    pub idle: Duration,
}

/// A socket whose reads and writes fail with `TimedOut` once the current deadline has passed.
pub struct DeadlineIo<T> {
    inner: T,
    deadlines: Deadlines,
    phase: RequestPhase,
    /// The phase `timer` was last set for.
    timed: u8,
    timer: Pin<Box<Sleep>>,
}

impl<T> DeadlineIo<T> {
    pub fn new(inner: T, deadlines: Deadlines, phase: RequestPhase) -> Self {
        DeadlineIo {
            inner,
            deadlines,
            timed: phase.get(),
            phase,
            timer: Box::pin(tokio::time::sleep(deadlines.header)),
        }
    }

    fn restart(&mut self, phase: u8) {
        self.timed = phase;
        let limit = match phase {
            HEAD => self.deadlines.header,
            _ => self.deadlines.idle,
        };
        self.timer.as_mut().reset(Instant::now() + limit);
    }

    /// Arms the timer for the current phase, so that its deadline wakes the connection, and gives
    /// an error once that deadline has passed. Called on every poll: after an answer, hyper may
    /// write and flush it and then wait on a read it registered while the request was handled,
    /// so the idle deadline must be armed by the write.
    fn overdue(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let phase = self.phase.get();
        if phase == HANDLING {
            self.timed = HANDLING;
            return None;
        }
        if phase != self.timed {
            self.restart(phase);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        let what = if phase == HEAD {
            "request head not received within the header timeout"
        } else {
            "connection idle past the idle timeout"
        };
        Some(io::Error::new(io::ErrorKind::TimedOut, what))
    }

    /// `result`, or the deadline's error in place of waiting any longer.
    fn within_deadline<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match (self.overdue(cx), result) {
            (Some(e), Poll::Pending) => Poll::Ready(Err(e)),
            (_, result) => result,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        // The first bytes after an answer start the next request's head.
        let got_bytes = matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        if got_bytes && this.phase.get() == IDLE {
            this.phase.0.store(HEAD, Ordering::Relaxed);
        }
        this.within_deadline(cx, read)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        self.within_deadline(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        self.within_deadline(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        self.within_deadline(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: Deadlines = Deadlines {
        header: Duration::from_millis(100),
        idle: Duration::from_millis(1000),
    };

    /// A timer never fires early; it may fire late on a busy machine.
    fn assert_after(elapsed: Duration, limit: Duration) {
        assert!(
            elapsed >= limit && elapsed < limit + Duration::from_secs(5),
            "{elapsed:?} vs {limit:?}"
        );
    }

    async fn read_some(io: &mut DeadlineIo<tokio::io::DuplexStream>) -> io::Result<usize> {
        let mut buf = [0u8; 64];
        io.read(&mut buf).await
    }

    #[tokio::test]
    async fn a_head_that_does_not_arrive_in_time_is_an_error() {
        let (mut client, server) = tokio::io::duplex(1024);
        let started = Instant::now();
        let mut io = DeadlineIo::new(server, LIMITS, RequestPhase::new());
        client.write_all(b"GET / HT").await.unwrap();
        assert_eq!(read_some(&mut io).await.unwrap(), 8);
        let err = read_some(&mut io).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_after(started.elapsed(), LIMITS.header);
        drop(client);
    }

    #[tokio::test]
    async fn a_request_being_handled_has_no_deadline_and_idle_time_has_its_own() {
        let (mut client, server) = tokio::io::duplex(1024);
        let phase = RequestPhase::new();
        let mut io = DeadlineIo::new(server, LIMITS, phase.clone());
        phase.handling();
        // Later than both timeouts: a slow handler (or body) is not cut off here.
        let late = tokio::spawn(async move {
            tokio::time::sleep(LIMITS.idle + LIMITS.header).await;
            client.write_all(b"body").await.unwrap();
            client
        });
        assert_eq!(read_some(&mut io).await.unwrap(), 4);
        let client = late.await.unwrap();
        phase.answered();
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        // Idle: closed after the idle timeout, not the shorter header timeout.
        let started = Instant::now();
        let err = read_some(&mut io).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_after(started.elapsed(), LIMITS.idle);
        drop(client);
    }

    /// hyper's order within one poll of a connection: the read registered while the request was
    /// handled, then the answer written and flushed, then nothing until a wake-up. Only the idle
    /// timer can wake it, so writing the answer must arm it.
    #[tokio::test]
    async fn writing_an_answer_arms_the_idle_deadline_without_another_read() {
        let (client, server) = tokio::io::duplex(1024);
        let phase = RequestPhase::new();
        let mut io = DeadlineIo::new(server, LIMITS, phase.clone());
        phase.handling();
        let started = Instant::now();
        let mut answered = false;
        let mut buf = [0u8; 64];
        let idle = std::future::poll_fn(|cx| {
            let mut read_buf = ReadBuf::new(&mut buf);
            let read = Pin::new(&mut io).poll_read(cx, &mut read_buf);
            if answered {
                return read;
            }
            assert!(read.is_pending());
            phase.answered();
            let written = Pin::new(&mut io).poll_write(cx, b"HTTP/1.1 200 OK\r\n\r\n");
            assert!(matches!(written, Poll::Ready(Ok(_))));
            assert!(matches!(
                Pin::new(&mut io).poll_flush(cx),
                Poll::Ready(Ok(()))
            ));
            answered = true;
            Poll::Pending
        });
        let result = tokio::time::timeout(LIMITS.idle * 5, idle)
            .await
            .expect("the idle deadline woke the connection");
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_after(started.elapsed(), LIMITS.idle);
        drop(client);
    }

    #[tokio::test]
    async fn the_first_byte_after_an_answer_starts_the_header_deadline() {
        let (mut client, server) = tokio::io::duplex(1024);
        let phase = RequestPhase::new();
        let mut io = DeadlineIo::new(server, LIMITS, phase.clone());
        phase.handling();
        phase.answered();
        client.write_all(b"G").await.unwrap();
        assert_eq!(read_some(&mut io).await.unwrap(), 1);
        let started = Instant::now();
        let err = read_some(&mut io).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let elapsed = started.elapsed();
        assert_after(elapsed, LIMITS.header);
        assert!(
            elapsed < LIMITS.idle,
            "{elapsed:?}: the header deadline applies"
        );
        drop(client);
    }
}
