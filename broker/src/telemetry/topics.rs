//! Per-topic traffic: bytes and records produced to each topic, and bytes fetched from it by
//! consumers (followers' fetches count in [`REPLICATION_BYTES_OUT`], unlabelled). The first
//! `[metrics] topic_series_max` topics seen since the broker started get their own series;
//! later ones share `topic="other"`, so the series count stays bounded however many topics
//! exist (a deleted topic keeps its slot until a restart).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use metrics::{counter, describe_counter, Counter, Unit};

/// Bytes of record batches produced, by `topic`.
pub const BYTES_IN: &str = "streambus_topic_bytes_in_total";
/// Records produced, by `topic`.
pub const RECORDS_IN: &str = "streambus_topic_records_in_total";
/// Bytes of records fetched by consumers, by `topic`.
pub const BYTES_OUT: &str = "streambus_topic_bytes_out_total";
/// Bytes of records fetched by follower replicas.
pub const REPLICATION_BYTES_OUT: &str = "streambus_replication_bytes_out_total";

/// The label of topics past the cap.
const OTHER: &str = "other";

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
    describe_counter!(
        REPLICATION_BYTES_OUT,
        Unit::Bytes,
        "Bytes of records fetched by follower replicas."
    );
}

/// One topic's counters, registered once.
#[derive(Clone)]
struct TopicCounters {
    bytes_in: Counter,
    records_in: Counter,
    bytes_out: Counter,
}

impl TopicCounters {
    fn new(label: String) -> TopicCounters {
        TopicCounters {
            bytes_in: counter!(BYTES_IN, "topic" => label.clone()),
            records_in: counter!(RECORDS_IN, "topic" => label.clone()),
            bytes_out: counter!(BYTES_OUT, "topic" => label),
        }
    }
}

fn counters(topic: &str) -> TopicCounters {
    static TOPICS: OnceLock<Mutex<HashMap<String, TopicCounters>>> = OnceLock::new();
    let mut topics = TOPICS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = topics.get(topic) {
        return found.clone();
    }
    // Past the cap, `other` (which does not count against it) takes the rest.
    let own = topics.len() - usize::from(topics.contains_key(OTHER));
    if own >= SERIES_MAX.load(Ordering::Relaxed) {
        return topics
            .entry(OTHER.to_owned())
            .or_insert_with(|| TopicCounters::new(OTHER.to_owned()))
            .clone();
    }
    let made = TopicCounters::new(topic.to_owned());
    topics.insert(topic.to_owned(), made.clone());
    made
}

/// A batch of `records` records, `bytes` long, appended to `topic` by a producer.
pub fn produced(topic: &str, bytes: usize, records: i64) {
    let counters = counters(topic);
    counters.bytes_in.increment(bytes as u64);
    counters
        .records_in
        .increment(u64::try_from(records).unwrap_or(0));
}

/// `bytes` of records of `topic` sent to a consumer (`follower` false) or a follower replica.
pub fn fetched(topic: &str, bytes: usize, follower: bool) {
    if bytes == 0 {
        return;
    }
    if follower {
        counter!(REPLICATION_BYTES_OUT).increment(bytes as u64);
    } else {
        counters(topic).bytes_out.increment(bytes as u64);
    }
}
