//! One partition replica on this broker: its log, its role as the metadata image last described
//! it (leader, follower or offline), its high watermark, the leader's view of its followers, and
//! the fetches and produce requests parked until the log or the high watermark moves.
//!
//! `Partition` owns the data path: handlers call [`append::append_all`], [`read::fetch`] and the
//! per-partition reads and deletions here, never the log itself. Async entry points run their
//! storage calls on blocking threads inside this module; the plain methods block and are for
//! blocking threads (the replica fetchers' appends, the coordinators' adapter).
//!
//! Modules:
//! - [`append`]: leader appends (validation once, the compression policy, min.insync.replicas)
//!   and the acks=all wait for the high watermark.
//! - [`isr`]: proposing the ISR changes follower progress calls for, and the periodic shrink.
//! - [`log_dir_health`]: a failed log takes the log directory offline; its replicas move away
//!   and come back once it is recovered (Kafka's log-dir failure handling).
//! - [`manager`]: the set of partitions this broker hosts (`PartitionManager`), with its
//!   `registry` (lookups), `reconcile` (kept in step with the metadata image; log directories
//!   through storage's `LogDir`) and `maintenance` (flush, retention, checkpoints, clean close).
//! - [`read`]: fetch reads with their isolation bound and long poll, offset lookups,
//!   OffsetForLeaderEpoch and DeleteRecords.
//! - [`replicas`]: the leader's follower tracking, high watermark and ISR-change rules.

pub mod append;
pub mod isr;
pub mod log_dir_health;
pub mod lso_lag;
mod maintenance;
pub mod manager;
pub mod read;
mod reconcile;
mod registry;
pub mod replicas;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, Weak};

use bytes::Bytes;
use streambus_raft::command::{BrokerId, TopicId};
use streambus_storage::{Log, StorageError};
use tokio::sync::Notify;

use crate::topic_config::TopicSettings;

pub use manager::PartitionManager;
use read::FollowerFetch;
use replicas::LeaderView;

/// A partition's role and settings as of the last metadata image applied to it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionState {
    pub leader: Option<BrokerId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub settings: TopicSettings,
    /// This broker is registered (in this process's incarnation) and not fenced. Until then it
    /// neither leads nor follows: the image may still name it leader at an epoch from before a
    /// restart, and acting on that could serve a log that lost its unflushed tail.
    pub active: bool,
    /// This broker is a replica being added by a reassignment: its catch-up is throttled.
    pub adding: bool,
}

/// What this broker does for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower { leader: BrokerId },
    Offline,
}

impl PartitionState {
    /// Whether the ISR is smaller than `min.insync.replicas` (capped by the replica count, as
    /// Kafka caps it). The leader then keeps the high watermark where it is (KIP-966): what
    /// the controller made an eligible leader replica when the ISR shrank below the minimum
    /// holds every committed record only if nothing is committed without it.
    pub fn under_min_isr(&self) -> bool {
        let min = usize::try_from(self.settings.min_insync_replicas).unwrap_or(usize::MAX);
        self.isr.len() < min.min(self.replicas.len().max(1))
    }

    pub fn role(&self, me: BrokerId) -> Role {
        match self.leader {
            _ if !self.active => Role::Offline,
            Some(leader) if leader == me => Role::Leader,
            Some(leader) => Role::Follower { leader },
            None => Role::Offline,
        }
    }
}

/// Why a partition operation was refused. Handlers turn it into a Kafka code (in
/// `kafka/errors.rs`), the replica fetcher into a retry.
#[derive(Debug)]
pub enum PartitionError {
    /// The partition's role or leader epoch changed: the caller's view is stale. Names the
    /// role the caller assumed.
    WrongRole(&'static str),
    /// `acks=all` while fewer replicas than `min.insync.replicas` are in sync: nothing appended.
    NotEnoughReplicas,
    /// `acks=all`: appended and committed, but by an ISR smaller than `min.insync.replicas`.
    NotEnoughReplicasAfterAppend,
    /// The high watermark did not pass the append before the request's timeout (or the broker
    /// began shutting down).
    TimedOut,
    /// DeleteRecords beyond the high watermark (or below zero).
    OffsetOutOfRange,
    /// ListOffsets on a new leader whose high watermark is still below the offset its leader
    /// epoch started at: the answer could be lower than one a previous leader gave.
    OffsetNotAvailable,
    /// The blocking task running the operation died: its outcome is unknown.
    TaskFailed,
    Storage(StorageError),
}

impl From<StorageError> for PartitionError {
    fn from(error: StorageError) -> Self {
        PartitionError::Storage(error)
    }
}

impl std::fmt::Display for PartitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartitionError::WrongRole(role) => {
                write!(
                    f,
                    "this broker is not the partition's {role} at that leader epoch"
                )
            }
            PartitionError::NotEnoughReplicas => {
                f.write_str("fewer in-sync replicas than min.insync.replicas")
            }
            PartitionError::NotEnoughReplicasAfterAppend => {
                f.write_str("committed by fewer in-sync replicas than min.insync.replicas")
            }
            PartitionError::TimedOut => f.write_str("not committed within the request timeout"),
            PartitionError::OffsetOutOfRange => f.write_str("offset beyond the high watermark"),
            PartitionError::OffsetNotAvailable => {
                f.write_str("the high watermark has not reached this leader epoch's start yet")
            }
            PartitionError::TaskFailed => f.write_str("the storage task failed"),
            PartitionError::Storage(error) => error.fmt(f),
        }
    }
}

/// An ISR change the leader wants the controller to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
    /// The broker epoch each member fetched as (KIP-903).
    pub member_epochs: BTreeMap<BrokerId, i64>,
    /// Identifies this proposal in the leader's view (see `LeaderView::alter_refused`).
    pub seq: u64,
}

