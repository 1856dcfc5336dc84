//! The group coordinator against real brokers: bad group requests (classic, and KIP-848
//! ConsumerGroupHeartbeats) get Kafka's precise error and change nothing; committed offsets survive a SIGKILL of the coordinator and a restart of
//! the whole cluster while a librdkafka group consumes through it; static members see no
//! rebalance while the brokers restart one by one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as HeartbeatTopicPartitions;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, CreateTopicsRequest,
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use streambus_integration_tests::cluster::{Cluster, FAST_FAILOVER};
use streambus_integration_tests::kafka::{plain_batch, produce_to, topic_name};
use streambus_integration_tests::{DevBroker, KafkaConn};

const WAIT: Duration = Duration::from_secs(60);

// Kafka error codes.
const NONE: i16 = 0;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const INVALID_REQUEST: i16 = 42;
const MEMBER_ID_REQUIRED: i16 = 79;
const GROUP_MAX_SIZE_REACHED: i16 = 81;
const FENCED_INSTANCE_ID: i16 = 82;
const GROUP_ID_NOT_FOUND: i16 = 69;
const FENCED_MEMBER_EPOCH: i16 = 110;
const UNSUPPORTED_ASSIGNOR: i16 = 112;
const INVALID_REGULAR_EXPRESSION: i16 = 128;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn group(id: &str) -> GroupId {
    GroupId(s(id))
}

fn join_request(
    group_id: &str,
    member_id: &str,
    instance: Option<&str>,
    protocol_type: &str,
    session_timeout_ms: i32,
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s(protocol_type))
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"subscription"))])
}

/// A one-member group, stable: joins (twice for KIP-394 unless static) and syncs.
fn stable_member(conn: &mut KafkaConn, group_id: &str, instance: Option<&str>) -> (String, i32) {
    let mut member_id = String::new();
    let mut joined: Option<JoinGroupResponse> = None;
    for _ in 0..2 {
        let request = join_request(group_id, &member_id, instance, "consumer", 10_000);
        let response = conn.send(&request, 7).expect("join");
        if response.error_code == MEMBER_ID_REQUIRED {
            member_id = response.member_id.to_string();
            continue;
        }
        assert_eq!(response.error_code, NONE, "join: {response:?}");
        joined = Some(response);
        break;
    }
    let joined = joined.expect("joined within two attempts");
    let member_id = joined.member_id.to_string();
    assert_eq!(joined.leader.to_string(), member_id, "a sole member leads");
    let sync = SyncGroupRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(s(&member_id))
        .with_group_instance_id(instance.map(s))
        .with_generation_id(joined.generation_id)
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&member_id))
            .with_assignment(Bytes::from_static(b"everything"))]);
    let synced = conn.send(&sync, 5).expect("sync");
    assert_eq!(synced.error_code, NONE, "sync: {synced:?}");
    assert_eq!(&synced.assignment[..], b"everything");
    (member_id, joined.generation_id)
}

fn heartbeat(
    conn: &mut KafkaConn,
    group_id: &str,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_generation_id(generation);
    conn.send(&request, 4).expect("heartbeat").error_code
}

/// Commits `offset` with `metadata` for partitions 0.. of `topic`; the error of each.
fn commit(
    conn: &mut KafkaConn,
    group_id: &str,
    member: (&str, Option<&str>, i32),
    topic: &str,
    offsets: &[i64],
    metadata: &str,
) -> Vec<i16> {
    let (member_id, instance, generation) = member;
    let request = OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                offsets
                    .iter()
                    .enumerate()
                    .map(|(p, offset)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p as i32)
                            .with_committed_offset(*offset)
                            .with_committed_leader_epoch(-1)
                            .with_committed_metadata(Some(s(metadata)))
                    })
                    .collect(),
            )]);
    let response = conn.send(&request, 8).expect("commit");
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

