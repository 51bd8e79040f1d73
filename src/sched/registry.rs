//! The passive shared state of one pool: queues, the admission word,
//! the sleep coordinator, waiters, counters and thread handles.
//!
//! Nothing here runs a task or calls back up: workers (`worker.rs`) run
//! tasks and record their outcomes; submission (`admission.rs`), waiting
//! (`wait.rs`), shutdown (`shutdown.rs`), resizing (`resize.rs`) and
//! snapshots (`snapshot.rs`) are methods on this state, each in its file.

use super::breaker::Breaker;
use super::config::Config;
use super::fair::Served;
use super::queue::{GlobalQueue, Injector, Local, LocalQueue, StealQueue, Stealer};
use super::sleep::Sleep;
use crate::error::TaskError;
use crate::keyed::{Shard, Sharder};
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::{Arc, Condvar, Mutex};
use crate::loom::thread::JoinHandle;
use crate::metrics::clock::{Calibration, TaskClock};
use crate::metrics::{Counters, LockStats, WorkerState};
use crate::task::job::JobRef;
use crate::task::{CancelToken, Parker, Waiter};
use crossbeam_utils::CachePadded;

#[derive(Default)]
pub(super) struct Threads {
    /// The watchdog's and the supervisor's threads.
    pub(super) handles: Vec<JoinHandle<()>>,
    /// Worker threads by index (a retired worker's until it is joined).
    pub(super) workers: Vec<Option<JoinHandle<()>>>,
    pub(super) joining: bool,
    pub(super) joined: bool,
}

/// The admission word (`admission.rs`), and beside it, on the line every
/// submission writes anyway, the countdown to the next stamped submission
/// (`metrics::timing::Stamps`).
pub(crate) struct Admission {
    word: AtomicU64,
    pub(super) stamps: crate::metrics::timing::Stamps,
}

impl Admission {
    /// The word, and stamps for every submission or sparse ones.
    fn new(stamp_every: bool) -> Self {
        Admission {
            word: AtomicU64::new(0),
            stamps: if stamp_every {
                crate::metrics::timing::Stamps::every()
            } else {
                crate::metrics::timing::Stamps::default()
            },
        }
    }
}

impl std::ops::Deref for Admission {
    type Target = AtomicU64;

    fn deref(&self) -> &AtomicU64 {
        &self.word
    }
}

