//! DeleteRecords: moves the log start offset of partitions this broker leads up to the requested
//! offset (-1: the high watermark). Only committed records may be deleted, so an offset past the
//! high watermark is out of range.

use kafka_protocol::messages::delete_records_request::DeleteRecordsPartition;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{per_led_partition, PartitionKey};
use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure};
use crate::kafka::request::RequestContext;

/// The request's "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let image = ctx.image();
    let refused = |index: i32, failure: Failure<'_>| {
        DeleteRecordsPartitionResult::default()
            .with_partition_index(index)
            .with_low_watermark(-1)
            .with_error_code(code(failure))
    };
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let record = image.topic_by_name(&topic.name);
        let partitions = per_led_partition(
            ctx,
            &image,
            record,
            topic.partitions,
            |wanted: &DeleteRecordsPartition| PartitionKey {
                index: wanted.partition_index,
                current_leader_epoch: -1,
            },
            |partition, wanted| async move {
                let offset = (wanted.offset != HIGH_WATERMARK).then_some(wanted.offset);
                match partition.delete_records(offset).await {
                    Ok(low_watermark) => DeleteRecordsPartitionResult::default()
                        .with_partition_index(wanted.partition_index)
                        .with_low_watermark(low_watermark),
                    Err(error) => refused(wanted.partition_index, Failure::Partition(&error)),
                }
            },
            |wanted, failure| refused(wanted.partition_index, failure),
        )
        .await;
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
