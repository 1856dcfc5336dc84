//! Log compaction (`cleanup.policy=compact`): what a pass keeps and removes, which segments it
//! touches, tombstones and `delete.retention.ms`, compressed batches, transactions (aborted
//! ones removed, committed ones compacted, markers), crash safety of the swap, and reads racing
//! with a pass.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use streambus_storage::batch::testing::{batch_kv, idempotent_batch, KeyValue, Producer};
use streambus_storage::batch::{BatchHeader, BatchIter, BatchStep};
use streambus_storage::segment::file_name;
use streambus_storage::{CleanupPolicy, CompactionOutcome, Log, LogConfig, ManualClock};

use crate::ops::{
    decode_records, kv_batch, log_files, manual_clock, open_log, read_all, Stored, READ_BYTES_MAX,
    T0,
};

/// Passes of the reader racing with a compaction, at most.
const RACING_READS_MAX: usize = 500;

fn compact_config() -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        segment_bytes: 1024,
        ..LogConfig::default()
    }
}

/// `len` hex characters that compress about as well as real payloads (not to nothing).
fn payload(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
        })
        .collect()
}

/// `batches` batches of three records: two of five repeating keys and one unique key.
fn append_keyed(log: &Log, batches: usize, compression: Compression, epoch: i32) {
    for j in 0..batches {
        let keys = [
            format!("k{}", (2 * j) % 5),
            format!("k{}", (2 * j + 1) % 5),
            format!("u{j}"),
        ];
        let values: Vec<String> = (0..3).map(|i| payload((3 * j + i) as u64, 120)).collect();
        let pairs: Vec<(&str, Option<&str>)> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        log.append_as_leader(kv_batch(&pairs, T0, compression), epoch)
            .expect("append");
    }
}

/// What compaction must leave: every record at or above `cleanable_end`, and below it the
/// latest record of each key (tombstones only while `keep_tombstones`) and keyless records.
fn expected_after(records: &[Stored], cleanable_end: i64, keep_tombstones: bool) -> Vec<Stored> {
    let mut latest: HashMap<&Bytes, i64> = HashMap::new();
    for (offset, key, _, _) in records.iter().filter(|r| r.0 < cleanable_end) {
        if let Some(key) = key {
            latest.insert(key, *offset);
        }
    }
    records
        .iter()
        .filter(|(offset, key, value, _)| {
            if *offset >= cleanable_end {
                return true;
            }
            let Some(key) = key else { return true };
            latest.get(key) == Some(offset) && (value.is_some() || keep_tombstones)
        })
        .cloned()
        .collect()
}

fn contents(log: &Log) -> Vec<Stored> {
    decode_records(&read_all(log))
}

fn file_bytes(dir: &Path, base: i64, ext: &str) -> Vec<u8> {
    fs::read(dir.join(file_name(base, ext))).expect("read segment file")
}

/// Compacts a log of keyed batches and checks records, offsets, epochs, codec, untouched
/// segments and the outcome's counts.
fn check_compaction(compression: Compression) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let log = open_log(dir.path(), compact_config(), &clock, 0);
    append_keyed(&log, 16, compression, 4);
    let before_files = log_files(dir.path());
    assert!(before_files.len() >= 4, "{compression:?}: {before_files:?}");
    let bases: Vec<i64> = before_files.iter().map(|(b, _)| *b).collect();
    let active_base = *bases.last().expect("active segment");
    let active_bytes = file_bytes(dir.path(), active_base, "log");
    let original = contents(&log);
    let end = log.log_end_offset();

    let outcome = log.compact(end).expect("compact");

    let expected = expected_after(&original, active_base, true);
    let after = contents(&log);
    assert_eq!(
        after, expected,
        "{compression:?}: latest value per key, offsets kept"
    );
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(
        file_bytes(dir.path(), active_base, "log"),
        active_bytes,
        "active untouched"
    );
    for (header, _) in read_all(&log) {
        assert_eq!(
            header.partition_leader_epoch, 4,
            "{compression:?}: epoch kept"
        );
        assert_eq!(
            header.compression(),
            compression as u8,
            "{compression:?}: codec kept"
        );
    }

    let after_files: BTreeMap<i64, u64> = log_files(dir.path()).into_iter().collect();
    let removed_in = |from: i64, to: i64| {
        let count = |rs: &[Stored]| rs.iter().filter(|r| r.0 >= from && r.0 < to).count();
        count(&original) - count(&expected)
    };
    let mut wanted = CompactionOutcome::default();
    for (i, (base, size)) in before_files.iter().enumerate() {
        let next = bases.get(i + 1).copied().unwrap_or(i64::MAX);
        let removed = removed_in(*base, next);
        if removed == 0 {
            assert_eq!(
                after_files[base], *size,
                "{compression:?}: segment {base} untouched"
            );
            continue;
        }
        wanted.segments_cleaned += 1;
        wanted.records_removed += removed as u64;
        wanted.bytes_before += size;
        wanted.bytes_after += after_files[base];
    }
    assert!(
        wanted.segments_cleaned >= 2,
        "{compression:?}: workload too small"
    );
    assert_eq!(outcome, wanted, "{compression:?}");
    assert!(outcome.bytes_after < outcome.bytes_before);

    assert_eq!(
        log.compact(end).expect("again"),
        CompactionOutcome::default()
    );
    drop(log);
    let log = open_log(dir.path(), compact_config(), &clock, 0);
    assert_eq!(
        contents(&log),
        expected,
        "{compression:?}: after a crash and full recovery"
    );
}

