//! Failure detection: direct and indirect probes, suspicion and its timeout, and what ends a
//! suspicion.

use super::*;

#[test]
fn unanswered_probe_leads_to_indirect_probes() {
    let mut node = node_knowing(&[1, 2, 3, 4]);
    let mut rng = rng();
    let out = tick(&mut node, 0, &mut rng);
    let [Outgoing {
        to: target_addr,
        msg: SwimMessage::Ping { probe },
    }] = out.as_slice()
    else {
        panic!("expected one probe, got {out:?}");
    };
    let target = node.member_by_addr(*target_addr).unwrap().id.clone();
    assert!(tick(&mut node, 199, &mut rng).is_empty());
    // No Ack after half the timeout: the Ping again (it or its Ack may have been lost).
    let again = tick(&mut node, 200, &mut rng);
    assert_eq!(again, out, "the same probe, sent again");
    assert!(tick(&mut node, 399, &mut rng).is_empty());

    let mut out = tick(&mut node, 400, &mut rng);
    let direct = out
        .iter()
        .position(|o| o.to == *target_addr)
        .expect("a Ping");
    assert_eq!(out.remove(direct).msg, SwimMessage::Ping { probe: *probe });
    assert_eq!(out.len(), 3, "k = 3 indirect probes: {out:?}");
    let mut relays: Vec<SocketAddr> = out.iter().map(|o| o.to).collect();
    relays.sort();
    relays.dedup();
    assert_eq!(relays.len(), 3);
    for o in &out {
        assert_ne!(o.to, *target_addr);
        let expected = SwimMessage::PingReq {
            probe: *probe,
            target: target.clone(),
            target_addr: *target_addr,
        };
        assert_eq!(o.msg, expected);
    }

    tick(&mut node, 999, &mut rng);
    assert_eq!(node.member(&target).unwrap().state, MemberState::Alive);
    tick(&mut node, 1_000, &mut rng);
    let suspected = node.member(&target).unwrap().clone();
    assert_eq!(
        (suspected.state, suspected.incarnation),
        (MemberState::Suspect, 0)
    );
    assert_eq!(node.updates_to_send(8)[0], suspected);
}

#[test]
fn relay_pings_the_target_and_forwards_its_ack() {
    let mut relay = node_knowing(&[1, 2]);
    let mut out = Vec::new();
    let request = SwimMessage::PingReq {
        probe: 42,
        target: id(2),
        target_addr: addr(7102),
    };
    relay.handle_message(0, &member(1), addr(7101), request, &mut out);
    let [Outgoing {
        to,
        msg: SwimMessage::Ping { probe: relayed },
    }] = out.as_slice()
    else {
        panic!("expected one relayed ping, got {out:?}");
    };
    assert_eq!(*to, addr(7102));

    let mut forwarded = Vec::new();
    let ack = SwimMessage::Ack {
        probe: *relayed,
        clock_ms: 5,
    };
    relay.handle_message(10, &member(2), addr(7102), ack, &mut forwarded);
    // The forwarded Ack carries the relay's own clock as it forwards it.
    let expected = Outgoing {
        to: addr(7101),
        msg: SwimMessage::Ack {
            probe: 42,
            clock_ms: 10,
        },
    };
    assert_eq!(forwarded, [expected]);
    // The target's Ack timed the relay's ping: a sample of the target's clock.
    let samples: Vec<_> = relay.clock_samples().collect();
    assert_eq!(samples, [(&id(2), &ClockSample::new(0, 5, 10))]);
}

#[test]
fn relayed_ack_prevents_suspicion() {
    let mut node = node_knowing(&[1, 2, 3, 4]);
    let mut rng = rng();
    let out = tick(&mut node, 0, &mut rng);
    let SwimMessage::Ping { probe } = out[0].msg else {
        panic!("expected a probe");
    };
    let target = node.member_by_addr(out[0].to).unwrap().id.clone();
    let relays = tick(&mut node, 400, &mut rng);
    let relay = node.member_by_addr(relays[0].to).unwrap().clone();
    let mut ignored = Vec::new();
    node.handle_message(
        600,
        &relay,
        relay.gossip_addr,
        SwimMessage::Ack { probe, clock_ms: 0 },
        &mut ignored,
    );
    tick(&mut node, 1_000, &mut rng);
    assert_eq!(node.member(&target).unwrap().state, MemberState::Alive);
}

#[test]
fn late_tick_after_a_pause_does_not_suspect_the_target() {
    let mut node = node_knowing(&[1, 2]);
    let mut rng = rng();
    let probe = tick(&mut node, 0, &mut rng);
    let target = node.member_by_addr(probe[0].to).unwrap().id.clone();
    // Paused for five seconds: the indirect probes go out late and still get the rest of a period.
    assert_eq!(
        tick(&mut node, 5_000, &mut rng).len(),
        2,
        "one PingReq, one Ping"
    );
    tick(&mut node, 5_599, &mut rng);
    assert_eq!(node.member(&target).unwrap().state, MemberState::Alive);
    tick(&mut node, 5_600, &mut rng);
    assert_eq!(node.member(&target).unwrap().state, MemberState::Suspect);
}

