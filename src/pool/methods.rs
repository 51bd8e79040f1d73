//! The methods `Pool` and `PoolHandle` share, written once.
//!
//! `Pool` owns the threads and `PoolHandle` only refers to them, but both
//! submit, wait and observe the same way: this macro gives each type the
//! same methods (a `Deref` from the owner to the handle would make `Pool`
//! a smart pointer, which it is not).

macro_rules! pool_methods {
    () => {
        /// Describes a task to submit: options (a key, a name, a deadline, a
        /// cancellation token, how long to wait for room) combine freely, then
        /// a terminal call submits it. See [`TaskBuilder`](crate::TaskBuilder).
        ///
        /// ```
        /// let pool = ebbtide::Pool::builder().workers(2).build()?;
        /// let total = pool.task().key(&"ledger").name("sum").spawn(|| 2 + 2)?;
        /// assert_eq!(total.join(), Ok(4));
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn task(&self) -> crate::TaskBuilder<'_> {
            crate::TaskBuilder::new(&self.registry)
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
        #[inline]
        pub fn execute<F>(&self, f: F) -> Result<(), SubmitError<F>>
        where
            F: FnOnce() + Send + 'static,
        {
            if self.registry.config.rate_limit.is_some() {
                return self.execute_routed(f);
            }
            self.registry
                .submit(Execute(f), Wait::Policy, None)
                .map(drop)
                .map_err(|e| e.map(|Execute(f)| f))
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
            if self.registry.config.rate_limit.is_some() {
                return self.spawn_routed(f);
            }
            let slot = Arc::new(Slot::new());
            let body = Spawn {
                f,
                slot: Arc::clone(&slot),
            };
            match self.registry.submit(body, Wait::Policy, None) {
                Ok(_) => Ok(JoinHandle::new(slot)),
                Err(e) => Err(e.map(|s| s.f)),
            }
        }

        /// A [`TaskGroup`](crate::TaskGroup) on this pool: fail-fast by
        /// default, with an optional concurrency limit; its token is a child of
        /// the pool's.
        pub fn group<T: Send + 'static, E: Send + 'static>(&self) -> crate::TaskGroup<T, E> {
            crate::TaskGroup::new(Arc::clone(&self.registry), self.registry.token.child())
        }

        /// A [`Keyed`](crate::Keyed) handle whose tasks own per-shard state,
        /// created lazily by `init(shard_index)`.
        pub fn keyed_state<S, I>(&self, init: I) -> crate::Keyed<S>
        where
            S: Send + 'static,
            I: Fn(usize) -> S + Send + Sync + 'static,
        {
            crate::Keyed::new(Arc::clone(&self.registry), init)
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

        /// Blocks until no task is queued or running; the pool stays usable (a
        /// barrier between batches). On a [`pause`](Self::pause)d pool with
        /// tasks queued it waits for [`resume`](Self::resume).
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
            match crate::forkjoin::install::install(&self.registry, f) {
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
            crate::forkjoin::install::install(&self.registry, f)
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
            self.install(|| {
                crate::forkjoin::scope::run_scope(crate::pool::current_worker(), false, f)
            })
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
            self.install(|| {
                crate::forkjoin::scope::run_scope(crate::pool::current_worker(), true, f)
            })
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
            PauseGuard::new(&self.registry)
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
        pub fn resize_history(&self) -> Vec<crate::metrics::ResizeEvent> {
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

        /// `execute` in a pool with a rate limit: through the tenants'
        /// queues (out of line, so that the plain path stays inlined).
        #[cold]
        #[inline(never)]
        fn execute_routed<F>(&self, f: F) -> Result<(), SubmitError<F>>
        where
            F: FnOnce() + Send + 'static,
        {
            self.task().execute(f)
        }

        /// `spawn` in a pool with a rate limit, as `execute_routed`.
        #[cold]
        #[inline(never)]
        fn spawn_routed<F, T>(&self, f: F) -> Result<JoinHandle<T>, SubmitError<F>>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            self.task().spawn(f)
        }

        /// Sets the settings of tenant `tenant` (see
        /// [`TaskBuilder::tenant`](crate::TaskBuilder::tenant)): its weight,
        /// concurrency limit, rate limit, queue and aging. A configured
        /// tenant is kept while idle. The settings hold at once for what
        /// the tenant has queued: a raised concurrency limit starts waiting
        /// tasks now, and a changed rate limit refills its bucket, so that
        /// a faster rate (or none) lets tasks through without waiting for
        /// the old rate's refill. A queued task whose
        /// [`cost`](crate::TaskBuilder::cost) is above a lowered
        /// concurrency limit still runs: alone, when nothing else of its
        /// tenant runs.
        ///
        /// ```
        /// use ebbtide::{Pool, RateLimit, TenantConfig};
        /// let pool = Pool::builder().workers(2).build()?;
        /// pool.configure_tenant(
        ///     &"scraper",
        ///     TenantConfig::new().max_concurrency(8).rate_limit(RateLimit::new(50.0, 5)?),
        /// )?;
        /// let e = pool.configure_tenant(&"x", TenantConfig::new().weight(0)).unwrap_err();
        /// assert_eq!(e.to_string(), "invalid tenant.weight = 0: expected at least 1");
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        ///
        /// # Errors
        /// A setting out of range, named: a weight or concurrency limit of
        /// 0, a queue capacity of 0, a queue policy other than `Reject`,
        /// `DropNewest` or `DropOldest`, a zero aging.
        pub fn configure_tenant<T: std::hash::Hash + std::fmt::Display + ?Sized>(
            &self,
            tenant: &T,
            config: crate::TenantConfig,
        ) -> Result<(), crate::InvalidOption> {
            crate::tenants::Tenants::configure(
                &self.registry,
                crate::tenants::TenantId::of(tenant),
                config,
            )
        }

        /// A new [`Backlog`](crate::Backlog) gauge: work waiting outside
        /// the pool that its auto-scaler should count as queued.
        pub fn backlog(&self) -> crate::Backlog {
            crate::Backlog::new(Arc::clone(&self.registry))
        }

        /// What every worker is doing now (parked, searching, running task #N
        /// for how long, its deque length): the thread dump of a stuck pool.
        /// `Display` prints it.
        pub fn dump(&self) -> crate::metrics::PoolDump {
            self.registry.dump()
        }

        /// Takes the dead letters the pool keeps (oldest first): tasks that
        /// exhausted their retry policy. See [`DeadLetter`](crate::DeadLetter).
        ///
        /// ```
        /// use ebbtide::RetryPolicy;
        /// use std::time::Duration;
        /// let pool = ebbtide::Pool::builder().workers(1).build()?;
        /// let policy = RetryPolicy::fixed(Duration::from_millis(1)).max_attempts(2);
        /// let handle = pool.task().name("charge").retry(policy)
        ///     .spawn_fallible(|_cx| Err::<(), _>("card declined"))?;
        /// assert!(handle.join()?.unwrap_err().dead_lettered());
        /// let letters = pool.take_dead_letters();
        /// assert_eq!(letters[0].name(), Some("charge"));
        /// assert_eq!(letters[0].attempts().len(), 2);
        /// assert_eq!(letters[0].attempts()[1].error, "card declined");
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn take_dead_letters(&self) -> Vec<crate::DeadLetter> {
            self.registry.take_dead_letters()
        }

        /// How many dead letters the pool keeps now.
        pub fn dead_letter_count(&self) -> usize {
            self.registry.dead_letter_count()
        }

        /// Runs a dead letter's task again on this pool, under its retry
        /// policy, with its name and (keyed) in its shard. If it fails for
        /// good again it becomes a new dead letter. The handle yields `()`
        /// or the errors as text (the value and the error's type were
        /// erased when the task became a dead letter).
        ///
        /// # Errors
        /// As [`TaskBuilder::execute`](crate::TaskBuilder::execute); the dead
        /// letter is handed back (boxed).
        pub fn replay(&self, letter: crate::DeadLetter) -> crate::Replayed {
            crate::pool::fallible::replay(self.task(), letter)
        }
    };
}

pub(crate) use pool_methods;
