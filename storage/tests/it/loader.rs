//! Recovery on open, Kafka `LogLoaderTest` style: a crash leaves random bytes after the last
//! batch or in the index files, or interrupts a roll, a segment deletion or a compaction swap;
//! the reopened log must hold every earlier record, end where it ended, and keep appending at
//! the right offset.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::Compression;
use streambus_storage::batch::{self, testing};
use streambus_storage::{CleanupPolicy, Clock, Log, LogConfig, LogOptions, ManualClock};

use crate::{file_names, read_everything, segment_bases, segment_file, Rng};

const START_MS: i64 = 1_700_000_000_000;
/// Seeds of the random-tail test.
const SEEDS: u64 = 100;

/// A batch as the log must return it.
#[derive(Debug, Clone)]
struct Expected {
    base: i64,
    last: i64,
    bytes: Bytes,
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

fn options(recovery_point: i64) -> LogOptions {
    LogOptions {
        recovery_point,
        clock: Arc::new(ManualClock::new(START_MS)) as Arc<dyn Clock>,
        ..LogOptions::default()
    }
}

fn open(dir: &Path, config: &LogConfig, recovery_point: i64) -> Log {
    Log::open(dir, config.clone(), options(recovery_point)).unwrap_or_else(|e| {
        panic!(
            "open {} (recovery point {recovery_point}): {e}",
            dir.display()
        )
    })
}

/// Appends `batch` as leader at epoch 0 and returns what it must read back as.
fn append(log: &Log, raw: Bytes) -> Expected {
    let expected_base = log.log_end_offset();
    let mut bytes = BytesMut::from(&raw[..]);
    batch::set_base_offset(&mut bytes, expected_base);
    batch::set_partition_leader_epoch(&mut bytes, 0);
    let info = log.append_as_leader(raw, 0).expect("append");
    assert_eq!(info.base_offset, expected_base);
    Expected {
        base: info.base_offset,
        last: info.last_offset,
        bytes: bytes.freeze(),
    }
}

/// Appends `count` batches of random record counts and sizes.
fn append_random(log: &Log, rng: &mut Rng, count: u64, out: &mut Vec<Expected>) {
    for i in 0..count {
        let records = rng.range(1, 10) as usize;
        let value_len = rng.range(0, 1500) as usize;
        let fill = rng.next_u64() as u8;
        out.push(append(
            log,
            testing::batch(records, value_len, fill, START_MS + i as i64),
        ));
    }
}

/// The log holds exactly `expected` (from its log start), read batch by batch and in chunks.
fn assert_contents(log: &Log, expected: &[Expected], context: &str) {
    let start = log.log_start_offset();
    let from = expected.partition_point(|b| b.last < start);
    let expected = &expected[from..];
    let end = expected.last().map_or(start, |b| b.last + 1);
    assert_eq!(log.log_end_offset(), end, "{context}: log end offset");
    for max_bytes in [1, 64 * 1024] {
        let calls_max = expected.len() + log.segment_count() + 2;
        let got = read_everything(log, start, max_bytes, calls_max);
        assert_eq!(
            got.len(),
            expected.len(),
            "{context}: number of batches (max_bytes {max_bytes})"
        );
        for ((header, bytes), want) in got.iter().zip(expected) {
            assert_eq!(
                (header.base_offset, header.last_offset()),
                (want.base, want.last),
                "{context}"
            );
            assert!(
                bytes[..] == want.bytes[..],
                "{context}: bytes of batch {} differ",
                want.base
            );
        }
    }
    // Every batch is found from its own base offset too (index lookups from each position).
    for want in expected {
        let result = log.read(want.base, 1, i64::MAX).expect("read one batch");
        assert!(
            result.records.len() == want.bytes.len() && result.records[..] == want.bytes[..],
            "{context}: read at {} does not return its batch",
            want.base
        );
    }
}

/// Nothing a crash left behind survives open: no temporary/cleaned/swap/deleted files, and no
/// index file without its segment.
fn assert_no_leftovers(dir: &Path, context: &str) {
    let names = file_names(dir);
    for name in &names {
        for suffix in [".cleaned", ".swap", ".deleted", ".tmp"] {
            assert!(
                !name.ends_with(suffix),
                "{context}: leftover {name} in {names:?}"
            );
        }
        for ext in [".index", ".timeindex", ".txnindex"] {
            if let Some(stem) = name.strip_suffix(ext) {
                assert!(
                    names.contains(&format!("{stem}.log")),
                    "{context}: orphan {name} in {names:?}"
                );
            }
        }
    }
}

fn append_garbage(path: &Path, garbage: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all(garbage).expect("append garbage");
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Where a crash scatters its random tail.
#[derive(Debug, Clone, Copy)]
enum Tail {
    Log,
    Indexes,
    LogAndIndexes,
    OldSegmentIndexes,
}

/// Crashes `log`, appends random bytes per `tail`, and returns the log file length before.
fn crash_with_tail(log: Log, rng: &mut Rng, tail: Tail) -> (u64, String) {
    let dir = log.dir().to_path_buf();
    drop(log);
    let bases = segment_bases(&dir);
    let active = *bases.last().expect("a segment");
    let active_log = segment_file(&dir, active, "log");
    let active_len = file_len(&active_log);
    let mut touched = Vec::new();
    let mut targets = Vec::new();
    match tail {
        Tail::Log => targets.push(active_log.clone()),
        Tail::Indexes => {
            targets.push(segment_file(&dir, active, "index"));
            targets.push(segment_file(&dir, active, "timeindex"));
        }
        Tail::LogAndIndexes => {
            targets.push(active_log.clone());
            targets.push(segment_file(&dir, active, "index"));
            targets.push(segment_file(&dir, active, "timeindex"));
        }
        Tail::OldSegmentIndexes => {
            let old_bases = &bases[..bases.len().saturating_sub(1).max(1)];
            let old = old_bases[rng.range(0, old_bases.len() as u64 - 1) as usize];
            targets.push(segment_file(&dir, old, "index"));
            targets.push(segment_file(&dir, old, "timeindex"));
        }
    }
    for target in targets {
        let len = rng.range(1, 1024) as usize;
        append_garbage(&target, &rng.bytes(len));
        touched.push(format!(
            "{} +{len}",
            target.file_name().and_then(|n| n.to_str()).unwrap_or("?")
        ));
    }
    (active_len, touched.join(", "))
}

/// LogLoaderTest: for each seed, append batches, flush, crash, append 1..=1024 random bytes to
/// the active segment and/or its indexes (or an old segment's indexes), reopen from recovery
/// point 0 or from the last recovery point; twice per seed, then once more cleanly.
#[test]
fn random_tail_after_crash_is_cut_and_every_earlier_record_survives() {
    let config = config();
    for seed in 0..SEEDS {
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), &config, 0);
        let mut expected = Vec::new();
        for round in 0..2 {
            let batches = rng.range(1, 40);
            append_random(&log, &mut rng, batches, &mut expected);
            log.flush().expect("flush");
            let end = log.log_end_offset();
            let recovery_point = log.recovery_point();
            assert_eq!(recovery_point, end, "seed {seed}: flush covers the log end");
            let tail = match rng.range(0, 3) {
                0 => Tail::Log,
                1 => Tail::Indexes,
                2 => Tail::LogAndIndexes,
                _ => Tail::OldSegmentIndexes,
            };
            let active = *segment_bases(dir.path()).last().expect("segment");
            let (active_len, touched) = crash_with_tail(log, &mut rng, tail);
            let reopen_from = if (seed + round) % 2 == 0 {
                0
            } else {
                recovery_point
            };
            let context = format!("seed {seed} round {round}: {tail:?} [{touched}], reopened from {reopen_from}, end {end}");
            log = open(dir.path(), &config, reopen_from);
            assert_eq!(log.log_end_offset(), end, "{context}: log end offset");
            assert_eq!(
                file_len(&segment_file(dir.path(), active, "log")),
                active_len,
                "{context}: recovery cuts the active segment back to its last valid batch"
            );
            assert_contents(&log, &expected, &context);
            let next = append(&log, testing::batch(3, 10, b'n', START_MS));
            assert_eq!(next.base, end, "{context}: appends continue at the old end");
            expected.push(next);
            assert_contents(
                &log,
                &expected,
                &format!("{context}, after one more append"),
            );
        }
        log.close().expect("close");
        let log = open(dir.path(), &config, 0);
        assert_contents(&log, &expected, &format!("seed {seed}: clean reopen"));
        assert_no_leftovers(dir.path(), &format!("seed {seed}"));
    }
}

