//! Broker sessions: a broker that stops heartbeating is fenced and its partitions move to
//! surviving in-sync replicas with a bumped leader epoch; it comes back with a new incarnation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use streambus_raft::command::{Endpoint, TopicAssignment};
use streambus_raft::{BrokerInfo, BrokerLifecycle, NodeConfig};

use crate::cluster::{
    assert_applied, create_topic, eventually, fast, wait_registered, LoopbackCluster,
};

const HEARTBEAT: Duration = Duration::from_millis(200);
const SESSION: Duration = Duration::from_millis(1_500);

fn short_sessions(config: &mut NodeConfig) {
    fast(config);
    config.broker_session_timeout_ms = SESSION.as_millis() as u64;
}

/// A controller failover takes an election, and each live broker's heartbeat must then find
/// the new controller (its calls to the dead one time out first): on a loaded 2-core machine
/// that once took longer than [`SESSION`]. Kafka allows 9 s sessions for 2 s heartbeats; the
/// failover test allows 15 heartbeats.
const FAILOVER_SESSION: Duration = Duration::from_millis(3_000);

fn failover_sessions(config: &mut NodeConfig) {
    fast(config);
    config.broker_session_timeout_ms = FAILOVER_SESSION.as_millis() as u64;
}

fn broker(cluster: &LoopbackCluster, id: u64) -> BrokerLifecycle {
    broker_with_session(cluster, id, SESSION)
}

