//! The SDK's transactional producer against a real broker, with transaction version 1 and
//! with version 2 (KIP-890 part 2, which the broker finalizes by default): commits and aborts
//! across two topics, read back by the SDK's consumer (read_committed and read_uncommitted) and
//! by librdkafka; an empty transaction; a second instance of the same `transactional.id`
//! fencing the first, whose open transaction is aborted; and a consume-transform-produce copy
//! whose group offsets move only when its transaction commits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use streambus_client::admin::NewTopic;
use streambus_client::consumer::LATEST;
use streambus_client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, GroupConfig, GroupConsumer,
    OffsetAndMetadata, OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use streambus_integration_tests::{run_with_timeout, DevBroker};

use crate::client::create_topic;
use crate::scripts::python_script;

/// Bound on every wait (a delivery, a read, a rebalance).
const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 2;
const PRODUCER_FENCED: i16 = 90;
const INVALID_PRODUCER_EPOCH: i16 = 47;

fn start_broker() -> DevBroker {
    DevBroker::start(&["--set", "groups.group_initial_rebalance_delay_ms=0"]).unwrap()
}

async fn connect(broker: &DevBroker) -> Client {
    let mut config = ClientConfig::new(&broker.bootstrap());
    config.client_id = "sdk-txn".to_owned();
    Client::connect(config).await.expect("connect")
}

async fn transactional(client: &Client, id: &str, version: u8) -> Producer {
    let config = ProducerConfig {
        transactional_id: Some(id.to_owned()),
        transaction_timeout: Duration::from_secs(20),
        linger: Duration::from_millis(5),
        transaction_version_2: version == 2,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config)
        .await
        .expect("transactional producer");
    assert_eq!(producer.transaction_version(), Some(version));
    producer
}

/// The epoch the coordinator holds for `id`.
async fn coordinator_epoch(client: &Client, id: &str) -> i16 {
    Admin::new(client.clone())
        .describe_transaction(id)
        .await
        .expect("describe")
        .producer_epoch
}

/// Sends `values` to `topic` (partition by index) and waits for every acknowledgement.
async fn send_all(producer: &Producer, topic: &str, values: &[String]) {
    let mut deliveries = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let partition = i as i32 % PARTITIONS;
        let record = ProducerRecord::new(topic, value.clone()).with_partition(partition);
        deliveries.push(producer.send(record).await.expect("send"));
    }
    for delivery in deliveries {
        tokio::time::timeout(WAIT, delivery)
            .await
            .expect("acknowledged in time")
            .expect("acknowledged");
    }
}

