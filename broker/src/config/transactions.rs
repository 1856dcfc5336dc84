//! The `[transactions]` table: the transaction coordinator and its `__transaction_state` topic,
//! with Kafka's config names (dots become underscores) and defaults.

use serde::{Deserialize, Serialize};

/// The `[transactions]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransactionsConfig {
    /// `transaction.state.log.num.partitions`: partitions of `__transaction_state`, fixed once
    /// the topic exists (an id's coordinator is `abs(hash(transactional.id)) % partitions`).
    pub transaction_state_log_num_partitions: u32,
    /// `transaction.state.log.replication.factor`: replicas of `__transaction_state` (a `--dev`
    /// broker caps it at the live brokers; any other answers COORDINATOR_NOT_AVAILABLE until
    /// enough are up).
    pub transaction_state_log_replication_factor: u16,
    /// `transaction.state.log.min.isr`.
    pub transaction_state_log_min_isr: u16,
    /// `transaction.state.log.segment.bytes`.
    pub transaction_state_log_segment_bytes: u64,
    /// `transaction.max.timeout.ms`: InitProducerId with a longer `transaction.timeout.ms` is
    /// refused with INVALID_TRANSACTION_TIMEOUT.
    pub transaction_max_timeout_ms: u64,
    /// `transactional.id.expiration.ms`: an id with no transaction for this long is removed.
    pub transactional_id_expiration_ms: u64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub transaction_remove_expired_transaction_cleanup_interval_ms: u64,
    /// The finalized `transaction.version` feature (0–2, Kafka 4's default 2): advertised in
    /// ApiVersions v4+, so that clients that know KIP-890 part 2 bump the epoch on every
    /// transaction; at 1+ `__transaction_state` values are written at v1 (with the previous
    /// and next producer ids); at 2 the coordinator's own aborts (timeouts, fencing) take the
    /// version 2 path. Set the same on every broker.
    pub transaction_version: u8,
}

impl Default for TransactionsConfig {
    fn default() -> Self {
        TransactionsConfig {
            transaction_state_log_num_partitions: 50,
            transaction_state_log_replication_factor: 3,
            transaction_state_log_min_isr: 2,
            transaction_state_log_segment_bytes: 100 * 1024 * 1024,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            transaction_remove_expired_transaction_cleanup_interval_ms: 3_600_000,
            transaction_version: 2,
        }
    }
}

impl TransactionsConfig {
    /// Rules serde's types cannot express: `(key, reason)` of the first broken one.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.transaction_state_log_num_partitions == 0
            || self.transaction_state_log_num_partitions
                > streambus_raft::command::MAX_PARTITIONS_PER_TOPIC
        {
            return Err((
                "transactions.transaction_state_log_num_partitions",
                "must be between 1 and 10000",
            ));
        }
        if self.transaction_state_log_replication_factor == 0
            || self.transaction_state_log_min_isr == 0
        {
            return Err((
                "transactions.transaction_state_log_replication_factor",
                "replication factor and min ISR must be at least 1",
            ));
        }
        if self.transaction_state_log_segment_bytes < 1024 * 1024 {
            return Err((
                "transactions.transaction_state_log_segment_bytes",
                "must be at least 1 MiB",
            ));
        }
        if self.transaction_max_timeout_ms == 0 || self.transaction_max_timeout_ms > i32::MAX as u64
        {
            return Err((
                "transactions.transaction_max_timeout_ms",
                "must be between 1 and 2^31-1",
            ));
        }
        if self.transaction_version > 2 {
            return Err(("transactions.transaction_version", "must be 0, 1 or 2"));
        }
        // Kafka's are int configs; the bound also keeps timer deadlines far from overflow.
        if self.transactional_id_expiration_ms == 0
            || self.transactional_id_expiration_ms > i32::MAX as u64
            || self.transaction_remove_expired_transaction_cleanup_interval_ms == 0
            || self.transaction_remove_expired_transaction_cleanup_interval_ms > i32::MAX as u64
        {
            return Err((
                "transactions.transactional_id_expiration_ms",
                "expiration and cleanup interval must be between 1 and 2^31-1",
            ));
        }
        Ok(())
    }

    /// The state machine's limits.
    pub fn rules(&self) -> crate::txn::machine::TxnRules {
        crate::txn::machine::TxnRules {
            max_timeout_ms: i32::try_from(self.transaction_max_timeout_ms).unwrap_or(i32::MAX),
            id_expiration_ms: i64::try_from(self.transactional_id_expiration_ms)
                .unwrap_or(i64::MAX),
            expiration_check_interval_ms: i64::try_from(
                self.transaction_remove_expired_transaction_cleanup_interval_ms,
            )
            .unwrap_or(i64::MAX),
            transaction_version: i16::from(self.transaction_version),
        }
    }
}
