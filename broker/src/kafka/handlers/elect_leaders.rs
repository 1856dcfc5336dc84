//! ElectLeaders, translated to [`ops::elections::elect_leaders`]: preferred or unclean
//! elections as one metadata command.

use std::collections::BTreeMap;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use streambus_raft::command::ElectionType;

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, Refusal, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{str_bytes, topic_name};
use crate::ops;

pub async fn handle(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let version = req.api_version;
    let partitions: Option<Vec<(String, i32)>> = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p)))
            .collect()
    });
    let election = match (version, request.election_type) {
        (0, _) | (_, 0) => ElectionType::Preferred,
        (_, 1) => ElectionType::Unclean,
        _ => {
            let error = code(Failure::Request(RequestProblem::Inconsistent));
            return fail_all(version, partitions.as_deref(), error);
        }
    };
    let elections = match ops::elections::elect_leaders(ctx, election, partitions.clone()).await {
        Ok(elections) => elections,
        Err(error) => return fail_all(version, partitions.as_deref(), code(Failure::Ops(&error))),
    };
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for elected in elections {
        let result = PartitionResult::default().with_partition_id(elected.partition);
        let result = match elected.outcome.map_err(Refusal::from) {
            // Kafka's answer has no place for what an unclean election lost but the message of
            // a successful result, which clients ignore and `sbctl` prints.
            Ok(new_leader) => result.with_error_message(new_leader.loss_report().map(str_bytes)),
            Err(refusal) => result
                .with_error_code(refusal.code)
                .with_error_message(Some(str_bytes(refusal.message))),
        };
        by_topic.entry(elected.topic).or_default().push(result);
    }
    ElectLeadersResponse::default().with_replica_election_results(by_topic_results(by_topic))
}

/// A request-wide failure: v1+ has a top-level error code; v0 has none, so the failure is
/// reported on every partition requested.
fn fail_all(version: i16, requested: Option<&[(String, i32)]>, error: i16) -> ElectLeadersResponse {
    if version >= 1 {
        return ElectLeadersResponse::default().with_error_code(error);
    }
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, index) in requested.into_iter().flatten() {
        by_topic.entry(topic.clone()).or_default().push(
            PartitionResult::default()
                .with_partition_id(*index)
                .with_error_code(error),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(by_topic_results(by_topic))
}

fn by_topic_results(
    by_topic: BTreeMap<String, Vec<PartitionResult>>,
) -> Vec<ReplicaElectionResult> {
    by_topic
        .into_iter()
        .map(|(topic, results)| {
            ReplicaElectionResult::default()
                .with_topic(topic_name(topic))
                .with_partition_result(results)
        })
        .collect()
}
