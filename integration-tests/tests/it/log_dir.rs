//! A broker's log directory across restarts and failures: a restarted follower starts from the
//! high watermark it checkpointed (`replication-offset-checkpoint`), not from 0; an fsync
//! failure on a leader moves its leaderships to healthy ISR members, and once the directory
//! is healthy again its replicas come back and rejoin the ISR.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::protocol::StrBytes;
use streambus_integration_tests::cluster::{Cluster, FAST_FAILOVER};
use streambus_integration_tests::kafka::{plain_batch, produce_to};
use streambus_integration_tests::KafkaConn;
use streambus_storage::LogDir;

use crate::replication::{
    assert_acked_present, assert_replicas_identical, create_topic, find_leader, full_isr,
    spawn_producer, RETRIABLE, WAIT,
};

/// How soon after the fsync failure another broker must lead.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);

/// Broker `id`'s checkpointed high watermark of partition 0 of `topic`, if any.
fn checkpointed_high_watermark(cluster: &Cluster, id: i32, topic: &str) -> Option<i64> {
    let data_dir = cluster.dir.path().join(format!("broker-{id}"));
    let offsets = LogDir::open(&data_dir)
        .ok()?
        .high_watermark_checkpoint()
        .read()
        .ok()?;
    offsets.get(&format!("{topic}-0")).map(|entry| entry.offset)
}

#[test]
fn a_follower_restarted_after_a_crash_starts_from_its_checkpointed_high_watermark() {
    const TOPIC: &str = "hw-checkpoint";
    const RECORDS: i64 = 20;
    let mut args = FAST_FAILOVER.to_vec();
    args.extend([
        "--set",
        "replication.high_watermark_checkpoint_interval_ms=200",
    ]);
    let mut cluster = Cluster::start(3, 3, &args).expect("cluster starts");
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2, 3], 2).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "leader 1 with the full ISR", |v| {
            v.leader == 1 && full_isr(v)
        })
        .unwrap();
    let mut leader = KafkaConn::connect(cluster.member(1).kafka_addr).unwrap();
    let values: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| format!("committed-{i}").into_bytes())
        .collect();
    assert_eq!(
        produce_to(&mut leader, TOPIC, 0, plain_batch(&values), -1).unwrap(),
        (0, 0)
    );

    // Follower 3 learns the high watermark from its next fetch and checkpoints it within an
    // interval; polled, since when the fetch answers is the leader's business.
    let deadline = Instant::now() + WAIT;
    while checkpointed_high_watermark(&cluster, 3, TOPIC) != Some(RECORDS) {
        assert!(
            Instant::now() < deadline,
            "broker 3 never checkpointed high watermark {RECORDS} (last: {:?})\n{}",
            checkpointed_high_watermark(&cluster, 3, TOPIC),
            cluster.logs_tail(20)
        );
        thread::sleep(Duration::from_millis(100));
    }
    // A crash: no shutdown work, only the periodic checkpoint survives.
    cluster.kill(3);
    cluster.restart(3).unwrap();
    let log = cluster.log_text(3);
    let opened = log
        .lines()
        .find(|line| line.contains("partition opened") && line.contains(TOPIC))
        .unwrap_or_else(|| panic!("no 'partition opened' line for {TOPIC}:\n{log}"));
    assert!(
        opened.contains(&format!("high_watermark={RECORDS}")),
        "the restarted follower does not start from its checkpointed high watermark: {opened}"
    );
}

/// Sets topic config `name` to `value` with IncrementalAlterConfigs.
fn set_topic_config(conn: &mut KafkaConn, topic: &str, name: &str, value: &str) {
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_string(name.to_owned()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(value.to_owned())))]),
    ]);
    let response = conn.send(&request, 1).expect("IncrementalAlterConfigs");
    assert_eq!(
        response.responses[0].error_code, 0,
        "{:?}",
        response.responses[0]
    );
}

