//! [`GroupConsumer`]: a [`Consumer`] whose partitions come from group membership: it subscribes
//! to topics (or a pattern), joins the group in `poll`, runs the rebalance callbacks, starts each
//! partition at the group's committed offset, and commits positions (automatically, or with
//! `commit_sync`/`commit_async`), as the Java consumer does.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::task::{JoinHandle, JoinSet};

use crate::client::Client;
use crate::consumer::{Consumer, ConsumerConfig};
use crate::error::{Error, Result};
use crate::group::assignor::{Assignor, RebalanceProtocol};
use crate::group::coordinator::{is_coordinator_error, Coordinator};
use crate::group::kip848::{self, GroupProtocol, Signals};
use crate::group::listener::{NoopListener, RebalanceContext, RebalanceListener};
use crate::group::membership::{self, JoinSettings, Joined, Shared, NO_GENERATION};
use crate::group::offsets::{self, Committer, OffsetAndMetadata};
use crate::record::{ConsumerRecord, TopicPartition};
use kafka_protocol::ResponseError;

/// Joins in a row one `poll` completes at most: a cooperative rebalance takes two, and a
/// member that keeps being sent back (the group changing under it) returns to the caller.
const MAX_JOINS_PER_POLL: usize = 8;

/// Group consumer settings; names and defaults follow the Java client's.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`: a static member (KIP-345), which keeps its partitions through a
    /// restart within `session_timeout` and does not leave the group on close.
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`: without a heartbeat for this long the member is removed.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms`: the longest gap between polls before the member leaves; also
    /// the rebalance timeout it joins with.
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy`, in preference order. The cooperative protocol is used
    /// only when every one of them supports it (as in Java).
    pub assignors: Vec<Assignor>,
    /// `enable.auto.commit`: commit positions every `auto_commit_interval` in `poll`, before a
    /// rebalance revokes partitions, and on close.
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    /// `exclude.internal.topics`: a pattern never matches `__consumer_offsets` and friends.
    pub exclude_internal_topics: bool,
    /// `client.rack`, sent in the subscription.
    pub client_rack: Option<String>,
    /// `group.protocol`: [`GroupProtocol::Classic`] (the default) or
    /// [`GroupProtocol::Consumer`] (KIP-848: the coordinator assigns; `assignors`,
    /// `session_timeout` and `heartbeat_interval` are then the coordinator's business, the
    /// latter only until its first answer).
    pub group_protocol: GroupProtocol,
    /// `group.remote.assignor` of [`GroupProtocol::Consumer`]: the coordinator's assignor
    /// (`uniform` or `range` on StreamBus); `None`: the coordinator's default.
    pub server_assignor: Option<String>,
    /// Fetching, `auto_offset_reset` (for partitions without a committed offset) and the rest.
    pub consumer: ConsumerConfig,
}

impl GroupConfig {
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            assignors: vec![Assignor::Range, Assignor::CooperativeSticky],
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            exclude_internal_topics: true,
            client_rack: None,
            group_protocol: GroupProtocol::Classic,
            server_assignor: None,
            consumer: ConsumerConfig::default(),
        }
    }
}

/// What the consumer subscribes to.
#[derive(Debug, Clone)]
enum Subscribed {
    Topics(BTreeSet<String>),
    /// Matched against whole topic names, as Java's `Pattern.matcher(topic).matches()`.
    Pattern(Regex),
}

/// The result of `commit_async`: await it for the outcome, or drop it (the commit goes on).
#[derive(Debug)]
pub struct CommitHandle(JoinHandle<Result<()>>);

impl Future for CommitHandle {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| Err(Error::Protocol(format!("commit task: {e}"))))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callback {
    Revoked,
    Assigned,
    Lost,
}

/// A consumer in a consumer group (Kafka's classic protocol, or KIP-848's). Not `Clone`: one owner polls it.
pub struct GroupConsumer {
    consumer: Consumer,
    client: Client,
    config: GroupConfig,
    coordinator: Arc<Coordinator>,
    shared: Shared,
    subscription: Option<Subscribed>,
    listener: Box<dyn RebalanceListener>,
    heartbeat: Option<JoinHandle<()>>,
    join: Option<JoinHandle<Result<Joined>>>,
    /// The topics the last join subscribed to.
    joined_topics: Vec<String>,
    /// As leader: the partition counts of the group's topics at the last assignment.
    leader_of: Option<BTreeMap<String, i32>>,
    /// Assigned partitions still waiting for their committed offset.
    unpositioned: Vec<TopicPartition>,
    next_auto_commit: Instant,
    next_metadata_check: Instant,
    /// Auto commits in flight; their failures are logged.
    auto_commits: JoinSet<Result<()>>,
    /// KIP-848: wake-ups between `poll` and the heartbeat task.
    signals: Arc<Signals>,
    closed: bool,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("GroupConsumer")
            .field("group_id", &self.config.group_id)
            .field("member_id", &state.member_id)
            .field("generation", &state.generation)
            .field("subscription", &self.subscription)
            .field("assignment", &self.consumer.assignment())
            .finish_non_exhaustive()
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // Without `close` the member stays in the group until its session times out.
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        if let Some(task) = self.join.take() {
            task.abort();
        }
    }
}

impl GroupConsumer {
    pub fn new(client: Client, config: GroupConfig) -> Result<GroupConsumer> {
        if config.group_id.is_empty() {
            return Err(Error::InvalidArgument("group_id is empty".to_owned()));
        }
        if config.assignors.is_empty() {
            return Err(Error::InvalidArgument("no assignor configured".to_owned()));
        }
        if config.heartbeat_interval >= config.session_timeout {
            return Err(Error::InvalidArgument(
                "heartbeat_interval must be below session_timeout".to_owned(),
            ));
        }
        if config.group_instance_id.as_deref() == Some("") {
            return Err(Error::InvalidArgument(
                "group_instance_id is empty".to_owned(),
            ));
        }
        let now = Instant::now();
        let shared = Shared::default();
        if config.group_protocol == GroupProtocol::Consumer {
            // KIP-848 v1: the member names itself, once, and keeps the name through rejoins.
            shared.lock().member_id = uuid::Uuid::new_v4().to_string();
        }
        Ok(GroupConsumer {
            consumer: Consumer::new(client.clone(), config.consumer.clone()),
            coordinator: Coordinator::new(client.clone(), &config.group_id),
            client,
            config,
            shared,
            subscription: None,
            listener: Box::new(NoopListener),
            heartbeat: None,
            join: None,
            joined_topics: Vec::new(),
            leader_of: None,
            unpositioned: Vec::new(),
            next_auto_commit: now,
            next_metadata_check: now,
            auto_commits: JoinSet::new(),
            signals: Arc::new(Signals::default()),
            closed: false,
        })
    }

    /// Sets the rebalance callbacks.
    pub fn set_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Box::new(listener);
    }

    /// Subscribes to `topics`, replacing any earlier subscription; the group rebalances at the
    /// next `poll` if this changes what the member asked for.
    pub fn subscribe<I, S>(&mut self, topics: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let topics: BTreeSet<String> = topics.into_iter().map(Into::into).collect();
        self.subscription = Some(Subscribed::Topics(topics));
        self.resubscribed();
    }

    /// Subscribes to every topic whose whole name matches `pattern` (a `regex` crate regular
    /// expression), now and as topics are created or deleted (checked every
    /// `metadata_max_age` of the client).
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let regex = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| Error::InvalidArgument(format!("pattern {pattern:?}: {e}")))?;
        self.subscription = Some(Subscribed::Pattern(regex));
        self.resubscribed();
        Ok(())
    }

    fn resubscribed(&mut self) {
        if self.kip848() {
            // The next heartbeat carries the new subscription; send it now if one is running.
            self.signals.send_now.notify_one();
            self.next_metadata_check = Instant::now();
            return;
        }
        if self.shared.lock().generation != NO_GENERATION {
            self.shared.lock().rejoin = true;
        }
        self.next_metadata_check = Instant::now();
    }

    /// The topics the member joined with last.
    pub fn subscription(&self) -> Vec<String> {
        self.joined_topics.clone()
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer.assignment()
    }

    /// "" before the first join.
    pub fn member_id(&self) -> String {
        self.shared.lock().member_id.clone()
    }

    /// -1 outside a generation. With [`GroupProtocol::Consumer`]: the member epoch.
    pub fn generation(&self) -> i32 {
        self.shared.lock().generation
    }

    /// What a transactional producer needs to commit this member's offsets
    /// ([`crate::Producer::send_offsets_to_transaction`]): the coordinator fences a zombie
    /// member's commit by its generation.
    pub fn group_metadata(&self) -> crate::ConsumerGroupMetadata {
        let state = self.shared.lock();
        crate::ConsumerGroupMetadata {
            group_id: self.config.group_id.clone(),
            generation_id: state.generation,
            member_id: state.member_id.clone(),
            group_instance_id: self.config.group_instance_id.clone(),
        }
    }

    /// The assignor the group uses in the current generation (classic protocol only).
    pub fn protocol(&self) -> Option<Assignor> {
        self.shared.lock().protocol
    }

    pub fn group_id(&self) -> &str {
        &self.config.group_id
    }

    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.consumer.position(tp)
    }

    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        self.consumer.lag(tp)
    }

    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        self.consumer.seek(tp, offset)?;
        self.unpositioned.retain(|t| t != tp);
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        match &self.shared.lock().fatal {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn kip848(&self) -> bool {
        self.config.group_protocol == GroupProtocol::Consumer
    }

    fn cooperative(&self) -> bool {
        self.config
            .assignors
            .iter()
            .all(|a| a.rebalance_protocol() == RebalanceProtocol::Cooperative)
    }

    fn api_deadline(&self) -> Instant {
        Instant::now() + self.client.config().api_timeout
    }

    /// Records of the assigned partitions, joining or rejoining the group first when needed.
    /// Returns an empty batch if the group is still rebalancing at `timeout`; the join goes on
    /// in the background and the next `poll` picks it up.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        self.check_open()?;
        let deadline = Instant::now() + timeout;
        self.shared.lock().last_poll = Instant::now();
        if self.subscription.is_none() {
            return Err(Error::InvalidArgument(
                "subscribe before polling".to_owned(),
            ));
        }
        self.reap_auto_commits();
        self.check_metadata().await;
        let active = if self.kip848() {
            self.ensure_active_848(deadline).await?
        } else {
            self.ensure_active(deadline).await?
        };
        if !active {
            return Ok(Vec::new());
        }
        if !self.unpositioned.is_empty() {
            self.position_from_committed().await?;
        }
        self.maybe_auto_commit().await;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.consumer.poll(remaining).await
    }

    /// Joins (again) until the member is in a stable generation, or `deadline`: `Ok(false)`.
    async fn ensure_active(&mut self, deadline: Instant) -> Result<bool> {
        for _ in 0..MAX_JOINS_PER_POLL {
            self.check_open()?;
            self.handle_lost().await;
            let (generation, rejoin) = {
                let state = self.shared.lock();
                (state.generation, state.rejoin)
            };
            if self.join.is_none() && generation != NO_GENERATION && !rejoin {
                return Ok(true);
            }
            if self.join.is_none() {
                self.start_join().await?;
            }
            let Some(task) = self.join.as_mut() else {
                continue;
            };
            let result = tokio::select! {
                result = task => result,
                () = tokio::time::sleep_until(deadline.into()) => return Ok(false),
            };
            self.join = None;
            match result {
                Err(e) => return Err(Error::Protocol(format!("join task failed: {e}"))),
                Ok(Ok(joined)) => self.on_join_complete(joined).await?,
                Ok(Err(error)) => {
                    self.check_open()?;
                    let membership = [
                        ResponseError::UnknownMemberId,
                        ResponseError::IllegalGeneration,
                        ResponseError::RebalanceInProgress,
                    ];
                    let again = matches!(&error, Error::Kafka { error, .. } if membership.contains(error))
                        || is_coordinator_error(&error);
                    if !again {
                        return Err(error);
                    }
                    tracing::info!(group = %self.config.group_id, %error, "join failed; joining again");
                    let pause = self.client.config().retry_backoff;
                    if Instant::now() + pause >= deadline {
                        return Ok(false);
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Ok(false)
    }

    /// KIP-848: starts the heartbeat task if none runs (it joins with epoch 0), reconciles to
    /// the assignment it brought, and waits for the first answer until `deadline`.
    async fn ensure_active_848(&mut self, deadline: Instant) -> Result<bool> {
        loop {
            self.check_open()?;
            self.handle_lost().await;
            self.check_open()?;
            if self.heartbeat.as_ref().is_none_or(JoinHandle::is_finished) {
                self.start_heartbeat_848().await?;
            }
            let target = self.shared.lock().target.take();
            if let Some(target) = target {
                self.reconcile_848(target).await?;
            }
            if self.shared.lock().generation != NO_GENERATION {
                return Ok(true);
            }
            tokio::select! {
                () = self.signals.answered.notified() => {}
                () = tokio::time::sleep_until(deadline.into()) => return Ok(false),
            }
        }
    }

    /// KIP-848: the heartbeat task, with the subscription it is to carry.
    async fn start_heartbeat_848(&mut self) -> Result<()> {
        self.stop_heartbeat();
        let topics = match &self.subscription {
            Some(Subscribed::Topics(topics)) => topics.iter().cloned().collect(),
            _ => Vec::new(),
        };
        {
            let mut state = self.shared.lock();
            state.topics = topics;
            state.regex = match &self.subscription {
                Some(Subscribed::Pattern(regex)) => Some(regex.as_str().to_owned()),
                _ => None,
            };
            state.generation = NO_GENERATION;
            state.owned.clear();
            state.target = None;
        }
        self.joined_topics = self.resolve_topics().await?;
        let settings = kip848::Settings {
            group_instance_id: self.config.group_instance_id.clone(),
            rebalance_timeout: self.config.max_poll_interval,
            server_assignor: self.config.server_assignor.clone(),
            rack_id: self.config.client_rack.clone(),
            max_poll_interval: self.config.max_poll_interval,
            heartbeat_interval: self.config.heartbeat_interval,
        };
        tracing::debug!(group = %self.config.group_id, member_id = %self.member_id(), "joining (KIP-848)");
        self.heartbeat = Some(tokio::spawn(kip848::heartbeat_loop(
            Arc::clone(&self.coordinator),
            self.shared.clone(),
            settings,
            Arc::clone(&self.signals),
        )));
        Ok(())
    }

    /// KIP-848 reconciliation: revokes what is no longer assigned (committing its positions
    /// first with auto commit on), assigns what is new (at the committed offsets), and has the
    /// heartbeat task report the new set at once.
    async fn reconcile_848(&mut self, target: Vec<TopicPartition>) -> Result<()> {
        let owned = self.consumer.assignment();
        let (revoked, added) = kip848::reconcile(&owned, &target);
        tracing::info!(group = %self.config.group_id, epoch = self.generation(),
            assigned = target.len(), added = added.len(), revoked = revoked.len(), "reconciling");
        if !revoked.is_empty() {
            if self.config.enable_auto_commit {
                if let Err(error) = self.commit_positions(&revoked).await {
                    tracing::warn!(group = %self.config.group_id, %error, "commit of revoked partitions failed");
                }
            }
            self.run_listener(Callback::Revoked, &revoked).await;
            self.unpositioned.retain(|tp| !revoked.contains(tp));
        }
        self.consumer.assign(target.iter().cloned());
        if !revoked.is_empty() || !added.is_empty() || owned.is_empty() {
            self.unpositioned.extend(added.iter().cloned());
            let sought = self.run_listener(Callback::Assigned, &added).await;
            self.unpositioned.retain(|tp| !sought.contains(tp));
        }
        if !self.unpositioned.is_empty() {
            self.position_from_committed().await?;
        }
        {
            let mut state = self.shared.lock();
            if !state.lost {
                state.owned = target;
            }
        }
        self.signals.send_now.notify_one();
        Ok(())
    }

    /// The membership was lost: the partitions go without a commit, `on_partitions_lost` runs.
    async fn handle_lost(&mut self) {
        let kip848 = self.kip848();
        let lost = {
            let mut state = self.shared.lock();
            if kip848 {
                // Cleared below, once the partitions are released.
                state.lost
            } else {
                std::mem::take(&mut state.lost)
            }
        };
        if !lost {
            return;
        }
        if !kip848 {
            self.stop_heartbeat();
        }
        let owned = self.consumer.assignment();
        tracing::info!(group = %self.config.group_id, partitions = owned.len(), "membership lost");
        if !owned.is_empty() {
            self.run_listener(Callback::Lost, &owned).await;
            self.consumer.assign(Vec::new());
        }
        self.unpositioned.clear();
        if kip848 {
            // The heartbeat task rejoins (epoch 0, same member id) now that the partitions are
            // released; it reports none until the next reconciliation.
            {
                let mut state = self.shared.lock();
                state.lost = false;
                state.owned.clear();
            }
            self.signals.send_now.notify_one();
        }
    }

    /// Java's `onJoinPrepare`, then the join in a task.
    async fn start_join(&mut self) -> Result<()> {
        self.stop_heartbeat();
        let topics = self.resolve_topics().await?;
        let owned = self.consumer.assignment();
        let generation = self.shared.lock().generation;
        if generation != NO_GENERATION && self.config.enable_auto_commit && !owned.is_empty() {
            if let Err(error) = self.commit_positions(&owned).await {
                tracing::warn!(group = %self.config.group_id, %error, "commit before rebalance failed");
            }
        }
        let cooperative = self.cooperative();
        // Eager: everything goes before joining. Cooperative: only what is no longer subscribed.
        let revoke: Vec<TopicPartition> = owned
            .iter()
            .filter(|tp| !cooperative || !topics.contains(&tp.topic))
            .cloned()
            .collect();
        if !revoke.is_empty() {
            self.run_listener(Callback::Revoked, &revoke).await;
            let keep: Vec<TopicPartition> = owned
                .into_iter()
                .filter(|tp| !revoke.contains(tp))
                .collect();
            self.consumer.assign(keep);
        }
        let owned = if cooperative {
            self.consumer.assignment()
        } else {
            Vec::new()
        };
        let reason = {
            let mut state = self.shared.lock();
            state.rejoin = false;
            if state.generation == NO_GENERATION {
                "joining the group"
            } else {
                "rebalance requested"
            }
        };
        self.joined_topics = topics.clone();
        let settings = self.join_settings();
        let coordinator = Arc::clone(&self.coordinator);
        let shared = self.shared.clone();
        let deadline = Instant::now()
            + self.config.max_poll_interval
            + self.config.session_timeout
            + self.client.config().api_timeout;
        tracing::debug!(group = %self.config.group_id, ?topics, owned = owned.len(), reason, "joining");
        self.join = Some(tokio::spawn(async move {
            membership::join(
                &coordinator,
                &shared,
                &settings,
                &topics,
                &owned,
                reason,
                deadline,
            )
            .await
        }));
        Ok(())
    }

    fn join_settings(&self) -> JoinSettings {
        JoinSettings {
            group_instance_id: self.config.group_instance_id.clone(),
            session_timeout: self.config.session_timeout,
            rebalance_timeout: self.config.max_poll_interval,
            assignors: self.config.assignors.clone(),
            rack_id: self.config.client_rack.clone(),
        }
    }

    /// Java's `onJoinComplete`: the new assignment, the callbacks, heartbeats.
    async fn on_join_complete(&mut self, joined: Joined) -> Result<()> {
        self.leader_of = joined.leader_of.clone();
        self.shared.lock().protocol = Some(joined.protocol);
        let old: BTreeSet<TopicPartition> = self.consumer.assignment().into_iter().collect();
        let new: BTreeSet<TopicPartition> = joined.assignment.iter().cloned().collect();
        let revoked: Vec<TopicPartition> = old.difference(&new).cloned().collect();
        let added: Vec<TopicPartition> = new.difference(&old).cloned().collect();
        tracing::info!(group = %self.config.group_id, member_id = %joined.member_id,
            generation = joined.generation, protocol = joined.protocol.name(),
            assigned = new.len(), added = added.len(), revoked = revoked.len(), "joined");
        self.start_heartbeat(joined.member_id.clone(), joined.generation);
        if !revoked.is_empty() {
            // Cooperative (KIP-429): these go to another member in a second rebalance, which
            // this member asks for once it has let go of them.
            if self.config.enable_auto_commit {
                if let Err(error) = self.commit_positions(&revoked).await {
                    tracing::warn!(group = %self.config.group_id, %error, "commit of revoked partitions failed");
                }
            }
            self.run_listener(Callback::Revoked, &revoked).await;
            self.shared.lock().rejoin = true;
        }
        self.consumer.assign(new.iter().cloned());
        self.unpositioned = added.clone();
        let sought = self.run_listener(Callback::Assigned, &added).await;
        self.unpositioned.retain(|tp| !sought.contains(tp));
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        if !self.unpositioned.is_empty() {
            self.position_from_committed().await?;
        }
        Ok(())
    }

    /// Starts the unpositioned partitions at their committed offsets; those without one start
    /// per `auto_offset_reset`.
    async fn position_from_committed(&mut self) -> Result<()> {
        let tps = self.unpositioned.clone();
        let committed = offsets::fetch(&self.coordinator, Some(&tps), self.api_deadline()).await?;
        for (tp, offset) in committed {
            if let Some(offset) = offset {
                if self.unpositioned.contains(&tp) {
                    self.consumer
                        .seek_with_epoch(&tp, offset.offset, offset.leader_epoch)?;
                }
            }
        }
        self.unpositioned.clear();
        Ok(())
    }

    fn start_heartbeat(&mut self, member_id: String, generation: i32) {
        self.stop_heartbeat();
        self.heartbeat = Some(tokio::spawn(membership::heartbeat_loop(
            Arc::clone(&self.coordinator),
            self.shared.clone(),
            self.join_settings(),
            self.config.heartbeat_interval,
            self.config.max_poll_interval,
            member_id,
            generation,
        )));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }

    /// Runs one callback with a context on the consumer, then makes the commits it asked for
    /// (none for lost partitions). Returns the partitions it sought.
    async fn run_listener(
        &mut self,
        callback: Callback,
        partitions: &[TopicPartition],
    ) -> BTreeSet<TopicPartition> {
        let (member_id, generation) = {
            let state = self.shared.lock();
            (state.member_id.clone(), state.generation)
        };
        let mut context = RebalanceContext {
            consumer: &mut self.consumer,
            commits: BTreeMap::new(),
            member_id,
            generation,
            sought: BTreeSet::new(),
        };
        match callback {
            Callback::Revoked => self
                .listener
                .on_partitions_revoked(&mut context, partitions),
            Callback::Assigned => self
                .listener
                .on_partitions_assigned(&mut context, partitions),
            Callback::Lost => self.listener.on_partitions_lost(&mut context, partitions),
        }
        let commits = std::mem::take(&mut context.commits);
        let sought = std::mem::take(&mut context.sought);
        if callback != Callback::Lost && !commits.is_empty() {
            if let Err(error) = self.commit_offsets(commits).await {
                tracing::warn!(group = %self.config.group_id, %error, "commit from a rebalance callback failed");
            }
        }
        sought
    }

    fn committer(&self) -> Committer {
        let state = self.shared.lock();
        Committer {
            generation: state.generation,
            member_id: state.member_id.clone(),
            group_instance_id: self.config.group_instance_id.clone(),
            member_epoch: self.kip848(),
        }
    }

    /// The positions of `tps` (those that have one), with the leader epoch of the last record.
    fn positions(&self, tps: &[TopicPartition]) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
        tps.iter()
            .filter(|tp| !self.unpositioned.contains(tp))
            .filter_map(|tp| {
                let offset = self.consumer.position(tp)?;
                let epoch = self.consumer.last_leader_epoch(tp);
                Some((
                    tp.clone(),
                    OffsetAndMetadata::new(offset).with_leader_epoch(epoch),
                ))
            })
            .collect()
    }

    async fn commit_positions(&mut self, tps: &[TopicPartition]) -> Result<()> {
        let offsets = self.positions(tps);
        self.commit_offsets(offsets).await
    }

    /// Commits `offsets` now, retrying through coordinator moves for `api_timeout`; an error
    /// that ends the membership is noted for the next `poll`.
    async fn commit_offsets(
        &mut self,
        offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        let mut stale = 0;
        loop {
            let who = self.committer();
            let result =
                offsets::commit(&self.coordinator, &who, &offsets, self.api_deadline()).await;
            match &result {
                Err(error)
                    if self.kip848()
                        && error.kafka_code() == Some(ResponseError::StaleMemberEpoch.code())
                        && stale < 3 =>
                {
                    // KIP-848: retry with the epoch the next heartbeat brings.
                    stale += 1;
                    let wait = self
                        .shared
                        .lock()
                        .heartbeat_interval
                        .unwrap_or(self.config.heartbeat_interval);
                    self.signals.send_now.notify_one();
                    let _ = tokio::time::timeout(wait, self.signals.answered.notified()).await;
                    continue;
                }
                Err(error) if !self.kip848() => {
                    self.shared
                        .note_error(error, &who.member_id, who.generation);
                }
                _ => {}
            }
            return result;
        }
    }

    /// Commits the positions of every assigned partition and waits for the answer.
    pub async fn commit_sync(&mut self) -> Result<()> {
        self.check_open()?;
        let offsets = self.positions(&self.consumer.assignment());
        self.commit_offsets(offsets).await
    }

    /// Commits `offsets` (each the next offset to consume, with optional leader epoch and
    /// metadata) and waits for the answer.
    pub async fn commit_offsets_sync(
        &mut self,
        offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        self.check_open()?;
        self.commit_offsets(offsets).await
    }

    /// Commits the positions of every assigned partition without waiting: the commit is on its
    /// way (in order with other commits) when this returns. Not retried, as in Java.
    pub async fn commit_async(&mut self) -> Result<CommitHandle> {
        self.check_open()?;
        let offsets = self.positions(&self.consumer.assignment());
        self.queue_commit(offsets).await.map(CommitHandle)
    }

    /// [`GroupConsumer::commit_async`] of explicit offsets.
    pub async fn commit_offsets_async(
        &mut self,
        offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<CommitHandle> {
        self.check_open()?;
        self.queue_commit(offsets).await.map(CommitHandle)
    }

    async fn queue_commit(
        &self,
        offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<JoinHandle<Result<()>>> {
        let who = self.committer();
        let coordinator = Arc::clone(&self.coordinator);
        let shared = self.shared.clone();
        let classic = !self.kip848();
        if offsets.is_empty() {
            return Ok(tokio::spawn(async { Ok(()) }));
        }
        let response = match offsets::commit_queued(&coordinator, &who, &offsets).await {
            Ok(response) => response,
            Err(error) => {
                if is_coordinator_error(&error) {
                    coordinator.invalidate();
                }
                return Err(error);
            }
        };
        Ok(tokio::spawn(async move {
            let result = response.await;
            if let Err(error) = &result {
                if classic {
                    shared.note_error(error, &who.member_id, who.generation);
                }
                if is_coordinator_error(error) {
                    coordinator.invalidate();
                }
            }
            result
        }))
    }

    async fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit || Instant::now() < self.next_auto_commit {
            return;
        }
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        let offsets = self.positions(&self.consumer.assignment());
        match self.queue_commit(offsets).await {
            Ok(task) => {
                self.auto_commits.spawn(async move {
                    task.await
                        .unwrap_or_else(|e| Err(Error::Protocol(format!("commit task: {e}"))))
                });
            }
            Err(error) => {
                tracing::warn!(group = %self.config.group_id, %error, "auto commit failed")
            }
        }
    }

    fn reap_auto_commits(&mut self) {
        while let Some(done) = self.auto_commits.try_join_next() {
            if let Ok(Err(error)) = done {
                tracing::warn!(group = %self.config.group_id, %error, "auto commit failed");
            }
        }
    }

    /// The committed offsets of `partitions` (`None`: nothing committed).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<OffsetAndMetadata>>> {
        self.check_open()?;
        offsets::fetch(&self.coordinator, Some(partitions), self.api_deadline()).await
    }

    /// The topics the subscription means now.
    async fn resolve_topics(&self) -> Result<Vec<String>> {
        match &self.subscription {
            None => Ok(Vec::new()),
            Some(Subscribed::Topics(topics)) => Ok(topics.iter().cloned().collect()),
            Some(Subscribed::Pattern(regex)) => {
                let metadata = self
                    .client
                    .retry(&[], || self.client.refresh_metadata(&[], false))
                    .await?;
                Ok(metadata
                    .topics
                    .values()
                    .filter(|t| !(self.config.exclude_internal_topics && t.internal))
                    .filter(|t| regex.is_match(&t.name))
                    .map(|t| t.name.clone())
                    .collect())
            }
        }
    }

    /// Every `metadata_max_age`: a pattern that matches other topics now, or (as leader)
    /// partition counts that changed, ask for a rebalance.
    async fn check_metadata(&mut self) {
        if Instant::now() < self.next_metadata_check
            || self.shared.lock().generation == NO_GENERATION
        {
            return;
        }
        self.next_metadata_check = Instant::now() + self.client.config().metadata_max_age;
        if matches!(self.subscription, Some(Subscribed::Pattern(_))) {
            match self.resolve_topics().await {
                Ok(topics) if topics != self.joined_topics => {
                    tracing::info!(group = %self.config.group_id, ?topics, "pattern matches other topics now");
                    self.shared.lock().rejoin = true;
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "metadata refresh for the pattern failed"),
            }
        }
        if let Some(counts) = &self.leader_of {
            let topics: Vec<String> = counts.keys().cloned().collect();
            if topics.is_empty() {
                return;
            }
            if let Ok(metadata) = self.client.refresh_metadata(&topics, false).await {
                let changed = counts.iter().any(|(topic, &count)| {
                    let now = metadata.topics.get(topic).map_or(0, |t| t.partitions.len());
                    usize::try_from(count).ok() != Some(now)
                });
                if changed {
                    tracing::info!(group = %self.config.group_id, "partition counts changed; reassigning");
                    self.shared.lock().rejoin = true;
                }
            }
        }
    }

    /// Gives the partitions up (committing positions with auto commit on, then
    /// `on_partitions_revoked`) and leaves the group, unless this is a static member, which
    /// keeps its place until its session times out.
    async fn leave_group(&mut self, reason: &str) {
        if self.kip848() {
            self.leave_group_848().await;
            return;
        }
        if let Some(task) = self.join.take() {
            task.abort();
        }
        self.handle_lost().await;
        let owned = self.consumer.assignment();
        let generation = self.shared.lock().generation;
        if generation != NO_GENERATION && self.config.enable_auto_commit && !owned.is_empty() {
            if let Err(error) = self.commit_positions(&owned).await {
                tracing::warn!(group = %self.config.group_id, %error, "commit on leave failed");
            }
        }
        if !owned.is_empty() {
            self.run_listener(Callback::Revoked, &owned).await;
        }
        self.consumer.assign(Vec::new());
        self.stop_heartbeat();
        let member_id = {
            let mut state = self.shared.lock();
            state.generation = NO_GENERATION;
            state.rejoin = false;
            state.protocol = None;
            if self.config.group_instance_id.is_none() {
                std::mem::take(&mut state.member_id)
            } else {
                String::new()
            }
        };
        if !member_id.is_empty() {
            membership::leave(&self.coordinator, &member_id, None, reason).await;
        }
    }

    /// KIP-848: as [`GroupConsumer::leave_group`], leaving with a heartbeat of epoch -1 (a
    /// static member: -2, which keeps its assignment for its return).
    async fn leave_group_848(&mut self) {
        // First, so that no heartbeat joins again meanwhile; one cut short may have joined,
        // hence the leave whenever a heartbeat task ran.
        let heartbeating = self.heartbeat.is_some();
        self.stop_heartbeat();
        self.handle_lost().await;
        let owned = self.consumer.assignment();
        let generation = self.shared.lock().generation;
        if generation != NO_GENERATION && self.config.enable_auto_commit && !owned.is_empty() {
            if let Err(error) = self.commit_positions(&owned).await {
                tracing::warn!(group = %self.config.group_id, %error, "commit on leave failed");
            }
        }
        if !owned.is_empty() {
            self.run_listener(Callback::Revoked, &owned).await;
        }
        self.consumer.assign(Vec::new());
        self.unpositioned.clear();
        let member_id = {
            let mut state = self.shared.lock();
            let was = state.generation;
            state.generation = NO_GENERATION;
            state.owned.clear();
            state.target = None;
            (heartbeating || was != NO_GENERATION).then(|| state.member_id.clone())
        };
        if let Some(member_id) = member_id {
            kip848::leave(
                &self.coordinator,
                &member_id,
                self.config.group_instance_id.as_deref(),
            )
            .await;
        }
    }

    /// Drops the subscription and leaves the group (see [`GroupConsumer::close`]).
    pub async fn unsubscribe(&mut self) -> Result<()> {
        self.check_open()?;
        self.leave_group("the consumer unsubscribed").await;
        self.subscription = None;
        self.joined_topics.clear();
        Ok(())
    }

    /// Commits positions (with auto commit on), runs `on_partitions_revoked`, leaves the group
    /// (a dynamic member; a static one stays until its session times out, so a restart within
    /// it moves nothing) and waits for auto commits in flight.
    pub async fn close(mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let fatal = self.shared.lock().fatal.clone();
        if fatal.is_none() {
            self.leave_group("the consumer is being closed").await;
        }
        self.stop_heartbeat();
        while let Some(done) = self.auto_commits.join_next().await {
            if let Ok(Err(error)) = done {
                tracing::warn!(group = %self.config.group_id, %error, "auto commit failed");
            }
        }
        self.closed = true;
        Ok(())
    }
}
