//! Property test: random sequences of log operations checked against an in-memory model.
//!
//! The model is the list of batches the log must hold (with the bytes each must read back as:
//! the appended batch with its base offset and leader epoch patched in), the log start and end
//! offsets, and the end of the last explicit flush. Every operation's result is predicted from
//! the model and from what is observable in the log directory (segment files and their sizes),
//! then compared with what the log does.
//!
//! A "crash" drops the log without `close`; optionally the last segment file is cut at a random
//! byte beyond the durable prefix (the log's recovery point, which must cover every explicit
//! flush), and the log is reopened with the recovery point it reported before the crash.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use streambus_storage::batch::{self, testing};
use streambus_storage::{Clock, Log, LogConfig, LogOptions, ManualClock, StorageError};
use tempfile::TempDir;

use crate::{read_everything, segment_bases, segment_file, split_batches};

/// Wall-clock start of every case (timestamps stay far from `retention.ms`).
const START_MS: i64 = 1_700_000_000_000;
/// `segment.ms` used by every case; the clock moves by at most twice this per step.
const SEGMENT_MS: i64 = 60_000;

/// Where a read stops.
#[derive(Debug, Clone)]
enum Upper {
    LogEnd,
    Unbounded,
    AboveStart(u16),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: usize,
        value_len: usize,
    },
    Read {
        start: u32,
        max_bytes: usize,
        upper: Upper,
    },
    ReadOutOfRange {
        above: bool,
        by: u8,
    },
    Flush,
    Truncate {
        at: u32,
    },
    Retention {
        bytes: i64,
    },
    DeleteRecords {
        at: u32,
    },
    DeleteRecordsOutOfRange {
        by: u8,
    },
    AdvanceClock {
        ms: i64,
    },
    Crash {
        cut: Option<u32>,
    },
    CleanReopen,
}

/// One batch as it must be read back.
#[derive(Debug, Clone)]
struct ModelBatch {
    base: i64,
    last: i64,
    bytes: Bytes,
}

impl ModelBatch {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

#[derive(Debug, Default)]
struct Model {
    /// Contiguous batches, ascending; those below the first segment are pruned.
    batches: Vec<ModelBatch>,
    log_start: i64,
    log_end: i64,
    /// End offset of the last explicit `flush` (lowered by truncations).
    flushed_end: i64,
    /// Leader epoch used for appends; bumped by every truncation, as after a leader change.
    epoch: i32,
    /// Fill byte of the next batch's values, so batches differ.
    fill: u8,
}

impl Model {
    /// Index of the batch holding `offset` (the first one whose last offset reaches it).
    fn batch_index_at(&self, offset: i64) -> Option<usize> {
        let i = self.batches.partition_point(|b| b.last < offset);
        (i < self.batches.len()).then_some(i)
    }

    /// The batches a read may return, greedily filled to `max_bytes` (at least one). The log
    /// may stop earlier only where a new segment starts.
    fn expected_read(&self, start: i64, max_bytes: usize, upper: i64) -> &[ModelBatch] {
        if start >= upper.min(self.log_end) {
            return &[];
        }
        let Some(first) = self.batch_index_at(start) else {
            return &[];
        };
        let mut end = first;
        let mut bytes: u64 = 0;
        while end < self.batches.len() && self.batches[end].last < upper {
            let with = bytes + self.batches[end].len();
            if end > first && with > max_bytes as u64 {
                break;
            }
            bytes = with;
            end += 1;
        }
        &self.batches[first..end]
    }
}

struct Harness {
    dir: TempDir,
    config: LogConfig,
    clock: Arc<ManualClock>,
    log: Option<Log>,
    model: Model,
}

impl Harness {
    fn new(config: LogConfig) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(START_MS));
        let log = Log::open(dir.path(), config.clone(), options(&clock, 0)).expect("open new log");
        Harness {
            dir,
            config,
            clock,
            log: Some(log),
            model: Model::default(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("log is open")
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { count, value_len } => self.append(*count, *value_len),
            Op::Read {
                start,
                max_bytes,
                upper,
            } => self.read(*start, *max_bytes, upper),
            Op::ReadOutOfRange { above, by } => self.read_out_of_range(*above, *by),
            Op::Flush => self.flush(),
            Op::Truncate { at } => self.truncate(*at),
            Op::Retention { bytes } => self.retention(*bytes),
            Op::DeleteRecords { at } => self.delete_records(*at),
            Op::DeleteRecordsOutOfRange { by } => self.delete_records_out_of_range(*by),
            Op::AdvanceClock { ms } => self.clock.advance(*ms),
            Op::Crash { cut } => self.crash(*cut),
            Op::CleanReopen => self.clean_reopen(),
        }
        self.prune_below_first_segment();
        self.check_offsets();
    }

