//! The records of the `__consumer_offsets` topic, byte for byte as Apache Kafka writes them, so
//! that tools reading the topic (Burrow, `kafka-console-consumer --formatter`) read what we write
//! and a log Kafka wrote replays here.
//!
//! Framing (Kafka's `CoordinatorRecordSerde`): a record's key is an int16 *record type* followed
//! by the key struct, and its value an int16 *value version* followed by the value struct. A
//! tombstone is the key with a null value. Record types: 0 and 1 are an offset commit (Kafka has
//! written 1 since 0.9; 0 is the 0.8.2 key with the same layout), 2 is classic group metadata.
//! Higher types (KIP-848 consumer groups, share and streams groups) decode to
//! [`RecordKey::Unknown`] so a replay can skip them, as Kafka's loader skips unknown types.
//!
//! Schemas (Kafka's `group-coordinator/src/main/resources/common/message/*.json`):
//!
//! | record | versions | flexible | version-dependent fields |
//! |---|---|---|---|
//! | `OffsetCommitKey` (type 0, 1) | — | never | — |
//! | `GroupMetadataKey` (type 2) | — | never | — |
//! | `OffsetCommitValue` | 0-4 | 4+ | `leaderEpoch` 3+, `expireTimestamp` only 1, `topicId` tag 0 in 4+ |
//! | `GroupMetadataValue` | 0-4 | 4+ | `currentStateTimestamp` 2+; member `rebalanceTimeout` 1+, `groupInstanceId` 3+ |
//!
//! Flexible versions use compact (varint-length) strings, bytes and arrays and end every struct
//! with a tagged-field section. A field absent from a version decodes to its schema default
//! (-1, null, the nil topic id), and encoding at a version without the field drops it, as Kafka
//! does for these fields (all are `ignorable`).
//!
//! Versions Kafka writes (`GroupCoordinatorRecordHelpers`): `OffsetCommitValue` 1 when the commit
//! carries an expire timestamp (v1 is the only version holding one), else 4 since Kafka 4.1
//! (KAFKA-19141, which added `topicId`), and 3 before; `GroupMetadataValue` 3. [`encode`] writes
//! what Kafka 4.0 writes (1 or 3): version 4 is unreadable to Kafka tools before 3.5 and to Burrow
//! before 1.9.5, and the topic id it adds is not needed to read the topic.
//!
//! Decoding never panics and allocates at most in proportion to the input: every length is
//! checked against the bytes present before anything is copied or reserved. It is stricter than
//! Kafka in three ways, each a sign of corruption rather than of another writer: bytes left after
//! a key or value, strings that are not UTF-8 (Java replaces the bad sequences) and a `topicId`
//! tag whose size is not 16 are errors. Unknown tagged fields are skipped and not kept.
//!
//! The primitives (int16-length strings, compact strings, varints) are written here, not taken
//! from kafka-protocol: its `types::*` encoders work through traits it keeps `pub(crate)`. The
//! tests pin these primitives to kafka-protocol's generated messages byte for byte.
//!
//! [`encode`]: OffsetCommitValue::encode

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// The record type of the 0.8.2 offset commit key; read, never written.
const OFFSET_COMMIT_LEGACY_TYPE: i16 = 0;
/// The record type Kafka writes offset commit keys with.
const OFFSET_COMMIT_TYPE: i16 = 1;
/// The record type of classic group metadata.
const GROUP_METADATA_TYPE: i16 = 2;

/// The longest string Kafka's generated code reads or writes, in any version (its `0x7fff`
/// check), compact strings included.
const STRING_MAX_BYTES: usize = 0x7fff;

/// The tag of `OffsetCommitValue.topicId`.
const TOPIC_ID_TAG: u32 = 0;

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    /// A committed offset of one group for one partition (record type 0 or 1).
    OffsetCommit(OffsetCommitKey),
    /// The metadata of a classic group (record type 2).
    GroupMetadata(GroupMetadataKey),
    /// A record type this module does not know (KIP-848 consumer groups, share groups, ...);
    /// only the type was read, so a replay can skip the record.
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

