//! One transactional id's metadata (Kafka's `TransactionMetadata`): its producer id and epoch,
//! state, timeout and the partitions of its ongoing transaction, as `__transaction_state`
//! records carry them.

use std::collections::BTreeSet;

use super::records::{TxnLogValue, TxnState};

/// A partition of a transaction: topic and index.
pub type TxnPartition = (String, i32);

/// Kafka's `RecordBatch.NO_PRODUCER_EPOCH`.
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// The metadata of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub previous_producer_id: i64,
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TxnPartition>,
    /// When the ongoing transaction started (its first AddPartitionsToTxn), -1 when none.
    pub start_ms: i64,
    pub last_update_ms: i64,
    pub client_transaction_version: i16,
}

impl TxnMetadata {
    pub fn from_value(value: TxnLogValue) -> TxnMetadata {
        TxnMetadata {
            producer_id: value.producer_id,
            previous_producer_id: value.previous_producer_id,
            next_producer_id: value.next_producer_id,
            producer_epoch: value.producer_epoch,
            timeout_ms: value.timeout_ms,
            state: value.state,
            partitions: value
                .partitions
                .unwrap_or_default()
                .into_iter()
                .flat_map(|(topic, ids)| ids.into_iter().map(move |p| (topic.clone(), p)))
                .collect(),
            start_ms: value.start_ms,
            last_update_ms: value.last_update_ms,
            client_transaction_version: value.client_transaction_version,
        }
    }

    /// The record value of this metadata: partitions by topic, null in Empty (Kafka's
    /// `TransactionLog.valueToBytes`).
    pub fn to_value(&self) -> TxnLogValue {
        let partitions = if self.state == TxnState::Empty {
            None
        } else {
            let mut by_topic: Vec<(String, Vec<i32>)> = Vec::new();
            for (topic, partition) in &self.partitions {
                match by_topic.last_mut() {
                    Some((last, ids)) if last == topic => ids.push(*partition),
                    _ => by_topic.push((topic.clone(), vec![*partition])),
                }
            }
            Some(by_topic)
        };
        TxnLogValue {
            producer_id: self.producer_id,
            previous_producer_id: self.previous_producer_id,
            next_producer_id: self.next_producer_id,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions,
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
            client_transaction_version: self.client_transaction_version,
        }
    }

    /// Whether the epoch can move once more on this producer id (Kafka bumps to a new producer
    /// id when the epoch would reach `Short.MAX_VALUE`).
    pub fn epoch_exhausted(&self) -> bool {
        self.producer_epoch >= i16::MAX - 1
    }

    /// The transaction is waiting for its markers.
    pub fn preparing(&self) -> bool {
        matches!(self.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_group_by_topic_and_empty_writes_null() {
        let mut meta = TxnMetadata {
            producer_id: 5,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: 1,
            timeout_ms: 1000,
            state: TxnState::Ongoing,
            partitions: [("b", 1), ("a", 2), ("a", 0)]
                .into_iter()
                .map(|(t, p)| (t.to_owned(), p))
                .collect(),
            start_ms: 10,
            last_update_ms: 11,
            client_transaction_version: 0,
        };
        let value = meta.to_value();
        assert_eq!(
            value.partitions,
            Some(vec![
                ("a".to_owned(), vec![0, 2]),
                ("b".to_owned(), vec![1])
            ])
        );
        assert_eq!(TxnMetadata::from_value(value), meta);
        meta.state = TxnState::Empty;
        meta.partitions.clear();
        assert_eq!(meta.to_value().partitions, None);
    }
}
