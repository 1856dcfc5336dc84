//! Kafka's log-dir failure handling (`ReplicaManager.handleLogDirFailure`), for this broker's
//! one log directory. A log whose write or fsync failed refuses appends until it is reopened;
//! it reports that through storage's `FailureReporter` (Kafka's `LogDirFailureChannel`), and
//! from then on:
//! 1. the directory is offline here at once: the reconciler takes every replica offline (the
//!    replica fetchers stop), and requests for partitions the image still has this broker lead
//!    answer KAFKA_STORAGE_ERROR;
//! 2. the controller is told (`LogDirOffline`), which moves the leaderships to healthy ISR
//!    members and takes this broker out of the ISRs (not as the last member, as a fence);
//! 3. a probe (write, fsync, remove a small file) runs until the directory takes writes again;
//! 4. the failed logs are retired; the reconciler reopens them with crash recovery (their
//!    unflushed tail may be gone) once the directory is online again;
//! 5. the controller is told (`LogDirOnline`), and the directory is online here again: the
//!    replicas follow and rejoin ISRs the normal way.
//!
//! Steps 2 and 5 wait until this broker's own image shows the change, so the reconciler never
//! acts on an image from before it: a replica that lost its unflushed tail must not lead again
//! at the leader epoch it had.

use std::sync::Arc;
use std::time::Duration;

use streambus_raft::command::{BrokerId, LogDirOffline, LogDirOnline};
use streambus_raft::{MetadataCommand, MetadataImage, MetadataNode, MetadataResponse};
use streambus_raft::{RaftError, RegistrationState};
use streambus_storage::FailureReporter;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::maintenance::checkpoint_entry;
use super::manager::PartitionManager;
use super::Wake;

/// How often a failed directory is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The pause before telling the controller again after a failed attempt.
const REPORT_BACKOFF: Duration = Duration::from_millis(500);
/// How long a report waits for this broker's image to show it before it is sent again.
const IMAGE_WAIT: Duration = Duration::from_secs(10);

/// Whether the log directory serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDirState {
    Online,
    /// A log failed: every replica is offline until the directory is recovered.
    Offline,
}

/// The log directory's state, shared by the logs (which report failures), the reconciler and
/// request lookups (which read it) and the recovery task (which brings it back).
#[derive(Debug)]
pub struct LogDirHealth {
    state: watch::Sender<LogDirState>,
}

impl LogDirHealth {
    pub fn new() -> LogDirHealth {
        LogDirHealth {
            state: watch::Sender::new(LogDirState::Online),
        }
    }

    pub fn is_online(&self) -> bool {
        *self.state.borrow() == LogDirState::Online
    }

    pub fn subscribe(&self) -> watch::Receiver<LogDirState> {
        self.state.subscribe()
    }

    /// What a log opened in the directory reports its failures to: the directory goes offline.
    /// Runs under the failing log's lock, so it only flips the state.
    pub fn reporter(self: &Arc<Self>) -> FailureReporter {
        let health = Arc::clone(self);
        FailureReporter::new(move |dir, error| {
            let went_offline = health.state.send_if_modified(|state| {
                let was_online = *state == LogDirState::Online;
                *state = LogDirState::Offline;
                was_online
            });
            if went_offline {
                tracing::error!(log = %dir.display(), %error, "log directory offline: a log failed; its replicas are offline until the directory is recovered");
            }
        })
    }

    fn set_online(&self) {
        self.state.send_replace(LogDirState::Online);
    }
}

impl Default for LogDirHealth {
    fn default() -> Self {
        LogDirHealth::new()
    }
}

/// What the recovery task needs of the metadata quorum.
#[derive(Debug)]
pub struct Quorum {
    pub node: MetadataNode,
    pub registration: watch::Receiver<RegistrationState>,
    pub images: watch::Receiver<Arc<MetadataImage>>,
}

impl PartitionManager {
    /// Recovers the log directory each time a log fails, until `shutdown` (see the module
    /// documentation for the steps).
    pub async fn run_log_dir_recovery(
        self: Arc<Self>,
        mut quorum: Quorum,
        shutdown: CancellationToken,
    ) {
        let mut state = self.log_dir_health.subscribe();
        // Each pass recovers from one failure.
        loop {
            tokio::select! {
                failed = state.wait_for(|s| *s == LogDirState::Offline) => {
                    if failed.is_err() {
                        return;
                    }
                }
                () = shutdown.cancelled() => return,
            }
            if !self.report(&mut quorum, true, &shutdown).await
                || !self.probe_until_healthy(&shutdown).await
            {
                return;
            }
            let manager = self.clone();
            if crate::blocking::spawn(move || manager.retire_failed_logs())
                .await
                .is_err()
            {
                tracing::error!("retiring the failed logs panicked");
            }
            if !self.report(&mut quorum, false, &shutdown).await {
                return;
            }
            self.log_dir_health.set_online();
            tracing::info!("log directory online again: its logs reopen with recovery");
        }
    }

