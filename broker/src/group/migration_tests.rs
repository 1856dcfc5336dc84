//! Unit tests of the online migration between the classic and consumer protocols, driven as the
//! shard drives the machine: classic members behave as a cooperative Java consumer does (join
//! with the partitions they own, keep what SyncGroup gives, join again when a heartbeat says
//! REBALANCE_IN_PROGRESS), consumer-protocol members as in [`super::consumer_tests`]. Kafka's
//! `GroupMetadataManager` (`convertToConsumerGroup`, `convertToClassicGroup`,
//! `classicGroup*ToConsumerGroup`) is the specification.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    consumer_protocol_subscription, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::classic::{GroupState, JoinRequest, SyncRequest};
use super::consumer::{ConsumerRules, MemberState, MigrationPolicy, TopicsView, LEAVE_EPOCH};
use super::consumer_test_harness::*;
use super::embedded;
use super::machine::protocol;
use super::test_harness::*;
use super::GroupProblem;

/// A classic member's subscription to [`TOPIC`] owning `owned`, at v3 as the Java client
/// writes it.
fn subscribed(owned: &[i32]) -> Bytes {
    let body = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str(TOPIC)])
        .with_owned_partitions(vec![
            consumer_protocol_subscription::TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(owned.to_vec()),
        ]);
    let mut buf = BytesMut::new();
    buf.put_i16(3);
    body.encode(&mut buf, 3).expect("encodes");
    buf.freeze()
}

fn assigned(partitions: &[i32]) -> Bytes {
    embedded::encode_assignment(&vec![(TOPIC.to_owned(), partitions.to_vec())], 3)
}

/// The partitions of [`TOPIC`] in an assignment.
fn partitions(assignment: &Bytes) -> Vec<i32> {
    let mut all: Vec<i32> = embedded::decode_assignment(assignment)
        .expect("the assignment decodes")
        .into_iter()
        .filter(|(topic, _)| topic == TOPIC)
        .flat_map(|(_, partitions)| partitions)
        .collect();
    all.sort_unstable();
    all
}

/// A classic cooperative consumer as it sees itself.
#[derive(Debug, Clone)]
struct Classic {
    id: String,
    joined: bool,
    instance: Option<String>,
    generation: i32,
    protocol: String,
    owned: Vec<i32>,
}

impl Classic {
    fn new(id: &str) -> Classic {
        Classic {
            id: id.to_owned(),
            joined: false,
            instance: None,
            generation: -1,
            protocol: "range".to_owned(),
            owned: Vec::new(),
        }
    }

    fn static_member(id: &str, instance: &str) -> Classic {
        Classic {
            instance: Some(instance.to_owned()),
            ..Classic::new(id)
        }
    }

    fn join_request(&self) -> JoinRequest {
        JoinRequest {
            member_id: if self.joined {
                self.id.clone()
            } else {
                String::new()
            },
            group_instance_id: self.instance.clone(),
            protocols: vec![protocol(&self.protocol, &subscribed(&self.owned))],
            ..join_request("", &self.id)
        }
    }

    fn sync_request(&self) -> SyncRequest {
        SyncRequest {
            group_instance_id: self.instance.clone(),
            protocol_name: Some(self.protocol.clone()),
            ..sync_request(&self.id, self.generation)
        }
    }

    fn heartbeat(&self, h: &mut Harness) -> Result<(), GroupProblem> {
        h.heartbeat_as(&self.id, self.instance.as_deref(), self.generation)
    }
}

/// `c` joins and syncs with a group that answers at once (a consumer group), keeping what the
/// sync gives. Whether it gave partitions up (a cooperative consumer then joins again).
fn join_and_sync(h: &mut Harness, c: &mut Classic) -> Result<bool, GroupProblem> {
    let joined = answer(h.join(c.join_request()));
    if let Some(problem) = joined.error {
        return Err(problem);
    }
    assert!(
        joined.members.is_empty() && joined.leader.is_empty(),
        "nobody leads: {joined:?}"
    );
    c.id = joined.member_id;
    c.joined = true;
    c.generation = joined.generation_id;
    let synced = answer(h.sync(c.sync_request()));
    if let Some(problem) = synced.error {
        return Err(problem);
    }
    let now = partitions(&synced.assignment);
    let revoked = c.owned.iter().any(|p| !now.contains(p));
    c.owned = now;
    Ok(revoked)
}

