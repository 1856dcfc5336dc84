//! Reads: fetch by offset, lookup by timestamp, and aborted transactions of a fetch range.

use std::fs::File;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::{Log, LogState};
use crate::batch::BatchHeader;
use crate::error::{Result, StorageError};
use crate::segment::{self, RangeRead, RangeRequest, ScanEnd};
use crate::txn_index::AbortedTxn;

/// Times a read is retried when a truncation raced with it.
const READ_ATTEMPTS_MAX: usize = 3;

/// What a fetch read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole record batches, possibly empty.
    pub records: Bytes,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Log end offset at the time of the read.
    pub log_end_offset: i64,
}

/// A read planned under the lock and carried out without it.
struct Plan {
    file: Arc<File>,
    path: PathBuf,
    from: u64,
    end: u64,
    next_segment: Option<i64>,
    truncations: u64,
    verify_crc: bool,
    uncache_before: u64,
}

impl Log {
    /// Reads whole batches from the one containing `start_offset`, never past `upper_bound`
    /// (exclusive; the high watermark or last stable offset), up to `max_bytes` but always at
    /// least one batch if one is readable. Every returned batch passed its CRC check.
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<ReadResult> {
        for _ in 0..READ_ATTEMPTS_MAX {
            if let Some(result) = self.try_read(start_offset, max_bytes, upper_bound)? {
                return Ok(result);
            }
        }
        // Truncations kept racing with us; an empty answer is correct and the client retries.
        let st = self.lock();
        Ok(self.empty(&st))
    }

    fn empty(&self, st: &LogState) -> ReadResult {
        ReadResult {
            records: Bytes::new(),
            log_start_offset: st.log_start_offset,
            log_end_offset: st.log_end_offset,
        }
    }

