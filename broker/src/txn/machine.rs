//! The state machine of one `__transaction_state` partition (Kafka's `TransactionCoordinator`
//! with its `TransactionStateManager` cache): the transactional ids it coordinates and their
//! transactions. Operations check a request against the id's metadata and return the record of
//! the next metadata; the record is replayed into the state as soon as it is appended (the
//! runtime's rule), and the answer is released once it is committed.
//!
//! Ending a transaction is two-phased, as in Kafka: EndTxn (or a timeout, or a new producer
//! fencing an ongoing transaction) writes PrepareCommit or PrepareAbort; once that record is
//! committed a [`MarkerJob`] goes to the coordinator service, which writes the markers to every
//! partition of the transaction and then calls [`TxnMachine::complete`], which writes
//! CompleteCommit or CompleteAbort. A coordinator that loads a partition resumes the jobs of
//! every transaction still preparing.
//!
//! Pure: time comes in through [`OpContext`]; producer ids are allocated by the caller.

use std::collections::{BTreeSet, HashMap};

use tokio::sync::mpsc;

use super::records::{self, TxnLogValue, TxnState};
use super::state::{TxnMetadata, TxnPartition, NO_PRODUCER_EPOCH};
use super::TxnProblem;
use crate::coordinator::machine::ReplayError;
use crate::coordinator::{
    CoordinatorMachine, CoordinatorRecord, CoordinatorResult, Deferred, OpContext,
};

/// Limits from the `[transactions]` config.
#[derive(Debug, Clone)]
pub struct TxnRules {
    /// `transaction.max.timeout.ms`: a longer `transaction.timeout.ms` is refused.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an id idle this long (no transaction open) is removed.
    pub id_expiration_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub expiration_check_interval_ms: i64,
    /// The finalized `transaction.version`: the value version written (v1 from 1), and the
    /// version the coordinator's own aborts follow.
    pub transaction_version: i16,
}

impl Default for TxnRules {
    fn default() -> Self {
        TxnRules {
            max_timeout_ms: 900_000,
            id_expiration_ms: 7 * 24 * 3_600_000,
            expiration_check_interval_ms: 3_600_000,
            transaction_version: 2,
        }
    }
}

/// A timer of the transaction coordinator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxnTimer {
    /// The ongoing transaction of this id reaches its timeout.
    Timeout(String),
    /// Removal of expired transactional ids, over the whole partition.
    ExpireIds,
}

/// Markers the coordinator service must write for a transaction in PrepareCommit or
/// PrepareAbort, then complete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    pub coordinator_partition: u32,
    /// The leader epoch of the coordinator's partition when it loaded: partition leaders refuse
    /// markers from an older coordinator.
    pub coordinator_epoch: i32,
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub partitions: Vec<TxnPartition>,
}

/// What InitProducerId asks, beyond the transactional id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitRequest {
    pub timeout_ms: i32,
    /// KIP-360: the producer id and epoch the producer had, to bump after an error (`None`:
    /// a new producer).
    pub expected: Option<(i64, i16)>,
    /// A producer id never used before, for a new id or an exhausted epoch (allocated by the
    /// caller; unused otherwise).
    pub fresh_producer_id: i64,
}

/// A transaction as DescribeTransactions and ListTransactions show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedTxn {
    pub transactional_id: String,
    pub metadata: TxnMetadata,
}

/// One partition's transactional ids.
pub struct TxnMachine {
    partition: u32,
    coordinator_epoch: i32,
    rules: TxnRules,
    txns: HashMap<String, TxnMetadata>,
    /// The producer id and epoch each id had before its last KIP-360 bump (Kafka's in-memory
    /// `lastProducerEpoch`, not logged): a retry of a bump whose answer was lost gets the
    /// bumped pair again instead of PRODUCER_FENCED.
    bumped_from: HashMap<String, (i64, i16)>,
    deferred: Vec<Deferred>,
    markers: mpsc::UnboundedSender<MarkerJob>,
}

impl std::fmt::Debug for TxnMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnMachine")
            .field("partition", &self.partition)
            .field("coordinator_epoch", &self.coordinator_epoch)
            .field("txns", &self.txns.len())
            .finish()
    }
}

