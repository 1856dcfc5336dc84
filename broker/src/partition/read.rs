//! Reads of a partition for its clients: fetches up to the bound their isolation allows (with
//! the aborted transactions read_committed needs), a follower's position recorded first, and
//! the long poll that parks them until enough bytes are there; offset lookups for ListOffsets
//! (refused with `OffsetNotAvailable` while a new leader's high watermark is below its epoch
//! start, as Kafka's `fetchOffsetForTimestamp` does; fetches are never refused for it),
//! OffsetForLeaderEpoch, and DeleteRecords. The async entry points ([`fetch`] and the `async`
//! methods) run their storage calls on blocking threads; the plain methods block.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use streambus_storage::StorageError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use streambus_raft::command::BrokerId;

use super::{Partition, PartitionError, WakeOn};
use crate::telemetry::requests::Waiting;

/// How far a fetch may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// A consumer with read_uncommitted: up to the high watermark.
    HighWatermark,
    /// A consumer with read_committed: up to the last stable offset, with the aborted
    /// transactions of the range.
    LastStable,
    /// A follower: up to the log end.
    LogEnd,
}

/// One partition of a fetch.
#[derive(Debug)]
pub struct ReadTarget {
    pub partition: Arc<Partition>,
    pub fetch_offset: i64,
    pub partition_max_bytes: usize,
    /// Set for a follower's fetch: its position is recorded with the leader before the read.
    pub follower: Option<FollowerFetch>,
}

/// Who fetches as a follower, and the leader epoch the request's lookup checked: the position
/// counts only while this broker still leads at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerFetch {
    pub replica: BrokerId,
    pub leader_epoch: i32,
    /// The follower's broker epoch (Fetch v15+ `ReplicaState.ReplicaEpoch`), -1 if unnamed.
    pub broker_epoch: i64,
}

#[cfg(test)]
impl FollowerFetch {
    /// A fetch by `replica` at `leader_epoch` as broker epoch 1, for tests.
    pub fn at(replica: BrokerId, leader_epoch: i32) -> FollowerFetch {
        FollowerFetch {
            replica,
            leader_epoch,
            broker_epoch: 1,
        }
    }
}

/// The limits of one fetch request.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Bytes of all partitions together; past the first batch returned, strict.
    pub max_bytes: usize,
    /// Answer as soon as this many bytes are there.
    pub min_bytes: usize,
    /// Otherwise wait at most this long for them.
    pub max_wait: Duration,
    pub bound: ReadBound,
}

/// A transaction aborted within a read_committed fetch's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTransaction {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// What a fetch read from one partition. Offsets are -1 where unknown.
#[derive(Debug)]
pub struct PartitionRead {
    pub error: Option<PartitionError>,
    /// Whole record batches.
    pub records: Bytes,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Only for [`ReadBound::LastStable`].
    pub aborted: Option<Vec<AbortedTransaction>>,
}

/// A ListOffsets question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The offset the next consumer record gets: the high watermark or the last stable
    /// offset.
    Latest,
    /// The log start offset.
    Earliest,
    /// The record with the largest timestamp.
    MaxTimestamp,
    /// The first record whose timestamp is at or after this one.
    Timestamp(i64),
}

/// A ListOffsets answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundOffset {
    pub offset: i64,
    /// -1 when the spec was not about a timestamp.
    pub timestamp: i64,
    /// The partition's latest leader epoch, -1 if none.
    pub leader_epoch: i32,
}

/// Records followers' positions, reads every target once, and parks until some partition's
/// high watermark (for a follower: log end) moves while fewer than `min_bytes` came back and
/// `max_wait` has not passed, or `shutdown`. One read per target, in order; a target whose
/// follower position was refused is answered with that error, at once.
pub async fn fetch(
    targets: Vec<ReadTarget>,
    limits: FetchLimits,
    shutdown: &CancellationToken,
) -> Vec<PartitionRead> {
    let targets = Arc::new(targets);
    let mut refused = record_followers(&targets).await;
    let max_wait = if refused.iter().any(Option::is_some) {
        Duration::ZERO
    } else {
        limits.max_wait
    };
    let skipped: Arc<Vec<bool>> = Arc::new(refused.iter().map(Option::is_some).collect());
    let reads = read_until_enough(&targets, &skipped, limits, max_wait, shutdown).await;
    reads
        .into_iter()
        .zip(refused.iter_mut())
        .map(|(read, refused)| refused.take().map_or(read, failed))
        .collect()
}

/// Records the position of each follower target (on a blocking thread: moving the high
/// watermark takes the log's lock, which appends hold while they write). One entry per
/// target: the refusal, if any.
async fn record_followers(targets: &Arc<Vec<ReadTarget>>) -> Vec<Option<PartitionError>> {
    if targets.iter().all(|t| t.follower.is_none()) {
        return targets.iter().map(|_| None).collect();
    }
    let snapshot = targets.clone();
    crate::blocking::spawn(move || {
        snapshot
            .iter()
            .map(|target| {
                let follower = target.follower?;
                target
                    .partition
                    .on_follower_fetch(follower, target.fetch_offset)
                    .err()
            })
            .collect()
    })
    .await
    .unwrap_or_else(|_| {
        tracing::error!("follower fetch bookkeeping panicked");
        targets
            .iter()
            .map(|_| Some(PartitionError::TaskFailed))
            .collect()
    })
}

