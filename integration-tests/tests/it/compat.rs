//! Third-party Kafka clients against a real broker: Debian's kcat (librdkafka 2.0.2), and the
//! Python suites in `integration-tests/python/` run with confluent-kafka (a recent librdkafka)
//! and kafka-python. `make test` installs all of them (`scripts/bootstrap.sh`); a missing
//! client fails the test rather than skipping it.

use std::process::Command;

use streambus_integration_tests::DevBroker;

use crate::scripts::{python_dir, python_script, run_script};

#[test]
fn confluent_kafka_suite() {
    let broker = DevBroker::start(&[]).unwrap();
    run_script(
        &broker,
        python_script("test_confluent.py"),
        "confluent-kafka suite",
    );
}

#[test]
fn kafka_python_suite() {
    let broker = DevBroker::start(&[]).unwrap();
    run_script(
        &broker,
        python_script("test_kafka_python.py"),
        "kafka-python suite",
    );
}

#[test]
fn debian_kcat_metadata_produce_consume() {
    let broker = DevBroker::start(&[]).unwrap();
    let mut command = Command::new("bash");
    command.arg(python_dir().join("kcat.sh"));
    run_script(&broker, command, "kcat");
}

#[test]
fn broker_restart_loses_no_acknowledged_record() {
    let mut broker = DevBroker::start(&[]).unwrap();
    let acked = tempfile::NamedTempFile::new().unwrap();
    let acked_path = acked.path().to_str().unwrap().to_owned();
    let mut produce = python_script("durability.py");
    produce.args(["produce", "restart-topic", "5000", &acked_path]);
    run_script(&broker, produce, "produce before restart");
    broker.restart().unwrap();
    let mut verify = python_script("durability.py");
    verify.args(["verify", "restart-topic", &acked_path]);
    run_script(&broker, verify, "verify after restart");
}
