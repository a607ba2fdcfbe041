//! Unit tests of the membership state machine, driven by hand through the outbox: no sockets, a
//! seeded RNG, time passed in. Member `n{i}` gossips on port 7100 + i and serves HTTP on 7000 + i;
//! the node under test is `n0` unless a test says otherwise. `network` runs five of them together.

mod contact;
mod lifeguard;
mod network;
mod probing;
mod updates;

use super::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn id(i: u16) -> NodeId {
    NodeId::new(format!("n{i}")).unwrap()
}

fn member(i: u16) -> Member {
    Member::new(id(i), addr(7100 + i), addr(7000 + i), 0)
}

fn at(i: u16, state: MemberState, incarnation: u64) -> Member {
    Member {
        state,
        incarnation,
        ..member(i)
    }
}

/// Explicit round numbers, so that the times in these tests read as arithmetic: a probe every
/// second, indirect probes after 400 ms, k = 3, 3 s of suspicion (n <= 10), seeds every 500 ms,
/// re-contact every 2 s, 4 * ceil(log2(n + 1)) sendings per update, reaping after a minute.
/// Lifeguard's dynamic suspicion timeout and local health score are off (see `lifeguard.rs`).
fn config() -> MembershipConfig {
    MembershipConfig {
        probe_interval_ms: 1_000,
        probe_timeout_ms: 400,
        indirect_probes: 3,
        suspicion_mult: 3,
        suspicion_max_mult: 1,
        max_local_health: 0,
        retransmit_mult: 4,
        join_interval_ms: 500,
        rejoin_interval_ms: 2_000,
        max_piggyback: 8,
        reap_after_ms: 60_000,
    }
}

fn rng() -> SmallRng {
    SmallRng::seed_from_u64(7)
}

/// `n0` knowing the given members as Alive, with no seeds.
fn node_knowing(others: &[u16]) -> Membership {
    let mut node = Membership::new(member(0), vec![], config());
    let peers: Vec<Member> = others.iter().map(|&i| member(i)).collect();
    node.apply_updates(0, &peers);
    node.drain_events();
    node
}

fn tick(node: &mut Membership, now_ms: u64, rng: &mut SmallRng) -> Vec<Outgoing> {
    let mut out = Vec::new();
    node.handle_tick(now_ms, rng, &mut out);
    out
}

fn state_of(node: &Membership, i: u16) -> (MemberState, u64) {
    let member = node.member(&id(i)).unwrap();
    (member.state, member.incarnation)
}

fn pings_to(out: &[Outgoing], to: SocketAddr) -> usize {
    out.iter()
        .filter(|o| o.to == to && matches!(o.msg, SwimMessage::Ping { .. }))
        .count()
}
