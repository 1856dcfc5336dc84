//! The producer's sender task: drains ready batches into Produce requests per leader, hands
//! them in order to one task per broker that pipelines them, settles batches from the answers,
//! and schedules retries and metadata refreshes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};
use kafka_protocol::ResponseError;
use tokio::sync::mpsc;

use super::accumulator::{Batch, BatchState, PartitionQueue, Shared, State};
use super::Acks;
use crate::error::{Error, Result};
use crate::record::{RecordMetadata, TopicPartition};

/// Produce versions used: 3 (record batch v2) to 9 (the last that names topics rather than
/// topic ids).
const PRODUCE_VERSIONS: (i16, i16) = (3, 9);
/// A transaction version 2 producer's Produce: v12, whose leader adds the partition to the
/// transaction (same schema as v9 otherwise, for this client).
const PRODUCE_V2_VERSION: i16 = 12;

/// One batch in a request: its partition, its id in the partition's queue, its bytes.
type Part = (TopicPartition, u64, Bytes);

/// Gets a producer id when idempotence applies, then spawns the sender task, which stops once
/// the producer is closed and everything queued has completed.
pub(super) async fn start(shared: Arc<Shared>) -> Result<()> {
    if shared.config.transactional_id.is_some() {
        super::transaction::init(&shared, None).await?;
    } else if idempotent(&shared) {
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

/// Gets a new producer id in a task when one is needed; meanwhile `drain` keeps expiring and
/// retrying what was already encoded, and holds back new batches.
fn start_init_if_needed(shared: &Arc<Shared>) {
    {
        let mut state = shared.lock();
        // A transactional producer gets its new epoch from its coordinator when the
        // transaction whose sequences broke is aborted (see `transaction`).
        if !state.needs_producer_id
            || state.init_running
            || state.fatal.is_some()
            || state.txn.is_some()
        {
            return;
        }
        state.init_running = true;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        if let Err(error) = init_producer_id(&shared).await {
            if error.is_retriable() {
                tracing::warn!(%error, "cannot get a new producer id; retrying");
                tokio::time::sleep(shared.client.config().retry_backoff_max).await;
            } else {
                tracing::error!(%error, "producer id refused; the producer fails every record");
                shared.lock().fatal = Some(error);
            }
        }
        shared.lock().init_running = false;
        shared.wake_sender.notify_one();
    });
}

async fn run(shared: Arc<Shared>) {
    let mut brokers: HashMap<i32, mpsc::UnboundedSender<Vec<Part>>> = HashMap::new();
    loop {
        let wake = shared.wake_sender.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();

        start_init_if_needed(&shared);
        super::transaction::start_adding_if_needed(&shared);
        let (requests, next_wake, finished) = drain(&shared, Instant::now());
        if finished {
            return;
        }
        for (broker, requests) in requests {
            for parts in requests {
                let queue = brokers
                    .entry(broker)
                    .or_insert_with(|| spawn_broker_task(&shared, broker));
                if let Err(mpsc::error::SendError(parts)) = queue.send(parts) {
                    // The broker's task ended (it does when idle); start a new one.
                    let queue = spawn_broker_task(&shared, broker);
                    let _ = queue.send(parts);
                    brokers.insert(broker, queue);
                }
            }
        }
        maybe_refresh(&shared);
        tokio::select! {
            () = &mut wake => {}
            () = tokio::time::sleep_until(next_wake.into()) => {}
        }
    }
}

/// Batches ready to go, per leader, as requests holding at most one batch per partition (the
/// protocol's rule) and at most `max_request_size` bytes; a partition's later batches go in
/// later requests, which its broker task sends later.
type Requests = HashMap<i32, Vec<(Vec<Part>, usize)>>;

/// Picks the batches to send now; returns them, when to look again, and whether the producer
/// is closed with nothing left.
fn drain(shared: &Shared, now: Instant) -> (BTreeMap<i32, Vec<Vec<Part>>>, Instant, bool) {
    let metadata = shared.client.metadata();
    let mut next_wake = now + Duration::from_secs(3600);
    let mut requests: Requests = HashMap::new();
    let mut guard = shared.lock();
    let state = &mut *guard;
    let mut busy = false;
    let mut expired = Vec::new();
    let producer = (state.producer_id, state.producer_epoch);
    let needs_producer_id = state.needs_producer_id;
    let fatal = state.fatal.clone();
    let flush_below = state.flush_below;
    let closed = state.closed;
    // A transactional producer's new batches wait until their partition joined the
    // transaction at the coordinator.
    let txn_added = state.txn.as_ref().map(|txn| txn.added.clone());
    for (tp, queue) in state.queues.iter_mut() {
        if queue.batches.is_empty() {
            continue;
        }
        busy = true;
        let front = &queue.batches[0];
        let front_created = front.created;
        if !matches!(front.state, BatchState::InFlight)
            && now >= front.created + shared.config.delivery_timeout
            && queue.in_flight == 0
        {
            expired.push(tp.clone());
            next_wake = now;
            continue;
        }
        let leader = match metadata.leader(&tp.topic, tp.partition) {
            Some(leader) => leader,
            None => {
                state.refresh_wanted = true;
                next_wake = next_wake.min(now + shared.client.config().retry_backoff);
                continue;
            }
        };
        let wait = |at: Instant, next_wake: &mut Instant| *next_wake = (*next_wake).min(at);
        let retrying = queue
            .batches
            .iter()
            .position(|b| matches!(b.state, BatchState::Retry));
        let mut picked = Vec::new();
        if let Some(index) = retrying {
            // Resend refused or lost batches one at a time, in order, once nothing else of
            // this partition is in flight: their sequences must arrive in order.
            match queue.retry_at {
                _ if queue.in_flight > 0 => {}
                Some(at) if at > now => wait(at, &mut next_wake),
                _ => picked.push(index),
            }
        } else if idempotent(shared)
            && (needs_producer_id
                || queue
                    .batches
                    .iter()
                    .any(|b| b.unsettled() && (b.producer != producer || b.sequence_shift != 0)))
        {
            // New batches wait for the new producer id, and for the batches of the old one to
            // settle: the broker orders sequences per producer id, not across ids. If the id
            // was refused for good, they fail now; otherwise they expire on time.
            if let Some(error) = &fatal {
                for batch in queue.batches.iter_mut() {
                    if matches!(batch.state, BatchState::Open) {
                        batch.state = BatchState::Failed(error.clone());
                    }
                }
            }
            wait(
                front_created + shared.config.delivery_timeout,
                &mut next_wake,
            );
        } else if txn_added.as_ref().is_some_and(|added| !added.contains(tp)) {
            // Woken once the partition is added (or its batches failed).
            wait(
                front_created + shared.config.delivery_timeout,
                &mut next_wake,
            );
        } else {
            let last = queue.batches.len() - 1;
            for (index, batch) in queue.batches.iter().enumerate() {
                if !matches!(batch.state, BatchState::Open) {
                    continue;
                }
                if queue.in_flight + picked.len() >= shared.config.max_in_flight_per_partition {
                    break;
                }
                let ready = index < last
                    || batch.bytes >= shared.config.batch_size
                    || now >= batch.created + shared.config.linger
                    || batch.generation < flush_below
                    || closed;
                if !ready {
                    wait(batch.created + shared.config.linger, &mut next_wake);
                    break;
                }
                picked.push(index);
            }
        }
        let per_broker = requests.entry(leader).or_default();
        let mut slot = 0;
        for index in picked {
            let encoded = match encode(shared, queue, index, producer) {
                Ok(encoded) => encoded,
                Err(error) => {
                    queue.batches[index].state = BatchState::Failed(error);
                    continue;
                }
            };
            let batch = &mut queue.batches[index];
            batch.state = BatchState::InFlight;
            queue.in_flight += 1;
            // The first request at or after `slot` with room for it.
            while slot < per_broker.len()
                && per_broker[slot].1 + encoded.len() > shared.config.max_request_size
                && !per_broker[slot].0.is_empty()
            {
                slot += 1;
            }
            if slot == per_broker.len() {
                per_broker.push((Vec::new(), 0));
            }
            per_broker[slot].1 += encoded.len();
            per_broker[slot].0.push((tp.clone(), batch.id, encoded));
            slot += 1;
        }
    }
    for tp in expired {
        expire_front(state, &tp, now);
    }
    settle(shared, state);
    let finished = closed && !busy;
    let requests = requests
        .into_iter()
        .map(|(broker, reqs)| (broker, reqs.into_iter().map(|(parts, _)| parts).collect()))
        .collect();
    (requests, next_wake, finished)
}

/// The batch's bytes: encoded at its first send, with its producer id and sequence when
/// idempotent, and resent as they are.
fn encode(
    shared: &Shared,
    queue: &mut PartitionQueue,
    index: usize,
    producer: (i64, i16),
) -> Result<Bytes> {
    let batch = &mut queue.batches[index];
    if let Some(encoded) = &batch.encoded {
        return Ok(encoded.clone());
    }
    let idempotent = idempotent(shared);
    let encoded = encode_batch(
        batch,
        idempotent.then_some((producer, queue.next_sequence)),
        shared.config.compression,
    )?;
    if idempotent {
        // The next batch's base sequence wraps to 0 after i32::MAX, as the Java client's does.
        queue.next_sequence =
            queue.next_sequence.wrapping_add(batch.records.len() as i32) & i32::MAX;
    }
    Ok(encoded)
}

/// Encodes `batch` (with its producer id and base sequence when idempotent) and keeps the
/// bytes for resending.
fn encode_batch(
    batch: &mut Batch,
    idempotence: Option<((i64, i16), i32)>,
    compression: kafka_protocol::records::Compression,
) -> Result<Bytes> {
    if let Some(((producer_id, producer_epoch), base_sequence)) = idempotence {
        batch.producer = (producer_id, producer_epoch);
        batch.base_sequence = base_sequence;
    }
    for (i, record) in batch.records.iter_mut().enumerate() {
        record.offset = i as i64;
        if let Some(((producer_id, producer_epoch), base_sequence)) = idempotence {
            record.producer_id = producer_id;
            record.producer_epoch = producer_epoch;
            // Only the base sequence is written; the encoder wants `offset - sequence` equal
            // across the batch, so no wrap inside it (the broker wraps past i32::MAX itself).
            record.sequence = base_sequence.wrapping_add(i as i32);
        }
    }
    let mut buf = BytesMut::with_capacity(batch.bytes + 128);
    RecordBatchEncoder::encode(
        &mut buf,
        &batch.records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| Error::Protocol(format!("encoding a record batch: {e}")))?;
    let encoded = buf.freeze();
    batch.encoded = Some(encoded.clone());
    Ok(encoded)
}

/// Splits a batch the broker refused as too large into two halves that take its place, each
/// encoded with its share of the original sequences (so the batches behind, refused for the
/// gap, still fit after them), and queued for resending like a retry: the Java client does the
/// same. A one-record batch cannot shrink and fails.
fn split_refused(shared: &Shared, state: &mut State, tp: &TopicPartition, index: usize) {
    let compression = shared.config.compression;
    let idempotent = idempotent(shared);
    state.next_batch_id += 2;
    let (first_id, second_id) = (state.next_batch_id - 1, state.next_batch_id);
    let Some(queue) = state.queues.get_mut(tp) else {
        return;
    };
    let Some(mut first) = queue.batches.remove(index) else {
        return;
    };
    let count = first.records.len();
    let half = count / 2;
    let generation = first.generation;
    let second_bytes = first.bytes - first.bytes * half / count;
    let mut second = Batch {
        id: second_id,
        state: BatchState::Retry,
        records: first.records.split_off(half),
        deliveries: first.deliveries.split_off(half),
        bytes: second_bytes,
        created: first.created,
        generation: first.generation,
        attempts: 0,
        encoded: None,
        producer: first.producer,
        base_sequence: -1,
        sequence_shift: 0,
    };
    first.id = first_id;
    first.state = BatchState::Retry;
    first.bytes -= second_bytes;
    first.attempts = 0;
    first.encoded = None;
    let producer = first.producer;
    let base = shift_sequence(first.base_sequence, first.sequence_shift);
    first.sequence_shift = 0;
    let second_base = shift_sequence(base, -(half as i32));
    for (batch, sequence) in [(&mut first, base), (&mut second, second_base)] {
        let idempotence = (idempotent && producer.0 >= 0).then_some((producer, sequence));
        if let Err(error) = encode_batch(batch, idempotence, compression) {
            batch.state = BatchState::Failed(error);
        }
    }
    tracing::debug!(%tp, records = count, "batch too large for the broker; split in two");
    queue.batches.insert(index, second);
    queue.batches.insert(index, first);
    queue.retry_at = None;
    // One batch became two: `flush` waits for both.
    *state.incomplete.entry(generation).or_default() += 1;
}

/// Starts the task that sends one broker's requests in the order it receives them, pipelined
/// on the broker's connection, and settles their batches as answers arrive. It ends after a
/// while without work; the sender starts a new one when needed.
fn spawn_broker_task(shared: &Arc<Shared>, broker: i32) -> mpsc::UnboundedSender<Vec<Part>> {
    let (queue, mut requests) = mpsc::unbounded_channel::<Vec<Part>>();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let idle = Duration::from_secs(60);
        let mut answers = FuturesUnordered::new();
        loop {
            tokio::select! {
                next = requests.recv(), if answers.len() < 1024 => {
                    let Some(parts) = next else { break };
                    match submit(&shared, broker, &parts).await {
                        Ok(answer) => answers.push(answered(parts, answer)),
                        Err(error) => settle_request(&shared, parts, Err(error)),
                    }
                }
                Some((parts, answer)) = answers.next() => {
                    settle_request(&shared, parts, answer);
                }
                () = tokio::time::sleep(idle), if answers.is_empty() => break,
            }
        }
        // Requests queued just before the channel closed are still sent, in order.
        requests.close();
        while let Some(parts) = requests.recv().await {
            match submit(&shared, broker, &parts).await {
                Ok(answer) => answers.push(answered(parts, answer)),
                Err(error) => settle_request(&shared, parts, Err(error)),
            }
        }
        while let Some((parts, answer)) = answers.next().await {
            settle_request(&shared, parts, answer);
        }
    });
    queue
}

