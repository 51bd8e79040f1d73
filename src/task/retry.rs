//! The body of a fallible task (`spawn_fallible`, `execute_fallible`): it
//! runs attempts of an `FnMut(&TaskContext) -> Result<T, E>`, and after a
//! retryable error asks the pool to run it again later
//! ([`Outcome::Again`]): the worker is free between attempts, and the next
//! attempt waits on the pool's timing wheel. Its handle resolves once:
//! with the value, or with every attempt's error ([`Failed`]).

use super::cancel::{may_start, run_named, unrun, Deadline, TaskContext};
use super::dead::{AttemptError, DeadLetter, Failed};
use super::job::{drop_payload, panic_message, Again, Outcome, Runnable, TaskJob};
use super::slot::TaskSlot;
use crate::error::TaskError;
use crate::loom::sync::Arc;
use crate::time::backoff::splitmix;
use crate::time::clock::TimerClock;
use crate::time::RetryPolicy;
use std::fmt::Display;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

/// What a fallible task's handle yields.
pub(crate) type FallibleSlot<T, E> = TaskSlot<Result<T, Failed<E>>>;

/// A fallible task between attempts (or before its first). Small enough
/// for a queue slot when its closure is (one `Arc`, say) and it needs no
/// plan: no policy, deadline or name.
pub(crate) struct Fallible<F, P, T, E> {
    pub(crate) f: F,
    /// Whether an error may be retried (`spawn_fallible_if`).
    pub(crate) retry_if: P,
    pub(crate) slot: Arc<FallibleSlot<T, E>>,
    /// Everything else, boxed; `None`: one attempt, no deadline, no name,
    /// and a failure ends it without a dead letter.
    pub(crate) plan: Option<Box<Plan<E>>>,
}

/// What a fallible task with options carries between attempts.
pub(crate) struct Plan<E> {
    /// `None`: one attempt, and a failure ends it without a dead letter.
    pub(crate) policy: Option<RetryPolicy>,
    pub(crate) attempts: Vec<AttemptError<E>>,
    pub(crate) clock: TimerClock,
    pub(crate) deadline: Deadline,
    pub(crate) name: Option<std::sync::Arc<str>>,
    pub(crate) shard: Option<usize>,
    /// The jitter's random state.
    pub(crate) seed: u64,
    /// Renders an error for a dead letter (`None`: the task never goes to
    /// the dead letters, it has no policy).
    pub(crate) to_text: Option<fn(&E) -> String>,
}

/// Renders an error with its `Display`. A `Display` that panics renders
/// as a note saying so: the task still reaches the dead letters, and the
/// error itself stays in its handle's [`Failed`].
pub(crate) fn display<E: Display>(e: &E) -> String {
    panic::catch_unwind(AssertUnwindSafe(|| e.to_string())).unwrap_or_else(|payload| {
        let text = format!("(its Display panicked: {})", panic_message(&*payload));
        drop_payload(payload);
        text
    })
}

impl<F, P, T, E> Runnable for Fallible<F, P, T, E>
where
    F: FnMut(&TaskContext) -> Result<T, E> + Send + 'static,
    P: Fn(&E) -> bool + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    fn run(mut self) -> Outcome {
        let first = self.plan.as_ref().map_or(true, |p| p.attempts.is_empty());
        if !first {
            // Due: no longer waiting, nothing to hurry.
            self.slot.retry_due();
        }
        if first && !self.slot.try_start() {
            // `JoinHandle::cancel` came first and resolved the handle.
            self.discard_quietly();
            return Outcome::Cancelled;
        }
        let parent = self
            .slot
            .token
            .clone()
            .expect("fallible tasks have a parent token");
        let (deadline, name) = match &self.plan {
            Some(plan) => (plan.deadline, plan.name.clone()),
            None => (Deadline::None, None),
        };
        // A retry's handle may have been cancelled while it waited.
        let cancelled = self.slot.cancel_requested().then_some(TaskError::Cancelled);
        let deadline = match cancelled.map_or_else(|| may_start(&parent, deadline), Err) {
            Ok(deadline) => deadline,
            Err(why) => {
                let outcome = unrun(&why);
                self.slot.complete(Err(why));
                self.discard_quietly();
                return outcome;
            }
        };
        let slot: *const FallibleSlot<T, E> = &*self.slot;
        // SAFETY: the slot's allocation outlives `cx`: `self` holds an `Arc`
        // to it until `cx` drops at the end of this function, or moves that
        // `Arc` (into the next attempt's job, or a dead letter) without
        // dropping it before then. (Cloning the `Arc` instead would touch a
        // count its handle's owner may be touching on another core.)
        let cx = unsafe { TaskContext::new(parent, Some(&*slot), deadline, name) };
        let f = &mut self.f;
        match run_named(&cx, || f(&cx)) {
            Ok(Ok(value)) => {
                let late = deadline.is_some_and(|d| Instant::now() > d);
                self.slot.complete(Ok(Ok(value)));
                if late {
                    Outcome::Late
                } else {
                    Outcome::Done
                }
            }
            Ok(Err(error)) => self.failed(error, &cx),
            Err(payload) => {
                let message = panic_message(&*payload);
                self.slot.complete(Err(TaskError::Panicked { message }));
                Outcome::Panicked(payload)
            }
        }
    }

    fn discard(self, why: TaskError) {
        self.slot.complete(Err(why));
        self.discard_quietly();
    }

    fn cancelled(&self) -> bool {
        self.slot.cancelled_before_start()
    }
}

