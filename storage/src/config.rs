//! Per-log configuration: the Kafka topic configs the storage layer honours, with Kafka's defaults.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// What happens to old data: Kafka's `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Whole segments are deleted by `retention.ms` / `retention.bytes`.
    #[default]
    Delete,
    /// Only the latest record per key is kept (`compact`).
    Compact,
    /// Both (`compact,delete`).
    CompactDelete,
}

impl CleanupPolicy {
    /// Parses Kafka's spelling (`delete`, `compact`, `compact,delete` in either order).
    pub fn parse(value: &str) -> Option<Self> {
        let mut compact = false;
        let mut delete = false;
        for part in value.split(',').map(str::trim) {
            match part {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(CleanupPolicy::CompactDelete),
            (true, false) => Some(CleanupPolicy::Compact),
            (false, true) => Some(CleanupPolicy::Delete),
            (false, false) => None,
        }
    }

    /// Whether segments are deleted by retention limits.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Whether the log is compacted.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
}

/// The settings of one partition log. Field names follow Kafka's topic configs, units last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment once it would exceed this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment once its first append is this old.
    pub segment_ms: i64,
    /// `retention.bytes`: delete old segments while the log is larger than this (-1: no limit).
    pub retention_bytes: i64,
    /// `retention.ms`: delete segments whose newest timestamp is older than this (-1: forever).
    pub retention_ms: i64,
    /// `index.interval.bytes`: bytes between two sparse offset/time index entries.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: largest record batch accepted.
    pub max_message_bytes: usize,
    /// `flush.messages`: fsync after this many appended records (`i64::MAX`, Kafka's default:
    /// never by count).
    pub flush_messages: i64,
    /// `flush.ms`: fsync when the oldest unflushed append is this old (`i64::MAX`: never by time).
    pub flush_ms: i64,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: i64,
    /// `message.timestamp.type=LogAppendTime` when true, CreateTime otherwise.
    pub log_append_time: bool,
    /// Old segments whose file handles and indexes may stay open at once (the active one aside).
    pub open_segments_max: usize,
    /// Check the CRC32C of every batch a read returns, so corrupt bytes on disk are reported
    /// instead of served (Kafka leaves this to consumers). Costs about 40 µs per MiB read on
    /// the benchmark machine; see `cargo bench -p streambus-storage`.
    pub verify_crc_on_read: bool,
    /// Newest bytes of the active segment kept in the page cache once written (at least half of
    /// them); older bytes are handed to writeback and dropped from the cache, and so are older
    /// bytes a reader catching up has read (drop-behind, see `page_cache`). Readers further
    /// behind read from disk. 0 keeps everything cached, as Kafka does.
    pub page_cache_retain_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            log_append_time: false,
            open_segments_max: 4,
            verify_crc_on_read: true,
            page_cache_retain_bytes: 16 * 1024 * 1024,
        }
    }
}

impl LogConfig {
    /// Rejects values the log cannot work with.
    pub fn validate(&self) -> Result<()> {
        let invalid = |key, reason| Err(StorageError::InvalidConfig { key, reason });
        // A segment must hold at least one batch header and offsets relative to its base fit u32.
        if self.segment_bytes < 1024 || self.segment_bytes > i32::MAX as u64 {
            return invalid("segment.bytes", "must be between 1024 and 2^31-1");
        }
        if self.segment_ms <= 0 {
            return invalid("segment.ms", "must be positive");
        }
        if self.index_interval_bytes == 0 {
            return invalid("index.interval.bytes", "must be positive");
        }
        if self.max_message_bytes < 64 {
            return invalid("max.message.bytes", "must be at least 64");
        }
        if self.flush_messages < 1 {
            return invalid("flush.messages", "must be at least 1");
        }
        if self.flush_ms < 0 || self.delete_retention_ms < 0 {
            return invalid("flush.ms/delete.retention.ms", "must not be negative");
        }
        if self.open_segments_max == 0 {
            return invalid("open.segments.max", "must be at least 1");
        }
        // Below that the 1 MiB minimum step lets writeback lag the window, and a read's advice
        // would start writeback on the reading thread.
        if self.page_cache_retain_bytes != 0 && self.page_cache_retain_bytes < 4 * 1024 * 1024 {
            return invalid(
                "page_cache_retain_bytes",
                "must be 0 (off) or at least 4 MiB",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_policy_parses_kafka_spellings() {
        assert_eq!(CleanupPolicy::parse("delete"), Some(CleanupPolicy::Delete));
        assert_eq!(
            CleanupPolicy::parse("compact"),
            Some(CleanupPolicy::Compact)
        );
        assert_eq!(
            CleanupPolicy::parse("delete, compact"),
            Some(CleanupPolicy::CompactDelete)
        );
        assert_eq!(CleanupPolicy::parse("shred"), None);
        assert_eq!(CleanupPolicy::parse(""), None);
    }

    #[test]
    fn defaults_are_valid_and_bad_values_rejected() {
        LogConfig::default().validate().expect("defaults valid");
        let bad = LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(StorageError::InvalidConfig {
                key: "segment.bytes",
                ..
            })
        ));
        for (retain, valid) in [(0, true), (4 << 20, true), (1 << 20, false)] {
            let config = LogConfig {
                page_cache_retain_bytes: retain,
                ..LogConfig::default()
            };
            assert_eq!(config.validate().is_ok(), valid, "retain {retain}");
        }
    }
}
