//! The task builder's terminal calls for tasks that can fail (retried with
//! backoff, then dead-lettered) and for tasks that repeat, and the handle
//! of a periodic task.

use super::task::TaskBuilder;
use crate::error::{InvalidOption, SubmitError, TaskError};
use crate::loom::sync::Arc;
use crate::sched::Registry;
use crate::task::cancel::Deadline;
use crate::task::periodic::{Periodic, PeriodicShared};
use crate::task::retry::{Fallible, Plan};
use crate::task::{DeadLetter, Failed, JoinHandle, TaskContext};
use crate::time::Schedule;
use std::fmt::{self, Display};
use std::sync::atomic::Ordering::Relaxed;

impl TaskBuilder<'_> {
    /// Submits a task that may fail: an `FnMut` returning `Result<T, E>`.
    /// Without [`retry`](Self::retry) an `Err` ends it at once; with a
    /// policy, each `Err` is retried after the policy's delay (the worker
    /// is free meanwhile) until an attempt succeeds or the last one fails,
    /// which sends the task to the pool's dead letters. Every error is
    /// counted (`app_errors`) and seen by the circuit breaker. The handle
    /// resolves once: `Ok(Ok(value))`, or `Ok(Err(failed))` with every
    /// attempt's error; `Err(TaskError)` if it panicked, was cancelled,
    /// timed out or was abandoned. A dead letter keeps each error as its
    /// `Display` text (a `Display` that panics leaves a note saying so).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ebbtide::RetryPolicy;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let mut calls = 0;
    /// let handle = pool
    ///     .task()
    ///     .retry(RetryPolicy::fixed(Duration::from_millis(1)).max_attempts(3))
    ///     .spawn_fallible(move |_cx| {
    ///         calls += 1;
    ///         if calls < 3 { Err(format!("flaky {calls}")) } else { Ok(calls) }
    ///     })?;
    /// assert_eq!(handle.join(), Ok(Ok(3)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`execute`](Self::execute), and [`SubmitError::Invalid`] when the
    /// retry policy or the delay is out of range.
    pub fn spawn_fallible<F, T, E>(
        self,
        f: F,
    ) -> Result<JoinHandle<Result<T, Failed<E>>>, SubmitError<F>>
    where
        F: FnMut(&TaskContext) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Display + Send + 'static,
    {
        self.spawn_fallible_if(f, |_: &E| true)
    }

    /// As [`spawn_fallible`](Self::spawn_fallible), retrying only errors
    /// for which `retry_if` returns `true`; any other error is permanent:
    /// the task goes to the dead letters at once (with a retry policy) or
    /// fails (without one). A panic in `retry_if` is the task's: its handle
    /// yields `Err(TaskError::Panicked)`, the panic handler sees it, and
    /// the task neither retries nor goes to the dead letters.
    ///
    /// # Errors
    /// As [`spawn_fallible`](Self::spawn_fallible).
    pub fn spawn_fallible_if<F, P, T, E>(
        mut self,
        f: F,
        retry_if: P,
    ) -> Result<JoinHandle<Result<T, Failed<E>>>, SubmitError<F>>
    where
        F: FnMut(&TaskContext) -> Result<T, E> + Send + 'static,
        P: Fn(&E) -> bool + Send + 'static,
        T: Send + 'static,
        E: Display + Send + 'static,
    {
        if let Some(why) = self.invalid(true) {
            return Err(SubmitError::Invalid(f, why));
        }
        let wait = self.wait();
        let mut options = self.take_options();
        let slot = self.slot(Some(self.token(&options)));
        let deadline = options.resolve();
        let plain = options.retry.is_none() && options.name.is_none();
        let plan = (!plain || !matches!(deadline, Deadline::None)).then(|| {
            Box::new(Plan {
                policy: options.retry.take(),
                attempts: Vec::new(),
                clock: self.registry.timers.clock.clone(),
                deadline,
                name: options.name.take(),
                shard: self.shard,
                seed: crate::metrics::clock::ticks() ^ (Arc::as_ptr(&slot) as u64),
                to_text: Some(crate::task::retry::display::<E>),
            })
        });
        let body = Fallible {
            f,
            retry_if,
            slot: Arc::clone(&slot),
            plan,
        };
        match self.submit(body, wait) {
            Ok(()) => Ok(JoinHandle::new(slot)),
            Err(e) => Err(e.map(|b| b.f)),
        }
    }

    /// [`spawn_fallible`](Self::spawn_fallible), fire and forget: a task
    /// that fails for good is seen in the counters and, with a retry
    /// policy, in the dead letters.
    ///
    /// # Errors
    /// As [`spawn_fallible`](Self::spawn_fallible).
    pub fn execute_fallible<F, T, E>(self, f: F) -> Result<(), SubmitError<F>>
    where
        F: FnMut(&TaskContext) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Display + Send + 'static,
    {
        self.spawn_fallible(f).map(drop)
    }

    /// Runs `f` repeatedly on `schedule`, first at once (or when
    /// [`delay`](Self::delay)/[`at`](Self::at) say), until its handle or
    /// token cancels it, it panics, or the pool shuts down. Between runs
    /// it waits on the timing wheel. At a fixed rate, due times missed
    /// while a run overran are skipped (counted in
    /// [`PeriodicHandle::skipped`]), never run in a bunch; at a fixed delay
    /// each run is due `period` after the previous one finished. Keyed, its
    /// runs queue behind its shard's tasks like any keyed task. With a
    /// [`tenant`](Self::tenant), [`priority`](Self::priority) or
    /// [`cost`](Self::cost), or on a pool with a
    /// [`rate_limit`](crate::Builder::rate_limit), each run, when due, waits
    /// in its tenant's queue for its turn and a rate token: a schedule
    /// faster than the rate runs at the rate (at a fixed rate, the due
    /// times missed meanwhile are skipped), and then always has a run
    /// waiting, so [`wait_idle`](crate::Pool::wait_idle) waits until it
    /// is cancelled.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use ebbtide::Schedule;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let ticks = Arc::new(AtomicU32::new(0));
    /// let seen = Arc::clone(&ticks);
    /// let handle = pool.task().name("tick").periodic(
    ///     Schedule::FixedRate(Duration::from_millis(1)),
    ///     move |cx| {
    ///         if seen.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
    ///             cx.token().cancel(); // a run may stop its own task
    ///         }
    ///     },
    /// )?;
    /// assert_eq!(handle.join(), Ok(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`execute`](Self::execute); [`SubmitError::Invalid`] for a zero
    /// period, one beyond [`MAX_DELAY`](crate::MAX_DELAY), a cost its
    /// tenant refuses, or options a periodic task cannot take (`retry`,
    /// `timeout`, `deadline`).
    pub fn periodic<F>(mut self, schedule: Schedule, f: F) -> Result<PeriodicHandle, SubmitError<F>>
    where
        F: FnMut(&TaskContext) + Send + 'static,
    {
        if let Some(why) = self
            .invalid(false)
            .or_else(|| self.periodic_invalid(&schedule))
        {
            return Err(SubmitError::Invalid(f, why));
        }
        let options = self.take_options();
        // Its own token, shared by its runs: the handle's `cancel` cancels it.
        let shared = Arc::new(PeriodicShared::new(self.token(&options).child()));
        let clock = self.registry.timers.clock.clone();
        let first = options.at.unwrap_or_else(|| clock.now());
        // Each run waits in its tenant's queue when due, if it has one.
        let hold = self.hold();
        let body = Periodic {
            f,
            schedule,
            due: first,
            shared: Arc::clone(&shared),
            clock,
            name: options.name.clone(),
            hold: hold.clone(),
        };
        let cell = std::sync::Arc::clone(&shared.timer);
        match self.registry.schedule_new(
            body,
            first,
            self.shard,
            Some(cell),
            hold.map(Box::new),
            shared.slot.token.as_ref(),
        ) {
            Ok(()) => Ok(PeriodicHandle {
                registry: Arc::clone(self.registry),
                handle: JoinHandle::new(Arc::clone(&shared.slot)),
                shared,
            }),
            Err(e) => Err(e.map(|b| b.f)),
        }
    }

    fn periodic_invalid(&self, schedule: &Schedule) -> Option<InvalidOption> {
        schedule.validate().err().or_else(|| {
            let options = self.options_ref()?;
            (options.timeout.is_some() || options.deadline.is_some()).then(|| {
                InvalidOption::new(
                    "timeout",
                    "a deadline on a periodic task",
                    "no deadline (each run sees its token; cancel the task instead)",
                )
            })
        })
    }
}

