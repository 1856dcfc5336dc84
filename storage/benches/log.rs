//! Storage benchmarks (`cargo bench -p streambus-storage`): append and sequential-read
//! throughput of the partition log as ratios to plain file I/O of the same bytes on the same
//! disk, appends/s under `flush.messages=1` with 1 vs 8 appenders (group commit), and memory per
//! idle partition. Ratios are printed at the end of the run; they compare measurements taken in
//! the same run, which is what survives a noisy shared machine.
//!
//! Set `STREAMBUS_BENCH_DIR` to benchmark another disk (default: the system temp dir).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use streambus_storage::batch::testing;
use streambus_storage::{Log, LogConfig, LogOptions};

/// Log and file are reset once they hold this much, to keep page-cache pressure bounded.
const RESET_BYTES: u64 = 256 * 1024 * 1024;
/// Bytes read per fetch in the read benchmark (a typical consumer `fetch.max.bytes` share).
const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Appends per thread count in the group-commit measurement.
const FSYNC_APPENDS: usize = 400;
/// Partitions opened to measure idle memory.
const IDLE_PARTITIONS: usize = 500;

/// Per-byte times recorded by each benchmark, for the ratio summary.
static NS_PER_BYTE: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(name: &str, elapsed: Duration, bytes: u64) {
    if bytes == 0 {
        return;
    }
    let mut map = NS_PER_BYTE.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(name.to_owned())
        .or_default()
        .push(elapsed.as_nanos() as f64 / bytes as f64);
}