/// The committed offsets of `group_id` for partitions 0..count of `topic`.
fn committed(conn: &mut KafkaConn, group_id: &str, topic: &str, count: i32) -> Vec<i64> {
    let request = OffsetFetchRequest::default()
        .with_group_id(group(group_id))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes((0..count).collect())]));
    let response = conn.send(&request, 7).expect("offset fetch");
    assert_eq!(response.error_code, NONE, "{response:?}");
    let mut offsets: Vec<(i32, i64)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    offsets.sort();
    offsets.into_iter().map(|(_, o)| o).collect()
}

fn describe(conn: &mut KafkaConn, group_id: &str) -> DescribedGroup {
    let request = DescribeGroupsRequest::default().with_groups(vec![group(group_id)]);
    let mut response = conn.send(&request, 5).expect("describe");
    response.groups.remove(0)
}

/// Waits (bounded) until `broker` coordinates `group_id`: FindCoordinator creates
/// `__consumer_offsets` and names the broker, which then loads its partition.
fn wait_for_coordinator(conn: &mut KafkaConn, broker: &DevBroker, group_id: &str) {
    let find = FindCoordinatorRequest::default().with_key(s(group_id));
    let deadline = Instant::now() + WAIT;
    loop {
        let found = conn.send(&find, 3).unwrap();
        if found.error_code == NONE {
            assert_eq!(found.port, i32::from(broker.kafka_addr.port()));
            break;
        }
        assert!(Instant::now() < deadline, "no coordinator: {found:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + WAIT;
    while describe(conn, group_id).error_code != NONE {
        assert!(Instant::now() < deadline, "the coordinator never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_topic(conn: &mut KafkaConn, topic: &str, partitions: i32, replicas: i16) {
    let mut created = CreatableTopic::default()
        .with_name(topic_name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(replicas);
    if replicas > 1 {
        created = created.with_configs(vec![CreatableTopicConfig::default()
            .with_name(s("min.insync.replicas"))
            .with_value(Some(s("2")))]);
    }
    let request = CreateTopicsRequest::default()
        .with_topics(vec![created])
        .with_timeout_ms(30_000);
    let response = conn.send(&request, 7).expect("create topic");
    assert_eq!(
        response.topics[0].error_code, NONE,
        "{:?}",
        response.topics[0]
    );
}

#[test]
fn bad_group_requests_get_precise_errors_and_change_nothing() {
    let broker = DevBroker::start(&[
        "--set",
        "groups.group_initial_rebalance_delay_ms=0",
        "--set",
        "groups.group_max_size=1",
    ])
    .unwrap();
    let mut conn = broker.connect().unwrap();
    create_topic(&mut conn, "orders", 2, 1);
    wait_for_coordinator(&mut conn, &broker, "g1");
    // Share groups are not served; a transactional id needs a name.
    for (key_type, key) in [(2i8, "x"), (1, "")] {
        let find = FindCoordinatorRequest::default()
            .with_key(s(key))
            .with_key_type(key_type);
        assert_eq!(conn.send(&find, 3).unwrap().error_code, INVALID_REQUEST);
    }

    let (member, generation) = stable_member(&mut conn, "g1", None);
    let offsets = commit(
        &mut conn,
        "g1",
        (&member, None, generation),
        "orders",
        &[5, 7],
        "m",
    );
    assert_eq!(offsets, vec![NONE, NONE]);

    // Each bad request: its error, and the group stays as it was.
    let unknown_group = join_request("nobody", "made-up", None, "consumer", 10_000);
    let answer = conn.send(&unknown_group, 7).unwrap();
    assert_eq!(
        answer.error_code, UNKNOWN_MEMBER_ID,
        "unknown member of a new group"
    );
    assert_eq!(
        heartbeat(&mut conn, "g1", "made-up", None, generation),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        heartbeat(&mut conn, "g1", &member, None, generation + 7),
        ILLEGAL_GENERATION
    );
    let other_type = join_request("g1", "", None, "connect", 10_000);
    assert_eq!(
        conn.send(&other_type, 7).unwrap().error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    let full = join_request("g1", "", None, "consumer", 10_000);
    assert_eq!(
        conn.send(&full, 7).unwrap().error_code,
        GROUP_MAX_SIZE_REACHED,
        "group.max.size=1"
    );
    let short_session = join_request("g1", "", None, "consumer", 10);
    assert_eq!(
        conn.send(&short_session, 7).unwrap().error_code,
        INVALID_SESSION_TIMEOUT
    );
    let stale = commit(
        &mut conn,
        "g1",
        (&member, None, generation + 1),
        "orders",
        &[99, 99],
        "",
    );
    assert_eq!(stale, vec![ILLEGAL_GENERATION, ILLEGAL_GENERATION]);
    let stranger = commit(
        &mut conn,
        "g1",
        ("made-up", None, generation),
        "orders",
        &[99],
        "",
    );
    assert_eq!(stranger, vec![UNKNOWN_MEMBER_ID]);
    let too_big = "x".repeat(4097);
    let big = commit(
        &mut conn,
        "g1",
        (&member, None, generation),
        "orders",
        &[99],
        &too_big,
    );
    assert_eq!(big, vec![OFFSET_METADATA_TOO_LARGE]);
    let nowhere = commit(
        &mut conn,
        "g1",
        (&member, None, generation),
        "no-such-topic",
        &[1],
        "",
    );
    assert_eq!(nowhere, vec![UNKNOWN_TOPIC_OR_PARTITION]);
    let no_group = commit(&mut conn, "", ("", None, -1), "orders", &[1], "");
    assert_eq!(no_group, vec![INVALID_GROUP_ID]);

    let described = describe(&mut conn, "g1");
    assert_eq!(described.error_code, NONE);
    assert_eq!(described.group_state.to_string(), "Stable");
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].member_id.to_string(), member);
    assert_eq!(committed(&mut conn, "g1", "orders", 2), vec![5, 7]);
    assert_eq!(heartbeat(&mut conn, "g1", &member, None, generation), NONE);

    // KIP-345: a static member restarting takes its place under a new id; the old id is
    // fenced and its commits are refused.
    let (old, generation) = stable_member(&mut conn, "static", Some("instance-1"));
    let rejoin = join_request("static", "", Some("instance-1"), "consumer", 10_000);
    let rejoined = conn.send(&rejoin, 7).unwrap();
    assert_eq!(rejoined.error_code, NONE, "{rejoined:?}");
    assert_eq!(rejoined.generation_id, generation, "no rebalance");
    let new = rejoined.member_id.to_string();
    assert_ne!(new, old);
    let fenced = commit(
        &mut conn,
        "static",
        (&old, Some("instance-1"), generation),
        "orders",
        &[3],
        "",
    );
    assert_eq!(fenced, vec![FENCED_INSTANCE_ID]);
    assert_eq!(
        heartbeat(&mut conn, "static", &old, Some("instance-1"), generation),
        FENCED_INSTANCE_ID
    );
    assert_eq!(
        heartbeat(&mut conn, "static", &new, Some("instance-1"), generation),
        NONE
    );
    assert_eq!(committed(&mut conn, "static", "orders", 1), vec![-1]);

    // Only coordinators write their topics.
    let response = produce_to(
        &mut conn,
        "__consumer_offsets",
        0,
        plain_batch(&[b"forged".to_vec()]),
        -1,
    )
    .unwrap();
    assert_eq!(response.0, INVALID_TOPIC_EXCEPTION);
}

// ------------------------------------------------------------------------ KIP-848 (raw requests)

/// The first ConsumerGroupHeartbeat (v1) of `member_id`: epoch 0, subscribed to `topics`.
fn consumer_join(
    group_id: &str,
    member_id: &str,
    topics: &[&str],
) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(s(member_id))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(topics.iter().map(|t| topic_name(t)).collect()))
        .with_topic_partitions(Some(Vec::new()))
}

/// A heartbeat of `member_id` at `epoch`, owning `owned`.
fn consumer_beat(
    group_id: &str,
    member_id: &str,
    epoch: i32,
    owned: &[HeartbeatTopicPartitions],
) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(s(member_id))
        .with_member_epoch(epoch)
        .with_topic_partitions(Some(owned.to_vec()))
}

/// What ConsumerGroupDescribe shows of a group: its error, state, epochs and assignor, and each
/// member's id, epoch, subscription and (target) assignment.
fn consumer_describe(conn: &mut KafkaConn, group_id: &str) -> String {
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group(group_id)]);
    let mut response = conn.send(&request, 1).expect("consumer group describe");
    let described = response.groups.remove(0);
    let members: Vec<String> = described
        .members
        .iter()
        .map(|m| {
            let partitions =
                |a: &kafka_protocol::messages::consumer_group_describe_response::Assignment| {
                    a.topic_partitions
                        .iter()
                        .map(|t| format!("{}{:?}", t.topic_name.0, t.partitions))
                        .collect::<Vec<_>>()
                };
            format!(
                "{} epoch {} subscribed {:?} assigned {:?} target {:?}",
                m.member_id,
                m.member_epoch,
                m.subscribed_topic_names
                    .iter()
                    .map(|t| t.0.to_string())
                    .collect::<Vec<_>>(),
                partitions(&m.assignment),
                partitions(&m.target_assignment),
            )
        })
        .collect();
    format!(
        "error {} state {} epoch {} assignment epoch {} assignor {} members {members:?}",
        described.error_code,
        described.group_state,
        described.group_epoch,
        described.assignment_epoch,
        described.assignor_name,
    )
}

