//! Metadata quorum figures with three voters on loopback, in one process, default timeouts:
//! write latency (p50/p99, one write in flight), write throughput (many writers), time from a
//! leader kill to a new controller, and time from a broker going silent to its partitions having
//! new leaders. Run with `cargo bench -p streambus-raft` (or `make bench`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use streambus_raft::command::{
    AllocateProducerIds, CreateTopic, Endpoint, TopicAssignment, TopicId,
};
use streambus_raft::{
    BrokerInfo, BrokerLifecycle, MetadataCommand, MetadataNode, NodeConfig, RegistrationState,
};
use tokio::net::TcpListener;

const LATENCY_WRITES: usize = 2_000;
const THROUGHPUT_WRITERS: usize = 64;
const THROUGHPUT_DURATION: Duration = Duration::from_secs(5);
const FAILOVER_ROUNDS: usize = 3;
/// Kafka's default `broker.heartbeat.interval.ms`.
const BROKER_HEARTBEAT: Duration = Duration::from_millis(2_000);
/// Kafka's default `broker.session.timeout.ms`.
const BROKER_SESSION: Duration = Duration::from_millis(9_000);
const WAIT: Duration = Duration::from_secs(60);

struct Cluster {
    dir: tempfile::TempDir,
    addrs: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, MetadataNode>,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = BTreeMap::new();
        for id in 1..=3u64 {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let addrs: BTreeMap<u64, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().expect("addr").to_string()))
            .collect();
        let mut cluster = Cluster {
            dir,
            addrs,
            nodes: BTreeMap::new(),
        };
        for (id, listener) in listeners {
            let node = MetadataNode::start_with_listener(cluster.config(id), listener)
                .await
                .expect("node starts");
            cluster.nodes.insert(id, node);
        }
        cluster
    }

    /// The defaults every broker gets, with all three nodes as initial voters.
    fn config(&self, id: u64) -> NodeConfig {
        let mut config = NodeConfig::single_voter(
            id,
            self.addrs[&id].parse().expect("addr"),
            self.dir.path().join(format!("node-{id}")),
        );
        config.initial_voters = self.addrs.clone();
        config
    }

    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let leaders: Vec<Option<u64>> =
                self.nodes.values().map(|n| n.controller_id()).collect();
            if let Some(Some(first)) = leaders.first() {
                if self.nodes.contains_key(first) && leaders.iter().all(|l| l == &Some(*first)) {
                    return *first;
                }
            }
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

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
    let mut state = lifecycle.state();
    let registered = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, RegistrationState::Registered { .. })),
    )
    .await
    .expect("registers")
    .expect("running")
    .to_owned();
    let RegistrationState::Registered { broker_epoch, .. } = registered else {
        unreachable!("waited for registration")
    };
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
    }
}

async fn latency(cluster: &Cluster, via: u64, label: &str, epoch: i64) {
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

async fn failover(cluster: &mut Cluster) {
    let mut samples = Vec::new();
    for _ in 0..FAILOVER_ROUNDS {
        let leader = cluster.leader().await;
        let node = cluster.nodes.remove(&leader).expect("leader");
        let killed_at = Instant::now();
        node.shutdown().await.expect("shutdown");
        let new_leader = cluster.leader().await;
        samples.push(killed_at.elapsed());
        assert_ne!(new_leader, leader);
        let restarted = MetadataNode::start(cluster.config(leader))
            .await
            .expect("restart");
        cluster.nodes.insert(leader, restarted);
        cluster.leader().await;
    }
    println!("leader kill -> new controller: {samples:.2?} (election timeout 500-1000 ms, leader lease 1000 ms)");
}

async fn broker_death(cluster: &Cluster) {
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
        let mut cluster = Cluster::start().await;
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
        for node in cluster.nodes.values() {
            node.shutdown().await.expect("shutdown");
        }
    });
}
