//! CreateTopics: turns each requested topic into one `CreateTopic` metadata command (or, for
//! `validate_only`, a dry run of it on a copy of the image), and waits until a created topic is
//! visible on this broker so that the client's next Metadata request here finds it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
use streambus_raft::command::{BrokerId, CreateTopic, TopicAssignment, TopicId};
use streambus_raft::{MetadataCommand, MetadataResponse};

use super::{new_topic_id, str_bytes, to_uuid};
use crate::config::TopicsConfig;
use crate::context::BrokerContext;
use crate::kafka::errors::{code, code_and_message, Failure, RequestProblem};
use crate::topic_config::{self, ConfigProblem};

/// Bounds the wait for a committed topic to reach this broker's image. Past it the topic exists
/// anyway; the client's Metadata retries find it.
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

/// An error code and the message the client sees with it.
type Refusal = (i16, String);

/// A topic created (or that a dry run would create).
struct Created {
    /// `None` for a dry run: no topic id exists that a client could use.
    topic_id: Option<TopicId>,
    /// The replica lists by partition, when the state machine reported them.
    assignments: Option<Vec<Vec<BrokerId>>>,
    configs: BTreeMap<String, String>,
}

pub async fn handle(
    ctx: &BrokerContext,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut occurrences: HashMap<&TopicName, usize> = HashMap::new();
    for topic in &request.topics {
        *occurrences.entry(&topic.name).or_default() += 1;
    }
    let duplicates: HashSet<TopicName> = occurrences
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .map(|(name, _)| name.clone())
        .collect();
    // Kafka answers a duplicated name once, with INVALID_REQUEST, and creates none of its copies.
    let mut reported = HashSet::new();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let outcome = if duplicates.contains(&topic.name) {
            if !reported.insert(topic.name.clone()) {
                continue;
            }
            Err((
                code(Failure::Request(RequestProblem::DuplicateResource)),
                format!(
                    "topic `{}` appears more than once in the request",
                    &*topic.name
                ),
            ))
        } else {
            create(ctx, topic, request.validate_only).await
        };
        results.push(result(ctx, version, topic.name.clone(), outcome));
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn create(
    ctx: &BrokerContext,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<Created, Refusal> {
    let name = topic.name.to_string();
    let configs = topic_configs(topic)?;
    let assignment = assignment(&ctx.config.topics, topic)?;
    let command = MetadataCommand::CreateTopic(CreateTopic {
        name: name.clone(),
        topic_id: new_topic_id(),
        assignment,
        configs: configs.clone(),
    });
    if validate_only {
        let mut dry = (*ctx.image()).clone();
        return match dry.apply(dry.metadata_offset() + 1, &command) {
            MetadataResponse::Rejected(rejection) => {
                Err(code_and_message(Failure::Rejected(&rejection)))
            }
            response => Ok(Created {
                topic_id: None,
                assignments: created_assignments(response).map(|(_, assignments)| assignments),
                configs,
            }),
        };
    }
    let response = ctx
        .write(command)
        .await
        .map_err(|error| code_and_message(Failure::Metadata(&error)))?;
    let created = created_assignments(response);
    if let Some((topic_id, _)) = &created {
        ctx.node
            .wait_for_image(VISIBILITY_WAIT, |image| {
                image
                    .topic_by_name(&name)
                    .is_some_and(|t| t.topic_id == *topic_id)
            })
            .await;
    }
    Ok(Created {
        topic_id: created.as_ref().map(|(topic_id, _)| *topic_id),
        assignments: created.map(|(_, assignments)| assignments),
        configs,
    })
}

fn created_assignments(response: MetadataResponse) -> Option<(TopicId, Vec<Vec<BrokerId>>)> {
    match response {
        MetadataResponse::TopicCreated {
            topic_id,
            assignments,
        } => Some((topic_id, assignments)),
        _ => None,
    }
}

/// The requested configs, each validated (the image stores only values `validate` accepted).
fn topic_configs(topic: &CreatableTopic) -> Result<BTreeMap<String, String>, Refusal> {
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        let key = config.name.to_string();
        let Some(value) = &config.value else {
            let problem = ConfigProblem::InvalidValue {
                key,
                value: "null".to_owned(),
                expected: "a value (null is not supported for topic configs)",
            };
            return Err(code_and_message(Failure::Config(&problem)));
        };
        topic_config::validate(&key, value)
            .map_err(|problem| code_and_message(Failure::Config(&problem)))?;
        if configs.insert(key, value.to_string()).is_some() {
            return Err((
                code(Failure::Request(RequestProblem::DuplicateResource)),
                format!("config `{}` is given more than once", config.name),
            ));
        }
    }
    Ok(configs)
}

/// Explicit replica lists, or a partition count and replication factor (-1: the broker's
/// defaults). Zero is left to the state machine, which rejects it; negative values cannot be
/// expressed in the command, so they are refused here.
fn assignment(defaults: &TopicsConfig, topic: &CreatableTopic) -> Result<TopicAssignment, Refusal> {
    if !topic.assignments.is_empty() {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err((
                code(Failure::Request(RequestProblem::Inconsistent)),
                "num_partitions and replication_factor must be -1 when assignments are given"
                    .to_owned(),
            ));
        }
        return explicit_assignment(&topic.assignments)
            .map(TopicAssignment::Explicit)
            .map_err(|message| {
                (
                    code(Failure::Request(RequestProblem::InvalidReplicaAssignment)),
                    message,
                )
            });
    }
    let partitions = match topic.num_partitions {
        -1 => defaults.num_partitions,
        n if n >= 0 => n as u32,
        n => {
            return Err((
                code(Failure::Request(RequestProblem::InvalidPartitions)),
                format!("number of partitions must be positive (or -1 for the default), got {n}"),
            ))
        }
    };
    let replication_factor = match topic.replication_factor {
        -1 => defaults.default_replication_factor,
        n if n >= 0 => n as u16,
        n => {
            return Err((
                code(Failure::Request(RequestProblem::InvalidReplicationFactor)),
                format!("replication factor must be positive (or -1 for the default), got {n}"),
            ))
        }
    };
    Ok(TopicAssignment::Auto {
        partitions,
        replication_factor,
    })
}

