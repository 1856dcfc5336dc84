//! The single writer of one coordinator partition: one task owns the state machine, loads it by
//! replaying the partition, then takes operations from a bounded queue one at a time. An
//! operation's records are appended and replayed into the state at once; its response is held
//! until the high watermark passes them. An operation that writes nothing is answered once every
//! earlier write is committed (at once when none is pending), so no answer ever reflects an
//! uncommitted record. Timers fire between operations and write like operations.
//!
//! When the log fails or leadership is lost the shard stops: pending and queued operations fail
//! and the state is dropped (see the module documentation of `coordinator` for why no rollback is
//! needed).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use streambus_storage::Clock;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::log::{CommitWait, CoordinatorLog, LogBounds};
use super::machine::{
    Batch, CoordinatorMachine, CoordinatorRecord, CoordinatorResult, Deferred, OpContext,
};
use super::timer::Timers;
use super::CoordinatorError;

/// Operations queued for one shard's writer; senders wait when it is full.
pub const QUEUE_OPS_MAX: usize = 1024;
/// Operations (and timer writes) appended but not yet committed; past it the writer takes no
/// new operation until commits catch up.
pub const PENDING_OPS_MAX: usize = 1024;
/// Bytes asked for by one read while loading.
pub const LOAD_READ_BYTES_MAX: usize = 1024 * 1024;
/// Timers fired in one pass before operations get a turn again.
pub const TIMERS_PER_PASS_MAX: usize = 10_000;
/// How soon a timer whose records the log refused fires again.
const TIMER_RETRY_MS: i64 = 1_000;
/// How long loading waits for the records already in the log to be committed.
pub const LOAD_COMMIT_WAIT: Duration = Duration::from_secs(300);

/// Where a shard is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardStatus {
    /// Replaying the partition; operations are refused with `LoadInProgress`.
    Loading,
    Active,
    /// Resigned or failed; operations are refused with `NotCoordinator`.
    Stopped,
}

/// Settings of one shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub topic: String,
    pub partition: u32,
    /// How long an operation may take from being queued to its records being committed.
    pub write_timeout: Duration,
    pub clock: Arc<dyn Clock>,
}

/// Called with the outcome of an operation's write.
type Completion = Box<dyn FnOnce(Result<(), CoordinatorError>) + Send>;

/// A queued operation, type-erased over its response.
trait Operation<M: CoordinatorMachine>: Send {
    /// Runs the operation: its records and how to write them, and how to answer once they are
    /// committed.
    fn run(
        self: Box<Self>,
        machine: &mut M,
        ctx: &mut OpContext<'_, M::TimerKey>,
    ) -> (Vec<CoordinatorRecord>, Batch, Completion);

    /// Answers without running.
    fn fail(self: Box<Self>, error: CoordinatorError);
}

struct Write<F, R> {
    op: F,
    answer: oneshot::Sender<Result<R, CoordinatorError>>,
}

impl<M, F, R> Operation<M> for Write<F, R>
where
    M: CoordinatorMachine,
    F: FnOnce(&mut M, &mut OpContext<'_, M::TimerKey>) -> CoordinatorResult<R> + Send,
    R: Send + 'static,
{
    fn run(
        self: Box<Self>,
        machine: &mut M,
        ctx: &mut OpContext<'_, M::TimerKey>,
    ) -> (Vec<CoordinatorRecord>, Batch, Completion) {
        let CoordinatorResult {
            records,
            response,
            batch,
        } = (self.op)(machine, ctx);
        let answer = self.answer;
        let complete: Completion = Box::new(move |outcome| {
            // The caller may have gone away (its request timed out): nothing to tell.
            let _ = answer.send(outcome.map(|()| response));
        });
        (records, batch, complete)
    }

    fn fail(self: Box<Self>, error: CoordinatorError) {
        let _ = self.answer.send(Err(error));
    }
}

/// Whether an operation may write records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Refused up front when the log cannot take writes (too few in-sync replicas).
    Write,
    /// Never writes: served whether or not the log can take writes.
    Read,
}

struct Queued<M: CoordinatorMachine> {
    operation: Box<dyn Operation<M>>,
    kind: Kind,
    deadline: Instant,
}

/// A write awaiting its commit.
struct Pending {
    last_offset: i64,
    deadline: Instant,
    /// `None` for a timer's write: nobody waits for it.
    complete: Option<Completion>,
    /// Run once committed; dropped unrun otherwise.
    deferred: Vec<Deferred>,
}

