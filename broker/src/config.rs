//! Broker configuration and its resolution, lowest precedence first: embedded defaults, the TOML
//! file given with `--config`, `STREAMBUS_<KEY>` environment variables, command-line flags.
//!
//! Every key has a default, so no file at all is a complete single-node dev configuration. Each
//! value is checked as it is applied, so an error names the key and the layer it came from; an
//! unknown key is an error rather than silently ignored, because a typo in a config file would
//! otherwise leave a default in place unnoticed.
//!
//! Environment variable names are derived from the TOML keys: `node_id` is `STREAMBUS_NODE_ID`,
//! `log.segment_bytes` (key `segment_bytes` of the `[log]` table) is `STREAMBUS_LOG_SEGMENT_BYTES`.
//!
//! Tables with a module of their own: `[metadata]` ([`MetadataConfig`]), `[topics]`
//! ([`TopicsConfig`]), `[groups]` ([`GroupsConfig`]) and `[transactions]`
//! ([`TransactionsConfig`]); `[replication]` lives with the replication code.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use streambus_storage::LogConfig;
use toml::{Table, Value};

use crate::error::{BrokerError, Origin, Result};
use crate::replication::ReplicationConfig;

mod groups;
mod metadata;
mod metrics;
mod topics;
mod transactions;

pub use groups::GroupsConfig;
pub use metadata::MetadataConfig;
pub use metrics::MetricsConfig;
pub use topics::{CompressionType, TopicsConfig};
pub use transactions::TransactionsConfig;

/// Prefix of the environment variables that set config keys. The whole prefix is reserved: an
/// unknown `STREAMBUS_*` variable is an error, like an unknown key in the file.
pub const ENV_PREFIX: &str = "STREAMBUS_";

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The resolved configuration of one broker.
///
/// Listeners bind the loopback interface by default: a dev broker started on a laptop or CI
/// machine is not reachable from the network until an operator chooses an address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// `default` on the container gives every field, including future ones, its default when absent.
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id, unique in the cluster: its Kafka broker id and its raft node id.
    pub node_id: i32,
    /// Kafka's `cluster.id`: the id every broker of the cluster shares, recorded in
    /// `<data_dir>/meta.properties` when the directory is first used and checked on every
    /// start, sent on every inter-broker request and reported to clients. Empty: the one in
    /// `meta.properties`; a broker that bootstraps a cluster alone (`--dev`, no
    /// `metadata.quorum_voters`) makes one up; a broker of several must be given one
    /// (`streambus --new-cluster-id` prints a new one).
    pub cluster_id: String,
    /// Root of everything the broker stores: `meta/` (RocksDB) and `logs/` (partition logs).
    pub data_dir: PathBuf,
    /// Kafka protocol listener.
    pub kafka_listener: SocketAddr,
    /// Raft and inter-broker gRPC listener.
    pub raft_listener: SocketAddr,
    /// Admin gRPC API listener.
    pub admin_listener: SocketAddr,
    /// HTTP listener for `/metrics` and the health endpoints.
    pub http_listener: SocketAddr,
    /// Host name clients are told to connect to. Empty: the IP of `kafka_listener`, which must
    /// then be a specific address rather than a wildcard like `0.0.0.0`.
    pub advertised_host: String,
    /// Kafka's `socket.request.max.bytes`: a request frame declaring more closes the connection
    /// before anything is allocated for it.
    pub socket_request_max_bytes: usize,
    /// Broker-wide defaults for topic (partition log) settings; topic configs override them.
    pub log: LogConfig,
    /// Topic defaults that are not partition-log settings, and topic auto-creation.
    pub topics: TopicsConfig,
    /// Limits of the Kafka listener.
    pub kafka: KafkaConfig,
    /// The metadata quorum: voters, session and election timeouts.
    pub metadata: MetadataConfig,
    /// Follower fetching and ISR maintenance.
    pub replication: ReplicationConfig,
    /// The group coordinator and `__consumer_offsets`.
    pub groups: GroupsConfig,
    /// The transaction coordinator and `__transaction_state`.
    pub transactions: TransactionsConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            cluster_id: String::new(),
            data_dir: PathBuf::from("./data"),
            kafka_listener: SocketAddr::new(LOOPBACK, 9092),
            raft_listener: SocketAddr::new(LOOPBACK, 9093),
            admin_listener: SocketAddr::new(LOOPBACK, 9094),
            http_listener: SocketAddr::new(LOOPBACK, 9644),
            advertised_host: String::new(),
            socket_request_max_bytes: crate::frame::SOCKET_REQUEST_MAX_BYTES_DEFAULT,
            log: LogConfig::default(),
            topics: TopicsConfig::default(),
            kafka: KafkaConfig::default(),
            metadata: MetadataConfig::default(),
            replication: ReplicationConfig::default(),
            groups: GroupsConfig::default(),
            transactions: TransactionsConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// The `[kafka]` table: limits of the Kafka protocol listener. Each bounds memory or work one
