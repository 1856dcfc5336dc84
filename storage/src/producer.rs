//! Producer state of one partition for idempotence and transactions (Kafka's
//! `ProducerStateManager`): each producer's epoch and last batches (to fence zombies, reject
//! sequence gaps and answer retries with the original offsets), the ongoing transactions (which
//! bound the last stable offset), and the `<offset:020>.snapshot` files that spare recovery a
//! replay of the whole log.
//!
//! The state is a pure function of the batches applied in offset order: [`ProducerStateManager::apply`]
//! never fails and never validates, so leader appends, follower appends and recovery replay
//! reach the same state. Validation happens once, on the leader, in
//! [`ProducerStateManager::check_leader_append`], before offsets are assigned.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use crate::batch::{BatchHeader, ControlType, Marker};
use crate::checkpoint;
use crate::error::{Result, StorageError};

/// Batches remembered per producer for duplicate detection: Kafka clients keep at most 5
/// requests in flight per connection with idempotence, so a retry is always among the last 5.
pub const PRODUCER_BATCHES_KEPT: usize = 5;
/// Epoch of a producer whose epoch is unknown.
const NO_PRODUCER_EPOCH: i16 = -1;
/// Sequence meaning "no batch known".
const NO_SEQUENCE: i32 = -1;
/// File name suffix of producer snapshots (Kafka's).
const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Digits of the zero-padded offset in snapshot file names.
const SNAPSHOT_OFFSET_DIGITS: usize = 20;
/// Version of the snapshot body layout written by [`encode_snapshot`] (2 added the coordinator
/// epoch; 1 is still read).
const SNAPSHOT_VERSION: i16 = 2;
/// Encoded size of one [`BatchMetadata`] in a snapshot.
const SNAPSHOT_BATCH_LEN: usize = 4 + 4 + 8 + 8 + 8;

/// Where one batch of a producer landed, kept to answer retries and check sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record (wrapped past `i32::MAX`).
    pub last_seq: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Max timestamp of the batch.
    pub timestamp_ms: i64,
}

impl BatchMetadata {
    fn of(header: &BatchHeader) -> Self {
        BatchMetadata {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
            timestamp_ms: header.max_timestamp,
        }
    }
}

/// Outcome of [`ProducerStateManager::check_leader_append`] for a batch that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendCheck {
    /// Append the batch.
    New,
    /// A retry of a batch already in the log: do not append, answer with its offsets.
    Duplicate(BatchMetadata),
}

/// A transaction ended by a marker, returned by [`ProducerStateManager::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    /// The producer.
    pub producer_id: i64,
    /// Offset of the transaction's first batch in this partition.
    pub first_offset: i64,
    /// Offset of the marker.
    pub last_offset: i64,
    /// Whether the marker is an abort (the log then adds it to the transaction index).
    pub aborted: bool,
}

/// What the log knows about one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    /// Latest epoch seen.
    pub epoch: i16,
    /// Up to [`PRODUCER_BATCHES_KEPT`] latest batches of `epoch`, oldest first.
    pub batches: VecDeque<BatchMetadata>,
    /// First offset of the producer's ongoing transaction, if one is open.
    pub current_txn_first_offset: Option<i64>,
    /// Timestamp of the producer's latest batch or marker (drives expiration).
    pub last_timestamp_ms: i64,
    /// Epoch of the transaction coordinator that wrote the producer's latest marker (-1: none):
    /// a marker from an older coordinator is refused.
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    fn new(epoch: i16) -> Self {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(PRODUCER_BATCHES_KEPT),
            current_txn_first_offset: None,
            last_timestamp_ms: -1,
            coordinator_epoch: -1,
        }
    }

    /// Sequence of the latest batch, or -1 if no batch of the current epoch is known.
    pub fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    fn find_duplicate(&self, header: &BatchHeader) -> Option<BatchMetadata> {
        if header.producer_epoch != self.epoch {
            return None;
        }
        let last_seq = header.last_sequence();
        self.batches
            .iter()
            .find(|b| b.first_seq == header.base_sequence && b.last_seq == last_seq)
            .copied()
    }

    /// Any epoch change (Kafka uses `!=`, not `>`) starts a new sequence space.
    fn update_epoch(&mut self, epoch: i16) {
        if self.epoch != epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }

    fn push_batch(&mut self, batch: BatchMetadata) {
        if self.batches.len() == PRODUCER_BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
    }
}

/// Producer and transaction state of one partition, with its snapshots in the partition directory.
#[derive(Debug)]
pub struct ProducerStateManager {
    dir: PathBuf,
    producers: HashMap<i64, ProducerEntry>,
    /// Ongoing transactions: first offset → producer id; the first key bounds the LSO.
    ongoing_txns: BTreeMap<i64, i64>,
    /// Completed transactions whose marker the high watermark has not passed yet: first offset
    /// → marker offset. They still bound the LSO, so a read_committed consumer never sees part
    /// of a transaction whose marker could still be lost with a leader change (Kafka's
    /// `unreplicatedTxns`).
    unreplicated_txns: BTreeMap<i64, i64>,
    /// Offset following the last applied batch.
    map_end_offset: i64,
    /// Transactional writes being verified with their coordinator, by producer id (Kafka's
    /// `VerificationStateEntry`): in memory only, cleared by the producer's next transactional
    /// batch or marker, so that a verification answered before a marker cannot let its batch
    /// open a transaction after it.
    verifications: HashMap<i64, Verification>,
    /// The last guard handed out.
    last_guard: u64,
}

/// One producer's verification in progress.
#[derive(Debug, Clone, Copy)]
struct Verification {
    guard: u64,
    epoch: i16,
    /// When it started (wall clock), for expiry with the producers.
    started_ms: i64,
    /// Transaction version 2: the previous transaction's marker carries the epoch of the next
    /// one's verification, and leaves it in place.
    epoch_bump: bool,
}

/// How a leader append of a client batch treats transactional batches that would open a
/// transaction (KIP-890's verification guard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnVerification {
    /// No check (tests and tools that write transactional batches directly).
    NotChecked,
    /// Such a batch must carry the guard its verification got, still current.
    Guard(Option<u64>),
}

impl ProducerStateManager {
    /// Empty state for the partition in `dir` (snapshots are read only by
    /// [`Self::load_latest_snapshot`]).
    pub fn new(dir: &Path) -> Self {
        ProducerStateManager {
            dir: dir.to_path_buf(),
            producers: HashMap::new(),
            ongoing_txns: BTreeMap::new(),
            unreplicated_txns: BTreeMap::new(),
            map_end_offset: 0,
            verifications: HashMap::new(),
            last_guard: 0,
        }
    }

