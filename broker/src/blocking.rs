//! Blocking work from async code. [`spawn`] is the broker's only way onto tokio's blocking
//! threads: it marks the thread while the work runs, so [`may_block`] can tell a blocking task
//! from a runtime worker (tokio gives both the same thread names and runtime context).
//!
//! Debug builds install [`may_block`] as storage's check on every partition log lock
//! ([`install_check`]): a log lock is held across writes and fsyncs, and a runtime worker that
//! waited for one would stall every task it serves.

use std::cell::Cell;

use tokio::task::JoinHandle;

thread_local! {
    /// Set while this thread runs work given to [`spawn`].
    static IN_BLOCKING_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` on tokio's blocking threads, marked as allowed to block.
pub fn spawn<F, R>(work: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let _marked = Marked::enter();
        work()
    })
}

/// Whether the calling thread may block: it runs work given to [`spawn`], or it is outside any
/// tokio runtime (a plain thread, a test body without a runtime).
pub fn may_block() -> bool {
    IN_BLOCKING_TASK.get() || tokio::runtime::Handle::try_current().is_err()
}

/// In debug builds, makes every partition log lock assert [`may_block`]. Idempotent.
pub fn install_check() {
    if cfg!(debug_assertions) {
        streambus_storage::install_blocking_check(may_block);
    }
}

/// Marks the current thread for the lifetime of the guard; unmarks it even when the work
/// panics, since blocking threads are reused for other work.
struct Marked {
    was: bool,
}

impl Marked {
    fn enter() -> Marked {
        Marked {
            was: IN_BLOCKING_TASK.replace(true),
        }
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        IN_BLOCKING_TASK.set(self.was);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn runtime_workers_may_not_block_and_blocking_tasks_may() {
        let on_worker = tokio::spawn(async { may_block() }).await.unwrap();
        assert!(!on_worker, "a runtime worker");
        assert!(spawn(may_block).await.unwrap(), "a marked blocking task");
        let unmarked = tokio::task::spawn_blocking(may_block).await.unwrap();
        assert!(
            !unmarked,
            "tokio's blocking threads count only through `spawn`"
        );
        let plain = std::thread::spawn(may_block).join().unwrap();
        assert!(plain, "a thread outside the runtime");
    }

    fn open_log(dir: &std::path::Path) -> streambus_storage::Log {
        streambus_storage::Log::open(dir, Default::default(), Default::default()).expect("opens")
    }

    /// Re-raises a task's panic on the test thread, so `should_panic` sees it.
    fn unwrap_task<T>(joined: Result<T, tokio::task::JoinError>) -> T {
        joined.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "runtime worker thread")]
    fn a_log_lock_taken_on_a_runtime_worker_panics_in_debug_builds() {
        install_check();
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        runtime.block_on(async move {
            // `config` takes the state lock, as an append or a flush would.
            unwrap_task(tokio::spawn(async move { log.config() }).await);
        });
    }

    #[test]
    fn log_locks_on_marked_blocking_threads_and_lock_free_getters_on_workers_pass_the_check() {
        install_check();
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(open_log(dir.path()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let getters = log.clone();
            let ends = tokio::spawn(async move {
                (
                    getters.log_start_offset(),
                    getters.log_end_offset(),
                    getters.latest_epoch(),
                )
            });
            assert_eq!(unwrap_task(ends.await), (0, 0, None));
            let locked = log.clone();
            unwrap_task(spawn(move || locked.flush()).await).expect("flushes");
        });
    }
}
