//! The producer's sender task: drains ready batches into one Produce request per leader,
//! completes deliveries from the answers, and schedules retries and metadata refreshes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};
use kafka_protocol::ResponseError;

use super::accumulator::{Batch, PartitionQueue, Shared, State};
use super::Acks;
use crate::error::{Error, Result};
use crate::record::{RecordMetadata, TopicPartition};

/// Produce versions used: 3 (record batch v2) to 9 (the last that names topics rather than
/// topic ids).
const PRODUCE_VERSIONS: (i16, i16) = (3, 9);

/// Gets a producer id when idempotence applies, then spawns the sender task, which stops once
/// the producer is closed and everything queued has completed.
pub(super) async fn start(shared: Arc<Shared>) -> Result<()> {
    if idempotent(&shared) {
        init_producer_id(&shared).await?;
    }
    tokio::spawn(run(shared));
    Ok(())
}

fn idempotent(shared: &Shared) -> bool {
    shared.config.enable_idempotence && shared.config.acks == Acks::All
}

async fn init_producer_id(shared: &Shared) -> Result<()> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(i32::MAX)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let response = shared
        .client
        .retry(&[], || async {
            let response = shared.client.send_any(&request, 0, 4).await?;
            Error::check(response.error_code, || Some("InitProducerId".to_owned()))?;
            Ok(response)
        })
        .await?;
    let mut state = shared.lock();
    state.producer_id = response.producer_id.0;
    state.producer_epoch = response.producer_epoch;
    state.needs_producer_id = false;
    for queue in state.queues.values_mut() {
        queue.next_sequence = 0;
    }
    tracing::debug!(producer_id = state.producer_id, "producer id assigned");
    Ok(())
}

/// Batches drained for one broker, each at most `max_request_size` bytes together.
type Requests = HashMap<i32, Vec<Vec<(TopicPartition, Bytes)>>>;

async fn run(shared: Arc<Shared>) {
    loop {
        let wake = shared.wake_sender.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();

        if shared.lock().needs_producer_id {
            if let Err(error) = init_producer_id(&shared).await {
                tracing::warn!(%error, "cannot get a new producer id; retrying");
                tokio::time::sleep(shared.client.config().retry_backoff_max).await;
                continue;
            }
        }
        let (requests, next_wake, finished) = drain(&shared, Instant::now());
        if finished {
            return;
        }
        for (broker, requests) in requests {
            for parts in requests {
                tokio::spawn(send(Arc::clone(&shared), broker, parts));
            }
        }
        maybe_refresh(&shared);
        tokio::select! {
            () = &mut wake => {}
            () = tokio::time::sleep_until(next_wake.into()) => {}
        }
    }
}

/// Takes the ready front batch of each idle partition; returns the requests to send, when to
/// look again, and whether the producer is closed with nothing left.
fn drain(shared: &Shared, now: Instant) -> (Requests, Instant, bool) {
    let metadata = shared.client.metadata();
    let config = &shared.config;
    let mut next_wake = now + Duration::from_secs(3600);
    let mut requests: Requests = HashMap::new();
    let mut request_bytes: HashMap<i32, usize> = HashMap::new();
    let mut guard = shared.lock();
    let state = &mut *guard;
    let mut busy = false;
    let mut expired = Vec::new();
    let mut unsendable = Vec::new();
    for (tp, queue) in state.queues.iter_mut() {
        if queue.in_flight {
            busy = true;
            continue;
        }
        let Some(front) = queue.batches.front() else {
            continue;
        };
        busy = true;
        if now >= front.created + config.delivery_timeout {
            expired.push(tp.clone());
            continue;
        }
        if let Some(at) = queue.retry_at.filter(|at| *at > now) {
            next_wake = next_wake.min(at);
            continue;
        }
        let ready = queue.batches.len() > 1
            || front.bytes >= config.batch_size
            || now >= front.created + config.linger
            || front.generation < state.flush_below
            || front.attempts > 0
            || state.closed;
        if !ready {
            next_wake = next_wake.min(front.created + config.linger);
            continue;
        }
        let Some(leader) = metadata.leader(&tp.topic, tp.partition) else {
            state.refresh_wanted = true;
            next_wake = next_wake.min(now + shared.client.config().retry_backoff);
            continue;
        };
        let producer = (state.producer_id, state.producer_epoch);
        let encoded = match encode_front(queue, config.compression, producer, idempotent(shared)) {
            Ok(bytes) => bytes,
            Err(error) => {
                let batch = queue.batches.pop_front().expect("front exists");
                unsendable.push((batch, error));
                continue;
            }
        };
        queue.in_flight = true;
        let used = request_bytes.entry(leader).or_default();
        let per_broker = requests.entry(leader).or_default();
        if per_broker.is_empty() || *used + encoded.len() > config.max_request_size {
            per_broker.push(Vec::new());
            *used = 0;
        }
        *used += encoded.len();
        per_broker
            .last_mut()
            .expect("pushed above")
            .push((tp.clone(), encoded));
    }
    for tp in expired {
        expire_front(shared, state, &tp, now);
    }
    for (batch, error) in unsendable {
        shared.release(state, &batch);
        fail(batch, &error);
    }
    let finished = state.closed && !busy;
    (requests, next_wake, finished)
}

