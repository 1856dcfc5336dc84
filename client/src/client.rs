//! [`Client`]: bootstrap, the connection pool (one multiplexed connection per broker), the
//! metadata cache and the retry loop that producer, consumer and admin share.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::connection::{Connection, ConnectionConfig};
use crate::error::{Error, Result};
use crate::metadata::ClusterMetadata;

/// Settings every client shares. The defaults follow the Java client's.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of one or more brokers to learn the cluster from.
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    pub connect_timeout: Duration,
    /// How long one request may wait for its response (`request.timeout.ms`).
    pub request_timeout: Duration,
    /// First pause before a retry (`retry.backoff.ms`); doubles up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// How long an operation keeps retrying retriable errors (`default.api.timeout.ms`).
    pub api_timeout: Duration,
    /// Requests in flight per broker connection; further requests wait.
    pub max_in_flight_per_connection: usize,
    /// The largest response accepted; a larger frame closes the connection.
    pub max_response_bytes: usize,
    /// Metadata older than this is refreshed by the producer and consumer even without an
    /// error, so new partitions and brokers are seen (`metadata.max.age.ms`).
    pub metadata_max_age: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap_servers: vec!["localhost:9092".to_owned()],
            client_id: "streambus-client".to_owned(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            api_timeout: Duration::from_secs(60),
            max_in_flight_per_connection: 16,
            max_response_bytes: 256 * 1024 * 1024,
            metadata_max_age: Duration::from_secs(300),
        }
    }
}

impl ClientConfig {
    /// The defaults with `bootstrap` (comma-separated `host:port` list).
    pub fn new(bootstrap: &str) -> ClientConfig {
        ClientConfig {
            bootstrap_servers: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            ..ClientConfig::default()
        }
    }
}

/// The connection to one address, if open; connecting holds the lock.
type ConnectionSlot = tokio::sync::Mutex<Slot>;

#[derive(Debug, Default)]
struct Slot {
    connection: Option<Arc<Connection>>,
    /// The last failed attempt: callers queued behind it fail at once for a moment instead
    /// of each waiting out its own connect timeout.
    failed: Option<(Instant, Error)>,
}

/// A shared handle on the cluster: cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// One slot per address; the async lock serialises connecting to that address only, so a
    /// dead broker never delays requests to the others.
    connections: Mutex<HashMap<String, Arc<ConnectionSlot>>>,
    metadata: RwLock<Arc<ClusterMetadata>>,
    refreshed_at: Mutex<Instant>,
    /// One metadata request at a time; callers that queued behind it reuse its answer.
    refresh: tokio::sync::Mutex<u64>,
}

