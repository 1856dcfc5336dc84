//! One segment of a partition log: the `.log` file of record batches plus its indexes, with
//! append, byte-range reads, scans, truncation and recovery of a damaged tail.
//!
//! A segment is either open (file handle and indexes in memory) or closed (a few numbers only);
//! the log opens old segments lazily and closes them again past `open.segments.max`.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, IoSlice, Write};
use std::ops::{ControlFlow, Range};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader, BatchStep, OffsetGaps, BATCH_HEADER_LEN, LOG_OVERHEAD};
use crate::error::{BatchError, Result, StorageError};
use crate::index::{OffsetIndex, TimeIndex};
use crate::page_cache::{self, Advice, DropBehind};
use crate::txn_index::TxnIndex;

/// Bytes read per step when scanning a segment (recovery, index rebuild, timestamp search).
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;
/// Bytes of headers read per step while looking for the first batch of a fetch.
const LOCATE_WINDOW_BYTES: usize = 16 * 1024;

/// File name of a segment file: `<base_offset:020>.<ext>`.
pub fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Parses `<20 digits>.<ext>` back into the base offset.
pub fn parse_file_name(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

#[derive(Debug)]
struct OpenState {
    file: Arc<File>,
    index: OffsetIndex,
    time_index: TimeIndex,
}

/// One segment. Offsets inside it are `base_offset..next_offset`.
#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    dir: PathBuf,
    size_bytes: u64,
    next_offset: i64,
    max_timestamp_ms: i64,
    /// Base offset of the batch holding `max_timestamp_ms`.
    max_timestamp_batch_offset: i64,
    /// Timestamp that `segment.ms` counts from (first batch's, or when it was created).
    roll_base_ms: Option<i64>,
    bytes_since_index: u64,
    open: Option<OpenState>,
    txn_index: TxnIndex,
    drop_behind: DropBehind,
}

/// Where a batch lies, as found by a scan.
#[derive(Debug, Clone, Copy)]
pub struct Located {
    /// Byte position in the segment.
    pub position: u64,
    /// The batch header.
    pub header: BatchHeader,
}

/// How a scan of the segment file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte up to this position is whole batches; the callback never stopped the scan.
    Complete(u64),
    /// The callback stopped at the batch at this position.
    Stopped(u64),
    /// Bytes at this position are not a whole, well-formed batch.
    Invalid(u64, BatchError),
}

impl Segment {
    /// Creates an empty segment at `base_offset` (files are created or cut to zero).
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment> {
        let log_path = dir.join(file_name(base_offset, "log"));
        // Append mode: data is only ever added at the end (truncation uses set_len).
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .and_then(|f| f.set_len(0).map(|()| f))
            .map_err(|e| StorageError::io(&log_path, e))?;
        let (index, time_index) = empty_indexes(dir, base_offset)?;
        let mut segment = Segment::unloaded(dir, base_offset)?;
        segment.txn_index.reset()?;
        segment.roll_base_ms = Some(now_ms);
        segment.open = Some(OpenState {
            file: Arc::new(file),
            index,
            time_index,
        });
        Ok(segment)
    }

