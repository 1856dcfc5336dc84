//! One focused test per log operation and per config knob: appends (leader and follower),
//! reads, rolls, indexes, retention, DeleteRecords, truncation, leader epochs, producer and
//! transaction state, timestamp lookups, the flush policy, clean shutdown and recovery points.
//!
//! Batches are built with the storage crate's `batch::testing` builders; the helpers here are
//! shared with `compaction`.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use streambus_storage::batch::testing::{
    self, batch_kv, batch_records, control_batch, idempotent_batch, KeyValue, Producer, TimedRecord,
};
use streambus_storage::batch::{self, BatchHeader, BatchStep, OffsetGaps, BATCH_HEADER_LEN};
use streambus_storage::kv::COLUMN_FAMILIES;
use streambus_storage::segment::{file_name, parse_file_name};
use streambus_storage::txn_index::AbortedTxn;
use streambus_storage::{
    CleanupPolicy, Clock, KvStore, Log, LogConfig, LogOptions, ManualClock, MemKv, RecoveryPoints,
    RocksKv, StorageError,
};

// ---------------------------------------------------------------------------------------------
// Shared helpers (also used by `compaction`).
// ---------------------------------------------------------------------------------------------

/// Start time of every manual clock.
pub(crate) const T0: i64 = 1_700_000_000_000;
/// Read calls allowed to walk a whole test log.
const READ_CALLS_MAX: usize = 10_000;
/// Largest `max_bytes` the helpers read with.
pub(crate) const READ_BYTES_MAX: usize = 1 << 20;

/// A record read back: offset, key, value, timestamp.
pub(crate) type Stored = (i64, Option<Bytes>, Option<Bytes>, i64);

pub(crate) fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

pub(crate) fn open_log(
    dir: &Path,
    config: LogConfig,
    clock: &Arc<ManualClock>,
    recovery_point: i64,
) -> Log {
    let clock: Arc<dyn Clock> = clock.clone();
    Log::open(
        dir,
        config,
        LogOptions {
            recovery_point,
            clock,
            ..LogOptions::default()
        },
    )
    .expect("open log")
}

/// Keyed records `(key, value)` at `timestamp_ms` (`None` value: tombstone).
pub(crate) fn kv_batch(
    pairs: &[(&str, Option<&str>)],
    timestamp_ms: i64,
    compression: Compression,
) -> Bytes {
    let pairs: Vec<KeyValue<'_>> = pairs
        .iter()
        .map(|(k, v)| (Some(k.as_bytes()), v.map(str::as_bytes)))
        .collect();
    batch_kv(&pairs, timestamp_ms, Producer::NONE, compression)
}

/// Keyless one-byte records with the given timestamps, in offset order.
fn timestamps_batch(timestamps: &[i64]) -> Bytes {
    let records: Vec<TimedRecord<'_>> = timestamps
        .iter()
        .map(|ts| (None, Some(&b"t"[..]), *ts))
        .collect();
    batch_records(&records, Producer::NONE, Compression::None)
}

/// `batch` with its base offset and partition leader epoch set (as a leader would have).
pub(crate) fn at_offset(batch_bytes: &Bytes, base_offset: i64, epoch: i32) -> Bytes {
    let mut out = batch_bytes.to_vec();
    batch::set_base_offset(&mut out, base_offset);
    batch::set_partition_leader_epoch(&mut out, epoch);
    Bytes::from(out)
}

/// Splits read bytes into whole batches, each of which must pass full validation (offset gaps
/// allowed: compacted batches keep their last offset delta).
pub(crate) fn batches_of(records: &Bytes) -> Vec<(BatchHeader, Bytes)> {
    let mut out = Vec::new();
    let mut iter = batch::BatchIter::new(records);
    for _ in 0..records.len() {
        match iter.next() {
            None => break,
            Some(BatchStep::Batch { position, header }) => {
                let bytes = records.slice(position..position + header.total_len());
                let checked = batch::validate(&bytes, OffsetGaps::Allowed).unwrap_or_else(|e| {
                    panic!("read returned an invalid batch at {position}: {e}")
                });
                assert_eq!(checked, header);
                out.push((header, bytes));
            }
            Some(other) => panic!("read returned a partial or invalid batch: {other:?}"),
        }
    }
    out
}

/// Every batch from the log start to the log end, read one call after another.
pub(crate) fn read_all(log: &Log) -> Vec<(BatchHeader, Bytes)> {
    let end = log.log_end_offset();
    let mut next = log.log_start_offset();
    let mut out: Vec<(BatchHeader, Bytes)> = Vec::new();
    for _ in 0..READ_CALLS_MAX {
        if next >= end {
            return out;
        }
        let result = log
            .read(next, READ_BYTES_MAX, i64::MAX)
            .unwrap_or_else(|e| panic!("read at {next} failed: {e}"));
        let batches = batches_of(&result.records);
        let Some((last, _)) = batches.last() else {
            panic!("read at {next} below the log end {end} returned nothing");
        };
        assert!(last.next_offset() > next, "read at {next} made no progress");
        next = last.next_offset();
        out.extend(batches);
    }
    panic!("log not read to its end {end} in {READ_CALLS_MAX} calls");
}

/// The records of `batches`, decoded.
pub(crate) fn decode_records(batches: &[(BatchHeader, Bytes)]) -> Vec<Stored> {
    let mut out = Vec::new();
    for (header, bytes) in batches {
        let mut buf = bytes.clone();
        let set = RecordBatchDecoder::decode(&mut buf)
            .unwrap_or_else(|e| panic!("decode batch at {}: {e}", header.base_offset));
        for r in set.records {
            out.push((r.offset, r.key, r.value, r.timestamp));
        }
    }
    out
}

/// `(base offset, size)` of every `.log` file in `dir`, ascending.
pub(crate) fn log_files(dir: &Path) -> Vec<(i64, u64)> {
    let mut out: Vec<(i64, u64)> = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|entry| {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().into_string().ok()?;
            let base = parse_file_name(&name, "log")?;
            Some((base, entry.metadata().expect("metadata").len()))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Flips every bit of the byte at `position` of `path`.
pub(crate) fn flip_byte(path: &Path, position: usize) {
    let mut data = fs::read(path).expect("read file");
    data[position] ^= 0xff;
    fs::write(path, data).expect("write file");
}

fn is_out_of_range<T>(result: &Result<T, StorageError>) -> bool {
    matches!(result, Err(StorageError::OffsetOutOfRange { .. }))
}

/// Segments of 1024 bytes (the minimum), for tests that need many segments.
fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    }
}

/// About 270 bytes: three fit in a 1024-byte segment, a fourth rolls.
fn third_of_a_segment(fill: u8, timestamp_ms: i64) -> Bytes {
    testing::batch(1, 200, fill, timestamp_ms)
}

// ---------------------------------------------------------------------------------------------
// append_as_leader
// ---------------------------------------------------------------------------------------------

#[test]
fn leader_append_assigns_consecutive_offsets_and_patches_offset_and_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let log = open_log(dir.path(), LogConfig::default(), &clock, 0);
    let inputs = [
        (testing::batch(3, 10, b'a', 1_000), 5),
        (testing::batch(2, 10, b'b', 2_000), 5),
        (testing::batch(1, 10, b'c', 3_000), 7),
    ];
    let mut infos = Vec::new();
    for (b, epoch) in &inputs {
        infos.push(log.append_as_leader(b.clone(), *epoch).expect("append"));
    }
    let ranges: Vec<(i64, i64)> = infos
        .iter()
        .map(|i| (i.base_offset, i.last_offset))
        .collect();
    assert_eq!(ranges, [(0, 2), (3, 4), (5, 5)]);
    assert!(infos
        .iter()
        .all(|i| i.log_append_time_ms == -1 && !i.duplicate));
    assert!(infos.iter().all(|i| i.log_start_offset == 0));
    assert_eq!(log.log_end_offset(), 6);

    let stored = read_all(&log);
    assert_eq!(stored.len(), 3);
    for ((header, bytes), ((input, epoch), info)) in stored.iter().zip(inputs.iter().zip(&infos)) {
        assert_eq!(header.base_offset, info.base_offset);
        assert_eq!(header.partition_leader_epoch, *epoch);
        assert!(!header.is_log_append_time());
        let original = BatchHeader::parse(input).expect("parse input");
        assert_eq!(
            header.max_timestamp, original.max_timestamp,
            "CreateTime kept"
        );
        assert_eq!(
            header.crc, original.crc,
            "offset and epoch lie outside the CRC"
        );
        assert_eq!(
            &bytes[BATCH_HEADER_LEN..],
            &input[BATCH_HEADER_LEN..],
            "records untouched"
        );
        batch::validate(bytes, OffsetGaps::Forbidden).expect("stored batch valid");
    }
}

