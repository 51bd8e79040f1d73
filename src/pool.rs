//! The public face: `Pool` (owns the threads, shuts down on drop) and
//! `PoolHandle` (a cheap, clonable reference for submitting and waiting).

use crate::builder::Builder;
use crate::error::{BuildError, SubmitError};
use crate::handle::{JoinHandle, Slot, Spawn, TaskSlot};
use crate::job::Execute;
use crate::loom::sync::Arc;
use crate::metrics::Metrics;
use crate::registry::{Registry, ShutdownMode, Wait};
use std::fmt;
use std::hash::Hash;
use std::ops::Deref;
use std::time::{Duration, Instant};

/// What shutdown did, counted since the pool was built.
///
/// Identity, exact once shutdown has returned:
/// `submitted = completed + panicked + abandoned + dropped + rejected + timed_out + cancelled + still_running`
/// (nothing is queued any more). Submissions refused with
/// [`SubmitError::ShutDown`] are not counted anywhere: the caller got the
/// closure back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Tasks offered while the pool was open.
    pub submitted: u64,
    /// Tasks that returned normally.
    pub completed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Queued tasks shutdown discarded (their handles say `Abandoned`).
    pub abandoned: u64,
    /// Tasks dropped by `DropNewest`/`DropOldest`.
    pub dropped: u64,
    /// Submissions refused for want of room (or by the circuit breaker).
    pub rejected: u64,
    /// Tasks whose deadline passed before they started, or that returned
    /// `TimedOut`.
    pub timed_out: u64,
    /// Tasks cancelled before they started, or that returned `Cancelled`.
    pub cancelled: u64,
    /// Tasks still running when the call returned (only after a deadline
    /// or `shutdown_now`; their workers exit when they finish, and dropping
    /// the `Pool` joins them).
    pub still_running: u64,
}

/// A clonable reference to a pool: submit tasks, wait, read metrics.
///
/// It does not keep the pool's threads alive: once the owning [`Pool`] shuts
/// down, submissions through any handle fail with
/// [`SubmitError::ShutDown`]. Capture one in a task to submit from inside.
#[derive(Clone)]
pub struct PoolHandle {
    pub(crate) registry: Arc<Registry>,
}

impl fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolHandle")
            .field("name", &self.registry.config.name)
            .field("workers", &self.registry.live_workers())
            .finish()
    }
}

fn spawn_parts<F, T>(f: F) -> (Spawn<F, T>, Arc<TaskSlot<T>>) {
    let slot = Arc::new(Slot::new());
    (
        Spawn {
            f,
            slot: Arc::clone(&slot),
        },
        slot,
    )
}

