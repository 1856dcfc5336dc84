//! Exactly-once under faults: a librdkafka consume-transform-produce copier
//! (`txn_chaos_copy.py`) copies 100,000 records from one topic to another in transactions of
//! about 500, on 3 brokers, while a seeded schedule SIGKILLs brokers (the transaction and group
//! coordinators and partition leaders among them) and the copier itself, which starts again
//! with the same transactional id. The read_committed output must equal the input partition by
//! partition, in order, with nothing lost or duplicated, and no transaction may be left open.
//!
//! The seed is printed; `STREAMBUS_CHAOS_SEED=<seed>` replays the schedule.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use streambus_client::admin::NewTopic;
use streambus_client::consumer::LATEST;
use streambus_client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use streambus_integration_tests::cluster::{Cluster, FAST_FAILOVER};
use streambus_integration_tests::run_with_timeout;

use crate::scripts::python_script;

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 3;
const PER_TXN: &str = "500";
const TXN_ID: &str = "chaos-copier";
const GROUP: &str = "chaos-copier-group";
/// Faults the schedule injects at most, and how long it may inject them.
const FAULTS_MAX: usize = 8;
const CHAOS_FOR: Duration = Duration::from_secs(120);
/// Bound on the copy finishing once the faults stopped, and on copier restarts.
const SETTLE: Duration = Duration::from_secs(300);
const COPIER_STARTS_MAX: usize = 40;

fn seed() -> u64 {
    std::env::var("STREAMBUS_CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random)
}

/// The input value of record `i` of partition `p`.
fn value(p: i32, i: usize) -> String {
    format!("p{p}-{i:06}")
}

/// The copier process; killed (and reaped) when dropped, a failed assertion included.
struct Copier(Child);

impl Drop for Copier {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_copier(bootstrap: &str, log: &Path) -> Copier {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("copier log");
    let mut command = python_script("txn_chaos_copy.py");
    command
        .args(["chaos-in", "chaos-out", TXN_ID, GROUP, PER_TXN])
        .env("STREAMBUS_BOOTSTRAP", bootstrap)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log);
    Copier(command.spawn().expect("start the copier"))
}

async fn connect(bootstrap: &str) -> Client {
    let mut config = ClientConfig::new(bootstrap);
    config.client_id = "txn-chaos".to_owned();
    Client::connect(config).await.expect("connect")
}

async fn set_up(bootstrap: &str) {
    let client = connect(bootstrap).await;
    let admin = Admin::new(client.clone());
    for name in ["chaos-in", "chaos-out"] {
        let mut topic = NewTopic::new(name, PARTITIONS, 3);
        topic
            .configs
            .insert("min.insync.replicas".to_owned(), "2".to_owned());
        admin
            .create_topics(&[topic], false)
            .await
            .expect("create topics")
            .into_iter()
            .for_each(|(name, result)| result.unwrap_or_else(|e| panic!("{name}: {e}")));
    }
    let producer = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let p = (i % PARTITIONS as usize) as i32;
        let record =
            ProducerRecord::new("chaos-in", value(p, i / PARTITIONS as usize)).with_partition(p);
        deliveries.push(producer.send(record).await.expect("send"));
    }
    for delivery in deliveries {
        tokio::time::timeout(Duration::from_secs(120), delivery)
            .await
            .expect("acknowledged in time")
            .expect("acknowledged");
    }
}

/// The ends of `topic`'s partitions, read_committed (the LSO) and not (the high watermark).
async fn ends(bootstrap: &str, topic: &str) -> (Vec<i64>, Vec<i64>) {
    let client = connect(bootstrap).await;
    let mut both = Vec::new();
    for read_committed in [true, false] {
        let consumer = Consumer::new(
            client.clone(),
            ConsumerConfig {
                read_committed,
                ..ConsumerConfig::default()
            },
        );
        let asked: Vec<(TopicPartition, i64)> = (0..PARTITIONS)
            .map(|p| (TopicPartition::new(topic, p), LATEST))
            .collect();
        let found = consumer.offsets(&asked).await.expect("end offsets");
        both.push(
            (0..PARTITIONS)
                .map(|p| found[&TopicPartition::new(topic, p)])
                .collect(),
        );
    }
    let high = both.pop().unwrap();
    (both.pop().unwrap(), high)
}

