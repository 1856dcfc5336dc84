//! Opening a log (clean or after a crash), rebuilding producer state, and clean shutdown.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::ErrorKind;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Mutex;

use super::{Log, LogOptions, LogState, Published, CLEAN_SHUTDOWN_FILE, LOG_START_OFFSET_FILE};
use crate::batch;
use crate::checkpoint::{read_framed, sync_dir, write_framed};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{Result, StorageError};
use crate::producer::ProducerStateManager;
use crate::segment::{self, parse_file_name, ScanEnd, Segment};
use crate::txn_index::AbortedTxn;

/// Suffixes of files left by an interrupted operation, removed on open.
const LEFTOVER_SUFFIXES: [&str; 3] = [".tmp", ".cleaned", ".deleted"];
/// Suffix of a compacted segment file whose swap-in was committed (see `cleaner`).
pub(crate) const SWAP_SUFFIX: &str = ".swap";

impl Log {
    /// Opens (or creates) the log in `dir`. After a clean shutdown only index sanity checks and
    /// the tail of each segment are read; otherwise every segment from the one holding
    /// `options.recovery_point` is scanned, each batch checked, the log truncated at the first
    /// invalid byte, indexes and producer state rebuilt, and the result fsynced.
    pub fn open(dir: &Path, config: LogConfig, options: LogOptions) -> Result<Log> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        finish_interrupted_operations(dir)?;
        let clean_end = read_framed(&dir.join(CLEAN_SHUTDOWN_FILE))
            .ok()
            .flatten()
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(i64::from_be_bytes);
        let stored_start = read_framed(&dir.join(LOG_START_OFFSET_FILE))?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(i64::from_be_bytes);
        let now = options.clock.now_ms();

        let bases = segment_bases(dir)?;
        let recovery_point = if clean_end.is_some() {
            i64::MAX
        } else {
            options.recovery_point
        };
        let (segments, recovered_from) = load_segments(dir, &bases, recovery_point, &config)?;
        let mut segments = segments;
        if segments.is_empty() {
            let base = stored_start.unwrap_or(0).max(0);
            segments.insert(base, Segment::create(dir, base, now)?);
            sync_dir(dir)?;
        }
        let mut first_base = segments.keys().next().copied().unwrap_or(0);
        let mut log_end_offset = segments
            .values()
            .next_back()
            .map_or(first_base, Segment::next_offset);
        // A crash lost data above a durable log start: what is left is all below the start, so
        // the log restarts empty there (Kafka's LogLoader does the same). Lowering the start
        // instead would let it jump back up on the next restart, hiding records appended
        // meanwhile.
        let restart_at = stored_start.filter(|start| *start > log_end_offset);
        if let Some(start) = restart_at {
            tracing::warn!(dir = %dir.display(), start, log_end_offset, "log ends below its durable start offset; restarting it empty there");
            for (_, segment) in std::mem::take(&mut segments) {
                segment.delete_files()?;
            }
            segments.insert(start, Segment::create(dir, start, now)?);
            sync_dir(dir)?;
            first_base = start;
            log_end_offset = start;
        }
        let log_start_offset = stored_start
            .unwrap_or(first_base)
            .max(first_base)
            .min(log_end_offset);
        if let (Some(end), None) = (clean_end, recovered_from) {
            if end != log_end_offset {
                tracing::warn!(dir = %dir.display(), end, log_end_offset, "clean-shutdown marker disagrees with the log");
            }
        }

        let mut epochs = LeaderEpochCache::load(dir)?;
        epochs.truncate_from_end(log_end_offset)?;
        epochs.truncate_from_start(log_start_offset)?;

