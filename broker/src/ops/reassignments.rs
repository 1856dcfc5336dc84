//! Partition reassignments (Kafka's KIP-455): moves and cancellations are one
//! `AlterReassignments` metadata command for the whole batch; the controller's state machine
//! completes each move once its target replicas are in sync. Listing reads this broker's image.

use streambus_raft::command::{AlterReassignments, BrokerId, Reassignment};
use streambus_raft::{MetadataCommand, MetadataImage, MetadataResponse};

use super::OpsError;
use crate::context::BrokerContext;

/// Move one partition to `target`, or (`None`) cancel its reassignment in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMove {
    pub topic: String,
    pub partition: i32,
    /// The replicas the partition should end with, preferred leader first.
    pub target: Option<Vec<BrokerId>>,
}

/// Whether a move may change the number of replicas of its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationFactorChange {
    Allowed,
    Refused,
}

/// A partition's reassignment in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub partition: u32,
    /// Every replica, target and leaving ones alike.
    pub replicas: Vec<BrokerId>,
    pub adding: Vec<BrokerId>,
    pub removing: Vec<BrokerId>,
}

/// The reassignments in progress of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReassignments {
    pub topic: String,
    pub partitions: Vec<OngoingReassignment>,
}

/// Starts or cancels `moves` as one metadata command; one outcome per move, in order. A move of
/// an unknown partition, or one changing the replication factor when that is refused, is not
/// sent; a failed write fails every move sent.
pub async fn alter_reassignments(
    ctx: &BrokerContext,
    moves: Vec<PartitionMove>,
    replication_factor: ReplicationFactorChange,
) -> Vec<Result<(), OpsError>> {
    let image = ctx.image();
    let mut outcomes: Vec<Result<(), OpsError>> = Vec::with_capacity(moves.len());
    // The outcome slot of each move sent.
    let mut sent = Vec::new();
    let mut reassignments = Vec::new();
    for wanted in moves {
        match checked(&image, wanted, replication_factor) {
            Ok(reassignment) => {
                sent.push(outcomes.len());
                outcomes.push(Ok(()));
                reassignments.push(reassignment);
            }
            Err(error) => outcomes.push(Err(error)),
        }
    }
    if reassignments.is_empty() {
        return outcomes;
    }
    let command = MetadataCommand::AlterReassignments(AlterReassignments { reassignments });
    match ctx.write(command).await {
        Ok(MetadataResponse::ReassignmentsAltered { results }) => {
            for (slot, result) in sent.into_iter().zip(results) {
                outcomes[slot] = result.map_err(OpsError::Rejected);
            }
        }
        outcome => {
            let error = match outcome {
                Err(error) => OpsError::from(error),
                Ok(other) => OpsError::UnexpectedAnswer(format!("{other:?}")),
            };
            for slot in sent {
                outcomes[slot] = Err(error.clone());
            }
        }
    }
    outcomes
}

/// The reassignments in progress, topic by topic in the image's order; `wanted` restricts them
/// to these `(topic, partition)` pairs.
pub fn list_reassignments(
    ctx: &BrokerContext,
    wanted: Option<&[(String, u32)]>,
) -> Vec<TopicReassignments> {
    ongoing(&ctx.image(), wanted)
}

/// The reassignment `wanted` asks for, checked against `image`.
fn checked(
    image: &MetadataImage,
    wanted: PartitionMove,
    replication_factor: ReplicationFactorChange,
) -> Result<Reassignment, OpsError> {
    let current = u32::try_from(wanted.partition).ok().and_then(|index| {
        let partition = image.topic_by_name(&wanted.topic)?.partition(index)?;
        Some((index, partition))
    });
    let Some((index, current)) = current else {
        return Err(OpsError::UnknownPartition {
            topic: wanted.topic,
            partition: wanted.partition,
        });
    };
    let original_count = current.replicas.len() - current.adding_replicas.len();
    let changes_count = wanted
        .target
        .as_ref()
        .is_some_and(|target| target.len() != original_count);
    if replication_factor == ReplicationFactorChange::Refused && changes_count {
        return Err(OpsError::InvalidReplicationFactor(format!(
            "partition {} of `{}` has {original_count} replicas; changing the replication \
             factor was not allowed",
            wanted.partition, wanted.topic
        )));
    }
    Ok(Reassignment {
        topic: wanted.topic,
        partition: index,
        target: wanted.target,
    })
}

