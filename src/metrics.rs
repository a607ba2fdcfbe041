//! Prometheus metrics: one registry per node, rendered in the text exposition format at
//! `GET /metrics`. Owns metric definitions only; callers record into them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: &'static str,
    /// The matched route pattern (`/v1/kv/{*key}`), never the raw path, to bound cardinality.
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    /// `datagram` or `frame`.
    pub kind: &'static str,
    /// `in` or `out`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `decode`, `auth`, `stale`, `oversized`, `truncated`, `timeout`, `fault`, `overload`,
    /// `queue_full` or `unreachable`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `in` or `out`.
    pub direction: &'static str,
    /// Inbound: `unauthenticated` (no authentic frame yet) or `peer`. Outbound: `frames` (the
    /// pooled one-way connection to a peer) or `sync` (an anti-entropy session).
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyspaceLabels {
    pub keyspace: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

/// A histogram whose buckets the core counts (the node's plain running totals), copied in at
/// each scrape: `set` replaces the whole; nothing is observed here.
#[derive(Clone, Debug, Default)]
pub struct CountedHistogram {
    inner: std::sync::Arc<std::sync::Mutex<CountedBuckets>>,
}

#[derive(Debug, Default)]
struct CountedBuckets {
    sum: f64,
    count: u64,
    /// Upper bound and count (not cumulative); the last bound is `f64::MAX` (`+Inf`).
    buckets: Vec<(f64, u64)>,
}

impl CountedHistogram {
    /// Sets the histogram to `buckets` (upper bound, `None` for `+Inf`, and the count in that
    /// bucket alone), their `sum` and their total `count`.
    pub fn set(&self, sum: f64, count: u64, buckets: impl Iterator<Item = (Option<f64>, u64)>) {
        let buckets = buckets
            .map(|(bound, n)| (bound.unwrap_or(f64::MAX), n))
            .collect();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner = CountedBuckets {
            sum,
            count,
            buckets,
        };
    }
}

impl prometheus_client::encoding::EncodeMetric for CountedHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            inner.sum,
            inner.count,
            &inner.buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// HTTP connections open now (at most `--http-max-connections`).
    pub http_connections: Gauge,
    /// HTTP requests being handled now (at most `--http-max-in-flight`).
    pub http_in_flight: Gauge,
    pub keys: Gauge,
    pub store_bytes: Gauge,
    pub cluster_messages: Family<TrafficLabels, Counter>,
    pub cluster_bytes: Family<TrafficLabels, Counter>,
    pub cluster_dropped: Family<DropLabels, Counter>,
    /// Open cluster TCP connections by direction and role.
    pub cluster_connections: Family<ConnectionLabels, Gauge>,
    /// Cluster TCP connections opened (outbound) or accepted and then authenticated (inbound).
    pub cluster_connections_opened: Family<ConnectionLabels, Counter>,
    /// Encoded bytes of one-way frames waiting for their pooled connection (capped).
    pub cluster_frames_queued_bytes: Gauge,
    pub members: Family<StateLabels, Gauge>,
    /// 1 while `/v1/health` gives the reason, else 0.
    pub health_degraded: Family<ReasonLabels, Gauge>,
    /// Rumor events: `published`, `pushed`, `received`, `merged`.
    pub rumors: Family<EventLabels, Counter>,
    /// Anti-entropy events: `sessions`, `rounds`, `keys_repaired`.
    pub anti_entropy: Family<EventLabels, Counter>,
    pub anti_entropy_bytes: Counter,
    pub rumor_seen_entries: Gauge,
    /// Tombstone events: `collected`, `refused` (stale values refused), `forgotten`.
    pub tombstones: Family<EventLabels, Counter>,
    pub tombstones_held: Gauge,
    pub conflicts: Family<KeyspaceLabels, Counter>,
    pub heals: Counter,
    /// Membership events: `suspected`, `declared_dead` (other members, as this node saw them
    /// change), `suspicion_raised` (by its own probes), `refuted` (suspicions of itself).
    pub member_events: Family<EventLabels, Counter>,
    /// Lifeguard's local health score (0 = healthy).
    pub local_health: Gauge,
    /// From a write's timestamp at its origin to its merge here, for kv writes that came by
    /// rumor (see `node/replication_lag.rs`).
    pub replication_lag: CountedHistogram,
    /// Consistency-level events: `write_met`, `write_timeout`, `read_met`, `read_timeout`,
    /// `read_merged`, `repair_sent`.
    pub consistency: Family<EventLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hearsay");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let http_seconds = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            http_seconds.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "HTTP connections open (at most --http-max-connections)",
            http_connections.clone(),
        );
        let http_in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled (at most --http-max-in-flight; health and metrics not counted)",
            http_in_flight.clone(),
        );
        let keys = Gauge::default();
        registry.register(
            "keys",
            "Keys with replicated state on this node (tombstones included)",
            keys.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "Size of the data directory's database on disk",
            store_bytes.clone(),
        );
        let cluster_messages = Family::<TrafficLabels, Counter>::default();
        registry.register(
            "cluster_messages",
            "Cluster datagrams and frames by kind and direction",
            cluster_messages.clone(),
        );
        let cluster_bytes = Family::<TrafficLabels, Counter>::default();
        registry.register(
            "cluster_bytes",
            "Cluster bytes by kind and direction (sealed sizes)",
            cluster_bytes.clone(),
        );
        let cluster_dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "cluster_dropped",
            "Cluster messages dropped, by reason",
            cluster_dropped.clone(),
        );
        let cluster_connections = Family::<ConnectionLabels, Gauge>::default();
        registry.register(
            "cluster_connections",
            "Open cluster TCP connections by direction and role",
            cluster_connections.clone(),
        );
        let cluster_connections_opened = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "cluster_connections_opened",
            "Cluster TCP connections opened or accepted (in/unauthenticated) and authenticated \
             (in/peer), by direction and role",
            cluster_connections_opened.clone(),
        );
        let cluster_frames_queued_bytes = Gauge::default();
        registry.register(
            "cluster_frames_queued_bytes",
            "Encoded bytes of one-way frames waiting for their pooled connection to a peer",
            cluster_frames_queued_bytes.clone(),
        );
        let members = Family::<StateLabels, Gauge>::default();
        registry.register(
            "members",
            "Members by state, as this node sees them",
            members.clone(),
        );
        let health_degraded = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "health_degraded",
            "1 while this node's health is degraded for the reason (minority, isolated, clock_skew, disk_full, resyncing)",
            health_degraded.clone(),
        );
        let rumors = Family::<EventLabels, Counter>::default();
        registry.register(
            "rumors",
            "Delta rumors published, pushed, received and merged",
            rumors.clone(),
        );
        let anti_entropy = Family::<EventLabels, Counter>::default();
        registry.register(
            "anti_entropy",
            "Anti-entropy sessions started, request rounds and keys repaired",
            anti_entropy.clone(),
        );
        let anti_entropy_bytes = Counter::default();
        registry.register(
            "anti_entropy_bytes",
            "Bytes exchanged by finished anti-entropy sessions this node started",
            anti_entropy_bytes.clone(),
        );
        let rumor_seen_entries = Gauge::default();
        registry.register(
            "rumor_seen_entries",
            "Entries of the rumor seen-tracker (bounded by members, not writes)",
            rumor_seen_entries.clone(),
        );
        let tombstones = Family::<EventLabels, Counter>::default();
        registry.register(
            "tombstones",
            "Tombstones collected; values refused or forgotten as older than a collected tombstone",
            tombstones.clone(),
        );
        let conflicts = Family::<KeyspaceLabels, Counter>::default();
        registry.register(
            "conflicts",
            "Writes this node merged that discarded a concurrent write (one its writer had not seen) by last-writer-wins",
            conflicts.clone(),
        );
        let heals = Counter::default();
        registry.register(
            "heals",
            "Times members this node had declared dead came back and it converged with them all (each also logged, and reported in /v1/cluster/status)",
            heals.clone(),
        );
        let member_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "member_events",
            "Members this node saw become suspect (suspected) or dead (declared_dead), suspicions its own probes raised (suspicion_raised), and suspicions of itself it refuted (refuted)",
            member_events.clone(),
        );
        let local_health = Gauge::default();
        registry.register(
            "local_health",
            "Local health score (0 = healthy, at most 8): raised by this node's failed probes and refutations, its probes run 1 + score times more slowly",
            local_health.clone(),
        );
        let replication_lag = CountedHistogram::default();
        registry.register(
            "replication_lag_seconds",
            "Time from a kv write's timestamp at its origin to its merge on this node, for writes that came by rumor (this node's clock: between machines the clocks' offset is included)",
            replication_lag.clone(),
        );
        let consistency = Family::<EventLabels, Counter>::default();
        registry.register(
            "consistency",
            "Writes (?w=) and reads (?r=) whose wait was met or timed out; states a read merged into this node that changed it; merged states a read sent to members that held less",
            consistency.clone(),
        );
        let tombstones_held = Gauge::default();
        registry.register(
            "tombstones_held",
            "Tombstones this node holds (not yet seen by every member), and values due to expire (collected alike)",
            tombstones_held.clone(),
        );
        Metrics {
            registry,
            tombstones,
            tombstones_held,
            conflicts,
            heals,
            member_events,
            local_health,
            replication_lag,
            consistency,
            cluster_messages,
            cluster_bytes,
            cluster_dropped,
            cluster_connections,
            cluster_connections_opened,
            cluster_frames_queued_bytes,
            members,
            health_degraded,
            rumors,
            anti_entropy,
            anti_entropy_bytes,
            rumor_seen_entries,
            http_requests,
            http_seconds,
            http_connections,
            http_in_flight,
            keys,
            store_bytes,
        }
    }

    /// Raises a counter to `total` (the core keeps plain running totals).
    pub fn raise(counter: &Counter, total: u64) {
        counter.inc_by(total.saturating_sub(counter.get()));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
