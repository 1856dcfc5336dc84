//! Fetch: translates a fetch into reads of the partitions this broker leads
//! ([`crate::partition::read::fetch`]): up to the high watermark (read_uncommitted) or the last
//! stable offset (read_committed, with the aborted transactions of the range), within
//! `partition_max_bytes` per partition and `max_bytes` in all (the first batch found is returned
//! even when larger, so a consumer always progresses), parked until `min_bytes` are there or
//! `max_wait_ms` passes.
//!
//! A fetch with a replica id is a follower's: it reads up to the log end (not the high
//! watermark), and the partition records its position first (which may move the high
//! watermark and propose an ISR expansion). A fetch that names another cluster (the tagged
//! `ClusterId` of v12+, which our followers send) is answered INCONSISTENT_CLUSTER_ID, and a
//! follower fetch from a broker id the metadata does not know BROKER_ID_NOT_REGISTERED, both at
//! the top level with no data.
//!
//! Fetch sessions (KIP-227) are not kept: every response carries session id 0, which tells
//! clients to send full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use streambus_raft::image::TopicRecord;
use streambus_raft::MetadataImage;
use uuid::Uuid;

use super::led_partition;
use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::from_uuid;
use crate::partition::read::{
    self, FetchLimits, FollowerFetch, PartitionRead, ReadBound, ReadTarget,
};
use crate::partition::Partition;

const READ_COMMITTED: i8 = 1;
/// Kafka's `FINAL_EPOCH`: a sessionless full fetch, or the close of a session.
const FINAL_EPOCH: i32 = -1;

/// One requested partition: where its answer goes and, if it can be read, what to read.
struct Wanted {
    index: i32,
    /// The position among the reads, or the error code of a failed lookup.
    read: Result<usize, i16>,
}

pub async fn handle(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: FetchRequest,
) -> FetchResponse {
    let version = req.api_version;
    if version >= 7 && request.session_id != 0 && request.session_epoch != FINAL_EPOCH {
        return FetchResponse::default().with_error_code(code(Failure::Request(
            RequestProblem::FetchSessionIdNotFound,
        )));
    }
    let image = ctx.image();
    // Before v15 a follower names no broker epoch; the controller then refuses to add it to
    // an ISR, so followers fetch with v15+.
    let (replica_id, replica_epoch) = if version >= 15 {
        (
            request.replica_state.replica_id.0,
            request.replica_state.replica_epoch,
        )
    } else {
        (request.replica_id.0, -1)
    };
    let follower = (replica_id >= 0).then_some(replica_id);
    if let Some(problem) = refusal(ctx, &image, &request, follower) {
        return FetchResponse::default().with_error_code(code(Failure::Request(problem)));
    }
    let bound = match follower {
        Some(_) => ReadBound::LogEnd,
        None if request.isolation_level == READ_COMMITTED => ReadBound::LastStable,
        None => ReadBound::HighWatermark,
    };
    let mut limits = FetchLimits {
        max_bytes: usize::try_from(request.max_bytes)
            .unwrap_or(0)
            .min(ctx.config.kafka.fetch_max_bytes),
        min_bytes: usize::try_from(request.min_bytes).unwrap_or(0),
        max_wait: Duration::from_millis(
            u64::try_from(request.max_wait_ms)
                .unwrap_or(0)
                .min(ctx.config.kafka.fetch_max_wait_ms_limit),
        ),
        bound,
    };

    // Each with its name in the image, for the per-topic traffic counters of consumers.
    let mut topics: Vec<(TopicName, Uuid, Vec<Wanted>, Option<&str>)> =
        Vec::with_capacity(request.topics.len());
    let mut targets = Vec::new();
    for topic in request.topics {
        let record = if version >= 13 {
            image.topic_by_id(&from_uuid(&topic.topic_id))
        } else {
            image.topic_by_name(&topic.topic)
        };
        let mut wanted = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let current_epoch = if version >= 9 {
                partition.current_leader_epoch
            } else {
                -1
            };
            let lookup = lookup(
                ctx,
                &image,
                record,
                version,
                partition.partition,
                current_epoch,
            )
            .await;
            let read = lookup.map(|(led, leader_epoch)| {
                targets.push(ReadTarget {
                    partition: led,
                    fetch_offset: partition.fetch_offset,
                    partition_max_bytes: usize::try_from(partition.partition_max_bytes)
                        .unwrap_or(0),
                    // The position counts only while this broker leads at the epoch the lookup
                    // checked against the image.
                    follower: follower.map(|replica| FollowerFetch {
                        replica,
                        leader_epoch,
                        broker_epoch: replica_epoch,
                    }),
                });
                targets.len() - 1
            });
            wanted.push(Wanted {
                index: partition.partition,
                read,
            });
        }
        let known = record.map(|r| r.name.as_str());
        topics.push((topic.topic, topic.topic_id, wanted, known));
    }
    if topics.iter().flat_map(|t| &t.2).any(|w| w.read.is_err()) {
        // An error is answered at once, as Kafka does.
        limits.max_wait = Duration::ZERO;
    }
    let mut reads: Vec<Option<PartitionRead>> = read::fetch(targets, limits, &ctx.shutdown)
        .await
        .into_iter()
        .map(Some)
        .collect();
    let responses = topics
        .into_iter()
        .map(|(name, topic_id, wanted, known)| {
            let partitions = wanted
                .into_iter()
                .map(|wanted| match wanted.read {
                    Ok(slot) => match reads.get_mut(slot).and_then(Option::take) {
                        Some(read) => {
                            match (follower, known) {
                                (Some(_), _) => {
                                    crate::telemetry::topics::replicated(read.records.len());
                                }
                                (None, Some(topic)) => {
                                    crate::telemetry::topics::fetched(topic, &read.records);
                                }
                                (None, None) => {}
                            }
                            partition_data(version, wanted.index, read)
                        }
                        None => failed(
                            wanted.index,
                            code(Failure::Request(RequestProblem::TimedOut)),
                        ),
                    },
                    Err(error) => failed(wanted.index, error),
                })
                .collect();
            let response = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= 13 {
                response.with_topic_id(topic_id)
            } else {
                response.with_topic(name)
            }
        })
        .collect();
    FetchResponse::default().with_responses(responses)
}

