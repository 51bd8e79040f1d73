//! Counting what became of a task: its outcome (run), or its discard.

use super::admission::{PENDING_ONE, QUEUED_ONE};
use super::config::TaskPanic;
use super::registry::Registry;
use crate::error::TaskError;
use crate::loom::thread;
use crate::metrics::bump_at;
use crate::task::job::{drop_payload, panic_message, JobRef, Outcome};
use crate::task::DeadLetter;
use std::panic::{self, AssertUnwindSafe};

impl Registry {
    /// Counts a finished task and reports its panic; puts a task that asks
    /// to run again on the timing wheel, and a dead letter in the sink.
    /// Returns whether a keyed task (of `shard`) now holds its shard.
    #[inline(always)]
    pub(crate) fn record_outcome(
        &self,
        outcome: Outcome,
        worker: Option<usize>,
        shard: Option<usize>,
    ) -> bool {
        self.record_outcome_in(self.counters.slot(worker), outcome, worker, shard)
    }

    /// `record_outcome`, with `worker`'s counter slot at hand.
    #[inline(always)]
    pub(crate) fn record_outcome_in(
        &self,
        slot: &crate::metrics::Slot,
        outcome: Outcome,
        worker: Option<usize>,
        shard: Option<usize>,
    ) -> bool {
        if self.breaker.is_none() && matches!(outcome, Outcome::Done) {
            // The common case, inline. `Done` owns nothing: forgetting it
            // skips an out-of-line drop of the whole enum.
            std::mem::forget(outcome);
            bump_at(&slot.completed, worker);
            return false;
        }
        self.record_other_outcome(outcome, worker, shard)
    }

    /// `record_outcome` past the common case.
    #[inline(never)]
    fn record_other_outcome(
        &self,
        outcome: Outcome,
        worker: Option<usize>,
        shard: Option<usize>,
    ) -> bool {
        let slot = self.counters.slot(worker);
        if let Some(breaker) = &self.breaker {
            match &outcome {
                Outcome::Done | Outcome::Late => breaker.record(true),
                Outcome::Panicked(_)
                | Outcome::PanicForwarded
                | Outcome::TimedOut
                | Outcome::Failed
                | Outcome::DeadLettered(_) => breaker.record(false),
                Outcome::Again(again) if again.retry => breaker.record(false),
                Outcome::Cancelled | Outcome::Abandoned => breaker.no_outcome(),
                // A periodic task's run: not a trial's end (see `Breaker`).
                Outcome::Again(_) => {}
            }
        }
        match outcome {
            Outcome::Again(again) => {
                if again.retry {
                    bump_at(&slot.app_errors, worker);
                    bump_at(&slot.retries, worker);
                }
                return self.reschedule(*again, shard);
            }
            Outcome::Failed => {
                bump_at(&slot.app_errors, worker);
                bump_at(&slot.failed, worker);
            }
            Outcome::DeadLettered(letter) => {
                bump_at(&slot.app_errors, worker);
                self.dead_letter(*letter, worker);
            }
            Outcome::Done => bump_at(&slot.completed, worker),
            Outcome::Late => {
                bump_at(&slot.completed, worker);
                bump_at(&slot.deadline_missed, worker);
            }
            Outcome::TimedOut => bump_at(&slot.timed_out, worker),
            Outcome::Cancelled => bump_at(&slot.cancelled, worker),
            Outcome::Abandoned => bump_at(&slot.abandoned, worker),
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
        false
    }

    /// Hands a dead letter to the handler, then keeps it in the bounded
    /// queue (evicting the oldest when full).
    fn dead_letter(&self, mut letter: DeadLetter, worker: Option<usize>) {
        let slot = self.counters.slot(worker);
        let resolve = letter.resolve.take();
        #[cfg(feature = "tracing")]
        tracing::warn!(
            target: "ebbtide",
            pool = %self.config.name,
            name = letter.name(),
            shard = letter.shard(),
            attempts = letter.attempts().len(),
            last_error = letter.attempts().last().map(|a| a.error.as_str()),
            "dead letter"
        );
        if let Some(handler) = &self.config.on_dead_letter {
            // A panicking handler is contained too.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| handler(&letter)));
        }
        let evicted = {
            let mut queue = self.dead_letters.lock();
            queue.push_back(letter);
            (queue.len() > self.config.dead_letter_capacity).then(|| queue.pop_front())
        };
        // Counted once the letter is in the queue: a reader that sees the
        // count finds the letter (or its eviction).
        bump_at(&slot.dead_lettered, worker);
        if let Some(old) = evicted {
            bump_at(&slot.dead_letters_evicted, worker);
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(old)));
        }
        // Now the handle: whoever sees its failure finds the letter.
        if let Some(resolve) = resolve {
            let _ = panic::catch_unwind(AssertUnwindSafe(resolve));
        }
    }

    /// Runs `f` (a task's body) inside the task's `tracing` span: the pool,
    /// the worker (`None`: the submitting thread, under `CallerRuns`), the
    /// shard; a named task records its name in it. With no subscriber ever
    /// set, one relaxed load and no span; without the feature, nothing.
    #[inline(always)]
    pub(crate) fn in_task_span<R>(
        &self,
        worker: Option<usize>,
        shard: Option<usize>,
        f: impl FnOnce() -> R,
    ) -> R {
        #[cfg(feature = "tracing")]
        if tracing::dispatcher::has_been_set() {
            return self.in_span(worker, shard, f);
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (worker, shard);
        f()
    }

    #[cfg(feature = "tracing")]
    #[cold]
    #[inline(never)]
    fn in_span<R>(&self, worker: Option<usize>, shard: Option<usize>, f: impl FnOnce() -> R) -> R {
        let _span = tracing::trace_span!(
            "ebbtide.task",
            pool = %self.config.name,
            worker = worker,
            shard = shard,
            name = tracing::field::Empty,
        )
        .entered();
        f()
    }

    /// Takes every dead letter kept.
    pub(crate) fn take_dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().drain(..).collect()
    }

    /// Dead letters kept now.
    pub(crate) fn dead_letter_count(&self) -> usize {
        self.dead_letters.lock().len()
    }

    /// Discards a queued task unrun.
    pub(crate) fn discard_task(&self, job: JobRef, why: TaskError, worker: Option<usize>) {
        job.discard(why);
        bump_at(&self.counters.slot(worker).abandoned, worker);
        self.retire(QUEUED_ONE + PENDING_ONE);
        self.notify_room();
    }
}
