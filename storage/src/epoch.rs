//! Leader-epoch cache of one partition (Kafka's `LeaderEpochFileCache`): which leader epoch
//! started at which offset, persisted as `leader-epoch-checkpoint` in the partition directory.
//!
//! Followers truncate by it (OffsetForLeaderEpoch answers come from [`LeaderEpochCache::end_offset_for`])
//! instead of by high watermark, so it must survive restarts and follow every log truncation.
//!
//! Invariant: entries are sorted with strictly increasing epochs *and* strictly increasing start
//! offsets; [`LeaderEpochCache::load`] rejects a file that breaks it.

use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::{Result, StorageError};

/// File name of the cache inside the partition directory (Kafka's name).
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// Epoch and end offset meaning "unknown" in OffsetForLeaderEpoch answers.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Offset paired with [`UNDEFINED_EPOCH`].
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// Bytes of one persisted entry: epoch (i32) + start offset (i64).
const ENTRY_LEN: usize = 4 + 8;
/// Bytes of the entry count prefix.
const COUNT_LEN: usize = 4;

/// One leader epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// Leader epoch.
    pub epoch: i32,
    /// First offset appended by the leader of this epoch.
    pub start_offset: i64,
}

/// The epoch → start offset history of one partition, mirrored to its checkpoint file.
#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the cache of the partition in `dir`; a missing file gives an empty cache.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        let entries = match checkpoint::read_framed(&path)? {
            Some(body) => decode(&path, &body)?,
            None => Vec::new(),
        };
        Ok(LeaderEpochCache { path, entries })
    }

    /// Records that `epoch` starts at `start_offset` (called for every appended batch).
    ///
    /// The same epoch again is a no-op; a newer epoch is appended after dropping entries that
    /// start at or after its start offset (they describe offsets the new leader overwrote); an
    /// older epoch is ignored because the log never goes back in epochs without a truncation
    /// (which goes through [`Self::truncate_from_end`]). Persists only when the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<()> {
        if epoch < 0 || start_offset < 0 {
            // Kafka refuses these outright; batches from pre-v2 formats carry no epoch.
            tracing::warn!(epoch, start_offset, path = %self.path.display(), "ignoring invalid leader epoch entry");
            return Ok(());
        }
        match self.latest_epoch() {
            Some(latest) if epoch == latest => return Ok(()),
            Some(latest) if epoch < latest => {
                tracing::warn!(epoch, latest, start_offset, path = %self.path.display(), "ignoring leader epoch older than the latest");
                return Ok(());
            }
            _ => {}
        }
        let kept = self
            .entries
            .partition_point(|e| e.start_offset < start_offset);
        self.warn_if_overwriting(kept, start_offset);
        self.entries.truncate(kept);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()
    }

    /// Latest known epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Path of the checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers OffsetForLeaderEpoch exactly as Kafka's `endOffsetFor`: the largest epoch
    /// `<= requested_epoch` and the offset where the epoch after it starts (the log end offset
    /// for the latest epoch), or `(-1, -1)` when nothing is known.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> (i32, i64) {
        if requested_epoch == UNDEFINED_EPOCH {
            // A bootstrapping follower or an old-format log: nothing to compare.
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        if self.latest_epoch() == Some(requested_epoch) {
            // Still being written to: it ends at the log end.
            return (requested_epoch, log_end_offset);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested_epoch);
        let Some(higher_entry) = self.entries.get(higher) else {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            // Older than anything we still know: the data is gone, so point the follower at the
            // first epoch we do know, keeping its epoch (Kafka does the same).
            None => (requested_epoch, higher_entry.start_offset),
            Some(floor) => (floor.epoch, higher_entry.start_offset),
        }
    }

    /// The log was truncated to `end_offset` (exclusive): forget epochs starting at or after it.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<()> {
        let kept = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        if end_offset < 0 || kept == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(kept);
        self.persist()
    }

    /// The log start moved to `start_offset`: drop epochs that ended before it; the epoch that
    /// covers `start_offset` is kept, starting at `start_offset`.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<()> {
        let covering = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(last_covering) = covering.checked_sub(1) else {
            return Ok(());
        };
        let moved = self.entries[last_covering].start_offset != start_offset;
        if last_covering == 0 && !moved {
            return Ok(());
        }
        self.entries.drain(..last_covering);
        self.entries[0].start_offset = start_offset;
        self.persist()
    }

    /// Forgets every epoch (the log was emptied and restarted elsewhere).
    pub fn clear(&mut self) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.entries.clear();
        self.persist()
    }

    fn warn_if_overwriting(&self, kept: usize, start_offset: i64) {
        let removed = &self.entries[kept..];
        // One removed entry starting exactly where the new one starts is the normal case of an
        // epoch that never got any data; anything else means a leader overwrote offsets.
        let trivial =
            removed.is_empty() || (removed.len() == 1 && removed[0].start_offset == start_offset);
        if !trivial {
            tracing::warn!(
                start_offset,
                removed = ?removed,
                path = %self.path.display(),
                "new leader epoch overwrites cached epochs"
            );
        }
    }

    fn persist(&self) -> Result<()> {
        checkpoint::write_framed(&self.path, &encode(&self.entries))
    }
}

