//! The HTTP listener as operators use it: `/metrics` read with a real Prometheus text-format
//! parser (prometheus_client) after traffic from librdkafka, its label caps with 1,000 topics,
//! `/readyz` through a quorum loss and an unwritable log directory, and JSON logs carrying the
//! request context.

use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::FetchRequest;
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;
use streambus_integration_tests::cluster::FAST_FAILOVER;
use streambus_integration_tests::kafka::dev_args;
use streambus_integration_tests::KafkaConn;
use streambus_integration_tests::{http, run_with_timeout, BrokerProcess, Cluster, DevBroker};

use crate::scripts::{python_dir, SCRIPT_TIMEOUT};

/// How long a readiness change may take to show (a registration, a probe, a log-dir recovery).
const READINESS_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// Polls `path` on `addr` until it answers `status`; returns the body.
fn wait_for_status(addr: SocketAddr, path: &str, status: u16, context: &str) -> String {
    let deadline = Instant::now() + READINESS_WAIT;
    let mut last = String::from("no answer yet");
    // One request per pass, until the deadline.
    while Instant::now() < deadline {
        match http::get(addr, path) {
            Ok((code, body)) if code == status => return body,
            Ok((code, body)) => last = format!("{code} {body}"),
            Err(error) => last = format!("{error:#}"),
        }
        thread::sleep(POLL);
    }
    panic!("{context}: {path} never answered {status}; last: {last}");
}

/// Runs `metrics_scrape.py` against `broker` with `topics` topics named `<prefix>-<i>`; its
/// JSON report.
pub fn metrics_scrape(broker: &DevBroker, prefix: &str, topics: usize) -> Value {
    let mut command = Command::new(streambus_integration_tests::python().expect("python"));
    command
        .arg(python_dir().join("metrics_scrape.py"))
        .arg(broker.http_addr.to_string())
        .arg(prefix)
        .arg(topics.to_string())
        .env("STREAMBUS_BOOTSTRAP", broker.bootstrap());
    let output = run_with_timeout(command, SCRIPT_TIMEOUT).expect("metrics_scrape.py");
    assert!(
        output.status.success(),
        "metrics_scrape.py failed\n--- stdout\n{}\n--- stderr\n{}\n--- broker log (tail)\n{}",
        output.stdout,
        output.stderr,
        crate::scripts::tail(&broker.log_text(), 40)
    );
    serde_json::from_str(output.stdout.trim()).expect("one JSON object")
}

