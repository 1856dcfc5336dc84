//! Small durable files: atomic replace (write temp, fsync, rename, fsync dir) and a CRC-framed body.
//!
//! Every checkpoint-like file of the crate (leader epochs, log start offset, producer snapshots)
//! goes through here, so a crash at any point leaves either the old or the new file, never a torn
//! one, and a file damaged later is detected by its CRC32 rather than parsed as garbage.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Result, StorageError};

/// Magic prefix of framed files, so a file of another kind is never parsed as ours.
const FRAME_MAGIC: &[u8; 4] = b"SBCK";
const FRAME_HEADER_LEN: usize = 4 + 4 + 4;

/// fsyncs a directory so that entries created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// Replaces `path` with `contents` atomically and durably.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StorageError::io(&tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| StorageError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| StorageError::io(path, e))?;
    sync_dir(parent_of(path))
}

/// Writes `body` framed as `magic | len:u32 | crc32:u32 | body`, atomically.
pub fn write_framed(path: &Path, body: &[u8]) -> Result<()> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(FRAME_MAGIC);
    let len = u32::try_from(body.len()).map_err(|_| StorageError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason: "body larger than 4 GiB",
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out.extend_from_slice(body);
    write_atomically(path, &out)
}

/// Reads a file written by [`write_framed`]; `Ok(None)` if it does not exist.
pub fn read_framed(path: &Path) -> Result<Option<Vec<u8>>> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    let corrupt = |reason| StorageError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    if data.len() < FRAME_HEADER_LEN || &data[..4] != FRAME_MAGIC {
        return Err(corrupt("bad header"));
    }
    let len = u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize;
    let crc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    let body = &data[FRAME_HEADER_LEN..];
    if body.len() != len {
        return Err(corrupt("length mismatch"));
    }
    if crc32fast::hash(body) != crc {
        return Err(corrupt("crc mismatch"));
    }
    Ok(Some(body.to_vec()))
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_round_trip_and_corruption_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.checkpoint");
        assert_eq!(read_framed(&path).expect("read"), None);
        write_framed(&path, b"hello").expect("write");
        assert_eq!(
            read_framed(&path).expect("read").as_deref(),
            Some(&b"hello"[..])
        );

        let mut raw = fs::read(&path).expect("raw");
        let last = raw.len() - 1;
        raw[last] ^= 0x01;
        fs::write(&path, &raw).expect("rewrite");
        assert!(matches!(
            read_framed(&path),
            Err(StorageError::CorruptCheckpoint { .. })
        ));
        assert!(!path.with_extension("tmp").exists());
    }
}
