//! Bounded waiting: which queue a worker looks at first, and how long each
//! queue's work has waited at most.
//!
//! A worker normally looks at its own deque first (newest first: the
//! cache-warm successor of the task it just ran), then its shard inbox,
//! then the injector. Tasks that keep submitting successors keep the own
//! deque non-empty, so on their own the other queues, and the oldest end
//! of the own deque, would wait forever. So every [`FAIR_INTERVAL`]-th look
//! starts elsewhere, in rotation: the injector, the inbox, then the own
//! deque's oldest end (as a thief takes it). Each of the three comes first
//! at least once every `3 × FAIR_INTERVAL` looks of every worker, whatever
//! the tasks spawn: a queued task waits for the work queued ahead of it,
//! not for the work others keep creating. (tokio and Go look at their
//! global queue every 61 scheduling ticks; 61 is measured in
//! `design/benchmarks.md` to cost nothing on the spawn path.)
//!
//! The ages: for each queue the pool keeps `served`, the enqueue stamp of
//! the last task taken from its oldest end, or the time a worker found it
//! empty. Queues are FIFO at that end, so every task still queued there
//! was enqueued at or after `served`: `now − served` bounds the age of its
//! oldest task from above. A starving queue shows as a growing bound.
//! Under the default metrics most submissions carry no stamp (one in 64
//! does, `metrics::timing::Stamps`); taking an unstamped task leaves
//! `served` as it was, so the bound stays a bound, looser by the tasks
//! taken since the last stamped one or the last time the queue was found
//! empty. (The stall watchdog, which acts on the bound, has every task
//! stamped.)

use crate::metrics::clock::TaskClock;
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Looks between two that start away from the own deque's newest end.
/// (Under loom too: the order of looks takes no part in the sleep
/// protocol, whose re-check before parking looks at every queue, so the
/// models keep the state space they had.)
pub(crate) const FAIR_INTERVAL: u32 = 61;

/// How far a served stamp may lag (ticks: about a microsecond of the
/// TSC, or a few microseconds of a nanosecond clock).
const SLACK: u64 = 1 << 12;

/// A queue a look may start at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The global injector (and the side queue behind it).
    Injector,
    /// The worker's shard inbox.
    Inbox,
    /// The oldest end of the worker's own deque.
    Deque,
}

const ROTATION: [Source; 3] = [Source::Injector, Source::Inbox, Source::Deque];

/// One worker's turn keeper: a pure countdown, no atomics.
pub(crate) struct Turns {
    left: Cell<u32>,
    next: Cell<u8>,
}

impl Turns {
    /// Starts `offset` looks into the interval (workers are offset so
    /// that their fair looks do not fall together); a worker's first look
    /// is never a fair one.
    pub(crate) fn new(offset: usize) -> Self {
        let into = (offset % FAIR_INTERVAL as usize) as u32;
        Turns {
            left: Cell::new(FAIR_INTERVAL - 1 - into),
            next: Cell::new((offset % ROTATION.len()) as u8),
        }
    }

    /// Called once per look for work: `None` for the usual order, else
    /// the queue this look starts at.
    #[inline]
    pub(crate) fn next(&self) -> Option<Source> {
        let left = self.left.get();
        if left > 0 {
            self.left.set(left - 1);
            return None;
        }
        self.left.set(FAIR_INTERVAL - 1);
        let n = self.next.get();
        self.next.set((n + 1) % ROTATION.len() as u8);
        Some(ROTATION[n as usize])
    }

    /// The order of a fair look that starts at `first`.
    pub(crate) fn order(first: Source) -> [Source; 3] {
        let i = ROTATION.iter().position(|&s| s == first).unwrap_or(0);
        [ROTATION[i], ROTATION[(i + 1) % 3], ROTATION[(i + 2) % 3]]
    }
}

/// When each queue was last served (see the module docs), in clock ticks;
/// 0: never (or not timed). Each worker's pair sits on its own cache line:
/// the owner writes it on every empty look.
pub(crate) struct Served {
    pub(crate) injector: CachePadded<AtomicU64>,
    workers: Box<[CachePadded<WorkerServed>]>,
}

