//! The broker's place in the metadata quorum: starting the [`MetadataNode`] (from the
//! `[metadata]` table, [`crate::config::MetadataConfig`]) plus the [`BrokerLifecycle`] that
//! registers this broker and heartbeats.

use std::collections::BTreeMap;
use std::time::Duration;

use streambus_raft::command::Endpoint;
use streambus_raft::controller::host_port;
use streambus_raft::lifecycle::BrokerInfo;
use streambus_raft::{BrokerLifecycle, ClusterId, MetadataNode, NodeConfig, NodeId};

use crate::config::BrokerConfig;
use crate::endpoints::RAFT_ENDPOINT;
use crate::error::{BrokerError, Result};

/// Re-exported for `replication/fetcher.rs` until it imports [`crate::endpoints`] directly;
/// new code uses [`crate::endpoints`].
pub use crate::endpoints::KAFKA_ENDPOINT;

/// A running quorum member and this broker's registration.
#[derive(Debug)]
pub struct Quorum {
    pub node: MetadataNode,
    pub lifecycle: BrokerLifecycle,
}

/// Starts this broker's metadata node (in `<data_dir>/raft`) as a member of `cluster_id` and
/// registers the broker with its Kafka listener on `kafka_port`, naming `previous_broker_epoch`,
/// the epoch of its last clean shutdown if the previous run ended with one. With `dev`, or with
/// no voters configured, the broker is a single-voter cluster of its own.
pub async fn start(
    config: &BrokerConfig,
    cluster_id: &ClusterId,
    dev: bool,
    kafka_port: u16,
    previous_broker_epoch: Option<i64>,
) -> Result<Quorum> {
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
    let mut node_config = NodeConfig::single_voter(
        node_id,
        cluster_id.clone(),
        local,
        config.data_dir.join("raft"),
    );
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
            endpoint(RAFT_ENDPOINT, local.port()),
        ],
        rack: (!metadata.rack.is_empty()).then(|| metadata.rack.clone()),
        previous_broker_epoch,
    };
    let lifecycle = BrokerLifecycle::spawn(
        node.clone(),
        info,
        Duration::from_millis(metadata.broker_heartbeat_interval_ms),
        Duration::from_millis(metadata.broker_session_timeout_ms),
    );
    Ok(Quorum { node, lifecycle })
}
