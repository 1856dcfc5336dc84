//! Broker-local key-value state that is not a log (recovery points, log start offsets, broker
//! identity, ...): the [`KvStore`] trait, its RocksDB implementation [`RocksKv`] and the in-memory
//! [`MemKv`] for tests. `rocks` is the only module of this crate that imports `rocksdb`.
//!
//! Keys and values are opaque bytes; callers own their encoding. Every call is blocking (RocksDB
//! reads and fsyncs), so async callers run it on a blocking thread.

mod memory;
mod rocks;

pub use memory::MemKv;
pub use rocks::RocksKv;

use crate::error::Result;

/// Column family holding each partition's recovery point (offset up to which the log was flushed).
pub const CF_RECOVERY_POINTS: &str = "recovery_points";
/// Column family holding this broker's own state (broker id, cluster id, ...).
pub const CF_BROKER: &str = "broker";

/// Every column family StreamBus uses; open stores with this list so missing ones are created.
pub const COLUMN_FAMILIES: &[&str] = &[CF_RECOVERY_POINTS, CF_BROKER];

/// One write in a [`KvStore::write_batch`]. Borrows its bytes: batches are built and applied on
/// the spot, so owning copies would only add allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp<'a> {
    /// Set `key` to `value` in column family `cf`.
    Put {
        /// Column family name.
        cf: &'a str,
        /// Key bytes.
        key: &'a [u8],
        /// Value bytes.
        value: &'a [u8],
    },
    /// Remove `key` from column family `cf` (no error if absent).
    Delete {
        /// Column family name.
        cf: &'a str,
        /// Key bytes.
        key: &'a [u8],
    },
}

impl<'a> KvOp<'a> {
    /// A [`KvOp::Put`].
    pub fn put(cf: &'a str, key: &'a [u8], value: &'a [u8]) -> Self {
        KvOp::Put { cf, key, value }
    }

    /// A [`KvOp::Delete`].
    pub fn delete(cf: &'a str, key: &'a [u8]) -> Self {
        KvOp::Delete { cf, key }
    }

    /// The column family this operation writes to.
    pub fn cf(&self) -> &str {
        match self {
            KvOp::Put { cf, .. } | KvOp::Delete { cf, .. } => cf,
        }
    }
}

/// A small, durable key-value store with named column families.
///
/// Durability: every successful `put`, `delete` and `write_batch` is durable when it returns (the
/// RocksDB implementation syncs its write-ahead log on each write). The state kept here —
/// recovery points, checkpoints, broker identity — is written rarely and must not go backwards
/// after a crash, so an fsync per write costs little and removes a `sync` flag callers could get
/// wrong.
///
/// A column family not declared when the store was opened gives
/// [`StorageError::UnknownColumnFamily`](crate::StorageError::UnknownColumnFamily).
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// The value stored under `key`, if any.
    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Sets `key` to `value`, durably.
    fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes `key`, durably; removing an absent key is not an error.
    fn delete(&self, cf: &str, key: &[u8]) -> Result<()>;

    /// Applies `ops` in order, atomically and durably: readers see all of them or none, and a
    /// batch naming an unknown column family applies nothing.
    fn write_batch(&self, ops: &[KvOp<'_>]) -> Result<()>;

    /// Up to `limit` entries whose key starts with `prefix`, sorted by key (bytewise). An empty
    /// prefix matches every key; the explicit limit keeps every read bounded.
    fn scan_prefix(&self, cf: &str, prefix: &[u8], limit: usize)
        -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Makes everything written so far durable (syncs the write-ahead log). Writes are already
    /// synced one by one; this is for shutdown paths that want an explicit barrier.
    fn flush(&self) -> Result<()>;
}

/// Generates one `#[test]` per conformance case. `$make` builds `(guard, store)`; the guard (e.g.
/// a temp dir) lives until the test ends.
#[cfg(test)]
macro_rules! kv_conformance_tests {
    ($make:expr) => {
        kv_conformance_tests!(@cases $make;
            put_get_delete,
            write_batch_applies_all_ops_in_order,
            write_batch_with_unknown_cf_applies_nothing,
            scan_prefix_is_sorted_and_limited,
            unknown_cf_is_an_error,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let (_guard, store) = $make;
                crate::kv::conformance::$case(&store);
            }
        )*
    };
}
#[cfg(test)]
use kv_conformance_tests;

/// The behaviour every [`KvStore`] implementation must show; each implementation's tests run all
/// of it through `kv_conformance_tests!`.
#[cfg(test)]
mod conformance {
    use super::{KvOp, KvStore, CF_BROKER, CF_RECOVERY_POINTS};
    use crate::StorageError;

