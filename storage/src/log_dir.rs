//! The directory of all partition logs on one broker, `<data_dir>/logs/`, and its layout.
//!
//! Each partition log lives in `<topic>-<index>/` with a `partition.metadata` marker naming the
//! topic id, so a directory left by a deleted topic is never taken for a new topic of the same
//! name. A directory is deleted by renaming it to `<name>.<uuid>.deleting` first (a crash
//! mid-delete leaves nothing that looks live; leftovers are removed at open), and set aside,
//! data kept, as `<name>.<uuid>.stray`. Which directories are stray is the caller's decision
//! (it needs the cluster metadata); this module only does the file operations.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::{sync_dir, write_atomically};
use crate::error::{Result, StorageError};
use crate::offset_checkpoint::{OffsetCheckpointFile, HIGH_WATERMARK_FILE};

/// File in a partition directory naming the topic id it belongs to.
pub const MARKER_FILE: &str = "partition.metadata";
/// Suffix of directories being deleted (renamed first, so a crash mid-delete leaves no
/// directory that looks live).
pub const DELETE_SUFFIX: &str = ".deleting";
/// Suffix of log directories moved aside because no known topic owns them.
pub const STRAY_SUFFIX: &str = ".stray";
/// The directory under the data directory that holds the partition logs.
const LOGS_DIR: &str = "logs";
/// The file [`LogDir::probe`] writes and removes (not a directory: never taken for a log).
const PROBE_FILE: &str = ".probe";

/// `<data_dir>/logs/`: where partition directories are created, found, deleted and set aside.
#[derive(Debug)]
pub struct LogDir {
    root: PathBuf,
}

/// A partition directory [`LogDir::prepare`] made ready for [`crate::Log::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDir {
    /// The directory's name, `<topic>-<index>`.
    pub name: String,
    /// The directory's path.
    pub path: PathBuf,
    /// A deleted topic's directory of the same name was removed first: anything kept elsewhere
    /// under this name (a recovery point) belongs to the old topic.
    pub replaced: bool,
}

/// A partition log directory found by [`LogDir::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirEntry {
    /// The directory's name (normally `<topic>-<index>`, see [`LogDir::parse_dir_name`]).
    pub name: String,
    /// The topic id its marker names; `None` if the marker holds no topic id.
    pub topic_id: Option<[u8; 16]>,
}

impl LogDir {
    /// Opens `<data_dir>/logs/`, creating it if needed, and removes the leftovers of deletions
    /// a crash interrupted.
    pub fn open(data_dir: &Path) -> Result<LogDir> {
        let root = data_dir.join(LOGS_DIR);
        fs::create_dir_all(&root).map_err(|e| StorageError::io(&root, e))?;
        let log_dir = LogDir { root };
        for name in log_dir.dir_names()? {
            if name.ends_with(DELETE_SUFFIX) {
                remove_dir(&log_dir.root.join(name));
            }
        }
        Ok(log_dir)
    }

    /// The directory holding the partition directories.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory's high-watermark checkpoint, `replication-offset-checkpoint` (Kafka's
    /// name and place: one per log directory).
    pub fn high_watermark_checkpoint(&self) -> OffsetCheckpointFile {
        OffsetCheckpointFile::new(self.root.join(HIGH_WATERMARK_FILE))
    }

    /// Checks that the directory takes writes again after a failure: writes a small file,
    /// fsyncs it (through the fsync failpoint, as a log's data fsync), removes it and fsyncs
    /// the directory. Blocking.
    pub fn probe(&self) -> Result<()> {
        self.probe_with(PROBE_FILE)
    }

    /// [`LogDir::probe`] through a file of its own `name`, for a second prober (readiness
    /// checks) that must not collide with the first.
    pub fn probe_with(&self, name: &str) -> Result<()> {
        let path = self.root.join(name);
        let written = (|| {
            let mut file = fs::File::create(&path).map_err(|e| StorageError::io(&path, e))?;
            file.write_all(b"streambus log directory probe\n")
                .map_err(|e| StorageError::io(&path, e))?;
            crate::failure::before_fsync(&path)?;
            file.sync_all().map_err(|e| StorageError::io(&path, e))
        })();
        let removed = fs::remove_file(&path).map_err(|e| StorageError::io(&path, e));
        written.and(removed)?;
        sync_dir(&self.root)
    }

    /// The name of partition `index` of `topic`'s directory.
    pub fn dir_name(topic: &str, index: u32) -> String {
        format!("{topic}-{index}")
    }

    /// The topic name and partition index a directory name spells, if it is one
    /// ([`LogDir::dir_name`]'s inverse).
    pub fn parse_dir_name(dir_name: &str) -> Option<(&str, u32)> {
        let (topic, index) = dir_name.rsplit_once('-')?;
        Some((topic, index.parse().ok()?))
    }