impl PoolHandle {
    fn execute_with<F>(&self, f: F, wait: Wait) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.registry
            .submit(Execute(f), wait, None)
            .map(drop)
            .map_err(|e| e.map(|Execute(f)| f))
    }

    fn spawn_waiting<F, T>(&self, f: F, wait: Wait) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (body, slot) = spawn_parts(f);
        match self.registry.submit(body, wait, None) {
            Ok(_) => Ok(JoinHandle::new(slot)),
            Err(e) => Err(e.map(|s| s.f)),
        }
    }

    /// Submits a fire-and-forget task. Called on one of this pool's workers,
    /// the task goes to that worker's own deque (idle workers steal it).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let count = Arc::new(AtomicUsize::new(0));
    /// for _ in 0..100 {
    ///     let count = Arc::clone(&count);
    ///     pool.execute(move || { count.fetch_add(1, Ordering::Relaxed); })?;
    /// }
    /// pool.wait_idle();
    /// assert_eq!(count.load(Ordering::Relaxed), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`SubmitError::ShutDown`] once shutdown began; [`SubmitError::Full`]
    /// when the queue is full and the policy is
    /// [`Reject`](crate::Backpressure::Reject). The closure is handed back.
    /// Under `DropNewest` a full queue discards the task and returns `Ok`
    /// (it is counted in the metrics).
    pub fn execute<F>(&self, f: F) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.execute_with(f, Wait::Policy)
    }

    /// Like [`execute`](Self::execute), but never blocks: when the queue is
    /// full, `Block` and `CallerRuns` return `Full` too.
    ///
    /// # Errors
    /// As [`execute`](Self::execute), plus `Full` for a full queue under
    /// `Block` and `CallerRuns`.
    pub fn try_execute<F>(&self, f: F) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.execute_with(f, Wait::Never)
    }

    /// Like [`execute`](Self::execute), but under `Block` waits at most
    /// `timeout` for room.
    ///
    /// # Errors
    /// As [`execute`](Self::execute), plus [`SubmitError::Timeout`] when no
    /// room appeared in time.
    pub fn execute_timeout<F>(&self, f: F, timeout: Duration) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.execute_with(f, Wait::Until(Instant::now() + timeout))
    }

    /// Submits a task and returns a [`JoinHandle`] to its result.
    ///
    /// ```
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let handle = pool.spawn(|| (1..=10u64).product::<u64>())?;
    /// assert_eq!(handle.join()?, 3_628_800);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`execute`](Self::execute). Under `DropNewest`/`DropOldest` the
    /// handle of a dropped task resolves to
    /// [`TaskError::Dropped`](crate::TaskError::Dropped).
    pub fn spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_waiting(f, Wait::Policy)
    }

    /// Like [`spawn`](Self::spawn), but never blocks.
    ///
    /// # Errors
    /// As [`try_execute`](Self::try_execute).
    pub fn try_spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_waiting(f, Wait::Never)
    }

    /// Like [`spawn`](Self::spawn), but under `Block` waits at most
    /// `timeout` for room.
    ///
    /// # Errors
    /// As [`execute_timeout`](Self::execute_timeout).
    pub fn spawn_timeout<F, T>(
        &self,
        f: F,
        timeout: Duration,
    ) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_waiting(f, Wait::Until(Instant::now() + timeout))
    }

    /// Submits a task that takes a [`TaskContext`](crate::TaskContext): a
    /// deadline and a cancellation token (a child of the pool's, or of
    /// `opts`' parent token). The closure returns `Result<T, TaskError>`, so
    /// `cx.check()?` returns early with `TimedOut` or `Cancelled`; the
    /// handle yields that result. See [`TaskOptions`](crate::TaskOptions)
    /// for the deadline rules: a task whose deadline passes in the queue
    /// never starts (`TimedOut`); a task cancelled before it starts never
    /// runs (`Cancelled`); a value returned after the deadline is still
    /// delivered and counted in `Counts::deadline_missed`.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn).
    pub fn spawn_with<F, T>(
        &self,
        opts: crate::TaskOptions,
        f: F,
    ) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&crate::TaskContext) -> Result<T, crate::TaskError> + Send + 'static,
        T: Send + 'static,
    {
        let parent = opts.parent.as_ref().unwrap_or(&self.registry.token);
        let token = parent.child();
        if opts.parent.is_some() && self.registry.token.is_cancelled() {
            token.cancel();
        }
        let slot = Arc::new(Slot::with_token(token));
        let body = crate::cancel::ContextTask {
            f,
            slot: Arc::clone(&slot),
            deadline: opts.resolve(),
            name: opts.name.clone(),
        };
        match self.registry.submit(body, Wait::Policy, None) {
            Ok(_) => Ok(JoinHandle::new(slot)),
            Err(e) => Err(e.map(|b| b.f)),
        }
    }

    /// A [`TaskGroup`](crate::TaskGroup) on this pool: fail-fast by
    /// default, with an optional concurrency limit; its token is a child of
    /// the pool's.
    pub fn group<T: Send + 'static, E: Send + 'static>(&self) -> crate::TaskGroup<T, E> {
        crate::TaskGroup::new(self.clone(), self.registry.token.child())
    }

    pub(crate) fn submit_task<R: crate::job::Runnable>(
        &self,
        body: R,
    ) -> Result<crate::registry::Admitted, SubmitError<R>> {
        self.registry.submit(body, Wait::Policy, None)
    }

    /// Submits a fire-and-forget task keyed by `key`: tasks of the same key
    /// (indeed of the same shard: keys hash to one of
    /// [`shards`](Self::shards) virtual shards) never run concurrently and
    /// run in submission order; tasks of different shards run in parallel.
    /// A shard with work is scheduled as a unit on its home worker (cache
    /// locality), runs at most 32 tasks before yielding, and is stolen by
    /// idle workers under skew.
    ///
    /// Backpressure and shutdown apply as to other tasks, except
    /// `CallerRuns`, which would run the task outside its shard: for keyed
    /// tasks it blocks like `Block`.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// for i in 0..10 {
    ///     let log = Arc::clone(&log);
    ///     pool.execute_keyed(&"account-7", move || log.lock().unwrap().push(i))?;
    /// }
    /// pool.wait_idle();
    /// assert_eq!(*log.lock().unwrap(), (0..10).collect::<Vec<_>>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    pub fn execute_keyed<K, F>(&self, key: &K, f: F) -> Result<(), SubmitError<F>>
    where
        K: Hash + ?Sized,
        F: FnOnce() + Send + 'static,
    {
        let shard = self.shard_of(key);
        self.submit_keyed(Execute(f), shard)
            .map(drop)
            .map_err(|e| e.map(|Execute(f)| f))
    }

    /// Like [`execute_keyed`](Self::execute_keyed), returning a handle.
    /// Joining, from a keyed task, the handle of a task of its own shard
    /// that has not run yet returns [`TaskError::WouldDeadlock`](crate::TaskError::WouldDeadlock)
    /// instead of waiting forever.
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    pub fn spawn_keyed<K, F, T>(&self, key: &K, f: F) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        K: Hash + ?Sized,
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let shard = self.shard_of(key);
        let slot = Arc::new(Slot::keyed(self.registry_addr(), shard));
        let body = Spawn {
            f,
            slot: Arc::clone(&slot),
        };
        match self.submit_keyed(body, shard) {
            Ok(_) => Ok(JoinHandle::new(slot)),
            Err(e) => Err(e.map(|s| s.f)),
        }
    }

    /// A [`Keyed`](crate::Keyed) handle whose tasks own per-shard state,
    /// created lazily by `init(shard_index)`.
    pub fn keyed_state<S, I>(&self, init: I) -> crate::Keyed<S>
    where
        S: Send + 'static,
        I: Fn(usize) -> S + Send + Sync + 'static,
    {
        crate::Keyed::new(self.clone(), init)
    }

    /// The shard `key` maps to (stable: a fixed-seed hash modulo
    /// [`shards`](Self::shards)).
    pub fn shard_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        self.registry.sharder.shard_of(key)
    }

    /// The number of keyed shards.
    pub fn shards(&self) -> usize {
        self.registry.sharder.count()
    }

    pub(crate) fn submit_keyed<R: crate::job::Runnable>(
        &self,
        body: R,
        shard: usize,
    ) -> Result<crate::registry::Admitted, SubmitError<R>> {
        self.registry.submit(body, Wait::Policy, Some(shard))
    }

    pub(crate) fn registry_addr(&self) -> usize {
        Arc::as_ptr(&self.registry) as usize
    }

    /// Blocks until no task is queued or running; the pool stays usable (a
    /// barrier between batches).
    ///
    /// Called from a task of this pool, it waits for every *other* task
    /// (tasks that are themselves in `wait_idle` do not count) and runs
    /// queued work meanwhile, so it does not deadlock, even with one worker.
    ///
    /// Do not call it from a keyed task while later tasks of its own shard
    /// are queued: they cannot start before the calling task returns (a
    /// shard runs one task at a time), so the wait would not end. A keyed
    /// task that needs another task's result should join that task's
    /// handle, which detects this case (`TaskError::WouldDeadlock`).
    pub fn wait_idle(&self) {
        self.registry.wait_idle();
    }

    /// Runs `f` on a worker of this pool and returns its value; `f` may
    /// borrow from the caller. Inside `f`, [`join`](crate::join) and
    /// scopes use this pool. A panic in `f` is resumed here. Called on a
    /// worker of this pool, it runs `f` directly; on a worker of another
    /// pool, that worker helps its own pool while it waits, so pools may
    /// install into each other without deadlock.
    ///
    /// ```
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let data = vec![1, 2, 3, 4];
    /// let sum = pool.install(|| data.iter().sum::<i32>());
    /// assert_eq!(sum, 10);
    /// # Ok::<(), ebbtide::BuildError>(())
    /// ```
    ///
    /// # Panics
    /// Resumes `f`'s panic. Panics if the pool is shut down (there is no
    /// worker left to run `f`): use [`try_install`](Self::try_install) to
    /// get an error instead.
    pub fn install<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        match self.registry.install(f) {
            Ok(value) => value,
            Err(_) => panic!("ebbtide: install on a pool that is shut down"),
        }
    }

    /// Like [`install`](Self::install), but a shut-down pool is an error.
    ///
    /// # Errors
    /// [`SubmitError::ShutDown`] with `f` once shutdown began.
    ///
    /// # Panics
    /// Resumes `f`'s panic.
    pub fn try_install<F, R>(&self, f: F) -> Result<R, SubmitError<F>>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        self.registry.install(f)
    }

    /// Runs `a` and `b` on this pool, potentially in parallel (see
    /// [`ebbtide::join`](crate::join)).
    ///
    /// # Panics
    /// Resumes a panic of `a` or `b` (`a`'s if both panic), once both are
    /// done; panics if the pool is shut down, as [`install`](Self::install).
    pub fn join<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA + Send,
        B: FnOnce() -> RB + Send,
        RA: Send,
        RB: Send,
    {
        self.install(|| crate::join(a, b))
    }

    /// Runs `f` with a [`Scope`](crate::Scope) whose tasks may borrow from
    /// outside it, and returns once every task spawned in it has finished.
    /// The scope body runs on a worker, which helps run the scope's tasks
    /// while it waits. Tasks are spawned LIFO on the spawning worker's
    /// deque (depth-first, cache-friendly); see
    /// [`scope_fifo`](Self::scope_fifo) for submission order.
    ///
    /// ```
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let mut chunks = vec![vec![1u64; 100]; 8];
    /// pool.scope(|s| {
    ///     for chunk in chunks.iter_mut() {
    ///         s.spawn(move || chunk.iter_mut().for_each(|x| *x *= 2));
    ///     }
    /// });
    /// assert!(chunks.iter().flatten().all(|&x| x == 2));
    /// # Ok::<(), ebbtide::BuildError>(())
    /// ```
    ///
    /// # Panics
    /// A panic in the body or in any unjoined task is resumed once every
    /// task has finished (the body's first, else the first task's). Panics
    /// if the pool is shut down, as [`install`](Self::install).
    pub fn scope<'env, F, R>(&self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope crate::Scope<'scope, 'env>) -> R + Send,
        R: Send,
    {
        self.install(|| crate::scope::run_scope(current_worker(), false, f))
    }

    /// Like [`scope`](Self::scope), but tasks go to the pool's FIFO queue,
    /// so they start in the order they were spawned (they may still finish
    /// in any order on several workers).
    ///
    /// # Panics
    /// As [`scope`](Self::scope).
    pub fn scope_fifo<'env, F, R>(&self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope crate::Scope<'scope, 'env>) -> R + Send,
        R: Send,
    {
        self.install(|| crate::scope::run_scope(current_worker(), true, f))
    }

    /// Stops handing queued tasks to workers: running tasks finish, new
    /// submissions still queue (subject to capacity and backpressure), and
    /// nothing queued starts until [`resume`](Self::resume). Work that
    /// running tasks wait for (`join`, scopes, `install`) still runs.
    /// Pausing twice is harmless. `shutdown()` resumes and drains;
    /// `shutdown_now()` abandons. `wait_idle` on a paused pool with queued
    /// tasks waits for `resume`.
    pub fn pause(&self) {
        self.registry.pause();
    }

    /// Hands queued tasks to workers again; harmless when not paused.
    pub fn resume(&self) {
        self.registry.resume();
    }

    /// Pauses the pool until the returned guard drops.
    ///
    /// ```
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// {
    ///     let _paused = pool.pause_guard();
    ///     pool.execute(|| ())?;
    ///     assert_eq!(pool.metrics().queued, 1);
    /// } // resumed here
    /// pool.wait_idle();
    /// assert_eq!(pool.metrics().counts.completed, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pause_guard(&self) -> PauseGuard<'_> {
        self.pause();
        PauseGuard(self)
    }

    /// Whether the pool is paused.
    pub fn is_paused(&self) -> bool {
        self.registry.is_paused()
    }

    /// The number of worker threads.
    pub fn num_workers(&self) -> usize {
        self.registry.live_workers()
    }

    /// The resizes of an elastic pool so far, oldest first (the last 256):
    /// when, from and to how many workers, why, and what the supervisor saw.
    pub fn resize_history(&self) -> Vec<crate::ResizeEvent> {
        self.registry.resize_history()
    }

    /// The most workers the pool may run (`max_workers`).
    pub fn max_workers(&self) -> usize {
        self.registry.max_workers()
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.registry.config.name
    }

    /// The fewest workers the pool keeps (as configured).
    pub fn min_workers(&self) -> usize {
        self.registry.config.min_workers
    }

    /// Whether shutdown has begun.
    pub fn is_shut_down(&self) -> bool {
        self.registry.is_closed()
    }

    /// A snapshot of the pool's gauges, counters, histograms and lock
    /// contention (see [`Metrics`] for what may be slightly stale).
    ///
    /// ```
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// for i in 0..100u64 {
    ///     pool.execute(move || { std::hint::black_box(i * i); })?;
    /// }
    /// pool.wait_idle();
    /// let m = pool.metrics();
    /// assert_eq!(m.counts.completed, 100);
    /// assert_eq!(m.run_time.count(), 100);
    /// println!("{m}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics(&self) -> Metrics {
        self.registry.metrics()
    }

    /// What every worker is doing now (parked, searching, running task #N
    /// for how long, its deque length): the thread dump of a stuck pool.
    /// `Display` prints it.
    pub fn dump(&self) -> crate::PoolDump {
        self.registry.dump()
    }
}