    fn append(&mut self, count: usize, value_len: usize) {
        let m = &mut self.model;
        m.fill = m.fill.wrapping_add(1);
        let raw = testing::batch(count, value_len, m.fill, self.clock.now_ms());
        let mut expected = BytesMut::from(&raw[..]);
        batch::set_base_offset(&mut expected, m.log_end);
        batch::set_partition_leader_epoch(&mut expected, m.epoch);
        let info = self
            .log
            .as_ref()
            .expect("log is open")
            .append_as_leader(raw, m.epoch)
            .unwrap_or_else(|e| panic!("append of {count} records failed: {e}"));
        assert_eq!(
            info.base_offset, m.log_end,
            "offsets must continue the log exactly"
        );
        assert_eq!(info.last_offset, m.log_end + count as i64 - 1);
        assert!(!info.duplicate);
        assert_eq!(info.log_append_time_ms, -1, "CreateTime log");
        assert_eq!(info.log_start_offset, m.log_start);
        m.batches.push(ModelBatch {
            base: info.base_offset,
            last: info.last_offset,
            bytes: expected.freeze(),
        });
        m.log_end = info.last_offset + 1;
    }

    fn read(&mut self, start_sel: u32, max_bytes: usize, upper: &Upper) {
        let m = &self.model;
        let start = pick(start_sel, m.log_start, m.log_end);
        let upper = match upper {
            Upper::LogEnd => m.log_end,
            Upper::Unbounded => i64::MAX,
            Upper::AboveStart(d) => start + i64::from(*d),
        };
        let result = self
            .log()
            .read(start, max_bytes, upper)
            .unwrap_or_else(|e| panic!("read({start}, {max_bytes}, {upper}) failed: {e}"));
        assert_eq!(result.log_start_offset, m.log_start);
        assert_eq!(result.log_end_offset, m.log_end);
        let got = split_batches(&result.records);
        let expected = m.expected_read(start, max_bytes, upper);
        let context = format!("read({start}, {max_bytes}, {upper})");
        assert_eq!(
            got.is_empty(),
            expected.is_empty(),
            "{context}: got {} batches, model {}",
            got.len(),
            expected.len()
        );
        assert!(
            got.len() <= expected.len(),
            "{context}: got {} batches, at most {} fit",
            got.len(),
            expected.len()
        );
        for (k, ((header, bytes), want)) in got.iter().zip(expected).enumerate() {
            assert_eq!(header.base_offset, want.base, "{context}: batch {k}");
            assert_eq!(header.last_offset(), want.last, "{context}: batch {k}");
            assert!(
                bytes[..] == want.bytes[..],
                "{context}: bytes of batch at {} differ",
                want.base
            );
        }
        if got.len() < expected.len() {
            let next = expected[got.len()].base;
            assert!(
                segment_bases(self.path()).contains(&next),
                "{context}: stopped before batch {next} although it fits in max_bytes and starts no new segment"
            );
        }
    }

    fn read_out_of_range(&mut self, above: bool, by: u8) {
        let m = &self.model;
        let offset = if above {
            m.log_end + 1 + i64::from(by)
        } else if m.log_start > 0 {
            m.log_start - 1 - i64::from(by).min(m.log_start - 1)
        } else {
            -1 - i64::from(by)
        };
        match self.log().read(offset, 1 << 20, i64::MAX) {
            Err(StorageError::OffsetOutOfRange {
                offset: o,
                log_start_offset,
                log_end_offset,
            }) => {
                assert_eq!(
                    (o, log_start_offset, log_end_offset),
                    (offset, m.log_start, m.log_end)
                );
            }
            other => panic!(
                "read at {offset} outside [{}, {}]: expected OffsetOutOfRange, got {other:?}",
                m.log_start, m.log_end
            ),
        }
    }

    fn flush(&mut self) {
        self.log().flush().expect("flush");
        let rp = self.log().recovery_point();
        assert_eq!(
            rp, self.model.log_end,
            "after flush the recovery point is the log end"
        );
        self.model.flushed_end = self.model.log_end;
    }