/// A request's batches with its answer (one future type for every push into the set).
async fn answered<F>(parts: Vec<Part>, answer: F) -> (Vec<Part>, Result<Option<ProduceResponse>>)
where
    F: std::future::Future<Output = Result<Option<ProduceResponse>>>,
{
    (parts, answer.await)
}

/// Queues one Produce request on the broker's connection (in call order) and returns its
/// answer, which is `None` with acks=0.
async fn submit(
    shared: &Shared,
    broker: i32,
    parts: &[Part],
) -> Result<impl std::future::Future<Output = Result<Option<ProduceResponse>>>> {
    let mut by_topic: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for (tp, _, records) in parts {
        by_topic.entry(&tp.topic).or_default().push(
            PartitionProduceData::default()
                .with_index(tp.partition)
                .with_records(Some(records.clone())),
        );
    }
    let timeout_ms = shared.client.config().request_timeout.as_millis();
    let request = ProduceRequest::default()
        .with_transactional_id(
            shared
                .config
                .transactional_id
                .as_ref()
                .map(|id| TransactionalId(StrBytes::from_string(id.clone()))),
        )
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
    let conn = shared.client.broker(broker).await?;
    let v2 = shared.lock().txn.as_ref().is_some_and(|txn| txn.v2);
    let version = if v2 {
        conn.version::<ProduceRequest>(PRODUCE_V2_VERSION, PRODUCE_V2_VERSION)?
    } else {
        conn.version::<ProduceRequest>(PRODUCE_VERSIONS.0, PRODUCE_VERSIONS.1)?
    };
    let answer = if shared.config.acks == Acks::None {
        conn.submit_without_response(&request, version).await?;
        None
    } else {
        Some(conn.submit(&request, version, None).await?)
    };
    Ok(async move {
        match answer {
            None => Ok(None),
            Some(answer) => answer.await.map(Some),
        }
    })
}

