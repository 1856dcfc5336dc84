//! A whole broker: checks (or writes) its data directory's identity, binds the Kafka listener,
//! opens the broker-local store, joins the metadata quorum and registers, keeps the hosted
//! partitions in step with the metadata image, serves Kafka clients, and stops in the reverse
//! order — on a signal, or at once when the metadata quorum's raft core fails.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use streambus_raft::command::FenceBroker;
use streambus_raft::identity::RefusalLog;
use streambus_raft::{MetadataCommand, RegistrationState};
use streambus_storage::clean_shutdown;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::AdminServer;
use crate::config::BrokerConfig;
use crate::context::BrokerContext;
use crate::error::{BrokerError, Result};
use crate::group::GroupCoordinator;
use crate::http::{HttpServer, Started};
use crate::identity::{self, Bootstrap, MetaProperties};
use crate::kafka::server::KafkaServer;
use crate::partition::isr::{self, IsrProposer};
use crate::partition::log_dir_health;
use crate::partition::PartitionManager;
use crate::producer_ids::ProducerIdAllocator;
use crate::quorum::{self, Quorum, KAFKA_ENDPOINT};
use crate::replication::ReplicaFetchers;
use crate::txn::coordinator::TxnCoordinator;

/// How long a stopping broker waits for the controller to take its leaderships.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a broker whose metadata quorum failed may take to close its logs before the
/// process exits anyway.
const FAILED_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a stopping broker first hands its leaderships over through the quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handover {
    Controlled,
    /// The quorum is gone: the controller learns of the stop when the session lapses.
    Skip,
}

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    ctx: Arc<BrokerContext>,
    quorum: Quorum,
    server: KafkaServer,
    http: HttpServer,
    admin: AdminServer,
    fetchers: Arc<ReplicaFetchers>,
    background: Vec<JoinHandle<()>>,
}