    fn truncate(&mut self, at: u32) {
        let m = &self.model;
        let offset = pick(at, m.log_start, m.log_end);
        let first_base = segment_bases(self.path())[0];
        let full = offset < m.log_end && (offset <= first_base || offset < m.log_start);
        let expected_end = if offset >= m.log_end || full {
            offset.min(m.log_end)
        } else {
            let i = m
                .batch_index_at(offset)
                .expect("offset below log end is in a batch");
            offset.min(m.batches[i].base)
        };
        let context = format!(
            "truncate_to({offset}) (log [{}, {}])",
            m.log_start, m.log_end
        );
        let new_end = self
            .log()
            .truncate_to(offset)
            .unwrap_or_else(|e| panic!("{context} failed: {e}"));
        if full || expected_end >= m.log_start {
            assert_eq!(new_end, expected_end, "{context}");
            let m = &mut self.model;
            m.batches.retain(|b| b.last < new_end);
            if full {
                m.log_start = offset;
            }
            m.log_end = new_end;
        } else {
            // The cut falls inside the batch holding the log start.
            self.adopt_loss_below_log_start(expected_end, &context);
            assert_eq!(new_end, self.model.log_end, "{context}: returned end");
        }
        let m = &mut self.model;
        m.flushed_end = m.flushed_end.min(m.log_end);
        m.epoch += 1;
        self.verify_contents("after truncate_to");
    }

    fn retention(&mut self, retention_bytes: i64) {
        self.config.retention_bytes = retention_bytes;
        self.log()
            .set_config(self.config.clone())
            .expect("set_config");
        let segments: Vec<(i64, u64)> = segment_bases(self.path())
            .into_iter()
            .map(|b| (b, file_len(&segment_file(self.path(), b, "log"))))
            .collect();
        let mut total: u64 = segments.iter().map(|s| s.1).sum();
        let mut deleted = 0;
        let mut freed = 0;
        while segments.len() - deleted > 1 {
            let (_, size) = segments[deleted];
            let next_base = segments[deleted + 1].0;
            let below_start = next_base <= self.model.log_start;
            let oversized = retention_bytes >= 0 && total - size >= retention_bytes as u64;
            if !(below_start || oversized) {
                break;
            }
            total -= size;
            freed += size;
            deleted += 1;
        }
        let outcome = self.log().enforce_retention().expect("enforce_retention");
        let context = format!("retention.bytes={retention_bytes} over segments {segments:?}");
        assert_eq!(outcome.segments_deleted, deleted, "{context}");
        assert_eq!(outcome.bytes_deleted, freed, "{context}");
        let remaining: Vec<i64> = segments[deleted..].iter().map(|s| s.0).collect();
        assert_eq!(segment_bases(self.path()), remaining, "{context}");
        self.model.log_start = self.model.log_start.max(remaining[0]);
        assert_eq!(
            self.log().log_start_offset(),
            self.model.log_start,
            "{context}"
        );
        self.verify_contents("after retention");
    }

    fn delete_records(&mut self, at: u32) {
        let m = &self.model;
        let offset = pick(at, m.log_start, m.log_end);
        let before = segment_bases(self.path());
        let new_start = self
            .log()
            .delete_records_before(offset)
            .unwrap_or_else(|e| panic!("delete_records_before({offset}) failed: {e}"));
        assert_eq!(new_start, offset.max(m.log_start));
        let moved = new_start > m.log_start;
        self.model.log_start = new_start;
        self.verify_contents("after delete_records_before");
        // When the start moves, segments wholly below it are gone and the rest kept (segments
        // already below an unchanged start are left to retention).
        let bases = segment_bases(self.path());
        let expected: Vec<i64> = if moved {
            bases_kept_from(&before, new_start)
        } else {
            before
        };
        assert_eq!(
            bases, expected,
            "segments after delete_records_before({offset})"
        );
    }

    fn delete_records_out_of_range(&mut self, by: u8) {
        let offset = self.model.log_end + 1 + i64::from(by);
        let result = self.log().delete_records_before(offset);
        assert!(
            matches!(result, Err(StorageError::OffsetOutOfRange { .. })),
            "delete_records_before({offset}) past the end: {result:?}"
        );
    }

