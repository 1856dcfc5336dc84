//! The Kafka listener's accept loop: enforces `max_connections`, runs one task per connection,
//! and on shutdown stops accepting, lets every connection answer the request it is handling,
//! then returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection;
use super::request::{ConnectionInfo, Principal};
use crate::context::BrokerContext;

/// Pause after a failed accept (usually out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long shutdown waits for connections to finish their current request.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Kafka listener.
#[derive(Debug)]
pub struct KafkaServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl KafkaServer {
    /// Starts serving `listener`, named `name` (the listener name requests carry), until
    /// `shutdown` is cancelled.
    pub fn spawn(
        ctx: Arc<BrokerContext>,
        name: &str,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<KafkaServer> {
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(ctx, name.into(), listener, shutdown));
        Ok(KafkaServer { local_addr, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the accept loop has stopped and connections have drained (after the
    /// shutdown token was cancelled).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Connection ids, unique within this process.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

async fn accept_loop(
    ctx: Arc<BrokerContext>,
    name: Arc<str>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(ctx.config.kafka.max_connections));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = ctx.config.kafka.max_connections, "connection refused: kafka.max_connections reached");
            crate::telemetry::requests::connection_refused();
            drop(stream);
            continue;
        };
        let info = ConnectionInfo {
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            listener: name.clone(),
            // Until authentication exists, as Kafka names a PLAINTEXT connection's principal.
            principal: Principal::anonymous(),
            client_software: None,
        };
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        connections.spawn(async move {
            let _open = crate::telemetry::requests::connection_opened();
            connection::serve(ctx, stream, info, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "connections still busy after the drain timeout"
        );
    }
}
