//! `cooperative-sticky` (Java's `CooperativeStickyAssignor`): a balanced assignment that keeps
//! as many partitions with their current owners as balance allows, then KIP-429's rule: a
//! partition that changes owner is left out of this round, so its old owner revokes it and
//! rejoins, and the next round hands it, unowned by then, to its new member.
//!
//! Owners come from the subscriptions' owned partitions: when members claim the same partition,
//! the claim of the newest generation wins, and two claims of one generation cancel (neither
//! keeps it), as Java resolves them. With equal subscriptions (the common case) each member gets
//! `partitions / members` or one more, and keeps owned partitions up to that; with unequal ones
//! a greedy pass keeps everything owned, places the rest on the least loaded eligible member and
//! moves partitions while a member has two more than one that could take them.

use std::collections::{BTreeMap, BTreeSet};

use super::Member;
use crate::record::TopicPartition;

pub(super) fn assign(
    partitions: &BTreeMap<String, i32>,
    members: &[Member],
) -> BTreeMap<String, Vec<TopicPartition>> {
    let owners = previous_owners(partitions, members);
    let mut assignment = if subscriptions_equal(members) {
        constrained(partitions, members, &owners)
    } else {
        general(partitions, members, &owners)
    };
    for (member_id, tps) in &mut assignment {
        tps.retain(|tp| owners.get(tp).is_none_or(|owner| *owner == member_id));
    }
    assignment
}

fn exists(partitions: &BTreeMap<String, i32>, tp: &TopicPartition) -> bool {
    partitions
        .get(&tp.topic)
        .is_some_and(|&count| (0..count).contains(&tp.partition))
}

/// Who owns each partition now, by the rules in the module comment.
fn previous_owners<'a>(
    partitions: &BTreeMap<String, i32>,
    members: &'a [Member],
) -> BTreeMap<TopicPartition, &'a str> {
    let mut claims: BTreeMap<TopicPartition, (i32, Option<&'a str>)> = BTreeMap::new();
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    for member in sorted {
        let generation = member.generation();
        for tp in &member.subscription.owned_partitions {
            if !member.subscribes(&tp.topic) || !exists(partitions, tp) {
                continue;
            }
            let claim = (generation, Some(member.member_id.as_str()));
            match claims.get(tp) {
                None => {
                    claims.insert(tp.clone(), claim);
                }
                Some(&(other, _)) if generation > other => {
                    claims.insert(tp.clone(), claim);
                }
                Some(&(other, Some(_))) if generation == other => {
                    tracing::warn!(%tp, generation, "two members own one partition; it moves");
                    claims.insert(tp.clone(), (generation, None));
                }
                Some(_) => {}
            }
        }
    }
    claims
        .into_iter()
        .filter_map(|(tp, (_, owner))| Some((tp, owner?)))
        .collect()
}

fn subscriptions_equal(members: &[Member]) -> bool {
    let topics =
        |m: &Member| -> BTreeSet<String> { m.subscription.topics.iter().cloned().collect() };
    members
        .first()
        .is_none_or(|first| members.iter().all(|m| topics(m) == topics(first)))
}

/// Every existing partition of `topics`, sorted.
fn all_partitions<'a>(
    partitions: &BTreeMap<String, i32>,
    topics: impl Iterator<Item = &'a String>,
) -> Vec<TopicPartition> {
    let topics: BTreeSet<&String> = topics.collect();
    topics
        .into_iter()
        .filter_map(|t| Some((t, *partitions.get(t)?)))
        .flat_map(|(t, count)| (0..count).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect()
}

fn owned_by<'a>(
    owners: &BTreeMap<TopicPartition, &'a str>,
) -> BTreeMap<&'a str, Vec<TopicPartition>> {
    let mut owned: BTreeMap<&str, Vec<TopicPartition>> = BTreeMap::new();
    for (tp, owner) in owners {
        owned.entry(owner).or_default().push(tp.clone());
    }
    owned
}

