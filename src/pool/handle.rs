//! `PoolHandle`: a cheap, clonable reference to a pool.

use super::methods::pool_methods;
use crate::control::pause::PauseGuard;
use crate::error::SubmitError;
use crate::loom::sync::Arc;
use crate::metrics::Metrics;
use crate::sched::{Registry, Wait};
use crate::task::job::Execute;
use crate::task::{JoinHandle, Slot, Spawn};
use std::fmt;
use std::hash::Hash;

/// A clonable reference to a pool: submit tasks, wait, read metrics.
///
/// It does not keep the pool's threads alive: once the owning [`Pool`](crate::Pool) shuts
/// down, submissions through any handle fail with
/// [`SubmitError::ShutDown`]. Capture one in a task to submit from inside.
#[derive(Clone)]
pub struct PoolHandle {
    pub(crate) registry: Arc<Registry>,
}

impl fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolHandle")
            .field("name", &self.registry.config.name)
            .field("workers", &self.registry.live_workers())
            .finish()
    }
}

impl PoolHandle {
    pool_methods!();
}

// A panic while a thread uses the pool cannot leave it inconsistent: task
// panics are caught inside the pool, its locks do not poison, and every
// protocol step is a single atomic transition or under a lock. So a pool
// may be used across `catch_unwind`.
impl std::panic::UnwindSafe for PoolHandle {}
impl std::panic::RefUnwindSafe for PoolHandle {}