    /// Probes the directory every [`PROBE_INTERVAL`] until it takes writes; false at shutdown.
    async fn probe_until_healthy(self: &Arc<Self>, shutdown: &CancellationToken) -> bool {
        let mut attempts: u64 = 0;
        // Each pass is one probe; the shutdown token ends the loop.
        loop {
            tokio::select! {
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
                () = shutdown.cancelled() => return false,
            }
            attempts += 1;
            let manager = self.clone();
            let probe = crate::blocking::spawn(move || manager.log_dir.probe()).await;
            match probe {
                Err(_) => tracing::error!("log directory probe panicked"),
                Ok(Ok(())) => {
                    tracing::info!(attempts, "log directory probe succeeded");
                    return true;
                }
                Ok(Err(error)) => tracing::warn!(attempts, %error, "log directory probe failed"),
            }
        }
    }

    /// Takes every hosted partition out of the registry and stops its log from changing files
    /// (blocking). The reconciler opens them again, with recovery, once the directory is
    /// online; their high watermarks are kept for that.
    fn retire_failed_logs(&self) {
        let partitions: Vec<_> = self.write().drain().map(|(_, p)| p).collect();
        {
            let mut checkpointed = self.checkpointed();
            for partition in &partitions {
                checkpointed.insert(partition.dir_name.clone(), checkpoint_entry(partition));
            }
        }
        for partition in partitions {
            partition.go_offline();
            // Never closed: a clean close would mark the log as needing no recovery.
            partition.log().retire();
            partition.wake(Wake::All);
        }
    }

    /// Tells the controller the directory is `offline` (or back), again until this broker's
    /// own image shows it for its current registration; false at shutdown.
    async fn report(
        &self,
        quorum: &mut Quorum,
        offline: bool,
        shutdown: &CancellationToken,
    ) -> bool {
        let me = self.broker_id;
        // Each pass is one attempt; the shutdown token ends the loop.
        loop {
            let registered = match *quorum.registration.borrow_and_update() {
                RegistrationState::Registered { broker_epoch, .. } => Some(broker_epoch),
                RegistrationState::Unregistered => None,
            };
            let Some(broker_epoch) = registered else {
                tokio::select! {
                    changed = quorum.registration.changed() => if changed.is_err() { return false },
                    () = shutdown.cancelled() => return false,
                }
                continue;
            };
            let command = log_dir_command(me, broker_epoch, offline);
            let written = tokio::select! {
                written = quorum.node.write(command) => written,
                () = shutdown.cancelled() => return false,
            };
            match written {
                Ok(MetadataResponse::LogDirChanged { partitions_changed }) => {
                    tracing::info!(
                        offline,
                        partitions_changed,
                        "log directory state reported to the controller"
                    );
                    let shown = |image: &Arc<MetadataImage>| {
                        image.broker(me).is_some_and(|b| {
                            b.broker_epoch == broker_epoch && b.log_dir_offline == offline
                        })
                    };
                    let applied = tokio::select! {
                        applied = tokio::time::timeout(IMAGE_WAIT, quorum.images.wait_for(shown)) => {
                            matches!(applied, Ok(Ok(_)))
                        }
                        () = shutdown.cancelled() => return false,
                    };
                    if applied {
                        return true;
                    }
                }
                Ok(MetadataResponse::Rejected(rejection)) | Err(RaftError::Rejected(rejection)) => {
                    // A registration that changed meanwhile: sent again with the new epoch.
                    tracing::warn!(offline, ?rejection, "log directory report refused");
                }
                Ok(other) => tracing::warn!(
                    offline,
                    ?other,
                    "unexpected answer to a log directory report"
                ),
                Err(error) => tracing::warn!(offline, %error, "log directory report not confirmed"),
            }
            tokio::select! {
                () = tokio::time::sleep(REPORT_BACKOFF) => {}
                () = shutdown.cancelled() => return false,
            }
        }
    }
}

fn log_dir_command(broker_id: BrokerId, broker_epoch: i64, offline: bool) -> MetadataCommand {
    if offline {
        MetadataCommand::LogDirOffline(LogDirOffline {
            broker_id,
            broker_epoch,
        })
    } else {
        MetadataCommand::LogDirOnline(LogDirOnline {
            broker_id,
            broker_epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_reported_failure_takes_the_directory_offline_once() {
        let health = Arc::new(LogDirHealth::new());
        let mut state = health.subscribe();
        assert!(health.is_online());
        let reporter = health.reporter();
        let error = streambus_storage::StorageError::AppendsBlocked { dir: "t-0".into() };
        reporter.report(Path::new("t-0"), &error);
        assert!(!health.is_online());
        assert!(state.has_changed().unwrap());
        state.borrow_and_update();
        reporter.report(Path::new("t-1"), &error);
        assert!(
            !state.has_changed().unwrap(),
            "already offline: no second change"
        );
        health.set_online();
        assert!(health.is_online());
    }
}
