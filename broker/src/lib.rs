//! The StreamBus broker: the process that wires storage, the metadata quorum and the network
//! together, and the only crate that depends on all the others.
//!
//! Owns (as issues land): the Kafka listener and connections, one handler per Kafka API, the
//! partition manager, replica fetchers, the group and transaction coordinators, the admin gRPC
//! service, the HTTP metrics and health endpoints, and the broker configuration.
//! Must not: let request handlers touch segment files, RocksDB or raft internals directly; they go
//! through the partition manager, the coordinators and the metadata image.
//!
//! Modules:
//! - [`cli`]: the `streambus` command line.
//! - [`config`]: [`BrokerConfig`] and its resolution (defaults < file < environment < flags).
//! - [`error`]: the crate's error enum.
//! - [`frame`]: Kafka request framing with the `socket.request.max.bytes` bound.
//! - [`quorum`]: the `[metadata]` config and starting this broker's metadata quorum member.

pub mod cli;
pub mod config;
pub mod error;
pub mod frame;
pub mod quorum;

pub use config::BrokerConfig;
pub use error::{BrokerError, Result};
