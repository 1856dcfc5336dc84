//! The `[topics]` table: broker-wide topic defaults beyond the partition-log settings, and
//! auto-creation; and [`CompressionType`], the `compression.type` value that both this default
//! and a topic's own config (`crate::topic_config`) spell.

use kafka_protocol::records::Compression;
use serde::{Deserialize, Serialize};

/// The `[topics]` table: broker-wide topic defaults beyond the log settings, and auto-creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    /// `auto.create.topics.enable`: Metadata and Produce requests for an unknown topic create it.
    pub auto_create_enable: bool,
    /// `num.partitions`: partitions of an auto-created topic, and of CreateTopics asking for -1.
    pub num_partitions: u32,
    /// `default.replication.factor`: replicas of an auto-created topic, and of CreateTopics asking
    /// for -1.
    pub default_replication_factor: u16,
    /// `compression.type`: `producer` keeps the client's codec; `uncompressed`, `gzip`, `snappy`,
    /// `lz4` or `zstd` make the broker recompress batches that use another codec.
    pub compression_type: String,
    /// `min.insync.replicas`: an `acks=all` produce fails with NOT_ENOUGH_REPLICAS when fewer
    /// replicas are in sync.
    pub min_insync_replicas: u32,
    /// `log.retention.check.interval.ms`: how often retention and compaction run.
    pub retention_check_interval_ms: u64,
    /// `producer.id.expiration.ms`: idempotent-producer state is dropped after this much silence.
    pub producer_id_expiration_ms: i64,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            auto_create_enable: true,
            num_partitions: 1,
            default_replication_factor: 1,
            compression_type: "producer".to_owned(),
            min_insync_replicas: 1,
            retention_check_interval_ms: 300_000,
            producer_id_expiration_ms: 24 * 60 * 60 * 1000,
        }
    }
}

/// The `compression.type` of a topic (or the broker default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Keep whatever codec the producer used.
    Producer,
    /// Store batches with this codec, recompressing those that use another.
    Codec(Compression),
}

impl CompressionType {
    /// Parses Kafka's spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value.trim() {
            "producer" => CompressionType::Producer,
            "uncompressed" | "none" => CompressionType::Codec(Compression::None),
            "gzip" => CompressionType::Codec(Compression::Gzip),
            "snappy" => CompressionType::Codec(Compression::Snappy),
            "lz4" => CompressionType::Codec(Compression::Lz4),
            "zstd" => CompressionType::Codec(Compression::Zstd),
            _ => return None,
        })
    }
}