/// A heartbeat of `c`; on REBALANCE_IN_PROGRESS it joins again (twice after a revocation).
fn classic_beat(h: &mut Harness, c: &mut Classic) -> Result<(), GroupProblem> {
    match c.heartbeat(h) {
        Err(GroupProblem::RebalanceInProgress) => {
            for _ in 0..3 {
                if !join_and_sync(h, c)? {
                    return Ok(());
                }
            }
            panic!("{c:?} keeps giving partitions up");
        }
        other => other,
    }
}

/// The members heartbeat in turn (classic ones joining again when told) until the group is
/// Stable and each owns what the group says; at most `rounds` rounds.
#[track_caller]
fn settle_mixed(
    h: &mut Harness,
    classics: &mut [&mut Classic],
    consumers: &mut [&mut Consumer],
    view: &TopicsView,
    rounds: usize,
) {
    for _ in 0..rounds {
        for consumer in consumers.iter_mut() {
            beat_ok(h, consumer, view);
            check_disjoint(h.consumer_group());
        }
        for classic in classics.iter_mut() {
            classic_beat(h, classic).expect("the classic member stays in");
            check_disjoint(h.consumer_group());
        }
        let group = h.consumer_group();
        let classics_agree = classics.iter().all(|c| {
            group.members.get(&c.id).is_some_and(|m| {
                m.member_epoch == c.generation
                    && m.state == MemberState::Stable
                    && m.assigned == partitions_of(view, TOPIC, &c.owned)
            })
        });
        let consumers_agree = consumers.iter().all(|c| {
            group.members.get(&c.member_id).is_some_and(|m| {
                m.assigned == c.owned && m.member_epoch == c.epoch && m.state == MemberState::Stable
            })
        });
        if group.state() == "Stable" && classics_agree && consumers_agree {
            check_stable_cover(group, view);
            return;
        }
    }
    panic!(
        "not settled after {rounds} rounds: {:#?}",
        h.consumer_group()
    );
}

fn migrating(policy: MigrationPolicy) -> Harness {
    let rules = ConsumerRules {
        migration: policy,
        ..consumer_rules()
    };
    let mut h = Harness::load_with(super::test_harness::rules(), rules, &[], START_MS);
    h.topics = six();
    h
}

/// A Stable classic group of `a` (partitions 0-2) and `b` (3-5), both formed.
fn classic_pair(h: &mut Harness, mut a: Classic, mut b: Classic) -> (Classic, Classic) {
    let generation = stable_group_assigning(h, vec![a.join_request(), b.join_request()], &|id| {
        if id == a.id {
            assigned(&[0, 1, 2])
        } else {
            assigned(&[3, 4, 5])
        }
    });
    for (member, owned) in [(&mut a, vec![0, 1, 2]), (&mut b, vec![3, 4, 5])] {
        member.joined = true;
        member.generation = generation;
        member.owned = owned;
    }
    (a, b)
}

/// A group upgraded by `c` and settled with the classic `a` and `b`.
fn upgraded_and_settled(h: &mut Harness) -> (Classic, Classic, Consumer) {
    let view = six();
    let (mut a, mut b) = classic_pair(h, Classic::new("a"), Classic::new("b"));
    let mut c = Consumer::new("c");
    beat_ok(h, &mut c, &view);
    settle_mixed(h, &mut [&mut a, &mut b], &mut [&mut c], &view, 8);
    (a, b, c)
}

// ---------------------------------------------------------------------------------- upgrade