    /// Loads an existing segment whose indexes are trusted if sane (rebuilt otherwise) and whose
    /// tail past the last index entry is scanned to find the next offset. Leaves it open.
    pub fn load(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> Result<Segment> {
        let mut segment = Segment::unloaded(dir, base_offset)?;
        segment.size_bytes = file_len(&segment.log_path())?;
        segment.drop_behind = DropBehind::starting_at(segment.size_bytes);
        segment.ensure_open(index_interval_bytes)?;
        segment.refresh_tail_stats()?;
        Ok(segment)
    }

    /// A segment not yet loaded: call [`Segment::recover`] or [`Segment::delete_files`] next.
    pub fn unloaded(dir: &Path, base_offset: i64) -> Result<Segment> {
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            size_bytes: 0,
            next_offset: base_offset,
            max_timestamp_ms: -1,
            max_timestamp_batch_offset: base_offset,
            roll_base_ms: None,
            bytes_since_index: 0,
            open: None,
            txn_index: TxnIndex::open(dir.join(file_name(base_offset, "txnindex")))?,
            drop_behind: DropBehind::default(),
        })
    }

    /// Rescans the whole file: validates every batch (length, magic, CRC, offsets increasing
    /// within `[base_offset, ..)`), rebuilds the offset and time indexes, and cuts the file at
    /// the first invalid byte. Returns the number of bytes cut.
    ///
    /// The aborted-transaction index cannot be rebuilt from the segment alone (it needs producer
    /// state): with `reset_txn_index` it is emptied for the caller to rebuild by replay,
    /// otherwise only entries past the cut are dropped.
    pub fn recover(&mut self, index_interval_bytes: u64, reset_txn_index: bool) -> Result<u64> {
        let log_path = self.log_path();
        self.size_bytes = file_len(&log_path)?;
        self.drop_behind = DropBehind::starting_at(self.size_bytes);
        let file = self.open_file()?;
        let (mut index, mut time_index) = empty_indexes(&self.dir, self.base_offset)?;
        if reset_txn_index {
            self.txn_index.reset()?;
        }
        self.next_offset = self.base_offset;
        self.max_timestamp_ms = -1;
        self.max_timestamp_batch_offset = self.base_offset;
        self.roll_base_ms = None;
        self.bytes_since_index = 0;

        let base = self.base_offset;
        let mut expected_min = base;
        let mut stats = TailStats::default();
        let end = scan(
            &file,
            &log_path,
            0,
            self.size_bytes,
            |position, bytes, header| {
                let header_ok = batch::validate(bytes, OffsetGaps::Allowed).is_ok()
                    && header.base_offset >= expected_min
                    && header.last_offset() - base <= i64::from(i32::MAX);
                if !header_ok {
                    return ControlFlow::Break(());
                }
                expected_min = header.next_offset();
                stats.observe(
                    &mut index,
                    &mut time_index,
                    position,
                    &header,
                    index_interval_bytes,
                );
                ControlFlow::Continue(())
            },
        )?;
        let valid_end = match end {
            ScanEnd::Complete(p) | ScanEnd::Stopped(p) | ScanEnd::Invalid(p, _) => p,
        };
        let cut = self.size_bytes - valid_end;
        if cut > 0 {
            file.set_len(valid_end)
                .map_err(|e| StorageError::io(&log_path, e))?;
            self.size_bytes = valid_end;
            self.drop_behind.truncated(valid_end);
        }
        stats.apply(self);
        let next_offset = self.next_offset;
        self.txn_index.truncate_to(next_offset)?;
        self.open = Some(OpenState {
            file,
            index,
            time_index,
        });
        Ok(cut)
    }

    /// Appends whole, validated batches given as consecutive byte slices `parts` (one writev);
    /// `batches` lists each batch's position within the concatenated parts and its final
    /// header (offsets already assigned).
    pub fn append(
        &mut self,
        parts: &[&[u8]],
        batches: &[(usize, BatchHeader)],
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<()> {
        let log_path = self.log_path();
        let start = self.size_bytes;
        let mut stats = TailStats::from_segment(self);
        let Some(open) = self.open.as_mut() else {
            return Err(StorageError::io(&log_path, ErrorKind::NotConnected.into()));
        };
        let written = match write_all_vectored(&open.file, parts) {
            Ok(n) => n,
            Err(e) => {
                // Part of the batch may be in the file: cut it off so the next append (the file
                // is in append mode) starts where the log thinks the segment ends.
                if let Err(cut) = open.file.set_len(start) {
                    tracing::error!(segment = %log_path.display(), error = %cut, "cannot cut a failed append back");
                    return Err(StorageError::AppendsBlocked {
                        dir: self.dir.clone(),
                    });
                }
                return Err(StorageError::io(&log_path, e));
            }
        };
        for (pos, header) in batches {
            stats.observe(
                &mut open.index,
                &mut open.time_index,
                start + *pos as u64,
                header,
                index_interval_bytes,
            );
        }
        stats.apply(self);
        self.size_bytes = start + written;
        if self.roll_base_ms.is_none() {
            self.roll_base_ms = Some(now_ms);
        }
        Ok(())
    }

    /// Base offset.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset after the last batch (the base offset if empty).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes of whole batches.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Largest timestamp seen (-1 if none).
    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }

    /// Base offset of the batch holding the largest timestamp.
    pub fn max_timestamp_batch_offset(&self) -> i64 {
        self.max_timestamp_batch_offset
    }

    /// When `segment.ms` started counting for this segment.
    pub fn roll_base_ms(&self) -> Option<i64> {
        self.roll_base_ms
    }

    /// The aborted-transaction index.
    pub fn txn_index(&self) -> &TxnIndex {
        &self.txn_index
    }

    /// The aborted-transaction index, mutably.
    pub fn txn_index_mut(&mut self) -> &mut TxnIndex {
        &mut self.txn_index
    }

    /// Whether file handle and indexes are loaded.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Path of the `.log` file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(file_name(self.base_offset, "log"))
    }

    /// Opens the file and loads (or rebuilds) the indexes if not yet open.
    pub fn ensure_open(&mut self, index_interval_bytes: u64) -> Result<()> {
        if self.open.is_some() {
            return Ok(());
        }
        let file = self.open_file()?;
        let index_path = self.dir.join(file_name(self.base_offset, "index"));
        let time_path = self.dir.join(file_name(self.base_offset, "timeindex"));
        let index = OffsetIndex::load(index_path, self.base_offset, self.size_bytes.max(1))?;
        // The time index is checked against the offsets the segment can hold; the exact next
        // offset may not be known yet on first load.
        let time_bound = if self.next_offset > self.base_offset {
            self.next_offset
        } else {
            i64::MAX
        };
        let time_index = TimeIndex::load(time_path, self.base_offset, time_bound)?;
        match (index, time_index) {
            (Some(index), Some(time_index)) => {
                self.open = Some(OpenState {
                    file,
                    index,
                    time_index,
                });
            }
            _ => {
                tracing::info!(segment = %self.log_path().display(), "rebuilding index");
                self.rebuild_indexes(file, index_interval_bytes)?;
            }
        }
        Ok(())
    }

    /// Rebuilds the offset and time indexes of a segment whose data is trusted (below the
    /// recovery point) from batch lengths alone: nothing is validated or cut here, so damage
    /// found later is reported by reads (CRC) instead of silently removing data.
    pub fn rebuild_indexes(&mut self, file: Arc<File>, index_interval_bytes: u64) -> Result<()> {
        let log_path = self.log_path();
        let (mut index, mut time_index) = empty_indexes(&self.dir, self.base_offset)?;
        self.max_timestamp_ms = -1;
        self.bytes_since_index = 0;
        let mut stats = TailStats::from_segment(self);
        let end = scan(
            &file,
            &log_path,
            0,
            self.size_bytes,
            |position, _, header| {
                stats.observe(
                    &mut index,
                    &mut time_index,
                    position,
                    &header,
                    index_interval_bytes,
                );
                ControlFlow::Continue(())
            },
        )?;
        if let ScanEnd::Invalid(position, reason) = end {
            tracing::error!(segment = %log_path.display(), position, %reason, "damaged batch in a segment below the recovery point; reads will report it");
        }
        stats.apply(self);
        self.open = Some(OpenState {
            file,
            index,
            time_index,
        });
        Ok(())
    }

    /// Loads a segment below the recovery point whose tail does not parse: its indexes are
    /// rebuilt up to the damage, which stays in place for reads to report.
    pub fn load_damaged(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
    ) -> Result<Segment> {
        let mut segment = Segment::unloaded(dir, base_offset)?;
        segment.size_bytes = file_len(&segment.log_path())?;
        segment.drop_behind = DropBehind::starting_at(segment.size_bytes);
        let file = segment.open_file()?;
        segment.rebuild_indexes(file, index_interval_bytes)?;
        Ok(segment)
    }

    /// Writes pending index entries and drops the file handle and in-memory indexes.
    pub fn close(&mut self) -> Result<()> {
        if let Some(mut open) = self.open.take() {
            open.index.write_pending()?;
            open.time_index.write_pending()?;
        }
        Ok(())
    }

    /// The open file handle (segment must be open).
    pub fn file(&self) -> Option<Arc<File>> {
        self.open.as_ref().map(|o| Arc::clone(&o.file))
    }

    /// The page-cache advice due after an append, keeping the newest `retain` bytes cached (see
    /// [`crate::page_cache`]), with the file to give it for; run it outside the log's lock.
    pub fn page_cache_advice(&mut self, retain: u64) -> Option<(Arc<File>, Advice)> {
        let file = self.file()?;
        let advice = self.drop_behind.after_append(self.size_bytes, retain)?;
        Some((file, advice))
    }

    /// Once this segment is no longer active and lies wholly a window behind the log end:
    /// adds the range of it still to drop from the page cache to `work` (if it is open) and
    /// returns true, or returns false if that was done before.
    pub fn finish_page_cache(
        &mut self,
        retain: u64,
        work: &mut Vec<(Arc<File>, Range<u64>)>,
    ) -> bool {
        let Some(range) = self.drop_behind.finish(self.size_bytes, retain) else {
            return false;
        };
        if let Some(file) = self.file() {
            work.push((file, range));
        }
        true
    }

    /// Position from which a search for `offset` may start (segment must be open).
    pub fn lookup_position(&self, offset: i64) -> u64 {
        self.open
            .as_ref()
            .map_or(0, |o| u64::from(o.index.lookup(offset).position))
    }

    /// Position from which a search for the first record at or after `timestamp_ms` may start.
    pub fn lookup_time_position(&self, timestamp_ms: i64) -> u64 {
        let Some(open) = self.open.as_ref() else {
            return 0;
        };
        match open.time_index.lookup_before(timestamp_ms) {
            Some(entry) => u64::from(open.index.lookup(entry.offset).position),
            None => 0,
        }
    }

    /// Writes pending index entries and fsyncs the log and index files.
    pub fn sync(&mut self) -> Result<()> {
        let log_path = self.log_path();
        if let Some(open) = self.open.as_mut() {
            open.index.write_pending()?;
            open.time_index.write_pending()?;
            open.file
                .sync_data()
                .map_err(|e| StorageError::io(&log_path, e))?;
            open.index.sync()?;
            open.time_index.sync()?;
        }
        self.txn_index.sync()
    }

    /// Writes pending index entries without syncing.
    pub fn write_indexes(&mut self) -> Result<()> {
        if let Some(open) = self.open.as_mut() {
            open.index.write_pending()?;
            open.time_index.write_pending()?;
        }
        Ok(())
    }

    /// Removes every batch whose last offset is at or after `offset`. Returns the new next offset.
    pub fn truncate_to(&mut self, offset: i64, index_interval_bytes: u64) -> Result<i64> {
        if offset >= self.next_offset {
            return Ok(self.next_offset);
        }
        self.ensure_open(index_interval_bytes)?;
        let log_path = self.log_path();
        let file = self
            .file()
            .ok_or_else(|| StorageError::io(&log_path, ErrorKind::NotFound.into()))?;
        let from = self.lookup_position(offset);
        let mut cut_at: Option<Located> = None;
        scan(
            &file,
            &log_path,
            from,
            self.size_bytes,
            |position, _, header| {
                if header.last_offset() >= offset {
                    cut_at = Some(Located { position, header });
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            },
        )?;
        let Some(cut) = cut_at else {
            return Ok(self.next_offset);
        };
        file.set_len(cut.position)
            .map_err(|e| StorageError::io(&log_path, e))?;
        self.size_bytes = cut.position;
        self.drop_behind.truncated(cut.position);
        let new_next = offset.min(cut.header.base_offset);
        if let Some(open) = self.open.as_mut() {
            open.index.truncate_to(new_next)?;
            open.time_index.truncate_to(new_next)?;
        }
        self.txn_index.truncate_to(new_next)?;
        self.refresh_tail_stats()?;
        // Offsets between the last kept batch and `new_next` can only be a compaction gap.
        self.next_offset = new_next;
        Ok(self.next_offset)
    }

    /// Deletes every file of the segment.
    pub fn delete_files(mut self) -> Result<()> {
        self.open = None;
        for ext in ["log", "index", "timeindex", "txnindex"] {
            let path = self.dir.join(file_name(self.base_offset, ext));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&path, e)),
            }
        }
        Ok(())
    }

    /// The partition directory holding the segment.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_file(&self) -> Result<Arc<File>> {
        let path = self.log_path();
        OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map(Arc::new)
            .map_err(|e| StorageError::io(&path, e))
    }

    /// Recomputes next offset, max timestamp and index spacing by scanning from the last time
    /// index entry (or the last offset index entry) to the end of the file.
    fn refresh_tail_stats(&mut self) -> Result<()> {
        let log_path = self.log_path();
        let Some(open) = self.open.as_ref() else {
            return Ok(());
        };
        let file = Arc::clone(&open.file);
        let mut stats = TailStats::default();
        let mut from = 0;
        if let Some(t) = open.time_index.last() {
            stats.max_timestamp_ms = t.timestamp_ms;
            stats.max_timestamp_batch_offset = t.offset;
            from = u64::from(open.index.lookup(t.offset).position);
        }
        if let Some(last) = open.index.last() {
            from = from.max(u64::from(last.position));
        }
        let mut next = self.base_offset;
        let mut first_ts = None;
        let mut since_index = 0u64;
        let end = scan(
            &file,
            &log_path,
            from,
            self.size_bytes,
            |position, _, header| {
                if position == 0 {
                    first_ts = Some(header.max_timestamp);
                }
                next = header.next_offset();
                since_index += header.total_len() as u64;
                if header.max_timestamp > stats.max_timestamp_ms {
                    stats.max_timestamp_ms = header.max_timestamp;
                    stats.max_timestamp_batch_offset = header.base_offset;
                }
                ControlFlow::Continue(())
            },
        )?;
        if let ScanEnd::Invalid(position, reason) = end {
            return Err(StorageError::CorruptLog {
                path: log_path,
                position,
                reason,
            });
        }
        self.next_offset = next.max(self.base_offset);
        self.max_timestamp_ms = stats.max_timestamp_ms;
        self.max_timestamp_batch_offset = stats.max_timestamp_batch_offset;
        self.bytes_since_index = since_index;
        if self.roll_base_ms.is_none() {
            self.roll_base_ms = first_ts;
        }
        Ok(())
    }
}

