//! Kafka topic configs: which keys a topic may set, how their values are checked, how a topic's
//! stored configs combine with the broker defaults into the settings its partitions run with,
//! and how they are described back to clients.
//!
//! Values are stored in the metadata image as the strings clients sent (Kafka spelling), after
//! [`validate`] accepted them, so every broker resolves them the same way.

use std::collections::BTreeMap;

use streambus_storage::{CleanupPolicy, LogConfig};

pub use crate::config::CompressionType;
use crate::config::{BrokerConfig, TopicsConfig};

pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const COMPRESSION_TYPE: &str = "compression.type";
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";
pub const FLUSH_MESSAGES: &str = "flush.messages";
pub const FLUSH_MS: &str = "flush.ms";
pub const INDEX_INTERVAL_BYTES: &str = "index.interval.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const MESSAGE_TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const RETENTION_MS: &str = "retention.ms";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str =
    streambus_raft::image::UNCLEAN_LEADER_ELECTION_CONFIG;

/// Every topic config key the broker knows, sorted (DescribeConfigs lists them in this order).
pub const KEYS: &[&str] = &[
    CLEANUP_POLICY,
    COMPRESSION_TYPE,
    DELETE_RETENTION_MS,
    FLUSH_MESSAGES,
    FLUSH_MS,
    INDEX_INTERVAL_BYTES,
    MAX_MESSAGE_BYTES,
    MESSAGE_TIMESTAMP_TYPE,
    MIN_INSYNC_REPLICAS,
    RETENTION_BYTES,
    RETENTION_MS,
    SEGMENT_BYTES,
    SEGMENT_MS,
    UNCLEAN_LEADER_ELECTION_ENABLE,
];

/// What a partition of a topic runs with: topic configs over broker defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    pub log: LogConfig,
    pub compression: CompressionType,
    pub min_insync_replicas: u32,
}

/// Why a config value was refused (answered as INVALID_CONFIG with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    #[error("unknown topic config `{0}`")]
    UnknownKey(String),
    #[error("invalid value `{value}` for `{key}`: {expected}")]
    InvalidValue {
        key: String,
        value: String,
        expected: &'static str,
    },
}

fn parse_long(value: &str, min: i64, max: i64) -> Option<i64> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|v| (min..=max).contains(v))
}

/// Checks one key and value; `Ok` means [`resolve`] will use it.
pub fn validate(key: &str, value: &str) -> Result<(), ConfigProblem> {
    let bad = |expected| ConfigProblem::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    };
    let ok = match key {
        CLEANUP_POLICY => CleanupPolicy::parse(value).is_some(),
        COMPRESSION_TYPE => CompressionType::parse(value).is_some(),
        MESSAGE_TIMESTAMP_TYPE => matches!(value.trim(), "CreateTime" | "LogAppendTime"),
        UNCLEAN_LEADER_ELECTION_ENABLE => matches!(value.trim(), "true" | "false"),
        DELETE_RETENTION_MS | FLUSH_MS => parse_long(value, 0, i64::MAX).is_some(),
        FLUSH_MESSAGES | SEGMENT_MS => parse_long(value, 1, i64::MAX).is_some(),
        INDEX_INTERVAL_BYTES => parse_long(value, 1, i32::MAX.into()).is_some(),
        MAX_MESSAGE_BYTES => parse_long(value, 64, i32::MAX.into()).is_some(),
        MIN_INSYNC_REPLICAS => parse_long(value, 1, i32::MAX.into()).is_some(),
        RETENTION_BYTES | RETENTION_MS => parse_long(value, -1, i64::MAX).is_some(),
        SEGMENT_BYTES => parse_long(value, 1024, i32::MAX.into()).is_some(),
        _ => return Err(ConfigProblem::UnknownKey(key.to_owned())),
    };
    if ok {
        return Ok(());
    }
    Err(bad(match key {
        CLEANUP_POLICY => "delete, compact or compact,delete",
        COMPRESSION_TYPE => "producer, uncompressed, gzip, snappy, lz4 or zstd",
        MESSAGE_TIMESTAMP_TYPE => "CreateTime or LogAppendTime",
        UNCLEAN_LEADER_ELECTION_ENABLE => "true or false",
        DELETE_RETENTION_MS | FLUSH_MS => "an integer >= 0",
        FLUSH_MESSAGES | SEGMENT_MS => "an integer >= 1",
        INDEX_INTERVAL_BYTES | MIN_INSYNC_REPLICAS => "an integer between 1 and 2^31-1",
        MAX_MESSAGE_BYTES => "an integer between 64 and 2^31-1",
        RETENTION_BYTES | RETENTION_MS => "an integer >= -1",
        _ => "an integer between 1024 and 2^31-1",
    }))
}

