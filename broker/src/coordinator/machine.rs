//! The contract of a coordinator state machine: rebuilt from its partition by `replay`, changed
//! by operations that return *(records to write, response)*, woken by timers that also return
//! records. Pure: no I/O and no clock (time comes in as `now_ms`), so a state machine is
//! deterministic in tests and every replica's replay reaches the same state.

use std::fmt::Debug;

use bytes::Bytes;

use super::timer::Timers;

/// One record a coordinator writes to its partition: a key and a value, or no value for a
/// tombstone (compaction then removes the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorRecord {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

impl CoordinatorRecord {
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        CoordinatorRecord {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    pub fn tombstone(key: impl Into<Bytes>) -> Self {
        CoordinatorRecord {
            key: key.into(),
            value: None,
        }
    }
}

/// How an operation's records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batch {
    /// A batch of the coordinator's own (no producer).
    #[default]
    Plain,
    /// A transactional batch of this producer (TxnOffsetCommit): what it holds only takes
    /// effect once a commit marker of the producer follows.
    Transactional {
        producer_id: i64,
        producer_epoch: i16,
        /// The KIP-890 verification guard taken for it (see `Partition::begin_verification`);
        /// `None` when the producer had a transaction open on the partition already, which the
        /// write then still needs.
        guard: Option<u64>,
    },
    /// No records: a transaction marker (control batch) of this producer, written by the
    /// transaction coordinator at `coordinator_epoch`.
    Marker {
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    },
}

/// What an operation returns: the records to write and the response released once they are
/// committed. Records empty (and no marker): the response is released once every record
/// written before is committed, so it never reflects an uncommitted write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorResult<R> {
    pub records: Vec<CoordinatorRecord>,
    pub response: R,
    pub batch: Batch,
}

impl<R> CoordinatorResult<R> {
    pub fn new(records: Vec<CoordinatorRecord>, response: R) -> Self {
        CoordinatorResult {
            records,
            response,
            batch: Batch::Plain,
        }
    }

    /// A result that writes nothing.
    pub fn response_only(response: R) -> Self {
        CoordinatorResult {
            records: Vec::new(),
            response,
            batch: Batch::Plain,
        }
    }
}

/// What an operation, a timer callback or `on_loaded` may use besides the state: the time and
/// the state machine's timers.
#[derive(Debug)]
pub struct OpContext<'a, K: Ord + Clone> {
    /// Milliseconds since the Unix epoch, read once by the shard for this call.
    pub now_ms: i64,
    pub timers: &'a mut Timers<K>,
}

/// Something a state machine lets happen only once the records of the call that produced it are
/// committed: typically answering another waiting request (the members of a group waiting for
/// its leader's assignment). Dropped unrun when the write fails or the shard stops, which the
/// waiting side sees as its sender gone.
pub type Deferred = Box<dyn FnOnce() + Send>;

/// Why `replay` refused a record; the load (or the shard) fails with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError(pub String);

/// A coordinator state machine (one per partition of its internal topic).
///
/// Persistent state changes only in [`CoordinatorMachine::replay`]: the shard replays an
/// operation's records right after appending them, so the state after a write is exactly what
/// replaying the log gives. Operations (closures given to the runtime) and timer callbacks may
/// change volatile state (members' heartbeats, timers) directly.
pub trait CoordinatorMachine: Send + 'static {
    /// Identifies a timer of this machine (a member's session, a group's rebalance).
    type TimerKey: Ord + Clone + Debug + Send + 'static;

    /// Applies the record at `offset` (read from the log or just written). `value: None` is a
    /// tombstone.
    fn replay(
        &mut self,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), ReplayError>;

    /// Called once the partition has been replayed, before any operation: schedules the timers
    /// the loaded state needs.
    /// Applies a record of a transactional batch of `producer_id` (written by a
    /// [`Batch::Transactional`] operation, or read back while loading). By default it is
    /// replayed as any record.
    fn replay_transactional(
        &mut self,
        offset: i64,
        producer_id: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), ReplayError> {
        let _ = producer_id;
        self.replay(offset, key, value)
    }

    /// Applies a transaction marker of `producer_id`: its transactional records take effect
    /// (`commit`) or are dropped. By default nothing happens.
    fn replay_marker(
        &mut self,
        offset: i64,
        producer_id: i64,
        commit: bool,
    ) -> Result<(), ReplayError> {
        let _ = (offset, producer_id, commit);
        Ok(())
    }

    fn on_loaded(&mut self, ctx: &mut OpContext<'_, Self::TimerKey>) {
        let _ = ctx;
    }

    /// Timer `key` expired: returns the records to write (expired offsets, a member removed).
    fn on_timer(
        &mut self,
        key: Self::TimerKey,
        ctx: &mut OpContext<'_, Self::TimerKey>,
    ) -> Vec<CoordinatorRecord>;

    /// The completions the last operation or timer callback queued: the shard runs them once
    /// that call's records (or, when it wrote none, every earlier record) are committed.
    fn take_deferred(&mut self) -> Vec<Deferred> {
        Vec::new()
    }
}
