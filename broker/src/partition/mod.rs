//! One partition replica on this broker: its log, its role as the metadata image last described
//! it (leader, follower or offline), its high watermark, the leader's view of its followers, and
//! the fetches and produce requests parked until the log or the high watermark moves.
//!
//! Modules:
//! - [`manager`]: the set of partitions this broker hosts, kept in step with the metadata image.
//! - [`replicas`]: the leader's follower tracking, high watermark and ISR-change rules.

mod maintenance;
pub mod manager;
mod reconcile;
mod registry;
pub mod replicas;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, Weak};

use bytes::Bytes;
use streambus_raft::command::{BrokerId, TopicId};
use streambus_storage::{AppendInfo, Log, StorageError};
use tokio::sync::Notify;

use crate::topic_config::TopicSettings;

pub use manager::PartitionManager;
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
    pub fn role(&self, me: BrokerId) -> Role {
        match self.leader {
            _ if !self.active => Role::Offline,
            Some(leader) if leader == me => Role::Leader,
            Some(leader) => Role::Follower { leader },
            None => Role::Offline,
        }
    }
}

/// Why a replica operation was refused. (Not the crate's error type: handlers turn it into a
/// Kafka code, the fetcher into a retry.)
#[derive(Debug)]
pub enum ReplicaError {
    /// The partition's role or leader epoch changed: the caller's view is stale. Names the
    /// role the caller assumed.
    WrongRole(&'static str),
    Storage(StorageError),
}

impl From<StorageError> for ReplicaError {
    fn from(error: StorageError) -> Self {
        ReplicaError::Storage(error)
    }
}

impl std::fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaError::WrongRole(role) => {
                write!(
                    f,
                    "this broker is not the partition's {role} at that leader epoch"
                )
            }
            ReplicaError::Storage(error) => error.fmt(f),
        }
    }
}

/// An ISR change the leader wants the controller to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
    /// Identifies this proposal in the leader's view (see `LeaderView::alter_refused`).
    pub seq: u64,
}

/// A parked request and what wakes it.
#[derive(Debug)]
struct Waiter {
    notify: Weak<Notify>,
    /// Woken by appends too (follower fetches), not only by high-watermark moves.
    on_append: bool,
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
}

