//! Leader appends of producers' batches: the batch header is validated once, the topic's
//! `compression.type` policy applied, `min.insync.replicas` checked for acks=all, and the append
//! made under the role check; then, for acks=all, the wait until the high watermark passes it.
//! [`append_all`] is what the Produce handler calls: every partition of a request is appended on
//! one blocking task, then waited for under one deadline.

use std::sync::Arc;
use std::time::Duration;
use streambus_storage::producer::TxnVerification;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use streambus_storage::batch;
use streambus_storage::{StorageError, ValidatedBatch};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Commit, Partition, PartitionError, PartitionState, Role, WakeOn};
use crate::telemetry::requests::Waiting;
use crate::topic_config::CompressionType;

/// What a producer asked to wait for (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: nothing is sent back.
    None,
    /// `acks=1`: answered once the leader appended.
    Leader,
    /// `acks=all` (-1): answered once the high watermark passed the batch.
    All,
}

impl Acks {
    /// The wire value's meaning; `None` for a value Kafka does not define.
    pub fn from_wire(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// A leader append that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record (of the original, for a retried duplicate).
    pub base_offset: i64,
    pub last_offset: i64,
    /// Broker append time if the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// The leader epoch it was appended at: the acks=all wait holds only while it lasts.
    leader_epoch: i32,
}

impl Partition {
    /// Appends a producer's batch as leader (blocking). The role, and for `acks=all` the ISR
    /// size, are checked under the state lock, so no append slips in after a metadata image
    /// deposed this leader.
    #[cfg(test)]
    pub(crate) fn append_records(
        &self,
        batch: Bytes,
        acks: Acks,
    ) -> Result<Appended, PartitionError> {
        self.append_verified_records(batch, acks, None)
    }

    /// [`Partition::append_records`] for a transactional batch that may open a transaction:
    /// `guard` is its KIP-890 verification's (see [`Partition::begin_verification`]), which
    /// must still be current when it is appended.
    pub(crate) fn append_verified_records(
        &self,
        batch: Bytes,
        acks: Acks,
        guard: Option<u64>,
    ) -> Result<Appended, PartitionError> {
        // Checked first, as Kafka does, so a deposed or under-replicated leader refuses
        // before paying for validation or recompression; checked again under the lock.
        let (compression, max_message_bytes) = {
            let state = self.read_state();
            self.check_leader(&state, None, acks)?;
            let settings = &state.settings;
            (settings.compression, settings.log.max_message_bytes)
        };
        let batch = ValidatedBatch::new(batch).map_err(StorageError::from)?;
        let batch = apply_compression_policy(batch, compression, max_message_bytes)?;
        // Where a metadata image (an ISR shrink, a new leader) may land before the append.
        #[cfg(test)]
        self.before_locked_append.run(self);
        self.append_leader(LeaderBatch::Client(batch, guard), None, acks)
    }

    /// Whether this broker may append as leader (at `leader_epoch`, if given) with `acks`.
    fn check_leader(
        &self,
        state: &PartitionState,
        leader_epoch: Option<i32>,
        acks: Acks,
    ) -> Result<(), PartitionError> {
        if state.role(self.broker_id) != Role::Leader
            || leader_epoch.is_some_and(|epoch| epoch != state.leader_epoch)
        {
            return Err(PartitionError::WrongRole("leader"));
        }
        if acks == Acks::All
            && (state.isr.len() as u64) < u64::from(state.settings.min_insync_replicas)
        {
            return Err(PartitionError::NotEnoughReplicas);
        }
        Ok(())
    }

    /// Appends a coordinator's batch (its records, or transaction markers) as leader at
    /// `leader_epoch` (blocking): refused once this broker leads at another epoch, since the
    /// coordinator's state was loaded at that one. Always checks `min.insync.replicas`, as
    /// Kafka's coordinators write with acks=all.
    pub(crate) fn append_coordinator_records(
        &self,
        batch: Bytes,
        leader_epoch: i32,
        verification: TxnVerification,
    ) -> Result<Appended, PartitionError> {
        let batch = LeaderBatch::Coordinator(batch, verification);
        self.append_leader(batch, Some(leader_epoch), Acks::All)
    }

