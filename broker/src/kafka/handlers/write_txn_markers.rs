//! WriteTxnMarkers, from a transaction coordinator to the leaders of its transaction's
//! partitions: each marker (commit or abort, of one producer at one epoch, with the
//! coordinator's epoch) is appended to each named partition this broker leads, as a control
//! batch, and answered once it is committed (Kafka appends markers with acks=all). The
//! coordinator of this broker calls [`apply`] directly for the partitions it leads.

use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::WritableTxnMarker;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use streambus_raft::MetadataImage;

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::kafka::handlers::led_partition;
use crate::kafka::request::RequestContext;
use crate::partition::append;

/// How long a marker may wait to be committed before the coordinator is told to retry: below
/// the coordinator's own wait for the answer (30 s), so that a marker it gave up on is not still
/// being written when it sends the next attempt.
const MARKER_COMMIT_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn handle(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    // Kafka requires CLUSTER_ACTION here (brokers only); authorization comes with ACLs.
    apply(ctx, request).await
}

/// Appends every marker of `request` to the partitions it names that this broker leads. All
/// are appended and awaited together (as Kafka appends a request's markers in one call), so
/// the answer comes within one commit timeout however many partitions the request names.
pub async fn apply(
    ctx: &BrokerContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let image = ctx.image();
    let mut writes = Vec::new();
    for marker in &request.markers {
        for topic in &marker.topics {
            for &index in &topic.partition_indexes {
                writes.push(write_one(ctx, &image, marker, &topic.name.0, index));
            }
        }
    }
    let mut codes = futures_util::future::join_all(writes).await.into_iter();
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(codes.next().expect("one code per partition"))
                })
                .collect();
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

/// Writes `marker` to partition `index` of `topic`; its error code.
async fn write_one(
    ctx: &BrokerContext,
    image: &MetadataImage,
    marker: &WritableTxnMarker,
    topic: &str,
    index: i32,
) -> i16 {
    if topic == crate::group::OFFSETS_TOPIC {
        // Through the group coordinator of that partition, whose state holds the offsets the
        // transaction committed.
        let Ok(partition) = u32::try_from(index) else {
            return code(Failure::Request(RequestProblem::UnknownTopic));
        };
        return match ctx
            .groups
            .complete_transaction(
                partition,
                marker.producer_id.0,
                marker.producer_epoch,
                marker.transaction_result,
                marker.coordinator_epoch,
            )
            .await
        {
            Ok(()) => 0,
            Err(error) => code(Failure::Coordinator(&error)),
        };
    }
    if crate::coordinator::topic::is_internal(topic) {
        // No other internal topic joins a transaction.
        return code(Failure::Request(RequestProblem::InternalTopic));
    }
    let partition = match led_partition(ctx, image, image.topic_by_name(topic), index, -1).await {
        Ok(partition) => partition,
        Err(failure) => return code(failure),
    };
    let written = append::append_marker(
        &partition,
        marker.producer_id.0,
        marker.producer_epoch,
        marker.transaction_result,
        marker.coordinator_epoch,
        MARKER_COMMIT_TIMEOUT,
        &ctx.shutdown,
    )
    .await;
    match written {
        Ok(()) => 0,
        Err(error) => code(Failure::Partition(&error)),
    }
}
