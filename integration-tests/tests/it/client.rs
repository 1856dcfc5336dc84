//! The Rust SDK (`streambus-client`) against real broker processes: records round-trip byte for
//! byte under every compression, keys land where the Java partitioner (and librdkafka's
//! Java-compatible one) puts them, `buffer_memory` pushes back on `send` while the broker is
//! frozen, idempotent acks=all ordering survives the partition leader freezing then dying
//! (retries and a metadata refresh), the consumer's seeks, position and lag are right, and acks 0
//! and 1 work.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::FetchRequest;
use streambus_client::admin::NewTopic;
use streambus_client::partitioner::partition_for_key;
use streambus_client::{
    Acks, Admin, Client, ClientConfig, Compression, Consumer, ConsumerConfig, ConsumerRecord,
    DeliveryFuture, Error, Header, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    RecordMetadata, TopicPartition,
};
use streambus_integration_tests::cluster::{Cluster, PartitionView, FAST_FAILOVER};
use streambus_integration_tests::kafka::topic_name;
use streambus_integration_tests::{run_with_timeout, BrokerProcess, DevBroker, KafkaConn};
use tokio::task::block_in_place;

/// Bound on every wait for the cluster or the client (topic ready, records read, deliveries).
const WAIT: Duration = Duration::from_secs(60);
/// Bound on the number of polls of one read loop (each poll waits at most `POLL`).
const MAX_POLLS: usize = 2_000;
const POLL: Duration = Duration::from_millis(200);

async fn connect(bootstrap: &str) -> Client {
    Client::connect(ClientConfig::new(bootstrap))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {bootstrap}: {e}"))
}

