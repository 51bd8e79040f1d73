//! The worker running on this thread, as the task layer sees it.
//!
//! Handles, latches and task bodies sit below the scheduler, yet a handle
//! joined on a worker must help that worker's pool instead of blocking it.
//! The scheduler's worker implements [`Worker`] and registers itself here
//! for the life of its thread (as tokio's tasks reach their scheduler
//! through a trait), so this layer never names the scheduler's types.

use super::parker::Parker;
use crate::loom::sync::Arc;
use crate::loom::thread_local;
use crate::metrics::LockStats;
use std::cell::Cell;

/// What a task-layer wait may ask of the worker it runs on.
pub(crate) trait Worker {
    /// The parker this worker sleeps on (whoever completes what it waits
    /// for unparks it).
    fn parker(&self) -> &Arc<Parker>;
    /// Runs other work of its pool until `done()` holds.
    fn wait_until(&self, done: &dyn Fn() -> bool);
    /// The identity of its pool (an address; compared, never followed).
    fn pool_id(&self) -> usize;
    /// Whether it is running keyed shard `shard` (at any depth of its
    /// stack: a shard's tasks never run elsewhere meanwhile).
    fn runs_shard(&self, shard: usize) -> bool;
    /// Its pool's lock statistics.
    fn locks(&self) -> &LockStats;
    /// Runs `wait`, counting the worker as blocked meanwhile.
    fn blocked(&self, wait: &mut dyn FnMut());
    /// Names (or, with `None`, un-names) the task it runs now.
    fn set_task_name(&self, name: Option<std::sync::Arc<str>>);
    /// Whether its pool is abandoning its queued tasks (`shutdown_now`, or
    /// `shutdown_timeout` past its deadline).
    fn abandoning(&self) -> bool;
}

type Current = Cell<Option<*const dyn Worker>>;

#[cfg(not(loom))]
thread_local! {
    static CURRENT: Current = const { Cell::new(None) };
}

// loom's `thread_local!` takes no `const` initializer.
#[cfg(loom)]
thread_local! {
    static CURRENT: Current = Cell::new(None);
}

/// Registers `worker` as this thread's worker until [`leave`].
///
/// # Safety
/// `worker` must stay valid, and on this thread, until `leave` is called
/// on this thread.
pub(crate) unsafe fn enter(worker: *const dyn Worker) {
    CURRENT.with(|c| c.set(Some(worker)));
}

/// Ends the registration of [`enter`].
pub(crate) fn leave() {
    CURRENT.with(|c| c.set(None));
}

/// The worker running on this thread, if any (of any pool).
#[inline]
pub(crate) fn worker() -> Option<&'static dyn Worker> {
    let ptr = CURRENT.with(Cell::get)?;
    // SAFETY: `enter`'s contract keeps the worker valid on this thread
    // until `leave`, and every caller runs on this thread inside that
    // window (tasks run from the worker's loop). The reference does not
    // leave the thread: `dyn Worker` is not `Sync`.
    Some(unsafe { &*ptr })
}
