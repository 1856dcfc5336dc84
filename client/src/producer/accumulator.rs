//! The producer's shared state: per-partition queues of batches, the `buffer_memory` budget,
//! producer id and sequences, and the bookkeeping `flush` waits on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, TimestampType};
use tokio::sync::{oneshot, Notify, Semaphore};

use super::ProducerConfig;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::partitioner::{partition_for_key, StickyPartitioner};
use crate::record::{ProducerRecord, RecordMetadata, TopicPartition};

pub(super) type Delivery = oneshot::Sender<Result<RecordMetadata>>;

/// Where a batch is in its life. Batches settle (`Written`, `Failed`) in any order but leave
/// the queue, and complete their records' futures, only from the front: in order.
#[derive(Debug)]
pub(super) enum BatchState {
    /// Accepting records (the last batch) or waiting to be sent.
    Open,
    InFlight,
    /// Sent, failed with a retriable error, waiting to be sent again as encoded.
    Retry,
    Written {
        base_offset: i64,
        append_time_ms: i64,
    },
    Failed(Error),
}

/// Records bound for one partition, sent as one record batch.
#[derive(Debug)]
pub(super) struct Batch {
    pub id: u64,
    pub state: BatchState,
    pub records: Vec<Record>,
    pub deliveries: Vec<Delivery>,
    pub bytes: usize,
    pub created: Instant,
    /// Flush generation at creation: `flush` waits for batches of earlier generations.
    pub generation: u64,
    pub attempts: u32,
    /// Encoded at the first send (with its producer id and sequence) and resent as is.
    pub encoded: Option<Bytes>,
    /// The producer id and epoch it was encoded under (-1 when not idempotent or not yet).
    pub producer: (i64, i16),
    /// The sequence of its first record, once encoded idempotently.
    pub base_sequence: i32,
    /// Records of refused batches ahead of it since it was encoded: its sequences move down by
    /// this much before it is sent again (the broker never saw the refused ones).
    pub sequence_shift: i32,
}

impl Batch {
    /// Sent at least once and not settled: the broker may or may not have it.
    pub fn unsettled(&self) -> bool {
        matches!(self.state, BatchState::InFlight | BatchState::Retry)
    }
}

/// One partition's queue: batches in record order. Up to `max_in_flight_per_partition` are
/// in flight; while any waits for a retry, they are resent one at a time, before anything newer.
#[derive(Debug, Default)]
pub(super) struct PartitionQueue {
    pub batches: VecDeque<Batch>,
    pub in_flight: usize,
    pub retry_at: Option<Instant>,
    pub next_sequence: i32,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub queues: HashMap<TopicPartition, PartitionQueue>,
    pub generation: u64,
    /// Batches of generations below this are sent without lingering.
    pub flush_below: u64,
    pub incomplete: BTreeMap<u64, usize>,
    pub next_batch_id: u64,
    pub closed: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// An idempotent batch failed for good (refused, or expired with an unknown outcome): the
    /// sequence numbers after it no longer fit, so the producer takes a new id before sending
    /// more (as the Java client bumps its epoch).
    pub needs_producer_id: bool,
    /// Some send failed in a way that suggests stale leaders.
    pub refresh_wanted: bool,
    pub refreshing: bool,
    /// An InitProducerId task is running.
    pub init_running: bool,
    /// A new producer id was refused for good (e.g. not authorised): every record not yet
    /// sent fails with this, and so does every later `send`.
    pub fatal: Option<Error>,
    /// A transactional producer's open transaction (`None` for other producers).
    pub txn: Option<TxnProgress>,
}

