//! The group coordinator service the Kafka handlers call: it owns the coordinator runtime of
//! `__consumer_offsets`, routes a group to its partition (`abs(hash(group)) % partitions`),
//! waits for the answers of rebalances, and removes the offsets of deleted topics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use streambus_raft::command::{BrokerId, TopicId};
use streambus_raft::MetadataImage;
use streambus_storage::SystemClock;
use tokio::task::JoinHandle;

use super::classic::{GroupRules, JoinRequest, JoinResponse, Reply, SyncRequest, SyncResponse};
use super::consumer::{ConsumerHeartbeat, ConsumerHeartbeatResponse, ConsumerRules, TopicsView};
use super::consumer_ops::ConsumerDescribed;
use super::machine::{CommitRequest, DescribedGroup, GroupMachine, ListedGroup, PartitionOutcomes};
use super::offsets::{Committed, TopicPartition};
use super::{GroupProblem, OFFSETS_TOPIC};
use crate::config::GroupsConfig;
use crate::context::BrokerContext;
use crate::coordinator::topic::FewerBrokers;
use crate::coordinator::{CoordinatorError, CoordinatorRuntime, InternalTopic, RuntimeConfig};

/// How much longer than the rebalance timeout a JoinGroup may wait for its answer. The join
/// timer answers it by then; this only bounds the wait should that ever fail.
const JOIN_WAIT_SLACK: Duration = Duration::from_secs(30);

/// How long a SyncGroup may wait for the leader's assignment. The sync timer (the rebalance
/// timeout) answers it first; this only bounds the wait.
const SYNC_WAIT_MAX: Duration = Duration::from_secs(30 * 60);

/// How often the group gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(15);

/// The group coordinator of this broker.
#[derive(Debug)]
pub struct GroupCoordinator {
    runtime: Arc<CoordinatorRuntime<GroupMachine>>,
    /// The topics of the latest image as consumer groups see them, with the image's offset.
    topics: std::sync::Mutex<(Option<u64>, Arc<TopicsView>)>,
    /// `groups.consumer_lag_max_series`.
    lag_max_series: usize,
}

impl GroupCoordinator {
    /// The coordinator of broker `broker_id`. A `dev` broker creates `__consumer_offsets` with
    /// as many replicas as there are live brokers when fewer than configured are up.
    pub fn new(broker_id: BrokerId, config: &GroupsConfig, dev: bool) -> Arc<GroupCoordinator> {
        let mut topic = InternalTopic::compacted(
            OFFSETS_TOPIC,
            config.offsets_topic_num_partitions,
            config.offsets_topic_replication_factor,
            if dev {
                FewerBrokers::Cap
            } else {
                FewerBrokers::Refuse
            },
        );
        topic.configs.insert(
            "segment.bytes".to_owned(),
            config.offsets_topic_segment_bytes.to_string(),
        );
        // As Kafka creates it: the coordinator writes uncompressed batches and they stay so.
        topic
            .configs
            .insert("compression.type".to_owned(), "producer".to_owned());
        let rules = GroupRules::from_config(config);
        let consumer_rules = ConsumerRules {
            session_timeout_ms: i32::try_from(config.consumer_session_timeout_ms)
                .unwrap_or(i32::MAX),
            heartbeat_interval_ms: i32::try_from(config.consumer_heartbeat_interval_ms)
                .unwrap_or(i32::MAX),
            max_size: config.consumer_max_size as usize,
            migration: config.consumer_migration_policy,
        };
        let runtime_config = RuntimeConfig {
            write_timeout: Duration::from_millis(config.offsets_commit_timeout_ms),
            clock: Arc::new(SystemClock),
        };
        let runtime = CoordinatorRuntime::new(broker_id, topic, runtime_config, move |_, _| {
            GroupMachine::new(rules.clone(), consumer_rules.clone())
        });
        Arc::new(GroupCoordinator {
            runtime,
            topics: std::sync::Mutex::new((None, Arc::new(TopicsView::new()))),
            lag_max_series: config.consumer_lag_max_series,
        })
    }

    /// Starts following leadership of `__consumer_offsets`, and the removal of deleted topics'
    /// offsets; both end when the broker shuts down.
    pub fn spawn(self: &Arc<Self>, ctx: &Arc<BrokerContext>) -> Vec<JoinHandle<()>> {
        super::metrics::describe();
        let runtime = self.runtime.spawn(ctx);
        let cleaner = tokio::spawn(self.clone().remove_deleted_topics(ctx.clone()));
        let gauges = tokio::spawn(self.clone().publish_gauges(ctx.clone()));
        vec![runtime, cleaner, gauges]
    }