#[test]
fn a_transactional_copy_survives_random_sigkills_of_brokers_and_the_copier() {
    let seed = seed();
    println!("chaos seed {seed} (replay: STREAMBUS_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut args = FAST_FAILOVER.to_vec();
    args.extend([
        "--set",
        "transactions.transaction_state_log_num_partitions=3",
        "--set",
        "groups.offsets_topic_num_partitions=3",
        "--set",
        "groups.group_initial_rebalance_delay_ms=0",
    ]);
    let mut cluster = Cluster::start(3, 3, &args).unwrap();
    let bootstrap = cluster.bootstrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(set_up(&bootstrap));

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("copier.log");
    let copier_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut copier = spawn_copier(&bootstrap, &log);
    let mut starts = 1;
    let mut faults = Vec::new();
    let mut done = false;
    let chaos_until = Instant::now() + CHAOS_FOR;
    // The schedule: a pause, then a fault, until the copy is done or the budget is spent.
    while faults.len() < FAULTS_MAX && Instant::now() < chaos_until {
        std::thread::sleep(Duration::from_millis(rng.random_range(1_000..3_000)));
        if let Some(status) = copier.0.try_wait().unwrap() {
            if status.success() {
                done = true;
                break;
            }
            assert!(
                starts < COPIER_STARTS_MAX,
                "the copier keeps failing:\n{}",
                copier_log()
            );
            copier = spawn_copier(&bootstrap, &log);
            starts += 1;
        }
        if rng.random_bool(0.35) {
            faults.push("kill the copier".to_owned());
            drop(copier);
            copier = spawn_copier(&bootstrap, &log);
            starts += 1;
        } else {
            let broker = rng.random_range(1..=3);
            let down_for = Duration::from_millis(rng.random_range(500..4_000));
            faults.push(format!("SIGKILL broker {broker} for {down_for:?}"));
            cluster.kill(broker);
            std::thread::sleep(down_for);
            cluster.restart(broker).unwrap();
        }
    }
    println!("seed {seed}: faults {faults:?}");

    // The copy finishes with every broker up; a copier that fails is started again.
    let settle_until = Instant::now() + SETTLE;
    while !done {
        if let Some(status) = copier.0.try_wait().unwrap() {
            if status.success() {
                done = true;
                continue;
            }
            assert!(
                starts < COPIER_STARTS_MAX,
                "seed {seed}: the copier keeps failing:\n{}",
                copier_log()
            );
            copier = spawn_copier(&bootstrap, &log);
            starts += 1;
        }
        if Instant::now() >= settle_until {
            // What the coordinator and the output say, to tell a stuck transaction from a
            // slow copier.
            let state = runtime.block_on(async {
                let admin = Admin::new(connect(&bootstrap).await);
                admin.describe_transaction(TXN_ID).await
            });
            let ends = runtime.block_on(ends(&bootstrap, "chaos-out"));
            panic!(
                "seed {seed}: the copy did not finish in {SETTLE:?}; transaction {state:?}; \
                 output LSO/HW {ends:?}\n{}\n--- brokers\n{}",
                copier_log(),
                cluster.logs_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Read back by librdkafka, read_committed: partition by partition, the input exactly.
    let mut command = python_script("read_topic.py");
    command
        .args(["chaos-out", "read_committed"])
        .env("STREAMBUS_BOOTSTRAP", &bootstrap)
        .env("STREAMBUS_TEST_TIMEOUT_S", "240");
    let output = run_with_timeout(command, Duration::from_secs(250)).expect("read_topic.py");
    assert!(output.status.success(), "{}", output.stderr);
    let read: BTreeMap<String, Vec<String>> =
        serde_json::from_str(output.stdout.trim()).expect("JSON");
    let per_partition = RECORDS / PARTITIONS as usize;
    for p in 0..PARTITIONS {
        let got = &read[&p.to_string()];
        let extra = usize::from(p < (RECORDS % PARTITIONS as usize) as i32);
        let expected: Vec<String> = (0..per_partition + extra).map(|i| value(p, i)).collect();
        if got != &expected {
            let first_difference = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            panic!(
                "seed {seed}: partition {p}: read {} records, expected {}; first difference at \
                 {first_difference}: {:?} against {:?}\nfaults {faults:?}\n{}",
                got.len(),
                expected.len(),
                got.get(first_difference),
                expected.get(first_difference),
                copier_log()
            );
        }
    }
    // Nothing left open: the last stable offset is the high watermark everywhere, and the
    // copier's transactional id is not in the middle of a transaction.
    let (stable, high) = runtime.block_on(ends(&bootstrap, "chaos-out"));
    assert_eq!(stable, high, "seed {seed}: a transaction is left open");
    let state = runtime.block_on(async {
        let admin = Admin::new(connect(&bootstrap).await);
        admin.describe_transaction(TXN_ID).await.expect("describe")
    });
    assert!(
        ["Empty", "CompleteCommit", "CompleteAbort"].contains(&state.state.as_str()),
        "seed {seed}: {state:?}"
    );
    println!(
        "seed {seed}: {} faults, copier started {starts} times, {RECORDS} records copied exactly once",
        faults.len()
    );
}
