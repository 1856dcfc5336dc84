//! One partition replica on this broker: its log, its role as the metadata image last described
//! it, its high watermark, and the fetches parked until it moves.
//!
//! Modules:
//! - [`manager`]: the set of partitions this broker hosts, kept in step with the metadata image.

pub mod manager;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use streambus_raft::command::{BrokerId, TopicId};
use streambus_storage::{AppendInfo, Log, StorageError};
use tokio::sync::Notify;

use crate::topic_config::TopicSettings;

pub use manager::PartitionManager;

/// A partition's role and settings as of the last metadata image applied to it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionState {
    pub leader: Option<BrokerId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub settings: TopicSettings,
}

/// A partition replica hosted by this broker.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub topic_id: TopicId,
    pub index: u32,
    /// The directory name under `logs/`, also the key of its recovery point.
    pub dir_name: String,
    broker_id: BrokerId,
    log: Arc<Log>,
    state: RwLock<PartitionState>,
    /// Offsets below this are committed: readable by consumers, never truncated.
    high_watermark: AtomicI64,
    /// Parked fetches, woken (and dropped from the list) when the high watermark moves. Weak:
    /// the request holds the only strong handle, so a finished request's entry is dead.
    waiters: Mutex<Vec<Weak<Notify>>>,
}

impl Partition {
    fn new(
        topic: String,
        topic_id: TopicId,
        index: u32,
        dir_name: String,
        broker_id: BrokerId,
        log: Log,
        state: PartitionState,
    ) -> Partition {
        let partition = Partition {
            topic,
            topic_id,
            index,
            dir_name,
            broker_id,
            log: Arc::new(log),
            state: RwLock::new(state),
            high_watermark: AtomicI64::new(0),
            waiters: Mutex::new(Vec::new()),
        };
        partition.advance_high_watermark();
        partition
    }

    /// The partition log. Its methods block: call them from blocking threads.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The partition's role and settings.
    pub fn state(&self) -> PartitionState {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_state(&self, state: PartitionState) -> Result<(), StorageError> {
        if self.state().settings.log != state.settings.log {
            self.log.set_config(state.settings.log.clone())?;
        }
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
        self.advance_high_watermark();
        Ok(())
    }

    /// Whether this broker leads the partition at `leader_epoch`.
    pub fn is_leader_at(&self, leader_epoch: i32) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.leader == Some(self.broker_id) && state.leader_epoch == leader_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// The last stable offset: read_committed consumers read below it.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        self.log
            .first_unstable_offset()
            .map_or(high_watermark, |unstable| unstable.min(high_watermark))
    }

    /// Appends a producer's batch as leader at `leader_epoch` (blocking).
    pub fn append_as_leader(
        &self,
        batch: Bytes,
        leader_epoch: i32,
    ) -> Result<AppendInfo, StorageError> {
        let info = self.log.append_as_leader(batch, leader_epoch)?;
        self.advance_high_watermark();
        Ok(info)
    }

    /// Moves the high watermark to what the in-sync replicas hold and wakes parked fetches if it
    /// moved. Until follower replication exists (issue 6) only a partition whose ISR is this
    /// broker alone advances: there the log end offset is the minimum over the ISR.
    fn advance_high_watermark(&self) {
        let sole_replica = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            state.leader == Some(self.broker_id) && state.isr == [self.broker_id]
        };
        if !sole_replica {
            return;
        }
        let log_end = self.log.log_end_offset();
        let previous = self.high_watermark.fetch_max(log_end, Ordering::AcqRel);
        if log_end > previous {
            self.log.on_high_watermark_updated(log_end);
            self.wake_waiters();
        }
    }

    /// Parks `waiter` until the high watermark moves (or the log is truncated or closed).
    pub fn add_waiter(&self, waiter: &Arc<Notify>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Requests that finished dropped their handle. Pruning here keeps the list bounded by
        // the requests actually parked on an idle partition.
        waiters.retain(|w| w.strong_count() > 0);
        waiters.push(Arc::downgrade(waiter));
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for waiter in waiters.iter().filter_map(Weak::upgrade) {
            // `notify_one` keeps a permit if the fetch is not waiting yet, so no wake-up is lost
            // between its registration and its wait.
            waiter.notify_one();
        }
    }
}
