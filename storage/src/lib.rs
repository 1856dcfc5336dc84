//! StreamBus storage: every partition's data on one broker, and the broker-local key-value store.
//!
//! Owns: segment files of Kafka v2 record batches and their sparse indexes, crash recovery,
//! retention, compaction, leader-epoch and producer state, and a RocksDB-backed KV store.
//! Must not touch: networking, raft, or Kafka request/response types (it knows the record batch
//! format, which is also its on-disk format, and nothing else of the wire protocol).
//!
//! Modules:
//! - [`batch`]: v2 batch header validation (and [`ValidatedBatch`], a batch checked once) and
//!   in-place patching.
//! - [`blocking`]: the debug-build check that log locks are taken only where blocking is
//!   allowed (the broker says where).
//! - [`checkpoint`]: atomic, checksummed small files.
//! - [`clock`]: the time source (wall clock, or manual in tests).
//! - [`config`]: per-log settings (Kafka topic configs).
//! - [`decompress`]: record-batch decoding with a bound on the decompressed size.
//! - [`epoch`]: leader-epoch cache (epoch → start offset), for truncation by OffsetForLeaderEpoch.
//! - [`error`]: the crate's error enum.
//! - [`failure`]: how a log reports the i/o failure that made it refuse appends (Kafka's
//!   log-dir failure channel), and the fsync failpoint of fault-injection tests.
//! - [`index`]: sparse offset and time indexes of a segment.
//! - [`kv`]: the key-value store trait, its RocksDB and in-memory implementations.
//! - [`log`]: the partition log: append, read, roll, flush, recovery, retention, truncation.
//! - [`log_dir`]: `<data_dir>/logs/`, the partition directories' layout (topic-id markers,
//!   deletion by rename, stray logs set aside).
//! - [`offset_checkpoint`]: a log directory's file of one offset per partition (Kafka's
//!   `replication-offset-checkpoint`, for high watermarks).
//! - [`producer`]: producer state (idempotence, transactions, LSO bound) and its snapshots.
//! - [`metrics`]: metric names and the recording helpers (via the `metrics` facade).
//! - [`recovery_points`]: per-partition recovery points in the KV store.
//! - [`segment`]: one segment file with its indexes; scans and byte-range reads.
//! - [`txn_index`]: per-segment index of aborted transactions, for read_committed fetches.

pub mod batch;
pub mod blocking;
pub mod checkpoint;
pub mod clean_shutdown;
pub mod clock;
pub mod config;
pub mod decompress;
pub mod epoch;
pub mod error;
pub mod failure;
pub mod index;
pub mod kv;
pub mod log;
pub mod log_dir;
pub mod metrics;
pub mod offset_checkpoint;
pub mod page_cache;
pub mod producer;
pub mod recovery_points;
pub mod segment;
pub mod txn_index;

pub use batch::{OffsetGaps, ValidatedBatch};
pub use blocking::install_blocking_check;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CleanupPolicy, LogConfig};
pub use error::{BatchError, Result, StorageError};
pub use failure::FailureReporter;
pub use kv::{KvOp, KvStore, MemKv, RocksKv};
pub use log::{AppendInfo, CompactionOutcome, Log, LogOptions, ReadResult, RetentionOutcome};
pub use log_dir::{LogDir, LogDirEntry, PreparedDir};
pub use offset_checkpoint::{CheckpointedOffset, OffsetCheckpointFile};
pub use recovery_points::RecoveryPoints;
