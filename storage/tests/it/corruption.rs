//! Corrupt bytes never pass as records: a flipped bit in a stored batch makes `read` fail with
//! `CorruptLog` (reads before it still work), and malformed input to `append_as_leader` /
//! `append_replicated` is rejected with a typed error without writing anything.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use streambus_storage::batch::{self, testing};
use streambus_storage::{BatchError, Clock, Log, LogConfig, LogOptions, ManualClock, StorageError};

use crate::{file_sizes, read_everything, segment_bases, segment_file, split_batches, Rng};

const START_MS: i64 = 1_700_000_000_000;
/// Byte offsets within a batch header.
const LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const RECORDS_COUNT_AT: usize = 57;

/// A stored batch: its offsets, the segment holding it and its byte position there.
#[derive(Debug, Clone)]
struct Stored {
    base: i64,
    last: i64,
    segment: i64,
    position: u64,
    bytes: Bytes,
}

fn options(recovery_point: i64) -> LogOptions {
    LogOptions {
        recovery_point,
        clock: Arc::new(ManualClock::new(START_MS)) as Arc<dyn Clock>,
        ..LogOptions::default()
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 300,
        ..LogConfig::default()
    }
}

/// A log of several segments; returns every batch with where it is stored.
fn build(dir: &Path, config: &LogConfig, rng: &mut Rng) -> (Log, Vec<Stored>) {
    let log = Log::open(dir, config.clone(), options(0)).expect("open");
    let mut appended = Vec::new();
    for i in 0..50 {
        let raw = testing::batch(
            rng.range(1, 6) as usize,
            rng.range(50, 700) as usize,
            i as u8,
            START_MS + i,
        );
        let mut bytes = BytesMut::from(&raw[..]);
        let info = log.append_as_leader(raw, 3).expect("append");
        batch::set_base_offset(&mut bytes, info.base_offset);
        batch::set_partition_leader_epoch(&mut bytes, 3);
        appended.push((info.base_offset, info.last_offset, bytes.freeze()));
    }
    log.flush().expect("flush");
    let bases = segment_bases(dir);
    assert!(bases.len() >= 3, "test needs several segments");
    let mut stored = Vec::new();
    let mut position = 0u64;
    let mut segment = bases[0];
    for (base, last, bytes) in appended {
        let holder = *bases
            .iter()
            .rev()
            .find(|b| **b <= base)
            .expect("segment of batch");
        if holder != segment {
            segment = holder;
            position = 0;
        }
        stored.push(Stored {
            base,
            last,
            segment,
            position,
            bytes: bytes.clone(),
        });
        position += bytes.len() as u64;
    }
    (log, stored)
}

fn flip_bit(dir: &Path, target: &Stored, byte_in_batch: usize, bit: u8) {
    let path = segment_file(dir, target.segment, "log");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open segment");
    let at = target.position + byte_in_batch as u64;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).expect("read byte");
    assert_eq!(
        b[0], target.bytes[byte_in_batch],
        "model of the segment layout is wrong"
    );
    b[0] ^= 1 << bit;
    file.write_all_at(&b, at).expect("write byte");
}