    /// The append itself. The role, leader epoch and ISR size are checked under the state read
    /// lock held across the storage append, as Kafka's `appendRecordsToLeader` holds
    /// `leaderIsrUpdateLock`: an image changing the ISR or the leader takes the write lock, so
    /// it lands wholly before the check or wholly after the append, never in between.
    fn append_leader(
        &self,
        batch: LeaderBatch,
        leader_epoch: Option<i32>,
        acks: Acks,
    ) -> Result<Appended, PartitionError> {
        let appended = {
            let state = self.read_state();
            self.check_leader(&state, leader_epoch, acks)?;
            let epoch = state.leader_epoch;
            let info = match batch {
                LeaderBatch::Client(batch, guard) => {
                    self.log.append_verified_as_leader(batch, epoch, guard)?
                }
                LeaderBatch::Coordinator(batch, verification) => self
                    .log
                    .append_as_coordinator_verified(batch, epoch, verification)?,
            };
            Appended {
                base_offset: info.base_offset,
                last_offset: info.last_offset,
                log_append_time_ms: info.log_append_time_ms,
                log_start_offset: info.log_start_offset,
                leader_epoch: state.leader_epoch,
            }
        };
        self.wake(super::Wake::AppendWaiters);
        self.advance_high_watermark();
        Ok(appended)
    }

    /// Waits until the high watermark passes `appended`, at most until `deadline`. Fails when
    /// this broker stops leading at the append's epoch first (the batch may be truncated away,
    /// and a follower's high watermark says nothing about it), or when the ISR that committed
    /// it is smaller than `min.insync.replicas` (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    /// committed, but with fewer copies than asked for).
    pub async fn wait_committed(
        &self,
        appended: &Appended,
        deadline: tokio::time::Instant,
        shutdown: &CancellationToken,
    ) -> Result<(), PartitionError> {
        let commit = tokio::select! {
            // A batch already committed is acknowledged even while the broker stops.
            biased;
            commit = self.wait_commit(appended.last_offset, appended.leader_epoch, deadline) => commit,
            () = shutdown.cancelled() => return Err(PartitionError::TimedOut),
        };
        match commit {
            Commit::Deposed => Err(PartitionError::WrongRole("leader")),
            Commit::Pending => Err(PartitionError::TimedOut),
            Commit::Committed { isr_size, .. } => {
                let min_insync = self.read_state().settings.min_insync_replicas;
                if (isr_size as u64) < u64::from(min_insync) {
                    return Err(PartitionError::NotEnoughReplicasAfterAppend);
                }
                Ok(())
            }
        }
    }

