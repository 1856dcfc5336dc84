//! Automatic replica placement: Kafka's rack-aware round-robin assignment, with its random
//! start replaced by a deterministic one so every node places replicas identically.

use std::collections::BTreeMap;

use crate::command::BrokerId;

/// A broker that may receive replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate<'a> {
    pub(super) broker_id: BrokerId,
    pub(super) rack: Option<&'a str>,
}

/// Places `partitions` partitions of `replication_factor` replicas each over `brokers`.
///
/// The caller guarantees `1 <= replication_factor <= brokers.len()`. `start` is a position in
/// an endless round-robin sequence (the number of partitions already in the cluster), so
/// successive topics continue where the previous ones stopped instead of all leading on the
/// same broker, and cluster-wide load stays even.
///
/// As in Kafka: brokers are interleaved by rack (`a1, b1, c1, a2, b2, ...`), leaders walk that
/// list, and followers are taken at a shift from the leader that grows every full round, so
/// replica pairs vary; a follower whose rack (or broker) already holds a replica is skipped
/// while some rack (or broker) holds none.
pub(super) fn place(
    brokers: &[Candidate<'_>],
    partitions: u32,
    replication_factor: usize,
    start: u64,
) -> Vec<Vec<BrokerId>> {
    let arranged = rack_alternated(brokers);
    let racks = count_racks(brokers);
    (0..u64::from(partitions))
        .map(|p| place_one(&arranged, racks, replication_factor, start.wrapping_add(p)))
        .collect()
}

/// Brokers ordered by taking one from each rack in turn, racks by name and brokers by id.
fn rack_alternated<'a>(brokers: &[Candidate<'a>]) -> Vec<Candidate<'a>> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<Candidate<'a>>> = BTreeMap::new();
    for &broker in brokers {
        by_rack.entry(broker.rack).or_default().push(broker);
    }
    for members in by_rack.values_mut() {
        members.sort_by_key(|broker| broker.broker_id);
    }
    let rounds = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut arranged = Vec::with_capacity(brokers.len());
    for round in 0..rounds {
        arranged.extend(
            by_rack
                .values()
                .filter_map(|members| members.get(round).copied()),
        );
    }
    arranged
}