    /// Leader-side check of a validated batch before offsets are assigned, following Kafka 3.x
    /// `ProducerAppendInfo`: duplicate, then epoch fencing, then sequence, then transaction state.
    /// Batches without a producer id are always [`AppendCheck::New`].
    pub fn check_leader_append(
        &self,
        header: &BatchHeader,
        verification: TxnVerification,
    ) -> Result<AppendCheck> {
        if !header.has_producer_id() {
            return Ok(AppendCheck::New);
        }
        let entry = self.producers.get(&header.producer_id);
        if header.is_control() {
            // Markers carry no sequence (-1): only a newer epoch may have fenced them.
            check_epoch(header, entry)?;
            return Ok(AppendCheck::New);
        }
        if let Some(duplicate) = entry.and_then(|e| e.find_duplicate(header)) {
            return Ok(AppendCheck::Duplicate(duplicate));
        }
        check_epoch(header, entry)?;
        check_sequence(header, entry)?;
        check_txn_state(header, entry)?;
        if let TxnVerification::Guard(guard) = verification {
            self.check_verified(header, entry, guard)?;
        }
        Ok(AppendCheck::New)
    }

    /// A transactional batch that would open a transaction here needs the guard of a
    /// verification still current (Kafka's `UnifiedLog` check against the ABA race: verified,
    /// then a marker ended the transaction, then the batch arrives).
    fn check_verified(
        &self,
        header: &BatchHeader,
        entry: Option<&ProducerEntry>,
        guard: Option<u64>,
    ) -> Result<()> {
        if !header.is_transactional() || ongoing_at(entry, header.producer_epoch) {
            return Ok(());
        }
        let current = self.verifications.get(&header.producer_id).map(|v| v.guard);
        if guard.is_some() && guard == current {
            return Ok(());
        }
        Err(StorageError::InvalidTxnState {
            producer_id: header.producer_id,
            reason: "the transactional batch was not verified with its coordinator, or its \
                     transaction ended since",
        })
    }

    /// Starts (or joins) the verification of a transactional write of `producer_id` at
    /// `epoch`; the guard its append must carry, or `None` when the producer has a transaction
    /// open here at that epoch already (nothing to verify). `now_ms` dates it for
    /// [`Self::remove_expired`].
    pub fn start_verification(
        &mut self,
        producer_id: i64,
        epoch: i16,
        epoch_bump: bool,
        now_ms: i64,
    ) -> Option<u64> {
        if ongoing_at(self.producers.get(&producer_id), epoch) {
            return None;
        }
        // Requests in flight together share one guard (Kafka reuses the entry), so a second
        // one does not invalidate the first.
        if let Some(existing) = self.verifications.get_mut(&producer_id) {
            existing.epoch = existing.epoch.max(epoch);
            existing.epoch_bump |= epoch_bump;
            return Some(existing.guard);
        }
        self.last_guard += 1;
        self.verifications.insert(
            producer_id,
            Verification {
                guard: self.last_guard,
                epoch,
                started_ms: now_ms,
                epoch_bump,
            },
        );
        Some(self.last_guard)
    }

    /// Check of a batch a coordinator on this broker appends as leader (a transaction marker,
    /// or a group coordinator's transactional offset commits): only a newer epoch of the
    /// producer may refuse it. Its records carry no sequence (Kafka checks sequences and
    /// duplicates for client batches only).
    ///
    /// A marker from a coordinator older than the one that wrote the producer's last marker is
    /// refused (Kafka's TRANSACTION_COORDINATOR_FENCED): a deposed coordinator's late marker
    /// could otherwise end the producer's next transaction.
    pub fn check_coordinator_append(
        &self,
        header: &BatchHeader,
        marker: Option<Marker>,
        verification: TxnVerification,
    ) -> Result<()> {
        if !header.has_producer_id() {
            return Ok(());
        }
        let entry = self.producers.get(&header.producer_id);
        check_epoch(header, entry)?;
        if let (TxnVerification::Guard(guard), false) = (verification, header.is_control()) {
            self.check_verified(header, entry, guard)?;
        }
        if let (Some(marker), Some(entry)) = (marker, entry) {
            if marker.coordinator_epoch < entry.coordinator_epoch {
                return Err(StorageError::TransactionCoordinatorFenced {
                    producer_id: header.producer_id,
                    coordinator_epoch: marker.coordinator_epoch,
                    current: entry.coordinator_epoch,
                });
            }
        }
        Ok(())
    }