/// The shared state of one pool.
pub(crate) struct Registry {
    pub(super) admission: CachePadded<Admission>,
    pub(super) injector: Injector,
    /// Internal jobs displaced from a worker's deque (by eviction or
    /// shutdown); never abandoned.
    pub(super) side: Injector,
    pub(super) stealers: Box<[Stealer]>,
    /// Per worker: shards scheduled on it (FIFO; others may steal).
    pub(super) inboxes: Box<[Injector]>,
    /// The keyed shards.
    pub(crate) shards: Box<[Shard]>,
    pub(crate) sharder: Sharder,
    pub(crate) sleep: Sleep,
    /// Outside threads blocked for room (`Backpressure::Block`).
    pub(super) room_waiters: CachePadded<AtomicUsize>,
    /// What each worker owes the admission word (`starts.rs`).
    pub(crate) unpaid: super::starts::UnpaidWords,
    /// Tasks whose start was accounted (a model's view of the truth the
    /// admission word's readings must not undercount).
    #[cfg(loom)]
    pub(crate) starts_seen: AtomicUsize,
    pub(super) room_lock: Mutex<()>,
    pub(super) room_cv: Condvar,
    /// Threads waiting for the pool to become idle (or to drain).
    pub(super) idle_waiters: CachePadded<AtomicUsize>,
    pub(super) idle_list: Mutex<Vec<(u64, Waiter)>>,
    pub(super) next_waiter_id: AtomicU64,
    /// `wait_idle` calls in progress on this pool's own workers.
    pub(super) inside_idle: AtomicUsize,
    /// Workers blocked in a wait that does not help (`join_blocking`).
    pub(super) blocked: AtomicUsize,
    /// Workers waiting for room in another pool's full queue: the
    /// bottleneck is downstream, and more workers here would only wait
    /// too (see `scaling::policy`).
    pub(super) backpressured: AtomicUsize,
    /// Work waiting outside the pool (a broker's backlog), as reported by
    /// its `Backlog` gauges; the supervisor counts it as queued.
    pub(crate) external: AtomicUsize,
    /// The layer that holds tasks before queueing them (tenants), made on
    /// first use.
    pub(super) held: std::sync::OnceLock<std::sync::Arc<dyn super::held::Held>>,
    pub(super) abandon: AtomicBool,
    /// `pause()`: workers take no task from the queues (internal jobs,
    /// which running tasks wait for, still run).
    pub(super) paused: AtomicBool,
    pub(crate) counters: Counters,
    /// Workers running now: indices `0..live` (see `spawn_worker`).
    pub(super) live: CachePadded<AtomicUsize>,
    /// Workers at or above this index retire when idle (`usize::MAX`: none).
    pub(super) retire_at: AtomicUsize,
    /// The deques of worker slots that have no running worker.
    pub(super) spare: Mutex<Vec<Option<Local>>>,
    /// The worker count the supervisor is growing the pool to (0: not
    /// growing); new workers help it get there (`help_grow`). A plain `std`
    /// atomic, as is `batches`: hints that take part in no protocol (every
    /// job is taken exactly once either way), left out of the loom models.
    pub(super) grow_target: std::sync::atomic::AtomicUsize,
    /// Whether workers take batches from the injector (compute tasks: less
    /// contention) or one task at a time (blocking tasks; the supervisor
    /// decides, see `scaling::takes_batches`).
    pub(super) batches: std::sync::atomic::AtomicBool,
    /// Where the supervisor sleeps between samples; `nudge` wakes it.
    pub(crate) supervisor: Arc<Parker>,
    pub(super) nudged: AtomicBool,
    /// The worker count the supervisor aims at (a gauge for the figures,
    /// relaxed: nothing is decided on it).
    pub(crate) target: AtomicUsize,
    pub(super) resizes: Mutex<std::collections::VecDeque<crate::metrics::ResizeEvent>>,
    pub(super) threads: Mutex<Threads>,
    pub(super) threads_cv: Condvar,
    pub(crate) config: Config,
    /// Whether tasks are timed (histograms, or the stall watchdog).
    pub(super) timing: bool,
    /// Timed by the tick counter (`timing`, and no manual clock).
    ticking: bool,
    /// The default metrics: `ticking`, worker states and histograms, and
    /// no stall watchdog. Submissions are then stamped sparsely
    /// (`stamp_submission`), and tasks timed in their own copy of the run.
    /// (The watchdog's queue-wait bound needs every task stamped.)
    pub(crate) full_metrics: bool,
    /// Neither timing nor worker states: a task's run is the run alone.
    pub(super) bare: bool,
    /// Converts ticks to time for snapshots.
    pub(crate) calibration: Calibration,
    /// The time source of task timing (the tick counter, or the user's).
    pub(crate) clock: TaskClock,
    /// When each queue's oldest end was last served (see `fair.rs`).
    pub(crate) served: Served,
    /// The most live workers the system's thread limits allow, the limit,
    /// and when it was read (see `worker_ceiling`).
    pub(super) ceiling: Mutex<Option<(usize, &'static str, std::time::Instant)>>,
    /// Where the stall watchdog sleeps between checks.
    pub(crate) watchdog: Arc<Parker>,
    /// The root of every task's cancellation token; cancelled when shutdown
    /// abandons work.
    pub(crate) token: CancelToken,
    pub(super) breaker: Option<Breaker>,
    /// Delayed, periodic and retrying tasks (`timers/`).
    pub(crate) timers: super::timers::Timers,
    /// Dead letters kept for inspection and replay (bounded).
    pub(super) dead_letters: Mutex<std::collections::VecDeque<crate::task::DeadLetter>>,
    /// This registry, for threads it starts itself (the timer driver).
    #[cfg(not(loom))]
    pub(crate) this: std::sync::OnceLock<std::sync::Weak<Registry>>,
}

impl Registry {
    /// Now, in task-clock ticks, when tasks are timed; else 0. (Two byte
    /// tests, not a test and an `Option` check.)
    #[inline(always)]
    pub(crate) fn task_now(&self) -> u64 {
        if self.timing {
            self.timed_now()
        } else {
            0
        }
    }