    fn crash(&mut self, cut: Option<u32>) {
        let log = self.log.take().expect("log is open");
        let recovery_point = log.recovery_point();
        let m = &mut self.model;
        assert!(
            recovery_point >= m.flushed_end && recovery_point <= m.log_end,
            "recovery point {recovery_point} must cover the last flush ({}) and not pass the end ({})",
            m.flushed_end,
            m.log_end
        );
        drop(log);

        let last_base = *segment_bases(self.dir.path()).last().expect("a segment");
        let path = segment_file(self.dir.path(), last_base, "log");
        let len = file_len(&path);
        let in_last: Vec<&ModelBatch> = m.batches.iter().filter(|b| b.base >= last_base).collect();
        let model_len: u64 = in_last.iter().map(|b| b.len()).sum();
        assert_eq!(
            len, model_len,
            "last segment {last_base} holds exactly the model's batches"
        );
        let durable_len: u64 = in_last
            .iter()
            .filter(|b| b.last < recovery_point)
            .map(|b| b.len())
            .sum();
        let mut lost_to = None;
        if let Some(sel) = cut.filter(|_| len > durable_len) {
            let new_len = durable_len + u64::from(sel) % (len - durable_len);
            let mut position = 0;
            let mut surviving_end = last_base;
            for b in &in_last {
                position += b.len();
                if position > new_len {
                    break;
                }
                surviving_end = b.last + 1;
            }
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(new_len))
                .expect("cut segment");
            lost_to = Some(surviving_end);
        }
        let log = Log::open(
            self.dir.path(),
            self.config.clone(),
            options(&self.clock, recovery_point),
        )
        .unwrap_or_else(|e| {
            panic!("reopen after crash (recovery point {recovery_point}) failed: {e}")
        });
        self.log = Some(log);
        let context = format!("after crash (recovery point {recovery_point})");
        match lost_to {
            Some(end) if end < self.model.log_start => {
                self.adopt_loss_below_log_start(end, &context)
            }
            Some(end) => {
                self.model.batches.retain(|b| b.base < end);
                self.model.log_end = end;
            }
            None => {}
        }
        self.after_reopen(&context);
    }

    /// Data up to `kept_end` survives a truncation or a crash, below the log start: the log
    /// must stay consistent, either starting and ending at `kept_end` or (as Kafka does)
    /// restarting empty at its log start, so no offset below the log start is ever reused.
    fn adopt_loss_below_log_start(&mut self, kept_end: i64, context: &str) {
        let log = self.log.as_ref().expect("log is open");
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let m = &mut self.model;
        let old_start = m.log_start;
        let moved_down = (start, end) == (kept_end, kept_end);
        let restarted = (start, end) == (old_start, old_start);
        assert!(
            moved_down || restarted,
            "{context}: only offsets below {kept_end} remain, below the log start {old_start}: \
             the log must be [{kept_end}, {kept_end}] or restart empty at [{old_start}, {old_start}], \
             but it is [{start}, {end}]"
        );
        m.batches.retain(|b| b.last < kept_end);
        m.log_start = start;
        m.log_end = end;
    }

    fn clean_reopen(&mut self) {
        let log = self.log.take().expect("log is open");
        log.close().expect("close");
        // The recovery point passed is irrelevant after a clean shutdown.
        let log = Log::open(self.path(), self.config.clone(), options(&self.clock, 0))
            .expect("reopen after close");
        self.log = Some(log);
        self.after_reopen("after clean reopen");
    }

    fn after_reopen(&mut self, context: &str) {
        let log = self.log();
        assert_eq!(
            log.log_end_offset(),
            self.model.log_end,
            "{context}: log end"
        );
        assert_eq!(
            log.log_start_offset(),
            self.model.log_start,
            "{context}: log start"
        );
        assert_eq!(
            log.recovery_point(),
            self.model.log_end,
            "{context}: everything on disk is durable after open"
        );
        assert_eq!(
            log.segment_count(),
            segment_bases(self.path()).len(),
            "{context}: segment count"
        );
        self.model.flushed_end = self.model.log_end;
        self.verify_contents(context);
    }

    /// Reads the whole log twice (batch by batch and in large chunks) and compares it with the
    /// model.
    fn verify_contents(&self, context: &str) {
        let m = &self.model;
        let log = self.log();
        let from = m.batch_index_at(m.log_start).unwrap_or(m.batches.len());
        let expected = &m.batches[from..];
        for max_bytes in [1, 1 << 20] {
            let calls_max = expected.len() + segment_bases(self.path()).len() + 2;
            let got = read_everything(log, m.log_start, max_bytes, calls_max);
            let got_offsets: Vec<(i64, i64)> = got
                .iter()
                .map(|(h, _)| (h.base_offset, h.last_offset()))
                .collect();
            let want_offsets: Vec<(i64, i64)> = expected.iter().map(|b| (b.base, b.last)).collect();
            assert_eq!(
                got_offsets, want_offsets,
                "{context}: batches of the whole log (max_bytes {max_bytes})"
            );
            for ((_, bytes), want) in got.iter().zip(expected) {
                assert!(
                    bytes[..] == want.bytes[..],
                    "{context}: bytes of batch {} differ",
                    want.base
                );
            }
        }
    }

    fn prune_below_first_segment(&mut self) {
        let first_base = segment_bases(self.path())[0];
        self.model.batches.retain(|b| b.base >= first_base);
    }

    fn check_offsets(&self) {
        let log = self.log();
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        assert_eq!(
            (start, end),
            (self.model.log_start, self.model.log_end),
            "log (start, end) vs model"
        );
        assert!(start <= end, "log start {start} above log end {end}");
        assert!(
            log.recovery_point() <= end,
            "recovery point past the log end"
        );
    }
}

