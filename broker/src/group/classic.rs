//! One classic group (Kafka's `ClassicGroup`): its members and the rebalance state machine
//! Empty → PreparingRebalance → CompletingRebalance → Stable (and back), with the KIP-394
//! two-step join, static members (KIP-345), generations and protocol selection. The clients'
//! assignors assign; the coordinator only carries the leader's assignment to every member.
//!
//! Everything here is pure: time comes in through [`Effects::now_ms`], and answers to members
//! that wait (JoinGroup, SyncGroup) are sent through [`Effects::defer`], which the shard runs
//! only once the call's records are committed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::records::{GroupMetadataKey, GroupMetadataValue, MemberMetadata, RecordKey};
use super::{GroupProblem, LENGTHS_CHECKED};
use crate::coordinator::{CoordinatorRecord, Deferred, Timers};

/// How long a new member may wait for its first join to complete before it is dropped (Kafka's
/// `newMemberJoinTimeoutMs`): it does not heartbeat until then.
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 300_000;

/// A classic group's state, with Kafka's names (DescribeGroups, ListGroups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A timer of the group coordinator's state machine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupTimer {
    /// A member's session (or a new member's first-join timeout).
    Heartbeat { group: String, member: String },
    /// A KIP-394 pending member that has not joined again with its id.
    PendingMember { group: String, member: String },
    /// The join phase of a rebalance (the initial delay, then the rebalance timeout).
    Join { group: String },
    /// Members that got a join answer but have not synced by the rebalance timeout.
    Sync { group: String, generation: i32 },
    /// Removal of expired offsets, over the whole partition.
    ExpireOffsets,
    /// A KIP-848 member's session.
    ConsumerSession { group: String, member: String },
    /// A KIP-848 member that must revoke partitions within its rebalance timeout.
    ConsumerRevocation { group: String, member: String },
    /// A classic member of a consumer group told to rejoin, within its rebalance timeout.
    ConsumerJoin { group: String, member: String },
    /// A classic member of a consumer group that joined, until it syncs.
    ConsumerSync { group: String, member: String },
}

/// Limits from the broker's `[groups]` config.
#[derive(Debug, Clone)]
pub struct GroupRules {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub max_size: usize,
    pub initial_rebalance_delay_ms: i32,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: i64,
    pub offset_metadata_max_bytes: usize,
}

impl GroupRules {
    pub fn from_config(config: &crate::config::GroupsConfig) -> GroupRules {
        let ms = |value: u64| i32::try_from(value).unwrap_or(i32::MAX);
        GroupRules {
            min_session_timeout_ms: ms(config.group_min_session_timeout_ms),
            max_session_timeout_ms: ms(config.group_max_session_timeout_ms),
            max_size: config.group_max_size as usize,
            initial_rebalance_delay_ms: ms(config.group_initial_rebalance_delay_ms),
            offsets_retention_ms: config.offsets_retention_ms(),
            offsets_retention_check_interval_ms: i64::try_from(
                config.offsets_retention_check_interval_ms,
            )
            .unwrap_or(i64::MAX),
            offset_metadata_max_bytes: config.offset_metadata_max_bytes,
        }
    }
}

impl Default for GroupRules {
    fn default() -> Self {
        GroupRules::from_config(&crate::config::GroupsConfig::default())
    }
}

/// What an operation on a group may do besides changing it: read the time, set timers, write
/// records and answer waiting members once those are committed.
pub struct Effects<'a> {
    pub now_ms: i64,
    pub timers: &'a mut Timers<GroupTimer>,
    pub records: &'a mut Vec<CoordinatorRecord>,
    pub deferred: &'a mut Vec<Deferred>,
    pub rules: &'a GroupRules,
}

impl std::fmt::Debug for Effects<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects")
            .field("now_ms", &self.now_ms)
            .field("records", &self.records.len())
            .field("deferred", &self.deferred.len())
            .finish()
    }
}

impl Effects<'_> {
    /// Sends `value` on `sender` once this call's records are committed.
    pub fn defer<T: Send + 'static>(&mut self, sender: oneshot::Sender<T>, value: T) {
        self.deferred.push(Box::new(move || {
            // The requester may have gone (its connection closed): nothing to tell.
            let _ = sender.send(value);
        }));
    }
}

/// An answer now, or one a member waits for (the channel closes unanswered if the coordinator
/// resigns first).
#[derive(Debug)]
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A JoinGroup as the group sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// `(name, metadata)` in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a dynamic member without an id gets one and must join again with it.
    pub require_known_member_id: bool,
    /// The id a member without one gets (made by the caller: `client.id` or
    /// `group.instance.id`, a dash, a UUID).
    pub new_member_id: String,
}

/// A member as the leader's JoinGroup answer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<GroupProblem>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinedMember>,
    /// KIP-814: a static leader that rejoined gets the members but must not reassign.
    pub skip_assignment: bool,
}

