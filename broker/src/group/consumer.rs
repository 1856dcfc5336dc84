//! One KIP-848 consumer group (`group.protocol=consumer`): members heartbeat their
//! subscriptions, the coordinator computes the target assignment with a server-side assignor
//! when the group epoch moves, and reconciles each member towards its target one heartbeat at a
//! time: partitions to give up are revoked first (the member keeps its epoch until it confirms),
//! then the member moves to the new epoch with the partitions no other member still holds.
//!
//! Pure: time comes in through [`Effects`](super::classic::Effects), topic metadata through a
//! [`TopicsView`]. What changed is marked in [`Dirty`] for the caller to write as records.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use super::assignor::{self, Assignment, MemberSpec, ASSIGNORS};
use super::classic::{Effects, GroupTimer};
use super::GroupProblem;

/// Topics by name: id and partition count, from the metadata image.
pub type TopicsView = BTreeMap<String, (Uuid, u32)>;

/// Limits from the `[groups]` config.
#[derive(Debug, Clone)]
pub struct ConsumerRules {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
    /// `group.consumer.migration.policy`: which online conversions between the classic and
    /// consumer protocols a non-empty group may go through.
    pub migration: MigrationPolicy,
}

impl Default for ConsumerRules {
    fn default() -> Self {
        ConsumerRules {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: i32::MAX as usize,
            migration: MigrationPolicy::Bidirectional,
        }
    }
}

/// Kafka's `ConsumerGroupMigrationPolicy`: whether a non-empty classic group becomes a
/// consumer group when a member joins it with the consumer protocol (upgrade), and a consumer
/// group back a classic one when its last consumer-protocol member leaves (downgrade). Empty
/// groups convert whatever the policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPolicy {
    Disabled,
    Upgrade,
    Downgrade,
    Bidirectional,
}

impl MigrationPolicy {
    pub fn upgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Upgrade | MigrationPolicy::Bidirectional
        )
    }

    pub fn downgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Downgrade | MigrationPolicy::Bidirectional
        )
    }
}

/// What a member that speaks the classic protocol inside a consumer group joined with (Kafka's
/// `ClassicMemberMetadata`): it is kept so the group can be converted back, and so its
/// SyncGroup answer is written at the version its subscription used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicMeta {
    pub session_timeout_ms: i32,
    /// `(name, metadata)` in the member's order of preference.
    pub protocols: Vec<(String, bytes::Bytes)>,
}

/// Where a member is in its reconciliation (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemberState {
    /// Must give up `pending_revocation` before it moves to the new epoch.
    UnrevokedPartitions,
    /// At the new epoch, waiting for partitions other members still hold.
    UnreleasedPartitions,
    #[default]
    Stable,
}

/// Member epoch of a static member that left temporarily (KIP-848's -2).
pub const LEAVE_STATIC_EPOCH: i32 = -2;
/// Member epoch of a member leaving.
pub const LEAVE_EPOCH: i32 = -1;

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    /// Set while the member speaks the classic protocol (JoinGroup, SyncGroup, Heartbeat).
    pub classic: Option<ClassicMeta>,
}

impl ConsumerMember {
    pub(super) fn new(member_id: &str) -> ConsumerMember {
        ConsumerMember {
            member_id: member_id.to_owned(),
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            subscribed_topic_names: Vec::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            rebalance_timeout_ms: 0,
            member_epoch: 0,
            previous_member_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            classic: None,
        }
    }

    /// How long the member may go without a heartbeat: its own session timeout if it speaks
    /// the classic protocol, the group's otherwise.
    pub fn session_timeout_ms(&self, rules: &ConsumerRules) -> i32 {
        self.classic
            .as_ref()
            .map_or(rules.session_timeout_ms, |c| c.session_timeout_ms)
    }

    /// Whether the member subscribes to `name`, by name or by regex.
    fn subscribes(&self, name: &str, regexes: &HashMap<String, regex::Regex>) -> bool {
        self.subscribed_topic_names.iter().any(|n| n == name)
            || self
                .subscribed_topic_regex
                .as_ref()
                .and_then(|r| regexes.get(r))
                .is_some_and(|r| r.is_match(name))
    }
}

