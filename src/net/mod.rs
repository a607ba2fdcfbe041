//! Networking drivers: the cluster transport (tokio UDP and TCP), the cluster key's sealing,
//! the addresses a node advertises, and injected faults. They move and protect bytes; the protocol lives in the core.

mod admission;
pub mod advertise;
pub mod faults;
mod framing;
mod inbound;
mod pool;
pub mod seal;
mod sealed;
mod tally;
pub mod transport;
pub mod versions;
