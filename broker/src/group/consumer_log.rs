//! A KIP-848 consumer group in `__consumer_offsets`, with Kafka's consumer-group records (types
//! 3 to 8): what a call changed written in Kafka's order, a group's deletion, and the replay
//! that rebuilds groups while a partition loads.

use std::collections::HashMap;

use bytes::Bytes;

use super::assignor::Assignment;
use super::classic::{Group, GroupState};
use super::consumer::{ClassicMeta, ConsumerGroup, ConsumerMember, Dirty, MemberState};
use super::records::{
    ClassicMemberMetadata, ClassicProtocol,
    ConsumerGroupCurrentMemberAssignmentValue as CurrentValue, ConsumerGroupKey,
    ConsumerGroupMemberKey, ConsumerGroupMemberMetadataValue as MemberValue,
    ConsumerGroupMetadataValue, ConsumerGroupPartitionMetadataValue,
    ConsumerGroupTargetAssignmentMemberValue as TargetValue,
    ConsumerGroupTargetAssignmentMetadataValue, RecordError, RecordKey, TopicMetadata,
    TopicPartitions,
};
use super::LENGTHS_CHECKED;
use crate::coordinator::CoordinatorRecord;

fn record(key: RecordKey, value: Result<Bytes, RecordError>) -> CoordinatorRecord {
    CoordinatorRecord::new(
        key.encode().expect(LENGTHS_CHECKED),
        value.expect(LENGTHS_CHECKED),
    )
}

fn tombstone(key: RecordKey) -> CoordinatorRecord {
    CoordinatorRecord::tombstone(key.encode().expect(LENGTHS_CHECKED))
}

fn group_key(group: &str) -> ConsumerGroupKey {
    ConsumerGroupKey {
        group: group.to_owned(),
    }
}

fn member_key(group: &str, member: &str) -> ConsumerGroupMemberKey {
    ConsumerGroupMemberKey {
        group: group.to_owned(),
        member_id: member.to_owned(),
    }
}

fn to_wire(assignment: &Assignment) -> Vec<TopicPartitions> {
    assignment
        .iter()
        .map(|(topic_id, partitions)| TopicPartitions {
            topic_id: *topic_id,
            partitions: partitions.iter().copied().collect(),
        })
        .collect()
}

fn from_wire(partitions: &[TopicPartitions]) -> Assignment {
    let mut assignment = Assignment::new();
    for topic in partitions {
        if !topic.partitions.is_empty() {
            assignment
                .entry(topic.topic_id)
                .or_default()
                .extend(topic.partitions.iter().copied());
        }
    }
    assignment
}

fn state_code(state: MemberState) -> i8 {
    match state {
        MemberState::Stable => CurrentValue::STATE_STABLE,
        MemberState::UnrevokedPartitions => CurrentValue::STATE_UNREVOKED_PARTITIONS,
        MemberState::UnreleasedPartitions => CurrentValue::STATE_UNRELEASED_PARTITIONS,
    }
}

fn state_of(code: i8) -> MemberState {
    match code {
        CurrentValue::STATE_UNREVOKED_PARTITIONS => MemberState::UnrevokedPartitions,
        CurrentValue::STATE_UNRELEASED_PARTITIONS => MemberState::UnreleasedPartitions,
        _ => MemberState::Stable,
    }
}

fn member_record(group: &str, member: &ConsumerMember) -> CoordinatorRecord {
    let value = MemberValue {
        instance_id: member.instance_id.clone(),
        rack_id: member.rack_id.clone(),
        client_id: member.client_id.clone(),
        client_host: member.client_host.clone(),
        // Sorted, as Kafka writes them.
        subscribed_topic_names: member.subscribed_topic_names.clone(),
        subscribed_topic_regex: member.subscribed_topic_regex.clone(),
        rebalance_timeout: member.rebalance_timeout_ms,
        server_assignor: member.server_assignor.clone(),
        classic_member_metadata: member.classic.as_ref().map(|c| ClassicMemberMetadata {
            session_timeout: c.session_timeout_ms,
            supported_protocols: c
                .protocols
                .iter()
                .map(|(name, metadata)| ClassicProtocol {
                    name: name.clone(),
                    metadata: metadata.clone(),
                })
                .collect(),
        }),
    };
    record(
        RecordKey::ConsumerGroupMemberMetadata(member_key(group, &member.member_id)),
        value.encode(),
    )
}

