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
//! - [`admin`]: the admin gRPC listener: `streambus.admin.v1`, health and reflection.
//! - [`blocking`]: the broker's one way onto blocking threads, and the debug check that
//!   partition log locks are never taken on a runtime worker.
//! - [`broker`]: starting and stopping a whole broker (quorum member, partitions, listener).
//! - [`cli`]: the `streambus` command line.
//! - [`config`]: [`BrokerConfig`] and its resolution (defaults < file < environment < flags).
//! - [`context`]: what request handlers share.
//! - [`coordinator`]: the runtime of coordinators whose state lives in internal topics.
//! - [`endpoints`]: the names of a broker's registered endpoints, and live brokers' Kafka
//!   endpoints in the image.
//! - [`error`]: the crate's error enum.
//! - [`frame`]: Kafka request framing with the `socket.request.max.bytes` bound.
//! - [`group`]: the group coordinator (classic consumer groups, committed offsets).
//! - [`http`]: the HTTP listener: `/metrics` and the health endpoints.
//! - [`identity`]: the data directory's `meta.properties` (cluster id, node id) and its checks.
//! - [`inter_broker`]: one bounded Kafka-protocol connection to another broker (replica
//!   fetchers, coordinator-to-leader calls).
//! - [`kafka`]: the Kafka protocol listener, API handlers and error mapping.
//! - [`ops`]: cluster operations (topics, configs, reassignments, elections) in domain types,
//!   under every admin protocol.
//! - [`partition`]: the partitions hosted here, their data path (append, read) and maintenance.
//! - [`peer_pool`]: pooled connections to other brokers for coordinators' calls.
//! - [`principal`]: the authenticated identity behind a request.
//! - [`producer_ids`]: producer ids from quorum-allocated blocks.
//! - [`quorum`]: starting this broker's metadata quorum member.
//! - [`replication`]: replica fetchers and ISR maintenance between brokers.
//! - [`telemetry`]: Prometheus metrics: the recorder, request and traffic series, scrape-time
//!   gauges, process series.
//! - [`topic_config`]: Kafka topic configs: validation, resolution, description.
//! - [`txn`]: the transaction coordinator over `__transaction_state`.

pub mod admin;
pub mod blocking;
pub mod broker;
pub mod cli;
pub mod config;
pub mod context;
pub mod coordinator;
pub mod endpoints;
pub mod error;
pub mod frame;
pub mod group;
pub mod http;
pub mod identity;
pub mod inter_broker;
pub mod kafka;
pub mod ops;
pub mod partition;
pub mod peer_pool;
pub mod principal;
pub mod producer_ids;
pub mod quorum;
pub mod replication;
pub mod telemetry;
#[cfg(test)]
pub mod testing;
pub mod topic_config;
pub mod txn;

pub use config::BrokerConfig;
pub use error::{BrokerError, Result};
