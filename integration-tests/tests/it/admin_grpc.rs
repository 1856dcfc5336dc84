//! The admin gRPC API on a running broker: through the generated client (every RPC, with the
//! gRPC code and the Kafka error name of each refusal), through server reflection with a
//! third-party client (grpcio-reflection, as grpcurl works), and the standard health service.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use streambus_integration_tests::kafka::{plain_batch, produce_to};
use streambus_integration_tests::{run_with_timeout, DevBroker};
use streambus_proto::admin::v1 as pb;
use streambus_proto::admin::v1::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::scripts::{python_dir, SCRIPT_TIMEOUT};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

async fn client(broker: &DevBroker) -> AdminServiceClient<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", broker.admin_addr))
        .expect("endpoint")
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT);
    AdminServiceClient::new(endpoint.connect().await.expect("connect"))
}

/// The gRPC code and the Kafka error name a refused call carries.
fn refusal<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> (Code, String) {
    let status = result.expect_err("refused");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "streambus.io");
    assert!(info.metadata.contains_key("kafka_error_code"), "{info:?}");
    (status.code(), info.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_rpc_answers_and_refusals_carry_the_kafka_error() {
    let broker = tokio::task::spawn_blocking(|| DevBroker::start(&[]).expect("broker"))
        .await
        .expect("start");
    let mut admin = client(&broker).await;

    let cluster = admin
        .describe_cluster(pb::DescribeClusterRequest {})
        .await
        .expect("describe cluster")
        .into_inner();
    assert_eq!(cluster.controller_id, Some(1));
    assert_eq!(cluster.answered_by, 1);
    assert!(!cluster.cluster_id.is_empty());
    assert!(cluster.metadata_offset > 0);
    let me = &cluster.brokers[0];
    assert_eq!(
        (me.id, me.state, me.port),
        (
            1,
            pb::BrokerState::Running as i32,
            u32::from(broker.kafka_addr.port())
        )
    );
    assert!(me.endpoints.iter().any(|e| e.name == "raft"), "{me:?}");
    assert_eq!(cluster.quorum.len(), 1);
    assert!(cluster.quorum[0].voter);
    assert!(
        cluster
            .features
            .iter()
            .any(|f| f.name == "transaction.version" && f.finalized_level == 2),
        "{:?}",
        cluster.features
    );

    // Create, then the same name again.
    let create = |name: &str, partitions: i32, validate_only: bool| pb::CreateTopicRequest {
        name: name.to_owned(),
        partitions: Some(partitions),
        replication_factor: Some(1),
        configs: HashMap::from([("cleanup.policy".to_owned(), "delete".to_owned())]),
        validate_only,
    };
    let planned = admin
        .create_topic(create("orders", 3, true))
        .await
        .expect("validate only")
        .into_inner()
        .topic
        .expect("the plan");
    assert_eq!(planned.partitions.len(), 3);
    assert!(planned.topic_id.is_empty(), "nothing created: {planned:?}");
    let (code, reason) = refusal(
        admin
            .describe_topic(pb::DescribeTopicRequest {
                name: "orders".to_owned(),
            })
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::NotFound, "UNKNOWN_TOPIC_OR_PARTITION")
    );
    let created = admin
        .create_topic(create("orders", 3, false))
        .await
        .expect("create")
        .into_inner()
        .topic
        .expect("the topic");
    assert_eq!(created.topic_id.len(), 16);
    assert_eq!(created.partitions.len(), 3);
    assert!(created.partitions.iter().all(|p| p.leader == Some(1)));
    assert_eq!(created.configs["cleanup.policy"], "delete");
    let (code, reason) = refusal(admin.create_topic(create("orders", 3, false)).await);
    assert_eq!(
        (code, reason.as_str()),
        (Code::AlreadyExists, "TOPIC_ALREADY_EXISTS")
    );
    let (code, reason) = refusal(admin.create_topic(create("bad/name", 1, false)).await);
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "INVALID_TOPIC_EXCEPTION")
    );

    // Configs: set one, remove another, refuse a bad value.
    let configs = admin
        .alter_topic_config(pb::AlterTopicConfigRequest {
            name: "orders".to_owned(),
            set: HashMap::from([("retention.ms".to_owned(), "60000".to_owned())]),
            delete: vec!["cleanup.policy".to_owned()],
            validate_only: false,
        })
        .await
        .expect("alter")
        .into_inner()
        .configs;
    assert_eq!(
        configs.get("retention.ms").map(String::as_str),
        Some("60000")
    );
    assert!(!configs.contains_key("cleanup.policy"), "{configs:?}");
    let (code, reason) = refusal(
        admin
            .alter_topic_config(pb::AlterTopicConfigRequest {
                name: "orders".to_owned(),
                set: HashMap::from([("retention.ms".to_owned(), "soon".to_owned())]),
                delete: Vec::new(),
                validate_only: false,
            })
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "INVALID_CONFIG")
    );

    // Partitions: grow, refuse shrinking, and the new one takes Kafka writes.
    let grown = admin
        .add_partitions(pb::AddPartitionsRequest {
            name: "orders".to_owned(),
            total_count: 5,
            validate_only: false,
        })
        .await
        .expect("add partitions")
        .into_inner()
        .topic
        .expect("the topic");
    assert_eq!(grown.partitions.len(), 5);
    let (code, reason) = refusal(
        admin
            .add_partitions(pb::AddPartitionsRequest {
                name: "orders".to_owned(),
                total_count: 2,
                validate_only: false,
            })
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "INVALID_PARTITIONS")
    );
    let kafka = broker.kafka_addr;
    let (error, _) = tokio::task::spawn_blocking(move || {
        let mut conn = streambus_integration_tests::KafkaConn::connect(kafka).expect("connect");
        produce_to(&mut conn, "orders", 4, plain_batch(&[b"v".to_vec()]), -1).expect("produce")
    })
    .await
    .expect("produce task");
    assert_eq!(error, 0, "the added partition takes writes");

    let listed = admin
        .list_topics(pb::ListTopicsRequest {
            include_internal: false,
        })
        .await
        .expect("list")
        .into_inner()
        .topics;
    assert!(listed
        .iter()
        .any(|t| t.name == "orders" && t.partition_count == 5 && !t.internal));
    let all = admin
        .list_partitions(pb::ListPartitionsRequest {
            filter: pb::PartitionFilter::All as i32,
            topics: vec!["orders".to_owned()],
        })
        .await
        .expect("list partitions")
        .into_inner()
        .partitions;
    assert_eq!(all.len(), 5);
    for filter in [
        pb::PartitionFilter::UnderReplicated,
        pb::PartitionFilter::UnderMinIsr,
        pb::PartitionFilter::Offline,
    ] {
        let unhealthy = admin
            .list_partitions(pb::ListPartitionsRequest {
                filter: filter as i32,
                topics: Vec::new(),
            })
            .await
            .expect("list partitions")
            .into_inner()
            .partitions;
        assert!(unhealthy.is_empty(), "{filter:?}: {unhealthy:?}");
    }
    let (code, _) = refusal(
        admin
            .list_partitions(pb::ListPartitionsRequest {
                filter: 0,
                topics: vec!["nope".to_owned()],
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);

    admin
        .delete_topic(pb::DeleteTopicRequest {
            name: "orders".to_owned(),
        })
        .await
        .expect("delete");
    let (code, reason) = refusal(
        admin
            .delete_topic(pb::DeleteTopicRequest {
                name: "orders".to_owned(),
            })
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::NotFound, "UNKNOWN_TOPIC_OR_PARTITION")
    );

    // The standard health service.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", broker.admin_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "streambus.admin.v1.AdminService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
}