#[test]
fn bad_consumer_group_heartbeats_get_precise_errors_and_change_nothing() {
    let broker = DevBroker::start(&[]).unwrap();
    let mut conn = broker.connect().unwrap();
    create_topic(&mut conn, "orders", 6, 1);
    wait_for_coordinator(&mut conn, &broker, "g848");

    // A member joins and heartbeats until it owns the 6 partitions (the coordinator sees the
    // topic once its metadata image has it).
    let joined = conn
        .send(&consumer_join("g848", "member-1", &["orders"]), 1)
        .unwrap();
    assert_eq!(joined.error_code, NONE, "{joined:?}");
    assert_eq!(
        joined.member_id.as_ref().map(|m| m.to_string()).as_deref(),
        Some("member-1")
    );
    let mut epoch = joined.member_epoch;
    let mut owned: Vec<HeartbeatTopicPartitions> = Vec::new();
    let mut assignment = joined.assignment;
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(given) = assignment.take() {
            owned = given
                .topic_partitions
                .iter()
                .map(|t| {
                    HeartbeatTopicPartitions::default()
                        .with_topic_id(t.topic_id)
                        .with_partitions(t.partitions.clone())
                })
                .collect();
        }
        if owned.iter().map(|t| t.partitions.len()).sum::<usize>() == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member-1 never got the 6 partitions: {owned:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        let beat = conn
            .send(&consumer_beat("g848", "member-1", epoch, &owned), 1)
            .unwrap();
        assert_eq!(beat.error_code, NONE, "{beat:?}");
        epoch = beat.member_epoch;
        assignment = beat.assignment;
    }
    // Two changes of subscription (a topic that does not exist, then without it) move the
    // epoch twice, so that an epoch older than the previous one exists.
    for topics in [&["orders", "not-yet"][..], &["orders"][..]] {
        let change = consumer_beat("g848", "member-1", epoch, &owned)
            .with_subscribed_topic_names(Some(topics.iter().map(|t| topic_name(t)).collect()));
        let beat = conn.send(&change, 1).unwrap();
        assert_eq!(beat.error_code, NONE, "{beat:?}");
        assert!(beat.member_epoch > epoch, "{beat:?}");
        epoch = beat.member_epoch;
    }
    // Once it reported them, the group is Stable.
    let beat = conn
        .send(&consumer_beat("g848", "member-1", epoch, &owned), 1)
        .unwrap();
    assert_eq!((beat.error_code, beat.member_epoch), (NONE, epoch));
    let before = consumer_describe(&mut conn, "g848");
    assert!(before.starts_with("error 0 state Stable"), "{before}");
    assert!(before.contains("member-1 epoch"), "{before}");

    // Each bad heartbeat: its error, and the group stays as it was.
    let empty_group = consumer_join("", "member-2", &["orders"]);
    let no_subscription =
        consumer_join("g848", "member-2", &["orders"]).with_subscribed_topic_names(None);
    let no_rebalance_timeout =
        consumer_join("g848", "member-2", &["orders"]).with_rebalance_timeout_ms(-1);
    let bad_regex = consumer_join("g848", "member-2", &[])
        .with_subscribed_topic_names(None)
        .with_subscribed_topic_regex(Some(s("orders(")));
    let unknown_assignor =
        consumer_join("g848", "member-2", &["orders"]).with_server_assignor(Some(s("fancy")));
    let ahead = consumer_beat("g848", "member-1", epoch + 1, &owned);
    let behind = consumer_beat("g848", "member-1", epoch - 2, &owned);
    let stranger = consumer_beat("g848", "member-9", epoch, &[]);
    // Flexible versions carry strings past Kafka's 32767 bytes; the group's records could not.
    let huge_topic = "t".repeat(40_000);
    let oversize_name = consumer_join("g848", "member-2", &[huge_topic.as_str()]);
    let cases = [
        (
            "a subscribed topic name over 32767 bytes",
            oversize_name,
            INVALID_REQUEST,
        ),
        ("an empty group id", empty_group, INVALID_REQUEST),
        (
            "a first heartbeat without subscription",
            no_subscription,
            INVALID_REQUEST,
        ),
        (
            "a first heartbeat without rebalance timeout",
            no_rebalance_timeout,
            INVALID_REQUEST,
        ),
        ("an invalid regex", bad_regex, INVALID_REGULAR_EXPRESSION),
        (
            "an unknown assignor",
            unknown_assignor,
            UNSUPPORTED_ASSIGNOR,
        ),
        ("an epoch ahead", ahead, FENCED_MEMBER_EPOCH),
        ("a stale epoch", behind, FENCED_MEMBER_EPOCH),
        ("an unknown member", stranger, UNKNOWN_MEMBER_ID),
    ];
    for (what, request, expected) in cases {
        let answer = conn.send(&request, 1).unwrap();
        assert_eq!(answer.error_code, expected, "{what}: {answer:?}");
        assert!(answer.error_message.is_some(), "{what}: no message");
        assert!(answer.assignment.is_none(), "{what}: {answer:?}");
        assert_eq!(consumer_describe(&mut conn, "g848"), before, "after {what}");
    }

    // In a group that does not exist: none is created.
    let not_joining = consumer_beat("elsewhere", "member-1", 3, &[]);
    let answer = conn.send(&not_joining, 1).unwrap();
    assert_eq!(answer.error_code, GROUP_ID_NOT_FOUND, "{answer:?}");
    let refused_first =
        consumer_join("elsewhere", "member-1", &["orders"]).with_server_assignor(Some(s("fancy")));
    let answer = conn.send(&refused_first, 1).unwrap();
    assert_eq!(answer.error_code, UNSUPPORTED_ASSIGNOR, "{answer:?}");
    let nothing = consumer_describe(&mut conn, "elsewhere");
    assert!(
        nothing.starts_with(&format!("error {GROUP_ID_NOT_FOUND} ")),
        "{nothing}"
    );

    // The member goes on at its epoch.
    let beat = conn
        .send(&consumer_beat("g848", "member-1", epoch, &owned), 1)
        .unwrap();
    assert_eq!((beat.error_code, beat.member_epoch), (NONE, epoch));
    assert_eq!(consumer_describe(&mut conn, "g848"), before);
}