/// client can claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `max.connections`: connections beyond this are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Responses computed but not yet written, per connection; reading further requests from
    /// the connection pauses while this many are queued.
    pub max_in_flight_requests_per_connection: usize,
    /// Upper bound on a Fetch's `max_wait_ms` (clients asking more are served after this).
    pub fetch_max_wait_ms_limit: u64,
    /// Upper bound on a Fetch response's size in bytes, whatever the client asks
    /// (`fetch.max.bytes`).
    pub fetch_max_bytes: usize,
    /// `connections.max.idle.ms`: a connection that sends nothing for this long is closed; also
    /// the bound on writing one response to a client that does not read.
    pub connections_max_idle_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            max_connections: 4096,
            max_in_flight_requests_per_connection: 64,
            fetch_max_wait_ms_limit: 30_000,
            fetch_max_bytes: 55 * 1024 * 1024,
            connections_max_idle_ms: 600_000,
        }
    }
}

/// One command-line override of a config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagOverride {
    /// Dotted TOML key, e.g. `log.segment_bytes`.
    pub key: String,
    /// The flag as the user spelled it, for error messages.
    pub flag: String,
    pub value: String,
}

/// Everything configuration is resolved from, gathered by the caller so that resolution itself
/// reads nothing but the file (tests inject the environment instead of mutating the process's).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// Environment variables; only those starting with [`ENV_PREFIX`] are looked at.
    pub env: BTreeMap<String, String>,
    /// Applied in order, so a later flag for the same key wins.
    pub flags: Vec<FlagOverride>,
}

/// The `STREAMBUS_*` variables of this process. A non-UTF-8 value is an error, not skipped.
pub fn env_from_process() -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|name| name.starts_with(ENV_PREFIX)) else {
            continue;
        };
        let value = value.into_string().map_err(|_| BrokerError::InvalidValue {
            key: name.to_owned(),
            origin: Origin::Env(name.to_owned()),
            reason: "not valid UTF-8".to_owned(),
        })?;
        env.insert(name.to_owned(), value);
    }
    Ok(env)
}

/// The environment variable that sets a dotted key.
pub fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_uppercase())
}

