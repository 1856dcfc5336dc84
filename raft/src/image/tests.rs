//! Whole-image tests: producer ids, getters, snapshots (serde), determinism, and a property test
//! that applies random command sequences and checks the image's invariants after each.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::test_support::{assert_rejected, create_cmd, register_cmd, Harness};
use super::{MetadataImage, UNCLEAN_LEADER_ELECTION_CONFIG};
use crate::command::{
    AllocateProducerIds, AlterPartition, AlterTopicConfigs, BrokerId, CreatePartitions,
    DeleteTopic, ElectLeaders, ElectionType, FenceBroker, MetadataCommand, MetadataResponse,
    Rejection, TopicAssignment, TopicId,
};

fn allocate(broker_id: BrokerId, broker_epoch: i64, count: u32) -> MetadataCommand {
    MetadataCommand::AllocateProducerIds(AllocateProducerIds {
        broker_id,
        broker_epoch,
        count,
    })
}

#[test]
fn producer_id_blocks_are_contiguous_and_never_overlap() {
    let mut h = Harness::with_brokers(&[1, 2]);
    let mut expected_first = 0;
    for (broker, count) in [(1, 1000), (2, 1), (1, 1_000_000), (2, 500)] {
        let epoch = h.epoch(broker);
        let response = h.apply(allocate(broker, epoch, count));
        assert_eq!(
            response,
            MetadataResponse::ProducerIdsAllocated {
                first_producer_id: expected_first,
                count,
            }
        );
        expected_first += i64::from(count);
        assert_eq!(h.image.next_producer_id(), expected_first);
    }
}

#[test]
fn producer_id_requests_are_validated() {
    let mut h = Harness::with_brokers(&[1]);
    let stale = h.epoch(1);
    let current = h.register(1, 2, None);
    let cases = [
        (
            allocate(7, 1, 10),
            Rejection::UnknownBroker { broker_id: 7 },
        ),
        (
            allocate(1, stale, 10),
            Rejection::StaleBrokerEpoch {
                broker_id: 1,
                current,
                requested: stale,
            },
        ),
        (
            allocate(1, current, 0),
            Rejection::InvalidCount { count: 0 },
        ),
        (
            allocate(1, current, 1_000_001),
            Rejection::InvalidCount { count: 1_000_001 },
        ),
    ];
    for (command, expected) in cases {
        assert_rejected(&mut h, command, expected);
    }
    h.image.next_producer_id = i64::MAX - 5;
    assert_rejected(
        &mut h,
        allocate(1, current, 10),
        Rejection::ProducerIdsExhausted,
    );
}

#[test]
fn advance_moves_only_the_offset() {
    let mut h = Harness::with_brokers(&[1]);
    let mut expected = h.image.clone();
    h.image.advance(99);
    assert_eq!(h.image.metadata_offset(), 99);
    expected.metadata_offset = 99;
    assert_eq!(h.image, expected);
}

