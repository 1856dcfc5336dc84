//! Cluster identity on the wire: raft and controller requests of another cluster, for another
//! node or from a non-member are refused before they reach openraft or the controller, and
//! two clusters whose addresses overlap each form their own quorum. Also: a failed raft core is
//! reported, a stopped one is not.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::Vote;
use streambus_proto::raft::v1 as pb;
use streambus_proto::raft::v1::controller_service_client::ControllerServiceClient;
use streambus_proto::raft::v1::raft_service_client::RaftServiceClient;
use streambus_raft::command::TopicAssignment;
use streambus_raft::{ClusterId, MetadataNode, NodeConfig, RaftError, TypeConfig};
use tonic::transport::Channel;

use crate::cluster::{
    assert_applied, create_topic, eventually, fast, register, LoopbackCluster, WAIT,
};

/// A term no election of these tests reaches: seeing it in a node's metrics means a forged
/// request got through to openraft.
const FORGED_TERM_STEP: u64 = 1_000;

async fn raft_client(addr: &str) -> RaftServiceClient<Channel> {
    RaftServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

fn identity(cluster_id: &str, sender: u64, target: u64) -> Option<pb::Identity> {
    Some(pb::Identity {
        cluster_id: cluster_id.to_owned(),
        sender_node_id: sender,
        target_node_id: target,
    })
}

fn vote_request(term: u64, candidate: u64, identity: Option<pb::Identity>) -> pb::VoteRequest {
    let rpc: VoteRequest<u64> = VoteRequest::new(Vote::new(term, candidate), None);
    pb::VoteRequest {
        payload: serde_json::to_vec(&rpc).expect("serializes"),
        identity,
    }
}

fn append_request(
    term: u64,
    leader: u64,
    identity: Option<pb::Identity>,
) -> pb::AppendEntriesRequest {
    let rpc: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(term, leader),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    pb::AppendEntriesRequest {
        payload: serde_json::to_vec(&rpc).expect("serializes"),
        identity,
    }
}

/// Asserts a refusal named `name` (the start of the status message).
fn assert_refused<T: std::fmt::Debug>(outcome: Result<T, tonic::Status>, name: &str) {
    let status = outcome.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().starts_with(name),
        "{name} expected: {status:?}"
    );
}

