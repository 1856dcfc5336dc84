//! Series read at scrape time from what the broker holds anyway, written straight into the
//! exposition text (see [`super::text`]), so each scrape shows exactly the current state: the
//! partitions hosted and led here and their health, each led partition's offsets (the first
//! `[metrics] partition_series_max` in topic and index order), the metadata quorum as this
//! node sees it, the log directory's size and free space, open connections and the build. Raft
//! leader changes are counted as they happen, by a task watching the raft metrics.

use metrics::{counter, describe_counter, Unit};
use streambus_raft::MetadataNode;
use tokio_util::sync::CancellationToken;

use super::text::{family, sample, single};
use crate::context::BrokerContext;
use crate::partition::Role;

/// Changes of raft leader this node has seen (to a leader other than the last one it knew).
pub const RAFT_LEADER_CHANGES: &str = "streambus_raft_leader_changes_total";

/// Per led partition (`topic`, `partition`): the log end offset.
pub const LOG_END_OFFSET: &str = "streambus_partition_log_end_offset";
/// Per led partition: the high watermark.
pub const HIGH_WATERMARK: &str = "streambus_partition_high_watermark";
/// Per led partition: the last stable offset.
pub const LAST_STABLE_OFFSET: &str = "streambus_partition_last_stable_offset";

pub(super) fn describe() {
    describe_counter!(
        RAFT_LEADER_CHANGES,
        Unit::Count,
        "Metadata quorum leader changes seen by this node."
    );
    // Present from the start, so that `increase()` sees the first change.
    counter!(RAFT_LEADER_CHANGES).absolute(0);
}

/// Appends every scrape-time series to `out` (blocking: reads each hosted log's size and
/// offsets).
pub fn render(ctx: &BrokerContext, out: &mut String) {
    render_partitions(ctx, out);
    render_raft(ctx, out);
    render_log_dir(ctx, out);
    single(
        out,
        super::requests::CONNECTIONS,
        "gauge",
        "Kafka client connections open.",
        super::requests::open_connections() as f64,
    );
    family(
        out,
        "streambus_kafka_requests_waiting",
        "gauge",
        "Requests in purgatory: long-poll fetches parked, acks=all produces awaiting the ISR.",
    );
    for (kind, count) in super::requests::waiting_now() {
        sample(
            out,
            "streambus_kafka_requests_waiting",
            &[("kind", kind)],
            count as f64,
        );
    }
    family(
        out,
        "streambus_build_info",
        "gauge",
        "The running build: 1, with its version as a label.",
    );
    sample(
        out,
        "streambus_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
}

/// One led partition's offsets.
struct Offsets {
    topic: String,
    index: String,
    log_end: i64,
    high_watermark: i64,
    last_stable: i64,
}

fn render_partitions(ctx: &BrokerContext, out: &mut String) {
    let me = ctx.broker_id();
    let mut hosted = ctx.partitions.all();
    hosted.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    let cap = ctx.config.metrics.partition_series_max;
    let (mut leader, mut under_replicated, mut under_min_isr) = (0u64, 0u64, 0u64);
    let (mut size, mut segments) = (0u64, 0usize);
    let mut offsets = Vec::new();
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
        if offsets.len() < cap {
            offsets.push(Offsets {
                topic: partition.topic.clone(),
                index: partition.index.to_string(),
                log_end: partition.log_end_offset(),
                high_watermark: partition.high_watermark(),
                last_stable: partition.last_stable_offset(),
            });
        }
    }
    let counts = [
        (
            "streambus_partitions",
            "Partition replicas hosted here.",
            hosted.len() as u64,
        ),
        (
            "streambus_partitions_leader",
            "Partitions led here.",
            leader,
        ),
        (
            "streambus_partitions_under_replicated",
            "Partitions led here whose ISR is smaller than their replicas.",
            under_replicated,
        ),
        (
            "streambus_partitions_under_min_isr",
            "Partitions led here whose ISR is below min.insync.replicas.",
            under_min_isr,
        ),
        (
            "streambus_log_dir_segments",
            "Segments of the partitions hosted here.",
            segments as u64,
        ),
        (
            "streambus_log_dir_size_bytes",
            "Bytes of the segments of the partitions hosted here.",
            size,
        ),
    ];
    for (name, help, value) in counts {
        single(out, name, "gauge", help, value as f64);
    }
    type Read = fn(&Offsets) -> i64;
    let series: [(&str, &str, Read); 3] = [
        (LOG_END_OFFSET, "Log end offset of a led partition.", |o| {
            o.log_end
        }),
        (HIGH_WATERMARK, "High watermark of a led partition.", |o| {
            o.high_watermark
        }),
        (
            LAST_STABLE_OFFSET,
            "Last stable offset of a led partition.",
            |o| o.last_stable,
        ),
    ];
    for (name, help, read) in series {
        family(out, name, "gauge", help);
        for o in &offsets {
            let labels = [("topic", o.topic.as_str()), ("partition", o.index.as_str())];
            sample(out, name, &labels, read(o) as f64);
        }
    }
}

