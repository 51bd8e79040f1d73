//! `JoinHandle<T>`: the result of a spawned task, awaited by blocking
//! (`join`, helping the pool when called on a worker), with a timeout, or as
//! a `Future`.
//!
//! Protocol (a one-shot latch with a single waiter):
//! 1. The waiter registers itself (`Waiter`) under the slot's lock, unless
//!    the result is already there.
//! 2. The task stores its result under the same lock, sets `done` (release),
//!    takes the waiter and wakes it after unlocking.
//! 3. The waiter sleeps only on a primitive with a token (`Thread::park`, a
//!    worker's `Parker`, a `Waker`), so a wake-up between its check of
//!    `done` and its sleep is kept, never lost.

use crate::error::TaskError;
use crate::job::{panic_message, Outcome, Runnable};
use crate::loom::sync::atomic::AtomicBool;
use crate::loom::sync::{Arc, Mutex};
use crate::loom::thread_local;
use crate::registry::Registry;
use crate::sleep::Parker;
use crate::worker::WorkerThread;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Who to wake when a result arrives.
#[derive(Clone)]
pub(crate) enum Waiter {
    /// Nobody waits.
    None,
    /// A thread sleeping on its `Parker`: a worker (possibly parked while it
    /// helps its pool) or an outside thread (see [`thread_parker`]).
    Parker(Arc<Parker>),
    /// An async task.
    Waker(Waker),
}

impl Waiter {
    pub(crate) fn wake(self) {
        match self {
            Waiter::None => {}
            Waiter::Parker(p) => p.unpark(),
            Waiter::Waker(w) => w.wake(),
        }
    }

    /// Wakes the waiter, keeping it registered.
    pub(crate) fn wake_ref(&self) {
        match self {
            Waiter::None => {}
            Waiter::Parker(p) => p.unpark(),
            Waiter::Waker(w) => w.wake_by_ref(),
        }
    }

    /// The calling thread as a waiter: its worker's parker, or its own.
    pub(crate) fn current() -> Waiter {
        match WorkerThread::current() {
            Some(worker) => Waiter::Parker(worker.parker().clone()),
            None => Waiter::Parker(thread_parker()),
        }
    }
}

thread_local! {
    static THREAD_PARKER: Arc<Parker> = Arc::new(Parker::default());
}

/// The calling thread's own parker, for waits outside any pool. Every wait
/// in the crate sleeps on a `Parker` (never `thread::park`), so a wake-up
/// meant for one wait can only make another wait re-check its condition.
pub(crate) fn thread_parker() -> Arc<Parker> {
    THREAD_PARKER.with(Arc::clone)
}

impl Waiter {}

struct SlotInner<V> {
    result: Option<V>,
    waiter: Waiter,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;

/// Where a task's result `V` waits for its handle.
pub(crate) struct Slot<V> {
    done: AtomicBool,
    /// Queued → running (the worker, at start) or queued → cancelled (the
    /// handle's `cancel`): whichever CAS wins decides whether it runs.
    start: crate::loom::sync::atomic::AtomicU8,
    /// The task's cancellation token (tasks started with a context).
    pub(crate) token: Option<crate::cancel::CancelToken>,
    inner: Mutex<SlotInner<V>>,
    /// For a keyed task: its pool's registry address and its shard, to
    /// detect a task waiting for a later task of its own shard.
    shard: Option<(usize, usize)>,
}

impl<V> Slot<V> {
    pub(crate) fn new() -> Self {
        Slot {
            done: AtomicBool::new(false),
            start: crate::loom::sync::atomic::AtomicU8::new(QUEUED),
            token: None,
            inner: Mutex::new(SlotInner {
                result: None,
                waiter: Waiter::None,
            }),
            shard: None,
        }
    }

    /// The slot of a task with a cancellation token.
    pub(crate) fn with_token(token: crate::cancel::CancelToken) -> Self {
        Slot {
            token: Some(token),
            ..Slot::new()
        }
    }

    /// The slot of a keyed task of shard `shard` of the pool whose registry
    /// lives at `registry`.
    pub(crate) fn keyed(registry: usize, shard: usize) -> Self {
        Slot {
            shard: Some((registry, shard)),
            ..Slot::new()
        }
    }

    /// Whether waiting here would wait forever: the task is a keyed task of
    /// a shard this very thread is running (further down its stack), so the
    /// task cannot start before this wait returns.
    fn would_deadlock(&self) -> bool {
        match (self.shard, WorkerThread::current()) {
            (Some((registry, shard)), Some(worker)) => {
                std::ptr::eq(worker.registry(), registry as *const Registry)
                    && worker.runs_shard(shard)
                    && !self.is_done()
            }
            _ => false,
        }
    }

