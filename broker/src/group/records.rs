//! The records of the `__consumer_offsets` topic, byte for byte as Apache Kafka writes them, so
//! that tools reading the topic (Burrow, `kafka-console-consumer --formatter`) read what we write
//! and a log Kafka wrote replays here.
//!
//! Framing (Kafka's `CoordinatorRecordSerde`): a record's key is an int16 *record type* followed
//! by the key struct, and its value an int16 *value version* followed by the value struct. A
//! tombstone is the key with a null value. Record types: 0 and 1 are an offset commit (Kafka has
//! written 1 since 0.9; 0 is the 0.8.2 key with the same layout), 2 is classic group metadata,
//! 3 to 8 and 16 are the records of a KIP-848 consumer group (`group.protocol=consumer`). Other
//! types (share groups 9 to 15, streams groups, later additions) decode to [`RecordKey::Unknown`]
//! so a replay can skip them, as Kafka's loader skips unknown types. Recent Kafka declares a key
//! schema as version 0 of a `coordinator-key` whose `apiKey` is the type, where older Kafka
//! declared the type as the key's only version: the bytes are the same.
//!
//! Schemas (Kafka's `group-coordinator/src/main/resources/common/message/*.json`):
//!
//! | record | versions | flexible | version-dependent and tagged fields |
//! |---|---|---|---|
//! | `OffsetCommitKey` (type 0, 1) | — | never | — |
//! | `GroupMetadataKey` (type 2) | — | never | — |
//! | `ConsumerGroup*Key` (types 3-8, 16) | — | never | — |
//! | `OffsetCommitValue` | 0-4 | 4+ | `leaderEpoch` 3+, `expireTimestamp` only 1, `topicId` tag 0 in 4+ |
//! | `GroupMetadataValue` | 0-4 | 4+ | `currentStateTimestamp` 2+; member `rebalanceTimeout` 1+, `groupInstanceId` 3+ |
//! | `ConsumerGroupMetadataValue` (3) | 0 | 0+ | `metadataHash` tag 0 (int64, default 0; Kafka 4.1+) |
//! | `ConsumerGroupPartitionMetadataValue` (4) | 0 | 0+ | — |
//! | `ConsumerGroupMemberMetadataValue` (5) | 0 | 0+ | `classicMemberMetadata` tag 0 (nullable struct, default null) |
//! | `ConsumerGroupTargetAssignmentMetadataValue` (6) | 0 | 0+ | — |
//! | `ConsumerGroupTargetAssignmentMemberValue` (7) | 0 | 0+ | — |
//! | `ConsumerGroupCurrentMemberAssignmentValue` (8) | 0 | 0+ | — |
//! | `ConsumerGroupRegularExpressionValue` (16) | 0 | 0+ | — |
//!
//! Flexible versions use compact (varint-length) strings, bytes and arrays and end every struct
//! with a tagged-field section. A field absent from a version decodes to its schema default
//! (-1, null, the nil topic id), and encoding at a version without the field drops it, as Kafka
//! does for these fields (all are `ignorable`). A tagged field is written only when it differs
//! from its default; a nullable struct in one (`classicMemberMetadata`) is a varint presence
//! marker (1) followed by the struct, as Kafka's generated code writes it.
//!
//! Versions Kafka writes (`GroupCoordinatorRecordHelpers`): `OffsetCommitValue` 1 when the commit
//! carries an expire timestamp (v1 is the only version holding one), else 4 since Kafka 4.1
//! (KAFKA-19141, which added `topicId`), and 3 before; `GroupMetadataValue` 3. [`encode`] writes
//! what Kafka 4.0 writes (1 or 3): version 4 is unreadable to Kafka tools before 3.5 and to Burrow
//! before 1.9.5, and the topic id it adds is not needed to read the topic. The KIP-848 values
//! have only version 0, which Kafka 4.0 writes and `encode` writes. Kafka 4.0 writes type 4 with
//! no racks (its schema: not used after 4.0); since 4.1 (KIP-1101) it keeps `metadataHash` in
//! type 3 instead of writing type 4, and tombstones a type 4 record a group still has.
//!
//! Decoding never panics and allocates at most in proportion to the input: every length is
//! checked against the bytes present before anything is copied or reserved. It is stricter than
//! Kafka in these ways, each a sign of corruption rather than of another writer: bytes left after
//! a key or value, strings that are not UTF-8 (Java replaces the bad sequences), a `topicId` tag
//! whose size is not 16, a `metadataHash` tag whose size is not 8, and a `classicMemberMetadata`
//! tag whose struct does not fill its size exactly (Java reads tagged fields of a known tag
//! without checking their size) are errors. Unknown tagged fields, such as those newer Kafka
//! versions add, are skipped and not kept.
//!
//! The primitives (int16-length strings, compact strings, varints) are written here, not taken
//! from kafka-protocol: its `types::*` encoders work through traits it keeps `pub(crate)`. The
//! tests pin these primitives to kafka-protocol's generated messages byte for byte.
//!
//! [`encode`]: OffsetCommitValue::encode

use bytes::Bytes;
use uuid::Uuid;

pub use crate::coordinator::schema::RecordError;
use crate::coordinator::schema::{check_version, Reader, Writer};

/// The record type of the 0.8.2 offset commit key; read, never written.
const OFFSET_COMMIT_LEGACY_TYPE: i16 = 0;
/// The record type Kafka writes offset commit keys with.
const OFFSET_COMMIT_TYPE: i16 = 1;
/// The record type of classic group metadata.
const GROUP_METADATA_TYPE: i16 = 2;
/// The record type of a consumer group's epoch (`ConsumerGroupMetadata`).
const CONSUMER_GROUP_METADATA_TYPE: i16 = 3;
/// The record type of a consumer group's subscription metadata (`ConsumerGroupPartitionMetadata`).
const CONSUMER_GROUP_PARTITION_METADATA_TYPE: i16 = 4;
/// The record type of a consumer group member's metadata (`ConsumerGroupMemberMetadata`).
const CONSUMER_GROUP_MEMBER_METADATA_TYPE: i16 = 5;
/// The record type of a consumer group's target assignment epoch
/// (`ConsumerGroupTargetAssignmentMetadata`).
const CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_TYPE: i16 = 6;
/// The record type of a member's target assignment (`ConsumerGroupTargetAssignmentMember`).
const CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_TYPE: i16 = 7;
/// The record type of a member's current assignment (`ConsumerGroupCurrentMemberAssignment`).
const CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_TYPE: i16 = 8;
/// The record type of a consumer group's resolved regular expression
/// (`ConsumerGroupRegularExpression`).
const CONSUMER_GROUP_REGULAR_EXPRESSION_TYPE: i16 = 16;

/// The tag of `OffsetCommitValue.topicId`.
const TOPIC_ID_TAG: u32 = 0;
/// The tag of `ConsumerGroupMetadataValue.metadataHash`.
const METADATA_HASH_TAG: u32 = 0;
/// The tag of `ConsumerGroupMemberMetadataValue.classicMemberMetadata`.
const CLASSIC_MEMBER_METADATA_TAG: u32 = 0;
/// The only version of the KIP-848 consumer group values, flexible.
const CONSUMER_GROUP_VALUE_VERSION: i16 = 0;

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    /// A committed offset of one group for one partition (record type 0 or 1).
    OffsetCommit(OffsetCommitKey),
    /// The metadata of a classic group (record type 2).
    GroupMetadata(GroupMetadataKey),
    /// A consumer group's epoch (record type 3), value [`ConsumerGroupMetadataValue`].
    ConsumerGroupMetadata(ConsumerGroupKey),
    /// A consumer group's subscription metadata (record type 4), value
    /// [`ConsumerGroupPartitionMetadataValue`].
    ConsumerGroupPartitionMetadata(ConsumerGroupKey),
    /// A consumer group member's metadata (record type 5), value
    /// [`ConsumerGroupMemberMetadataValue`].
    ConsumerGroupMemberMetadata(ConsumerGroupMemberKey),
    /// A consumer group's target assignment epoch (record type 6), value
    /// [`ConsumerGroupTargetAssignmentMetadataValue`].
    ConsumerGroupTargetAssignmentMetadata(ConsumerGroupKey),
    /// A member's target assignment (record type 7), value
    /// [`ConsumerGroupTargetAssignmentMemberValue`].
    ConsumerGroupTargetAssignmentMember(ConsumerGroupMemberKey),
    /// A member's current assignment (record type 8), value
    /// [`ConsumerGroupCurrentMemberAssignmentValue`].
    ConsumerGroupCurrentMemberAssignment(ConsumerGroupMemberKey),
    /// A consumer group's resolved regular expression (record type 16), value
    /// [`ConsumerGroupRegularExpressionValue`].
    ConsumerGroupRegularExpression(ConsumerGroupRegularExpressionKey),
    /// A record type this module does not know (share groups, streams groups, ...); only the
    /// type was read, so a replay can skip the record.
    Unknown {
        /// The record type.
        version: i16,
    },
}

/// The key of an offset commit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitKey {
    /// The group id.
    pub group: String,
    /// The topic name.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
}

/// The key of a group metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataKey {
    /// The group id.
    pub group: String,
}

/// The value of an offset commit record (`OffsetCommitValue`, versions 0-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    /// The committed offset: the next record the group reads.
    pub offset: i64,
    /// The leader epoch of the last consumed record, -1 when unknown (versions 3+).
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
    /// When the commit was added to the log, in milliseconds since the epoch.
    pub commit_timestamp: i64,
    /// When the offset expires (a commit with a retention time), -1 for none (version 1 only).
    pub expire_timestamp: i64,
    /// The id of the committed topic, nil when unknown (tagged field 0, versions 4+).
    pub topic_id: Uuid,
}

/// The value of a group metadata record (`GroupMetadataValue`, versions 0-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    /// The protocol type, e.g. `consumer`; empty for a group that has none.
    pub protocol_type: String,
    /// The generation id.
    pub generation: i32,
    /// The selected protocol (assignor), if any.
    pub protocol: Option<String>,
    /// The leader's member id, if any.
    pub leader: Option<String>,
    /// When the group last changed state, -1 when unknown (versions 2+).
    pub current_state_timestamp: i64,
    /// The members.
    pub members: Vec<MemberMetadata>,
}

/// One member of a classic group in [`GroupMetadataValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadata {
    /// The member id.
    pub member_id: String,
    /// The static member's instance id (versions 3+).
    pub group_instance_id: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client host.
    pub client_host: String,
    /// The rebalance timeout in milliseconds, -1 when unknown (versions 1+).
    pub rebalance_timeout: i32,
    /// The session timeout in milliseconds.
    pub session_timeout: i32,
    /// The member's metadata for the selected protocol (its subscription).
    pub subscription: Bytes,
    /// The leader's assignment for the member.
    pub assignment: Bytes,
}

/// The key of a consumer group record that holds one value for the whole group: its epoch
/// (type 3), its subscription metadata (type 4) or its target assignment epoch (type 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupKey {
    /// The group id.
    pub group: String,
}

/// The key of a consumer group record about one member: its metadata (type 5), its target
/// assignment (type 7) or its current assignment (type 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMemberKey {
    /// The group id.
    pub group: String,
    /// The member id.
    pub member_id: String,
}

/// The key of a consumer group's resolved regular expression (type 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupRegularExpressionKey {
    /// The group id.
    pub group: String,
    /// The regular expression, as members subscribed with it.
    pub regex: String,
}

/// The value of a consumer group's epoch record (`ConsumerGroupMetadataValue`, version 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadataValue {
    /// The group epoch.
    pub epoch: i32,
    /// The hash of the metadata of every subscribed topic, 0 when unknown (tagged field 0; Kafka
    /// writes it since 4.1, KIP-1101).
    pub metadata_hash: i64,
}

/// The value of a consumer group's subscription metadata record
/// (`ConsumerGroupPartitionMetadataValue`, version 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupPartitionMetadataValue {
    /// The subscribed topics.
    pub topics: Vec<TopicMetadata>,
}

/// One subscribed topic in [`ConsumerGroupPartitionMetadataValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// The topic id.
    pub topic_id: Uuid,
    /// The topic name.
    pub topic_name: String,
    /// The number of partitions of the topic.
    pub num_partitions: i32,
    /// The racks of each partition (Kafka's `PartitionMetadata`); Kafka 4.0 writes it empty.
    pub partition_racks: Vec<PartitionRacks>,
}

/// The racks holding one partition, in [`TopicMetadata`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRacks {
    /// The partition index.
    pub partition: i32,
    /// The racks of the partition's replicas.
    pub racks: Vec<String>,
}

