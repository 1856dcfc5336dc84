//! The admin API's group and transaction calls. Each coordinator holds its own share of the
//! groups and transactional ids, so these ask the brokers over the Kafka protocol (through the
//! peer pool, this broker included): a list asks every live broker, a describe asks the
//! coordinator of the key. The answers are the coordinators' own, errors included.

use std::collections::BTreeSet;
use std::time::Duration;

use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeTransactionsRequest, GroupId, ListGroupsRequest,
    ListTransactionsRequest, OffsetFetchRequest, TransactionalId,
};
use kafka_protocol::protocol::{Request, StrBytes};
use streambus_proto::admin::v1 as pb;
use streambus_raft::command::BrokerId;
use tonic::Status;

use super::status::{kafka_status, status_with};
use crate::context::BrokerContext;
use crate::endpoints::{live_kafka_brokers, live_kafka_endpoint};

/// Bound on one broker's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The internal topics whose partition leaders coordinate groups and transactional ids.
const OFFSETS_TOPIC: &str = "__consumer_offsets";
const TRANSACTIONS_TOPIC: &str = "__transaction_state";

/// Sends `request` to broker `broker`'s Kafka listener.
async fn call<R: Request>(
    ctx: &BrokerContext,
    broker: BrokerId,
    request: &R,
    version: i16,
) -> Result<R::Response, Status> {
    let image = ctx.image();
    let endpoint = live_kafka_endpoint(&image, broker).ok_or_else(|| {
        kafka_status(
            ResponseError::CoordinatorNotAvailable,
            &format!("broker {broker} is not live"),
        )
    })?;
    let address = format!("{}:{}", endpoint.host, endpoint.port);
    ctx.peers
        .call(broker, &address, request, version, CALL_TIMEOUT)
        .await
        .map_err(|error| {
            kafka_status(
                ResponseError::CoordinatorNotAvailable,
                &format!("broker {broker} did not answer: {error}"),
            )
        })
}

/// The broker leading `partition` of the coordinators' `topic`.
fn coordinator(ctx: &BrokerContext, topic: &str, partition: u32) -> Result<BrokerId, Status> {
    let image = ctx.image();
    image
        .topic_by_name(topic)
        .and_then(|t| t.partition(partition))
        .and_then(|p| p.leader)
        .ok_or_else(|| {
            kafka_status(
                ResponseError::CoordinatorNotAvailable,
                &format!("{topic} partition {partition} has no leader (or does not exist yet)"),
            )
        })
}

/// A Kafka error code of a coordinator's answer as a status (`None` for 0).
fn refused(code: i16, what: &str) -> Option<Status> {
    let error = code.err()?;
    Some(match error {
        ResponseError::GroupIdNotFound | ResponseError::TransactionalIdNotFound => {
            status_with(tonic::Code::NotFound, error, what)
        }
        other => kafka_status(other, what),
    })
}

/// Every live broker's ids.
fn live_brokers(ctx: &BrokerContext) -> Vec<BrokerId> {
    let image = ctx.image();
    live_kafka_brokers(&image)
        .map(|(b, _)| b.broker_id)
        .collect()
}

