//! The log a coordinator shard writes through and replays from, as the partition's leader at
//! one leader epoch: append, wait until committed, read committed records. [`MemoryLog`] is an
//! in-memory implementation whose high watermark the test moves; the real one is
//! `partition_log::PartitionLog`.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::machine::{Batch, CoordinatorRecord};
use super::CoordinatorError;

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRecord {
    pub offset: i64,
    /// The producer of a transactional batch's record (or of a marker); -1 otherwise.
    pub producer_id: i64,
    /// `Some(commit)`: a transaction marker (no key, no value).
    pub marker: Option<bool>,
    pub key: Option<Bytes>,
    /// `None`: a tombstone.
    pub value: Option<Bytes>,
}

/// Committed records read from the log, in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub records: Vec<LoggedRecord>,
    /// Where the next read starts (past the last batch read, which compaction may have left
    /// with fewer records than offsets).
    pub next_offset: i64,
}

/// Offsets of one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
}

/// The log's offsets as its leader sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub start_offset: i64,
    pub end_offset: i64,
    /// Offsets below it are committed.
    pub high_watermark: i64,
}

/// How a wait for a commit ended (leadership loss is an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitWait {
    /// The high watermark passed the offset waited for; it was `high_watermark` then.
    Committed { high_watermark: i64 },
    /// The deadline came first.
    DeadlinePassed,
}

/// A coordinator partition's log, used as its leader at one leader epoch. Once that leadership
/// is lost every call fails with [`CoordinatorError::NotCoordinator`].
pub trait CoordinatorLog: Send + Sync + 'static {
    /// Appends `records` as one batch of kind `batch` (not empty, or a marker and empty);
    /// returns their offsets.
    fn append(
        &self,
        records: Vec<CoordinatorRecord>,
        batch: Batch,
        now_ms: i64,
    ) -> impl Future<Output = Result<Appended, CoordinatorError>> + Send;

    /// Waits until the high watermark passes `last_offset`, or until `deadline`.
    fn wait_committed(
        &self,
        last_offset: i64,
        deadline: Instant,
    ) -> impl Future<Output = Result<CommitWait, CoordinatorError>> + Send;

    /// Reads committed records from `from_offset` (the batch holding it, records before it
    /// left out), about `max_bytes` of them but at least one batch if one is committed there.
    fn read(
        &self,
        from_offset: i64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<LogChunk, CoordinatorError>> + Send;

    /// The log's offsets now.
    fn bounds(&self) -> impl Future<Output = Result<LogBounds, CoordinatorError>> + Send;

    /// Whether an append could be accepted now (enough in-sync replicas), checked before an
    /// operation runs. `append` checks again.
    fn writable(&self) -> Result<(), CoordinatorError> {
        Ok(())
    }
}

/// An in-memory [`CoordinatorLog`] for tests: appends are kept as records, and the high
/// watermark moves only when the test says so (`set_high_watermark`, `commit_all`).
#[derive(Debug)]
pub struct MemoryLog {
    topic: String,
    partition: u32,
    state: Mutex<MemoryState>,
    /// Bumped at every change, so waiters re-check.
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
struct MemoryState {
    records: Vec<LoggedRecord>,
    end_offset: i64,
    high_watermark: i64,
    leading: bool,
    /// Appends are refused as if the ISR were too small.
    refusing_writes: bool,
    /// Appends are refused as the log refuses a batch of a fenced producer epoch.
    rejecting_batches: bool,
}

impl MemoryLog {
    /// An empty log led by this broker.
    pub fn new(topic: &str, partition: u32) -> MemoryLog {
        MemoryLog {
            topic: topic.to_owned(),
            partition,
            state: Mutex::new(MemoryState {
                records: Vec::new(),
                end_offset: 0,
                high_watermark: 0,
                leading: true,
                refusing_writes: false,
                rejecting_batches: false,
            }),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut MemoryState)) {
        change(&mut self.lock());
        self.changed.send_modify(|version| *version += 1);
    }

    /// Moves the high watermark forward to `offset` (capped at the log end).
    pub fn set_high_watermark(&self, offset: i64) {
        self.update(|st| st.high_watermark = st.high_watermark.max(offset.min(st.end_offset)));
    }

    /// Commits everything appended so far.
    pub fn commit_all(&self) {
        self.update(|st| st.high_watermark = st.end_offset);
    }

    /// Leadership is lost: appends and waits fail from now on.
    pub fn resign(&self) {
        self.update(|st| st.leading = false);
    }

    /// Leads again (a later epoch), keeping the records.
    pub fn lead(&self) {
        self.update(|st| st.leading = true);
    }

    /// Refuses appends (as with too few in-sync replicas) until called with `false`.
    pub fn refuse_writes(&self, refuse: bool) {
        self.update(|st| st.refusing_writes = refuse);
    }

