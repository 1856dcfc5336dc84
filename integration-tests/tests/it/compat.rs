//! Third-party Kafka clients against a real broker: Debian's kcat (librdkafka 2.0.2), and the
//! Python suites in `integration-tests/python/` run with confluent-kafka (a recent librdkafka)
//! and kafka-python. `make test` installs all of them (`scripts/bootstrap.sh`); a missing
//! client fails the test rather than skipping it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use streambus_integration_tests::{run_with_timeout, DevBroker};

/// Bound on one client script (each of its own waits is bounded too).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

fn run(broker: &DevBroker, mut command: Command, what: &str) {
    command.env("STREAMBUS_BOOTSTRAP", broker.bootstrap());
    let output = run_with_timeout(command, SCRIPT_TIMEOUT).expect(what);
    assert!(
        output.status.success(),
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}\n--- broker log (tail)\n{}",
        output.status,
        output.stdout,
        output.stderr,
        tail(&broker.log_text(), 60),
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn script(name: &str) -> Command {
    let mut command = Command::new(streambus_integration_tests::python().unwrap());
    command.arg(python_dir().join(name));
    command
}

#[test]
fn confluent_kafka_suite() {
    let broker = DevBroker::start(&[]).unwrap();
    run(
        &broker,
        script("test_confluent.py"),
        "confluent-kafka suite",
    );
}

#[test]
fn kafka_python_suite() {
    let broker = DevBroker::start(&[]).unwrap();
    run(
        &broker,
        script("test_kafka_python.py"),
        "kafka-python suite",
    );
}

#[test]
fn debian_kcat_metadata_produce_consume() {
    let broker = DevBroker::start(&[]).unwrap();
    let mut command = Command::new("bash");
    command.arg(python_dir().join("kcat.sh"));
    run(&broker, command, "kcat");
}

#[test]
fn broker_restart_loses_no_acknowledged_record() {
    let mut broker = DevBroker::start(&[]).unwrap();
    let acked = tempfile::NamedTempFile::new().unwrap();
    let acked_path = acked.path().to_str().unwrap().to_owned();
    let mut produce = script("durability.py");
    produce.args(["produce", "restart-topic", "5000", &acked_path]);
    run(&broker, produce, "produce before restart");
    broker.restart().unwrap();
    let mut verify = script("durability.py");
    verify.args(["verify", "restart-topic", &acked_path]);
    run(&broker, verify, "verify after restart");
}
