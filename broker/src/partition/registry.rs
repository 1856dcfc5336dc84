//! The registry of hosted partitions: the map itself and the lookups on it (by key, every one,
//! the one this broker leads for a request, the ones it follows), and waiting for an image to
//! be applied.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use streambus_raft::command::{BrokerId, TopicId};
use streambus_raft::image::TopicRecord;
use streambus_raft::MetadataImage;

use super::manager::{Key, PartitionManager};
use super::{Partition, Role};

/// How long a request waits for this broker to open a partition the image already assigns it.
pub const RECONCILE_WAIT: Duration = Duration::from_secs(5);

/// A partition this broker follows, as the replica fetchers need it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub partition: Arc<Partition>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    /// Being added by a reassignment: fetched within the reassignment throttle.
    pub throttled: bool,
}

/// Why a partition cannot serve a leader request here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderLookup {
    /// No such topic or partition in the image.
    Unknown,
    /// Another broker (or nobody) leads it.
    NotLeader,
    /// The client's epoch is older than the leader's.
    FencedEpoch,
    /// The client's epoch is newer than this broker knows.
    UnknownEpoch,
    /// The image still has this broker lead, but its log directory failed: the leadership is
    /// moving away (Kafka answers KAFKA_STORAGE_ERROR).
    LogDirOffline,
}

impl PartitionManager {
    /// The partition, if hosted here.
    pub fn get(&self, topic_id: &TopicId, index: u32) -> Option<Arc<Partition>> {
        self.read().get(&(*topic_id, index)).cloned()
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.read().values().cloned().collect()
    }

    /// The partition this broker leads per `image`, checked against the client's
    /// `current_leader_epoch` (-1: no check). Waits (bounded) for the partition to be opened
    /// when the image is newer than the last reconciliation.
    pub async fn leader(
        &self,
        image: &MetadataImage,
        topic_id: &TopicId,
        index: u32,
        current_leader_epoch: i32,
    ) -> Result<Arc<Partition>, LeaderLookup> {
        let record = image
            .partition(topic_id, index)
            .ok_or(LeaderLookup::Unknown)?;
        if record.leader != Some(self.broker_id) {
            return Err(LeaderLookup::NotLeader);
        }
        if !self.log_dir_health.is_online() {
            return Err(LeaderLookup::LogDirOffline);
        }
        if current_leader_epoch >= 0 && current_leader_epoch < record.leader_epoch {
            return Err(LeaderLookup::FencedEpoch);
        }
        if current_leader_epoch > record.leader_epoch {
            return Err(LeaderLookup::UnknownEpoch);
        }
        let target = image.metadata_offset();
        let stalled = self.stalled_target.load(Ordering::Relaxed);
        // Once one wait for this image timed out, later lookups answer at once instead of each
        // partition of a request waiting its own RECONCILE_WAIT in turn.
        if *self.reconciled.borrow() < target && stalled < target {
            let mut reconciled = self.reconciled.subscribe();
            // A timeout leaves the lookup below to answer NotLeader: the client retries.
            let waited =
                tokio::time::timeout(RECONCILE_WAIT, reconciled.wait_for(|o| *o >= target)).await;
            if waited.is_err() {
                self.stalled_target.fetch_max(target, Ordering::Relaxed);
            }
        }
        match self.get(topic_id, index) {
            Some(partition) if partition.is_leader_at(record.leader_epoch) => Ok(partition),
            _ => Err(LeaderLookup::NotLeader),
        }
    }

    /// [`PartitionManager::leader`] for a partition as a request names it: `topic` as the image
    /// knows it (`None`: unknown) and an index from the wire (negative: unknown).
    pub async fn led(
        &self,
        image: &MetadataImage,
        topic: Option<&TopicRecord>,
        index: i32,
        current_leader_epoch: i32,
    ) -> Result<Arc<Partition>, LeaderLookup> {
        match (topic, u32::try_from(index)) {
            (Some(topic), Ok(index)) => {
                self.leader(image, &topic.topic_id, index, current_leader_epoch)
                    .await
            }
            _ => Err(LeaderLookup::Unknown),
        }
    }

    /// Waits (at most `timeout`) until an image at `offset` or later was applied.
    pub async fn wait_reconciled(&self, offset: u64, timeout: Duration) -> bool {
        let mut reconciled = self.reconciled.subscribe();
        let waited = tokio::time::timeout(timeout, reconciled.wait_for(|o| *o >= offset)).await;
        waited.is_ok()
    }

    /// The partitions this broker follows.
    pub fn followed(&self) -> Vec<Followed> {
        self.all()
            .into_iter()
            .filter_map(|partition| {
                let state = partition.state();
                match state.role(self.broker_id) {
                    Role::Follower { leader } => Some(Followed {
                        partition,
                        leader,
                        leader_epoch: state.leader_epoch,
                        throttled: state.adding,
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, HashMap<Key, Arc<Partition>>> {
        self.partitions.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, HashMap<Key, Arc<Partition>>> {
        self.partitions.write().unwrap_or_else(|e| e.into_inner())
    }
}
