//! The runtime of one coordinator: the shards of its internal topic on this broker. It follows
//! the metadata image and becomes the coordinator of each partition this broker leads (a shard
//! loads it by replay, then serves), resigns from those it no longer leads, routes keys to
//! partitions, and hands operations to the right shard.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use streambus_raft::command::{BrokerId, TopicId};
use streambus_raft::MetadataImage;
use streambus_storage::{Clock, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::machine::{CoordinatorMachine, CoordinatorResult, OpContext};
use super::partition_log::PartitionLog;
use super::route::partition_for;
use super::shard::{self, ShardConfig, ShardHandle, ShardStatus};
use super::topic::{self, InternalTopic};
use super::CoordinatorError;
use crate::context::BrokerContext;
use crate::partition::manager::RECONCILE_WAIT;
use crate::partition::{Partition, PartitionManager};

/// How often shards that stopped on an error are started again while this broker still leads
/// their partition (images alone would not retry them).
const RESTART_INTERVAL: Duration = Duration::from_secs(5);

/// Settings of a runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How long an operation may wait for its records to be committed (Kafka's
    /// `offsets.commit.timeout.ms` for groups).
    pub write_timeout: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            write_timeout: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A shard this broker runs, for one leader epoch of its partition.
struct Running<M: CoordinatorMachine> {
    topic_id: TopicId,
    leader_epoch: i32,
    handle: ShardHandle<M>,
    task: JoinHandle<()>,
}

/// Makes the fresh state machine of a partition.
/// Makes the state machine of a partition (its index, and this broker's leader epoch of it).
type NewMachine<M> = Box<dyn Fn(u32, i32) -> M + Send + Sync>;

/// The coordinator runtime of one internal topic on this broker.
pub struct CoordinatorRuntime<M: CoordinatorMachine> {
    broker_id: BrokerId,
    topic: InternalTopic,
    config: RuntimeConfig,
    new_machine: NewMachine<M>,
    /// By partition index. Never locked across an `.await`.
    shards: RwLock<BTreeMap<u32, Running<M>>>,
    /// The topic's partition count in the image (0 until the topic exists).
    partitions_seen: AtomicU32,
    /// Partitions the latest image says this broker leads, before their shards start: a request
    /// for one is told to wait (LoadInProgress), not to look for another coordinator.
    expected: RwLock<BTreeSet<u32>>,
}

impl<M: CoordinatorMachine> std::fmt::Debug for CoordinatorRuntime<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorRuntime")
            .field("topic", &self.topic.name)
            .field("shards", &self.read_shards().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<M: CoordinatorMachine> CoordinatorRuntime<M> {
    /// A runtime for `topic` on broker `broker_id`; `new_machine(partition)` makes the empty
    /// state a partition's replay starts from. Nothing runs until [`CoordinatorRuntime::run`].
    pub fn new(
        broker_id: BrokerId,
        topic: InternalTopic,
        config: RuntimeConfig,
        new_machine: impl Fn(u32, i32) -> M + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(CoordinatorRuntime {
            broker_id,
            topic,
            config,
            new_machine: Box::new(new_machine),
            shards: RwLock::new(BTreeMap::new()),
            partitions_seen: AtomicU32::new(0),
            expected: RwLock::new(BTreeSet::new()),
        })
    }

    pub fn topic(&self) -> &InternalTopic {
        &self.topic
    }

    /// The partition that coordinates `key`: Kafka's `abs(hashCode(key)) % N`, with N the
    /// topic's partition count, or the configured count while the topic does not exist.
    pub fn partition_for(&self, key: &str) -> u32 {
        let seen = self.partitions_seen.load(Ordering::Acquire);
        let count = if seen > 0 {
            seen
        } else {
            self.topic.partitions
        };
        partition_for(key, count.max(1))
    }

    /// Creates the internal topic if the image does not have it yet; its id.
    pub async fn ensure_topic(&self, ctx: &BrokerContext) -> Result<TopicId, CoordinatorError> {
        topic::ensure_topic(ctx, &self.topic).await
    }

    /// The broker that coordinates `key` (FindCoordinator), creating the topic on first use.
    pub async fn find(&self, ctx: &BrokerContext, key: &str) -> Result<BrokerId, CoordinatorError> {
        self.ensure_topic(ctx).await?;
        let image = ctx.image();
        let unavailable = |reason: &str| CoordinatorError::NotAvailable {
            topic: self.topic.name.clone(),
            reason: reason.to_owned(),
        };
        let topic = image
            .topic_by_name(&self.topic.name)
            .ok_or_else(|| unavailable("not in this broker's metadata yet"))?;
        let count = u32::try_from(topic.partitions.len())
            .unwrap_or(u32::MAX)
            .max(1);
        let partition = partition_for(key, count);
        topic
            .partitions
            .get(partition as usize)
            .and_then(|p| p.leader)
            .ok_or_else(|| unavailable("the partition has no leader"))
    }

    /// Whether this broker coordinates `partition` now (loading or serving).
    pub fn is_coordinator(&self, partition: u32) -> bool {
        self.read_shards()
            .get(&partition)
            .is_some_and(|running| running.handle.status() != ShardStatus::Stopped)
    }

    /// The partitions this broker coordinates now (loading or serving), in order.
    pub fn coordinated(&self) -> Vec<u32> {
        self.read_shards()
            .iter()
            .filter(|(_, running)| running.handle.status() != ShardStatus::Stopped)
            .map(|(index, _)| *index)
            .collect()
    }

    /// Runs `op` on `partition`'s state machine; its response once its records are committed.
    pub async fn write<R, F>(&self, partition: u32, op: F) -> Result<R, CoordinatorError>
    where
        R: Send + 'static,
        F: FnOnce(&mut M, &mut OpContext<'_, M::TimerKey>) -> CoordinatorResult<R> + Send + 'static,
    {
        self.shard(partition)?.write(op).await
    }

    /// Reads `partition`'s state (once the writes before the read are committed).
    pub async fn read<R, F>(&self, partition: u32, read: F) -> Result<R, CoordinatorError>
    where
        R: Send + 'static,
        F: FnOnce(&M) -> R + Send + 'static,
    {
        self.shard(partition)?.read(read).await
    }

    fn shard(&self, partition: u32) -> Result<ShardHandle<M>, CoordinatorError> {
        if let Some(running) = self.read_shards().get(&partition) {
            return Ok(running.handle.clone());
        }
        let expected = self
            .expected
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&partition);
        Err(if expected {
            CoordinatorError::LoadInProgress {
                topic: self.topic.name.clone(),
                partition,
            }
        } else {
            CoordinatorError::NotCoordinator {
                topic: self.topic.name.clone(),
                partition,
            }
        })
    }

    /// Notes which partitions `image` says this broker leads.
    fn expect(&self, image: &MetadataImage) {
        let led = image
            .topic_by_name(&self.topic.name)
            .map(|topic| {
                (0u32..)
                    .zip(&topic.partitions)
                    .filter(|(_, p)| p.leader == Some(self.broker_id))
                    .map(|(index, _)| index)
                    .collect()
            })
            .unwrap_or_default();
        *self.expected.write().unwrap_or_else(|e| e.into_inner()) = led;
    }

    /// Starts [`CoordinatorRuntime::run`] on this broker's image and partitions, until the
    /// broker shuts down.
    pub fn spawn(self: &Arc<Self>, ctx: &BrokerContext) -> JoinHandle<()> {
        let run = self.clone().run(
            ctx.node.subscribe(),
            ctx.partitions.clone(),
            ctx.shutdown.clone(),
        );
        tokio::spawn(run)
    }

    /// Follows the metadata image until `shutdown`: after the partitions applied an image,
    /// starts a shard for each partition of the topic this broker leads and stops the others.
    /// At the end every shard resigns.
    pub async fn run(
        self: Arc<Self>,
        mut images: watch::Receiver<Arc<MetadataImage>>,
        partitions: Arc<PartitionManager>,
        shutdown: CancellationToken,
    ) {
        let mut restart = tokio::time::interval(RESTART_INTERVAL);
        restart.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Each pass applies the latest image; ends at shutdown or when the images end.
        loop {
            let image = images.borrow_and_update().clone();
            self.expect(&image);
            // A timeout leaves the partitions' own role checks to decide below.
            partitions
                .wait_reconciled(image.metadata_offset(), RECONCILE_WAIT)
                .await;
            self.apply(&image, &partitions);
            tokio::select! {
                changed = images.changed() => if changed.is_err() { break },
                _ = restart.tick() => {}
                () = shutdown.cancelled() => break,
            }
        }
        self.expected
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.resign_all().await;
    }

    /// Starts and stops shards for `image`.
    fn apply(&self, image: &MetadataImage, partitions: &PartitionManager) {
        let led = self.led_partitions(image, partitions);
        let mut shards = self.write_shards();
        shards.retain(|index, running| {
            let current = led.get(index).is_some_and(|(topic_id, epoch, _)| {
                *topic_id == running.topic_id && *epoch == running.leader_epoch
            });
            let keep = current && running.handle.status() != ShardStatus::Stopped;
            if !keep {
                running.handle.stop();
            }
            keep
        });
        for (index, (topic_id, leader_epoch, partition)) in led {
            if shards.contains_key(&index) {
                continue;
            }
            tracing::info!(topic = %self.topic.name, partition = index, leader_epoch, "becoming coordinator");
            let running = self.start_shard(index, topic_id, leader_epoch, partition);
            shards.insert(index, running);
        }
    }

    /// The partitions of the topic this broker leads per `image`, as the partitions themselves
    /// confirm (opened and leading at the image's epoch).
    fn led_partitions(
        &self,
        image: &MetadataImage,
        partitions: &PartitionManager,
    ) -> BTreeMap<u32, (TopicId, i32, Arc<Partition>)> {
        let Some(topic) = image.topic_by_name(&self.topic.name) else {
            return BTreeMap::new();
        };
        let count = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
        self.partitions_seen.store(count, Ordering::Release);
        (0..count)
            .zip(&topic.partitions)
            .filter(|(_, record)| record.leader == Some(self.broker_id))
            .filter_map(|(index, record)| {
                let partition = partitions.get(&topic.topic_id, index)?;
                partition
                    .is_leader_at(record.leader_epoch)
                    .then_some((index, (topic.topic_id, record.leader_epoch, partition)))
            })
            .collect()
    }

    fn start_shard(
        &self,
        index: u32,
        topic_id: TopicId,
        leader_epoch: i32,
        partition: Arc<Partition>,
    ) -> Running<M> {
        let config = ShardConfig {
            topic: self.topic.name.clone(),
            partition: index,
            write_timeout: self.config.write_timeout,
            clock: self.config.clock.clone(),
        };
        let log = Arc::new(PartitionLog::new(partition, leader_epoch));
        let (handle, task) = shard::spawn(config, (self.new_machine)(index, leader_epoch), log);
        Running {
            topic_id,
            leader_epoch,
            handle,
            task,
        }
    }

    /// Stops every shard and waits for their tasks.
    async fn resign_all(&self) {
        let stopped: Vec<Running<M>> = {
            let mut shards = self.write_shards();
            std::mem::take(&mut *shards).into_values().collect()
        };
        for running in &stopped {
            running.handle.stop();
        }
        for running in stopped {
            if running.task.await.is_err() {
                tracing::error!(topic = %self.topic.name, "a coordinator shard panicked");
            }
        }
    }

    fn read_shards(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, Running<M>>> {
        self.shards.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_shards(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u32, Running<M>>> {
        self.shards.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::partition_log::tests::{appended, open_manager, TOPIC};
    use crate::coordinator::test_machine::{put, Images, KvMachine, NOT_YET, TEST_WAIT};
    use crate::coordinator::topic::FewerBrokers;
    use crate::partition::read::FollowerFetch;
    use crate::partition::read::ReadBound;
    use crate::partition::Partition;
    use crate::testing::{off_runtime, reconcile};

    /// Polls `ready` until it holds (at most 500 times, 20 ms apart).
    async fn eventually(mut ready: impl FnMut() -> bool) {
        for _ in 0..500 {
            if ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the condition never held");
    }

    /// Reads `partition`'s map once it has loaded (polled, bounded).
    async fn loaded_map(
        runtime: &CoordinatorRuntime<KvMachine>,
        partition: u32,
    ) -> BTreeMap<String, String> {
        for _ in 0..500 {
            match runtime.read(partition, |kv| kv.map.clone()).await {
                Ok(map) => return map,
                Err(
                    CoordinatorError::LoadInProgress { .. }
                    | CoordinatorError::NotCoordinator { .. },
                ) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(error) => panic!("{error}"),
            }
        }
        panic!("partition {partition} never loaded");
    }

    fn runtime(partitions: u32) -> Arc<CoordinatorRuntime<KvMachine>> {
        let topic = InternalTopic::compacted(TOPIC, partitions, 1, FewerBrokers::Cap);
        let config = RuntimeConfig {
            write_timeout: TEST_WAIT,
            ..RuntimeConfig::default()
        };
        CoordinatorRuntime::new(1, topic, config, |_, _| KvMachine::default())
    }

    #[tokio::test]
    async fn the_runtime_coordinates_what_this_broker_leads_and_resigns_when_it_moves() {
        let dir = tempfile::tempdir().unwrap();
        let mut images = Images::with_brokers(&[1, 2]);
        let topic_id = images.create_topic(TOPIC, vec![vec![1, 2], vec![2, 1]]);
        let manager = open_manager(dir.path());
        reconcile(&manager, &images.image, true).await;
        let (publish, watched) = watch::channel(Arc::new(images.image.clone()));
        let runtime = runtime(50);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            runtime
                .clone()
                .run(watched, manager.clone(), shutdown.clone()),
        );

        assert!(loaded_map(&runtime, 0).await.is_empty());
        assert!(runtime.is_coordinator(0));
        assert!(!runtime.is_coordinator(1), "broker 2 leads partition 1");
        assert!(matches!(
            runtime.read(1, |kv| kv.map.len()).await,
            Err(CoordinatorError::NotCoordinator { partition: 1, .. })
        ));
        // Routed over the image's 2 partitions, not the 50 configured.
        assert_eq!(runtime.partition_for("my-group"), 1_906_497_762 % 2);
        assert_eq!(runtime.partition_for("a"), 1);

        let partition = manager.get(&topic_id, 0).unwrap();
        let epoch = images.leader_epoch(&topic_id, 0);
        let mut write = tokio::spawn({
            let runtime = runtime.clone();
            async move { runtime.write(0, put("a", "1")).await }
        });
        appended(&partition, 1).await;
        assert!(tokio::time::timeout(NOT_YET, &mut write).await.is_err());
        let leader = partition.clone();
        off_runtime(move || leader.on_follower_fetch(FollowerFetch::at(2, epoch), 1))
            .await
            .unwrap();
        let answer = tokio::time::timeout(TEST_WAIT, write).await.unwrap();
        assert_eq!(answer.unwrap().unwrap(), None);

        let pending = tokio::spawn({
            let runtime = runtime.clone();
            async move { runtime.write(0, put("b", "2")).await }
        });
        images.fence(1);
        reconcile(&manager, &images.image, false).await;
        publish.send_replace(Arc::new(images.image.clone()));
        let answer = tokio::time::timeout(TEST_WAIT, pending).await.unwrap();
        assert!(matches!(
            answer.unwrap(),
            Err(CoordinatorError::NotCoordinator { .. })
        ));
        eventually(|| !runtime.is_coordinator(0)).await;

        shutdown.cancel();
        tokio::time::timeout(TEST_WAIT, task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_restarted_broker_replays_its_partition_and_serves_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut images = Images::with_brokers(&[1]);
        images.create_topic(TOPIC, vec![vec![1]]);
        let image = Arc::new(images.image.clone());
        let (_publish, watched) = watch::channel(image.clone());

        let manager = open_manager(dir.path());
        reconcile(&manager, &image, true).await;
        let first = runtime(1);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(first.clone().run(
            watched.clone(),
            manager.clone(),
            shutdown.clone(),
        ));
        assert!(loaded_map(&first, 0).await.is_empty());
        for (key, value) in [("a", "1"), ("b", "2"), ("a", "3")] {
            let write = tokio::time::timeout(TEST_WAIT, first.write(0, put(key, value))).await;
            write.unwrap().unwrap();
        }
        let before = loaded_map(&first, 0).await;
        shutdown.cancel();
        tokio::time::timeout(TEST_WAIT, task)
            .await
            .unwrap()
            .unwrap();
        assert!(!first.is_coordinator(0), "resigned at shutdown");
        off_runtime(move || manager.close()).await;

        let manager = open_manager(dir.path());
        reconcile(&manager, &image, true).await;
        let second = runtime(1);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            second
                .clone()
                .run(watched, manager.clone(), shutdown.clone()),
        );
        assert_eq!(loaded_map(&second, 0).await, before);
        shutdown.cancel();
        tokio::time::timeout(TEST_WAIT, task)
            .await
            .unwrap()
            .unwrap();
    }

    /// Copies what broker 2's replica of `leader`'s partition lacks, as its replica fetcher
    /// would, and reports broker 2's new position to the leader.
    async fn replicate(leader: &Arc<Partition>, follower: &Arc<Partition>, leader_epoch: i32) {
        let (leader, follower) = (leader.clone(), follower.clone());
        off_runtime(move || replicate_blocking(&leader, &follower, leader_epoch)).await;
    }

    fn replicate_blocking(leader: &Arc<Partition>, follower: &Partition, leader_epoch: i32) {
        let from = follower.log_end_offset();
        let read = leader.read(from, 1 << 20, ReadBound::LogEnd);
        assert!(read.error.is_none(), "{:?}", read.error);
        follower
            .append_as_follower(read.records, leader_epoch, read.high_watermark, 0)
            .unwrap();
        leader
            .on_follower_fetch(
                FollowerFetch::at(2, leader_epoch),
                follower.log_end_offset(),
            )
            .unwrap();
    }

    #[tokio::test]
    async fn a_new_leader_replays_what_the_killed_one_committed_and_nothing_else() {
        let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut images = Images::with_brokers(&[1, 2]);
        let topic_id = images.create_topic(TOPIC, vec![vec![1, 2]]);
        let epoch = images.leader_epoch(&topic_id, 0);
        let broker1 = open_manager(dir1.path());
        let broker2 = Arc::new(
            PartitionManager::open(&crate::config::BrokerConfig {
                node_id: 2,
                data_dir: dir2.path().to_owned(),
                ..crate::config::BrokerConfig::default()
            })
            .unwrap(),
        );
        reconcile(&broker1, &images.image, true).await;
        reconcile(&broker2, &images.image, true).await;
        let (leader, follower) = (
            broker1.get(&topic_id, 0).unwrap(),
            broker2.get(&topic_id, 0).unwrap(),
        );
        let (publish1, watched1) = watch::channel(Arc::new(images.image.clone()));
        let first = runtime(1);
        let shutdown1 = CancellationToken::new();
        let task1 = tokio::spawn(
            first
                .clone()
                .run(watched1, broker1.clone(), shutdown1.clone()),
        );
        assert!(loaded_map(&first, 0).await.is_empty());

        for (n, (key, value)) in [("a", "1"), ("b", "2"), ("a", "3")].into_iter().enumerate() {
            let write = tokio::spawn({
                let first = first.clone();
                async move { first.write(0, put(key, value)).await }
            });
            appended(&leader, n as i64 + 1).await;
            replicate(&leader, &follower, epoch).await;
            let answer = tokio::time::timeout(TEST_WAIT, write).await.unwrap();
            answer.unwrap().unwrap();
        }
        let committed = loaded_map(&first, 0).await;
        // Appended on the leader only: never committed, so never answered.
        let lost = tokio::spawn({
            let first = first.clone();
            async move { first.write(0, put("c", "4")).await }
        });
        appended(&leader, 4).await;

        // The leader dies: the controller fences it and broker 2, the only other ISR member,
        // takes over at a new epoch.
        images.fence(1);
        publish1.send_replace(Arc::new(images.image.clone()));
        reconcile(&broker1, &images.image, false).await;
        let answer = tokio::time::timeout(TEST_WAIT, lost).await.unwrap();
        assert!(
            matches!(
                answer.unwrap(),
                Err(CoordinatorError::NotCoordinator { .. })
            ),
            "a write the dead leader never committed is not acknowledged"
        );
        shutdown1.cancel();
        tokio::time::timeout(TEST_WAIT, task1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            images.image.partition(&topic_id, 0).unwrap().leader,
            Some(2)
        );
        reconcile(&broker2, &images.image, true).await;
        let (_publish2, watched2) = watch::channel(Arc::new(images.image.clone()));
        let second = CoordinatorRuntime::new(
            2,
            InternalTopic::compacted(TOPIC, 1, 1, FewerBrokers::Cap),
            RuntimeConfig {
                write_timeout: TEST_WAIT,
                ..RuntimeConfig::default()
            },
            |_, _| KvMachine::default(),
        );
        let shutdown2 = CancellationToken::new();
        let task2 = tokio::spawn(
            second
                .clone()
                .run(watched2, broker2.clone(), shutdown2.clone()),
        );
        assert_eq!(
            loaded_map(&second, 0).await,
            committed,
            "the new coordinator replays exactly what was committed"
        );
        let previous = tokio::time::timeout(TEST_WAIT, second.write(0, put("b", "5")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(previous.as_deref(), Some("2"), "it serves on from there");
        shutdown2.cancel();
        tokio::time::timeout(TEST_WAIT, task2)
            .await
            .unwrap()
            .unwrap();
    }
}
