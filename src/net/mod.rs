//! Networking drivers. For now only the fault-injection list, which the cluster transport
//! consults for every datagram and frame it sends or receives.

pub mod faults;
pub mod seal;