/// Running figures while batches are added to a segment.
#[derive(Debug)]
struct TailStats {
    next_offset: Option<i64>,
    max_timestamp_ms: i64,
    max_timestamp_batch_offset: i64,
    bytes_since_index: u64,
    first_timestamp_ms: Option<i64>,
}

impl Default for TailStats {
    fn default() -> Self {
        TailStats {
            next_offset: None,
            max_timestamp_ms: -1,
            max_timestamp_batch_offset: 0,
            bytes_since_index: 0,
            first_timestamp_ms: None,
        }
    }
}

impl TailStats {
    fn from_segment(s: &Segment) -> Self {
        TailStats {
            next_offset: None,
            max_timestamp_ms: s.max_timestamp_ms,
            max_timestamp_batch_offset: s.max_timestamp_batch_offset,
            bytes_since_index: s.bytes_since_index,
            first_timestamp_ms: None,
        }
    }

    /// Accounts for one batch at `position`, adding index entries every `interval` bytes.
    fn observe(
        &mut self,
        index: &mut OffsetIndex,
        time_index: &mut TimeIndex,
        position: u64,
        header: &BatchHeader,
        interval: u64,
    ) {
        if self.first_timestamp_ms.is_none() && position == 0 {
            self.first_timestamp_ms = Some(header.max_timestamp);
        }
        if header.max_timestamp > self.max_timestamp_ms
            || self.next_offset.is_none() && self.max_timestamp_ms < 0
        {
            self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp);
            self.max_timestamp_batch_offset = header.base_offset;
        }
        if self.bytes_since_index >= interval {
            index.push(header.base_offset, position as u32);
            time_index.maybe_push(self.max_timestamp_ms, self.max_timestamp_batch_offset);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_len() as u64;
        self.next_offset = Some(header.next_offset());
    }

