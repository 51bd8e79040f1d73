//! Where a worker looks for work, in which order, and what it records
//! about the queues it looks at (bounded waiting: `../fair.rs`).

use super::WorkerThread;
use crate::loom::{spin_loop, thread, SPIN_ROUNDS};
use crate::metrics::{add_at, bump_at, WorkerState};
use crate::sched::fair::{Served, Source, Turns};
use crate::sched::queue::{GlobalQueue, Injector, LocalQueue, Steal, StealQueue, Stealer};
use crate::task::job::{JobKind, JobRef};

/// Whether a searcher passes over a peer's queue that looks empty. Not
/// under loom: the look is a hint, no protocol step (a worker re-checks
/// every queue before it parks), and it doubled the models' run time.
const HINTS: bool = cfg!(not(loom));

/// How many peers one look of a searcher visits at most. In a pool wider
/// than this, a search's looks go round the peers a window at a time, so a
/// look costs the same in a pool of 1,000 as in one of 32: the searcher
/// spins, and looks at its own queues and the injector between windows,
/// as often whatever the width. Nothing depends on a look being whole:
/// a worker re-checks every queue before it parks.
const SCAN_WINDOW: usize = 32;

impl WorkerThread {
    /// One look for work in every queue; becomes a searcher to steal.
    /// `TOP`: the worker's own loop looks, between tasks (a miss settles
    /// the status word the last task left, `end_streak`).
    pub(super) fn find_work<const TOP: bool>(&self) -> Option<JobRef> {
        if self.registry.is_paused() {
            if TOP {
                self.end_streak();
            }
            return self.find_internal_work();
        }
        let found = match self.turns.next() {
            None => self.usual_look(),
            // Every so often the other queues come first (`fair.rs`).
            // One job of each, no batch (the own deque is not empty).
            Some(first) => Turns::order(first)
                .into_iter()
                .find_map(|source| self.take_one(source))
                .or_else(|| self.local.pop()),
        };
        match found {
            Some(job) => {
                if self.searching.get() {
                    self.stop_searching();
                }
                Some(job)
            }
            None => {
                if TOP {
                    self.end_streak();
                }
                self.search()
            }
        }
    }

    /// The usual look: the own deque's newest job, the inbox, the
    /// injector. Straight-line, each source returning at once.
    #[inline(always)]
    fn usual_look(&self) -> Option<JobRef> {
        if let Some(job) = self.pop_newest() {
            return Some(job);
        }
        let inbox = self.registry.inbox(self.index);
        if !inbox.is_empty() {
            if let Some(job) = take(inbox) {
                let mine = self.registry.served.worker(self.index);
                Served::record(&mine.inbox, job.enqueued());
                return Some(job);
            }
        }
        self.take_from(Source::Injector)
    }

    /// Nothing in the usual places: become a searcher (unless enough
    /// workers search already) and steal from peers.
    #[inline(never)]
    fn search(&self) -> Option<JobRef> {
        if !self.searching.get() {
            if !self.registry.sleep.transition_to_searching() {
                return None;
            }
            self.searching.set(true);
            self.scan_from.set(usize::MAX);
            self.last_end.set(0);
            self.registry.set_state(self.index, WorkerState::Searching);
        }
        let found = self
            .steal_from_peers()
            .or_else(|| self.take_from(Source::Injector));
        if found.is_some() {
            self.stop_searching();
        }
        found
    }

    /// A searcher found work: it stops searching and hands the search on.
    #[cold]
    #[inline(never)]
    fn stop_searching(&self) {
        self.searching.set(false);
        self.mark_now();
        self.registry.set_state(self.index, WorkerState::Idle);
        // The last searcher to find work wakes another to carry on; with
        // more work queued, any searcher that found some wakes one more, so
        // a burst engages sleepers in a doubling chain.
        if self.registry.sleep.transition_from_searching() {
            self.registry.sleep.notify_one();
        }
        // The word alone first: below two there is nothing to fan out to,
        // and the exact reading (`starts.rs`) reads every worker's line.
        let queued = match self.registry.queued_unsettled() {
            n if n < 2 => n,
            _ => self.registry.queued_now(),
        };
        for _ in 1..queued.min(3) {
            if !self.registry.sleep.wake_another() {
                break;
            }
        }
    }

    /// The newest job of the own deque (found empty: the deque is served).
    #[inline]
    fn pop_newest(&self) -> Option<JobRef> {
        // The emptiness check first: two loads, where a pop of an empty
        // deque takes a fence and a store back.
        let job = if self.local.is_empty() {
            None
        } else {
            self.local.pop()
        };
        if job.is_none() && !self.deque_empty.replace(true) {
            self.served_empty(&self.registry.served.worker(self.index).deque);
        }
        job
    }

    /// On a fair look: one job of `source` (the injector gives one, not a
    /// batch into a deque that is not empty).
    fn take_one(&self, source: Source) -> Option<JobRef> {
        if source != Source::Injector {
            return self.take_from(source);
        }
        let served = &self.registry.served;
        let job = self.registry.take_one_global();
        match &job {
            Some(job) => Served::record(&served.injector, job.enqueued()),
            None => self.served_empty(&served.injector),
        }
        job
    }

