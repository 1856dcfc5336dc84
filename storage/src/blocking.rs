//! A debug-build check that a partition log's locks are taken only on threads that may block.
//!
//! The log holds its state lock across writes and its flush lock across fsyncs, so a caller
//! on an async runtime's worker thread could stall every task that worker serves. Storage knows
//! nothing of async runtimes: the broker installs what "may block" means for its threads
//! ([`install_blocking_check`]), and every lock acquisition asserts it in debug builds.
//! Release builds never consult the check.

use std::sync::OnceLock;

/// Answers whether the calling thread may block (take a lock held across file I/O).
pub type MayBlock = fn() -> bool;

static MAY_BLOCK: OnceLock<MayBlock> = OnceLock::new();

/// Installs the check every log lock asserts in debug builds. The first call wins, since the
/// check describes the process's threads; returns whether this call installed it.
pub fn install_blocking_check(may_block: MayBlock) -> bool {
    MAY_BLOCK.set(may_block).is_ok()
}

/// Panics, in debug builds with a check installed, when the calling thread may not block.
#[inline]
pub(crate) fn debug_assert_may_block() {
    #[cfg(debug_assertions)]
    if let Some(may_block) = MAY_BLOCK.get() {
        assert!(
            may_block(),
            "a partition log lock taken on an async runtime worker thread: run this call on a \
             blocking thread (lock-free getters excepted)"
        );
    }
}
