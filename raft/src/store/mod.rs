//! Durable state of the metadata quorum in one RocksDB database: the raft log and vote
//! ([`RocksLogStore`]) and the snapshotted state machine ([`MetadataStateMachine`]). This module
//! and its children are the only places in the crate that import `rocksdb`.

mod log_store;
mod state_machine;

use std::io;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteOptions, DB};

pub use log_store::RocksLogStore;
pub use state_machine::{MetadataStateMachine, SnapshotBuilder};

use crate::error::{RaftError, Result};

/// Raft log entries, keyed by big-endian index so RocksDB's order is log order.
const CF_LOG: &str = "raft_log";
/// Small raft bookkeeping: vote, committed log id, last purged log id.
const CF_STATE: &str = "raft_state";
/// The latest state machine snapshot: its metadata and its bytes.
const CF_SNAPSHOT: &str = "raft_snapshot";

/// Opens (creating if needed) the metadata database at `path` and returns the log store and the
/// state machine that share it.
///
/// The state machine starts from the last snapshot on disk; openraft replays the committed
/// entries after it, because the log store remembers the committed log id.
pub fn open(path: impl AsRef<Path>) -> Result<(RocksLogStore, MetadataStateMachine)> {
    let db = Arc::new(open_db(path.as_ref())?);
    let state_machine = MetadataStateMachine::open(Arc::clone(&db))?;
    Ok((RocksLogStore::new(db), state_machine))
}

fn open_db(path: &Path) -> Result<DB> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // The metadata log is small; keep RocksDB's own footprint small too.
    options.set_write_buffer_size(4 * 1024 * 1024);
    options.set_max_total_wal_size(64 * 1024 * 1024);
    options.set_max_log_file_size(1024 * 1024);
    options.set_keep_log_file_num(4);
    let cfs = [CF_LOG, CF_STATE, CF_SNAPSHOT]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    DB::open_cf_descriptors(&options, path, cfs)
        .map_err(|e| RaftError::Store(format!("open {}: {e}", path.display())))
}

/// The handle of a column family created by [`open_db`].
fn cf<'a>(db: &'a DB, name: &str) -> io::Result<&'a ColumnFamily> {
    // Every name used here is created at open, so a missing handle means a damaged database
    // directory; an error, not a panic.
    db.cf_handle(name)
        .ok_or_else(|| io::Error::other(format!("column family {name} missing")))
}

/// Store internals speak `io::Error`, which openraft's storage errors wrap directly.
fn io_error(error: rocksdb::Error) -> io::Error {
    io::Error::other(error)
}

fn json_error(error: serde_json::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Writes that must survive power loss before openraft is told they happened.
fn sync_write() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

#[cfg(test)]
mod tests {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, StorageError};

    use super::*;
    use crate::command::{Endpoint, IncarnationId, MetadataCommand, RegisterBroker};
    use crate::types::{NodeId, TypeConfig};

    /// Builds a fresh store in a temporary directory; the directory is the guard.
    struct TempStores;

    impl StoreBuilder<TypeConfig, RocksLogStore, MetadataStateMachine, tempfile::TempDir>
        for TempStores
    {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, RocksLogStore, MetadataStateMachine), StorageError<NodeId>>
        {
            let dir = tempfile::tempdir().expect("temp dir");
            let (log, sm) = open(dir.path()).expect("open store");
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn passes_openraft_storage_conformance_suite() {
        Suite::test_all(TempStores).expect("openraft storage suite");
    }

    fn register(offset: u64, broker_id: i32) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), offset),
            payload: EntryPayload::Normal(MetadataCommand::RegisterBroker(RegisterBroker {
                broker_id,
                incarnation_id: IncarnationId([broker_id as u8; 16]),
                endpoints: vec![Endpoint {
                    name: "kafka".to_owned(),
                    host: "127.0.0.1".to_owned(),
                    port: 9092,
                }],
                rack: None,
                now_ms: 1,
                previous_broker_epoch: None,
            })),
        }
    }

    #[tokio::test]
    async fn snapshot_survives_reopen_and_log_state_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut sm) = open(dir.path()).unwrap();
        let entries: Vec<_> = (1..=3).map(|i| register(i, i as i32)).collect();
        log.blocking_append(entries.clone()).await.unwrap();
        sm.apply(entries.clone()).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        let snapshot = openraft::RaftSnapshotBuilder::build_snapshot(&mut builder)
            .await
            .unwrap();
        log.save_committed(Some(entries[2].log_id)).await.unwrap();
        log.purge(entries[1].log_id).await.unwrap();
        let image_before = sm.subscribe().borrow().clone();
        drop((log, sm, builder));

        let (mut log, mut sm) = open(dir.path()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(entries[1].log_id));
        assert_eq!(state.last_log_id, Some(entries[2].log_id));
        assert_eq!(log.read_committed().await.unwrap(), Some(entries[2].log_id));
        let remaining = log.try_get_log_entries(0..10).await.unwrap();
        assert_eq!(remaining, vec![entries[2].clone()]);
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(entries[2].log_id));
        assert_eq!(*sm.subscribe().borrow().clone(), *image_before);
        let current = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("snapshot kept");
        assert_eq!(current.meta, snapshot.meta);
        assert_eq!(image_before.metadata_offset(), 3);
    }

    #[tokio::test]
    async fn a_slow_builder_never_replaces_a_newer_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm) = open(dir.path()).unwrap();
        let entries: Vec<_> = (1..=3).map(|i| register(i, i as i32)).collect();
        sm.apply(entries[..1].to_vec()).await.unwrap();
        let mut old = sm.get_snapshot_builder().await;
        sm.apply(entries[1..].to_vec()).await.unwrap();
        let mut new = sm.get_snapshot_builder().await;

        let newer = openraft::RaftSnapshotBuilder::build_snapshot(&mut new)
            .await
            .unwrap();
        let older = openraft::RaftSnapshotBuilder::build_snapshot(&mut old)
            .await
            .unwrap();
        assert!(older.meta.last_log_id < newer.meta.last_log_id);
        let current = sm.get_current_snapshot().await.unwrap().expect("snapshot");
        assert_eq!(current.meta, newer.meta);
        let image: crate::MetadataImage =
            serde_json::from_slice(current.snapshot.get_ref()).unwrap();
        assert_eq!(
            image.brokers().count(),
            3,
            "metadata and data of one snapshot"
        );
    }
}