/// A ConsumerGroupHeartbeat as the group sees it.
#[derive(Debug, Clone)]
pub struct ConsumerHeartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns (`None`: unchanged since its last heartbeat).
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeatResponse {
    pub error: Option<GroupProblem>,
    pub error_message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Sent when it changed (or the member's view differs from it).
    pub assignment: Option<Assignment>,
}

impl ConsumerHeartbeatResponse {
    pub fn error(problem: GroupProblem, message: impl Into<String>) -> Self {
        ConsumerHeartbeatResponse {
            error: Some(problem),
            error_message: Some(message.into()),
            member_id: None,
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

/// What a call changed, for the records the caller writes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    pub group_epoch: bool,
    pub subscription_metadata: bool,
    /// Members whose metadata (subscription, ids, timeouts) changed.
    pub members: BTreeSet<String>,
    /// Members whose target assignment changed.
    pub targets: BTreeSet<String>,
    pub assignment_epoch: bool,
    /// Members whose current assignment (epoch, state, partitions) changed.
    pub current: BTreeSet<String>,
    /// Members removed: every record of theirs is deleted.
    pub removed: BTreeSet<String>,
}

/// A KIP-848 consumer group.
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// Instance id → member id.
    pub static_members: HashMap<String, String>,
    pub targets: BTreeMap<String, Assignment>,
    /// The subscribed topics as last seen: name → (id, partitions).
    pub subscription_metadata: TopicsView,
    /// Partition → the member that holds it (assigned or pending revocation).
    pub(super) owners: HashMap<(Uuid, i32), String>,
    /// Compiled subscription regexes (rebuilt as needed).
    regexes: HashMap<String, regex::Regex>,
}

impl ConsumerGroup {
    pub fn new(id: &str) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_owned(),
            ..ConsumerGroup::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kafka's consumer group states.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.member_epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor the group uses: the one most members ask for (ties in Kafka's order),
    /// `uniform` when none asks.
    pub fn preferred_assignor(&self) -> &'static str {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(name) = &member.server_assignor {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        ASSIGNORS
            .iter()
            .find(|name| best > 0 && votes.get(**name) == Some(&best))
            .copied()
            .unwrap_or(ASSIGNORS[0])
    }

    /// Every topic name some member subscribes to (regexes matched against `topics`).
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.subscription_metadata.keys().cloned().collect()
    }

    /// Restores the partition owners after a load.
    pub fn rebuild_owners(&mut self) {
        self.owners.clear();
        for member in self.members.values() {
            for (topic, partitions) in member.assigned.iter().chain(&member.pending_revocation) {
                for p in partitions {
                    self.owners.insert((*topic, *p), member.member_id.clone());
                }
            }
        }
        for member in self.members.values() {
            if let Some(instance) = &member.instance_id {
                self.static_members
                    .insert(instance.clone(), member.member_id.clone());
            }
        }
    }

    pub(super) fn set_holdings(
        &mut self,
        member_id: &str,
        assigned: Assignment,
        pending: Assignment,
    ) {
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        for (topic, partitions) in member.assigned.iter().chain(&member.pending_revocation) {
            for p in partitions {
                if self.owners.get(&(*topic, *p)).map(String::as_str) == Some(member_id) {
                    self.owners.remove(&(*topic, *p));
                }
            }
        }
        for (topic, partitions) in assigned.iter().chain(&pending) {
            for p in partitions {
                self.owners.insert((*topic, *p), member_id.to_owned());
            }
        }
        member.assigned = assigned;
        member.pending_revocation = pending;
    }

    /// Moves the group epoch for a change of membership, subscriptions or metadata: once per
    /// call, as Kafka bumps it once per heartbeat whatever changed in it
    /// (`GroupMetadataManager.consumerGroupHeartbeat`: `bumpGroupEpoch`, then
    /// `groupEpoch += 1`). A join used to move it by three (the member, its subscription, the
    /// subscribed topics). Once the targets of the moved epoch are computed, a further change
    /// moves it again.
    pub(super) fn bump_group_epoch(&mut self, dirty: &mut Dirty) {
        if !dirty.group_epoch || self.assignment_epoch >= self.group_epoch {
            self.group_epoch += 1;
            dirty.group_epoch = true;
        }
    }

    /// Removes a member (it left, was fenced or its session lapsed): its partitions are free and
    /// the group epoch moves so the others' targets are recomputed.
    pub fn remove_member(&mut self, member_id: &str, fx: &mut Effects<'_>, dirty: &mut Dirty) {
        if !self.members.contains_key(member_id) {
            return;
        }
        self.set_holdings(member_id, Assignment::new(), Assignment::new());
        if let Some(member) = self.members.remove(member_id) {
            if let Some(instance) = &member.instance_id {
                if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                    self.static_members.remove(instance);
                }
            }
        }
        self.targets.remove(member_id);
        cancel_member_timers(&self.id, member_id, fx);
        dirty.removed.insert(member_id.to_owned());
        self.bump_group_epoch(dirty);
    }

    /// A ConsumerGroupHeartbeat (already checked for shape by the caller).
    pub fn heartbeat(
        &mut self,
        request: ConsumerHeartbeat,
        topics: &TopicsView,
        rules: &ConsumerRules,
        fx: &mut Effects<'_>,
        dirty: &mut Dirty,
    ) -> ConsumerHeartbeatResponse {
        let epoch = request.member_epoch;
        if epoch == LEAVE_EPOCH || epoch == LEAVE_STATIC_EPOCH {
            return self.leave(request, rules, fx, dirty);
        }
        if let Some(assignor) = &request.server_assignor {
            // Checked by `GroupMachine::consumer_heartbeat` already.
            if !ASSIGNORS.contains(&assignor.as_str()) {
                return ConsumerHeartbeatResponse::error(
                    GroupProblem::UnsupportedAssignor,
                    format!("unknown server assignor {assignor}"),
                );
            }
        }
        let member_id = request.member_id.clone();
        let mut joined = false;
        if epoch == 0 {
            match self.admit(&request, rules, fx, dirty) {
                Ok(()) => joined = true,
                Err(response) => return response,
            }
        } else {
            let Some(member) = self.members.get(&member_id) else {
                return ConsumerHeartbeatResponse::error(
                    GroupProblem::UnknownMemberId,
                    format!("member {member_id} is not in group {}", self.id),
                );
            };
            // Kafka's `throwIfConsumerGroupMemberEpochIsInvalid`: the previous epoch is only
            // accepted (the answer that moved the member on was lost) with owned partitions that
            // are a subset of its assignment; its `isSubset` of none is false.
            let owned_ok = request
                .owned
                .as_ref()
                .is_some_and(|owned| is_subset(owned, &member.assigned));
            // Only an older epoch can be the previous one: a static member that left (-2)
            // heartbeating with the epoch it had is fenced, as in Kafka (its epoch is greater
            // than the member's).
            let known = epoch == member.member_epoch
                || (epoch < member.member_epoch
                    && epoch == member.previous_member_epoch
                    && owned_ok);
            if !known {
                return ConsumerHeartbeatResponse::error(
                    GroupProblem::FencedMemberEpoch,
                    format!(
                        "member epoch {epoch} is fenced, the current one is {}",
                        member.member_epoch
                    ),
                );
            }
        }
        self.update_member(&request, dirty);
        self.refresh_subscriptions(topics, dirty);
        if self.group_epoch > self.assignment_epoch {
            self.compute_targets(dirty);
        }
        let before = self.members.get(&member_id).map(|m| m.assigned.clone());
        self.reconcile(&member_id, request.owned.as_ref(), fx, dirty);
        fx.timers.schedule(
            session_timer(&self.id, &member_id),
            fx.now_ms + i64::from(rules.session_timeout_ms),
        );
        let Some(member) = self.members.get(&member_id) else {
            return ConsumerHeartbeatResponse::error(GroupProblem::UnknownMemberId, "removed");
        };
        let changed = before.as_ref() != Some(&member.assigned);
        let differs = request
            .owned
            .as_ref()
            .is_some_and(|owned| !same(owned, &member.assigned));
        ConsumerHeartbeatResponse {
            error: None,
            error_message: None,
            member_id: Some(member_id.clone()),
            member_epoch: member.member_epoch,
            heartbeat_interval_ms: rules.heartbeat_interval_ms,
            assignment: (joined || changed || differs).then(|| member.assigned.clone()),
        }
    }

    /// A member joining (epoch 0): new, a static member taking its place back, or a known
    /// member that lost its state.
    fn admit(
        &mut self,
        request: &ConsumerHeartbeat,
        rules: &ConsumerRules,
        fx: &mut Effects<'_>,
        dirty: &mut Dirty,
    ) -> Result<(), ConsumerHeartbeatResponse> {
        let member_id = &request.member_id;
        if let Some(instance) = &request.instance_id {
            if let Some(holder) = self.static_members.get(instance).cloned() {
                let holder_epoch = self.members.get(&holder).map(|m| m.member_epoch);
                // A holder that speaks the classic protocol is replaced at once (Kafka checks
                // that the instance was released only between two consumer-protocol members).
                let holder_classic = self
                    .members
                    .get(&holder)
                    .is_some_and(|m| m.classic.is_some());
                if holder != *member_id
                    && holder_epoch != Some(LEAVE_STATIC_EPOCH)
                    && !holder_classic
                {
                    return Err(ConsumerHeartbeatResponse::error(
                        GroupProblem::UnreleasedInstanceId,
                        format!("instance {instance} is still held by member {holder}"),
                    ));
                }
                if holder != *member_id {
                    // The restarted static member takes over its old membership: assignment
                    // and epoch, so nothing moves.
                    if let Some(mut old) = self.members.remove(&holder) {
                        cancel_member_timers(&self.id, &holder, fx);
                        let (assigned, pending) =
                            (old.assigned.clone(), old.pending_revocation.clone());
                        old.member_id = member_id.clone();
                        old.member_epoch = if old.classic.is_some() {
                            old.member_epoch.max(0)
                        } else {
                            old.previous_member_epoch.max(0)
                        };
                        // The new instance speaks the consumer protocol.
                        old.classic = None;
                        if let Some(target) = self.targets.remove(&holder) {
                            self.targets.insert(member_id.clone(), target);
                            dirty.targets.insert(member_id.clone());
                        }
                        for (topic, partitions) in assigned.iter().chain(&pending) {
                            for p in partitions {
                                self.owners.insert((*topic, *p), member_id.clone());
                            }
                        }
                        self.members.insert(member_id.clone(), old);
                        self.static_members
                            .insert(instance.clone(), member_id.clone());
                        dirty.removed.insert(holder);
                        dirty.members.insert(member_id.clone());
                        dirty.current.insert(member_id.clone());
                    }
                    return Ok(());
                }
            }
        }
        match self.members.get(member_id) {
            Some(member) if member.member_epoch == LEAVE_STATIC_EPOCH => {
                // The static member comes back under its own id: it resumes at the epoch it
                // held before leaving.
                let resumed = member.previous_member_epoch.max(0);
                if let Some(member) = self.members.get_mut(member_id) {
                    member.member_epoch = resumed;
                }
                dirty.current.insert(member_id.clone());
            }
            Some(_) => {
                // A member that lost its state joins afresh: it owns nothing any more.
                self.set_holdings(member_id, Assignment::new(), Assignment::new());
                if let Some(member) = self.members.get_mut(member_id) {
                    member.member_epoch = 0;
                    member.previous_member_epoch = -1;
                    member.state = MemberState::Stable;
                }
                dirty.current.insert(member_id.clone());
            }
            None => {
                if self.members.len() >= rules.max_size {
                    return Err(ConsumerHeartbeatResponse::error(
                        GroupProblem::GroupMaxSizeReached,
                        format!("group {} has reached its maximum size", self.id),
                    ));
                }
                let mut member = ConsumerMember::new(member_id);
                member.instance_id = request.instance_id.clone();
                if let Some(instance) = &request.instance_id {
                    self.static_members
                        .insert(instance.clone(), member_id.clone());
                }
                self.members.insert(member_id.clone(), member);
                dirty.members.insert(member_id.clone());
                dirty.current.insert(member_id.clone());
                self.bump_group_epoch(dirty);
            }
        }
        Ok(())
    }

    /// Applies what the heartbeat says about the member; a new subscription moves the epoch.
    fn update_member(&mut self, request: &ConsumerHeartbeat, dirty: &mut Dirty) {
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return;
        };
        let mut subscription_changed = false;
        if let Some(names) = &request.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            if names != member.subscribed_topic_names {
                member.subscribed_topic_names = names;
                subscription_changed = true;
            }
        }
        if let Some(regex) = &request.subscribed_topic_regex {
            let regex = Some(regex.clone()).filter(|r| !r.is_empty());
            if regex != member.subscribed_topic_regex {
                member.subscribed_topic_regex = regex;
                subscription_changed = true;
            }
        }
        let mut changed = subscription_changed;
        let mut set = |field: &mut Option<String>, value: &Option<String>| {
            if value.is_some() && field != value {
                *field = value.clone();
                changed = true;
            }
        };
        set(&mut member.rack_id, &request.rack_id);
        set(&mut member.server_assignor, &request.server_assignor);
        if request.rebalance_timeout_ms > 0
            && request.rebalance_timeout_ms != member.rebalance_timeout_ms
        {
            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
            changed = true;
        }
        if member.client_id != request.client_id || member.client_host != request.client_host {
            member.client_id = request.client_id.clone();
            member.client_host = request.client_host.clone();
            changed = true;
        }
        if changed {
            dirty.members.insert(request.member_id.clone());
        }
        if subscription_changed {
            self.bump_group_epoch(dirty);
        }
    }

    /// Re-reads the subscribed topics from `topics`; a topic created, deleted or grown moves the
    /// epoch.
    pub fn refresh_subscriptions(&mut self, topics: &TopicsView, dirty: &mut Dirty) {
        if self.resolve_subscriptions(topics, dirty) {
            self.bump_group_epoch(dirty);
        }
    }

    /// Sets the subscribed topics from `topics` without moving the epoch; whether they changed.
    /// A group converted from a classic one starts from what its members subscribe to, so
    /// that a static member rejoining with the other protocol moves nothing.
    pub(super) fn resolve_subscriptions(&mut self, topics: &TopicsView, dirty: &mut Dirty) -> bool {
        for member in self.members.values() {
            if let Some(regex) = &member.subscribed_topic_regex {
                if !self.regexes.contains_key(regex) {
                    // Checked by the caller; a regex that still fails matches nothing.
                    if let Ok(compiled) = regex::Regex::new(regex) {
                        self.regexes.insert(regex.clone(), compiled);
                    }
                }
            }
        }
        let subscribed: TopicsView = topics
            .iter()
            .filter(|(name, _)| {
                self.members
                    .values()
                    .any(|member| member.subscribes(name, &self.regexes))
            })
            .map(|(name, meta)| (name.clone(), *meta))
            .collect();
        if subscribed == self.subscription_metadata {
            return false;
        }
        self.subscription_metadata = subscribed;
        dirty.subscription_metadata = true;
        true
    }

    /// The target assignment of the current group epoch.
    pub(super) fn compute_targets(&mut self, dirty: &mut Dirty) {
        let partitions: BTreeMap<Uuid, u32> =
            self.subscription_metadata.values().copied().collect();
        let specs: Vec<MemberSpec<'_>> = self
            .members
            .values()
            .map(|member| MemberSpec {
                member_id: &member.member_id,
                order_key: member.instance_id.as_deref().unwrap_or(&member.member_id),
                topics: self
                    .subscription_metadata
                    .iter()
                    .filter(|(name, _)| member.subscribes(name, &self.regexes))
                    .map(|(_, (id, _))| *id)
                    .collect(),
                previous: self.targets.get(&member.member_id),
            })
            .collect();
        let targets = assignor::assign(self.preferred_assignor(), &specs, &partitions);
        for (member_id, target) in &targets {
            if self.targets.get(member_id) != Some(target) {
                dirty.targets.insert(member_id.clone());
            }
        }
        self.targets = targets;
        self.assignment_epoch = self.group_epoch;
        dirty.assignment_epoch = true;
        super::metrics::rebalanced("consumer");
    }

    /// Moves `member_id` towards its target (Kafka's `CurrentAssignmentBuilder`).
    pub(super) fn reconcile(
        &mut self,
        member_id: &str,
        owned: Option<&Assignment>,
        fx: &mut Effects<'_>,
        dirty: &mut Dirty,
    ) {
        let Some(member) = self.members.get(member_id).cloned() else {
            return;
        };
        if member.state == MemberState::UnrevokedPartitions {
            // It keeps its epoch until it says it no longer owns what it must give up.
            let revoked = owned.is_some_and(|owned| !intersects(owned, &member.pending_revocation));
            if !revoked {
                return;
            }
            self.set_holdings(member_id, member.assigned.clone(), Assignment::new());
            fx.timers.cancel(&revocation_timer(&self.id, member_id));
            dirty.current.insert(member_id.to_owned());
        } else if member.member_epoch == self.assignment_epoch
            && member.state == MemberState::Stable
        {
            return;
        }
        let member = self.members.get(member_id).cloned().unwrap_or(member);
        let target = self.targets.get(member_id).cloned().unwrap_or_default();
        let to_revoke = minus(&member.assigned, &target);
        if !to_revoke.is_empty() {
            let kept = minus(&member.assigned, &to_revoke);
            self.set_holdings(member_id, kept, to_revoke);
            if let Some(m) = self.members.get_mut(member_id) {
                m.state = MemberState::UnrevokedPartitions;
            }
            // A classic member is bounded by its join and sync timers instead, as in Kafka.
            if member.classic.is_none() {
                fx.timers.schedule(
                    revocation_timer(&self.id, member_id),
                    fx.now_ms + i64::from(member.rebalance_timeout_ms.max(1)),
                );
            }
            dirty.current.insert(member_id.to_owned());
            return;
        }
        // Everything it should have that nobody else holds any more.
        let mut assigned = Assignment::new();
        let mut unreleased = false;
        for (topic, partitions) in &target {
            for p in partitions {
                let held_elsewhere = self
                    .owners
                    .get(&(*topic, *p))
                    .is_some_and(|owner| owner != member_id);
                if held_elsewhere {
                    unreleased = true;
                } else {
                    assigned.entry(*topic).or_default().insert(*p);
                }
            }
        }
        let state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        let epoch_moves = member.member_epoch != self.assignment_epoch;
        if assigned != member.assigned || state != member.state || epoch_moves {
            self.set_holdings(member_id, assigned, Assignment::new());
            if let Some(m) = self.members.get_mut(member_id) {
                if epoch_moves {
                    m.previous_member_epoch = m.member_epoch;
                    m.member_epoch = self.assignment_epoch;
                }
                m.state = state;
            }
            dirty.current.insert(member_id.to_owned());
        }
    }

    fn leave(
        &mut self,
        request: ConsumerHeartbeat,
        rules: &ConsumerRules,
        fx: &mut Effects<'_>,
        dirty: &mut Dirty,
    ) -> ConsumerHeartbeatResponse {
        let member_id = request.member_id.clone();
        if !self.members.contains_key(&member_id) {
            return ConsumerHeartbeatResponse::error(
                GroupProblem::UnknownMemberId,
                format!("member {member_id} is not in group {}", self.id),
            );
        }
        let static_leave = request.member_epoch == LEAVE_STATIC_EPOCH
            && self
                .members
                .get(&member_id)
                .is_some_and(|m| m.instance_id.is_some());
        if static_leave {
            // KIP-848: a static member leaving temporarily keeps its assignment for its
            // session; the same instance rejoining takes it back without a rebalance.
            if let Some(member) = self.members.get_mut(&member_id) {
                if member.member_epoch != LEAVE_STATIC_EPOCH {
                    member.previous_member_epoch = member.member_epoch;
                }
                member.member_epoch = LEAVE_STATIC_EPOCH;
            }
            dirty.current.insert(member_id.clone());
            fx.timers.schedule(
                session_timer(&self.id, &member_id),
                fx.now_ms + i64::from(rules.session_timeout_ms),
            );
        } else {
            self.remove_member(&member_id, fx, dirty);
        }
        ConsumerHeartbeatResponse {
            error: None,
            error_message: None,
            member_id: Some(member_id),
            member_epoch: request.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }

    /// The session of a member lapsed.
    pub fn on_session_timer(&mut self, member_id: &str, fx: &mut Effects<'_>, dirty: &mut Dirty) {
        tracing::info!(group = %self.id, member = member_id, "consumer group member session expired");
        self.remove_member(member_id, fx, dirty);
    }

    /// A member did not revoke within its rebalance timeout: it is fenced.
    pub fn on_revocation_timer(
        &mut self,
        member_id: &str,
        fx: &mut Effects<'_>,
        dirty: &mut Dirty,
    ) {
        let unrevoked = self
            .members
            .get(member_id)
            .is_some_and(|m| m.state == MemberState::UnrevokedPartitions);
        if unrevoked {
            tracing::info!(group = %self.id, member = member_id, "member did not revoke its partitions in time");
            self.remove_member(member_id, fx, dirty);
        }
    }

    /// Session timers for every member of a group just loaded, and the revocation timers of
    /// members still revoking (Kafka's `GroupMetadataManager.onLoaded` schedules both; without
    /// the second a member that never revokes would hold its partitions as long as it
    /// heartbeats).
    pub fn on_loaded(&self, rules: &ConsumerRules, fx: &mut Effects<'_>) {
        for (member_id, member) in &self.members {
            fx.timers.schedule(
                session_timer(&self.id, member_id),
                fx.now_ms + i64::from(member.session_timeout_ms(rules)),
            );
            if member.state == MemberState::UnrevokedPartitions && member.classic.is_none() {
                fx.timers.schedule(
                    revocation_timer(&self.id, member_id),
                    fx.now_ms + i64::from(member.rebalance_timeout_ms.max(1)),
                );
            }
        }
    }

    /// Kafka's offset commit check for consumer groups.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        api_version: i16,
    ) -> Result<(), GroupProblem> {
        if member_epoch < 0 && self.members.is_empty() {
            // The admin client, or a consumer outside the group: only for an empty group, whatever
            // member id it sends (Kafka's `ConsumerGroup.validateOffsetCommit`). For a group with
            // members, the lookup below refuses an unknown (or empty) member id.
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(GroupProblem::UnknownMemberId)?;
        // A member speaking the consumer protocol commits with v9+, where the field is its
        // epoch; a classic member's generation is its epoch.
        if member.classic.is_none() && api_version < 9 {
            return Err(GroupProblem::UnsupportedVersion);
        }
        if member_epoch != member.member_epoch {
            return Err(if member.classic.is_some() {
                GroupProblem::IllegalGeneration
            } else {
                GroupProblem::StaleMemberEpoch
            });
        }
        Ok(())
    }
}

