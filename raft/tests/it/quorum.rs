//! Elections, commits, failover, catch-up and restarts of a three-voter quorum.

use std::time::Instant;

use streambus_raft::command::{AllocateProducerIds, TopicAssignment};
use streambus_raft::{MetadataCommand, MetadataResponse};

use crate::cluster::{
    assert_applied, content, create_topic, eventually, fast, register, LoopbackCluster,
};

async fn three_brokers(cluster: &LoopbackCluster) {
    for broker in 1..=3 {
        // Through different nodes: followers forward to the controller.
        register(cluster.node(broker as u64), broker, None).await;
    }
    cluster
        .converge("three brokers", |image| image.brokers().count() == 3)
        .await;
}

fn auto(partitions: u32, replication_factor: u16) -> TopicAssignment {
    TopicAssignment::Auto {
        partitions,
        replication_factor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_elect_one_leader_and_commit_through_any_node() {
    let cluster = LoopbackCluster::start(3, fast).await;
    let leader = cluster.leader().await;
    assert!((1..=3).contains(&leader));
    three_brokers(&cluster).await;

    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let response = cluster
        .node(follower)
        .write(create_topic("orders", 1, auto(6, 3)))
        .await
        .expect("commits");
    assert_applied(&response);
    cluster
        .converge("orders on every node", |image| {
            image
                .topic_by_name("orders")
                .is_some_and(|topic| topic.partitions.len() == 6)
        })
        .await;
    let images: Vec<_> = cluster
        .nodes
        .values()
        .map(|n| content(&n.image()))
        .collect();
    assert!(images.windows(2).all(|w| w[0] == w[1]), "images differ");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_is_replaced_and_no_committed_entry_is_lost() {
    let mut cluster = LoopbackCluster::start(3, fast).await;
    let old_leader = cluster.leader().await;
    three_brokers(&cluster).await;
    for i in 0..5u8 {
        let name = format!("topic-{i}");
        let response = cluster
            .node(old_leader)
            .write(create_topic(&name, 10 + i, auto(2, 3)))
            .await
            .expect("commits");
        assert_applied(&response);
    }
    let committed = content(&cluster.node(old_leader).image());

    let killed_at = Instant::now();
    cluster.stop(old_leader).await;
    let new_leader = cluster.leader().await;
    eprintln!("new controller after {:?}", killed_at.elapsed());
    assert_ne!(new_leader, old_leader);
    cluster
        .converge("all five topics on the survivors", |image| {
            (0..5).all(|i| image.topic_by_name(&format!("topic-{i}")).is_some())
        })
        .await;
    for node in cluster.nodes.values() {
        assert_eq!(
            content(&node.image()),
            committed,
            "a committed entry was lost"
        );
    }

    let response = cluster
        .node(new_leader)
        .write(create_topic("after-failover", 30, auto(1, 2)))
        .await
        .expect("the new leader commits with two of three voters");
    assert_applied(&response);

    cluster.restart(old_leader).await;
    cluster
        .converge("the old leader catches up", |image| {
            image.topic_by_name("after-failover").is_some()
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_catches_up_from_a_snapshot() {
    fn snapshot_often(config: &mut streambus_raft::NodeConfig) {
        fast(config);
        config.snapshot_logs_since_last = 20;
    }
    let mut cluster = LoopbackCluster::start(3, snapshot_often).await;
    let leader = cluster.leader().await;
    three_brokers(&cluster).await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.stop(lagging).await;

    let broker_epoch = cluster
        .node(leader)
        .image()
        .broker(1)
        .expect("broker 1")
        .broker_epoch;
    for _ in 0..120 {
        let response = cluster
            .node(leader)
            .write(MetadataCommand::AllocateProducerIds(AllocateProducerIds {
                broker_id: 1,
                broker_epoch,
                count: 10,
            }))
            .await
            .expect("commits");
        assert!(matches!(
            response,
            MetadataResponse::ProducerIdsAllocated { .. }
        ));
    }
    // The leader has snapshotted and purged the entries the stopped node is missing.
    let purged = eventually("the leader purges its log", || async {
        let metrics = cluster.node(leader).metrics().borrow().clone();
        metrics.purged.filter(|purged| purged.index > 40)
    })
    .await;
    eprintln!("leader purged up to {purged}");

    let node = cluster.restart(lagging).await;
    let expected = cluster.node(leader).image().next_producer_id();
    cluster
        .converge("the restarted node's producer ids", |image| {
            image.next_producer_id() == expected
        })
        .await;
    let metrics = node.metrics().borrow().clone();
    assert!(
        metrics.snapshot.is_some_and(|s| s.index >= purged.index),
        "the node caught up without a snapshot: {metrics:?}"
    );
    assert_eq!(
        content(&node.image()),
        content(&cluster.node(leader).image())
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_cannot_commit() {
    let mut cluster = LoopbackCluster::start(3, fast).await;
    cluster.leader().await;
    three_brokers(&cluster).await;
    let survivor = 3;
    cluster.stop(1).await;
    cluster.stop(2).await;
    let before = content(&cluster.node(survivor).image());

    let outcome = cluster
        .node(survivor)
        .write(create_topic("minority", 40, auto(1, 1)))
        .await;
    assert!(outcome.is_err(), "a lone voter committed: {outcome:?}");
    assert_eq!(content(&cluster.node(survivor).image()), before);

    // With a majority back, writes commit again.
    cluster.restart(1).await;
    cluster.leader().await;
    let response = cluster
        .node(survivor)
        .write(create_topic("majority", 41, auto(1, 1)))
        .await
        .expect("commits with two voters");
    assert_applied(&response);
    assert!(cluster
        .node(survivor)
        .image()
        .topic_by_name("minority")
        .is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_every_voter_gives_back_the_same_image() {
    let mut cluster = LoopbackCluster::start(3, fast).await;
    cluster.leader().await;
    three_brokers(&cluster).await;
    for i in 0..4u8 {
        let response = cluster
            .node(1)
            .write(create_topic(&format!("t{i}"), 50 + i, auto(3, 2)))
            .await
            .expect("commits");
        assert_applied(&response);
    }
    // A write returns once the leader applied it; followers may still be behind.
    let leader = cluster.leader().await;
    let expected_offset = cluster.node(leader).image().metadata_offset();
    cluster
        .converge("every node applied everything", |image| {
            image.metadata_offset() >= expected_offset
        })
        .await;
    let before = content(&cluster.node(leader).image());
    assert!(before.topic_by_name("t3").is_some());

    for id in 1..=3 {
        cluster.stop(id).await;
    }
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    cluster
        .converge("the restarted nodes replayed the log", |image| {
            image.metadata_offset() >= expected_offset
        })
        .await;
    for (id, node) in &cluster.nodes {
        assert_eq!(content(&node.image()), before, "node {id} image changed");
    }
    cluster.shutdown().await;
}