#[test]
fn compaction_keeps_the_latest_value_per_key_outside_the_active_segment() {
    check_compaction(Compression::None);
}

#[test]
fn compaction_rewrites_compressed_batches_with_their_codec() {
    for compression in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        check_compaction(compression);
    }
}

#[test]
fn compaction_also_runs_under_compact_delete_and_never_under_delete() {
    for (policy, compacts) in [
        (CleanupPolicy::CompactDelete, true),
        (CleanupPolicy::Delete, false),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            cleanup_policy: policy,
            ..compact_config()
        };
        let log = open_log(dir.path(), config, &manual_clock(), 0);
        append_keyed(&log, 16, Compression::None, 0);
        let files = log_files(dir.path());
        let original = contents(&log);
        let outcome = log.compact(log.log_end_offset()).expect("compact");
        if compacts {
            assert!(outcome.records_removed > 0, "{policy:?}");
            assert!(contents(&log).len() < original.len());
        } else {
            assert_eq!(outcome, CompactionOutcome::default(), "{policy:?}");
            assert_eq!(log_files(dir.path()), files);
            assert_eq!(contents(&log), original);
        }
    }
}

/// One batch per segment (about 840 bytes): keys `k0`, `k1` and a unique `u<j>`.
fn append_one_batch_per_segment(log: &Log, batches: usize) {
    for j in 0..batches {
        let unique = format!("u{j}");
        let values: Vec<String> = (0..3).map(|i| payload((10 * j + i) as u64, 250)).collect();
        let pairs = [
            ("k0", Some(values[0].as_str())),
            ("k1", Some(values[1].as_str())),
            (unique.as_str(), Some(values[2].as_str())),
        ];
        log.append_as_leader(kv_batch(&pairs, T0, Compression::None), 0)
            .expect("append");
    }
}

#[test]
fn compaction_leaves_segments_at_or_above_the_upper_bound_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), compact_config(), &manual_clock(), 0);
    append_one_batch_per_segment(&log, 6);
    let bases: Vec<i64> = log_files(dir.path()).iter().map(|(b, _)| *b).collect();
    assert_eq!(bases, [0, 3, 6, 9, 12, 15]);
    let original = contents(&log);
    let untouched: Vec<Vec<u8>> = [6, 9, 12, 15]
        .iter()
        .map(|b| file_bytes(dir.path(), *b, "log"))
        .collect();

    // Only [0,3), [3,6) and [6,9) lie below 9; the map holds their keys only.
    let outcome = log.compact(9).expect("compact");
    assert_eq!((outcome.segments_cleaned, outcome.records_removed), (2, 4));
    assert_eq!(contents(&log), expected_after(&original, 9, true));
    for (base, bytes) in [6, 9, 12, 15].iter().zip(&untouched) {
        assert_eq!(
            &file_bytes(dir.path(), *base, "log"),
            bytes,
            "segment {base}"
        );
    }

    // A bound inside [9,12) does not make that segment cleanable.
    let outcome = log.compact(10).expect("compact");
    assert_eq!(outcome, CompactionOutcome::default());
    assert_eq!(file_bytes(dir.path(), 9, "log"), untouched[1]);

    let outcome = log.compact(log.log_end_offset()).expect("compact");
    assert_eq!((outcome.segments_cleaned, outcome.records_removed), (2, 4));
    assert_eq!(contents(&log), expected_after(&original, 15, true));
    assert_eq!(
        file_bytes(dir.path(), 15, "log"),
        untouched[3],
        "active untouched"
    );
}

