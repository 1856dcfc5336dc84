//! The Kafka listener against our own raw client: produce/fetch round trips, offsets, topic
//! admin, idempotent producers, restarts, and malformed input that must close one connection
//! without hurting anyone else.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, FetchRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};
use streambus_integration_tests::{DevBroker, KafkaConn};
use streambus_storage::batch::testing::{batch_values, Producer};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn create_topic(conn: &mut KafkaConn, topic: &str, partitions: i32) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(10_000);
    let response = conn.send(&request, 7).expect("create topics");
    assert_eq!(response.topics[0].error_code, 0, "{:?}", response.topics[0]);
}

/// One v2 batch of `values`, record `i` at timestamp `1000 + i`, optionally idempotent
/// (`(producer id, epoch, base sequence)`).
fn batch(values: &[&[u8]], producer: Option<(i64, i16, i32)>, compression: Compression) -> Bytes {
    let producer = producer.map_or(Producer::NONE, |(id, epoch, base_sequence)| {
        Producer::idempotent(id, epoch, base_sequence)
    });
    batch_values(values, 1_000, producer, compression)
}

fn produce(
    conn: &mut KafkaConn,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> ProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    conn.send(&request, 9).expect("produce")
}

fn produce_result(conn: &mut KafkaConn, topic: &str, records: Bytes) -> (i16, i64) {
    let response = produce(conn, topic, 0, records, -1);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Every record of partition 0 from `offset`, decoded.
fn fetch_all(conn: &mut KafkaConn, topic: &str, offset: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut next = offset;
    for _ in 0..1000 {
        let request = FetchRequest::default()
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(next)
                    .with_partition_max_bytes(1 << 20)])]);
        let response = conn.send(&request, 12).expect("fetch");
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch error");
        let mut records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            break;
        }
        for set in RecordBatchDecoder::decode_all(&mut records).expect("decode") {
            for record in set.records {
                next = record.offset + 1;
                out.push(record);
            }
        }
        if next >= p.high_watermark {
            break;
        }
    }
    out
}

#[test]
fn produce_fetch_and_list_offsets_round_trip_with_every_codec() {
    let broker = DevBroker::start(&[]).unwrap();
    let mut conn = broker.connect().unwrap();
    let versions: ApiVersionsResponse = conn.send(&ApiVersionsRequest::default(), 3).unwrap();
    assert_eq!(versions.error_code, 0);
    assert!(versions
        .api_keys
        .iter()
        .any(|k| k.api_key == 0 && k.max_version == 12));
    // Features only from v4 (older librdkafka cannot skip them); transaction.version 2 is
    // finalized by default (KIP-890 part 2).
    assert!(versions.supported_features.is_empty() && versions.finalized_features.is_empty());
    let v4: ApiVersionsResponse = conn.send(&ApiVersionsRequest::default(), 4).unwrap();
    let finalized: Vec<(String, i16, i16)> = v4
        .finalized_features
        .iter()
        .map(|f| (f.name.to_string(), f.min_version_level, f.max_version_level))
        .collect();
    assert_eq!(finalized, vec![("transaction.version".to_owned(), 2, 2)]);
    assert!(v4.finalized_features_epoch >= 0);
    assert_eq!(v4.supported_features[0].max_version, 2);
    create_topic(&mut conn, "codecs", 1);
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for (round, codec) in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let values: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("{round}-{i}-{}", "x".repeat(i * 7)).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let (error, base) = produce_result(&mut conn, "codecs", batch(&refs, None, codec));
        assert_eq!(error, 0, "{codec:?}");
        assert_eq!(base, expected.len() as i64, "offsets are contiguous");
        expected.extend(values);
    }
    let records = fetch_all(&mut conn, "codecs", 0);
    let got: Vec<Vec<u8>> = records
        .iter()
        .map(|r| r.value.clone().unwrap().to_vec())
        .collect();
    assert_eq!(got, expected);
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, r)| r.offset == i as i64));

    let list = |conn: &mut KafkaConn, timestamp: i64| {
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("codecs"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp)])]);
        let response = conn.send(&request, 7).unwrap();
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        p.offset
    };
    assert_eq!(list(&mut conn, -2), 0);
    assert_eq!(list(&mut conn, -1), expected.len() as i64);
    // Timestamps are 1000 + index within each batch: 1049 is first reached at offset 49.
    assert_eq!(list(&mut conn, 1_049), 49);
    assert_eq!(list(&mut conn, 5_000), -1);
}

