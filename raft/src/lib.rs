//! StreamBus metadata quorum: the cluster's metadata replicated with openraft.
//!
//! Owns: the openraft type configuration, the metadata state machine (brokers, topics,
//! partitions, leaders, ISR, epochs, configs, producer-id blocks), its RocksDB log store and
//! snapshots, the raft network over tonic, the controller that runs on the raft leader, and the
//! node every broker runs to follow the committed metadata.
//! Must not know: Kafka wire types or segment files. Brokers translate Kafka requests into
//! [`MetadataCommand`]s; this crate only orders and applies them.
//!
//! Modules:
//! - [`types`]: the openraft type configuration ([`TypeConfig`]).
//! - [`command`]: what can be written to the metadata log, and what applying it answers.
//! - [`image`]: the metadata image and the pure, deterministic state machine that changes it.
//! - [`store`]: the RocksDB raft log store and the snapshotting state machine adapter.
//! - [`identity`]: the cluster id and the identity checks every raft and controller request
//!   passes before it reaches openraft or the controller.
//! - [`network`]: openraft RPCs over tonic, client and server.
//! - [`controller`]: leader-only duties: proposing writes, broker sessions and fencing.
//! - [`node`]: [`MetadataNode`], a running quorum member with its published image.
//! - [`lifecycle`]: [`BrokerLifecycle`], a broker's registration and heartbeats.
//! - [`error`]: the crate's error enum.
//! - `testing` (feature `test-util`): an in-process loopback cluster for tests and benchmarks.

pub mod command;
pub mod controller;
pub mod error;
pub mod identity;
pub mod image;
pub mod lifecycle;
pub mod network;
pub mod node;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod types;

pub use command::{MetadataCommand, MetadataResponse, Rejection};
pub use controller::{Heartbeat, HeartbeatReply};
pub use error::{RaftError, Result};
pub use identity::{ClusterId, NodeIdentity};
pub use image::MetadataImage;
pub use lifecycle::{BrokerInfo, BrokerLifecycle, RegistrationState};
pub use node::{MetadataNode, NodeConfig};
pub use types::{NodeId, TypeConfig};