    fn apply(self, s: &mut Segment) {
        if let Some(next) = self.next_offset {
            s.next_offset = next;
        }
        s.max_timestamp_ms = self.max_timestamp_ms;
        s.max_timestamp_batch_offset = self.max_timestamp_batch_offset;
        s.bytes_since_index = self.bytes_since_index;
        if s.roll_base_ms.is_none() {
            s.roll_base_ms = self.first_timestamp_ms;
        }
    }
}

/// Writes all of `parts` at the end of the append-mode `file`, retrying short writes.
fn write_all_vectored(mut file: &File, parts: &[&[u8]]) -> std::io::Result<u64> {
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut remaining: &mut [IoSlice<'_>] = &mut slices;
    let mut written = 0u64;
    // Each round writes at least one byte or fails, so this ends.
    while !remaining.is_empty() {
        let n = file.write_vectored(remaining)?;
        if n == 0 {
            return Err(ErrorKind::WriteZero.into());
        }
        written += n as u64;
        IoSlice::advance_slices(&mut remaining, n);
    }
    Ok(written)
}

/// Fresh, empty offset and time indexes for the segment at `base_offset` (files cut to zero).
fn empty_indexes(dir: &Path, base_offset: i64) -> Result<(OffsetIndex, TimeIndex)> {
    Ok((
        OffsetIndex::create(dir.join(file_name(base_offset, "index")), base_offset)?,
        TimeIndex::create(dir.join(file_name(base_offset, "timeindex")), base_offset)?,
    ))
}

fn file_len(path: &Path) -> Result<u64> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| StorageError::io(path, e))
}