#[test]
fn idempotent_producer_retries_gaps_and_stale_epochs() {
    let broker = DevBroker::start(&[]).unwrap();
    let mut conn = broker.connect().unwrap();
    create_topic(&mut conn, "idem", 1);
    let init = conn
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
            4,
        )
        .unwrap();
    assert_eq!(init.error_code, 0, "{}", broker.log_text());
    let pid = init.producer_id.0;
    assert!(pid >= 0);
    let first = batch(&[b"a", b"b"], Some((pid, 0, 0)), Compression::None);
    assert_eq!(produce_result(&mut conn, "idem", first.clone()), (0, 0));
    // A retry of the same batch answers its original offset and writes nothing.
    assert_eq!(produce_result(&mut conn, "idem", first), (0, 0));
    let gap = batch(&[b"c"], Some((pid, 0, 5)), Compression::None);
    assert_eq!(
        produce_result(&mut conn, "idem", gap).0,
        ResponseError::OutOfOrderSequenceNumber.code()
    );
    let next = batch(&[b"c"], Some((pid, 1, 0)), Compression::None);
    assert_eq!(produce_result(&mut conn, "idem", next), (0, 2));
    let stale = batch(&[b"d"], Some((pid, 0, 2)), Compression::None);
    assert_eq!(
        produce_result(&mut conn, "idem", stale).0,
        ResponseError::InvalidProducerEpoch.code()
    );
    assert_eq!(fetch_all(&mut conn, "idem", 0).len(), 3);
    let second = conn
        .send(
            &InitProducerIdRequest::default().with_transactional_id(None),
            4,
        )
        .unwrap();
    assert_ne!(second.producer_id.0, pid, "producer ids are never reused");
}

#[test]
fn produce_errors_are_precise_and_acks_zero_is_silent() {
    let broker = DevBroker::start(&["--set", "log.max_message_bytes=2000"]).unwrap();
    let mut conn = broker.connect().unwrap();
    create_topic(&mut conn, "errs", 1);
    let big = vec![7u8; 5000];
    let (error, _) = produce_result(&mut conn, "errs", batch(&[&big], None, Compression::None));
    assert_eq!(error, ResponseError::MessageTooLarge.code());
    let response = produce(
        &mut conn,
        "errs",
        0,
        batch(&[b"x"], None, Compression::None),
        5,
    );
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidRequiredAcks.code()
    );
    let response = produce(
        &mut conn,
        "errs",
        9,
        batch(&[b"x"], None, Compression::None),
        1,
    );
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let mut corrupt = BytesMut::from(&batch(&[b"x"], None, Compression::None)[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let (error, _) = produce_result(&mut conn, "errs", corrupt.freeze());
    assert_eq!(error, ResponseError::CorruptMessage.code());
    // acks=0: no response; the next request's answer is the next frame.
    let request = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("errs"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(&[b"q"], None, Compression::None)))])]);
    conn.send_only(&request, 9).unwrap();
    let metadata = conn
        .send(&MetadataRequest::default().with_topics(None), 12)
        .unwrap();
    assert!(metadata
        .topics
        .iter()
        .any(|t| t.name.as_ref().map(|n| n.as_str()) == Some("errs")));
    assert_eq!(fetch_all(&mut conn, "errs", 0).len(), 1);
}

#[test]
fn acknowledged_records_survive_a_restart() {
    let mut broker = DevBroker::start(&[]).unwrap();
    let mut conn = broker.connect().unwrap();
    create_topic(&mut conn, "durable", 1);
    for i in 0..20 {
        let value = format!("v{i}");
        let (error, base) = produce_result(
            &mut conn,
            "durable",
            batch(&[value.as_bytes()], None, Compression::None),
        );
        assert_eq!((error, base), (0, i));
    }
    broker.restart().unwrap();
    let mut conn = broker.connect().unwrap();
    let records = fetch_all(&mut conn, "durable", 0);
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(
        values,
        (0..20).map(|i| format!("v{i}")).collect::<Vec<_>>(),
        "{}",
        broker.log_text()
    );
    assert!(broker.log_text().contains("broker started"));
}

