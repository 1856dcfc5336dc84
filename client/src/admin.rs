//! [`Admin`]: topic, partition, config and cluster administration over the Kafka admin APIs
//! (CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, IncrementalAlterConfigs,
//! DescribeCluster and Metadata); consumer groups and their offsets in [`groups`]; transactions
//! and producers in [`transactions`].

mod groups;
mod transactions;

pub use groups::{GroupDescription, GroupListing, MemberDescription};
pub use transactions::{
    ProducerDescription, TransactionDescription, TransactionFilter, TransactionListing,
};

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::metadata::{BrokerInfo, ClusterMetadata, TopicInfo};

/// `DescribeConfigs` resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// `DescribeConfigs` resource type of a broker.
const RESOURCE_BROKER: i8 = 4;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's default.
    pub partitions: i32,
    /// -1: the broker's default.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: BTreeMap::new(),
        }
    }

    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// Which configs to describe or alter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
}

impl ConfigResource {
    fn wire(&self) -> (i8, String) {
        match self {
            ConfigResource::Topic(name) => (RESOURCE_TOPIC, name.clone()),
            ConfigResource::Broker(id) => (RESOURCE_BROKER, id.to_string()),
        }
    }
}

/// One config entry as the broker describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub read_only: bool,
    pub is_default: bool,
    pub sensitive: bool,
    /// Kafka's config source code (1 topic, 4 static broker, 5 default, ...).
    pub source: i8,
}

/// A change to one config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    /// Back to the default.
    Delete(String),
}

/// The cluster as DescribeCluster reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterDescription {
    pub cluster_id: String,
    pub controller_id: Option<i32>,
    pub brokers: Vec<BrokerInfo>,
}

