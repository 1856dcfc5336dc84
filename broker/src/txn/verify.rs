//! KIP-890 part 1: a partition leader accepts a transactional batch that would open a
//! transaction on a partition only once the transaction coordinator confirmed that the
//! partition was added to the producer's ongoing transaction (AddPartitionsToTxn v4
//! `verify_only`). A late or zombie write can then never open a transaction that nobody will
//! end — the hanging transaction that blocks read_committed consumers for ever. Batches of a
//! transaction already open on the partition need no check.
//!
//! KIP-890 part 2 ([`Check::Add`]): for a version 2 producer (Produce v12+, TxnOffsetCommit
//! v5+), which sends no AddPartitionsToTxn of its own, the leader adds the partition to the
//! transaction instead (AddPartitionsToTxn v5, `verify_only` false).

use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;

use super::state::TxnPartition;
use super::TxnProblem;
use crate::context::BrokerContext;

/// How long the coordinator may take to connect and answer.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// AddPartitionsToTxn v4: the first with `verify_only`.
const VERIFY_VERSION: i16 = 4;
/// AddPartitionsToTxn v5, with which brokers add partitions for version 2 producers.
const ADD_VERSION: i16 = 5;

/// What the leader asks of the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Only whether the partitions are in the ongoing transaction (transaction version 1).
    Verify,
    /// Add them to it, starting it if need be (transaction version 2).
    Add,
}

/// Why a partition's batch was not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unverified {
    /// The coordinator says the partition is not in the producer's transaction (or the
    /// producer is not the id's current one).
    Refused(TxnProblem),
    /// The coordinator could not be asked (unknown, unreachable, loading): the producer
    /// retries.
    Unavailable,
}

/// Asks the coordinator of `transactional_id` whether each of `partitions` is in the ongoing
/// transaction of the producer (or to add them, with [`Check::Add`]); one answer per partition,
/// in order (`None`: verified).
pub async fn verify(
    ctx: &BrokerContext,
    check: Check,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[TxnPartition],
) -> Vec<Option<Unverified>> {
    if partitions.is_empty() {
        return Vec::new();
    }
    let unavailable = || vec![Some(Unverified::Unavailable); partitions.len()];
    let Ok(coordinator) = ctx.txns.find(ctx, transactional_id).await else {
        return unavailable();
    };
    if coordinator == ctx.broker_id() && check == Check::Add {
        return match ctx
            .txns
            .add_partitions(
                transactional_id,
                producer_id,
                producer_epoch,
                partitions.to_vec(),
                2,
            )
            .await
        {
            Ok(Ok(())) => vec![None; partitions.len()],
            Ok(Err(problem)) => vec![Some(Unverified::Refused(problem)); partitions.len()],
            Err(_) => unavailable(),
        };
    }
    if coordinator == ctx.broker_id() {
        return match ctx
            .txns
            .verify_partitions(
                transactional_id,
                producer_id,
                producer_epoch,
                partitions.to_vec(),
            )
            .await
        {
            Ok(Ok(each)) => each
                .into_iter()
                .map(|p| p.map(Unverified::Refused))
                .collect(),
            Ok(Err(problem)) => vec![Some(Unverified::Refused(problem)); partitions.len()],
            Err(_) => unavailable(),
        };
    }
    match ask(
        ctx,
        check,
        coordinator,
        transactional_id,
        producer_id,
        producer_epoch,
        partitions,
    )
    .await
    {
        Ok(codes) => codes,
        Err(reason) => {
            tracing::debug!(transactional_id, coordinator, %reason, "transactional write not verified");
            unavailable()
        }
    }
}

/// AddPartitionsToTxn v4 `verify_only` (or v5 adding) to broker `coordinator`.
async fn ask(
    ctx: &BrokerContext,
    check: Check,
    coordinator: i32,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[TxnPartition],
) -> Result<Vec<Option<Unverified>>, String> {
    let image = ctx.image();
    let endpoint = crate::endpoints::live_kafka_endpoint(&image, coordinator)
        .ok_or_else(|| "no live endpoint".to_owned())?;
    let address = format!("{}:{}", endpoint.host, endpoint.port);
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (topic, partition) in partitions {
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(existing) => existing.partitions.push(*partition),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![*partition]),
            ),
        }
    }
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_owned(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_verify_only(check == Check::Verify)
            .with_topics(topics),
    ]);
    let response = ctx
        .peers
        .call(
            coordinator,
            &address,
            &request,
            if check == Check::Verify {
                VERIFY_VERSION
            } else {
                ADD_VERSION
            },
            VERIFY_TIMEOUT,
        )
        .await
        .map_err(|e| format!("{address}: {e:?}"))?;
    if response.error_code != 0 {
        return Err(format!("error code {}", response.error_code));
    }
    let results = response
        .results_by_transaction
        .into_iter()
        .flat_map(|t| t.topic_results)
        .flat_map(|topic| {
            let name = topic.name.0.to_string();
            topic
                .results_by_partition
                .into_iter()
                .map(move |p| ((name.clone(), p.partition_index), p.partition_error_code))
        })
        .collect::<Vec<_>>();
    Ok(partitions
        .iter()
        .map(|tp| match results.iter().find(|(asked, _)| asked == tp) {
            Some((_, 0)) => None,
            Some((_, code)) => Some(refusal(*code)),
            None => Some(Unverified::Unavailable),
        })
        .collect())
}

/// The refusal a coordinator's code stands for; coordinator trouble is retriable.
fn refusal(code: i16) -> Unverified {
    use kafka_protocol::error::ResponseError as E;
    if code == E::InvalidTxnState.code() {
        Unverified::Refused(TxnProblem::InvalidTxnState)
    } else if code == E::ProducerFenced.code() {
        Unverified::Refused(TxnProblem::ProducerFenced)
    } else if code == E::InvalidProducerIdMapping.code() {
        Unverified::Refused(TxnProblem::InvalidProducerIdMapping)
    } else if code == E::ConcurrentTransactions.code() {
        Unverified::Refused(TxnProblem::ConcurrentTransactions)
    } else {
        Unverified::Unavailable
    }
}