    /// Sums the groups by state over the partitions this broker coordinates, and the lag of
    /// their committed offsets, every [`GAUGE_INTERVAL`], for the gauges.
    async fn publish_gauges(self: Arc<Self>, ctx: Arc<BrokerContext>) {
        let shutdown = ctx.shutdown.clone();
        let mut tick = tokio::time::interval(GAUGE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One pass per tick; ends at shutdown.
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let mut counts = BTreeMap::new();
            let mut offsets = 0;
            for partition in self.runtime.coordinated() {
                if let Ok((partial, held)) =
                    self.runtime.read(partition, GroupMachine::counts).await
                {
                    for (key, count) in partial {
                        *counts.entry(key).or_default() += count;
                    }
                    offsets += held;
                }
            }
            super::metrics::publish(&counts, offsets);
            if self.lag_max_series > 0 {
                self.publish_lag(&ctx).await;
            }
        }
    }

    /// The lag of up to `lag_max_series` committed offsets of the groups coordinated here.
    async fn publish_lag(&self, ctx: &BrokerContext) {
        let mut samples = Vec::new();
        let mut dropped = 0;
        for partition in self.runtime.coordinated() {
            let room = self.lag_max_series - samples.len();
            let read = self
                .runtime
                .read(partition, move |machine| machine.committed_sample(room))
                .await;
            if let Ok((mut partial, left_out)) = read {
                samples.append(&mut partial);
                dropped += left_out;
            }
        }
        let partitions = samples
            .iter()
            .map(|(_, topic, partition, _)| (topic.clone(), *partition))
            .collect();
        let high_watermarks = super::lag::high_watermarks(ctx, &partitions).await;
        super::metrics::publish_lag(&samples, &high_watermarks, dropped);
    }

    /// The partition of `__consumer_offsets` that coordinates `group_id`.
    pub fn partition_for(&self, group_id: &str) -> u32 {
        self.runtime.partition_for(group_id)
    }

    /// The broker that coordinates `group_id`, creating `__consumer_offsets` on first use.
    pub async fn find(
        &self,
        ctx: &BrokerContext,
        group_id: &str,
    ) -> Result<BrokerId, CoordinatorError> {
        self.runtime.find(ctx, group_id).await
    }

    // ---------------------------------------------------------------- membership

