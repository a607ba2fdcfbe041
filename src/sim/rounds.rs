//! The round model of dissemination: `n` lightweight nodes, each owning a real [`RumorMill`]
//! (not a full node with a store, so 100,000 of them fit in memory), one update injected at one
//! node, and synchronous rounds: a message sent in round r is delivered at the start of round
//! r + 1, and each message is lost independently with probability `loss`.
//!
//! In every round each node (1) pushes the rumors that are fresh to it to `fanout` random peers
//! ([`RumorMill::flush`]) and (2) sends one pull request with its [`SeenSummary`] to one random
//! peer, which answers with the queued rumors the asker lacks ([`RumorMill::answer_pull`]):
//! push-pull as in Karp et al. (2000). The protocol decisions are the mill's; this module only
//! moves messages and counts them. Piggybacking on probes (production's loss-robustness path) is
//! left out: pull answers replace blind retransmission here.
//!
//! Reads no clock and does no I/O; the driver times the run and reads peak memory.

use crate::clock::{NodeId, Timestamp};
use crate::crdt::{KeyState, LwwRegister, Value};
use crate::gossip::rumor::{Rumor, RumorConfig, RumorMill, SeenSummary};
use crate::store::StoreKey;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::HashMap;

/// One run of the round model.
#[derive(Clone, Debug)]
pub struct RoundModel {
    pub nodes: usize,
    pub seed: u64,
    /// Peers a fresh rumor is pushed to (production default 3).
    pub fanout: usize,
    /// Probability that a message is lost.
    pub loss: f64,
}

/// What one run measured. Every count is per node, averaged over all nodes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundReport {
    pub nodes: usize,
    pub seed: u64,
    pub fanout: usize,
    pub loss: f64,
    /// Rounds until every node held the update (`None`: it never did within `max_rounds`).
    pub rounds_to_full: Option<u32>,
    /// log3 n + ln ln n + 2 (Karp et al., 2000).
    pub bound: f64,
    /// Nodes holding the update when the run ended.
    pub informed: usize,
    /// Messages that carried the update (pushes and pull answers), sent per node.
    pub msgs_per_node: f64,
    /// Of those, pushes of a fresh rumor.
    pub pushes_per_node: f64,
    /// Of those, answers to pull requests.
    pub pull_answers_per_node: f64,
    /// Pull requests (a summary, no update) sent per node: one per round, as the periodic probe
    /// they ride on in production; amortised over every update in flight.
    pub pull_requests_per_node: f64,
}

/// The theoretical number of rounds of push-pull: log3 n + ln ln n + 2.
pub fn karp_bound(nodes: usize) -> f64 {
    let n = nodes.max(1) as f64;
    n.log(3.0) + n.ln().max(1.0).ln() + 2.0
}

enum Body {
    Rumors(Vec<Rumor>),
    PullRequest(SeenSummary),
}

struct Message {
    from: u32,
    to: u32,
    body: Body,
}

#[derive(Default)]
struct Counts {
    pushes: u64,
    pull_answers: u64,
    pull_requests: u64,
}

struct Network {
    rng: SmallRng,
    loss: f64,
    in_flight: Vec<Message>,
    counts: Counts,
}

impl Network {
    fn send(&mut self, message: Message) {
        match &message.body {
            Body::PullRequest(_) => self.counts.pull_requests += 1,
            Body::Rumors(_) => {}
        }
        if !self.rng.gen_bool(self.loss.clamp(0.0, 1.0)) {
            self.in_flight.push(message);
        }
    }
}

