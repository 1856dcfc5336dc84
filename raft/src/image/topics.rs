//! Topics: creation (explicit or automatic placement), deletion, added partitions and topic
//! configs, with the validation Kafka applies to each.

use super::partition::PartitionChange;
use super::placement::{self, Candidate};
use super::{
    effective_min_isr, is_unfenced, unclean_enabled, MetadataImage, PartitionRecord, TopicRecord,
};
use crate::command::{
    AlterTopicConfigs, AssignmentProblem, BrokerId, CreatePartitions, CreateTopic, DeleteTopic,
    MetadataResponse, Rejection, TopicAssignment, TopicNameProblem, MAX_PARTITIONS_PER_TOPIC,
};

/// Kafka's longest topic name.
const MAX_TOPIC_NAME_LEN: usize = 249;

impl MetadataImage {
    pub(super) fn create_topic(
        &mut self,
        cmd: &CreateTopic,
    ) -> Result<MetadataResponse, Rejection> {
        validate_topic_name(&cmd.name)?;
        if self.topics.contains_key(&cmd.name) {
            return Err(Rejection::TopicAlreadyExists {
                name: cmd.name.clone(),
            });
        }
        if cmd.topic_id.is_zero() {
            return Err(Rejection::InvalidTopicId {
                topic_id: cmd.topic_id,
            });
        }
        if self.topic_names.contains_key(&cmd.topic_id)
            || self.deleted_topic_ids.contains(&cmd.topic_id)
        {
            return Err(Rejection::DuplicateTopicId {
                topic_id: cmd.topic_id,
            });
        }
        let assignments = match &cmd.assignment {
            TopicAssignment::Explicit(lists) => {
                check_partition_count(count_u32(lists.len()), 0)?;
                self.validate_explicit(lists, 0, None)?;
                lists.clone()
            }
            TopicAssignment::Auto {
                partitions,
                replication_factor,
            } => {
                check_partition_count(*partitions, 0)?;
                self.place(*partitions, usize::from(*replication_factor))?
            }
        };
        let partitions = assignments
            .iter()
            .map(|replicas| self.new_partition(replicas))
            .collect();
        self.topics.insert(
            cmd.name.clone(),
            TopicRecord {
                topic_id: cmd.topic_id,
                name: cmd.name.clone(),
                configs: cmd.configs.clone(),
                partitions,
            },
        );
        self.topic_names.insert(cmd.topic_id, cmd.name.clone());
        Ok(MetadataResponse::TopicCreated {
            topic_id: cmd.topic_id,
            assignments,
        })
    }

    pub(super) fn delete_topic(
        &mut self,
        cmd: &DeleteTopic,
    ) -> Result<MetadataResponse, Rejection> {
        let topic = self
            .topics
            .remove(&cmd.name)
            .ok_or_else(|| unknown_topic(&cmd.name))?;
        self.topic_names.remove(&topic.topic_id);
        self.deleted_topic_ids.insert(topic.topic_id);
        Ok(MetadataResponse::TopicDeleted {
            topic_id: topic.topic_id,
        })
    }

    pub(super) fn create_partitions(
        &mut self,
        cmd: &CreatePartitions,
    ) -> Result<MetadataResponse, Rejection> {
        let topic = self
            .topics
            .get(&cmd.name)
            .ok_or_else(|| unknown_topic(&cmd.name))?;
        let current = count_u32(topic.partitions.len());
        check_partition_count(cmd.total_count, current)?;
        let added = cmd.total_count - current;
        // Every partition of a topic has the replication factor of its first one.
        let replication_factor = topic.partitions.first().map_or(0, |p| p.replicas.len());
        let assignments = match &cmd.assignment {
            Some(lists) => {
                if lists.len() != added as usize {
                    return Err(Rejection::WrongAssignmentCount {
                        expected: added,
                        found: count_u32(lists.len()),
                    });
                }
                self.validate_explicit(lists, current, Some(replication_factor))?;
                lists.clone()
            }
            None => self.place(added, replication_factor)?,
        };
        let partitions: Vec<PartitionRecord> = assignments
            .iter()
            .map(|replicas| self.new_partition(replicas))
            .collect();
        if let Some(topic) = self.topics.get_mut(&cmd.name) {
            topic.partitions.extend(partitions);
        }
        Ok(MetadataResponse::PartitionsCreated { assignments })
    }

