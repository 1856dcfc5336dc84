//! The transaction coordinator's APIs: AddPartitionsToTxn (v0–3 from producers, v4+ batched
//! between brokers, with `verify_only` for KIP-890), AddOffsetsToTxn, EndTxn,
//! DescribeTransactions, ListTransactions and DescribeProducers; and the group coordinator's
//! TxnOffsetCommit.
//! InitProducerId with a transactional id is in `init_producer_id`, WriteTxnMarkers in
//! `write_txn_markers`.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{self, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TopicName, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::context::BrokerContext;
use crate::coordinator::CoordinatorError;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{str_bytes, text};
use crate::txn::records::TxnState;
use crate::txn::state::TxnPartition;
use crate::txn::verify::Unverified;
use crate::txn::{check_transactional_id, TxnProblem};

/// Kafka's codes that only this module answers.
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const INVALID_PRODUCER_EPOCH: i16 = 47;

/// The code of a coordinator's answer; PRODUCER_FENCED is INVALID_PRODUCER_EPOCH for clients
/// older than KIP-588 (`fenced_as_epoch`), as Kafka answers them.
fn txn_code(
    outcome: Result<Result<(), TxnProblem>, CoordinatorError>,
    fenced_as_epoch: bool,
) -> i16 {
    match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(TxnProblem::ProducerFenced)) if fenced_as_epoch => INVALID_PRODUCER_EPOCH,
        Ok(Err(problem)) => code(Failure::Txn(problem)),
        Err(error) => code(Failure::Coordinator(&error)),
    }
}

// ------------------------------------------------------------------------- AddPartitionsToTxn

/// One transaction of an AddPartitionsToTxn.
struct Adding {
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: Vec<AddPartitionsToTxnTopic>,
}

