//! `JoinHandle<T>`: the result of a spawned task, awaited by blocking
//! (`join`, helping the pool when called on a worker), with a timeout, or as
//! a `Future`. The slot it reads is in `slot.rs`.

use super::current;
use super::parker::{thread_parker, Waiter};
use super::slot::{TaskSlot, CANCELLED, QUEUED};
use crate::error::TaskError;
use crate::loom::sync::Arc;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The handle of a task started with [`spawn`](crate::PoolHandle::spawn).
///
/// * [`join`](JoinHandle::join) blocks for the result; on a worker thread of
///   any ebbtide pool it runs other work of that pool while it waits, so it
///   never deadlocks, even in a one-worker pool.
/// * [`join_timeout`](JoinHandle::join_timeout) waits at most a duration.
/// * `.await` it: `JoinHandle<T>` is a `Future<Output = Result<T, TaskError>>`,
///   so async code can wait for compute work without blocking its runtime.
/// * Dropping the handle detaches the task: it still runs, its value is
///   dropped.
///
/// ```
/// let pool = ebbtide::Pool::builder().workers(2).build()?;
/// let handle = pool.spawn(|| 6 * 7)?;
/// assert_eq!(handle.join(), Ok(42));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a JoinHandle detaches the task; call join() to get its result"]
pub struct JoinHandle<T> {
    slot: Arc<TaskSlot<T>>,
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(slot: Arc<TaskSlot<T>>) -> Self {
        JoinHandle { slot }
    }

    /// Whether the task has finished (or will never run). A `true` means
    /// `join` returns at once.
    pub fn is_finished(&self) -> bool {
        self.slot.is_done()
    }

    /// Cancels the task. Not started yet: it will never run, and the
    /// handle resolves to [`TaskError::Cancelled`] at once (returns `true`).
    /// Waiting for a retry (a fallible task between attempts): the retry
    /// comes due now and ends the task as `Cancelled` without running, so
    /// a keyed task's later tasks go on (returns `true`).
    /// Running (or done): a task started with a context
    /// ([`spawn_with`](crate::TaskBuilder::spawn_with)) sees
    /// `is_cancelled()` turn true; any other task runs to its end (returns
    /// `false`).
    pub fn cancel(&self) -> bool {
        // AcqRel: pairs with `try_start`.
        let prevented = self
            .slot
            .start
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if prevented {
            self.slot.complete(Err(TaskError::Cancelled));
        }
        // A task with a context sees it (a plain one cannot); one waiting
        // for a retry is hurried to its end.
        let hurried = self.slot.token.is_some() && self.slot.request_cancel();
        prevented || hurried
    }

    /// Waits for the task and returns its value.
    ///
    /// Called on a worker thread, it helps: the worker runs other queued
    /// work of its pool until the result is there. Helping means an
    /// unrelated task may run on this thread meanwhile; do not hold a lock
    /// that such a task could take.
    ///
    /// # Errors
    /// [`TaskError::Panicked`] if the task panicked, [`TaskError::Abandoned`]
    /// if shutdown abandoned it, [`TaskError::Dropped`] if backpressure
    /// dropped it, [`TaskError::WouldDeadlock`] (at once, without waiting)
    /// if a keyed task waits for a later task of its own shard, which could
    /// only start after the waiting task returned. The task still runs then;
    /// its value is dropped.
    pub fn join(self) -> Result<T, TaskError> {
        if self.slot.would_deadlock() {
            return Err(TaskError::WouldDeadlock);
        }
        self.slot.wait()
    }

    /// Waits for the task *without* running other work meanwhile: the
    /// thread blocks. Use it where helping is unsafe, e.g. while holding a
    /// lock that a helped task might take (with helping, an unrelated task
    /// can run on this thread inside the wait and deadlock on that lock).
    /// On a worker thread the worker is counted as blocked
    /// (`Metrics::blocked_workers`) while it waits. Beware that in a pool
    /// whose every worker blocks this way on queued tasks, nothing runs
    /// them: prefer [`join`](Self::join) unless a lock forbids it.
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub fn join_blocking(self) -> Result<T, TaskError> {
        if self.slot.would_deadlock() {
            return Err(TaskError::WouldDeadlock);
        }
        if !self.slot.is_done() {
            match current::worker() {
                Some(worker) => worker.blocked(&mut || self.slot.wait_blocking()),
                None => self.slot.wait_blocking(),
            }
        }
        self.slot
            .take()
            .expect("a finished slot holds its result until taken")
    }

    /// Waits at most `timeout` for the task. Returns `Ok(result)` when it
    /// finished, or `Err(self)` to wait again later. It blocks the calling
    /// thread without helping (also on a worker), so it returns on time. A
    /// `timeout` too far off for the clock (`Duration::MAX`) waits as long
    /// as it takes.
    ///
    /// # Errors
    /// `Err(self)` when the timeout passed first.
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T, TaskError>, Self> {
        // A timeout past what an `Instant` holds waits as long as it takes.
        let deadline = Instant::now().checked_add(timeout);
        let parker = thread_parker();
        if !self.slot.is_done() && self.slot.register(Waiter::Parker(Arc::clone(&parker))) {
            while !self.slot.is_done() {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let mut inner = self.slot.inner.lock();
                    if inner.result.is_none() {
                        inner.waiter = Waiter::None;
                        drop(inner);
                        return Err(self);
                    }
                    break;
                }
                match deadline {
                    Some(d) => parker.park_until(d),
                    None => parker.park(),
                }
            }
        }
        Ok(self
            .slot
            .take()
            .expect("a finished slot holds its result until taken"))
    }
}

/// # Panics
/// Polled again after it returned `Ready` (its result is gone): a panic
/// that says so, where the poll would otherwise stay pending for good.
impl<T> Future for JoinHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.slot.inner.lock();
        if let Some(result) = inner.result.take() {
            return Poll::Ready(result);
        }
        // The result is stored before `done` is set, both under this lock:
        // done with no result means a poll already took it.
        assert!(
            !self.slot.is_done(),
            "a JoinHandle was polled after it completed"
        );
        inner.waiter = Waiter::Waker(cx.waker().clone());
        Poll::Pending
    }
}