/// Checks every read around a corrupt batch: reads starting in it fail with `CorruptLog` for
/// its segment and position; reads before it return only good batches that stop before it;
/// no read anywhere returns its bytes.
fn assert_corruption_reported(log: &Log, stored: &[Stored], bad: &Stored, context: &str) {
    for offset in [bad.base, bad.last] {
        for max_bytes in [0, 1 << 20] {
            match log.read(offset, max_bytes, i64::MAX) {
                Err(StorageError::CorruptLog { path, position, .. }) => {
                    assert_eq!(path, segment_file(log.dir(), bad.segment, "log"), "{context}");
                    assert_eq!(position, bad.position, "{context}");
                }
                other => panic!("{context}: read at {offset} over the flipped bit: expected CorruptLog, got {other:?}"),
            }
        }
    }
    for good in stored.iter().filter(|s| s.base != bad.base) {
        match log.read(good.base, 1 << 20, i64::MAX) {
            Ok(result) => {
                let batches = split_batches(&result.records);
                assert!(
                    !batches.is_empty(),
                    "{context}: read at {} returned nothing",
                    good.base
                );
                assert!(
                    result.records.starts_with(&good.bytes),
                    "{context}: read at {} does not start with its batch",
                    good.base
                );
                for (header, bytes) in &batches {
                    assert_ne!(
                        header.base_offset, bad.base,
                        "{context}: corrupt batch served from {}",
                        good.base
                    );
                    let want = stored
                        .iter()
                        .find(|s| s.base == header.base_offset)
                        .expect("known batch");
                    assert!(
                        bytes[..] == want.bytes[..],
                        "{context}: batch {} differs",
                        want.base
                    );
                }
            }
            Err(e) => panic!("{context}: read at good batch {} failed: {e}", good.base),
        }
    }
    // Reading up to the corrupt batch works, one read after another.
    let first = stored
        .iter()
        .find(|s| s.segment == bad.segment)
        .expect("segment start");
    if first.base < bad.base {
        let got = read_everything_before(log, first.base, bad.base);
        let want: Vec<i64> = stored
            .iter()
            .filter(|s| s.base >= first.base && s.base < bad.base)
            .map(|s| s.base)
            .collect();
        assert_eq!(got, want, "{context}: batches before the corrupt one");
    }
}

/// Reads from `start` until `stop` (exclusive), returning batch base offsets.
fn read_everything_before(log: &Log, start: i64, stop: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut next = start;
    for _ in 0..1000 {
        if next >= stop {
            break;
        }
        let result = log
            .read(next, 1 << 20, i64::MAX)
            .expect("read before the corrupt batch");
        let batches = split_batches(&result.records);
        let before: Vec<i64> = batches
            .iter()
            .map(|(h, _)| h.base_offset)
            .filter(|b| *b < stop)
            .collect();
        assert!(!before.is_empty(), "no progress at {next}");
        next = batches
            .iter()
            .map(|(h, _)| h.next_offset())
            .filter(|n| *n <= stop)
            .max()
            .unwrap_or(stop);
        out.extend(before);
    }
    out
}

/// Bytes within a batch a flip is applied to: magic, CRC, the CRC-covered header fields, or the
/// records. Not the last offset delta: like Kafka, the log locates batches by the offsets in
/// their headers before it checks a CRC, so a flip there moves the batch's offset range rather
/// than corrupting bytes at a known offset (the CRC still catches it when the batch is read).
fn flip_position(rng: &mut Rng, len: usize) -> usize {
    match rng.range(0, 4) {
        0 => MAGIC_AT,
        1 => CRC_AT + rng.range(0, 3) as usize,
        2 => ATTRIBUTES_AT + rng.range(0, 1) as usize,
        3 => rng.range(LAST_OFFSET_DELTA_AT as u64 + 4, RECORDS_COUNT_AT as u64 + 3) as usize,
        _ => rng.range(61, len as u64 - 1) as usize,
    }
}

/// A bit flipped in a batch of an old (flushed, trusted) segment is detected on read after a
/// clean restart and after a crash (old segments below the recovery point are not rescanned).
#[test]
fn bit_flip_in_an_old_segment_is_reported_on_read() {
    for seed in 0..12u64 {
        // Every third seed: segments too small for a single index entry.
        let config = LogConfig {
            index_interval_bytes: if seed % 3 == 2 { 1 << 20 } else { 300 },
            ..config()
        };
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, stored) = build(dir.path(), &config, &mut rng);
        let end = log.log_end_offset();
        let active = *segment_bases(dir.path()).last().expect("segment");
        let old: Vec<&Stored> = stored.iter().filter(|s| s.segment != active).collect();
        let bad = old[rng.range(0, old.len() as u64 - 1) as usize].clone();
        let crash = seed % 2 == 1;
        if crash {
            drop(log);
        } else {
            log.close().expect("close");
        }
        let at = flip_position(&mut rng, bad.bytes.len());
        let bit = rng.range(0, 7) as u8;
        flip_bit(dir.path(), &bad, at, bit);
        let log = Log::open(dir.path(), config.clone(), options(end)).expect("reopen");
        let context = format!(
            "seed {seed}: bit {bit} of byte {at} of batch {} in old segment {} (crash: {crash})",
            bad.base, bad.segment
        );
        assert_eq!(log.log_end_offset(), end, "{context}");
        assert_corruption_reported(&log, &stored, &bad, &context);
    }
}

