//! Wires one node together: binds its listeners, opens the data directory, starts the core's
//! driver and the cluster transport, serves the HTTP API until shutdown, leaves the cluster and
//! checkpoints the store. Used by `main`, `hearsay cluster` and the integration tests (which bind
//! port 0, so they never race for ports).

use crate::api::{self, ApiSettings, AppState, HttpLimits};
use crate::clock::NodeId;
use crate::metrics::Metrics;
use crate::net::advertise::{self, AdvertiseAddr, AdvertiseError};
use crate::net::faults::Faults;
use crate::net::seal::Sealer;
use crate::net::transport;
use crate::node::{ClusterConfig, Node, NodeError};
use crate::runtime;
use crate::store::{Durability, SledStore, StoreError};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Everything `hearsay serve` is told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Other nodes' cluster addresses (`host:port`; a name is resolved again at every contact
    /// attempt, and each of its addresses tried).
    pub seeds: Vec<String>,
    /// What peers are told this node's cluster address is (`--advertise-gossip`); `None`: the
    /// bound address.
    pub advertise_gossip: Option<AdvertiseAddr>,
    /// What clients are told this node's HTTP address is (`--advertise-http`).
    pub advertise_http: Option<AdvertiseAddr>,
    pub cluster_key: Option<[u8; 32]>,
    pub fault_injection: bool,
    pub durability: Durability,
    /// The database's page cache, in bytes (`--cache-mb`).
    pub cache_bytes: u64,
    pub max_value_bytes: usize,
    /// Connection cap, requests in flight and timeouts of the HTTP server.
    pub http: HttpLimits,
    /// Move a damaged data directory aside and start empty under the same node id.
    pub recover: bool,
    /// Timings of membership and anti-entropy (LAN defaults).
    pub cluster: ClusterConfig,
    /// The token HTTP requests must carry (`--api-token-file`); `None`: none.
    pub api_token: Option<String>,
}

impl ServerConfig {
    /// Defaults for a node in `data_dir` (tests and tools start from this).
    pub fn new(node_id: NodeId, data_dir: PathBuf) -> Self {
        ServerConfig {
            node_id,
            data_dir,
            seeds: Vec::new(),
            advertise_gossip: None,
            advertise_http: None,
            cluster_key: None,
            fault_injection: false,
            durability: Durability::Fsync,
            cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            max_value_bytes: 1 << 20,
            http: HttpLimits::default(),
            recover: false,
            cluster: ClusterConfig::standalone(),
            api_token: None,
        }
    }