/// The worker running an `install` body.
fn current_worker() -> &'static crate::worker::WorkerThread {
    crate::worker::WorkerThread::current().expect("install runs its closure on a worker")
}

/// Resumes its pool when dropped (see [`PoolHandle::pause_guard`]).
#[must_use = "the pool resumes when the guard drops"]
#[derive(Debug)]
pub struct PauseGuard<'a>(&'a PoolHandle);

impl Drop for PauseGuard<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// A work-stealing thread pool. Owns its worker threads: dropping it shuts
/// it down (draining every queued task) and joins them.
///
/// `Pool` dereferences to [`PoolHandle`], which carries the submission API;
/// [`Pool::handle`] gives a clonable handle to pass into tasks.
///
/// ```
/// use ebbtide::Pool;
/// let pool = Pool::builder().workers(2).build()?;
/// let handles: Vec<_> = (0..4u64)
///     .map(|i| pool.spawn(move || i * i))
///     .collect::<Result<_, _>>()?;
/// let squares: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
/// assert_eq!(squares, [0, 1, 4, 9]);
/// let report = pool.shutdown();
/// assert_eq!(report.completed, 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool {
    handle: PoolHandle,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name())
            .field("workers", &self.num_workers())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

impl Deref for Pool {
    type Target = PoolHandle;
    fn deref(&self) -> &PoolHandle {
        &self.handle
    }
}

