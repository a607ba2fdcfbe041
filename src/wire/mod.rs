//! Cluster messages and their versioned codec. Pure: no sockets (the transport in `net/` moves
//! the bytes and seals them with the cluster key, and decides which version each peer is sent).
//!
//! Datagrams (UDP) carry probes, membership updates and small rumors, batched, under
//! [`MAX_DATAGRAM`] bytes. Frames (TCP, length-prefixed, at most [`MAX_FRAME`] bytes) carry
//! anti-entropy and rumors too large for a datagram. Every encoding starts with its codec version
//! byte, then postcard. A build speaks [`VERSION`] and accepts every version from
//! [`OLDEST_VERSION`] on, converting older shapes into the current types, so that during a rolling
//! upgrade a node understands the release before it ([`decode_datagram_versioned`] says which
//! version a peer spoke) and can answer it in that version ([`encode_datagram_as`],
//! [`encode_frame_as`]). The shapes of older versions live in submodules (`v2.rs`) and never
//! change; `docs/wire-versions.md` gives the policy and `tests/wire_versions.rs` pins every
//! version's bytes with fixtures.
//!
//! A decoder rejects other versions, truncated or trailing bytes, and garbage without panicking,
//! and never allocates what a length field claims before the bytes are there (postcard reads
//! lengths from the input it already holds, and frames are bounded before they are read).
//!
//! Owns the message types and their byte forms only: it must not touch what the messages mean
//! (membership, rumors, anti-entropy and the node decide that) nor any socket, clock or store.

use crate::clock::{NodeId, Timestamp};
use crate::gossip::rumor::Rumor;
use crate::gossip::sync::SyncMessage;
use crate::membership::{Member, SwimMessage};
use crate::store::StoreKey;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

mod v2;

/// The codec version this build speaks. Version 3 gave `SwimMessage::Ack` the answerer's clock.
pub const VERSION: u8 = 3;
/// The oldest codec version this build still decodes and can encode: version 2, the release
/// before [`VERSION`] (see `docs/wire-versions.md`).
pub const OLDEST_VERSION: u8 = v2::VERSION;

// The codec functions below decode and encode version 2 through `v2` and every other accepted
// version as the current types: that holds only while 2 and 3 are the accepted versions. A new
// VERSION keeps the shapes of the one it replaces in a submodule first (docs/wire-versions.md).
const _: () = assert!(OLDEST_VERSION == 2 && VERSION == 3);

/// Largest datagram payload sent (before sealing), sized to stay under a 1500-byte MTU with
/// IP/UDP headers and the sealing overhead.
pub const MAX_DATAGRAM: usize = 1_350;
/// Largest datagram accepted (sealed), with room for the sealing overhead.
pub const MAX_DATAGRAM_RECEIVED: usize = 1_472;
/// Largest frame accepted or sent.
pub const MAX_FRAME: usize = 8 << 20;
/// Largest encoded state of one key a node writes: half a frame, so that a state always travels
/// in one frame with its key and the message around it (a larger one could never replicate).
/// Caps `--max-value-bytes` and the size of a set.
pub const MAX_STATE_BYTES: usize = MAX_FRAME / 2;

/// One datagram: who sends it, and what it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datagram {
    /// The sender's own membership record (id, addresses, state, incarnation).
    pub from: Member,
    /// A probe message, if this datagram carries one.
    pub swim: Option<SwimMessage>,
    /// Piggybacked membership updates.
    pub updates: Vec<Member>,
    /// Piggybacked or pushed rumors.
    pub rumors: Vec<Rumor>,
    /// A pull request: what the sender has seen, on its probes when it fits; the receiver
    /// answers with the rumors the sender lacks (push-pull).
    pub pull: Option<crate::gossip::rumor::SeenSummary>,
}

