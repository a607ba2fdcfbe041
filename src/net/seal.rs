//! The cluster key: every datagram and frame is sealed with XChaCha20-Poly1305 under the
//! 32-byte key from `--cluster-key-file`, with a fresh random 24-byte nonce per message. The
//! sealed plaintext starts with the sender's wall-clock time, and [`Sealer::open`] rejects
//! messages outside a freshness window, so a captured message replayed later is refused (an AEAD
//! with random nonces authenticates but gives no freshness by itself). Within the window, the
//! protocol is idempotent: a replayed ping or rumor changes nothing.
//!
//! Without a key, messages pass through unchanged (the node logs once that cluster traffic is
//! unauthenticated).

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const NONCE: usize = 24;
/// How far a sealed message's timestamp may be from the receiver's clock.
pub const FRESHNESS_MS: u64 = 60_000;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("message failed authentication")]
    Unauthentic,
    /// Authentic, but sealed at `sent_ms`, outside the freshness window: replayed, or from a
    /// node whose clock is far from this one's. The payload is handed back so that the
    /// receiver can tell which (it is never merged).
    #[error("message is stale or from the future (replayed, or a clock is off?)")]
    Stale { sent_ms: u64, payload: Vec<u8> },
}

/// Seals and opens cluster messages; a no-op without a key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<XChaCha20Poly1305>,
}

impl Sealer {
    pub fn new(key: Option<[u8; 32]>) -> Self {
        Sealer {
            cipher: key.map(|k| XChaCha20Poly1305::new(&k.into())),
        }
    }

    pub fn is_keyed(&self) -> bool {
        self.cipher.is_some()
    }

    /// Seals `payload` sent at wall time `now_ms`.
    pub fn seal(&self, payload: &[u8], now_ms: u64) -> Vec<u8> {
        let Some(cipher) = &self.cipher else {
            return payload.to_vec();
        };
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut plain = Vec::with_capacity(8 + payload.len());
        plain.extend_from_slice(&now_ms.to_le_bytes());
        plain.extend_from_slice(payload);
        // Encryption into a Vec only fails on absurd lengths, which frames never reach.
        let sealed = cipher.encrypt(&nonce, plain.as_slice()).unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a sealed message received at wall time `now_ms`.
    pub fn open(&self, message: &[u8], now_ms: u64) -> Result<Vec<u8>, SealError> {
        let Some(cipher) = &self.cipher else {
            return Ok(message.to_vec());
        };
        if message.len() < NONCE {
            return Err(SealError::Unauthentic);
        }
        let (nonce, sealed) = message.split_at(NONCE);
        let plain = cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| SealError::Unauthentic)?;
        let (sent, payload) = plain.split_at_checked(8).ok_or(SealError::Unauthentic)?;
        let sent = u64::from_le_bytes(sent.try_into().map_err(|_| SealError::Unauthentic)?);
        if sent.abs_diff(now_ms) > FRESHNESS_MS {
            return Err(SealError::Stale {
                sent_ms: sent,
                payload: payload.to_vec(),
            });
        }
        Ok(payload.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_messages_open_only_with_the_same_key_and_while_fresh() {
        let a = Sealer::new(Some([7; 32]));
        let b = Sealer::new(Some([8; 32]));
        let sealed = a.seal(b"hello", 1_000_000);
        assert_ne!(&sealed[NONCE..], b"hello");
        assert_eq!(a.open(&sealed, 1_000_500).unwrap(), b"hello");
        assert_eq!(b.open(&sealed, 1_000_500), Err(SealError::Unauthentic));
        assert_eq!(
            a.open(&sealed, 1_000_000 + FRESHNESS_MS + 1),
            Err(SealError::Stale {
                sent_ms: 1_000_000,
                payload: b"hello".to_vec()
            })
        );
        assert_ne!(
            a.seal(b"hello", 1),
            a.seal(b"hello", 1),
            "fresh nonce per message"
        );
    }

    #[test]
    fn tampered_truncated_and_plain_messages_are_refused() {
        let a = Sealer::new(Some([7; 32]));
        let mut sealed = a.seal(b"hello", 5);
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(a.open(&sealed, 5), Err(SealError::Unauthentic));
        assert_eq!(a.open(&sealed[..10], 5), Err(SealError::Unauthentic));
        assert_eq!(a.open(b"", 5), Err(SealError::Unauthentic));
        let plain = Sealer::new(None);
        assert_eq!(
            a.open(&plain.seal(b"hello", 5), 5),
            Err(SealError::Unauthentic)
        );
        assert_eq!(plain.open(b"hello", 5).unwrap(), b"hello");
    }
}