/// The value of a consumer group member's metadata record (`ConsumerGroupMemberMetadataValue`,
/// version 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMemberMetadataValue {
    /// The static member's instance id.
    pub instance_id: Option<String>,
    /// The member's rack.
    pub rack_id: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client host.
    pub client_host: String,
    /// The topics the member subscribed to by name.
    pub subscribed_topic_names: Vec<String>,
    /// The regular expression the member subscribed with, if any.
    pub subscribed_topic_regex: Option<String>,
    /// The rebalance timeout in milliseconds (schema default -1).
    pub rebalance_timeout: i32,
    /// The server-side assignor the member asked for, if any.
    pub server_assignor: Option<String>,
    /// The classic protocol metadata of a member that joined with the classic protocol (a
    /// group converted from classic); `None` for a member using the consumer protocol (tagged
    /// field 0).
    pub classic_member_metadata: Option<ClassicMemberMetadata>,
}

/// The classic protocol metadata of a member in [`ConsumerGroupMemberMetadataValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicMemberMetadata {
    /// The session timeout in milliseconds.
    pub session_timeout: i32,
    /// The protocols (assignors) the member supports, with their metadata.
    pub supported_protocols: Vec<ClassicProtocol>,
}

/// One protocol a classic member supports, in [`ClassicMemberMetadata`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicProtocol {
    /// The protocol name, e.g. `range`.
    pub name: String,
    /// The protocol metadata (the member's subscription).
    pub metadata: Bytes,
}

/// The value of a consumer group's target assignment epoch record
/// (`ConsumerGroupTargetAssignmentMetadataValue`, version 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupTargetAssignmentMetadataValue {
    /// The group epoch the target assignment was computed for.
    pub assignment_epoch: i32,
}

/// The value of a member's target assignment record (`ConsumerGroupTargetAssignmentMemberValue`,
/// version 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupTargetAssignmentMemberValue {
    /// The partitions the target assignment gives the member.
    pub topic_partitions: Vec<TopicPartitions>,
}

/// The partitions of one topic, in the assignment records (Kafka's `TopicPartition` of type 7
/// and `TopicPartitions` of type 8, the same layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitions {
    /// The topic id.
    pub topic_id: Uuid,
    /// The partition indexes.
    pub partitions: Vec<i32>,
}

/// The value of a member's current assignment record
/// (`ConsumerGroupCurrentMemberAssignmentValue`, version 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupCurrentMemberAssignmentValue {
    /// The member epoch the member is expected to heartbeat with.
    pub member_epoch: i32,
    /// The previous member epoch, which the member may retry with if it missed the last bump.
    pub previous_member_epoch: i32,
    /// The member state, Kafka's `MemberState` value (the `STATE_*` constants).
    pub state: i8,
    /// The partitions assigned to (owned by) the member.
    pub assigned_partitions: Vec<TopicPartitions>,
    /// The partitions the member must revoke.
    pub partitions_pending_revocation: Vec<TopicPartitions>,
}

/// The value of a consumer group's resolved regular expression record
/// (`ConsumerGroupRegularExpressionValue`, version 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupRegularExpressionValue {
    /// The topics the regular expression matched.
    pub topics: Vec<String>,
    /// The version of the metadata image it was resolved against (Kafka: the image's last
    /// contained offset).
    pub version: i64,
    /// When the resolution started, in milliseconds since the epoch.
    pub timestamp: i64,
}

impl RecordKey {
    /// Encodes the key with its record type; offset commit keys get type 1, as Kafka writes
    /// them. [`RecordKey::Unknown`] cannot be encoded (its fields were never read).
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        match self {
            RecordKey::OffsetCommit(key) => {
                let mut w = Writer::new("OffsetCommitKey", OFFSET_COMMIT_TYPE, false);
                w.string("group", &key.group)?;
                w.string("topic", &key.topic)?;
                w.i32(key.partition);
                Ok(w.finish())
            }
            RecordKey::GroupMetadata(key) => {
                let mut w = Writer::new("GroupMetadataKey", GROUP_METADATA_TYPE, false);
                w.string("group", &key.group)?;
                Ok(w.finish())
            }
            RecordKey::ConsumerGroupMetadata(key) => encode_group_key(
                "ConsumerGroupMetadataKey",
                CONSUMER_GROUP_METADATA_TYPE,
                key,
            ),
            RecordKey::ConsumerGroupPartitionMetadata(key) => encode_group_key(
                "ConsumerGroupPartitionMetadataKey",
                CONSUMER_GROUP_PARTITION_METADATA_TYPE,
                key,
            ),
            RecordKey::ConsumerGroupMemberMetadata(key) => encode_member_key(
                "ConsumerGroupMemberMetadataKey",
                CONSUMER_GROUP_MEMBER_METADATA_TYPE,
                key,
            ),
            RecordKey::ConsumerGroupTargetAssignmentMetadata(key) => encode_group_key(
                "ConsumerGroupTargetAssignmentMetadataKey",
                CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_TYPE,
                key,
            ),
            RecordKey::ConsumerGroupTargetAssignmentMember(key) => encode_member_key(
                "ConsumerGroupTargetAssignmentMemberKey",
                CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_TYPE,
                key,
            ),
            RecordKey::ConsumerGroupCurrentMemberAssignment(key) => encode_member_key(
                "ConsumerGroupCurrentMemberAssignmentKey",
                CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_TYPE,
                key,
            ),
            RecordKey::ConsumerGroupRegularExpression(key) => {
                let mut w = Writer::new(
                    "ConsumerGroupRegularExpressionKey",
                    CONSUMER_GROUP_REGULAR_EXPRESSION_TYPE,
                    false,
                );
                w.string("groupId", &key.group)?;
                w.string("regularExpression", &key.regex)?;
                Ok(w.finish())
            }
            RecordKey::Unknown { version } => Err(RecordError::UnsupportedVersion {
                schema: "RecordKey",
                version: *version,
            }),
        }
    }

    /// Decodes a key. Any record type other than 0 to 8 and 16 gives [`RecordKey::Unknown`]
    /// without reading further.
    pub fn decode(bytes: &[u8]) -> Result<RecordKey, RecordError> {
        let mut r = Reader::new("RecordKey", bytes, false);
        let version = r.i16("record type")?;
        let key = match version {
            OFFSET_COMMIT_LEGACY_TYPE | OFFSET_COMMIT_TYPE => {
                r.schema = "OffsetCommitKey";
                RecordKey::OffsetCommit(OffsetCommitKey {
                    group: r.string("group")?,
                    topic: r.string("topic")?,
                    partition: r.i32("partition")?,
                })
            }
            GROUP_METADATA_TYPE => {
                r.schema = "GroupMetadataKey";
                RecordKey::GroupMetadata(GroupMetadataKey {
                    group: r.string("group")?,
                })
            }
            CONSUMER_GROUP_METADATA_TYPE => {
                r.schema = "ConsumerGroupMetadataKey";
                RecordKey::ConsumerGroupMetadata(decode_group_key(&mut r)?)
            }
            CONSUMER_GROUP_PARTITION_METADATA_TYPE => {
                r.schema = "ConsumerGroupPartitionMetadataKey";
                RecordKey::ConsumerGroupPartitionMetadata(decode_group_key(&mut r)?)
            }
            CONSUMER_GROUP_MEMBER_METADATA_TYPE => {
                r.schema = "ConsumerGroupMemberMetadataKey";
                RecordKey::ConsumerGroupMemberMetadata(decode_member_key(&mut r)?)
            }
            CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_TYPE => {
                r.schema = "ConsumerGroupTargetAssignmentMetadataKey";
                RecordKey::ConsumerGroupTargetAssignmentMetadata(decode_group_key(&mut r)?)
            }
            CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_TYPE => {
                r.schema = "ConsumerGroupTargetAssignmentMemberKey";
                RecordKey::ConsumerGroupTargetAssignmentMember(decode_member_key(&mut r)?)
            }
            CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_TYPE => {
                r.schema = "ConsumerGroupCurrentMemberAssignmentKey";
                RecordKey::ConsumerGroupCurrentMemberAssignment(decode_member_key(&mut r)?)
            }
            CONSUMER_GROUP_REGULAR_EXPRESSION_TYPE => {
                r.schema = "ConsumerGroupRegularExpressionKey";
                RecordKey::ConsumerGroupRegularExpression(ConsumerGroupRegularExpressionKey {
                    group: r.string("groupId")?,
                    regex: r.string("regularExpression")?,
                })
            }
            version => return Ok(RecordKey::Unknown { version }),
        };
        r.finish()?;
        Ok(key)
    }
}

impl OffsetCommitValue {
    /// The newest version the schema has.
    pub const MAX_VERSION: i16 = 4;
    /// The first flexible version.
    const FIRST_FLEXIBLE: i16 = 4;

    /// Encodes at the version Kafka 4.0 writes: 1 when `expire_timestamp` is set (no other
    /// version carries it), else 3 (readable by every tool; `topic_id` is not written).
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        let version = if self.expire_timestamp != -1 { 1 } else { 3 };
        self.encode_version(version)
    }

    /// Encodes at `version`, dropping the fields that version does not have.
    pub fn encode_version(&self, version: i16) -> Result<Bytes, RecordError> {
        check_version("OffsetCommitValue", version, Self::MAX_VERSION)?;
        let mut w = Writer::new(
            "OffsetCommitValue",
            version,
            version >= Self::FIRST_FLEXIBLE,
        );
        w.i64(self.offset);
        if version >= 3 {
            w.i32(self.leader_epoch);
        }
        w.string("metadata", &self.metadata)?;
        w.i64(self.commit_timestamp);
        if version == 1 {
            w.i64(self.expire_timestamp);
        }
        if w.flexible {
            // Kafka writes a tagged field only when it differs from its default (the nil id).
            if self.topic_id.is_nil() {
                w.tagged_fields(&[]);
            } else {
                w.tagged_fields(&[(TOPIC_ID_TAG, self.topic_id.as_bytes())]);
            }
        }
        Ok(w.finish())
    }

    /// Decodes a value of any version from 0 to [`Self::MAX_VERSION`].
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new("OffsetCommitValue", bytes, false);
        let version = r.i16("version")?;
        check_version("OffsetCommitValue", version, Self::MAX_VERSION)?;
        r.flexible = version >= Self::FIRST_FLEXIBLE;
        let offset = r.i64("offset")?;
        let leader_epoch = if version >= 3 {
            r.i32("leaderEpoch")?
        } else {
            -1
        };
        let metadata = r.string("metadata")?;
        let commit_timestamp = r.i64("commitTimestamp")?;
        let expire_timestamp = if version == 1 {
            r.i64("expireTimestamp")?
        } else {
            -1
        };
        let mut topic_id = Uuid::nil();
        if r.flexible {
            r.tagged_fields(|tag, data| {
                if tag == TOPIC_ID_TAG {
                    let id: [u8; 16] = data.try_into().map_err(|_| {
                        format!("tagged field topicId is {} bytes, not 16", data.len())
                    })?;
                    topic_id = Uuid::from_bytes(id);
                }
                Ok(())
            })?;
        }
        r.finish()?;
        Ok(OffsetCommitValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
            expire_timestamp,
            topic_id,
        })
    }
}

impl GroupMetadataValue {
    /// The newest version the schema has.
    pub const MAX_VERSION: i16 = 4;
    /// The first flexible version.
    const FIRST_FLEXIBLE: i16 = 4;
    /// The version Kafka writes (`GroupCoordinatorRecordHelpers.GROUP_METADATA_VALUE_VERSION`).
    const KAFKA_VERSION: i16 = 3;
    /// The fewest bytes a member takes (version 4: three empty compact strings, two int32, two
    /// empty compact bytes, an empty tag section), so a member count off the wire reserves no
    /// more than the bytes present can hold.
    const MEMBER_MIN_BYTES: usize = 14;

