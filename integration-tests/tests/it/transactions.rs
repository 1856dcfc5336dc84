//! Transactions driven by third-party clients (see `integration-tests/python/README.md`):
//! confluent-kafka's transactional producer and read_committed consumer against a dev broker,
//! and the transaction coordinator's answers to bad requests.

use streambus_integration_tests::DevBroker;

use crate::scripts::{python_script, run_script};

#[test]
fn confluent_kafka_transactions() {
    let broker = DevBroker::start(&[]).unwrap();
    run_script(
        &broker,
        python_script("txn_confluent.py"),
        "confluent-kafka transactions",
    );
}
