//! `PartitionManager`, the partitions this broker hosts: its state and how it is opened. Its
//! work is spread over sibling modules, one `impl` block each:
//! - `registry.rs`: the map of hosted partitions and the lookups on it (leader, followed);
//! - `reconcile.rs`: keeping the partitions in step with the metadata image (open, update,
//!   delete, stray logs set aside), on the log directory layout of the storage crate's `LogDir`;
//! - `maintenance.rs`: periodic work on every log (flush, retention, compaction, producer
//!   expiry, recovery-point checkpoints) and the clean close at shutdown.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use streambus_raft::command::{BrokerId, TopicId};
use streambus_storage::{kv, LogDir, RecoveryPoints, RocksKv, StorageError};
use tokio::sync::watch;

use super::isr::IsrProposer;
use super::Partition;
use crate::config::BrokerConfig;

pub use super::registry::{Followed, LeaderLookup, RECONCILE_WAIT};

/// A hosted partition's key: topic id and partition index.
pub(super) type Key = (TopicId, u32);

/// The partitions hosted by one broker.
#[derive(Debug)]
pub struct PartitionManager {
    pub(super) broker_id: BrokerId,
    pub(super) config: BrokerConfig,
    /// `<data_dir>/logs/`: where partition directories are created, deleted and set aside.
    pub(super) log_dir: LogDir,
    pub(super) partitions: RwLock<HashMap<Key, Arc<Partition>>>,
    pub(super) recovery_points: RecoveryPoints,
    /// The metadata offset of the last image applied to the partitions.
    pub(super) reconciled: watch::Sender<u64>,
    /// The newest image offset a request already waited for in vain (see `leader`).
    pub(super) stalled_target: AtomicU64,
    /// Given to every partition opened: where it sends the ISR changes it calls for. Set once
    /// the metadata quorum runs, before the first reconciliation.
    pub(super) isr_proposer: std::sync::OnceLock<IsrProposer>,
}

impl PartitionManager {
    /// Opens the broker-local store (`<data_dir>/meta`) and removes leftovers of interrupted
    /// deletions. Logs are opened by the first [`PartitionManager::reconcile`].
    pub fn open(config: &BrokerConfig) -> Result<PartitionManager, StorageError> {
        // Before any log exists: from here on, debug builds catch a log lock taken on a
        // runtime worker (see `crate::blocking`).
        crate::blocking::install_check();
        let log_dir = LogDir::open(&config.data_dir)?;
        let kv = RocksKv::open(config.data_dir.join("meta"), kv::COLUMN_FAMILIES)?;
        Ok(PartitionManager {
            broker_id: config.node_id,
            config: config.clone(),
            log_dir,
            partitions: RwLock::new(HashMap::new()),
            recovery_points: RecoveryPoints::new(Arc::new(kv)),
            reconciled: watch::Sender::new(0),
            stalled_target: AtomicU64::new(0),
            isr_proposer: std::sync::OnceLock::new(),
        })
    }

    /// Where partitions opened from now on send their ISR changes.
    pub fn set_isr_proposer(&self, proposer: IsrProposer) {
        if self.isr_proposer.set(proposer).is_err() {
            tracing::warn!("the ISR proposer was already set");
        }
    }
}