        let state = LogState {
            config,
            segments,
            log_start_offset,
            log_end_offset,
            recovery_point: log_end_offset,
            epochs,
            producers: ProducerStateManager::new(dir),
            unflushed_records: 0,
            oldest_unflushed_ms: None,
            truncations: 0,
            open_old_segments: VecDeque::new(),
            appends_blocked: false,
            retired: false,
            high_watermark: None,
        };
        let log = Log {
            dir: dir.to_path_buf(),
            clock: options.clock,
            failures: options.failures,
            published: Published::new(&state),
            state: Mutex::new(state),
            flush_lock: Mutex::new(()),
            path_ops: Mutex::new(()),
        };
        {
            let mut st = log.lock();
            if let Some(start) = restart_at {
                st.producers.truncate_fully_and_start_at(start)?;
            }
            rebuild_producer_state(&mut st, recovered_from)?;
            if recovered_from.is_some() {
                // Recovered bytes may exist only in the page cache: make them durable before
                // trusting them as below the recovery point.
                for segment in st.segments.values_mut() {
                    if segment.is_open() {
                        segment.sync()?;
                    }
                }
            }
            close_old_segments(&mut st)?;
        }
        remove_if_exists(&dir.join(CLEAN_SHUTDOWN_FILE))?;
        sync_dir(dir)?;
        Ok(log)
    }

    /// Clean shutdown: flushes everything, writes indexes and a producer snapshot, then the
    /// clean-shutdown marker that lets the next open skip recovery.
    pub fn close(self) -> Result<()> {
        self.flush()?;
        let mut st = self.lock();
        for segment in st.segments.values_mut() {
            segment.sync()?;
        }
        st.producers.take_snapshot()?;
        write_framed(
            &self.dir.join(CLEAN_SHUTDOWN_FILE),
            &st.log_end_offset.to_be_bytes(),
        )
    }
}

/// Completes or rolls back what a crash interrupted: leftovers of unfinished writes are
/// removed; a committed compaction swap (`.swap` files) replaces the segment it cleaned;
/// index files whose `.log` is gone are removed.
fn finish_interrupted_operations(dir: &Path) -> Result<()> {
    let names = list_names(dir)?;
    for name in &names {
        if LEFTOVER_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            remove_if_exists(&dir.join(name))?;
        }
    }
    let mut swapped = Vec::new();
    for name in &names {
        if let Some(target) = name.strip_suffix(SWAP_SUFFIX) {
            // The cleaned file was complete and synced before it was renamed to .swap; the
            // rename replaces the original segment file atomically if it is still there.
            fs::rename(dir.join(name), dir.join(target))
                .map_err(|e| StorageError::io(dir.join(name), e))?;
            if let Some(base) = parse_file_name(target, "log") {
                swapped.push(base);
            }
        }
    }
    for name in &list_names(dir)? {
        for ext in ["index", "timeindex", "txnindex"] {
            let Some(base) = parse_file_name(name, ext) else {
                continue;
            };
            let has_log = dir.join(segment::file_name(base, "log")).exists();
            // Indexes of a swapped-in segment describe the old file: rebuilt on load. The
            // aborted-transaction index stays valid (compaction keeps transactional batches).
            let stale = swapped.contains(&base) && ext != "txnindex";
            if !has_log || stale {
                remove_if_exists(&dir.join(name))?;
            }
        }
    }
    sync_dir(dir)
}

fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn segment_bases(dir: &Path) -> Result<Vec<i64>> {
    let mut bases: Vec<i64> = list_names(dir)?
        .iter()
        .filter_map(|n| parse_file_name(n, "log"))
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// Loads every segment; those at or after the one holding `recovery_point` are recovered.
/// Returns the segments and, if any recovery ran, the base offset it started from.
fn load_segments(
    dir: &Path,
    bases: &[i64],
    recovery_point: i64,
    config: &LogConfig,
) -> Result<(BTreeMap<i64, Segment>, Option<i64>)> {
    let interval = config.index_interval_bytes;
    let mut segments = BTreeMap::new();
    let mut recovered_from = None;
    let mut expected_min = i64::MIN;
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let trusted = recovered_from.is_none()
            && (recovery_point == i64::MAX || next_base.is_some_and(|n| n <= recovery_point));
        let (mut segment, cut) = if trusted {
            match Segment::load(dir, base, interval) {
                Ok(s) => (s, 0),
                Err(StorageError::CorruptLog { position, .. }) if next_base.is_some() => {
                    // Below the recovery point data is never cut: later segments depend on it.
                    tracing::error!(dir = %dir.display(), base, position, "damaged segment below the recovery point kept as is");
                    (Segment::load_damaged(dir, base, interval)?, 0)
                }
                Err(StorageError::CorruptLog { .. }) => {
                    recovered_from.get_or_insert(base);
                    recover_segment(dir, base, interval)?
                }
                Err(e) => return Err(e),
            }
        } else {
            recovered_from.get_or_insert(base);
            recover_segment(dir, base, interval)?
        };
        if base < expected_min {
            // Overlaps its predecessor: not a state this log ever writes; drop it and the rest.
            tracing::warn!(dir = %dir.display(), base, "segment overlaps the previous one; deleting it and later segments");
            segment.close()?;
            delete_from(dir, &bases[i..])?;
            break;
        }
        expected_min = segment.next_offset();
        // Without compaction a segment ends exactly where the next begins; a recovered segment
        // ending short lost its tail (e.g. power loss right after a roll) and the next segment
        // would leave a silent gap: treat it like a cut.
        let short = recovered_from.is_some()
            && !config.cleanup_policy.compacts()
            && next_base.is_some_and(|n| segment.next_offset() < n);
        segments.insert(base, segment);
        if cut > 0 || short {
            // Everything after the first invalid byte is gone, later segments included.
            delete_from(dir, &bases[i + 1..])?;
            break;
        }
    }
    Ok((segments, recovered_from))
}

