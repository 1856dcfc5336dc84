//! Transactions driven by third-party clients (see `integration-tests/python/README.md`):
//! confluent-kafka's, aiokafka's and kafkajs's transactional producers, read_committed
//! consumers and exactly-once copies against a dev broker; and the transaction coordinator's
//! answers to bad requests, on the wire.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, CreateTopicsRequest,
    DescribeTransactionsRequest, EndTxnRequest, FindCoordinatorRequest, GroupId,
    InitProducerIdRequest, ListTransactionsRequest, ProducerId, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use streambus_integration_tests::kafka::{fetch_values, topic_name};
use streambus_integration_tests::{DevBroker, KafkaConn};

use streambus_integration_tests::cluster::{Cluster, FAST_FAILOVER};

use crate::group_coordinator::{spawn_script, wait_for_marker, wait_success};
use crate::scripts::{node_script, python_script, run_script};

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ILLEGAL_GENERATION: i16 = 22;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const PRODUCER_FENCED: i16 = 90;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
/// How long the coordinator may take to come up.
const WAIT: Duration = Duration::from_secs(60);

#[test]
fn confluent_kafka_transactions() {
    let broker = DevBroker::start(&["--set", "groups.group_initial_rebalance_delay_ms=0"]).unwrap();
    run_script(
        &broker,
        python_script("txn_confluent.py"),
        "confluent-kafka transactions",
    );
}

#[test]
fn aiokafka_transactions() {
    let broker = DevBroker::start(&["--set", "groups.group_initial_rebalance_delay_ms=0"]).unwrap();
    run_script(
        &broker,
        python_script("txn_aiokafka.py"),
        "aiokafka transactions",
    );
}

#[test]
fn kafkajs_transactions() {
    let broker = DevBroker::start(&["--set", "groups.group_initial_rebalance_delay_ms=0"]).unwrap();
    run_script(
        &broker,
        node_script("txn_kafkajs.js"),
        "kafkajs transactions",
    );
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(s(id))
}

/// Waits until `id`'s coordinator answers (the first FindCoordinator creates
/// `__transaction_state`).
fn wait_for_coordinator(conn: &mut KafkaConn, id: &str) {
    let find = FindCoordinatorRequest::default()
        .with_key(s(id))
        .with_key_type(1);
    let deadline = Instant::now() + WAIT;
    while conn.send(&find, 3).unwrap().error_code != NONE {
        assert!(Instant::now() < deadline, "no transaction coordinator");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn init(conn: &mut KafkaConn, id: &str, timeout_ms: i32) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = conn.send(&request, 4).unwrap();
        // Loading or not yet created: retriable, as clients treat them.
        if ![14, 15, 16].contains(&answer.error_code) {
            return (
                answer.error_code,
                answer.producer_id.0,
                answer.producer_epoch,
            );
        }
        assert!(
            Instant::now() < deadline,
            "InitProducerId kept answering {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn add(
    conn: &mut KafkaConn,
    id: &str,
    producer: (i64, i16),
    topic: &str,
    partitions: &[i32],
    version: i16,
) -> Vec<(String, i32, i16)> {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id(id))
        .with_v3_and_below_producer_id(ProducerId(producer.0))
        .with_v3_and_below_producer_epoch(producer.1)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(partitions.to_vec())]);
    let answer = conn.send(&request, version).unwrap();
    answer
        .results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.partition_error_code,
                )
            })
        })
        .collect()
}

fn end(conn: &mut KafkaConn, id: &str, producer: (i64, i16), commit: bool, version: i16) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(txn_id(id))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_committed(commit);
    conn.send(&request, version).unwrap().error_code
}

/// One transactional batch of `producer` with `values`, sequences from 0.
fn txn_batch(producer: (i64, i16), values: &[&str]) -> Bytes {
    txn_batch_from(producer, 0, values)
}

/// One transactional batch of `producer` with `values`, sequences from `first_sequence`.
fn txn_batch_from(producer: (i64, i16), first_sequence: i32, values: &[&str]) -> Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.0,
            producer_epoch: producer.1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_sequence + i as i32,
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
    buf.freeze()
}

