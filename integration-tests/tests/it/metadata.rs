//! The broker process as a metadata quorum member: `--dev` bootstraps a single-voter cluster and
//! registers the broker; SIGTERM stops it cleanly; a restart recovers the quorum from disk and
//! registers a new incarnation.

use std::time::Duration;

use streambus_integration_tests::kafka::dev_args;
use streambus_integration_tests::BrokerProcess;

const STARTUP: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);

/// The `broker_epoch=N` field of a registration log line.
fn broker_epoch(line: &str) -> i64 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("broker_epoch="))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no broker_epoch in {line:?}"))
}

#[test]
fn dev_broker_registers_stops_on_sigterm_and_recovers_its_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();

    let mut broker = BrokerProcess::start(&dev_args(data_dir)).expect("starts");
    let line = broker
        .wait_for_log("broker registered", 0, STARTUP)
        .expect("registers");
    let first_epoch = broker_epoch(&line);
    let status = broker.terminate(STOP).expect("stops");
    assert!(status.success(), "exit status {status}");
    assert!(
        dir.path().join("raft").is_dir(),
        "no metadata store on disk"
    );

    let mut broker = BrokerProcess::start(&dev_args(data_dir)).expect("restarts");
    let line = broker
        .wait_for_log("broker registered", 0, STARTUP)
        .expect("registers again");
    // The metadata log survived: the new registration is a later entry of the same log.
    assert!(
        broker_epoch(&line) > first_epoch,
        "epoch {} after {first_epoch}:\n{}",
        broker_epoch(&line),
        broker.log_text()
    );
    let status = broker.terminate(STOP).expect("stops");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_bad_quorum_voter_list_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = dev_args(dir.path().to_str().unwrap());
    args.extend(["--set", "metadata.quorum_voters=1@nowhere"]);
    let output = streambus_integration_tests::run_streambus(&args).expect("runs");
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("metadata.quorum_voters"),
        "stderr: {}",
        output.stderr
    );
}

#[test]
fn three_broker_processes_form_one_quorum_and_all_register() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_id = streambus_integration_tests::new_cluster_id().expect("a cluster id");
    let raft_ports = streambus_integration_tests::cluster::free_ports(3);
    let voters = raft_ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut brokers = Vec::new();
    for (i, port) in raft_ports.iter().enumerate() {
        let id = (i + 1).to_string();
        let data_dir = dir.path().join(format!("broker-{id}"));
        let raft_listener = format!("127.0.0.1:{port}");
        let voters_flag = format!("metadata.quorum_voters={voters}");
        let args = [
            "--node-id",
            &id,
            "--cluster-id",
            &cluster_id,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--kafka-listener",
            "127.0.0.1:0",
            "--raft-listener",
            &raft_listener,
            "--admin-listener",
            "127.0.0.1:0",
            "--http-listener",
            "127.0.0.1:0",
            "--set",
            &voters_flag,
        ];
        brokers.push(BrokerProcess::start(&args).expect("starts"));
    }
    // Each broker registers through whichever voter won the election, so all three lines prove
    // the processes found each other over gRPC and agreed on one controller.
    let mut epochs = Vec::new();
    for broker in &mut brokers {
        let line = broker
            .wait_for_log("broker registered", 0, STARTUP)
            .expect("registers");
        epochs.push(broker_epoch(&line));
    }
    epochs.sort_unstable();
    epochs.dedup();
    assert_eq!(
        epochs.len(),
        3,
        "one log gives three distinct epochs: {epochs:?}"
    );
    for broker in brokers {
        let status = broker.terminate(STOP).expect("stops");
        assert!(status.success(), "exit status {status}");
    }
}
