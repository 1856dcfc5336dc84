//! Appends (leader and follower), segment roll, and the flush policy with group commit.

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::{segment_path, AppendInfo, Log, LogState};
use crate::batch::{self, BatchHeader, BatchStep, OffsetGaps, ValidatedBatch, BATCH_HEADER_LEN};
use crate::checkpoint::sync_dir;
use crate::error::{BatchError, Result, StorageError};
use crate::metrics;
use crate::page_cache;
use crate::producer::{AppendCheck, TxnVerification};
use crate::segment::Segment;
use crate::txn_index::AbortedTxn;

/// Something to fsync once the state lock is released.
enum SyncTarget {
    File(Arc<File>, PathBuf),
    Path(PathBuf),
}

impl Log {
    /// Appends one batch from a producer as partition leader at `leader_epoch`: validates it,
    /// checks producer sequence/epoch, assigns offsets by patching the base offset in place,
    /// and flushes according to the flush policy. For a caller that has not validated the
    /// batch; see [`Log::append_validated_as_leader`].
    pub fn append_as_leader(&self, batch: Bytes, leader_epoch: i32) -> Result<AppendInfo> {
        self.append_validated_as_leader(ValidatedBatch::new(batch)?, leader_epoch)
    }

    /// [`Log::append_as_leader`] for a batch already validated (the broker's produce path reads
    /// its header before appending): the header is not checked again, but the rules for
    /// client batches (no control batch, ...) still apply.
    pub fn append_validated_as_leader(
        &self,
        batch: ValidatedBatch,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        self.append_leader(
            batch,
            leader_epoch,
            Origin::Client(TxnVerification::NotChecked),
        )
    }

    /// [`Log::append_validated_as_leader`] for a broker that verifies transactional writes
    /// (KIP-890): a transactional batch that would open a transaction must carry `guard`, from
    /// [`Log::start_verification`], still current.
    pub fn append_verified_as_leader(
        &self,
        batch: ValidatedBatch,
        leader_epoch: i32,
        guard: Option<u64>,
    ) -> Result<AppendInfo> {
        self.append_leader(
            batch,
            leader_epoch,
            Origin::Client(TxnVerification::Guard(guard)),
        )
    }

    /// Starts the verification of a transactional write of `producer_id` at `epoch` (see
    /// [`crate::producer::ProducerStateManager::start_verification`]).
    pub fn start_verification(
        &self,
        producer_id: i64,
        epoch: i16,
        epoch_bump: bool,
    ) -> Option<u64> {
        let now_ms = self.clock.now_ms();
        self.lock()
            .producers
            .start_verification(producer_id, epoch, epoch_bump, now_ms)
    }

    /// Appends a batch written by a coordinator on this broker (its records, transactional
    /// offset commits, transaction markers), as leader at `leader_epoch`. Unlike client
    /// batches, control batches are accepted, and sequences are neither required nor checked.
    pub fn append_as_coordinator(&self, batch: Bytes, leader_epoch: i32) -> Result<AppendInfo> {
        self.append_as_coordinator_verified(batch, leader_epoch, TxnVerification::NotChecked)
    }

    /// [`Log::append_as_coordinator`] with a transactional batch's KIP-890 verification (a
    /// group coordinator's transactional offset commits): one that would open a transaction
    /// needs its guard still current.
    pub fn append_as_coordinator_verified(
        &self,
        batch: Bytes,
        leader_epoch: i32,
        verification: TxnVerification,
    ) -> Result<AppendInfo> {
        self.append_leader(
            ValidatedBatch::new(batch)?,
            leader_epoch,
            Origin::Coordinator(verification),
        )
    }