pub fn session_timer(group: &str, member: &str) -> GroupTimer {
    GroupTimer::ConsumerSession {
        group: group.to_owned(),
        member: member.to_owned(),
    }
}

pub fn revocation_timer(group: &str, member: &str) -> GroupTimer {
    GroupTimer::ConsumerRevocation {
        group: group.to_owned(),
        member: member.to_owned(),
    }
}

/// A classic member told to rejoin must do so within its rebalance timeout.
pub fn join_timer(group: &str, member: &str) -> GroupTimer {
    GroupTimer::ConsumerJoin {
        group: group.to_owned(),
        member: member.to_owned(),
    }
}

/// A classic member that joined must sync within its rebalance timeout.
pub fn sync_timer(group: &str, member: &str) -> GroupTimer {
    GroupTimer::ConsumerSync {
        group: group.to_owned(),
        member: member.to_owned(),
    }
}

/// Cancels every timer of a member (it left, was replaced or its group converted).
pub fn cancel_member_timers(group: &str, member: &str, fx: &mut Effects<'_>) {
    fx.timers.cancel(&session_timer(group, member));
    fx.timers.cancel(&revocation_timer(group, member));
    fx.timers.cancel(&join_timer(group, member));
    fx.timers.cancel(&sync_timer(group, member));
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter().all(|(topic, partitions)| {
        partitions.is_empty() || b.get(topic).is_some_and(|held| partitions.is_subset(held))
    })
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter().any(|(topic, partitions)| {
        b.get(topic)
            .is_some_and(|other| !partitions.is_disjoint(other))
    })
}

fn same(a: &Assignment, b: &Assignment) -> bool {
    is_subset(a, b) && is_subset(b, a)
}

/// `a` without `b`.
fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(topic, partitions)| {
            let left: BTreeSet<i32> = match b.get(topic) {
                Some(removed) => partitions.difference(removed).copied().collect(),
                None => partitions.clone(),
            };
            (!left.is_empty()).then_some((*topic, left))
        })
        .collect()
}