#[test]
fn a_reflection_client_lists_and_calls_the_admin_api_without_a_proto_file() {
    let broker = DevBroker::start(&[]).expect("broker");
    let mut command = Command::new(streambus_integration_tests::python().expect("python"));
    command
        .arg(python_dir().join("grpc_reflect.py"))
        .arg(broker.admin_addr.to_string());
    let output = run_with_timeout(command, SCRIPT_TIMEOUT).expect("grpc_reflect.py");
    assert!(
        output.status.success(),
        "grpc_reflect.py failed\n{}\n{}",
        output.stdout,
        output.stderr
    );
    let report: Value = serde_json::from_str(output.stdout.trim()).expect("one JSON object");
    let services: Vec<&str> = report["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for wanted in [
        "streambus.admin.v1.AdminService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(&wanted), "{wanted} not in {services:?}");
    }
    assert!(
        !services.iter().any(|s| s.starts_with("streambus.raft")),
        "the raft transport is not offered here: {services:?}"
    );
    let methods: Vec<&str> = report["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for wanted in ["DescribeCluster", "CreateTopic", "ListPartitions"] {
        assert!(methods.contains(&wanted), "{wanted} not in {methods:?}");
    }
    assert_eq!(report["cluster"]["controller_id"], 1, "{report}");
    assert_eq!(
        report["cluster"]["brokers"][0]["state"],
        "BROKER_STATE_RUNNING"
    );
    assert_eq!(report["health"], "SERVING");
}

