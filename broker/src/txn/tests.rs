//! Unit tests of the transaction coordinator's state machine, driven as the shard drives it:
//! each operation's records are replayed at once and its deferred effects (marker jobs) run as
//! when they are committed; timers fire at their deadlines; a new machine loads the log.
//! Kafka's `TransactionCoordinator` and `TransactionMetadata` are the specification.

use tokio::sync::mpsc;

use super::machine::{InitRequest, MarkerJob, TxnMachine, TxnRules, TxnTimer};
use super::records::TxnState;
use super::state::TxnPartition;
use super::TxnProblem;
use crate::coordinator::{
    CoordinatorMachine, CoordinatorRecord, CoordinatorResult, OpContext, Timers,
};

const ID: &str = "txn-1";
const TIMEOUT_MS: i32 = 60_000;
const START_MS: i64 = 1_700_000_000_000;
const COORDINATOR_EPOCH: i32 = 4;

struct Harness {
    machine: TxnMachine,
    jobs: mpsc::UnboundedReceiver<MarkerJob>,
    timers: Timers<TxnTimer>,
    now_ms: i64,
    log: Vec<CoordinatorRecord>,
    next_pid: i64,
}

impl Harness {
    fn new() -> Harness {
        Harness::load(&[], START_MS)
    }

    /// A coordinator that loads `log`, as after a failover.
    fn load(log: &[CoordinatorRecord], now_ms: i64) -> Harness {
        Harness::load_at(log, now_ms, COORDINATOR_EPOCH)
    }

    /// A coordinator of `coordinator_epoch` that loads `log`.
    fn load_at(log: &[CoordinatorRecord], now_ms: i64, coordinator_epoch: i32) -> Harness {
        let (sender, jobs) = mpsc::unbounded_channel();
        let mut machine = TxnMachine::new(7, coordinator_epoch, rules(), sender);
        for (offset, record) in log.iter().enumerate() {
            machine
                .replay(offset as i64, Some(&record.key), record.value.as_deref())
                .expect("replays");
        }
        let mut timers = Timers::new();
        machine.on_loaded(&mut OpContext {
            now_ms,
            timers: &mut timers,
        });
        Harness {
            machine,
            jobs,
            timers,
            now_ms,
            log: log.to_vec(),
            next_pid: 1000,
        }
    }

    fn write(&mut self, records: &[CoordinatorRecord]) {
        for record in records {
            let offset = self.log.len() as i64;
            self.machine
                .replay(offset, Some(&record.key), record.value.as_deref())
                .expect("a written record replays");
            self.log.push(record.clone());
        }
    }

