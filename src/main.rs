//! The `hearsay` command line. Parses flags (each with an environment variable), then hands over
//! to [`hearsay::server`]. No logic beyond turning arguments into a configuration.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hearsay::api::limits::open_file_limit;
use hearsay::clock::NodeId;
use hearsay::gossip::rumor::{PushPlan, RumorConfig};
use hearsay::local_cluster::LocalCluster;
use hearsay::net::advertise::AdvertiseAddr;
use hearsay::server::{self, Listeners, ServerConfig};
use hearsay::sim::figure;
use hearsay::sim::rounds::{RoundModel, RoundReport};
use hearsay::store::Durability;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

// glibc's malloc contends on its arena locks under many small concurrent allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hearsay",
    version,
    about = "A replicated key-value store that converges by gossip",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Serve(Box<ServeArgs>),
    /// Run a local N-node cluster on 127.0.0.1 in the foreground; Ctrl-C stops it.
    Cluster(ClusterArgs),
    /// Run the deterministic simulator on a workload and print its figures.
    Sim(SimArgs),
    /// Compact a stopped node's database: copy its rows into a fresh one, giving back the space
    /// of deleted and overwritten data.
    Compact(CompactArgs),
    /// Make a new data directory from a backup (`hearsay backup`): a new lifetime of the node it
    /// is restored as, which catches up with its cluster by anti-entropy once started.
    Restore(RestoreArgs),
    #[command(flatten)]
    Client(hearsay::client::ClientCommand),
}

#[derive(clap::Args)]
struct SimArgs {
    /// Workload: `broadcast` (clients write --rate ops/s spread over the nodes). Without it, the
    /// round model: one update injected at one node, messages delivered the next round.
    #[arg(long)]
    workload: Option<String>,
    #[arg(long, default_value_t = 25)]
    nodes: usize,
    /// One-way latency of every link, in milliseconds (broadcast).
    #[arg(long, default_value_t = 100)]
    latency_ms: u64,
    /// Client operations per second (broadcast).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Peers a fresh rumor is pushed to (default 3, the production default).
    #[arg(long)]
    fanout: Option<usize>,
    /// Peers a node's own writes are pushed to (broadcast; default: --fanout).
    #[arg(long)]
    origin_fanout: Option<usize>,
    /// At most one round of relayed pushes per this many milliseconds (broadcast; 0: at once;
    /// default: half the round trip probes measure, 0 under 20 ms).
    #[arg(long)]
    push_interval_ms: Option<u64>,
    /// Which peers fresh rumors are pushed to: random or grid (broadcast; default random).
    #[arg(long, value_enum)]
    push_plan: Option<PushPlanArg>,
    /// Probability that a message is lost, 0 to 1 (round model and broadcast).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Sweep the round model over n = 10, 30, ..., 100,000 and write the figure to this SVG file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CompactArgs {
    /// The node's data directory (the node must be stopped).
    #[arg(long, env = "HEARSAY_DATA")]
    data: PathBuf,
    /// Page cache for the copy, in MiB.
    #[arg(long, env = "HEARSAY_CACHE_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    cache_mb: u64,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// The data directory to create (it must not exist, or be empty).
    #[arg(long, env = "HEARSAY_DATA")]
    data: PathBuf,
    /// The node id the directory belongs to [default: the backed-up node's, to replace it once
    /// it is gone; give a new id to add a copy beside it].
    #[arg(long)]
    node_id: Option<NodeId>,
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// Number of nodes (1 to 50).
    #[arg(long, env = "HEARSAY_NODES", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
    nodes: u16,
    /// HTTP port of n1; node i listens on this + i - 1.
    #[arg(long, env = "HEARSAY_HTTP_BASE", default_value_t = 7001)]
    http_base: u16,
    /// Cluster port of n1; node i listens on this + i - 1.
    #[arg(long, env = "HEARSAY_GOSSIP_BASE", default_value_t = 7101)]
    gossip_base: u16,
    /// Directory holding each node's data directory (n1, n2, ...).
    #[arg(long, env = "HEARSAY_DATA", default_value = "hearsay-data")]
    data: PathBuf,
    /// Durability of every node: fsync, batch or none.
    #[arg(long, env = "HEARSAY_DURABILITY", default_value = "fsync")]
    durability: String,
}

