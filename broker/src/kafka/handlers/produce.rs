//! Produce: appends each partition's record batch on the partition leader and answers by
//! `acks`: 0 sends nothing back (and closes the connection if a write failed), 1 answers once the leader appended, -1 (all) once the high
//! watermark passed the batch (or REQUEST_TIMED_OUT after `timeout_ms`), and refuses with
//! NOT_ENOUGH_REPLICAS, appending nothing, while the ISR is smaller than
//! `min.insync.replicas`.
//!
//! Batches stay the client's bytes: the broker validates the header and CRC and patches offsets
//! in place. It decompresses only when the topic's `compression.type` names a codec other than
//! the batch's, and then re-encodes with that codec.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::records::Compression;
use streambus_storage::batch::{self, BatchHeader};
use streambus_storage::{AppendInfo, StorageError};
use tokio::sync::Notify;

use super::str_bytes;
use crate::context::BrokerContext;
use crate::kafka::api::Outcome;
use crate::kafka::errors::{code_and_message, Failure, RequestProblem};
use crate::partition::manager::LeaderLookup;
use crate::partition::{Partition, ReplicaError};
use crate::topic_config::CompressionType;

/// One partition's append, planned before the blocking work.
struct Append {
    topic: usize,
    slot: usize,
    partition: Arc<Partition>,
    batch: Bytes,
    leader_epoch: i32,
    compression: CompressionType,
}

pub async fn handle(ctx: &BrokerContext, version: i16, request: ProduceRequest) -> Outcome {
    let acks = request.acks;
    let image = ctx.image();
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(request.topic_data.len());
    let mut appends = Vec::new();
    let failed = |index: i32, failure: Failure<'_>| {
        let (code, message) = code_and_message(failure);
        let mut response = PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(code)
            .with_base_offset(-1);
        if version >= 8 {
            response = response.with_error_message(Some(str_bytes(message)));
        }
        response
    };
    for (topic_slot, topic) in request.topic_data.into_iter().enumerate() {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        let record = image.topic_by_name(&topic.name);
        for data in topic.partition_data {
            let index = data.index;
            let problem = if !matches!(acks, -1..=1) {
                Some(Failure::Request(RequestProblem::InvalidRequiredAcks))
            } else if request.transactional_id.is_some() {
                Some(Failure::Request(RequestProblem::TransactionsUnsupported))
            } else {
                None
            };
            if let Some(failure) = problem {
                partitions.push(failed(index, failure));
                continue;
            }
            let Some(record) = record.filter(|_| index >= 0) else {
                partitions.push(failed(
                    index,
                    Failure::Request(RequestProblem::UnknownTopic),
                ));
                continue;
            };
            let partition = match ctx
                .partitions
                .leader(&image, &record.topic_id, index as u32, -1)
                .await
            {
                Ok(partition) => partition,
                Err(lookup) => {
                    partitions.push(failed(index, Failure::Lookup(lookup)));
                    continue;
                }
            };
            let Some(records) = data.records.filter(|r| !r.is_empty()) else {
                partitions.push(failed(
                    index,
                    Failure::Request(RequestProblem::MissingRecords),
                ));
                continue;
            };
            let state = partition.state();
            if acks == -1
                && (state.isr.len() as u64) < u64::from(state.settings.min_insync_replicas)
            {
                partitions.push(failed(
                    index,
                    Failure::Request(RequestProblem::NotEnoughReplicas),
                ));
                continue;
            }
            appends.push(Append {
                topic: topic_slot,
                slot: partitions.len(),
                partition,
                batch: records,
                leader_epoch: state.leader_epoch,
                compression: state.settings.compression,
            });
            partitions.push(PartitionProduceResponse::default().with_index(index));
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }

    // One deadline for the whole request, however many partitions it waits for.
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let planned: Vec<(usize, usize)> = appends.iter().map(|a| (a.topic, a.slot)).collect();
    let outcomes = if appends.is_empty() {
        Some(Vec::new())
    } else {
        tokio::task::spawn_blocking(move || {
            let outcomes: Vec<Result<AppendInfo, ReplicaError>> =
                appends.iter().map(append).collect();
            appends.into_iter().zip(outcomes).collect::<Vec<_>>()
        })
        .await
        .ok()
    };
    if acks == 0 {
        // Kafka closes an acks=0 connection when a write fails: the client's only signal to
        // refresh metadata (e.g. after a leader moved) instead of dropping records forever.
        let failed_before = responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .any(|p| p.error_code != 0);
        let failed_append = outcomes
            .as_ref()
            .is_none_or(|o| o.iter().any(|(_, outcome)| outcome.is_err()));
        return if failed_before || failed_append {
            Outcome::Close
        } else {
            Outcome::NoResponse
        };
    }
    let Some(outcomes) = outcomes else {
        // The append task panicked: what was written is unknown, so nothing is acknowledged;
        // the client retries (an idempotent producer's retry is deduplicated).
        tracing::error!("produce append task panicked");
        for (topic, slot) in planned {
            let entry = &mut responses[topic].partition_responses[slot];
            *entry = failed(entry.index, Failure::Request(RequestProblem::TimedOut));
        }
        return respond(responses);
    };
    for (planned, outcome) in outcomes {
        let slot = &mut responses[planned.topic].partition_responses[planned.slot];
        let index = slot.index;
        match outcome {
            Ok(info) => {
                if acks == -1 {
                    let committed = wait_committed(
                        ctx,
                        &planned.partition,
                        &info,
                        planned.leader_epoch,
                        deadline,
                    )
                    .await;
                    if let Err(failure) = committed {
                        *slot = failed(index, failure);
                        continue;
                    }
                }
                let mut response = PartitionProduceResponse::default()
                    .with_index(index)
                    .with_base_offset(info.base_offset);
                if version >= 2 {
                    response = response.with_log_append_time_ms(info.log_append_time_ms);
                }
                if version >= 5 {
                    response = response.with_log_start_offset(info.log_start_offset);
                }
                *slot = response;
            }
            Err(ReplicaError::WrongRole(_)) => {
                *slot = failed(index, Failure::Lookup(LeaderLookup::NotLeader));
            }
            Err(ReplicaError::Storage(error)) => {
                if !matches!(
                    error,
                    StorageError::BatchTooLarge { .. }
                        | StorageError::InvalidBatch(_)
                        | StorageError::OutOfOrderSequence { .. }
                        | StorageError::InvalidProducerEpoch { .. }
                ) {
                    tracing::warn!(topic = %planned.partition.topic, index, %error, "produce failed");
                }
                *slot = failed(index, Failure::Storage(&error));
            }
        }
    }
    respond(responses)
}