#[test]
fn getters_list_brokers_and_topics_in_order() {
    let mut h = Harness::with_brokers(&[3, 1, 2]);
    h.fence(2);
    h.create("b", 2, vec![vec![1]]);
    h.create("a", 1, vec![vec![3]]);
    let ids: Vec<_> = h.image.brokers().map(|b| b.broker_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    let unfenced: Vec<_> = h.image.unfenced_brokers().map(|b| b.broker_id).collect();
    assert_eq!(unfenced, [1, 3]);
    let names: Vec<_> = h.image.topics().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(h.image.broker(4).is_none());
}

/// A cluster with brokers in racks, several topics, a fenced broker, configs and producer ids.
fn populated() -> Harness {
    let mut h = Harness::default();
    for (id, rack) in [(1, "a"), (2, "b"), (3, "c"), (4, "a")] {
        h.register(id, 1, Some(rack));
    }
    h.create_auto("orders", 1, 6, 3);
    h.create("events", 2, vec![vec![1, 2], vec![2, 3]]);
    h.apply(MetadataCommand::AlterTopicConfigs(AlterTopicConfigs {
        name: "events".to_owned(),
        set: [(UNCLEAN_LEADER_ELECTION_CONFIG.to_owned(), "true".to_owned())].into(),
        remove: vec![],
    }));
    h.fence(2);
    let epoch = h.epoch(3);
    h.apply(allocate(3, epoch, 100));
    h
}

#[test]
fn a_populated_image_round_trips_through_serde_json() {
    let h = populated();
    let json = serde_json::to_string(&h.image).expect("serializes");
    let decoded: MetadataImage = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(decoded, h.image);
    // The id index is rebuilt, not serialized.
    let orders = h.topic_id("orders");
    assert_eq!(
        decoded.topic_by_id(&orders).map(|t| t.name.as_str()),
        Some("orders")
    );
    assert!(!json.contains("topic_names"));
}

#[test]
fn the_same_commands_give_the_same_image() {
    assert_eq!(populated().image, populated().image);
}

// ---- property test ----

const NAMES: [&str; 3] = ["a", "b", "c"];

/// A command in terms the generator can pick blindly; resolved against the current image so
/// that epochs and leaders are usually right and the interesting paths are taken.
#[derive(Debug, Clone)]
enum Op {
    Register {
        broker: BrokerId,
        incarnation: u8,
        rack: Option<u8>,
        /// Names the broker's current epoch as the one its data was intact under.
        clean: bool,
    },
    Fence {
        broker: BrokerId,
        stale: bool,
    },
    CreateAuto {
        name: usize,
        id: u8,
        partitions: u32,
        replication_factor: u16,
    },
    CreateExplicit {
        name: usize,
        id: u8,
        lists: Vec<Vec<BrokerId>>,
    },
    Delete {
        name: usize,
    },
    AddPartitions {
        name: usize,
        extra: u32,
        lists: Option<Vec<Vec<BrokerId>>>,
    },
    SetUnclean {
        name: usize,
        enabled: bool,
    },
    AlterIsr {
        name: usize,
        partition: u32,
        /// Which replicas (by position) the proposed ISR keeps.
        mask: u8,
        /// A broker appended to the proposal, usually making it invalid.
        extra: Option<BrokerId>,
        wrong_leader: bool,
        stale_partition_epoch: bool,
    },
    Elect {
        unclean: bool,
        target: Option<(usize, u32)>,
    },
    Allocate {
        broker: BrokerId,
        count: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    // Mostly registered brokers and valid shapes, so most commands apply; a few bad values keep
    // the rejection paths exercised.
    let broker = prop_oneof![9 => 0..4i32, 1 => Just(-1), 1 => Just(7)];
    let topic_id = prop_oneof![9 => 1..6u8, 1 => Just(0u8)];
    let lists = prop::collection::vec(prop::collection::vec(0..5i32, 0..4), 0..4);
    prop_oneof![
        3 => (broker.clone(), 0..3u8, prop::option::of(0..3u8), any::<bool>())
            .prop_map(|(broker, incarnation, rack, clean)| {
                Op::Register { broker, incarnation, rack, clean }
            }),
        3 => (broker.clone(), prop::bool::weighted(0.2))
            .prop_map(|(broker, stale)| Op::Fence { broker, stale }),
        3 => (0..3usize, topic_id.clone(), prop_oneof![8 => 1..4u32, 1 => Just(0u32)], prop_oneof![8 => 1..3u16, 1 => 0..5u16])
            .prop_map(|(name, id, partitions, replication_factor)| {
                Op::CreateAuto { name, id, partitions, replication_factor }
            }),
        1 => (0..3usize, topic_id, lists.clone())
            .prop_map(|(name, id, lists)| Op::CreateExplicit { name, id, lists }),
        1 => (0..3usize).prop_map(|name| Op::Delete { name }),
        1 => (0..3usize, 0..3u32, prop::option::of(lists))
            .prop_map(|(name, extra, lists)| Op::AddPartitions { name, extra, lists }),
        1 => (0..3usize, any::<bool>()).prop_map(|(name, enabled)| Op::SetUnclean { name, enabled }),
        6 => (0..3usize, 0..3u32, any::<u8>(), prop::option::weighted(0.1, 0..8i32), prop::bool::weighted(0.1), prop::bool::weighted(0.1))
            .prop_map(|(name, partition, mask, extra, wrong_leader, stale_partition_epoch)| Op::AlterIsr {
                name, partition, mask, extra, wrong_leader, stale_partition_epoch,
            }),
        2 => (any::<bool>(), prop::option::of((0..3usize, 0..3u32)))
            .prop_map(|(unclean, target)| Op::Elect { unclean, target }),
        1 => (broker, 0..3u32).prop_map(|(broker, count)| Op::Allocate { broker, count }),
    ]
}

fn current_epoch(image: &MetadataImage, broker: BrokerId) -> i64 {
    image.broker(broker).map_or(0, |b| b.broker_epoch)
}

fn resolve(image: &MetadataImage, op: Op) -> MetadataCommand {
    match op {
        Op::Register {
            broker,
            incarnation,
            rack,
            clean,
        } => {
            let rack = rack.map(|r| format!("r{r}"));
            let mut command = register_cmd(broker, incarnation, rack.as_deref());
            if let MetadataCommand::RegisterBroker(register) = &mut command {
                register.previous_broker_epoch = clean
                    .then(|| image.broker(broker).map(|b| b.broker_epoch))
                    .flatten();
            }
            command
        }
        Op::Fence { broker, stale } => MetadataCommand::FenceBroker(FenceBroker {
            broker_id: broker,
            broker_epoch: current_epoch(image, broker) - i64::from(stale),
        }),
        Op::Allocate { broker, count } => allocate(broker, current_epoch(image, broker), count),
        Op::AlterIsr {
            name,
            partition,
            mask,
            extra,
            wrong_leader,
            stale_partition_epoch,
        } => {
            let command = AlterPartition {
                topic_id: TopicId([9; 16]),
                partition,
                leader_id: 0,
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: vec![],
                member_epochs: BTreeMap::new(),
            };
            let tweaks = (mask, extra, wrong_leader, stale_partition_epoch);
            resolve_alter_isr(image, NAMES[name], command, tweaks)
        }
        Op::Elect { unclean, target } => MetadataCommand::ElectLeaders(ElectLeaders {
            election: if unclean {
                ElectionType::Unclean
            } else {
                ElectionType::Preferred
            },
            partitions: target.map(|(name, p)| vec![(NAMES[name].to_owned(), p)]),
        }),
        topic_op => resolve_topic_op(image, topic_op),
    }
}

/// The topic-level ops (creation, deletion, added partitions, configs).
fn resolve_topic_op(image: &MetadataImage, op: Op) -> MetadataCommand {
    match op {
        Op::CreateAuto {
            name,
            id,
            partitions,
            replication_factor,
        } => {
            let assignment = TopicAssignment::Auto {
                partitions,
                replication_factor,
            };
            create_cmd(NAMES[name], id, assignment)
        }
        Op::CreateExplicit { name, id, lists } => {
            create_cmd(NAMES[name], id, TopicAssignment::Explicit(lists))
        }
        Op::Delete { name } => MetadataCommand::DeleteTopic(DeleteTopic {
            name: NAMES[name].to_owned(),
        }),
        Op::AddPartitions { name, extra, lists } => {
            let current = image
                .topic_by_name(NAMES[name])
                .map_or(0, |t| t.partitions.len() as u32);
            MetadataCommand::CreatePartitions(CreatePartitions {
                name: NAMES[name].to_owned(),
                total_count: current + extra,
                assignment: lists,
            })
        }
        Op::SetUnclean { name, enabled } => {
            let set = [(
                UNCLEAN_LEADER_ELECTION_CONFIG.to_owned(),
                enabled.to_string(),
            )];
            MetadataCommand::AlterTopicConfigs(AlterTopicConfigs {
                name: NAMES[name].to_owned(),
                set: set.into(),
                remove: vec![],
            })
        }
        other => panic!("{other:?} is not a topic op"),
    }
}

/// An ISR change from the partition's leader at its current epochs, proposing the replicas
/// picked by `mask` (the leader always included, so most proposals pass validation), then
/// spoiled as `tweaks` say: an extra broker, the wrong leader, a stale partition epoch.
fn resolve_alter_isr(
    image: &MetadataImage,
    name: &str,
    mut command: AlterPartition,
    tweaks: (u8, Option<BrokerId>, bool, bool),
) -> MetadataCommand {
    let (mask, extra, wrong_leader, stale_partition_epoch) = tweaks;
    let topic = image.topic_by_name(name);
    if let Some(topic) = topic {
        command.topic_id = topic.topic_id;
    }
    if let Some(p) = topic.and_then(|t| t.partition(command.partition)) {
        let leader = p.leader.unwrap_or(0);
        command.leader_id = leader + i32::from(wrong_leader);
        command.leader_epoch = p.leader_epoch;
        command.partition_epoch = p.partition_epoch - i32::from(stale_partition_epoch);
        command.new_isr = (p.replicas.iter().enumerate())
            .filter(|&(i, &b)| mask & (1 << i) != 0 || b == leader)
            .map(|(_, &b)| b)
            .collect();
    }
    command.new_isr.extend(extra);
    // Every member fetched at its current broker epoch (the stale-epoch refusal has its own
    // tests in `partition`).
    command.member_epochs = command
        .new_isr
        .iter()
        .filter_map(|&b| Some((b, image.broker(b)?.broker_epoch)))
        .collect();
    MetadataCommand::AlterPartition(command)
}

fn no_duplicates(list: &[BrokerId]) -> bool {
    list.iter().collect::<BTreeSet<_>>().len() == list.len()
}

/// Invariants of one image on its own.
fn check_image(image: &MetadataImage) -> Result<(), TestCaseError> {
    let unfenced = |b: BrokerId| image.broker(b).is_some_and(|r| !r.fenced);
    for topic in image.topics() {
        let by_id = image.topic_by_id(&topic.topic_id).map(|t| t.name.as_str());
        prop_assert_eq!(by_id, Some(topic.name.as_str()));
        prop_assert!(!topic.partitions.is_empty());
        let factor = topic.partitions[0].replicas.len();
        for p in &topic.partitions {
            prop_assert!(
                !p.replicas.is_empty() && p.replicas.len() == factor,
                "{:?}",
                p
            );
            prop_assert!(
                no_duplicates(&p.replicas) && no_duplicates(&p.isr),
                "{:?}",
                p
            );
            prop_assert!(p.isr.iter().all(|b| p.replicas.contains(b)), "{:?}", p);
            prop_assert!(no_duplicates(&p.elr), "{:?}", p);
            prop_assert!(p.elr.iter().all(|b| p.replicas.contains(b)), "{:?}", p);
            prop_assert!(p.elr.iter().all(|b| !p.isr.contains(b)), "{:?}", p);
            prop_assert!(
                p.isr.is_empty() || p.last_known_elr.is_empty(),
                "a last known ELR beside an ISR: {:?}",
                p
            );
            match p.leader {
                Some(leader) => {
                    prop_assert!(p.isr.contains(&leader) && unfenced(leader), "{:?}", p)
                }
                // Offline only when no ISR member, or with an empty ISR no ELR member, could
                // lead.
                None => {
                    prop_assert!(!p.isr.iter().any(|&b| unfenced(b)), "{:?}", p);
                    if p.isr.is_empty() {
                        prop_assert!(!p.elr.iter().any(|&b| unfenced(b)), "{:?}", p);
                    }
                }
            }
            // With eligible leader replicas a fenced broker leaves the ISR, even as its last
            // member (it waits in the ELR instead).
            prop_assert!(p.isr.iter().all(|&b| unfenced(b)), "{:?}", p);
        }
    }
    Ok(())
}

/// Invariants of one step from `old` to `new`.
fn check_step(
    old: &MetadataImage,
    new: &MetadataImage,
    offset: u64,
    response: &MetadataResponse,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(new.metadata_offset(), offset);
    if matches!(response, MetadataResponse::Rejected(_)) {
        let mut unchanged = new.clone();
        unchanged.advance(old.metadata_offset());
        prop_assert_eq!(&unchanged, old, "rejected {:?} changed the image", response);
    }
    prop_assert!(new.next_producer_id() >= old.next_producer_id());
    for broker in old.brokers() {
        let now = new.broker(broker.broker_id).map(|b| b.broker_epoch);
        prop_assert!(now >= Some(broker.broker_epoch));
    }
    for topic in new.topics() {
        let Some(before) = old.topic_by_id(&topic.topic_id) else {
            continue;
        };
        for (a, b) in before.partitions.iter().zip(&topic.partitions) {
            prop_assert_eq!(&a.replicas, &b.replicas);
            let leader_moved = a.leader != b.leader;
            let changed = leader_moved
                || a.isr != b.isr
                || a.elr != b.elr
                || a.last_known_elr != b.last_known_elr
                || a.leader_epoch != b.leader_epoch;
            prop_assert_eq!(b.partition_epoch, a.partition_epoch + i32::from(changed));
            prop_assert!(b.leader_epoch == a.leader_epoch || b.leader_epoch == a.leader_epoch + 1);
            if leader_moved {
                prop_assert_eq!(b.leader_epoch, a.leader_epoch + 1);
            }
        }
    }
    Ok(())
}

/// Four brokers and a topic to start from, so random commands mostly meet existing things.
fn setup() -> Vec<Op> {
    let mut ops: Vec<Op> = (0..4)
        .map(|broker| Op::Register {
            broker,
            incarnation: 0,
            rack: u8::try_from(broker % 2).ok(),
            clean: true,
        })
        .collect();
    ops.push(Op::CreateAuto {
        name: 0,
        id: 1,
        partitions: 3,
        replication_factor: 3,
    });
    ops
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_command_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..60)) {
        let mut image = MetadataImage::default();
        let mut replay = MetadataImage::default();
        for (index, op) in setup().into_iter().chain(ops).enumerate() {
            let offset = index as u64 + 1;
            let command = resolve(&image, op);
            let old = image.clone();
            let response = image.apply(offset, &command);
            check_image(&image)?;
            check_step(&old, &image, offset, &response)?;
            // Determinism: another replica applying the same entry answers and ends the same.
            prop_assert_eq!(replay.apply(offset, &command), response);
            prop_assert_eq!(&replay, &image);
        }
        let json = serde_json::to_vec(&image).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decoded: MetadataImage =
            serde_json::from_slice(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded, image);
    }
}
