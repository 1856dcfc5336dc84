//! Sparse per-segment indexes: offset -> file position (`.index`) and timestamp -> offset
//! (`.timeindex`).
//!
//! Entries live in memory while a segment is open and are written to their file incrementally
//! (at flush, roll and close) rather than on every append: an index is only trusted for segments
//! below the recovery point, and the log syncs a segment's index files when it rolls, so the
//! active segment's index is always rebuilt by recovery after a crash. Files use Kafka's entry
//! layout (relative offset u32 + position u32; timestamp i64 + relative offset u32, big endian).

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

/// One offset index entry, offsets absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPosition {
    /// Base offset of the indexed batch.
    pub offset: i64,
    /// Byte position of that batch in the segment file.
    pub position: u32,
}

/// One time index entry, offsets absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// Largest timestamp seen in the segment up to and including the indexed batch.
    pub timestamp_ms: i64,
    /// Base offset of the batch where that timestamp was reached.
    pub offset: i64,
}

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// Shared mechanics of both index kinds: an entry list mirrored to a file.
#[derive(Debug)]
struct IndexFile<E> {
    path: PathBuf,
    entries: Vec<E>,
    /// Entries already written to the file.
    persisted: usize,
}

impl<E: Copy> IndexFile<E> {
    fn write_pending(&mut self, encode: impl Fn(&E, &mut Vec<u8>)) -> Result<()> {
        if self.persisted == self.entries.len() {
            return Ok(());
        }
        let mut out = Vec::new();
        for e in &self.entries[self.persisted..] {
            encode(e, &mut out);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| StorageError::io(&self.path, e))?;
        (&file)
            .write_all(&out)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.persisted = self.entries.len();
        Ok(())
    }

    fn rewrite(&mut self, entry_bytes: usize) -> Result<()> {
        // Cut the file back to the entries we keep (creating it if missing, so an index with no
        // entries still exists and is not mistaken for a lost one); later entries are appended
        // by write_pending.
        self.persisted = self.persisted.min(self.entries.len());
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .and_then(|f| f.set_len((self.persisted * entry_bytes) as u64))
            .map_err(|e| StorageError::io(&self.path, e))
    }

    fn sync(&self) -> Result<()> {
        match File::open(&self.path) {
            Ok(f) => f.sync_all().map_err(|e| StorageError::io(&self.path, e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&self.path, e)),
        }
    }
}