    fn append_leader(
        &self,
        batch: ValidatedBatch,
        leader_epoch: i32,
        origin: Origin,
    ) -> Result<AppendInfo> {
        let header = *batch.header();
        if matches!(origin, Origin::Client(_)) {
            check_client_batch(&header)?;
        }
        let batch = batch.into_bytes();
        // Only the 61-byte header is patched, in a copy: the records are written from the
        // request's own buffer, never copied.
        let mut head = batch::header_bytes(&batch)?;
        let body = &batch[BATCH_HEADER_LEN..];
        let (info, rolled_at, flush_due, advice) = {
            let mut st = self.lock_writable()?;
            if batch.len() > st.config.max_message_bytes {
                return Err(StorageError::BatchTooLarge {
                    size_bytes: batch.len(),
                    limit_bytes: st.config.max_message_bytes,
                });
            }
            let control = if header.is_control() {
                Some(batch::marker(&batch)?)
            } else {
                None
            };
            if let Origin::Coordinator(verification) = origin {
                st.producers
                    .check_coordinator_append(&header, control, verification)?;
            } else if let (Origin::Client(verification), true) = (origin, header.has_producer_id())
            {
                if let AppendCheck::Duplicate(meta) =
                    st.producers.check_leader_append(&header, verification)?
                {
                    metrics::duplicate();
                    return Ok(AppendInfo {
                        base_offset: meta.first_offset,
                        last_offset: meta.last_offset,
                        log_append_time_ms: -1,
                        log_start_offset: st.log_start_offset,
                        duplicate: true,
                    });
                }
            }
            let now = self.clock.now_ms();
            let base_offset = st.log_end_offset;
            batch::set_base_offset(&mut head, base_offset);
            batch::set_partition_leader_epoch(&mut head, leader_epoch);
            let log_append_time_ms = if st.config.log_append_time {
                batch::set_log_append_time(&mut head, body, now);
                now
            } else {
                -1
            };
            let header = BatchHeader::parse(&head)?;
            let rolled_at = self.maybe_roll(&mut st, &header, now)?;
            if st.epochs.latest_epoch().is_none_or(|e| leader_epoch > e) {
                st.epochs.assign(leader_epoch, base_offset)?;
            }
            let interval = st.config.index_interval_bytes;
            let written = st
                .active_mut()
                .append(&[&head, body], &[(0, header)], interval, now);
            self.settle_write(&mut st, written)?;
            if let Err(e) = self.after_write(&mut st, &header, control, now) {
                // The batch is in the segment but the state did not take it in.
                return Err(self.block_appends(&mut st, e));
            }
            let info = AppendInfo {
                base_offset,
                last_offset: header.last_offset(),
                log_append_time_ms,
                log_start_offset: st.log_start_offset,
                duplicate: false,
            };
            (info, rolled_at, flush_due(&st), page_cache_advice(&mut st))
        };
        self.advise_page_cache(advice);
        self.flush_after_append(rolled_at, flush_due, info.last_offset + 1)?;
        Ok(info)
    }

    /// Appends batches fetched from the leader, keeping their offsets and epochs. The first
    /// batch must start at the log end offset (a gap is allowed only for compacted logs, whose
    /// leader may have removed whole batches) and offsets must increase.
    pub fn append_replicated(&self, batches: Bytes) -> Result<AppendInfo> {
        let headers = parse_record_set(&batches)?;
        let Some(&(_, first, _)) = headers.first() else {
            return Err(BatchError::NotExactlyOneBatch(0).into());
        };
        let (info, rolled_at, flush_due, advice) = {
            let mut st = self.lock_writable()?;
            let gaps_allowed = st.config.cleanup_policy.compacts();
            self.check_continuity(&st, &headers, gaps_allowed)?;
            let now = self.clock.now_ms();
            let mut rolled_at = None;
            let mut run_start = 0usize;
            let mut run: Vec<(usize, BatchHeader, Option<batch::Marker>)> = Vec::new();
            for &(pos, header, control) in &headers {
                let pending = (pos - run_start) as u64;
                let roll = self.roll_needed(&st, &header, now, pending);
                if roll {
                    self.write_run(&mut st, &batches, run_start, pos, &mut run, now)?;
                    run_start = pos;
                    rolled_at = Some(self.roll(&mut st, header.base_offset, now)?);
                }
                run.push((pos - run_start, header, control));
            }
            self.write_run(&mut st, &batches, run_start, batches.len(), &mut run, now)?;
            let last = headers.last().map_or(first, |(_, h, _)| *h);
            let info = AppendInfo {
                base_offset: first.base_offset,
                last_offset: last.last_offset(),
                log_append_time_ms: -1,
                log_start_offset: st.log_start_offset,
                duplicate: false,
            };
            (info, rolled_at, flush_due(&st), page_cache_advice(&mut st))
        };
        self.advise_page_cache(advice);
        self.flush_after_append(rolled_at, flush_due, info.last_offset + 1)?;
        Ok(info)
    }

    fn check_continuity(
        &self,
        st: &LogState,
        headers: &[(usize, BatchHeader, Option<batch::Marker>)],
        gaps_allowed: bool,
    ) -> Result<()> {
        let mut expected = st.log_end_offset;
        for (i, (_, h, _)) in headers.iter().enumerate() {
            let fits = if gaps_allowed {
                h.base_offset >= expected
            } else {
                h.base_offset == expected
            };
            if !fits {
                if i == 0 {
                    return Err(StorageError::NonContiguousAppend {
                        first_offset: h.base_offset,
                        log_end_offset: st.log_end_offset,
                    });
                }
                return Err(StorageError::NonMonotonicOffsets {
                    base_offset: h.base_offset,
                    previous_last_offset: expected - 1,
                });
            }
            expected = h.next_offset();
        }
        Ok(())
    }

