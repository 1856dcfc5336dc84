//! One module per Kafka API. A handler turns a decoded request into calls on the cluster
//! operations ([`crate::ops`]), the metadata image and the partition manager, and builds the
//! response; failures become codes through [`crate::kafka::errors`] only.
//!
//! Every handler has the shape `handle(ctx, version, request) -> response` (async when it
//! waits for storage or the quorum); `version` is the request's API version.

pub mod api_versions;
pub mod configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod elect_leaders;
pub mod fetch;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod reassignments;

use std::sync::Arc;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use streambus_raft::command::TopicId;
use streambus_raft::image::TopicRecord;
use streambus_raft::MetadataImage;
use uuid::Uuid;

use crate::context::BrokerContext;
use crate::kafka::errors::{Failure, RequestProblem};
use crate::partition::Partition;

/// A wire string from an owned string.
pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A wire topic name.
pub fn topic_name(s: impl Into<String>) -> TopicName {
    TopicName(str_bytes(s))
}

/// The wire form of a topic id.
pub fn to_uuid(topic_id: &TopicId) -> Uuid {
    Uuid::from_bytes(topic_id.0)
}

/// A topic id from the wire.
pub fn from_uuid(uuid: &Uuid) -> TopicId {
    TopicId(*uuid.as_bytes())
}

/// Kafka's "not set" for authorized-operations fields.
pub const AUTHORIZED_OPERATIONS_UNSET: i32 = i32::MIN;

/// The partition `index` of `topic` that this broker leads per `image`, checked against the
/// client's `current_leader_epoch` (-1: no check); an unknown topic or a negative index is
/// UNKNOWN_TOPIC_OR_PARTITION.
pub async fn leader_partition(
    ctx: &BrokerContext,
    image: &MetadataImage,
    topic: Option<&TopicRecord>,
    index: i32,
    current_leader_epoch: i32,
) -> Result<Arc<Partition>, Failure<'static>> {
    match topic {
        Some(topic) if index >= 0 => ctx
            .partitions
            .leader(image, &topic.topic_id, index as u32, current_leader_epoch)
            .await
            .map_err(Failure::Lookup),
        _ => Err(Failure::Request(RequestProblem::UnknownTopic)),
    }
}
