//! The closing sequence: close admission, drain or abandon, join threads.

use super::admission::{closed, pending, CLOSED};
use super::queue::{GlobalQueue, Steal, StealQueue};
use super::registry::Registry;
use super::timers::PendingTimers;
use crate::error::TaskError;
use crate::loom::sync::atomic::Ordering::SeqCst;
use crate::loom::thread;
use crate::metrics::LockCounted;
use crate::task::job::JobKind;
use std::time::Instant;

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

/// What shutdown did, counted since the pool was built.
///
/// Identity, exact once shutdown has returned:
/// `submitted = completed + failed + dead_lettered + panicked + abandoned + dropped + rejected + timed_out + cancelled + still_running`
/// (nothing is queued any more, and nothing waits on the timing wheel:
/// shutdown abandoned or ran every delayed task, and stopped every
/// periodic one). Submissions refused with
/// [`SubmitError::ShutDown`](crate::SubmitError::ShutDown) are not counted anywhere: the caller got the
/// closure back.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// Tasks cancelled before they started, or that returned `Cancelled`;
    /// periodic tasks that stopped (cancelled, or at shutdown).
    pub cancelled: u64,
    /// Fallible tasks without a retry policy that returned an error.
    pub failed: u64,
    /// Fallible tasks that went to the dead letters.
    pub dead_lettered: u64,
    /// Delayed tasks and waiting retries that shutdown abandoned (included
    /// in `abandoned`).
    pub timers_abandoned: u64,
    /// Delayed tasks and waiting retries that shutdown ran ahead of their
    /// time (`PendingTimers::RunNow`; they then ended as any task).
    pub timers_run_early: u64,
    /// Tasks accepted that had not ended when the report was taken: tasks
    /// still running after a deadline or `shutdown_now` (their workers exit
    /// when they finish, and dropping the `Pool` joins them), or, for a
    /// shutdown called from inside one of the pool's own tasks, tasks still
    /// queued or running (that call cannot wait for them). A task ending
    /// while the report is taken is counted here or as ended, never both.
    /// A task ends, for this count, when its worker records its end, just
    /// after its handle resolved: to see a joined task counted as ended by
    /// `shutdown_now`, call `wait_idle` first.
    pub still_running: u64,
}

impl Registry {
    /// Closes admission and drains or abandons according to `mode`; joins
    /// the worker threads once nothing is pending. Idempotent; concurrent
    /// callers all return once the pool is down.
    pub(crate) fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        // The wheel closes first (see `timers/mod.rs`): the tasks it runs now
        // take their places while admission is still open.
        let abandon_timers =
            mode == ShutdownMode::Now || self.config.pending_timers == PendingTimers::Abandon;
        self.close_timers(abandon_timers, mode != ShutdownMode::Now);
        let before = self.admission.fetch_or(CLOSED, SeqCst);
        if mode == ShutdownMode::Now {
            // Before the held tasks reach the queues: a worker that takes
            // one now discards it (it once ran one, over its tenant's
            // limit, before the abandon began).
            self.abandon.store(true, SeqCst);
        }
        // Tasks held by tenants go to the queues, past their limits: the
        // drain runs them, an abandon discards them with the rest.
        self.flush_held();
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
        let (queued, pending) = self.settled_counts();
        if pending == queued && !inside {
            self.join_threads();
        }
        let report = self.report();
        #[cfg(feature = "tracing")]
        tracing::info!(target: "ebbtide", pool = %self.config.name, ?report, "shutdown");
        report
    }

    /// The report, from one settled reading of the counters: a task that
    /// ends while it is taken is counted either as ended or as still
    /// running, never as both (see `Counters::sum_settled`).
    pub(crate) fn report(&self) -> ShutdownReport {
        let c = self.counters.sum_settled();
        let ended = c.completed
            + c.panicked
            + c.abandoned
            + c.dropped()
            + c.rejected
            + c.timed_out
            + c.cancelled
            + c.failed
            + c.dead_lettered;
        ShutdownReport {
            submitted: c.submitted,
            completed: c.completed,
            panicked: c.panicked,
            abandoned: c.abandoned,
            dropped: c.dropped(),
            rejected: c.rejected,
            timed_out: c.timed_out,
            cancelled: c.cancelled,
            failed: c.failed,
            dead_lettered: c.dead_lettered,
            timers_abandoned: c.timers_abandoned,
            timers_run_early: c.timers_run_early,
            still_running: c.submitted.saturating_sub(ended),
        }
    }

    /// Discards every queued task (their handles resolve to `Abandoned`).
    /// Workers that pop a task after the flag is set discard it too.
    pub(crate) fn abandon_queued(&self) {
        self.abandon.store(true, SeqCst);
        // Running tasks with a context see their cancellation.
        self.token.cancel();
        let me = self.own_worker_index();
        loop {
            while let Some(job) = self.injector.pop() {
                self.discard_task(job, TaskError::Abandoned, me);
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
                for job in shard.take_all(&self.counters.locks.shard) {
                    self.discard_task(job, TaskError::Abandoned, me);
                }
            }
            if self.queued_now() == 0 {
                break;
            }
            // A popped task is about to start or be discarded by its worker.
            thread::yield_now();
        }
    }

    pub(crate) fn join_threads(&self) {
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
}
