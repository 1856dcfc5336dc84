//! Replication across real broker processes: acks=all records survive repeated SIGKILLs of the
//! partition leader and of the controller, replicas end byte-identical, a double failover
//! truncates by leader epoch without losing committed records (KIP-101), and
//! min.insync.replicas refuses acks=all writes it cannot honour.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, MetadataRequest};
use kafka_protocol::protocol::StrBytes;
use streambus_integration_tests::cluster::{Cluster, PartitionView, FAST_FAILOVER};
use streambus_integration_tests::kafka::{fetch_values, plain_batch, produce_to, topic_name};
use streambus_integration_tests::KafkaConn;

pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// Error codes a producer may see during a failover: all retriable.
pub(crate) const RETRIABLE: &[i16] = &[3, 5, 6, 7, 8, 19, 20, 56, 74, 75];

pub(crate) fn create_topic(
    conn: &mut KafkaConn,
    topic: &str,
    assignment: &[i32],
    min_insync: u32,
) -> anyhow::Result<()> {
    let min_insync = min_insync.to_string();
    create_topic_with(
        conn,
        topic,
        assignment,
        &[("min.insync.replicas", min_insync.as_str())],
    )
}

/// Creates `topic` with one partition on `assignment` and these topic configs.
pub(crate) fn create_topic_with(
    conn: &mut KafkaConn,
    topic: &str,
    assignment: &[i32],
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let configs = configs
        .iter()
        .map(|(name, value)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string((*name).to_owned()))
                .with_value(Some(StrBytes::from_string((*value).to_owned())))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(assignment.iter().map(|b| BrokerId(*b)).collect())])
            .with_configs(configs)])
        .with_timeout_ms(10_000);
    let response = conn.send(&request, 7)?;
    anyhow::ensure!(
        response.topics[0].error_code == 0,
        "create topic: {:?}",
        response.topics[0]
    );
    Ok(())
}

/// The Kafka address of the current leader of partition 0, asking every broker in turn.
pub(crate) fn find_leader(addrs: &[SocketAddr], topic: &str) -> Option<SocketAddr> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic_name(topic))),
        ]))
        .with_allow_auto_topic_creation(false);
    for addr in addrs {
        let Ok(mut conn) = KafkaConn::connect(*addr) else {
            continue;
        };
        let Ok(response) = conn.send(&request, 12) else {
            continue;
        };
        let leader = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .map(|p| p.leader_id.0)?;
        return response
            .brokers
            .iter()
            .find(|b| b.node_id.0 == leader)
            .and_then(|b| format!("{}:{}", b.host, b.port).parse().ok());
    }
    None
}

/// What a producer thread saw.
#[derive(Debug, Default)]
pub(crate) struct Produced {
    /// Acknowledged `(offset, value)`.
    pub(crate) acked: Vec<(i64, Vec<u8>)>,
    /// Error codes answered, in order.
    pub(crate) errors: Vec<i16>,
}

impl Produced {
    pub(crate) fn assert_only_retriable_errors(&self) {
        let unexpected: Vec<i16> = self
            .errors
            .iter()
            .copied()
            .filter(|c| !RETRIABLE.contains(c))
            .collect();
        assert!(
            unexpected.is_empty(),
            "non-retriable errors: {unexpected:?}"
        );
    }
}

