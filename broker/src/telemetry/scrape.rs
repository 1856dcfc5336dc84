//! Gauges set at scrape time, from what the broker holds anyway: the partitions hosted and led
//! here and their health, each led partition's offsets (capped at `[metrics]
//! partition_series_max`), the metadata quorum as this node sees it, and the log
//! directory's size and free space. Reading them when Prometheus asks costs nothing between
//! scrapes.

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use streambus_raft::MetadataNode;
use tokio_util::sync::CancellationToken;

use crate::context::BrokerContext;
use crate::partition::Role;

/// Partition replicas hosted here.
pub const PARTITIONS: &str = "streambus_partitions";
/// Partitions this broker leads.
pub const LEADER_PARTITIONS: &str = "streambus_partitions_leader";
/// Partitions led here whose ISR is smaller than their replica set.
pub const UNDER_REPLICATED: &str = "streambus_partitions_under_replicated";
/// Partitions led here whose ISR is below `min.insync.replicas` (acks=all writes refused).
pub const UNDER_MIN_ISR: &str = "streambus_partitions_under_min_isr";
/// Partitions with no leader, cluster-wide; reported by the controller only (0 elsewhere), so
/// a sum over brokers counts each once.
pub const OFFLINE: &str = "streambus_partitions_offline";
/// Per led partition (`topic`, `partition`): the log end offset.
pub const LOG_END_OFFSET: &str = "streambus_partition_log_end_offset";
/// Per led partition: the high watermark.
pub const HIGH_WATERMARK: &str = "streambus_partition_high_watermark";
/// Per led partition: the last stable offset.
pub const LAST_STABLE_OFFSET: &str = "streambus_partition_last_stable_offset";
/// The raft term this node is in.
pub const RAFT_TERM: &str = "streambus_raft_term";
/// The index of the last entry in this node's raft log.
pub const RAFT_LAST_LOG_INDEX: &str = "streambus_raft_last_log_index";
/// The index of the last committed entry this node applied (its metadata offset).
pub const RAFT_APPLIED_INDEX: &str = "streambus_raft_applied_index";
/// 1 when this node is the raft leader, which is the controller.
pub const RAFT_IS_CONTROLLER: &str = "streambus_raft_is_controller";
/// Voters in the metadata quorum.
pub const RAFT_VOTERS: &str = "streambus_raft_voters";
/// Changes of raft leader this node has seen (to another node or to none).
pub const RAFT_LEADER_CHANGES: &str = "streambus_raft_leader_changes_total";
/// Bytes of partition segments in the log directory.
pub const LOG_DIR_SIZE: &str = "streambus_log_dir_size_bytes";
/// Segments in the log directory.
pub const LOG_DIR_SEGMENTS: &str = "streambus_log_dir_segments";
/// Bytes free for the broker on the log directory's file system.
pub const LOG_DIR_FREE: &str = "streambus_log_dir_free_bytes";
/// Size of the log directory's file system.
pub const LOG_DIR_TOTAL: &str = "streambus_log_dir_capacity_bytes";
/// 1 while the log directory serves, 0 after a write failed until it recovers.
pub const LOG_DIR_ONLINE: &str = "streambus_log_dir_online";

pub(super) fn describe() {
    describe_gauge!(PARTITIONS, Unit::Count, "Partition replicas hosted here.");
    describe_gauge!(LEADER_PARTITIONS, Unit::Count, "Partitions led here.");
    describe_gauge!(
        UNDER_REPLICATED,
        Unit::Count,
        "Partitions led here whose ISR is smaller than their replicas."
    );
    describe_gauge!(
        UNDER_MIN_ISR,
        Unit::Count,
        "Partitions led here whose ISR is below min.insync.replicas."
    );
    describe_gauge!(
        OFFLINE,
        Unit::Count,
        "Partitions without a leader (reported by the controller only)."
    );
    describe_gauge!(
        LOG_END_OFFSET,
        Unit::Count,
        "Log end offset of a led partition."
    );
    describe_gauge!(
        HIGH_WATERMARK,
        Unit::Count,
        "High watermark of a led partition."
    );
    describe_gauge!(
        LAST_STABLE_OFFSET,
        Unit::Count,
        "Last stable offset of a led partition."
    );
    describe_gauge!(RAFT_TERM, Unit::Count, "Raft term of the metadata quorum.");
    describe_gauge!(
        RAFT_LAST_LOG_INDEX,
        Unit::Count,
        "Last index in this node's metadata log."
    );
    describe_gauge!(
        RAFT_APPLIED_INDEX,
        Unit::Count,
        "Last committed metadata log index applied here."
    );
    describe_gauge!(
        RAFT_IS_CONTROLLER,
        Unit::Count,
        "1 when this node leads the metadata quorum (is the controller)."
    );
    describe_gauge!(RAFT_VOTERS, Unit::Count, "Voters in the metadata quorum.");
    describe_counter!(
        RAFT_LEADER_CHANGES,
        Unit::Count,
        "Metadata quorum leader changes seen by this node."
    );
    describe_gauge!(LOG_DIR_SIZE, Unit::Bytes, "Bytes of partition segments.");
    describe_gauge!(LOG_DIR_SEGMENTS, Unit::Count, "Partition segments.");
    describe_gauge!(
        LOG_DIR_FREE,
        Unit::Bytes,
        "Bytes available on the log directory's file system."
    );
    describe_gauge!(
        LOG_DIR_TOTAL,
        Unit::Bytes,
        "Size of the log directory's file system."
    );
    describe_gauge!(
        LOG_DIR_ONLINE,
        Unit::Count,
        "1 while the log directory takes writes."
    );
}