impl BrokerConfig {
    /// Resolves the configuration from its sources and validates the result.
    pub fn resolve(sources: &Sources) -> Result<BrokerConfig> {
        let defaults = BrokerConfig::default().to_table();
        let keys = leaf_keys(&defaults);
        let mut merged = defaults.clone();

        if let Some(path) = &sources.file {
            let file = read_file(path)?;
            apply_file(
                &mut merged,
                &defaults,
                &file,
                "",
                &Origin::File(path.clone()),
            )?;
        }
        for (name, value) in &sources.env {
            if !name.starts_with(ENV_PREFIX) {
                continue;
            }
            let key = keys
                .iter()
                .find(|key| env_var_name(key) == *name)
                .ok_or_else(|| BrokerError::UnknownEnvVar { name: name.clone() })?;
            apply_str(
                &mut merged,
                &defaults,
                key,
                value,
                Origin::Env(name.clone()),
            )?;
        }
        for flag in &sources.flags {
            let origin = Origin::Flag(flag.flag.clone());
            if !keys.contains(&flag.key) {
                return Err(BrokerError::UnknownKey {
                    key: flag.key.clone(),
                    origin,
                });
            }
            apply_str(&mut merged, &defaults, &flag.key, &flag.value, origin)?;
        }

        // Every applied value was already checked against the whole struct, so this only fails
        // if that check has a bug; it still reports rather than panics.
        let config: BrokerConfig =
            merged
                .try_into()
                .map_err(|error: toml::de::Error| BrokerError::InvalidConfig {
                    key: "(resolved configuration)",
                    reason: one_line(error.message()),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML, in the format `--config` reads.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the config serializes: covered by unit tests")
    }

    fn to_table(&self) -> Table {
        Table::try_from(self).expect("the config serializes: covered by unit tests")
    }

    /// Rules that span several keys or that serde's types cannot express.
    pub fn validate(&self) -> Result<()> {
        if self.node_id < 0 {
            return Err(BrokerError::InvalidConfig {
                key: "node_id",
                reason: format!("must not be negative, got {}", self.node_id),
            });
        }
        if !self.cluster_id.is_empty() {
            streambus_raft::ClusterId::parse(&self.cluster_id).map_err(|error| {
                BrokerError::InvalidConfig {
                    key: "cluster_id",
                    reason: error.to_string(),
                }
            })?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(BrokerError::InvalidConfig {
                key: "data_dir",
                reason: "must not be empty".to_owned(),
            });
        }
        if self.advertised_host.is_empty() && self.kafka_listener.ip().is_unspecified() {
            return Err(BrokerError::InvalidConfig {
                key: "advertised_host",
                reason: format!(
                    "must be set when kafka_listener binds every interface ({})",
                    self.kafka_listener
                ),
            });
        }
        if self.advertised_host.is_empty() && self.raft_listener.ip().is_unspecified() {
            return Err(BrokerError::InvalidConfig {
                key: "advertised_host",
                reason: format!(
                    "must be set when raft_listener binds every interface ({})",
                    self.raft_listener
                ),
            });
        }
        if self.socket_request_max_bytes < 1024 {
            return Err(BrokerError::InvalidConfig {
                key: "socket_request_max_bytes",
                reason: format!(
                    "must be at least 1024, got {}",
                    self.socket_request_max_bytes
                ),
            });
        }
        self.check_listeners_distinct()?;
        self.check_topics_and_kafka()?;
        self.metadata.validate()?;
        self.groups
            .check()
            .map_err(|(key, reason)| BrokerError::InvalidConfig {
                key,
                reason: reason.to_owned(),
            })?;
        self.transactions
            .check()
            .map_err(|(key, reason)| BrokerError::InvalidConfig {
                key,
                reason: reason.to_owned(),
            })?;
        self.replication
            .check()
            .map_err(|(key, reason)| BrokerError::InvalidConfig {
                key,
                reason: reason.to_owned(),
            })?;
        self.log.validate().map_err(|error| match error {
            // Storage names the Kafka key (`segment.bytes`); the file spells it `segment_bytes`.
            streambus_storage::StorageError::InvalidConfig { key, reason } => {
                BrokerError::InvalidLogDefault {
                    key: key.replace('.', "_"),
                    reason,
                }
            }
            other => BrokerError::InvalidLogDefaults(other),
        })?;
        Ok(())
    }

    fn check_topics_and_kafka(&self) -> Result<()> {
        let invalid = |key: &'static str, reason: &str| {
            Err(BrokerError::InvalidConfig {
                key,
                reason: reason.to_owned(),
            })
        };
        let topics = &self.topics;
        if topics.num_partitions == 0
            || topics.num_partitions > streambus_raft::command::MAX_PARTITIONS_PER_TOPIC
        {
            return invalid("topics.num_partitions", "must be between 1 and 10000");
        }
        if topics.default_replication_factor == 0 {
            return invalid("topics.default_replication_factor", "must be at least 1");
        }
        if topics.min_insync_replicas == 0 {
            return invalid("topics.min_insync_replicas", "must be at least 1");
        }
        if CompressionType::parse(&topics.compression_type).is_none() {
            return invalid(
                "topics.compression_type",
                "must be one of producer, uncompressed, gzip, snappy, lz4, zstd",
            );
        }
        if topics.retention_check_interval_ms == 0 {
            return invalid("topics.retention_check_interval_ms", "must be positive");
        }
        if topics.producer_id_expiration_ms <= 0 {
            return invalid("topics.producer_id_expiration_ms", "must be positive");
        }
        let kafka = &self.kafka;
        if kafka.max_connections == 0 {
            return invalid("kafka.max_connections", "must be at least 1");
        }
        if kafka.max_in_flight_requests_per_connection == 0 {
            return invalid(
                "kafka.max_in_flight_requests_per_connection",
                "must be at least 1",
            );
        }
        if kafka.connections_max_idle_ms == 0 {
            return invalid("kafka.connections_max_idle_ms", "must be positive");
        }
        if kafka.fetch_max_bytes < 1024 {
            return invalid("kafka.fetch_max_bytes", "must be at least 1024");
        }
        Ok(())
    }

    fn check_listeners_distinct(&self) -> Result<()> {
        let listeners = [
            ("kafka_listener", self.kafka_listener),
            ("raft_listener", self.raft_listener),
            ("admin_listener", self.admin_listener),
            ("http_listener", self.http_listener),
        ];
        for (i, (key, addr)) in listeners.iter().enumerate() {
            // Port 0 asks the OS for a free port, so several listeners may share it.
            if addr.port() == 0 {
                continue;
            }
            if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| a == addr) {
                return Err(BrokerError::InvalidConfig {
                    key,
                    reason: format!("{addr} is already used by {other}"),
                });
            }
        }
        Ok(())
    }

