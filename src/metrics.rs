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

use crate::cpu::ThreadClock;
use crate::histogram::{AtomicHistogram, Histogram};
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

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
    /// Per worker: queue wait (accepted → started) of the tasks it started.
    pub(crate) queue_wait: Box<[CachePadded<AtomicHistogram>]>,
    /// Per worker: run time (started → finished) of the tasks it ran.
    pub(crate) run_time: Box<[CachePadded<AtomicHistogram>]>,
    /// Per worker: what it is doing (for `dump`, the watchdog, gauges).
    pub(crate) status: Box<[CachePadded<WorkerStatus>]>,
    /// Contention of the pool's own locks.
    pub(crate) locks: std::sync::Arc<LockStats>,
}

fn padded<T: Default>(n: usize) -> Box<[CachePadded<T>]> {
    (0..n).map(|_| CachePadded::default()).collect()
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
    pub(crate) fn new(workers: usize, locks: std::sync::Arc<LockStats>) -> Self {
        Counters {
            workers: padded(workers),
            external: padded(STRIPES),
            queue_wait: padded(workers),
            run_time: padded(workers),
            status: padded(workers),
            locks,
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
        self.sum_of_first(self.workers.len())
    }

    /// Sums the slots of workers `0..n` and of outside threads (the other
    /// workers' slots are known to be zero: they never ran).
    pub(crate) fn sum_of_first(&self, n: usize) -> Counts {
        let mut c = Counts::default();
        for s in self.workers[..n].iter().chain(self.external.iter()) {
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

/// What a worker is doing, as the dump and the watchdog see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Between jobs, looking in its own queue and the injector.
    Idle,
    /// Looking in other workers' deques (stealing), or spinning before it
    /// parks.
    Searching,
    /// Asleep for want of work (or while it waits with nothing to help).
    Parked,
    /// Running a task.
    Running,
    /// Blocked in a wait that does not help (`join_blocking`).
    Blocked,
    /// Not tracked (`Builder::metrics(false)`), or not started.
    Unknown,
}

impl WorkerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => WorkerState::Idle,
            2 => WorkerState::Searching,
            3 => WorkerState::Parked,
            4 => WorkerState::Running,
            5 => WorkerState::Blocked,
            _ => WorkerState::Unknown,
        }
    }

    pub(crate) fn as_u8(self) -> u8 {
        match self {
            WorkerState::Unknown => 0,
            WorkerState::Idle => 1,
            WorkerState::Searching => 2,
            WorkerState::Parked => 3,
            WorkerState::Running => 4,
            WorkerState::Blocked => 5,
        }
    }
}

/// One worker's activity, written only by that worker (relaxed stores:
/// readers want a recent picture, not a synchronised one). The task's
/// sequence number is the worker's `started` counter.
pub(crate) struct WorkerStatus {
    state: AtomicU8,
    /// Tick at which the current task started.
    since: AtomicU64,
    /// The worker thread's CPU clock (`ThreadClock::into_raw`), or
    /// `NO_CLOCK`: the supervisor reads it to tell blocking from compute.
    clock: AtomicI64,
    /// The running task's name, for named tasks (`TaskOptions::name`);
    /// only named tasks take this lock.
    name: parking_lot::Mutex<Option<std::sync::Arc<str>>>,
}

/// `WorkerStatus::clock` when the slot has no running thread or the
/// platform has no thread clocks.
const NO_CLOCK: i64 = i64::MIN;

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            state: AtomicU8::new(0),
            since: AtomicU64::new(0),
            clock: AtomicI64::new(NO_CLOCK),
            name: parking_lot::Mutex::new(None),
        }
    }
}

impl WorkerStatus {
    /// Publishes (or, with `None`, withdraws) the CPU clock of the thread
    /// running in this slot. Relaxed: the supervisor's reading is an
    /// estimate, and a clock read after its thread exited fails cleanly.
    pub(crate) fn set_clock(&self, clock: Option<ThreadClock>) {
        self.clock
            .store(clock.map_or(NO_CLOCK, ThreadClock::into_raw), Relaxed);
    }

    /// The CPU clock of the thread running in this slot, if published.
    pub(crate) fn clock(&self) -> Option<ThreadClock> {
        match self.clock.load(Relaxed) {
            NO_CLOCK => None,
            raw => Some(ThreadClock::from_raw(raw)),
        }
    }

    #[inline]
    pub(crate) fn set(&self, state: WorkerState) {
        self.state.store(state.as_u8(), Relaxed);
    }