#[test]
fn a_consumer_member_upgrades_a_classic_group_whose_members_keep_their_partitions() {
    let mut h = migrating(MigrationPolicy::Bidirectional);
    let view = six();
    let (mut a, mut b) = classic_pair(&mut h, Classic::new("a"), Classic::new("b"));
    let generation = a.generation;

    let mut c = Consumer::new("c");
    let (response, records) = h.consumer_heartbeat(c.join_request(), &view);
    c.apply(&response);
    assert_eq!(response.error, None, "{response:?}");
    // The classic group is gone from the log, the consumer group written with the classic
    // members' metadata.
    assert!(group_records(&records).contains(&(GROUP.to_owned(), None)));
    assert!(h.machine.group(GROUP).is_none());
    let written = consumer_records(&records);
    for member in ["a", "b", "c"] {
        assert!(
            written.contains(&("member", member.to_owned(), false)),
            "{written:?}"
        );
    }
    let group = h.consumer_group();
    assert_eq!(
        group.group_epoch,
        generation + 1,
        "the new member moved the epoch once"
    );
    for (id, owned) in [("a", [0, 1, 2]), ("b", [3, 4, 5])] {
        let member = &group.members[id];
        assert!(member.classic.is_some(), "{id} speaks the classic protocol");
        assert_eq!(member.assigned, partitions_of(&view, TOPIC, &owned));
    }
    // Every partition is still held: the newcomer waits for the others to give some up.
    assert!(c.owned.is_empty());
    assert_eq!(c.epoch, generation + 1);

    // The classic members learn from their heartbeats that they must join again.
    assert_eq!(a.heartbeat(&mut h), Err(GroupProblem::RebalanceInProgress));
    settle_mixed(&mut h, &mut [&mut a, &mut b], &mut [&mut c], &view, 8);
    assert_eq!(loads(&[&c]), [2]);
    assert_eq!(a.owned.len() + b.owned.len(), 4);

    // A new coordinator loads the same group, classic members included.
    let loaded = h.reloaded();
    assert_eq!(loaded.consumer_group().members, h.consumer_group().members);
    assert!(loaded.machine.group(GROUP).is_none());
}

#[test]
fn no_upgrade_when_the_policy_forbids_it_or_a_subscription_is_malformed() {
    for policy in [MigrationPolicy::Disabled, MigrationPolicy::Downgrade] {
        let mut h = migrating(policy);
        classic_pair(&mut h, Classic::new("a"), Classic::new("b"));
        let (response, records) = h.consumer_heartbeat(Consumer::new("c").join_request(), &six());
        refused(&response, GroupProblem::GroupIdNotFound);
        assert!(records.is_empty(), "{policy:?}");
        assert_eq!(h.state(), GroupState::Stable);
    }
    // Members whose metadata is not the consumer protocol's: nothing converts.
    let mut h = migrating(MigrationPolicy::Bidirectional);
    stable_group(&mut h, vec![new_member("a"), new_member("b")]);
    let (response, records) = h.consumer_heartbeat(Consumer::new("c").join_request(), &six());
    refused(&response, GroupProblem::GroupIdNotFound);
    assert!(records.is_empty());
    assert_eq!(h.state(), GroupState::Stable);
}

