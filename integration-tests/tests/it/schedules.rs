//! Seeded fault schedules under an acks=all producer: power losses (a broker killed and the
//! unsynced tail of its active segment cut at a seeded point), power losses of the last ISR
//! member, and fsync failures on the partition leader (a failpoint armed in every broker, fired
//! by an fsync the test asks for), one fault at a time, each followed by the full ISR again. Every acknowledged record must be
//! read back at its offset and the replicas must end identical.
//!
//! The seed is printed with the schedule; `STREAMBUS_SCHEDULE_SEED=<seed>` replays it (the
//! broker processes never see `STREAMBUS_*` variables of the test's environment). A first
//! piece of the reliability suite (issue 19), which grows the fault list and the checker.
//! `make test` runs one schedule; `make chaos` runs them for a time bound.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use streambus_integration_tests::cluster::{Cluster, FAST_FAILOVER};
use streambus_integration_tests::kafka::{plain_batch, produce_to};
use streambus_integration_tests::KafkaConn;

use crate::replication::{
    assert_acked_present, assert_replicas_identical, create_topic_with, full_isr, spawn_producer,
    WAIT,
};

const TOPIC: &str = "schedule";
/// Faults per schedule, unless `STREAMBUS_SCHEDULE_ROUNDS` says otherwise (`make chaos`).
const ROUNDS: usize = 4;
/// Brokers 1-5; 1, 2 and 3 are the metadata quorum's voters.
const BROKERS: usize = 5;
/// The topic's replicas: at most one voter among them, so a fault that stops all three still
/// leaves the quorum its majority (brokers 1 and 2) to fence and elect.
const REPLICAS: [i32; 3] = [3, 4, 5];
/// Every broker's next log fsync fails, once per process; no log fsyncs happen unless a topic
/// asks for them (`flush.messages`), so the test chooses when and where it fires.
const ARMED: &str = "log::fsync=1*return";

/// One fault of a schedule.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Broker `broker` loses power: SIGKILL, then its active segment of the topic keeps only
    /// the first `keep_per_mille`/1000 of its bytes (what was never fsynced may be gone; the
    /// cut may keep less than a real power loss would, a harder fault), then it restarts.
    PowerLoss { broker: i32, keep_per_mille: u64 },
    /// The partition leader's next fsync fails: its log directory goes offline, leadership
    /// moves, and the directory comes back once healthy.
    FsyncFailureOnLeader,
    /// Both followers stop (SIGSTOP) until they are fenced and the ISR is the leader alone,
    /// then the leader loses power as in [`Fault::PowerLoss`], then the followers resume. The
    /// follower fenced last left an ISR below `min.insync.replicas` and is an eligible leader
    /// replica (KIP-966): it takes over cleanly, and the leader, back uncleanly, follows.
    PowerLossOfLastIsrMember { keep_per_mille: u64 },
}

fn schedule_seed() -> u64 {
    std::env::var("STREAMBUS_SCHEDULE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos() as u64)
        })
}

fn schedule(seed: u64) -> Vec<Fault> {
    let rounds = std::env::var("STREAMBUS_SCHEDULE_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(ROUNDS)
        .clamp(1, 100);
    let mut rng = StdRng::seed_from_u64(seed);
    (0..rounds)
        .map(|_| match rng.random_range(0..10) {
            0..=3 => Fault::PowerLoss {
                broker: REPLICAS[rng.random_range(0..REPLICAS.len())],
                keep_per_mille: rng.random_range(0..=1000),
            },
            4..=6 => Fault::FsyncFailureOnLeader,
            _ => Fault::PowerLossOfLastIsrMember {
                keep_per_mille: rng.random_range(0..=1000),
            },
        })
        .collect()
}

/// The topic's newest segment file on broker `id`.
fn active_segment(root: &Path, id: i32) -> Option<PathBuf> {
    let dir = root.join(format!("broker-{id}/logs/{TOPIC}-0"));
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop()
}

/// See [`Fault::PowerLoss`].
fn power_loss(cluster: &mut Cluster, root: &Path, broker: i32, keep_per_mille: u64) {
    cluster.kill(broker);
    cut_active_segment(root, broker, keep_per_mille);
    cluster.restart(broker).unwrap();
}

/// What a power loss leaves of a killed broker's active segment: its first
/// `keep_per_mille`/1000.
fn cut_active_segment(root: &Path, broker: i32, keep_per_mille: u64) {
    if let Some(segment) = active_segment(root, broker) {
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len * keep_per_mille / 1000).unwrap();
    }
}

/// The fsync-trigger topic of broker `id`: its only replica, fsynced at every append.
fn trigger_topic(id: i32) -> String {
    format!("fsync-trigger-{id}")
}

