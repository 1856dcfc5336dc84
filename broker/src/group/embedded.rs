//! The consumer protocol's formats embedded in classic JoinGroup metadata
//! (`ConsumerProtocolSubscription`) and SyncGroup assignments (`ConsumerProtocolAssignment`),
//! each behind the int16 version prefix Kafka's clients write. The coordinator reads them only
//! to carry classic members across a KIP-848 migration, and to know a classic group's topics.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    consumer_protocol_assignment, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

/// Partitions by topic name.
pub type NamedPartitions = Vec<(String, Vec<i32>)>;

/// What a classic member's JoinGroup metadata says, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// The partitions the member owns (v1+; empty from an eager or old client).
    pub owned: NamedPartitions,
    pub rack_id: Option<String>,
}

/// The version prefix, and the version to read the body with: a version newer than
/// kafka-protocol knows is read as the newest it knows, since the consumer protocol only ever
/// appends fields.
fn split_version<M: Message>(bytes: &Bytes) -> Option<(i16, i16, Bytes)> {
    let mut body = bytes.clone();
    if body.remaining() < 2 {
        return None;
    }
    let version = body.get_i16();
    if version < 0 {
        return None;
    }
    Some((version, version.min(M::VERSIONS.max), body))
}

/// The version a member wrote its subscription with (what its assignment is encoded with).
pub fn subscription_version(metadata: &Bytes) -> Option<i16> {
    split_version::<ConsumerProtocolSubscription>(metadata).map(|(version, _, _)| version)
}

pub fn decode_subscription(metadata: &Bytes) -> Option<Subscription> {
    let (_, readable, mut body) = split_version::<ConsumerProtocolSubscription>(metadata)?;
    let decoded = ConsumerProtocolSubscription::decode(&mut body, readable).ok()?;
    Some(Subscription {
        topics: decoded.topics.iter().map(ToString::to_string).collect(),
        owned: decoded
            .owned_partitions
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect(),
        rack_id: decoded.rack_id.as_ref().map(ToString::to_string),
    })
}

/// The partitions of an assignment. Empty bytes are no partitions: what a member holds before
/// its first SyncGroup, or when the leader left it out.
pub fn decode_assignment(bytes: &Bytes) -> Option<NamedPartitions> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let (_, readable, mut body) = split_version::<ConsumerProtocolAssignment>(bytes)?;
    let decoded = ConsumerProtocolAssignment::decode(&mut body, readable).ok()?;
    Some(
        decoded
            .assigned_partitions
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect(),
    )
}

/// An assignment at `version` (the member's subscription version, as Kafka's
/// `ConsumerProtocol.serializeAssignment` writes it for that member); a version newer than
/// kafka-protocol knows is written at the newest it knows, which every client reads.
pub fn encode_assignment(partitions: &NamedPartitions, version: i16) -> Bytes {
    let body = ConsumerProtocolAssignment::default().with_assigned_partitions(
        partitions
            .iter()
            .map(|(topic, partitions)| {
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(partitions.clone())
            })
            .collect(),
    );
    let version = version.clamp(0, ConsumerProtocolAssignment::VERSIONS.max);
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    body.encode(&mut buf, version)
        .expect("topic names from the metadata image are within the protocol's string limit");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_protocol_subscription;

    fn subscription(version: i16) -> Bytes {
        let body = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .with_owned_partitions(vec![
                consumer_protocol_subscription::TopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![0, 2]),
            ])
            .with_rack_id(Some(StrBytes::from_static_str("r1")));
        let mut buf = BytesMut::new();
        buf.put_i16(version);
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn a_subscription_reads_with_its_owned_partitions_and_rack() {
        let decoded = decode_subscription(&subscription(3)).unwrap();
        assert_eq!(decoded.topics, ["t"]);
        assert_eq!(decoded.owned, [("t".to_owned(), vec![0, 2])]);
        assert_eq!(decoded.rack_id.as_deref(), Some("r1"));
        // Version 0 has neither.
        let old = decode_subscription(&subscription(0)).unwrap();
        assert!(old.owned.is_empty() && old.rack_id.is_none());
        assert_eq!(subscription_version(&subscription(1)), Some(1));
    }

    #[test]
    fn broken_metadata_reads_as_nothing() {
        for bytes in [&[][..], &[0][..], &[0xff, 0xff][..], &[0, 0, 0, 9][..]] {
            assert_eq!(decode_subscription(&Bytes::copy_from_slice(bytes)), None);
        }
        assert_eq!(decode_assignment(&Bytes::from_static(&[0, 1, 7])), None);
        assert_eq!(decode_assignment(&Bytes::new()), Some(Vec::new()));
    }

    #[test]
    fn an_assignment_round_trips_at_the_members_version() {
        let partitions = vec![("a".to_owned(), vec![1, 2]), ("b".to_owned(), vec![0])];
        for version in [0, 1, 3, 7] {
            let bytes = encode_assignment(&partitions, version);
            assert_eq!(i16::from_be_bytes([bytes[0], bytes[1]]), version.min(3));
            assert_eq!(decode_assignment(&bytes), Some(partitions.clone()));
        }
    }
}
