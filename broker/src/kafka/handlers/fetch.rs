//! Fetch: reads whole record batches from each requested partition this broker leads, up to the
//! high watermark (read_uncommitted) or the last stable offset (read_committed, with the aborted
//! transactions of the range), within `partition_max_bytes` per partition and `max_bytes` in
//! all (the first batch found is returned even when larger, so a consumer always progresses).
//! When fewer than `min_bytes` are available the request parks until an append moves a high
//! watermark or `max_wait_ms` passes.
//!
//! A fetch with a replica id is a follower's: it reads up to the log end (not the high
//! watermark), records the follower's position with the partition (which may move the high
//! watermark and call for an ISR expansion), and parks until the log grows.
//!
//! Fetch sessions (KIP-227) are not kept: every response carries session id 0, which tells
//! clients to send full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use streambus_storage::StorageError;
use tokio::sync::Notify;
use uuid::Uuid;

use super::from_uuid;
use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::partition::manager::LeaderLookup;
use crate::partition::Partition;
use crate::replication::isr;

const READ_COMMITTED: i8 = 1;
/// Kafka's `FINAL_EPOCH`: a sessionless full fetch, or the close of a session.
const FINAL_EPOCH: i32 = -1;

/// One requested partition.
struct Target {
    index: i32,
    fetch_offset: i64,
    partition_max_bytes: usize,
    partition: Result<Arc<Partition>, i16>,
}

/// What a read of one partition produced.
struct Read {
    error: i16,
    records: Bytes,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    aborted: Option<Vec<AbortedTransaction>>,
}

pub async fn handle(ctx: &BrokerContext, version: i16, request: FetchRequest) -> FetchResponse {
    if version >= 7 && request.session_id != 0 && request.session_epoch != FINAL_EPOCH {
        return FetchResponse::default().with_error_code(code(Failure::Request(
            RequestProblem::FetchSessionIdNotFound,
        )));
    }
    let image = ctx.image();
    let replica_id = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let follower = (replica_id >= 0).then_some(replica_id);
    let read_committed = follower.is_none() && request.isolation_level == READ_COMMITTED;
    let limit_wait = ctx.config.kafka.fetch_max_wait_ms_limit;
    let max_wait = Duration::from_millis(
        u64::try_from(request.max_wait_ms)
            .unwrap_or(0)
            .min(limit_wait),
    );
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(ctx.config.kafka.fetch_max_bytes);

    let mut topics: Vec<(TopicName, Uuid, Vec<Target>)> = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let record = if version >= 13 {
            image.topic_by_id(&from_uuid(&topic.topic_id))
        } else {
            image.topic_by_name(&topic.topic)
        };
        let unknown = if version >= 13 {
            RequestProblem::UnknownTopicId
        } else {
            RequestProblem::UnknownTopic
        };
        let mut targets = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let current_epoch = if version >= 9 {
                wanted.current_leader_epoch
            } else {
                -1
            };
            let partition = match record {
                Some(record) if wanted.partition >= 0 => ctx
                    .partitions
                    .leader(
                        &image,
                        &record.topic_id,
                        wanted.partition as u32,
                        current_epoch,
                    )
                    .await
                    .map_err(|lookup| code(Failure::Lookup(lookup))),
                _ => Err(code(Failure::Request(unknown))),
            };
            let partition = match (partition, follower) {
                (Ok(partition), Some(replica)) => {
                    // The epoch the lookup checked against the image; the position is
                    // recorded only if the partition is still at it.
                    let leader_epoch = record
                        .and_then(|r| r.partition(wanted.partition as u32))
                        .map_or(-1, |p| p.leader_epoch);
                    match partition.record_follower_fetch(
                        replica,
                        wanted.fetch_offset,
                        leader_epoch,
                    ) {
                        Ok(Some(change)) => isr::propose(
                            ctx.node.clone(),
                            ctx.broker_id(),
                            partition.clone(),
                            change,
                        ),
                        Ok(None) => {}
                        Err(_) => {
                            // Not a replica of this partition (or leadership just moved).
                            targets.push(Target {
                                index: wanted.partition,
                                fetch_offset: wanted.fetch_offset,
                                partition_max_bytes: 0,
                                partition: Err(code(Failure::Lookup(LeaderLookup::NotLeader))),
                            });
                            continue;
                        }
                    }
                    Ok(partition)
                }
                (other, _) => other,
            };
            targets.push(Target {
                index: wanted.partition,
                fetch_offset: wanted.fetch_offset,
                partition_max_bytes: usize::try_from(wanted.partition_max_bytes).unwrap_or(0),
                partition,
            });
        }
        topics.push((topic.topic, topic.topic_id, targets));
    }

    let topics = Arc::new(topics);
    let deadline = tokio::time::Instant::now() + max_wait;
    // Each pass reads once, then answers or parks until a high watermark moves; the deadline
    // bounds the number of passes.
    let reads = loop {
        let waiter = Arc::new(Notify::new());
        for (_, _, targets) in topics.iter() {
            for target in targets {
                if let Ok(partition) = &target.partition {
                    partition.add_waiter(&waiter, follower.is_some());
                }
            }
        }
        let snapshot = topics.clone();
        let mode = match follower {
            Some(_) => ReadMode::Replica,
            None if read_committed => ReadMode::Committed,
            None => ReadMode::Uncommitted,
        };
        let reads = tokio::task::spawn_blocking(move || read_all(&snapshot, max_bytes, mode))
            .await
            .unwrap_or_default();
        let bytes: usize = reads.iter().flatten().map(|r| r.records.len()).sum();
        let failed = reads.iter().flatten().any(|r| r.error != 0);
        if bytes >= min_bytes
            || failed
            || tokio::time::Instant::now() >= deadline
            || reads.is_empty()
        {
            break reads;
        }
        tokio::select! {
            () = waiter.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = ctx.shutdown.cancelled() => break reads,
        }
    };

    let responses = topics
        .iter()
        .zip(reads)
        .map(|((name, topic_id, targets), reads)| {
            let partitions = targets
                .iter()
                .zip(reads)
                .map(|(target, read)| {
                    let mut data = PartitionData::default()
                        .with_partition_index(target.index)
                        .with_error_code(read.error)
                        .with_high_watermark(read.high_watermark)
                        .with_last_stable_offset(read.last_stable_offset)
                        .with_aborted_transactions(read.aborted)
                        .with_records(Some(read.records));
                    if version >= 5 {
                        data = data.with_log_start_offset(read.log_start_offset);
                    }
                    data
                })
                .collect();
            let mut response = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= 13 {
                response = response.with_topic_id(*topic_id);
            } else {
                response = response.with_topic(name.clone());
            }
            response
        })
        .collect();
    FetchResponse::default().with_responses(responses)
}