#[test]
fn seeded_schedules_of_power_losses_and_leader_fsync_failures_lose_no_acknowledged_record() {
    let seed = schedule_seed();
    let faults = schedule(seed);
    println!("schedule seed {seed} (replay: STREAMBUS_SCHEDULE_SEED={seed}): {faults:?}");
    let env: Vec<(i32, &str, &str)> = REPLICAS
        .iter()
        .map(|&id| (id, "FAILPOINTS", ARMED))
        .collect();
    let mut cluster =
        Cluster::start_with_env(BROKERS, 3, FAST_FAILOVER, &env).expect("cluster starts");
    let root = cluster.dir.path().to_path_buf();
    let mut conn = cluster.connect_any().unwrap();
    // The records carry 1970 timestamps: without `retention.ms=-1`, a segment rolled after a
    // reopen (its roll time is its first record's) would be deleted as expired on that replica
    // alone, which the end comparison would take for a lost prefix.
    create_topic_with(
        &mut conn,
        TOPIC,
        &REPLICAS,
        &[("min.insync.replicas", "2"), ("retention.ms", "-1")],
    )
    .unwrap();
    for id in REPLICAS {
        create_topic_with(
            &mut conn,
            &trigger_topic(id),
            &[id],
            &[("flush.messages", "1")],
        )
        .unwrap();
    }
    drop(conn);
    cluster
        .wait_for(TOPIC, 0, WAIT, "the full ISR", full_isr)
        .unwrap();
    let addrs: Vec<SocketAddr> = cluster.members.iter().map(|m| m.kafka_addr).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(addrs.clone(), TOPIC, stop.clone(), Duration::from_secs(600));
    // Brokers whose failpoint has not fired in their current process.
    let mut armed: BTreeSet<i32> = REPLICAS.into_iter().collect();
    let mut applied = Vec::new();
    for fault in faults {
        thread::sleep(Duration::from_millis(500));
        let leader = cluster
            .wait_for(TOPIC, 0, WAIT, "a leader", |v| v.leader > 0)
            .unwrap()
            .leader;
        // A leader whose failpoint already fired loses power instead (which re-arms it).
        let mut fault = match fault {
            Fault::FsyncFailureOnLeader if !armed.contains(&leader) => Fault::PowerLoss {
                broker: leader,
                keep_per_mille: 500,
            },
            other => other,
        };
        match fault {
            Fault::PowerLoss {
                broker,
                keep_per_mille,
            } => {
                power_loss(&mut cluster, &root, broker, keep_per_mille);
                armed.insert(broker);
            }
            Fault::PowerLossOfLastIsrMember { keep_per_mille } => {
                let followers: Vec<i32> = REPLICAS.into_iter().filter(|&b| b != leader).collect();
                for &follower in &followers {
                    cluster.signal(follower, "STOP").unwrap();
                }
                cluster
                    .wait_for(TOPIC, 0, WAIT, "the leader alone in the ISR", |v| {
                        v.leader == leader && v.isr == [leader]
                    })
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                cluster.kill(leader);
                cut_active_segment(&root, leader, keep_per_mille);
                for &follower in &followers {
                    cluster.signal(follower, "CONT").unwrap();
                }
                cluster
                    .wait_for(TOPIC, 0, WAIT, "an eligible leader replica leading", |v| {
                        v.leader > 0 && v.leader != leader
                    })
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                cluster.restart(leader).unwrap();
                armed.insert(leader);
            }
            Fault::FsyncFailureOnLeader => {
                // The trigger's append is fsynced and the fsync fails. Sent until leadership
                // moves: a broker back from a restart may not lead its trigger topic yet.
                let deadline = Instant::now() + WAIT;
                loop {
                    let (view, _) = cluster.describe(TOPIC, 0).expect("metadata");
                    if view.leader > 0 && view.leader != leader {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "seed {seed}: leadership never moved off {leader}, {view:?}\n{}",
                        cluster.logs_tail(30)
                    );
                    let answer = KafkaConn::connect(cluster.member(leader).kafka_addr).and_then(
                        |mut trigger| {
                            produce_to(
                                &mut trigger,
                                &trigger_topic(leader),
                                0,
                                plain_batch(&[b"fsync".to_vec()]),
                                1,
                            )
                        },
                    );
                    if matches!(answer, Ok((0, _))) {
                        // Appended and fsynced: this process's failpoint already fired (log
                        // recovery after a power loss fsyncs too). A power loss instead.
                        fault = Fault::PowerLoss {
                            broker: leader,
                            keep_per_mille: 500,
                        };
                        power_loss(&mut cluster, &root, leader, 500);
                        break;
                    }
                    thread::sleep(Duration::from_millis(200));
                }
                if matches!(fault, Fault::FsyncFailureOnLeader) {
                    armed.remove(&leader);
                }
            }
        }
        applied.push((fault, leader));
        cluster
            .wait_for(TOPIC, 0, WAIT, "the full ISR after the fault", full_isr)
            .unwrap_or_else(|e| panic!("seed {seed}, after {applied:?}: {e}"));
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().expect("producer thread");
    produced.assert_only_retriable_errors();
    println!(
        "seed {seed}: faults {applied:?}; {} records acknowledged, producer errors {:?}",
        produced.acked.len(),
        produced.errors
    );
    assert!(
        !produced.acked.is_empty(),
        "seed {seed}: nothing acknowledged"
    );
    // What each broker did to its copy of the topic, for a failure's reader.
    for id in REPLICAS {
        for line in cluster.log_text(id).lines().filter(|line| {
            line.contains(TOPIC)
                && [
                    "truncat", "restart", "opened", "retir", "recover", "offline", "online",
                ]
                .iter()
                .any(|word| line.contains(word))
        }) {
            println!("broker {id}: {line}");
        }
    }
    let count = assert_acked_present(&cluster, TOPIC, &produced.acked);
    let end = i64::try_from(count).unwrap();
    cluster
        .wait_for(TOPIC, 0, WAIT, "the full ISR before stopping", full_isr)
        .unwrap();
    assert_replicas_identical(&mut cluster, TOPIC, &REPLICAS, end);
}