fn render_raft(ctx: &BrokerContext, out: &mut String) {
    let metrics = ctx.node.metrics().borrow().clone();
    let controller = metrics.current_leader == Some(ctx.node.node_id());
    let voters = metrics.membership_config.membership().voter_ids().count();
    // Offline partitions are the controller's to report, so that a sum over brokers counts
    // each once.
    let offline = if controller {
        ctx.image()
            .topics()
            .flat_map(|topic| &topic.partitions)
            .filter(|partition| partition.leader.is_none())
            .count()
    } else {
        0
    };
    let gauges = [
        (
            "streambus_raft_term",
            "Raft term of the metadata quorum.",
            metrics.current_term as f64,
        ),
        (
            "streambus_raft_last_log_index",
            "Last index in this node's metadata log.",
            metrics.last_log_index.unwrap_or(0) as f64,
        ),
        (
            "streambus_raft_applied_index",
            "Last committed metadata log index applied here.",
            metrics.last_applied.map_or(0, |id| id.index) as f64,
        ),
        (
            "streambus_raft_is_controller",
            "1 when this node leads the metadata quorum (is the controller).",
            f64::from(u8::from(controller)),
        ),
        (
            "streambus_raft_voters",
            "Voters in the metadata quorum.",
            voters as f64,
        ),
        (
            "streambus_partitions_offline",
            "Partitions without a leader (reported by the controller only).",
            offline as f64,
        ),
    ];
    for (name, help, value) in gauges {
        single(out, name, "gauge", help, value);
    }
}

fn render_log_dir(ctx: &BrokerContext, out: &mut String) {
    single(
        out,
        "streambus_log_dir_online",
        "gauge",
        "1 while the log directory takes writes, 0 after a write failed until it recovers.",
        f64::from(u8::from(ctx.partitions.log_dir_online())),
    );
    match rustix::fs::statvfs(ctx.partitions.log_dir_path()) {
        Ok(stat) => {
            let block = stat.f_frsize;
            single(
                out,
                "streambus_log_dir_free_bytes",
                "gauge",
                "Bytes available to the broker on the log directory's file system.",
                stat.f_bavail.saturating_mul(block) as f64,
            );
            single(
                out,
                "streambus_log_dir_capacity_bytes",
                "gauge",
                "Size of the log directory's file system.",
                stat.f_blocks.saturating_mul(block) as f64,
            );
        }
        Err(error) => tracing::debug!(%error, "cannot read the log directory's free space"),
    }
}

/// Counts raft leader changes as this node sees them, until `shutdown`: a change is a leader
/// other than the last one known (an election passing through "no leader" counts once).
pub fn spawn_leader_watch(
    node: &MetadataNode,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut metrics = node.metrics();
    tokio::spawn(async move {
        let mut known = metrics.borrow().current_leader;
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
            if let Some(leader) = now {
                if known != Some(leader) {
                    if known.is_some() {
                        counter!(RAFT_LEADER_CHANGES).increment(1);
                    }
                    known = Some(leader);
                }
            }
        }
    })
}
