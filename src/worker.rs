//! The worker thread: find work, run it, park when there is none.
//!
//! A worker looks, in order: its own deque (LIFO, newest first) → the
//! injector (a batch, FIFO) → the side queue → the other workers' deques
//! (oldest first, starting at a random peer). Stealing from peers makes it a
//! *searcher* (see `design/sleep-wake.md`); before parking it spins a bounded
//! number of rounds, then parks on its own `Parker`.
//!
//! A worker that waits for something (`JoinHandle::join`, `wait_idle`, room
//! in the queue) runs the same loop with "the thing is done" as its exit
//! condition, so waiting inside the pool never deadlocks: the work it waits
//! for is either queued (and this worker may run it) or running elsewhere
//! (and its completion unparks this worker).

use crate::job::{shard_job, JobKind, JobRef};
use crate::loom::sync::atomic::{fence, Ordering::SeqCst};
use crate::loom::sync::Arc;
use crate::loom::{spin_loop, thread, thread_local, SPIN_ROUNDS};
use crate::metrics::{bump_at, WorkerState};
use crate::queue::{GlobalQueue, Injector};
use crate::queue::{Local, LocalQueue, Steal, StealQueue};
use crate::registry::Registry;
use crate::shard::BATCH;
use crate::sleep::Parker;
use std::cell::Cell;

#[cfg(not(loom))]
thread_local! {
    static CURRENT: Cell<*const WorkerThread> = const { Cell::new(std::ptr::null()) };
}

// loom's `thread_local!` takes no `const` initialiser.
#[cfg(loom)]
thread_local! {
    static CURRENT: Cell<*const WorkerThread> = Cell::new(std::ptr::null());
}

/// The per-thread state of a worker. Lives on the worker thread's stack for
/// the thread's whole life; `!Sync` (it holds `Cell`s and the deque's owner
/// end), so references to it never leave the thread.
pub(crate) struct WorkerThread {
    registry: Arc<Registry>,
    index: usize,
    local: Local,
    searching: Cell<bool>,
    rng: Cell<u64>,
    /// Finished tasks whose `pending` place is not yet retired (see
    /// `Registry::run_task`).
    owed: Cell<u64>,
    /// The tick at which the last task ended, while this worker goes
    /// straight on to the next one; 0 once it searches or parks.
    last_end: Cell<u64>,
}

/// The body of worker thread `index`.
pub(crate) fn run(registry: Arc<Registry>, index: usize, local: Local) {
    let worker = WorkerThread {
        registry,
        index,
        local,
        searching: Cell::new(false),
        owed: Cell::new(0),
        last_end: Cell::new(0),
        rng: Cell::new(
            0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
        ),
    };
    CURRENT.with(|c| c.set(&worker));
    let status = &worker.registry.counters.status[index];
    status.set_clock(crate::cpu::ThreadClock::current());
    // A worker started while the pool grows starts one more first.
    Registry::help_grow(&worker.registry);
    let retired = worker.main_loop();
    status.set_clock(None);
    CURRENT.with(|c| c.set(std::ptr::null()));
    if retired {
        let WorkerThread {
            registry, local, ..
        } = worker;
        registry.finish_retire(index, local);
    }
}