    /// The cluster and HTTP addresses this node advertises, given the sockets it bound.
    pub fn advertised(
        &self,
        listeners: &Listeners,
    ) -> Result<(SocketAddr, SocketAddr), ServerError> {
        let gossip = advertise::gossip_addr(listeners.gossip_addr(), self.advertise_gossip)?;
        let http = advertise::http_addr(listeners.http_addr(), self.advertise_http, gossip)?;
        Ok((gossip, http))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} for {what}: {cause}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        cause: std::io::Error,
    },
    #[error("bad seed {seed:?}: {reason}")]
    Seed { seed: String, reason: String },
    #[error(transparent)]
    Advertise(#[from] AdvertiseError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// The sockets a node serves on, bound before anything else so that a port in use fails fast.
pub struct Listeners {
    pub http: tokio::net::TcpListener,
    pub gossip_udp: tokio::net::UdpSocket,
    pub gossip_tcp: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds HTTP on `http` and the cluster address (UDP and TCP on the same port) on `gossip`.
    /// Port 0 picks free ports.
    pub async fn bind(http: SocketAddr, gossip: SocketAddr) -> Result<Self, ServerError> {
        let bind_err = |addr, what| move |cause| ServerError::Bind { addr, what, cause };
        let http_listener = tokio::net::TcpListener::bind(http)
            .await
            .map_err(bind_err(http, "HTTP"))?;
        // With port 0, the TCP port must match the UDP one: retry a few free ports.
        let mut attempts = 0;
        loop {
            let udp = tokio::net::UdpSocket::bind(gossip)
                .await
                .map_err(bind_err(gossip, "cluster traffic (UDP)"))?;
            let port_addr = udp
                .local_addr()
                .map_err(bind_err(gossip, "cluster traffic"))?;
            match tokio::net::TcpListener::bind(port_addr).await {
                Ok(tcp) => {
                    return Ok(Listeners {
                        http: http_listener,
                        gossip_udp: udp,
                        gossip_tcp: tcp,
                    })
                }
                Err(e) if gossip.port() != 0 || attempts >= 20 => {
                    return Err(bind_err(gossip, "cluster traffic (TCP)")(e))
                }
                Err(_) => attempts += 1,
            }
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_udp
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// Seeds as given: addresses (`10.0.0.5:7101`, `[fd00::5]:7101`) and names (`host:port`), the
/// latter resolved by the transport at every contact attempt. A name that does not resolve now
/// is kept (its addresses may not be published yet) with a warning.
fn parse_seeds(seeds: &[String]) -> Result<(Vec<SocketAddr>, Vec<String>), ServerError> {
    let (mut addrs, mut names) = (Vec::new(), Vec::new());
    for seed in seeds.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if let Ok(addr) = seed.parse::<SocketAddr>() {
            addrs.push(addr);
            continue;
        }
        let bad = |reason: &str| ServerError::Seed {
            seed: seed.to_string(),
            reason: reason.to_string(),
        };
        let (host, port) = seed
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?;
        if host.is_empty() || host.contains(':') || host.contains(['[', ']']) {
            return Err(bad(
                "expected host:port (an IPv6 address goes in brackets: [fd00::5]:7101)",
            ));
        }
        port.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
        if let Err(e) = seed.to_socket_addrs() {
            tracing::warn!(%seed, error = %e, "seed name does not resolve yet; it is resolved again at every contact attempt");
        }
        names.push(seed.to_string());
    }
    Ok((addrs, names))
}

/// Opens the node's data directory (upgrading its layout and replaying its log) as a member of
/// the cluster reachable through `config.seeds`.
pub fn open_node(
    config: &ServerConfig,
    listeners: &Listeners,
) -> Result<Node<SledStore>, ServerError> {
    let (gossip_addr, http_addr) = config.advertised(listeners)?;
    let opened =
        SledStore::open_with_cache(&config.data_dir, config.durability, config.cache_bytes);
    let mut recovered = false;
    let store = match opened {
        Err(StoreError::Damaged { dir, reason }) if config.recover => {
            recovered = true;
            let aside = move_aside(&dir).map_err(NodeError::from)?;
            tracing::warn!(
                damaged = %aside.display(),
                %reason,
                "recovery: moved the damaged data directory aside; starting empty"
            );
            SledStore::open_with_cache(&config.data_dir, config.durability, config.cache_bytes)
                .map_err(NodeError::from)?
        }
        other => other.map_err(NodeError::from)?,
    };
    let mut cluster = config.cluster.clone();
    cluster.gossip_addr = gossip_addr;
    cluster.http_addr = http_addr;
    (cluster.seeds, cluster.seed_names) = parse_seeds(&config.seeds)?;
    cluster.rng_seed = rand::RngCore::next_u64(&mut rand::rngs::OsRng);
    cluster.opened_at_ms = runtime::wall_ms();
    // With peers to resync from, a recovered node does not serve reads until it has.
    cluster.resync_first |= recovered && !cluster.seeds.is_empty();
    Ok(Node::open_in_cluster(
        store,
        config.node_id.clone(),
        cluster,
    )?)
}

fn move_aside(dir: &Path) -> Result<PathBuf, StoreError> {
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(".damaged-{}", runtime::wall_ms()));
    let aside = PathBuf::from(aside);
    std::fs::rename(dir, &aside).map_err(|cause| StoreError::Unwritable {
        dir: dir.to_path_buf(),
        cause,
    })?;
    Ok(aside)
}

/// Serves `node` until `shutdown` completes or a client asks the node to leave; then announces
/// the leave to the cluster and closes the store.
pub async fn serve(
    config: ServerConfig,
    node: Node<SledStore>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http_addr = listeners.http_addr();
    let gossip_addr = listeners.gossip_addr();
    // What `open_node` chose to advertise.
    let (advertised_gossip, advertised_http) = (node.me().gossip_addr, node.me().http_addr);
    // Membership timers need a fine tick.
    let tick = Duration::from_millis(20);
    let (outbound_tx, outbound_rx) = tokio::sync::mpsc::unbounded_channel();
    let (handle, reader) = runtime::start(node, tick, outbound_tx);
    let metrics = Arc::new(Metrics::new());
    let faults = Faults::default();
    let transport = transport::spawn(
        listeners.gossip_udp,
        listeners.gossip_tcp,
        Sealer::new(config.cluster_key),
        faults.clone(),
        metrics.clone(),
        handle.clone(),
        outbound_rx,
    );
    let state = AppState {
        node: handle.clone(),
        reader,
        metrics,
        faults,
        settings: Arc::new(ApiSettings {
            max_value_bytes: config.max_value_bytes,
            fault_injection: config.fault_injection,
            body_timeout: config.http.body_timeout,
            max_in_flight: config.http.max_in_flight,
            api_token: api::auth::ApiToken(config.api_token.as_deref().map(Arc::from)),
        }),
        leave: Arc::new(tokio::sync::Notify::new()),
        watchers: AppState::watcher_slots(),
    };
    let leave = state.leave.clone();
    let connections = state.metrics.http_connections.clone();
    let app = api::router(state);
    tracing::info!(
        node = %config.node_id,
        http = %http_addr,
        gossip = %gossip_addr,
        data = %config.data_dir.display(),
        durability = ?config.durability,
        advertise_gossip = %advertised_gossip,
        advertise_http = %advertised_http,
        "serving"
    );
    let feed = handle.feed().clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = leave.notified() => {}
        }
        // Watch streams end, so that the connections carrying them can close.
        feed.close();
    };
    api::serve(listeners.http, app, &config.http, connections, stop).await;
    handle.leave().await;
    // Give the transport a moment to send the leave announcement.
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.shutdown().await;
    transport.stop();
    tracing::info!(node = %config.node_id, "stopped");
    Ok(())
}

