//! Produce: translates each partition's record batch into a leader append
//! ([`crate::partition::append`]) and the outcomes back. `acks=0` sends nothing back (and
//! closes the connection if a write failed), 1 answers once the leader appended, -1 (all) once
//! the high watermark passed the batch (or REQUEST_TIMED_OUT after `timeout_ms`); acks=all
//! with fewer in-sync replicas than `min.insync.replicas` is NOT_ENOUGH_REPLICAS, with nothing
//! appended.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};

use super::led_partition;
use crate::context::BrokerContext;
use crate::kafka::errors::{code, code_and_message, Failure, RequestProblem};
use crate::kafka::request::{Outcome, RequestContext};
use crate::kafka::wire::str_bytes;
use crate::partition::append::{self, Acks, Appended};
use crate::partition::Partition;
use crate::partition::PartitionError;
use crate::txn::verify::{Check, Unverified};
use crate::txn::TxnProblem;

/// Where a partition's answer goes in the response: `(topic slot, partition slot)`.
type Slot = (usize, usize);

pub async fn handle(ctx: &BrokerContext, req: &RequestContext, request: ProduceRequest) -> Outcome {
    let version = req.api_version;
    let acks = Acks::from_wire(request.acks);
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let mut responses = Vec::with_capacity(request.topic_data.len());
    // Each with the guard of its KIP-890 verification, if it needed one.
    let mut appends: Vec<(Arc<Partition>, Bytes, Option<u64>)> = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    let image = ctx.image();
    for (topic_slot, topic) in request.topic_data.into_iter().enumerate() {
        let record = image.topic_by_name(&topic.name);
        let internal = crate::coordinator::topic::is_internal(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let index = data.index;
            let planned = match acks {
                None => Err(Failure::Request(RequestProblem::InvalidRequiredAcks)),
                // Only the coordinators write their topics (Kafka: INVALID_TOPIC_EXCEPTION).
                _ if internal => Err(Failure::Request(RequestProblem::InternalTopic)),
                _ => led_partition(ctx, &image, record, index, -1).await,
            };
            let records = data.records.filter(|r| !r.is_empty());
            match (planned, records) {
                (Err(failure), _) => partitions.push(failed(version, index, failure)),
                (Ok(_), None) => partitions.push(failed(
                    version,
                    index,
                    Failure::Request(RequestProblem::MissingRecords),
                )),
                (Ok(partition), Some(records)) => {
                    slots.push((topic_slot, partitions.len()));
                    appends.push((partition, records, None));
                    partitions.push(PartitionProduceResponse::default().with_index(index));
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    let Some(acks) = acks else {
        return respond(responses);
    };
    if request.transactional_id.is_none() && appends.iter().any(|(_, b, _)| is_transactional(b)) {
        // Kafka's answer to transactional records without a transactional id: the whole
        // request is refused, as unauthorized for a transactional id.
        for topic in &mut responses {
            for partition in &mut topic.partition_responses {
                *partition = failed_with_code(
                    version,
                    partition.index,
                    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                );
            }
        }
        return respond(responses);
    }
    if let Some(id) = &request.transactional_id {
        let refused = unverified(ctx, version, id.0.as_str(), &mut appends).await;
        if refused.iter().any(Option::is_some) {
            let mut kept_appends = Vec::with_capacity(appends.len());
            let mut kept_slots = Vec::with_capacity(slots.len());
            for ((append, slot), refusal) in appends.into_iter().zip(slots).zip(refused) {
                match refusal {
                    None => {
                        kept_appends.push(append);
                        kept_slots.push(slot);
                    }
                    Some(code) => {
                        let entry = &mut responses[slot.0].partition_responses[slot.1];
                        *entry = failed_with_code(version, entry.index, code);
                    }
                }
            }
            appends = kept_appends;
            slots = kept_slots;
        }
    }
    // What each append is, for the per-topic traffic counters of those that succeed.
    let sizes: Vec<(Arc<Partition>, usize)> = if crate::telemetry::enabled() {
        appends
            .iter()
            .map(|(partition, batch, _)| (partition.clone(), batch.len()))
            .collect()
    } else {
        Vec::new()
    };
    let outcomes = append::append_all(appends, acks, timeout, &ctx.shutdown).await;
    for ((partition, bytes), outcome) in sizes.iter().zip(&outcomes) {
        if let Ok(appended) = outcome {
            let records = appended.last_offset - appended.base_offset + 1;
            crate::telemetry::topics::produced(&partition.topic, *bytes, records);
        }
    }
    if acks == Acks::None {
        // Kafka closes an acks=0 connection when a write fails: the client's only signal to
        // refresh metadata (e.g. after a leader moved) instead of dropping records forever.
        let failed_before = responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .any(|p| p.error_code != 0);
        let failed_append = outcomes.iter().any(Result::is_err);
        return if failed_before || failed_append {
            Outcome::Close
        } else {
            Outcome::NoResponse
        };
    }
    for ((topic, slot), outcome) in slots.into_iter().zip(outcomes) {
        let entry = &mut responses[topic].partition_responses[slot];
        *entry = match outcome {
            Ok(appended) => succeeded(version, entry.index, &appended),
            Err(error) => failed(version, entry.index, Failure::Partition(&error)),
        };
    }
    respond(responses)
}

/// Kafka's TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// Whether `batch`'s header says transactional (a batch that does not parse is refused by its
/// append).
fn is_transactional(batch: &Bytes) -> bool {
    append::batch_producer(batch).is_some_and(|(_, _, transactional)| transactional)
}

/// Kafka's INVALID_PRODUCER_EPOCH: what a produce of a fenced producer gets.
const INVALID_PRODUCER_EPOCH: i16 = 47;
/// Kafka's `add.partitions.to.txn.retry.backoff.ms` and `...backoff.max.ms` defaults: how
/// often and how long a leader asks again to add a partition while the producer's previous
/// transaction is still ending.
const ADD_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);
const ADD_RETRY_FOR: std::time::Duration = std::time::Duration::from_millis(100);
/// Kafka's INVALID_PRODUCER_ID_MAPPING: transactional batches of several producers.
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;

/// KIP-890 part 1: for each append, the code that refuses it when it is a transactional batch
/// that would open a transaction the coordinator did not add this partition to (`None`:
/// append it). A batch of a transaction already open on the partition needs no check.
async fn unverified(
    ctx: &BrokerContext,
    version: i16,
    transactional_id: &str,
    appends: &mut [(Arc<Partition>, Bytes, Option<u64>)],
) -> Vec<Option<i16>> {
    let mut refused = vec![None; appends.len()];
    let mut asked: Vec<(usize, (String, i32))> = Vec::new();
    let mut producer = None;
    let mut transactional_slots = Vec::new();
    for slot in 0..appends.len() {
        let (partition, batch, _) = &appends[slot];
        let Some((producer_id, producer_epoch, transactional)) = append::batch_producer(batch)
        else {
            continue; // the append refuses it
        };
        if !transactional || producer_id < 0 {
            continue;
        }
        transactional_slots.push(slot);
        // One transactional id speaks for one producer: batches of several in one request
        // are all refused, as Kafka refuses them.
        if producer.is_some_and(|(id, _)| id != producer_id) {
            for earlier in transactional_slots {
                refused[earlier] = Some(INVALID_PRODUCER_ID_MAPPING);
            }
            for (later, (_, batch, _)) in appends.iter().enumerate().skip(slot + 1) {
                if append::batch_producer(batch).is_some_and(|(id, _, txn)| txn && id >= 0) {
                    refused[later] = Some(INVALID_PRODUCER_ID_MAPPING);
                }
            }
            return refused;
        }
        producer = Some((producer_id, producer_epoch));
        // The guard is taken before the coordinator is asked: a marker landing in between
        // clears it, and the append is then refused (Kafka's verification guard).
        let partition = partition.clone();
        let Some(guard) = partition
            .begin_verification(producer_id, producer_epoch, version >= 12)
            .await
        else {
            continue; // a transaction is open here at this epoch already
        };
        appends[slot].2 = Some(guard);
        let index = i32::try_from(partition.index).unwrap_or(i32::MAX);
        asked.push((slot, (partition.topic.clone(), index)));
    }
    let Some((producer_id, producer_epoch)) = producer else {
        return refused;
    };
    let partitions: Vec<(String, i32)> = asked.iter().map(|(_, tp)| tp.clone()).collect();
    // Produce v12+ is a transaction version 2 producer's: the leader adds the partitions. While
    // the producer's previous transaction is still ending (CONCURRENT_TRANSACTIONS), it asks
    // again for a moment before answering that, as Kafka's leader does.
    let add = version >= 12;
    let check = if add { Check::Add } else { Check::Verify };
    let started = tokio::time::Instant::now();
    let answers = loop {
        let answers = crate::txn::verify::verify(
            ctx,
            check,
            transactional_id,
            producer_id,
            producer_epoch,
            &partitions,
        )
        .await;
        let concurrent = answers.contains(&Some(Unverified::Refused(
            TxnProblem::ConcurrentTransactions,
        )));
        if !add || !concurrent || started.elapsed() + ADD_RETRY_BACKOFF > ADD_RETRY_FOR {
            break answers;
        }
        tokio::time::sleep(ADD_RETRY_BACKOFF).await;
    };
    for ((slot, _), answer) in asked.into_iter().zip(answers) {
        refused[slot] = answer.map(|unverified| match unverified {
            // The old epoch's producer is fenced (Kafka's produce answer).
            Unverified::Refused(TxnProblem::ProducerFenced) => INVALID_PRODUCER_EPOCH,
            Unverified::Refused(TxnProblem::ConcurrentTransactions) if add => {
                code(Failure::Txn(TxnProblem::ConcurrentTransactions))
            }
            // Kafka answers a coordinator it could not ask, or a transaction still ending, as
            // NOT_ENOUGH_REPLICAS: retriable for every producer.
            Unverified::Unavailable | Unverified::Refused(TxnProblem::ConcurrentTransactions) => {
                code(Failure::Partition(&PartitionError::NotEnoughReplicas))
            }
            Unverified::Refused(problem) => code(Failure::Txn(problem)),
        });
    }
    refused
}

fn failed_with_code(version: i16, index: i32, error_code: i16) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error_code)
        .with_base_offset(-1);
    if version >= 8 {
        let message = if error_code == TRANSACTIONAL_ID_AUTHORIZATION_FAILED {
            "transactional records without a transactional id"
        } else if error_code == INVALID_PRODUCER_ID_MAPPING {
            "transactional records of more than one producer id"
        } else {
            "the partition is not in the producer's ongoing transaction"
        };
        response = response.with_error_message(Some(str_bytes(message)));
    }
    response
}

fn succeeded(version: i16, index: i32, appended: &Appended) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(appended.base_offset);
    if version >= 2 {
        response = response.with_log_append_time_ms(appended.log_append_time_ms);
    }
    if version >= 5 {
        response = response.with_log_start_offset(appended.log_start_offset);
    }
    response
}

fn failed(version: i16, index: i32, failure: Failure<'_>) -> PartitionProduceResponse {
    let (code, message) = code_and_message(failure);
    let mut response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1);
    if version >= 8 {
        response = response.with_error_message(Some(str_bytes(message)));
    }
    response
}

fn respond(responses: Vec<TopicProduceResponse>) -> Outcome {
    let response = ProduceResponse::default().with_responses(responses);
    Outcome::Respond(Box::new(ResponseKind::Produce(response)))
}