impl Pending {
    fn finish(self, outcome: Result<(), CoordinatorError>) {
        let committed = outcome.is_ok();
        if let Some(complete) = self.complete {
            complete(outcome);
        }
        if committed {
            for deferred in self.deferred {
                deferred();
            }
        }
    }
}

/// The handle the runtime and request handlers use to reach a shard.
pub struct ShardHandle<M: CoordinatorMachine> {
    topic: String,
    partition: u32,
    write_timeout: Duration,
    ops: mpsc::Sender<Queued<M>>,
    status: watch::Receiver<ShardStatus>,
    stop: CancellationToken,
}

impl<M: CoordinatorMachine> Clone for ShardHandle<M> {
    fn clone(&self) -> Self {
        ShardHandle {
            topic: self.topic.clone(),
            partition: self.partition,
            write_timeout: self.write_timeout,
            ops: self.ops.clone(),
            status: self.status.clone(),
            stop: self.stop.clone(),
        }
    }
}

impl<M: CoordinatorMachine> std::fmt::Debug for ShardHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardHandle")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("status", &self.status())
            .finish()
    }
}

impl<M: CoordinatorMachine> ShardHandle<M> {
    pub fn status(&self) -> ShardStatus {
        *self.status.borrow()
    }

    /// Waits until the shard has loaded (or stopped); its status then.
    pub async fn loaded(&self) -> ShardStatus {
        let mut status = self.status.clone();
        // The sender lives as long as the shard task; once it is gone the last status stands.
        let waited = status.wait_for(|s| *s != ShardStatus::Loading).await;
        waited.map_or(ShardStatus::Stopped, |s| *s)
    }

    /// Stops the shard (leadership moved): pending and queued operations fail with
    /// `NotCoordinator`.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Runs `op` on the state machine; its response comes back once its records are committed.
    pub async fn write<R, F>(&self, op: F) -> Result<R, CoordinatorError>
    where
        R: Send + 'static,
        F: FnOnce(&mut M, &mut OpContext<'_, M::TimerKey>) -> CoordinatorResult<R> + Send + 'static,
    {
        self.submit(op, Kind::Write).await
    }

    /// Reads the state: answered at once, or once the writes before it are committed.
    pub async fn read<R, F>(&self, read: F) -> Result<R, CoordinatorError>
    where
        R: Send + 'static,
        F: FnOnce(&M) -> R + Send + 'static,
    {
        let op = move |machine: &mut M, _: &mut OpContext<'_, M::TimerKey>| {
            CoordinatorResult::response_only(read(machine))
        };
        self.submit(op, Kind::Read).await
    }

    async fn submit<R, F>(&self, op: F, kind: Kind) -> Result<R, CoordinatorError>
    where
        R: Send + 'static,
        F: FnOnce(&mut M, &mut OpContext<'_, M::TimerKey>) -> CoordinatorResult<R> + Send + 'static,
    {
        match self.status() {
            ShardStatus::Loading => {
                return Err(CoordinatorError::LoadInProgress {
                    topic: self.topic.clone(),
                    partition: self.partition,
                })
            }
            ShardStatus::Stopped => return Err(self.not_coordinator()),
            ShardStatus::Active => {}
        }
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            operation: Box::new(Write { op, answer }),
            kind,
            deadline: Instant::now() + self.write_timeout,
        };
        self.ops
            .send(queued)
            .await
            .map_err(|_| self.not_coordinator())?;
        // Dropped unanswered only if the shard task ended abnormally.
        answered.await.map_err(|_| self.not_coordinator())?
    }

    fn not_coordinator(&self) -> CoordinatorError {
        not_coordinator(&self.topic, self.partition)
    }
}

/// Starts the shard of `config.partition` with a fresh `machine` over `log`: it loads, then
/// serves until stopped, the log fails or leadership is lost.
pub fn spawn<M, L>(config: ShardConfig, machine: M, log: Arc<L>) -> (ShardHandle<M>, JoinHandle<()>)
where
    M: CoordinatorMachine,
    L: CoordinatorLog,
{
    let (ops_tx, ops_rx) = mpsc::channel(QUEUE_OPS_MAX);
    let (status_tx, status_rx) = watch::channel(ShardStatus::Loading);
    let stop = CancellationToken::new();
    let handle = ShardHandle {
        topic: config.topic.clone(),
        partition: config.partition,
        write_timeout: config.write_timeout,
        ops: ops_tx,
        status: status_rx,
        stop: stop.clone(),
    };
    let shard = Shard {
        config,
        machine,
        timers: Timers::new(),
        log,
        pending: VecDeque::new(),
        last_written: -1,
        high_watermark: 0,
    };
    let task = tokio::spawn(shard.run(ops_rx, status_tx, stop));
    (handle, task)
}

