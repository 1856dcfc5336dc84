//! ElectLeaders: preferred (move leadership back to each partition's first replica, e.g. after
//! failovers) or unclean elections, as one `ElectLeaders` metadata command.

use std::collections::BTreeMap;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use streambus_raft::command::{ElectLeaders, ElectionOutcome, ElectionType};
use streambus_raft::{MetadataCommand, MetadataResponse};

use super::{str_bytes, topic_name};
use crate::context::BrokerContext;
use crate::kafka::errors::{code, code_and_message, Failure, RequestProblem};

pub async fn handle(
    ctx: &BrokerContext,
    version: i16,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    // v0 has no top-level error code: a request-wide failure is reported on every partition.
    let requested: Vec<(String, i32)> = request
        .topic_partitions
        .iter()
        .flatten()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p)))
        .collect();
    let fail_all = |error: i16| {
        if version >= 1 {
            return ElectLeadersResponse::default().with_error_code(error);
        }
        let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
        for (topic, index) in &requested {
            by_topic.entry(topic.clone()).or_default().push(
                PartitionResult::default()
                    .with_partition_id(*index)
                    .with_error_code(error),
            );
        }
        ElectLeadersResponse::default().with_replica_election_results(
            by_topic
                .into_iter()
                .map(|(topic, results)| {
                    ReplicaElectionResult::default()
                        .with_topic(topic_name(topic))
                        .with_partition_result(results)
                })
                .collect(),
        )
    };
    let election = match (version, request.election_type) {
        (0, _) | (_, 0) => ElectionType::Preferred,
        (_, 1) => ElectionType::Unclean,
        _ => return fail_all(code(Failure::Request(RequestProblem::Inconsistent))),
    };
    let mut invalid: Vec<(String, i32)> = Vec::new();
    let partitions = request.topic_partitions.map(|topics| {
        let mut wanted = Vec::new();
        for topic in topics {
            for index in topic.partitions {
                match u32::try_from(index) {
                    Ok(index) => wanted.push((topic.topic.to_string(), index)),
                    Err(_) => invalid.push((topic.topic.to_string(), index)),
                }
            }
        }
        wanted
    });
    let command = MetadataCommand::ElectLeaders(ElectLeaders {
        election,
        partitions,
    });
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    let result = |index: i32, failure: Option<Failure<'_>>| match failure {
        None => PartitionResult::default()
            .with_partition_id(index)
            .with_error_message(None),
        Some(failure) => {
            let (code, message) = code_and_message(failure);
            PartitionResult::default()
                .with_partition_id(index)
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message)))
        }
    };
    for (topic, index) in invalid {
        by_topic.entry(topic).or_default().push(result(
            index,
            Some(Failure::Request(RequestProblem::UnknownTopic)),
        ));
    }
    match ctx.write(command).await {
        Ok(MetadataResponse::LeadersElected { results }) => {
            for elected in results {
                let problem = match elected.outcome {
                    ElectionOutcome::Elected { .. } => None,
                    ElectionOutcome::NotNeeded => Some(RequestProblem::ElectionNotNeeded),
                    ElectionOutcome::NotAvailable if election == ElectionType::Preferred => {
                        Some(RequestProblem::PreferredLeaderNotAvailable)
                    }
                    ElectionOutcome::NotAvailable => {
                        Some(RequestProblem::EligibleLeadersNotAvailable)
                    }
                    ElectionOutcome::UnknownTopicOrPartition => Some(RequestProblem::UnknownTopic),
                };
                let index = i32::try_from(elected.partition).unwrap_or(i32::MAX);
                by_topic
                    .entry(elected.topic)
                    .or_default()
                    .push(result(index, problem.map(Failure::Request)));
            }
        }
        Ok(other) => {
            tracing::warn!(?other, "unexpected answer to ElectLeaders");
            return fail_all(code(Failure::Request(RequestProblem::TimedOut)));
        }
        Err(error) => return fail_all(code(Failure::Metadata(&error))),
    }
    let results = by_topic
        .into_iter()
        .map(|(topic, partition_result)| {
            ReplicaElectionResult::default()
                .with_topic(topic_name(topic))
                .with_partition_result(partition_result)
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}