    /// Claims the task's start; `false` if `cancel` came first (then the
    /// task must not run: its handle already says `Cancelled`).
    #[inline]
    pub(crate) fn try_start(&self) -> bool {
        // AcqRel: pairs with `cancel`'s CAS; either one wins.
        self.start
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Step 2: stores the result and wakes the waiter. The first result
    /// wins (a task cancelled before it started keeps `Cancelled` when it
    /// is later discarded).
    pub(crate) fn complete(&self, result: V) {
        let mut inner = match WorkerThread::current() {
            // The pool's own acquisition: counted in its lock statistics.
            Some(w) => self
                .inner
                .lock_counted(&w.registry().counters.locks.result_slot),
            None => self.inner.lock(),
        };
        if self.done.load(crate::loom::sync::atomic::Ordering::Relaxed) {
            return;
        }
        inner.result = Some(result);
        // Release: a waiter that sees `done` (acquire) sees the result; it
        // reads the result under the lock anyway.
        self.done
            .store(true, crate::loom::sync::atomic::Ordering::Release);
        let waiter = std::mem::replace(&mut inner.waiter, Waiter::None);
        drop(inner);
        waiter.wake();
    }

    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        // Acquire pairs with the release in `complete`.
        self.done.load(crate::loom::sync::atomic::Ordering::Acquire)
    }

    /// Step 1: registers `waiter` unless the result is there; returns
    /// whether it registered.
    fn register(&self, waiter: Waiter) -> bool {
        let mut inner = self.inner.lock();
        if inner.result.is_some() {
            return false;
        }
        inner.waiter = waiter;
        true
    }

    pub(crate) fn take(&self) -> Option<V> {
        self.inner.lock().result.take()
    }

    /// Waits for the result and takes it. On a worker thread it helps with
    /// the worker's pool meanwhile.
    pub(crate) fn wait(&self) -> V {
        if !self.is_done() {
            match WorkerThread::current() {
                Some(worker) => {
                    if self.register(Waiter::Parker(worker.parker().clone())) {
                        worker.wait_until(&|| self.is_done());
                    }
                }
                None => self.wait_blocking(),
            }
        }
        self.take()
            .expect("a finished slot holds its result until taken")
    }

    /// Blocks the calling thread until the result is there, without
    /// running anything else.
    fn wait_blocking(&self) {
        let parker = thread_parker();
        if self.register(Waiter::Parker(Arc::clone(&parker))) {
            while !self.is_done() {
                parker.park();
            }
        }
    }
}

/// The slot of a spawned task.
pub(crate) type TaskSlot<T> = Slot<Result<T, TaskError>>;

/// The task body behind `spawn`: runs the closure and fills the slot.
pub(crate) struct Spawn<F, T> {
    pub(crate) f: F,
    pub(crate) slot: Arc<TaskSlot<T>>,
}

impl<F, T> Runnable for Spawn<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn run(self) -> Outcome {
        let Spawn { f, slot } = self;
        if !slot.try_start() {
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(f)));
            return Outcome::Cancelled;
        }
        let outcome = panic::catch_unwind(AssertUnwindSafe(f));
        let (result, payload) = match outcome {
            Ok(value) => (Ok(value), None),
            Err(payload) => {
                let message = panic_message(&*payload);
                (Err(TaskError::Panicked { message }), Some(payload))
            }
        };
        slot.complete(result);
        // With the handle gone, this drops the value: its destructor must
        // not take the worker down.
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(slot)));
        payload.map_or(Outcome::Done, Outcome::Panicked)
    }

    fn discard(self, why: TaskError) {
        let Spawn { f, slot } = self;
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(f)));
        slot.complete(Err(why));
    }
}

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
    /// Running (or done): a task started with a context
    /// ([`spawn_with`](crate::PoolHandle::spawn_with)) sees
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
        if let Some(token) = &self.slot.token {
            token.cancel();
        }
        prevented
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
            let _blocked = WorkerThread::current().map(|w| w.registry().block_guard());
            self.slot.wait_blocking();
        }
        self.slot
            .take()
            .expect("a finished slot holds its result until taken")
    }

    /// Waits at most `timeout` for the task. Returns `Ok(result)` when it
    /// finished, or `Err(self)` to wait again later. It blocks the calling
    /// thread without helping (also on a worker), so it returns on time.
    ///
    /// # Errors
    /// `Err(self)` when the timeout passed first.
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T, TaskError>, Self> {
        let deadline = Instant::now() + timeout;
        let parker = thread_parker();
        if !self.slot.is_done() && self.slot.register(Waiter::Parker(Arc::clone(&parker))) {
            while !self.slot.is_done() {
                if Instant::now() >= deadline {
                    let mut inner = self.slot.inner.lock();
                    if inner.result.is_none() {
                        inner.waiter = Waiter::None;
                        drop(inner);
                        return Err(self);
                    }
                    break;
                }
                parker.park_until(deadline);
            }
        }
        Ok(self
            .slot
            .take()
            .expect("a finished slot holds its result until taken"))
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.slot.inner.lock();
        if let Some(result) = inner.result.take() {
            return Poll::Ready(result);
        }
        inner.waiter = Waiter::Waker(cx.waker().clone());
        Poll::Pending
    }
}
