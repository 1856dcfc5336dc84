//! The crate's error type.

use crate::command::{MetadataResponse, Rejection};

/// Everything that can go wrong in the metadata quorum, as seen by its callers.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// The state machine refused the command (see [`Rejection`]); retrying it unchanged fails
    /// the same way.
    #[error("metadata command rejected: {0}")]
    Rejected(Rejection),
    /// The metadata database could not be opened, read or written.
    #[error("metadata store: {0}")]
    Store(String),
    /// The node's configuration cannot work (e.g. this node is not among the initial voters it
    /// was told to bootstrap).
    #[error("invalid metadata quorum config: {0}")]
    Config(String),
    /// Binding or serving the raft listener failed.
    #[error("raft listener: {0}")]
    Listener(String),
    /// No controller answered before the deadline (no quorum, or an election still running).
    #[error("no controller available: {0}")]
    NoController(String),
    /// A membership change was refused or failed.
    #[error("membership change failed: {0}")]
    Membership(String),
    /// The raft core stopped (shutdown, or a storage failure it cannot survive).
    #[error("metadata quorum stopped: {0}")]
    Stopped(String),
    /// The raft core stopped on its own (openraft's `Fatal`: a panic or a storage error): this
    /// node serves no metadata any more, and only a restart of the process brings it back.
    #[error("the raft core failed ({0}); the process must restart")]
    CoreFailed(String),
    /// A cluster id that cannot be one (see [`crate::identity::ClusterId`]).
    #[error("invalid cluster id {value:?}: {reason}")]
    InvalidClusterId { value: String, reason: &'static str },
}

/// `Result` with [`RaftError`].
pub type Result<T, E = RaftError> = std::result::Result<T, E>;

impl MetadataResponse {
    /// Turns a rejection into an error, so callers can use `?` on the outcome of a write.
    pub fn into_result(self) -> Result<MetadataResponse> {
        match self {
            MetadataResponse::Rejected(rejection) => Err(RaftError::Rejected(rejection)),
            applied => Ok(applied),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_responses_become_errors_and_others_pass_through() {
        let rejected = MetadataResponse::Rejected(Rejection::UnknownTopic {
            name: "orders".to_owned(),
        });
        let error = rejected.into_result().expect_err("rejection is an error");
        assert_eq!(
            error.to_string(),
            "metadata command rejected: topic \"orders\" does not exist"
        );
        let applied = MetadataResponse::BrokerRegistered { broker_epoch: 3 };
        assert_eq!(applied.clone().into_result().expect("applied"), applied);
    }
}
