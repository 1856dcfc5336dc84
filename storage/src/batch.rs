//! Kafka v2 record batch headers: validation, field access and in-place patching of the fields
//! the log owns (base offset, partition leader epoch, log-append timestamp).
//!
//! kafka-protocol's `decode_batch_info` drops the last offset delta and the max timestamp, which
//! the log needs for every batch, and it cannot patch a header in place; so the fixed 61-byte
//! header is read here by field position. Records themselves are never parsed on the hot path;
//! compaction and control markers use kafka-protocol's record codec.

use bytes::Bytes;

use crate::error::BatchError;

/// Size of the fixed v2 batch header, up to and including the record count.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before the CRC-independent part: base offset (8) + batch length (4).
pub const LOG_OVERHEAD: usize = 12;

const BASE_OFFSET: usize = 0;
const LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const FIRST_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_LOG_APPEND: i16 = 1 << 3;
const TRANSACTIONAL: i16 = 1 << 4;
const CONTROL: i16 = 1 << 5;

/// Producer id of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// Sequence of a batch written without idempotence.
pub const NO_SEQUENCE: i32 = -1;

/// The decoded fixed header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the length field.
    pub batch_length: i32,
    /// Leader epoch of the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Format version (2).
    pub magic: i8,
    /// CRC32C over attributes..end.
    pub crc: u32,
    /// Codec, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub first_timestamp: i64,
    /// Largest timestamp in the batch (or the append time for LogAppendTime).
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Reads the header fields from the first 61 bytes of `buf`; checks nothing else.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::TooShort { len: buf.len() });
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET),
            batch_length: be_i32(buf, LENGTH),
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH),
            magic: buf[MAGIC] as i8,
            crc: be_i32(buf, CRC) as u32,
            attributes: be_i16(buf, ATTRIBUTES),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA),
            first_timestamp: be_i64(buf, FIRST_TIMESTAMP),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP),
            producer_id: be_i64(buf, PRODUCER_ID),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH),
            base_sequence: be_i32(buf, BASE_SEQUENCE),
            records_count: be_i32(buf, RECORDS_COUNT),
        })
    }

    /// Total size on disk: length prefix plus the declared batch length.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset following this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    /// Whether timestamps are the broker's append time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }

    /// Whether the batch was written by an idempotent or transactional producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence of the last record, wrapping at `i32::MAX` as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }
}

/// Whether a batch's record count may fall short of its offset span, in [`validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetGaps {
    /// A batch as a producer writes it: one record per offset, so the record count is exactly
    /// the last offset delta plus one, and at least one.
    Forbidden,
    /// A batch already in a log (read back, or fetched from a leader): compaction keeps a
    /// batch's last offset delta but removes records, so fewer records (even none) may remain.
    Allowed,
}