type Answer<T> = CoordinatorResult<Result<T, TxnProblem>>;

/// Bytes of tombstone keys one expiry pass writes at most (the default `max.message.bytes`
/// is 1 MiB).
const EXPIRY_BATCH_BYTES_MAX: usize = 256 * 1024;
/// A record's framing beyond its key, over-estimated.
const RECORD_OVERHEAD_BYTES: usize = 24;
/// How soon a pass that left expired ids behind runs again.
const EXPIRY_NEXT_BATCH_MS: i64 = 100;

fn refuse<T>(problem: TxnProblem) -> Answer<T> {
    CoordinatorResult::response_only(Err(problem))
}

impl TxnMachine {
    pub fn new(
        partition: u32,
        coordinator_epoch: i32,
        rules: TxnRules,
        markers: mpsc::UnboundedSender<MarkerJob>,
    ) -> TxnMachine {
        TxnMachine {
            partition,
            coordinator_epoch,
            rules,
            txns: HashMap::new(),
            bumped_from: HashMap::new(),
            deferred: Vec::new(),
            markers,
        }
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns.get(transactional_id)
    }

    /// The record of `id`'s next metadata: value v1 (with the previous and next producer ids
    /// and the client's transaction version) once `transaction.version` is 1 or more, as Kafka
    /// writes it.
    fn record(&self, id: &str, next: &TxnMetadata) -> CoordinatorRecord {
        let version = if self.rules.transaction_version >= 1 {
            1
        } else {
            0
        };
        // Ids and topic names are checked against the string limit before they get here.
        CoordinatorRecord::new(
            records::encode_key(id).expect(super::LENGTHS_CHECKED),
            next.to_value()
                .encode(version)
                .expect(super::LENGTHS_CHECKED),
        )
    }

    /// Sends the markers of `next` (a Prepare state) once the record that prepared it is
    /// committed.
    fn markers_after_commit(&mut self, id: &str, next: &TxnMetadata) {
        let job = self.job(id, next);
        let sender = self.markers.clone();
        self.deferred.push(Box::new(move || {
            // The service is gone only when the broker stops.
            let _ = sender.send(job);
        }));
    }

    fn job(&self, id: &str, meta: &TxnMetadata) -> MarkerJob {
        MarkerJob {
            coordinator_partition: self.partition,
            coordinator_epoch: self.coordinator_epoch,
            transactional_id: id.to_owned(),
            producer_id: meta.producer_id,
            producer_epoch: meta.producer_epoch,
            commit: meta.state == TxnState::PrepareCommit,
            partitions: meta.partitions.iter().cloned().collect(),
        }
    }