fn script(name: &str) -> PathBuf {
    streambus_integration_tests::manifest_dir()
        .join("python")
        .join(name)
}

pub(crate) fn spawn_script(bootstrap: &str, name: &str, args: &[&str]) -> Child {
    Command::new(streambus_integration_tests::python().unwrap())
        .arg(script(name))
        .args(args)
        .env("STREAMBUS_BOOTSTRAP", bootstrap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the script")
}

/// Waits (bounded) until `marker` exists or the script exits.
pub(crate) fn wait_for_marker(child: &mut Child, marker: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let output = finish(child_output(child));
            panic!("the script exited early ({status}):\n{output}");
        }
        assert!(Instant::now() < deadline, "no marker {}", marker.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn child_output(child: &mut Child) -> (String, String) {
    use std::io::Read;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    (out, err)
}

pub(crate) fn finish((out, err): (String, String)) -> String {
    format!("--- stdout\n{out}\n--- stderr\n{err}")
}

/// Waits (bounded) for the script to exit successfully.
pub(crate) fn wait_success(mut child: Child, timeout: Duration, cluster: &Cluster) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = finish(child_output(&mut child));
            assert!(
                status.success(),
                "the script failed ({status}):\n{output}\n--- brokers\n{}",
                cluster.logs_tail(40)
            );
            return output;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = finish(child_output(&mut child));
            panic!("the script did not finish:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The broker coordinating `group_id`, asked of any live member.
fn coordinator_of(cluster: &Cluster, group_id: &str) -> i32 {
    coordinator_other_than(cluster, group_id, None)
}

/// [`coordinator_of`], waiting (bounded) until it is not `avoid` (a killed broker the image
/// may still name until its session lapses).
fn coordinator_other_than(cluster: &Cluster, group_id: &str, avoid: Option<i32>) -> i32 {
    let find = FindCoordinatorRequest::default().with_key(s(group_id));
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut conn) = cluster.connect_any() {
            if let Ok(found) = conn.send(&find, 3) {
                if found.error_code == NONE && Some(found.node_id.0) != avoid {
                    return found.node_id.0;
                }
            }
        }
        assert!(Instant::now() < deadline, "no coordinator for {group_id}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cluster_args() -> Vec<&'static str> {
    let mut args = FAST_FAILOVER.to_vec();
    args.extend([
        "--set",
        "groups.offsets_topic_num_partitions=3",
        "--set",
        "groups.group_initial_rebalance_delay_ms=0",
    ]);
    args
}

#[test]
fn committed_offsets_survive_a_coordinator_sigkill_and_a_whole_cluster_restart() {
    let mut cluster = Cluster::start(3, 3, &cluster_args()).unwrap();
    let mut conn = cluster.connect_any().unwrap();
    create_topic(&mut conn, "events", 6, 3);
    let coordinator = coordinator_of(&cluster, "failover-group");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("committing");
    let mut child = spawn_script(
        &cluster.bootstrap(),
        "group_failover.py",
        &["events", "failover-group", "3000", marker.to_str().unwrap()],
    );
    wait_for_marker(&mut child, &marker, Duration::from_secs(180));
    cluster.kill(coordinator);
    coordinator_other_than(&cluster, "failover-group", Some(coordinator));
    std::thread::sleep(Duration::from_secs(3));
    cluster.restart(coordinator).unwrap();
    wait_success(child, Duration::from_secs(400), &cluster);

    // The committed offsets are the end offsets: 500 records per partition.
    let coordinator = coordinator_of(&cluster, "failover-group");
    let before = committed_at(&cluster, coordinator, "failover-group");
    assert_eq!(before, vec![500; 6]);
    for id in 1..=3 {
        cluster.stop(id).unwrap();
    }
    for id in 1..=3 {
        cluster.launch(id).unwrap();
    }
    for id in 1..=3 {
        cluster.wait_active(id, 0).unwrap();
    }
    let coordinator = coordinator_of(&cluster, "failover-group");
    assert_eq!(
        committed_at(&cluster, coordinator, "failover-group"),
        before
    );
}

/// The committed offsets of `group_id` on `events`, from broker `id` (retried while it loads).
fn committed_at(cluster: &Cluster, id: i32, group_id: &str) -> Vec<i64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut conn = KafkaConn::connect(cluster.member(id).kafka_addr).unwrap();
        let request = OffsetFetchRequest::default()
            .with_group_id(group(group_id))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic_name("events"))
                .with_partition_indexes((0..6).collect())]));
        let response = conn.send(&request, 7).unwrap();
        if response.error_code == NONE {
            return committed(&mut conn, group_id, "events", 6);
        }
        assert!(Instant::now() < deadline, "offset fetch: {response:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn static_members_see_no_rebalance_while_brokers_restart_one_by_one() {
    let mut cluster = Cluster::start(3, 3, &cluster_args()).unwrap();
    let mut conn = cluster.connect_any().unwrap();
    create_topic(&mut conn, "steady", 6, 3);
    drop(conn);
    let dir = tempfile::tempdir().unwrap();
    let (ready, stop) = (dir.path().join("ready"), dir.path().join("stop"));
    let mut child = spawn_script(
        &cluster.bootstrap(),
        "group_static.py",
        &[
            "steady",
            "static-group",
            ready.to_str().unwrap(),
            stop.to_str().unwrap(),
        ],
    );
    wait_for_marker(&mut child, &ready, Duration::from_secs(120));
    let first = coordinator_of(&cluster, "static-group");
    // The coordinator last, so the group moves at least once with its members in it.
    let order: Vec<i32> = (1..=3).filter(|id| *id != first).chain([first]).collect();
    for id in order {
        cluster.stop(id).unwrap();
        cluster.restart(id).unwrap();
        // Let the restarted broker catch up before the next one goes.
        std::thread::sleep(Duration::from_secs(2));
    }
    std::fs::write(&stop, b"").unwrap();
    wait_success(child, Duration::from_secs(120), &cluster);
}

