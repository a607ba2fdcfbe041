//! The broadcast workload in the simulator: clients write `rate` operations per second spread
//! over the nodes while every link takes `latency_ms`; reports inter-node messages per client
//! operation and the time until each operation is visible on every node.

use super::{MessageKind, Sim, SimConfig};
use crate::crdt::{KeyState, Value};
use crate::gossip::rumor::RumorConfig;
use crate::node::Write;
use crate::store::StoreKey;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct BroadcastWorkload {
    pub nodes: usize,
    pub latency_ms: u64,
    pub rate: u64,
    pub duration_s: u64,
    pub seed: u64,
    /// Probability that any message is lost (0 to 1).
    pub loss: f64,
    /// Dissemination settings of every node.
    pub rumor: RumorConfig,
}

#[derive(Clone, Debug, Serialize)]
pub struct BroadcastReport {
    pub nodes: usize,
    pub loss: f64,
    /// The dissemination settings of the run.
    pub fanout: usize,
    /// The fixed origin fanout, or `null`: `fanout`, one more while relays are paced.
    pub origin_fanout: Option<usize>,
    /// The fixed push interval, or `null`: half the measured round trip (the default).
    pub push_interval_ms: Option<u64>,
    /// `random` or `grid`.
    pub push_plan: crate::gossip::rumor::PushPlan,
    pub ops: u64,
    pub messages: u64,
    pub msgs_per_op: f64,
    /// `msgs_per_op` split by what the messages were (probes, rumor datagrams, anti-entropy...).
    pub msgs_per_op_by_kind: BTreeMap<MessageKind, f64>,
    pub latency_ms_p50: u64,
    pub latency_ms_max: u64,
    /// Operations still not visible everywhere when the run ended.
    pub unfinished: u64,
}

impl BroadcastWorkload {
    pub fn run(&self) -> BroadcastReport {
        let mut config = SimConfig::new(self.nodes, self.seed);
        config.latency_ms = (self.latency_ms, self.latency_ms);
        config.sync_timeout_ms = 10 * self.latency_ms.max(100);
        config.rumor = self.rumor.clone();
        config.loss = self.loss;
        let mut sim = Sim::new(config);
        // Let membership form before measuring.
        sim.run_for(15_000 + 40 * self.latency_ms);
        let sent_before = sim.stats.sent;
        let kinds_before = sim.stats.by_kind.clone();
        let step = (1_000 / self.rate.max(1)).max(1);
        let total = self.rate * self.duration_s;
        let mut pending: Vec<(String, u64)> = Vec::new();
        let mut latencies = Vec::new();
        for op in 0..total {
            let key = format!("op{op}");
            let value = Value {
                content_type: "text/plain".into(),
                data: op.to_le_bytes().to_vec(),
            };
            let node = (op % self.nodes as u64) as usize;
            if sim
                .write(
                    node,
                    Write::KvPut {
                        key: key.clone(),
                        value,
                        ttl_ms: None,
                    },
                )
                .is_some()
            {
                pending.push((key, sim.now()));
            }
            sim.run_for(step);
            settle(&sim, &mut pending, &mut latencies);
        }
        // Let the last operations finish spreading.
        let deadline = sim.now() + 60 * self.latency_ms.max(100);
        while !pending.is_empty() && sim.now() < deadline {
            sim.run_for(step);
            settle(&sim, &mut pending, &mut latencies);
        }
        let messages = sim.stats.sent - sent_before;
        let ops = total.max(1) as f64;
        let msgs_per_op_by_kind = sim
            .stats
            .by_kind
            .iter()
            .map(|(kind, &sent)| {
                let before = kinds_before.get(kind).copied().unwrap_or(0);
                (*kind, (sent - before) as f64 / ops)
            })
            .collect();
        latencies.sort_unstable();
        let pick = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        BroadcastReport {
            nodes: self.nodes,
            loss: self.loss,
            fanout: self.rumor.fanout,
            origin_fanout: self.rumor.origin_fanout,
            push_interval_ms: self.rumor.push_interval_ms,
            push_plan: self.rumor.plan,
            ops: total,
            messages,
            msgs_per_op: messages as f64 / ops,
            msgs_per_op_by_kind,
            latency_ms_p50: pick(0.5),
            latency_ms_max: latencies.last().copied().unwrap_or(0),
            unfinished: pending.len() as u64,
        }
    }
}

/// Moves operations visible on every node from `pending` to `latencies`.
fn settle(sim: &Sim, pending: &mut Vec<(String, u64)>, latencies: &mut Vec<u64>) {
    pending.retain(|(key, written)| {
        let everywhere = (0..sim.len()).all(|i| {
            matches!(sim.read(i, &StoreKey::kv(key)), Some(KeyState::Register(r)) if r.value.is_some())
        });
        if everywhere {
            latencies.push(sim.now() - written);
        }
        !everywhere
    });
}