#[test]
fn tombstones_are_kept_for_delete_retention_ms_then_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig {
        delete_retention_ms: 10_000,
        ..compact_config()
    };
    let log = open_log(dir.path(), config, &clock, 0);
    let big = payload(1, 250);
    log.append_as_leader(
        kv_batch(
            &[("a", Some("a1")), ("b", Some("b1"))],
            T0,
            Compression::None,
        ),
        0,
    )
    .expect("append"); // 0-1
    log.append_as_leader(
        kv_batch(&[("a", None), ("c", Some("c1"))], T0, Compression::None),
        0,
    )
    .expect("append"); // 2-3
    for j in 0..6 {
        let key = format!("filler{j}");
        log.append_as_leader(
            kv_batch(&[(key.as_str(), Some(big.as_str()))], T0, Compression::None),
            0,
        )
        .expect("append");
    }
    assert!(log.segment_count() >= 2);
    let active_base = log_files(dir.path())
        .last()
        .map(|(b, _)| *b)
        .expect("active");
    assert!(
        active_base > 3,
        "the tombstone must lie outside the active segment"
    );
    let original = contents(&log);
    let end = log.log_end_offset();

    let outcome = log.compact(end).expect("compact");
    assert_eq!(outcome.records_removed, 1, "only a's old value");
    let after = contents(&log);
    assert_eq!(after, expected_after(&original, active_base, true));
    assert!(
        after.iter().any(|r| r.0 == 2 && r.2.is_none()),
        "tombstone kept"
    );

    clock.set(T0 + 10_000);
    assert_eq!(
        log.compact(end).expect("compact"),
        CompactionOutcome::default()
    );
    assert_eq!(contents(&log), after, "still within delete.retention.ms");

    clock.set(T0 + 10_001);
    let outcome = log.compact(end).expect("compact");
    assert_eq!(outcome.records_removed, 1, "the tombstone");
    let after = contents(&log);
    assert_eq!(after, expected_after(&original, active_base, false));
    assert!(after.iter().all(|r| r.0 != 2));
    assert!(
        after.iter().any(|r| r.1.as_deref() == Some(&b"b"[..])),
        "b untouched"
    );
}

#[test]
fn compaction_keeps_log_append_time_of_rewritten_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    clock.advance(5_000);
    let config = LogConfig {
        log_append_time: true,
        ..compact_config()
    };
    let log = open_log(dir.path(), config, &clock, 0);
    append_one_batch_per_segment(&log, 4);
    let outcome = log.compact(log.log_end_offset()).expect("compact");
    assert!(outcome.segments_cleaned > 0);
    for (header, _) in read_all(&log) {
        assert!(
            header.is_log_append_time(),
            "batch at {} lost its LogAppendTime flag",
            header.base_offset
        );
        assert_eq!(
            header.max_timestamp,
            T0 + 5_000,
            "batch at {}: consumers see the append time as the record timestamps",
            header.base_offset
        );
    }
}

