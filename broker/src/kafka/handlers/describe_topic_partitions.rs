//! DescribeTopicPartitions (KIP-966): each requested topic's partitions with leader, ISR,
//! eligible leader replicas, last known ELR and offline replicas, from the local metadata image,
//! paged by a partition limit and a cursor as Kafka pages it. Kafka 4's `kafka-topics
//! --describe` uses it to show `Elr` and `LastKnownElr`.

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId as WireBrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};
use streambus_raft::command::BrokerId;
use streambus_raft::image::TopicRecord;
use streambus_raft::MetadataImage;

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{to_uuid, topic_name, AUTHORIZED_OPERATIONS_UNSET};

/// The most partitions one answer carries, whatever the client asks: Kafka's default
/// `max.request.partition.size.limit`. It bounds the work and the size of one response.
const MAX_PARTITIONS_PER_RESPONSE: usize = 2000;

pub fn handle(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    describe(&ctx.image(), request)
}

/// The answer from `image`; a function of its own so that paging is tested without a broker.
fn describe(
    image: &MetadataImage,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let limit = usize::try_from(request.response_partition_limit)
        .ok()
        .filter(|&limit| limit > 0)
        .map_or(MAX_PARTITIONS_PER_RESPONSE, |limit| {
            limit.min(MAX_PARTITIONS_PER_RESPONSE)
        });
    // Named topics, or every topic; in name order, as Kafka answers, so a cursor means the same
    // place on every page.
    let mut names: Vec<String> = if request.topics.is_empty() {
        image.topics().map(|topic| topic.name.clone()).collect()
    } else {
        request.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let cursor = request
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.to_string(), c.partition_index));
    if let Some((cursor_topic, index)) = &cursor {
        // Kafka refuses a cursor outside the request or pointing before the first partition.
        if *index < 0 || (!request.topics.is_empty() && !names.contains(cursor_topic)) {
            let error = code(Failure::Request(RequestProblem::Inconsistent));
            return DescribeTopicPartitionsResponse::default().with_topics(
                names
                    .into_iter()
                    .map(|name| {
                        DescribeTopicPartitionsResponseTopic::default()
                            .with_error_code(error)
                            .with_name(Some(topic_name(name)))
                    })
                    .collect(),
            );
        }
        names.retain(|name| name >= cursor_topic);
    }
    let mut remaining = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for (position, name) in names.iter().enumerate() {
        let Some(topic) = image.topic_by_name(name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(code(Failure::Request(RequestProblem::UnknownTopic)))
                    .with_name(Some(topic_name(name.clone())))
                    .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_UNSET),
            );
            continue;
        };
        if remaining == 0 {
            next_cursor = Some((name.clone(), 0));
            break;
        }
        let first = match &cursor {
            Some((cursor_topic, index)) if cursor_topic == name => {
                usize::try_from(*index).unwrap_or(0)
            }
            _ => 0,
        };
        let end = topic.partitions.len().min(first.saturating_add(remaining));
        remaining -= end.saturating_sub(first);
        topics.push(describe_topic(image, topic, first, end));
        if end < topic.partitions.len() {
            next_cursor = Some((name.clone(), end));
            break;
        }
        if remaining == 0 {
            // Full exactly at a topic's end: the next known topic, if any, starts the next page.
            next_cursor = names[position + 1..]
                .iter()
                .find(|next| image.topic_by_name(next).is_some())
                .map(|next| (next.clone(), 0));
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor.map(|(name, index)| {
            Cursor::default()
                .with_topic_name(topic_name(name))
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
        }))
}