/// What became of one batch.
enum Outcome {
    Written {
        base_offset: i64,
        append_time_ms: i64,
    },
    Retry(Error),
    /// Refused for its sequence: retriable only behind an unsettled earlier batch.
    OutOfSequence(Error),
    /// Refused as too large: split and resent, unless it holds a single record.
    TooLarge(Error),
    /// Refused by the broker for good: certainly not written.
    Refused(Error),
    Failed(Error),
}

fn settle_request(shared: &Shared, parts: Vec<Part>, answer: Result<Option<ProduceResponse>>) {
    let outcomes: Vec<(TopicPartition, u64, Outcome)> = match answer {
        Err(error) => parts
            .into_iter()
            .map(|(tp, id, _)| {
                let outcome = if error.is_retriable() {
                    Outcome::Retry(error.clone())
                } else {
                    Outcome::Failed(error.clone())
                };
                (tp, id, outcome)
            })
            .collect(),
        Ok(None) => parts
            .into_iter()
            .map(|(tp, id, _)| {
                let written = Outcome::Written {
                    base_offset: -1,
                    append_time_ms: -1,
                };
                (tp, id, written)
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
                .into_iter()
                .map(|(tp, id, _)| {
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
                    (tp, id, outcome)
                })
                .collect()
        }
    };
    let now = Instant::now();
    let mut guard = shared.lock();
    let state = &mut *guard;
    for (tp, id, outcome) in outcomes {
        record_outcome(shared, state, &tp, id, outcome, now);
    }
    settle(shared, state);
    drop(guard);
    shared.wake_sender.notify_one();
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
        Some(ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId) => {
            Outcome::OutOfSequence(Error::kafka(code, message()))
        }
        // The producer id itself is refused: the batch fails and the producer takes a new one.
        Some(ResponseError::InvalidProducerEpoch | ResponseError::ProducerFenced) => {
            Outcome::Failed(Error::kafka(code, message()))
        }
        Some(ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge) => {
            Outcome::TooLarge(Error::kafka(code, message()))
        }
        // The same bytes would be refused again.
        Some(ResponseError::CorruptMessage) => Outcome::Refused(Error::kafka(code, message())),
        // A transaction version 2 producer's previous transaction is still ending at the
        // coordinator: the leader can add the partition once it has (the Java producer retries
        // it too).
        Some(ResponseError::ConcurrentTransactions) => {
            Outcome::Retry(Error::kafka(code, message()))
        }
        Some(error) if error.is_retriable() => Outcome::Retry(Error::kafka(code, message())),
        Some(_) => Outcome::Refused(Error::kafka(code, message())),
    }
}

