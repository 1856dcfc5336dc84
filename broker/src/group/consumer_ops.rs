//! The KIP-848 operations of [`GroupMachine`]: ConsumerGroupHeartbeat and ConsumerGroupDescribe,
//! the conversion of an empty group between the classic and consumer protocols (non-empty
//! groups convert in [`super::migration`]), and the consumer groups' load.

use super::assignor::ASSIGNORS;
use super::classic::{Effects, Group, GroupTimer};
use super::consumer::{
    ConsumerGroup, ConsumerHeartbeat, ConsumerHeartbeatResponse, ConsumerMember, Dirty, TopicsView,
};
use super::machine::GroupMachine;
use super::GroupProblem;
use crate::coordinator::{CoordinatorResult, OpContext};

/// A consumer group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerDescribed {
    pub group_id: String,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: &'static str,
    /// Each member with its target assignment.
    pub members: Vec<(ConsumerMember, super::assignor::Assignment)>,
    /// Names of the topics the group knows, by id (for the wire's topic names).
    pub topic_names: std::collections::BTreeMap<uuid::Uuid, String>,
}

impl GroupMachine {
    /// Splits the machine for one consumer group's call.
    pub(super) fn consumer_call<R>(
        &mut self,
        group_id: &str,
        ctx: &mut OpContext<'_, GroupTimer>,
        call: impl FnOnce(
            &mut ConsumerGroup,
            &super::consumer::ConsumerRules,
            &mut Effects<'_>,
            &mut Dirty,
        ) -> R,
    ) -> Option<R> {
        let GroupMachine {
            rules,
            consumer_rules,
            consumer_groups,
            records,
            deferred,
            ..
        } = self;
        let group = consumer_groups.get_mut(group_id)?;
        let mut fx = Effects {
            now_ms: ctx.now_ms,
            timers: &mut *ctx.timers,
            records,
            deferred,
            rules,
        };
        let mut dirty = Dirty::default();
        let answer = call(group, consumer_rules, &mut fx, &mut dirty);
        self.persist_consumer(group_id, &dirty);
        Some(answer)
    }