/// Builds a log of several segments, flushed, and returns it with its expected contents.
fn several_segments(dir: &Path, config: &LogConfig, seed: u64) -> (Log, Vec<Expected>) {
    let mut rng = Rng::new(seed);
    let log = open(dir, config, 0);
    let mut expected = Vec::new();
    append_random(&log, &mut rng, 60, &mut expected);
    log.flush().expect("flush");
    assert!(
        log.segment_count() >= 3,
        "test needs several segments, got {}",
        log.segment_count()
    );
    (log, expected)
}

/// A crash during a roll right after the next segment's `.log` was created (empty, with or
/// without its index files): reopening keeps every record and appends continue at the end.
#[test]
fn crash_in_the_middle_of_a_roll_recovers() {
    let config = config();
    for (case, with_indexes) in [(0u64, false), (1, true)] {
        for reopen_at_end in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (log, mut expected) = several_segments(dir.path(), &config, 10 + case);
            let end = log.log_end_offset();
            drop(log);
            fs::File::create(segment_file(dir.path(), end, "log")).expect("create next segment");
            if with_indexes {
                for ext in ["index", "timeindex", "txnindex"] {
                    fs::File::create(segment_file(dir.path(), end, ext)).expect("create index");
                }
            }
            let context = format!(
                "empty next segment (indexes: {with_indexes}, reopened at end: {reopen_at_end})"
            );
            let log = open(dir.path(), &config, if reopen_at_end { end } else { 0 });
            assert_contents(&log, &expected, &context);
            let next = append(&log, testing::batch(2, 100, b'r', START_MS));
            assert_eq!(next.base, end, "{context}: appends continue at the end");
            expected.push(next);
            assert_contents(&log, &expected, &context);
            drop(log);
            let log = open(dir.path(), &config, 0);
            assert_contents(&log, &expected, &format!("{context}, after another crash"));
            assert_no_leftovers(dir.path(), &context);
        }
    }
}

