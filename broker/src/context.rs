//! What every request handler may use: the configuration, the metadata image and quorum, the
//! hosted partitions and the producer-id allocator. Handlers reach storage only through the
//! partition manager and metadata only through the image and metadata commands.

use std::sync::Arc;

use streambus_raft::command::BrokerId;
use streambus_raft::identity::RefusalLog;
use streambus_raft::{
    ClusterId, MetadataCommand, MetadataImage, MetadataNode, MetadataResponse, RaftError,
};
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::partition::PartitionManager;
use crate::producer_ids::ProducerIdAllocator;
use crate::txn::coordinator::TxnCoordinator;

/// Shared by every connection of one broker.
#[derive(Debug)]
pub struct BrokerContext {
    pub config: BrokerConfig,
    /// The cluster's id, from the data directory's `meta.properties` (which the config's
    /// `cluster_id`, when set, matches).
    pub cluster_id: ClusterId,
    pub node: MetadataNode,
    pub partitions: Arc<PartitionManager>,
    pub producer_ids: ProducerIdAllocator,
    /// The group coordinator's share of `__consumer_offsets` on this broker.
    pub groups: Arc<GroupCoordinator>,
    /// The transaction coordinator's share of `__transaction_state` on this broker.
    pub txns: Arc<TxnCoordinator>,
    /// Connections to other brokers for the coordinators' calls (markers, verification, lag).
    pub peers: crate::peer_pool::PeerPool,
    /// Cancelled when the broker starts shutting down: parked fetches answer at once.
    pub shutdown: CancellationToken,
    /// Keeps refused inter-broker requests (another cluster, an unknown replica) from flooding
    /// the log: their senders retry every second or so.
    pub refusals: RefusalLog,
}

impl BrokerContext {
    pub fn broker_id(&self) -> BrokerId {
        self.config.node_id
    }

    /// The latest committed metadata this broker has applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.node.image()
    }

    /// Commits a metadata command through the controller; a rejection is an `Err`.
    pub async fn write(&self, command: MetadataCommand) -> Result<MetadataResponse, RaftError> {
        self.node.write(command).await?.into_result()
    }

    /// The controller's broker id, if one is known (-1 otherwise, as Kafka reports it).
    pub fn controller_id(&self) -> BrokerId {
        self.node
            .controller_id()
            .and_then(|id| BrokerId::try_from(id).ok())
            .unwrap_or(-1)
    }
}
