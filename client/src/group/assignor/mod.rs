//! Client-side partition assignors, computed by the group leader, under the Java client's
//! names so that our members and Java or librdkafka members agree on a protocol:
//! `range` and `roundrobin` (eager) and `cooperative-sticky` (KIP-429's incremental protocol).
//! All three are pure functions of the members' subscriptions and the partition counts.

mod range;
mod roundrobin;
mod sticky;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bytes::{Buf, Bytes};

use crate::group::protocol::Subscription;
use crate::record::TopicPartition;

/// How a group moves partitions between members in a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceProtocol {
    /// Every member gives up all its partitions before joining.
    Eager,
    /// Members keep their partitions through the rebalance and give up only those the new
    /// assignment moves away, which a second rebalance hands to their new owner (KIP-429).
    Cooperative,
}

/// A partition assignment strategy (`partition.assignment.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Assignor {
    /// Java's `RangeAssignor`: per topic, consecutive ranges of partitions per member.
    Range,
    /// Java's `RoundRobinAssignor`: all partitions dealt out one by one.
    RoundRobin,
    /// Java's `CooperativeStickyAssignor`: balanced, keeps partitions where they are, and
    /// never hands a partition to a new owner in the rebalance its old owner gives it up in.
    CooperativeSticky,
}

impl Assignor {
    /// The protocol name in JoinGroup, as the Java client and librdkafka spell it.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    pub fn from_name(name: &str) -> Option<Assignor> {
        [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    pub fn rebalance_protocol(self) -> RebalanceProtocol {
        match self {
            Assignor::CooperativeSticky => RebalanceProtocol::Cooperative,
            Assignor::Range | Assignor::RoundRobin => RebalanceProtocol::Eager,
        }
    }

    /// Subscription user data: the cooperative-sticky assignor carries the generation there
    /// too, for leaders that read a subscription version without a generation field (Java's
    /// `CooperativeStickyAssignor.subscriptionUserData`).
    pub fn user_data(self, generation: i32) -> Option<Bytes> {
        match self {
            Assignor::CooperativeSticky => Some(Bytes::copy_from_slice(&generation.to_be_bytes())),
            Assignor::Range | Assignor::RoundRobin => None,
        }
    }

    /// The assignment of every member: `partitions` is each topic's partition count; topics
    /// a member subscribes to that are missing there (not created yet) are skipped. Every
    /// member is in the result, possibly with nothing.
    pub fn assign(
        self,
        partitions: &BTreeMap<String, i32>,
        members: &[Member],
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut assignment = match self {
            Assignor::Range => range::assign(partitions, members),
            Assignor::RoundRobin => roundrobin::assign(partitions, members),
            Assignor::CooperativeSticky => sticky::assign(partitions, members),
        };
        for member in members {
            assignment.entry(member.member_id.clone()).or_default();
        }
        for tps in assignment.values_mut() {
            tps.sort();
        }
        assignment
    }
}

/// One member as the leader sees it in the JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub subscription: Subscription,
}

impl Member {
    /// The generation its owned partitions are from: the subscription's field (v2+), else
    /// the cooperative-sticky user data, else -1.
    pub fn generation(&self) -> i32 {
        if self.subscription.generation >= 0 {
            return self.subscription.generation;
        }
        match &self.subscription.user_data {
            Some(data) if data.len() >= 4 => (&data[..4]).get_i32(),
            _ => -1,
        }
    }

    fn subscribes(&self, topic: &str) -> bool {
        self.subscription.topics.iter().any(|t| t == topic)
    }
}

/// Java's `MemberInfo` order: static members first by instance id, then the others by member
/// id, so every leader (ours or Java's) orders members alike.
fn member_order(a: &Member, b: &Member) -> Ordering {
    match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    }
}

fn sorted_members(members: &[Member]) -> Vec<&Member> {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| member_order(a, b));
    sorted
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn member(id: &str, topics: &[&str]) -> Member {
        Member {
            member_id: id.to_owned(),
            group_instance_id: None,
            subscription: Subscription {
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                ..Subscription::default()
            },
        }
    }

    pub fn owning(mut member: Member, generation: i32, owned: &[(&str, i32)]) -> Member {
        member.subscription.generation = generation;
        member.subscription.owned_partitions = owned
            .iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect();
        member
    }

    pub fn topics(counts: &[(&str, i32)]) -> BTreeMap<String, i32> {
        counts.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    /// `member -> ["t-0", ...]` for compact assertions.
    pub fn names(
        assignment: &BTreeMap<String, Vec<TopicPartition>>,
    ) -> BTreeMap<&str, Vec<String>> {
        assignment
            .iter()
            .map(|(m, tps)| (m.as_str(), tps.iter().map(ToString::to_string).collect()))
            .collect()
    }

    /// Every partition of `partitions` assigned to exactly one member subscribed to its topic.
    pub fn assert_complete_and_disjoint(
        partitions: &BTreeMap<String, i32>,
        members: &[Member],
        assignment: &BTreeMap<String, Vec<TopicPartition>>,
    ) {
        let mut seen = std::collections::BTreeSet::new();
        for (member_id, tps) in assignment {
            let member = members.iter().find(|m| &m.member_id == member_id).unwrap();
            for tp in tps {
                assert!(member.subscribes(&tp.topic), "{member_id} got {tp}");
                assert!(seen.insert(tp.clone()), "{tp} assigned twice");
            }
        }
        for (topic, &count) in partitions {
            if members.iter().any(|m| m.subscribes(topic)) {
                for p in 0..count {
                    assert!(
                        seen.contains(&TopicPartition::new(topic.clone(), p)),
                        "{topic}-{p} unassigned"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn names_are_the_java_clients() {
        for assignor in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ] {
            assert_eq!(Assignor::from_name(assignor.name()), Some(assignor));
        }
        assert_eq!(Assignor::CooperativeSticky.name(), "cooperative-sticky");
        assert_eq!(Assignor::from_name("sticky"), None);
    }

    #[test]
    fn static_members_sort_first_by_instance_id() {
        let mut a = member("a", &[]);
        let mut z = member("z", &[]);
        z.group_instance_id = Some("i1".into());
        a.group_instance_id = Some("i2".into());
        let b = member("b", &[]);
        let members = [b, a, z];
        let order: Vec<&str> = sorted_members(&members)
            .iter()
            .map(|m| m.member_id.as_str())
            .collect();
        assert_eq!(order, ["z", "a", "b"]);
    }

    #[test]
    fn generation_from_the_field_or_the_sticky_user_data() {
        let mut m = member("a", &[]);
        assert_eq!(m.generation(), -1);
        m.subscription.user_data = Assignor::CooperativeSticky.user_data(4);
        assert_eq!(m.generation(), 4);
        m.subscription.generation = 5;
        assert_eq!(m.generation(), 5);
    }

    #[test]
    fn every_member_appears_even_without_partitions() {
        let members = [member("a", &["t"]), member("b", &["missing"])];
        for assignor in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ] {
            let assignment = assignor.assign(&topics(&[("t", 2)]), &members);
            assert_eq!(assignment.len(), 2, "{assignor:?}");
            assert!(assignment["b"].is_empty(), "{assignor:?}");
            assert_eq!(assignment["a"].len(), 2, "{assignor:?}");
        }
    }
}
