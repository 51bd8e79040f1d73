//! `Builder`: a pool's settings, validated by `build`.

use crate::error::BuildError;
use crate::loom::sync::Arc;
use crate::metrics::clock::ManualClock;
use crate::metrics::StallReport;
use crate::pool::Pool;
use crate::sched::config::{
    Backpressure, Config, DeadLetterHandler, PanicHandler, ResizeHandler, ScalingConfig,
    StallHandler, TaskPanic,
};
use crate::sched::queue::{Local, LocalQueue};
use crate::sched::{Registry, ShutdownMode};
use std::fmt;
use std::time::Duration;

/// The largest worker count a pool accepts: 8,192. Each thread costs about
/// four memory mappings on Linux, whose default `vm.max_map_count` of 65,530
/// runs out near 16,000 threads (and a thread start past it aborts the
/// process); 8,192 leaves half the mappings to the rest of the program. The
/// system's actual limits are checked too, at build time and whenever an
/// elastic pool grows.
pub const MAX_WORKERS: usize = 1 << 13;
/// The largest `queue_capacity` a pool accepts.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 30;
/// The largest number of keyed shards a pool accepts.
pub const MAX_SHARDS: usize = 1 << 20;
/// The default `queue_capacity`: large, but finite.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1 << 20;

/// Settings for a [`Pool`]; [`build`](Builder::build) validates them.
///
/// ```
/// use ebbtide::{Backpressure, Pool};
/// let pool = Pool::builder()
///     .workers(4)
///     .queue_capacity(1024)
///     .backpressure(Backpressure::Reject)
///     .thread_name("render")
///     .build()?;
/// assert_eq!(pool.num_workers(), 4);
/// # Ok::<(), ebbtide::BuildError>(())
/// ```
#[derive(Clone)]
pub struct Builder {
    name: String,
    workers: Option<usize>,
    min_workers: Option<usize>,
    max_workers: Option<usize>,
    queue_capacity: usize,
    backpressure: Backpressure,
    thread_name: String,
    stack_size: Option<usize>,
    panic_handler: Option<PanicHandler>,
    histograms: bool,
    metrics: bool,
    stall_threshold: Option<Duration>,
    on_stall: Option<StallHandler>,
    shards: Option<usize>,
    breaker: Option<crate::BreakerConfig>,
    scaling: ScalingConfig,
    on_resize: Option<ResizeHandler>,
    clock: Option<ManualClock>,
    timer_clock: Option<crate::time::clock::ClockFn>,
    pending_timers: crate::PendingTimers,
    on_dead_letter: Option<DeadLetterHandler>,
    dead_letter_capacity: usize,
    rate_limit: Option<crate::RateLimit>,
    tenant_defaults: crate::TenantConfig,
}

/// The default number of dead letters a pool keeps.
pub const DEFAULT_DEAD_LETTER_CAPACITY: usize = 1024;

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .field("min_workers", &self.min_workers)
            .field("max_workers", &self.max_workers)
            .field("queue_capacity", &self.queue_capacity)
            .field("backpressure", &self.backpressure)
            .field("thread_name", &self.thread_name)
            .field("stack_size", &self.stack_size)
            .field("panic_handler", &self.panic_handler.is_some())
            .field("histograms", &self.histograms)
            .field("metrics", &self.metrics)
            .field("stall_threshold", &self.stall_threshold)
            .field("shards", &self.shards)
            .field("circuit_breaker", &self.breaker)
            .field("scaling", &self.scaling)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            name: "ebbtide".to_string(),
            workers: None,
            min_workers: None,
            max_workers: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            backpressure: Backpressure::Block,
            thread_name: "ebbtide-worker".to_string(),
            stack_size: None,
            panic_handler: None,
            histograms: true,
            metrics: true,
            stall_threshold: None,
            on_stall: None,
            shards: None,
            breaker: None,
            scaling: ScalingConfig::default(),
            on_resize: None,
            clock: None,
            timer_clock: None,
            pending_timers: crate::PendingTimers::default(),
            on_dead_letter: None,
            dead_letter_capacity: DEFAULT_DEAD_LETTER_CAPACITY,
            rate_limit: None,
            tenant_defaults: crate::TenantConfig::default(),
        }
    }
}

impl Builder {
    /// Default settings: one worker per CPU, a queue of
    /// [`DEFAULT_QUEUE_CAPACITY`], [`Backpressure::Block`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool's name (used in metrics).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A fixed number of workers: `min_workers = max_workers = n`.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The fewest workers the pool keeps.
    pub fn min_workers(mut self, n: usize) -> Self {
        self.min_workers = Some(n);
        self
    }