/// A node started by [`spawn`].
pub struct Spawned {
    pub http_addr: SocketAddr,
    pub gossip_addr: SocketAddr,
    /// Ends when the node has stopped.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds, opens and serves a node on this runtime until `shutdown` completes: what the
/// examples, benchmarks and in-process tests need. Port 0 in `http` or `gossip` picks a free port.
pub async fn spawn(
    config: ServerConfig,
    http: SocketAddr,
    gossip: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Spawned, ServerError> {
    let listeners = Listeners::bind(http, gossip).await?;
    let (http_addr, gossip_addr) = (listeners.http_addr(), listeners.gossip_addr());
    let node = open_node(&config, &listeners)?;
    let task = tokio::spawn(serve(config, node, listeners, shutdown));
    Ok(Spawned {
        http_addr,
        gossip_addr,
        task,
    })
}

/// Starts `n` nodes (`n1`, `n2`, ...) on this runtime, on free ports of 127.0.0.1, with their
/// data under `dir` and fault injection on; `n2` and later join through `n1`. Returns their HTTP
/// base URLs. For examples and benchmarks that want a whole cluster in one process.
pub async fn spawn_cluster(n: usize, dir: &Path) -> Result<Vec<String>, ServerError> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut urls = Vec::with_capacity(n);
    let mut seed: Option<String> = None;
    for i in 1..=n {
        let id = NodeId::new(format!("n{i}")).map_err(ServerError::Config)?;
        let mut config = ServerConfig::new(id, dir.join(format!("n{i}")));
        config.fault_injection = true;
        config.seeds = seed.iter().cloned().collect();
        let node = spawn(config, any, any, std::future::pending()).await?;
        seed.get_or_insert(node.gossip_addr.to_string());
        urls.push(format!("http://{}", node.http_addr));
    }
    Ok(urls)
}
