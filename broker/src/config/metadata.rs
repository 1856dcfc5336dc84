//! The `[metadata]` table: how this broker joins the metadata quorum (voters, session and
//! election timeouts, rack). Starting the quorum member from it is `crate::quorum`'s job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use streambus_raft::NodeId;

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
