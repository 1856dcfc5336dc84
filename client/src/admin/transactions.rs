//! Transaction administration, as Kafka's `Admin` and `kafka-transactions.sh` do it:
//! ListTransactions (every broker lists the ids it coordinates), DescribeTransactions (at the
//! id's coordinator), DescribeProducers (at a partition's leader), and the abort of a hanging
//! transaction — a WriteTxnMarkers abort marker written straight to the partition, for a
//! producer whose coordinator no longer tracks the transaction there.

use std::collections::BTreeMap;
use std::time::Instant;

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, ProducerId,
    TopicName, TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::Admin;
use crate::error::{Error, Result};
use crate::group::coordinator::Coordinator;

/// A transaction as ListTransactions names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    /// Kafka's state names: Ongoing, PrepareCommit, CompleteAbort, ...
    pub state: String,
    /// The broker coordinating it.
    pub coordinator: i32,
}

/// What ListTransactions filters on (empty: everything).
#[derive(Debug, Clone, Default)]
pub struct TransactionFilter {
    pub states: Vec<String>,
    pub producer_ids: Vec<i64>,
    /// Only transactions running at least this long (ms).
    pub min_duration_ms: Option<i64>,
}

/// A transaction as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// When the open transaction started (ms since the epoch), if one is open.
    pub start_time_ms: Option<i64>,
    pub coordinator: Option<i32>,
    pub partitions: Vec<(String, i32)>,
}

/// A producer as a partition's leader knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProducerDescription {
    pub producer_id: i64,
    pub producer_epoch: i32,
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction on the partition, if one is open.
    pub current_txn_start_offset: Option<i64>,
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

impl Admin {
    fn txn_deadline(&self) -> Instant {
        Instant::now() + self.client.config().api_timeout
    }

    /// The transactions of every broker, filtered.
    pub async fn list_transactions(
        &self,
        filter: &TransactionFilter,
    ) -> Result<Vec<TransactionListing>> {
        let metadata = self
            .client
            .retry(&[], || self.client.refresh_metadata(&[], false))
            .await?;
        let request = ListTransactionsRequest::default()
            .with_state_filters(filter.states.iter().map(|s| str_bytes(s)).collect())
            .with_producer_id_filters(filter.producer_ids.iter().map(|&p| ProducerId(p)).collect())
            .with_duration_filter(filter.min_duration_ms.unwrap_or(-1));
        let mut listed = BTreeMap::new();
        for &broker in metadata.brokers.keys() {
            let response = self
                .client
                .retry(&[], || self.client.send_to(broker, &request, 0, 1))
                .await?;
            Error::check(response.error_code, || {
                Some(format!("ListTransactions on broker {broker}"))
            })?;
            if let Some(unknown) = response.unknown_state_filters.first() {
                return Err(Error::Protocol(format!(
                    "unknown transaction state {unknown}"
                )));
            }
            for t in response.transaction_states {
                let listing = TransactionListing {
                    transactional_id: t.transactional_id.0.to_string(),
                    producer_id: t.producer_id.0,
                    state: t.transaction_state.to_string(),
                    coordinator: broker,
                };
                listed.insert(listing.transactional_id.clone(), listing);
            }
        }
        Ok(listed.into_values().collect())
    }

    /// `transactional_id` as its coordinator describes it.
    pub async fn describe_transaction(
        &self,
        transactional_id: &str,
    ) -> Result<TransactionDescription> {
        let coordinator = Coordinator::for_transaction(self.client.clone(), transactional_id);
        let request = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(str_bytes(transactional_id))]);
        let response = coordinator
            .send(
                |_| request.clone(),
                (0, 0),
                None,
                self.txn_deadline(),
                |r| r.transaction_states.first().map_or(0, |t| t.error_code),
            )
            .await?;
        let state = response
            .transaction_states
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("empty DescribeTransactions response".to_owned()))?;
        Error::check(state.error_code, || {
            Some(format!("describing transaction {transactional_id}"))
        })?;
        Ok(TransactionDescription {
            transactional_id: state.transactional_id.0.to_string(),
            state: state.transaction_state.to_string(),
            producer_id: state.producer_id.0,
            producer_epoch: state.producer_epoch,
            timeout_ms: state.transaction_timeout_ms,
            start_time_ms: (state.transaction_start_time_ms >= 0)
                .then_some(state.transaction_start_time_ms),
            coordinator: coordinator.node_id(),
            partitions: state
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(move |p| (t.topic.0.to_string(), *p))
                })
                .collect(),
        })
    }

    /// The producers `topic`-`partition`'s leader keeps state for.
    pub async fn describe_producers(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ProducerDescription>> {
        let topics = [topic.to_owned()];
        let request = DescribeProducersRequest::default()
            .with_topics(vec![TopicRequest::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partition_indexes(vec![partition])]);
        let response = self
            .client
            .retry(&topics, || async {
                let leader = self.leader(topic, partition).await?;
                let response = self.client.send_to(leader, &request, 0, 0).await?;
                let code = response
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .map_or(0, |p| p.error_code);
                Error::check(code, || {
                    Some(format!("DescribeProducers {topic}-{partition}"))
                })?;
                Ok(response)
            })
            .await?;
        Ok(response
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .flat_map(|p| p.active_producers)
            .map(|p| ProducerDescription {
                producer_id: p.producer_id.0,
                producer_epoch: p.producer_epoch,
                last_sequence: p.last_sequence,
                last_timestamp_ms: p.last_timestamp,
                coordinator_epoch: p.coordinator_epoch,
                current_txn_start_offset: (p.current_txn_start_offset >= 0)
                    .then_some(p.current_txn_start_offset),
            })
            .collect())
    }

    /// Writes an abort marker for `producer_id` at `producer_epoch` to `topic`-`partition`
    /// (Kafka's `Admin.abortTransaction`): the open transaction there ends, aborted. Meant for
    /// a hanging transaction whose coordinator no longer tracks it; a live transaction's
    /// producer would find its writes there aborted.
    pub async fn abort_transaction(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<()> {
        let topics = [topic.to_owned()];
        let marker = WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_transaction_result(false)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partition_indexes(vec![partition])]);
        let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
        self.client
            .retry(&topics, || async {
                let leader = self.leader(topic, partition).await?;
                let response = self.client.send_to(leader, &request, 1, 1).await?;
                let code = response
                    .markers
                    .first()
                    .and_then(|m| m.topics.first())
                    .and_then(|t| t.partitions.first())
                    .map_or(0, |p| p.error_code);
                Error::check(code, || {
                    Some(format!("abort marker on {topic}-{partition}"))
                })
            })
            .await
    }

    /// The leader of `topic`-`partition`, from fresh metadata.
    async fn leader(&self, topic: &str, partition: i32) -> Result<i32> {
        let metadata = self
            .client
            .refresh_metadata(&[topic.to_owned()], false)
            .await?;
        metadata
            .leader(topic, partition)
            .ok_or_else(|| Error::Protocol(format!("{topic}-{partition} has no leader")))
    }
}
