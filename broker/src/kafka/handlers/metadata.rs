//! Metadata: live brokers, the controller, and each requested topic's partitions with leader,
//! leader epoch, replicas, ISR and offline replicas, from the local metadata image. Unknown
//! topics are created when `topics.auto_create_enable` is on and the client allows it.

use std::collections::BTreeMap;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId as WireBrokerId, MetadataRequest, MetadataResponse};
use streambus_raft::image::TopicRecord;
use streambus_raft::MetadataImage;

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{from_uuid, str_bytes, to_uuid, topic_name, AUTHORIZED_OPERATIONS_UNSET};
use crate::{endpoints, ops};

pub async fn handle(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: MetadataRequest,
) -> MetadataResponse {
    let version = req.api_version;
    // v0: an empty list means every topic; v1+: null means every topic.
    let requested = match request.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => Some(topics),
        _ => None,
    };
    let allow_auto_create =
        ctx.config.topics.auto_create_enable && (version < 4 || request.allow_auto_topic_creation);
    let mut image = ctx.image();
    let mut topics = Vec::new();
    match requested {
        None => {
            topics.extend(
                image
                    .topics()
                    .map(|topic| describe_topic(&image, version, topic)),
            );
        }
        Some(requested) => {
            let mut created: BTreeMap<String, i16> = BTreeMap::new();
            if allow_auto_create {
                for wanted in &requested {
                    let Some(name) = &wanted.name else { continue };
                    if image.topic_by_name(name).is_none() && !created.contains_key(name.as_str()) {
                        // Each creation waits until this broker shows the topic.
                        let outcome = match ops::topics::auto_create(ctx, name.as_str()).await {
                            Ok(()) => 0,
                            Err(error) => code(Failure::Ops(&error)),
                        };
                        created.insert(name.to_string(), outcome);
                    }
                }
                if !created.is_empty() {
                    image = ctx.image();
                }
            }
            for wanted in requested {
                let found = match &wanted.name {
                    Some(name) => image.topic_by_name(name),
                    None => image.topic_by_id(&from_uuid(&wanted.topic_id)),
                };
                match found {
                    Some(topic) => topics.push(describe_topic(&image, version, topic)),
                    None => {
                        let (error, name) = match &wanted.name {
                            Some(name) => (
                                created
                                    .get(name.as_str())
                                    .copied()
                                    .filter(|c| *c != 0)
                                    .unwrap_or(code(Failure::Request(
                                        RequestProblem::UnknownTopic,
                                    ))),
                                Some(name.clone()),
                            ),
                            None => (code(Failure::Request(RequestProblem::UnknownTopicId)), None),
                        };
                        let mut topic = MetadataResponseTopic::default()
                            .with_error_code(error)
                            .with_name(name);
                        if version >= 10 {
                            topic = topic.with_topic_id(wanted.topic_id);
                        }
                        topics.push(topic);
                    }
                }
            }
        }
    }
    let mut response = MetadataResponse::default()
        .with_brokers(live_brokers(&image))
        .with_topics(topics);
    if version >= 1 {
        response = response.with_controller_id(WireBrokerId(ctx.controller_id()));
    }
    if version >= 2 {
        response = response.with_cluster_id(Some(str_bytes(ctx.cluster_id.to_string())));
    }
    response
}

/// The brokers clients may connect to: registered, not fenced, with a Kafka listener.
fn live_brokers(image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    endpoints::live_kafka_brokers(image)
        .map(|(broker, endpoint)| {
            MetadataResponseBroker::default()
                .with_node_id(WireBrokerId(broker.broker_id))
                .with_host(str_bytes(endpoint.host.clone()))
                .with_port(i32::from(endpoint.port))
                .with_rack(broker.rack.clone().map(str_bytes))
        })
        .collect()
}

fn describe_topic(
    image: &MetadataImage,
    version: i16,
    topic: &TopicRecord,
) -> MetadataResponseTopic {
    // Kafka's offline replicas: on a broker that is gone or whose log directory failed.
    let offline = |id: &i32| {
        image
            .broker(*id)
            .is_none_or(|b| b.fenced || b.log_dir_offline)
    };
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let error = if p.leader.is_none() {
                code(Failure::Request(RequestProblem::LeaderNotAvailable))
            } else {
                0
            };
            let mut partition = MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(index as i32)
                .with_leader_id(WireBrokerId(p.leader.unwrap_or(-1)))
                .with_replica_nodes(p.replicas.iter().map(|r| WireBrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| WireBrokerId(*r)).collect());
            if version >= 7 {
                partition = partition.with_leader_epoch(p.leader_epoch);
            }
            if version >= 5 {
                partition = partition.with_offline_replicas(
                    p.replicas
                        .iter()
                        .filter(|r| offline(r))
                        .map(|r| WireBrokerId(*r))
                        .collect(),
                );
            }
            partition
        })
        .collect();
    let mut response = MetadataResponseTopic::default()
        .with_name(Some(topic_name(topic.name.clone())))
        .with_partitions(partitions);
    if version >= 1 {
        response = response.with_is_internal(crate::coordinator::topic::is_internal(&topic.name));
    }
    if version >= 10 {
        response = response.with_topic_id(to_uuid(&topic.topic_id));
    }
    if version >= 8 {
        response = response.with_topic_authorized_operations(AUTHORIZED_OPERATIONS_UNSET);
    }
    response
}
