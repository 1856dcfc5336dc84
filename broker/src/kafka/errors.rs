//! The one place where failures become Kafka error codes. Handlers describe what went wrong as
//! a [`Failure`]; [`error_code`] decides what the client sees. The produce path never answers
//! `UNKNOWN_SERVER_ERROR` for a condition a client could retry.

use std::sync::OnceLock;

use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use streambus_raft::command::Rejection;
use streambus_raft::RaftError;
use streambus_storage::{BatchError, StorageError};

use crate::coordinator::CoordinatorError;
use crate::group::GroupProblem;
use crate::ops::OpsError;
use crate::partition::manager::LeaderLookup;
use crate::partition::PartitionError;
use crate::producer_ids::ProducerIdError;
use crate::topic_config::ConfigProblem;
use crate::txn::TxnProblem;

/// A failure found by a handler itself, from the request's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestProblem {
    /// Produce `acks` other than 0, 1 or -1.
    InvalidRequiredAcks,
    /// A produce partition without records.
    MissingRecords,
    /// A resource type, operation or target this broker does not handle.
    Unsupported,
    /// Fields of one request that contradict each other (e.g. CreateTopics with both explicit
    /// assignments and a partition count).
    Inconsistent,
    /// DescribeCluster asking for an endpoint type (controllers) this listener does not serve.
    UnsupportedEndpointType,
    /// A topic named in a request does not exist.
    UnknownTopic,
    /// A topic id named in a request does not exist.
    UnknownTopicId,
    /// A partition has no leader right now.
    LeaderNotAvailable,
    /// The request waited longer than its timeout.
    TimedOut,
    /// An empty (or oversize) transactional id.
    InvalidTransactionalId,
    /// A fetch session id this broker never created.
    FetchSessionIdNotFound,
    /// A request that names another cluster's id (Fetch v12+ `ClusterId`).
    InconsistentClusterId,
    /// A follower fetch from a replica id that is no registered broker.
    UnknownReplica,
    /// A client wrote to an internal topic (`__consumer_offsets`, `__transaction_state`).
    InternalTopic,
    /// A FindCoordinator key type this broker does not coordinate (share groups).
    UnsupportedCoordinatorType,
}

