//! Clocks that are off, in the deterministic simulator: a node whose clock runs minutes ahead
//! or behind is found out by its peers' probe round trips, refuses client writes, and never drags
//! the others' clocks; fixed, it writes again. A clock stepped back while the node runs stalls none
//! of its timers. And the limit the README states: a write taken by a
//! node whose bad clock nobody could measure (it was cut off) waits, refused everywhere, until
//! real time reaches its timestamp, and then wins by last-writer-wins.

use hearsay::clock::Timestamp;
use hearsay::crdt::KeyState;
use hearsay::node::Write;
use hearsay::sim::{Sim, SimConfig};
use hearsay::store::StoreKey;

fn value(sim: &Sim, i: usize, key: &str) -> Option<String> {
    match sim.read(i, &StoreKey::kv(key)) {
        Some(KeyState::Register(r)) => r.value.map(|v| String::from_utf8_lossy(&v.data).into()),
        _ => None,
    }
}

fn out_of_bounds(sim: &Sim, i: usize) -> bool {
    sim.node(i).is_some_and(|n| n.clock_status().out_of_bounds)
}

const MINUTE: i64 = 60_000;

#[test]
fn a_node_minutes_ahead_is_found_out_refuses_writes_and_drags_no_clock() {
    let mut sim = Sim::new(SimConfig::new(3, 5));
    sim.set_skew(2, 5 * MINUTE);
    sim.run_for(5_000);
    assert!(
        out_of_bounds(&sim, 2),
        "{:?}",
        sim.node(2).map(|n| n.clock_status())
    );
    assert!(!out_of_bounds(&sim, 0) && !out_of_bounds(&sim, 1));
    assert!(sim
        .write(2, Write::put_text("k", "from the future"))
        .is_none());
    let ack = sim
        .write(0, Write::put_text("k", "now"))
        .expect("n1 writes");
    // n1's clock was not dragged five minutes ahead by n3's traffic.
    assert!(ack.timestamp.wall_ms() <= sim.clock_of(0) + 500);
    sim.run_for(2_000);
    assert_eq!(value(&sim, 1, "k").as_deref(), Some("now"));
    let dropped: u64 = (0..2)
        .filter_map(|i| sim.node(i))
        .map(|n| n.cluster_stats().dropped_clock_skew)
        .sum();
    assert!(dropped > 0, "n3's stamped traffic is refused and counted");
}

#[test]
fn a_node_minutes_behind_refuses_writes_until_its_clock_is_fixed() {
    let mut sim = Sim::new(SimConfig::new(3, 6));
    sim.set_skew(2, -5 * MINUTE);
    sim.run_for(5_000);
    assert!(out_of_bounds(&sim, 2));
    assert!(sim
        .write(2, Write::put_text("k", "from the past"))
        .is_none());
    sim.set_skew(2, 0);
    sim.run_for(5_000);
    assert!(!out_of_bounds(&sim, 2));
    assert!(sim.write(2, Write::put_text("k", "fixed")).is_some());
    sim.run_for(2_000);
    assert_eq!(value(&sim, 0, "k").as_deref(), Some("fixed"));
}

/// A clock stepped back while the node runs (a bad NTP step): its timers run on, so it goes on
/// probing, stays alive for its peers, finds out and refuses writes. (Before, its timers were in
/// wall time and stalled for the five minutes of the step: it stopped probing and exchanging,
/// its peers declared it dead, and it took writes stamped in the past.)
#[test]
fn a_clock_stepped_back_while_running_stalls_no_timer() {
    let mut sim = Sim::new(SimConfig::new(3, 7));
    sim.run_for(5_000);
    sim.set_skew(2, -5 * MINUTE);
    sim.run_for(10_000);
    assert!(
        out_of_bounds(&sim, 2),
        "{:?}",
        sim.node(2).map(|n| n.clock_status())
    );
    assert!(sim
        .write(2, Write::put_text("k", "from the past"))
        .is_none());
    for i in 0..2 {
        let n3 = sim.view(i).into_iter().find(|(id, _)| id == sim.id(2));
        assert!(
            n3.as_ref().is_some_and(|(_, state)| state.is_up()),
            "n{} sees n3 as {n3:?}",
            i + 1
        );
    }
}

#[test]
fn a_verdict_survives_a_partition_that_hides_the_evidence() {
    let mut sim = Sim::new(SimConfig::new(3, 8));
    sim.set_skew(2, 30_000);
    sim.run_for(5_000);
    assert!(out_of_bounds(&sim, 2));
    sim.partition(&[0, 0, 1]);
    sim.run_for(60_000);
    // Its peers are dead to it now, and it still knows its clock is off.
    assert!(out_of_bounds(&sim, 2));
    assert!(sim.write(2, Write::put_text("k", "ahead")).is_none());
}

#[test]
fn a_write_from_a_clock_nobody_could_measure_waits_until_real_time_reaches_it() {
    let mut sim = Sim::new(SimConfig::new(3, 9));
    sim.run_for(5_000);
    // n3 is cut off, then its clock jumps 30 s ahead: nobody can measure it.
    sim.partition(&[0, 0, 1]);
    sim.run_for(10_000);
    sim.set_skew(2, 30_000);
    let early = sim
        .write(2, Write::put_text("k", "early but ahead"))
        .expect("n3 cannot know");
    sim.run_for(5_000);
    let late = sim
        .write(0, Write::put_text("k", "later"))
        .expect("n1 writes");
    assert!(early.timestamp > late.timestamp);
    sim.heal();
    sim.run_for(10_000);
    // n3 is found out, and its write is refused by the others while it is ahead of their clocks.
    assert!(out_of_bounds(&sim, 2));
    assert_eq!(value(&sim, 0, "k").as_deref(), Some("later"));
    assert_eq!(value(&sim, 2, "k").as_deref(), Some("early but ahead"));
    // Once real time passes its timestamp, last-writer-wins takes it: the documented price of a
    // clock that was off where nobody could see it.
    let reached = Timestamp::new(sim.clock_of(0) + 20_000, 0);
    assert!(reached > early.timestamp);
    sim.run_for(20_000);
    assert_eq!(value(&sim, 0, "k").as_deref(), Some("early but ahead"));
}