/// Segment bases left after deleting those wholly below `log_start` (never the last one).
fn bases_kept_from(bases: &[i64], log_start: i64) -> Vec<i64> {
    let mut first = 0;
    while first + 1 < bases.len() && bases[first + 1] <= log_start {
        first += 1;
    }
    bases[first..].to_vec()
}

fn options(clock: &Arc<ManualClock>, recovery_point: i64) -> LogOptions {
    LogOptions {
        recovery_point,
        clock: Arc::clone(clock) as Arc<dyn Clock>,
        ..LogOptions::default()
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// Maps a random selector into `lo..=hi`.
fn pick(sel: u32, lo: i64, hi: i64) -> i64 {
    assert!(lo <= hi, "empty range [{lo}, {hi}]");
    lo + i64::from(sel) % (hi - lo + 1)
}

fn config_strategy() -> impl Strategy<Value = LogConfig> {
    (
        4096u64..=16384,
        1u64..=2048,
        1usize..=4,
        prop_oneof![3 => Just(i64::MAX), 1 => 1i64..=50],
    )
        .prop_map(
            |(segment_bytes, index_interval_bytes, open_segments_max, flush_messages)| LogConfig {
                segment_bytes,
                segment_ms: SEGMENT_MS,
                index_interval_bytes,
                open_segments_max,
                flush_messages,
                ..LogConfig::default()
            },
        )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let upper = prop_oneof![
        Just(Upper::LogEnd),
        Just(Upper::Unbounded),
        any::<u16>().prop_map(|d| Upper::AboveStart(d % 200)),
    ];
    let max_bytes = prop_oneof![Just(0usize), Just(1), 0usize..70_000, Just(usize::MAX)];
    prop_oneof![
        8 => (1usize..20, 0usize..2000).prop_map(|(count, value_len)| Op::Append { count, value_len }),
        5 => (any::<u32>(), max_bytes, upper).prop_map(|(start, max_bytes, upper)| Op::Read { start, max_bytes, upper }),
        1 => (any::<bool>(), any::<u8>()).prop_map(|(above, by)| Op::ReadOutOfRange { above, by }),
        2 => Just(Op::Flush),
        1 => any::<u32>().prop_map(|at| Op::Truncate { at }),
        1 => prop_oneof![Just(-1i64), 0i64..40_000].prop_map(|bytes| Op::Retention { bytes }),
        1 => any::<u32>().prop_map(|at| Op::DeleteRecords { at }),
        1 => any::<u8>().prop_map(|by| Op::DeleteRecordsOutOfRange { by }),
        1 => (0i64..=2 * SEGMENT_MS).prop_map(|ms| Op::AdvanceClock { ms }),
        2 => proptest::option::of(any::<u32>()).prop_map(|cut| Op::Crash { cut }),
        1 => Just(Op::CleanReopen),
    ]
}

proptest! {
    // PROPTEST_CASES raises the case count for a longer hunt (e.g. 2000); 48 keeps CI fast.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    /// Appends, reads, flushes, truncations, rolls, retention, DeleteRecords, crashes (with
    /// torn tails) and clean reopenings agree with the model at every step.
    #[test]
    fn random_operations_agree_with_the_model(
        config in config_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..60),
    ) {
        let mut harness = Harness::new(config);
        for op in &ops {
            harness.apply(op);
        }
        harness.verify_contents("at the end");
        let log = harness.log.take().expect("log is open");
        log.close().expect("close");
    }
}

// Cases the property test found, kept as plain tests so they fail with a precise message.

/// Options with a clock that stays at the batches' timestamps (no time-based roll).
fn manual_options() -> LogOptions {
    options(&Arc::new(ManualClock::new(START_MS)), 0)
}

/// Appends one batch of `count` small records and returns its base offset.
fn append_records(log: &Log, count: usize) -> i64 {
    let end = log.log_end_offset();
    let info = log
        .append_as_leader(testing::batch(count, 8, b'x', START_MS), 0)
        .unwrap_or_else(|e| panic!("append of {count} records at {end} failed: {e}"));
    assert_eq!(info.base_offset, end, "appends continue at the log end");
    info.base_offset
}

/// The batch appended at `base` can be read back.
fn assert_readable(log: &Log, base: i64, context: &str) {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    match log.read(base, 1 << 20, i64::MAX) {
        Ok(result) => {
            let batches = split_batches(&result.records);
            let first = batches.first().map(|(h, _)| h.base_offset);
            assert_eq!(
                first,
                Some(base),
                "{context}: read at {base} in [{start}, {end}]"
            );
        }
        Err(e) => {
            panic!("{context}: acknowledged batch at {base} unreadable (log [{start}, {end}]): {e}")
        }
    }
}

/// `truncate_to` inside the batch that holds the log start (after DeleteRecords into the
/// middle of a batch) cuts that whole batch: the log must not end up with its start above its
/// end, and what is appended next must be readable.
#[test]
fn truncation_into_the_batch_holding_the_log_start_keeps_the_log_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogConfig::default(), manual_options()).expect("open");
    append_records(&log, 5); // offsets 0..=4, one batch
    assert_eq!(log.delete_records_before(3).expect("delete records"), 3);
    let new_end = log.truncate_to(4).expect("truncate");
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    assert_eq!(new_end, end, "truncate_to returns the new end");
    assert!(
        (start, end) == (0, 0) || (start, end) == (3, 3),
        "after delete_records_before(3) and truncate_to(4) of batch [0, 4]: expected the log \
         [0, 0] or restarted empty at [3, 3], got [{start}, {end}]"
    );
    let base = append_records(&log, 1);
    assert_readable(&log, base, "append after truncating below the log start");
}

