//! ListOffsets: the earliest offset (-2, and -4 "earliest local", the same here), the latest
//! (-1: the high watermark, or the last stable offset for read_committed), the offset with the
//! largest timestamp (-3), or the first offset whose timestamp is at or after a given time.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use streambus_storage::StorageError;

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::partition::Partition;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const READ_COMMITTED: i8 = 1;

pub async fn handle(
    ctx: &BrokerContext,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let image = ctx.image();
    let read_committed = version >= 2 && request.isolation_level == READ_COMMITTED;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let record = image.topic_by_name(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let index = wanted.partition_index;
            let response = ListOffsetsPartitionResponse::default().with_partition_index(index);
            let current_epoch = if version >= 4 {
                wanted.current_leader_epoch
            } else {
                -1
            };
            let partition =
                super::leader_partition(ctx, &image, record, index, current_epoch).await;
            let partition = match partition {
                Ok(partition) => partition,
                Err(failure) => {
                    partitions.push(response.with_error_code(code(failure)));
                    continue;
                }
            };
            let timestamp = wanted.timestamp;
            let found =
                tokio::task::spawn_blocking(move || lookup(&partition, timestamp, read_committed))
                    .await;
            let response = match found {
                Ok(Ok(Some((offset, timestamp, epoch)))) => {
                    let mut response = response.with_offset(offset).with_timestamp(timestamp);
                    if version >= 4 {
                        response = response.with_leader_epoch(epoch);
                    }
                    response
                }
                Ok(Ok(None)) => response,
                Ok(Err(error)) => response.with_error_code(code(Failure::Storage(&error))),
                Err(_) => {
                    response.with_error_code(code(Failure::Request(RequestProblem::TimedOut)))
                }
            };
            partitions.push(response);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// `(offset, timestamp, leader epoch)` for `timestamp`, or `None` when no record qualifies
/// (answered as offset -1). Blocking.
fn lookup(
    partition: &Arc<Partition>,
    timestamp: i64,
    read_committed: bool,
) -> Result<Option<(i64, i64, i32)>, StorageError> {
    let log = partition.log();
    let epoch = log.latest_epoch().unwrap_or(-1);
    let upper = if read_committed {
        partition.last_stable_offset()
    } else {
        partition.high_watermark()
    };
    Ok(match timestamp {
        LATEST => Some((upper, -1, epoch)),
        EARLIEST | EARLIEST_LOCAL => Some((log.log_start_offset(), -1, epoch)),
        MAX_TIMESTAMP => log
            .max_timestamp_offset()?
            .filter(|(offset, _)| *offset < upper)
            .map(|(offset, ts)| (offset, ts, epoch)),
        _ if timestamp < 0 => None,
        _ => log
            .offset_for_timestamp(timestamp)?
            .filter(|(offset, _)| *offset < upper)
            .map(|(offset, ts)| (offset, ts, epoch)),
    })
}
