//! [`Error`]: every way a client call can fail, with the Kafka error code when the broker sent one.

use std::time::Duration;

use kafka_protocol::ResponseError;

/// What went wrong. [`Error::is_retriable`] says whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker answered with a Kafka error code.
    #[error("{} (Kafka error code {code}){}", kafka_name(.error), context_suffix(.context))]
    Kafka {
        error: ResponseError,
        code: i16,
        /// The broker's error message, or what the request was about.
        context: Option<String>,
    },
    /// No broker from the bootstrap list (or the cluster metadata) could be reached.
    #[error("no broker reachable (tried {tried}): {last}")]
    NoBrokerReachable { tried: String, last: String },
    /// Connecting to or talking to one broker failed.
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection closed before the response arrived.
    #[error("connection to {0} closed")]
    Disconnected(String),
    /// No answer within the configured time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The broker sent something this client cannot decode, or does not support what it needs.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The topic does not exist (or has no such partition).
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    /// A record larger than `max_request_size`, refused before sending.
    #[error("record of {size} bytes exceeds max_request_size {max}")]
    RecordTooLarge { size: usize, max: usize },
    /// `buffer_memory` stayed full for `max_block`.
    #[error("buffer memory full for {0:?}")]
    BufferExhausted(Duration),
    /// The producer or consumer was closed.
    #[error("closed")]
    Closed,
    /// Invalid argument or configuration.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// `TOPIC_ALREADY_EXISTS` for `TopicAlreadyExists`: the names Kafka's docs and tools use.
fn kafka_name(error: &ResponseError) -> String {
    let camel = error.to_string();
    if matches!(error, ResponseError::Unknown(_)) {
        return camel;
    }
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

fn context_suffix(context: &Option<String>) -> String {
    match context {
        Some(text) if !text.is_empty() => format!(": {text}"),
        _ => String::new(),
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error for a non-zero Kafka error `code`.
    pub fn kafka(code: i16, context: Option<String>) -> Error {
        let error = ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code));
        Error::Kafka {
            error,
            code,
            context,
        }
    }

    /// `Ok(())` for code 0, the error otherwise.
    pub fn check(code: i16, context: impl FnOnce() -> Option<String>) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(Error::kafka(code, context()))
        }
    }

    /// The Kafka error code, if the broker sent one.
    pub fn kafka_code(&self) -> Option<i16> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying again (after a metadata refresh and a backoff) can succeed: network
    /// failures, timeouts and the Kafka codes the protocol marks retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { error, .. } => error.is_retriable(),
            Error::NoBrokerReachable { .. }
            | Error::Io { .. }
            | Error::Disconnected(_)
            | Error::Timeout(_) => true,
            _ => false,
        }
    }

    /// Whether the cached metadata (leaders, partition counts) is probably stale.
    pub fn needs_metadata_refresh(&self) -> bool {
        matches!(
            self,
            Error::Kafka {
                error: ResponseError::NotLeaderOrFollower
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch
                    | ResponseError::NotController
                    | ResponseError::ReplicaNotAvailable,
                ..
            } | Error::Io { .. }
                | Error::Disconnected(_)
                | Error::Timeout(_)
        )
    }
}

impl Clone for Error {
    /// A copy for fanning one failure out to many records; an I/O error keeps its kind and text.
    fn clone(&self) -> Error {
        match self {
            Error::Kafka {
                error,
                code,
                context,
            } => Error::Kafka {
                error: *error,
                code: *code,
                context: context.clone(),
            },
            Error::NoBrokerReachable { tried, last } => Error::NoBrokerReachable {
                tried: tried.clone(),
                last: last.clone(),
            },
            Error::Io { addr, source } => Error::Io {
                addr: addr.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Disconnected(addr) => Error::Disconnected(addr.clone()),
            Error::Timeout(d) => Error::Timeout(*d),
            Error::Protocol(text) => Error::Protocol(text.clone()),
            Error::UnknownTopicOrPartition(text) => Error::UnknownTopicOrPartition(text.clone()),
            Error::RecordTooLarge { size, max } => Error::RecordTooLarge {
                size: *size,
                max: *max,
            },
            Error::BufferExhausted(d) => Error::BufferExhausted(*d),
            Error::Closed => Error::Closed,
            Error::InvalidArgument(text) => Error::InvalidArgument(text.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_display_with_kafka_names() {
        let error = Error::kafka(36, Some("topic \"t\" already exists".to_owned()));
        assert_eq!(
            error.to_string(),
            "TOPIC_ALREADY_EXISTS (Kafka error code 36): topic \"t\" already exists"
        );
        assert!(!error.is_retriable());
        assert!(Error::kafka(6, None).is_retriable());
        assert!(Error::kafka(6, None).needs_metadata_refresh());
        assert_eq!(Error::kafka(-1, None).kafka_code(), Some(-1));
    }
}
