//! [`CoordinatorLog`] over a partition this broker leads, at one leader epoch: appends through
//! `Partition::append_coordinator_records` (role and epoch checked under the partition's state
//! lock), waits on the partition's high watermark, reads committed batches through the
//! partition's reader. The only file of the coordinator that knows `Partition`'s API.

use std::sync::Arc;

use streambus_storage::producer::TxnVerification;
use streambus_storage::{decompress, StorageError};
use tokio::time::Instant;

use super::codec;
use super::log::{Appended, CommitWait, CoordinatorLog, LogBounds, LogChunk};
use super::machine::{Batch, CoordinatorRecord};
use super::CoordinatorError;
use crate::partition::read::ReadBound;
use crate::partition::{Commit, Partition, PartitionError};

/// The log of `partition`, written as its leader at `leader_epoch`.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    partition: Arc<Partition>,
    leader_epoch: i32,
}

impl PartitionLog {
    pub fn new(partition: Arc<Partition>, leader_epoch: i32) -> PartitionLog {
        PartitionLog {
            partition,
            leader_epoch,
        }
    }

    fn not_coordinator(&self) -> CoordinatorError {
        CoordinatorError::NotCoordinator {
            topic: self.partition.topic.clone(),
            partition: self.partition.index,
        }
    }

    fn partition_error(&self, error: PartitionError) -> CoordinatorError {
        match error {
            PartitionError::Storage(
                error @ (StorageError::InvalidProducerEpoch { .. }
                | StorageError::TransactionCoordinatorFenced { .. }
                | StorageError::InvalidTxnState { .. }
                | StorageError::OutOfOrderSequence { .. }
                | StorageError::BatchTooLarge { .. }
                | StorageError::InvalidBatch(_)),
            ) => CoordinatorError::Refused(Arc::new(error)),
            PartitionError::Storage(error) => error.into(),
            PartitionError::NotEnoughReplicas => self.not_enough_replicas(),
            // Deposed, or an outcome this broker cannot know: the shard is reloaded.
            _ => self.not_coordinator(),
        }
    }

    fn not_enough_replicas(&self) -> CoordinatorError {
        let (isr, min_insync) = self.partition.in_sync_replicas();
        CoordinatorError::NotEnoughReplicas { isr, min_insync }
    }

    fn check_leader(&self) -> Result<(), CoordinatorError> {
        if self.partition.is_leader_at(self.leader_epoch) {
            Ok(())
        } else {
            Err(self.not_coordinator())
        }
    }

    /// Runs a blocking log call on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Partition) -> T + Send + 'static,
    ) -> Result<T, CoordinatorError> {
        let partition = self.partition.clone();
        crate::blocking::spawn(move || call(&partition))
            .await
            .map_err(|error| CoordinatorError::NotAvailable {
                topic: self.partition.topic.clone(),
                reason: format!("a blocking log call failed: {error}"),
            })
    }
}

impl CoordinatorLog for PartitionLog {
    async fn append(
        &self,
        records: Vec<CoordinatorRecord>,
        kind: Batch,
        now_ms: i64,
    ) -> Result<Appended, CoordinatorError> {
        let marker = matches!(kind, Batch::Marker { .. });
        assert!(
            records.is_empty() == marker,
            "a batch has records, a marker none"
        );
        // A transactional batch (TxnOffsetCommit) needs its KIP-890 guard still current.
        let verification = match kind {
            Batch::Transactional { guard, .. } => TxnVerification::Guard(guard),
            Batch::Plain | Batch::Marker { .. } => TxnVerification::NotChecked,
        };
        let batch = codec::encode(&records, kind, now_ms)?;
        self.writable()?;
        let leader_epoch = self.leader_epoch;
        let appended = self
            .blocking(move |partition| {
                partition.append_coordinator_records(batch, leader_epoch, verification)
            })
            .await?;
        let info = appended.map_err(|error| self.partition_error(error))?;
        debug_assert_eq!(
            info.last_offset - info.base_offset + 1,
            records.len().max(1) as i64,
            "one offset per record (a marker takes one)"
        );
        Ok(Appended {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
        })
    }