    pub fn consumer_heartbeat(
        &mut self,
        group_id: &str,
        request: ConsumerHeartbeat,
        topics: &TopicsView,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> CoordinatorResult<ConsumerHeartbeatResponse> {
        // Kafka checks the assignor with the request's shape
        // (`throwIfConsumerGroupHeartbeatRequestIsInvalid`), before it looks at the group: a
        // refused request converts nothing.
        if let Some(assignor) = &request.server_assignor {
            if !ASSIGNORS.contains(&assignor.as_str()) {
                let response = ConsumerHeartbeatResponse::error(
                    GroupProblem::UnsupportedAssignor,
                    format!("unknown server assignor {assignor}"),
                );
                return self.result(response);
            }
        }
        if let Some(classic) = self.groups.get(group_id) {
            let busy = !classic.members.is_empty() || !classic.pending_members.is_empty();
            // Only a joining member converts a group (Kafka's `getOrMaybeCreateConsumerGroup`
            // converts when it may create, that is at epoch 0); any other heartbeat to a classic
            // group is GROUP_ID_NOT_FOUND and leaves it as it is.
            let refused = request.member_epoch != 0 || (busy && !self.may_upgrade(classic));
            if refused {
                let response = ConsumerHeartbeatResponse::error(
                    GroupProblem::GroupIdNotFound,
                    format!("group {group_id} is not a consumer group"),
                );
                return self.result(response);
            }
            if busy {
                // A new member of a full group is refused before anything converts, as Kafka
                // discards the conversion with the refused heartbeat.
                let replaces = request
                    .instance_id
                    .as_ref()
                    .is_some_and(|i| classic.static_members.contains_key(i));
                if !replaces && classic.members.len() >= self.consumer_rules.max_size {
                    let response = ConsumerHeartbeatResponse::error(
                        GroupProblem::GroupMaxSizeReached,
                        format!("group {group_id} has reached its maximum size"),
                    );
                    return self.result(response);
                }
                // A non-empty classic group becomes a consumer group, its members staying as
                // classic members (Kafka's online upgrade).
                if let Err(reason) = self.upgrade(group_id, topics, ctx) {
                    tracing::warn!(group = group_id, %reason, "classic group not upgraded");
                    let response = ConsumerHeartbeatResponse::error(
                        GroupProblem::GroupIdNotFound,
                        format!("cannot upgrade group {group_id}: {reason}"),
                    );
                    return self.result(response);
                }
            } else {
                // An empty classic group becomes a consumer group, as Kafka converts it.
                self.groups.remove(group_id);
                self.records.push(Group::tombstone(group_id));
            }
        }
        // The last consumer-protocol member leaving a group of classic members turns it back
        // into a classic group (Kafka's `consumerGroupLeave` → `consumerGroupFenceMember`).
        let leaves = request.member_epoch == super::consumer::LEAVE_EPOCH
            || (request.member_epoch == super::consumer::LEAVE_STATIC_EPOCH
                && self
                    .consumer_groups
                    .get(group_id)
                    .and_then(|g| g.members.get(&request.member_id))
                    .is_some_and(|m| m.instance_id.is_none()));
        if leaves && self.may_downgrade(group_id, Some(&request.member_id)) {
            self.downgrade(group_id, Some(&request.member_id), true, ctx);
            let response = ConsumerHeartbeatResponse {
                error: None,
                error_message: None,
                member_id: Some(request.member_id.clone()),
                member_epoch: request.member_epoch,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
            return self.result(response);
        }
        let created = !self.consumer_groups.contains_key(group_id);
        if created {
            if request.member_epoch != 0 {
                let response = ConsumerHeartbeatResponse::error(
                    GroupProblem::GroupIdNotFound,
                    format!("consumer group {group_id} not found"),
                );
                return self.result(response);
            }
            self.consumer_groups
                .insert(group_id.to_owned(), ConsumerGroup::new(group_id));
        }
        let response = self
            .consumer_call(group_id, ctx, |group, rules, fx, dirty| {
                group.heartbeat(request, topics, rules, fx, dirty)
            })
            .unwrap_or_else(|| {
                ConsumerHeartbeatResponse::error(GroupProblem::GroupIdNotFound, "no such group")
            });
        // A refused first heartbeat (an unknown assignor, a full group) leaves no group behind:
        // nothing was written for it, and Kafka reverts the group it created for the request.
        if created
            && self
                .consumer_groups
                .get(group_id)
                .is_some_and(|g| g.is_empty())
        {
            self.consumer_groups.remove(group_id);
        }
        self.result(response)
    }

    /// ConsumerGroupDescribe of one group: GROUP_ID_NOT_FOUND for a missing or classic group.
    pub fn consumer_describe(
        &self,
        group_id: &str,
        topics: &TopicsView,
    ) -> Result<ConsumerDescribed, GroupProblem> {
        let group = self
            .consumer_groups
            .get(group_id)
            .ok_or(GroupProblem::GroupIdNotFound)?;
        Ok(ConsumerDescribed {
            group_id: group_id.to_owned(),
            state: group.state(),
            group_epoch: group.group_epoch,
            assignment_epoch: group.assignment_epoch,
            assignor: group.preferred_assignor(),
            members: group
                .members
                .values()
                .map(|m| {
                    let target = group.targets.get(&m.member_id).cloned().unwrap_or_default();
                    (m.clone(), target)
                })
                .collect(),
            topic_names: topics
                .iter()
                .map(|(name, (id, _))| (*id, name.clone()))
                .collect(),
        })
    }

    /// Removes a consumer group and writes the deletion of its records.
    pub(super) fn remove_consumer_group(&mut self, group_id: &str) {
        if let Some(group) = self.consumer_groups.remove(group_id) {
            let tombstones = super::consumer_log::deletion(&group);
            self.records.extend(tombstones);
        }
    }

    /// After replay: partition owners and session timers of every consumer group.
    pub(super) fn consumer_groups_loaded(&mut self, ctx: &mut OpContext<'_, GroupTimer>) {
        let ids: Vec<String> = self.consumer_groups.keys().cloned().collect();
        for id in ids {
            self.consumer_call(&id, ctx, |group, rules, fx, _dirty| {
                group.rebuild_owners();
                group.on_loaded(rules, fx);
            });
        }
    }

    /// Writes the records of what `dirty` says changed in `group_id`.
    pub(super) fn persist_consumer(&mut self, group_id: &str, dirty: &Dirty) {
        if let Some(group) = self.consumer_groups.get(group_id) {
            let records = super::consumer_log::changes(group, dirty);
            self.records.extend(records);
        }
    }
}
