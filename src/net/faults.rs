//! Injected network faults: the set of node ids whose cluster traffic is dropped in both
//! directions. Only reachable when the node runs with `--fault-injection`.

use crate::clock::NodeId;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

#[derive(Clone, Default)]
pub struct Faults {
    dropped: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl Faults {
    pub fn set_dropped(&self, ids: BTreeSet<NodeId>) {
        *self.dropped.write().unwrap_or_else(|e| e.into_inner()) = ids;
    }

    pub fn dropped(&self) -> BTreeSet<NodeId> {
        self.dropped
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True when traffic to or from `peer` must be dropped.
    pub fn drops(&self, peer: &NodeId) -> bool {
        self.dropped
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(peer)
    }
}