/// Index files of the next segment created without its `.log` (a roll that crashed between
/// files, or a deletion that removed the `.log` first) are removed on open.
#[test]
fn orphan_index_files_are_removed_on_open() {
    let config = config();
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, mut expected) = several_segments(dir.path(), &config, 20);
    let end = log.log_end_offset();
    drop(log);
    for ext in ["index", "timeindex", "txnindex"] {
        fs::write(segment_file(dir.path(), end, ext), [7u8; 24]).expect("orphan index");
    }
    let log = open(dir.path(), &config, end);
    assert_no_leftovers(dir.path(), "orphan indexes of the next segment");
    assert_contents(&log, &expected, "orphan indexes of the next segment");
    expected.push(append(&log, testing::batch(1, 10, b'o', START_MS)));
    assert_contents(&log, &expected, "orphan indexes, after an append");
}

/// Missing index files (a crash before they were written, or lost) are rebuilt, after a clean
/// shutdown as after a crash, for old segments and for the active one.
#[test]
fn missing_index_files_are_rebuilt() {
    let config = config();
    for clean in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, mut expected) = several_segments(dir.path(), &config, 30);
        let end = log.log_end_offset();
        if clean {
            log.close().expect("close");
        } else {
            drop(log);
        }
        let mut removed = 0;
        for name in file_names(dir.path()) {
            if name.ends_with(".index") || name.ends_with(".timeindex") {
                fs::remove_file(dir.path().join(&name)).expect("remove index");
                removed += 1;
            }
        }
        assert!(
            removed >= 6,
            "expected index files of several segments, removed {removed}"
        );
        let context = format!(
            "indexes removed after {} shutdown",
            if clean { "a clean" } else { "an unclean" }
        );
        let log = open(dir.path(), &config, end);
        assert_contents(&log, &expected, &context);
        expected.push(append(&log, testing::batch(2, 10, b'i', START_MS)));
        assert_contents(&log, &expected, &context);
    }
}

/// A crash while retention deleted the first segment: its `.log` is gone but its indexes are
/// still there, and a `.deleted` leftover lies around. The log starts at the next segment.
#[test]
fn crash_in_the_middle_of_a_segment_deletion_recovers() {
    let config = config();
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, expected) = several_segments(dir.path(), &config, 40);
    let end = log.log_end_offset();
    drop(log);
    let bases = segment_bases(dir.path());
    fs::remove_file(segment_file(dir.path(), bases[0], "log")).expect("remove first segment");
    fs::write(
        dir.path().join(format!("{:020}.log.deleted", bases[1])),
        b"half deleted",
    )
    .expect("leftover");
    let log = open(dir.path(), &config, end);
    assert_eq!(
        log.log_start_offset(),
        bases[1],
        "the log starts at the first remaining segment"
    );
    assert_eq!(log.log_end_offset(), end);
    assert_no_leftovers(dir.path(), "interrupted deletion");
    assert_contents(&log, &expected, "interrupted deletion");
}

