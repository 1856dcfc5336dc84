//! Log compaction (`cleanup.policy=compact`): keep the latest record per key in the segments
//! below the active one and below the caller's bound, drop expired tombstones, keep offsets.
//!
//! Transactions, as Kafka's cleaner treats them (`CleanedTransactionMetadata`): the bound is the
//! last stable offset, so every transaction below it is complete. Batches of aborted
//! transactions (found in the aborted-transaction index) are removed; committed transactional
//! records are compacted like any others; a commit marker is removed once none of its
//! transaction's data is left before it and it is past `delete.retention.ms` (a marker whose
//! data remains is always kept, or that data would look like a transaction nobody ended).
//! Abort markers are kept: the aborted-transaction index still names their transactions, and a
//! read_committed consumer told of one skips the producer's batches until it sees the abort
//! marker — without it, the producer's later committed batches would be skipped too. (Kafka
//! rewrites the index with the segment; here both stay, at one small batch and one index entry
//! per aborted transaction.)
//!
//! Each live producer's last data batch is kept whole, as Kafka's cleaner keeps it (emptied
//! there): replicas and replays rebuild the producer's epoch and last sequence from the log.
//!
//! Crash safety of the swap: a cleaned segment is written to `<base>.log.cleaned` and fsynced;
//! renaming it to `<base>.log.swap` (then fsyncing the directory) is the commit point. After
//! that the swap file replaces `<base>.log` and the old indexes are removed. On open, `.cleaned`
//! files are discarded and `.swap` files completed (see `recovery`), so a crash at any step
//! leaves either the old or the new segment, each with offsets unchanged.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record};

use super::recovery::SWAP_SUFFIX;
use super::Log;
use crate::batch::BatchHeader;
use crate::checkpoint::sync_dir;
use crate::error::{Result, StorageError};
use crate::segment::{self, file_name, ScanEnd, Segment};
use crate::txn_index::AbortedTxn;

/// Distinct keys one compaction pass maps (plus one segment's worth); past it the pass cleans
/// only the segments mapped so far.
pub const COMPACTION_KEYS_MAX: usize = 4 * 1024 * 1024;

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Segments rewritten.
    pub segments_cleaned: usize,
    /// Records removed (superseded values and expired tombstones).
    pub records_removed: u64,
    /// Bytes of the rewritten segments before cleaning.
    pub bytes_before: u64,
    /// Bytes of the rewritten segments after cleaning.
    pub bytes_after: u64,
}

/// A segment chosen for cleaning, as seen when the pass started.
struct Candidate {
    base: i64,
    path: PathBuf,
    size: u64,
    max_timestamp_ms: i64,
}

