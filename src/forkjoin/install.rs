//! `install`: run a closure on one of a pool's workers and return its
//! value (the closure may borrow from the caller).

use crate::error::SubmitError;
use crate::sched::{Registry, WorkerThread};
use crate::task::job::JobKind;
use crate::task::latch::{resume, Latch, OwnedLatch, StackJob};
use crate::task::Waiter;

/// Runs `f` on one of `registry`'s workers and returns its value.
pub(crate) fn install<F, R>(registry: &Registry, f: F) -> Result<R, SubmitError<F>>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    if registry.own_worker().is_some() {
        return Ok(f());
    }
    if !registry.admit_install() {
        return Err(SubmitError::ShutDown(f));
    }
    let current = WorkerThread::current();
    let parker = match Waiter::current() {
        Waiter::Parker(p) => p,
        _ => unreachable!("the current thread waits on a parker"),
    };
    let job = StackJob::new(f, OwnedLatch::new(Waiter::Parker(parker.clone())));
    // SAFETY: `job` stays on this frame until its latch is set: install
    // jobs are never discarded, and this thread waits for the latch
    // below (helping its own pool if it is a worker of another one).
    let entry = unsafe { job.as_job_ref(JobKind::Install) };
    registry.push_side(entry);
    match current {
        Some(other) => other.wait_until(&|| job.latch.probe()),
        None => {
            while !job.latch.probe() {
                parker.park();
            }
        }
    }
    // SAFETY: the latch is set; the result is read once.
    match unsafe { job.take_result() } {
        Ok(value) => Ok(value),
        Err(payload) => resume(payload),
    }
}