    /// The most workers the pool runs. Until the pool scales itself it runs
    /// exactly this many.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// How many accepted-but-not-started tasks may wait (1 ..=
    /// [`MAX_QUEUE_CAPACITY`]); beyond it the [`Backpressure`] policy applies.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// What a submission does when the queue is full.
    pub fn backpressure(mut self, policy: Backpressure) -> Self {
        self.backpressure = policy;
        self
    }

    /// The prefix of worker thread names: `"{prefix}-{index}"`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// The stack size of worker threads, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Called with a [`TaskPanic`] for every task that panics, on the thread
    /// where it panicked. The task's panic never takes the worker down, and
    /// a panic inside the handler is caught as well.
    pub fn panic_handler<H>(mut self, handler: H) -> Self
    where
        H: Fn(&TaskPanic) + Send + Sync + 'static,
    {
        self.panic_handler = Some(std::sync::Arc::new(handler));
        self
    }

    /// Whether to record the queue-wait and run-time histograms (on by
    /// default). Off, tasks are not timed at all (no clock reads). On,
    /// every task is counted and timed, and short tasks are sampled into
    /// the buckets past the pool's first 1,024 submissions (see
    /// [`Histogram`](crate::metrics::Histogram)).
    pub fn histograms(mut self, on: bool) -> Self {
        self.histograms = on;
        self
    }

