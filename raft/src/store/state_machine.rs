//! [`MetadataStateMachine`]: openraft's `RaftStateMachine` holding the [`MetadataImage`]. The image
//! lives in memory and is published to subscribers after every applied batch; durability comes
//! from snapshots in `raft_snapshot` plus the raft log, which openraft replays from the snapshot
//! on restart.

use std::io::{self, Cursor};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use rocksdb::{WriteBatch, DB};
use tokio::sync::watch;

use super::{cf, io_error, json_error, sync_write, CF_SNAPSHOT};
use crate::command::MetadataResponse;
use crate::error::{RaftError, Result};
use crate::image::MetadataImage;
use crate::types::{NodeId, TypeConfig};

const KEY_META: &[u8] = b"meta";
const KEY_DATA: &[u8] = b"data";

type StoreResult<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// The state machine of the metadata quorum.
#[derive(Debug)]
pub struct MetadataStateMachine {
    db: Arc<DB>,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    /// Shared with subscribers; `Arc::make_mut` copies it only while a reader still holds the
    /// previous version.
    image: Arc<MetadataImage>,
    published: watch::Sender<Arc<MetadataImage>>,
    /// Distinguishes snapshots built at the same log id (openraft asks for unique ids).
    snapshots_built: u64,
}

/// A stored snapshot as read back from RocksDB.
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

impl MetadataStateMachine {
    pub(super) fn open(db: Arc<DB>) -> Result<MetadataStateMachine> {
        let stored = read_snapshot(&db).map_err(|e| RaftError::Store(e.to_string()))?;
        let (last_applied, membership, image) = match stored {
            None => (None, Membership::default(), MetadataImage::default()),
            Some(snapshot) => {
                let image = decode_image(&snapshot.data)
                    .map_err(|e| RaftError::Store(format!("snapshot: {e}")))?;
                (
                    snapshot.meta.last_log_id,
                    snapshot.meta.last_membership,
                    image,
                )
            }
        };
        let image = Arc::new(image);
        let (published, _) = watch::channel(Arc::clone(&image));
        Ok(MetadataStateMachine {
            db,
            last_applied,
            membership,
            image,
            published,
            snapshots_built: 0,
        })
    }

    /// A receiver of every image this state machine publishes, starting with the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.published.subscribe()
    }

    fn publish(&self) {
        // `send_replace` publishes even when nobody listens yet.
        self.published.send_replace(Arc::clone(&self.image));
    }
}

fn decode_image(data: &[u8]) -> io::Result<MetadataImage> {
    serde_json::from_slice(data).map_err(json_error)
}

fn read_snapshot(db: &DB) -> io::Result<Option<StoredSnapshot>> {
    let snapshot_cf = cf(db, CF_SNAPSHOT)?;
    let meta = db.get_cf(snapshot_cf, KEY_META).map_err(io_error)?;
    let data = db.get_cf(snapshot_cf, KEY_DATA).map_err(io_error)?;
    match (meta, data) {
        (Some(meta), Some(data)) => Ok(Some(StoredSnapshot {
            meta: serde_json::from_slice(&meta).map_err(json_error)?,
            data,
        })),
        // Both keys are written in one batch, so one without the other is damage.
        (None, None) => Ok(None),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot metadata and data disagree",
        )),
    }
}

/// Stores `meta` and `data` as the current snapshot, atomically and synced, on a blocking thread.
async fn write_snapshot(
    db: Arc<DB>,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
) -> io::Result<()> {
    let meta = serde_json::to_vec(meta).map_err(json_error)?;
    tokio::task::spawn_blocking(move || {
        let snapshot_cf = cf(&db, CF_SNAPSHOT)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(snapshot_cf, KEY_META, meta);
        batch.put_cf(snapshot_cf, KEY_DATA, data);
        db.write_opt(batch, &sync_write()).map_err(io_error)
    })
    .await
    .map_err(io::Error::other)?
}

impl RaftStateMachine<TypeConfig> for MetadataStateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId<NodeId>>, Membership)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<MetadataResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let image = Arc::make_mut(&mut self.image);
        let mut responses = Vec::new();
        for entry in entries {
            let offset = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => {
                    image.advance(offset);
                    MetadataResponse::Ok
                }
                EntryPayload::Normal(command) => image.apply(offset, &command),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    image.advance(offset);
                    MetadataResponse::Ok
                }
            };
            responses.push(response);
        }
        self.publish();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            db: Arc::clone(&self.db),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            image: Arc::clone(&self.image),
            sequence: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let data = snapshot.into_inner();
        let signature = Some(meta.signature());
        let image = decode_image(&data)
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), AnyError::new(&e)))?;
        // Persist first: if the write fails, the in-memory state stays the old, consistent one.
        write_snapshot(Arc::clone(&self.db), meta, data)
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature, AnyError::new(&e)))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.image = Arc::new(image);
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let stored = read_snapshot(&self.db)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// Builds a snapshot of the image as it was when the builder was taken, while the state machine
/// goes on applying entries.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Arc<DB>,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    image: Arc<MetadataImage>,
    sequence: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let data = serde_json::to_vec(self.image.as_ref())
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        let snapshot_id = match self.last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id, log_id.index, self.sequence),
            None => format!("none-{}", self.sequence),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        write_snapshot(Arc::clone(&self.db), &meta, data.clone())
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))
            })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
