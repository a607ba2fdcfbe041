//! Members, their states and the precedence rule: the record that every datagram carries about its
//! sender and every piggybacked update carries about some member, and the one function that decides
//! which of two records about the same member is newer (SWIM §4.2, incarnation numbers).
//!
//! Owns no timers, no tables and no I/O: [`super::Membership`] keeps the records and the timers.

use crate::clock::NodeId;
use core::net::SocketAddr;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the cluster believes about a member. Rendered and serialized in lowercase (`"alive"`, ...),
/// as in `GET /v1/cluster/members`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answers probes, or has refuted every suspicion raised about it.
    Alive,
    /// Missed a probe, directly and through others; declared Dead unless it refutes in time.
    /// Still probed and still counted among the live peers.
    Suspect,
    /// Stayed Suspect for the whole suspicion timeout. Kept and re-contacted at a low rate, never
    /// forgotten, so that a healed partition re-forms.
    Dead,
    /// Left on purpose. Kept so that the verdict beats stale rumors; never re-contacted.
    Left,
}

/// Whether the members up (Alive or Suspect) are a majority of those that did not leave: the
/// side of a partition that may act for the cluster about members that are down (stop counting
/// them for tombstone collection, forget them). After a long partition, the minority is the side
/// that was away. `members` includes this node.
pub fn up_majority<'a>(members: impl IntoIterator<Item = &'a Member>) -> bool {
    let (mut up, mut staying) = (0usize, 0usize);
    for member in members {
        up += usize::from(member.state.is_up());
        staying += usize::from(member.state != MemberState::Left);
    }
    up * 2 > staying
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }

    /// Whether the member is taken as up: probed, chosen as a relay or a gossip target (Alive or
    /// Suspect).
    pub fn is_up(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }

    /// Order among records of equal incarnation: the more final verdict wins.
    fn rank(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
            MemberState::Left => 3,
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The greatest incarnation a record may carry. A member raises its own incarnation once per
/// restart and once per refutation, so no honest record comes near it; a record above it could
/// never be refuted (its successor would overflow), so it is refused as a lie.
pub const MAX_INCARNATION: u64 = 1 << 48;

/// One member as some node sees it. The same record is the envelope of every datagram (the sender
/// describing itself) and the unit of piggybacked gossip (anyone describing anyone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// Where the member receives cluster datagrams.
    pub gossip_addr: SocketAddr,
    /// Where the member serves its HTTP API.
    pub http_addr: SocketAddr,
    pub state: MemberState,
    /// Raised only by the member itself, to refute a verdict or to leave; orders records about it.
    pub incarnation: u64,
}

impl Member {
    /// An Alive member at the given incarnation.
    pub fn new(
        id: NodeId,
        gossip_addr: SocketAddr,
        http_addr: SocketAddr,
        incarnation: u64,
    ) -> Self {
        Member {
            id,
            gossip_addr,
            http_addr,
            state: MemberState::Alive,
            incarnation,
        }
    }

    /// Whether an honest member could have produced this record: its incarnation is at most
    /// [`MAX_INCARNATION`].
    pub fn is_plausible(&self) -> bool {
        self.incarnation <= MAX_INCARNATION
    }

    /// The same member with another state at the same incarnation (a verdict about it).
    pub fn with_state(&self, state: MemberState) -> Self {
        Member {
            state,
            ..self.clone()
        }
    }

    /// Whether this record overrides `held`, a record about the same member:
    ///
    /// - Alive(i) overrides anything with a lower incarnation;
    /// - Suspect(i) overrides Alive(j) for j <= i and Suspect(j) for j < i;
    /// - Dead(i) overrides Alive and Suspect for j <= i and Dead or Left for j < i;
    /// - Left(i) overrides Alive, Suspect and Dead for j <= i and Left for j < i.
    ///
    /// Dead is final for its incarnation: only the member itself, by coming back Alive with a higher
    /// incarnation, revives it, so a Suspect never overrides Dead or Left.
    pub fn supersedes(&self, held: &Member) -> bool {
        if self.state == MemberState::Suspect
            && matches!(held.state, MemberState::Dead | MemberState::Left)
        {
            return false;
        }
        (self.incarnation, self.state.rank()) > (held.incarnation, held.state.rank())
    }
}

/// Something that happened to the membership, for logs, metrics and anti-entropy triggers. Read with
/// [`super::Membership::drain_events`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member we had never heard of; its record says in which state we learned of it (usually
    /// Alive, but a member first heard of through a verdict is recorded as such).
    Joined(Member),
    /// A known member (or this node, when it leaves) moved to another state; `member` is the new
    /// record.
    StateChanged { member: Member, from: MemberState },
    /// A member Dead or Left for the reap period was forgotten (its last record).
    Reaped(Member),
    /// This node heard `claim`, an out-of-date record about itself (Suspect, Dead, Left, or Alive at
    /// a higher incarnation from a previous life), and refuted it by moving to `incarnation`.
    Refuted { claim: Member, incarnation: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemberState::{Alive, Dead, Left, Suspect};

    fn record(state: MemberState, incarnation: u64) -> Member {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7101));
        Member {
            state,
            ..Member::new(NodeId::new("n1").unwrap(), addr, addr, incarnation)
        }
    }

    #[test]
    fn precedence_rules() {
        // (new, held, whether new overrides held)
        let table = [
            ((Alive, 2), (Alive, 1), true),
            ((Alive, 1), (Alive, 1), false),
            ((Alive, 2), (Suspect, 1), true),
            ((Alive, 1), (Suspect, 1), false),
            ((Alive, 2), (Dead, 1), true),
            ((Alive, 1), (Dead, 1), false),
            ((Alive, 2), (Left, 1), true),
            ((Alive, 1), (Left, 1), false),
            ((Suspect, 1), (Alive, 1), true),
            ((Suspect, 2), (Alive, 1), true),
            ((Suspect, 0), (Alive, 1), false),
            ((Suspect, 2), (Suspect, 1), true),
            ((Suspect, 1), (Suspect, 1), false),
            ((Suspect, 5), (Dead, 1), false),
            ((Suspect, 5), (Left, 1), false),
            ((Dead, 1), (Alive, 1), true),
            ((Dead, 1), (Alive, 2), false),
            ((Dead, 1), (Suspect, 1), true),
            ((Dead, 1), (Dead, 1), false),
            ((Dead, 2), (Dead, 1), true),
            ((Dead, 1), (Left, 1), false),
            ((Dead, 2), (Left, 1), true),
            ((Left, 1), (Alive, 1), true),
            ((Left, 1), (Suspect, 1), true),
            ((Left, 1), (Dead, 1), true),
            ((Left, 1), (Left, 1), false),
            ((Left, 0), (Alive, 1), false),
        ];
        for ((new, i), (held, j), expected) in table {
            assert_eq!(
                record(new, i).supersedes(&record(held, j)),
                expected,
                "{new}({i}) over {held}({j})"
            );
        }
    }

    #[test]
    fn states_render_in_lowercase() {
        let all = [Alive, Suspect, Dead, Left];
        let shown: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        assert_eq!(shown, ["alive", "suspect", "dead", "left"]);
        assert_eq!(serde_json::to_string(&Suspect).unwrap(), "\"suspect\"");
    }
}