/// Checks a whole set of configs (CreateTopics, AlterConfigs).
pub fn validate_all<'a>(
    configs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ConfigProblem> {
    configs
        .into_iter()
        .try_for_each(|(key, value)| validate(key, value))
}

/// The settings of a topic with `configs` on a broker with `config`. Values that fail
/// [`validate`] (which the broker never stores) are ignored in favour of the default.
pub fn resolve(config: &BrokerConfig, configs: &BTreeMap<String, String>) -> TopicSettings {
    let mut log = config.log.clone();
    let mut compression = CompressionType::parse(&config.topics.compression_type)
        .unwrap_or(CompressionType::Producer);
    let mut min_insync_replicas = config.topics.min_insync_replicas;
    for (key, value) in configs {
        if validate(key, value).is_err() {
            tracing::warn!(key, value, "ignoring an invalid stored topic config");
            continue;
        }
        let long = || value.trim().parse::<i64>().unwrap_or_default();
        match key.as_str() {
            CLEANUP_POLICY => {
                log.cleanup_policy = CleanupPolicy::parse(value).unwrap_or(log.cleanup_policy)
            }
            COMPRESSION_TYPE => compression = CompressionType::parse(value).unwrap_or(compression),
            DELETE_RETENTION_MS => log.delete_retention_ms = long(),
            FLUSH_MESSAGES => log.flush_messages = long(),
            FLUSH_MS => log.flush_ms = long(),
            INDEX_INTERVAL_BYTES => log.index_interval_bytes = long() as u64,
            MAX_MESSAGE_BYTES => log.max_message_bytes = long() as usize,
            MESSAGE_TIMESTAMP_TYPE => log.log_append_time = value.trim() == "LogAppendTime",
            MIN_INSYNC_REPLICAS => min_insync_replicas = long() as u32,
            RETENTION_BYTES => log.retention_bytes = long(),
            RETENTION_MS => log.retention_ms = long(),
            SEGMENT_BYTES => log.segment_bytes = long() as u64,
            SEGMENT_MS => log.segment_ms = long(),
            _ => {}
        }
    }
    TopicSettings {
        log,
        compression,
        min_insync_replicas,
    }
}

/// Where a described value comes from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic (`DYNAMIC_TOPIC_CONFIG`, 1).
    Topic,
    /// From the broker's config file, environment or flags (`STATIC_BROKER_CONFIG`, 4).
    StaticBroker,
    /// The built-in default (`DEFAULT_CONFIG`, 5).
    Default,
}

impl ConfigSource {
    /// The wire value.
    pub fn code(self) -> i8 {
        match self {
            ConfigSource::Topic => 1,
            ConfigSource::StaticBroker => 4,
            ConfigSource::Default => 5,
        }
    }
}

/// One described topic config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedConfig {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
}

/// The broker-level value of every key, as text.
fn broker_values(log: &LogConfig, topics: &TopicsConfig) -> BTreeMap<&'static str, String> {
    let cleanup = match log.cleanup_policy {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
        CleanupPolicy::CompactDelete => "compact,delete",
    };
    BTreeMap::from([
        (CLEANUP_POLICY, cleanup.to_owned()),
        (COMPRESSION_TYPE, topics.compression_type.clone()),
        (DELETE_RETENTION_MS, log.delete_retention_ms.to_string()),
        (FLUSH_MESSAGES, log.flush_messages.to_string()),
        (FLUSH_MS, log.flush_ms.to_string()),
        (INDEX_INTERVAL_BYTES, log.index_interval_bytes.to_string()),
        (MAX_MESSAGE_BYTES, log.max_message_bytes.to_string()),
        (
            MESSAGE_TIMESTAMP_TYPE,
            if log.log_append_time {
                "LogAppendTime"
            } else {
                "CreateTime"
            }
            .to_owned(),
        ),
        (MIN_INSYNC_REPLICAS, topics.min_insync_replicas.to_string()),
        (RETENTION_BYTES, log.retention_bytes.to_string()),
        (RETENTION_MS, log.retention_ms.to_string()),
        (SEGMENT_BYTES, log.segment_bytes.to_string()),
        (SEGMENT_MS, log.segment_ms.to_string()),
        (UNCLEAN_LEADER_ELECTION_ENABLE, "false".to_owned()),
    ])
}