/// A bit flipped in the active segment under a running log (as a disk error would) is detected
/// by the next read, and after a clean restart.
#[test]
fn bit_flip_in_the_active_segment_is_reported_on_read() {
    let config = config();
    for seed in 0..12u64 {
        let mut rng = Rng::new(100 + seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, stored) = build(dir.path(), &config, &mut rng);
        let active = *segment_bases(dir.path()).last().expect("segment");
        let in_active: Vec<&Stored> = stored.iter().filter(|s| s.segment == active).collect();
        let bad = in_active[rng.range(0, in_active.len() as u64 - 1) as usize].clone();
        let at = flip_position(&mut rng, bad.bytes.len());
        let bit = rng.range(0, 7) as u8;
        flip_bit(dir.path(), &bad, at, bit);
        let context = format!(
            "seed {seed}: bit {bit} of byte {at} of batch {} in the active segment {active}",
            bad.base
        );
        assert_corruption_reported(&log, &stored, &bad, &context);
        log.close().expect("close");
        let log = Log::open(dir.path(), config.clone(), options(0)).expect("reopen");
        assert_corruption_reported(
            &log,
            &stored,
            &bad,
            &format!("{context}, after a clean restart"),
        );
    }
}

/// What `append_as_leader` must answer to a bad batch.
#[derive(Debug)]
enum Rejection {
    Batch(fn(&BatchError) -> bool),
    TooLarge,
}

