//! The partitions this broker hosts, kept in step with the metadata image: logs are opened for
//! every partition the image places here, updated when leadership or topic configs change, and
//! closed and deleted when the topic is deleted or the replica moves away. Also the periodic
//! work on every log (flush policy, retention, compaction, producer expiry, recovery-point
//! checkpoints) and the clean close at shutdown.
//!
//! Layout: the storage crate's `LogDir` (`logs/<topic>-<partition>/`, with a
//! `partition.metadata` file holding the topic id, so a directory left by a deleted topic of the
//! same name is never mistaken for the new one); which logs are stray is decided here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use streambus_raft::command::{BrokerId, TopicId};
use streambus_raft::image::TopicRecord;
use streambus_raft::{MetadataImage, RegistrationState};
use streambus_storage::{kv, Log, LogDir, LogOptions, RecoveryPoints, RocksKv, StorageError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Partition, PartitionState, Role};
use crate::config::BrokerConfig;
use crate::replication::ReplicaFetchers;
use crate::topic_config;

/// How often due flushes (`flush.ms`) are checked.
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How often recovery points are checkpointed (`log.flush.offset.checkpoint.interval.ms`).
const RECOVERY_POINT_INTERVAL: Duration = Duration::from_secs(60);
/// Threads opening new partitions at once (see `open_all`).
const OPEN_THREADS: usize = 8;
/// How long a request waits for this broker to open a partition the image already assigns it.
pub const RECONCILE_WAIT: Duration = Duration::from_secs(5);

type Key = (TopicId, u32);

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
}

/// The partitions hosted by one broker.
#[derive(Debug)]
pub struct PartitionManager {
    broker_id: BrokerId,
    config: BrokerConfig,
    /// `<data_dir>/logs/`: where partition directories are created, deleted and set aside.
    log_dir: LogDir,
    partitions: RwLock<HashMap<Key, Arc<Partition>>>,
    recovery_points: RecoveryPoints,
    /// The metadata offset of the last image applied to the partitions.
    reconciled: watch::Sender<u64>,
    /// The newest image offset a request already waited for in vain (see `leader`).
    stalled_target: std::sync::atomic::AtomicU64,
}

