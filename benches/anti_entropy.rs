//! One Merkle anti-entropy exchange between two in-memory replicas of N keys that differ in 100:
//! 40 keys only the initiator holds, 30 only the responder holds, and 30 written on both sides
//! with different timestamps (half won by each side).
//!
//!     cargo bench --bench anti_entropy                      # N = 1,000,000
//!     HEARSAY_AE_KEYS=100000 cargo bench --bench anti_entropy
//!
//! Every message goes through postcard both ways, as on the wire. Prints the rounds, bytes and
//! keys repaired, and the time of the exchange alone (setup excluded); fails unless both roots
//! are equal afterwards.
#![allow(clippy::disallowed_methods)] // tests and benchmarks measure real time

use hearsay::clock::{NodeId, Timestamp};
use hearsay::crdt::{KeyState, LwwRegister, Value};
use hearsay::gossip::sync::{respond, MemoryReplica, SyncMessage, SyncSession, SyncSource};
use hearsay::store::StoreKey;
use std::time::Instant;

const ONLY_INITIATOR: u64 = 40;
const ONLY_RESPONDER: u64 = 30;
const CONFLICTS: u64 = 30;

fn register(ts: u64, node: &NodeId, data: &[u8]) -> KeyState {
    KeyState::Register(LwwRegister::write(
        Timestamp::from_raw(ts),
        node.clone(),
        Some(Value {
            content_type: String::new(),
            data: data.to_vec(),
        }),
    ))
}

fn key(i: u64) -> StoreKey {
    StoreKey::kv(format!("key-{i:08}"))
}

/// Encodes and decodes, as a frame would.
fn wire(message: SyncMessage) -> SyncMessage {
    let bytes = postcard::to_stdvec(&message).expect("encode");
    postcard::from_bytes(&bytes).expect("decode")
}

fn main() {
    let n: u64 = std::env::var("HEARSAY_AE_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (n1, n2) = (NodeId::new("n1").unwrap(), NodeId::new("n2").unwrap());

    let setup = Instant::now();
    let mut a = MemoryReplica::new();
    for i in 0..n {
        a.merge(key(i), register(i + 1, &n1, b"value-16-bytes.."));
    }
    let mut b = a.clone();
    for i in 0..ONLY_INITIATOR {
        a.merge(key(n + i), register(n + i + 1, &n1, b"only on a"));
    }
    for i in 0..ONLY_RESPONDER {
        b.merge(key(2 * n + i), register(n + i + 1, &n2, b"only on b"));
    }
    for i in 0..CONFLICTS {
        // Spread over the key range; even ones won by a, odd ones by b.
        let k = key(i * (n / CONFLICTS).max(1));
        let (ts_a, ts_b) = if i % 2 == 0 { (3, 2) } else { (2, 3) };
        a.merge(k.clone(), register(2 * n + ts_a, &n1, b"conflict a"));
        b.merge(k, register(2 * n + ts_b, &n2, b"conflict b"));
    }
    let differences = ONLY_INITIATOR + ONLY_RESPONDER + CONFLICTS;
    println!(
        "setup: {} + {} keys in {:.1} s",
        a.len(),
        b.len(),
        setup.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let (mut session, mut request) = SyncSession::start(&a, true);
    let mut largest = 0;
    loop {
        largest = largest.max(request.encoded_len());
        let (reply, merges) = respond(&b, wire(request));
        for (key, state) in merges {
            b.merge(key, state);
        }
        let reply = reply.expect("the responder accepts every request of a session");
        largest = largest.max(reply.encoded_len());
        let step = session.handle(&a, wire(reply));
        for (key, state) in step.merge {
            a.merge(key, state);
        }
        match step.send {
            Some(next) if !step.done => request = next,
            _ => break,
        }
    }
    let elapsed = started.elapsed();
    let stats = session.stats();

    println!("keys:           {n}");
    println!("differences:    {differences}");
    println!("rounds:         {}", stats.rounds);
    println!(
        "bytes:          {} ({} sent, {} received; largest message {})",
        stats.bytes(),
        stats.bytes_sent,
        stats.bytes_received,
        largest
    );
    println!(
        "keys repaired:  {} ({} pushed, {} fetched)",
        stats.keys_sent + stats.keys_received,
        stats.keys_sent,
        stats.keys_received
    );
    println!("elapsed:        {:.1} ms", elapsed.as_secs_f64() * 1e3);
    assert!(!stats.aborted, "the session aborted");
    assert_eq!(
        a.merkle().root(),
        b.merkle().root(),
        "the replicas did not converge"
    );
    println!("roots equal:    yes ({} keys each)", a.len());
}
