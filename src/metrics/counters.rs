//! Per-thread counters: cache-padded slots, a single writer each.

use super::locks::LockStats;
use super::status::WorkerStatus;
use super::timing::TaskTiming;
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// One thread's counters.
        #[derive(Default)]
        pub(crate) struct Slot {
            $( pub(crate) $name: AtomicU64, )*
        }

        /// Totals of every counter, as summed at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[non_exhaustive]
        pub struct Counts {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Counts {
            fn add(&mut self, slot: &Slot) {
                // Relaxed: counters order nothing; exactness at quiescence
                // comes from the pool's own synchronization (see module docs).
                $( self.$name += slot.$name.load(Relaxed); )*
            }
        }
    };
}

counters! {
    /// Tasks offered while the pool was open (accepted, rejected or dropped).
    submitted,
    /// Tasks that started running (on a worker or, `CallerRuns`, the caller).
    started,
    /// Tasks that returned normally.
    completed,
    /// Tasks that panicked.
    panicked,
    /// Submissions refused for want of room (`Full` or `Timeout`).
    rejected,
    /// New tasks discarded by `DropNewest`.
    dropped_newest,
    /// Queued tasks evicted by `DropOldest`.
    dropped_oldest,
    /// Tasks run on the submitting thread by `CallerRuns`.
    caller_runs,
    /// Queued tasks discarded by shutdown.
    abandoned,
    /// Tasks whose deadline passed before they started, or that returned
    /// `TimedOut`.
    timed_out,
    /// Tasks cancelled before they started, or that returned `Cancelled`.
    cancelled,
    /// Tasks that returned a value after their deadline (also counted as
    /// completed).
    deadline_missed,
    /// Jobs a worker took from another worker's deque.
    steals,
    /// Times a worker looked into another worker's deque.
    steal_attempts,
    /// Times a worker parked.
    parks,
    /// Times a parked worker was woken for work (by a submission, or by a
    /// searcher handing over the search).
    unparks,
    /// Tasks the stall watchdog reported (each at most once).
    stalls,
    /// Keyed shards that ran on another worker than the one that ran them
    /// last.
    shard_handoffs,
    /// Times the pool grew.
    resizes_up,
    /// Times the pool shrank.
    resizes_down,
    /// Samples the auto-scaling supervisor took.
    scaling_samples,
    /// Tasks accepted onto the timing wheel (`delay`, `at`, periodic).
    delayed,
    /// Timing-wheel entries that came due and were queued.
    timers_fired,
    /// Delayed tasks and waiting retries shutdown abandoned (also counted
    /// in `abandoned`).
    timers_abandoned,
    /// Delayed tasks and waiting retries shutdown ran ahead of their time
    /// (`PendingTimers::RunNow`).
    timers_run_early,
    /// Attempts that returned an application error (`Err` from a fallible
    /// task), retried or not.
    app_errors,
    /// Attempts put back on the wheel for a retry.
    retries,
    /// Fallible tasks without a retry policy that returned an error.
    failed,
    /// Tasks that exhausted their retry policy, or returned an error their
    /// `retry_if` called permanent, and went to the dead letters.
    dead_lettered,
    /// Dead letters dropped from the full dead-letter queue (the handler
    /// saw each of them).
    dead_letters_evicted,
}

impl Counts {
    /// Tasks dropped by backpressure, newest and oldest together.
    pub fn dropped(&self) -> u64 {
        self.dropped_newest + self.dropped_oldest
    }
}

const STRIPES: usize = 8;

/// Everything one worker records about itself, in one padded block (one
/// bounds check on the task path, not one per record).
#[derive(Default)]
pub(crate) struct WorkerRecord {
    /// Its counters.
    pub(crate) slot: Slot,
    /// What it is doing (for `dump`, the watchdog, gauges).
    pub(crate) status: WorkerStatus,
    /// The queue waits and run times of its tasks.
    pub(crate) timing: TaskTiming,
}

/// All the slots of one pool.
pub(crate) struct Counters {
    workers: Box<[CachePadded<WorkerRecord>]>,
    external: Box<[CachePadded<Slot>]>,
    /// Contention of the pool's own locks.
    pub(crate) locks: std::sync::Arc<LockStats>,
}