pub async fn add_partitions(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let version = req.api_version;
    let transactions: Vec<Adding> = if version < 4 {
        vec![Adding {
            transactional_id: text(&request.v3_and_below_transactional_id.0),
            producer_id: request.v3_and_below_producer_id.0,
            producer_epoch: request.v3_and_below_producer_epoch,
            verify_only: false,
            topics: request.v3_and_below_topics,
        }]
    } else {
        request
            .transactions
            .into_iter()
            .map(|t| Adding {
                transactional_id: text(&t.transactional_id.0),
                producer_id: t.producer_id.0,
                producer_epoch: t.producer_epoch,
                verify_only: t.verify_only,
                topics: t.topics,
            })
            .collect()
    };
    let mut results = Vec::with_capacity(transactions.len());
    for transaction in transactions {
        results.push(add_one(ctx, version, transaction).await);
    }
    if version < 4 {
        let topics = results
            .into_iter()
            .next()
            .map(|r| r.topic_results)
            .unwrap_or_default();
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics);
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// The answer of one transaction: one code for all its partitions, unless some partition is
/// unknown (or internal, which a producer may not add): then those get their code and the
/// others OPERATION_NOT_ATTEMPTED, and nothing is added (Kafka's order).
async fn add_one(ctx: &BrokerContext, version: i16, adding: Adding) -> AddPartitionsToTxnResult {
    let image = ctx.image();
    let mut wanted: Vec<TxnPartition> = Vec::new();
    let mut refused: Vec<(TxnPartition, i16)> = Vec::new();
    for topic in &adding.topics {
        let name = topic.name.0.to_string();
        let record = image.topic_by_name(&name);
        for &partition in &topic.partitions {
            let tp = (name.clone(), partition);
            let exists = record.is_some_and(|r| {
                u32::try_from(partition).is_ok_and(|p| (p as usize) < r.partitions.len())
            });
            // A producer never adds an internal topic; brokers (v4+) add or verify the group
            // offsets partition of a TxnOffsetCommit, and nothing else internal (a marker for
            // `__transaction_state` would never be accepted, hanging the transaction).
            let brokers_offsets = version >= 4 && name == crate::group::OFFSETS_TOPIC;
            if crate::coordinator::topic::is_internal(&name) && !brokers_offsets {
                refused.push((tp, TOPIC_AUTHORIZATION_FAILED));
            } else if !exists {
                refused.push((tp, code(Failure::Request(RequestProblem::UnknownTopic))));
            } else {
                wanted.push(tp);
            }
        }
    }
    let id = adding.transactional_id.clone();
    let codes: Vec<(TxnPartition, i16)> = if check_transactional_id(&id).is_err() {
        let invalid = code(Failure::Request(RequestProblem::InvalidTransactionalId));
        wanted
            .into_iter()
            .chain(refused.into_iter().map(|(tp, _)| tp))
            .map(|tp| (tp, invalid))
            .collect()
    } else if !refused.is_empty() {
        wanted
            .into_iter()
            .map(|tp| (tp, OPERATION_NOT_ATTEMPTED))
            .chain(refused)
            .collect()
    } else if adding.verify_only {
        let verified = ctx
            .txns
            .verify_partitions(
                &id,
                adding.producer_id,
                adding.producer_epoch,
                wanted.clone(),
            )
            .await;
        match verified {
            Ok(Ok(each)) => wanted
                .into_iter()
                .zip(each)
                .map(|(tp, problem)| (tp, problem.map_or(0, |p| code(Failure::Txn(p)))))
                .collect(),
            other => {
                let all = txn_code(other.map(|r| r.map(|_| ())), false);
                wanted.into_iter().map(|tp| (tp, all)).collect()
            }
        }
    } else {
        let outcome = ctx
            .txns
            .add_partitions(
                &id,
                adding.producer_id,
                adding.producer_epoch,
                wanted.clone(),
                // v4+ comes from brokers adding for a version 2 producer (Kafka's TV_2).
                if version >= 4 { 2 } else { 0 },
            )
            .await;
        let all = txn_code(outcome, version < 2);
        wanted.into_iter().map(|tp| (tp, all)).collect()
    };
    AddPartitionsToTxnResult::default()
        .with_transactional_id(TransactionalId(str_bytes(id)))
        .with_topic_results(topic_results(codes))
}

/// Partition codes grouped by topic, in the order topics first appear.
fn topic_results(codes: Vec<(TxnPartition, i16)>) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    // A map, so that a request naming a great many topics costs no quadratic scan.
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for ((topic, partition), error_code) in codes {
        let result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(partition)
            .with_partition_error_code(error_code);
        match index.get(&topic) {
            Some(&at) => topics[at].results_by_partition.push(result),
            None => {
                index.insert(topic.clone(), topics.len());
                topics.push(
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_results_by_partition(vec![result]),
                );
            }
        }
    }
    topics
}

// ---------------------------------------------------------------------------- AddOffsetsToTxn

/// AddOffsetsToTxn: the partition of `__consumer_offsets` that coordinates the group joins the
/// transaction, so that its marker makes the TxnOffsetCommit of the group take effect.
pub async fn add_offsets(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let id = text(&request.transactional_id.0);
    let group_id = request.group_id.0.to_string();
    let error_code = if check_transactional_id(&id).is_err() {
        code(Failure::Request(RequestProblem::InvalidTransactionalId))
    } else if let Err(problem) = crate::group::check_group_id(&group_id) {
        code(Failure::Group(problem))
    } else {
        let partition = i32::try_from(ctx.groups.partition_for(&group_id)).unwrap_or(i32::MAX);
        let offsets = (crate::group::OFFSETS_TOPIC.to_owned(), partition);
        let outcome = ctx
            .txns
            .add_partitions(
                &id,
                request.producer_id.0,
                request.producer_epoch,
                vec![offsets],
                0,
            )
            .await;
        txn_code(outcome, req.api_version < 2)
    };
    AddOffsetsToTxnResponse::default().with_error_code(error_code)
}

// ---------------------------------------------------------------------------- TxnOffsetCommit

