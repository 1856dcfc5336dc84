//! Periodic work on every hosted log (due flushes under `flush.ms`, retention, compaction,
//! producer expiry, recovery-point checkpoints) and the clean close at shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::manager::PartitionManager;
use super::Partition;

/// How often due flushes (`flush.ms`) are checked.
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How often recovery points are checkpointed (`log.flush.offset.checkpoint.interval.ms`).
const RECOVERY_POINT_INTERVAL: Duration = Duration::from_secs(60);

impl PartitionManager {
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
            if crate::blocking::spawn(job).await.is_err() {
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
    /// recovery, and checkpoints the recovery points. Call after the listener stopped. Returns
    /// whether every log's data is durable, i.e. the broker may record a clean shutdown.
    pub fn close(&self) -> bool {
        let mut durable = true;
        let partitions: Vec<Arc<Partition>> = self.write().drain().map(|(_, p)| p).collect();
        let mut points = Vec::with_capacity(partitions.len());
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
        durable
    }
}