fn describe_topic(
    image: &MetadataImage,
    topic: &TopicRecord,
    first: usize,
    end: usize,
) -> DescribeTopicPartitionsResponseTopic {
    let ids = |brokers: &[BrokerId]| brokers.iter().map(|b| WireBrokerId(*b)).collect();
    let offline = |b: &&BrokerId| image.broker(**b).is_none_or(|broker| broker.fenced);
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .take(end)
        .skip(first)
        .map(|(index, p)| {
            let error = match p.leader {
                Some(_) => 0,
                None => code(Failure::Request(RequestProblem::LeaderNotAvailable)),
            };
            DescribeTopicPartitionsResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                .with_leader_id(WireBrokerId(p.leader.unwrap_or(-1)))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_eligible_leader_replicas(Some(ids(&p.elr)))
                .with_last_known_elr(Some(ids(&p.last_known_elr)))
                .with_offline_replicas(
                    p.replicas
                        .iter()
                        .filter(offline)
                        .map(|b| WireBrokerId(*b))
                        .collect(),
                )
        })
        .collect();
    DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(topic_name(topic.name.clone())))
        .with_topic_id(to_uuid(&topic.topic_id))
        .with_is_internal(crate::coordinator::topic::is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_UNSET)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_topic_partitions_request::{
        Cursor as RequestCursor, TopicRequest,
    };

    use streambus_raft::command::{CreateTopic, MetadataCommand, TopicAssignment, TopicId};

    use super::*;
    use crate::testing::Images;

    fn request(
        topics: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| TopicRequest::default().with_name(topic_name((*t).to_owned())))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(topic, index)| {
                RequestCursor::default()
                    .with_topic_name(topic_name(topic.to_owned()))
                    .with_partition_index(index)
            }))
    }

    /// Topics `a` (3 partitions) and `b` (2), replicas on brokers 1 and 2.
    fn image() -> MetadataImage {
        let mut images = Images::with_brokers(&[1, 2]);
        for (name, id, partitions) in [("a", 1, 3), ("b", 2, 2)] {
            images.apply(MetadataCommand::CreateTopic(CreateTopic {
                name: name.to_owned(),
                topic_id: TopicId([id; 16]),
                assignment: TopicAssignment::Explicit(vec![vec![1, 2]; partitions]),
                configs: Default::default(),
            }));
        }
        images.image
    }

    fn pages(image: &MetadataImage, topics: &[&str], limit: i32) -> Vec<Vec<(String, i32)>> {
        let mut cursor: Option<(String, i32)> = None;
        let mut pages = Vec::new();
        for _ in 0..10 {
            let response = describe(
                image,
                request(
                    topics,
                    limit,
                    cursor.as_ref().map(|(t, i)| (t.as_str(), *i)),
                ),
            );
            pages.push(
                response
                    .topics
                    .iter()
                    .flat_map(|t| {
                        let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
                        t.partitions
                            .iter()
                            .map(move |p| (name.clone(), p.partition_index))
                    })
                    .collect(),
            );
            match response.next_cursor {
                Some(next) => cursor = Some((next.topic_name.to_string(), next.partition_index)),
                None => return pages,
            }
        }
        panic!("paging never ended: {pages:?}");
    }

    fn at(topic: &str, index: i32) -> (String, i32) {
        (topic.to_owned(), index)
    }

    #[test]
    fn a_partition_limit_pages_every_partition_once_in_topic_order() {
        let image = image();
        assert_eq!(
            pages(&image, &[], 2),
            vec![
                vec![at("a", 0), at("a", 1)],
                vec![at("a", 2), at("b", 0)],
                vec![at("b", 1)],
            ]
        );
        assert_eq!(
            pages(&image, &["b", "a"], 3),
            vec![
                vec![at("a", 0), at("a", 1), at("a", 2)],
                vec![at("b", 0), at("b", 1)]
            ]
        );
        assert_eq!(pages(&image, &[], 0).len(), 1, "no limit: one page");
    }

    #[test]
    fn partitions_carry_the_eligible_leader_replicas_and_unknown_topics_an_error() {
        let image = image();
        let response = describe(&image, request(&["a", "nope"], 0, None));
        let a = &response.topics[0];
        assert_eq!(a.error_code, 0);
        let p = &a.partitions[0];
        assert_eq!(p.leader_id.0, 1);
        assert_eq!(p.eligible_leader_replicas.as_deref(), Some(&[][..]));
        assert_eq!(p.last_known_elr.as_deref(), Some(&[][..]));
        let unknown = &response.topics[1];
        assert_eq!(unknown.error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    }

    #[test]
    fn a_cursor_outside_the_requested_topics_is_an_invalid_request() {
        let image = image();
        let response = describe(&image, request(&["a"], 0, Some(("b", 0))));
        assert_eq!(response.topics[0].error_code, 42, "INVALID_REQUEST");
        let negative = describe(&image, request(&[], 0, Some(("a", -1))));
        assert!(negative.topics.iter().all(|t| t.error_code == 42));
    }
}