/// Losing unflushed data below a durable log start in a crash must not make the log start
/// move back and forth across restarts (hiding records appended in between).
#[test]
fn log_start_stays_put_across_crashes_after_losing_unflushed_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::default();
    let log = Log::open(dir.path(), config.clone(), manual_options()).expect("open");
    append_records(&log, 3); // offsets 0..=2, never flushed
    assert_eq!(log.delete_records_before(1).expect("delete records"), 1);
    drop(log); // crash; the unflushed batch is lost
    OpenOptions::new()
        .write(true)
        .open(segment_file(dir.path(), 0, "log"))
        .and_then(|f| f.set_len(0))
        .expect("lose the unflushed batch");
    let log = Log::open(dir.path(), config.clone(), manual_options()).expect("reopen");
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    assert!(
        (start, end) == (0, 0) || (start, end) == (1, 1),
        "after losing [0, 2] with the log start at 1: expected [0, 0] or [1, 1], got [{start}, {end}]"
    );
    let base = append_records(&log, 1);
    assert_readable(&log, base, "after the first crash");
    log.flush().expect("flush");
    drop(log); // crash again, nothing lost this time
    let log = Log::open(dir.path(), config, manual_options()).expect("reopen again");
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (start, base + 1),
        "the log start moved across a crash that lost nothing"
    );
    assert_readable(&log, base, "after the second crash");
}

/// `truncate_to` the base of the active segment makes the previous segment active again; if
/// that segment was closed (every old segment is, after a restart), appends must still work.
#[test]
fn append_after_truncating_back_into_a_closed_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config.clone(), manual_options()).expect("open");
    for _ in 0..8 {
        log.append_as_leader(testing::batch(1, 300, b'c', START_MS), 0)
            .expect("append");
    }
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 3, "test needs several segments: {bases:?}");
    log.close().expect("close");
    let log = Log::open(dir.path(), config, manual_options()).expect("reopen");
    let active = bases[bases.len() - 1];
    assert_eq!(log.truncate_to(active).expect("truncate"), active);
    let base = append_records(&log, 1);
    assert_readable(&log, base, "append after truncating into a closed segment");
}
