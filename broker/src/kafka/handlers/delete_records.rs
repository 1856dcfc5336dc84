//! DeleteRecords: translates each partition's offset (-1: the high watermark) into
//! [`crate::ops::records::delete_records`] and the new low watermark back.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure};
use crate::kafka::request::RequestContext;
use crate::ops::records::{self, DeleteUpTo};

/// The request's "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let image = ctx.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let up_to = match wanted.offset {
                HIGH_WATERMARK => DeleteUpTo::HighWatermark,
                offset => DeleteUpTo::Offset(offset),
            };
            let deleted =
                records::delete_records(ctx, &image, &topic.name, wanted.partition_index, up_to)
                    .await;
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(wanted.partition_index);
            partitions.push(match deleted {
                Ok(low_watermark) => result.with_low_watermark(low_watermark),
                Err(error) => result
                    .with_low_watermark(-1)
                    .with_error_code(code(Failure::Ops(&error))),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