    #[inline]
    pub(crate) fn start_task(&self, since: u64) {
        self.since.store(since, Relaxed);
        self.state.store(WorkerState::Running.as_u8(), Relaxed);
    }

    /// Records (or clears) the running task's name.
    pub(crate) fn set_name(&self, name: Option<std::sync::Arc<str>>) {
        *self.name.lock() = name;
    }

    /// The running task's name, if it has one.
    pub(crate) fn name(&self) -> Option<String> {
        self.name.lock().as_deref().map(str::to_owned)
    }

    pub(crate) fn read(&self) -> (WorkerState, u64) {
        (
            WorkerState::from_u8(self.state.load(Relaxed)),
            self.since.load(Relaxed),
        )
    }
}

/// Contention of one of the pool's locks.
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
            fn report(&self, ns_per_tick: f64) -> Vec<LockContention> {
                vec![$(
                    LockContention {
                        name: stringify!($name),
                        contended: self.$name.contended.load(Relaxed),
                        wait: crate::clock::Calibration::to_duration(
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockContention {
    /// The lock's name.
    pub name: &'static str,
    /// Acquisitions that found it held.
    pub contended: u64,
    /// Total time those acquisitions waited.
    pub wait: Duration,
}

/// A snapshot of a pool's state and counters, from [`PoolHandle::metrics`].
///
/// Counters and histograms are summed from per-worker slots without
/// stopping the pool: while it is busy, a snapshot may miss the last few
/// updates of each worker, and gauges (read one after another) may disagree
/// slightly. Once the pool is idle (`wait_idle` returned) or shut down,
/// every counter is exact and the identity holds:
///
/// `submitted = completed + panicked + rejected + dropped + abandoned + timed_out + cancelled + running + queued`
///
/// where `dropped` counts both `DropNewest` and `DropOldest`, `rejected`
/// includes circuit-breaker refusals, `running`
/// counts tasks started and not finished (including `install` calls), and
/// `queued` tasks accepted and not started.
///
/// [`PoolHandle::metrics`]: crate::PoolHandle::metrics
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Metrics {
    /// The pool's name (the `pool` label in the Prometheus export).
    pub name: String,
    /// Worker threads.
    pub workers: usize,
    /// The configured minimum of workers.
    pub min_workers: usize,
    /// The configured maximum of workers.
    pub max_workers: usize,
    /// The worker count the pool aims at.
    pub target_workers: usize,
    /// Workers running a task now.
    pub busy_workers: usize,
    /// Workers parked (sleeping for want of work).
    pub parked: usize,
    /// Workers searching other queues for work.
    pub searching: usize,
    /// Workers blocked in a wait that does not help (`join_blocking`).
    pub blocked_workers: usize,
    /// Tasks accepted and not yet started.
    pub queued: usize,
    /// Jobs in the global injector.
    pub injector_len: usize,
    /// Jobs in each worker's own deque.
    pub worker_queue_lens: Vec<usize>,
    /// Keyed tasks waiting in their shards (part of `queued`).
    pub keyed_queued: usize,
    /// The number of keyed shards.
    pub shards: usize,
    /// Tasks running now (started, not finished), the in-flight gauge.
    pub running: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Outside threads blocked waiting for room (`Backpressure::Block`).
    pub blocked_submitters: usize,
    /// Whether admission is closed (shutdown began).
    pub shut_down: bool,
    /// Whether the pool is paused (`PoolHandle::pause`).
    pub paused: bool,
    /// The circuit breaker's state, if the pool has one.
    pub breaker: Option<crate::BreakerState>,
    /// Counters since the pool was built.
    pub counts: Counts,
    /// Queue wait (accepted → started) of tasks run by workers.
    pub queue_wait: Histogram,
    /// Run time (started → finished) of tasks run by workers.
    pub run_time: Histogram,
    /// Contention of the pool's own locks.
    pub locks: Vec<LockContention>,
}

impl Metrics {
    pub(crate) fn lock_report(stats: &LockStats, ns_per_tick: f64) -> Vec<LockContention> {
        stats.report(ns_per_tick)
    }

    /// The snapshot in the Prometheus text exposition format (0.0.4):
    /// every name starts with `prefix`, every sample has a `pool` label,
    /// counters end in `_total`, durations are in seconds, and the two
    /// histograms have `_bucket{le=…}` (at octave boundaries), `_sum` and
    /// `_count` series.
    ///
    /// ```
    /// let pool = ebbtide::Pool::builder().name("render").workers(1).build()?;
    /// pool.spawn(|| 1)?.join()?;
    /// pool.wait_idle();
    /// let text = pool.metrics().to_prometheus("ebbtide");
    /// assert!(text.contains("ebbtide_tasks_completed_total{pool=\"render\"} 1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_prometheus(&self, prefix: &str) -> String {
        let mut out = String::new();
        self.write_prometheus(prefix, &mut out)
            .expect("writing to a String cannot fail");
        out
    }

    /// Writes [`to_prometheus`](Self::to_prometheus)'s text to `out`.
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn write_prometheus(&self, prefix: &str, out: &mut impl fmt::Write) -> fmt::Result {
        let pool = escape_label(&self.name);
        let c = &self.counts;
        let gauges: [(&str, &str, f64); 14] = [
            ("workers", "Worker threads.", self.workers as f64),
            (
                "workers_min",
                "Configured minimum of workers.",
                self.min_workers as f64,
            ),
            (
                "workers_max",
                "Configured maximum of workers.",
                self.max_workers as f64,
            ),
            (
                "workers_target",
                "Worker count the pool aims at.",
                self.target_workers as f64,
            ),
            (
                "workers_busy",
                "Workers running a task.",
                self.busy_workers as f64,
            ),
            (
                "workers_parked",
                "Workers parked for want of work.",
                self.parked as f64,
            ),
            (
                "workers_searching",
                "Workers searching for work.",
                self.searching as f64,
            ),
            (
                "workers_blocked",
                "Workers blocked in a non-helping wait.",
                self.blocked_workers as f64,
            ),
            (
                "tasks_queued",
                "Tasks accepted and not started.",
                self.queued as f64,
            ),
            (
                "keyed_tasks_queued",
                "Keyed tasks waiting in their shards.",
                self.keyed_queued as f64,
            ),
            (
                "injector_jobs",
                "Jobs in the global injector.",
                self.injector_len as f64,
            ),
            (
                "tasks_running",
                "Tasks started and not finished.",
                self.running as f64,
            ),
            (
                "queue_capacity",
                "Capacity of the task queue.",
                self.queue_capacity as f64,
            ),
            (
                "submitters_blocked",
                "Submitters blocked for room.",
                self.blocked_submitters as f64,
            ),
        ];
        for (name, help, value) in gauges {
            writeln!(out, "# HELP {prefix}_{name} {help}")?;
            writeln!(out, "# TYPE {prefix}_{name} gauge")?;
            writeln!(out, "{prefix}_{name}{{pool=\"{pool}\"}} {value}")?;
        }
        writeln!(
            out,
            "# HELP {prefix}_worker_queue_jobs Jobs in each worker's deque."
        )?;
        writeln!(out, "# TYPE {prefix}_worker_queue_jobs gauge")?;
        for (i, len) in self.worker_queue_lens.iter().enumerate() {
            writeln!(
                out,
                "{prefix}_worker_queue_jobs{{pool=\"{pool}\",worker=\"{i}\"}} {len}"
            )?;
        }
        if let Some(state) = self.breaker {
            writeln!(
                out,
                "# HELP {prefix}_breaker_state Circuit breaker: 0 closed, 1 open, 2 half-open."
            )?;
            writeln!(out, "# TYPE {prefix}_breaker_state gauge")?;
            let v = match state {
                crate::BreakerState::Closed => 0,
                crate::BreakerState::Open => 1,
                crate::BreakerState::HalfOpen => 2,
            };
            writeln!(out, "{prefix}_breaker_state{{pool=\"{pool}\"}} {v}")?;
        }
        writeln!(
            out,
            "# HELP {prefix}_shut_down Whether shutdown began (1) or not (0)."
        )?;
        writeln!(out, "# TYPE {prefix}_shut_down gauge")?;
        writeln!(
            out,
            "{prefix}_shut_down{{pool=\"{pool}\"}} {}",
            u8::from(self.shut_down)
        )?;
        let counters: [(&str, &str, u64); 17] = [
            (
                "tasks_submitted_total",
                "Tasks offered while the pool was open.",
                c.submitted,
            ),
            ("tasks_started_total", "Tasks started.", c.started),
            ("tasks_completed_total", "Tasks that returned.", c.completed),
            ("tasks_panicked_total", "Tasks that panicked.", c.panicked),
            (
                "tasks_rejected_total",
                "Submissions refused for want of room.",
                c.rejected,
            ),
            (
                "tasks_dropped_newest_total",
                "New tasks dropped by DropNewest.",
                c.dropped_newest,
            ),
            (
                "tasks_dropped_oldest_total",
                "Queued tasks evicted by DropOldest.",
                c.dropped_oldest,
            ),
            (
                "tasks_caller_runs_total",
                "Tasks run on the submitter by CallerRuns.",
                c.caller_runs,
            ),
            (
                "tasks_abandoned_total",
                "Queued tasks discarded by shutdown.",
                c.abandoned,
            ),
            (
                "steals_total",
                "Jobs taken from another worker's deque.",
                c.steals,
            ),
            (
                "steal_attempts_total",
                "Looks into another worker's deque.",
                c.steal_attempts,
            ),
            ("parks_total", "Times a worker parked.", c.parks),
            (
                "unparks_total",
                "Times a parked worker was woken for work.",
                c.unparks,
            ),
            (
                "stalls_total",
                "Tasks reported by the stall watchdog.",
                c.stalls,
            ),
            (
                "shard_handoffs_total",
                "Keyed shards run by another worker than last time.",
                c.shard_handoffs,
            ),
            ("resizes_up_total", "Times the pool grew.", c.resizes_up),
            (
                "resizes_down_total",
                "Times the pool shrank.",
                c.resizes_down,
            ),
        ];
        for (name, help, value) in counters {
            writeln!(out, "# HELP {prefix}_{name} {help}")?;
            writeln!(out, "# TYPE {prefix}_{name} counter")?;
            writeln!(out, "{prefix}_{name}{{pool=\"{pool}\"}} {value}")?;
        }
        writeln!(
            out,
            "# HELP {prefix}_lock_contended_total Acquisitions that found a pool lock held."
        )?;
        writeln!(out, "# TYPE {prefix}_lock_contended_total counter")?;
        for l in &self.locks {
            writeln!(
                out,
                "{prefix}_lock_contended_total{{pool=\"{pool}\",lock=\"{}\"}} {}",
                l.name, l.contended
            )?;
        }
        writeln!(
            out,
            "# HELP {prefix}_lock_wait_seconds_total Time spent waiting for a held pool lock."
        )?;
        writeln!(out, "# TYPE {prefix}_lock_wait_seconds_total counter")?;
        for l in &self.locks {
            writeln!(
                out,
                "{prefix}_lock_wait_seconds_total{{pool=\"{pool}\",lock=\"{}\"}} {}",
                l.name,
                l.wait.as_secs_f64()
            )?;
        }
        for (name, help, h) in [
            (
                "queue_wait_seconds",
                "Time from acceptance to start.",
                &self.queue_wait,
            ),
            (
                "run_time_seconds",
                "Time from start to finish.",
                &self.run_time,
            ),
        ] {
            writeln!(out, "# HELP {prefix}_{name} {help}")?;
            writeln!(out, "# TYPE {prefix}_{name} histogram")?;
            for (bound, count) in h.octave_buckets() {
                writeln!(
                    out,
                    "{prefix}_{name}_bucket{{pool=\"{pool}\",le=\"{:e}\"}} {count}",
                    bound.as_secs_f64()
                )?;
            }
            writeln!(
                out,
                "{prefix}_{name}_bucket{{pool=\"{pool}\",le=\"+Inf\"}} {}",
                h.count()
            )?;
            writeln!(
                out,
                "{prefix}_{name}_sum{{pool=\"{pool}\"}} {}",
                h.sum().as_secs_f64()
            )?;
            writeln!(
                out,
                "{prefix}_{name}_count{{pool=\"{pool}\"}} {}",
                h.count()
            )?;
        }
        Ok(())
    }
}

#[cfg(feature = "metrics")]
impl Metrics {
    /// Publishes this snapshot through the `metrics` crate facade (feature
    /// `metrics`), so an exporter the program already runs picks the figures
    /// up: gauges as gauges, counters as absolute counters, and each
    /// histogram's p50/p90/p99/p99.9 and mean as gauges in seconds; every
    /// name starts with `prefix`, every series has a `pool` label. Call it
    /// periodically (e.g. from the program's own reporting loop).
    pub fn publish(&self, prefix: &str) {
        let pool = self.name.clone();
        let gauge = |name: &str, value: f64| {
            metrics::gauge!(format!("{prefix}_{name}"), "pool" => pool.clone()).set(value);
        };
        gauge("workers", self.workers as f64);
        gauge("workers_min", self.min_workers as f64);
        gauge("workers_max", self.max_workers as f64);
        gauge("workers_target", self.target_workers as f64);
        gauge("workers_busy", self.busy_workers as f64);
        gauge("workers_parked", self.parked as f64);
        gauge("workers_blocked", self.blocked_workers as f64);
        gauge("tasks_queued", self.queued as f64);
        gauge("keyed_tasks_queued", self.keyed_queued as f64);
        gauge("tasks_running", self.running as f64);
        gauge("submitters_blocked", self.blocked_submitters as f64);
        let c = &self.counts;
        for (name, value) in [
            ("tasks_submitted_total", c.submitted),
            ("tasks_started_total", c.started),
            ("tasks_completed_total", c.completed),
            ("tasks_panicked_total", c.panicked),
            ("tasks_rejected_total", c.rejected),
            ("tasks_dropped_newest_total", c.dropped_newest),
            ("tasks_dropped_oldest_total", c.dropped_oldest),
            ("tasks_caller_runs_total", c.caller_runs),
            ("tasks_abandoned_total", c.abandoned),
            ("steals_total", c.steals),
            ("steal_attempts_total", c.steal_attempts),
            ("parks_total", c.parks),
            ("unparks_total", c.unparks),
            ("stalls_total", c.stalls),
            ("shard_handoffs_total", c.shard_handoffs),
            ("resizes_up_total", c.resizes_up),
            ("resizes_down_total", c.resizes_down),
        ] {
            metrics::counter!(format!("{prefix}_{name}"), "pool" => pool.clone()).absolute(value);
        }
        for l in &self.locks {
            let labels = [("pool", pool.clone()), ("lock", l.name.to_string())];
            metrics::counter!(format!("{prefix}_lock_contended_total"), &labels)
                .absolute(l.contended);
        }
        for (name, h) in [
            ("queue_wait_seconds", &self.queue_wait),
            ("run_time_seconds", &self.run_time),
        ] {
            for (q, v) in [
                ("0.5", h.p50()),
                ("0.9", h.p90()),
                ("0.99", h.p99()),
                ("0.999", h.p999()),
            ] {
                let labels = [("pool", pool.clone()), ("quantile", q.to_string())];
                metrics::gauge!(format!("{prefix}_{name}"), &labels).set(v.as_secs_f64());
            }
            gauge(&format!("{name}_mean"), h.mean().as_secs_f64());
        }
    }
}

/// Escapes a Prometheus label value (backslash, double quote, newline).
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "pool {}: workers {} (busy {}, parked {}, blocked {}), queued {}/{}, running {}; \
             submitted {}, completed {}, panicked {}, rejected {}, dropped {}, abandoned {}, \
             caller-runs {}, steals {}; queue wait p50 {:?} p99 {:?}, run time p50 {:?} p99 {:?}{}",
            self.name,
            self.workers,
            self.busy_workers,
            self.parked,
            self.blocked_workers,
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
            self.queue_wait.p50(),
            self.queue_wait.p99(),
            self.run_time.p50(),
            self.run_time.p99(),
            if self.shut_down {
                " [shut down]"
            } else if self.paused {
                " [paused]"
            } else {
                ""
            }
        )
    }
}

/// One worker in a [`PoolDump`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerDump {
    /// The worker's thread name.
    pub thread_name: String,
    /// What it is doing.
    pub state: WorkerState,
    /// The sequence number (on this worker) of the task it runs or ran last.
    pub task: u64,
    /// How long the current task has been running (when `Running` and
    /// timing is on).
    pub running_for: Option<Duration>,
    /// Jobs in its own deque.
    pub queue_len: usize,
    /// The keyed shard it is running, if any.
    pub shard: Option<usize>,
    /// The running task's name, if it was given one.
    pub task_name: Option<String>,
}

/// What every worker is doing now, from [`PoolHandle::dump`]: the thread
/// dump of a stuck pool. `Display` prints one line per worker.
///
/// [`PoolHandle::dump`]: crate::PoolHandle::dump
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PoolDump {
    /// The pool's name.
    pub name: String,
    /// One entry per worker.
    pub workers: Vec<WorkerDump>,
    /// Jobs in the global injector.
    pub injector_len: usize,
    /// Tasks accepted and not started.
    pub queued: usize,
}

impl fmt::Display for PoolDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pool {}: {} queued ({} in the injector)",
            self.name, self.queued, self.injector_len
        )?;
        for w in &self.workers {
            write!(f, "  {} {:?}", w.thread_name, w.state)?;
            if w.state == WorkerState::Running {
                write!(f, " task #{}", w.task)?;
                if let Some(d) = w.running_for {
                    write!(f, " for {d:?}")?;
                }
            }
            if let Some(name) = &w.task_name {
                write!(f, " ({name})")?;
            }
            if let Some(shard) = w.shard {
                write!(f, " in shard {shard}")?;
            }
            writeln!(f, ", deque {}", w.queue_len)?;
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::loom::sync::Mutex;

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