impl Broker {
    /// Starts every part of the broker; returns once the Kafka listener accepts connections.
    pub async fn start(config: BrokerConfig, dev: bool) -> Result<Broker> {
        // First, before anything is written to the data directory: refuse another cluster's
        // or another node's data.
        let identity = resolve_identity(&config, dev).await?;
        let shutdown = CancellationToken::new();
        // A start that fails stops what it started (the HTTP listener, so far).
        let stop_on_failure = shutdown.clone().drop_guard();
        // Next the HTTP listener, so that `/readyz` answers "starting" while logs recover and
        // the broker joins the quorum.
        let metrics = crate::telemetry::install(&config.metrics);
        let http_bind_error = bind_error("http_listener", config.http_listener);
        let http_listener = bind("http_listener", config.http_listener).await?;
        let http =
            HttpServer::spawn(http_listener, metrics, shutdown.clone()).map_err(http_bind_error)?;
        let kafka_bind_error = bind_error("kafka_listener", config.kafka_listener);
        let listener = bind("kafka_listener", config.kafka_listener).await?;
        let admin_bind_error = bind_error("admin_listener", config.admin_listener);
        let admin_listener = bind("admin_listener", config.admin_listener).await?;
        let kafka_addr = listener.local_addr().map_err(kafka_bind_error)?;
        let (partitions, previous_broker_epoch) = {
            let config = config.clone();
            crate::blocking::spawn(move || {
                // Taken before any log is opened: from here on a crash must look unclean.
                let previous = clean_shutdown::take(&config.data_dir)?;
                Ok::<_, BrokerError>((PartitionManager::open(&config)?, previous))
            })
            .await
            .map_err(|e| {
                BrokerError::Storage(streambus_storage::StorageError::Kv(e.to_string()))
            })??
        };
        if previous_broker_epoch.is_none() {
            tracing::warn!(
                "no clean shutdown recorded: registering as recovered from an unclean shutdown, \
                 so this broker cannot lead a partition it was the last in-sync replica of"
            );
        }
        let partitions = Arc::new(partitions);
        let quorum = quorum::start(
            &config,
            &identity.cluster_id,
            dev,
            kafka_addr.port(),
            previous_broker_epoch,
        )
        .await?;
        partitions.set_isr_proposer(IsrProposer::new(quorum.node.clone(), config.node_id));
        let producer_ids = ProducerIdAllocator::new(
            quorum.node.clone(),
            config.node_id,
            quorum.lifecycle.state(),
        );
        let groups = GroupCoordinator::new(config.node_id, &config.groups, dev);
        let txns = TxnCoordinator::new(config.node_id, &config.transactions, dev);
        let peers = crate::peer_pool::PeerPool::new(
            identity.cluster_id.to_string(),
            format!("streambus-broker-{}", config.node_id),
        );
        let ctx = Arc::new(BrokerContext {
            config,
            cluster_id: identity.cluster_id,
            peers,
            node: quorum.node.clone(),
            partitions: partitions.clone(),
            producer_ids,
            groups: groups.clone(),
            txns: txns.clone(),
            shutdown: shutdown.clone(),
            refusals: RefusalLog::default(),
        });
        let fetchers = Arc::new(ReplicaFetchers::new(
            ctx.config.node_id,
            quorum.lifecycle.state(),
            ctx.cluster_id.clone(),
            ctx.config.replication.clone(),
            shutdown.clone(),
        ));
        let mut background = vec![
            tokio::spawn(partitions.clone().run_reconciler(
                quorum.node.subscribe(),
                quorum.lifecycle.state(),
                fetchers.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(partitions.clone().run_maintenance(shutdown.clone())),
            tokio::spawn(partitions.clone().run_log_dir_recovery(
                log_dir_health::Quorum {
                    node: quorum.node.clone(),
                    registration: quorum.lifecycle.state(),
                    images: quorum.node.subscribe(),
                },
                shutdown.clone(),
            )),
            tokio::spawn(isr::run_shrinker(
                partitions,
                ctx.config.replication.lag_time_max_ms,
                shutdown.clone(),
            )),
            crate::telemetry::scrape::spawn_leader_watch(&quorum.node, shutdown.clone()),
        ];
        background.extend(groups.spawn(&ctx));
        background.extend(txns.spawn(&ctx));
        let admin = AdminServer::spawn(ctx.clone(), admin_listener, shutdown.clone())
            .await
            .map_err(admin_bind_error)?;
        let server = KafkaServer::spawn(ctx.clone(), KAFKA_ENDPOINT, listener, shutdown)
            .map_err(kafka_bind_error)?;
        http.started(Started {
            ctx: ctx.clone(),
            registration: quorum.lifecycle.state(),
        });
        stop_on_failure.disarm();
        Ok(Broker {
            ctx,
            quorum,
            server,
            http,
            admin,
            fetchers,
            background,
        })
    }

    /// Kafka's controlled shutdown: the broker fences its own registration, so the controller
    /// moves its leaderships to other ISR members now rather than after a session timeout,
    /// and a restart can register again at once. Bounded: a broker cut off from the quorum
    /// just stops.
    async fn controlled_shutdown(&self) {
        self.quorum.lifecycle.stop();
        let RegistrationState::Registered { broker_epoch, .. } =
            *self.quorum.lifecycle.state().borrow()
        else {
            return;
        };
        let command = MetadataCommand::FenceBroker(FenceBroker {
            broker_id: self.ctx.config.node_id,
            broker_epoch,
        });
        match tokio::time::timeout(CONTROLLED_SHUTDOWN_TIMEOUT, self.ctx.write(command)).await {
            Ok(Ok(_)) => {
                // Apply the fence before the listener stops: the partitions go offline (no
                // more appends here, parked acks=all produces answer NOT_LEADER_OR_FOLLOWER).
                // The controller answered once it applied the fence; this broker's own image
                // may still be behind, so wait for an image that shows it.
                let me = self.ctx.config.node_id;
                let mut images = self.quorum.node.subscribe();
                let fenced = tokio::time::timeout(
                    CONTROLLED_SHUTDOWN_TIMEOUT,
                    images.wait_for(|image| image.broker(me).is_none_or(|b| b.fenced)),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(|image| image.metadata_offset());
                let applied = match fenced {
                    Some(offset) => {
                        self.ctx
                            .partitions
                            .wait_reconciled(offset, CONTROLLED_SHUTDOWN_TIMEOUT)
                            .await
                    }
                    None => false,
                };
                if applied {
                    tracing::info!("controlled shutdown: leaderships handed over");
                } else {
                    tracing::warn!("controlled shutdown: the fence was not applied in time");
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "controlled shutdown refused"),
            Err(_) => tracing::warn!("controlled shutdown timed out"),
        }
    }

    /// The Kafka listener's address.
    pub fn kafka_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The admin gRPC listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// The HTTP listener's address (`/metrics`, health).
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// The raft listener's address.
    pub fn raft_addr(&self) -> SocketAddr {
        self.quorum.node.local_addr()
    }

    /// The metadata quorum member this broker runs.
    /// What the broker's handlers share (tests drive broker parts with it).
    #[cfg(test)]
    pub(crate) fn context(&self) -> &Arc<BrokerContext> {
        &self.ctx
    }

    pub fn metadata_node(&self) -> &streambus_raft::MetadataNode {
        &self.quorum.node
    }

    /// Serves until `stop` resolves, then stops gracefully ([`Broker::shutdown`]). If the raft
    /// core fails first, stops without the controlled shutdown (it needs the quorum) and
    /// returns the failure: the process must exit with an error, so that its supervisor
    /// restarts it, rather than linger as a broker that listens but never serves metadata.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<()> {
        let node = self.quorum.node.clone();
        tokio::select! {
            () = stop => {
                tracing::info!("shutting down");
                self.shutdown().await
            }
            failure = node.failed() => {
                tracing::error!(error = %failure, "metadata quorum failed; stopping the broker");
                // Bounded: the process must exit even if some part does not stop.
                match tokio::time::timeout(FAILED_STOP_TIMEOUT, self.stop(Handover::Skip)).await {
                    Ok(Ok(())) => {}
                    // Leaving the quorum reports the same failure again.
                    Ok(Err(error)) => tracing::debug!(%error, "stop after the quorum failed"),
                    Err(_) => tracing::warn!("the broker did not stop in time; exiting anyway"),
                }
                Err(BrokerError::Metadata(failure))
            }
        }
    }

    /// Graceful stop: hand leaderships over (controlled shutdown), stop accepting, answer the
    /// requests being handled, stop replicating, close every log cleanly (flushed, marked
    /// clean), leave the quorum.
    pub async fn shutdown(self) -> Result<()> {
        self.stop(Handover::Controlled).await
    }

    async fn stop(mut self, handover: Handover) -> Result<()> {
        // Not ready from now on, while leaderships move away.
        self.http.draining();
        self.admin.draining().await;
        if handover == Handover::Controlled {
            self.controlled_shutdown().await;
        }
        self.ctx.shutdown.cancel();
        self.server.stopped().await;
        self.http.stopped().await;
        self.admin.stopped().await;
        for task in self.background {
            let _ = task.await;
        }
        self.fetchers.stop().await;
        let partitions = self.ctx.partitions.clone();
        let registered = match *self.quorum.lifecycle.state().borrow() {
            RegistrationState::Registered { broker_epoch, .. } => Some(broker_epoch),
            RegistrationState::Unregistered => None,
        };
        let data_dir = self.ctx.config.data_dir.clone();
        drop(self.ctx);
        let closed = crate::blocking::spawn(move || {
            if !partitions.close() {
                return Ok(false);
            }
            // Last: the marker promises every log's data is durable under this epoch. A broker
            // that never registered has no epoch to promise anything under.
            if let Some(broker_epoch) = registered {
                clean_shutdown::mark(&data_dir, broker_epoch)?;
            }
            Ok::<_, BrokerError>(true)
        })
        .await;
        match closed {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => tracing::error!("the partition logs did not close cleanly"),
            Ok(Err(error)) => tracing::error!(%error, "cannot record the clean shutdown"),
            Err(_) => tracing::error!("closing the partition logs panicked"),
        }
        self.quorum.node.shutdown().await?;
        Ok(())
    }
}

/// A failure to bind or serve `listener` (its config key) at `addr`.
fn bind_error(
    listener: &'static str,
    addr: SocketAddr,
) -> impl Fn(std::io::Error) -> BrokerError + Copy {
    move |source| BrokerError::Bind {
        listener,
        addr,
        source,
    }
}

/// Binds `listener` (its config key) at `addr`.
async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(bind_error(listener, addr))
}

/// The data directory's identity ([`identity::resolve`]) on a blocking thread: it reads, and
/// the first time writes and fsyncs, `meta.properties`.
async fn resolve_identity(config: &BrokerConfig, dev: bool) -> Result<MetaProperties> {
    let path = config.data_dir.join(identity::META_PROPERTIES);
    let config = config.clone();
    crate::blocking::spawn(move || identity::resolve(&config, Bootstrap::of(&config, dev)))
        .await
        .map_err(|e| BrokerError::MetaPropertiesIo {
            path,
            source: std::io::Error::other(e.to_string()),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::dev_config;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raft_core_panic_ends_the_broker_with_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Broker::start(dev_config(dir.path()), true)
            .await
            .expect("starts");
        // Runs inside openraft's core task, like the index-out-of-bounds panic of issue 21.
        broker
            .metadata_node()
            .raft()
            .external_request(|_| panic!("injected raft core panic"));
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            broker.run_until(std::future::pending()),
        )
        .await
        .expect("the broker stops without a signal");
        assert!(
            matches!(
                &outcome,
                Err(BrokerError::Metadata(
                    streambus_raft::RaftError::CoreFailed(_)
                ))
            ),
            "{outcome:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_signal_ends_the_broker_cleanly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Broker::start(dev_config(dir.path()), true)
            .await
            .expect("starts");
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            broker.run_until(std::future::ready(())),
        )
        .await
        .expect("stops");
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}
