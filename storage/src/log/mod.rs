//! A partition log: an ordered set of segments with one active segment, plus the leader-epoch
//! cache and producer state that must move in step with it.
//!
//! Concurrency: one `Mutex<LogState>` guards the segment map and counters. Appends write to the
//! page cache while holding it (a `pwrite`); reads take it only to plan a read and `pread`
//! outside it; fsyncs run outside it under a separate flush lock, which is what makes group
//! commit work: appenders that wait for the flush lock usually find their offsets already
//! covered by the fsync that held it. Blocking calls: the broker calls these methods from
//! blocking threads, never directly on the async executor; debug builds assert it on every
//! lock acquisition once the broker installed its check (`crate::blocking`).
//!
//! The cheap getters ([`Log::log_start_offset`], [`Log::log_end_offset`],
//! [`Log::recovery_point`], [`Log::latest_epoch`], [`Log::first_unstable_offset`]) take no
//! lock: they read a `Published` snapshot of atomics. An append holds the state lock across
//! its `pwrite`, and the broker asks these from async code, which must never wait for a write.
//! The snapshot is refreshed by the state guard itself (`StateGuard`): whoever borrowed the
//! state mutably republishes it when the guard drops, still under the lock, so no mutation site
//! can forget and writers publish in lock order.

mod append;
mod compact;
mod read;
mod recovery;
mod retention;

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::{Clock, SystemClock};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{Result, StorageError};
use crate::failure::FailureReporter;
use crate::producer::ProducerStateManager;
use crate::segment::{file_name, Segment};

pub use compact::{CompactionOutcome, COMPACTION_KEYS_MAX};
pub use read::ReadResult;
pub use retention::RetentionOutcome;

/// File holding the durable log start offset (moved by DeleteRecords and retention).
const LOG_START_OFFSET_FILE: &str = "log-start-offset";
/// Written by a clean close; its presence on open means no recovery scan is needed.
const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// How to open a log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Offsets below this were flushed before the last shutdown (from the broker's checkpoint);
    /// after an unclean shutdown recovery scans from the segment holding it.
    pub recovery_point: i64,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Told when an i/o failure makes the log refuse appends (Kafka's log-dir failure channel).
    pub failures: FailureReporter,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            recovery_point: 0,
            clock: Arc::new(SystemClock),
            failures: FailureReporter::default(),
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended (or of the original, for a duplicate).
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Broker append time if the log uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
    /// The batch was a retry of one already in the log; nothing was written.
    pub duplicate: bool,
}

/// A partition log. See the module documentation for its locking.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    failures: FailureReporter,
    state: Mutex<LogState>,
    /// The cheap getters' values, republished whenever the state changes (see [`StateGuard`]).
    published: Published,
    /// Held while fsyncing, so concurrent flushes collapse into one (group commit).
    flush_lock: Mutex<()>,
    /// Held by compaction while it creates or removes its cleaned copy by path, and by
    /// [`Log::retire`]: once the log is retired none runs or starts. Separate from the state
    /// lock so that an unlink (which evicts the file's cached pages) does not stall appends and
    /// reads. The swap itself (renames, directory fsyncs) runs under the state lock.
    path_ops: Mutex<()>,
}

#[derive(Debug)]
struct LogState {
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    /// Every offset below this is known to be on stable storage.
    recovery_point: i64,
    epochs: LeaderEpochCache,
    producers: ProducerStateManager,
    /// Records appended since the last flush (`flush.messages`).
    unflushed_records: u64,
    /// When the oldest unflushed append happened (`flush.ms`).
    oldest_unflushed_ms: Option<i64>,
    /// Bumped by every truncation, so a read planned before one can notice it.
    truncations: u64,
    /// Old segments opened for reads, least recently opened first (bounded by
    /// `open_segments_max`).
    open_old_segments: VecDeque<i64>,
    /// Set when a write or fsync failed in a way that may leave the files out of step with
    /// this state: appends, flushes and truncations are refused until the log is reopened.
    appends_blocked: bool,
    /// Set by [`Log::retire`]: the directory is about to be deleted or moved, so nothing may
    /// change a file any more (its paths may soon name another log's files).
    retired: bool,
    /// The partition's high watermark as last told by the broker; retention never deletes a
    /// segment holding offsets at or above it (followers may still need them). `None` until
    /// the broker reports one (a log used on its own).
    high_watermark: Option<i64>,
}

