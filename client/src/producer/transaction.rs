//! The transactional producer (a `transactional_id`), as the Java client's `TransactionManager`
//! drives it: the producer id comes from the id's transaction coordinator (InitProducerId,
//! which fences older instances and aborts what they left open); each partition a transaction
//! writes to is added to it (AddPartitionsToTxn) before its first batch leaves; consumer
//! offsets join it with AddOffsetsToTxn and TxnOffsetCommit; EndTxn commits or aborts it once
//! every record was acknowledged.
//!
//! Errors: a fenced producer (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH) is fatal — every later
//! call fails; any other failure inside a transaction makes it abortable: commit fails, abort
//! ends it and a new one can begin (after a bumped epoch, KIP-360, when sequences broke).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProduceRequest, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::accumulator::{BatchState, Shared};
use super::Producer;
use crate::error::{Error, Result};
use crate::group::coordinator::Coordinator;
use crate::group::OffsetAndMetadata;
use crate::record::TopicPartition;

/// Kafka's codes this module acts on.
const CONCURRENT_TRANSACTIONS: i16 = 51;
const PRODUCER_FENCED: i16 = 90;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// What a consumer group says of the member whose offsets a transaction commits (Java's
/// `ConsumerGroupMetadata`): the coordinator checks it as an offset commit's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    pub group_id: String,
    /// -1 outside group management.
    pub generation_id: i32,
    /// Empty outside group management.
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// A group used without membership (offsets committed as nobody), as `kafka-python`'s
    /// `group_id` alone does.
    pub fn standalone(group_id: &str) -> ConsumerGroupMetadata {
        ConsumerGroupMetadata {
            group_id: group_id.to_owned(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// Whether `code` fences this producer for good.
fn fenced(code: i16) -> bool {
    matches!(
        code,
        PRODUCER_FENCED | INVALID_PRODUCER_EPOCH | TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    )
}

/// The transaction coordinator's connection of a transactional producer.
fn coordinator(shared: &Shared) -> Result<Arc<Coordinator>> {
    let id = shared.config.transactional_id.as_deref().ok_or_else(|| {
        Error::InvalidArgument("not a transactional producer (no transactional_id)".to_owned())
    })?;
    Ok(shared
        .txn_coordinator
        .get_or_init(|| Coordinator::for_transaction(shared.client.clone(), id))
        .clone())
}

fn deadline(shared: &Shared) -> Instant {
    Instant::now() + shared.client.config().api_timeout
}

/// Sends a request of the transaction coordinator's again while it answers
/// CONCURRENT_TRANSACTIONS (a transaction of this id is still completing), with a backoff,
/// until the client's API timeout; returns the answer's code with the response.
async fn send_txn<R: kafka_protocol::protocol::Request>(
    shared: &Shared,
    build: impl Fn(i16) -> R,
    versions: (i16, i16),
    code: impl Fn(&R::Response) -> i16,
) -> Result<(i16, R::Response)> {
    let coordinator = coordinator(shared)?;
    let until = deadline(shared);
    let mut backoff = shared.client.config().retry_backoff;
    loop {
        let response = coordinator
            .send(&build, versions, None, until, &code)
            .await?;
        let answer = code(&response);
        if answer != CONCURRENT_TRANSACTIONS || Instant::now() + backoff >= until {
            return Ok((answer, response));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(shared.client.config().retry_backoff_max);
    }
}

/// InitProducerId at the transaction coordinator: the producer id and epoch, with `expected`
/// the pair this producer had (KIP-360: bumping after an abortable error).
pub(super) async fn init(shared: &Shared, expected: Option<(i64, i16)>) -> Result<()> {
    let id = shared.config.transactional_id.clone().unwrap_or_default();
    let timeout_ms =
        i32::try_from(shared.config.transaction_timeout.as_millis()).unwrap_or(i32::MAX);
    let (pid, epoch) = expected.unwrap_or((-1, -1));
    let (code, response) = send_txn(
        shared,
        |_| {
            InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(str_bytes(&id))))
                .with_transaction_timeout_ms(timeout_ms)
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
        },
        (0, 4),
        |r| r.error_code,
    )
    .await?;
    if fenced(code) {
        let error = Error::kafka(code, Some(format!("InitProducerId({id})")));
        shared.lock().fatal = Some(error.clone());
        return Err(error);
    }
    Error::check(code, || Some(format!("InitProducerId({id})")))?;
    // Transaction version 2 when the coordinator's broker finalizes it and serves its
    // versions (Kafka 4's Java client reads the same feature).
    let v2 = shared.config.transaction_version_2 && {
        let conn = coordinator(shared)?.connection().await?;
        conn.transaction_version() >= 2
            && conn.version::<EndTxnRequest>(5, 5).is_ok()
            && conn.version::<ProduceRequest>(12, 12).is_ok()
            && conn.version::<TxnOffsetCommitRequest>(5, 5).is_ok()
    };
    let mut state = shared.lock();
    state.producer_id = response.producer_id.0;
    state.producer_epoch = response.producer_epoch;
    state.needs_producer_id = false;
    if let Some(txn) = state.txn.as_mut() {
        txn.v2 = v2;
    }
    for queue in state.queues.values_mut() {
        queue.next_sequence = 0;
    }
    tracing::debug!(transactional_id = %id, producer_id = state.producer_id, epoch = state.producer_epoch, "transactional producer id");
    Ok(())
}

/// Starts adding the partitions written to but not yet added, in a task, when none runs.
pub(super) fn start_adding_if_needed(shared: &Arc<Shared>) {
    let partitions: Vec<TopicPartition> = {
        let mut state = shared.lock();
        let Some(txn) = state.txn.as_mut() else {
            return;
        };
        if txn.adding || txn.to_add.is_empty() {
            return;
        }
        txn.adding = true;
        txn.to_add.iter().cloned().collect()
    };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let outcome = add_partitions(&shared, &partitions).await;
        let mut guard = shared.lock();
        let state = &mut *guard;
        let mut failure = None;
        if let Some(txn) = state.txn.as_mut() {
            txn.adding = false;
            for tp in &partitions {
                txn.to_add.remove(tp);
            }
            match outcome {
                Ok(()) => {
                    txn.added.extend(partitions.iter().cloned());
                    txn.started = true;
                }
                Err(error) => {
                    tracing::warn!(%error, "partitions not added to the transaction");
                    txn.failed.get_or_insert(error.clone());
                    failure = Some(error);
                }
            }
        }
        if let Some(error) = failure {
            // Their records can never be sent in this transaction: they fail now.
            for tp in &partitions {
                if let Some(queue) = state.queues.get_mut(tp) {
                    for batch in queue.batches.iter_mut() {
                        if matches!(batch.state, BatchState::Open) {
                            batch.state = BatchState::Failed(error.clone());
                        }
                    }
                }
            }
        }
        drop(guard);
        shared.wake_sender.notify_one();
    });
}

