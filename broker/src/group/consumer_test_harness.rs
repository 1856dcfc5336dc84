//! The KIP-848 side of the group coordinator's test harness, shared by [`super::consumer_tests`]
//! and [`super::migration_tests`]: consumers as the client side sees itself (its epoch and the
//! partitions it owns), heartbeating through [`Harness`], and checks of a consumer group's
//! invariants.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::assignor::Assignment;
use super::consumer::{
    ConsumerGroup, ConsumerHeartbeat, ConsumerHeartbeatResponse, ConsumerRules, MemberState,
    TopicsView,
};
use super::records::RecordKey;
use super::test_harness::*;
use super::GroupProblem;
use crate::coordinator::CoordinatorRecord;

pub(super) const TOPIC: &str = "t";
pub(super) const HEARTBEAT_MS: i32 = 1_000;
pub(super) const CONSUMER_SESSION_MS: i32 = 10_000;
/// The rebalance timeout the consumers send: how long one has to revoke partitions.
pub(super) const CONSUMER_REBALANCE_MS: i32 = 20_000;

pub(super) fn consumer_rules() -> ConsumerRules {
    ConsumerRules {
        session_timeout_ms: CONSUMER_SESSION_MS,
        heartbeat_interval_ms: HEARTBEAT_MS,
        max_size: 10,
        ..ConsumerRules::default()
    }
}

/// A topic's id, made from its name.
pub(super) fn topic_id(name: &str) -> Uuid {
    let mut bytes = [0x5b; 16];
    for (slot, byte) in bytes[1..].iter_mut().zip(name.bytes()) {
        *slot = byte;
    }
    Uuid::from_bytes(bytes)
}

/// The metadata image's topics: name and partition count.
pub(super) fn topics(list: &[(&str, u32)]) -> TopicsView {
    list.iter()
        .map(|(name, count)| ((*name).to_owned(), (topic_id(name), *count)))
        .collect()
}

pub(super) fn six() -> TopicsView {
    topics(&[(TOPIC, 6)])
}

pub(super) fn every_partition(view: &TopicsView) -> BTreeSet<(Uuid, i32)> {
    view.values()
        .flat_map(|(id, count)| (0..*count as i32).map(move |p| (*id, p)))
        .collect()
}

pub(super) fn flat(assignment: &Assignment) -> BTreeSet<(Uuid, i32)> {
    assignment
        .iter()
        .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (*topic, *p)))
        .collect()
}

pub(super) fn partitions_of(view: &TopicsView, topic: &str, partitions: &[i32]) -> Assignment {
    let id = view[topic].0;
    Assignment::from([(id, partitions.iter().copied().collect())])
}

// ------------------------------------------------------------------------------------ consumers

/// A consumer as the client side sees itself: its member id and epoch, and the partitions it
/// owns (those of the last assignment it got: it revokes and takes partitions at once).
#[derive(Debug, Clone, Default)]
pub(super) struct Consumer {
    pub(super) member_id: String,
    pub(super) instance: Option<String>,
    pub(super) epoch: i32,
    pub(super) owned: Assignment,
    pub(super) topics: Vec<String>,
    pub(super) regex: Option<String>,
    pub(super) assignor: Option<String>,
}

impl Consumer {
    pub(super) fn new(id: &str) -> Consumer {
        Consumer {
            member_id: id.to_owned(),
            topics: vec![TOPIC.to_owned()],
            ..Consumer::default()
        }
    }

    pub(super) fn static_member(id: &str, instance: &str) -> Consumer {
        Consumer {
            instance: Some(instance.to_owned()),
            ..Consumer::new(id)
        }
    }

    /// The full request of a (re)join: epoch 0, the subscription, nothing owned.
    pub(super) fn join_request(&self) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            member_id: self.member_id.clone(),
            member_epoch: 0,
            instance_id: self.instance.clone(),
            rack_id: None,
            rebalance_timeout_ms: CONSUMER_REBALANCE_MS,
            subscribed_topic_names: Some(self.topics.clone()),
            subscribed_topic_regex: self.regex.clone(),
            server_assignor: self.assignor.clone(),
            owned: Some(Assignment::new()),
            client_id: "client".to_owned(),
            client_host: "/10.0.0.1".to_owned(),
        }
    }

    /// A heartbeat at its epoch with what it owns; the rest unchanged (as the clients send it).
    pub(super) fn heartbeat_request(&self) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            member_epoch: self.epoch,
            rebalance_timeout_ms: -1,
            subscribed_topic_names: None,
            subscribed_topic_regex: None,
            server_assignor: None,
            owned: Some(self.owned.clone()),
            ..self.join_request()
        }
    }

    pub(super) fn leave_request(&self, epoch: i32) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            member_epoch: epoch,
            owned: None,
            ..self.heartbeat_request()
        }
    }

    /// What a consumer does with an answer: takes its epoch and assignment, or rejoins from
    /// scratch when fenced or forgotten.
    pub(super) fn apply(&mut self, response: &ConsumerHeartbeatResponse) {
        match response.error {
            None => {
                if let Some(id) = &response.member_id {
                    self.member_id = id.clone();
                }
                self.epoch = response.member_epoch;
                if let Some(assignment) = &response.assignment {
                    self.owned = assignment.clone();
                }
            }
            Some(GroupProblem::FencedMemberEpoch | GroupProblem::UnknownMemberId) => {
                self.epoch = 0;
                self.owned.clear();
            }
            Some(_) => {}
        }
    }
}

impl Harness {
    pub(super) fn consumers() -> Harness {
        Harness::load_with(rules(), consumer_rules(), &[], START_MS)
    }

