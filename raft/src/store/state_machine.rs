//! [`MetadataStateMachine`]: openraft's `RaftStateMachine` holding the [`MetadataImage`]. The image
//! lives in memory and is published to subscribers after every applied batch; durability comes
//! from snapshots in `raft_snapshot` plus the raft log, which openraft replays from the snapshot
//! on restart.

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};

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

type StoreResult<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// The state machine of the metadata quorum.
#[derive(Debug)]
pub struct MetadataStateMachine {
    db: Arc<DB>,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    /// Shared with subscribers. The watch channel keeps the published version, so
    /// `Arc::make_mut` copies the image once per applied batch (see ROADMAP known gaps).
    image: Arc<MetadataImage>,
    published: watch::Sender<Arc<MetadataImage>>,
    /// Distinguishes snapshots built at the same log id (openraft asks for unique ids).
    snapshots_built: u64,
    /// Serializes snapshot writes (see [`write_snapshot`]).
    snapshot_slot: Arc<Mutex<()>>,
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
            snapshot_slot: Arc::new(Mutex::new(())),
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

/// Snapshots live under one key, so a reader never pairs one snapshot's metadata with another's
/// data: `[meta length: u32 BE][meta JSON][image bytes]`.
const KEY_SNAPSHOT: &[u8] = b"current";

fn read_snapshot(db: &DB) -> io::Result<Option<StoredSnapshot>> {
    let Some(bytes) = db
        .get_cf(cf(db, CF_SNAPSHOT)?, KEY_SNAPSHOT)
        .map_err(io_error)?
    else {
        return Ok(None);
    };
    let damaged = || io::Error::new(io::ErrorKind::InvalidData, "snapshot record is damaged");
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(damaged)?;
    let meta_len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| damaged())?;
    if rest.len() < meta_len {
        return Err(damaged());
    }
    let (meta, data) = rest.split_at(meta_len);
    Ok(Some(StoredSnapshot {
        meta: serde_json::from_slice(meta).map_err(json_error)?,
        data: data.to_vec(),
    }))
}

fn encode_snapshot(meta: &SnapshotMeta<NodeId, BasicNode>, data: &[u8]) -> io::Result<Vec<u8>> {
    let meta = serde_json::to_vec(meta).map_err(json_error)?;
    let meta_len = u32::try_from(meta.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "snapshot metadata too large"))?;
    let mut record = Vec::with_capacity(4 + meta.len() + data.len());
    record.extend_from_slice(&meta_len.to_be_bytes());
    record.extend_from_slice(&meta);
    record.extend_from_slice(data);
    Ok(record)
}

/// Stores a snapshot unless the stored one is newer, synced, on a blocking thread. Builders run
/// concurrently with installs, so a slow builder of an old snapshot must not replace a newer
/// installed one (the log before the newer one may already be purged). `slot` serializes the
/// compare and the write.
async fn write_snapshot(
    db: Arc<DB>,
    slot: Arc<Mutex<()>>,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> io::Result<()> {
    let record = encode_snapshot(meta, data)?;
    let last_log_id = meta.last_log_id;
    tokio::task::spawn_blocking(move || {
        let _writing = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stored) = read_snapshot(&db)? {
            if stored.meta.last_log_id > last_log_id {
                return Ok(());
            }
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&db, CF_SNAPSHOT)?, KEY_SNAPSHOT, record);
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
            slot: Arc::clone(&self.snapshot_slot),
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
        write_snapshot(
            Arc::clone(&self.db),
            Arc::clone(&self.snapshot_slot),
            meta,
            &data,
        )
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
    slot: Arc<Mutex<()>>,
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
        write_snapshot(Arc::clone(&self.db), Arc::clone(&self.slot), &meta, &data)
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