impl IsrChange {
    fn new(leader_epoch: i32, proposal: replicas::Proposal) -> IsrChange {
        IsrChange {
            leader_epoch,
            partition_epoch: proposal.base_partition_epoch,
            new_isr: proposal.new_isr,
            member_epochs: proposal.member_epochs,
            seq: proposal.seq,
        }
    }
}

/// What wakes a parked request (besides a role change or the partition closing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeOn {
    /// A consumer fetch or an acks=all produce: the high watermark moved.
    HighWatermark,
    /// A follower fetch: the log grew (or the high watermark moved).
    Append,
}

/// Which parked requests to wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Every one: the high watermark moved, or the role changed.
    All,
    /// Those parked with [`WakeOn::Append`]: the log grew.
    AppendWaiters,
}

/// A parked request and what wakes it.
#[derive(Debug)]
struct Waiter {
    notify: Weak<Notify>,
    on: WakeOn,
}

/// Where a leader's append stands in the wait for its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// This broker no longer leads at the append's epoch: its fate is unknown.
    Deposed,
    /// The high watermark has not passed it yet.
    Pending,
    /// The high watermark passed it: it was this, with this many replicas in sync.
    Committed {
        high_watermark: i64,
        isr_size: usize,
    },
}

/// A partition replica hosted by this broker.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub topic_id: TopicId,
    pub index: u32,
    /// The directory name under `logs/`, also the key of its recovery point.
    pub dir_name: String,
    broker_id: BrokerId,
    log: Arc<Log>,
    state: RwLock<PartitionState>,
    /// Offsets below this are committed: readable by consumers, never truncated.
    high_watermark: AtomicI64,
    /// Set while this broker leads, for the current leader epoch. Lock order: `state` first.
    leader_view: Mutex<Option<LeaderView>>,
    /// Parked fetches and produce requests; dropped from the list when woken. Weak: the request
    /// holds the only strong handle, so a finished request's entry is dead.
    waiters: Mutex<Vec<Waiter>>,
    /// Where this partition, as leader, sends the ISR changes its followers call for. `None`
    /// only in unit tests, which read the changes from the return values instead.
    isr_proposer: Option<isr::IsrProposer>,
    #[cfg(test)]
    before_locked_append: append::BeforeLockedAppend,
}

/// What names a partition replica: its topic, index and log directory.
#[derive(Debug, Clone)]
pub struct PartitionName {
    pub topic: String,
    pub topic_id: TopicId,
    pub index: u32,
    /// The directory name under `logs/`, also the key of its recovery point.
    pub dir_name: String,
}

impl Partition {
    /// A replica over `log`, starting from `checkpointed_high_watermark` (the last one this
    /// broker checkpointed for it, 0 if none).
    fn new(
        name: PartitionName,
        broker_id: BrokerId,
        log: Log,
        state: PartitionState,
        isr_proposer: Option<isr::IsrProposer>,
        checkpointed_high_watermark: i64,
    ) -> Partition {
        // Every process that serves a partition checks its log locks (debug builds), tests that
        // build partitions directly included.
        crate::blocking::install_check();
        // Kafka's replication-offset-checkpoint: a restarted replica starts from the high
        // watermark it had, not 0, so a fallback truncation to it keeps the committed log.
        // Clamped into the log as Kafka's `updateHighWatermark` does: recovery may have cut an
        // unflushed tail below it. From here a leader raises it from its followers' fetches, a
        // follower from its leader's answers.
        let high_watermark = checkpointed_high_watermark
            .min(log.log_end_offset())
            .max(log.log_start_offset());
        let PartitionName {
            topic,
            topic_id,
            index,
            dir_name,
        } = name;
        let partition = Partition {
            topic,
            topic_id,
            index,
            dir_name,
            broker_id,
            log: Arc::new(log),
            state: RwLock::new(state.clone()),
            high_watermark: AtomicI64::new(high_watermark),
            leader_view: Mutex::new(None),
            waiters: Mutex::new(Vec::new()),
            isr_proposer,
            #[cfg(test)]
            before_locked_append: append::BeforeLockedAppend::default(),
        };
        partition.log.on_high_watermark_updated(high_watermark);
        partition.take_role(None, &state, now_ms());
        partition.advance_high_watermark();
        partition
    }

    /// Starts the KIP-890 verification of a transactional write of `producer_id` at `epoch`:
    /// the guard its append must carry, or `None` when the producer has a transaction open here
    /// at that epoch already (nothing to verify). At this epoch only: with transaction version 2
    /// the next transaction has a bumped epoch, and must not join the previous one whose marker
    /// has not landed yet. `epoch_bump`: the producer uses transaction version 2.
    pub async fn begin_verification(
        self: &Arc<Self>,
        producer_id: i64,
        producer_epoch: i16,
        epoch_bump: bool,
    ) -> Option<u64> {
        let partition = self.clone();
        crate::blocking::spawn(move || {
            partition
                .log
                .start_verification(producer_id, producer_epoch, epoch_bump)
        })
        .await
        // No guard: the append then needs a transaction open at that epoch.
        .unwrap_or(Some(0))
    }

    /// Every producer this partition keeps state for (DescribeProducers).
    pub async fn producers(
        self: &Arc<Self>,
    ) -> Vec<(i64, streambus_storage::producer::ProducerEntry)> {
        let partition = self.clone();
        crate::blocking::spawn(move || partition.log.producers())
            .await
            .unwrap_or_default()
    }

    /// The partition log, for this module and the broker's own maintenance and replica
    /// fetchers (never request handlers). Its methods block: call them from blocking threads.
    pub(crate) fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The partition's role and settings.
    pub fn state(&self) -> PartitionState {
        self.read_state().clone()
    }

