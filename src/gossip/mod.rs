//! Dissemination of replicated state between nodes, as pure state machines: rumor mongering of
//! deltas ([`rumor`]) and Merkle anti-entropy ([`sync`]).
//!
//! Nothing here opens sockets, spawns threads, reads clocks or draws random numbers: a driver
//! carries the messages (the production runtime, or the simulator) and the node applies merges.

pub mod rumor;
pub mod sync;