fn current_record(group: &str, member: &ConsumerMember) -> CoordinatorRecord {
    let value = CurrentValue {
        member_epoch: member.member_epoch,
        previous_member_epoch: member.previous_member_epoch,
        state: state_code(member.state),
        assigned_partitions: to_wire(&member.assigned),
        partitions_pending_revocation: to_wire(&member.pending_revocation),
    };
    record(
        RecordKey::ConsumerGroupCurrentMemberAssignment(member_key(group, &member.member_id)),
        value.encode(),
    )
}

/// Tombstones of every record of one member, in Kafka's order.
fn member_tombstones(group: &str, member_id: &str) -> [CoordinatorRecord; 3] {
    [
        tombstone(RecordKey::ConsumerGroupCurrentMemberAssignment(member_key(
            group, member_id,
        ))),
        tombstone(RecordKey::ConsumerGroupTargetAssignmentMember(member_key(
            group, member_id,
        ))),
        tombstone(RecordKey::ConsumerGroupMemberMetadata(member_key(
            group, member_id,
        ))),
    ]
}

/// The records of what `dirty` says changed in `group`, in the order Kafka writes them:
/// members and subscriptions, the group epoch, the target assignment, then members' current
/// assignments.
pub fn changes(group: &ConsumerGroup, dirty: &Dirty) -> Vec<CoordinatorRecord> {
    let id = &group.id;
    let mut records = Vec::new();
    for member_id in &dirty.removed {
        if !group.members.contains_key(member_id) {
            records.extend(member_tombstones(id, member_id));
        }
    }
    for member_id in &dirty.members {
        if let Some(member) = group.members.get(member_id) {
            records.push(member_record(id, member));
        }
    }
    if dirty.subscription_metadata {
        let value = ConsumerGroupPartitionMetadataValue {
            topics: group
                .subscription_metadata
                .iter()
                .map(|(name, (topic_id, partitions))| TopicMetadata {
                    topic_id: *topic_id,
                    topic_name: name.clone(),
                    num_partitions: i32::try_from(*partitions).unwrap_or(i32::MAX),
                    partition_racks: Vec::new(),
                })
                .collect(),
        };
        records.push(record(
            RecordKey::ConsumerGroupPartitionMetadata(group_key(id)),
            value.encode(),
        ));
    }
    if dirty.group_epoch {
        let value = ConsumerGroupMetadataValue {
            epoch: group.group_epoch,
            metadata_hash: 0,
        };
        records.push(record(
            RecordKey::ConsumerGroupMetadata(group_key(id)),
            value.encode(),
        ));
    }
    for member_id in &dirty.targets {
        if let Some(target) = group.targets.get(member_id) {
            let value = TargetValue {
                topic_partitions: to_wire(target),
            };
            records.push(record(
                RecordKey::ConsumerGroupTargetAssignmentMember(member_key(id, member_id)),
                value.encode(),
            ));
        }
    }
    if dirty.assignment_epoch {
        let value = ConsumerGroupTargetAssignmentMetadataValue {
            assignment_epoch: group.assignment_epoch,
        };
        records.push(record(
            RecordKey::ConsumerGroupTargetAssignmentMetadata(group_key(id)),
            value.encode(),
        ));
    }
    for member_id in &dirty.current {
        if let Some(member) = group.members.get(member_id) {
            records.push(current_record(id, member));
        }
    }
    records
}

/// The tombstones that delete `group` (its members first, the group record last).
pub fn deletion(group: &ConsumerGroup) -> Vec<CoordinatorRecord> {
    let id = &group.id;
    let mut records: Vec<CoordinatorRecord> = group
        .members
        .keys()
        .flat_map(|member_id| member_tombstones(id, member_id))
        .collect();
    records.push(tombstone(RecordKey::ConsumerGroupTargetAssignmentMetadata(
        group_key(id),
    )));
    records.push(tombstone(RecordKey::ConsumerGroupPartitionMetadata(
        group_key(id),
    )));
    records.push(tombstone(RecordKey::ConsumerGroupMetadata(group_key(id))));
    records
}

/// The group `id`, created (empty) if replay has not met it yet. A classic group that exists
/// only because offsets were replayed first gives way to it.
fn loading<'a>(
    consumer_groups: &'a mut HashMap<String, ConsumerGroup>,
    classic: &mut HashMap<String, Group>,
    id: &str,
) -> &'a mut ConsumerGroup {
    let offsets_only = classic.get(id).is_some_and(|g| {
        g.is(GroupState::Empty) && g.members.is_empty() && g.protocol_type.is_none()
    });
    if offsets_only {
        classic.remove(id);
    }
    consumer_groups
        .entry(id.to_owned())
        .or_insert_with(|| ConsumerGroup::new(id))
}

