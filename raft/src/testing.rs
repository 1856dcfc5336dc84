//! Test support, behind the `test-util` feature: [`LoopbackCluster`], metadata nodes in one
//! process talking gRPC over loopback, each with its own RocksDB directory, plus bounded waits.
//! Used by this crate's multi-node tests and its benchmark; never by production code.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::command::IncarnationId;
use crate::{ClusterId, MetadataImage, MetadataNode, NodeConfig, RegistrationState};

/// Long enough for elections on a loaded 2-core machine; every wait is bounded by it.
pub const WAIT: Duration = Duration::from_secs(30);

/// Metadata nodes on loopback: start, stop and restart them by id, and wait for conditions with
/// deadlines (never sleeps as synchronisation).
#[derive(Debug)]
pub struct LoopbackCluster {
    pub dir: tempfile::TempDir,
    /// One random id per cluster, so two clusters in one test never accept each other.
    pub cluster_id: ClusterId,
    pub addrs: BTreeMap<u64, String>,
    pub nodes: BTreeMap<u64, MetadataNode>,
    pub tune: fn(&mut NodeConfig),
}

impl LoopbackCluster {
    /// Starts `voters` nodes (ids 1..=voters) that bootstrap one cluster.
    pub async fn start(voters: u64, tune: fn(&mut NodeConfig)) -> LoopbackCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = BTreeMap::new();
        for id in 1..=voters {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listeners.insert(id, listener);
        }
        let addrs: BTreeMap<u64, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().expect("addr").to_string()))
            .collect();
        let mut cluster = LoopbackCluster {
            dir,
            cluster_id: ClusterId::random(),
            addrs,
            nodes: BTreeMap::new(),
            tune,
        };
        for (id, listener) in listeners {
            let config = cluster.config(id);
            let node = MetadataNode::start_with_listener(config, listener)
                .await
                .expect("node starts");
            cluster.nodes.insert(id, node);
        }
        cluster
    }

    /// Every node knows the initial voters: they bootstrap from the list, the other nodes use it
    /// as contacts until they learn the leader.
    pub fn config(&self, id: u64) -> NodeConfig {
        let addr = self.addrs[&id].clone();
        let mut config = NodeConfig::single_voter(
            id,
            self.cluster_id.clone(),
            addr.parse().expect("socket addr"),
            self.dir.path().join(format!("node-{id}")),
        );
        config.initial_voters = self
            .addrs
            .iter()
            .filter(|(id, _)| **id <= self.initial_voter_count())
            .map(|(id, addr)| (*id, addr.clone()))
            .collect();
        (self.tune)(&mut config);
        config
    }

    fn initial_voter_count(&self) -> u64 {
        // Nodes added later get ids above the initial ones and never bootstrap.
        self.addrs.len().min(3) as u64
    }

    /// Starts an extra node that is not an initial voter, on a fresh port.
    pub async fn add_node(&mut self, id: u64) -> MetadataNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.addrs
            .insert(id, listener.local_addr().expect("addr").to_string());
        let config = self.config(id);
        let node = MetadataNode::start_with_listener(config, listener)
            .await
            .expect("node starts");
        self.nodes.insert(id, node.clone());
        node
    }

    pub async fn stop(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("node running");
        node.shutdown().await.expect("clean shutdown");
    }

    /// Restarts a stopped node on its old port and data directory.
    pub async fn restart(&mut self, id: u64) -> MetadataNode {
        let config = self.config(id);
        let deadline = Instant::now() + WAIT;
        // The old listener's port can take a moment to be free again.
        let node = loop {
            match MetadataNode::start(config.clone()).await {
                Ok(node) => break node,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("restart of node {id} failed, retrying: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("node {id} does not restart: {error}"),
            }
        };
        self.nodes.insert(id, node.clone());
        node
    }

    pub fn node(&self, id: u64) -> &MetadataNode {
        &self.nodes[&id]
    }

    /// Waits until all running voters agree on one leader, and returns it. Nodes outside the
    /// voter set (learners, nodes never added) have no say.
    pub async fn leader(&self) -> u64 {
        eventually("a leader all running voters agree on", || async {
            let voters: Vec<&MetadataNode> = self
                .nodes
                .values()
                .filter(|node| {
                    let metrics = node.metrics().borrow().clone();
                    let is_voter = metrics
                        .membership_config
                        .membership()
                        .voter_ids()
                        .any(|id| id == node.node_id());
                    is_voter
                })
                .collect();
            let mut leaders = voters.iter().map(|n| n.controller_id());
            let first = leaders.next()??;
            if !self.nodes.contains_key(&first) {
                return None;
            }
            leaders.all(|l| l == Some(first)).then_some(first)
        })
        .await
    }

    /// Waits until every running node's image satisfies `ready`.
    pub async fn converge(&self, what: &str, ready: impl Fn(&MetadataImage) -> bool) {
        for (id, node) in &self.nodes {
            let image = node.wait_for_image(WAIT, &ready).await;
            assert!(image.is_some(), "node {id} never saw: {what}");
        }
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

/// Polls `check` every 5 ms until it returns `Some`, panicking after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until a [`BrokerLifecycle`](crate::BrokerLifecycle) is registered; returns its epoch and
/// incarnation.
pub async fn wait_registered(
    mut state: watch::Receiver<RegistrationState>,
) -> (i64, IncarnationId) {
    let registered = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, RegistrationState::Registered { .. })),
    )
    .await
    .expect("registered in time")
    .expect("lifecycle running")
    .to_owned();
    match registered {
        RegistrationState::Registered {
            incarnation_id,
            broker_epoch,
        } => (broker_epoch, incarnation_id),
        RegistrationState::Unregistered => unreachable!("waited for registration"),
    }
}
