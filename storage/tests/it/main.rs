//! Integration tests of the partition log, in one binary so it links once.
//!
//! - [`model`]: proptest of random operation sequences (appends, reads, flushes, truncations,
//!   rolls, retention, DeleteRecords, crashes with torn tails, clean reopenings) against an
//!   in-memory model.
//! - [`loader`]: Kafka `LogLoaderTest` style recovery: random garbage after the last batch and
//!   in the index files, crashes in the middle of a roll, a deletion or a compaction swap.
//! - [`corruption`]: bit flips detected on read, and malformed batches rejected by append.
//!
//! Shared helpers (directory listings, a seeded RNG, whole-log reads) live here.

mod corruption;
mod loader;
mod model;

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use streambus_storage::batch::{self, BatchHeader, BatchStep, OffsetGaps};
use streambus_storage::segment::parse_file_name;
use streambus_storage::Log;

/// Base offsets of the `.log` files in `dir`, ascending.
pub fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = file_names(dir)
        .iter()
        .filter_map(|name| parse_file_name(name, "log"))
        .collect();
    bases.sort_unstable();
    bases
}

/// Names of every file in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read log dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 file name")
        })
        .collect();
    names.sort();
    names
}

/// `(name, size)` of every file in `dir`, sorted by name.
pub fn file_sizes(dir: &Path) -> Vec<(String, u64)> {
    file_names(dir)
        .into_iter()
        .map(|name| {
            let len = fs::metadata(dir.join(&name)).expect("metadata").len();
            (name, len)
        })
        .collect()
}

/// Path of the file of the segment at `base` with extension `ext`.
pub fn segment_file(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Splits `records` into whole batches, asserting there is no partial or invalid tail and that
/// every batch passes full validation.
pub fn split_batches(records: &Bytes) -> Vec<(BatchHeader, Bytes)> {
    let mut out = Vec::new();
    for step in batch::BatchIter::new(records) {
        match step {
            BatchStep::Batch { position, header } => {
                let bytes = records.slice(position..position + header.total_len());
                let checked = batch::validate(&bytes, OffsetGaps::Forbidden).unwrap_or_else(|e| {
                    panic!("read returned an invalid batch at {position}: {e}")
                });
                assert_eq!(checked, header);
                out.push((header, bytes));
            }
            other => panic!("read returned a partial or invalid batch: {other:?}"),
        }
    }
    out
}

/// Reads every batch from `start` to the log end, one `read` call after another (bounded by
/// `calls_max` calls), asserting each call makes progress.
pub fn read_everything(
    log: &Log,
    start: i64,
    max_bytes: usize,
    calls_max: usize,
) -> Vec<(BatchHeader, Bytes)> {
    let end = log.log_end_offset();
    let mut out: Vec<(BatchHeader, Bytes)> = Vec::new();
    let mut next = start;
    for _ in 0..calls_max {
        if next >= end {
            return out;
        }
        let result = log
            .read(next, max_bytes, i64::MAX)
            .unwrap_or_else(|e| panic!("read at {next} failed: {e}"));
        let batches = split_batches(&result.records);
        assert!(
            !batches.is_empty(),
            "read at {next} below log end {end} returned nothing"
        );
        next = batches.last().map_or(next, |(h, _)| h.next_offset());
        out.extend(batches);
    }
    assert!(
        next >= end,
        "log not read to its end {end} in {calls_max} calls (stopped at {next})"
    );
    out
}

/// A small seeded xorshift64* generator, so every loader test seed can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

// Focused tests of each log operation and config knob, and of compaction.
mod compaction;
mod ops;
