//! Counters of what the pool did, in cache-padded per-thread slots.
//!
//! Every worker owns one slot and is its only writer; threads outside the
//! pool share a few striped slots picked by a per-thread index. Updates are
//! relaxed `fetch_add`s on a line no other worker writes, so the hot path
//! never contends on a shared counter. A snapshot sums the slots: each sum is
//! exact once the pool is quiescent (after `wait_idle` or shutdown, whose
//! synchronisation orders every earlier update before the read) and may lag
//! by in-flight updates otherwise.
//!
//! These are plain `std` atomics, not the loom shim's: they take part in no
//! protocol, and leaving them out keeps the loom models small.

use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// One thread's counters.
        #[derive(Default)]
        pub(crate) struct Slot {
            $( pub(crate) $name: AtomicU64, )*
        }

        /// Totals of every counter, as summed at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Counts {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Counts {
            fn add(&mut self, slot: &Slot) {
                // Relaxed: counters order nothing; exactness at quiescence
                // comes from the pool's own synchronisation (see module docs).
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
    /// Jobs a worker took from another worker's deque.
    steals,
    /// Times a worker parked.
    parks,
}

impl Counts {
    /// Tasks dropped by backpressure, newest and oldest together.
    pub fn dropped(&self) -> u64 {
        self.dropped_newest + self.dropped_oldest
    }
}

const STRIPES: usize = 8;

/// All the slots of one pool.
pub(crate) struct Counters {
    workers: Box<[CachePadded<Slot>]>,
    external: Box<[CachePadded<Slot>]>,
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        if s.get() == usize::MAX {
            // Relaxed: only spreads threads over stripes.
            s.set(NEXT.fetch_add(1, Relaxed) % STRIPES);
        }
        s.get()
    })
}

impl Counters {
    pub(crate) fn new(workers: usize) -> Self {
        Counters {
            workers: (0..workers).map(|_| CachePadded::default()).collect(),
            external: (0..STRIPES).map(|_| CachePadded::default()).collect(),
        }
    }

    /// The slot of worker `index`, or of the calling outside thread.
    pub(crate) fn slot(&self, worker: Option<usize>) -> &Slot {
        match worker {
            Some(i) => &self.workers[i],
            None => &self.external[stripe()],
        }
    }

    /// Sums every slot.
    pub(crate) fn sum(&self) -> Counts {
        let mut c = Counts::default();
        for s in self.workers.iter().chain(self.external.iter()) {
            c.add(s);
        }
        c
    }
}

/// Adds one to a counter (relaxed: see the module docs).
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// Adds one to a counter of `worker`'s own slot, or of a shared stripe
/// (`None`). A worker is the only writer of its slot, so a plain relaxed
/// load and store suffice there (no locked instruction on the hot path).
#[inline]
pub(crate) fn bump_at(counter: &AtomicU64, worker: Option<usize>) {
    match worker {
        Some(_) => counter.store(counter.load(Relaxed) + 1, Relaxed),
        None => bump(counter),
    }
}

/// A snapshot of a pool's state and counters.
///
/// Gauges (`queued`, `running`, `parked`) are read one after another and
/// may disagree slightly while the pool is busy; counters are exact once the
/// pool is idle (after `wait_idle`) or shut down.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Metrics {
    /// Worker threads.
    pub workers: usize,
    /// Workers parked (sleeping for want of work).
    pub parked: usize,
    /// Workers searching other queues for work.
    pub searching: usize,
    /// Jobs in the global injector.
    pub injector_len: usize,
    /// Jobs in each worker's own deque.
    pub worker_queue_lens: Vec<usize>,
    /// Tasks accepted and not yet started.
    pub queued: usize,
    /// Tasks running now.
    pub running: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Outside threads blocked waiting for room (`Backpressure::Block`).
    pub blocked_submitters: usize,
    /// Workers blocked in a wait that does not help (`join_blocking`).
    pub blocked_workers: usize,
    /// Whether admission is closed (shutdown began).
    pub shut_down: bool,
    /// Counters since the pool was built.
    pub counts: Counts,
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "workers {} (parked {}), queued {}/{}, running {}; submitted {}, completed {}, \
             panicked {}, rejected {}, dropped {}, abandoned {}, caller-runs {}, steals {}{}",
            self.workers,
            self.parked,
            self.queued,
            self.queue_capacity,
            self.running,
            c.submitted,
            c.completed,
            c.panicked,
            c.rejected,
            c.dropped(),
            c.abandoned,
            c.caller_runs,
            c.steals,
            if self.shut_down { " [shut down]" } else { "" }
        )
    }
}
