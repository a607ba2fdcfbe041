//! Networking drivers: the cluster transport (tokio UDP and TCP), the cluster key's sealing,
//! and injected faults. They move and protect bytes; the protocol lives in the core.

pub mod faults;
pub mod seal;
mod tally;
pub mod transport;