/// Reads exactly `len` bytes at `position` into a new buffer.
fn read_at(file: &File, path: &Path, position: u64, len: usize) -> Result<BytesMut> {
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, position)
        .map_err(|e| StorageError::io(path, e))?;
    Ok(buf)
}

/// Walks the whole batches of `file` between `from` and `end`, reading `SCAN_CHUNK_BYTES` at a
/// time (a batch larger than that is read whole), and hands each batch's bytes and header to
/// `visit`. Only lengths are checked here; `visit` validates what it needs.
pub fn scan(
    file: &File,
    path: &Path,
    from: u64,
    end: u64,
    mut visit: impl FnMut(u64, &[u8], BatchHeader) -> ControlFlow<()>,
) -> Result<ScanEnd> {
    let mut position = from;
    while position < end {
        let chunk_len = (end - position).min(SCAN_CHUNK_BYTES as u64) as usize;
        let mut chunk = read_at(file, path, position, chunk_len)?;
        let mut consumed = 0usize;
        let mut steps = batch::BatchIter::new(&chunk);
        let mut need_whole: Option<usize> = None;
        for step in steps.by_ref() {
            match step {
                BatchStep::Batch {
                    position: p,
                    header,
                } => {
                    let bytes = &chunk[p..p + header.total_len()];
                    if visit(position + p as u64, bytes, header).is_break() {
                        return Ok(ScanEnd::Stopped(position + p as u64));
                    }
                    consumed = p + header.total_len();
                }
                BatchStep::Partial {
                    position: p,
                    total_len,
                } => {
                    consumed = p;
                    need_whole = Some(total_len);
                    break;
                }
                BatchStep::Invalid { position: p } => {
                    let at = position + p as u64;
                    return Ok(ScanEnd::Invalid(
                        at,
                        BatchError::LengthMismatch {
                            declared: -1,
                            available: 0,
                        },
                    ));
                }
            }
        }
        position += consumed as u64;
        if let Some(total_len) = need_whole {
            let remaining = end - position;
            if total_len == 0 || total_len as u64 > remaining {
                let available = remaining as usize;
                return Ok(ScanEnd::Invalid(
                    position,
                    BatchError::LengthMismatch {
                        declared: total_len as i64 - LOG_OVERHEAD as i64,
                        available: available.saturating_sub(LOG_OVERHEAD),
                    },
                ));
            }
            if consumed == 0 {
                // A batch bigger than the chunk: read it whole and visit it on its own.
                chunk = read_at(file, path, position, total_len)?;
                let header = match BatchHeader::parse(&chunk) {
                    Ok(h) => h,
                    Err(e) => return Ok(ScanEnd::Invalid(position, e)),
                };
                if visit(position, &chunk, header).is_break() {
                    return Ok(ScanEnd::Stopped(position));
                }
                position += total_len as u64;
            }
        }
    }
    Ok(ScanEnd::Complete(position))
}

