//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, translated to
//! [`ops::configs`]: topic configs are described from the image and altered through one
//! metadata command per resource; broker configs come from this broker's static configuration,
//! so they are described read-only and never altered. AlterConfigs and IncrementalAlterConfigs
//! differ only in how a wire resource becomes a [`ConfigAlteration`].

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_request, incremental_alter_configs_response,
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::context::BrokerContext;
use crate::kafka::errors::{Failure, Refusal, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::str_bytes;
use crate::ops::configs::{ConfigAlteration, ConfigEdit, ConfigEntry, ConfigOp, ConfigResource};
use crate::ops::{self, Mode, OpsError};
use crate::topic_config;

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

pub fn describe(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let version = req.api_version;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let described = config_resource(resource.resource_type, &resource.resource_name)
                .and_then(|r| ops::configs::describe_configs(ctx, &r).map_err(Refusal::from));
            match described {
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
                Err(refusal) => result
                    .with_error_code(refusal.code)
                    .with_error_message(Some(str_bytes(refusal.message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_entry(version: i16, entry: ConfigEntry) -> DescribeConfigsResourceResult {
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
    _req: &RequestContext,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let alterations = request.resources.iter().map(|resource| {
        let configs = resource
            .configs
            .iter()
            .map(|config| {
                (
                    config.name.to_string(),
                    config.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        let alteration = Ok(ConfigAlteration::Replace(configs));
        (resource.resource_type, &resource.resource_name, alteration)
    });
    let outcomes = alter_each(ctx, alterations.collect(), request.validate_only).await;
    let responses = request
        .resources
        .iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let response = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match outcome {
                Ok(()) => response.with_error_message(None),
                Err(refusal) => response
                    .with_error_code(refusal.code)
                    .with_error_message(Some(str_bytes(refusal.message))),
            }
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn incremental_alter(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let alterations = request.resources.iter().map(|resource| {
        let alteration = resource
            .configs
            .iter()
            .map(config_edit)
            .collect::<Result<_, _>>()
            .map(ConfigAlteration::Edit);
        (resource.resource_type, &resource.resource_name, alteration)
    });
    let outcomes = alter_each(ctx, alterations.collect(), request.validate_only).await;
    let responses = request
        .resources
        .iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let response =
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone());
            match outcome {
                Ok(()) => response.with_error_message(None),
                Err(refusal) => response
                    .with_error_code(refusal.code)
                    .with_error_message(Some(str_bytes(refusal.message))),
            }
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// One wire edit; an operation Kafka does not define refuses the resource.
fn config_edit(
    config: &incremental_alter_configs_request::AlterableConfig,
) -> Result<ConfigEdit, Refusal> {
    let op = match config.config_operation {
        OP_SET => ConfigOp::Set,
        OP_DELETE => ConfigOp::Delete,
        OP_APPEND => ConfigOp::Append,
        OP_SUBTRACT => ConfigOp::Subtract,
        op => {
            return Err(Refusal::with_message(
                Failure::Request(RequestProblem::Unsupported),
                format!("unknown config operation {op} for `{}`", &*config.name),
            ))
        }
    };
    Ok(ConfigEdit {
        key: config.name.to_string(),
        op,
        value: config.value.as_ref().map(|v| v.to_string()),
    })
}

/// Alters each `(resource type, name, alteration)` in order, one outcome each. Kafka refuses
/// every entry of a resource named more than once in one request.
async fn alter_each(
    ctx: &BrokerContext,
    alterations: Vec<(i8, &StrBytes, Result<ConfigAlteration, Refusal>)>,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let duplicates = ops::duplicates(alterations.iter().map(|(kind, name, _)| (*kind, *name)));
    let mode = Mode::from_validate_only(validate_only);
    let mut outcomes = Vec::with_capacity(alterations.len());
    for (kind, name, alteration) in alterations {
        let outcome = if duplicates.contains(&(kind, name)) {
            Err(OpsError::DuplicateResource(name.to_string()).into())
        } else {
            match (config_resource(kind, name), alteration) {
                (Err(refusal), _) | (_, Err(refusal)) => Err(refusal),
                (Ok(resource), Ok(alteration)) => {
                    ops::configs::alter_configs(ctx, &resource, &alteration, mode)
                        .await
                        .map_err(Refusal::from)
                }
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

fn config_resource(resource_type: i8, name: &str) -> Result<ConfigResource, Refusal> {
    match resource_type {
        RESOURCE_TOPIC => Ok(ConfigResource::Topic(name.to_owned())),
        RESOURCE_BROKER => Ok(ConfigResource::Broker(name.to_owned())),
        other => Err(Refusal::with_message(
            Failure::Request(RequestProblem::Unsupported),
            format!("resource type {other} is not supported (only topics and brokers)"),
        )),
    }
}
