//! [`Connection`]: one TCP connection to one broker, multiplexing pipelined requests.
//!
//! A writer task sends frames in the order callers submit them and a reader task hands each
//! response to its caller. Kafka answers a connection's requests in order, so the reader pairs
//! responses with a FIFO of pending correlation ids and checks each id. A semaphore bounds the
//! requests in flight; callers wait for a permit, which is the backpressure. Reader and writer
//! are separate tasks so that a large request being written never stops responses being read
//! (a broker blocked writing to us would otherwise stop reading from us: a deadlock).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use kafka_protocol::messages::{ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::error::{Error, Result};

/// What a connection needs to know; copied from [`crate::ClientConfig`].
#[derive(Debug, Clone)]
pub(crate) struct ConnectionConfig {
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    pub max_response_bytes: usize,
}

type Reply = oneshot::Sender<Result<Bytes>>;

struct Outgoing {
    frame: Bytes,
    correlation_id: i32,
    /// `None` for requests the broker does not answer (Produce with acks=0).
    reply: Option<Reply>,
    permit: OwnedSemaphorePermit,
}

struct Pending {
    correlation_id: i32,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

/// An open connection with the API versions the broker announced.
#[derive(Debug)]
pub(crate) struct Connection {
    addr: String,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    in_flight: Arc<Semaphore>,
    correlation_id: AtomicI32,
    closed: Arc<AtomicBool>,
    /// Flushes the writer completed: progress, for telling a stuck socket from a busy one.
    writes: Arc<AtomicU64>,
    /// Set once, by the ApiVersions exchange in `connect`.
    versions: OnceLock<HashMap<i16, (i16, i16)>>,
    /// The broker's finalized `transaction.version` feature (0 when it names none).
    transaction_version: OnceLock<i16>,
    config: ConnectionConfig,
    tasks: [AbortHandle; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Connection {
    /// Connects to `addr` and asks the broker which API versions it handles.
    pub async fn connect(addr: &str, config: ConnectionConfig) -> Result<Arc<Connection>> {
        let io_error = |source| Error::Io {
            addr: addr.to_owned(),
            source,
        };
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout(config.connect_timeout))?
            .map_err(io_error)?;
        stream.set_nodelay(true).map_err(io_error)?;
        let (read_half, write_half) = stream.into_split();
        let codec = || {
            LengthDelimitedCodec::builder()
                .max_frame_length(config.max_response_bytes)
                .new_codec()
        };
        let reader = FramedRead::new(read_half, codec());
        let writer = FramedWrite::new(write_half, codec());
        let pending = Arc::new(Mutex::new(VecDeque::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let (outgoing, queue) = mpsc::unbounded_channel();
        let writes = Arc::new(AtomicU64::new(0));
        let write_task = tokio::spawn(write_loop(
            writer,
            queue,
            Arc::clone(&pending),
            Arc::clone(&closed),
            Arc::clone(&writes),
        ));
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        let read_task = tokio::spawn(read_loop(
            reader,
            pending,
            Arc::clone(&closed),
            Arc::clone(&in_flight),
            addr.to_owned(),
        ));
        let connection = Arc::new(Connection {
            addr: addr.to_owned(),
            outgoing,
            in_flight,
            correlation_id: AtomicI32::new(0),
            closed,
            writes,
            versions: OnceLock::new(),
            transaction_version: OnceLock::new(),
            config,
            tasks: [write_task.abort_handle(), read_task.abort_handle()],
        });
        let (versions, transaction_version) = connection.negotiate().await?;
        let _ = connection.versions.set(versions);
        let _ = connection.transaction_version.set(transaction_version);
        Ok(connection)
    }

    /// ApiVersions v4 first (the first version whose answer carries the finalized features a
    /// broker of ours sends); a broker that does not know it answers v0 with its range
    /// (KIP-511). Returns the ranges and the finalized `transaction.version`.
    async fn negotiate(self: &Arc<Self>) -> Result<(HashMap<i16, (i16, i16)>, i16)> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("streambus-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response = match self.send(&request, 4, None).await {
            Ok(response) if response.error_code == 0 => response,
            Ok(_) | Err(Error::Protocol(_)) => {
                self.send(&ApiVersionsRequest::default(), 0, None).await?
            }
            Err(e) => return Err(e),
        };
        Error::check(response.error_code, || Some("ApiVersions".to_owned()))?;
        let transaction_version = response
            .finalized_features
            .iter()
            .find(|feature| feature.name.as_str() == "transaction.version")
            .map_or(0, |feature| feature.max_version_level);
        let versions = response
            .api_keys
            .iter()
            .map(|key| (key.api_key, (key.min_version, key.max_version)))
            .collect();
        Ok((versions, transaction_version))
    }

    /// The broker's finalized `transaction.version` (2: KIP-890 part 2), 0 when unknown.
    pub fn transaction_version(&self) -> i16 {
        self.transaction_version.get().copied().unwrap_or(0)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the connection; requests in flight fail with [`Error::Disconnected`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.in_flight.close();
        for task in &self.tasks {
            task.abort();
        }
    }

    /// The highest version of `R` both sides handle, within the client's own `[min, max]`.
    pub fn version<R: Request>(&self, min: i16, max: i16) -> Result<i16> {
        let versions = self.versions.get().ok_or_else(|| {
            Error::Protocol(format!("no API versions from broker {} yet", self.addr))
        })?;
        let (broker_min, broker_max) = versions.get(&R::KEY).copied().ok_or_else(|| {
            Error::Protocol(format!(
                "broker {} does not support API key {}",
                self.addr,
                R::KEY
            ))
        })?;
        let version = max.min(broker_max).min(R::VERSIONS.max);
        if version < min.max(broker_min).max(R::VERSIONS.min) {
            return Err(Error::Protocol(format!(
                "broker {} supports API key {} versions {broker_min}-{broker_max}, this client \
                 {min}-{max}",
                self.addr,
                R::KEY
            )));
        }
        Ok(version)
    }

    /// Sends `request` at `version` and waits for its response, for at most `extra_wait` more
    /// than the request timeout (a long-polling fetch waits on the broker by design). A timeout
    /// closes the connection, as Kafka clients do: the broker may be stuck.
    pub async fn send<R: Request>(
        self: &Arc<Self>,
        request: &R,
        version: i16,
        extra_wait: Option<Duration>,
    ) -> Result<R::Response> {
        self.submit(request, version, extra_wait).await?.await
    }

    /// Queues `request` now (requests go out in the order they are submitted) and returns the
    /// future of its response, bounded as in [`Connection::send`].
    pub async fn submit<R: Request>(
        self: &Arc<Self>,
        request: &R,
        version: i16,
        extra_wait: Option<Duration>,
    ) -> Result<impl Future<Output = Result<R::Response>> + use<R>> {
        let timeout = self.config.request_timeout + extra_wait.unwrap_or_default();
        let (reply, response) = oneshot::channel();
        self.enqueue(request, version, Some(reply)).await?;
        let conn = Arc::clone(self);
        Ok(async move {
            let mut frame = match tokio::time::timeout(timeout, response).await {
                Ok(Ok(frame)) => frame?,
                Ok(Err(_)) => return Err(Error::Disconnected(conn.addr.clone())),
                Err(_) => {
                    conn.close();
                    return Err(Error::Timeout(timeout));
                }
            };
            let header_version = <R::Response as HeaderVersion>::header_version(version);
            ResponseHeader::decode(&mut frame, header_version)
                .map_err(|e| Error::Protocol(format!("response header: {e}")))?;
            R::Response::decode(&mut frame, version)
                .map_err(|e| Error::Protocol(format!("response to API key {}: {e}", R::KEY)))
        })
    }

    /// Queues a request the broker does not answer (Produce with acks=0).
    pub async fn submit_without_response<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<()> {
        self.enqueue(request, version, None).await
    }

    /// Encodes and queues a request. Waiting for an in-flight slot is bounded by the request
    /// timeout.
    async fn enqueue<R: Request>(
        &self,
        request: &R,
        version: i16,
        reply: Option<Reply>,
    ) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Disconnected(self.addr.clone()));
        }
        let writes_before = self.writes.load(Ordering::Acquire);
        let permit = match tokio::time::timeout(
            self.config.request_timeout,
            Arc::clone(&self.in_flight).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) if !self.is_closed() => permit,
            Ok(_) => return Err(Error::Disconnected(self.addr.clone())),
            Err(_) => {
                // A long queue of callers is not a dead broker, but a socket that took no bytes
                // the whole time is stuck (the broker stopped reading): requests without an
                // answer (acks=0) would never time out on their own.
                if self.writes.load(Ordering::Acquire) == writes_before {
                    self.close();
                }
                return Err(Error::Timeout(self.config.request_timeout));
            }
        };
        let correlation_id = self.correlation_id.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.config.client_id.clone())));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|()| request.encode(&mut body, version))
            .map_err(|e| Error::Protocol(format!("encoding API key {}: {e}", R::KEY)))?;
        self.outgoing
            .send(Outgoing {
                frame: body.freeze(),
                correlation_id,
                reply,
                permit,
            })
            .map_err(|_| Error::Disconnected(self.addr.clone()))
    }
}