impl RoundModel {
    /// Runs until every node holds the update, or `max_rounds`.
    pub fn run(&self) -> RoundReport {
        let n = self.nodes.max(1);
        let ids: Vec<NodeId> = (0..n).map(node_id).collect();
        let index: HashMap<&NodeId, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id, i as u32))
            .collect();
        let config = RumorConfig {
            fanout: self.fanout.max(1),
            ..RumorConfig::default()
        };
        let mut mills: Vec<RumorMill> = (0..n).map(|_| RumorMill::new(config.clone())).collect();
        let mut net = Network {
            rng: SmallRng::seed_from_u64(self.seed),
            loss: self.loss,
            in_flight: Vec::new(),
            counts: Counts::default(),
        };
        let origin = net.rng.gen_range(0..n);
        mills[origin].publish(update(&ids[origin]), n, true);
        let mut informed = 1;
        let mut round = 0u32;
        let max_rounds = self.max_rounds();
        let rounds_to_full = loop {
            // Deliveries: rumors first, so pull requests are answered with this round's state.
            let mut arrived = std::mem::take(&mut net.in_flight);
            arrived.sort_by_key(|m| matches!(m.body, Body::PullRequest(_)));
            for Message { from, to, body } in arrived {
                let (from, to) = (from as usize, to as usize);
                match body {
                    Body::Rumors(rumors) => {
                        for rumor in rumors {
                            if mills[to].receive(rumor, &ids[from], n, true) {
                                informed += 1;
                            }
                        }
                    }
                    Body::PullRequest(summary) => {
                        let answer = mills[to].answer_pull(&summary, |_| true);
                        if !answer.is_empty() {
                            net.counts.pull_answers += 1;
                            net.send(Message {
                                from: to as u32,
                                to: from as u32,
                                body: Body::Rumors(answer),
                            });
                        }
                    }
                }
            }
            if informed >= n {
                break Some(round);
            }
            if round >= max_rounds {
                break None;
            }
            for (i, mill) in mills.iter_mut().enumerate() {
                let rng = &mut net.rng;
                let me = &ids[i];
                let pushes = mill.flush(&ids, |peers, k| {
                    peers
                        .choose_multiple(rng, k + 1)
                        .filter(|p| *p != me)
                        .take(k)
                        .cloned()
                        .collect()
                });
                for (peer, rumors) in pushes {
                    let Some(&to) = index.get(&peer) else {
                        continue;
                    };
                    net.counts.pushes += 1;
                    net.send(Message {
                        from: i as u32,
                        to,
                        body: Body::Rumors(rumors),
                    });
                }
                if n > 1 {
                    let target = (i + net.rng.gen_range(1..n)) % n;
                    net.send(Message {
                        from: i as u32,
                        to: target as u32,
                        body: Body::PullRequest(mill.summary()),
                    });
                }
            }
            round += 1;
        };
        let per_node = |count: u64| count as f64 / n as f64;
        let counts = &net.counts;
        RoundReport {
            nodes: n,
            seed: self.seed,
            fanout: config.fanout,
            loss: self.loss,
            rounds_to_full,
            bound: karp_bound(n),
            informed,
            msgs_per_node: per_node(counts.pushes + counts.pull_answers),
            pushes_per_node: per_node(counts.pushes),
            pull_answers_per_node: per_node(counts.pull_answers),
            pull_requests_per_node: per_node(counts.pull_requests),
        }
    }

    /// A run that has not finished by then reports `rounds_to_full: null` (heavy loss).
    fn max_rounds(&self) -> u32 {
        (10.0 * karp_bound(self.nodes)) as u32 + 50
    }
}

fn node_id(i: usize) -> NodeId {
    NodeId::new(format!("n{i}")).unwrap_or_else(|e| panic!("generated node id: {e}"))
}

/// The one update of the run: a small register write at `origin`.
fn update(origin: &NodeId) -> Rumor {
    Rumor {
        origin: crate::clock::ReplicaId::new(origin.clone(), 0),
        seq: 1,
        key: StoreKey::kv("k"),
        delta: KeyState::Register(LwwRegister::write(
            Timestamp::from_raw(1),
            origin.clone(),
            Some(Value {
                content_type: "text/plain".into(),
                data: b"v".to_vec(),
            }),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(nodes: usize, seed: u64, loss: f64) -> RoundReport {
        RoundModel {
            nodes,
            seed,
            fanout: 3,
            loss,
        }
        .run()
    }

    #[test]
    fn every_node_gets_the_update_within_the_bound() {
        for seed in 1..=5 {
            let report = run(1_000, seed, 0.0);
            assert_eq!(report.informed, 1_000);
            let rounds = report.rounds_to_full.expect("full dissemination");
            assert!(f64::from(rounds) <= report.bound, "{report:?}");
            assert!(report.msgs_per_node <= 8.0, "{report:?}");
            let parts = report.pushes_per_node + report.pull_answers_per_node;
            assert!((report.msgs_per_node - parts).abs() < 1e-9);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_report() {
        assert_eq!(run(500, 7, 0.1), run(500, 7, 0.1));
        assert_ne!(run(500, 7, 0.1), run(500, 8, 0.1));
    }

    #[test]
    fn loss_slows_dissemination_but_pulls_still_reach_everyone() {
        let report = run(500, 3, 0.3);
        assert_eq!(report.informed, 500);
        assert!(report.rounds_to_full.is_some());
    }

    #[test]
    fn total_loss_never_finishes_and_says_so() {
        let report = run(20, 1, 1.0);
        assert_eq!(report.rounds_to_full, None);
        assert_eq!(report.informed, 1);
    }

    #[test]
    fn a_single_node_holds_its_own_update_at_round_zero() {
        let report = run(1, 1, 0.0);
        assert_eq!(report.rounds_to_full, Some(0));
        assert_eq!(report.msgs_per_node, 0.0);
    }

    #[test]
    fn the_bound_follows_karp() {
        let b = karp_bound(10_000);
        assert!((b - (10_000f64.log(3.0) + 10_000f64.ln().ln() + 2.0)).abs() < 1e-9);
        assert!(karp_bound(100_000) > b);
    }
}