    /// The oldest job of `source`, recording when the source was served.
    #[inline]
    fn take_from(&self, source: Source) -> Option<JobRef> {
        let registry = &*self.registry;
        let served = &registry.served;
        let mine = served.worker(self.index);
        match source {
            Source::Injector => {
                let job = registry.take_global(&self.local);
                match &job {
                    // A batch may have landed in the own deque.
                    Some(job) => {
                        self.deque_empty.set(false);
                        Served::record(&served.injector, job.enqueued());
                    }
                    None => self.served_empty(&served.injector),
                }
                job
            }
            // An inbox counts as served when a shard job enters it empty
            // (`push_inbox`), so finding it empty records nothing.
            Source::Inbox => {
                let job = take(registry.inbox(self.index));
                if let Some(job) = &job {
                    Served::record(&mine.inbox, job.enqueued());
                }
                job
            }
            Source::Deque => {
                let job = steal(&registry.stealers()[self.index]);
                match &job {
                    Some(job) => Served::record(&mine.deque, job.enqueued()),
                    None => self.served_empty(&mine.deque),
                }
                job
            }
        }
    }

    /// Records that a queue was found empty: now, or, when this worker
    /// comes straight from a task, that task's end (a little earlier, so
    /// the bound stays a bound, and no clock read on the way to the next
    /// task).
    #[inline]
    fn served_empty(&self, slot: &std::sync::atomic::AtomicU64) {
        if self.registry.timing {
            let at = match self.last_end.get() {
                0 => self.registry.clock.now(),
                end => end,
            };
            Served::record(slot, at);
        }
    }

    /// While paused: only jobs that running tasks wait for. Tasks found on
    /// this worker's deque go to the injector to wait for `resume`.
    fn find_internal_work(&self) -> Option<JobRef> {
        while let Some(job) = self.local.pop() {
            if job.kind() == JobKind::Task {
                self.registry.hold(job);
            } else {
                return Some(job);
            }
        }
        self.registry.take_side()
    }

    /// `find_work`, retried for a bounded number of rounds with growing
    /// back-off while this worker is a searcher and `stop()` is false.
    pub(super) fn find_work_spinning<const TOP: bool>(
        &self,
        stop: &dyn Fn() -> bool,
    ) -> Option<JobRef> {
        for round in 0..=SPIN_ROUNDS {
            if let Some(job) = self.find_work::<TOP>() {
                return Some(job);
            }
            // Before spinning or parking: whoever waits for idleness or
            // termination must see this worker's finished tasks.
            self.pay_owed();
            if !self.searching.get() || round == SPIN_ROUNDS || stop() {
                return None;
            }
            if round < 6 {
                for _ in 0..(1u32 << round) {
                    spin_loop();
                }
            } else {
                thread::yield_now();
            }
        }
        None
    }

    fn steal_from_peers(&self) -> Option<JobRef> {
        let stealers = self.registry.stealers();
        // Live workers' queues only (`Registry::live_queues`); a stale
        // count only makes this look miss a new worker, which runs its own
        // queues, or look at a retired one's, which are empty or being
        // moved on. The look before parking is the one that must not miss.
        let n = self.registry.live_workers().min(stealers.len());
        if n <= 1 {
            return None;
        }
        // The whole pool from a random peer, or in a wide pool the next
        // window of a search that goes round (`SCAN_WINDOW`).
        let (start, len) = if n <= SCAN_WINDOW {
            (self.next_random() % n, n)
        } else {
            let from = match self.scan_from.get() {
                from if from < n => from,
                _ => self.next_random() % n,
            };
            self.scan_from.set((from + SCAN_WINDOW) % n);
            (from, SCAN_WINDOW)
        };
        let slot = self.registry.counters.slot(Some(self.index));
        let served = &self.registry.served;
        let mut attempts = 0;
        let found = 'passes: {
            // A few passes: `Retry` means a race was lost, not that it is
            // empty.
            for _ in 0..3 {
                let mut retry = false;
                let mut i = start;
                for _ in 0..len {
                    let peer = i;
                    i = if i + 1 == n { 0 } else { i + 1 };
                    if peer == self.index {
                        continue;
                    }
                    attempts += 1;
                    // One job, the oldest: for fork-join work the biggest
                    // piece; taking half the deque would take `join` halves
                    // their owner then has to wait for or steal back.
                    //
                    // An empty deque is passed over on two loads: a steal
                    // first enters the deque's memory-reclamation epoch,
                    // and every so often that scans every thread registered
                    // with it, the whole pool: with hundreds of workers
                    // searching, those scans took most of the CPUs.
                    let stealer = &stealers[peer];
                    if !(HINTS && stealer.is_empty()) {
                        match stealer.steal() {
                            Steal::Success(job) => {
                                bump_at(&slot.steals, Some(self.index));
                                Served::record(&served.worker(peer).deque, job.enqueued());
                                break 'passes Some(job);
                            }
                            Steal::Retry => retry = true,
                            Steal::Empty => {}
                        }
                    }
                    // Else a runnable shard waiting on that worker's inbox.
                    let inbox = self.registry.inbox(peer);
                    if !(HINTS && inbox.is_empty()) {
                        if let Some(job) = take(inbox) {
                            bump_at(&slot.steals, Some(self.index));
                            Served::record(&served.worker(peer).inbox, job.enqueued());
                            break 'passes Some(job);
                        }
                    }
                }
                if !retry {
                    break;
                }
            }
            None
        };
        add_at(&slot.steal_attempts, attempts);
        found
    }

    fn next_random(&self) -> usize {
        // xorshift64*: only spreads the first victim of a steal.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as usize
    }
}

/// The oldest job of a deque, as a thief takes it, retrying lost races.
fn steal(stealer: &Stealer) -> Option<JobRef> {
    loop {
        match stealer.steal() {
            Steal::Success(job) => return Some(job),
            Steal::Retry => continue,
            Steal::Empty => return None,
        }
    }
}

/// One job from an inbox, retrying lost races.
#[inline]
fn take(inbox: &Injector) -> Option<JobRef> {
    inbox.pop()
}
