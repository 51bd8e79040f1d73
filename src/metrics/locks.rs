//! Contention statistics of the pool's own locks, and the counted lock.

use super::clock::ticks;
use crate::loom::sync::{Mutex, MutexGuard};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Contention of one of the pool's locks. Relaxed throughout: two tallies
/// for the figures, which order nothing else.
#[derive(Default)]
pub(crate) struct LockStat {
    contended: AtomicU64,
    wait_ticks: AtomicU64,
}

impl LockStat {
    /// Counts an acquisition that found the lock held (before waiting).
    #[inline]
    pub(crate) fn contended(&self) {
        self.contended.fetch_add(1, Relaxed);
    }

    /// Adds the time one contended acquisition waited.
    #[inline]
    pub(crate) fn waited(&self, ticks: u64) {
        self.wait_ticks.fetch_add(ticks, Relaxed);
    }
}

macro_rules! locks {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Contention statistics of every lock the pool takes.
        #[derive(Default)]
        pub(crate) struct LockStats {
            $( $(#[$doc])* pub(crate) $name: LockStat, )*
        }

        impl LockStats {
            pub(crate) fn report(&self, ns_per_tick: f64) -> Vec<LockContention> {
                vec![$(
                    LockContention {
                        name: stringify!($name),
                        contended: self.$name.contended.load(Relaxed),
                        wait: crate::metrics::clock::Calibration::to_duration(
                            self.$name.wait_ticks.load(Relaxed),
                            ns_per_tick,
                        ),
                    },
                )*]
            }
        }
    };
}

locks! {
    /// The sleeper list (park, wake).
    sleepers,
    /// Workers' parking spots.
    parker,
    /// Threads waiting for idleness or shutdown.
    idle_waiters,
    /// Submitters blocked for room.
    room,
    /// Worker thread handles (shutdown).
    threads,
    /// Keyed shards' task queues.
    shard,
    /// Spawned tasks' result slots, when a worker completes one.
    result_slot,
}

/// How contended one of the pool's locks was.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockContention {
    /// The lock's name.
    pub name: &'static str,
    /// Acquisitions that found it held.
    pub contended: u64,
    /// Total time those acquisitions waited.
    pub wait: Duration,
}

/// Locking that counts contention in a [`LockStat`].
pub(crate) trait LockCounted<T> {
    /// Locks, counting the acquisition in `stat` if it found the lock held:
    /// the uncontended path is one `try_lock`; only the slow path is timed.
    fn lock_counted(&self, stat: &LockStat) -> MutexGuard<'_, T>;
}

impl<T> LockCounted<T> for Mutex<T> {
    #[inline]
    fn lock_counted(&self, stat: &LockStat) -> MutexGuard<'_, T> {
        if let Some(guard) = self.try_lock() {
            return guard;
        }
        stat.contended();
        let start = ticks();
        let guard = self.lock();
        stat.waited(ticks().saturating_sub(start));
        guard
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn contention_is_counted_only_when_the_lock_is_found_held() {
        let stat = LockStat::default();
        let lock = Mutex::new(0u32);
        // One thread: never contended.
        for _ in 0..10_000 {
            *lock.lock_counted(&stat) += 1;
        }
        assert_eq!(stat.contended.load(Relaxed), 0);
        // Held by this thread while another tries: counted once, with a
        // measured wait.
        let held = lock.lock();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| *lock.lock_counted(&stat) += 1);
            while stat.contended.load(Relaxed) == 0 {
                std::thread::yield_now();
            }
            drop(held);
            waiter.join().unwrap();
        });
        assert_eq!(stat.contended.load(Relaxed), 1);
        assert!(stat.wait_ticks.load(Relaxed) > 0);
        assert_eq!(*lock.lock(), 10_001);
    }
}
