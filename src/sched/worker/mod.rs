//! The worker thread: find work, run it, park when there is none.
//!
//! A worker looks, in order: its own deque (LIFO, newest first) → the
//! injector (a batch, FIFO) → the side queue → the other workers' deques
//! (oldest first, starting at a random peer). Stealing from peers makes it a
//! *searcher* (see `sleep/README.md`); before parking it spins a bounded
//! number of rounds, then parks on its own `Parker`.
//!
//! A worker that waits for something (`JoinHandle::join`, `wait_idle`, room
//! in the queue) runs the same loop with "the thing is done" as its exit
//! condition, so waiting inside the pool never deadlocks: the work it waits
//! for is either queued (and this worker may run it) or running elsewhere
//! (and its completion unparks this worker).

use crate::error::TaskError;
use crate::keyed::BatchEnd;
use crate::loom::sync::atomic::{fence, Ordering::SeqCst};
use crate::loom::sync::Arc;
use crate::loom::{thread, thread_local};
use crate::metrics::{bump_at, LockStats, StatusWord, WorkerState};
use crate::sched::admission::{PENDING_ONE, QUEUED_ONE};
use crate::sched::fair::Turns;
use crate::sched::queue::{Local, LocalQueue};
use crate::sched::registry::Registry;
use crate::task::current;
use crate::task::job::{shard_job, JobKind, JobRef};
use crate::task::Parker;

mod look;
use std::cell::Cell;

#[cfg(not(loom))]
thread_local! {
    static CURRENT: Cell<*const WorkerThread> = const { Cell::new(std::ptr::null()) };
}

// loom's `thread_local!` takes no `const` initializer.
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
    /// This worker's parker (the registry's, at hand: every join hands it
    /// to a latch).
    parker: Arc<Parker>,
    local: Local,
    searching: Cell<bool>,
    rng: Cell<u64>,
    /// In a wide pool, the peer the searcher's next look starts at (each
    /// look visits a window of peers, the next look the next window);
    /// `usize::MAX` at the start of a search: a random peer.
    scan_from: Cell<usize>,
    /// Finished tasks whose `pending` place is not yet retired (see
    /// `Registry::run_task`).
    owed: Cell<u64>,
    /// Started tasks whose `queued` place is not yet retired, in a pool
    /// that returns places in batches (`starts.rs`).
    owed_starts: Cell<u64>,
    /// This worker's count of payments (`starts.rs`), shifted.
    epoch: Cell<u64>,
    /// The tick at which the last task ended, while this worker goes
    /// straight on to the next one; 0 once it searches or parks. Under
    /// the default metrics never 0 when the loop runs a task: a worker
    /// back from a search, a park or a job that is not a task marks the
    /// moment instead (`mark_now`), so that run takes no test for it.
    last_end: Cell<u64>,
    /// Which queue the next looks start at (bounded waiting, `fair.rs`).
    turns: Turns,
    /// The own deque was found empty and nothing was pushed since: its
    /// `served` time is recorded once per empty spell, not per look.
    deque_empty: Cell<bool>,
}