#[test]
fn malformed_input_closes_only_the_offending_connection() {
    let broker = DevBroker::start(&["--set", "socket_request_max_bytes=1048576"]).unwrap();
    let mut healthy = broker.connect().unwrap();
    create_topic(&mut healthy, "survivor", 1);

    // Garbage: an unknown api key.
    let mut conn = broker.connect().unwrap();
    conn.write_frame(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0xde, 0xad])
        .unwrap();
    assert!(conn.is_closed_by_peer(), "unknown api key");

    // A 2 GiB declared length: refused before anything is allocated.
    let mut conn = broker.connect().unwrap();
    conn.write_raw(&0x7fff_ffffi32.to_be_bytes()).unwrap();
    conn.write_raw(&[0u8; 64]).unwrap();
    assert!(conn.is_closed_by_peer(), "2 GiB length");

    // A truncated frame: the length promises more than ever arrives, then the client leaves.
    let mut conn = broker.connect().unwrap();
    conn.write_raw(&100i32.to_be_bytes()).unwrap();
    conn.write_raw(&[0, 3, 0, 12]).unwrap();
    drop(conn);

    // A body that does not decode.
    let mut conn = broker.connect().unwrap();
    conn.write_frame(&[0, 3, 0, 12, 0, 0, 0, 9, 0xff, 0xff, 0xff])
        .unwrap();
    assert!(conn.is_closed_by_peer(), "undecodable body");

    // A valid header whose body declares 2^31-1 topics: refused without reserving for them
    // (this used to abort the process on a ~150 GB allocation).
    let mut conn = broker.connect().unwrap();
    conn.write_frame(&[0, 3, 0, 0, 0, 0, 0, 7, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff])
        .unwrap();
    assert!(conn.is_closed_by_peer(), "absurd array count");

    // An unsupported version of a known api: closed.
    let mut conn = broker.connect().unwrap();
    conn.write_frame(&[0, 3, 0x7f, 0, 0, 0, 0, 9, 0, 0])
        .unwrap();
    assert!(conn.is_closed_by_peer(), "unsupported metadata version");

    // ApiVersions at an unknown version: answered at v0 with UNSUPPORTED_VERSION.
    let mut conn = broker.connect().unwrap();
    conn.write_frame(&[0, 18, 0x7f, 0, 0, 0, 0, 42, 0, 0])
        .unwrap();
    let mut frame = conn.read_frame().unwrap();
    assert_eq!(&frame[..4], &42i32.to_be_bytes());
    let _ = frame.split_to(4);
    let response = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(
        response.error_code.err(),
        Some(ResponseError::UnsupportedVersion)
    );
    assert!(!response.api_keys.is_empty());

    // Everyone else was unaffected.
    let (error, base) = produce_result(
        &mut healthy,
        "survivor",
        batch(&[b"still here"], None, Compression::None),
    );
    assert_eq!((error, base), (0, 0));
    let mut fresh = broker.connect().unwrap();
    assert_eq!(fetch_all(&mut fresh, "survivor", 0).len(), 1);
}

fn latest_offset(conn: &mut KafkaConn, topic: &str) -> (i16, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let response = conn.send(&request, 7).unwrap();
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

#[test]
fn a_deleted_topic_recreated_under_its_name_starts_empty() {
    use kafka_protocol::messages::DeleteTopicsRequest;
    let broker = DevBroker::start(&[]).unwrap();
    let mut conn = broker.connect().unwrap();
    create_topic(&mut conn, "again", 1);
    for _ in 0..3 {
        assert_eq!(
            produce_result(
                &mut conn,
                "again",
                batch(&[b"old"], None, Compression::None)
            )
            .0,
            0
        );
    }
    assert_eq!(latest_offset(&mut conn, "again"), (0, 3));
    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("again")])
        .with_timeout_ms(10_000);
    let response = conn.send(&delete, 5).unwrap();
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(
        latest_offset(&mut conn, "again").0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    create_topic(&mut conn, "again", 1);
    assert_eq!(
        latest_offset(&mut conn, "again"),
        (0, 0),
        "{}",
        broker.log_text()
    );
    let logs = broker.data_dir.path().join("logs");
    let dirs: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(dirs, ["again-0"], "the old directory is gone");
}

#[test]
fn retention_by_size_removes_old_segments() {
    let broker = DevBroker::start(&["--set", "topics.retention_check_interval_ms=100"]).unwrap();
    let mut conn = broker.connect().unwrap();
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name("small"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("segment.bytes"))
                    .with_value(Some(StrBytes::from_static_str("2048"))),
                kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.bytes"))
                    .with_value(Some(StrBytes::from_static_str("4096"))),
            ])])
        .with_timeout_ms(10_000);
    let response = conn.send(&request, 7).unwrap();
    assert_eq!(response.topics[0].error_code, 0);
    let value = vec![1u8; 900];
    for _ in 0..40 {
        assert_eq!(
            produce_result(
                &mut conn,
                "small",
                batch(&[&value], None, Compression::None)
            )
            .0,
            0
        );
    }
    // Retention runs every 100 ms here (also while producing); bounded wait until the log
    // holds only about retention.bytes.
    let mut start = 0;
    for _ in 0..100 {
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("small"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-2)])]);
        start = conn.send(&request, 7).unwrap().topics[0].partitions[0].offset;
        if start > 20 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        start > 20,
        "log start offset {start}: old segments were not deleted"
    );
    assert_eq!(latest_offset(&mut conn, "small"), (0, 40));
}