fn values(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// Every value of `topic` from the beginning to its end (the LSO under read_committed), as the
/// SDK's consumer reads it.
async fn read_all(client: &Client, topic: &str, read_committed: bool) -> BTreeSet<String> {
    let config = ConsumerConfig {
        read_committed,
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait: Duration::from_millis(50),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config);
    let partitions = consumer.assign_topic(topic).await.expect("assign");
    let asked: Vec<(TopicPartition, i64)> =
        partitions.iter().map(|tp| (tp.clone(), LATEST)).collect();
    let ends = consumer.offsets(&asked).await.expect("end offsets");
    let mut read = BTreeSet::new();
    let started = Instant::now();
    for _ in 0..600 {
        let done = partitions
            .iter()
            .all(|tp| consumer.position(tp).unwrap_or(0) >= ends[tp]);
        if done {
            return read;
        }
        assert!(
            started.elapsed() < WAIT,
            "{topic} not read to its end in time"
        );
        for record in consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll")
        {
            read.insert(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    panic!("{topic} not read to its end in 600 polls");
}

/// What librdkafka (confluent-kafka) reads of `topic` under `isolation`.
pub(crate) fn read_with_librdkafka(
    broker: &DevBroker,
    topic: &str,
    isolation: &str,
) -> BTreeSet<String> {
    read_partitions_with_librdkafka(broker, topic, isolation)
        .into_values()
        .flatten()
        .collect()
}

/// The values of each partition of `topic` (by partition number, in offset order) as
/// librdkafka reads them under `isolation`.
pub(crate) fn read_partitions_with_librdkafka(
    broker: &DevBroker,
    topic: &str,
    isolation: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut command = python_script("read_topic.py");
    command
        .args([topic, isolation])
        .env("STREAMBUS_BOOTSTRAP", broker.bootstrap());
    let output = run_with_timeout(command, WAIT + Duration::from_secs(10)).expect("read_topic.py");
    assert!(
        output.status.success(),
        "read_topic.py failed\n{}\n{}",
        output.stdout,
        output.stderr
    );
    serde_json::from_str(output.stdout.trim()).expect("read_topic.py prints JSON")
}

fn set(groups: &[&[String]]) -> BTreeSet<String> {
    groups.iter().flat_map(|g| g.iter().cloned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_transactions_commit_abort_and_fence_a_zombie_version_1() {
    commit_abort_and_fence(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_transactions_commit_abort_and_fence_a_zombie_version_2() {
    commit_abort_and_fence(2).await;
}

async fn commit_abort_and_fence(version: u8) {
    let broker = start_broker();
    let client = connect(&broker).await;
    for topic in ["sdk-txn-a", "sdk-txn-b"] {
        create_topic(&client, NewTopic::new(topic, PARTITIONS, 1)).await;
    }
    let producer = transactional(&client, "sdk-txn-1", version).await;
    let outside = producer
        .send(ProducerRecord::new("sdk-txn-a", "outside"))
        .await;
    assert!(outside.is_err(), "a send outside a transaction is refused");

    let (a1, b1, aborted, a3) = (
        values("a1", 10),
        values("b1", 10),
        values("aborted", 6),
        values("a3", 4),
    );
    let first_epoch = coordinator_epoch(&client, "sdk-txn-1").await;
    producer.begin_transaction().await.expect("begin");
    send_all(&producer, "sdk-txn-a", &a1).await;
    send_all(&producer, "sdk-txn-b", &b1).await;
    producer.commit_transaction().await.expect("commit");
    // Version 2 ends every transaction with a new epoch; version 1 keeps it.
    assert_eq!(
        coordinator_epoch(&client, "sdk-txn-1").await,
        first_epoch + i16::from(version == 2)
    );

    producer.begin_transaction().await.expect("begin");
    send_all(&producer, "sdk-txn-a", &aborted).await;
    send_all(&producer, "sdk-txn-b", &aborted).await;
    producer.abort_transaction().await.expect("abort");

    // Nothing sent: the transaction never reached the coordinator.
    producer.begin_transaction().await.expect("begin");
    producer.commit_transaction().await.expect("empty commit");

    producer.begin_transaction().await.expect("begin");
    send_all(&producer, "sdk-txn-a", &a3).await;
    producer.commit_transaction().await.expect("commit");

    // A zombie: its transaction is open (its records written) when a new instance starts.
    let zombie_values = values("zombie", 4);
    producer.begin_transaction().await.expect("begin");
    send_all(&producer, "sdk-txn-a", &zombie_values).await;
    let successor = transactional(&client, "sdk-txn-1", version).await;
    let fenced = producer.commit_transaction().await.expect_err("fenced");
    assert!(
        matches!(
            fenced.kafka_code(),
            Some(PRODUCER_FENCED | INVALID_PRODUCER_EPOCH)
        ),
        "the old instance is fenced: {fenced}"
    );
    assert!(
        producer.begin_transaction().await.is_err(),
        "a fenced producer stays fenced"
    );
    let after = values("successor", 2);
    successor.begin_transaction().await.expect("begin");
    send_all(&successor, "sdk-txn-a", &after).await;
    successor.commit_transaction().await.expect("commit");

    let committed_a = set(&[&a1, &a3, &after]);
    let everything_a = set(&[&a1, &aborted, &a3, &zombie_values, &after]);
    assert_eq!(read_all(&client, "sdk-txn-a", true).await, committed_a);
    assert_eq!(read_all(&client, "sdk-txn-a", false).await, everything_a);
    assert_eq!(read_all(&client, "sdk-txn-b", true).await, set(&[&b1]));
    assert_eq!(
        read_with_librdkafka(&broker, "sdk-txn-a", "read_committed"),
        committed_a
    );
    assert_eq!(
        read_with_librdkafka(&broker, "sdk-txn-b", "read_committed"),
        set(&[&b1])
    );
    assert_eq!(
        read_with_librdkafka(&broker, "sdk-txn-b", "read_uncommitted"),
        set(&[&b1, &aborted])
    );
}

/// Polls `consumer` until it has read `count` records (bounded).
pub async fn poll_records(consumer: &mut GroupConsumer, count: usize) -> Vec<String> {
    let mut read = Vec::new();
    let started = Instant::now();
    for _ in 0..600 {
        if read.len() >= count {
            return read;
        }
        assert!(
            started.elapsed() < WAIT,
            "{count} records not polled in time"
        );
        for record in consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll")
        {
            read.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    panic!("{count} records not polled in 600 polls");
}

fn positions(consumer: &GroupConsumer) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
    consumer
        .assignment()
        .into_iter()
        .filter_map(|tp| {
            let position = consumer.position(&tp)?;
            Some((tp, OffsetAndMetadata::new(position)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_consume_transform_produce_moves_group_offsets_only_on_commit_version_1() {
    consume_transform_produce(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_consume_transform_produce_moves_group_offsets_only_on_commit_version_2() {
    consume_transform_produce(2).await;
}

async fn consume_transform_produce(version: u8) {
    let broker = start_broker();
    let client = connect(&broker).await;
    for topic in ["sdk-eos-in", "sdk-eos-out"] {
        create_topic(&client, NewTopic::new(topic, PARTITIONS, 1)).await;
    }
    let plain = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let input = values("in", 20);
    let mut deliveries = Vec::new();
    for (i, value) in input.iter().enumerate() {
        let record = ProducerRecord::new("sdk-eos-in", value.clone()).with_partition(i as i32 % 2);
        deliveries.push(plain.send(record).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("acknowledged");
    }

    let group = "sdk-eos-group";
    let mut consumer = GroupConsumer::new(
        client.clone(),
        GroupConfig {
            enable_auto_commit: false,
            consumer: ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                fetch_max_wait: Duration::from_millis(50),
                ..ConsumerConfig::default()
            },
            ..GroupConfig::new(group)
        },
    )
    .expect("group consumer");
    consumer.subscribe(["sdk-eos-in"]);
    let read = poll_records(&mut consumer, input.len()).await;
    assert_eq!(read.len(), input.len());
    let offsets = positions(&consumer);
    assert_eq!(offsets.values().map(|o| o.offset).sum::<i64>(), 20);
    let metadata = consumer.group_metadata();
    assert!(metadata.generation_id > 0 && !metadata.member_id.is_empty());

    let copier = transactional(&client, "sdk-eos-copier", version).await;
    let admin = Admin::new(client.clone());
    let copies: Vec<String> = read.iter().map(|v| format!("copy-{v}")).collect();

    // Aborted: neither the copies nor the offsets count.
    copier.begin_transaction().await.expect("begin");
    send_all(&copier, "sdk-eos-out", &copies).await;
    copier
        .send_offsets_to_transaction(&offsets, &metadata)
        .await
        .expect("offsets join the transaction");
    copier.abort_transaction().await.expect("abort");
    let after_abort = admin.list_group_offsets(group).await.expect("offsets");
    assert!(
        after_abort.is_empty(),
        "an aborted transaction commits no offsets: {after_abort:?}"
    );

    copier.begin_transaction().await.expect("begin");
    send_all(&copier, "sdk-eos-out", &copies).await;
    copier
        .send_offsets_to_transaction(&offsets, &metadata)
        .await
        .expect("offsets join the transaction");
    // Pending until the commit: a plain fetch of the group's offsets does not see them yet.
    assert!(admin
        .list_group_offsets(group)
        .await
        .expect("offsets")
        .is_empty());
    copier.commit_transaction().await.expect("commit");

    let committed = admin.list_group_offsets(group).await.expect("offsets");
    let committed: BTreeMap<TopicPartition, i64> = committed
        .into_iter()
        .map(|(tp, o)| (tp, o.offset))
        .collect();
    let expected: BTreeMap<TopicPartition, i64> = offsets
        .iter()
        .map(|(tp, o)| (tp.clone(), o.offset))
        .collect();
    assert_eq!(committed, expected);
    let out: BTreeSet<String> = copies.iter().cloned().collect();
    assert_eq!(read_all(&client, "sdk-eos-out", true).await, out);
    assert_eq!(
        read_with_librdkafka(&broker, "sdk-eos-out", "read_committed"),
        out
    );

    // A stale generation's offsets are refused: the member left, so its generation is gone.
    consumer.close().await.expect("leave");
    copier.begin_transaction().await.expect("begin");
    let stale = copier
        .send_offsets_to_transaction(&offsets, &metadata)
        .await
        .expect_err("a left member's generation is refused");
    assert!(stale.kafka_code().is_some(), "a Kafka error: {stale}");
    copier.abort_transaction().await.expect("abort");
}