impl Log {
    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// First offset that can be read.
    pub fn log_start_offset(&self) -> i64 {
        self.published.log_start_offset.load(Ordering::Acquire)
    }

    /// Offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.published.log_end_offset.load(Ordering::Acquire)
    }

    /// Every offset below this is on stable storage.
    pub fn recovery_point(&self) -> i64 {
        self.published.recovery_point.load(Ordering::Acquire)
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.lock().segments.values().map(Segment::size_bytes).sum()
    }

    /// Number of segments (the active one included).
    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    /// Number of segments whose file handle and indexes are in memory.
    pub fn open_segment_count(&self) -> usize {
        self.lock()
            .segments
            .values()
            .filter(|s| s.is_open())
            .count()
    }

    /// The current configuration.
    pub fn config(&self) -> LogConfig {
        self.lock().config.clone()
    }

    /// Replaces the configuration (topic config change); takes effect on the next operation.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.lock().config = config;
        Ok(())
    }

    /// Latest leader epoch in the epoch cache.
    pub fn latest_epoch(&self) -> Option<i32> {
        let epoch = self.published.latest_epoch.load(Ordering::Acquire);
        // Epochs are non-negative `i32`s; `NONE` stands for an empty epoch cache.
        (epoch != Published::NONE).then_some(epoch as i32)
    }

    /// A new leader records its epoch as starting at the log end before it appends anything
    /// (Kafka's `makeLeader`), so followers asking OffsetForLeaderEpoch about an epoch this
    /// replica never wrote in learn where the leader's log diverges from theirs.
    pub fn assign_leader_epoch(&self, epoch: i32) -> Result<()> {
        let mut st = self.lock_writable()?;
        let end = st.log_end_offset;
        if st.epochs.latest_epoch().is_none_or(|latest| epoch > latest) {
            st.epochs.assign(epoch, end)?;
        }
        Ok(())
    }

    /// OffsetForLeaderEpoch: `(epoch, end offset)` for `requested_epoch`, Kafka semantics.
    pub fn end_offset_for_epoch(&self, requested_epoch: i32) -> (i32, i64) {
        let st = self.lock();
        st.epochs.end_offset_for(requested_epoch, st.log_end_offset)
    }

    /// First offset of the earliest transaction that is open or whose marker is not yet below
    /// the high watermark; the broker derives the last stable offset as the minimum of this and
    /// the high watermark.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let offset = self.published.first_unstable_offset.load(Ordering::Acquire);
        (offset != Published::NONE).then_some(offset)
    }

    /// Tells the log the partition's high watermark moved (the broker calls this).
    pub fn on_high_watermark_updated(&self, high_watermark: i64) {
        let mut st = self.lock();
        st.high_watermark = Some(high_watermark);
        st.producers.on_high_watermark_updated(high_watermark);
    }

    /// Number of producers the log keeps state for.
    pub fn producer_count(&self) -> usize {
        self.lock().producers.producer_count()
    }

    /// What the log knows of `producer_id` (its epoch, latest batches, open transaction).
    pub fn producer(&self, producer_id: i64) -> Option<crate::producer::ProducerEntry> {
        self.lock().producers.producer(producer_id).cloned()
    }

    /// Every producer the log keeps state for, by id (DescribeProducers).
    pub fn producers(&self) -> Vec<(i64, crate::producer::ProducerEntry)> {
        let st = self.lock();
        let mut all: Vec<_> = st
            .producers
            .producers()
            .map(|(id, entry)| (id, entry.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// Drops state of producers idle for longer than `expiration_ms` with no open transaction.
    pub fn remove_expired_producers(&self, expiration_ms: i64) {
        let now = self.clock.now_ms();
        self.lock().producers.remove_expired(now, expiration_ms);
    }

    /// The state, for an operation that writes: refused once appends are blocked.
    fn lock_writable(&self) -> Result<StateGuard<'_>> {
        let st = self.lock();
        if st.appends_blocked || st.retired {
            return Err(StorageError::AppendsBlocked {
                dir: self.dir.clone(),
            });
        }
        Ok(st)
    }

    /// Stops every change to the log's files for good (appends, truncation, retention,
    /// DeleteRecords, compaction swaps), waiting for one in progress: call before deleting or
    /// moving the directory, since its paths may then name another log's files (a topic
    /// recreated under the same name). Reads keep working on the open files.
    pub fn retire(&self) {
        let _path_ops = self.lock_path_ops();
        self.lock().retired = true;
    }

    /// See `path_ops`; taken before the state lock, never after.
    fn lock_path_ops(&self) -> MutexGuard<'_, ()> {
        crate::blocking::debug_assert_may_block();
        self.path_ops
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether [`Log::retire`] was called.
    fn is_retired(&self) -> bool {
        self.lock().retired
    }

    /// Blocks appends after `error`, which may have left the files out of step with the
    /// state, and returns it.
    fn block_appends(&self, st: &mut LogState, error: StorageError) -> StorageError {
        tracing::error!(dir = %self.dir.display(), %error, "blocking appends after an i/o failure");
        st.appends_blocked = true;
        self.failures.report(&self.dir, &error);
        error
    }

    /// The state lock. Mutating through the guard republishes the cheap getters' values when
    /// it drops (see [`StateGuard`]).
    fn lock(&self) -> StateGuard<'_> {
        // A panic while holding the lock leaves the state as consistent as any crash would;
        // recovering the guard keeps the broker serving instead of cascading panics.
        crate::blocking::debug_assert_may_block();
        let guard = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        StateGuard {
            guard,
            published: &self.published,
            changed: false,
        }
    }
}

