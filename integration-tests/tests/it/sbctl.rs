//! `sbctl` against a real broker: every subcommand's happy path and its error paths (exit code
//! and message), and records crossing between `sbctl` and confluent-kafka byte-exact.

use std::time::Duration;

use streambus_integration_tests::{run_with_timeout, sbctl_command, DevBroker, Output};

const SBCTL_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) fn sbctl(broker: &DevBroker, args: &[&str]) -> Output {
    let mut command = sbctl_command(&broker.bootstrap()).expect("sbctl binary");
    command.args(args);
    run_with_timeout(command, SBCTL_TIMEOUT).expect("sbctl finishes")
}

/// Runs `sbctl` and asserts success; returns stdout.
pub(crate) fn ok(broker: &DevBroker, args: &[&str]) -> String {
    let output = sbctl(broker, args);
    assert!(
        output.status.success(),
        "sbctl {args:?} failed ({}):\n{}\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
    output.stdout
}

/// Runs `sbctl`, asserts exit code 1 and a one-line error containing `needle`.
pub(crate) fn fails(broker: &DevBroker, args: &[&str], needle: &str) {
    let output = sbctl(broker, args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "sbctl {args:?}: {}\n{}",
        output.stdout,
        output.stderr
    );
    let error: Vec<&str> = output
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(error.len(), 1, "sbctl {args:?}: {}", output.stderr);
    assert!(
        error[0].contains(needle),
        "sbctl {args:?}: {:?} lacks {needle:?}",
        error[0]
    );
}

pub(crate) fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `sbctl --output json topic describe <topic>`, parsed.
fn describe_json(broker: &DevBroker, topic: &str) -> Vec<serde_json::Value> {
    json_lines(&ok(
        broker,
        &["--output", "json", "topic", "describe", topic],
    ))
}

#[test]
fn topic_commands_and_their_errors() {
    let broker = DevBroker::start(&[]).unwrap();
    let created = ok(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
    );
    assert!(created.contains("Created topic orders"), "{created}");
    fails(
        &broker,
        &["topic", "create", "orders", "--partitions", "3"],
        "TOPIC_ALREADY_EXISTS",
    );
    ok(&broker, &["topic", "create", "orders", "--if-not-exists"]);
    let valid = ok(
        &broker,
        &[
            "topic",
            "create",
            "dry",
            "--partitions",
            "2",
            "--validate-only",
        ],
    );
    assert!(valid.contains("is valid"), "{valid}");
    fails(
        &broker,
        &["topic", "create", "bad/name", "--partitions", "1"],
        "INVALID_TOPIC_EXCEPTION",
    );

    let list = ok(&broker, &["topic", "list"]);
    assert_eq!(list.lines().collect::<Vec<_>>(), ["orders"], "{list}");
    let listed = json_lines(&ok(&broker, &["--output", "json", "topic", "list"]));
    assert_eq!(listed[0][0]["name"], "orders");
    assert_eq!(listed[0][0]["partitions"], 3);

    let described = ok(&broker, &["topic", "describe", "orders"]);
    assert!(described.contains("PartitionCount: 3"), "{described}");
    assert!(described.contains("retention.ms=3600000"), "{described}");
    fails(&broker, &["topic", "describe", "missing"], "unknown topic");

    ok(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=7200000",
            "--set",
            "cleanup.policy=compact",
        ],
    );
    let json = describe_json(&broker, "orders");
    assert_eq!(json[0][0]["configs"]["retention.ms"], "7200000");
    assert_eq!(json[0][0]["configs"]["cleanup.policy"], "compact");
    ok(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--delete",
            "cleanup.policy",
        ],
    );
    let json = describe_json(&broker, "orders");
    assert!(
        json[0][0]["configs"].get("cleanup.policy").is_none(),
        "{json:?}"
    );
    fails(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=soon",
        ],
        "INVALID_CONFIG",
    );
    fails(
        &broker,
        &["topic", "alter-config", "orders"],
        "nothing to change",
    );

    ok(
        &broker,
        &["topic", "add-partitions", "orders", "--total", "5"],
    );
    let json = describe_json(&broker, "orders");
    assert_eq!(json[0][0]["partitions"].as_array().unwrap().len(), 5);
    fails(
        &broker,
        &["topic", "add-partitions", "orders", "--total", "2"],
        "INVALID_PARTITIONS",
    );

    ok(&broker, &["topic", "delete", "orders"]);
    fails(&broker, &["topic", "delete", "orders"], "orders");
    fails(
        &broker,
        &["topic", "delete", "__consumer_offsets"],
        "internal topic",
    );
    let list = ok(&broker, &["topic", "list"]);
    assert!(list.trim().is_empty(), "{list}");
}

