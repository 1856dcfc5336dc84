//! The `streambus` command line as an operator meets it: configuration printing, precedence,
//! errors.

use std::time::Duration;

use streambus_integration_tests::{run_streambus, run_with_timeout, streambus_command, Output};

fn run(args: &[&str]) -> Output {
    run_streambus(args).expect("streambus runs")
}

#[test]
fn dev_print_config_prints_the_defaults_as_toml() {
    let output = run(&["--dev", "--print-config"]);
    assert!(output.status.success(), "{output:?}");
    for line in [
        "node_id = 1",
        "data_dir = \"./data\"",
        "kafka_listener = \"127.0.0.1:9092\"",
        "raft_listener = \"127.0.0.1:9093\"",
        "admin_listener = \"127.0.0.1:9094\"",
        "http_listener = \"127.0.0.1:9644\"",
        "[log]",
        "segment_bytes = 1073741824",
    ] {
        assert!(
            output.stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            output.stdout
        );
    }
}

#[test]
fn data_dir_flag_shows_in_the_printed_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path().to_str().expect("utf-8 temp path");
    let output = run(&["--data-dir", dir, "--print-config"]);
    assert!(output.status.success(), "{output:?}");
    let expected = format!("data_dir = \"{dir}\"");
    assert!(
        output.stdout.lines().any(|l| l == expected),
        "missing {expected:?} in:\n{}",
        output.stdout
    );
}

#[test]
fn invalid_flag_value_fails_with_a_one_line_error() {
    let output = run(&["--node-id", "abc", "--print-config"]);
    assert!(!output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty(), "stdout: {}", output.stdout);
    let stderr = output.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(
        stderr.contains("`node_id`") && stderr.contains("--node-id"),
        "stderr: {stderr}"
    );
}

#[test]
fn environment_overrides_file_and_flag_overrides_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("streambus.toml");
    std::fs::write(&file, "node_id = 3\n[log]\nsegment_bytes = 1048576\n").expect("write");
    let file = file.to_str().expect("utf-8 temp path");

    let mut command = streambus_command().expect("binary");
    command
        .args([
            "--config",
            file,
            "--print-config",
            "--http-listener",
            "127.0.0.1:19644",
        ])
        .env("STREAMBUS_NODE_ID", "4")
        .env("STREAMBUS_HTTP_LISTENER", "127.0.0.1:29644");
    let output = run_with_timeout(command, Duration::from_secs(30)).expect("runs");
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert!(lines.contains(&"node_id = 4"), "{}", output.stdout);
    assert!(
        lines.contains(&"segment_bytes = 1048576"),
        "{}",
        output.stdout
    );
    assert!(
        lines.contains(&"http_listener = \"127.0.0.1:19644\""),
        "{}",
        output.stdout
    );
}

#[test]
fn printed_config_is_a_config_file_the_broker_accepts() {
    let printed = run(&[
        "--print-config",
        "--node-id",
        "7",
        "--set",
        "log.retention_ms=60000",
    ]);
    assert!(printed.status.success(), "{printed:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("printed.toml");
    std::fs::write(&file, &printed.stdout).expect("write");

    let reread = run(&["--config", file.to_str().expect("utf-8"), "--print-config"]);
    assert!(reread.status.success(), "{reread:?}");
    assert_eq!(reread.stdout, printed.stdout);
}

#[test]
fn unknown_config_file_key_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "nod_id = 2\n").expect("write");
    let output = run(&["--config", file.to_str().expect("utf-8"), "--print-config"]);
    assert!(!output.status.success(), "{output:?}");
    assert!(
        output.stderr.contains("unknown config key `nod_id`"),
        "stderr: {}",
        output.stderr
    );
}

/// `streambus validate-config` accepts the example configs and names the key (and the reason) of
/// every kind of bad file, exiting 1 without starting anything.
#[test]
fn validate_config_names_the_key_of_every_kind_of_bad_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = streambus_integration_tests::manifest_dir().join("../deploy/config");
    for n in 1..=3 {
        let path = examples.join(format!("broker-{n}.toml"));
        let output = run(&["validate-config", path.to_str().expect("utf-8")]);
        assert!(output.status.success(), "{}: {output:?}", path.display());
        assert!(output.stdout.trim_end().ends_with(": valid"), "{output:?}");
    }
    // (file contents, what the error must name)
    let cases: [(&str, &str); 14] = [
        ("node_id = \n", "not valid TOML: line 1"),
        ("nodeid = 1\n", "`nodeid`"),
        ("[log]\nsegmnt_bytes = 5\n", "`log.segmnt_bytes`"),
        ("node_id = \"one\"\n", "`node_id`"),
        ("kafka_listener = \"localhost\"\n", "`kafka_listener`"),
        (
            "kafka_listener = \"127.0.0.1:9000\"\nhttp_listener = \"127.0.0.1:9000\"\n",
            "`http_listener`",
        ),
        ("[log]\nsegment_bytes = 10\n", "`log.segment_bytes`"),
        (
            "[log]\ncleanup_policy = \"shred\"\n",
            "`log.cleanup_policy`",
        ),
        (
            "[metadata]\nquorum_voters = \"1@nowhere\"\n",
            "`metadata.quorum_voters`",
        ),
        (
            "[topics]\ncompression_type = \"brotli\"\n",
            "`topics.compression_type`",
        ),
        ("[kafka]\nmax_connections = 0\n", "`kafka.max_connections`"),
        (
            "[transactions]\ntransaction_version = 3\n",
            "`transactions.transaction_version`",
        ),
        (
            "[groups]\noffsets_topic_num_partitions = 0\n",
            "`groups.offsets_topic_num_partitions`",
        ),
        ("cluster_id = \"not a cluster id\"\n", "`cluster_id`"),
    ];
    for (i, (contents, named)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, contents).expect("write");
        let output = run(&["validate-config", path.to_str().expect("utf-8")]);
        assert_eq!(output.status.code(), Some(1), "{contents:?}: {output:?}");
        let error = output.stderr.trim_end();
        assert!(
            error.contains(": invalid: ") && error.contains(named),
            "{contents:?} should name {named}: {error}"
        );
        assert!(output.stdout.is_empty(), "{output:?}");
    }
    let missing = dir.path().join("missing.toml");
    let output = run(&["validate-config", missing.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        output.stderr.contains("cannot read config file") && output.stderr.contains("No such file"),
        "{output:?}"
    );
}
