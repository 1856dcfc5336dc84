//! `roundrobin` (Java's `RoundRobinAssignor`): all subscribed partitions, topics in name order,
//! dealt to members in member order, skipping members not subscribed to a partition's topic.

use std::collections::{BTreeMap, BTreeSet};

use super::{sorted_members, Member};
use crate::record::TopicPartition;

pub(super) fn assign(
    partitions: &BTreeMap<String, i32>,
    members: &[Member],
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut assignment: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    let sorted = sorted_members(members);
    if sorted.is_empty() {
        return assignment;
    }
    let subscribed: BTreeSet<&str> = members
        .iter()
        .flat_map(|m| m.subscription.topics.iter().map(String::as_str))
        .collect();
    let mut next = 0usize;
    for topic in subscribed {
        let Some(&count) = partitions.get(topic) else {
            continue;
        };
        for partition in 0..count {
            // Someone subscribes to `topic`: the scan ends within one turn of the circle.
            while !sorted[next % sorted.len()].subscribes(topic) {
                next += 1;
            }
            let member = sorted[next % sorted.len()];
            next += 1;
            assignment
                .entry(member.member_id.clone())
                .or_default()
                .push(TopicPartition::new(topic, partition));
        }
    }
    assignment
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::Assignor;

    #[test]
    fn deals_partitions_of_all_topics_in_turn() {
        // Java's documented example: C0 [t0p0, t0p2, t1p1], C1 [t0p1, t1p0, t1p2].
        let members = [member("c0", &["t0", "t1"]), member("c1", &["t0", "t1"])];
        let partitions = topics(&[("t0", 3), ("t1", 3)]);
        let assignment = Assignor::RoundRobin.assign(&partitions, &members);
        let names = names(&assignment);
        assert_eq!(names["c0"], ["t0-0", "t0-2", "t1-1"]);
        assert_eq!(names["c1"], ["t0-1", "t1-0", "t1-2"]);
        assert_complete_and_disjoint(&partitions, &members, &assignment);
    }

    #[test]
    fn skips_members_not_subscribed() {
        // Java's documented example with unequal subscriptions:
        // C0 [t0p0], C1 [t1p0], C2 [t1p1, t2p0, t2p1, t2p2].
        let members = [
            member("c0", &["t0"]),
            member("c1", &["t0", "t1"]),
            member("c2", &["t0", "t1", "t2"]),
        ];
        let partitions = topics(&[("t0", 1), ("t1", 2), ("t2", 3)]);
        let assignment = Assignor::RoundRobin.assign(&partitions, &members);
        let names = names(&assignment);
        assert_eq!(names["c0"], ["t0-0"]);
        assert_eq!(names["c1"], ["t1-0"]);
        assert_eq!(names["c2"], ["t1-1", "t2-0", "t2-1", "t2-2"]);
        assert_complete_and_disjoint(&partitions, &members, &assignment);
    }
}
