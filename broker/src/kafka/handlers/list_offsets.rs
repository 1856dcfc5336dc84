//! ListOffsets: the earliest offset (-2, and -4 "earliest local", the same here), the latest
//! (-1: the high watermark, or the last stable offset for read_committed), the offset with the
//! largest timestamp (-3), or the first offset whose timestamp is at or after a given time.

use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{per_led_partition, PartitionKey};
use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure};
use crate::kafka::request::RequestContext;
use crate::partition::read::{OffsetSpec, ReadBound};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const READ_COMMITTED: i8 = 1;

pub async fn handle(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let version = req.api_version;
    let image = ctx.image();
    let bound = if version >= 2 && request.isolation_level == READ_COMMITTED {
        ReadBound::LastStable
    } else {
        ReadBound::HighWatermark
    };
    let key = |wanted: &ListOffsetsPartition| PartitionKey {
        index: wanted.partition_index,
        current_leader_epoch: if version >= 4 {
            wanted.current_leader_epoch
        } else {
            -1
        },
    };
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let record = image.topic_by_name(&topic.name);
        let partitions = per_led_partition(
            ctx,
            &image,
            record,
            topic.partitions,
            key,
            |partition, wanted| async move {
                let response = ListOffsetsPartitionResponse::default()
                    .with_partition_index(wanted.partition_index);
                let spec = match wanted.timestamp {
                    LATEST => OffsetSpec::Latest,
                    EARLIEST | EARLIEST_LOCAL => OffsetSpec::Earliest,
                    MAX_TIMESTAMP => OffsetSpec::MaxTimestamp,
                    timestamp => OffsetSpec::Timestamp(timestamp),
                };
                match partition.list_offset(spec, bound).await {
                    Ok(Some(found)) => {
                        let response = response
                            .with_offset(found.offset)
                            .with_timestamp(found.timestamp);
                        if version >= 4 {
                            response.with_leader_epoch(found.leader_epoch)
                        } else {
                            response
                        }
                    }
                    // No record qualifies: offset and timestamp -1.
                    Ok(None) => response,
                    Err(error) => response.with_error_code(code(Failure::Partition(&error))),
                }
            },
            |wanted, failure| {
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(wanted.partition_index)
                    .with_error_code(code(failure))
            },
        )
        .await;
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
