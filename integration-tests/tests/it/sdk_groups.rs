//! The SDK's group consumer against a real broker: members of one group share a topic's
//! partitions (two, then three), committed offsets carry over to the member that takes a
//! partition over, `cooperative-sticky` moves only the partitions a joining member takes, a
//! static member's restart within its session moves nothing (and a second holder of its instance
//! id fences it), a member not polled in time loses its partitions, patterns and the leader follow
//! new topics and partitions, a confluent-kafka member and an SDK member share a topic under
//! `range`, and `sbctl group` lists, describes, resets and deletes. KIP-848 members
//! (`group_protocol = Consumer`): the same split and commit carry-over (with ConsumerGroupDescribe),
//! a pattern resolved by the coordinator, rejoining after an eviction and a poll timeout, and a
//! static member's restart.
//!
//! Members are polled in turn with short polls from one task: a rebalance needs every member to
//! rejoin, and a `poll` that times out mid-rebalance leaves the join going on in the background.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streambus_client::admin::NewTopic;
use streambus_client::group::RebalanceContext;
use streambus_client::{
    Assignor, Client, ClientConfig, ConsumerConfig, ConsumerRecord, GroupConfig, GroupConsumer,
    GroupProtocol, OffsetAndMetadata, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    RebalanceListener, TopicPartition,
};
use streambus_integration_tests::DevBroker;

use crate::client::create_topic;

/// Bound on every wait for the group (a rebalance, records, a process).
const WAIT: Duration = Duration::from_secs(60);
/// One member's poll; short, so that the others are polled often.
const POLL: Duration = Duration::from_millis(100);
/// Bound on the rounds of polls of one wait (each round polls every member once).
const MAX_ROUNDS: usize = 600;
const PARTITIONS: i32 = 6;

fn start_broker() -> DevBroker {
    DevBroker::start(&["--set", "groups.group_initial_rebalance_delay_ms=0"]).unwrap()
}

async fn connect(broker: &DevBroker) -> Client {
    let mut config = ClientConfig::new(&broker.bootstrap());
    config.client_id = "sdk-member".to_owned();
    Client::connect(config).await.expect("connect")
}

fn group_config(group: &str, assignors: &[Assignor]) -> GroupConfig {
    GroupConfig {
        session_timeout: Duration::from_secs(10),
        heartbeat_interval: Duration::from_millis(300),
        max_poll_interval: Duration::from_secs(30),
        assignors: assignors.to_vec(),
        enable_auto_commit: false,
        consumer: ConsumerConfig {
            fetch_max_wait: Duration::from_millis(50),
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
        ..GroupConfig::new(group)
    }
}

async fn member(broker: &DevBroker, config: GroupConfig, topic: &str) -> GroupConsumer {
    let mut consumer = GroupConsumer::new(connect(broker).await, config).expect("config");
    consumer.subscribe([topic]);
    consumer
}

async fn new_topic(client: &Client, name: &str) {
    create_topic(client, NewTopic::new(name, PARTITIONS, 1)).await;
}

/// `per_partition` records on each partition of `topic`, values `p-i`.
async fn produce(client: &Client, topic: &str, per_partition: usize) {
    let producer = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut deliveries = Vec::new();
    for p in 0..PARTITIONS {
        for i in 0..per_partition {
            let record = ProducerRecord::new(topic, format!("{p}-{i}")).with_partition(p);
            deliveries.push(producer.send(record).await.expect("send"));
        }
    }
    for delivery in deliveries {
        tokio::time::timeout(WAIT, delivery)
            .await
            .expect("delivered in time")
            .expect("delivered");
    }
}

fn all_partitions(topic: &str) -> BTreeSet<TopicPartition> {
    (0..PARTITIONS)
        .map(|p| TopicPartition::new(topic, p))
        .collect()
}

/// Whether the members are in one generation with disjoint assignments covering `topic`.
fn settled(members: &[GroupConsumer], topic: &str) -> bool {
    let generation = members[0].generation();
    if generation < 0 || members.iter().any(|m| m.generation() != generation) {
        return false;
    }
    let mut seen = BTreeSet::new();
    for m in members {
        for tp in m.assignment() {
            if !seen.insert(tp) {
                return false;
            }
        }
    }
    seen == all_partitions(topic)
}

/// Polls every member in turn until `done` holds; returns what each member read meanwhile.
async fn poll_until(
    members: &mut [GroupConsumer],
    what: &str,
    mut done: impl FnMut(&[GroupConsumer], &[Vec<ConsumerRecord>]) -> bool,
) -> Vec<Vec<ConsumerRecord>> {
    let deadline = Instant::now() + WAIT;
    let mut read = vec![Vec::new(); members.len()];
    for _ in 0..MAX_ROUNDS {
        for (member, records) in members.iter_mut().zip(&mut read) {
            records.extend(member.poll(POLL).await.expect("poll"));
        }
        if done(members, &read) {
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}: {members:?}"
        );
    }
    panic!("{what}: not within {MAX_ROUNDS} rounds: {members:?}");
}

async fn settle(members: &mut [GroupConsumer], topic: &str) -> Vec<Vec<ConsumerRecord>> {
    poll_until(members, "group settled", |m, _| settled(m, topic)).await
}