    /// InitProducerId with a transactional id (Kafka's `handleInitProducerId`): a new id gets
    /// a fresh producer id at epoch 0; a known one gets its epoch bumped, which fences any
    /// older instance. An ongoing transaction is aborted first (its epoch bumped, so its
    /// producer is fenced) and the caller is told CONCURRENT_TRANSACTIONS, to ask again once
    /// the abort completed.
    pub fn init_producer_id(
        &mut self,
        id: &str,
        request: InitRequest,
        ctx: &mut OpContext<'_, TxnTimer>,
    ) -> Answer<(i64, i16)> {
        if request.timeout_ms <= 0 || request.timeout_ms > self.rules.max_timeout_ms {
            return refuse(TxnProblem::InvalidTransactionTimeout);
        }
        let now = ctx.now_ms;
        // An unknown id starts afresh, whatever producer the caller had: its id may have
        // expired while the producer was idle, and Kafka lets such a producer (KIP-360) go on
        // with a new producer id rather than fail it.
        let Some(meta) = self.txns.get(id).cloned() else {
            self.bumped_from.remove(id);
            let next = TxnMetadata {
                producer_id: request.fresh_producer_id,
                previous_producer_id: -1,
                next_producer_id: -1,
                producer_epoch: 0,
                timeout_ms: request.timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                last_update_ms: now,
                client_transaction_version: 0,
            };
            let answer = (next.producer_id, next.producer_epoch);
            return CoordinatorResult::new(vec![self.record(id, &next)], Ok(answer));
        };
        // A transaction ending is waited for before anything else is looked at (Kafka checks a
        // pending transition first).
        if matches!(
            meta.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        ) {
            return refuse(TxnProblem::ConcurrentTransactions);
        }
        if let Some((expected_id, expected_epoch)) = request.expected {
            // KIP-360: only the current producer may bump; a retry of a bump that happened
            // (its answer lost) gets the bumped pair, while nothing else happened since.
            let current = expected_id == meta.producer_id
                && (expected_epoch == meta.producer_epoch || expected_epoch == NO_PRODUCER_EPOCH);
            // A transaction-version-2 EndTxn that ran out of epochs moved the id to a new
            // producer id; the producer that had the old one at its last epoch is that one.
            // Only while nothing has started under the new id: a transaction open under it
            // belongs to whoever holds it now.
            let rotated = expected_id == meta.previous_producer_id
                && expected_epoch >= i16::MAX - 1
                && meta.producer_epoch == 0
                && matches!(
                    meta.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                );
            if rotated {
                return CoordinatorResult::response_only(Ok((
                    meta.producer_id,
                    meta.producer_epoch,
                )));
            }
            if !current {
                let retry = self.bumped_from.get(id) == Some(&(expected_id, expected_epoch))
                    && matches!(
                        meta.state,
                        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    );
                if retry {
                    return CoordinatorResult::response_only(Ok((
                        meta.producer_id,
                        meta.producer_epoch,
                    )));
                }
                return refuse(TxnProblem::ProducerFenced);
            }
        }
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                refuse(TxnProblem::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                // The previous instance's transaction is aborted at a bumped epoch.
                let next = self.fence_and_abort(id, &meta, now, ctx);
                CoordinatorResult::new(
                    vec![self.record(id, &next)],
                    Err(TxnProblem::ConcurrentTransactions),
                )
            }
            TxnState::Empty
            | TxnState::CompleteCommit
            | TxnState::CompleteAbort
            | TxnState::Dead => {
                let mut next = meta.clone();
                match request.expected {
                    Some(_) => {
                        self.bumped_from
                            .insert(id.to_owned(), (meta.producer_id, meta.producer_epoch));
                    }
                    // A new instance: no retry of an earlier bump may come back.
                    None => {
                        self.bumped_from.remove(id);
                    }
                }
                if meta.epoch_exhausted() {
                    next.previous_producer_id = meta.producer_id;
                    next.producer_id = request.fresh_producer_id;
                    next.producer_epoch = 0;
                } else {
                    next.producer_epoch = meta.producer_epoch + 1;
                }
                next.timeout_ms = request.timeout_ms;
                next.state = TxnState::Empty;
                next.partitions.clear();
                next.start_ms = -1;
                next.last_update_ms = now;
                let answer = (next.producer_id, next.producer_epoch);
                CoordinatorResult::new(vec![self.record(id, &next)], Ok(answer))
            }
        }
    }

    /// The metadata of an id whose ongoing transaction is aborted at a bumped epoch (Kafka's
    /// `prepareFenceProducerEpoch` then `prepareAbortOrCommit`): the producer that held the
    /// old epoch can neither write to it nor end it.
    fn fence_and_abort(
        &mut self,
        id: &str,
        meta: &TxnMetadata,
        now: i64,
        ctx: &mut OpContext<'_, TxnTimer>,
    ) -> TxnMetadata {
        let mut next = meta.clone();
        next.producer_epoch = meta.producer_epoch.saturating_add(1);
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now;
        next.previous_producer_id = meta.producer_id;
        if self.rules.transaction_version >= 2 {
            // Version 2: the bump is the abort's own; a version 2 producer whose transaction
            // timed out is not fenced by it (its EndTxn abort at the old epoch is a retry).
            next.client_transaction_version = 2;
        }
        ctx.timers.cancel(&TxnTimer::Timeout(id.to_owned()));
        self.markers_after_commit(id, &next);
        next
    }

    /// Checks a request's producer against the id's metadata (Kafka's order of checks).
    fn producer_check(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<TxnMetadata, TxnProblem> {
        let meta = self
            .txns
            .get(id)
            .ok_or(TxnProblem::InvalidProducerIdMapping)?;
        if meta.producer_id != producer_id {
            return Err(TxnProblem::InvalidProducerIdMapping);
        }
        if meta.producer_epoch != producer_epoch {
            return Err(TxnProblem::ProducerFenced);
        }
        Ok(meta.clone())
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, for the group's offsets partition): the
    /// partitions join the transaction, which becomes Ongoing.
    ///
    /// `client_version` is the transaction version of the request (2 when a partition leader
    /// adds the partition for a Produce v12+ or a TxnOffsetCommit v5+), kept in the metadata.
    /// A transaction still ending is CONCURRENT_TRANSACTIONS before the producer is checked:
    /// after a version 2 EndTxn that ran out of epochs, the producer already holds the new
    /// producer id, which the metadata takes only once the transaction completed.
    pub fn add_partitions(
        &mut self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TxnPartition],
        client_version: i16,
        ctx: &mut OpContext<'_, TxnTimer>,
    ) -> Answer<()> {
        if self.txns.get(id).is_some_and(|meta| {
            matches!(
                meta.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
            )
        }) {
            return refuse(TxnProblem::ConcurrentTransactions);
        }
        let meta = match self.producer_check(id, producer_id, producer_epoch) {
            Ok(meta) => meta,
            Err(problem) => return refuse(problem),
        };
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return refuse(TxnProblem::ConcurrentTransactions)
            }
            TxnState::Dead => return refuse(TxnProblem::InvalidTxnState),
            TxnState::Ongoing if partitions.iter().all(|p| meta.partitions.contains(p)) => {
                // Everything asked is in already: nothing to write.
                return CoordinatorResult::response_only(Ok(()));
            }
            TxnState::Ongoing
            | TxnState::Empty
            | TxnState::CompleteCommit
            | TxnState::CompleteAbort => {}
        }
        let now = ctx.now_ms;
        let mut next = meta.clone();
        if meta.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = now;
            ctx.timers.schedule(
                TxnTimer::Timeout(id.to_owned()),
                now.saturating_add(i64::from(meta.timeout_ms)),
            );
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now;
        next.previous_producer_id = meta.producer_id;
        next.client_transaction_version = client_version;
        CoordinatorResult::new(vec![self.record(id, &next)], Ok(()))
    }

    /// AddPartitionsToTxn v4+ `verify_only` (KIP-890): whether each partition is in the ongoing
    /// transaction of this producer; nothing is written.
    pub fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TxnPartition],
    ) -> Result<Vec<Option<TxnProblem>>, TxnProblem> {
        let meta = self.producer_check(id, producer_id, producer_epoch)?;
        // Ending: the producer's write waits until the transaction completed (Kafka answers
        // CONCURRENT_TRANSACTIONS, which leaders turn into a retriable code).
        if meta.preparing() {
            return Err(TxnProblem::ConcurrentTransactions);
        }
        Ok(partitions
            .iter()
            .map(|p| {
                let added = meta.state == TxnState::Ongoing && meta.partitions.contains(p);
                (!added).then_some(TxnProblem::InvalidTxnState)
            })
            .collect())
    }

    /// EndTxn (Kafka's `handleEndTransaction`, transaction version 1): Ongoing moves to
    /// PrepareCommit or PrepareAbort and the markers follow once that is committed; a retry of
    /// an end already done succeeds, one still preparing is CONCURRENT_TRANSACTIONS.
    pub fn end_txn(
        &mut self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        ctx: &mut OpContext<'_, TxnTimer>,
    ) -> Answer<()> {
        let meta = match self.producer_check(id, producer_id, producer_epoch) {
            Ok(meta) => meta,
            Err(problem) => return refuse(problem),
        };
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = meta.clone();
                next.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                next.last_update_ms = ctx.now_ms;
                ctx.timers.cancel(&TxnTimer::Timeout(id.to_owned()));
                self.markers_after_commit(id, &next);
                CoordinatorResult::new(vec![self.record(id, &next)], Ok(()))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                CoordinatorResult::response_only(Ok(()))
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                refuse(TxnProblem::ConcurrentTransactions)
            }
            (TxnState::PrepareEpochFence, _) => refuse(TxnProblem::ConcurrentTransactions),
            _ => refuse(TxnProblem::InvalidTxnState),
        }
    }

    /// EndTxn v5+ (transaction version 2, Kafka's `endTransaction` with TV2): the prepare
    /// bumps the epoch, so the markers and every later write of the producer carry the new one
    /// and nothing delayed from this transaction can touch the next. Answers the producer id
    /// and epoch the producer goes on with: the bumped pair, or a new producer id at epoch 0
    /// when the epoch ran out (`fresh_producer_id`, allocated by the caller then). A retry of
    /// an end already done (its answer lost) is recognised by the bumped epoch and answered
    /// again; an abort with nothing ongoing is allowed.
    pub fn end_txn_v2(
        &mut self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        fresh_producer_id: Option<i64>,
        ctx: &mut OpContext<'_, TxnTimer>,
    ) -> Answer<(i64, i16)> {
        let Some(meta) = self.txns.get(id).cloned() else {
            return refuse(TxnProblem::InvalidProducerIdMapping);
        };
        if matches!(
            meta.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        ) {
            return refuse(TxnProblem::ConcurrentTransactions);
        }
        let retry_on_overflow = meta.previous_producer_id == producer_id
            && producer_epoch == i16::MAX - 1
            && meta.producer_epoch == 0;
        let retry_on_bump = i32::from(meta.producer_epoch) == i32::from(producer_epoch) + 1;
        if meta.producer_id != producer_id && !retry_on_overflow {
            return refuse(TxnProblem::InvalidProducerIdMapping);
        }
        let current = meta.producer_epoch == producer_epoch;
        let is_retry = retry_on_bump || retry_on_overflow;
        let valid_epoch = match meta.state {
            TxnState::CompleteCommit | TxnState::CompleteAbort => is_retry || current,
            _ => current,
        };
        if !valid_epoch {
            return refuse(TxnProblem::ProducerFenced);
        }
        let now_pair = (meta.producer_id, meta.producer_epoch);
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => self.prepare_v2(id, &meta, commit, fresh_producer_id, ctx),
            (TxnState::CompleteCommit, true) if is_retry => {
                CoordinatorResult::response_only(Ok(now_pair))
            }
            (TxnState::CompleteAbort, false) if is_retry => {
                CoordinatorResult::response_only(Ok(now_pair))
            }
            (TxnState::CompleteCommit, false) if is_retry => refuse(TxnProblem::InvalidTxnState),
            // An abort with nothing ongoing still bumps the epoch (the client may have written
            // nothing it knows of, or wants a clean epoch).
            (TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort, false) => {
                self.prepare_v2(id, &meta, false, fresh_producer_id, ctx)
            }
            _ => refuse(TxnProblem::InvalidTxnState),
        }
    }

    /// Whether EndTxn v5 on `id` now would need a new producer id (its epoch ran out).
    pub fn needs_fresh_producer_id(&self, id: &str) -> bool {
        self.txns.get(id).is_some_and(TxnMetadata::epoch_exhausted)
    }

    /// The version 2 prepare of `meta`: the epoch bumped (or, once it ran out, the next
    /// producer id named for the completion), the markers sent once it is committed.
    fn prepare_v2(
        &mut self,
        id: &str,
        meta: &TxnMetadata,
        commit: bool,
        fresh_producer_id: Option<i64>,
        ctx: &mut OpContext<'_, TxnTimer>,
    ) -> Answer<(i64, i16)> {
        let mut next = meta.clone();
        if meta.epoch_exhausted() {
            let Some(fresh) = fresh_producer_id else {
                // The caller allocates one when it sees the epoch run out; asked again.
                return refuse(TxnProblem::ConcurrentTransactions);
            };
            next.next_producer_id = fresh;
        }
        next.producer_epoch = meta.producer_epoch.saturating_add(1);
        next.previous_producer_id = meta.producer_id;
        next.client_transaction_version = 2;
        next.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if meta.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = ctx.now_ms;
        }
        next.last_update_ms = ctx.now_ms;
        ctx.timers.cancel(&TxnTimer::Timeout(id.to_owned()));
        // InitProducerId with the pre-bump pair (an EndTxn answer lost, then a KIP-360
        // re-init) gets the bumped pair.
        self.bumped_from
            .insert(id.to_owned(), (meta.producer_id, meta.producer_epoch));
        self.markers_after_commit(id, &next);
        let answer = if next.next_producer_id >= 0 {
            (next.next_producer_id, 0)
        } else {
            (next.producer_id, next.producer_epoch)
        };
        CoordinatorResult::new(vec![self.record(id, &next)], Ok(answer))
    }

    /// The markers of `job` are written: the transaction completes (Kafka's `prepareComplete`),
    /// unless the id moved on meanwhile (then nothing is written).
    pub fn complete(&mut self, job: &MarkerJob, ctx: &mut OpContext<'_, TxnTimer>) -> Answer<()> {
        // Only this coordinator's own jobs: an older coordinator's task leaves the transaction
        // to the job this one resumed on loading.
        if job.coordinator_epoch != self.coordinator_epoch {
            return refuse(TxnProblem::InvalidTxnState);
        }
        let Some(meta) = self.txns.get(&job.transactional_id) else {
            return refuse(TxnProblem::InvalidProducerIdMapping);
        };
        let expected = if job.commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if meta.state != expected
            || meta.producer_id != job.producer_id
            || meta.producer_epoch != job.producer_epoch
        {
            return refuse(TxnProblem::InvalidTxnState);
        }
        let mut next = meta.clone();
        next.state = if job.commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        next.partitions.clear();
        next.last_update_ms = ctx.now_ms;
        next.previous_producer_id = meta.producer_id;
        // Version 2: the epoch ran out in the prepare; the id moves to its next producer id
        // (Kafka's `prepareComplete`).
        if meta.client_transaction_version >= 2 && meta.next_producer_id >= 0 {
            next.producer_id = meta.next_producer_id;
            next.producer_epoch = 0;
            next.next_producer_id = -1;
        }
        CoordinatorResult::new(vec![self.record(&job.transactional_id, &next)], Ok(()))
    }

    /// Aborts the ongoing transaction of `id` at a bumped epoch, as an operator does with
    /// `kafka-transactions.sh abort` on a hanging one; CONCURRENT_TRANSACTIONS when it is
    /// already ending, INVALID_TXN_STATE when nothing is ongoing.
    pub fn abort(&mut self, id: &str, ctx: &mut OpContext<'_, TxnTimer>) -> Answer<()> {
        let Some(meta) = self.txns.get(id).cloned() else {
            return refuse(TxnProblem::TransactionalIdNotFound);
        };
        match meta.state {
            TxnState::Ongoing => {
                let now = ctx.now_ms;
                let next = self.fence_and_abort(id, &meta, now, ctx);
                CoordinatorResult::new(vec![self.record(id, &next)], Ok(()))
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                refuse(TxnProblem::ConcurrentTransactions)
            }
            _ => refuse(TxnProblem::InvalidTxnState),
        }
    }

    /// Every transactional id of this partition with its metadata.
    pub fn list(&self) -> Vec<DescribedTxn> {
        let mut all: Vec<DescribedTxn> = self
            .txns
            .iter()
            .map(|(id, meta)| DescribedTxn {
                transactional_id: id.clone(),
                metadata: meta.clone(),
            })
            .collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }

    fn timeout(&mut self, id: &str, ctx: &mut OpContext<'_, TxnTimer>) -> Vec<CoordinatorRecord> {
        let Some(meta) = self.txns.get(id).cloned() else {
            return Vec::new();
        };
        if meta.state != TxnState::Ongoing {
            return Vec::new();
        }
        // Saturating: `start_ms` may come from a foreign or damaged log.
        let deadline = meta.start_ms.saturating_add(i64::from(meta.timeout_ms));
        if ctx.now_ms < deadline {
            // The transaction started again since this timer was set.
            ctx.timers
                .schedule(TxnTimer::Timeout(id.to_owned()), deadline);
            return Vec::new();
        }
        tracing::info!(
            transactional_id = id,
            producer_id = meta.producer_id,
            "transaction timed out: aborting it"
        );
        let now = ctx.now_ms;
        let next = self.fence_and_abort(id, &meta, now, ctx);
        if self.rules.transaction_version >= 2 {
            // The abort's bump is the producer's own under version 2 (Kafka records the last
            // epoch): its KIP-360 re-init from the old epoch is answered, not fenced.
            self.bumped_from
                .insert(id.to_owned(), (meta.producer_id, meta.producer_epoch));
        }
        vec![self.record(id, &next)]
    }

    /// Removes ids idle past `transactional.id.expiration.ms` (Kafka writes their tombstone).
    fn expire_ids(&mut self, ctx: &mut OpContext<'_, TxnTimer>) -> Vec<CoordinatorRecord> {
        let expiration = self.rules.id_expiration_ms;
        let mut expired: Vec<&String> = self
            .txns
            .iter()
            .filter(|(_, meta)| {
                matches!(
                    meta.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && meta.last_update_ms.saturating_add(expiration) <= ctx.now_ms
            })
            .map(|(id, _)| id)
            .collect();
        expired.sort();
        // One batch stays well below the topic's message size limit (Kafka splits its
        // tombstones into batches the same way); what is left goes in the next pass, soon.
        let mut tombstones = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for id in expired {
            let key = records::encode_key(id).expect(super::LENGTHS_CHECKED);
            if bytes + key.len() > EXPIRY_BATCH_BYTES_MAX && !tombstones.is_empty() {
                more = true;
                break;
            }
            bytes += key.len() + RECORD_OVERHEAD_BYTES;
            tombstones.push(CoordinatorRecord::tombstone(key));
        }
        let next_check_ms = if more {
            EXPIRY_NEXT_BATCH_MS
        } else {
            self.rules.expiration_check_interval_ms
        };
        ctx.timers.schedule(
            TxnTimer::ExpireIds,
            ctx.now_ms.saturating_add(next_check_ms),
        );
        tombstones
    }
}