    /// The host clients are told to connect to (see [`BrokerConfig::advertised_host`]).
    pub fn advertised_kafka_host(&self) -> String {
        self.advertised_host_or(self.kafka_listener.ip())
    }

    /// [`BrokerConfig::advertised_host`], or `ip` when it is empty.
    pub fn advertised_host_or(&self, ip: IpAddr) -> String {
        if self.advertised_host.is_empty() {
            ip.to_string()
        } else {
            self.advertised_host.clone()
        }
    }
}

fn read_file(path: &Path) -> Result<Table> {
    let text = std::fs::read_to_string(path).map_err(|source| BrokerError::ReadConfigFile {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<Table>().map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        BrokerError::ParseConfigFile {
            path: path.to_owned(),
            line: text[..offset.min(text.len())].matches('\n').count() + 1,
            message: one_line(error.message()),
        }
    })
}

/// Applies every value of the file's `table` (at dotted `prefix`) to `merged`.
fn apply_file(
    merged: &mut Table,
    defaults: &Table,
    table: &Table,
    prefix: &str,
    origin: &Origin,
) -> Result<()> {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match (lookup(defaults, &key), value) {
            (None, _) => {
                return Err(BrokerError::UnknownKey {
                    key,
                    origin: origin.clone(),
                })
            }
            (Some(Value::Table(_)), Value::Table(inner)) => {
                apply_file(merged, defaults, inner, &key, origin)?;
            }
            (Some(Value::Table(_)), other) => {
                return Err(BrokerError::InvalidValue {
                    key,
                    origin: origin.clone(),
                    reason: format!("expected a table, found {}", other.type_str()),
                })
            }
            (Some(_), value) => apply(merged, &key, value.clone(), origin.clone())?,
        }
    }
    Ok(())
}

/// Applies a value given as text (environment, flags), typed like the key's default value.
fn apply_str(
    merged: &mut Table,
    defaults: &Table,
    key: &str,
    text: &str,
    origin: Origin,
) -> Result<()> {
    let invalid = |reason: String| BrokerError::InvalidValue {
        key: key.to_owned(),
        origin: origin.clone(),
        reason,
    };
    let value = match lookup(defaults, key) {
        Some(Value::Integer(_)) => text
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| invalid(format!("expected an integer, got {text:?}")))?,
        Some(Value::Boolean(_)) => match text.trim() {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => return Err(invalid(format!("expected true or false, got {text:?}"))),
        },
        Some(Value::String(_)) => Value::String(text.to_owned()),
        Some(other) => {
            return Err(invalid(format!(
                "a {} cannot be set from text",
                other.type_str()
            )))
        }
        None => {
            return Err(BrokerError::UnknownKey {
                key: key.to_owned(),
                origin,
            })
        }
    };
    apply(merged, key, value, origin)
}