#[test]
fn leader_append_with_log_append_time_stamps_the_clock_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    clock.advance(123);
    let config = LogConfig {
        log_append_time: true,
        ..LogConfig::default()
    };
    let log = open_log(dir.path(), config, &clock, 0);
    let create_time = 1_000;
    let info = log
        .append_as_leader(testing::batch(3, 10, b'a', create_time), 0)
        .expect("append");
    let now = T0 + 123;
    assert_eq!(info.log_append_time_ms, now);

    let stored = read_all(&log);
    let (header, bytes) = &stored[0];
    assert!(header.is_log_append_time());
    assert_eq!(header.max_timestamp, now);
    batch::validate(bytes, OffsetGaps::Forbidden).expect("CRC recomputed over the patched header");
    assert_eq!(
        log.offset_for_timestamp(now).expect("lookup"),
        Some((0, now)),
        "LogAppendTime batches are found by their append time"
    );
}

// ---------------------------------------------------------------------------------------------
// read
// ---------------------------------------------------------------------------------------------

/// Four batches of five records: offsets 0-4, 5-9, 10-14, 15-19.
fn four_batches_of_five(log: &Log) -> usize {
    let mut len = 0;
    for fill in [b'a', b'b', b'c', b'd'] {
        let b = testing::batch(5, 20, fill, T0);
        len = b.len();
        log.append_as_leader(b, 0).expect("append");
    }
    len
}

fn read_bases(log: &Log, start: i64, max_bytes: usize, upper_bound: i64) -> Vec<i64> {
    let result = log.read(start, max_bytes, upper_bound).expect("read");
    batches_of(&result.records)
        .iter()
        .map(|(h, _)| h.base_offset)
        .collect()
}

#[test]
fn read_starts_at_the_batch_containing_the_start_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), &manual_clock(), 0);
    four_batches_of_five(&log);
    assert_eq!(
        read_bases(&log, 0, READ_BYTES_MAX, i64::MAX),
        [0, 5, 10, 15]
    );
    assert_eq!(read_bases(&log, 7, READ_BYTES_MAX, i64::MAX), [5, 10, 15]);
    assert_eq!(read_bases(&log, 5, READ_BYTES_MAX, i64::MAX), [5, 10, 15]);
    assert_eq!(read_bases(&log, 19, READ_BYTES_MAX, i64::MAX), [15]);
    let result = log.read(12, READ_BYTES_MAX, i64::MAX).expect("read");
    assert_eq!((result.log_start_offset, result.log_end_offset), (0, 20));
}

#[test]
fn read_never_returns_a_batch_reaching_the_upper_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), &manual_clock(), 0);
    four_batches_of_five(&log);
    assert_eq!(read_bases(&log, 0, READ_BYTES_MAX, 12), [0, 5]);
    assert_eq!(read_bases(&log, 0, READ_BYTES_MAX, 15), [0, 5, 10]);
    assert_eq!(read_bases(&log, 0, READ_BYTES_MAX, 14), [0, 5]);
    assert!(read_bases(&log, 10, READ_BYTES_MAX, 12).is_empty());
    assert!(read_bases(&log, 3, READ_BYTES_MAX, 4).is_empty());
    assert!(read_bases(&log, 0, READ_BYTES_MAX, 0).is_empty());
    assert!(read_bases(&log, 12, READ_BYTES_MAX, 10).is_empty());
}

#[test]
fn read_returns_one_whole_batch_even_when_larger_than_max_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), &manual_clock(), 0);
    let len = four_batches_of_five(&log);
    for max_bytes in [0, 1, 10, len - 1] {
        let result = log.read(7, max_bytes, i64::MAX).expect("read");
        let batches = batches_of(&result.records);
        assert_eq!(batches.len(), 1, "max_bytes {max_bytes}");
        assert_eq!(batches[0].0.base_offset, 5);
        assert_eq!(result.records.len(), len);
    }
}

#[test]
fn read_respects_max_bytes_beyond_the_first_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), &manual_clock(), 0);
    let len = four_batches_of_five(&log);
    assert_eq!(read_bases(&log, 0, len, i64::MAX), [0]);
    assert_eq!(read_bases(&log, 0, 2 * len - 1, i64::MAX), [0]);
    assert_eq!(read_bases(&log, 0, 2 * len, i64::MAX), [0, 5]);
    assert_eq!(read_bases(&log, 0, 3 * len + len / 2, i64::MAX), [0, 5, 10]);
    assert_eq!(read_bases(&log, 5, 4 * len, i64::MAX), [5, 10, 15]);
}

#[test]
fn read_at_the_end_is_empty_and_outside_the_log_is_out_of_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), &manual_clock(), 0);
    four_batches_of_five(&log);
    let at_end = log
        .read(20, READ_BYTES_MAX, i64::MAX)
        .expect("read at the end");
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.log_end_offset, 20);
    assert!(is_out_of_range(&log.read(21, READ_BYTES_MAX, i64::MAX)));
    assert!(is_out_of_range(&log.read(-1, READ_BYTES_MAX, i64::MAX)));
    log.delete_records_before(5).expect("delete records");
    assert!(is_out_of_range(&log.read(4, READ_BYTES_MAX, i64::MAX)));
    assert_eq!(read_bases(&log, 5, READ_BYTES_MAX, i64::MAX), [5, 10, 15]);
}

#[test]
fn reads_across_many_old_segments_keep_open_segments_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        open_segments_max: 1,
        ..small_segments()
    };
    let clock = manual_clock();
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    let batches = 40;
    for i in 0..batches {
        log.append_as_leader(third_of_a_segment(i as u8, T0), 0)
            .expect("append");
    }
    assert!(
        log.segment_count() >= 10,
        "segments: {}",
        log.segment_count()
    );
    log.close().expect("close");

    let log = open_log(dir.path(), config, &clock, 0);
    assert_eq!(
        log.open_segment_count(),
        1,
        "only the active segment is open after open"
    );
    // Twice over, so every old segment is opened again after having been closed.
    for round in 0..2 {
        for offset in 0..batches as i64 {
            let result = log.read(offset, 1, i64::MAX).expect("read");
            let got = batches_of(&result.records);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0.base_offset, offset, "round {round}");
            let value = &decode_records(&got)[0].2;
            assert_eq!(value.as_deref(), Some(&[offset as u8; 200][..]));
            assert!(
                log.open_segment_count() <= 2,
                "round {round}, offset {offset}: {} segments open",
                log.open_segment_count()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// segment.bytes, segment.ms, index.interval.bytes
// ---------------------------------------------------------------------------------------------

#[test]
fn segment_bytes_rolls_and_no_segment_exceeds_it_unless_one_batch_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_segments();
    let log = open_log(dir.path(), config.clone(), &manual_clock(), 0);
    for i in 0..3 {
        log.append_as_leader(third_of_a_segment(i, T0), 0)
            .expect("append");
    }
    assert_eq!(log.segment_count(), 1, "three batches fit in one segment");
    log.append_as_leader(third_of_a_segment(3, T0), 0)
        .expect("append");
    assert_eq!(log.segment_count(), 2, "the fourth rolls");
    for i in 4..30 {
        log.append_as_leader(third_of_a_segment(i, T0), 0)
            .expect("append");
    }
    assert_eq!(log.segment_count(), 10);
    let files = log_files(dir.path());
    assert_eq!(files.len(), 10);
    assert!(
        files.iter().all(|(_, size)| *size <= config.segment_bytes),
        "{files:?}"
    );
    let bases: Vec<i64> = files.iter().map(|(b, _)| *b).collect();
    assert_eq!(bases, (0..10).map(|i| i * 3).collect::<Vec<_>>());

    let big = testing::batch(1, 3000, b'B', T0);
    let info = log
        .append_as_leader(big.clone(), 0)
        .expect("append big batch");
    let after = log
        .append_as_leader(third_of_a_segment(0, T0), 0)
        .expect("append");
    let files = log_files(dir.path());
    let big_segment = files
        .iter()
        .find(|(b, _)| *b == info.base_offset)
        .expect("own segment");
    assert_eq!(
        big_segment.1,
        big.len() as u64,
        "the big batch alone in its segment"
    );
    assert!(big_segment.1 > config.segment_bytes);
    assert_eq!(files.last().map(|(b, _)| *b), Some(after.base_offset));
    assert_eq!(read_all(&log).len(), 32);
}

#[test]
fn segment_ms_rolls_by_age_of_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig {
        segment_ms: 10_000,
        ..LogConfig::default()
    };
    let log = open_log(dir.path(), config, &clock, 0);
    log.append_as_leader(testing::batch(1, 10, b'a', T0), 0)
        .expect("append");
    clock.advance(9_999);
    log.append_as_leader(testing::batch(1, 10, b'b', T0), 0)
        .expect("append");
    assert_eq!(log.segment_count(), 1);
    clock.advance(1);
    let info = log
        .append_as_leader(testing::batch(1, 10, b'c', T0), 0)
        .expect("append");
    assert_eq!(log.segment_count(), 2);
    assert_eq!(
        log_files(dir.path()).last().map(|(b, _)| *b),
        Some(info.base_offset)
    );
    clock.advance(9_999);
    log.append_as_leader(testing::batch(1, 10, b'd', T0), 0)
        .expect("append");
    assert_eq!(log.segment_count(), 2);
    clock.advance(1);
    log.append_as_leader(testing::batch(1, 10, b'e', T0), 0)
        .expect("append");
    assert_eq!(log.segment_count(), 3);
    assert_eq!(read_all(&log).len(), 5);
}

