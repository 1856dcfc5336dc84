//! The `[groups]` table: the group coordinator and its `__consumer_offsets` topic, with Kafka's
//! config names (dots become underscores) and defaults.

use serde::{Deserialize, Serialize};

/// The `[groups]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsConfig {
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`, fixed once the topic
    /// exists (a group's coordinator is `abs(hash(group)) % partitions`).
    pub offsets_topic_num_partitions: u32,
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets`. With fewer live
    /// brokers, a production cluster refuses to create the topic (clients get
    /// COORDINATOR_NOT_AVAILABLE until enough brokers are up); a `--dev` broker caps it.
    pub offsets_topic_replication_factor: u16,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets` (small, so that
    /// compaction has closed segments to work on).
    pub offsets_topic_segment_bytes: u64,
    /// `offsets.retention.minutes`: how long the committed offsets of an empty group (or of a
    /// topic a consumer group no longer subscribes to) are kept.
    pub offsets_retention_minutes: u64,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are removed.
    pub offsets_retention_check_interval_ms: u64,
    /// `offsets.commit.timeout.ms`: how long a commit waits for its record to be replicated.
    pub offsets_commit_timeout_ms: u64,
    /// `offset.metadata.max.bytes`: a commit's metadata string beyond this is refused with
    /// OFFSET_METADATA_TOO_LARGE.
    pub offset_metadata_max_bytes: usize,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members before it completes (each newcomer extends it, up to the rebalance
    /// timeout).
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`: JoinGroup with a shorter session timeout is refused.
    pub group_min_session_timeout_ms: u64,
    /// `group.max.session.timeout.ms`: JoinGroup with a longer session timeout is refused.
    pub group_max_session_timeout_ms: u64,
    /// `group.max.size`: members a classic group may have.
    pub group_max_size: u32,
    /// `group.consumer.session.timeout.ms`: a KIP-848 member that does not heartbeat for this
    /// long is removed.
    pub consumer_session_timeout_ms: u64,
    /// `group.consumer.heartbeat.interval.ms`: how often KIP-848 members are told to heartbeat.
    pub consumer_heartbeat_interval_ms: u64,
    /// `group.consumer.max.size`: members a KIP-848 consumer group may have.
    pub consumer_max_size: u32,
    /// `group.consumer.migration.policy`: `bidirectional` (Kafka's default), `upgrade`,
    /// `downgrade` or `disabled` — whether a non-empty classic group becomes a consumer group
    /// when a member joins with the consumer protocol, and back when its last such member
    /// leaves. Empty groups always convert.
    pub consumer_migration_policy: crate::group::consumer::MigrationPolicy,
    /// Per broker, at most this many (group, partition) series of
    /// `streambus_group_consumer_lag_records` are published (0: no lag gauge). Not a Kafka
    /// config: Kafka brokers publish no lag.
    pub consumer_lag_max_series: usize,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_check_interval_ms: 600_000,
            offsets_commit_timeout_ms: 5_000,
            offset_metadata_max_bytes: 4096,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: i32::MAX as u32,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_max_size: i32::MAX as u32,
            consumer_migration_policy: crate::group::consumer::MigrationPolicy::Bidirectional,
            consumer_lag_max_series: 1000,
        }
    }
}

impl GroupsConfig {
    /// Rules serde's types cannot express: `(key, reason)` of the first broken one.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.offsets_topic_num_partitions == 0
            || self.offsets_topic_num_partitions > streambus_raft::command::MAX_PARTITIONS_PER_TOPIC
        {
            return Err((
                "groups.offsets_topic_num_partitions",
                "must be between 1 and 10000",
            ));
        }
        if self.offsets_topic_replication_factor == 0 {
            return Err((
                "groups.offsets_topic_replication_factor",
                "must be at least 1",
            ));
        }
        if self.offsets_topic_segment_bytes < 1024 * 1024 {
            return Err((
                "groups.offsets_topic_segment_bytes",
                "must be at least 1 MiB",
            ));
        }
        if self.offsets_retention_minutes == 0
            || self.offsets_retention_minutes > i64::MAX as u64 / 60_000
        {
            return Err(("groups.offsets_retention_minutes", "must be positive"));
        }
        if self.offsets_retention_check_interval_ms == 0 || self.offsets_commit_timeout_ms == 0 {
            return Err(("groups", "intervals and timeouts must be positive"));
        }
        if self.offset_metadata_max_bytes > crate::group::STRING_MAX_BYTES {
            return Err((
                "groups.offset_metadata_max_bytes",
                "at most 32767 (the record schema's string limit)",
            ));
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
            || self.group_max_session_timeout_ms > i32::MAX as u64
        {
            return Err((
                "groups.group_min_session_timeout_ms",
                "must not exceed group_max_session_timeout_ms (at most 2^31-1)",
            ));
        }
        if self.group_max_size == 0 || self.group_max_size > i32::MAX as u32 {
            return Err(("groups.group_max_size", "must be between 1 and 2^31-1"));
        }
        if self.consumer_session_timeout_ms == 0
            || self.consumer_heartbeat_interval_ms == 0
            || self.consumer_heartbeat_interval_ms >= self.consumer_session_timeout_ms
            || self.consumer_session_timeout_ms > i32::MAX as u64
        {
            return Err((
                "groups.consumer_heartbeat_interval_ms",
                "must be positive and below consumer_session_timeout_ms (at most 2^31-1)",
            ));
        }
        if self.consumer_max_size == 0 || self.consumer_max_size > i32::MAX as u32 {
            return Err(("groups.consumer_max_size", "must be between 1 and 2^31-1"));
        }
        if self.group_initial_rebalance_delay_ms > i32::MAX as u64 {
            return Err(("groups.group_initial_rebalance_delay_ms", "at most 2^31-1"));
        }
        Ok(())
    }

    pub fn offsets_retention_ms(&self) -> i64 {
        self.offsets_retention_minutes as i64 * 60_000
    }
}
