//! Consumer groups (Kafka's classic protocol: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit/OffsetFetch, the group admin APIs; and KIP-848's consumer protocol,
//! ConsumerGroupHeartbeat and ConsumerGroupDescribe) driven by third-party clients:
//! confluent-kafka (librdkafka), kafka-python, aiokafka and kafkajs, one script each (see
//! `integration-tests/python/README.md`). Each test starts its own dev broker.

use streambus_integration_tests::DevBroker;

use crate::scripts::{node_script, python_script, run_script, run_script_allowing_one_client_hang};

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

/// KIP-848 members heartbeat as often as the broker says (Kafka's 5 s by default, which makes a
/// rebalance take 5-10 s); 500 ms here.
const KIP_848_BROKER_ARGS: &[&str] = &[
    "--set",
    "groups.group_initial_rebalance_delay_ms=0",
    "--set",
    "groups.consumer_heartbeat_interval_ms=500",
];

#[test]
fn confluent_kafka_kip_848_groups() {
    let broker = DevBroker::start(KIP_848_BROKER_ARGS).unwrap();
    run_script(
        &broker,
        python_script("groups_confluent_848.py"),
        "confluent-kafka KIP-848 consumer groups",
    );
}

#[test]
fn kafka_python_groups() {
    let broker = DevBroker::start(BROKER_ARGS).unwrap();
    run_script_allowing_one_client_hang(
        &broker,
        || python_script("groups_kafka_python.py"),
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
