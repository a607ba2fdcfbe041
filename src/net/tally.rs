//! Counting open cluster connections: a [`Tally`] is held by whoever holds a connection, and
//! keeps it in `hearsay_cluster_connections{direction,role}` for exactly as long as it lives
//! (a connection's task may end by any path, an abort included). Touches metrics only.

use crate::metrics::{ConnectionLabels, Metrics};
use std::sync::Arc;

/// One open connection in the gauge; leaves it when dropped.
pub struct Tally {
    metrics: Arc<Metrics>,
    labels: ConnectionLabels,
}

impl Tally {
    /// Counts a connection just opened (or accepted) in both the gauge and the opened counter.
    pub fn open(metrics: &Arc<Metrics>, direction: &'static str, role: &'static str) -> Tally {
        let labels = ConnectionLabels { direction, role };
        metrics
            .cluster_connections_opened
            .get_or_create(&labels)
            .inc();
        metrics.cluster_connections.get_or_create(&labels).inc();
        Tally {
            metrics: metrics.clone(),
            labels,
        }
    }

    /// Moves the connection to another role (an inbound connection that authenticated).
    pub fn promote(self, role: &'static str) -> Tally {
        Tally::open(&self.metrics, self.labels.direction, role)
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.metrics
            .cluster_connections
            .get_or_create(&self.labels)
            .dec();
    }
}
