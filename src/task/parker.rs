//! How a thread sleeps while it waits: a [`Parker`] (a one-token parking
//! spot, the only primitive any wait in the crate sleeps on) and the
//! [`Waiter`] a result or an event wakes.

use crate::loom::sync::{Arc, Condvar, Mutex, MutexGuard};
use crate::loom::thread_local;
use crate::metrics::{LockCounted, LockStats};
use std::task::Waker;

/// A one-token parking spot: `unpark` before `park` makes `park` return at
/// once (the token is kept), so a wake-up can never fall between a check and
/// the sleep.
#[derive(Default)]
pub(crate) struct Parker {
    notified: Mutex<bool>,
    cv: Condvar,
    /// Where a worker's parker counts contention (`None` for the parkers
    /// of threads outside any pool).
    stats: Option<std::sync::Arc<LockStats>>,
}

impl Parker {
    pub(crate) fn for_worker(stats: std::sync::Arc<LockStats>) -> Self {
        Parker {
            stats: Some(stats),
            ..Parker::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        match &self.stats {
            Some(stats) => self.notified.lock_counted(&stats.parker),
            None => self.notified.lock(),
        }
    }

    /// Blocks until the token is set, then clears it.
    pub(crate) fn park(&self) {
        let mut notified = self.lock();
        while !*notified {
            self.cv.wait(&mut notified);
        }
        *notified = false;
    }

    /// Blocks until the token is set (then clears it) or `deadline` passes.
    pub(crate) fn park_until(&self, deadline: std::time::Instant) {
        let mut notified = self.lock();
        while !*notified {
            if self.cv.wait_until(&mut notified, deadline) {
                return;
            }
        }
        *notified = false;
    }

    /// Whether the token is set (a wake-up not yet taken by `park`).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn is_unparked(&self) -> bool {
        *self.lock()
    }

    /// Sets the token and wakes the parked thread, if any.
    pub(crate) fn unpark(&self) {
        *self.lock() = true;
        self.cv.notify_one();
    }
}

/// Who to wake when a result arrives.
#[derive(Clone)]
pub(crate) enum Waiter {
    /// Nobody waits.
    None,
    /// A thread sleeping on its `Parker`: a worker (possibly parked while it
    /// helps its pool) or an outside thread (see [`thread_parker`]).
    Parker(Arc<Parker>),
    /// An async task.
    Waker(Waker),
}

impl Waiter {
    pub(crate) fn wake(self) {
        match self {
            Waiter::None => {}
            Waiter::Parker(p) => p.unpark(),
            Waiter::Waker(w) => w.wake(),
        }
    }

    /// Wakes the waiter, keeping it registered.
    pub(crate) fn wake_ref(&self) {
        match self {
            Waiter::None => {}
            Waiter::Parker(p) => p.unpark(),
            Waiter::Waker(w) => w.wake_by_ref(),
        }
    }

    /// The calling thread as a waiter: its worker's parker, or its own.
    pub(crate) fn current() -> Waiter {
        match super::current::worker() {
            Some(worker) => Waiter::Parker(Arc::clone(worker.parker())),
            None => Waiter::Parker(thread_parker()),
        }
    }
}

thread_local! {
    static THREAD_PARKER: Arc<Parker> = Arc::new(Parker::default());
}

/// The calling thread's own parker, for waits outside any pool. Every wait
/// in the crate sleeps on a `Parker` (never `thread::park`), so a wake-up
/// meant for one wait can only make another wait re-check its condition.
pub(crate) fn thread_parker() -> Arc<Parker> {
    THREAD_PARKER.with(Arc::clone)
}
