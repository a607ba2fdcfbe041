//! Dissemination of replicated state between nodes, as pure state machines: rumor mongering of
//! deltas ([`rumor`]) and Merkle anti-entropy ([`sync`]). No sockets, clocks or threads: the node
//! feeds them what arrived and sends what they return.

pub mod rumor;
pub mod sync;
