//! The coordinator runtime: runs state machines whose state lives in an internal, replicated,
//! compacted topic (`__consumer_offsets`, `__transaction_state`), Kafka's `coordinator-common`
//! model. One runtime per internal topic; it creates the topic on first use, becomes the
//! coordinator of each partition this broker leads (replaying the partition into a fresh state
//! machine), resigns when leadership moves, and runs one single writer per partition whose
//! answers are released only once their records are committed.
//!
//! Modules:
//! - [`machine`]: the contract a coordinator state machine implements (pure: no I/O, no clock).
//! - [`timer`]: keyed timers with deadlines passed in.
//! - [`log`]: the log a shard writes and replays through, and an in-memory implementation.
//! - [`codec`]: coordinator records to and from Kafka record batches.
//! - [`partition_log`]: the log over a real [`crate::partition::Partition`].
//! - [`shard`]: the single writer of one partition.
//! - [`runtime`]: leadership hook, routing of keys to partitions, the shards of one topic.
//! - [`route`]: Kafka's `abs(String.hashCode) % N`.
//! - [`topic`]: creating the internal topic on first use.
//!
//! State and its records: an operation gets the state machine mutably (for volatile state such
//! as heartbeats and timers) and returns the records to write with its response; the shard
//! appends them and then applies them to the state through [`CoordinatorMachine::replay`], the
//! same function that rebuilds the state from the log. Persistent state therefore changes only
//! through replay, and the state after a write equals what replaying the log gives. There is no
//! rollback: when an append fails or leadership is lost the shard is thrown away, and the next
//! election rebuilds a fresh one from the committed log. That is safe because a shard serves
//! nothing it has not appended, answers nothing before it is committed, and a failed or deposed
//! shard answers nothing more.

pub mod codec;
pub mod log;
pub mod machine;
pub mod partition_log;
pub mod route;
pub mod runtime;
pub mod schema;
pub mod shard;
pub mod timer;
pub mod topic;

#[cfg(test)]
mod test_machine;

use std::sync::Arc;

pub use log::{CoordinatorLog, LogChunk, LoggedRecord, MemoryLog};
pub use machine::{
    Batch, CoordinatorMachine, CoordinatorRecord, CoordinatorResult, Deferred, OpContext,
};
pub use route::{java_string_hash, partition_for};
pub use runtime::{CoordinatorRuntime, RuntimeConfig};
pub use timer::Timers;
pub use topic::InternalTopic;

/// Why a coordinator operation failed. Each case maps to one Kafka error code (the mapping lives
/// in `kafka/errors.rs` once handlers use the runtime).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordinatorError {
    /// This broker does not (or no longer) coordinate the partition (Kafka's NOT_COORDINATOR).
    #[error("this broker is not the coordinator of {topic} partition {partition}")]
    NotCoordinator { topic: String, partition: u32 },
    /// The partition's state is being replayed (COORDINATOR_LOAD_IN_PROGRESS).
    #[error("the coordinator of {topic} partition {partition} is loading its state")]
    LoadInProgress { topic: String, partition: u32 },
    /// The internal topic does not exist yet or cannot be created now
    /// (COORDINATOR_NOT_AVAILABLE).
    #[error("the coordinator topic {topic} is not available: {reason}")]
    NotAvailable { topic: String, reason: String },
    /// The records were appended but not committed within the write timeout
    /// (REQUEST_TIMED_OUT). They may still commit; the state already holds them.
    #[error("the write was not committed within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// Fewer in-sync replicas than `min.insync.replicas`: nothing was appended
    /// (NOT_ENOUGH_REPLICAS, which Kafka's coordinators answer as COORDINATOR_NOT_AVAILABLE).
    #[error("{isr} in-sync replicas, {min_insync} required")]
    NotEnoughReplicas { isr: usize, min_insync: u32 },
    /// The log refused the batch before writing any of it (a producer epoch older than the
    /// partition's, a batch too large): the request fails with the storage error's code and
    /// the shard serves on, as Kafka's runtime reverts such a write.
    #[error("coordinator log refused the batch")]
    Refused(#[source] Arc<streambus_storage::StorageError>),
    /// The log failed: the shard stops, and a new one is loaded at the next election.
    #[error("coordinator log")]
    Storage(#[source] Arc<streambus_storage::StorageError>),
    /// A batch in the log cannot be decoded, or a record cannot be encoded.
    #[error("coordinator record batch at offset {offset}: {reason}")]
    Codec { offset: i64, reason: String },
    /// The state machine refused a record while replaying it.
    #[error("cannot replay the record at offset {offset}: {reason}")]
    Replay { offset: i64, reason: String },
    /// Writing the internal topic's creation to the metadata quorum failed.
    #[error("metadata quorum")]
    Metadata(#[source] Arc<streambus_raft::RaftError>),
}

impl From<streambus_storage::StorageError> for CoordinatorError {
    fn from(error: streambus_storage::StorageError) -> Self {
        CoordinatorError::Storage(Arc::new(error))
    }
}
