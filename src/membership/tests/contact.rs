//! Reaching out: joining through seeds, re-contacting Dead members forever, never Left ones.

use super::*;

#[test]
fn dead_member_is_recontacted_and_revived_by_a_higher_incarnation() {
    let mut node = node_knowing(&[]);
    node.apply_updates(0, &[at(1, MemberState::Dead, 0)]);
    node.drain_events();
    let mut rng = rng();
    let mut pings = 0;
    for now in (0..10_000).step_by(100) {
        pings += pings_to(&tick(&mut node, now, &mut rng), addr(7101));
    }
    assert_eq!(pings, 5, "one re-contact per rejoin interval");

    // n1 answers at the incarnation we hold as Dead: still Dead, but it is pinged back at once so
    // that the driver can carry the correction to it.
    let mut out = Vec::new();
    let ack = SwimMessage::Ack {
        probe: 1,
        clock_ms: 0,
    };
    node.handle_message(10_000, &member(1), addr(7101), ack.clone(), &mut out);
    assert_eq!(state_of(&node, 1), (MemberState::Dead, 0));
    assert_eq!(pings_to(&out, addr(7101)), 1);
    assert_eq!(
        node.correction_for(&member(1)),
        Some(at(1, MemberState::Dead, 0))
    );
    out.clear();
    node.handle_message(10_001, &member(1), addr(7101), ack.clone(), &mut out);
    assert!(out.is_empty(), "correction pings are rate-limited");

    // Suspect at a higher incarnation does not revive it; n1's refutation does.
    node.apply_updates(10_002, &[at(1, MemberState::Suspect, 1)]);
    assert_eq!(state_of(&node, 1), (MemberState::Dead, 0));
    let refuted = at(1, MemberState::Alive, 1);
    node.handle_message(10_003, &refuted, addr(7101), ack, &mut out);
    assert_eq!(state_of(&node, 1), (MemberState::Alive, 1));
    assert!(out.is_empty());
    let revived = MemberEvent::StateChanged {
        member: refuted,
        from: MemberState::Dead,
    };
    assert_eq!(node.drain_events(), [revived]);
}

#[test]
fn seeds_are_pinged_until_joined_and_later_at_low_rate() {
    let seeds = vec![addr(7101), addr(7102), addr(7100)];
    let mut node = Membership::new(member(0), seeds, config());
    let mut rng = rng();
    let mut out = Vec::new();
    for now in (0..2_000).step_by(100) {
        out.extend(tick(&mut node, now, &mut rng));
    }
    // Every seed every join interval; never our own address.
    assert_eq!(pings_to(&out, addr(7101)), 4);
    assert_eq!(pings_to(&out, addr(7102)), 4);
    assert_eq!(out.iter().filter(|o| o.to == addr(7100)).count(), 0);

    // n1 (at the first seed) answers from now on; the second seed stays silent.
    let mut silent_seed_pings = 0;
    for now in (2_000..22_000).step_by(100) {
        if now == 2_000 {
            let ack = SwimMessage::Ack {
                probe: 1,
                clock_ms: 0,
            };
            node.handle_message(now, &member(1), addr(7101), ack, &mut Vec::new());
        }
        let out = tick(&mut node, now, &mut rng);
        silent_seed_pings += pings_to(&out, addr(7102));
        for o in out.iter().filter(|o| o.to == addr(7101)) {
            if let SwimMessage::Ping { probe } = o.msg {
                let ack = SwimMessage::Ack { probe, clock_ms: 0 };
                node.handle_message(now, &member(1), addr(7101), ack, &mut Vec::new());
            }
        }
    }
    assert_eq!(state_of(&node, 1), (MemberState::Alive, 0));
    assert_eq!(silent_seed_pings, 10, "once per rejoin interval, forever");
}