    /// Encodes at version 3, the version Kafka writes.
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        self.encode_version(Self::KAFKA_VERSION)
    }

    /// Encodes at `version`, dropping the fields that version does not have.
    pub fn encode_version(&self, version: i16) -> Result<Bytes, RecordError> {
        check_version("GroupMetadataValue", version, Self::MAX_VERSION)?;
        let mut w = Writer::new(
            "GroupMetadataValue",
            version,
            version >= Self::FIRST_FLEXIBLE,
        );
        w.string("protocolType", &self.protocol_type)?;
        w.i32(self.generation);
        w.nullable_string("protocol", self.protocol.as_deref())?;
        w.nullable_string("leader", self.leader.as_deref())?;
        if version >= 2 {
            w.i64(self.current_state_timestamp);
        }
        w.array_len("members", self.members.len())?;
        for member in &self.members {
            w.string("memberId", &member.member_id)?;
            if version >= 3 {
                w.nullable_string("groupInstanceId", member.group_instance_id.as_deref())?;
            }
            w.string("clientId", &member.client_id)?;
            w.string("clientHost", &member.client_host)?;
            if version >= 1 {
                w.i32(member.rebalance_timeout);
            }
            w.i32(member.session_timeout);
            w.bytes("subscription", &member.subscription)?;
            w.bytes("assignment", &member.assignment)?;
            if w.flexible {
                w.tagged_fields(&[]);
            }
        }
        if w.flexible {
            w.tagged_fields(&[]);
        }
        Ok(w.finish())
    }

    /// Decodes a value of any version from 0 to [`Self::MAX_VERSION`].
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new("GroupMetadataValue", bytes, false);
        let version = r.i16("version")?;
        check_version("GroupMetadataValue", version, Self::MAX_VERSION)?;
        r.flexible = version >= Self::FIRST_FLEXIBLE;
        let protocol_type = r.string("protocolType")?;
        let generation = r.i32("generation")?;
        let protocol = r.nullable_string("protocol")?;
        let leader = r.nullable_string("leader")?;
        let current_state_timestamp = if version >= 2 {
            r.i64("currentStateTimestamp")?
        } else {
            -1
        };
        let count = r.array_len("members")?;
        let mut members = Vec::with_capacity(count.min(r.remaining() / Self::MEMBER_MIN_BYTES));
        for _ in 0..count {
            let member_id = r.string("memberId")?;
            let group_instance_id = if version >= 3 {
                r.nullable_string("groupInstanceId")?
            } else {
                None
            };
            let client_id = r.string("clientId")?;
            let client_host = r.string("clientHost")?;
            let rebalance_timeout = if version >= 1 {
                r.i32("rebalanceTimeout")?
            } else {
                -1
            };
            let session_timeout = r.i32("sessionTimeout")?;
            let subscription = r.bytes("subscription")?;
            let assignment = r.bytes("assignment")?;
            if r.flexible {
                r.tagged_fields(|_, _| Ok(()))?;
            }
            members.push(MemberMetadata {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout,
                session_timeout,
                subscription,
                assignment,
            });
        }
        if r.flexible {
            r.tagged_fields(|_, _| Ok(()))?;
        }
        r.finish()?;
        Ok(GroupMetadataValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp,
            members,
        })
    }
}

fn encode_group_key(
    schema: &'static str,
    record_type: i16,
    key: &ConsumerGroupKey,
) -> Result<Bytes, RecordError> {
    let mut w = Writer::new(schema, record_type, false);
    w.string("groupId", &key.group)?;
    Ok(w.finish())
}

fn encode_member_key(
    schema: &'static str,
    record_type: i16,
    key: &ConsumerGroupMemberKey,
) -> Result<Bytes, RecordError> {
    let mut w = Writer::new(schema, record_type, false);
    w.string("groupId", &key.group)?;
    w.string("memberId", &key.member_id)?;
    Ok(w.finish())
}

fn decode_group_key(r: &mut Reader<'_>) -> Result<ConsumerGroupKey, RecordError> {
    Ok(ConsumerGroupKey {
        group: r.string("groupId")?,
    })
}

fn decode_member_key(r: &mut Reader<'_>) -> Result<ConsumerGroupMemberKey, RecordError> {
    Ok(ConsumerGroupMemberKey {
        group: r.string("groupId")?,
        member_id: r.string("memberId")?,
    })
}

/// A writer for a KIP-848 value at `version`, which must be 0, the only (flexible) version.
fn consumer_group_value_writer(schema: &'static str, version: i16) -> Result<Writer, RecordError> {
    check_version(schema, version, CONSUMER_GROUP_VALUE_VERSION)?;
    Ok(Writer::new(schema, version, true))
}

/// A reader past the version of a KIP-848 value, which must be 0, the only (flexible) version.
fn consumer_group_value_reader<'a>(
    schema: &'static str,
    bytes: &'a [u8],
) -> Result<Reader<'a>, RecordError> {
    let mut r = Reader::new(schema, bytes, true);
    let version = r.i16("version")?;
    check_version(schema, version, CONSUMER_GROUP_VALUE_VERSION)?;
    Ok(r)
}

impl ConsumerGroupMetadataValue {
    /// The newest version the schema has.
    pub const MAX_VERSION: i16 = CONSUMER_GROUP_VALUE_VERSION;
    const SCHEMA: &'static str = "ConsumerGroupMetadataValue";

    /// Encodes at version 0, the version Kafka writes.
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        self.encode_version(CONSUMER_GROUP_VALUE_VERSION)
    }

    /// Encodes at `version` (only 0 exists). `metadata_hash` is written only when not 0, its
    /// default, as Kafka writes tagged fields; Kafka 4.0 never sets it.
    pub fn encode_version(&self, version: i16) -> Result<Bytes, RecordError> {
        let mut w = consumer_group_value_writer(Self::SCHEMA, version)?;
        w.i32(self.epoch);
        if self.metadata_hash == 0 {
            w.tagged_fields(&[]);
        } else {
            w.tagged_fields(&[(METADATA_HASH_TAG, &self.metadata_hash.to_be_bytes())]);
        }
        Ok(w.finish())
    }

    /// Decodes a value of version 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = consumer_group_value_reader(Self::SCHEMA, bytes)?;
        let epoch = r.i32("epoch")?;
        let mut metadata_hash = 0;
        r.tagged_fields(|tag, data| {
            if tag == METADATA_HASH_TAG {
                let hash: [u8; 8] = data.try_into().map_err(|_| {
                    format!("tagged field metadataHash is {} bytes, not 8", data.len())
                })?;
                metadata_hash = i64::from_be_bytes(hash);
            }
            Ok(())
        })?;
        r.finish()?;
        Ok(ConsumerGroupMetadataValue {
            epoch,
            metadata_hash,
        })
    }
}

impl ConsumerGroupPartitionMetadataValue {
    /// The newest version the schema has.
    pub const MAX_VERSION: i16 = CONSUMER_GROUP_VALUE_VERSION;
    const SCHEMA: &'static str = "ConsumerGroupPartitionMetadataValue";
    /// The fewest bytes a topic takes (an id, an empty name, a count, no racks, no tags).
    const TOPIC_MIN_BYTES: usize = 23;
    /// The fewest bytes a partition's racks take (an index, no racks, no tags).
    const PARTITION_MIN_BYTES: usize = 6;

    /// Encodes at version 0, the version Kafka writes.
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        self.encode_version(CONSUMER_GROUP_VALUE_VERSION)
    }

    /// Encodes at `version` (only 0 exists).
    pub fn encode_version(&self, version: i16) -> Result<Bytes, RecordError> {
        let mut w = consumer_group_value_writer(Self::SCHEMA, version)?;
        w.array_len("topics", self.topics.len())?;
        for topic in &self.topics {
            w.uuid(&topic.topic_id);
            w.string("topicName", &topic.topic_name)?;
            w.i32(topic.num_partitions);
            w.array_len("partitionMetadata", topic.partition_racks.len())?;
            for partition in &topic.partition_racks {
                w.i32(partition.partition);
                w.string_array("racks", &partition.racks)?;
                w.tagged_fields(&[]);
            }
            w.tagged_fields(&[]);
        }
        w.tagged_fields(&[]);
        Ok(w.finish())
    }

    /// Decodes a value of version 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = consumer_group_value_reader(Self::SCHEMA, bytes)?;
        let count = r.array_len("topics")?;
        let mut topics = Vec::with_capacity(count.min(r.remaining() / Self::TOPIC_MIN_BYTES));
        for _ in 0..count {
            let topic_id = r.uuid("topicId")?;
            let topic_name = r.string("topicName")?;
            let num_partitions = r.i32("numPartitions")?;
            let count = r.array_len("partitionMetadata")?;
            let mut partition_racks =
                Vec::with_capacity(count.min(r.remaining() / Self::PARTITION_MIN_BYTES));
            for _ in 0..count {
                let partition = r.i32("partition")?;
                let racks = r.string_array("racks")?;
                r.tagged_fields(|_, _| Ok(()))?;
                partition_racks.push(PartitionRacks { partition, racks });
            }
            r.tagged_fields(|_, _| Ok(()))?;
            topics.push(TopicMetadata {
                topic_id,
                topic_name,
                num_partitions,
                partition_racks,
            });
        }
        r.tagged_fields(|_, _| Ok(()))?;
        r.finish()?;
        Ok(ConsumerGroupPartitionMetadataValue { topics })
    }
}

impl ConsumerGroupMemberMetadataValue {
    /// The newest version the schema has.
    pub const MAX_VERSION: i16 = CONSUMER_GROUP_VALUE_VERSION;
    const SCHEMA: &'static str = "ConsumerGroupMemberMetadataValue";

    /// Encodes at version 0, the version Kafka writes.
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        self.encode_version(CONSUMER_GROUP_VALUE_VERSION)
    }

    /// Encodes at `version` (only 0 exists). `classic_member_metadata` is written only when
    /// set, as Kafka writes tagged fields.
    pub fn encode_version(&self, version: i16) -> Result<Bytes, RecordError> {
        let mut w = consumer_group_value_writer(Self::SCHEMA, version)?;
        w.nullable_string("instanceId", self.instance_id.as_deref())?;
        w.nullable_string("rackId", self.rack_id.as_deref())?;
        w.string("clientId", &self.client_id)?;
        w.string("clientHost", &self.client_host)?;
        w.string_array("subscribedTopicNames", &self.subscribed_topic_names)?;
        w.nullable_string(
            "subscribedTopicRegex",
            self.subscribed_topic_regex.as_deref(),
        )?;
        w.i32(self.rebalance_timeout);
        w.nullable_string("serverAssignor", self.server_assignor.as_deref())?;
        match &self.classic_member_metadata {
            None => w.tagged_fields(&[]),
            Some(classic) => {
                let data = classic.encode_tagged()?;
                w.tagged_fields(&[(CLASSIC_MEMBER_METADATA_TAG, &data)]);
            }
        }
        Ok(w.finish())
    }

    /// Decodes a value of version 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = consumer_group_value_reader(Self::SCHEMA, bytes)?;
        let instance_id = r.nullable_string("instanceId")?;
        let rack_id = r.nullable_string("rackId")?;
        let client_id = r.string("clientId")?;
        let client_host = r.string("clientHost")?;
        let subscribed_topic_names = r.string_array("subscribedTopicNames")?;
        let subscribed_topic_regex = r.nullable_string("subscribedTopicRegex")?;
        let rebalance_timeout = r.i32("rebalanceTimeoutMs")?;
        let server_assignor = r.nullable_string("serverAssignor")?;
        let mut classic_member_metadata = None;
        r.tagged_fields(|tag, data| {
            if tag == CLASSIC_MEMBER_METADATA_TAG {
                classic_member_metadata =
                    ClassicMemberMetadata::decode_tagged(data).map_err(|e| e.to_string())?;
            }
            Ok(())
        })?;
        r.finish()?;
        Ok(ConsumerGroupMemberMetadataValue {
            instance_id,
            rack_id,
            client_id,
            client_host,
            subscribed_topic_names,
            subscribed_topic_regex,
            rebalance_timeout,
            server_assignor,
            classic_member_metadata,
        })
    }
}

impl ClassicMemberMetadata {
    const SCHEMA: &'static str = "ClassicMemberMetadata";
    /// The fewest bytes a protocol takes (an empty name, empty metadata, no tags).
    const PROTOCOL_MIN_BYTES: usize = 3;

    /// The tagged field's data: Kafka writes a nullable struct in a tagged field as a varint
    /// presence marker (1) and then the struct, and writes nothing for null, the default.
    fn encode_tagged(&self) -> Result<Bytes, RecordError> {
        let mut w = Writer::without_version(Self::SCHEMA, true);
        w.unsigned_varint(1);
        w.i32(self.session_timeout);
        w.array_len("supportedProtocols", self.supported_protocols.len())?;
        for protocol in &self.supported_protocols {
            w.string("name", &protocol.name)?;
            w.bytes("metadata", &protocol.metadata)?;
            w.tagged_fields(&[]);
        }
        w.tagged_fields(&[]);
        let data = w.finish();
        // Kafka sizes a struct with an int.
        if data.len() > i32::MAX as usize {
            return Err(RecordError::Invalid(format!(
                "{}: {} bytes, more than a tagged field holds",
                Self::SCHEMA,
                data.len()
            )));
        }
        Ok(data)
    }

