//! Members that still speak the classic protocol inside a KIP-848 consumer group (Kafka's
//! online migration): their JoinGroup, SyncGroup, Heartbeat and LeaveGroup are answered from
//! the group's epochs and target assignment, as Kafka's `classicGroup*ToConsumerGroup` do. A
//! JoinGroup reconciles the member towards its target with the partitions its subscription says
//! it owns; the generation it gets is its member epoch; its SyncGroup answer is the partitions
//! it may hold now; a Heartbeat answers REBALANCE_IN_PROGRESS whenever a new join would move it
//! on.
//!
//! Pure, like [`super::consumer`]: the caller decodes the embedded consumer protocol and turns
//! topic names into ids.

use std::collections::BTreeMap;

use bytes::Bytes;
use uuid::Uuid;

use super::assignor::Assignment;
use super::classic::{Effects, JoinRequest, JoinResponse, SyncRequest, SyncResponse};
use super::consumer::{
    join_timer, session_timer, sync_timer, ClassicMeta, ConsumerGroup, ConsumerMember,
    ConsumerRules, Dirty, MemberState, TopicsView,
};
use super::embedded::{self, NamedPartitions};
use super::GroupProblem;

/// The protocol type of every member a consumer group hosts.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// A classic JoinGroup to a consumer group, with its embedded subscription decoded.
#[derive(Debug)]
pub struct ClassicJoin {
    pub request: JoinRequest,
    pub subscribed_topics: Vec<String>,
    pub rack_id: Option<String>,
    /// The partitions the member says it owns, as ids.
    pub owned: Assignment,
}

/// What a classic join did.
#[derive(Debug)]
pub struct ClassicJoined {
    pub response: JoinResponse,
    /// The consumer-protocol static member this join replaced, if any (a replaced last
    /// consumer-protocol member may turn the group back into a classic one).
    pub replaced_consumer_member: Option<String>,
}

impl ConsumerGroup {
    /// Kafka's `supportsClassicProtocols`: the consumer protocol type, and one protocol every
    /// classic member of the group supports.
    pub fn supports_classic_protocols(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        if protocol_type != CONSUMER_PROTOCOL_TYPE {
            return false;
        }
        let classic: Vec<&ClassicMeta> = self
            .members
            .values()
            .filter_map(|m| m.classic.as_ref())
            .collect();
        protocols.iter().any(|(name, _)| {
            classic
                .iter()
                .all(|c| c.protocols.iter().any(|(held, _)| held == name))
        })
    }

    /// Whether every member but `member_id` speaks the classic protocol, and `member_id` does
    /// not (Kafka's `allMembersUseClassicProtocolExcept`).
    pub fn only_consumer_member_is(&self, member_id: &str) -> bool {
        self.members
            .get(member_id)
            .is_some_and(|m| m.classic.is_none())
            && self
                .members
                .values()
                .filter(|m| m.member_id != member_id)
                .all(|m| m.classic.is_some())
    }

    /// The member a classic request names: by instance id for a static member, which must be
    /// held by `member_id` (Kafka's `validateConsumerGroupMember`); it must speak the classic
    /// protocol.
    fn classic_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<&ConsumerMember, GroupProblem> {
        let member = match instance_id {
            Some(instance) => {
                let holder = self
                    .static_members
                    .get(instance)
                    .ok_or(GroupProblem::UnknownMemberId)?;
                if holder != member_id {
                    return Err(GroupProblem::FencedInstanceId);
                }
                self.members.get(holder)
            }
            None => self.members.get(member_id),
        };
        let member = member.ok_or(GroupProblem::UnknownMemberId)?;
        if member.classic.is_none() {
            return Err(GroupProblem::UnknownMemberId);
        }
        Ok(member)
    }