#[test]
fn left_member_is_not_recontacted() {
    // n1 is also a seed: its address is not contacted either once it is known to have left.
    let seeds = vec![addr(7101), addr(7102)];
    let mut node = Membership::new(member(0), seeds, config());
    node.apply_updates(0, &[member(1), member(2), at(1, MemberState::Left, 1)]);
    assert_eq!(state_of(&node, 1), (MemberState::Left, 1));
    let mut rng = rng();
    let mut out = Vec::new();
    for now in (0..60_000).step_by(100) {
        out.extend(tick(&mut node, now, &mut rng));
    }
    assert_eq!(state_of(&node, 2), (MemberState::Dead, 0));
    assert!(
        pings_to(&out, addr(7102)) > 10,
        "the Dead member is re-contacted"
    );
    assert_eq!(out.iter().filter(|o| o.to == addr(7101)).count(), 0);
}

/// A tick at which the members `answering` acknowledge every probe sent to them.
fn tick_answered(
    node: &mut Membership,
    now_ms: u64,
    rng: &mut SmallRng,
    answering: &[u16],
) -> Vec<Outgoing> {
    let out = tick(node, now_ms, rng);
    for &i in answering {
        for o in out.iter().filter(|o| o.to == addr(7100 + i)) {
            if let SwimMessage::Ping { probe } = o.msg {
                let ack = SwimMessage::Ack { probe, clock_ms: 0 };
                node.handle_message(now_ms, &member(i), addr(7100 + i), ack, &mut Vec::new());
            }
        }
    }
    out
}

#[test]
fn a_member_down_for_the_reap_period_is_forgotten_and_no_longer_contacted() {
    // n0 and n3 are up: a majority of the three members that did not leave.
    let mut node = node_knowing(&[2, 3]);
    node.apply_updates(
        0,
        &[at(1, MemberState::Dead, 0), at(2, MemberState::Left, 0)],
    );
    node.drain_events();
    let mut rng = rng();
    let mut pings = 0;
    for now in (0..59_900).step_by(100) {
        pings += pings_to(&tick_answered(&mut node, now, &mut rng, &[3]), addr(7101));
    }
    assert!(pings > 0, "re-contacted while within the reap period");
    assert!(node.member(&id(1)).is_some());
    tick_answered(&mut node, 60_000, &mut rng, &[3]);
    assert!(node.member(&id(1)).is_none() && node.member(&id(2)).is_none());
    let mut reaped: Vec<NodeId> = node
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            MemberEvent::Reaped(m) => Some(m.id),
            _ => None,
        })
        .collect();
    reaped.sort();
    assert_eq!(reaped, [id(1), id(2)]);
    let mut later = 0;
    for now in (60_000..120_000).step_by(100) {
        later += pings_to(&tick_answered(&mut node, now, &mut rng, &[3]), addr(7101));
    }
    assert_eq!(later, 0);
    // Should it come back, it is learned again from its own messages.
    node.apply_updates(120_000, &[at(1, MemberState::Alive, 1)]);
    assert_eq!(state_of(&node, 1), (MemberState::Alive, 1));
}

#[test]
fn a_minority_forgets_no_dead_member_but_forgets_those_that_left() {
    // n0 and n4 are up, n1..n3 down: the side of a partition that was away, or the survivors of
    // a disaster. Forgetting the others would make it count itself a majority.
    let mut node = node_knowing(&[4]);
    node.apply_updates(
        0,
        &[
            at(1, MemberState::Dead, 0),
            at(2, MemberState::Dead, 0),
            at(3, MemberState::Left, 0),
        ],
    );
    node.drain_events();
    let mut rng = rng();
    let mut pings = 0;
    for now in (0..180_000).step_by(100) {
        pings += pings_to(&tick_answered(&mut node, now, &mut rng, &[4]), addr(7101));
    }
    assert!(node.member(&id(1)).is_some() && node.member(&id(2)).is_some());
    assert!(
        node.member(&id(3)).is_none(),
        "a member that left is forgotten anyway"
    );
    assert!(pings > 0, "the dead members are still re-contacted");
    // n2 was only cut off: once it is back, n0's side is a majority and n1 goes.
    node.apply_updates(180_000, &[at(2, MemberState::Alive, 1)]);
    tick_answered(&mut node, 180_100, &mut rng, &[2, 4]);
    assert!(node.member(&id(1)).is_none());
    assert_eq!(state_of(&node, 2), (MemberState::Alive, 1));
}