/// Produces one-record batches with acks=all to partition 0 until `stop`, following the leader
/// through failovers (bounded by `limit`).
pub(crate) fn spawn_producer(
    addrs: Vec<SocketAddr>,
    topic: &'static str,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> thread::JoinHandle<Produced> {
    thread::spawn(move || {
        let mut produced = Produced::default();
        let deadline = Instant::now() + limit;
        let mut conn: Option<KafkaConn> = None;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if conn.is_none() {
                conn = find_leader(&addrs, topic).and_then(|a| KafkaConn::connect(a).ok());
                if conn.is_none() {
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let value = format!("value-{n}").into_bytes();
            n += 1;
            let Some(c) = conn.as_mut() else { continue };
            match produce_to(c, topic, 0, plain_batch(std::slice::from_ref(&value)), -1) {
                Ok((0, offset)) => produced.acked.push((offset, value)),
                Ok((code, _)) => {
                    produced.errors.push(code);
                    conn = None;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(_) => {
                    conn = None;
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
        produced
    })
}

/// Reads partition 0 from its leader and checks every acknowledged record is at its offset.
pub(crate) fn assert_acked_present(
    cluster: &Cluster,
    topic: &str,
    acked: &[(i64, Vec<u8>)],
) -> usize {
    let addrs: Vec<SocketAddr> = cluster.members.iter().map(|m| m.kafka_addr).collect();
    let deadline = Instant::now() + WAIT;
    let records = loop {
        let read = find_leader(&addrs, topic)
            .and_then(|a| KafkaConn::connect(a).ok())
            .and_then(|mut c| fetch_values(&mut c, topic, 0, 0).ok())
            .and_then(Result::ok);
        if let Some(records) = read {
            break records;
        }
        assert!(Instant::now() < deadline, "cannot read the partition back");
        thread::sleep(Duration::from_millis(200));
    };
    let by_offset: BTreeMap<i64, &[u8]> = records.iter().map(|(o, v)| (*o, v.as_ref())).collect();
    let mut lost = Vec::new();
    for (offset, value) in acked {
        if by_offset.get(offset) != Some(&value.as_slice()) {
            lost.push((*offset, String::from_utf8_lossy(value).into_owned()));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records are not at their offset (first: {:?})\n{}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)],
        cluster.logs_tail(30)
    );
    records.len()
}

/// Bytes of the batches of `dir`'s segment files whose base offset is below `end`, in order.
fn log_bytes(dir: &Path, end: i64) -> Vec<u8> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("partition directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for file in files {
        all.extend(std::fs::read(file).expect("segment"));
    }
    let mut pos = 0usize;
    while pos + 12 <= all.len() {
        let base = i64::from_be_bytes(all[pos..pos + 8].try_into().expect("8 bytes"));
        let len = i32::from_be_bytes(all[pos + 8..pos + 12].try_into().expect("4 bytes"));
        if base >= end || len <= 0 {
            break;
        }
        pos += 12 + len as usize;
    }
    all.truncate(pos.min(all.len()));
    all
}

/// Stops every broker cleanly and compares partition 0's logs on all replicas below `end`.
pub(crate) fn assert_replicas_identical(
    cluster: &mut Cluster,
    topic: &str,
    replicas: &[i32],
    end: i64,
) {
    for id in replicas {
        cluster.stop(*id).expect("clean stop");
    }
    let logs: Vec<Vec<u8>> = replicas
        .iter()
        .map(|id| {
            let dir = cluster
                .dir
                .path()
                .join(format!("broker-{id}/logs/{topic}-0"));
            log_bytes(&dir, end)
        })
        .collect();
    for (id, log) in replicas.iter().zip(&logs).skip(1) {
        assert!(!log.is_empty(), "broker {id} holds nothing");
        if log != &logs[0] {
            let (ours, theirs) = (batches(log), batches(&logs[0]));
            let first = ours.iter().zip(&theirs).position(|(a, b)| a != b);
            let at = first.unwrap_or(ours.len().min(theirs.len()));
            panic!(
                "broker {id}'s log differs from broker {}'s below offset {end} ({} vs {} bytes, \
                 {} vs {} batches); first difference at batch {at}: {:?} vs {:?}",
                replicas[0],
                log.len(),
                logs[0].len(),
                ours.len(),
                theirs.len(),
                &ours[at.saturating_sub(1)..(at + 2).min(ours.len())],
                &theirs[at.saturating_sub(1)..(at + 2).min(theirs.len())],
            );
        }
    }
}

/// `(base offset, last offset delta, partition leader epoch, length)` of each batch in `log`.
fn batches(log: &[u8]) -> Vec<(i64, i32, i32, usize)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 27 <= log.len() {
        let field = |at: usize| <[u8; 4]>::try_from(&log[pos + at..pos + at + 4]).expect("4");
        let base = i64::from_be_bytes(log[pos..pos + 8].try_into().expect("8 bytes"));
        let len = usize::try_from(i32::from_be_bytes(field(8))).unwrap_or(0);
        out.push((
            base,
            i32::from_be_bytes(field(23)),
            i32::from_be_bytes(field(12)),
            len,
        ));
        pos += 12 + len;
    }
    out
}

pub(crate) fn full_isr(view: &PartitionView) -> bool {
    view.leader > 0 && view.isr.len() == view.replicas.len()
}

#[test]
fn acks_all_records_survive_repeated_leader_and_controller_kills() {
    const TOPIC: &str = "failover";
    let mut cluster = Cluster::start(3, 3, FAST_FAILOVER).expect("cluster starts");
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2, 3], 2).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "a leader", full_isr)
        .unwrap();
    let addrs: Vec<SocketAddr> = cluster.members.iter().map(|m| m.kafka_addr).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(addrs, TOPIC, stop.clone(), Duration::from_secs(400));
    thread::sleep(Duration::from_secs(1));

    let mut victims = Vec::new();
    for round in 0..6 {
        let view = cluster
            .wait_for(TOPIC, 0, WAIT, "a leader with the full ISR", full_isr)
            .unwrap();
        let victim = if round < 5 {
            view.leader
        } else {
            // The last round kills the controller (raft leader), whoever leads the partition.
            let (_, controller) = cluster.describe(TOPIC, 0).unwrap();
            assert!(controller > 0, "no controller known");
            controller
        };
        victims.push(victim);
        cluster.kill(victim);
        cluster
            .wait_for(TOPIC, 0, WAIT, "a new leader", |v| {
                v.leader > 0 && v.leader != victim
            })
            .unwrap();
        // Let the producer write to the new leader while the victim is down.
        thread::sleep(Duration::from_millis(1500));
        cluster.restart(victim).expect("restarts");
    }
    cluster
        .wait_for(TOPIC, 0, WAIT, "the full ISR after the faults", full_isr)
        .unwrap();
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().expect("producer thread");

    assert!(
        produced.acked.len() >= 50,
        "too little progress: {} acked, errors {:?}",
        produced.acked.len(),
        produced.errors
    );
    produced.assert_only_retriable_errors();
    let count = assert_acked_present(&cluster, TOPIC, &produced.acked);
    let end = i64::try_from(count).unwrap();
    println!(
        "victims {victims:?}: {} acked, {} records, errors {:?}",
        produced.acked.len(),
        count,
        produced.errors
    );
    // Every replica caught up (full ISR) before the clean stops: identical below the end.
    cluster
        .wait_for(TOPIC, 0, WAIT, "the full ISR before stopping", full_isr)
        .unwrap();
    assert_replicas_identical(&mut cluster, TOPIC, &[1, 2, 3], end);
}

