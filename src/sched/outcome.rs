//! Counting what became of a task: its outcome (run), or its discard.

use super::admission::{PENDING_ONE, QUEUED_ONE};
use super::config::TaskPanic;
use super::registry::Registry;
use crate::error::TaskError;
use crate::loom::thread;
use crate::metrics::bump_at;
use crate::task::job::{drop_payload, panic_message, JobRef, Outcome};
use std::panic::{self, AssertUnwindSafe};

impl Registry {
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
    pub(crate) fn discard_task(&self, job: JobRef, why: TaskError, worker: Option<usize>) {
        job.discard(why);
        bump_at(&self.counters.slot(worker).abandoned, worker);
        self.retire(QUEUED_ONE + PENDING_ONE);
        self.notify_room();
    }
}
