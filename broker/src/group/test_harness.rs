//! The harness of the group coordinator's unit tests ([`super::tests`] for the classic protocol,
//! [`super::consumer_tests`] for KIP-848 consumer groups): a `__consumer_offsets` partition's
//! state machine driven as the shard drives it, with a fake clock, the machine's timers fired at
//! their deadlines, every written record appended at the next offset and replayed, and the
//! answers an operation deferred released once its records are "committed"; and the requests
//! and answers the tests build and read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use super::classic::{
    Group, GroupRules, GroupState, GroupTimer, JoinRequest, JoinResponse, Reply, SyncRequest,
    SyncResponse,
};
use super::consumer::{ConsumerRules, TopicsView};
use super::machine::{protocol, CommitPartition, CommitRequest, GroupMachine, PartitionOutcomes};
use super::records::{GroupMetadataValue, RecordKey};
use super::GroupProblem;
use crate::coordinator::{
    CoordinatorMachine, CoordinatorRecord, CoordinatorResult, Deferred, OpContext, Timers,
};

pub(super) const GROUP: &str = "group";
pub(super) const SESSION_MS: i32 = 10_000;
pub(super) const REBALANCE_MS: i32 = 30_000;
/// The clock when a test starts (any time will do; not zero, so a zero timestamp stands out).
pub(super) const START_MS: i64 = 1_700_000_000_000;

/// The default rules without the initial rebalance delay, so a join phase completes as soon as
/// every member joined.
pub(super) fn rules() -> GroupRules {
    GroupRules {
        initial_rebalance_delay_ms: 0,
        ..GroupRules::default()
    }
}

// ------------------------------------------------------------------------------------- harness

/// One `__consumer_offsets` partition's state machine with its timers, a fake clock and the log
/// it wrote.
pub(super) struct Harness {
    pub(super) machine: GroupMachine,
    pub(super) timers: Timers<GroupTimer>,
    pub(super) now_ms: i64,
    /// Every record written, at its offset.
    pub(super) log: Vec<(i64, CoordinatorRecord)>,
    /// The metadata image's topics, as the classic requests see them.
    pub(super) topics: TopicsView,
}

/// What LeaveGroup answers: per member, or for the whole group.
pub(super) type LeaveOutcome = Result<Vec<Result<(), GroupProblem>>, GroupProblem>;