/// Size of a segment's `.index` file; a missing file (no entry yet) counts as empty.
fn index_file_len(dir: &Path, base: i64) -> u64 {
    fs::metadata(dir.join(file_name(base, "index"))).map_or(0, |m| m.len())
}

#[test]
fn index_interval_bytes_sets_the_density_of_the_offset_index() {
    let dense_dir = tempfile::tempdir().expect("tempdir");
    let sparse_dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let dense_config = LogConfig {
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let dense = open_log(dense_dir.path(), dense_config.clone(), &clock, 0);
    let sparse = open_log(sparse_dir.path(), LogConfig::default(), &clock, 0);
    let batches = 20;
    for i in 0..batches {
        let b = testing::batch(2, 50, i as u8, T0);
        dense.append_as_leader(b.clone(), 0).expect("append");
        sparse.append_as_leader(b, 0).expect("append");
    }
    dense.flush().expect("flush");
    sparse.flush().expect("flush");
    // One 8-byte entry per batch after the first (whose position 0 needs none).
    assert_eq!(index_file_len(dense_dir.path(), 0), 8 * (batches - 1));
    assert_eq!(index_file_len(sparse_dir.path(), 0), 0);
    dense.close().expect("close");
    sparse.close().expect("close");
    assert_eq!(index_file_len(dense_dir.path(), 0), 8 * (batches - 1));

    let dense = open_log(dense_dir.path(), dense_config, &clock, 0);
    for offset in 0..2 * batches as i64 {
        let result = dense.read(offset, 1, i64::MAX).expect("read");
        let got = batches_of(&result.records);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.base_offset, offset - offset % 2, "offset {offset}");
    }
}

// ---------------------------------------------------------------------------------------------
// retention.ms, retention.bytes, cleanup.policy
// ---------------------------------------------------------------------------------------------

#[test]
fn retention_ms_deletes_expired_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig {
        retention_ms: 60_000,
        ..small_segments()
    };
    let log = open_log(dir.path(), config, &clock, 0);
    // Segments [0,3), [3,6) hold records of T0; [6,9) and the active [9,10) of T0 + 30 s.
    for i in 0..6 {
        log.append_as_leader(third_of_a_segment(i, T0), 0)
            .expect("append");
    }
    for i in 6..10 {
        log.append_as_leader(third_of_a_segment(i, T0 + 30_000), 0)
            .expect("append");
    }
    let bases = |dir: &Path| log_files(dir).iter().map(|(b, _)| *b).collect::<Vec<_>>();
    assert_eq!(bases(dir.path()), [0, 3, 6, 9]);

    clock.set(T0 + 60_000);
    assert_eq!(
        log.enforce_retention().expect("retention").segments_deleted,
        0
    );
    clock.set(T0 + 60_001);
    let outcome = log.enforce_retention().expect("retention");
    assert_eq!(outcome.segments_deleted, 2);
    assert_eq!(bases(dir.path()), [6, 9]);
    assert_eq!(log.log_start_offset(), 6);
    assert!(is_out_of_range(&log.read(5, READ_BYTES_MAX, i64::MAX)));

    clock.set(T0 + 1_000_000);
    let outcome = log.enforce_retention().expect("retention");
    assert_eq!(
        outcome.segments_deleted, 1,
        "the active segment is never deleted"
    );
    assert_eq!(bases(dir.path()), [9]);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (9, 10));
    assert_eq!(read_bases(&log, 9, READ_BYTES_MAX, i64::MAX), [9]);
}

#[test]
fn retention_bytes_deletes_the_oldest_segments_beyond_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig {
        retention_bytes: 2048,
        ..small_segments()
    };
    let log = open_log(dir.path(), config, &clock, 0);
    for i in 0..25 {
        log.append_as_leader(third_of_a_segment(i, T0), 0)
            .expect("append");
    }
    let before = log_files(dir.path());
    assert_eq!(before.len(), 9);
    let outcome = log.enforce_retention().expect("retention");
    let after = log_files(dir.path());
    // Kafka: delete the oldest segment while the rest still hold at least retention.bytes.
    let total: u64 = after.iter().map(|(_, s)| s).sum();
    assert!(total - after[0].1 < 2048, "{after:?}");
    assert!(total >= 2048 || after.len() == 1, "{after:?}");
    assert_eq!(outcome.segments_deleted, before.len() - after.len());
    let freed: u64 = before[..outcome.segments_deleted]
        .iter()
        .map(|(_, s)| s)
        .sum();
    assert_eq!(outcome.bytes_deleted, freed);
    assert_eq!(&before[outcome.segments_deleted..], &after[..]);
    assert_eq!(log.log_start_offset(), after[0].0);
    assert_eq!(log.log_end_offset(), 25);
    assert_eq!(log.size_bytes(), total);
}