    /// Makes partition `index` of topic `topic` (id `topic_id`) ready to open: adopts its
    /// directory if the marker names `topic_id`, creates it (marker first) if there is none,
    /// and deletes a directory of the same name whose marker names another topic (deleted
    /// while this broker was away) before creating a fresh one. Fails rather than serve a
    /// deleted topic's records under the new topic's id.
    pub fn prepare(&self, topic: &str, index: u32, topic_id: [u8; 16]) -> Result<PreparedDir> {
        let name = LogDir::dir_name(topic, index);
        let path = self.root.join(&name);
        let marker = path.join(MARKER_FILE);
        let id_text = marker_text(topic_id);
        let mut replaced = false;
        match fs::read_to_string(&marker) {
            Ok(found) if found.trim() == id_text => {}
            Ok(found) => {
                // A topic of the same name that was deleted while this broker was away.
                tracing::info!(
                    topic,
                    index,
                    old_topic_id = found.trim(),
                    "removing a deleted topic's log"
                );
                if let Err(error) = self.delete(&name) {
                    tracing::error!(%error, "cannot delete a partition directory");
                }
                if path.exists() {
                    // Never serve the deleted topic's records under the new topic's id.
                    return Err(StorageError::io(
                        &path,
                        std::io::Error::other("cannot move a deleted topic's log away"),
                    ));
                }
                replaced = true;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&marker, e)),
        }
        // The marker goes first: a crash right after the directory appears must not leave an
        // unmarked directory that a later topic of the same name would adopt.
        if !marker.exists() {
            fs::create_dir_all(&path).map_err(|e| StorageError::io(&path, e))?;
            write_atomically(&marker, id_text.as_bytes())?;
        }
        Ok(PreparedDir {
            name,
            path,
            replaced,
        })
    }

    /// Deletes the directory `dir_name`: renames it to `<dir_name>.<uuid>.deleting`, then
    /// removes that (a failure there is logged; the next [`LogDir::open`] retries). A missing
    /// directory is not an error; a failed rename is, and leaves the directory in place.
    pub fn delete(&self, dir_name: &str) -> Result<()> {
        let dir = self.root.join(dir_name);
        let doomed = self.root.join(format!(
            "{dir_name}.{}{DELETE_SUFFIX}",
            uuid::Uuid::new_v4().simple()
        ));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {
                remove_dir(&doomed);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&dir, e)),
        }
    }

    /// Moves the directory `dir_name` aside, data kept, as `<dir_name>.<uuid>.stray`, where
    /// [`LogDir::list`] no longer sees it; returns the new path.
    pub fn set_aside(&self, dir_name: &str) -> Result<PathBuf> {
        let dir = self.root.join(dir_name);
        let aside = self.root.join(format!(
            "{dir_name}.{}{STRAY_SUFFIX}",
            uuid::Uuid::new_v4().simple()
        ));
        fs::rename(&dir, &aside).map_err(|e| StorageError::io(&dir, e))?;
        Ok(aside)
    }

    /// The partition log directories with their markers' topic ids; directories being deleted
    /// or set aside, and those without a readable marker (not partition logs), are left out.
    pub fn list(&self) -> Result<Vec<LogDirEntry>> {
        let mut entries = Vec::new();
        for name in self.dir_names()? {
            if name.ends_with(DELETE_SUFFIX) || name.ends_with(STRAY_SUFFIX) {
                continue;
            }
            let Ok(marker) = fs::read_to_string(self.root.join(&name).join(MARKER_FILE)) else {
                continue;
            };
            let topic_id = uuid::Uuid::parse_str(marker.trim())
                .ok()
                .map(|id| id.into_bytes());
            entries.push(LogDirEntry { name, topic_id });
        }
        Ok(entries)
    }

    /// Names of the entries of the root directory (those that are valid UTF-8).
    fn dir_names(&self) -> Result<Vec<String>> {
        let entries = fs::read_dir(&self.root).map_err(|e| StorageError::io(&self.root, e))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }
}

/// How a marker spells a topic id: the usual UUID spelling, `8-4-4-4-12` lowercase hex digits.
pub fn marker_text(topic_id: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(topic_id).hyphenated().to_string()
}