fn str_bytes(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

pub async fn list_groups(
    ctx: &BrokerContext,
    request: pb::ListGroupsRequest,
) -> Result<pb::ListGroupsResponse, Status> {
    let ask = ListGroupsRequest::default()
        .with_states_filter(request.states.iter().map(|s| str_bytes(s)).collect());
    let mut response = pb::ListGroupsResponse::default();
    for broker in live_brokers(ctx) {
        match call(ctx, broker, &ask, 4).await {
            Ok(answer) if answer.error_code == 0 => {
                response
                    .groups
                    .extend(answer.groups.into_iter().map(|g| pb::GroupListing {
                        group_id: g.group_id.to_string(),
                        state: g.group_state.to_string(),
                        protocol_type: g.protocol_type.to_string(),
                        coordinator: broker,
                    }));
            }
            // Still loading, or gone: its groups are missing, and the answer says so.
            Ok(_) | Err(_) => response.unreachable_brokers.push(broker),
        }
    }
    response.groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    Ok(response)
}

pub async fn describe_group(
    ctx: &BrokerContext,
    group_id: &str,
) -> Result<pb::DescribeGroupResponse, Status> {
    let broker = coordinator(ctx, OFFSETS_TOPIC, ctx.groups.partition_for(group_id))?;
    let describe = DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group_id))]);
    let described = call(ctx, broker, &describe, 5).await?;
    let group = described
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| Status::internal("an empty DescribeGroups answer"))?;
    if let Some(status) = refused(group.error_code, &format!("group {group_id}")) {
        return Err(status);
    }
    if group.group_state.as_str() == "Dead" {
        return Err(status_with(
            tonic::Code::NotFound,
            ResponseError::GroupIdNotFound,
            &format!("group {group_id}"),
        ));
    }
    let consumer = group.protocol_type.as_str() == "consumer";
    let members = group
        .members
        .into_iter()
        .map(|m| {
            let assignment = if consumer {
                crate::group::embedded::decode_assignment(&m.member_assignment).unwrap_or_default()
            } else {
                Vec::new()
            };
            pb::GroupMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|i| i.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment: assignment
                    .into_iter()
                    .flat_map(|(topic, partitions)| {
                        partitions
                            .into_iter()
                            .map(move |partition| pb::PartitionRef {
                                topic: topic.clone(),
                                partition,
                            })
                    })
                    .collect(),
            }
        })
        .collect();
    let fetch = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(str_bytes(group_id)))
        .with_topics(None)]);
    let fetched = call(ctx, broker, &fetch, 8).await?;
    let mut committed = Vec::new();
    for answered in fetched.groups {
        if let Some(status) = refused(answered.error_code, &format!("offsets of {group_id}")) {
            return Err(status);
        }
        for topic in answered.topics {
            for p in topic.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    committed.push((
                        topic.name.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.metadata.map(|m| m.to_string()).unwrap_or_default(),
                    ));
                }
            }
        }
    }
    committed.sort();
    let wanted: BTreeSet<(String, i32)> = committed
        .iter()
        .map(|(t, p, _, _)| (t.clone(), *p))
        .collect();
    let high_watermarks = crate::group::lag::high_watermarks(ctx, &wanted).await;
    let offsets = committed
        .into_iter()
        .map(|(topic, partition, offset, metadata)| {
            let high_watermark = high_watermarks.get(&(topic.clone(), partition)).copied();
            pb::GroupOffset {
                lag: high_watermark.map(|hw| (hw - offset).max(0)),
                topic,
                partition,
                committed_offset: offset,
                high_watermark,
                metadata,
            }
        })
        .collect();
    Ok(pb::DescribeGroupResponse {
        group_id: group_id.to_owned(),
        state: group.group_state.to_string(),
        protocol_type: group.protocol_type.to_string(),
        protocol: group.protocol_data.to_string(),
        coordinator: broker,
        members,
        offsets,
    })
}

pub async fn list_transactions(
    ctx: &BrokerContext,
    request: pb::ListTransactionsRequest,
) -> Result<pb::ListTransactionsResponse, Status> {
    let ask = ListTransactionsRequest::default()
        .with_state_filters(request.states.iter().map(|s| str_bytes(s)).collect());
    let mut response = pb::ListTransactionsResponse::default();
    for broker in live_brokers(ctx) {
        match call(ctx, broker, &ask, 0).await {
            Ok(answer) if answer.error_code == 0 => {
                response
                    .transactions
                    .extend(answer.transaction_states.into_iter().map(|t| {
                        pb::TransactionListing {
                            transactional_id: t.transactional_id.to_string(),
                            producer_id: t.producer_id.0,
                            state: t.transaction_state.to_string(),
                            coordinator: broker,
                        }
                    }));
            }
            Ok(_) | Err(_) => response.unreachable_brokers.push(broker),
        }
    }
    response
        .transactions
        .sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    Ok(response)
}

pub async fn describe_transaction(
    ctx: &BrokerContext,
    transactional_id: &str,
) -> Result<pb::DescribeTransactionResponse, Status> {
    let broker = coordinator(
        ctx,
        TRANSACTIONS_TOPIC,
        ctx.txns.partition_for(transactional_id),
    )?;
    let ask = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(str_bytes(transactional_id))]);
    let answer = call(ctx, broker, &ask, 0).await?;
    let state = answer
        .transaction_states
        .into_iter()
        .next()
        .ok_or_else(|| Status::internal("an empty DescribeTransactions answer"))?;
    if let Some(status) = refused(
        state.error_code,
        &format!("transactional id {transactional_id}"),
    ) {
        return Err(status);
    }
    Ok(pb::DescribeTransactionResponse {
        transactional_id: transactional_id.to_owned(),
        state: state.transaction_state.to_string(),
        producer_id: state.producer_id.0,
        producer_epoch: i32::from(state.producer_epoch),
        timeout_ms: state.transaction_timeout_ms,
        start_time_ms: state.transaction_start_time_ms,
        partitions: state
            .topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic.to_string();
                t.partitions
                    .into_iter()
                    .map(move |partition| pb::PartitionRef {
                        topic: topic.clone(),
                        partition,
                    })
            })
            .collect(),
        coordinator: broker,
    })
}