/// Creates `topic` with the admin client and waits until the client's metadata shows each of
/// its partitions with a leader.
pub(crate) async fn create_topic(client: &Client, topic: NewTopic) {
    let name = topic.name.clone();
    let partitions = usize::try_from(topic.partitions).expect("explicit partition count");
    let results = Admin::new(client.clone())
        .create_topics(&[topic], false)
        .await
        .expect("CreateTopics");
    for (name, result) in results {
        result.unwrap_or_else(|e| panic!("creating {name}: {e}"));
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let metadata = client
            .refresh_metadata(std::slice::from_ref(&name), false)
            .await;
        let ready = metadata
            .as_ref()
            .ok()
            .and_then(|m| m.topics.get(&name))
            .is_some_and(|t| {
                t.partitions.len() == partitions && t.partitions.iter().all(|p| p.leader.is_some())
            });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not all {partitions} partitions led after {WAIT:?}: {metadata:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn consumer_config() -> ConsumerConfig {
    ConsumerConfig {
        fetch_max_wait: Duration::from_millis(100),
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    }
}

/// Polls until at least `count` records arrived; fails after `WAIT` or `MAX_POLLS` polls.
async fn read_at_least(consumer: &mut Consumer, count: usize) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + WAIT;
    let mut records = Vec::new();
    for _ in 0..MAX_POLLS {
        if records.len() >= count || Instant::now() >= deadline {
            break;
        }
        records.extend(consumer.poll(POLL).await.expect("poll"));
    }
    assert!(
        records.len() >= count,
        "read {} of {count} records within {WAIT:?}",
        records.len()
    );
    records
}

/// The records of the first poll that returns any (bounded like [`read_at_least`]).
async fn poll_some(consumer: &mut Consumer) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + WAIT;
    for _ in 0..MAX_POLLS {
        let records = consumer.poll(POLL).await.expect("poll");
        if !records.is_empty() {
            return records;
        }
        assert!(Instant::now() < deadline, "no record within {WAIT:?}");
    }
    panic!("no record in {MAX_POLLS} polls");
}

/// Awaits `futures` in order, all within `within`.
async fn await_all(
    futures: Vec<DeliveryFuture>,
    within: Duration,
) -> Vec<streambus_client::Result<RecordMetadata>> {
    tokio::time::timeout(within, async {
        let mut results = Vec::with_capacity(futures.len());
        for future in futures {
            results.push(future.await);
        }
        results
    })
    .await
    .unwrap_or_else(|_| panic!("deliveries not complete within {within:?}"))
}

fn offsets(records: &[ConsumerRecord]) -> Vec<i64> {
    records.iter().map(|r| r.offset).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Round trip under every compression.

const ROUND_TRIP_COUNT: usize = 300;
const ROUND_TRIP_PARTITIONS: i32 = 3;
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// Record `i`: keyed (a few keys repeat, one is empty), a value of 0 to ~700 bytes with every
/// byte value (some null, some empty), headers with binary and null values, an explicit
/// timestamp.
fn round_trip_record(topic: &str, i: usize) -> ProducerRecord {
    let len = (i * 37) % 700;
    let value: Vec<u8> = (0..len).map(|j| ((i * 7 + j / 3) % 256) as u8).collect();
    let binary: Vec<u8> = (0..i % 17).map(|j| (j * 13 + i * 5) as u8 ^ 0xa5).collect();
    let mut headers = vec![
        Header {
            key: "index".to_owned(),
            value: Some(Bytes::from(i.to_string())),
        },
        Header {
            key: "binary".to_owned(),
            value: Some(Bytes::from(binary)),
        },
    ];
    if i % 4 == 0 {
        headers.push(Header {
            key: "null".to_owned(),
            value: None,
        });
    }
    let mut record = ProducerRecord {
        topic: topic.to_owned(),
        partition: None,
        key: Some(Bytes::from(format!("key-{:03}", i % 37))),
        value: Some(Bytes::from(value)),
        headers,
        timestamp_ms: Some(BASE_TIMESTAMP + i as i64 * 10),
    };
    match i % 25 {
        5 => record.value = None,
        6 => record.value = Some(Bytes::new()),
        7 => record.key = Some(Bytes::new()),
        _ => {}
    }
    record
}

/// The compression codec (attribute bits 0-2) of every record batch of a partition, read raw.
fn batch_codecs(addr: SocketAddr, topic: &str, partition: i32) -> Vec<u8> {
    let request = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(16 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(16 << 20)])]);
    let mut conn = KafkaConn::connect(addr).expect("raw connection");
    let response = conn.send(&request, 12).expect("raw fetch");
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "raw fetch of {topic}-{partition}");
    let records = p.records.clone().unwrap_or_default();
    let mut codecs = Vec::new();
    let mut pos = 0;
    // Batch header: base offset (8), length (4), leader epoch (4), magic (1), crc (4),
    // attributes (2).
    while pos + 23 <= records.len() {
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4 bytes"));
        codecs.push(records[pos + 22] & 0x07);
        pos += 12 + usize::try_from(len).expect("positive batch length");
    }
    codecs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_byte_exact_under_every_compression() {
    let broker = DevBroker::start(&[]).unwrap();
    let client = connect(&broker.bootstrap()).await;
    let compressions = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
    for (name, compression) in compressions {
        let topic = format!("round-trip-{name}");
        create_topic(&client, NewTopic::new(&topic, ROUND_TRIP_PARTITIONS, 1)).await;
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                compression,
                linger: Duration::from_millis(20),
                // Small batches: several of a partition are in flight at once.
                batch_size: 8 * 1024,
                ..ProducerConfig::default()
            },
        )
        .await
        .expect("producer");
        let mut sent = Vec::with_capacity(ROUND_TRIP_COUNT);
        let mut futures = Vec::with_capacity(ROUND_TRIP_COUNT);
        for i in 0..ROUND_TRIP_COUNT {
            let record = round_trip_record(&topic, i);
            futures.push(producer.send(record.clone()).await.expect("send"));
            sent.push(record);
            // Several batches per partition: offsets must run on across them.
            if i % 100 == 99 {
                producer.flush().await;
            }
        }
        producer.flush().await;
        let acked = await_all(futures, WAIT).await;

        // Where each record went, by (partition, offset).
        let mut at: BTreeMap<(i32, i64), usize> = BTreeMap::new();
        for (i, result) in acked.into_iter().enumerate() {
            let metadata = result.unwrap_or_else(|e| panic!("{name}: record {i} failed: {e}"));
            let key = sent[i].key.as_ref().expect("keyed");
            assert_eq!(metadata.topic, topic);
            assert_eq!(
                metadata.partition,
                partition_for_key(key, ROUND_TRIP_PARTITIONS),
                "{name}: record {i}"
            );
            assert_eq!(metadata.timestamp_ms, sent[i].timestamp_ms.unwrap());
            let previous = at.insert((metadata.partition, metadata.offset), i);
            assert_eq!(previous, None, "{name}: two records acked at {metadata:?}");
        }
        for partition in 0..ROUND_TRIP_PARTITIONS {
            let acked_offsets: Vec<i64> = at
                .keys()
                .filter(|(p, _)| *p == partition)
                .map(|(_, o)| *o)
                .collect();
            let expected: Vec<i64> = (0..acked_offsets.len() as i64).collect();
            assert_eq!(
                acked_offsets, expected,
                "{name}: acked offsets of partition {partition}"
            );
        }

        let mut consumer = Consumer::new(client.clone(), consumer_config());
        consumer.assign_topic(&topic).await.expect("assign");
        let records = read_at_least(&mut consumer, ROUND_TRIP_COUNT).await;
        assert_eq!(
            records.len(),
            ROUND_TRIP_COUNT,
            "{name}: more records than sent"
        );
        let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for record in &records {
            per_partition
                .entry(record.partition)
                .or_default()
                .push(record.offset);
            let i = *at
                .get(&(record.partition, record.offset))
                .unwrap_or_else(|| {
                    panic!(
                        "{name}: read {}-{} which was not acked",
                        record.partition, record.offset
                    )
                });
            let expected = &sent[i];
            assert_eq!(record.topic, topic);
            assert_eq!(record.key, expected.key, "{name}: key of record {i}");
            assert_eq!(record.value, expected.value, "{name}: value of record {i}");
            assert_eq!(
                record.headers, expected.headers,
                "{name}: headers of record {i}"
            );
            assert_eq!(
                Some(record.timestamp_ms),
                expected.timestamp_ms,
                "{name}: timestamp of record {i}"
            );
            assert!(!record.log_append_time);
        }
        for (partition, read) in per_partition {
            let expected: Vec<i64> = (0..read.len() as i64).collect();
            assert_eq!(
                read, expected,
                "{name}: offsets read from partition {partition}"
            );
        }

        // The broker kept the producer's codec (compression.type=producer): the batches
        // really were compressed with it.
        for partition in 0..ROUND_TRIP_PARTITIONS {
            let codecs = block_in_place(|| batch_codecs(broker.kafka_addr, &topic, partition));
            // Several batches per partition: offsets ran on across batches.
            assert!(
                codecs.len() >= 4,
                "{name}: partition {partition} holds {} batches",
                codecs.len()
            );
            assert!(
                codecs.iter().all(|c| *c == compression as u8),
                "{name}: batch codecs {codecs:?} of partition {partition}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Key to partition, ours and librdkafka's.

const KEYED_PARTITIONS: i32 = 8;
const KEYED_COUNT: usize = 400;

/// The keys `python/keyed_produce.py` produces: the same function.
fn key_bytes(i: usize) -> Vec<u8> {
    if i == 0 {
        return Vec::new();
    }
    let text = format!("{i}:the-quick-brown-fox-jumps-over-the-lazy-dog").into_bytes();
    let prefix = format!("{i}:").len();
    text[..prefix.max(i % 41)].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_on_the_java_partitioner_partition_as_with_confluent_kafka() {
    let broker = DevBroker::start(&[]).unwrap();
    let client = connect(&broker.bootstrap()).await;

    // Ours: every acknowledged keyed record is in partition_for_key's partition.
    const OURS: &str = "keyed-ours";
    create_topic(&client, NewTopic::new(OURS, KEYED_PARTITIONS, 1)).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut keys: Vec<Vec<u8>> = (0..KEYED_COUNT).map(key_bytes).collect();
    // Binary keys too, with every byte value.
    keys.extend((0..64u8).map(|i| (0..=i).map(|j| j.wrapping_mul(97) ^ i).collect()));
    let mut futures = Vec::new();
    for key in &keys {
        let record = ProducerRecord::new(OURS, b"v".to_vec()).with_key(key.clone());
        futures.push(producer.send(record).await.expect("send"));
    }
    producer.flush().await;
    let mut used = std::collections::BTreeSet::new();
    for (key, result) in keys.iter().zip(await_all(futures, WAIT).await) {
        let metadata = result.expect("delivered");
        assert_eq!(
            metadata.partition,
            partition_for_key(key, KEYED_PARTITIONS),
            "key {key:?}"
        );
        used.insert(metadata.partition);
    }
    assert_eq!(
        used.len(),
        KEYED_PARTITIONS as usize,
        "keys spread over all partitions"
    );

    // confluent-kafka's murmur2_random partitioner writes the same keys where ours would.
    const THEIRS: &str = "keyed-confluent";
    create_topic(&client, NewTopic::new(THEIRS, KEYED_PARTITIONS, 1)).await;
    let script = streambus_integration_tests::manifest_dir().join("python/keyed_produce.py");
    let mut command = std::process::Command::new(streambus_integration_tests::python().unwrap());
    command
        .arg(script)
        .args([THEIRS, &KEYED_COUNT.to_string()])
        .env("STREAMBUS_BOOTSTRAP", broker.bootstrap());
    let output = block_in_place(|| run_with_timeout(command, Duration::from_secs(180)))
        .expect("keyed_produce.py runs");
    assert!(
        output.status.success(),
        "keyed_produce.py failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
    // What librdkafka reported for each key (hex).
    let mut reported: HashMap<String, i32> = HashMap::new();
    for line in output.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let json: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let key = json["key"].as_str().expect("key").to_owned();
        let partition = i32::try_from(json["partition"].as_i64().expect("partition")).unwrap();
        assert!(reported.insert(key, partition).is_none(), "{line}: twice");
    }
    assert_eq!(reported.len(), KEYED_COUNT);

    let mut consumer = Consumer::new(client.clone(), consumer_config());
    consumer.assign_topic(THEIRS).await.expect("assign");
    let records = read_at_least(&mut consumer, KEYED_COUNT).await;
    assert_eq!(records.len(), KEYED_COUNT);
    let mut mismatched = Vec::new();
    for record in &records {
        let key = record.key.clone().expect("keyed");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            reported.get(&hex),
            Some(&record.partition),
            "librdkafka reported key {key:?} elsewhere"
        );
        if record.partition != partition_for_key(&key, KEYED_PARTITIONS) {
            mismatched.push((key, record.partition));
        }
    }
    assert!(
        mismatched.is_empty(),
        "{} of {KEYED_COUNT} keys where partition_for_key disagrees with librdkafka: {:?}",
        mismatched.len(),
        &mismatched[..mismatched.len().min(5)]
    );
    let expected_keys: std::collections::BTreeSet<Vec<u8>> =
        (0..KEYED_COUNT).map(key_bytes).collect();
    let read_keys: std::collections::BTreeSet<Vec<u8>> = records
        .iter()
        .map(|r| r.key.clone().unwrap().to_vec())
        .collect();
    assert_eq!(read_keys, expected_keys);
}

// ---------------------------------------------------------------------------------------------
// 3. Backpressure.

/// Sends SIGCONT to a broker when dropped, so a failing test never leaves it frozen.
struct Resume<'a>(&'a BrokerProcess);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        let _ = self.0.signal("CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_blocks_then_fails_when_buffer_memory_is_full_and_recovers_when_the_broker_resumes() {
    const TOPIC: &str = "backpressure";
    const BUFFER: usize = 64 * 1024;
    const MAX_BLOCK: Duration = Duration::from_secs(1);
    // Key of 8 bytes + value + 24 bytes of record overhead: the producer's size estimate.
    const VALUE_LEN: usize = 4000;
    const RECORD_SIZE: usize = 8 + VALUE_LEN + 24;
    let record = |i: usize| {
        ProducerRecord::new(TOPIC, vec![(i % 251) as u8; VALUE_LEN])
            .with_key(format!("key-{i:04}"))
            .with_partition(0)
    };

    let broker = DevBroker::start(&[]).unwrap();
    let client = connect(&broker.bootstrap()).await;
    create_topic(&client, NewTopic::new(TOPIC, 1, 1)).await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            buffer_memory: BUFFER,
            max_request_size: 16 * 1024,
            batch_size: 16 * 1024,
            max_block: MAX_BLOCK,
            linger: Duration::from_millis(1),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    // One record through first: the leader's connection and the metadata are ready.
    let first = producer.send(record(0)).await.expect("send").await;
    assert_eq!(first.expect("first record").offset, 0);
    assert_eq!(producer.available_buffer_bytes(), BUFFER);

    let process = broker.process.as_ref().expect("broker running");
    process.signal("STOP").expect("SIGSTOP");
    let resume = Resume(process);
    let mut pending = Vec::new();
    let mut exhausted = None;
    for i in 1..=200 {
        let started = Instant::now();
        match producer.send(record(i)).await {
            Ok(delivery) => pending.push(delivery),
            Err(Error::BufferExhausted(after)) => {
                exhausted = Some((after, started.elapsed()));
                break;
            }
            Err(e) => panic!("send {i} failed with {e} rather than BufferExhausted"),
        }
    }
    let (after, waited) = exhausted.expect("200 sends of 4 KB to a frozen broker never blocked");
    assert_eq!(after, MAX_BLOCK);
    assert!(
        waited >= MAX_BLOCK - Duration::from_millis(50),
        "send gave up after {waited:?}, before max_block"
    );
    let available = producer.available_buffer_bytes();
    assert!(
        available < RECORD_SIZE,
        "{available} bytes free, room for another {RECORD_SIZE}-byte record"
    );
    // The producer's size estimate adds a small per-record overhead to key and value.
    assert!(
        (BUFFER / RECORD_SIZE - 1..=BUFFER / RECORD_SIZE).contains(&pending.len()),
        "{} records accepted before the buffer filled",
        pending.len()
    );

    drop(resume);
    let count = pending.len();
    let results = await_all(pending, WAIT).await;
    for (i, result) in results.into_iter().enumerate() {
        let metadata = result.unwrap_or_else(|e| panic!("record {} failed: {e}", i + 1));
        assert_eq!(metadata.offset, i as i64 + 1);
    }
    assert_eq!(producer.available_buffer_bytes(), BUFFER);
    let next = producer
        .send(record(count + 1))
        .await
        .expect("send after the broker resumed");
    let metadata = tokio::time::timeout(WAIT, next)
        .await
        .expect("delivered in time")
        .expect("delivered");
    assert_eq!(metadata.offset, count as i64 + 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Ordering through a leader kill.

fn full_isr(view: &PartitionView) -> bool {
    view.leader > 0 && view.isr.len() == view.replicas.len()
}

/// Waits until `counter` reaches `target` (bounded by `WAIT`).
async fn wait_count(counter: &AtomicU64, target: u64, what: &str) {
    let deadline = Instant::now() + WAIT;
    while counter.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "{what}: {counter:?} < {target}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_acks_all_keeps_order_through_a_leader_kill_and_follows_the_new_leader() {
    const TOPIC: &str = "ordered";
    const PARTITIONS: i32 = 2;
    const MAX_ROUNDS: u64 = 100_000;
    const BURST: u64 = 4;
    let mut cluster = block_in_place(|| Cluster::start(3, 3, FAST_FAILOVER)).expect("cluster");
    let client = connect(&cluster.bootstrap()).await;
    create_topic(
        &client,
        NewTopic::new(TOPIC, PARTITIONS, 3).with_config("min.insync.replicas", "2"),
    )
    .await;
    for partition in 0..PARTITIONS {
        block_in_place(|| cluster.wait_for(TOPIC, partition, WAIT, "the full ISR", full_isr))
            .unwrap();
    }
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            enable_idempotence: true,
            delivery_timeout: Duration::from_secs(90),
            linger: Duration::from_millis(5),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");

    // Every 5 ms, a burst of records per partition, each with its partition's counter as its
    // value: several multi-record batches per partition are in flight when the leader dies.
    // Each delivery is awaited by its own task, which notes when it completed.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn({
        let (stop, rounds, producer) = (Arc::clone(&stop), Arc::clone(&rounds), producer.clone());
        async move {
            let mut deliveries = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for round in 0..MAX_ROUNDS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tick.tick().await;
                for partition in 0..PARTITIONS {
                    for k in 0..BURST {
                        let n = round * BURST + k;
                        let record = ProducerRecord::new(TOPIC, format!("{n:010}"))
                            .with_partition(partition);
                        let sent_at = Instant::now();
                        let delivery = producer.send(record).await.expect("send");
                        deliveries.push(tokio::spawn(async move {
                            (partition, n, sent_at, delivery.await, Instant::now())
                        }));
                    }
                }
                rounds.store(round + 1, Ordering::Relaxed);
            }
            deliveries
        }
    });

    wait_count(&rounds, 200, "rounds before the kill").await;
    let (view, _) = block_in_place(|| cluster.describe(TOPIC, 0)).expect("describe");
    let victim = view.leader;
    assert!(victim > 0, "partition 0 has no leader: {view:?}");
    // The leader freezes, then dies. Records sent while it is frozen cannot be acknowledged
    // before it dies: they are in flight or queued at the kill, and must be retried to the
    // new leader.
    block_in_place(|| cluster.signal(victim, "STOP")).expect("SIGSTOP");
    let stopped_at = Instant::now();
    let at_stop = rounds.load(Ordering::Relaxed);
    wait_count(&rounds, at_stop + 2, "rounds while the leader is frozen").await;
    let killed_at = Instant::now();
    block_in_place(|| cluster.kill(victim));
    let moved = block_in_place(|| {
        cluster.wait_for(TOPIC, 0, WAIT, "a new leader", |v| {
            v.leader > 0 && v.leader != victim
        })
    })
    .unwrap();
    let failover = killed_at.elapsed();
    // Keep sending for a while under the new leader.
    let at_move = rounds.load(Ordering::Relaxed);
    wait_count(&rounds, at_move + 300, "rounds after the kill").await;
    stop.store(true, Ordering::Relaxed);
    let deliveries = tokio::time::timeout(WAIT, sender)
        .await
        .expect("sender stops")
        .expect("sender task");

    // Every record acknowledged (the leader's death only delayed some).
    let total = deliveries.len();
    let outcomes = tokio::time::timeout(Duration::from_secs(120), async {
        let mut out = Vec::with_capacity(total);
        for delivery in deliveries {
            out.push(delivery.await.expect("delivery task"));
        }
        out
    })
    .await
    .expect("every delivery completes within 120 s");
    let mut acked: BTreeMap<i32, BTreeMap<i64, u64>> = BTreeMap::new();
    // Partition 0 records sent while the leader was frozen, and the longest wait of one.
    let (mut frozen, mut stuck) = (0, Duration::ZERO);
    for (partition, n, sent_at, outcome, done_at) in outcomes {
        let metadata = outcome.unwrap_or_else(|e| {
            panic!(
                "record {n} of partition {partition} failed: {e}\n{}",
                cluster.logs_tail(30)
            )
        });
        assert_eq!(metadata.partition, partition);
        if partition == 0 && (stopped_at..=killed_at).contains(&sent_at) {
            frozen += 1;
            stuck = stuck.max(done_at.saturating_duration_since(killed_at));
        }
        let previous = acked
            .entry(partition)
            .or_default()
            .insert(metadata.offset, n);
        assert_eq!(previous, None, "two records acked at {metadata:?}");
    }
    assert!(
        frozen > 0,
        "no partition 0 record was sent while the leader was frozen"
    );
    // Per partition, acknowledgement offsets follow send order.
    for (partition, by_offset) in &acked {
        let sent: Vec<u64> = by_offset.values().copied().collect();
        assert!(
            sent.windows(2).all(|w| w[0] < w[1]),
            "partition {partition}: acked offsets out of send order"
        );
    }

    // The producer learned the new leader.
    let leader = client.metadata().leader(TOPIC, 0);
    assert!(
        leader.is_some_and(|l| l != victim),
        "the producer's metadata still names {leader:?} (victim {victim}, new leader {})",
        moved.leader
    );

    // Read back from the survivors: per partition, exactly the acknowledged records at their
    // offsets, in send order, no duplicates.
    let survivors: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| m.id != victim)
        .map(|m| m.kafka_addr.to_string())
        .collect();
    let reader = connect(&survivors.join(",")).await;
    let mut consumer = Consumer::new(reader, consumer_config());
    consumer.assign_topic(TOPIC).await.expect("assign");
    let records = read_at_least(&mut consumer, total).await;
    assert_eq!(records.len(), total, "more records than acknowledged");
    let mut read: BTreeMap<i32, BTreeMap<i64, u64>> = BTreeMap::new();
    for record in &records {
        let value = record.value.as_ref().expect("a value");
        let n: u64 = std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected value {value:?}"));
        read.entry(record.partition)
            .or_default()
            .insert(record.offset, n);
    }
    for partition in 0..PARTITIONS {
        let read = read.remove(&partition).unwrap_or_default();
        let values: Vec<u64> = read.values().copied().collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "partition {partition}: values out of order or duplicated"
        );
        let offsets: Vec<i64> = read.keys().copied().collect();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, expected, "partition {partition}: offsets");
        assert_eq!(
            Some(&read),
            acked.get(&partition),
            "partition {partition}: the log is not exactly the acknowledged records"
        );
    }
    println!(
        "{total} records, victim {victim}, new leader {} after {failover:?}, producer sees \
         {leader:?}; {frozen} records sent to the frozen leader, the last delivered {stuck:?} \
         after the kill",
        moved.leader
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Consumer positioning.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeks_position_and_lag() {
    const TOPIC: &str = "positions";
    let broker = DevBroker::start(&[]).unwrap();
    let client = connect(&broker.bootstrap()).await;
    create_topic(&client, NewTopic::new(TOPIC, 1, 1)).await;
    // A long linger: the ten records go as one compressed batch, at the flush, so seeks
    // land inside a batch.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger: Duration::from_secs(5),
            compression: Compression::Lz4,
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    let produce = |range: std::ops::Range<i64>| {
        let producer = producer.clone();
        async move {
            let mut futures = Vec::new();
            for i in range {
                let record = ProducerRecord::new(TOPIC, format!("v{i}"))
                    .with_partition(0)
                    .with_timestamp_ms((i + 1) * 1000);
                futures.push(producer.send(record).await.expect("send"));
            }
            producer.flush().await;
            await_all(futures, WAIT)
                .await
                .into_iter()
                .map(|r| r.expect("delivered").offset)
                .collect::<Vec<i64>>()
        }
    };
    // Offsets 0..10 with timestamps 1000, 2000, ..., 10000.
    assert_eq!(produce(0..10).await, (0..10).collect::<Vec<_>>());

    let tp = TopicPartition::new(TOPIC, 0);
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            max_poll_records: 3,
            fetch_max_wait: Duration::from_millis(100),
            auto_offset_reset: OffsetReset::Latest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign([tp.clone()]);
    assert_eq!(consumer.position(&tp), None, "unresolved before a poll");
    assert_eq!(consumer.lag(&tp), None);

    // To an offset.
    consumer.seek(&tp, 4).unwrap();
    assert_eq!(consumer.position(&tp), Some(4));
    let records = poll_some(&mut consumer).await;
    assert_eq!(offsets(&records), [4, 5, 6]);
    assert_eq!(records[0].value.as_deref(), Some(&b"v4"[..]));
    assert_eq!(records[0].timestamp_ms, 5000);
    assert_eq!(consumer.position(&tp), Some(7));
    assert_eq!(consumer.lag(&tp), Some(3));
    let records = poll_some(&mut consumer).await;
    assert_eq!(offsets(&records), [7, 8, 9]);
    assert_eq!(consumer.position(&tp), Some(10));
    assert_eq!(consumer.lag(&tp), Some(0));

    // To the beginning.
    consumer.seek_to_beginning(&tp).unwrap();
    assert_eq!(consumer.position(&tp), None, "resolved by the next poll");
    let records = poll_some(&mut consumer).await;
    assert_eq!(offsets(&records), [0, 1, 2]);
    assert_eq!(consumer.position(&tp), Some(3));
    assert_eq!(consumer.lag(&tp), Some(7));

    // To timestamps: between records, exactly on one, past the last.
    consumer.seek_to_timestamp(&tp, 3500).unwrap();
    let records = poll_some(&mut consumer).await;
    assert_eq!(offsets(&records), [3, 4, 5]);
    let timestamps: Vec<i64> = records.iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(timestamps, [4000, 5000, 6000]);
    assert_eq!(consumer.position(&tp), Some(6));
    assert_eq!(consumer.lag(&tp), Some(4));
    consumer.seek_to_timestamp(&tp, 8000).unwrap();
    let records = poll_some(&mut consumer).await;
    assert_eq!(offsets(&records), [7, 8, 9]);
    consumer.seek_to_timestamp(&tp, 10_001).unwrap();
    let records = consumer.poll(POLL).await.expect("poll");
    assert!(records.is_empty(), "nothing at or after 10001: {records:?}");
    assert_eq!(consumer.position(&tp), Some(10), "past the last: the end");

    // To the end, then new records arrive.
    consumer.seek_to_end(&tp).unwrap();
    let records = consumer.poll(POLL).await.expect("poll");
    assert!(records.is_empty(), "nothing after the end yet: {records:?}");
    assert_eq!(consumer.position(&tp), Some(10));
    assert_eq!(consumer.lag(&tp), Some(0));
    assert_eq!(produce(10..12).await, [10, 11]);
    let records = read_at_least(&mut consumer, 2).await;
    assert_eq!(offsets(&records), [10, 11]);
    assert_eq!(records[0].value.as_deref(), Some(&b"v10"[..]));
    assert_eq!(records[1].timestamp_ms, 12_000);
    assert_eq!(consumer.position(&tp), Some(12));
    assert_eq!(consumer.lag(&tp), Some(0));
}

// ---------------------------------------------------------------------------------------------
// 6. acks=0 and acks=1.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_and_one_produce_readable_records() {
    const TOPIC: &str = "acks";
    const COUNT: usize = 50;
    let broker = DevBroker::start(&[]).unwrap();
    let client = connect(&broker.bootstrap()).await;
    create_topic(&client, NewTopic::new(TOPIC, 1, 1)).await;
    let mut consumer = Consumer::new(client.clone(), consumer_config());
    consumer.assign([TopicPartition::new(TOPIC, 0)]);

    for (acks, label) in [(Acks::None, "acks0"), (Acks::Leader, "acks1")] {
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                acks,
                ..ProducerConfig::default()
            },
        )
        .await
        .expect("producer");
        let values: Vec<String> = (0..COUNT).map(|i| format!("{label}-{i}")).collect();
        let mut futures = Vec::new();
        for value in &values {
            let record = ProducerRecord::new(TOPIC, value.clone())
                .with_partition(0)
                .with_timestamp_ms(42_000);
            futures.push(producer.send(record).await.expect("send"));
        }
        producer.flush().await;
        let metadata: Vec<RecordMetadata> = await_all(futures, WAIT)
            .await
            .into_iter()
            .map(|r| r.expect("delivered"))
            .collect();
        // Records of the first round are at 0..50, of the second at 50..100.
        let base = if acks == Acks::None { 0 } else { COUNT as i64 };
        for (i, m) in metadata.iter().enumerate() {
            let expected = if acks == Acks::None {
                -1
            } else {
                base + i as i64
            };
            assert_eq!(m.offset, expected, "{label}: record {i}");
            assert_eq!((m.partition, m.timestamp_ms), (0, 42_000));
        }
        let records = read_at_least(&mut consumer, COUNT).await;
        assert_eq!(records.len(), COUNT, "{label}: more records than sent");
        let read: Vec<&[u8]> = records
            .iter()
            .map(|r| r.value.as_deref().expect("a value"))
            .collect();
        let sent: Vec<&[u8]> = values.iter().map(String::as_bytes).collect();
        assert_eq!(read, sent, "{label}: values");
        let expected: Vec<i64> = (base..base + COUNT as i64).collect();
        assert_eq!(offsets(&records), expected, "{label}: offsets");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_large_for_the_topic_is_split_until_it_fits() {
    const TOPIC: &str = "small-messages";
    const COUNT: usize = 300;
    let broker = DevBroker::start(&[]).unwrap();
    let client = connect(&broker.bootstrap()).await;
    // 20 kB per batch at most: the producer's 512 KiB batches of 1 kB records are refused
    // (MESSAGE_TOO_LARGE) until halved four times.
    create_topic(
        &client,
        NewTopic::new(TOPIC, 1, 1).with_config("max.message.bytes", "20000"),
    )
    .await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger: Duration::from_millis(200),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    let mut pending = Vec::new();
    for i in 0..COUNT {
        let value = format!("{i:04}").repeat(250);
        let record = ProducerRecord::new(TOPIC, value).with_partition(0);
        pending.push(producer.send(record).await.expect("send"));
    }
    let results = await_all(pending, WAIT).await;
    for (i, result) in results.into_iter().enumerate() {
        let metadata = result.unwrap_or_else(|e| panic!("record {i} failed: {e}"));
        assert_eq!(metadata.offset, i as i64, "in order, once each");
    }
    let mut consumer = Consumer::new(client, consumer_config());
    consumer.assign([TopicPartition::new(TOPIC, 0)]);
    let records = read_at_least(&mut consumer, COUNT).await;
    assert_eq!(offsets(&records), (0..COUNT as i64).collect::<Vec<_>>());
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record.value.as_deref(),
            Some(format!("{i:04}").repeat(250).as_bytes())
        );
    }
    // Several batches in the log, none over the limit.
    let batches = batch_codecs(broker.kafka_addr, TOPIC, 0);
    assert!(batches.len() >= 16, "{} batches", batches.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_the_topic_fails_alone() {
    let broker = DevBroker::start(&[]).unwrap();
    let client = connect(&broker.bootstrap()).await;
    // First record: the broker does not know the producer yet and accepts whatever sequence
    // comes next. Twentieth: it does, and refuses the batches behind for the gap.
    for big in [0usize, 20] {
        let topic = format!("one-too-large-{big}");
        create_topic(
            &client,
            NewTopic::new(&topic, 1, 1).with_config("max.message.bytes", "20000"),
        )
        .await;
        // Small batches, so that the records around the big one travel in their own batches,
        // several in flight at once.
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                batch_size: 4_000,
                linger: Duration::from_millis(20),
                ..ProducerConfig::default()
            },
        )
        .await
        .expect("producer");
        let mut pending = Vec::new();
        for i in 0..60 {
            let value = if i == big {
                vec![b'x'; 30_000]
            } else {
                format!("record-{i:03}").repeat(50).into_bytes()
            };
            let record = ProducerRecord::new(&topic, value).with_partition(0);
            pending.push(producer.send(record).await.expect("send"));
        }
        // A few more after everything settled: their sequences must still fit.
        let results = await_all(pending, WAIT).await;
        let mut pending = Vec::new();
        for i in 60..70 {
            let value = format!("record-{i:03}").repeat(50).into_bytes();
            let record = ProducerRecord::new(&topic, value).with_partition(0);
            pending.push(producer.send(record).await.expect("send"));
        }
        let results: Vec<_> = results
            .into_iter()
            .chain(await_all(pending, WAIT).await)
            .collect();
        let mut next = 0;
        for (i, result) in results.into_iter().enumerate() {
            if i == big {
                let error = result.expect_err("a 30 kB record in a 20 kB topic");
                assert_eq!(error.kafka_code(), Some(10), "MESSAGE_TOO_LARGE: {error}");
                continue;
            }
            let metadata = result.unwrap_or_else(|e| panic!("{topic}: record {i} failed with {e}"));
            assert_eq!(metadata.offset, next, "{topic}: record {i}");
            next += 1;
        }
        let mut consumer = Consumer::new(client.clone(), consumer_config());
        consumer.assign([TopicPartition::new(&topic, 0)]);
        let records = read_at_least(&mut consumer, 69).await;
        assert_eq!(records.len(), 69, "{topic}");
        for (record, i) in records.iter().zip((0..70).filter(|i| *i != big)) {
            let expected = format!("record-{i:03}").repeat(50);
            assert_eq!(
                record.value.as_deref(),
                Some(expected.as_bytes()),
                "{topic}: record {i}"
            );
        }
    }
}