/// Encodes the front batch once, with its producer id and sequence when idempotent.
fn encode_front(
    queue: &mut PartitionQueue,
    compression: kafka_protocol::records::Compression,
    (producer_id, producer_epoch): (i64, i16),
    idempotent: bool,
) -> Result<Bytes> {
    let next_sequence = queue.next_sequence;
    let front = queue.batches.front_mut().expect("caller checked");
    if let Some(encoded) = &front.encoded {
        return Ok(encoded.clone());
    }
    let count = front.records.len() as i32;
    if idempotent {
        front.base_sequence = next_sequence;
        front.producer_id = producer_id;
        for (i, record) in front.records.iter_mut().enumerate() {
            record.producer_id = producer_id;
            record.producer_epoch = producer_epoch;
            record.sequence = next_sequence.wrapping_add(i as i32) & i32::MAX;
        }
    }
    let mut buf = BytesMut::with_capacity(front.bytes + 128);
    RecordBatchEncoder::encode(
        &mut buf,
        &front.records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| Error::Protocol(format!("encoding a record batch: {e}")))?;
    let encoded = buf.freeze();
    front.encoded = Some(encoded.clone());
    if idempotent {
        // Sequences wrap to 0 after i32::MAX, as the Java client's do.
        queue.next_sequence = next_sequence.wrapping_add(count) & i32::MAX;
    }
    Ok(encoded)
}

/// What became of one partition's batch.
enum Outcome {
    Written {
        base_offset: i64,
        append_time_ms: i64,
    },
    Retry(Error),
    Failed(Error),
}

async fn send(shared: Arc<Shared>, broker: i32, parts: Vec<(TopicPartition, Bytes)>) {
    let mut by_topic: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for (tp, records) in &parts {
        by_topic.entry(&tp.topic).or_default().push(
            PartitionProduceData::default()
                .with_index(tp.partition)
                .with_records(Some(records.clone())),
        );
    }
    let timeout_ms = shared.client.config().request_timeout.as_millis();
    let request = ProduceRequest::default()
        .with_acks(shared.config.acks.wire())
        .with_timeout_ms(i32::try_from(timeout_ms).unwrap_or(i32::MAX))
        .with_topic_data(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partition_data(partitions)
                })
                .collect(),
        );
    let answer = async {
        let conn = shared.client.broker(broker).await?;
        let version = conn.version::<ProduceRequest>(PRODUCE_VERSIONS.0, PRODUCE_VERSIONS.1)?;
        if shared.config.acks == Acks::None {
            conn.send_without_response(&request, version).await?;
            Ok(None)
        } else {
            conn.send(&request, version, None).await.map(Some)
        }
    }
    .await;
    let outcomes: Vec<(TopicPartition, Outcome)> = match answer {
        Err(error) => parts
            .into_iter()
            .map(|(tp, _)| {
                let outcome = if error.is_retriable() {
                    Outcome::Retry(error.clone())
                } else {
                    Outcome::Failed(error.clone())
                };
                (tp, outcome)
            })
            .collect(),
        Ok(None) => parts
            .into_iter()
            .map(|(tp, _)| {
                let written = Outcome::Written {
                    base_offset: -1,
                    append_time_ms: -1,
                };
                (tp, written)
            })
            .collect(),
        Ok(Some(response)) => {
            let mut answers = HashMap::new();
            for topic in &response.responses {
                for p in &topic.partition_responses {
                    answers.insert((topic.name.0.as_str(), p.index), p);
                }
            }
            parts
                .iter()
                .map(|(tp, _)| {
                    let outcome = match answers.get(&(tp.topic.as_str(), tp.partition)) {
                        None => Outcome::Failed(Error::Protocol(format!(
                            "Produce response without {tp}"
                        ))),
                        Some(p) => {
                            outcome_of(p.error_code, p.base_offset, p.log_append_time_ms, || {
                                p.error_message.as_ref().map(ToString::to_string)
                            })
                        }
                    };
                    (tp.clone(), outcome)
                })
                .collect()
        }
    };
    complete(&shared, outcomes);
}

