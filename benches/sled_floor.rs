//! What sled 0.34 itself costs, without hearsay: the floor under the figures of
//! `cargo bench --bench storage`.
//!
//!     cargo bench --bench sled_floor                               # 1,000,000 rows
//!     HEARSAY_SLED_ROWS=100000 cargo bench --bench sled_floor       # scaled down
//!
//! For each configuration sled offers that bears on space and speed (page cache, segment size,
//! the low-space mode), it writes HEARSAY_SLED_ROWS rows shaped like hearsay's records (a 10-byte
//! key, a 150-byte value: a 100-byte value with its register's fields) and prints: rows per second
//! inserted one by one in random order (as writes arrive) and in batches of 4,096 in key order (as
//! a compaction copies), bytes on disk after a flush, after overwriting every row once, and after
//! removing half the rows; then the same rows copied into a fresh database (what
//! `hearsay compact` does); and the process's resident memory after the inserts and after the
//! overwrites (each configuration runs in a process of its own, with hearsay's allocator). The compression feature is left out: it links zstd, and hearsay's
//! values are the clients' bytes, compressible or not.
#![allow(clippy::disallowed_methods)] // a benchmark measures real time

use std::path::Path;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The environment variable naming the one configuration a child process runs.
const SETTING_VAR: &str = "HEARSAY_SLED_SETTING";

const KEY_BYTES: usize = 10;
const VALUE_BYTES: usize = 150;
const BATCH: usize = 4096;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Allocated bytes of every file under `dir` (what `du` reports).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut k = [b'r'; KEY_BYTES];
    k[2..].copy_from_slice(&i.to_be_bytes());
    k
}

/// Values whose bytes vary, as records do (a timestamp, a node id, the client's bytes).
fn value(i: u64, round: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_BYTES);
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round;
    while v.len() < VALUE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(VALUE_BYTES);
    v
}

/// A permutation of 0..n (a fixed multiplicative walk, so every run is the same).
fn shuffled(n: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..n).collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

struct Setting {
    name: &'static str,
    config: fn(sled::Config) -> sled::Config,
}

/// This process's resident memory now, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

fn main() {
    let rows = env("HEARSAY_SLED_ROWS", 1_000_000) as u64;
    let live = rows * (KEY_BYTES + VALUE_BYTES) as u64;
    let settings = [
        Setting {
            name: "64 MiB cache (hearsay's default)",
            config: |c| c.cache_capacity(64 << 20),
        },
        Setting {
            name: "16 MiB cache",
            config: |c| c.cache_capacity(16 << 20),
        },
        Setting {
            name: "1 GiB cache (sled's default)",
            config: |c| c.cache_capacity(1 << 30),
        },
        Setting {
            name: "64 MiB cache, low-space mode",
            config: |c| c.cache_capacity(64 << 20).mode(sled::Mode::LowSpace),
        },
        Setting {
            name: "64 MiB cache, 128 KiB segments",
            config: |c| c.cache_capacity(64 << 20).segment_size(128 << 10),
        },
        Setting {
            name: "64 MiB cache, 4 MiB segments",
            config: |c| c.cache_capacity(64 << 20).segment_size(4 << 20),
        },
    ];
    let Some(chosen) = std::env::var(SETTING_VAR)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        // Each configuration in a process of its own, so that its memory is its own.
        let mut lines = Vec::new();
        for index in 0..settings.len() {
            let out = std::process::Command::new(std::env::current_exe().expect("this bench"))
                .env(SETTING_VAR, index.to_string())
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("run one configuration");
            assert!(out.status.success(), "configuration {index} failed");
            lines.push(String::from_utf8_lossy(&out.stdout).trim_end().to_string());
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!();
        println!(
            "sled 0.34 alone: {rows} rows of {KEY_BYTES}+{VALUE_BYTES} bytes ({} live; ratios \
             against the live rows, after the removal against the half left) (load average: {})",
            mb(live),
            load.trim()
        );
        for line in lines {
            println!("{line}");
        }
        return;
    };
    let order = shuffled(rows);
    if let Some(setting) = settings.get(chosen) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let open = |path: &Path| {
            (setting.config)(sled::Config::new().path(path).flush_every_ms(None))
                .open()
                .expect("open sled")
        };
        let db = open(&dir.path().join("random"));
        let started = Instant::now();
        for &i in &order {
            db.insert(key(i), value(i, 0)).expect("insert");
        }
        db.flush().expect("flush");
        let random_rate = rows as f64 / started.elapsed().as_secs_f64();
        let inserted = disk_bytes(&dir.path().join("random"));
        let rss_inserted = rss_bytes();
        for &i in &order {
            db.insert(key(i), value(i, 1)).expect("overwrite");
        }
        db.flush().expect("flush");
        let rss_overwritten = rss_bytes();
        let overwritten = disk_bytes(&dir.path().join("random"));
        for i in (0..rows).step_by(2) {
            db.remove(key(i)).expect("remove");
        }
        db.flush().expect("flush");
        let halved = disk_bytes(&dir.path().join("random"));

        let copy = open(&dir.path().join("copy"));
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        let mut copied = 0;
        for row in db.iter() {
            let (k, v) = row.expect("read");
            batch.insert(k, v);
            copied += 1;
            if copied % BATCH == 0 {
                copy.apply_batch(std::mem::take(&mut batch)).expect("batch");
            }
        }
        copy.apply_batch(batch).expect("batch");
        copy.flush().expect("flush");
        let copy_rate = copied as f64 / started.elapsed().as_secs_f64();
        let compacted = disk_bytes(&dir.path().join("copy"));
        let line = format!(
            "  {:<34} {:>9.0} rows/s random, {:>9.0} rows/s batched; inserted {} ({:.1}×), \
             overwritten {} ({:.1}×), half removed {} ({:.1}×), copied {} ({:.1}×); \
             RSS {} after the inserts, {} after the overwrites",
            setting.name,
            random_rate,
            copy_rate,
            mb(inserted),
            inserted as f64 / live as f64,
            mb(overwritten),
            overwritten as f64 / live as f64,
            mb(halved),
            halved as f64 * 2.0 / live as f64,
            mb(compacted),
            compacted as f64 * 2.0 / live as f64,
            mb(rss_inserted),
            mb(rss_overwritten),
        );
        eprintln!("{line}");
        println!("{line}");
    }
}