    /// Writes `batches[from..to]` (the batches listed in `run`) to the active segment and
    /// applies them to the epoch cache and producer state.
    fn write_run(
        &self,
        st: &mut LogState,
        batches: &Bytes,
        from: usize,
        to: usize,
        run: &mut Vec<(usize, BatchHeader, Option<batch::Marker>)>,
        now: i64,
    ) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        // Fallible book-keeping that can precede the write does: a failure then leaves nothing
        // on disk the state does not know about.
        for (_, header, _) in run.iter() {
            let epoch = header.partition_leader_epoch;
            if epoch >= 0 && st.epochs.latest_epoch().is_none_or(|e| epoch > e) {
                st.epochs.assign(epoch, header.base_offset)?;
            }
        }
        let bytes = &batches[from..to];
        let interval = st.config.index_interval_bytes;
        let headers: Vec<(usize, BatchHeader)> = run.iter().map(|(p, h, _)| (*p, *h)).collect();
        let written = st.active_mut().append(&[bytes], &headers, interval, now);
        self.settle_write(st, written)?;
        for (_, header, control) in run.drain(..) {
            if let Err(e) = self.after_write(st, &header, control, now) {
                return Err(self.block_appends(st, e));
            }
        }
        Ok(())
    }

    /// Passes on a segment write's outcome, blocking appends if the segment could not be cut
    /// back to where the log thinks it ends.
    fn settle_write(&self, st: &mut LogState, written: Result<()>) -> Result<()> {
        match written {
            Err(e @ StorageError::AppendsBlocked { .. }) => Err(self.block_appends(st, e)),
            other => other,
        }
    }

    /// Book-keeping after a batch is in the active segment: producer state, aborted-transaction
    /// index, end offset and flush counters.
    fn after_write(
        &self,
        st: &mut LogState,
        header: &BatchHeader,
        control: Option<batch::Marker>,
        now: i64,
    ) -> Result<()> {
        if let Some(done) = st.producers.apply(header, control) {
            if done.aborted {
                let last_stable_offset = st.producers.last_stable_offset(&done);
                st.active_mut().txn_index_mut().append(AbortedTxn {
                    producer_id: done.producer_id,
                    first_offset: done.first_offset,
                    last_offset: done.last_offset,
                    last_stable_offset,
                })?;
            }
        }
        metrics::appended(header.total_len(), header.records_count);
        st.log_end_offset = header.next_offset();
        st.unflushed_records += u64::try_from(header.records_count).unwrap_or(0);
        st.oldest_unflushed_ms.get_or_insert(now);
        Ok(())
    }

    /// Whether `header`'s batch must start a new segment, given `pending_bytes` about to be
    /// written to the active segment before it.
    fn roll_needed(
        &self,
        st: &LogState,
        header: &BatchHeader,
        now: i64,
        pending_bytes: u64,
    ) -> bool {
        let active = st.active();
        // Offsets relative to the segment base must fit the indexes' 32 bits, even for the
        // first batch of an empty segment (a compacted follower may jump far ahead).
        if header.last_offset() - active.base_offset() > i64::from(i32::MAX) {
            return true;
        }
        let size = active.size_bytes() + pending_bytes;
        if size == 0 {
            return false;
        }
        let too_big = size + header.total_len() as u64 > st.config.segment_bytes;
        let too_old = active
            .roll_base_ms()
            .is_some_and(|t| now.saturating_sub(t) >= st.config.segment_ms);
        too_big || too_old
    }

    /// Rolls before a leader append if needed; returns the new segment's base offset.
    fn maybe_roll(&self, st: &mut LogState, header: &BatchHeader, now: i64) -> Result<Option<i64>> {
        if self.roll_needed(st, header, now, 0) {
            let base = st.log_end_offset;
            return self.roll(st, base, now).map(Some);
        }
        Ok(None)
    }

    /// Starts a new active segment at `base`: the old one's index entries are written and a
    /// producer-state snapshot is taken; the caller then syncs the old segment via
    /// [`Log::flush_after_append`].
    fn roll(&self, st: &mut LogState, base: i64, now: i64) -> Result<i64> {
        let old_base = st.active_base();
        st.active_mut().write_indexes()?;
        st.producers.take_snapshot()?;
        let segment = Segment::create(&self.dir, base, now)?;
        sync_dir(&self.dir)?;
        st.segments.insert(base, segment);
        st.open_old_segments.push_back(old_base);
        metrics::rolled();
        tracing::debug!(dir = %self.dir.display(), base, "rolled segment");
        Ok(base)
    }

    /// Gives the kernel an append's page-cache advice, outside the state lock: starting
    /// writeback can wait for the block layer, and readers must not wait for that.
    fn advise_page_cache(&self, work: Vec<(Arc<File>, Range<u64>)>) {
        for (file, range) in work {
            page_cache::uncache(&file, &self.dir, range);
        }
    }

    /// After an append: sync a just-rolled segment, and flush up to the append if
    /// `flush.messages` was reached by it.
    fn flush_after_append(
        &self,
        rolled_at: Option<i64>,
        flush_due: bool,
        next_offset: i64,
    ) -> Result<()> {
        if let Some(base) = rolled_at {
            self.sync_rolled_segment(base)?;
            self.flush_to(base)?;
        }
        if flush_due {
            self.flush_to(next_offset)?;
        }
        Ok(())
    }

    /// fsyncs everything appended so far.
    pub fn flush(&self) -> Result<()> {
        self.flush_to(i64::MAX)
    }

    /// Applies `flush.ms`: flushes if the oldest unflushed append is old enough. The broker
    /// calls this periodically.
    pub fn flush_if_due(&self) -> Result<bool> {
        let due = {
            let st = self.lock();
            let now = self.clock.now_ms();
            st.oldest_unflushed_ms
                .is_some_and(|t| now.saturating_sub(t) >= st.config.flush_ms)
        };
        if due {
            self.flush()?;
        }
        Ok(due)
    }

    /// Makes every offset below `target` (capped at the log end) durable. Concurrent callers
    /// queue on the flush lock; whoever gets it syncs everything appended so far, so the
    /// others usually return without a syscall (group commit).
    pub(super) fn flush_to(&self, target: i64) -> Result<()> {
        crate::blocking::debug_assert_may_block();
        let _flushing = self
            .flush_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (targets, end, truncations, counted) = {
            let mut st = self.lock_writable()?;
            let goal = target.min(st.log_end_offset);
            if st.recovery_point >= goal {
                return Ok(());
            }
            let targets = self.collect_sync_targets(&mut st)?;
            (
                targets,
                st.log_end_offset,
                st.truncations,
                st.unflushed_records,
            )
        };
        let started = std::time::Instant::now();
        if let Err(e) = sync_all(targets) {
            // After a failed fsync the kernel may drop the dirty pages and report success next
            // time: never retry into a recovery point that covers lost data.
            let mut st = self.lock();
            return Err(self.block_appends(&mut st, e));
        }
        metrics::flushed(started.elapsed());
        let mut st = self.lock();
        // Records appended while the fsync ran stay counted for the next flush.
        st.unflushed_records = st.unflushed_records.saturating_sub(counted);
        if st.unflushed_records == 0 {
            st.oldest_unflushed_ms = None;
        }
        if st.truncations == truncations {
            st.recovery_point = st.recovery_point.max(end);
        }
        st.close_excess_segments()
    }

    /// Makes a just-rolled segment wholly durable (data, indexes, aborted-transaction index,
    /// directory entries) whatever the recovery point says: from now on recovery trusts it.
    fn sync_rolled_segment(&self, new_base: i64) -> Result<()> {
        let targets = {
            let mut st = self.lock_writable()?;
            let Some((&base, segment)) = st.segments.range_mut(..new_base).next_back() else {
                return Ok(());
            };
            segment.write_indexes()?;
            let mut targets = Vec::new();
            if let Some(file) = segment.file() {
                targets.push(SyncTarget::File(file, segment.log_path()));
            }
            for ext in ["index", "timeindex", "txnindex"] {
                targets.push(SyncTarget::Path(segment_path(&self.dir, base, ext)));
            }
            targets
        };
        if let Err(e) = sync_all(targets).and_then(|()| sync_dir(&self.dir)) {
            let mut st = self.lock();
            return Err(self.block_appends(&mut st, e));
        }
        Ok(())
    }

    /// Files holding data at or above the recovery point: every such segment's log file, and
    /// the index files of those no longer active (indexes are trusted only below the recovery
    /// point; the active one's is rebuilt by recovery).
    fn collect_sync_targets(&self, st: &mut LogState) -> Result<Vec<SyncTarget>> {
        let from = st.floor_segment(st.recovery_point);
        let active_base = st.active_base();
        let mut targets = Vec::new();
        for (base, segment) in st.segments.range_mut(from..) {
            if segment.next_offset() <= st.recovery_point && *base != active_base {
                continue;
            }
            segment.write_indexes()?;
            if let Some(file) = segment.file() {
                targets.push(SyncTarget::File(file, segment.log_path()));
            }
            if *base != active_base {
                for ext in ["index", "timeindex", "txnindex"] {
                    targets.push(SyncTarget::Path(segment_path(&self.dir, *base, ext)));
                }
            }
        }
        Ok(targets)
    }
}

