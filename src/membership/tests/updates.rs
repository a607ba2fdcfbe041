//! Records and updates: what the envelope teaches, precedence at work, refutation, corrections,
//! bounded retransmission and leaving.

use super::*;

#[test]
fn new_member_is_learned_from_the_envelope_with_its_http_address() {
    let mut node = node_knowing(&[]);
    let mut out = Vec::new();
    node.handle_message(
        0,
        &member(1),
        addr(7101),
        SwimMessage::Ping { probe: 9 },
        &mut out,
    );
    let ack = Outgoing {
        to: addr(7101),
        msg: SwimMessage::Ack {
            probe: 9,
            clock_ms: 0,
        },
    };
    assert_eq!(out, [ack]);
    assert_eq!(node.member(&id(1)), Some(&member(1)));
    assert_eq!(node.drain_events(), [MemberEvent::Joined(member(1))]);
    assert_eq!(node.updates_to_send(8), [member(1)]);

    // Restarted on another HTTP port at the same incarnation: the envelope is the authority.
    let moved = Member {
        http_addr: addr(8001),
        ..member(1)
    };
    node.handle_message(
        5,
        &moved,
        addr(7101),
        SwimMessage::Ping { probe: 1 },
        &mut out,
    );
    assert_eq!(node.member(&id(1)).unwrap().http_addr, addr(8001));
}

#[test]
fn correction_for_tells_a_peer_what_it_must_refute() {
    let mut node = node_knowing(&[1, 2]);
    node.apply_updates(
        0,
        &[at(1, MemberState::Suspect, 0), at(2, MemberState::Alive, 3)],
    );
    assert_eq!(
        node.correction_for(&member(1)),
        Some(at(1, MemberState::Suspect, 0))
    );
    assert_eq!(node.correction_for(&at(1, MemberState::Alive, 1)), None);
    // A previous life of n2 reached incarnation 3: the restarted n2 must move past it.
    assert_eq!(
        node.correction_for(&member(2)),
        Some(at(2, MemberState::Alive, 3))
    );
    // A member that is leaving is not asked to refute.
    node.apply_updates(0, &[at(2, MemberState::Dead, 4)]);
    assert_eq!(node.correction_for(&at(2, MemberState::Left, 4)), None);
    assert_eq!(node.correction_for(&member(9)), None);
}

#[test]
fn node_refutes_suspicion_about_itself_with_higher_incarnation() {
    let me = at(0, MemberState::Alive, 3);
    let mut node = Membership::new(me, vec![], config());
    node.apply_updates(0, &[at(0, MemberState::Suspect, 3)]);
    assert_eq!(
        (node.me().state, node.me().incarnation),
        (MemberState::Alive, 4)
    );
    assert_eq!(node.updates_to_send(8), [at(0, MemberState::Alive, 4)]);
    let refuted = MemberEvent::Refuted {
        claim: at(0, MemberState::Suspect, 3),
        incarnation: 4,
    };
    assert_eq!(node.drain_events(), [refuted]);

    node.apply_updates(0, &[at(0, MemberState::Suspect, 2)]);
    assert_eq!(node.me().incarnation, 4, "a stale suspicion is ignored");
    node.apply_updates(0, &[at(0, MemberState::Dead, 5)]);
    assert_eq!(node.me().incarnation, 6);
    node.apply_updates(0, &[at(0, MemberState::Left, 6)]);
    assert_eq!(
        (node.me().state, node.me().incarnation),
        (MemberState::Alive, 7)
    );

    node.leave(0, &mut rng(), &mut Vec::new());
    node.apply_updates(0, &[at(0, MemberState::Dead, 9)]);
    assert_eq!(
        (node.me().state, node.me().incarnation),
        (MemberState::Left, 8)
    );
}

#[test]
fn piggybacked_updates_stop_after_bounded_retransmissions() {
    let mut node = node_knowing(&[1, 2, 3, 4]);
    // n = 5: retransmit_mult * ceil(log2(6)) = 4 * 3 = 12 sendings.
    let suspect = at(3, MemberState::Suspect, 0);
    node.apply_updates(0, std::slice::from_ref(&suspect));
    let about_n3: Vec<Member> = (0..100)
        .flat_map(|_| node.updates_to_send(8))
        .filter(|update| update.id == id(3))
        .collect();
    assert_eq!(about_n3, vec![suspect; 12]);
    assert!(node.updates_to_send(8).is_empty(), "the others stopped too");

    // A newer update about the same member replaces the pending one and gets the full count.
    node.apply_updates(0, &[at(3, MemberState::Alive, 1)]);
    node.updates_to_send(8);
    let dead = at(3, MemberState::Dead, 1);
    node.apply_updates(0, std::slice::from_ref(&dead));
    let sent: Vec<Member> = (0..100).flat_map(|_| node.updates_to_send(8)).collect();
    assert_eq!(sent, vec![dead; 12]);
}

#[test]
fn leave_marks_self_left_and_tells_a_few_members() {
    let mut node = node_knowing(&[1, 2, 3, 4, 5]);
    let mut rng = rng();
    let mut out = Vec::new();
    node.leave(0, &mut rng, &mut out);
    assert_eq!(
        (node.me().state, node.me().incarnation),
        (MemberState::Left, 1)
    );
    let mut told: Vec<SocketAddr> = out.iter().map(|o| o.to).collect();
    told.sort();
    told.dedup();
    assert_eq!((out.len(), told.len()), (3, 3));
    assert_eq!(node.updates_to_send(8)[0], at(0, MemberState::Left, 1));
    let left = MemberEvent::StateChanged {
        member: at(0, MemberState::Left, 1),
        from: MemberState::Alive,
    };
    assert_eq!(node.drain_events(), [left]);

    // It neither probes nor re-contacts any more, but still answers.
    for now in (0..10_000).step_by(100) {
        assert!(tick(&mut node, now, &mut rng).is_empty());
    }
    assert_eq!(node.next_wakeup_ms(), u64::MAX);
    out.clear();
    node.handle_message(
        10_000,
        &member(1),
        addr(7101),
        SwimMessage::Ping { probe: 3 },
        &mut out,
    );
    assert_eq!(out.len(), 1);
}

#[test]
fn records_with_impossible_incarnations_are_ignored() {
    let mut node = node_knowing(&[1]);
    let before = node.me().incarnation;
    // A claim about this node that could never be refuted, and one about a peer.
    node.apply_updates(
        10,
        &[
            at(0, MemberState::Dead, u64::MAX),
            at(1, MemberState::Dead, MAX_INCARNATION + 1),
        ],
    );
    assert_eq!(node.me().incarnation, before);
    assert_eq!(state_of(&node, 1), (MemberState::Alive, 0));
    // An envelope with one is ignored as a whole (the sender is not learned).
    let mut out = Vec::new();
    let liar = Member {
        incarnation: u64::MAX,
        ..member(2)
    };
    node.handle_message(
        20,
        &liar,
        addr(7102),
        SwimMessage::Ping { probe: 1 },
        &mut out,
    );
    assert!(node.member(&id(2)).is_none());
    assert!(out.is_empty());
    // A claim at the bound cannot be refuted within it, so it is not answered; below, it is.
    node.apply_updates(30, &[at(0, MemberState::Suspect, MAX_INCARNATION)]);
    assert_eq!(node.me().incarnation, before);
    node.apply_updates(40, &[at(0, MemberState::Suspect, MAX_INCARNATION - 1)]);
    assert_eq!(node.me().incarnation, MAX_INCARNATION);
    assert!(node.me().is_plausible());
}
