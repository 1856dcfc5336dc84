//! Writing the markers of ending transactions (Kafka's `TransactionMarkerChannelManager`): for
//! each [`MarkerJob`] the coordinator's state machines send once a PrepareCommit or PrepareAbort
//! is committed, a WriteTxnMarkers goes to the leader of each of the transaction's partitions
//! (applied in place when that leader is this broker), again after a backoff for the partitions
//! whose leader did not take it, until every marker is written; then the transaction completes.
//! The job is dropped when this broker stops coordinating the transaction's partition at the
//! job's epoch: the new coordinator resumes it from the log. Markers of a deleted topic's
//! partitions are skipped, as Kafka skips them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
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
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// Takes marker jobs until the broker stops, each written by a task of its own.
pub async fn run(
    coordinator: Arc<TxnCoordinator>,
    ctx: Arc<BrokerContext>,
    mut jobs: mpsc::UnboundedReceiver<MarkerJob>,
) {
    loop {
        let job = tokio::select! {
            job = jobs.recv() => job,
            () = ctx.shutdown.cancelled() => return,
        };
        let Some(job) = job else {
            return;
        };
        tokio::spawn(deliver(coordinator.clone(), ctx.clone(), job));
    }
}

/// Writes every marker of `job`, then completes its transaction.
async fn deliver(coordinator: Arc<TxnCoordinator>, ctx: Arc<BrokerContext>, job: MarkerJob) {
    let mut pending: BTreeSet<TxnPartition> = job.partitions.iter().cloned().collect();
    let mut backoff = RETRY_BACKOFF_MIN;
    // Each pass writes some markers or waits a backoff; it ends once all are written, or when
    // this broker no longer coordinates the transaction (then the new coordinator resumes it).
    while !pending.is_empty() {
        if ctx.shutdown.is_cancelled()
            || !coordinator.coordinates(&ctx, job.coordinator_partition, job.coordinator_epoch)
        {
            tracing::debug!(transactional_id = %job.transactional_id, "no longer the coordinator: markers left to the next one");
            return;
        }
        let image = ctx.image();
        let mut by_leader: BTreeMap<BrokerId, Vec<TxnPartition>> = BTreeMap::new();
        let mut gone = Vec::new();
        for (topic, partition) in &pending {
            let Some(record) = image.topic_by_name(topic) else {
                gone.push((topic.clone(), *partition));
                continue;
            };
            let leader = u32::try_from(*partition)
                .ok()
                .and_then(|p| image.partition(&record.topic_id, p))
                .and_then(|p| p.leader);
            if let Some(leader) = leader {
                by_leader
                    .entry(leader)
                    .or_default()
                    .push((topic.clone(), *partition));
            }
        }
        for deleted in gone {
            tracing::info!(transactional_id = %job.transactional_id, topic = %deleted.0, "topic deleted: its marker is skipped");
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
                        let deleted = code == UNKNOWN_TOPIC_OR_PARTITION
                            && ctx.image().topic_by_name(&tp.0).is_none();
                        if code == 0 || deleted {
                            pending.remove(&tp);
                        } else {
                            tracing::debug!(transactional_id = %job.transactional_id, topic = %tp.0, partition = tp.1, code, "marker not written yet");
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
