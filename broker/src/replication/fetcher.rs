//! Replica fetchers: one task per leader broker, multiplexing every partition this broker
//! follows on that leader over one connection. A partition that just became a follower (a new
//! leader or leader epoch) first truncates its log by leader epochs (KIP-101/279:
//! OffsetForLeaderEpoch against the leader, never by high watermark alone when epochs are
//! known), then fetches from its log end with the Fetch API and its replica id, appending with
//! the leader's offsets and epochs and taking the leader's high watermark. Where epochs cannot
//! locate the divergence it falls back to the high watermark, which after a restart is the
//! checkpointed one (`Partition::fallback_truncation_offset`). Every fetch carries this
//! cluster's id (Fetch v12+ `ClusterId`), so the leader of another cluster that answers at a
//! stale address refuses it rather than serving its data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId as WireBrokerId, FetchRequest, OffsetForLeaderEpochRequest,
};
use kafka_protocol::protocol::StrBytes;
use streambus_raft::command::{BrokerId, TopicId};
use streambus_raft::controller::host_port;
use streambus_raft::{ClusterId, MetadataImage, RegistrationState};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ReplicationConfig;
use crate::endpoints::live_kafka_endpoint;
use crate::inter_broker::{PeerConnection, PeerError};
use crate::kafka::wire::{to_uuid, topic_name};
use crate::partition::manager::Followed;
use crate::partition::{Partition, PartitionError};

/// Fetch v15: topic ids (v13+: a recreated topic of the same name is never confused with the
/// old one) and the replica state with the follower's broker epoch (KIP-903).
const FETCH_VERSION: i16 = 15;
/// OffsetForLeaderEpoch v4: carries the replica id and the follower's current leader epoch.
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Rounds of OffsetForLeaderEpoch for one truncation: each round lowers the follower's latest
/// epoch, so this bounds the epochs walked back through before falling back to the high
/// watermark.
const TRUNCATION_ROUNDS_MAX: usize = 16;
/// Kafka's "no epoch" in OffsetForLeaderEpoch answers.
const UNDEFINED: i64 = -1;

/// A fetch response may carry one batch of up to `max.message.bytes` (a topic setting, and the
/// leader's recompression can make a batch larger than the request that brought it); peers are
/// brokers of this cluster, so their frames are bounded only by Kafka's own frame size.
const MAX_PEER_FRAME_BYTES: usize = i32::MAX as usize;

type Key = (TopicId, u32);

/// A partition this broker follows, as one fetcher sees it.
#[derive(Debug, Clone)]
struct Follow {
    partition: Arc<Partition>,
    leader_epoch: i32,
    /// Truncate by leader epochs before the next fetch.
    truncate: bool,
    /// Skipped until then after an error (the leader moved, or its metadata lags ours), or
    /// while the reassignment throttle holds it back.
    retry_at: Option<Instant>,
    /// A reassignment is adding this replica: fetches stay within the throttle.
    throttled: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// The leader's Kafka listener, from the metadata image.
    address: Option<String>,
    partitions: HashMap<Key, Follow>,
}

#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<Inner>,
    /// Woken when the partition set or the address changes.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a follow that is still current (same partition object, same epoch).
    fn update(&self, key: &Key, follow: &Follow, apply: impl FnOnce(&mut Follow)) {
        let mut inner = self.lock();
        if let Some(current) = inner.partitions.get_mut(key) {
            if current.leader_epoch == follow.leader_epoch
                && Arc::ptr_eq(&current.partition, &follow.partition)
            {
                apply(current);
            }
        }
    }

    fn delay(&self, key: &Key, follow: &Follow, backoff: Duration) {
        self.update(key, follow, |f| f.retry_at = Some(Instant::now() + backoff));
    }
}

/// One partition's part of a fetch response.
struct Fetched {
    key: Key,
    follow: Follow,
    records: Bytes,
    high_watermark: i64,
    log_start_offset: i64,
}