fn record_outcome(
    shared: &Shared,
    state: &mut State,
    tp: &TopicPartition,
    id: u64,
    outcome: Outcome,
    now: Instant,
) {
    let Some(queue) = state.queues.get_mut(tp) else {
        return;
    };
    let Some(index) = queue.batches.iter().position(|b| b.id == id) else {
        return;
    };
    queue.in_flight -= 1;
    let earlier_unsettled = queue.batches.range(..index).any(Batch::unsettled);
    let shifted = queue.batches[index].sequence_shift != 0;
    let outcome = match outcome {
        // Behind a lost batch, or behind a refused one whose sequences it takes over.
        Outcome::OutOfSequence(error) if earlier_unsettled || shifted => Outcome::Retry(error),
        Outcome::OutOfSequence(error) => Outcome::Failed(error),
        Outcome::TooLarge(_) if queue.batches[index].records.len() > 1 => {
            split_refused(shared, state, tp, index);
            return;
        }
        Outcome::TooLarge(error) => Outcome::Refused(error),
        other => other,
    };
    if let Outcome::Refused(error) = outcome {
        refuse(shared, state, tp, index, error);
        return;
    }
    let compression = shared.config.compression;
    let batch = &mut queue.batches[index];
    match outcome {
        Outcome::Written {
            base_offset,
            append_time_ms,
        } => {
            if batch.sequence_shift != 0 {
                // Accepted at its old sequences after a refused batch ahead of it: the broker
                // did not insist on continuity (it had no state for this producer yet), so the
                // shifted sequences no longer match its view. Start over under a new id.
                batch.sequence_shift = 0;
                state.needs_producer_id = true;
            }
            batch.state = BatchState::Written {
                base_offset,
                append_time_ms,
            }
        }
        Outcome::Refused(_) => unreachable!("refused batches are handled by `refuse` above"),
        Outcome::Retry(error) | Outcome::OutOfSequence(error) | Outcome::TooLarge(error) => {
            tracing::debug!(%tp, %error, "produce failed; will retry");
            if error.needs_metadata_refresh() {
                state.refresh_wanted = true;
            }
            batch.attempts += 1;
            batch.state = BatchState::Retry;
            apply_sequence_shift(batch, compression);
            let config = shared.client.config();
            let exponent = batch.attempts.saturating_sub(1).min(16);
            let backoff = (config.retry_backoff * 2u32.pow(exponent)).min(config.retry_backoff_max);
            queue.retry_at = Some(now + backoff);
        }
        Outcome::Failed(error) => {
            if batch.encoded.is_some()
                && idempotent(shared)
                && batch.producer == (state.producer_id, state.producer_epoch)
            {
                // The sequences of the batches behind it no longer fit.
                state.needs_producer_id = true;
            }
            batch.state = BatchState::Failed(error);
        }
    }
}