fn median(name: &str) -> Option<f64> {
    let map = NS_PER_BYTE.lock().unwrap_or_else(|p| p.into_inner());
    let mut v = map.get(name)?.clone();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("STREAMBUS_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// A batch of about `bytes` bytes made of 1 KiB records.
fn batch_of(bytes: usize) -> Bytes {
    let records = (bytes / 1024).max(1);
    testing::batch(records, 1024 - 20, b'x', 1_700_000_000_000)
}

fn big_config() -> LogConfig {
    LogConfig {
        segment_bytes: 512 * 1024 * 1024,
        max_message_bytes: 2 * 1024 * 1024,
        ..LogConfig::default()
    }
}

fn bench_append(c: &mut Criterion, label: &str, batch_bytes: usize) {
    let batch = batch_of(batch_bytes);
    let len = batch.len() as u64;
    let mut group = c.benchmark_group(format!("append_{label}"));
    group.throughput(Throughput::Bytes(len));

    let dir = bench_dir();
    let log =
        Log::open(&dir.path().join("p-0"), big_config(), LogOptions::default()).expect("open");
    let name = format!("append_{label}/log");
    group.bench_function("log", |b| {
        b.iter_custom(|iters| {
            if log.size_bytes() > RESET_BYTES {
                log.truncate_fully_and_start_at(0).expect("reset");
            }
            let start = Instant::now();
            for _ in 0..iters {
                log.append_as_leader(batch.clone(), 0).expect("append");
            }
            let elapsed = start.elapsed();
            record(&name, elapsed, len * iters);
            elapsed
        })
    });

    let path = dir.path().join("plain.bin");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("plain file");
    let name = format!("append_{label}/plain_write");
    group.bench_function("plain_write", |b| {
        b.iter_custom(|iters| {
            if file.metadata().map(|m| m.len()).unwrap_or(0) > RESET_BYTES {
                file.set_len(0).expect("reset");
            }
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all(&batch).expect("write");
            }
            let elapsed = start.elapsed();
            record(&name, elapsed, len * iters);
            elapsed
        })
    });
    group.finish();
}

fn bench_read(c: &mut Criterion) {
    let dir = bench_dir();
    let log =
        Log::open(&dir.path().join("p-0"), big_config(), LogOptions::default()).expect("open");
    let batch = batch_of(16 * 1024);
    while log.size_bytes() < 128 * 1024 * 1024 {
        log.append_as_leader(batch.clone(), 0).expect("fill");
    }
    log.flush().expect("flush");
    let end = log.log_end_offset();
    let segment_path: PathBuf = dir.path().join("p-0").join(format!("{:020}.log", 0));
    let file = File::open(&segment_path).expect("segment file");
    let file_len = file.metadata().expect("metadata").len();

    let mut group = c.benchmark_group("read_sequential");
    group.throughput(Throughput::Bytes(READ_CHUNK_BYTES as u64));
    let mut next = 0i64;
    group.bench_function("log", |b| {
        b.iter_custom(|iters| {
            let mut bytes = 0u64;
            let start = Instant::now();
            for _ in 0..iters {
                if next >= end {
                    next = 0;
                }
                let r = log.read(next, READ_CHUNK_BYTES, end).expect("read");
                bytes += r.records.len() as u64;
                next = last_offset_plus_one(&r.records).unwrap_or(end);
            }
            let elapsed = start.elapsed();
            record("read_sequential/log", elapsed, bytes);
            elapsed
        })
    });
    let mut position = 0u64;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    group.bench_function("plain_pread", |b| {
        b.iter_custom(|iters| {
            let mut bytes = 0u64;
            let start = Instant::now();
            for _ in 0..iters {
                if position + READ_CHUNK_BYTES as u64 > file_len {
                    position = 0;
                }
                file.read_exact_at(&mut buf, position).expect("pread");
                position += READ_CHUNK_BYTES as u64;
                bytes += READ_CHUNK_BYTES as u64;
            }
            let elapsed = start.elapsed();
            record("read_sequential/plain_pread", elapsed, bytes);
            elapsed
        })
    });
    group.finish();
}

fn last_offset_plus_one(records: &[u8]) -> Option<i64> {
    streambus_storage::batch::BatchIter::new(records)
        .filter_map(|s| match s {
            streambus_storage::batch::BatchStep::Batch { header, .. } => Some(header.next_offset()),
            _ => None,
        })
        .last()
}

/// Appends/s with an fsync per append, from `threads` concurrent appenders.
fn fsync_appends_per_sec(dir: &Path, threads: usize) -> f64 {
    let config = LogConfig {
        flush_messages: 1,
        ..big_config()
    };
    let log = Arc::new(
        Log::open(
            &dir.join(format!("fsync-{threads}")),
            config,
            LogOptions::default(),
        )
        .expect("open"),
    );
    let batch = batch_of(1024);
    let per_thread = FSYNC_APPENDS / threads;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let log = Arc::clone(&log);
            let batch = batch.clone();
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    log.append_as_leader(batch.clone(), 0).expect("append");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("appender");
    }
    (per_thread * threads) as f64 / start.elapsed().as_secs_f64()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Resident bytes per open, idle partition with three segments.
fn idle_partition_bytes(dir: &Path) -> f64 {
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        ..LogConfig::default()
    };
    let batch = batch_of(16 * 1024);
    for p in 0..IDLE_PARTITIONS {
        let log = Log::open(
            &dir.join(format!("idle-{p}")),
            config.clone(),
            LogOptions::default(),
        )
        .expect("open");
        for _ in 0..10 {
            log.append_as_leader(batch.clone(), 0).expect("append");
        }
        log.close().expect("close");
    }
    let before = rss_bytes();
    let logs: Vec<Log> = (0..IDLE_PARTITIONS)
        .map(|p| {
            Log::open(
                &dir.join(format!("idle-{p}")),
                config.clone(),
                LogOptions::default(),
            )
            .expect("reopen")
        })
        .collect();
    let after = rss_bytes();
    let per = after.saturating_sub(before) as f64 / logs.len() as f64;
    drop(logs);
    per
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_append(&mut c, "16KiB", 16 * 1024);
    bench_append(&mut c, "1MiB", 1024 * 1024);
    bench_read(&mut c);
    c.final_summary();

    println!("\n== storage summary (ratios from this run; 1.0 = as fast as plain file I/O) ==");
    for label in ["16KiB", "1MiB"] {
        if let (Some(log), Some(plain)) = (
            median(&format!("append_{label}/log")),
            median(&format!("append_{label}/plain_write")),
        ) {
            println!(
                "append {label:>5}: log {:.2} GiB/s, plain write() {:.2} GiB/s, ratio {:.2}",
                gib_per_s(log),
                gib_per_s(plain),
                plain / log
            );
        }
    }
    if let (Some(log), Some(plain)) = (
        median("read_sequential/log"),
        median("read_sequential/plain_pread"),
    ) {
        println!(
            "read sequential: log {:.2} GiB/s, plain pread {:.2} GiB/s, ratio {:.2}",
            gib_per_s(log),
            gib_per_s(plain),
            plain / log
        );
    }
    let dir = bench_dir();
    let one = fsync_appends_per_sec(dir.path(), 1);
    let eight = fsync_appends_per_sec(dir.path(), 8);
    println!(
        "flush.messages=1 (1 KiB batches): 1 appender {one:.0} appends/s, 8 appenders {eight:.0} appends/s (x{:.1} from group commit)",
        eight / one
    );
    let idle = idle_partition_bytes(dir.path());
    println!(
        "memory per idle partition (3 segments, {IDLE_PARTITIONS} partitions open): {:.1} KiB RSS",
        idle / 1024.0
    );
}

fn gib_per_s(ns_per_byte: f64) -> f64 {
    1.0 / ns_per_byte / 1.073_741_824
}