/// Sets `key` to `value` if the configuration still deserializes with it. Checking after each
/// value is what lets an error name the exact key and layer; it costs a few microseconds.
fn apply(merged: &mut Table, key: &str, value: Value, origin: Origin) -> Result<()> {
    let mut candidate = merged.clone();
    set(&mut candidate, key, value);
    if let Err(error) = candidate.clone().try_into::<BrokerConfig>() {
        return Err(BrokerError::InvalidValue {
            key: key.to_owned(),
            origin,
            reason: one_line(error.message()),
        });
    }
    *merged = candidate;
    Ok(())
}

fn lookup<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let (first, rest) = match key.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (key, None),
    };
    match (table.get(first)?, rest) {
        (value, None) => Some(value),
        (Value::Table(inner), Some(rest)) => lookup(inner, rest),
        (_, Some(_)) => None,
    }
}

/// Sets a dotted key whose parent tables exist (only keys present in the defaults are set).
fn set(table: &mut Table, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
        }
        Some((first, rest)) => {
            if let Some(Value::Table(inner)) = table.get_mut(first) {
                set(inner, rest, value);
            }
        }
    }
}

/// Every settable key, dotted (`node_id`, `log.segment_bytes`).
fn leaf_keys(table: &Table) -> Vec<String> {
    let mut keys = Vec::new();
    for (name, value) in table {
        match value {
            Value::Table(inner) => keys.extend(
                leaf_keys(inner)
                    .into_iter()
                    .map(|key| format!("{name}.{key}")),
            ),
            _ => keys.push(name.clone()),
        }
    }
    keys
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Write;

    use super::*;
    use streambus_storage::CleanupPolicy;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn flag(key: &str, value: &str) -> FlagOverride {
        FlagOverride {
            key: key.to_owned(),
            flag: format!("--{}", key.replace('_', "-")),
            value: value.to_owned(),
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    fn resolve_env(pairs: &[(&str, &str)]) -> Result<BrokerConfig> {
        BrokerConfig::resolve(&Sources {
            env: env(pairs),
            ..Sources::default()
        })
    }

    #[test]
    fn defaults_are_the_documented_dev_defaults() {
        let config = BrokerConfig::resolve(&Sources::default()).expect("defaults resolve");
        assert_eq!(config, BrokerConfig::default());
        assert_eq!(config.node_id, 1);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.kafka_listener, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(config.raft_listener, "127.0.0.1:9093".parse().unwrap());
        assert_eq!(config.admin_listener, "127.0.0.1:9094".parse().unwrap());
        assert_eq!(config.http_listener, "127.0.0.1:9644".parse().unwrap());
        assert_eq!(config.advertised_kafka_host(), "127.0.0.1");
        assert_eq!(config.log, LogConfig::default());
    }

    #[test]
    fn printed_config_reads_back_as_the_same_config() {
        let config = BrokerConfig {
            node_id: 7,
            advertised_host: "broker-7.example".to_owned(),
            ..BrokerConfig::default()
        };
        let printed = file(&config.to_toml());
        let read = BrokerConfig::resolve(&Sources {
            file: Some(printed.path().to_owned()),
            ..Sources::default()
        })
        .expect("printed config resolves");
        assert_eq!(read, config);
    }

    #[test]
    fn file_overrides_defaults_and_keeps_unset_keys() {
        let file = file("node_id = 3\n[log]\nsegment_bytes = 1048576\n");
        let config = BrokerConfig::resolve(&Sources {
            file: Some(file.path().to_owned()),
            ..Sources::default()
        })
        .expect("resolves");
        assert_eq!(config.node_id, 3);
        assert_eq!(config.log.segment_bytes, 1_048_576);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.log.retention_ms, LogConfig::default().retention_ms);
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let file =
            file("node_id = 3\ndata_dir = \"/from/file\"\nkafka_listener = \"127.0.0.1:19092\"\n");
        let sources = Sources {
            file: Some(file.path().to_owned()),
            env: env(&[
                ("STREAMBUS_NODE_ID", "4"),
                ("STREAMBUS_DATA_DIR", "/from/env"),
            ]),
            flags: vec![flag("node_id", "5")],
        };
        let config = BrokerConfig::resolve(&sources).expect("resolves");
        assert_eq!(config.node_id, 5, "flag beats env and file");
        assert_eq!(
            config.data_dir,
            PathBuf::from("/from/env"),
            "env beats file"
        );
        assert_eq!(
            config.kafka_listener,
            "127.0.0.1:19092".parse().unwrap(),
            "file beats default"
        );
    }

    #[test]
    fn later_flags_win_over_earlier_ones() {
        let config = BrokerConfig::resolve(&Sources {
            flags: vec![flag("node_id", "5"), flag("node_id", "6")],
            ..Sources::default()
        })
        .expect("resolves");
        assert_eq!(config.node_id, 6);
    }

    #[test]
    fn nested_keys_are_set_from_the_environment() {
        let config = resolve_env(&[
            ("STREAMBUS_LOG_SEGMENT_BYTES", "2097152"),
            ("STREAMBUS_LOG_CLEANUP_POLICY", "compact"),
            ("STREAMBUS_LOG_LOG_APPEND_TIME", "true"),
        ])
        .expect("resolves");
        assert_eq!(config.log.segment_bytes, 2_097_152);
        assert_eq!(config.log.cleanup_policy, CleanupPolicy::Compact);
        assert!(config.log.log_append_time);
    }

    #[test]
    fn unrelated_environment_variables_are_ignored() {
        let config = resolve_env(&[("PATH", "/usr/bin"), ("RUST_LOG", "debug")]).expect("resolves");
        assert_eq!(config, BrokerConfig::default());
    }

    #[test]
    fn every_key_has_a_distinct_environment_variable() {
        let keys = leaf_keys(&BrokerConfig::default().to_table());
        let names: HashSet<String> = keys.iter().map(|key| env_var_name(key)).collect();
        assert_eq!(names.len(), keys.len());
        assert!(names.contains("STREAMBUS_KAFKA_LISTENER"));
        assert!(names.contains("STREAMBUS_LOG_FLUSH_MESSAGES"));
    }

    #[test]
    fn unknown_keys_are_rejected_in_every_layer() {
        let file = file("node_id = 1\n[log]\nsegment_byte = 10\n");
        let error = BrokerConfig::resolve(&Sources {
            file: Some(file.path().to_owned()),
            ..Sources::default()
        })
        .expect_err("typo in file");
        assert!(
            matches!(&error, BrokerError::UnknownKey { key, origin: Origin::File(_) } if key == "log.segment_byte"),
            "{error}"
        );

        let error = resolve_env(&[("STREAMBUS_NODEID", "2")]).expect_err("typo in env");
        assert!(
            matches!(&error, BrokerError::UnknownEnvVar { name } if name == "STREAMBUS_NODEID")
        );

        let error = BrokerConfig::resolve(&Sources {
            flags: vec![flag("log.segment_byte", "10")],
            ..Sources::default()
        })
        .expect_err("typo in --set");
        assert!(matches!(&error, BrokerError::UnknownKey { key, .. } if key == "log.segment_byte"));
    }

    #[test]
    fn bad_values_name_the_key_and_origin_on_one_line() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[("STREAMBUS_NODE_ID", "abc")],
                "`node_id` in environment variable STREAMBUS_NODE_ID",
            ),
            (&[("STREAMBUS_NODE_ID", "99999999999")], "`node_id`"),
            (
                &[("STREAMBUS_KAFKA_LISTENER", "localhost")],
                "`kafka_listener`",
            ),
            (
                &[("STREAMBUS_LOG_CLEANUP_POLICY", "shred")],
                "`log.cleanup_policy`",
            ),
            (
                &[("STREAMBUS_LOG_LOG_APPEND_TIME", "yes")],
                "`log.log_append_time`",
            ),
        ];
        for (vars, expected) in cases {
            let message = resolve_env(vars).expect_err("bad value").to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            assert!(!message.contains('\n'), "{message:?} spans lines");
        }
    }

    #[test]
    fn wrongly_typed_file_values_are_rejected() {
        let file = file("node_id = \"one\"\n");
        let error = BrokerConfig::resolve(&Sources {
            file: Some(file.path().to_owned()),
            ..Sources::default()
        })
        .expect_err("string for an integer");
        assert!(
            matches!(&error, BrokerError::InvalidValue { key, origin: Origin::File(_), .. } if key == "node_id"),
            "{error}"
        );

        let file = self::file("log = 5\n");
        let error = BrokerConfig::resolve(&Sources {
            file: Some(file.path().to_owned()),
            ..Sources::default()
        })
        .expect_err("scalar for a table");
        assert!(matches!(&error, BrokerError::InvalidValue { key, .. } if key == "log"));
    }

    #[test]
    fn malformed_toml_reports_the_line() {
        let file = file("node_id = 1\ndata_dir = \n");
        let error = BrokerConfig::resolve(&Sources {
            file: Some(file.path().to_owned()),
            ..Sources::default()
        })
        .expect_err("malformed");
        assert!(
            matches!(&error, BrokerError::ParseConfigFile { line: 2, .. }),
            "{error}"
        );
        assert!(!error.to_string().contains('\n'));
    }

    #[test]
    fn missing_file_is_an_error() {
        let error = BrokerConfig::resolve(&Sources {
            file: Some(PathBuf::from("/nonexistent/streambus.toml")),
            ..Sources::default()
        })
        .expect_err("missing");
        assert!(matches!(error, BrokerError::ReadConfigFile { .. }));
    }

    #[test]
    fn cross_key_rules_are_enforced() {
        let error = resolve_env(&[("STREAMBUS_NODE_ID", "-1")]).expect_err("negative id");
        assert!(matches!(
            error,
            BrokerError::InvalidConfig { key: "node_id", .. }
        ));

        let error = resolve_env(&[("STREAMBUS_KAFKA_LISTENER", "0.0.0.0:9092")])
            .expect_err("wildcard without advertised host");
        assert!(matches!(
            error,
            BrokerError::InvalidConfig {
                key: "advertised_host",
                ..
            }
        ));
        let config = resolve_env(&[
            ("STREAMBUS_KAFKA_LISTENER", "0.0.0.0:9092"),
            ("STREAMBUS_ADVERTISED_HOST", "broker-1.example"),
        ])
        .expect("wildcard with advertised host");
        assert_eq!(config.advertised_kafka_host(), "broker-1.example");

        let error =
            resolve_env(&[("STREAMBUS_RAFT_LISTENER", "127.0.0.1:9092")]).expect_err("port clash");
        assert!(matches!(
            error,
            BrokerError::InvalidConfig {
                key: "raft_listener",
                ..
            }
        ));
    }

    #[test]
    fn cluster_id_is_a_top_level_key_checked_as_a_cluster_id() {
        let config = resolve_env(&[("STREAMBUS_CLUSTER_ID", "MkU3OEVBNTcwNTJENDM2Qk")])
            .expect("a Kafka-style id");
        assert_eq!(config.cluster_id, "MkU3OEVBNTcwNTJENDM2Qk");
        assert_eq!(BrokerConfig::default().cluster_id, "", "unset by default");
        let error = resolve_env(&[("STREAMBUS_CLUSTER_ID", "my cluster")]).expect_err("a space");
        assert!(
            matches!(
                error,
                BrokerError::InvalidConfig {
                    key: "cluster_id",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn log_defaults_are_checked_by_the_storage_rules() {
        let error = resolve_env(&[("STREAMBUS_LOG_SEGMENT_BYTES", "10")]).expect_err("tiny");
        assert!(
            matches!(&error, BrokerError::InvalidLogDefault { key, .. } if key == "segment_bytes"),
            "{error:?}"
        );
        let error = resolve_env(&[("STREAMBUS_LOG_FLUSH_MESSAGES", "-5")]).expect_err("negative");
        assert!(
            matches!(&error, BrokerError::InvalidLogDefault { key, .. } if key == "flush_messages"),
            "{error:?}"
        );
        let config =
            resolve_env(&[("STREAMBUS_LOG_FLUSH_MESSAGES", "1000")]).expect("a real count");
        assert_eq!(config.log.flush_messages, 1000);
    }
}
