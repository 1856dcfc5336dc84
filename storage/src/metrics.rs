//! Storage metrics, recorded through the `metrics` facade (the broker installs the Prometheus
//! recorder). Names follow Prometheus conventions; no per-partition labels, so the series count
//! stays bounded however many partitions a broker holds.

use std::time::Duration;

/// Bytes of record batches appended (leader and follower).
pub const APPENDED_BYTES: &str = "streambus_log_appended_bytes_total";
/// Records appended (leader and follower).
pub const APPENDED_RECORDS: &str = "streambus_log_appended_records_total";
/// Producer retries answered from producer state without writing.
pub const DUPLICATE_BATCHES: &str = "streambus_log_duplicate_batches_total";
/// fsync rounds (each may cover many appends: group commit).
pub const FLUSHES: &str = "streambus_log_flushes_total";
/// Duration of fsync rounds.
pub const FLUSH_SECONDS: &str = "streambus_log_flush_seconds";
/// Segments rolled.
pub const ROLLS: &str = "streambus_log_rolls_total";
/// Bytes cut from segment tails by crash recovery.
pub const RECOVERY_TRUNCATED_BYTES: &str = "streambus_log_recovery_truncated_bytes_total";
/// Reads that found a corrupt batch.
pub const CORRUPT_READS: &str = "streambus_log_corrupt_reads_total";
/// Segments deleted by retention or DeleteRecords.
pub const SEGMENTS_DELETED: &str = "streambus_log_segments_deleted_total";
/// Records removed by compaction.
pub const COMPACTED_RECORDS: &str = "streambus_log_compacted_records_removed_total";

/// Registers help texts and units with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        APPENDED_BYTES,
        Unit::Bytes,
        "Bytes of record batches appended."
    );
    describe_counter!(APPENDED_RECORDS, Unit::Count, "Records appended.");
    describe_counter!(
        DUPLICATE_BATCHES,
        Unit::Count,
        "Producer retries answered with their original offsets."
    );
    describe_counter!(
        FLUSHES,
        Unit::Count,
        "fsync rounds; one may cover many appends."
    );
    describe_histogram!(FLUSH_SECONDS, Unit::Seconds, "Duration of fsync rounds.");
    describe_counter!(ROLLS, Unit::Count, "Segments rolled.");
    describe_counter!(
        RECOVERY_TRUNCATED_BYTES,
        Unit::Bytes,
        "Bytes cut by crash recovery."
    );
    describe_counter!(
        CORRUPT_READS,
        Unit::Count,
        "Reads that found a corrupt batch."
    );
    describe_counter!(
        SEGMENTS_DELETED,
        Unit::Count,
        "Segments deleted by retention or DeleteRecords."
    );
    describe_counter!(
        COMPACTED_RECORDS,
        Unit::Count,
        "Records removed by compaction."
    );
}

pub(crate) fn appended(bytes: usize, records: i32) {
    metrics::counter!(APPENDED_BYTES).increment(bytes as u64);
    metrics::counter!(APPENDED_RECORDS).increment(u64::try_from(records).unwrap_or(0));
}

pub(crate) fn duplicate() {
    metrics::counter!(DUPLICATE_BATCHES).increment(1);
}

pub(crate) fn flushed(elapsed: Duration) {
    metrics::counter!(FLUSHES).increment(1);
    metrics::histogram!(FLUSH_SECONDS).record(elapsed.as_secs_f64());
}

pub(crate) fn rolled() {
    metrics::counter!(ROLLS).increment(1);
}

pub(crate) fn recovery_truncated(bytes: u64) {
    metrics::counter!(RECOVERY_TRUNCATED_BYTES).increment(bytes);
}

pub(crate) fn corrupt_read() {
    metrics::counter!(CORRUPT_READS).increment(1);
}

pub(crate) fn segments_deleted(count: usize) {
    metrics::counter!(SEGMENTS_DELETED).increment(count as u64);
}

pub(crate) fn compacted(records_removed: u64) {
    metrics::counter!(COMPACTED_RECORDS).increment(records_removed);
}