/// Largest `--max-value-bytes` accepted. A value must be able to replicate: anti-entropy sends a
/// key's whole state in one cluster frame of at most 8 MiB, together with the key, the content
/// type and the encoding's overhead; half a frame leaves ample room for those.
const MAX_VALUE_BYTES_CAP: usize = hearsay::wire::MAX_STATE_BYTES;

#[derive(clap::Args)]
struct ServeArgs {
    /// This node's stable id (letters, digits, '-', '_', '.').
    #[arg(long, env = "HEARSAY_NODE_ID", default_value = "n1")]
    node_id: NodeId,
    /// Address for the HTTP API.
    #[arg(long, env = "HEARSAY_HTTP", default_value = "127.0.0.1:7001")]
    http: SocketAddr,
    /// Cluster (gossip) address of this node.
    #[arg(long, env = "HEARSAY_GOSSIP", default_value = "127.0.0.1:7101")]
    gossip: SocketAddr,
    /// The cluster address peers are told to reach this node at: an IP, with or without a port
    /// (without: the bound port) [default: --gossip, which must then name one interface].
    #[arg(long, env = "HEARSAY_ADVERTISE_GOSSIP")]
    advertise_gossip: Option<AdvertiseAddr>,
    /// The HTTP address clients are told (an IP, with or without a port) [default: --http; if
    /// that binds every interface, the advertised cluster address's IP with the --http port].
    #[arg(long, env = "HEARSAY_ADVERTISE_HTTP")]
    advertise_http: Option<AdvertiseAddr>,
    /// Data directory [default: ./hearsay-data/<node-id>].
    #[arg(long, env = "HEARSAY_DATA")]
    data: Option<PathBuf>,
    /// Other nodes' cluster addresses (`host:port`, `[v6]:port` or `name:port`), comma-separated;
    /// a name is resolved again at every contact attempt and each of its addresses tried. None
    /// starts a new cluster.
    #[arg(long, env = "HEARSAY_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// File holding the 32-byte cluster key as 64 hex characters.
    #[arg(long, env = "HEARSAY_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<PathBuf>,
    /// File holding the API token: every HTTP request but /v1/health and /metrics must then
    /// carry `Authorization: Bearer <token>` (the file's contents, surrounding whitespace
    /// trimmed).
    #[arg(long, env = "HEARSAY_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// Enable /v1/admin/faults (for partition tests; never in production).
    #[arg(long, env = "HEARSAY_FAULT_INJECTION")]
    fault_injection: bool,
    /// fsync (default: acknowledged writes survive power loss), batch (sync every 5 ms:
    /// survives kill -9) or none (sled's own 500 ms flush).
    #[arg(long, env = "HEARSAY_DURABILITY", default_value = "fsync")]
    durability: Durability,
    /// Memory for the database's page cache, in MiB: the node's resident memory is about this
    /// plus its own state (a few MiB, and about 50 bytes per key held) [default: 64].
    #[arg(long, env = "HEARSAY_CACHE_MB", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    cache_mb: Option<u64>,
    /// Largest value (request body) accepted, in bytes; at most 4194304 (4 MiB).
    #[arg(long, env = "HEARSAY_MAX_VALUE_BYTES", default_value_t = 1 << 20)]
    max_value_bytes: usize,
    /// HTTP connections served at once; more wait in the listen backlog [default: the open-file
    /// limit less 192 for the rest of the node, at most 16384].
    #[arg(long, env = "HEARSAY_HTTP_MAX_CONNECTIONS")]
    http_max_connections: Option<usize>,
    /// HTTP requests handled at once; more get 503 `overloaded` with Retry-After (/v1/health and
    /// /metrics are not counted) [default: 512].
    #[arg(long, env = "HEARSAY_HTTP_MAX_IN_FLIGHT")]
    http_max_in_flight: Option<usize>,
    /// Milliseconds a client has to send a whole request head [default: 10000].
    #[arg(long, env = "HEARSAY_HTTP_HEADER_TIMEOUT_MS")]
    http_header_timeout_ms: Option<u64>,
    /// Milliseconds a client has to send a whole request body [default: 30000].
    #[arg(long, env = "HEARSAY_HTTP_BODY_TIMEOUT_MS")]
    http_body_timeout_ms: Option<u64>,
    /// Milliseconds a keep-alive connection may stay without a request [default: 60000].
    #[arg(long, env = "HEARSAY_HTTP_IDLE_TIMEOUT_MS")]
    http_idle_timeout_ms: Option<u64>,
    /// If the data directory is damaged, move it aside and start empty under the same node id.
    #[arg(long, env = "HEARSAY_RECOVER")]
    recover: bool,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "HEARSAY_LOG", default_value = "info")]
    log: String,
    /// SWIM: milliseconds between probes of one member (LAN default 800).
    #[arg(long, env = "HEARSAY_PROBE_INTERVAL_MS")]
    probe_interval_ms: Option<u64>,
    /// SWIM: milliseconds to wait for an ack before indirect probes (LAN default 400).
    #[arg(long, env = "HEARSAY_PROBE_TIMEOUT_MS")]
    probe_timeout_ms: Option<u64>,
    /// SWIM: suspicion lasts this many probe intervals times max(1, log10 n) (default 3).
    #[arg(long, env = "HEARSAY_SUSPICION_MULT")]
    suspicion_mult: Option<u32>,
    /// Milliseconds between re-contacts of dead members and seeds (default 2000).
    #[arg(long, env = "HEARSAY_REJOIN_INTERVAL_MS")]
    rejoin_interval_ms: Option<u64>,
    /// A member dead or left this long is forgotten: no longer re-contacted, counted in the
    /// majority or listed (default 259200000, three days).
    #[arg(long, env = "HEARSAY_DEAD_MEMBER_REAP_MS")]
    dead_member_reap_ms: Option<u64>,
    /// Peers a fresh rumor is pushed to (default 3); 0 leaves relayed rumors to piggybacking
    /// and anti-entropy.
    #[arg(long, env = "HEARSAY_FANOUT")]
    fanout: Option<usize>,
    /// Peers this node's own writes are pushed to (default: --fanout). At least the number of
    /// peers sends every write straight to every member.
    #[arg(long, env = "HEARSAY_ORIGIN_FANOUT")]
    origin_fanout: Option<usize>,
    /// At most one round of relayed pushes per this many milliseconds (0: at once). Batches
    /// writes into fewer datagrams under load at the cost of up to this much latency per hop.
    /// Default: half the round trip that probes measure (0 under 20 ms, at most 250), so a LAN
    /// never waits and slow links batch.
    #[arg(long, env = "HEARSAY_PUSH_INTERVAL_MS")]
    push_interval_ms: Option<u64>,
    /// Which peers fresh rumors are pushed to: `random` (default) or `grid` (every member gets
    /// a write once, in two hops: fewer messages, less redundancy under loss).
    #[arg(long, env = "HEARSAY_PUSH_PLAN", value_enum)]
    push_plan: Option<PushPlanArg>,
    /// Milliseconds between anti-entropy exchanges with a random peer (default 2000).
    #[arg(long, env = "HEARSAY_ANTI_ENTROPY_INTERVAL_MS")]
    anti_entropy_interval_ms: Option<u64>,
    /// A tombstone is kept at least this long, and until every member has seen it (default
    /// 60000).
    #[arg(long, env = "HEARSAY_TOMBSTONE_MIN_AGE_MS")]
    tombstone_min_age_ms: Option<u64>,
    /// A member down this long no longer holds tombstone collection back; if it returns, its
    /// unreplicated writes older than the collected tombstones are dropped (default 86400000).
    #[arg(long, env = "HEARSAY_TOMBSTONE_GRACE_MS")]
    tombstone_grace_ms: Option<u64>,
    /// Largest tolerated clock difference between nodes, in milliseconds: a peer's timestamp
    /// further ahead of this node's clock is refused, and so are client writes while this
    /// node's own clock is out of bounds (default 500).
    #[arg(long, env = "HEARSAY_MAX_CLOCK_SKEW_MS")]
    max_clock_skew_ms: Option<u64>,
    /// Below this much free space (MiB) on the data directory's file system, writes are refused
    /// with 507 until space is freed; they resume at one and a half times as much (default
    /// 128).
    #[arg(long, env = "HEARSAY_DISK_RESERVE_MB")]
    disk_reserve_mb: Option<u64>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `hearsay` or `hearsay kv` alone: the help, listing the subcommands, is the answer.
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) if e.use_stderr() => {
            // One line, not clap's usage block: the first line names the problem.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("error: bad arguments");
            eprintln!("{first} (see 'hearsay --help')");
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Cluster(args) => cluster(args),
        Command::Sim(args) => sim(args),
        Command::Compact(args) => compact(args),
        Command::Restore(args) => restore(args),
        Command::Client(command) => return hearsay::client::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`hearsay sim ... | head -1`): nothing more to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes one line of a command's output to stdout (an error, not a panic, once the reader is
