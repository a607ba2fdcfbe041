//! Injected network faults: node ids whose cluster traffic is dropped in both directions, a
//! fraction of cluster datagrams and frames lost at random (both directions), and a delay added
//! to every outgoing cluster message. Only reachable when the node runs with `--fault-injection`;
//! the transport asks, it never decides here what to send.

use crate::clock::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The longest delay that may be injected (a minute): longer would only look like a dead link.
pub const MAX_DELAY_MS: u64 = 60_000;

/// What is injected now; `FaultSet::default()` is a healthy network.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSet {
    /// Node ids whose cluster traffic to and from this node is dropped.
    pub dropped: BTreeSet<NodeId>,
    /// The fraction (0.0 to 1.0) of cluster datagrams and frames dropped at random, on the way
    /// out and on the way in.
    pub loss: f64,
    /// Added to every outgoing cluster message (milliseconds, at most [`MAX_DELAY_MS`]).
    pub delay_ms: u64,
}

#[derive(Clone)]
pub struct Faults {
    set: Arc<RwLock<FaultSet>>,
    /// Draws the random losses.
    rng: Arc<Mutex<SmallRng>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            set: Arc::default(),
            rng: Arc::new(Mutex::new(SmallRng::from_entropy())),
        }
    }
}

impl Faults {
    /// Replaces what is injected.
    pub fn set(&self, faults: FaultSet) {
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    pub fn current(&self) -> FaultSet {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True when traffic to or from `peer` must be dropped, as cut off or lost at random.
    pub fn drops(&self, peer: &NodeId) -> bool {
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        set.dropped.contains(peer) || self.lost(set.loss)
    }

    /// True when a message whose peer is unknown is lost at random.
    pub fn loses(&self) -> bool {
        let loss = self.set.read().unwrap_or_else(|e| e.into_inner()).loss;
        self.lost(loss)
    }

    /// How long outgoing messages are held back (zero when no delay is injected).
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.set.read().unwrap_or_else(|e| e.into_inner()).delay_ms)
    }

    fn lost(&self, loss: f64) -> bool {
        loss > 0.0
            && self
                .rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .gen_bool(loss.clamp(0.0, 1.0))
    }
}