/// Why a record could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The version is outside those the schema knows: a newer Kafka may have written the
    /// record, or a caller asked to encode such a version or an unknown key.
    UnsupportedVersion {
        /// The schema, e.g. `OffsetCommitValue`.
        schema: &'static str,
        /// The version (the record type for a key).
        version: i16,
    },
    /// The bytes do not follow the schema (truncated, impossible length, trailing bytes, ...),
    /// or a value does not fit it (a string longer than 32767 bytes).
    Invalid(String),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::UnsupportedVersion { schema, version } => {
                write!(f, "{schema}: unsupported version {version}")
            }
            RecordError::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for RecordError {}

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
            RecordKey::Unknown { version } => Err(RecordError::UnsupportedVersion {
                schema: "RecordKey",
                version: *version,
            }),
        }
    }

    /// Decodes a key. Any record type other than 0, 1 and 2 gives [`RecordKey::Unknown`]
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

fn check_version(schema: &'static str, version: i16, max: i16) -> Result<(), RecordError> {
    if (0..=max).contains(&version) {
        Ok(())
    } else {
        Err(RecordError::UnsupportedVersion { schema, version })
    }
}

/// Writes a version prefix and then a struct's fields in Kafka's encodings; `flexible` selects
/// the compact forms.
struct Writer {
    schema: &'static str,
    flexible: bool,
    buf: BytesMut,
}

impl Writer {
    fn new(schema: &'static str, version: i16, flexible: bool) -> Self {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i16(version);
        Writer {
            schema,
            flexible,
            buf,
        }
    }

    fn i32(&mut self, value: i32) {
        self.buf.put_i32(value);
    }

    fn i64(&mut self, value: i64) {
        self.buf.put_i64(value);
    }

    fn unsigned_varint(&mut self, mut value: u32) {
        while value >= 0x80 {
            self.buf.put_u8(value as u8 | 0x80);
            value >>= 7;
        }
        self.buf.put_u8(value as u8);
    }

    fn string(&mut self, field: &'static str, value: &str) -> Result<(), RecordError> {
        self.nullable_string(field, Some(value))
    }

    fn nullable_string(
        &mut self,
        field: &'static str,
        value: Option<&str>,
    ) -> Result<(), RecordError> {
        let Some(value) = value else {
            if self.flexible {
                self.unsigned_varint(0);
            } else {
                self.buf.put_i16(-1);
            }
            return Ok(());
        };
        if value.len() > STRING_MAX_BYTES {
            return Err(self.too_long(field, value.len(), STRING_MAX_BYTES));
        }
        if self.flexible {
            self.unsigned_varint(value.len() as u32 + 1);
        } else {
            self.buf.put_i16(value.len() as i16);
        }
        self.buf.put_slice(value.as_bytes());
        Ok(())
    }

    fn bytes(&mut self, field: &'static str, value: &[u8]) -> Result<(), RecordError> {
        self.length(field, value.len())?;
        self.buf.put_slice(value);
        Ok(())
    }

    fn array_len(&mut self, field: &'static str, len: usize) -> Result<(), RecordError> {
        self.length(field, len)
    }

    /// The length of non-null bytes or an array: int32, or varint of length + 1 when flexible.
    fn length(&mut self, field: &'static str, len: usize) -> Result<(), RecordError> {
        if self.flexible {
            let max = u32::MAX as usize - 1;
            if len > max {
                return Err(self.too_long(field, len, max));
            }
            self.unsigned_varint(len as u32 + 1);
        } else {
            let max = i32::MAX as usize;
            if len > max {
                return Err(self.too_long(field, len, max));
            }
            self.buf.put_i32(len as i32);
        }
        Ok(())
    }

    /// A tagged-field section: the count, then each field's tag, size and bytes. `fields` must
    /// be in ascending tag order, as Kafka writes them.
    fn tagged_fields(&mut self, fields: &[(u32, &[u8])]) {
        self.unsigned_varint(fields.len() as u32);
        for (tag, data) in fields {
            self.unsigned_varint(*tag);
            self.unsigned_varint(data.len() as u32);
            self.buf.put_slice(data);
        }
    }

    fn too_long(&self, field: &'static str, len: usize, max: usize) -> RecordError {
        RecordError::Invalid(format!(
            "{}: field `{field}` is {len} long, more than the {max} its encoding holds",
            self.schema
        ))
    }

    fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// Reads a struct's fields in Kafka's encodings, checking every length against the bytes left.
struct Reader<'a> {
    schema: &'static str,
    flexible: bool,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(schema: &'static str, buf: &'a [u8], flexible: bool) -> Self {
        Reader {
            schema,
            flexible,
            buf,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn invalid(&self, field: &str, reason: impl fmt::Display) -> RecordError {
        RecordError::Invalid(format!("{}: field `{field}`: {reason}", self.schema))
    }

    fn take(&mut self, field: &str, len: usize) -> Result<&'a [u8], RecordError> {
        if len > self.buf.len() {
            return Err(self.invalid(
                field,
                format_args!("needs {len} bytes, {} remain", self.buf.len()),
            ));
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    fn i16(&mut self, field: &str) -> Result<i16, RecordError> {
        Ok(self.take(field, 2)?.get_i16())
    }

    fn i32(&mut self, field: &str) -> Result<i32, RecordError> {
        Ok(self.take(field, 4)?.get_i32())
    }

    fn i64(&mut self, field: &str) -> Result<i64, RecordError> {
        Ok(self.take(field, 8)?.get_i64())
    }

    /// At most five bytes, as Kafka's `readUnsignedVarint`; bits beyond 32 are an error.
    fn unsigned_varint(&mut self, field: &str) -> Result<u32, RecordError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.take(field, 1)?[0];
            if i == 4 && byte > 0x0f {
                break;
            }
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(self.invalid(field, "varint longer than 32 bits"))
    }

    fn string(&mut self, field: &str) -> Result<String, RecordError> {
        self.nullable_string(field)?
            .ok_or_else(|| self.invalid(field, "null in a non-nullable string"))
    }

    fn nullable_string(&mut self, field: &str) -> Result<Option<String>, RecordError> {
        let len = if self.flexible {
            match self.unsigned_varint(field)? {
                0 => return Ok(None),
                n => (n - 1) as usize,
            }
        } else {
            // Any negative length is null to Kafka's generated readers, not only -1.
            match self.i16(field)? {
                n if n < 0 => return Ok(None),
                n => n as usize,
            }
        };
        if len > STRING_MAX_BYTES {
            return Err(self.invalid(field, format_args!("string length {len} over 32767")));
        }
        let raw = self.take(field, len)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(error) => Err(self.invalid(field, error)),
        }
    }

    fn bytes(&mut self, field: &str) -> Result<Bytes, RecordError> {
        let len = self.length(field)?;
        Ok(Bytes::copy_from_slice(self.take(field, len)?))
    }

    /// An array's element count, no more than the bytes left (every element takes at least
    /// one), as Kafka's generated readers require before they allocate.
    fn array_len(&mut self, field: &str) -> Result<usize, RecordError> {
        let len = self.length(field)?;
        if len > self.remaining() {
            return Err(self.invalid(
                field,
                format_args!("{len} elements but only {} bytes remain", self.remaining()),
            ));
        }
        Ok(len)
    }

    /// The length of non-nullable bytes or an array.
    fn length(&mut self, field: &str) -> Result<usize, RecordError> {
        if self.flexible {
            match self.unsigned_varint(field)? {
                0 => Err(self.invalid(field, "null where the schema does not allow null")),
                n => Ok((n - 1) as usize),
            }
        } else {
            match self.i32(field)? {
                n if n < 0 => Err(self.invalid(field, format_args!("negative length {n}"))),
                n => Ok(n as usize),
            }
        }
    }

    /// Reads a tagged-field section, handing each field's tag and bytes to `known`, which
    /// ignores the tags it does not know.
    fn tagged_fields(
        &mut self,
        mut known: impl FnMut(u32, &'a [u8]) -> Result<(), String>,
    ) -> Result<(), RecordError> {
        // Each field takes at least two bytes, so a huge count fails on the bytes, not memory.
        let count = self.unsigned_varint("tagged fields")?;
        for _ in 0..count {
            let tag = self.unsigned_varint("tagged field tag")?;
            let size = self.unsigned_varint("tagged field size")? as usize;
            let data = self.take("tagged field data", size)?;
            known(tag, data).map_err(|reason| self.invalid("tagged fields", reason))?;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), RecordError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Invalid(format!(
                "{}: {} bytes after the last field",
                self.schema,
                self.buf.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
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
        for version in [3i16, 4, 5, 11, 17, 100, i16::MAX, -1, i16::MIN] {
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
        all
    }

    fn decode_any(kind: &str, bytes: &[u8]) -> Result<(), RecordError> {
        match kind {
            "key" => RecordKey::decode(bytes).map(drop),
            "offset" => OffsetCommitValue::decode(bytes).map(drop),
            _ => GroupMetadataValue::decode(bytes).map(drop),
        }
    }

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
            if b.len() >= 2 {
                b[0] = 0;
                b[1] = (xorshift(&mut seed) % 5) as u8;
            }
            for kind in ["key", "offset", "group"] {
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
}
