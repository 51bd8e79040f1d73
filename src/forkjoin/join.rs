//! `join`: fork-join on the pool.
//!
//! `join(a, b)` on a worker pushes `b` (a [`StackJob`] on this frame: no
//! heap allocation) on the worker's own deque, runs `a`, then pops `b` back
//! and runs it inline, unless a thief took it; then it runs or steals other
//! work until the thief sets `b`'s latch. It waits for `b` even when `a`
//! panics (`b` may borrow this frame), then resumes the first panic.

use crate::sched::worker::WorkerThread;
use crate::task::job::JobKind;
use crate::task::latch::{resume_first, Latch, StackJob, WorkerLatch};
use std::panic::{self, AssertUnwindSafe};

/// Runs `a` and `b`, potentially in parallel, and returns both results.
///
/// On a worker thread of an ebbtide pool, `b` is offered to that pool's
/// other workers while this thread runs `a`; if nobody took it, this thread
/// runs it next. Outside any pool, `a` then `b` run on the calling thread
/// (to use a particular pool from outside, call [`PoolHandle::join`]).
///
/// A panic in `a` or `b` is resumed here once both have finished (`b` still
/// runs when `a` panics); if both panic, `a`'s panic wins.
///
/// [`PoolHandle::join`]: crate::PoolHandle::join
///
/// ```
/// fn fib(n: u32) -> u64 {
///     if n < 2 {
///         return n as u64;
///     }
///     let (a, b) = ebbtide::join(|| fib(n - 1), || fib(n - 2));
///     a + b
/// }
/// let pool = ebbtide::Pool::builder().workers(2).build()?;
/// assert_eq!(pool.install(|| fib(20)), 6765);
/// # Ok::<(), ebbtide::BuildError>(())
/// ```
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    match WorkerThread::current() {
        Some(worker) => join_on(worker, a, b),
        None => (a(), b()),
    }
}

/// `join` on `worker`, the current thread's worker. `a` always runs on
/// this thread, so neither it nor its value need be `Send`.
pub(crate) fn join_on<A, B, RA, RB>(worker: &WorkerThread, a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA,
    B: FnOnce() -> RB + Send,
    RB: Send,
{
    let job_b = StackJob::new(b, WorkerLatch::new(worker.parker()));
    // SAFETY: `job_b` stays on this frame until its latch is set or it is
    // popped back: the loop below ensures one of the two before returning,
    // and `a`'s panic is caught so unwinding cannot skip the loop.
    let entry = unsafe { job_b.as_job_ref(JobKind::Internal) };
    let b_ptr = job_b.as_ptr();
    worker.push_local(entry);
    worker.registry().sleep.tickle();

    let result_a = panic::catch_unwind(AssertUnwindSafe(a));

    let result_b = loop {
        if job_b.latch.probe() {
            // SAFETY: stolen and finished; the result is read once.
            break unsafe { job_b.take_result() };
        }
        match worker.pop_local() {
            // SAFETY: popped back unrun, so it runs here, once.
            Some(job) if job.stack_ptr() == Some(b_ptr) => break unsafe { job_b.run_here() },
            // Work `a` left on the deque above `b` (tasks it submitted).
            Some(job) => worker.execute(job),
            None => {
                // Stolen: help until the thief is done with it.
                worker.wait_until(&|| job_b.latch.probe());
                // SAFETY: as above.
                break unsafe { job_b.take_result() };
            }
        }
    };
    resume_first(result_a, result_b)
}