    async fn wait_committed(
        &self,
        last_offset: i64,
        deadline: Instant,
    ) -> Result<CommitWait, CoordinatorError> {
        match self
            .partition
            .wait_commit(last_offset, self.leader_epoch, deadline)
            .await
        {
            Commit::Deposed => Err(self.not_coordinator()),
            Commit::Pending => Ok(CommitWait::DeadlinePassed),
            Commit::Committed { high_watermark, .. } => {
                Ok(CommitWait::Committed { high_watermark })
            }
        }
    }

    async fn read(&self, from_offset: i64, max_bytes: usize) -> Result<LogChunk, CoordinatorError> {
        self.check_leader()?;
        let high_watermark = self.partition.high_watermark();
        if from_offset >= high_watermark {
            return Ok(LogChunk {
                records: Vec::new(),
                next_offset: from_offset,
            });
        }
        let decompressed_bytes_max = decompress::limit_for(self.partition.max_message_bytes());
        let read = self
            .blocking(move |partition| {
                partition.read(from_offset, max_bytes, ReadBound::HighWatermark)
            })
            .await?;
        let batches = match read.error {
            None => read.records,
            // Retention or DeleteRecords moved the log start past it: go on from there.
            Some(PartitionError::Storage(StorageError::OffsetOutOfRange {
                log_start_offset,
                ..
            })) if log_start_offset > from_offset => {
                return Ok(LogChunk {
                    records: Vec::new(),
                    next_offset: log_start_offset,
                })
            }
            Some(error) => return Err(self.partition_error(error)),
        };
        let (records, next_offset) = codec::decode(&batches, from_offset, decompressed_bytes_max)?;
        Ok(LogChunk {
            records,
            next_offset,
        })
    }

    /// Kafka's coordinators write with acks=all and the same `min.insync.replicas` check as
    /// producers: nothing is appended below it.
    fn writable(&self) -> Result<(), CoordinatorError> {
        let (isr, min_insync) = self.partition.in_sync_replicas();
        if (isr as u64) < u64::from(min_insync) {
            return Err(self.not_enough_replicas());
        }
        Ok(())
    }