/// A follower that copies a compacted leader must keep the producer's sequence: Kafka keeps a
/// retained batch's base and last offset (and so its last sequence) when it drops records.
#[test]
fn producer_sequence_survives_replicating_a_compacted_batch() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let leader = open_log(leader_dir.path(), compact_config(), &clock, 0);
    let p = |seq| Producer {
        id: 77,
        epoch: 0,
        base_sequence: seq,
        transactional: false,
    };
    let big = payload(7, 250);
    let pairs: Vec<KeyValue<'_>> = ["a", "b", "c"]
        .iter()
        .map(|k| (Some(k.as_bytes()), Some(big.as_bytes())))
        .collect();
    leader
        .append_as_leader(batch_kv(&pairs, T0, p(0), Compression::None), 0)
        .expect("append"); // 0-2, sequences 0-2
    let pairs = [("c", Some(big.as_str())), ("d", Some(big.as_str()))];
    leader
        .append_as_leader(kv_batch(&pairs, T0, Compression::None), 0)
        .expect("append"); // 3-4
    let pairs = [("e", Some(big.as_str())), ("f", Some(big.as_str()))];
    leader
        .append_as_leader(kv_batch(&pairs, T0, Compression::None), 0)
        .expect("append"); // 5-6
    assert_eq!(leader.segment_count(), 3);
    // Expired (a live producer's last batch would be kept whole), so its batch is cleaned.
    leader.remove_expired_producers(0);
    let outcome = leader.compact(leader.log_end_offset()).expect("compact");
    assert_eq!(outcome.records_removed, 1, "the producer's value of c");

    let follower_dir = tempfile::tempdir().expect("tempdir");
    let follower = open_log(follower_dir.path(), compact_config(), &clock, 0);
    for (header, bytes) in read_all(&leader) {
        follower
            .append_replicated(bytes)
            .unwrap_or_else(|e| panic!("replicate batch at {}: {e}", header.base_offset));
    }
    assert_eq!(follower.log_end_offset(), 7);
    let next = follower.append_as_leader(idempotent_batch(1, p(3), T0), 1);
    assert!(
        matches!(next, Ok(info) if info.base_offset == 7),
        "the producer's next batch (sequence 3) after a leader change: {next:?}"
    );
}

/// Twelve batches `[u<j>a, u<j>b, k<j%2>]`, three per segment; compaction removes only the small
/// `k` records, so a cleaned segment is a little shorter than its original.
fn append_for_swap(log: &Log) {
    for j in 0..12 {
        let (a, b, k) = (format!("u{j}a"), format!("u{j}b"), format!("k{}", j % 2));
        let (va, vb) = (payload(2 * j, 100), payload(2 * j + 1, 100));
        let pairs = [
            (a.as_str(), Some(va.as_str())),
            (b.as_str(), Some(vb.as_str())),
            (k.as_str(), Some("x")),
        ];
        log.append_as_leader(kv_batch(&pairs, T0, Compression::None), 0)
            .expect("append");
    }
}

fn swap_config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 1,
        ..compact_config()
    }
}

/// Offset index entries `(relative offset, position)` of a `.index` file.
fn index_positions(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(8)
        .map(|c| u32::from_be_bytes([c[4], c[5], c[6], c[7]]))
        .collect()
}

fn batch_positions(segment: &[u8]) -> Vec<u32> {
    BatchIter::new(segment)
        .map_while(|step| match step {
            BatchStep::Batch { position, .. } => Some(position as u32),
            _ => None,
        })
        .collect()
}

/// Every read, from every offset, returns the batch the expected contents say it must.
fn assert_reads_at_every_offset(log: &Log, expected: &[(BatchHeader, Bytes)], context: &str) {
    let end = log.log_end_offset();
    for offset in log.log_start_offset()..end {
        let result = log
            .read(offset, 1, i64::MAX)
            .unwrap_or_else(|e| panic!("{context}: read at {offset}: {e}"));
        let want = expected
            .iter()
            .find(|(h, _)| h.last_offset() >= offset)
            .map(|(_, b)| b.clone());
        assert_eq!(Some(result.records), want, "{context}: read at {offset}");
    }
}

#[derive(Debug, Clone, Copy)]
enum SwapStep {
    /// Crashed while writing `<base>.log.cleaned`: not committed.
    CleanedLeftover,
    /// Crashed after the rename to `<base>.log.swap`, the original `.log` and its indexes
    /// still present.
    SwapBesideOriginal,
    /// Crashed with the `.swap` file and the stale indexes but no `.log`.
    SwapWithoutOriginal,
}

