//! Lifeguard's parts (Dadgar et al., 2018) and the loss defences beside them: any message from a
//! member answers a probe of it, the local health score stretches the probes of a node whose own
//! probes fail, a suspicion waits longer until other members confirm it, and a suspect hears of
//! its suspicion in what is sent to it.

use super::*;

/// The test config with the dynamic suspicion timeout (4x without confirmations) and the local
/// health score (up to 8) on.
fn lifeguard() -> MembershipConfig {
    MembershipConfig {
        suspicion_max_mult: 4,
        max_local_health: 8,
        ..config()
    }
}

fn knowing(others: &[u16], config: MembershipConfig) -> Membership {
    let mut node = Membership::new(member(0), vec![], config);
    let peers: Vec<Member> = others.iter().map(|&i| member(i)).collect();
    node.apply_updates(0, &peers);
    node.drain_events();
    node
}

#[test]
fn any_message_from_the_target_answers_the_probe() {
    let mut node = knowing(&[1], config());
    let mut rng = rng();
    tick(&mut node, 0, &mut rng);
    // Every Ping and Ack is lost, but n1 sent something else of its own (a rumor, a frame).
    node.heard_from(700, &id(1));
    tick(&mut node, 1_000, &mut rng);
    assert_eq!(state_of(&node, 1), (MemberState::Alive, 0));

    // Heard of before the probe began: no answer to this one.
    tick(&mut node, 2_000, &mut rng);
    tick(&mut node, 3_000, &mut rng);
    assert_eq!(state_of(&node, 1), (MemberState::Suspect, 0));
}

#[test]
fn failed_probes_raise_the_local_health_score_and_stretch_the_period() {
    let mut node = knowing(&[1], lifeguard());
    let mut rng = rng();
    tick(&mut node, 0, &mut rng);
    tick(&mut node, 400, &mut rng);
    let out = tick(&mut node, 1_000, &mut rng);
    assert_eq!(node.local_health(), 1, "one failed probe");
    let Some(probe) = out.iter().find_map(|o| match o.msg {
        SwimMessage::Ping { probe } => Some(probe),
        _ => None,
    }) else {
        panic!("no new probe: {out:?}")
    };
    // The next probe started at 1,000 with a period and timeout twice as long.
    assert_eq!(
        node.next_wakeup_ms(),
        1_400,
        "the first resend at half of 800"
    );
    let out = tick(&mut node, 1_400, &mut rng);
    assert_eq!(pings_to(&out, addr(7101)), 1);
    tick(&mut node, 1_799, &mut rng);
    // Answered: the score falls back.
    let mut out = Vec::new();
    node.handle_message(
        1_800,
        &at(1, MemberState::Suspect, 0),
        addr(7101),
        SwimMessage::Ack { probe, clock_ms: 0 },
        &mut out,
    );
    assert_eq!(node.local_health(), 0);
}

#[test]
fn refuting_a_suspicion_of_itself_raises_the_score() {
    let mut node = knowing(&[1], lifeguard());
    node.apply_updates(0, &[at(0, MemberState::Suspect, 0)]);
    assert_eq!(node.me().incarnation, 1);
    assert_eq!(node.local_health(), 1);
}

#[test]
fn the_score_is_capped_and_off_when_its_maximum_is_zero() {
    for (max, expected) in [(0, 0), (3, 3)] {
        let mut node = knowing(
            &[1],
            MembershipConfig {
                max_local_health: max,
                ..lifeguard()
            },
        );
        for i in 1..=5 {
            node.apply_updates(0, &[at(0, MemberState::Suspect, i - 1)]);
        }
        assert_eq!(node.local_health(), expected, "max {max}");
    }
}

/// With five members up, three others can confirm a suspicion of n4 (k = 3): alone it waits
/// 4 x 3 s; each confirmation from another member shortens that, down to 3 s with three.
#[test]
fn a_suspicion_waits_longer_until_other_members_confirm_it() {
    let suspect = at(4, MemberState::Suspect, 0);
    let dead_at = |confirmers: &[u16]| {
        let mut node = knowing(&[1, 2, 3, 4], lifeguard());
        node.apply_updates_from(1_000, &id(1), std::slice::from_ref(&suspect));
        // The suspect itself, and the first member again, confirm nothing.
        node.apply_updates_from(1_100, &id(4), std::slice::from_ref(&suspect));
        node.apply_updates_from(1_100, &id(1), std::slice::from_ref(&suspect));
        for &c in confirmers {
            node.apply_updates_from(1_200, &id(c), std::slice::from_ref(&suspect));
        }
        // Only the suspicion timers run (no probes, which would go unanswered here).
        let mut now = 1_000;
        while state_of(&node, 4).0 != MemberState::Dead {
            now += 100;
            node.expire_suspicions(now);
            assert!(now < 20_000, "never declared dead");
        }
        now - 1_000
    };
    let alone = dead_at(&[]);
    let one = dead_at(&[2]);
    let two = dead_at(&[2, 3]);
    assert_eq!(alone, 12_000);
    assert!(alone > one && one > two, "{alone} {one} {two}");
    // Its own failed probe of n4 would be the third; without it, two confirmations of three.
    assert!(two > 3_000, "{two}");
}

#[test]
fn with_no_one_else_to_confirm_the_suspicion_takes_the_shortest_timeout() {
    let mut node = knowing(&[1], lifeguard());
    let mut rng = rng();
    tick(&mut node, 0, &mut rng);
    tick(&mut node, 400, &mut rng);
    tick(&mut node, 1_000, &mut rng);
    assert_eq!(state_of(&node, 1), (MemberState::Suspect, 0));
    // n = 2: 3 s, as without Lifeguard.
    tick(&mut node, 3_999, &mut rng);
    assert_eq!(state_of(&node, 1).0, MemberState::Suspect);
    tick(&mut node, 4_000, &mut rng);
    assert_eq!(state_of(&node, 1).0, MemberState::Dead);
}

#[test]
fn a_suspect_is_told_of_its_suspicion_in_what_is_sent_to_it() {
    let mut node = knowing(&[1, 2], lifeguard());
    node.apply_updates(0, &[at(1, MemberState::Suspect, 0)]);
    let tell = |to: u16| {
        node.member_by_addr(addr(7100 + to))
            .and_then(|m| node.suspicion_to_tell(m))
    };
    assert_eq!(tell(1), Some(at(1, MemberState::Suspect, 0)));
    assert_eq!(tell(2), None, "n2 is alive");
    assert_eq!(tell(9), None, "a stranger");
}