/// The values the cheap getters answer, readable without the state lock. Each is a copy of a
/// [`LogState`] field (or of what it derives), stored while the state lock is held.
#[derive(Debug)]
struct Published {
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    recovery_point: AtomicI64,
    /// The epoch cache's latest epoch, or [`Published::NONE`].
    latest_epoch: AtomicI64,
    /// The producer state's first unstable offset, or [`Published::NONE`].
    first_unstable_offset: AtomicI64,
}

impl Published {
    /// Stands for `None`: offsets and epochs are never negative.
    const NONE: i64 = -1;

    fn new(st: &LogState) -> Published {
        let published = Published {
            log_start_offset: AtomicI64::new(0),
            log_end_offset: AtomicI64::new(0),
            recovery_point: AtomicI64::new(0),
            latest_epoch: AtomicI64::new(Published::NONE),
            first_unstable_offset: AtomicI64::new(Published::NONE),
        };
        published.publish(st);
        published
    }

    fn publish(&self, st: &LogState) {
        let latest_epoch = st.epochs.latest_epoch().map_or(Published::NONE, i64::from);
        let first_unstable = st.producers.first_unstable_offset();
        self.log_start_offset
            .store(st.log_start_offset, Ordering::Release);
        self.log_end_offset
            .store(st.log_end_offset, Ordering::Release);
        self.recovery_point
            .store(st.recovery_point, Ordering::Release);
        self.latest_epoch.store(latest_epoch, Ordering::Release);
        self.first_unstable_offset
            .store(first_unstable.unwrap_or(Published::NONE), Ordering::Release);
    }
}

/// The locked [`LogState`]. A guard that was dereferenced mutably republishes the state into
/// [`Published`] when it drops, before the lock is released: every change made under the lock
/// reaches the lock-free getters, whichever code path made it.
#[derive(Debug)]
struct StateGuard<'a> {
    guard: MutexGuard<'a, LogState>,
    published: &'a Published,
    /// Set by the first mutable borrow: read-only users (read planning) publish nothing.
    changed: bool,
}