fn padded<T: Default>(n: usize) -> Box<[CachePadded<T>]> {
    (0..n).map(|_| CachePadded::default()).collect()
}

std::thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe of the shared slots.
#[inline]
fn stripe() -> usize {
    match STRIPE.get() {
        usize::MAX => assign_stripe(),
        s => s,
    }
}

/// A thread's first count: give it the next stripe.
#[cold]
fn assign_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Relaxed: only spreads threads over stripes.
    let s = NEXT.fetch_add(1, Relaxed) % STRIPES;
    STRIPE.set(s);
    s
}

impl Counters {
    pub(crate) fn new(workers: usize, locks: std::sync::Arc<LockStats>) -> Self {
        Counters {
            workers: padded(workers),
            external: padded(STRIPES),
            locks,
        }
    }

    /// Worker `index`'s records.
    #[inline]
    pub(crate) fn worker(&self, index: usize) -> &WorkerRecord {
        &self.workers[index]
    }

    /// Every worker slot's records.
    pub(crate) fn workers(&self) -> impl Iterator<Item = &WorkerRecord> {
        self.workers.iter().map(|w| &**w)
    }

    /// The slot of worker `index`, or of the calling outside thread.
    #[inline]
    pub(crate) fn slot(&self, worker: Option<usize>) -> &Slot {
        match worker {
            Some(i) => &self.workers[i].slot,
            None => &self.external[stripe()],
        }
    }

    /// Sums every slot.
    pub(crate) fn sum(&self) -> Counts {
        self.sum_of_first(self.workers.len())
    }

    /// Sums every slot so that the sums agree with each other at every
    /// moment, not only at quiescence: the counters that end a task
    /// (`completed`, `panicked`, `abandoned`, `dropped_*`, `rejected`,
    /// `timed_out`, `cancelled`) are read in a first pass, `submitted` in a
    /// second. A task is counted in `submitted` before it can end (the
    /// bump precedes its enqueue, which the worker's pop acquires), and
    /// every bump is a release store read here with acquire: whatever
    /// ended task the first pass sees, the second sees submitted. So
    /// `submitted − ends ≥ 0` counts exactly the tasks not yet ended when
    /// the first pass ran; none is counted twice.
    pub(crate) fn sum_settled(&self) -> Counts {
        let mut ends = self.sum();
        let slots = || {
            self.workers
                .iter()
                .map(|w| &w.slot)
                .chain(self.external.iter().map(|s| &**s))
        };
        // The second pass, after every load of the first.
        std::sync::atomic::fence(Acquire);
        ends.submitted = slots().map(|s| s.submitted.load(Acquire)).sum();
        ends
    }

    /// Sums the slots of workers `0..n` and of outside threads (the other
    /// workers' slots are known to be zero: they never ran).
    pub(crate) fn sum_of_first(&self, n: usize) -> Counts {
        let mut c = Counts::default();
        let workers = self.workers[..n].iter().map(|w| &w.slot);
        for s in workers.chain(self.external.iter().map(|s| &**s)) {
            c.add(s);
        }
        c
    }
}

/// Adds one to a counter. Release (free on x86: the RMW is locked
/// anyway) so that `Counters::sum_settled` sees every earlier bump of the
/// writing thread once it sees this one.
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Release);
}

/// Adds one to a counter of `worker`'s own slot, or of a shared stripe
/// (`None`). A worker is the only writer of its slot, so a plain relaxed
/// load and store suffice there (no locked instruction on the hot path).
#[inline]
pub(crate) fn bump_at(counter: &AtomicU64, worker: Option<usize>) {
    match worker {
        // Relaxed load: the slot's only writer reads its own value. Release
        // store: as in `bump` (a plain store on x86).
        Some(_) => counter.store(counter.load(Relaxed) + 1, Release),
        None => bump(counter),
    }
}

/// Adds `n` to a counter of a worker's own slot (its only writer): as
/// `bump_at` with `Some(worker)`, `n` at once.
#[inline]
pub(crate) fn add_at(counter: &AtomicU64, n: u64) {
    // Relaxed load, Release store: as in `bump_at`.
    counter.store(counter.load(Relaxed) + n, Release);
}
