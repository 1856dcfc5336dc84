//! The state machine of one `__consumer_offsets` partition: its classic groups and committed
//! offsets. Operations take what the wire request says (already checked for shape) and return
//! the records to write with the answer; group answers that wait for other members come back as
//! [`Reply::Later`] and are sent once the records that decided them are committed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::classic::{
    DescribedMember, Effects, Group, GroupRules, GroupState, GroupTimer, JoinRequest, JoinResponse,
    Reply, SyncRequest, SyncResponse,
};
use super::consumer::{ConsumerGroup, ConsumerRules, TopicsView};
use super::migration::MemberTimer;
use super::offsets::{commit_record, Committed, Expiry, Offsets, TopicPartition};
use super::records::{GroupMetadataValue, OffsetCommitValue, RecordKey};
use super::{GroupProblem, LENGTHS_CHECKED};
use crate::coordinator::machine::ReplayError;
use crate::coordinator::{
    CoordinatorMachine, CoordinatorRecord, CoordinatorResult, Deferred, OpContext,
};

/// One partition's groups and offsets.
#[derive(Default)]
pub struct GroupMachine {
    pub(super) rules: GroupRules,
    pub(super) consumer_rules: ConsumerRules,
    /// Classic groups.
    pub(super) groups: HashMap<String, Group>,
    /// KIP-848 consumer groups; a group id is in at most one of the two maps.
    pub(super) consumer_groups: HashMap<String, ConsumerGroup>,
    pub(super) offsets: Offsets,
    /// Offsets committed in transactions not ended yet.
    pub(crate) pending_txn: super::txn_offsets::PendingTxnOffsets,
    /// Records the current call writes (drained into its result).
    pub(super) records: Vec<CoordinatorRecord>,
    /// Answers the current call releases once committed (taken by the shard).
    pub(super) deferred: Vec<Deferred>,
    /// Set once replay is over: from then on operations apply group records themselves.
    pub(super) loaded: bool,
}

impl std::fmt::Debug for GroupMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMachine")
            .field("groups", &self.groups.len())
            .field("offsets", &self.offsets.count())
            .field("loaded", &self.loaded)
            .finish()
    }
}

/// One partition of an OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub topic_id: uuid::Uuid,
    /// OffsetCommit v2–v4 `retention_time_ms` (-1: the broker's retention).
    pub retention_ms: i64,
}

/// An OffsetCommit as the coordinator sees it.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// OffsetCommit's version: a stale member epoch is STALE_MEMBER_EPOCH from v9.
    pub api_version: i16,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub partitions: Vec<CommitPartition>,
}

/// The outcome of each committed partition, in request order.
pub type PartitionOutcomes = Vec<(String, i32, Option<GroupProblem>)>;

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    pub group_id: String,
    /// `None`: no such group (Kafka shows it as Dead).
    pub found: bool,
    pub state: &'static str,
    pub protocol_type: String,
    /// The selected protocol, once Stable.
    pub protocol_data: String,
    pub members: Vec<DescribedMember>,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: &'static str,
}

/// Splits the machine into the group map and the effects of one call (disjoint borrows).
macro_rules! with_effects {
    ($machine:expr, $ctx:expr, |$groups:ident, $offsets:ident, $fx:ident| $body:expr) => {{
        let GroupMachine {
            rules,
            groups: $groups,
            offsets: $offsets,
            records,
            deferred,
            ..
        } = $machine;
        #[allow(unused_mut)]
        let mut $fx = Effects {
            now_ms: $ctx.now_ms,
            timers: &mut *$ctx.timers,
            records,
            deferred,
            rules,
        };
        $body
    }};
}

impl GroupMachine {
    pub fn new(rules: GroupRules, consumer_rules: ConsumerRules) -> GroupMachine {
        GroupMachine {
            rules,
            consumer_rules,
            ..GroupMachine::default()
        }
    }

    /// This call's records, with `response`.
    pub(super) fn result<R>(&mut self, response: R) -> CoordinatorResult<R> {
        CoordinatorResult::new(std::mem::take(&mut self.records), response)
    }

    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    pub fn offsets(&self) -> &Offsets {
        &self.offsets
    }

    // ---------------------------------------------------------------- membership

