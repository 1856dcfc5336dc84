//! Writing the markers of ending transactions (Kafka's `TransactionMarkerChannelManager`): for
//! each [`MarkerJob`] the coordinator's state machines send once a PrepareCommit or PrepareAbort
//! is committed, a WriteTxnMarkers goes to the leader of each of the transaction's partitions
//! (applied in place when that leader is this broker), again after a backoff for the partitions
//! whose leader did not take it, until every marker is written; then the transaction completes.
//! The job is dropped when this broker stops coordinating the transaction's partition at the
//! job's epoch: the new coordinator resumes it from the log, or when the transaction left the
//! job's Prepare state (another task completed it). One task runs per job: a coordinator that
//! reloads its partition sends the jobs of prepared transactions again, and a second task could
//! otherwise write a late marker into the producer's next transaction. Markers of a deleted
//! topic's (or partition's) partitions are skipped, as Kafka skips them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use streambus_raft::command::BrokerId;
use tokio::sync::mpsc;

use super::coordinator::TxnCoordinator;
use super::machine::MarkerJob;
use super::state::TxnPartition;
use crate::context::BrokerContext;

/// The first pause before markers a leader did not take are sent again; it doubles up to
/// [`RETRY_BACKOFF_MAX`].
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long one leader may take to connect and answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// WriteTxnMarkers v1 (flexible), which every broker of ours serves.
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
/// Kafka's codes a marker's answer is told apart by.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const RECORD_LIST_TOO_LARGE: i16 = 18;
const INVALID_REQUIRED_ACKS: i16 = 21;
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const TRANSACTION_COORDINATOR_FENCED: i16 = 52;

/// A job's identity: one task per transaction end and coordinator epoch. A coordinator that
/// reloads at a later epoch starts its own task; the older one stops at its next pass, since it
/// no longer coordinates at its epoch.
type JobKey = (String, i64, i16, bool, u32, i32);

fn key_of(job: &MarkerJob) -> JobKey {
    (
        job.transactional_id.clone(),
        job.producer_id,
        job.producer_epoch,
        job.commit,
        job.coordinator_partition,
        job.coordinator_epoch,
    )
}

/// The jobs with a task running.
#[derive(Default)]
struct InFlight(Mutex<HashSet<JobKey>>);

impl InFlight {
    /// Registers `job`; `None` when a task already runs it.
    fn claim(self: &Arc<Self>, job: &MarkerJob) -> Option<Claim> {
        let key = key_of(job);
        let mut running = self.0.lock().unwrap_or_else(|e| e.into_inner());
        running.insert(key.clone()).then(|| Claim {
            in_flight: Arc::clone(self),
            key,
        })
    }
}

/// Unregisters its job when its task ends.
struct Claim {
    in_flight: Arc<InFlight>,
    key: JobKey,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut running = self.in_flight.0.lock().unwrap_or_else(|e| e.into_inner());
        running.remove(&self.key);
    }
}

/// What a leader's answer means for one partition's marker (Kafka's
/// `TransactionMarkerRequestCompletionHandler`).
#[derive(Debug, PartialEq, Eq)]
enum Answered {
    Written,
    /// Never writable (the batch is refused as malformed, or a later epoch of the producer is
    /// on the partition): logged and left, so the transaction can complete.
    Abandoned,
    /// A newer coordinator exists: it resumes the job.
    Fenced,
    /// Not written yet (no leader, too few replicas, loading): sent again after a backoff.
    Retry,
}

fn answered(code: i16, topic_deleted: bool) -> Answered {
    match code {
        0 | UNSUPPORTED_FOR_MESSAGE_FORMAT => Answered::Written,
        UNKNOWN_TOPIC_OR_PARTITION if topic_deleted => Answered::Written,
        TRANSACTION_COORDINATOR_FENCED => Answered::Fenced,
        CORRUPT_MESSAGE
        | MESSAGE_TOO_LARGE
        | RECORD_LIST_TOO_LARGE
        | INVALID_REQUIRED_ACKS
        | INVALID_PRODUCER_EPOCH => Answered::Abandoned,
        _ => Answered::Retry,
    }
}

