//! Failures of admin calls as gRPC statuses: the code that fits the Kafka error, and a
//! `google.rpc.ErrorInfo` whose reason is the Kafka error name (domain `streambus.io`,
//! metadata `kafka_error_code`), so tools can branch on the same names as Kafka clients.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::kafka::errors::{error_code, error_name, Failure};
use crate::ops::OpsError;

/// The `ErrorInfo` domain of every admin error.
pub const ERROR_DOMAIN: &str = "streambus.io";

/// `error` as a status.
pub fn ops_status(error: &OpsError) -> Status {
    kafka_status(error_code(&Failure::Ops(error)), &error.to_string())
}

/// `error` as one failed item of a call that answers item by item.
pub fn item_error(error: &OpsError) -> streambus_proto::admin::v1::ItemError {
    let code = error_code(&Failure::Ops(error)).code();
    streambus_proto::admin::v1::ItemError {
        kafka_error: error_name(code).to_owned(),
        kafka_error_code: i32::from(code),
        message: error.to_string(),
    }
}

/// A malformed request: INVALID_ARGUMENT naming Kafka's INVALID_REQUEST.
pub fn invalid_request(message: &str) -> Status {
    status_with(
        Code::InvalidArgument,
        ResponseError::InvalidRequest,
        message,
    )
}

/// A status for Kafka error `error` with `message`.
pub fn kafka_status(error: ResponseError, message: &str) -> Status {
    status_with(grpc_code(error), error, message)
}

/// A status of gRPC `code` naming Kafka error `error`, with `message`.
pub fn status_with(code: Code, error: ResponseError, message: &str) -> Status {
    let kafka_code = error.code();
    let name = error_name(kafka_code);
    let metadata = HashMap::from([("kafka_error_code".to_owned(), kafka_code.to_string())]);
    Status::with_error_details(
        code,
        format!("{name}: {message}"),
        ErrorDetails::with_error_info(name, ERROR_DOMAIN, metadata),
    )
}

/// The gRPC code of a Kafka error.
fn grpc_code(error: ResponseError) -> Code {
    use ResponseError as E;
    match error {
        E::TopicAlreadyExists => Code::AlreadyExists,
        E::UnknownTopicOrPartition
        | E::UnknownTopicId
        | E::GroupIdNotFound
        | E::TransactionalIdNotFound => Code::NotFound,
        E::InvalidTopicException
        | E::InvalidPartitions
        | E::InvalidReplicationFactor
        | E::InvalidReplicaAssignment
        | E::InvalidConfig
        | E::InvalidRequest
        | E::PolicyViolation
        | E::InvalidTimestamp => Code::InvalidArgument,
        E::ElectionNotNeeded
        | E::PreferredLeaderNotAvailable
        | E::EligibleLeadersNotAvailable
        | E::NoReassignmentInProgress
        | E::ReassignmentInProgress
        | E::InvalidTxnState => Code::FailedPrecondition,
        E::ClusterAuthorizationFailed
        | E::TopicAuthorizationFailed
        | E::GroupAuthorizationFailed
        | E::TransactionalIdAuthorizationFailed => Code::PermissionDenied,
        // The outcome of the write is unknown: a retry is not known to be safe.
        E::RequestTimedOut => Code::DeadlineExceeded,
        E::NotController
        | E::LeaderNotAvailable
        | E::NotLeaderOrFollower
        | E::NotEnoughReplicas
        | E::CoordinatorNotAvailable
        | E::CoordinatorLoadInProgress
        | E::NotCoordinator
        | E::KafkaStorageError
        | E::BrokerNotAvailable => Code::Unavailable,
        E::UnsupportedVersion => Code::Unimplemented,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn a_refusal_carries_its_kafka_name_and_code() {
        let status = kafka_status(ResponseError::TopicAlreadyExists, "topic `a` exists");
        assert_eq!(status.code(), Code::AlreadyExists);
        assert!(status.message().starts_with("TOPIC_ALREADY_EXISTS: "));
        let info = status
            .get_details_error_info()
            .expect("an ErrorInfo in the details");
        assert_eq!(info.reason, "TOPIC_ALREADY_EXISTS");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["kafka_error_code"], "36");
        assert_eq!(
            kafka_status(ResponseError::UnknownTopicOrPartition, "x").code(),
            Code::NotFound
        );
        assert_eq!(
            kafka_status(ResponseError::InvalidPartitions, "x").code(),
            Code::InvalidArgument
        );
    }
}
