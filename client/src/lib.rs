//! StreamBus client: the Rust producer, consumer and admin SDK, and the `sbctl` command line.
//!
//! Owns: everything a StreamBus (or any Kafka-compatible broker) user runs on their side,
//! speaking only the Kafka wire protocol, so it works against StreamBus and Kafka alike.
//! Must not depend on: the broker, storage or raft crates; a client that linked broker internals
//! could pass tests that a real, separately built client would fail.
//!
//! Modules:
//! - [`client`]: [`Client`], bootstrap, one multiplexed connection per broker, the metadata
//!   cache and retries with backoff (`connection` holds the per-connection pipelining).
//! - [`producer`]: [`Producer`], batching per partition with `linger`, `batch_size` and a
//!   `buffer_memory` bound, compression, acks 0/1/all, idempotence, ordered retries.
//! - [`consumer`]: [`Consumer`], assigned partitions (no group membership yet), seeks, pipelined
//!   fetches, position and lag.
//! - [`admin`]: [`Admin`], topics, partitions, configs and the cluster over the Kafka admin APIs.
//! - [`partitioner`]: the Java client's murmur2 key partitioner and sticky keyless batching.
//! - [`metadata`], [`record`], [`error`]: the shared types.

pub mod admin;
pub mod client;
mod connection;
pub mod consumer;
pub mod error;
pub mod metadata;
pub mod partitioner;
pub mod producer;
pub mod record;

pub use admin::Admin;
pub use client::{Client, ClientConfig};
pub use consumer::{Consumer, ConsumerConfig, OffsetReset};
pub use error::{Error, Result};
pub use kafka_protocol::records::Compression;
pub use producer::{Acks, DeliveryFuture, Producer, ProducerConfig};
pub use record::{ConsumerRecord, Header, ProducerRecord, RecordMetadata, TopicPartition};