    /// Waits until the high watermark passes `last_offset`, appended as leader at
    /// `leader_epoch`, or this broker stops leading at that epoch, or `deadline` (then
    /// [`Commit::Pending`]).
    pub(crate) async fn wait_commit(
        &self,
        last_offset: i64,
        leader_epoch: i32,
        deadline: tokio::time::Instant,
    ) -> Commit {
        // Each pass either returns or waits for a high-watermark move or a role change; bounded
        // by the deadline.
        loop {
            // Registered before the check: a move between the check and the wait still wakes.
            let waiter = Arc::new(Notify::new());
            self.add_waiter(&waiter, WakeOn::HighWatermark);
            let commit = self.commit_state(last_offset, leader_epoch);
            if commit != Commit::Pending || tokio::time::Instant::now() >= deadline {
                return commit;
            }
            tokio::select! {
                () = waiter.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// Test seam: work run once between [`Partition::append_records`]' early check and its locked
/// append.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct BeforeLockedAppend(std::sync::Mutex<Option<BeforeLockedAppendWork>>);

#[cfg(test)]
type BeforeLockedAppendWork = Box<dyn FnOnce(&Partition) + Send>;

#[cfg(test)]
impl BeforeLockedAppend {
    pub(crate) fn set(&self, work: BeforeLockedAppendWork) {
        *self.0.lock().unwrap() = Some(work);
    }

    fn run(&self, partition: &Partition) {
        let work = self.0.lock().unwrap().take();
        if let Some(work) = work {
            work(partition);
        }
    }
}

#[cfg(test)]
impl std::fmt::Debug for BeforeLockedAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeLockedAppend")
    }
}

/// A leader append and who writes it.
#[derive(Debug)]
enum LeaderBatch {
    /// A producer's batch, validated once on arrival: control batches are refused; with the
    /// guard of its transactional verification.
    Client(ValidatedBatch, Option<u64>),
    /// A coordinator's batch on this broker: control batches (transaction markers) allowed;
    /// with how a transactional one is verified.
    Coordinator(Bytes, TxnVerification),
}

/// Appends each `(partition, batch, verification guard)` as leader on one blocking task and,
/// for `acks=all`, waits for each to be committed, all within `timeout`. One outcome per input,
/// in order.
pub async fn append_all(
    appends: Vec<(Arc<Partition>, Bytes, Option<u64>)>,
    acks: Acks,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Vec<Result<Appended, PartitionError>> {
    if appends.is_empty() {
        return Vec::new();
    }
    // One deadline for the whole request, however many partitions it waits for.
    let deadline = tokio::time::Instant::now() + timeout;
    let count = appends.len();
    let appended = crate::blocking::spawn(move || {
        appends
            .into_iter()
            .map(|(partition, batch, guard)| {
                let outcome = partition.append_verified_records(batch, acks, guard);
                if let Err(PartitionError::Storage(error)) = &outcome {
                    log_unexpected(&partition, error);
                }
                (partition, outcome)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(mut outcomes) = appended else {
        // The append task panicked: what was written is unknown, so nothing is acknowledged;
        // the client retries (an idempotent producer's retry is deduplicated).
        tracing::error!("produce append task panicked");
        return (0..count)
            .map(|_| Err(PartitionError::TaskFailed))
            .collect();
    };
    if acks == Acks::All {
        let _waiting = crate::telemetry::requests::waiting(Waiting::Produce);
        for (partition, outcome) in &mut outcomes {
            if let Ok(appended) = outcome {
                if let Err(error) = partition.wait_committed(appended, deadline, shutdown).await {
                    *outcome = Err(error);
                }
            }
        }
    }
    outcomes.into_iter().map(|(_, outcome)| outcome).collect()
}

/// The producer of a batch as its header says it: `(producer id, epoch, transactional)`;
/// `None` when the header does not parse (the append refuses the batch then).
pub fn batch_producer(batch: &Bytes) -> Option<(i64, i16, bool)> {
    let header = batch::BatchHeader::parse(batch).ok()?;
    Some((
        header.producer_id,
        header.producer_epoch,
        header.is_transactional(),
    ))
}

/// Appends a transaction marker (a control batch: `commit` or abort, of `producer_id` at
/// `producer_epoch`, written by the coordinator at `coordinator_epoch`) as leader on a blocking
/// task, and waits until it is committed, as Kafka writes markers (acks=all), at most
/// `timeout`. The partition's producer state ends the producer's transaction with it.
pub async fn append_marker(
    partition: &Arc<Partition>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(), PartitionError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let now_ms = {
        use streambus_storage::Clock;
        streambus_storage::SystemClock.now_ms()
    };
    let batch = streambus_storage::batch::marker_batch(
        producer_id,
        producer_epoch,
        commit,
        coordinator_epoch,
        now_ms,
    )
    .map_err(|e| PartitionError::Storage(StorageError::from(e)))?;
    let leader_epoch = partition.state().leader_epoch;
    let appended = crate::blocking::spawn({
        let partition = partition.clone();
        move || {
            partition.append_coordinator_records(batch, leader_epoch, TxnVerification::NotChecked)
        }
    })
    .await
    .map_err(|_| PartitionError::TaskFailed)??;
    partition
        .wait_committed(&appended, deadline, shutdown)
        .await
}

/// The batch as the topic's `compression.type` wants it: the client's bytes when the codec
/// already matches (or the topic keeps the producer's), otherwise decompressed within
/// `max.message.bytes` and re-encoded with the topic's codec.
fn apply_compression_policy(
    batch: ValidatedBatch,
    compression: CompressionType,
    max_message_bytes: usize,
) -> Result<ValidatedBatch, PartitionError> {
    let CompressionType::Codec(target) = compression else {
        return Ok(batch);
    };
    if batch.header().compression() == target as u8 {
        return Ok(batch);
    }
    let limit = streambus_storage::decompress::limit_for(max_message_bytes);
    let recompressed = recompress(batch, target, limit)?;
    // The encoder's own batch, checked like any other before it is written.
    Ok(ValidatedBatch::new(recompressed).map_err(StorageError::from)?)
}

/// Disk trouble and other surprises are logged; a client's own mistakes are not.
fn log_unexpected(partition: &Partition, error: &StorageError) {
    if !matches!(
        error,
        StorageError::BatchTooLarge { .. }
            | StorageError::InvalidBatch(_)
            | StorageError::OutOfOrderSequence { .. }
            | StorageError::InvalidProducerEpoch { .. }
            | StorageError::TransactionCoordinatorFenced { .. }
    ) {
        tracing::warn!(topic = %partition.topic, index = partition.index, %error, "produce failed");
    }
}

fn recompress(
    batch: ValidatedBatch,
    target: Compression,
    limit: usize,
) -> Result<Bytes, StorageError> {
    let base_offset = batch.header().base_offset;
    let codec_error = |message: String| StorageError::RecordCodec {
        offset: base_offset,
        message,
    };
    let mut buf = batch.into_bytes();
    // A client's batch: decompressed within a bound, never without one.
    let set = streambus_storage::decompress::decode_batch(&mut buf, limit)
        .map_err(|e| codec_error(e.to_string()))?;
    let mut records = set.records;
    let encoded = batch::encode_records(&mut records, target)?;
    Ok(encoded.freeze())
}