#[test]
fn a_crash_at_each_step_of_the_swap_recovers_old_or_new_segment() {
    let cleaned_dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let cleaned = open_log(cleaned_dir.path(), swap_config(), &clock, 0);
    append_for_swap(&cleaned);
    assert_eq!(
        log_files(cleaned_dir.path())
            .iter()
            .map(|(b, _)| *b)
            .collect::<Vec<_>>(),
        [0, 9, 18, 27]
    );
    let outcome = cleaned.compact(cleaned.log_end_offset()).expect("compact");
    assert_eq!(outcome.segments_cleaned, 3);
    let compacted = read_all(&cleaned);
    let cleaned_segment = file_bytes(cleaned_dir.path(), 0, "log");

    for step in [
        SwapStep::CleanedLeftover,
        SwapStep::SwapBesideOriginal,
        SwapStep::SwapWithoutOriginal,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_log(dir.path(), swap_config(), &clock, 0);
        append_for_swap(&log);
        let original = read_all(&log);
        let end = log.log_end_offset();
        drop(log); // crash in the middle of compacting segment 0

        // The stale index must be able to mislead: every entry inside the cleaned file, some
        // in the middle of a cleaned batch.
        let stale = index_positions(&file_bytes(dir.path(), 0, "index"));
        assert!(!stale.is_empty());
        let boundaries = batch_positions(&cleaned_segment);
        assert!(stale.iter().all(|p| (*p as usize) < cleaned_segment.len()));
        assert!(stale.iter().any(|p| !boundaries.contains(p)));

        let log_path = dir.path().join(file_name(0, "log"));
        // Only segment [0, 9) is swapped; the later ones keep their original batches.
        let swapped: Vec<(BatchHeader, Bytes)> = compacted
            .iter()
            .filter(|(h, _)| h.base_offset < 9)
            .chain(original.iter().filter(|(h, _)| h.base_offset >= 9))
            .cloned()
            .collect();
        let (suffix, want) = match step {
            SwapStep::CleanedLeftover => ("log.cleaned", &original),
            SwapStep::SwapBesideOriginal => ("log.swap", &swapped),
            SwapStep::SwapWithoutOriginal => {
                fs::remove_file(&log_path).expect("remove original");
                ("log.swap", &swapped)
            }
        };
        assert_ne!(&original, &swapped);
        fs::write(dir.path().join(file_name(0, suffix)), &cleaned_segment).expect("write");

        // The recovery point checkpoint says every closed segment is flushed: they are trusted.
        let context = format!("{step:?}");
        let log = open_log(dir.path(), swap_config(), &clock, end);
        assert_eq!(log.log_end_offset(), end, "{context}");
        assert_eq!(&read_all(&log), want, "{context}");
        assert_reads_at_every_offset(&log, want, &context);
        let leftovers: Vec<String> = fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
            .collect();
        assert!(leftovers.is_empty(), "{context}: {leftovers:?}");
        let info = log
            .append_as_leader(kv_batch(&[("z", Some("z"))], T0, Compression::None), 0)
            .expect("append");
        assert_eq!(info.base_offset, end, "{context}");
    }
}

#[test]
fn compaction_works_after_a_crash_and_after_a_clean_reopen() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = manual_clock();
        let log = open_log(dir.path(), compact_config(), &clock, 0);
        append_keyed(&log, 16, Compression::None, 0);
        let original = contents(&log);
        if clean {
            log.close().expect("close");
        } else {
            drop(log);
        }
        let log = open_log(dir.path(), compact_config(), &clock, 0);
        let active_base = log_files(dir.path())
            .last()
            .map(|(b, _)| *b)
            .expect("active");
        let outcome = log.compact(log.log_end_offset()).expect("compact");
        assert!(outcome.records_removed > 0, "clean: {clean}");
        let expected = expected_after(&original, active_base, true);
        assert_eq!(contents(&log), expected, "clean: {clean}");
        drop(log);
        let log = open_log(dir.path(), compact_config(), &clock, 0);
        assert_eq!(
            contents(&log),
            expected,
            "clean: {clean}, compacted then crashed"
        );
    }
}