type CommitFuture = Pin<Box<dyn Future<Output = Result<CommitWait, CoordinatorError>> + Send>>;

struct Shard<M: CoordinatorMachine, L> {
    config: ShardConfig,
    machine: M,
    timers: Timers<M::TimerKey>,
    log: Arc<L>,
    /// In offset order (and so in deadline order: every deadline is its queueing time plus the
    /// same timeout).
    pending: VecDeque<Pending>,
    /// The last offset this shard replayed or wrote (-1: none).
    last_written: i64,
    /// The high watermark last seen: offsets below it are committed.
    high_watermark: i64,
}

impl<M: CoordinatorMachine, L: CoordinatorLog> Shard<M, L> {
    async fn run(
        mut self,
        mut ops: mpsc::Receiver<Queued<M>>,
        status: watch::Sender<ShardStatus>,
        stop: CancellationToken,
    ) {
        let (topic, partition) = (self.config.topic.clone(), self.config.partition);
        let loaded = tokio::select! {
            loaded = self.load() => loaded,
            () = stop.cancelled() => Err(not_coordinator(&topic, partition)),
        };
        let stopped_by = match loaded {
            Ok(()) => {
                status.send_replace(ShardStatus::Active);
                self.serve(&mut ops, &stop).await
            }
            Err(error) => error,
        };
        status.send_replace(ShardStatus::Stopped);
        match &stopped_by {
            CoordinatorError::NotCoordinator { .. } => {
                tracing::info!(topic, partition, "coordinator resigned");
            }
            error => tracing::warn!(topic, partition, %error, "coordinator stopped"),
        }
        // Pending writes may still commit, but this shard can no longer tell: the caller
        // retries with the next coordinator.
        for pending in self.pending.drain(..) {
            pending.finish(Err(not_coordinator(&topic, partition)));
        }
        ops.close();
        // Bounded by the queue's capacity: closed, it takes nothing more.
        while let Ok(queued) = ops.try_recv() {
            queued.operation.fail(not_coordinator(&topic, partition));
        }
    }

    /// Replays the partition into the state machine. Every record in the log when leadership
    /// began is waited for first: they will all be committed (a leader never truncates its own
    /// log), and a state without them would diverge from the log this shard appends after.
    async fn load(&mut self) -> Result<(), CoordinatorError> {
        let started = Instant::now();
        let LogBounds {
            start_offset,
            end_offset,
            mut high_watermark,
        } = self.log.bounds().await?;
        if end_offset > high_watermark {
            let deadline = Instant::now() + LOAD_COMMIT_WAIT;
            match self.log.wait_committed(end_offset - 1, deadline).await? {
                CommitWait::Committed {
                    high_watermark: committed,
                } => high_watermark = committed,
                CommitWait::DeadlinePassed => {
                    return Err(CoordinatorError::Timeout {
                        timeout_ms: LOAD_COMMIT_WAIT.as_millis() as u64,
                    })
                }
            }
        }
        let mut next = start_offset;
        let mut replayed = 0u64;
        // Each pass moves `next` forward (checked), so this ends at the high watermark.
        while next < high_watermark {
            let chunk = self.log.read(next, LOAD_READ_BYTES_MAX).await?;
            if chunk.next_offset <= next {
                return Err(CoordinatorError::Codec {
                    offset: next,
                    reason: "a read below the high watermark made no progress".to_owned(),
                });
            }
            for record in &chunk.records {
                self.replay_logged(record)?;
                replayed += 1;
            }
            next = chunk.next_offset;
        }
        self.last_written = next - 1;
        self.high_watermark = next.max(high_watermark);
        let mut ctx = OpContext {
            now_ms: self.config.clock.now_ms(),
            timers: &mut self.timers,
        };
        self.machine.on_loaded(&mut ctx);
        tracing::info!(
            topic = %self.config.topic,
            partition = self.config.partition,
            records = replayed,
            end_offset = next,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "coordinator loaded"
        );
        Ok(())
    }