    /// Reads the tagged field's data, which must hold the struct exactly (Kafka reads the
    /// struct without checking the field's size). A marker that is 0 (or negative as a Java
    /// int) is null, as Kafka reads it.
    fn decode_tagged(data: &[u8]) -> Result<Option<Self>, RecordError> {
        let mut r = Reader::new(Self::SCHEMA, data, true);
        let marker = r.unsigned_varint("presence")?;
        if marker as i32 <= 0 {
            r.finish()?;
            return Ok(None);
        }
        let session_timeout = r.i32("sessionTimeoutMs")?;
        let count = r.array_len("supportedProtocols")?;
        let mut supported_protocols =
            Vec::with_capacity(count.min(r.remaining() / Self::PROTOCOL_MIN_BYTES));
        for _ in 0..count {
            let name = r.string("name")?;
            let metadata = r.bytes("metadata")?;
            r.tagged_fields(|_, _| Ok(()))?;
            supported_protocols.push(ClassicProtocol { name, metadata });
        }
        r.tagged_fields(|_, _| Ok(()))?;
        r.finish()?;
        Ok(Some(ClassicMemberMetadata {
            session_timeout,
            supported_protocols,
        }))
    }
}

impl ConsumerGroupTargetAssignmentMetadataValue {
    /// The newest version the schema has.
    pub const MAX_VERSION: i16 = CONSUMER_GROUP_VALUE_VERSION;
    const SCHEMA: &'static str = "ConsumerGroupTargetAssignmentMetadataValue";

    /// Encodes at version 0, the version Kafka writes.
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        self.encode_version(CONSUMER_GROUP_VALUE_VERSION)
    }

    /// Encodes at `version` (only 0 exists).
    pub fn encode_version(&self, version: i16) -> Result<Bytes, RecordError> {
        let mut w = consumer_group_value_writer(Self::SCHEMA, version)?;
        w.i32(self.assignment_epoch);
        w.tagged_fields(&[]);
        Ok(w.finish())
    }

    /// Decodes a value of version 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = consumer_group_value_reader(Self::SCHEMA, bytes)?;
        let assignment_epoch = r.i32("assignmentEpoch")?;
        r.tagged_fields(|_, _| Ok(()))?;
        r.finish()?;
        Ok(ConsumerGroupTargetAssignmentMetadataValue { assignment_epoch })
    }
}

impl ConsumerGroupTargetAssignmentMemberValue {
    /// The newest version the schema has.
    pub const MAX_VERSION: i16 = CONSUMER_GROUP_VALUE_VERSION;
    const SCHEMA: &'static str = "ConsumerGroupTargetAssignmentMemberValue";

    /// Encodes at version 0, the version Kafka writes.
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        self.encode_version(CONSUMER_GROUP_VALUE_VERSION)
    }

    /// Encodes at `version` (only 0 exists).
    pub fn encode_version(&self, version: i16) -> Result<Bytes, RecordError> {
        let mut w = consumer_group_value_writer(Self::SCHEMA, version)?;
        TopicPartitions::write_all(&mut w, "topicPartitions", &self.topic_partitions)?;
        w.tagged_fields(&[]);
        Ok(w.finish())
    }

    /// Decodes a value of version 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = consumer_group_value_reader(Self::SCHEMA, bytes)?;
        let topic_partitions = TopicPartitions::read_all(&mut r, "topicPartitions")?;
        r.tagged_fields(|_, _| Ok(()))?;
        r.finish()?;
        Ok(ConsumerGroupTargetAssignmentMemberValue { topic_partitions })
    }
}

impl TopicPartitions {
    /// The fewest bytes one takes (an id, no partitions, no tags).
    const MIN_BYTES: usize = 18;

    fn write_all(
        w: &mut Writer,
        field: &'static str,
        all: &[TopicPartitions],
    ) -> Result<(), RecordError> {
        w.array_len(field, all.len())?;
        for topic in all {
            w.uuid(&topic.topic_id);
            w.i32_array("partitions", &topic.partitions)?;
            w.tagged_fields(&[]);
        }
        Ok(())
    }

    fn read_all(r: &mut Reader<'_>, field: &str) -> Result<Vec<TopicPartitions>, RecordError> {
        let count = r.array_len(field)?;
        let mut all = Vec::with_capacity(count.min(r.remaining() / Self::MIN_BYTES));
        for _ in 0..count {
            let topic_id = r.uuid("topicId")?;
            let partitions = r.i32_array("partitions")?;
            r.tagged_fields(|_, _| Ok(()))?;
            all.push(TopicPartitions {
                topic_id,
                partitions,
            });
        }
        Ok(all)
    }
}

impl ConsumerGroupCurrentMemberAssignmentValue {
    /// The newest version the schema has.
    pub const MAX_VERSION: i16 = CONSUMER_GROUP_VALUE_VERSION;
    const SCHEMA: &'static str = "ConsumerGroupCurrentMemberAssignmentValue";

    /// `state`: the member owns its whole target assignment (Kafka's `MemberState.STABLE`).
    pub const STATE_STABLE: i8 = 0;
    /// `state`: the member must revoke partitions before it gets new ones
    /// (`UNREVOKED_PARTITIONS`).
    pub const STATE_UNREVOKED_PARTITIONS: i8 = 1;
    /// `state`: the member waits for partitions other members still own
    /// (`UNRELEASED_PARTITIONS`).
    pub const STATE_UNRELEASED_PARTITIONS: i8 = 2;
    /// `state`: unknown (`UNKNOWN`).
    pub const STATE_UNKNOWN: i8 = 127;

    /// Encodes at version 0, the version Kafka writes.
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        self.encode_version(CONSUMER_GROUP_VALUE_VERSION)
    }

    /// Encodes at `version` (only 0 exists).
    pub fn encode_version(&self, version: i16) -> Result<Bytes, RecordError> {
        let mut w = consumer_group_value_writer(Self::SCHEMA, version)?;
        w.i32(self.member_epoch);
        w.i32(self.previous_member_epoch);
        w.i8(self.state);
        TopicPartitions::write_all(&mut w, "assignedPartitions", &self.assigned_partitions)?;
        TopicPartitions::write_all(
            &mut w,
            "partitionsPendingRevocation",
            &self.partitions_pending_revocation,
        )?;
        w.tagged_fields(&[]);
        Ok(w.finish())
    }

    /// Decodes a value of version 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = consumer_group_value_reader(Self::SCHEMA, bytes)?;
        let member_epoch = r.i32("memberEpoch")?;
        let previous_member_epoch = r.i32("previousMemberEpoch")?;
        let state = r.i8("state")?;
        let assigned_partitions = TopicPartitions::read_all(&mut r, "assignedPartitions")?;
        let partitions_pending_revocation =
            TopicPartitions::read_all(&mut r, "partitionsPendingRevocation")?;
        r.tagged_fields(|_, _| Ok(()))?;
        r.finish()?;
        Ok(ConsumerGroupCurrentMemberAssignmentValue {
            member_epoch,
            previous_member_epoch,
            state,
            assigned_partitions,
            partitions_pending_revocation,
        })
    }
}

impl ConsumerGroupRegularExpressionValue {
    /// The newest version the schema has.
    pub const MAX_VERSION: i16 = CONSUMER_GROUP_VALUE_VERSION;
    const SCHEMA: &'static str = "ConsumerGroupRegularExpressionValue";