    fn read_state(&self) -> RwLockReadGuard<'_, PartitionState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn view(&self) -> MutexGuard<'_, Option<LeaderView>> {
        self.leader_view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a new state from the metadata image. Waits for appends in progress, so once this
    /// returns a deposed leader appends nothing more.
    fn set_state(&self, new: PartitionState) {
        let old = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if state.settings.log != new.settings.log {
                if let Err(error) = self.log.set_config(new.settings.log.clone()) {
                    // The role change must apply regardless (a deposed leader must stop
                    // appending); the log keeps its previous settings.
                    tracing::error!(topic = %self.topic, index = self.index, %error, "cannot apply topic configs");
                }
            }
            let old = std::mem::replace(&mut *state, new.clone());
            self.take_role(Some(&old), &new, now_ms());
            old
        };
        let was_leading = old.role(self.broker_id) == Role::Leader;
        let leads_same_epoch =
            new.role(self.broker_id) == Role::Leader && new.leader_epoch == old.leader_epoch;
        self.advance_high_watermark();
        if was_leading && !leads_same_epoch {
            // Parked acks=all produces must learn they lost leadership.
            self.wake(Wake::All);
        }
    }

    /// Stops every role before the partition is deleted: waits for appends in progress, so
    /// nothing is acknowledged into a log about to disappear.
    fn go_offline(&self) {
        let mut offline = self.state();
        offline.active = false;
        self.set_state(offline);
    }

    /// Starts or ends the leader's follower tracking for `new` (called with the state locked).
    fn take_role(&self, old: Option<&PartitionState>, new: &PartitionState, now_ms: i64) {
        let mut view = self.view();
        if new.role(self.broker_id) != Role::Leader {
            *view = None;
            return;
        }
        match view.as_mut() {
            Some(current) if current.leader_epoch == new.leader_epoch => {
                if old.is_some_and(|old| old.replicas != new.replicas) {
                    current.set_replicas(&new.replicas, self.broker_id, now_ms);
                }
                current.on_partition_epoch(new.partition_epoch);
            }
            _ => {
                // Before any append at this epoch, as Kafka's makeLeader does: followers asking
                // about an epoch this replica never wrote in get its exact divergence point.
                if let Err(error) = self.log.assign_leader_epoch(new.leader_epoch) {
                    tracing::error!(topic = %self.topic, index = self.index, %error, "cannot record the new leader epoch");
                }
                *view = Some(LeaderView::new(
                    new.leader_epoch,
                    self.log.log_end_offset(),
                    &new.replicas,
                    self.broker_id,
                    now_ms,
                ));
            }
        }
    }

    /// Whether this broker leads the partition at `leader_epoch`.
    pub fn is_leader_at(&self, leader_epoch: i32) -> bool {
        let state = self.read_state();
        state.role(self.broker_id) == Role::Leader && state.leader_epoch == leader_epoch
    }

    /// For a leader's acks=all wait: where the append ending at `last_offset` at
    /// `leader_epoch` stands. Checked under the state lock, so a deposed leader's later high
    /// watermark (as a follower) is never taken for a commit of its own append.
    fn commit_state(&self, last_offset: i64, leader_epoch: i32) -> Commit {
        let state = self.read_state();
        if state.role(self.broker_id) != Role::Leader || state.leader_epoch != leader_epoch {
            return Commit::Deposed;
        }
        let high_watermark = self.high_watermark();
        if high_watermark > last_offset {
            Commit::Committed {
                high_watermark,
                isr_size: state.isr.len(),
            }
        } else {
            Commit::Pending
        }
    }

    /// The first offset of the log (cheap: no storage lock).
    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    /// The offset the next append gets (cheap: no storage lock).
    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// `(ISR size, min.insync.replicas)` now, read without copying the state.
    pub fn in_sync_replicas(&self) -> (usize, u32) {
        let state = self.read_state();
        (state.isr.len(), state.settings.min_insync_replicas)
    }

