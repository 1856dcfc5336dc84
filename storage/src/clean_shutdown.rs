//! The broker-wide clean-shutdown marker, `<data_dir>/broker-clean-shutdown` (Kafka's
//! `.kafka_cleanshutdown`): written last by a broker that closed every log cleanly, naming the
//! broker epoch it held, and taken (read, then removed durably) first at the next start.
//!
//! The per-log markers say which logs need recovery; this one says whether the broker's data as
//! a whole is what it acknowledged. It cannot be inferred from the logs: a lost or replaced disk
//! has no logs at all, so no log marker is missing, yet every acknowledged record is gone. A
//! broker that registers without this marker's epoch is treated as having shut down uncleanly
//! (KIP-966), and cannot lead from a last-member ISR or an ELR.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::checkpoint::{read_framed, sync_dir, write_framed};
use crate::error::{Result, StorageError};

/// The marker's file name in the data directory.
pub const CLEAN_SHUTDOWN_MARKER: &str = "broker-clean-shutdown";

/// Records that the broker shut down cleanly while holding `broker_epoch`. Call only after every
/// log was closed (flushed and marked clean).
pub fn mark(data_dir: &Path, broker_epoch: i64) -> Result<()> {
    write_framed(
        &data_dir.join(CLEAN_SHUTDOWN_MARKER),
        &broker_epoch.to_be_bytes(),
    )
}

/// The broker epoch of the last clean shutdown, if the previous run ended with one; the marker
/// is removed durably before this returns, so a crash of this run is never taken for clean. A
/// damaged marker counts as absent: the safe answer is "unclean".
pub fn take(data_dir: &Path) -> Result<Option<i64>> {
    let path = data_dir.join(CLEAN_SHUTDOWN_MARKER);
    let epoch = match read_framed(&path) {
        Ok(Some(body)) => <[u8; 8]>::try_from(body.as_slice())
            .ok()
            .map(i64::from_be_bytes),
        Ok(None) => return Ok(None),
        Err(StorageError::CorruptCheckpoint { .. }) => None,
        Err(error) => return Err(error),
    };
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io(&path, e)),
    }
    sync_dir(data_dir)?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_epoch_is_taken_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        mark(dir.path(), 42).expect("mark");
        assert_eq!(take(dir.path()).expect("take"), Some(42));
        assert_eq!(
            take(dir.path()).expect("take again"),
            None,
            "a second start without a clean shutdown in between is unclean"
        );
    }

    #[test]
    fn no_marker_means_an_unclean_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(take(dir.path()).expect("take"), None);
    }

    #[test]
    fn a_damaged_marker_counts_as_unclean_and_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        mark(dir.path(), 7).expect("mark");
        let path = dir.path().join(CLEAN_SHUTDOWN_MARKER);
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).expect("damage");
        assert_eq!(take(dir.path()).expect("take"), None);
        assert!(!path.exists());
    }
}