fn member<'a>(group: &'a mut ConsumerGroup, member_id: &str) -> &'a mut ConsumerMember {
    group
        .members
        .entry(member_id.to_owned())
        .or_insert_with(|| ConsumerMember {
            member_id: member_id.to_owned(),
            previous_member_epoch: -1,
            ..ConsumerMember::default()
        })
}

/// Applies one consumer-group record while a partition loads. `Ok(false)`: not a
/// consumer-group record.
pub fn replay(
    consumer_groups: &mut HashMap<String, ConsumerGroup>,
    classic: &mut HashMap<String, Group>,
    key: &RecordKey,
    value: Option<&[u8]>,
) -> Result<bool, RecordError> {
    match key {
        RecordKey::ConsumerGroupMetadata(key) => match value {
            Some(value) => {
                let value = ConsumerGroupMetadataValue::decode(value)?;
                loading(consumer_groups, classic, &key.group).group_epoch = value.epoch;
            }
            None => {
                consumer_groups.remove(&key.group);
            }
        },
        RecordKey::ConsumerGroupPartitionMetadata(key) => {
            let topics = match value {
                Some(value) => ConsumerGroupPartitionMetadataValue::decode(value)?.topics,
                None => Vec::new(),
            };
            if value.is_some() || consumer_groups.contains_key(&key.group) {
                loading(consumer_groups, classic, &key.group).subscription_metadata = topics
                    .into_iter()
                    .map(|t| {
                        let count = u32::try_from(t.num_partitions).unwrap_or(0);
                        (t.topic_name, (t.topic_id, count))
                    })
                    .collect();
            }
        }
        RecordKey::ConsumerGroupMemberMetadata(key) => match value {
            Some(value) => {
                let value = MemberValue::decode(value)?;
                let group = loading(consumer_groups, classic, &key.group);
                let member = member(group, &key.member_id);
                member.instance_id = value.instance_id;
                member.rack_id = value.rack_id;
                member.client_id = value.client_id;
                member.client_host = value.client_host;
                member.subscribed_topic_names = value.subscribed_topic_names;
                member.subscribed_topic_regex = value.subscribed_topic_regex;
                member.rebalance_timeout_ms = value.rebalance_timeout;
                member.server_assignor = value.server_assignor;
                member.classic = value.classic_member_metadata.map(|c| ClassicMeta {
                    session_timeout_ms: c.session_timeout,
                    protocols: c
                        .supported_protocols
                        .into_iter()
                        .map(|p| (p.name, p.metadata))
                        .collect(),
                });
            }
            None => {
                if let Some(group) = consumer_groups.get_mut(&key.group) {
                    group.members.remove(&key.member_id);
                }
            }
        },
        RecordKey::ConsumerGroupTargetAssignmentMetadata(key) => {
            let epoch = match value {
                Some(value) => {
                    ConsumerGroupTargetAssignmentMetadataValue::decode(value)?.assignment_epoch
                }
                None => 0,
            };
            if let Some(group) = consumer_groups.get_mut(&key.group) {
                group.assignment_epoch = epoch;
            } else if value.is_some() {
                loading(consumer_groups, classic, &key.group).assignment_epoch = epoch;
            }
        }
        RecordKey::ConsumerGroupTargetAssignmentMember(key) => match value {
            Some(value) => {
                let value = TargetValue::decode(value)?;
                loading(consumer_groups, classic, &key.group)
                    .targets
                    .insert(key.member_id.clone(), from_wire(&value.topic_partitions));
            }
            None => {
                if let Some(group) = consumer_groups.get_mut(&key.group) {
                    group.targets.remove(&key.member_id);
                }
            }
        },
        RecordKey::ConsumerGroupCurrentMemberAssignment(key) => match value {
            Some(value) => {
                let value = CurrentValue::decode(value)?;
                let group = loading(consumer_groups, classic, &key.group);
                let member = member(group, &key.member_id);
                member.member_epoch = value.member_epoch;
                member.previous_member_epoch = value.previous_member_epoch;
                member.state = state_of(value.state);
                member.assigned = from_wire(&value.assigned_partitions);
                member.pending_revocation = from_wire(&value.partitions_pending_revocation);
            }
            None => {
                if let Some(member) = consumer_groups
                    .get_mut(&key.group)
                    .and_then(|g| g.members.get_mut(&key.member_id))
                {
                    member.member_epoch = 0;
                    member.assigned.clear();
                    member.pending_revocation.clear();
                }
            }
        },
        // Subscriptions' regexes are resolved again against the image on every heartbeat.
        RecordKey::ConsumerGroupRegularExpression(_) => {}
        _ => return Ok(false),
    }
    Ok(true)
}