/// Why the whole fetch is refused, if it is: it names another cluster, or comes from a follower
/// this cluster does not know. Checked before any partition is looked up, so nothing is read
/// and no follower position is recorded.
fn refusal(
    ctx: &BrokerContext,
    image: &MetadataImage,
    request: &FetchRequest,
    follower: Option<i32>,
) -> Option<RequestProblem> {
    // Clients send no cluster id (the field is null), and that is accepted, as Kafka does.
    let theirs: Option<&str> = request.cluster_id.as_deref();
    let (problem, detail) = match (theirs, follower) {
        (Some(theirs), _) if theirs != ctx.cluster_id.as_str() => (
            RequestProblem::InconsistentClusterId,
            format!(
                "cluster id {theirs:?}, this cluster is {:?}",
                ctx.cluster_id.as_str()
            ),
        ),
        (_, Some(replica)) if image.broker(replica).is_none() => (
            RequestProblem::UnknownReplica,
            format!("replica id {replica} is no registered broker"),
        ),
        _ => return None,
    };
    if let Some(held_back) = ctx.refusals.due(format!("fetch {follower:?} {detail}")) {
        tracing::warn!(
            replica = follower,
            refusal = ?problem,
            held_back,
            "refused a fetch: {detail}"
        );
    }
    Some(problem)
}

/// The partition `index` of `topic` led here, with the leader epoch the image gives it.
async fn lookup(
    ctx: &BrokerContext,
    image: &MetadataImage,
    topic: Option<&TopicRecord>,
    version: i16,
    index: i32,
    current_epoch: i32,
) -> Result<(Arc<Partition>, i32), i16> {
    let Some(topic) = topic else {
        // Fetch v13+ names topics by id.
        let unknown = if version >= 13 {
            RequestProblem::UnknownTopicId
        } else {
            RequestProblem::UnknownTopic
        };
        return Err(code(Failure::Request(unknown)));
    };
    let led = led_partition(ctx, image, Some(topic), index, current_epoch)
        .await
        .map_err(code)?;
    let leader_epoch = topic.partition(index as u32).map_or(-1, |p| p.leader_epoch);
    Ok((led, leader_epoch))
}

fn partition_data(version: i16, index: i32, read: PartitionRead) -> PartitionData {
    let error = read
        .error
        .as_ref()
        .map_or(0, |e| code(Failure::Partition(e)));
    let aborted = read.aborted.map(|aborted| {
        aborted
            .into_iter()
            .map(|txn| {
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(txn.producer_id))
                    .with_first_offset(txn.first_offset)
            })
            .collect()
    });
    let mut data = PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error)
        .with_high_watermark(read.high_watermark)
        .with_last_stable_offset(read.last_stable_offset)
        .with_aborted_transactions(aborted)
        .with_records(Some(read.records));
    if version >= 5 {
        data = data.with_log_start_offset(read.log_start_offset);
    }
    data
}

fn failed(index: i32, error: i16) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_aborted_transactions(None)
        .with_records(Some(bytes::Bytes::new()))
}