/// One worker's queues.
#[derive(Default)]
pub(crate) struct WorkerServed {
    pub(crate) inbox: AtomicU64,
    pub(crate) deque: AtomicU64,
}

impl Served {
    pub(crate) fn new(workers: usize) -> Self {
        Served {
            injector: CachePadded::new(AtomicU64::new(0)),
            workers: (0..workers).map(|_| CachePadded::default()).collect(),
        }
    }

    /// Worker `index`'s queues.
    #[inline]
    pub(crate) fn worker(&self, index: usize) -> &WorkerServed {
        &self.workers[index]
    }

    /// Records that `at` is the stamp of the oldest end's last task taken,
    /// or the time the queue was found empty. Relaxed: a gauge; a stale
    /// value is a looser bound. So only a stamp `SLACK` ticks past the
    /// recorded one is stored: workers taking tasks one after another from
    /// a shared queue then do not write its line on every task (the bound
    /// is at most `SLACK` ticks looser, a few microseconds).
    #[inline]
    pub(crate) fn record(slot: &AtomicU64, at: u64) {
        let recorded = slot.load(Relaxed);
        // The first stamp always counts (0: never recorded).
        if at > recorded && (recorded == 0 || at - recorded > SLACK) {
            slot.store(at, Relaxed);
        }
    }

    /// The bound on the oldest task's age of a queue holding `len` tasks:
    /// `None` when it is empty or nothing was recorded.
    pub(crate) fn age(
        slot: &AtomicU64,
        len: usize,
        clock: &TaskClock,
        now: u64,
    ) -> Option<Duration> {
        let served = slot.load(Relaxed);
        (len > 0 && served > 0).then(|| {
            Duration::from_nanos((now.saturating_sub(served) as f64 * clock.ns_per_tick()) as u64)
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_source_comes_first_once_in_any_three_intervals() {
        let span = 3 * FAIR_INTERVAL as usize;
        for offset in [0usize, 1, 7, 60, 61, 1000] {
            let turns = Turns::new(offset);
            let looks: Vec<Option<Source>> = (0..4 * span).map(|_| turns.next()).collect();
            for window in looks.windows(span) {
                let mut fair: Vec<Source> = window.iter().flatten().copied().collect();
                assert_eq!(fair.len(), 3, "offset {offset}: {fair:?}");
                fair.sort_by_key(|s| *s as u8);
                fair.dedup();
                assert_eq!(fair.len(), 3, "offset {offset}: each source once");
            }
        }
    }

    #[test]
    fn a_fair_look_tries_every_source_once() {
        for first in ROTATION {
            let order = Turns::order(first);
            assert_eq!(order[0], first);
            let mut sorted = order.to_vec();
            sorted.sort_by_key(|s| *s as u8);
            sorted.dedup();
            assert_eq!(sorted.len(), 3);
        }
    }

    #[test]
    fn the_bound_covers_only_nonempty_recorded_queues() {
        let clock = TaskClock::new(Some(std::sync::Arc::new(|| Duration::from_nanos(500))));
        let slot = AtomicU64::new(0);
        assert_eq!(Served::age(&slot, 3, &clock, 500), None, "never recorded");
        Served::record(&slot, 200);
        Served::record(&slot, 100); // an older stamp does not move it back
        assert_eq!(Served::age(&slot, 0, &clock, 500), None, "empty");
        assert_eq!(
            Served::age(&slot, 3, &clock, 500),
            Some(Duration::from_nanos(300))
        );
        // A newer stamp within the slack leaves the (looser) bound; one
        // past it moves the bound.
        Served::record(&slot, 200 + SLACK);
        assert_eq!(slot.load(Relaxed), 200);
        Served::record(&slot, 201 + SLACK);
        assert_eq!(slot.load(Relaxed), 201 + SLACK);
    }
}
