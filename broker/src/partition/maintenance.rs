//! Periodic work on every hosted log (due flushes under `flush.ms`, retention, compaction,
//! producer expiry, recovery-point and high-watermark checkpoints, the LSO lag gauges) and the
//! clean close at shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use streambus_storage::CheckpointedOffset;
use tokio_util::sync::CancellationToken;

use super::manager::PartitionManager;
use super::Partition;

/// How often due flushes (`flush.ms`) are checked.
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How often recovery points are checkpointed (`log.flush.offset.checkpoint.interval.ms`).
const RECOVERY_POINT_INTERVAL: Duration = Duration::from_secs(60);
/// How often the LSO lag gauges are refreshed.
const LSO_LAG_INTERVAL: Duration = Duration::from_secs(15);

impl PartitionManager {
    /// Periodic log maintenance until `shutdown`: due flushes, retention and compaction,
    /// producer expiry, recovery-point and high-watermark checkpoints.
    pub async fn run_maintenance(self: Arc<Self>, shutdown: CancellationToken) {
        let retention_every = Duration::from_millis(self.config.topics.retention_check_interval_ms);
        let high_watermarks_every = self.config.replication.high_watermark_checkpoint_interval();
        let mut flush = tokio::time::interval(FLUSH_CHECK_INTERVAL);
        let mut retention = tokio::time::interval(retention_every);
        let mut checkpoint = tokio::time::interval(RECOVERY_POINT_INTERVAL);
        let mut lso_lag = tokio::time::interval(LSO_LAG_INTERVAL);
        // Not at once: the first tick comes before the reconciler opened the partitions, and
        // a checkpoint of no partitions would be a wasted fsync.
        let mut high_watermarks = tokio::time::interval_at(
            tokio::time::Instant::now() + high_watermarks_every,
            high_watermarks_every,
        );
        for timer in [
            &mut flush,
            &mut retention,
            &mut checkpoint,
            &mut high_watermarks,
            &mut lso_lag,
        ] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let manager = self.clone();
            let job: Box<dyn FnOnce() + Send> = tokio::select! {
                _ = flush.tick() => Box::new(move || manager.flush_due()),
                _ = retention.tick() => Box::new(move || manager.enforce_retention()),
                _ = checkpoint.tick() => Box::new(move || manager.checkpoint_recovery_points()),
                _ = high_watermarks.tick() => Box::new(move || manager.checkpoint_high_watermarks()),
                _ = lso_lag.tick() => Box::new(move || manager.publish_lso_lag()),
                () = shutdown.cancelled() => return,
            };
            if crate::blocking::spawn(job).await.is_err() {
                tracing::error!("log maintenance panicked");
            }
        }
    }

    fn flush_due(&self) {
        if !self.log_dir_health.is_online() {
            // Every log refuses writes until the directory is recovered.
            return;
        }
        for partition in self.all() {
            if let Err(error) = partition.log().flush_if_due() {
                tracing::error!(topic = %partition.topic, index = partition.index, %error, "flush failed");
            }
        }
    }

    /// Retention, compaction and producer expiry on every hosted log (blocking).
    pub fn enforce_retention(&self) {
        if !self.log_dir_health.is_online() {
            return;
        }
        let expiration_ms = self.config.topics.producer_id_expiration_ms;
        for partition in self.all() {
            let log = partition.log();
            let outcome = log.enforce_retention();
            if let Err(error) = outcome {
                tracing::error!(topic = %partition.topic, index = partition.index, %error, "retention failed");
            }
            if log.config().cleanup_policy.compacts() {
                // Up to the last stable offset: every transaction below it is complete, so
                // the cleaner can tell aborted data from committed.
                if let Err(error) = log.compact(partition.last_stable_offset()) {
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

    /// Writes every hosted partition's high watermark to `replication-offset-checkpoint`
    /// (blocking), keeping the entries of partitions not open here (yet): the file is where
    /// they start from when they are.
    pub(super) fn checkpoint_high_watermarks(&self) {
        let offsets = {
            // Under the map's read lock: a partition deleted meanwhile already dropped its
            // entry and must not get it back (the topic-id check on open is the second guard).
            let hosted = self.read();
            let mut checkpointed = self.checkpointed();
            for partition in hosted.values() {
                checkpointed.insert(partition.dir_name.clone(), checkpoint_entry(partition));
            }
            checkpointed.clone()
        };
        self.write_high_watermarks(&offsets);
    }

    fn write_high_watermarks(&self, offsets: &BTreeMap<String, CheckpointedOffset>) {
        if !self.log_dir_health.is_online() {
            // The file is in the failed directory; the reopened logs start from `offsets`.
            return;
        }
        if let Err(error) = self.high_watermark_file.write(offsets) {
            tracing::error!(%error, "cannot checkpoint high watermarks");
        }
    }

    /// Clean shutdown (blocking): flushes and closes every log, so the next start skips
    /// recovery, and checkpoints the recovery points and high watermarks. Call after the
    /// listener stopped. Returns whether every log's data is durable, i.e. the broker may record
    /// a clean shutdown.
    pub fn close(&self) -> bool {
        let mut durable = true;
        let partitions: Vec<Arc<Partition>> = self.write().drain().map(|(_, p)| p).collect();
        let mut points = Vec::with_capacity(partitions.len());
        let high_watermarks = {
            let mut checkpointed = self.checkpointed();
            for partition in &partitions {
                checkpointed.insert(partition.dir_name.clone(), checkpoint_entry(partition));
            }
            checkpointed.clone()
        };
        for partition in partitions {
            partition.wake(super::Wake::All);
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
                    } else {
                        durable = false;
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
                Err(error) => {
                    durable = false;
                    tracing::error!(topic, index, %error, "cannot close log cleanly");
                }
            }
        }
        let points: Vec<(&str, i64)> = points.iter().map(|(n, o)| (n.as_str(), *o)).collect();
        if let Err(error) = self.recovery_points.save(&points) {
            tracing::error!(%error, "cannot checkpoint recovery points");
        }
        self.write_high_watermarks(&high_watermarks);
        durable
    }
}

/// What the high-watermark checkpoint keeps of `partition`.
pub(super) fn checkpoint_entry(partition: &Partition) -> CheckpointedOffset {
    CheckpointedOffset {
        topic_id: partition.topic_id.0,
        offset: partition.high_watermark(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::testing::{Images, TOPIC_ID};

    /// Broker 1's manager on `data`, with partition 0 of topic `t` (replicas 2, 1: broker 2
    /// leads, broker 1 follows) opened.
    fn follower_manager(data: &std::path::Path) -> (PartitionManager, Arc<Partition>) {
        let config = BrokerConfig {
            node_id: 1,
            data_dir: data.to_owned(),
            ..BrokerConfig::default()
        };
        let mut images = Images::with_brokers(&[1, 2]);
        images.create_topic("t", vec![vec![2, 1]]);
        let manager = PartitionManager::open(&config).unwrap();
        manager.reconcile(&images.image, true);
        let partition = manager.get(&TOPIC_ID, 0).expect("partition 0 opened");
        (manager, partition)
    }

    /// Ten records in two batches (offsets 0-5 and 6-9) fetched from leader 2, whose high
    /// watermark was 6.
    fn follow_ten_records(partition: &Partition) {
        let epoch = partition.state().leader_epoch;
        let first = streambus_storage::batch::testing::batch(6, 5, b'v', 1_000);
        let mut second =
            bytes::BytesMut::from(&streambus_storage::batch::testing::batch(4, 5, b'w', 1_000)[..]);
        // The base offset is outside the batch CRC.
        second[..8].copy_from_slice(&6i64.to_be_bytes());
        let records = [first, second.freeze()].concat();
        partition
            .append_as_follower(records.into(), epoch, 6, 0)
            .expect("follower append");
        assert_eq!(partition.high_watermark(), 6);
    }

    #[test]
    fn a_cleanly_restarted_follower_starts_from_its_checkpointed_high_watermark() {
        let data = tempfile::tempdir().unwrap();
        let (manager, partition) = follower_manager(data.path());
        follow_ten_records(&partition);
        drop(partition);
        manager.close();
        drop(manager);

        let (_manager, partition) = follower_manager(data.path());
        assert_eq!(partition.log_end_offset(), 10);
        assert_eq!(partition.high_watermark(), 6, "restored, not 0");
        // The fallback the replica fetcher takes when leader epochs cannot find the divergence
        // cuts to the committed offset, not to 0.
        let epoch = partition.state().leader_epoch;
        let end = partition
            .truncate_as_follower(partition.fallback_truncation_offset(), epoch)
            .unwrap();
        assert_eq!(end, 6, "the committed records are kept");
    }

    #[test]
    fn a_crashed_follower_starts_from_the_last_periodic_checkpoint() {
        let data = tempfile::tempdir().unwrap();
        let (manager, partition) = follower_manager(data.path());
        follow_ten_records(&partition);
        manager.checkpoint_high_watermarks();
        // No close: the logs are dropped unflushed, as a crash leaves them (the page cache
        // keeps the bytes; recovery scans them).
        drop(partition);
        drop(manager);

        let (_manager, partition) = follower_manager(data.path());
        assert_eq!(partition.high_watermark(), 6);
    }

    #[test]
    fn a_checkpointed_high_watermark_is_clamped_to_the_log_and_ignored_for_another_topic() {
        let data = tempfile::tempdir().unwrap();
        let (manager, partition) = follower_manager(data.path());
        follow_ten_records(&partition);
        drop(partition);
        manager.close();
        drop(manager);
        let checkpoint = LogDirCheckpoint::of(data.path());
        checkpoint.set("t-0", TOPIC_ID.0, 1_000);
        let (manager, partition) = follower_manager(data.path());
        assert_eq!(partition.high_watermark(), 10, "clamped to the log end");
        drop(partition);
        manager.close();
        drop(manager);

        checkpoint.set("t-0", [9; 16], 8);
        let (_manager, partition) = follower_manager(data.path());
        assert_eq!(
            partition.high_watermark(),
            0,
            "an entry of a deleted topic of the same name is not this topic's"
        );
    }

    /// The high-watermark checkpoint file of a data directory, edited by hand.
    struct LogDirCheckpoint(streambus_storage::OffsetCheckpointFile);

    impl LogDirCheckpoint {
        fn of(data: &std::path::Path) -> LogDirCheckpoint {
            LogDirCheckpoint(
                streambus_storage::LogDir::open(data)
                    .unwrap()
                    .high_watermark_checkpoint(),
            )
        }

        fn set(&self, name: &str, topic_id: [u8; 16], offset: i64) {
            let mut offsets = self.0.read().unwrap();
            offsets.insert(name.to_owned(), CheckpointedOffset { topic_id, offset });
            self.0.write(&offsets).unwrap();
        }
    }
}
