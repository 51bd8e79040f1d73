//! Waiting for the pool: `wait_idle`, drain waits, and blocked workers.

use super::admission::{pending, queued};
use super::registry::Registry;
use super::WorkerThread;
use crate::loom::handshake_fence;
use crate::loom::sync::atomic::Ordering::SeqCst;
use crate::loom::sync::Arc;
use crate::metrics::{LockCounted, WorkerState};
use crate::task::Waiter;
use std::time::Instant;

impl Registry {
    /// Waits until `cond(admission word)` holds, or `deadline` passes
    /// (returns `false` then). On this pool's worker, it helps meanwhile.
    pub(crate) fn wait_for(&self, cond: &dyn Fn(u64) -> bool, deadline: Option<Instant>) -> bool {
        if cond(self.admission.load(SeqCst)) {
            return true;
        }
        let id = self.next_waiter_id.fetch_add(1, SeqCst);
        let worker = self.own_worker();
        let waiter = Waiter::current();
        let parker = match &waiter {
            Waiter::Parker(p) => Arc::clone(p),
            _ => unreachable!("the current thread waits on a parker"),
        };
        self.idle_list.lock().push((id, waiter));
        self.idle_waiters.fetch_add(1, SeqCst);
        // Handshake with `retire`: this registration, then the loads of the
        // admission word below.
        handshake_fence();
        let mut met = true;
        match worker {
            Some(w) => w.wait_until(&|| cond(self.admission.load(SeqCst))),
            None => {
                while !cond(self.admission.load(SeqCst)) {
                    match deadline {
                        None => parker.park(),
                        Some(d) => {
                            if Instant::now() >= d {
                                met = cond(self.admission.load(SeqCst));
                                break;
                            }
                            parker.park_until(d);
                        }
                    }
                }
            }
        }
        self.idle_waiters.fetch_sub(1, SeqCst);
        self.idle_list.lock().retain(|(i, _)| *i != id);
        met
    }

    /// Blocks until nothing is queued or running. On this pool's own worker
    /// (a task calling it), "running" excludes the tasks that are themselves
    /// in `wait_idle`, and the worker runs queued work while it waits.
    pub(crate) fn wait_idle(&self) {
        if self.own_worker().is_some() {
            self.inside_idle.fetch_add(1, SeqCst);
            self.wait_for(
                &|w| queued(w) == 0 && pending(w) <= self.inside_idle.load(SeqCst),
                None,
            );
            self.inside_idle.fetch_sub(1, SeqCst);
            // Others waiting may now be satisfied.
            self.wake_idle_waiters();
        } else {
            self.wait_for(&|w| pending(w) == 0, None);
        }
    }

    pub(crate) fn wake_idle_waiters(&self) {
        // SeqCst: pairs with the registration in `wait_for` (either the
        // waiter sees the new word or this sees the waiter).
        if self.idle_waiters.load(SeqCst) > 0 {
            for (_, waiter) in self
                .idle_list
                .lock_counted(&self.counters.locks.idle_waiters)
                .iter()
            {
                waiter.wake_ref();
            }
        }
    }

    /// Counts the calling worker as blocked until the guard drops.
    pub(crate) fn block_guard(&self) -> BlockedGuard<'_> {
        // Relaxed: a gauge, read by metrics (and by a future supervisor).
        self.blocked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let worker = self.own_worker_index();
        if let Some(i) = worker {
            self.set_state(i, WorkerState::Blocked);
        }
        BlockedGuard(self, worker)
    }

    /// Counts the calling thread, if it is a worker of another pool, as
    /// waiting for room in this pool's queue, until the guard drops.
    pub(crate) fn backpressure_guard(&self) -> Option<BackpressureGuard> {
        let worker = WorkerThread::current().filter(|w| !std::ptr::eq(w.registry(), self))?;
        let upstream = worker.registry();
        // Relaxed: a gauge, read by metrics and by the supervisor's
        // samples, which order nothing by it.
        upstream
            .backpressured
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(BackpressureGuard(upstream))
    }
}

/// Un-counts a worker waiting for room downstream on drop (see
/// [`Registry::backpressure_guard`]).
pub(crate) struct BackpressureGuard(&'static Registry);

impl Drop for BackpressureGuard {
    fn drop(&mut self) {
        // Relaxed: as in `backpressure_guard`.
        self.0
            .backpressured
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Un-counts a blocked worker on drop (see [`Registry::block_guard`]).
pub(crate) struct BlockedGuard<'a>(&'a Registry, Option<usize>);

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.1 {
            // The blocking wait happens inside a running task.
            self.0.set_state(i, WorkerState::Running);
        }
        self.0
            .blocked
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