/// The drop-behind advice after an append (see [`crate::page_cache`]): the active segment's,
/// and the rolled tails of older segments that are now a whole window behind the log end.
fn page_cache_advice(st: &mut LogState) -> Vec<(Arc<File>, Range<u64>)> {
    let retain = st.config.page_cache_retain_bytes;
    let mut work = Vec::new();
    if retain == 0 {
        return work;
    }
    if let Some((file, advice)) = st.active_mut().page_cache_advice(retain) {
        for range in advice.write_back.into_iter().chain(advice.drop) {
            work.push((Arc::clone(&file), range));
        }
    }
    // Newest first; stops at the first segment finished before (so are all older ones, or
    // they were on disk before this log was opened and are left to the kernel).
    let active_base = st.active_base();
    let mut behind = st.active().size_bytes();
    let older = st.segments.range_mut(..active_base).rev();
    for (_, segment) in older.take(page_cache::WALK_SEGMENTS_MAX) {
        if behind >= retain && !segment.finish_page_cache(retain, &mut work) {
            break;
        }
        behind = behind.saturating_add(segment.size_bytes());
    }
    work
}

/// Whether `flush.messages` is reached. Decided under the same lock as the append that counted
/// the records: a flush running concurrently resets the counter before its fsync, so checking
/// later could skip the wait for records that fsync may not cover.
fn flush_due(st: &LogState) -> bool {
    st.unflushed_records >= u64::try_from(st.config.flush_messages).unwrap_or(u64::MAX)
}

