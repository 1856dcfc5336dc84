//! The server-side assignors of KIP-848 consumer groups, with Kafka's names: `uniform` (the
//! default: balanced, sticky to the previous target assignment) and `range` (contiguous ranges
//! of each topic's partitions, members in order). Pure functions of the members' subscriptions,
//! the topics' partition counts and the previous target assignment.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// Kafka's assignor names, in the order of `group.consumer.assignors` (the first is the
/// default).
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// What an assignor sees of one member.
#[derive(Debug, Clone)]
pub struct MemberSpec<'a> {
    pub member_id: &'a str,
    /// Sort key of the range assignor: the instance id of a static member, else the member id,
    /// so a restarted static member gets the same ranges.
    pub order_key: &'a str,
    pub topics: BTreeSet<Uuid>,
    /// The member's previous target assignment (stickiness).
    pub previous: Option<&'a Assignment>,
}

/// The target assignment of every member (members with nothing get an empty entry).
pub fn assign(
    assignor: &str,
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<Uuid, u32>,
) -> BTreeMap<String, Assignment> {
    match assignor {
        "range" => range(members, partitions),
        _ => uniform(members, partitions),
    }
}

fn empty_targets(members: &[MemberSpec<'_>]) -> BTreeMap<String, Assignment> {
    members
        .iter()
        .map(|m| (m.member_id.to_owned(), Assignment::new()))
        .collect()
}

/// Each topic's partitions split into contiguous ranges over the members subscribed to it,
/// sorted by instance or member id; the first `count % members` members get one more.
fn range(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<Uuid, u32>,
) -> BTreeMap<String, Assignment> {
    let mut targets = empty_targets(members);
    for (topic, count) in partitions {
        let mut subscribed: Vec<&MemberSpec<'_>> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .collect();
        if subscribed.is_empty() {
            continue;
        }
        subscribed.sort_by(|a, b| (a.order_key, a.member_id).cmp(&(b.order_key, b.member_id)));
        let (per, extra) = (
            count / subscribed.len() as u32,
            count % subscribed.len() as u32,
        );
        let mut next = 0u32;
        for (i, member) in subscribed.iter().enumerate() {
            let take = per + u32::from((i as u32) < extra);
            let range: BTreeSet<i32> = (next..next + take).map(|p| p as i32).collect();
            next += take;
            if !range.is_empty() {
                if let Some(t) = targets.get_mut(member.member_id) {
                    t.entry(*topic).or_default().extend(range);
                }
            }
        }
    }
    targets
}

/// Balanced and sticky: every partition goes to a member subscribed to its topic; a member
/// keeps what it had in its previous target while that stays within the balanced quota, and
/// the rest goes to the least loaded eligible member.
fn uniform(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<Uuid, u32>,
) -> BTreeMap<String, Assignment> {
    let mut targets = empty_targets(members);
    if members.is_empty() {
        return targets;
    }
    // Every partition of a subscribed topic, with the members that may take it.
    let mut all: Vec<(Uuid, i32)> = Vec::new();
    for (topic, count) in partitions {
        if members.iter().any(|m| m.topics.contains(topic)) {
            all.extend((0..*count as i32).map(|p| (*topic, p)));
        }
    }
    // A member's quota: its share of the partitions it could take, rounded up. With identical
    // subscriptions this is the even split; with different ones it is an upper bound that the
    // least-loaded placement below evens out.
    let total = all.len();
    let quota = total.div_ceil(members.len()).max(1);
    let mut load: BTreeMap<&str, usize> = members.iter().map(|m| (m.member_id, 0)).collect();
    let mut placed: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    let floor = total / members.len();
    let mut at_ceiling = 0usize;
    let ceiling_slots = total % members.len();
    // Stickiness: previous targets first, in member order, each up to the quota (only
    // `total % members` members may reach floor + 1).
    for member in members {
        let Some(previous) = member.previous else {
            continue;
        };
        for (topic, kept) in previous {
            if !member.topics.contains(topic) {
                continue;
            }
            let count = partitions.get(topic).copied().unwrap_or(0) as i32;
            for &p in kept.iter().filter(|p| **p < count) {
                let current = load[member.member_id];
                let limit = if at_ceiling < ceiling_slots {
                    floor + 1
                } else {
                    floor.max(1)
                };
                if current >= limit.min(quota) || placed.contains(&(*topic, p)) {
                    continue;
                }
                placed.insert((*topic, p));
                if let Some(t) = targets.get_mut(member.member_id) {
                    t.entry(*topic).or_default().insert(p);
                }
                let now = current + 1;
                load.insert(member.member_id, now);
                if now == floor + 1 {
                    at_ceiling += 1;
                }
            }
        }
    }
    // The rest: each to the least loaded eligible member (ties by member order); partitions
    // that fewer members may take go first, so the flexible members even out the load.
    let eligible = |topic: &Uuid| members.iter().filter(|m| m.topics.contains(topic)).count();
    all.sort_by_key(|(topic, p)| (eligible(topic), *topic, *p));
    for (topic, p) in all {
        if placed.contains(&(topic, p)) {
            continue;
        }
        let chosen = members
            .iter()
            .filter(|m| m.topics.contains(&topic))
            .min_by_key(|m| load[m.member_id]);
        if let Some(member) = chosen {
            if let Some(t) = targets.get_mut(member.member_id) {
                t.entry(topic).or_default().insert(p);
            }
            *load.entry(member.member_id).or_default() += 1;
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn spec<'a>(id: &'a str, topics: &[Uuid], previous: Option<&'a Assignment>) -> MemberSpec<'a> {
        MemberSpec {
            member_id: id,
            order_key: id,
            topics: topics.iter().copied().collect(),
            previous,
        }
    }

    fn flat(a: &Assignment) -> Vec<(Uuid, i32)> {
        a.iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            .collect()
    }

    fn check_cover(targets: &BTreeMap<String, Assignment>, partitions: &BTreeMap<Uuid, u32>) {
        let mut seen = BTreeSet::new();
        for target in targets.values() {
            for tp in flat(target) {
                assert!(seen.insert(tp), "{tp:?} assigned twice");
            }
        }
        let all: BTreeSet<(Uuid, i32)> = partitions
            .iter()
            .flat_map(|(t, n)| (0..*n as i32).map(move |p| (*t, p)))
            .collect();
        assert_eq!(seen, all, "every partition assigned once");
    }

    #[test]
    fn uniform_balances_and_keeps_what_members_had() {
        let partitions = BTreeMap::from([(topic(1), 6)]);
        let two = [spec("a", &[topic(1)], None), spec("b", &[topic(1)], None)];
        let first = assign("uniform", &two, &partitions);
        check_cover(&first, &partitions);
        assert!(first.values().all(|t| flat(t).len() == 3));

        let (a, b) = (first["a"].clone(), first["b"].clone());
        let three = [
            spec("a", &[topic(1)], Some(&a)),
            spec("b", &[topic(1)], Some(&b)),
            spec("c", &[topic(1)], None),
        ];
        let second = assign("uniform", &three, &partitions);
        check_cover(&second, &partitions);
        assert!(second.values().all(|t| flat(t).len() == 2));
        // Sticky: a and b each lost exactly one partition, to c.
        for id in ["a", "b"] {
            let before: BTreeSet<_> = flat(&first[id]).into_iter().collect();
            let after: BTreeSet<_> = flat(&second[id]).into_iter().collect();
            assert!(after.is_subset(&before), "{id} only gave partitions away");
        }
    }

    #[test]
    fn uniform_gives_each_partition_to_a_subscribed_member() {
        let partitions = BTreeMap::from([(topic(1), 4), (topic(2), 2)]);
        let members = [
            spec("a", &[topic(1)], None),
            spec("b", &[topic(1), topic(2)], None),
        ];
        let targets = assign("uniform", &members, &partitions);
        check_cover(&targets, &partitions);
        assert!(!targets["a"].contains_key(&topic(2)));
        assert_eq!(
            flat(&targets["a"]).len(),
            3,
            "a takes what b's topic 2 leaves"
        );
    }

    #[test]
    fn range_splits_each_topic_into_contiguous_ranges() {
        let partitions = BTreeMap::from([(topic(1), 7)]);
        let members = [
            spec("b", &[topic(1)], None),
            spec("a", &[topic(1)], None),
            spec("c", &[topic(1)], None),
        ];
        let targets = assign("range", &members, &partitions);
        check_cover(&targets, &partitions);
        assert_eq!(
            flat(&targets["a"]),
            vec![(topic(1), 0), (topic(1), 1), (topic(1), 2)]
        );
        assert_eq!(flat(&targets["b"]), vec![(topic(1), 3), (topic(1), 4)]);
        assert_eq!(flat(&targets["c"]), vec![(topic(1), 5), (topic(1), 6)]);
    }

    #[test]
    fn members_without_subscribed_partitions_get_nothing() {
        let partitions = BTreeMap::from([(topic(1), 1)]);
        let members = [spec("a", &[topic(1)], None), spec("b", &[topic(1)], None)];
        for assignor in ASSIGNORS {
            let targets = assign(assignor, &members, &partitions);
            check_cover(&targets, &partitions);
            assert_eq!(targets.len(), 2, "{assignor}: an entry per member");
        }
    }
}