pub(super) type Op<'a, R> =
    Box<dyn FnOnce(&mut GroupMachine, &mut OpContext<'_, GroupTimer>) -> CoordinatorResult<R> + 'a>;

impl Harness {
    /// A coordinator of a partition with an empty log.
    pub(super) fn new(rules: GroupRules) -> Harness {
        Harness::load(rules, &[], START_MS)
    }

    /// A coordinator that loads `log` at `now_ms`, as a new coordinator loads its partition:
    /// every record replayed, then `on_loaded`.
    pub(super) fn load(
        rules: GroupRules,
        log: &[(i64, CoordinatorRecord)],
        now_ms: i64,
    ) -> Harness {
        Harness::load_with(rules, ConsumerRules::default(), log, now_ms)
    }

    /// [`Harness::load`] with the rules of consumer groups.
    pub(super) fn load_with(
        rules: GroupRules,
        consumer_rules: ConsumerRules,
        log: &[(i64, CoordinatorRecord)],
        now_ms: i64,
    ) -> Harness {
        let mut machine = GroupMachine::new(rules, consumer_rules);
        for (offset, record) in log {
            machine
                .replay(*offset, Some(&record.key), record.value.as_deref())
                .expect("every written record replays");
        }
        let mut timers = Timers::new();
        machine.on_loaded(&mut OpContext {
            now_ms,
            timers: &mut timers,
        });
        Harness {
            machine,
            timers,
            now_ms,
            log: log.to_vec(),
            topics: TopicsView::new(),
        }
    }

    /// Runs an operation without writing its records: its result and the answers it deferred.
    pub(super) fn run_unwritten<R>(
        &mut self,
        op: Op<'_, R>,
    ) -> (CoordinatorResult<R>, Vec<Deferred>) {
        let mut ctx = OpContext {
            now_ms: self.now_ms,
            timers: &mut self.timers,
        };
        let result = op(&mut self.machine, &mut ctx);
        let deferred = self.machine.take_deferred();
        (result, deferred)
    }

    /// Runs an operation as the shard does: the operation, then its records appended and
    /// replayed, then (the records being committed) the answers it deferred released.
    pub(super) fn run<R>(&mut self, op: Op<'_, R>) -> (R, Vec<CoordinatorRecord>) {
        let (result, deferred) = self.run_unwritten(op);
        self.write(&result.records);
        release(deferred);
        (result.response, result.records)
    }

    /// Appends `records` at the next offsets and replays them.
    pub(super) fn write(&mut self, records: &[CoordinatorRecord]) {
        for record in records {
            let offset = self.log.len() as i64;
            self.machine
                .replay(offset, Some(&record.key), record.value.as_deref())
                .expect("a written record replays");
            self.log.push((offset, record.clone()));
        }
    }

    /// Moves the clock `ms` forward, firing every timer due on the way at its deadline as the
    /// shard does (its records written, then its answers released). The records the timers
    /// wrote.
    pub(super) fn advance(&mut self, ms: i64) -> Vec<CoordinatorRecord> {
        let target = self.now_ms + ms;
        let mut written = Vec::new();
        let mut rounds = 0;
        while let Some(deadline) = self.timers.next_deadline_ms().filter(|d| *d <= target) {
            rounds += 1;
            assert!(rounds < 10_000, "timers keep firing at {deadline}");
            self.now_ms = self.now_ms.max(deadline);
            // One at a time, as the shard fires them.
            while let Some(key) = self.timers.pop_due(self.now_ms) {
                let mut ctx = OpContext {
                    now_ms: self.now_ms,
                    timers: &mut self.timers,
                };
                let records = self.machine.on_timer(key, &mut ctx);
                let deferred = self.machine.take_deferred();
                self.write(&records);
                release(deferred);
                written.extend(records);
            }
        }
        self.now_ms = target;
        written
    }

    pub(super) fn group(&self) -> &Group {
        self.machine.group(GROUP).expect("the group exists")
    }

    pub(super) fn state(&self) -> GroupState {
        self.group().state
    }

    pub(super) fn generation(&self) -> i32 {
        self.group().generation_id
    }

    pub(super) fn member_ids(&self) -> Vec<String> {
        self.group().members.keys().cloned().collect()
    }

    // ------------------------------------------------------------------ operations

    pub(super) fn join(&mut self, request: JoinRequest) -> Reply<JoinResponse> {
        self.join_group(GROUP, request)
    }

    pub(super) fn join_group(&mut self, group: &str, request: JoinRequest) -> Reply<JoinResponse> {
        let topics = self.topics.clone();
        self.run(Box::new(move |m, ctx| m.join(group, request, &topics, ctx)))
            .0
    }

    pub(super) fn sync(&mut self, request: SyncRequest) -> Reply<SyncResponse> {
        self.sync_group(GROUP, request)
    }

    pub(super) fn sync_group(&mut self, group: &str, request: SyncRequest) -> Reply<SyncResponse> {
        let topics = self.topics.clone();
        self.run(Box::new(move |m, ctx| m.sync(group, request, &topics, ctx)))
            .0
    }

    pub(super) fn heartbeat(&mut self, member: &str, generation: i32) -> Result<(), GroupProblem> {
        self.heartbeat_as(member, None, generation)
    }

    pub(super) fn heartbeat_as(
        &mut self,
        member: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupProblem> {
        let (outcome, records) = self.run(Box::new(move |m, ctx| {
            m.heartbeat(GROUP, member, instance, generation, ctx)
        }));
        assert!(records.is_empty(), "a heartbeat writes nothing");
        outcome
    }

    /// LeaveGroup of `(member id, instance id)` pairs.
    pub(super) fn leave(
        &mut self,
        members: &[(&str, Option<&str>)],
    ) -> (LeaveOutcome, Vec<CoordinatorRecord>) {
        self.leave_group(GROUP, members)
    }

    pub(super) fn leave_group(
        &mut self,
        group: &str,
        members: &[(&str, Option<&str>)],
    ) -> (LeaveOutcome, Vec<CoordinatorRecord>) {
        let members = members
            .iter()
            .map(|(id, instance)| (id.to_string(), instance.map(str::to_owned)))
            .collect();
        let topics = self.topics.clone();
        self.run(Box::new(move |m, ctx| {
            m.leave(group, members, &topics, ctx)
        }))
    }

    pub(super) fn commit(
        &mut self,
        group: &str,
        request: CommitRequest,
    ) -> (
        Result<PartitionOutcomes, GroupProblem>,
        Vec<CoordinatorRecord>,
    ) {
        self.run(Box::new(move |m, ctx| m.commit(group, request, ctx)))
    }

    /// The committed offset of `topic`-`partition` for `group`, as OffsetFetch reads it.
    pub(super) fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let fetched = self
            .machine
            .fetch(group, Some(vec![(topic.to_owned(), vec![partition])]));
        assert_eq!(fetched.len(), 1);
        fetched[0].2.as_ref().map(|c| c.offset)
    }

    /// Every committed offset of `group`, as OffsetFetch of all partitions reads them.
    pub(super) fn all_committed(&self, group: &str) -> BTreeMap<(String, i32), i64> {
        self.machine
            .fetch(group, None)
            .into_iter()
            .map(|(topic, partition, c)| ((topic, partition), c.expect("fetched").offset))
            .collect()
    }

    pub(super) fn heartbeat_deadline(&self, member: &str) -> Option<i64> {
        self.timers.deadline_ms(&GroupTimer::Heartbeat {
            group: GROUP.to_owned(),
            member: member.to_owned(),
        })
    }
}

pub(super) fn release(deferred: Vec<Deferred>) {
    for answer in deferred {
        answer();
    }
}

// ------------------------------------------------------------------------------------- answers

/// The answer given at once.
#[track_caller]
pub(super) fn now<T: Debug>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(answer) => answer,
        Reply::Later(_) => panic!("expected an answer at once, the request waits"),
    }
}

