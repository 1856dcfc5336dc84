//! [`RocksKv`]: the RocksDB-backed [`KvStore`]. The only module of this crate that imports
//! `rocksdb`.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    DBWithThreadMode, Direction, IteratorMode, Options, PrefixRange, ReadOptions, SingleThreaded,
    WriteBatch, WriteOptions,
};

use super::{KvOp, KvStore};
use crate::error::{Result, StorageError};

// Broker-local state is a few keys per partition, so memory stays small and fixed.
/// Memtable size per column family before it is flushed to an SST file.
const WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Block cache shared by all column families.
const BLOCK_CACHE_BYTES: usize = 8 * 1024 * 1024;
/// Total WAL size that forces memtable flushes. Without it, a rarely written column family keeps
/// old WAL files alive indefinitely.
const MAX_TOTAL_WAL_BYTES: u64 = 64 * 1024 * 1024;
/// Size at which RocksDB's own info log (`LOG`) is rotated.
const INFO_LOG_FILE_BYTES_MAX: usize = 1024 * 1024;
/// Rotated info logs kept.
const INFO_LOG_FILES_KEPT: usize = 4;

/// Explicitly single-threaded mode: `cf_handle` returns plain references, and the type does not
/// change if another crate enables rocksdb's `multi-threaded-cf` feature (which retypes `DB`).
/// Column families are only created at open, so nothing here needs the multi-threaded mode.
type Db = DBWithThreadMode<SingleThreaded>;

/// A [`KvStore`] in a RocksDB database. Every write syncs the WAL (see the trait's durability
/// note). Safe to share between threads.
#[derive(Debug)]
pub struct RocksKv {
    db: Db,
    /// The column families callers may use: those asked for at open. Others present on disk are
    /// opened (RocksDB requires it) but not exposed.
    cfs: Vec<String>,
}

impl RocksKv {
    /// Opens (creating if needed) the database at `path` with column families `cfs`, creating
    /// any that are missing. Usually called with [`COLUMN_FAMILIES`](super::COLUMN_FAMILIES).
    pub fn open(path: impl AsRef<Path>, cfs: &[&str]) -> Result<RocksKv> {
        let path = path.as_ref();
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let db_options = db_options(&cache);

        // RocksDB refuses to open a database without naming every column family on disk; ones a
        // newer or older StreamBus created are opened too, and stay invisible. A failure here
        // means no database yet (or an unreadable one, which `open` below reports).
        let mut to_open: Vec<String> = Db::list_cf(&db_options, path).unwrap_or_default();
        to_open.extend(cfs.iter().map(|name| (*name).to_owned()));
        to_open.sort();
        to_open.dedup();
        let descriptors = to_open
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(&cache)));

        let db = Db::open_cf_descriptors(&db_options, path, descriptors)
            .map_err(|e| kv_error(&format!("open {}", path.display()), e))?;
        let mut cfs: Vec<String> = cfs.iter().map(|name| (*name).to_owned()).collect();
        cfs.sort();
        cfs.dedup();
        Ok(RocksKv { db, cfs })
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        let unknown = || StorageError::UnknownColumnFamily(name.to_owned());
        if self
            .cfs
            .binary_search_by(|cf| cf.as_str().cmp(name))
            .is_err()
        {
            return Err(unknown());
        }
        // Every exposed name was opened, so a missing handle would be a bug; still an error, not
        // a panic.
        self.db.cf_handle(name).ok_or_else(unknown)
    }
}

fn db_options(cache: &Cache) -> Options {
    let mut options = cf_options(cache);
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    options.set_max_log_file_size(INFO_LOG_FILE_BYTES_MAX);
    options.set_keep_log_file_num(INFO_LOG_FILES_KEPT);
    options
}

fn cf_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    options.set_compression_type(DBCompressionType::Lz4);
    options
}

fn sync_write_options() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

fn kv_error(context: &str, error: rocksdb::Error) -> StorageError {
    StorageError::Kv(format!("{context}: {error}"))
}