/// What `PoolHandle::replay` returns: the replayed task's handle (its value
/// `()`, its errors as text), or the dead letter handed back.
pub type Replayed = Result<JoinHandle<Result<(), Failed<String>>>, SubmitError<Box<DeadLetter>>>;

/// Submits a dead letter's task again (see `PoolHandle::replay`).
pub(crate) fn replay(builder: TaskBuilder<'_>, letter: DeadLetter) -> Replayed {
    let DeadLetter {
        name,
        shard,
        attempts,
        policy,
        body,
        ..
    } = letter;
    let mut builder = builder.retry(policy.clone());
    if let Some(name) = &name {
        builder = builder.name(std::sync::Arc::clone(name));
    }
    if let Some(shard) = shard {
        builder = builder.shard_index(shard);
    }
    builder.spawn_fallible(body).map_err(|e| {
        e.map(|body| {
            Box::new(DeadLetter {
                name,
                shard,
                attempts,
                policy,
                body,
                resolve: None,
            })
        })
    })
}

/// The handle of a periodic task (from [`TaskBuilder::periodic`]).
/// Dropping it leaves the task running; [`cancel`](Self::cancel) stops it.
pub struct PeriodicHandle {
    registry: Arc<Registry>,
    shared: Arc<PeriodicShared>,
    handle: JoinHandle<u64>,
}

impl fmt::Debug for PeriodicHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeriodicHandle")
            .field("runs", &self.runs())
            .field("skipped", &self.skipped())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl PeriodicHandle {
    /// Stops the task: a run that has not started never starts (its entry
    /// leaves the timing wheel at once), a running one sees
    /// `cx.is_cancelled()` and is the last.
    pub fn cancel(&self) {
        if let Some(token) = &self.shared.slot.token {
            token.cancel();
        }
        self.registry.cancel_timer(&self.shared.timer);
    }

    /// Runs finished so far.
    pub fn runs(&self) -> u64 {
        self.shared.runs.load(Relaxed)
    }

    /// Due times skipped because a run overran (fixed rate only).
    pub fn skipped(&self) -> u64 {
        self.shared.skipped.load(Relaxed)
    }

    /// Whether the task has stopped.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the task to stop; returns how many runs it made.
    ///
    /// # Errors
    /// [`TaskError::Panicked`] if a run panicked (the task stops there).
    pub fn join(self) -> Result<u64, TaskError> {
        self.handle.join()
    }
}