    /// A new coordinator loading this one's log now.
    pub(super) fn reloaded(&self) -> Harness {
        Harness::load_with(rules(), consumer_rules(), &self.log, self.now_ms)
    }

    pub(super) fn consumer_heartbeat(
        &mut self,
        request: ConsumerHeartbeat,
        view: &TopicsView,
    ) -> (ConsumerHeartbeatResponse, Vec<CoordinatorRecord>) {
        self.run(Box::new(move |m, ctx| {
            m.consumer_heartbeat(GROUP, request, view, ctx)
        }))
    }

    pub(super) fn consumer_group(&self) -> &ConsumerGroup {
        self.machine
            .consumer_groups
            .get(GROUP)
            .expect("the consumer group exists")
    }

    pub(super) fn has_consumer_group(&self) -> bool {
        self.machine.consumer_groups.contains_key(GROUP)
    }

    pub(super) fn epoch(&self) -> i32 {
        self.consumer_group().group_epoch
    }
}

/// `consumer` heartbeats (joins at epoch 0) and takes the answer.
pub(super) fn beat(
    h: &mut Harness,
    consumer: &mut Consumer,
    view: &TopicsView,
) -> ConsumerHeartbeatResponse {
    let request = if consumer.epoch == 0 {
        consumer.join_request()
    } else {
        consumer.heartbeat_request()
    };
    let (response, _) = h.consumer_heartbeat(request, view);
    consumer.apply(&response);
    response
}

#[track_caller]
pub(super) fn beat_ok(
    h: &mut Harness,
    consumer: &mut Consumer,
    view: &TopicsView,
) -> ConsumerHeartbeatResponse {
    let response = beat(h, consumer, view);
    assert_eq!(response.error, None, "{response:?}");
    response
}

#[track_caller]
pub(super) fn refused(response: &ConsumerHeartbeatResponse, problem: GroupProblem) {
    assert_eq!(response.error, Some(problem), "{response:?}");
    assert_eq!(response.assignment, None);
}

/// No partition is held (assigned or pending revocation) by two members at once.
#[track_caller]
pub(super) fn check_disjoint(group: &ConsumerGroup) {
    let mut holder: BTreeMap<(Uuid, i32), &str> = BTreeMap::new();
    for member in group.members.values() {
        let held = flat(&member.assigned)
            .into_iter()
            .chain(flat(&member.pending_revocation));
        for tp in held {
            if let Some(other) = holder.insert(tp, &member.member_id) {
                panic!("{tp:?} is held by {other} and {}", member.member_id);
            }
        }
    }
}

/// The group is Stable, every member at the assignment epoch with nothing pending, and the
/// members' partitions are a disjoint cover of the subscribed topics (as `view` has them).
#[track_caller]
pub(super) fn check_stable_cover(group: &ConsumerGroup, view: &TopicsView) {
    assert_eq!(group.state(), "Stable", "{group:#?}");
    for (name, meta) in &group.subscription_metadata {
        assert_eq!(view.get(name), Some(meta), "{name} as the image has it");
    }
    check_disjoint(group);
    let mut covered = BTreeSet::new();
    for member in group.members.values() {
        assert_eq!(member.member_epoch, group.assignment_epoch);
        assert_eq!(member.state, MemberState::Stable);
        assert!(member.pending_revocation.is_empty());
        assert_eq!(Some(&member.assigned), group.targets.get(&member.member_id));
        covered.extend(flat(&member.assigned));
    }
    assert_eq!(covered, every_partition(&group.subscription_metadata));
}

/// Every consumer heartbeats in turn until the group is Stable and each owns what the group
/// says; at most `rounds` rounds. The rounds it took.
#[track_caller]
pub(super) fn settle(
    h: &mut Harness,
    consumers: &mut [&mut Consumer],
    view: &TopicsView,
    rounds: usize,
) -> usize {
    for round in 1..=rounds {
        for consumer in consumers.iter_mut() {
            beat_ok(h, consumer, view);
            check_disjoint(h.consumer_group());
        }
        let group = h.consumer_group();
        let agreed = consumers.iter().all(|c| {
            group.members.get(&c.member_id).is_some_and(|m| {
                m.assigned == c.owned && m.member_epoch == c.epoch && m.state == MemberState::Stable
            })
        });
        if group.state() == "Stable" && agreed {
            check_stable_cover(group, view);
            return round;
        }
    }
    panic!(
        "not settled after {rounds} rounds: {:#?}",
        h.consumer_group()
    );
}

/// How many partitions each consumer owns.
pub(super) fn loads(consumers: &[&Consumer]) -> Vec<usize> {
    consumers.iter().map(|c| flat(&c.owned).len()).collect()
}

/// The consumer-group records among `records`: (record type, member or group, tombstone?).
pub(super) fn consumer_records(records: &[CoordinatorRecord]) -> Vec<(&'static str, String, bool)> {
    records
        .iter()
        .filter_map(|record| {
            let tombstone = record.value.is_none();
            let (kind, id) = match RecordKey::decode(&record.key).expect("key decodes") {
                RecordKey::ConsumerGroupMetadata(k) => ("group", k.group),
                RecordKey::ConsumerGroupPartitionMetadata(k) => ("partitions", k.group),
                RecordKey::ConsumerGroupMemberMetadata(k) => ("member", k.member_id),
                RecordKey::ConsumerGroupTargetAssignmentMetadata(k) => ("target-epoch", k.group),
                RecordKey::ConsumerGroupTargetAssignmentMember(k) => ("target", k.member_id),
                RecordKey::ConsumerGroupCurrentMemberAssignment(k) => ("current", k.member_id),
                _ => return None,
            };
            Some((kind, id, tombstone))
        })
        .collect()
}
