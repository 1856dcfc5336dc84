//! What changed for one broker's replicas between two images: the broker compares the image
//! before and after applying metadata and acts on the difference ("I became leader of P at
//! epoch E", "stop replicating Q").

use super::{MetadataImage, PartitionRecord, TopicRecord};
use crate::command::{BrokerId, TopicId};

/// One change to a replica hosted by the broker passed to [`local_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalChange {
    /// The broker leads the partition from `leader_epoch` on.
    BecameLeader {
        topic_id: TopicId,
        topic: String,
        partition: u32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// The broker follows `leader` (or waits, if the partition has none) from `leader_epoch` on.
    BecameFollower {
        topic_id: TopicId,
        topic: String,
        partition: u32,
        leader: Option<BrokerId>,
        leader_epoch: i32,
    },
    /// The broker still leads and its ISR changed; the leader needs it for the high watermark
    /// and the partition epoch for its next ISR change. Not reported to followers.
    IsrChanged {
        topic_id: TopicId,
        topic: String,
        partition: u32,
        isr: Vec<BrokerId>,
        partition_epoch: i32,
    },
    /// The broker no longer hosts the partition: its topic is gone or it is no longer a replica.
    Removed {
        topic_id: TopicId,
        topic: String,
        partition: u32,
    },
}

/// What changed for `broker_id`'s replicas from `old` to `new`.
///
/// Removals come first, so a broker stops a deleted topic's replicas before it starts those of a
/// topic recreated under the same name (topics are matched by id, not name). Then, topic by
/// name and partition by number: a partition is reported when it is new for this broker or its
/// leader or leader epoch changed, and [`LocalChange::IsrChanged`] when only the ISR of a
/// partition this broker leads changed.
pub fn local_changes(
    old: &MetadataImage,
    new: &MetadataImage,
    broker_id: BrokerId,
) -> Vec<LocalChange> {
    let mut changes = Vec::new();
    for topic in old.topics() {
        let survivor = new.topic_by_id(&topic.topic_id);
        for (partition, _) in hosted(topic, broker_id) {
            let still_hosted = survivor
                .and_then(|t| t.partition(partition))
                .is_some_and(|p| p.replicas.contains(&broker_id));
            if !still_hosted {
                changes.push(LocalChange::Removed {
                    topic_id: topic.topic_id,
                    topic: topic.name.clone(),
                    partition,
                });
            }
        }
    }
    for topic in new.topics() {
        let previous = old.topic_by_id(&topic.topic_id);
        for (partition, record) in hosted(topic, broker_id) {
            let before = previous
                .and_then(|t| t.partition(partition))
                .filter(|p| p.replicas.contains(&broker_id));
            if let Some(change) = partition_change(topic, partition, before, record, broker_id) {
                changes.push(change);
            }
        }
    }
    changes
}

/// The partitions of `topic` that `broker_id` replicates, with their numbers.
fn hosted(
    topic: &TopicRecord,
    broker_id: BrokerId,
) -> impl Iterator<Item = (u32, &PartitionRecord)> {
    topic
        .partitions
        .iter()
        .enumerate()
        .filter(move |(_, p)| p.replicas.contains(&broker_id))
        .map(|(index, p)| (u32::try_from(index).unwrap_or(u32::MAX), p))
}

