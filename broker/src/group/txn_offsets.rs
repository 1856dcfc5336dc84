//! Offsets committed inside transactions (TxnOffsetCommit, KIP-98 exactly-once): written as
//! offset commit records in a transactional batch of the producer, held pending until the
//! transaction coordinator's marker for that producer reaches this partition; a commit marker
//! makes them the group's offsets (unless a later plain commit holds the partition), an abort
//! marker drops them. While any is pending for a partition, OffsetFetch with `require_stable`
//! answers UNSTABLE_OFFSET_COMMIT for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::classic::GroupTimer;
use super::machine::{CommitRequest, GroupMachine, PartitionOutcomes};
use super::offsets::{commit_record, Committed, TopicPartition};
use super::records::{OffsetCommitKey, OffsetCommitValue};
use super::{GroupProblem, STRING_MAX_BYTES};
use crate::coordinator::{Batch, CoordinatorResult, OpContext};

/// `(group, topic, partition)`.
type GroupPartition = (String, String, i32);

/// The pending transactional offsets of every producer.
#[derive(Debug, Default)]
pub struct PendingTxnOffsets {
    by_producer: HashMap<i64, BTreeMap<GroupPartition, Committed>>,
    /// Producers with pending offsets, by group.
    by_group: HashMap<String, BTreeSet<i64>>,
}

impl PendingTxnOffsets {
    /// A transactional record of `producer_id` at `record_offset` (a tombstone in a
    /// transaction removes nothing pending: Kafka's transactional commits are never deletes).
    pub fn add(
        &mut self,
        producer_id: i64,
        record_offset: i64,
        key: &OffsetCommitKey,
        value: Option<&OffsetCommitValue>,
    ) {
        let Some(value) = value else {
            return;
        };
        let committed = Committed {
            record_offset,
            ..Committed::from_value(value)
        };
        self.by_producer.entry(producer_id).or_default().insert(
            (key.group.clone(), key.topic.clone(), key.partition),
            committed,
        );
        self.by_group
            .entry(key.group.clone())
            .or_default()
            .insert(producer_id);
    }

    /// The pending offsets of `producer_id`, removed.
    pub fn take(&mut self, producer_id: i64) -> BTreeMap<GroupPartition, Committed> {
        let taken = self.by_producer.remove(&producer_id).unwrap_or_default();
        for (group, _, _) in taken.keys() {
            if let Some(producers) = self.by_group.get_mut(group) {
                producers.remove(&producer_id);
                if producers.is_empty() {
                    self.by_group.remove(group);
                }
            }
        }
        taken
    }

    /// Whether an offset of `group` for `topic`-`partition` waits for its transaction's end.
    pub fn is_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.by_group.get(group).is_some_and(|producers| {
            let key = (group.to_owned(), topic.to_owned(), partition);
            producers.iter().any(|producer| {
                self.by_producer
                    .get(producer)
                    .is_some_and(|offsets| offsets.contains_key(&key))
            })
        })
    }

    /// Whether any offset of `group` waits for its transaction's end.
    pub fn has_group(&self, group: &str) -> bool {
        self.by_group.contains_key(group)
    }
}

/// A TxnOffsetCommit as the coordinator sees it: the commit, and the producer whose
/// transaction holds it.
#[derive(Debug, Clone)]
pub struct TxnCommitRequest {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The KIP-890 guard taken on the offsets partition before the coordinator was asked.
    pub guard: Option<u64>,
    pub commit: CommitRequest,
}

