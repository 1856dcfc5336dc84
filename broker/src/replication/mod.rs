//! Partition replication between brokers, the follower's side: followers fetch from leaders
//! ([`fetcher`]) over plain Kafka-protocol connections ([`crate::inter_broker`]). The leader's
//! side of a follower fetch (its position, the high watermark, the ISR changes it calls for)
//! lives with the partition (`crate::partition::replicas`, `crate::partition::isr`).

pub mod fetcher;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use fetcher::ReplicaFetchers;

/// The `[replication]` table: follower fetching and ISR maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: a follower that has not caught up with the leader's log end
    /// for this long leaves the ISR.
    pub lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits at the leader for data.
    pub fetch_wait_max_ms: u64,
    /// `replica.fetch.response.max.bytes`: bytes one follower fetch may bring back in all.
    pub fetch_max_bytes: usize,
    /// `replica.fetch.max.bytes`: bytes one follower fetch may bring back per partition.
    pub fetch_partition_max_bytes: usize,
    /// `replica.fetch.backoff.ms`: the pause after a fetch error before a partition retries.
    pub fetch_backoff_ms: u64,
    /// `replica.socket.timeout.ms`: connect and response timeout of a follower's connection
    /// (beyond the fetch's own wait).
    pub socket_timeout_ms: u64,
    /// Kafka's `follower.replication.throttled.rate` for reassignments: bytes per second one
    /// partition being added to this broker may fetch while catching up; 0 = no limit.
    pub reassignment_max_bytes_per_sec: u64,
    /// `replica.high.watermark.checkpoint.interval.ms`: how often the partitions' high
    /// watermarks are written to `logs/replication-offset-checkpoint` (also at clean shutdown),
    /// where a restarted replica starts from.
    pub high_watermark_checkpoint_interval_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            lag_time_max_ms: 30_000,
            fetch_wait_max_ms: 500,
            fetch_max_bytes: 10 * 1024 * 1024,
            fetch_partition_max_bytes: 1024 * 1024,
            fetch_backoff_ms: 1_000,
            socket_timeout_ms: 30_000,
            reassignment_max_bytes_per_sec: 0,
            high_watermark_checkpoint_interval_ms: 5_000,
        }
    }
}

impl ReplicationConfig {
    pub fn fetch_backoff(&self) -> Duration {
        Duration::from_millis(self.fetch_backoff_ms)
    }

    pub fn socket_timeout(&self) -> Duration {
        Duration::from_millis(self.socket_timeout_ms)
    }

    pub fn high_watermark_checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.high_watermark_checkpoint_interval_ms)
    }

    /// Rules serde cannot express; `Err` names the key.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.lag_time_max_ms == 0 {
            return Err(("replication.lag_time_max_ms", "must be positive"));
        }
        if self.high_watermark_checkpoint_interval_ms == 0 {
            return Err((
                "replication.high_watermark_checkpoint_interval_ms",
                "must be positive",
            ));
        }
        if self.fetch_backoff_ms == 0 || self.socket_timeout_ms == 0 {
            return Err(("replication", "timeouts and backoffs must be positive"));
        }
        if self.fetch_partition_max_bytes < 1024 || self.fetch_max_bytes < 1024 {
            return Err((
                "replication.fetch_max_bytes",
                "fetch sizes must be at least 1024",
            ));
        }
        Ok(())
    }
}
