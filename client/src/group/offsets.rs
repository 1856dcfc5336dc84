//! Committed offsets of a group: OffsetCommit and OffsetFetch to its coordinator, for the group
//! consumer (as a member of a generation) and the admin client (as nobody: generation -1).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::error::{Error, Result};
use crate::group::coordinator::Coordinator;
use crate::record::TopicPartition;

/// OffsetCommit versions of classic members: 2 (no per-partition timestamps) to 8.
const OFFSET_COMMIT_VERSIONS: (i16, i16) = (2, 8);
/// OffsetCommit of a KIP-848 member: v9, whose `generation_id_or_member_epoch` is the member
/// epoch (the coordinator refuses older versions from such members).
const OFFSET_COMMIT_VERSIONS_848: (i16, i16) = (9, 9);
/// OffsetFetch versions: 1 to 7 (8 batches groups, which one group does not need).
const OFFSET_FETCH_VERSIONS: (i16, i16) = (1, 7);
/// UNSTABLE_OFFSET_COMMIT: a transaction's offsets are pending; ask again shortly.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// A committed (or to-be-committed) offset: the next offset to consume, the leader epoch of
/// the record before it, and free-form metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OffsetAndMetadata {
    pub offset: i64,
    pub leader_epoch: Option<i32>,
    pub metadata: String,
}

impl OffsetAndMetadata {
    pub fn new(offset: i64) -> OffsetAndMetadata {
        OffsetAndMetadata {
            offset,
            ..OffsetAndMetadata::default()
        }
    }

    pub fn with_leader_epoch(mut self, epoch: Option<i32>) -> OffsetAndMetadata {
        self.leader_epoch = epoch;
        self
    }

    pub fn with_metadata(mut self, metadata: impl Into<String>) -> OffsetAndMetadata {
        self.metadata = metadata.into();
        self
    }
}

/// Who commits: a member of a generation, or (generation -1, no member) an admin, which
/// the coordinator accepts only while the group is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Committer {
    pub generation: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// A KIP-848 member: `generation` is its member epoch, committed with OffsetCommit v9.
    pub member_epoch: bool,
}

impl Committer {
    pub(crate) fn admin() -> Committer {
        Committer {
            generation: -1,
            member_id: String::new(),
            group_instance_id: None,
            member_epoch: false,
        }
    }

    fn versions(&self) -> (i16, i16) {
        if self.member_epoch {
            OFFSET_COMMIT_VERSIONS_848
        } else {
            OFFSET_COMMIT_VERSIONS
        }
    }
}

fn is_coordinator_code(code: i16) -> bool {
    matches!(code, 14..=16)
}