fn encode(entries: &[EpochEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(COUNT_LEN + entries.len() * ENTRY_LEN);
    // Entry counts are bounded by the number of leader epochs, far below i32::MAX.
    body.extend_from_slice(&(entries.len() as i32).to_be_bytes());
    for e in entries {
        body.extend_from_slice(&e.epoch.to_be_bytes());
        body.extend_from_slice(&e.start_offset.to_be_bytes());
    }
    body
}

fn decode(path: &Path, body: &[u8]) -> Result<Vec<EpochEntry>> {
    let corrupt = |reason| StorageError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let (count, rest) = body
        .split_first_chunk::<COUNT_LEN>()
        .ok_or_else(|| corrupt("missing entry count"))?;
    let count = i32::from_be_bytes(*count);
    if count < 0 || rest.len() != count as usize * ENTRY_LEN {
        return Err(corrupt("entry count does not match the file size"));
    }
    let entries: Vec<EpochEntry> = rest.chunks_exact(ENTRY_LEN).map(decode_entry).collect();
    let ordered = entries
        .windows(2)
        .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset);
    let non_negative = entries.iter().all(|e| e.epoch >= 0 && e.start_offset >= 0);
    if !ordered || !non_negative {
        return Err(corrupt("epochs or start offsets not strictly increasing"));
    }
    Ok(entries)
}

