//! Unclean shutdowns of real broker processes (KIP-966): a last in-sync replica that comes back
//! from a power loss with a cut log is not elected again, so the replicas that still hold
//! acknowledged records never truncate to it, until an operator runs an unclean election, which
//! reports what it may lose.

use std::fs::OpenOptions;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{DescribeTopicPartitionsRequest, ElectLeadersRequest};
use streambus_integration_tests::cluster::Cluster;
use streambus_integration_tests::kafka::{plain_batch, produce_to, topic_name};
use streambus_integration_tests::KafkaConn;

use crate::replication::{create_topic, WAIT};

/// How long the partition is watched after the cut broker is back.
const WATCH: Duration = Duration::from_secs(8);

/// The log end offset of a partition directory, from its segment files: the last offset of the
/// last whole batch, plus one (0 for an empty log).
fn log_end(dir: &Path) -> i64 {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut end = 0;
    for file in files {
        let bytes = std::fs::read(file).unwrap_or_default();
        let mut pos = 0usize;
        // baseOffset i64, batchLength i32, leader epoch i32, magic i8, crc u32, attributes
        // i16, lastOffsetDelta i32: the delta sits 23 bytes in.
        while pos + 27 <= bytes.len() {
            let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes"));
            let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().expect("4 bytes"));
            let Ok(len) = usize::try_from(len) else { break };
            if len == 0 || pos + 12 + len > bytes.len() {
                break;
            }
            let delta = i32::from_be_bytes(bytes[pos + 23..pos + 27].try_into().expect("4 bytes"));
            end = base + i64::from(delta) + 1;
            pos += 12 + len;
        }
    }
    end
}

/// Produces `count` one-record batches with acks=all to partition 0 through `conn`; all must
/// be acknowledged.
fn produce_acked(conn: &mut KafkaConn, topic: &str, prefix: &str, count: usize) {
    for i in 0..count {
        let value = format!("{prefix}-{i}").into_bytes();
        let (code, _) = produce_to(conn, topic, 0, plain_batch(&[value]), -1).expect("produce");
        assert_eq!(code, 0, "{prefix}-{i} not acknowledged");
    }
}

#[test]
fn a_power_loss_of_the_last_isr_member_leaves_the_partition_offline_instead_of_rewinding_it() {
    const TOPIC: &str = "kip-966";
    let args = [
        "--set",
        "metadata.broker_session_timeout_ms=3000",
        "--set",
        "metadata.broker_heartbeat_interval_ms=300",
        "--set",
        "replication.lag_time_max_ms=2000",
        "--set",
        "replication.fetch_backoff_ms=200",
    ];
    let mut cluster = Cluster::start(3, 3, &args).expect("cluster starts");
    // Replicas 1 and 2; broker 3 keeps the quorum.
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2], 1).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "leader 1, ISR {1, 2}", |v| {
            v.leader == 1 && v.isr.len() == 2
        })
        .unwrap();
    let mut conn = KafkaConn::connect(cluster.member(1).kafka_addr).unwrap();
    produce_acked(&mut conn, TOPIC, "both", 10);

    // Follower 2 stops: the ISR shrinks to {1}, which then acknowledges alone.
    cluster.signal(2, "STOP").unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "ISR {1}", |v| v.leader == 1 && v.isr == [1])
        .unwrap();
    produce_acked(&mut conn, TOPIC, "only-1", 10);
    drop(conn);
    let acknowledged = 20;
    let root = cluster.dir.path().to_path_buf();
    let dir_of = |id: i32| root.join(format!("broker-{id}/logs/{TOPIC}-0"));
    let held_by_2 = log_end(&dir_of(2));
    assert_eq!(
        held_by_2, 10,
        "broker 2 holds what it replicated before it stopped"
    );

    // Power loss on broker 1: killed, and its segment cut back to nothing it had not synced.
    cluster.kill(1);
    for entry in std::fs::read_dir(dir_of(1)).expect("broker 1's partition directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(0))
                .expect("cut the segment");
        }
    }
    cluster.signal(2, "CONT").unwrap();
    cluster.restart(1).unwrap();
    let log = cluster.log_text(1);
    assert!(
        log.contains("no clean shutdown recorded"),
        "broker 1 must know its shutdown was unclean\n{log}"
    );

    // Without an unclean election no replica leads, and broker 2 keeps what it holds.
    let deadline = Instant::now() + WATCH;
    while Instant::now() < deadline {
        let (view, _) = cluster.describe(TOPIC, 0).expect("metadata");
        assert_eq!(
            view.leader,
            -1,
            "the partition came back led by a replica missing acknowledged records: {view:?}\n{}",
            cluster.logs_tail(30)
        );
        assert!(view.isr.is_empty(), "{view:?}");
        let end_2 = log_end(&dir_of(2));
        assert!(
            end_2 >= held_by_2,
            "broker 2 truncated from {held_by_2} to {end_2}"
        );
        thread::sleep(Duration::from_millis(250));
    }

    // Kafka 4's DescribeTopicPartitions shows why: no ISR, no eligible leader replica, and
    // broker 1 as the last replica known to hold every record.
    let mut conn = cluster.connect_any().unwrap();
    let described = conn
        .send(
            &DescribeTopicPartitionsRequest::default()
                .with_topics(vec![TopicRequest::default().with_name(topic_name(TOPIC))]),
            0,
        )
        .expect("DescribeTopicPartitions");
    let partition = &described.topics[0].partitions[0];
    assert_eq!(partition.leader_id.0, -1);
    assert!(partition.isr_nodes.is_empty());
    assert_eq!(partition.eligible_leader_replicas.as_deref(), Some(&[][..]));
    let last_known: Vec<i32> = partition
        .last_known_elr
        .iter()
        .flatten()
        .map(|b| b.0)
        .collect();
    assert_eq!(last_known, [1]);

    // The operator's unclean election brings it back, saying what may be lost.
    let request = ElectLeadersRequest::default()
        .with_election_type(1)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(topic_name(TOPIC))
            .with_partitions(vec![0])]));
    let response = conn.send(&request, 2).expect("ElectLeaders");
    assert_eq!(response.error_code, 0);
    let result = &response.replica_election_results[0].partition_result[0];
    assert_eq!(result.error_code, 0, "{result:?}");
    let report = result
        .error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    assert!(
        report.contains("unclean election") && report.contains("[1]"),
        "the answer names the replica that last held every record: {report:?}"
    );
    let view = cluster
        .wait_for(TOPIC, 0, WAIT, "a leader after the unclean election", |v| {
            v.leader > 0
        })
        .unwrap();
    assert_eq!(
        view.leader, 1,
        "the last replica known to hold every record is preferred"
    );
    assert!(acknowledged > held_by_2);
}