/// The commit at `version`: leader epochs from v6, the instance id from v7 (KIP-345).
fn commit_request(
    group_id: &str,
    who: &Committer,
    offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    version: i16,
) -> OffsetCommitRequest {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, offset) in offsets {
        topics.entry(&tp.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(offset.offset)
                .with_committed_leader_epoch(
                    offset.leader_epoch.filter(|_| version >= 6).unwrap_or(-1),
                )
                .with_committed_metadata(Some(StrBytes::from_string(offset.metadata.clone()))),
        );
    }
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_owned())))
        .with_generation_id_or_member_epoch(who.generation)
        .with_member_id(StrBytes::from_string(who.member_id.clone()))
        .with_group_instance_id(
            who.group_instance_id
                .as_ref()
                .filter(|_| version >= 7)
                .map(|i| StrBytes::from_string(i.clone())),
        )
        // -1: the broker's `offsets.retention.minutes` (v2-v4 carry the field).
        .with_retention_time_ms(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

fn first_commit_error(response: &OffsetCommitResponse) -> Option<(TopicPartition, i16)> {
    response.topics.iter().find_map(|t| {
        t.partitions.iter().find(|p| p.error_code != 0).map(|p| {
            (
                TopicPartition::new(t.name.0.to_string(), p.partition_index),
                p.error_code,
            )
        })
    })
}

fn commit_result(response: &OffsetCommitResponse) -> Result<()> {
    match first_commit_error(response) {
        Some((tp, code)) => Err(Error::kafka(code, Some(format!("committing {tp}")))),
        None => Ok(()),
    }
}

/// Commits `offsets`, retrying through coordinator moves until `deadline`.
pub(crate) async fn commit(
    coordinator: &Coordinator,
    who: &Committer,
    offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    deadline: Instant,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let response = coordinator
        .send(
            |version| commit_request(coordinator.group_id(), who, offsets, version),
            who.versions(),
            None,
            deadline,
            |r| {
                first_commit_error(r)
                    .map(|(_, code)| code)
                    .filter(|code| is_coordinator_code(*code))
                    .unwrap_or(0)
            },
        )
        .await?;
    commit_result(&response)
}

/// Queues a commit on the coordinator's connection now, so commits reach the broker in the
/// order they were made (Java's `commitAsync` order), and returns the future of its result;
/// not retried: a later commit supersedes it.
pub(crate) async fn commit_queued(
    coordinator: &Coordinator,
    who: &Committer,
    offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
    let conn = coordinator.connection().await?;
    let (low, high) = who.versions();
    let version = conn.version::<OffsetCommitRequest>(low, high)?;
    let request = commit_request(coordinator.group_id(), who, offsets, version);
    let response = conn.submit(&request, version, None).await?;
    Ok(async move { commit_result(&response.await?) })
}

/// The committed offsets of `partitions` (all the group has, when `None`); `None` for a
/// partition without one; all committed offsets need OffsetFetch v2+.
pub(crate) async fn fetch(
    coordinator: &Coordinator,
    partitions: Option<&[TopicPartition]>,
    deadline: Instant,
) -> Result<BTreeMap<TopicPartition, Option<OffsetAndMetadata>>> {
    let topics = partitions.map(|tps| {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            topics.entry(&tp.topic).or_default().push(tp.partition);
        }
        topics
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partition_indexes(partitions)
            })
            .collect()
    });
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(
            coordinator.group_id().to_owned(),
        )))
        .with_topics(topics);
    let mut backoff = coordinator.client().config().retry_backoff;
    loop {
        let response = coordinator
            .send(
                // require_stable (v7+, KIP-447): wait out pending transactional commits.
                |version| request.clone().with_require_stable(version >= 7),
                OFFSET_FETCH_VERSIONS,
                None,
                deadline,
                |r| {
                    let code = r
                        .topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .map(|p| p.error_code)
                        .find(|code| is_coordinator_code(*code))
                        .unwrap_or(0);
                    if is_coordinator_code(r.error_code) {
                        r.error_code
                    } else {
                        code
                    }
                },
            )
            .await?;
        let unstable = response.error_code == UNSTABLE_OFFSET_COMMIT
            || response
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.error_code == UNSTABLE_OFFSET_COMMIT);
        if unstable && Instant::now() + backoff < deadline {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(coordinator.client().config().retry_backoff_max);
            continue;
        }
        Error::check(response.error_code, || {
            Some(format!("OffsetFetch of group {}", coordinator.group_id()))
        })?;
        let mut found = BTreeMap::new();
        for topic in &response.topics {
            for p in &topic.partitions {
                let tp = TopicPartition::new(topic.name.0.to_string(), p.partition_index);
                Error::check(p.error_code, || Some(format!("OffsetFetch {tp}")))?;
                let offset = (p.committed_offset >= 0).then(|| OffsetAndMetadata {
                    offset: p.committed_offset,
                    leader_epoch: (p.committed_leader_epoch >= 0)
                        .then_some(p.committed_leader_epoch),
                    metadata: p
                        .metadata
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                });
                found.insert(tp, offset);
            }
        }
        if let Some(tps) = partitions {
            for tp in tps {
                found.entry(tp.clone()).or_insert(None);
            }
        }
        return Ok(found);
    }
}
