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
//! pages in a range and drops the clean ones; dirty pages and pages under writeback stay. So the
//! advice can cost a later read a disk access but never loses data, and, unlike
//! `sync_file_range` with a wait flag, it does not consume a writeback error that the next
//! fsync must report: durability is exactly what it was without it.

use std::fs::File;
use std::num::NonZeroU64;
use std::ops::Range;
use std::path::Path;

/// Smallest step between two advices, so that small appends do not cost a syscall each.
const MIN_STEP_BYTES: u64 = 1024 * 1024;

/// The ranges one append hands to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    /// Bytes written since the last advice: their writeback starts now.
    pub write_back: Range<u64>,
    /// Bytes more than the retained window behind the end, handed to writeback at least one
    /// step ago: dropped from the cache if clean by now.
    pub drop: Option<Range<u64>>,
}

/// Where a segment's drop-behind stands. Positions only grow, except through truncation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropBehind {
    /// Everything below this has been handed to writeback.
    written_back: u64,
    /// Everything below this has been advised out of the cache.
    dropped: u64,
}

impl DropBehind {
    /// The advice due after the segment has grown to `size` bytes, keeping the newest `retain`
    /// bytes cached; `None` when `retain` is 0 (drop-behind off) or less than a step (a quarter
    /// of `retain`, at least 1 MiB) was written since the last advice.
    pub fn after_append(&mut self, size: u64, retain: u64) -> Option<Advice> {
        if retain == 0 {
            return None;
        }
        if size < self.written_back {
            self.truncated(size);
        }
        let step = (retain / 4).max(MIN_STEP_BYTES);
        if size < self.written_back.saturating_add(step) {
            return None;
        }
        let previous = std::mem::replace(&mut self.written_back, size);
        let limit = size.saturating_sub(retain).min(previous);
        let drop = (limit > self.dropped).then(|| {
            // Start a step back: pages still under writeback when the last advice ran were
            // skipped then and are usually clean now.
            let from = self.dropped.saturating_sub(step);
            self.dropped = limit;
            from..limit
        });
        Some(Advice {
            write_back: previous..size,
            drop,
        })
    }

    /// The segment was cut to `size` bytes.
    pub fn truncated(&mut self, size: u64) {
        self.written_back = self.written_back.min(size);
        self.dropped = self.dropped.min(size);
    }
}

/// Hands `advice` to the kernel for `file`. Failures are logged, not returned: the advice is
/// only a hint, and no failure of it can leave the file different from what was written.
pub fn apply(file: &File, path: &Path, advice: &Advice) {
    let ranges = std::iter::once(&advice.write_back).chain(advice.drop.as_ref());
    for range in ranges {
        let Some(len) = NonZeroU64::new(range.end.saturating_sub(range.start)) else {
            continue;
        };
        if let Err(error) = dont_need(file, range.start, len) {
            tracing::warn!(segment = %path.display(), %error, "page-cache advice failed");
            return;
        }
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

    #[test]
    fn advises_once_per_step_and_keeps_the_newest_bytes() {
        let mut db = DropBehind::default();
        let retain = 16 * MIB; // step: 4 MiB
        assert_eq!(db.after_append(3 * MIB, retain), None);
        // First step: writeback starts, nothing is far enough behind to drop yet.
        let a = db
            .after_append(4 * MIB, retain)
            .expect("a step was written");
        assert_eq!(a.write_back, 0..4 * MIB);
        assert_eq!(a.drop, None);
        assert_eq!(db.after_append(7 * MIB, retain), None);
        for end in [8, 12, 16] {
            let a = db.after_append(end * MIB, retain).expect("a step");
            assert_eq!(a.write_back, (end - 4) * MIB..end * MIB);
            assert_eq!(a.drop, None, "within the retained window at {end} MiB");
        }
        // 20 MiB: the first 4 MiB are more than 16 MiB behind the end.
        let a = db.after_append(20 * MIB, retain).expect("a step");
        assert_eq!(a.write_back, 16 * MIB..20 * MIB);
        assert_eq!(a.drop, Some(0..4 * MIB));
        // Each later drop starts a step before the last one ended.
        let a = db.after_append(24 * MIB, retain).expect("a step");
        assert_eq!(a.drop, Some(0..8 * MIB));
        let a = db.after_append(28 * MIB, retain).expect("a step");
        assert_eq!(a.write_back, 24 * MIB..28 * MIB);
        assert_eq!(a.drop, Some(4 * MIB..12 * MIB));
    }

    #[test]
    fn never_drops_bytes_not_yet_handed_to_writeback() {
        let mut db = DropBehind::default();
        let retain = 4 * MIB; // step: 1 MiB
        db.after_append(MIB, retain).expect("a step");
        // One huge append: only what was handed to writeback by an earlier advice (below
        // 1 MiB) may be dropped now, although much more lies outside the window.
        let a = db.after_append(100 * MIB, retain).expect("a step");
        assert_eq!(a.write_back, MIB..100 * MIB);
        assert_eq!(a.drop, Some(0..MIB));
        let a = db.after_append(101 * MIB, retain).expect("a step");
        assert_eq!(a.drop, Some(0..97 * MIB));
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
        let a = db
            .after_append(3 * MIB, retain)
            .expect("a step after the cut");
        assert_eq!(a.write_back, 2 * MIB..3 * MIB);
        assert_eq!(a.drop, None);
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
                apply(&file, &path, &advice);
            }
        }
        let back = std::fs::read(&path).expect("read back");
        assert_eq!(back.len() as u64, 12 * MIB);
        assert!(back.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
    }
}