/// Equal subscriptions: quotas of `min` or `min + 1` partitions, owned ones kept first.
fn constrained(
    partitions: &BTreeMap<String, i32>,
    members: &[Member],
    owners: &BTreeMap<TopicPartition, &str>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut assignment: BTreeMap<String, Vec<TopicPartition>> = members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect();
    let Some(first) = members.first() else {
        return assignment;
    };
    let all = all_partitions(partitions, first.subscription.topics.iter());
    let min_quota = all.len() / members.len();
    // How many members get one partition more than `min_quota`.
    let mut extra = all.len() % members.len();
    let owned = owned_by(owners);
    // Members that own the most keep their extra partition first: fewer moves.
    let mut by_owned: Vec<(&str, &Vec<TopicPartition>)> =
        owned.iter().map(|(m, tps)| (*m, tps)).collect();
    by_owned.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let mut kept = BTreeSet::new();
    for (member_id, tps) in by_owned {
        let keep = if tps.len() > min_quota && extra > 0 {
            extra -= 1;
            min_quota + 1
        } else {
            tps.len().min(min_quota)
        };
        kept.extend(tps[..keep].iter().cloned());
        if let Some(slot) = assignment.get_mut(member_id) {
            slot.extend_from_slice(&tps[..keep]);
        }
    }
    let mut unassigned = all.into_iter().filter(|tp| !kept.contains(tp));
    for tps in assignment.values_mut() {
        while tps.len() < min_quota {
            match unassigned.next() {
                Some(tp) => tps.push(tp),
                None => break,
            }
        }
    }
    for tps in assignment.values_mut() {
        if extra == 0 {
            break;
        }
        if tps.len() == min_quota {
            if let Some(tp) = unassigned.next() {
                tps.push(tp);
                extra -= 1;
            }
        }
    }
    debug_assert!(unassigned.next().is_none(), "quotas cover every partition");
    assignment
}

/// Unequal subscriptions: keep what is owned, place the rest, then even out.
fn general(
    partitions: &BTreeMap<String, i32>,
    members: &[Member],
    owners: &BTreeMap<TopicPartition, &str>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let by_id: BTreeMap<&str, &Member> =
        members.iter().map(|m| (m.member_id.as_str(), m)).collect();
    let mut assignment: BTreeMap<&str, Vec<TopicPartition>> =
        by_id.keys().map(|id| (*id, Vec::new())).collect();
    for (tp, owner) in owners {
        if let Some(tps) = assignment.get_mut(owner) {
            tps.push(tp.clone());
        }
    }
    let eligible = |tp: &TopicPartition| -> Vec<&str> {
        by_id
            .iter()
            .filter(|(_, m)| m.subscribes(&tp.topic))
            .map(|(id, _)| *id)
            .collect()
    };
    let mut unassigned: Vec<TopicPartition> = all_partitions(
        partitions,
        members.iter().flat_map(|m| m.subscription.topics.iter()),
    )
    .into_iter()
    .filter(|tp| !owners.contains_key(tp))
    .collect();
    // The partitions with the fewest possible members first, while those have room.
    unassigned.sort_by_cached_key(|tp| (eligible(tp).len(), tp.clone()));
    for tp in unassigned {
        let target = eligible(&tp)
            .into_iter()
            .min_by_key(|id| (assignment[id].len(), *id));
        if let Some(id) = target {
            assignment.get_mut(id).expect("a member").push(tp);
        }
    }
    // Each move narrows a gap of two or more, so this ends; the bound is for safety only.
    let total: usize = assignment.values().map(Vec::len).sum();
    for _ in 0..=total * members.len() {
        let Some((from, tp, to)) = next_move(&assignment, &by_id, owners) else {
            break;
        };
        let tps = assignment.get_mut(from).expect("a member");
        tps.retain(|t| *t != tp);
        assignment.get_mut(to).expect("a member").push(tp);
    }
    assignment
        .into_iter()
        .map(|(id, tps)| (id.to_owned(), tps))
        .collect()
}