/// Takes marker jobs until the broker stops, each written by a task of its own.
pub async fn run(
    coordinator: Arc<TxnCoordinator>,
    ctx: Arc<BrokerContext>,
    mut jobs: mpsc::UnboundedReceiver<MarkerJob>,
) {
    let in_flight = Arc::new(InFlight::default());
    loop {
        let job = tokio::select! {
            job = jobs.recv() => job,
            () = ctx.shutdown.cancelled() => return,
        };
        let Some(job) = job else {
            return;
        };
        let Some(claim) = in_flight.claim(&job) else {
            tracing::debug!(transactional_id = %job.transactional_id, "markers already being written");
            continue;
        };
        tokio::spawn(deliver(coordinator.clone(), ctx.clone(), job, claim));
    }
}

/// Writes every marker of `job`, then completes its transaction.
async fn deliver(
    coordinator: Arc<TxnCoordinator>,
    ctx: Arc<BrokerContext>,
    job: MarkerJob,
    _claim: Claim,
) {
    let mut pending: BTreeSet<TxnPartition> = job.partitions.iter().cloned().collect();
    let mut backoff = RETRY_BACKOFF_MIN;
    let mut first_pass = true;
    // Each pass writes some markers or waits a backoff; it ends once all are written, or when
    // this broker no longer coordinates the transaction (then the new coordinator resumes it).
    while !pending.is_empty() {
        if ctx.shutdown.is_cancelled()
            || !coordinator.coordinates(&ctx, job.coordinator_partition, job.coordinator_epoch)
        {
            tracing::debug!(transactional_id = %job.transactional_id, "no longer the coordinator: markers left to the next one");
            return;
        }
        // A retry only while the transaction still waits for these markers: once it moved on
        // (completed by another task), a late marker would end the producer's next one.
        // Not knowing (the partition reloading) waits a backoff and asks again.
        let go_on = first_pass
            || {
                match coordinator.still_preparing(&job).await {
                    Some(true) => true,
                    Some(false) => {
                        tracing::debug!(transactional_id = %job.transactional_id, "the transaction moved on: its markers are left");
                        return;
                    }
                    None => false,
                }
            };
        first_pass = false;
        if !go_on {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = ctx.shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            continue;
        }
        let image = ctx.image();
        let mut by_leader: BTreeMap<BrokerId, Vec<TxnPartition>> = BTreeMap::new();
        let mut gone = Vec::new();
        for (topic, partition) in &pending {
            // A deleted topic, or a partition index it does not have (deleted and created
            // again with fewer partitions): there is nothing to mark.
            let Some(assignment) = image.topic_by_name(topic).and_then(|record| {
                u32::try_from(*partition)
                    .ok()
                    .and_then(|p| image.partition(&record.topic_id, p))
            }) else {
                gone.push((topic.clone(), *partition));
                continue;
            };
            if let Some(leader) = assignment.leader {
                by_leader
                    .entry(leader)
                    .or_default()
                    .push((topic.clone(), *partition));
            }
        }
        for deleted in gone {
            tracing::info!(transactional_id = %job.transactional_id, topic = %deleted.0, partition = deleted.1, "partition deleted: its marker is skipped");
            pending.remove(&deleted);
        }
        for (leader, partitions) in by_leader {
            let request = request_for(&job, &partitions);
            let answer = if leader == ctx.broker_id() {
                Ok(crate::kafka::handlers::write_txn_markers::apply(&ctx, request).await)
            } else {
                send(&ctx, leader, &request).await
            };
            match answer {
                Ok(response) => {
                    for (tp, code) in outcomes(&response) {
                        let deleted = ctx.image().topic_by_name(&tp.0).is_none();
                        match answered(code, deleted) {
                            Answered::Written => {
                                pending.remove(&tp);
                            }
                            Answered::Abandoned => {
                                tracing::error!(transactional_id = %job.transactional_id, topic = %tp.0, partition = tp.1, code, "the partition's leader refused the marker for good: it is left unwritten");
                                pending.remove(&tp);
                            }
                            Answered::Fenced => {
                                tracing::info!(transactional_id = %job.transactional_id, "a newer transaction coordinator exists: markers left to it");
                                return;
                            }
                            Answered::Retry => {
                                tracing::debug!(transactional_id = %job.transactional_id, topic = %tp.0, partition = tp.1, code, "marker not written yet");
                            }
                        }
                    }
                }
                Err(reason) => {
                    tracing::debug!(transactional_id = %job.transactional_id, leader, %reason, "markers not sent");
                }
            }
        }
        if !pending.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = ctx.shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }
    // The markers are written: the transaction completes. A write that fails (too few in-sync
    // replicas for a moment) is tried again while this broker still coordinates it; once it
    // does not, the next coordinator completes it from the log.
    let id = job.transactional_id.clone();
    let mut backoff = RETRY_BACKOFF_MIN;
    loop {
        match coordinator.complete(job.clone()).await {
            Ok(Ok(())) => return,
            Ok(Err(problem)) => {
                tracing::debug!(transactional_id = %id, ?problem, "transaction moved on before it completed");
                return;
            }
            Err(error) => {
                tracing::debug!(transactional_id = %id, %error, "transaction not completed yet");
            }
        }
        if ctx.shutdown.is_cancelled()
            || !coordinator.coordinates(&ctx, job.coordinator_partition, job.coordinator_epoch)
        {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = ctx.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
    }
}

/// The WriteTxnMarkers of `job` for `partitions`.
fn request_for(job: &MarkerJob, partitions: &[TxnPartition]) -> WriteTxnMarkersRequest {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(*partition);
    }
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(job.producer_id))
        .with_producer_epoch(job.producer_epoch)
        .with_transaction_result(job.commit)
        .with_coordinator_epoch(job.coordinator_epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, indexes)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partition_indexes(indexes)
                })
                .collect(),
        );
    WriteTxnMarkersRequest::default().with_markers(vec![marker])
}

