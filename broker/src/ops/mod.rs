//! Cluster operations in domain terms: topics, topic configs, partition reassignments, leader
//! elections and DeleteRecords. Each operation takes and returns plain Rust types (names as `String`,
//! [`TopicId`], config maps, `Option`s for "not given") and fails with one [`OpsError`], so the
//! Kafka handlers and the admin gRPC service are both thin translators over the same calls.
//!
//! Must not: know any wire format. No Kafka request or response types, `StrBytes`, error codes
//! or API versions appear here; `crate::kafka::errors` maps an [`OpsError`] to a Kafka code.
//! Checks about the domain (topic names, partition counts, replication factors, config values,
//! the same resource twice) live here; checks about a wire format stay in its translator.
//!
//! Every change goes through [`write_and_wait`]: one metadata command committed through the
//! controller, then a bounded wait until this broker's image shows it and the partition manager
//! has reconciled that image, so that the caller's next request to this broker sees the change.
//!
//! Modules:
//! - [`topics`]: create and delete topics, add partitions, auto-create.
//! - [`configs`]: describe topic and broker configs; alter (replace) and incrementally alter
//!   topic configs through one implementation.
//! - [`reassignments`]: alter, cancel and list partition reassignments.
//! - [`elections`]: preferred and unclean leader elections.
//! - [`records`]: DeleteRecords on a partition this broker leads.

pub mod configs;
pub mod elections;
pub mod reassignments;
pub mod records;
pub mod topics;

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use streambus_raft::command::TopicId;
use streambus_raft::{MetadataCommand, MetadataImage, MetadataResponse, RaftError, Rejection};
use tokio::time::Instant;

use crate::context::BrokerContext;
use crate::partition::manager::LeaderLookup;
use crate::partition::PartitionError;
use crate::topic_config::ConfigProblem;

/// Bounds the wait for a committed change to reach this broker's image and partitions. Past it
/// the change is committed anyway; a client's retries find it.
pub const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

/// Whether an operation is carried out or only checked (Kafka's `validate_only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Check and commit.
    Apply,
    /// Check everything a commit would, against this broker's image; change nothing.
    ValidateOnly,
}

impl Mode {
    /// The mode a `validate_only` flag asks for.
    pub fn from_validate_only(validate_only: bool) -> Mode {
        if validate_only {
            Mode::ValidateOnly
        } else {
            Mode::Apply
        }
    }
}

/// Why a cluster operation (or one item of it) was refused or failed. Cloneable so that one
/// failed metadata write can be reported on every item it carried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpsError {
    /// The metadata write failed, or the state machine rejected it
    /// ([`RaftError::Rejected`]).
    #[error("{0}")]
    Metadata(Arc<RaftError>),
    /// A dry run ([`Mode::ValidateOnly`]) or a check before writing found what the state
    /// machine would reject.
    #[error("{0:?}")]
    Rejected(Rejection),
    /// A config key or value that is not valid.
    #[error("{0}")]
    Config(#[from] ConfigProblem),
    /// The same topic more than once in one request.
    #[error("topic `{0}` appears more than once in the request")]
    DuplicateTopic(String),
    /// The same config resource more than once in one request.
    #[error("resource `{0}` is given more than once in the request")]
    DuplicateResource(String),
    /// The same config key more than once for one resource.
    #[error("config `{0}` is given more than once")]
    DuplicateConfig(String),
    /// A topic this broker's image does not know.
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// A topic id this broker's image does not know.
    #[error("unknown topic id")]
    UnknownTopicId(TopicId),
    /// A partition this broker's image does not know (or a negative index).
    #[error("unknown partition {partition} of topic `{topic}`")]
    UnknownPartition { topic: String, partition: i32 },
    /// A partition count that is not valid.
    #[error("{0}")]
    InvalidPartitions(String),
    /// A replication factor that is not valid.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// Explicit replica assignments that are not valid.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// Broker configs come from the static configuration and never change at run time.
    #[error("broker configs are static")]
    StaticBrokerConfigs,
    /// Configs of another broker were asked for; each broker describes its own.
    #[error("this is broker {this}; broker `{asked}` describes its own configs")]
    OtherBroker { this: i32, asked: String },
    /// A leader election found the leader asked for already in place.
    #[error("the partition already has the leader the election would choose")]
    ElectionNotNeeded,
    /// A preferred election: the preferred replica is out of the ISR or fenced.
    #[error("the preferred replica is not in the ISR or is fenced")]
    PreferredLeaderNotAvailable,
    /// An unclean election: no replica could take over.
    #[error("no replica is eligible to lead")]
    EligibleLeadersNotAvailable,
    /// A partition this broker does not lead (or not at the epoch asked for).
    #[error("{0:?}")]
    Lookup(LeaderLookup),
    /// The partition refused or failed the operation.
    #[error("{0}")]
    Partition(Arc<PartitionError>),
    /// The controller answered a command with something else than that command's answer.
    #[error("unexpected answer from the controller: {0}")]
    UnexpectedAnswer(String),
}

impl From<RaftError> for OpsError {
    fn from(error: RaftError) -> Self {
        OpsError::Metadata(Arc::new(error))
    }
}

/// The items that occur more than once in `items` (Kafka refuses every occurrence of a
/// resource named twice in one request).
pub fn duplicates<T: Eq + Hash>(items: impl IntoIterator<Item = T>) -> HashSet<T> {
    let mut counts: HashMap<T, usize> = HashMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .map(|(item, _)| item)
        .collect()
}

/// Commits `command` through the controller, then waits (at most [`VISIBILITY_WAIT`] in all)
/// until this broker's image satisfies `visible` (given the state machine's answer) and the
/// partition manager has reconciled that image. A rejection is an `Err`; a wait that runs out
/// is not, since the change is committed.
pub async fn write_and_wait(
    ctx: &BrokerContext,
    command: MetadataCommand,
    visible: impl Fn(&MetadataResponse, &MetadataImage) -> bool,
) -> Result<MetadataResponse, OpsError> {
    let response = ctx.write(command).await?;
    let deadline = Instant::now() + VISIBILITY_WAIT;
    let image = ctx
        .node
        .wait_for_image(VISIBILITY_WAIT, |image| visible(&response, image))
        .await;
    if let Some(image) = image {
        let remaining = deadline.saturating_duration_since(Instant::now());
        ctx.partitions
            .wait_reconciled(image.metadata_offset(), remaining)
            .await;
    }
    Ok(response)
}

/// What the state machine would answer to `command` on a copy of this broker's image: the
/// check behind [`Mode::ValidateOnly`].
pub fn dry_run(
    image: &MetadataImage,
    command: &MetadataCommand,
) -> Result<MetadataResponse, OpsError> {
    let mut dry = image.clone();
    match dry.apply(dry.metadata_offset() + 1, command) {
        MetadataResponse::Rejected(rejection) => Err(OpsError::Rejected(rejection)),
        response => Ok(response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_the_items_seen_twice() {
        let found = duplicates(["a", "b", "a", "c", "a", "b"]);
        assert_eq!(found, HashSet::from(["a", "b"]));
        assert!(duplicates(["a", "b"]).is_empty());
    }

    #[test]
    fn a_dry_run_changes_nothing_and_reports_rejections() {
        let image = MetadataImage::default();
        let delete = MetadataCommand::DeleteTopic(streambus_raft::command::DeleteTopic {
            name: "missing".to_owned(),
        });
        let refused = dry_run(&image, &delete).expect_err("no such topic");
        assert!(matches!(
            refused,
            OpsError::Rejected(Rejection::UnknownTopic { .. })
        ));
        assert_eq!(image, MetadataImage::default());
    }
}
