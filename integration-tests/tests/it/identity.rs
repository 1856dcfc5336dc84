//! Cluster identity across real processes (issue 21): two clusters whose raft addresses overlap
//! refuse each other's requests and each serve on; a data directory of another cluster or node
//! stops a broker at startup; a multi-node broker needs a cluster id; a replica fetch naming
//! another cluster, or from an unknown broker, is refused; a broker whose raft core fails exits
//! with an error instead of lingering.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, FetchRequest, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use streambus_integration_tests::cluster::{Cluster, FAST_FAILOVER};
use streambus_integration_tests::kafka::{
    dev_args, fetch_values, plain_batch, produce_to, topic_name,
};
use streambus_integration_tests::{run_streambus, DevBroker, KafkaConn};
use streambus_proto::raft::v1 as pb;
use streambus_proto::raft::v1::raft_service_client::RaftServiceClient;

const WAIT: Duration = Duration::from_secs(60);
/// Kafka's INCONSISTENT_CLUSTER_ID.
const INCONSISTENT_CLUSTER_ID: i16 = 104;
/// Kafka's BROKER_ID_NOT_REGISTERED.
const BROKER_ID_NOT_REGISTERED: i16 = 102;

fn metadata(conn: &mut KafkaConn) -> MetadataResponse {
    conn.send(&MetadataRequest::default().with_topics(Some(vec![])), 12)
        .expect("metadata")
}

/// Creates `topic` (one partition on `replicas`), produces three records with acks=all on its
/// leader and reads them back there.
fn round_trip(cluster: &Cluster, topic: &str, replicas: &[i32]) {
    let mut conn = cluster.connect_any().expect("a broker answers");
    crate::replication::create_topic_with(&mut conn, topic, replicas, &[]).expect("create topic");
    let view = cluster
        .wait_for(topic, 0, WAIT, "a leader and a full ISR", |view| {
            view.leader > 0 && view.isr.len() == replicas.len()
        })
        .expect("the partition is ready");
    let mut leader = KafkaConn::connect(cluster.member(view.leader).kafka_addr).expect("leader");
    let values: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("{topic}-{i}").into_bytes())
        .collect();
    let (error, base) =
        produce_to(&mut leader, topic, 0, plain_batch(&values), -1).expect("produce");
    assert_eq!((error, base), (0, 0), "{}", cluster.logs_tail(30));
    let read = fetch_values(&mut leader, topic, 0, 0)
        .expect("fetch")
        .expect("no fetch error");
    let read: Vec<Vec<u8>> = read.into_iter().map(|(_, v)| v.to_vec()).collect();
    assert_eq!(read, values);
}

#[test]
fn two_clusters_whose_raft_addresses_overlap_refuse_each_other_and_both_serve() {
    let mut a = Cluster::start(3, 3, FAST_FAILOVER).expect("cluster A starts");
    // B's voter 3 is listed at A's broker 3 (a stale address): B's two brokers are a quorum of
    // its three voters, and everything they send to "node 3" reaches A's broker 3.
    let a3 = a.member(3).raft_addr;
    let mut b = Cluster::start_with_voters(2, 2, &[(3, a3)], FAST_FAILOVER)
        .expect("cluster B starts next to A");
    assert_ne!(a.cluster_id, b.cluster_id);

    // A's broker 3 refuses them and says which cluster knocked.
    let refused = a
        .wait_for_log(3, "INCONSISTENT_CLUSTER_ID", WAIT)
        .expect("A's broker 3 logs the refusal");
    assert!(refused.contains(&b.cluster_id), "{refused}");
    // B's brokers learn that their "node 3" is someone else.
    let told = (1..=2).any(|id| {
        b.wait_for_log(id, "a peer refused this node's request", WAIT)
            .is_ok_and(|line| line.contains("INCONSISTENT_CLUSTER_ID"))
    });
    assert!(told, "{}", b.logs_tail(30));

    // Each cluster serves its own metadata, under its own id, with only its own brokers.
    for (cluster, brokers) in [(&a, vec![1, 2, 3]), (&b, vec![1, 2])] {
        let mut conn = cluster.connect_any().expect("a broker answers");
        let response = metadata(&mut conn);
        assert_eq!(
            response.cluster_id.as_deref(),
            Some(cluster.cluster_id.as_str())
        );
        let listed: BTreeSet<(i32, i32)> = response
            .brokers
            .iter()
            .map(|broker| (broker.node_id.0, broker.port))
            .collect();
        let expected: BTreeSet<(i32, i32)> = brokers
            .iter()
            .map(|id| (*id, i32::from(cluster.member(*id).kafka_addr.port())))
            .collect();
        assert_eq!(listed, expected, "{}", cluster.logs_tail(30));
    }
    round_trip(&a, "in-a", &[1, 2, 3]);
    round_trip(&b, "in-b", &[1, 2]);

    // Nobody crashed on the other cluster's messages.
    assert_eq!(a.exited().expect("status"), vec![], "{}", a.logs_tail(40));
    assert_eq!(b.exited().expect("status"), vec![], "{}", b.logs_tail(40));
}

