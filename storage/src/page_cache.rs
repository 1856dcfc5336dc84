//! Drop-behind for the active segment: once handed to writeback, all but the newest bytes of a
//! segment leave the page cache, so each partition's share of the cache stays bounded and new
//! appends land in pages the kernel has just freed.
//!
//! Why: plain page-cache writes (Kafka's way) grow the cache until memory runs out, then the
//! kernel writes back in bursts. On VMs whose memory the host backs lazily, as on this project's
//! CI and benchmark machines, growing the cache also means a host fault for every page the guest
//! has never touched: new cache pages were measured at ~230 MB/s there, refilled freed pages at
//! ~3 GB/s (ROADMAP 2.1). Tail readers (consumers, followers) read the newest bytes, which stay.
//!
//! Mechanism: `posix_fadvise(POSIX_FADV_DONTNEED)` starts asynchronous writeback of the dirty
//! pages in a range and drops the clean ones; dirty pages and pages under writeback stay. A
//! range is advised twice: once half a window behind the end (writeback starts), once a whole
//! window behind (now clean, it leaves the cache). The newest half window is never advised.
//! The advice can cost a later read a disk access, but it drops only pages whose writeback
//! completed (or failed: the kernel then marks them clean, and readers get the disk's bytes
//! until the error surfaces). Unlike `sync_file_range` with a wait flag, it does not consume a
//! writeback error that the next fsync must report: durability is what it was without it.
//!
//! Reads: a read that ends outside the window (a consumer catching up) drops what it read, so
//! that catching up does not refill the cache with old bytes and evict the tail others read.
//! Several readers replaying the same old range each read it from disk.
//!
//! Cost: advising a range with dirty pages makes the kernel drain every CPU's LRU batches
//! (`lru_add_drain_all`), once per step (a quarter window) per partition.

use std::fs::File;
use std::num::NonZeroU64;
use std::ops::Range;
use std::path::Path;

/// Segments walked, per append or read, to find those a window behind the end. Segments far
/// smaller than the window (a tiny `segment.bytes`) past this many are left to the kernel, so
/// that neither walk grows with the log.
pub const WALK_SEGMENTS_MAX: usize = 64;
/// Smallest step between two advices, so that small appends do not cost a syscall each.
const MIN_STEP_BYTES: u64 = 1024 * 1024;
/// Advice is given in whole pages of this size (the common one; a larger page only means a
/// partial page at a range's end, which the kernel then leaves alone).
pub(crate) const PAGE_BYTES: u64 = 4096;
/// The largest page-cache folio (a PMD on x86-64). The kernel drops a folio only if the range
/// covers all of it, so each range starts this far before where the last one ended, to catch
/// the folio that straddled that end.
pub(crate) const FOLIO_MAX_BYTES: u64 = 2 * 1024 * 1024;

/// The ranges one append hands to the kernel. Neither reaches into the newest half of the
/// retained window, so those bytes stay cached even if already clean (after an fsync, or
/// written back by the kernel's timer on a slow partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    /// Bytes that passed half the window since the last advice: their writeback starts now
    /// (and those already clean leave the cache).
    pub write_back: Option<Range<u64>>,
    /// Bytes that left the window since the last advice, handed to writeback by an earlier
    /// one: dropped from the cache if clean by now.
    pub drop: Option<Range<u64>>,
}

/// Where a segment's drop-behind stands. Positions only grow, except through truncation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropBehind {
    /// Segment size when the last advice was planned.
    advised_at: u64,
    /// Everything below this has been handed to writeback.
    written_back: u64,
    /// Everything below this has been advised out of the cache.
    dropped: u64,
    /// Where this tracker started: bytes below were on disk before and are never advised.
    floor: u64,
}

impl DropBehind {
    /// A tracker for a segment found on disk with `size` bytes: what it held before is left to
    /// the kernel (advising it all at once could drop bytes readers are about to want).
    pub fn starting_at(size: u64) -> Self {
        DropBehind {
            advised_at: size,
            written_back: size,
            dropped: size,
            floor: size,
        }
    }