#[test]
fn min_insync_replicas_refuses_acks_all_when_two_replicas_are_down() {
    const TOPIC: &str = "min-isr";
    // One voter: brokers 2 and 3 are quorum learners, so killing them keeps the quorum.
    let mut cluster = Cluster::start(3, 1, FAST_FAILOVER).expect("cluster starts");
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2, 3], 2).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "leader 1 with the full ISR", |v| {
            v.leader == 1 && full_isr(v)
        })
        .unwrap();
    let mut leader = KafkaConn::connect(cluster.member(1).kafka_addr).unwrap();
    let values: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("committed-{i}").into_bytes())
        .collect();
    assert_eq!(
        produce_to(&mut leader, TOPIC, 0, plain_batch(&values), -1).unwrap(),
        (0, 0)
    );

    cluster.kill(2);
    cluster.kill(3);
    cluster
        .wait_for(TOPIC, 0, WAIT, "the ISR shrunk to the leader", |v| {
            v.leader == 1 && v.isr == [1]
        })
        .unwrap();
    let refused = plain_batch(&[b"must-not-be-acked".to_vec()]);
    let (code, _) = produce_to(&mut leader, TOPIC, 0, refused, -1).unwrap();
    assert_eq!(code, 19, "NOT_ENOUGH_REPLICAS expected");
    let records = fetch_values(&mut leader, TOPIC, 0, 0)
        .unwrap()
        .expect("committed data stays readable");
    let read: Vec<Vec<u8>> = records.into_iter().map(|(_, v)| v.to_vec()).collect();
    assert_eq!(read, values, "nothing was appended");
    // acks=1 does not ask for replicas and still works.
    let (code, offset) =
        produce_to(&mut leader, TOPIC, 0, plain_batch(&[b"acks-1".to_vec()]), 1).unwrap();
    assert_eq!((code, offset), (0, 10));
}