fn with_crc_fixed(mut buf: BytesMut) -> Bytes {
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

fn patched(good: &Bytes, at: usize, bytes: &[u8]) -> BytesMut {
    let mut buf = BytesMut::from(&good[..]);
    buf[at..at + bytes.len()].copy_from_slice(bytes);
    buf
}

fn bad_batches(limit_bytes: usize) -> Vec<(&'static str, Bytes, Rejection)> {
    use BatchError as E;
    use Rejection::{Batch, TooLarge};
    let good = testing::batch(3, 40, b'g', START_MS);
    let len = good.len();
    let mut two = BytesMut::from(&good[..]);
    two.extend_from_slice(&testing::batch(1, 5, b'h', START_MS));
    let mut trailing = BytesMut::from(&good[..]);
    trailing.extend_from_slice(&[0]);
    let last = good[len - 1] ^ 0x40;
    let control_flag =
        (i16::from_be_bytes([good[ATTRIBUTES_AT], good[ATTRIBUTES_AT + 1]]) | 1 << 5).to_be_bytes();
    vec![
        (
            "flipped record byte",
            patched(&good, len - 1, &[last]).freeze(),
            Batch(|e| matches!(e, E::CrcMismatch { .. })),
        ),
        (
            "wrong crc field",
            patched(&good, CRC_AT, &[0, 0, 0, 0]).freeze(),
            Batch(|e| matches!(e, E::CrcMismatch { .. })),
        ),
        (
            "magic 1",
            patched(&good, MAGIC_AT, &[1]).freeze(),
            Batch(|e| *e == E::UnsupportedMagic(1)),
        ),
        (
            "magic 0",
            patched(&good, MAGIC_AT, &[0]).freeze(),
            Batch(|e| *e == E::UnsupportedMagic(0)),
        ),
        (
            "magic 3",
            patched(&good, MAGIC_AT, &[3]).freeze(),
            Batch(|e| *e == E::UnsupportedMagic(3)),
        ),
        (
            "truncated by one byte",
            good.slice(..len - 1),
            Batch(|e| matches!(e, E::LengthMismatch { .. })),
        ),
        (
            "truncated header",
            good.slice(..40),
            Batch(|e| *e == E::TooShort { len: 40 }),
        ),
        (
            "empty",
            Bytes::new(),
            Batch(|e| *e == E::TooShort { len: 0 }),
        ),
        (
            "length -1",
            patched(&good, LENGTH_AT, &(-1i32).to_be_bytes()).freeze(),
            Batch(|e| matches!(e, E::LengthMismatch { declared: -1, .. })),
        ),
        (
            "length i32::MIN",
            patched(&good, LENGTH_AT, &i32::MIN.to_be_bytes()).freeze(),
            Batch(|e| matches!(e, E::LengthMismatch { .. })),
        ),
        (
            "length too large",
            patched(&good, LENGTH_AT, &(len as i32).to_be_bytes()).freeze(),
            Batch(|e| matches!(e, E::LengthMismatch { .. })),
        ),
        (
            "two batches",
            two.freeze(),
            Batch(|e| matches!(e, E::LengthMismatch { .. } | E::NotExactlyOneBatch(2))),
        ),
        (
            "trailing byte",
            trailing.freeze(),
            Batch(|e| matches!(e, E::LengthMismatch { .. } | E::NotExactlyOneBatch(_))),
        ),
        (
            "record count 0",
            with_crc_fixed(patched(&good, RECORDS_COUNT_AT, &0i32.to_be_bytes())),
            Batch(|e| {
                matches!(
                    e,
                    E::BadRecordCount {
                        records_count: 0,
                        ..
                    }
                )
            }),
        ),
        (
            "record count -1",
            with_crc_fixed(patched(&good, RECORDS_COUNT_AT, &(-1i32).to_be_bytes())),
            Batch(|e| matches!(e, E::BadRecordCount { .. })),
        ),
        (
            "record count off by one",
            with_crc_fixed(patched(&good, RECORDS_COUNT_AT, &4i32.to_be_bytes())),
            Batch(|e| matches!(e, E::BadRecordCount { .. })),
        ),
        (
            "compression codec 7",
            with_crc_fixed(patched(
                &good,
                ATTRIBUTES_AT + 1,
                &[good[ATTRIBUTES_AT + 1] | 7],
            )),
            Batch(|e| *e == E::UnknownCompression(7)),
        ),
        (
            "control flag on data records",
            with_crc_fixed(patched(&good, ATTRIBUTES_AT, &control_flag)),
            Batch(|e| matches!(e, E::ControlBatchFromClient | E::BadControlBatch)),
        ),
        (
            "above max.message.bytes",
            testing::batch(4, limit_bytes / 2, b'l', START_MS),
            TooLarge,
        ),
    ]
}

/// Malformed batches get a typed error and leave the log and its files untouched; the next
/// good append takes the next offset.
#[test]
fn append_rejects_malformed_batches_and_writes_nothing() {
    let limit_bytes = 4096;
    let config = LogConfig {
        max_message_bytes: limit_bytes,
        ..config()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), config, options(0)).expect("open");
    for i in 0..5 {
        log.append_as_leader(testing::batch(2, 100, b'a', START_MS + i), 0)
            .expect("good append");
    }
    log.flush().expect("flush");
    let contents = read_everything(&log, 0, 1 << 20, 100);
    let end = log.log_end_offset();
    let files = file_sizes(dir.path());
    for (name, bytes, rejection) in bad_batches(limit_bytes) {
        let size = bytes.len();
        let result = log.append_as_leader(bytes, 0);
        match (&rejection, &result) {
            (Rejection::Batch(check), Err(StorageError::InvalidBatch(e))) if check(e) => {}
            (
                Rejection::TooLarge,
                Err(StorageError::BatchTooLarge {
                    size_bytes,
                    limit_bytes: l,
                }),
            ) => {
                assert_eq!((*size_bytes, *l), (size, limit_bytes), "{name}");
            }
            _ => panic!("{name} ({size} bytes): unexpected answer {result:?}"),
        }
        assert_eq!(log.log_end_offset(), end, "{name}: log end moved");
        assert_eq!(file_sizes(dir.path()), files, "{name}: files changed");
    }
    assert_eq!(
        read_everything(&log, 0, 1 << 20, 100),
        contents,
        "log contents changed"
    );
    let info = log
        .append_as_leader(testing::batch(1, 10, b'z', START_MS), 0)
        .expect("good append after rejections");
    assert_eq!(info.base_offset, end);
}