    /// Records a batch written at its final offsets (leader after append, follower append and
    /// recovery replay). `control` is the marker type of a control batch (ignored otherwise).
    /// Returns the transaction a marker ended; a marker without an ongoing transaction (an empty
    /// or already-ended transaction) ends nothing and returns `None`.
    pub fn apply(&mut self, header: &BatchHeader, control: Option<Marker>) -> Option<CompletedTxn> {
        self.map_end_offset = header.next_offset();
        if !header.has_producer_id() {
            return None;
        }
        let producer_id = header.producer_id;
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch));
        entry.update_epoch(header.producer_epoch);
        entry.last_timestamp_ms = header.max_timestamp;
        if header.is_transactional() || header.is_control() {
            // The verification is used up, or overtaken by a marker; except a version 2
            // marker at the epoch being verified (the previous transaction's, which lands
            // while the next one's partition is still being added).
            let keep = header.is_control()
                && self
                    .verifications
                    .get(&producer_id)
                    .is_some_and(|v| v.epoch_bump && v.epoch == header.producer_epoch);
            if !keep {
                self.verifications.remove(&producer_id);
            }
        }
        if header.is_control() {
            if let Some(marker) = control {
                entry.coordinator_epoch = entry.coordinator_epoch.max(marker.coordinator_epoch);
            }
            let first_offset = entry.current_txn_first_offset.take()?;
            self.ongoing_txns.remove(&first_offset);
            self.unreplicated_txns
                .insert(first_offset, header.base_offset);
            return Some(CompletedTxn {
                producer_id,
                first_offset,
                last_offset: header.base_offset,
                aborted: marker_is_abort(header, control),
            });
        }
        entry.push_batch(BatchMetadata::of(header));
        if header.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(header.base_offset);
            self.ongoing_txns.insert(header.base_offset, producer_id);
        }
        None
    }

    /// Smallest first offset among ongoing transactions and completed ones whose marker is not
    /// yet below the high watermark: the LSO cannot pass it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let ongoing = self.ongoing_txns.keys().next().copied();
        let unreplicated = self.unreplicated_txns.keys().next().copied();
        match (ongoing, unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The high watermark moved to `high_watermark`: completed transactions whose marker is
    /// below it no longer hold the LSO back.
    pub fn on_high_watermark_updated(&mut self, high_watermark: i64) {
        self.unreplicated_txns
            .retain(|_, marker_offset| *marker_offset >= high_watermark);
    }

    /// Last stable offset to record with `completed` in the transaction index (Kafka's
    /// `lastStableOffset(completedTxn)`): the first offset of the earliest transaction still
    /// ongoing, else the offset after the marker. Call it right after the `apply` that returned
    /// `completed`.
    pub fn last_stable_offset(&self, completed: &CompletedTxn) -> i64 {
        self.ongoing_txns
            .keys()
            .next()
            .copied()
            .unwrap_or(completed.last_offset + 1)
    }

    /// Offset following the last applied batch.
    pub fn map_end_offset(&self) -> i64 {
        self.map_end_offset
    }

    /// What is known about `producer_id`.
    pub fn producer(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer with state, by id.
    pub fn producers(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, entry)| (*id, entry))
    }

    /// Number of producers with state.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Forgets every producer and transaction; the next applied batch is at `map_end_offset`.
    /// Snapshot files are left alone.
    pub fn clear(&mut self, map_end_offset: i64) {
        self.producers.clear();
        self.verifications.clear();
        self.ongoing_txns.clear();
        self.unreplicated_txns.clear();
        self.map_end_offset = map_end_offset;
    }

    /// The log was emptied and restarts at `offset` (Kafka's `truncateFullyAndStartAt`): clears
    /// the state and deletes every snapshot, which all describe the discarded log.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<()> {
        self.clear(offset);
        let offsets = self.snapshot_offsets()?;
        self.remove_snapshots(&offsets)
    }

    /// Drops producers with no ongoing transaction whose latest batch is `expiration_ms` or more
    /// older than `now_ms` (`producer.id.expiration.ms`), and verifications as old (Kafka
    /// expires both: a verification whose write never came — a failed check, a producer gone
    /// or moved to a new id — is otherwise kept for as long as this broker leads).
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms
        });
        self.verifications
            .retain(|_, v| now_ms.saturating_sub(v.started_ms) < expiration_ms);
    }

    /// Writes the state (every batch below [`Self::map_end_offset`]) to
    /// `<map_end_offset:020>.snapshot`, replacing a snapshot at the same offset.
    pub fn take_snapshot(&mut self) -> Result<()> {
        let body = encode_snapshot(self.map_end_offset, &self.producers);
        checkpoint::write_framed(&self.snapshot_path(self.map_end_offset), &body)
    }

    /// Clears the state, deletes snapshots above `max_offset` (the log was truncated below them)
    /// and loads the newest remaining one; corrupt snapshots are deleted and the next older one
    /// is tried. Returns the loaded snapshot's offset, where replay must start (at the log start
    /// if that is higher: the newest snapshot is kept by retention even when older than the log
    /// start), or `None` to replay from the log start; then `map_end_offset` is 0.
    pub fn load_latest_snapshot(&mut self, max_offset: i64) -> Result<Option<i64>> {
        self.clear(0);
        let mut offsets = self.snapshot_offsets()?;
        let kept = offsets.partition_point(|&o| o <= max_offset);
        self.remove_snapshots(&offsets[kept..])?;
        offsets.truncate(kept);
        while let Some(offset) = offsets.pop() {
            match self.read_snapshot(offset) {
                Ok(Some(producers)) => {
                    self.install(offset, producers);
                    return Ok(Some(offset));
                }
                // Removed between listing and reading: try the next older one.
                Ok(None) => {}
                Err(e @ StorageError::CorruptCheckpoint { .. }) => {
                    tracing::warn!(error = %e, offset, "deleting corrupt producer snapshot");
                    self.remove_snapshots(&[offset])?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Retention: deletes snapshots below `offset`, except the newest one, which keeps producer
    /// state (and so duplicate detection) alive after the batches that built it are deleted.
    pub fn delete_snapshots_before(&mut self, offset: i64) -> Result<()> {
        let offsets = self.snapshot_offsets()?;
        let Some((_newest, older)) = offsets.split_last() else {
            return Ok(());
        };
        let doomed = older.partition_point(|&o| o < offset);
        self.remove_snapshots(&older[..doomed])
    }

    /// Offsets of the snapshot files in the directory, ascending.
    pub fn snapshot_offsets(&self) -> Result<Vec<i64>> {
        let read_dir = match fs::read_dir(&self.dir) {
            Ok(read_dir) => read_dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::io(&self.dir, e)),
        };
        let mut offsets = Vec::new();
        for dir_entry in read_dir {
            let dir_entry = dir_entry.map_err(|e| StorageError::io(&self.dir, e))?;
            if let Some(offset) = dir_entry.file_name().to_str().and_then(parse_snapshot_name) {
                offsets.push(offset);
            }
        }
        offsets.sort_unstable();
        Ok(offsets)
    }

    fn snapshot_path(&self, offset: i64) -> PathBuf {
        self.dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
    }

    fn read_snapshot(&self, offset: i64) -> Result<Option<HashMap<i64, ProducerEntry>>> {
        let path = self.snapshot_path(offset);
        let Some(body) = checkpoint::read_framed(&path)? else {
            return Ok(None);
        };
        decode_snapshot(&body, offset)
            .map(Some)
            .map_err(|reason| StorageError::CorruptCheckpoint { path, reason })
    }

    fn install(&mut self, offset: i64, producers: HashMap<i64, ProducerEntry>) {
        self.unreplicated_txns.clear();
        self.ongoing_txns = producers
            .iter()
            .filter_map(|(&pid, e)| e.current_txn_first_offset.map(|first| (first, pid)))
            .collect();
        self.producers = producers;
        self.map_end_offset = offset;
    }

    /// Deletes the snapshots at `offsets` and makes the deletions durable, so that a stale
    /// snapshot cannot reappear after a crash and be loaded over a log that diverged from it.
    fn remove_snapshots(&self, offsets: &[i64]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        for &offset in offsets {
            let path = self.snapshot_path(offset);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(path, e)),
            }
        }
        checkpoint::sync_dir(&self.dir)
    }
}

fn check_epoch(header: &BatchHeader, entry: Option<&ProducerEntry>) -> Result<()> {
    match entry {
        Some(e) if header.producer_epoch < e.epoch => Err(StorageError::InvalidProducerEpoch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            current_epoch: e.epoch,
        }),
        _ => Ok(()),
    }
}

fn check_sequence(header: &BatchHeader, entry: Option<&ProducerEntry>) -> Result<()> {
    // An unknown producer (new, or expired or removed with the log's start) may continue with
    // any sequence: Kafka's KIP-360 behaviour instead of UNKNOWN_PRODUCER_ID.
    let Some(entry) = entry.filter(|e| e.epoch != NO_PRODUCER_EPOCH) else {
        return Ok(());
    };
    let first_sequence = header.base_sequence;
    let last_sequence = entry.last_sequence();
    let in_order = if header.producer_epoch != entry.epoch {
        // A bumped epoch restarts the sequence space.
        first_sequence == 0
    } else {
        in_sequence(last_sequence, first_sequence)
    };
    if in_order {
        return Ok(());
    }
    Err(StorageError::OutOfOrderSequence {
        producer_id: header.producer_id,
        first_sequence,
        last_sequence,
    })
}