    pub(super) fn alter_topic_configs(
        &mut self,
        cmd: &AlterTopicConfigs,
    ) -> Result<MetadataResponse, Rejection> {
        let brokers = &self.brokers;
        let topic = self
            .topics
            .get_mut(&cmd.name)
            .ok_or_else(|| unknown_topic(&cmd.name))?;
        for (key, value) in &cmd.set {
            topic.configs.insert(key.clone(), value.clone());
        }
        for key in &cmd.remove {
            topic.configs.remove(key);
        }
        // Enabling unclean election is how an operator revives offline partitions, so it acts
        // at once rather than waiting for the next fence or registration. A new
        // `min.insync.replicas` may make an ISR full-sized, which clears its ELR: the leader
        // advances the high watermark from now on without the ELR members.
        let unclean = unclean_enabled(&topic.configs);
        let eligible = |b: BrokerId| is_unfenced(brokers, b);
        for partition in &mut topic.partitions {
            let min_isr = effective_min_isr(&topic.configs, partition.replicas.len());
            let mut change = PartitionChange::of(partition, min_isr);
            change.set_isr(partition.isr.clone());
            if unclean {
                change.elect_if_leaderless(&partition.replicas, true, &eligible);
            }
            change.commit(partition);
        }
        Ok(MetadataResponse::Ok)
    }

    /// A new partition starts with its unfenced replicas in sync (it has no data yet) and the
    /// first of them leading.
    fn new_partition(&self, replicas: &[BrokerId]) -> PartitionRecord {
        let isr: Vec<BrokerId> = replicas
            .iter()
            .copied()
            .filter(|&b| is_unfenced(&self.brokers, b))
            .collect();
        PartitionRecord {
            replicas: replicas.to_vec(),
            leader: isr.first().copied(),
            isr,
            elr: Vec::new(),
            last_known_elr: Vec::new(),
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    /// Automatic placement over the unfenced brokers, continuing the cluster's round robin.
    fn place(
        &self,
        partitions: u32,
        replication_factor: usize,
    ) -> Result<Vec<Vec<BrokerId>>, Rejection> {
        let candidates: Vec<Candidate<'_>> = self
            .unfenced_brokers()
            .map(|broker| Candidate {
                broker_id: broker.broker_id,
                rack: broker.rack.as_deref(),
            })
            .collect();
        if replication_factor == 0 || replication_factor > candidates.len() {
            return Err(Rejection::InvalidReplicationFactor {
                requested: count_u32(replication_factor),
                available: count_u32(candidates.len()),
            });
        }
        let existing: u64 = self
            .topics
            .values()
            .map(|t| t.partitions.len() as u64)
            .sum();
        Ok(placement::place(
            &candidates,
            partitions,
            replication_factor,
            existing,
        ))
    }

    /// Checks operator-chosen replica lists; `first_partition` numbers them in errors and
    /// `replication_factor` is the topic's, if it already has partitions.
    fn validate_explicit(
        &self,
        lists: &[Vec<BrokerId>],
        first_partition: u32,
        replication_factor: Option<usize>,
    ) -> Result<(), Rejection> {
        let expected = replication_factor.or_else(|| lists.first().map(Vec::len));
        for (index, replicas) in lists.iter().enumerate() {
            let partition = first_partition.saturating_add(count_u32(index));
            let problem = self.replica_list_problem(replicas, expected);
            if let Some(problem) = problem {
                return Err(Rejection::InvalidReplicaAssignment { partition, problem });
            }
        }
        Ok(())
    }

    pub(super) fn replica_list_problem(
        &self,
        replicas: &[BrokerId],
        expected_len: Option<usize>,
    ) -> Option<AssignmentProblem> {
        if replicas.is_empty() {
            return Some(AssignmentProblem::NoReplicas);
        }
        for (index, &broker) in replicas.iter().enumerate() {
            if replicas[..index].contains(&broker) {
                return Some(AssignmentProblem::DuplicateReplica(broker));
            }
            if !self.brokers.contains_key(&broker) {
                return Some(AssignmentProblem::UnknownBroker(broker));
            }
        }
        if let Some(expected) = expected_len.filter(|&expected| expected != replicas.len()) {
            return Some(AssignmentProblem::InconsistentReplicationFactor {
                expected: count_u32(expected),
                found: count_u32(replicas.len()),
            });
        }
        // Fenced replicas are allowed (Kafka allows them), but a partition must start with a
        // leader, otherwise it would be born offline with an empty ISR.
        if !replicas.iter().any(|&b| is_unfenced(&self.brokers, b)) {
            return Some(AssignmentProblem::AllReplicasFenced);
        }
        None
    }
}

/// Kafka's topic name rules: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), Rejection> {
    let invalid = |problem| Rejection::InvalidTopicName {
        name: name.to_owned(),
        problem,
    };
    if name.is_empty() {
        return Err(invalid(TopicNameProblem::Empty));
    }
    if name == "." || name == ".." {
        return Err(invalid(TopicNameProblem::Reserved));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(TopicNameProblem::IllegalCharacter(c)));
    }
    // Checked after the characters, so the length in bytes is the length in characters.
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(invalid(TopicNameProblem::TooLong));
    }
    Ok(())
}

