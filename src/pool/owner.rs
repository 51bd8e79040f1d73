//! `Pool`: owns a pool's threads; dropping it shuts the pool down.

use super::builder::Builder;
use super::handle::PoolHandle;
use super::methods::pool_methods;
use crate::control::pause::PauseGuard;
use crate::error::{BuildError, SubmitError};
use crate::loom::sync::Arc;
use crate::metrics::Metrics;
use crate::sched::{Registry, ShutdownMode, ShutdownReport, Wait};
use crate::task::job::Execute;
use crate::task::{JoinHandle, Slot, Spawn};
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A work-stealing thread pool. Owns its worker threads: dropping it shuts
/// it down (draining every queued task) and joins them.
///
/// `Pool` and [`PoolHandle`] carry the same submission, waiting and
/// observation methods; [`Pool::handle`] gives a clonable handle to pass
/// into tasks, and only the `Pool` shuts the pool down.
///
/// ```
/// use ebbtide::Pool;
/// let pool = Pool::builder().workers(2).build()?;
/// let handles: Vec<_> = (0..4u64)
///     .map(|i| pool.spawn(move || i * i))
///     .collect::<Result<_, _>>()?;
/// let squares: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
/// assert_eq!(squares, [0, 1, 4, 9]);
/// let report = pool.shutdown();
/// assert_eq!(report.completed, 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool {
    pub(crate) registry: Arc<Registry>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name())
            .field("workers", &self.num_workers())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

impl Pool {
    pool_methods!();

    /// A pool with default settings: one worker per CPU.
    ///
    /// # Errors
    /// [`BuildError::Spawn`] if the OS refuses to start a thread.
    pub fn new() -> Result<Pool, BuildError> {
        Builder::new().build()
    }

    /// A [`Builder`] to configure a pool.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_registry(registry: Arc<Registry>) -> Pool {
        Pool { registry }
    }

    /// A clonable handle for submitting from elsewhere (e.g. inside tasks).
    pub fn handle(&self) -> PoolHandle {
        PoolHandle {
            registry: Arc::clone(&self.registry),
        }
    }

    /// Stops accepting tasks, runs every queued task, and joins every
    /// worker thread. Idempotent; several threads may call it at once and
    /// all return once the pool is down.
    ///
    /// Called from a task running on this pool, it closes admission and
    /// returns without waiting (it cannot wait for its own task); the
    /// workers drain the queue and exit on their own.
    pub fn shutdown(&self) -> ShutdownReport {
        self.registry.shutdown(ShutdownMode::Drain)
    }

    /// Like [`shutdown`](Self::shutdown), but runs queued tasks only until
    /// `timeout` has passed; then abandons what has not started (each
    /// closure is dropped and its handle resolves to
    /// [`TaskError::Abandoned`](crate::TaskError::Abandoned)). Tasks running
    /// then are counted in `still_running`; the call does not wait for them.
    /// A `timeout` too far off for the clock (`Duration::MAX`) is
    /// [`shutdown`](Self::shutdown).
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownReport {
        // A timeout past what an `Instant` holds drains everything.
        let mode = Instant::now()
            .checked_add(timeout)
            .map_or(ShutdownMode::Drain, ShutdownMode::Deadline);
        self.registry.shutdown(mode)
    }

    /// Abandons every queued task now and lets running tasks finish (they
    /// are counted in `still_running`; the call does not wait for them).
    pub fn shutdown_now(&self) -> ShutdownReport {
        self.registry.shutdown(ShutdownMode::Now)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::panic::UnwindSafe for Pool {}
impl std::panic::RefUnwindSafe for Pool {}
