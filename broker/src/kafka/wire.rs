//! Small conversions between wire types and the broker's own, shared by the Kafka handlers
//! and by everything else that speaks the Kafka protocol to other brokers (replica fetchers,
//! coordinators).

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use streambus_raft::command::TopicId;
use uuid::Uuid;

/// Kafka's "not set" for authorized-operations fields.
pub const AUTHORIZED_OPERATIONS_UNSET: i32 = i32::MIN;

/// A wire string from an owned string.
pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A wire string as an owned string.
pub fn text(s: &StrBytes) -> String {
    s.as_str().to_owned()
}

/// A wire topic name.
pub fn topic_name(s: impl Into<String>) -> TopicName {
    TopicName(str_bytes(s))
}

/// The wire form of a topic id.
pub fn to_uuid(topic_id: &TopicId) -> Uuid {
    Uuid::from_bytes(topic_id.0)
}

/// A topic id from the wire.
pub fn from_uuid(uuid: &Uuid) -> TopicId {
    TopicId(*uuid.as_bytes())
}
