//! Metrics of Kafka requests and connections: requests by API and version, their latency by
//! API, and the error codes their responses carry, by API and Kafka error name.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::kafka::errors::error_name;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use metrics::{counter, describe_counter, describe_histogram, histogram, Counter, Histogram, Unit};

/// Requests handled, by `api` and `version`.
pub const REQUESTS: &str = "streambus_kafka_requests_total";
/// Time from a decoded request to its response, by `api`.
pub const REQUEST_SECONDS: &str = "streambus_kafka_request_duration_seconds";
/// Error codes in responses (top-level and per partition, group or topic), by `api` and
/// `error` (Kafka's name, e.g. `NOT_LEADER_OR_FOLLOWER`).
pub const REQUEST_ERRORS: &str = "streambus_kafka_request_errors_total";
/// Client connections open now (written at scrape time from [`open_connections`]).
pub const CONNECTIONS: &str = "streambus_kafka_connections";
/// ISR shrinks this broker made as a leader (Kafka's `IsrShrinksPerSec`).
pub const ISR_SHRINKS: &str = "streambus_isr_shrinks_total";
/// ISR expansions this broker made as a leader (Kafka's `IsrExpandsPerSec`).
pub const ISR_EXPANDS: &str = "streambus_isr_expands_total";
/// Client connections accepted.
pub const CONNECTIONS_ACCEPTED: &str = "streambus_kafka_connections_accepted_total";
/// Client connections closed at once because `kafka.max_connections` were open.
pub const CONNECTIONS_REFUSED: &str = "streambus_kafka_connections_refused_total";

pub(super) fn describe() {
    describe_counter!(REQUESTS, Unit::Count, "Kafka requests handled.");
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time from a decoded Kafka request to its response."
    );
    describe_counter!(
        REQUEST_ERRORS,
        Unit::Count,
        "Error codes in Kafka responses, top-level and per partition, group or topic."
    );
    describe_counter!(
        CONNECTIONS_ACCEPTED,
        Unit::Count,
        "Kafka client connections accepted."
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "Kafka client connections closed at once: max_connections were open."
    );
    describe_counter!(
        ISR_SHRINKS,
        Unit::Count,
        "ISR shrinks committed for partitions led here."
    );
    describe_counter!(
        ISR_EXPANDS,
        Unit::Count,
        "ISR expansions committed for partitions led here."
    );
    // Present from the start, so that `increase()` sees the first event.
    for name in [
        CONNECTIONS_ACCEPTED,
        CONNECTIONS_REFUSED,
        ISR_SHRINKS,
        ISR_EXPANDS,
    ] {
        counter!(name).absolute(0);
    }
}

/// A leader's ISR change from `before` to `after` members was committed.
pub fn isr_changed(before: usize, after: usize) {
    if after < before {
        counter!(ISR_SHRINKS).increment(1);
    } else if after > before {
        counter!(ISR_EXPANDS).increment(1);
    }
}

/// Records one handled request; `response` is `None` for acks=0 produces and closed
/// connections. The request and latency handles of each API and version are registered once.
pub fn record(key: ApiKey, version: i16, elapsed: Duration, response: Option<&ResponseKind>) {
    if !super::enabled() {
        return;
    }
    let api = api_name(key);
    let index = usize::try_from(key as i16).unwrap_or(usize::MAX);
    let version_index = usize::try_from(version)
        .unwrap_or(usize::MAX)
        .min(VERSIONS - 1);
    let handles = handles();
    if let Some(slot) = handles.requests.get(index * VERSIONS + version_index) {
        slot.get_or_init(|| counter!(REQUESTS, "api" => api, "version" => version_label(version)))
            .increment(1);
    }
    if let Some(slot) = handles.durations.get(index) {
        slot.get_or_init(|| histogram!(REQUEST_SECONDS, "api" => api))
            .record(elapsed.as_secs_f64());
    }
    if let Some(response) = response {
        // Counted per distinct code: one increment each, however many partitions carry it.
        let mut codes: Vec<(i16, u64)> = Vec::new();
        error_codes(response, |code| {
            if code != 0 {
                match codes.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, n)) => *n += 1,
                    None => codes.push((code, 1)),
                }
            }
        });
        for (code, n) in codes {
            counter!(REQUEST_ERRORS, "api" => api, "error" => error_name(code)).increment(n);
        }
    }
}

/// Versions with their own label (0..=20; later ones share `other`).
const VERSIONS: usize = 22;

/// Registered request counters (by API key and version) and latency histograms (by API key).
struct Handles {
    requests: Vec<OnceLock<Counter>>,
    durations: Vec<OnceLock<Histogram>>,
}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| {
        let keys = usize::try_from(API_KEYS).unwrap_or(0);
        Handles {
            requests: (0..keys * VERSIONS).map(|_| OnceLock::new()).collect(),
            durations: (0..keys).map(|_| OnceLock::new()).collect(),
        }
    })
}

/// Connections open now.
static OPEN_CONNECTIONS: AtomicI64 = AtomicI64::new(0);

/// Client connections open now.
pub fn open_connections() -> i64 {
    OPEN_CONNECTIONS.load(Ordering::Relaxed)
}

/// Counts a connection as open until dropped (a panicking or aborted connection task too).
#[derive(Debug)]
#[must_use = "the connection counts as open until this is dropped"]
pub struct OpenConnection(());

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection was accepted: it counts as open until the guard is dropped.
pub fn connection_opened() -> OpenConnection {
    OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    if super::enabled() {
        counter!(CONNECTIONS_ACCEPTED).increment(1);
    }
    OpenConnection(())
}