#[test]
fn compact_cleanup_policy_disables_deletion_by_retention() {
    let clock = manual_clock();
    for (policy, deletes) in [
        (CleanupPolicy::Compact, false),
        (CleanupPolicy::CompactDelete, true),
        (CleanupPolicy::Delete, true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            cleanup_policy: policy,
            retention_ms: 1_000,
            retention_bytes: 1,
            ..small_segments()
        };
        let log = open_log(dir.path(), config, &clock, 0);
        let value = "v".repeat(200);
        for i in 0..10 {
            let b = kv_batch(
                &[("k", Some(value.as_str()))],
                clock.now_ms(),
                Compression::None,
            );
            log.append_as_leader(b, 0)
                .unwrap_or_else(|e| panic!("append {i}: {e}"));
        }
        let segments = log.segment_count();
        assert!(segments > 2);
        clock.advance(10_000);
        let outcome = log.enforce_retention().expect("retention");
        if deletes {
            assert_eq!(outcome.segments_deleted, segments - 1, "{policy:?}");
            assert_eq!(log.segment_count(), 1);
        } else {
            assert_eq!(outcome.segments_deleted, 0, "{policy:?}");
            assert_eq!(log.segment_count(), segments);
            assert_eq!(log.log_start_offset(), 0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// delete_records_before
// ---------------------------------------------------------------------------------------------

#[test]
fn delete_records_before_moves_the_log_start_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = small_segments();
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    for i in 0..20 {
        log.append_as_leader(third_of_a_segment(i, T0), 0)
            .expect("append");
    }
    // Segments start at 0, 3, 6, 9, 12, 15, 18.
    assert_eq!(log.delete_records_before(10).expect("delete"), 10);
    assert_eq!(log.log_start_offset(), 10);
    let bases: Vec<i64> = log_files(dir.path()).iter().map(|(b, _)| *b).collect();
    assert_eq!(
        bases,
        [9, 12, 15, 18],
        "whole segments below the start are gone"
    );
    assert!(is_out_of_range(&log.read(9, READ_BYTES_MAX, i64::MAX)));
    assert_eq!(read_bases(&log, 10, READ_BYTES_MAX, i64::MAX), [10, 11]);
    assert!(is_out_of_range(&log.delete_records_before(21)));
    assert_eq!(log.delete_records_before(5).expect("below the start"), 10);
    assert_eq!(log.log_start_offset(), 10);

    log.close().expect("close");
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    assert_eq!(log.log_start_offset(), 10, "after a clean reopen");
    assert!(is_out_of_range(&log.read(9, READ_BYTES_MAX, i64::MAX)));

    assert_eq!(log.delete_records_before(14).expect("delete"), 14);
    drop(log); // crash
    let log = open_log(dir.path(), config, &clock, 0);
    assert_eq!(
        log.log_start_offset(),
        14,
        "after a crash and full recovery"
    );
    assert!(is_out_of_range(&log.read(13, READ_BYTES_MAX, i64::MAX)));
    assert_eq!(read_bases(&log, 14, READ_BYTES_MAX, i64::MAX), [14]);
    assert_eq!(log.log_end_offset(), 20);
}

// ---------------------------------------------------------------------------------------------
// truncate_to, truncate_fully_and_start_at
// ---------------------------------------------------------------------------------------------

#[test]
fn truncate_to_drops_later_batches_and_segments_and_the_epoch_cache_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = small_segments();
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    for i in 0..20 {
        let epoch = if i < 10 { 1 } else { 2 };
        log.append_as_leader(third_of_a_segment(i, T0), epoch)
            .expect("append");
    }
    assert_eq!(log.truncate_to(13).expect("truncate"), 13);
    assert_eq!(log.log_end_offset(), 13);
    let bases: Vec<i64> = log_files(dir.path()).iter().map(|(b, _)| *b).collect();
    assert_eq!(bases, [0, 3, 6, 9, 12]);
    assert_eq!(log.latest_epoch(), Some(2));
    assert_eq!(log.end_offset_for_epoch(1), (1, 10));
    assert_eq!(log.end_offset_for_epoch(2), (2, 13));

    assert_eq!(log.truncate_to(8).expect("truncate"), 8);
    let bases: Vec<i64> = log_files(dir.path()).iter().map(|(b, _)| *b).collect();
    assert_eq!(bases, [0, 3, 6]);
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(log.end_offset_for_epoch(1), (1, 8));
    assert_eq!(log.end_offset_for_epoch(2), (-1, -1));
    assert_eq!(log.truncate_to(100).expect("beyond the end"), 8, "no-op");

    let info = log
        .append_as_leader(third_of_a_segment(b'n', T0), 3)
        .expect("append");
    assert_eq!(info.base_offset, 8, "appends continue at the new end");
    assert_eq!(log.end_offset_for_epoch(1), (1, 8));
    assert_eq!(log.end_offset_for_epoch(2), (1, 8));
    assert_eq!(log.end_offset_for_epoch(3), (3, 9));

    let check = |log: &Log, context: &str| {
        let stored = read_all(log);
        let offsets: Vec<i64> = stored.iter().map(|(h, _)| h.base_offset).collect();
        assert_eq!(offsets, (0..9).collect::<Vec<_>>(), "{context}");
        assert_eq!(stored[8].0.partition_leader_epoch, 3, "{context}");
        let values = decode_records(&stored);
        assert_eq!(values[8].2.as_deref(), Some(&[b'n'; 200][..]), "{context}");
        assert_eq!(log.end_offset_for_epoch(1), (1, 8), "{context}");
        assert_eq!(log.end_offset_for_epoch(3), (3, 9), "{context}");
    };
    check(&log, "before reopen");
    log.close().expect("close");
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    check(&log, "after a clean reopen");
    drop(log);
    let log = open_log(dir.path(), config, &clock, 0);
    check(&log, "after a crash");
}

#[test]
fn truncate_to_inside_a_batch_removes_the_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), &manual_clock(), 0);
    four_batches_of_five(&log);
    assert_eq!(log.truncate_to(7).expect("truncate"), 5);
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(read_bases(&log, 0, READ_BYTES_MAX, i64::MAX), [0]);
    let info = log
        .append_as_leader(testing::batch(1, 1, b'x', T0), 0)
        .expect("append");
    assert_eq!(info.base_offset, 5);
}

#[test]
fn truncate_fully_and_start_at_restarts_an_empty_log_at_the_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = small_segments();
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    for i in 0..10 {
        log.append_as_leader(third_of_a_segment(i, T0), 1)
            .expect("append");
    }
    log.truncate_fully_and_start_at(100)
        .expect("truncate fully");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log_files(dir.path()), [(100, 0)]);
    assert!(log
        .read(100, READ_BYTES_MAX, i64::MAX)
        .expect("read")
        .records
        .is_empty());
    assert!(is_out_of_range(&log.read(99, READ_BYTES_MAX, i64::MAX)));
    let info = log
        .append_as_leader(third_of_a_segment(b'z', T0), 5)
        .expect("append");
    assert_eq!(info.base_offset, 100);
    assert_eq!(log.end_offset_for_epoch(5), (5, 101));

    log.close().expect("close");
    let log = open_log(dir.path(), config, &clock, 0);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 101));
    assert_eq!(read_bases(&log, 100, READ_BYTES_MAX, i64::MAX), [100]);
    assert_eq!(log.end_offset_for_epoch(5), (5, 101));
}

// ---------------------------------------------------------------------------------------------
// Leader epochs
// ---------------------------------------------------------------------------------------------

#[test]
fn leader_epochs_answer_offset_for_leader_epoch_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let log = open_log(dir.path(), LogConfig::default(), &clock, 0);
    for epoch in [0, 0, 1, 1, 3] {
        log.append_as_leader(testing::batch(2, 10, b'e', T0), epoch)
            .expect("append");
    }
    // Epoch 0 starts at 0, epoch 1 at 4, epoch 3 at 8; the log ends at 10.
    let check = |log: &Log, context: &str| {
        assert_eq!(log.latest_epoch(), Some(3), "{context}");
        assert_eq!(log.end_offset_for_epoch(0), (0, 4), "{context}");
        assert_eq!(log.end_offset_for_epoch(1), (1, 8), "{context}");
        assert_eq!(log.end_offset_for_epoch(2), (1, 8), "{context}");
        assert_eq!(log.end_offset_for_epoch(3), (3, 10), "{context}");
        assert_eq!(log.end_offset_for_epoch(4), (-1, -1), "{context}");
        assert_eq!(log.end_offset_for_epoch(-1), (-1, -1), "{context}");
    };
    check(&log, "live");
    log.close().expect("close");
    let log = open_log(dir.path(), LogConfig::default(), &clock, 0);
    check(&log, "after a clean reopen");
    drop(log);
    let log = open_log(dir.path(), LogConfig::default(), &clock, 0);
    check(&log, "after a crash");
}

#[test]
fn a_new_leader_epoch_is_recorded_at_the_log_end_before_any_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let log = open_log(dir.path(), LogConfig::default(), &clock, 0);
    log.append_as_leader(testing::batch(2, 10, b'e', T0), 1)
        .expect("append");
    log.assign_leader_epoch(4).expect("assign");
    assert_eq!(log.latest_epoch(), Some(4));
    // Epoch 1 ends where epoch 4 begins: at the log end when it took over.
    assert_eq!(log.end_offset_for_epoch(2), (1, 2));
    assert_eq!(log.end_offset_for_epoch(4), (4, 2));
    log.assign_leader_epoch(3)
        .expect("an older epoch is ignored");
    assert_eq!(log.latest_epoch(), Some(4));
    // Deposed before appending: a follower's truncation at (or past) the end drops the empty
    // epoch, so replicated batches of older epochs are recorded under their own epochs.
    assert_eq!(log.truncate_to(10).expect("truncate"), 2);
    assert_eq!(log.latest_epoch(), Some(1));
    log.assign_leader_epoch(4).expect("assign again");
    log.append_as_leader(testing::batch(1, 10, b'e', T0), 4)
        .expect("append at the new epoch");
    assert_eq!(log.end_offset_for_epoch(4), (4, 3));
}

