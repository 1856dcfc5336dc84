//! Committed offsets of the groups of one `__consumer_offsets` partition, as replay leaves them,
//! and which of them have expired (KIP-211: the offsets of an empty group expire
//! `offsets.retention.minutes` after it became empty; KIP-496: a consumer group's offsets of
//! topics it no longer subscribes to expire that long after their commit).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::records::{OffsetCommitKey, OffsetCommitValue, RecordKey};
use super::LENGTHS_CHECKED;
use crate::coordinator::CoordinatorRecord;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Set only by old clients (OffsetCommit v2–v4 retention time): takes precedence.
    pub expire_timestamp_ms: Option<i64>,
    /// The committed topic's id (nil when unknown), which Kafka 4.1+ records too.
    pub topic_id: uuid::Uuid,
    /// The offset of the record holding it in `__consumer_offsets` (-1: not written yet): of a
    /// transactional and a plain commit of one partition, the later record wins.
    pub record_offset: i64,
}

impl Committed {
    pub fn from_value(value: &OffsetCommitValue) -> Committed {
        Committed {
            record_offset: -1,
            offset: value.offset,
            leader_epoch: value.leader_epoch,
            metadata: value.metadata.clone(),
            commit_timestamp_ms: value.commit_timestamp,
            expire_timestamp_ms: (value.expire_timestamp >= 0).then_some(value.expire_timestamp),
            topic_id: value.topic_id,
        }
    }
}

/// `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// Offsets by group, then by topic and partition.
#[derive(Debug, Default)]
pub struct Offsets {
    by_group: HashMap<String, BTreeMap<TopicPartition, Committed>>,
    /// Committed offsets held, over every group (a gauge, and a bound tests check).
    count: usize,
}

/// When a group's offsets expire, as the group's state decides it.
#[derive(Debug, Clone)]
pub enum Expiry {
    /// The group is empty (or exists only through its offsets): every offset expires
    /// `retention` after `base_ms` (when the group became empty), or after its own commit if
    /// the group has no such time.
    All { base_ms: Option<i64> },
    /// A consumer group: only offsets of topics outside `subscribed` expire, after their commit.
    Unsubscribed { subscribed: BTreeSet<String> },
    /// Nothing expires (an active group whose subscriptions are unknown).
    Never,
}

impl Offsets {
    /// Applies the offset commit record at `record_offset`.
    pub fn apply(
        &mut self,
        record_offset: i64,
        key: &OffsetCommitKey,
        value: Option<&OffsetCommitValue>,
    ) {
        let tp = (key.topic.clone(), key.partition);
        match value {
            Some(value) => {
                let committed = Committed {
                    record_offset,
                    ..Committed::from_value(value)
                };
                self.insert(&key.group, tp, committed);
            }
            None => {
                if let Some(group) = self.by_group.get_mut(&key.group) {
                    if group.remove(&tp).is_some() {
                        self.count -= 1;
                    }
                    if group.is_empty() {
                        self.by_group.remove(&key.group);
                    }
                }
            }
        }
    }

    fn insert(&mut self, group: &str, tp: TopicPartition, committed: Committed) {
        let offsets = self.by_group.entry(group.to_owned()).or_default();
        if offsets.insert(tp, committed).is_none() {
            self.count += 1;
        }
    }

    /// Materializes an offset committed in a transaction once its commit marker is replayed:
    /// kept unless a plain commit written after it holds the partition (Kafka's rule: the
    /// later record wins, which compaction of the topic preserves).
    pub fn apply_transactional(&mut self, group: &str, tp: TopicPartition, committed: Committed) {
        let newer_exists = self
            .get(group, &tp.0, tp.1)
            .is_some_and(|existing| existing.record_offset > committed.record_offset);
        if !newer_exists {
            self.insert(group, tp, committed);
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn group(&self, group: &str) -> Option<&BTreeMap<TopicPartition, Committed>> {
        self.by_group.get(group)
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.by_group
            .get(group)?
            .get(&(topic.to_owned(), partition))
    }

    pub fn has_offsets(&self, group: &str) -> bool {
        self.by_group.contains_key(group)
    }

    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.by_group.keys()
    }

    /// The tombstones of every offset of `group`.
    pub fn tombstones_of_group(&self, group: &str) -> Vec<CoordinatorRecord> {
        self.by_group
            .get(group)
            .into_iter()
            .flat_map(|offsets| offsets.keys())
            .map(|(topic, partition)| tombstone(group, topic, *partition))
            .collect()
    }

    /// The tombstones of every offset, in any group, of a topic in `topics`.
    pub fn tombstones_of_topics(&self, topics: &BTreeSet<String>) -> Vec<CoordinatorRecord> {
        let mut records = Vec::new();
        for (group, offsets) in &self.by_group {
            for (topic, partition) in offsets.keys() {
                if topics.contains(topic) {
                    records.push(tombstone(group, topic, *partition));
                }
            }
        }
        records
    }

    /// The tombstones of `group`'s offsets that have expired at `now_ms`.
    pub fn expired(
        &self,
        group: &str,
        expiry: &Expiry,
        retention_ms: i64,
        now_ms: i64,
    ) -> Vec<CoordinatorRecord> {
        let Some(offsets) = self.by_group.get(group) else {
            return Vec::new();
        };
        offsets
            .iter()
            .filter(|((topic, _), committed)| {
                let base_ms = match expiry {
                    Expiry::Never => return false,
                    Expiry::All { base_ms } => base_ms.unwrap_or(committed.commit_timestamp_ms),
                    Expiry::Unsubscribed { subscribed } if subscribed.contains(topic) => {
                        return false
                    }
                    Expiry::Unsubscribed { .. } => committed.commit_timestamp_ms,
                };
                let deadline_ms = committed
                    .expire_timestamp_ms
                    .unwrap_or_else(|| base_ms.saturating_add(retention_ms));
                deadline_ms <= now_ms
            })
            .map(|((topic, partition), _)| tombstone(group, topic, *partition))
            .collect()
    }
}

/// The record of a commit: the value version Kafka writes (1 with an expire timestamp, else 3).
pub fn commit_record(
    group: &str,
    topic: &str,
    partition: i32,
    committed: &Committed,
) -> CoordinatorRecord {
    let key = RecordKey::OffsetCommit(OffsetCommitKey {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    });
    let value = OffsetCommitValue {
        offset: committed.offset,
        leader_epoch: committed.leader_epoch,
        metadata: committed.metadata.clone(),
        commit_timestamp: committed.commit_timestamp_ms,
        expire_timestamp: committed.expire_timestamp_ms.unwrap_or(-1),
        topic_id: committed.topic_id,
    };
    CoordinatorRecord::new(
        key.encode().expect(LENGTHS_CHECKED),
        value.encode().expect(LENGTHS_CHECKED),
    )
}

fn tombstone(group: &str, topic: &str, partition: i32) -> CoordinatorRecord {
    let key = RecordKey::OffsetCommit(OffsetCommitKey {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    });
    CoordinatorRecord::tombstone(key.encode().expect(LENGTHS_CHECKED))
}
