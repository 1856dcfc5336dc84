//! Reconciliation of the hosted partitions with the metadata image and this broker's
//! registration: partitions opened (their directories prepared by the storage crate's `LogDir`,
//! whose `partition.metadata` marker guards against adopting a deleted topic's log), updated,
//! deleted when the topic goes or the replica moves away, and, once the broker is active, logs
//! the image gives it no reason to hold set aside as stray. Which logs are stray is decided
//! here, from the image; the file operations are `LogDir`'s.

use std::collections::HashMap;
use std::sync::Arc;

use streambus_raft::command::{BrokerId, TopicId};
use streambus_raft::image::TopicRecord;
use streambus_raft::{MetadataImage, RegistrationState};
use streambus_storage::{Log, LogDir, LogOptions, StorageError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::log_dir_health::LogDirState;
use super::manager::{Key, PartitionManager};
use super::{Partition, PartitionName, PartitionState};
use crate::replication::ReplicaFetchers;
use crate::topic_config;

/// Threads opening new partitions at once (see `open_all`).
const OPEN_THREADS: usize = 8;

impl PartitionManager {
    /// Applies `image` to the hosted partitions: opens, updates and removes logs. `active`: this
    /// broker is registered and unfenced in `image` (see [`PartitionState::active`]). While the
    /// log directory is offline every replica is inactive and nothing is opened. Blocking.
    pub fn reconcile(&self, image: &MetadataImage, active: bool) {
        let log_dir_online = self.log_dir_health.is_online();
        let active = active && log_dir_online;
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
        if log_dir_online {
            // Offline, they are opened (with recovery) once the directory is back.
            self.open_all(to_open);
        }
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
        // Only the same topic's: a directory name outlives a deleted topic.
        let high_watermark = self
            .checkpointed()
            .get(&dir.name)
            .filter(|entry| !dir.replaced && entry.topic_id == topic_id.0)
            .map_or(0, |entry| entry.offset);
        let recovery_point = self.recovery_points.get(&dir.name)?;
        let options = LogOptions {
            recovery_point,
            failures: self.log_dir_health.reporter(),
            ..LogOptions::default()
        };
        let log = Log::open(&dir.path, state.settings.log.clone(), options)?;
        let name = PartitionName {
            topic: topic.to_owned(),
            topic_id,
            index,
            dir_name: dir.name,
        };
        let partition = Partition::new(
            name,
            self.broker_id,
            log,
            state,
            self.isr_proposer.get().cloned(),
            high_watermark,
        );
        // Kafka logs each loaded log with its offsets too; operators and tests read the high
        // watermark a restarted replica starts from here.
        tracing::info!(
            topic,
            index,
            log_start_offset = partition.log_start_offset(),
            log_end_offset = partition.log_end_offset(),
            high_watermark = partition.high_watermark(),
            "partition opened"
        );
        Ok(partition)
    }

    fn delete(&self, partition: Arc<Partition>) {
        tracing::info!(topic = %partition.topic, index = partition.index, "deleting partition");
        partition.go_offline();
        // After this no maintenance pass still holding the partition can touch a file: the
        // directory's path may name a recreated topic's files once it moves.
        partition.log().retire();
        partition.wake(super::Wake::All);
        if let Err(error) = self.log_dir.delete(&partition.dir_name) {
            tracing::error!(%error, "cannot delete a partition directory");
        }
        if let Err(error) = self.recovery_points.remove(&partition.dir_name) {
            tracing::warn!(%error, "cannot remove a recovery point");
        }
        self.checkpointed().remove(&partition.dir_name);
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
        let mut log_dir = self.log_dir_health.subscribe();
        loop {
            let image = images.borrow_and_update().clone();
            let registered = match *registration.borrow_and_update() {
                RegistrationState::Registered { incarnation_id, .. } => image
                    .broker(self.broker_id)
                    .is_some_and(|b| b.incarnation_id == incarnation_id && !b.fenced),
                RegistrationState::Unregistered => false,
            };
            let log_dir_online = *log_dir.borrow_and_update() == LogDirState::Online;
            // `reconcile` reads the directory's state itself; this is for the log lines.
            let active = registered && log_dir_online;
            let manager = self.clone();
            let reconciled = {
                let image = image.clone();
                crate::blocking::spawn(move || manager.reconcile(&image, registered)).await
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
                } else if !log_dir_online {
                    tracing::warn!(
                        broker_id = self.broker_id,
                        "broker inactive: log directory offline, serving no partition"
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
                    crate::blocking::spawn(move || manager.set_aside_stray_logs(&image)).await;
                if removed.is_err() {
                    tracing::error!("setting stray logs aside panicked");
                }
            }
            tokio::select! {
                changed = images.changed() => if changed.is_err() { return },
                changed = registration.changed(), if registration_open => {
                    registration_open = changed.is_ok();
                }
                changed = log_dir.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
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
            self.checkpointed().remove(name);
        }
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
    use crate::config::BrokerConfig;
    use crate::testing::{Images, TOPIC_ID};

    /// An image with brokers 1 and 2 and topic `kept` (id [`TOPIC_ID`]) whose partition 0 is
    /// on broker 1 and partition 1 on broker 2.
    fn image_with_topic_kept() -> MetadataImage {
        let mut images = Images::with_brokers(&[1, 2]);
        images.create_topic("kept", vec![vec![1], vec![2]]);
        images.image
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
        let hosted = log_dir(&logs, "kept-0", TOPIC_ID);
        let moved_away = log_dir(&logs, "kept-1", TOPIC_ID);
        let beyond = log_dir(&logs, "kept-5", TOPIC_ID);
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