    /// One attempt; `None` if a truncation happened while reading.
    fn try_read(
        &self,
        start: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<Option<ReadResult>> {
        let mut segment_base = {
            let st = self.lock();
            if start < st.log_start_offset || start > st.log_end_offset {
                return Err(st.out_of_range(start));
            }
            if start >= upper_bound.min(st.log_end_offset) {
                return Ok(Some(self.empty(&st)));
            }
            st.floor_segment(start)
        };
        // Bounded by the number of segments: each step moves to a later one.
        loop {
            let plan = self.plan_read(segment_base, start)?;
            let outcome = segment::read_range(RangeRequest {
                file: &plan.file,
                path: &plan.path,
                from: plan.from,
                end: plan.end,
                start_offset: start,
                upper_bound,
                max_bytes,
                verify_crc: plan.verify_crc,
                uncache_before: plan.uncache_before,
            });
            let st = self.lock();
            if st.truncations != plan.truncations {
                // The file changed under the read (a short read or rewritten bytes are then
                // expected, not corruption): plan again.
                return Ok(None);
            }
            let outcome = outcome.inspect_err(|e| {
                if matches!(e, StorageError::CorruptLog { .. }) {
                    crate::metrics::corrupt_read();
                }
            })?;
            match outcome {
                RangeRead::Batches(records) => {
                    return Ok(Some(ReadResult {
                        records,
                        log_start_offset: st.log_start_offset,
                        log_end_offset: st.log_end_offset,
                    }))
                }
                RangeRead::Bounded => return Ok(Some(self.empty(&st))),
                RangeRead::PastEnd => match plan.next_segment {
                    Some(next) => segment_base = next,
                    None => return Ok(Some(self.empty(&st))),
                },
            }
        }
    }

    fn plan_read(&self, base: i64, start: i64) -> Result<Plan> {
        let mut st = self.lock();
        st.open_segment(base)?;
        let next_segment = st.segments.range(base + 1..).next().map(|(b, _)| *b);
        let segment = st.segments.get(&base).ok_or(st.out_of_range(start))?;
        let path = segment.log_path();
        let file = segment
            .file()
            .ok_or_else(|| StorageError::io(&path, std::io::ErrorKind::NotFound.into()))?;
        // Bytes more than `page_cache_retain_bytes` behind the log end lie before this. The
        // later segments are summed only while they could hold the window, and at most
        // `WALK_SEGMENTS_MAX` of them (an undercount only means fewer bytes dropped).
        let retain = st.config.page_cache_retain_bytes;
        let uncache_before = if retain == 0 {
            0
        } else {
            let mut later = 0u64;
            let later_segments = st.segments.range(base + 1..);
            for (_, s) in later_segments.take(crate::page_cache::WALK_SEGMENTS_MAX) {
                later = later.saturating_add(s.size_bytes());
                if later >= retain {
                    break;
                }
            }
            (segment.size_bytes() + later).saturating_sub(retain)
        };
        Ok(Plan {
            file,
            uncache_before,
            from: segment.lookup_position(start),
            end: segment.size_bytes(),
            path,
            next_segment,
            truncations: st.truncations,
            verify_crc: st.config.verify_crc_on_read,
        })
    }

    /// ListOffsets by timestamp: the first record at or after `log_start_offset` whose
    /// timestamp is at least `timestamp_ms`, as `(offset, timestamp)`; `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        let candidates: Vec<i64> = {
            let st = self.lock();
            st.segments
                .values()
                .filter(|s| {
                    s.max_timestamp_ms() >= timestamp_ms && s.next_offset() > st.log_start_offset
                })
                .map(|s| s.base_offset())
                .collect()
        };
        for base in candidates {
            let (file, path, from, end, log_start) = {
                let mut st = self.lock();
                if st.open_segment(base).is_err() {
                    continue; // deleted by retention meanwhile
                }
                let Some(s) = st.segments.get(&base) else {
                    continue;
                };
                let path = s.log_path();
                let Some(file) = s.file() else { continue };
                (
                    file,
                    path,
                    s.lookup_time_position(timestamp_ms),
                    s.size_bytes(),
                    st.log_start_offset,
                )
            };
            let found = find_batch(&file, &path, from, end, |h| {
                h.max_timestamp >= timestamp_ms && h.last_offset() >= log_start
            })?;
            if let Some((header, bytes)) = found {
                let limit = self.decompressed_limit();
                return first_record_at_or_after(&header, bytes, timestamp_ms, log_start, limit)
                    .map(Some);
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: the offset and timestamp of the record with the largest
    /// timestamp (the first such record), `None` for an empty log.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>> {
        let (file, path, from, end, batch_offset, max_ts) = {
            let mut st = self.lock();
            let log_start = st.log_start_offset;
            let Some(best) = st
                .segments
                .values()
                .filter(|s| s.next_offset() > log_start && s.max_timestamp_ms() >= 0)
                .max_by_key(|s| (s.max_timestamp_ms(), std::cmp::Reverse(s.base_offset())))
                .map(|s| s.base_offset())
            else {
                return Ok(None);
            };
            st.open_segment(best)?;
            let Some(s) = st.segments.get(&best) else {
                return Ok(None);
            };
            let path = s.log_path();
            let Some(file) = s.file() else {
                return Ok(None);
            };
            let batch_offset = s.max_timestamp_batch_offset();
            (
                file,
                path,
                s.lookup_position(batch_offset),
                s.size_bytes(),
                batch_offset,
                s.max_timestamp_ms(),
            )
        };
        let found = find_batch(&file, &path, from, end, |h| h.base_offset >= batch_offset)?;
        match found {
            Some((header, bytes)) => {
                let limit = self.decompressed_limit();
                first_record_at_or_after(&header, bytes, max_ts, header.base_offset, limit)
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    /// How many bytes one of this log's batches may decompress to when it must be looked into.
    pub(crate) fn decompressed_limit(&self) -> usize {
        crate::decompress::limit_for(self.lock().config.max_message_bytes)
    }

    /// Aborted transactions that overlap `[start_offset, upper_offset)`, for read_committed
    /// fetches.
    pub fn aborted_transactions(&self, start_offset: i64, upper_offset: i64) -> Vec<AbortedTxn> {
        let st = self.lock();
        let from = st.floor_segment(start_offset);
        let mut out = Vec::new();
        // An abort's entry lives in the segment holding its marker, which may lie past
        // `upper_offset`; walk on until an entry's last stable offset shows nothing later can
        // overlap the range (Kafka's `collectAbortedTransactions`).
        for (_, segment) in st.segments.range(from..) {
            if segment
                .txn_index()
                .collect(start_offset, upper_offset, &mut out)
            {
                break;
            }
        }
        out
    }
}

/// Scans from `from` for the first batch matching `wanted`; returns its header and bytes.
fn find_batch(
    file: &File,
    path: &std::path::Path,
    from: u64,
    end: u64,
    wanted: impl Fn(&BatchHeader) -> bool,
) -> Result<Option<(BatchHeader, Bytes)>> {
    let mut found = None;
    let scan_end = segment::scan(file, path, from, end, |_, bytes, header| {
        if wanted(&header) {
            found = Some((header, Bytes::copy_from_slice(bytes)));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if let (None, ScanEnd::Invalid(position, reason)) = (&found, scan_end) {
        return Err(StorageError::CorruptLog {
            path: path.to_path_buf(),
            position,
            reason,
        });
    }
    Ok(found)
}

/// Within one batch, the first record at or after `min_offset` with a timestamp of at least
/// `timestamp_ms` (records of a CreateTime batch need not be in timestamp order).
fn first_record_at_or_after(
    header: &BatchHeader,
    bytes: Bytes,
    timestamp_ms: i64,
    min_offset: i64,
    decompressed_limit: usize,
) -> Result<(i64, i64)> {
    if header.is_log_append_time() {
        return Ok((header.base_offset.max(min_offset), header.max_timestamp));
    }
    let mut buf = bytes;
    let set = crate::decompress::decode_batch(&mut buf, decompressed_limit).map_err(|e| {
        StorageError::RecordCodec {
            offset: header.base_offset,
            message: e.to_string(),
        }
    })?;
    set.records
        .iter()
        .find(|r| r.offset >= min_offset && r.timestamp >= timestamp_ms)
        .map(|r| (r.offset, r.timestamp))
        .ok_or(StorageError::RecordCodec {
            offset: header.base_offset,
            message: "batch max timestamp not matched by any record".to_owned(),
        })
}
