//! [`Consumer`]: reads assigned partitions (no group membership yet) with one pipelined fetch
//! per leader broker.
//!
//! Each partition has a *position* (the next offset `poll` returns) and a *fetch offset* (the
//! next offset to ask the broker for). A partition is fetched again as soon as its buffered
//! records are handed out, so the next response is on its way while the caller processes the
//! last `poll`'s records. A `seek` bumps the partition's epoch; answers to fetches sent before
//! it are dropped.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{RecordBatchDecoder, TimestampType};
use kafka_protocol::ResponseError;
use tokio::task::JoinSet;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::record::{ConsumerRecord, Header, TopicPartition};

/// Fetch versions used: 4 (record batches, last stable offset) to 12 (the last that names
/// topics rather than topic ids).
const FETCH_VERSIONS: (i16, i16) = (4, 12);
/// ListOffsets versions: 1 (single offset) to 7 (max timestamp).
const LIST_OFFSETS_VERSIONS: (i16, i16) = (1, 7);

/// ListOffsets timestamp for the log start offset.
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp for the log end (the high watermark, or the LSO for read_committed).
pub const LATEST: i64 = -1;

/// Where a partition without a valid position starts (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// No automatic position: `poll` fails until the caller seeks, and fails with
    /// OFFSET_OUT_OF_RANGE when the position falls outside the log.
    None,
}

/// Consumer settings; names and defaults follow the Java client's.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// How long the broker may hold a fetch waiting for `fetch_min_bytes` (`fetch.max.wait.ms`).
    pub fetch_max_wait: Duration,
    pub fetch_min_bytes: i32,
    pub fetch_max_bytes: i32,
    pub max_partition_fetch_bytes: i32,
    pub auto_offset_reset: OffsetReset,
    /// Read only committed transactional data (`isolation.level=read_committed`).
    pub read_committed: bool,
    /// At most this many records per `poll`.
    pub max_poll_records: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
            read_committed: false,
            max_poll_records: 500,
        }
    }
}

#[derive(Debug)]
struct Assigned {
    /// Next offset `poll` returns; `None` until resolved by `reset`.
    position: Option<i64>,
    /// Next offset to fetch (past buffered records and skipped control records).
    fetch_offset: i64,
    /// ListOffsets timestamp to resolve the position with.
    reset: Option<i64>,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    buffered: usize,
    fetching: bool,
    epoch: u64,
    retry_at: Option<Instant>,
    /// Leader epoch of the last record `poll` returned (or of the committed offset sought to).
    last_leader_epoch: Option<i32>,
}

/// One ListOffsets round: what was asked, the offsets found, the partitions that failed.
type LookupResult = (
    Vec<(TopicPartition, i64)>,
    HashMap<TopicPartition, i64>,
    Vec<(TopicPartition, Error)>,
);

/// One fetch's answer, tagged with the partitions and epochs it was sent for.
type FetchResult = (Vec<(TopicPartition, u64, i64)>, Result<FetchResponse>);