impl Pool {
    /// A pool with default settings: one worker per CPU.
    ///
    /// # Errors
    /// [`BuildError::Spawn`] if the OS refuses to start a thread.
    pub fn new() -> Result<Pool, BuildError> {
        Builder::new().build()
    }

    /// A [`Builder`] to configure a pool.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_registry(registry: Arc<Registry>) -> Pool {
        Pool {
            handle: PoolHandle { registry },
        }
    }

    /// A clonable handle for submitting from elsewhere (e.g. inside tasks).
    pub fn handle(&self) -> PoolHandle {
        self.handle.clone()
    }

    /// Stops accepting tasks, runs every queued task, and joins every
    /// worker thread. Idempotent; several threads may call it at once and
    /// all return once the pool is down.
    ///
    /// Called from a task running on this pool, it closes admission and
    /// returns without waiting (it cannot wait for its own task); the
    /// workers drain the queue and exit on their own.
    pub fn shutdown(&self) -> ShutdownReport {
        self.handle.registry.shutdown(ShutdownMode::Drain)
    }

    /// Like [`shutdown`](Self::shutdown), but runs queued tasks only until
    /// `timeout` has passed; then abandons what has not started (each
    /// closure is dropped and its handle resolves to
    /// [`TaskError::Abandoned`](crate::TaskError::Abandoned)). Tasks running
    /// then are counted in `still_running`; the call does not wait for them.
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownReport {
        self.handle
            .registry
            .shutdown(ShutdownMode::Deadline(Instant::now() + timeout))
    }

    /// Abandons every queued task now and lets running tasks finish (they
    /// are counted in `still_running`; the call does not wait for them).
    pub fn shutdown_now(&self) -> ShutdownReport {
        self.handle.registry.shutdown(ShutdownMode::Now)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// A panic while a thread uses the pool cannot leave it inconsistent: task
// panics are caught inside the pool, its locks do not poison, and every
// protocol step is a single atomic transition or under a lock. So a pool
// may be used across `catch_unwind`.
impl std::panic::UnwindSafe for PoolHandle {}
impl std::panic::RefUnwindSafe for PoolHandle {}
impl std::panic::UnwindSafe for Pool {}
impl std::panic::RefUnwindSafe for Pool {}
