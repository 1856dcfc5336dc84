//! Group coordinator metrics, through the `metrics` facade (served once the broker installs its
//! Prometheus recorder). Labels are bounded: the protocol (`classic`, `consumer`) and Kafka's
//! group states; the only per-group series, consumer lag, is capped per broker
//! (`groups.consumer_lag_max_series`).

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};

/// Rebalances completed: a classic group's new generation, a consumer group's new target
/// assignment.
pub const REBALANCES: &str = "streambus_group_rebalances_total";
/// Partition offsets committed (each partition of an OffsetCommit counts once).
pub const OFFSET_COMMITS: &str = "streambus_group_offset_commits_total";
/// Groups this broker coordinates, by protocol and state.
pub const GROUPS: &str = "streambus_groups";
/// Committed offsets this broker holds.
pub const COMMITTED_OFFSETS: &str = "streambus_group_committed_offsets";
/// Records between a group's committed offset and its partition's high watermark, by group,
/// topic and partition.
pub const CONSUMER_LAG: &str = "streambus_group_consumer_lag_records";
/// (group, partition) lag series left out by the cap in the last pass.
pub const CONSUMER_LAG_DROPPED: &str = "streambus_group_consumer_lag_series_dropped";

/// Registers help texts and units with the installed recorder.
pub fn describe() {
    describe_counter!(REBALANCES, Unit::Count, "Group rebalances completed.");
    describe_counter!(OFFSET_COMMITS, Unit::Count, "Partition offsets committed.");
    describe_gauge!(
        GROUPS,
        Unit::Count,
        "Groups coordinated here, by protocol and state."
    );
    describe_gauge!(
        COMMITTED_OFFSETS,
        Unit::Count,
        "Committed offsets held here."
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Records between a group's committed offset and the partition's high watermark."
    );
    describe_gauge!(
        CONSUMER_LAG_DROPPED,
        Unit::Count,
        "Consumer lag series left out by groups.consumer_lag_max_series."
    );
}

/// Publishes the lag of each `(group, topic, partition, committed offset)` whose high
/// watermark is known (a committed offset past it, as after a truncation, is no lag).
pub fn publish_lag(
    samples: &[super::lag::CommittedSample],
    high_watermarks: &std::collections::BTreeMap<(String, i32), i64>,
    dropped: usize,
) {
    for (group, topic, partition, offset) in samples {
        let Some(end) = high_watermarks.get(&(topic.clone(), *partition)) else {
            continue;
        };
        let lag = (end - offset).max(0);
        gauge!(
            CONSUMER_LAG,
            "group" => group.clone(),
            "topic" => topic.clone(),
            "partition" => partition.to_string()
        )
        .set(lag as f64);
    }
    gauge!(CONSUMER_LAG_DROPPED).set(dropped as f64);
}

pub fn rebalanced(protocol: &'static str) {
    counter!(REBALANCES, "protocol" => protocol).increment(1);
}

pub fn committed(partitions: usize) {
    counter!(OFFSET_COMMITS).increment(partitions as u64);
}

/// Every `(protocol, state)` label pair: a state with no group is published as 0 rather than
/// left at its last count.
const STATES: [(&str, &str); 9] = [
    ("classic", "Empty"),
    ("classic", "PreparingRebalance"),
    ("classic", "CompletingRebalance"),
    ("classic", "Stable"),
    ("classic", "Dead"),
    ("consumer", "Empty"),
    ("consumer", "Assigning"),
    ("consumer", "Reconciling"),
    ("consumer", "Stable"),
];

/// Publishes the group counts of every partition this broker coordinates.
pub fn publish(
    counts: &std::collections::BTreeMap<(&'static str, &'static str), usize>,
    offsets: usize,
) {
    for (protocol, state) in STATES {
        let count = counts.get(&(protocol, state)).copied().unwrap_or(0);
        gauge!(GROUPS, "protocol" => protocol, "state" => state).set(count as f64);
    }
    gauge!(COMMITTED_OFFSETS).set(offsets as f64);
}