#[test]
fn a_double_failover_truncates_by_leader_epoch_and_keeps_committed_records() {
    const TOPIC: &str = "kip-101";
    // A longer session than FAST_FAILOVER: broker 2 is paused for a while below and must not be
    // fenced for it.
    let args = [
        "--set",
        "metadata.broker_session_timeout_ms=4000",
        "--set",
        "metadata.broker_heartbeat_interval_ms=400",
        "--set",
        "replication.fetch_backoff_ms=200",
    ];
    let mut cluster = Cluster::start(3, 3, &args).expect("cluster starts");
    // Replicas 1 and 2 only; broker 3 keeps the quorum alive while they fail.
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2], 1).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "leader 1 with the full ISR", |v| {
            v.leader == 1 && full_isr(v)
        })
        .unwrap();
    let mut conn = KafkaConn::connect(cluster.member(1).kafka_addr).unwrap();
    let first: Vec<Vec<u8>> = (0..10).map(|i| format!("first-{i}").into_bytes()).collect();
    assert_eq!(
        produce_to(&mut conn, TOPIC, 0, plain_batch(&first), -1).unwrap(),
        (0, 0)
    );

    // Follower 2 pauses; leader 1 takes acks=1 writes that never reach it. The pause outlasts
    // the follower's last fetch (answered empty after replication.fetch_wait_max_ms), so no
    // fetch of 2 is parked at 1 when the doomed records arrive.
    cluster.signal(2, "STOP").unwrap();
    thread::sleep(Duration::from_millis(1200));
    let doomed: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("doomed-{i}").into_bytes())
        .collect();
    assert_eq!(
        produce_to(&mut conn, TOPIC, 0, plain_batch(&doomed), 1).unwrap(),
        (0, 10)
    );
    drop(conn);
    // Leader 1 dies; 2 resumes and, still in the ISR, takes over at a new epoch.
    cluster.kill(1);
    cluster.signal(2, "CONT").unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "broker 2 leading", |v| v.leader == 2)
        .unwrap();
    let mut conn = KafkaConn::connect(cluster.member(2).kafka_addr).unwrap();
    let second: Vec<Vec<u8>> = (0..5).map(|i| format!("second-{i}").into_bytes()).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, offset) = produce_to(&mut conn, TOPIC, 0, plain_batch(&second), -1).unwrap();
        if code == 0 {
            assert_eq!(
                offset, 10,
                "the new leader continues after the committed records"
            );
            break;
        }
        assert!(Instant::now() < deadline, "broker 2 never accepted: {code}");
        thread::sleep(Duration::from_millis(200));
    }
    drop(conn);

    // Broker 1 returns as a follower: it must cut its doomed tail (epoch truncation), fetch
    // 2's records and rejoin the ISR. Then 2 dies and 1 leads again.
    cluster.restart(1).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "broker 1 back in the ISR", |v| {
            v.leader == 2 && full_isr(v)
        })
        .unwrap();
    cluster.kill(2);
    cluster
        .wait_for(TOPIC, 0, WAIT, "broker 1 leading again", |v| v.leader == 1)
        .unwrap();
    let mut conn = KafkaConn::connect(cluster.member(1).kafka_addr).unwrap();
    let deadline = Instant::now() + WAIT;
    let records = loop {
        match fetch_values(&mut conn, TOPIC, 0, 0).unwrap() {
            Ok(records) if records.len() >= 15 => break records,
            _ => {}
        }
        assert!(Instant::now() < deadline, "broker 1 never served the log");
        thread::sleep(Duration::from_millis(200));
    };
    let read: Vec<Vec<u8>> = records.iter().map(|(_, v)| v.to_vec()).collect();
    let expected: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        read,
        expected,
        "committed records kept, the uncommitted tail gone\n{}",
        cluster.logs_tail(30)
    );
    // Broker 2 returns as a follower of 1 and ends identical to it.
    cluster.restart(2).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "broker 2 back in the ISR", |v| {
            v.leader == 1 && full_isr(v)
        })
        .unwrap();
    assert_replicas_identical(&mut cluster, TOPIC, &[1, 2], 15);
}

