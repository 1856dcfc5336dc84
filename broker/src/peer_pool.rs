//! Connections to other brokers' Kafka listeners for a coordinator's calls to partition
//! leaders and back (transaction markers, KIP-890 verification, consumer lag reads): a few per
//! broker, kept while they work and dropped after any failure (the next call connects again),
//! so a call costs a round trip instead of a connect and a cluster-id check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::protocol::Request;
use streambus_raft::command::BrokerId;
use tokio::sync::Mutex as AsyncMutex;

use crate::inter_broker::{PeerConnection, PeerError};

/// Connections kept per broker: calls to one broker run on up to this many at once.
const CONNECTIONS_PER_BROKER: usize = 4;
/// The largest response a pooled call takes (markers, verification and offset answers are
/// small).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// One connection slot: the address it reaches and the connection, if open.
type Slot = Arc<AsyncMutex<Option<(String, PeerConnection)>>>;

/// The pool of one broker.
pub struct PeerPool {
    cluster_id: String,
    client_id: String,
    slots: Mutex<HashMap<BrokerId, Vec<Slot>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for PeerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let brokers = self.slots.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("PeerPool")
            .field("brokers", &brokers)
            .finish()
    }
}

impl PeerPool {
    pub fn new(cluster_id: String, client_id: String) -> PeerPool {
        PeerPool {
            cluster_id,
            client_id,
            slots: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// A free slot of `broker`'s, or (all busy) one to wait for.
    fn slot(&self, broker: BrokerId) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let of_broker = slots.entry(broker).or_insert_with(|| {
            (0..CONNECTIONS_PER_BROKER)
                .map(|_| Arc::new(AsyncMutex::new(None)))
                .collect()
        });
        if let Some(free) = of_broker.iter().find(|slot| slot.try_lock().is_ok()) {
            return free.clone();
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % of_broker.len();
        of_broker[turn].clone()
    }

    /// Sends `request` at `version` to broker `broker` at `address`, on a pooled connection
    /// (opened, with its cluster-id check, when none is), within `timeout` for the connect and
    /// for the exchange each.
    pub async fn call<R: Request>(
        &self,
        broker: BrokerId,
        address: &str,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, PeerError> {
        let slot = self.slot(broker);
        let mut held = slot.lock().await;
        if held.as_ref().is_some_and(|(at, _)| at != address) {
            // The broker moved: its old connection goes.
            *held = None;
        }
        if held.is_none() {
            let connection = PeerConnection::connect(
                address,
                &self.cluster_id,
                self.client_id.clone(),
                MAX_RESPONSE_BYTES,
                timeout,
            )
            .await?;
            *held = Some((address.to_owned(), connection));
        }
        let Some((_, connection)) = held.as_mut() else {
            return Err(PeerError::Closed);
        };
        let answer = connection.call(request, version, timeout).await;
        if answer.is_err() {
            // A failed exchange leaves the stream in an unknown state.
            *held = None;
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::MetadataRequest;

    use super::*;
    use crate::broker::Broker;
    use crate::testing::dev_config;

    /// Calls reuse a connection; a failed one is dropped and the next call connects again (here
    /// to the broker's new address).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_connection_is_dropped_and_the_next_call_connects_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = dev_config(dir.path());
        config.cluster_id = "pool-cluster".to_owned();
        let broker = Broker::start(config, true).await.expect("starts");
        let address = broker.kafka_addr().to_string();
        let pool = PeerPool::new("pool-cluster".to_owned(), "test".to_owned());
        let timeout = Duration::from_secs(10);
        let request = MetadataRequest::default().with_topics(Some(Vec::new()));
        for _ in 0..3 {
            let answer = pool.call(1, &address, &request, 12, timeout).await;
            assert_eq!(
                answer.expect("answered").cluster_id.as_deref(),
                Some("pool-cluster")
            );
        }
        // Nobody listens there: the call fails and leaves no connection behind.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let nowhere = closed.local_addr().expect("addr").to_string();
        drop(closed);
        assert!(pool.call(1, &nowhere, &request, 12, timeout).await.is_err());
        let answer = pool.call(1, &address, &request, 12, timeout).await;
        assert!(answer.is_ok(), "{answer:?}");
        // Another cluster at that address is refused.
        let strangers = PeerPool::new("other".to_owned(), "test".to_owned());
        let refused = strangers.call(1, &address, &request, 12, timeout).await;
        assert!(
            matches!(refused, Err(PeerError::InconsistentClusterId { .. })),
            "{refused:?}"
        );
        broker.shutdown().await.expect("stops");
    }
}