/// What [`read_range`] found.
#[derive(Debug)]
pub enum RangeRead {
    /// Whole batches, the first one containing or following the start offset.
    Batches(Bytes),
    /// The upper bound stops the read before any batch.
    Bounded,
    /// No batch in the range reaches the start offset.
    PastEnd,
}

/// A byte-range read of whole batches, planned under the log lock and run without it.
#[derive(Debug, Clone, Copy)]
pub struct RangeRequest<'a> {
    /// The segment file.
    pub file: &'a File,
    /// Its path, for errors.
    pub path: &'a Path,
    /// A position at or before the batch holding `start_offset` (from the offset index).
    pub from: u64,
    /// End of the whole batches in the file.
    pub end: u64,
    /// First offset wanted.
    pub start_offset: i64,
    /// No returned batch reaches this offset (exclusive).
    pub upper_bound: i64,
    /// Soft size limit; the first batch is returned whatever its size.
    pub max_bytes: usize,
    /// Check each returned batch's CRC32C (see `LogConfig::verify_crc_on_read`).
    pub verify_crc: bool,
    /// A read ending at or before this position is of bytes outside the retained window (see
    /// [`crate::page_cache`]): they are dropped from the page cache once read, so that a
    /// reader catching up does not fill the cache with them. 0: never.
    pub uncache_before: u64,
}