    async fn bounds(&self) -> Result<LogBounds, CoordinatorError> {
        self.check_leader()?;
        Ok(LogBounds {
            start_offset: self.partition.log_start_offset(),
            end_offset: self.partition.log_end_offset(),
            high_watermark: self.partition.high_watermark(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::partition::read::FollowerFetch;
    use std::path::Path;

    use tokio::sync::Notify;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::config::BrokerConfig;
    use crate::coordinator::shard::{self, ShardHandle, ShardStatus};
    use crate::coordinator::test_machine::{
        delete, put, shard_config, Images, KvMachine, NOT_YET, TEST_WAIT,
    };
    use crate::partition::{PartitionManager, WakeOn};
    use crate::testing::{off_runtime, reconcile};

    pub const TOPIC: &str = "__test_state";

    pub fn open_manager(dir: &Path) -> Arc<PartitionManager> {
        let config = BrokerConfig {
            node_id: 1,
            data_dir: dir.to_owned(),
            ..BrokerConfig::default()
        };
        Arc::new(PartitionManager::open(&config).expect("manager opens"))
    }

    /// Broker 1's manager hosting partition 0 of [`TOPIC`] with `replicas` (broker 1 leads).
    async fn hosted(
        dir: &Path,
        replicas: Vec<i32>,
    ) -> (Arc<PartitionManager>, Arc<Partition>, Images) {
        let mut images = Images::with_brokers(&[1, 2]);
        let topic_id = images.create_topic(TOPIC, vec![replicas]);
        let manager = open_manager(dir);
        reconcile(&manager, &images.image, true).await;
        let partition = manager.get(&topic_id, 0).expect("hosted");
        assert!(partition.is_leader_at(images.leader_epoch(&topic_id, 0)));
        (manager, partition, images)
    }

    async fn start(partition: &Arc<Partition>) -> (ShardHandle<KvMachine>, JoinHandle<()>) {
        let epoch = partition.state().leader_epoch;
        let log = Arc::new(PartitionLog::new(partition.clone(), epoch));
        let (handle, task) = shard::spawn(shard_config(TEST_WAIT), KvMachine::default(), log);
        let status = tokio::time::timeout(TEST_WAIT, handle.loaded()).await;
        assert_eq!(status.ok(), Some(ShardStatus::Active));
        (handle, task)
    }

    async fn stop(shard: ShardHandle<KvMachine>, task: JoinHandle<()>) {
        shard.stop();
        tokio::time::timeout(TEST_WAIT, task)
            .await
            .unwrap()
            .unwrap();
    }

    /// Waits (bounded) until `partition`'s log ends at `end` or later.
    pub async fn appended(partition: &Partition, end: i64) {
        // Each pass waits for an append; bounded by count and by TEST_WAIT per pass.
        for _ in 0..100 {
            let waiter = Arc::new(Notify::new());
            partition.add_waiter(&waiter, WakeOn::Append);
            if partition.log_end_offset() >= end {
                return;
            }
            let _ = tokio::time::timeout(TEST_WAIT, waiter.notified()).await;
        }
        panic!("the log never reached offset {end}");
    }

    #[tokio::test]
    async fn a_partition_reopened_from_disk_replays_into_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, partition, images) = hosted(dir.path(), vec![1]).await;
        let (first, task) = start(&partition).await;
        for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
            let write = tokio::time::timeout(TEST_WAIT, first.write(put(key, value))).await;
            write.unwrap().unwrap();
        }
        tokio::time::timeout(TEST_WAIT, first.write(delete("a")))
            .await
            .unwrap()
            .unwrap();
        let written = first.read(|kv| kv.clone()).await.unwrap();
        assert_eq!(written.offsets, vec![0, 1, 2, 3]);
        stop(first, task).await;

        let (second, task) = start(&partition).await;
        let replayed = second.read(|kv| kv.clone()).await.unwrap();
        assert_eq!(replayed, written, "replayed from the open log");
        stop(second, task).await;

        drop(partition);
        off_runtime(move || manager.close()).await;
        let manager = open_manager(dir.path());
        reconcile(&manager, &images.image, true).await;
        let topic = images.image.topic_by_name(TOPIC).unwrap();
        let partition = manager.get(&topic.topic_id, 0).expect("hosted again");
        let (third, task) = start(&partition).await;
        let reopened = third.read(|kv| kv.clone()).await.unwrap();
        assert_eq!(
            reopened, written,
            "replayed from the log reopened from disk"
        );
        assert_eq!(
            reopened.map.into_iter().collect::<Vec<_>>(),
            vec![
                ("b".to_owned(), "2".to_owned()),
                ("c".to_owned(), "3".to_owned())
            ]
        );
        stop(third, task).await;
    }

    #[tokio::test]
    async fn a_write_waits_for_the_follower_and_fails_when_the_leader_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, partition, mut images) = hosted(dir.path(), vec![1, 2]).await;
        assert_eq!(partition.state().isr, vec![1, 2]);
        let epoch = partition.state().leader_epoch;
        let (shard, _task) = start(&partition).await;

        let mut write = tokio::spawn({
            let shard = shard.clone();
            async move { shard.write(put("a", "1")).await }
        });
        appended(&partition, 1).await;
        assert!(
            tokio::time::timeout(NOT_YET, &mut write).await.is_err(),
            "answered before follower 2 had the record"
        );
        assert_eq!(partition.high_watermark(), 0);
        let leader = partition.clone();
        off_runtime(move || leader.on_follower_fetch(FollowerFetch::at(2, epoch), 1))
            .await
            .unwrap();
        assert_eq!(partition.high_watermark(), 1);
        let answer = tokio::time::timeout(TEST_WAIT, write).await.unwrap();
        assert_eq!(answer.unwrap().unwrap(), None);

        let mut write = tokio::spawn({
            let shard = shard.clone();
            async move { shard.write(put("a", "2")).await }
        });
        appended(&partition, 2).await;
        assert!(tokio::time::timeout(NOT_YET, &mut write).await.is_err());
        images.fence(1);
        reconcile(&manager, &images.image, false).await;
        let answer = tokio::time::timeout(TEST_WAIT, write).await.unwrap();
        assert!(
            matches!(
                answer.unwrap(),
                Err(CoordinatorError::NotCoordinator { .. })
            ),
            "a deposed leader's pending write fails"
        );
    }
}
