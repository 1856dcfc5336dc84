//! Cluster formation and membership: single-voter mode, voters added and removed at runtime,
//! and brokers that follow the log as learners.

use std::time::Duration;

use streambus_raft::command::{Endpoint, TopicAssignment};
use streambus_raft::{BrokerInfo, BrokerLifecycle, ClusterId, MetadataNode, NodeConfig};

use crate::cluster::{
    assert_applied, create_topic, eventually, fast, register, wait_registered, LoopbackCluster,
    WAIT,
};

fn voters(node: &MetadataNode) -> Vec<u64> {
    let metrics = node.metrics().borrow().clone();
    let mut ids: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_voter_elects_itself_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::single_voter(
        7,
        ClusterId::random(),
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("meta"),
    );
    fast(&mut config);
    let node = MetadataNode::start(config).await.expect("starts");
    eventually("node 7 leads itself", || async {
        (node.controller_id() == Some(7)).then_some(())
    })
    .await;
    register(&node, 7, None).await;
    let response = node
        .write(create_topic(
            "solo",
            1,
            TopicAssignment::Auto {
                partitions: 3,
                replication_factor: 1,
            },
        ))
        .await
        .expect("commits");
    assert_applied(&response);
    let topic = node.image().topic_by_name("solo").expect("topic").clone();
    assert!(topic.partitions.iter().all(|p| p.leader == Some(7)));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn voters_are_added_and_removed_at_runtime() {
    let mut cluster = LoopbackCluster::start(3, fast).await;
    let leader = cluster.leader().await;
    register(cluster.node(1), 1, None).await;

    let added = cluster.add_node(4).await;
    let addr = cluster.addrs[&4].clone();
    cluster
        .node(leader)
        .add_voter(4, addr)
        .await
        .expect("node 4 joins");
    eventually("node 4 is a voter everywhere", || async {
        cluster
            .nodes
            .values()
            .all(|n| voters(n) == vec![1, 2, 3, 4])
            .then_some(())
    })
    .await;
    let caught_up = added
        .wait_for_image(WAIT, |image| image.broker(1).is_some())
        .await;
    assert!(caught_up.is_some(), "the new voter never received the log");

    // Remove a voter that is not the leader, through a follower (forwarded).
    let removed = (1..=3).find(|id| *id != leader).expect("a follower");
    let via = (1..=4)
        .find(|id| *id != leader && *id != removed)
        .expect("another node");
    cluster
        .node(via)
        .remove_voter(removed)
        .await
        .expect("removal commits");
    let expected: Vec<u64> = (1..=4).filter(|id| *id != removed).collect();
    eventually("the removed voter is gone from the voter set", || async {
        (voters(cluster.node(leader)) == expected).then_some(())
    })
    .await;
    cluster.stop(removed).await;

    let response = cluster
        .node(4)
        .write(create_topic(
            "after-change",
            2,
            TopicAssignment::Explicit(vec![vec![1]]),
        ))
        .await
        .expect("three of the new voters commit");
    assert_applied(&response);
    cluster
        .converge("the topic", |image| {
            image.topic_by_name("after-change").is_some()
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registered_broker_that_is_not_a_voter_follows_the_log_as_a_learner() {
    let mut cluster = LoopbackCluster::start(3, fast).await;
    cluster.leader().await;
    // Node 5 bootstraps nothing: it only serves raft and waits to be added.
    let learner = cluster.add_node(5).await;
    let port = learner.local_addr().port();
    let info = BrokerInfo {
        broker_id: 5,
        endpoints: vec![Endpoint {
            name: "raft".to_owned(),
            host: "127.0.0.1".to_owned(),
            port,
        }],
        rack: None,
        previous_broker_epoch: None,
    };
    // It knows no controller yet: its requests go to the initial voters until it learns one.
    let lifecycle = BrokerLifecycle::spawn(
        learner.clone(),
        info,
        Duration::from_millis(100),
        Duration::from_secs(600),
    );
    wait_registered(lifecycle.state()).await;
    let response = cluster
        .node(2)
        .write(create_topic(
            "seen-by-learner",
            3,
            TopicAssignment::Explicit(vec![vec![5]]),
        ))
        .await
        .expect("commits");
    assert_applied(&response);
    let image = learner
        .wait_for_image(WAIT, |image| {
            image.topic_by_name("seen-by-learner").is_some()
        })
        .await;
    assert!(image.is_some(), "the learner never received the log");
    assert_eq!(
        voters(cluster.node(1)),
        vec![1, 2, 3],
        "a learner must not vote"
    );
    drop(lifecycle);
    cluster.shutdown().await;
}