/// The long poll of [`fetch`].
async fn read_until_enough(
    targets: &Arc<Vec<ReadTarget>>,
    skipped: &Arc<Vec<bool>>,
    limits: FetchLimits,
    max_wait: Duration,
    shutdown: &CancellationToken,
) -> Vec<PartitionRead> {
    let deadline = tokio::time::Instant::now() + max_wait;
    let wake_on = match limits.bound {
        ReadBound::LogEnd => WakeOn::Append,
        ReadBound::HighWatermark | ReadBound::LastStable => WakeOn::HighWatermark,
    };
    // Each pass reads once, then answers or parks until a high watermark moves; the deadline
    // bounds the number of passes.
    loop {
        let waiter = Arc::new(Notify::new());
        for (target, _) in targets
            .iter()
            .zip(skipped.iter())
            .filter(|(_, skip)| !**skip)
        {
            target.partition.add_waiter(&waiter, wake_on);
        }
        let (snapshot, skip) = (targets.clone(), skipped.clone());
        let reads = crate::blocking::spawn(move || read_all(&snapshot, &skip, limits))
            .await
            .unwrap_or_else(|_| {
                tracing::error!("fetch read task panicked");
                targets
                    .iter()
                    .map(|_| failed(PartitionError::TaskFailed))
                    .collect()
            });
        let bytes: usize = reads.iter().map(|r| r.records.len()).sum();
        let failed = reads.iter().any(|r| r.error.is_some());
        if bytes >= limits.min_bytes
            || failed
            || tokio::time::Instant::now() >= deadline
            || reads.is_empty()
        {
            return reads;
        }
        let _waiting = crate::telemetry::requests::waiting(Waiting::Fetch);
        tokio::select! {
            () = waiter.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = shutdown.cancelled() => return reads,
        }
    }
}

/// Reads every target but the skipped ones (blocking), within the byte budgets.
fn read_all(targets: &[ReadTarget], skipped: &[bool], limits: FetchLimits) -> Vec<PartitionRead> {
    let mut remaining = limits.max_bytes;
    let mut total = 0usize;
    targets
        .iter()
        .zip(skipped)
        .map(|(target, skip)| {
            if *skip {
                // Answered with its refusal by the caller.
                return failed(PartitionError::WrongRole("leader"));
            }
            let budget = target.partition_max_bytes.min(remaining);
            let mut read = target
                .partition
                .read(target.fetch_offset, budget, limits.bound);
            // Past the first batch returned, budgets are strict.
            if total > 0 && read.records.len() > remaining {
                read.records = Bytes::new();
                read.aborted = read.aborted.map(|_| Vec::new());
            }
            total += read.records.len();
            remaining = remaining.saturating_sub(read.records.len());
            read
        })
        .collect()
}

fn failed(error: PartitionError) -> PartitionRead {
    PartitionRead {
        error: Some(error),
        records: Bytes::new(),
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        aborted: None,
    }
}