    /// The topic's `max.message.bytes` now.
    pub fn max_message_bytes(&self) -> usize {
        self.read_state().settings.log.max_message_bytes
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Where a follower cuts its log when leader epochs cannot locate the divergence (a log
    /// written without epochs, a leader that knows none of ours, epochs still diverging after
    /// the last round): its high watermark, which every later leader holds. After a restart
    /// that is the checkpointed one, so the fallback keeps the committed log rather than
    /// cutting it all and fetching it again.
    pub fn fallback_truncation_offset(&self) -> i64 {
        self.high_watermark().min(self.log.log_end_offset())
    }

    /// Whether this broker follows the partition at `leader_epoch`.
    fn check_follower(
        &self,
        state: &PartitionState,
        leader_epoch: i32,
    ) -> Result<(), PartitionError> {
        match state.role(self.broker_id) {
            Role::Follower { .. } if state.leader_epoch == leader_epoch => Ok(()),
            _ => Err(PartitionError::WrongRole("follower")),
        }
    }

    /// Appends batches fetched from the leader (blocking), takes the leader's high watermark
    /// (capped at this replica's log end) and its log start offset (capped at the high
    /// watermark, as Kafka's followers do), so records deleted on the leader by DeleteRecords
    /// do not come back on a later leader.
    pub fn append_as_follower(
        &self,
        records: Bytes,
        leader_epoch: i32,
        leader_high_watermark: i64,
        leader_log_start: i64,
    ) -> Result<(), PartitionError> {
        let state = self.read_state();
        self.check_follower(&state, leader_epoch)?;
        if !records.is_empty() {
            let end = self.log.log_end_offset();
            let first_base = records
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(end, i64::from_be_bytes);
            if first_base < end && self.log.log_start_offset() == end {
                // An empty log restarted inside a batch (the leader's log start is mid-batch
                // after DeleteRecords): restart it at that batch, as Kafka does.
                tracing::info!(topic = %self.topic, index = self.index, end, first_base, "empty follower log restarted at the leader's first batch");
                self.log.truncate_fully_and_start_at(first_base)?;
            }
            self.log.append_replicated(records)?;
        }
        // Under the state lock: a role change cannot slip between the check and the raise.
        let high_watermark = leader_high_watermark.min(self.log.log_end_offset());
        self.raise_high_watermark(high_watermark);
        let start = leader_log_start.min(self.high_watermark());
        if start > self.log.log_start_offset() {
            tracing::info!(topic = %self.topic, index = self.index, from = self.log.log_start_offset(), to = start, leader_log_start, "follower log start raised to the leader's");
            self.log.delete_records_before(start)?;
        }
        Ok(())
    }

    /// Cuts this follower's log to `offset` (blocking); returns the new log end. The high
    /// watermark follows if the cut went below it (only an unclean leader change does that).
    pub fn truncate_as_follower(
        &self,
        offset: i64,
        leader_epoch: i32,
    ) -> Result<i64, PartitionError> {
        let state = self.read_state();
        self.check_follower(&state, leader_epoch)?;
        let end = self.log.truncate_to(offset)?;
        if self.high_watermark.fetch_min(end, Ordering::AcqRel) > end {
            tracing::warn!(topic = %self.topic, index = self.index, end, "truncated below the high watermark");
            self.log.on_high_watermark_updated(end);
        }
        Ok(end)
    }

    /// Empties this follower's log and restarts it at `offset`: the leader's log starts past it.
    pub fn restart_as_follower_at(
        &self,
        offset: i64,
        leader_epoch: i32,
    ) -> Result<(), PartitionError> {
        let state = self.read_state();
        self.check_follower(&state, leader_epoch)?;
        self.log.truncate_fully_and_start_at(offset)?;
        self.high_watermark.store(offset, Ordering::Release);
        self.log.on_high_watermark_updated(offset);
        Ok(())
    }

    /// A follower fetched at `fetch_offset` (its log end) while this broker led at
    /// `leader_epoch`: updates the leader's view and the high watermark, and proposes the ISR
    /// expansion this fetch calls for, if any. Err when this broker no longer leads at that
    /// epoch or `replica` is not a replica.
    pub fn on_follower_fetch(
        self: &Arc<Self>,
        replica: FollowerFetch,
        fetch_offset: i64,
    ) -> Result<(), PartitionError> {
        if let Some(change) = self.record_follower_fetch(replica, fetch_offset)? {
            self.propose(change);
        }
        Ok(())
    }

    /// Proposes the ISR change this leader's followers call for now, if any (see
    /// [`Partition::isr_maintenance`]).
    pub fn maintain_isr(self: &Arc<Self>, lag_max_ms: i64) {
        if let Some(change) = self.isr_maintenance(lag_max_ms) {
            self.propose(change);
        }
    }

    fn propose(self: &Arc<Self>, change: IsrChange) {
        match &self.isr_proposer {
            Some(proposer) => proposer.propose(self.clone(), change),
            None => {
                // Unit tests only (the broker sets the proposer before opening partitions):
                // nothing to send it to, so it is refused as never applied.
                tracing::warn!(topic = %self.topic, index = self.index, "no ISR proposer: change dropped");
                self.isr_change_refused(change.seq);
            }
        }
    }

    /// The bookkeeping of [`Partition::on_follower_fetch`]; returns the ISR change the fetch
    /// calls for instead of proposing it.
    fn record_follower_fetch(
        &self,
        follower: FollowerFetch,
        fetch_offset: i64,
    ) -> Result<Option<IsrChange>, PartitionError> {
        let replica = follower.replica;
        let change = {
            let state = self.read_state();
            if state.leader_epoch != follower.leader_epoch {
                return Err(PartitionError::WrongRole("leader"));
            }
            let leader_end = self.log.log_end_offset();
            let mut view = self.view();
            let Some(view) = view.as_mut() else {
                return Err(PartitionError::WrongRole("leader"));
            };
            if fetch_offset > leader_end {
                // The read answers OFFSET_OUT_OF_RANGE; a log end the leader does not have is
                // not a position.
                return Ok(None);
            }
            if !view.on_fetch(
                replica,
                follower.broker_epoch,
                fetch_offset,
                leader_end,
                now_ms(),
            ) {
                return Err(PartitionError::WrongRole("replica"));
            }
            let high_watermark = view
                .high_watermark(self.broker_id, &state.isr, leader_end)
                .unwrap_or_else(|| self.high_watermark())
                .max(self.high_watermark());
            view.expansion(replica, &state.isr, high_watermark)
                .map(|new_isr| {
                    let proposal =
                        view.begin_alter(&state.isr, &new_isr, state.partition_epoch, now_ms());
                    IsrChange::new(state.leader_epoch, proposal)
                })
        };
        self.advance_high_watermark();
        Ok(change)
    }

    /// The ISR change this leader's followers call for now, if any: a shrink by the followers
    /// not caught up for `lag_max_ms`, or a pending change whose outcome never showed up in an
    /// image (sent again).
    fn isr_maintenance(&self, lag_max_ms: i64) -> Option<IsrChange> {
        let state = self.read_state();
        let mut view = self.view();
        let view = view.as_mut()?;
        let now = now_ms();
        if let Some(resend) = view.stale_pending(now, lag_max_ms / 2) {
            return Some(IsrChange::new(state.leader_epoch, resend));
        }
        let new_isr = view.shrink(self.broker_id, &state.isr, now, lag_max_ms)?;
        let proposal = view.begin_alter(&state.isr, &new_isr, state.partition_epoch, now);
        Some(IsrChange::new(state.leader_epoch, proposal))
    }

    /// The controller refused ISR change `seq` in a way that proves nothing changed.
    pub fn isr_change_refused(&self, seq: u64) {
        if let Some(view) = self.view().as_mut() {
            view.alter_refused(seq);
        }
        self.advance_high_watermark();
    }

    /// Moves the leader's high watermark to what the in-sync replicas hold, waking parked
    /// requests if it moved.
    fn advance_high_watermark(&self) {
        let high_watermark = {
            let state = self.read_state();
            if state.role(self.broker_id) != Role::Leader || state.under_min_isr() {
                return;
            }
            let leader_end = self.log.log_end_offset();
            let view = self.view();
            match view
                .as_ref()
                .and_then(|v| v.high_watermark(self.broker_id, &state.isr, leader_end))
            {
                Some(high_watermark) => high_watermark,
                None => return,
            }
        };
        self.raise_high_watermark(high_watermark);
    }

    fn raise_high_watermark(&self, high_watermark: i64) {
        let previous = self
            .high_watermark
            .fetch_max(high_watermark, Ordering::AcqRel);
        if high_watermark > previous {
            self.log.on_high_watermark_updated(high_watermark);
            self.wake(Wake::All);
        }
    }

    /// Parks `waiter` until what `on` names happens, or the partition changes role or is
    /// closed.
    pub(crate) fn add_waiter(&self, waiter: &Arc<Notify>, on: WakeOn) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Requests that finished dropped their handle. Pruning here keeps the list bounded by
        // the requests actually parked on an idle partition.
        waiters.retain(|w| w.notify.strong_count() > 0);
        waiters.push(Waiter {
            notify: Arc::downgrade(waiter),
            on,
        });
    }

    /// Wakes the parked requests `wake` names.
    fn wake(&self, wake: Wake) {
        let woken: Vec<Waiter> = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            match wake {
                Wake::All => std::mem::take(&mut *waiters),
                Wake::AppendWaiters => {
                    let (woken, kept) = std::mem::take(&mut *waiters)
                        .into_iter()
                        .partition(|w| w.on == WakeOn::Append);
                    *waiters = kept;
                    woken
                }
            }
        };
        for waiter in woken.iter().filter_map(|w| w.notify.upgrade()) {
            // `notify_one` keeps a permit if the request is not waiting yet, so no wake-up is
            // lost between its registration and its wait.
            waiter.notify_one();
        }
    }
}