/// Something that went wrong while serving one part of a request.
#[derive(Debug)]
pub enum Failure<'a> {
    Storage(&'a StorageError),
    Metadata(&'a RaftError),
    Rejected(&'a Rejection),
    Lookup(LeaderLookup),
    Partition(&'a PartitionError),
    Config(&'a ConfigProblem),
    ProducerIds(&'a ProducerIdError),
    Ops(&'a OpsError),
    Request(RequestProblem),
    /// The group coordinator refused a group request.
    Group(GroupProblem),
    /// A coordinator (this broker's share of it) could not serve the request.
    Coordinator(&'a CoordinatorError),
    /// The transaction coordinator refused a transactional request.
    Txn(TxnProblem),
}

/// A failure as a response carries it: the Kafka error code and the one-line message the client
/// sees with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
}

impl Refusal {
    /// `failure`'s code and its own message.
    pub fn of(failure: Failure<'_>) -> Refusal {
        let (code, message) = code_and_message(failure);
        Refusal { code, message }
    }

    /// `failure`'s code with a message of the caller's.
    pub fn with_message(failure: Failure<'_>, message: impl Into<String>) -> Refusal {
        Refusal {
            code: code(failure),
            message: message.into(),
        }
    }
}

impl From<&OpsError> for Refusal {
    fn from(error: &OpsError) -> Refusal {
        Refusal::of(Failure::Ops(error))
    }
}

impl From<OpsError> for Refusal {
    fn from(error: OpsError) -> Refusal {
        Refusal::from(&error)
    }
}

/// The Kafka error for `failure`.
pub fn error_code(failure: &Failure<'_>) -> ResponseError {
    use ResponseError as E;
    match failure {
        Failure::Storage(error) => match error {
            StorageError::InvalidBatch(batch) => match batch {
                BatchError::UnsupportedMagic(_) => E::UnsupportedForMessageFormat,
                BatchError::UnknownCompression(_) => E::UnsupportedCompressionType,
                BatchError::NotExactlyOneBatch(_)
                | BatchError::ControlBatchFromClient
                | BatchError::MissingSequence
                | BatchError::BadControlBatch => E::InvalidRecord,
                BatchError::TooShort { .. }
                | BatchError::LengthMismatch { .. }
                | BatchError::CrcMismatch { .. }
                | BatchError::BadRecordCount { .. } => E::CorruptMessage,
            },
            StorageError::BatchTooLarge { .. } => E::MessageTooLarge,
            StorageError::RecordCodec { .. } => E::CorruptMessage,
            StorageError::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
            StorageError::InvalidProducerEpoch { .. } => E::InvalidProducerEpoch,
            StorageError::TransactionCoordinatorFenced { .. } => E::TransactionCoordinatorFenced,
            StorageError::OutOfOrderSequence { .. } => E::OutOfOrderSequenceNumber,
            StorageError::InvalidTxnState { .. } => E::InvalidTxnState,
            StorageError::InvalidConfig { .. } => E::InvalidConfig,
            // Disk trouble: retriable, and clients refresh metadata (the partition may move).
            StorageError::Io { .. }
            | StorageError::CorruptLog { .. }
            | StorageError::AppendsBlocked { .. }
            | StorageError::CorruptCheckpoint { .. }
            | StorageError::Kv(_)
            | StorageError::UnknownColumnFamily(_) => E::KafkaStorageError,
            // Only replica fetchers append replicated batches; never a client's doing.
            StorageError::NonContiguousAppend { .. } | StorageError::NonMonotonicOffsets { .. } => {
                E::UnknownServerError
            }
        },
        Failure::Metadata(error) => match error {
            RaftError::Rejected(rejection) => error_code(&Failure::Rejected(rejection)),
            RaftError::NoController(_) => E::RequestTimedOut,
            RaftError::Stopped(_) | RaftError::CoreFailed(_) => E::BrokerNotAvailable,
            RaftError::Store(_)
            | RaftError::Config(_)
            | RaftError::Listener(_)
            | RaftError::Membership(_)
            | RaftError::InvalidClusterId { .. } => E::UnknownServerError,
        },
        Failure::Rejected(rejection) => match rejection {
            Rejection::InvalidTopicName { .. } => E::InvalidTopicException,
            Rejection::TopicAlreadyExists { .. } => E::TopicAlreadyExists,
            Rejection::UnknownTopic { .. } | Rejection::UnknownPartition { .. } => {
                E::UnknownTopicOrPartition
            }
            Rejection::UnknownTopicId { .. } => E::UnknownTopicId,
            Rejection::InvalidPartitions { .. } => E::InvalidPartitions,
            Rejection::InvalidReplicationFactor { .. } => E::InvalidReplicationFactor,
            Rejection::WrongAssignmentCount { .. } | Rejection::InvalidReplicaAssignment { .. } => {
                E::InvalidReplicaAssignment
            }
            Rejection::NotLeader { .. } => E::NotLeaderOrFollower,
            Rejection::FencedLeaderEpoch { .. } => E::FencedLeaderEpoch,
            Rejection::InvalidPartitionEpoch { .. } => E::InvalidUpdateVersion,
            Rejection::StaleBrokerEpoch { .. } | Rejection::StaleIncarnation { .. } => {
                E::StaleBrokerEpoch
            }
            Rejection::UnknownBroker { .. } => E::BrokerIdNotRegistered,
            Rejection::DuplicateBrokerRegistration { .. } => E::DuplicateBrokerRegistration,
            Rejection::InvalidTopicId { .. }
            | Rejection::DuplicateTopicId { .. }
            | Rejection::InvalidBrokerId { .. }
            | Rejection::InvalidIsr { .. }
            | Rejection::InvalidCount { .. } => E::InvalidRequest,
            Rejection::ProducerIdsExhausted => E::UnknownServerError,
            Rejection::NoReassignmentInProgress { .. } => E::NoReassignmentInProgress,
        },
        Failure::Lookup(lookup) => match lookup {
            LeaderLookup::Unknown => E::UnknownTopicOrPartition,
            LeaderLookup::NotLeader => E::NotLeaderOrFollower,
            LeaderLookup::FencedEpoch => E::FencedLeaderEpoch,
            LeaderLookup::UnknownEpoch => E::UnknownLeaderEpoch,
            LeaderLookup::LogDirOffline => E::KafkaStorageError,
        },
        Failure::Partition(error) => match error {
            PartitionError::Storage(error) => error_code(&Failure::Storage(error)),
            PartitionError::WrongRole(_) => E::NotLeaderOrFollower,
            PartitionError::NotEnoughReplicas => E::NotEnoughReplicas,
            PartitionError::NotEnoughReplicasAfterAppend => E::NotEnoughReplicasAfterAppend,
            PartitionError::OffsetOutOfRange => E::OffsetOutOfRange,
            PartitionError::OffsetNotAvailable => E::OffsetNotAvailable,
            // The outcome is unknown, or the broker is stopping: the client retries.
            PartitionError::TimedOut | PartitionError::TaskFailed => E::RequestTimedOut,
        },
        Failure::Config(_) => E::InvalidConfig,
        // Retriable: the block allocation waits for a registration or a controller.
        Failure::ProducerIds(_) => E::CoordinatorNotAvailable,
        Failure::Ops(error) => ops_error_code(error),
        Failure::Request(problem) => match problem {
            RequestProblem::InvalidRequiredAcks => E::InvalidRequiredAcks,
            RequestProblem::MissingRecords => E::CorruptMessage,
            RequestProblem::Unsupported | RequestProblem::Inconsistent => E::InvalidRequest,
            RequestProblem::UnsupportedEndpointType => E::UnsupportedEndpointType,
            RequestProblem::UnknownTopic => E::UnknownTopicOrPartition,
            RequestProblem::UnknownTopicId => E::UnknownTopicId,
            RequestProblem::LeaderNotAvailable => E::LeaderNotAvailable,
            RequestProblem::TimedOut => E::RequestTimedOut,
            RequestProblem::InvalidTransactionalId => E::InvalidRequest,
            RequestProblem::FetchSessionIdNotFound => E::FetchSessionIdNotFound,
            RequestProblem::InconsistentClusterId => E::InconsistentClusterId,
            RequestProblem::UnknownReplica => E::BrokerIdNotRegistered,
            RequestProblem::InternalTopic => E::InvalidTopicException,
            RequestProblem::UnsupportedCoordinatorType => E::InvalidRequest,
        },
        Failure::Group(problem) => group_error_code(*problem),
        Failure::Coordinator(error) => match error {
            CoordinatorError::NotCoordinator { .. }
            | CoordinatorError::Storage(_)
            | CoordinatorError::Replay { .. } => E::NotCoordinator,
            CoordinatorError::LoadInProgress { .. } => E::CoordinatorLoadInProgress,
            // Kafka's coordinators answer these retriable conditions as COORDINATOR_NOT_AVAILABLE
            // (`normalizeException`): clients look the coordinator up again and retry.
            CoordinatorError::NotAvailable { .. }
            | CoordinatorError::Timeout { .. }
            | CoordinatorError::NotEnoughReplicas { .. }
            | CoordinatorError::Metadata(_) => E::CoordinatorNotAvailable,
            CoordinatorError::Codec { .. } => E::UnknownServerError,
            CoordinatorError::Refused(error) => error_code(&Failure::Storage(error)),
        },
        Failure::Txn(problem) => match problem {
            TxnProblem::InvalidTransactionTimeout => E::InvalidTransactionTimeout,
            TxnProblem::InvalidProducerIdMapping => E::InvalidProducerIdMapping,
            TxnProblem::ProducerFenced => E::ProducerFenced,
            TxnProblem::ConcurrentTransactions => E::ConcurrentTransactions,
            TxnProblem::InvalidTxnState => E::InvalidTxnState,
            TxnProblem::TransactionalIdNotFound => E::TransactionalIdNotFound,
            TxnProblem::InvalidRegularExpression => E::InvalidRegularExpression,
            TxnProblem::InvalidTransactionalId => E::InvalidRequest,
        },
    }
}

fn group_error_code(problem: GroupProblem) -> ResponseError {
    use ResponseError as E;
    match problem {
        GroupProblem::InvalidGroupId => E::InvalidGroupId,
        GroupProblem::InvalidSessionTimeout => E::InvalidSessionTimeout,
        GroupProblem::UnknownMemberId => E::UnknownMemberId,
        GroupProblem::MemberIdRequired => E::MemberIdRequired,
        GroupProblem::IllegalGeneration => E::IllegalGeneration,
        GroupProblem::InconsistentGroupProtocol => E::InconsistentGroupProtocol,
        GroupProblem::RebalanceInProgress => E::RebalanceInProgress,
        GroupProblem::FencedInstanceId => E::FencedInstanceId,
        GroupProblem::GroupMaxSizeReached => E::GroupMaxSizeReached,
        GroupProblem::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
        GroupProblem::GroupIdNotFound => E::GroupIdNotFound,
        GroupProblem::NonEmptyGroup => E::NonEmptyGroup,
        GroupProblem::GroupSubscribedToTopic => E::GroupSubscribedToTopic,
        GroupProblem::OffsetMetadataTooLarge => E::OffsetMetadataTooLarge,
        GroupProblem::UnknownTopicOrPartition => E::UnknownTopicOrPartition,
        GroupProblem::FencedMemberEpoch => E::FencedMemberEpoch,
        GroupProblem::UnreleasedInstanceId => E::UnreleasedInstanceId,
        GroupProblem::UnsupportedAssignor => E::UnsupportedAssignor,
        GroupProblem::StaleMemberEpoch => E::StaleMemberEpoch,
        GroupProblem::InvalidRequest => E::InvalidRequest,
        GroupProblem::UnsupportedVersion => E::UnsupportedVersion,
    }
}

fn ops_error_code(error: &OpsError) -> ResponseError {
    use ResponseError as E;
    match error {
        OpsError::Metadata(error) => error_code(&Failure::Metadata(error)),
        OpsError::Rejected(rejection) => error_code(&Failure::Rejected(rejection)),
        OpsError::Config(problem) => error_code(&Failure::Config(problem)),
        OpsError::DuplicateTopic(_)
        | OpsError::DuplicateResource(_)
        | OpsError::DuplicateConfig(_)
        | OpsError::StaticBrokerConfigs
        | OpsError::OtherBroker { .. } => E::InvalidRequest,
        OpsError::UnknownTopic(_) | OpsError::UnknownPartition { .. } => E::UnknownTopicOrPartition,
        OpsError::UnknownTopicId(_) => E::UnknownTopicId,
        OpsError::InvalidPartitions(_) => E::InvalidPartitions,
        OpsError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor,
        OpsError::InvalidReplicaAssignment(_) => E::InvalidReplicaAssignment,
        OpsError::ElectionNotNeeded => E::ElectionNotNeeded,
        OpsError::PreferredLeaderNotAvailable => E::PreferredLeaderNotAvailable,
        OpsError::EligibleLeadersNotAvailable => E::EligibleLeadersNotAvailable,
        OpsError::Lookup(lookup) => error_code(&Failure::Lookup(*lookup)),
        OpsError::Partition(error) => error_code(&Failure::Partition(error)),
        // As a controller that does not answer: retriable.
        OpsError::UnexpectedAnswer(_) => E::RequestTimedOut,
    }
}

/// The wire code of `failure`.
pub fn code(failure: Failure<'_>) -> i16 {
    error_code(&failure).code()
}

/// The wire code and a one-line message (for responses that carry one).
pub fn code_and_message(failure: Failure<'_>) -> (i16, String) {
    let message = match &failure {
        Failure::Storage(e) => e.to_string(),
        Failure::Metadata(e) => e.to_string(),
        Failure::Rejected(r) => format!("{r:?}"),
        Failure::Lookup(l) => format!("{l:?}"),
        Failure::Partition(e) => e.to_string(),
        Failure::Config(p) => p.to_string(),
        Failure::ProducerIds(e) => e.to_string(),
        Failure::Ops(e) => e.to_string(),
        Failure::Request(p) => format!("{p:?}"),
        Failure::Group(p) => format!("{p:?}"),
        Failure::Coordinator(e) => e.to_string(),
        Failure::Txn(p) => format!("{p:?}"),
    };
    (code(failure), message)
}

/// Error codes given their own name; any other is `UNKNOWN` (a bounded label set).
const ERROR_CODES: std::ops::RangeInclusive<i16> = -1..=200;

/// Kafka's name of an error code (`NOT_LEADER_OR_FOLLOWER`, `NONE` for 0, `UNKNOWN` for a code
/// Kafka has not defined), from the protocol crate's variant names, built once: metric labels
/// and admin API errors use it.
pub fn error_name(code: i16) -> &'static str {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        ERROR_CODES
            .map(|code| match code.err() {
                None => "NONE",
                Some(ResponseError::Unknown(_)) => "UNKNOWN",
                Some(error) => Box::leak(upper_snake(&error.to_string()).into_boxed_str()),
            })
            .collect()
    });
    let index = i32::from(code) - i32::from(*ERROR_CODES.start());
    usize::try_from(index)
        .ok()
        .and_then(|i| names.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// `NotLeaderOrFollower` → `NOT_LEADER_OR_FOLLOWER`.
fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_produce_failures_are_retriable_codes() {
        let io = StorageError::AppendsBlocked { dir: "x".into() };
        for failure in [
            Failure::Storage(&io),
            Failure::Lookup(LeaderLookup::NotLeader),
            Failure::Lookup(LeaderLookup::Unknown),
            Failure::Lookup(LeaderLookup::LogDirOffline),
            Failure::Partition(&PartitionError::NotEnoughReplicas),
            Failure::Partition(&PartitionError::NotEnoughReplicasAfterAppend),
            Failure::Partition(&PartitionError::TimedOut),
            Failure::Partition(&PartitionError::TaskFailed),
            Failure::Partition(&PartitionError::WrongRole("leader")),
            Failure::Request(RequestProblem::TimedOut),
        ] {
            assert!(error_code(&failure).is_retriable(), "{failure:?}");
        }
    }

    #[test]
    fn client_mistakes_get_their_precise_codes() {
        let too_large = StorageError::BatchTooLarge {
            size_bytes: 10,
            limit_bytes: 5,
        };
        assert_eq!(code(Failure::Storage(&too_large)), 10);
        let crc = StorageError::InvalidBatch(BatchError::CrcMismatch {
            expected: 1,
            computed: 2,
        });
        assert_eq!(code(Failure::Storage(&crc)), 2);
        assert_eq!(
            code(Failure::Request(RequestProblem::InvalidRequiredAcks)),
            21
        );
        let exists = Rejection::TopicAlreadyExists { name: "t".into() };
        assert_eq!(code(Failure::Rejected(&exists)), 36);
        let partitions = Rejection::InvalidPartitions {
            requested: 0,
            current: 0,
        };
        assert_eq!(code(Failure::Rejected(&partitions)), 37);
        let sequence = StorageError::OutOfOrderSequence {
            producer_id: 1,
            first_sequence: 5,
            last_sequence: 1,
        };
        assert_eq!(code(Failure::Storage(&sequence)), 45);
        let epoch = StorageError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 0,
            current_epoch: 1,
        };
        assert_eq!(code(Failure::Storage(&epoch)), 47);
    }

    #[test]
    fn ops_errors_keep_the_codes_of_what_they_wrap() {
        let rejection = Rejection::TopicAlreadyExists { name: "t".into() };
        let written = OpsError::from(RaftError::Rejected(rejection.clone()));
        assert_eq!(code(Failure::Ops(&written)), 36);
        assert_eq!(code(Failure::Ops(&OpsError::Rejected(rejection))), 36);
        let problem = ConfigProblem::UnknownKey("k".into());
        assert_eq!(code(Failure::Ops(&OpsError::Config(problem))), 40);
        let no_controller = OpsError::from(RaftError::NoController("x".into()));
        assert!(error_code(&Failure::Ops(&no_controller)).is_retriable());
        let unknown = OpsError::UnknownPartition {
            topic: "t".into(),
            partition: -1,
        };
        assert_eq!(code(Failure::Ops(&unknown)), 3);
        assert_eq!(
            code(Failure::Ops(&OpsError::DuplicateTopic("t".into()))),
            42
        );
        assert_eq!(code(Failure::Ops(&OpsError::ElectionNotNeeded)), 84);
        let refusal = Refusal::from(OpsError::UnknownTopic("t".into()));
        assert_eq!(refusal.code, 3);
        assert_eq!(refusal.message, "unknown topic `t`");
    }
}