#[test]
fn a_retired_log_changes_no_file_but_still_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig {
        segment_bytes: 1024,
        retention_bytes: 1,
        ..LogConfig::default()
    };
    let log = open_log(dir.path(), config, &clock, 0);
    for _ in 0..4 {
        log.append_as_leader(testing::batch(2, 400, b'r', T0), 0)
            .expect("append");
    }
    log.on_high_watermark_updated(log.log_end_offset());
    let files_before = std::fs::read_dir(dir.path()).expect("dir").count();
    log.retire();
    assert!(log
        .append_as_leader(testing::batch(1, 10, b'r', T0), 0)
        .is_err());
    assert!(log.truncate_to(2).is_err());
    assert!(log.delete_records_before(2).is_err());
    log.enforce_retention().expect("a no-op");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        files_before,
        "no file deleted or created"
    );
    let read = log.read(0, 1 << 20, log.log_end_offset()).expect("reads");
    assert!(!read.records.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Idempotent producers and transactions
// ---------------------------------------------------------------------------------------------

fn producer(id: i64, epoch: i16, base_sequence: i32, transactional: bool) -> Producer {
    Producer {
        id,
        epoch,
        base_sequence,
        transactional,
    }
}

fn assert_duplicate(log: &Log, b: Bytes, base: i64, last: i64, context: &str) {
    let end = log.log_end_offset();
    let size = log.size_bytes();
    let info = log.append_as_leader(b, 0).expect("retry");
    assert!(info.duplicate, "{context}: {info:?}");
    assert_eq!(
        (info.base_offset, info.last_offset),
        (base, last),
        "{context}"
    );
    assert_eq!(
        (log.log_end_offset(), log.size_bytes()),
        (end, size),
        "{context}: nothing written"
    );
}

#[test]
fn idempotent_producer_retries_are_deduplicated_and_bad_sequences_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig::default();
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    let p = |seq| producer(42, 3, seq, false);
    let first = log
        .append_as_leader(idempotent_batch(3, p(0), T0), 0)
        .expect("append");
    assert_eq!(
        (first.base_offset, first.last_offset, first.duplicate),
        (0, 2, false)
    );
    log.append_as_leader(testing::batch(1, 1, b'x', T0), 0)
        .expect("plain append");
    let second = log
        .append_as_leader(idempotent_batch(2, p(3), T0), 0)
        .expect("append");
    assert_eq!((second.base_offset, second.last_offset), (4, 5));

    assert_duplicate(
        &log,
        idempotent_batch(3, p(0), T0),
        0,
        2,
        "retry of the first batch",
    );
    assert_duplicate(
        &log,
        idempotent_batch(2, p(3), T0),
        4,
        5,
        "retry of the second batch",
    );
    match log.append_as_leader(idempotent_batch(1, p(7), T0), 0) {
        Err(StorageError::OutOfOrderSequence {
            producer_id: 42,
            first_sequence: 7,
            last_sequence: 4,
        }) => {}
        other => panic!("expected OutOfOrderSequence, got {other:?}"),
    }
    match log.append_as_leader(idempotent_batch(1, producer(42, 2, 5, false), T0), 0) {
        Err(StorageError::InvalidProducerEpoch {
            producer_id: 42,
            epoch: 2,
            current_epoch: 3,
        }) => {}
        other => panic!("expected InvalidProducerEpoch, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), 6, "refused batches write nothing");
    let third = log
        .append_as_leader(idempotent_batch(1, p(5), T0), 0)
        .expect("in order");
    assert_eq!(third.base_offset, 6);

    log.close().expect("close");
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    assert_duplicate(
        &log,
        idempotent_batch(1, p(5), T0),
        6,
        6,
        "after a clean reopen",
    );
    let fourth = log
        .append_as_leader(idempotent_batch(2, p(6), T0), 0)
        .expect("append");
    assert_eq!((fourth.base_offset, fourth.last_offset), (7, 8));

    // The snapshot written by close covers offsets below 7; the batch at 7 must be replayed.
    drop(log);
    let log = open_log(dir.path(), config, &clock, 0);
    assert_duplicate(
        &log,
        idempotent_batch(2, p(6), T0),
        7,
        8,
        "after a crash (replayed)",
    );
    assert_duplicate(
        &log,
        idempotent_batch(3, p(0), T0),
        0,
        2,
        "after a crash (snapshot)",
    );
    assert!(matches!(
        log.append_as_leader(idempotent_batch(1, p(10), T0), 0),
        Err(StorageError::OutOfOrderSequence {
            last_sequence: 7,
            ..
        })
    ));
    assert_eq!(
        log.append_as_leader(idempotent_batch(1, p(8), T0), 0)
            .expect("next")
            .base_offset,
        9
    );
}

#[test]
fn transactions_are_tracked_and_aborts_indexed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig::default();
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    let t = |seq| producer(9, 0, seq, true);
    log.append_as_leader(testing::batch(1, 1, b'x', T0), 0)
        .expect("append"); // 0
    assert_eq!(log.first_unstable_offset(), None);
    log.append_as_leader(idempotent_batch(2, t(0), T0), 0)
        .expect("txn"); // 1-2
    assert_eq!(log.first_unstable_offset(), Some(1));
    log.append_as_leader(testing::batch(1, 1, b'y', T0), 0)
        .expect("append"); // 3
    log.append_as_leader(idempotent_batch(2, t(2), T0), 0)
        .expect("txn"); // 4-5
    assert_eq!(log.first_unstable_offset(), Some(1));
    assert!(
        matches!(
            log.append_as_leader(control_batch(t(-1), false, T0), 0),
            Err(StorageError::InvalidBatch(_))
        ),
        "markers come from the coordinator, never from a producer"
    );
    let marker = log
        .append_as_coordinator(control_batch(t(-1), false, T0), 0)
        .expect("abort");
    assert_eq!(marker.base_offset, 6);
    // Kafka: the LSO stays at the transaction until its marker is below the high watermark.
    assert_eq!(log.first_unstable_offset(), Some(1));
    log.on_high_watermark_updated(6);
    assert_eq!(log.first_unstable_offset(), Some(1));
    log.on_high_watermark_updated(7);
    assert_eq!(log.first_unstable_offset(), None);

    let aborted = AbortedTxn {
        producer_id: 9,
        first_offset: 1,
        last_offset: 6,
        last_stable_offset: 7,
    };
    assert_eq!(log.aborted_transactions(0, 7), [aborted]);
    assert_eq!(log.aborted_transactions(6, 100), [aborted]);
    assert!(log.aborted_transactions(0, 1).is_empty());
    assert!(log.aborted_transactions(7, 100).is_empty());

    log.append_as_leader(idempotent_batch(2, t(4), T0), 0)
        .expect("txn"); // 7-8
    assert_eq!(log.first_unstable_offset(), Some(7));
    log.append_as_coordinator(control_batch(t(-1), true, T0), 0)
        .expect("commit"); // 9
    assert_eq!(log.first_unstable_offset(), Some(7));
    log.on_high_watermark_updated(10);
    assert_eq!(log.first_unstable_offset(), None);
    assert_eq!(
        log.aborted_transactions(0, 10),
        [aborted],
        "a commit adds no entry"
    );

    log.append_as_leader(idempotent_batch(1, t(6), T0), 0)
        .expect("open txn"); // 10
    drop(log);
    let log = open_log(dir.path(), config, &clock, 0);
    assert_eq!(
        log.aborted_transactions(0, 11),
        [aborted],
        "rebuilt after a crash"
    );
    log.on_high_watermark_updated(11);
    assert_eq!(
        log.first_unstable_offset(),
        Some(10),
        "open transaction rebuilt"
    );
    log.append_as_coordinator(control_batch(t(-1), false, T0), 0)
        .expect("abort");
    log.on_high_watermark_updated(12);
    assert_eq!(log.first_unstable_offset(), None);
    let second = AbortedTxn {
        producer_id: 9,
        first_offset: 10,
        last_offset: 11,
        last_stable_offset: 12,
    };
    assert_eq!(log.aborted_transactions(0, 12), [aborted, second]);
}

/// The aborted-transaction index of an old segment must survive a crash even when recovery
/// starts below the newest producer snapshot (recovery points are checkpointed less often than
/// segments roll, so this is the usual case).
#[test]
fn aborted_transactions_in_old_segments_survive_a_crash_with_an_old_recovery_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = small_segments();
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    let t = |seq| producer(5, 0, seq, true);
    log.append_as_leader(idempotent_batch(2, t(0), T0), 0)
        .expect("txn"); // 0-1
    log.append_as_coordinator(control_batch(t(-1), false, T0), 0)
        .expect("abort"); // 2
    for i in 0..9 {
        log.append_as_leader(third_of_a_segment(i, T0), 0)
            .expect("append"); // rolls twice
    }
    assert!(log.segment_count() >= 3);
    let aborted = log.aborted_transactions(0, log.log_end_offset());
    assert_eq!(aborted.len(), 1);
    let end = log.log_end_offset();
    drop(log); // crash; the recovery point checkpoint was taken before any of this

    let log = open_log(dir.path(), config, &clock, 0);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(
        log.aborted_transactions(0, end),
        aborted,
        "read_committed fetches would return the aborted records"
    );
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

#[test]
fn offset_for_timestamp_returns_the_first_record_at_or_after_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig {
        index_interval_bytes: 1,
        ..small_segments()
    };
    let log = open_log(dir.path(), config, &clock, 0);
    // Records out of timestamp order inside each batch; batch maxima increase.
    let mut all: Vec<(i64, i64)> = Vec::new();
    for j in 0..12i64 {
        let ts = [
            1000 * j + 500,
            1000 * j + 100,
            1000 * j + 900,
            1000 * j + 300,
        ];
        let records: Vec<TimedRecord<'_>> = ts
            .iter()
            .map(|t| (None, Some(&[7u8; 60][..]), *t))
            .collect();
        let info = log
            .append_as_leader(
                batch_records(&records, Producer::NONE, Compression::None),
                0,
            )
            .expect("append");
        all.extend(
            ts.iter()
                .enumerate()
                .map(|(i, t)| (info.base_offset + i as i64, *t)),
        );
    }
    assert!(log.segment_count() >= 3, "lookups must cross segments");
    assert_eq!(
        log.offset_for_timestamp(250).expect("lookup"),
        Some((0, 500))
    );
    assert_eq!(
        log.offset_for_timestamp(600).expect("lookup"),
        Some((2, 900))
    );
    assert_eq!(
        log.offset_for_timestamp(950).expect("lookup"),
        Some((4, 1500))
    );
    for target in (0..12_500).step_by(50) {
        let expected = all.iter().copied().find(|(_, ts)| *ts >= target);
        assert_eq!(
            log.offset_for_timestamp(target).expect("lookup"),
            expected,
            "target {target}"
        );
    }
    assert_eq!(log.offset_for_timestamp(11_901).expect("lookup"), None);
    assert_eq!(log.max_timestamp_offset().expect("max"), Some((46, 11_900)));

    log.delete_records_before(6).expect("delete records");
    assert_eq!(
        log.offset_for_timestamp(0).expect("lookup"),
        Some((6, 1900))
    );
}

