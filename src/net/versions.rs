//! Which cluster codec version each peer speaks, learned from what it sends, so that a node
//! answers an older node in that node's version during a rolling upgrade (see
//! docs/wire-versions.md). A peer is taken at the newest version heard from it; an older one
//! replaces that only once nothing newer has come for [`DOWNGRADE_AFTER`] (a node rolled back
//! to an older build), because a node sends its first messages to a peer it does not know in
//! both the newest and the oldest version, and the older copy must not drag the pair down.
//! Decides nothing about the protocol and touches no socket.

use crate::clock::NodeId;
use crate::wire::{OLDEST_VERSION, VERSION};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long only older messages must come from a peer before it is taken at that version.
pub const DOWNGRADE_AFTER: Duration = Duration::from_secs(10);
/// Peers remembered at most (each a few bytes; a full table starts over).
const MAX_PEERS: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Heard {
    version: u8,
    /// When a message of `version` last came.
    at: Instant,
}

/// Shared by the transport's tasks; cheap to clone.
#[derive(Clone, Default)]
pub struct PeerVersions {
    peers: Arc<Mutex<HashMap<NodeId, Heard>>>,
}

impl PeerVersions {
    /// A message of codec `version` came from `peer`.
    #[allow(clippy::disallowed_methods)] // the transport's own pacing, not protocol time
    pub fn heard(&self, peer: &NodeId, version: u8) {
        self.heard_at(peer, version, Instant::now());
    }

    fn heard_at(&self, peer: &NodeId, version: u8, now: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(peer) {
            peers.clear();
        }
        let heard = Heard { version, at: now };
        match peers.get_mut(peer) {
            Some(known) if version >= known.version => *known = heard,
            Some(known) if now.duration_since(known.at) >= DOWNGRADE_AFTER => *known = heard,
            Some(_) => {}
            None => {
                peers.insert(peer.clone(), heard);
            }
        }
    }

    /// The version to send `peer` in, if it is known.
    pub fn of(&self, peer: &NodeId) -> Option<u8> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(peer).map(|heard| heard.version)
    }

    /// The versions a message to `peer` goes out in: its own if known; else this build's and,
    /// when older, the oldest it accepts (a first message must reach an older node too).
    pub fn to_send(&self, peer: Option<&NodeId>) -> Vec<u8> {
        match peer.and_then(|p| self.of(p)) {
            Some(version) => vec![version],
            None if OLDEST_VERSION < VERSION => vec![VERSION, OLDEST_VERSION],
            None => vec![VERSION],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a starting point; the test passes every time in
    fn a_peer_is_taken_at_the_newest_version_until_only_older_ones_come_for_a_while() {
        let versions = PeerVersions::default();
        let peer = NodeId::new("n2").unwrap();
        assert_eq!(versions.to_send(Some(&peer)), vec![VERSION, OLDEST_VERSION]);
        assert_eq!(versions.to_send(None), vec![VERSION, OLDEST_VERSION]);
        let start = Instant::now();
        versions.heard_at(&peer, OLDEST_VERSION, start);
        assert_eq!(versions.to_send(Some(&peer)), vec![OLDEST_VERSION]);
        // The peer is upgraded: its newer messages win at once.
        versions.heard_at(&peer, VERSION, start + Duration::from_secs(1));
        assert_eq!(versions.of(&peer), Some(VERSION));
        // The older copy of a first message does not bring it down...
        versions.heard_at(&peer, OLDEST_VERSION, start + Duration::from_secs(2));
        assert_eq!(versions.of(&peer), Some(VERSION));
        // ...but a peer rolled back, heard only in the older version for a while, is.
        let later = start + Duration::from_secs(1) + DOWNGRADE_AFTER;
        versions.heard_at(&peer, OLDEST_VERSION, later);
        assert_eq!(versions.of(&peer), Some(OLDEST_VERSION));
    }
}