/// The transaction a transactional producer has open.
#[derive(Debug, Default)]
pub(super) struct TxnProgress {
    /// `begin_transaction` was called and the transaction not ended yet.
    pub open: bool,
    /// Partitions the coordinator added to the transaction: their batches may go.
    pub added: std::collections::HashSet<TopicPartition>,
    /// Partitions written to but not added yet.
    pub to_add: std::collections::BTreeSet<TopicPartition>,
    /// An AddPartitionsToTxn task is running.
    pub adding: bool,
    /// The coordinator knows of the transaction (a partition or the offsets joined it): only
    /// then is there anything for EndTxn to end.
    pub started: bool,
    /// Transaction version 2 (KIP-890 part 2) is in use: no AddPartitionsToTxn or
    /// AddOffsetsToTxn, Produce v12 and EndTxn v5, a new epoch from every EndTxn.
    pub v2: bool,
    /// An EndTxn was sent without a clear answer (`true`: commit): only the same end may be
    /// tried again, since the coordinator may already be carrying it out.
    pub ending: Option<bool>,
    /// The first failure in the transaction (a record not written, partitions not added):
    /// it can only be aborted.
    pub failed: Option<Error>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub client: Client,
    pub config: ProducerConfig,
    /// Permits are bytes of `buffer_memory`.
    pub memory: Arc<Semaphore>,
    pub state: Mutex<State>,
    /// Wakes the sender task: records appended, a batch completed, a flush.
    pub wake_sender: Notify,
    /// Wakes `flush` callers when batches complete.
    pub completed: Notify,
    partitioner: Mutex<StickyPartitioner>,
    /// A transactional producer's coordinator, found on first use.
    pub txn_coordinator: std::sync::OnceLock<Arc<crate::group::coordinator::Coordinator>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Shared {
    pub fn new(client: Client, config: ProducerConfig) -> Arc<Shared> {
        Arc::new(Shared {
            client,
            memory: Arc::new(Semaphore::new(config.buffer_memory)),
            state: Mutex::new(State {
                producer_id: -1,
                producer_epoch: -1,
                txn: config.transactional_id.is_some().then(TxnProgress::default),
                ..State::default()
            }),
            config,
            wake_sender: Notify::new(),
            completed: Notify::new(),
            partitioner: Mutex::new(StickyPartitioner::new()),
            txn_coordinator: std::sync::OnceLock::new(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The partition count of `topic`, refreshing metadata (and letting the broker auto-create
    /// the topic, if it does) until it is known or `max_block` passes.
    async fn partitions(&self, topic: &str, deadline: Instant) -> Result<i32> {
        // A topic listed without partitions is still being created: not usable yet.
        let usable = |metadata: &crate::metadata::ClusterMetadata| {
            metadata
                .topics
                .get(topic)
                .filter(|t| !t.partitions.is_empty())
                .map(|t| t.partitions.len() as i32)
        };
        if let Some(partitions) = usable(&self.client.metadata()) {
            return Ok(partitions);
        }
        let mut backoff = self.client.config().retry_backoff;
        loop {
            let refreshed = self
                .client
                .refresh_metadata(&[topic.to_owned()], true)
                .await;
            if let Some(partitions) = refreshed.as_deref().ok().and_then(usable) {
                return Ok(partitions);
            }
            if Instant::now() + backoff > deadline {
                return Err(match refreshed {
                    Err(e) => e,
                    Ok(_) => Error::UnknownTopicOrPartition(topic.to_owned()),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.client.config().retry_backoff_max);
        }
    }

    pub async fn append(
        &self,
        record: ProducerRecord,
    ) -> Result<oneshot::Receiver<Result<RecordMetadata>>> {
        let size = record.size_estimate();
        if size > self.config.max_request_size {
            return Err(Error::RecordTooLarge {
                size,
                max: self.config.max_request_size,
            });
        }
        {
            let state = self.lock();
            if let Some(error) = &state.fatal {
                return Err(error.clone());
            }
            if state.closed {
                return Err(Error::Closed);
            }
        }
        let deadline = Instant::now() + self.config.max_block;
        let partitions = self.partitions(&record.topic, deadline).await?;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if (0..partitions).contains(&p) => p,
            (Some(p), _) => {
                return Err(Error::UnknownTopicOrPartition(format!(
                    "{}-{p} ({partitions} partitions)",
                    record.topic
                )))
            }
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => self
                .partitioner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .partition(&record.topic, partitions, size, self.config.batch_size),
        };
        // Backpressure: wait for room in `buffer_memory`. The permits go back when the batch
        // completes (see `release`).
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(remaining, self.memory.acquire_many(permits))
            .await
            .map_err(|_| Error::BufferExhausted(self.config.max_block))?
            .map_err(|_| Error::Closed)?
            .forget();

        let (delivery, receiver) = oneshot::channel();
        let tp = TopicPartition::new(record.topic, partition);
        let headers: IndexMap<StrBytes, Option<Bytes>> = record
            .headers
            .into_iter()
            .map(|h| (StrBytes::from_string(h.key), h.value))
            .collect();
        let mut state = self.lock();
        if state.closed {
            drop(state);
            self.memory.add_permits(size);
            return Err(Error::Closed);
        }
        if let Some(txn) = state.txn.as_mut() {
            if !txn.open {
                drop(state);
                self.memory.add_permits(size);
                return Err(Error::InvalidArgument(
                    "a transactional producer sends inside a transaction: begin_transaction first"
                        .to_owned(),
                ));
            }
            if txn.v2 {
                // The partition's leader adds it to the transaction.
                txn.added.insert(tp.clone());
                txn.started = true;
            } else if !txn.added.contains(&tp) {
                txn.to_add.insert(tp.clone());
            }
        }
        let generation = state.generation;
        let batch_size = self.config.batch_size;
        let State {
            queues,
            incomplete,
            next_batch_id,
            ..
        } = &mut *state;
        let queue = queues.entry(tp).or_default();
        let needs_new = queue
            .batches
            .back()
            .is_none_or(|b| !matches!(b.state, BatchState::Open) || b.bytes + size > batch_size);
        if needs_new {
            *next_batch_id += 1;
            queue.batches.push_back(Batch {
                id: *next_batch_id,
                state: BatchState::Open,
                records: Vec::new(),
                deliveries: Vec::new(),
                bytes: 0,
                created: Instant::now(),
                generation,
                attempts: 0,
                encoded: None,
                producer: (-1, -1),
                base_sequence: -1,
                sequence_shift: 0,
            });
            *incomplete.entry(generation).or_default() += 1;
        }
        let batch = queue.batches.back_mut().expect("a batch was pushed above");
        let mut new = new_record(
            batch.records.len(),
            record.key,
            record.value,
            headers,
            record.timestamp_ms,
        );
        // The encoder takes the batch's transactional flag from its records.
        new.transactional = self.config.transactional_id.is_some();
        batch.records.push(new);
        batch.deliveries.push(delivery);
        batch.bytes += size;
        // A full batch is sendable now; a new one starts the sender's linger timer.
        let wake = batch.bytes >= batch_size || batch.records.len() == 1;
        drop(state);
        if wake {
            self.wake_sender.notify_one();
        }
        Ok(receiver)
    }

    /// Gives a completed batch's bytes back to `buffer_memory` and lets `flush` re-check.
    pub fn release(&self, state: &mut State, batch: &Batch) {
        self.memory.add_permits(batch.bytes);
        if let Some(count) = state.incomplete.get_mut(&batch.generation) {
            *count -= 1;
            if *count == 0 {
                state.incomplete.remove(&batch.generation);
            }
        }
        self.completed.notify_waiters();
    }

    pub async fn flush(&self) {
        let target = {
            let mut state = self.lock();
            let target = state.generation;
            state.generation += 1;
            state.flush_below = state.generation;
            target
        };
        self.wake_sender.notify_one();
        loop {
            let done = self.completed.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.lock().incomplete.range(..=target).next().is_none() {
                return;
            }
            done.await;
        }
    }

    pub async fn close(&self) {
        self.flush().await;
        self.lock().closed = true;
        self.wake_sender.notify_one();
    }
}

pub(super) fn new_record(
    index: usize,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: IndexMap<StrBytes, Option<Bytes>>,
    timestamp_ms: Option<i64>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: index as i64,
        sequence: index as i32,
        timestamp: timestamp_ms.unwrap_or_else(now_ms),
        key,
        value,
        headers,
    }
}
