//! What the membership protocol puts on the wire: probes, their answers and requests for indirect
//! probes (SWIM §3.1), and the outbox entry that addresses one of them.
//!
//! Only types: the driver wraps each message in an envelope (the sender's own [`super::Member`]
//! record plus piggybacked updates) and encodes it; nothing here encodes bytes or sends anything.

use crate::clock::NodeId;
use core::net::SocketAddr;
use serde::{Deserialize, Serialize};

/// One membership message. `probe` numbers are chosen by whoever expects the answer and are only
/// meaningful to it; unknown or late numbers are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwimMessage {
    /// Are you there? Answered with `Ack` carrying the same `probe`.
    Ping { probe: u64 },
    /// The answer to a `Ping`, sent by the pinged member, or forwarded by a relay on behalf of the
    /// member it probed for us. `clock_ms` is the sender's wall clock as it sent the Ack (a relay
    /// puts its own): it fell between the Ping's sending and the Ack's arrival, which bounds the
    /// sender's clock offset (see [`super::ClockSample`]).
    Ack { probe: u64, clock_ms: u64 },
    /// Please ping `target` at `target_addr` for me and, if it answers, send me `Ack { probe }`.
    /// Sent to a few members when a direct probe goes unanswered, so that one lossy path does not
    /// get a member suspected.
    PingReq {
        probe: u64,
        target: NodeId,
        target_addr: SocketAddr,
    },
}

/// A message the driver is asked to send to `to`, with the envelope of the sending node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: SocketAddr,
    pub msg: SwimMessage,
}