#[test]
fn classic_requests_to_a_consumer_group_get_kafkas_errors() {
    let mut h = migrating(MigrationPolicy::Bidirectional);
    let (mut a, _b, c) = upgraded_and_settled(&mut h);

    // Protocols the classic members do not all support.
    let mut other = Classic::new("x");
    other.protocol = "roundrobin".to_owned();
    let joined = answer(h.join(other.join_request()));
    assert_eq!(joined.error, Some(GroupProblem::InconsistentGroupProtocol));
    // Metadata that is not a consumer subscription.
    let joined = answer(h.join(new_member("y")));
    assert_eq!(joined.error, Some(GroupProblem::InconsistentGroupProtocol));
    assert!(!h.consumer_group().members.contains_key("x"));

    // A sync at another generation; a heartbeat or leave naming a consumer-protocol member.
    let stale = SyncRequest {
        generation_id: a.generation - 1,
        ..a.sync_request()
    };
    assert_eq!(
        answer(h.sync(stale)).error,
        Some(GroupProblem::IllegalGeneration)
    );
    assert_eq!(
        h.heartbeat(&c.member_id, c.epoch),
        Err(GroupProblem::UnknownMemberId)
    );
    let (outcome, records) = h.leave(&[(c.member_id.as_str(), None)]);
    assert_eq!(outcome, Ok(vec![Err(GroupProblem::UnknownMemberId)]));
    assert!(records.is_empty());

    // A classic member commits with its generation, which is its epoch.
    let commit = |h: &mut Harness, generation: i32| {
        let mut request = commit_request(&a.id, generation, &[(TOPIC, 0, 5)]);
        request.api_version = 8;
        h.commit(GROUP, request).0.map(|_| ())
    };
    assert_eq!(commit(&mut h, a.generation), Ok(()));
    assert_eq!(
        commit(&mut h, a.generation + 1),
        Err(GroupProblem::IllegalGeneration)
    );

    // A classic member that leaves frees its partitions for the others.
    let (outcome, _) = h.leave(&[(a.id.as_str(), None)]);
    assert_eq!(outcome, Ok(vec![Ok(())]));
    assert!(!h.consumer_group().members.contains_key(&a.id));
    a.joined = false;
    check_disjoint(h.consumer_group());
}

#[test]
fn a_classic_member_told_to_rejoin_that_never_does_is_fenced_after_its_rebalance_timeout() {
    let mut h = migrating(MigrationPolicy::Bidirectional);
    let view = six();
    let (a, mut b, mut c) = upgraded_and_settled(&mut h);
    // A new member moves the epoch: `a` is told to join again and keeps heartbeating only.
    let mut d = Consumer::new("d");
    beat_ok(&mut h, &mut d, &view);
    let mut waited = 0;
    while h.consumer_group().members.contains_key(&a.id) {
        assert!(waited <= REBALANCE_MS, "not fenced after {waited} ms");
        let _ = a.heartbeat(&mut h);
        classic_beat(&mut h, &mut b).expect("b stays");
        beat_ok(&mut h, &mut c, &view);
        beat_ok(&mut h, &mut d, &view);
        h.advance(2_000);
        waited += 2_000;
    }
    assert!(waited >= REBALANCE_MS - 2_000, "fenced after {waited} ms");
    settle_mixed(&mut h, &mut [&mut b], &mut [&mut c, &mut d], &view, 8);
}

// -------------------------------------------------------------------------------- downgrade

#[test]
fn the_last_consumer_member_leaving_turns_the_group_back_into_a_rebalancing_classic_group() {
    let mut h = migrating(MigrationPolicy::Bidirectional);
    let view = six();
    let (mut a, mut b, c) = upgraded_and_settled(&mut h);
    let epoch = h.consumer_group().group_epoch;
    let targets = h.consumer_group().targets.clone();

    let (response, records) = h.consumer_heartbeat(c.leave_request(LEAVE_EPOCH), &view);
    assert_eq!(response.error, None);
    assert_eq!(response.member_epoch, LEAVE_EPOCH);
    assert!(!h.has_consumer_group());
    let written = consumer_records(&records);
    assert!(
        written.contains(&("group", GROUP.to_owned(), true)),
        "{written:?}"
    );
    // The classic group's record: the two members, each with its target as assignment.
    let record = the_group_record(&records);
    assert_eq!(record.generation, epoch);
    assert_eq!(record.protocol.as_deref(), Some("range"));
    for member in &record.members {
        let target = &targets[&member.member_id];
        let expected: Vec<i32> = target.values().flatten().copied().collect();
        assert_eq!(partitions(&member.assignment), expected);
    }
    assert_eq!(record.members.len(), 2);
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.generation(), epoch);

    // The members learn it from their heartbeats and rebalance as a classic group, `a` (the
    // first member) leading.
    assert_eq!(a.heartbeat(&mut h), Err(GroupProblem::RebalanceInProgress));
    let mut a_join = later(h.join(a.join_request()));
    let b_join = answer(h.join(b.join_request()));
    let a_join = answered(&mut a_join);
    assert_eq!(a_join.error, None);
    assert_eq!(a_join.generation_id, epoch + 1);
    assert_eq!(a_join.leader, a.id);
    assert_eq!(a_join.members.len(), 2);
    assert_eq!(b_join.leader, a.id);
    a.generation = epoch + 1;
    b.generation = epoch + 1;

    // A new coordinator loads the classic group, and no consumer group.
    let loaded = h.reloaded();
    assert!(!loaded.has_consumer_group());
    assert_eq!(
        loaded.machine.group(GROUP).map(|g| g.members.len()),
        Some(2)
    );
}