/// Replica lists indexed by partition; the request's partition indexes must be exactly
/// `0..assignments.len()`, in any order.
fn explicit_assignment(
    assignments: &[CreatableReplicaAssignment],
) -> Result<Vec<Vec<BrokerId>>, String> {
    let count = assignments.len();
    let mut lists: Vec<Option<Vec<BrokerId>>> = vec![None; count];
    for assignment in assignments {
        let index = assignment.partition_index;
        let slot = usize::try_from(index)
            .ok()
            .and_then(|i| lists.get_mut(i))
            .ok_or_else(|| format!("partition {index} is outside 0..{count}: assignments must be contiguous from 0"))?;
        if slot.is_some() {
            return Err(format!("partition {index} is assigned more than once"));
        }
        *slot = Some(
            assignment
                .broker_ids
                .iter()
                .map(|broker| broker.0)
                .collect(),
        );
    }
    // `count` distinct indexes below `count` fill every slot.
    Ok(lists.into_iter().flatten().collect())
}

fn result(
    ctx: &BrokerContext,
    version: i16,
    name: TopicName,
    outcome: Result<Created, Refusal>,
) -> CreatableTopicResult {
    let result = CreatableTopicResult::default().with_name(name);
    let created = match outcome {
        Ok(created) => created,
        Err((code, message)) => {
            return result
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message)));
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
        let configs = topic_config::describe(&ctx.config, &created.configs)
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

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::BrokerId as WireBrokerId;

    use super::*;

    fn replicas(partition_index: i32, brokers: &[i32]) -> CreatableReplicaAssignment {
        CreatableReplicaAssignment::default()
            .with_partition_index(partition_index)
            .with_broker_ids(brokers.iter().map(|&b| WireBrokerId(b)).collect())
    }

    #[test]
    fn explicit_assignments_are_indexed_by_partition() {
        let lists = explicit_assignment(&[replicas(1, &[2, 3]), replicas(0, &[1, 2])]).unwrap();
        assert_eq!(lists, vec![vec![1, 2], vec![2, 3]]);
    }

    #[test]
    fn explicit_assignments_must_cover_every_partition_once() {
        assert!(explicit_assignment(&[replicas(0, &[1]), replicas(2, &[1])]).is_err());
        assert!(explicit_assignment(&[replicas(0, &[1]), replicas(0, &[2])]).is_err());
        assert!(explicit_assignment(&[replicas(-1, &[1])]).is_err());
    }
}