impl Log {
    /// Compacts every segment that lies wholly below both the active segment and
    /// `upper_bound`, which must be the last stable offset (below it nothing is uncommitted
    /// and every transaction is complete). A no-op unless the cleanup policy includes
    /// `compact`.
    pub fn compact(&self, upper_bound: i64) -> Result<CompactionOutcome> {
        let (candidates, delete_retention_ms, truncations, producers_last) = {
            let st = self.lock();
            // A retired log's paths may soon name another log's files.
            if st.retired || !st.config.cleanup_policy.compacts() {
                return Ok(CompactionOutcome::default());
            }
            let limit = upper_bound.min(st.active_base());
            let candidates: Vec<Candidate> = st
                .segments
                .values()
                .filter(|s| s.next_offset() <= limit && s.size_bytes() > 0)
                .map(|s| Candidate {
                    base: s.base_offset(),
                    path: s.log_path(),
                    size: s.size_bytes(),
                    max_timestamp_ms: s.max_timestamp_ms(),
                })
                .collect();
            // Each live producer's last data batch is kept whole (Kafka's cleaner keeps it
            // too): a replica or a replay that rebuilds producer state from the log needs its
            // epoch and last sequence to keep deduplicating its retries and fencing zombies.
            let producers_last: HashSet<i64> = st
                .producers
                .producers()
                .filter_map(|(_, entry)| entry.batches.back().map(|b| b.last_offset))
                .collect();
            (
                candidates,
                st.config.delete_retention_ms,
                st.truncations,
                producers_last,
            )
        };
        if candidates.is_empty() {
            return Ok(CompactionOutcome::default());
        }
        let end = candidates.last().map_or(0, |c| c.base);
        let aborted =
            Aborted::new(self.aborted_transactions(candidates[0].base, end.max(upper_bound)));
        let OffsetMap { latest, usable } = build_offset_map(&candidates, &aborted)?;
        let now = self.clock.now_ms();
        let mut outcome = CompactionOutcome::default();
        // Per producer, whether the data of its transaction since its last marker was kept, in
        // log order across the segments.
        let mut txn_data_kept: HashMap<i64, bool> = HashMap::new();
        for candidate in &candidates[..usable] {
            if self.is_retired() {
                // Its paths may name another log's files by now.
                break;
            }
            let tombstone_horizon = candidate
                .max_timestamp_ms
                .saturating_add(delete_retention_ms);
            let drop_tombstones = tombstone_horizon < now;
            let cleaned_path = cleaned_path(&candidate.path);
            let Some(out) = self.create_cleaned(&cleaned_path)? else {
                // Retired: the directory is going away.
                break;
            };
            let cleaning = Cleaning {
                latest: &latest,
                aborted: &aborted,
                producers_last: &producers_last,
                drop_tombstones,
            };
            let removed =
                rewrite_segment(candidate, out, &cleaned_path, &cleaning, &mut txn_data_kept)?;
            if removed == 0 {
                self.discard_cleaned(&cleaned_path)?;
                continue;
            }
            let Some(after) = self.swap_in(candidate, &cleaned_path, truncations)? else {
                // The segment changed under us (retention, truncation, retirement): nothing to
                // swap. The pass stops: later segments were cleaned assuming this one's
                // transactional data was dropped or kept as decided.
                let _ = self.discard_cleaned(&cleaned_path);
                break;
            };
            crate::metrics::compacted(removed);
            outcome.segments_cleaned += 1;
            outcome.records_removed += removed;
            outcome.bytes_before += candidate.size;
            outcome.bytes_after += after;
        }
        Ok(outcome)
    }

    /// Creates the file of a segment's cleaned copy, or returns `None` if the log is retired.
    /// Done under `path_ops`, which `retire` takes too: once the log is retired, its directory
    /// may be moved and the path taken by another log's directory, so no file may appear under
    /// it; a file created before moves with the directory.
    fn create_cleaned(&self, path: &Path) -> Result<Option<File>> {
        let _path_ops = self.lock_path_ops();
        if self.is_retired() {
            return Ok(None);
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        Ok(Some(file))
    }

    /// Removes a cleaned copy that will not be swapped in, unless the log is retired (the path
    /// may then name another log's file; the copy goes with its directory).
    fn discard_cleaned(&self, path: &Path) -> Result<()> {
        let _path_ops = self.lock_path_ops();
        if self.is_retired() {
            return Ok(());
        }
        fs::remove_file(path).map_err(|e| StorageError::io(path, e))
    }

    /// Replaces the segment with its cleaned copy (see the module doc for the protocol).
    /// Returns the new size, or `None` if the segment is no longer what was cleaned.
    fn swap_in(
        &self,
        candidate: &Candidate,
        cleaned: &Path,
        truncations: u64,
    ) -> Result<Option<u64>> {
        let mut st = self.lock();
        let unchanged = !st.retired
            && st.truncations == truncations
            && st
                .segments
                .get(&candidate.base)
                .is_some_and(|s| s.size_bytes() == candidate.size);
        if !unchanged {
            return Ok(None);
        }
        let swap = swap_path(&candidate.path);
        fs::rename(cleaned, &swap).map_err(|e| StorageError::io(&swap, e))?;
        sync_dir(&self.dir)?;
        // Committed: from here recovery completes the swap if we crash.
        if let Some(mut old) = st.segments.remove(&candidate.base) {
            old.close()?;
        }
        st.open_old_segments.retain(|b| *b != candidate.base);
        for ext in ["index", "timeindex"] {
            let path = self.dir.join(file_name(candidate.base, ext));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&path, e)),
            }
        }
        fs::rename(&swap, &candidate.path).map_err(|e| StorageError::io(&candidate.path, e))?;
        sync_dir(&self.dir)?;
        let interval = st.config.index_interval_bytes;
        let mut segment = Segment::load(&self.dir, candidate.base, interval)?;
        segment.sync()?;
        segment.close()?;
        let size = segment.size_bytes();
        st.segments.insert(candidate.base, segment);
        Ok(Some(size))
    }
}

