//! PUT and GET throughput of one hearsay node against a raw axum + sled server that does nothing
//! but `insert` (no fsync) and `get`, measured in the same run with the same load generator:
//! 64 concurrent keep-alive connections, 100-byte values.
//!
//!     cargo bench --bench throughput            # 5 s per phase
//!     HEARSAY_BENCH_SECS=10 cargo bench --bench throughput
//!
//! Prints requests per second for each server and phase and the ratio hearsay / raw.
#![allow(clippy::disallowed_methods)] // tests and benchmarks measure real time

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hearsay::clock::NodeId;
use hearsay::server::{self, ServerConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The allocator the hearsay binary uses, for both servers alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: usize = 64;
const VALUE: [u8; 100] = [b'v'; 100];

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("HEARSAY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("temp dir");

    let raw = start_raw(dir.path().join("raw")).await;
    let node = start_hearsay(dir.path().join("hearsay")).await;
    println!(
        "{CONNECTIONS} connections, {secs} s per phase in 3 alternating rounds, 100-byte values"
    );

    let phase = Duration::from_secs(secs);
    // Only one phase, for profiling: HEARSAY_BENCH_ONLY=put or get (hearsay alone).
    if let Ok(only) = std::env::var("HEARSAY_BENCH_ONLY") {
        let write = only == "put";
        if !write {
            prefill(&format!("{node}/v1/kv")).await;
        }
        let rate = load(&format!("{node}/v1/kv"), write, phase, 0).await;
        println!("{only} hearsay: {rate:.0} req/s");
        return;
    }
    // Phases alternate in short rounds so that background work (sled's flushes) and machine
    // noise fall on both servers alike.
    let rounds = 3;
    let round = phase / rounds;
    let (mut raw_put, mut node_put) = (0.0, 0.0);
    for r in 0..rounds {
        raw_put += load(&format!("{}/kv", raw.0), true, round, r).await / rounds as f64;
        node_put += load(&format!("{node}/v1/kv"), true, round, r).await / rounds as f64;
    }
    prefill(&format!("{}/kv", raw.0)).await;
    prefill(&format!("{node}/v1/kv")).await;
    raw.1.flush().expect("flush");
    // Let hearsay's database flush its writes too before measuring reads.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut raw_get, mut node_get) = (0.0, 0.0);
    for _ in 0..rounds {
        raw_get += load(&format!("{}/kv", raw.0), false, round, 0).await / rounds as f64;
        node_get += load(&format!("{node}/v1/kv"), false, round, 0).await / rounds as f64;
    }
    println!("PUT  raw axum+sled (no fsync): {raw_put:>9.0} req/s");
    println!(
        "PUT  hearsay (fsync, group commit): {node_put:>9.0} req/s   ratio {:.2}",
        node_put / raw_put
    );
    println!("GET  raw axum+sled:            {raw_get:>9.0} req/s");
    println!(
        "GET  hearsay:                  {node_get:>9.0} req/s   ratio {:.2}",
        node_get / raw_get
    );
}

async fn start_hearsay(data: std::path::PathBuf) -> String {
    let config = ServerConfig::new(NodeId::new("bench").unwrap(), data);
    let any = "127.0.0.1:0".parse().unwrap();
    let node = server::spawn(config, any, any, std::future::pending())
        .await
        .expect("start hearsay");
    format!("http://{}", node.http_addr)
}

async fn start_raw(data: std::path::PathBuf) -> (String, sled::Db) {
    let db = sled::open(data).expect("open sled");
    async fn put(State(db): State<sled::Db>, Path(key): Path<String>, body: Bytes) -> StatusCode {
        match db.insert(key.as_bytes(), body.as_ref()) {
            Ok(_) => StatusCode::OK,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    async fn fetch(
        State(db): State<sled::Db>,
        Path(key): Path<String>,
    ) -> Result<Vec<u8>, StatusCode> {
        match db.get(key.as_bytes()) {
            Ok(Some(v)) => Ok(v.to_vec()),
            Ok(None) => Err(StatusCode::NOT_FOUND),
            Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
    let app = Router::new()
        .route("/kv/{*key}", get(fetch).put(put))
        .with_state(db.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, db)
}

/// Keys every reader reads, per worker.
const READ_KEYS: u64 = 200;

/// Writes the keys the readers read (`g{worker}-{i}`), checking that each write succeeds.
async fn prefill(base: &str) {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for w in 0..CONNECTIONS {
        let (client, base) = (client.clone(), base.to_string());
        tasks.push(tokio::spawn(async move {
            for i in 0..READ_KEYS {
                let resp = client
                    .put(format!("{base}/g{w}-{i}"))
                    .body(VALUE.to_vec())
                    .send()
                    .await;
                assert!(resp.expect("prefill write").status().is_success());
            }
        }));
    }
    for t in tasks {
        t.await.expect("prefill task");
    }
}

/// Runs `CONNECTIONS` workers for `duration` and returns successful requests per second. Writers
/// of round `r` use keys `c{worker}-{i}` (fresh keys in every round); readers read the prefilled
/// keys, so every read finds its key.
async fn load(base: &str, write: bool, duration: Duration, r: u32) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let started = Instant::now();
    for w in 0..CONNECTIONS {
        let (client, done, stop, base) =
            (client.clone(), done.clone(), stop.clone(), base.to_string());
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = if write {
                    format!("c{w}-{}", u64::from(r) << 40 | i)
                } else {
                    format!("g{w}-{}", i % READ_KEYS)
                };
                let req = if write {
                    client.put(format!("{base}/{key}")).body(VALUE.to_vec())
                } else {
                    client.get(format!("{base}/{key}"))
                };
                if let Ok(resp) = req.send().await {
                    if resp.status().is_success() && resp.bytes().await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