async fn add_partitions(shared: &Shared, partitions: &[TopicPartition]) -> Result<()> {
    let id = shared.config.transactional_id.clone().unwrap_or_default();
    let (pid, epoch) = {
        let state = shared.lock();
        (state.producer_id, state.producer_epoch)
    };
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let topics: Vec<AddPartitionsToTxnTopic> = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    let first_code = |r: &kafka_protocol::messages::AddPartitionsToTxnResponse| {
        r.results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| &t.results_by_partition)
            .map(|p| p.partition_error_code)
            .find(|code| *code != 0)
            .unwrap_or(0)
    };
    let (code, _) = send_txn(
        shared,
        |_| {
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(str_bytes(&id)))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(topics.clone())
        },
        (0, 3),
        first_code,
    )
    .await?;
    if fenced(code) {
        let error = Error::kafka(code, Some(format!("AddPartitionsToTxn({id})")));
        shared.lock().fatal = Some(error.clone());
        return Err(error);
    }
    Error::check(code, || Some(format!("AddPartitionsToTxn({id})")))
}

impl Producer {
    fn txn_check(&self) -> Result<()> {
        let state = self.shared.lock();
        if let Some(error) = &state.fatal {
            return Err(error.clone());
        }
        if state.txn.is_none() {
            return Err(Error::InvalidArgument(
                "not a transactional producer (no transactional_id)".to_owned(),
            ));
        }
        Ok(())
    }

    /// The transaction version in use (1, or 2 for KIP-890 part 2); `None` for a producer
    /// that is not transactional.
    pub fn transaction_version(&self) -> Option<u8> {
        let state = self.shared.lock();
        state.txn.as_ref().map(|txn| if txn.v2 { 2 } else { 1 })
    }