    pub async fn join(
        &self,
        ctx: &BrokerContext,
        group_id: &str,
        request: JoinRequest,
    ) -> Result<JoinResponse, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let bound = Duration::from_millis(u64::try_from(request.rebalance_timeout_ms).unwrap_or(0))
            + JOIN_WAIT_SLACK;
        let group = group_id.to_owned();
        tracing::debug!(group = group_id, member = %request.member_id, "join");
        let topics = self.topics_view(ctx);
        let reply = self
            .runtime
            .write(partition, move |machine, ctx| {
                machine.join(&group, request, &topics, ctx)
            })
            .await?;
        let answer = self.settle(partition, reply, bound).await;
        tracing::debug!(group = group_id, ?answer, "join answer");
        answer
    }

    pub async fn sync(
        &self,
        ctx: &BrokerContext,
        group_id: &str,
        request: SyncRequest,
    ) -> Result<SyncResponse, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let group = group_id.to_owned();
        tracing::debug!(group = group_id, member = %request.member_id, generation = request.generation_id, "sync");
        let topics = self.topics_view(ctx);
        let reply = self
            .runtime
            .write(partition, move |machine, ctx| {
                machine.sync(&group, request, &topics, ctx)
            })
            .await?;
        let answer = self.settle(partition, reply, SYNC_WAIT_MAX).await;
        tracing::debug!(group = group_id, ?answer, "sync answer");
        answer
    }

    pub async fn heartbeat(
        &self,
        group_id: &str,
        member_id: String,
        group_instance_id: Option<String>,
        generation_id: i32,
    ) -> Result<Result<(), GroupProblem>, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let group = group_id.to_owned();
        tracing::debug!(group = group_id, member = %member_id, generation = generation_id, "heartbeat");
        self.runtime
            .write(partition, move |machine, ctx| {
                machine.heartbeat(
                    &group,
                    &member_id,
                    group_instance_id.as_deref(),
                    generation_id,
                    ctx,
                )
            })
            .await
    }

    pub async fn leave(
        &self,
        ctx: &BrokerContext,
        group_id: &str,
        members: Vec<(String, Option<String>)>,
    ) -> Result<Result<Vec<Result<(), GroupProblem>>, GroupProblem>, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let group = group_id.to_owned();
        let topics = self.topics_view(ctx);
        self.runtime
            .write(partition, move |machine, ctx| {
                machine.leave(&group, members, &topics, ctx)
            })
            .await
    }

    /// An answer now, or the one a rebalance gives within `bound`; a closed channel means the
    /// shard stopped (leadership moved), which clients handle as NOT_COORDINATOR.
    async fn settle<T>(
        &self,
        partition: u32,
        reply: Reply<T>,
        bound: Duration,
    ) -> Result<T, CoordinatorError> {
        match reply {
            Reply::Now(answer) => Ok(answer),
            Reply::Later(waiting) => match tokio::time::timeout(bound, waiting).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(CoordinatorError::NotCoordinator {
                    topic: OFFSETS_TOPIC.to_owned(),
                    partition,
                }),
                Err(_) => Err(CoordinatorError::Timeout {
                    timeout_ms: bound.as_millis() as u64,
                }),
            },
        }
    }

    // ---------------------------------------------------------------- KIP-848

    /// The image's topics by name (id, partition count), rebuilt once per image.
    fn topics_view(&self, ctx: &BrokerContext) -> Arc<TopicsView> {
        let image = ctx.image();
        let mut cached = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if cached.0 != Some(image.metadata_offset()) {
            let view: TopicsView = image
                .topics()
                .filter(|t| !crate::coordinator::topic::is_internal(&t.name))
                .map(|t| {
                    let count = u32::try_from(t.partitions.len()).unwrap_or(u32::MAX);
                    (
                        t.name.clone(),
                        (crate::kafka::wire::to_uuid(&t.topic_id), count),
                    )
                })
                .collect();
            *cached = (Some(image.metadata_offset()), Arc::new(view));
        }
        cached.1.clone()
    }

    pub async fn consumer_heartbeat(
        &self,
        ctx: &BrokerContext,
        group_id: &str,
        request: ConsumerHeartbeat,
    ) -> Result<ConsumerHeartbeatResponse, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let group = group_id.to_owned();
        let topics = self.topics_view(ctx);
        self.runtime
            .write(partition, move |machine, op| {
                machine.consumer_heartbeat(&group, request, &topics, op)
            })
            .await
    }

    pub async fn consumer_describe(
        &self,
        ctx: &BrokerContext,
        group_id: &str,
    ) -> Result<Result<ConsumerDescribed, GroupProblem>, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let group = group_id.to_owned();
        let topics = self.topics_view(ctx);
        self.runtime
            .read(partition, move |machine| {
                machine.consumer_describe(&group, &topics)
            })
            .await
    }

    // ---------------------------------------------------------------- offsets

    pub async fn commit(
        &self,
        group_id: &str,
        request: CommitRequest,
    ) -> Result<Result<PartitionOutcomes, GroupProblem>, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let group = group_id.to_owned();
        self.runtime
            .write(partition, move |machine, ctx| {
                machine.commit(&group, request, ctx)
            })
            .await
    }

    /// The committed offsets of `group_id` (`wanted`, or all), each with whether a
    /// transaction that commits an offset for it is still open (OffsetFetch's
    /// `require_stable` answers those UNSTABLE_OFFSET_COMMIT).
    pub async fn fetch(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, i32, Option<Committed>, bool)>, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let group = group_id.to_owned();
        self.runtime
            .read(partition, move |machine| {
                machine
                    .fetch(&group, wanted)
                    .into_iter()
                    .map(|(topic, partition, committed)| {
                        let pending = machine.pending_txn.is_pending(&group, &topic, partition);
                        (topic, partition, committed, pending)
                    })
                    .collect()
            })
            .await
    }

    /// TxnOffsetCommit: offsets committed in the producer's transaction.
    pub async fn txn_commit(
        &self,
        group_id: &str,
        request: super::txn_offsets::TxnCommitRequest,
    ) -> Result<Result<PartitionOutcomes, GroupProblem>, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let group = group_id.to_owned();
        self.runtime
            .write(partition, move |machine, ctx| {
                machine.txn_commit(&group, request, ctx)
            })
            .await
    }

    /// Writes a transaction marker to partition `partition` of `__consumer_offsets` through
    /// its coordinator (WriteTxnMarkers): the producer's pending offsets there take effect or
    /// are dropped.
    pub async fn complete_transaction(
        &self,
        partition: u32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<(), CoordinatorError> {
        self.runtime
            .write(partition, move |machine, _| {
                machine.complete_transaction(producer_id, producer_epoch, commit, coordinator_epoch)
            })
            .await
    }

    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<Result<PartitionOutcomes, GroupProblem>, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let group = group_id.to_owned();
        self.runtime
            .write(partition, move |machine, _| {
                machine.delete_offsets(&group, partitions)
            })
            .await
    }

    /// DeleteGroups: the outcome of each group, in request order.
    pub async fn delete_groups(
        &self,
        group_ids: Vec<String>,
    ) -> Vec<(String, Result<Option<GroupProblem>, CoordinatorError>)> {
        // One write per partition, for the groups it coordinates.
        let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for group_id in &group_ids {
            by_partition
                .entry(self.partition_for(group_id))
                .or_default()
                .push(group_id.clone());
        }
        let mut outcomes: BTreeMap<String, Result<Option<GroupProblem>, CoordinatorError>> =
            BTreeMap::new();
        for (partition, ids) in by_partition {
            let asked = ids.clone();
            let written = self
                .runtime
                .write(partition, move |machine, ctx| {
                    machine.delete_groups(ids, ctx)
                })
                .await;
            match written {
                Ok(results) => outcomes.extend(results.into_iter().map(|(id, p)| (id, Ok(p)))),
                Err(error) => outcomes.extend(asked.into_iter().map(|id| (id, Err(error.clone())))),
            }
        }
        group_ids
            .into_iter()
            .map(|id| {
                let outcome = outcomes
                    .remove(&id)
                    .unwrap_or(Ok(Some(GroupProblem::GroupIdNotFound)));
                (id, outcome)
            })
            .collect()
    }

    // ---------------------------------------------------------------- reads

    pub async fn describe(&self, group_id: &str) -> Result<DescribedGroup, CoordinatorError> {
        let partition = self.partition_for(group_id);
        let group = group_id.to_owned();
        self.runtime
            .read(partition, move |machine| machine.describe(&group))
            .await
    }

    /// Every group of the partitions this broker coordinates. A partition still loading fails
    /// the whole list with `LoadInProgress`, as Kafka answers.
    pub async fn list(&self) -> Result<Vec<ListedGroup>, CoordinatorError> {
        let mut listed = Vec::new();
        for partition in self.runtime.coordinated() {
            match self.runtime.read(partition, GroupMachine::list).await {
                Ok(groups) => listed.extend(groups),
                // Resigned since: its groups are another broker's to list.
                Err(CoordinatorError::NotCoordinator { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(listed)
    }

    // ---------------------------------------------------------------- deleted topics

    /// Follows the metadata image; when topics are deleted (a name gone, or now with another
    /// id), removes every group's offsets of them on the partitions this broker coordinates.
    /// Only deletions seen here count: a topic missing from a lagging image is not "deleted".
    async fn remove_deleted_topics(self: Arc<Self>, ctx: Arc<BrokerContext>) {
        let mut images = ctx.node.subscribe();
        let mut known = topic_ids(&images.borrow_and_update());
        // Each pass handles one new image; ends at shutdown.
        loop {
            tokio::select! {
                changed = images.changed() => if changed.is_err() { return },
                () = ctx.shutdown.cancelled() => return,
            }
            let now = topic_ids(&images.borrow_and_update());
            let deleted: BTreeSet<String> = known
                .iter()
                .filter(|(name, id)| now.get(*name) != Some(*id))
                .map(|(name, _)| name.clone())
                .collect();
            known = now;
            if deleted.is_empty() {
                continue;
            }
            for partition in self.runtime.coordinated() {
                let topics = deleted.clone();
                let removed = self
                    .runtime
                    .write(partition, move |machine, _| machine.remove_topics(&topics))
                    .await;
                match removed {
                    Ok(0) => {}
                    Ok(count) => {
                        tracing::info!(partition, count, topics = ?deleted, "removed offsets of deleted topics")
                    }
                    Err(error) => {
                        tracing::warn!(partition, %error, topics = ?deleted, "cannot remove offsets of deleted topics")
                    }
                }
            }
        }
    }
}

/// The member id a member without one gets: its client id (its instance id if static), a dash
/// and a UUID, as Kafka makes them.
pub fn new_member_id(client_id: &str, group_instance_id: Option<&str>) -> String {
    let prefix = group_instance_id.unwrap_or(client_id);
    // The id must fit Kafka's string limit with its 37-byte suffix.
    let mut end = prefix.len().min(super::STRING_MAX_BYTES - 37);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{}", &prefix[..end], uuid::Uuid::new_v4())
}

fn topic_ids(image: &MetadataImage) -> BTreeMap<String, TopicId> {
    image
        .topics()
        .map(|topic| (topic.name.clone(), topic.topic_id))
        .collect()
}