/// A batch the broker refused for good fails. Under idempotence the broker never saw its
/// sequences, so the batches behind it move down by its record count (at once if waiting for
/// a retry, when they come back if in flight) and the partition's next sequence too; the
/// producer keeps its id, as the Java client does (KIP-360).
fn refuse(shared: &Shared, state: &mut State, tp: &TopicPartition, index: usize, error: Error) {
    let current = (state.producer_id, state.producer_epoch);
    let compression = shared.config.compression;
    let Some(queue) = state.queues.get_mut(tp) else {
        return;
    };
    let batch = &mut queue.batches[index];
    let count = batch.records.len() as i32;
    let ours = idempotent(shared) && batch.encoded.is_some() && batch.producer == current;
    // Refused on its first send: certainly not written. After earlier attempts whose answers
    // were lost it may have been, so its sequences cannot be reused: take a new producer id.
    let first_attempt = batch.attempts == 0;
    batch.state = BatchState::Failed(error);
    if !ours {
        return;
    }
    if !first_attempt {
        state.needs_producer_id = true;
        return;
    }
    for later in queue.batches.range_mut(index + 1..) {
        if later.encoded.is_none() || later.producer != current {
            continue;
        }
        later.sequence_shift = later.sequence_shift.wrapping_add(count);
        if matches!(later.state, BatchState::Retry) {
            apply_sequence_shift(later, compression);
        }
    }
    queue.next_sequence = shift_sequence(queue.next_sequence, count);
}

/// `sequence - by`, wrapping within 0..=i32::MAX as Kafka's sequences do.
fn shift_sequence(sequence: i32, by: i32) -> i32 {
    (i64::from(sequence) - i64::from(by)).rem_euclid(i64::from(i32::MAX) + 1) as i32
}

/// Re-encodes a batch waiting for a retry with its pending sequence shift applied.
fn apply_sequence_shift(batch: &mut Batch, compression: kafka_protocol::records::Compression) {
    if batch.sequence_shift == 0 {
        return;
    }
    let base = shift_sequence(batch.base_sequence, batch.sequence_shift);
    batch.sequence_shift = 0;
    if let Err(error) = encode_batch(batch, Some((batch.producer, base)), compression) {
        batch.state = BatchState::Failed(error);
    }
}

/// Fails the front batch of `tp` after `delivery_timeout`. If it was ever sent its outcome is
/// unknown, so idempotent sequences restart under a new producer id.
fn expire_front(state: &mut State, tp: &TopicPartition, now: Instant) {
    let Some(batch) = state.queues.get_mut(tp).and_then(|q| q.batches.front_mut()) else {
        return;
    };
    if batch.encoded.is_some()
        && batch.producer.0 >= 0
        && batch.producer == (state.producer_id, state.producer_epoch)
    {
        state.needs_producer_id = true;
    }
    let waited = now.saturating_duration_since(batch.created);
    batch.state = BatchState::Failed(Error::Timeout(waited));
}

/// Completes settled batches at the front of every queue, in order, and frees their memory.
fn settle(shared: &Shared, state: &mut State) {
    let mut done = Vec::new();
    for (tp, queue) in state.queues.iter_mut() {
        while queue
            .batches
            .front()
            .is_some_and(|b| matches!(b.state, BatchState::Written { .. } | BatchState::Failed(_)))
        {
            let batch = queue.batches.pop_front().expect("front exists");
            done.push((tp.clone(), batch));
        }
    }
    if done.is_empty() {
        return;
    }
    for (tp, batch) in done {
        shared.release(state, &batch);
        match batch.state {
            BatchState::Written {
                base_offset,
                append_time_ms,
            } => deliver(
                &tp,
                batch.deliveries,
                &batch.records,
                base_offset,
                append_time_ms,
            ),
            BatchState::Failed(ref error) => {
                // A record not written makes the open transaction abortable only.
                if let Some(txn) = state.txn.as_mut() {
                    txn.failed.get_or_insert(error.clone());
                }
                for delivery in batch.deliveries {
                    let _ = delivery.send(Err(error.clone()));
                }
            }
            _ => unreachable!("only settled batches are popped"),
        }
    }
}