impl Partition {
    /// The last stable offset: read_committed consumers read below it.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        self.log
            .first_unstable_offset()
            .map_or(high_watermark, |unstable| unstable.min(high_watermark))
    }

    /// Reads whole batches from `fetch_offset`, at most `budget` bytes (the first batch even
    /// when larger), up to `bound` (blocking).
    pub(crate) fn read(&self, fetch_offset: i64, budget: usize, bound: ReadBound) -> PartitionRead {
        let high_watermark = self.high_watermark();
        let last_stable_offset = self.last_stable_offset();
        let upper = match bound {
            ReadBound::LastStable => last_stable_offset,
            ReadBound::HighWatermark => high_watermark,
            ReadBound::LogEnd => i64::MAX,
        };
        let result = if budget == 0 {
            // Out of budget: report offsets only (an out-of-range offset is still an error).
            self.log.read(fetch_offset, 0, fetch_offset).map(|mut r| {
                r.records = Bytes::new();
                r
            })
        } else {
            self.log.read(fetch_offset, budget, upper)
        };
        match result {
            Ok(read) => {
                let aborted = (bound == ReadBound::LastStable).then(|| {
                    self.log
                        .aborted_transactions(fetch_offset, upper)
                        .into_iter()
                        .map(|txn| AbortedTransaction {
                            producer_id: txn.producer_id,
                            first_offset: txn.first_offset,
                        })
                        .collect()
                });
                PartitionRead {
                    error: None,
                    records: read.records,
                    high_watermark,
                    last_stable_offset,
                    log_start_offset: read.log_start_offset,
                    aborted,
                }
            }
            Err(error) => {
                if !matches!(error, StorageError::OffsetOutOfRange { .. }) {
                    tracing::warn!(topic = %self.topic, index = self.index, %error, "fetch read failed");
                }
                let mut read = failed(error.into());
                read.high_watermark = high_watermark;
                read.log_start_offset = self.log.log_start_offset();
                read
            }
        }
    }

    /// ListOffsets: the offset `spec` asks for among what `bound` lets a consumer see, or
    /// `None` when no record qualifies; `OffsetNotAvailable` while this new leader's high
    /// watermark is below its epoch start and the answer could go backwards.
    pub async fn list_offset(
        self: &Arc<Self>,
        spec: OffsetSpec,
        bound: ReadBound,
    ) -> Result<Option<FoundOffset>, PartitionError> {
        self.blocking(move |partition| partition.find_offset(spec, bound))
            .await
    }

    fn find_offset(
        &self,
        spec: OffsetSpec,
        bound: ReadBound,
    ) -> Result<Option<FoundOffset>, PartitionError> {
        // Before `upper` is read: the high watermark only grows, so a bound read after a check
        // that passed is past the epoch start too.
        let lagging = self.high_watermark_lags_epoch_start()?;
        let leader_epoch = self.log.latest_epoch().unwrap_or(-1);
        let upper = match bound {
            ReadBound::LastStable => self.last_stable_offset(),
            ReadBound::HighWatermark | ReadBound::LogEnd => self.high_watermark(),
        };
        let found = |offset, timestamp| FoundOffset {
            offset,
            timestamp,
            leader_epoch,
        };
        // Kafka's rule for a timestamp lookup: a committed hit is an answer; no hit is "none"
        // only once the high watermark covers the previous leaders' records, since until then
        // the record asked for may be committed without this leader knowing it yet.
        let committed = |hit: Option<(i64, i64)>| match hit.filter(|(offset, _)| *offset < upper) {
            Some((offset, timestamp)) => Ok(Some(found(offset, timestamp))),
            None if lagging => Err(PartitionError::OffsetNotAvailable),
            None => Ok(None),
        };
        match spec {
            // A new leader's high watermark below its epoch start is lower than the offset its
            // predecessor may have answered: a consumer seeking to the end would go backwards.
            OffsetSpec::Latest if lagging => Err(PartitionError::OffsetNotAvailable),
            OffsetSpec::Latest => Ok(Some(found(upper, -1))),
            // Never refused (as in Kafka): the log start does not depend on the high watermark.
            OffsetSpec::Earliest => Ok(Some(found(self.log.log_start_offset(), -1))),
            OffsetSpec::MaxTimestamp => committed(self.log.max_timestamp_offset()?),
            OffsetSpec::Timestamp(timestamp) if timestamp < 0 => Ok(None),
            OffsetSpec::Timestamp(timestamp) => {
                committed(self.log.offset_for_timestamp(timestamp)?)
            }
        }
    }

    /// Whether this leader's high watermark is still below the offset its leader epoch started
    /// at (Kafka's `leaderEpochStartOffsetOpt` check): true after a leader change until the
    /// followers' fetches show the previous leaders' records committed. Err once this broker no
    /// longer leads.
    fn high_watermark_lags_epoch_start(&self) -> Result<bool, PartitionError> {
        // Under the view's lock: a new epoch cannot replace the start offset in between.
        let view = self.view();
        let view = view.as_ref().ok_or(PartitionError::WrongRole("leader"))?;
        Ok(self.high_watermark() < view.epoch_start_offset)
    }

    /// OffsetForLeaderEpoch: `(epoch, end offset)` for `requested_epoch`, Kafka semantics.
    pub async fn end_offset_for_epoch(
        self: &Arc<Self>,
        requested_epoch: i32,
    ) -> Result<(i32, i64), PartitionError> {
        self.blocking(move |partition| Ok(partition.log.end_offset_for_epoch(requested_epoch)))
            .await
    }

    /// DeleteRecords: moves the log start offset up to `offset` (`None`: the high watermark);
    /// only committed records may go, so an offset past the high watermark is out of range.
    /// Returns the new log start offset.
    pub async fn delete_records(
        self: &Arc<Self>,
        offset: Option<i64>,
    ) -> Result<i64, PartitionError> {
        self.blocking(move |partition| {
            let high_watermark = partition.high_watermark();
            let target = offset.unwrap_or(high_watermark);
            if target < 0 || target > high_watermark {
                return Err(PartitionError::OffsetOutOfRange);
            }
            Ok(partition.log.delete_records_before(target)?)
        })
        .await
    }

    /// Runs `op` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        op: impl FnOnce(&Partition) -> Result<T, PartitionError> + Send + 'static,
    ) -> Result<T, PartitionError> {
        let partition = self.clone();
        crate::blocking::spawn(move || op(&partition))
            .await
            .unwrap_or(Err(PartitionError::TaskFailed))
    }
}