/// The channel of a request that waits.
#[track_caller]
pub(super) fn later<T: Debug>(reply: Reply<T>) -> oneshot::Receiver<T> {
    match reply {
        Reply::Later(waiting) => waiting,
        Reply::Now(answer) => panic!("expected the request to wait, answered {answer:?}"),
    }
}

/// The answer a waiting request got.
#[track_caller]
pub(super) fn answered<T: Debug>(waiting: &mut oneshot::Receiver<T>) -> T {
    match waiting.try_recv() {
        Ok(answer) => answer,
        Err(error) => panic!("expected an answer: {error:?}"),
    }
}

#[track_caller]
pub(super) fn unanswered<T: Debug>(waiting: &mut oneshot::Receiver<T>) {
    match waiting.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected no answer yet, got {other:?}"),
    }
}

/// The answer, given at once or released by the operation that decided it.
#[track_caller]
pub(super) fn answer<T: Debug>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(answer) => answer,
        Reply::Later(mut waiting) => answered(&mut waiting),
    }
}

// ------------------------------------------------------------------------------------ requests

/// A JoinGroup from a consumer with one protocol (`range`).
pub(super) fn join_request(member_id: &str, new_member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_owned(),
        group_instance_id: None,
        client_id: "client".to_owned(),
        client_host: "/10.0.0.1".to_owned(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".to_owned(),
        protocols: vec![protocol("range", b"subscription")],
        require_known_member_id: false,
        new_member_id: new_member_id.to_owned(),
    }
}

/// The first join of a dynamic member (JoinGroup before v4: no MEMBER_ID_REQUIRED round trip);
/// it becomes `id`.
pub(super) fn new_member(id: &str) -> JoinRequest {
    join_request("", id)
}

/// A join of member `id` again.
pub(super) fn rejoin(id: &str) -> JoinRequest {
    join_request(id, "never-used")
}

/// The first join of a static member with `instance`; it becomes `id`.
pub(super) fn new_static_member(instance: &str, id: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.to_owned()),
        ..new_member(id)
    }
}

pub(super) fn with_protocols(request: JoinRequest, protocols: &[(&str, &[u8])]) -> JoinRequest {
    JoinRequest {
        protocols: protocols
            .iter()
            .map(|(name, metadata)| protocol(name, metadata))
            .collect(),
        ..request
    }
}

pub(super) fn sync_request(member_id: &str, generation_id: i32) -> SyncRequest {
    SyncRequest {
        member_id: member_id.to_owned(),
        group_instance_id: None,
        generation_id,
        protocol_type: Some("consumer".to_owned()),
        protocol_name: Some("range".to_owned()),
        assignments: Vec::new(),
    }
}

pub(super) fn leader_sync(
    member_id: &str,
    generation_id: i32,
    assignments: &[(&str, &[u8])],
) -> SyncRequest {
    SyncRequest {
        assignments: assignments
            .iter()
            .map(|(member, assignment)| ((*member).to_owned(), Bytes::copy_from_slice(assignment)))
            .collect(),
        ..sync_request(member_id, generation_id)
    }
}

/// The assignment `stable_group` gives member `id`.
pub(super) fn assignment_of(id: &str) -> Bytes {
    Bytes::from(format!("assigned-to-{id}"))
}

