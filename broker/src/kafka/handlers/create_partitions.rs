//! CreatePartitions: each topic grows to the requested partition count through one
//! [`ops::topics::create_partitions`] call (a dry run for `validate_only`), answered once the
//! new partitions are visible on this broker.

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use crate::context::BrokerContext;
use crate::kafka::errors::Refusal;
use crate::kafka::request::RequestContext;
use crate::kafka::wire::str_bytes;
use crate::ops::topics::NewPartitions;
use crate::ops::{self, Mode, OpsError};

pub async fn handle(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let duplicates = ops::duplicates(request.topics.iter().map(|topic| &topic.name));
    let mode = Mode::from_validate_only(request.validate_only);
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let outcome = if duplicates.contains(&topic.name) {
            Err(OpsError::DuplicateTopic(topic.name.to_string()))
        } else {
            ops::topics::create_partitions(ctx, new_partitions(topic), mode).await
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        results.push(match outcome.map_err(Refusal::from) {
            Ok(()) => result.with_error_message(None),
            Err(refusal) => result
                .with_error_code(refusal.code)
                .with_error_message(Some(str_bytes(refusal.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

fn new_partitions(topic: &CreatePartitionsTopic) -> NewPartitions {
    NewPartitions {
        topic: topic.name.to_string(),
        total_count: topic.count,
        assignments: topic.assignments.as_ref().map(|assignments| {
            assignments
                .iter()
                .map(|assignment| assignment.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        }),
    }
}
