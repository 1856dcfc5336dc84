//! [`RebalanceListener`]: the callbacks a group consumer runs when partitions are revoked,
//! assigned or lost, as Java's `ConsumerRebalanceListener`, and the [`RebalanceContext`] they
//! get instead of the consumer itself (which is busy rebalancing): positions, seeks, and
//! commits that the consumer makes, synchronously, as soon as the callback returns.

use std::collections::{BTreeMap, BTreeSet};

use crate::consumer::Consumer;
use crate::group::offsets::OffsetAndMetadata;
use crate::record::TopicPartition;
use crate::Result;

/// What a callback can do with the consumer.
#[derive(Debug)]
pub struct RebalanceContext<'a> {
    pub(crate) consumer: &'a mut Consumer,
    pub(crate) commits: BTreeMap<TopicPartition, OffsetAndMetadata>,
    pub(crate) member_id: String,
    pub(crate) generation: i32,
    /// Partitions the callback sought: they do not start at the committed offset.
    pub(crate) sought: BTreeSet<TopicPartition>,
}

impl RebalanceContext<'_> {
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The partitions assigned now (during `on_partitions_revoked`, still the old ones).
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer.assignment()
    }

    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.consumer.position(tp)
    }

    /// Where `tp` starts (in `on_partitions_assigned`: instead of the committed offset).
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        self.consumer.seek(tp, offset)?;
        self.sought.insert(tp.clone());
        Ok(())
    }

    /// Commits `offset` for `tp` when the callback returns (before a revoked partition goes).
    /// Ignored in `on_partitions_lost`: the partitions belong to another member already.
    pub fn commit(&mut self, tp: TopicPartition, offset: OffsetAndMetadata) {
        self.commits.insert(tp, offset);
    }

    /// Commits the current positions of `tps` when the callback returns.
    pub fn commit_positions(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(offset) = self.consumer.position(tp) {
                let epoch = self.consumer.last_leader_epoch(tp);
                self.commits.insert(
                    tp.clone(),
                    OffsetAndMetadata::new(offset).with_leader_epoch(epoch),
                );
            }
        }
    }
}

/// Rebalance callbacks; every method does nothing by default. They run inside `poll` (and
/// `close`), on the caller's task.
pub trait RebalanceListener: Send {
    /// Before `partitions` are given up (eager protocol: all of them, before every rebalance;
    /// cooperative: only those moving to another member). With auto commit on, their
    /// positions were committed just before.
    fn on_partitions_revoked(
        &mut self,
        _context: &mut RebalanceContext<'_>,
        _partitions: &[TopicPartition],
    ) {
    }

    /// After a rebalance, with the partitions this member gained (cooperative: possibly none),
    /// positioned at their committed offsets (or per `auto_offset_reset`).
    fn on_partitions_assigned(
        &mut self,
        _context: &mut RebalanceContext<'_>,
        _partitions: &[TopicPartition],
    ) {
    }

    /// When the membership was lost (session expired, generation fenced): the partitions may
    /// be another member's already, so nothing is committed. By default, as in Java, this is
    /// `on_partitions_revoked`.
    fn on_partitions_lost(
        &mut self,
        context: &mut RebalanceContext<'_>,
        partitions: &[TopicPartition],
    ) {
        self.on_partitions_revoked(context, partitions);
    }
}

/// The listener that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopListener;

impl RebalanceListener for NoopListener {}