/// Whether `entry` has a transaction open at `epoch`.
fn ongoing_at(entry: Option<&ProducerEntry>, epoch: i16) -> bool {
    entry.is_some_and(|e| e.current_txn_first_offset.is_some() && e.epoch == epoch)
}

fn check_txn_state(header: &BatchHeader, entry: Option<&ProducerEntry>) -> Result<()> {
    let in_txn = entry.is_some_and(|e| e.current_txn_first_offset.is_some());
    if in_txn && !header.is_transactional() {
        return Err(StorageError::InvalidTxnState {
            producer_id: header.producer_id,
            reason: "non-transactional batch while the producer has an ongoing transaction",
        });
    }
    Ok(())
}

/// Whether `next` follows `last`, sequences wrapping to 0 after `i32::MAX`.
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

fn marker_is_abort(header: &BatchHeader, control: Option<Marker>) -> bool {
    match control {
        Some(marker) => marker.kind == ControlType::Abort,
        None => {
            // The caller could not read the marker type. Hiding the transaction from
            // read_committed consumers is the mistake that exposes no uncommitted data.
            tracing::warn!(
                producer_id = header.producer_id,
                offset = header.base_offset,
                "control batch without a marker type, treating it as an abort"
            );
            true
        }
    }
}

fn parse_snapshot_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != SNAPSHOT_OFFSET_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Snapshot body, big endian: `version:i16, map_end_offset:i64, count:i32`, then per producer
/// (ascending id) `producer_id:i64, epoch:i16, last_timestamp_ms:i64, txn_first_offset:i64
/// (-1: none), coordinator_epoch:i32 (from version 2), batch_count:u8` and `batch_count` ×
/// `first_seq:i32, last_seq:i32, first_offset:i64, last_offset:i64, timestamp_ms:i64`.
fn encode_snapshot(map_end_offset: i64, producers: &HashMap<i64, ProducerEntry>) -> Vec<u8> {
    let mut sorted: Vec<(&i64, &ProducerEntry)> = producers.iter().collect();
    sorted.sort_unstable_by_key(|(id, _)| **id);
    let mut out = Vec::with_capacity(14 + producers.len() * (27 + 2 * SNAPSHOT_BATCH_LEN));
    out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    out.extend_from_slice(&map_end_offset.to_be_bytes());
    // Producers per partition are bounded by expiration, far below i32::MAX.
    out.extend_from_slice(&(sorted.len() as i32).to_be_bytes());
    for (id, entry) in sorted {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&entry.epoch.to_be_bytes());
        out.extend_from_slice(&entry.last_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&entry.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
        out.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
        // At most PRODUCER_BATCHES_KEPT (5) batches.
        out.push(entry.batches.len() as u8);
        for b in &entry.batches {
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.first_offset.to_be_bytes());
            out.extend_from_slice(&b.last_offset.to_be_bytes());
            out.extend_from_slice(&b.timestamp_ms.to_be_bytes());
        }
    }
    out
}

/// Decodes a body written by [`encode_snapshot`] for the snapshot named `offset`, checking that
/// it describes only offsets below it.
fn decode_snapshot(body: &[u8], offset: i64) -> Result<HashMap<i64, ProducerEntry>, &'static str> {
    let mut r = Reader(body);
    const TRUNCATED: &str = "truncated snapshot body";
    let version = r.i16().ok_or(TRUNCATED)?;
    if !(1..=SNAPSHOT_VERSION).contains(&version) {
        return Err("unknown snapshot version");
    }
    if r.i64().ok_or(TRUNCATED)? != offset {
        return Err("snapshot offset does not match its file name");
    }
    let count = r.i32().ok_or(TRUNCATED)?;
    // Each producer takes at least 27 bytes: bounds the allocation by the body size.
    if count < 0 || count as usize > body.len() / 27 {
        return Err("bad producer count");
    }
    let mut producers = HashMap::with_capacity(count as usize);
    for _ in 0..count {
        let (id, entry) = decode_producer(&mut r, version)?.ok_or(TRUNCATED)?;
        if !entry_is_below(&entry, offset) {
            return Err("producer state beyond the snapshot offset");
        }
        if producers.insert(id, entry).is_some() {
            return Err("duplicate producer id");
        }
    }
    if !r.0.is_empty() {
        return Err("trailing bytes after the producers");
    }
    Ok(producers)
}

fn decode_producer(
    r: &mut Reader<'_>,
    version: i16,
) -> Result<Option<(i64, ProducerEntry)>, &'static str> {
    let (Some(id), Some(epoch), Some(last_timestamp_ms), Some(txn_first)) =
        (r.i64(), r.i16(), r.i64(), r.i64())
    else {
        return Ok(None);
    };
    let coordinator_epoch = if version >= 2 {
        let Some(epoch) = r.i32() else {
            return Ok(None);
        };
        epoch
    } else {
        -1
    };
    let Some(batch_count) = r.u8() else {
        return Ok(None);
    };
    if id < 0 || txn_first < -1 || usize::from(batch_count) > PRODUCER_BATCHES_KEPT {
        return Err("bad producer entry");
    }
    let mut entry = ProducerEntry::new(epoch);
    entry.last_timestamp_ms = last_timestamp_ms;
    entry.coordinator_epoch = coordinator_epoch;
    entry.current_txn_first_offset = (txn_first >= 0).then_some(txn_first);
    for _ in 0..batch_count {
        let Some(batch) = decode_batch(r) else {
            return Ok(None);
        };
        entry.batches.push_back(batch);
    }
    Ok(Some((id, entry)))
}

fn decode_batch(r: &mut Reader<'_>) -> Option<BatchMetadata> {
    Some(BatchMetadata {
        first_seq: r.i32()?,
        last_seq: r.i32()?,
        first_offset: r.i64()?,
        last_offset: r.i64()?,
        timestamp_ms: r.i64()?,
    })
}

fn entry_is_below(entry: &ProducerEntry, offset: i64) -> bool {
    entry
        .current_txn_first_offset
        .is_none_or(|first| first < offset)
        && entry
            .batches
            .iter()
            .all(|b| b.first_offset <= b.last_offset && b.last_offset < offset)
}