fn outcome_of(
    code: i16,
    base_offset: i64,
    append_time_ms: i64,
    message: impl FnOnce() -> Option<String>,
) -> Outcome {
    match ResponseError::try_from_code(code) {
        // A retry of a batch the broker already has: it answers with the original offset.
        None | Some(ResponseError::DuplicateSequenceNumber) => Outcome::Written {
            base_offset,
            append_time_ms,
        },
        // The same bytes would be refused again.
        Some(ResponseError::CorruptMessage) => Outcome::Failed(Error::kafka(code, message())),
        Some(error) if error.is_retriable() => Outcome::Retry(Error::kafka(code, message())),
        Some(_) => Outcome::Failed(Error::kafka(code, message())),
    }
}

fn complete(shared: &Shared, outcomes: Vec<(TopicPartition, Outcome)>) {
    let now = Instant::now();
    let mut guard = shared.lock();
    let state = &mut *guard;
    for (tp, outcome) in outcomes {
        let Some(queue) = state.queues.get_mut(&tp) else {
            continue;
        };
        queue.in_flight = false;
        match outcome {
            Outcome::Written {
                base_offset,
                append_time_ms,
            } => {
                let batch = queue.batches.pop_front().expect("the in-flight batch");
                shared.release(state, &batch);
                deliver(&tp, batch, base_offset, append_time_ms);
            }
            Outcome::Retry(error) => {
                tracing::debug!(%tp, %error, "produce failed; will retry");
                if error.needs_metadata_refresh() {
                    state.refresh_wanted = true;
                }
                let front = queue.batches.front_mut().expect("the in-flight batch");
                front.attempts += 1;
                if now >= front.created + shared.config.delivery_timeout {
                    expire_front(shared, state, &tp, now);
                } else {
                    let config = shared.client.config();
                    let exponent = front.attempts.saturating_sub(1).min(16);
                    let backoff =
                        (config.retry_backoff * 2u32.pow(exponent)).min(config.retry_backoff_max);
                    queue.retry_at = Some(now + backoff);
                }
            }
            Outcome::Failed(error) => {
                let batch = queue.batches.pop_front().expect("the in-flight batch");
                // The broker refused the batch, so its sequence numbers are free again.
                if batch.producer_id == state.producer_id && batch.base_sequence >= 0 {
                    queue.next_sequence = batch.base_sequence;
                }
                shared.release(state, &batch);
                fail(batch, &error);
            }
        }
    }
    drop(guard);
    shared.wake_sender.notify_one();
}

/// Fails the front batch of `tp` after `delivery_timeout`. If it was ever sent its outcome is
/// unknown, so idempotent sequences restart under a new producer id.
fn expire_front(shared: &Shared, state: &mut State, tp: &TopicPartition, now: Instant) {
    let Some(queue) = state.queues.get_mut(tp) else {
        return;
    };
    let Some(batch) = queue.batches.pop_front() else {
        return;
    };
    if batch.encoded.is_some() && batch.producer_id >= 0 {
        state.needs_producer_id = true;
    }
    let waited = now.saturating_duration_since(batch.created);
    shared.release(state, &batch);
    fail(batch, &Error::Timeout(waited));
}

fn deliver(tp: &TopicPartition, batch: Batch, base_offset: i64, append_time_ms: i64) {
    for (i, (delivery, record)) in batch.deliveries.into_iter().zip(&batch.records).enumerate() {
        let _ = delivery.send(Ok(RecordMetadata {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset: if base_offset >= 0 {
                base_offset + i as i64
            } else {
                -1
            },
            timestamp_ms: if append_time_ms >= 0 {
                append_time_ms
            } else {
                record.timestamp
            },
        }));
    }
}

fn fail(batch: Batch, error: &Error) {
    for delivery in batch.deliveries {
        let _ = delivery.send(Err(error.clone()));
    }
}

fn maybe_refresh(shared: &Arc<Shared>) {
    let topics: Vec<String> = {
        let mut state = shared.lock();
        if !state.refresh_wanted || state.refreshing {
            return;
        }
        state.refresh_wanted = false;
        state.refreshing = true;
        let mut topics: Vec<String> = state.queues.keys().map(|tp| tp.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        topics
    };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        if let Err(error) = shared.client.refresh_metadata(&topics, false).await {
            tracing::debug!(%error, "metadata refresh failed");
            tokio::time::sleep(shared.client.config().retry_backoff).await;
        }
        shared.lock().refreshing = false;
        shared.wake_sender.notify_one();
    });
}