#[test]
fn the_last_consumer_member_expiring_downgrades_and_the_policy_can_keep_the_consumer_group() {
    let mut h = migrating(MigrationPolicy::Bidirectional);
    let (mut a, mut b, _c) = upgraded_and_settled(&mut h);
    // Only the classic members heartbeat: `c`'s session lapses.
    for _ in 0..6 {
        h.advance(2_000);
        if h.has_consumer_group() {
            classic_beat(&mut h, &mut a).expect("a stays");
            classic_beat(&mut h, &mut b).expect("b stays");
        }
    }
    assert!(!h.has_consumer_group());
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.member_ids().len(), 2);

    // Upgrade only: the group stays a consumer group of classic members, which rebalance.
    let mut h = migrating(MigrationPolicy::Upgrade);
    let view = six();
    let (mut a, mut b, c) = upgraded_and_settled(&mut h);
    let (response, _) = h.consumer_heartbeat(c.leave_request(LEAVE_EPOCH), &view);
    assert_eq!(response.error, None);
    assert!(h.has_consumer_group());
    assert_eq!(a.heartbeat(&mut h), Err(GroupProblem::RebalanceInProgress));
    settle_mixed(&mut h, &mut [&mut a, &mut b], &mut [], &view, 8);
    assert_eq!(a.owned.len() + b.owned.len(), 6);
}

#[test]
fn static_members_move_between_the_protocols_one_by_one_without_a_rebalance() {
    let mut h = migrating(MigrationPolicy::Bidirectional);
    let view = six();
    let (_a, mut b) = classic_pair(
        &mut h,
        Classic::static_member("a", "i1"),
        Classic::static_member("b", "i2"),
    );
    let generation = b.generation;

    // Instance i1 restarts with the consumer protocol: it takes its partitions back at once.
    let mut a2 = Consumer::static_member("a2", "i1");
    let response = beat_ok(&mut h, &mut a2, &view);
    assert_eq!(response.member_epoch, generation);
    assert_eq!(a2.owned, partitions_of(&view, TOPIC, &[0, 1, 2]));
    assert_eq!(h.consumer_group().group_epoch, generation, "no rebalance");
    assert!(!h.consumer_group().members.contains_key("a"));
    assert_eq!(b.heartbeat(&mut h), Ok(()));

    // It restarts again with the classic protocol: the group is all classic again, still at
    // the same generation with the same assignment.
    let mut a3 = Classic::static_member("a3", "i1");
    let joined = answer(h.join(a3.join_request()));
    assert_eq!(joined.error, None, "{joined:?}");
    assert_eq!(joined.member_id, "a3");
    assert_eq!(joined.generation_id, generation);
    assert!(!h.has_consumer_group());
    assert_eq!(h.state(), GroupState::Stable);
    a3.joined = true;
    a3.generation = generation;
    let synced = answer(h.sync(a3.sync_request()));
    assert_eq!(synced.error, None);
    assert_eq!(partitions(&synced.assignment), [0, 1, 2]);
    assert_eq!(b.heartbeat(&mut h), Ok(()));
    b.owned.sort_unstable();
    assert_eq!(b.owned, [3, 4, 5]);
}