    /// Serves operations and timers; returns why it stopped.
    async fn serve(
        &mut self,
        ops: &mut mpsc::Receiver<Queued<M>>,
        stop: &CancellationToken,
    ) -> CoordinatorError {
        let mut commit: Option<CommitFuture> = None;
        // Each pass handles one event; ends when the shard stops.
        loop {
            if commit.is_none() {
                commit = self.wait_for_oldest();
            }
            let timer = self.next_timer_instant();
            let accepting = self.pending.len() < PENDING_OPS_MAX;
            tokio::select! {
                biased;
                () = stop.cancelled() => return self.not_coordinator(),
                waited = maybe(commit.as_mut()) => {
                    commit = None;
                    match waited {
                        Ok(CommitWait::Committed { high_watermark }) => self.release(high_watermark),
                        Ok(CommitWait::DeadlinePassed) => self.expire(Instant::now()),
                        Err(error) => return error,
                    }
                }
                () = sleep_until(timer) => {
                    if let Err(error) = self.fire_timers().await {
                        return error;
                    }
                }
                queued = ops.recv(), if accepting => {
                    let Some(queued) = queued else {
                        return self.not_coordinator();
                    };
                    if let Err(error) = self.run_operation(queued).await {
                        return error;
                    }
                }
            }
        }
    }

    /// A wait for the oldest pending write's commit, if any is pending, until the earliest
    /// deadline among them.
    fn wait_for_oldest(&self) -> Option<CommitFuture> {
        let oldest = self.pending.front()?;
        let deadline = self.pending.iter().map(|p| p.deadline).min()?;
        let (log, last_offset) = (self.log.clone(), oldest.last_offset);
        Some(Box::pin(async move {
            log.wait_committed(last_offset, deadline).await
        }))
    }

    fn next_timer_instant(&self) -> Option<Instant> {
        let deadline_ms = self.timers.next_deadline_ms()?;
        let wait_ms = deadline_ms
            .saturating_sub(self.config.clock.now_ms())
            .max(0);
        Some(Instant::now() + Duration::from_millis(wait_ms as u64))
    }

    /// Answers the pending writes below `high_watermark`.
    fn release(&mut self, high_watermark: i64) {
        self.high_watermark = self.high_watermark.max(high_watermark);
        while self
            .pending
            .front()
            .is_some_and(|p| p.last_offset < self.high_watermark)
        {
            if let Some(pending) = self.pending.pop_front() {
                pending.finish(Ok(()));
            }
        }
    }

    /// Fails the pending writes whose deadline passed. Their records stay in the state and the
    /// log, and may still commit: a write with work waiting on its commit (the markers of a
    /// prepared transaction) stays pending, unanswered, so that the work runs if it does — or
    /// a transaction would stay prepared with nobody to write its markers.
    fn expire(&mut self, now: Instant) {
        let timeout_ms = self.config.write_timeout.as_millis() as u64;
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for mut pending in self.pending.drain(..) {
            if pending.deadline > now {
                kept.push_back(pending);
                continue;
            }
            if let Some(complete) = pending.complete.take() {
                complete(Err(CoordinatorError::Timeout { timeout_ms }));
            }
            if !pending.deferred.is_empty() {
                pending.deadline = now + self.config.write_timeout;
                kept.push_back(pending);
            }
        }
        self.pending = kept;
    }

    async fn run_operation(&mut self, queued: Queued<M>) -> Result<(), CoordinatorError> {
        if queued.deadline <= Instant::now() {
            let timeout_ms = self.config.write_timeout.as_millis() as u64;
            queued
                .operation
                .fail(CoordinatorError::Timeout { timeout_ms });
            return Ok(());
        }
        if queued.kind == Kind::Write {
            // Refused before it runs, so the state stays as the log has it and the shard keeps
            // serving (a failed append would stop it).
            if let Err(error) = self.log.writable() {
                queued.operation.fail(error);
                return Ok(());
            }
        }
        let now_ms = self.config.clock.now_ms();
        // Timer changes are undone if the log refuses the operation's records.
        self.timers.begin_undo();
        let mut ctx = OpContext {
            now_ms,
            timers: &mut self.timers,
        };
        let (records, batch, complete) = queued.operation.run(&mut self.machine, &mut ctx);
        let deferred = self.machine.take_deferred();
        if records.is_empty() && !matches!(batch, Batch::Marker { .. }) {
            self.timers.keep_changes();
            let pending = Pending {
                last_offset: self.last_written,
                deadline: queued.deadline,
                complete: Some(complete),
                deferred,
            };
            if self.last_written < self.high_watermark {
                pending.finish(Ok(()));
            } else {
                self.pending.push_back(pending);
            }
            return Ok(());
        }
        let written = self.write(records, batch, now_ms).await;
        if matches!(written, Err(CoordinatorError::Refused(_))) {
            self.timers.undo_changes();
        } else {
            self.timers.keep_changes();
        }
        match written {
            Ok(last_offset) => {
                self.pending.push_back(Pending {
                    last_offset,
                    deadline: queued.deadline,
                    complete: Some(complete),
                    deferred,
                });
                Ok(())
            }
            // Nothing was written: the state is as the log has it, and the shard serves on.
            Err(error @ CoordinatorError::Refused(_)) => {
                complete(Err(error));
                Ok(())
            }
            Err(error) => {
                complete(Err(error.clone()));
                Err(error)
            }
        }
    }