    fn run<R>(
        &mut self,
        op: impl FnOnce(&mut TxnMachine, &mut OpContext<'_, TxnTimer>) -> CoordinatorResult<R>,
    ) -> R {
        let mut ctx = OpContext {
            now_ms: self.now_ms,
            timers: &mut self.timers,
        };
        let result = op(&mut self.machine, &mut ctx);
        let deferred = self.machine.take_deferred();
        self.write(&result.records);
        for effect in deferred {
            effect();
        }
        result.response
    }

    fn advance(&mut self, ms: i64) {
        let target = self.now_ms + ms;
        while let Some(deadline) = self.timers.next_deadline_ms().filter(|d| *d <= target) {
            self.now_ms = self.now_ms.max(deadline);
            while let Some(key) = self.timers.pop_due(self.now_ms) {
                let mut ctx = OpContext {
                    now_ms: self.now_ms,
                    timers: &mut self.timers,
                };
                let records = self.machine.on_timer(key, &mut ctx);
                let deferred = self.machine.take_deferred();
                self.write(&records);
                for effect in deferred {
                    effect();
                }
            }
        }
        self.now_ms = target;
    }

    fn init(&mut self, expected: Option<(i64, i16)>) -> Result<(i64, i16), TxnProblem> {
        self.next_pid += 1;
        let request = InitRequest {
            timeout_ms: TIMEOUT_MS,
            expected,
            fresh_producer_id: self.next_pid,
        };
        self.run(|m, ctx| m.init_producer_id(ID, request, ctx))
    }

    fn add(&mut self, producer: (i64, i16), partitions: &[(&str, i32)]) -> Result<(), TxnProblem> {
        let partitions: Vec<TxnPartition> = partitions
            .iter()
            .map(|(t, p)| ((*t).to_owned(), *p))
            .collect();
        self.run(|m, ctx| m.add_partitions(ID, producer.0, producer.1, &partitions, 0, ctx))
    }

    fn end(&mut self, producer: (i64, i16), commit: bool) -> Result<(), TxnProblem> {
        self.run(|m, ctx| m.end_txn(ID, producer.0, producer.1, commit, ctx))
    }

    /// EndTxn v5 (transaction version 2).
    fn end2(
        &mut self,
        producer: (i64, i16),
        commit: bool,
        fresh: Option<i64>,
    ) -> Result<(i64, i16), TxnProblem> {
        self.run(|m, ctx| m.end_txn_v2(ID, producer.0, producer.1, commit, fresh, ctx))
    }

    /// AddPartitionsToTxn from a leader for a version 2 producer.
    fn add2(&mut self, producer: (i64, i16), partitions: &[(&str, i32)]) -> Result<(), TxnProblem> {
        let partitions: Vec<TxnPartition> = partitions
            .iter()
            .map(|(t, p)| ((*t).to_owned(), *p))
            .collect();
        self.run(|m, ctx| m.add_partitions(ID, producer.0, producer.1, &partitions, 2, ctx))
    }

    /// The marker job the last prepare sent, which the service completes.
    fn job(&mut self) -> MarkerJob {
        self.jobs.try_recv().expect("a marker job")
    }

    fn no_job(&mut self) {
        assert!(self.jobs.try_recv().is_err(), "no marker job expected");
    }

    fn complete(&mut self, job: &MarkerJob) -> Result<(), TxnProblem> {
        self.run(|m, ctx| m.complete(job, ctx))
    }

    fn state(&self) -> TxnState {
        self.machine.get(ID).expect("known id").state
    }
}

fn rules() -> TxnRules {
    TxnRules {
        max_timeout_ms: 900_000,
        id_expiration_ms: 3_600_000,
        expiration_check_interval_ms: 60_000,
        transaction_version: 2,
    }
}

#[test]
fn a_transaction_commits_in_two_phases() {
    let mut h = Harness::new();
    let producer = h.init(None).unwrap();
    assert_eq!(producer, (1001, 0));
    assert_eq!(h.state(), TxnState::Empty);
    h.add(producer, &[("a", 0), ("b", 1)]).unwrap();
    h.add(producer, &[("a", 0), ("a", 2)]).unwrap();
    assert_eq!(h.state(), TxnState::Ongoing);
    let written = h.log.len();
    // Everything asked is in already: nothing written.
    h.add(producer, &[("a", 2)]).unwrap();
    assert_eq!(h.log.len(), written);

    h.end(producer, true).unwrap();
    assert_eq!(h.state(), TxnState::PrepareCommit);
    let job = h.job();
    assert_eq!(job.coordinator_epoch, COORDINATOR_EPOCH);
    assert!(job.commit);
    assert_eq!(
        job.partitions,
        vec![
            ("a".to_owned(), 0),
            ("a".to_owned(), 2),
            ("b".to_owned(), 1)
        ]
    );
    // Until the markers are written, the producer must wait.
    assert_eq!(
        h.end(producer, true),
        Err(TxnProblem::ConcurrentTransactions)
    );
    assert_eq!(
        h.add(producer, &[("c", 0)]),
        Err(TxnProblem::ConcurrentTransactions)
    );
    h.complete(&job).unwrap();
    assert_eq!(h.state(), TxnState::CompleteCommit);
    assert!(h.machine.get(ID).unwrap().partitions.is_empty());
    // A retried EndTxn of the done commit succeeds; an abort of it is refused.
    assert_eq!(h.end(producer, true), Ok(()));
    assert_eq!(h.end(producer, false), Err(TxnProblem::InvalidTxnState));
    // The next transaction starts from CompleteCommit.
    h.add(producer, &[("c", 0)]).unwrap();
    h.end(producer, false).unwrap();
    let job = h.job();
    assert!(!job.commit);
    assert_eq!(job.partitions, vec![("c".to_owned(), 0)]);
    h.complete(&job).unwrap();
    assert_eq!(h.state(), TxnState::CompleteAbort);
}

#[test]
fn a_new_instance_fences_the_old_one_and_aborts_its_transaction() {
    let mut h = Harness::new();
    let old = h.init(None).unwrap();
    h.add(old, &[("a", 0)]).unwrap();
    // The new instance's InitProducerId aborts the ongoing transaction at a bumped epoch.
    assert_eq!(h.init(None), Err(TxnProblem::ConcurrentTransactions));
    assert_eq!(h.state(), TxnState::PrepareAbort);
    let job = h.job();
    assert!(!job.commit);
    assert_eq!(
        job.producer_epoch,
        old.1 + 1,
        "the markers fence the old epoch"
    );
    // The old instance can neither write to nor end the transaction (while it ends, an add
    // waits first, as Kafka checks a pending transition before the producer).
    assert_eq!(
        h.add(old, &[("b", 0)]),
        Err(TxnProblem::ConcurrentTransactions)
    );
    assert_eq!(h.end(old, true), Err(TxnProblem::ProducerFenced));
    assert_eq!(
        h.init(None),
        Err(TxnProblem::ConcurrentTransactions),
        "still aborting"
    );
    h.complete(&job).unwrap();
    let new = h.init(None).unwrap();
    assert_eq!(new, (old.0, old.1 + 2));
    assert_eq!(h.state(), TxnState::Empty);
    assert_eq!(h.end(old, false), Err(TxnProblem::ProducerFenced));
    assert_eq!(h.add(old, &[("b", 0)]), Err(TxnProblem::ProducerFenced));
}

#[test]
fn kip_360_bumps_only_for_the_current_producer() {
    let mut h = Harness::new();
    let first = h.init(None).unwrap();
    let bumped = h.init(Some(first)).unwrap();
    assert_eq!(bumped, (first.0, first.1 + 1));
    // A retry of that bump (its answer lost) gets the same pair, and writes nothing.
    let logged = h.log.len();
    assert_eq!(h.init(Some(first)), Ok(bumped));
    assert_eq!(h.log.len(), logged, "a retry bumps nothing");
    assert_eq!(h.init(Some((99, 0))), Err(TxnProblem::ProducerFenced));
    // Once a new instance took the id, the old pairs are fenced.
    let successor = h.init(None).unwrap();
    assert_eq!(successor, (first.0, bumped.1 + 1));
    assert_eq!(h.init(Some(first)), Err(TxnProblem::ProducerFenced));
    assert_eq!(h.init(Some(bumped)), Err(TxnProblem::ProducerFenced));
}

#[test]
fn a_producer_whose_id_expired_starts_afresh() {
    let mut h = Harness::new();
    // KIP-360 from a producer whose transactional id is unknown here (expired): a fresh
    // producer id at epoch 0, not a fatal error.
    let fresh = h.init(Some((42, 3))).unwrap();
    assert_ne!(fresh.0, 42);
    assert_eq!(fresh.1, 0);
}

#[test]
fn a_retried_bump_is_answered_until_a_transaction_starts() {
    let mut h = Harness::new();
    let first = h.init(None).unwrap();
    let bumped = h.init(Some(first)).unwrap();
    h.add(bumped, &[("a", 0)]).unwrap();
    // The producer has moved on with the bumped epoch: the old pair is fenced.
    assert_eq!(h.init(Some(first)), Err(TxnProblem::ProducerFenced));
}

#[test]
fn an_exhausted_epoch_moves_to_a_new_producer_id() {
    let mut h = Harness::new();
    let first = h.init(None).unwrap();
    let mut meta = h.machine.get(ID).unwrap().clone();
    meta.producer_epoch = i16::MAX - 1;
    let record = CoordinatorRecord::new(
        super::records::encode_key(ID).unwrap(),
        meta.to_value().encode(0).unwrap(),
    );
    h.write(&[record]);
    let next = h.init(None).unwrap();
    assert_ne!(next.0, first.0);
    assert_eq!(next.1, 0);
}

#[test]
fn requests_with_the_wrong_producer_or_state_are_refused_and_change_nothing() {
    let mut h = Harness::new();
    let request = InitRequest {
        timeout_ms: 900_001,
        expected: None,
        fresh_producer_id: 5,
    };
    assert_eq!(
        h.run(|m, ctx| m.init_producer_id(ID, request, ctx)),
        Err(TxnProblem::InvalidTransactionTimeout)
    );
    assert!(h.log.is_empty());
    assert_eq!(
        h.add((5, 0), &[("a", 0)]),
        Err(TxnProblem::InvalidProducerIdMapping)
    );
    let producer = h.init(None).unwrap();
    let written = h.log.len();
    assert_eq!(
        h.add((producer.0 + 1, 0), &[("a", 0)]),
        Err(TxnProblem::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.add((producer.0, 7), &[("a", 0)]),
        Err(TxnProblem::ProducerFenced)
    );
    assert_eq!(
        h.end(producer, true),
        Err(TxnProblem::InvalidTxnState),
        "nothing ongoing"
    );
    assert_eq!(
        h.end((producer.0, 3), true),
        Err(TxnProblem::ProducerFenced)
    );
    assert_eq!(h.log.len(), written, "refusals write nothing");
    h.no_job();
    // KIP-890 verification: only added partitions of the ongoing transaction pass.
    h.add(producer, &[("a", 0)]).unwrap();
    let verified = h
        .machine
        .verify_partitions(
            ID,
            producer.0,
            producer.1,
            &[("a".to_owned(), 0), ("a".to_owned(), 1)],
        )
        .unwrap();
    assert_eq!(verified, vec![None, Some(TxnProblem::InvalidTxnState)]);
    assert_eq!(
        h.machine.verify_partitions(ID, producer.0, 9, &[]),
        Err(TxnProblem::ProducerFenced)
    );
}

#[test]
fn a_transaction_that_outlives_its_timeout_is_aborted_at_a_bumped_epoch() {
    let mut h = Harness::new();
    let producer = h.init(None).unwrap();
    h.add(producer, &[("a", 0)]).unwrap();
    h.advance(i64::from(TIMEOUT_MS) - 1);
    assert_eq!(h.state(), TxnState::Ongoing);
    h.no_job();
    h.advance(1);
    assert_eq!(h.state(), TxnState::PrepareAbort);
    let job = h.job();
    assert_eq!(job.producer_epoch, producer.1 + 1);
    assert_eq!(h.end(producer, true), Err(TxnProblem::ProducerFenced));
    h.complete(&job).unwrap();
    assert_eq!(h.state(), TxnState::CompleteAbort);
    // A transaction ended in time is not aborted by its old timer.
    let producer = h.init(None).unwrap();
    h.add(producer, &[("a", 0)]).unwrap();
    h.end(producer, true).unwrap();
    let job = h.job();
    h.complete(&job).unwrap();
    h.advance(i64::from(TIMEOUT_MS) * 2);
    assert_eq!(h.state(), TxnState::CompleteCommit);
    h.no_job();
}

#[test]
fn a_new_coordinator_resumes_preparing_transactions_and_timeouts() {
    let mut h = Harness::new();
    let producer = h.init(None).unwrap();
    h.add(producer, &[("a", 0)]).unwrap();
    h.end(producer, true).unwrap();
    let old_job = h.job();
    let mut loaded = Harness::load_at(&h.log, h.now_ms + 10, COORDINATOR_EPOCH + 1);
    let job = loaded.job();
    assert!(job.commit);
    assert_eq!(job.partitions, vec![("a".to_owned(), 0)]);
    // A marker task left over from the old coordinator does not complete the transaction;
    // the job the new one resumed does.
    assert_eq!(loaded.complete(&old_job), Err(TxnProblem::InvalidTxnState));
    assert_eq!(loaded.state(), TxnState::PrepareCommit);
    loaded.complete(&job).unwrap();
    assert_eq!(loaded.state(), TxnState::CompleteCommit);

    // An ongoing transaction keeps its deadline across the failover.
    let producer = loaded.init(None).unwrap();
    loaded.add(producer, &[("b", 0)]).unwrap();
    let mut again = Harness::load(&loaded.log, loaded.now_ms + 1_000);
    again.no_job();
    again.advance(i64::from(TIMEOUT_MS) - 1_000);
    assert_eq!(again.state(), TxnState::PrepareAbort);
    assert!(!again.job().commit);
}

#[test]
fn idle_ids_expire_and_ongoing_ones_stay() {
    let mut h = Harness::new();
    h.init(None).unwrap();
    h.advance(rules().id_expiration_ms + rules().expiration_check_interval_ms);
    assert!(h.machine.get(ID).is_none());
    assert!(h.log.last().unwrap().value.is_none(), "a tombstone");
    let producer = h.init(None).unwrap();
    h.add(producer, &[("a", 0)]).unwrap();
    // Its timeout aborts it; an id that is not idle (ongoing, then aborting) does not expire.
    h.advance(i64::from(TIMEOUT_MS) - 1);
    h.advance(rules().expiration_check_interval_ms);
    assert!(h.machine.get(ID).is_some());
}

#[test]
fn many_expired_ids_are_removed_in_bounded_batches() {
    let mut h = Harness::new();
    let ids: Vec<String> = (0..600)
        .map(|i| format!("{i:04}-{}", "x".repeat(1_000)))
        .collect();
    for id in &ids {
        let request = InitRequest {
            timeout_ms: TIMEOUT_MS,
            expected: None,
            fresh_producer_id: h.next_pid,
        };
        h.next_pid += 1;
        h.run(|m, ctx| m.init_producer_id(id, request, ctx))
            .unwrap();
    }
    h.now_ms += rules().id_expiration_ms;
    let mut ctx = OpContext {
        now_ms: h.now_ms,
        timers: &mut h.timers,
    };
    let first = h.machine.on_timer(TxnTimer::ExpireIds, &mut ctx);
    let key_bytes: usize = first.iter().map(|r| r.key.len()).sum();
    assert!(!first.is_empty() && first.len() < ids.len());
    assert!(
        key_bytes <= 256 * 1024,
        "{key_bytes} bytes of keys in one batch"
    );
    assert!(first.iter().all(|r| r.value.is_none()), "tombstones");
    h.write(&first);
    // The rest goes soon after, not an interval later.
    h.advance(200);
    assert!(
        ids.iter().all(|id| h.machine.get(id).is_none()),
        "all expired ids removed"
    );
}

#[test]
fn version_2_bumps_the_epoch_at_every_end_and_answers_retries() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(None).unwrap();
    h.add2((pid, epoch), &[("a", 0)]).unwrap();
    assert_eq!(h.machine.get(ID).unwrap().client_transaction_version, 2);
    assert_eq!(h.end2((pid, epoch), true, None), Ok((pid, epoch + 1)));
    assert_eq!(h.state(), TxnState::PrepareCommit);
    let job = h.job();
    assert_eq!(
        (job.producer_id, job.producer_epoch),
        (pid, epoch + 1),
        "markers carry the bumped epoch"
    );
    // While the markers are written, a retry (its answer lost) and an add wait.
    assert_eq!(
        h.end2((pid, epoch), true, None),
        Err(TxnProblem::ConcurrentTransactions)
    );
    assert_eq!(
        h.add2((pid, epoch + 1), &[("a", 0)]),
        Err(TxnProblem::ConcurrentTransactions)
    );
    h.complete(&job).unwrap();
    assert_eq!(h.state(), TxnState::CompleteCommit);
    // A retry of the commit is answered again; an abort of it is refused.
    assert_eq!(h.end2((pid, epoch), true, None), Ok((pid, epoch + 1)));
    assert_eq!(
        h.end2((pid, epoch), false, None),
        Err(TxnProblem::InvalidTxnState)
    );
    // The old epoch can no longer add: nothing delayed joins the next transaction.
    assert_eq!(
        h.add2((pid, epoch), &[("a", 0)]),
        Err(TxnProblem::ProducerFenced)
    );
    h.add2((pid, epoch + 1), &[("b", 1)]).unwrap();
    assert_eq!(h.state(), TxnState::Ongoing);
    assert_eq!(h.end2((pid, epoch + 1), false, None), Ok((pid, epoch + 2)));
    let job = h.job();
    assert_eq!(
        job.partitions,
        vec![("b".to_owned(), 1)],
        "only the new transaction's"
    );
    h.complete(&job).unwrap();
    // A KIP-360 re-init with the pair before the last bump gets the current one.
    assert_eq!(h.init(Some((pid, epoch + 1))), Ok((pid, epoch + 2)));
}

#[test]
fn version_2_aborts_with_nothing_ongoing_and_commits_of_nothing_are_refused() {
    let mut h = Harness::new();
    let producer = h.init(None).unwrap();
    assert_eq!(
        h.end2(producer, true, None),
        Err(TxnProblem::InvalidTxnState)
    );
    assert_eq!(
        h.end2(producer, false, None),
        Ok((producer.0, producer.1 + 1))
    );
    let job = h.job();
    assert!(job.partitions.is_empty(), "no markers to write");
    h.complete(&job).unwrap();
    assert_eq!(h.state(), TxnState::CompleteAbort);
    assert_eq!(
        h.end2((producer.0 + 5, producer.1), false, None),
        Err(TxnProblem::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.end2((producer.0, producer.1 + 7), false, None),
        Err(TxnProblem::ProducerFenced)
    );
}

#[test]
fn version_2_moves_to_the_next_producer_id_when_the_epoch_runs_out() {
    let mut h = Harness::new();
    let (pid, _) = h.init(None).unwrap();
    let mut meta = h.machine.get(ID).unwrap().clone();
    meta.producer_epoch = i16::MAX - 1;
    let record = CoordinatorRecord::new(
        super::records::encode_key(ID).unwrap(),
        meta.to_value().encode(1).unwrap(),
    );
    h.write(&[record]);
    let last = (pid, i16::MAX - 1);
    h.add2(last, &[("a", 0)]).unwrap();
    // The caller allocates the next producer id when it sees the epoch run out.
    assert_eq!(
        h.end2(last, true, None),
        Err(TxnProblem::ConcurrentTransactions)
    );
    assert_eq!(h.end2(last, true, Some(777)), Ok((777, 0)));
    let job = h.job();
    assert_eq!((job.producer_id, job.producer_epoch), (pid, i16::MAX));
    h.complete(&job).unwrap();
    let meta = h.machine.get(ID).unwrap();
    assert_eq!(
        (
            meta.producer_id,
            meta.producer_epoch,
            meta.previous_producer_id
        ),
        (777, 0, pid)
    );
    // The coordinator reloads the same state from the log (v1 values keep the ids), and a
    // retry from the old id at its last epoch is recognised there too.
    let mut reloaded = Harness::load(&h.log, h.now_ms);
    let again = reloaded.machine.get(ID).unwrap();
    assert_eq!((again.producer_id, again.previous_producer_id), (777, pid));
    assert_eq!(reloaded.end2(last, true, None), Ok((777, 0)));
    assert_eq!(h.end2(last, true, None), Ok((777, 0)));
    h.add2((777, 0), &[("a", 0)]).unwrap();
    // Once a transaction runs under the new id, the old id at its last epoch is a zombie.
    assert_eq!(h.init(Some(last)), Err(TxnProblem::ProducerFenced));
    assert_eq!(h.state(), TxnState::Ongoing);
}

#[test]
fn a_version_2_transaction_that_times_out_does_not_fence_its_producer() {
    let mut h = Harness::new();
    let producer = h.init(None).unwrap();
    h.add2(producer, &[("a", 0)]).unwrap();
    h.advance(i64::from(TIMEOUT_MS));
    assert_eq!(h.state(), TxnState::PrepareAbort);
    let job = h.job();
    h.complete(&job).unwrap();
    // A KIP-360 re-init from the old epoch gets the bumped pair and bumps nothing more.
    assert_eq!(h.init(Some(producer)), Ok((producer.0, producer.1 + 1)));
    // Its own abort at the old epoch is a retry of the coordinator's, answered with the new
    // epoch; a commit is refused.
    assert_eq!(
        h.end2(producer, true, None),
        Err(TxnProblem::InvalidTxnState)
    );
    assert_eq!(
        h.end2(producer, false, None),
        Ok((producer.0, producer.1 + 1))
    );
}