#[test]
fn a_data_directory_of_another_cluster_or_node_stops_the_broker_at_startup() {
    let mut broker = DevBroker::start(&[]).expect("starts");
    let mut conn = broker.connect().expect("connects");
    let cluster_id = metadata(&mut conn)
        .cluster_id
        .expect("a cluster id")
        .to_string();
    drop(conn);
    let process = broker.process.take().expect("running");
    assert!(process.terminate(WAIT).expect("stops").success());
    let data_dir = broker.data_dir.path().to_str().expect("utf-8").to_owned();
    let properties =
        std::fs::read_to_string(broker.data_dir.path().join("meta.properties")).expect("written");
    assert!(
        properties.contains(&format!("cluster.id={cluster_id}\n")),
        "{properties}"
    );

    let mut args = dev_args(&data_dir);
    args.extend(["--cluster-id", "another-cluster"]);
    let output = run_streambus(&args).expect("runs");
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("INCONSISTENT_CLUSTER_ID") && output.stderr.contains(&cluster_id),
        "stderr: {}",
        output.stderr
    );

    let mut args = dev_args(&data_dir);
    args.extend(["--node-id", "2"]);
    let output = run_streambus(&args).expect("runs");
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("belongs to node 1"),
        "stderr: {}",
        output.stderr
    );

    // With its own id (given or not), it starts again.
    broker.restart().expect("restarts");
}

#[test]
fn a_broker_of_a_multi_node_cluster_needs_a_cluster_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = dev_args(dir.path().to_str().unwrap());
    args.retain(|arg| *arg != "--dev");
    args.extend([
        "--set",
        "metadata.quorum_voters=1@127.0.0.1:1,2@127.0.0.1:2",
    ]);
    let output = run_streambus(&args).expect("runs");
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("`cluster_id` must be set"),
        "stderr: {}",
        output.stderr
    );
    assert!(!dir.path().join("meta.properties").exists());
}

#[test]
fn replica_fetches_naming_another_cluster_or_an_unknown_broker_are_refused() {
    let broker = DevBroker::start(&[]).expect("starts");
    let mut conn = broker.connect().expect("connects");
    let created = conn
        .send(
            &CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(topic_name("replicated"))
                    .with_num_partitions(1)
                    .with_replication_factor(1)])
                .with_timeout_ms(10_000),
            7,
        )
        .expect("create");
    assert_eq!(created.topics[0].error_code, 0);
    let (error, _) = produce_to(
        &mut conn,
        "replicated",
        0,
        plain_batch(&[b"x".to_vec()]),
        -1,
    )
    .expect("produce");
    assert_eq!(error, 0);
    let cluster_id = metadata(&mut conn).cluster_id.expect("a cluster id");
    let fetch = |replica: i32, cluster_id: Option<StrBytes>| {
        FetchRequest::default()
            .with_cluster_id(cluster_id)
            .with_replica_id(BrokerId(replica))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name("replicated"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])])
    };

    // Fetch v12: topics by name, the tagged ClusterId.
    let refused = conn
        .send(
            &fetch(1, Some(StrBytes::from_static_str("another-cluster"))),
            12,
        )
        .expect("answered");
    assert_eq!(refused.error_code, INCONSISTENT_CLUSTER_ID);
    assert!(refused.responses.is_empty(), "no data: {refused:?}");

    let refused = conn
        .send(&fetch(42, Some(cluster_id.clone())), 12)
        .expect("answered");
    assert_eq!(refused.error_code, BROKER_ID_NOT_REGISTERED);
    assert!(refused.responses.is_empty(), "no data: {refused:?}");

    // A consumer sends no cluster id, and is served.
    let served = conn.send(&fetch(-1, None), 12).expect("answered");
    assert_eq!(served.error_code, 0);
    let records = served.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    assert!(!records.is_empty(), "{served:?}");
}

/// An AppendEntries from node `sender`, claiming a huge term, whose previous entry (index 1)
/// contradicts what the receiver has committed: openraft trusts members, and its core asserts
/// (in debug builds, which these tests run) that a committed entry never conflicts.
fn contradicting_append(cluster_id: &str, sender: u64, target: u64) -> pb::AppendEntriesRequest {
    let leader = serde_json::json!({ "term": 1_000_000, "node_id": sender });
    let rpc = serde_json::json!({
        "vote": { "leader_id": leader, "committed": true },
        "prev_log_id": { "leader_id": leader, "index": 1 },
        "entries": [],
        "leader_commit": null,
    });
    pb::AppendEntriesRequest {
        payload: serde_json::to_vec(&rpc).expect("serializes"),
        identity: Some(pb::Identity {
            cluster_id: cluster_id.to_owned(),
            sender_node_id: sender,
            target_node_id: target,
        }),
    }
}

#[test]
fn a_broker_whose_raft_core_fails_exits_with_an_error() {
    let mut cluster = Cluster::start(3, 3, FAST_FAILOVER).expect("cluster starts");
    let request = contradicting_append(&cluster.cluster_id, 2, 1);
    let raft_addr = cluster.member(1).raft_addr;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // The answer does not matter (the core may die before it answers): the process must end.
    let _ = runtime.block_on(async move {
        let mut client = RaftServiceClient::connect(format!("http://{raft_addr}")).await?;
        client.append_entries(request).await?;
        anyhow::Ok(())
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let exited = cluster.exited().expect("status");
        if let Some((_, status)) = exited.into_iter().find(|(id, _)| *id == 1) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "broker 1 still runs without a raft core:\n{}",
            cluster.log_text(1)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(status, "exit status: 0", "{}", cluster.log_text(1));
    let log = cluster.log_text(1);
    assert!(log.contains("metadata quorum failed"), "{log}");
    assert!(log.contains("the process must restart"), "{log}");
}