/// A follower's record set with a bad batch, a partial tail, a gap or an overlap is rejected
/// whole: nothing of it is written.
#[test]
fn replicated_append_rejects_bad_record_sets_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), config(), options(0)).expect("open");
    let leader_batch = |base: i64, count: usize, fill: u8| {
        let mut b = BytesMut::from(&testing::batch(count, 30, fill, START_MS)[..]);
        batch::set_base_offset(&mut b, base);
        batch::set_partition_leader_epoch(&mut b, 1);
        b
    };
    log.append_replicated(leader_batch(0, 3, b'a').freeze())
        .expect("contiguous append");
    log.flush().expect("flush");
    let end = log.log_end_offset();
    assert_eq!(end, 3);
    let files = file_sizes(dir.path());

    let mut good_then_corrupt = leader_batch(3, 2, b'b');
    let mut corrupt = leader_batch(5, 2, b'c');
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    good_then_corrupt.extend_from_slice(&corrupt);
    let mut good_then_partial = leader_batch(3, 2, b'b');
    let partial = leader_batch(5, 2, b'c');
    good_then_partial.extend_from_slice(&partial[..partial.len() - 7]);
    let mut backwards = leader_batch(3, 2, b'b');
    backwards.extend_from_slice(&leader_batch(4, 1, b'd'));
    type Check = fn(&StorageError) -> bool;
    let cases: Vec<(&str, Bytes, Check)> = vec![
        (
            "good batch then corrupt one",
            good_then_corrupt.freeze(),
            |e| {
                matches!(
                    e,
                    StorageError::InvalidBatch(BatchError::CrcMismatch { .. })
                )
            },
        ),
        (
            "good batch then partial one",
            good_then_partial.freeze(),
            |e| matches!(e, StorageError::InvalidBatch(_)),
        ),
        ("gap", leader_batch(4, 1, b'g').freeze(), |e| {
            matches!(
                e,
                StorageError::NonContiguousAppend {
                    first_offset: 4,
                    log_end_offset: 3
                }
            )
        }),
        ("overlap", leader_batch(2, 1, b'o').freeze(), |e| {
            matches!(
                e,
                StorageError::NonContiguousAppend {
                    first_offset: 2,
                    log_end_offset: 3
                }
            )
        }),
        ("offsets going backwards", backwards.freeze(), |e| {
            matches!(e, StorageError::NonMonotonicOffsets { .. })
        }),
    ];
    for (name, bytes, check) in cases {
        match log.append_replicated(bytes) {
            Err(e) if check(&e) => {}
            other => panic!("{name}: unexpected answer {other:?}"),
        }
        assert_eq!(log.log_end_offset(), end, "{name}: log end moved");
        assert_eq!(file_sizes(dir.path()), files, "{name}: files changed");
    }
    let info = log
        .append_replicated(leader_batch(3, 2, b'b').freeze())
        .expect("good append");
    assert_eq!((info.base_offset, info.last_offset), (3, 4));
}

/// `verify_crc_on_read: false` trades the check for read throughput: the flipped record byte is
/// then served, which is exactly what the default (`true`) exists to prevent.
#[test]
fn crc_check_on_read_can_be_turned_off_and_is_on_by_default() {
    assert!(LogConfig::default().verify_crc_on_read);
    let mut rng = Rng::new(7);
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, stored) = build(dir.path(), &config(), &mut rng);
    let end = log.log_end_offset();
    let bad = stored[stored.len() / 2].clone();
    log.close().expect("close");
    // A byte of the last record's value: inside the CRC range, outside every header field.
    flip_bit(dir.path(), &bad, bad.bytes.len() - 2, 0);

    let checked = Log::open(dir.path(), config(), options(end)).expect("reopen");
    assert!(matches!(
        checked.read(bad.base, 1 << 20, i64::MAX),
        Err(StorageError::CorruptLog { .. })
    ));
    checked.close().expect("close");

    let unchecked_config = LogConfig {
        verify_crc_on_read: false,
        ..config()
    };
    let unchecked = Log::open(dir.path(), unchecked_config, options(end)).expect("reopen");
    let served = unchecked
        .read(bad.base, 0, i64::MAX)
        .expect("served unchecked");
    assert_eq!(served.records.len(), bad.bytes.len());
    assert_ne!(
        served.records, bad.bytes,
        "the corrupt bytes are what is served"
    );
}
