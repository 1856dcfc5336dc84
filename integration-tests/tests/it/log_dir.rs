//! A broker's log directory across restarts and failures: a restarted follower starts from the
//! high watermark it checkpointed (`replication-offset-checkpoint`), not from 0.

use std::thread;
use std::time::{Duration, Instant};

use streambus_integration_tests::cluster::{Cluster, FAST_FAILOVER};
use streambus_integration_tests::kafka::{plain_batch, produce_to};
use streambus_integration_tests::KafkaConn;
use streambus_storage::LogDir;

use crate::replication::{create_topic, full_isr, WAIT};

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
