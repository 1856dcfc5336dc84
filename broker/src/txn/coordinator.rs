//! The transaction coordinator service the Kafka handlers call: it owns the coordinator runtime
//! of `__transaction_state`, routes a transactional id to its partition
//! (`abs(hash(transactional.id)) % partitions`), hands new ids their producer id, and completes
//! ending transactions once [`super::markers`] wrote their markers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use streambus_raft::command::BrokerId;
use streambus_storage::SystemClock;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::machine::{DescribedTxn, InitRequest, MarkerJob, TxnMachine};
use super::records::TxnState;
use super::state::TxnPartition;
use super::{TxnProblem, TRANSACTION_STATE_TOPIC};
use crate::config::TransactionsConfig;
use crate::context::BrokerContext;
use crate::coordinator::topic::FewerBrokers;
use crate::coordinator::{CoordinatorError, CoordinatorRuntime, InternalTopic, RuntimeConfig};

/// How long a write to `__transaction_state` may wait to be committed (Kafka's
/// `transaction.state.log` appends use the request timeout).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The transaction coordinator of this broker.
#[derive(Debug)]
pub struct TxnCoordinator {
    runtime: Arc<CoordinatorRuntime<TxnMachine>>,
    /// Marker jobs from the partitions' state machines, taken by the marker task at spawn.
    jobs: Mutex<Option<mpsc::UnboundedReceiver<MarkerJob>>>,
}

impl TxnCoordinator {
    /// The coordinator of broker `broker_id`. A `dev` broker creates `__transaction_state` with
    /// as many replicas as there are live brokers when fewer than configured are up.
    pub fn new(broker_id: BrokerId, config: &TransactionsConfig, dev: bool) -> Arc<TxnCoordinator> {
        let mut topic = InternalTopic::compacted(
            TRANSACTION_STATE_TOPIC,
            config.transaction_state_log_num_partitions,
            config.transaction_state_log_replication_factor,
            if dev {
                FewerBrokers::Cap
            } else {
                FewerBrokers::Refuse
            },
        );
        topic.configs.insert(
            "segment.bytes".to_owned(),
            config.transaction_state_log_segment_bytes.to_string(),
        );
        topic.configs.insert(
            "min.insync.replicas".to_owned(),
            config.transaction_state_log_min_isr.to_string(),
        );
        // As Kafka creates it: the coordinator writes uncompressed batches and they stay so.
        topic
            .configs
            .insert("compression.type".to_owned(), "uncompressed".to_owned());
        let rules = config.rules();
        let (sender, jobs) = mpsc::unbounded_channel();
        let runtime_config = RuntimeConfig {
            write_timeout: WRITE_TIMEOUT,
            clock: Arc::new(SystemClock),
        };
        let runtime = CoordinatorRuntime::new(
            broker_id,
            topic,
            runtime_config,
            move |partition, leader_epoch| {
                TxnMachine::new(partition, leader_epoch, rules.clone(), sender.clone())
            },
        );
        Arc::new(TxnCoordinator {
            runtime,
            jobs: Mutex::new(Some(jobs)),
        })
    }

    /// Starts following leadership of `__transaction_state` and writing markers; both end when
    /// the broker shuts down.
    pub fn spawn(self: &Arc<Self>, ctx: &Arc<BrokerContext>) -> Vec<JoinHandle<()>> {
        let runtime = self.runtime.spawn(ctx);
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut tasks = vec![runtime];
        if let Some(jobs) = jobs {
            tasks.push(tokio::spawn(super::markers::run(
                self.clone(),
                ctx.clone(),
                jobs,
            )));
        }
        tasks
    }

    pub fn partition_for(&self, transactional_id: &str) -> u32 {
        self.runtime.partition_for(transactional_id)
    }

    /// The broker that coordinates `transactional_id`, creating `__transaction_state` on first
    /// use.
    pub async fn find(
        &self,
        ctx: &BrokerContext,
        transactional_id: &str,
    ) -> Result<BrokerId, CoordinatorError> {
        self.runtime.find(ctx, transactional_id).await
    }

    /// Whether this broker coordinates partition `partition` at leader epoch `epoch` still.
    pub fn coordinates(&self, ctx: &BrokerContext, partition: u32, epoch: i32) -> bool {
        let image = ctx.image();
        self.runtime.is_coordinator(partition)
            && image
                .topic_by_name(TRANSACTION_STATE_TOPIC)
                .and_then(|t| t.partitions.get(partition as usize))
                .is_some_and(|p| p.leader == Some(ctx.broker_id()) && p.leader_epoch == epoch)
    }