fn cleaned_path(log_path: &Path) -> PathBuf {
    let mut s = log_path.as_os_str().to_owned();
    s.push(".cleaned");
    PathBuf::from(s)
}

fn swap_path(log_path: &Path) -> PathBuf {
    let mut s = log_path.as_os_str().to_owned();
    s.push(SWAP_SUFFIX);
    PathBuf::from(s)
}

/// The aborted transactions of the cleaned range: per producer, `(first offset, marker
/// offset)` sorted (one producer's transactions never overlap), so each lookup is a binary
/// search however many there are.
struct Aborted(HashMap<i64, Vec<(i64, i64)>>);

impl Aborted {
    fn new(aborted: Vec<AbortedTxn>) -> Aborted {
        let mut by_producer: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for txn in aborted {
            by_producer
                .entry(txn.producer_id)
                .or_default()
                .push((txn.first_offset, txn.last_offset));
        }
        for ranges in by_producer.values_mut() {
            ranges.sort_unstable();
        }
        Aborted(by_producer)
    }

    /// Whether a transactional batch of `header` belongs to an aborted transaction.
    fn contains(&self, header: &BatchHeader) -> bool {
        let Some(ranges) = self.0.get(&header.producer_id) else {
            return false;
        };
        // The last transaction that started at or before the batch.
        let at = ranges.partition_point(|(first, _)| *first <= header.base_offset);
        at > 0 && header.base_offset < ranges[at - 1].1
    }
}

/// What a pass decides for each record.
struct Cleaning<'a> {
    latest: &'a HashMap<Bytes, i64>,
    aborted: &'a Aborted,
    /// Last offsets of the batches kept whole as their producers' last.
    producers_last: &'a HashSet<i64>,
    drop_tombstones: bool,
}

fn decode(header: &BatchHeader, bytes: &[u8]) -> Result<(Vec<Record>, Compression)> {
    let mut buf = Bytes::copy_from_slice(bytes);
    // Compaction looks inside batches written by clients: the same bound as every other
    // decompression (the batch was accepted within max.message.bytes, so 64 MiB is ample).
    let limit = crate::decompress::DECOMPRESSED_BATCH_BYTES_MIN_LIMIT;
    let set = crate::decompress::decode_batch(&mut buf, limit).map_err(|e| {
        StorageError::RecordCodec {
            offset: header.base_offset,
            message: e.to_string(),
        }
    })?;
    Ok((set.records, set.compression))
}

