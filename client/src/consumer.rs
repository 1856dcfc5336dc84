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
}

/// One fetch's answer, tagged with the partitions and epochs it was sent for.
type FetchResult = (i32, Vec<(TopicPartition, u64, i64)>, Result<FetchResponse>);

/// A consumer of explicitly assigned partitions. Not `Clone`: like the Java consumer, one
/// owner polls it.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    assigned: BTreeMap<TopicPartition, Assigned>,
    buffer: VecDeque<ConsumerRecord>,
    fetches: JoinSet<FetchResult>,
    /// Brokers with a fetch in flight: one at a time each.
    fetching_brokers: HashSet<i32>,
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            assigned: BTreeMap::new(),
            buffer: VecDeque::new(),
            fetches: JoinSet::new(),
            fetching_brokers: HashSet::new(),
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
        self.buffer
            .retain(|r| !(r.topic == tp.topic && r.partition == tp.partition));
        Ok(())
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
            // Looking up start positions retries through leader changes; it is bounded by the
            // poll's own timeout (and picked up again by the next poll).
            match tokio::time::timeout_at(deadline.into(), self.resolve_positions()).await {
                Ok(resolved) => resolved?,
                Err(_) => return Ok(Vec::new()),
            }
            if !self.buffer.is_empty() {
                let records = self.take_buffered();
                self.send_fetches();
                return Ok(records);
            }
            self.send_fetches();
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            if self.fetches.is_empty() {
                // Nothing fetchable (leaders unknown, backing off): wait a little.
                let pause = self.client.config().retry_backoff.min(deadline - now);
                tokio::time::sleep(pause).await;
                continue;
            }
            match tokio::time::timeout_at(deadline.into(), self.fetches.join_next()).await {
                Err(_) | Ok(None) => return Ok(Vec::new()),
                Ok(Some(Ok((broker, parts, result)))) => {
                    self.handle_fetch(broker, parts, result).await?;
                }
                Ok(Some(Err(join))) => {
                    return Err(Error::Protocol(format!("fetch task failed: {join}")))
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
                state.position = Some(if state.buffered == 0 {
                    state.fetch_offset
                } else {
                    record.offset + 1
                });
            }
        }
        records
    }

    /// ListOffsets for every partition waiting for a position.
    async fn resolve_positions(&mut self) -> Result<()> {
        let pending: Vec<(TopicPartition, i64)> = self
            .assigned
            .iter()
            .filter_map(|(tp, s)| s.reset.map(|ts| (tp.clone(), ts)))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let offsets = list_offsets(&self.client, &pending, self.config.read_committed).await?;
        for (tp, timestamp) in pending {
            let Some(&offset) = offsets.get(&tp) else {
                continue;
            };
            let offset = if offset < 0 {
                // No record at or after that time: continue from the end.
                let end = list_offsets(
                    &self.client,
                    &[(tp.clone(), LATEST)],
                    self.config.read_committed,
                )
                .await?;
                end.get(&tp).copied().unwrap_or(0)
            } else {
                offset
            };
            let state = self.assigned_mut(&tp)?;
            if state.reset == Some(timestamp) {
                state.reset = None;
                state.position = Some(offset);
                state.fetch_offset = offset;
            }
        }
        Ok(())
    }

    /// Sends one fetch to each leader that has none in flight, for its partitions that have a
    /// position, nothing buffered and no backoff pending.
    fn send_fetches(&mut self) {
        let metadata = self.client.metadata();
        let now = Instant::now();
        let mut by_broker: BTreeMap<i32, Vec<(TopicPartition, u64, i64)>> = BTreeMap::new();
        let mut missing_leader = false;
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
                Some(leader) if !self.fetching_brokers.contains(&leader) => by_broker
                    .entry(leader)
                    .or_default()
                    .push((tp.clone(), state.epoch, state.fetch_offset)),
                Some(_) => {}
                None => missing_leader = true,
            }
        }
        if missing_leader || self.client.metadata_is_stale() {
            let client = self.client.clone();
            let seen = client.refresh_generation();
            let topics: Vec<String> = self.assigned.keys().map(|tp| tp.topic.clone()).collect();
            tokio::spawn(async move { client.refresh_metadata_once(&topics, seen).await });
        }
        for (broker, parts) in by_broker {
            for (tp, _, _) in &parts {
                if let Some(state) = self.assigned.get_mut(tp) {
                    state.fetching = true;
                }
            }
            self.fetching_brokers.insert(broker);
            let request = self.fetch_request(&parts);
            let client = self.client.clone();
            let wait = self.config.fetch_max_wait;
            self.fetches.spawn(async move {
                let result = async {
                    let conn = client.broker(broker).await?;
                    let version =
                        conn.version::<FetchRequest>(FETCH_VERSIONS.0, FETCH_VERSIONS.1)?;
                    let response = conn.send(&request, version, Some(wait)).await?;
                    Error::check(response.error_code, || Some("Fetch".to_owned()))?;
                    Ok(response)
                }
                .await;
                (broker, parts, result)
            });
        }
    }

    fn fetch_request(&self, parts: &[(TopicPartition, u64, i64)]) -> FetchRequest {
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for (tp, _, offset) in parts {
            topics.entry(&tp.topic).or_default().push(
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

    async fn handle_fetch(
        &mut self,
        broker: i32,
        parts: Vec<(TopicPartition, u64, i64)>,
        result: Result<FetchResponse>,
    ) -> Result<()> {
        let backoff = Instant::now() + self.client.config().retry_backoff;
        self.fetching_brokers.remove(&broker);
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
                let seen = self.client.refresh_generation();
                let topics: Vec<String> = parts.iter().map(|(tp, _, _)| tp.topic.clone()).collect();
                let _ = self.client.refresh_metadata_once(&topics, seen).await;
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
                let (decoded, next) = decode_records(&tp, records, offset)?;
                state.fetch_offset = next;
                state.buffered += decoded.len();
                if decoded.is_empty() {
                    state.position = Some(next);
                }
                self.buffer.extend(decoded);
            }
        }
        if refresh {
            let seen = self.client.refresh_generation();
            let topics: Vec<String> = parts.iter().map(|(tp, _, _)| tp.topic.clone()).collect();
            let _ = self.client.refresh_metadata_once(&topics, seen).await;
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

/// Decodes the complete record batches in `records`, skipping control records and records
/// before `from`; returns them and the next offset to fetch. A partial batch at the end (the
/// broker cut the response at `max_bytes`) is left for the next fetch.
fn decode_records(
    tp: &TopicPartition,
    mut records: Bytes,
    from: i64,
) -> Result<(Vec<ConsumerRecord>, i64)> {
    let mut out = Vec::new();
    let mut next = from;
    while records.len() >= 12 {
        let batch_len = (&records[8..12]).get_i32();
        let total = 12
            + usize::try_from(batch_len)
                .map_err(|_| Error::Protocol(format!("{tp}: negative batch length {batch_len}")))?;
        if records.len() < total {
            break;
        }
        let mut batch = records.split_to(total);
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| Error::Protocol(format!("{tp}: undecodable record batch: {e}")))?;
        for record in set.records {
            next = next.max(record.offset + 1);
            if record.control || record.offset < from {
                continue;
            }
            out.push(ConsumerRecord {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: record.offset,
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
        // one whole batch for the first partition with data (KIP-74), so this partition gets
        // its batch in a later fetch.
        tracing::debug!(%tp, offset = from, bytes = records.len(), "partial record batch");
    }
    Ok((out, next))
}

/// ListOffsets for each `(partition, timestamp)`, sent to each partition's leader, retried
/// through leader changes.
pub(crate) async fn list_offsets(
    client: &Client,
    tps: &[(TopicPartition, i64)],
    read_committed: bool,
) -> Result<HashMap<TopicPartition, i64>> {
    let topics: Vec<String> = tps.iter().map(|(tp, _)| tp.topic.clone()).collect();
    let client_ref = client;
    let found = Arc::new(std::sync::Mutex::new(HashMap::new()));
    client
        .retry(&topics, || {
            let found = Arc::clone(&found);
            async move {
                let metadata = client_ref.metadata();
                let mut by_leader: BTreeMap<i32, Vec<&(TopicPartition, i64)>> = BTreeMap::new();
                for entry in tps {
                    if found
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains_key(&entry.0)
                    {
                        continue;
                    }
                    let leader = metadata
                        .leader(&entry.0.topic, entry.0.partition)
                        .ok_or_else(|| {
                            Error::kafka(5, Some(format!("no leader for {}", entry.0)))
                        })?;
                    by_leader.entry(leader).or_default().push(entry);
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
                    let response = client_ref
                        .send_to(
                            leader,
                            &request,
                            LIST_OFFSETS_VERSIONS.0,
                            LIST_OFFSETS_VERSIONS.1,
                        )
                        .await?;
                    for topic in response.topics {
                        for p in topic.partitions {
                            let tp =
                                TopicPartition::new(topic.name.0.to_string(), p.partition_index);
                            Error::check(p.error_code, || Some(format!("ListOffsets {tp}")))?;
                            found
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(tp, p.offset);
                        }
                    }
                }
                Ok(())
            }
        })
        .await?;
    let found = found.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(found)
}