    pub async fn init_producer_id(
        &self,
        ctx: &BrokerContext,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<Result<(i64, i16), TxnProblem>, CoordinatorError> {
        let partition = self.partition_for(transactional_id);
        // A producer id for a new id (or one whose epoch ran out); allocated in blocks, so an
        // unused one costs nothing but a gap.
        let fresh_producer_id =
            ctx.producer_ids
                .next()
                .await
                .map_err(|error| CoordinatorError::NotAvailable {
                    topic: TRANSACTION_STATE_TOPIC.to_owned(),
                    reason: format!("no producer id: {error}"),
                })?;
        let id = transactional_id.to_owned();
        let request = InitRequest {
            timeout_ms,
            expected,
            fresh_producer_id,
        };
        self.runtime
            .write(partition, move |machine, op| {
                machine.init_producer_id(&id, request, op)
            })
            .await
    }

    pub async fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<TxnPartition>,
        client_version: i16,
    ) -> Result<Result<(), TxnProblem>, CoordinatorError> {
        let partition = self.partition_for(transactional_id);
        let id = transactional_id.to_owned();
        self.runtime
            .write(partition, move |machine, op| {
                machine.add_partitions(
                    &id,
                    producer_id,
                    producer_epoch,
                    &partitions,
                    client_version,
                    op,
                )
            })
            .await
    }

    /// KIP-890 verification of `partitions` (AddPartitionsToTxn v4+ `verify_only`).
    pub async fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<TxnPartition>,
    ) -> Result<Result<Vec<Option<TxnProblem>>, TxnProblem>, CoordinatorError> {
        let partition = self.partition_for(transactional_id);
        let id = transactional_id.to_owned();
        self.runtime
            .read(partition, move |machine| {
                machine.verify_partitions(&id, producer_id, producer_epoch, &partitions)
            })
            .await
    }

    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<Result<(), TxnProblem>, CoordinatorError> {
        let partition = self.partition_for(transactional_id);
        let id = transactional_id.to_owned();
        self.runtime
            .write(partition, move |machine, op| {
                machine.end_txn(&id, producer_id, producer_epoch, commit, op)
            })
            .await
    }

    /// EndTxn v5+ (transaction version 2): the producer id and epoch to go on with.
    pub async fn end_txn_v2(
        &self,
        ctx: &BrokerContext,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<Result<(i64, i16), TxnProblem>, CoordinatorError> {
        let partition = self.partition_for(transactional_id);
        let id = transactional_id.to_owned();
        // A new producer id only when the epoch ran out (every 32,767 transactions).
        let exhausted = {
            let id = id.clone();
            self.runtime
                .read(partition, move |machine| {
                    machine.needs_fresh_producer_id(&id)
                })
                .await?
        };
        let fresh_producer_id =
            if exhausted {
                Some(ctx.producer_ids.next().await.map_err(|error| {
                    CoordinatorError::NotAvailable {
                        topic: TRANSACTION_STATE_TOPIC.to_owned(),
                        reason: format!("no producer id: {error}"),
                    }
                })?)
            } else {
                None
            };
        self.runtime
            .write(partition, move |machine, op| {
                machine.end_txn_v2(
                    &id,
                    producer_id,
                    producer_epoch,
                    commit,
                    fresh_producer_id,
                    op,
                )
            })
            .await
    }

    /// Aborts the ongoing transaction of `transactional_id` (an operator's abort).
    pub async fn abort(
        &self,
        transactional_id: &str,
    ) -> Result<Result<(), TxnProblem>, CoordinatorError> {
        let partition = self.partition_for(transactional_id);
        let id = transactional_id.to_owned();
        self.runtime
            .write(partition, move |machine, op| machine.abort(&id, op))
            .await
    }

    /// The markers of `job` are written: the transaction completes.
    pub async fn complete(
        &self,
        job: MarkerJob,
    ) -> Result<Result<(), TxnProblem>, CoordinatorError> {
        self.runtime
            .write(job.coordinator_partition, move |machine, op| {
                machine.complete(&job, op)
            })
            .await
    }

    /// Whether `job`'s transaction is still in the job's Prepare state, with its producer id
    /// and epoch: its markers are still to be written. `None` when this broker cannot tell now
    /// (the partition is loading, or moved).
    pub async fn still_preparing(&self, job: &MarkerJob) -> Option<bool> {
        let (id, producer_id, producer_epoch, commit) = (
            job.transactional_id.clone(),
            job.producer_id,
            job.producer_epoch,
            job.commit,
        );
        let expected = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.runtime
            .read(job.coordinator_partition, move |machine| {
                machine.get(&id).is_some_and(|meta| {
                    meta.state == expected
                        && meta.producer_id == producer_id
                        && meta.producer_epoch == producer_epoch
                })
            })
            .await
            .ok()
    }

    /// The metadata of `transactional_id`, if this broker coordinates it and knows it.
    pub async fn describe(
        &self,
        transactional_id: &str,
    ) -> Result<Option<DescribedTxn>, CoordinatorError> {
        let partition = self.partition_for(transactional_id);
        let id = transactional_id.to_owned();
        self.runtime
            .read(partition, move |machine| {
                machine.get(&id).map(|metadata| DescribedTxn {
                    transactional_id: id.clone(),
                    metadata: metadata.clone(),
                })
            })
            .await
    }

    /// Every transactional id of the partitions this broker coordinates.
    pub async fn list(&self) -> Result<Vec<DescribedTxn>, CoordinatorError> {
        let mut all = Vec::new();
        for partition in self.runtime.coordinated() {
            let mut listed = self.runtime.read(partition, TxnMachine::list).await?;
            all.append(&mut listed);
        }
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(all)
    }
}