    /// Encodes at version 0, the version Kafka writes.
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        self.encode_version(CONSUMER_GROUP_VALUE_VERSION)
    }

    /// Encodes at `version` (only 0 exists).
    pub fn encode_version(&self, version: i16) -> Result<Bytes, RecordError> {
        let mut w = consumer_group_value_writer(Self::SCHEMA, version)?;
        w.string_array("topics", &self.topics)?;
        w.i64(self.version);
        w.i64(self.timestamp);
        w.tagged_fields(&[]);
        Ok(w.finish())
    }

    /// Decodes a value of version 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = consumer_group_value_reader(Self::SCHEMA, bytes)?;
        let topics = r.string_array("topics")?;
        let version = r.i64("version")?;
        let timestamp = r.i64("timestamp")?;
        r.tagged_fields(|_, _| Ok(()))?;
        r.finish()?;
        Ok(ConsumerGroupRegularExpressionValue {
            topics,
            version,
            timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use crate::group::STRING_MAX_BYTES;

    use bytes::{BufMut, BytesMut};

    use super::*;

    use kafka_protocol::messages::describe_groups_response::{
        DescribedGroup, DescribedGroupMember,
    };
    use kafka_protocol::messages::GroupId;
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn offset_value() -> OffsetCommitValue {
        OffsetCommitValue {
            offset: 100,
            leader_epoch: 7,
            metadata: "meta".to_owned(),
            commit_timestamp: 1_700_000_000_000,
            expire_timestamp: 1_700_086_400_000,
            topic_id: Uuid::from_u64_pair(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
        }
    }

    fn member() -> MemberMetadata {
        MemberMetadata {
            member_id: "consumer-1-abc".to_owned(),
            group_instance_id: Some("instance-1".to_owned()),
            client_id: "consumer-1".to_owned(),
            client_host: "/10.0.0.1".to_owned(),
            rebalance_timeout: 300_000,
            session_timeout: 45_000,
            subscription: Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 3, b'f', b'o', b'o']),
            assignment: Bytes::from_static(&[0, 1, 0, 0, 0, 0]),
        }
    }

    fn group_value() -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: "consumer".to_owned(),
            generation: 5,
            protocol: Some("range".to_owned()),
            leader: Some("consumer-1-abc".to_owned()),
            current_state_timestamp: 1_700_000_000_123,
            members: vec![member()],
        }
    }

    /// Hand-built encodings, straight from the schemas, independent of the code under test.
    fn be16(out: &mut Vec<u8>, v: i16) {
        out.extend_from_slice(&v.to_be_bytes());
    }
    fn be32(out: &mut Vec<u8>, v: i32) {
        out.extend_from_slice(&v.to_be_bytes());
    }
    fn be64(out: &mut Vec<u8>, v: i64) {
        out.extend_from_slice(&v.to_be_bytes());
    }
    fn str16(out: &mut Vec<u8>, s: &str) {
        be16(out, s.len() as i16);
        out.extend_from_slice(s.as_bytes());
    }
    /// A compact string or bytes shorter than 127, whose varint length is one byte.
    fn compact(out: &mut Vec<u8>, s: &[u8]) {
        assert!(s.len() < 127);
        out.push(s.len() as u8 + 1);
        out.extend_from_slice(s);
    }
    fn bytes32(out: &mut Vec<u8>, b: &[u8]) {
        be32(out, b.len() as i32);
        out.extend_from_slice(b);
    }

    #[test]
    fn offset_commit_key_golden_bytes() {
        let key = RecordKey::OffsetCommit(OffsetCommitKey {
            group: "my-group".to_owned(),
            topic: "orders".to_owned(),
            partition: 3,
        });
        let mut expected = Vec::new();
        be16(&mut expected, 1);
        str16(&mut expected, "my-group");
        str16(&mut expected, "orders");
        be32(&mut expected, 3);
        assert_eq!(key.encode().unwrap(), expected);
        assert_eq!(RecordKey::decode(&expected).unwrap(), key);

        // The 0.8.2 record type 0 has the same layout and reads as the same key.
        expected[1] = 0;
        assert_eq!(RecordKey::decode(&expected).unwrap(), key);
    }

    #[test]
    fn group_metadata_key_golden_bytes() {
        let key = RecordKey::GroupMetadata(GroupMetadataKey {
            group: "my-group".to_owned(),
        });
        let mut expected = Vec::new();
        be16(&mut expected, 2);
        str16(&mut expected, "my-group");
        assert_eq!(key.encode().unwrap(), expected);
        assert_eq!(RecordKey::decode(&expected).unwrap(), key);
    }

    #[test]
    fn unknown_key_types_decode_to_unknown() {
        // Share groups (9-15), streams groups (17+) and anything else.
        for version in [9i16, 11, 15, 17, 100, i16::MAX, -1, i16::MIN] {
            let mut bytes = version.to_be_bytes().to_vec();
            bytes.extend_from_slice(b"\x00\x03abc\x00\x01x");
            assert_eq!(
                RecordKey::decode(&bytes).unwrap(),
                RecordKey::Unknown { version }
            );
        }
        assert!(RecordKey::Unknown { version: 3 }.encode().is_err());
    }

    #[test]
    fn offset_commit_value_v1_golden_bytes() {
        let value = offset_value();
        let mut expected = Vec::new();
        be16(&mut expected, 1);
        be64(&mut expected, 100);
        str16(&mut expected, "meta");
        be64(&mut expected, 1_700_000_000_000);
        be64(&mut expected, 1_700_086_400_000);
        assert_eq!(value.encode_version(1).unwrap(), expected);
        // An expire timestamp picks version 1, the only one holding it.
        assert_eq!(value.encode().unwrap(), expected);
        let decoded = OffsetCommitValue::decode(&expected).unwrap();
        assert_eq!(
            decoded,
            OffsetCommitValue {
                leader_epoch: -1,
                topic_id: Uuid::nil(),
                ..value
            }
        );
    }

    #[test]
    fn offset_commit_value_v3_golden_bytes() {
        let value = offset_value();
        let mut expected = Vec::new();
        be16(&mut expected, 3);
        be64(&mut expected, 100);
        be32(&mut expected, 7);
        str16(&mut expected, "meta");
        be64(&mut expected, 1_700_000_000_000);
        assert_eq!(value.encode_version(3).unwrap(), expected);
        assert_eq!(
            OffsetCommitValue::decode(&expected).unwrap(),
            OffsetCommitValue {
                expire_timestamp: -1,
                topic_id: Uuid::nil(),
                ..value
            }
        );
    }

    #[test]
    fn offset_commit_value_v4_golden_bytes_with_and_without_topic_id() {
        let value = OffsetCommitValue {
            expire_timestamp: -1,
            ..offset_value()
        };
        let mut expected = Vec::new();
        be16(&mut expected, 4);
        be64(&mut expected, 100);
        be32(&mut expected, 7);
        compact(&mut expected, b"meta");
        be64(&mut expected, 1_700_000_000_000);
        let without_tags = expected.len();
        // One tagged field: tag 0, size 16, the id as two big-endian longs (Java's writeUuid).
        expected.extend_from_slice(&[1, 0, 16]);
        be64(&mut expected, 0x0123_4567_89ab_cdef);
        be64(&mut expected, 0xfedc_ba98_7654_3210_u64 as i64);
        assert_eq!(value.encode_version(4).unwrap(), expected);
        // Without an expire timestamp, Kafka 4.0 writes version 3 (no topic id).
        assert_eq!(value.encode().unwrap(), value.encode_version(3).unwrap());
        assert_eq!(OffsetCommitValue::decode(&expected).unwrap(), value);

        // A nil topic id is the default and is not written: an empty tag section.
        let no_id = OffsetCommitValue {
            topic_id: Uuid::nil(),
            ..value
        };
        expected.truncate(without_tags);
        expected.push(0);
        assert_eq!(no_id.encode_version(4).unwrap(), expected);
        assert_eq!(OffsetCommitValue::decode(&expected).unwrap(), no_id);
    }

    #[test]
    fn offset_commit_value_round_trips_every_version() {
        let value = offset_value();
        for version in 0..=OffsetCommitValue::MAX_VERSION {
            let bytes = value.encode_version(version).unwrap();
            assert_eq!(&bytes[..2], &version.to_be_bytes());
            let expected = OffsetCommitValue {
                leader_epoch: if version >= 3 { 7 } else { -1 },
                expire_timestamp: if version == 1 {
                    value.expire_timestamp
                } else {
                    -1
                },
                topic_id: if version >= 4 {
                    value.topic_id
                } else {
                    Uuid::nil()
                },
                ..value.clone()
            };
            assert_eq!(
                OffsetCommitValue::decode(&bytes).unwrap(),
                expected,
                "v{version}"
            );
        }
    }

    #[test]
    fn group_metadata_value_v3_golden_bytes() {
        let value = group_value();
        let m = member();
        let mut expected = Vec::new();
        be16(&mut expected, 3);
        str16(&mut expected, "consumer");
        be32(&mut expected, 5);
        str16(&mut expected, "range");
        str16(&mut expected, "consumer-1-abc");
        be64(&mut expected, 1_700_000_000_123);
        be32(&mut expected, 1);
        str16(&mut expected, "consumer-1-abc");
        str16(&mut expected, "instance-1");
        str16(&mut expected, "consumer-1");
        str16(&mut expected, "/10.0.0.1");
        be32(&mut expected, 300_000);
        be32(&mut expected, 45_000);
        bytes32(&mut expected, &m.subscription);
        bytes32(&mut expected, &m.assignment);
        assert_eq!(value.encode_version(3).unwrap(), expected);
        // Kafka writes version 3.
        assert_eq!(value.encode().unwrap(), expected);
        assert_eq!(GroupMetadataValue::decode(&expected).unwrap(), value);
    }

    #[test]
    fn group_metadata_value_v4_golden_bytes_and_nulls() {
        let mut value = group_value();
        value.protocol = None;
        value.leader = None;
        value.members[0].group_instance_id = None;
        let m = &value.members[0];
        let mut expected = Vec::new();
        be16(&mut expected, 4);
        compact(&mut expected, b"consumer");
        be32(&mut expected, 5);
        expected.push(0); // null protocol
        expected.push(0); // null leader
        be64(&mut expected, 1_700_000_000_123);
        expected.push(2); // one member
        compact(&mut expected, b"consumer-1-abc");
        expected.push(0); // null groupInstanceId
        compact(&mut expected, b"consumer-1");
        compact(&mut expected, b"/10.0.0.1");
        be32(&mut expected, 300_000);
        be32(&mut expected, 45_000);
        compact(&mut expected, &m.subscription);
        compact(&mut expected, &m.assignment);
        expected.push(0); // the member's tag section
        expected.push(0); // the value's tag section
        assert_eq!(value.encode_version(4).unwrap(), expected);
        assert_eq!(GroupMetadataValue::decode(&expected).unwrap(), value);
    }

    #[test]
    fn group_metadata_value_round_trips_every_version() {
        let mut value = group_value();
        value.members.push(MemberMetadata {
            member_id: "consumer-2-def".to_owned(),
            group_instance_id: None,
            subscription: Bytes::new(),
            assignment: Bytes::from(vec![7u8; 300]),
            ..member()
        });
        for version in 0..=GroupMetadataValue::MAX_VERSION {
            let bytes = value.encode_version(version).unwrap();
            let mut expected = value.clone();
            if version < 2 {
                expected.current_state_timestamp = -1;
            }
            for m in &mut expected.members {
                if version < 3 {
                    m.group_instance_id = None;
                }
                if version < 1 {
                    m.rebalance_timeout = -1;
                }
            }
            assert_eq!(
                GroupMetadataValue::decode(&bytes).unwrap(),
                expected,
                "v{version}"
            );
        }
        let empty = GroupMetadataValue {
            protocol_type: String::new(),
            generation: 0,
            protocol: None,
            leader: None,
            current_state_timestamp: -1,
            members: Vec::new(),
        };
        for version in 0..=GroupMetadataValue::MAX_VERSION {
            let bytes = empty.encode_version(version).unwrap();
            assert_eq!(GroupMetadataValue::decode(&bytes).unwrap(), empty);
        }
    }

    #[test]
    fn flexible_versions_skip_unknown_tagged_fields() {
        let value = OffsetCommitValue {
            expire_timestamp: -1,
            ..offset_value()
        };
        let bytes = value.encode_version(4).unwrap();
        // Replace the tag section with tag 0 (the id) plus unknown tags 1 and 300.
        let mut with_unknown = bytes[..bytes.len() - 19].to_vec();
        with_unknown.push(3);
        with_unknown.extend_from_slice(&bytes[bytes.len() - 18..]);
        with_unknown.extend_from_slice(&[1, 2, 0xaa, 0xbb]);
        with_unknown.extend_from_slice(&[0xac, 0x02, 0]); // tag 300, empty
        assert_eq!(OffsetCommitValue::decode(&with_unknown).unwrap(), value);

        let group = group_value();
        let bytes = group.encode_version(4).unwrap();
        let mut with_unknown = bytes[..bytes.len() - 2].to_vec();
        with_unknown.extend_from_slice(&[1, 5, 1, 0xff]); // member: tag 5, one byte
        with_unknown.extend_from_slice(&[1, 9, 0]); // value: tag 9, empty
        assert_eq!(GroupMetadataValue::decode(&with_unknown).unwrap(), group);

        // A topicId tag of the wrong size is not an id.
        let mut bad = bytes_of_offset_v4_with_tags(&[1, 0, 2, 0, 0]);
        assert!(OffsetCommitValue::decode(&bad).is_err());
        bad = bytes_of_offset_v4_with_tags(&[1, 0, 16]);
        assert!(OffsetCommitValue::decode(&bad).is_err());
    }

    fn bytes_of_offset_v4_with_tags(tags: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        be16(&mut out, 4);
        be64(&mut out, 1);
        be32(&mut out, -1);
        compact(&mut out, b"");
        be64(&mut out, 0);
        out.extend_from_slice(tags);
        out
    }

    /// Every encoding of every version, for the malformed-input tests.
    fn all_encodings() -> Vec<(&'static str, Bytes)> {
        let mut all = vec![
            (
                "key",
                RecordKey::OffsetCommit(OffsetCommitKey {
                    group: "g".to_owned(),
                    topic: "t".to_owned(),
                    partition: 0,
                })
                .encode()
                .unwrap(),
            ),
            (
                "key",
                RecordKey::GroupMetadata(GroupMetadataKey {
                    group: "g".to_owned(),
                })
                .encode()
                .unwrap(),
            ),
        ];
        for version in 0..=4 {
            all.push(("offset", offset_value().encode_version(version).unwrap()));
            all.push(("group", group_value().encode_version(version).unwrap()));
        }
        all.extend(consumer_group_encodings());
        all
    }

    /// The KIP-848 keys and values, in their variants (empty, null, tagged fields set).
    fn consumer_group_encodings() -> Vec<(&'static str, Bytes)> {
        let mut all: Vec<(&'static str, Bytes)> = consumer_group_keys()
            .into_iter()
            .map(|key| ("key", key.encode().unwrap()))
            .collect();
        for value in consumer_group_metadata_values() {
            all.push(("cg-epoch", value.encode().unwrap()));
        }
        for value in partition_metadata_values() {
            all.push(("cg-subscription", value.encode().unwrap()));
        }
        for value in member_metadata_values() {
            all.push(("cg-member", value.encode().unwrap()));
        }
        all.push((
            "cg-target-epoch",
            ConsumerGroupTargetAssignmentMetadataValue {
                assignment_epoch: 7,
            }
            .encode()
            .unwrap(),
        ));
        for value in target_member_values() {
            all.push(("cg-target-member", value.encode().unwrap()));
        }
        for value in current_assignment_values() {
            all.push(("cg-current", value.encode().unwrap()));
        }
        for value in regex_values() {
            all.push(("cg-regex", value.encode().unwrap()));
        }
        all
    }

    fn decode_any(kind: &str, bytes: &[u8]) -> Result<(), RecordError> {
        match kind {
            "key" => RecordKey::decode(bytes).map(drop),
            "offset" => OffsetCommitValue::decode(bytes).map(drop),
            "group" => GroupMetadataValue::decode(bytes).map(drop),
            "cg-epoch" => ConsumerGroupMetadataValue::decode(bytes).map(drop),
            "cg-subscription" => ConsumerGroupPartitionMetadataValue::decode(bytes).map(drop),
            "cg-member" => ConsumerGroupMemberMetadataValue::decode(bytes).map(drop),
            "cg-target-epoch" => {
                ConsumerGroupTargetAssignmentMetadataValue::decode(bytes).map(drop)
            }
            "cg-target-member" => ConsumerGroupTargetAssignmentMemberValue::decode(bytes).map(drop),
            "cg-current" => ConsumerGroupCurrentMemberAssignmentValue::decode(bytes).map(drop),
            "cg-regex" => ConsumerGroupRegularExpressionValue::decode(bytes).map(drop),
            other => panic!("no decoder for {other}"),
        }
    }

    /// Every kind `decode_any` knows, with how many versions (record types for keys) its
    /// random inputs pick from.
    const KINDS: &[(&str, u64)] = &[
        ("key", 18),
        ("offset", 5),
        ("group", 5),
        ("cg-epoch", 2),
        ("cg-subscription", 2),
        ("cg-member", 2),
        ("cg-target-epoch", 2),
        ("cg-target-member", 2),
        ("cg-current", 2),
        ("cg-regex", 2),
    ];

    #[test]
    fn truncated_input_is_an_error() {
        for (kind, bytes) in all_encodings() {
            for len in 0..bytes.len() {
                assert!(
                    decode_any(kind, &bytes[..len]).is_err(),
                    "{kind} {len}/{} bytes",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        for (kind, bytes) in all_encodings() {
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert!(decode_any(kind, &longer).is_err(), "{kind}");
        }
    }

    #[test]
    fn unsupported_value_versions_are_rejected() {
        for version in [5i16, i16::MAX, -1] {
            let mut bytes = offset_value().encode_version(4).unwrap().to_vec();
            bytes[..2].copy_from_slice(&version.to_be_bytes());
            assert_eq!(
                OffsetCommitValue::decode(&bytes),
                Err(RecordError::UnsupportedVersion {
                    schema: "OffsetCommitValue",
                    version
                })
            );
            let mut bytes = group_value().encode_version(4).unwrap().to_vec();
            bytes[..2].copy_from_slice(&version.to_be_bytes());
            assert_eq!(
                GroupMetadataValue::decode(&bytes),
                Err(RecordError::UnsupportedVersion {
                    schema: "GroupMetadataValue",
                    version
                })
            );
            assert!(offset_value().encode_version(version).is_err());
            assert!(group_value().encode_version(version).is_err());
        }
    }

    #[test]
    fn absurd_lengths_are_errors_not_allocations() {
        // A string length over what is present, and over Kafka's 32767 limit.
        let mut b = Vec::new();
        be16(&mut b, 1);
        b.extend_from_slice(&[0x7f, 0xff, b'x']);
        assert!(RecordKey::decode(&b).is_err());

        // Non-nullable strings and bytes given as null.
        let mut b = Vec::new();
        be16(&mut b, 2);
        be16(&mut b, -1);
        assert!(RecordKey::decode(&b).is_err());

        // Group metadata: a member count of i32::MAX, then bytes of length i32::MAX, then a
        // negative bytes length.
        let header = |version: i16| {
            let mut b = Vec::new();
            be16(&mut b, version);
            str16(&mut b, "consumer");
            be32(&mut b, 1);
            be16(&mut b, -1);
            be16(&mut b, -1);
            b
        };
        let mut b = header(0);
        be32(&mut b, i32::MAX);
        b.extend_from_slice(&[0; 64]);
        assert!(GroupMetadataValue::decode(&b).is_err());
        for subscription_len in [i32::MAX, -1, -5] {
            let mut b = header(0);
            be32(&mut b, 1);
            str16(&mut b, "m");
            str16(&mut b, "c");
            str16(&mut b, "h");
            be32(&mut b, 10);
            be32(&mut b, subscription_len);
            b.extend_from_slice(&[0; 16]);
            assert!(GroupMetadataValue::decode(&b).is_err());
        }

        // Flexible: a compact member count of u32::MAX - 1, a varint over 32 bits, a varint
        // longer than five bytes, a tag count of u32::MAX and a tagged field larger than the
        // input.
        let flexible_header = || {
            let mut b = Vec::new();
            be16(&mut b, 4);
            compact(&mut b, b"consumer");
            be32(&mut b, 1);
            b.extend_from_slice(&[0, 0]);
            be64(&mut b, -1);
            b
        };
        for members in [
            &[0xff, 0xff, 0xff, 0xff, 0x0f][..],
            &[0xff, 0xff, 0xff, 0xff, 0x1f],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ] {
            let mut b = flexible_header();
            b.extend_from_slice(members);
            b.extend_from_slice(&[0; 32]);
            assert!(GroupMetadataValue::decode(&b).is_err());
        }
        let mut b = flexible_header();
        b.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(GroupMetadataValue::decode(&b).is_err());
        let mut b = flexible_header();
        b.extend_from_slice(&[1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]);
        assert!(GroupMetadataValue::decode(&b).is_err());

        // Not UTF-8.
        let mut b = Vec::new();
        be16(&mut b, 2);
        be16(&mut b, 2);
        b.extend_from_slice(&[0xc3, 0x28]);
        assert!(RecordKey::decode(&b).is_err());
    }

    /// A cheap deterministic generator (xorshift), so the mutation test needs no extra crate.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn corrupted_input_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for (kind, bytes) in all_encodings() {
            for _ in 0..2_000 {
                let mut b = bytes.to_vec();
                for _ in 0..1 + xorshift(&mut seed) % 4 {
                    let at = (xorshift(&mut seed) % b.len() as u64) as usize;
                    b[at] = xorshift(&mut seed) as u8;
                }
                let _ = decode_any(kind, &b);
            }
        }
        for _ in 0..5_000 {
            let len = (xorshift(&mut seed) % 64) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
            for (kind, versions) in KINDS {
                if b.len() >= 2 {
                    b[0] = 0;
                    b[1] = (xorshift(&mut seed) % versions) as u8;
                }
                let _ = decode_any(kind, &b);
            }
        }
    }

    #[test]
    fn strings_over_32767_bytes_are_not_encoded() {
        let long = "x".repeat(STRING_MAX_BYTES + 1);
        let key = RecordKey::GroupMetadata(GroupMetadataKey {
            group: long.clone(),
        });
        assert!(key.encode().is_err());
        for version in 0..=4 {
            let value = OffsetCommitValue {
                metadata: long.clone(),
                ..offset_value()
            };
            assert!(value.encode_version(version).is_err());
        }
        let fits = "x".repeat(STRING_MAX_BYTES);
        let value = OffsetCommitValue {
            metadata: fits,
            ..offset_value()
        };
        for version in 0..=4 {
            let bytes = value.encode_version(version).unwrap();
            assert_eq!(
                OffsetCommitValue::decode(&bytes).unwrap().metadata,
                value.metadata
            );
        }
    }

    /// Pins the primitives above to kafka-protocol's generated code: a `DescribedGroup` has
    /// strings, nullable strings, bytes, an array and (at v5+) compact forms and tag sections,
    /// so the same fields through our `Writer` must give the same bytes, and kafka-protocol
    /// must read ours back.
    #[test]
    fn primitives_match_kafka_protocol() {
        let described_member = |instance: Option<&'static str>| {
            DescribedGroupMember::default()
                .with_member_id(StrBytes::from_static_str("member-1"))
                .with_group_instance_id(instance.map(StrBytes::from_static_str))
                .with_client_id(StrBytes::from_static_str("client"))
                .with_client_host(StrBytes::from_static_str("/127.0.0.1"))
                // Over 127 bytes, so compact lengths take a two-byte varint.
                .with_member_metadata(Bytes::from(vec![3u8; 200]))
                .with_member_assignment(Bytes::new())
        };
        let members = vec![described_member(Some("static")), described_member(None)];
        let group = DescribedGroup::default()
            .with_error_code(-2)
            .with_group_id(GroupId(StrBytes::from_string("g".repeat(150))))
            .with_group_state(StrBytes::from_static_str("Stable"))
            .with_protocol_type(StrBytes::from_static_str(""))
            .with_protocol_data(StrBytes::from_static_str("range"))
            .with_members(members.clone())
            .with_authorized_operations(-2_147_483_648);
        for version in [4i16, 5] {
            let flexible = version >= 5;
            let mut theirs = BytesMut::new();
            group.encode(&mut theirs, version).unwrap();

            // The same fields, preceded by the int16 our Writer always starts with.
            let mut w = Writer::new("DescribedGroup", version, flexible);
            w.buf.put_i16(group.error_code);
            w.string("group_id", &group.group_id).unwrap();
            w.string("group_state", &group.group_state).unwrap();
            w.string("protocol_type", &group.protocol_type).unwrap();
            w.string("protocol_data", &group.protocol_data).unwrap();
            w.array_len("members", members.len()).unwrap();
            for m in &members {
                w.string("member_id", &m.member_id).unwrap();
                w.nullable_string("group_instance_id", m.group_instance_id.as_deref())
                    .unwrap();
                w.string("client_id", &m.client_id).unwrap();
                w.string("client_host", &m.client_host).unwrap();
                w.bytes("member_metadata", &m.member_metadata).unwrap();
                w.bytes("member_assignment", &m.member_assignment).unwrap();
                if flexible {
                    w.tagged_fields(&[]);
                }
            }
            w.i32(group.authorized_operations);
            if flexible {
                w.tagged_fields(&[]);
            }
            let ours = w.finish();
            assert_eq!(&ours[2..], &theirs[..], "v{version}");

            // And our Reader reads kafka-protocol's bytes.
            let mut r = Reader::new("DescribedGroup", &theirs, flexible);
            assert_eq!(r.i16("error_code").unwrap(), -2);
            assert_eq!(r.string("group_id").unwrap(), group.group_id.as_str());
            for _ in 0..3 {
                r.string("string").unwrap();
            }
            assert_eq!(r.array_len("members").unwrap(), 2);
            for m in &members {
                assert_eq!(r.string("member_id").unwrap(), &*m.member_id);
                assert_eq!(
                    r.nullable_string("group_instance_id").unwrap().as_deref(),
                    m.group_instance_id.as_deref()
                );
                r.string("client_id").unwrap();
                r.string("client_host").unwrap();
                assert_eq!(r.bytes("member_metadata").unwrap(), m.member_metadata);
                assert_eq!(r.bytes("member_assignment").unwrap(), m.member_assignment);
                if flexible {
                    r.tagged_fields(|_, _| Ok(())).unwrap();
                }
            }
            assert_eq!(r.i32("authorized_operations").unwrap(), i32::MIN);
            if flexible {
                r.tagged_fields(|_, _| Ok(())).unwrap();
            }
            r.finish().unwrap();
        }

        // A tag section with a field (the topic id's shape), against kafka-protocol's
        // unknown-tagged-field writer and reader.
        let id = Uuid::from_u64_pair(1, u64::MAX);
        let mut tagged = described_member(None);
        tagged
            .unknown_tagged_fields
            .insert(0, Bytes::copy_from_slice(id.as_bytes()));
        tagged
            .unknown_tagged_fields
            .insert(200, Bytes::from(vec![9u8; 130]));
        let mut theirs = BytesMut::new();
        tagged.encode(&mut theirs, 5).unwrap();
        let mut w = Writer::new("DescribedGroupMember", 5, true);
        w.string("member_id", "member-1").unwrap();
        w.nullable_string("group_instance_id", None).unwrap();
        w.string("client_id", "client").unwrap();
        w.string("client_host", "/127.0.0.1").unwrap();
        w.bytes("member_metadata", &[3u8; 200]).unwrap();
        w.bytes("member_assignment", &[]).unwrap();
        w.tagged_fields(&[(0, id.as_bytes()), (200, &[9u8; 130])]);
        let ours = w.finish();
        assert_eq!(&ours[2..], &theirs[..]);
        let read_back = DescribedGroupMember::decode(&mut ours.slice(2..), 5).unwrap();
        assert_eq!(read_back, tagged);
    }

    // KIP-848 consumer group records.

    const TOPIC_A: (u64, u64) = (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
    const TOPIC_B: (u64, u64) = (1, 2);

    fn topic_a() -> Uuid {
        Uuid::from_u64_pair(TOPIC_A.0, TOPIC_A.1)
    }
    fn topic_b() -> Uuid {
        Uuid::from_u64_pair(TOPIC_B.0, TOPIC_B.1)
    }
    /// A UUID as Java's `writeUuid` writes it: the most significant long, then the least.
    fn uuid_be(out: &mut Vec<u8>, (high, low): (u64, u64)) {
        out.extend_from_slice(&high.to_be_bytes());
        out.extend_from_slice(&low.to_be_bytes());
    }

    fn consumer_group_keys() -> Vec<RecordKey> {
        let group = || ConsumerGroupKey {
            group: "my-group".to_owned(),
        };
        let member = || ConsumerGroupMemberKey {
            group: "my-group".to_owned(),
            member_id: "member-1".to_owned(),
        };
        vec![
            RecordKey::ConsumerGroupMetadata(group()),
            RecordKey::ConsumerGroupPartitionMetadata(group()),
            RecordKey::ConsumerGroupMemberMetadata(member()),
            RecordKey::ConsumerGroupTargetAssignmentMetadata(group()),
            RecordKey::ConsumerGroupTargetAssignmentMember(member()),
            RecordKey::ConsumerGroupCurrentMemberAssignment(member()),
            RecordKey::ConsumerGroupRegularExpression(ConsumerGroupRegularExpressionKey {
                group: "my-group".to_owned(),
                regex: "ab*".to_owned(),
            }),
        ]
    }

    fn consumer_group_metadata_values() -> Vec<ConsumerGroupMetadataValue> {
        vec![
            ConsumerGroupMetadataValue {
                epoch: 12,
                metadata_hash: 0,
            },
            ConsumerGroupMetadataValue {
                epoch: -1,
                metadata_hash: -0x0123_4567_89ab_cdef,
            },
        ]
    }

    fn partition_metadata_values() -> Vec<ConsumerGroupPartitionMetadataValue> {
        vec![
            ConsumerGroupPartitionMetadataValue { topics: Vec::new() },
            ConsumerGroupPartitionMetadataValue {
                topics: vec![
                    TopicMetadata {
                        topic_id: topic_a(),
                        topic_name: "orders".to_owned(),
                        num_partitions: 3,
                        partition_racks: Vec::new(),
                    },
                    TopicMetadata {
                        topic_id: topic_b(),
                        topic_name: String::new(),
                        num_partitions: 2,
                        partition_racks: vec![
                            PartitionRacks {
                                partition: 0,
                                racks: vec!["r1".to_owned(), "r2".to_owned()],
                            },
                            PartitionRacks {
                                partition: 1,
                                racks: Vec::new(),
                            },
                        ],
                    },
                ],
            },
        ]
    }

    fn classic_member_metadata() -> ClassicMemberMetadata {
        ClassicMemberMetadata {
            session_timeout: 45_000,
            supported_protocols: vec![ClassicProtocol {
                name: "range".to_owned(),
                metadata: Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 3, b'f', b'o', b'o']),
            }],
        }
    }

    fn member_metadata_value() -> ConsumerGroupMemberMetadataValue {
        ConsumerGroupMemberMetadataValue {
            instance_id: Some("instance-1".to_owned()),
            rack_id: None,
            client_id: "consumer-1".to_owned(),
            client_host: "/10.0.0.1".to_owned(),
            subscribed_topic_names: vec!["bar".to_owned(), "foo".to_owned()],
            subscribed_topic_regex: None,
            rebalance_timeout: 300_000,
            server_assignor: Some("uniform".to_owned()),
            classic_member_metadata: Some(classic_member_metadata()),
        }
    }

    fn member_metadata_values() -> Vec<ConsumerGroupMemberMetadataValue> {
        let value = member_metadata_value();
        vec![
            value.clone(),
            ConsumerGroupMemberMetadataValue {
                instance_id: None,
                rack_id: Some("rack-a".to_owned()),
                subscribed_topic_names: Vec::new(),
                subscribed_topic_regex: Some("foo.*".to_owned()),
                rebalance_timeout: -1,
                server_assignor: None,
                classic_member_metadata: None,
                ..value.clone()
            },
            ConsumerGroupMemberMetadataValue {
                client_id: String::new(),
                client_host: String::new(),
                classic_member_metadata: Some(ClassicMemberMetadata {
                    session_timeout: 10_000,
                    supported_protocols: vec![
                        ClassicProtocol {
                            name: "cooperative-sticky".to_owned(),
                            metadata: Bytes::from(vec![5u8; 300]),
                        },
                        ClassicProtocol {
                            name: String::new(),
                            metadata: Bytes::new(),
                        },
                    ],
                }),
                ..value.clone()
            },
            ConsumerGroupMemberMetadataValue {
                classic_member_metadata: Some(ClassicMemberMetadata {
                    session_timeout: 0,
                    supported_protocols: Vec::new(),
                }),
                ..value
            },
        ]
    }

    fn target_member_values() -> Vec<ConsumerGroupTargetAssignmentMemberValue> {
        vec![
            ConsumerGroupTargetAssignmentMemberValue {
                topic_partitions: Vec::new(),
            },
            ConsumerGroupTargetAssignmentMemberValue {
                topic_partitions: vec![
                    TopicPartitions {
                        topic_id: topic_a(),
                        partitions: vec![0, 1, 2],
                    },
                    TopicPartitions {
                        topic_id: topic_b(),
                        partitions: Vec::new(),
                    },
                ],
            },
        ]
    }

    fn current_assignment_value() -> ConsumerGroupCurrentMemberAssignmentValue {
        ConsumerGroupCurrentMemberAssignmentValue {
            member_epoch: 10,
            previous_member_epoch: 9,
            state: ConsumerGroupCurrentMemberAssignmentValue::STATE_UNREVOKED_PARTITIONS,
            assigned_partitions: vec![TopicPartitions {
                topic_id: topic_a(),
                partitions: vec![0, 1],
            }],
            partitions_pending_revocation: vec![TopicPartitions {
                topic_id: topic_a(),
                partitions: vec![2],
            }],
        }
    }

    fn current_assignment_values() -> Vec<ConsumerGroupCurrentMemberAssignmentValue> {
        vec![
            current_assignment_value(),
            ConsumerGroupCurrentMemberAssignmentValue {
                member_epoch: 0,
                previous_member_epoch: -1,
                state: ConsumerGroupCurrentMemberAssignmentValue::STATE_UNKNOWN,
                assigned_partitions: Vec::new(),
                partitions_pending_revocation: Vec::new(),
            },
            ConsumerGroupCurrentMemberAssignmentValue {
                state: -128,
                assigned_partitions: (0..40)
                    .map(|i| TopicPartitions {
                        topic_id: Uuid::from_u64_pair(i, i),
                        partitions: (0..i as i32).collect(),
                    })
                    .collect(),
                ..current_assignment_value()
            },
        ]
    }

    fn regex_values() -> Vec<ConsumerGroupRegularExpressionValue> {
        vec![
            ConsumerGroupRegularExpressionValue {
                topics: vec!["abc".to_owned(), "abcd".to_owned()],
                version: 10,
                timestamp: 12345,
            },
            ConsumerGroupRegularExpressionValue {
                topics: Vec::new(),
                version: -1,
                timestamp: -1,
            },
        ]
    }

    #[test]
    fn consumer_group_keys_golden_bytes() {
        let group_key = |record_type: i16| {
            let mut b = Vec::new();
            be16(&mut b, record_type);
            str16(&mut b, "my-group");
            b
        };
        let member_key = |record_type: i16| {
            let mut b = group_key(record_type);
            str16(&mut b, "member-1");
            b
        };
        let mut regex_key = group_key(16);
        str16(&mut regex_key, "ab*");
        let expected = [
            group_key(3),
            group_key(4),
            member_key(5),
            group_key(6),
            member_key(7),
            member_key(8),
            regex_key,
        ];
        let keys = consumer_group_keys();
        assert_eq!(keys.len(), expected.len());
        for (key, expected) in keys.iter().zip(expected) {
            assert_eq!(key.encode().unwrap(), expected, "{key:?}");
            assert_eq!(&RecordKey::decode(&expected).unwrap(), key);
        }
    }

    #[test]
    fn consumer_group_metadata_value_golden_bytes() {
        let values = consumer_group_metadata_values();
        let mut expected = Vec::new();
        be16(&mut expected, 0);
        be32(&mut expected, 12);
        expected.push(0); // no tagged fields: the hash is its default
        assert_eq!(values[0].encode().unwrap(), expected);
        assert_eq!(
            ConsumerGroupMetadataValue::decode(&expected).unwrap(),
            values[0]
        );

        let mut expected = Vec::new();
        be16(&mut expected, 0);
        be32(&mut expected, -1);
        expected.extend_from_slice(&[1, 0, 8]); // one field: tag 0, 8 bytes
        be64(&mut expected, -0x0123_4567_89ab_cdef);
        assert_eq!(values[1].encode().unwrap(), expected);
        assert_eq!(
            ConsumerGroupMetadataValue::decode(&expected).unwrap(),
            values[1]
        );
    }

    #[test]
    fn consumer_group_partition_metadata_value_golden_bytes() {
        let value = &partition_metadata_values()[1];
        let mut expected = Vec::new();
        be16(&mut expected, 0);
        expected.push(3); // two topics
        uuid_be(&mut expected, TOPIC_A);
        compact(&mut expected, b"orders");
        be32(&mut expected, 3);
        expected.push(1); // no racks, as Kafka 4.0 writes
        expected.push(0); // the topic's tags
        uuid_be(&mut expected, TOPIC_B);
        compact(&mut expected, b"");
        be32(&mut expected, 2);
        expected.push(3); // two partitions
        be32(&mut expected, 0);
        expected.push(3);
        compact(&mut expected, b"r1");
        compact(&mut expected, b"r2");
        expected.push(0);
        be32(&mut expected, 1);
        expected.push(1);
        expected.push(0);
        expected.push(0); // the topic's tags
        expected.push(0); // the value's tags
        assert_eq!(value.encode().unwrap(), expected);
        assert_eq!(
            &ConsumerGroupPartitionMetadataValue::decode(&expected).unwrap(),
            value
        );
    }

    #[test]
    fn consumer_group_member_metadata_value_golden_bytes() {
        let value = member_metadata_value();
        let classic = classic_member_metadata();
        let mut expected = Vec::new();
        be16(&mut expected, 0);
        compact(&mut expected, b"instance-1");
        expected.push(0); // null rackId
        compact(&mut expected, b"consumer-1");
        compact(&mut expected, b"/10.0.0.1");
        expected.push(3); // two topic names
        compact(&mut expected, b"bar");
        compact(&mut expected, b"foo");
        expected.push(0); // null subscribedTopicRegex
        be32(&mut expected, 300_000);
        compact(&mut expected, b"uniform");
        let without_tags = expected.clone();
        // One tagged field, tag 0: its size, the presence marker 1, then the struct.
        expected.extend_from_slice(&[1, 0, 26, 1]);
        be32(&mut expected, 45_000);
        expected.push(2); // one protocol
        compact(&mut expected, b"range");
        compact(&mut expected, &classic.supported_protocols[0].metadata);
        expected.push(0); // the protocol's tags
        expected.push(0); // the struct's tags
        assert_eq!(expected.len(), without_tags.len() + 3 + 26);
        // The value's own tag section holds only the count and the field: nothing follows.
        assert_eq!(value.encode().unwrap(), expected);
        assert_eq!(
            ConsumerGroupMemberMetadataValue::decode(&expected).unwrap(),
            value
        );

        // A member on the consumer protocol: no classic metadata, an empty tag section.
        let consumer = ConsumerGroupMemberMetadataValue {
            classic_member_metadata: None,
            ..value
        };
        let mut expected = without_tags;
        expected.push(0);
        assert_eq!(consumer.encode().unwrap(), expected);
        assert_eq!(
            ConsumerGroupMemberMetadataValue::decode(&expected).unwrap(),
            consumer
        );
    }

    #[test]
    fn classic_member_metadata_null_marker_reads_as_none() {
        let consumer = ConsumerGroupMemberMetadataValue {
            classic_member_metadata: None,
            ..member_metadata_value()
        };
        let bytes = consumer.encode().unwrap();
        let without_tags = &bytes[..bytes.len() - 1];
        // Marker 0, and a marker that is negative as a Java int (2^31): both null to Kafka.
        for field in [&[1, 0, 1, 0][..], &[1, 0, 5, 0x80, 0x80, 0x80, 0x80, 0x08]] {
            let mut b = without_tags.to_vec();
            b.extend_from_slice(field);
            assert_eq!(
                ConsumerGroupMemberMetadataValue::decode(&b).unwrap(),
                consumer
            );
        }
        // A null marker followed by more bytes is not a struct Kafka wrote.
        let mut b = without_tags.to_vec();
        b.extend_from_slice(&[1, 0, 2, 0, 0]);
        assert!(ConsumerGroupMemberMetadataValue::decode(&b).is_err());
    }

    #[test]
    fn consumer_group_target_assignment_metadata_value_golden_bytes() {
        let value = ConsumerGroupTargetAssignmentMetadataValue {
            assignment_epoch: 42,
        };
        let mut expected = Vec::new();
        be16(&mut expected, 0);
        be32(&mut expected, 42);
        expected.push(0);
        assert_eq!(value.encode().unwrap(), expected);
        assert_eq!(
            ConsumerGroupTargetAssignmentMetadataValue::decode(&expected).unwrap(),
            value
        );
    }

    #[test]
    fn consumer_group_target_assignment_member_value_golden_bytes() {
        let value = &target_member_values()[1];
        let mut expected = Vec::new();
        be16(&mut expected, 0);
        expected.push(3); // two topics
        uuid_be(&mut expected, TOPIC_A);
        expected.push(4); // three partitions
        be32(&mut expected, 0);
        be32(&mut expected, 1);
        be32(&mut expected, 2);
        expected.push(0); // the topic's tags
        uuid_be(&mut expected, TOPIC_B);
        expected.push(1); // no partitions
        expected.push(0);
        expected.push(0); // the value's tags
        assert_eq!(value.encode().unwrap(), expected);
        assert_eq!(
            &ConsumerGroupTargetAssignmentMemberValue::decode(&expected).unwrap(),
            value
        );
    }

    #[test]
    fn consumer_group_current_member_assignment_value_golden_bytes() {
        let value = current_assignment_value();
        let mut expected = Vec::new();
        be16(&mut expected, 0);
        be32(&mut expected, 10);
        be32(&mut expected, 9);
        expected.push(1); // UNREVOKED_PARTITIONS
        expected.push(2); // one assigned topic
        uuid_be(&mut expected, TOPIC_A);
        expected.push(3);
        be32(&mut expected, 0);
        be32(&mut expected, 1);
        expected.push(0);
        expected.push(2); // one topic pending revocation
        uuid_be(&mut expected, TOPIC_A);
        expected.push(2);
        be32(&mut expected, 2);
        expected.push(0);
        expected.push(0); // the value's tags
        assert_eq!(value.encode().unwrap(), expected);
        assert_eq!(
            ConsumerGroupCurrentMemberAssignmentValue::decode(&expected).unwrap(),
            value
        );
    }

    #[test]
    fn consumer_group_regular_expression_value_golden_bytes() {
        // Kafka's own test record (`testNewConsumerGroupRegularExpressionRecord`).
        let value = &regex_values()[0];
        let mut expected = Vec::new();
        be16(&mut expected, 0);
        expected.push(3);
        compact(&mut expected, b"abc");
        compact(&mut expected, b"abcd");
        be64(&mut expected, 10);
        be64(&mut expected, 12345);
        expected.push(0);
        assert_eq!(value.encode().unwrap(), expected);
        assert_eq!(
            &ConsumerGroupRegularExpressionValue::decode(&expected).unwrap(),
            value
        );
    }

    /// Every value at every version (only 0 exists), and `encode` at the version Kafka writes.
    #[test]
    fn consumer_group_values_round_trip_every_version() {
        fn check<T: PartialEq + fmt::Debug>(
            value: &T,
            max: i16,
            encode: impl Fn(&T) -> Result<Bytes, RecordError>,
            encode_version: impl Fn(&T, i16) -> Result<Bytes, RecordError>,
            decode: impl Fn(&[u8]) -> Result<T, RecordError>,
        ) {
            assert_eq!(max, 0);
            for version in 0..=max {
                let bytes = encode_version(value, version).unwrap();
                assert_eq!(&bytes[..2], &version.to_be_bytes());
                assert_eq!(&decode(&bytes).unwrap(), value, "v{version}");
            }
            assert_eq!(encode(value).unwrap(), encode_version(value, 0).unwrap());
        }
        for v in consumer_group_metadata_values() {
            check(
                &v,
                ConsumerGroupMetadataValue::MAX_VERSION,
                ConsumerGroupMetadataValue::encode,
                ConsumerGroupMetadataValue::encode_version,
                ConsumerGroupMetadataValue::decode,
            );
        }
        for v in partition_metadata_values() {
            check(
                &v,
                ConsumerGroupPartitionMetadataValue::MAX_VERSION,
                ConsumerGroupPartitionMetadataValue::encode,
                ConsumerGroupPartitionMetadataValue::encode_version,
                ConsumerGroupPartitionMetadataValue::decode,
            );
        }
        for v in member_metadata_values() {
            check(
                &v,
                ConsumerGroupMemberMetadataValue::MAX_VERSION,
                ConsumerGroupMemberMetadataValue::encode,
                ConsumerGroupMemberMetadataValue::encode_version,
                ConsumerGroupMemberMetadataValue::decode,
            );
        }
        for epoch in [0, -1, i32::MAX] {
            check(
                &ConsumerGroupTargetAssignmentMetadataValue {
                    assignment_epoch: epoch,
                },
                ConsumerGroupTargetAssignmentMetadataValue::MAX_VERSION,
                ConsumerGroupTargetAssignmentMetadataValue::encode,
                ConsumerGroupTargetAssignmentMetadataValue::encode_version,
                ConsumerGroupTargetAssignmentMetadataValue::decode,
            );
        }
        for v in target_member_values() {
            check(
                &v,
                ConsumerGroupTargetAssignmentMemberValue::MAX_VERSION,
                ConsumerGroupTargetAssignmentMemberValue::encode,
                ConsumerGroupTargetAssignmentMemberValue::encode_version,
                ConsumerGroupTargetAssignmentMemberValue::decode,
            );
        }
        for v in current_assignment_values() {
            check(
                &v,
                ConsumerGroupCurrentMemberAssignmentValue::MAX_VERSION,
                ConsumerGroupCurrentMemberAssignmentValue::encode,
                ConsumerGroupCurrentMemberAssignmentValue::encode_version,
                ConsumerGroupCurrentMemberAssignmentValue::decode,
            );
        }
        for v in regex_values() {
            check(
                &v,
                ConsumerGroupRegularExpressionValue::MAX_VERSION,
                ConsumerGroupRegularExpressionValue::encode,
                ConsumerGroupRegularExpressionValue::encode_version,
                ConsumerGroupRegularExpressionValue::decode,
            );
        }
    }

    #[test]
    fn consumer_group_values_reject_unsupported_versions() {
        let schemas = [
            ("cg-epoch", "ConsumerGroupMetadataValue"),
            ("cg-subscription", "ConsumerGroupPartitionMetadataValue"),
            ("cg-member", "ConsumerGroupMemberMetadataValue"),
            (
                "cg-target-epoch",
                "ConsumerGroupTargetAssignmentMetadataValue",
            ),
            (
                "cg-target-member",
                "ConsumerGroupTargetAssignmentMemberValue",
            ),
            ("cg-current", "ConsumerGroupCurrentMemberAssignmentValue"),
            ("cg-regex", "ConsumerGroupRegularExpressionValue"),
        ];
        let encodings = consumer_group_encodings();
        for (kind, schema) in schemas {
            let (_, bytes) = encodings.iter().find(|(k, _)| *k == kind).unwrap();
            for version in [1i16, 4, i16::MAX, -1] {
                let mut b = bytes.to_vec();
                b[..2].copy_from_slice(&version.to_be_bytes());
                assert_eq!(
                    decode_any(kind, &b),
                    Err(RecordError::UnsupportedVersion { schema, version }),
                    "{kind}"
                );
            }
        }
        for version in [1i16, i16::MAX, -1] {
            let unsupported = |r: Result<Bytes, RecordError>| {
                assert!(matches!(r, Err(RecordError::UnsupportedVersion { .. })))
            };
            unsupported(consumer_group_metadata_values()[0].encode_version(version));
            unsupported(partition_metadata_values()[1].encode_version(version));
            unsupported(member_metadata_value().encode_version(version));
            unsupported(
                ConsumerGroupTargetAssignmentMetadataValue {
                    assignment_epoch: 1,
                }
                .encode_version(version),
            );
            unsupported(target_member_values()[1].encode_version(version));
            unsupported(current_assignment_value().encode_version(version));
            unsupported(regex_values()[0].encode_version(version));
        }
    }

    #[test]
    fn consumer_group_values_skip_unknown_tagged_fields() {
        // Unknown tags (1 and 300) in the value's section and, for the member, inside the
        // classic struct and its protocol; known fields still read.
        let value = ConsumerGroupMetadataValue {
            epoch: 3,
            metadata_hash: 77,
        };
        let mut b = Vec::new();
        be16(&mut b, 0);
        be32(&mut b, 3);
        b.extend_from_slice(&[3, 0, 8]);
        be64(&mut b, 77);
        b.extend_from_slice(&[1, 2, 0xaa, 0xbb]);
        b.extend_from_slice(&[0xac, 0x02, 0]);
        assert_eq!(ConsumerGroupMetadataValue::decode(&b).unwrap(), value);

        let value = ConsumerGroupMemberMetadataValue {
            classic_member_metadata: Some(ClassicMemberMetadata {
                session_timeout: 5,
                supported_protocols: vec![ClassicProtocol {
                    name: "r".to_owned(),
                    metadata: Bytes::from_static(&[9]),
                }],
            }),
            ..member_metadata_value()
        };
        let bytes = value.encode().unwrap();
        let classic_at = bytes.len() - 15; // tag count, tag, size, then a 12-byte struct
        assert_eq!(&bytes[classic_at..classic_at + 4], &[1, 0, 12, 1]);
        let mut b = bytes[..classic_at].to_vec();
        b.extend_from_slice(&[2, 0, 16, 1]); // two fields; the struct grows by 4 bytes
        be32(&mut b, 5);
        b.extend_from_slice(&[2, 2, b'r', 2, 9]);
        b.extend_from_slice(&[1, 7, 0]); // protocol: tag 7, empty
        b.extend_from_slice(&[1, 1, 0]); // struct: tag 1, empty
        b.extend_from_slice(&[5, 1, 0xff]); // value: tag 5, one byte
        assert_eq!(ConsumerGroupMemberMetadataValue::decode(&b).unwrap(), value);
    }

    #[test]
    fn consumer_group_absurd_lengths_are_errors_not_allocations() {
        let huge_counts: [&[u8]; 3] = [
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0xff, 0xff, 0xff, 0xff, 0x1f],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ];
        let with = |prefix: &[u8], count: &[u8]| {
            let mut b = prefix.to_vec();
            b.extend_from_slice(count);
            b.extend_from_slice(&[0; 32]);
            b
        };
        let version = [0u8, 0];
        let mut one_topic = version.to_vec();
        one_topic.push(2);
        uuid_be(&mut one_topic, TOPIC_A);
        for count in huge_counts {
            // Topic lists, partition lists, string lists.
            let b = with(&version, count);
            for kind in ["cg-subscription", "cg-target-member", "cg-regex"] {
                assert!(decode_any(kind, &b).is_err(), "{kind}");
            }
            assert!(decode_any("cg-target-member", &with(&one_topic, count)).is_err());
            let mut current = version.to_vec();
            current.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0]);
            assert!(decode_any("cg-current", &with(&current, count)).is_err());
            current.push(1); // no assigned partitions, then the pending ones
            assert!(decode_any("cg-current", &with(&current, count)).is_err());
            let mut member = version.to_vec();
            member.extend_from_slice(&[0, 0, 2, b'c', 2, b'h']);
            assert!(decode_any("cg-member", &with(&member, count)).is_err());
        }
        // A partition count larger than the bytes present, though under 32 bits.
        let mut b = one_topic.clone();
        b.push(101);
        b.extend_from_slice(&[0; 40]);
        assert!(decode_any("cg-target-member", &b).is_err());

        // A non-nullable string given as null: the member's clientId.
        let mut b = version.to_vec();
        b.extend_from_slice(&[0, 0, 0, 2, b'h', 1, 0, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        assert!(decode_any("cg-member", &b).is_err());

        // Tagged fields: a hash of the wrong size, a classic struct larger than its field, a
        // classic struct shorter than its field, and absurd lengths inside one.
        for tags in [
            &[1, 0, 7, 0, 0, 0, 0, 0, 0, 0][..],
            &[1, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let mut b = version.to_vec();
            be32(&mut b, 1);
            b.extend_from_slice(tags);
            assert!(decode_any("cg-epoch", &b).is_err());
        }
        let consumer = ConsumerGroupMemberMetadataValue {
            classic_member_metadata: None,
            ..member_metadata_value()
        };
        let bytes = consumer.encode().unwrap();
        let without_tags = &bytes[..bytes.len() - 1];
        let classic = |field: &[u8]| {
            let mut b = without_tags.to_vec();
            b.extend_from_slice(&[1, 0]);
            b.extend_from_slice(field);
            b
        };
        for field in [
            &[6, 1, 0, 0, 0, 1, 1, 0][..], // declares 6 bytes, the struct takes 7
            &[8, 1, 0, 0, 0, 1, 1, 0, 0],  // declares 8, the struct takes 7
            &[10, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f], // protocol count
            &[13, 1, 0, 0, 0, 1, 2, 2, b'r', 0xff, 0xff, 0xff, 0xff, 0x0f], // metadata length
            &[0xff, 0xff, 0xff, 0xff, 0x0f, 1], // field size
        ] {
            assert!(
                ConsumerGroupMemberMetadataValue::decode(&classic(field)).is_err(),
                "{field:?}"
            );
        }
        // The well-formed field those are mutations of.
        let ok = ConsumerGroupMemberMetadataValue::decode(&classic(&[7, 1, 0, 0, 0, 1, 1, 0]));
        assert_eq!(
            ok.unwrap().classic_member_metadata,
            Some(ClassicMemberMetadata {
                session_timeout: 1,
                supported_protocols: Vec::new(),
            })
        );
    }

    #[test]
    fn consumer_group_strings_over_32767_bytes_are_not_encoded() {
        let long = "x".repeat(STRING_MAX_BYTES + 1);
        let key = RecordKey::ConsumerGroupMemberMetadata(ConsumerGroupMemberKey {
            group: "g".to_owned(),
            member_id: long.clone(),
        });
        assert!(key.encode().is_err());
        let value = ConsumerGroupMemberMetadataValue {
            subscribed_topic_names: vec![long.clone()],
            ..member_metadata_value()
        };
        assert!(value.encode().is_err());
        let value = ConsumerGroupMemberMetadataValue {
            classic_member_metadata: Some(ClassicMemberMetadata {
                session_timeout: 1,
                supported_protocols: vec![ClassicProtocol {
                    name: long.clone(),
                    metadata: Bytes::new(),
                }],
            }),
            ..member_metadata_value()
        };
        assert!(value.encode().is_err());
        let value = ConsumerGroupRegularExpressionValue {
            topics: vec![long],
            ..regex_values()[0].clone()
        };
        assert!(value.encode().is_err());
    }
}
