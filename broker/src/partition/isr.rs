//! ISR maintenance on the leader: the ISR changes that follower progress calls for (an
//! expansion found by a follower's fetch, a shrink found by a periodic check) go to the
//! controller as AlterPartition, with the partition epoch as the compare-and-set guard.
//! A partition proposes its own changes through the [`IsrProposer`] it was opened with.

use std::sync::Arc;
use std::time::Duration;

use streambus_raft::command::{AlterPartition, BrokerId, Rejection};
use streambus_raft::{MetadataCommand, MetadataNode, MetadataResponse, RaftError};
use tokio_util::sync::CancellationToken;

use super::{IsrChange, Partition, PartitionManager};

/// Sends a leader's ISR changes to the controller.
#[derive(Debug, Clone)]
pub struct IsrProposer {
    node: MetadataNode,
    me: BrokerId,
}

impl IsrProposer {
    pub fn new(node: MetadataNode, me: BrokerId) -> IsrProposer {
        IsrProposer { node, me }
    }

    /// Sends `change` for `partition` to the controller in the background; the partition
    /// learns the outcome (and keeps the change pending until a metadata image carries it).
    pub fn propose(&self, partition: Arc<Partition>, change: IsrChange) {
        let (node, me) = (self.node.clone(), self.me);
        let (before, after) = (partition.state().isr.len(), change.new_isr.len());
        tokio::spawn(async move {
            tracing::info!(
                topic = %partition.topic,
                index = partition.index,
                new_isr = ?change.new_isr,
                "proposing an ISR change"
            );
            let command = MetadataCommand::AlterPartition(AlterPartition {
                topic_id: partition.topic_id,
                partition: partition.index,
                leader_id: me,
                leader_epoch: change.leader_epoch,
                partition_epoch: change.partition_epoch,
                new_isr: change.new_isr,
                member_epochs: change.member_epochs,
            });
            let seq = change.seq;
            match node.write(command).await {
                // The image that carries it settles the pending change.
                Ok(MetadataResponse::PartitionAltered { .. }) => {
                    crate::telemetry::requests::isr_changed(before, after);
                }
                Ok(MetadataResponse::Rejected(rejection)) | Err(RaftError::Rejected(rejection)) => {
                    tracing::info!(topic = %partition.topic, index = partition.index, ?rejection, "ISR change refused");
                    // Only an invalid ISR proves nothing was applied; a later partition or
                    // leader epoch may be this very change, sent before: the image settles
                    // those.
                    if matches!(rejection, Rejection::InvalidIsr { .. }) {
                        // May move the high watermark, which takes the log's lock.
                        let refused =
                            crate::blocking::spawn(move || partition.isr_change_refused(seq));
                        if refused.await.is_err() {
                            tracing::error!("ISR refusal bookkeeping panicked");
                        }
                    }
                }
                Ok(other) => tracing::warn!(?other, "unexpected answer to an ISR change"),
                Err(error) => {
                    // The outcome is unknown: the change stays pending until an image shows a
                    // later partition epoch, and is sent again if none does.
                    tracing::warn!(topic = %partition.topic, index = partition.index, %error, "ISR change not confirmed");
                }
            }
        });
    }
}

/// Every `lag_time_max_ms / 2`, shrinks the ISR of each partition this broker leads by the
/// followers that stopped catching up (and resends ISR changes whose outcome never arrived),
/// until `shutdown`.
pub async fn run_shrinker(
    partitions: Arc<PartitionManager>,
    lag_time_max_ms: u64,
    shutdown: CancellationToken,
) {
    let period = Duration::from_millis((lag_time_max_ms / 2).max(10));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lag_max = i64::try_from(lag_time_max_ms).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for partition in partitions.all() {
            partition.maintain_isr(lag_max);
        }
    }
}
