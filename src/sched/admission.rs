//! State shared by all workers of one pool: the queues, the admission word
//! (capacity and shutdown), the sleep coordinator, waiters and counters.
//!
//! # The admission word
//!
//! One `AtomicU64` holds three fields, so that "is the pool open?", "is there
//! room?" and "take a place" are a single compare-and-swap, and shutdown's
//! close is ordered against every submission:
//!
//! | bits   | field     | meaning                                            |
//! |--------|-----------|----------------------------------------------------|
//! | 63     | `CLOSED`  | admission closed (shutdown began)                  |
//! | 32..63 | `pending` | tasks accepted and not yet finished or discarded   |
//! | 0..32  | `queued`  | tasks accepted and not yet started or discarded    |
//!
//! * submit: CAS `queued += 1, pending += 1` if open and `queued < capacity`;
//! * start: `queued -= 1`; finish: `pending -= 1` (a worker pays these
//!   for several tasks in one `fetch_sub`: after its next start, or, in a
//!   pool's first 64 slots, in batches, see `starts.rs`; it pays before it
//!   parks or waits, and a reading that must be exact subtracts what it owes);
//! * discard (abandon, evict): `queued -= 1, pending -= 1`;
//! * close: `fetch_or(CLOSED)`. A submission either reserved before the close
//!   in the word's modification order (and is counted in `pending`, so
//!   shutdown waits for it or abandons it), or sees `CLOSED` and fails with
//!   `ShutDown`. Nothing slips between.
//! * Workers exit when `CLOSED` is set and `pending == 0`; the finish that
//!   brings `pending` to zero after the close wakes every parked worker.

use super::config::Backpressure;
use super::registry::Registry;
use super::worker::WorkerThread;
use crate::error::{SubmitError, TaskError};
use crate::loom::sync::atomic::{fence, Ordering::SeqCst};
use crate::loom::thread;
use crate::loom::{handshake_fence, Backoff};
use crate::metrics::{bump, bump_at, LockCounted};
use crate::sched::queue::{GlobalQueue, Steal, StealQueue};
use crate::task::job::{shard_job, JobKind, JobRef, Runnable, TaskJob};
use std::time::Instant;

pub(super) const CLOSED: u64 = 1 << 63;
pub(crate) const PENDING_ONE: u64 = 1 << 32;
pub(crate) const QUEUED_ONE: u64 = 1;
const QUEUED_MASK: u64 = PENDING_ONE - 1;

pub(super) fn queued(word: u64) -> usize {
    (word & QUEUED_MASK) as usize
}

pub(super) fn pending(word: u64) -> usize {
    ((word & !CLOSED) >> 32) as usize
}

pub(super) fn closed(word: u64) -> bool {
    word & CLOSED != 0
}

pub(crate) enum Reserve {
    Ok,
    Full,
    Closed,
}

/// How a submission may wait for room.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Apply the pool's policy (Block waits as long as it takes).
    Policy,
    /// Never block: Block and CallerRuns report `Full`.
    Never,
    /// Block waits until this instant at most.
    Until(Instant),
}

/// How a task that was not refused was handled.
pub(crate) enum Admitted {
    /// Queued for a worker.
    Queued,
    /// Discarded by `DropNewest` (its handle says `Dropped`).
    DroppedNewest,
    /// Run on the submitting thread by `CallerRuns`.
    RanOnCaller,
}