fn durability_script(cluster: &Cluster, args: &[&str]) -> std::process::Command {
    let script = streambus_integration_tests::manifest_dir().join("python/durability.py");
    let mut command = std::process::Command::new(streambus_integration_tests::python().unwrap());
    command
        .arg(script)
        .args(args)
        .env("STREAMBUS_BOOTSTRAP", cluster.bootstrap());
    command
}

#[test]
fn confluent_kafka_produces_through_a_leader_failover_without_a_failed_delivery() {
    const TOPIC: &str = "ck-failover";
    let mut cluster = Cluster::start(3, 3, FAST_FAILOVER).expect("cluster starts");
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2, 3], 2).unwrap();
    let view = cluster
        .wait_for(TOPIC, 0, WAIT, "a leader with the full ISR", full_isr)
        .unwrap();
    let acks = tempfile::NamedTempFile::new().unwrap();
    let acks_path = acks.path().to_str().unwrap().to_owned();
    // 3,000 idempotent acks=all records over ~15 s; the leader dies after ~4 s.
    let produce = durability_script(&cluster, &["produce", TOPIC, "3000", &acks_path, "200"]);
    let producer = thread::spawn(move || {
        streambus_integration_tests::run_with_timeout(produce, Duration::from_secs(300))
    });
    thread::sleep(Duration::from_secs(4));
    cluster.kill(view.leader);
    cluster
        .wait_for(TOPIC, 0, WAIT, "a new leader", |v| {
            v.leader > 0 && v.leader != view.leader
        })
        .unwrap();
    thread::sleep(Duration::from_secs(2));
    cluster.restart(view.leader).unwrap();
    let output = producer.join().expect("producer thread").expect("runs");
    assert!(
        output.status.success(),
        "deliveries failed through the failover\n--- stdout\n{}\n--- stderr\n{}\n{}",
        output.stdout,
        output.stderr,
        cluster.logs_tail(30)
    );
    let verify = durability_script(&cluster, &["verify", TOPIC, &acks_path]);
    let output =
        streambus_integration_tests::run_with_timeout(verify, Duration::from_secs(300)).unwrap();
    assert!(
        output.status.success(),
        "acknowledged records lost or duplicated\n--- stdout\n{}\n--- stderr\n{}",
        output.stdout,
        output.stderr
    );
}

fn reassign(conn: &mut KafkaConn, topic: &str, target: Option<&[i32]>) -> i16 {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    let request = kafka_protocol::messages::AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_allow_replication_factor_change(true)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(0)
                .with_replicas(
                    target.map(|t| t.iter().map(|b| BrokerId(*b)).collect()),
                )])]);
    let response = conn.send(&request, 1).expect("AlterPartitionReassignments");
    assert_eq!(response.error_code, 0);
    response.responses[0].partitions[0].error_code
}

/// `(replicas, adding, removing)` of partition 0 while it is being reassigned.
fn ongoing(conn: &mut KafkaConn, topic: &str) -> Option<(Vec<i32>, Vec<i32>, Vec<i32>)> {
    let request = kafka_protocol::messages::ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(None);
    let response = conn.send(&request, 0).expect("ListPartitionReassignments");
    let ids = |list: &[BrokerId]| list.iter().map(|b| b.0).collect::<Vec<_>>();
    response
        .topics
        .iter()
        .find(|t| &*t.name == topic)
        .and_then(|t| t.partitions.first())
        .map(|p| {
            (
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas),
            )
        })
}