/// What a request waits for in purgatory.
#[derive(Debug, Clone, Copy)]
pub enum Waiting {
    /// A long-poll fetch parked until data arrives or `max_wait_ms` passes.
    Fetch,
    /// An acks=all produce (or a coordinator's write) waiting for the ISR.
    Produce,
}

static WAITING: [AtomicI64; 2] = [AtomicI64::new(0), AtomicI64::new(0)];

/// Requests waiting now, as `(kind label, count)`.
pub fn waiting_now() -> [(&'static str, i64); 2] {
    [
        ("fetch", WAITING[0].load(Ordering::Relaxed)),
        ("produce", WAITING[1].load(Ordering::Relaxed)),
    ]
}

/// Counts a request as waiting until dropped.
#[derive(Debug)]
#[must_use = "the request counts as waiting until this is dropped"]
pub struct WaitingRequest(usize);

impl Drop for WaitingRequest {
    fn drop(&mut self) {
        WAITING[self.0].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request starts waiting (Kafka's purgatory).
pub fn waiting(kind: Waiting) -> WaitingRequest {
    let index = match kind {
        Waiting::Fetch => 0,
        Waiting::Produce => 1,
    };
    WAITING[index].fetch_add(1, Ordering::Relaxed);
    WaitingRequest(index)
}

/// A connection refused over `max_connections`.
pub fn connection_refused() {
    counter!(CONNECTIONS_REFUSED).increment(1);
}

/// API keys given their name by index (every key Kafka has defined is below this).
const API_KEYS: i16 = 200;

/// `ApiKey`'s name (`Produce`, `Fetch`, ...), built once per key so that recording does not
/// allocate.
fn api_name(key: ApiKey) -> &'static str {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..API_KEYS)
            .map(|k| match ApiKey::try_from(k) {
                Ok(known) => &*Box::leak(format!("{known:?}").into_boxed_str()),
                Err(_) => "Unknown",
            })
            .collect()
    });
    usize::try_from(key as i16)
        .ok()
        .and_then(|i| names.get(i))
        .copied()
        .unwrap_or("Unknown")
}

fn version_label(version: i16) -> &'static str {
    const LABELS: [&str; VERSIONS - 1] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
        "17", "18", "19", "20",
    ];
    usize::try_from(version)
        .ok()
        .and_then(|v| LABELS.get(v))
        .copied()
        .unwrap_or("other")
}

/// Calls `f` with every error code `response` carries: the top-level one and those of its
/// partitions, topics, groups or members. APIs not listed report none.
pub fn error_codes(response: &ResponseKind, mut f: impl FnMut(i16)) {
    match response {
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .for_each(|p| f(p.error_code)),
        ResponseKind::Fetch(r) => {
            f(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| f(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        ResponseKind::Metadata(r) => {
            for topic in &r.topics {
                f(topic.error_code);
                topic.partitions.iter().for_each(|p| f(p.error_code));
            }
        }
        ResponseKind::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        ResponseKind::TxnOffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            f(r.error_code);
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| f(p.error_code));
            for group in &r.groups {
                f(group.error_code);
                group
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .for_each(|p| f(p.error_code));
            }
        }
        ResponseKind::FindCoordinator(r) => {
            f(r.error_code);
            r.coordinators.iter().for_each(|c| f(c.error_code));
        }
        ResponseKind::JoinGroup(r) => f(r.error_code),
        ResponseKind::SyncGroup(r) => f(r.error_code),
        ResponseKind::Heartbeat(r) => f(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            f(r.error_code);
            r.members.iter().for_each(|m| f(m.error_code));
        }
        ResponseKind::ListGroups(r) => f(r.error_code),
        ResponseKind::DescribeGroups(r) => r.groups.iter().for_each(|g| f(g.error_code)),
        ResponseKind::DeleteGroups(r) => r.results.iter().for_each(|g| f(g.error_code)),
        ResponseKind::ConsumerGroupHeartbeat(r) => f(r.error_code),
        ResponseKind::ApiVersions(r) => f(r.error_code),
        ResponseKind::InitProducerId(r) => f(r.error_code),
        ResponseKind::AddOffsetsToTxn(r) => f(r.error_code),
        ResponseKind::EndTxn(r) => f(r.error_code),
        ResponseKind::AddPartitionsToTxn(r) => {
            f(r.error_code);
            r.results_by_transaction
                .iter()
                .flat_map(|t| &t.topic_results)
                .chain(&r.results_by_topic_v3_and_below)
                .flat_map(|t| &t.results_by_partition)
                .for_each(|p| f(p.partition_error_code));
        }
        ResponseKind::WriteTxnMarkers(r) => r
            .markers
            .iter()
            .flat_map(|m| &m.topics)
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| f(t.error_code)),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::ProduceResponse;

    use super::*;

    #[test]
    fn labels_are_kafka_names() {
        assert_eq!(api_name(ApiKey::Produce), "Produce");
        assert_eq!(
            api_name(ApiKey::ConsumerGroupHeartbeat),
            "ConsumerGroupHeartbeat"
        );
        assert_eq!(version_label(12), "12");
        assert_eq!(version_label(99), "other");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(56), "KAFKA_STORAGE_ERROR");
        assert_eq!(error_name(1000), "UNKNOWN");
    }

    #[test]
    fn every_partition_error_of_a_produce_is_counted() {
        let response =
            ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                .with_partition_responses(vec![
                    PartitionProduceResponse::default().with_error_code(6),
                    PartitionProduceResponse::default(),
                    PartitionProduceResponse::default().with_error_code(3),
                ])]);
        let mut codes = Vec::new();
        error_codes(&ResponseKind::Produce(response), |code| codes.push(code));
        assert_eq!(codes, vec![6, 0, 3]);
    }
}
