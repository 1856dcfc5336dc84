//! DeleteRecords: moves the log start offset of partitions this broker leads up to the requested
//! offset (-1: the high watermark). Only committed records may be deleted, so an offset past the
//! high watermark is out of range.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use streambus_storage::StorageError;

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};

/// The request's "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// Why a partition's records were not deleted.
enum Refused {
    Request(RequestProblem),
    Storage(StorageError),
}

pub async fn handle(
    ctx: &BrokerContext,
    _version: i16,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let image = ctx.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let record = image.topic_by_name(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let index = wanted.partition_index;
            let result = DeleteRecordsPartitionResult::default().with_partition_index(index);
            let partition = super::leader_partition(ctx, &image, record, index, -1).await;
            let partition = match partition {
                Ok(partition) => partition,
                Err(failure) => {
                    partitions.push(result.with_low_watermark(-1).with_error_code(code(failure)));
                    continue;
                }
            };
            let offset = wanted.offset;
            let deleted = tokio::task::spawn_blocking(move || {
                let high_watermark = partition.high_watermark();
                let target = if offset == HIGH_WATERMARK {
                    high_watermark
                } else {
                    offset
                };
                if target < 0 || target > high_watermark {
                    return Err(Refused::Request(RequestProblem::OffsetOutOfRange));
                }
                partition
                    .log()
                    .delete_records_before(target)
                    .map_err(Refused::Storage)
            })
            .await;
            let failure_code = match deleted {
                Ok(Ok(low_watermark)) => {
                    partitions.push(result.with_low_watermark(low_watermark));
                    continue;
                }
                Ok(Err(Refused::Request(problem))) => code(Failure::Request(problem)),
                Ok(Err(Refused::Storage(error))) => code(Failure::Storage(&error)),
                Err(_) => code(Failure::Request(RequestProblem::TimedOut)),
            };
            partitions.push(result.with_low_watermark(-1).with_error_code(failure_code));
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