fn recover_segment(dir: &Path, base: i64, interval: u64) -> Result<(Segment, u64)> {
    let mut segment = Segment::unloaded(dir, base)?;
    let cut = segment.recover(interval, true)?;
    if cut > 0 {
        crate::metrics::recovery_truncated(cut);
        tracing::warn!(segment = %segment.log_path().display(), cut_bytes = cut, "truncated invalid bytes during recovery");
    }
    Ok((segment, cut))
}

fn delete_from(dir: &Path, bases: &[i64]) -> Result<()> {
    for &base in bases {
        Segment::unloaded(dir, base)?.delete_files()?;
    }
    sync_dir(dir)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

fn close_old_segments(st: &mut LogState) -> Result<()> {
    let active = st.active_base();
    for (base, segment) in st.segments.iter_mut() {
        if *base != active {
            segment.close()?;
        }
    }
    Ok(())
}

/// Reloads producer state from the newest snapshot at or below the log end and replays the
/// batches after it. Aborted transactions found at or after `rebuild_txn_index_from` are
/// re-added to their segment's index (recovery reset those indexes).
pub(super) fn rebuild_producer_state(
    st: &mut LogState,
    rebuild_txn_index_from: Option<i64>,
) -> Result<()> {
    let end = st.log_end_offset;
    let first_base = st.segments.keys().next().copied().unwrap_or(end);
    // Rebuilding transaction indexes from offset B needs the producer state as of B, so replay
    // must start at a snapshot no later than B.
    let snapshot_max = rebuild_txn_index_from.map_or(end, |b| b.min(end));
    let start = match st.producers.load_latest_snapshot(snapshot_max)? {
        Some(offset) if offset >= first_base => offset,
        _ => {
            st.producers.clear(first_base);
            first_base
        }
    };
    if start >= end {
        return Ok(());
    }
    let interval = st.config.index_interval_bytes;
    let bases: Vec<i64> = st
        .segments
        .iter()
        .filter(|(_, s)| s.next_offset() > start)
        .map(|(b, _)| *b)
        .collect();
    for base in bases {
        let mut aborted: Vec<AbortedTxn> = Vec::new();
        let Some(segment) = st.segments.get_mut(&base) else {
            continue;
        };
        segment.ensure_open(interval)?;
        let path = segment.log_path();
        let Some(file) = segment.file() else { continue };
        let from = segment.lookup_position(start);
        let end_pos = segment.size_bytes();
        let producers = &mut st.producers;
        let scan_end = segment::scan(&file, &path, from, end_pos, |_, bytes, header| {
            if header.base_offset < start {
                return ControlFlow::Continue(());
            }
            let control: Option<batch::Marker> = if header.is_control() {
                batch::marker(bytes).ok()
            } else {
                None
            };
            if let Some(done) = producers.apply(&header, control) {
                let rebuild = rebuild_txn_index_from.is_some_and(|from| done.last_offset >= from);
                if done.aborted && rebuild {
                    aborted.push(AbortedTxn {
                        producer_id: done.producer_id,
                        first_offset: done.first_offset,
                        last_offset: done.last_offset,
                        last_stable_offset: producers.last_stable_offset(&done),
                    });
                }
            }
            ControlFlow::Continue(())
        })?;
        if let ScanEnd::Invalid(position, reason) = scan_end {
            return Err(StorageError::CorruptLog {
                path,
                position,
                reason,
            });
        }
        let segment = st
            .segments
            .get_mut(&base)
            .ok_or(StorageError::InvalidTxnState {
                producer_id: -1,
                reason: "segment vanished during replay",
            })?;
        for txn in aborted {
            segment.txn_index_mut().append(txn)?;
        }
    }
    Ok(())
}