impl JoinResponse {
    pub fn error(problem: GroupProblem, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: Some(problem),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// v5+: checked against the group's when given.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment, by member id.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<GroupProblem>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(problem: GroupProblem) -> SyncResponse {
        SyncResponse {
            error: Some(problem),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A member of a consumer group that becomes a classic group's member.
#[derive(Debug, Clone)]
pub struct CarriedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
}

/// One member of a classic group.
#[derive(Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Order of joining, for Kafka's choice of a new leader (the oldest member).
    joined_seq: u64,
    awaiting_join: Option<oneshot::Sender<JoinResponse>>,
    awaiting_sync: Option<oneshot::Sender<SyncResponse>>,
    /// Joined but not yet through a join phase: it does not heartbeat yet.
    is_new: bool,
}

impl Member {
    pub fn is_awaiting_join(&self) -> bool {
        self.awaiting_join.is_some()
    }

    pub fn is_awaiting_sync(&self) -> bool {
        self.awaiting_sync.is_some()
    }

    /// The member's metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// Whether the member's protocols are exactly `protocols` (names, order and metadata).
    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

/// A classic group.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    /// When the group entered its state (Kafka's `currentStateTimestamp`): the base of offset
    /// expiry once it is empty.
    pub state_timestamp_ms: Option<i64>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, not joined with yet.
    pub pending_members: BTreeSet<String>,
    /// `group.instance.id` → member id.
    pub static_members: HashMap<String, String>,
    /// Members that got this generation's join answer and have not synced yet.
    pending_sync: BTreeSet<String>,
    /// A member joined during the first rebalance's initial delay: the delay is extended.
    new_member_added: bool,
    /// While the first rebalance of an empty group waits (`group.initial.rebalance.delay.ms`):
    /// what is left of the rebalance timeout after the current delay.
    initial_delay_remaining_ms: Option<i32>,
    next_seq: u64,
}

impl Group {
    /// An empty group; `state_timestamp_ms` is when it came to be, if known (a group rebuilt
    /// from its offsets alone has none, and its offsets then expire from their commits).
    pub fn new(id: &str, state_timestamp_ms: Option<i64>) -> Group {
        Group {
            id: id.to_owned(),
            state: GroupState::Empty,
            state_timestamp_ms,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            pending_members: BTreeSet::new(),
            static_members: HashMap::new(),
            pending_sync: BTreeSet::new(),
            new_member_added: false,
            initial_delay_remaining_ms: None,
            next_seq: 0,
        }
    }

    /// The group as its `GroupMetadata` record holds it (members without waiting parts), in a
    /// Stable state if it has members, as Kafka loads it.
    pub fn from_record(id: &str, value: GroupMetadataValue) -> Group {
        let mut group = Group::new(
            id,
            (value.current_state_timestamp >= 0).then_some(value.current_state_timestamp),
        );
        group.generation_id = value.generation;
        group.protocol_type = Some(value.protocol_type).filter(|t| !t.is_empty());
        group.protocol_name = value.protocol.clone();
        group.leader_id = value.leader;
        for member in value.members {
            let protocol = value.protocol.clone().unwrap_or_default();
            let seq = group.next_seq;
            group.next_seq += 1;
            if let Some(instance) = &member.group_instance_id {
                group
                    .static_members
                    .insert(instance.clone(), member.member_id.clone());
            }
            group.members.insert(
                member.member_id.clone(),
                Member {
                    member_id: member.member_id,
                    group_instance_id: member.group_instance_id,
                    client_id: member.client_id,
                    client_host: member.client_host,
                    rebalance_timeout_ms: member.rebalance_timeout,
                    session_timeout_ms: member.session_timeout,
                    protocol_type: group.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol, member.subscription)],
                    assignment: member.assignment,
                    joined_seq: seq,
                    awaiting_join: None,
                    awaiting_sync: None,
                    is_new: false,
                },
            );
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group
    }

    /// A Stable group of the consumer protocol made of members carried over from a consumer
    /// group (Kafka's `ClassicGroup.fromConsumerGroup`): the first member leads, the protocol
    /// is the members' vote, and each member's assignment is set by the caller.
    pub fn converted(
        id: &str,
        generation_id: i32,
        now_ms: i64,
        members: Vec<CarriedMember>,
    ) -> Group {
        let mut group = Group::new(id, Some(now_ms));
        group.generation_id = generation_id;
        group.protocol_type = Some("consumer".to_owned());
        for carried in members {
            let seq = group.next_seq;
            group.next_seq += 1;
            if let Some(instance) = &carried.group_instance_id {
                group
                    .static_members
                    .insert(instance.clone(), carried.member_id.clone());
            }
            if group.leader_id.is_none() {
                group.leader_id = Some(carried.member_id.clone());
            }
            group.members.insert(
                carried.member_id.clone(),
                Member {
                    member_id: carried.member_id,
                    group_instance_id: carried.group_instance_id,
                    client_id: carried.client_id,
                    client_host: carried.client_host,
                    rebalance_timeout_ms: carried.rebalance_timeout_ms,
                    session_timeout_ms: carried.session_timeout_ms,
                    protocol_type: "consumer".to_owned(),
                    protocols: carried.protocols,
                    assignment: Bytes::new(),
                    joined_seq: seq,
                    awaiting_join: None,
                    awaiting_sync: None,
                    is_new: false,
                },
            );
        }
        group.protocol_name = group.select_protocol();
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group
    }

