//! KIP-848 consumer groups on the wire: ConsumerGroupHeartbeat (v0: the coordinator names new
//! members; v1: members name themselves, and regex subscriptions) and ConsumerGroupDescribe.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member, TopicPartitions as DescribedTopic,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::groups::{client_host, coordinator_code, group_code};
use crate::context::BrokerContext;
use crate::group::assignor::Assignment as Partitions;
use crate::group::consumer::{ConsumerHeartbeat, LEAVE_STATIC_EPOCH};
use crate::group::{check_group_id, GroupProblem, STRING_MAX_BYTES};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{str_bytes, AUTHORIZED_OPERATIONS_UNSET};

/// Kafka's `INVALID_REGULAR_EXPRESSION`.
const INVALID_REGULAR_EXPRESSION: i16 = 128;

/// Kafka's checks of a heartbeat's shape (`throwIfConsumerGroupHeartbeatRequestIsInvalid`):
/// the error and its message.
fn check(version: i16, request: &ConsumerGroupHeartbeatRequest) -> Result<(), (i16, String)> {
    let invalid = |message: &str| {
        Err((
            group_code(Some(GroupProblem::InvalidRequest)),
            message.to_owned(),
        ))
    };
    if check_group_id(&request.group_id).is_err() {
        return invalid("GroupId can't be empty.");
    }
    let long = |s: &StrBytes| s.len() > STRING_MAX_BYTES;
    if long(&request.member_id)
        || request.instance_id.as_ref().is_some_and(long)
        || request.rack_id.as_ref().is_some_and(long)
        || request.server_assignor.as_ref().is_some_and(long)
        || request.subscribed_topic_regex.as_ref().is_some_and(long)
        || request
            .subscribed_topic_names
            .iter()
            .flatten()
            .any(|name| long(name))
    {
        return invalid("A string is longer than 32767 bytes.");
    }
    if request.instance_id.as_ref().is_some_and(|i| i.is_empty()) {
        return invalid("InstanceId can't be empty.");
    }
    let epoch = request.member_epoch;
    if epoch < LEAVE_STATIC_EPOCH {
        return invalid("MemberEpoch is invalid.");
    }
    if epoch == LEAVE_STATIC_EPOCH && request.instance_id.is_none() {
        return invalid("InstanceId can't be null when leaving as a static member.");
    }
    if (epoch != 0 || version >= 1) && request.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    if epoch == 0 {
        if request.rebalance_timeout_ms <= 0 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if request
            .topic_partitions
            .as_ref()
            .is_none_or(|p| !p.is_empty())
        {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
        if request.subscribed_topic_names.is_none() && request.subscribed_topic_regex.is_none() {
            return invalid(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
    }
    if let Some(regex) = request
        .subscribed_topic_regex
        .as_ref()
        .filter(|r| !r.is_empty())
    {
        if let Err(error) = regex::Regex::new(regex) {
            return Err((
                INVALID_REGULAR_EXPRESSION,
                format!("SubscribedTopicRegex `{regex}` is not valid: {error}"),
            ));
        }
    }
    Ok(())
}

pub async fn heartbeat(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let version = req.api_version;
    let failed = |code: i16, message: String| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message)))
    };
    if let Err((code, message)) = check(version, &request) {
        return failed(code, message);
    }
    let group_id = request.group_id.to_string();
    let member_id = if request.member_epoch == 0 && request.member_id.is_empty() {
        // v0: the coordinator names the member.
        uuid::Uuid::new_v4().to_string()
    } else {
        request.member_id.to_string()
    };
    let owned = request.topic_partitions.as_ref().map(|topics| {
        let mut owned = Partitions::new();
        for topic in topics {
            owned
                .entry(topic.topic_id)
                .or_default()
                .extend(topic.partitions.iter().copied());
        }
        owned
    });
    let heartbeat = ConsumerHeartbeat {
        member_id,
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: request.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .as_ref()
            .map(|names| names.iter().map(|n| n.to_string()).collect()),
        subscribed_topic_regex: request
            .subscribed_topic_regex
            .as_ref()
            .map(|s| s.to_string()),
        server_assignor: request.server_assignor.as_ref().map(|s| s.to_string()),
        owned,
        client_id: req.client_id.as_deref().unwrap_or("").to_owned(),
        client_host: client_host(req),
    };
    tracing::debug!(group = %group_id, member = %heartbeat.member_id, epoch = heartbeat.member_epoch, owned = ?heartbeat.owned, "consumer heartbeat");
    let answer = match ctx
        .groups
        .consumer_heartbeat(ctx, &group_id, heartbeat)
        .await
    {
        Ok(answer) => answer,
        Err(error) => return failed(coordinator_code(&error), error.to_string()),
    };
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(group_code(answer.error))
        .with_error_message(answer.error_message.map(str_bytes))
        .with_member_id(answer.member_id.map(str_bytes))
        .with_member_epoch(answer.member_epoch)
        .with_heartbeat_interval_ms(answer.heartbeat_interval_ms)
        .with_assignment(answer.assignment.map(|assignment| {
            Assignment::default().with_topic_partitions(
                assignment
                    .into_iter()
                    .map(|(topic_id, partitions)| {
                        TopicPartitions::default()
                            .with_topic_id(topic_id)
                            .with_partitions(partitions.into_iter().collect())
                    })
                    .collect(),
            )
        }))
}