/// One TCP frame's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameBody {
    /// Rumors too large for a datagram, pushed one way.
    Rumors(Vec<Rumor>),
    /// An anti-entropy request; the receiver answers on the same connection.
    SyncRequest(SyncRequest),
    /// The answer to a request (`None`: the responder refused it).
    SyncReply(Option<SyncAnswer>),
    /// Values the sender refused because they are older than a tombstone it has collected: the
    /// receiver drops its copy of each (key, timestamp, writer) it still holds unchanged.
    Forget(Vec<ForgetValue>),
    /// A write its origin waits for (`?w=`): merged like a rumor, and answered with
    /// [`FrameBody::Replicated`] once the merge is durable.
    Replicate(Rumor),
    /// The sender holds the write (`origin`, `seq`) durably.
    Replicated {
        origin: crate::clock::ReplicaId,
        seq: u64,
    },
    /// A read's request (`?r=`) for the receiver's state of `key`.
    ReadRequest { request: u64, key: StoreKey },
    /// The answer to [`FrameBody::ReadRequest`] (`None`: the sender holds nothing of the key),
    /// with the sender's collection horizon: a value no newer, for a key it lacks, is one it
    /// refuses as collected.
    ReadReply {
        request: u64,
        key: StoreKey,
        state: Option<crate::crdt::KeyState>,
        collected_through: Timestamp,
    },
    /// A read's merged state, sent to a member whose answer held less.
    ReadRepair {
        key: StoreKey,
        state: crate::crdt::KeyState,
    },
}

/// One request of an anti-entropy exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Sent with the first request of an exchange only.
    pub start: Option<SyncStart>,
    pub message: SyncMessage,
}

/// What the initiator of an exchange tells the responder once, for tombstone collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStart {
    /// The initiator's clock when the exchange started: the responder's clock moves past it, so
    /// every write the responder makes afterwards is newer.
    pub clock: Timestamp,
    /// Stability reports the initiator knows (its own included): node `n` reported holding every
    /// write with a timestamp up to `t`.
    pub stable: Vec<(NodeId, Timestamp)>,
    /// The newest tombstone the initiator has collected: every member had seen every write up to
    /// it, so the responder may collect its own tombstones up to it too.
    pub collected_through: Timestamp,
}

/// The responder's answer to one request of an exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAnswer {
    /// The newest tombstone the responder has collected: once the exchange completes, the
    /// initiator holds everything the responder held, so it may refuse old values as the
    /// responder does (a node that joined or came back after collections learns them so).
    pub collected_through: Timestamp,
    pub message: SyncMessage,
}

/// A value to drop (see [`FrameBody::Forget`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetValue {
    pub key: StoreKey,
    pub timestamp: Timestamp,
    pub node: NodeId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub from: NodeId,
    pub body: FrameBody,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("unsupported codec version {0}")]
    Version(u8),
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("undecodable message: {0}")]
    Garbage(String),
    /// The message holds something codec version `version` has no form for (a frame or
    /// anti-entropy message added later, a counter, a storage epoch, an expiring value): it
    /// cannot be sent to a peer that speaks only that version.
    #[error("codec version {version} has no form for {what}")]
    NotInVersion { version: u8, what: &'static str },
}

fn encode<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Serializing plain data into a Vec cannot fail.
    out.extend(postcard::to_stdvec(value).unwrap_or_default());
    out
}

/// The version byte, checked, and the body after it.
fn split(bytes: &[u8], limit: usize) -> Result<(u8, &[u8]), WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(WireError::Version(version));
    }
    Ok((version, body))
}

/// One postcard value that takes the whole body.
fn body<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Garbage(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Garbage(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

/// A datagram in [`VERSION`].
pub fn encode_datagram(datagram: &Datagram) -> Vec<u8> {
    encode(VERSION, datagram)
}

/// A datagram of any version from [`OLDEST_VERSION`] to [`VERSION`], as the current type.
pub fn decode_datagram(bytes: &[u8]) -> Result<Datagram, WireError> {
    decode_datagram_versioned(bytes).map(|(_, datagram)| datagram)
}

/// A datagram and the version it was encoded in (the version to answer its sender in). An older
/// version's datagram becomes the current type: a version-2 `Ack` has `clock_ms: 0`, which the
/// prober takes as "no clock"; its rumors' origins, dots and pull ranges are replica ids of
/// epoch 0 (a directory that predates epochs).
pub fn decode_datagram_versioned(bytes: &[u8]) -> Result<(u8, Datagram), WireError> {
    let (version, rest) = split(bytes, MAX_DATAGRAM_RECEIVED)?;
    let datagram = match version {
        v2::VERSION => body::<v2::Datagram>(rest)?.into_current()?,
        _ => body(rest)?,
    };
    Ok((version, datagram))
}

/// A datagram in `version` (from [`OLDEST_VERSION`] to [`VERSION`], else
/// [`WireError::Version`]), for a peer that speaks only that version. It is never longer than
/// the [`VERSION`] encoding, so a datagram filled up to [`MAX_DATAGRAM`] still fits.
///
/// In version 2: an `Ack` goes without its clock; the rumors that version cannot carry (an
/// origin or a set dot with a storage epoch, a counter, a value with an expiry) are left out,
/// as a lost datagram would lose them, and so are the pull ranges of origins with an epoch (a
/// version-2 node holds no rumor of theirs); what a register's writer observed is dropped (the
/// register reads as one whose writer did not say).
pub fn encode_datagram_as(datagram: &Datagram, version: u8) -> Result<Vec<u8>, WireError> {
    match version {
        VERSION => Ok(encode(VERSION, datagram)),
        v2::VERSION => Ok(encode(version, &v2::Datagram::from_current(datagram))),
        other => Err(WireError::Version(other)),
    }
}

/// A frame in [`VERSION`].
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    encode(VERSION, frame)
}

/// A frame of any version from [`OLDEST_VERSION`] to [`VERSION`], as the current type.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, WireError> {
    decode_frame_versioned(bytes).map(|(_, frame)| frame)
}

