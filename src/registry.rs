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
//! * start: `queued -= 1`; finish: `pending -= 1`;
//! * discard (abandon, evict): `queued -= 1, pending -= 1`;
//! * close: `fetch_or(CLOSED)`. A submission either reserved before the close
//!   in the word's modification order (and is counted in `pending`, so
//!   shutdown waits for it or abandons it), or sees `CLOSED` and fails with
//!   `ShutDown`. Nothing slips between.
//! * Workers exit when `CLOSED` is set and `pending == 0`; the finish that
//!   brings `pending` to zero after the close wakes every parked worker.

use crate::breaker::Breaker;
use crate::builder::{Backpressure, Config, TaskPanic};
use crate::cancel::CancelToken;
use crate::clock::{ticks, Calibration};
use crate::error::{SubmitError, TaskError};
use crate::handle::Waiter;
use crate::histogram::Histogram;
use crate::job::{
    drop_payload, panic_message, shard_job, JobKind, JobRef, Outcome, Runnable, TaskJob,
};
use crate::loom::handshake_fence;
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::{Arc, Condvar, Mutex};
use crate::loom::thread::{self, JoinHandle};
use crate::metrics::{
    bump, bump_at, Counters, LockStats, Metrics, PoolDump, WorkerDump, WorkerState,
};
use crate::queue::{GlobalQueue, Injector, Local, LocalQueue, Steal, StealQueue, Stealer};
use crate::shard::{Shard, Sharder};
use crate::sleep::Parker;
use crate::sleep::Sleep;
use crate::worker::WorkerThread;
use crate::ShutdownReport;
use crossbeam_utils::CachePadded;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

const CLOSED: u64 = 1 << 63;
const PENDING_ONE: u64 = 1 << 32;
const QUEUED_ONE: u64 = 1;
const QUEUED_MASK: u64 = PENDING_ONE - 1;

fn queued(word: u64) -> usize {
    (word & QUEUED_MASK) as usize
}

fn pending(word: u64) -> usize {
    ((word & !CLOSED) >> 32) as usize
}

fn closed(word: u64) -> bool {
    word & CLOSED != 0
}

enum Reserve {
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

/// How shutdown treats queued tasks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownMode {
    /// Run everything queued.
    Drain,
    /// Run queued tasks until the instant, then abandon the rest.
    Deadline(Instant),
    /// Abandon everything queued now.
    Now,
}

#[derive(Default)]
struct Threads {
    /// The watchdog's and the supervisor's threads.
    handles: Vec<JoinHandle<()>>,
    /// Worker threads by index (a retired worker's until it is joined).
    workers: Vec<Option<JoinHandle<()>>>,
    joining: bool,
    joined: bool,
}

/// The shared state of one pool.
pub(crate) struct Registry {
    admission: CachePadded<AtomicU64>,
    injector: Injector,
    /// Internal jobs displaced from a worker's deque (by eviction or
    /// shutdown); never abandoned.
    side: Injector,
    stealers: Box<[Stealer]>,
    /// Per worker: shards scheduled on it (FIFO; others may steal).
    inboxes: Box<[Injector]>,
    /// The keyed shards.
    pub(crate) shards: Box<[Shard]>,
    pub(crate) sharder: Sharder,
    pub(crate) sleep: Sleep,
    /// Outside threads blocked for room (`Backpressure::Block`).
    room_waiters: CachePadded<AtomicUsize>,
    room_lock: Mutex<()>,
    room_cv: Condvar,
    /// Threads waiting for the pool to become idle (or to drain).
    idle_waiters: CachePadded<AtomicUsize>,
    idle_list: Mutex<Vec<(u64, Waiter)>>,
    next_waiter_id: AtomicU64,
    /// `wait_idle` calls in progress on this pool's own workers.
    inside_idle: AtomicUsize,
    /// Workers blocked in a wait that does not help (`join_blocking`).
    blocked: AtomicUsize,
    abandon: AtomicBool,
    /// `pause()`: workers take no task from the queues (internal jobs,
    /// which running tasks wait for, still run).
    paused: AtomicBool,
    pub(crate) counters: Counters,
    /// Workers running now: indices `0..live` (see `spawn_worker`).
    live: CachePadded<AtomicUsize>,
    /// Workers at or above this index retire when idle (`usize::MAX`: none).
    retire_at: AtomicUsize,
    /// The deques of worker slots that have no running worker.
    spare: Mutex<Vec<Option<Local>>>,
    /// The worker count the supervisor is growing the pool to (0: not
    /// growing); new workers help it get there (`help_grow`). A plain `std`
    /// atomic, as is `batches`: hints that take part in no protocol (every
    /// job is taken exactly once either way), left out of the loom models.
    grow_target: std::sync::atomic::AtomicUsize,
    /// Whether workers take batches from the injector (compute tasks: less
    /// contention) or one task at a time (blocking tasks; the supervisor
    /// decides, see `scaling::takes_batches`).
    batches: std::sync::atomic::AtomicBool,
    /// Where the supervisor sleeps between samples; `nudge` wakes it.
    pub(crate) supervisor: Arc<Parker>,
    nudged: AtomicBool,
    /// The worker count the supervisor aims at (a gauge).
    pub(crate) target: AtomicUsize,
    resizes: Mutex<std::collections::VecDeque<crate::scaling::ResizeEvent>>,
    threads: Mutex<Threads>,
    threads_cv: Condvar,
    pub(crate) config: Config,
    /// Whether tasks are timed (histograms, or the stall watchdog).
    timing: bool,
    /// Converts ticks to time for snapshots.
    pub(crate) calibration: Calibration,
    /// Where the stall watchdog sleeps between checks.
    pub(crate) watchdog: Arc<Parker>,
    /// The root of every task's cancellation token; cancelled when shutdown
    /// abandons work.
    pub(crate) token: CancelToken,
    breaker: Option<Breaker>,
}

