//! Aborted-transaction index of one segment, `<base_offset:020>.txnindex` (Kafka's
//! `TransactionIndex`): the transactions aborted by markers in that segment, which
//! read_committed fetches return so consumers can drop the aborted records.
//!
//! The file is a sequence of fixed 34-byte entries (`version:i16 = 0, producer_id:i64,
//! first_offset:i64, last_offset:i64, last_stable_offset:i64`, big endian), byte-compatible with
//! Kafka's. Aborts are rare, so the whole index is kept in memory and each append opens, writes
//! and closes the file. Invariant: last offsets strictly increase, in memory and on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::checkpoint;
use crate::error::{Result, StorageError};

/// Size of one index entry on disk.
pub const TXN_INDEX_ENTRY_LEN: usize = 34;
/// The only entry version (Kafka's `AbortedTxn.CurrentVersion`).
const ENTRY_VERSION: i16 = 0;

/// One aborted transaction as recorded in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer whose transaction was aborted.
    pub producer_id: i64,
    /// Offset of the transaction's first batch.
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
    /// Last stable offset right after the marker (lets fetches stop scanning segments early).
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; TXN_INDEX_ENTRY_LEN] {
        let mut out = [0u8; TXN_INDEX_ENTRY_LEN];
        out[..2].copy_from_slice(&ENTRY_VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    /// Decodes one entry; `None` for an unknown version.
    fn decode(chunk: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&chunk[at..at + 8]);
            i64::from_be_bytes(b)
        };
        if i16::from_be_bytes([chunk[0], chunk[1]]) != ENTRY_VERSION {
            return None;
        }
        Some(AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        })
    }

    /// A transaction's data always precedes its marker, so `first_offset < last_offset`; this
    /// also rejects the all-zero tail a crash can leave in a file whose size reached disk before
    /// its data did.
    fn is_well_formed(&self) -> bool {
        0 <= self.first_offset && self.first_offset < self.last_offset
    }
}

/// The aborted-transaction index of one segment, mirrored in memory.
#[derive(Debug)]
pub struct TxnIndex {
    path: PathBuf,
    entries: Vec<AbortedTxn>,
    /// Set when an append may have created the file, whose directory entry then needs an fsync.
    dir_sync_pending: AtomicBool,
}

impl TxnIndex {
    /// Opens the index at `path`; a missing file is an empty index (the file is created by the
    /// first append). A partial trailing entry or entries that break the ordering (a crash in the
    /// middle of an append) are cut off, on disk too.
    pub fn open(path: PathBuf) -> Result<Self> {
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        let entries = decode_valid_prefix(&data);
        let valid_len = entries.len() * TXN_INDEX_ENTRY_LEN;
        if valid_len != data.len() {
            tracing::warn!(
                path = %path.display(),
                valid_bytes = valid_len,
                file_bytes = data.len(),
                "cutting invalid tail of transaction index"
            );
            set_file_len(&path, valid_len)?;
        }
        Ok(TxnIndex {
            path,
            entries,
            dir_sync_pending: AtomicBool::new(false),
        })
    }

    /// Appends an aborted transaction; its last offset must exceed the previous entry's.
    pub fn append(&mut self, txn: AbortedTxn) -> Result<()> {
        let invalid = |reason| StorageError::InvalidTxnState {
            producer_id: txn.producer_id,
            reason,
        };
        if !txn.is_well_formed() {
            return Err(invalid(
                "aborted transaction must end after its first offset",
            ));
        }
        if self
            .entries
            .last()
            .is_some_and(|last| last.last_offset >= txn.last_offset)
        {
            return Err(invalid(
                "aborted transaction does not end after the previous one",
            ));
        }
        // Writing at the position the entries imply (not O_APPEND) overwrites whatever a failed
        // earlier write may have left, so the file never holds garbage between entries.
        let position = (self.entries.len() * TXN_INDEX_ENTRY_LEN) as u64;
        let io = |e| StorageError::io(&self.path, e);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(io)?;
        file.seek(SeekFrom::Start(position)).map_err(io)?;
        file.write_all(&txn.encode()).map_err(io)?;
        if self.entries.is_empty() {
            self.dir_sync_pending.store(true, Ordering::Relaxed);
        }
        self.entries.push(txn);
        Ok(())
    }

