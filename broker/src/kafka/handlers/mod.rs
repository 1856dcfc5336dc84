//! One module per Kafka API. A handler turns a decoded request into calls on the cluster
//! operations ([`crate::ops`]), the metadata image and the partition manager, and builds the
//! response; failures become codes through [`crate::kafka::errors`] only.
//!
//! Every handler has the shape `handle(ctx, req, request) -> response` (async when it waits for
//! storage or the quorum): `ctx` is what the broker shares, `req` the request's
//! [`RequestContext`](crate::kafka::request::RequestContext) (API version, connection,
//! principal). Handlers only translate: data-path calls go to `crate::partition`, cluster
//! operations to `crate::ops`; a tidy test (`broker/tests/it/tidy.rs`) keeps storage and raft
//! internals, `.log()` and `spawn_blocking` out of this directory.

pub mod api_versions;
pub mod configs;
pub mod consumer_groups;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod offsets;
pub mod produce;
pub mod reassignments;
pub mod transactions;
pub mod write_txn_markers;

use std::future::Future;
use std::sync::Arc;

use streambus_raft::image::TopicRecord;
use streambus_raft::MetadataImage;

use crate::context::BrokerContext;
use crate::kafka::errors::Failure;
use crate::partition::Partition;

/// One requested partition of a per-partition request: its index and the client's
/// `current_leader_epoch` (-1: no check).
#[derive(Debug, Clone, Copy)]
pub struct PartitionKey {
    pub index: i32,
    pub current_leader_epoch: i32,
}

/// The skeleton of requests that do one thing per partition this broker leads (ListOffsets,
/// OffsetForLeaderEpoch): each wanted partition of `topic` (unknown: `None`)
/// is looked up as led here, then answered by `op`, or by `failed` when the lookup fails
/// (an unknown topic or a negative index is UNKNOWN_TOPIC_OR_PARTITION). Answers keep the
/// request's order.
pub async fn per_led_partition<W, R, Fut>(
    ctx: &BrokerContext,
    image: &MetadataImage,
    topic: Option<&TopicRecord>,
    wanted: Vec<W>,
    key: impl Fn(&W) -> PartitionKey,
    mut op: impl FnMut(Arc<Partition>, W) -> Fut,
    mut failed: impl FnMut(W, Failure<'_>) -> R,
) -> Vec<R>
where
    Fut: Future<Output = R>,
{
    let mut answers = Vec::with_capacity(wanted.len());
    for wanted in wanted {
        let PartitionKey {
            index,
            current_leader_epoch,
        } = key(&wanted);
        let partition = led_partition(ctx, image, topic, index, current_leader_epoch).await;
        answers.push(match partition {
            Ok(partition) => op(partition, wanted).await,
            Err(failure) => failed(wanted, failure),
        });
    }
    answers
}

/// The partition `index` of `topic` (unknown: `None`) that this broker leads per `image`,
/// checked against the client's `current_leader_epoch` (-1: no check); an unknown topic or a
/// negative index is UNKNOWN_TOPIC_OR_PARTITION.
pub async fn led_partition(
    ctx: &BrokerContext,
    image: &MetadataImage,
    topic: Option<&TopicRecord>,
    index: i32,
    current_leader_epoch: i32,
) -> Result<Arc<Partition>, Failure<'static>> {
    ctx.partitions
        .led(image, topic, index, current_leader_epoch)
        .await
        .map_err(Failure::Lookup)
}