/// gone).
fn say(line: std::fmt::Arguments) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

#[allow(clippy::disallowed_methods)] // the command reports how long it took
fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let done = hearsay::store::compact(&args.data, args.cache_mb << 20)?;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    say(format_args!(
        "compacted {}: {:.1} MB -> {:.1} MB ({} rows) in {:.1} s",
        args.data.display(),
        mb(done.bytes_before),
        mb(done.bytes_after),
        done.rows,
        started.elapsed().as_secs_f64()
    ))?;
    Ok(())
}

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let done = hearsay::backup::restore(&args.file, &args.data, args.node_id)?;
    say(format_args!(
        "restored {} records of {} into {} as node {} (root {}, {} keys); start it with \
         `hearsay serve --node-id {} --data {} --seeds <a member>` to catch up",
        done.records,
        done.from,
        args.data.display(),
        done.node,
        done.root.hex(),
        done.root.count,
        done.node,
        args.data.display(),
    ))?;
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log)?;
    let data_dir = args
        .data
        .clone()
        .unwrap_or_else(|| Path::new("hearsay-data").join(args.node_id.as_str()));
    let cluster_key = args
        .cluster_key_file
        .as_deref()
        .map(read_cluster_key)
        .transpose()?;
    let mut config = ServerConfig::new(args.node_id, data_dir);
    config.seeds = args.seeds;
    config.advertise_gossip = args.advertise_gossip;
    config.advertise_http = args.advertise_http;
    config.cluster_key = cluster_key;
    config.fault_injection = args.fault_injection;
    config.api_token = args
        .api_token_file
        .as_deref()
        .map(read_api_token)
        .transpose()?;
    config.durability = args.durability;
    if let Some(mb) = args.cache_mb {
        config.cache_bytes = mb << 20;
    }
    if args.max_value_bytes > MAX_VALUE_BYTES_CAP {
        bail!(
            "--max-value-bytes {} is over the cap of {MAX_VALUE_BYTES_CAP} (4 MiB): a larger value \
             would not fit in a cluster frame and could never replicate",
            args.max_value_bytes
        );
    }
    config.max_value_bytes = args.max_value_bytes;
    let http = &mut config.http;
    http.max_connections = args.http_max_connections.unwrap_or(http.max_connections);
    http.max_in_flight = args.http_max_in_flight.unwrap_or(http.max_in_flight);
    for (flag, limit) in [
        (args.http_header_timeout_ms, &mut http.header_timeout),
        (args.http_body_timeout_ms, &mut http.body_timeout),
        (args.http_idle_timeout_ms, &mut http.idle_timeout),
    ] {
        *limit = flag.map_or(*limit, Duration::from_millis);
    }
    http.validate(open_file_limit())
        .map_err(anyhow::Error::msg)?;
    config.recover = args.recover;
    let timings = &mut config.cluster;
    let m = &mut timings.membership;
    m.probe_interval_ms = args.probe_interval_ms.unwrap_or(m.probe_interval_ms);
    m.probe_timeout_ms = args.probe_timeout_ms.unwrap_or(m.probe_timeout_ms);
    m.suspicion_mult = args.suspicion_mult.unwrap_or(m.suspicion_mult);
    m.rejoin_interval_ms = args.rejoin_interval_ms.unwrap_or(m.rejoin_interval_ms);
    m.reap_after_ms = args.dead_member_reap_ms.unwrap_or(m.reap_after_ms);
    m.validate().map_err(anyhow::Error::msg)?;
    apply_rumor_flags(
        &mut timings.rumor,
        args.fanout,
        args.origin_fanout,
        args.push_interval_ms,
    );
    timings.rumor.plan = args.push_plan.map_or(timings.rumor.plan, PushPlan::from);
    timings.anti_entropy_interval_ms = args
        .anti_entropy_interval_ms
        .unwrap_or(timings.anti_entropy_interval_ms)
        .max(10);
    let t = &mut timings.tombstones;
    t.min_age_ms = args.tombstone_min_age_ms.unwrap_or(t.min_age_ms);
    t.grace_ms = args.tombstone_grace_ms.unwrap_or(t.grace_ms);
    timings.max_clock_skew_ms = args.max_clock_skew_ms.unwrap_or(timings.max_clock_skew_ms);
    if let Some(mb) = args.disk_reserve_mb {
        timings.disk_reserve_bytes = mb.saturating_mul(1 << 20);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listeners = Listeners::bind(args.http, args.gossip).await?;
        let node = server::open_node(&config, &listeners)?;
        server::serve(config, node, listeners, shutdown_signal())
            .await
            .context("HTTP server failed")
    })
}

fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    args.durability
        .parse::<Durability>()
        .map_err(anyhow::Error::msg)?;
    let launcher = LocalCluster {
        nodes: args.nodes,
        http_base: args.http_base,
        gossip_base: args.gossip_base,
        data: args.data,
        extra: vec!["--durability".into(), args.durability],
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(launcher.run())
}

fn sim(args: SimArgs) -> anyhow::Result<()> {
    if args.workload.is_some() && args.svg.is_some() {
        bail!("--svg belongs to the round model: leave out --workload");
    }
    if !(0.0..=1.0).contains(&args.loss) {
        bail!("--loss must be between 0 and 1");
    }
    if let Some(path) = &args.svg {
        return sim_figure(&args, path);
    }
    match args.workload.as_deref() {
        None => sim_rounds(&args),
        Some("broadcast") => sim_broadcast(&args),
        Some(other) => bail!(
            "unknown workload {other:?}: the simulator runs `broadcast`, or the round model without --workload"
        ),
    }
}

/// A round-model run with the driver's measurements of it.
#[derive(serde::Serialize)]
struct MeasuredRun {
    #[serde(flatten)]
    report: RoundReport,
    elapsed_ms: u64,
    /// Peak resident memory of the whole process so far (Linux VmHWM), in KiB.
    peak_rss_kib: Option<u64>,
}

