//! Real synchronization types: `std` atomics and threads, `parking_lot` locks.

pub(crate) mod sync {
    pub(crate) use std::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{
            fence, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering,
        };
    }

    /// A `parking_lot` mutex behind the crate's common lock API.
    #[derive(Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    /// The guard of [`Mutex`].
    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(parking_lot::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock()
        }
    }

    /// A `parking_lot` condition variable behind the crate's common API.
    #[derive(Default)]
    pub(crate) struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(parking_lot::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            self.0.wait(guard);
        }

        /// Waits until notified or until `deadline`; returns `true` when the
        /// deadline passed.
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            deadline: std::time::Instant,
        ) -> bool {
            self.0.wait_until(guard, deadline).timed_out()
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

/// A cell whose accesses go through closures, as loom's does (loom checks
/// each access against the others; here the closures are free).
pub(crate) mod cell {
    /// `std::cell::UnsafeCell` behind loom's `with`/`with_mut` API.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        #[inline(always)]
        pub(crate) const fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        /// Runs `f` with a pointer to read through.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a pointer to write through.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

pub(crate) mod thread {
    pub(crate) use std::thread::{current, yield_now, Builder, JoinHandle};
}

pub(crate) use std::thread_local;

/// A hint inside a bounded spin; under loom this yields to the scheduler.
#[inline]
pub(crate) fn spin_loop() {
    std::hint::spin_loop();
}

/// Waiting for another thread to finish a step it has begun (write a
/// slot it claimed, link a block): spins a little, then yields, so that
/// the thread waited for gets a CPU when it was preempted mid-step. (A pure
/// spin kept a few hundred waiting workers on two CPUs busy for the
/// scheduler's time slices, half a second, before the preempted one ran.)
pub(crate) use crossbeam_utils::Backoff;

/// How many rounds an idle worker spins before parking (loom: none).
pub(crate) const SPIN_ROUNDS: u32 = 16;

/// Marks the middle of a Dekker-style handshake: "my `SeqCst` RMW on one
/// word, then my `SeqCst` load of another", matched by the other side doing
/// the same in reverse. Real builds need nothing here: all `SeqCst`
/// operations lie in one total order, so one side must see the other's
/// write. loom models `SeqCst` accesses as `AcqRel` and only honours
/// `fence(SeqCst)`, so under loom this is that fence.
#[inline(always)]
pub(crate) fn handshake_fence() {}
