//! Producer ids for idempotent producers: handed out from blocks that the metadata quorum
//! allocates to this broker, so ids are unique cluster-wide without a round trip per producer.

use streambus_raft::command::{AllocateProducerIds, BrokerId};
use streambus_raft::{
    MetadataCommand, MetadataNode, MetadataResponse, RaftError, RegistrationState,
};
use tokio::sync::{watch, Mutex};

/// Producer ids requested from the quorum at a time.
pub const PRODUCER_ID_BLOCK_SIZE: u32 = 1000;

/// Why no producer id could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    /// The broker has no registration (starting, or fenced and registering again).
    #[error("broker is not registered with the metadata quorum")]
    NotRegistered,
    #[error("allocating producer ids: {0}")]
    Metadata(#[from] RaftError),
}

#[derive(Debug, Default)]
struct Block {
    next: i64,
    end: i64,
}

/// Hands out producer ids from quorum-allocated blocks.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    node: MetadataNode,
    broker_id: BrokerId,
    registration: watch::Receiver<RegistrationState>,
    block: Mutex<Block>,
}

impl ProducerIdAllocator {
    pub fn new(
        node: MetadataNode,
        broker_id: BrokerId,
        registration: watch::Receiver<RegistrationState>,
    ) -> Self {
        ProducerIdAllocator {
            node,
            broker_id,
            registration,
            block: Mutex::new(Block::default()),
        }
    }

    /// A producer id never handed out before, anywhere in the cluster.
    pub async fn next(&self) -> Result<i64, ProducerIdError> {
        let mut block = self.block.lock().await;
        if block.next >= block.end {
            let broker_epoch = match &*self.registration.borrow() {
                RegistrationState::Registered { broker_epoch, .. } => *broker_epoch,
                RegistrationState::Unregistered => return Err(ProducerIdError::NotRegistered),
            };
            let command = MetadataCommand::AllocateProducerIds(AllocateProducerIds {
                broker_id: self.broker_id,
                broker_epoch,
                count: PRODUCER_ID_BLOCK_SIZE,
            });
            match self.node.write(command).await?.into_result()? {
                MetadataResponse::ProducerIdsAllocated {
                    first_producer_id,
                    count,
                } => {
                    block.next = first_producer_id;
                    block.end = first_producer_id + i64::from(count);
                }
                other => {
                    return Err(RaftError::Store(format!("unexpected answer {other:?}")).into())
                }
            }
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }
}