    /// Stamps a submitted job (made unstamped, 0): under the default
    /// metrics one in `SAMPLE_EVERY` of the pool's submissions (past its
    /// first `WARM_UP`) reads the clock and the others stay unstamped;
    /// under any other timing every one gets `timed_now`. See
    /// `metrics::timing::Stamps`.
    #[inline(always)]
    pub(crate) fn stamp_submission(&self, job: &mut JobRef) {
        // One test, then the countdown: a pool that stamps every
        // submission has a countdown of period 1 (`Stamps::every`).
        if self.timing {
            if let Some(stamp) = self.admission.stamps.next(|| self.timed_now()) {
                job.stamp(stamp);
            }
        }
    }

    /// A stamp of weight 1 for a task queued by the pool itself (a timer's
    /// task): `task_now`, without the sparse stamps' weight bit.
    pub(crate) fn full_stamp(&self) -> u64 {
        let now = self.task_now();
        if self.full_metrics {
            crate::metrics::timing::full_stamp(now)
        } else {
            now
        }
    }

    /// Now, in task-clock ticks, when tasks are known to be timed.
    #[inline(always)]
    pub(crate) fn timed_now(&self) -> u64 {
        if self.ticking {
            crate::metrics::clock::ticks()
        } else {
            self.clock.now()
        }
    }

