//! ListOffsets: the earliest offset (-2, and -4 "earliest local", the same here), the latest
//! (-1: the high watermark, or the last stable offset for read_committed), the offset with the
//! largest timestamp (-3), or the first offset whose timestamp is at or after a given time.
//! A new leader whose high watermark has not reached its leader epoch's start answers
//! OFFSET_NOT_AVAILABLE (retriable) to the latest and to lookups with no committed hit, as
//! Kafka does; the earliest is always answered.

use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{per_led_partition, PartitionKey};
use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure};
use crate::kafka::request::RequestContext;
use crate::partition::read::{FoundOffset, OffsetSpec, ReadBound};
use crate::partition::PartitionError;

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
                let spec = match wanted.timestamp {
                    LATEST => OffsetSpec::Latest,
                    EARLIEST | EARLIEST_LOCAL => OffsetSpec::Earliest,
                    MAX_TIMESTAMP => OffsetSpec::MaxTimestamp,
                    timestamp => OffsetSpec::Timestamp(timestamp),
                };
                let found = partition.list_offset(spec, bound).await;
                answer(version, wanted.partition_index, found)
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

/// One partition's answer: the offset found, offset and timestamp -1 when no record qualifies,
/// or the error's code (OFFSET_NOT_AVAILABLE from a new leader still catching up: retriable).
fn answer(
    version: i16,
    partition_index: i32,
    found: Result<Option<FoundOffset>, PartitionError>,
) -> ListOffsetsPartitionResponse {
    let response = ListOffsetsPartitionResponse::default().with_partition_index(partition_index);
    match found {
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
        Ok(None) => response,
        Err(error) => response.with_error_code(code(Failure::Partition(&error))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_still_catching_up_answers_offset_not_available_with_no_offset() {
        let response = answer(7, 3, Err(PartitionError::OffsetNotAvailable));
        assert_eq!(response.error_code, 78, "Kafka's OFFSET_NOT_AVAILABLE");
        assert_eq!((response.partition_index, response.offset), (3, -1));
        assert_eq!(response.timestamp, -1);
    }

    #[test]
    fn a_found_offset_carries_its_leader_epoch_from_version_4() {
        let found = FoundOffset {
            offset: 42,
            timestamp: -1,
            leader_epoch: 5,
        };
        let v4 = answer(4, 0, Ok(Some(found)));
        assert_eq!((v4.error_code, v4.offset, v4.leader_epoch), (0, 42, 5));
        let v3 = answer(3, 0, Ok(Some(found)));
        assert_eq!((v3.offset, v3.leader_epoch), (42, -1));
    }
}