/// Who hands a batch to a leader append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A producer, through Produce, with how its transactional batches are checked.
    Client(TxnVerification),
    /// A coordinator on this broker (transaction markers, transactional offset commits), with
    /// how its transactional batches are checked.
    Coordinator(TxnVerification),
}

/// Rules Kafka's `LogValidator` applies to batches from clients only.
fn check_client_batch(header: &BatchHeader) -> Result<()> {
    if header.is_control() {
        return Err(BatchError::ControlBatchFromClient.into());
    }
    if header.has_producer_id() && header.base_sequence < 0 {
        return Err(BatchError::MissingSequence.into());
    }
    Ok(())
}

/// fsyncs every target (a missing path is fine: an index never written).
fn sync_all(targets: Vec<SyncTarget>) -> Result<()> {
    for target in targets {
        match target {
            SyncTarget::File(file, path) => {
                crate::failure::before_fsync(&path)?;
                file.sync_data().map_err(|e| StorageError::io(&path, e))?
            }
            SyncTarget::Path(path) => match File::open(&path) {
                Ok(f) => f.sync_all().map_err(|e| StorageError::io(&path, e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&path, e)),
            },
        }
    }
    Ok(())
}

/// Splits a follower's record set into whole, valid batches (gaps inside compacted batches
/// allowed), with the marker type of each control batch. A partial trailing batch is an error:
/// the fetcher must hand over whole batches.
fn parse_record_set(bytes: &[u8]) -> Result<Vec<(usize, BatchHeader, Option<batch::Marker>)>> {
    let mut out = Vec::new();
    for step in batch::BatchIter::new(bytes) {
        match step {
            BatchStep::Batch { position, header } => {
                let batch_bytes = &bytes[position..position + header.total_len()];
                batch::validate(batch_bytes, OffsetGaps::Allowed)?;
                let control = if header.is_control() {
                    Some(batch::marker(batch_bytes)?)
                } else {
                    None
                };
                out.push((position, header, control));
            }
            BatchStep::Partial { position, .. } => {
                return Err(BatchError::TooShort {
                    len: bytes.len() - position,
                }
                .into())
            }
            BatchStep::Invalid { position } => {
                return Err(BatchError::LengthMismatch {
                    declared: -1,
                    available: bytes.len() - position,
                }
                .into())
            }
        }
    }
    Ok(out)
}