#[test]
fn a_parked_fetch_is_woken_by_an_append() {
    let broker = DevBroker::start(&[]).unwrap();
    let mut conn = broker.connect().unwrap();
    create_topic(&mut conn, "wake", 1);
    let mut fetcher = broker.connect().unwrap();
    // Long enough that a fetch answered only at its deadline would fail the I/O timeout.
    let request = FetchRequest::default()
        .with_max_wait_ms(25_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name("wake"))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let correlation_id = fetcher.send_only(&request, 12).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        produce_result(
            &mut conn,
            "wake",
            batch(&[b"ding"], None, Compression::None)
        ),
        (0, 0)
    );
    let response = fetcher.receive::<FetchRequest>(12, correlation_id).unwrap();
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 1);
    let mut records = p.records.clone().unwrap_or_default();
    let sets = RecordBatchDecoder::decode_all(&mut records).unwrap();
    assert_eq!(sets[0].records[0].value.as_deref(), Some(&b"ding"[..]));
}

#[test]
fn connections_beyond_the_limit_are_closed_and_slots_are_reused() {
    let broker = DevBroker::start(&["--set", "kafka.max_connections=2"]).unwrap();
    let mut first = broker.connect().unwrap();
    let mut second = broker.connect().unwrap();
    for conn in [&mut first, &mut second] {
        let versions: ApiVersionsResponse = conn.send(&ApiVersionsRequest::default(), 3).unwrap();
        assert_eq!(versions.error_code, 0);
    }
    let mut third = broker.connect().unwrap();
    assert!(third.is_closed_by_peer(), "a third connection is refused");
    drop(first);
    // The slot frees once the broker notices the close; bounded retries.
    let mut served = false;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut again = broker.connect().unwrap();
        if again.send(&ApiVersionsRequest::default(), 3).is_ok() {
            served = true;
            break;
        }
    }
    assert!(served, "a freed slot is reused");
}

#[test]
fn idle_connections_are_closed() {
    let broker = DevBroker::start(&["--set", "kafka.connections_max_idle_ms=300"]).unwrap();
    let mut idle = broker.connect().unwrap();
    let versions: ApiVersionsResponse = idle.send(&ApiVersionsRequest::default(), 3).unwrap();
    assert_eq!(versions.error_code, 0);
    // The read blocks until the broker closes the silent connection (bounded by IO_TIMEOUT).
    assert!(idle.is_closed_by_peer());
}

#[test]
fn metadata_auto_creates_valid_names_and_refuses_invalid_ones() {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let mut broker = DevBroker::start(&[]).unwrap();
    let mut conn = broker.connect().unwrap();
    let ask = |conn: &mut KafkaConn, topic: &str| {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic)))
            ]))
            .with_allow_auto_topic_creation(true);
        let response = conn.send(&request, 12).expect("metadata");
        response.topics[0].error_code
    };
    assert_eq!(ask(&mut conn, "bad name!"), 17, "INVALID_TOPIC_EXCEPTION");
    assert_eq!(ask(&mut conn, ".."), 17);
    let code = ask(&mut conn, "auto.created-1");
    assert!(
        code == 0 || code == 5,
        "created (or leader pending): {code}"
    );
    let process = broker.process.as_mut().expect("running");
    let line = process
        .wait_for_log("topic auto-created", 0, std::time::Duration::from_secs(10))
        .expect("the valid name was created");
    assert!(line.contains("auto.created-1"), "{line}");
    // The invalid names came first: had they been written, they would be logged first.
    assert_eq!(
        broker.log_text().matches("topic auto-created").count(),
        1,
        "only the valid name was created"
    );
}

#[test]
fn a_decompression_bomb_is_refused_when_the_broker_must_recompress() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let broker = DevBroker::start(&[]).unwrap();
    let mut conn = broker.connect().unwrap();
    // compression.type=gzip makes the broker decompress every zstd batch to re-encode it.
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name("recompressed"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("compression.type"))
                .with_value(Some(StrBytes::from_static_str("gzip")))])])
        .with_timeout_ms(10_000);
    assert_eq!(conn.send(&request, 7).unwrap().topics[0].error_code, 0);
    // 80 MiB of zeros: a few hundred KB compressed, past the 64 MiB decompression bound.
    let zeros = vec![0u8; 1 << 20];
    let values: Vec<&[u8]> = (0..80).map(|_| zeros.as_slice()).collect();
    let bomb = batch(&values, None, Compression::Zstd);
    assert!(bomb.len() < 1 << 20, "compressed to {} bytes", bomb.len());
    let response = produce(&mut conn, "recompressed", 0, bomb, 1);
    assert_eq!(
        response.responses[0].partition_responses[0].error_code, 2,
        "CORRUPT_MESSAGE"
    );
    // A normal zstd batch is still recompressed and stored.
    let small = batch(&[b"fine".as_slice()], None, Compression::Zstd);
    let response = produce(&mut conn, "recompressed", 0, small, 1);
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    let records = fetch_all(&mut conn, "recompressed", 0);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_deref(), Some(&b"fine"[..]));
}