    /// Drops the entries whose marker is at or after `offset` (the log was truncated there).
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        let kept = self.entries.partition_point(|e| e.last_offset < offset);
        if kept == self.entries.len() {
            return Ok(());
        }
        // Kept entries are a prefix of the file, so shortening it is the rewrite.
        set_file_len(&self.path, kept * TXN_INDEX_ENTRY_LEN)?;
        self.entries.truncate(kept);
        Ok(())
    }

    /// Adds to `out` the transactions overlapping `[fetch_start, fetch_end)` (Kafka's
    /// `collectAbortedTxns`). Returns `true` when an entry's last stable offset reaches
    /// `fetch_end`, meaning later segments cannot hold aborts relevant to this fetch.
    pub fn collect(&self, fetch_start: i64, fetch_end: i64, out: &mut Vec<AbortedTxn>) -> bool {
        for txn in &self.entries {
            if txn.last_offset >= fetch_start && txn.first_offset < fetch_end {
                out.push(*txn);
            }
            if txn.last_stable_offset >= fetch_end {
                return true;
            }
        }
        false
    }

    /// All entries, in marker order.
    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    /// Path of the index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes appended entries durable (the file and, after its creation, its directory entry).
    pub fn sync(&self) -> Result<()> {
        match File::open(&self.path) {
            Ok(file) => file
                .sync_all()
                .map_err(|e| StorageError::io(&self.path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io(&self.path, e)),
        }
        if self.dir_sync_pending.swap(false, Ordering::Relaxed) {
            if let Err(e) = checkpoint::sync_dir(checkpoint::parent_of(&self.path)) {
                self.dir_sync_pending.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Empties the index and its file (the segment was emptied).
    pub fn reset(&mut self) -> Result<()> {
        set_file_len(&self.path, 0)?;
        self.entries.clear();
        Ok(())
    }

    /// Deletes the index file (the segment is being deleted); a missing file is fine.
    pub fn delete(self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&self.path, e)),
        }
    }
}

/// Entries up to the first partial, unknown-version, malformed or out-of-order one.
fn decode_valid_prefix(data: &[u8]) -> Vec<AbortedTxn> {
    let mut entries: Vec<AbortedTxn> = Vec::with_capacity(data.len() / TXN_INDEX_ENTRY_LEN);
    for chunk in data.chunks_exact(TXN_INDEX_ENTRY_LEN) {
        let Some(txn) = AbortedTxn::decode(chunk) else {
            break;
        };
        let ordered = entries
            .last()
            .is_none_or(|prev| prev.last_offset < txn.last_offset);
        if !ordered || !txn.is_well_formed() {
            break;
        }
        entries.push(txn);
    }
    entries
}