/// A frame and the version it was encoded in (the version to answer its sender in), converted
/// as [`decode_datagram_versioned`] converts datagrams.
pub fn decode_frame_versioned(bytes: &[u8]) -> Result<(u8, Frame), WireError> {
    let (version, rest) = split(bytes, MAX_FRAME)?;
    let frame = match version {
        v2::VERSION => body::<v2::Frame>(rest)?.into_current()?,
        _ => body(rest)?,
    };
    Ok((version, frame))
}

/// A frame in `version` (from [`OLDEST_VERSION`] to [`VERSION`], else [`WireError::Version`]),
/// for a peer that speaks only that version; never longer than the [`VERSION`] encoding.
///
/// In version 2, [`WireError::NotInVersion`] for: the frames `Replicate`, `Replicated`,
/// `ReadRequest`, `ReadReply` and `ReadRepair`; the anti-entropy messages `FetchLeaves` and
/// `LeafStates`; and any key of the counters keyspace, counter state, value with an expiry, or
/// set dot or version vector entry of a replica with a storage epoch in them. Only a `Rumors`
/// frame leaves out the rumors it cannot carry instead, as [`encode_datagram_as`] does (it may
/// then carry none). What a register's writer observed is dropped.
pub fn encode_frame_as(frame: &Frame, version: u8) -> Result<Vec<u8>, WireError> {
    match version {
        VERSION => Ok(encode(VERSION, frame)),
        v2::VERSION => Ok(encode(version, &v2::Frame::from_current(frame)?)),
        other => Err(WireError::Version(other)),
    }
}

/// The encoded size of a value, for filling datagrams up to their budget.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    postcard::experimental::serialized_size(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{Member, MemberState};
    use proptest::prelude::*;

    fn datagram() -> Datagram {
        Datagram {
            from: Member {
                id: NodeId::new("n1").unwrap(),
                gossip_addr: "127.0.0.1:7101".parse().unwrap(),
                http_addr: "127.0.0.1:7001".parse().unwrap(),
                state: MemberState::Alive,
                incarnation: 3,
            },
            swim: Some(SwimMessage::Ping { probe: 9 }),
            updates: Vec::new(),
            rumors: Vec::new(),
            pull: Some(crate::gossip::rumor::SeenSummary::default()),
        }
    }

    #[test]
    fn datagrams_round_trip_and_other_versions_truncation_and_trailing_bytes_are_refused() {
        let bytes = encode_datagram(&datagram());
        assert_eq!(decode_datagram(&bytes).unwrap(), datagram());
        assert_eq!(encoded_len(&datagram()) + 1, bytes.len());
        for version in [OLDEST_VERSION - 1, VERSION + 1] {
            let mut other = bytes.clone();
            other[0] = version;
            assert_eq!(decode_datagram(&other), Err(WireError::Version(version)));
        }
        for cut in 0..bytes.len() {
            assert!(
                decode_datagram(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_datagram(&longer),
            Err(WireError::Garbage(_))
        ));
        assert_eq!(decode_datagram(&[]), Err(WireError::Empty));
        let huge = vec![VERSION; MAX_DATAGRAM_RECEIVED + 1];
        assert_eq!(decode_datagram(&huge), Err(WireError::TooLarge(huge.len())));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_datagram(&bytes);
            let _ = decode_frame(&bytes);
            for version in OLDEST_VERSION..=VERSION {
                let mut versioned = bytes.clone();
                versioned.insert(0, version);
                let _ = decode_datagram(&versioned);
                let _ = decode_frame(&versioned);
            }
        }
    }
}