impl WorkerThread {
    /// The worker running on this thread, if any (of any pool).
    #[inline]
    pub(crate) fn current() -> Option<&'static WorkerThread> {
        let ptr = CURRENT.with(Cell::get);
        // SAFETY: `CURRENT` is non-null only while `run` executes on this
        // thread, and `run`'s frame owns the `WorkerThread` for that whole
        // time; every caller runs inside that frame (jobs are executed from
        // `main_loop`). `WorkerThread` is `!Sync`, so the reference cannot
        // be sent to another thread that could outlive the frame.
        unsafe { ptr.as_ref() }
    }

    #[inline]
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    #[inline]
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    #[inline]
    pub(crate) fn parker(&self) -> &Arc<Parker> {
        self.registry.sleep.parker(self.index)
    }

    /// Pops the newest job of this worker's own deque.
    #[inline]
    pub(crate) fn pop_local(&self) -> Option<JobRef> {
        self.local.pop()
    }

    /// Pushes onto this worker's own deque.
    #[inline]
    pub(crate) fn push_local(&self, job: JobRef) {
        self.local.push(job);
    }

    /// Returns whether the worker retired (rather than the pool ending).
    fn main_loop(&self) -> bool {
        let registry = &*self.registry;
        let stop = || registry.should_exit() || registry.should_retire(self.index);
        let retired = loop {
            if let Some(job) = self.find_work_spinning(&stop) {
                self.execute(job);
                continue;
            }
            self.pay_owed();
            if registry.should_exit() {
                break false;
            }
            if registry.should_retire(self.index) {
                // Stop searching first. Submitters that saw this worker
                // searching relied on it to find their work; leaving, it
                // hands the search to a sleeper, as a searcher that found
                // work does (step 3). (Found by the loom retirement model.)
                if self.searching.replace(false) && registry.sleep.transition_from_searching() {
                    registry.sleep.notify_one();
                }
                registry.hand_over(self.index, &self.local);
                break true;
            }
            self.park(&stop);
        };
        if self.searching.replace(false) {
            registry.sleep.transition_from_searching();
        }
        registry.set_state(self.index, WorkerState::Unknown);
        retired
    }

    /// Runs a job popped from a queue.
    #[inline]
    pub(crate) fn execute(&self, job: JobRef) {
        match job.kind() {
            JobKind::Task => self.run_task(job, true),
            // Internal jobs hand their outcome (and panic) to their waiter.
            JobKind::Internal => {
                self.pay_owed();
                self.last_end.set(0);
                let _ = job.run();
            }
            JobKind::Install => {
                self.pay_owed();
                self.last_end.set(0);
                self.registry.run_install(job, self.index);
            }
            JobKind::Shard => self.run_shard(job.shard_index()),
        }
    }

    /// Runs a task; `may_hold` as in `Registry::run_task`.
    fn run_task(&self, job: JobRef, may_hold: bool) {
        let owed = self.owed.take();
        // Cleared while the task runs: a task it waits for, run here
        // meanwhile, must read the clock itself.
        let prev_end = self.last_end.replace(0);
        let (owed, end) = self
            .registry
            .run_task(job, self.index, owed, prev_end, may_hold);
        self.owed.set(self.owed.get() + owed);
        self.last_end.set(end);
    }

    /// Waits until `done()` holds, running other work meanwhile. Whoever
    /// makes `done()` true must then unpark this worker's parker (the
    /// caller registers it beforehand).
    pub(crate) fn wait_until(&self, done: &dyn Fn() -> bool) {
        self.pay_owed();
        while !done() {
            if let Some(job) = self.find_work_spinning(done) {
                self.execute(job);
                continue;
            }
            self.pay_owed();
            if done() {
                break;
            }
            self.park(done);
        }
    }

    /// Retires the places of finished tasks this worker still owes.
    pub(crate) fn pay_owed(&self) {
        self.registry.pay(self.owed.take());
    }

    /// One look for work in every queue; becomes a searcher to steal.
    pub(crate) fn find_work(&self) -> Option<JobRef> {
        if self.registry.is_paused() {
            return self.find_internal_work();
        }
        let found = self
            .local
            .pop()
            .or_else(|| take(self.registry.inbox(self.index)))
            .or_else(|| self.registry.take_global(&self.local));
        let found = match found {
            Some(job) => Some(job),
            None => {
                if !self.searching.get() {
                    if !self.registry.sleep.transition_to_searching() {
                        return None;
                    }
                    self.searching.set(true);
                    self.last_end.set(0);
                    self.registry.set_state(self.index, WorkerState::Searching);
                }
                self.steal_from_peers()
                    .or_else(|| self.registry.take_global(&self.local))
            }
        };
        if found.is_some() && self.searching.replace(false) {
            self.registry.set_state(self.index, WorkerState::Idle);
            // The last searcher to find work wakes another to carry on.
            if self.registry.sleep.transition_from_searching() {
                self.registry.sleep.notify_one();
            }
        }
        found
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
    fn find_work_spinning(&self, stop: &dyn Fn() -> bool) -> Option<JobRef> {
        for round in 0..=SPIN_ROUNDS {
            if let Some(job) = self.find_work() {
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

    /// Steps 2–3 of the shard hand-off (see `shard.rs`): runs up to
    /// `BATCH` of the shard's tasks, then retires it (empty) or yields it to
    /// the back of this worker's inbox (more waiting).
    fn run_shard(&self, index: usize) {
        let registry = &*self.registry;
        let shard = &registry.shards[index];
        if shard.enter(self.index) {
            bump_at(
                &registry.counters.slot(Some(self.index)).shard_handoffs,
                Some(self.index),
            );
        }
        let lock = &registry.counters.locks.shard;
        let mut ran = 0;
        loop {
            if registry.is_paused() {
                // Still scheduled: it waits in the inbox for `resume`.
                registry.inbox(self.index).push(shard_job(index));
                break;
            }
            let next = {
                let mut queue = shard.queue.lock_counted(lock);
                match queue.tasks.pop_front() {
                    Some(job) => Some(job),
                    None => {
                        queue.scheduled = false;
                        None
                    }
                }
            };
            let Some(job) = next else { break };
            self.run_task(job, false);
            ran += 1;
            if ran == BATCH && !shard.queue.lock_counted(lock).tasks.is_empty() {
                // Still scheduled: only this runner clears it, so no second
                // shard job can appear meanwhile.
                registry.inbox(self.index).push(shard_job(index));
                registry.sleep.tickle();
                break;
            }
        }
        shard.leave();
    }

    fn steal_from_peers(&self) -> Option<JobRef> {
        let stealers = self.registry.stealers();
        let n = stealers.len();
        if n <= 1 {
            return None;
        }
        let start = self.next_random() % n;
        let slot = self.registry.counters.slot(Some(self.index));
        // A few passes: `Retry` means a race was lost, not that it is empty.
        for _ in 0..3 {
            let mut retry = false;
            for i in (start..n).chain(0..start) {
                if i == self.index {
                    continue;
                }
                // One job, the oldest: for fork-join work the biggest piece;
                // taking half the deque would take `join` halves their owner
                // then has to wait for or steal back.
                bump_at(&slot.steal_attempts, Some(self.index));
                match stealers[i].steal() {
                    Steal::Success(job) => {
                        bump_at(&slot.steals, Some(self.index));
                        return Some(job);
                    }
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
                // Else a runnable shard waiting on that worker's inbox.
                if let Some(job) = take(self.registry.inbox(i)) {
                    bump_at(&slot.steals, Some(self.index));
                    return Some(job);
                }
            }
            if !retry {
                break;
            }
        }
        None
    }

    /// Parks until woken, unless work or `stop()` shows up after this
    /// worker announced itself as parked (steps 4–6 of the protocol).
    fn park(&self, stop: &dyn Fn() -> bool) {
        let sleep = &self.registry.sleep;
        self.last_end.set(0);
        sleep.transition_to_parked(self.index, self.searching.replace(false));
        // Pairs with the fence in `notify_one`: either the submitter sees
        // this worker parked, or this re-check sees its job.
        fence(SeqCst);
        if stop() {
            self.searching.set(sleep.after_wake(self.index));
        } else if self.registry.has_work() {
            // Work arrived after this worker last looked: take it, as a
            // searcher (it may sit in another worker's deque or inbox).
            if !sleep.after_wake(self.index) {
                sleep.force_searching();
            }
            self.searching.set(true);
        } else {
            bump_at(
                &self.registry.counters.slot(Some(self.index)).parks,
                Some(self.index),
            );
            self.registry.set_state(self.index, WorkerState::Parked);
            self.parker().park();
            self.searching.set(sleep.after_wake(self.index));
        }
        self.registry.set_state(
            self.index,
            if self.searching.get() {
                WorkerState::Searching
            } else {
                WorkerState::Idle
            },
        );
    }

    /// Whether this worker is running keyed shard `index` (at any depth of
    /// its stack: a shard's tasks never run elsewhere meanwhile).
    pub(crate) fn runs_shard(&self, index: usize) -> bool {
        self.registry.shards[index]
            .running_on
            .load(std::sync::atomic::Ordering::Relaxed)
            == self.index + 1
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

/// One job from an inbox, retrying lost races.
fn take(inbox: &Injector) -> Option<JobRef> {
    loop {
        match inbox.steal() {
            Steal::Success(job) => return Some(job),
            Steal::Retry => continue,
            Steal::Empty => return None,
        }
    }
}
