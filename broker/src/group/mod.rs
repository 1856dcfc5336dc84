//! The group coordinator: Kafka's classic consumer-group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup) and committed offsets, on the coordinator runtime over
//! `__consumer_offsets`.
//!
//! Modules:
//! - [`records`]: Kafka's key and value schemas of `__consumer_offsets`.
//! - [`classic`]: one classic group: members, generations, the rebalance state machine.
//! - [`consumer`]: one KIP-848 consumer group: epochs, target assignment, reconciliation.
//! - [`consumer_classic`]: classic members inside a consumer group (JoinGroup, SyncGroup,
//!   Heartbeat, LeaveGroup answered from its epochs).
//! - [`migration`]: online conversion of non-empty groups between the two protocols.
//! - [`embedded`]: the consumer protocol's subscription and assignment formats.
//! - [`assignor`]: the server-side assignors of consumer groups (`uniform`, `range`).
//! - [`offsets`]: committed offsets and their expiry.
//! - [`txn_offsets`]: offsets committed in transactions, pending until their marker.
//! - [`machine`]: the state machine of one `__consumer_offsets` partition (pure: time is passed
//!   in, member ids are made by the caller).
//! - [`metrics`]: rebalances, commits and groups by state (bounded labels).
//! - [`coordinator`]: the service handlers call: routing to partitions, waiting for rebalances.
//! - [`lag`]: high watermarks of committed partitions, for the consumer lag gauge (with
//!   `coordinator`, the only part that does I/O).
//!
//! As in Kafka's classic groups (`replayRecords = false` there), group operations change the
//! in-memory group themselves and write its `GroupMetadata` record without replaying it: the
//! group holds volatile parts a record cannot carry (members waiting for a join or a sync
//! answer, heartbeat deadlines). Replay of group records only rebuilds groups while a
//! partition loads. Offset commits go through replay like any coordinator record.

pub mod assignor;
pub mod classic;
pub mod consumer;
pub mod consumer_classic;
mod consumer_log;
pub mod consumer_ops;
#[cfg(test)]
mod consumer_test_harness;
#[cfg(test)]
mod consumer_tests;
pub mod coordinator;
pub mod embedded;
pub mod lag;
pub mod machine;
pub mod metrics;
pub mod migration;
#[cfg(test)]
mod migration_tests;
pub mod offsets;
pub mod records;
#[cfg(test)]
mod test_harness;
#[cfg(test)]
mod tests;
pub mod txn_offsets;

pub use coordinator::GroupCoordinator;
pub use machine::GroupMachine;

/// The name of the internal topic that holds groups and their offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The longest string Kafka's record schemas (and its generated readers) allow, in bytes.
pub const STRING_MAX_BYTES: usize = 0x7fff;

/// Why a record could not be encoded although every stored string was checked: the checks and
/// the schemas disagree, a bug.
pub(crate) const LENGTHS_CHECKED: &str =
    "ids, names and metadata are checked against Kafka's string limit before they are stored";

/// Kafka's group id rule: not empty (and, here, within the record schema's string limit).
pub fn check_group_id(group_id: &str) -> Result<(), GroupProblem> {
    if group_id.is_empty() || group_id.len() > STRING_MAX_BYTES {
        Err(GroupProblem::InvalidGroupId)
    } else {
        Ok(())
    }
}

/// Why the group coordinator refused (part of) a request: each case is one Kafka error code,
/// mapped in `kafka/errors.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProblem {
    InvalidGroupId,
    InvalidSessionTimeout,
    UnknownMemberId,
    /// KIP-394: a new dynamic member must join again with the id it was given.
    MemberIdRequired,
    IllegalGeneration,
    InconsistentGroupProtocol,
    RebalanceInProgress,
    /// KIP-345: another member holds this `group.instance.id`.
    FencedInstanceId,
    GroupMaxSizeReached,
    /// The group is being removed (or was): clients look the coordinator up again.
    CoordinatorNotAvailable,
    GroupIdNotFound,
    NonEmptyGroup,
    GroupSubscribedToTopic,
    OffsetMetadataTooLarge,
    UnknownTopicOrPartition,
    /// KIP-848: a heartbeat with an epoch the member no longer has.
    FencedMemberEpoch,
    /// KIP-848: the instance id is held by a member that has not left.
    UnreleasedInstanceId,
    UnsupportedAssignor,
    /// KIP-848: an offset commit with an outdated member epoch.
    StaleMemberEpoch,
    /// A request whose fields contradict the protocol (a first heartbeat without a
    /// subscription, a bad regex).
    InvalidRequest,
    /// An OffsetCommit older than v9 from a member speaking the consumer protocol.
    UnsupportedVersion,
}
