//! Failure detection on lossy links, in the deterministic simulator: three nodes whose every
//! message is lost with probability 0.1 for five simulated minutes, no node failing. Plain SWIM
//! suspected someone about every 13 s per observer and member there; with a second Ping beside
//! the indirect probes, any message from the member counting as an answer, the local health
//! score, the buddy system and suspicion timeouts that need confirmations, it must not bury
//! anyone and hardly ever suspect anyone, while a real crash is still seen everywhere within
//! five seconds.

use hearsay::membership::{MemberState, MembershipConfig};
use hearsay::sim::{Sim, SimConfig};

/// Three nodes with the LAN timings on links that lose `loss` of their messages.
fn lossy(seed: u64, loss: f64) -> Sim {
    let mut config = SimConfig::new(3, seed);
    config.membership = MembershipConfig::lan();
    config.loss = loss;
    let mut sim = Sim::new(config);
    sim.run_for(5_000);
    for i in 0..3 {
        assert_eq!(
            alive(&sim, i),
            3,
            "node {i} sees everyone alive before the test"
        );
    }
    sim
}

fn alive(sim: &Sim, i: usize) -> usize {
    sim.view(i)
        .iter()
        .filter(|(_, state)| *state == MemberState::Alive)
        .count()
}

/// Summed over the nodes: suspicions their probes raised, members they saw become Suspect, and
/// Dead.
fn counts(sim: &Sim) -> [u64; 3] {
    (0..sim.len())
        .filter_map(|i| sim.node(i))
        .map(|n| n.cluster_stats())
        .fold([0; 3], |[r, s, d], c| {
            [
                r + c.suspicions_raised,
                s + c.members_suspected,
                d + c.members_declared_dead,
            ]
        })
}

/// Twenty runs of five simulated minutes (a hundred minutes in all). A suspicion is counted
/// once, by the node whose probe raised it (each is then seen by up to two nodes).
#[test]
fn ten_percent_loss_for_five_minutes_buries_no_one_and_hardly_suspects_anyone() {
    let mut total = [0; 3];
    for seed in 1..=20 {
        let mut sim = lossy(seed, 0.1);
        let before = counts(&sim);
        sim.run_for(300_000);
        let after = counts(&sim);
        let [raised, seen, dead] = [0, 1, 2].map(|k| after[k] - before[k]);
        println!("seed {seed}: {raised} false suspicions ({seen} transitions to suspect), {dead} false deaths in 5 minutes");
        assert_eq!(dead, 0, "seed {seed}: a member was declared dead");
        assert!(
            raised <= 2,
            "seed {seed}: {raised} false suspicions in 5 minutes"
        );
        for k in 0..3 {
            total[k] += after[k] - before[k];
        }
    }
    println!(
        "100 minutes: {} false suspicions, {} transitions to suspect, {} false deaths",
        total[0], total[1], total[2]
    );
    assert!(total[0] <= 10, "{total:?}");
}

#[test]
fn under_ten_percent_loss_a_crash_is_still_seen_everywhere_within_five_seconds() {
    for seed in [1, 2, 3, 4, 5] {
        let mut sim = lossy(seed, 0.1);
        sim.run_for(10_000);
        sim.crash(2);
        let took = sim.run_until_holds(30_000, 50, |sim| {
            (0..2).all(|i| {
                sim.view(i)
                    .iter()
                    .any(|(id, state)| id == sim.id(2) && *state == MemberState::Dead)
            })
        });
        println!("seed {seed}: the crash was seen everywhere after {took:?} ms");
        assert!(
            took.is_some_and(|ms| ms <= 5_000),
            "seed {seed}: the crash was seen everywhere after {took:?} ms"
        );
    }
}
