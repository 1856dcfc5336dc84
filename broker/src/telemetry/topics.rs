//! Per-topic traffic: bytes and records produced to each topic, and bytes and records fetched
//! from it by consumers (followers' fetches count in [`REPLICATION_BYTES_OUT`], unlabelled).
//! The first `[metrics] topic_series_max` topics with traffic since the broker started get
//! their own series; later ones share `topic="(other)"` (no topic name has parentheses), so the
//! series count stays bounded however many topics exist. A deleted topic keeps its slot until
//! a restart. A producer's retried batch counts again (Kafka counts what it receives).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use bytes::Bytes;
use metrics::{counter, describe_counter, Counter, Unit};

/// Bytes of record batches produced, by `topic`.
pub const BYTES_IN: &str = "streambus_topic_bytes_in_total";
/// Records produced, by `topic`.
pub const RECORDS_IN: &str = "streambus_topic_records_in_total";
/// Bytes of records fetched by consumers, by `topic`.
pub const BYTES_OUT: &str = "streambus_topic_bytes_out_total";
/// Records fetched by consumers, by `topic` (whole batches: a consumer may skip the first
/// records of the first one).
pub const RECORDS_OUT: &str = "streambus_topic_records_out_total";
/// Bytes of records fetched by follower replicas.
pub const REPLICATION_BYTES_OUT: &str = "streambus_replication_bytes_out_total";

/// The label of topics past the cap.
const OTHER: &str = "(other)";

/// Topics with their own series (`[metrics] topic_series_max`, set once at start).
static SERIES_MAX: AtomicUsize = AtomicUsize::new(1000);

pub(super) fn set_series_max(max: usize) {
    SERIES_MAX.store(max, Ordering::Relaxed);
}

pub(super) fn describe() {
    describe_counter!(BYTES_IN, Unit::Bytes, "Bytes of record batches produced.");
    describe_counter!(RECORDS_IN, Unit::Count, "Records produced.");
    describe_counter!(
        BYTES_OUT,
        Unit::Bytes,
        "Bytes of records fetched by consumers."
    );
    describe_counter!(RECORDS_OUT, Unit::Count, "Records fetched by consumers.");
    describe_counter!(
        REPLICATION_BYTES_OUT,
        Unit::Bytes,
        "Bytes of records fetched by follower replicas."
    );
    counter!(REPLICATION_BYTES_OUT).absolute(0);
}

/// One topic's counters, registered once.
struct TopicCounters {
    bytes_in: Counter,
    records_in: Counter,
    bytes_out: Counter,
    records_out: Counter,
}

impl TopicCounters {
    fn new(label: &str) -> TopicCounters {
        TopicCounters {
            bytes_in: counter!(BYTES_IN, "topic" => label.to_owned()),
            records_in: counter!(RECORDS_IN, "topic" => label.to_owned()),
            bytes_out: counter!(BYTES_OUT, "topic" => label.to_owned()),
            records_out: counter!(RECORDS_OUT, "topic" => label.to_owned()),
        }
    }
}

type Topics = RwLock<HashMap<String, Arc<TopicCounters>>>;

fn counters(topic: &str) -> Arc<TopicCounters> {
    static TOPICS: OnceLock<Topics> = OnceLock::new();
    let topics = TOPICS.get_or_init(Topics::default);
    // Nearly always: a topic seen before, under the shared lock.
    if let Some(found) = topics
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(topic)
    {
        return found.clone();
    }
    let mut topics = topics.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = topics.get(topic) {
        return found.clone();
    }
    // Past the cap, `(other)` (which does not count against it) takes the rest.
    let own = topics.len() - usize::from(topics.contains_key(OTHER));
    if own >= SERIES_MAX.load(Ordering::Relaxed) {
        return topics
            .entry(OTHER.to_owned())
            .or_insert_with(|| Arc::new(TopicCounters::new(OTHER)))
            .clone();
    }
    let made = Arc::new(TopicCounters::new(topic));
    topics.insert(topic.to_owned(), made.clone());
    made
}

/// A batch of `records` records, `bytes` long, appended to `topic` by a producer.
pub fn produced(topic: &str, bytes: usize, records: i64) {
    if !super::enabled() {
        return;
    }
    let counters = counters(topic);
    counters.bytes_in.increment(bytes as u64);
    counters
        .records_in
        .increment(u64::try_from(records).unwrap_or(0));
}

/// `records` of `topic` (whole record batches) sent to a consumer.
pub fn fetched(topic: &str, records: &Bytes) {
    if !super::enabled() || records.is_empty() {
        return;
    }
    let counters = counters(topic);
    counters.bytes_out.increment(records.len() as u64);
    counters.records_out.increment(records_in_batches(records));
}

/// `bytes` of records sent to a follower replica.
pub fn replicated(bytes: usize) {
    if super::enabled() && bytes > 0 {
        counter!(REPLICATION_BYTES_OUT).increment(bytes as u64);
    }
}

/// The records counted in the headers of the whole v2 batches in `records` (a partial batch at
/// the end, as a fetch may return, is not counted).
fn records_in_batches(records: &[u8]) -> u64 {
    // Batch header: base offset (8), length (4, counting the bytes after it), ..., records
    // count at byte 57 (4).
    const LENGTH_AT: usize = 8;
    const COUNT_AT: usize = 57;
    let read_i32 = |at: usize| -> Option<i32> {
        let bytes = records.get(at..at.checked_add(4)?)?;
        Some(i32::from_be_bytes(bytes.try_into().ok()?))
    };
    let mut total = 0u64;
    let mut at = 0usize;
    // One batch per pass; each pass moves `at` forward or stops.
    while let (Some(length), Some(count)) = (read_i32(at + LENGTH_AT), read_i32(at + COUNT_AT)) {
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|l| (at + LENGTH_AT + 4).checked_add(l))
            .filter(|end| *end <= records.len())
        else {
            break;
        };
        total += u64::try_from(count).unwrap_or(0);
        at = end;
    }
    total
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_are_counted_from_whole_batch_headers() {
        let batch = |count: i32, extra: usize| {
            let mut b = vec![0u8; 61 + extra];
            let length = i32::try_from(b.len() - 12).expect("small");
            b[8..12].copy_from_slice(&length.to_be_bytes());
            b[57..61].copy_from_slice(&count.to_be_bytes());
            b
        };
        let mut records = batch(3, 10);
        records.extend(batch(5, 0));
        assert_eq!(super::records_in_batches(&records), 8);
        // A partial batch at the end is not counted.
        records.extend(&batch(7, 20)[..30]);
        assert_eq!(super::records_in_batches(&records), 8);
        assert_eq!(super::records_in_batches(&[]), 0);
        assert_eq!(super::records_in_batches(&[0xff; 70]), 0);
    }
}