#[test]
fn produce_and_consume_with_keys_headers_and_formats() {
    let broker = DevBroker::start(&[]).unwrap();
    ok(&broker, &["topic", "create", "lines", "--partitions", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let lines: Vec<String> = (0..50).map(|i| format!("k{i}:value {i}")).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let produced = json_lines(&ok(
        &broker,
        &[
            "--output",
            "json",
            "produce",
            "lines",
            "--file",
            input.to_str().unwrap(),
            "--key-separator",
            ":",
            "--header",
            "source=sbctl",
            "--compression",
            "zstd",
        ],
    ));
    assert_eq!(produced[0]["produced"], 50);

    let consumed = json_lines(&ok(
        &broker,
        &[
            "--output",
            "json",
            "consume",
            "lines",
            "--from-beginning",
            "--max-messages",
            "50",
        ],
    ));
    assert_eq!(consumed.len(), 50);
    for record in &consumed {
        let key = record["key"].as_str().unwrap();
        let i: usize = key[1..].parse().unwrap();
        assert_eq!(record["value"], format!("value {i}"));
        assert_eq!(record["headers"][0]["key"], "source");
        assert_eq!(record["headers"][0]["value"], "sbctl");
        // Same key, same partition: the Java client's murmur2 mapping.
        let expected = streambus_client::partitioner::partition_for_key(key.as_bytes(), 2);
        assert_eq!(record["partition"], expected, "{record}");
    }

    // One partition from an offset, with a template.
    let partition0: Vec<&serde_json::Value> =
        consumed.iter().filter(|r| r["partition"] == 0).collect();
    assert!(partition0.len() >= 3, "keys spread over both partitions");
    let formatted = ok(
        &broker,
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--offset",
            "1",
            "--max-messages",
            "2",
            "--format",
            "%p|%o|%k|%v|%h",
        ],
    );
    let expected: Vec<String> = partition0[1..3]
        .iter()
        .map(|r| {
            format!(
                "0|{}|{}|{}|source=sbctl",
                r["offset"],
                r["key"].as_str().unwrap(),
                r["value"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(formatted.lines().collect::<Vec<_>>(), expected);

    // An idle timeout ends a consumer that reached the end.
    let output = sbctl(
        &broker,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--idle-timeout-ms",
            "1500",
        ],
    );
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.stdout.lines().count(), 50);

    // Error paths.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "k1:v1\nno separator here\n").unwrap();
    fails(
        &broker,
        &[
            "produce",
            "lines",
            "--file",
            bad.to_str().unwrap(),
            "--key-separator",
            ":",
        ],
        "line 2: no key separator",
    );
    // The line before the bad one was still delivered.
    let after = json_lines(&ok(
        &broker,
        &[
            "--output",
            "json",
            "consume",
            "lines",
            "--from-beginning",
            "--max-messages",
            "51",
        ],
    ));
    assert_eq!(after.len(), 51);
    assert!(
        after.iter().any(|r| r["key"] == "k1" && r["value"] == "v1"),
        "the record before the bad line is missing"
    );
    fails(
        &broker,
        &["produce", "missing", "--file", input.to_str().unwrap()],
        "unknown topic",
    );
    fails(
        &broker,
        &["produce", "lines", "--file", "/nonexistent/file"],
        "cannot open",
    );
    fails(
        &broker,
        &[
            "produce",
            "lines",
            "--file",
            input.to_str().unwrap(),
            "--acks",
            "2",
        ],
        "acks must be 0, 1 or all",
    );
    fails(
        &broker,
        &["consume", "missing", "--max-messages", "1"],
        "unknown topic",
    );
    fails(
        &broker,
        &[
            "consume",
            "lines",
            "--partition",
            "7",
            "--max-messages",
            "1",
        ],
        "unknown topic or partition: lines-7",
    );
    fails(
        &broker,
        &["consume", "lines", "--offset", "3", "--max-messages", "1"],
        "needs --partition",
    );
}

#[test]
fn cluster_describe_and_perf() {
    let broker = DevBroker::start(&[]).unwrap();
    ok(&broker, &["topic", "create", "perf", "--partitions", "2"]);
    let text = ok(&broker, &["cluster", "describe"]);
    assert!(text.contains("Controller: 1"), "{text}");
    assert!(text.contains(&broker.bootstrap()), "{text}");
    assert!(text.contains("Under-replicated partitions: 0"), "{text}");
    let json = json_lines(&ok(&broker, &["--output", "json", "cluster", "describe"]));
    assert_eq!(json[0]["brokers"].as_array().unwrap().len(), 1);
    assert_eq!(json[0]["partitions"].as_array().unwrap().len(), 2);

    let produced = json_lines(&ok(
        &broker,
        &[
            "perf",
            "produce",
            "--topic",
            "perf",
            "--num-records",
            "5000",
            "--record-size",
            "200",
            "--acks",
            "all",
            "--json",
        ],
    ));
    let summary = &produced[0];
    assert_eq!(summary["records"], 5000);
    assert_eq!(summary["errors"], 0);
    for key in ["p50", "p95", "p99", "p999", "max"] {
        assert!(
            summary["latency_ms"][key].as_f64().unwrap() > 0.0,
            "{summary}"
        );
    }
    let text = ok(
        &broker,
        &[
            "perf",
            "produce",
            "--topic",
            "perf-new",
            "--partitions",
            "3",
            "--num-records",
            "1000",
            "--compression",
            "lz4",
        ],
    );
    assert!(text.contains("1000 records sent"), "{text}");
    // In transactions (a commit every 50 ms): everything committed, so read_committed sees it.
    let transactional = json_lines(&ok(
        &broker,
        &[
            "perf",
            "produce",
            "--topic",
            "perf-txn",
            "--partitions",
            "2",
            "--num-records",
            "3000",
            "--record-size",
            "100",
            "--transactional-id",
            "perf-txn",
            "--transaction-duration-ms",
            "50",
            "--json",
        ],
    ));
    assert_eq!(transactional[0]["records"], 3000, "{transactional:?}");
    assert!(transactional[0]["transactions"].as_u64().unwrap() >= 1);
    let committed = crate::sdk_transactions::read_partitions_with_librdkafka(
        &broker,
        "perf-txn",
        "read_committed",
    );
    assert_eq!(committed.values().map(Vec::len).sum::<usize>(), 3000);
    let consumed = json_lines(&ok(
        &broker,
        &["--output", "json", "perf", "consume", "--topic", "perf"],
    ));
    assert_eq!(consumed[0]["records"], 5000);
    assert_eq!(consumed[0]["bytes"], 5000 * 200);
    fails(
        &broker,
        &["perf", "produce", "--topic", "nope", "--num-records", "1"],
        "give --partitions",
    );
    fails(
        &broker,
        &["perf", "consume", "--topic", "nope"],
        "unknown topic",
    );
    fails(
        &broker,
        &["perf", "produce", "--topic", "perf", "--record-size", "0"],
        "--record-size must be > 0",
    );
}

fn cross_client(broker: &DevBroker, args: &[&str]) -> Output {
    let script = streambus_integration_tests::manifest_dir().join("python/cross_client.py");
    let mut command = std::process::Command::new(streambus_integration_tests::python().unwrap());
    command
        .arg(script)
        .args(args)
        .env("STREAMBUS_BOOTSTRAP", broker.bootstrap());
    let output = run_with_timeout(command, SBCTL_TIMEOUT).unwrap();
    assert!(
        output.status.success(),
        "cross_client.py {args:?}: {}\n{}",
        output.stdout,
        output.stderr
    );
    output
}

/// Keys, values and header values with tabs, quotes and non-ASCII text.
fn tricky(i: usize) -> (String, String) {
    (
        format!("key \"{i}\" ключ"),
        format!("value {i}: naïve café — {}", "x".repeat(i % 7)),
    )
}

#[test]
fn sbctl_and_confluent_kafka_read_each_others_records_byte_exact() {
    let broker = DevBroker::start(&[]).unwrap();
    ok(
        &broker,
        &["topic", "create", "from-sbctl", "--partitions", "1"],
    );
    ok(
        &broker,
        &["topic", "create", "from-ck", "--partitions", "1"],
    );
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 200;

    // sbctl -> confluent-kafka.
    let input = dir.path().join("sbctl.txt");
    let lines: Vec<String> = (0..N)
        .map(|i| {
            let (k, v) = tricky(i);
            format!("{k}\t{v}")
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    ok(
        &broker,
        &[
            "produce",
            "from-sbctl",
            "--file",
            input.to_str().unwrap(),
            "--key-separator",
            "\t",
            "--header",
            "origin=sbctl ✓",
            "--compression",
            "gzip",
        ],
    );
    let read = cross_client(&broker, &["consume", "from-sbctl", "0", &N.to_string()]);
    let records = json_lines(&read.stdout);
    assert_eq!(records.len(), N);
    for (i, record) in records.iter().enumerate() {
        let (k, v) = tricky(i);
        assert_eq!(record["offset"], i);
        assert_eq!(record["key"], k.as_str());
        assert_eq!(record["value"], v.as_str());
        assert_eq!(
            record["headers"],
            serde_json::json!([["origin", "sbctl ✓"]])
        );
    }

    // confluent-kafka -> sbctl.
    let input = dir.path().join("ck.jsonl");
    let lines: Vec<String> = (0..N)
        .map(|i| {
            let (k, v) = tricky(i);
            serde_json::json!({"key": k, "value": v, "headers": [["h", format!("ü{i}")]]})
                .to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    cross_client(&broker, &["produce", "from-ck", input.to_str().unwrap()]);
    let read = json_lines(&ok(
        &broker,
        &[
            "--output",
            "json",
            "consume",
            "from-ck",
            "--from-beginning",
            "--max-messages",
            &N.to_string(),
        ],
    ));
    assert_eq!(read.len(), N);
    for (i, record) in read.iter().enumerate() {
        let (k, v) = tricky(i);
        assert_eq!(record["offset"], i);
        assert_eq!(record["key"], k.as_str());
        assert_eq!(record["value"], v.as_str());
        assert_eq!(
            record["headers"],
            serde_json::json!([{"key": "h", "value": format!("ü{i}")}])
        );
    }
    // The raw template output is byte-exact too (no JSON escaping in between).
    let raw = ok(
        &broker,
        &[
            "consume",
            "from-ck",
            "--from-beginning",
            "--max-messages",
            "3",
            "--format",
            "%k\\t%v",
        ],
    );
    let expected: Vec<String> = (0..3)
        .map(|i| {
            let (k, v) = tricky(i);
            format!("{k}\t{v}")
        })
        .collect();
    assert_eq!(raw.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn a_closed_output_pipe_ends_sbctl_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let broker = DevBroker::start(&[]).unwrap();
    // 4 MB of output: far more than a pipe holds, so sbctl is still writing when it closes.
    ok(
        &broker,
        &[
            "perf",
            "produce",
            "--topic",
            "big",
            "--partitions",
            "1",
            "--num-records",
            "4000",
            "--record-size",
            "1000",
        ],
    );
    let mut command = sbctl_command(&broker.bootstrap()).unwrap();
    command
        .args([
            "consume",
            "big",
            "--from-beginning",
            "--max-messages",
            "4000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first.trim_end().len(), 1000);
    drop(stdout);
    let deadline = std::time::Instant::now() + SBCTL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "sbctl did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
