//! `PartitionManager`, the partitions this broker hosts: its state and how it is opened. Its
//! work is spread over sibling modules, one `impl` block each:
//! - `registry.rs`: the map of hosted partitions and the lookups on it (leader, followed);
//! - `reconcile.rs`: keeping the partitions in step with the metadata image (open, update,
//!   delete, stray logs set aside), on the log directory layout of the storage crate's `LogDir`;
//! - `log_dir_health.rs`: the log directory failing and being recovered (Kafka's log-dir
//!   failure handling);
//! - `maintenance.rs`: periodic work on every log (flush, retention, compaction, producer
//!   expiry, recovery-point and high-watermark checkpoints) and the clean close at shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use streambus_raft::command::{BrokerId, TopicId};
use streambus_storage::{
    kv, CheckpointedOffset, LogDir, OffsetCheckpointFile, RecoveryPoints, RocksKv, StorageError,
};
use tokio::sync::watch;

use super::isr::IsrProposer;
use super::log_dir_health::LogDirHealth;
use super::Partition;
use crate::config::BrokerConfig;

pub use super::registry::{Followed, LeaderLookup, RECONCILE_WAIT};

/// The readiness probe's file in the log directory (the recovery task probes with another).
const READINESS_PROBE_FILE: &str = ".probe-ready";

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
    /// `logs/replication-offset-checkpoint`: the partitions' high watermarks.
    pub(super) high_watermark_file: OffsetCheckpointFile,
    /// The high watermarks last read from or written to that file, by directory name: where a
    /// partition opened (again) starts. Lock order: after the partition map.
    pub(super) checkpointed: Mutex<BTreeMap<String, CheckpointedOffset>>,
    /// The metadata offset of the last image applied to the partitions.
    pub(super) reconciled: watch::Sender<u64>,
    /// The newest image offset a request already waited for in vain (see `leader`).
    pub(super) stalled_target: AtomicU64,
    /// Whether the log directory serves (see `log_dir_health`); every log opened reports its
    /// failures here.
    pub(super) log_dir_health: Arc<LogDirHealth>,
    /// Given to every partition opened: where it sends the ISR changes it calls for. Set once
    /// the metadata quorum runs, before the first reconciliation.
    pub(super) isr_proposer: std::sync::OnceLock<IsrProposer>,
    /// The partitions whose LSO lag was last published above 0 (see `lso_lag`).
    pub(super) lso_lag_series: Mutex<std::collections::BTreeSet<(String, u32)>>,
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
        let high_watermark_file = log_dir.high_watermark_checkpoint();
        let checkpointed = high_watermark_file.read().unwrap_or_else(|error| {
            // Only costs what a missing file costs: high watermarks start at 0 and are
            // learnt again from the leaders and followers.
            tracing::error!(%error, "ignoring an unreadable high-watermark checkpoint");
            BTreeMap::new()
        });
        Ok(PartitionManager {
            broker_id: config.node_id,
            config: config.clone(),
            log_dir,
            partitions: RwLock::new(HashMap::new()),
            recovery_points: RecoveryPoints::new(Arc::new(kv)),
            high_watermark_file,
            checkpointed: Mutex::new(checkpointed),
            log_dir_health: Arc::new(LogDirHealth::new()),
            reconciled: watch::Sender::new(0),
            stalled_target: AtomicU64::new(0),
            isr_proposer: std::sync::OnceLock::new(),
            lso_lag_series: Mutex::new(std::collections::BTreeSet::new()),
        })
    }

    /// The checkpointed high watermarks (see `checkpointed`).
    pub(super) fn checkpointed(&self) -> MutexGuard<'_, BTreeMap<String, CheckpointedOffset>> {
        self.checkpointed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the log directory serves now.
    pub fn log_dir_online(&self) -> bool {
        self.log_dir_health.is_online()
    }

    /// Writes, fsyncs and removes a small file in the log directory (blocking): whether it takes
    /// writes now. For readiness checks while the directory is online (the recovery task
    /// probes the same way while it is offline).
    pub fn probe_log_dir(&self) -> Result<(), StorageError> {
        self.log_dir.probe_with(READINESS_PROBE_FILE)
    }

    /// The metadata offset of the last image applied to the hosted partitions.
    pub fn reconciled_offset(&self) -> u64 {
        *self.reconciled.borrow()
    }

    /// `<data_dir>/logs/`.
    pub fn log_dir_path(&self) -> &std::path::Path {
        self.log_dir.root()
    }

    /// Where partitions opened from now on send their ISR changes.
    pub fn set_isr_proposer(&self, proposer: IsrProposer) {
        if self.isr_proposer.set(proposer).is_err() {
            tracing::warn!("the ISR proposer was already set");
        }
    }
}