    /// The advice due after the segment has grown to `size` bytes, keeping between half and
    /// all of the newest `retain` bytes cached; `None` when `retain` is 0 (drop-behind off) or
    /// less than a step (a quarter of `retain`, at least 1 MiB) was written since the last
    /// advice.
    pub fn after_append(&mut self, size: u64, retain: u64) -> Option<Advice> {
        if retain == 0 {
            return None;
        }
        if size < self.advised_at {
            self.truncated(size);
        }
        let step = (retain / 4).max(MIN_STEP_BYTES);
        if size < self.advised_at.saturating_add(step) {
            return None;
        }
        self.advised_at = size;
        // Half a window behind the end: whole pages, well before the page appends go to.
        let write_back_end = size.saturating_sub(retain / 2) & !(PAGE_BYTES - 1);
        let handed_before = self.written_back;
        let write_back = (write_back_end > self.written_back).then(|| {
            let range = self.written_back..write_back_end;
            self.written_back = write_back_end;
            range
        });
        let drop_end = (size.saturating_sub(retain) & !(PAGE_BYTES - 1)).min(handed_before);
        let drop = (drop_end > self.dropped).then(|| {
            // Start a step back: pages still under writeback when the last advice ran were
            // skipped then and are usually clean now (and so is a folio straddling its end).
            let back = step.max(FOLIO_MAX_BYTES);
            let range = self.dropped.saturating_sub(back).max(self.floor)..drop_end;
            self.dropped = drop_end;
            range
        });
        (write_back.is_some() || drop.is_some()).then_some(Advice { write_back, drop })
    }

    /// For a segment no longer active whose bytes all lie a window or more behind the log end:
    /// the range still to drop (its rolled tail, fsynced by the roll), once; `None` when done.
    pub fn finish(&mut self, size: u64, retain: u64) -> Option<Range<u64>> {
        if self.dropped >= size {
            return None;
        }
        let back = (retain / 4).max(MIN_STEP_BYTES).max(FOLIO_MAX_BYTES);
        let range = self.dropped.saturating_sub(back).max(self.floor)..size;
        *self = DropBehind::starting_at(size);
        self.floor = range.start;
        Some(range)
    }

    /// The segment was cut to `size` bytes.
    pub fn truncated(&mut self, size: u64) {
        self.advised_at = self.advised_at.min(size);
        self.written_back = self.written_back.min(size);
        self.dropped = self.dropped.min(size);
        self.floor = self.floor.min(size);
    }
}

/// Advises `range` of `file` out of the page cache (its dirty pages: into writeback). Failures
/// are logged, not returned: the advice is only a hint, and no failure of it can leave the
/// file different from what was written.
pub fn uncache(file: &File, path: &Path, range: Range<u64>) {
    let Some(len) = NonZeroU64::new(range.end.saturating_sub(range.start)) else {
        return;
    };
    if let Err(error) = dont_need(file, range.start, len) {
        tracing::warn!(file = %path.display(), %error, "page-cache advice failed");
    }
}

#[cfg(target_os = "linux")]
fn dont_need(file: &File, offset: u64, len: NonZeroU64) -> std::io::Result<()> {
    rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed).map_err(Into::into)
}