/// Polls `check` every 200 ms until it holds or `CALL_TIMEOUT` passes; the last value.
async fn eventually<T, F, Fut>(what: &str, mut probe: F, check: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    // One probe per pass, until the deadline.
    loop {
        let value = probe().await;
        if check(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The metadata quorum as `admin`'s broker describes it.
async fn quorum(mut admin: AdminServiceClient<Channel>) -> Vec<pb::QuorumMember> {
    admin
        .describe_cluster(pb::DescribeClusterRequest {})
        .await
        .expect("describe")
        .into_inner()
        .quorum
}

/// Creates `name` with `partitions` partitions of `replication_factor` replicas.
async fn create_topic(
    admin: &mut AdminServiceClient<Channel>,
    name: &str,
    partitions: i32,
    replication_factor: i32,
) -> pb::TopicDescription {
    admin
        .create_topic(pb::CreateTopicRequest {
            name: name.to_owned(),
            partitions: Some(partitions),
            replication_factor: Some(replication_factor),
            configs: HashMap::new(),
            validate_only: false,
        })
        .await
        .expect("create")
        .into_inner()
        .topic
        .expect("topic")
}

async fn topic(admin: &mut AdminServiceClient<Channel>, name: &str) -> pb::TopicDescription {
    admin
        .describe_topic(pb::DescribeTopicRequest {
            name: name.to_owned(),
        })
        .await
        .expect("describe")
        .into_inner()
        .topic
        .expect("topic")
}

async fn connect(addr: std::net::SocketAddr) -> AdminServiceClient<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT);
    AdminServiceClient::new(endpoint.connect().await.expect("connect"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassignments_elections_log_dirs_and_voters_on_three_brokers() {
    use streambus_integration_tests::cluster::FAST_FAILOVER;
    let mut cluster = tokio::task::spawn_blocking(|| {
        streambus_integration_tests::Cluster::start(3, 3, FAST_FAILOVER).expect("cluster")
    })
    .await
    .expect("start");
    let mut admin = connect(cluster.member(1).admin_addr).await;

    // The controller knows how far each voter has replicated the metadata log.
    let cluster_view = admin
        .describe_cluster(pb::DescribeClusterRequest {})
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(cluster_view.brokers.len(), 3);
    assert!(cluster_view
        .brokers
        .iter()
        .all(|b| b.state == pb::BrokerState::Running as i32));
    let controller = cluster_view.controller_id.expect("a controller");
    let at_controller = connect(cluster.member(controller).admin_addr).await;
    let members = eventually(
        "the controller's view of the voters",
        || quorum(at_controller.clone()),
        |quorum: &Vec<pb::QuorumMember>| {
            quorum.len() == 3 && quorum.iter().all(|m| m.voter && m.lag.is_some())
        },
    )
    .await;
    assert_eq!(members.len(), 3);

    // A topic on two brokers moves to another pair.
    let created = create_topic(&mut admin, "moves", 1, 2).await;
    let before = created.partitions[0].replicas.clone();
    let outsider = (1..=3)
        .find(|b| !before.contains(b))
        .expect("a third broker");
    let target = vec![outsider, before[0]];
    let results = admin
        .alter_reassignments(pb::AlterReassignmentsRequest {
            moves: vec![
                pb::PartitionMove {
                    topic: "moves".to_owned(),
                    partition: 0,
                    target: target.clone(),
                },
                pb::PartitionMove {
                    topic: "moves".to_owned(),
                    partition: 0,
                    target: vec![outsider],
                },
                pb::PartitionMove {
                    topic: "nope".to_owned(),
                    partition: 0,
                    target: vec![1],
                },
            ],
            allow_replication_factor_change: false,
        })
        .await
        .expect("reassign")
        .into_inner()
        .results;
    assert!(results[0].error.is_none(), "{results:?}");
    assert_eq!(
        results[1].error.as_ref().map(|e| e.kafka_error.as_str()),
        Some("INVALID_REPLICATION_FACTOR"),
        "{results:?}"
    );
    assert_eq!(
        results[2].error.as_ref().map(|e| e.kafka_error.as_str()),
        Some("UNKNOWN_TOPIC_OR_PARTITION"),
        "{results:?}"
    );
    let moved = eventually(
        "the move to finish",
        || {
            let mut a = admin.clone();
            async move { topic(&mut a, "moves").await.partitions[0].clone() }
        },
        |p: &pb::PartitionDescription| p.replicas == target && p.isr.len() == 2,
    )
    .await;
    assert_eq!(moved.replicas, target);
    let ongoing = admin
        .list_reassignments(pb::ListReassignmentsRequest {
            partitions: Vec::new(),
        })
        .await
        .expect("list")
        .into_inner()
        .reassignments;
    assert!(ongoing.is_empty(), "{ongoing:?}");

    // Leadership goes to the preferred (first) replica.
    let elected = eventually(
        "a preferred election",
        || {
            let mut a = admin.clone();
            async move {
                let results = a
                    .elect_leaders(pb::ElectLeadersRequest {
                        r#type: pb::ElectionType::Preferred as i32,
                        partitions: vec![pb::PartitionRef {
                            topic: "moves".to_owned(),
                            partition: 0,
                        }],
                        confirm_data_loss: false,
                    })
                    .await
                    .expect("elect")
                    .into_inner()
                    .results;
                let leader = topic(&mut a, "moves").await.partitions[0].leader;
                (results, leader)
            }
        },
        |(_, leader)| *leader == Some(outsider),
    )
    .await;
    assert_eq!(elected.1, Some(outsider));
    // An unclean election without the confirmation changes nothing.
    let refused = admin
        .elect_leaders(pb::ElectLeadersRequest {
            r#type: pb::ElectionType::Unclean as i32,
            partitions: Vec::new(),
            confirm_data_loss: false,
        })
        .await
        .expect_err("needs the confirmation");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.get_details_error_info().map(|i| i.reason),
        Some("POLICY_VIOLATION".to_owned())
    );
    assert!(
        refused.message().contains("confirm_data_loss"),
        "{refused:?}"
    );
    let (code, reason) = refusal(
        admin
            .elect_leaders(pb::ElectLeadersRequest {
                r#type: 7,
                partitions: Vec::new(),
                confirm_data_loss: false,
            })
            .await,
    );
    assert_eq!(reason, "INVALID_REQUEST");
    assert_eq!(code, Code::InvalidArgument);

    // The new leader's log directory holds the partition (once it has applied the election).
    let at_leader = connect(cluster.member(outsider).admin_addr).await;
    let dirs = eventually(
        "the new leader's log dir",
        || {
            let mut a = at_leader.clone();
            async move {
                a.describe_log_dirs(pb::DescribeLogDirsRequest {})
                    .await
                    .expect("log dirs")
                    .into_inner()
            }
        },
        |dirs: &pb::DescribeLogDirsResponse| {
            dirs.partitions
                .iter()
                .any(|p| p.topic == "moves" && p.partition == 0 && p.leader)
        },
    )
    .await;
    assert_eq!(dirs.broker_id, outsider);
    assert!(dirs.online && dirs.free_bytes > 0 && dirs.capacity_bytes >= dirs.free_bytes);

    // Voter 3 becomes a learner, then a voter again.
    let third = cluster.member(3).raft_addr.to_string();
    admin
        .remove_voter(pb::RemoveVoterRequest { node_id: 3 })
        .await
        .expect("remove voter");
    let voters = |quorum: &Vec<pb::QuorumMember>| {
        let mut ids: Vec<i32> = quorum.iter().filter(|m| m.voter).map(|m| m.id).collect();
        ids.sort_unstable();
        ids
    };
    eventually(
        "voter 3 removed",
        || quorum(admin.clone()),
        |q| voters(q) == vec![1, 2],
    )
    .await;
    let (code, _) = refusal(
        admin
            .remove_voter(pb::RemoveVoterRequest { node_id: 3 })
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "3 is no voter now");
    let (code, reason) = refusal(
        admin
            .add_voter(pb::AddVoterRequest {
                node_id: 3,
                raft_address: "127.0.0.1:1".to_owned(),
            })
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "INVALID_REQUEST"),
        "not where broker 3 registered"
    );
    let (code, _) = refusal(
        admin
            .add_voter(pb::AddVoterRequest {
                node_id: 9,
                raft_address: String::new(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound, "no broker 9");
    admin
        .add_voter(pb::AddVoterRequest {
            node_id: 3,
            raft_address: third,
        })
        .await
        .expect("add voter");
    eventually(
        "voter 3 back",
        || quorum(admin.clone()),
        |q| voters(q) == vec![1, 2, 3],
    )
    .await;
    let (code, reason) = refusal(
        admin
            .add_voter(pb::AddVoterRequest {
                node_id: -1,
                raft_address: "x".to_owned(),
            })
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "INVALID_REQUEST")
    );
    // A partition whose only replica is gone: an unclean election is refused without the
    // confirmation (naming it and that replica), and with it finds no replica to elect.
    let lonely = create_topic(&mut admin, "lonely", 1, 1).await;
    let replica = lonely.partitions[0].replicas[0];
    let survivor = (1..=3).find(|b| *b != replica).expect("another broker");
    let mut admin = connect(cluster.member(survivor).admin_addr).await;
    cluster.kill(replica);
    eventually(
        "the partition to go offline",
        || {
            let mut a = admin.clone();
            async move { topic(&mut a, "lonely").await.partitions[0].leader }
        },
        Option::is_none,
    )
    .await;
    let unclean = |confirm_data_loss: bool| pb::ElectLeadersRequest {
        r#type: pb::ElectionType::Unclean as i32,
        partitions: vec![pb::PartitionRef {
            topic: "lonely".to_owned(),
            partition: 0,
        }],
        confirm_data_loss,
    };
    let refused = admin
        .elect_leaders(unclean(false))
        .await
        .expect_err("needs the confirmation");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("lonely-0")
            && refused.message().contains(&format!("[{replica}]")),
        "{refused:?}"
    );
    assert_eq!(topic(&mut admin, "lonely").await.partitions[0].leader, None);
    let results = admin
        .elect_leaders(unclean(true))
        .await
        .expect("a confirmed election runs")
        .into_inner()
        .results;
    assert_eq!(
        results[0].error.as_ref().map(|e| e.kafka_error.as_str()),
        Some("ELIGIBLE_LEADERS_NOT_AVAILABLE"),
        "{results:?}"
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_transactions_are_described_by_their_coordinators() {
    use streambus_client::{
        Client, ClientConfig, ConsumerConfig, GroupConfig, GroupConsumer, OffsetReset, Producer,
        ProducerConfig,
    };
    let broker = tokio::task::spawn_blocking(|| {
        DevBroker::start(&["--set", "groups.group_initial_rebalance_delay_ms=0"]).expect("broker")
    })
    .await
    .expect("start");
    let mut admin = client(&broker).await;
    create_topic(&mut admin, "audit", 1, 1).await;
    let sdk = Client::connect(ClientConfig::new(&broker.bootstrap()))
        .await
        .expect("connect");
    let producer = Producer::new(sdk.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for i in 0..5 {
        send_and_wait(&producer, format!("r{i}")).await;
    }
    // A member that read everything and committed 5; then 3 more records arrive.
    let mut consumer = GroupConsumer::new(
        sdk.clone(),
        GroupConfig {
            enable_auto_commit: false,
            consumer: ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                fetch_max_wait: Duration::from_millis(50),
                ..ConsumerConfig::default()
            },
            ..GroupConfig::new("audit-readers")
        },
    )
    .expect("group consumer");
    consumer.subscribe(["audit"]);
    crate::sdk_transactions::poll_records(&mut consumer, 5).await;
    consumer.commit_sync().await.expect("commit");
    for i in 5..8 {
        send_and_wait(&producer, format!("r{i}")).await;
    }
    // An open transaction.
    let transactional = Producer::new(
        sdk.clone(),
        ProducerConfig {
            transactional_id: Some("audit-tx".to_owned()),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("transactional producer");
    transactional.begin_transaction().await.expect("begin");
    send_and_wait(&transactional, "open".to_owned()).await;

    let groups = admin
        .list_groups(pb::ListGroupsRequest { states: Vec::new() })
        .await
        .expect("list groups")
        .into_inner();
    assert!(groups.unreachable_brokers.is_empty(), "{groups:?}");
    let listed = groups
        .groups
        .iter()
        .find(|g| g.group_id == "audit-readers")
        .unwrap_or_else(|| panic!("{groups:?}"));
    assert_eq!((listed.state.as_str(), listed.coordinator), ("Stable", 1));
    let only_empty = admin
        .list_groups(pb::ListGroupsRequest {
            states: vec!["Empty".to_owned()],
        })
        .await
        .expect("list groups")
        .into_inner();
    assert!(!only_empty
        .groups
        .iter()
        .any(|g| g.group_id == "audit-readers"));

    let group = admin
        .describe_group(pb::DescribeGroupRequest {
            group_id: "audit-readers".to_owned(),
        })
        .await
        .expect("describe group")
        .into_inner();
    assert_eq!(group.state, "Stable");
    assert_eq!(group.protocol_type, "consumer");
    assert_eq!(group.members.len(), 1);
    assert_eq!(
        group.members[0].assignment,
        vec![pb::PartitionRef {
            topic: "audit".to_owned(),
            partition: 0
        }]
    );
    let offset = &group.offsets[0];
    assert_eq!(
        (
            offset.topic.as_str(),
            offset.committed_offset,
            offset.high_watermark,
            offset.lag
        ),
        // 8 records and the open transaction's one: lag is counted to the high watermark.
        ("audit", 5, Some(9), Some(4)),
        "{group:?}"
    );
    let (code, reason) = refusal(
        admin
            .describe_group(pb::DescribeGroupRequest {
                group_id: "nobody".to_owned(),
            })
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::NotFound, "GROUP_ID_NOT_FOUND")
    );

    let transactions = admin
        .list_transactions(pb::ListTransactionsRequest {
            states: vec!["Ongoing".to_owned()],
        })
        .await
        .expect("list transactions")
        .into_inner();
    assert!(
        transactions
            .transactions
            .iter()
            .any(|t| t.transactional_id == "audit-tx" && t.state == "Ongoing"),
        "{transactions:?}"
    );
    let described = admin
        .describe_transaction(pb::DescribeTransactionRequest {
            transactional_id: "audit-tx".to_owned(),
        })
        .await
        .expect("describe transaction")
        .into_inner();
    assert_eq!(described.state, "Ongoing");
    assert!(described.start_time_ms > 0);
    assert_eq!(
        described.partitions,
        vec![pb::PartitionRef {
            topic: "audit".to_owned(),
            partition: 0
        }]
    );
    let (code, _) = refusal(
        admin
            .describe_transaction(pb::DescribeTransactionRequest {
                transactional_id: "nobody".to_owned(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    transactional.abort_transaction().await.expect("abort");
    consumer.close().await.expect("close");
}

/// Sends `value` to partition 0 of `audit` and waits for its acknowledgement.
async fn send_and_wait(producer: &streambus_client::Producer, value: String) {
    let record = streambus_client::ProducerRecord::new("audit", value).with_partition(0);
    let delivery = producer.send(record).await.expect("send");
    tokio::time::timeout(CALL_TIMEOUT, delivery)
        .await
        .expect("in time")
        .expect("acknowledged");
}