impl Deref for StateGuard<'_> {
    type Target = LogState;

    fn deref(&self) -> &LogState {
        &self.guard
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut LogState {
        self.changed = true;
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if self.changed {
            self.published.publish(&self.guard);
        }
    }
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_base(&self) -> i64 {
        self.active().base_offset()
    }

    /// Base offset of the segment that may hold `offset` (the first one if below all).
    fn floor_segment(&self, offset: i64) -> i64 {
        self.segments
            .range(..=offset)
            .next_back()
            .or_else(|| self.segments.iter().next())
            .map(|(b, _)| *b)
            .unwrap_or(0)
    }

    /// Opens the segment for reading, closing the least recently opened old segments beyond
    /// `open_segments_max` (never one holding unflushed data).
    fn open_segment(&mut self, base: i64) -> Result<()> {
        let interval = self.config.index_interval_bytes;
        let active_base = self.active_base();
        let out_of_range = self.out_of_range(base);
        let segment = self.segments.get_mut(&base).ok_or(out_of_range)?;
        if segment.is_open() || base == active_base {
            return segment.ensure_open(interval);
        }
        segment.ensure_open(interval)?;
        self.open_old_segments.retain(|b| *b != base);
        self.open_old_segments.push_back(base);
        self.close_excess_segments()
    }

    fn close_excess_segments(&mut self) -> Result<()> {
        let max = self.config.open_segments_max;
        let active_base = self.active_base();
        let mut budget = self.open_old_segments.len();
        while self.open_old_segments.len() > max && budget > 0 {
            budget -= 1;
            let Some(base) = self.open_old_segments.pop_front() else {
                break;
            };
            match self.segments.get_mut(&base) {
                Some(s) if base != active_base && s.next_offset() <= self.recovery_point => {
                    s.close()?;
                }
                Some(s) if base != active_base => {
                    // Still holds unflushed data: the next flush needs its handle.
                    let _ = s;
                    self.open_old_segments.push_back(base);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The error for a request at `offset` outside what the log holds.
    fn out_of_range(&self, offset: i64) -> StorageError {
        StorageError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        }
    }

    fn persist_log_start_offset(&self, dir: &Path) -> Result<()> {
        crate::checkpoint::write_framed(
            &dir.join(LOG_START_OFFSET_FILE),
            &self.log_start_offset.to_be_bytes(),
        )
    }

    /// Deletes the segment at `base` (never the active one).
    fn delete_segment(&mut self, base: i64) -> Result<u64> {
        debug_assert_ne!(base, self.active_base());
        let Some(segment) = self.segments.remove(&base) else {
            return Ok(0);
        };
        let size = segment.size_bytes();
        self.open_old_segments.retain(|b| *b != base);
        segment.delete_files()?;
        Ok(size)
    }
}

/// Path of a file of the segment at `base` in `dir`.
fn segment_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(file_name(base, ext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testing::{self, Producer};

    const T0: i64 = 1_700_000_000_000;

    fn open(dir: &Path) -> Log {
        Log::open(dir, LogConfig::default(), LogOptions::default()).expect("open log")
    }

    /// What the lock-free getters answer, in one tuple.
    fn published(log: &Log) -> (i64, i64, i64, Option<i32>, Option<i64>) {
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.recovery_point(),
            log.latest_epoch(),
            log.first_unstable_offset(),
        )
    }

    /// What the same values are under the state lock.
    fn locked(log: &Log) -> (i64, i64, i64, Option<i32>, Option<i64>) {
        let st = log.lock();
        (
            st.log_start_offset,
            st.log_end_offset,
            st.recovery_point,
            st.epochs.latest_epoch(),
            st.producers.first_unstable_offset(),
        )
    }

    #[test]
    fn cheap_getters_answer_while_the_state_lock_is_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path());
        log.append_as_leader(testing::batch(3, 10, b'a', T0), 2)
            .expect("append");
        // Held as an append holds it across its write: a getter that took the lock would
        // deadlock here (the mutex is not reentrant).
        let mut st = log.lock();
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.log_end_offset(), 3);
        assert_eq!(log.recovery_point(), st.recovery_point);
        assert_eq!(log.latest_epoch(), Some(2));
        assert_eq!(log.first_unstable_offset(), None);
        // A change made under the lock shows only once the guard is released.
        st.log_end_offset = 4;
        assert_eq!(
            log.log_end_offset(),
            3,
            "published before the lock is released"
        );
        st.log_end_offset = 3;
        drop(st);
        assert_eq!(log.log_end_offset(), 3);
    }

    #[test]
    fn cheap_getters_follow_appends_flushes_truncation_and_delete_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path());
        assert_eq!(published(&log), (0, 0, 0, None, None));

        log.append_as_leader(testing::batch(5, 10, b'a', T0), 1)
            .expect("append");
        log.assign_leader_epoch(3).expect("new leader epoch");
        log.append_as_leader(testing::batch(5, 10, b'b', T0), 3)
            .expect("append");
        assert_eq!(log.log_end_offset(), 10);
        assert_eq!(log.latest_epoch(), Some(3));
        assert_eq!(published(&log), locked(&log));

        log.flush().expect("flush");
        assert_eq!(log.recovery_point(), 10);
        assert_eq!(published(&log), locked(&log));

        // An open transaction holds the first unstable offset at its first record.
        let txn = Producer {
            id: 7,
            epoch: 0,
            base_sequence: 0,
            transactional: true,
        };
        log.append_as_leader(testing::idempotent_batch(2, txn, T0), 3)
            .expect("transactional append");
        assert_eq!(log.first_unstable_offset(), Some(10));
        log.append_as_coordinator(testing::control_batch(txn, true, T0), 3)
            .expect("commit marker");
        assert_eq!(
            log.first_unstable_offset(),
            Some(10),
            "marker not yet replicated"
        );
        log.on_high_watermark_updated(13);
        assert_eq!(log.first_unstable_offset(), None);
        assert_eq!(published(&log), locked(&log));

        // Follower truncation into epoch 1's batch: the end and the epoch cache move back.
        log.truncate_to(5).expect("truncate");
        assert_eq!(log.log_end_offset(), 5);
        assert_eq!(log.latest_epoch(), Some(1));
        assert_eq!(published(&log), locked(&log));

        // DeleteRecords moves the start.
        assert_eq!(log.delete_records_before(4).expect("delete records"), 4);
        assert_eq!(log.log_start_offset(), 4);
        assert_eq!(published(&log), locked(&log));

        // A follower restarting at the leader's log start.
        log.truncate_fully_and_start_at(20).expect("restart at 20");
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 20));
        assert_eq!(published(&log), locked(&log));

        // Reopening publishes what recovery found.
        drop(log);
        let log = open(dir.path());
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 20));
        assert_eq!(published(&log), locked(&log));
    }

    #[test]
    fn a_failure_that_blocks_appends_is_reported_once_per_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reported = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&reported);
        let options = LogOptions {
            failures: FailureReporter::new(move |dir, error| {
                let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
                sink.push((dir.to_owned(), error.to_string()));
            }),
            ..LogOptions::default()
        };
        let log = Log::open(dir.path(), LogConfig::default(), options).expect("open log");
        log.append_as_leader(testing::batch(2, 10, b'a', T0), 1)
            .expect("append");
        log.flush().expect("flush");
        assert!(reported.lock().unwrap().is_empty(), "nothing failed yet");

        let failure = StorageError::io(dir.path(), std::io::Error::other("fsync failed"));
        let returned = {
            let mut st = log.lock();
            log.block_appends(&mut st, failure)
        };
        assert!(matches!(returned, StorageError::Io { .. }));
        let reported = reported.lock().unwrap().clone();
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].0, dir.path());
        assert!(reported[0].1.contains("fsync failed"), "{reported:?}");
        assert!(matches!(
            log.append_as_leader(testing::batch(1, 10, b'b', T0), 1),
            Err(StorageError::AppendsBlocked { .. })
        ));
    }

    #[test]
    fn a_validated_batch_is_appended_and_client_rules_still_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path());
        let batch =
            crate::batch::ValidatedBatch::new(testing::batch(2, 4, b'v', T0)).expect("valid batch");
        let info = log
            .append_validated_as_leader(batch, 1)
            .expect("append a validated batch");
        assert_eq!((info.base_offset, info.last_offset), (0, 1));

        let producer = Producer {
            id: 3,
            epoch: 0,
            base_sequence: 0,
            transactional: true,
        };
        let marker = crate::batch::ValidatedBatch::new(testing::control_batch(producer, true, T0))
            .expect("a control batch is a valid batch");
        assert!(matches!(
            log.append_validated_as_leader(marker, 1),
            Err(StorageError::InvalidBatch(
                crate::error::BatchError::ControlBatchFromClient
            ))
        ));
        assert_eq!(log.log_end_offset(), 2);
    }
}