pub(super) fn commit_request(
    member_id: &str,
    generation_id: i32,
    offsets: &[(&str, i32, i64)],
) -> CommitRequest {
    CommitRequest {
        api_version: 9,
        member_id: member_id.to_owned(),
        group_instance_id: None,
        generation_id,
        partitions: offsets
            .iter()
            .map(|(topic, partition, offset)| CommitPartition {
                topic: (*topic).to_owned(),
                partition: *partition,
                offset: *offset,
                leader_epoch: -1,
                metadata: Some(String::new()),
                topic_id: uuid::Uuid::nil(),
                retention_ms: -1,
            })
            .collect(),
    }
}

/// A consumer's subscription as the Java client writes it: an int16 version, then
/// `ConsumerProtocolSubscription`.
pub(super) fn subscription(topics: &[&str]) -> Bytes {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    let subscription = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string((*t).to_owned()))
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.put_i16(3);
    subscription.encode(&mut buf, 3).expect("encodes");
    buf.freeze()
}

/// Forms a Stable group of the members `joins` (first joins without member ids): all join, the
/// first one (whose join completed alone) joins again so that the join phase completes with
/// everyone, the leader (the first) assigns `assignment_of(member)` to each and every member
/// syncs. Needs rules without an initial delay. The group's generation.
pub(super) fn stable_group(h: &mut Harness, joins: Vec<JoinRequest>) -> i32 {
    stable_group_assigning(h, joins, &assignment_of)
}

/// [`stable_group`], the leader assigning `assign(member)` to each member.
pub(super) fn stable_group_assigning(
    h: &mut Harness,
    joins: Vec<JoinRequest>,
    assign: &dyn Fn(&str) -> Bytes,
) -> i32 {
    let ids: Vec<String> = joins.iter().map(|j| j.new_member_id.clone()).collect();
    let mut first = later(h.join(joins[0].clone()));
    let mut waiting: Vec<_> = joins[1..]
        .iter()
        .map(|j| later(h.join(j.clone())))
        .collect();
    if !waiting.is_empty() {
        assert_eq!(
            answered(&mut first).error,
            None,
            "the first completes alone"
        );
        let again = JoinRequest {
            member_id: ids[0].clone(),
            ..joins[0].clone()
        };
        first = later(h.join(again));
    }
    waiting.insert(0, first);
    let answers: Vec<JoinResponse> = waiting.iter_mut().map(answered).collect();
    let generation = answers[0].generation_id;
    for answer in &answers {
        assert_eq!(answer.error, None, "{answer:?}");
        assert_eq!(answer.generation_id, generation);
        assert_eq!(answer.leader, ids[0]);
    }
    let assignments: Vec<(String, Bytes)> = ids.iter().map(|id| (id.clone(), assign(id))).collect();
    let leader = SyncRequest {
        group_instance_id: joins[0].group_instance_id.clone(),
        assignments,
        ..sync_request(&ids[0], generation)
    };
    let synced = answer(h.sync(leader));
    assert_eq!(synced.error, None);
    for (id, join) in ids.iter().zip(&joins).skip(1) {
        let request = SyncRequest {
            group_instance_id: join.group_instance_id.clone(),
            ..sync_request(id, generation)
        };
        let synced = now(h.sync(request));
        assert_eq!(synced.error, None);
        assert_eq!(synced.assignment, assign(id));
    }
    assert_eq!(h.state(), GroupState::Stable);
    generation
}

/// The `GroupMetadata` records among `records`: group id and value (`None`: a tombstone).
pub(super) fn group_records(
    records: &[CoordinatorRecord],
) -> Vec<(String, Option<GroupMetadataValue>)> {
    records
        .iter()
        .filter_map(
            |record| match RecordKey::decode(&record.key).expect("key decodes") {
                RecordKey::GroupMetadata(key) => Some((
                    key.group,
                    record
                        .value
                        .as_deref()
                        .map(|v| GroupMetadataValue::decode(v).expect("value decodes")),
                )),
                _ => None,
            },
        )
        .collect()
}

/// The offset tombstones among `records`, as `(group, topic, partition)`.
pub(super) fn offset_tombstones(records: &[CoordinatorRecord]) -> BTreeSet<(String, String, i32)> {
    records
        .iter()
        .filter(|record| record.value.is_none())
        .filter_map(
            |record| match RecordKey::decode(&record.key).expect("key decodes") {
                RecordKey::OffsetCommit(key) => Some((key.group, key.topic, key.partition)),
                _ => None,
            },
        )
        .collect()
}

/// The only `GroupMetadata` record among `records`, which must be a value.
#[track_caller]
pub(super) fn the_group_record(records: &[CoordinatorRecord]) -> GroupMetadataValue {
    let mut written = group_records(records);
    assert_eq!(written.len(), 1, "one group record: {written:?}");
    let (group, value) = written.remove(0);
    assert_eq!(group, GROUP);
    value.expect("a value, not a tombstone")
}