impl PartitionManager {
    /// Opens the broker-local store (`<data_dir>/meta`) and removes leftovers of interrupted
    /// deletions. Logs are opened by the first [`PartitionManager::reconcile`].
    pub fn open(config: &BrokerConfig) -> Result<PartitionManager, StorageError> {
        let log_dir = LogDir::open(&config.data_dir)?;
        let kv = RocksKv::open(config.data_dir.join("meta"), kv::COLUMN_FAMILIES)?;
        Ok(PartitionManager {
            broker_id: config.node_id,
            config: config.clone(),
            log_dir,
            partitions: RwLock::new(HashMap::new()),
            recovery_points: RecoveryPoints::new(Arc::new(kv)),
            reconciled: watch::Sender::new(0),
            stalled_target: std::sync::atomic::AtomicU64::new(0),
        })
    }

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
        if current_leader_epoch >= 0 && current_leader_epoch < record.leader_epoch {
            return Err(LeaderLookup::FencedEpoch);
        }
        if current_leader_epoch > record.leader_epoch {
            return Err(LeaderLookup::UnknownEpoch);
        }
        let target = image.metadata_offset();
        let stalled = self
            .stalled_target
            .load(std::sync::atomic::Ordering::Relaxed);
        // Once one wait for this image timed out, later lookups answer at once instead of each
        // partition of a request waiting its own RECONCILE_WAIT in turn.
        if *self.reconciled.borrow() < target && stalled < target {
            let mut reconciled = self.reconciled.subscribe();
            // A timeout leaves the lookup below to answer NotLeader: the client retries.
            let waited =
                tokio::time::timeout(RECONCILE_WAIT, reconciled.wait_for(|o| *o >= target)).await;
            if waited.is_err() {
                self.stalled_target
                    .fetch_max(target, std::sync::atomic::Ordering::Relaxed);
            }
        }
        match self.get(topic_id, index) {
            Some(partition) if partition.is_leader_at(record.leader_epoch) => Ok(partition),
            _ => Err(LeaderLookup::NotLeader),
        }
    }

    /// Applies `image` to the hosted partitions: opens, updates and removes logs. `active`: this
    /// broker is registered and unfenced in `image` (see [`PartitionState::active`]). Blocking.
    pub fn reconcile(&self, image: &MetadataImage, active: bool) {
        let mut wanted = HashMap::new();
        for topic in image.topics() {
            let settings = topic_config::resolve(&self.config, &topic.configs);
            for (index, record) in topic.partitions.iter().enumerate() {
                if !record.replicas.contains(&self.broker_id) {
                    continue;
                }
                let state = PartitionState {
                    leader: record.leader,
                    leader_epoch: record.leader_epoch,
                    partition_epoch: record.partition_epoch,
                    replicas: record.replicas.clone(),
                    isr: record.isr.clone(),
                    settings: settings.clone(),
                    active,
                    adding: record.adding_replicas.contains(&self.broker_id),
                };
                wanted.insert((topic.topic_id, index as u32), (topic.name.as_str(), state));
            }
        }
        let removed: Vec<Arc<Partition>> = {
            let mut partitions = self.write();
            let gone: Vec<Key> = partitions
                .keys()
                .filter(|key| !wanted.contains_key(key))
                .copied()
                .collect();
            gone.iter()
                .filter_map(|key| partitions.remove(key))
                .collect()
        };
        for partition in removed {
            self.delete(partition);
        }
        let mut to_open = Vec::new();
        for ((topic_id, index), (name, state)) in wanted {
            match self.get(&topic_id, index) {
                Some(partition) => {
                    if partition.state() != state {
                        partition.set_state(state);
                    }
                }
                None => to_open.push((name, topic_id, index, state)),
            }
        }
        self.open_all(to_open);
        self.reconciled.send_replace(image.metadata_offset());
    }

    /// Opens new partitions on a few threads at once: opening is mostly waiting for fsyncs
    /// (marker file, new segment, directory), so a batch of new topics is ready in a fraction
    /// of the serial time.
    fn open_all(&self, to_open: Vec<(&str, TopicId, u32, PartitionState)>) {
        if to_open.is_empty() {
            return;
        }
        let next = std::sync::Mutex::new(to_open.into_iter());
        let workers = OPEN_THREADS.min(next.lock().map_or(1, |n| n.len()));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    // Each pass takes one partition off the shared list; ends when it is empty.
                    loop {
                        let item = next.lock().ok().and_then(|mut n| n.next());
                        let Some((name, topic_id, index, state)) = item else {
                            return;
                        };
                        match self.open_partition(name, topic_id, index, state) {
                            Ok(partition) => {
                                self.write().insert((topic_id, index), Arc::new(partition));
                            }
                            // The partition stays unavailable here (clients see
                            // NOT_LEADER_OR_FOLLOWER); the next image retries.
                            Err(error) => {
                                tracing::error!(topic = name, index, %error, "cannot open partition")
                            }
                        }
                    }
                });
            }
        });
    }

    fn open_partition(
        &self,
        topic: &str,
        topic_id: TopicId,
        index: u32,
        state: PartitionState,
    ) -> Result<Partition, StorageError> {
        let dir = self.log_dir.prepare(topic, index, topic_id.0)?;
        if dir.replaced {
            // The recovery point saved under this name was the deleted topic's log's.
            self.recovery_points.remove(&dir.name)?;
        }
        let recovery_point = self.recovery_points.get(&dir.name)?;
        let options = LogOptions {
            recovery_point,
            ..LogOptions::default()
        };
        let log = Log::open(&dir.path, state.settings.log.clone(), options)?;
        tracing::debug!(
            topic,
            index,
            log_end_offset = log.log_end_offset(),
            "partition opened"
        );
        Ok(Partition::new(
            topic.to_owned(),
            topic_id,
            index,
            dir.name,
            self.broker_id,
            log,
            state,
        ))
    }

    fn delete(&self, partition: Arc<Partition>) {
        tracing::info!(topic = %partition.topic, index = partition.index, "deleting partition");
        partition.go_offline();
        // After this no maintenance pass still holding the partition can touch a file: the
        // directory's path may name a recreated topic's files once it moves.
        partition.log().retire();
        partition.wake_waiters(true);
        if let Err(error) = self.log_dir.delete(&partition.dir_name) {
            tracing::error!(%error, "cannot delete a partition directory");
        }
        if let Err(error) = self.recovery_points.remove(&partition.dir_name) {
            tracing::warn!(%error, "cannot remove a recovery point");
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

    /// Keeps the partitions (and, through `fetchers`, the replica fetchers) in step with the
    /// metadata image and this broker's registration until `shutdown`.
    pub async fn run_reconciler(
        self: Arc<Self>,
        mut images: watch::Receiver<Arc<MetadataImage>>,
        mut registration: watch::Receiver<RegistrationState>,
        fetchers: Arc<ReplicaFetchers>,
        shutdown: CancellationToken,
    ) {
        let mut was_active = false;
        let mut strays_removed = false;
        // The registration task ends at shutdown (before the controlled-shutdown fence): its
        // last state stays, and images keep coming so the fence is applied.
        let mut registration_open = true;
        loop {
            let image = images.borrow_and_update().clone();
            let active = match *registration.borrow_and_update() {
                RegistrationState::Registered { incarnation_id, .. } => image
                    .broker(self.broker_id)
                    .is_some_and(|b| b.incarnation_id == incarnation_id && !b.fenced),
                RegistrationState::Unregistered => false,
            };
            let manager = self.clone();
            let reconciled = {
                let image = image.clone();
                tokio::task::spawn_blocking(move || manager.reconcile(&image, active)).await
            };
            if reconciled.is_err() {
                tracing::error!("partition reconciliation panicked");
            }
            fetchers.update(&image, self.followed());
            if active != was_active {
                // Tests and operators wait for this line: from here on the broker serves the
                // partitions the image gives it.
                if active {
                    tracing::info!(
                        broker_id = self.broker_id,
                        "broker active: leading and following partitions"
                    );
                } else {
                    tracing::warn!(
                        broker_id = self.broker_id,
                        "broker inactive: not registered or fenced, serving no partition"
                    );
                }
                was_active = active;
            }
            if active && !strays_removed {
                // The image names this broker's current incarnation, registered after it
                // started, so it is at least as new as any image before a restart: a log it
                // gives this broker no reason to hold is of a topic deleted, or a partition
                // reassigned away, while the broker was away. Reconciled above, so every log
                // it does give this broker is open.
                strays_removed = true;
                let manager = self.clone();
                let image = image.clone();
                let removed =
                    tokio::task::spawn_blocking(move || manager.set_aside_stray_logs(&image)).await;
                if removed.is_err() {
                    tracing::error!("setting stray logs aside panicked");
                }
            }
            tokio::select! {
                changed = images.changed() => if changed.is_err() { return },
                changed = registration.changed(), if registration_open => {
                    registration_open = changed.is_ok();
                }
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Periodic log maintenance until `shutdown`: due flushes, retention and compaction,
    /// producer expiry, recovery-point checkpoints.
    pub async fn run_maintenance(self: Arc<Self>, shutdown: CancellationToken) {
        let retention_every = Duration::from_millis(self.config.topics.retention_check_interval_ms);
        let mut flush = tokio::time::interval(FLUSH_CHECK_INTERVAL);
        let mut retention = tokio::time::interval(retention_every);
        let mut checkpoint = tokio::time::interval(RECOVERY_POINT_INTERVAL);
        for timer in [&mut flush, &mut retention, &mut checkpoint] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let manager = self.clone();
            let job: Box<dyn FnOnce() + Send> = tokio::select! {
                _ = flush.tick() => Box::new(move || manager.flush_due()),
                _ = retention.tick() => Box::new(move || manager.enforce_retention()),
                _ = checkpoint.tick() => Box::new(move || manager.checkpoint_recovery_points()),
                () = shutdown.cancelled() => return,
            };
            if tokio::task::spawn_blocking(job).await.is_err() {
                tracing::error!("log maintenance panicked");
            }
        }
    }

    fn flush_due(&self) {
        for partition in self.all() {
            if let Err(error) = partition.log().flush_if_due() {
                tracing::error!(topic = %partition.topic, index = partition.index, %error, "flush failed");
            }
        }
    }

    /// Retention, compaction and producer expiry on every hosted log (blocking).
    pub fn enforce_retention(&self) {
        let expiration_ms = self.config.topics.producer_id_expiration_ms;
        for partition in self.all() {
            let log = partition.log();
            let outcome = log.enforce_retention();
            if let Err(error) = outcome {
                tracing::error!(topic = %partition.topic, index = partition.index, %error, "retention failed");
            }
            if log.config().cleanup_policy.compacts() {
                if let Err(error) = log.compact(partition.high_watermark()) {
                    tracing::error!(topic = %partition.topic, index = partition.index, %error, "compaction failed");
                }
            }
            log.remove_expired_producers(expiration_ms);
        }
    }

    fn checkpoint_recovery_points(&self) {
        let partitions = self.all();
        let points: Vec<(Arc<Partition>, i64)> = partitions
            .into_iter()
            .map(|p| {
                let point = p.log().recovery_point();
                (p, point)
            })
            .collect();
        // Saved under the map's read lock, keeping only partitions still hosted: a partition
        // deleted meanwhile must not have its point written back after `delete` removed it,
        // or a recreated topic of the same name would start recovery from the old offset.
        let hosted = self.read();
        let points: Vec<(&str, i64)> = points
            .iter()
            .filter(|(p, _)| {
                hosted
                    .get(&(p.topic_id, p.index))
                    .is_some_and(|current| Arc::ptr_eq(current, p))
            })
            .map(|(p, point)| (p.dir_name.as_str(), *point))
            .collect();
        if let Err(error) = self.recovery_points.save(&points) {
            tracing::error!(%error, "cannot checkpoint recovery points");
        }
    }

    /// Clean shutdown (blocking): flushes and closes every log, so the next start skips
    /// recovery, and checkpoints the recovery points. Call after the listener stopped.
    pub fn close(&self) {
        let partitions: Vec<Arc<Partition>> = self.write().drain().map(|(_, p)| p).collect();
        let mut points = Vec::with_capacity(partitions.len());
        for partition in partitions {
            partition.wake_waiters(true);
            let name = partition.dir_name.clone();
            let (topic, index) = (partition.topic.clone(), partition.index);
            let log = match Arc::try_unwrap(partition) {
                Ok(partition) => Arc::into_inner(partition.log),
                Err(shared) => {
                    // Still referenced by a request that outlived the listener: flush it and
                    // checkpoint what is durable; the next start recovers from there.
                    tracing::warn!(topic, index, "partition still in use at shutdown");
                    if shared.log().flush().is_ok() {
                        points.push((name, shared.log().recovery_point()));
                    }
                    continue;
                }
            };
            let Some(log) = log else {
                continue;
            };
            let end = log.log_end_offset();
            match log.close() {
                Ok(()) => points.push((name, end)),
                Err(error) => tracing::error!(topic, index, %error, "cannot close log cleanly"),
            }
        }
        let points: Vec<(&str, i64)> = points.iter().map(|(n, o)| (n.as_str(), *o)).collect();
        if let Err(error) = self.recovery_points.save(&points) {
            tracing::error!(%error, "cannot checkpoint recovery points");
        }
    }

    /// Moves aside (renames to `<dir>.<id>.stray`, keeping the data) the log directories that
    /// `image` gives this broker no reason to hold: those of a topic it does not know (by the
    /// id in their marker: deleted while this broker was away), and those of a known topic's
    /// partition that does not list this broker as a replica (reassigned away while it was
    /// down). They are not deleted: a metadata quorum re-created from scratch next to old logs
    /// would look the same, and an operator should decide. Only call with an image at least as
    /// new as any this broker applied before, after reconciling with it (see
    /// `run_reconciler`); a directory without a readable marker is left alone.
    fn set_aside_stray_logs(&self, image: &MetadataImage) {
        let entries = match self.log_dir.list() {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, "cannot list the log directories");
                return;
            }
        };
        for entry in entries {
            let name = entry.name.as_str();
            if self.read().values().any(|p| p.dir_name == name) {
                continue;
            }
            let topic_id = entry.topic_id.map(TopicId);
            let topic = topic_id.and_then(|id| image.topic_by_id(&id));
            let Some(why) = stray_reason(topic, self.broker_id, name) else {
                continue;
            };
            let topic_id = topic_id.map_or_else(|| "none".to_owned(), |id| id.to_string());
            match self.log_dir.set_aside(name) {
                Ok(aside) => tracing::warn!(
                    dir = %name,
                    moved_to = %aside.display(),
                    topic_id,
                    "{why}: the log was moved aside; delete it once sure"
                ),
                Err(error) => tracing::error!(dir = %name, %error, "cannot move a stray log aside"),
            }
            if let Err(error) = self.recovery_points.remove(name) {
                tracing::warn!(%error, "cannot remove a recovery point");
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Arc<Partition>>> {
        self.partitions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Arc<Partition>>> {
        self.partitions.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why the log directory `dir_name` is stray on `broker_id`, given the topic its marker names
/// (`None`: unknown to the image); `None` if the topic has it hosted there (or the name is not
/// `<topic>-<partition>` of that topic: not ours to judge).
fn stray_reason(
    topic: Option<&TopicRecord>,
    broker_id: BrokerId,
    dir_name: &str,
) -> Option<&'static str> {
    let Some(topic) = topic else {
        return Some("a log of a topic the cluster metadata does not know (deleted while this broker was away?)");
    };
    let (name, index) = LogDir::parse_dir_name(dir_name)?;
    if name != topic.name {
        return None;
    }
    match topic.partition(index) {
        Some(partition) if partition.replicas.contains(&broker_id) => None,
        _ => Some(
            "a log of a partition this broker does not host (reassigned away while it was down?)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use streambus_storage::log_dir::{marker_text, MARKER_FILE, STRAY_SUFFIX};

    use super::*;

    /// An image with brokers 1 and 2 and topic `kept` (id `[7; 16]`) whose partition 0 is on
    /// broker 1 and partition 1 on broker 2.
    fn image_with_topic_kept() -> MetadataImage {
        use streambus_raft::command::{
            CreateTopic, Endpoint, IncarnationId, MetadataCommand, RegisterBroker, TopicAssignment,
        };
        let mut image = MetadataImage::default();
        let mut offset = 0;
        let mut apply = |command: MetadataCommand| {
            offset += 1;
            image.apply(offset, &command)
        };
        for id in [1, 2] {
            apply(MetadataCommand::RegisterBroker(RegisterBroker {
                broker_id: id,
                incarnation_id: IncarnationId([1; 16]),
                endpoints: vec![Endpoint {
                    name: "kafka".to_owned(),
                    host: "localhost".to_owned(),
                    port: 9092,
                }],
                rack: None,
                now_ms: 1_000,
            }));
        }
        apply(MetadataCommand::CreateTopic(CreateTopic {
            name: "kept".to_owned(),
            topic_id: TopicId([7; 16]),
            assignment: TopicAssignment::Explicit(vec![vec![1], vec![2]]),
            configs: Default::default(),
        }));
        assert!(image.topic_by_name("kept").is_some(), "topic created");
        image
    }

    /// A log directory `logs/<name>` with a marker naming `topic_id` and one segment file.
    fn log_dir(logs: &Path, name: &str, topic_id: TopicId) -> PathBuf {
        let dir = logs.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MARKER_FILE), topic_id.to_string()).unwrap();
        std::fs::write(dir.join("00000000000000000000.log"), b"old records").unwrap();
        dir
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    #[test]
    fn markers_spell_topic_ids_as_the_metadata_does() {
        let id = TopicId([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 255]);
        assert_eq!(marker_text(id.0), id.to_string());
    }

    #[test]
    fn logs_the_image_gives_this_broker_no_reason_to_hold_are_moved_aside_and_others_kept() {
        let data = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            node_id: 1,
            data_dir: data.path().to_owned(),
            ..BrokerConfig::default()
        };
        let manager = PartitionManager::open(&config).unwrap();
        let logs = data.path().join("logs");
        let gone = log_dir(&logs, "gone-0", TopicId([9; 16]));
        let hosted = log_dir(&logs, "kept-0", TopicId([7; 16]));
        let moved_away = log_dir(&logs, "kept-1", TopicId([7; 16]));
        let beyond = log_dir(&logs, "kept-5", TopicId([7; 16]));
        // Not a partition log (no marker): not ours to judge.
        let unmarked = logs.join("unmarked");
        std::fs::create_dir_all(&unmarked).unwrap();

        manager.set_aside_stray_logs(&image_with_topic_kept());
        assert!(!gone.exists(), "a deleted topic's log stays in place");
        assert!(
            !moved_away.exists(),
            "a partition hosted elsewhere stays in place"
        );
        assert!(
            !beyond.exists(),
            "a partition the topic does not have stays in place"
        );
        assert!(hosted.exists(), "a partition this broker hosts was moved");
        assert!(unmarked.exists(), "a directory without a marker was moved");
        let mut left: Vec<String> = dir_names(&logs);
        left.sort();
        assert_eq!(left.len(), 5, "{left:?}");
        for (name, prefix) in left[..4]
            .iter()
            .zip(["gone-0.", "kept-0", "kept-1.", "kept-5."])
        {
            assert!(name.starts_with(prefix), "{left:?}");
        }
        assert_eq!(left[4], "unmarked");
        for aside in [&left[0], &left[2], &left[3]] {
            assert!(aside.ends_with(STRAY_SUFFIX), "{aside}");
            assert_eq!(
                std::fs::read(logs.join(aside).join("00000000000000000000.log")).unwrap(),
                b"old records",
                "moved aside, not deleted"
            );
        }
        // A second pass, even with an image that knows nothing, leaves stray directories alone.
        manager.set_aside_stray_logs(&MetadataImage::default());
        assert!(logs.join(&left[0]).exists());
        assert!(!hosted.exists(), "with no topic known, every log is stray");
    }
}