/// Wall-clock milliseconds, for the follower-lag rules.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use streambus_storage::LogOptions;

    use tokio_util::sync::CancellationToken;

    use super::append::Acks;
    use super::*;
    use crate::config::BrokerConfig;
    use crate::topic_config::CompressionType;

    const ME: BrokerId = 1;

    /// A batch of `count` small records at base offset 0.
    fn batch(count: usize) -> Bytes {
        streambus_storage::batch::testing::batch(count, 5, b'v', 1_000)
    }

    impl Partition {
        fn append_as_leader(&self, batch: Bytes) -> Result<append::Appended, PartitionError> {
            self.append_records(batch, Acks::Leader)
        }
    }

    fn state(leader: BrokerId, leader_epoch: i32, isr: &[BrokerId]) -> PartitionState {
        let config = BrokerConfig::default();
        PartitionState {
            leader: Some(leader),
            leader_epoch,
            partition_epoch: leader_epoch,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            settings: crate::topic_config::resolve(&config, &Default::default()),
            active: true,
            adding: false,
        }
    }

    fn partition(dir: &std::path::Path, initial: PartitionState) -> Partition {
        let log =
            Log::open(dir, initial.settings.log.clone(), LogOptions::default()).expect("log opens");
        let name = PartitionName {
            topic: "t".into(),
            topic_id: TopicId([7; 16]),
            index: 0,
            dir_name: "t-0".into(),
        };
        Partition::new(name, ME, log, initial, None, 0)
    }

    #[test]
    fn the_leader_commits_what_every_in_sync_follower_fetched_past() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), state(ME, 1, &[1, 2, 3]));
        p.append_as_leader(batch(5)).unwrap();
        assert_eq!(p.high_watermark(), 0, "followers' positions unknown");
        assert_eq!(
            p.record_follower_fetch(FollowerFetch::at(2, 1), 5).unwrap(),
            None
        );
        assert_eq!(p.high_watermark(), 0, "follower 3 unknown");
        p.record_follower_fetch(FollowerFetch::at(3, 1), 2).unwrap();
        assert_eq!(p.high_watermark(), 2);
        p.record_follower_fetch(FollowerFetch::at(3, 1), 5).unwrap();
        assert_eq!(p.high_watermark(), 5);
        assert!(
            p.record_follower_fetch(FollowerFetch::at(9, 1), 5).is_err(),
            "not a replica"
        );
    }

    #[test]
    fn a_caught_up_follower_outside_the_isr_is_proposed_and_holds_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), state(ME, 1, &[1, 2]));
        p.append_as_leader(batch(4)).unwrap();
        p.record_follower_fetch(FollowerFetch::at(2, 1), 4).unwrap();
        assert_eq!(p.high_watermark(), 4);
        p.append_as_leader(batch(2)).unwrap();
        let change = p
            .record_follower_fetch(FollowerFetch::at(3, 1), 4)
            .unwrap()
            .expect("3 qualifies");
        assert_eq!(change.new_isr, vec![1, 2, 3]);
        p.record_follower_fetch(FollowerFetch::at(2, 1), 6).unwrap();
        assert_eq!(p.high_watermark(), 4, "3, being added, is at 4");
        p.isr_change_refused(change.seq);
        assert_eq!(p.high_watermark(), 6, "refused: back to the committed ISR");
    }

    #[test]
    fn a_deposed_leader_refuses_appends_and_a_follower_takes_the_leaders_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), state(ME, 1, &[1]));
        p.append_as_leader(batch(3)).unwrap();
        assert_eq!(p.high_watermark(), 3, "a sole replica commits at once");
        p.set_state(state(2, 2, &[2, 1]));
        assert!(matches!(
            p.append_as_leader(batch(1)),
            Err(PartitionError::WrongRole(_))
        ));
        assert!(
            p.record_follower_fetch(FollowerFetch::at(2, 1), 3).is_err(),
            "no longer leading"
        );
        assert!(matches!(
            p.append_as_follower(Bytes::new(), 1, 3, 0),
            Err(PartitionError::WrongRole(_))
        ));
        let mut tail = BytesMut::from(&batch(2)[..]);
        tail[..8].copy_from_slice(&3i64.to_be_bytes());
        p.append_as_follower(tail.freeze(), 2, 4, 0).unwrap();
        assert_eq!(p.log().log_end_offset(), 5);
        assert_eq!(p.high_watermark(), 4);
        assert_eq!(p.truncate_as_follower(3, 2).unwrap(), 3);
        assert_eq!(p.high_watermark(), 3, "cut below the high watermark");
    }

    #[test]
    fn an_inactive_broker_neither_leads_nor_follows() {
        let mut inactive = state(ME, 1, &[1]);
        inactive.active = false;
        assert_eq!(inactive.role(ME), Role::Offline);
        assert_eq!(state(2, 1, &[2]).role(ME), Role::Follower { leader: 2 });
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), inactive);
        assert!(p.append_as_leader(batch(1)).is_err());
    }

    /// A partition led here (epoch 1) with replicas 1-3, ISR `isr` and
    /// `min.insync.replicas` = `min_insync`, wrapped as the data path uses it.
    fn leader_with(dir: &std::path::Path, isr: &[BrokerId], min_insync: u32) -> Arc<Partition> {
        let mut initial = state(ME, 1, isr);
        initial.settings.min_insync_replicas = min_insync;
        Arc::new(partition(dir, initial))
    }

    fn deadline_in(ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + std::time::Duration::from_millis(ms)
    }

    #[test]
    fn acks_all_below_min_insync_appends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_with(dir.path(), &[1], 2);
        assert!(matches!(
            p.append_records(batch(3), Acks::All),
            Err(PartitionError::NotEnoughReplicas)
        ));
        assert_eq!(p.log().log_end_offset(), 0, "nothing appended");
        p.append_records(batch(3), Acks::Leader)
            .expect("acks=1 does not need the ISR");
        assert_eq!(p.log().log_end_offset(), 3);
    }

    #[test]
    fn the_high_watermark_stays_while_the_isr_is_below_min_insync() {
        // KIP-966: a replica that left an ISR below the minimum became an eligible leader on
        // the promise that nothing is committed without it.
        let dir = tempfile::tempdir().unwrap();
        let p = leader_with(dir.path(), &[1], 2);
        p.append_records(batch(3), Acks::Leader).expect("acks=1");
        p.advance_high_watermark();
        assert_eq!(
            p.high_watermark(),
            0,
            "an ISR of 1 below min.insync.replicas=2"
        );
        let dir = tempfile::tempdir().unwrap();
        let full = leader_with(dir.path(), &[1], 1);
        full.append_records(batch(3), Acks::Leader).expect("acks=1");
        full.advance_high_watermark();
        assert_eq!(full.high_watermark(), 3);
    }

    /// [`leader_with`] from an async test body: opening a log takes its locks.
    async fn leader_off_runtime(
        dir: &std::path::Path,
        isr: &'static [BrokerId],
        min_insync: u32,
    ) -> Arc<Partition> {
        let dir = dir.to_owned();
        crate::testing::off_runtime(move || leader_with(&dir, isr, min_insync)).await
    }

    /// Runs `work` on `p` as the broker does: on a marked blocking thread, never on the
    /// test's runtime thread (debug builds refuse log locks there).
    async fn on_blocking<R, F>(p: &Arc<Partition>, work: F) -> R
    where
        F: FnOnce(&Arc<Partition>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let p = p.clone();
        crate::testing::off_runtime(move || work(&p)).await
    }

    #[tokio::test]
    async fn an_acks_all_append_waits_for_the_high_watermark_and_fails_when_deposed() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_off_runtime(dir.path(), &[1, 2], 2).await;
        let shutdown = CancellationToken::new();
        let appended = on_blocking(&p, |p| p.append_records(batch(4), Acks::All))
            .await
            .unwrap();
        let timed_out = p
            .wait_committed(&appended, deadline_in(20), &shutdown)
            .await;
        assert!(
            matches!(timed_out, Err(PartitionError::TimedOut)),
            "{timed_out:?}"
        );
        let waiting = {
            let p = p.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                p.wait_committed(&appended, deadline_in(10_000), &shutdown)
                    .await
            })
        };
        on_blocking(&p, |p| p.record_follower_fetch(FollowerFetch::at(2, 1), 4))
            .await
            .unwrap();
        let committed = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("woken by the high watermark")
            .unwrap();
        assert!(committed.is_ok(), "{committed:?}");

        let appended = on_blocking(&p, |p| p.append_records(batch(1), Acks::All))
            .await
            .unwrap();
        let waiting = {
            let p = p.clone();
            tokio::spawn(async move {
                p.wait_committed(&appended, deadline_in(10_000), &shutdown)
                    .await
            })
        };
        on_blocking(&p, |p| p.set_state(state(2, 2, &[2, 1]))).await;
        let deposed = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("woken by the role change")
            .unwrap();
        assert!(
            matches!(deposed, Err(PartitionError::WrongRole(_))),
            "{deposed:?}"
        );
    }

    #[test]
    fn a_topic_codec_recompresses_other_batches() {
        use kafka_protocol::records::Compression;
        use streambus_storage::batch::BatchHeader;
        let dir = tempfile::tempdir().unwrap();
        let mut initial = state(ME, 1, &[1]);
        initial.settings.compression = CompressionType::Codec(Compression::Lz4);
        let p = Arc::new(partition(dir.path(), initial));
        p.append_records(batch(3), Acks::Leader).unwrap();
        let read = p.read(0, 1 << 20, read::ReadBound::HighWatermark);
        assert!(read.error.is_none(), "{:?}", read.error);
        let header = BatchHeader::parse(&read.records).unwrap();
        assert_eq!(header.compression(), Compression::Lz4 as u8);
        assert_eq!(header.last_offset(), 2);
    }

    #[tokio::test]
    async fn reads_stop_at_the_bound_their_reader_may_see() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_off_runtime(dir.path(), &[1, 2], 1).await;
        on_blocking(&p, |p| {
            p.append_records(batch(2), Acks::Leader).unwrap();
            p.record_follower_fetch(FollowerFetch::at(2, 1), 2).unwrap();
            p.append_records(batch(3), Acks::Leader).unwrap();
        })
        .await;
        assert_eq!(p.high_watermark(), 2, "follower 2 is at 2");

        let (consumer, follower, committed) = on_blocking(&p, |p| {
            (
                p.read(0, 1 << 20, read::ReadBound::HighWatermark),
                p.read(0, 1 << 20, read::ReadBound::LogEnd),
                p.read(0, 1 << 20, read::ReadBound::LastStable),
            )
        })
        .await;
        let last = |records: &Bytes| {
            let (mut position, mut last) = (0, None);
            // Each pass moves past one whole batch.
            while position < records.len() {
                let header =
                    streambus_storage::batch::BatchHeader::parse(&records[position..]).unwrap();
                last = Some(header.last_offset());
                position += header.total_len();
            }
            last
        };
        assert_eq!(last(&consumer.records), Some(1), "up to the high watermark");
        assert_eq!(last(&follower.records), Some(4), "up to the log end");
        assert_eq!(consumer.high_watermark, 2);
        assert_eq!(committed.aborted, Some(Vec::new()));

        let latest = p
            .list_offset(read::OffsetSpec::Latest, read::ReadBound::HighWatermark)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((latest.offset, latest.leader_epoch), (2, 1));
        assert!(matches!(
            p.delete_records(Some(3)).await,
            Err(PartitionError::OffsetOutOfRange)
        ));
        assert_eq!(p.delete_records(None).await.unwrap(), 2);
        assert_eq!(p.end_offset_for_epoch(1).await.unwrap(), (1, 5));
    }

    #[tokio::test]
    async fn a_long_poll_answers_when_an_append_brings_enough_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_off_runtime(dir.path(), &[1], 1).await;
        let shutdown = CancellationToken::new();
        let limits = read::FetchLimits {
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait: std::time::Duration::from_secs(10),
            bound: read::ReadBound::HighWatermark,
        };
        let target = read::ReadTarget {
            partition: p.clone(),
            fetch_offset: 0,
            partition_max_bytes: 1 << 20,
            follower: None,
        };
        let parked =
            tokio::spawn(async move { read::fetch(vec![target], limits, &shutdown).await });
        let registered = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while p.waiters.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < registered,
                "the fetch never parked"
            );
            tokio::task::yield_now().await;
        }
        on_blocking(&p, |p| p.append_records(batch(2), Acks::Leader))
            .await
            .unwrap();
        let reads = tokio::time::timeout(std::time::Duration::from_secs(10), parked)
            .await
            .expect("woken by the append")
            .unwrap();
        assert_eq!(reads.len(), 1);
        assert!(!reads[0].records.is_empty());
        assert_eq!(reads[0].high_watermark, 2);
    }

    #[test]
    fn a_deposed_or_under_replicated_leader_refuses_before_looking_at_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_with(dir.path(), &[1], 2);
        let garbage = Bytes::from_static(b"not a record batch");
        assert!(matches!(
            p.append_records(garbage.clone(), Acks::All),
            Err(PartitionError::NotEnoughReplicas)
        ));
        assert!(matches!(
            p.append_records(garbage.clone(), Acks::Leader),
            Err(PartitionError::Storage(_))
        ));
        p.set_state(state(2, 2, &[2, 1]));
        assert!(matches!(
            p.append_records(garbage, Acks::Leader),
            Err(PartitionError::WrongRole(_))
        ));
    }

    #[tokio::test]
    async fn a_follower_fetch_records_its_position_and_a_stranger_gets_an_error_and_no_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_off_runtime(dir.path(), &[1, 2], 1).await;
        on_blocking(&p, |p| p.append_records(batch(3), Acks::Leader))
            .await
            .unwrap();
        assert_eq!(p.high_watermark(), 0, "follower 2 has fetched nothing yet");
        let shutdown = CancellationToken::new();
        let limits = read::FetchLimits {
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait: std::time::Duration::from_secs(10),
            bound: read::ReadBound::LogEnd,
        };
        let target = |replica, fetch_offset| read::ReadTarget {
            partition: p.clone(),
            fetch_offset,
            partition_max_bytes: 1 << 20,
            follower: Some(read::FollowerFetch::at(replica, 1)),
        };
        // Caught up: nothing to wait for.
        let caught_up = read::FetchLimits {
            min_bytes: 0,
            ..limits
        };
        let reads = read::fetch(vec![target(2, 3)], caught_up, &shutdown).await;
        assert!(reads[0].error.is_none(), "{:?}", reads[0].error);
        assert_eq!(p.high_watermark(), 3, "follower 2's position moved it");

        // Broker 9 is no replica: refused at once, with no bytes from the shared budget.
        let started = std::time::Instant::now();
        let reads = read::fetch(vec![target(9, 0), target(2, 0)], limits, &shutdown).await;
        assert!(matches!(reads[0].error, Some(PartitionError::WrongRole(_))));
        assert!(reads[0].records.is_empty());
        assert!(!reads[1].records.is_empty(), "the replica still reads");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no long poll"
        );
    }

    #[tokio::test]
    async fn an_isr_shrink_landing_after_the_early_check_refuses_acks_all_and_appends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_off_runtime(dir.path(), &[1, 2], 2).await;
        // The early check passes with ISR {1, 2}; then an image shrinks it to {1}, as one
        // applied between a Produce request's plan and its append would.
        p.before_locked_append.set(Box::new(|p| {
            let mut shrunk = p.state();
            shrunk.isr = vec![ME];
            shrunk.partition_epoch += 1;
            p.set_state(shrunk);
        }));
        let shutdown = CancellationToken::new();
        let appends = vec![(p.clone(), batch(3), None)];
        let outcomes = append::append_all(
            appends,
            Acks::All,
            std::time::Duration::from_secs(10),
            &shutdown,
        )
        .await;
        let refused = outcomes.into_iter().next().expect("one outcome");
        assert!(
            matches!(refused, Err(PartitionError::NotEnoughReplicas)),
            "{refused:?}"
        );
        let error = refused.unwrap_err();
        let code = crate::kafka::errors::code(crate::kafka::errors::Failure::Partition(&error));
        assert_eq!(
            code, 19,
            "NOT_ENOUGH_REPLICAS: nothing written, safe to retry"
        );
        assert_eq!(p.log_end_offset(), 0, "the log end is unchanged");
        assert_eq!(p.in_sync_replicas(), (1, 2), "the shrink did land");
    }

    /// Five records at offsets 0-4 in two batches (0-2, 3-4), record `i` timestamped `1_000 + i`.
    fn timed_records() -> Bytes {
        use kafka_protocol::records::Compression;
        use streambus_storage::batch::testing::{batch_values, Producer};
        let head = batch_values(&["a", "b", "c"], 1_000, Producer::NONE, Compression::None);
        let mut tail = BytesMut::from(
            &batch_values(&["d", "e"], 1_003, Producer::NONE, Compression::None)[..],
        );
        tail[..8].copy_from_slice(&3i64.to_be_bytes());
        let mut records = BytesMut::from(&head[..]);
        records.extend_from_slice(&tail);
        records.freeze()
    }

    #[tokio::test]
    async fn a_new_leader_refuses_latest_and_unanswered_timestamp_lookups_until_its_high_watermark_reaches_its_epoch_start(
    ) {
        use read::{OffsetSpec, ReadBound};
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().to_owned();
        let p = crate::testing::off_runtime(move || Arc::new(partition(&at, state(2, 1, &[2, 1]))))
            .await;
        // A follower at epoch 1 holds offsets 0-4, of which the leader said 0-2 are committed.
        on_blocking(&p, |p| p.append_as_follower(timed_records(), 1, 3, 0))
            .await
            .unwrap();
        assert_eq!(p.high_watermark(), 3);
        // Elected at epoch 2: the epoch starts at 5, and follower 2 has not fetched yet.
        on_blocking(&p, |p| p.set_state(state(ME, 2, &[1, 2]))).await;
        let lookup = |spec, bound| {
            let p = p.clone();
            async move { p.list_offset(spec, bound).await }
        };
        let hw = ReadBound::HighWatermark;
        for bound in [hw, ReadBound::LastStable] {
            let latest = lookup(OffsetSpec::Latest, bound).await;
            assert!(
                matches!(latest, Err(PartitionError::OffsetNotAvailable)),
                "{bound:?}: {latest:?}"
            );
        }
        let max = lookup(OffsetSpec::MaxTimestamp, hw).await;
        assert!(
            matches!(max, Err(PartitionError::OffsetNotAvailable)),
            "the largest timestamp is at offset 4, not known committed: {max:?}"
        );
        let later = lookup(OffsetSpec::Timestamp(2_000), hw).await;
        assert!(
            matches!(later, Err(PartitionError::OffsetNotAvailable)),
            "no hit may only mean not committed yet: {later:?}"
        );
        let hit = lookup(OffsetSpec::Timestamp(1_001), hw).await.unwrap();
        assert_eq!(
            hit.map(|f| f.offset),
            Some(1),
            "a committed hit is answered"
        );
        let earliest = lookup(OffsetSpec::Earliest, hw).await.unwrap();
        assert_eq!(
            earliest.map(|f| f.offset),
            Some(0),
            "EARLIEST is never refused"
        );
        let read = on_blocking(&p, |p| p.read(0, 1 << 20, ReadBound::HighWatermark)).await;
        assert!(
            read.error.is_none(),
            "fetch is not refused: {:?}",
            read.error
        );
        assert!(!read.records.is_empty(), "the committed batch is served");

        // Follower 2 reaches the epoch start: the answers are the committed ones again.
        on_blocking(&p, |p| p.record_follower_fetch(FollowerFetch::at(2, 2), 5))
            .await
            .unwrap();
        assert_eq!(p.high_watermark(), 5);
        let latest = lookup(OffsetSpec::Latest, hw).await.unwrap();
        assert_eq!(latest.map(|f| (f.offset, f.leader_epoch)), Some((5, 2)));
        let max = lookup(OffsetSpec::MaxTimestamp, hw).await.unwrap();
        assert_eq!(max.map(|f| f.timestamp), Some(1_004));
        let later = lookup(OffsetSpec::Timestamp(2_000), hw).await.unwrap();
        assert_eq!(later, None, "no record that late: no offset, no error");
    }
}