fn remove_dir(dir: &Path) {
    if let Err(error) = fs::remove_dir_all(dir) {
        tracing::error!(dir = %dir.display(), %error, "cannot remove a directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: [u8; 16] = [9; 16];
    const NEW: [u8; 16] = [7; 16];
    const SEGMENT: &str = "00000000000000000000.log";

    fn names(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn open_creates_the_directory_and_removes_interrupted_deletions_only() {
        let data = tempfile::tempdir().unwrap();
        let root = data.path().join("logs");
        fs::create_dir_all(root.join("t-0.0123.deleting")).unwrap();
        fs::create_dir_all(root.join("t-1")).unwrap();
        fs::create_dir_all(root.join("t-2.0123.stray")).unwrap();
        let log_dir = LogDir::open(data.path()).unwrap();
        assert_eq!(log_dir.root(), root);
        assert_eq!(names(&root), ["t-1", "t-2.0123.stray"]);

        let fresh = tempfile::tempdir().unwrap();
        let log_dir = LogDir::open(fresh.path()).unwrap();
        assert!(log_dir.root().is_dir());
    }

    #[test]
    fn prepare_creates_adopts_and_replaces_a_deleted_topics_directory() {
        let data = tempfile::tempdir().unwrap();
        let log_dir = LogDir::open(data.path()).unwrap();

        let created = log_dir.prepare("orders", 3, OLD).unwrap();
        assert_eq!(created.name, "orders-3");
        assert_eq!(created.path, log_dir.root().join("orders-3"));
        assert!(!created.replaced);
        assert_eq!(
            fs::read_to_string(created.path.join(MARKER_FILE)).unwrap(),
            marker_text(OLD)
        );
        fs::write(created.path.join(SEGMENT), b"old records").unwrap();

        let adopted = log_dir.prepare("orders", 3, OLD).unwrap();
        assert_eq!(adopted, created);
        assert_eq!(
            fs::read(adopted.path.join(SEGMENT)).unwrap(),
            b"old records",
            "the topic's own directory is kept"
        );

        let replaced = log_dir.prepare("orders", 3, NEW).unwrap();
        assert!(replaced.replaced);
        assert_eq!(replaced.path, created.path);
        assert!(
            !replaced.path.join(SEGMENT).exists(),
            "a deleted topic's records are never served under the new id"
        );
        assert_eq!(
            fs::read_to_string(replaced.path.join(MARKER_FILE)).unwrap(),
            marker_text(NEW)
        );
        assert_eq!(names(log_dir.root()), ["orders-3"], "nothing left behind");
    }

    #[test]
    fn delete_set_aside_and_list() {
        let data = tempfile::tempdir().unwrap();
        let log_dir = LogDir::open(data.path()).unwrap();
        for (topic, id) in [("gone", OLD), ("kept", NEW), ("aside", NEW)] {
            let dir = log_dir.prepare(topic, 0, id).unwrap();
            fs::write(dir.path.join(SEGMENT), b"records").unwrap();
        }
        // Not a partition log, and a log whose marker holds no topic id.
        fs::create_dir_all(log_dir.root().join("unmarked")).unwrap();
        fs::create_dir_all(log_dir.root().join("garbled-0")).unwrap();
        fs::write(log_dir.root().join("garbled-0").join(MARKER_FILE), b"?").unwrap();

        log_dir.delete("gone-0").unwrap();
        log_dir
            .delete("never-0")
            .expect("a missing directory is deleted already");
        let aside = log_dir.set_aside("aside-0").unwrap();
        assert!(aside
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("aside-0.") && n.ends_with(STRAY_SUFFIX)));
        assert_eq!(fs::read(aside.join(SEGMENT)).unwrap(), b"records");
        assert!(log_dir.set_aside("never-0").is_err());

        let mut listed = log_dir.list().unwrap();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            listed,
            [
                LogDirEntry {
                    name: "garbled-0".to_owned(),
                    topic_id: None
                },
                LogDirEntry {
                    name: "kept-0".to_owned(),
                    topic_id: Some(NEW)
                },
            ]
        );
        let left = names(log_dir.root());
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(!left.iter().any(|n| n.starts_with("gone-0")), "{left:?}");
    }

    #[test]
    fn a_probe_of_a_healthy_directory_succeeds_and_leaves_nothing() {
        let data = tempfile::tempdir().unwrap();
        let log_dir = LogDir::open(data.path()).unwrap();
        log_dir.probe().unwrap();
        assert!(names(log_dir.root()).is_empty());
        fs::remove_dir_all(log_dir.root()).unwrap();
        assert!(log_dir.probe().is_err(), "a directory that is gone");
    }

    #[test]
    fn directory_names_round_trip() {
        assert_eq!(LogDir::dir_name("a-b", 12), "a-b-12");
        assert_eq!(LogDir::parse_dir_name("a-b-12"), Some(("a-b", 12)));
        assert_eq!(LogDir::parse_dir_name("a-b"), None);
        assert_eq!(LogDir::parse_dir_name("nodash"), None);
        assert_eq!(
            marker_text([0xab; 16]),
            "abababab-abab-abab-abab-abababababab"
        );
    }
}