#[test]
fn a_reassignment_moves_a_partition_within_its_throttle_and_drops_the_old_replica() {
    const TOPIC: &str = "moving";
    // 100 KB/s: the 400 KB below take about 4 s to copy, so the move is seen in progress.
    let mut args = FAST_FAILOVER.to_vec();
    args.extend(["--set", "replication.reassignment_max_bytes_per_sec=100000"]);
    let mut cluster = Cluster::start(3, 3, &args).expect("cluster starts");
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2], 1).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "leader 1 with the full ISR", |v| {
            v.leader == 1 && full_isr(v)
        })
        .unwrap();
    let mut leader = KafkaConn::connect(cluster.member(1).kafka_addr).unwrap();
    let mut expected = Vec::new();
    for batch in 0..40 {
        let values: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                let mut value = format!("batch-{batch}-record-{i}-").into_bytes();
                value.resize(1000, b'x');
                value
            })
            .collect();
        let (code, _) = produce_to(&mut leader, TOPIC, 0, plain_batch(&values), -1).unwrap();
        assert_eq!(code, 0);
        expected.extend(values);
    }

    let mut conn = cluster.connect_any().unwrap();
    assert_eq!(reassign(&mut conn, "no-such-topic", Some(&[2, 3])), 3);
    assert_eq!(
        reassign(&mut conn, TOPIC, None),
        85,
        "nothing to cancel yet"
    );
    assert_eq!(
        reassign(&mut conn, TOPIC, Some(&[2, 9])),
        39,
        "unknown broker"
    );
    assert_eq!(reassign(&mut conn, TOPIC, Some(&[2, 3])), 0);
    // The broker answering may apply the reassignment a moment after the controller did.
    let deadline = Instant::now() + WAIT;
    let (replicas, adding, removing) = loop {
        if let Some(state) = ongoing(&mut conn, TOPIC) {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the throttled move never showed as in progress"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        (replicas, adding, removing),
        (vec![2, 3, 1], vec![3], vec![1])
    );

    let done = cluster
        .wait_for(TOPIC, 0, WAIT, "the move completed", |v| {
            v.replicas == [2, 3] && full_isr(v)
        })
        .unwrap();
    assert_eq!(
        done.leader, 2,
        "the first target replica took over from broker 1"
    );
    assert_eq!(ongoing(&mut cluster.connect_any().unwrap(), TOPIC), None);
    let mut new_leader = KafkaConn::connect(cluster.member(2).kafka_addr).unwrap();
    let read: Vec<Vec<u8>> = fetch_values(&mut new_leader, TOPIC, 0, 0)
        .unwrap()
        .expect("readable on the new leader")
        .into_iter()
        .map(|(_, v)| v.to_vec())
        .collect();
    assert_eq!(read.len(), expected.len());
    assert!(read == expected, "records changed in the move");
    // The removed replica deletes its copy.
    let old = cluster.dir.path().join(format!("broker-1/logs/{TOPIC}-0"));
    let deadline = Instant::now() + WAIT;
    while old.exists() {
        assert!(Instant::now() < deadline, "broker 1 kept its copy");
        thread::sleep(Duration::from_millis(100));
    }
    let end = i64::try_from(expected.len()).unwrap();
    assert_replicas_identical(&mut cluster, TOPIC, &[2, 3], end);
}

/// The earliest offset of partition 0 as `addr` answers it (ListOffsets, timestamp -2).
fn earliest_offset(addr: SocketAddr, topic: &str) -> Option<i64> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let request = kafka_protocol::messages::ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
    let response = KafkaConn::connect(addr).ok()?.send(&request, 7).ok()?;
    let p = response.topics.first()?.partitions.first()?;
    (p.error_code == 0).then_some(p.offset)
}

#[test]
fn records_deleted_on_the_leader_stay_deleted_after_a_failover() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    const TOPIC: &str = "deleted";
    let mut cluster = Cluster::start(3, 3, FAST_FAILOVER).expect("cluster starts");
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2, 3], 2).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "leader 1 with the full ISR", |v| {
            v.leader == 1 && full_isr(v)
        })
        .unwrap();
    let mut leader = KafkaConn::connect(cluster.member(1).kafka_addr).unwrap();
    let values: Vec<Vec<u8>> = (0..20).map(|i| format!("r{i}").into_bytes()).collect();
    assert_eq!(
        produce_to(&mut leader, TOPIC, 0, plain_batch(&values[..10]), -1).unwrap(),
        (0, 0)
    );
    assert_eq!(
        produce_to(&mut leader, TOPIC, 0, plain_batch(&values[10..]), -1).unwrap(),
        (0, 10)
    );
    let request = kafka_protocol::messages::DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name(TOPIC))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(10)])]);
    let response = leader.send(&request, 2).unwrap();
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    // Followers learn the new log start from their next fetches.
    thread::sleep(Duration::from_secs(2));
    cluster.kill(1);
    let view = cluster
        .wait_for(TOPIC, 0, WAIT, "a new leader", |v| v.leader > 1)
        .unwrap();
    let addr = cluster.member(view.leader).kafka_addr;
    let deadline = Instant::now() + WAIT;
    let earliest = loop {
        if let Some(offset) = earliest_offset(addr, TOPIC) {
            break offset;
        }
        assert!(Instant::now() < deadline, "the new leader never answered");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        earliest, 10,
        "deleted records came back on broker {}",
        view.leader
    );
}