#[test]
fn max_timestamp_offset_is_the_first_record_with_the_largest_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), small_segments(), &manual_clock(), 0);
    assert_eq!(log.max_timestamp_offset().expect("empty"), None);
    log.append_as_leader(timestamps_batch(&[10, 900, 20]), 0)
        .expect("append"); // 0-2
    log.append_as_leader(timestamps_batch(&[30, 40, 900]), 0)
        .expect("append"); // 3-5
    log.append_as_leader(timestamps_batch(&[50, 60]), 0)
        .expect("append"); // 6-7
    assert_eq!(log.max_timestamp_offset().expect("max"), Some((1, 900)));
    assert_eq!(
        log.offset_for_timestamp(35).expect("lookup"),
        Some((1, 900))
    );
    assert_eq!(log.offset_for_timestamp(901).expect("lookup"), None);
}

// ---------------------------------------------------------------------------------------------
// Page-cache drop-behind
// ---------------------------------------------------------------------------------------------

/// Bytes of `path` in the page cache, as util-linux's `fincore` reports them.
fn cached_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (Debian package util-linux-extra, installed by scripts/bootstrap.sh)");
    assert!(out.status.success(), "fincore failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("fincore printed {text:?}: {e}"))
}

/// `page_cache_retain_bytes`: appends far past the window leave between half and all of the
/// window cached (clean bytes too: the newest half is never advised), and every byte still
/// reads back, which leaves the bytes outside the window uncached again; 0 keeps the whole
/// segment cached. Every append is fsynced (`flush.messages=1`),
/// so the advised pages are clean and the kernel must drop them. The log lives under the
/// target directory, not in `/tmp`, which may be a tmpfs where nothing can be dropped.
#[test]
fn page_cache_retain_bytes_keeps_only_the_newest_bytes_cached() {
    const MIB: u64 = 1024 * 1024;
    const BATCHES: usize = 60;
    const RECORDS: usize = 200;
    // (window, segment.bytes): one segment; several (rolled tails are dropped once a window
    // behind, and the window can span two segments); drop-behind off.
    let cases = [
        (4 * MIB, LogConfig::default().segment_bytes),
        (4 * MIB, 7 * MIB),
        (0, LogConfig::default().segment_bytes),
    ];
    for (retain, segment_bytes) in cases {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let config = LogConfig {
            flush_messages: 1,
            page_cache_retain_bytes: retain,
            segment_bytes,
            ..LogConfig::default()
        };
        let log = open_log(dir.path(), config, &manual_clock(), 0);
        for i in 0..BATCHES {
            log.append_as_leader(testing::batch(RECORDS, 4000, i as u8, T0), 0)
                .expect("append");
        }
        let files: Vec<_> = log_files(dir.path())
            .iter()
            .map(|(base, _)| crate::segment_file(dir.path(), *base, "log"))
            .collect();
        let one_segment = segment_bytes > 100 * MIB;
        assert_eq!(files.len() == 1, one_segment, "{files:?}");
        let size: u64 = files
            .iter()
            .map(|f| fs::metadata(f).expect("segment").len())
            .sum();
        let cached = || files.iter().map(|f| cached_bytes(f)).sum::<u64>();
        // The window, the step not yet advised (a quarter of it, at least 1 MiB) and the last
        // append, rounded up; across a roll, the rolled segment's part of the window again.
        let most = if one_segment {
            retain + 3 * MIB
        } else {
            2 * retain + 3 * MIB
        };
        let what = format!(
            "bytes cached of {size} with a {retain}-byte window, {segment_bytes}-byte segments"
        );
        let now = cached();
        if retain > 0 {
            assert!(size > 8 * retain, "the log outgrew the window");
            assert!((retain / 2..=most).contains(&now), "{now} {what}");
        } else {
            assert!(now >= size / 2, "only {now} {what}");
        }
        let batches = read_all(&log);
        assert_eq!(batches.len(), BATCHES);
        for (i, (header, bytes)) in batches.iter().enumerate() {
            assert_eq!(header.records_count as usize, RECORDS);
            let fill = i as u8;
            let values = decode_records(&[(*header, bytes.clone())]);
            assert!(values
                .iter()
                .all(|(_, _, v, _)| v.as_deref().is_some_and(|v| v.iter().all(|b| *b == fill))));
        }
        if retain > 0 {
            // Reading it all back (from disk, mostly) left the older bytes uncached.
            let after = cached();
            assert!(after <= most, "{after} {what}, after reading them all back");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Flush policy and group commit
// ---------------------------------------------------------------------------------------------

#[test]
fn flush_messages_one_makes_every_append_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        flush_messages: 1,
        ..LogConfig::default()
    };
    let log = open_log(dir.path(), config, &manual_clock(), 0);
    for i in 0..10 {
        log.append_as_leader(testing::batch(1 + i % 3, 10, b'f', T0), 0)
            .expect("append");
        assert_eq!(log.recovery_point(), log.log_end_offset());
    }
}

#[test]
fn flush_messages_three_flushes_every_three_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        flush_messages: 3,
        ..LogConfig::default()
    };
    let log = open_log(dir.path(), config, &manual_clock(), 0);
    let mut points = Vec::new();
    for _ in 0..7 {
        log.append_as_leader(testing::batch(1, 10, b'f', T0), 0)
            .expect("append");
        points.push(log.recovery_point());
    }
    assert_eq!(points, [0, 0, 3, 3, 3, 6, 6]);
    log.append_as_leader(testing::batch(2, 10, b'f', T0), 0)
        .expect("append");
    assert_eq!(
        log.recovery_point(),
        9,
        "a 2-record batch completes the next 3"
    );
}

#[test]
fn flush_ms_flushes_when_the_oldest_unflushed_append_is_old_enough() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig {
        flush_ms: 1_000,
        ..LogConfig::default()
    };
    let log = open_log(dir.path(), config, &clock, 0);
    assert!(!log.flush_if_due().expect("nothing to flush"));
    log.append_as_leader(testing::batch(1, 10, b'f', T0), 0)
        .expect("append");
    clock.advance(600);
    log.append_as_leader(testing::batch(1, 10, b'f', T0), 0)
        .expect("append");
    clock.advance(399);
    assert!(!log.flush_if_due().expect("not yet"));
    assert_eq!(log.recovery_point(), 0);
    clock.advance(1);
    assert!(log.flush_if_due().expect("due"));
    assert_eq!(log.recovery_point(), 2);
    assert!(!log.flush_if_due().expect("nothing left"));
    clock.advance(10_000);
    assert!(!log.flush_if_due().expect("still nothing"));
}