/// Validates one complete batch that occupies exactly `buf` and returns its header.
///
/// Checks: header present, length field matches, magic 2, known codec, CRC32C over
/// attributes..end, and a record count consistent with the last offset delta as `offset_gaps`
/// says.
pub fn validate(buf: &[u8], offset_gaps: OffsetGaps) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let available = buf.len() - LOG_OVERHEAD;
    if header.batch_length < 0 || header.batch_length as usize != available {
        return Err(BatchError::LengthMismatch {
            declared: i64::from(header.batch_length),
            available,
        });
    }
    if header.magic != 2 {
        return Err(BatchError::UnsupportedMagic(header.magic));
    }
    if header.compression() > 4 {
        return Err(BatchError::UnknownCompression(header.compression()));
    }
    let computed = crc32c::crc32c(&buf[ATTRIBUTES..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            computed,
        });
    }
    let count_ok = match offset_gaps {
        OffsetGaps::Allowed => {
            header.records_count >= 0
                && header.last_offset_delta >= 0
                && i64::from(header.records_count) <= i64::from(header.last_offset_delta) + 1
        }
        OffsetGaps::Forbidden => {
            header.records_count > 0 && header.last_offset_delta == header.records_count - 1
        }
    };
    if !count_ok {
        return Err(BatchError::BadRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// One producer's record batch that passed [`validate`] with [`OffsetGaps::Forbidden`], with
/// its parsed header. Only [`ValidatedBatch::new`] makes one, so code handed a
/// `ValidatedBatch` (the broker's produce path, then [`crate::Log::append_validated_as_leader`])
/// reads its header without checking the bytes again.
#[derive(Debug, Clone)]
pub struct ValidatedBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl ValidatedBatch {
    /// Validates `bytes` as exactly one batch from a producer (see [`validate`]).
    pub fn new(bytes: Bytes) -> Result<ValidatedBatch, BatchError> {
        let header = validate(&bytes, OffsetGaps::Forbidden)?;
        Ok(ValidatedBatch { bytes, header })
    }

    /// The batch's header, as validated.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The whole batch, giving up the proof of validation.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Splits a buffer of concatenated batches into `(position, header)` of each complete batch.
///
/// Ends after the first incomplete or impossible batch (a partial tail is normal at the end of a read chunk).
/// Only the header is parsed; see [`validate`] for full checks.
#[derive(Debug)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> BatchIter<'a> {
    /// Iterates over the batches of `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter { buf, position: 0 }
    }

    /// Byte position just after the last batch returned.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// One step of [`BatchIter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStep {
    /// A complete batch at `position` with this header.
    Batch {
        /// Byte position of the batch in the buffer.
        position: usize,
        /// Its header.
        header: BatchHeader,
    },
    /// The rest of the buffer holds only part of a batch that declares `total_len` bytes.
    Partial {
        /// Byte position of the partial batch.
        position: usize,
        /// Declared size (meaningful only if at least 12 bytes were there), 0 if unknown.
        total_len: usize,
    },
    /// The declared length is impossible (negative or below the header size).
    Invalid {
        /// Byte position of the bad batch.
        position: usize,
    },
}

impl Iterator for BatchIter<'_> {
    type Item = BatchStep;

    fn next(&mut self) -> Option<BatchStep> {
        let rest = &self.buf[self.position..];
        if rest.is_empty() {
            return None;
        }
        let position = self.position;
        if rest.len() < LOG_OVERHEAD {
            self.position = self.buf.len();
            return Some(BatchStep::Partial {
                position,
                total_len: 0,
            });
        }
        let batch_length = be_i32(rest, LENGTH);
        if batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
            self.position = self.buf.len();
            return Some(BatchStep::Invalid { position });
        }
        let total_len = LOG_OVERHEAD + batch_length as usize;
        if rest.len() < total_len {
            self.position = self.buf.len();
            return Some(BatchStep::Partial {
                position,
                total_len,
            });
        }
        let Ok(header) = BatchHeader::parse(rest) else {
            self.position = self.buf.len();
            return Some(BatchStep::Invalid { position });
        };
        self.position += total_len;
        Some(BatchStep::Batch { position, header })
    }
}

/// Sets the base offset of the batch at the start of `buf` (outside the CRC range).
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Sets the partition leader epoch of the batch at the start of `buf` (outside the CRC range).
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch whose 61-byte header is `head` and whose records are `body` as
/// LogAppendTime with `append_time_ms` as its max timestamp, and recomputes the CRC, since both
/// fields lie inside the CRC range. The body is only read.
pub fn set_log_append_time(head: &mut [u8; BATCH_HEADER_LEN], body: &[u8], append_time_ms: i64) {
    let attributes = be_i16(head, ATTRIBUTES) | TIMESTAMP_TYPE_LOG_APPEND;
    head[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    head[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&append_time_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[ATTRIBUTES..]), body);
    head[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A copy of the batch header, for patching without touching (or copying) the records.
pub fn header_bytes(batch: &[u8]) -> Result<[u8; BATCH_HEADER_LEN], BatchError> {
    batch
        .get(..BATCH_HEADER_LEN)
        .and_then(|h| <[u8; BATCH_HEADER_LEN]>::try_from(h).ok())
        .ok_or(BatchError::TooShort { len: batch.len() })
}

/// Transaction marker kind carried by a control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    /// The transaction was aborted.
    Abort,
    /// The transaction was committed.
    Commit,
}

/// Reads the marker type of a control batch (uncompressed, one record whose key is
/// `version:i16, type:i16`), using kafka-protocol's record decoder.
pub fn control_type(batch: &[u8]) -> Result<ControlType, BatchError> {
    marker(batch).map(|marker| marker.kind)
}

/// What a transaction marker says: its kind and the epoch of the coordinator that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub kind: ControlType,
    /// The transaction coordinator's epoch (the leader epoch of its `__transaction_state`
    /// partition); -1 when the record has no value (leaders refuse markers from coordinators
    /// older than the last one seen, Kafka's TRANSACTION_COORDINATOR_FENCED).
    pub coordinator_epoch: i32,
}