    /// Refuses every batch as the storage log refuses an older producer epoch, until called
    /// with `false`.
    pub fn reject_batches(&self, reject: bool) {
        self.update(|st| st.rejecting_batches = reject);
    }

    pub fn high_watermark(&self) -> i64 {
        self.lock().high_watermark
    }

    pub fn end_offset(&self) -> i64 {
        self.lock().end_offset
    }

    /// Waits (at most `timeout`) until the log ends at `end_offset` or later; whether it did.
    pub async fn wait_end_offset(&self, end_offset: i64, timeout: std::time::Duration) -> bool {
        let mut changed = self.changed.subscribe();
        let reached = changed.wait_for(|_| self.lock().end_offset >= end_offset);
        let waited = tokio::time::timeout(timeout, reached).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// The records appended so far.
    pub fn records(&self) -> Vec<LoggedRecord> {
        self.lock().records.clone()
    }

    fn not_coordinator(&self) -> CoordinatorError {
        CoordinatorError::NotCoordinator {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    fn leading(&self) -> Result<MutexGuard<'_, MemoryState>, CoordinatorError> {
        let st = self.lock();
        if !st.leading {
            return Err(self.not_coordinator());
        }
        Ok(st)
    }
}

impl CoordinatorLog for MemoryLog {
    async fn append(
        &self,
        records: Vec<CoordinatorRecord>,
        batch: Batch,
        _now_ms: i64,
    ) -> Result<Appended, CoordinatorError> {
        self.writable()?;
        let appended = {
            let mut st = self.leading()?;
            if st.rejecting_batches {
                return Err(CoordinatorError::Refused(Arc::new(
                    streambus_storage::StorageError::InvalidProducerEpoch {
                        producer_id: 1,
                        epoch: 0,
                        current_epoch: 1,
                    },
                )));
            }
            let base_offset = st.end_offset;
            match batch {
                Batch::Marker {
                    producer_id,
                    commit,
                    ..
                } => {
                    assert!(records.is_empty(), "a marker holds no record");
                    let offset = st.end_offset;
                    st.records.push(LoggedRecord {
                        offset,
                        producer_id,
                        marker: Some(commit),
                        key: None,
                        value: None,
                    });
                    st.end_offset += 1;
                }
                Batch::Plain | Batch::Transactional { .. } => {
                    assert!(!records.is_empty(), "a batch has at least one record");
                    let producer_id = match batch {
                        Batch::Transactional { producer_id, .. } => producer_id,
                        _ => -1,
                    };
                    for record in records {
                        let offset = st.end_offset;
                        st.records.push(LoggedRecord {
                            offset,
                            producer_id,
                            marker: None,
                            key: Some(record.key),
                            value: record.value,
                        });
                        st.end_offset += 1;
                    }
                }
            }
            Appended {
                base_offset,
                last_offset: st.end_offset - 1,
            }
        };
        self.changed.send_modify(|version| *version += 1);
        Ok(appended)
    }

    async fn wait_committed(
        &self,
        last_offset: i64,
        deadline: Instant,
    ) -> Result<CommitWait, CoordinatorError> {
        // Subscribed before checking: a change between the check and the wait is not missed.
        let mut changed = self.changed.subscribe();
        // Each pass re-checks after a change; bounded by the deadline.
        loop {
            let high_watermark = self.leading()?.high_watermark;
            if high_watermark > last_offset {
                return Ok(CommitWait::Committed { high_watermark });
            }
            tokio::select! {
                result = changed.changed() => {
                    if result.is_err() {
                        return Err(self.not_coordinator());
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(CommitWait::DeadlinePassed),
            }
        }
    }

    async fn read(&self, from_offset: i64, max_bytes: usize) -> Result<LogChunk, CoordinatorError> {
        let st = self.leading()?;
        let mut records = Vec::new();
        let mut size_bytes = 0;
        let mut next_offset = from_offset;
        for record in st.records.iter() {
            if record.offset < from_offset || record.offset >= st.high_watermark {
                continue;
            }
            if !records.is_empty() && size_bytes >= max_bytes {
                break;
            }
            size_bytes += record.key.as_ref().map_or(0, Bytes::len)
                + record.value.as_ref().map_or(0, Bytes::len);
            next_offset = record.offset + 1;
            records.push(record.clone());
        }
        Ok(LogChunk {
            records,
            next_offset,
        })
    }

    fn writable(&self) -> Result<(), CoordinatorError> {
        if self.lock().refusing_writes {
            return Err(CoordinatorError::NotEnoughReplicas {
                isr: 1,
                min_insync: 2,
            });
        }
        Ok(())
    }

    async fn bounds(&self) -> Result<LogBounds, CoordinatorError> {
        let st = self.leading()?;
        Ok(LogBounds {
            start_offset: 0,
            end_offset: st.end_offset,
            high_watermark: st.high_watermark,
        })
    }
}
