//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs. Topic configs live in the metadata
//! image and change through one `AlterTopicConfigs` command per resource; broker configs come
//! from this broker's static configuration, so they are described read-only and never altered.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    alter_configs_request, alter_configs_response, incremental_alter_configs_request,
    incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use streambus_raft::command::AlterTopicConfigs;
use streambus_raft::image::TopicRecord;
use streambus_raft::{MetadataCommand, MetadataImage};

use super::str_bytes;
use crate::context::BrokerContext;
use crate::kafka::errors::{code, code_and_message, Failure, RequestProblem};
use crate::topic_config::{self, ConfigProblem, ConfigSource, CLEANUP_POLICY};

/// Kafka's `ConfigResource.Type` values served here.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Kafka's `ConfigType` values (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// Bounds the wait for a committed config change to reach this broker's image.
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

/// An error code and the message the client sees with it.
type Refusal = (i16, String);

/// One described config, topic or broker.
struct Entry {
    name: &'static str,
    value: String,
    source: ConfigSource,
    read_only: bool,
}

pub fn describe(
    ctx: &BrokerContext,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let image = ctx.image();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match described(ctx, &image, &resource) {
                Ok(entries) => {
                    let wanted = resource.configuration_keys.as_ref();
                    let configs = entries
                        .into_iter()
                        .filter(|entry| {
                            wanted.is_none_or(|keys| keys.iter().any(|key| &**key == entry.name))
                        })
                        .map(|entry| describe_entry(version, entry))
                        .collect();
                    result.with_error_message(None).with_configs(configs)
                }
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn described(
    ctx: &BrokerContext,
    image: &MetadataImage,
    resource: &DescribeConfigsResource,
) -> Result<Vec<Entry>, Refusal> {
    match resource.resource_type {
        RESOURCE_TOPIC => {
            let topic = known_topic(image, &resource.resource_name)?;
            Ok(topic_config::describe(&ctx.config, &topic.configs)
                .into_iter()
                .map(|config| Entry {
                    name: config.name,
                    value: config.value,
                    source: config.source,
                    read_only: false,
                })
                .collect())
        }
        RESOURCE_BROKER => broker_entries(ctx, &resource.resource_name),
        other => Err(unsupported_resource_type(other)),
    }
}

/// This broker's settings that clients commonly ask for. The empty name is the cluster-wide
/// dynamic default, which is always empty here since broker configs are static.
fn broker_entries(ctx: &BrokerContext, name: &str) -> Result<Vec<Entry>, Refusal> {
    if name.is_empty() {
        return Ok(Vec::new());
    }
    if name.parse::<i32>().ok() != Some(ctx.broker_id()) {
        return Err((
            code(Failure::Request(RequestProblem::Unsupported)),
            format!(
                "this is broker {}; broker `{name}` describes its own configs",
                ctx.broker_id()
            ),
        ));
    }
    let config = &ctx.config;
    let values = [
        ("broker.id", config.node_id.to_string()),
        ("num.partitions", config.topics.num_partitions.to_string()),
        (
            "default.replication.factor",
            config.topics.default_replication_factor.to_string(),
        ),
        (
            "auto.create.topics.enable",
            config.topics.auto_create_enable.to_string(),
        ),
        (
            "min.insync.replicas",
            config.topics.min_insync_replicas.to_string(),
        ),
        ("compression.type", config.topics.compression_type.clone()),
        ("log.retention.ms", config.log.retention_ms.to_string()),
        (
            "log.retention.bytes",
            config.log.retention_bytes.to_string(),
        ),
        ("log.segment.bytes", config.log.segment_bytes.to_string()),
        (
            "message.max.bytes",
            config.log.max_message_bytes.to_string(),
        ),
    ];
    Ok(values
        .into_iter()
        .map(|(name, value)| Entry {
            name,
            value,
            source: ConfigSource::StaticBroker,
            read_only: true,
        })
        .collect())
}

fn describe_entry(version: i16, entry: Entry) -> DescribeConfigsResourceResult {
    let config_type = config_type(entry.name);
    let result = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(entry.name))
        .with_value(Some(str_bytes(entry.value)))
        .with_read_only(entry.read_only)
        .with_config_source(entry.source.code())
        .with_is_sensitive(false)
        // Every value has one source here, so there are no synonyms to list.
        .with_synonyms(Vec::new());
    if version >= 3 {
        result
            .with_config_type(config_type)
            .with_documentation(None)
    } else {
        result
    }
}

/// The Kafka type of a described config, for clients that parse values by type.
fn config_type(name: &str) -> i8 {
    match name {
        topic_config::CLEANUP_POLICY => TYPE_LIST,
        topic_config::COMPRESSION_TYPE | topic_config::MESSAGE_TIMESTAMP_TYPE => TYPE_STRING,
        topic_config::UNCLEAN_LEADER_ELECTION_ENABLE | "auto.create.topics.enable" => TYPE_BOOLEAN,
        topic_config::INDEX_INTERVAL_BYTES
        | topic_config::MAX_MESSAGE_BYTES
        | topic_config::MIN_INSYNC_REPLICAS
        | topic_config::SEGMENT_BYTES
        | "broker.id"
        | "num.partitions"
        | "default.replication.factor"
        | "log.segment.bytes"
        | "message.max.bytes" => TYPE_INT,
        _ => TYPE_LONG,
    }
}

pub async fn alter(
    ctx: &BrokerContext,
    _version: i16,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let duplicates = duplicate_resources(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, &r.resource_name)),
    );
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let outcome =
            match refused_alter(resource.resource_type, &resource.resource_name, &duplicates) {
                Some(refusal) => Err(refusal),
                None => replace_topic_configs(ctx, resource, request.validate_only).await,
            };
        let response = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        responses.push(match outcome {
            Ok(()) => response.with_error_message(None),
            Err((code, message)) => response
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message))),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Legacy AlterConfigs: the given set becomes the topic's whole config.
async fn replace_topic_configs(
    ctx: &BrokerContext,
    resource: &alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    let mut set = BTreeMap::new();
    for config in &resource.configs {
        let key = config.name.to_string();
        let value = config.value.as_deref().ok_or_else(|| null_value(&key))?;
        topic_config::validate(&key, value)
            .map_err(|problem| code_and_message(Failure::Config(&problem)))?;
        if set.insert(key, value.to_owned()).is_some() {
            return Err(duplicate_key(&config.name));
        }
    }
    let image = ctx.image();
    let topic = known_topic(&image, &resource.resource_name)?;
    if validate_only {
        return Ok(());
    }
    // Every known key as well as the topic's current ones: removing an absent key changes
    // nothing, and this also clears a key set by a write this broker has not applied yet.
    let remove: BTreeSet<String> = topic_config::KEYS
        .iter()
        .map(|&key| key.to_owned())
        .chain(topic.configs.keys().cloned())
        .filter(|key| !set.contains_key(key))
        .collect();
    write_topic_configs(ctx, topic.name.clone(), set, remove.into_iter().collect()).await
}