/// The marker of a control batch: its key's type and its value's coordinator epoch.
pub fn marker(batch: &[u8]) -> Result<Marker, BatchError> {
    let mut buf = Bytes::copy_from_slice(batch);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
        .map_err(|_| BatchError::BadControlBatch)?;
    let record = set.records.first().ok_or(BatchError::BadControlBatch)?;
    let key = record.key.as_ref().ok_or(BatchError::BadControlBatch)?;
    if key.len() < 4 {
        return Err(BatchError::BadControlBatch);
    }
    let kind = match i16::from_be_bytes([key[2], key[3]]) {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        _ => return Err(BatchError::BadControlBatch),
    };
    // Value: version (i16), coordinator epoch (i32).
    let coordinator_epoch = record
        .value
        .as_ref()
        .filter(|value| value.len() >= 6)
        .map_or(-1, |value| {
            i32::from_be_bytes([value[2], value[3], value[4], value[5]])
        });
    Ok(Marker {
        kind,
        coordinator_epoch,
    })
}

/// A transaction marker (Kafka's `EndTransactionMarker`): one control record whose key is
/// `version 0, type` (0 abort, 1 commit) and whose value is `version 0, coordinator epoch`, in a
/// transactional control batch of the producer, encoded with kafka-protocol's encoder.
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Result<Bytes, BatchError> {
    use kafka_protocol::records::{Compression, Record, TimestampType};
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut records = [Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: timestamp_ms,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    }];
    Ok(encode_records(&mut records, Compression::None)?.freeze())
}