/// Each partition's error code in `response`.
fn outcomes(response: &WriteTxnMarkersResponse) -> Vec<(TxnPartition, i16)> {
    response
        .markers
        .iter()
        .flat_map(|marker| &marker.topics)
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|p| ((topic.name.0.to_string(), p.partition_index), p.error_code))
        })
        .collect()
}

/// Sends `request` to broker `leader`.
async fn send(
    ctx: &BrokerContext,
    leader: BrokerId,
    request: &WriteTxnMarkersRequest,
) -> Result<WriteTxnMarkersResponse, String> {
    let image = ctx.image();
    let endpoint = crate::endpoints::live_kafka_endpoint(&image, leader)
        .ok_or_else(|| "no live endpoint".to_owned())?;
    let address = format!("{}:{}", endpoint.host, endpoint.port);
    ctx.peers
        .call(
            leader,
            &address,
            request,
            WRITE_TXN_MARKERS_VERSION,
            PEER_TIMEOUT,
        )
        .await
        .map_err(|e| format!("{address}: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> MarkerJob {
        MarkerJob {
            coordinator_partition: 0,
            coordinator_epoch: 1,
            transactional_id: id.to_owned(),
            producer_id: 7,
            producer_epoch: 2,
            commit: true,
            partitions: Vec::new(),
        }
    }

    #[test]
    fn one_task_per_job_until_it_ends() {
        let in_flight = Arc::new(InFlight::default());
        let first = in_flight.claim(&job("a")).expect("first claim");
        assert!(
            in_flight.claim(&job("a")).is_none(),
            "a duplicate is refused"
        );
        let other = in_flight.claim(&job("b"));
        assert!(other.is_some(), "another transaction runs alongside");
        let reloaded = MarkerJob {
            coordinator_epoch: 2,
            ..job("a")
        };
        assert!(
            in_flight.claim(&reloaded).is_some(),
            "a coordinator reloaded at a later epoch runs its own task"
        );
        drop(first);
        assert!(in_flight.claim(&job("a")).is_some(), "claimable once ended");
    }

    #[test]
    fn answers_are_read_as_kafka_reads_them() {
        assert_eq!(answered(0, false), Answered::Written);
        assert_eq!(
            answered(UNKNOWN_TOPIC_OR_PARTITION, true),
            Answered::Written
        );
        assert_eq!(answered(UNKNOWN_TOPIC_OR_PARTITION, false), Answered::Retry);
        assert_eq!(
            answered(6, false),
            Answered::Retry,
            "NOT_LEADER_OR_FOLLOWER"
        );
        assert_eq!(answered(19, false), Answered::Retry, "NOT_ENOUGH_REPLICAS");
        assert_eq!(answered(INVALID_PRODUCER_EPOCH, false), Answered::Abandoned);
        assert_eq!(answered(CORRUPT_MESSAGE, false), Answered::Abandoned);
        assert_eq!(
            answered(TRANSACTION_COORDINATOR_FENCED, false),
            Answered::Fenced
        );
    }
}
