//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455): moves are one
//! `AlterReassignments` metadata command for the whole request; the controller's state machine
//! completes each move once its target replicas are in sync, and the listing reads the image.

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
use streambus_raft::command::{AlterReassignments, Reassignment};
use streambus_raft::{MetadataCommand, MetadataResponse};

use super::{str_bytes, topic_name};
use crate::context::BrokerContext;
use crate::kafka::errors::{code_and_message, Failure, RequestProblem};

pub async fn alter(
    ctx: &BrokerContext,
    version: i16,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let image = ctx.image();
    let allow_rf_change = version < 1 || request.allow_replication_factor_change;
    let mut responses = Vec::with_capacity(request.topics.len());
    // (topic slot, partition slot) of each partition sent to the controller.
    let mut sent = Vec::new();
    let mut reassignments = Vec::new();
    let refused = |index: i32, failure: Failure<'_>| {
        let (code, message) = code_and_message(failure);
        ReassignablePartitionResponse::default()
            .with_partition_index(index)
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message)))
    };
    for (topic_slot, topic) in request.topics.iter().enumerate() {
        let record = image.topic_by_name(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in &topic.partitions {
            let index = wanted.partition_index;
            let current =
                record.and_then(|t| u32::try_from(index).ok().and_then(|i| t.partition(i)));
            let Some(current) = current else {
                partitions.push(refused(
                    index,
                    Failure::Request(RequestProblem::UnknownTopic),
                ));
                continue;
            };
            let target: Option<Vec<i32>> = wanted
                .replicas
                .as_ref()
                .map(|r| r.iter().map(|b| b.0).collect());
            let original_count = current.replicas.len() - current.adding_replicas.len();
            if !allow_rf_change && target.as_ref().is_some_and(|t| t.len() != original_count) {
                partitions.push(refused(
                    index,
                    Failure::Request(RequestProblem::InvalidReplicationFactor),
                ));
                continue;
            }
            sent.push((topic_slot, partitions.len()));
            reassignments.push(Reassignment {
                topic: topic.name.to_string(),
                partition: index as u32,
                target,
            });
            partitions.push(ReassignablePartitionResponse::default().with_partition_index(index));
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    if !reassignments.is_empty() {
        let command = MetadataCommand::AlterReassignments(AlterReassignments { reassignments });
        match ctx.write(command).await {
            Ok(MetadataResponse::ReassignmentsAltered { results }) => {
                for ((topic, slot), result) in sent.into_iter().zip(results) {
                    if let Err(rejection) = result {
                        let entry = &mut responses[topic].partitions[slot];
                        *entry = refused(entry.partition_index, Failure::Rejected(&rejection));
                    }
                }
            }
            outcome => {
                let error = match outcome {
                    Err(error) => error,
                    Ok(other) => streambus_raft::RaftError::NoController(format!(
                        "unexpected answer {other:?}"
                    )),
                };
                for (topic, slot) in sent {
                    let entry = &mut responses[topic].partitions[slot];
                    *entry = refused(entry.partition_index, Failure::Metadata(&error));
                }
            }
        }
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_responses(responses)
}

pub fn list(
    ctx: &BrokerContext,
    request: &ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = ctx.image();
    let wanted = |topic: &str, index: usize| match &request.topics {
        None => true,
        Some(topics) => topics
            .iter()
            .any(|t| &*t.name == topic && t.partition_indexes.iter().any(|&i| i as usize == index)),
    };
    let ids = |list: &[i32]| list.iter().map(|b| BrokerId(*b)).collect();
    let topics = image
        .topics()
        .filter_map(|topic| {
            let partitions: Vec<OngoingPartitionReassignment> = topic
                .partitions
                .iter()
                .enumerate()
                .filter(|(index, p)| p.is_reassigning() && wanted(&topic.name, *index))
                .map(|(index, p)| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(index as i32)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding_replicas))
                        .with_removing_replicas(ids(&p.removing_replicas))
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(topic_name(topic.name.clone()))
                    .with_partitions(partitions)
            })
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