#[allow(clippy::disallowed_methods)] // the driver times the run; the model reads no clock
fn measured_round_model(args: &SimArgs, nodes: usize) -> anyhow::Result<MeasuredRun> {
    if nodes == 0 || nodes > 1_000_000 {
        bail!("--nodes must be between 1 and 1,000,000 for the round model");
    }
    if !(0.0..=1.0).contains(&args.loss) {
        bail!("--loss must be between 0 and 1");
    }
    let started = std::time::Instant::now();
    let report = RoundModel {
        nodes,
        seed: args.seed,
        fanout: args.fanout.unwrap_or(RumorConfig::default().fanout).max(1),
        loss: args.loss,
    }
    .run();
    Ok(MeasuredRun {
        report,
        elapsed_ms: started.elapsed().as_millis() as u64,
        peak_rss_kib: peak_rss_kib(),
    })
}

fn sim_rounds(args: &SimArgs) -> anyhow::Result<()> {
    let run = measured_round_model(args, args.nodes)?;
    if !args.json {
        let r = &run.report;
        let rounds = r
            .rounds_to_full
            .map_or_else(|| "never".to_string(), |x| x.to_string());
        say(format_args!(
            "{} nodes: every node held the update after {rounds} rounds (bound {:.2}); {:.2} messages per node carried it, {:.2} pull requests per node; {} ms",
            r.nodes, r.bound, r.msgs_per_node, r.pull_requests_per_node, run.elapsed_ms
        ))?;
    }
    say(format_args!("{}", serde_json::to_string(&run)?))?;
    Ok(())
}