#[test]
fn bad_transactional_requests_get_precise_errors_and_change_nothing() {
    let broker =
        DevBroker::start(&["--set", "transactions.transaction_max_timeout_ms=60000"]).unwrap();
    let mut conn = broker.connect().unwrap();
    let created = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name("data"))
            .with_num_partitions(2)
            .with_replication_factor(1)])
        .with_timeout_ms(30_000);
    assert_eq!(conn.send(&created, 7).unwrap().topics[0].error_code, NONE);
    wait_for_coordinator(&mut conn, "t1");

    // A timeout above transaction.max.timeout.ms is refused; the id is not created.
    assert_eq!(init(&mut conn, "t1", 60_001).0, INVALID_TRANSACTION_TIMEOUT);
    let described = conn
        .send(
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id("t1")]),
            0,
        )
        .unwrap();
    assert_eq!(
        described.transaction_states[0].error_code, 105,
        "TRANSACTIONAL_ID_NOT_FOUND"
    );

    let (code, producer_id, epoch) = init(&mut conn, "t1", 30_000);
    assert_eq!(code, NONE);
    let producer = (producer_id, epoch);
    // A producer id without its epoch (or the reverse) is malformed: knowing a producer id
    // alone must not fence its producer.
    for (half_id, half_epoch) in [(producer_id, -1), (-1, epoch)] {
        let half = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id("t1")))
            .with_transaction_timeout_ms(30_000)
            .with_producer_id(ProducerId(half_id))
            .with_producer_epoch(half_epoch);
        assert_eq!(
            conn.send(&half, 4).unwrap().error_code,
            42,
            "INVALID_REQUEST"
        );
    }

    // KIP-890: a transactional write to a partition not added is refused and not written.
    let (code, _) = produce_to_txn(&mut conn, "t1", "data", 0, txn_batch(producer, &["x"]));
    assert_eq!(code, INVALID_TXN_STATE);
    assert_eq!(
        fetch_values(&mut conn, "data", 0, 0).unwrap(),
        Ok(Vec::new())
    );

    // EndTxn with nothing ongoing, with a wrong epoch (PRODUCER_FENCED from v2, the old code
    // before), with another producer id.
    assert_eq!(end(&mut conn, "t1", producer, true, 3), INVALID_TXN_STATE);
    assert_eq!(
        end(&mut conn, "t1", (producer_id, epoch + 1), true, 3),
        PRODUCER_FENCED
    );
    assert_eq!(
        end(&mut conn, "t1", (producer_id, epoch + 1), true, 1),
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(
        end(&mut conn, "t1", (producer_id + 1, epoch), true, 3),
        INVALID_PRODUCER_ID_MAPPING
    );

    // An unknown topic in AddPartitionsToTxn: its code, the others not attempted.
    let added = add(&mut conn, "t1", producer, "missing", &[0], 3);
    assert_eq!(
        added,
        vec![("missing".to_owned(), 0, UNKNOWN_TOPIC_OR_PARTITION)]
    );
    let added = add(&mut conn, "t1", producer, "data", &[0, 7], 3);
    let codes: Vec<i16> = added.iter().map(|(_, _, c)| *c).collect();
    assert_eq!(
        codes,
        vec![OPERATION_NOT_ATTEMPTED, UNKNOWN_TOPIC_OR_PARTITION]
    );

    // Added: the write goes in, and the transaction is listed and described as Ongoing.
    let added = add(&mut conn, "t1", producer, "data", &[0], 3);
    assert_eq!(added, vec![("data".to_owned(), 0, NONE)]);
    let (code, offset) = produce_to_txn(&mut conn, "t1", "data", 0, txn_batch(producer, &["y"]));
    assert_eq!((code, offset), (NONE, 0));
    let listed = conn.send(&ListTransactionsRequest::default(), 0).unwrap();
    assert!(listed.transaction_states.iter().any(
        |t| t.transactional_id.0.as_str() == "t1" && t.transaction_state.as_str() == "Ongoing"
    ));
    let described = conn
        .send(
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id("t1")]),
            0,
        )
        .unwrap();
    let state = &described.transaction_states[0];
    assert_eq!(state.transaction_state.as_str(), "Ongoing");
    assert_eq!(state.topics.len(), 1);
    // DescribeProducers at the partition's leader: the producer, its open transaction's start.
    let producers = conn
        .send(
            &kafka_protocol::messages::DescribeProducersRequest::default().with_topics(vec![
                kafka_protocol::messages::describe_producers_request::TopicRequest::default()
                    .with_name(topic_name("data"))
                    .with_partition_indexes(vec![0]),
            ]),
            0,
        )
        .unwrap();
    let partition = &producers.topics[0].partitions[0];
    assert_eq!(partition.error_code, NONE);
    let active: Vec<(i64, i32, i64)> = partition
        .active_producers
        .iter()
        .map(|p| {
            (
                p.producer_id.0,
                p.producer_epoch,
                p.current_txn_start_offset,
            )
        })
        .collect();
    assert_eq!(active, vec![(producer_id, i32::from(epoch), 0)]);

    // Transactional records without a transactional id: refused as Kafka does.
    let (code, _) = produce_plain(&mut conn, "data", 1, txn_batch(producer, &["z"]));
    assert_eq!(code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);

    // sbctl: the transaction listed and described; not hanging (its coordinator holds it
    // open); an abort marker written by hand ends it on the partition.
    let listed = crate::sbctl::ok(&broker, &["txn", "list", "--state", "Ongoing"]);
    assert!(
        listed.contains("t1") && listed.contains("Ongoing"),
        "{listed}"
    );
    let described = crate::sbctl::ok(&broker, &["--output", "json", "txn", "describe", "t1"]);
    let described: serde_json::Value = serde_json::from_str(described.trim()).unwrap();
    assert_eq!(described["state"], "Ongoing");
    assert_eq!(described["partitions"], serde_json::json!([["data", 0]]));
    let hanging = crate::sbctl::ok(
        &broker,
        &[
            "--output",
            "json",
            "txn",
            "find-hanging",
            "--topic",
            "data",
            "--partition",
            "0",
            "--max-transaction-timeout-ms",
            "0",
        ],
    );
    assert_eq!(
        hanging.trim(),
        "[]",
        "a transaction its coordinator holds open is not hanging"
    );
    crate::sbctl::ok(
        &broker,
        &[
            "txn",
            "abort",
            "--topic",
            "data",
            "--partition",
            "0",
            "--start-offset",
            "0",
        ],
    );
    let producers = crate::sbctl::ok(
        &broker,
        &[
            "--output",
            "json",
            "txn",
            "find-hanging",
            "--topic",
            "data",
            "--partition",
            "0",
            "--max-transaction-timeout-ms",
            "0",
        ],
    );
    assert_eq!(producers.trim(), "[]");
    // The write at 0, the abort marker at 1 (the decoder shows control records too).
    let records = fetch_values(&mut conn, "data", 0, 0).unwrap().unwrap();
    let offsets: Vec<i64> = records.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, vec![0, 1]);

    // TxnOffsetCommit naming a generation of a group that does not exist.
    let txn_commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn_id("t1"))
        .with_group_id(GroupId(s("no-such-group")))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_generation_id(4)
        .with_member_id(s("m"))
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(topic_name("data"))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let find_group = FindCoordinatorRequest::default().with_key(s("no-such-group"));
    let deadline = Instant::now() + WAIT;
    while conn.send(&find_group, 3).unwrap().error_code != NONE {
        assert!(Instant::now() < deadline, "no group coordinator");
        std::thread::sleep(Duration::from_millis(100));
    }
    let txn_commit_code = |conn: &mut KafkaConn, request: &TxnOffsetCommitRequest| {
        let deadline = Instant::now() + WAIT;
        loop {
            let code = conn.send(request, 3).unwrap().topics[0].partitions[0].error_code;
            // COORDINATOR_LOAD_IN_PROGRESS while the group's partition loads.
            if code != 14 {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "the group coordinator never loaded"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The group's offsets partition is not in the transaction (no AddOffsetsToTxn): KIP-890
    // verification refuses it before the group is looked at.
    assert_eq!(txn_commit_code(&mut conn, &txn_commit), INVALID_TXN_STATE);
    let add_offsets = AddOffsetsToTxnRequest::default()
        .with_transactional_id(txn_id("t1"))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(s("no-such-group")));
    assert_eq!(conn.send(&add_offsets, 3).unwrap().error_code, NONE);
    assert_eq!(txn_commit_code(&mut conn, &txn_commit), ILLEGAL_GENERATION);
    // A later epoch than the producer's (a misbehaving client) and an older one (a zombie)
    // are refused before anything is written.
    for wrong_epoch in [epoch + 1, epoch - 1] {
        if wrong_epoch < 0 {
            continue;
        }
        let zombie = txn_commit
            .clone()
            .with_producer_epoch(wrong_epoch)
            .with_generation_id(-1)
            .with_member_id(s(""));
        assert_eq!(
            txn_commit_code(&mut conn, &zombie),
            INVALID_PRODUCER_EPOCH,
            "epoch {wrong_epoch}"
        );
    }

    // The transaction aborts; a second InitProducerId bumps the epoch and fences the first.
    assert_eq!(end(&mut conn, "t1", producer, false, 3), NONE);
    let deadline = Instant::now() + WAIT;
    let bumped = loop {
        let (code, id, epoch) = init(&mut conn, "t1", 30_000);
        if code == NONE {
            break (id, epoch);
        }
        assert_eq!(
            code, 51,
            "CONCURRENT_TRANSACTIONS while the abort completes"
        );
        assert!(Instant::now() < deadline, "the abort never completed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(bumped, (producer_id, epoch + 1));
    assert_eq!(
        add(&mut conn, "t1", producer, "data", &[1], 3)[0].2,
        PRODUCER_FENCED
    );
    assert_eq!(
        add(&mut conn, "t1", producer, "data", &[1], 1)[0].2,
        INVALID_PRODUCER_EPOCH
    );
}

/// A Produce of `batch` (acks=all) without a transactional id.
fn produce_plain(conn: &mut KafkaConn, topic: &str, partition: i32, batch: Bytes) -> (i16, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let request = kafka_protocol::messages::ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let response = conn.send(&request, 9).unwrap();
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A transactional Produce of `batch` (acks=all) for `id`.
fn produce_to_txn(
    conn: &mut KafkaConn,
    id: &str,
    topic: &str,
    partition: i32,
    batch: Bytes,
) -> (i16, i64) {
    produce_to_txn_at(conn, id, topic, partition, batch, 9)
}

/// A transactional Produce of `batch` at request `version` (12+: transaction version 2).
fn produce_to_txn_at(
    conn: &mut KafkaConn,
    id: &str,
    topic: &str,
    partition: i32,
    batch: Bytes,
    version: i16,
) -> (i16, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let request = kafka_protocol::messages::ProduceRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let response = conn.send(&request, version).unwrap();
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// The broker coordinating transactional id `id`, asked of any live member, other than
/// `avoid` (a killed broker the image may still name until its session lapses).
fn txn_coordinator_other_than(cluster: &Cluster, id: &str, avoid: Option<i32>) -> i32 {
    let find = FindCoordinatorRequest::default()
        .with_key(s(id))
        .with_key_type(1);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut conn) = cluster.connect_any() {
            if let Ok(found) = conn.send(&find, 3) {
                if found.error_code == NONE && Some(found.node_id.0) != avoid {
                    return found.node_id.0;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no transaction coordinator for {id}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A librdkafka transactional producer keeps committing while its transaction coordinator is
/// SIGKILLed on a 3-broker cluster: the new coordinator resumes, nothing committed is lost or
/// duplicated, nothing is left open (`txn_failover.py`).
#[test]
fn transactions_survive_a_sigkill_of_their_coordinator() {
    let mut args = FAST_FAILOVER.to_vec();
    args.extend([
        "--set",
        "transactions.transaction_state_log_num_partitions=3",
    ]);
    let mut cluster = Cluster::start(3, 3, &args).unwrap();
    let mut conn = cluster.connect_any().unwrap();
    let created = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name("copied"))
            .with_num_partitions(3)
            .with_replication_factor(3)])
        .with_timeout_ms(30_000);
    assert_eq!(conn.send(&created, 7).unwrap().topics[0].error_code, NONE);
    drop(conn);
    let coordinator = txn_coordinator_other_than(&cluster, "failover-txn", None);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("committing");
    let mut child = spawn_script(
        &cluster.bootstrap(),
        "txn_failover.py",
        &["copied", "failover-txn", "40", marker.to_str().unwrap()],
    );
    wait_for_marker(&mut child, &marker, Duration::from_secs(180));
    cluster.kill(coordinator);
    txn_coordinator_other_than(&cluster, "failover-txn", Some(coordinator));
    std::thread::sleep(Duration::from_secs(3));
    cluster.restart(coordinator).unwrap();
    let output = wait_success(child, Duration::from_secs(500), &cluster);
    assert!(output.contains("ok: 40 transactions committed"), "{output}");
}

/// EndTxn v5: the code and the producer id and epoch to go on with.
fn end_v5(conn: &mut KafkaConn, id: &str, producer: (i64, i16), commit: bool) -> (i16, (i64, i16)) {
    let request = EndTxnRequest::default()
        .with_transactional_id(txn_id(id))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_committed(commit);
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = conn.send(&request, 5).unwrap();
        // CONCURRENT_TRANSACTIONS while the previous end completes.
        if answer.error_code != 51 || Instant::now() >= deadline {
            return (
                answer.error_code,
                (answer.producer_id.0, answer.producer_epoch),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Transaction version 2 on the wire, as Kafka 4's Java client drives it: the leader adds the
/// partition for a Produce v12 and the group coordinator the offsets partition for a
/// TxnOffsetCommit v5 (no AddPartitionsToTxn, no AddOffsetsToTxn), EndTxn v5 bumps the epoch
/// and says so, a retried EndTxn is answered again, and a write delayed from a finished
/// transaction (the old epoch) can never land in the next one.
#[test]
fn transaction_version_2_bumps_the_epoch_on_every_transaction() {
    let broker = DevBroker::start(&["--set", "groups.group_initial_rebalance_delay_ms=0"]).unwrap();
    let mut conn = broker.connect().unwrap();
    let created = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name("tv2"))
            .with_num_partitions(2)
            .with_replication_factor(1)])
        .with_timeout_ms(30_000);
    assert_eq!(conn.send(&created, 7).unwrap().topics[0].error_code, NONE);
    wait_for_coordinator(&mut conn, "tv2-id");
    let (code, pid, epoch) = init(&mut conn, "tv2-id", 30_000);
    assert_eq!(code, NONE);

    // Version 1 (Produce v11) still needs the partition added first.
    let (code, _) = produce_to_txn_at(
        &mut conn,
        "tv2-id",
        "tv2",
        1,
        txn_batch((pid, epoch), &["v1"]),
        11,
    );
    assert_eq!(code, INVALID_TXN_STATE);

    // The leader adds the partition itself.
    let (code, _) = produce_to_txn_at(
        &mut conn,
        "tv2-id",
        "tv2",
        0,
        txn_batch((pid, epoch), &["a0", "a1"]),
        12,
    );
    assert_eq!(code, NONE);
    let find_group = FindCoordinatorRequest::default().with_key(s("tv2-group"));
    let deadline = Instant::now() + WAIT;
    while conn.send(&find_group, 3).unwrap().error_code != NONE {
        assert!(Instant::now() < deadline, "no group coordinator");
        std::thread::sleep(Duration::from_millis(100));
    }
    let txn_commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn_id("tv2-id"))
        .with_group_id(GroupId(s("tv2-group")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_member_id(s(""))
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(topic_name("tv2"))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)])]);
    let deadline = Instant::now() + WAIT;
    let code = loop {
        let code = conn.send(&txn_commit, 5).unwrap().topics[0].partitions[0].error_code;
        if code != 14 || Instant::now() >= deadline {
            break code;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        code, NONE,
        "the offsets partition is added by the group coordinator"
    );
    let described = conn
        .send(
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id("tv2-id")]),
            0,
        )
        .unwrap();
    let topics: Vec<String> = described.transaction_states[0]
        .topics
        .iter()
        .map(|t| t.topic.to_string())
        .collect();
    assert!(
        topics.contains(&"tv2".to_owned()) && topics.contains(&"__consumer_offsets".to_owned()),
        "{topics:?}"
    );

    // EndTxn v5 bumps the epoch and says so; a retry (answer lost) gets the same answer.
    assert_eq!(
        end_v5(&mut conn, "tv2-id", (pid, epoch), true),
        (NONE, (pid, epoch + 1))
    );
    assert_eq!(
        end_v5(&mut conn, "tv2-id", (pid, epoch), true),
        (NONE, (pid, epoch + 1))
    );
    assert_eq!(
        end_v5(&mut conn, "tv2-id", (pid, epoch), false).0,
        INVALID_TXN_STATE
    );

    // A write delayed from that transaction, at its old epoch: refused, never the next one's.
    let (code, _) = produce_to_txn_at(
        &mut conn,
        "tv2-id",
        "tv2",
        0,
        txn_batch_from((pid, epoch), 2, &["late"]),
        12,
    );
    assert_eq!(code, INVALID_PRODUCER_EPOCH);

    // The next transaction, at the bumped epoch from sequence 0, aborted.
    let next = (pid, epoch + 1);
    let (code, _) = produce_to_txn_at(&mut conn, "tv2-id", "tv2", 0, txn_batch(next, &["x0"]), 12);
    assert_eq!(code, NONE);
    let (code, _) = produce_to_txn_at(&mut conn, "tv2-id", "tv2", 1, txn_batch(next, &["x1"]), 12);
    assert_eq!(code, NONE);
    assert_eq!(
        end_v5(&mut conn, "tv2-id", next, false),
        (NONE, (pid, epoch + 2))
    );
    // Nothing ongoing: a version 2 abort still ends cleanly with a new epoch; a commit is refused.
    assert_eq!(
        end_v5(&mut conn, "tv2-id", (pid, epoch + 2), true).0,
        INVALID_TXN_STATE
    );
    assert_eq!(
        end_v5(&mut conn, "tv2-id", (pid, epoch + 2), false),
        (NONE, (pid, epoch + 3))
    );

    // read_committed (librdkafka) sees the committed transaction only; the group's offset is
    // the committed one.
    let read = crate::sdk_transactions::read_with_librdkafka(&broker, "tv2", "read_committed");
    let expected: std::collections::BTreeSet<String> =
        ["a0", "a1"].iter().map(|v| (*v).to_owned()).collect();
    assert_eq!(read, expected);
    let fetched = conn
        .send(
            &kafka_protocol::messages::OffsetFetchRequest::default()
                .with_group_id(GroupId(s("tv2-group")))
                .with_topics(Some(vec![
                    kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic_name("tv2"))
                        .with_partition_indexes(vec![0]),
                ])),
            5,
        )
        .unwrap();
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, 42);

    // A marker from a coordinator older than the one that wrote the last (a deposed one's
    // late marker) is refused: it could end a transaction it does not know.
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    let producers = conn
        .send(
            &kafka_protocol::messages::DescribeProducersRequest::default().with_topics(vec![
                TopicRequest::default()
                    .with_name(topic_name("tv2"))
                    .with_partition_indexes(vec![0]),
            ]),
            0,
        )
        .unwrap();
    let state = producers.topics[0].partitions[0]
        .active_producers
        .iter()
        .find(|p| p.producer_id.0 == pid)
        .expect("the producer is known")
        .clone();
    assert!(state.coordinator_epoch >= 0, "{state:?}");
    let stale = kafka_protocol::messages::WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch + 3)
            .with_transaction_result(false)
            .with_coordinator_epoch(state.coordinator_epoch - 1)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(topic_name("tv2"))
                .with_partition_indexes(vec![0])]),
    ]);
    let answer = conn.send(&stale, 1).unwrap();
    assert_eq!(
        answer.markers[0].topics[0].partitions[0].error_code, 52,
        "TRANSACTION_COORDINATOR_FENCED"
    );
}
