//! Online migration between the classic and consumer protocols (KIP-848), as Kafka 4 does it:
//! a non-empty classic group becomes a consumer group when a member joins it with
//! ConsumerGroupHeartbeat (upgrade), its members staying on as classic members with their
//! partitions; classic requests to a consumer group are routed to those members; and the group
//! turns back into a classic one when its last consumer-protocol member leaves or is fenced, or
//! is replaced by a classic static member (downgrade). `group.consumer.migration.policy`
//! chooses which ways are open.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

use super::classic::{
    CarriedMember, Effects, Group, GroupTimer, JoinRequest, JoinResponse, Reply, SyncRequest,
    SyncResponse,
};
use super::consumer::{
    cancel_member_timers, ClassicMeta, ConsumerGroup, ConsumerMember, Dirty, MemberState,
    TopicsView,
};
use super::consumer_classic::{by_id, named, ClassicJoin};
use super::embedded;
use super::machine::GroupMachine;
use super::GroupProblem;
use crate::coordinator::OpContext;

/// Which timer of a consumer group's member fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberTimer {
    Session,
    Revocation,
    /// A classic member told to rejoin did not.
    Join,
    /// A classic member that joined did not sync.
    Sync,
}

impl GroupMachine {
    /// `value`, sent once this call's records are committed.
    fn later<T: Send + 'static>(&mut self, value: T) -> Reply<T> {
        let (sender, receiver) = oneshot::channel();
        self.deferred.push(Box::new(move || {
            // The requester may have gone: nothing to tell.
            let _ = sender.send(value);
        }));
        Reply::Later(receiver)
    }

    // ------------------------------------------------------------ classic requests, consumer group

    /// JoinGroup to a non-empty consumer group, from a member speaking the classic protocol.
    pub(super) fn join_consumer_group(
        &mut self,
        group_id: &str,
        request: JoinRequest,
        topics: &TopicsView,
        ctx: &mut OpContext<'_, super::classic::GroupTimer>,
    ) -> Reply<JoinResponse> {
        if request.session_timeout_ms < self.rules.min_session_timeout_ms
            || request.session_timeout_ms > self.rules.max_session_timeout_ms
        {
            let response =
                JoinResponse::error(GroupProblem::InvalidSessionTimeout, &request.member_id);
            return Reply::Now(response);
        }
        // All of a member's protocols carry the same subscription (Kafka reads any one).
        let subscription = request
            .protocols
            .first()
            .and_then(|(_, metadata)| embedded::decode_subscription(metadata));
        let Some(subscription) = subscription else {
            let response =
                JoinResponse::error(GroupProblem::InconsistentGroupProtocol, &request.member_id);
            return Reply::Now(response);
        };
        let join = ClassicJoin {
            owned: by_id(&subscription.owned, topics),
            subscribed_topics: subscription.topics,
            rack_id: subscription.rack_id,
            request,
        };
        let joined = self.consumer_call(group_id, ctx, |group, rules, fx, dirty| {
            group.classic_join(join, topics, rules, fx, dirty)
        });
        match joined {
            None => Reply::Now(JoinResponse::error(GroupProblem::UnknownMemberId, "")),
            Some(Err((problem, member_id))) => Reply::Now(JoinResponse::error(problem, &member_id)),
            Some(Ok(joined)) => {
                if joined.replaced_consumer_member.is_some() && self.may_downgrade(group_id, None) {
                    tracing::info!(group = group_id, "the last consumer-protocol member was replaced by a classic one: the group is a classic group again");
                    self.downgrade(group_id, None, false, ctx);
                }
                self.later(joined.response)
            }
        }
    }

    pub(super) fn sync_consumer_group(
        &mut self,
        group_id: &str,
        request: SyncRequest,
        topics: &TopicsView,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> Reply<SyncResponse> {
        let names: BTreeMap<uuid::Uuid, String> = topics
            .iter()
            .map(|(name, (id, _))| (*id, name.clone()))
            .collect();
        let synced = self.consumer_call(group_id, ctx, |group, _rules, fx, _dirty| {
            group.classic_sync(&request, &names, fx)
        });
        match synced {
            Some(Ok(response)) => self.later(response),
            Some(Err(problem)) => Reply::Now(SyncResponse::error(problem)),
            None => Reply::Now(SyncResponse::error(GroupProblem::UnknownMemberId)),
        }
    }

    pub(super) fn heartbeat_consumer_group(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> Result<(), GroupProblem> {
        self.consumer_call(group_id, ctx, |group, _rules, fx, _dirty| {
            group.classic_heartbeat(member_id, instance_id, generation_id, fx)
        })
        .unwrap_or(Err(GroupProblem::UnknownMemberId))
    }

    pub(super) fn leave_consumer_group(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        topics: &TopicsView,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> Vec<Result<(), GroupProblem>> {
        self.consumer_call(group_id, ctx, |group, _rules, fx, dirty| {
            group.classic_leave(members, topics, fx, dirty)
        })
        .unwrap_or_else(|| vec![Err(GroupProblem::UnknownMemberId); members.len()])
    }

    /// A member's timer fired: it is fenced if the timer says so, and if it was the last
    /// member speaking the consumer protocol, the group turns back into a classic one (Kafka's
    /// `consumerGroupFenceMember`).
    pub(super) fn consumer_member_timer(
        &mut self,
        group_id: &str,
        member_id: &str,
        timer: MemberTimer,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) {
        let Some(member) = self
            .consumer_groups
            .get(group_id)
            .and_then(|g| g.members.get(member_id))
        else {
            return;
        };
        let fenced = match timer {
            MemberTimer::Revocation => member.state == MemberState::UnrevokedPartitions,
            MemberTimer::Session | MemberTimer::Join | MemberTimer::Sync => true,
        };
        if fenced && self.may_downgrade(group_id, Some(member_id)) {
            tracing::info!(
                group = group_id,
                member = member_id,
                ?timer,
                "the last consumer-protocol member was fenced: the group is a classic group again"
            );
            self.downgrade(group_id, Some(member_id), true, ctx);
            return;
        }
        self.consumer_call(group_id, ctx, |group, _rules, fx, dirty| match timer {
            MemberTimer::Session => group.on_session_timer(member_id, fx, dirty),
            MemberTimer::Revocation => group.on_revocation_timer(member_id, fx, dirty),
            MemberTimer::Join | MemberTimer::Sync => group.on_classic_timer(member_id, fx, dirty),
        });
    }

    // ------------------------------------------------------------------------------ upgrade

    /// Whether a ConsumerGroupHeartbeat may turn the non-empty classic group `group_id` into a
    /// consumer group (Kafka's `validateOnlineUpgrade`).
    pub(super) fn may_upgrade(&self, group: &Group) -> bool {
        if !self.consumer_rules.migration.upgrades() {
            tracing::info!(group = %group.id, "not upgraded to a consumer group: the migration policy forbids it");
            return false;
        }
        if group.protocol_type.as_deref() != Some(super::consumer_classic::CONSUMER_PROTOCOL_TYPE) {
            return false;
        }
        group.members.len() <= self.consumer_rules.max_size
    }

    /// Turns the classic group `group_id` into a consumer group (Kafka's
    /// `convertToConsumerGroup`): the group epoch is the generation, every member keeps the
    /// partitions of its last assignment as its target and speaks the classic protocol from
    /// now on. Members waiting for a join or sync answer get REBALANCE_IN_PROGRESS. `Err` (and
    /// nothing changed) if a member's embedded consumer protocol does not decode.
    pub(super) fn upgrade(
        &mut self,
        group_id: &str,
        topics: &TopicsView,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> Result<(), String> {
        let classic = self
            .groups
            .get(group_id)
            .ok_or_else(|| "no such group".to_owned())?;
        let generation = classic.generation_id;
        let protocol = classic.protocol_name.clone().unwrap_or_default();
        let mut members = Vec::with_capacity(classic.members.len());
        for member in classic.members.values() {
            let subscription = embedded::decode_subscription(&member.metadata(&protocol))
                .ok_or_else(|| {
                    format!("member {}'s subscription is malformed", member.member_id)
                })?;
            let assigned = embedded::decode_assignment(&member.assignment)
                .ok_or_else(|| format!("member {}'s assignment is malformed", member.member_id))?;
            let mut converted = ConsumerMember::new(&member.member_id);
            converted.member_epoch = generation;
            converted.previous_member_epoch = generation;
            converted.state = MemberState::Stable;
            converted.instance_id.clone_from(&member.group_instance_id);
            converted.rack_id = subscription.rack_id;
            converted.rebalance_timeout_ms = member.rebalance_timeout_ms;
            converted.client_id.clone_from(&member.client_id);
            converted.client_host.clone_from(&member.client_host);
            let mut names = subscription.topics;
            names.sort();
            names.dedup();
            converted.subscribed_topic_names = names;
            converted.assigned = by_id(&assigned, topics);
            converted.classic = Some(ClassicMeta {
                session_timeout_ms: member.session_timeout_ms,
                protocols: member.protocols.clone(),
            });
            members.push(converted);
        }
        let Some(mut classic) = self.groups.remove(group_id) else {
            return Err("no such group".to_owned());
        };
        self.records.push(Group::tombstone(group_id));
        let mut group = ConsumerGroup::new(group_id);
        group.group_epoch = generation;
        group.assignment_epoch = generation;
        let mut dirty = Dirty {
            group_epoch: true,
            assignment_epoch: true,
            ..Dirty::default()
        };
        for member in members {
            let id = member.member_id.clone();
            group.targets.insert(id.clone(), member.assigned.clone());
            dirty.members.insert(id.clone());
            dirty.targets.insert(id.clone());
            dirty.current.insert(id.clone());
            group.members.insert(id, member);
        }
        group.rebuild_owners();
        group.resolve_subscriptions(topics, &mut dirty);
        let GroupMachine {
            rules,
            consumer_rules,
            records,
            deferred,
            ..
        } = self;
        let mut fx = Effects {
            now_ms: ctx.now_ms,
            timers: &mut *ctx.timers,
            records,
            deferred,
            rules,
        };
        classic.drop_waiting(GroupProblem::RebalanceInProgress, &mut fx);
        classic.cancel_timers(&mut fx);
        group.on_loaded(consumer_rules, &mut fx);
        self.consumer_groups.insert(group_id.to_owned(), group);
        self.persist_consumer(group_id, &dirty);
        tracing::info!(
            group = group_id,
            generation,
            "classic group upgraded to a consumer group"
        );
        Ok(())
    }

    // ---------------------------------------------------------------------------- downgrade

    /// Whether the consumer group may turn back into a classic group, either once `fenced`
    /// (its last consumer-protocol member) is gone, or (`None`) now that every member speaks
    /// the classic protocol (Kafka's `validateOnlineDowngradeWith{FencedMember,ReplacedMemberId}`).
    pub(super) fn may_downgrade(&self, group_id: &str, fenced: Option<&str>) -> bool {
        let Some(group) = self.consumer_groups.get(group_id) else {
            return false;
        };
        let (eligible, remaining) = match fenced {
            Some(member_id) => (
                group.only_consumer_member_is(member_id) && group.members.len() > 1,
                group.members.len().saturating_sub(1),
            ),
            None => (
                !group.members.is_empty() && group.members.values().all(|m| m.classic.is_some()),
                group.members.len(),
            ),
        };
        if !eligible {
            return false;
        }
        if !self.consumer_rules.migration.downgrades() {
            tracing::info!(
                group = group_id,
                "not downgraded to a classic group: the migration policy forbids it"
            );
            return false;
        }
        remaining <= self.rules.max_size
    }

    /// Turns the consumer group `group_id` into a classic group without `leaving` (Kafka's
    /// `convertToClassicGroup`): generation = group epoch, each member's assignment its target,
    /// written at the version of its subscription. With `rebalance` (a member left), the
    /// group rebalances at once; its members learn it from their next heartbeat.
    pub(super) fn downgrade(
        &mut self,
        group_id: &str,
        leaving: Option<&str>,
        rebalance: bool,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) {
        let Some(group) = self.consumer_groups.remove(group_id) else {
            return;
        };
        self.records.extend(super::consumer_log::deletion(&group));
        // The group's last known subscribed topics name every partition of its targets.
        let names: BTreeMap<uuid::Uuid, String> = group
            .subscription_metadata
            .iter()
            .map(|(name, (id, _))| (*id, name.clone()))
            .collect();
        let carried = group
            .members
            .values()
            .filter(|m| Some(m.member_id.as_str()) != leaving)
            .map(|m| {
                let classic = m.classic.clone().unwrap_or(ClassicMeta {
                    session_timeout_ms: self.consumer_rules.session_timeout_ms,
                    protocols: Vec::new(),
                });
                CarriedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: classic.session_timeout_ms,
                    protocols: classic.protocols,
                }
            })
            .collect();
        let mut classic = Group::converted(group_id, group.group_epoch, ctx.now_ms, carried);
        let protocol = classic.protocol_name.clone().unwrap_or_default();
        for member in classic.members.values_mut() {
            let target = group
                .targets
                .get(&member.member_id)
                .cloned()
                .unwrap_or_default();
            let version = embedded::subscription_version(&member.metadata(&protocol)).unwrap_or(0);
            member.assignment = embedded::encode_assignment(&named(&target, &names), version);
        }
        self.records.push(classic.record(ctx.now_ms));
        let GroupMachine {
            rules,
            records,
            deferred,
            ..
        } = self;
        let mut fx = Effects {
            now_ms: ctx.now_ms,
            timers: &mut *ctx.timers,
            records,
            deferred,
            rules,
        };
        for member_id in group.members.keys() {
            cancel_member_timers(group_id, member_id, &mut fx);
        }
        classic.on_loaded(&mut fx);
        if rebalance {
            classic.rebalance_converted(&mut fx);
        }
        tracing::info!(
            group = group_id,
            generation = classic.generation_id,
            members = classic.members.len(),
            "consumer group downgraded to a classic group"
        );
        self.groups.insert(group_id.to_owned(), classic);
    }
}