fn sim_figure(args: &SimArgs, path: &Path) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for nodes in figure::SWEEP {
        let run = measured_round_model(args, nodes)?;
        if !args.json {
            say(format_args!(
                "n = {nodes}: rounds {:?} (bound {:.2}), {:.2} messages per node",
                run.report.rounds_to_full, run.report.bound, run.report.msgs_per_node
            ))?;
        }
        runs.push(run);
    }
    let reports: Vec<RoundReport> = runs.iter().map(|r| r.report.clone()).collect();
    std::fs::write(path, figure::dissemination_svg(&reports))
        .with_context(|| format!("cannot write {}", path.display()))?;
    say(format_args!("{}", serde_json::to_string(&runs)?))?;
    Ok(())
}

/// Peak resident set size from /proc/self/status (`None` off Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn sim_broadcast(args: &SimArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 1_000 {
        bail!("--nodes must be between 1 and 1000 for the broadcast workload");
    }
    let mut rumor = RumorConfig::default();
    apply_rumor_flags(
        &mut rumor,
        args.fanout,
        args.origin_fanout,
        args.push_interval_ms,
    );
    rumor.plan = args.push_plan.map_or(rumor.plan, PushPlan::from);
    let report = hearsay::sim::broadcast::BroadcastWorkload {
        nodes: args.nodes,
        latency_ms: args.latency_ms,
        rate: args.rate,
        duration_s: args.duration_s,
        seed: args.seed,
        loss: args.loss,
        rumor,
    }
    .run();
    if !args.json {
        say(format_args!(
            "{} nodes, {} ops: {:.1} messages per op, visible everywhere after p50 {} ms, max {} ms ({} unfinished)",
            report.nodes, report.ops, report.msgs_per_op, report.latency_ms_p50, report.latency_ms_max, report.unfinished
        ))?;
    }
    say(format_args!("{}", serde_json::to_string(&report)?))?;
    Ok(())
}

/// `--push-plan`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PushPlanArg {
    Random,
    Grid,
}

impl From<PushPlanArg> for PushPlan {
    fn from(arg: PushPlanArg) -> Self {
        match arg {
            PushPlanArg::Random => PushPlan::Random,
            PushPlanArg::Grid => PushPlan::Grid,
        }
    }
}

/// The dissemination flags shared by `serve` and `sim --workload broadcast`.
fn apply_rumor_flags(
    rumor: &mut RumorConfig,
    fanout: Option<usize>,
    origin_fanout: Option<usize>,
    push_interval_ms: Option<u64>,
) {
    rumor.fanout = fanout.unwrap_or(rumor.fanout);
    rumor.origin_fanout = origin_fanout.or(rumor.origin_fanout);
    rumor.push_interval_ms = push_interval_ms.or(rumor.push_interval_ms);
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad --log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

/// The API token in `path`: its contents, surrounding whitespace trimmed; at least 16 characters,
/// visible ASCII (it travels in a header).
fn read_api_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read --api-token-file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "--api-token-file {}: the token must be at least 16 visible ASCII characters              (e.g. `openssl rand -hex 32 > {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(token.to_string())
}

fn read_cluster_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read cluster key file {}", path.display()))?;
    let hex = text.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "cluster key file {} must hold exactly 64 hex characters (32 bytes)",
            path.display()
        );
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(key)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
