//! Group coordinator metrics, through the `metrics` facade (served once the broker installs its
//! Prometheus recorder). Labels are bounded: the protocol (`classic`, `consumer`) and Kafka's
//! group states; no per-group or per-partition series.

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