/// A new partition count must grow the topic and stay within the per-topic bound.
fn check_partition_count(requested: u32, current: u32) -> Result<(), Rejection> {
    if requested <= current || requested > MAX_PARTITIONS_PER_TOPIC {
        return Err(Rejection::InvalidPartitions { requested, current });
    }
    Ok(())
}

fn unknown_topic(name: &str) -> Rejection {
    Rejection::UnknownTopic {
        name: name.to_owned(),
    }
}

/// Collection lengths reported in `u32` fields; saturating keeps absurd inputs rejectable.
fn count_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_rejected, create_cmd, Harness};
    use super::super::UNCLEAN_LEADER_ELECTION_CONFIG;
    use crate::command::{
        AlterPartition, AlterTopicConfigs, AssignmentProblem, CreatePartitions, DeleteTopic,
        MetadataCommand, MetadataResponse, Rejection, TopicAssignment, TopicId, TopicNameProblem,
        MAX_PARTITIONS_PER_TOPIC,
    };

    fn explicit(lists: Vec<Vec<i32>>) -> TopicAssignment {
        TopicAssignment::Explicit(lists)
    }

    fn auto(partitions: u32, replication_factor: u16) -> TopicAssignment {
        TopicAssignment::Auto {
            partitions,
            replication_factor,
        }
    }

    fn add_partitions(
        name: &str,
        total_count: u32,
        lists: Option<Vec<Vec<i32>>>,
    ) -> MetadataCommand {
        MetadataCommand::CreatePartitions(CreatePartitions {
            name: name.to_owned(),
            total_count,
            assignment: lists,
        })
    }

    fn invalid_assignment(partition: u32, problem: AssignmentProblem) -> Rejection {
        Rejection::InvalidReplicaAssignment { partition, problem }
    }

    #[test]
    fn explicit_creation_starts_every_replica_in_sync_with_the_first_leading() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        let response = h.create("orders", 5, vec![vec![2, 1], vec![3, 2]]);
        assert_eq!(
            response,
            MetadataResponse::TopicCreated {
                topic_id: TopicId([5; 16]),
                assignments: vec![vec![2, 1], vec![3, 2]],
            }
        );
        let topic = h
            .image
            .topic_by_id(&TopicId([5; 16]))
            .expect("indexed by id");
        assert_eq!(topic.name, "orders");
        let p1 = h.partition("orders", 1);
        assert_eq!((p1.leader, p1.isr.clone()), (Some(3), vec![3, 2]));
        assert_eq!((p1.leader_epoch, p1.partition_epoch), (0, 0));
        assert_eq!(h.image.partition(&TopicId([5; 16]), 1), Some(p1));
        assert_eq!(h.image.partition(&TopicId([5; 16]), 2), None);
    }

    #[test]
    fn explicit_creation_accepts_fenced_replicas_outside_the_isr_but_not_only_fenced_ones() {
        let mut h = Harness::with_brokers(&[1, 2]);
        h.fence(1);
        h.create("t", 1, vec![vec![1, 2]]);
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(2), vec![2]));
        assert_rejected(
            &mut h,
            create_cmd("u", 2, explicit(vec![vec![2], vec![1]])),
            invalid_assignment(1, AssignmentProblem::AllReplicasFenced),
        );
    }

    #[test]
    fn illegal_topic_names_are_rejected() {
        let mut h = Harness::with_brokers(&[1]);
        let cases = [
            (String::new(), TopicNameProblem::Empty),
            (".".to_owned(), TopicNameProblem::Reserved),
            ("..".to_owned(), TopicNameProblem::Reserved),
            ("a".repeat(250), TopicNameProblem::TooLong),
            ("a b".to_owned(), TopicNameProblem::IllegalCharacter(' ')),
            ("é".to_owned(), TopicNameProblem::IllegalCharacter('é')),
        ];
        for (name, problem) in cases {
            let expected = Rejection::InvalidTopicName {
                name: name.clone(),
                problem,
            };
            assert_rejected(&mut h, create_cmd(&name, 1, auto(1, 1)), expected);
        }
        let longest = "a".repeat(249);
        let response = h.apply(create_cmd(&longest, 1, auto(1, 1)));
        assert!(matches!(response, MetadataResponse::TopicCreated { .. }));
        let response = h.apply(create_cmd("Ok.name_-9", 2, auto(1, 1)));
        assert!(matches!(response, MetadataResponse::TopicCreated { .. }));
    }

    #[test]
    fn duplicate_names_and_bad_or_reused_ids_are_rejected() {
        let mut h = Harness::with_brokers(&[1]);
        h.create("t", 1, vec![vec![1]]);
        assert_rejected(
            &mut h,
            create_cmd("t", 2, auto(1, 1)),
            Rejection::TopicAlreadyExists {
                name: "t".to_owned(),
            },
        );
        assert_rejected(
            &mut h,
            create_cmd("u", 0, auto(1, 1)),
            Rejection::InvalidTopicId {
                topic_id: TopicId([0; 16]),
            },
        );
        assert_rejected(
            &mut h,
            create_cmd("u", 1, auto(1, 1)),
            Rejection::DuplicateTopicId {
                topic_id: TopicId([1; 16]),
            },
        );
    }

    #[test]
    fn partition_counts_and_replication_factors_are_bounded() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.fence(3);
        let partitions = |requested| Rejection::InvalidPartitions {
            requested,
            current: 0,
        };
        assert_rejected(&mut h, create_cmd("t", 1, auto(0, 1)), partitions(0));
        let too_many = MAX_PARTITIONS_PER_TOPIC + 1;
        assert_rejected(
            &mut h,
            create_cmd("t", 1, auto(too_many, 1)),
            partitions(too_many),
        );
        assert_rejected(&mut h, create_cmd("t", 1, explicit(vec![])), partitions(0));
        let factor = |requested| Rejection::InvalidReplicationFactor {
            requested,
            available: 2,
        };
        assert_rejected(&mut h, create_cmd("t", 1, auto(1, 0)), factor(0));
        // Broker 3 is fenced, so only two brokers can take replicas.
        assert_rejected(&mut h, create_cmd("t", 1, auto(1, 3)), factor(3));
        let response = h.create_auto("t", 1, MAX_PARTITIONS_PER_TOPIC, 2);
        assert!(matches!(response, MetadataResponse::TopicCreated { .. }));
    }

    #[test]
    fn explicit_replica_lists_are_validated() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        let cases = [
            (
                vec![vec![1], vec![]],
                invalid_assignment(1, AssignmentProblem::NoReplicas),
            ),
            (
                vec![vec![1, 2, 1]],
                invalid_assignment(0, AssignmentProblem::DuplicateReplica(1)),
            ),
            (
                vec![vec![1, 9]],
                invalid_assignment(0, AssignmentProblem::UnknownBroker(9)),
            ),
            (
                vec![vec![1, 2], vec![3]],
                invalid_assignment(
                    1,
                    AssignmentProblem::InconsistentReplicationFactor {
                        expected: 2,
                        found: 1,
                    },
                ),
            ),
        ];
        for (lists, expected) in cases {
            assert_rejected(&mut h, create_cmd("t", 1, explicit(lists)), expected);
        }
    }

    #[test]
    fn deleting_a_topic_frees_its_name_and_id_index() {
        let mut h = Harness::with_brokers(&[1]);
        h.create("t", 1, vec![vec![1]]);
        let delete = || {
            MetadataCommand::DeleteTopic(DeleteTopic {
                name: "t".to_owned(),
            })
        };
        assert_eq!(
            h.apply(delete()),
            MetadataResponse::TopicDeleted {
                topic_id: TopicId([1; 16])
            }
        );
        assert!(h.image.topic_by_name("t").is_none());
        assert!(h.image.topic_by_id(&TopicId([1; 16])).is_none());
        assert_rejected(
            &mut h,
            delete(),
            Rejection::UnknownTopic {
                name: "t".to_owned(),
            },
        );
        h.create("t", 2, vec![vec![1]]);
        assert_eq!(h.topic_id("t"), TopicId([2; 16]));
    }

    #[test]
    fn added_partitions_are_placed_with_the_topic_replication_factor() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.create("t", 1, vec![vec![1, 2]]);
        let response = h.apply(add_partitions("t", 4, None));
        let MetadataResponse::PartitionsCreated { assignments } = response else {
            panic!("expected PartitionsCreated, got {response:?}");
        };
        assert_eq!(assignments.len(), 3);
        assert!(assignments.iter().all(|replicas| replicas.len() == 2));
        let topic = h.image.topic_by_name("t").expect("exists");
        assert_eq!(topic.partitions.len(), 4);
        assert_eq!(topic.partitions[3].replicas, assignments[2]);
        assert_eq!(topic.partitions[3].leader, Some(assignments[2][0]));
    }

    #[test]
    fn added_partitions_accept_explicit_lists_for_the_new_ones_only() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.create("t", 1, vec![vec![1, 2]]);
        let response = h.apply(add_partitions("t", 3, Some(vec![vec![3, 1], vec![2, 3]])));
        assert_eq!(
            response,
            MetadataResponse::PartitionsCreated {
                assignments: vec![vec![3, 1], vec![2, 3]]
            }
        );
        assert_eq!(h.partition("t", 2).leader, Some(2));
    }

    #[test]
    fn added_partitions_are_validated() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.create("t", 1, vec![vec![1, 2], vec![2, 3]]);
        let cases = [
            (
                add_partitions("u", 3, None),
                Rejection::UnknownTopic {
                    name: "u".to_owned(),
                },
            ),
            (
                add_partitions("t", 2, None),
                Rejection::InvalidPartitions {
                    requested: 2,
                    current: 2,
                },
            ),
            (
                add_partitions("t", 1, None),
                Rejection::InvalidPartitions {
                    requested: 1,
                    current: 2,
                },
            ),
            (
                add_partitions("t", MAX_PARTITIONS_PER_TOPIC + 1, None),
                Rejection::InvalidPartitions {
                    requested: MAX_PARTITIONS_PER_TOPIC + 1,
                    current: 2,
                },
            ),
            (
                add_partitions("t", 4, Some(vec![vec![1, 2]])),
                Rejection::WrongAssignmentCount {
                    expected: 2,
                    found: 1,
                },
            ),
            (
                add_partitions("t", 4, Some(vec![vec![1, 2], vec![3]])),
                invalid_assignment(
                    3,
                    AssignmentProblem::InconsistentReplicationFactor {
                        expected: 2,
                        found: 1,
                    },
                ),
            ),
            (
                add_partitions("t", 3, Some(vec![vec![1, 7]])),
                invalid_assignment(2, AssignmentProblem::UnknownBroker(7)),
            ),
        ];
        for (command, expected) in cases {
            assert_rejected(&mut h, command, expected);
        }
        h.fence(3);
        h.fence(2);
        assert_rejected(
            &mut h,
            add_partitions("t", 3, None),
            Rejection::InvalidReplicationFactor {
                requested: 2,
                available: 1,
            },
        );
    }

    #[test]
    fn configs_are_set_then_removed() {
        let mut h = Harness::with_brokers(&[1]);
        h.create("t", 1, vec![vec![1]]);
        let alter = |set: &[(&str, &str)], remove: &[&str]| {
            MetadataCommand::AlterTopicConfigs(AlterTopicConfigs {
                name: "t".to_owned(),
                set: set
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                remove: remove.iter().map(|k| (*k).to_owned()).collect(),
            })
        };
        let response = h.apply(alter(
            &[("retention.ms", "5"), ("cleanup.policy", "compact")],
            &[],
        ));
        assert_eq!(response, MetadataResponse::Ok);
        h.apply(alter(
            &[("retention.ms", "7"), ("segment.ms", "1")],
            &["cleanup.policy", "segment.ms"],
        ));
        let configs = &h.image.topic_by_name("t").expect("exists").configs;
        assert_eq!(
            configs.iter().collect::<Vec<_>>(),
            [(&"retention.ms".to_owned(), &"7".to_owned())]
        );
        let mut unknown = alter(&[], &[]);
        if let MetadataCommand::AlterTopicConfigs(cmd) = &mut unknown {
            cmd.name = "u".to_owned();
        }
        assert_rejected(
            &mut h,
            unknown,
            Rejection::UnknownTopic {
                name: "u".to_owned(),
            },
        );
    }

    #[test]
    fn enabling_unclean_election_revives_offline_partitions_at_once() {
        let mut h = Harness::with_brokers(&[1, 2]);
        h.create("t", 1, vec![vec![1, 2]]);
        let p = h.partition("t", 0).clone();
        h.apply(MetadataCommand::AlterPartition(AlterPartition {
            topic_id: h.topic_id("t"),
            partition: 0,
            leader_id: 1,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: vec![1],
            member_epochs: Default::default(),
        }));
        h.fence(1);
        assert_eq!(h.partition("t", 0).leader, None);
        h.apply(MetadataCommand::AlterTopicConfigs(AlterTopicConfigs {
            name: "t".to_owned(),
            set: [(UNCLEAN_LEADER_ELECTION_CONFIG.to_owned(), "TRUE".to_owned())].into(),
            remove: vec![],
        }));
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(2), vec![2]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (2, 3));
    }

    #[test]
    fn a_deleted_topic_id_is_never_reused() {
        let mut h = Harness::with_brokers(&[1]);
        h.create("t", 1, vec![vec![1]]);
        h.apply(MetadataCommand::DeleteTopic(DeleteTopic {
            name: "t".to_owned(),
        }));
        // A retried create of the old topic (same id) must not bring it back.
        assert_rejected(
            &mut h,
            create_cmd("t", 1, TopicAssignment::Explicit(vec![vec![1]])),
            Rejection::DuplicateTopicId {
                topic_id: TopicId([1; 16]),
            },
        );
        // The rule survives a snapshot round trip.
        let json = serde_json::to_vec(&h.image).unwrap();
        let restored: crate::MetadataImage = serde_json::from_slice(&json).unwrap();
        assert_eq!(restored, h.image);
    }
}
