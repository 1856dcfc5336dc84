//! The storage crate's one error type: every failure a caller may need to tell apart.

use std::io;
use std::path::PathBuf;

/// Errors returned by partition logs and the key-value store.
///
/// Variants carry what a caller needs to map them to a Kafka error code (the broker does that in
/// one place) or to log them usefully; none of them carries a free-form `String` reason alone.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O operation on a log, index or checkpoint file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A record batch handed to `append` is malformed (bad CRC, wrong magic, bad lengths, ...).
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),

    /// A batch (or the whole appended record set) exceeds `max.message.bytes`.
    #[error("record batch of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    BatchTooLarge {
        /// Size of the rejected batch.
        size_bytes: usize,
        /// The configured limit.
        limit_bytes: usize,
    },

    /// Bytes read back from a segment fail validation: the data on disk is corrupt.
    #[error("corrupt batch in {path} at position {position}: {reason}")]
    CorruptLog {
        /// Segment file holding the corrupt bytes.
        path: PathBuf,
        /// Byte position of the corrupt batch within the segment.
        position: u64,
        /// What check failed.
        reason: BatchError,
    },

    /// The requested offset is outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// First offset still held.
        log_start_offset: i64,
        /// Next offset to be written.
        log_end_offset: i64,
    },

    /// An earlier write or fsync failed in a way that may leave bytes on disk the log does not
    /// account for; appends are refused until the log is reopened (recovery then repairs it).
    /// Reads keep working.
    #[error("log {dir} refuses appends after an earlier i/o failure; reopen it to recover")]
    AppendsBlocked {
        /// The partition directory.
        dir: PathBuf,
    },

    /// A replicated append does not continue the log exactly (gap or overlap).
    #[error("replicated batch starts at {first_offset} but the log ends at {log_end_offset}")]
    NonContiguousAppend {
        /// Base offset of the first batch offered.
        first_offset: i64,
        /// The log's end offset.
        log_end_offset: i64,
    },

    /// Offsets inside a replicated record set do not increase.
    #[error("offsets do not increase: batch at {base_offset} follows one ending at {previous_last_offset}")]
    NonMonotonicOffsets {
        /// Base offset of the offending batch.
        base_offset: i64,
        /// Last offset of the batch before it.
        previous_last_offset: i64,
    },

    /// A transaction marker from a coordinator older than the one that wrote the producer's
    /// last marker (Kafka's TRANSACTION_COORDINATOR_FENCED).
    #[error("marker of producer {producer_id} from coordinator epoch {coordinator_epoch}, older than {current}")]
    TransactionCoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },

    /// The producer epoch of a batch is older than the one the log knows for that producer.
    #[error(
        "producer {producer_id} epoch {epoch} is older than the current epoch {current_epoch}"
    )]
    InvalidProducerEpoch {
        /// The producer id.
        producer_id: i64,
        /// Epoch carried by the batch.
        epoch: i16,
        /// Epoch the log knows.
        current_epoch: i16,
    },

    /// The batch's first sequence does not follow the producer's last one.
    #[error("producer {producer_id}: sequence {first_sequence} does not follow {last_sequence}")]
    OutOfOrderSequence {
        /// The producer id.
        producer_id: i64,
        /// First sequence of the batch.
        first_sequence: i32,
        /// Last sequence the log has for the producer (-1 if none).
        last_sequence: i32,
    },

    /// A transactional batch or marker does not fit the producer's transaction state.
    #[error("producer {producer_id}: {reason}")]
    InvalidTxnState {
        /// The producer id.
        producer_id: i64,
        /// What is inconsistent.
        reason: &'static str,
    },

    /// A checkpoint or snapshot file failed its checksum or could not be parsed.
    #[error("corrupt checkpoint {path}: {reason}")]
    CorruptCheckpoint {
        /// The file.
        path: PathBuf,
        /// What check failed.
        reason: &'static str,
    },

    /// A configuration value is out of its valid range.
    #[error("invalid config {key}: {reason}")]
    InvalidConfig {
        /// The config key (Kafka spelling).
        key: &'static str,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// Records could not be decoded or re-encoded during compaction.
    #[error("record codec error while compacting at offset {offset}: {message}")]
    RecordCodec {
        /// Base offset of the batch being processed.
        offset: i64,
        /// The codec's message.
        message: String,
    },

    /// The key-value store failed.
    #[error("key-value store error: {0}")]
    Kv(String),

    /// The key-value store was asked for a column family it does not have.
    #[error("unknown column family {0}")]
    UnknownColumnFamily(String),
}

/// Why a record batch failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than a batch header.
    #[error("batch of {len} bytes is shorter than the 61-byte header")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The batch length field is negative or disagrees with the bytes given.
    #[error("batch length field {declared} does not match {available} available bytes")]
    LengthMismatch {
        /// The batch length field (bytes after the length field).
        declared: i64,
        /// Bytes actually available after the length field.
        available: usize,
    },
    /// Magic byte other than 2.
    #[error("unsupported magic {0} (only v2 record batches are supported)")]
    UnsupportedMagic(i8),
    /// CRC32C over attributes..end does not match the header.
    #[error("crc mismatch: header says {expected:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// Record count negative, zero, or inconsistent with the last offset delta.
    #[error(
        "record count {records_count} is inconsistent with last offset delta {last_offset_delta}"
    )]
    BadRecordCount {
        /// Record count field.
        records_count: i32,
        /// Last offset delta field.
        last_offset_delta: i32,
    },
    /// Compression codec id outside 0..=4.
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    /// A produce request must carry exactly one batch per partition (Kafka rule since v3).
    #[error("expected exactly one record batch, found {0}")]
    NotExactlyOneBatch(usize),
    /// Clients may not write control batches (transaction markers come from coordinators).
    #[error("control batches may only be written by a coordinator")]
    ControlBatchFromClient,
    /// A batch with a producer id must carry a sequence number.
    #[error("batch has a producer id but no sequence number")]
    MissingSequence,
    /// A control batch that is not a well-formed commit/abort marker.
    #[error("malformed control batch")]
    BadControlBatch,
}

impl StorageError {
    /// Wraps an `io::Error` with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
