//! A whole broker: binds the Kafka listener, opens the broker-local store, joins the metadata
//! quorum and registers, keeps the hosted partitions in step with the metadata image, serves
//! Kafka clients, and stops in the reverse order.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::context::BrokerContext;
use crate::error::{BrokerError, Result};
use crate::kafka::server::KafkaServer;
use crate::partition::PartitionManager;
use crate::producer_ids::ProducerIdAllocator;
use crate::quorum::{self, Quorum};

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    ctx: Arc<BrokerContext>,
    quorum: Quorum,
    server: KafkaServer,
    background: Vec<JoinHandle<()>>,
}

impl Broker {
    /// Starts every part of the broker; returns once the Kafka listener accepts connections.
    pub async fn start(config: BrokerConfig, dev: bool) -> Result<Broker> {
        let kafka_listener = config.kafka_listener;
        let bind_error = move |source| BrokerError::Bind {
            listener: "kafka_listener",
            addr: kafka_listener,
            source,
        };
        let listener = TcpListener::bind(config.kafka_listener)
            .await
            .map_err(bind_error)?;
        let kafka_addr = listener.local_addr().map_err(bind_error)?;
        let partitions = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || PartitionManager::open(&config))
                .await
                .map_err(|e| {
                    BrokerError::Storage(streambus_storage::StorageError::Kv(e.to_string()))
                })??
        };
        let partitions = Arc::new(partitions);
        let quorum = quorum::start(&config, dev, kafka_addr.port()).await?;
        let shutdown = CancellationToken::new();
        let producer_ids = ProducerIdAllocator::new(
            quorum.node.clone(),
            config.node_id,
            quorum.lifecycle.state(),
        );
        let ctx = Arc::new(BrokerContext {
            config,
            node: quorum.node.clone(),
            partitions: partitions.clone(),
            producer_ids,
            shutdown: shutdown.clone(),
        });
        let background = vec![
            tokio::spawn(
                partitions
                    .clone()
                    .run_reconciler(quorum.node.subscribe(), shutdown.clone()),
            ),
            tokio::spawn(partitions.run_maintenance(shutdown.clone())),
        ];
        let server = KafkaServer::spawn(ctx.clone(), listener, shutdown).map_err(bind_error)?;
        Ok(Broker {
            ctx,
            quorum,
            server,
            background,
        })
    }

    /// The Kafka listener's address.
    pub fn kafka_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The raft listener's address.
    pub fn raft_addr(&self) -> SocketAddr {
        self.quorum.node.local_addr()
    }

    /// Graceful stop: stop accepting, answer the requests being handled, close every log
    /// cleanly (flushed, marked clean), leave the quorum.
    pub async fn shutdown(self) -> Result<()> {
        self.ctx.shutdown.cancel();
        self.server.stopped().await;
        for task in self.background {
            let _ = task.await;
        }
        self.quorum.lifecycle.stop();
        let partitions = self.ctx.partitions.clone();
        drop(self.ctx);
        if tokio::task::spawn_blocking(move || partitions.close())
            .await
            .is_err()
        {
            tracing::error!("closing the partition logs panicked");
        }
        self.quorum.node.shutdown().await?;
        Ok(())
    }
}