fn described_assignment(
    partitions: &Partitions,
    names: &std::collections::BTreeMap<uuid::Uuid, String>,
) -> DescribedAssignment {
    DescribedAssignment::default().with_topic_partitions(
        partitions
            .iter()
            .map(|(topic_id, partitions)| {
                let name = names.get(topic_id).cloned().unwrap_or_default();
                DescribedTopic::default()
                    .with_topic_id(*topic_id)
                    .with_topic_name(TopicName(str_bytes(name)))
                    .with_partitions(partitions.iter().copied().collect())
            })
            .collect(),
    )
}

pub async fn describe(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let version = req.api_version;
    let mut groups = Vec::with_capacity(request.group_ids.len());
    for group_id in request.group_ids {
        let id = group_id.to_string();
        let base = DescribedGroup::default()
            .with_group_id(group_id)
            .with_authorized_operations(AUTHORIZED_OPERATIONS_UNSET);
        if check_group_id(&id).is_err() {
            groups.push(
                base.with_error_code(group_code(Some(GroupProblem::InvalidGroupId)))
                    .with_error_message(Some(StrBytes::from_static_str("GroupId can't be empty."))),
            );
            continue;
        }
        let described = match ctx.groups.consumer_describe(ctx, &id).await {
            Err(error) => {
                groups.push(
                    base.with_error_code(coordinator_code(&error))
                        .with_error_message(Some(str_bytes(error.to_string()))),
                );
                continue;
            }
            Ok(Err(problem)) => {
                groups.push(
                    base.with_error_code(group_code(Some(problem)))
                        .with_error_message(Some(str_bytes(format!(
                            "group {id} is not a consumer group"
                        )))),
                );
                continue;
            }
            Ok(Ok(described)) => described,
        };
        let members = described
            .members
            .iter()
            .map(|(member, target)| {
                let mut described_member = Member::default()
                    .with_member_id(str_bytes(member.member_id.clone()))
                    .with_instance_id(member.instance_id.clone().map(str_bytes))
                    .with_rack_id(member.rack_id.clone().map(str_bytes))
                    .with_member_epoch(member.member_epoch)
                    .with_client_id(str_bytes(member.client_id.clone()))
                    .with_client_host(str_bytes(member.client_host.clone()))
                    .with_subscribed_topic_names(
                        member
                            .subscribed_topic_names
                            .iter()
                            .map(|n| TopicName(str_bytes(n.clone())))
                            .collect(),
                    )
                    .with_subscribed_topic_regex(
                        member.subscribed_topic_regex.clone().map(str_bytes),
                    )
                    .with_assignment(described_assignment(
                        &member.assigned,
                        &described.topic_names,
                    ))
                    .with_target_assignment(described_assignment(target, &described.topic_names));
                if version >= 1 {
                    // KIP-1099: 1 is a member that speaks the consumer protocol, 0 one that
                    // speaks the classic protocol inside a consumer group.
                    let member_type = if member.classic.is_some() { 0 } else { 1 };
                    described_member = described_member.with_member_type(member_type);
                }
                described_member
            })
            .collect();
        groups.push(
            base.with_group_state(StrBytes::from_static_str(described.state))
                .with_group_epoch(described.group_epoch)
                .with_assignment_epoch(described.assignment_epoch)
                .with_assignor_name(StrBytes::from_static_str(described.assignor))
                .with_members(members),
        );
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
