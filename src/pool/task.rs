//! `TaskBuilder`: the one way to submit a task, with options that combine
//! freely. `execute` and `spawn` on the pool are its short forms.

use crate::error::{InvalidOption, SubmitError, TaskError};
use crate::loom::sync::Arc;
use crate::sched::tenancy::Priority;
use crate::sched::{Registry, Wait};
use crate::task::cancel::{TaskOptions, WithCx};
use crate::task::{CancelToken, JoinHandle, TaskContext};
use crate::tenants::{Ask, TenantId};
use crate::time::RetryPolicy;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc as StdArc;
use std::time::{Duration, Instant};

/// A task being described, from [`PoolHandle::task`](crate::PoolHandle::task):
/// set any options, then submit it with one of the terminal calls.
///
/// | option | effect |
/// |---|---|
/// | [`name`](Self::name) | shown by `dump` and the stall watchdog; readable from the context |
/// | [`key`](Self::key) | runs after every earlier task of the same key's shard (of its tenant), never beside one |
/// | [`timeout`](Self::timeout) / [`deadline`](Self::deadline) | a task still queued at its deadline never starts (`TimedOut`); a running one sees `is_cancelled()` |
/// | [`start_at_run`](Self::start_at_run) | starts the `timeout` clock when the task starts |
/// | [`cancel_token`](Self::cancel_token) | cancelling the token cancels the task (never started: `Cancelled`) |
/// | [`wait_for_room`](Self::wait_for_room) | under `Backpressure::Block`, waits at most this long for room |
/// | [`delay`](Self::delay) / [`at`](Self::at) | waits on the pool's timing wheel (no thread, no worker) until due, then is queued |
/// | [`retry`](Self::retry) | a fallible task failing is tried again after a backoff, then goes to the dead letters |
/// | [`tenant`](Self::tenant) | waits in its tenant's queue; tenants share the workers by weight, each within its limits |
/// | [`priority`](Self::priority) | its lane in its tenant's queue (high, normal, low, with aging) |
/// | [`cost`](Self::cost) | units of its tenant's `max_concurrency` it takes while it runs |
///
/// Terminal calls: [`execute`](Self::execute) (fire and forget),
/// [`spawn`](Self::spawn) (a [`JoinHandle`]), [`spawn_with`](Self::spawn_with)
/// (the closure gets a [`TaskContext`] and may return early with
/// `cx.check()?`), and their non-blocking forms `try_execute`, `try_spawn`,
/// `try_spawn_with`, which never wait for room;
/// [`spawn_fallible`](Self::spawn_fallible),
/// [`spawn_fallible_if`](Self::spawn_fallible_if) and
/// [`execute_fallible`](Self::execute_fallible) for a task that returns an
/// application error (retried under [`retry`](Self::retry)); and
/// [`periodic`](Self::periodic) for one that repeats.
///
/// ```
/// use std::time::Duration;
/// use ebbtide::{CancelToken, TaskError};
/// let pool = ebbtide::Pool::builder().workers(2).build()?;
/// let token = CancelToken::new();
/// // A keyed, named task with a deadline and a token, that never blocks.
/// let handle = pool
///     .task()
///     .key(&"account-7")
///     .name("settle")
///     .timeout(Duration::from_secs(5))
///     .cancel_token(&token)
///     .try_spawn_with(|cx| {
///         cx.check()?;
///         Ok(cx.name().map(str::len))
///     })?;
/// assert_eq!(handle.join(), Ok(Some(6)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a task builder does nothing until a terminal call (execute, spawn, …)"]
pub struct TaskBuilder<'p> {
    pub(super) registry: &'p Arc<Registry>,
    pub(super) shard: Option<usize>,
    pub(super) room: Option<Duration>,
    /// Options that need the task's context; boxed so that a plain or
    /// keyed submission carries four words and builds nothing.
    pub(super) options: Option<Box<TaskOptions>>,
    /// Tenant, priority and cost, if any was given.
    pub(super) share: Option<Box<Ask>>,
}

impl fmt::Debug for TaskBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("options", &self.options)
            .field("shard", &self.shard)
            .field("wait_for_room", &self.room)
            .field(
                "tenant",
                &self
                    .share
                    .as_ref()
                    .and_then(|s| s.tenant.as_ref())
                    .map(|t| &t.name),
            )
            .finish()
    }
}

impl<'p> TaskBuilder<'p> {
    #[inline]
    pub(crate) fn new(registry: &'p Arc<Registry>) -> Self {
        TaskBuilder {
            registry,
            shard: None,
            room: None,
            options: None,
            share: None,
        }
    }

    pub(super) fn options_ref(&self) -> Option<&TaskOptions> {
        self.options.as_deref()
    }