/// The fetcher of one leader broker.
#[derive(Debug)]
struct Fetcher {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Every replica fetcher of this broker.
#[derive(Debug)]
pub struct ReplicaFetchers {
    broker_id: BrokerId,
    /// This broker's registration: its fetches name the broker epoch (KIP-903).
    registration: watch::Receiver<RegistrationState>,
    /// Sent with every fetch; built once, cloned cheaply.
    cluster_id: StrBytes,
    config: ReplicationConfig,
    max_response_bytes: usize,
    fetchers: Mutex<HashMap<BrokerId, Fetcher>>,
    shutdown: CancellationToken,
}

impl ReplicaFetchers {
    pub fn new(
        broker_id: BrokerId,
        registration: watch::Receiver<RegistrationState>,
        cluster_id: ClusterId,
        config: ReplicationConfig,
        shutdown: CancellationToken,
    ) -> ReplicaFetchers {
        ReplicaFetchers {
            broker_id,
            registration,
            cluster_id: StrBytes::from_string(cluster_id.to_string()),
            max_response_bytes: MAX_PEER_FRAME_BYTES,
            config,
            fetchers: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<BrokerId, Fetcher>> {
        self.fetchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Points the fetchers at the `followed` partitions: starts fetchers for
    /// new leaders, stops those with nothing left to fetch, and restarts a partition (with
    /// truncation) whose leader or epoch changed.
    pub fn update(&self, image: &MetadataImage, followed: Vec<Followed>) {
        let mut by_leader: HashMap<BrokerId, Vec<Followed>> = HashMap::new();
        for follow in followed {
            by_leader.entry(follow.leader).or_default().push(follow);
        }
        let mut fetchers = self.lock();
        fetchers.retain(|leader, fetcher| {
            let keep = by_leader.contains_key(leader);
            if !keep {
                fetcher.stop.cancel();
            }
            keep
        });
        for (leader, partitions) in by_leader {
            let address = live_kafka_endpoint(image, leader).map(|e| host_port(&e.host, e.port));
            let fetcher = fetchers.entry(leader).or_insert_with(|| self.spawn(leader));
            let mut inner = fetcher.shared.lock();
            let mut changed =
                inner.address != address || inner.partitions.len() != partitions.len();
            inner.address = address;
            let mut next = HashMap::with_capacity(partitions.len());
            for followed in partitions {
                let Followed {
                    partition,
                    leader_epoch,
                    throttled,
                    ..
                } = followed;
                let key = (partition.topic_id, partition.index);
                let follow = match inner.partitions.remove(&key) {
                    Some(current)
                        if current.leader_epoch == leader_epoch
                            && Arc::ptr_eq(&current.partition, &partition) =>
                    {
                        Follow {
                            throttled,
                            ..current
                        }
                    }
                    _ => {
                        changed = true;
                        Follow {
                            partition,
                            leader_epoch,
                            truncate: true,
                            retry_at: None,
                            throttled,
                        }
                    }
                };
                next.insert(key, follow);
            }
            inner.partitions = next;
            drop(inner);
            if changed {
                fetcher.shared.changed.notify_one();
            }
        }
    }

    fn spawn(&self, leader: BrokerId) -> Fetcher {
        let shared = Arc::new(Shared::default());
        let stop = self.shutdown.child_token();
        let task = tokio::spawn(
            FetcherTask {
                broker_id: self.broker_id,
                registration: self.registration.clone(),
                cluster_id: self.cluster_id.clone(),
                leader,
                config: self.config.clone(),
                max_response_bytes: self.max_response_bytes,
                shared: shared.clone(),
                stop: stop.clone(),
                connection: None,
                refusal_logged_at: None,
            }
            .run(),
        );
        Fetcher { shared, stop, task }
    }

    /// Stops every fetcher and waits for them, so no fetcher holds a partition afterwards.
    pub async fn stop(&self) {
        let fetchers: Vec<Fetcher> = self.lock().drain().map(|(_, f)| f).collect();
        for fetcher in &fetchers {
            fetcher.stop.cancel();
        }
        for fetcher in fetchers {
            let _ = fetcher.task.await;
        }
    }
}

/// The loop of one fetcher.
struct FetcherTask {
    broker_id: BrokerId,
    registration: watch::Receiver<RegistrationState>,
    cluster_id: StrBytes,
    leader: BrokerId,
    config: ReplicationConfig,
    /// Bound on one fetch response frame.
    max_response_bytes: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
    connection: Option<PeerConnection>,
    /// When a refusal of the whole fetch was last logged: the fetch is retried every backoff.
    refusal_logged_at: Option<Instant>,
}

/// A refused fetch is logged again after this long at the earliest.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl FetcherTask {
    async fn run(mut self) {
        // Each pass does one round trip or waits; the stop token ends the loop.
        while !self.stop.is_cancelled() {
            if let Err(error) = self.pass().await {
                if let PeerError::InconsistentClusterId { .. } = &error {
                    // Worth an operator's attention: the leader's address leads elsewhere.
                    self.log_refusal(&address_of(&self.shared), &error);
                }
                tracing::debug!(leader = self.leader, %error, "replica fetch failed, reconnecting");
                self.connection = None;
                self.sleep(self.config.fetch_backoff()).await;
            }
        }
    }

    async fn sleep(&self, duration: Duration) {
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = self.stop.cancelled() => {}
            () = self.shared.changed.notified() => {}
        }
    }

    /// The partitions due now, and the leader's address.
    fn due(&self) -> (Option<String>, Vec<(Key, Follow)>, Option<Instant>) {
        let inner = self.shared.lock();
        let now = Instant::now();
        let mut next_retry: Option<Instant> = None;
        let due = inner
            .partitions
            .iter()
            .filter(|(_, f)| match f.retry_at {
                Some(at) if at > now => {
                    next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
                    false
                }
                _ => true,
            })
            .map(|(k, f)| (*k, f.clone()))
            .collect();
        (inner.address.clone(), due, next_retry)
    }

    async fn pass(&mut self) -> Result<(), PeerError> {
        let (address, due, next_retry) = self.due();
        let Some(address) = address.filter(|_| !due.is_empty()) else {
            let wait = next_retry.map_or(self.config.fetch_backoff(), |at| {
                at.saturating_duration_since(Instant::now())
            });
            self.sleep(wait.max(Duration::from_millis(10))).await;
            return Ok(());
        };
        if self.connection.is_none() {
            let cluster_id = self.cluster_id.clone();
            let connect = PeerConnection::connect(
                &address,
                &cluster_id,
                format!("streambus-replica-{}", self.broker_id),
                self.max_response_bytes,
                self.config.socket_timeout(),
            );
            let stop = self.stop.clone();
            let connection = tokio::select! {
                c = connect => c?,
                () = stop.cancelled() => return Ok(()),
            };
            self.connection = Some(connection);
        }
        let (truncating, fetching): (Vec<_>, Vec<_>) =
            due.into_iter().partition(|(_, f)| f.truncate);
        if !truncating.is_empty() {
            return self.truncate(truncating).await;
        }
        self.fetch(fetching).await
    }

    fn connection(&mut self) -> Result<&mut PeerConnection, PeerError> {
        self.connection.as_mut().ok_or(PeerError::Closed)
    }

    /// Cuts each partition's divergent tail (KIP-101/279), in rounds of OffsetForLeaderEpoch.
    async fn truncate(&mut self, follows: Vec<(Key, Follow)>) -> Result<(), PeerError> {
        let mut pending = follows;
        for _ in 0..TRUNCATION_ROUNDS_MAX {
            if pending.is_empty() {
                return Ok(());
            }
            let mut asked = Vec::new();
            let mut by_topic: HashMap<String, Vec<OffsetForLeaderPartition>> = HashMap::new();
            for (key, follow) in pending.drain(..) {
                let log = follow.partition.log();
                match log.latest_epoch() {
                    Some(epoch) => {
                        by_topic
                            .entry(follow.partition.topic.clone())
                            .or_default()
                            .push(
                                OffsetForLeaderPartition::default()
                                    .with_partition(key.1 as i32)
                                    .with_current_leader_epoch(follow.leader_epoch)
                                    .with_leader_epoch(epoch),
                            );
                        asked.push((key, follow, epoch));
                    }
                    None => {
                        // No epochs: an empty log has nothing to cut; otherwise (a log written
                        // without epochs) the high watermark is the only safe point.
                        let target = follow.partition.fallback_truncation_offset();
                        self.apply_truncation(key, follow, target, true).await;
                    }
                }
            }
            if asked.is_empty() {
                return Ok(());
            }
            let request = OffsetForLeaderEpochRequest::default()
                .with_replica_id(WireBrokerId(self.broker_id))
                .with_topics(
                    by_topic
                        .into_iter()
                        .map(|(topic, partitions)| {
                            OffsetForLeaderTopic::default()
                                .with_topic(topic_name(topic))
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
            let timeout = self.config.socket_timeout();
            let stop = self.stop.clone();
            let response = tokio::select! {
                r = self.connection()?.call(&request, OFFSET_FOR_LEADER_EPOCH_VERSION, timeout) => r?,
                () = stop.cancelled() => return Ok(()),
            };
            let mut answers = HashMap::new();
            for topic in response.topics {
                for p in topic.partitions {
                    answers.insert((topic.topic.0.to_string(), p.partition), p);
                }
            }
            for (key, follow, requested) in asked {
                let Some(answer) = answers.remove(&(follow.partition.topic.clone(), key.1 as i32))
                else {
                    self.shared
                        .delay(&key, &follow, self.config.fetch_backoff());
                    continue;
                };
                if answer.error_code != 0 {
                    tracing::debug!(
                        topic = %follow.partition.topic,
                        index = key.1,
                        error = answer.error_code,
                        "OffsetForLeaderEpoch refused; retrying later"
                    );
                    self.shared
                        .delay(&key, &follow, self.config.fetch_backoff());
                    continue;
                }
                let log = follow.partition.log().clone();
                let log_end = log.log_end_offset();
                let (leader_epoch, leader_end) = (answer.leader_epoch, answer.end_offset);
                if i64::from(leader_epoch) == UNDEFINED || leader_end == UNDEFINED {
                    // The leader knows no epoch at or below ours: keep what is committed.
                    let target = follow.partition.fallback_truncation_offset();
                    self.apply_truncation(key, follow, target, true).await;
                } else if leader_epoch == requested {
                    self.apply_truncation(key, follow, leader_end.min(log_end), true)
                        .await;
                } else {
                    // The epoch cache is behind the log's lock: off the runtime worker.
                    let (own_epoch, own_end) = match crate::blocking::spawn(move || {
                        log.end_offset_for_epoch(leader_epoch)
                    })
                    .await
                    {
                        Ok(found) => found,
                        Err(_) => {
                            self.shared
                                .delay(&key, &follow, self.config.fetch_backoff());
                            continue;
                        }
                    };
                    if own_epoch == leader_epoch || i64::from(own_epoch) == UNDEFINED {
                        let own_end = if own_end < 0 { log_end } else { own_end };
                        let target = leader_end.min(own_end).min(log_end);
                        self.apply_truncation(key, follow, target, true).await;
                    } else {
                        // Our epochs skip the leader's: cut to the end of our epoch below it
                        // and ask again with that one.
                        let target = own_end.min(log_end);
                        if self
                            .apply_truncation(key, follow.clone(), target, false)
                            .await
                        {
                            pending.push((key, follow));
                        }
                    }
                }
            }
        }
        // Epochs kept diverging for every round: fall back to the committed offset.
        for (key, follow) in pending {
            let target = follow.partition.fallback_truncation_offset();
            self.apply_truncation(key, follow, target, true).await;
        }
        Ok(())
    }

    /// Truncates to `target`; with `done`, the partition may fetch next. Returns whether the
    /// truncation happened (false: the follow is stale or the log failed, retried later).
    async fn apply_truncation(&self, key: Key, follow: Follow, target: i64, done: bool) -> bool {
        let partition = follow.partition.clone();
        let epoch = follow.leader_epoch;
        // Called even when the target is at or past the log end: the storage then drops epochs
        // recorded at the end without data.
        let outcome =
            crate::blocking::spawn(move || partition.truncate_as_follower(target, epoch)).await;
        match outcome {
            Ok(Ok(end)) => {
                if done {
                    tracing::info!(
                        topic = %follow.partition.topic,
                        index = key.1,
                        leader = self.leader,
                        leader_epoch = epoch,
                        log_end_offset = end,
                        "follower log truncated by leader epoch, fetching"
                    );
                    self.shared.update(&key, &follow, |f| {
                        f.truncate = false;
                        f.retry_at = None;
                    });
                }
                true
            }
            Ok(Err(PartitionError::WrongRole(_))) => {
                // The role already changed; the reconciler brings the new follow shortly.
                self.shared
                    .delay(&key, &follow, self.config.fetch_backoff());
                false
            }
            Ok(Err(error)) => {
                tracing::error!(topic = %follow.partition.topic, index = key.1, %error, "follower truncation failed");
                self.shared
                    .delay(&key, &follow, self.config.fetch_backoff());
                false
            }
            Err(_) => {
                tracing::error!("follower truncation panicked");
                self.shared
                    .delay(&key, &follow, self.config.fetch_backoff());
                false
            }
        }
    }

    /// One Fetch round trip for `follows`, appending what came back.
    async fn fetch(&mut self, follows: Vec<(Key, Follow)>) -> Result<(), PeerError> {
        if follows.is_empty() {
            return Ok(());
        }
        let mut positions = HashMap::with_capacity(follows.len());
        let mut by_topic: HashMap<TopicId, Vec<FetchPartition>> = HashMap::new();
        let throttle = self.config.reassignment_max_bytes_per_sec;
        for (key, follow) in &follows {
            let log = follow.partition.log();
            let fetch_offset = log.log_end_offset();
            positions.insert(*key, fetch_offset);
            let mut max_bytes = self.config.fetch_partition_max_bytes;
            if follow.throttled && throttle > 0 {
                max_bytes = max_bytes.min(usize::try_from(throttle).unwrap_or(usize::MAX));
            }
            by_topic.entry(key.0).or_default().push(
                FetchPartition::default()
                    .with_partition(key.1 as i32)
                    .with_current_leader_epoch(follow.leader_epoch)
                    .with_fetch_offset(fetch_offset)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(log.log_start_offset())
                    .with_partition_max_bytes(i32::try_from(max_bytes).unwrap_or(i32::MAX)),
            );
        }
        // v15+ names the follower by its replica state, including its broker epoch: the
        // leader's ISR additions carry it, and the controller refuses an addition based on a
        // fetch of an earlier incarnation (KIP-903). Unregistered, the epoch is unknown (-1)
        // and no addition based on this fetch can pass.
        let broker_epoch = match *self.registration.borrow() {
            RegistrationState::Registered { broker_epoch, .. } => broker_epoch,
            RegistrationState::Unregistered => -1,
        };
        let request = FetchRequest::default()
            .with_cluster_id(Some(self.cluster_id.clone()))
            .with_replica_state(
                ReplicaState::default()
                    .with_replica_id(WireBrokerId(self.broker_id))
                    .with_replica_epoch(broker_epoch),
            )
            .with_max_wait_ms(i32::try_from(self.config.fetch_wait_max_ms).unwrap_or(i32::MAX))
            .with_min_bytes(1)
            .with_max_bytes(i32::try_from(self.config.fetch_max_bytes).unwrap_or(i32::MAX))
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(topic_id, partitions)| {
                        FetchTopic::default()
                            .with_topic_id(to_uuid(&topic_id))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let timeout =
            self.config.socket_timeout() + Duration::from_millis(self.config.fetch_wait_max_ms);
        let stop = self.stop.clone();
        let changed = self.shared.clone();
        let response = tokio::select! {
            r = self.connection()?.call(&request, FETCH_VERSION, timeout) => Some(r?),
            () = stop.cancelled() => return Ok(()),
            () = changed.changed.notified() => None,
        };
        let Some(response) = response else {
            // A new leader or epoch for some partition: drop this long poll (and the
            // connection, whose answer would now arrive unasked) and start over at once.
            self.connection = None;
            return Ok(());
        };
        if response.error_code != 0 {
            let error = ResponseError::try_from_code(response.error_code);
            self.log_refusal(
                &address_of(&self.shared),
                &format!("{error:?} (code {})", response.error_code),
            );
            for (key, follow) in &follows {
                self.shared.delay(key, follow, self.config.fetch_backoff());
            }
            return Ok(());
        }
        let follows: HashMap<Key, Follow> = follows.into_iter().collect();
        let mut appends = Vec::new();
        for topic in response.responses {
            let topic_id = crate::kafka::wire::from_uuid(&topic.topic_id);
            for data in topic.partitions {
                let Ok(index) = u32::try_from(data.partition_index) else {
                    continue;
                };
                let key = (topic_id, index);
                let Some(follow) = follows.get(&key) else {
                    continue;
                };
                let fetch_offset = positions.get(&key).copied().unwrap_or(0);
                if data.error_code == 0 {
                    appends.push(Fetched {
                        key,
                        follow: follow.clone(),
                        records: data.records.unwrap_or_default(),
                        high_watermark: data.high_watermark,
                        log_start_offset: data.log_start_offset,
                    });
                    continue;
                }
                match ResponseError::try_from_code(data.error_code) {
                    Some(ResponseError::OffsetOutOfRange)
                        if fetch_offset < data.log_start_offset =>
                    {
                        self.restart_at(key, follow.clone(), data.log_start_offset)
                            .await;
                    }
                    Some(ResponseError::OffsetOutOfRange) => {
                        // Past the leader's end: our tail diverged; truncate by epochs again.
                        self.shared.update(&key, follow, |f| f.truncate = true);
                    }
                    error => {
                        tracing::debug!(topic = %follow.partition.topic, index, ?error, code = data.error_code, "replica fetch refused; retrying later");
                        self.shared.delay(&key, follow, self.config.fetch_backoff());
                    }
                }
            }
        }
        self.append(appends).await;
        Ok(())
    }

    /// Logs, at most once per [`REFUSAL_LOG_INTERVAL`], a fetch the leader refused as a whole
    /// (another cluster at the leader's address, or a leader that does not know this broker).
    fn log_refusal(&mut self, address: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self
            .refusal_logged_at
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        self.refusal_logged_at = Some(now);
        tracing::warn!(
            leader = self.leader,
            %address,
            %error,
            "the leader refused this broker's replica fetch"
        );
    }

    /// Appends fetched records (blocking work on one thread for the whole response).
    async fn append(&self, appends: Vec<Fetched>) {
        if appends.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let backoff = self.config.fetch_backoff();
        let throttle = self.config.reassignment_max_bytes_per_sec;
        let outcome = crate::blocking::spawn(move || {
            for fetched in appends {
                let Fetched {
                    key,
                    follow,
                    records,
                    high_watermark,
                    log_start_offset,
                } = fetched;
                if follow.throttled && throttle > 0 && !records.is_empty() {
                    // The bytes just fetched buy this much time at the throttled rate.
                    let pause = Duration::from_secs_f64(records.len() as f64 / throttle as f64);
                    shared.update(&key, &follow, |f| f.retry_at = Some(Instant::now() + pause));
                }
                let outcome = follow.partition.append_as_follower(
                    records,
                    follow.leader_epoch,
                    high_watermark,
                    log_start_offset,
                );
                match outcome {
                    Ok(()) => {}
                    Err(PartitionError::WrongRole(_)) => {
                        shared.update(&key, &follow, |f| {
                            f.retry_at = Some(Instant::now() + backoff);
                        });
                    }
                    Err(error) => {
                        tracing::warn!(topic = %follow.partition.topic, index = key.1, %error, "follower append failed; truncating by epoch and retrying");
                        shared.update(&key, &follow, |f| {
                            f.truncate = true;
                            f.retry_at = Some(Instant::now() + backoff);
                        });
                    }
                }
            }
        })
        .await;
        if outcome.is_err() {
            tracing::error!("follower append panicked");
        }
    }

    /// The leader's log starts past ours: restart our log empty at its start.
    async fn restart_at(&self, key: Key, follow: Follow, offset: i64) {
        let partition = follow.partition.clone();
        let epoch = follow.leader_epoch;
        let outcome =
            crate::blocking::spawn(move || partition.restart_as_follower_at(offset, epoch)).await;
        match outcome {
            Ok(Ok(())) => {
                tracing::info!(topic = %follow.partition.topic, index = key.1, offset, "follower log restarted at the leader's log start");
            }
            Ok(Err(PartitionError::WrongRole(_))) => {
                self.shared
                    .delay(&key, &follow, self.config.fetch_backoff());
            }
            Ok(Err(error)) => {
                tracing::error!(topic = %follow.partition.topic, index = key.1, %error, "cannot restart the follower log");
                self.shared
                    .delay(&key, &follow, self.config.fetch_backoff());
            }
            Err(_) => tracing::error!("follower log restart panicked"),
        }
    }
}

/// The leader's address as the fetcher knows it, for messages.
fn address_of(shared: &Shared) -> String {
    shared.lock().address.clone().unwrap_or_default()
}