    /// A registry with a slot for each of `locals` (one per possible
    /// worker); no worker runs yet (see `spawn_worker`).
    pub(crate) fn new(config: Config, locals: Vec<Local>) -> Self {
        let workers = locals.len();
        let stealers = locals.iter().map(LocalQueue::stealer).collect();
        let locks = std::sync::Arc::new(LockStats::default());
        let timing = config.histograms || config.stall_threshold.is_some();
        let full_metrics = config.histograms
            && config.track_workers
            && config.clock.is_none()
            && config.stall_threshold.is_none();
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
            timing,
            ticking: timing && config.clock.is_none(),
            full_metrics,
            bare: !(timing || config.track_workers),
            calibration: Calibration::now(),
            // The user's clock behind its guard: a faulty one stops the
            // pool's time, never its threads.
            clock: TaskClock::new(
                config
                    .clock
                    .clone()
                    .map(crate::time::clock::guard_durations),
            ),
            served: Served::new(workers),
            ceiling: Mutex::new(None),
            watchdog: Arc::new(Parker::default()),
            token: CancelToken::quiet(),
            breaker: config.breaker.clone().map(Breaker::new),
            timers: super::timers::Timers::new(crate::time::clock::TimerClock::new(
                config.timer_clock.clone(),
            )),
            dead_letters: Mutex::new(std::collections::VecDeque::new()),
            #[cfg(not(loom))]
            this: std::sync::OnceLock::new(),
            // Sparse stamps under the default metrics, every one under
            // any other timing.
            admission: CachePadded::new(Admission::new(timing && !full_metrics)),
            injector: Injector::new(),
            side: Injector::new(),
            stealers,
            inboxes: (0..workers).map(|_| Injector::new()).collect(),
            shards: (0..config.shards).map(|_| Shard::default()).collect(),
            sharder: Sharder::new(config.shards),
            sleep: Sleep::new(workers, 0, max_searching(), std::sync::Arc::clone(&locks)),
            room_waiters: CachePadded::new(AtomicUsize::new(0)),
            unpaid: super::starts::UnpaidWords::new(workers),
            #[cfg(loom)]
            starts_seen: AtomicUsize::new(0),
            room_lock: Mutex::new(()),
            room_cv: Condvar::new(),
            idle_waiters: CachePadded::new(AtomicUsize::new(0)),
            idle_list: Mutex::new(Vec::new()),
            next_waiter_id: AtomicU64::new(0),
            inside_idle: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            backpressured: AtomicUsize::new(0),
            external: AtomicUsize::new(0),
            held: std::sync::OnceLock::new(),
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

    /// The pool's identity: its address, compared and never followed (a
    /// keyed handle's slot remembers it to detect a wait on its own shard).
    pub(crate) fn id(&self) -> usize {
        self as *const Registry as usize
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

    /// The deques and inboxes of the workers live now. The slots past them
    /// hold nothing a search must find: a retiring worker hands its deque
    /// and inbox on, and a shard turn pushed to its inbox later is moved
    /// on by whoever sees it there first (`push_inbox`, `finish_retire`).
    /// An elastic pool's slots run to its maximum, often hundreds; a look
    /// over all of them, on every search and park, cost a tenth of the
    /// CPUs of a pipeline whose stages wake every millisecond.
    pub(crate) fn live_queues(&self) -> impl Iterator<Item = (&Stealer, &Injector)> {
        let live = self.live.load(SeqCst).min(self.stealers.len());
        self.stealers[..live].iter().zip(&self.inboxes[..live])
    }

    /// Worker `index`'s inbox of scheduled shards.
    pub(crate) fn inbox(&self, index: usize) -> &Injector {
        &self.inboxes[index]
    }

    /// Records worker `index`'s state (when workers are tracked).
    #[inline]
    pub(crate) fn set_state(&self, index: usize, state: WorkerState) {
        if self.config.track_workers {
            self.counters.worker(index).status.set(state);
        }
    }

    /// The name of worker `index`'s thread.
    pub(crate) fn worker_name(&self, index: usize) -> String {
        format!("{}-{}", self.config.thread_name, index)
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
        self.side.pop()
    }

    /// Whether any queue visibly holds work (re-check before parking).
    pub(crate) fn has_work(&self) -> bool {
        if self.is_paused() {
            return !self.side.is_empty();
        }
        !self.injector.is_empty()
            || !self.side.is_empty()
            || self
                .live_queues()
                .any(|(deque, inbox)| deque.len() > 0 || !inbox.is_empty())
    }

    /// How many jobs a worker takes from the injector at most: its fair
    /// share of the queue. A burst of long tasks into many idle workers must
    /// not pile up on the first few (with 1,000 tasks of 2 ms and 300
    /// workers, batches of 32 kept the last ones waiting 20 ms where 8
    /// would do). A size hint: the loom models, which check which jobs move
    /// and not how many, leave it out.
    #[inline]
    pub(crate) fn batch_limit(&self) -> usize {
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

    /// Takes work from the global queues: a batch of the injector into
    /// `local` (the oldest returned), else an internal job from the side
    /// queue. Batches mean fewer claims of the injector's head, which
    /// workers contend for; blocking tasks are taken one at a time, so
    /// that no worker holds a batch of them that only it (or a thief, one
    /// by one) will run.
    #[inline]
    pub(crate) fn take_global(&self, local: &super::queue::Local) -> Option<JobRef> {
        // Relaxed: a hint from the supervisor (either way every job is
        // taken exactly once).
        let job = if self.batches.load(std::sync::atomic::Ordering::Relaxed) {
            self.injector.pop_batch(local, self.batch_limit())
        } else {
            self.injector.pop()
        };
        job.or_else(|| self.side.pop())
    }

    /// The oldest job of the injector (no batch), else an internal job
    /// from the side queue.
    pub(crate) fn take_one_global(&self) -> Option<JobRef> {
        self.injector.pop().or_else(|| self.side.pop())
    }

    /// Puts an admitted install job or another internal job on the side
    /// queue (never abandoned, never evicted) and wakes a worker.
    pub(crate) fn push_side(&self, job: JobRef) {
        self.side.push(job);
        self.sleep.notify_one();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Only reachable with queued jobs if threads never started (a failed
        // build); resolve them rather than leak them.
        while let Some(job) = self.injector.pop() {
            job.discard(TaskError::Abandoned);
        }
    }
}

/// How many workers may search at once: the CPUs (no limit beyond half
/// the workers in the loom models, whose pools are a few workers).
fn max_searching() -> usize {
    #[cfg(not(loom))]
    return num_cpus::get();
    #[cfg(loom)]
    return usize::MAX;
}