fn term_of(node: &MetadataNode) -> u64 {
    node.metrics().borrow().current_term
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_requests_of_another_cluster_or_node_never_reach_openraft() {
    let cluster = LoopbackCluster::start(3, fast).await;
    let leader = cluster.leader().await;
    let target = (1..=3).find(|id| *id != leader).expect("a follower");
    let node = cluster.node(target);
    let ours = cluster.cluster_id.as_str();
    let forged = term_of(node) + FORGED_TERM_STEP;
    let member = (1..=3).find(|id| *id != target).expect("another member");
    let mut client = raft_client(&cluster.addrs[&target]).await;

    // The incident: votes and appends with high terms from a node 3 of a cluster that just
    // stopped on these ports.
    let other = ClusterId::random();
    let refused = client
        .vote(vote_request(
            forged,
            member,
            identity(other.as_str(), member, target),
        ))
        .await;
    assert_refused(refused, "INCONSISTENT_CLUSTER_ID");
    let refused = client
        .append_entries(append_request(
            forged,
            member,
            identity(other.as_str(), member, target),
        ))
        .await;
    assert_refused(refused, "INCONSISTENT_CLUSTER_ID");
    // Meant for another node whose address leads here.
    let refused = client
        .vote(vote_request(forged, member, identity(ours, member, 7)))
        .await;
    assert_refused(refused, "INCONSISTENT_TARGET_NODE");
    // A node of this cluster that is no member: neither a candidate nor, for a term this node
    // already knows, a leader.
    let refused = client
        .vote(vote_request(forged, 9, identity(ours, 9, target)))
        .await;
    assert_refused(refused, "UNKNOWN_SENDER_NODE");
    let known_term = term_of(node);
    let refused = client
        .append_entries(append_request(known_term, 9, identity(ours, 9, target)))
        .await;
    assert_refused(refused, "UNKNOWN_SENDER_NODE");
    // No identity at all (a build from before identities).
    let refused = client.vote(vote_request(forged, member, None)).await;
    assert_refused(refused, "MISSING_IDENTITY");
    // The identity must name the sender the raft request names.
    let refused = client
        .vote(vote_request(forged, member, identity(ours, 9, target)))
        .await;
    assert_refused(refused, "INCONSISTENT_SENDER_NODE");

    // An append of a higher term that reached openraft would have been adopted at once.
    assert!(
        term_of(node) < forged,
        "a refused request changed the term: {}",
        term_of(node)
    );

    // The control: the same append, properly addressed by a member, does reach openraft (a
    // higher term is adopted at once; a vote would be turned down by the leader lease).
    let accepted = client
        .append_entries(append_request(
            forged,
            member,
            identity(ours, member, target),
        ))
        .await;
    assert!(accepted.is_ok(), "{accepted:?}");
    eventually("the forged term reaches openraft", || async {
        (term_of(node) >= forged).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_requests_of_another_cluster_are_refused() {
    let cluster = LoopbackCluster::start(1, fast).await;
    let leader = cluster.leader().await;
    let channel = Channel::from_shared(format!("http://{}", cluster.addrs[&leader]))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut client = ControllerServiceClient::new(channel);
    let before = cluster.node(leader).image().metadata_offset();
    let command = streambus_raft::controller::ControllerRequest::Command(create_topic(
        "foreign",
        3,
        TopicAssignment::Auto {
            partitions: 1,
            replication_factor: 1,
        },
    ));
    let refused = client
        .write(pb::WriteRequest {
            payload: serde_json::to_vec(&command).expect("serializes"),
            identity: identity(ClusterId::random().as_str(), 5, leader),
        })
        .await;
    assert_refused(refused, "INCONSISTENT_CLUSTER_ID");
    let heartbeat = streambus_raft::Heartbeat {
        broker_id: 5,
        incarnation_id: streambus_raft::command::IncarnationId([5; 16]),
        broker_epoch: 1,
    };
    let refused = client
        .heartbeat(pb::HeartbeatRequest {
            payload: serde_json::to_vec(&heartbeat).expect("serializes"),
            identity: identity(ClusterId::random().as_str(), 5, leader),
        })
        .await;
    assert_refused(refused, "INCONSISTENT_CLUSTER_ID");
    let image = cluster.node(leader).image();
    assert!(image.topic_by_name("foreign").is_none());
    assert_eq!(image.metadata_offset(), before, "nothing was committed");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clusters_whose_voter_addresses_overlap_each_form_their_own_quorum() {
    let a = LoopbackCluster::start(3, fast).await;
    let a_leader = a.leader().await;

    // Cluster B: nodes 1 and 2 of its own, and "node 3" at the address of A's node 3, as if
    // B's third broker had been given a stale address. B must form a quorum of 2 without it.
    let b_dir = tempfile::tempdir().expect("temp dir");
    let b_id = ClusterId::random();
    let mut listeners = BTreeMap::new();
    for id in 1..=2u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listeners.insert(id, listener);
    }
    let mut voters: BTreeMap<u64, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().expect("addr").to_string()))
        .collect();
    voters.insert(3, a.addrs[&3].clone());
    let mut b = Vec::new();
    for (id, listener) in listeners {
        let mut config = NodeConfig::single_voter(
            id,
            b_id.clone(),
            listener.local_addr().expect("addr"),
            b_dir.path().join(format!("node-{id}")),
        );
        config.initial_voters = voters.clone();
        fast(&mut config);
        let node = MetadataNode::start_with_listener(config, listener)
            .await
            .expect("starts");
        b.push(node);
    }
    let b_leader = eventually("a leader of cluster B", || async {
        let leader = b[0].controller_id()?;
        (leader <= 2 && b[1].controller_id() == Some(leader)).then_some(leader)
    })
    .await;
    let b_node = &b[usize::try_from(b_leader - 1).expect("small")];

    // Both serve writes, each in its own log.
    register(a.node(a_leader), 1, None).await;
    register(b_node, 1, None).await;
    let written = b_node
        .write(create_topic(
            "only-in-b",
            2,
            TopicAssignment::Auto {
                partitions: 1,
                replication_factor: 1,
            },
        ))
        .await
        .expect("B commits");
    assert_applied(&written);
    // B's leader never got one entry across to its "node 3": A's node 3 refused everything.
    let progress = b_node.metrics().borrow().replication.clone();
    let progress = progress.expect("B's leader replicates");
    assert_eq!(
        progress.get(&3),
        Some(&None),
        "B matched a log on A's node 3: {progress:?}"
    );
    a.converge("A's broker 1", |image| image.broker(1).is_some())
        .await;
    for (id, node) in &a.nodes {
        assert!(
            node.image().topic_by_name("only-in-b").is_none(),
            "A's node {id} saw B's topic"
        );
        let metrics = node.metrics().borrow().clone();
        let members: Vec<u64> = metrics.membership_config.voter_ids().collect();
        assert_eq!(members, vec![1, 2, 3], "A's node {id}");
    }
    // A's node 3 stayed A's: it follows A's leader, and B's votes never moved its term to B's.
    eventually("A's node 3 following A's leader", || async {
        (a.node(3).controller_id() == Some(a_leader)).then_some(())
    })
    .await;

    for node in b {
        node.shutdown().await.expect("B stops");
    }
    a.shutdown().await;
}

/// A single-voter node of a new cluster, its data under `dir`.
async fn start_alone(dir: &std::path::Path) -> MetadataNode {
    let mut config = NodeConfig::single_voter(
        1,
        ClusterId::random(),
        "127.0.0.1:0".parse().expect("addr"),
        dir.join("meta"),
    );
    fast(&mut config);
    MetadataNode::start(config).await.expect("starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_raft_core_is_reported_as_a_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start_alone(dir.path()).await;
    eventually("node 1 leads itself", || async {
        (node.controller_id() == Some(1)).then_some(())
    })
    .await;
    // Runs inside the core task, like the openraft bug of issue 21 (an index out of bounds
    // while applying entries).
    node.raft()
        .external_request(|_| panic!("injected raft core panic"));
    let failure = tokio::time::timeout(WAIT, node.failed())
        .await
        .expect("the failure is reported");
    assert!(
        matches!(&failure, RaftError::CoreFailed(reason) if reason.contains("panic")),
        "{failure}"
    );
    let _ = node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shut_down_on_purpose_reports_no_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start_alone(dir.path()).await;
    let watcher = tokio::spawn({
        let node = node.clone();
        async move { node.failed().await }
    });
    node.shutdown().await.expect("stops");
    let outcome = tokio::time::timeout(Duration::from_millis(500), watcher).await;
    assert!(outcome.is_err(), "a clean stop was reported: {outcome:?}");
}
