//! Kafka's `LogDirFailureChannel`: how a log tells its owner that an i/o failure took it out of
//! service. After a failed write or fsync a log refuses appends until it is reopened; reported
//! here, the broker takes the whole log directory offline (its leaderships move to healthy
//! replicas) instead of keeping a leader that can no longer append.
//!
//! Also the one place the crate's fsync failpoint is evaluated (the `failpoints` feature, for
//! fault-injection tests; without it `fail_point!` compiles to nothing).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Result, StorageError};

/// The failpoint that fails a log's data fsync and the log-directory probe's:
/// `FAILPOINTS=log::fsync=1*return` fails the next one.
pub const FSYNC_FAILPOINT: &str = "log::fsync";

type Report = dyn Fn(&Path, &StorageError) + Send + Sync;

/// Where a log reports the failure that made it refuse appends. The default reports nowhere
/// (a log used on its own).
#[derive(Clone, Default)]
pub struct FailureReporter(Option<Arc<Report>>);

impl FailureReporter {
    /// Calls `report(partition directory, error)` on each failure. It runs with the log's
    /// state lock held: it must return quickly and must not call back into the log.
    pub fn new(report: impl Fn(&Path, &StorageError) + Send + Sync + 'static) -> FailureReporter {
        FailureReporter(Some(Arc::new(report)))
    }

    /// Reports that the log in `dir` refuses appends after `error` (logs call this).
    pub fn report(&self, dir: &Path, error: &StorageError) {
        if let Some(report) = &self.0 {
            report(dir, error);
        }
    }
}

impl fmt::Debug for FailureReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "FailureReporter(set)"
        } else {
            "FailureReporter(none)"
        })
    }
}

/// Called before an fsync of `path`: an injected failure when the fsync failpoint is
/// configured to return, else nothing.
pub(crate) fn before_fsync(path: &Path) -> Result<()> {
    fail::fail_point!(FSYNC_FAILPOINT, |_| Err(StorageError::io(
        path,
        std::io::Error::other("injected fsync failure (failpoint log::fsync)")
    )));
    let _ = path;
    Ok(())
}
