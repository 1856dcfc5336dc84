//! [`Producer`]: batches records per partition and sends them to partition leaders.
//!
//! `send` picks the partition, reserves the record's size in `buffer_memory` (waiting up to
//! `max_block` when it is full: the backpressure) and appends to the partition's open batch. The
//! sender task ([`sender`]) drains batches that are full, past `linger`, or flushed, groups them
//! by leader into Produce requests, and hands each broker's requests, in order, to one task per
//! broker that pipelines them on that broker's connection. Up to `max_in_flight_per_partition`
//! batches of a partition are in flight; records' futures complete in partition order.
//!
//! Transactions ([`transaction`]): with a `transactional_id`, `new` gets the producer id from
//! the id's transaction coordinator (fencing older instances), records are sent only inside a
//! transaction, and each partition a transaction writes to is added to it at the coordinator
//! before its first batch leaves.
//!
//! Ordering across retries: with idempotence (the default, as in the Java client) every batch
//! carries the producer id and a sequence number fixed at its first send. If a batch fails with a
//! retriable error, the broker refuses the batches behind it (OUT_OF_ORDER_SEQUENCE_NUMBER),
//! and the producer resends them all, one at a time, in order: nothing is reordered or written
//! twice. Without idempotence (acks 0 or 1), a retry can land behind a later batch, as in the
//! Java client; set `max_in_flight_per_partition` to 1 to rule that out.

mod accumulator;
mod sender;
mod transaction;

pub use transaction::ConsumerGroupMetadata;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kafka_protocol::records::Compression;
use tokio::sync::oneshot;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::record::{ProducerRecord, RecordMetadata};
use accumulator::Shared;

/// How many replicas must have a record before the broker acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No answer at all: fastest, and a lost record goes unnoticed.
    None,
    /// The leader wrote it.
    Leader,
    /// Every in-sync replica has it (`acks=all`, at least `min.insync.replicas`).
    All,
}

impl Acks {
    pub(crate) fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = Error;

    fn from_str(s: &str) -> Result<Acks> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => Err(Error::InvalidArgument(format!(
                "acks must be 0, 1 or all, not {s:?}"
            ))),
        }
    }
}

/// Parses a Kafka `compression.type` name.
pub fn parse_compression(name: &str) -> Result<Compression> {
    match name {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(Error::InvalidArgument(format!(
            "compression must be none, gzip, snappy, lz4 or zstd, not {name:?}"
        ))),
    }
}

/// Producer settings; names and defaults follow the Java client's where they exist there.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a batch waits for more records before it is sent (`linger.ms`).
    pub linger: Duration,
    /// A batch is closed once it holds this many bytes (`batch.size`). The default, as in
    /// librdkafka, is large: batches fill on their own under load and `linger` bounds the
    /// wait otherwise.
    pub batch_size: usize,
    /// Total bytes of records waiting or in flight (`buffer.memory`).
    pub buffer_memory: usize,
    /// How long `send` waits for buffer space or metadata (`max.block.ms`).
    pub max_block: Duration,
    /// The largest record accepted, and the bound of one Produce request (`max.request.size`).
    pub max_request_size: usize,
    /// How long a record may take from `send` to its acknowledgement, retries included
    /// (`delivery.timeout.ms`).
    pub delivery_timeout: Duration,
    pub compression: Compression,
    /// Producer id and sequence numbers, so retries never duplicate (`enable.idempotence`).
    /// Ignored with `acks` other than all, as in the Java client.
    pub enable_idempotence: bool,
    /// Batches of one partition in flight at once (Java's
    /// `max.in.flight.requests.per.connection`, which idempotence caps at 5).
    pub max_in_flight_per_partition: usize,
    /// Makes the producer transactional (`transactional.id`): records go out only inside a
    /// transaction (see [`Producer::begin_transaction`]); needs idempotence and acks=all.
    pub transactional_id: Option<String>,
    /// How long the coordinator lets a transaction stay open before it aborts it
    /// (`transaction.timeout.ms`).
    pub transaction_timeout: Duration,
    /// Use transaction version 2 (KIP-890 part 2) when the cluster finalizes it, as Kafka 4's
    /// Java client does: a new epoch from every EndTxn, partitions and offsets added by the
    /// brokers. `false` keeps version 1.
    pub transaction_version_2: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 512 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            max_request_size: 1024 * 1024,
            delivery_timeout: Duration::from_secs(120),
            compression: Compression::None,
            enable_idempotence: true,
            max_in_flight_per_partition: 5,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
            transaction_version_2: true,
        }
    }
}

/// Resolves to where the record was written, or why it was not.
#[derive(Debug)]
pub struct DeliveryFuture {
    receiver: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// A producer; cheap to clone, all clones share one accumulator and sender task. When the
/// last clone is dropped the sender task still delivers what is queued, then stops.
#[derive(Debug, Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Marks the producer closed when the last [`Producer`] clone goes away.
#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake_sender.notify_one();
    }
}

impl Producer {
    /// Starts a producer on `client` (and, with idempotence, gets a producer id).
    pub async fn new(client: Client, config: ProducerConfig) -> Result<Producer> {
        if config.transactional_id.is_some()
            && (!config.enable_idempotence || config.acks != Acks::All)
        {
            return Err(Error::InvalidArgument(
                "a transactional producer needs enable_idempotence and acks=all".to_owned(),
            ));
        }
        if config.batch_size == 0
            || config.batch_size > config.max_request_size
            || config.buffer_memory < config.max_request_size
            || !(1..=5).contains(&config.max_in_flight_per_partition)
        {
            return Err(Error::InvalidArgument(
                "batch_size must be 1 to max_request_size, buffer_memory >= \
                 max_request_size and max_in_flight_per_partition 1 to 5"
                    .to_owned(),
            ));
        }
        let shared = Shared::new(client, config);
        sender::start(Arc::clone(&shared)).await?;
        Ok(Producer {
            _owner: Arc::new(Owner(Arc::clone(&shared))),
            shared,
        })
    }

    /// Queues `record`; the returned future resolves once the broker acknowledged it (or it
    /// failed). Waits while `buffer_memory` is full, for at most `max_block`.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let receiver = self.shared.append(record).await?;
        Ok(DeliveryFuture { receiver })
    }

    /// Sends every record queued so far without waiting for `linger`, and waits until each
    /// has completed (acknowledged or failed).
    pub async fn flush(&self) {
        self.shared.flush().await;
    }

    /// Flushes, then stops the sender task; later `send`s fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.shared.close().await;
    }

    /// Bytes of `buffer_memory` currently free.
    pub fn available_buffer_bytes(&self) -> usize {
        self.shared.memory.available_permits()
    }
}