/// Visits every batch of a candidate segment.
fn for_each_batch(
    candidate: &Candidate,
    mut visit: impl FnMut(&[u8], BatchHeader) -> Result<()>,
) -> Result<()> {
    let file = File::open(&candidate.path).map_err(|e| StorageError::io(&candidate.path, e))?;
    let mut failure = None;
    let end = segment::scan(
        &file,
        &candidate.path,
        0,
        candidate.size,
        |_, bytes, header| match visit(bytes, header) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    if let ScanEnd::Invalid(position, reason) = end {
        return Err(StorageError::CorruptLog {
            path: candidate.path.clone(),
            position,
            reason,
        });
    }
    Ok(())
}

/// Latest offset of every key over a prefix of the candidates, and how long that prefix is:
/// mapping stops after the segment that takes the map past [`COMPACTION_KEYS_MAX`] keys.
///
/// A partial map is still safe: a record is removed only when the map holds a later offset
/// for its key, and every offset in the map is a real later record.
fn build_offset_map(candidates: &[Candidate], aborted: &Aborted) -> Result<OffsetMap> {
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    for (i, candidate) in candidates.iter().enumerate() {
        for_each_batch(candidate, |bytes, header| {
            // Markers hold no keys; an aborted transaction's records never count.
            if header.is_control() || (header.is_transactional() && aborted.contains(&header)) {
                return Ok(());
            }
            let (records, _) = decode(&header, bytes)?;
            for record in records {
                if let Some(key) = record.key {
                    // A copy: the decoded key is a slice that would pin its whole batch buffer.
                    match latest.get_mut(&key) {
                        Some(offset) => *offset = record.offset,
                        None => {
                            latest.insert(Bytes::copy_from_slice(&key), record.offset);
                        }
                    }
                }
            }
            Ok(())
        })?;
        if latest.len() > COMPACTION_KEYS_MAX {
            return Ok(OffsetMap {
                latest,
                usable: i + 1,
            });
        }
    }
    Ok(OffsetMap {
        latest,
        usable: candidates.len(),
    })
}

/// What one compaction pass knows about the keys of its segments.
struct OffsetMap {
    /// Latest offset of each key seen.
    latest: HashMap<Bytes, i64>,
    /// How many candidates (a prefix) the map covers.
    usable: usize,
}

/// Writes the cleaned copy of a segment to `out` (at `out_path`, named in errors); returns the
/// number of records removed.
fn rewrite_segment(
    candidate: &Candidate,
    out: File,
    out_path: &Path,
    cleaning: &Cleaning<'_>,
    txn_data_kept: &mut HashMap<i64, bool>,
) -> Result<u64> {
    let mut writer = BufWriter::new(out);
    let mut removed = 0u64;
    for_each_batch(candidate, |bytes, header| {
        if header.is_control() {
            // A commit marker whose transaction's data was all removed (or there was none)
            // goes too once past the horizon; otherwise it stays, ending that data. Abort
            // markers stay (see the module doc).
            let data_kept = txn_data_kept.remove(&header.producer_id).unwrap_or(false);
            let commit = crate::batch::control_type(bytes)
                .is_ok_and(|kind| kind == crate::batch::ControlType::Commit);
            if commit && !data_kept && cleaning.drop_tombstones {
                removed += u64::try_from(header.records_count).unwrap_or(0);
                return Ok(());
            }
            return writer
                .write_all(bytes)
                .map_err(|e| StorageError::io(out_path, e));
        }
        if header.has_producer_id() && cleaning.producers_last.contains(&header.last_offset()) {
            if header.is_transactional() {
                txn_data_kept.insert(header.producer_id, true);
            }
            return writer
                .write_all(bytes)
                .map_err(|e| StorageError::io(out_path, e));
        }
        if header.is_transactional() && cleaning.aborted.contains(&header) {
            txn_data_kept.entry(header.producer_id).or_insert(false);
            removed += u64::try_from(header.records_count).unwrap_or(0);
            return Ok(());
        }
        let (records, compression) = decode(&header, bytes)?;
        let total = records.len();
        let kept: Vec<Record> = records
            .into_iter()
            .filter(|r| keep_record(r, cleaning.latest, cleaning.drop_tombstones))
            .collect();
        removed += (total - kept.len()) as u64;
        if header.is_transactional() {
            let any = txn_data_kept.entry(header.producer_id).or_insert(false);
            *any |= !kept.is_empty();
        }
        if kept.len() == total {
            return writer
                .write_all(bytes)
                .map_err(|e| StorageError::io(out_path, e));
        }
        if kept.is_empty() {
            return Ok(());
        }
        let mut kept = kept;
        let codec_error = |e: crate::error::BatchError| StorageError::RecordCodec {
            offset: header.base_offset,
            message: e.to_string(),
        };
        let mut cleaned =
            crate::batch::encode_records(&mut kept, compression).map_err(codec_error)?;
        crate::batch::restore_compacted_header(&mut cleaned, &header).map_err(codec_error)?;
        writer
            .write_all(&cleaned)
            .map_err(|e| StorageError::io(out_path, e))
    })?;
    let file = writer
        .into_inner()
        .map_err(|e| StorageError::io(out_path, e.into_error()))?;
    file.sync_all().map_err(|e| StorageError::io(out_path, e))?;
    Ok(removed)
}

/// Keyless records are kept (a compacted topic should not hold them; dropping data silently
/// would be worse); a keyed record survives if it is the key's latest and, for a tombstone,
/// if tombstones are still within `delete.retention.ms`.
fn keep_record(record: &Record, latest: &HashMap<Bytes, i64>, drop_tombstones: bool) -> bool {
    let Some(key) = &record.key else {
        return true;
    };
    let is_latest = latest.get(key).is_none_or(|o| *o == record.offset);
    is_latest && !(record.value.is_none() && drop_tombstones)
}
