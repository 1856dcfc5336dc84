//! CreateTopics: each requested topic becomes one [`ops::topics::create_topic`] call (a dry run
//! for `validate_only`); a created topic is visible on this broker when it is answered, so the
//! client's next Metadata request here finds it.

use std::collections::HashSet;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};

use crate::context::BrokerContext;
use crate::kafka::errors::{Failure, Refusal, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{str_bytes, to_uuid};
use crate::ops::topics::{CreatedTopic, Layout, NewTopic, PartitionReplicas};
use crate::ops::{self, Mode, OpsError};

pub async fn handle(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let version = req.api_version;
    let duplicates = ops::duplicates(request.topics.iter().map(|topic| &topic.name));
    let mode = Mode::from_validate_only(request.validate_only);
    // Kafka answers a duplicated name once, with INVALID_REQUEST, and creates none of its copies.
    let mut reported = HashSet::new();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let outcome: Result<CreatedTopic, Refusal> = if duplicates.contains(&topic.name) {
            if !reported.insert(&topic.name) {
                continue;
            }
            Err(OpsError::DuplicateTopic(topic.name.to_string()).into())
        } else {
            match new_topic(topic) {
                Ok(new) => ops::topics::create_topic(ctx, new, mode)
                    .await
                    .map_err(Refusal::from),
                Err(refusal) => Err(refusal),
            }
        };
        results.push(result(version, topic.name.clone(), outcome));
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// The topic asked for; -1 counts mean the broker's defaults.
fn new_topic(topic: &CreatableTopic) -> Result<NewTopic, Refusal> {
    let layout = if topic.assignments.is_empty() {
        Layout::Auto {
            partitions: (topic.num_partitions != -1).then_some(topic.num_partitions),
            replication_factor: (topic.replication_factor != -1)
                .then_some(topic.replication_factor),
        }
    } else if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err(Refusal::with_message(
            Failure::Request(RequestProblem::Inconsistent),
            "num_partitions and replication_factor must be -1 when assignments are given",
        ));
    } else {
        Layout::Explicit(
            topic
                .assignments
                .iter()
                .map(|assignment| PartitionReplicas {
                    partition: assignment.partition_index,
                    replicas: assignment.broker_ids.iter().map(|b| b.0).collect(),
                })
                .collect(),
        )
    };
    Ok(NewTopic {
        name: topic.name.to_string(),
        layout,
        configs: topic
            .configs
            .iter()
            .map(|config| {
                let value = config.value.as_ref().map(|value| value.to_string());
                (config.name.to_string(), value)
            })
            .collect(),
    })
}

fn result(
    version: i16,
    name: TopicName,
    outcome: Result<CreatedTopic, Refusal>,
) -> CreatableTopicResult {
    let result = CreatableTopicResult::default().with_name(name);
    let created = match outcome {
        Ok(created) => created,
        Err(refusal) => {
            return result
                .with_error_code(refusal.code)
                .with_error_message(Some(str_bytes(refusal.message)));
        }
    };
    let mut result = result.with_error_message(None);
    if version >= 7 {
        if let Some(topic_id) = &created.topic_id {
            result = result.with_topic_id(to_uuid(topic_id));
        }
    }
    if version >= 5 {
        if let Some(assignments) = &created.assignments {
            let replication_factor = assignments
                .first()
                .map_or(-1, |replicas| replicas.len() as i16);
            result = result
                .with_num_partitions(i32::try_from(assignments.len()).unwrap_or(i32::MAX))
                .with_replication_factor(replication_factor);
        }
        let configs = created
            .configs
            .into_iter()
            .map(|config| {
                CreatableTopicConfigs::default()
                    .with_name(str_bytes(config.name))
                    .with_value(Some(str_bytes(config.value)))
                    .with_read_only(false)
                    .with_config_source(config.source.code())
                    .with_is_sensitive(false)
            })
            .collect();
        result = result.with_configs(Some(configs));
    }
    result
}