impl Registry {
    /// A registry with a slot for each of `locals` (one per possible
    /// worker); no worker runs yet (see `spawn_worker`).
    pub(crate) fn new(config: Config, locals: Vec<Local>) -> Self {
        let workers = locals.len();
        let stealers = locals.iter().map(LocalQueue::stealer).collect();
        let locks = std::sync::Arc::new(LockStats::default());
        Registry {
            live: CachePadded::new(AtomicUsize::new(0)),
            retire_at: AtomicUsize::new(usize::MAX),
            spare: Mutex::new(locals.into_iter().map(Some).collect()),
            grow_target: std::sync::atomic::AtomicUsize::new(0),
            batches: std::sync::atomic::AtomicBool::new(true),
            supervisor: Arc::new(Parker::default()),
            nudged: AtomicBool::new(false),
            target: AtomicUsize::new(config.min_workers),
            resizes: Mutex::new(std::collections::VecDeque::new()),
            timing: config.histograms || config.stall_threshold.is_some(),
            calibration: Calibration::now(),
            watchdog: Arc::new(Parker::default()),
            token: CancelToken::new(),
            breaker: config.breaker.clone().map(Breaker::new),
            admission: CachePadded::new(AtomicU64::new(0)),
            injector: Injector::new(),
            side: Injector::new(),
            stealers,
            inboxes: (0..workers).map(|_| Injector::new()).collect(),
            shards: (0..config.shards).map(|_| Shard::default()).collect(),
            sharder: Sharder::new(config.shards),
            sleep: Sleep::new(workers, 0, std::sync::Arc::clone(&locks)),
            room_waiters: CachePadded::new(AtomicUsize::new(0)),
            room_lock: Mutex::new(()),
            room_cv: Condvar::new(),
            idle_waiters: CachePadded::new(AtomicUsize::new(0)),
            idle_list: Mutex::new(Vec::new()),
            next_waiter_id: AtomicU64::new(0),
            inside_idle: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            abandon: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            counters: Counters::new(workers, locks),
            threads: Mutex::new(Threads {
                workers: (0..workers).map(|_| None).collect(),
                ..Threads::default()
            }),
            threads_cv: Condvar::new(),
            config,
        }
    }

    /// Worker slots: the most workers the pool may run.
    pub(crate) fn max_workers(&self) -> usize {
        self.stealers.len()
    }

    pub(crate) fn stealers(&self) -> &[Stealer] {
        &self.stealers
    }

    pub(crate) fn add_thread(&self, handle: JoinHandle<()>) {
        self.threads.lock().handles.push(handle);
    }