/// Sets every scrape-time gauge (blocking: reads each hosted log's size and offsets).
pub fn publish(ctx: &BrokerContext) {
    publish_partitions(ctx);
    publish_raft(ctx);
    publish_log_dir(ctx);
}

fn publish_partitions(ctx: &BrokerContext) {
    let me = ctx.broker_id();
    let mut hosted = ctx.partitions.all();
    hosted.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    let (mut leader, mut under_replicated, mut under_min_isr) = (0u64, 0u64, 0u64);
    let (mut size, mut segments) = (0u64, 0usize);
    for partition in &hosted {
        size += partition.log().size_bytes();
        segments += partition.log().segment_count();
        let state = partition.state();
        if state.role(me) != Role::Leader {
            continue;
        }
        leader += 1;
        under_replicated += u64::from(state.isr.len() < state.replicas.len());
        under_min_isr += u64::from(state.under_min_isr());
        // The first partitions in name order get series; the cap bounds them.
        if leader <= ctx.config.metrics.partition_series_max as u64 {
            let labels = [
                ("topic", partition.topic.clone()),
                ("partition", partition.index.to_string()),
            ];
            gauge!(LOG_END_OFFSET, &labels).set(partition.log_end_offset() as f64);
            gauge!(HIGH_WATERMARK, &labels).set(partition.high_watermark() as f64);
            gauge!(LAST_STABLE_OFFSET, &labels).set(partition.last_stable_offset() as f64);
        }
    }
    gauge!(PARTITIONS).set(hosted.len() as f64);
    gauge!(LEADER_PARTITIONS).set(leader as f64);
    gauge!(UNDER_REPLICATED).set(under_replicated as f64);
    gauge!(UNDER_MIN_ISR).set(under_min_isr as f64);
    gauge!(LOG_DIR_SIZE).set(size as f64);
    gauge!(LOG_DIR_SEGMENTS).set(segments as f64);
}

fn publish_raft(ctx: &BrokerContext) {
    let metrics = ctx.node.metrics().borrow().clone();
    let controller = metrics.current_leader == Some(ctx.node.node_id());
    gauge!(RAFT_TERM).set(metrics.current_term as f64);
    gauge!(RAFT_LAST_LOG_INDEX).set(metrics.last_log_index.unwrap_or(0) as f64);
    gauge!(RAFT_APPLIED_INDEX).set(metrics.last_applied.map_or(0, |id| id.index) as f64);
    gauge!(RAFT_IS_CONTROLLER).set(if controller { 1.0 } else { 0.0 });
    let voters = metrics.membership_config.membership().voter_ids().count();
    gauge!(RAFT_VOTERS).set(voters as f64);
    let offline = if controller {
        let image = ctx.image();
        image
            .topics()
            .flat_map(|topic| &topic.partitions)
            .filter(|partition| partition.leader.is_none())
            .count()
    } else {
        0
    };
    gauge!(OFFLINE).set(offline as f64);
}

fn publish_log_dir(ctx: &BrokerContext) {
    let online = ctx.partitions.log_dir_online();
    gauge!(LOG_DIR_ONLINE).set(if online { 1.0 } else { 0.0 });
    match rustix::fs::statvfs(ctx.partitions.log_dir_path()) {
        Ok(stat) => {
            let block = stat.f_frsize;
            gauge!(LOG_DIR_FREE).set(stat.f_bavail.saturating_mul(block) as f64);
            gauge!(LOG_DIR_TOTAL).set(stat.f_blocks.saturating_mul(block) as f64);
        }
        Err(error) => tracing::debug!(%error, "cannot read the log directory's free space"),
    }
}

/// Counts raft leader changes as this node sees them, until `shutdown`.
pub fn spawn_leader_watch(
    node: &MetadataNode,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut metrics = node.metrics();
    tokio::spawn(async move {
        let mut leader = metrics.borrow().current_leader;
        // One pass per metrics change; ends at shutdown or when the raft core is gone.
        loop {
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = shutdown.cancelled() => return,
            }
            let now = metrics.borrow().current_leader;
            if now != leader {
                leader = now;
                counter!(RAFT_LEADER_CHANGES).increment(1);
            }
        }
    })
}
