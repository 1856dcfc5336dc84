//! [`RocksLogStore`]: openraft's `RaftLogStorage` over RocksDB. Entries live in `raft_log` keyed by
//! big-endian index; the vote, the committed log id and the last purged log id live in
//! `raft_state`. Every write that openraft relies on for safety (entries, vote, truncation,
//! purge) is synced before it is acknowledged.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{cf, io_error, json_error, sync_write, CF_LOG, CF_STATE};
use crate::types::{NodeId, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

type StoreResult<T> = Result<T, StorageError<NodeId>>;

/// The raft log of the metadata quorum. Cheap to clone: clones share the database, which is how
/// openraft's log reader gets its own handle.
#[derive(Debug, Clone)]
pub struct RocksLogStore {
    db: Arc<DB>,
}

impl RocksLogStore {
    pub(super) fn new(db: Arc<DB>) -> RocksLogStore {
        RocksLogStore { db }
    }

    fn get_state<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let bytes = self
            .db
            .get_cf(cf(&self.db, CF_STATE)?, key)
            .map_err(io_error)?;
        bytes
            .map(|bytes| serde_json::from_slice(&bytes).map_err(json_error))
            .transpose()
    }

    /// The last entry's log id, if the log holds any entry.
    fn last_entry_id(&self) -> io::Result<Option<LogId<NodeId>>> {
        let mut iter = self
            .db
            .iterator_cf(cf(&self.db, CF_LOG)?, IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(io_error)?;
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(&value).map_err(json_error)?;
                Ok(Some(entry.log_id))
            }
        }
    }

    /// Runs a blocking write on a blocking thread: RocksDB syncs the WAL, which must not stall
    /// the async workers that run raft.
    async fn blocking<F>(&self, write: F) -> io::Result<()>
    where
        F: FnOnce(&DB) -> io::Result<()> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || write(&db))
            .await
            .map_err(io::Error::other)?
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(json_error)
}

/// Puts one `raft_state` key, synced.
fn put_state(db: &DB, key: &'static [u8], value: Vec<u8>, sync: bool) -> io::Result<()> {
    let options = if sync {
        sync_write()
    } else {
        rocksdb::WriteOptions::default()
    };
    db.put_cf_opt(cf(db, CF_STATE)?, key, value, &options)
        .map_err(io_error)
}

impl RaftLogReader<TypeConfig> for RocksLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => index.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let read = || -> io::Result<Vec<Entry<TypeConfig>>> {
            let iter = self.db.iterator_cf(
                cf(&self.db, CF_LOG)?,
                IteratorMode::From(&index_key(start), Direction::Forward),
            );
            let mut entries = Vec::new();
            for item in iter {
                let (key, value) = item.map_err(io_error)?;
                let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "raft log key is not 8 bytes")
                })?);
                if !range.contains(&index) {
                    break;
                }
                entries.push(serde_json::from_slice(&value).map_err(json_error)?);
            }
            Ok(entries)
        };
        read().map_err(|e| StorageIOError::read_logs(AnyError::new(&e)).into())
    }
}

impl RaftLogStorage<TypeConfig> for RocksLogStore {
    type LogReader = RocksLogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let read = || -> io::Result<LogState<TypeConfig>> {
            let last_purged_log_id: Option<LogId<NodeId>> = self.get_state(KEY_LAST_PURGED)?;
            let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        };
        read().map_err(|e| StorageIOError::read_logs(AnyError::new(&e)).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        let write = || -> io::Result<Vec<u8>> { encode(vote) };
        let bytes = write().map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.blocking(move |db| put_state(db, KEY_VOTE, bytes, true))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.get_state(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        // Not synced: after a power loss the committed id may go back, which only means
        // openraft re-learns it from the leader before applying; it never runs ahead of the log.
        let bytes = encode(&committed).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        put_state(&self.db, KEY_COMMITTED, bytes, false)
            .map_err(|e| StorageIOError::write(AnyError::new(&e)).into())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        let committed: Option<Option<LogId<NodeId>>> = self
            .get_state(KEY_COMMITTED)
            .map_err(|e| StorageIOError::read(AnyError::new(&e)))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let log_cf =
            cf(&self.db, CF_LOG).map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        for entry in entries {
            let bytes =
                encode(&entry).map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            batch.put_cf(log_cf, index_key(entry.log_id.index), bytes);
        }
        let result = self
            .blocking(move |db| db.write_opt(batch, &sync_write()).map_err(io_error))
            .await;
        let error = result.as_ref().err().map(AnyError::new);
        callback.log_io_completed(result);
        match error {
            None => Ok(()),
            Some(error) => Err(StorageIOError::write_logs(error).into()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        // Removes `log_id.index` and everything after it: conflicting entries from an old term.
        self.blocking(move |db| {
            let log_cf = cf(db, CF_LOG)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(log_cf, index_key(log_id.index), index_key(u64::MAX));
            batch.delete_cf(log_cf, index_key(u64::MAX));
            db.write_opt(batch, &sync_write()).map_err(io_error)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        // The purge marker and the deletion commit together, so a crash never leaves a log
        // whose first entry is unexplained.
        let marker = encode(&log_id).map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        self.blocking(move |db| {
            let mut batch = WriteBatch::default();
            batch.put_cf(cf(db, CF_STATE)?, KEY_LAST_PURGED, marker);
            batch.delete_range_cf(
                cf(db, CF_LOG)?,
                index_key(0),
                index_key(log_id.index.saturating_add(1)),
            );
            db.write_opt(batch, &sync_write()).map_err(io_error)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
    }
}