/// Reads an index file; a missing file is empty.
fn read_all(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Sparse offset index of one segment.
#[derive(Debug)]
pub struct OffsetIndex {
    base_offset: i64,
    file: IndexFile<OffsetPosition>,
}

impl OffsetIndex {
    /// An empty index that will be written to `path`; any existing file is cut to nothing.
    pub fn create(path: PathBuf, base_offset: i64) -> Result<Self> {
        let mut index = OffsetIndex {
            base_offset,
            file: IndexFile {
                path,
                entries: Vec::new(),
                persisted: 0,
            },
        };
        index.file.rewrite(OFFSET_ENTRY_BYTES)?;
        Ok(index)
    }

    /// Loads `path`. Returns `None` if the file is missing or fails a sanity check (entries not
    /// increasing, a partial entry, a position at or past `segment_size`): the caller rebuilds.
    pub fn load(path: PathBuf, base_offset: i64, segment_size: u64) -> Result<Option<Self>> {
        let data = read_all(&path)?;
        if data.is_empty() && !path.exists() {
            return Ok(None);
        }
        if data.len() % OFFSET_ENTRY_BYTES != 0 {
            return Ok(None);
        }
        let mut entries = Vec::with_capacity(data.len() / OFFSET_ENTRY_BYTES);
        for chunk in data.chunks_exact(OFFSET_ENTRY_BYTES) {
            let rel = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            let entry = OffsetPosition {
                offset: base_offset + i64::from(rel),
                position,
            };
            let increasing = entries.last().is_none_or(|last: &OffsetPosition| {
                entry.offset > last.offset && entry.position > last.position
            });
            if !increasing || u64::from(position) >= segment_size {
                return Ok(None);
            }
            entries.push(entry);
        }
        let persisted = entries.len();
        Ok(Some(OffsetIndex {
            base_offset,
            file: IndexFile {
                path,
                entries,
                persisted,
            },
        }))
    }

    /// Adds an entry; offsets and positions must increase.
    pub fn push(&mut self, offset: i64, position: u32) {
        debug_assert!(offset >= self.base_offset);
        debug_assert!(self
            .file
            .entries
            .last()
            .is_none_or(|l| l.offset < offset && l.position < position));
        self.file.entries.push(OffsetPosition { offset, position });
    }

    /// The last entry at or below `offset`, or the segment start.
    pub fn lookup(&self, offset: i64) -> OffsetPosition {
        let entries = &self.file.entries;
        let idx = entries.partition_point(|e| e.offset <= offset);
        if idx == 0 {
            OffsetPosition {
                offset: self.base_offset,
                position: 0,
            }
        } else {
            entries[idx - 1]
        }
    }

    /// Drops entries at or above `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        let keep = self.file.entries.partition_point(|e| e.offset < offset);
        self.file.entries.truncate(keep);
        self.file.rewrite(OFFSET_ENTRY_BYTES)
    }

    /// Writes entries not yet in the file.
    pub fn write_pending(&mut self) -> Result<()> {
        let base = self.base_offset;
        self.file.write_pending(|e, out| {
            out.extend_from_slice(&((e.offset - base) as u32).to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        })
    }

    /// fsyncs the file.
    pub fn sync(&self) -> Result<()> {
        self.file.sync()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.file.entries.len()
    }

    /// Whether the index has no entries.
    pub fn is_empty(&self) -> bool {
        self.file.entries.is_empty()
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<OffsetPosition> {
        self.file.entries.last().copied()
    }
}

/// Sparse time index of one segment.
#[derive(Debug)]
pub struct TimeIndex {
    base_offset: i64,
    file: IndexFile<TimestampOffset>,
}

impl TimeIndex {
    /// An empty index that will be written to `path`; any existing file is cut to nothing.
    pub fn create(path: PathBuf, base_offset: i64) -> Result<Self> {
        let mut index = TimeIndex {
            base_offset,
            file: IndexFile {
                path,
                entries: Vec::new(),
                persisted: 0,
            },
        };
        index.file.rewrite(TIME_ENTRY_BYTES)?;
        Ok(index)
    }

    /// Loads `path`; `None` if missing or insane (timestamps or offsets not increasing, offsets
    /// at or past `next_offset` of the segment, a partial entry).
    pub fn load(path: PathBuf, base_offset: i64, next_offset: i64) -> Result<Option<Self>> {
        let data = read_all(&path)?;
        if data.is_empty() && !path.exists() {
            return Ok(None);
        }
        if data.len() % TIME_ENTRY_BYTES != 0 {
            return Ok(None);
        }
        let mut entries = Vec::with_capacity(data.len() / TIME_ENTRY_BYTES);
        for chunk in data.chunks_exact(TIME_ENTRY_BYTES) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let rel = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            let entry = TimestampOffset {
                timestamp_ms: i64::from_be_bytes(ts),
                offset: base_offset + i64::from(rel),
            };
            let increasing = entries.last().is_none_or(|last: &TimestampOffset| {
                entry.timestamp_ms > last.timestamp_ms && entry.offset >= last.offset
            });
            if !increasing || entry.offset >= next_offset {
                return Ok(None);
            }
            entries.push(entry);
        }
        let persisted = entries.len();
        Ok(Some(TimeIndex {
            base_offset,
            file: IndexFile {
                path,
                entries,
                persisted,
            },
        }))
    }

    /// Adds an entry if `timestamp_ms` is larger than the last one's.
    pub fn maybe_push(&mut self, timestamp_ms: i64, offset: i64) {
        if self
            .file
            .entries
            .last()
            .is_none_or(|l| timestamp_ms > l.timestamp_ms)
        {
            self.file.entries.push(TimestampOffset {
                timestamp_ms,
                offset,
            });
        }
    }

    /// The last entry whose timestamp is strictly below `timestamp_ms`: every record before its
    /// offset is older than `timestamp_ms`, so a search may start from there.
    pub fn lookup_before(&self, timestamp_ms: i64) -> Option<TimestampOffset> {
        let entries = &self.file.entries;
        let idx = entries.partition_point(|e| e.timestamp_ms < timestamp_ms);
        (idx > 0).then(|| entries[idx - 1])
    }

    /// Drops entries at or above `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        let keep = self.file.entries.partition_point(|e| e.offset < offset);
        self.file.entries.truncate(keep);
        self.file.rewrite(TIME_ENTRY_BYTES)
    }

    /// Writes entries not yet in the file.
    pub fn write_pending(&mut self) -> Result<()> {
        let base = self.base_offset;
        self.file.write_pending(|e, out| {
            out.extend_from_slice(&e.timestamp_ms.to_be_bytes());
            out.extend_from_slice(&((e.offset - base) as u32).to_be_bytes());
        })
    }

    /// fsyncs the file.
    pub fn sync(&self) -> Result<()> {
        self.file.sync()
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<TimestampOffset> {
        self.file.entries.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_truncate_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000100.index");
        let mut idx = OffsetIndex::create(path.clone(), 100).expect("create");
        assert_eq!(idx.lookup(150).position, 0);
        idx.push(110, 4096);
        idx.push(120, 8192);
        idx.push(130, 12288);
        assert_eq!(
            idx.lookup(119),
            OffsetPosition {
                offset: 110,
                position: 4096
            }
        );
        assert_eq!(idx.lookup(120).position, 8192);
        assert_eq!(idx.lookup(105).position, 0);
        idx.write_pending().expect("write");

        let loaded = OffsetIndex::load(path.clone(), 100, 20_000)
            .expect("load")
            .expect("sane");
        assert_eq!(loaded.len(), 3);

        idx.truncate_to(120).expect("truncate");
        assert_eq!(idx.len(), 1);
        let loaded = OffsetIndex::load(path.clone(), 100, 20_000)
            .expect("load")
            .expect("sane");
        assert_eq!(
            loaded.last(),
            Some(OffsetPosition {
                offset: 110,
                position: 4096
            })
        );

        // A position beyond the segment means the index is stale: rebuild.
        assert!(OffsetIndex::load(path.clone(), 100, 100)
            .expect("load")
            .is_none());
        // A torn entry means the same.
        std::fs::write(&path, [0u8; 5]).expect("write");
        assert!(OffsetIndex::load(path, 100, 20_000)
            .expect("load")
            .is_none());
    }

    #[test]
    fn time_index_keeps_increasing_timestamps_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.timeindex");
        let mut idx = TimeIndex::create(path.clone(), 0).expect("create");
        idx.maybe_push(1000, 0);
        idx.maybe_push(900, 5);
        idx.maybe_push(2000, 10);
        assert_eq!(
            idx.last(),
            Some(TimestampOffset {
                timestamp_ms: 2000,
                offset: 10
            })
        );
        assert_eq!(idx.lookup_before(1000), None);
        assert_eq!(idx.lookup_before(1500).map(|e| e.offset), Some(0));
        assert_eq!(idx.lookup_before(5000).map(|e| e.offset), Some(10));
        idx.write_pending().expect("write");
        let loaded = TimeIndex::load(path.clone(), 0, 11)
            .expect("load")
            .expect("sane");
        assert_eq!(loaded.last(), idx.last());
        assert!(TimeIndex::load(path, 0, 10).expect("load").is_none());
    }
}