impl Client {
    /// Connects to the first reachable bootstrap broker and loads the cluster metadata.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.bootstrap_servers.is_empty() {
            return Err(Error::InvalidArgument(
                "no bootstrap server given".to_owned(),
            ));
        }
        let client = Client::unconnected(config);
        client.refresh_metadata(&[], false).await?;
        Ok(client)
    }

    /// A client that has not connected yet (unit tests of the layers above use it as is).
    pub(crate) fn unconnected(config: ClientConfig) -> Client {
        Client {
            inner: Arc::new(Inner {
                config,
                connections: Mutex::new(HashMap::new()),
                metadata: RwLock::new(Arc::new(ClusterMetadata::default())),
                refreshed_at: Mutex::new(Instant::now()),
                refresh: tokio::sync::Mutex::new(0),
            }),
        }
    }

    /// Replaces the cached metadata (for unit tests).
    #[cfg(test)]
    pub(crate) fn set_metadata(&self, metadata: ClusterMetadata) {
        *self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(metadata);
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The metadata as last refreshed.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(
            &self
                .inner
                .metadata
                .read()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Asks the cluster for the brokers and `topics` (all topics when empty) and merges the
    /// answer into the cache. `auto_create` asks the broker to create missing topics, as
    /// producers do when the broker allows it.
    pub async fn refresh_metadata(
        &self,
        topics: &[String],
        auto_create: bool,
    ) -> Result<Arc<ClusterMetadata>> {
        let requested = if topics.is_empty() {
            None
        } else {
            Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect(),
            )
        };
        let request = MetadataRequest::default()
            .with_topics(requested)
            .with_allow_auto_topic_creation(auto_create);
        let response = self.send_any(&request, 1, 12).await?;
        let fresh = ClusterMetadata::from_response(&response);
        let mut cache = self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut merged = fresh.clone();
        if !topics.is_empty() {
            // A partial answer replaces only the topics it was asked about.
            let mut all = cache.topics.clone();
            for name in topics {
                all.remove(name);
            }
            all.extend(fresh.topics);
            merged.topics = all;
        }
        *cache = Arc::new(merged);
        *self
            .inner
            .refreshed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(Arc::clone(&cache))
    }

    /// Refreshes metadata unless another caller did since `seen` (a counter from
    /// [`Client::refresh_generation`]), so a burst of failures costs one request.
    pub async fn refresh_metadata_once(&self, topics: &[String], seen: u64) -> Result<()> {
        let mut generation = self.inner.refresh.lock().await;
        if *generation != seen {
            return Ok(());
        }
        self.refresh_metadata(topics, false).await?;
        *generation += 1;
        Ok(())
    }

    /// Whether the last metadata refresh is older than `metadata_max_age`.
    pub fn metadata_is_stale(&self) -> bool {
        self.inner
            .refreshed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            >= self.inner.config.metadata_max_age
    }

    /// See [`Client::refresh_metadata_once`].
    pub fn refresh_generation(&self) -> u64 {
        self.inner
            .refresh
            .try_lock()
            .map(|g| *g)
            .unwrap_or(u64::MAX)
    }

    /// The connection to broker `id`, opened if needed.
    pub(crate) async fn broker(&self, id: i32) -> Result<Arc<Connection>> {
        let addr = self
            .metadata()
            .brokers
            .get(&id)
            .map(|b| b.addr())
            // Retriable: the caller's metadata is older than the cache, and a refresh and a
            // retry find the partition's current leader.
            .ok_or_else(|| {
                Error::Disconnected(format!("broker {id} (no longer in the metadata)"))
            })?;
        self.connection(&addr).await
    }

    /// The connection to `addr`, opened if there is none or the last one closed.
    pub(crate) async fn connection(&self, addr: &str) -> Result<Arc<Connection>> {
        let slot = {
            let mut map = self
                .inner
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            Arc::clone(map.entry(addr.to_owned()).or_default())
        };
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.connection.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(conn));
        }
        let config = &self.inner.config;
        if let Some((at, error)) = &slot.failed {
            if at.elapsed() < config.retry_backoff_max.min(Duration::from_secs(1)) {
                return Err(error.clone());
            }
        }
        let connected = Connection::connect(
            addr,
            ConnectionConfig {
                client_id: config.client_id.clone(),
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
                max_in_flight: config.max_in_flight_per_connection,
                max_response_bytes: config.max_response_bytes,
            },
        )
        .await;
        match connected {
            Ok(conn) => {
                slot.connection = Some(Arc::clone(&conn));
                slot.failed = None;
                Ok(conn)
            }
            Err(error) => {
                slot.failed = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Sends to broker `id` at the best common version in `[min, max]`.
    pub(crate) async fn send_to<R: Request>(
        &self,
        id: i32,
        request: &R,
        min: i16,
        max: i16,
    ) -> Result<R::Response> {
        let conn = self.broker(id).await?;
        let version = conn.version::<R>(min, max)?;
        conn.send(request, version, None).await
    }

    /// Sends to any reachable broker: known brokers first, then the bootstrap list.
    pub(crate) async fn send_any<R: Request>(
        &self,
        request: &R,
        min: i16,
        max: i16,
    ) -> Result<R::Response> {
        let mut candidates: Vec<String> =
            self.metadata().brokers.values().map(|b| b.addr()).collect();
        for addr in &self.inner.config.bootstrap_servers {
            if !candidates.contains(addr) {
                candidates.push(addr.clone());
            }
        }
        let mut last = None;
        for addr in &candidates {
            match self.connection(addr).await {
                Ok(conn) => {
                    let version = conn.version::<R>(min, max)?;
                    match conn.send(request, version, None).await {
                        Ok(response) => return Ok(response),
                        Err(e) if e.is_retriable() => last = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Error::NoBrokerReachable {
            tried: candidates.join(","),
            last: last.map(|e| e.to_string()).unwrap_or_default(),
        })
    }

    /// Sends to the controller when the metadata names one, else to any broker.
    pub(crate) async fn send_controller<R: Request>(
        &self,
        request: &R,
        min: i16,
        max: i16,
    ) -> Result<R::Response> {
        match self.metadata().controller_id {
            Some(id) => match self.send_to(id, request, min, max).await {
                Err(e) if e.is_retriable() => self.send_any(request, min, max).await,
                other => other,
            },
            None => self.send_any(request, min, max).await,
        }
    }

    /// Runs `op` until it succeeds, fails with a non-retriable error, or `api_timeout` passes;
    /// refreshes metadata after errors that suggest it is stale, and backs off exponentially.
    pub(crate) async fn retry<T, F, Fut>(&self, topics: &[String], mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.inner.config.api_timeout;
        let mut backoff = self.inner.config.retry_backoff;
        loop {
            let seen = self.refresh_generation();
            let error = match op().await {
                Ok(value) => return Ok(value),
                Err(e) if !e.is_retriable() => return Err(e),
                Err(e) => e,
            };
            if Instant::now() + backoff >= deadline {
                return Err(error);
            }
            tracing::debug!(%error, ?backoff, "retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.inner.config.retry_backoff_max);
            if error.needs_metadata_refresh() {
                // A failed refresh is retried with the operation.
                let _ = self.refresh_metadata_once(topics, seen).await;
            }
        }
    }
}
