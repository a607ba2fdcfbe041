//! hearsay: a replicated key-value store that keeps serving through crashes and partitions.
//!
//! The protocol core is sans-IO: [`crdt`], [`clock`], [`membership`], [`gossip`], [`wire`] and
//! [`node`] take time and input as arguments and touch no sockets, threads or clocks. Drivers
//! wrap it: [`runtime`] (the core's thread and group commit), [`store`] (sled plus a write-ahead
//! log, or memory), [`net`] (UDP/TCP transport, cluster key, faults), [`api`] (axum).
//! [`client`] is the command-line client of the HTTP API.
//! Start reading at [`node`].

pub mod api;
pub mod backup;
pub mod client;
pub mod clock;
pub mod crdt;
pub mod gossip;
pub mod local_cluster;
pub mod membership;
pub mod metrics;
pub mod net;
pub mod node;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod wire;
