//! OffsetForLeaderEpoch: for each partition, the largest epoch at or below the requested one and
//! the offset where it ended (the start of the next epoch, or the log end for the latest), so a
//! consumer (KIP-320) or a follower (KIP-101) can detect and cut a diverged log.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};

pub async fn handle(
    ctx: &BrokerContext,
    _version: i16,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = ctx.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let record = image.topic_by_name(&topic.topic);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let response = EpochEndOffset::default()
                .with_partition(wanted.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let partition = super::leader_partition(
                ctx,
                &image,
                record,
                wanted.partition,
                wanted.current_leader_epoch,
            )
            .await;
            let response = match partition {
                Ok(partition) => {
                    let requested = wanted.leader_epoch;
                    let found = tokio::task::spawn_blocking(move || {
                        partition.log().end_offset_for_epoch(requested)
                    })
                    .await;
                    match found {
                        Ok((epoch, end_offset)) => response
                            .with_leader_epoch(epoch)
                            .with_end_offset(end_offset),
                        Err(_) => response
                            .with_error_code(code(Failure::Request(RequestProblem::TimedOut))),
                    }
                }
                Err(failure) => response.with_error_code(code(failure)),
            };
            partitions.push(response);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
