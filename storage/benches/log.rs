//! Storage benchmarks (`cargo bench -p streambus-storage`): append and sequential-read
//! throughput of the partition log as ratios to plain file I/O of the same bytes on the same
//! disk, appends/s under `flush.messages=1` with 1 vs 8 appenders (group commit), and memory per
//! idle partition. Ratios are printed at the end of the run; they compare measurements taken in
//! the same run, which is what survives a noisy shared machine.
//!
//! Set `STREAMBUS_BENCH_DIR` to benchmark another disk (default: the system temp dir).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    group.bench_function("log", |b| {
        b.iter_custom(|iters| {
            if log.size_bytes() > RESET_BYTES {
                log.truncate_fully_and_start_at(0).expect("reset");
            }
            let start = Instant::now();
            for _ in 0..iters {
                log.append_as_leader(batch.clone(), 0).expect("append");
            }
            start.elapsed()
        })
    });

    let path = dir.path().join("plain.bin");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("plain file");
    group.bench_function("plain_write", |b| {
        b.iter_custom(|iters| {
            if file.metadata().map(|m| m.len()).unwrap_or(0) > RESET_BYTES {
                file.set_len(0).expect("reset");
            }
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all(&batch).expect("write");
            }
            start.elapsed()
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
            std::hint::black_box(bytes);
            start.elapsed()
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
            std::hint::black_box(bytes);
            start.elapsed()
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

    println!("\n== storage summary (paired rounds in this run; ratio = log throughput / plain file I/O) ==");
    let dir = bench_dir();
    for (label, bytes) in [("16KiB", 16 * 1024), ("1MiB", 1024 * 1024)] {
        let r = paired_append(dir.path(), bytes);
        println!(
            "append {label:>5} batches: log {:.2} GiB/s, plain write() {:.2} GiB/s, ratio {:.2}",
            r.log_gib_s, r.plain_gib_s, r.ratio
        );
    }
    for verify in [true, false] {
        let r = paired_read(dir.path(), verify);
        println!(
            "sequential read (1 MiB fetches, verify_crc_on_read={verify}): log {:.2} GiB/s, plain pread {:.2} GiB/s, ratio {:.2}",
            r.log_gib_s, r.plain_gib_s, r.ratio
        );
    }
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

/// Rounds of each paired measurement; the median ratio is reported.
const PAIRED_ROUNDS: usize = 9;
/// Bytes written or read per side in one round.
const PAIRED_BYTES: usize = 64 * 1024 * 1024;

/// Median figures of paired rounds.
struct Paired {
    log_gib_s: f64,
    plain_gib_s: f64,
    ratio: f64,
}

fn gib_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / (1u64 << 30) as f64
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Each round appends `PAIRED_BYTES` through the log, then writes the same batches with plain
/// `write()` to a file on the same disk, back to back, so both see the same machine state.
fn paired_append(dir: &Path, batch_bytes: usize) -> Paired {
    let batch = batch_of(batch_bytes);
    let count = (PAIRED_BYTES / batch.len()).max(1);
    let (mut logs, mut plains, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..PAIRED_ROUNDS {
        let log_dir = dir.join(format!("paired-append-{batch_bytes}-{round}"));
        let log = Log::open(&log_dir, big_config(), LogOptions::default()).expect("open");
        let start = Instant::now();
        for _ in 0..count {
            log.append_as_leader(batch.clone(), 0).expect("append");
        }
        let log_time = start.elapsed();
        drop(log);
        let path = dir.join(format!("paired-plain-{batch_bytes}-{round}"));
        let mut file = File::create(&path).expect("plain file");
        let start = Instant::now();
        for _ in 0..count {
            file.write_all(&batch).expect("write");
        }
        let plain_time = start.elapsed();
        drop(file);
        let _ = std::fs::remove_dir_all(&log_dir);
        let _ = std::fs::remove_file(&path);
        let bytes = count * batch.len();
        logs.push(gib_s(bytes, log_time));
        plains.push(gib_s(bytes, plain_time));
        ratios.push(plain_time.as_secs_f64() / log_time.as_secs_f64());
    }
    Paired {
        log_gib_s: median_of(logs),
        plain_gib_s: median_of(plains),
        ratio: median_of(ratios),
    }
}

/// Each round reads a `PAIRED_BYTES` log front to back with 1 MiB fetches, then the same
/// segment file with 1 MiB `pread`s into one reused buffer.
fn paired_read(dir: &Path, verify_crc_on_read: bool) -> Paired {
    let config = LogConfig {
        verify_crc_on_read,
        ..big_config()
    };
    let log_dir = dir.join(format!("paired-read-{verify_crc_on_read}"));
    let log = Log::open(&log_dir, config, LogOptions::default()).expect("open");
    let batch = batch_of(16 * 1024);
    while log.size_bytes() < PAIRED_BYTES as u64 {
        log.append_as_leader(batch.clone(), 0).expect("fill");
    }
    let end = log.log_end_offset();
    let file = File::open(log_dir.join(format!("{:020}.log", 0))).expect("segment");
    let file_len = file.metadata().expect("metadata").len() as usize;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let (mut logs, mut plains, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PAIRED_ROUNDS {
        let start = Instant::now();
        let (mut next, mut bytes) = (0i64, 0usize);
        while next < end {
            let r = log.read(next, READ_CHUNK_BYTES, end).expect("read");
            bytes += r.records.len();
            next = last_offset_plus_one(&r.records).unwrap_or(end);
        }
        let log_time = start.elapsed();
        let start = Instant::now();
        let mut position = 0usize;
        while position + READ_CHUNK_BYTES <= file_len {
            file.read_exact_at(&mut buf, position as u64)
                .expect("pread");
            position += READ_CHUNK_BYTES;
        }
        let plain_time = start.elapsed();
        logs.push(gib_s(bytes, log_time));
        plains.push(gib_s(position, plain_time));
        ratios.push(gib_s(bytes, log_time) / gib_s(position, plain_time));
    }
    Paired {
        log_gib_s: median_of(logs),
        plain_gib_s: median_of(plains),
        ratio: median_of(ratios),
    }
}