fn broker_with_session(cluster: &LoopbackCluster, id: u64, session: Duration) -> BrokerLifecycle {
    let info = BrokerInfo {
        broker_id: id as i32,
        endpoints: vec![Endpoint {
            name: "kafka".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: 9000 + id as u16,
        }],
        rack: Some(format!("rack-{id}")),
        previous_broker_epoch: None,
    };
    BrokerLifecycle::spawn(cluster.node(id).clone(), info, HEARTBEAT, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_broker_is_fenced_and_its_partitions_move_to_the_isr() {
    let cluster = LoopbackCluster::start(3, short_sessions).await;
    cluster.leader().await;
    let mut brokers: BTreeMap<u64, BrokerLifecycle> =
        (1..=3).map(|id| (id, broker(&cluster, id))).collect();
    let mut first_epochs = BTreeMap::new();
    for (id, lifecycle) in &brokers {
        first_epochs.insert(*id, wait_registered(lifecycle.state()).await);
    }
    let response = cluster
        .node(1)
        .write(create_topic(
            "fenced",
            1,
            TopicAssignment::Auto {
                partitions: 6,
                replication_factor: 3,
            },
        ))
        .await
        .expect("commits");
    assert_applied(&response);
    // The write returned once the controller applied it; node 1 may still be catching up.
    let before = cluster
        .node(1)
        .wait_for_image(crate::cluster::WAIT, |image| {
            image.topic_by_name("fenced").is_some()
        })
        .await
        .expect("node 1 sees the topic")
        .topic_by_name("fenced")
        .expect("topic")
        .clone();
    let victim = before.partitions[0]
        .leader
        .expect("partition 0 has a leader");

    let silenced_at = Instant::now();
    brokers
        .remove(&(victim as u64))
        .expect("victim lifecycle")
        .stop();
    let after = eventually("the victim's partitions have new leaders", || async {
        let image = cluster.node(1).image();
        let topic = image.topic_by_name("fenced")?;
        let moved = topic
            .partitions
            .iter()
            .all(|p| p.leader.is_some() && p.leader != Some(victim));
        (image.broker(victim)?.fenced && moved).then(|| topic.clone())
    })
    .await;
    eprintln!(
        "partitions re-led {:?} after the broker went silent",
        silenced_at.elapsed()
    );

    for (index, (old, new)) in before.partitions.iter().zip(&after.partitions).enumerate() {
        assert!(
            !new.isr.contains(&victim),
            "partition {index} keeps the fenced broker in its ISR"
        );
        assert!(
            new.isr.contains(&new.leader.expect("led")),
            "partition {index} leader outside ISR"
        );
        if old.leader == Some(victim) {
            assert_eq!(
                new.leader_epoch,
                old.leader_epoch + 1,
                "partition {index} epoch not bumped"
            );
        } else {
            assert_eq!(
                new.leader, old.leader,
                "partition {index} changed leader needlessly"
            );
        }
    }
    // The others kept heartbeating and stay unfenced.
    let image = cluster.node(1).image();
    for id in brokers.keys() {
        assert!(
            !image.broker(*id as i32).expect("registered").fenced,
            "broker {id} fenced"
        );
    }

    // The victim comes back as a new incarnation with a later epoch.
    let back = broker(&cluster, victim as u64);
    let (epoch, incarnation) = wait_registered(back.state()).await;
    let (old_epoch, old_incarnation) = first_epochs[&(victim as u64)];
    assert!(epoch > old_epoch);
    assert_ne!(incarnation, old_incarnation);
    eventually("the victim is unfenced", || async {
        let image = cluster.node(1).image();
        (!image.broker(victim)?.fenced).then_some(())
    })
    .await;
    drop(back);
    drop(brokers);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_controller_fences_the_dead_and_spares_the_living() {
    let mut cluster = LoopbackCluster::start(3, failover_sessions).await;
    let leader = cluster.leader().await;
    let mut brokers: BTreeMap<u64, BrokerLifecycle> = (1..=3)
        .map(|id| (id, broker_with_session(&cluster, id, FAILOVER_SESSION)))
        .collect();
    for lifecycle in brokers.values() {
        wait_registered(lifecycle.state()).await;
    }
    // The controller's node dies together with its broker.
    brokers.remove(&leader).expect("lifecycle").stop();
    cluster.stop(leader).await;
    let new_leader = cluster.leader().await;
    eventually("the dead broker is fenced", || async {
        let image = cluster.node(new_leader).image();
        image.broker(leader as i32)?.fenced.then_some(())
    })
    .await;
    // Two session timeouts later the living brokers are still unfenced.
    let until = Instant::now() + FAILOVER_SESSION * 2;
    while Instant::now() < until {
        let image = cluster.node(new_leader).image();
        for id in brokers.keys() {
            assert!(
                !image.broker(*id as i32).expect("registered").fenced,
                "live broker {id} fenced"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(brokers);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outside_the_raft_group_keeps_its_session_by_following_hints() {
    let mut cluster = LoopbackCluster::start(3, short_sessions).await;
    // Node 4's first contact is node 1: make sure node 1 is not the controller, so heartbeats
    // only arrive if node 4 follows the "not the controller" hint.
    if cluster.leader().await == 1 {
        cluster.stop(1).await;
        cluster.leader().await;
        cluster.restart(1).await;
    }
    let outsider = cluster.add_node(4).await;
    let info = BrokerInfo {
        broker_id: 4,
        // No raft endpoint: never added to the raft group, never learns the leader from raft.
        endpoints: vec![Endpoint {
            name: "kafka".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: 9004,
        }],
        rack: None,
        previous_broker_epoch: None,
    };
    let lifecycle = BrokerLifecycle::spawn(outsider.clone(), info, HEARTBEAT, SESSION);
    let registered = wait_registered(lifecycle.state()).await;
    let leader = cluster.leader().await;
    assert_ne!(
        leader, 1,
        "controller moved back to node 1; the test would prove nothing"
    );

    let until = Instant::now() + SESSION * 3;
    while Instant::now() < until {
        let image = cluster.node(leader).image();
        assert!(
            !image.broker(4).expect("registered").fenced,
            "broker 4 fenced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        wait_registered(lifecycle.state()).await,
        registered,
        "re-registered"
    );
    drop(lifecycle);
    cluster.shutdown().await;
}