/// Encodes `records` as one v2 batch (kafka-protocol's encoder), keeping their offsets.
///
/// kafka-protocol starts a new batch wherever `offset - sequence` changes, which for records
/// without a sequence (-1 each: no producer id, or a coordinator's transactional batch) would
/// mean one batch per record; such records are encoded with sequences that follow their
/// offsets, and the batch's base sequence is set back to -1 afterwards (CRC recomputed).
pub fn encode_records(
    records: &mut [kafka_protocol::records::Record],
    compression: kafka_protocol::records::Compression,
) -> Result<bytes::BytesMut, BatchError> {
    use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};
    let anonymous = records
        .first()
        .is_some_and(|r| r.producer_id < 0 || r.sequence < 0);
    if anonymous {
        for r in records.iter_mut() {
            r.sequence = r.offset as i32;
        }
    }
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).map_err(|_| {
        BatchError::BadRecordCount {
            records_count: records.len() as i32,
            last_offset_delta: -1,
        }
    })?;
    if anonymous {
        buf[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&NO_SEQUENCE.to_be_bytes());
        let crc = crc32c::crc32c(&buf[ATTRIBUTES..]);
        buf[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(buf)
}

/// After the records kept by compaction were re-encoded into `buf` (one batch), restores what
/// Kafka keeps of the `original` header: its last offset, so the producer's last sequence
/// (base sequence + last offset delta) survives and followers see the same batch end, and the
/// LogAppendTime type with its timestamp, which the encoder does not write. Recomputes the CRC.
pub fn restore_compacted_header(buf: &mut [u8], original: &BatchHeader) -> Result<(), BatchError> {
    let new = BatchHeader::parse(buf)?;
    let delta = original.last_offset() - new.base_offset;
    let delta = i32::try_from(delta).map_err(|_| BatchError::BadRecordCount {
        records_count: new.records_count,
        last_offset_delta: i32::MAX,
    })?;
    buf[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&delta.to_be_bytes());
    if original.is_log_append_time() {
        let attributes = new.attributes | TIMESTAMP_TYPE_LOG_APPEND;
        buf[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        buf[MAX_TIMESTAMP..MAX_TIMESTAMP + 8]
            .copy_from_slice(&original.max_timestamp.to_be_bytes());
    }
    let crc = crc32c::crc32c(&buf[ATTRIBUTES..]);
    buf[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Test helpers that build real batches with kafka-protocol's encoder.
#[cfg(any(test, feature = "test-util"))]
pub mod testing {
    use bytes::Bytes;
    use kafka_protocol::records::{Compression, Record, TimestampType};

    /// Producer identity of a test batch.
    #[derive(Debug, Clone, Copy)]
    pub struct Producer {
        /// Producer id (-1 for none).
        pub id: i64,
        /// Producer epoch.
        pub epoch: i16,
        /// First sequence.
        pub base_sequence: i32,
        /// Transactional flag.
        pub transactional: bool,
    }

    impl Producer {
        /// A batch written without idempotence.
        pub const NONE: Producer = Producer {
            id: -1,
            epoch: -1,
            base_sequence: -1,
            transactional: false,
        };

        /// An idempotent (not transactional) producer's batch starting at `base_sequence`.
        pub fn idempotent(id: i64, epoch: i16, base_sequence: i32) -> Producer {
            Producer {
                id,
                epoch,
                base_sequence,
                transactional: false,
            }
        }
    }

    fn record(
        producer: Producer,
        i: usize,
        timestamp_ms: i64,
        key: Option<Bytes>,
        value: Option<Bytes>,
        control: bool,
    ) -> Record {
        Record {
            transactional: producer.transactional,
            control,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.id,
            producer_epoch: producer.epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if producer.base_sequence < 0 {
                -1
            } else {
                producer.base_sequence.wrapping_add(i as i32)
            },
            timestamp: timestamp_ms,
            key,
            value,
            headers: Default::default(),
        }
    }

    /// Exactly one valid v2 batch (base offset 0) holding `records`.
    fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut records = records.to_vec();
        let bytes = super::encode_records(&mut records, compression)
            .expect("encode test batch")
            .freeze();
        if !records.is_empty() {
            let header = super::validate(&bytes, super::OffsetGaps::Forbidden)
                .expect("the encoder made a valid batch");
            assert_eq!(
                header.records_count as usize,
                records.len(),
                "the encoder made exactly one batch"
            );
        }
        bytes
    }

    /// An optional key and an optional value (None value = tombstone).
    pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    /// One record with its own timestamp: key, value (None = tombstone), timestamp in ms.
    pub type TimedRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

    /// A batch of `(key, value)` records with base offset 0.
    pub fn batch_kv(
        pairs: &[KeyValue<'_>],
        timestamp_ms: i64,
        producer: Producer,
        compression: Compression,
    ) -> Bytes {
        let records: Vec<TimedRecord<'_>> = pairs
            .iter()
            .map(|(key, value)| (*key, *value, timestamp_ms))
            .collect();
        batch_records(&records, producer, compression)
    }

    /// A batch of `(key, value, timestamp)` records with base offset 0, in offset order.
    pub fn batch_records(
        records: &[TimedRecord<'_>],
        producer: Producer,
        compression: Compression,
    ) -> Bytes {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (key, value, timestamp_ms))| {
                record(
                    producer,
                    i,
                    *timestamp_ms,
                    key.map(Bytes::copy_from_slice),
                    value.map(Bytes::copy_from_slice),
                    false,
                )
            })
            .collect();
        encode(&records, compression)
    }

    /// A batch of keyless records holding `values`, record `i` at `timestamp_ms + i`.
    pub fn batch_values<V: AsRef<[u8]>>(
        values: &[V],
        timestamp_ms: i64,
        producer: Producer,
        compression: Compression,
    ) -> Bytes {
        let records: Vec<TimedRecord<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, value)| (None, Some(value.as_ref()), timestamp_ms + i as i64))
            .collect();
        batch_records(&records, producer, compression)
    }

    /// A batch of `count` keyless records whose values are `value_len` bytes of `fill`.
    pub fn batch(count: usize, value_len: usize, fill: u8, timestamp_ms: i64) -> Bytes {
        let value = Bytes::from(vec![fill; value_len]);
        let records: Vec<Record> = (0..count)
            .map(|i| {
                record(
                    Producer::NONE,
                    i,
                    timestamp_ms,
                    None,
                    Some(value.clone()),
                    false,
                )
            })
            .collect();
        encode(&records, Compression::None)
    }

    /// A batch from an idempotent producer.
    pub fn idempotent_batch(count: usize, producer: Producer, timestamp_ms: i64) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| {
                record(
                    producer,
                    i,
                    timestamp_ms,
                    None,
                    Some(Bytes::from_static(b"v")),
                    false,
                )
            })
            .collect();
        encode(&records, Compression::None)
    }

    /// A transaction marker (control batch) for `producer`.
    pub fn control_batch(producer: Producer, commit: bool, timestamp_ms: i64) -> Bytes {
        let key = Bytes::from(vec![0, 0, 0, u8::from(commit)]);
        let value = Bytes::from(vec![0, 0, 0, 0, 0, 0]);
        let producer = Producer {
            base_sequence: -1,
            transactional: true,
            ..producer
        };
        let r = record(producer, 0, timestamp_ms, Some(key), Some(value), true);
        encode(std::slice::from_ref(&r), Compression::None)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use kafka_protocol::records::Compression;

    #[test]
    fn valid_batch_parses_and_patches() {
        let b = batch(3, 10, b'x', 1_000);
        let h = validate(&b, OffsetGaps::Forbidden).expect("valid");
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.total_len(), b.len());

        let mut head = header_bytes(&b).expect("header");
        set_base_offset(&mut head, 42);
        set_partition_leader_epoch(&mut head, 7);
        let mut m = head.to_vec();
        m.extend_from_slice(&b[BATCH_HEADER_LEN..]);
        let h = validate(&m, OffsetGaps::Forbidden)
            .expect("still valid: patched fields are outside the crc");
        assert_eq!((h.base_offset, h.partition_leader_epoch), (42, 7));

        set_log_append_time(&mut head, &b[BATCH_HEADER_LEN..], 99);
        let mut m = head.to_vec();
        m.extend_from_slice(&b[BATCH_HEADER_LEN..]);
        let h = validate(&m, OffsetGaps::Forbidden).expect("crc recomputed");
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99);
    }

    #[test]
    fn test_builders_carry_values_timestamps_producer_and_compression() {
        let values: [&[u8]; 3] = [b"a", b"bb", b"ccc"];
        let b = batch_values(&values, 1_000, Producer::NONE, Compression::Zstd);
        let h = validate(&b, OffsetGaps::Forbidden).expect("valid");
        assert_eq!((h.records_count, h.compression()), (3, 4));
        assert_eq!((h.first_timestamp, h.max_timestamp), (1_000, 1_002));
        assert_eq!((h.producer_id, h.base_sequence), (-1, -1));

        let records: [TimedRecord<'_>; 2] = [(Some(b"k"), None, 50), (None, Some(b"v"), 900)];
        let b = batch_records(&records, Producer::idempotent(7, 2, 10), Compression::None);
        let h = validate(&b, OffsetGaps::Forbidden).expect("valid");
        assert_eq!((h.first_timestamp, h.max_timestamp), (50, 900));
        assert_eq!((h.producer_id, h.producer_epoch), (7, 2));
        assert_eq!((h.base_sequence, h.last_sequence()), (10, 11));
        assert!(!h.is_transactional());
    }

    #[test]
    fn bad_batches_are_rejected_with_the_right_reason() {
        let good = batch(2, 4, b'a', 5);
        let mut crc = good.to_vec();
        let last = crc.len() - 1;
        crc[last] ^= 1;
        assert!(matches!(
            validate(&crc, OffsetGaps::Forbidden),
            Err(BatchError::CrcMismatch { .. })
        ));

        let mut magic = good.to_vec();
        magic[16] = 1;
        assert_eq!(
            validate(&magic, OffsetGaps::Forbidden),
            Err(BatchError::UnsupportedMagic(1))
        );

        assert!(matches!(
            validate(&good[..good.len() - 1], OffsetGaps::Forbidden),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert_eq!(
            validate(&good[..20], OffsetGaps::Forbidden),
            Err(BatchError::TooShort { len: 20 })
        );

        let mut negative = good.to_vec();
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate(&negative, OffsetGaps::Forbidden),
            Err(BatchError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn offset_gaps_are_allowed_only_when_asked_for() {
        // A compacted batch: three records left of an offset span of five.
        let mut gapped = batch(3, 4, b'g', 5).to_vec();
        gapped[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&4i32.to_be_bytes());
        let crc = crc32c::crc32c(&gapped[ATTRIBUTES..]);
        gapped[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate(&gapped, OffsetGaps::Forbidden),
            Err(BatchError::BadRecordCount {
                records_count: 3,
                last_offset_delta: 4
            })
        );
        let h = validate(&gapped, OffsetGaps::Allowed).expect("gaps allowed");
        assert_eq!(h.last_offset(), 4);
        assert!(
            ValidatedBatch::new(Bytes::from(gapped)).is_err(),
            "a producer's batch has no gaps"
        );
    }

    #[test]
    fn a_validated_batch_keeps_its_bytes_and_header() {
        let good = batch(2, 4, b'v', 5);
        let validated = ValidatedBatch::new(good.clone()).expect("valid");
        assert_eq!(
            *validated.header(),
            validate(&good, OffsetGaps::Forbidden).expect("valid")
        );
        assert_eq!(validated.bytes(), &good);
        assert_eq!(validated.into_bytes(), good);

        let mut crc = good.to_vec();
        let last = crc.len() - 1;
        crc[last] ^= 1;
        assert!(matches!(
            ValidatedBatch::new(Bytes::from(crc)),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn iterator_reports_partial_and_invalid_tails() {
        let a = batch(1, 3, b'a', 1);
        let b = batch(2, 3, b'b', 1);
        let mut buf = a.to_vec();
        buf.extend_from_slice(&b);
        buf.extend_from_slice(&a[..30]);
        let steps: Vec<_> = BatchIter::new(&buf).collect();
        assert_eq!(steps.len(), 3);
        assert!(
            matches!(steps[2], BatchStep::Partial { position, .. } if position == a.len() + b.len())
        );

        let mut bad = a.to_vec();
        bad.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        let steps: Vec<_> = BatchIter::new(&bad).collect();
        assert!(matches!(steps[1], BatchStep::Invalid { .. }));
    }

    #[test]
    fn control_markers_and_sequences() {
        let p = Producer {
            id: 9,
            epoch: 1,
            base_sequence: i32::MAX - 1,
            transactional: true,
        };
        let b = idempotent_batch(3, p, 1);
        let h = validate(&b, OffsetGaps::Forbidden).expect("valid");
        assert!(h.is_transactional() && !h.is_control());
        assert_eq!(h.last_sequence(), 0, "sequence wraps after i32::MAX");

        let c = control_batch(p, false, 1);
        let h = validate(&c, OffsetGaps::Forbidden).expect("valid control");
        assert!(h.is_control());
        assert_eq!(control_type(&c), Ok(ControlType::Abort));
        let written = marker_batch(7, 1, true, 42, 1_000).unwrap();
        assert_eq!(
            marker(&written),
            Ok(Marker {
                kind: ControlType::Commit,
                coordinator_epoch: 42
            })
        );
        let c = control_batch(p, true, 1);
        assert_eq!(control_type(&c), Ok(ControlType::Commit));
        let plain = batch_kv(
            &[(Some(b"k"), Some(b"v"))],
            1,
            Producer::NONE,
            Compression::None,
        );
        assert_eq!(control_type(&plain), Err(BatchError::BadControlBatch));
    }
}