async fn write_loop(
    mut writer: FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    pending: Arc<Mutex<VecDeque<Pending>>>,
    closed: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) {
    // Bounded by the in-flight semaphore: at most `max_in_flight` requests wait here.
    while let Some(mut next) = queue.recv().await {
        loop {
            let mut no_response = None;
            match next.reply.take() {
                Some(reply) => {
                    let mut waiting = pending.lock().unwrap_or_else(|e| e.into_inner());
                    // The reader sets `closed` under this lock when it stops: a request
                    // queued after that would never be answered, so it fails at once.
                    if closed.load(Ordering::Acquire) {
                        return;
                    }
                    waiting.push_back(Pending {
                        correlation_id: next.correlation_id,
                        reply,
                        _permit: next.permit,
                    });
                }
                None => no_response = Some(next.permit),
            }
            if writer.feed(next.frame).await.is_err() {
                closed.store(true, Ordering::Release);
                return;
            }
            drop(no_response);
            match queue.try_recv() {
                Ok(more) => next = more,
                Err(_) => break,
            }
        }
        if SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
            break;
        }
        writes.fetch_add(1, Ordering::Release);
    }
    closed.store(true, Ordering::Release);
}

async fn read_loop(
    mut reader: FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    pending: Arc<Mutex<VecDeque<Pending>>>,
    closed: Arc<AtomicBool>,
    in_flight: Arc<Semaphore>,
    addr: String,
) {
    while let Some(Ok(frame)) = reader.next().await {
        let frame = frame.freeze();
        let Some(waiter) = pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        else {
            tracing::warn!(broker = %addr, "response without a request; closing");
            break;
        };
        let correlation_id = (frame.len() >= 4).then(|| (&frame[..4]).get_i32());
        if correlation_id != Some(waiter.correlation_id) {
            tracing::warn!(broker = %addr, expected = waiter.correlation_id, ?correlation_id,
                "response out of order; closing");
            let _ = waiter.reply.send(Err(Error::Protocol(format!(
                "broker {addr} answered correlation id {correlation_id:?}, expected {}",
                waiter.correlation_id
            ))));
            break;
        }
        // The caller may have given up (timeout); the response is dropped.
        let _ = waiter.reply.send(Ok(frame));
    }
    // Under the lock the writer checks: nothing is queued for an answer after this.
    let mut waiting = pending.lock().unwrap_or_else(|e| e.into_inner());
    closed.store(true, Ordering::Release);
    // Callers waiting for an in-flight slot fail now rather than at their timeout.
    in_flight.close();
    // Dropping the remaining waiters fails their callers with `Disconnected`.
    waiting.clear();
}
