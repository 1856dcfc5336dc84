//! OffsetCommit, OffsetFetch and OffsetDelete: committed consumer offsets, kept by the group
//! coordinator in `__consumer_offsets`. A commit is answered once its record is committed there.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse,
};
use streambus_raft::MetadataImage;

use super::groups::{coordinator_code, group_code};
use crate::context::BrokerContext;
use crate::group::machine::{CommitPartition, CommitRequest};
use crate::group::offsets::Committed;
use crate::group::{check_group_id, GroupProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{str_bytes, to_uuid, topic_name};

/// Whether `topic` has partition `partition` in `image`.
pub(super) fn exists(image: &MetadataImage, topic: &str, partition: i32) -> bool {
    image
        .topic_by_name(topic)
        .is_some_and(|t| usize::try_from(partition).is_ok_and(|index| index < t.partitions.len()))
}

/// Per topic, each partition's code: those decided before the coordinator was asked, and its
/// answers (in the order the partitions were sent) for the `None` slots.
pub(super) fn fill(decided: Vec<Vec<Option<i16>>>, answered: Vec<i16>) -> Vec<Vec<i16>> {
    let mut answered = answered.into_iter();
    decided
        .into_iter()
        .map(|topic| {
            topic
                .into_iter()
                .map(|code| code.or_else(|| answered.next()).unwrap_or(0))
                .collect()
        })
        .collect()
}

// -------------------------------------------------------------------- OffsetCommit

pub async fn commit(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let version = req.api_version;
    let group_id = request.group_id.to_string();
    let image = ctx.image();
    // Each requested partition's code, filled in below (`None`: sent to the coordinator).
    let mut codes: Vec<Vec<Option<i16>>> = Vec::with_capacity(request.topics.len());
    let mut partitions = Vec::new();
    for topic in &request.topics {
        let mut topic_codes = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            if let Err(problem) = check_group_id(&group_id) {
                topic_codes.push(Some(group_code(Some(problem))));
            } else if !exists(&image, &topic.name, p.partition_index) {
                topic_codes.push(Some(group_code(Some(
                    GroupProblem::UnknownTopicOrPartition,
                ))));
            } else {
                topic_codes.push(None);
                partitions.push(CommitPartition {
                    topic: topic.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    topic_id: image
                        .topic_by_name(&topic.name)
                        .map(|t| to_uuid(&t.topic_id))
                        .unwrap_or_default(),
                    retention_ms: if (2..=4).contains(&version) {
                        request.retention_time_ms
                    } else {
                        -1
                    },
                });
            }
        }
        codes.push(topic_codes);
    }
    // What the coordinator answers, in the order the partitions were sent.
    let mut answered: Vec<i16> = Vec::new();
    if !partitions.is_empty() {
        let count = partitions.len();
        let commit = CommitRequest {
            api_version: version,
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            generation_id: request.generation_id_or_member_epoch,
            partitions,
        };
        answered = match ctx.groups.commit(&group_id, commit).await {
            Ok(Ok(outcomes)) => outcomes
                .into_iter()
                .map(|(_, _, p)| group_code(p))
                .collect(),
            Ok(Err(problem)) => vec![group_code(Some(problem)); count],
            Err(error) => vec![coordinator_code(&error); count],
        };
    }
    let topics = request
        .topics
        .iter()
        .zip(fill(codes, answered))
        .map(|(topic, codes)| {
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .zip(codes)
                        .map(|(p, code)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

// -------------------------------------------------------------------- OffsetFetch

/// One group's wanted partitions (`None`: all) and its answer.
struct GroupFetch {
    group_id: String,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    /// OffsetFetch v7+: a partition whose offset an open transaction commits is answered
    /// UNSTABLE_OFFSET_COMMIT (the client asks again) rather than with the older offset.
    require_stable: bool,
}

/// Kafka's UNSTABLE_OFFSET_COMMIT.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// A fetched partition: offset, leader epoch, metadata and error code.
type Fetched = (String, i32, Option<Committed>, i16);

async fn fetch_group(ctx: &BrokerContext, fetch: GroupFetch) -> Result<Vec<Fetched>, i16> {
    if let Err(problem) = check_group_id(&fetch.group_id) {
        return Err(group_code(Some(problem)));
    }
    let wanted = fetch.wanted.clone();
    match ctx.groups.fetch(&fetch.group_id, wanted).await {
        Ok(fetched) => Ok(fetched
            .into_iter()
            .map(|(topic, partition, committed, pending)| {
                if pending && fetch.require_stable {
                    (topic, partition, None, UNSTABLE_OFFSET_COMMIT)
                } else {
                    (topic, partition, committed, 0)
                }
            })
            .collect()),
        Err(error) => Err(coordinator_code(&error)),
    }
}

/// A topic's fetched partitions: index, offset (if committed) and error code.
type TopicFetched = (String, Vec<(i32, Option<Committed>, i16)>);

/// Groups `fetched` by topic, keeping the first appearance order.
fn by_topic(fetched: Vec<Fetched>) -> Vec<TopicFetched> {
    let mut topics: Vec<TopicFetched> = Vec::new();
    for (topic, partition, committed, code) in fetched {
        match topics.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, partitions)) => partitions.push((partition, committed, code)),
            None => topics.push((topic, vec![(partition, committed, code)])),
        }
    }
    topics
}

pub async fn fetch(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let version = req.api_version;
    let require_stable = version >= 7 && request.require_stable;
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let wanted = group.topics.as_ref().map(|topics| {
                topics
                    .iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let fetched = fetch_group(
                ctx,
                GroupFetch {
                    group_id: group.group_id.to_string(),
                    wanted,
                    require_stable,
                },
            )
            .await;
            let answered = OffsetFetchResponseGroup::default().with_group_id(group.group_id);
            groups.push(match fetched {
                Err(code) => answered.with_error_code(code),
                Ok(fetched) => answered.with_topics(
                    by_topic(fetched)
                        .into_iter()
                        .map(|(topic, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(topic_name(topic))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|(index, committed, code)| {
                                            let (offset, epoch, metadata) = parts(committed);
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(index)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(str_bytes(metadata)))
                                                .with_error_code(code)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let fetched = fetch_group(
        ctx,
        GroupFetch {
            group_id: request.group_id.to_string(),
            wanted: wanted.clone(),
            require_stable,
        },
    )
    .await;
    let (top, fetched) = match fetched {
        Ok(fetched) => (0, fetched),
        // v1 has no top-level error: every asked partition carries it.
        Err(code) => (
            code,
            wanted
                .unwrap_or_default()
                .into_iter()
                .flat_map(|(topic, partitions)| {
                    partitions
                        .into_iter()
                        .map(move |p| (topic.clone(), p, None, code))
                })
                .collect(),
        ),
    };
    let topics = by_topic(fetched)
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, committed, code)| {
                            let (offset, epoch, metadata) = parts(committed);
                            let partition = OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(offset)
                                .with_metadata(Some(str_bytes(metadata)))
                                .with_error_code(code);
                            if version >= 5 {
                                partition.with_committed_leader_epoch(epoch)
                            } else {
                                partition
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.with_error_code(top)
    } else {
        response
    }
}

/// Offset, leader epoch and metadata of a partition, or Kafka's "none committed".
fn parts(committed: Option<Committed>) -> (i64, i32, String) {
    committed.map_or((-1, -1, String::new()), |c| {
        (c.offset, c.leader_epoch, c.metadata)
    })
}

// -------------------------------------------------------------------- OffsetDelete

pub async fn delete(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group_id = request.group_id.to_string();
    if let Err(problem) = check_group_id(&group_id) {
        return OffsetDeleteResponse::default().with_error_code(group_code(Some(problem)));
    }
    let image = ctx.image();
    let mut codes: Vec<Vec<Option<i16>>> = Vec::new();
    let mut asked = Vec::new();
    for topic in &request.topics {
        codes.push(
            topic
                .partitions
                .iter()
                .map(|p| {
                    if exists(&image, &topic.name, p.partition_index) {
                        asked.push((topic.name.to_string(), p.partition_index));
                        None
                    } else {
                        Some(group_code(Some(GroupProblem::UnknownTopicOrPartition)))
                    }
                })
                .collect(),
        );
    }
    let outcome = ctx.groups.delete_offsets(&group_id, asked).await;
    let (top, answered): (i16, Vec<i16>) = match outcome {
        Ok(Ok(outcomes)) => (
            0,
            outcomes
                .into_iter()
                .map(|(_, _, p)| group_code(p))
                .collect(),
        ),
        Ok(Err(problem)) => {
            return OffsetDeleteResponse::default().with_error_code(group_code(Some(problem)))
        }
        Err(error) => {
            return OffsetDeleteResponse::default().with_error_code(coordinator_code(&error))
        }
    };
    let topics = request
        .topics
        .iter()
        .zip(fill(codes, answered))
        .map(|(topic, codes)| {
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .zip(codes)
                        .map(|(p, code)| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetDeleteResponse::default()
        .with_error_code(top)
        .with_topics(topics)
}