/// A reader walking the log while a pass runs sees only records that exist, at their offsets,
/// every record of the active segment and every key's latest value.
#[test]
fn reads_during_compaction_are_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock: Arc<ManualClock> = manual_clock();
    let log = open_log(dir.path(), compact_config(), &clock, 0);
    append_keyed(&log, 40, Compression::None, 0);
    let original = contents(&log);
    let active_base = log_files(dir.path())
        .last()
        .map(|(b, _)| *b)
        .expect("active");
    let expected = expected_after(&original, active_base, true);
    let by_offset: HashMap<i64, &Stored> = original.iter().map(|r| (r.0, r)).collect();
    let done = AtomicBool::new(false);

    let passes = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut passes = 0;
            let mut after_done = 0;
            while passes < RACING_READS_MAX && after_done < 2 {
                if done.load(Ordering::SeqCst) {
                    after_done += 1;
                }
                let seen = contents(&log);
                for record in &seen {
                    assert_eq!(
                        Some(&record),
                        by_offset.get(&record.0),
                        "record at {}",
                        record.0
                    );
                }
                assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
                for record in &expected {
                    assert!(seen.contains(record), "record at {} missing", record.0);
                }
                passes += 1;
            }
            passes
        });
        let outcome = log.compact(log.log_end_offset()).expect("compact");
        done.store(true, Ordering::SeqCst);
        assert!(outcome.records_removed > 0);
        reader.join().expect("reader")
    });
    assert!(passes > 0);
    assert_eq!(contents(&log), expected);
    let first = log.read(0, READ_BYTES_MAX, i64::MAX).expect("read").records;
    assert!(!first.is_empty());
    // Follower copies of the compacted log are byte-identical.
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let follower = open_log(follower_dir.path(), compact_config(), &clock, 0);
    for (_, bytes) in read_all(&log) {
        follower.append_replicated(bytes).expect("replicate");
    }
    assert_eq!(contents(&follower), expected);
}

/// A retired log's directory may be moved and its path reused by another log: a compaction pass
/// running on then neither creates nor removes a file under that path (here a sentinel with
/// the name of a cleaned copy in the new directory), nor swaps anything in.
#[test]
fn a_retired_log_is_not_compacted_and_touches_no_file_under_its_old_path() {
    let root = tempfile::tempdir().expect("tempdir");
    let path = root.path().join("topic-0");
    fs::create_dir(&path).expect("log dir");
    let log = open_log(&path, compact_config(), &manual_clock(), 0);
    append_keyed(&log, 12, Compression::None, 0);
    let bases: Vec<i64> = log_files(&path).iter().map(|(base, _)| *base).collect();
    assert!(bases.len() > 3, "several segments to clean");
    log.retire();
    fs::rename(&path, root.path().join("topic-0.deleted")).expect("move the retired log");
    fs::create_dir(&path).expect("a new log's dir at the old path");
    for base in &bases {
        fs::write(
            path.join(format!("{}.cleaned", file_name(*base, "log"))),
            b"new log",
        )
        .expect("sentinel");
    }
    let before = crate::file_sizes(&path);
    let outcome = log.compact(log.log_end_offset()).expect("compact");
    assert_eq!(outcome, CompactionOutcome::default());
    assert_eq!(
        crate::file_sizes(&path),
        before,
        "the new directory was touched"
    );
}