    /// Starts a rebalance of a group just converted from a consumer group, whose members learn
    /// it from their next heartbeat.
    pub fn rebalance_converted(&mut self, fx: &mut Effects<'_>) {
        if self.is(GroupState::Stable) {
            self.prepare_rebalance(fx);
        }
    }

    /// Cancels every timer of the group (it becomes a consumer group).
    pub fn cancel_timers(&self, fx: &mut Effects<'_>) {
        let group = self.id.clone();
        for member in self.members.keys() {
            fx.timers.cancel(&GroupTimer::Heartbeat {
                group: group.clone(),
                member: member.clone(),
            });
        }
        for member in &self.pending_members {
            fx.timers.cancel(&GroupTimer::PendingMember {
                group: group.clone(),
                member: member.clone(),
            });
        }
        fx.timers.cancel(&GroupTimer::Join {
            group: group.clone(),
        });
        fx.timers.cancel(&GroupTimer::Sync {
            group,
            generation: self.generation_id,
        });
    }

    /// The `GroupMetadata` record of the group as it is now.
    pub fn record(&self, now_ms: i64) -> CoordinatorRecord {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let value = GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp: self.state_timestamp_ms.unwrap_or(now_ms),
            members: self
                .members
                .values()
                .map(|member| MemberMetadata {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout: member.rebalance_timeout_ms,
                    session_timeout: member.session_timeout_ms,
                    subscription: member.metadata(&protocol),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        };
        let key = RecordKey::GroupMetadata(GroupMetadataKey {
            group: self.id.clone(),
        });
        CoordinatorRecord::new(
            key.encode().expect(LENGTHS_CHECKED),
            value.encode().expect(LENGTHS_CHECKED),
        )
    }

    /// The tombstone of the group's `GroupMetadata` record.
    pub fn tombstone(id: &str) -> CoordinatorRecord {
        let key = RecordKey::GroupMetadata(GroupMetadataKey {
            group: id.to_owned(),
        });
        CoordinatorRecord::tombstone(key.encode().expect(LENGTHS_CHECKED))
    }

    pub fn is(&self, state: GroupState) -> bool {
        self.state == state
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = Some(now_ms);
    }

    /// The longest rebalance timeout of the members: how long a join phase may take.
    fn rebalance_timeout_ms(&self) -> i32 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// The protocols every member supports, as a count per name.
    fn supported_by_all(&self) -> BTreeSet<&str> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            for (name, _) in &member.protocols {
                *counts.entry(name.as_str()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .filter(|(_, count)| *count == self.members.len())
            .map(|(name, _)| name)
            .collect()
    }

    /// Kafka's `supportsProtocols`: a first member needs a type and at least one protocol; later
    /// ones the group's type and one protocol every member has.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let common = self.supported_by_all();
        protocols
            .iter()
            .any(|(name, _)| common.contains(name.as_str()))
    }

    /// Kafka's vote: each member picks its most preferred protocol among those every member
    /// supports; the most picked wins (ties go to the one the oldest member prefers).
    fn select_protocol(&self) -> Option<String> {
        let common = self.supported_by_all();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| common.contains(name.as_str()))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        let oldest = self.members.values().min_by_key(|m| m.joined_seq)?;
        oldest
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .find(|name| votes.get(name) == Some(&best))
            .map(str::to_owned)
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(Member::is_awaiting_join)
    }

