//! The broker's place in the metadata quorum: the `[metadata]` config table, and starting the
//! [`MetadataNode`] plus the [`BrokerLifecycle`] that registers this broker and heartbeats.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streambus_raft::command::Endpoint;
use streambus_raft::controller::host_port;
use streambus_raft::lifecycle::BrokerInfo;
use streambus_raft::{BrokerLifecycle, MetadataNode, NodeConfig, NodeId};

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};

/// The `[metadata]` table: how this broker joins the metadata quorum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataConfig {
    /// The initial voters, Kafka's `controller.quorum.voters` format:
    /// `1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093`. Empty: this broker alone, a
    /// single-voter cluster. A broker not in the list joins as a learner through these voters.
    pub quorum_voters: String,
    /// `broker.session.timeout.ms`: a broker that sends no heartbeat for this long is fenced and
    /// its partitions get new leaders.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// Raft heartbeats from the leader to the other voters.
    pub raft_heartbeat_interval_ms: u64,
    /// A voter that hears no leader for a random time between these two starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Entries between two snapshots of the metadata image; the log before a snapshot is purged.
    pub snapshot_interval_entries: u64,
    /// The rack this broker is in; replica placement spreads replicas across racks.
    pub rack: String,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            quorum_voters: String::new(),
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            raft_heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1_000,
            snapshot_interval_entries: 5_000,
            rack: String::new(),
        }
    }
}