#[test]
fn without_a_flush_policy_only_explicit_flushes_and_rolls_advance_the_recovery_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), small_segments(), &manual_clock(), 0);
    log.append_as_leader(third_of_a_segment(0, T0), 0)
        .expect("append");
    log.append_as_leader(third_of_a_segment(1, T0), 0)
        .expect("append");
    assert_eq!(log.recovery_point(), 0);
    log.flush().expect("flush");
    assert_eq!(log.recovery_point(), 2);
    log.append_as_leader(third_of_a_segment(2, T0), 0)
        .expect("append");
    assert_eq!(log.recovery_point(), 2);
    log.append_as_leader(third_of_a_segment(3, T0), 0)
        .expect("append (rolls)");
    assert!(log.recovery_point() >= 3, "a roll syncs the old segment");
}

#[test]
fn concurrent_appends_with_flush_messages_one_share_flushes_and_get_dense_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        flush_messages: 1,
        ..LogConfig::default()
    };
    let log = open_log(dir.path(), config, &manual_clock(), 0);
    let threads = 8;
    let appends_per_thread = 25;
    let mut infos: Vec<(i64, i64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = &log;
                s.spawn(move || {
                    let mut out = Vec::with_capacity(appends_per_thread);
                    for _ in 0..appends_per_thread {
                        let info = log
                            .append_as_leader(testing::batch(2, 16, t as u8, T0), 0)
                            .expect("append");
                        assert!(
                            log.recovery_point() > info.last_offset,
                            "acknowledged but not durable"
                        );
                        out.push((info.base_offset, info.last_offset));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("appender thread"))
            .collect()
    });
    infos.sort_unstable();
    let total = (threads * appends_per_thread) as i64;
    let expected: Vec<(i64, i64)> = (0..total).map(|i| (2 * i, 2 * i + 1)).collect();
    assert_eq!(infos, expected, "offsets distinct and dense");
    assert_eq!(log.log_end_offset(), 2 * total);
    assert_eq!(log.recovery_point(), 2 * total);
    assert_eq!(read_all(&log).len(), total as usize);
}

// ---------------------------------------------------------------------------------------------
// Clean shutdown
// ---------------------------------------------------------------------------------------------

/// Builds a log of 9 one-record batches (three segments), shut down cleanly or not, then
/// corrupts a record byte of the second batch, in the oldest segment.
fn corrupted_old_segment(dir: &Path, clean: bool) -> i64 {
    let clock = manual_clock();
    let log = open_log(dir, small_segments(), &clock, 0);
    let mut first_len = 0;
    for i in 0..9 {
        let b = third_of_a_segment(i, T0);
        first_len = b.len();
        log.append_as_leader(b, 0).expect("append");
    }
    let end = log.log_end_offset();
    if clean {
        log.close().expect("close");
        assert!(dir.join("clean-shutdown").exists());
    } else {
        drop(log);
    }
    flip_byte(
        &dir.join(file_name(0, "log")),
        first_len + BATCH_HEADER_LEN + 10,
    );
    end
}

#[test]
fn clean_shutdown_skips_recovery_while_a_crash_scans_and_truncates() {
    let crashed_dir = tempfile::tempdir().expect("tempdir");
    corrupted_old_segment(crashed_dir.path(), false);
    let crashed = open_log(crashed_dir.path(), small_segments(), &manual_clock(), 0);
    assert_eq!(
        crashed.log_end_offset(),
        1,
        "recovery cuts at the corrupt batch"
    );
    assert_eq!(crashed.segment_count(), 1, "and drops everything after it");
    assert_eq!(log_files(crashed_dir.path()).len(), 1);
    assert_eq!(read_bases(&crashed, 0, READ_BYTES_MAX, i64::MAX), [0]);

    let clean_dir = tempfile::tempdir().expect("tempdir");
    let end = corrupted_old_segment(clean_dir.path(), true);
    let clean = open_log(clean_dir.path(), small_segments(), &manual_clock(), 0);
    assert_eq!(
        clean.log_end_offset(),
        end,
        "a clean open does not rescan old segments"
    );
    assert_eq!(clean.segment_count(), 3);
    assert!(
        !clean_dir.path().join("clean-shutdown").exists(),
        "marker consumed by open"
    );
    // The corruption is still there, so a read of it must report it (never skip it).
    let old_file = clean_dir.path().join(file_name(0, "log"));
    let old_len = fs::metadata(&old_file).expect("metadata").len();
    assert_eq!(read_bases(&clean, 0, 1, i64::MAX), [0]);
    let read = clean.read(1, READ_BYTES_MAX, i64::MAX);
    assert!(
        matches!(read, Err(StorageError::CorruptLog { .. })),
        "reading the corrupt batch must report it, got {:?}",
        read.as_ref().map(|r| batches_of(&r.records)
            .iter()
            .map(|(h, _)| h.base_offset)
            .collect::<Vec<_>>())
    );
    assert_eq!(
        fs::metadata(&old_file).expect("metadata").len(),
        old_len,
        "opening an old segment for a read must not cut it"
    );
}

// ---------------------------------------------------------------------------------------------
// append_replicated
// ---------------------------------------------------------------------------------------------

/// A leader log with batches at epochs 1, 1, 2 (2 records each) and its whole record set.
fn leader_record_set(dir: &Path) -> (Log, Bytes) {
    let log = open_log(dir, LogConfig::default(), &manual_clock(), 0);
    for (i, epoch) in [1, 1, 2].into_iter().enumerate() {
        log.append_as_leader(testing::batch(2, 30, i as u8, T0), epoch)
            .expect("append");
    }
    let set = log.read(0, READ_BYTES_MAX, i64::MAX).expect("read").records;
    (log, set)
}

#[test]
fn replicated_append_keeps_the_leaders_offsets_and_epochs() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let (leader, set) = leader_record_set(leader_dir.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let follower = open_log(dir.path(), LogConfig::default(), &manual_clock(), 0);
    let info = follower.append_replicated(set.clone()).expect("replicate");
    assert_eq!(
        (info.base_offset, info.last_offset, info.duplicate),
        (0, 5, false)
    );
    assert_eq!(follower.log_end_offset(), 6);
    let copied = follower
        .read(0, READ_BYTES_MAX, i64::MAX)
        .expect("read")
        .records;
    assert_eq!(copied, set, "byte for byte");
    for epoch in [0, 1, 2, 3] {
        assert_eq!(
            follower.end_offset_for_epoch(epoch),
            leader.end_offset_for_epoch(epoch)
        );
    }
    assert_eq!(follower.end_offset_for_epoch(1), (1, 4));
}

#[test]
fn replicated_append_rejects_gaps_and_overlaps_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let follower = open_log(dir.path(), LogConfig::default(), &manual_clock(), 0);
    let b = testing::batch(2, 10, b'r', T0);
    follower
        .append_replicated(at_offset(&b, 0, 1))
        .expect("first");
    let size = follower.size_bytes();
    match follower.append_replicated(at_offset(&b, 5, 1)) {
        Err(StorageError::NonContiguousAppend {
            first_offset: 5,
            log_end_offset: 2,
        }) => {}
        other => panic!("gap: expected NonContiguousAppend, got {other:?}"),
    }
    match follower.append_replicated(at_offset(&b, 1, 1)) {
        Err(StorageError::NonContiguousAppend {
            first_offset: 1,
            log_end_offset: 2,
        }) => {}
        other => panic!("overlap: expected NonContiguousAppend, got {other:?}"),
    }
    let mut set = at_offset(&b, 2, 1).to_vec();
    set.extend_from_slice(&at_offset(&b, 3, 1));
    assert!(matches!(
        follower.append_replicated(Bytes::from(set)),
        Err(StorageError::NonMonotonicOffsets { base_offset: 3, .. })
    ));
    assert_eq!(
        (follower.log_end_offset(), follower.size_bytes()),
        (2, size)
    );
}