/// Produces `values` with acks=all to whoever leads partition 0, retrying retriable errors
/// until `deadline`; the base offset.
fn produce_until_acked(
    addrs: &[SocketAddr],
    topic: &str,
    values: &[Vec<u8>],
    deadline: Instant,
) -> i64 {
    let mut last = None;
    // Each pass is one attempt against the current leader.
    while Instant::now() < deadline {
        let attempt = find_leader(addrs, topic)
            .and_then(|leader| KafkaConn::connect(leader).ok())
            .map(|mut conn| produce_to(&mut conn, topic, 0, plain_batch(values), -1));
        match attempt {
            Some(Ok((0, offset))) => return offset,
            Some(Ok((code, _))) => {
                assert!(RETRIABLE.contains(&code), "non-retriable error {code}");
                last = Some(code);
            }
            _ => {}
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("not acknowledged before the deadline (last error {last:?})");
}

#[test]
fn an_fsync_failure_on_the_leader_moves_leadership_and_the_replica_returns_once_healthy() {
    const TOPIC: &str = "dir-failure";
    // Broker 1's next log fsync fails, once. No log fsyncs until the topic asks for one per
    // append below (flush.messages defaults to Kafka's "never"), so the failure lands on the
    // leader's append, when the test chooses.
    let mut cluster = Cluster::start_with_env(
        3,
        3,
        FAST_FAILOVER,
        &[(1, "FAILPOINTS", "log::fsync=1*return")],
    )
    .expect("cluster starts");
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2, 3], 2).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "leader 1 with the full ISR", |v| {
            v.leader == 1 && full_isr(v)
        })
        .unwrap();
    let addrs: Vec<SocketAddr> = cluster.members.iter().map(|m| m.kafka_addr).collect();
    let mut acked = Vec::new();
    let mut leader = KafkaConn::connect(cluster.member(1).kafka_addr).unwrap();
    for batch in 0..10 {
        let values: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("before-{batch}-{i}").into_bytes())
            .collect();
        let (code, base) = produce_to(&mut leader, TOPIC, 0, plain_batch(&values), -1).unwrap();
        assert_eq!(code, 0);
        acked.extend(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (base + i as i64, v)),
        );
    }
    drop(leader);

    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(addrs.clone(), TOPIC, stop.clone(), Duration::from_secs(300));
    // From here every append is fsynced: broker 1's next one fails.
    let injected = Instant::now();
    set_topic_config(
        &mut cluster.connect_any().unwrap(),
        TOPIC,
        "flush.messages",
        "1",
    );
    let moved = cluster
        .wait_for(
            TOPIC,
            0,
            FAILOVER_BOUND,
            "another leader after the fsync failure",
            |v| v.leader > 0 && v.leader != 1 && !v.isr.contains(&1),
        )
        .unwrap();
    let failover = injected.elapsed();
    println!(
        "leadership moved to {} in {failover:?} (ISR {:?})",
        moved.leader, moved.isr
    );
    assert!(
        cluster.log_text(1).contains("log directory offline"),
        "broker 1 did not take its log directory offline:\n{}",
        cluster.log_text(1)
    );

    // Produce goes on at the new leader while broker 1 is out.
    let after: Vec<Vec<u8>> = (0..5).map(|i| format!("after-{i}").into_bytes()).collect();
    let base = produce_until_acked(&addrs, TOPIC, &after, Instant::now() + WAIT);
    acked.extend(
        after
            .into_iter()
            .enumerate()
            .map(|(i, v)| (base + i as i64, v)),
    );

    // The failpoint fired once: the probe succeeds, the log reopens with recovery, and broker 1
    // catches up and rejoins the ISR.
    cluster
        .wait_for(TOPIC, 0, WAIT, "broker 1 back in the ISR", full_isr)
        .unwrap();
    let rejoined = injected.elapsed();
    println!("broker 1 back in the ISR {rejoined:?} after the injection");
    let log = cluster.log_text(1);
    assert!(log.contains("log directory online again"), "{log}");
    let opened = log
        .lines()
        .filter(|line| line.contains("partition opened") && line.contains(TOPIC))
        .count();
    assert_eq!(opened, 2, "opened, then reopened with recovery:\n{log}");
    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().expect("producer thread");
    produced.assert_only_retriable_errors();
    acked.extend(produced.acked);
    println!(
        "{} acknowledged records, producer errors {:?}",
        acked.len(),
        produced.errors
    );
    let count = assert_acked_present(&cluster, TOPIC, &acked);
    let end = i64::try_from(count).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "the full ISR before stopping", full_isr)
        .unwrap();
    assert_replicas_identical(&mut cluster, TOPIC, &[1, 2, 3], end);
}
