//! Causal context: the set of dots a replica has observed, kept as a version vector plus a "cloud"
//! of dots that are not yet contiguous (Almeida et al., "Delta State Replicated Data Types", 2018).
//! Deltas carry arbitrary dot sets, so a context must hold gaps; it compacts them away as they fill.

use crate::clock::{Dot, NodeId, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Invariant (kept by every method): no cloud dot is covered by the vector, and no cloud dot
/// directly extends it. Equal dot sets therefore have equal representations, which the Merkle
/// hashes rely on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CausalContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

impl CausalContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// A context holding exactly `dots`.
    pub fn from_dots(dots: impl IntoIterator<Item = Dot>) -> Self {
        let mut ctx = CausalContext {
            vv: VersionVector::new(),
            cloud: dots.into_iter().collect(),
        };
        ctx.compact();
        ctx
    }

    pub fn contains(&self, dot: &Dot) -> bool {
        self.vv.contains(dot) || self.cloud.contains(dot)
    }

    /// The next dot for `node`. Only a node mints its own dots, and it mints them in order, so its
    /// own entry is always contiguous.
    pub fn next_dot(&self, node: &NodeId) -> Dot {
        let in_cloud = self
            .cloud
            .iter()
            .filter(|d| &d.node == node)
            .map(|d| d.counter)
            .max()
            .unwrap_or(0);
        Dot::new(node.clone(), self.vv.get(node).max(in_cloud) + 1)
    }

    pub fn insert(&mut self, dot: Dot) {
        if !self.vv.contains(&dot) {
            self.cloud.insert(dot);
            self.compact();
        }
    }

    pub fn merge(&mut self, other: &CausalContext) {
        self.vv.merge(&other.vv);
        self.cloud.extend(other.cloud.iter().cloned());
        self.compact();
    }

    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// Folds cloud dots into the vector where they extend it and drops those it already covers.
    /// The cloud is sorted by (node, counter), so one pass suffices.
    fn compact(&mut self) {
        let cloud = std::mem::take(&mut self.cloud);
        for dot in cloud {
            let have = self.vv.get(&dot.node);
            if dot.counter == have + 1 {
                self.vv.advance(&dot.node, dot.counter);
            } else if dot.counter > have {
                self.cloud.insert(dot);
            }
        }
    }
}
