//! `range` (Java's `RangeAssignor`): for each topic, its subscribers in member order each
//! take a consecutive range; the first `partitions % members` take one more.

use std::collections::BTreeMap;

use super::{sorted_members, Member};
use crate::record::TopicPartition;

pub(super) fn assign(
    partitions: &BTreeMap<String, i32>,
    members: &[Member],
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut assignment: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    let sorted = sorted_members(members);
    for (topic, &count) in partitions {
        let subscribers: Vec<&&Member> = sorted.iter().filter(|m| m.subscribes(topic)).collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        let n = i32::try_from(subscribers.len()).unwrap_or(i32::MAX);
        let (per_member, extra) = (count / n, count % n);
        for (i, member) in (0..).zip(&subscribers) {
            let start = per_member * i + i.min(extra);
            let length = per_member + i32::from(i < extra);
            assignment
                .entry(member.member_id.clone())
                .or_default()
                .extend((start..start + length).map(|p| TopicPartition::new(topic.clone(), p)));
        }
    }
    assignment
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::Assignor;

    #[test]
    fn ranges_per_topic_with_the_extra_partitions_first() {
        let members = [member("c1", &["t1", "t2"]), member("c0", &["t1", "t2"])];
        let partitions = topics(&[("t1", 3), ("t2", 3)]);
        let assignment = Assignor::Range.assign(&partitions, &members);
        let names = names(&assignment);
        // Java's documented example: C0 [t0p0, t0p1, t1p0, t1p1], C1 [t0p2, t1p2].
        assert_eq!(names["c0"], ["t1-0", "t1-1", "t2-0", "t2-1"]);
        assert_eq!(names["c1"], ["t1-2", "t2-2"]);
        assert_complete_and_disjoint(&partitions, &members, &assignment);
    }

    #[test]
    fn six_partitions_two_then_three_members() {
        let partitions = topics(&[("t", 6)]);
        let two = [member("a", &["t"]), member("b", &["t"])];
        let names2 = names(&Assignor::Range.assign(&partitions, &two))
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Vec<_>>();
        assert_eq!(names2[0].1, ["t-0", "t-1", "t-2"]);
        assert_eq!(names2[1].1, ["t-3", "t-4", "t-5"]);
        let three = [
            member("a", &["t"]),
            member("b", &["t"]),
            member("c", &["t"]),
        ];
        let assignment = Assignor::Range.assign(&partitions, &three);
        assert!(assignment.values().all(|tps| tps.len() == 2));
        assert_complete_and_disjoint(&partitions, &three, &assignment);
    }

    #[test]
    fn only_subscribers_share_a_topic() {
        let members = [
            member("a", &["x"]),
            member("b", &["x", "y"]),
            member("c", &["y"]),
        ];
        let partitions = topics(&[("x", 3), ("y", 1)]);
        let assignment = Assignor::Range.assign(&partitions, &members);
        let names = names(&assignment);
        assert_eq!(names["a"], ["x-0", "x-1"]);
        assert_eq!(names["b"], ["x-2", "y-0"]);
        assert!(names["c"].is_empty());
        assert_complete_and_disjoint(&partitions, &members, &assignment);
    }

    #[test]
    fn static_members_order_by_instance_id() {
        let mut a = member("a", &["t"]);
        a.group_instance_id = Some("z".into());
        let mut b = member("b", &["t"]);
        b.group_instance_id = Some("y".into());
        let assignment = Assignor::Range.assign(&topics(&[("t", 2)]), &[a, b]);
        let names = names(&assignment);
        assert_eq!(names["b"], ["t-0"]);
        assert_eq!(names["a"], ["t-1"]);
    }
}