    /// Workers running now (indices `0..live`).
    #[inline]
    pub(crate) fn live_workers(&self) -> usize {
        // Relaxed: a routing hint (shard homes, gauges); the slots of all
        // `max` workers stay valid, so a stale value only picks another
        // inbox, from which any worker may steal.
        self.live.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts the next worker (index `live`) unless the pool already has
    /// `limit` workers or its threads are being joined (shutdown): then
    /// `Ok(None)`. Step 1 of resizing: under the spare-slot lock, take the
    /// slot's deque, count the worker live and unparked, then start its
    /// thread.
    pub(crate) fn spawn_worker(this: &Arc<Self>, limit: usize) -> std::io::Result<Option<usize>> {
        let self_ = &**this;
        if self_.threads.lock().joining {
            return Ok(None);
        }
        let mut spare = self_.spare.lock();
        let index = self_.live.load(SeqCst);
        if index >= limit {
            return Ok(None);
        }
        let Some(local) = spare.get_mut(index).and_then(Option::take) else {
            return Err(std::io::Error::other("no free worker slot"));
        };
        self_.sleep.add_worker();
        self_.live.store(index + 1, SeqCst);
        drop(spare);
        let mut builder = thread::Builder::new().name(self_.worker_name(index));
        if let Some(size) = self_.config.stack_size {
            builder = builder.stack_size(size);
        }
        let registry = Arc::clone(this);
        match builder.spawn(move || crate::worker::run(registry, index, local)) {
            Ok(handle) => {
                let mut threads = self_.threads.lock();
                if threads.joining {
                    // Shutdown took the handles to join after this worker
                    // was counted: join it here (the pool is closed and
                    // drained, so it leaves at once) rather than leak it.
                    drop(threads);
                    let _ = handle.join();
                    return Ok(Some(index));
                }
                let old = threads.workers[index].replace(handle);
                drop(threads);
                if let Some(old) = old {
                    // A retired worker of this slot; it has left its loop.
                    let _ = old.join();
                }
                Ok(Some(index))
            }
            Err(e) => {
                // The slot's deque went with the closure: this slot stays
                // unused (the pool can no longer grow past it).
                self_.live.store(index, SeqCst);
                self_.sleep.remove_worker();
                Err(e)
            }
        }
    }

    /// Worker threads started and not yet joined (loom models check that
    /// shutdown leaves none).
    #[cfg(all(loom, test))]
    pub(crate) fn unjoined_workers(&self) -> usize {
        self.threads.lock().workers.iter().flatten().count()
    }

    /// Grows the pool to `target` workers (fewer if the OS refuses a thread
    /// or shutdown began), with help: every worker started meanwhile first
    /// starts one more (`help_grow`). Returns the live workers after.
    pub(crate) fn grow_to(this: &Arc<Self>, target: usize) -> usize {
        // Relaxed: a hint for helpers; `spawn_worker` checks the limit
        // under the spare-slot lock.
        this.grow_target
            .store(target, std::sync::atomic::Ordering::Relaxed);
        while let Ok(Some(_)) = Registry::spawn_worker(this, target) {}
        this.grow_target
            .store(0, std::sync::atomic::Ordering::Relaxed);
        this.live_workers()
    }

    /// How many jobs a worker takes from the injector at most: its fair
    /// share of the queue. A burst of long tasks into many idle workers must
    /// not pile up on the first few (with 1,000 tasks of 2 ms and 300
    /// workers, batches of 32 kept the last ones waiting 20 ms where 8
    /// would do). A size hint: the loom models, which check which jobs move
    /// and not how many, leave it out.
    #[inline]
    fn batch_limit(&self) -> usize {
        #[cfg(not(loom))]
        {
            self.injector.len() / self.live_workers().max(1)
        }
        #[cfg(loom)]
        {
            usize::MAX
        }
    }

    /// Switches the workers between taking batches from the injector and
    /// taking one task at a time.
    pub(crate) fn set_batches(&self, on: bool) {
        // Relaxed: a hint (see `take_global`).
        self.batches.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// On a new worker's thread, before it looks for work: while the pool
    /// grows, start one more worker.
    pub(crate) fn help_grow(this: &Arc<Self>) {
        // Relaxed: see `grow_to`.
        let target = this.grow_target.load(std::sync::atomic::Ordering::Relaxed);
        if target != 0 && this.live_workers() < target {
            let _ = Registry::spawn_worker(this, target);
        }
    }

    /// Asks the workers at `live..` down to `target` to retire when idle
    /// (the highest first) and wakes the highest.
    pub(crate) fn request_retire(&self, target: usize) {
        self.retire_at.store(target, SeqCst);
        let live = self.live.load(SeqCst);
        if live > 0 {
            // A parked worker re-checks `should_retire` when woken.
            self.sleep.parker(live - 1).unpark();
        }
    }

    /// Whether worker `index` should retire now: it is the highest live
    /// worker and above the retirement target (never below `min_workers`).
    pub(crate) fn should_retire(&self, index: usize) -> bool {
        index >= self.retire_at.load(SeqCst)
            && index >= self.config.min_workers
            && index + 1 == self.live.load(SeqCst)
    }

    /// Step 2 of retiring, on the retiring worker while it is still live:
    /// its deque's jobs go to the injector, its inbox's shards to the
    /// inboxes of the workers that remain.
    pub(crate) fn hand_over(&self, index: usize, local: &Local) {
        let mut moved = false;
        while let Some(job) = local.pop() {
            self.injector.push(job);
            moved = true;
        }
        let remaining = index.max(1);
        loop {
            match self.inboxes[index].steal() {
                Steal::Success(job) => {
                    let home = job.shard_index() % remaining;
                    self.inboxes[home].push(job);
                    moved = true;
                }
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        if moved {
            self.sleep.notify_one();
        }
    }

    /// Step 3 of retiring, after the worker left its loop: under the
    /// spare-slot lock, give the deque back to its slot and stop counting
    /// the worker.
    pub(crate) fn finish_retire(&self, index: usize, local: Local) {
        let mut spare = self.spare.lock();
        spare[index] = Some(local);
        self.live.store(index, SeqCst);
        self.sleep.remove_worker();
    }

    /// Wakes the supervisor early: at most once between two of its timed
    /// samples (see `rearm_nudge`).
    #[inline]
    pub(crate) fn nudge(&self) {
        // Relaxed first load: a filter; the swap decides.
        if self.config.min_workers < self.max_workers()
            && !self.nudged.load(std::sync::atomic::Ordering::Relaxed)
            && !self.nudged.swap(true, SeqCst)
        {
            self.supervisor.unpark();
        }
    }

    /// Lets the next `nudge` wake the supervisor again. The supervisor calls
    /// it at its timed samples only, so a standing backlog (say, of compute
    /// work the pool will not grow for) wakes it at most once per interval.
    pub(crate) fn rearm_nudge(&self) {
        self.nudged.store(false, SeqCst);
    }

    /// Records a resize (bounded history, counters, callback).
    pub(crate) fn record_resize(&self, event: crate::scaling::ResizeEvent) {
        let slot = self.counters.slot(None);
        if event.to > event.from {
            bump(&slot.resizes_up);
        } else {
            bump(&slot.resizes_down);
        }
        if let Some(callback) = &self.config.on_resize {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| callback(&event)));
        }
        let mut history = self.resizes.lock();
        if history.len() == 256 {
            history.pop_front();
        }
        history.push_back(event);
    }

    /// The recorded resizes, oldest first (the last 256).
    pub(crate) fn resize_history(&self) -> Vec<crate::scaling::ResizeEvent> {
        self.resizes.lock().iter().cloned().collect()
    }

    /// Joins retired workers' threads that have left.
    #[cfg(not(loom))]
    pub(crate) fn reap_retired(&self) {
        let live = self.live.load(SeqCst);
        let finished: Vec<_> = {
            let mut threads = self.threads.lock();
            threads.workers[live..]
                .iter_mut()
                .filter(|h| h.as_ref().is_some_and(JoinHandle::is_finished))
                .filter_map(Option::take)
                .collect()
        };
        for handle in finished {
            let _ = handle.join();
        }
    }

    /// loom's join handles cannot tell whether a thread has left; retired
    /// workers are joined at shutdown there.
    #[cfg(loom)]
    pub(crate) fn reap_retired(&self) {}

    /// The calling thread's worker, if it is one of this pool's.
    pub(crate) fn own_worker(&self) -> Option<&'static WorkerThread> {
        WorkerThread::current().filter(|w| std::ptr::eq(w.registry(), self))
    }

    fn own_worker_index(&self) -> Option<usize> {
        self.own_worker().map(WorkerThread::index)
    }

    // ----- admission -------------------------------------------------------

    fn try_reserve(&self) -> Reserve {
        // One `fetch_add` takes the place; a refused reservation is undone.
        // (A CAS loop would retry under the workers' constant decrements.)
        // While undone places are in flight, `queued` may exceed the true
        // count by the number of concurrently refused submitters, so a racing
        // submitter at the very edge of capacity may see `Full`: "full" is
        // decided at the moment of the `fetch_add`, as if those refused
        // submissions were still holding their places.
        // A plain load first: a closed or full pool is refused without
        // touching the word (so transient places are only taken in a race).
        let word = self.admission.load(SeqCst);
        if closed(word) {
            return Reserve::Closed;
        }
        if queued(word) >= self.config.capacity {
            return Reserve::Full;
        }
        // SeqCst: the add takes part in the Dekker-style handshakes with
        // `retire`/`notify_room` (room waiters) and with `shutdown`.
        let before = self.admission.fetch_add(QUEUED_ONE + PENDING_ONE, SeqCst);
        if closed(before) {
            self.retire(QUEUED_ONE + PENDING_ONE);
            Reserve::Closed
        } else if queued(before) >= self.config.capacity {
            self.retire(QUEUED_ONE + PENDING_ONE);
            Reserve::Full
        } else {
            Reserve::Ok
        }
    }

    /// Puts an admitted job where a worker will find it and wakes one if
    /// needed: a worker's own deque when called on this pool's worker (the
    /// job stays near the data its submitter touched), else the injector.
    pub(crate) fn enqueue(&self, mut job: JobRef, shard: Option<usize>) {
        if self.timing {
            job.stamp(ticks());
        }
        if let Some(index) = shard {
            return self.push_to_shard(index, job);
        }
        match self.own_worker() {
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
            // nudge waits for the next sample, it loses nothing.
            let burst = queued(self.admission.load(std::sync::atomic::Ordering::Relaxed))
                > self.live_workers();
            if burst || (!woke && !self.sleep.has_idle()) {
                self.nudge();
            }
        }
    }

    /// Step 1 of the shard hand-off (see `shard.rs`).
    fn push_to_shard(&self, index: usize, job: JobRef) {
        let shard = &self.shards[index];
        let schedule = {
            let mut queue = shard.queue.lock_counted(&self.counters.locks.shard);
            queue.tasks.push_back(job);
            !std::mem::replace(&mut queue.scheduled, true)
        };
        if schedule {
            self.inboxes[index % self.live_workers().max(1)].push(shard_job(index));
            self.sleep.notify_one();
        }
    }

    /// Worker `index`'s inbox of scheduled shards.
    pub(crate) fn inbox(&self, index: usize) -> &Injector {
        &self.inboxes[index]
    }

    /// Offers a task, applying the backpressure policy when the queue is full.
    pub(crate) fn submit<R: Runnable>(
        &self,
        body: R,
        wait: Wait,
        shard: Option<usize>,
    ) -> Result<Admitted, SubmitError<R>> {
        let worker = self.own_worker_index();
        let slot = self.counters.slot(worker);
        if let Some(breaker) = &self.breaker {
            if self.is_closed() {
                return Err(SubmitError::ShutDown(body));
            }
            if !breaker.admit() {
                bump(&slot.submitted);
                bump(&slot.rejected);
                return Err(SubmitError::BreakerOpen(body));
            }
        }
        match self.try_reserve() {
            Reserve::Ok => {
                bump(&slot.submitted);
                self.enqueue(TaskJob::into_job_ref(body), shard);
                return Ok(Admitted::Queued);
            }
            Reserve::Closed => return Err(SubmitError::ShutDown(body)),
            Reserve::Full => {}
        }
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
                let outcome = body.run();
                self.record_outcome(outcome, worker);
                Ok(Admitted::RanOnCaller)
            }
        }
    }

    fn block_for_room<R: Runnable>(
        &self,
        body: R,
        wait: Wait,
        shard: Option<usize>,
    ) -> Result<Admitted, SubmitError<R>> {
        let deadline = match wait {
            Wait::Until(d) => Some(d),
            _ => None,
        };
        if let Some(worker) = self.own_worker() {
            // A worker never sleeps on its own pool's queue: it runs queued
            // work until there is room (the queued tasks are somewhere in
            // this pool's queues, so it finds them or they start elsewhere).
            loop {
                match self.try_reserve() {
                    Reserve::Ok => return Ok(self.admit(body, shard)),
                    Reserve::Closed => return Err(SubmitError::ShutDown(body)),
                    Reserve::Full => {}
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(self.timed_out(body));
                }
                match worker.find_work() {
                    Some(job) => worker.execute(job),
                    None => {
                        worker.pay_owed();
                        thread::yield_now();
                    }
                }
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
        match result {
            Ok(()) => Ok(self.admit(body, shard)),
            Err(false) => Err(SubmitError::ShutDown(body)),
            Err(true) => Err(self.timed_out(body)),
        }
    }

    fn admit<R: Runnable>(&self, body: R, shard: Option<usize>) -> Admitted {
        bump(&self.counters.slot(self.own_worker_index()).submitted);
        self.enqueue(TaskJob::into_job_ref(body), shard);
        Admitted::Queued
    }

    fn timed_out<R>(&self, body: R) -> SubmitError<R> {
        let slot = self.counters.slot(self.own_worker_index());
        bump(&slot.submitted);
        bump(&slot.rejected);
        SubmitError::Timeout(body)
    }

    fn evict_oldest<R: Runnable>(
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
    fn steal_oldest_task(&self) -> Option<JobRef> {
        loop {
            match self.injector.steal() {
                Steal::Success(job) => return Some(job),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
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
        self.shards.iter().find_map(|s| {
            s.queue
                .lock_counted(&self.counters.locks.shard)
                .tasks
                .pop_front()
        })
    }

    // ----- running ----------------------------------------------------------

    /// Runs (or, once shutdown abandons, discards) a popped task.
    ///
    /// `owed` is the number of this thread's earlier tasks that finished
    /// without retiring their `pending` place yet; it is paid here, folded
    /// into this task's start, so a busy worker touches the admission word
    /// once per task. Returns the new debt: this task's place, which the
    /// caller pays with [`pay`](Self::pay) before it waits, parks or runs
    /// anything but a task.
    ///
    /// `may_hold`: whether a pause may put the task back (not for a keyed
    /// task, which must run inside its shard).
    ///
    /// `prev_end` is the tick at which this worker's previous task ended if
    /// it came straight here (no search, no park), else 0: it then serves
    /// as this task's start, saving a clock read; the error is the time to
    /// pop a job, below the histograms' first bucket. Returns the new debt
    /// and the tick at which this task ended (0 when not timed).
    pub(crate) fn run_task(
        &self,
        job: JobRef,
        index: usize,
        owed: u64,
        prev_end: u64,
        may_hold: bool,
    ) -> (u64, u64) {
        let worker = Some(index);
        // A keyed task popped by its shard's runner is never held: it must
        // not leave its shard (the runner re-checks the pause between tasks).
        if may_hold && self.is_paused() {
            // Popped after `pause()` returned (or about then): it waits for
            // `resume` in the injector instead of starting.
            self.pay(owed);
            self.hold(job);
            return (0, 0);
        }
        // Acquire pairs with the SeqCst store in `abandon_queued`.
        if self.abandon.load(std::sync::atomic::Ordering::Acquire) {
            self.pay(owed);
            self.discard_task(job, TaskError::Abandoned, worker);
            return (0, 0);
        }
        self.retire(QUEUED_ONE + owed * PENDING_ONE);
        self.notify_room();
        let slot = self.counters.slot(worker);
        bump_at(&slot.started, worker);
        let start = match (self.timing, prev_end) {
            (false, _) => 0,
            (true, 0) => ticks(),
            (true, t) => t,
        };
        if self.config.histograms {
            self.counters.queue_wait[index].record(start.saturating_sub(job.enqueued()));
        }
        let status = &self.counters.status[index];
        // A task run while another waits on this worker (helping) restores
        // the outer task's status after it; otherwise the worker is idle
        // until its next state change (next task, search, park). (Left
        // `Running`, a worker preempted between tasks read as a task
        // that had run, asleep, since the last one started.)
        let outer = if self.config.track_workers {
            let outer = status.read();
            status.start_task(start);
            outer
        } else {
            (WorkerState::Unknown, 0)
        };
        let outcome = job.run();
        let end = if self.timing { ticks() } else { 0 };
        if self.config.histograms {
            self.counters.run_time[index].record(end.saturating_sub(start));
        }
        if outer.0 == WorkerState::Running {
            status.start_task(outer.1);
        } else if self.config.track_workers {
            status.set(WorkerState::Idle);
        }
        self.record_outcome(outcome, worker);
        (1, end)
    }

    /// Records worker `index`'s state (when workers are tracked).
    #[inline]
    pub(crate) fn set_state(&self, index: usize, state: WorkerState) {
        if self.config.track_workers {
            self.counters.status[index].set(state);
        }
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

    /// Puts an admitted install job or another internal job on the side
    /// queue (never abandoned, never evicted) and wakes a worker.
    pub(crate) fn push_side(&self, job: JobRef) {
        self.side.push(job);
        self.sleep.notify_one();
    }

    /// Runs an install job popped by worker `worker`: counted like a task,
    /// its panic forwarded to the caller; then its place is retired.
    pub(crate) fn run_install(&self, job: JobRef, worker: usize) {
        bump_at(&self.counters.slot(Some(worker)).started, Some(worker));
        let outcome = job.run();
        self.record_outcome(outcome, Some(worker));
        self.retire(PENDING_ONE);
    }

    /// Retires `owed` finished tasks' `pending` places.
    pub(crate) fn pay(&self, owed: u64) {
        if owed > 0 {
            self.retire(owed * PENDING_ONE);
        }
    }

    fn notify_room(&self) {
        // SeqCst: pairs with `fetch_add` + `try_reserve` in `block_for_room`
        // (either the waiter sees the freed room or this sees the waiter).
        if self.room_waiters.load(SeqCst) > 0 {
            let _guard = self.room_lock.lock_counted(&self.counters.locks.room);
            self.room_cv.notify_one();
        }
    }

    /// Counts a finished task and reports its panic.
    pub(crate) fn record_outcome(&self, outcome: Outcome, worker: Option<usize>) {
        let slot = self.counters.slot(worker);
        if let Some(breaker) = &self.breaker {
            match outcome {
                Outcome::Done | Outcome::Late => breaker.record(true),
                Outcome::Panicked(_) | Outcome::PanicForwarded | Outcome::TimedOut => {
                    breaker.record(false)
                }
                Outcome::Cancelled => {}
            }
        }
        match outcome {
            Outcome::Done => bump_at(&slot.completed, worker),
            Outcome::Late => {
                bump_at(&slot.completed, worker);
                bump_at(&slot.deadline_missed, worker);
            }
            Outcome::TimedOut => bump_at(&slot.timed_out, worker),
            Outcome::Cancelled => bump_at(&slot.cancelled, worker),
            Outcome::PanicForwarded => bump_at(&slot.panicked, worker),
            Outcome::Panicked(payload) => {
                bump_at(&slot.panicked, worker);
                if let Some(handler) = &self.config.panic_handler {
                    let report = TaskPanic {
                        thread: thread::current().name().map(str::to_owned),
                        message: panic_message(&*payload),
                    };
                    // A panicking handler is contained too.
                    let _ = panic::catch_unwind(AssertUnwindSafe(|| handler(&report)));
                }
                drop_payload(payload);
            }
        }
    }

    /// Discards a queued task unrun.
    fn discard_task(&self, job: JobRef, why: TaskError, worker: Option<usize>) {
        job.discard(why);
        bump_at(&self.counters.slot(worker).abandoned, worker);
        self.retire(QUEUED_ONE + PENDING_ONE);
        self.notify_room();
    }

    /// Retires `delta` from the admission word and wakes whoever waits on it.
    fn retire(&self, delta: u64) {
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

    fn wake_idle_waiters(&self) {
        // SeqCst: pairs with the registration in `wait_for` (either the
        // waiter sees the new word or this sees the waiter).
        if self.idle_waiters.load(SeqCst) > 0 {
            for (_, waiter) in self
                .idle_list
                .lock_counted(&self.counters.locks.idle_waiters)
                .iter()
            {
                waiter.wake_ref();
            }
        }
    }

    /// Whether workers should leave: closed and nothing pending.
    pub(crate) fn should_exit(&self) -> bool {
        let word = self.admission.load(SeqCst);
        closed(word) && pending(word) == 0
    }

    /// Whether the pool is paused.
    #[inline]
    pub(crate) fn is_paused(&self) -> bool {
        // Relaxed would do for the hint; SeqCst keeps `resume`'s wake-up
        // simple to argue (it wakes every sleeper after clearing the flag).
        self.paused.load(SeqCst)
    }

    /// Stops handing queued tasks to workers; idempotent.
    pub(crate) fn pause(&self) {
        self.paused.store(true, SeqCst);
    }

    /// Hands queued tasks to workers again; idempotent.
    pub(crate) fn resume(&self) {
        if self.paused.swap(false, SeqCst) {
            self.sleep.wake_all();
        }
    }

    /// Parks a task a paused worker found on its own deque in the injector,
    /// where it waits for `resume` with the rest.
    pub(crate) fn hold(&self, job: JobRef) {
        self.injector.push(job);
    }

    /// Takes an internal job (a paused worker's only work).
    pub(crate) fn take_side(&self) -> Option<JobRef> {
        loop {
            match self.side.steal() {
                Steal::Success(job) => return Some(job),
                Steal::Retry => continue,
                Steal::Empty => return None,
            }
        }
    }

    /// Whether any queue visibly holds work (re-check before parking).
    pub(crate) fn has_work(&self) -> bool {
        if self.is_paused() {
            return !self.side.is_empty();
        }
        !self.injector.is_empty()
            || !self.side.is_empty()
            || self.stealers.iter().any(|s| s.len() > 0)
            || self.inboxes.iter().any(|i| !i.is_empty())
    }

    /// Takes work from the global queues: a batch of the injector into
    /// `local` (one of it returned), else an internal job from the side
    /// queue.
    pub(crate) fn take_global(&self, local: &crate::queue::Local) -> Option<JobRef> {
        // Relaxed: a hint from the supervisor (either way every job is
        // taken exactly once).
        if !self.batches.load(std::sync::atomic::Ordering::Relaxed) {
            // Blocking tasks: one at a time, so that no worker holds a
            // batch of them that only it (or a thief, one by one) will run.
            loop {
                match self.injector.steal() {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
        loop {
            match self.injector.steal_batch_and_pop(local, self.batch_limit()) {
                Steal::Success(job) => return Some(job),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        loop {
            match self.side.steal() {
                Steal::Success(job) => return Some(job),
                Steal::Retry => continue,
                Steal::Empty => return None,
            }
        }
    }

    // ----- waiting ------------------------------------------------------------

    /// Waits until `cond(admission word)` holds, or `deadline` passes
    /// (returns `false` then). On this pool's worker, it helps meanwhile.
    fn wait_for(&self, cond: &dyn Fn(u64) -> bool, deadline: Option<Instant>) -> bool {
        if cond(self.admission.load(SeqCst)) {
            return true;
        }
        let id = self.next_waiter_id.fetch_add(1, SeqCst);
        let worker = self.own_worker();
        let waiter = Waiter::current();
        let parker = match &waiter {
            Waiter::Parker(p) => Arc::clone(p),
            _ => unreachable!("the current thread waits on a parker"),
        };
        self.idle_list.lock().push((id, waiter));
        self.idle_waiters.fetch_add(1, SeqCst);
        // Handshake with `retire`: this registration, then the loads of the
        // admission word below.
        handshake_fence();
        let mut met = true;
        match worker {
            Some(w) => w.wait_until(&|| cond(self.admission.load(SeqCst))),
            None => {
                while !cond(self.admission.load(SeqCst)) {
                    match deadline {
                        None => parker.park(),
                        Some(d) => {
                            if Instant::now() >= d {
                                met = cond(self.admission.load(SeqCst));
                                break;
                            }
                            parker.park_until(d);
                        }
                    }
                }
            }
        }
        self.idle_waiters.fetch_sub(1, SeqCst);
        self.idle_list.lock().retain(|(i, _)| *i != id);
        met
    }

    /// Blocks until nothing is queued or running. On this pool's own worker
    /// (a task calling it), "running" excludes the tasks that are themselves
    /// in `wait_idle`, and the worker runs queued work while it waits.
    pub(crate) fn wait_idle(&self) {
        if self.own_worker().is_some() {
            self.inside_idle.fetch_add(1, SeqCst);
            self.wait_for(
                &|w| queued(w) == 0 && pending(w) <= self.inside_idle.load(SeqCst),
                None,
            );
            self.inside_idle.fetch_sub(1, SeqCst);
            // Others waiting may now be satisfied.
            self.wake_idle_waiters();
        } else {
            self.wait_for(&|w| pending(w) == 0, None);
        }
    }

    /// Counts the calling worker as blocked until the guard drops.
    pub(crate) fn block_guard(&self) -> BlockedGuard<'_> {
        // Relaxed: a gauge, read by metrics (and by a future supervisor).
        self.blocked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let worker = self.own_worker_index();
        if let Some(i) = worker {
            self.set_state(i, WorkerState::Blocked);
        }
        BlockedGuard(self, worker)
    }

    // ----- shutdown -----------------------------------------------------------

    pub(crate) fn is_closed(&self) -> bool {
        closed(self.admission.load(SeqCst))
    }

    /// Closes admission and drains or abandons according to `mode`; joins
    /// the worker threads once nothing is pending. Idempotent; concurrent
    /// callers all return once the pool is down.
    pub(crate) fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let before = self.admission.fetch_or(CLOSED, SeqCst);
        if !closed(before) {
            // Blocked submitters wake and fail with `ShutDown`.
            let _guard = self.room_lock.lock();
            self.room_cv.notify_all();
        }
        if pending(before) == 0 {
            self.sleep.wake_all();
        }
        let inside = self.own_worker().is_some();
        if mode == ShutdownMode::Drain {
            // A paused pool drains.
            self.resume();
        }
        match mode {
            ShutdownMode::Drain if !inside => {
                self.wait_for(&|w| pending(w) == 0, None);
            }
            ShutdownMode::Drain => {}
            ShutdownMode::Deadline(deadline) => {
                if inside || !self.wait_for(&|w| pending(w) == 0, Some(deadline)) {
                    self.abandon_queued();
                }
            }
            ShutdownMode::Now => self.abandon_queued(),
        }
        // A reservation refused for `CLOSED` holds a place in both fields
        // until it is undone; the difference counts running tasks only.
        let word = self.admission.load(SeqCst);
        let still_running = pending(word) - queued(word);
        if still_running == 0 && !inside {
            self.join_threads();
        }
        self.report(still_running)
    }

    fn report(&self, still_running: usize) -> ShutdownReport {
        let c = self.counters.sum();
        ShutdownReport {
            submitted: c.submitted,
            completed: c.completed,
            panicked: c.panicked,
            abandoned: c.abandoned,
            dropped: c.dropped(),
            rejected: c.rejected,
            timed_out: c.timed_out,
            cancelled: c.cancelled,
            still_running: still_running as u64,
        }
    }

    /// Discards every queued task (their handles resolve to `Abandoned`).
    /// Workers that pop a task after the flag is set discard it too.
    fn abandon_queued(&self) {
        self.abandon.store(true, SeqCst);
        // Running tasks with a context see their cancellation.
        self.token.cancel();
        let me = self.own_worker_index();
        loop {
            loop {
                match self.injector.steal() {
                    Steal::Success(job) => self.discard_task(job, TaskError::Abandoned, me),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
            for stealer in self.stealers.iter() {
                loop {
                    match stealer.steal() {
                        Steal::Success(job) if job.kind() == JobKind::Task => {
                            self.discard_task(job, TaskError::Abandoned, me)
                        }
                        Steal::Success(job) => {
                            self.side.push(job);
                            self.sleep.notify_one();
                        }
                        Steal::Retry => continue,
                        Steal::Empty => break,
                    }
                }
            }
            for shard in self.shards.iter() {
                let tasks =
                    std::mem::take(&mut shard.queue.lock_counted(&self.counters.locks.shard).tasks);
                for job in tasks {
                    self.discard_task(job, TaskError::Abandoned, me);
                }
            }
            if queued(self.admission.load(SeqCst)) == 0 {
                break;
            }
            // A popped task is about to start or be discarded by its worker.
            thread::yield_now();
        }
    }

    fn join_threads(&self) {
        // The watchdog sleeps between checks; it exits on its next look.
        self.watchdog.unpark();
        let mut threads = self.threads.lock_counted(&self.counters.locks.threads);
        if threads.joining {
            while !threads.joined {
                self.threads_cv.wait(&mut threads);
            }
            return;
        }
        threads.joining = true;
        let mut handles = std::mem::take(&mut threads.handles);
        handles.extend(threads.workers.iter_mut().filter_map(Option::take));
        drop(threads);
        self.supervisor.unpark();
        for handle in handles {
            // Workers catch every task panic; an error here could only come
            // from the pool's own code, and the pool is going away anyway.
            let _ = handle.join();
        }
        self.threads.lock().joined = true;
        self.threads_cv.notify_all();
    }

    // ----- observation --------------------------------------------------------

    /// Tasks queued now and workers announced as blocked: the supervisor's
    /// cheap reading (no snapshot of every slot and histogram).
    pub(crate) fn queued_and_blocked(&self) -> (usize, usize) {
        (
            queued(self.admission.load(SeqCst)),
            self.blocked.load(SeqCst),
        )
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let word = self.admission.load(SeqCst);
        let mut counts = self.counters.sum();
        counts.unparks += self.sleep.unparks();
        let keyed_queued = self
            .shards
            .iter()
            .map(|s| s.queue.lock_counted(&self.counters.locks.shard).tasks.len())
            .sum();
        let running = pending(word).saturating_sub(queued(word));
        let busy_workers = if self.config.track_workers {
            self.counters
                .status
                .iter()
                .filter(|s| s.read().0 == WorkerState::Running)
                .count()
        } else {
            running.min(self.live_workers())
        };
        let (queue_wait, run_time) = if self.config.histograms {
            (
                Histogram::sum_of(
                    self.counters.queue_wait.iter().map(|h| &**h),
                    &self.calibration,
                ),
                Histogram::sum_of(
                    self.counters.run_time.iter().map(|h| &**h),
                    &self.calibration,
                ),
            )
        } else {
            (Histogram::empty(), Histogram::empty())
        };
        Metrics {
            name: self.config.name.clone(),
            workers: self.live_workers(),
            min_workers: self.config.min_workers,
            max_workers: self.config.workers,
            target_workers: self.target.load(std::sync::atomic::Ordering::Relaxed),
            busy_workers,
            parked: self.sleep.parked(),
            searching: self.sleep.searching(),
            blocked_workers: self.blocked.load(SeqCst),
            queued: queued(word),
            injector_len: self.injector.len(),
            worker_queue_lens: self.stealers.iter().map(StealQueue::len).collect(),
            keyed_queued,
            shards: self.shards.len(),
            running,
            queue_capacity: self.config.capacity,
            blocked_submitters: self.room_waiters.load(SeqCst),
            shut_down: closed(word),
            paused: self.is_paused(),
            breaker: self.breaker.as_ref().map(Breaker::state),
            counts,
            queue_wait,
            run_time,
            locks: Metrics::lock_report(&self.counters.locks, self.calibration.ns_per_tick()),
        }
    }

    /// The name of worker `index`'s thread.
    pub(crate) fn worker_name(&self, index: usize) -> String {
        format!("{}-{}", self.config.thread_name, index)
    }

    /// The keyed shard worker `index` is running, if any.
    pub(crate) fn shard_running_on(&self, index: usize) -> Option<usize> {
        self.shards
            .iter()
            .position(|s| s.running_on.load(std::sync::atomic::Ordering::Relaxed) == index + 1)
    }

    /// What every worker is doing now.
    pub(crate) fn dump(&self) -> PoolDump {
        let now = ticks();
        let ns_per_tick = self.calibration.ns_per_tick();
        let word = self.admission.load(SeqCst);
        let workers = (0..self.live_workers())
            .map(|i| {
                let (state, since) = self.counters.status[i].read();
                let task = self
                    .counters
                    .slot(Some(i))
                    .started
                    .load(std::sync::atomic::Ordering::Relaxed);
                let running_for = (state == WorkerState::Running && self.timing)
                    .then(|| Calibration::to_duration(now.saturating_sub(since), ns_per_tick));
                let shard = self.shard_running_on(i);
                WorkerDump {
                    task_name: (state == WorkerState::Running)
                        .then(|| self.counters.status[i].name())
                        .flatten(),
                    shard,
                    thread_name: self.worker_name(i),
                    state,
                    task,
                    running_for,
                    queue_len: self.stealers[i].len(),
                }
            })
            .collect();
        PoolDump {
            name: self.config.name.clone(),
            workers,
            injector_len: self.injector.len(),
            queued: queued(word),
        }
    }
}

/// Un-counts a blocked worker on drop (see [`Registry::block_guard`]).
pub(crate) struct BlockedGuard<'a>(&'a Registry, Option<usize>);

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.1 {
            // The blocking wait happens inside a running task.
            self.0.set_state(i, WorkerState::Running);
        }
        self.0
            .blocked
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Only reachable with queued jobs if threads never started (a failed
        // build); resolve them rather than leak them.
        while let Steal::Success(job) = self.injector.steal() {
            job.discard(TaskError::Abandoned);
        }
    }
}