impl Registry {
    /// The calling thread's worker, if it is one of this pool's.
    #[inline]
    pub(crate) fn own_worker(&self) -> Option<&'static WorkerThread> {
        WorkerThread::current().filter(|w| std::ptr::eq(w.registry(), self))
    }

    pub(crate) fn own_worker_index(&self) -> Option<usize> {
        self.own_worker().map(WorkerThread::index)
    }

    #[inline]
    pub(crate) fn try_reserve(&self) -> Reserve {
        // One `fetch_add` takes the place; a refused reservation is undone.
        // (A CAS loop would retry under the workers' constant decrements.)
        // While undone places are in flight, `queued` may exceed the true
        // count by the number of concurrently refused submitters, so a racing
        // submitter at the very edge of capacity may see `Full`: "full" is
        // decided at the moment of the `fetch_add`, as if those refused
        // submissions were still holding their places.
        // A plain load first: a closed or full pool is refused without
        // touching the word (so transient places are only taken in a race).
        let capacity = self.config.queue_capacity;
        let word = self.admission.load(SeqCst);
        if closed(word) {
            return Reserve::Closed;
        }
        if queued(word) >= capacity {
            return self.try_reserve_at_capacity();
        }
        // SeqCst: the add takes part in the Dekker-style handshakes with
        // `retire`/`notify_room` (room waiters) and with `shutdown`.
        let before = self.admission.fetch_add(QUEUED_ONE + PENDING_ONE, SeqCst);
        if closed(before) {
            self.retire(QUEUED_ONE + PENDING_ONE);
            Reserve::Closed
        } else if queued(before) >= capacity {
            // Filled since the load: refused, as if the places the
            // workers owe (`starts.rs`) were still queued.
            self.retire(QUEUED_ONE + PENDING_ONE);
            Reserve::Full
        } else {
            Reserve::Ok
        }
    }

    /// `try_reserve` for a word at capacity, which may count places the
    /// workers owe for tasks they started (`starts.rs`): the queue is read
    /// again less those, and the reading made before the add is kept for
    /// the add's own check.
    #[cold]
    #[inline(never)]
    fn try_reserve_at_capacity(&self) -> Reserve {
        let capacity = self.config.queue_capacity;
        let first = self.read_unpaid();
        let word = self.admission.load(SeqCst);
        let second = self.read_unpaid();
        if closed(word) {
            return Reserve::Closed;
        }
        let owed = crate::sched::starts::settled(&first, &second).0;
        if queued(word).saturating_sub(owed) >= capacity {
            return Reserve::Full;
        }
        // SeqCst: as in `try_reserve`.
        let before = self.admission.fetch_add(QUEUED_ONE + PENDING_ONE, SeqCst);
        if closed(before) {
            self.retire(QUEUED_ONE + PENDING_ONE);
            return Reserve::Closed;
        }
        // Places owed in `second`, made before the add, and still owed
        // after it, are counted in `before`.
        if queued(before).saturating_sub(self.unpaid_since(&second)) >= capacity {
            self.retire(QUEUED_ONE + PENDING_ONE);
            return Reserve::Full;
        }
        Reserve::Ok
    }

    /// Puts an admitted job where a worker will find it and wakes one if
    /// needed: a worker's own deque when called on this pool's worker (the
    /// job stays near the data its submitter touched), else the injector.
    #[inline]
    pub(crate) fn enqueue(&self, job: JobRef, shard: Option<usize>) {
        self.enqueue_from(self.own_worker(), job, shard);
    }

    /// `enqueue`, by `worker` (this thread's worker of this pool, if any).
    /// Always inlined: it is the submission's hot path (the timer driver's
    /// call sites would otherwise tip the compiler into outlining it).
    #[inline(always)]
    fn enqueue_from(&self, worker: Option<&WorkerThread>, mut job: JobRef, shard: Option<usize>) {
        self.stamp_submission(&mut job);
        if let Some(index) = shard {
            let now = job.enqueued();
            return self.push_to_shard(index, job, now);
        }
        match worker {
            Some(worker) => worker.push_local(job),
            None => self.injector.push(job),
        }
        let woke = self.sleep.notify_one();
        if self.config.min_workers < self.max_workers()
            && !self.nudged.load(std::sync::atomic::Ordering::Relaxed)
        {
            // The supervisor may want to grow now rather than at its next
            // sample: no sleeper to wake and nobody idle, or more tasks
            // queued than there are workers (a burst, submitted faster than
            // workers leave the idle state). Relaxed loads: a hint; a missed
            // nudge waits for the next sample, it loses nothing. The
            // workers that return places in batches (`starts.rs`) may each
            // count up to `BATCH - 1` started tasks as queued: only more
            // than that beyond one task a worker is surely a burst (the
            // exact reading would read their lines at every submission).
            let live = self.live_workers();
            let owed = live.min(self.unpaid.slots()) * (crate::sched::starts::BATCH as usize - 1);
            let burst =
                queued(self.admission.load(std::sync::atomic::Ordering::Relaxed)) > live + owed;
            if burst || (!woke && !self.sleep.has_idle()) {
                self.nudge();
            }
        }
    }

    /// Step 1 of the shard hand-off (see `keyed/shard.rs`): queue the task
    /// in its shard; a shard that became scheduled goes to its home
    /// worker's inbox.
    pub(crate) fn push_to_shard(&self, index: usize, job: JobRef, now: u64) {
        if self.shards[index].push(job, &self.counters.locks.shard) {
            // The shard job carries the time the shard's turn began (read
            // now if the task carried no stamp).
            let now = if now == 0 { self.task_now() } else { now };
            let mut turn = shard_job(index);
            turn.stamp(now);
            self.push_inbox(index % self.live_workers().max(1), turn, now);
            self.sleep.notify_one();
        }
    }

    /// Puts a shard job in worker `worker`'s inbox. Pushed into an empty
    /// inbox at `now`, the inbox counts as served then: everything in it
    /// came after (`fair.rs`).
    pub(crate) fn push_inbox(&self, worker: usize, turn: JobRef, now: u64) {
        let inbox = &self.inboxes[worker];
        // A gauge, left out of the loom models (under loom the queue is a
        // mutex queue, and the look would add a lock to every hand-off).
        if cfg!(not(loom)) && now != 0 && inbox.is_empty() {
            super::fair::Served::record(&self.served.worker(worker).inbox, now);
        }
        inbox.push(turn);
        // A submitter's count of live workers may be stale: the worker it
        // picked may have retired meanwhile, and searches look only at
        // live workers' queues. The handshake with `finish_retire` (which
        // stores the lower count, fences, then looks at its inbox): one
        // of the two sees the other's write and moves the turn to a live
        // inbox. A pool that never shrinks skips it. With no worker live
        // the turn goes to worker 0's inbox, where the next one looks.
        if self.config.min_workers < self.max_workers() {
            fence(SeqCst);
            let live = self.live.load(SeqCst).max(1);
            if worker >= live {
                self.rehome(worker, live);
            }
        }
    }

    /// Offers a task, applying the backpressure policy when the queue is full.
    #[inline(always)]
    pub(crate) fn submit<R: Runnable>(
        &self,
        body: R,
        wait: Wait,
        shard: Option<usize>,
    ) -> Result<Admitted, SubmitError<R>> {
        if self.breaker.is_some() {
            return self.submit_through_breaker(body, wait, shard);
        }
        self.submit_open(body, wait, shard)
    }

    /// `submit` past the breaker: the fast path inline, the rest out of line.
    #[inline(always)]
    fn submit_open<R: Runnable>(
        &self,
        body: R,
        wait: Wait,
        shard: Option<usize>,
    ) -> Result<Admitted, SubmitError<R>> {
        match self.try_reserve() {
            Reserve::Ok => {
                // One look at this thread's worker serves the count and
                // the choice of queue.
                let worker = self.own_worker();
                bump(
                    &self
                        .counters
                        .slot(worker.map(WorkerThread::index))
                        .submitted,
                );
                self.enqueue_from(worker, TaskJob::into_job_ref(body), shard);
                Ok(Admitted::Queued)
            }
            Reserve::Closed => Err(SubmitError::ShutDown(body)),
            Reserve::Full => self.submit_full(body, wait, shard),
        }
    }

    #[cold]
    #[inline(never)]
    fn submit_through_breaker<R: Runnable>(
        &self,
        body: R,
        wait: Wait,
        shard: Option<usize>,
    ) -> Result<Admitted, SubmitError<R>> {
        if self.is_closed() {
            return Err(SubmitError::ShutDown(body));
        }
        if self.breaker_refuses() {
            return Err(SubmitError::BreakerOpen(body));
        }
        self.submit_past_breaker(body, wait, shard)
    }

    /// Submits a task the circuit breaker let through: refused now, it
    /// gives its trial place back.
    pub(crate) fn submit_past_breaker<R: Runnable>(
        &self,
        body: R,
        wait: Wait,
        shard: Option<usize>,
    ) -> Result<Admitted, SubmitError<R>> {
        let submitted = self.submit_open(body, wait, shard);
        if submitted.is_err() {
            self.breaker_no_outcome();
        }
        submitted
    }

    /// A task the circuit breaker (if any) let through ended with no
    /// outcome, or was refused after it passed.
    pub(crate) fn breaker_no_outcome(&self) {
        if let Some(breaker) = &self.breaker {
            breaker.no_outcome();
        }
    }

    /// Whether the circuit breaker (if any) refuses a submission now; a
    /// refusal is counted as offered and rejected.
    pub(crate) fn breaker_refuses(&self) -> bool {
        match &self.breaker {
            Some(breaker) if !breaker.admit() => {
                let slot = self.counters.slot(self.own_worker_index());
                bump(&slot.submitted);
                bump(&slot.rejected);
                true
            }
            _ => false,
        }
    }

    /// The queue is full: the backpressure policy decides.
    #[cold]
    #[inline(never)]
    fn submit_full<R: Runnable>(
        &self,
        body: R,
        wait: Wait,
        shard: Option<usize>,
    ) -> Result<Admitted, SubmitError<R>> {
        let worker = self.own_worker_index();
        let slot = self.counters.slot(worker);
        // A keyed task must run inside its shard, never on the caller.
        let policy = match (self.config.backpressure, shard) {
            (Backpressure::CallerRuns, Some(_)) => Backpressure::Block,
            (policy, _) => policy,
        };
        match (policy, wait) {
            (Backpressure::Block | Backpressure::CallerRuns, Wait::Never)
            | (Backpressure::Reject, _) => {
                bump(&slot.submitted);
                bump(&slot.rejected);
                Err(SubmitError::Full(body))
            }
            (Backpressure::Block, _) => self.block_for_room(body, wait, shard),
            (Backpressure::DropNewest, _) => {
                bump(&slot.submitted);
                bump(&slot.dropped_newest);
                body.discard(TaskError::Dropped);
                Ok(Admitted::DroppedNewest)
            }
            (Backpressure::DropOldest, _) => self.evict_oldest(body, shard),
            (Backpressure::CallerRuns, _) => {
                bump(&slot.submitted);
                bump(&slot.caller_runs);
                bump_at(&slot.started, worker);
                if let Some(index) = worker {
                    // On a worker's slot, a start its histograms do not time.
                    self.counters.worker(index).timing.note_untimed();
                }
                let outcome = self.in_task_span(worker, None, || body.run());
                self.record_outcome(outcome, worker, None);
                Ok(Admitted::RanOnCaller)
            }
        }
    }

    pub(crate) fn block_for_room<R: Runnable>(
        &self,
        body: R,
        wait: Wait,
        shard: Option<usize>,
    ) -> Result<Admitted, SubmitError<R>> {
        let deadline = match wait {
            Wait::Until(d) => Some(d),
            _ => None,
        };
        let worker = self.own_worker();
        let backoff = Backoff::new();
        // A worker of another pool waiting here (a pipeline stage feeding
        // the next) counts as held up downstream in its own pool: from the
        // first refusal to the end of the wait.
        let mut held_up = None;
        loop {
            match self.try_reserve() {
                Reserve::Ok => return Ok(self.admit(body, shard)),
                Reserve::Closed => return Err(SubmitError::ShutDown(body)),
                Reserve::Full => {}
            }
            if worker.is_none() && held_up.is_none() {
                held_up = Some(self.backpressure_guard());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(self.timed_out(body));
            }
            match &worker {
                // A worker never sleeps on its own pool's queue: it runs
                // queued work until there is room (the queued tasks are
                // somewhere in this pool's queues, so it finds them or they
                // start elsewhere).
                Some(worker) => worker.help_once(),
                // Room often comes within microseconds (a worker starts the
                // next task): an outside thread looks again a few times,
                // spinning then yielding, before it sleeps. A sleeper costs
                // a futex wait here, and a lock and a wake-up on every task
                // start while it sleeps.
                None if !backoff.is_completed() => backoff.snooze(),
                None => break,
            }
        }
        let mut guard = self.room_lock.lock_counted(&self.counters.locks.room);
        self.room_waiters.fetch_add(1, SeqCst);
        // Handshake with `retire`: this registration, then `try_reserve`.
        handshake_fence();
        let result = loop {
            match self.try_reserve() {
                Reserve::Ok => break Ok(()),
                Reserve::Closed => break Err(false),
                Reserve::Full => {}
            }
            match deadline {
                None => self.room_cv.wait(&mut guard),
                Some(d) => {
                    if self.room_cv.wait_until(&mut guard, d) {
                        match self.try_reserve() {
                            Reserve::Ok => break Ok(()),
                            Reserve::Closed => break Err(false),
                            Reserve::Full => break Err(true),
                        }
                    }
                }
            }
        };
        let others = self.room_waiters.fetch_sub(1, SeqCst) - 1;
        if result.is_ok() && others > 0 {
            // Pass the baton: the next waiter re-checks (more room may have
            // been freed while this one woke).
            self.room_cv.notify_one();
        }
        drop(guard);
        drop(held_up);
        match result {
            Ok(()) => Ok(self.admit(body, shard)),
            Err(false) => Err(SubmitError::ShutDown(body)),
            Err(true) => Err(self.timed_out(body)),
        }
    }

    pub(crate) fn admit<R: Runnable>(&self, body: R, shard: Option<usize>) -> Admitted {
        bump(&self.counters.slot(self.own_worker_index()).submitted);
        self.enqueue(TaskJob::into_job_ref(body), shard);
        Admitted::Queued
    }

    pub(crate) fn timed_out<R>(&self, body: R) -> SubmitError<R> {
        let slot = self.counters.slot(self.own_worker_index());
        bump(&slot.submitted);
        bump(&slot.rejected);
        SubmitError::Timeout(body)
    }

    pub(crate) fn evict_oldest<R: Runnable>(
        &self,
        body: R,
        shard: Option<usize>,
    ) -> Result<Admitted, SubmitError<R>> {
        loop {
            match self.try_reserve() {
                Reserve::Ok => return Ok(self.admit(body, shard)),
                Reserve::Closed => return Err(SubmitError::ShutDown(body)),
                Reserve::Full => {}
            }
            if let Some(oldest) = self.steal_oldest_task() {
                // The evicted task's place (queued and pending) passes to the
                // new one: the admission word does not change.
                let slot = self.counters.slot(self.own_worker_index());
                bump(&slot.submitted);
                bump(&slot.dropped_oldest);
                oldest.discard(TaskError::Dropped);
                self.enqueue(TaskJob::into_job_ref(body), shard);
                return Ok(Admitted::Queued);
            }
            // Every queued task is between a queue and its start: retry.
            thread::yield_now();
        }
    }

    /// The oldest waiting task: the injector's front, else the front of a
    /// worker's deque, else the front of a keyed shard's queue. Internal
    /// jobs met on the way go to the side queue.
    pub(crate) fn steal_oldest_task(&self) -> Option<JobRef> {
        if let Some(job) = self.injector.pop() {
            return Some(job);
        }
        for stealer in self.stealers.iter() {
            loop {
                match stealer.steal() {
                    Steal::Success(job) if job.kind() == JobKind::Task => return Some(job),
                    Steal::Success(job) => {
                        self.side.push(job);
                        self.sleep.notify_one();
                    }
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
        // A shard's front is its oldest task; its order among the rest holds.
        self.shards
            .iter()
            .find_map(|s| s.pop_oldest(&self.counters.locks.shard))
    }

    /// Admits an `install` job: a `pending` place (shutdown waits for it;
    /// workers do not exit while it is queued) but no queue place (an
    /// install's caller is blocked on it, so it is never refused for room).
    /// Returns `false` once shutdown began.
    pub(crate) fn admit_install(&self) -> bool {
        let before = self.admission.fetch_add(PENDING_ONE, SeqCst);
        if closed(before) {
            self.retire(PENDING_ONE);
            return false;
        }
        bump(&self.counters.slot(self.own_worker_index()).submitted);
        true
    }

    /// A worker starts a task: its queue place is retired, with the
    /// `pending` places of `owed` earlier finished tasks, in one RMW.
    pub(super) fn start_task(&self, owed: u64) {
        self.retire(QUEUED_ONE + owed * PENDING_ONE);
        self.notify_room();
    }

    /// An install job finished: its `pending` place is retired.
    pub(super) fn finish_install(&self) {
        self.retire(PENDING_ONE);
    }

    /// Whether shutdown is abandoning queued tasks (a popped task is then
    /// discarded, not run).
    #[inline]
    pub(super) fn is_abandoning(&self) -> bool {
        // Acquire pairs with the SeqCst store in `abandon_queued`.
        self.abandon.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Retires `owed` finished tasks' `pending` places.
    pub(crate) fn pay(&self, owed: u64) {
        if owed > 0 {
            self.retire(owed * PENDING_ONE);
        }
    }

    /// Whether an outside thread waits for room in the queue.
    #[inline]
    pub(crate) fn has_room_waiters(&self) -> bool {
        // SeqCst: the load half of a handshake (see `notify_room`, and
        // `WorkerThread::start_batched`).
        self.room_waiters.load(SeqCst) > 0
    }

    #[inline]
    pub(crate) fn notify_room(&self) {
        // SeqCst: pairs with `fetch_add` + `try_reserve` in `block_for_room`
        // (either the waiter sees the freed room or this sees the waiter).
        if self.room_waiters.load(SeqCst) > 0 {
            self.wake_room_waiter();
        }
    }

    #[cold]
    fn wake_room_waiter(&self) {
        let _guard = self.room_lock.lock_counted(&self.counters.locks.room);
        self.room_cv.notify_one();
    }

    /// Retires `delta` from the admission word and wakes whoever waits on it.
    pub(crate) fn retire(&self, delta: u64) {
        let before = self.admission.fetch_sub(delta, SeqCst);
        // Handshake with `wait_for` and `block_for_room`: this decrement,
        // then the loads of their waiter counts.
        handshake_fence();
        if closed(before) && pending(before) == pending(delta) && pending(delta) > 0 {
            // Termination: the last task after close; workers may exit.
            self.sleep.wake_all();
        }
        // Waiters wait for `pending` to reach 0 (outside the pool) or the
        // number of tasks that are themselves waiting (inside): only then
        // can their condition have become true. (Waking them on every
        // retirement cost a futex wake per task while anyone waited.) An
        // inside waiter counts itself in `inside_idle` before it registers,
        // so a retirement that sees the registration sees the count too.
        let after = pending(before) - pending(delta);
        if after <= self.inside_idle.load(SeqCst) {
            self.wake_idle_waiters();
        }
    }

    /// Whether workers should leave: closed and nothing pending.
    pub(crate) fn should_exit(&self) -> bool {
        let word = self.admission.load(SeqCst);
        closed(word) && pending(word) == 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        closed(self.admission.load(SeqCst))
    }
}