/// Elsewhere the advice may not start writeback, so it is not given at all.
#[cfg(not(target_os = "linux"))]
fn dont_need(_file: &File, _offset: u64, _len: NonZeroU64) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn off_when_nothing_is_retained() {
        let mut db = DropBehind::default();
        assert_eq!(db.after_append(10 * 1024 * MIB, 0), None);
    }

    /// `(write_back, drop)` of one advice.
    type Ranges = (Option<Range<u64>>, Option<Range<u64>>);

    /// The advice after growing to `mib` MiB.
    fn step(db: &mut DropBehind, mib: u64, retain: u64) -> Option<Ranges> {
        db.after_append(mib * MIB, retain)
            .map(|a| (a.write_back, a.drop))
    }

    fn mib(range: Range<u64>) -> Option<Range<u64>> {
        Some(range.start * MIB..range.end * MIB)
    }

    #[test]
    fn ranges_are_advised_half_a_window_behind_then_dropped_a_window_behind() {
        let mut db = DropBehind::default();
        let retain = 16 * MIB; // step: 4 MiB
                               // Nothing is half a window behind yet.
        for end in [3, 4, 7, 8] {
            assert_eq!(step(&mut db, end, retain), None, "at {end} MiB");
        }
        assert_eq!(step(&mut db, 12, retain), Some((mib(0..4), None)));
        assert_eq!(step(&mut db, 15, retain), None, "less than a step since");
        assert_eq!(step(&mut db, 16, retain), Some((mib(4..8), None)));
        // 20 MiB: the first 4 MiB left the window; they were handed to writeback before.
        assert_eq!(step(&mut db, 20, retain), Some((mib(8..12), mib(0..4))));
        // Each later drop starts a step before the last one ended.
        assert_eq!(step(&mut db, 24, retain), Some((mib(12..16), mib(0..8))));
        assert_eq!(step(&mut db, 28, retain), Some((mib(16..20), mib(4..12))));
    }

    #[test]
    fn the_newest_half_window_is_never_advised() {
        let mut db = DropBehind::default();
        let retain = 16 * MIB;
        let mut size = 0;
        for i in 0..500u64 {
            size += 100_000 + i * 1_000;
            if let Some(a) = db.after_append(size, retain) {
                for range in a.write_back.iter().chain(a.drop.iter()) {
                    assert!(range.end <= size - retain / 2, "{range:?} at {size}");
                    assert_eq!(range.end % PAGE_BYTES, 0, "whole pages: {range:?}");
                }
            }
        }
    }

    #[test]
    fn never_drops_bytes_not_yet_handed_to_writeback() {
        let mut db = DropBehind::default();
        let retain = 4 * MIB; // step: 1 MiB
        assert_eq!(step(&mut db, 1, retain), None);
        // One huge append: writeback starts for all but half a window; nothing was handed to
        // writeback before, so nothing is dropped yet.
        assert_eq!(step(&mut db, 100, retain), Some((mib(0..98), None)));
        assert_eq!(step(&mut db, 101, retain), Some((mib(98..99), mib(0..97))));
    }

    #[test]
    fn a_rolled_segment_is_finished_once() {
        let mut db = DropBehind::default();
        let retain = 4 * MIB;
        for end in 1..=10 {
            db.after_append(end * MIB, retain);
        }
        // Dropped up to 6 MiB so far; the rest goes, from a step (at least 2 MiB) back.
        assert_eq!(db.finish(10 * MIB + 7, retain), Some(4 * MIB..10 * MIB + 7));
        assert_eq!(db.finish(10 * MIB + 7, retain), None);
        // Loaded from disk: left to the kernel.
        assert_eq!(DropBehind::starting_at(MIB).finish(MIB, retain), None);
    }

    #[test]
    fn truncation_moves_positions_back() {
        let mut db = DropBehind::default();
        let retain = 4 * MIB;
        for end in 1..=20 {
            db.after_append(end * MIB, retain);
        }
        db.truncated(2 * MIB);
        assert_eq!(db.after_append(2 * MIB + 1, retain), None);
        assert_eq!(step(&mut db, 3, retain), None);
        assert_eq!(step(&mut db, 5, retain), Some((mib(2..3), None)));
    }

    #[test]
    fn bytes_found_on_disk_are_left_to_the_kernel() {
        let mut db = DropBehind::starting_at(100 * MIB);
        let retain = 4 * MIB;
        assert_eq!(step(&mut db, 101, retain), None);
        assert_eq!(step(&mut db, 103, retain), Some((mib(100..101), None)));
        assert_eq!(
            step(&mut db, 106, retain),
            Some((mib(101..104), mib(100..101)))
        );
    }

    #[test]
    fn advice_on_a_real_file_keeps_its_bytes() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment.log");
        let mut file = File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .expect("open");
        let mut db = DropBehind::default();
        let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
        for i in 1..=12 {
            file.write_all(&chunk).expect("write");
            if let Some(advice) = db.after_append(i * MIB, 4 * MIB) {
                for range in advice.write_back.into_iter().chain(advice.drop) {
                    uncache(&file, &path, range);
                }
            }
        }
        let back = std::fs::read(&path).expect("read back");
        assert_eq!(back.len() as u64, 12 * MIB);
        assert!(back.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
    }
}