impl MetadataConfig {
    /// The voters from [`MetadataConfig::quorum_voters`], node id to `host:port`.
    pub fn voters(&self) -> Result<BTreeMap<NodeId, String>> {
        let invalid = |reason: String| BrokerError::InvalidConfig {
            key: "metadata.quorum_voters",
            reason,
        };
        let mut voters = BTreeMap::new();
        for entry in self.quorum_voters.split(',').map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            let (id, addr) = entry
                .split_once('@')
                .ok_or_else(|| invalid(format!("`{entry}` is not ID@HOST:PORT")))?;
            let id: NodeId = id
                .parse()
                .map_err(|_| invalid(format!("`{id}` is not a node id")))?;
            if addr
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(invalid(format!("`{addr}` is not HOST:PORT")));
            }
            if voters.insert(id, addr.to_owned()).is_some() {
                return Err(invalid(format!("node {id} is listed twice")));
            }
        }
        Ok(voters)
    }

    /// Rules that span keys.
    pub fn validate(&self) -> Result<()> {
        self.voters()?;
        let invalid =
            |key: &'static str, reason: String| BrokerError::InvalidConfig { key, reason };
        if self.election_timeout_min_ms <= self.raft_heartbeat_interval_ms {
            return Err(invalid(
                "metadata.election_timeout_min_ms",
                "must be above metadata.raft_heartbeat_interval_ms".to_owned(),
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(invalid(
                "metadata.election_timeout_max_ms",
                "must be above metadata.election_timeout_min_ms".to_owned(),
            ));
        }
        if self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms {
            return Err(invalid(
                "metadata.broker_session_timeout_ms",
                "must be above metadata.broker_heartbeat_interval_ms".to_owned(),
            ));
        }
        if self.broker_heartbeat_interval_ms == 0 || self.snapshot_interval_entries == 0 {
            return Err(invalid("metadata", "intervals must be positive".to_owned()));
        }
        Ok(())
    }
}

/// Name of the Kafka listener among a broker's registered endpoints.
pub const KAFKA_ENDPOINT: &str = "kafka";

/// A running quorum member and this broker's registration.
#[derive(Debug)]
pub struct Quorum {
    pub node: MetadataNode,
    pub lifecycle: BrokerLifecycle,
}

/// Starts this broker's metadata node (in `<data_dir>/raft`) and registers the broker with its
/// Kafka listener on `kafka_port`. With `dev`, or with no voters configured, the broker is a
/// single-voter cluster of its own.
pub async fn start(config: &BrokerConfig, dev: bool, kafka_port: u16) -> Result<Quorum> {
    // `validate` rejects negative ids.
    let node_id = NodeId::try_from(config.node_id).unwrap_or_default();
    let bind_error = |source| BrokerError::Bind {
        listener: "raft_listener",
        addr: config.raft_listener,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.raft_listener)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    let host = config.advertised_host_or(local.ip());
    let raft_addr = host_port(&host, local.port());
    let mut voters = config.metadata.voters()?;
    if let Some(listed) = voters.get(&node_id).filter(|listed| **listed != raft_addr) {
        // Peers use the listed address; if it is not this listener, they cannot reach us.
        tracing::warn!(
            listed = %listed,
            advertised = %raft_addr,
            "metadata.quorum_voters lists this node at another address than its raft listener"
        );
    }
    if dev || voters.is_empty() {
        voters = BTreeMap::from([(node_id, raft_addr.clone())]);
    }
    let metadata = &config.metadata;
    let mut node_config = NodeConfig::single_voter(node_id, local, config.data_dir.join("raft"));
    node_config.advertised_addr = raft_addr;
    node_config.initial_voters = voters;
    node_config.raft_heartbeat_interval_ms = metadata.raft_heartbeat_interval_ms;
    node_config.election_timeout_min_ms = metadata.election_timeout_min_ms;
    node_config.election_timeout_max_ms = metadata.election_timeout_max_ms;
    node_config.snapshot_logs_since_last = metadata.snapshot_interval_entries;
    node_config.broker_session_timeout_ms = metadata.broker_session_timeout_ms;
    let node = MetadataNode::start_with_listener(node_config, listener).await?;

    let endpoint = |name: &str, port: u16| Endpoint {
        name: name.to_owned(),
        host: host.clone(),
        port,
    };
    let info = BrokerInfo {
        broker_id: config.node_id,
        endpoints: vec![
            endpoint(KAFKA_ENDPOINT, kafka_port),
            endpoint(streambus_raft::controller::RAFT_ENDPOINT, local.port()),
        ],
        rack: (!metadata.rack.is_empty()).then(|| metadata.rack.clone()),
    };
    let lifecycle = BrokerLifecycle::spawn(
        node.clone(),
        info,
        Duration::from_millis(metadata.broker_heartbeat_interval_ms),
        Duration::from_millis(metadata.broker_session_timeout_ms),
    );
    Ok(Quorum { node, lifecycle })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_voters(list: &str) -> MetadataConfig {
        MetadataConfig {
            quorum_voters: list.to_owned(),
            ..MetadataConfig::default()
        }
    }

    #[test]
    fn voters_parse_in_kafka_format() {
        let voters = with_voters(" 1@10.0.0.1:9093, 2@host-b:9093 ,3@[::1]:9093")
            .voters()
            .unwrap();
        assert_eq!(
            voters,
            BTreeMap::from([
                (1, "10.0.0.1:9093".to_owned()),
                (2, "host-b:9093".to_owned()),
                (3, "[::1]:9093".to_owned()),
            ])
        );
        assert!(with_voters("").voters().unwrap().is_empty());
    }

    #[test]
    fn malformed_voters_are_refused() {
        for bad in [
            "1",
            "x@h:1",
            "1@h",
            "1@:9093",
            "1@h:99999",
            "1@h:1,1@g:2",
            "-1@h:1",
        ] {
            let error = with_voters(bad).voters().expect_err(bad).to_string();
            assert!(error.contains("metadata.quorum_voters"), "{bad}: {error}");
        }
    }

    #[test]
    fn timeouts_must_be_ordered() {
        let config = MetadataConfig {
            election_timeout_min_ms: 50,
            raft_heartbeat_interval_ms: 100,
            ..MetadataConfig::default()
        };
        assert!(config.validate().is_err());
        let config = MetadataConfig {
            broker_session_timeout_ms: 1_000,
            broker_heartbeat_interval_ms: 2_000,
            ..MetadataConfig::default()
        };
        assert!(config.validate().is_err());
        assert!(MetadataConfig::default().validate().is_ok());
    }
}