impl KvStore for RocksKv {
    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let handle = self.cf(cf)?;
        self.db
            .get_cf(handle, key)
            .map_err(|e| kv_error(&format!("get in {cf}"), e))
    }

    fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let handle = self.cf(cf)?;
        self.db
            .put_cf_opt(handle, key, value, &sync_write_options())
            .map_err(|e| kv_error(&format!("put in {cf}"), e))
    }

    fn delete(&self, cf: &str, key: &[u8]) -> Result<()> {
        let handle = self.cf(cf)?;
        self.db
            .delete_cf_opt(handle, key, &sync_write_options())
            .map_err(|e| kv_error(&format!("delete in {cf}"), e))
    }

    fn write_batch(&self, ops: &[KvOp<'_>]) -> Result<()> {
        // Handles are resolved while building, before anything is written: an unknown column
        // family drops the whole batch.
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                KvOp::Put { cf, key, value } => batch.put_cf(self.cf(cf)?, key, value),
                KvOp::Delete { cf, key } => batch.delete_cf(self.cf(cf)?, key),
            }
        }
        self.db
            .write_opt(batch, &sync_write_options())
            .map_err(|e| kv_error("write batch", e))
    }

    fn scan_prefix(
        &self,
        cf: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let handle = self.cf(cf)?;
        let mut read_options = ReadOptions::default();
        // Bounds the iterator to the prefix inside RocksDB (no reading past the last match).
        read_options.set_iterate_range(PrefixRange(prefix));
        let iter = self.db.iterator_cf_opt(
            handle,
            read_options,
            IteratorMode::From(prefix, Direction::Forward),
        );
        let mut entries = Vec::with_capacity(limit.min(1024));
        for item in iter.take(limit) {
            let (key, value) = item.map_err(|e| kv_error(&format!("scan in {cf}"), e))?;
            // The range above already guarantees this; checked so a bound mistake cannot leak
            // other keys to the caller.
            if !key.starts_with(prefix) {
                break;
            }
            entries.push((key.into_vec(), value.into_vec()));
        }
        Ok(entries)
    }

    fn flush(&self) -> Result<()> {
        self.db
            .flush_wal(true)
            .map_err(|e| kv_error("flush wal", e))
    }
}

#[cfg(test)]
mod tests {
    use super::RocksKv;
    use crate::kv::{kv_conformance_tests, KvOp, KvStore, CF_BROKER, COLUMN_FAMILIES};
    use crate::StorageError;

    fn temp_store() -> (tempfile::TempDir, RocksKv) {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksKv::open(dir.path(), COLUMN_FAMILIES).unwrap();
        (dir, store)
    }

    kv_conformance_tests!(temp_store());

    #[test]
    fn data_survives_close_and_reopen() {
        let (dir, store) = temp_store();
        store.put(CF_BROKER, b"id", b"7").unwrap();
        store
            .write_batch(&[
                KvOp::put(CF_BROKER, b"cluster", b"c1"),
                KvOp::put(CF_BROKER, b"gone", b"x"),
                KvOp::delete(CF_BROKER, b"gone"),
            ])
            .unwrap();
        store.flush().unwrap();
        drop(store);

        let store = RocksKv::open(dir.path(), COLUMN_FAMILIES).unwrap();
        assert_eq!(store.get(CF_BROKER, b"id").unwrap(), Some(b"7".to_vec()));
        assert_eq!(
            store.get(CF_BROKER, b"cluster").unwrap(),
            Some(b"c1".to_vec())
        );
        assert_eq!(store.get(CF_BROKER, b"gone").unwrap(), None);
    }

    #[test]
    fn reopen_with_fewer_cfs_hides_the_others() {
        let (dir, store) = temp_store();
        drop(store);
        let store = RocksKv::open(dir.path(), &["extra", CF_BROKER]).unwrap();
        store.put("extra", b"k", b"v").unwrap();
        store.put(CF_BROKER, b"k", b"b").unwrap();
        drop(store);

        // `extra` is still on disk; opening without it must work and must not expose it.
        let store = RocksKv::open(dir.path(), &[CF_BROKER]).unwrap();
        assert_eq!(store.get(CF_BROKER, b"k").unwrap(), Some(b"b".to_vec()));
        assert!(matches!(
            store.get("extra", b"k"),
            Err(StorageError::UnknownColumnFamily(name)) if name == "extra"
        ));
        drop(store);

        let store = RocksKv::open(dir.path(), &["extra"]).unwrap();
        assert_eq!(store.get("extra", b"k").unwrap(), Some(b"v".to_vec()));
    }
}