#[test]
fn compaction_removes_aborted_transactions_and_compacts_committed_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let config = LogConfig {
        delete_retention_ms: 1_000,
        ..compact_config()
    };
    let log = open_log(dir.path(), config.clone(), &clock, 0);
    let txn = |id: i64| Producer {
        id,
        epoch: 0,
        base_sequence: 0,
        transactional: true,
    };
    let kv = |k: &'static str, v: &'static str| -> KeyValue<'static> {
        (Some(k.as_bytes()), Some(v.as_bytes()))
    };
    let marker = |pid: i64, commit: bool| {
        streambus_storage::batch::marker_batch(pid, 0, commit, 0, T0).expect("marker")
    };
    // Producer 1 commits k1 and k2; producer 2 aborts k1 and k3; then a plain k2 supersedes
    // producer 1's.
    log.append_as_leader(
        batch_kv(
            &[kv("k1", "a1"), kv("k2", "a2")],
            T0,
            txn(1),
            Compression::None,
        ),
        0,
    )
    .expect("append");
    log.append_as_coordinator(marker(1, true), 0)
        .expect("commit");
    log.append_as_leader(
        batch_kv(
            &[kv("k1", "b1"), kv("k3", "b3")],
            T0,
            txn(2),
            Compression::None,
        ),
        0,
    )
    .expect("append");
    log.append_as_coordinator(marker(2, false), 0)
        .expect("abort");
    // Producer 3 commits k2 only, which the plain k2 below supersedes: its data goes, and
    // then its commit marker.
    log.append_as_leader(
        batch_kv(&[kv("k2", "c2")], T0, txn(3), Compression::None),
        0,
    )
    .expect("append");
    log.append_as_coordinator(marker(3, true), 0)
        .expect("commit");
    log.append_as_leader(kv_batch(&[("k2", Some("p2"))], T0, Compression::None), 0)
        .expect("append");
    let big = payload(7, 600);
    for j in 0..4 {
        let key = format!("filler{j}");
        log.append_as_leader(
            kv_batch(&[(key.as_str(), Some(big.as_str()))], T0, Compression::None),
            0,
        )
        .expect("append");
    }
    let end = log.log_end_offset();
    clock.set(T0 + 2_000);
    // The producers are gone (expired): none of their last batches needs keeping.
    log.remove_expired_producers(0);
    let outcome = log.compact(end).expect("compact");
    assert!(outcome.records_removed >= 4, "{outcome:?}");

    let mut data = Vec::new();
    let mut markers = Vec::new();
    for (header, bytes) in read_all(&log) {
        if header.is_control() {
            markers.push(header.producer_id);
        } else if header.base_offset < 9 {
            for (_, key, value, _) in decode_records(&[(header, bytes)]) {
                data.push((key.unwrap_or_default(), value.unwrap_or_default()));
            }
        }
    }
    let expected: Vec<(Bytes, Bytes)> = [("k1", "a1"), ("k2", "p2")]
        .iter()
        .map(|(k, v)| {
            (
                Bytes::from_static(k.as_bytes()),
                Bytes::from_static(v.as_bytes()),
            )
        })
        .collect();
    assert_eq!(
        data, expected,
        "the aborted records and the superseded committed one are gone"
    );
    assert_eq!(
        markers,
        vec![1, 2],
        "a commit marker stays with its data and goes without it; an abort marker stays with \
         its index entry"
    );
    // A read_committed fetch from the start is still told of the abort, and finds its marker.
    let aborted = log.aborted_transactions(0, log.log_end_offset());
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].producer_id, 2);
    // Rebuilt from the segments, no transaction looks open.
    drop(log);
    let log = open_log(dir.path(), config, &clock, 0);
    for pid in [1, 2, 3] {
        assert!(log
            .producer(pid)
            .is_none_or(|entry| entry.current_txn_first_offset.is_none()));
    }
}

/// A live producer's last batch is kept whole however superseded its records are (Kafka's
/// cleaner keeps it too): a new replica rebuilds the producer's sequence from it, and still
/// recognises the producer's retry as a duplicate once it leads.
#[test]
fn a_live_producers_last_batch_survives_compaction_so_its_retry_stays_a_duplicate() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let clock = manual_clock();
    let leader = open_log(leader_dir.path(), compact_config(), &clock, 0);
    let producer = Producer {
        id: 88,
        epoch: 3,
        base_sequence: 0,
        transactional: false,
    };
    let big = payload(9, 250);
    let first = batch_kv(
        &[(Some(b"a".as_slice()), Some(big.as_bytes()))],
        T0,
        producer,
        Compression::None,
    );
    leader.append_as_leader(first.clone(), 0).expect("append"); // 0, sequence 0
    for keys in [["a", "b"], ["c", "d"], ["e", "f"]] {
        let pairs: Vec<(&str, Option<&str>)> =
            keys.iter().map(|k| (*k, Some(big.as_str()))).collect();
        leader
            .append_as_leader(kv_batch(&pairs, T0, Compression::None), 0)
            .expect("append");
    }
    assert!(leader.segment_count() >= 3);
    leader.compact(leader.log_end_offset()).expect("compact");
    let batches = read_all(&leader);
    assert!(
        batches
            .iter()
            .any(|(h, _)| h.producer_id == 88 && h.base_offset == 0 && h.records_count == 1),
        "the producer's only batch is kept, its superseded record with it"
    );

    let follower_dir = tempfile::tempdir().expect("tempdir");
    let follower = open_log(follower_dir.path(), compact_config(), &clock, 0);
    for (header, bytes) in batches {
        follower
            .append_replicated(bytes)
            .unwrap_or_else(|e| panic!("replicate batch at {}: {e}", header.base_offset));
    }
    let entry = follower
        .producer(88)
        .expect("the producer is known to the new replica");
    assert_eq!((entry.epoch, entry.last_sequence()), (3, 0));
    let retry = follower.append_as_leader(first, 1).expect("retry");
    assert!(
        retry.duplicate && retry.base_offset == 0,
        "the retry is answered with its first offsets: {retry:?}"
    );
}