fn partition_change(
    topic: &TopicRecord,
    partition: u32,
    before: Option<&PartitionRecord>,
    after: &PartitionRecord,
    broker_id: BrokerId,
) -> Option<LocalChange> {
    let leads = after.leader == Some(broker_id);
    let leadership_changed =
        before.is_none_or(|b| b.leader != after.leader || b.leader_epoch != after.leader_epoch);
    if leadership_changed && leads {
        return Some(LocalChange::BecameLeader {
            topic_id: topic.topic_id,
            topic: topic.name.clone(),
            partition,
            leader_epoch: after.leader_epoch,
            partition_epoch: after.partition_epoch,
        });
    }
    if leadership_changed {
        return Some(LocalChange::BecameFollower {
            topic_id: topic.topic_id,
            topic: topic.name.clone(),
            partition,
            leader: after.leader,
            leader_epoch: after.leader_epoch,
        });
    }
    let isr_changed = before.is_some_and(|b| b.isr != after.isr);
    if leads && isr_changed {
        return Some(LocalChange::IsrChanged {
            topic_id: topic.topic_id,
            topic: topic.name.clone(),
            partition,
            isr: after.isr.clone(),
            partition_epoch: after.partition_epoch,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{local_changes, LocalChange};
    use crate::command::{AlterPartition, DeleteTopic, MetadataCommand, TopicId};
    use crate::image::test_support::Harness;
    use crate::image::MetadataImage;

    const T: TopicId = TopicId([1; 16]);

    fn leader(partition: u32, leader_epoch: i32, partition_epoch: i32) -> LocalChange {
        LocalChange::BecameLeader {
            topic_id: T,
            topic: "t".to_owned(),
            partition,
            leader_epoch,
            partition_epoch,
        }
    }

    fn follower(partition: u32, leader: Option<i32>, leader_epoch: i32) -> LocalChange {
        LocalChange::BecameFollower {
            topic_id: T,
            topic: "t".to_owned(),
            partition,
            leader,
            leader_epoch,
        }
    }

    fn removed(topic_id: TopicId, partition: u32) -> LocalChange {
        LocalChange::Removed {
            topic_id,
            topic: "t".to_owned(),
            partition,
        }
    }

    fn cluster() -> Harness {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.create("t", 1, vec![vec![1, 2], vec![2, 3]]);
        h
    }

    #[test]
    fn new_partitions_report_leadership_or_followership() {
        let h = cluster();
        let empty = MetadataImage::default();
        assert_eq!(local_changes(&empty, &h.image, 1), [leader(0, 0, 0)]);
        assert_eq!(
            local_changes(&empty, &h.image, 2),
            [follower(0, Some(1), 0), leader(1, 0, 0)]
        );
        assert_eq!(local_changes(&empty, &h.image, 4), []);
    }

    #[test]
    fn leadership_moves_are_reported_to_the_replicas_still_hosting_the_partition() {
        let mut h = cluster();
        let old = h.image.clone();
        h.fence(1);
        assert_eq!(local_changes(&old, &h.image, 2), [leader(0, 1, 1)]);
        // Broker 1 is still a replica (out of the ISR): it follows 2 at the new epoch.
        assert_eq!(local_changes(&old, &h.image, 1), [follower(0, Some(2), 1)]);
        assert_eq!(local_changes(&old, &h.image, 3), []);
        assert_eq!(local_changes(&h.image, &h.image, 2), []);
    }

    #[test]
    fn isr_changes_are_reported_to_the_leader_only() {
        let mut h = cluster();
        let old = h.image.clone();
        h.apply(MetadataCommand::AlterPartition(AlterPartition {
            topic_id: T,
            partition: 1,
            leader_id: 2,
            leader_epoch: 0,
            partition_epoch: 0,
            new_isr: vec![2],
            member_epochs: Default::default(),
        }));
        assert_eq!(
            local_changes(&old, &h.image, 2),
            [LocalChange::IsrChanged {
                topic_id: T,
                topic: "t".to_owned(),
                partition: 1,
                isr: vec![2],
                partition_epoch: 1,
            }]
        );
        assert_eq!(local_changes(&old, &h.image, 3), []);
    }

    #[test]
    fn a_deleted_and_recreated_topic_is_removed_before_it_is_started_again() {
        let mut h = cluster();
        let old = h.image.clone();
        h.apply(MetadataCommand::DeleteTopic(DeleteTopic {
            name: "t".to_owned(),
        }));
        h.create("t", 2, vec![vec![3, 2]]);
        assert_eq!(
            local_changes(&old, &h.image, 2),
            [
                removed(T, 0),
                removed(T, 1),
                LocalChange::BecameFollower {
                    topic_id: TopicId([2; 16]),
                    topic: "t".to_owned(),
                    partition: 0,
                    leader: Some(3),
                    leader_epoch: 0,
                },
            ]
        );
        assert_eq!(local_changes(&old, &h.image, 1), [removed(T, 0)]);
    }
}