fn ongoing(image: &MetadataImage, wanted: Option<&[(String, u32)]>) -> Vec<TopicReassignments> {
    let is_wanted = |topic: &str, index: u32| {
        wanted.is_none_or(|pairs| pairs.iter().any(|(t, i)| t == topic && *i == index))
    };
    image
        .topics()
        .filter_map(|topic| {
            let partitions: Vec<OngoingReassignment> = topic
                .partitions
                .iter()
                .zip(0u32..)
                .filter(|(p, index)| p.is_reassigning() && is_wanted(&topic.name, *index))
                .map(|(p, index)| OngoingReassignment {
                    partition: index,
                    replicas: p.replicas.clone(),
                    adding: p.adding_replicas.clone(),
                    removing: p.removing_replicas.clone(),
                })
                .collect();
            (!partitions.is_empty()).then(|| TopicReassignments {
                topic: topic.name.clone(),
                partitions,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use streambus_raft::command::{CreateTopic, IncarnationId, RegisterBroker, TopicAssignment};

    use super::*;

    /// An image with brokers 1..=3 and topic `t` of two partitions on brokers 1 and 2.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        let mut apply = |command: MetadataCommand| {
            let offset = image.metadata_offset() + 1;
            let response = image.apply(offset, &command);
            assert!(
                !matches!(response, MetadataResponse::Rejected(_)),
                "{response:?}"
            );
        };
        for broker_id in 1..=3 {
            apply(MetadataCommand::RegisterBroker(RegisterBroker {
                broker_id,
                incarnation_id: IncarnationId([broker_id as u8; 16]),
                endpoints: Vec::new(),
                rack: None,
                now_ms: 0,
                previous_broker_epoch: None,
            }));
        }
        apply(MetadataCommand::CreateTopic(CreateTopic {
            name: "t".to_owned(),
            topic_id: crate::ops::topics::new_topic_id(),
            assignment: TopicAssignment::Explicit(vec![vec![1, 2], vec![2, 1]]),
            configs: Default::default(),
        }));
        image
    }

    fn to(topic: &str, partition: i32, target: Option<&[BrokerId]>) -> PartitionMove {
        PartitionMove {
            topic: topic.to_owned(),
            partition,
            target: target.map(<[BrokerId]>::to_vec),
        }
    }

    #[test]
    fn unknown_partitions_are_refused() {
        let image = image();
        for wanted in [
            to("t", 2, Some(&[1, 2])),
            to("t", -1, None),
            to("u", 0, None),
        ] {
            assert!(
                matches!(
                    checked(&image, wanted.clone(), ReplicationFactorChange::Allowed),
                    Err(OpsError::UnknownPartition { .. })
                ),
                "{wanted:?}"
            );
        }
    }

    #[test]
    fn a_replication_factor_change_needs_permission() {
        let image = image();
        let grow = to("t", 0, Some(&[1, 2, 3]));
        assert!(matches!(
            checked(&image, grow.clone(), ReplicationFactorChange::Refused),
            Err(OpsError::InvalidReplicationFactor(_))
        ));
        let allowed = checked(&image, grow, ReplicationFactorChange::Allowed).unwrap();
        assert_eq!(allowed.target, Some(vec![1, 2, 3]));
        // Same count, and cancellations, need none.
        checked(
            &image,
            to("t", 0, Some(&[3, 1])),
            ReplicationFactorChange::Refused,
        )
        .unwrap();
        checked(&image, to("t", 1, None), ReplicationFactorChange::Refused).unwrap();
    }

    #[test]
    fn listing_shows_only_partitions_being_moved() {
        let mut image = image();
        assert!(ongoing(&image, None).is_empty());
        let command = MetadataCommand::AlterReassignments(AlterReassignments {
            reassignments: vec![Reassignment {
                topic: "t".to_owned(),
                partition: 1,
                target: Some(vec![3, 1]),
            }],
        });
        image.apply(image.metadata_offset() + 1, &command);
        let listed = ongoing(&image, None);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].topic, "t");
        assert_eq!(listed[0].partitions.len(), 1);
        let moving = &listed[0].partitions[0];
        assert_eq!(moving.partition, 1);
        assert_eq!(moving.adding, vec![3]);
        assert_eq!(moving.removing, vec![2]);
        let other = [("t".to_owned(), 0)];
        assert!(ongoing(&image, Some(&other)).is_empty());
        let this = [("t".to_owned(), 1)];
        assert_eq!(ongoing(&image, Some(&this)), listed);
    }
}