    /// JoinGroup from a classic member (Kafka's `classicGroupJoinToConsumerGroup`). The answer
    /// carries the member's epoch as the generation and no member list: the coordinator
    /// assigns, so nobody leads.
    pub fn classic_join(
        &mut self,
        join: ClassicJoin,
        topics: &TopicsView,
        rules: &ConsumerRules,
        fx: &mut Effects<'_>,
        dirty: &mut Dirty,
    ) -> Result<ClassicJoined, (GroupProblem, String)> {
        let ClassicJoin {
            request,
            subscribed_topics,
            rack_id,
            owned,
        } = join;
        // The refusal, with the member id to answer it with.
        let refuse = |problem, member_id: &str| (problem, member_id.to_owned());
        let unknown = request.member_id.is_empty();
        let member_id = if unknown {
            request.new_member_id.clone()
        } else {
            request.member_id.clone()
        };
        if !self.members.contains_key(&member_id) && self.members.len() >= rules.max_size {
            return Err(refuse(
                GroupProblem::GroupMaxSizeReached,
                &request.member_id,
            ));
        }
        if !self.supports_classic_protocols(&request.protocol_type, &request.protocols) {
            return Err(refuse(
                GroupProblem::InconsistentGroupProtocol,
                &request.member_id,
            ));
        }
        if unknown && request.group_instance_id.is_none() && request.require_known_member_id {
            // KIP-394, as for a classic group: the member joins again with this id. Nothing is
            // remembered; the next join creates the member.
            return Err(refuse(GroupProblem::MemberIdRequired, &member_id));
        }
        let mut replaced_consumer_member = None;
        match &request.group_instance_id {
            Some(instance) => match self.static_members.get(instance).cloned() {
                Some(holder) if unknown => {
                    // A restarted static member takes its predecessor's place, whichever
                    // protocol that one spoke.
                    if self
                        .members
                        .get(&holder)
                        .is_some_and(|m| m.classic.is_none())
                    {
                        replaced_consumer_member = Some(holder.clone());
                    }
                    self.replace_member(&holder, &member_id, instance, fx, dirty);
                }
                Some(holder) if holder != member_id => {
                    return Err(refuse(GroupProblem::FencedInstanceId, &member_id));
                }
                Some(_) => {}
                None if unknown => self.add_classic_member(&member_id, dirty),
                None => return Err(refuse(GroupProblem::UnknownMemberId, &member_id)),
            },
            None if !self.members.contains_key(&member_id) => {
                self.add_classic_member(&member_id, dirty)
            }
            None => {}
        }
        self.update_classic_member(&member_id, &request, subscribed_topics, rack_id, dirty);
        self.refresh_subscriptions(topics, dirty);
        if self.group_epoch > self.assignment_epoch {
            self.compute_targets(dirty);
        }
        self.reconcile(&member_id, Some(&owned), fx, dirty);
        let Some(member) = self.members.get(&member_id) else {
            return Err(refuse(GroupProblem::UnknownMemberId, &member_id));
        };
        fx.timers.cancel(&join_timer(&self.id, &member_id));
        fx.timers.schedule(
            session_timer(&self.id, &member_id),
            fx.now_ms + i64::from(request.session_timeout_ms),
        );
        fx.timers.schedule(
            sync_timer(&self.id, &member_id),
            fx.now_ms + i64::from(request.rebalance_timeout_ms.max(1)),
        );
        let protocol_name = member
            .classic
            .as_ref()
            .and_then(|c| c.protocols.first())
            .map(|(name, _)| name.clone());
        Ok(ClassicJoined {
            response: JoinResponse {
                error: None,
                generation_id: member.member_epoch,
                protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_owned()),
                protocol_name,
                leader: String::new(),
                member_id,
                members: Vec::new(),
                skip_assignment: false,
            },
            replaced_consumer_member,
        })
    }

    fn add_classic_member(&mut self, member_id: &str, dirty: &mut Dirty) {
        self.members
            .insert(member_id.to_owned(), ConsumerMember::new(member_id));
        dirty.members.insert(member_id.to_owned());
        dirty.current.insert(member_id.to_owned());
    }

    /// `new_id` takes over the membership of the static member `old_id`: its assignment,
    /// target and epoch, so nothing moves (Kafka's `replaceMember`).
    fn replace_member(
        &mut self,
        old_id: &str,
        new_id: &str,
        instance: &str,
        fx: &mut Effects<'_>,
        dirty: &mut Dirty,
    ) {
        let Some(mut member) = self.members.remove(old_id) else {
            return;
        };
        super::consumer::cancel_member_timers(&self.id, old_id, fx);
        member.member_id = new_id.to_owned();
        for (topic, partitions) in member.assigned.iter().chain(&member.pending_revocation) {
            for p in partitions {
                self.owners.insert((*topic, *p), new_id.to_owned());
            }
        }
        if let Some(target) = self.targets.remove(old_id) {
            self.targets.insert(new_id.to_owned(), target);
            dirty.targets.insert(new_id.to_owned());
        }
        self.members.insert(new_id.to_owned(), member);
        self.static_members
            .insert(instance.to_owned(), new_id.to_owned());
        dirty.removed.insert(old_id.to_owned());
        dirty.members.insert(new_id.to_owned());
        dirty.current.insert(new_id.to_owned());
    }

    /// Applies what the JoinGroup says about the member; a new subscription moves the epoch.
    fn update_classic_member(
        &mut self,
        member_id: &str,
        request: &JoinRequest,
        mut subscribed_topics: Vec<String>,
        rack_id: Option<String>,
        dirty: &mut Dirty,
    ) {
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        subscribed_topics.sort();
        subscribed_topics.dedup();
        let subscription_changed = member.subscribed_topic_names != subscribed_topics;
        let classic = ClassicMeta {
            session_timeout_ms: request.session_timeout_ms,
            protocols: request.protocols.clone(),
        };
        let mut changed = subscription_changed
            || member.classic.as_ref() != Some(&classic)
            || member.instance_id != request.group_instance_id
            || member.client_id != request.client_id
            || member.client_host != request.client_host
            || (rack_id.is_some() && member.rack_id != rack_id);
        member.subscribed_topic_names = subscribed_topics;
        member.classic = Some(classic);
        member.instance_id.clone_from(&request.group_instance_id);
        member.client_id.clone_from(&request.client_id);
        member.client_host.clone_from(&request.client_host);
        if rack_id.is_some() {
            member.rack_id = rack_id;
        }
        if request.rebalance_timeout_ms > 0
            && request.rebalance_timeout_ms != member.rebalance_timeout_ms
        {
            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
            changed = true;
        }
        if let Some(instance) = &request.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.to_owned());
        }
        if changed {
            dirty.members.insert(member_id.to_owned());
        }
        if subscription_changed {
            self.bump_group_epoch(dirty);
        }
    }

    /// SyncGroup from a classic member (Kafka's `classicGroupSyncToConsumerGroup`): the
    /// partitions it holds now, written at its subscription's version.
    pub fn classic_sync(
        &self,
        request: &SyncRequest,
        topic_names: &BTreeMap<Uuid, String>,
        fx: &mut Effects<'_>,
    ) -> Result<SyncResponse, GroupProblem> {
        let member =
            self.classic_member(&request.member_id, request.group_instance_id.as_deref())?;
        let member_id = member.member_id.clone();
        if request.generation_id != member.member_epoch {
            return Err(GroupProblem::IllegalGeneration);
        }
        let meta = member
            .classic
            .as_ref()
            .ok_or(GroupProblem::UnknownMemberId)?;
        let protocol = meta.protocols.first();
        let protocol_name = protocol.map(|(name, _)| name.as_str());
        let type_differs = request
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE);
        let name_differs = request
            .protocol_name
            .as_deref()
            .is_some_and(|n| Some(n) != protocol_name);
        if type_differs || name_differs {
            return Err(GroupProblem::InconsistentGroupProtocol);
        }
        if self.group_epoch > member.member_epoch
            && member.state != MemberState::UnrevokedPartitions
        {
            self.schedule_join_timer(member, fx);
            return Err(GroupProblem::RebalanceInProgress);
        }
        let version = protocol
            .and_then(|(_, metadata)| embedded::subscription_version(metadata))
            .unwrap_or(0);
        let assignment =
            embedded::encode_assignment(&named(&member.assigned, topic_names), version);
        fx.timers.cancel(&sync_timer(&self.id, &member_id));
        fx.timers.schedule(
            session_timer(&self.id, &member_id),
            fx.now_ms + i64::from(meta.session_timeout_ms),
        );
        Ok(SyncResponse {
            error: None,
            protocol_type: request.protocol_type.clone(),
            protocol_name: request.protocol_name.clone(),
            assignment,
        })
    }

    /// Heartbeat from a classic member (Kafka's `classicGroupHeartbeatToConsumerGroup`):
    /// REBALANCE_IN_PROGRESS when the group moved past the member's epoch, when it must give
    /// partitions up, or when the partitions it waits for were released, so that it joins
    /// again and moves on.
    pub fn classic_heartbeat(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        fx: &mut Effects<'_>,
    ) -> Result<(), GroupProblem> {
        let member = self.classic_member(member_id, instance_id)?;
        if generation_id != member.member_epoch {
            return Err(GroupProblem::IllegalGeneration);
        }
        let session_ms = member.classic.as_ref().map_or(0, |c| c.session_timeout_ms);
        fx.timers.schedule(
            session_timer(&self.id, &member.member_id),
            fx.now_ms + i64::from(session_ms),
        );
        let rejoin = member.member_epoch < self.group_epoch
            || member.state == MemberState::UnrevokedPartitions
            || (member.state == MemberState::UnreleasedPartitions
                && !self.waiting_on_unreleased(member));
        if rejoin {
            self.schedule_join_timer(member, fx);
            return Err(GroupProblem::RebalanceInProgress);
        }
        Ok(())
    }

    /// Whether a partition of the member's target is still held by another member.
    fn waiting_on_unreleased(&self, member: &ConsumerMember) -> bool {
        let Some(target) = self.targets.get(&member.member_id) else {
            return false;
        };
        target.iter().any(|(topic, partitions)| {
            partitions.iter().any(|p| {
                let held = member
                    .assigned
                    .get(topic)
                    .is_some_and(|held| held.contains(p));
                !held
                    && self
                        .owners
                        .get(&(*topic, *p))
                        .is_some_and(|owner| owner != &member.member_id)
            })
        })
    }

    /// A member told to join again must within its rebalance timeout (set once: later
    /// heartbeats do not push it back).
    fn schedule_join_timer(&self, member: &ConsumerMember, fx: &mut Effects<'_>) {
        let timer = join_timer(&self.id, &member.member_id);
        if fx.timers.deadline_ms(&timer).is_none() {
            fx.timers.schedule(
                timer,
                fx.now_ms + i64::from(member.rebalance_timeout_ms.max(1)),
            );
        }
    }

    /// LeaveGroup of classic members (Kafka's `classicGroupLeaveToConsumerGroup`): each named
    /// member must speak the classic protocol; a static one may be named by instance id alone.
    pub fn classic_leave(
        &mut self,
        members: &[(String, Option<String>)],
        topics: &TopicsView,
        fx: &mut Effects<'_>,
        dirty: &mut Dirty,
    ) -> Vec<Result<(), GroupProblem>> {
        let outcomes: Vec<Result<(), GroupProblem>> = members
            .iter()
            .map(|(member_id, instance)| {
                let leaving = match instance {
                    Some(instance) => {
                        let holder = self
                            .static_members
                            .get(instance)
                            .cloned()
                            .ok_or(GroupProblem::UnknownMemberId)?;
                        if !member_id.is_empty() && holder != *member_id {
                            return Err(GroupProblem::FencedInstanceId);
                        }
                        holder
                    }
                    None => member_id.clone(),
                };
                let classic = self
                    .members
                    .get(&leaving)
                    .ok_or(GroupProblem::UnknownMemberId)?
                    .classic
                    .is_some();
                if !classic {
                    return Err(GroupProblem::UnknownMemberId);
                }
                tracing::info!(group = %self.id, member = %leaving, "classic member left the consumer group");
                self.remove_member(&leaving, fx, dirty);
                Ok(())
            })
            .collect();
        if !dirty.removed.is_empty() {
            self.refresh_subscriptions(topics, dirty);
        }
        outcomes
    }

    /// A classic member that did not join again or sync in time is fenced.
    pub fn on_classic_timer(&mut self, member_id: &str, fx: &mut Effects<'_>, dirty: &mut Dirty) {
        tracing::info!(group = %self.id, member = member_id, "classic member did not join or sync in time");
        self.remove_member(member_id, fx, dirty);
    }
}

/// An assignment by ids as partitions by name; topics the image no longer has are left out.
pub fn named(assignment: &Assignment, topic_names: &BTreeMap<Uuid, String>) -> NamedPartitions {
    assignment
        .iter()
        .filter_map(|(id, partitions)| {
            let name = topic_names.get(id)?;
            Some((name.clone(), partitions.iter().copied().collect()))
        })
        .collect()
}

/// Partitions by name as an assignment by ids; topics the image does not have are left out.
pub fn by_id(partitions: &NamedPartitions, topics: &TopicsView) -> Assignment {
    let mut assignment = Assignment::new();
    for (name, list) in partitions {
        if let Some((id, count)) = topics.get(name) {
            let valid = list
                .iter()
                .copied()
                .filter(|p| *p >= 0 && u32::try_from(*p).is_ok_and(|p| p < *count));
            assignment.entry(*id).or_default().extend(valid);
        }
    }
    assignment.retain(|_, partitions| !partitions.is_empty());
    assignment
}
