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
//! - [`consumer`]: [`Consumer`], assigned partitions, seeks, pipelined fetches, position and lag.
//! - [`group`]: [`GroupConsumer`], consumer groups over Kafka's classic protocol: subscriptions
//!   (topics or a pattern), the `range`, `roundrobin` and `cooperative-sticky` assignors,
//!   rebalance callbacks, static membership, auto and manual commits.
//! - [`admin`]: [`Admin`], topics, partitions, configs and the cluster over the Kafka admin APIs.
//! - [`partitioner`]: the Java client's murmur2 key partitioner and sticky keyless batching.
//! - [`metadata`], [`record`], [`error`]: the shared types.
//!
//! ```no_run
//! use std::time::Duration;
//! use streambus_client::admin::NewTopic;
//! use streambus_client::{
//!     Admin, Client, ClientConfig, Consumer, ConsumerConfig, GroupConfig, GroupConsumer, Producer,
//!     ProducerConfig, ProducerRecord, TopicPartition,
//! };
//!
//! # async fn example() -> streambus_client::Result<()> {
//! let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
//! Admin::new(client.clone())
//!     .create_topics(&[NewTopic::new("orders", 3, 1)], false)
//!     .await?;
//!
//! let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
//! let delivery = producer
//!     .send(ProducerRecord::new("orders", "42 widgets").with_key("customer-7"))
//!     .await?;
//! let written = delivery.await?; // acknowledged by every in-sync replica (acks=all)
//!
//! let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
//! let tp = TopicPartition::new("orders", written.partition);
//! consumer.assign([tp.clone()]);
//! consumer.seek(&tp, written.offset)?;
//! for record in consumer.poll(Duration::from_secs(1)).await? {
//!     println!("{}@{}: {:?}", record.partition, record.offset, record.value);
//! }
//!
//! // In a consumer group: partitions assigned by the group, positions committed.
//! let mut member = GroupConsumer::new(client, GroupConfig::new("orders-app"))?;
//! member.subscribe(["orders"]);
//! let records = member.poll(Duration::from_secs(1)).await?; // joins the group first
//! println!("{} records from the group's partitions", records.len());
//! member.commit_sync().await?;
//! member.close().await?; // commits (auto commit is on by default) and leaves the group
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod client;
mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod metadata;
pub mod partitioner;
pub mod producer;
pub mod record;

pub use admin::Admin;
pub use client::{Client, ClientConfig};
pub use consumer::{Consumer, ConsumerConfig, OffsetReset};
pub use error::{Error, Result};
pub use group::{
    Assignor, GroupConfig, GroupConsumer, GroupProtocol, OffsetAndMetadata, RebalanceContext,
    RebalanceListener,
};
pub use kafka_protocol::records::Compression;
pub use producer::{Acks, ConsumerGroupMetadata, DeliveryFuture, Producer, ProducerConfig};
pub use record::{ConsumerRecord, Header, ProducerRecord, RecordMetadata, TopicPartition};