impl<F, P, T, E> Fallible<F, P, T, E>
where
    F: FnMut(&TaskContext) -> Result<T, E> + Send + 'static,
    P: Fn(&E) -> bool + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    /// An attempt returned `error`: retry later, dead-letter, or fail.
    fn failed(mut self, error: E, cx: &TaskContext) -> Outcome {
        let Some(mut plan) = self.plan.take() else {
            // No plan: one attempt, no policy.
            let attempts = vec![AttemptError {
                attempt: 1,
                at: Instant::now(),
                error,
            }];
            self.slot.complete(Ok(Err(Failed {
                attempts,
                dead_lettered: false,
            })));
            return Outcome::Failed;
        };
        let attempt = plan.attempts.len() as u32 + 1;
        let now = plan.clock.now();
        let retry = plan.policy.as_ref().is_some_and(|p| attempt < p.attempts())
            && !cx.is_cancelled()
            && match panic::catch_unwind(AssertUnwindSafe(|| (self.retry_if)(&error))) {
                Ok(retry) => retry,
                // The predicate is the task's own code: the task panicked.
                Err(payload) => {
                    let message = panic_message(&*payload);
                    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop((plan, error))));
                    self.discard(TaskError::Panicked { message });
                    return Outcome::Panicked(payload);
                }
            };
        plan.attempts.push(AttemptError {
            attempt,
            at: now,
            error,
        });
        if retry {
            let policy = plan.policy.as_ref().expect("retries have a policy");
            let delay = policy.delay_after(attempt, splitmix(&mut plan.seed));
            self.plan = Some(plan);
            let slot = Arc::clone(&self.slot);
            return Outcome::Again(Box::new(Again {
                at: now + delay,
                job: TaskJob::into_job_ref(self),
                retry: true,
                cell: None,
                hold: None,
                token: slot.token.clone(),
                wait: Some(Box::new(move |hurry| slot.await_retry(hurry))),
            }));
        }
        let Plan {
            policy,
            attempts,
            name,
            shard,
            to_text,
            ..
        } = *plan;
        let (Some(policy), Some(to_text)) = (policy, to_text) else {
            self.slot.complete(Ok(Err(Failed {
                attempts,
                dead_lettered: false,
            })));
            return Outcome::Failed;
        };
        let texts = attempts
            .iter()
            .map(|a| AttemptError {
                attempt: a.attempt,
                at: a.at,
                error: to_text(&a.error),
            })
            .collect();
        let mut f = self.f;
        let slot = self.slot;
        let letter = DeadLetter {
            name,
            shard,
            attempts: texts,
            policy,
            body: Box::new(move |cx: &TaskContext| f(cx).map(drop).map_err(|e| to_text(&e))),
            resolve: Some(Box::new(move || {
                slot.complete(Ok(Err(Failed {
                    attempts,
                    dead_lettered: true,
                })));
            })),
        };
        Outcome::DeadLettered(Box::new(letter))
    }
}

impl<F, P, T, E> Fallible<F, P, T, E> {
    /// Drops the closure and the errors unrun; their destructors may panic,
    /// the pool must survive it.
    fn discard_quietly(self) {
        let Fallible {
            f, retry_if, plan, ..
        } = self;
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop((f, retry_if, plan))));
    }
}