/// Big-endian cursor over a snapshot body; every read is `None` past the end.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testing::{batch, control_batch, idempotent_batch, Producer};
    use crate::batch::{set_base_offset, validate, OffsetGaps};

    const PID: i64 = 1000;

    /// Header of a real batch of `count` records from `pid`/`epoch` starting at sequence `seq`,
    /// placed at `base_offset`.
    fn data(
        epoch: i16,
        seq: i32,
        count: usize,
        transactional: bool,
        base_offset: i64,
    ) -> BatchHeader {
        data_from(PID, epoch, seq, count, transactional, base_offset, 1_000)
    }

    fn data_from(
        pid: i64,
        epoch: i16,
        seq: i32,
        count: usize,
        transactional: bool,
        base_offset: i64,
        timestamp_ms: i64,
    ) -> BatchHeader {
        let producer = Producer {
            id: pid,
            epoch,
            base_sequence: seq,
            transactional,
        };
        at_offset(idempotent_batch(count, producer, timestamp_ms), base_offset)
    }

    fn marker(pid: i64, epoch: i16, commit: bool, offset: i64) -> (BatchHeader, Option<Marker>) {
        let producer = Producer {
            id: pid,
            epoch,
            base_sequence: -1,
            transactional: true,
        };
        let bytes = control_batch(producer, commit, 2_000);
        let control = crate::batch::marker(&bytes).expect("marker type");
        (at_offset(bytes, offset), Some(control))
    }

    fn at_offset(bytes: bytes::Bytes, base_offset: i64) -> BatchHeader {
        let mut buf = bytes.to_vec();
        set_base_offset(&mut buf, base_offset);
        validate(&buf, OffsetGaps::Forbidden).expect("valid test batch")
    }

    fn manager() -> (tempfile::TempDir, ProducerStateManager) {
        let dir = tempfile::tempdir().expect("tempdir");
        let psm = ProducerStateManager::new(dir.path());
        (dir, psm)
    }

    /// Checks on the leader, then applies: what the log does for a client batch.
    fn append(psm: &mut ProducerStateManager, header: BatchHeader) {
        assert_eq!(
            psm.check_leader_append(&header, TxnVerification::NotChecked)
                .expect("accepted"),
            AppendCheck::New
        );
        psm.apply(&header, None);
    }

    fn out_of_order(psm: &ProducerStateManager, header: BatchHeader) -> (i32, i32) {
        match psm.check_leader_append(&header, TxnVerification::NotChecked) {
            Err(StorageError::OutOfOrderSequence {
                producer_id,
                first_sequence,
                last_sequence,
            }) => {
                assert_eq!(producer_id, header.producer_id);
                (first_sequence, last_sequence)
            }
            other => panic!("expected OutOfOrderSequence, got {other:?}"),
        }
    }

    #[test]
    fn batches_without_producer_id_are_new_and_only_move_the_map_end() {
        let (_dir, mut psm) = manager();
        let header = at_offset(batch(1, 4, b'x', 1), 10);
        assert_eq!(
            psm.check_leader_append(&header, TxnVerification::NotChecked)
                .expect("check"),
            AppendCheck::New
        );
        assert_eq!(psm.apply(&header, None), None);
        assert_eq!(psm.map_end_offset(), 11);
        let three_records = BatchHeader {
            base_offset: 11,
            last_offset_delta: 2,
            records_count: 3,
            ..header
        };
        assert_eq!(psm.apply(&three_records, None), None);
        assert_eq!(psm.map_end_offset(), 14);
        assert_eq!(psm.producer_count(), 0);
    }

    #[test]
    fn unknown_producer_is_accepted_with_any_sequence_and_epoch() {
        let (_dir, psm) = manager();
        for (epoch, seq) in [(0, 0), (0, 42), (7, 1_000_000)] {
            let header = data(epoch, seq, 2, false, 0);
            assert_eq!(
                psm.check_leader_append(&header, TxnVerification::NotChecked)
                    .expect("check"),
                AppendCheck::New
            );
        }
    }

    #[test]
    fn same_epoch_requires_the_next_sequence() {
        let (_dir, mut psm) = manager();
        append(&mut psm, data(0, 0, 3, false, 0)); // seq 0..=2
        append(&mut psm, data(0, 3, 2, false, 3)); // seq 3..=4
        assert_eq!(out_of_order(&psm, data(0, 6, 1, false, 5)), (6, 4), "gap");
        assert_eq!(
            out_of_order(&psm, data(0, 4, 1, false, 5)),
            (4, 4),
            "overlap, not a cached batch"
        );
        assert_eq!(
            out_of_order(&psm, data(0, 0, 1, false, 5)),
            (0, 4),
            "restart without a bump"
        );
        append(&mut psm, data(0, 5, 1, false, 5));
        assert_eq!(psm.producer(PID).expect("known").last_sequence(), 5);
    }

    #[test]
    fn sequence_wraps_to_zero_after_i32_max() {
        let (_dir, mut psm) = manager();
        append(&mut psm, data(0, i32::MAX - 1, 2, false, 0)); // MAX-1..=MAX
        assert_eq!(psm.producer(PID).expect("known").last_sequence(), i32::MAX);
        assert_eq!(out_of_order(&psm, data(0, 1, 1, false, 2)), (1, i32::MAX));
        append(&mut psm, data(0, 0, 1, false, 2));
        // A batch crossing the wrap: MAX-1, MAX, 0 (built from a header, as the test batch
        // builder computes record sequences without wrapping).
        let (_dir2, mut psm2) = manager();
        let crossing = BatchHeader {
            base_sequence: i32::MAX - 1,
            ..data(0, 0, 3, false, 0)
        };
        append(&mut psm2, crossing);
        assert_eq!(psm2.producer(PID).expect("known").last_sequence(), 0);
        append(&mut psm2, data(0, 1, 1, false, 3));
    }

    #[test]
    fn retry_of_a_cached_batch_is_a_duplicate_with_the_original_offsets() {
        let (_dir, mut psm) = manager();
        let batches: Vec<BatchHeader> = (0..6)
            .map(|i| data(0, i * 2, 2, false, 100 + i64::from(i) * 2))
            .collect();
        for h in &batches[..5] {
            append(&mut psm, *h);
        }
        // The retry arrives without offsets (base offset 0 from the client).
        for h in &batches[..5] {
            let retry = BatchHeader {
                base_offset: 0,
                ..*h
            };
            let expected = BatchMetadata {
                first_seq: h.base_sequence,
                last_seq: h.last_sequence(),
                first_offset: h.base_offset,
                last_offset: h.last_offset(),
                timestamp_ms: h.max_timestamp,
            };
            assert_eq!(
                psm.check_leader_append(&retry, TxnVerification::NotChecked)
                    .expect("check"),
                AppendCheck::Duplicate(expected)
            );
        }
        append(&mut psm, batches[5]);
        let entry = psm.producer(PID).expect("known");
        assert_eq!(entry.batches.len(), PRODUCER_BATCHES_KEPT);
        assert_eq!(
            entry.batches.front().map(|b| b.first_offset),
            Some(102),
            "oldest evicted"
        );
        assert_eq!(
            out_of_order(&psm, batches[0]),
            (0, 11),
            "evicted batch is no longer a duplicate"
        );
        // Same sequences, different record count: not the same batch.
        assert!(matches!(
            psm.check_leader_append(&data(0, 2, 1, false, 0), TxnVerification::NotChecked),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn older_epoch_is_fenced_for_data_and_markers() {
        let (_dir, mut psm) = manager();
        append(&mut psm, data(3, 0, 1, false, 0));
        for header in [data(2, 1, 1, false, 1), marker(PID, 2, true, 1).0] {
            match psm.check_leader_append(&header, TxnVerification::NotChecked) {
                Err(StorageError::InvalidProducerEpoch {
                    producer_id,
                    epoch,
                    current_epoch,
                }) => assert_eq!((producer_id, epoch, current_epoch), (PID, 2, 3)),
                other => panic!("expected InvalidProducerEpoch, got {other:?}"),
            }
        }
        // A retry from the fenced epoch with a cached sequence range is fenced, not a duplicate.
        assert!(matches!(
            psm.check_leader_append(&data(2, 0, 1, false, 0), TxnVerification::NotChecked),
            Err(StorageError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn epoch_bump_requires_sequence_zero_and_clears_cached_batches() {
        let (_dir, mut psm) = manager();
        append(&mut psm, data(0, 0, 2, false, 0));
        assert_eq!(out_of_order(&psm, data(1, 5, 1, false, 2)), (5, 1));
        append(&mut psm, data(1, 0, 1, false, 2));
        let entry = psm.producer(PID).expect("known");
        assert_eq!(entry.epoch, 1);
        assert_eq!(entry.batches.len(), 1, "batches of epoch 0 are gone");
        assert!(matches!(
            psm.check_leader_append(&data(0, 0, 2, false, 0), TxnVerification::NotChecked),
            Err(StorageError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn producer_known_only_by_a_marker_starts_at_sequence_zero() {
        let (_dir, mut psm) = manager();
        // The coordinator bumped the epoch with an abort marker: no batch of epoch 4 exists.
        let (m, control) = marker(PID, 4, false, 0);
        assert_eq!(
            psm.check_leader_append(&m, TxnVerification::NotChecked)
                .expect("check"),
            AppendCheck::New
        );
        assert_eq!(psm.apply(&m, control), None, "no ongoing transaction");
        assert_eq!(psm.producer(PID).expect("known").epoch, 4);
        assert_eq!(out_of_order(&psm, data(4, 7, 1, true, 1)), (7, -1));
        append(&mut psm, data(4, 0, 1, true, 1));
    }

    #[test]
    fn markers_only_get_the_epoch_check() {
        let (_dir, mut psm) = manager();
        append(&mut psm, data(2, 0, 1, true, 0));
        for epoch in [2, 3] {
            let (m, _) = marker(PID, epoch, true, 1);
            assert_eq!(m.base_sequence, -1);
            assert_eq!(
                psm.check_leader_append(&m, TxnVerification::NotChecked)
                    .expect("check"),
                AppendCheck::New
            );
        }
        let (m, _) = marker(77, 0, false, 1);
        assert_eq!(
            psm.check_leader_append(&m, TxnVerification::NotChecked)
                .expect("unknown producer"),
            AppendCheck::New
        );
    }

    #[test]
    fn non_transactional_batch_during_a_transaction_is_refused() {
        let (_dir, mut psm) = manager();
        append(&mut psm, data(0, 0, 1, true, 0));
        assert!(matches!(
            psm.check_leader_append(&data(0, 1, 1, false, 1), TxnVerification::NotChecked),
            Err(StorageError::InvalidTxnState {
                producer_id: PID,
                ..
            })
        ));
        append(&mut psm, data(0, 1, 1, true, 1));
        let (m, control) = marker(PID, 0, true, 2);
        psm.apply(&m, control);
        append(&mut psm, data(0, 2, 1, false, 3));
    }

    #[test]
    fn markers_complete_transactions_and_move_the_first_unstable_offset() {
        let (_dir, mut psm) = manager();
        let other = PID + 1;
        append(&mut psm, data(0, 0, 2, true, 10)); // PID's txn starts at 10
        append(&mut psm, data_from(other, 0, 0, 1, true, 12, 1_000)); // other's at 12
        append(&mut psm, data(0, 2, 1, true, 13)); // continues PID's txn
        assert_eq!(psm.first_unstable_offset(), Some(10));
        assert_eq!(
            psm.producer(PID).expect("known").current_txn_first_offset,
            Some(10)
        );

        let (m, control) = marker(PID, 0, false, 14);
        let done = psm.apply(&m, control).expect("completed");
        assert_eq!(
            done,
            CompletedTxn {
                producer_id: PID,
                first_offset: 10,
                last_offset: 14,
                aborted: true
            }
        );
        assert_eq!(
            psm.first_unstable_offset(),
            Some(10),
            "marker not below the high watermark yet"
        );
        psm.on_high_watermark_updated(14);
        assert_eq!(
            psm.first_unstable_offset(),
            Some(10),
            "hw must pass the marker"
        );
        psm.on_high_watermark_updated(15);
        assert_eq!(psm.first_unstable_offset(), Some(12));
        assert_eq!(psm.last_stable_offset(&done), 12, "other's txn still open");

        let (m, control) = marker(other, 0, true, 15);
        let done = psm.apply(&m, control).expect("completed");
        assert!(!done.aborted);
        assert_eq!((done.first_offset, done.last_offset), (12, 15));
        assert_eq!(psm.first_unstable_offset(), Some(12));
        psm.on_high_watermark_updated(16);
        assert_eq!(psm.first_unstable_offset(), None);
        assert_eq!(psm.last_stable_offset(&done), 16);
        assert_eq!(psm.map_end_offset(), 16);

        let (m, control) = marker(other, 0, false, 16);
        assert_eq!(
            psm.apply(&m, control),
            None,
            "marker without a transaction ends nothing"
        );
        assert_eq!(psm.producer(other).expect("known").last_timestamp_ms, 2_000);
    }

    #[test]
    fn marker_without_a_type_counts_as_an_abort() {
        let (_dir, mut psm) = manager();
        append(&mut psm, data(0, 0, 1, true, 0));
        let (m, _) = marker(PID, 0, true, 1);
        assert!(psm.apply(&m, None).expect("completed").aborted);
    }

    #[test]
    fn remove_expired_keeps_producers_with_ongoing_transactions() {
        let (_dir, mut psm) = manager();
        append(&mut psm, data_from(1, 0, 0, 1, false, 0, 1_000));
        append(&mut psm, data_from(2, 0, 0, 1, false, 1, 5_000));
        append(&mut psm, data_from(3, 0, 0, 1, true, 2, 1_000));
        psm.remove_expired(6_000, 5_000); // producer 1 is exactly 5 s old: expired
        assert!(psm.producer(1).is_none());
        assert!(psm.producer(2).is_some());
        assert!(psm.producer(3).is_some(), "ongoing transaction keeps it");
        assert_eq!(psm.producer_count(), 2);
        // A forgotten producer is unknown again: any sequence is accepted.
        let header = data_from(1, 0, 9, 1, false, 3, 7_000);
        assert_eq!(
            psm.check_leader_append(&header, TxnVerification::NotChecked)
                .expect("check"),
            AppendCheck::New
        );
    }

    fn populated(psm: &mut ProducerStateManager) {
        for i in 0..7 {
            append(psm, data(1, i * 3, 3, false, i64::from(i) * 3));
        }
        append(psm, data_from(5, 0, 0, 2, true, 21, 3_000)); // ongoing txn at 21
        let (m, control) = marker(6, 2, false, 23); // marker-only producer
        psm.apply(&m, control);
        append(psm, at_offset(batch(1, 1, b'z', 1), 24)); // map end 25
    }

    #[test]
    fn snapshot_round_trip_restores_everything() {
        let (dir, mut psm) = manager();
        populated(&mut psm);
        psm.take_snapshot().expect("snapshot");
        assert!(dir.path().join("00000000000000000025.snapshot").exists());

        let mut loaded = ProducerStateManager::new(dir.path());
        assert_eq!(
            loaded.load_latest_snapshot(i64::MAX).expect("load"),
            Some(25)
        );
        assert_eq!(loaded.producers, psm.producers);
        assert_eq!(loaded.ongoing_txns, psm.ongoing_txns);
        assert_eq!(loaded.first_unstable_offset(), Some(21));
        assert_eq!(loaded.map_end_offset(), 25);
        // Duplicate detection survives the reload.
        let retry = data(1, 18, 3, false, 0);
        assert!(
            matches!(loaded.check_leader_append(&retry, TxnVerification::NotChecked), Ok(AppendCheck::Duplicate(b)) if b.first_offset == 18)
        );
    }

    #[test]
    fn load_deletes_newer_snapshots_and_falls_back_past_corrupt_ones() {
        let (dir, mut psm) = manager();
        for (offset, seq) in [(10, 0), (20, 1), (30, 2)] {
            psm.apply(&data(0, seq, 1, false, offset - 1), None);
            psm.take_snapshot().expect("snapshot");
        }
        fs::write(dir.path().join(format!("{:020}.snapshot", 20)), b"garbage").expect("corrupt");
        fs::write(
            dir.path().join("00000000000000000000.log"),
            b"not a snapshot",
        )
        .expect("other file");

        let mut loaded = ProducerStateManager::new(dir.path());
        assert_eq!(loaded.load_latest_snapshot(25).expect("load"), Some(10));
        assert_eq!(
            loaded.snapshot_offsets().expect("list"),
            vec![10],
            "30 above max, 20 corrupt"
        );
        assert_eq!(loaded.map_end_offset(), 10);
        assert_eq!(loaded.producer(PID).expect("known").last_sequence(), 0);

        assert_eq!(loaded.load_latest_snapshot(5).expect("load"), None);
        assert_eq!(loaded.producer_count(), 0);
        assert_eq!(loaded.map_end_offset(), 0);
        assert!(loaded.snapshot_offsets().expect("list").is_empty());
    }

    #[test]
    fn well_framed_but_inconsistent_snapshot_bodies_are_corrupt() {
        let (dir, mut psm) = manager();
        populated(&mut psm);
        let good = encode_snapshot(25, &psm.producers);
        let mut bad_version = good.clone();
        bad_version[1] = 9;
        let mut too_many_batches = encode_snapshot(25, &HashMap::new());
        too_many_batches[10..14].copy_from_slice(&1i32.to_be_bytes());
        too_many_batches.extend_from_slice(&[0; 8 + 2 + 8 + 8]);
        too_many_batches.push(6);
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_snapshot(&good, 25).is_ok());
        let cases = [
            (25, good[..good.len() - 3].to_vec()),
            (25, bad_version),
            (25, encode_snapshot(26, &psm.producers)), // offset differs from the name
            (20, encode_snapshot(20, &psm.producers)), // batches and txn beyond the offset
            (25, too_many_batches),
            (25, trailing),
        ];
        for (offset, body) in cases {
            assert!(decode_snapshot(&body, offset).is_err(), "body {body:?}");
            let path = dir.path().join(format!("{offset:020}.snapshot"));
            checkpoint::write_framed(&path, &body).expect("write");
            let mut loaded = ProducerStateManager::new(dir.path());
            assert_eq!(
                loaded.load_latest_snapshot(100).expect("load"),
                None,
                "body {body:?}"
            );
            assert!(
                loaded.snapshot_offsets().expect("list").is_empty(),
                "corrupt snapshot deleted"
            );
        }
    }

    #[test]
    fn delete_snapshots_before_keeps_the_newest() {
        let (_dir, mut psm) = manager();
        for offset in [10, 20, 30] {
            psm.clear(offset);
            psm.take_snapshot().expect("snapshot");
        }
        psm.delete_snapshots_before(25).expect("delete");
        assert_eq!(psm.snapshot_offsets().expect("list"), vec![30]);
        psm.delete_snapshots_before(100).expect("delete");
        assert_eq!(
            psm.snapshot_offsets().expect("list"),
            vec![30],
            "newest kept"
        );
    }

    #[test]
    fn truncate_fully_clears_state_and_every_snapshot() {
        let (_dir, mut psm) = manager();
        populated(&mut psm);
        psm.take_snapshot().expect("snapshot");
        psm.truncate_fully_and_start_at(500).expect("truncate");
        assert_eq!(psm.producer_count(), 0);
        assert_eq!(psm.first_unstable_offset(), None);
        assert_eq!(psm.map_end_offset(), 500);
        assert!(psm.snapshot_offsets().expect("list").is_empty());
    }

    #[test]
    fn snapshot_names_are_parsed_strictly() {
        assert_eq!(
            parse_snapshot_name("00000000000000000042.snapshot"),
            Some(42)
        );
        for name in [
            "42.snapshot",
            "0000000000000000004x.snapshot",
            "00000000000000000042.log",
            "00000000000000000042.tmp",
        ] {
            assert_eq!(parse_snapshot_name(name), None, "{name}");
        }
    }

    #[test]
    fn verifications_expire_with_the_producers() {
        let mut psm = ProducerStateManager::new(Path::new("/nonexistent"));
        let first = data(0, 0, 1, true, 0);
        let old = psm
            .start_verification(PID, 0, false, 1_000)
            .expect("nothing open");
        psm.remove_expired(5_999, 5_000);
        assert_eq!(psm.start_verification(PID, 0, false, 5_999), Some(old));
        psm.remove_expired(6_000, 5_000);
        // Gone: its guard no longer admits the batch, and a new verification gets a new one.
        assert!(matches!(
            psm.check_leader_append(&first, TxnVerification::Guard(Some(old))),
            Err(StorageError::InvalidTxnState { .. })
        ));
        let fresh = psm
            .start_verification(PID, 0, false, 6_000)
            .expect("nothing open");
        assert_ne!(fresh, old);
    }

    #[test]
    fn a_transactional_batch_opens_a_transaction_only_with_a_current_guard() {
        let mut psm = ProducerStateManager::new(Path::new("/nonexistent"));
        let first = data(0, 0, 1, true, 0);
        // Not verified at all: refused.
        assert!(matches!(
            psm.check_leader_append(&first, TxnVerification::Guard(None)),
            Err(StorageError::InvalidTxnState { .. })
        ));
        let guard = psm
            .start_verification(PID, 0, false, 0)
            .expect("nothing open");
        // A second request in flight for the same producer shares the guard.
        assert_eq!(psm.start_verification(PID, 0, false, 0), Some(guard));
        assert!(psm
            .check_leader_append(&first, TxnVerification::Guard(Some(guard)))
            .is_ok());
        assert!(matches!(
            psm.check_leader_append(&first, TxnVerification::Guard(Some(guard + 1))),
            Err(StorageError::InvalidTxnState { .. })
        ));
        psm.apply(&first, None);
        // Open at this epoch: nothing to verify, no guard needed.
        assert_eq!(psm.start_verification(PID, 0, false, 0), None);
        assert!(psm
            .check_leader_append(&data(0, 1, 1, true, 1), TxnVerification::Guard(None))
            .is_ok());
    }

    #[test]
    fn a_marker_between_verification_and_append_voids_the_guard() {
        let mut psm = ProducerStateManager::new(Path::new("/nonexistent"));
        psm.apply(&data(0, 0, 1, true, 0), None);
        let (m, control) = marker(PID, 0, false, 1);
        psm.apply(&m, control);
        // Verified for the next transaction...
        let guard = psm
            .start_verification(PID, 0, false, 0)
            .expect("nothing open");
        // ...but the coordinator's abort of it lands first (the ABA race).
        let (m, control) = marker(PID, 0, false, 2);
        psm.apply(&m, control);
        assert!(matches!(
            psm.check_leader_append(&data(0, 1, 1, true, 3), TxnVerification::Guard(Some(guard))),
            Err(StorageError::InvalidTxnState { .. })
        ));
        // NotChecked (tests and tools) skips the guard.
        assert!(psm
            .check_leader_append(&data(0, 1, 1, true, 3), TxnVerification::NotChecked)
            .is_ok());
        // A group coordinator's transactional offset commit is held to the same guard.
        assert!(matches!(
            psm.check_coordinator_append(
                &data(0, 1, 1, true, 3),
                None,
                TxnVerification::Guard(Some(guard))
            ),
            Err(StorageError::InvalidTxnState { .. })
        ));
        let fresh = psm
            .start_verification(PID, 0, false, 0)
            .expect("nothing open");
        assert!(psm
            .check_coordinator_append(
                &data(0, 1, 1, true, 3),
                None,
                TxnVerification::Guard(Some(fresh))
            )
            .is_ok());
    }

    #[test]
    fn a_version_2_marker_at_the_verified_epoch_keeps_the_guard() {
        let mut psm = ProducerStateManager::new(Path::new("/nonexistent"));
        psm.apply(&data(0, 0, 1, true, 0), None);
        // The next transaction (epoch 1) is verified while the previous one's marker, bumped
        // to epoch 1 by the coordinator, is still on its way.
        let guard = psm
            .start_verification(PID, 1, true, 0)
            .expect("nothing open at epoch 1");
        let (m, control) = marker(PID, 1, true, 1);
        psm.apply(&m, control);
        assert!(psm
            .check_leader_append(&data(1, 0, 1, true, 2), TxnVerification::Guard(Some(guard)))
            .is_ok());
    }

    #[test]
    fn a_marker_from_an_older_coordinator_is_fenced() {
        let mut psm = ProducerStateManager::new(Path::new("/nonexistent"));
        psm.apply(&data(0, 0, 1, true, 0), None);
        let marker_at = |coordinator_epoch: i32, offset: i64| {
            let bytes =
                crate::batch::marker_batch(PID, 0, true, coordinator_epoch, 2_000).expect("marker");
            let marker = crate::batch::marker(&bytes).expect("marker");
            (at_offset(bytes, offset), marker)
        };
        let (header, marker) = marker_at(5, 1);
        assert!(psm
            .check_coordinator_append(&header, Some(marker), TxnVerification::NotChecked)
            .is_ok());
        psm.apply(&header, Some(marker));
        assert_eq!(psm.producer(PID).unwrap().coordinator_epoch, 5);
        let (late, late_marker) = marker_at(4, 2);
        assert!(matches!(
            psm.check_coordinator_append(&late, Some(late_marker), TxnVerification::NotChecked),
            Err(StorageError::TransactionCoordinatorFenced {
                coordinator_epoch: 4,
                current: 5,
                ..
            })
        ));
        let (again, again_marker) = marker_at(5, 2);
        assert!(psm
            .check_coordinator_append(&again, Some(again_marker), TxnVerification::NotChecked)
            .is_ok());
    }

    #[test]
    fn version_1_snapshots_are_still_read() {
        let mut body = Vec::new();
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&10i64.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&PID.to_be_bytes());
        body.extend_from_slice(&3i16.to_be_bytes());
        body.extend_from_slice(&1_000i64.to_be_bytes());
        body.extend_from_slice(&(-1i64).to_be_bytes());
        body.push(0);
        let producers = decode_snapshot(&body, 10).expect("a version 1 body");
        let entry = &producers[&PID];
        assert_eq!((entry.epoch, entry.coordinator_epoch), (3, -1));
        // Written at version 2 with the coordinator epoch, read back the same.
        let mut with_epoch = entry.clone();
        with_epoch.coordinator_epoch = 9;
        let map = HashMap::from([(PID, with_epoch.clone())]);
        let encoded = encode_snapshot(10, &map);
        assert_eq!(decode_snapshot(&encoded, 10).expect("v2")[&PID], with_epoch);
    }
}
