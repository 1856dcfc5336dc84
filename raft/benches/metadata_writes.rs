//! Metadata quorum figures with three voters on loopback, in one process, default timeouts:
//! write latency (p50/p99, one write in flight), write throughput (many writers), time from a
//! leader kill to a new controller, and time from a broker going silent to its partitions having
//! new leaders. Run with `cargo bench -p streambus-raft` (or `make bench`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use streambus_raft::command::{
    AllocateProducerIds, CreateTopic, Endpoint, TopicAssignment, TopicId,
};
use streambus_raft::testing::{wait_registered, LoopbackCluster, WAIT};
use streambus_raft::{BrokerInfo, BrokerLifecycle, MetadataCommand, MetadataNode};

const LATENCY_WRITES: usize = 2_000;
const THROUGHPUT_WRITERS: usize = 64;
const THROUGHPUT_DURATION: Duration = Duration::from_secs(5);
const FAILOVER_ROUNDS: usize = 3;
/// Kafka's default `broker.heartbeat.interval.ms`.
const BROKER_HEARTBEAT: Duration = Duration::from_millis(2_000);
/// Kafka's default `broker.session.timeout.ms`.
const BROKER_SESSION: Duration = Duration::from_millis(9_000);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn allocate(epoch: i64) -> MetadataCommand {
    MetadataCommand::AllocateProducerIds(AllocateProducerIds {
        broker_id: 1,
        broker_epoch: epoch,
        count: 1,
    })
}

async fn register_broker_one(node: &MetadataNode) -> (BrokerLifecycle, i64) {
    let lifecycle = BrokerLifecycle::spawn(node.clone(), info(1), BROKER_HEARTBEAT, BROKER_SESSION);
    let (broker_epoch, _) = wait_registered(lifecycle.state()).await;
    (lifecycle, broker_epoch)
}

fn info(id: i32) -> BrokerInfo {
    BrokerInfo {
        broker_id: id,
        endpoints: vec![Endpoint {
            name: "kafka".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: 9092,
        }],
        rack: None,
        previous_broker_epoch: None,
    }
}

async fn latency(cluster: &LoopbackCluster, via: u64, label: &str, epoch: i64) {
    let node = &cluster.nodes[&via];
    let mut samples = Vec::with_capacity(LATENCY_WRITES);
    for _ in 0..LATENCY_WRITES {
        let started = Instant::now();
        node.write(allocate(epoch)).await.expect("write");
        samples.push(started.elapsed());
    }
    samples.sort_unstable();
    println!(
        "write latency via {label:<8} p50 {:>8.2?}  p99 {:>8.2?}  ({LATENCY_WRITES} sequential writes)",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99)
    );
}

async fn throughput(node: &MetadataNode, epoch: i64) {
    let stop_at = Instant::now() + THROUGHPUT_DURATION;
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..THROUGHPUT_WRITERS {
        let node = node.clone();
        writers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < stop_at {
                node.write(allocate(epoch)).await.expect("write");
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for writer in writers {
        total += writer.await.expect("writer");
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "write throughput    {:>8.0} writes/s ({THROUGHPUT_WRITERS} concurrent writers, {total} writes in {seconds:.1} s)",
        total as f64 / seconds
    );
}

async fn failover(cluster: &mut LoopbackCluster) {
    let mut samples = Vec::new();
    for _ in 0..FAILOVER_ROUNDS {
        let leader = cluster.leader().await;
        let killed_at = Instant::now();
        cluster.stop(leader).await;
        let new_leader = cluster.leader().await;
        samples.push(killed_at.elapsed());
        assert_ne!(new_leader, leader);
        cluster.restart(leader).await;
        cluster.leader().await;
    }
    println!("leader kill -> new controller: {samples:.2?} (election timeout 500-1000 ms, leader lease 1000 ms)");
}

async fn broker_death(cluster: &LoopbackCluster) {
    let leader = cluster.leader().await;
    let lifecycles: Vec<BrokerLifecycle> = (2..=3)
        .map(|id| {
            BrokerLifecycle::spawn(
                cluster.nodes[&(id as u64)].clone(),
                info(id),
                BROKER_HEARTBEAT,
                BROKER_SESSION,
            )
        })
        .collect();
    let node = &cluster.nodes[&leader];
    node.wait_for_image(WAIT, |image| image.unfenced_brokers().count() == 3)
        .await
        .expect("three live brokers");
    node.write(MetadataCommand::CreateTopic(CreateTopic {
        name: "bench".to_owned(),
        topic_id: TopicId([9; 16]),
        assignment: TopicAssignment::Auto {
            partitions: 30,
            replication_factor: 3,
        },
        configs: BTreeMap::new(),
    }))
    .await
    .expect("topic");
    let silenced_at = Instant::now();
    lifecycles[0].stop();
    let moved = node
        .wait_for_image(WAIT, |image| {
            image.topic_by_name("bench").is_some_and(|topic| {
                topic
                    .partitions
                    .iter()
                    .all(|p| p.leader.is_some() && p.leader != Some(2))
            })
        })
        .await;
    assert!(moved.is_some(), "partitions never moved");
    println!(
        "broker silent -> partitions re-led: {:.2?} (session timeout 9 s, heartbeat 2 s)",
        silenced_at.elapsed()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Default timeouts: the figures are those of a broker with an untouched config.
        let mut cluster = LoopbackCluster::start(3, |_| {}).await;
        let leader = cluster.leader().await;
        let follower = (1..=3).find(|id| *id != leader).expect("follower");
        let (broker_one, epoch) = register_broker_one(&cluster.nodes[&leader]).await;
        println!("metadata quorum: 3 voters on loopback, RocksDB log with fsync per append");
        latency(&cluster, leader, "leader", epoch).await;
        latency(&cluster, follower, "follower", epoch).await;
        throughput(&cluster.nodes[&leader], epoch).await;
        failover(&mut cluster).await;
        broker_death(&cluster).await;
        drop(broker_one);
        cluster.shutdown().await;
    });
}
