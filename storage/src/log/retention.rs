//! Removing data: retention by time and size, DeleteRecords, and follower truncation.

use super::recovery::rebuild_producer_state;
use super::{Log, LogState};
use crate::checkpoint::sync_dir;
use crate::error::Result;
use crate::segment::Segment;

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes freed.
    pub bytes_deleted: u64,
}

impl Log {
    /// Deletes whole old segments (never the active one): those entirely below the log start
    /// offset, and, under a `delete` cleanup policy, those past `retention.ms` (by their newest
    /// timestamp) or beyond `retention.bytes`. Only a prefix of the log is ever deleted.
    pub fn enforce_retention(&self) -> Result<RetentionOutcome> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let mut outcome = RetentionOutcome::default();
        if st.retired {
            return Ok(outcome);
        }
        let mut total: u64 = st.segments.values().map(Segment::size_bytes).sum();
        let deletes = st.config.cleanup_policy.deletes();
        let retention_ms = st.config.retention_ms;
        let retention_bytes = st.config.retention_bytes;
        // Bounded by the number of segments: each pass removes the first one or stops.
        while st.segments.len() > 1 {
            let mut iter = st.segments.iter();
            let Some((&base, first)) = iter.next() else {
                break;
            };
            let next_base = iter.next().map_or(i64::MAX, |(b, _)| *b);
            let newest_ms = if first.max_timestamp_ms() >= 0 {
                first.max_timestamp_ms()
            } else {
                first.roll_base_ms().unwrap_or(now)
            };
            let below_start = next_base <= st.log_start_offset;
            let expired =
                deletes && retention_ms >= 0 && now.saturating_sub(newest_ms) > retention_ms;
            let oversized = deletes
                && retention_bytes >= 0
                && total.saturating_sub(first.size_bytes()) >= retention_bytes as u64;
            // Time and size limits never delete what followers may still fetch (Kafka's
            // `highWatermark >= nextSegment.baseOffset` guard).
            let replicated = st.high_watermark.is_none_or(|hw| next_base <= hw);
            if !(below_start || (replicated && (expired || oversized))) {
                break;
            }
            let freed = st.delete_segment(base)?;
            total -= freed;
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += freed;
        }
        if outcome.segments_deleted > 0 {
            crate::metrics::segments_deleted(outcome.segments_deleted);
            sync_dir(&self.dir)?;
            let first_base = st
                .segments
                .keys()
                .next()
                .copied()
                .unwrap_or(st.log_end_offset);
            if first_base > st.log_start_offset {
                st.log_start_offset = first_base;
                st.persist_log_start_offset(&self.dir)?;
                let start = st.log_start_offset;
                st.epochs.truncate_from_start(start)?;
            }
            st.producers.delete_snapshots_before(first_base)?;
        }
        Ok(outcome)
    }

    /// DeleteRecords: moves the log start offset up to `offset` durably and deletes segments
    /// that fall wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let mut st = self.lock_writable()?;
        if offset > st.log_end_offset || offset < 0 {
            return Err(st.out_of_range(offset));
        }
        if offset <= st.log_start_offset {
            return Ok(st.log_start_offset);
        }
        st.log_start_offset = offset;
        st.persist_log_start_offset(&self.dir)?;
        st.epochs.truncate_from_start(offset)?;
        drop(st);
        self.enforce_retention_below_start()?;
        Ok(offset)
    }

    fn enforce_retention_below_start(&self) -> Result<()> {
        let mut st = self.lock();
        if st.retired {
            return Ok(());
        }
        let mut deleted = false;
        while st.segments.len() > 1 {
            let mut iter = st.segments.keys();
            let (Some(&base), Some(&next)) = (iter.next(), iter.next()) else {
                break;
            };
            if next > st.log_start_offset {
                break;
            }
            st.delete_segment(base)?;
            crate::metrics::segments_deleted(1);
            deleted = true;
        }
        if deleted {
            sync_dir(&self.dir)?;
            let first_base = st.segments.keys().next().copied().unwrap_or(0);
            st.producers.delete_snapshots_before(first_base)?;
        }
        Ok(())
    }

    /// Follower truncation: removes every batch whose last offset is at or after `offset`.
    /// Producer state and the epoch cache follow; returns the new log end offset.
    pub fn truncate_to(&self, offset: i64) -> Result<i64> {
        let mut st = self.lock_writable()?;
        if offset >= st.log_end_offset {
            // Nothing to cut, but epochs recorded at the end with no data (a leader deposed
            // before its first append) go, as Kafka's truncateTo does: the batches that follow
            // will carry the real epochs.
            let end = st.log_end_offset;
            st.epochs.truncate_from_end(end)?;
            return Ok(end);
        }
        let first_base = st.segments.keys().next().copied().unwrap_or(0);
        if offset <= first_base || offset < st.log_start_offset {
            drop(st);
            self.truncate_fully_and_start_at(offset.max(0))?;
            return Ok(offset.max(0));
        }
        let doomed: Vec<i64> = st.segments.range(offset..).map(|(b, _)| *b).collect();
        for base in doomed {
            if let Some(segment) = st.segments.remove(&base) {
                st.open_old_segments.retain(|b| *b != base);
                segment.delete_files()?;
            }
        }
        let interval = st.config.index_interval_bytes;
        // The segment that becomes active may have been closed; appends need it open.
        st.active_mut().ensure_open(interval)?;
        let new_end = st.active_mut().truncate_to(offset, interval)?;
        let active_base = st.active_base();
        st.open_old_segments.retain(|b| *b != active_base);
        if new_end < st.log_start_offset {
            // The cut batch also held the log start: nothing readable is left, so restart
            // empty at the log start rather than leave an end below the start.
            let start = st.log_start_offset;
            drop(st);
            self.truncate_fully_and_start_at(start)?;
            return Ok(start);
        }
        self.after_truncation(&mut st, new_end)?;
        sync_dir(&self.dir)?;
        Ok(new_end)
    }

    /// Deletes everything and restarts the log empty at `offset` (a follower whose leader's log
    /// starts past its own end).
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<()> {
        let now = self.clock.now_ms();
        let mut st = self.lock_writable()?;
        // The new segment goes in before the old ones go, so the map is never empty (every
        // operation relies on an active segment) even if a deletion fails half way.
        let fresh = match Segment::create(&self.dir, offset, now) {
            Ok(s) => s,
            Err(e) => return Err(self.block_appends(&mut st, e)),
        };
        // A segment that had this base offset had its files reused (cut to zero) by `create`.
        let _ = st.segments.insert(offset, fresh);
        st.open_old_segments.clear();
        let doomed: Vec<i64> = st
            .segments
            .keys()
            .copied()
            .filter(|b| *b != offset)
            .collect();
        for base in doomed {
            if let Some(segment) = st.segments.remove(&base) {
                if let Err(e) = segment.delete_files() {
                    return Err(self.block_appends(&mut st, e));
                }
            }
        }
        st.log_start_offset = offset;
        st.persist_log_start_offset(&self.dir)?;
        // Every snapshot describes the discarded log; replay must not reload one.
        st.producers.truncate_fully_and_start_at(offset)?;
        self.after_truncation(&mut st, offset)?;
        st.epochs.truncate_from_start(offset)?;
        sync_dir(&self.dir)
    }

    fn after_truncation(&self, st: &mut LogState, new_end: i64) -> Result<()> {
        st.log_end_offset = new_end;
        st.recovery_point = st.recovery_point.min(new_end);
        st.truncations += 1;
        st.epochs.truncate_from_end(new_end)?;
        rebuild_producer_state(st, None)
    }
}