    /// Whether to keep the optional metrics: the histograms and each
    /// worker's current state (for `dump`, `busy_workers`). On by default.
    /// The task counters stay on either way: shutdown accounting is built
    /// on them (two uncontended stores per task).
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Starts a watchdog that reports every task running longer than
    /// `threshold`, once, to the [`on_stall`](Self::on_stall) handler (or to
    /// standard error), and counts it in `Counts::stalls`. It checks every
    /// quarter threshold (between 1 ms and 1 s). Turns task timing on.
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.stall_threshold = Some(threshold);
        self
    }

    /// The handler of stall reports (see [`stall_threshold`](Self::stall_threshold));
    /// with the `deadlock_detection` feature it also receives lock cycles
    /// found by `parking_lot`'s deadlock detector.
    pub fn on_stall<H>(mut self, handler: H) -> Self
    where
        H: Fn(&StallReport) + Send + Sync + 'static,
    {
        self.on_stall = Some(std::sync::Arc::new(handler));
        self
    }

    /// The number of virtual shards keyed tasks hash into (1 ..=
    /// [`MAX_SHARDS`]). Default: the next power of two of at least 64 and at
    /// least 4 × `max_workers`. It does not change with the worker count, so
    /// resizing the pool never remaps a key.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Turns on a circuit breaker: when too many recent tasks fail (panic
    /// or time out), submissions are refused with
    /// [`SubmitError::BreakerOpen`](crate::SubmitError::BreakerOpen) for a
    /// cool-down, then a few trial tasks decide whether it closes again.
    pub fn circuit_breaker(mut self, config: crate::BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// How long utilization must stay below the shrink watermark before an
    /// elastic pool (`min_workers < max_workers`) retires workers (default
    /// 10 s). It then shrinks to what that quiet spell used (its peak of
    /// workers in use ÷ the target utilization, at least one fewer, never
    /// below `min_workers`), and waits another `keep_alive` before the
    /// next shrink. `Duration::MAX` never retires.
    pub fn keep_alive(mut self, d: Duration) -> Self {
        self.scaling.keep_alive = d;
        self
    }

    /// How often the supervisor of an elastic pool samples the pool
    /// (default 20 ms; submissions that find no idle worker wake it early).
    /// At most [`MAX_DELAY`](crate::MAX_DELAY).
    pub fn scaling_interval(mut self, d: Duration) -> Self {
        self.scaling.interval = d;
        self
    }

    /// The utilization (busy ÷ live workers) above which the pool grows and
    /// below which it may shrink (defaults 0.8 and 0.3).
    pub fn utilization_watermarks(mut self, grow_above: f64, shrink_below: f64) -> Self {
        self.scaling.grow_above = grow_above;
        self.scaling.shrink_below = shrink_below;
        self
    }

    /// How long tasks of an elastic pool should wait in the queue when the
    /// pool can still grow (default 20 ms): the supervisor adds the workers
    /// that drain the queue within it (queued × mean run time ÷ this), up to
    /// `max_workers` and to what the CPUs can serve. A shorter target trades
    /// threads for latency: on 2 CPUs, bursts of 1,000 two-millisecond
    /// sleeps ran with about half the p99 latency at 5 ms as at the default,
    /// on about 380 workers instead of about 100, while the CPUs had room
    /// for every task's wake-up and switch.
    pub fn queue_wait_target(mut self, d: Duration) -> Self {
        self.scaling.queue_wait_target = d;
        self
    }

    /// The utilization Little's law sizes the pool for (default 0.7).
    pub fn target_utilization(mut self, u: f64) -> Self {
        self.scaling.target_utilization = u;
        self
    }

    /// Called with every resize of an elastic pool.
    pub fn on_resize<H>(mut self, handler: H) -> Self
    where
        H: Fn(&crate::metrics::ResizeEvent) + Send + Sync + 'static,
    {
        self.on_resize = Some(std::sync::Arc::new(handler));
        self
    }

    /// Times tasks with `clock` (the time since any fixed epoch; it must
    /// never go backwards) instead of the CPU's tick counter: the queue-wait
    /// and run-time histograms, the dump's running times, the stall
    /// watchdog and the auto-scaler's run-time sums all read it. A reading
    /// earlier than the latest one reads as the latest, and so does a panic
    /// in `clock` (the panic hook still reports it): a faulty clock stops
    /// the pool's time, never its threads. For tests and simulations that
    /// need exact figures:
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// let now = Arc::new(AtomicU64::new(0));
    /// let clock = Arc::clone(&now);
    /// let pool = ebbtide::Pool::builder()
    ///     .workers(1)
    ///     .metrics_clock(move || Duration::from_nanos(clock.load(Ordering::SeqCst)))
    ///     .build()?;
    /// let step = Arc::clone(&now);
    /// // The task "runs" exactly 2 ms of the manual clock.
    /// pool.execute(move || { step.fetch_add(2_000_000, Ordering::SeqCst); })?;
    /// pool.wait_idle();
    /// assert_eq!(pool.metrics().run_time.sum(), Duration::from_millis(2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics_clock<C>(mut self, clock: C) -> Self
    where
        C: Fn() -> Duration + Send + Sync + 'static,
    {
        self.clock = Some(std::sync::Arc::new(clock));
        self
    }

    /// Replaces the clock that delays, schedules and retry backoff read
    /// (`Instant::now` by default), e.g. with a manual clock in tests: a
    /// task delayed by 50 ms runs once this clock has advanced 50 ms. It
    /// must never go backwards. The timer thread polls it every
    /// millisecond of real time. It is first read when the pool is built
    /// (a panic then reaches `build`'s caller); after that, a reading
    /// earlier than the latest one reads as the latest, and so does a panic
    /// (the panic hook still reports it): time stands still while the
    /// clock fails, and no task is lost.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::{Duration, Instant};
    /// let now = Arc::new(Mutex::new(Instant::now()));
    /// let clock = Arc::clone(&now);
    /// let pool = ebbtide::Pool::builder()
    ///     .workers(1)
    ///     .timer_clock(move || *clock.lock().unwrap())
    ///     .build()?;
    /// let handle = pool.task().delay(Duration::from_secs(3600)).spawn(|| "an hour later")?;
    /// *now.lock().unwrap() += Duration::from_secs(3600);
    /// assert_eq!(handle.join(), Ok("an hour later"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timer_clock<C>(mut self, clock: C) -> Self
    where
        C: Fn() -> std::time::Instant + Send + Sync + 'static,
    {
        self.timer_clock = Some(std::sync::Arc::new(clock));
        self
    }

    /// What shutdown does with delayed tasks (and retries waiting for their
    /// next attempt) still on the timing wheel and not yet due: abandon
    /// them (the default) or run them now. Those the
    /// [`timer_clock`](Self::timer_clock) has reached are due and run in a
    /// drain either way. Periodic tasks stop either way, and `shutdown_now`
    /// always abandons.
    pub fn pending_timers(mut self, policy: crate::PendingTimers) -> Self {
        self.pending_timers = policy;
        self
    }

    /// Calls `handler` with each task that goes to the dead letters (its
    /// retry policy exhausted, or an error its `retry_if` called
    /// permanent), on the worker that ran its last attempt. A panic in the
    /// handler is caught.
    pub fn on_dead_letter<H>(mut self, handler: H) -> Self
    where
        H: Fn(&crate::DeadLetter) + Send + Sync + 'static,
    {
        self.on_dead_letter = Some(std::sync::Arc::new(handler));
        self
    }

    /// How many dead letters the pool keeps for
    /// [`take_dead_letters`](crate::PoolHandle::take_dead_letters) (default
    /// [`DEFAULT_DEAD_LETTER_CAPACITY`]); when full, the oldest is dropped
    /// and counted in `dead_letters_evicted`. 0 keeps none (the handler
    /// still sees each).
    pub fn dead_letter_capacity(mut self, n: usize) -> Self {
        self.dead_letter_capacity = n;
        self
    }

    /// A rate limit on every task of the pool (a token bucket): at most
    /// `limit.rate()` tasks start a second, in bursts of up to
    /// `limit.burst()`. Tasks over the limit wait in their tenant's queue
    /// (those without a tenant in an unnamed one), not on a worker; the
    /// refill lets them through. Non-blocking `try_` submissions that find
    /// no token fail with [`SubmitError::RateLimited`](crate::SubmitError::RateLimited).
    /// Every way of submitting a task counts: delayed tasks, retries and
    /// periodic runs when due, a group's tasks and
    /// [`keyed_state`](crate::PoolHandle::keyed_state) tasks. Fork-join work
    /// (`join`, `install`, a `scope`'s tasks, data-parallel loops) does not:
    /// its caller waits for it, and holding it back would hold the caller.
    pub fn rate_limit(mut self, limit: crate::RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The settings every tenant starts with (see
    /// [`TaskBuilder::tenant`](crate::TaskBuilder::tenant)); one tenant's
    /// can be changed with
    /// [`configure_tenant`](crate::PoolHandle::configure_tenant).
    pub fn tenant_defaults(mut self, config: crate::TenantConfig) -> Self {
        self.tenant_defaults = config;
        self
    }

    fn validate(&self) -> Result<Config, BuildError> {
        let invalid = |field, value: &dyn fmt::Display, expected| BuildError::Invalid {
            field,
            value: value.to_string(),
            expected,
        };
        let cpus = num_cpus::get().max(1);
        for (field, value) in [("workers", self.workers), ("max_workers", self.max_workers)] {
            if value == Some(0) {
                return Err(invalid(field, &0, "at least 1"));
            }
        }
        for (field, value) in [
            ("workers", self.workers),
            ("min_workers", self.min_workers),
            ("max_workers", self.max_workers),
        ] {
            if let Some(v) = value.filter(|&v| v > MAX_WORKERS) {
                return Err(invalid(field, &v, "at most MAX_WORKERS (8192)"));
            }
        }
        let (min, max) = match (self.workers, self.min_workers, self.max_workers) {
            (Some(w), min, max) => {
                for (other, value) in [("min_workers", min), ("max_workers", max)] {
                    if let Some(v) = value.filter(|&v| v != w) {
                        return Err(BuildError::Conflict {
                            workers: w,
                            other,
                            value: v,
                        });
                    }
                }
                (w, w)
            }
            (None, Some(min), Some(max)) => (min, max),
            (None, Some(min), None) => (min, min.max(cpus)),
            (None, None, Some(max)) => (cpus.min(max), max),
            (None, None, None) => (cpus, cpus),
        };
        if min > max {
            return Err(BuildError::MinAboveMax { min, max });
        }
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE_CAPACITY {
            return Err(invalid(
                "queue_capacity",
                &self.queue_capacity,
                "between 1 and 1073741824",
            ));
        }
        if self.stack_size == Some(0) {
            return Err(invalid("stack_size", &0, "a positive number of bytes"));
        }
        if let Err(e) = self.tenant_defaults.validate() {
            return Err(BuildError::Invalid {
                field: e.option,
                value: e.value,
                expected: e.expected,
            });
        }
        if let Some(n) = self.shards.filter(|&n| n == 0 || n > MAX_SHARDS) {
            return Err(invalid("shards", &n, "between 1 and 1048576"));
        }
        if let Some((field, value, expected)) = self.breaker.as_ref().and_then(|b| b.invalid()) {
            return Err(BuildError::Invalid {
                field,
                value,
                expected,
            });
        }
        let s = &self.scaling;
        if s.interval.is_zero() {
            return Err(invalid("scaling_interval", &"0s", "a positive duration"));
        }
        if s.interval > crate::MAX_DELAY {
            return Err(invalid(
                "scaling_interval",
                &format!("{:?}", s.interval),
                "at most MAX_DELAY (365 days)",
            ));
        }
        if s.keep_alive.is_zero() {
            return Err(invalid("keep_alive", &"0s", "a positive duration"));
        }
        if s.queue_wait_target.is_zero() {
            return Err(invalid("queue_wait_target", &"0s", "a positive duration"));
        }
        let unit = |v: f64| v > 0.0 && v <= 1.0;
        if !(unit(s.grow_above) && unit(s.shrink_below) && s.shrink_below < s.grow_above) {
            return Err(invalid(
                "utilization_watermarks",
                &format!("({}, {})", s.grow_above, s.shrink_below),
                "0 < shrink_below < grow_above <= 1",
            ));
        }
        if !unit(s.target_utilization) {
            return Err(invalid(
                "target_utilization",
                &s.target_utilization,
                "a fraction in (0, 1]",
            ));
        }
        if self.stall_threshold == Some(Duration::ZERO) {
            return Err(invalid("stall_threshold", &"0s", "a positive duration"));
        }
        if self.thread_name.contains('\0') {
            return Err(invalid(
                "thread_name",
                &format!("{:?}", self.thread_name),
                "a name without NUL bytes",
            ));
        }
        Ok(Config {
            name: self.name.clone(),
            max_workers: max,
            min_workers: min,
            queue_capacity: self.queue_capacity,
            backpressure: self.backpressure,
            thread_name: self.thread_name.clone(),
            stack_size: self.stack_size,
            panic_handler: self.panic_handler.clone(),
            histograms: self.metrics && self.histograms,
            track_workers: self.metrics || self.stall_threshold.is_some(),
            stall_threshold: self.stall_threshold,
            on_stall: self.on_stall.clone(),
            breaker: self.breaker.clone(),
            scaling: self.scaling,
            on_resize: self.on_resize.clone(),
            clock: self.clock.clone(),
            timer_clock: self.timer_clock.clone(),
            pending_timers: self.pending_timers,
            on_dead_letter: self.on_dead_letter.clone(),
            dead_letter_capacity: self.dead_letter_capacity,
            rate_limit: self.rate_limit,
            tenant_defaults: self.tenant_defaults.clone(),
            shards: self
                .shards
                .unwrap_or_else(|| (4 * max).max(64).next_power_of_two()),
        })
    }

    /// Validates the settings and starts the worker threads.
    ///
    /// # Errors
    /// A [`BuildError`] naming the setting and value that is wrong: zero or
    /// more than [`MAX_WORKERS`] workers, `min_workers > max_workers`,
    /// `workers` contradicting `min_workers`/`max_workers`, a
    /// `queue_capacity` of 0 or above [`MAX_QUEUE_CAPACITY`], a zero
    /// `stack_size`, a NUL byte in `thread_name`, a zero `scaling_interval`,
    /// `keep_alive` or `queue_wait_target`, watermarks out of order or a
    /// target utilization outside (0, 1]; [`BuildError::ThreadLimit`] when
    /// the threads the pool starts now exceed what the system has left (an
    /// elastic pool's `max_workers` may exceed it: the pool stops growing at
    /// the limit); or [`BuildError::Spawn`] when the OS refuses a thread, in
    /// which case every thread already started is stopped and joined first.
    pub fn build(self) -> Result<Pool, BuildError> {
        let config = self.validate()?;
        let (min, max) = (config.min_workers, config.max_workers);
        // A fixed pool runs `max`; an elastic one starts at `min` (at least
        // one, so that work always has a worker).
        let start = if min == max { max } else { min.max(1) };
        // Past the system's thread limits a thread start can abort the
        // process: ask before starting anything.
        let helpers = usize::from(config.stall_threshold.is_some()) + usize::from(min < max);
        if let Some(ceiling) = crate::sched::limits::current() {
            if start + helpers > ceiling.threads {
                return Err(BuildError::ThreadLimit {
                    requested: start + helpers,
                    available: ceiling.threads,
                    limit: ceiling.limit,
                });
            }
        }

        // A slot (and a deque) for every worker the pool may run; the first
        // `min` start now, the supervisor starts the others on demand.
        let locals: Vec<Local> = (0..max).map(|_| Local::new_lifo()).collect();
        let registry = Arc::new(Registry::new(config, locals));
        #[cfg(not(loom))]
        let _ = registry.this.set(Arc::downgrade(&registry));
        let fail = |worker: usize, source: std::io::Error| {
            registry.shutdown(ShutdownMode::Drain);
            Err(BuildError::Spawn { worker, source })
        };
        for index in 0..start {
            match Registry::spawn_worker(&registry, start) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let refused = std::io::Error::other("worker slot refused while starting");
                    return fail(index, refused);
                }
                Err(source) => return fail(index, source),
            }
        }
        if let Some(threshold) = registry.config.stall_threshold {
            match crate::sched::watchdog::spawn(Arc::clone(&registry), threshold) {
                Ok(handle) => registry.add_thread(handle),
                Err(source) => return fail(max, source),
            }
        }
        // (loom models drive the scaling steps themselves.)
        if min < max && cfg!(not(loom)) {
            match crate::scaling::spawn(Arc::clone(&registry)) {
                Ok(handle) => registry.add_thread(handle),
                Err(source) => return fail(max, source),
            }
        }
        Ok(Pool::from_registry(registry))
    }
}