/// Reads whole batches from the first one containing or following `start_offset`, stopping
/// before the first batch that reaches `upper_bound` and once `max_bytes` are collected.
/// With `verify_crc`, a batch failing its CRC is an error if it is the first, and ends the
/// read otherwise (the next read starts at it and reports it).
pub fn read_range(req: RangeRequest<'_>) -> Result<RangeRead> {
    let RangeRequest {
        file,
        path,
        from,
        end,
        start_offset,
        upper_bound,
        max_bytes,
        verify_crc,
        uncache_before,
    } = req;
    let Some(first) = locate(file, path, from, end, start_offset)? else {
        return Ok(RangeRead::PastEnd);
    };
    if first.header.last_offset() >= upper_bound {
        return Ok(RangeRead::Bounded);
    }
    let first_len = first.header.total_len() as u64;
    let available = end - first.position;
    if first_len > available {
        return Err(StorageError::CorruptLog {
            path: path.to_path_buf(),
            position: first.position,
            reason: BatchError::LengthMismatch {
                declared: first_len as i64 - LOG_OVERHEAD as i64,
                available: available as usize,
            },
        });
    }
    let read_len = first_len.max((max_bytes as u64).min(available)) as usize;
    let buf = read_at(file, path, first.position, read_len)?;
    let mut accepted = 0usize;
    for step in batch::BatchIter::new(&buf) {
        let BatchStep::Batch { position, header } = step else {
            break;
        };
        if header.last_offset() >= upper_bound {
            break;
        }
        let bytes = &buf[position..position + header.total_len()];
        let checked = if verify_crc {
            batch::validate(bytes, OffsetGaps::Allowed).map(|_| ())
        } else {
            Ok(())
        };
        if let Err(reason) = checked {
            if accepted == 0 {
                return Err(StorageError::CorruptLog {
                    path: path.to_path_buf(),
                    position: first.position + position as u64,
                    reason,
                });
            }
            break;
        }
        if accepted > 0 && position + header.total_len() > max_bytes {
            break;
        }
        accepted = position + header.total_len();
    }
    // What is returned, and the largest folio before it: the kernel keeps a folio the range
    // covers only in part, like the one straddling the previous read's end (already returned,
    // so dropping it now is right). The next read starts at this one's end.
    let returned_end = first.position + accepted as u64;
    if returned_end <= uncache_before {
        let start = first.position.saturating_sub(page_cache::FOLIO_MAX_BYTES);
        page_cache::uncache(file, path, start..returned_end);
    }
    Ok(RangeRead::Batches(buf.freeze().slice(..accepted)))
}

/// Finds the first batch at or after `from` whose last offset reaches `offset`, reading headers
/// only, a window at a time.
pub fn locate(
    file: &File,
    path: &Path,
    from: u64,
    end: u64,
    offset: i64,
) -> Result<Option<Located>> {
    let mut position = from;
    while position < end {
        let window = (end - position).min(LOCATE_WINDOW_BYTES as u64) as usize;
        let buf = read_at(file, path, position, window)?;
        let mut p = 0usize;
        while p + BATCH_HEADER_LEN <= buf.len() {
            let header =
                BatchHeader::parse(&buf[p..]).map_err(|reason| StorageError::CorruptLog {
                    path: path.to_path_buf(),
                    position: position + p as u64,
                    reason,
                })?;
            if header.batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
                return Err(StorageError::CorruptLog {
                    path: path.to_path_buf(),
                    position: position + p as u64,
                    reason: BatchError::LengthMismatch {
                        declared: i64::from(header.batch_length),
                        available: buf.len() - p,
                    },
                });
            }
            if header.last_offset() >= offset {
                return Ok(Some(Located {
                    position: position + p as u64,
                    header,
                }));
            }
            p += header.total_len();
        }
        if p == 0 {
            // Fewer than a header's bytes left before `end`: a torn tail, not a batch.
            return Err(StorageError::CorruptLog {
                path: path.to_path_buf(),
                position,
                reason: BatchError::TooShort { len: buf.len() },
            });
        }
        position += p as u64;
    }
    Ok(None)
}
