//! Length-prefixed frames on a byte stream: a 4-byte big-endian length, then that many bytes.
//! Reading holds memory for the bytes that have actually arrived, never for the declared length
//! (a peer that declares 8 MiB and sends ten bytes costs a few KiB), and reports every byte read
//! so that the caller can tell a quiet connection from a slow one. Knows nothing of sealing,
//! the codec, deadlines or sockets: callers wrap it in their own timeouts.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of the length prefix.
pub const HEADER: usize = 4;
/// The first allocation for a frame's body; the buffer then doubles as bytes arrive, up to the
/// declared length.
const FIRST_CHUNK: usize = 8 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended cleanly between frames (not an error of the peer).
    #[error("end of stream")]
    Closed,
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("declared frame of {0} bytes exceeds the limit")]
    Oversized(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The bytes to send for one frame: the length prefix, then `body`.
pub fn frame_bytes(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads one frame's body into `body` (cleared first), refusing a declared length above `max`.
/// `heard` is called with the number of bytes of every read, header included. On success `body`
/// holds exactly the frame; on an error or when the caller gives up (drops the future), it holds
/// what had arrived, in a buffer at most about twice that size.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    body: &mut Vec<u8>,
    mut heard: impl FnMut(usize),
) -> Result<(), FrameError> {
    body.clear();
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = reader.read(&mut header[got..]).await?;
        if n == 0 {
            return Err(match got {
                0 => FrameError::Closed,
                _ => FrameError::Truncated,
            });
        }
        heard(n);
        got += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::Oversized(len));
    }
    while body.len() < len {
        if body.len() == body.capacity() {
            let more = body.len().max(FIRST_CHUNK).min(len - body.len());
            body.reserve_exact(more);
        }
        let room = (body.capacity() - body.len()).min(len - body.len());
        let n = (&mut *reader).take(room as u64).read_buf(body).await?;
        if n == 0 {
            return Err(FrameError::Truncated);
        }
        heard(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    const MAX: usize = 8 << 20;

    #[tokio::test]
    async fn a_declared_length_costs_nothing_until_its_bytes_arrive() {
        let (mut peer, mut stream) = tokio::io::duplex(64 << 10);
        peer.write_all(&(MAX as u32).to_be_bytes()).await.unwrap();
        peer.write_all(&[7; 1000]).await.unwrap();
        let mut body = Vec::new();
        let mut heard = 0;
        let read = read_frame(&mut stream, MAX, &mut body, |n| heard += n);
        // The peer stops sending: the read never completes.
        assert!(tokio::time::timeout(Duration::from_millis(50), read)
            .await
            .is_err());
        assert_eq!(body.len(), 1000);
        assert!(body.capacity() <= FIRST_CHUNK, "{}", body.capacity());
        assert_eq!(heard, HEADER + 1000);
    }

    #[tokio::test]
    async fn the_buffer_grows_with_the_bytes_up_to_the_declared_length() {
        let len = 3_000_001;
        let frame: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let (mut peer, mut stream) = tokio::io::duplex(1 << 20);
        let sent = frame.clone();
        let writer = tokio::spawn(async move {
            let bytes = frame_bytes(&sent);
            for chunk in bytes.chunks(100_000) {
                peer.write_all(chunk).await.unwrap();
            }
            peer
        });
        let mut body = Vec::new();
        let mut heard = 0;
        read_frame(&mut stream, MAX, &mut body, |n| heard += n)
            .await
            .unwrap();
        assert_eq!(body, frame);
        assert_eq!(body.capacity(), len, "never more than the declared length");
        assert_eq!(heard, HEADER + len);
        drop(writer.await.unwrap());
        assert!(matches!(
            read_frame(&mut stream, MAX, &mut body, |_| ()).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn streams_cut_inside_a_frame_are_truncated_and_long_lengths_oversized() {
        let cases: [(&[u8], &str); 4] = [
            (&[0, 0], "truncated"),
            (&[0, 0, 0, 9, 1, 2, 3], "truncated"),
            (&[], "closed"),
            (&[1, 0, 0, 0, 1, 2, 3], "oversized"),
        ];
        for (bytes, expected) in cases {
            let mut reader = bytes;
            let mut body = Vec::new();
            let got = match read_frame(&mut reader, 1 << 20, &mut body, |_| ()).await {
                Err(FrameError::Truncated) => "truncated",
                Err(FrameError::Closed) => "closed",
                Err(FrameError::Oversized(n)) => {
                    assert_eq!(n, 1 << 24);
                    assert!(
                        body.capacity() == 0,
                        "nothing allocated for an oversized frame"
                    );
                    "oversized"
                }
                other => panic!("{bytes:?}: {other:?}"),
            };
            assert_eq!(got, expected, "{bytes:?}");
        }
        let mut two = [frame_bytes(b"ab"), frame_bytes(b"")].concat();
        two.extend_from_slice(&frame_bytes(b"xyz"));
        let mut reader = two.as_slice();
        let mut body = Vec::new();
        for expected in [&b"ab"[..], b"", b"xyz"] {
            read_frame(&mut reader, 16, &mut body, |_| ())
                .await
                .unwrap();
            assert_eq!(body, expected);
        }
    }
}