    /// Opens a transaction: the records sent until it is committed or aborted belong to it.
    pub async fn begin_transaction(&self) -> Result<()> {
        self.txn_check()?;
        let mut state = self.shared.lock();
        let txn = state.txn.as_mut().expect("checked transactional");
        if txn.open {
            return Err(Error::InvalidArgument(
                "a transaction is already open".to_owned(),
            ));
        }
        txn.open = true;
        txn.added.clear();
        txn.to_add.clear();
        txn.failed = None;
        txn.started = false;
        Ok(())
    }

    /// Adds `offsets` of `group`'s consumer to the open transaction: they are committed with it
    /// (AddOffsetsToTxn at the transaction coordinator, TxnOffsetCommit at the group's).
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        self.txn_check()?;
        if !self.shared.lock().txn.as_ref().is_some_and(|t| t.open) {
            return Err(Error::InvalidArgument("no open transaction".to_owned()));
        }
        let id = self
            .shared
            .config
            .transactional_id
            .clone()
            .unwrap_or_default();
        let (pid, epoch) = {
            let state = self.shared.lock();
            (state.producer_id, state.producer_epoch)
        };
        let v2 = self.shared.lock().txn.as_ref().is_some_and(|t| t.v2);
        if v2 {
            // The group coordinator adds the offsets partition; the transaction may have
            // begun there even if the answer is lost.
            if let Some(txn) = self.shared.lock().txn.as_mut() {
                txn.started = true;
            }
        } else {
            let (code, _) = send_txn(
                &self.shared,
                |_| {
                    AddOffsetsToTxnRequest::default()
                        .with_transactional_id(TransactionalId(str_bytes(&id)))
                        .with_producer_id(ProducerId(pid))
                        .with_producer_epoch(epoch)
                        .with_group_id(GroupId(str_bytes(&group.group_id)))
                },
                (0, 3),
                |r| r.error_code,
            )
            .await?;
            self.txn_outcome(code, "AddOffsetsToTxn")?;
            if let Some(txn) = self.shared.lock().txn.as_mut() {
                txn.started = true;
            }
        }
        let mut by_topic: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, offset) in offsets {
            by_topic.entry(&tp.topic).or_default().push(
                TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(offset.offset)
                    .with_committed_leader_epoch(offset.leader_epoch.unwrap_or(-1))
                    .with_committed_metadata(Some(str_bytes(&offset.metadata))),
            );
        }
        let topics: Vec<TxnOffsetCommitRequestTopic> = by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(partitions)
            })
            .collect();
        let group_coordinator = Coordinator::new(self.shared.client.clone(), &group.group_id);
        let request = |version: i16| {
            let request = TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(str_bytes(&id)))
                .with_group_id(GroupId(str_bytes(&group.group_id)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_topics(topics.clone());
            if version >= 3 {
                request
                    .with_generation_id(group.generation_id)
                    .with_member_id(str_bytes(&group.member_id))
                    .with_group_instance_id(group.group_instance_id.as_deref().map(str_bytes))
            } else {
                request
            }
        };
        let first_code = |r: &kafka_protocol::messages::TxnOffsetCommitResponse| {
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.error_code)
                .find(|code| *code != 0)
                .unwrap_or(0)
        };
        let versions = if v2 { (5, 5) } else { (0, 4) };
        let until = deadline(&self.shared);
        let mut backoff = self.shared.client.config().retry_backoff;
        loop {
            let response = group_coordinator
                .send(&request, versions, None, until, first_code)
                .await?;
            let code = first_code(&response);
            // The previous transaction still ending (version 2): asked again, as Java does.
            if code != CONCURRENT_TRANSACTIONS || Instant::now() + backoff >= until {
                return self.txn_outcome(code, "TxnOffsetCommit");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.shared.client.config().retry_backoff_max);
        }
    }

    /// Records a failure answer of a transactional request: fatal when fenced, otherwise the
    /// transaction can only be aborted.
    fn txn_outcome(&self, code: i16, what: &str) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        let error = Error::kafka(code, Some(what.to_owned()));
        let mut state = self.shared.lock();
        if fenced(code) {
            state.fatal = Some(error.clone());
        } else if let Some(txn) = state.txn.as_mut() {
            txn.failed.get_or_insert(error.clone());
        }
        Err(error)
    }

    /// Commits the open transaction once every record sent in it was acknowledged (and every
    /// partition added); fails without committing when something in it failed: abort it then.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true).await
    }

    /// Aborts the open transaction: its records and offsets are never read_committed.
    pub async fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(false).await
    }

    /// Marks the transaction ended; returns whether the producer needs a new epoch first.
    fn close_transaction(&self) -> bool {
        let mut state = self.shared.lock();
        if let Some(txn) = state.txn.as_mut() {
            txn.open = false;
            txn.added.clear();
            txn.to_add.clear();
            txn.failed = None;
            txn.started = false;
            txn.ending = None;
        }
        state.needs_producer_id
    }

    async fn end_transaction(&self, commit: bool) -> Result<()> {
        self.txn_check()?;
        if !self.shared.lock().txn.as_ref().is_some_and(|t| t.open) {
            return Err(Error::InvalidArgument("no open transaction".to_owned()));
        }
        // Every record sent is acknowledged (or failed) before the transaction ends, and no
        // AddPartitionsToTxn is left to race the EndTxn.
        self.flush().await;
        let until = deadline(&self.shared);
        while self.shared.lock().txn.as_ref().is_some_and(|t| t.adding) {
            if Instant::now() >= until {
                return Err(Error::Timeout(self.shared.client.config().api_timeout));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (failed, started, ending) = {
            let state = self.shared.lock();
            if let Some(error) = &state.fatal {
                return Err(error.clone());
            }
            let txn = state.txn.as_ref().expect("checked transactional");
            (txn.failed.clone(), txn.started, txn.ending)
        };
        if let Some(earlier) = ending.filter(|earlier| *earlier != commit) {
            let (was, now) = if earlier {
                ("commit", "abort")
            } else {
                ("abort", "commit")
            };
            return Err(Error::InvalidArgument(format!(
                "the {was} of this transaction got no clear answer and may be under way: retry \
                 the {was} rather than {now}"
            )));
        }
        if commit && ending.is_none() {
            if let Some(error) = failed {
                return Err(Error::Protocol(format!(
                    "the transaction cannot commit, abort it: {error}"
                )));
            }
        }
        let (pid, epoch) = {
            let state = self.shared.lock();
            (state.producer_id, state.producer_epoch)
        };
        // Nothing joined at the coordinator: there it never began, and ending it is local, as
        // the Java client does.
        if started {
            self.end_at_coordinator(commit, (pid, epoch)).await?;
        }
        if self.close_transaction() {
            // KIP-360: sequences broke in the aborted transaction; the coordinator bumps the
            // epoch of this producer (and only of this one).
            init(&self.shared, Some((pid, epoch))).await?;
            self.shared.wake_sender.notify_one();
        }
        Ok(())
    }

    /// EndTxn at the coordinator. Without a clear answer (no answer, a retriable code) the
    /// end may be under way, so only the same end may be tried again (as the Java client has
    /// it); INVALID_TXN_STATE means the coordinator ended the transaction otherwise, and is
    /// fatal.
    async fn end_at_coordinator(&self, commit: bool, (pid, epoch): (i64, i16)) -> Result<()> {
        if let Some(txn) = self.shared.lock().txn.as_mut() {
            txn.ending = Some(commit);
        }
        let id = self
            .shared
            .config
            .transactional_id
            .clone()
            .unwrap_or_default();
        let v2 = self.shared.lock().txn.as_ref().is_some_and(|t| t.v2);
        let (code, response) = send_txn(
            &self.shared,
            |_| {
                EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(str_bytes(&id)))
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_committed(commit)
            },
            if v2 { (5, 5) } else { (0, 4) },
            |r| r.error_code,
        )
        .await?;
        if code == 0 {
            if v2 && response.producer_id.0 >= 0 {
                // Version 2: every transaction ends with a new epoch (or, once the epoch ran
                // out, a new producer id); sequences start again from 0, and no client-side
                // bump is needed after an abort.
                let mut state = self.shared.lock();
                state.producer_id = response.producer_id.0;
                state.producer_epoch = response.producer_epoch;
                state.needs_producer_id = false;
                for queue in state.queues.values_mut() {
                    queue.next_sequence = 0;
                }
            }
            return Ok(());
        }
        let error = Error::kafka(code, Some("EndTxn".to_owned()));
        const INVALID_TXN_STATE: i16 = 48;
        if fenced(code) || code == INVALID_TXN_STATE {
            self.shared.lock().fatal = Some(error.clone());
        }
        Err(error)
    }
}