impl GroupMachine {
    /// TxnOffsetCommit (Kafka's `OffsetMetadataManager.commitTransactionalOffset`): the group
    /// is checked as for a commit, without the rebalance check (a transactional commit may
    /// come between a join and a sync); the records go into a transactional batch of the
    /// producer and take effect with its commit marker.
    pub fn txn_commit(
        &mut self,
        group_id: &str,
        request: TxnCommitRequest,
        ctx: &mut OpContext<'_, GroupTimer>,
    ) -> CoordinatorResult<Result<PartitionOutcomes, GroupProblem>> {
        let commit = request.commit;
        let validated = if let Some(consumer) = self.consumer_groups.get(group_id) {
            // Transactional commits are checked against the member epoch whatever the version
            // (Kafka maps a stale epoch to ILLEGAL_GENERATION here).
            consumer
                .validate_offset_commit(&commit.member_id, commit.generation_id, i16::MAX)
                .map_err(|problem| match problem {
                    GroupProblem::StaleMemberEpoch => GroupProblem::IllegalGeneration,
                    other => other,
                })
        } else if let Some(group) = self.groups.get(group_id) {
            if commit.generation_id < 0 && commit.member_id.is_empty() {
                // TxnOffsetCommit before v3 names no member: only the producer's transaction
                // vouches for it (Kafka accepts it).
                Ok(())
            } else {
                group
                    .validate_offset_commit(
                        &commit.member_id,
                        commit.group_instance_id.as_deref(),
                        commit.generation_id,
                    )
                    .or_else(|problem| match problem {
                        GroupProblem::RebalanceInProgress => Ok(()),
                        other => Err(other),
                    })
            }
        } else if commit.generation_id < 0 {
            // A simple group (no group management): created by the commit.
            self.groups.insert(
                group_id.to_owned(),
                super::classic::Group::new(group_id, Some(ctx.now_ms)),
            );
            Ok(())
        } else {
            Err(GroupProblem::IllegalGeneration)
        };
        if let Err(problem) = validated {
            return self.result(Err(problem));
        }
        let mut outcomes = Vec::with_capacity(commit.partitions.len());
        for partition in commit.partitions {
            let metadata = partition.metadata.unwrap_or_default();
            if metadata.len() > self.rules.offset_metadata_max_bytes
                || metadata.len() > STRING_MAX_BYTES
            {
                outcomes.push((
                    partition.topic,
                    partition.partition,
                    Some(GroupProblem::OffsetMetadataTooLarge),
                ));
                continue;
            }
            let committed = Committed {
                record_offset: -1,
                offset: partition.offset,
                leader_epoch: partition.leader_epoch,
                metadata,
                commit_timestamp_ms: ctx.now_ms,
                expire_timestamp_ms: None,
                topic_id: partition.topic_id,
            };
            self.records.push(commit_record(
                group_id,
                &partition.topic,
                partition.partition,
                &committed,
            ));
            outcomes.push((partition.topic, partition.partition, None));
        }
        let mut result = self.result(Ok(outcomes));
        if !result.records.is_empty() {
            result.batch = Batch::Transactional {
                producer_id: request.producer_id,
                producer_epoch: request.producer_epoch,
                guard: request.guard,
            };
        }
        result
    }