/// The error code ElectLeaders (preferred) answers for partition 0 of `topic`.
fn elect_preferred(conn: &mut KafkaConn, topic: &str) -> i16 {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let request = kafka_protocol::messages::ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![0])]));
    let response = conn.send(&request, 2).expect("ElectLeaders");
    assert_eq!(response.error_code, 0);
    response.replica_election_results[0].partition_result[0].error_code
}

#[test]
fn a_preferred_election_moves_leadership_back_after_a_failover() {
    const TOPIC: &str = "preferred";
    let mut cluster = Cluster::start(3, 3, FAST_FAILOVER).expect("cluster starts");
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2, 3], 1).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "leader 1", |v| v.leader == 1 && full_isr(v))
        .unwrap();
    let mut conn = cluster.connect_any().unwrap();
    assert_eq!(elect_preferred(&mut conn, TOPIC), 84, "ELECTION_NOT_NEEDED");
    cluster.stop(1).unwrap();
    let moved = cluster
        .wait_for(TOPIC, 0, WAIT, "leadership moved", |v| v.leader > 1)
        .unwrap();
    let mut conn = cluster.connect_any().unwrap();
    assert_eq!(
        elect_preferred(&mut conn, TOPIC),
        80,
        "PREFERRED_LEADER_NOT_AVAILABLE while broker 1 is down"
    );
    cluster.restart(1).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "broker 1 back in the ISR", full_isr)
        .unwrap();
    assert_eq!(elect_preferred(&mut conn, TOPIC), 0);
    let back = cluster
        .wait_for(TOPIC, 0, WAIT, "broker 1 leading", |v| v.leader == 1)
        .unwrap();
    assert!(back.leader_epoch > moved.leader_epoch);
}

#[test]
fn a_paused_leader_that_resumes_after_losing_leadership_loses_no_acknowledged_record() {
    const TOPIC: &str = "paused";
    let mut cluster = Cluster::start(3, 3, FAST_FAILOVER).expect("cluster starts");
    create_topic(&mut cluster.connect_any().unwrap(), TOPIC, &[1, 2, 3], 2).unwrap();
    let addrs: Vec<SocketAddr> = cluster.members.iter().map(|m| m.kafka_addr).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(addrs, TOPIC, stop.clone(), Duration::from_secs(300));
    for _round in 0..2 {
        let view = cluster
            .wait_for(TOPIC, 0, WAIT, "a leader with the full ISR", full_isr)
            .unwrap();
        // SIGSTOP outlives the 2 s session: the controller fences the frozen leader and moves
        // leadership; on SIGCONT the old leader must notice before acknowledging anything.
        cluster.signal(view.leader, "STOP").unwrap();
        let moved = cluster.wait_for(TOPIC, 0, WAIT, "a new leader", |v| {
            v.leader > 0 && v.leader != view.leader
        });
        cluster.signal(view.leader, "CONT").unwrap();
        moved.unwrap();
        thread::sleep(Duration::from_secs(2));
    }
    cluster
        .wait_for(TOPIC, 0, WAIT, "the full ISR after the pauses", full_isr)
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().expect("producer thread");
    assert!(
        produced.acked.len() >= 20,
        "too little progress: {produced:?}"
    );
    produced.assert_only_retriable_errors();
    let count = assert_acked_present(&cluster, TOPIC, &produced.acked);
    cluster
        .wait_for(TOPIC, 0, WAIT, "the full ISR before stopping", full_isr)
        .unwrap();
    assert_replicas_identical(
        &mut cluster,
        TOPIC,
        &[1, 2, 3],
        i64::try_from(count).unwrap(),
    );
}