/// TxnOffsetCommit, to the group's coordinator: offsets committed in the producer's
/// transaction, which take effect when it commits. v3+ names the member, checked as an offset
/// commit's; before, only the transaction vouches for it.
pub async fn txn_offset_commit(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    use crate::group::machine::{CommitPartition, CommitRequest};
    use crate::group::txn_offsets::TxnCommitRequest;
    use crate::group::GroupProblem;

    let version = req.api_version;
    let group_id = request.group_id.0.to_string();
    let image = ctx.image();
    let group_problem = crate::group::check_group_id(&group_id).err();
    let mut codes: Vec<Vec<Option<i16>>> = Vec::with_capacity(request.topics.len());
    let mut partitions = Vec::new();
    for topic in &request.topics {
        let mut topic_codes = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            if let Some(problem) = group_problem {
                topic_codes.push(Some(code(Failure::Group(problem))));
            } else if !super::offsets::exists(&image, &topic.name, p.partition_index) {
                topic_codes.push(Some(code(Failure::Group(
                    GroupProblem::UnknownTopicOrPartition,
                ))));
            } else {
                topic_codes.push(None);
                partitions.push(CommitPartition {
                    topic: topic.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 2 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    topic_id: image
                        .topic_by_name(&topic.name)
                        .map(|t| crate::kafka::wire::to_uuid(&t.topic_id))
                        .unwrap_or_default(),
                    retention_ms: -1,
                });
            }
        }
        codes.push(topic_codes);
    }
    let mut answered: Vec<i16> = Vec::new();
    if !partitions.is_empty() {
        let count = partitions.len();
        let (member_id, generation_id, group_instance_id) = if version >= 3 {
            (
                request.member_id.to_string(),
                request.generation_id,
                request.group_instance_id.as_ref().map(|s| s.to_string()),
            )
        } else {
            (String::new(), -1, None)
        };
        // KIP-890 part 1 for offsets, as Kafka's group coordinator does: the transaction
        // coordinator confirms that the group's offsets partition is in the producer's ongoing
        // transaction at this epoch. A zombie's commit (an older epoch) or one never added
        // with AddOffsetsToTxn writes nothing.
        let offsets_partition =
            i32::try_from(ctx.groups.partition_for(&group_id)).unwrap_or(i32::MAX);
        // v5+ is a transaction version 2 producer's, which sent no AddOffsetsToTxn: the offsets
        // partition is added here.
        let check = if version >= 5 {
            crate::txn::verify::Check::Add
        } else {
            crate::txn::verify::Check::Verify
        };
        // The guard is taken on the offsets partition (led here when this broker coordinates
        // the group) before the coordinator is asked, so that a marker landing in between
        // voids it and the write is refused; nothing is asked when the producer has a
        // transaction open there at this epoch already.
        let offsets_topic = image.topic_by_name(crate::group::OFFSETS_TOPIC);
        let (ask, guard) =
            match super::led_partition(ctx, &image, offsets_topic, offsets_partition, -1).await {
                Ok(partition) => match partition
                    .begin_verification(request.producer_id.0, request.producer_epoch, version >= 5)
                    .await
                {
                    Some(guard) => (true, Some(guard)),
                    None => (false, None),
                },
                // Not led here: the group coordinator answers NOT_COORDINATOR.
                Err(_) => (true, None),
            };
        let verified = if ask {
            crate::txn::verify::verify(
                ctx,
                check,
                &request.transactional_id.0,
                request.producer_id.0,
                request.producer_epoch,
                &[(crate::group::OFFSETS_TOPIC.to_owned(), offsets_partition)],
            )
            .await
        } else {
            Vec::new()
        };
        if let Some(Some(unverified)) = verified.first() {
            let refused = match unverified {
                // As a partition leader answers a fenced producer's write.
                Unverified::Refused(TxnProblem::ProducerFenced) => INVALID_PRODUCER_EPOCH,
                // CONCURRENT_TRANSACTIONS (the previous transaction still ending) is retried
                // by clients as it is.
                Unverified::Refused(
                    problem @ (TxnProblem::InvalidTxnState
                    | TxnProblem::InvalidProducerIdMapping
                    | TxnProblem::ConcurrentTransactions),
                ) => code(Failure::Txn(*problem)),
                // Retriable: its coordinator could not be asked.
                Unverified::Refused(_) | Unverified::Unavailable => {
                    code(Failure::Coordinator(&CoordinatorError::NotAvailable {
                        topic: crate::txn::TRANSACTION_STATE_TOPIC.to_owned(),
                        reason: "the transaction coordinator could not be asked".to_owned(),
                    }))
                }
            };
            return txn_offset_response(&request, codes, vec![refused; count]);
        }
        let commit = TxnCommitRequest {
            producer_id: request.producer_id.0,
            producer_epoch: request.producer_epoch,
            guard,
            commit: CommitRequest {
                api_version: version,
                member_id,
                group_instance_id,
                generation_id,
                partitions,
            },
        };
        answered = match ctx.groups.txn_commit(&group_id, commit).await {
            Ok(Ok(outcomes)) => outcomes
                .into_iter()
                .map(|(_, _, p)| p.map_or(0, |p| code(Failure::Group(p))))
                .collect(),
            Ok(Err(problem)) => vec![code(Failure::Group(problem)); count],
            Err(error) => vec![code(Failure::Coordinator(&error)); count],
        };
    }
    txn_offset_response(&request, codes, answered)
}