fn deliver(
    tp: &TopicPartition,
    deliveries: Vec<super::accumulator::Delivery>,
    records: &[kafka_protocol::records::Record],
    base_offset: i64,
    append_time_ms: i64,
) {
    for (i, (delivery, record)) in deliveries.into_iter().zip(records).enumerate() {
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

fn maybe_refresh(shared: &Arc<Shared>) {
    let topics: Vec<String> = {
        let mut state = shared.lock();
        let stale = shared.client.metadata_is_stale() && !state.queues.is_empty();
        if !(state.refresh_wanted || stale) || state.refreshing {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use kafka_protocol::indexmap::IndexMap;
    use tokio::sync::oneshot;

    use super::super::accumulator::new_record;
    use super::*;
    use crate::client::{Client, ClientConfig};
    use crate::metadata::{ClusterMetadata, PartitionInfo, TopicInfo};
    use crate::producer::ProducerConfig;

    type Receiver = oneshot::Receiver<Result<RecordMetadata>>;

    fn shared() -> Arc<Shared> {
        shared_with(ProducerConfig::default())
    }

    fn shared_with(config: ProducerConfig) -> Arc<Shared> {
        let client = Client::unconnected(ClientConfig::default());
        let partition = PartitionInfo {
            partition: 0,
            leader: Some(1),
            leader_epoch: 0,
            replicas: vec![1],
            isr: vec![1],
            offline_replicas: vec![],
            error_code: 0,
        };
        let topic = TopicInfo {
            name: "t".to_owned(),
            topic_id: String::new(),
            internal: false,
            partitions: vec![partition],
        };
        client.set_metadata(ClusterMetadata {
            topics: BTreeMap::from([("t".to_owned(), Arc::new(topic))]),
            ..ClusterMetadata::default()
        });
        let shared = Shared::new(client, config);
        let mut state = shared.lock();
        state.producer_id = 7;
        state.producer_epoch = 0;
        drop(state);
        shared
    }

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    /// Queues `n` full batches of one record each for `t-0`; returns their futures.
    fn queue_batches(shared: &Shared, n: usize) -> Vec<Receiver> {
        let mut state = shared.lock();
        let mut receivers = Vec::new();
        for id in 1..=n as u64 {
            let (delivery, receiver) = oneshot::channel();
            receivers.push(receiver);
            let record = new_record(
                0,
                None,
                Some(Bytes::from_static(b"v")),
                IndexMap::new(),
                Some(1),
            );
            *state.incomplete.entry(0).or_default() += 1;
            state
                .queues
                .entry(tp())
                .or_default()
                .batches
                .push_back(Batch {
                    id,
                    state: BatchState::Open,
                    records: vec![record],
                    deliveries: vec![delivery],
                    bytes: ProducerConfig::default().batch_size, // full: ready at once
                    created: Instant::now(),
                    generation: 0,
                    attempts: 0,
                    encoded: None,
                    producer: (-1, -1),
                    base_sequence: -1,
                    sequence_shift: 0,
                });
        }
        state.next_batch_id = n as u64;
        // Memory accounting: what `release` gives back must have been taken.
        shared
            .memory
            .forget_permits(shared.memory.available_permits());
        receivers
    }

    fn sent_ids(requests: &BTreeMap<i32, Vec<Vec<Part>>>) -> Vec<Vec<u64>> {
        requests
            .get(&1)
            .map(|reqs| {
                reqs.iter()
                    .map(|r| r.iter().map(|p| p.1).collect())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn outcome(shared: &Shared, id: u64, outcome: Outcome) {
        let mut state = shared.lock();
        record_outcome(shared, &mut state, &tp(), id, outcome, Instant::now());
        settle(shared, &mut state);
    }

    fn written(offset: i64) -> Outcome {
        Outcome::Written {
            base_offset: offset,
            append_time_ms: -1,
        }
    }

    #[test]
    fn batches_are_pipelined_and_complete_in_partition_order() {
        let shared = shared();
        let mut receivers = queue_batches(&shared, 7);
        let (requests, _, _) = drain(&shared, Instant::now());
        // Five in flight, one per request so that their order on the connection is theirs.
        assert_eq!(sent_ids(&requests), [[1], [2], [3], [4], [5]]);
        outcome(&shared, 2, written(20));
        assert!(
            receivers[1].try_recv().is_err(),
            "batch 2 waits for batch 1"
        );
        outcome(&shared, 1, written(10));
        assert_eq!(receivers[0].try_recv().unwrap().unwrap().offset, 10);
        assert_eq!(receivers[1].try_recv().unwrap().unwrap().offset, 20);
        // Two slots freed: batches 6 and 7 go.
        let (requests, _, _) = drain(&shared, Instant::now());
        assert_eq!(sent_ids(&requests), [[6], [7]]);
    }

    #[test]
    fn a_retry_resends_in_order_one_at_a_time_with_the_same_sequences() {
        let shared = shared();
        let mut receivers = queue_batches(&shared, 3);
        let (first, _, _) = drain(&shared, Instant::now());
        assert_eq!(sent_ids(&first), [[1], [2], [3]]);
        let encoded: Vec<Bytes> = first[&1].iter().map(|r| r[0].2.clone()).collect();
        // Batch 1 is lost (leader moved); the broker refuses 2 and 3 for their sequences.
        outcome(&shared, 1, Outcome::Retry(Error::kafka(6, None)));
        let oos = || Outcome::OutOfSequence(Error::kafka(45, None));
        outcome(&shared, 2, oos());
        outcome(&shared, 3, oos());
        assert!(!shared.lock().needs_producer_id);
        let later = Instant::now() + Duration::from_secs(5);
        for (expected, offset) in [(1, 100), (2, 101), (3, 102)] {
            let (requests, _, _) = drain(&shared, later);
            assert_eq!(sent_ids(&requests), [[expected]]);
            assert_eq!(requests[&1][0][0].2, encoded[expected as usize - 1]);
            outcome(&shared, expected, written(offset));
        }
        let offsets: Vec<i64> = receivers
            .iter_mut()
            .map(|r| r.try_recv().unwrap().unwrap().offset)
            .collect();
        assert_eq!(offsets, [100, 101, 102]);
    }

    #[test]
    fn a_batch_with_an_unknown_outcome_fails_the_ones_behind_it_and_renews_the_producer_id() {
        let shared = shared();
        let mut receivers = queue_batches(&shared, 3);
        drain(&shared, Instant::now());
        // A request-level failure: the broker may or may not have written batch 1.
        outcome(&shared, 1, Outcome::Failed(Error::kafka(87, None)));
        assert!(shared.lock().needs_producer_id);
        outcome(&shared, 2, Outcome::OutOfSequence(Error::kafka(45, None)));
        outcome(&shared, 3, written(5));
        let codes: Vec<Option<i16>> = receivers
            .iter_mut()
            .map(|r| r.try_recv().unwrap().err().and_then(|e| e.kafka_code()))
            .collect();
        assert_eq!(codes, [Some(87), Some(45), None]);
        assert!(shared.lock().queues[&tp()].batches.is_empty());
    }

    #[tokio::test]
    async fn a_full_buffer_blocks_send_for_max_block_then_frees_on_completion() {
        let shared = shared_with(ProducerConfig {
            buffer_memory: 2_000,
            max_request_size: 1_000,
            batch_size: 100,
            max_block: Duration::from_millis(200),
            ..ProducerConfig::default()
        });
        let record = || crate::ProducerRecord::new("t", vec![0u8; 900]).with_partition(0);
        let first = shared.append(record()).await.unwrap();
        let second = shared.append(record()).await.unwrap();
        let started = Instant::now();
        let third = shared.append(record()).await;
        assert!(matches!(third, Err(Error::BufferExhausted(_))), "{third:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        // The first batch completes: its bytes are free again and a send fits.
        let (requests, _, _) = drain(&shared, Instant::now());
        assert_eq!(sent_ids(&requests), [[1], [2]]);
        outcome(&shared, 1, written(0));
        assert_eq!(first.await.unwrap().unwrap().offset, 0);
        shared.append(record()).await.unwrap();
        drop(second);
    }

    #[test]
    fn sequences_wrap_between_batches_never_inside_one() {
        let shared = shared();
        queue_batches(&shared, 2);
        {
            let mut state = shared.lock();
            let queue = state.queues.get_mut(&tp()).unwrap();
            queue.next_sequence = i32::MAX;
            for batch in &mut queue.batches {
                let extra = batch.records[0].clone();
                batch.records.push(extra);
                batch.records[1].offset = 1;
            }
        }
        let (requests, _, _) = drain(&shared, Instant::now());
        let mut bases = Vec::new();
        for request in &requests[&1] {
            let mut bytes = request[0].2.clone();
            let batches =
                kafka_protocol::records::RecordBatchDecoder::decode_batch_info(&mut bytes).unwrap();
            assert_eq!(
                batches.len(),
                1,
                "one record batch per partition and request"
            );
            assert_eq!(batches[0].record_count, 2);
            bases.push(batches[0].base_sequence);
        }
        // 2^31 - 1 and (2^31 - 1) + 1, then the next batch starts at 1 after the wrap.
        assert_eq!(bases, [i32::MAX, 1]);
    }

    #[test]
    fn new_batches_wait_for_a_new_producer_id_and_for_old_ones_to_settle() {
        let shared = shared_with(ProducerConfig {
            max_in_flight_per_partition: 1,
            ..ProducerConfig::default()
        });
        queue_batches(&shared, 3);
        let (requests, _, _) = drain(&shared, Instant::now());
        assert_eq!(sent_ids(&requests), [[1]]);
        shared.lock().needs_producer_id = true;
        let (requests, _, _) = drain(&shared, Instant::now());
        assert!(
            sent_ids(&requests).is_empty(),
            "held back while a new id is needed"
        );
        {
            let mut state = shared.lock();
            state.needs_producer_id = false;
            state.producer_id = 8;
        }
        let (requests, _, _) = drain(&shared, Instant::now());
        assert!(
            sent_ids(&requests).is_empty(),
            "held back while batch 1 (old id) is unsettled"
        );
        outcome(&shared, 1, written(0));
        let (requests, _, _) = drain(&shared, Instant::now());
        assert_eq!(sent_ids(&requests), [[2]]);
        let state = shared.lock();
        assert_eq!(state.queues[&tp()].batches[0].producer, (8, 0));
    }

    #[test]
    fn a_batch_refused_as_too_large_is_split_and_keeps_its_sequences() {
        let shared = shared();
        let mut receivers = queue_batches(&shared, 2);
        {
            let mut state = shared.lock();
            let batch = &mut state.queues.get_mut(&tp()).unwrap().batches[0];
            let template = batch.records[0].clone();
            batch.records = vec![template; 4];
            let (senders, rest): (Vec<_>, Vec<_>) = (0..4).map(|_| oneshot::channel()).unzip();
            batch.deliveries = senders;
            receivers.splice(0..1, rest);
        }
        let (first, _, _) = drain(&shared, Instant::now());
        assert_eq!(sent_ids(&first), [[1], [2]]);
        outcome(&shared, 1, Outcome::TooLarge(Error::kafka(10, None)));
        outcome(&shared, 2, Outcome::OutOfSequence(Error::kafka(45, None)));
        assert!(!shared.lock().needs_producer_id);
        let later = Instant::now() + Duration::from_secs(5);
        let mut sent = Vec::new();
        for offset in [10, 12, 14] {
            let (requests, _, _) = drain(&shared, later);
            let part = &requests[&1][0][0];
            let mut bytes = part.2.clone();
            let info =
                kafka_protocol::records::RecordBatchDecoder::decode_batch_info(&mut bytes).unwrap();
            sent.push((info[0].record_count, info[0].base_sequence));
            outcome(&shared, part.1, written(offset));
        }
        // Halves of two records at sequences 0 and 2, then batch 2 (sequence 4) as it was.
        assert_eq!(sent, [(2, 0), (2, 2), (1, 4)]);
        let offsets: Vec<i64> = receivers
            .iter_mut()
            .map(|r| r.try_recv().unwrap().unwrap().offset)
            .collect();
        assert_eq!(offsets, [10, 11, 12, 13, 14]);
        let state = shared.lock();
        assert!(state.incomplete.is_empty(), "{:?}", state.incomplete);
        assert_eq!(
            shared.memory.available_permits(),
            2 * ProducerConfig::default().batch_size
        );
    }

    #[test]
    fn a_producer_id_refused_for_good_fails_what_is_queued() {
        let shared = shared();
        let mut receivers = queue_batches(&shared, 2);
        {
            let mut state = shared.lock();
            state.needs_producer_id = true;
            state.fatal = Some(Error::kafka(31, None)); // CLUSTER_AUTHORIZATION_FAILED
        }
        let (requests, _, _) = drain(&shared, Instant::now());
        assert!(sent_ids(&requests).is_empty());
        for receiver in &mut receivers {
            let error = receiver.try_recv().unwrap().unwrap_err();
            assert_eq!(error.kafka_code(), Some(31));
        }
        assert!(shared.lock().queues[&tp()].batches.is_empty());
    }

    #[test]
    fn a_refused_batch_fails_alone_and_the_batches_behind_take_its_sequences() {
        let shared = shared();
        let mut receivers = queue_batches(&shared, 3);
        drain(&shared, Instant::now());
        // INVALID_RECORD: the broker wrote nothing of batch 1 (sequence 0).
        outcome(&shared, 1, Outcome::Refused(Error::kafka(87, None)));
        assert!(
            !shared.lock().needs_producer_id,
            "the producer keeps its id"
        );
        let oos = || Outcome::OutOfSequence(Error::kafka(45, None));
        outcome(&shared, 2, oos());
        outcome(&shared, 3, oos());
        let later = Instant::now() + Duration::from_secs(5);
        let mut bases = Vec::new();
        for (id, offset) in [(2, 0), (3, 1)] {
            let (requests, _, _) = drain(&shared, later);
            assert_eq!(sent_ids(&requests), [[id]]);
            let mut bytes = requests[&1][0][0].2.clone();
            let info =
                kafka_protocol::records::RecordBatchDecoder::decode_batch_info(&mut bytes).unwrap();
            bases.push(info[0].base_sequence);
            outcome(&shared, id, written(offset));
        }
        assert_eq!(
            bases,
            [0, 1],
            "batches 2 and 3 moved down by batch 1's record"
        );
        assert_eq!(shared.lock().queues[&tp()].next_sequence, 2);
        let results: Vec<Option<i64>> = receivers
            .iter_mut()
            .map(|r| r.try_recv().unwrap().ok().map(|m| m.offset))
            .collect();
        assert_eq!(results, [None, Some(0), Some(1)]);
    }

    #[test]
    fn batches_accepted_despite_a_refusal_ahead_renew_the_producer_id() {
        let shared = shared();
        let mut receivers = queue_batches(&shared, 4);
        shared.lock().queues.get_mut(&tp()).unwrap().batches[3].state = BatchState::Open;
        let (first, _, _) = drain(&shared, Instant::now());
        assert_eq!(sent_ids(&first), [[1], [2], [3], [4]]);
        // The broker had no state for this producer: it refuses batch 1 and accepts 2 at its
        // original sequence.
        outcome(&shared, 1, Outcome::Refused(Error::kafka(10, None)));
        outcome(&shared, 2, written(0));
        assert!(shared.lock().needs_producer_id, "sequences diverged");
        // A batch refused after a retry may have been written before: no reuse either.
        outcome(&shared, 3, Outcome::Retry(Error::kafka(6, None)));
        outcome(&shared, 4, written(2));
        shared.lock().needs_producer_id = false;
        let later = Instant::now() + Duration::from_secs(5);
        let (retry, _, _) = drain(&shared, later);
        assert_eq!(sent_ids(&retry), [[3]]);
        outcome(&shared, 3, Outcome::Refused(Error::kafka(87, None)));
        assert!(
            shared.lock().needs_producer_id,
            "a refused retry renews the id"
        );
        let results: Vec<bool> = receivers
            .iter_mut()
            .map(|r| r.try_recv().unwrap().is_ok())
            .collect();
        assert_eq!(results, [false, true, false, true]);
    }
}