#[test]
fn replicated_append_accepts_gaps_on_a_compacted_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        ..LogConfig::default()
    };
    let follower = open_log(dir.path(), config, &manual_clock(), 0);
    let b = kv_batch(&[("k", Some("v"))], T0, Compression::None);
    follower
        .append_replicated(at_offset(&b, 10, 1))
        .expect("gap allowed");
    follower
        .append_replicated(at_offset(&b, 15, 1))
        .expect("gap allowed");
    assert_eq!(follower.log_end_offset(), 16);
    assert_eq!(read_bases(&follower, 0, READ_BYTES_MAX, i64::MAX), [10, 15]);
    assert_eq!(read_bases(&follower, 12, READ_BYTES_MAX, i64::MAX), [15]);
    assert!(matches!(
        follower.append_replicated(at_offset(&b, 15, 1)),
        Err(StorageError::NonContiguousAppend { .. })
    ));
}

#[test]
fn replicated_record_set_crossing_segment_bytes_rolls_at_batch_boundaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_segments();
    let follower = open_log(dir.path(), config.clone(), &manual_clock(), 0);
    let mut set = Vec::new();
    for i in 0..12 {
        set.extend_from_slice(&at_offset(&third_of_a_segment(i as u8, T0), i, 1));
    }
    let info = follower
        .append_replicated(Bytes::from(set))
        .expect("replicate");
    assert_eq!((info.base_offset, info.last_offset), (0, 11));
    let files = log_files(dir.path());
    let bases: Vec<i64> = files.iter().map(|(b, _)| *b).collect();
    assert_eq!(bases, [0, 3, 6, 9]);
    assert!(
        files.iter().all(|(_, size)| *size <= config.segment_bytes),
        "{files:?}"
    );
    let stored = read_all(&follower);
    assert_eq!(
        stored
            .iter()
            .map(|(h, _)| h.base_offset)
            .collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>()
    );
    drop(follower);
    let follower = open_log(dir.path(), config, &manual_clock(), 0);
    assert_eq!(
        follower.log_end_offset(),
        12,
        "every segment recovered intact"
    );
}

// ---------------------------------------------------------------------------------------------
// Recovery points in the KV store
// ---------------------------------------------------------------------------------------------

/// Writes a log with a flushed prefix and an unflushed tail, saves the recovery point through
/// `points`, crashes, and corrupts one byte below the recovery point (which a trusted segment
/// does not check) and the tail's last batch (which recovery must cut). Returns
/// `(recovery point, base offset of the corrupted last batch)`.
fn crash_with_saved_recovery_point(dir: &Path, points: &RecoveryPoints) -> (i64, i64) {
    let clock = manual_clock();
    let log = open_log(dir, small_segments(), &clock, 0);
    let mut len = 0;
    for i in 0..7 {
        let b = third_of_a_segment(i, T0);
        len = b.len();
        log.append_as_leader(b, 0).expect("append");
    }
    log.flush().expect("flush");
    let point = log.recovery_point();
    assert_eq!(point, 7);
    points.save(&[("t-0", point)]).expect("save");
    log.append_as_leader(third_of_a_segment(7, T0), 0)
        .expect("append");
    log.append_as_leader(third_of_a_segment(8, T0), 0)
        .expect("append");
    drop(log);
    // Segments: [0,3) [3,6) [6,9); the last batch (8) is the third of the active segment.
    flip_byte(&dir.join(file_name(0, "log")), BATCH_HEADER_LEN + 10);
    flip_byte(
        &dir.join(file_name(6, "log")),
        2 * len + BATCH_HEADER_LEN + 10,
    );
    (point, 8)
}

fn reopen_with_stored_point(dir: &Path, points: &RecoveryPoints, expected: (i64, i64)) {
    let point = points.get("t-0").expect("get");
    assert_eq!(point, expected.0);
    let log = open_log(dir, small_segments(), &manual_clock(), point);
    assert_eq!(
        log.log_end_offset(),
        expected.1,
        "the unflushed tail is checked and cut"
    );
    assert_eq!(
        log.segment_count(),
        3,
        "segments below the recovery point are trusted"
    );
    assert_eq!(read_bases(&log, 3, READ_BYTES_MAX, i64::MAX), [3, 4, 5]);
}

#[test]
fn recovery_point_saved_in_mem_kv_limits_recovery_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv: Arc<dyn KvStore> = Arc::new(MemKv::new(COLUMN_FAMILIES));
    let points = RecoveryPoints::new(kv);
    let expected = crash_with_saved_recovery_point(dir.path(), &points);
    reopen_with_stored_point(dir.path(), &points, expected);
}

#[test]
fn recovery_point_saved_in_rocks_kv_survives_reopening_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv_dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let kv: Arc<dyn KvStore> =
            Arc::new(RocksKv::open(kv_dir.path(), COLUMN_FAMILIES).expect("open rocks"));
        crash_with_saved_recovery_point(dir.path(), &RecoveryPoints::new(kv))
    };
    let kv: Arc<dyn KvStore> =
        Arc::new(RocksKv::open(kv_dir.path(), COLUMN_FAMILIES).expect("reopen rocks"));
    reopen_with_stored_point(dir.path(), &RecoveryPoints::new(kv), expected);
}

/// The log reports what it does through the `metrics` facade: appends, duplicates, flushes,
/// rolls and corrupt reads move their counters.
#[test]
fn storage_metrics_are_recorded() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use streambus_storage::metrics as m;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 4096,
            flush_messages: 1,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config, LogOptions::default()).expect("open");
        for _ in 0..4 {
            log.append_as_leader(batch::testing::batch(2, 1500, b'm', 1), 0)
                .expect("append");
        }
        let producer = batch::testing::Producer {
            id: 5,
            epoch: 0,
            base_sequence: 0,
            transactional: false,
        };
        let retry = batch::testing::idempotent_batch(1, producer, 1);
        log.append_as_leader(retry.clone(), 0).expect("first");
        assert!(log.append_as_leader(retry, 0).expect("retry").duplicate);
    });
    let counters: std::collections::HashMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(c) => Some((key.key().name().to_owned(), c)),
            _ => None,
        })
        .collect();
    assert_eq!(counters.get(m::APPENDED_RECORDS), Some(&9));
    assert!(counters
        .get(m::APPENDED_BYTES)
        .is_some_and(|b| *b > 4 * 3000));
    assert_eq!(counters.get(m::DUPLICATE_BATCHES), Some(&1));
    assert!(
        counters.get(m::ROLLS).is_some_and(|r| *r >= 1),
        "{counters:?}"
    );
    assert!(
        counters.get(m::FLUSHES).is_some_and(|f| *f >= 1),
        "{counters:?}"
    );
}

/// Size and time retention never delete a segment holding offsets at or above the high
/// watermark the broker reported: followers may still need them.
#[test]
fn retention_stops_at_the_high_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig {
        retention_bytes: 0,
        ..small_segments()
    };
    let log = open_log(dir.path(), config, &clock, 0);
    for i in 0..12 {
        log.append_as_leader(third_of_a_segment(i, T0), 0)
            .expect("append");
    }
    let bases: Vec<i64> = log_files(dir.path()).iter().map(|(b, _)| *b).collect();
    assert!(bases.len() >= 4, "{bases:?}");
    // The high watermark sits inside the third segment: only the first two may go.
    log.on_high_watermark_updated(bases[2] + 1);
    log.enforce_retention().expect("retention");
    assert_eq!(log.log_start_offset(), bases[2]);
    log.on_high_watermark_updated(log.log_end_offset());
    log.enforce_retention().expect("retention");
    assert_eq!(log.segment_count(), 1, "all but the active segment");
}

/// An abort's index entry lives in the segment holding its marker; a read_committed fetch of
/// an earlier range must still learn about it.
#[test]
fn aborts_whose_marker_is_in_a_later_segment_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let log = open_log(dir.path(), small_segments(), &clock, 0);
    let t = |seq| producer(9, 0, seq, true);
    log.append_as_leader(idempotent_batch(2, t(0), T0), 0)
        .expect("txn"); // 0-1
    for i in 0..6 {
        log.append_as_leader(third_of_a_segment(i, T0), 0)
            .expect("filler"); // 2-7, rolling segments
    }
    let marker = log
        .append_as_coordinator(control_batch(t(-1), false, T0), 0)
        .expect("abort");
    assert!(log.segment_count() >= 2);
    let found = log.aborted_transactions(0, 2);
    assert_eq!(
        found,
        vec![AbortedTxn {
            producer_id: 9,
            first_offset: 0,
            last_offset: marker.base_offset,
            last_stable_offset: marker.base_offset + 1,
        }]
    );
}