fn decode_entry(chunk: &[u8]) -> EpochEntry {
    let mut epoch = [0u8; 4];
    let mut start = [0u8; 8];
    epoch.copy_from_slice(&chunk[..4]);
    start.copy_from_slice(&chunk[4..ENTRY_LEN]);
    EpochEntry {
        epoch: i32::from_be_bytes(epoch),
        start_offset: i64::from_be_bytes(start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    fn cache_with(dir: &Path, pairs: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::load(dir).expect("load");
        for &(epoch, start) in pairs {
            cache.assign(epoch, start).expect("assign");
        }
        cache
    }

    fn reload(dir: &Path) -> Vec<EpochEntry> {
        LeaderEpochCache::load(dir)
            .expect("reload")
            .entries()
            .to_vec()
    }

    #[test]
    fn missing_file_gives_empty_cache_and_nothing_is_written_until_a_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = LeaderEpochCache::load(dir.path()).expect("load");
        assert!(cache.entries().is_empty());
        assert_eq!(cache.latest_epoch(), None);
        assert!(!cache.path().exists());
    }

    #[test]
    fn assign_appends_newer_epochs_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = cache_with(dir.path(), &[(0, 0), (2, 10), (5, 30)]);
        let expected = vec![entry(0, 0), entry(2, 10), entry(5, 30)];
        assert_eq!(cache.entries(), &expected[..]);
        assert_eq!(cache.latest_epoch(), Some(5));
        assert_eq!(reload(dir.path()), expected);
    }

    #[test]
    fn assign_same_epoch_is_a_no_op_even_with_another_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = cache_with(dir.path(), &[(1, 5)]);
        // Removing the file shows whether a no-op rewrites it.
        std::fs::remove_file(cache.path()).expect("remove");
        cache.assign(1, 9).expect("assign");
        cache.assign(1, 3).expect("assign");
        assert_eq!(cache.entries(), &[entry(1, 5)]);
        assert!(!cache.path().exists(), "no rewrite for an unchanged cache");
    }

    #[test]
    fn assign_older_epoch_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = cache_with(dir.path(), &[(1, 0), (3, 10)]);
        cache.assign(2, 20).expect("assign");
        assert_eq!(cache.entries(), &[entry(1, 0), entry(3, 10)]);
        assert_eq!(reload(dir.path()), vec![entry(1, 0), entry(3, 10)]);
    }

    #[test]
    fn assign_negative_values_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = cache_with(dir.path(), &[(1, 0)]);
        cache.assign(-1, 5).expect("assign");
        cache.assign(2, -5).expect("assign");
        assert_eq!(cache.entries(), &[entry(1, 0)]);
    }

    #[test]
    fn assign_newer_epoch_drops_entries_at_or_after_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Epoch 3 began at 20 but never got data there before epoch 4 took over at 20.
        let mut cache = cache_with(dir.path(), &[(1, 0), (2, 10), (3, 20)]);
        cache.assign(4, 20).expect("assign");
        assert_eq!(cache.entries(), &[entry(1, 0), entry(2, 10), entry(4, 20)]);
        // A newer epoch starting below cached starts drops all of those.
        cache.assign(5, 5).expect("assign");
        assert_eq!(cache.entries(), &[entry(1, 0), entry(5, 5)]);
        assert_eq!(reload(dir.path()), vec![entry(1, 0), entry(5, 5)]);
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = cache_with(dir.path(), &[(2, 10), (4, 20), (6, 30)]);
        let leo = 45;
        let cases = [
            (UNDEFINED_EPOCH, (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)),
            (6, (6, leo)),                                  // latest epoch -> log end
            (7, (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)), // newer than anything known
            (1, (1, 10)),                                   // older than all: first start
            (0, (0, 10)),
            (2, (2, 20)), // exact: next epoch's start
            (3, (2, 20)), // gap: floor epoch
            (4, (4, 30)),
            (5, (4, 30)),
        ];
        for (requested, expected) in cases {
            assert_eq!(
                cache.end_offset_for(requested, leo),
                expected,
                "requested {requested}"
            );
        }
    }

    #[test]
    fn end_offset_for_on_an_empty_cache_is_undefined() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = LeaderEpochCache::load(dir.path()).expect("load");
        for requested in [-1, 0, 5] {
            assert_eq!(cache.end_offset_for(requested, 100), (-1, -1));
        }
    }

    #[test]
    fn truncate_from_end_removes_epochs_starting_at_or_after_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = cache_with(dir.path(), &[(1, 0), (2, 10), (3, 20)]);
        cache.truncate_from_end(25).expect("no-op");
        assert_eq!(cache.entries().len(), 3);
        cache.truncate_from_end(20).expect("truncate");
        assert_eq!(cache.entries(), &[entry(1, 0), entry(2, 10)]);
        cache.truncate_from_end(-1).expect("negative is ignored");
        assert_eq!(cache.entries().len(), 2);
        cache.truncate_from_end(5).expect("truncate");
        assert_eq!(cache.entries(), &[entry(1, 0)]);
        assert_eq!(reload(dir.path()), vec![entry(1, 0)]);
        cache.truncate_from_end(0).expect("truncate all");
        assert!(cache.entries().is_empty());
        assert!(reload(dir.path()).is_empty());
    }

    #[test]
    fn truncate_from_start_keeps_the_covering_epoch_moved_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = cache_with(dir.path(), &[(1, 0), (2, 10), (3, 20)]);
        cache.truncate_from_start(0).expect("no-op");
        assert_eq!(cache.entries().len(), 3);
        cache.truncate_from_start(15).expect("truncate");
        assert_eq!(cache.entries(), &[entry(2, 15), entry(3, 20)]);
        assert_eq!(reload(dir.path()), vec![entry(2, 15), entry(3, 20)]);
        // Exactly at an epoch start: the earlier epoch is dropped, nothing is moved.
        cache.truncate_from_start(20).expect("truncate");
        assert_eq!(cache.entries(), &[entry(3, 20)]);
        cache.truncate_from_start(100).expect("truncate");
        assert_eq!(cache.entries(), &[entry(3, 100)]);
        assert_eq!(reload(dir.path()), vec![entry(3, 100)]);
    }

    #[test]
    fn truncate_from_start_below_the_first_epoch_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = cache_with(dir.path(), &[(4, 50)]);
        cache.truncate_from_start(10).expect("no-op");
        assert_eq!(cache.entries(), &[entry(4, 50)]);
    }

    #[test]
    fn clear_empties_the_file_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = cache_with(dir.path(), &[(1, 0)]);
        cache.clear().expect("clear");
        assert!(cache.entries().is_empty());
        assert!(reload(dir.path()).is_empty());
    }

    #[test]
    fn corrupt_files_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = cache_with(dir.path(), &[(1, 0), (2, 10)]);
        let path = cache.path().to_path_buf();

        let mut raw = std::fs::read(&path).expect("raw");
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        std::fs::write(&path, &raw).expect("flip a byte");
        assert!(matches!(
            LeaderEpochCache::load(dir.path()),
            Err(StorageError::CorruptCheckpoint { .. })
        ));

        let bad_bodies: [Vec<u8>; 4] = [
            vec![0, 0],                            // no count
            encode(&[entry(1, 0)])[..10].to_vec(), // short entry
            encode(&[entry(2, 0), entry(1, 10)]),  // epochs decrease
            encode(&[entry(1, 10), entry(2, 10)]), // starts do not increase
        ];
        for body in bad_bodies {
            checkpoint::write_framed(&path, &body).expect("write");
            assert!(
                matches!(
                    LeaderEpochCache::load(dir.path()),
                    Err(StorageError::CorruptCheckpoint { .. })
                ),
                "body {body:?} must be rejected"
            );
        }
    }
}
