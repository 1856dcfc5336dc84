//! CreatePartitions: grows each topic to the requested partition count with one
//! `CreatePartitions` metadata command (or, for `validate_only`, a dry run of it on a copy of
//! the image), and waits until the new partitions are visible on this broker.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, TopicName};
use streambus_raft::command::{BrokerId, CreatePartitions};
use streambus_raft::{MetadataCommand, MetadataResponse};

use super::str_bytes;
use crate::context::BrokerContext;
use crate::kafka::errors::{code, code_and_message, Failure, RequestProblem};

/// Bounds the wait for committed partitions to reach this broker's image.
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

/// An error code and the message the client sees with it.
type Refusal = (i16, String);

pub async fn handle(
    ctx: &BrokerContext,
    _version: i16,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut occurrences: HashMap<&TopicName, usize> = HashMap::new();
    for topic in &request.topics {
        *occurrences.entry(&topic.name).or_default() += 1;
    }
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let outcome = if occurrences[&topic.name] > 1 {
            Err((
                code(Failure::Request(RequestProblem::DuplicateResource)),
                format!(
                    "topic `{}` appears more than once in the request",
                    &*topic.name
                ),
            ))
        } else {
            grow(ctx, topic, request.validate_only).await
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        results.push(match outcome {
            Ok(()) => result.with_error_message(None),
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

async fn grow(
    ctx: &BrokerContext,
    topic: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), Refusal> {
    let name = topic.name.to_string();
    let invalid = |message: String| {
        (
            code(Failure::Request(RequestProblem::InvalidPartitions)),
            message,
        )
    };
    let total_count = u32::try_from(topic.count)
        .ok()
        .filter(|&count| count > 0)
        .ok_or_else(|| {
            invalid(format!(
                "the partition count must be positive, got {}",
                topic.count
            ))
        })?;
    // The state machine refuses this too; checking here gives Kafka's message when this
    // broker's image already knows the topic.
    if let Some(current) = ctx.image().topic_by_name(&name).map(|t| t.partitions.len()) {
        let requested = total_count as usize;
        if requested < current {
            return Err(invalid(format!(
                "topic currently has {current} partitions, which is higher than the requested {requested}"
            )));
        }
        if requested == current {
            return Err(invalid(format!("topic already has {current} partitions")));
        }
    }
    let assignment: Option<Vec<Vec<BrokerId>>> = topic.assignments.as_ref().map(|assignments| {
        assignments
            .iter()
            .map(|assignment| {
                assignment
                    .broker_ids
                    .iter()
                    .map(|broker| broker.0)
                    .collect()
            })
            .collect()
    });
    let command = MetadataCommand::CreatePartitions(CreatePartitions {
        name: name.clone(),
        total_count,
        assignment,
    });
    if validate_only {
        let mut dry = (*ctx.image()).clone();
        return match dry.apply(dry.metadata_offset() + 1, &command) {
            MetadataResponse::Rejected(rejection) => {
                Err(code_and_message(Failure::Rejected(&rejection)))
            }
            _ => Ok(()),
        };
    }
    ctx.write(command)
        .await
        .map_err(|error| code_and_message(Failure::Metadata(&error)))?;
    ctx.node
        .wait_for_image(VISIBILITY_WAIT, |image| {
            image
                .topic_by_name(&name)
                .is_some_and(|t| t.partitions.len() >= total_count as usize)
        })
        .await;
    Ok(())
}