    /// Writes the transaction coordinator's marker for `producer_id` to this partition: its
    /// pending offsets take effect (`commit`) or are dropped when it is replayed.
    pub fn complete_transaction(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> CoordinatorResult<()> {
        let mut result = CoordinatorResult::response_only(());
        result.batch = Batch::Marker {
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
        };
        result
    }

    /// Replays a transaction marker of `producer_id`.
    pub(super) fn end_transaction(&mut self, producer_id: i64, commit: bool) {
        let pending = self.pending_txn.take(producer_id);
        if !commit {
            return;
        }
        for ((group, topic, partition), committed) in pending {
            let known =
                self.groups.contains_key(&group) || self.consumer_groups.contains_key(&group);
            if !known {
                // As for plain commits outside group management: a group holds the offsets.
                self.groups
                    .insert(group.clone(), super::classic::Group::new(&group, None));
            }
            let tp: TopicPartition = (topic, partition);
            self.offsets.apply_transactional(&group, tp, committed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{CoordinatorMachine, CoordinatorRecord, Timers};
    use crate::group::classic::GroupRules;
    use crate::group::consumer::ConsumerRules;
    use crate::group::machine::CommitPartition;

    const NOW_MS: i64 = 1_700_000_000_000;

    /// A partition's machine and its log: each entry a record with the producer of its
    /// transactional batch, or a marker.
    struct Log {
        machine: GroupMachine,
        entries: Vec<Entry>,
    }

    #[derive(Clone)]
    enum Entry {
        Plain(CoordinatorRecord),
        Transactional(i64, CoordinatorRecord),
        Marker(i64, bool),
    }

    impl Log {
        fn new() -> Log {
            let mut machine = GroupMachine::new(GroupRules::default(), ConsumerRules::default());
            machine.on_loaded(&mut OpContext {
                now_ms: NOW_MS,
                timers: &mut Timers::new(),
            });
            Log {
                machine,
                entries: Vec::new(),
            }
        }

        /// Replays `entry` at the next offset and keeps it.
        fn append(&mut self, entry: Entry) {
            let offset = self.entries.len() as i64;
            replay(&mut self.machine, offset, &entry);
            self.entries.push(entry);
        }

        fn write<R>(&mut self, result: CoordinatorResult<R>) -> R {
            match result.batch {
                Batch::Plain => {
                    for record in result.records {
                        self.append(Entry::Plain(record));
                    }
                }
                Batch::Transactional { producer_id, .. } => {
                    for record in result.records {
                        self.append(Entry::Transactional(producer_id, record));
                    }
                }
                Batch::Marker {
                    producer_id,
                    commit,
                    ..
                } => self.append(Entry::Marker(producer_id, commit)),
            }
            result.response
        }

        fn txn_commit(
            &mut self,
            producer_id: i64,
            offset: i64,
        ) -> Result<PartitionOutcomes, GroupProblem> {
            let request = TxnCommitRequest {
                guard: None,
                producer_id,
                producer_epoch: 0,
                commit: commit_request(offset),
            };
            let mut timers = Timers::new();
            let mut ctx = OpContext {
                now_ms: NOW_MS,
                timers: &mut timers,
            };
            let result = self.machine.txn_commit("g", request, &mut ctx);
            self.write(result)
        }

        fn plain_commit(&mut self, offset: i64) {
            let mut timers = Timers::new();
            let mut ctx = OpContext {
                now_ms: NOW_MS,
                timers: &mut timers,
            };
            let result = self.machine.commit("g", commit_request(offset), &mut ctx);
            self.write(result).expect("committed");
        }

        fn end(&mut self, producer_id: i64, commit: bool) {
            let result = self.machine.complete_transaction(producer_id, 0, commit, 3);
            assert!(result.records.is_empty());
            self.write(result);
        }

        fn committed(&self) -> Option<i64> {
            self.machine.offsets().get("g", "t", 0).map(|c| c.offset)
        }

        /// A new coordinator that loads this log.
        fn reloaded(&self) -> GroupMachine {
            let mut machine = GroupMachine::new(GroupRules::default(), ConsumerRules::default());
            for (offset, entry) in self.entries.iter().enumerate() {
                replay(&mut machine, offset as i64, entry);
            }
            machine
        }
    }

    fn replay(machine: &mut GroupMachine, offset: i64, entry: &Entry) {
        match entry {
            Entry::Plain(r) => machine.replay(offset, Some(&r.key), r.value.as_deref()),
            Entry::Transactional(producer_id, r) => {
                machine.replay_transactional(offset, *producer_id, Some(&r.key), r.value.as_deref())
            }
            Entry::Marker(producer_id, commit) => {
                machine.replay_marker(offset, *producer_id, *commit)
            }
        }
        .expect("replays");
    }

    fn commit_request(offset: i64) -> CommitRequest {
        CommitRequest {
            api_version: 3,
            member_id: String::new(),
            group_instance_id: None,
            generation_id: -1,
            partitions: vec![CommitPartition {
                topic: "t".to_owned(),
                partition: 0,
                offset,
                leader_epoch: -1,
                metadata: None,
                topic_id: uuid::Uuid::nil(),
                retention_ms: -1,
            }],
        }
    }

    #[test]
    fn transactional_offsets_take_effect_with_the_commit_marker_only() {
        let mut log = Log::new();
        log.txn_commit(7, 10).expect("accepted");
        assert_eq!(log.committed(), None, "pending until the marker");
        assert!(log.machine.pending_txn.is_pending("g", "t", 0));
        log.end(7, true);
        assert_eq!(log.committed(), Some(10));
        assert!(!log.machine.pending_txn.has_group("g"));

        log.txn_commit(7, 20).expect("accepted");
        log.end(7, false);
        assert_eq!(
            log.committed(),
            Some(10),
            "an abort drops the pending offsets"
        );

        // A marker of another producer ends nothing of this one's.
        log.txn_commit(8, 30).expect("accepted");
        log.end(9, true);
        assert_eq!(log.committed(), Some(10));
        log.end(8, true);
        assert_eq!(log.committed(), Some(30));

        // A coordinator that loads the log gets the same offsets and nothing pending.
        let reloaded = log.reloaded();
        assert_eq!(
            reloaded.offsets().get("g", "t", 0).map(|c| c.offset),
            Some(30)
        );
        assert!(!reloaded.pending_txn.has_group("g"));
    }

    #[test]
    fn a_plain_commit_written_after_a_transactional_one_wins() {
        let mut log = Log::new();
        log.txn_commit(7, 10).expect("accepted");
        log.plain_commit(15);
        log.end(7, true);
        assert_eq!(
            log.committed(),
            Some(15),
            "the later record wins (Kafka's rule)"
        );
        assert_eq!(
            log.reloaded().offsets().get("g", "t", 0).map(|c| c.offset),
            Some(15)
        );
    }

    #[test]
    fn an_open_transaction_survives_a_reload_and_its_marker_applies_after() {
        let mut log = Log::new();
        log.txn_commit(7, 10).expect("accepted");
        let mut reloaded = log.reloaded();
        assert!(reloaded.pending_txn.is_pending("g", "t", 0));
        reloaded.replay_marker(99, 7, true).expect("replays");
        assert_eq!(
            reloaded.offsets().get("g", "t", 0).map(|c| c.offset),
            Some(10)
        );
    }

    #[test]
    fn a_member_commit_checks_the_group_and_a_generation_needs_a_group() {
        let mut log = Log::new();
        let mut timers = Timers::new();
        let mut ctx = OpContext {
            now_ms: NOW_MS,
            timers: &mut timers,
        };
        let mut request = TxnCommitRequest {
            guard: None,
            producer_id: 7,
            producer_epoch: 0,
            commit: commit_request(5),
        };
        request.commit.generation_id = 3;
        request.commit.member_id = "m".to_owned();
        let result = log.machine.txn_commit("unknown", request.clone(), &mut ctx);
        assert_eq!(result.response, Err(GroupProblem::IllegalGeneration));
        assert!(result.records.is_empty());
        // A simple group (no member, no generation) is created by the commit.
        request.commit.generation_id = -1;
        request.commit.member_id.clear();
        let result = log.machine.txn_commit("simple", request, &mut ctx);
        assert!(result.response.is_ok());
        assert!(matches!(
            result.batch,
            Batch::Transactional { producer_id: 7, .. }
        ));
    }
}