/// A partition to move from a member to an eligible member with at least two fewer: from the
/// most loaded members first, partitions they did not own before first.
fn next_move<'a>(
    assignment: &BTreeMap<&'a str, Vec<TopicPartition>>,
    by_id: &BTreeMap<&'a str, &Member>,
    owners: &BTreeMap<TopicPartition, &str>,
) -> Option<(&'a str, TopicPartition, &'a str)> {
    let mut donors: Vec<(&str, &Vec<TopicPartition>)> =
        assignment.iter().map(|(id, tps)| (*id, tps)).collect();
    donors.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    for (from, tps) in donors {
        let mut candidates: Vec<&TopicPartition> = tps.iter().collect();
        candidates.sort_by_key(|tp| (owners.get(*tp) == Some(&from), (*tp).clone()));
        for tp in candidates {
            let receiver = by_id
                .iter()
                .filter(|(id, m)| **id != from && m.subscribes(&tp.topic))
                .map(|(id, _)| *id)
                .filter(|id| assignment[id].len() + 2 <= tps.len())
                .min_by_key(|id| (assignment[id].len(), *id));
            if let Some(to) = receiver {
                return Some((from, tp.clone(), to));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::testing::*;
    use super::super::{Assignor, Member};
    use crate::record::TopicPartition;

    fn assign(
        partitions: &BTreeMap<String, i32>,
        members: &[Member],
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        Assignor::CooperativeSticky.assign(partitions, members)
    }

    /// The members again, each owning what `assignment` gave it, one generation on.
    fn next_round(
        members: &[Member],
        assignment: &BTreeMap<String, Vec<TopicPartition>>,
        generation: i32,
    ) -> Vec<Member> {
        members
            .iter()
            .map(|m| {
                let mut m = m.clone();
                m.subscription.owned_partitions = assignment[&m.member_id].clone();
                m.subscription.generation = generation;
                m
            })
            .collect()
    }

    fn moved(
        before: &BTreeMap<String, Vec<TopicPartition>>,
        after: &BTreeMap<String, Vec<TopicPartition>>,
    ) -> usize {
        before
            .iter()
            .map(|(m, tps)| {
                let now = after.get(m).cloned().unwrap_or_default();
                tps.iter().filter(|tp| !now.contains(tp)).count()
            })
            .sum()
    }

    #[test]
    fn a_new_group_is_balanced_and_complete() {
        let partitions = topics(&[("t", 6)]);
        let members = [
            member("a", &["t"]),
            member("b", &["t"]),
            member("c", &["t"]),
        ];
        let assignment = assign(&partitions, &members);
        assert!(
            assignment.values().all(|tps| tps.len() == 2),
            "{assignment:?}"
        );
        assert_complete_and_disjoint(&partitions, &members, &assignment);
    }

    #[test]
    fn a_joining_member_gets_partitions_in_two_rounds_and_nothing_else_moves() {
        let partitions = topics(&[("t", 6)]);
        let a = owning(member("a", &["t"]), 1, &[("t", 0), ("t", 1), ("t", 2)]);
        let b = owning(member("b", &["t"]), 1, &[("t", 3), ("t", 4), ("t", 5)]);
        let before: BTreeMap<String, Vec<TopicPartition>> = [
            ("a".to_owned(), a.subscription.owned_partitions.clone()),
            ("b".to_owned(), b.subscription.owned_partitions.clone()),
        ]
        .into();
        let members = [a, b, member("c", &["t"])];

        // Round 1: a and b each give up one partition; c gets nothing yet.
        let first = assign(&partitions, &members);
        assert_eq!(first["a"].len(), 2, "{first:?}");
        assert_eq!(first["b"].len(), 2, "{first:?}");
        assert!(first["c"].is_empty(), "{first:?}");
        assert!(first["a"].iter().all(|tp| before["a"].contains(tp)));
        assert!(first["b"].iter().all(|tp| before["b"].contains(tp)));

        // Round 2 (a and b revoked, all rejoin): c gets exactly the two revoked partitions.
        let second = assign(&partitions, &next_round(&members, &first, 2));
        assert_eq!(second["a"], first["a"]);
        assert_eq!(second["b"], first["b"]);
        let mut revoked: Vec<TopicPartition> = before
            .values()
            .flatten()
            .filter(|tp| !first.values().flatten().any(|k| k == *tp))
            .cloned()
            .collect();
        revoked.sort();
        assert_eq!(second["c"], revoked);
        assert_complete_and_disjoint(&partitions, &members, &second);
        assert_eq!(moved(&before, &second), 2);
    }

    #[test]
    fn one_owner_of_everything_hands_half_over_in_the_second_round() {
        let partitions = topics(&[("t", 6)]);
        let all: Vec<(&str, i32)> = (0..6).map(|p| ("t", p)).collect();
        let members = [owning(member("a", &["t"]), 3, &all), member("b", &["t"])];
        let first = assign(&partitions, &members);
        assert_eq!(names(&first)["a"], ["t-0", "t-1", "t-2"]);
        assert!(first["b"].is_empty());
        let second = assign(&partitions, &next_round(&members, &first, 4));
        assert_eq!(names(&second)["a"], ["t-0", "t-1", "t-2"]);
        assert_eq!(names(&second)["b"], ["t-3", "t-4", "t-5"]);
        // A third round changes nothing: the assignment is stable.
        let third = assign(&partitions, &next_round(&members, &second, 5));
        assert_eq!(third, second);
    }

    #[test]
    fn a_leaving_members_partitions_are_spread_without_revoking_anyone() {
        let partitions = topics(&[("t", 6)]);
        let members = [
            owning(member("a", &["t"]), 2, &[("t", 0), ("t", 3)]),
            owning(member("b", &["t"]), 2, &[("t", 1), ("t", 4)]),
        ];
        // c (owning 2 and 5) left.
        let assignment = assign(&partitions, &members);
        assert_eq!(assignment["a"].len(), 3);
        assert_eq!(assignment["b"].len(), 3);
        assert!(assignment["a"].contains(&TopicPartition::new("t", 0)));
        assert!(assignment["a"].contains(&TopicPartition::new("t", 3)));
        assert!(assignment["b"].contains(&TopicPartition::new("t", 1)));
        assert!(assignment["b"].contains(&TopicPartition::new("t", 4)));
        assert_complete_and_disjoint(&partitions, &members, &assignment);
    }

    #[test]
    fn uneven_counts_keep_the_extra_partition_with_its_owner() {
        let partitions = topics(&[("t", 7)]);
        let members = [
            owning(
                member("a", &["t"]),
                1,
                &[("t", 0), ("t", 1), ("t", 2), ("t", 3)],
            ),
            owning(member("b", &["t"]), 1, &[("t", 4), ("t", 5), ("t", 6)]),
        ];
        let assignment = assign(&partitions, &members);
        assert_eq!(names(&assignment)["a"], ["t-0", "t-1", "t-2", "t-3"]);
        assert_eq!(names(&assignment)["b"], ["t-4", "t-5", "t-6"]);
    }

    #[test]
    fn claims_of_an_older_generation_lose_and_equal_claims_cancel() {
        let partitions = topics(&[("t", 2)]);
        // a (generation 3) and b (generation 2) both claim t-0: the newer claim wins. b alone
        // claims t-1 and keeps it.
        let members = [
            owning(member("a", &["t"]), 3, &[("t", 0)]),
            owning(member("b", &["t"]), 2, &[("t", 0), ("t", 1)]),
        ];
        let assignment = assign(&partitions, &members);
        assert_eq!(names(&assignment)["a"], ["t-0"]);
        assert_eq!(names(&assignment)["b"], ["t-1"]);

        // Same generation, same partition: neither is its owner, so whoever gets it gets it now.
        let members = [
            owning(member("a", &["t"]), 3, &[("t", 0)]),
            owning(member("b", &["t"]), 3, &[("t", 0)]),
        ];
        let assignment = assign(&partitions, &members);
        assert_complete_and_disjoint(&partitions, &members, &assignment);
        assert_eq!(assignment.values().map(Vec::len).sum::<usize>(), 2);
    }

    #[test]
    fn owned_partitions_of_gone_or_unsubscribed_topics_are_dropped() {
        let partitions = topics(&[("t", 2)]);
        let members = [owning(
            member("a", &["t"]),
            1,
            &[("gone", 0), ("t", 5), ("t", 1)],
        )];
        let assignment = assign(&partitions, &members);
        assert_eq!(names(&assignment)["a"], ["t-0", "t-1"]);
    }

    #[test]
    fn unequal_subscriptions_are_balanced_and_sticky() {
        let partitions = topics(&[("x", 4), ("y", 4)]);
        // a had everything of x and y; b (x only) and c (y only) join.
        let all: Vec<(&str, i32)> = (0..4).flat_map(|p| [("x", p), ("y", p)]).collect();
        let members = [
            owning(member("a", &["x", "y"]), 1, &all),
            member("b", &["x"]),
            member("c", &["y"]),
        ];
        let first = assign(&partitions, &members);
        // b and c may only take what a revokes first.
        assert!(first["b"].is_empty() && first["c"].is_empty(), "{first:?}");
        let second = assign(&partitions, &next_round(&members, &first, 2));
        assert_complete_and_disjoint(&partitions, &members, &second);
        let counts: Vec<usize> = second.values().map(Vec::len).collect();
        let (max, min) = (counts.iter().max().unwrap(), counts.iter().min().unwrap());
        assert!(max - min <= 1, "{second:?}");
        // Whatever a kept in round one it still has.
        assert!(first["a"].iter().all(|tp| second["a"].contains(tp)));
        let third = assign(&partitions, &next_round(&members, &second, 3));
        assert_eq!(third, second);
    }

    #[test]
    fn unequal_subscriptions_from_scratch_put_constrained_partitions_first() {
        let partitions = topics(&[("x", 1), ("y", 3)]);
        let members = [member("a", &["x", "y"]), member("b", &["y"])];
        let assignment = assign(&partitions, &members);
        assert_complete_and_disjoint(&partitions, &members, &assignment);
        assert_eq!(assignment["a"].len(), 2);
        assert_eq!(assignment["b"].len(), 2);
    }
}