fn respond(responses: Vec<TopicProduceResponse>) -> Outcome {
    let response = ProduceResponse::default().with_responses(responses);
    Outcome::Respond(Box::new(ResponseKind::Produce(response)))
}

/// Validates, recompresses if the topic asks for another codec, appends. Blocking.
fn append(planned: &Append) -> Result<AppendInfo, ReplicaError> {
    let mut batch = planned.batch.clone();
    if let CompressionType::Codec(target) = planned.compression {
        let header = batch::validate(&batch, false).map_err(StorageError::from)?;
        if header.compression() != target as u8 {
            let limit = streambus_storage::decompress::limit_for(
                planned.partition.log().config().max_message_bytes,
            );
            batch = recompress(batch, &header, target, limit)?;
        }
    }
    planned
        .partition
        .append_as_leader(batch, planned.leader_epoch)
}

fn recompress(
    batch: Bytes,
    header: &BatchHeader,
    target: Compression,
    limit: usize,
) -> Result<Bytes, StorageError> {
    let codec_error = |message: String| StorageError::RecordCodec {
        offset: header.base_offset,
        message,
    };
    let mut buf = batch;
    // A client's batch: decompressed within a bound, never without one.
    let set = streambus_storage::decompress::decode_batch(&mut buf, limit)
        .map_err(|e| codec_error(e.to_string()))?;
    let mut records = set.records;
    let encoded = batch::encode_records(&mut records, target)?;
    Ok(encoded.freeze())
}

/// Waits until the high watermark passes the appended batch, at most until `deadline`. Fails
/// when this broker stops leading at `leader_epoch` first (the batch may be truncated away, and
/// a follower's high watermark says nothing about it), or when the ISR that committed it is
/// smaller than `min.insync.replicas` (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND: committed, but
/// with fewer copies than asked for).
async fn wait_committed(
    ctx: &BrokerContext,
    partition: &Partition,
    info: &AppendInfo,
    leader_epoch: i32,
    deadline: tokio::time::Instant,
) -> Result<(), Failure<'static>> {
    // Each pass either returns or waits for a high-watermark move or a role change; bounded
    // by the deadline.
    loop {
        let waiter = Arc::new(Notify::new());
        partition.add_waiter(&waiter, false);
        match partition.committed(info.last_offset, leader_epoch) {
            None => return Err(Failure::Lookup(LeaderLookup::NotLeader)),
            Some(Some(isr_size)) => {
                let min_insync = partition.state().settings.min_insync_replicas;
                if (isr_size as u64) < u64::from(min_insync) {
                    return Err(Failure::Request(
                        RequestProblem::NotEnoughReplicasAfterAppend,
                    ));
                }
                return Ok(());
            }
            Some(None) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::Request(RequestProblem::TimedOut));
        }
        tokio::select! {
            () = waiter.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = ctx.shutdown.cancelled() => return Err(Failure::Request(RequestProblem::TimedOut)),
        }
    }
}
