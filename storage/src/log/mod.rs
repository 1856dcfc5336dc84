//! A partition log: an ordered set of segments with one active segment, plus the leader-epoch
//! cache and producer state that must move in step with it.
//!
//! Concurrency: one `Mutex<LogState>` guards the segment map and counters. Appends write to the
//! page cache while holding it (a `pwrite`); reads take it only to plan a read and `pread`
//! outside it; fsyncs run outside it under a separate flush lock, which is what makes group
//! commit work: appenders that wait for the flush lock usually find their offsets already
//! covered by the fsync that held it. Blocking calls: the broker calls these methods from
//! blocking threads, never directly on the async executor.

mod append;
mod compact;
mod read;
mod recovery;
mod retention;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::{Clock, SystemClock};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{Result, StorageError};
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
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            recovery_point: 0,
            clock: Arc::new(SystemClock),
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
    state: Mutex<LogState>,
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
        self.lock().log_start_offset
    }

    /// Offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.lock().log_end_offset
    }

    /// Every offset below this is on stable storage.
    pub fn recovery_point(&self) -> i64 {
        self.lock().recovery_point
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
        self.lock().epochs.latest_epoch()
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
        self.lock().producers.first_unstable_offset()
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

    /// Drops state of producers idle for longer than `expiration_ms` with no open transaction.
    pub fn remove_expired_producers(&self, expiration_ms: i64) {
        let now = self.clock.now_ms();
        self.lock().producers.remove_expired(now, expiration_ms);
    }

    /// The state, for an operation that writes: refused once appends are blocked.
    fn lock_writable(&self) -> Result<MutexGuard<'_, LogState>> {
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
        error
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding the lock leaves the state as consistent as any crash would;
        // recovering the guard keeps the broker serving instead of cascading panics.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