/// The admin client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub fn new(client: Client) -> Admin {
        Admin { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `id` if the cluster metadata lists it: an unknown broker fails at once rather than
    /// being retried as if it were briefly unreachable.
    fn known_broker(&self, id: i32) -> Result<i32> {
        if self.client.metadata().brokers.contains_key(&id) {
            Ok(id)
        } else {
            Err(Error::InvalidArgument(format!(
                "broker {id} is not in the cluster"
            )))
        }
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.client.config().request_timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// Creates `topics`; one result per topic, in order. `validate_only` checks without
    /// creating.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<Vec<(String, Result<()>)>> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(&t.name))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = self
            .client
            .retry(&[], || self.client.send_controller(&request, 2, 7))
            .await?;
        let results = response
            .topics
            .iter()
            .map(|t| {
                let result = Error::check(t.error_code, || message(&t.error_message));
                (t.name.0.to_string(), result)
            })
            .collect();
        Ok(order_like(topics.iter().map(|t| t.name.as_str()), results))
    }

    /// Deletes `names`; one result per topic, in order.
    pub async fn delete_topics(&self, names: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topic_names(names.iter().map(|n| topic_name(n)).collect());
        let response = self
            .client
            .retry(&[], || self.client.send_controller(&request, 1, 5))
            .await?;
        let results = response
            .responses
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                (
                    name,
                    Error::check(t.error_code, || message(&t.error_message)),
                )
            })
            .collect();
        Ok(order_like(names.iter().map(String::as_str), results))
    }

    /// Raises `topic` to `total` partitions.
    pub async fn create_partitions(
        &self,
        topic: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(total)
                .with_assignments(None)]);
        let response = self
            .client
            .retry(&[], || self.client.send_controller(&request, 0, 3))
            .await?;
        let result = response
            .results
            .first()
            .ok_or_else(|| Error::Protocol("empty CreatePartitions response".to_owned()))?;
        Error::check(result.error_code, || message(&result.error_message))
    }

    /// Every topic (internal ones included) with partitions, leaders and ISR.
    pub async fn list_topics(&self) -> Result<Arc<ClusterMetadata>> {
        self.client
            .retry(&[], || self.client.refresh_metadata(&[], false))
            .await
    }

    /// `names` as Metadata describes them; an unknown name is an error.
    pub async fn describe_topics(&self, names: &[String]) -> Result<Vec<Arc<TopicInfo>>> {
        let metadata = self
            .client
            .retry(names, || self.client.refresh_metadata(names, false))
            .await?;
        names
            .iter()
            .map(|name| {
                metadata
                    .topics
                    .get(name)
                    .cloned()
                    .ok_or_else(|| Error::UnknownTopicOrPartition(name.clone()))
            })
            .collect()
    }

    /// The configs of `resource`; `keys` empty: all of them.
    pub async fn describe_configs(
        &self,
        resource: &ConfigResource,
        keys: &[String],
    ) -> Result<Vec<ConfigEntry>> {
        let (resource_type, name) = resource.wire();
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name))
                .with_configuration_keys(if keys.is_empty() {
                    None
                } else {
                    Some(
                        keys.iter()
                            .map(|k| StrBytes::from_string(k.clone()))
                            .collect(),
                    )
                }),
        ]);
        let response = match resource {
            ConfigResource::Broker(id) => {
                let id = self.known_broker(*id)?;
                self.client
                    .retry(&[], || self.client.send_to(id, &request, 1, 4))
                    .await?
            }
            ConfigResource::Topic(_) => {
                self.client
                    .retry(&[], || self.client.send_any(&request, 1, 4))
                    .await?
            }
        };
        let result = response
            .results
            .first()
            .ok_or_else(|| Error::Protocol("empty DescribeConfigs response".to_owned()))?;
        Error::check(result.error_code, || message(&result.error_message))?;
        Ok(result
            .configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(ToString::to_string),
                read_only: c.read_only,
                // 5: DEFAULT_CONFIG.
                is_default: c.config_source == 5,
                sensitive: c.is_sensitive,
                source: c.config_source,
            })
            .collect())
    }

    /// Applies `changes` to `resource` with IncrementalAlterConfigs.
    pub async fn alter_configs(
        &self,
        resource: &ConfigResource,
        changes: &[ConfigChange],
        validate_only: bool,
    ) -> Result<()> {
        let (resource_type, name) = resource.wire();
        let configs = changes
            .iter()
            .map(|change| match change {
                ConfigChange::Set(k, v) => AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(v.clone()))),
                ConfigChange::Delete(k) => AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(1)
                    .with_value(None),
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name))
                .with_configs(configs)]);
        // A broker's own configs are altered on that broker, as Kafka requires.
        let response = match resource {
            ConfigResource::Broker(id) => {
                let id = self.known_broker(*id)?;
                self.client
                    .retry(&[], || self.client.send_to(id, &request, 0, 1))
                    .await?
            }
            ConfigResource::Topic(_) => {
                self.client
                    .retry(&[], || self.client.send_controller(&request, 0, 1))
                    .await?
            }
        };
        let result = response
            .responses
            .first()
            .ok_or_else(|| Error::Protocol("empty IncrementalAlterConfigs response".to_owned()))?;
        Error::check(result.error_code, || message(&result.error_message))
    }

    /// Cluster id, controller and brokers.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let request = DescribeClusterRequest::default();
        let response = self
            .client
            .retry(&[], || self.client.send_any(&request, 0, 1))
            .await?;
        Error::check(response.error_code, || message(&response.error_message))?;
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: (response.controller_id.0 >= 0).then_some(response.controller_id.0),
            brokers: response
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(ToString::to_string),
                })
                .collect(),
        })
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn message(text: &Option<StrBytes>) -> Option<String> {
    text.as_ref().map(ToString::to_string)
}

/// Results in the order the caller named the topics; a topic the broker left out gets an error.
fn order_like<'a>(
    names: impl Iterator<Item = &'a str>,
    results: Vec<(String, Result<()>)>,
) -> Vec<(String, Result<()>)> {
    let mut by_name: BTreeMap<String, Result<()>> = results.into_iter().collect();
    names
        .map(|name| {
            let result = by_name
                .remove(name)
                .unwrap_or_else(|| Err(Error::Protocol(format!("no result for topic {name}"))));
            (name.to_owned(), result)
        })
        .collect()
}