impl Partition {
    fn new(
        topic: String,
        topic_id: TopicId,
        index: u32,
        dir_name: String,
        broker_id: BrokerId,
        log: Log,
        state: PartitionState,
    ) -> Partition {
        // Not checkpointed yet: a leader recomputes it from its followers' fetches, a follower
        // takes it from its leader, a sole replica from its own log end.
        let high_watermark = 0;
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
        };
        partition.log.on_high_watermark_updated(high_watermark);
        partition.take_role(None, &state, now_ms());
        partition.advance_high_watermark();
        partition
    }

    /// The partition log. Its methods block: call them from blocking threads.
    pub fn log(&self) -> &Arc<Log> {
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
            self.wake_waiters(true);
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

    /// For a leader's acks=all wait: `None` if this broker no longer leads at `leader_epoch`;
    /// otherwise whether the high watermark passed `last_offset`, with the ISR size then.
    /// Checked under the state lock, so a deposed leader's later high watermark (as a follower)
    /// is never taken for a commit of its own append.
    pub fn committed(&self, last_offset: i64, leader_epoch: i32) -> Option<Option<usize>> {
        let state = self.read_state();
        if state.role(self.broker_id) != Role::Leader || state.leader_epoch != leader_epoch {
            return None;
        }
        Some((self.high_watermark() > last_offset).then_some(state.isr.len()))
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// The last stable offset: read_committed consumers read below it.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        self.log
            .first_unstable_offset()
            .map_or(high_watermark, |unstable| unstable.min(high_watermark))
    }

    /// Appends a producer's batch as leader at `leader_epoch` (blocking). The role is checked
    /// under the state lock, so no append slips in after a metadata image deposed this leader.
    pub fn append_as_leader(
        &self,
        batch: Bytes,
        leader_epoch: i32,
    ) -> Result<AppendInfo, ReplicaError> {
        let info = {
            let state = self.read_state();
            if state.role(self.broker_id) != Role::Leader || state.leader_epoch != leader_epoch {
                return Err(ReplicaError::WrongRole("leader"));
            }
            self.log.append_as_leader(batch, leader_epoch)?
        };
        self.wake_waiters(false);
        self.advance_high_watermark();
        Ok(info)
    }

    /// Whether this broker follows the partition at `leader_epoch`.
    fn check_follower(
        &self,
        state: &PartitionState,
        leader_epoch: i32,
    ) -> Result<(), ReplicaError> {
        match state.role(self.broker_id) {
            Role::Follower { .. } if state.leader_epoch == leader_epoch => Ok(()),
            _ => Err(ReplicaError::WrongRole("follower")),
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
    ) -> Result<(), ReplicaError> {
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
                self.log.truncate_fully_and_start_at(first_base)?;
            }
            self.log.append_replicated(records)?;
        }
        // Under the state lock: a role change cannot slip between the check and the raise.
        let high_watermark = leader_high_watermark.min(self.log.log_end_offset());
        self.raise_high_watermark(high_watermark);
        let start = leader_log_start.min(self.high_watermark());
        if start > self.log.log_start_offset() {
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
    ) -> Result<i64, ReplicaError> {
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
    ) -> Result<(), ReplicaError> {
        let state = self.read_state();
        self.check_follower(&state, leader_epoch)?;
        self.log.truncate_fully_and_start_at(offset)?;
        self.high_watermark.store(offset, Ordering::Release);
        self.log.on_high_watermark_updated(offset);
        Ok(())
    }

    /// A follower fetched at `fetch_offset` (its log end): updates the leader's view and the
    /// high watermark, and returns the ISR change this fetch calls for, if any (the caller
    /// proposes it). Err when the broker is not a follower of this partition.
    pub fn record_follower_fetch(
        &self,
        replica: BrokerId,
        fetch_offset: i64,
        leader_epoch: i32,
    ) -> Result<Option<IsrChange>, ReplicaError> {
        let change = {
            let state = self.read_state();
            if state.leader_epoch != leader_epoch {
                return Err(ReplicaError::WrongRole("leader"));
            }
            let leader_end = self.log.log_end_offset();
            let mut view = self.view();
            let Some(view) = view.as_mut() else {
                return Err(ReplicaError::WrongRole("leader"));
            };
            if fetch_offset > leader_end {
                // The read answers OFFSET_OUT_OF_RANGE; a log end the leader does not have is
                // not a position.
                return Ok(None);
            }
            if !view.on_fetch(replica, fetch_offset, leader_end, now_ms()) {
                return Err(ReplicaError::WrongRole("replica"));
            }
            let high_watermark = view
                .high_watermark(self.broker_id, &state.isr, leader_end)
                .unwrap_or_else(|| self.high_watermark())
                .max(self.high_watermark());
            view.expansion(replica, &state.isr, high_watermark)
                .map(|new_isr| {
                    let seq =
                        view.begin_alter(&state.isr, &new_isr, state.partition_epoch, now_ms());
                    IsrChange {
                        leader_epoch: state.leader_epoch,
                        partition_epoch: state.partition_epoch,
                        new_isr,
                        seq,
                    }
                })
        };
        self.advance_high_watermark();
        Ok(change)
    }

    /// The ISR change this leader's followers call for now, if any (the caller proposes it):
    /// a shrink by the followers not caught up for `lag_max_ms`, or a pending change whose
    /// outcome never showed up in an image (sent again).
    pub fn isr_maintenance(&self, lag_max_ms: i64) -> Option<IsrChange> {
        let state = self.read_state();
        let mut view = self.view();
        let view = view.as_mut()?;
        let now = now_ms();
        if let Some((new_isr, base, seq)) = view.stale_pending(now, lag_max_ms / 2) {
            return Some(IsrChange {
                leader_epoch: state.leader_epoch,
                partition_epoch: base,
                new_isr,
                seq,
            });
        }
        let new_isr = view.shrink(self.broker_id, &state.isr, now, lag_max_ms)?;
        let seq = view.begin_alter(&state.isr, &new_isr, state.partition_epoch, now);
        Some(IsrChange {
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            new_isr,
            seq,
        })
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
            if state.role(self.broker_id) != Role::Leader {
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
            self.wake_waiters(true);
        }
    }

    /// Parks `waiter` until the high watermark moves (or, with `on_append`, the log grows), or
    /// the partition changes role or is closed.
    pub fn add_waiter(&self, waiter: &Arc<Notify>, on_append: bool) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Requests that finished dropped their handle. Pruning here keeps the list bounded by
        // the requests actually parked on an idle partition.
        waiters.retain(|w| w.notify.strong_count() > 0);
        waiters.push(Waiter {
            notify: Arc::downgrade(waiter),
            on_append,
        });
    }

    /// Wakes every parked request (`all`), or only those waiting for appends.
    fn wake_waiters(&self, all: bool) {
        let woken: Vec<Waiter> = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if all {
                std::mem::take(&mut *waiters)
            } else {
                let (woken, kept) = std::mem::take(&mut *waiters)
                    .into_iter()
                    .partition(|w| w.on_append);
                *waiters = kept;
                woken
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
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use streambus_storage::LogOptions;

    use super::*;
    use crate::config::BrokerConfig;

    const ME: BrokerId = 1;

    fn batch(count: usize) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps records in one batch only while offset - sequence is
                // constant; without a producer id the sequence is not checked.
                sequence: i as i32,
                timestamp: 1_000,
                key: None,
                value: Some(Bytes::from_static(b"value")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options).expect("encodes");
        buf.freeze()
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
        Partition::new(
            "t".into(),
            TopicId([7; 16]),
            0,
            "t-0".into(),
            ME,
            log,
            initial,
        )
    }

    #[test]
    fn the_leader_commits_what_every_in_sync_follower_fetched_past() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), state(ME, 1, &[1, 2, 3]));
        p.append_as_leader(batch(5), 1).unwrap();
        assert_eq!(p.high_watermark(), 0, "followers' positions unknown");
        assert_eq!(p.record_follower_fetch(2, 5, 1).unwrap(), None);
        assert_eq!(p.high_watermark(), 0, "follower 3 unknown");
        p.record_follower_fetch(3, 2, 1).unwrap();
        assert_eq!(p.high_watermark(), 2);
        p.record_follower_fetch(3, 5, 1).unwrap();
        assert_eq!(p.high_watermark(), 5);
        assert!(p.record_follower_fetch(9, 5, 1).is_err(), "not a replica");
    }

    #[test]
    fn a_caught_up_follower_outside_the_isr_is_proposed_and_holds_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), state(ME, 1, &[1, 2]));
        p.append_as_leader(batch(4), 1).unwrap();
        p.record_follower_fetch(2, 4, 1).unwrap();
        assert_eq!(p.high_watermark(), 4);
        p.append_as_leader(batch(2), 1).unwrap();
        let change = p
            .record_follower_fetch(3, 4, 1)
            .unwrap()
            .expect("3 qualifies");
        assert_eq!(change.new_isr, vec![1, 2, 3]);
        p.record_follower_fetch(2, 6, 1).unwrap();
        assert_eq!(p.high_watermark(), 4, "3, being added, is at 4");
        p.isr_change_refused(change.seq);
        assert_eq!(p.high_watermark(), 6, "refused: back to the committed ISR");
    }

    #[test]
    fn a_deposed_leader_refuses_appends_and_a_follower_takes_the_leaders_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), state(ME, 1, &[1]));
        p.append_as_leader(batch(3), 1).unwrap();
        assert_eq!(p.high_watermark(), 3, "a sole replica commits at once");
        p.set_state(state(2, 2, &[2, 1]));
        assert!(matches!(
            p.append_as_leader(batch(1), 1),
            Err(ReplicaError::WrongRole(_))
        ));
        assert!(
            p.record_follower_fetch(2, 3, 1).is_err(),
            "no longer leading"
        );
        assert!(matches!(
            p.append_as_follower(Bytes::new(), 1, 3, 0),
            Err(ReplicaError::WrongRole(_))
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
        assert!(p.append_as_leader(batch(1), 1).is_err());
    }
}
