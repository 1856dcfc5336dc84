//! WriteTxnMarkers, from a transaction coordinator to the leaders of its transaction's
//! partitions: each marker (commit or abort, of one producer at one epoch, with the
//! coordinator's epoch) is appended to each named partition this broker leads, as a control
//! batch, and answered once it is committed (Kafka appends markers with acks=all). The
//! coordinator of this broker calls [`apply`] directly for the partitions it leads.

use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::kafka::handlers::led_partition;
use crate::kafka::request::RequestContext;
use crate::partition::append;

/// How long a marker may wait to be committed before the coordinator is told to retry.
const MARKER_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn handle(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    // Kafka requires CLUSTER_ACTION here (brokers only); authorization comes with ACLs.
    apply(ctx, request).await
}

/// Appends every marker of `request` to the partitions it names that this broker leads.
pub async fn apply(
    ctx: &BrokerContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let image = ctx.image();
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let name = topic.name.0.to_string();
            let record = image.topic_by_name(&name);
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for index in topic.partition_indexes {
                let error_code = if name == crate::group::OFFSETS_TOPIC {
                    // Through the group coordinator of that partition, whose state holds the
                    // offsets the transaction committed.
                    match u32::try_from(index) {
                        Ok(partition) => match ctx
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
                        },
                        Err(_) => code(Failure::Request(RequestProblem::UnknownTopic)),
                    }
                } else if crate::coordinator::topic::is_internal(&name) {
                    // No other internal topic joins a transaction.
                    code(Failure::Request(RequestProblem::InternalTopic))
                } else {
                    match led_partition(ctx, &image, record, index, -1).await {
                        Err(failure) => code(failure),
                        Ok(partition) => {
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
                    }
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(error_code),
                );
            }
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