/// How far a fetch may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadMode {
    /// A consumer with read_uncommitted: up to the high watermark.
    Uncommitted,
    /// A consumer with read_committed: up to the last stable offset.
    Committed,
    /// A follower: up to the log end.
    Replica,
}

/// Reads every target (blocking), within the byte budgets.
fn read_all(
    topics: &[(TopicName, Uuid, Vec<Target>)],
    max_bytes: usize,
    mode: ReadMode,
) -> Vec<Vec<Read>> {
    let mut remaining = max_bytes;
    let mut total = 0usize;
    topics
        .iter()
        .map(|(_, _, targets)| {
            targets
                .iter()
                .map(|target| {
                    let read = read_one(target, remaining, mode);
                    let mut read = read;
                    // Past the first batch returned, budgets are strict.
                    if total > 0 && read.records.len() > remaining {
                        read.records = Bytes::new();
                        read.aborted = read.aborted.map(|_| Vec::new());
                    }
                    total += read.records.len();
                    remaining = remaining.saturating_sub(read.records.len());
                    read
                })
                .collect()
        })
        .collect()
}

fn read_one(target: &Target, remaining: usize, mode: ReadMode) -> Read {
    let read_committed = mode == ReadMode::Committed;
    let failed = |error: i16| Read {
        error,
        records: Bytes::new(),
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        aborted: None,
    };
    let partition = match &target.partition {
        Ok(partition) => partition,
        Err(error) => return failed(*error),
    };
    let log = partition.log();
    let high_watermark = partition.high_watermark();
    let last_stable_offset = partition.last_stable_offset();
    let upper = match mode {
        ReadMode::Committed => last_stable_offset,
        ReadMode::Uncommitted => high_watermark,
        ReadMode::Replica => i64::MAX,
    };
    let budget = target.partition_max_bytes.min(remaining);
    let result = if budget == 0 {
        // Out of budget: report offsets only (an out-of-range offset is still an error).
        log.read(target.fetch_offset, 0, target.fetch_offset)
            .map(|mut r| {
                r.records = Bytes::new();
                r
            })
    } else {
        log.read(target.fetch_offset, budget, upper)
    };
    match result {
        Ok(read) => {
            let aborted = read_committed.then(|| {
                log.aborted_transactions(target.fetch_offset, upper)
                    .into_iter()
                    .map(|txn| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(txn.producer_id))
                            .with_first_offset(txn.first_offset)
                    })
                    .collect()
            });
            Read {
                error: 0,
                records: read.records,
                high_watermark,
                last_stable_offset,
                log_start_offset: read.log_start_offset,
                aborted,
            }
        }
        Err(error) => {
            if !matches!(error, StorageError::OffsetOutOfRange { .. }) {
                tracing::warn!(topic = %partition.topic, index = partition.index, %error, "fetch read failed");
            }
            let mut read = failed(code(Failure::Storage(&error)));
            read.high_watermark = high_watermark;
            read.log_start_offset = log.log_start_offset();
            read
        }
    }
}