    pub(super) fn options(&mut self) -> &mut TaskOptions {
        self.options.get_or_insert_with(Box::default)
    }

    fn share(&mut self) -> &mut Ask {
        self.share.get_or_insert_with(|| Box::new(Ask::plain(None)))
    }

    /// The tenant the task belongs to: any value that hashes and prints
    /// (a customer ID, a name). The task waits in its tenant's queue and
    /// is let through to the workers in fair turn: tenants with work
    /// queued share the workers by their weights, each within its own
    /// concurrency and rate limits ([`TenantConfig`](crate::TenantConfig);
    /// a tenant is made on first use with the pool's
    /// [`tenant_defaults`](crate::Builder::tenant_defaults) and forgotten
    /// again once idle, unless configured with
    /// [`configure_tenant`](crate::PoolHandle::configure_tenant)). Keys
    /// keep their order inside a tenant. A [`delay`](Self::delay)ed task
    /// waits on the timing wheel, then in its tenant's queue; so does each
    /// retry of a fallible task (a keyed task's retry holds its shard
    /// instead) and each run of a [`periodic`](Self::periodic) task.
    ///
    /// ```
    /// use ebbtide::{Pool, TenantConfig};
    /// let pool = Pool::builder().workers(2).build()?;
    /// pool.configure_tenant(&"gold", TenantConfig::new().weight(3))?;
    /// for i in 0..30u64 {
    ///     let tenant = if i % 2 == 0 { "gold" } else { "free" };
    ///     pool.task().tenant(tenant).execute(move || { std::hint::black_box(i); })?;
    /// }
    /// pool.wait_idle();
    /// let m = pool.metrics();
    /// assert_eq!(m.counts.completed, 30);
    /// assert_eq!(m.tenants.iter().map(|t| t.dispatched).sum::<u64>() + m.tenants_other.unwrap().dispatched, 30);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tenant<T: Hash + fmt::Display + ?Sized>(mut self, tenant: &T) -> Self {
        self.share().tenant = Some(TenantId::of(tenant));
        self
    }

    /// The task's lane in its tenant's queue (the unnamed tenant's
    /// without [`tenant`](Self::tenant)): high before normal before low,
    /// except that a task that has waited its tenant's
    /// [`aging`](crate::TenantConfig::aging) goes before newer ones. A
    /// [`key`](Self::key)ed task keeps its key's order: while an earlier
    /// task of its shard waits in a lower lane, it waits in that lane.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.share().priority = priority;
        self
    }

    /// How many units of its tenant's
    /// [`max_concurrency`](crate::TenantConfig::max_concurrency) the task
    /// takes while it runs (default 1), so that one heavy task can count
    /// as eight light ones. A cost of 0, or above the tenant's
    /// `max_concurrency`, makes the terminal call fail with
    /// [`SubmitError::Invalid`].
    pub fn cost(mut self, units: u32) -> Self {
        self.share().cost = units;
        self
    }

    /// Names the task: the name appears in `dump` and in stall reports
    /// while it runs, and in its context ([`TaskContext::name`]).
    pub fn name(mut self, name: impl Into<StdArc<str>>) -> Self {
        self.options().name = Some(name.into());
        self
    }

    /// Keys the task: tasks of the same key (indeed of the same shard:
    /// keys hash to one of [`shards`](crate::PoolHandle::shards) virtual
    /// shards) never run concurrently and run in submission order; tasks
    /// of different shards run in parallel. The order holds within a
    /// [`tenant`](Self::tenant) (tasks without one count as one), whatever
    /// each task's [`priority`](Self::priority) or cost; a delayed task
    /// takes its place when it comes due. A shard with work is scheduled
    /// as a unit on its home worker, runs at most 32 tasks before yielding,
    /// and is stolen by idle workers under skew.
    ///
    /// Backpressure applies as to other tasks, except `CallerRuns`, which
    /// would run the task outside its shard: a keyed task blocks like
    /// `Block` instead. Joining, from a keyed task, the handle of a task of
    /// its own shard that has not run yet returns
    /// [`TaskError::WouldDeadlock`] instead of waiting forever.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// for i in 0..10 {
    ///     let log = Arc::clone(&log);
    ///     pool.task().key(&"account-7").execute(move || log.lock().unwrap().push(i))?;
    /// }
    /// pool.wait_idle();
    /// assert_eq!(*log.lock().unwrap(), (0..10).collect::<Vec<_>>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn key<K: Hash + ?Sized>(mut self, key: &K) -> Self {
        self.shard = Some(self.registry.sharder.shard_of(key));
        self
    }

    /// Keys the task to shard `shard` (modulo the pool's shards) directly:
    /// a replayed dead letter keeps its shard.
    pub(super) fn shard_index(mut self, shard: usize) -> Self {
        self.shard = Some(shard % self.registry.shards.len());
        self
    }

    /// A deadline `d` after submission (or after the start, with
    /// [`start_at_run`](Self::start_at_run)). A task whose deadline passes
    /// while it is queued never starts: its handle says
    /// [`TaskError::TimedOut`]. A running task sees its context's
    /// `is_cancelled()` turn true; a value returned late is still
    /// delivered and counted in `Counts::deadline_missed`. A `d` too far
    /// off for the clock (`Duration::MAX`) sets no deadline.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.options().timeout = Some(d);
        self
    }

    /// An absolute deadline (overrides [`timeout`](Self::timeout)).
    pub fn deadline(mut self, at: Instant) -> Self {
        self.options().deadline = Some(at);
        self
    }

    /// Starts the `timeout` clock when the task starts instead of at
    /// submission: time in the queue does not count.
    pub fn start_at_run(mut self) -> Self {
        self.options().start_at_run = true;
        self
    }

    /// Makes the task's token a child of `token` (it is also cancelled by
    /// the pool's `shutdown_now`): cancelling `token` before the task starts
    /// means it never runs ([`TaskError::Cancelled`]); after, its context's
    /// `is_cancelled()` turns true. A task waiting on the timing wheel (a
    /// [`delay`](Self::delay), a [`retry`](Self::retry)'s backoff, a
    /// periodic task's next run) ends as soon as `token` is cancelled, not
    /// at its due time: a delayed or periodic task is taken off the wheel
    /// (its handle resolves to `Cancelled`, or, periodic, to its runs so
    /// far), and a waiting retry comes due at the next tick to end there.
    /// A task waiting in its tenant's queue (for a rate limit's refill,
    /// say) leaves it at once and ends unrun, taking no rate token; a keyed
    /// one keeps its place in its key's order and goes through, free, at
    /// its turn.
    ///
    /// ```
    /// use ebbtide::{CancelToken, Pool, TaskError};
    /// use std::time::Duration;
    ///
    /// let pool = Pool::builder().workers(1).build()?;
    /// let token = CancelToken::new();
    /// let later = pool
    ///     .task()
    ///     .delay(Duration::from_secs(3600))
    ///     .cancel_token(&token)
    ///     .spawn(|| "an hour from now")?;
    /// token.cancel();
    /// // Ended now, not in an hour.
    /// let result = later.join_timeout(Duration::from_secs(60)).ok();
    /// assert_eq!(result, Some(Err(TaskError::Cancelled)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel_token(mut self, token: &CancelToken) -> Self {
        self.options().parent = Some(token.clone());
        self
    }

    /// Runs the task `d` from now (by the pool's
    /// [`timer_clock`](crate::Builder::timer_clock)), at the timing wheel's
    /// 1 ms resolution, never early. Meanwhile it waits on the wheel: no
    /// thread or worker waits for it, it takes no queue place, and
    /// `wait_idle` does not wait for it. When due it is queued as any
    /// task (ahead of capacity: it was accepted already). A deadline
    /// ([`timeout`](Self::timeout)) counts from submission unless
    /// [`start_at_run`](Self::start_at_run) is set. Cancelling its handle
    /// or token before it is due means it never runs. At shutdown it is
    /// abandoned or run early, as [`PendingTimers`](crate::PendingTimers)
    /// says.
    ///
    /// A delay beyond [`MAX_DELAY`](crate::MAX_DELAY) makes the terminal
    /// call fail with [`SubmitError::Invalid`].
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let start = Instant::now();
    /// let handle = pool.task().delay(Duration::from_millis(20)).spawn(Instant::now)?;
    /// assert!(handle.join()? >= start + Duration::from_millis(20));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delay(mut self, d: Duration) -> Self {
        if d > crate::MAX_DELAY {
            self.options().invalid = Some(InvalidOption::new(
                "delay",
                d,
                "at most MAX_DELAY (365 days)",
            ));
            return self;
        }
        let now = self.registry.timers.clock.now();
        self.options().at = Some(now + d);
        self
    }

    /// Runs the task at `at` (an instant of the pool's
    /// [`timer_clock`](crate::Builder::timer_clock)); as
    /// [`delay`](Self::delay). An instant already past runs it now.
    pub fn at(mut self, at: Instant) -> Self {
        let now = self.registry.timers.clock.now();
        if at.saturating_duration_since(now) > crate::MAX_DELAY {
            self.options().invalid = Some(InvalidOption::new(
                "at",
                at.saturating_duration_since(now),
                "at most MAX_DELAY (365 days) ahead",
            ));
            return self;
        }
        self.options().at = Some(at);
        self
    }

    /// Retries a fallible task ([`spawn_fallible`](Self::spawn_fallible),
    /// [`execute_fallible`](Self::execute_fallible)) under `policy`: after
    /// an error, the worker is free and the next attempt waits on the
    /// timing wheel for the policy's delay. A keyed task that is waiting
    /// to retry holds its key: later tasks of its shard wait, in order;
    /// other shards run on. Its handle's
    /// [`cancel`](crate::JoinHandle::cancel) while it waits ends it at once
    /// as `Cancelled`, and its key goes on. After the last attempt the task
    /// goes to the pool's dead letters. So does an attempt that fails once the task is
    /// cancelled (its handle, its token, its deadline, or `shutdown_now`):
    /// it is not tried again, and its dead letter holds the attempts made.
    /// A policy that contradicts itself, or `retry` on a task that cannot
    /// fail, makes the terminal call fail with [`SubmitError::Invalid`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.options().retry = Some(policy);
        self
    }

    /// Under [`Backpressure::Block`](crate::Backpressure::Block), waits at
    /// most `d` for room; then the submission fails with
    /// [`SubmitError::Timeout`]. Other policies ignore it. A `d` too far
    /// off for the clock (`Duration::MAX`) waits as long as it takes.
    pub fn wait_for_room(mut self, d: Duration) -> Self {
        self.room = Some(d);
        self
    }

    /// Submits the task, fire and forget. Called on one of this pool's
    /// workers, an unkeyed task goes to that worker's own deque (idle
    /// workers steal it).
    ///
    /// # Errors
    /// [`SubmitError::ShutDown`] once shutdown began; [`SubmitError::Full`]
    /// when the queue is full under `Reject`; [`SubmitError::Timeout`] when
    /// [`wait_for_room`](Self::wait_for_room) ran out;
    /// [`SubmitError::BreakerOpen`] while the circuit breaker is open. The
    /// closure is handed back. Under `DropNewest` a full queue discards the
    /// task and returns `Ok` (it is counted in the metrics).
    #[inline]
    pub fn execute<F>(self, f: F) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        let wait = self.wait();
        self.execute_waiting(f, wait)
    }

    /// Like [`execute`](Self::execute), but never waits for room: under
    /// `Block` and `CallerRuns` a full queue returns [`SubmitError::Full`].
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    pub fn try_execute<F>(self, f: F) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.execute_waiting(f, Wait::Never)
    }

    /// Submits the task and returns a [`JoinHandle`] to its result.
    ///
    /// # Errors
    /// As [`execute`](Self::execute). Under `DropNewest`/`DropOldest` the
    /// handle of a dropped task resolves to [`TaskError::Dropped`].
    pub fn spawn<F, T>(self, f: F) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let wait = self.wait();
        self.spawn_waiting(f, wait)
    }

    /// Like [`spawn`](Self::spawn), but never waits for room.
    ///
    /// # Errors
    /// As [`try_execute`](Self::try_execute).
    pub fn try_spawn<F, T>(self, f: F) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_waiting(f, Wait::Never)
    }

    /// Submits a task that takes a [`TaskContext`]: its deadline and
    /// cancellation token. The closure returns `Result<T, TaskError>`, so
    /// `cx.check()?` returns early with `TimedOut` or `Cancelled`; the
    /// handle yields that result.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ebbtide::TaskError;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let handle = pool.task().timeout(Duration::from_millis(20)).spawn_with(|cx| {
    ///     while !cx.is_cancelled() {
    ///         std::thread::sleep(Duration::from_millis(1));
    ///     }
    ///     cx.check()?; // returns Err(TimedOut) here
    ///     Ok("unreachable")
    /// })?;
    /// assert_eq!(handle.join(), Err(TaskError::TimedOut));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn).
    pub fn spawn_with<F, T>(self, f: F) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&TaskContext) -> Result<T, TaskError> + Send + 'static,
        T: Send + 'static,
    {
        let wait = self.wait();
        if let Some(why) = self.invalid(false) {
            return Err(SubmitError::Invalid(f, why));
        }
        self.submit_context(WithCx(f), wait)
    }

    /// Like [`spawn_with`](Self::spawn_with), but never waits for room.
    ///
    /// # Errors
    /// As [`try_execute`](Self::try_execute).
    pub fn try_spawn_with<F, T>(self, f: F) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&TaskContext) -> Result<T, TaskError> + Send + 'static,
        T: Send + 'static,
    {
        if let Some(why) = self.invalid(false) {
            return Err(SubmitError::Invalid(f, why));
        }
        self.submit_context(WithCx(f), Wait::Never)
    }
}
