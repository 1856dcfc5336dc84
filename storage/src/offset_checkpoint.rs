//! A per-log-directory file of one offset per partition, Kafka's `OffsetCheckpointFile`: the
//! broker keeps its partitions' high watermarks in `replication-offset-checkpoint`, so that a
//! restarted replica does not start from a high watermark of 0.
//!
//! The body is Kafka's text layout (a version line, a count line, one `name topic-id offset`
//! line per partition) inside the crate's CRC frame ([`crate::checkpoint`]), written atomically:
//! a crash leaves the old file or the new one, and a damaged file is reported, never parsed.
//! Entries carry the topic id because a directory name outlives a deleted topic: a recreated
//! topic of the same name must not inherit the old one's offset.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::checkpoint::{read_framed, write_framed};
use crate::error::{Result, StorageError};

/// The high-watermark checkpoint's file name in a log directory (Kafka's name).
pub const HIGH_WATERMARK_FILE: &str = "replication-offset-checkpoint";
/// The only layout written and read.
const VERSION: &str = "0";

/// One partition's checkpointed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointedOffset {
    /// The id of the topic the offset belongs to.
    pub topic_id: [u8; 16],
    /// The offset (a high watermark: never negative).
    pub offset: i64,
}

/// A checkpoint file of offsets keyed by partition directory name (`<topic>-<index>`).
#[derive(Debug, Clone)]
pub struct OffsetCheckpointFile {
    path: PathBuf,
}

impl OffsetCheckpointFile {
    /// The checkpoint at `path` (the file need not exist yet).
    pub fn new(path: PathBuf) -> OffsetCheckpointFile {
        OffsetCheckpointFile { path }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `offsets`, atomically and durably (blocking: fsyncs).
    pub fn write(&self, offsets: &BTreeMap<String, CheckpointedOffset>) -> Result<()> {
        let mut body = String::with_capacity(16 + offsets.len() * 64);
        // Writing into a String cannot fail.
        let _ = writeln!(body, "{VERSION}\n{}", offsets.len());
        for (name, entry) in offsets {
            if name.is_empty() || name.contains(char::is_whitespace) {
                // Directory names are `<topic>-<index>` and topic names have no whitespace;
                // one that does could not be read back, so it is refused rather than written.
                return Err(self.corrupt("partition name with whitespace"));
            }
            let id = uuid::Uuid::from_bytes(entry.topic_id).simple();
            let _ = writeln!(body, "{name} {id} {}", entry.offset);
        }
        write_framed(&self.path, body.as_bytes())
    }

    /// The offsets in the file; empty if there is none yet. A damaged file is an error: the
    /// caller decides whether starting without it is safe (for high watermarks it is).
    pub fn read(&self) -> Result<BTreeMap<String, CheckpointedOffset>> {
        let Some(body) = read_framed(&self.path)? else {
            return Ok(BTreeMap::new());
        };
        let text = std::str::from_utf8(&body).map_err(|_| self.corrupt("not utf-8"))?;
        let mut lines = text.lines();
        if lines.next() != Some(VERSION) {
            return Err(self.corrupt("unknown version"));
        }
        let count: usize = lines
            .next()
            .and_then(|line| line.parse().ok())
            .ok_or_else(|| self.corrupt("bad entry count"))?;
        let mut offsets = BTreeMap::new();
        for line in lines {
            let (name, entry) = parse_entry(line).ok_or_else(|| self.corrupt("bad entry"))?;
            offsets.insert(name.to_owned(), entry);
        }
        if offsets.len() != count {
            return Err(self.corrupt("entry count mismatch"));
        }
        Ok(offsets)
    }

    fn corrupt(&self, reason: &'static str) -> StorageError {
        StorageError::CorruptCheckpoint {
            path: self.path.clone(),
            reason,
        }
    }
}

/// `name topic-id offset`, with a non-negative offset.
fn parse_entry(line: &str) -> Option<(&str, CheckpointedOffset)> {
    let mut fields = line.split(' ');
    let (name, id, offset) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || name.is_empty() {
        return None;
    }
    let topic_id = uuid::Uuid::try_parse(id).ok()?.into_bytes();
    let offset: i64 = offset.parse().ok().filter(|o| *o >= 0)?;
    Some((name, CheckpointedOffset { topic_id, offset }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u8, offset: i64) -> CheckpointedOffset {
        CheckpointedOffset {
            topic_id: [id; 16],
            offset,
        }
    }

    fn file(dir: &Path) -> OffsetCheckpointFile {
        OffsetCheckpointFile::new(dir.join(HIGH_WATERMARK_FILE))
    }

    #[test]
    fn offsets_round_trip_and_a_missing_file_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = file(dir.path());
        assert!(checkpoint.read().unwrap().is_empty(), "no file yet");

        let offsets = BTreeMap::from([
            ("orders-0".to_owned(), entry(1, 42)),
            ("orders-1".to_owned(), entry(1, 0)),
            ("a.b_c-d-12".to_owned(), entry(2, i64::MAX)),
        ]);
        checkpoint.write(&offsets).unwrap();
        assert_eq!(checkpoint.read().unwrap(), offsets);

        // Replaced whole: a partition no longer written is gone.
        let fewer = BTreeMap::from([("orders-0".to_owned(), entry(1, 50))]);
        checkpoint.write(&fewer).unwrap();
        assert_eq!(checkpoint.read().unwrap(), fewer);
        checkpoint.write(&BTreeMap::new()).unwrap();
        assert!(checkpoint.read().unwrap().is_empty());
        assert!(
            !checkpoint.path().with_extension("tmp").exists(),
            "the temporary file was renamed over the checkpoint"
        );
    }

    #[test]
    fn a_damaged_or_malformed_checkpoint_is_an_error_not_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = file(dir.path());
        checkpoint
            .write(&BTreeMap::from([("t-0".to_owned(), entry(1, 7))]))
            .unwrap();
        let mut raw = std::fs::read(checkpoint.path()).unwrap();
        let last = raw.len() - 2;
        raw[last] ^= 0x01;
        std::fs::write(checkpoint.path(), &raw).unwrap();
        assert!(matches!(
            checkpoint.read(),
            Err(StorageError::CorruptCheckpoint { .. })
        ));

        let id = uuid::Uuid::from_bytes([1; 16]).simple().to_string();
        for body in [
            "1\n0\n".to_owned(),
            "0\nmany\n".to_owned(),
            format!("0\n2\nt-0 {id} 7\n"),
            format!("0\n1\nt-0 {id} -1\n"),
            format!("0\n1\nt-0 {id} 7 extra\n"),
            "0\n1\nt-0 not-an-id 7\n".to_owned(),
        ] {
            crate::checkpoint::write_framed(checkpoint.path(), body.as_bytes()).unwrap();
            assert!(
                matches!(
                    checkpoint.read(),
                    Err(StorageError::CorruptCheckpoint { .. })
                ),
                "{body:?} was accepted"
            );
        }
    }

    #[test]
    fn a_name_that_could_not_be_read_back_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = file(dir.path());
        let bad = BTreeMap::from([("t 0".to_owned(), entry(1, 7))]);
        assert!(checkpoint.write(&bad).is_err());
        assert!(!checkpoint.path().exists(), "nothing written");
    }
}
