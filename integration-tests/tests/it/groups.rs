//! Consumer groups (Kafka's classic protocol: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit/OffsetFetch, the group admin APIs) driven by third-party clients:
//! confluent-kafka (librdkafka), kafka-python, aiokafka and kafkajs, one script each (see
//! `integration-tests/python/README.md`). Each test starts its own dev broker.

use streambus_integration_tests::DevBroker;

use crate::scripts::{node_script, python_script, run_script};

/// Every group test's broker runs without the initial rebalance delay (Kafka's
/// `group.initial.rebalance.delay.ms`, 3 s by default) so that a new group's first join
/// completes at once; the scripts' waits allow for the delay, only slower.
const BROKER_ARGS: &[&str] = &["--set", "groups.group_initial_rebalance_delay_ms=0"];

#[test]
fn confluent_kafka_groups() {
    let broker = DevBroker::start(BROKER_ARGS).unwrap();
    run_script(
        &broker,
        python_script("groups_confluent.py"),
        "confluent-kafka consumer groups",
    );
}

#[test]
fn kafka_python_groups() {
    let broker = DevBroker::start(BROKER_ARGS).unwrap();
    run_script(
        &broker,
        python_script("groups_kafka_python.py"),
        "kafka-python consumer groups",
    );
}

#[test]
fn aiokafka_groups() {
    let broker = DevBroker::start(BROKER_ARGS).unwrap();
    run_script(
        &broker,
        python_script("groups_aiokafka.py"),
        "aiokafka consumer groups",
    );
}

#[test]
fn kafkajs_groups() {
    let broker = DevBroker::start(BROKER_ARGS).unwrap();
    run_script(&broker, node_script("groups.js"), "kafkajs consumer groups");
}