fn count_racks(brokers: &[Candidate<'_>]) -> usize {
    let mut racks: Vec<Option<&str>> = brokers.iter().map(|broker| broker.rack).collect();
    racks.sort_unstable();
    racks.dedup();
    racks.len()
}

/// The replicas of the partition at round-robin position `position`, leader first.
fn place_one(
    arranged: &[Candidate<'_>],
    racks: usize,
    replication_factor: usize,
    position: u64,
) -> Vec<BrokerId> {
    let n = arranged.len() as u64;
    if n == 0 {
        return Vec::new();
    }
    let first = position % n;
    let mut chosen = vec![arranged[to_index(first)]];
    if n == 1 {
        return broker_ids(&chosen);
    }
    // Kafka scales the follower shift by the rack count so followers keep alternating racks.
    let shift = (position / n) % (n - 1) * racks as u64;
    let mut k: u64 = 0;
    for _ in 1..replication_factor {
        // n - 1 consecutive values of k reach every other broker, and one of them is always
        // acceptable (replication_factor <= n), so this search ends within n tries.
        let mut picked = None;
        for _ in 0..n {
            let offset = 1 + (shift + k) % (n - 1);
            let candidate = arranged[to_index((first + offset) % n)];
            k += 1;
            if acceptable(&chosen, candidate, racks) {
                picked = Some(candidate);
                break;
            }
        }
        // Unreachable by the argument above; falling back keeps the replica count right anyway.
        let fallback = || {
            arranged
                .iter()
                .copied()
                .find(|b| !chosen.iter().any(|c| c.broker_id == b.broker_id))
        };
        match picked.or_else(fallback) {
            Some(broker) => chosen.push(broker),
            None => break,
        }
    }
    broker_ids(&chosen)
}

/// Kafka's skip rule: a second replica in one rack only once every rack has one, and never two
/// replicas on one broker.
fn acceptable(chosen: &[Candidate<'_>], candidate: Candidate<'_>, racks: usize) -> bool {
    let mut used_racks: Vec<Option<&str>> = chosen.iter().map(|c| c.rack).collect();
    used_racks.sort_unstable();
    used_racks.dedup();
    let rack_ok = !used_racks.contains(&candidate.rack) || used_racks.len() == racks;
    let broker_free = !chosen.iter().any(|c| c.broker_id == candidate.broker_id);
    rack_ok && broker_free
}

fn broker_ids(chosen: &[Candidate<'_>]) -> Vec<BrokerId> {
    chosen.iter().map(|c| c.broker_id).collect()
}

/// `value` is always an index reduced modulo a slice length, so it fits in `usize`.
fn to_index(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::{place, Candidate};
    use crate::command::{BrokerId, MetadataResponse};
    use crate::image::test_support::Harness;

    fn candidates<'a>(brokers: &[(BrokerId, Option<&'a str>)]) -> Vec<Candidate<'a>> {
        brokers
            .iter()
            .map(|&(broker_id, rack)| Candidate { broker_id, rack })
            .collect()
    }

    fn no_racks(count: BrokerId) -> Vec<Candidate<'static>> {
        (1..=count)
            .map(|broker_id| Candidate {
                broker_id,
                rack: None,
            })
            .collect()
    }

    /// (leader count, replica count) per broker.
    fn loads(
        assignments: &[Vec<BrokerId>],
    ) -> (BTreeMap<BrokerId, usize>, BTreeMap<BrokerId, usize>) {
        let mut leaders = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for list in assignments {
            *leaders.entry(list[0]).or_default() += 1;
            for &broker in list {
                *replicas.entry(broker).or_default() += 1;
            }
        }
        (leaders, replicas)
    }

    fn assert_balanced(counts: &BTreeMap<BrokerId, usize>, brokers: usize) {
        assert_eq!(counts.len(), brokers, "some broker got nothing: {counts:?}");
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        assert!(max - min <= 1, "unbalanced: {counts:?}");
    }

    fn assert_well_formed(assignments: &[Vec<BrokerId>], replication_factor: usize) {
        for list in assignments {
            assert_eq!(list.len(), replication_factor);
            assert_eq!(
                list.iter().collect::<BTreeSet<_>>().len(),
                list.len(),
                "{list:?}"
            );
        }
    }

    #[test]
    fn three_brokers_thirty_partitions_three_replicas_is_balanced() {
        let assignments = place(&no_racks(3), 30, 3, 0);
        assert_well_formed(&assignments, 3);
        let (leaders, replicas) = loads(&assignments);
        assert_balanced(&leaders, 3);
        assert_balanced(&replicas, 3);
    }

    #[test]
    fn five_brokers_twenty_partitions_two_replicas_is_balanced() {
        let assignments = place(&no_racks(5), 20, 2, 0);
        assert_well_formed(&assignments, 2);
        let (leaders, replicas) = loads(&assignments);
        assert_balanced(&leaders, 5);
        assert_balanced(&replicas, 5);
        // Followers vary with the shift, so replica pairs are not all (n, n + 1).
        let pairs: BTreeSet<_> = assignments.iter().map(|l| (l[0], l[1])).collect();
        assert_eq!(pairs.len(), 20);
    }

    #[test]
    fn replicas_of_a_partition_land_in_distinct_racks() {
        let brokers = candidates(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let rack_of: BTreeMap<_, _> = brokers.iter().map(|c| (c.broker_id, c.rack)).collect();
        for start in [0, 1, 7] {
            let assignments = place(&brokers, 24, 3, start);
            assert_well_formed(&assignments, 3);
            for list in &assignments {
                let racks: BTreeSet<_> = list.iter().map(|b| rack_of[b]).collect();
                assert_eq!(racks.len(), 3, "{list:?} shares a rack");
            }
            let (leaders, replicas) = loads(&assignments);
            assert_balanced(&leaders, 6);
            // Followers are exactly balanced over whole rounds of the broker list; a start
            // mid-round (a topic created after others) only balances cluster-wide.
            if start == 0 {
                assert_balanced(&replicas, 6);
            }
        }
    }

    #[test]
    fn uneven_racks_still_spread_across_racks_when_they_can() {
        let brokers = candidates(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
        ]);
        for list in place(&brokers, 12, 2, 0) {
            assert!(list.contains(&4), "{list:?} stays in rack a");
        }
        // More replicas than racks: racks repeat only once every rack has one.
        for list in place(&brokers, 12, 3, 0) {
            assert!(list.contains(&4), "{list:?} skips rack b");
            assert_eq!(list.iter().collect::<BTreeSet<_>>().len(), 3);
        }
    }

    #[test]
    fn placement_is_deterministic_and_continues_from_the_start() {
        let brokers = no_racks(4);
        assert_eq!(place(&brokers, 10, 3, 5), place(&brokers, 10, 3, 5));
        let whole = place(&brokers, 10, 3, 0);
        assert_eq!(place(&brokers, 6, 3, 4), whole[4..]);
        assert_eq!(place(&no_racks(1), 3, 1, 0), [[1], [1], [1]]);
    }

    #[test]
    fn successive_topics_do_not_all_lead_on_the_lowest_broker() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        let mut leaders = Vec::new();
        for (index, name) in ["a", "b", "c"].into_iter().enumerate() {
            let id_byte = u8::try_from(index + 1).expect("small");
            let MetadataResponse::TopicCreated { assignments, .. } =
                h.create_auto(name, id_byte, 1, 2)
            else {
                panic!("topic {name} not created");
            };
            leaders.push(assignments[0][0]);
        }
        assert_eq!(leaders, [1, 2, 3]);
    }

    #[test]
    fn placement_skips_fenced_brokers() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.fence(2);
        let MetadataResponse::TopicCreated { assignments, .. } = h.create_auto("t", 1, 10, 2)
        else {
            panic!("topic not created");
        };
        assert!(assignments.iter().flatten().all(|&b| b != 2));
    }
}
