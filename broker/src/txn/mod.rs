//! The transaction coordinator: Kafka's transactions (KIP-98) on the coordinator runtime over
//! `__transaction_state`.
//!
//! Modules:
//! - [`records`]: Kafka's key and value schemas of `__transaction_state`.
//! - [`state`]: one transactional id's metadata.
//! - [`machine`]: the state machine of one partition (pure: time is passed in, producer ids
//!   are allocated by the caller).
//! - [`coordinator`]: the service handlers call (routing, producer ids, completion).
//! - [`markers`]: writing the markers of ending transactions to the partitions' leaders.
//! - [`verify`]: KIP-890 verification of a transactional write with the coordinator.

pub mod coordinator;
pub mod machine;
pub mod markers;
pub mod records;
pub mod state;
pub mod verify;

/// The name of the internal topic that holds transactional ids and their transactions.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Why a record could not be encoded although every stored string was checked: a bug.
pub(crate) const LENGTHS_CHECKED: &str =
    "transactional ids and topic names are checked against Kafka's string limit before they are stored";

/// Kafka's transactional id rule: not empty (and, here, within the record schema's string
/// limit, so that every id stored encodes).
pub fn check_transactional_id(id: &str) -> Result<(), TxnProblem> {
    if id.is_empty() || id.len() > crate::group::STRING_MAX_BYTES {
        Err(TxnProblem::InvalidTransactionalId)
    } else {
        Ok(())
    }
}

/// Why the transaction coordinator refused a request: each case is one Kafka error code,
/// mapped in `kafka/errors.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnProblem {
    /// `transaction.timeout.ms` is not positive or above `transaction.max.timeout.ms`.
    InvalidTransactionTimeout,
    /// The producer id is not the one this transactional id has.
    InvalidProducerIdMapping,
    /// A newer producer with this transactional id exists (a bumped epoch).
    ProducerFenced,
    /// The transaction is being completed; ask again shortly.
    ConcurrentTransactions,
    /// The request does not fit the transaction's state (e.g. EndTxn with nothing ongoing).
    InvalidTxnState,
    TransactionalIdNotFound,
    /// An empty or oversize transactional id (Kafka: INVALID_REQUEST).
    InvalidTransactionalId,
    /// ListTransactions with a transactional id pattern that is not a regular expression.
    InvalidRegularExpression,
}

#[cfg(test)]
mod tests;
