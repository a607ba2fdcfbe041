//! Wires one node together: opens the data directory, starts the core's driver, serves the HTTP
//! API on an already-bound listener until shutdown, then checkpoints the store. Used by `main`
//! and by the integration tests (which bind port 0, so they never race for ports).

use crate::api::{self, ApiSettings, AppState};
use crate::clock::NodeId;
use crate::metrics::Metrics;
use crate::net::faults::Faults;
use crate::node::{Node, NodeError};
use crate::runtime;
use crate::store::{Durability, SledStore, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Everything `hearsay serve` is told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node_id: NodeId,
    pub gossip_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub seeds: Vec<String>,
    pub cluster_key: Option<[u8; 32]>,
    pub fault_injection: bool,
    pub durability: Durability,
    pub max_value_bytes: usize,
    /// Move a damaged data directory aside and start empty under the same node id.
    pub recover: bool,
}

impl ServerConfig {
    /// Defaults for a node in `data_dir` (tests and tools start from this).
    pub fn new(node_id: NodeId, data_dir: PathBuf) -> Self {
        ServerConfig {
            node_id,
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            seeds: Vec::new(),
            cluster_key: None,
            fault_injection: false,
            durability: Durability::Fsync,
            max_value_bytes: 1 << 20,
            recover: false,
        }
    }
}

/// Opens the node's data directory (upgrading its layout and replaying its log).
pub fn open_node(config: &ServerConfig) -> Result<Node<SledStore>, NodeError> {
    let opened = SledStore::open(&config.data_dir, config.durability);
    let store = match opened {
        Err(StoreError::Damaged { dir, reason }) if config.recover => {
            let aside = move_aside(&dir)?;
            tracing::warn!(
                damaged = %aside.display(),
                %reason,
                "recovery: moved the damaged data directory aside; starting empty"
            );
            SledStore::open(&config.data_dir, config.durability)?
        }
        other => other?,
    };
    Node::open(store, config.node_id.clone())
}

fn move_aside(dir: &Path) -> Result<PathBuf, StoreError> {
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(".damaged-{}", runtime::wall_ms()));
    let aside = PathBuf::from(aside);
    std::fs::rename(dir, &aside).map_err(|source| StoreError::Unwritable {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(aside)
}

/// Serves `node` on `listener` until `shutdown` completes or a client asks the node to leave.
pub async fn serve(
    config: ServerConfig,
    node: Node<SledStore>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http_addr = listener.local_addr()?;
    // `batch` durability syncs the log on this timer; the others only use it for housekeeping.
    let tick = match config.durability {
        Durability::Batch => Duration::from_millis(5),
        _ => Duration::from_secs(1),
    };
    let handle = runtime::start(node, tick);
    let state = AppState {
        node: handle.clone(),
        metrics: Arc::new(Metrics::new()),
        faults: Faults::default(),
        settings: Arc::new(ApiSettings {
            max_value_bytes: config.max_value_bytes,
            fault_injection: config.fault_injection,
            http_addr,
            gossip_addr: config.gossip_addr,
        }),
        leave: Arc::new(tokio::sync::Notify::new()),
    };
    let leave = state.leave.clone();
    let app = api::router(state);
    tracing::info!(
        node = %config.node_id,
        http = %http_addr,
        data = %config.data_dir.display(),
        durability = ?config.durability,
        "serving"
    );
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = leave.notified() => {}
        }
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
    handle.shutdown().await;
    tracing::info!(node = %config.node_id, "stopped");
    served
}
