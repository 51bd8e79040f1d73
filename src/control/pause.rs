//! The pause guard: resumes its pool when dropped.

use crate::sched::Registry;

/// Resumes its pool when dropped (see
/// [`PoolHandle::pause_guard`](crate::PoolHandle::pause_guard)).
#[must_use = "the pool resumes when the guard drops"]
pub struct PauseGuard<'a>(&'a Registry);

impl<'a> PauseGuard<'a> {
    /// Pauses `registry` until the guard drops.
    pub(crate) fn new(registry: &'a Registry) -> Self {
        registry.pause();
        PauseGuard(registry)
    }
}

impl std::fmt::Debug for PauseGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PauseGuard").finish_non_exhaustive()
    }
}

impl Drop for PauseGuard<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}