#[test]
fn an_operator_forces_out_a_member_that_is_not_alive() {
    let mut node = node_knowing(&[1, 2]);
    assert_eq!(node.force_leave(0, &id(0)), Err(ForceLeaveError::Itself));
    assert_eq!(node.force_leave(0, &id(9)), Err(ForceLeaveError::Unknown));
    assert_eq!(node.force_leave(0, &id(1)), Err(ForceLeaveError::Alive));
    node.apply_updates(10, &[at(1, MemberState::Dead, 3)]);
    node.drain_events();
    assert_eq!(
        node.force_leave(20, &id(1)),
        Ok(at(1, MemberState::Left, 3))
    );
    assert_eq!(state_of(&node, 1), (MemberState::Left, 3));
    // The verdict spreads: it is the first update to piggyback.
    assert_eq!(node.updates_to_send(8)[0], at(1, MemberState::Left, 3));
    // And it is forgotten after the reap period, counted from when it went down.
    let mut rng = rng();
    tick(&mut node, 60_009, &mut rng);
    assert!(node.member(&id(1)).is_some());
    tick(&mut node, 60_010, &mut rng);
    assert!(node.member(&id(1)).is_none());
}

#[test]
fn a_member_that_joins_or_comes_back_in_its_own_message_is_sent_the_member_list() {
    let mut node = node_knowing(&[1]);
    let ping = SwimMessage::Ping { probe: 1 };
    let mut out = Vec::new();
    // Learned from gossip: nothing to send it.
    node.apply_updates(0, &[member(2)]);
    assert!(node.take_list_wanted().is_empty());
    // A stranger's own ping: it is joining.
    node.handle_message(1, &member(3), addr(7103), ping.clone(), &mut out);
    assert_eq!(node.take_list_wanted(), [addr(7103)]);
    // A member already alive pinging again: nothing.
    node.handle_message(2, &member(3), addr(7103), ping.clone(), &mut out);
    assert!(node.take_list_wanted().is_empty());
    // Back from Dead, or from Left, with a higher incarnation.
    node.apply_updates(
        3,
        &[at(1, MemberState::Dead, 0), at(2, MemberState::Left, 0)],
    );
    node.handle_message(
        4,
        &at(1, MemberState::Alive, 1),
        addr(7101),
        ping.clone(),
        &mut out,
    );
    node.handle_message(
        5,
        &at(2, MemberState::Alive, 1),
        addr(7102),
        ping.clone(),
        &mut out,
    );
    assert_eq!(node.take_list_wanted(), [addr(7101), addr(7102)]);
    // Alive again at a higher incarnation: restarted before anyone noticed.
    node.handle_message(6, &at(3, MemberState::Alive, 1), addr(7103), ping, &mut out);
    assert_eq!(node.take_list_wanted(), [addr(7103)]);
}

#[test]
fn a_member_learned_from_gossip_is_sent_one_introduction_that_asks_for_no_list() {
    let mut node = node_knowing(&[1]);
    let mut rng = rng();
    // n1 tells us of n2 and n3: we introduce ourselves to each, once.
    node.apply_updates_from(
        0,
        &id(1),
        &[member(2), member(3), at(4, MemberState::Dead, 0)],
    );
    let out = tick(&mut node, 0, &mut rng);
    let introductions: Vec<SocketAddr> = out
        .iter()
        .filter(|o| matches!(o.msg, SwimMessage::Ack { probe: 0, .. }))
        .map(|o| o.to)
        .collect();
    assert_eq!(introductions, [addr(7102), addr(7103)], "not the dead n4");
    let again = tick(&mut node, 1, &mut rng);
    assert!(again
        .iter()
        .all(|o| !matches!(o.msg, SwimMessage::Ack { probe: 0, .. })));
    // A member's own record in a datagram without a probe message is not gossip about it.
    node.apply_updates_from(2, &id(5), &[member(5)]);
    assert!(tick(&mut node, 2, &mut rng)
        .iter()
        .all(|o| o.to != addr(7105)));

    // On the other side, an introduction makes the sender known, and asks for nothing back.
    let mut other = node_knowing(&[1]);
    let mut out = Vec::new();
    let hello = SwimMessage::Ack {
        probe: 0,
        clock_ms: 0,
    };
    other.handle_message(0, &member(6), addr(7106), hello, &mut out);
    assert_eq!(state_of(&other, 6), (MemberState::Alive, 0));
    assert!(other.take_list_wanted().is_empty());
    assert!(out.is_empty(), "{out:?}");
}