    pub(super) fn put_get_delete(store: &dyn KvStore) {
        assert_eq!(store.get(CF_BROKER, b"id").unwrap(), None);
        store.put(CF_BROKER, b"id", b"1").unwrap();
        assert_eq!(store.get(CF_BROKER, b"id").unwrap(), Some(b"1".to_vec()));
        store.put(CF_BROKER, b"id", b"2").unwrap();
        assert_eq!(store.get(CF_BROKER, b"id").unwrap(), Some(b"2".to_vec()));
        // Column families are separate key spaces.
        assert_eq!(store.get(CF_RECOVERY_POINTS, b"id").unwrap(), None);
        store.delete(CF_BROKER, b"id").unwrap();
        assert_eq!(store.get(CF_BROKER, b"id").unwrap(), None);
        store.delete(CF_BROKER, b"never-written").unwrap();
        store.flush().unwrap();
    }

    pub(super) fn write_batch_applies_all_ops_in_order(store: &dyn KvStore) {
        store.put(CF_BROKER, b"old", b"x").unwrap();
        let ops = [
            KvOp::put(CF_BROKER, b"a", b"1"),
            KvOp::put(CF_RECOVERY_POINTS, b"t-0", b"42"),
            KvOp::delete(CF_BROKER, b"old"),
            KvOp::put(CF_BROKER, b"b", b"2"),
            KvOp::delete(CF_BROKER, b"b"),
            KvOp::put(CF_BROKER, b"a", b"3"),
        ];
        store.write_batch(&ops).unwrap();
        assert_eq!(store.get(CF_BROKER, b"a").unwrap(), Some(b"3".to_vec()));
        assert_eq!(
            store.get(CF_RECOVERY_POINTS, b"t-0").unwrap(),
            Some(b"42".to_vec())
        );
        assert_eq!(store.get(CF_BROKER, b"old").unwrap(), None);
        assert_eq!(store.get(CF_BROKER, b"b").unwrap(), None);
        store.write_batch(&[]).unwrap();
    }

    pub(super) fn write_batch_with_unknown_cf_applies_nothing(store: &dyn KvStore) {
        store.put(CF_BROKER, b"keep", b"v").unwrap();
        let ops = [
            KvOp::put(CF_BROKER, b"new", b"1"),
            KvOp::delete(CF_BROKER, b"keep"),
            KvOp::put("no_such_cf", b"k", b"v"),
        ];
        match store.write_batch(&ops) {
            Err(StorageError::UnknownColumnFamily(name)) => assert_eq!(name, "no_such_cf"),
            other => panic!("expected UnknownColumnFamily, got {other:?}"),
        }
        assert_eq!(store.get(CF_BROKER, b"new").unwrap(), None);
        assert_eq!(store.get(CF_BROKER, b"keep").unwrap(), Some(b"v".to_vec()));
    }

    pub(super) fn scan_prefix_is_sorted_and_limited(store: &dyn KvStore) {
        // Written out of order, with neighbours on both sides of the prefix.
        for key in [
            &b"t-2"[..],
            b"t-10",
            b"s-9",
            b"t-1",
            b"u-0",
            b"t-\xff",
            b"t",
        ] {
            store.put(CF_RECOVERY_POINTS, key, key).unwrap();
        }
        let all = store.scan_prefix(CF_RECOVERY_POINTS, b"t-", 100).unwrap();
        let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [&b"t-1"[..], b"t-10", b"t-2", b"t-\xff"]);
        assert!(all.iter().all(|(k, v)| k == v));

        let first_two = store.scan_prefix(CF_RECOVERY_POINTS, b"t-", 2).unwrap();
        assert_eq!(first_two, all[..2]);
        assert!(store
            .scan_prefix(CF_RECOVERY_POINTS, b"t-", 0)
            .unwrap()
            .is_empty());
        assert!(store
            .scan_prefix(CF_RECOVERY_POINTS, b"v", 10)
            .unwrap()
            .is_empty());

        let everything = store.scan_prefix(CF_RECOVERY_POINTS, b"", 100).unwrap();
        assert_eq!(everything.len(), 7);
        assert!(everything.windows(2).all(|w| w[0].0 < w[1].0));
        // Prefix of all-0xff bytes has no successor key; the scan must still end.
        store.put(CF_RECOVERY_POINTS, b"\xff\xff", b"z").unwrap();
        let top = store.scan_prefix(CF_RECOVERY_POINTS, b"\xff", 10).unwrap();
        assert_eq!(top, [(b"\xff\xff".to_vec(), b"z".to_vec())]);
    }

    pub(super) fn unknown_cf_is_an_error(store: &dyn KvStore) {
        assert_unknown(store.get("nope", b"k"));
        assert_unknown(store.put("nope", b"k", b"v"));
        assert_unknown(store.delete("nope", b"k"));
        assert_unknown(store.scan_prefix("nope", b"", 1));
        assert_unknown(store.write_batch(&[KvOp::delete("nope", b"k")]));
    }

    fn assert_unknown<T: std::fmt::Debug>(result: crate::Result<T>) {
        match result {
            Err(StorageError::UnknownColumnFamily(name)) => assert_eq!(name, "nope"),
            other => panic!("expected UnknownColumnFamily, got {other:?}"),
        }
    }
}
