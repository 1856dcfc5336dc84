//! OffsetForLeaderEpoch: for each partition, the largest epoch at or below the requested one and
//! the offset where it ended (the start of the next epoch, or the log end for the latest), so a
//! consumer (KIP-320) or a follower (KIP-101) can detect and cut a diverged log.

use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{per_led_partition, PartitionKey};
use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure};
use crate::kafka::request::RequestContext;

pub async fn handle(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = ctx.image();
    let unanswered = |index: i32| {
        EpochEndOffset::default()
            .with_partition(index)
            .with_leader_epoch(-1)
            .with_end_offset(-1)
    };
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let record = image.topic_by_name(&topic.topic);
        let partitions = per_led_partition(
            ctx,
            &image,
            record,
            topic.partitions,
            |wanted: &OffsetForLeaderPartition| PartitionKey {
                index: wanted.partition,
                current_leader_epoch: wanted.current_leader_epoch,
            },
            |partition, wanted| async move {
                match partition.end_offset_for_epoch(wanted.leader_epoch).await {
                    Ok((epoch, end_offset)) => unanswered(wanted.partition)
                        .with_leader_epoch(epoch)
                        .with_end_offset(end_offset),
                    Err(error) => unanswered(wanted.partition)
                        .with_error_code(code(Failure::Partition(&error))),
                }
            },
            |wanted, failure| unanswered(wanted.partition).with_error_code(code(failure)),
        )
        .await;
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