#[test]
fn suspect_member_is_declared_dead_after_timeout() {
    let mut node = node_knowing(&[1]);
    let mut rng = rng();
    tick(&mut node, 0, &mut rng);
    assert_eq!(
        pings_to(&tick(&mut node, 400, &mut rng), addr(7101)),
        1,
        "nobody to ask: only the Ping again"
    );
    tick(&mut node, 1_000, &mut rng);
    assert_eq!(state_of(&node, 1), (MemberState::Suspect, 0));
    let suspected = MemberEvent::StateChanged {
        member: at(1, MemberState::Suspect, 0),
        from: MemberState::Alive,
    };
    assert_eq!(node.drain_events(), [suspected]);

    // n = 2, so the timeout is suspicion_mult * probe_interval = 3 s.
    tick(&mut node, 3_999, &mut rng);
    assert_eq!(state_of(&node, 1), (MemberState::Suspect, 0));
    tick(&mut node, 4_000, &mut rng);
    assert_eq!(state_of(&node, 1), (MemberState::Dead, 0));
    let dead = MemberEvent::StateChanged {
        member: at(1, MemberState::Dead, 0),
        from: MemberState::Suspect,
    };
    assert_eq!(node.drain_events(), [dead]);
    assert!(node
        .updates_to_send(8)
        .contains(&at(1, MemberState::Dead, 0)));
    assert!(node.alive_peers().is_empty());
}

#[test]
fn suspicion_lasts_longer_in_a_larger_cluster() {
    let others: Vec<u16> = (1..100).collect();
    let mut node = node_knowing(&others);
    let mut rng = rng();
    node.apply_updates(0, &[at(5, MemberState::Suspect, 0)]);
    // n = 100: suspicion_mult * log10(100) * probe_interval = 6 s.
    tick(&mut node, 5_999, &mut rng);
    assert_eq!(state_of(&node, 5), (MemberState::Suspect, 0));
    tick(&mut node, 6_000, &mut rng);
    assert_eq!(state_of(&node, 5), (MemberState::Dead, 0));
}

#[test]
fn ack_clears_suspicion() {
    let mut a = node_knowing(&[1]);
    let mut b = Membership::new(member(1), vec![], config());
    b.apply_updates(0, &[member(0)]);
    let mut rng = rng();
    tick(&mut a, 0, &mut rng);
    tick(&mut a, 400, &mut rng);
    let out = tick(&mut a, 1_000, &mut rng);
    assert_eq!(state_of(&a, 1), (MemberState::Suspect, 0));

    // The next probe reaches b with the suspicion piggybacked: b refutes at once, so its Ack's
    // envelope says Alive at a higher incarnation.
    let updates = a.updates_to_send(8);
    assert!(updates.contains(&at(1, MemberState::Suspect, 0)));
    let mut replies = Vec::new();
    b.handle_message(1_000, a.me(), addr(7100), out[0].msg.clone(), &mut replies);
    b.apply_updates(1_000, &updates);
    assert_eq!(b.me().incarnation, 1);
    let refuted = MemberEvent::Refuted {
        claim: at(1, MemberState::Suspect, 0),
        incarnation: 1,
    };
    assert!(b.drain_events().contains(&refuted));

    let envelope = b.me().clone();
    a.handle_message(
        1_001,
        &envelope,
        addr(7101),
        replies[0].msg.clone(),
        &mut Vec::new(),
    );
    assert_eq!(state_of(&a, 1), (MemberState::Alive, 1));
    assert!(a.drain_events().contains(&MemberEvent::StateChanged {
        member: at(1, MemberState::Alive, 1),
        from: MemberState::Suspect,
    }));
    tick(&mut a, 4_000, &mut rng);
    assert_eq!(
        state_of(&a, 1),
        (MemberState::Alive, 1),
        "no suspicion timer left"
    );
}

#[test]
fn next_wakeup_follows_the_probe_schedule() {
    let mut node = node_knowing(&[1]);
    let mut rng = rng();
    assert_eq!(node.next_wakeup_ms(), 0);
    // The Ping again every 200 ms (half the timeout), PingReqs at 400, the verdict at 1,000.
    for (at, next) in [(0, 200), (200, 400), (400, 600), (600, 800), (800, 1_000)] {
        tick(&mut node, at, &mut rng);
        assert_eq!(node.next_wakeup_ms(), next, "after the tick at {at}");
    }
    tick(&mut node, 1_000, &mut rng);
    // Suspected, and a new probe started: its first resend comes before the suspicion's end.
    assert_eq!(node.next_wakeup_ms(), 1_200);
}

#[test]
fn indirect_probes_go_only_to_members_at_their_known_address() {
    let mut relay = node_knowing(&[1, 2]);
    let mut out = Vec::new();
    for (target, target_addr) in [(id(2), addr(9999)), (id(7), addr(7107))] {
        let request = SwimMessage::PingReq {
            probe: 42,
            target,
            target_addr,
        };
        relay.handle_message(0, &member(1), addr(7101), request, &mut out);
    }
    assert!(out.is_empty(), "{out:?}");
}