/// While broker 3 is down one of its topics is deleted and another's partition reassigned
/// away from it: when it comes back neither log is left in place, while a log it still hosts
/// stays. (The manager's unit tests cover logs moved aside at start.)
#[test]
fn a_topic_deleted_or_a_partition_moved_while_a_replica_was_down_leaves_no_live_log_behind() {
    const DOOMED: &str = "doomed";
    const KEPT: &str = "kept";
    const MOVED: &str = "moved";
    // One voter: broker 3 is a learner, so stopping it keeps the quorum. Frequent snapshots
    // purge the metadata log broker 3 missed, so it catches up from a snapshot; the log must
    // be gone afterwards whichever way the broker learns of the deletion.
    let mut args = FAST_FAILOVER.to_vec();
    args.extend(["--set", "metadata.snapshot_interval_entries=10"]);
    let mut cluster = Cluster::start(3, 1, &args).expect("cluster starts");
    let mut conn = cluster.connect_any().unwrap();
    create_topic(&mut conn, DOOMED, &[1, 2, 3], 1).unwrap();
    create_topic(&mut conn, KEPT, &[1, 2, 3], 1).unwrap();
    create_topic(&mut conn, MOVED, &[1, 2, 3], 1).unwrap();
    for topic in [DOOMED, KEPT, MOVED] {
        cluster
            .wait_for(topic, 0, WAIT, "the full ISR", full_isr)
            .unwrap();
    }
    let logs = cluster.dir.path().join("broker-3/logs");
    // The ISR starts as the replica list: wait until broker 3 really opened the logs.
    let deadline = Instant::now() + WAIT;
    while ![DOOMED, KEPT, MOVED]
        .iter()
        .all(|t| logs.join(format!("{t}-0")).is_dir())
    {
        assert!(Instant::now() < deadline, "broker 3 did not open the logs");
        thread::sleep(Duration::from_millis(50));
    }

    cluster.stop(3).unwrap();
    let delete = kafka_protocol::messages::DeleteTopicsRequest::default()
        .with_topic_names(vec![topic_name(DOOMED)])
        .with_timeout_ms(10_000);
    let mut conn = cluster.connect_any().unwrap();
    assert_eq!(conn.send(&delete, 5).unwrap().responses[0].error_code, 0);
    assert!(logs.join("doomed-0").is_dir(), "broker 3 was down");
    // Brokers 1 and 2 are in sync, so the reassignment completes without broker 3.
    assert_eq!(reassign(&mut conn, MOVED, Some(&[1, 2])), 0);
    cluster
        .wait_for(MOVED, 0, WAIT, "replicas 1 and 2 only", |v| {
            v.replicas == [1, 2]
        })
        .unwrap();
    // Enough metadata changes for a few snapshots and purges.
    for i in 0..15 {
        let filler = format!("filler-{i}");
        create_topic(&mut conn, &filler, &[1, 2], 1).unwrap();
        let delete = kafka_protocol::messages::DeleteTopicsRequest::default()
            .with_topic_names(vec![topic_name(&filler)])
            .with_timeout_ms(10_000);
        assert_eq!(conn.send(&delete, 5).unwrap().responses[0].error_code, 0);
    }

    cluster.restart(3).unwrap();
    // Either log is deleted when the broker applies the change to a log it opened (renamed to
    // `.deleting`, then removed), or moved aside (`.stray`, data kept) when its image already
    // had the change and it never opened the log; never left in place.
    let settled = |names: &[String]| {
        names
            .iter()
            .filter(|name| name.starts_with("doomed-0") || name.starts_with("moved-0"))
            .all(|name| name.ends_with(".stray"))
    };
    let deadline = Instant::now() + WAIT;
    let names = loop {
        let names: Vec<String> = std::fs::read_dir(&logs)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        if settled(&names) {
            break names;
        }
        assert!(
            Instant::now() < deadline,
            "logs of the deleted topic or the moved partition left on broker 3: {names:?}\n{}",
            cluster.log_text(3)
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        names.iter().any(|name| name == "kept-0"),
        "a live topic's log stays: {names:?}"
    );
}