/// Ticks from `from` to `to` (every 100 ms), returning what was sent and which names a contact
/// attempt asked to have resolved.
fn ticks_asking(
    node: &mut Membership,
    (from, to): (u64, u64),
    rng: &mut SmallRng,
) -> (Vec<Outgoing>, Vec<String>) {
    let (mut out, mut asked) = (Vec::new(), Vec::new());
    for now in (from..to).step_by(100) {
        out.extend(tick(node, now, rng));
        asked.extend(node.take_resolve_wanted());
    }
    (out, asked)
}

#[test]
fn a_seed_name_is_resolved_again_at_every_contact_attempt_and_each_of_its_addresses_pinged() {
    let name = "peers.example:7101".to_string();
    let mut node = Membership::new(member(0), Vec::new(), config())
        .with_seed_names(vec![name.clone(), name.clone()]);
    assert_eq!(node.seeds(), vec![name.clone()]);
    let mut rng = rng();
    let (out, asked) = ticks_asking(&mut node, (0, 2_000), &mut rng);
    // Every join interval asks for the name again; nothing is pinged before it resolves.
    assert_eq!(asked, vec![name.clone(); 4]);
    assert!(out.is_empty(), "{out:?}");

    // A headless Service: one address per pod, this node's own among them.
    let mut out = Vec::new();
    let pods = vec![addr(7101), addr(7100), addr(7102)];
    node.seed_resolved(2_000, &name, Some(pods), &mut out);
    assert_eq!(pings_to(&out, addr(7101)), 1);
    assert_eq!(pings_to(&out, addr(7102)), 1);
    assert_eq!(out.iter().filter(|o| o.to == addr(7100)).count(), 0);
    assert_eq!(out.len(), 2);

    // A pod rescheduled under a new address: the next resolution pings where it is now.
    out.clear();
    node.seed_resolved(2_500, &name, Some(vec![addr(7103)]), &mut out);
    assert_eq!(pings_to(&out, addr(7103)), 1);
    assert_eq!(out.len(), 1);

    // A failed resolution falls back on the addresses the name had last; a name this node was
    // never given is ignored.
    out.clear();
    node.seed_resolved(3_000, &name, None, &mut out);
    assert_eq!(pings_to(&out, addr(7103)), 1);
    out.clear();
    node.seed_resolved(3_000, "other:1", Some(vec![addr(7104)]), &mut out);
    assert!(out.is_empty());
}

#[test]
fn once_joined_a_seed_name_is_resolved_at_the_low_rejoin_rate_and_members_up_are_not_pinged() {
    let name = "peers.example:7101".to_string();
    let mut node =
        Membership::new(member(0), Vec::new(), config()).with_seed_names(vec![name.clone()]);
    node.apply_updates(0, &[member(1)]);
    let mut rng = rng();
    let mut asked = 0;
    for now in (0..20_000).step_by(100) {
        let out = tick_answered(&mut node, now, &mut rng, &[1]);
        assert_eq!(pings_to(&out, addr(7102)), 0);
        for wanted in node.take_resolve_wanted() {
            asked += 1;
            // The name resolves to n1, which is up (probed anyway), and to n2, never heard of.
            let mut out = Vec::new();
            node.seed_resolved(now, &wanted, Some(vec![addr(7101), addr(7102)]), &mut out);
            assert_eq!(out.iter().filter(|o| o.to == addr(7101)).count(), 0);
            assert_eq!(pings_to(&out, addr(7102)), 1);
        }
    }
    assert_eq!(state_of(&node, 1), (MemberState::Alive, 0));
    // The re-contact picks one candidate per rejoin interval (2 s) and the name is the only one.
    assert_eq!(asked, 10);
}