    /// Runs the due timers, writing what they return.
    async fn fire_timers(&mut self) -> Result<(), CoordinatorError> {
        let now_ms = self.config.clock.now_ms();
        // One at a time: a callback may cancel or move another due timer, which must then not
        // fire (Kafka's runtime drops such a timer as "overridden or cancelled"). Bounded: a
        // callback only schedules timers in the future of `now_ms`, or this would spin.
        for _ in 0..TIMERS_PER_PASS_MAX {
            let Some(key) = self.timers.pop_due(now_ms) else {
                break;
            };
            self.timers.begin_undo();
            let mut ctx = OpContext {
                now_ms,
                timers: &mut self.timers,
            };
            let records = self.machine.on_timer(key.clone(), &mut ctx);
            let deferred = self.machine.take_deferred();
            let last_offset = if records.is_empty() {
                self.timers.keep_changes();
                self.last_written
            } else {
                match self.write(records, Batch::Plain, now_ms).await {
                    Ok(last_offset) => {
                        self.timers.keep_changes();
                        last_offset
                    }
                    Err(CoordinatorError::Refused(error)) => {
                        // Nothing changed: the timer fires again a little later.
                        tracing::warn!(topic = %self.config.topic, partition = self.config.partition, %error, "a timer's records were refused");
                        self.timers.undo_changes();
                        self.timers
                            .schedule(key, now_ms.saturating_add(TIMER_RETRY_MS));
                        continue;
                    }
                    Err(error) => return Err(error),
                }
            };
            let pending = Pending {
                last_offset,
                deadline: Instant::now() + self.config.write_timeout,
                complete: None,
                deferred,
            };
            if last_offset < self.high_watermark {
                pending.finish(Ok(()));
            } else {
                self.pending.push_back(pending);
            }
        }
        Ok(())
    }

    /// Appends `records` as a batch of kind `batch` and replays them into the state; returns
    /// the last offset.
    async fn write(
        &mut self,
        records: Vec<CoordinatorRecord>,
        batch: Batch,
        now_ms: i64,
    ) -> Result<i64, CoordinatorError> {
        let appended = self.log.append(records.clone(), batch, now_ms).await?;
        debug_assert!(appended.base_offset > self.last_written, "offsets increase");
        match batch {
            Batch::Plain => {
                for (offset, record) in (appended.base_offset..).zip(&records) {
                    self.replay_one(offset, Some(&record.key), record.value.as_deref())?;
                }
            }
            Batch::Transactional { producer_id, .. } => {
                for (offset, record) in (appended.base_offset..).zip(&records) {
                    self.machine
                        .replay_transactional(
                            offset,
                            producer_id,
                            Some(&record.key),
                            record.value.as_deref(),
                        )
                        .map_err(|error| CoordinatorError::Replay {
                            offset,
                            reason: error.0,
                        })?;
                }
            }
            Batch::Marker {
                producer_id,
                commit,
                ..
            } => {
                let offset = appended.base_offset;
                self.machine
                    .replay_marker(offset, producer_id, commit)
                    .map_err(|error| CoordinatorError::Replay {
                        offset,
                        reason: error.0,
                    })?;
            }
        }
        self.last_written = appended.last_offset;
        Ok(appended.last_offset)
    }

    /// Replays one record read back from the log: a marker, a transactional record or a
    /// plain one.
    fn replay_logged(&mut self, record: &super::log::LoggedRecord) -> Result<(), CoordinatorError> {
        let offset = record.offset;
        let replayed = match record.marker {
            Some(commit) => self
                .machine
                .replay_marker(offset, record.producer_id, commit),
            None if record.producer_id >= 0 => self.machine.replay_transactional(
                offset,
                record.producer_id,
                record.key.as_deref(),
                record.value.as_deref(),
            ),
            None => self
                .machine
                .replay(offset, record.key.as_deref(), record.value.as_deref()),
        };
        replayed.map_err(|error| CoordinatorError::Replay {
            offset,
            reason: error.0,
        })
    }

