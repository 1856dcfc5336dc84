//! The consumer protocol's embedded formats: `ConsumerProtocolSubscription` (JoinGroup member
//! metadata) and `ConsumerProtocolAssignment` (SyncGroup assignment), each behind the int16
//! version prefix the Java client writes, so Java and librdkafka members read ours and we
//! read theirs.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    consumer_protocol_assignment, consumer_protocol_subscription, ConsumerProtocolAssignment,
    ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::{Error, Result};
use crate::record::TopicPartition;

/// The highest version of both formats we know (Kafka 3.x writes 3: owned partitions,
/// generation and rack). A newer version is read as this one: later versions only append.
pub const CONSUMER_PROTOCOL_VERSION: i16 = 3;

/// The `protocol_type` of consumer groups in JoinGroup and SyncGroup.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// What one member sends in JoinGroup, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub user_data: Option<Bytes>,
    /// Partitions the member owns now (v1+; the cooperative protocol relies on them).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation the owned partitions are from, -1 if unknown (v2+).
    pub generation: i32,
    pub rack_id: Option<String>,
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription {
            topics: Vec::new(),
            user_data: None,
            owned_partitions: Vec::new(),
            generation: -1,
            rack_id: None,
        }
    }
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// `tps` grouped by topic, partitions ascending, topics in name order.
fn by_topic(tps: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in tps {
        topics.entry(&tp.topic).or_default().push(tp.partition);
    }
    for partitions in topics.values_mut() {
        partitions.sort_unstable();
        partitions.dedup();
    }
    topics
}

/// Version prefix, then the body at `version`.
fn encode_versioned(body: &impl Encodable, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    body.encode(&mut buf, version)
        .map_err(|e| Error::Protocol(format!("encoding consumer protocol data: {e}")))?;
    Ok(buf.freeze())
}

/// Reads the version prefix: the version to decode the body with (a newer one as ours).
fn read_version(bytes: &mut Bytes, what: &str) -> Result<i16> {
    if bytes.remaining() < 2 {
        return Err(Error::Protocol(format!("{what}: no version prefix")));
    }
    let version = bytes.get_i16();
    if version < 0 {
        return Err(Error::Protocol(format!("{what}: version {version}")));
    }
    Ok(version.min(CONSUMER_PROTOCOL_VERSION))
}

pub fn encode_subscription(subscription: &Subscription) -> Result<Bytes> {
    let owned = by_topic(&subscription.owned_partitions)
        .into_iter()
        .map(|(topic, partitions)| {
            consumer_protocol_subscription::TopicPartition::default()
                .with_topic(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    let body = ConsumerProtocolSubscription::default()
        .with_topics(subscription.topics.iter().map(|t| str_bytes(t)).collect())
        .with_user_data(subscription.user_data.clone())
        .with_owned_partitions(owned)
        .with_generation_id(subscription.generation)
        .with_rack_id(subscription.rack_id.as_deref().map(str_bytes));
    encode_versioned(&body, CONSUMER_PROTOCOL_VERSION)
}

pub fn decode_subscription(mut bytes: Bytes) -> Result<Subscription> {
    let version = read_version(&mut bytes, "subscription")?;
    let body = ConsumerProtocolSubscription::decode(&mut bytes, version)
        .map_err(|e| Error::Protocol(format!("subscription v{version}: {e}")))?;
    Ok(Subscription {
        topics: body.topics.iter().map(ToString::to_string).collect(),
        user_data: body.user_data,
        owned_partitions: body
            .owned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|&p| TopicPartition::new(t.topic.0.to_string(), p))
            })
            .collect(),
        generation: body.generation_id,
        rack_id: body.rack_id.as_ref().map(ToString::to_string),
    })
}

pub fn encode_assignment(partitions: &[TopicPartition], user_data: Option<Bytes>) -> Result<Bytes> {
    let assigned = by_topic(partitions)
        .into_iter()
        .map(|(topic, partitions)| {
            consumer_protocol_assignment::TopicPartition::default()
                .with_topic(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    let body = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(assigned)
        .with_user_data(user_data);
    encode_versioned(&body, CONSUMER_PROTOCOL_VERSION)
}

/// The partitions of an assignment. Empty bytes are no partitions: the coordinator sends them
/// to a member the leader left out.
pub fn decode_assignment(mut bytes: Bytes) -> Result<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let version = read_version(&mut bytes, "assignment")?;
    let body = ConsumerProtocolAssignment::decode(&mut bytes, version)
        .map_err(|e| Error::Protocol(format!("assignment v{version}: {e}")))?;
    let mut partitions: Vec<TopicPartition> = body
        .assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|&p| TopicPartition::new(t.topic.0.to_string(), p))
        })
        .collect();
    partitions.sort();
    partitions.dedup();
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_round_trips_with_the_version_prefix() {
        let subscription = Subscription {
            topics: vec!["a".into(), "b".into()],
            user_data: Some(Bytes::from_static(&[0, 0, 0, 7])),
            owned_partitions: vec![TopicPartition::new("a", 1), TopicPartition::new("a", 0)],
            generation: 7,
            rack_id: None,
        };
        let bytes = encode_subscription(&subscription).unwrap();
        assert_eq!(&bytes[..2], &[0, 3]);
        let decoded = decode_subscription(bytes).unwrap();
        assert_eq!(decoded.topics, ["a", "b"]);
        assert_eq!(
            decoded.owned_partitions,
            [TopicPartition::new("a", 0), TopicPartition::new("a", 1)]
        );
        assert_eq!(decoded.generation, 7);
        assert_eq!(decoded.user_data, subscription.user_data);
    }

    #[test]
    fn version_zero_subscription_as_old_clients_write_it() {
        // int16 0, topics ["t"], user data null: what a Kafka 2.3 consumer sends.
        let bytes = Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0xff, 0xff, 0xff, 0xff]);
        let decoded = decode_subscription(bytes).unwrap();
        assert_eq!(decoded.topics, ["t"]);
        assert!(decoded.owned_partitions.is_empty());
        assert_eq!(decoded.generation, -1);
    }

    #[test]
    fn a_newer_version_is_read_as_ours_ignoring_what_follows() {
        let mut bytes = BytesMut::from(&encode_subscription(&Subscription::default()).unwrap()[..]);
        bytes[..2].copy_from_slice(&9i16.to_be_bytes());
        bytes.put_slice(b"future fields");
        assert!(decode_subscription(bytes.freeze()).is_ok());
        assert!(decode_subscription(Bytes::from_static(&[0xff, 0xff])).is_err());
        assert!(decode_subscription(Bytes::from_static(&[0])).is_err());
    }

    #[test]
    fn assignment_round_trips_and_empty_bytes_are_no_partitions() {
        let tps = vec![TopicPartition::new("b", 2), TopicPartition::new("a", 5)];
        let bytes = encode_assignment(&tps, None).unwrap();
        // Version 3; one topic "a" first (name order).
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(
            decode_assignment(bytes).unwrap(),
            [TopicPartition::new("a", 5), TopicPartition::new("b", 2)]
        );
        assert!(decode_assignment(Bytes::new()).unwrap().is_empty());
    }
}