    /// Kafka's `validateMember`: a static member must hold its instance id; any member must
    /// exist.
    pub fn validate_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupProblem> {
        if let Some(instance) = group_instance_id {
            match self.static_members.get(instance) {
                Some(holder) if holder == member_id => {}
                Some(_) => return Err(GroupProblem::FencedInstanceId),
                None => return Err(GroupProblem::UnknownMemberId),
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(GroupProblem::UnknownMemberId)
        }
    }

    // ---------------------------------------------------------------- JoinGroup

    pub fn join(&mut self, request: JoinRequest, fx: &mut Effects<'_>) -> Reply<JoinResponse> {
        let error = |problem| Reply::Now(JoinResponse::error(problem, &request.member_id));
        if request.session_timeout_ms < fx.rules.min_session_timeout_ms
            || request.session_timeout_ms > fx.rules.max_session_timeout_ms
        {
            return error(GroupProblem::InvalidSessionTimeout);
        }
        if self.is(GroupState::Dead) {
            return error(GroupProblem::CoordinatorNotAvailable);
        }
        if !self.supports_protocols(&request.protocol_type, &request.protocols) {
            return error(GroupProblem::InconsistentGroupProtocol);
        }
        if request.member_id.is_empty() {
            return self.join_new_member(request, fx);
        }
        if self.pending_members.remove(&request.member_id) {
            fx.timers.cancel(&GroupTimer::PendingMember {
                group: self.id.clone(),
                member: request.member_id.clone(),
            });
            let member_id = request.member_id.clone();
            return self.add_member_and_rebalance(member_id, request, fx);
        }
        if let Err(problem) =
            self.validate_member(&request.member_id, request.group_instance_id.as_deref())
        {
            return error(problem);
        }
        let member_id = request.member_id.clone();
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(&member_id, request, fx)
            }
            GroupState::CompletingRebalance => {
                let same = self.members[&member_id].same_protocols(&request.protocols);
                if same {
                    // A resent join (the answer was lost): the same answer again.
                    Reply::Now(self.join_answer(&member_id, false))
                } else {
                    self.update_member_and_rebalance(&member_id, request, fx)
                }
            }
            GroupState::Stable => {
                let member = &self.members[&member_id];
                let is_leader = self.leader_id.as_deref() == Some(member_id.as_str());
                if is_leader || !member.same_protocols(&request.protocols) {
                    self.update_member_and_rebalance(&member_id, request, fx)
                } else {
                    // A follower with nothing new: its current generation, no rebalance.
                    Reply::Now(self.join_answer(&member_id, false))
                }
            }
            GroupState::Empty | GroupState::Dead => error(GroupProblem::UnknownMemberId),
        }
    }

    /// A join without a member id.
    fn join_new_member(
        &mut self,
        request: JoinRequest,
        fx: &mut Effects<'_>,
    ) -> Reply<JoinResponse> {
        let new_id = request.new_member_id.clone();
        let replaces = request.group_instance_id.as_ref().and_then(|instance| {
            Some((instance.clone(), self.static_members.get(instance)?.clone()))
        });
        if let Some((instance, old_id)) = replaces {
            // A restarted static member takes its own place: the group does not grow.
            return self.replace_static_member(&instance, &old_id, request, fx);
        }
        // `group.max.size` counts members and KIP-394 pending ones; members already in the
        // group (rejoining with their id) are never refused.
        if self.members.len() + self.pending_members.len() >= fx.rules.max_size {
            return Reply::Now(JoinResponse::error(
                GroupProblem::GroupMaxSizeReached,
                &request.member_id,
            ));
        }
        if request.group_instance_id.is_some() {
            return self.add_member_and_rebalance(new_id, request, fx);
        }
        if request.require_known_member_id {
            // KIP-394: the id is remembered for one session timeout; the member joins again
            // with it, so a client that never does leaves no member behind.
            self.pending_members.insert(new_id.clone());
            fx.timers.schedule(
                GroupTimer::PendingMember {
                    group: self.id.clone(),
                    member: new_id.clone(),
                },
                fx.now_ms + i64::from(request.session_timeout_ms),
            );
            return Reply::Now(JoinResponse::error(GroupProblem::MemberIdRequired, &new_id));
        }
        self.add_member_and_rebalance(new_id, request, fx)
    }

    /// A static member rejoining without its member id (it restarted): it takes over its old
    /// membership under a new id, and the old holder is fenced. A stable group does not
    /// rebalance for it unless the protocol the group would select changed.
    fn replace_static_member(
        &mut self,
        instance: &str,
        old_id: &str,
        request: JoinRequest,
        fx: &mut Effects<'_>,
    ) -> Reply<JoinResponse> {
        let new_id = request.new_member_id.clone();
        let Some(mut member) = self.members.remove(old_id) else {
            self.static_members.remove(instance);
            return self.add_member_and_rebalance(new_id, request, fx);
        };
        if let Some(waiting) = member.awaiting_join.take() {
            fx.defer(
                waiting,
                JoinResponse::error(GroupProblem::FencedInstanceId, old_id),
            );
        }
        if let Some(waiting) = member.awaiting_sync.take() {
            fx.defer(waiting, SyncResponse::error(GroupProblem::FencedInstanceId));
        }
        fx.timers.cancel(&GroupTimer::Heartbeat {
            group: self.id.clone(),
            member: old_id.to_owned(),
        });
        // Kafka's `updateStaticMemberAndRebalance`: the member's new protocols are kept, and a
        // stable group rebalances only if they change the protocol the group would select. The
        // metadata itself may differ (a restarted consumer owns nothing and has no generation
        // yet) without moving any partition.
        member.protocols.clone_from(&request.protocols);
        member.member_id = new_id.clone();
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        self.members.insert(new_id.clone(), member);
        self.static_members
            .insert(instance.to_owned(), new_id.clone());
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        let was_leader = self.leader_id.as_deref() == Some(old_id);
        if was_leader {
            self.leader_id = Some(new_id.clone());
        }
        let protocol_kept = self.select_protocol() == self.protocol_name;
        match self.state {
            GroupState::Stable if protocol_kept => {
                self.schedule_heartbeat(&new_id, fx);
                // The new id must survive a failover: the member's assignment stays, so the
                // group is written as it is now.
                fx.records.push(self.record(fx.now_ms));
                let (answer, waiting) = oneshot::channel();
                let response = self.join_answer(&new_id, was_leader);
                fx.defer(answer, response);
                Reply::Later(waiting)
            }
            _ => self.update_member_and_rebalance(&new_id, request, fx),
        }
    }

    /// The join answer of the current generation for `member_id` (the leader gets the members).
    fn join_answer(&self, member_id: &str, skip_assignment: bool) -> JoinResponse {
        let is_leader = self.leader_id.as_deref() == Some(member_id);
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if is_leader {
            let mut members: Vec<&Member> = self.members.values().collect();
            members.sort_by_key(|m| m.joined_seq);
            members
                .into_iter()
                .map(|m| JoinedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members,
            skip_assignment,
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        request: JoinRequest,
        fx: &mut Effects<'_>,
    ) -> Reply<JoinResponse> {
        let (answer, waiting) = oneshot::channel();
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                member_id: member_id.clone(),
                group_instance_id: request.group_instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                session_timeout_ms: request.session_timeout_ms,
                protocol_type: request.protocol_type,
                protocols: request.protocols,
                assignment: Bytes::new(),
                joined_seq: seq,
                awaiting_join: Some(answer),
                awaiting_sync: None,
                is_new: true,
            },
        );
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id.clone());
        }
        // Kafka extends the initial delay of any rebalance that started from Empty
        // (`previousState() == EMPTY`), not only a new group's first one.
        if self.is(GroupState::PreparingRebalance) && self.initial_delay_remaining_ms.is_some() {
            self.new_member_added = true;
        }
        // A new member does not heartbeat until its join completes: it is dropped if that
        // takes too long.
        fx.timers.schedule(
            GroupTimer::Heartbeat {
                group: self.id.clone(),
                member: member_id,
            },
            fx.now_ms + NEW_MEMBER_JOIN_TIMEOUT_MS,
        );
        self.maybe_prepare_rebalance(fx);
        Reply::Later(waiting)
    }

    fn update_member_and_rebalance(
        &mut self,
        member_id: &str,
        request: JoinRequest,
        fx: &mut Effects<'_>,
    ) -> Reply<JoinResponse> {
        let (answer, waiting) = oneshot::channel();
        let Some(member) = self.members.get_mut(member_id) else {
            return Reply::Now(JoinResponse::error(
                GroupProblem::UnknownMemberId,
                member_id,
            ));
        };
        member.protocols = request.protocols;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        if let Some(previous) = member.awaiting_join.replace(answer) {
            fx.defer(
                previous,
                JoinResponse::error(GroupProblem::RebalanceInProgress, member_id),
            );
        }
        self.maybe_prepare_rebalance(fx);
        Reply::Later(waiting)
    }

    /// Starts a rebalance unless one is in its join phase already, where the join may now be
    /// complete.
    fn maybe_prepare_rebalance(&mut self, fx: &mut Effects<'_>) {
        match self.state {
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(fx)
            }
            GroupState::PreparingRebalance => self.try_complete_join(fx),
            GroupState::Dead => {}
        }
    }

    fn prepare_rebalance(&mut self, fx: &mut Effects<'_>) {
        if self.is(GroupState::CompletingRebalance) {
            // The leader's assignment of this generation will never come: members waiting for
            // it learn a rebalance started.
            let mut answered = Vec::new();
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiting) = member.awaiting_sync.take() {
                    fx.defer(
                        waiting,
                        SyncResponse::error(GroupProblem::RebalanceInProgress),
                    );
                    answered.push(member.member_id.clone());
                }
            }
            // As Kafka's `propagateAssignment`: a session that lapsed while the member waited
            // was ignored, so it starts again from the answer (else the member never expires).
            for member_id in &answered {
                self.schedule_heartbeat(member_id, fx);
            }
        }
        self.pending_sync.clear();
        let timeout = self.rebalance_timeout_ms();
        let delay = fx.rules.initial_rebalance_delay_ms;
        let join_deadline_ms = if self.is(GroupState::Empty) && delay > 0 {
            let first = delay.min(timeout);
            self.initial_delay_remaining_ms = Some(timeout.saturating_sub(first));
            self.new_member_added = false;
            fx.now_ms + i64::from(first)
        } else {
            self.initial_delay_remaining_ms = None;
            fx.now_ms + i64::from(timeout)
        };
        fx.timers.schedule(
            GroupTimer::Join {
                group: self.id.clone(),
            },
            join_deadline_ms,
        );
        self.transition(GroupState::PreparingRebalance, fx.now_ms);
        if self.initial_delay_remaining_ms.is_none() {
            self.try_complete_join(fx);
        }
    }

    fn try_complete_join(&mut self, fx: &mut Effects<'_>) {
        if self.is(GroupState::PreparingRebalance)
            && self.initial_delay_remaining_ms.is_none()
            && self.all_members_joined()
        {
            fx.timers.cancel(&GroupTimer::Join {
                group: self.id.clone(),
            });
            self.complete_join(fx);
        }
    }

    /// The join timer fired: the initial delay is extended while members keep arriving, then
    /// the join phase completes with the members that joined.
    pub fn on_join_timer(&mut self, fx: &mut Effects<'_>) {
        if !self.is(GroupState::PreparingRebalance) {
            return;
        }
        if let Some(remaining) = self.initial_delay_remaining_ms {
            if self.new_member_added && remaining > 0 {
                self.new_member_added = false;
                let next = fx.rules.initial_rebalance_delay_ms.min(remaining);
                self.initial_delay_remaining_ms = Some(remaining - next);
                fx.timers.schedule(
                    GroupTimer::Join {
                        group: self.id.clone(),
                    },
                    fx.now_ms + i64::from(next),
                );
                return;
            }
            self.initial_delay_remaining_ms = None;
        }
        self.complete_join(fx);
    }

    /// Ends the join phase: members that did not join again are removed (dynamic ones; static
    /// ones wait for their session to lapse), and the next generation starts.
    fn complete_join(&mut self, fx: &mut Effects<'_>) {
        let absent: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.is_awaiting_join() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in absent {
            self.remove_member(&member_id, fx);
        }
        if self.members.is_empty() {
            self.generation_id += 1;
            self.protocol_name = None;
            self.leader_id = None;
            self.transition(GroupState::Empty, fx.now_ms);
            fx.records.push(self.record(fx.now_ms));
            return;
        }
        if !self.elect_joined_leader() {
            // Only static members that have not rejoined are left: wait for them (or for their
            // sessions to lapse) for another rebalance timeout.
            fx.timers.schedule(
                GroupTimer::Join {
                    group: self.id.clone(),
                },
                fx.now_ms + i64::from(self.rebalance_timeout_ms()),
            );
            return;
        }
        self.generation_id += 1;
        self.protocol_name = self.select_protocol();
        self.transition(GroupState::CompletingRebalance, fx.now_ms);
        super::metrics::rebalanced("classic");
        let joined: Vec<String> = self
            .members
            .values()
            .filter(|m| m.is_awaiting_join())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in &joined {
            let response = self.join_answer(member_id, false);
            if let Some(member) = self.members.get_mut(member_id) {
                member.is_new = false;
                if let Some(waiting) = member.awaiting_join.take() {
                    fx.defer(waiting, response);
                }
            }
            self.schedule_heartbeat(member_id, fx);
        }
        self.pending_sync = joined.into_iter().collect();
        fx.timers.schedule(
            GroupTimer::Sync {
                group: self.id.clone(),
                generation: self.generation_id,
            },
            fx.now_ms + i64::from(self.rebalance_timeout_ms()),
        );
    }

    /// Keeps the leader if it joined, else makes the oldest joined member leader; false if no
    /// member joined.
    fn elect_joined_leader(&mut self) -> bool {
        let leader_joined = self
            .leader_id
            .as_ref()
            .and_then(|id| self.members.get(id))
            .is_some_and(Member::is_awaiting_join);
        if leader_joined {
            return true;
        }
        let oldest_joined = self
            .members
            .values()
            .filter(|m| m.is_awaiting_join())
            .min_by_key(|m| m.joined_seq)
            .map(|m| m.member_id.clone());
        match oldest_joined {
            Some(id) => {
                self.leader_id = Some(id);
                true
            }
            None => false,
        }
    }

    fn schedule_heartbeat(&self, member_id: &str, fx: &mut Effects<'_>) {
        if let Some(member) = self.members.get(member_id) {
            fx.timers.schedule(
                GroupTimer::Heartbeat {
                    group: self.id.clone(),
                    member: member_id.to_owned(),
                },
                fx.now_ms + i64::from(member.session_timeout_ms),
            );
        }
    }

    /// Removes a member: whatever it waits for is answered UNKNOWN_MEMBER_ID, and a new leader
    /// is picked (the oldest member) if it led.
    fn remove_member(&mut self, member_id: &str, fx: &mut Effects<'_>) {
        let Some(mut member) = self.members.remove(member_id) else {
            return;
        };
        fx.timers.cancel(&GroupTimer::Heartbeat {
            group: self.id.clone(),
            member: member_id.to_owned(),
        });
        if let Some(waiting) = member.awaiting_join.take() {
            fx.defer(
                waiting,
                JoinResponse::error(GroupProblem::UnknownMemberId, member_id),
            );
        }
        if let Some(waiting) = member.awaiting_sync.take() {
            fx.defer(waiting, SyncResponse::error(GroupProblem::UnknownMemberId));
        }
        if let Some(instance) = &member.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.pending_sync.remove(member_id);
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = self
                .members
                .values()
                .min_by_key(|m| m.joined_seq)
                .map(|m| m.member_id.clone());
        }
    }

    /// Removes a member and moves the group on: a stable or completing group rebalances, a
    /// preparing one may now complete its join.
    pub fn remove_member_and_update(&mut self, member_id: &str, fx: &mut Effects<'_>) {
        self.remove_member(member_id, fx);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(fx),
            GroupState::PreparingRebalance => self.try_complete_join(fx),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---------------------------------------------------------------- timers

    /// A member's heartbeat timer fired: a member waiting for a join or sync answer is alive by
    /// definition (unless it is new and its first join took too long); anyone else missed its
    /// session.
    pub fn on_heartbeat_timer(&mut self, member_id: &str, fx: &mut Effects<'_>) {
        let Some(member) = self.members.get(member_id) else {
            return;
        };
        let waiting = member.awaiting_join.is_some() || member.awaiting_sync.is_some();
        if waiting && !member.is_new {
            return;
        }
        tracing::info!(group = %self.id, member = member_id, "member session expired");
        self.remove_member_and_update(member_id, fx);
    }

    pub fn on_pending_member_timer(&mut self, member_id: &str, fx: &mut Effects<'_>) {
        if self.pending_members.remove(member_id) {
            self.try_complete_join(fx);
        }
    }

    /// Members that got the join answer of `generation` but never synced are removed, and the
    /// group rebalances without them.
    pub fn on_sync_timer(&mut self, generation: i32, fx: &mut Effects<'_>) {
        if generation != self.generation_id
            || !matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            )
            || self.pending_sync.is_empty()
        {
            return;
        }
        let missing: Vec<String> = self.pending_sync.iter().cloned().collect();
        tracing::info!(group = %self.id, ?missing, "members did not sync in time");
        for member_id in missing {
            self.remove_member(&member_id, fx);
        }
        // With no member left the join phase completes at once and the group becomes Empty.
        self.prepare_rebalance(fx);
    }

    // ---------------------------------------------------------------- SyncGroup

    pub fn sync(&mut self, request: SyncRequest, fx: &mut Effects<'_>) -> Reply<SyncResponse> {
        let error = |problem| Reply::Now(SyncResponse::error(problem));
        if self.is(GroupState::Dead) {
            return error(GroupProblem::CoordinatorNotAvailable);
        }
        if let Err(problem) =
            self.validate_member(&request.member_id, request.group_instance_id.as_deref())
        {
            return error(problem);
        }
        if request.generation_id != self.generation_id {
            return error(GroupProblem::IllegalGeneration);
        }
        let type_differs = request
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_differs = request
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != self.protocol_name.as_ref());
        if type_differs || name_differs {
            return error(GroupProblem::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty => error(GroupProblem::UnknownMemberId),
            GroupState::PreparingRebalance => error(GroupProblem::RebalanceInProgress),
            GroupState::Dead => error(GroupProblem::CoordinatorNotAvailable),
            GroupState::Stable => {
                self.pending_sync.remove(&request.member_id);
                self.schedule_heartbeat(&request.member_id, fx);
                let member = &self.members[&request.member_id];
                Reply::Now(self.sync_answer(member.assignment.clone()))
            }
            GroupState::CompletingRebalance => {
                let (answer, waiting) = oneshot::channel();
                self.pending_sync.remove(&request.member_id);
                self.schedule_heartbeat(&request.member_id, fx);
                if let Some(member) = self.members.get_mut(&request.member_id) {
                    if let Some(previous) = member.awaiting_sync.replace(answer) {
                        fx.defer(
                            previous,
                            SyncResponse::error(GroupProblem::RebalanceInProgress),
                        );
                    }
                }
                if self.leader_id.as_deref() == Some(request.member_id.as_str()) {
                    self.apply_assignment(request.assignments, fx);
                }
                Reply::Later(waiting)
            }
        }
    }

    fn sync_answer(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    /// The leader's assignment: every member gets its part (members it left out get nothing),
    /// the group becomes Stable and is written; the waiting members are answered once that
    /// record is committed.
    fn apply_assignment(&mut self, assignments: Vec<(String, Bytes)>, fx: &mut Effects<'_>) {
        let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
        for member in self.members.values_mut() {
            member.assignment = assignments.remove(&member.member_id).unwrap_or_default();
        }
        self.transition(GroupState::Stable, fx.now_ms);
        fx.records.push(self.record(fx.now_ms));
        let waiting: Vec<(String, oneshot::Sender<SyncResponse>, Bytes)> = self
            .members
            .values_mut()
            .filter_map(|m| {
                let answer = m.awaiting_sync.take()?;
                Some((m.member_id.clone(), answer, m.assignment.clone()))
            })
            .collect();
        for (member_id, answer, assignment) in waiting {
            let response = self.sync_answer(assignment);
            fx.defer(answer, response);
            // As Kafka's `propagateAssignment`: a session that lapsed while the member waited
            // was ignored, so it starts again from the answer (else the member never expires).
            self.schedule_heartbeat(&member_id, fx);
        }
    }

    // ---------------------------------------------------------------- Heartbeat, LeaveGroup

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        fx: &mut Effects<'_>,
    ) -> Result<(), GroupProblem> {
        if self.is(GroupState::Dead) {
            return Err(GroupProblem::CoordinatorNotAvailable);
        }
        self.validate_member(member_id, group_instance_id)?;
        if generation_id != self.generation_id {
            return Err(GroupProblem::IllegalGeneration);
        }
        match self.state {
            GroupState::Empty => Err(GroupProblem::UnknownMemberId),
            GroupState::Dead => Err(GroupProblem::CoordinatorNotAvailable),
            GroupState::PreparingRebalance => {
                self.schedule_heartbeat(member_id, fx);
                Err(GroupProblem::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.schedule_heartbeat(member_id, fx);
                Ok(())
            }
        }
    }

    /// One member of a LeaveGroup: by instance id (static) or member id.
    pub fn leave(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        fx: &mut Effects<'_>,
    ) -> Result<(), GroupProblem> {
        if self.is(GroupState::Dead) {
            return Err(GroupProblem::CoordinatorNotAvailable);
        }
        if let Some(instance) = group_instance_id {
            let holder = self
                .static_members
                .get(instance)
                .cloned()
                .ok_or(GroupProblem::UnknownMemberId)?;
            // A member id of "" leaves by instance id alone (the admin's removeMembersFromGroup).
            if !member_id.is_empty() && holder != member_id {
                return Err(GroupProblem::FencedInstanceId);
            }
            self.remove_member_and_update(&holder, fx);
            return Ok(());
        }
        if self.pending_members.remove(member_id) {
            fx.timers.cancel(&GroupTimer::PendingMember {
                group: self.id.clone(),
                member: member_id.to_owned(),
            });
            self.try_complete_join(fx);
            return Ok(());
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupProblem::UnknownMemberId);
        }
        self.remove_member_and_update(member_id, fx);
        Ok(())
    }

    /// Kafka's `validateOffsetCommit` for a (non-transactional) commit.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupProblem> {
        if self.is(GroupState::Dead) {
            return Err(GroupProblem::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.is(GroupState::Empty) {
            // The admin client or a consumer outside group management.
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
            self.validate_member(member_id, group_instance_id)?;
            if generation_id != self.generation_id {
                return Err(GroupProblem::IllegalGeneration);
            }
        } else if !self.is(GroupState::Empty) {
            return Err(GroupProblem::UnknownMemberId);
        }
        if self.is(GroupState::CompletingRebalance) {
            return Err(GroupProblem::RebalanceInProgress);
        }
        Ok(())
    }

    /// A commit from a member counts as a sign of life.
    pub fn commit_heartbeat(&self, member_id: &str, fx: &mut Effects<'_>) {
        if self.members.contains_key(member_id) {
            self.schedule_heartbeat(member_id, fx);
        }
    }

    /// Heartbeat timers for a group just loaded from the log: its members must show up within
    /// a session.
    pub fn on_loaded(&self, fx: &mut Effects<'_>) {
        for member_id in self.members.keys() {
            self.schedule_heartbeat(member_id, fx);
        }
    }

    /// Every member leaves (the coordinator resigned or the group is deleted): waiting requests
    /// are answered with `problem`.
    pub fn drop_waiting(&mut self, problem: GroupProblem, fx: &mut Effects<'_>) {
        for member in self.members.values_mut() {
            if let Some(waiting) = member.awaiting_join.take() {
                fx.defer(waiting, JoinResponse::error(problem, &member.member_id));
            }
            if let Some(waiting) = member.awaiting_sync.take() {
                fx.defer(waiting, SyncResponse::error(problem));
            }
        }
    }

    /// The topics the members subscribe to, when the group uses the consumer protocol and every
    /// subscription decodes; `None` means unknown (treated as "everything").
    pub fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for member in self.members.values() {
            let metadata = member.metadata(protocol);
            topics.extend(super::embedded::decode_subscription(&metadata)?.topics);
        }
        Some(topics)
    }

    /// Members' assignment of a stable group, for DescribeGroups.
    pub fn described_members(&self) -> Vec<DescribedMember> {
        let stable = self.is(GroupState::Stable);
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.joined_seq);
        members
            .into_iter()
            .map(|m| DescribedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata(&protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect()
    }
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}
