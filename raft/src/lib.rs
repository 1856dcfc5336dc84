//! StreamBus metadata quorum: the cluster's metadata replicated with openraft.
//!
//! Owns: the openraft type configuration, the commands and responses of the metadata state
//! machine (brokers, topics, partitions, producer-id blocks), and, in later issues, the state
//! machine itself, its RocksDB log store and the raft network over tonic.
//! Must not know: Kafka wire types or segment files. Brokers translate Kafka requests into
//! [`MetadataCommand`]s; this crate only orders and applies them.
//!
//! Modules:
//! - [`types`]: the openraft type configuration ([`TypeConfig`]).
//! - [`command`]: what can be written to the metadata log, and what applying it answers.
//! - [`error`]: the crate's error enum.

pub mod command;
pub mod error;
pub mod types;

pub use command::{MetadataCommand, MetadataResponse, Rejection};
pub use error::{RaftError, Result};
pub use types::TypeConfig;