#[test]
fn offsets_of_a_deleted_topic_are_removed_and_others_kept() {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::DeleteTopicsRequest;

    let broker = DevBroker::start(&["--set", "groups.group_initial_rebalance_delay_ms=0"]).unwrap();
    let mut conn = broker.connect().unwrap();
    create_topic(&mut conn, "doomed", 1, 1);
    create_topic(&mut conn, "kept", 1, 1);
    wait_for_coordinator(&mut conn, &broker, "g");
    for (topic, offset) in [("doomed", 11), ("kept", 22)] {
        let answer = commit(&mut conn, "g", ("", None, -1), topic, &[offset], "");
        assert_eq!(answer, vec![NONE], "{topic}");
    }
    assert_eq!(committed(&mut conn, "g", "doomed", 1), vec![11]);

    let delete = DeleteTopicsRequest::default()
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic_name("doomed")))
        ])
        .with_timeout_ms(30_000);
    let deleted = conn.send(&delete, 6).unwrap();
    assert_eq!(deleted.responses[0].error_code, NONE, "{deleted:?}");
    let deadline = Instant::now() + WAIT;
    while committed(&mut conn, "g", "doomed", 1) != vec![-1] {
        assert!(
            Instant::now() < deadline,
            "the deleted topic's offset stayed\n{}",
            broker.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(committed(&mut conn, "g", "kept", 1), vec![22]);
}
