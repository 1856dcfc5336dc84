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