impl CoordinatorMachine for TxnMachine {
    type TimerKey = TxnTimer;

    fn replay(
        &mut self,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), ReplayError> {
        let refused =
            |what: &str, reason: String| ReplayError(format!("{what} at {offset}: {reason}"));
        let key = key.ok_or_else(|| refused("a record", "no key".to_owned()))?;
        let id = records::decode_key(key).map_err(|e| refused("a key", e.to_string()))?;
        match value {
            None => {
                self.txns.remove(&id);
            }
            Some(value) => {
                let value =
                    TxnLogValue::decode(value).map_err(|e| refused("a value", e.to_string()))?;
                self.txns.insert(id, TxnMetadata::from_value(value));
            }
        }
        Ok(())
    }

    /// Resumes what a coordinator that stopped left half done: the markers of transactions
    /// still preparing, the timeouts of ongoing ones.
    fn on_loaded(&mut self, ctx: &mut OpContext<'_, TxnTimer>) {
        let mut ids: Vec<&String> = self.txns.keys().collect();
        ids.sort();
        for id in ids {
            let meta = &self.txns[id];
            if meta.preparing() {
                let _ = self.markers.send(self.job(id, meta));
            } else if meta.state == TxnState::Ongoing {
                ctx.timers.schedule(
                    TxnTimer::Timeout(id.clone()),
                    meta.start_ms.saturating_add(i64::from(meta.timeout_ms)),
                );
            }
        }
        ctx.timers.schedule(
            TxnTimer::ExpireIds,
            ctx.now_ms
                .saturating_add(self.rules.expiration_check_interval_ms),
        );
    }

    fn on_timer(
        &mut self,
        key: TxnTimer,
        ctx: &mut OpContext<'_, TxnTimer>,
    ) -> Vec<CoordinatorRecord> {
        match key {
            TxnTimer::Timeout(id) => self.timeout(&id, ctx),
            TxnTimer::ExpireIds => self.expire_ids(ctx),
        }
    }

    fn take_deferred(&mut self) -> Vec<Deferred> {
        std::mem::take(&mut self.deferred)
    }
}