/// A consumer of explicitly assigned partitions. Not `Clone`: like the Java consumer, one
/// owner polls it.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    assigned: BTreeMap<TopicPartition, Assigned>,
    buffer: VecDeque<ConsumerRecord>,
    fetches: JoinSet<FetchResult>,
    /// In-flight fetch tasks (one per broker at a time) by task id, with their broker and
    /// partitions, so that a task that dies still frees them.
    fetch_tasks: HashMap<tokio::task::Id, (i32, Vec<TopicPartition>)>,
    /// A background metadata refresh is running.
    refreshing: Arc<std::sync::atomic::AtomicBool>,
    /// Per broker, rotates the order of partitions in fetches, so that none is always last.
    fetch_rotation: HashMap<i32, usize>,
    /// Last time a background metadata refresh started.
    last_refresh: Instant,
    /// ListOffsets tasks looking up start positions, and the partitions they cover.
    lookups: JoinSet<LookupResult>,
    resolving: HashSet<TopicPartition>,
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            assigned: BTreeMap::new(),
            buffer: VecDeque::new(),
            fetches: JoinSet::new(),
            fetch_tasks: HashMap::new(),
            refreshing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            fetch_rotation: HashMap::new(),
            last_refresh: Instant::now() - Duration::from_secs(3600),
            lookups: JoinSet::new(),
            resolving: HashSet::new(),
        }
    }

    /// Replaces the assignment; new partitions start per `auto_offset_reset`.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let wanted: BTreeMap<TopicPartition, ()> =
            partitions.into_iter().map(|tp| (tp, ())).collect();
        self.assigned.retain(|tp, _| wanted.contains_key(tp));
        self.buffer
            .retain(|r| wanted.contains_key(&TopicPartition::new(r.topic.clone(), r.partition)));
        let reset = match self.config.auto_offset_reset {
            OffsetReset::Earliest => Some(EARLIEST),
            OffsetReset::Latest => Some(LATEST),
            // No position until the caller seeks; `poll` says so.
            OffsetReset::None => None,
        };
        for tp in wanted.into_keys() {
            self.assigned.entry(tp).or_insert(Assigned {
                position: None,
                fetch_offset: -1,
                reset,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                buffered: 0,
                fetching: false,
                epoch: 0,
                retry_at: None,
                last_leader_epoch: None,
            });
        }
    }

    /// Assigns every partition of `topic`.
    pub async fn assign_topic(&mut self, topic: &str) -> Result<Vec<TopicPartition>> {
        let metadata = self
            .client
            .refresh_metadata(&[topic.to_owned()], false)
            .await?;
        let info = metadata
            .topics
            .get(topic)
            .ok_or_else(|| Error::UnknownTopicOrPartition(topic.to_owned()))?;
        let tps: Vec<TopicPartition> = info
            .partitions
            .iter()
            .map(|p| TopicPartition::new(topic, p.partition))
            .collect();
        let mut all: Vec<TopicPartition> = self.assigned.keys().cloned().collect();
        all.extend(tps.iter().cloned());
        self.assign(all);
        Ok(tps)
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.keys().cloned().collect()
    }

    fn assigned_mut(&mut self, tp: &TopicPartition) -> Result<&mut Assigned> {
        self.assigned
            .get_mut(tp)
            .ok_or_else(|| Error::InvalidArgument(format!("{tp} is not assigned")))
    }

    /// The next `poll` returns `tp` from `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(Error::InvalidArgument(format!("offset {offset} < 0")));
        }
        self.reposition(tp, Some(offset), None)
    }

    /// `tp` restarts from its log start offset (resolved on the next `poll`).
    pub fn seek_to_beginning(&mut self, tp: &TopicPartition) -> Result<()> {
        self.reposition(tp, None, Some(EARLIEST))
    }

    /// `tp` continues from its end: only records written from now on.
    pub fn seek_to_end(&mut self, tp: &TopicPartition) -> Result<()> {
        self.reposition(tp, None, Some(LATEST))
    }

    /// `tp` continues from the first record with a timestamp at or after `timestamp_ms` (the
    /// end if there is none).
    pub fn seek_to_timestamp(&mut self, tp: &TopicPartition, timestamp_ms: i64) -> Result<()> {
        if timestamp_ms < 0 {
            return Err(Error::InvalidArgument(format!(
                "timestamp {timestamp_ms} < 0"
            )));
        }
        self.reposition(tp, None, Some(timestamp_ms))
    }

    fn reposition(
        &mut self,
        tp: &TopicPartition,
        position: Option<i64>,
        reset: Option<i64>,
    ) -> Result<()> {
        let state = self.assigned_mut(tp)?;
        state.epoch += 1;
        state.position = position;
        state.fetch_offset = position.unwrap_or(-1);
        state.reset = reset;
        state.buffered = 0;
        state.retry_at = None;
        state.last_leader_epoch = None;
        self.buffer
            .retain(|r| !(r.topic == tp.topic && r.partition == tp.partition));
        Ok(())
    }

    /// Like [`Consumer::seek`], remembering `leader_epoch` as the epoch of the record before
    /// `offset` (a committed offset's), so that committing the position unchanged keeps it.
    pub(crate) fn seek_with_epoch(
        &mut self,
        tp: &TopicPartition,
        offset: i64,
        leader_epoch: Option<i32>,
    ) -> Result<()> {
        self.seek(tp, offset)?;
        self.assigned_mut(tp)?.last_leader_epoch = leader_epoch;
        Ok(())
    }

    /// The leader epoch of the last record `poll` returned for `tp`, if known.
    pub fn last_leader_epoch(&self, tp: &TopicPartition) -> Option<i32> {
        self.assigned.get(tp)?.last_leader_epoch
    }

    /// The offset of the next record `poll` returns for `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.assigned.get(tp)?.position
    }

    /// Records between the position and the end of `tp` (the high watermark, or the last
    /// stable offset with `read_committed`), as of the last fetch.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        let state = self.assigned.get(tp)?;
        let end = if self.config.read_committed {
            state.last_stable_offset
        } else {
            state.high_watermark
        };
        let position = state.position?;
        (end >= 0).then(|| (end - position).max(0))
    }

    /// Records fetched for assigned partitions, waiting up to `timeout` when none are buffered.
    /// An empty result means none arrived in time.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        if let Some((tp, _)) = self
            .assigned
            .iter()
            .find(|(_, s)| s.position.is_none() && s.reset.is_none())
        {
            return Err(Error::InvalidArgument(format!(
                "{tp} has no position and auto_offset_reset is None: seek first"
            )));
        }
        loop {
            if !self.buffer.is_empty() {
                let records = self.take_buffered();
                self.send_fetches();
                return Ok(records);
            }
            self.start_lookups();
            self.send_fetches();
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            if self.fetches.is_empty() && self.lookups.is_empty() {
                // Nothing to wait for (leaders unknown, backing off): wait a little.
                let pause = self.client.config().retry_backoff.min(deadline - now);
                tokio::time::sleep(pause).await;
                continue;
            }
            // Lookups and fetches run as tasks: one that outlives this poll is picked up by
            // the next, never cancelled half-way.
            tokio::select! {
                fetched = self.fetches.join_next_with_id(), if !self.fetches.is_empty() => {
                    match fetched {
                        Some(Ok((id, (parts, result)))) => {
                            self.fetch_tasks.remove(&id);
                            self.handle_fetch(parts, result)?;
                        }
                        Some(Err(join)) => {
                            self.fetch_task_died(&join);
                            return Err(Error::Protocol(format!("fetch task failed: {join}")));
                        }
                        None => {}
                    }
                }
                looked_up = self.lookups.join_next(), if !self.lookups.is_empty() => {
                    match looked_up {
                        Some(Ok((asked, found, failed))) => {
                            self.handle_lookup(asked, found, failed)?;
                        }
                        Some(Err(join)) => {
                            self.resolving.clear();
                            return Err(Error::Protocol(format!("ListOffsets task failed: {join}")));
                        }
                        None => {}
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => return Ok(Vec::new()),
            }
        }
    }

    /// Frees the broker and partitions of a fetch task that died, so they are fetched again.
    fn fetch_task_died(&mut self, join: &tokio::task::JoinError) {
        if let Some((_, tps)) = self.fetch_tasks.remove(&join.id()) {
            for tp in tps {
                if let Some(state) = self.assigned.get_mut(&tp) {
                    state.fetching = false;
                }
            }
        }
    }

    fn take_buffered(&mut self) -> Vec<ConsumerRecord> {
        let n = self.buffer.len().min(self.config.max_poll_records.max(1));
        let records: Vec<ConsumerRecord> = self.buffer.drain(..n).collect();
        for record in &records {
            let tp = TopicPartition::new(record.topic.clone(), record.partition);
            if let Some(state) = self.assigned.get_mut(&tp) {
                state.buffered -= 1;
                if record.leader_epoch.is_some() {
                    state.last_leader_epoch = record.leader_epoch;
                }
                state.position = Some(if state.buffered == 0 {
                    state.fetch_offset
                } else {
                    record.offset + 1
                });
            }
        }
        records
    }

    /// Starts ListOffsets tasks, one per leader, for the partitions waiting for a position that
    /// are not already being looked up or backing off: each partition resolves on its own, so a
    /// leaderless partition or a slow broker does not hold up the others.
    fn start_lookups(&mut self) {
        let now = Instant::now();
        let metadata = self.client.metadata();
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        let mut missing_leader = false;
        for (tp, state) in &self.assigned {
            let Some(timestamp) = state.reset else {
                continue;
            };
            if self.resolving.contains(tp) || state.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            match metadata.leader(&tp.topic, tp.partition) {
                Some(leader) => by_leader
                    .entry(leader)
                    .or_default()
                    .push((tp.clone(), timestamp)),
                None => missing_leader = true,
            }
        }
        if missing_leader {
            self.refresh_in_background();
        }
        for (_, asked) in by_leader {
            self.resolving
                .extend(asked.iter().map(|(tp, _)| tp.clone()));
            let client = self.client.clone();
            let read_committed = self.config.read_committed;
            self.lookups.spawn(async move {
                let (found, failed) = list_offsets_once(&client, &asked, read_committed).await;
                (asked, found, failed)
            });
        }
    }

    /// Applies a ListOffsets answer. Retriable failures back off per partition; others are
    /// returned to the caller.
    fn handle_lookup(
        &mut self,
        asked: Vec<(TopicPartition, i64)>,
        found: HashMap<TopicPartition, i64>,
        failed: Vec<(TopicPartition, Error)>,
    ) -> Result<()> {
        let now = Instant::now();
        let backoff = self.client.config().retry_backoff;
        for (tp, timestamp) in &asked {
            self.resolving.remove(tp);
            let Some(state) = self.assigned.get_mut(tp) else {
                continue;
            };
            if state.reset != Some(*timestamp) {
                continue; // seeked meanwhile
            }
            match found.get(tp) {
                // No record at or after that time: continue from the end.
                Some(&offset) if offset < 0 => state.reset = Some(LATEST),
                Some(&offset) => {
                    state.reset = None;
                    state.position = Some(offset);
                    state.fetch_offset = offset;
                    state.retry_at = None;
                }
                None => state.retry_at = Some(now + backoff),
            }
        }
        if let Some((_, error)) = failed.iter().find(|(_, e)| !e.is_retriable()) {
            return Err(error.clone());
        }
        if failed.iter().any(|(_, e)| e.needs_metadata_refresh()) {
            self.refresh_in_background();
        }
        Ok(())
    }

    /// Refreshes the assigned topics' metadata in a task, at most one at a time.
    fn refresh_in_background(&mut self) {
        // At most one running, and not more often than `retry_backoff`: a partition that stays
        // leaderless must not turn every poll into a Metadata request.
        if self.last_refresh.elapsed() < self.client.config().retry_backoff
            || self
                .refreshing
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        self.last_refresh = Instant::now();
        let client = self.client.clone();
        let refreshing = Arc::clone(&self.refreshing);
        let mut topics: Vec<String> = self.assigned.keys().map(|tp| tp.topic.clone()).collect();
        topics.dedup();
        tokio::spawn(async move {
            if let Err(error) = client.refresh_metadata(&topics, false).await {
                tracing::debug!(%error, "metadata refresh failed");
                tokio::time::sleep(client.config().retry_backoff).await;
            }
            refreshing.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Sends one fetch to each leader that has none in flight, for its partitions that have a
    /// position, nothing buffered and no backoff pending.
    fn send_fetches(&mut self) {
        let metadata = self.client.metadata();
        let now = Instant::now();
        let mut by_broker: BTreeMap<i32, Vec<(TopicPartition, u64, i64)>> = BTreeMap::new();
        let mut missing_leader = false;
        let busy: HashSet<i32> = self
            .fetch_tasks
            .values()
            .map(|(broker, _)| *broker)
            .collect();
        for (tp, state) in &self.assigned {
            if state.position.is_none()
                || state.reset.is_some()
                || state.fetching
                || state.buffered > 0
                || state.retry_at.is_some_and(|at| at > now)
            {
                continue;
            }
            match metadata.leader(&tp.topic, tp.partition) {
                Some(leader) if !busy.contains(&leader) => by_broker
                    .entry(leader)
                    .or_default()
                    .push((tp.clone(), state.epoch, state.fetch_offset)),
                Some(_) => {}
                None => missing_leader = true,
            }
        }
        if missing_leader || self.client.metadata_is_stale() {
            self.refresh_in_background();
        }
        for (broker, mut parts) in by_broker {
            // Kafka guarantees a whole oversized batch only to the first partition with data,
            // and fills the response in request order: rotate so every partition leads in turn.
            let rotation = self.fetch_rotation.entry(broker).or_default();
            *rotation = rotation.wrapping_add(1);
            let len = parts.len();
            parts.rotate_left(*rotation % len);
            for (tp, _, _) in &parts {
                if let Some(state) = self.assigned.get_mut(tp) {
                    state.fetching = true;
                }
            }
            let request = self.fetch_request(&parts);
            let client = self.client.clone();
            let wait = self.config.fetch_max_wait;
            let tps = parts.iter().map(|(tp, _, _)| tp.clone()).collect();
            let task = self.fetches.spawn(async move {
                let result = async {
                    let conn = client.broker(broker).await?;
                    let version =
                        conn.version::<FetchRequest>(FETCH_VERSIONS.0, FETCH_VERSIONS.1)?;
                    let response = conn.send(&request, version, Some(wait)).await?;
                    Error::check(response.error_code, || Some("Fetch".to_owned()))?;
                    Ok(response)
                }
                .await;
                (parts, result)
            });
            self.fetch_tasks.insert(task.id(), (broker, tps));
        }
    }

    fn fetch_request(&self, parts: &[(TopicPartition, u64, i64)]) -> FetchRequest {
        // Topics in the order of their first partition, partitions in the given order.
        let mut topics: Vec<(&str, Vec<FetchPartition>)> = Vec::new();
        for (tp, _, offset) in parts {
            let index = match topics.iter().position(|(t, _)| *t == tp.topic) {
                Some(index) => index,
                None => {
                    topics.push((&tp.topic, Vec::new()));
                    topics.len() - 1
                }
            };
            topics[index].1.push(
                FetchPartition::default()
                    .with_partition(tp.partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(*offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(self.config.max_partition_fetch_bytes),
            );
        }
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(self.config.fetch_max_wait.as_millis() as i32)
            .with_min_bytes(self.config.fetch_min_bytes)
            .with_max_bytes(self.config.fetch_max_bytes)
            .with_isolation_level(i8::from(self.config.read_committed))
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
    }

    fn handle_fetch(
        &mut self,
        parts: Vec<(TopicPartition, u64, i64)>,
        result: Result<FetchResponse>,
    ) -> Result<()> {
        let backoff = Instant::now() + self.client.config().retry_backoff;
        for (tp, _, _) in &parts {
            if let Some(state) = self.assigned.get_mut(tp) {
                state.fetching = false;
            }
        }
        let response = match result {
            Ok(response) => response,
            Err(error) if error.is_retriable() => {
                tracing::debug!(%error, "fetch failed; backing off");
                for (tp, _, _) in &parts {
                    if let Some(state) = self.assigned.get_mut(tp) {
                        state.retry_at = Some(backoff);
                    }
                }
                self.refresh_in_background();
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let mut refresh = false;
        for topic in response.responses {
            let name = topic.topic.0.to_string();
            for data in topic.partitions {
                let tp = TopicPartition::new(name.clone(), data.partition_index);
                let Some(&(_, epoch, offset)) = parts.iter().find(|(p, _, _)| *p == tp) else {
                    continue;
                };
                let Some(state) = self.assigned.get_mut(&tp) else {
                    continue;
                };
                if state.epoch != epoch || state.fetch_offset != offset {
                    continue; // seeked since
                }
                match ResponseError::try_from_code(data.error_code) {
                    None => {}
                    Some(ResponseError::OffsetOutOfRange) => {
                        match self.config.auto_offset_reset {
                            OffsetReset::Earliest => state.reset = Some(EARLIEST),
                            OffsetReset::Latest => state.reset = Some(LATEST),
                            OffsetReset::None => {
                                return Err(Error::kafka(
                                    data.error_code,
                                    Some(format!("{tp} at offset {offset}")),
                                ))
                            }
                        }
                        continue;
                    }
                    Some(error) if error.is_retriable() => {
                        refresh = true;
                        state.retry_at = Some(backoff);
                        continue;
                    }
                    Some(_) => {
                        return Err(Error::kafka(data.error_code, Some(tp.to_string())));
                    }
                }
                state.high_watermark = data.high_watermark;
                state.last_stable_offset = data.last_stable_offset;
                state.log_start_offset = data.log_start_offset;
                let records = data.records.unwrap_or_default();
                let aborted = self.config.read_committed.then(|| {
                    data.aborted_transactions
                        .iter()
                        .flatten()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect()
                });
                let (decoded, next) = decode_records(&tp, records, offset, aborted)?;
                state.fetch_offset = next;
                state.buffered += decoded.len();
                if decoded.is_empty() {
                    state.position = Some(next);
                }
                self.buffer.extend(decoded);
            }
        }
        if refresh {
            self.refresh_in_background();
        }
        Ok(())
    }

    /// Offsets of `tps` at the log start (`EARLIEST`), end (`LATEST`) or a timestamp.
    pub async fn offsets(
        &self,
        tps: &[(TopicPartition, i64)],
    ) -> Result<HashMap<TopicPartition, i64>> {
        list_offsets(&self.client, tps, self.config.read_committed).await
    }
}

/// Aborted transactions of one fetched partition, as Fetch returns them for read_committed:
/// `(producer id, first offset)`.
type AbortedTransactions = Vec<(i64, i64)>;

/// Decodes the complete record batches in `records`, skipping control records, records before
/// `from` and, with `aborted` (read_committed), records of aborted transactions; returns them
/// and the next offset to fetch: past the last batch's last offset, which compaction may have
/// emptied of records. A partial batch at the end (the broker cut the response at `max_bytes`)
/// is left for the next fetch.
fn decode_records(
    tp: &TopicPartition,
    mut records: Bytes,
    from: i64,
    aborted: Option<AbortedTransactions>,
) -> Result<(Vec<ConsumerRecord>, i64)> {
    // Batch header offsets (record batch v2).
    const BATCH_LENGTH: usize = 8;
    const ATTRIBUTES: usize = 21;
    const LAST_OFFSET_DELTA: usize = 23;
    const PRODUCER_ID: usize = 43;
    const HEADER_END: usize = 61;
    const TRANSACTIONAL: i16 = 1 << 4;

    let read_committed = aborted.is_some();
    // Aborted transactions by first offset, consumed as batches pass them (Java's
    // `CompletedFetch` does the same).
    let mut pending_aborts = aborted.unwrap_or_default();
    pending_aborts.sort_by_key(|&(_, first_offset)| std::cmp::Reverse(first_offset));
    let mut aborted_producers = HashSet::new();
    let mut out = Vec::new();
    let mut next = from;
    while records.len() >= HEADER_END {
        let batch_len = (&records[BATCH_LENGTH..BATCH_LENGTH + 4]).get_i32();
        let total = 12
            + usize::try_from(batch_len)
                .map_err(|_| Error::Protocol(format!("{tp}: negative batch length {batch_len}")))?;
        if records.len() < total {
            break;
        }
        let base_offset = (&records[..8]).get_i64();
        let attributes = (&records[ATTRIBUTES..ATTRIBUTES + 2]).get_i16();
        let last_offset = base_offset + i64::from((&records[LAST_OFFSET_DELTA..]).get_i32());
        let producer_id = (&records[PRODUCER_ID..]).get_i64();
        let mut batch = records.split_to(total);
        next = next.max(last_offset + 1);
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| Error::Protocol(format!("{tp}: undecodable record batch: {e}")))?;
        if read_committed && attributes & TRANSACTIONAL != 0 {
            while pending_aborts
                .last()
                .is_some_and(|&(_, first)| first <= last_offset)
            {
                let (pid, _) = pending_aborts.pop().expect("checked above");
                aborted_producers.insert(pid);
            }
            let abort_marker = set.records.first().is_some_and(|r| {
                // A control record's key: version (i16), then type (i16): 0 is ABORT.
                r.control
                    && r.key
                        .as_ref()
                        .is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 0])
            });
            if abort_marker {
                aborted_producers.remove(&producer_id);
            } else if aborted_producers.contains(&producer_id) {
                continue;
            }
        }
        for record in set.records {
            if record.control || record.offset < from {
                continue;
            }
            out.push(ConsumerRecord {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: record.offset,
                leader_epoch: (record.partition_leader_epoch >= 0)
                    .then_some(record.partition_leader_epoch),
                timestamp_ms: record.timestamp,
                log_append_time: record.timestamp_type == TimestampType::LogAppend,
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|(key, value)| Header {
                        key: key.to_string(),
                        value,
                    })
                    .collect(),
            });
        }
    }
    if next == from && !records.is_empty() {
        // Only part of a batch: the broker cut the response short. A broker returns at least
        // one whole batch for the first partition with data (KIP-74), and fetches rotate the
        // partition order, so this partition gets its batch in a later fetch.
        tracing::debug!(%tp, offset = from, bytes = records.len(), "partial record batch");
    }
    Ok((out, next))
}

/// ListOffsets for each `(partition, timestamp)`, sent to each partition's leader, retried
/// through leader changes until every partition has an answer or `api_timeout` passes.
pub(crate) async fn list_offsets(
    client: &Client,
    tps: &[(TopicPartition, i64)],
    read_committed: bool,
) -> Result<HashMap<TopicPartition, i64>> {
    let topics: Vec<String> = tps.iter().map(|(tp, _)| tp.topic.clone()).collect();
    let mut found = HashMap::new();
    let mut pending = tps.to_vec();
    let deadline = Instant::now() + client.config().api_timeout;
    let mut backoff = client.config().retry_backoff;
    loop {
        let (answered, failed) = list_offsets_once(client, &pending, read_committed).await;
        found.extend(answered);
        pending.retain(|(tp, _)| !found.contains_key(tp));
        let Some((_, error)) = failed.into_iter().next() else {
            return Ok(found);
        };
        if !error.is_retriable() || Instant::now() + backoff >= deadline {
            return Err(error);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(client.config().retry_backoff_max);
        if error.needs_metadata_refresh() {
            let _ = client.refresh_metadata(&topics, false).await;
        }
    }
}

/// One round of ListOffsets, a request per leader: the offsets answered, and the partitions
/// that failed with why (no leader, a broker error, the request failing).
async fn list_offsets_once(
    client: &Client,
    tps: &[(TopicPartition, i64)],
    read_committed: bool,
) -> (HashMap<TopicPartition, i64>, Vec<(TopicPartition, Error)>) {
    let metadata = client.metadata();
    let mut found = HashMap::new();
    let mut failed = Vec::new();
    let mut by_leader: BTreeMap<i32, Vec<&(TopicPartition, i64)>> = BTreeMap::new();
    for entry in tps {
        match metadata.leader(&entry.0.topic, entry.0.partition) {
            Some(leader) => by_leader.entry(leader).or_default().push(entry),
            None => failed.push((
                entry.0.clone(),
                Error::kafka(5, Some(format!("no leader for {}", entry.0))),
            )),
        }
    }
    for (leader, entries) in by_leader {
        let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for (tp, ts) in &entries {
            topics.entry(&tp.topic).or_default().push(
                ListOffsetsPartition::default()
                    .with_partition_index(tp.partition)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(*ts),
            );
        }
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(i8::from(read_committed))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_owned())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let response = match client
            .send_to(
                leader,
                &request,
                LIST_OFFSETS_VERSIONS.0,
                LIST_OFFSETS_VERSIONS.1,
            )
            .await
        {
            Ok(response) => response,
            Err(error) => {
                failed.extend(entries.iter().map(|(tp, _)| (tp.clone(), error.clone())));
                continue;
            }
        };
        for topic in response.topics {
            for p in topic.partitions {
                let tp = TopicPartition::new(topic.name.0.to_string(), p.partition_index);
                match Error::check(p.error_code, || Some(format!("ListOffsets {tp}"))) {
                    Ok(()) => {
                        found.insert(tp, p.offset);
                    }
                    Err(error) => failed.push((tp, error)),
                }
            }
        }
    }
    for (tp, _) in tps {
        if !found.contains_key(tp) && !failed.iter().any(|(f, _)| f == tp) {
            failed.push((
                tp.clone(),
                Error::Protocol(format!("ListOffsets without {tp}")),
            ));
        }
    }
    (found, failed)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;

    fn record(offset: i64, producer_id: i64, transactional: bool) -> Record {
        Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32,
            timestamp: 1_000 + offset,
            key: None,
            value: Some(Bytes::from(format!("v{offset}"))),
            headers: IndexMap::new(),
        }
    }

    /// A transaction marker: key = version 0, type (0 abort, 1 commit).
    fn marker(offset: i64, producer_id: i64, commit: bool) -> Record {
        Record {
            control: true,
            key: Some(Bytes::from(vec![0, 0, 0, u8::from(commit)])),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            ..record(offset, producer_id, true)
        }
    }

    fn encode(buf: &mut BytesMut, records: &[Record]) {
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        };
        RecordBatchEncoder::encode(buf, records, &options).unwrap();
    }

    fn offsets(records: &[ConsumerRecord]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    #[test]
    fn a_compacted_batch_moves_the_fetch_offset_past_its_last_offset() {
        // Offsets 0..=2 written; compaction kept 0 and 1 and the batch's last offset, 2.
        let mut buf = BytesMut::new();
        encode(&mut buf, &[record(0, -1, false), record(1, -1, false)]);
        buf[23..27].copy_from_slice(&2i32.to_be_bytes());
        let crc = crc32c::crc32c(&buf[21..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
        let (records, next) = decode_records(&tp(), buf.clone().freeze(), 0, None).unwrap();
        assert_eq!(offsets(&records), [0, 1]);
        assert_eq!(next, 3);
        // Fetched again from 2 (the records were returned): nothing, and still past it.
        let (records, next) = decode_records(&tp(), buf.freeze(), 2, None).unwrap();
        assert!(records.is_empty());
        assert_eq!(next, 3);
    }

    #[test]
    fn read_committed_drops_aborted_transactions_and_markers() {
        let mut buf = BytesMut::new();
        encode(&mut buf, &[record(0, 5, true), record(1, 5, true)]);
        encode(&mut buf, &[marker(2, 5, false)]);
        encode(&mut buf, &[record(3, 6, true), record(4, 6, true)]);
        encode(&mut buf, &[marker(5, 6, true)]);
        encode(&mut buf, &[record(6, -1, false)]);
        let all = buf.freeze();

        let (records, next) = decode_records(&tp(), all.clone(), 0, Some(vec![(5, 0)])).unwrap();
        assert_eq!(offsets(&records), [3, 4, 6]);
        assert_eq!(next, 7);
        // read_uncommitted sees every data record, never a marker.
        let (records, _) = decode_records(&tp(), all.clone(), 0, None).unwrap();
        assert_eq!(offsets(&records), [0, 1, 3, 4, 6]);
        // A partial batch at the end waits for the next fetch.
        let cut = all.slice(..all.len() - 3);
        let (records, next) = decode_records(&tp(), cut, 3, Some(vec![(5, 0)])).unwrap();
        assert_eq!(offsets(&records), [3, 4]);
        assert_eq!(next, 6);
    }
}
