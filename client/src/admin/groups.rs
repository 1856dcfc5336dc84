//! Consumer group administration: ListGroups (every broker), DescribeGroups, DeleteGroups,
//! and a group's committed offsets (OffsetFetch, OffsetCommit as nobody, OffsetDelete), each
//! sent to the group's coordinator.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetDeleteRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Admin;
use crate::error::{Error, Result};
use crate::group::coordinator::Coordinator;
use crate::group::offsets::{self, Committer, OffsetAndMetadata};
use crate::group::protocol::{self, CONSUMER_PROTOCOL_TYPE};
use crate::record::TopicPartition;

/// A group as ListGroups names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupListing {
    pub group_id: String,
    /// "consumer" for consumer groups; "" for a group that only holds committed offsets.
    pub protocol_type: String,
    /// Stable, Empty, PreparingRebalance, ... (ListGroups v4+; `None` from older brokers).
    pub state: Option<String>,
}

/// One member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// Decoded from the consumer protocol's assignment; empty for other protocol types.
    pub assignment: Vec<TopicPartition>,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupDescription {
    pub group_id: String,
    /// Kafka's state names; "Dead" for a group that does not exist.
    pub state: String,
    pub protocol_type: String,
    /// The assignor of the current generation ("" while none is chosen).
    pub protocol: String,
    pub coordinator: Option<i32>,
    pub members: Vec<MemberDescription>,
}

fn group_id(id: &str) -> GroupId {
    GroupId(StrBytes::from_string(id.to_owned()))
}

impl Admin {
    fn coordinator(&self, group: &str) -> std::sync::Arc<Coordinator> {
        Coordinator::new(self.client.clone(), group)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.client.config().api_timeout
    }

    /// Every group of every broker (each broker lists the groups it coordinates).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let metadata = self
            .client
            .retry(&[], || self.client.refresh_metadata(&[], false))
            .await?;
        let request = ListGroupsRequest::default();
        let mut groups = BTreeMap::new();
        for &broker in metadata.brokers.keys() {
            let response = self
                .client
                .retry(&[], || self.client.send_to(broker, &request, 0, 4))
                .await?;
            Error::check(response.error_code, || {
                Some(format!("ListGroups on broker {broker}"))
            })?;
            for g in response.groups {
                let listing = GroupListing {
                    group_id: g.group_id.0.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    state: (!g.group_state.is_empty()).then(|| g.group_state.to_string()),
                };
                groups.insert(listing.group_id.clone(), listing);
            }
        }
        Ok(groups.into_values().collect())
    }

    /// `group` as its coordinator describes it.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let coordinator = self.coordinator(group);
        let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let response = coordinator
            .send(
                |_| request.clone(),
                (0, 5),
                None,
                self.deadline(),
                |r| r.groups.first().map_or(0, |g| g.error_code),
            )
            .await?;
        let described = response
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("empty DescribeGroups response".to_owned()))?;
        Error::check(described.error_code, || {
            Some(format!("describing group {group}"))
        })?;
        let consumer = described.protocol_type.as_str() == CONSUMER_PROTOCOL_TYPE;
        let members = described
            .members
            .into_iter()
            .map(|m| {
                let assignment = if consumer {
                    protocol::decode_assignment(m.member_assignment)?
                } else {
                    Vec::new()
                };
                Ok(MemberDescription {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.as_ref().map(ToString::to_string),
                    client_id: m.client_id.to_string(),
                    host: m.client_host.to_string(),
                    assignment,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GroupDescription {
            group_id: described.group_id.0.to_string(),
            state: described.group_state.to_string(),
            protocol_type: described.protocol_type.to_string(),
            protocol: described.protocol_data.to_string(),
            coordinator: coordinator.node_id(),
            members,
        })
    }

    /// Deletes `groups` (each must be empty); one result per group, in order.
    pub async fn delete_groups(&self, groups: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let mut results = Vec::new();
        for group in groups {
            let coordinator = self.coordinator(group);
            let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
            let sent = coordinator
                .send(
                    |_| request.clone(),
                    (0, 2),
                    None,
                    self.deadline(),
                    |r| r.results.first().map_or(0, |g| g.error_code),
                )
                .await;
            let result = sent.and_then(|response| {
                let answer = response
                    .results
                    .first()
                    .ok_or_else(|| Error::Protocol("empty DeleteGroups response".to_owned()))?;
                Error::check(answer.error_code, || {
                    Some(format!("deleting group {group}"))
                })
            });
            results.push((group.clone(), result));
        }
        Ok(results)
    }

    /// Every committed offset of `group`.
    pub async fn list_group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        let found = offsets::fetch(&self.coordinator(group), None, self.deadline()).await?;
        Ok(found
            .into_iter()
            .filter_map(|(tp, offset)| Some((tp, offset?)))
            .collect())
    }

    /// Commits `offsets` for `group` as no member (generation -1): the coordinator accepts it
    /// only while the group has no members, as Kafka's does.
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        offsets::commit(
            &self.coordinator(group),
            &Committer::admin(),
            offsets,
            self.deadline(),
        )
        .await
    }

    /// Deletes the committed offsets of `partitions` in `group` (OffsetDelete); a partition
    /// the group still consumes fails with GROUP_SUBSCRIBED_TO_TOPIC. One result per partition.
    pub async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        let mut topics: BTreeMap<&str, Vec<OffsetDeleteRequestPartition>> = BTreeMap::new();
        for tp in partitions {
            topics
                .entry(&tp.topic)
                .or_default()
                .push(OffsetDeleteRequestPartition::default().with_partition_index(tp.partition));
        }
        let request = OffsetDeleteRequest::default()
            .with_group_id(group_id(group))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetDeleteRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let response = self
            .coordinator(group)
            .send(
                |_| request.clone(),
                (0, 0),
                None,
                self.deadline(),
                |r| r.error_code,
            )
            .await?;
        Error::check(response.error_code, || {
            Some(format!("deleting offsets of group {group}"))
        })?;
        let mut by_tp: HashMap<TopicPartition, i16> = HashMap::new();
        for topic in &response.topics {
            for p in &topic.partitions {
                by_tp.insert(
                    TopicPartition::new(topic.name.0.to_string(), p.partition_index),
                    p.error_code,
                );
            }
        }
        Ok(partitions
            .iter()
            .map(|tp| {
                let result = match by_tp.get(tp) {
                    Some(&code) => Error::check(code, || Some(format!("deleting offset of {tp}"))),
                    None => Err(Error::Protocol(format!("no result for {tp}"))),
                };
                (tp.clone(), result)
            })
            .collect())
    }

    /// ListOffsets of each `(partition, timestamp)`: [`crate::consumer::EARLIEST`],
    /// [`crate::consumer::LATEST`] or a time in ms (-1 in the answer: no record at or after it).
    pub async fn list_offsets(
        &self,
        partitions: &[(TopicPartition, i64)],
    ) -> Result<HashMap<TopicPartition, i64>> {
        crate::consumer::list_offsets(&self.client, partitions, false).await
    }
}