/// Builds a compacted log's files: `dir` holds keyed batches (closed cleanly), `cleaned_dir`
/// a copy whose closed segments were compacted. Returns the bases whose files differ.
fn compacted_copy(dir: &Path, cleaned_dir: &Path, config: &LogConfig) -> Vec<i64> {
    let log = open(dir, config, 0);
    let mut rng = Rng::new(50);
    for i in 0..80i64 {
        let key = format!("key-{}", rng.range(0, 7));
        let value_len = rng.range(50, 400) as usize;
        let value = rng.bytes(value_len);
        let pairs: [testing::KeyValue<'_>; 1] = [(Some(key.as_bytes()), Some(&value))];
        append(
            &log,
            testing::batch_kv(
                &pairs,
                START_MS + i,
                testing::Producer::NONE,
                Compression::None,
            ),
        );
    }
    log.close().expect("close");
    for name in file_names(dir) {
        fs::copy(dir.join(&name), cleaned_dir.join(&name)).expect("copy log dir");
    }
    let cleaned = open(cleaned_dir, config, 0);
    let outcome = cleaned.compact(i64::MAX).expect("compact");
    assert!(
        outcome.segments_cleaned > 0,
        "compaction must rewrite a segment: {outcome:?}"
    );
    cleaned.close().expect("close");
    segment_bases(dir)
        .into_iter()
        .filter(|b| {
            let a = fs::read(segment_file(dir, *b, "log")).expect("read");
            let c = fs::read(segment_file(cleaned_dir, *b, "log")).expect("read");
            a != c
        })
        .collect()
}

fn contents_of(dir: &Path, config: &LogConfig) -> Vec<Expected> {
    let log = open(dir, config, 0);
    let calls_max = 1000;
    let all = read_everything(&log, log.log_start_offset(), 1 << 20, calls_max);
    log.close().expect("close");
    all.into_iter()
        .map(|(h, bytes)| Expected {
            base: h.base_offset,
            last: h.last_offset(),
            bytes,
        })
        .collect()
}

/// A compaction swap interrupted by a crash: a `.log.cleaned` file (not yet committed) is
/// discarded, a `.log.swap` file (committed) replaces its segment, with or without the
/// original `.log` still present; stale indexes of the swapped segment are not trusted.
#[test]
fn interrupted_compaction_swap_recovers() {
    let config = LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        cleanup_policy: CleanupPolicy::Compact,
        ..LogConfig::default()
    };
    let original = tempfile::tempdir().expect("tempdir");
    let cleaned = tempfile::tempdir().expect("tempdir");
    let changed = compacted_copy(original.path(), cleaned.path(), &config);
    assert!(!changed.is_empty(), "compaction changed no segment file");
    let before = contents_of(original.path(), &config);
    let after = contents_of(cleaned.path(), &config);
    assert!(after.len() < before.len(), "compaction removed no batch");

    for (case, suffix, keep_original) in
        [(0, "cleaned", true), (1, "swap", true), (2, "swap", false)]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in file_names(original.path()) {
            fs::copy(original.path().join(&name), dir.path().join(&name)).expect("copy");
        }
        for base in &changed {
            let target = dir.path().join(format!("{base:020}.log.{suffix}"));
            fs::copy(segment_file(cleaned.path(), *base, "log"), &target)
                .expect("copy cleaned segment");
            if !keep_original {
                fs::remove_file(segment_file(dir.path(), *base, "log")).expect("remove original");
            }
        }
        let context = format!(
            "case {case}: .log.{suffix} (original kept: {keep_original}) for segments {changed:?}"
        );
        let log = open(dir.path(), &config, i64::MAX);
        let want = if suffix == "cleaned" { &before } else { &after };
        assert_contents(&log, want, &context);
        assert_no_leftovers(dir.path(), &context);
        let end = log.log_end_offset();
        let next = append(&log, testing::batch(1, 5, b's', START_MS));
        assert_eq!(next.base, end, "{context}: appends continue at the end");
        drop(log);
        let mut want = want.clone();
        want.push(next);
        let log = open(dir.path(), &config, 0);
        assert_contents(
            &log,
            &want,
            &format!("{context}, after a crash and full recovery"),
        );
    }
}