/// Sets the file's length; a missing file already has length 0.
fn set_file_len(path: &Path, len: usize) -> Result<()> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && len == 0 => return Ok(()),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    file.set_len(len as u64)
        .map_err(|e| StorageError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(producer_id: i64, first_offset: i64, last_offset: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset,
            last_offset,
            last_stable_offset: lso,
        }
    }

    fn index_path(dir: &Path) -> PathBuf {
        dir.join(format!("{:020}.txnindex", 0))
    }

    fn filled(dir: &Path, txns: &[AbortedTxn]) -> TxnIndex {
        let mut index = TxnIndex::open(index_path(dir)).expect("open");
        for t in txns {
            index.append(*t).expect("append");
        }
        index
    }

    fn file_len(path: &Path) -> u64 {
        fs::metadata(path).expect("metadata").len()
    }

    #[test]
    fn missing_file_is_an_empty_index_and_is_not_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = TxnIndex::open(index_path(dir.path())).expect("open");
        assert!(index.entries().is_empty());
        index.sync().expect("sync without a file");
        assert!(!index.path().exists());
    }

    #[test]
    fn entries_survive_reopen_in_kafka_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let txns = [txn(7, 0, 5, 6), txn(8, 3, 9, 10)];
        let index = filled(dir.path(), &txns);
        index.sync().expect("sync");
        let raw = fs::read(index.path()).expect("raw");
        assert_eq!(raw.len(), 2 * TXN_INDEX_ENTRY_LEN);
        assert_eq!(&raw[..2], &[0, 0], "version 0");
        assert_eq!(&raw[2..10], &7i64.to_be_bytes());
        assert_eq!(&raw[18..26], &5i64.to_be_bytes());
        let reopened = TxnIndex::open(index.path().to_path_buf()).expect("reopen");
        assert_eq!(reopened.entries(), &txns);
    }

    #[test]
    fn append_requires_increasing_last_offsets_and_sane_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = filled(dir.path(), &[txn(1, 0, 10, 11)]);
        for bad in [
            txn(2, 5, 10, 11),
            txn(2, 5, 9, 11),
            txn(2, 12, 12, 13),
            txn(2, 15, 12, 16),
        ] {
            assert!(
                matches!(
                    index.append(bad),
                    Err(StorageError::InvalidTxnState { producer_id: 2, .. })
                ),
                "{bad:?} must be refused"
            );
        }
        assert_eq!(index.entries().len(), 1);
        assert_eq!(file_len(index.path()), TXN_INDEX_ENTRY_LEN as u64);
    }

    #[test]
    fn partial_trailing_entry_is_cut_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = filled(dir.path(), &[txn(1, 0, 4, 5), txn(2, 1, 8, 9)]);
        let path = index.path().to_path_buf();
        let mut raw = fs::read(&path).expect("raw");
        raw.extend_from_slice(&txn(3, 9, 12, 13).encode()[..20]);
        fs::write(&path, &raw).expect("write torn tail");

        let reopened = TxnIndex::open(path.clone()).expect("reopen");
        assert_eq!(reopened.entries(), &[txn(1, 0, 4, 5), txn(2, 1, 8, 9)]);
        assert_eq!(
            file_len(&path),
            2 * TXN_INDEX_ENTRY_LEN as u64,
            "file truncated"
        );
    }

    #[test]
    fn out_of_order_zeroed_or_unknown_version_tail_is_cut_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = index_path(dir.path());
        let good = txn(1, 0, 10, 11);
        let tails: [[u8; TXN_INDEX_ENTRY_LEN]; 3] = [
            txn(2, 1, 10, 11).encode(), // last offset does not increase
            [0u8; TXN_INDEX_ENTRY_LEN], // zero fill
            {
                let mut e = txn(2, 12, 20, 21).encode();
                e[1] = 1; // version 1
                e
            },
        ];
        for tail in tails {
            let mut raw = good.encode().to_vec();
            raw.extend_from_slice(&tail);
            raw.extend_from_slice(&txn(3, 30, 40, 41).encode()); // valid-looking, after garbage
            fs::write(&path, &raw).expect("write");
            let index = TxnIndex::open(path.clone()).expect("open");
            assert_eq!(index.entries(), &[good]);
            assert_eq!(file_len(&path), TXN_INDEX_ENTRY_LEN as u64);
        }
    }

    #[test]
    fn append_overwrites_garbage_left_by_a_failed_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = filled(dir.path(), &[txn(1, 0, 4, 5)]);
        let mut raw = fs::read(index.path()).expect("raw");
        raw.extend_from_slice(&[0xab; 10]);
        fs::write(index.path(), &raw).expect("simulate torn append");
        index.append(txn(2, 5, 9, 10)).expect("append");
        let reopened = TxnIndex::open(index.path().to_path_buf()).expect("reopen");
        assert_eq!(reopened.entries(), &[txn(1, 0, 4, 5), txn(2, 5, 9, 10)]);
    }

    #[test]
    fn truncate_to_drops_markers_at_or_after_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let txns = [txn(1, 0, 4, 5), txn(2, 2, 8, 9), txn(3, 9, 12, 13)];
        let mut index = filled(dir.path(), &txns);
        index.truncate_to(13).expect("no-op");
        assert_eq!(index.entries().len(), 3);
        index.truncate_to(8).expect("truncate");
        assert_eq!(index.entries(), &txns[..1]);
        assert_eq!(file_len(index.path()), TXN_INDEX_ENTRY_LEN as u64);
        let reopened = TxnIndex::open(index.path().to_path_buf()).expect("reopen");
        assert_eq!(reopened.entries(), &txns[..1]);
        // Appending after a truncation continues from the cut.
        index
            .append(txn(4, 5, 7, 8))
            .expect("append after truncate");
        assert_eq!(index.entries().len(), 2);
    }

    #[test]
    fn reset_empties_memory_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = filled(dir.path(), &[txn(1, 0, 4, 5)]);
        index.reset().expect("reset");
        assert!(index.entries().is_empty());
        assert_eq!(file_len(index.path()), 0);
        index.append(txn(1, 0, 2, 3)).expect("append after reset");
        let mut missing = TxnIndex::open(dir.path().join("missing.txnindex")).expect("open");
        missing.reset().expect("reset without a file");
    }

    #[test]
    fn collect_returns_overlapping_txns_and_reports_completeness() {
        let dir = tempfile::tempdir().expect("tempdir");
        let txns = [txn(1, 0, 4, 5), txn(2, 3, 8, 9), txn(3, 10, 15, 20)];
        let index = filled(dir.path(), &txns);
        let collect = |start, end| {
            let mut out = Vec::new();
            let complete = index.collect(start, end, &mut out);
            (out, complete)
        };
        assert_eq!(collect(0, 3), (vec![txns[0]], true), "lso 5 >= 3: complete");
        assert_eq!(collect(4, 9), (vec![txns[0], txns[1]], true));
        assert_eq!(
            collect(5, 10),
            (vec![txns[1]], true),
            "first offset 10 is not < 10"
        );
        assert_eq!(collect(5, 11), (vec![txns[1], txns[2]], true));
        assert_eq!(collect(9, 20), (vec![txns[2]], true));
        assert_eq!(collect(16, 30), (vec![], false));
    }

    #[test]
    fn delete_removes_the_file_and_tolerates_its_absence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = filled(dir.path(), &[txn(1, 0, 4, 5)]);
        let path = index.path().to_path_buf();
        index.delete().expect("delete");
        assert!(!path.exists());
        TxnIndex::open(path)
            .expect("open")
            .delete()
            .expect("delete missing");
    }
}
