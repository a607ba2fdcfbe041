//! Dissemination defaults in the simulator's broadcast workload (25 full nodes, clients writing
//! 100 operations per second spread over them). On 100 ms links the relays pace themselves by
//! half the round trip their probes measure and batch what arrives meanwhile, and a round's
//! rumors go to the peers the round already sends to: under 15 messages per write where pushing
//! everything at once cost about 70 (15.7 when each rumor picked its own peers). On a LAN the same defaults never
//! wait: the run is the very run of relays that push at once.

use hearsay::gossip::rumor::{PushPlan, RumorConfig};
use hearsay::sim::broadcast::{BroadcastReport, BroadcastWorkload};

fn run(latency_ms: u64, rumor: RumorConfig) -> BroadcastReport {
    BroadcastWorkload {
        nodes: 25,
        latency_ms,
        rate: 100,
        duration_s: 10,
        seed: 1,
        loss: 0.0,
        rumor,
    }
    .run()
}

#[test]
fn on_slow_links_the_defaults_batch_relays_under_fifteen_messages_per_write() {
    let report = run(100, RumorConfig::default());
    println!("{report:?}");
    assert_eq!(report.unfinished, 0);
    assert!(report.msgs_per_op < 15.0, "{report:?}");
    assert!(report.latency_ms_p50 < 400, "{report:?}");
    assert!(report.latency_ms_max < 600, "{report:?}");
}

#[test]
fn on_a_lan_the_defaults_never_wait() {
    let defaults = run(1, RumorConfig::default());
    let at_once = run(
        1,
        RumorConfig {
            push_interval_ms: Some(0),
            ..RumorConfig::default()
        },
    );
    println!("{defaults:?}");
    assert_eq!(
        (
            defaults.messages,
            defaults.latency_ms_p50,
            defaults.latency_ms_max
        ),
        (
            at_once.messages,
            at_once.latency_ms_p50,
            at_once.latency_ms_max
        )
    );
}

#[test]
fn the_grid_plan_reaches_everyone_in_two_hops_with_at_most_ten_messages_per_write() {
    // 25 members fill a 5 x 5 grid: four pushes at once along the origin's row, then rounds every
    // 250 ms along each column (a relay's round trip is 200 ms).
    let grid = RumorConfig {
        plan: PushPlan::Grid,
        push_interval_ms: Some(250),
        ..RumorConfig::default()
    };
    let report = run(100, grid);
    println!("{report:?}");
    assert_eq!(report.unfinished, 0);
    assert!(report.msgs_per_op <= 10.0, "{report:?}");
    assert!(report.latency_ms_p50 < 400, "{report:?}");
    assert!(report.latency_ms_max < 600, "{report:?}");
    // On a LAN (nothing paced) every member gets each write once: about half the messages of
    // random pushes, and sooner.
    let grid_lan = run(
        1,
        RumorConfig {
            plan: PushPlan::Grid,
            ..RumorConfig::default()
        },
    );
    let random_lan = run(1, RumorConfig::default());
    println!("{grid_lan:?}");
    assert_eq!(grid_lan.unfinished, 0);
    assert!(
        grid_lan.msgs_per_op < random_lan.msgs_per_op * 0.6,
        "{grid_lan:?} vs {random_lan:?}"
    );
    assert!(grid_lan.latency_ms_max <= random_lan.latency_ms_max);
}