/// Every known key of a topic with `configs`, with its effective value and source.
pub fn describe(config: &BrokerConfig, configs: &BTreeMap<String, String>) -> Vec<DescribedConfig> {
    let effective = broker_values(&config.log, &config.topics);
    let builtin = broker_values(&LogConfig::default(), &TopicsConfig::default());
    KEYS.iter()
        .map(|&name| {
            let (value, source) = match configs.get(name) {
                Some(value) => (value.clone(), ConfigSource::Topic),
                None if effective[name] != builtin[name] => {
                    (effective[name].clone(), ConfigSource::StaticBroker)
                }
                None => (effective[name].clone(), ConfigSource::Default),
            };
            DescribedConfig {
                name,
                value,
                source,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::Compression;

    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keys_are_sorted_and_all_validated() {
        let mut sorted = KEYS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, KEYS);
        let described = describe(&BrokerConfig::default(), &BTreeMap::new());
        for entry in described {
            validate(entry.name, &entry.value).expect(entry.name);
            assert_eq!(entry.source, ConfigSource::Default);
        }
    }

    #[test]
    fn bad_values_and_unknown_keys_are_refused() {
        for (key, value) in [
            (RETENTION_MS, "-2"),
            (RETENTION_MS, "soon"),
            (SEGMENT_BYTES, "100"),
            (CLEANUP_POLICY, "shred"),
            (COMPRESSION_TYPE, "brotli"),
            (MESSAGE_TIMESTAMP_TYPE, "Whenever"),
            (MIN_INSYNC_REPLICAS, "0"),
            (MAX_MESSAGE_BYTES, "10"),
        ] {
            assert!(
                matches!(
                    validate(key, value),
                    Err(ConfigProblem::InvalidValue { .. })
                ),
                "{key}={value}"
            );
        }
        assert_eq!(
            validate("retention.msec", "1"),
            Err(ConfigProblem::UnknownKey("retention.msec".to_owned()))
        );
    }

    #[test]
    fn topic_configs_override_broker_defaults() {
        let mut broker = BrokerConfig::default();
        broker.log.retention_ms = 1000;
        let settings = resolve(
            &broker,
            &configs(&[
                (SEGMENT_BYTES, "2048"),
                (MESSAGE_TIMESTAMP_TYPE, "LogAppendTime"),
                (COMPRESSION_TYPE, "zstd"),
                (MIN_INSYNC_REPLICAS, "2"),
                (CLEANUP_POLICY, "compact,delete"),
                (MAX_MESSAGE_BYTES, "5000"),
            ]),
        );
        assert_eq!(settings.log.segment_bytes, 2048);
        assert_eq!(settings.log.retention_ms, 1000);
        assert!(settings.log.log_append_time);
        assert_eq!(settings.log.cleanup_policy, CleanupPolicy::CompactDelete);
        assert_eq!(settings.log.max_message_bytes, 5000);
        assert_eq!(
            settings.compression,
            CompressionType::Codec(Compression::Zstd)
        );
        assert_eq!(settings.min_insync_replicas, 2);
        settings.log.validate().expect("valid");

        let described = describe(&broker, &configs(&[(SEGMENT_BYTES, "2048")]));
        let find = |name| described.iter().find(|d| d.name == name).unwrap();
        assert_eq!(find(SEGMENT_BYTES).source, ConfigSource::Topic);
        assert_eq!(find(RETENTION_MS).source, ConfigSource::StaticBroker);
        assert_eq!(find(RETENTION_MS).value, "1000");
        assert_eq!(find(RETENTION_BYTES).source, ConfigSource::Default);
    }
}
