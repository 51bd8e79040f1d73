//! The body of a periodic task: runs its closure, then asks the pool to
//! run it again at its schedule's next due time ([`Outcome::Again`]), until
//! it is cancelled (its handle, its token, shutdown) or panics.

use super::cancel::{run_named, TaskContext};
use super::job::{panic_message, Again, Hold, Outcome, Runnable, TaskJob};
use super::slot::TaskSlot;
use crate::error::TaskError;
use crate::loom::sync::Arc;
use crate::time::clock::TimerClock;
use crate::time::Schedule;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// What a periodic task's handle shares with its runs.
pub(crate) struct PeriodicShared {
    /// Resolves, with the number of runs, when the task stops; holds the
    /// task's token.
    pub(crate) slot: Arc<TaskSlot<u64>>,
    /// Runs so far (relaxed: a count read for display; the slot's value is
    /// exact).
    pub(crate) runs: AtomicU64,
    /// Due times skipped because a run overran (fixed rate; relaxed, as
    /// `runs`).
    pub(crate) skipped: AtomicU64,
    /// The wheel entry of the next run (see `Wheel::cancel`), recorded by
    /// the pool when it puts the task on the wheel.
    pub(crate) timer: std::sync::Arc<AtomicU64>,
}

impl PeriodicShared {
    pub(crate) fn new(token: super::CancelToken) -> Self {
        PeriodicShared {
            slot: Arc::new(super::Slot::with_token(token)),
            runs: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            timer: std::sync::Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// Ends the task: its handle resolves with the runs so far.
    pub(crate) fn stop(&self) {
        self.slot.complete(Ok(self.runs.load(Relaxed)));
    }
}

/// One pending run of a periodic task.
pub(crate) struct Periodic<F> {
    pub(crate) f: F,
    pub(crate) schedule: Schedule,
    /// When this run is due.
    pub(crate) due: Instant,
    pub(crate) shared: Arc<PeriodicShared>,
    pub(crate) clock: TimerClock,
    pub(crate) name: Option<std::sync::Arc<str>>,
    /// The tenant's queue each run waits in when due (a task with a
    /// tenant, priority or cost, or any task of a rate-limited pool).
    pub(crate) hold: Option<Hold>,
}

impl<F> Runnable for Periodic<F>
where
    F: FnMut(&TaskContext) + Send + 'static,
{
    fn run(mut self) -> Outcome {
        let token = self
            .shared
            .slot
            .token
            .clone()
            .expect("periodic tasks have a token");
        if token.is_cancelled() {
            self.shared.stop();
            self.drop_quietly();
            return Outcome::Cancelled;
        }
        // SAFETY: no source: the context borrows nothing.
        let cx = unsafe { TaskContext::new(token, None, None, self.name.clone()) };
        let f = &mut self.f;
        if let Err(payload) = run_named(&cx, || f(&cx)) {
            let message = panic_message(&*payload);
            self.shared
                .slot
                .complete(Err(TaskError::Panicked { message }));
            return Outcome::Panicked(payload);
        }
        self.shared.runs.fetch_add(1, Relaxed);
        if cx.is_cancelled() {
            self.shared.stop();
            self.drop_quietly();
            return Outcome::Cancelled;
        }
        let (next, skipped) = self.schedule.next_after(self.due, self.clock.now());
        self.shared.skipped.fetch_add(skipped, Relaxed);
        self.due = next;
        let cell = std::sync::Arc::clone(&self.shared.timer);
        let token = self.shared.slot.token.clone();
        let hold = self.hold.clone().map(Box::new);
        Outcome::Again(Box::new(Again {
            job: TaskJob::into_job_ref(self),
            at: next,
            retry: false,
            cell: Some(cell),
            hold,
            wait: None,
            token,
        }))
    }

    fn discard(self, _why: TaskError) {
        // Stopped before its next run (cancelled, or the pool shut down):
        // the normal end of a periodic task.
        self.shared.stop();
        self.drop_quietly();
    }

    fn cancelled(&self) -> bool {
        self.shared.slot.cancelled_before_start()
    }
}

impl<F> Periodic<F> {
    fn drop_quietly(self) {
        let f = self.f;
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(f)));
    }
}