pub async fn incremental_alter(
    ctx: &BrokerContext,
    _version: i16,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let duplicates = duplicate_resources(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, &r.resource_name)),
    );
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let outcome =
            match refused_alter(resource.resource_type, &resource.resource_name, &duplicates) {
                Some(refusal) => Err(refusal),
                None => change_topic_configs(ctx, resource, request.validate_only).await,
            };
        let response = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        responses.push(match outcome {
            Ok(()) => response.with_error_message(None),
            Err((code, message)) => response
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs on a topic: every operation is checked before the one write.
async fn change_topic_configs(
    ctx: &BrokerContext,
    resource: &incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    let image = ctx.image();
    let topic = known_topic(&image, &resource.resource_name)?;
    let mut seen = HashSet::new();
    let mut set = BTreeMap::new();
    let mut remove = Vec::new();
    for config in &resource.configs {
        let key = config.name.to_string();
        if !seen.insert(key.clone()) {
            return Err(duplicate_key(&config.name));
        }
        let value = config.value.as_deref();
        match config.config_operation {
            OP_SET => {
                let value = value.ok_or_else(|| null_value(&key))?;
                topic_config::validate(&key, value)
                    .map_err(|problem| code_and_message(Failure::Config(&problem)))?;
                set.insert(key, value.to_owned());
            }
            OP_DELETE => {
                if !topic_config::KEYS.contains(&key.as_str()) {
                    return Err(code_and_message(Failure::Config(
                        &ConfigProblem::UnknownKey(key),
                    )));
                }
                remove.push(key);
            }
            op @ (OP_APPEND | OP_SUBTRACT) => {
                let value = value.unwrap_or_default();
                if key != CLEANUP_POLICY {
                    // Validating first answers an unknown key as such.
                    topic_config::validate(&key, value)
                        .map_err(|problem| code_and_message(Failure::Config(&problem)))?;
                    let problem = ConfigProblem::InvalidValue {
                        key,
                        value: value.to_owned(),
                        expected:
                            "APPEND and SUBTRACT apply only to the list config cleanup.policy",
                    };
                    return Err(code_and_message(Failure::Config(&problem)));
                }
                let current = current_value(ctx, topic, &key);
                let changed = if op == OP_APPEND {
                    append_list(&current, value)
                } else {
                    subtract_list(&current, value)
                };
                topic_config::validate(&key, &changed)
                    .map_err(|problem| code_and_message(Failure::Config(&problem)))?;
                set.insert(key, changed);
            }
            op => {
                return Err((
                    code(Failure::Request(RequestProblem::Unsupported)),
                    format!("unknown config operation {op} for `{key}`"),
                ))
            }
        }
    }
    if validate_only {
        return Ok(());
    }
    write_topic_configs(ctx, topic.name.clone(), set, remove).await
}

/// The value a topic runs with for `key`: its own, else the broker's default.
fn current_value(ctx: &BrokerContext, topic: &TopicRecord, key: &str) -> String {
    topic_config::describe(&ctx.config, &topic.configs)
        .into_iter()
        .find(|config| config.name == key)
        .map(|config| config.value)
        .unwrap_or_default()
}

/// `current` with the comma-separated `values` it lacks appended, in order.
fn append_list(current: &str, values: &str) -> String {
    let mut items = list_items(current);
    for value in list_items(values) {
        if !items.contains(&value) {
            items.push(value);
        }
    }
    items.join(",")
}

/// `current` without any of the comma-separated `values`.
fn subtract_list(current: &str, values: &str) -> String {
    let removed = list_items(values);
    list_items(current)
        .into_iter()
        .filter(|item| !removed.contains(item))
        .collect::<Vec<_>>()
        .join(",")
}

fn list_items(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

async fn write_topic_configs(
    ctx: &BrokerContext,
    name: String,
    set: BTreeMap<String, String>,
    remove: Vec<String>,
) -> Result<(), Refusal> {
    let command = MetadataCommand::AlterTopicConfigs(AlterTopicConfigs {
        name: name.clone(),
        set: set.clone(),
        remove: remove.clone(),
    });
    ctx.write(command)
        .await
        .map_err(|error| code_and_message(Failure::Metadata(&error)))?;
    // So that the client's next DescribeConfigs here sees its change.
    ctx.node
        .wait_for_image(VISIBILITY_WAIT, |image| {
            image.topic_by_name(&name).is_none_or(|topic| {
                let configs = &topic.configs;
                remove.iter().all(|key| !configs.contains_key(key))
                    && set
                        .iter()
                        .all(|(key, value)| remove.contains(key) || configs.get(key) == Some(value))
            })
        })
        .await;
    Ok(())
}

fn known_topic<'a>(image: &'a MetadataImage, name: &str) -> Result<&'a TopicRecord, Refusal> {
    image.topic_by_name(name).ok_or_else(|| {
        (
            code(Failure::Request(RequestProblem::UnknownTopic)),
            format!("unknown topic `{name}`"),
        )
    })
}

/// The resources named more than once in one request; Kafka refuses each of their entries.
/// Why an alter of this resource is refused before any topic is looked at; `None` for a topic
/// named once, which the caller alters.
fn refused_alter(
    resource_type: i8,
    name: &StrBytes,
    duplicates: &HashSet<(i8, &StrBytes)>,
) -> Option<Refusal> {
    if duplicates.contains(&(resource_type, name)) {
        return Some(duplicate_resource(name));
    }
    match resource_type {
        RESOURCE_TOPIC => None,
        RESOURCE_BROKER => Some(static_broker_configs()),
        other => Some(unsupported_resource_type(other)),
    }
}

fn duplicate_resources<'a>(
    resources: impl Iterator<Item = (i8, &'a StrBytes)>,
) -> HashSet<(i8, &'a StrBytes)> {
    let mut counts: HashMap<(i8, &StrBytes), usize> = HashMap::new();
    for resource in resources {
        *counts.entry(resource).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .map(|(resource, _)| resource)
        .collect()
}

fn duplicate_resource(name: &str) -> Refusal {
    (
        code(Failure::Request(RequestProblem::DuplicateResource)),
        format!("resource `{name}` is given more than once in the request"),
    )
}

fn duplicate_key(key: &str) -> Refusal {
    (
        code(Failure::Request(RequestProblem::DuplicateResource)),
        format!("config `{key}` is given more than once"),
    )
}

fn null_value(key: &str) -> Refusal {
    let problem = ConfigProblem::InvalidValue {
        key: key.to_owned(),
        value: "null".to_owned(),
        expected: "a value (null is not supported for topic configs)",
    };
    code_and_message(Failure::Config(&problem))
}

fn static_broker_configs() -> Refusal {
    (
        code(Failure::Request(RequestProblem::Unsupported)),
        "broker configs are static".to_owned(),
    )
}

fn unsupported_resource_type(resource_type: i8) -> Refusal {
    (
        code(Failure::Request(RequestProblem::Unsupported)),
        format!("resource type {resource_type} is not supported (only topics and brokers)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_adds_only_missing_values_in_order() {
        assert_eq!(append_list("delete", "compact"), "delete,compact");
        assert_eq!(append_list("delete", "delete"), "delete");
        assert_eq!(append_list("", "compact, delete"), "compact,delete");
        assert_eq!(append_list("compact", ""), "compact");
    }

    #[test]
    fn subtract_removes_every_listed_value() {
        assert_eq!(subtract_list("compact,delete", "delete"), "compact");
        assert_eq!(subtract_list("compact, delete", "compact,delete"), "");
        assert_eq!(subtract_list("delete", "compact"), "delete");
    }

    #[test]
    fn subtracting_the_whole_policy_is_refused_by_validation() {
        let emptied = subtract_list("delete", "delete");
        assert!(topic_config::validate(CLEANUP_POLICY, &emptied).is_err());
    }
}
