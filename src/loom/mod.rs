//! The one place that chooses between the real synchronisation types and
//! loom's model-checked ones.
//!
//! Everything in the crate that takes part in a concurrency protocol imports
//! its atomics, locks, condition variables, cells, threads and thread-locals
//! from here, never from `std`/`parking_lot` directly. Built with
//! `RUSTFLAGS="--cfg loom"`, the same code runs under loom's scheduler, which
//! explores the interleavings of the pool's protocols (sleep/wake, shutdown
//! against submit, join latches).
//!
//! Both implementations expose one API: `Mutex::lock` returns a guard (no
//! poisoning) and `Condvar::wait` takes `&mut guard`.

#[cfg(not(loom))]
mod real;
#[cfg(not(loom))]
pub(crate) use real::*;

#[cfg(loom)]
mod model;
#[cfg(loom)]
pub(crate) use model::*;

impl<T> sync::Mutex<T> {
    /// Locks, counting the acquisition in `stat` if it found the lock held:
    /// the uncontended path is one `try_lock`; only the slow path is timed.
    #[inline]
    pub(crate) fn lock_counted(&self, stat: &crate::metrics::LockStat) -> sync::MutexGuard<'_, T> {
        if let Some(guard) = self.try_lock() {
            return guard;
        }
        stat.contended();
        let start = crate::clock::ticks();
        let guard = self.lock();
        stat.waited(crate::clock::ticks().saturating_sub(start));
        guard
    }
}
