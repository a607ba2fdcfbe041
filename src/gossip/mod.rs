//! Node-to-node replication protocols, as pure state machines: anti-entropy ([`sync`]) today.
//!
//! Nothing here opens sockets, spawns threads, reads clocks or draws random numbers: a driver
//! carries the messages (the production runtime over TCP, or the simulator) and applies the merges.

pub mod sync;
