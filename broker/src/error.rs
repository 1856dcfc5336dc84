//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from, so an error can point at the layer to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The TOML file given with `--config`.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag, as spelled on the command line.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Everything the broker crate reports as an error. Messages are one line and name the config
/// key at fault, because operators read them in a terminal or a journal.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot read config file {path}")]
    ReadConfigFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("config file {path} is not valid TOML: line {line}: {message}")]
    ParseConfigFile {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("unknown config key `{key}` in {origin}")]
    UnknownKey { key: String, origin: Origin },

    #[error(
        "unknown environment variable {name}: the STREAMBUS_ prefix is reserved for config keys \
         (e.g. STREAMBUS_NODE_ID, STREAMBUS_LOG_SEGMENT_BYTES)"
    )]
    UnknownEnvVar { name: String },

    #[error("invalid value for `{key}` in {origin}: {reason}")]
    InvalidValue {
        key: String,
        origin: Origin,
        reason: String,
    },

    #[error("--set expects KEY=VALUE, got `{arg}`")]
    MalformedSet { arg: String },

    /// A value that parses but breaks a rule spanning the resolved configuration.
    #[error("invalid config `{key}`: {reason}")]
    InvalidConfig { key: &'static str, reason: String },

    #[error("invalid [log] defaults")]
    InvalidLogDefaults(#[source] streambus_storage::StorageError),

    /// One `[log]` key out of its range, named as the file spells it.
    #[error("invalid config `log.{key}`: {reason}")]
    InvalidLogDefault { key: String, reason: &'static str },

    #[error("cannot bind {listener} on {addr}")]
    Bind {
        listener: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read or write {path}")]
    MetaPropertiesIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a valid meta.properties: {reason}")]
    CorruptMetaProperties { path: PathBuf, reason: String },

    /// Kafka's INCONSISTENT_CLUSTER_ID at startup: the data directory holds another cluster's
    /// data.
    #[error(
        "INCONSISTENT_CLUSTER_ID: {path} says this data directory belongs to cluster {found:?}, \
         but `cluster_id` is {configured:?}; point data_dir at this cluster's data or fix cluster_id"
    )]
    InconsistentClusterId {
        path: PathBuf,
        found: String,
        configured: String,
    },

    #[error(
        "{path} says this data directory belongs to node {found}, but `node_id` is {configured}; \
         point data_dir at node {configured}'s data or fix node_id"
    )]
    InconsistentNodeId {
        path: PathBuf,
        found: i32,
        configured: i32,
    },

    #[error(
        "`cluster_id` must be set: {data_dir} has no meta.properties yet and this broker is one of \
         several (metadata.quorum_voters is set); generate an id once with \
         `streambus --new-cluster-id` and give it to every broker of the cluster"
    )]
    ClusterIdRequired { data_dir: PathBuf },

    #[error("metadata quorum")]
    Metadata(#[from] streambus_raft::RaftError),

    #[error("partition storage")]
    Storage(#[from] streambus_storage::StorageError),
}

/// `Result` with [`BrokerError`].
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