/// The TxnOffsetCommit answer: `codes` as checked before the coordinator, each unset one
/// filled from `answered` in order.
fn txn_offset_response(
    request: &TxnOffsetCommitRequest,
    codes: Vec<Vec<Option<i16>>>,
    answered: Vec<i16>,
) -> TxnOffsetCommitResponse {
    let topics = request
        .topics
        .iter()
        .zip(super::offsets::fill(codes, answered))
        .map(|(topic, codes)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .zip(codes)
                        .map(|(p, error_code)| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(error_code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

// ------------------------------------------------------------------------- DescribeProducers

/// DescribeProducers: the producers each partition this broker leads keeps state for, with
/// the start of their open transaction (what `kafka-transactions.sh find-hanging` reads).
pub async fn describe_producers(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: kafka_protocol::messages::DescribeProducersRequest,
) -> kafka_protocol::messages::DescribeProducersResponse {
    use kafka_protocol::messages::describe_producers_response::{
        PartitionResponse, ProducerState, TopicResponse,
    };
    let image = ctx.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let record = image.topic_by_name(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
        for index in topic.partition_indexes {
            let answered = match super::led_partition(ctx, &image, record, index, -1).await {
                Err(failure) => {
                    let (error_code, message) = crate::kafka::errors::code_and_message(failure);
                    PartitionResponse::default()
                        .with_error_code(error_code)
                        .with_error_message(Some(str_bytes(message)))
                }
                Ok(partition) => PartitionResponse::default().with_active_producers(
                    partition
                        .producers()
                        .await
                        .into_iter()
                        .map(|(producer_id, entry)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(producer_id))
                                .with_producer_epoch(i32::from(entry.epoch))
                                .with_last_sequence(entry.last_sequence())
                                .with_last_timestamp(entry.last_timestamp_ms)
                                .with_coordinator_epoch(entry.coordinator_epoch)
                                .with_current_txn_start_offset(
                                    entry.current_txn_first_offset.unwrap_or(-1),
                                )
                        })
                        .collect(),
                ),
            };
            partitions.push(answered.with_partition_index(index));
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    kafka_protocol::messages::DescribeProducersResponse::default().with_topics(topics)
}

// ------------------------------------------------------------------------------------ EndTxn

pub async fn end_txn(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: EndTxnRequest,
) -> EndTxnResponse {
    let id = text(&request.transactional_id.0);
    let response = EndTxnResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if check_transactional_id(&id).is_err() {
        return response.with_error_code(code(Failure::Request(
            RequestProblem::InvalidTransactionalId,
        )));
    }
    if req.api_version >= 5 {
        // Transaction version 2: the answer names the producer id and epoch to go on with.
        let outcome = ctx
            .txns
            .end_txn_v2(
                ctx,
                &id,
                request.producer_id.0,
                request.producer_epoch,
                request.committed,
            )
            .await;
        return match outcome {
            Ok(Ok((producer_id, epoch))) => response
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            other => response.with_error_code(txn_code(other.map(|r| r.map(|_| ())), false)),
        };
    }
    let outcome = ctx
        .txns
        .end_txn(
            &id,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
        )
        .await;
    response.with_error_code(txn_code(outcome, req.api_version < 2))
}

// ------------------------------------------------------------------- Describe/ListTransactions

pub async fn describe(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for id in request.transactional_ids {
        let id_text = text(&id.0);
        let base = describe_transactions_response::TransactionState::default()
            .with_transactional_id(id.clone())
            .with_transaction_state(StrBytes::from_static_str(""))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let described = if check_transactional_id(&id_text).is_err() {
            Err(code(Failure::Txn(TxnProblem::TransactionalIdNotFound)))
        } else {
            match ctx.txns.describe(&id_text).await {
                Ok(Some(found)) => Ok(found),
                Ok(None) => Err(code(Failure::Txn(TxnProblem::TransactionalIdNotFound))),
                Err(error) => Err(code(Failure::Coordinator(&error))),
            }
        };
        states.push(match described {
            Err(error_code) => base.with_error_code(error_code),
            Ok(found) => {
                let meta = found.metadata;
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, partition) in &meta.partitions {
                    match topics.last_mut() {
                        Some(last) if last.topic.0.as_str() == topic => {
                            last.partitions.push(*partition)
                        }
                        _ => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(str_bytes(topic.clone())))
                                .with_partitions(vec![*partition]),
                        ),
                    }
                }
                base.with_transaction_state(StrBytes::from_static_str(meta.state.name()))
                    .with_transaction_timeout_ms(meta.timeout_ms)
                    .with_transaction_start_time_ms(
                        if meta.state == TxnState::Ongoing || meta.preparing() {
                            meta.start_ms
                        } else {
                            -1
                        },
                    )
                    .with_producer_id(ProducerId(meta.producer_id))
                    .with_producer_epoch(meta.producer_epoch)
                    .with_topics(topics)
            }
        });
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// The states ListTransactions filters on, by Kafka's names.
const STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

pub async fn list(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for name in &request.state_filters {
        match STATES.iter().find(|s| s.name() == name.as_str()) {
            Some(state) => states.push(*state),
            None => unknown.push(name.clone()),
        }
    }
    let pattern = match request
        .transactional_id_pattern
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        None => None,
        Some(pattern) => match regex::Regex::new(pattern) {
            Ok(compiled) => Some(compiled),
            Err(_) => {
                return ListTransactionsResponse::default()
                    .with_error_code(code(Failure::Txn(TxnProblem::InvalidRegularExpression)))
            }
        },
    };
    let all = match ctx.txns.list().await {
        Ok(all) => all,
        Err(error) => {
            return ListTransactionsResponse::default()
                .with_error_code(code(Failure::Coordinator(&error)))
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let duration = if req.api_version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let listed = all
        .into_iter()
        .filter(|t| states.is_empty() || states.contains(&t.metadata.state))
        .filter(|t| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == t.metadata.producer_id)
        })
        .filter(|t| {
            // Kafka: only transactions running at least that long (ongoing ones have a start).
            duration < 0 || (t.metadata.start_ms >= 0 && now_ms - t.metadata.start_ms >= duration)
        })
        .filter(|t| {
            pattern
                .as_ref()
                .is_none_or(|p| p.is_match(&t.transactional_id))
        })
        .map(|t| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(t.transactional_id)))
                .with_producer_id(ProducerId(t.metadata.producer_id))
                .with_transaction_state(StrBytes::from_static_str(t.metadata.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}