    pub fn join(
        &mut self,
        group_id: &str,
        request: JoinRequest,
        topics: &TopicsView,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> CoordinatorResult<Reply<JoinResponse>> {
        if let Some(consumer) = self.consumer_groups.get(group_id) {
            if !consumer.is_empty() {
                // A classic member of a consumer group (online migration).
                let reply = self.join_consumer_group(group_id, request, topics, ctx);
                return self.result(reply);
            }
            // An empty consumer group becomes a classic one, as Kafka converts it.
            self.remove_consumer_group(group_id);
        }
        let created = !self.groups.contains_key(group_id);
        if created && !request.member_id.is_empty() {
            let response = JoinResponse::error(GroupProblem::UnknownMemberId, &request.member_id);
            return self.result(Reply::Now(response));
        }
        let reply = with_effects!(self, ctx, |groups, _offsets, fx| {
            let group = groups
                .entry(group_id.to_owned())
                .or_insert_with(|| Group::new(group_id, Some(fx.now_ms)));
            group.join(request, &mut fx)
        });
        // A refused first join leaves no group behind.
        if created {
            let unused = self.groups.get(group_id).is_some_and(|g| {
                g.members.is_empty() && g.pending_members.is_empty() && g.is(GroupState::Empty)
            });
            if unused && !self.offsets.has_offsets(group_id) {
                self.groups.remove(group_id);
            }
        }
        self.result(reply)
    }

    pub fn sync(
        &mut self,
        group_id: &str,
        request: SyncRequest,
        topics: &TopicsView,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> CoordinatorResult<Reply<SyncResponse>> {
        if self.consumer_groups.contains_key(group_id) {
            let reply = self.sync_consumer_group(group_id, request, topics, ctx);
            return self.result(reply);
        }
        let reply = with_effects!(self, ctx, |groups, _offsets, fx| {
            match groups.get_mut(group_id) {
                Some(group) => group.sync(request, &mut fx),
                None => Reply::Now(SyncResponse::error(GroupProblem::UnknownMemberId)),
            }
        });
        self.result(reply)
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> CoordinatorResult<Result<(), GroupProblem>> {
        if self.consumer_groups.contains_key(group_id) {
            let outcome = self.heartbeat_consumer_group(
                group_id,
                member_id,
                group_instance_id,
                generation_id,
                ctx,
            );
            return self.result(outcome);
        }
        let outcome = with_effects!(self, ctx, |groups, _offsets, fx| {
            match groups.get_mut(group_id) {
                Some(group) => {
                    group.heartbeat(member_id, group_instance_id, generation_id, &mut fx)
                }
                None => Err(GroupProblem::UnknownMemberId),
            }
        });
        self.result(outcome)
    }

    /// LeaveGroup: `(member id, instance id)` pairs; the outcome of each.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: Vec<(String, Option<String>)>,
        topics: &TopicsView,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> CoordinatorResult<Result<Vec<Result<(), GroupProblem>>, GroupProblem>> {
        if self.consumer_groups.contains_key(group_id) {
            let outcomes = self.leave_consumer_group(group_id, &members, topics, ctx);
            return self.result(Ok(outcomes));
        }
        let outcome = with_effects!(self, ctx, |groups, _offsets, fx| {
            match groups.get_mut(group_id) {
                Some(group) => Ok(members
                    .iter()
                    .map(|(member_id, instance)| {
                        group.leave(member_id, instance.as_deref(), &mut fx)
                    })
                    .collect()),
                None => Err(GroupProblem::UnknownMemberId),
            }
        });
        self.result(outcome)
    }

    // ---------------------------------------------------------------- offsets

    pub fn commit(
        &mut self,
        group_id: &str,
        request: CommitRequest,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> CoordinatorResult<Result<PartitionOutcomes, GroupProblem>> {
        let now_ms = ctx.now_ms;
        let validated = if let Some(consumer) = self.consumer_groups.get(group_id) {
            consumer.validate_offset_commit(
                &request.member_id,
                request.generation_id,
                request.api_version,
            )
        } else {
            if !self.groups.contains_key(group_id) {
                if request.generation_id >= 0 {
                    return self.result(Err(GroupProblem::IllegalGeneration));
                }
                // A consumer outside group management (or the admin client) commits for a
                // group that does not exist yet: it is created empty.
                self.groups
                    .insert(group_id.to_owned(), Group::new(group_id, Some(now_ms)));
            }
            with_effects!(self, ctx, |groups, _offsets, fx| {
                let group = &groups[group_id];
                let valid = group.validate_offset_commit(
                    &request.member_id,
                    request.group_instance_id.as_deref(),
                    request.generation_id,
                );
                if valid.is_ok() && request.generation_id >= 0 {
                    group.commit_heartbeat(&request.member_id, &mut fx);
                }
                valid
            })
        };
        if let Err(problem) = validated {
            return self.result(Err(problem));
        }
        let mut outcomes = Vec::with_capacity(request.partitions.len());
        for partition in request.partitions {
            let metadata = partition.metadata.unwrap_or_default();
            if metadata.len() > self.rules.offset_metadata_max_bytes {
                outcomes.push((
                    partition.topic,
                    partition.partition,
                    Some(GroupProblem::OffsetMetadataTooLarge),
                ));
                continue;
            }
            let committed = Committed {
                record_offset: -1,
                offset: partition.offset,
                leader_epoch: partition.leader_epoch,
                metadata,
                commit_timestamp_ms: now_ms,
                expire_timestamp_ms: (partition.retention_ms >= 0)
                    .then(|| now_ms.saturating_add(partition.retention_ms)),
                topic_id: partition.topic_id,
            };
            self.records.push(commit_record(
                group_id,
                &partition.topic,
                partition.partition,
                &committed,
            ));
            outcomes.push((partition.topic, partition.partition, None));
        }
        super::metrics::committed(self.records.len());
        self.result(Ok(outcomes))
    }

    /// OffsetFetch of one group: `None` asks for every committed offset.
    pub fn fetch(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, i32, Option<Committed>)> {
        match wanted {
            Some(topics) => topics
                .into_iter()
                .flat_map(|(topic, partitions)| {
                    partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .map(|(topic, partition)| {
                    let committed = self.offsets.get(group_id, &topic, partition).cloned();
                    (topic, partition, committed)
                })
                .collect(),
            None => self
                .offsets
                .group(group_id)
                .into_iter()
                .flatten()
                .map(|((topic, partition), committed)| {
                    (topic.clone(), *partition, Some(committed.clone()))
                })
                .collect(),
        }
    }

    /// OffsetDelete: removes a group's offsets of partitions it does not consume.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: Vec<TopicPartition>,
    ) -> CoordinatorResult<Result<PartitionOutcomes, GroupProblem>> {
        let subscribed = if let Some(consumer) = self.consumer_groups.get(group_id) {
            Some(if consumer.is_empty() {
                BTreeSet::new()
            } else {
                consumer.subscribed_topics()
            })
        } else if let Some(group) = self.groups.get(group_id) {
            if group.is(GroupState::Empty) {
                Some(BTreeSet::new())
            } else if group.protocol_type.as_deref() == Some("consumer") {
                // Unknown subscriptions protect every topic.
                group.subscribed_topics()
            } else {
                return self.result(Err(GroupProblem::NonEmptyGroup));
            }
        } else {
            return self.result(Err(GroupProblem::GroupIdNotFound));
        };
        let mut outcomes = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let consumed = subscribed.as_ref().is_none_or(|s| s.contains(&topic));
            if consumed {
                outcomes.push((topic, partition, Some(GroupProblem::GroupSubscribedToTopic)));
                continue;
            }
            if self.offsets.get(group_id, &topic, partition).is_some() {
                let key = RecordKey::OffsetCommit(super::records::OffsetCommitKey {
                    group: group_id.to_owned(),
                    topic: topic.clone(),
                    partition,
                });
                self.records.push(CoordinatorRecord::tombstone(
                    key.encode().expect(LENGTHS_CHECKED),
                ));
            }
            outcomes.push((topic, partition, None));
        }
        self.result(Ok(outcomes))
    }

    /// DeleteGroups: each group must be empty; its offsets and itself are removed.
    pub fn delete_groups(
        &mut self,
        group_ids: Vec<String>,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> CoordinatorResult<Vec<(String, Option<GroupProblem>)>> {
        let mut outcomes = Vec::with_capacity(group_ids.len());
        for group_id in group_ids {
            if let Some(consumer) = self.consumer_groups.get(&group_id) {
                let problem = (!consumer.is_empty()).then_some(GroupProblem::NonEmptyGroup);
                if problem.is_none() {
                    let tombstones = self.offsets.tombstones_of_group(&group_id);
                    self.records.extend(tombstones);
                    self.remove_consumer_group(&group_id);
                }
                outcomes.push((group_id, problem));
                continue;
            }
            let problem = match self.groups.get(&group_id) {
                None => Some(GroupProblem::GroupIdNotFound),
                Some(group) if group.is(GroupState::Dead) => Some(GroupProblem::GroupIdNotFound),
                Some(group) if !group.is(GroupState::Empty) => Some(GroupProblem::NonEmptyGroup),
                Some(_) => None,
            };
            if problem.is_none() {
                self.remove_group(&group_id, ctx);
            }
            outcomes.push((group_id, problem));
        }
        self.result(outcomes)
    }

    /// Writes the removal of an empty group: its offsets, then its group record.
    fn remove_group(&mut self, group_id: &str, ctx: &mut OpContext<'_, GroupTimer>) {
        let tombstones = self.offsets.tombstones_of_group(group_id);
        self.records.extend(tombstones);
        self.records.push(Group::tombstone(group_id));
        if let Some(mut group) = self.groups.remove(group_id) {
            with_effects!(self, ctx, |_groups, _offsets, fx| {
                group.drop_waiting(GroupProblem::CoordinatorNotAvailable, &mut fx);
            });
        }
    }

    /// Removes every group's offsets of deleted topics.
    pub fn remove_topics(&mut self, topics: &BTreeSet<String>) -> CoordinatorResult<usize> {
        let tombstones = self.offsets.tombstones_of_topics(topics);
        let count = tombstones.len();
        self.records.extend(tombstones);
        self.result(count)
    }

    // ---------------------------------------------------------------- reads

    pub fn describe(&self, group_id: &str) -> DescribedGroup {
        match self.groups.get(group_id) {
            Some(group) => DescribedGroup {
                group_id: group_id.to_owned(),
                found: true,
                state: group.state.name(),
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                protocol_data: if group.is(GroupState::Stable) {
                    group.protocol_name.clone().unwrap_or_default()
                } else {
                    String::new()
                },
                members: group.described_members(),
            },
            None => DescribedGroup {
                group_id: group_id.to_owned(),
                found: false,
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol_data: String::new(),
                members: Vec::new(),
            },
        }
    }

    /// Groups by protocol and state, and the committed offsets held (for the gauges).
    pub fn counts(&self) -> (BTreeMap<(&'static str, &'static str), usize>, usize) {
        let mut counts = BTreeMap::new();
        for group in self.groups.values() {
            *counts.entry(("classic", group.state.name())).or_default() += 1;
        }
        for group in self.consumer_groups.values() {
            *counts.entry(("consumer", group.state())).or_default() += 1;
        }
        (counts, self.offsets.count())
    }

    /// Up to `limit` committed offsets, in group order, for the consumer lag gauge; and how
    /// many were left out.
    pub fn committed_sample(&self, limit: usize) -> (Vec<super::lag::CommittedSample>, usize) {
        let mut sample = Vec::with_capacity(limit.min(self.offsets.count()));
        for group in self.offsets.groups() {
            for ((topic, partition), committed) in self.offsets.group(group).into_iter().flatten() {
                if sample.len() == limit {
                    return (sample, self.offsets.count() - limit);
                }
                sample.push((group.clone(), topic.clone(), *partition, committed.offset));
            }
        }
        (sample, 0)
    }

    pub fn list(&self) -> Vec<ListedGroup> {
        let mut listed: Vec<ListedGroup> = self
            .groups
            .values()
            .map(|group| ListedGroup {
                group_id: group.id.clone(),
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                state: group.state.name(),
                group_type: "classic",
            })
            .chain(self.consumer_groups.values().map(|group| ListedGroup {
                group_id: group.id.clone(),
                protocol_type: "consumer".to_owned(),
                state: group.state(),
                group_type: "consumer",
            }))
            .collect();
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listed
    }

    // ---------------------------------------------------------------- expiry

    fn expire_offsets(&mut self, ctx: &mut OpContext<'_, GroupTimer>) {
        let retention_ms = self.rules.offsets_retention_ms;
        let mut emptied = Vec::new();
        let group_ids: Vec<String> = self.offsets.groups().cloned().collect();
        for group_id in group_ids {
            let consumer = self.consumer_groups.get(&group_id);
            // Kafka's `ClassicGroup.offsetExpirationCondition` (and `ConsumerGroup`'s).
            let expiry = match self.groups.get(&group_id) {
                // KIP-848 groups: an offset expires after its commit, unless its topic is
                // subscribed to.
                None if consumer.is_some_and(|c| !c.is_empty()) => Expiry::Unsubscribed {
                    subscribed: consumer.map(|c| c.subscribed_topics()).unwrap_or_default(),
                },
                None => Expiry::All { base_ms: None },
                // A group that never had a member (a consumer outside group management commits
                // to it): each offset expires from its own commit, not from the group's birth,
                // or a consumer committing all along would lose its offsets.
                Some(group) if group.protocol_type.is_none() => Expiry::All { base_ms: None },
                Some(group) if group.is(GroupState::Empty) => Expiry::All {
                    base_ms: group.state_timestamp_ms,
                },
                // Only a Stable group's subscriptions are settled; nothing expires mid-rebalance.
                Some(group) if !group.is(GroupState::Stable) => Expiry::Never,
                Some(group) => match group.subscribed_topics() {
                    Some(subscribed) => Expiry::Unsubscribed { subscribed },
                    None => Expiry::Never,
                },
            };
            let expired = self
                .offsets
                .expired(&group_id, &expiry, retention_ms, ctx.now_ms);
            let all = self
                .offsets
                .group(&group_id)
                .is_some_and(|offsets| offsets.len() == expired.len());
            if !expired.is_empty() {
                tracing::info!(group = %group_id, offsets = expired.len(), "offsets expired");
            }
            self.records.extend(expired);
            if all {
                emptied.push(group_id);
            }
        }
        // Kafka's `cleanupGroupMetadata` goes over every group: one without offsets counts as
        // "all expired", so an empty group that never committed (or whose offsets were deleted)
        // goes too, instead of staying in memory and in ListGroups for ever.
        emptied.extend(
            self.groups
                .keys()
                .filter(|group_id| !self.offsets.has_offsets(group_id))
                .cloned(),
        );
        // An empty group whose offsets all expired is gone (Kafka marks it Dead).
        for group_id in emptied {
            let removable = self.groups.get(&group_id).is_none_or(|g| {
                g.is(GroupState::Empty) && g.members.is_empty() && g.pending_members.is_empty()
            });
            if removable && self.groups.remove(&group_id).is_some() {
                self.records.push(Group::tombstone(&group_id));
            }
            if self
                .consumer_groups
                .get(&group_id)
                .is_some_and(ConsumerGroup::is_empty)
            {
                self.remove_consumer_group(&group_id);
            }
        }
        ctx.timers.schedule(
            GroupTimer::ExpireOffsets,
            ctx.now_ms + self.rules.offsets_retention_check_interval_ms,
        );
    }
}

impl CoordinatorMachine for GroupMachine {
    type TimerKey = GroupTimer;

    fn replay(
        &mut self,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), ReplayError> {
        let refused =
            |what: &str, reason: String| ReplayError(format!("{what} at {offset}: {reason}"));
        let key = key.ok_or_else(|| refused("a record", "no key".to_owned()))?;
        let key = RecordKey::decode(key).map_err(|e| refused("a record key", e.to_string()))?;
        match key {
            RecordKey::OffsetCommit(key) => {
                let value = value
                    .map(OffsetCommitValue::decode)
                    .transpose()
                    .map_err(|e| refused("an offset commit", e.to_string()))?;
                let unknown = !self.groups.contains_key(&key.group)
                    && !self.consumer_groups.contains_key(&key.group);
                if value.is_some() && unknown {
                    // Kafka keeps a group for offsets committed outside group management.
                    self.groups
                        .insert(key.group.clone(), Group::new(&key.group, None));
                }
                self.offsets.apply(offset, &key, value.as_ref());
            }
            // Once loaded, the operation that wrote a group record applied it already.
            RecordKey::GroupMetadata(_) if self.loaded => {}
            RecordKey::GroupMetadata(key) => match value {
                Some(value) => {
                    let value = GroupMetadataValue::decode(value)
                        .map_err(|e| refused("a group record", e.to_string()))?;
                    self.groups
                        .insert(key.group.clone(), Group::from_record(&key.group, value));
                }
                None => {
                    self.groups.remove(&key.group);
                }
            },
            // Share and streams groups: not served by this coordinator.
            RecordKey::Unknown { .. } => {}
            // Once loaded, the operation that wrote a consumer-group record applied it already.
            _ if self.loaded => {}
            key => {
                super::consumer_log::replay(
                    &mut self.consumer_groups,
                    &mut self.groups,
                    &key,
                    value,
                )
                .map_err(|e| refused("a consumer group record", e.to_string()))?;
            }
        }
        Ok(())
    }

    fn replay_transactional(
        &mut self,
        offset: i64,
        producer_id: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), ReplayError> {
        let refused =
            |what: &str, reason: String| ReplayError(format!("{what} at {offset}: {reason}"));
        let key = key.ok_or_else(|| refused("a transactional record", "no key".to_owned()))?;
        let key = RecordKey::decode(key).map_err(|e| refused("a record key", e.to_string()))?;
        let RecordKey::OffsetCommit(key) = key else {
            // Only offset commits are written in transactions.
            return Err(refused(
                "a transactional record",
                "not an offset commit".to_owned(),
            ));
        };
        let value = value
            .map(OffsetCommitValue::decode)
            .transpose()
            .map_err(|e| refused("an offset commit", e.to_string()))?;
        self.pending_txn
            .add(producer_id, offset, &key, value.as_ref());
        Ok(())
    }

    fn replay_marker(
        &mut self,
        _offset: i64,
        producer_id: i64,
        commit: bool,
    ) -> Result<(), ReplayError> {
        self.end_transaction(producer_id, commit);
        Ok(())
    }

    fn on_loaded(&mut self, ctx: &mut OpContext<'_, GroupTimer>) {
        self.loaded = true;
        with_effects!(self, ctx, |groups, _offsets, fx| {
            for group in groups.values() {
                group.on_loaded(&mut fx);
            }
        });
        self.consumer_groups_loaded(ctx);
        ctx.timers.schedule(
            GroupTimer::ExpireOffsets,
            ctx.now_ms + self.rules.offsets_retention_check_interval_ms,
        );
    }

    fn on_timer(
        &mut self,
        key: GroupTimer,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> Vec<CoordinatorRecord> {
        match key {
            GroupTimer::ExpireOffsets => self.expire_offsets(ctx),
            GroupTimer::Heartbeat { group, member } => {
                with_effects!(self, ctx, |groups, _offsets, fx| {
                    if let Some(group) = groups.get_mut(&group) {
                        group.on_heartbeat_timer(&member, &mut fx);
                    }
                })
            }
            GroupTimer::PendingMember { group, member } => {
                with_effects!(self, ctx, |groups, _offsets, fx| {
                    if let Some(group) = groups.get_mut(&group) {
                        group.on_pending_member_timer(&member, &mut fx);
                    }
                })
            }
            GroupTimer::Join { group } => with_effects!(self, ctx, |groups, _offsets, fx| {
                if let Some(group) = groups.get_mut(&group) {
                    group.on_join_timer(&mut fx);
                }
            }),
            GroupTimer::ConsumerSession { group, member } => {
                self.consumer_member_timer(&group, &member, MemberTimer::Session, ctx)
            }
            GroupTimer::ConsumerRevocation { group, member } => {
                self.consumer_member_timer(&group, &member, MemberTimer::Revocation, ctx)
            }
            GroupTimer::ConsumerJoin { group, member } => {
                self.consumer_member_timer(&group, &member, MemberTimer::Join, ctx)
            }
            GroupTimer::ConsumerSync { group, member } => {
                self.consumer_member_timer(&group, &member, MemberTimer::Sync, ctx)
            }
            GroupTimer::Sync { group, generation } => {
                with_effects!(self, ctx, |groups, _offsets, fx| {
                    if let Some(group) = groups.get_mut(&group) {
                        group.on_sync_timer(generation, &mut fx);
                    }
                })
            }
        }
        std::mem::take(&mut self.records)
    }

    fn take_deferred(&mut self) -> Vec<Deferred> {
        std::mem::take(&mut self.deferred)
    }
}

/// Metadata of a protocol, for tests and callers building requests.
pub fn protocol(name: &str, metadata: &[u8]) -> (String, Bytes) {
    (name.to_owned(), Bytes::copy_from_slice(metadata))
}