fn sample(values: &Value, key: &str) -> f64 {
    values.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// The sum of every sample of `name` in a scrape's reported values.
fn sum_of(values: &Value, name: &str) -> f64 {
    values
        .as_object()
        .expect("an object")
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{name}[")))
        .filter_map(|(_, v)| v.as_f64())
        .sum()
}

#[test]
fn metrics_parse_as_prometheus_text_move_with_traffic_and_stay_within_their_label_caps() {
    let broker = DevBroker::start(&[
        "--set",
        "metrics.topic_series_max=100",
        "--set",
        "metrics.partition_series_max=100",
    ])
    .expect("broker");
    let report = metrics_scrape(&broker, "mt", 1000);
    assert!(
        report["content_type"]
            .as_str()
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{}",
        report["content_type"]
    );
    let families = report["families"].as_object().expect("families");
    for (name, family) in families {
        if name.starts_with("streambus_") || name.starts_with("process_") {
            assert_eq!(family["help"], true, "{name} has no HELP text");
        }
        // With 1,000 topics and caps of 100, no family has more label sets than the traffic
        // families' 100 topics and `(other)`.
        assert!(
            family["series"].as_u64().expect("a count") <= 101,
            "{name}: {family}"
        );
    }
    let series = |name: &str| families[name]["series"].as_u64().expect("a count");
    // 1,000 topics with traffic: 100 of their own, the rest under `other`.
    for family in [
        "streambus_topic_bytes_in",
        "streambus_topic_records_in",
        "streambus_topic_bytes_out",
        "streambus_topic_records_out",
    ] {
        assert_eq!(series(family), 101, "{family}");
        assert_eq!(families[family]["type"], "counter", "{family}");
    }
    for family in [
        "streambus_partition_log_end_offset",
        "streambus_partition_high_watermark",
        "streambus_partition_last_stable_offset",
    ] {
        assert_eq!(series(family), 100, "{family}");
    }
    assert_eq!(
        families["streambus_kafka_request_duration_seconds"]["type"],
        "histogram"
    );
    assert_eq!(families["process_cpu_seconds"]["type"], "counter");
    for (name, kind) in [
        ("streambus_kafka_requests_waiting", "gauge"),
        ("streambus_isr_shrinks", "counter"),
        ("streambus_isr_expands", "counter"),
        ("streambus_raft_leader_changes", "counter"),
        ("streambus_build_info", "gauge"),
        ("streambus_kafka_connections", "gauge"),
    ] {
        assert_eq!(families[name]["type"], kind, "{name}");
    }

    let (before, after) = (&report["before"], &report["after"]);
    let produce = r#"streambus_kafka_requests_total[["api", "Produce"], ["version", "#;
    let produced = |values: &Value| -> f64 {
        values
            .as_object()
            .expect("an object")
            .iter()
            .filter(|(k, _)| k.starts_with(produce))
            .filter_map(|(_, v)| v.as_f64())
            .sum()
    };
    assert_eq!(produced(before), 0.0);
    assert!(produced(after) >= 1.0, "{after}");
    // Every Produce request's latency was recorded.
    assert_eq!(
        sample(
            after,
            r#"streambus_kafka_request_duration_seconds_count[["api", "Produce"]]"#
        ),
        produced(after),
        "{after}"
    );
    // At least: a batch librdkafka sent again after a timeout counts twice.
    assert!(sum_of(after, "streambus_topic_records_in_total") >= 1000.0);
    assert!(sum_of(after, "streambus_topic_records_out_total") >= 1.0);
    // The consumed topic's bytes, under its own label or `other` (which topics got the 100
    // labels depends on the order the producer's requests came in).
    assert!(
        sum_of(after, "streambus_topic_bytes_out_total") > 0.0,
        "bytes out: {after}"
    );
    assert!(
        sum_of(after, "streambus_log_appended_records_total")
            - sum_of(before, "streambus_log_appended_records_total")
            >= 1000.0
    );
    assert_eq!(
        sample(
            after,
            r#"streambus_kafka_request_errors_total[["api", "CreateTopics"], ["error", "TOPIC_ALREADY_EXISTS"]]"#
        ),
        1.0,
        "{after}"
    );
    assert!(sample(after, "streambus_partitions[]") >= 1000.0);
    assert_eq!(sample(after, "streambus_raft_is_controller[]"), 1.0);
    assert!(sample(after, "streambus_log_dir_free_bytes[]") > 0.0);
    assert!(sample(after, "process_resident_memory_bytes[]") > 1e6);
}

#[test]
fn metrics_can_be_turned_off_and_health_still_answers() {
    let broker = DevBroker::start(&["--set", "metrics.enabled=false"]).expect("broker");
    let (status, _) = http::get(broker.http_addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 404);
    wait_for_status(broker.http_addr, "/readyz", 200, "a dev broker");
    let (status, body) = http::get(broker.http_addr, "/livez").expect("GET /livez");
    assert_eq!((status, body.trim()), (200, r#"{"status":"ok"}"#));
    let (status, body) = http::get(broker.http_addr, "/nothing").expect("GET /nothing");
    assert_eq!(status, 404, "{body}");
}

/// A `/readyz` answer's JSON.
fn readiness(addr: SocketAddr) -> (u16, Value) {
    let (status, body) = http::get(addr, "/readyz").expect("GET /readyz");
    (status, serde_json::from_str(&body).expect("JSON"))
}

#[test]
fn readyz_answers_503_without_a_quorum_and_while_the_log_dir_takes_no_writes() {
    let mut cluster = Cluster::start(3, 3, FAST_FAILOVER).expect("cluster");
    let one = cluster.member(1).http_addr;
    wait_for_status(one, "/readyz", 200, "a started cluster");
    let (_, healthy) = readiness(one);
    assert_eq!(healthy["status"], "ready");

    // Broker 1 restarts alone: no quorum, so it cannot register.
    cluster.kill(2);
    cluster.kill(3);
    cluster.kill(1);
    cluster.launch(1).expect("launch 1");
    // Once started (its logs open), it is still not ready: unregistered, or (its old
    // registration replayed) not caught up with a new one.
    let deadline = Instant::now() + READINESS_WAIT;
    let refused = loop {
        let answer = http::get(one, "/readyz").ok();
        if let Some((status, body)) = answer {
            let json: Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(status, 503, "ready without a quorum: {json}");
            if json["checks"]["started"] == true {
                break json;
            }
        }
        assert!(Instant::now() < deadline, "broker 1 never started");
        thread::sleep(POLL);
    };
    assert_eq!(refused["status"], "not_ready", "{refused}");
    assert!(
        refused["checks"]["registered"] == false
            || refused["checks"]["metadata_caught_up"] == false,
        "{refused}"
    );
    // It stays so while no quorum can form.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(readiness(one).0, 503);
        thread::sleep(POLL);
    }
    let (status, _) = http::get(one, "/livez").expect("GET /livez");
    assert_eq!(status, 200, "alive, if not ready");
    cluster.launch(2).expect("launch 2");
    cluster.launch(3).expect("launch 3");
    wait_for_status(one, "/readyz", 200, "broker 1 with its quorum back");

    // Its log directory stops taking writes: the path now names a file.
    let logs = cluster.dir.path().join("broker-1").join("logs");
    let aside = cluster.dir.path().join("broker-1").join("logs.aside");
    std::fs::rename(&logs, &aside).expect("move the log directory aside");
    std::fs::write(&logs, b"not a directory").expect("a file in its place");
    let body = wait_for_status(one, "/readyz", 503, "an unwritable log directory");
    let refused: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(refused["checks"]["log_dir_writable"], false, "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("log directory")),
        "{refused}"
    );
    let body = wait_for_status(one, "/healthz", 503, "healthz follows readiness");
    assert!(body.contains(r#""live":true"#), "{body}");
    std::fs::remove_file(&logs).expect("remove the file");
    std::fs::rename(&aside, &logs).expect("put the log directory back");
    wait_for_status(one, "/readyz", 200, "the log directory back");
    wait_for_status(one, "/healthz", 200, "healthy again");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = dev_args(dir.path().to_str().expect("utf-8"));
    args.extend(["--log-format", "json"]);
    let mut broker = BrokerProcess::start(&args).expect("broker");
    let started = broker
        .wait_for_log("broker started", 0, Duration::from_secs(60))
        .expect("started");
    let line: Value = serde_json::from_str(&started).expect("a JSON line");
    let kafka: SocketAddr = line["fields"]["kafka_listener"]
        .as_str()
        .expect("the listener field")
        .parse()
        .expect("an address");
    // A fetch naming another cluster is refused, and the refusal logged inside its request.
    let mut conn = KafkaConn::connect(kafka).expect("connect");
    let request = FetchRequest::default()
        .with_cluster_id(Some(StrBytes::from_static_str("another-cluster")))
        .with_max_wait_ms(0);
    let response = conn.send(&request, 12).expect("fetch");
    assert_ne!(response.error_code, 0);
    let refused = broker
        .wait_for_log("refused a fetch", 0, Duration::from_secs(30))
        .expect("the refusal is logged");
    let event: Value = serde_json::from_str(&refused).expect("a JSON line");
    assert_eq!(event["level"], "WARN", "{event}");
    let request_span = event["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "request"))
        .unwrap_or_else(|| panic!("no request span: {event}"));
    assert_eq!(request_span["api"], "Fetch", "{event}");
    assert_eq!(request_span["version"], 12, "{event}");
    for field in ["connection", "peer", "correlation_id", "client_id"] {
        assert!(!request_span[field].is_null(), "{field} missing: {event}");
    }
    for text in broker.log_text().lines() {
        let parsed: Result<Value, _> = serde_json::from_str(text);
        assert!(
            parsed.is_ok_and(|v| v.is_object()),
            "not a JSON object: {text}"
        );
    }
}