    fn replay_one(
        &mut self,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), CoordinatorError> {
        self.machine
            .replay(offset, key, value)
            .map_err(|error| CoordinatorError::Replay {
                offset,
                reason: error.0,
            })
    }

    fn not_coordinator(&self) -> CoordinatorError {
        not_coordinator(&self.config.topic, self.config.partition)
    }
}

fn not_coordinator(topic: &str, partition: u32) -> CoordinatorError {
    CoordinatorError::NotCoordinator {
        topic: topic.to_owned(),
        partition,
    }
}

/// Awaits `future` if there is one, else never completes.
async fn maybe<F: Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `instant` if there is one, else never completes.
async fn sleep_until(instant: Option<Instant>) {
    match instant {
        Some(instant) => tokio::time::sleep_until(instant).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::log::MemoryLog;
    use crate::coordinator::test_machine::{
        delete, put, shard_config, KvMachine, NOT_YET, TEST_WAIT,
    };

    async fn active_shard(log: &Arc<MemoryLog>) -> (ShardHandle<KvMachine>, JoinHandle<()>) {
        let (handle, task) = spawn(shard_config(TEST_WAIT), KvMachine::default(), log.clone());
        let status = tokio::time::timeout(TEST_WAIT, handle.loaded()).await;
        assert_eq!(status.ok(), Some(ShardStatus::Active));
        (handle, task)
    }

    #[tokio::test]
    async fn a_write_is_answered_only_once_committed_and_fails_when_leadership_is_lost() {
        let log = Arc::new(MemoryLog::new("__test_state", 0));
        let (shard, _task) = active_shard(&log).await;

        let first = tokio::spawn({
            let shard = shard.clone();
            async move { shard.write(put("a", "1")).await }
        });
        assert!(log.wait_end_offset(1, TEST_WAIT).await, "appended");
        let mut first = first;
        assert!(
            tokio::time::timeout(NOT_YET, &mut first).await.is_err(),
            "answered before the high watermark passed it"
        );
        log.commit_all();
        let answer = tokio::time::timeout(TEST_WAIT, first)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.unwrap(), None, "nothing replaced");

        let read = shard.read(|kv| kv.map.get("a").cloned());
        let read = tokio::time::timeout(TEST_WAIT, read).await.unwrap();
        assert_eq!(
            read.unwrap().as_deref(),
            Some("1"),
            "nothing pending: answered at once"
        );

        // A read behind an uncommitted write waits for it, so it never shows uncommitted state.
        let second = tokio::spawn({
            let shard = shard.clone();
            async move { shard.write(put("a", "2")).await }
        });
        assert!(log.wait_end_offset(2, TEST_WAIT).await);
        let mut read = tokio::spawn({
            let shard = shard.clone();
            async move { shard.read(|kv| kv.map.get("a").cloned()).await }
        });
        assert!(tokio::time::timeout(NOT_YET, &mut read).await.is_err());
        log.set_high_watermark(2);
        let second = tokio::time::timeout(TEST_WAIT, second).await.unwrap();
        assert_eq!(second.unwrap().unwrap().as_deref(), Some("1"));
        let read = tokio::time::timeout(TEST_WAIT, read).await.unwrap();
        assert_eq!(read.unwrap().unwrap().as_deref(), Some("2"));

        let third = tokio::spawn({
            let shard = shard.clone();
            async move { shard.write(put("b", "3")).await }
        });
        assert!(log.wait_end_offset(3, TEST_WAIT).await);
        log.resign();
        let third = tokio::time::timeout(TEST_WAIT, third)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(third, Err(CoordinatorError::NotCoordinator { .. })),
            "{third:?}"
        );
        let after = tokio::time::timeout(TEST_WAIT, shard.write(put("c", "4"))).await;
        assert!(matches!(
            after.unwrap(),
            Err(CoordinatorError::NotCoordinator { .. })
        ));
        assert_eq!(shard.status(), ShardStatus::Stopped);
    }

    #[tokio::test]
    async fn a_stopped_shard_fails_its_pending_writes() {
        let log = Arc::new(MemoryLog::new("__test_state", 0));
        let (shard, task) = active_shard(&log).await;
        let pending = tokio::spawn({
            let shard = shard.clone();
            async move { shard.write(put("a", "1")).await }
        });
        assert!(log.wait_end_offset(1, TEST_WAIT).await);
        shard.stop();
        let pending = tokio::time::timeout(TEST_WAIT, pending).await.unwrap();
        assert!(matches!(
            pending.unwrap(),
            Err(CoordinatorError::NotCoordinator { .. })
        ));
        tokio::time::timeout(TEST_WAIT, task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_write_not_committed_in_time_times_out() {
        let log = Arc::new(MemoryLog::new("__test_state", 0));
        let config = shard_config(Duration::from_millis(50));
        let (shard, _task) = spawn(config, KvMachine::default(), log.clone());
        assert_eq!(shard.loaded().await, ShardStatus::Active);
        let answer = tokio::time::timeout(TEST_WAIT, shard.write(put("a", "1"))).await;
        assert!(matches!(
            answer.unwrap(),
            Err(CoordinatorError::Timeout { timeout_ms: 50 })
        ));
        assert_eq!(
            shard.status(),
            ShardStatus::Active,
            "a timeout keeps serving"
        );
    }

    #[tokio::test]
    async fn records_written_by_one_shard_are_replayed_into_a_fresh_one() {
        let log = Arc::new(MemoryLog::new("__test_state", 0));
        let (first, task) = active_shard(&log).await;
        for (key, value) in [("a", "1"), ("b", "2"), ("a", "3")] {
            let write = tokio::spawn({
                let first = first.clone();
                let (key, value) = (key.to_owned(), value.to_owned());
                async move { first.write(put(&key, &value)).await }
            });
            let end = log.end_offset() + 1;
            assert!(log.wait_end_offset(end, TEST_WAIT).await);
            log.commit_all();
            tokio::time::timeout(TEST_WAIT, write)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        let tombstone = tokio::spawn({
            let first = first.clone();
            async move { first.write(delete("b")).await }
        });
        assert!(log.wait_end_offset(4, TEST_WAIT).await);
        log.commit_all();
        tokio::time::timeout(TEST_WAIT, tombstone)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let state = first.read(|kv| kv.clone()).await.unwrap();
        first.stop();
        task.await.unwrap();

        // Appended by the last leader but not yet committed when the new one starts: loading
        // waits for it, since the new leader's own writes come after it.
        let late = crate::coordinator::CoordinatorRecord::new("late", "5");
        log.append(vec![late], Batch::Plain, 0).await.unwrap();
        let (second, _task) = spawn(shard_config(TEST_WAIT), KvMachine::default(), log.clone());
        assert!(tokio::time::timeout(NOT_YET, second.loaded())
            .await
            .is_err());
        assert!(matches!(
            second.write(put("x", "y")).await,
            Err(CoordinatorError::LoadInProgress { .. })
        ));
        log.commit_all();
        assert_eq!(second.loaded().await, ShardStatus::Active);
        let replayed = second.read(|kv| kv.clone()).await.unwrap();
        let mut expected = state.map.clone();
        expected.insert("late".to_owned(), "5".to_owned());
        assert_eq!(replayed.map, expected);
        assert_eq!(
            replayed.offsets,
            vec![0, 1, 2, 3, 4],
            "every record, in order"
        );
        assert_eq!(state.offsets, vec![0, 1, 2, 3], "applied as written");
    }

    #[tokio::test]
    async fn too_few_in_sync_replicas_refuse_writes_but_not_reads_and_the_shard_serves_on() {
        let log = Arc::new(MemoryLog::new("__test_state", 0));
        let (shard, _task) = active_shard(&log).await;
        log.refuse_writes(true);
        let refused = tokio::time::timeout(TEST_WAIT, shard.write(put("a", "1"))).await;
        assert!(matches!(
            refused.unwrap(),
            Err(CoordinatorError::NotEnoughReplicas { .. })
        ));
        assert_eq!(log.end_offset(), 0, "nothing appended");
        let read = tokio::time::timeout(TEST_WAIT, shard.read(|kv| kv.map.len())).await;
        assert_eq!(read.unwrap().unwrap(), 0);
        log.refuse_writes(false);
        let write = tokio::spawn({
            let shard = shard.clone();
            async move { shard.write(put("a", "1")).await }
        });
        assert!(log.wait_end_offset(1, TEST_WAIT).await);
        log.commit_all();
        let answer = tokio::time::timeout(TEST_WAIT, write).await.unwrap();
        assert_eq!(answer.unwrap().unwrap(), None);
    }

    #[tokio::test]
    async fn a_batch_the_log_refuses_fails_its_request_and_the_shard_serves_on() {
        let log = Arc::new(MemoryLog::new("__test_state", 0));
        let (shard, _task) = active_shard(&log).await;
        log.reject_batches(true);
        let refused = tokio::time::timeout(TEST_WAIT, shard.write(put("a", "1"))).await;
        assert!(matches!(
            refused.unwrap(),
            Err(CoordinatorError::Refused(_))
        ));
        assert_eq!(log.end_offset(), 0, "nothing appended");
        assert_eq!(shard.status(), ShardStatus::Active, "still serving");
        log.reject_batches(false);
        let write = tokio::spawn({
            let shard = shard.clone();
            async move { shard.write(put("a", "1")).await }
        });
        assert!(log.wait_end_offset(1, TEST_WAIT).await);
        log.commit_all();
        let answer = tokio::time::timeout(TEST_WAIT, write).await.unwrap();
        assert_eq!(answer.unwrap().unwrap(), None);
        let read = tokio::time::timeout(TEST_WAIT, shard.read(|kv| kv.map.clone())).await;
        assert_eq!(
            read.unwrap().unwrap().get("a").map(String::as_str),
            Some("1")
        );
    }

    #[tokio::test]
    async fn a_refused_write_leaves_the_timers_as_they_were() {
        let log = Arc::new(MemoryLog::new("__test_state", 0));
        let (shard, _task) = active_shard(&log).await;
        log.reject_batches(true);
        // The operation schedules a timer (which would write a tombstone when it fires) and
        // writes a record; the log refuses the record, so the timer must not exist.
        let op = |_: &mut KvMachine, ctx: &mut OpContext<'_, String>| {
            ctx.timers.schedule("a".to_owned(), ctx.now_ms + 20);
            CoordinatorResult::new(vec![CoordinatorRecord::new("a", "1")], ())
        };
        let refused = tokio::time::timeout(TEST_WAIT, shard.write(op)).await;
        assert!(matches!(
            refused.unwrap(),
            Err(CoordinatorError::Refused(_))
        ));
        log.reject_batches(false);
        assert!(
            !log.wait_end_offset(1, NOT_YET * 3).await,
            "no timer fired: nothing was written"
        );
    }

    #[tokio::test]
    async fn a_record_the_state_machine_refuses_stops_the_shard_and_fails_the_next_load() {
        let log = Arc::new(MemoryLog::new("__test_state", 0));
        let (shard, task) = active_shard(&log).await;
        let not_utf8 = |_: &mut KvMachine, _: &mut OpContext<'_, String>| {
            CoordinatorResult::new(vec![CoordinatorRecord::new("k", vec![0xff])], ())
        };
        let answer = tokio::time::timeout(TEST_WAIT, shard.write(not_utf8)).await;
        assert!(matches!(
            answer.unwrap(),
            Err(CoordinatorError::Replay { offset: 0, .. })
        ));
        tokio::time::timeout(TEST_WAIT, task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shard.status(), ShardStatus::Stopped);

        log.commit_all();
        let (fresh, _task) = spawn(shard_config(TEST_WAIT), KvMachine::default(), log.clone());
        let status = tokio::time::timeout(TEST_WAIT, fresh.loaded()).await;
        assert_eq!(
            status.ok(),
            Some(ShardStatus::Stopped),
            "the load fails too"
        );
    }

    /// Schedules timers `b` (10 ms), `a` (20 ms) and `c` (15 ms, then cancelled).
    fn schedule_timers(
        _kv: &mut KvMachine,
        ctx: &mut OpContext<'_, String>,
    ) -> CoordinatorResult<()> {
        ctx.timers.schedule("a".to_owned(), ctx.now_ms + 20);
        ctx.timers.schedule("b".to_owned(), ctx.now_ms + 10);
        ctx.timers.schedule("c".to_owned(), ctx.now_ms + 15);
        ctx.timers.cancel(&"c".to_owned());
        CoordinatorResult::response_only(())
    }

    #[tokio::test]
    async fn timers_write_in_deadline_order_and_cancelled_ones_do_not() {
        let log = Arc::new(MemoryLog::new("__test_state", 0));
        let (shard, _task) = active_shard(&log).await;
        shard.write(schedule_timers).await.unwrap();
        assert!(log.wait_end_offset(2, TEST_WAIT).await, "both timers wrote");
        assert!(
            !log.wait_end_offset(3, NOT_YET).await,
            "the cancelled one did not"
        );
        let keys: Vec<_> = log
            .records()
            .into_iter()
            .map(|r| (r.key.unwrap(), r.value))
            .collect();
        assert_eq!(
            keys,
            vec![
                (bytes::Bytes::from("b"), None),
                (bytes::Bytes::from("a"), None)
            ]
        );
    }
}