/// The body of worker thread `index`.
pub(crate) fn run(registry: Arc<Registry>, index: usize, local: Local) {
    #[cfg(not(loom))]
    let _abort = crate::sched::abort::AbortOnPanic("a worker");
    let first_epoch = registry.unpaid.first_epoch(index);
    let worker = WorkerThread {
        parker: Arc::clone(registry.sleep.parker(index)),
        registry,
        index,
        local,
        searching: Cell::new(false),
        scan_from: Cell::new(usize::MAX),
        owed: Cell::new(0),
        owed_starts: Cell::new(0),
        epoch: Cell::new(first_epoch),
        last_end: Cell::new(0),
        turns: Turns::new(index * 17),
        deque_empty: Cell::new(false),
        rng: Cell::new(
            0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
        ),
    };
    CURRENT.with(|c| c.set(&worker));
    let hook: &dyn current::Worker = &worker;
    // SAFETY: `worker` lives on this frame until after `current::leave`
    // below, and never leaves this thread.
    unsafe { current::enter(hook) };
    let status = &worker.registry.counters.worker(index).status;
    status.set_clock(crate::metrics::cpu::ThreadClock::current());
    if worker.registry.config.track_workers {
        // The state a task's status word is put back to after it.
        status.set(WorkerState::Idle);
    }
    // A worker started while the pool grows starts one more first.
    Registry::help_grow(&worker.registry);
    worker.mark_now();
    let retired = worker.main_loop();
    status.set_clock(None);
    current::leave();
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
        &self.parker
    }

    /// Pops the newest job of this worker's own deque.
    #[inline]
    pub(crate) fn pop_local(&self) -> Option<JobRef> {
        self.local.pop()
    }

    /// Pushes onto this worker's own deque.
    #[inline]
    pub(crate) fn push_local(&self, job: JobRef) {
        self.deque_empty.set(false);
        self.local.push(job);
    }

    /// Returns whether the worker retired (rather than the pool ending).
    fn main_loop(&self) -> bool {
        let registry = &*self.registry;
        let stop = || registry.should_exit() || registry.should_retire(self.index);
        let retired = loop {
            if let Some(job) = self.find_work_spinning::<true>(&stop) {
                self.execute_top(job);
                continue;
            }
            // About to park: fire the timers that are due (the driver may
            // be waiting for a core), then look again.
            if registry.poll_if_due() {
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

    /// Runs a job popped from a queue, inside a task that waits (`join`,
    /// a wait that helps): a task run here puts back the status word of
    /// the task it runs inside.
    #[inline]
    pub(crate) fn execute(&self, job: JobRef) {
        self.execute_in::<false>(job);
    }

    /// Runs a job popped from a queue by the worker's own loop, between
    /// tasks: a task run here leaves the worker `Idle` since its end.
    fn execute_top(&self, job: JobRef) {
        self.execute_in::<true>(job);
    }

    /// `execute`, for a job run at the top of the worker's stack (`TOP`)
    /// or inside a task.
    #[inline]
    fn execute_in<const TOP: bool>(&self, job: JobRef) {
        match job.kind() {
            JobKind::Task => {
                self.run_task::<TOP>(job, true, None);
            }
            // Internal jobs hand their outcome (and panic) to their waiter.
            JobKind::Internal => {
                if TOP {
                    self.end_streak();
                }
                self.pay_owed();
                self.last_end.set(0);
                let mut job = std::mem::ManuallyDrop::new(job);
                // SAFETY: `job` is not touched after this run.
                let _ = unsafe { JobRef::run_in_place(&mut job) };
                if TOP {
                    self.mark_now();
                }
            }
            JobKind::Install => {
                if TOP {
                    self.end_streak();
                }
                self.pay_owed();
                self.last_end.set(0);
                self.run_install(job);
                if TOP {
                    self.mark_now();
                }
            }
            JobKind::Shard => self.run_shard::<TOP>(job.shard_index()),
        }
    }

    /// Runs (or, once shutdown abandons, discards) a popped task.
    ///
    /// The worker owes the `pending` places of its earlier tasks that
    /// finished (`owed`); they are paid here, folded into this task's
    /// start, so a busy worker touches the admission word once per task
    /// (in a pool's first 64 slots, once per `starts::BATCH` tasks: this
    /// task's `queued` place joins the debt too, see `starts.rs`).
    /// This task's `pending` place joins the debt, paid before the worker waits,
    /// parks or runs anything but a task.
    ///
    /// `may_hold`: whether a pause may put the task back (not for a keyed
    /// task, which must run inside its shard; its runner re-checks the
    /// pause between tasks).
    ///
    /// When the worker came straight from its previous task (no search, no
    /// park), that task's end tick serves as this one's start, saving a
    /// clock read; the error is the time to pop a job, below the
    /// histograms' first bucket.
    ///
    /// `TOP`: run by the worker's own loop, so the status word it found is
    /// no task's (`Idle`, or `Running` as the loop's last task left it)
    /// and is not kept: under the default metrics the task leaves the
    /// word `Running` for the loop to settle (`end_streak`). Else it may
    /// run inside another task, whose word it puts back.
    ///
    /// Returns whether the task, keyed to `shard`, now holds its shard (a
    /// retry on the timing wheel).
    #[inline]
    fn run_task<const TOP: bool>(&self, job: JobRef, may_hold: bool, shard: Option<usize>) -> bool {
        let registry = &*self.registry;
        let index = self.index;
        let owed = self.owed.take();
        if may_hold && registry.is_paused() {
            // Popped after `pause()` returned (or about then): it waits for
            // `resume` in the injector instead of starting.
            if TOP {
                self.end_streak();
            }
            self.owed.set(owed);
            self.pay_owed();
            registry.hold(job);
            return false;
        }
        if registry.is_abandoning() {
            if TOP {
                self.end_streak();
            }
            self.owed.set(owed);
            self.pay_owed();
            registry.discard_task(job, TaskError::Abandoned, Some(index));
            return false;
        }
        // Cleared while the task runs: a task it waits for, run here
        // meanwhile, must read the clock itself.
        let prev_end = self.last_end.replace(0);
        #[cfg(loom)]
        registry.starts_seen.fetch_add(1, SeqCst);
        if registry.unpaid.covers(index) {
            self.start_batched(owed);
        } else {
            registry.start_task(owed);
        }
        let config = &registry.config;
        let record = registry.counters.worker(index);
        bump_at(&record.slot.started, Some(index));
        let status = &record.status;
        let mut job = std::mem::ManuallyDrop::new(job);
        // A task puts back the status word it found: the outer task's, for
        // a task run while another waits on this worker (helping); else
        // the state between tasks (`Idle`, or `Searching` when a search
        // found it), until the worker's next state change. (Left
        // `Running` until the worker next stops, a worker preempted
        // between tasks would read as a task that had run, asleep, since
        // the last one started; under the default metrics it is left
        // `Running` only from one task's end to the next one's start, or
        // to the loop's next step: `end_streak`.)
        let after = |outer: Option<StatusWord>| {
            if let Some(word) = outer {
                status.restore(word);
            }
        };
        // The task's run, made once in whichever copy below runs.
        let run = |job: &mut std::mem::ManuallyDrop<JobRef>| {
            registry.in_task_span(Some(index), shard, || {
                // SAFETY: each copy below runs `job` once and after it
                // reads no more than its enqueue stamp.
                unsafe { JobRef::run_in_place(job) }
            })
        };
        // Four copies of the run (the default metrics; nothing; worker
        // states alone; any other mix): the default's path takes one test,
        // the bare one two, and none inside a copy's path.
        // (Assigned in each copy, not returned from it: the outcome is
        // then written in place, not copied.)
        let outcome;
        let end;
        if registry.full_metrics {
            // The default: the tick counter, worker states and histograms,
            // with no test between them.
            // At the top the loop marked the moment (`last_end`).
            let start = match prev_end {
                0 if !TOP => crate::metrics::clock::ticks(),
                t => t,
            };
            debug_assert!(start != 0, "a task at the top with no start marked");
            // At the top, the word found is no task's (`Idle`, or the
            // `Running` the loop's last task left): no need to read it and
            // keep it across the run.
            let outer = if TOP {
                status.begin_task(start);
                None
            } else {
                Some(status.start_task(start))
            };
            outcome = run(&mut job);
            end = crate::metrics::clock::ticks();
            // Submissions are stamped sparsely here: both spans are
            // recorded for a task that carries a stamp.
            record
                .timing
                .record_stamped(start, job.enqueued(), end.wrapping_sub(start));
            // At the top the word stays `Running` until the loop's next
            // step: the next task's start, or, when no task follows at
            // once, `Idle` since this end (`end_streak`).
            if let Some(word) = outer {
                status.restore(word);
            }
        } else if registry.bare {
            outcome = run(&mut job);
            end = 0;
        } else if !registry.timing {
            let outer = config.track_workers.then(|| status.start_task(0));
            outcome = run(&mut job);
            after(outer);
            end = 0;
        } else {
            let start = match prev_end {
                0 => registry.timed_now(),
                t => t,
            };
            let outer = config.track_workers.then(|| status.start_task(start));
            outcome = run(&mut job);
            end = registry.timed_now();
            if config.histograms {
                record
                    .timing
                    .record(start, || job.enqueued(), end.wrapping_sub(start));
            }
            after(outer);
        }
        let held = registry.record_outcome_in(&record.slot, outcome, Some(index), shard);
        self.owed.set(self.owed.get() + 1);
        self.last_end.set(end);
        held
    }

    /// Runs an install job: counted like a task, its panic forwarded to
    /// the caller; then its place is retired.
    fn run_install(&self, job: JobRef) {
        let registry = &*self.registry;
        let record = registry.counters.worker(self.index);
        bump_at(&record.slot.started, Some(self.index));
        record.timing.note_untimed();
        let outcome = registry.in_task_span(Some(self.index), None, || job.run());
        registry.record_outcome(outcome, Some(self.index), None);
        registry.finish_install();
    }

    /// Waits until `done()` holds, running other work meanwhile. Whoever
    /// makes `done()` true must then unpark this worker's parker (the
    /// caller registers it beforehand).
    pub(crate) fn wait_until(&self, done: &dyn Fn() -> bool) {
        self.pay_owed();
        while !done() {
            if let Some(job) = self.find_work_spinning::<false>(done) {
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

    /// One step of a wait that cannot park (it has no wake-up to wait
    /// for, such as room in the queue): runs one queued job if there is
    /// one, else yields the CPU.
    pub(crate) fn help_once(&self) {
        match self.find_work::<false>() {
            Some(job) => self.execute(job),
            None => {
                self.pay_owed();
                thread::yield_now();
            }
        }
    }

    /// Retires the places this worker still owes: of its finished tasks,
    /// and (`starts.rs`) of its started ones.
    #[inline(never)]
    fn pay_owed(&self) {
        let registry = &*self.registry;
        let started = self.owed_starts.take();
        if started == 0 {
            registry.pay(self.owed.take());
            return;
        }
        let epoch = crate::sched::starts::next_epoch(self.epoch.get());
        self.epoch.set(epoch);
        registry.unpaid.paid(self.index, epoch);
        registry.retire(started * QUEUED_ONE + self.owed.take() * PENDING_ONE);
        registry.notify_room();
    }

    /// A task starts in a pool that returns places in batches
    /// (`starts.rs`): its place joins the debt, which is paid at the
    /// batch's last start, or at once while anyone waits for room.
    #[inline(always)]
    fn start_batched(&self, owed: u64) {
        let registry = &*self.registry;
        let started = self.owed_starts.get() + 1;
        self.owed_starts.set(started);
        self.owed.set(owed);
        if started >= crate::sched::starts::BATCH {
            self.pay_owed();
            return;
        }
        registry
            .unpaid
            .owe(self.index, self.epoch.get(), started, owed);
        // Handshake with `block_for_room`: this worker's `SeqCst` store of
        // what it owes, then its load of the waiter count; a waiter
        // registers, then reads the unpaid words. Either it counts this
        // start's place as free, or this worker sees it and pays now.
        crate::loom::handshake_fence();
        if registry.has_room_waiters() {
            self.pay_owed();
        }
    }

    /// Steps 2–3 of the shard hand-off (see `keyed/shard.rs`): the shard
    /// runs a batch of its tasks here, then retires or goes back to the
    /// end of this worker's inbox.
    fn run_shard<const TOP: bool>(&self, index: usize) {
        let registry = &*self.registry;
        let shard = &registry.shards[index];
        let (end, handoff) = shard.run_batch(
            self.index,
            &registry.counters.locks.shard,
            || registry.is_paused(),
            |job| self.run_task::<TOP>(job, false, Some(index)),
        );
        if handoff {
            bump_at(
                &registry.counters.slot(Some(self.index)).shard_handoffs,
                Some(self.index),
            );
        }
        if end == BatchEnd::Requeue {
            let mut turn = shard_job(index);
            let now = registry.task_now();
            turn.stamp(now);
            registry.push_inbox(self.index, turn, now);
            registry.sleep.tickle();
        }
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
        self.mark_now();
    }

    /// Under the default metrics a task run by the loop leaves the status
    /// word `Running` (its start) for the loop's next step, which in a
    /// streak of tasks is the next task's start: one store a task, not
    /// two. Every other step of the loop (a look that finds nothing, a
    /// look while paused, a job that is not a task, a task held by a pause
    /// or abandoned at shutdown) first settles the word here, before the
    /// worker pays what it owes (so whoever waits for idleness sees it
    /// settled): `Idle` since the task's end, as if stored when it ended.
    /// Only the loop calls it: the worker is then in no task, so a
    /// `Running` word is the one a task left.
    #[cold]
    pub(super) fn end_streak(&self) {
        let registry = &*self.registry;
        if registry.full_metrics {
            let status = &registry.counters.worker(self.index).status;
            if status.read().0 == WorkerState::Running {
                status.end_task(self.last_end.get());
            }
        }
    }

    /// Marks now as the start of the next task the loop runs, under the
    /// default metrics (see `last_end`); a worker that goes on to search
    /// clears it again, and marks it when the search finds work. Cleared
    /// otherwise: the task reads the clock itself.
    #[cold]
    pub(super) fn mark_now(&self) {
        let registry = &*self.registry;
        self.last_end.set(if registry.full_metrics {
            crate::metrics::clock::ticks()
        } else {
            0
        });
    }

    /// Whether this worker is running keyed shard `index` (at any depth of
    /// its stack: a shard's tasks never run elsewhere meanwhile).
    pub(crate) fn runs_shard(&self, index: usize) -> bool {
        self.registry.shards[index].runs_on(self.index)
    }
}

impl current::Worker for WorkerThread {
    fn parker(&self) -> &Arc<Parker> {
        WorkerThread::parker(self)
    }

    fn wait_until(&self, done: &dyn Fn() -> bool) {
        WorkerThread::wait_until(self, done);
    }

    fn pool_id(&self) -> usize {
        self.registry.id()
    }

    fn runs_shard(&self, shard: usize) -> bool {
        WorkerThread::runs_shard(self, shard)
    }

    fn locks(&self) -> &LockStats {
        &self.registry.counters.locks
    }

    fn blocked(&self, wait: &mut dyn FnMut()) {
        let _blocked = self.registry.block_guard();
        wait();
    }

    fn abandoning(&self) -> bool {
        self.registry.abandon.load(SeqCst)
    }

    fn set_task_name(&self, name: Option<std::sync::Arc<str>>) {
        self.registry
            .counters
            .worker(self.index)
            .status
            .set_name(name);
    }
}