fn assignments(members: &[GroupConsumer]) -> Vec<BTreeSet<TopicPartition>> {
    members
        .iter()
        .map(|m| m.assignment().into_iter().collect())
        .collect()
}

/// One rebalance callback: ("revoked" | "assigned" | "lost", partitions).
type Event = (&'static str, Vec<TopicPartition>);

/// Rebalance callbacks as they happened; with `commit_on_revoke`, the revoked partitions'
/// positions are committed from the callback.
#[derive(Debug, Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>, bool);

impl Events {
    fn push(&self, kind: &'static str, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().push((kind, partitions.to_vec()));
    }

    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl RebalanceListener for Events {
    fn on_partitions_revoked(
        &mut self,
        context: &mut RebalanceContext<'_>,
        tps: &[TopicPartition],
    ) {
        self.push("revoked", tps);
        if self.1 {
            context.commit_positions(tps);
        }
    }

    fn on_partitions_assigned(&mut self, _: &mut RebalanceContext<'_>, tps: &[TopicPartition]) {
        self.push("assigned", tps);
    }

    fn on_partitions_lost(&mut self, _: &mut RebalanceContext<'_>, tps: &[TopicPartition]) {
        self.push("lost", tps);
    }
}

fn partitions_of(events: &[Event], kind: &str) -> BTreeSet<TopicPartition> {
    events
        .iter()
        .filter(|(k, _)| *k == kind)
        .flat_map(|(_, tps)| tps.iter().cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_then_three_members_split_a_topic() {
    let broker = start_broker();
    let client = connect(&broker).await;
    new_topic(&client, "split").await;
    let config = group_config(
        "split-group",
        &[Assignor::Range, Assignor::CooperativeSticky],
    );
    let mut members = vec![
        member(&broker, config.clone(), "split").await,
        member(&broker, config.clone(), "split").await,
    ];
    settle(&mut members, "split").await;
    assert!(
        members.iter().all(|m| m.assignment().len() == 3),
        "{members:?}"
    );
    assert_eq!(members[0].protocol(), Some(Assignor::Range));
    let generation = members[0].generation();

    members.push(member(&broker, config, "split").await);
    settle(&mut members, "split").await;
    assert!(
        members.iter().all(|m| m.assignment().len() == 2),
        "{members:?}"
    );
    assert!(members[0].generation() > generation);
    for m in members {
        m.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_carry_over_to_the_member_that_takes_a_partition() {
    let broker = start_broker();
    let client = connect(&broker).await;
    new_topic(&client, "resume").await;
    // The first member commits by auto commit (on close), the second with commit_sync.
    let mut auto = group_config("resume-group", &[Assignor::Range]);
    auto.enable_auto_commit = true;
    let manual = group_config("resume-group", &[Assignor::Range]);
    let mut members = vec![
        member(&broker, auto, "resume").await,
        member(&broker, manual.clone(), "resume").await,
    ];
    settle(&mut members, "resume").await;
    produce(&client, "resume", 10).await;
    let read = poll_until(&mut members, "60 records read", |_, read| {
        read.iter().map(Vec::len).sum::<usize>() >= 60
    })
    .await;
    // Each member read its partitions from 0 (nothing was committed), each record once.
    for (m, records) in members.iter().zip(&read) {
        let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
        let assigned: BTreeSet<i32> = m.assignment().iter().map(|tp| tp.partition).collect();
        assert_eq!(partitions, assigned);
        assert_eq!(records.len(), 30, "{records:?}");
        assert!(records.iter().all(|r| r.leader_epoch.is_some()));
    }
    members[1].commit_sync().await.expect("commit_sync");
    let committed = members[1]
        .committed(&members[1].assignment())
        .await
        .expect("committed");
    assert!(
        committed
            .values()
            .all(|o| o.as_ref().is_some_and(|o| o.offset == 10)),
        "{committed:?}"
    );

    // The auto-committing member leaves; 6 more records; the other takes every partition and
    // reads exactly the new records: the leaver's partitions resume at its commits.
    let leaver = members.remove(0);
    leaver.close().await.expect("close");
    poll_until(&mut members, "the survivor takes over", |m, _| {
        m[0].assignment().len() == 6
    })
    .await;
    produce(&client, "resume", 1).await;
    let read = poll_until(&mut members, "the new records read", |_, read| {
        read[0].len() >= 6
    })
    .await;
    let mut offsets: Vec<(i32, i64)> = read[0].iter().map(|r| (r.partition, r.offset)).collect();
    offsets.sort();
    assert_eq!(
        offsets,
        (0..PARTITIONS).map(|p| (p, 10)).collect::<Vec<_>>()
    );
    for tp in all_partitions("resume") {
        assert_eq!(members[0].position(&tp), Some(11));
        assert_eq!(members[0].lag(&tp), Some(0));
    }

    // The positions (11) committed, then partition 0 back to 5 with metadata and the leader
    // epoch of the last record: a new member (the only one, after the survivor closes) reads
    // partition 0 from 5 and nothing else.
    members[0].commit_sync().await.expect("commit_sync");
    let tp = TopicPartition::new("resume", 0);
    let epoch = read[0]
        .iter()
        .find(|r| r.partition == 0)
        .and_then(|r| r.leader_epoch);
    let offsets = BTreeMap::from([(
        tp.clone(),
        OffsetAndMetadata::new(5)
            .with_leader_epoch(epoch)
            .with_metadata("replay from 5"),
    )]);
    members[0]
        .commit_offsets_async(offsets)
        .await
        .expect("queued")
        .await
        .expect("committed");
    let committed = members[0]
        .committed(std::slice::from_ref(&tp))
        .await
        .expect("committed");
    let committed = committed[&tp].clone().expect("an offset");
    assert_eq!(committed.offset, 5);
    assert_eq!(committed.metadata, "replay from 5");
    assert_eq!(committed.leader_epoch, epoch);
    members.remove(0).close().await.expect("close");

    let mut members = vec![member(&broker, manual, "resume").await];
    let read = poll_until(
        &mut members,
        "the newcomer reads partition 0 from 5",
        |_, read| read[0].iter().filter(|r| r.partition == 0).count() >= 6,
    )
    .await;
    let first = read[0].iter().find(|r| r.partition == 0).expect("a record");
    assert_eq!(first.offset, 5);
    assert!(read[0].iter().all(|r| r.partition == 0), "{:?}", read[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_moves_only_what_a_joining_member_takes() {
    let broker = start_broker();
    let client = connect(&broker).await;
    new_topic(&client, "coop").await;
    produce(&client, "coop", 2).await;
    let config = group_config("coop-group", &[Assignor::CooperativeSticky]);
    // The members commit what they give up from their revoke callback.
    let events: Vec<Events> = (0..3).map(|_| Events(Arc::default(), true)).collect();
    let mut members = Vec::new();
    for e in &events[..2] {
        let mut m = member(&broker, config.clone(), "coop").await;
        m.set_listener(e.clone());
        members.push(m);
    }
    poll_until(&mut members, "12 records read", |m, read| {
        settled(m, "coop") && read.iter().map(Vec::len).sum::<usize>() >= 12
    })
    .await;
    assert_eq!(members[0].protocol(), Some(Assignor::CooperativeSticky));
    let before = assignments(&members);
    assert!(before.iter().all(|a| a.len() == 3), "{before:?}");
    // The first member had everything until the second came: those callbacks are not the point.
    for e in &events[..2] {
        e.take();
    }

    let mut joiner = member(&broker, config, "coop").await;
    joiner.set_listener(events[2].clone());
    members.push(joiner);
    settle(&mut members, "coop").await;
    let after = assignments(&members);
    assert!(after.iter().all(|a| a.len() == 2), "{after:?}");
    let mut taken = BTreeSet::new();
    for i in 0..2 {
        // Each old member kept two of its three and gave up (revoked) exactly the third.
        assert!(after[i].is_subset(&before[i]), "{before:?} -> {after:?}");
        let seen = events[i].take();
        let revoked = partitions_of(&seen, "revoked");
        let gone: BTreeSet<TopicPartition> = before[i].difference(&after[i]).cloned().collect();
        assert_eq!(revoked, gone, "{seen:?}");
        assert!(partitions_of(&seen, "assigned").is_empty(), "{seen:?}");
        assert!(partitions_of(&seen, "lost").is_empty(), "{seen:?}");
        taken.extend(gone);
    }
    assert_eq!(after[2], taken);
    let seen = events[2].take();
    assert_eq!(partitions_of(&seen, "assigned"), taken, "{seen:?}");
    // The revoke callbacks committed the positions (2): the joiner starts there, reading nothing
    // again.
    let taken: Vec<TopicPartition> = taken.into_iter().collect();
    let committed = members[2].committed(&taken).await.expect("committed");
    assert!(
        committed
            .values()
            .all(|o| o.as_ref().is_some_and(|o| o.offset == 2)),
        "{committed:?}"
    );
    for tp in &taken {
        assert_eq!(members[2].position(tp), Some(2));
    }
    for m in members {
        m.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarting_within_its_session_moves_nothing() {
    let broker = start_broker();
    let client = connect(&broker).await;
    new_topic(&client, "static").await;
    let dynamic = group_config("static-group", &[Assignor::Range]);
    let mut fixed = dynamic.clone();
    fixed.group_instance_id = Some("static-member-1".to_owned());
    let events = Events::default();
    let mut other = member(&broker, dynamic, "static").await;
    other.set_listener(events.clone());
    let mut members = vec![other, member(&broker, fixed.clone(), "static").await];
    settle(&mut members, "static").await;
    let generation = members[0].generation();
    let before = assignments(&members);
    let old_id = members[1].member_id();
    events.take();

    // Closing a static member sends no LeaveGroup; its successor takes its place.
    members.pop().unwrap().close().await.expect("close");
    members.push(member(&broker, fixed, "static").await);
    poll_until(&mut members, "the static member is back", |m, _| {
        m[1].generation() >= 0 && !m[1].assignment().is_empty()
    })
    .await;
    // A few more rounds: a rebalance would show in the other member's generation or callbacks.
    let mut rounds = 0;
    poll_until(&mut members, "20 more rounds", |_, _| {
        rounds += 1;
        rounds >= 20
    })
    .await;
    assert_ne!(members[1].member_id(), old_id);
    assert_eq!(members[1].generation(), generation);
    assert_eq!(members[0].generation(), generation);
    assert_eq!(assignments(&members), before);
    assert_eq!(events.take(), Vec::new());
    for m in members {
        m.close().await.expect("close");
    }
}

/// The confluent-kafka member of `group_member.py`, its JSON lines on a channel.
struct PythonMember {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    stop_file: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
    assigned: Option<BTreeSet<i32>>,
    records: Vec<(i32, i64)>,
}

impl PythonMember {
    fn start(broker: &DevBroker, group: &str, topic: &str, assignor: &str) -> PythonMember {
        let dir = tempfile::tempdir().unwrap();
        let stop_file = dir.path().join("stop");
        let stderr = dir.path().join("stderr");
        let script = streambus_integration_tests::manifest_dir().join("python/group_member.py");
        let mut child = Command::new(streambus_integration_tests::python().unwrap())
            .arg(script)
            .args([group, topic, assignor, stop_file.to_str().unwrap()])
            .env("STREAMBUS_BOOTSTRAP", broker.bootstrap())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("python starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(serde_json::json!({"bad": line}));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        PythonMember {
            child,
            lines,
            stop_file,
            stderr,
            _dir: dir,
            assigned: None,
            records: Vec::new(),
        }
    }

    /// Takes in what the script printed so far.
    fn drain(&mut self) {
        while let Ok(event) = self.lines.try_recv() {
            match event["event"].as_str() {
                Some("assigned") => {
                    let partitions = event["partitions"].as_array().unwrap();
                    self.assigned = Some(
                        partitions
                            .iter()
                            .map(|p| p.as_i64().unwrap() as i32)
                            .collect(),
                    );
                }
                Some("record") => self.records.push((
                    event["partition"].as_i64().unwrap() as i32,
                    event["offset"].as_i64().unwrap(),
                )),
                Some("closed") => self.assigned = Some(BTreeSet::new()),
                _ => panic!("python member: {event}\n{}", self.stderr_text()),
            }
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Asks the script to commit, leave and exit; waits for it (bounded) and checks its exit.
    fn stop(&mut self) {
        std::fs::write(&self.stop_file, b"").unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "python member: {status}\n{}",
                    self.stderr_text()
                );
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "python member still running after {WAIT:?}\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The reader thread ends with the pipe: everything printed is on the channel.
        std::thread::sleep(Duration::from_millis(100));
        self.drain();
    }
}

impl Drop for PythonMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_member_and_a_confluent_kafka_member_share_a_topic() {
    let broker = start_broker();
    let client = connect(&broker).await;
    new_topic(&client, "mixed").await;
    let mut python = PythonMember::start(&broker, "mixed-group", "mixed", "range");
    // Auto commit: the positions are committed before the rebalance takes partitions away, so
    // nothing is read twice when the other member leaves.
    let mut config = group_config("mixed-group", &[Assignor::Range]);
    config.enable_auto_commit = true;
    let mut members = vec![member(&broker, config, "mixed").await];
    let full: BTreeSet<i32> = (0..PARTITIONS).collect();
    poll_until(
        &mut members,
        "SDK and confluent-kafka members split the topic",
        |m, _| {
            python.drain();
            let ours: BTreeSet<i32> = m[0].assignment().iter().map(|tp| tp.partition).collect();
            let theirs = python.assigned.clone().unwrap_or_default();
            m[0].generation() >= 0
                && ours.len() == 3
                && theirs.len() == 3
                && ours.is_disjoint(&theirs)
                && ours.union(&theirs).copied().collect::<BTreeSet<_>>() == full
        },
    )
    .await;
    let ours: BTreeSet<i32> = members[0]
        .assignment()
        .iter()
        .map(|tp| tp.partition)
        .collect();

    produce(&client, "mixed", 10).await;
    let read = poll_until(
        &mut members,
        "both members read their partitions",
        |_, read| {
            python.drain();
            read[0].len() >= 30 && python.records.len() >= 30
        },
    )
    .await;
    assert!(read[0].iter().all(|r| ours.contains(&r.partition)));
    assert!(
        python.records.iter().all(|(p, _)| !ours.contains(p)),
        "{:?}",
        python.records
    );
    assert_eq!(read[0].len(), 30);
    assert_eq!(python.records.len(), 30);

    // The confluent-kafka member commits and leaves; the SDK member takes its partitions over
    // at its committed offsets: nothing is read again.
    python.stop();
    produce(&client, "mixed", 1).await;
    let read = poll_until(
        &mut members,
        "the SDK member takes everything",
        |m, read| m[0].assignment().len() == 6 && read[0].len() >= 6,
    )
    .await;
    let mut offsets: Vec<(i32, i64)> = read[0].iter().map(|r| (r.partition, r.offset)).collect();
    offsets.sort();
    assert_eq!(
        offsets,
        (0..PARTITIONS).map(|p| (p, 10)).collect::<Vec<_>>()
    );
    members.remove(0).close().await.expect("close");
}

/// `sbctl --output json ...` (one JSON line) against `broker`; the blocking process runs off
/// the runtime's workers so the member's heartbeats go on.
fn sbctl_json(broker: &DevBroker, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = tokio::task::block_in_place(|| crate::sbctl::ok(broker, &all));
    let mut lines = crate::sbctl::json_lines(&out);
    assert_eq!(lines.len(), 1, "sbctl {args:?}: {out}");
    lines.remove(0)
}

/// Committed offsets by partition from `sbctl group describe` JSON.
fn committed_of(described: &serde_json::Value) -> BTreeMap<i64, Option<i64>> {
    described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["committed_offset"].as_i64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbctl_group_list_describe_reset_and_delete() {
    let broker = start_broker();
    let client = connect(&broker).await;
    new_topic(&client, "ops").await;
    produce(&client, "ops", 10).await;
    let mut members = vec![
        member(
            &broker,
            group_config("ops-group", &[Assignor::Range]),
            "ops",
        )
        .await,
    ];
    poll_until(&mut members, "60 records read", |_, read| {
        read[0].len() >= 60
    })
    .await;
    members[0].commit_sync().await.expect("commit");
    let member_id = members[0].member_id();

    let listed = sbctl_json(&broker, &["group", "list"]);
    assert_eq!(
        listed,
        serde_json::json!([{"group_id": "ops-group", "protocol_type": "consumer", "state": "Stable"}])
    );
    let described = sbctl_json(&broker, &["group", "describe", "ops-group"]);
    assert_eq!(described["state"], "Stable");
    assert_eq!(described["protocol"], "range");
    assert_eq!(described["members"][0]["member_id"], member_id.as_str());
    assert_eq!(described["members"][0]["client_id"], "sdk-member");
    assert_eq!(
        described["members"][0]["assignment"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    for p in described["partitions"].as_array().unwrap() {
        assert_eq!(p["committed_offset"], 10, "{p}");
        assert_eq!(p["log_end_offset"], 10, "{p}");
        assert_eq!(p["lag"], 0, "{p}");
        assert_eq!(p["member_id"], member_id.as_str(), "{p}");
    }
    let table = tokio::task::block_in_place(|| {
        crate::sbctl::ok(&broker, &["group", "describe", "ops-group"])
    });
    assert!(
        table.contains("CURRENT-OFFSET") && table.contains("State: Stable"),
        "{table}"
    );
    tokio::task::block_in_place(|| {
        crate::sbctl::fails(
            &broker,
            &[
                "group",
                "reset-offsets",
                "ops-group",
                "--topic",
                "ops",
                "--to-earliest",
            ],
            "can only be reset if the group 'ops-group' is inactive",
        )
    });

    members.remove(0).close().await.expect("close");
    let described = sbctl_json(&broker, &["group", "describe", "ops-group"]);
    assert_eq!(described["state"], "Empty");
    assert_eq!(described["members"], serde_json::json!([]));
    let table = tokio::task::block_in_place(|| {
        crate::sbctl::ok(&broker, &["group", "describe", "ops-group"])
    });
    assert!(table.contains("has no active members"), "{table}");

    // A dry run plans and changes nothing.
    let plan = sbctl_json(
        &broker,
        &[
            "group",
            "reset-offsets",
            "ops-group",
            "--topic",
            "ops:0,1",
            "--to-earliest",
        ],
    );
    assert_eq!(plan["executed"], false);
    assert_eq!(
        plan["partitions"],
        serde_json::json!([
            {"topic": "ops", "partition": 0, "previous_offset": 10, "new_offset": 0},
            {"topic": "ops", "partition": 1, "previous_offset": 10, "new_offset": 0},
        ])
    );
    let all_ten: BTreeMap<i64, Option<i64>> = (0..6).map(|p| (p, Some(10))).collect();
    assert_eq!(
        committed_of(&sbctl_json(&broker, &["group", "describe", "ops-group"])),
        all_ten
    );

    let reset = |args: &[&str]| {
        let mut all = vec!["group", "reset-offsets", "ops-group", "--execute"];
        all.extend_from_slice(args);
        let result = sbctl_json(&broker, &all);
        assert_eq!(result["executed"], true, "{result}");
        committed_of(&sbctl_json(&broker, &["group", "describe", "ops-group"]))
    };
    let committed = reset(&["--topic", "ops", "--shift-by", "-3"]);
    assert!(committed.values().all(|o| *o == Some(7)), "{committed:?}");
    // Beyond the log end: clamped to it, as Kafka does.
    let committed = reset(&["--topic", "ops:2", "--to-offset", "100"]);
    assert_eq!(committed[&2], Some(10));
    let committed = reset(&["--topic", "ops:3", "--to-datetime", "1970-01-01T00:00:00Z"]);
    assert_eq!(committed[&3], Some(0));
    let committed = reset(&["--all-topics", "--to-latest"]);
    assert_eq!(committed, all_ten);

    let deleted = sbctl_json(
        &broker,
        &["group", "delete-offsets", "ops-group", "--topic", "ops:5"],
    );
    assert_eq!(
        deleted["partitions"],
        serde_json::json!([{"topic": "ops", "partition": 5, "error": null}])
    );
    let committed = committed_of(&sbctl_json(&broker, &["group", "describe", "ops-group"]));
    assert_eq!(
        committed.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );

    let deleted = sbctl_json(&broker, &["group", "delete", "ops-group"]);
    assert_eq!(
        deleted,
        serde_json::json!({"group": "ops-group", "result": "deleted"})
    );
    assert_eq!(
        sbctl_json(&broker, &["group", "list"]),
        serde_json::json!([])
    );
    tokio::task::block_in_place(|| {
        crate::sbctl::fails(
            &broker,
            &["group", "delete", "ops-group"],
            "GROUP_ID_NOT_FOUND",
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_follows_new_topics_and_latest_skips_old_records() {
    let broker = start_broker();
    let mut config = ClientConfig::new(&broker.bootstrap());
    // The pattern is matched again every metadata_max_age.
    config.metadata_max_age = Duration::from_millis(300);
    let client = Client::connect(config).await.expect("connect");
    new_topic(&client, "pat-a").await;
    create_topic(&client, NewTopic::new("other", 2, 1)).await;
    produce(&client, "pat-a", 3).await;
    let mut group = group_config("pattern-group", &[Assignor::RoundRobin]);
    group.consumer.auto_offset_reset = OffsetReset::Latest;
    let mut consumer = GroupConsumer::new(client.clone(), group).expect("config");
    consumer
        .subscribe_pattern("pat-.*")
        .expect("a valid pattern");
    let mut members = vec![consumer];
    poll_until(&mut members, "pat-a assigned and positioned", |m, _| {
        m[0].assignment().len() == 6
            && m[0]
                .assignment()
                .iter()
                .all(|tp| m[0].position(tp) == Some(3))
    })
    .await;
    assert_eq!(members[0].subscription(), ["pat-a"]);
    assert_eq!(members[0].protocol(), Some(Assignor::RoundRobin));

    new_topic(&client, "pat-b").await;
    poll_until(&mut members, "pat-b assigned too", |m, _| {
        m[0].assignment().len() == 12
    })
    .await;
    assert_eq!(members[0].subscription(), ["pat-a", "pat-b"]);
    // Nothing was committed: pat-a starts at its end (latest), so only new records arrive.
    produce(&client, "pat-a", 1).await;
    let read = poll_until(&mut members, "the new records", |_, read| {
        read[0].len() >= 6
    })
    .await;
    assert!(
        read[0].iter().all(|r| r.topic == "pat-a" && r.offset == 3),
        "{:?}",
        read[0]
    );
    members.remove(0).close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_holder_of_an_instance_id_fences_the_first() {
    let broker = start_broker();
    let client = connect(&broker).await;
    new_topic(&client, "fenced").await;
    let mut config = group_config("fenced-group", &[Assignor::Range]);
    config.group_instance_id = Some("one-instance".to_owned());
    let mut first = vec![member(&broker, config.clone(), "fenced").await];
    settle(&mut first, "fenced").await;
    let mut second = vec![member(&broker, config, "fenced").await];
    settle(&mut second, "fenced").await;
    // The first learns at its next heartbeat (or commit) that it was replaced.
    let deadline = Instant::now() + WAIT;
    let error = loop {
        match first[0].poll(POLL).await {
            Err(error) => break error,
            Ok(_) => assert!(Instant::now() < deadline, "the first member was not fenced"),
        }
    };
    assert_eq!(error.kafka_code(), Some(82), "{error}");
    // Fatal: every later call fails the same way.
    assert_eq!(
        first[0].poll(POLL).await.unwrap_err().kafka_code(),
        Some(82)
    );
    assert_eq!(
        first[0].commit_sync().await.unwrap_err().kafka_code(),
        Some(82)
    );
    assert_eq!(second[0].assignment().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_not_polled_within_max_poll_interval_loses_its_partitions() {
    let broker = start_broker();
    let client = connect(&broker).await;
    new_topic(&client, "slow").await;
    let mut config = group_config("slow-group", &[Assignor::Range]);
    config.max_poll_interval = Duration::from_secs(1);
    let events = Events::default();
    let mut slow = member(&broker, config, "slow").await;
    slow.set_listener(events.clone());
    let mut members = vec![slow];
    settle(&mut members, "slow").await;
    let generation = members[0].generation();
    let member_id = members[0].member_id();
    events.take();
    // No poll for three max_poll_intervals: the heartbeat task leaves the group.
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle(&mut members, "slow").await;
    let seen = events.take();
    assert_eq!(
        partitions_of(&seen, "lost"),
        all_partitions("slow"),
        "{seen:?}"
    );
    assert!(partitions_of(&seen, "revoked").is_empty(), "{seen:?}");
    assert_eq!(
        partitions_of(&seen, "assigned"),
        all_partitions("slow"),
        "{seen:?}"
    );
    assert!(members[0].generation() > generation);
    assert_ne!(members[0].member_id(), member_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_reassigns_when_a_subscribed_topic_appears_or_grows() {
    let broker = start_broker();
    let mut config = ClientConfig::new(&broker.bootstrap());
    // The leader compares partition counts every metadata_max_age.
    config.metadata_max_age = Duration::from_millis(300);
    let client = Client::connect(config).await.expect("connect");
    let mut consumer = GroupConsumer::new(
        client.clone(),
        group_config("later-group", &[Assignor::Range]),
    )
    .expect("config");
    consumer.subscribe(["later"]);
    let mut members = vec![consumer];
    poll_until(&mut members, "joined with nothing to consume", |m, _| {
        m[0].generation() >= 0
    })
    .await;
    assert!(members[0].assignment().is_empty());
    create_topic(&client, NewTopic::new("later", 2, 1)).await;
    poll_until(&mut members, "the new topic assigned", |m, _| {
        m[0].assignment().len() == 2
    })
    .await;
    streambus_client::Admin::new(client.clone())
        .create_partitions("later", 3, false)
        .await
        .expect("CreatePartitions");
    poll_until(&mut members, "the new partition assigned", |m, _| {
        m[0].assignment().len() == 3
    })
    .await;
    members.remove(0).close().await.expect("close");
}

/// KIP-848 members (`group_protocol = Consumer`) against a broker heartbeating them every
/// 500 ms.
fn start_broker_848() -> DevBroker {
    DevBroker::start(&[
        "--set",
        "groups.consumer_heartbeat_interval_ms=500",
        "--set",
        "groups.group_initial_rebalance_delay_ms=0",
    ])
    .unwrap()
}

fn group_config_848(group: &str) -> GroupConfig {
    GroupConfig {
        group_protocol: GroupProtocol::Consumer,
        server_assignor: Some("uniform".to_owned()),
        ..group_config(group, &[Assignor::Range])
    }
}

/// KIP-848: every member has an epoch (epochs differ between members) and a share of
/// `topic` (as even as can be), the shares disjoint and covering it.
fn settled_848(members: &[GroupConsumer], topic: &str) -> bool {
    let share = usize::try_from(PARTITIONS).unwrap() / members.len();
    if members
        .iter()
        .any(|m| m.generation() <= 0 || m.assignment().len() < share)
    {
        return false;
    }
    let mut seen = BTreeSet::new();
    for m in members {
        for tp in m.assignment() {
            if !seen.insert(tp) {
                return false;
            }
        }
    }
    seen == all_partitions(topic)
}

/// ConsumerGroupDescribe of `group`, raw: (member id, member epoch, assigned partitions).
fn describe_848(broker: &DevBroker, group: &str) -> Vec<(String, i32, usize)> {
    use kafka_protocol::messages::{ConsumerGroupDescribeRequest, GroupId};
    use kafka_protocol::protocol::StrBytes;
    let request = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
    let response = broker
        .connect()
        .expect("raw connection")
        .send(&request, 0)
        .expect("ConsumerGroupDescribe");
    let described = &response.groups[0];
    assert_eq!(described.error_code, 0, "{described:?}");
    let mut members: Vec<(String, i32, usize)> = described
        .members
        .iter()
        .map(|m| {
            let assigned = m
                .assignment
                .topic_partitions
                .iter()
                .map(|t| t.partitions.len())
                .sum();
            (m.member_id.to_string(), m.member_epoch, assigned)
        })
        .collect();
    members.sort();
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_848_members_split_a_topic_and_carry_commits_over() {
    let broker = start_broker_848();
    let client = connect(&broker).await;
    new_topic(&client, "split848").await;
    let config = group_config_848("split848-group");
    let events = Events::default();
    let mut first = member(&broker, config.clone(), "split848").await;
    first.set_listener(events.clone());
    let mut members = vec![first, member(&broker, config.clone(), "split848").await];
    poll_until(&mut members, "two members settled", |m, _| {
        settled_848(m, "split848")
    })
    .await;
    assert!(
        members.iter().all(|m| m.assignment().len() == 3),
        "{members:?}"
    );
    // Member ids are the members' own UUIDs.
    for m in &members {
        let id = m.member_id();
        assert!(id.len() == 36 && id.matches('-').count() == 4, "{id}");
    }
    // The coordinator sees both, each with its 3 partitions, once the members reported them.
    let ids: BTreeSet<String> = members.iter().map(GroupConsumer::member_id).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        poll_until(&mut members, "a round", |_, _| true).await;
        let described = describe_848(&broker, "split848-group");
        let described_ids: BTreeSet<String> = described.iter().map(|m| m.0.clone()).collect();
        if described_ids == ids && described.iter().all(|m| m.2 == 3 && m.1 > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "described: {described:?}");
    }

    // Records read and committed (commit_sync, OffsetCommit v9 with the member epoch).
    produce(&client, "split848", 10).await;
    let read = poll_until(&mut members, "60 records read", |_, read| {
        read.iter().map(Vec::len).sum::<usize>() >= 60
    })
    .await;
    assert_eq!(read.iter().map(Vec::len).sum::<usize>(), 60);
    for m in &mut members {
        m.commit_sync().await.expect("commit_sync");
    }

    // A third member: 2 partitions each; the first member's listener saw the revocation.
    events.take();
    members.push(member(&broker, config.clone(), "split848").await);
    poll_until(&mut members, "three members settled", |m, _| {
        settled_848(m, "split848") && m.iter().all(|m| m.assignment().len() == 2)
    })
    .await;
    let seen = events.take();
    assert!(!partitions_of(&seen, "revoked").is_empty(), "{seen:?}");
    assert!(partitions_of(&seen, "lost").is_empty(), "{seen:?}");
    // The newcomer starts at the commits: it reads nothing of the first 60 records.
    produce(&client, "split848", 1).await;
    let read = poll_until(&mut members, "the 6 new records read", |_, read| {
        read.iter().map(Vec::len).sum::<usize>() >= 6
    })
    .await;
    let offsets: BTreeSet<i64> = read.iter().flatten().map(|r| r.offset).collect();
    assert_eq!(offsets, BTreeSet::from([10]), "{read:?}");
    for m in &mut members {
        m.commit_sync().await.expect("commit_sync");
    }

    // All close (epoch -1): a new member alone takes everything, at the commits (11).
    for m in members {
        m.close().await.expect("close");
    }
    let mut members = vec![member(&broker, config, "split848").await];
    poll_until(&mut members, "a lone member takes all", |m, _| {
        settled_848(m, "split848")
    })
    .await;
    for tp in all_partitions("split848") {
        assert_eq!(members[0].position(&tp), Some(11), "{tp}");
    }
    assert_eq!(describe_848(&broker, "split848-group").len(), 1);
    members.remove(0).close().await.expect("close");
}

/// Makes `member_id` leave `group` behind its back (a ConsumerGroupHeartbeat of epoch -1 in
/// its name): its next heartbeat is refused as an unknown member.
fn evict_848(broker: &DevBroker, group: &str, member_id: &str) {
    use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, GroupId};
    use kafka_protocol::protocol::StrBytes;
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_member_id(StrBytes::from_string(member_id.to_owned()))
        .with_member_epoch(-1);
    let response = broker
        .connect()
        .expect("raw connection")
        .send(&request, 1)
        .expect("ConsumerGroupHeartbeat");
    assert_eq!(response.error_code, 0, "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_member_follows_a_pattern_and_rejoins_after_losing_its_partitions() {
    let broker = start_broker_848();
    let client = connect(&broker).await;
    new_topic(&client, "pat848-a").await;
    create_topic(&client, NewTopic::new("other848", 2, 1)).await;
    let mut config = group_config_848("pat848-group");
    config.max_poll_interval = Duration::from_secs(2);
    let events = Events::default();
    let mut consumer = GroupConsumer::new(client.clone(), config).expect("config");
    consumer.set_listener(events.clone());
    consumer
        .subscribe_pattern("pat848-.*")
        .expect("a valid pattern");
    let mut members = vec![consumer];
    // The coordinator resolves the regular expression (SubscribedTopicRegex).
    poll_until(&mut members, "pat848-a assigned", |m, _| {
        m[0].generation() > 0 && m[0].assignment().len() == 6
    })
    .await;
    assert!(members[0]
        .assignment()
        .iter()
        .all(|tp| tp.topic == "pat848-a"));
    let member_id = members[0].member_id();

    // Evicted behind its back: the next heartbeat is refused, the partitions are lost, and
    // the member joins again with epoch 0 and the same member id.
    events.take();
    evict_848(&broker, "pat848-group", &member_id);
    poll_until(&mut members, "lost, then assigned again", |m, _| {
        let seen = events.0.lock().unwrap().clone();
        !partitions_of(&seen, "lost").is_empty() && m[0].assignment().len() == 6
    })
    .await;
    let seen = events.take();
    assert_eq!(
        partitions_of(&seen, "lost"),
        all_partitions("pat848-a"),
        "{seen:?}"
    );
    assert!(partitions_of(&seen, "revoked").is_empty(), "{seen:?}");
    assert_eq!(members[0].member_id(), member_id);

    // No poll for longer than max_poll_interval: the heartbeat task leaves (epoch -1), the
    // partitions are lost, and the next polls join again, still under the same member id.
    tokio::time::sleep(Duration::from_secs(4)).await;
    poll_until(&mut members, "assigned after the poll timeout", |m, _| {
        let seen = events.0.lock().unwrap().clone();
        !partitions_of(&seen, "lost").is_empty()
            && m[0].generation() > 0
            && m[0].assignment().len() == 6
    })
    .await;
    assert_eq!(
        partitions_of(&events.take(), "lost"),
        all_partitions("pat848-a")
    );
    assert_eq!(members[0].member_id(), member_id);
    assert_eq!(describe_848(&broker, "pat848-group").len(), 1);
    members.remove(0).close().await.expect("close");
    assert!(describe_848(&broker, "pat848-group").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_kip_848_member_gets_its_partitions_back_after_a_restart() {
    let broker = start_broker_848();
    let client = connect(&broker).await;
    new_topic(&client, "static848").await;
    let config = |instance: &str| GroupConfig {
        group_instance_id: Some(instance.to_owned()),
        ..group_config_848("static848-group")
    };
    let mut members = vec![
        member(&broker, config("one"), "static848").await,
        member(&broker, config("two"), "static848").await,
    ];
    poll_until(&mut members, "two static members settled", |m, _| {
        settled_848(m, "static848")
    })
    .await;
    let before = assignments(&members);
    let old_id = members[1].member_id();
    // "two" closes (epoch -2: back soon) and comes back under a new member id.
    members.remove(1).close().await.expect("close");
    // Meanwhile its partitions wait for it: "one" does not get them (3 heartbeat intervals).
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        members[0].poll(POLL).await.expect("poll");
        assert_eq!(assignments(&members)[0], before[0]);
    }
    members.push(member(&broker, config("two"), "static848").await);
    poll_until(&mut members, "the restarted member settled", |m, _| {
        settled_848(m, "static848")
    })
    .await;
    assert_ne!(members[1].member_id(), old_id);
    assert_eq!(assignments(&members), before);
    for m in members {
        m.close().await.expect("close");
    }
}
