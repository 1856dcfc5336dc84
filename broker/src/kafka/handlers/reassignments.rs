//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455), translated to
//! [`ops::reassignments`]: the moves of a request are one metadata command, and the listing
//! reads the image.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use crate::context::BrokerContext;
use crate::kafka::errors::Refusal;
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{str_bytes, topic_name};
use crate::ops;
use crate::ops::reassignments::{PartitionMove, ReplicationFactorChange};

pub async fn alter(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let version = req.api_version;
    // v0 has no flag and always allowed it.
    let allow_rf_change = version < 1 || request.allow_replication_factor_change;
    let replication_factor = if allow_rf_change {
        ReplicationFactorChange::Allowed
    } else {
        ReplicationFactorChange::Refused
    };
    let moves = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|wanted| PartitionMove {
                topic: topic.name.to_string(),
                partition: wanted.partition_index,
                target: wanted
                    .replicas
                    .as_ref()
                    .map(|replicas| replicas.iter().map(|b| b.0).collect()),
            })
        })
        .collect();
    // One outcome per partition, in request order.
    let mut outcomes = ops::reassignments::alter_reassignments(ctx, moves, replication_factor)
        .await
        .into_iter();
    let responses = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .zip(outcomes.by_ref())
                .map(|(wanted, outcome)| {
                    let response = ReassignablePartitionResponse::default()
                        .with_partition_index(wanted.partition_index);
                    match outcome.map_err(Refusal::from) {
                        Ok(()) => response,
                        Err(refusal) => response
                            .with_error_code(refusal.code)
                            .with_error_message(Some(str_bytes(refusal.message))),
                    }
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_responses(responses)
}

pub fn list(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: &ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    // Negative partition indexes name no partition, so they match nothing.
    let wanted: Option<Vec<(String, u32)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|topic| {
                topic
                    .partition_indexes
                    .iter()
                    .filter_map(|&index| Some((topic.name.to_string(), u32::try_from(index).ok()?)))
            })
            .collect()
    });
    let ids = |list: &[i32]| list.iter().map(|b| BrokerId(*b)).collect();
    let topics = ops::reassignments::list_reassignments(ctx, wanted.as_deref())
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(i32::try_from(p.partition).unwrap_or(i32::MAX))
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding))
                        .with_removing_replicas(ids(&p.removing))
                })
                .collect();
            OngoingTopicReassignment::default()
                .with_name(topic_name(topic.topic))
                .with_partitions(partitions)
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
