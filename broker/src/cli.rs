//! The `streambus` command line. Config flags take text and go through the same typed
//! resolution as environment variables, so a bad value gives the same one-line error whichever
//! way it was supplied.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{FlagOverride, Sources};
use crate::error::{BrokerError, Result};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `tracing`'s text lines (colours on a terminal only).
    Text,
    /// One JSON object per line, with the spans' fields.
    Json,
}

/// StreamBus: a Kafka-compatible, replicated log broker.
///
/// Configuration, lowest precedence first: embedded defaults, the --config file, STREAMBUS_<KEY>
/// environment variables (e.g. STREAMBUS_NODE_ID, STREAMBUS_LOG_SEGMENT_BYTES), flags.
#[derive(Debug, Parser)]
#[command(name = "streambus", version)]
pub struct Cli {
    /// TOML configuration file (same keys as --print-config shows).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Single-node development cluster: the broker bootstraps its own metadata quorum.
    #[arg(long)]
    pub dev: bool,

    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Log lines as plain text (default) or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// Print a new random cluster id (Kafka's format) and exit; give it to every broker of a
    /// new multi-node cluster as --cluster-id.
    #[arg(long)]
    pub new_cluster_id: bool,

    /// Broker id, unique in the cluster [key: node_id].
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,

    /// Cluster id, the same on every broker of a cluster; required for a new multi-node
    /// cluster, checked against <data_dir>/meta.properties [key: cluster_id].
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,

    /// Data directory [key: data_dir].
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<String>,

    /// Kafka protocol listener, IP:PORT [key: kafka_listener].
    #[arg(long, value_name = "ADDR")]
    pub kafka_listener: Option<String>,

    /// Raft and inter-broker gRPC listener, IP:PORT [key: raft_listener].
    #[arg(long, value_name = "ADDR")]
    pub raft_listener: Option<String>,

    /// Admin gRPC listener, IP:PORT [key: admin_listener].
    #[arg(long, value_name = "ADDR")]
    pub admin_listener: Option<String>,

    /// HTTP metrics and health listener, IP:PORT [key: http_listener].
    #[arg(long, value_name = "ADDR")]
    pub http_listener: Option<String>,

    /// Host name advertised to clients [key: advertised_host].
    #[arg(long, value_name = "HOST")]
    pub advertised_host: Option<String>,

    /// Set any config key, e.g. --set log.segment_bytes=1048576 (repeatable; the named flags
    /// above win over --set for the same key).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    #[command(subcommand)]
    pub command: Option<Subcommand>,
}

/// What `streambus` does instead of running a broker.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Check a TOML config file (over the embedded defaults, ignoring the environment and other
    /// flags) and exit: 0 and "valid" when a broker would start with it, 1 with the key and the
    /// reason otherwise.
    ValidateConfig {
        /// The file to check.
        file: PathBuf,
    },
}

impl Cli {
    /// The config overrides given on the command line, in the order they apply.
    pub fn overrides(&self) -> Result<Vec<FlagOverride>> {
        let mut overrides = Vec::with_capacity(self.set.len() + 8);
        for arg in &self.set {
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| BrokerError::MalformedSet { arg: arg.clone() })?;
            overrides.push(FlagOverride {
                key: key.trim().to_owned(),
                flag: format!("--set {}", key.trim()),
                value: value.to_owned(),
            });
        }
        let named = [
            ("node_id", "--node-id", &self.node_id),
            ("cluster_id", "--cluster-id", &self.cluster_id),
            ("data_dir", "--data-dir", &self.data_dir),
            ("kafka_listener", "--kafka-listener", &self.kafka_listener),
            ("raft_listener", "--raft-listener", &self.raft_listener),
            ("admin_listener", "--admin-listener", &self.admin_listener),
            ("http_listener", "--http-listener", &self.http_listener),
            (
                "advertised_host",
                "--advertised-host",
                &self.advertised_host,
            ),
        ];
        for (key, flag, value) in named {
            if let Some(value) = value {
                overrides.push(FlagOverride {
                    key: key.to_owned(),
                    flag: flag.to_owned(),
                    value: value.clone(),
                });
            }
        }
        Ok(overrides)
    }

    /// Every configuration source: this command line, its `--config` file, and `env`.
    pub fn sources(&self, env: BTreeMap<String, String>) -> Result<Sources> {
        Ok(Sources {
            file: self.config.clone(),
            env,
            flags: self.overrides()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<BrokerConfig> {
        let cli = Cli::try_parse_from(args).expect("parses");
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        BrokerConfig::resolve(&cli.sources(env)?)
    }

    #[test]
    fn named_flags_beat_the_environment() {
        let config = resolve(
            &["streambus", "--node-id", "9", "--data-dir", "/srv/sb"],
            &[("STREAMBUS_NODE_ID", "4"), ("STREAMBUS_DATA_DIR", "/env")],
        )
        .expect("resolves");
        assert_eq!(config.node_id, 9);
        assert_eq!(config.data_dir, PathBuf::from("/srv/sb"));
    }

    #[test]
    fn set_reaches_nested_keys_and_named_flags_win_over_it() {
        let config = resolve(
            &[
                "streambus",
                "--set",
                "log.segment_bytes=1048576",
                "--set",
                "node_id=2",
                "--node-id",
                "3",
            ],
            &[],
        )
        .expect("resolves");
        assert_eq!(config.log.segment_bytes, 1_048_576);
        assert_eq!(config.node_id, 3);
    }

    #[test]
    fn bad_flag_values_name_the_flag() {
        let error = resolve(&["streambus", "--kafka-listener", "nowhere"], &[])
            .expect_err("not an address");
        let message = error.to_string();
        assert!(
            message.starts_with("invalid value for `kafka_listener` in flag --kafka-listener:"),
            "{message}"
        );
        let error = resolve(&["streambus", "--set", "node_id"], &[]).expect_err("no =");
        assert!(matches!(error, BrokerError::MalformedSet { .. }));
    }

    #[test]
    fn mode_flags_parse() {
        let cli = Cli::try_parse_from(["streambus", "--dev", "--print-config", "--new-cluster-id"])
            .expect("parses");
        assert!(cli.dev && cli.print_config && cli.new_cluster_id);
        assert!(cli.overrides().expect("none").is_empty());
    }

    #[test]
    fn cluster_id_flag_sets_the_key() {
        let config = resolve(
            &["streambus", "--cluster-id", "cluster-a"],
            &[("STREAMBUS_CLUSTER_ID", "cluster-b")],
        )
        .expect("resolves");
        assert_eq!(config.cluster_id, "cluster-a");
    }
}
