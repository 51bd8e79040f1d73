//! A task's result slot (a one-shot latch with a single waiter) and the
//! task body behind `spawn` that fills it.
//!
//! Protocol:
//! 1. The waiter registers itself (`Waiter`) under the slot's lock, unless
//!    the result is already there.
//! 2. The task stores its result under the same lock, sets `done` (release),
//!    takes the waiter and wakes it after unlocking.
//! 3. The waiter sleeps only on a primitive with a token (a `Parker`, a
//!    `Waker`), so a wake-up between its check of `done` and its sleep is
//!    kept, never lost.

use super::current;
use super::job::{panic_message, Outcome, Runnable};
use super::parker::{thread_parker, Waiter};
use crate::error::TaskError;
use crate::loom::sync::atomic::AtomicBool;
use crate::loom::sync::{Arc, Mutex};
use crate::metrics::LockCounted;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;

pub(crate) struct SlotInner<V> {
    pub(crate) result: Option<V>,
    pub(crate) waiter: Waiter,
    /// What few tasks need, boxed: every task has a slot, and a larger
    /// one crosses an allocator size class (a spawn with a handle cost 73
    /// instructions more when the hurry below was a field here). Dropped
    /// by hand: a look inline, the drop out of line only when there is
    /// one (the drop glue of the `Option` was a call on every task).
    extra: std::mem::ManuallyDrop<Option<Box<SlotExtra>>>,
}

impl<V> Drop for SlotInner<V> {
    #[inline]
    fn drop(&mut self) {
        if self.extra.is_some() {
            // SAFETY: `extra` is not used again: this is its owner's drop.
            drop_extra(unsafe { std::mem::ManuallyDrop::take(&mut self.extra) });
        }
    }
}

#[cold]
#[inline(never)]
fn drop_extra(extra: Option<Box<SlotExtra>>) {
    drop(extra);
}

/// The rarely needed part of a slot.
#[derive(Default)]
struct SlotExtra {
    /// The task's own cancellation token, made on first need (its
    /// context's `token()`), under the slot's lock (see `request_cancel`).
    token: Option<crate::task::CancelToken>,
    /// While the task waits for a retry: what hurries it when the handle
    /// cancels (see `await_retry`).
    hurry: Option<super::job::Hurry>,
}

pub(crate) const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
pub(crate) const CANCELLED: u8 = 2;

/// Where a task's result `V` waits for its handle.
pub(crate) struct Slot<V> {
    done: AtomicBool,
    /// Queued → running (the worker, at start) or queued → cancelled (the
    /// handle's `cancel`): whichever CAS wins decides whether it runs.
    pub(crate) start: crate::loom::sync::atomic::AtomicU8,
    /// The token that cancels the task from above (the pool's, a group's,
    /// the one given to the task builder), for tasks with a context.
    pub(crate) token: Option<crate::task::cancel::CancelToken>,
    /// Set by the handle's `cancel`: the running task's context sees it.
    /// (The task's own token is made only if asked for: most tasks never
    /// need one, and a token is an allocation.)
    cancel: AtomicBool,
    pub(crate) inner: Mutex<SlotInner<V>>,
    /// For a keyed task: its pool's identity and its shard, to
    /// detect a task waiting for a later task of its own shard.
    shard: Option<(usize, usize)>,
}

impl<V> Slot<V> {
    pub(crate) fn new() -> Self {
        Slot {
            done: AtomicBool::new(false),
            start: crate::loom::sync::atomic::AtomicU8::new(QUEUED),
            token: None,
            cancel: AtomicBool::new(false),
            inner: Mutex::new(SlotInner {
                result: None,
                waiter: Waiter::None,
                extra: std::mem::ManuallyDrop::new(None),
            }),
            shard: None,
        }
    }

    /// The slot of a task with an optional token and, for a keyed task, its
    /// pool and shard (see [`keyed`](Self::keyed)).
    pub(crate) fn with(
        token: Option<crate::task::CancelToken>,
        shard: Option<(usize, usize)>,
    ) -> Self {
        Slot {
            token,
            shard,
            ..Slot::new()
        }
    }

    /// The slot of a task with a cancellation token.
    pub(crate) fn with_token(token: crate::task::cancel::CancelToken) -> Self {
        Slot {
            token: Some(token),
            ..Slot::new()
        }
    }

    /// The slot of a keyed task of shard `shard` of pool `pool` (see
    /// `current::Worker::pool_id`).
    pub(crate) fn keyed(pool: usize, shard: usize) -> Self {
        Slot {
            shard: Some((pool, shard)),
            ..Slot::new()
        }
    }

    /// Whether waiting here would wait forever: the task is a keyed task of
    /// a shard this very thread is running (further down its stack), so the
    /// task cannot start before this wait returns.
    pub(crate) fn would_deadlock(&self) -> bool {
        match (self.shard, current::worker()) {
            (Some((pool, shard)), Some(worker)) => {
                worker.pool_id() == pool && worker.runs_shard(shard) && !self.is_done()
            }
            _ => false,
        }
    }

    /// The handle's `cancel`: marks the task cancelled for its context, and
    /// cancels its own token if it was made. The flag is set before the
    /// lock and read under it by `own_token`: whichever takes the lock
    /// second sees the other's work, so a token made at any time is
    /// cancelled.
    ///
    /// A task waiting for a retry is hurried: its retry comes due now, and
    /// its attempt, seeing the cancellation, ends it. Returns whether it
    /// was.
    pub(crate) fn request_cancel(&self) -> bool {
        self.cancel.store(true, Ordering::SeqCst);
        let (token, hurry) = {
            let mut inner = self.inner.lock();
            match inner.extra.as_mut() {
                Some(extra) => (extra.token.clone(), extra.hurry.take()),
                None => (None, None),
            }
        };
        // Cancelled with the slot's lock let go: the token's watchers take
        // the timing wheel's lock, which is taken before this one.
        if let Some(token) = token {
            token.cancel();
        }
        hurry.is_some_and(|hurry| hurry())
    }

    /// The task waits on the timing wheel for a retry: keeps `hurry` for
    /// the handle's `cancel`. `false` (not kept) if the cancellation came
    /// first. The flag is set before the lock in `request_cancel` and read
    /// under it here, so one of the two sees the other.
    pub(crate) fn await_retry(&self, hurry: super::job::Hurry) -> bool {
        let mut inner = self.inner.lock();
        if self.cancel.load(Ordering::SeqCst) {
            return false;
        }
        inner.extra.get_or_insert_with(Box::default).hurry = Some(hurry);
        true
    }

    /// The retry came due: nothing to hurry any more.
    pub(crate) fn retry_due(&self) {
        let hurry = self
            .inner
            .lock()
            .extra
            .as_mut()
            .and_then(|extra| extra.hurry.take());
        drop(hurry);
    }

    /// Whether the task, not started yet, would end unrun as cancelled:
    /// its handle's `cancel` was called, or its token from above is
    /// cancelled.
    pub(crate) fn cancelled_before_start(&self) -> bool {
        // Acquire: pairs with the handle's `cancel`, as in `try_start`.
        self.start.load(Ordering::Acquire) == CANCELLED
            || self.cancel_requested()
            || self.token.as_ref().is_some_and(|t| t.is_cancelled())
    }

    /// Whether the handle's `cancel` was called.
    #[inline]
    pub(crate) fn cancel_requested(&self) -> bool {
        // Acquire: pairs with the store in `request_cancel`.
        self.cancel.load(Ordering::Acquire)
    }

    /// The task's own token: a child of its parent token, made on first
    /// call and cancelled at once if the handle's `cancel` came first.
    pub(crate) fn own_token(&self) -> crate::task::CancelToken {
        let mut inner = self.inner.lock();
        if let Some(token) = inner.extra.as_ref().and_then(|extra| extra.token.as_ref()) {
            return token.clone();
        }
        let token = match &self.token {
            Some(parent) => parent.child(),
            None => crate::task::CancelToken::new(),
        };
        if self.cancel.load(Ordering::SeqCst) {
            token.cancel();
        }
        inner.extra.get_or_insert_with(Box::default).token = Some(token.clone());
        token
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
        let mut inner = match current::worker() {
            // The pool's own acquisition: counted in its lock statistics.
            Some(w) => self.inner.lock_counted(&w.locks().result_slot),
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
    pub(crate) fn register(&self, waiter: Waiter) -> bool {
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
            match current::worker() {
                Some(worker) => {
                    if self.register(Waiter::Parker(Arc::clone(worker.parker()))) {
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
    pub(crate) fn wait_blocking(&self) {
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

/// A slot watching its token: cancelled before its task started, it
/// resolves its handle at once, as the handle's own `cancel` does, wherever
/// the task waits (behind busy workers, in a paused pool, in the group's
/// own queue); the task ends unrun when a worker takes it.
#[cfg(not(loom))]
impl<T: Send + 'static> super::cancel::Watcher for TaskSlot<T> {
    fn cancelled(&self) {
        // AcqRel: pairs with `try_start`, as in the handle's `cancel`.
        if self
            .start
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.complete(Err(TaskError::Cancelled));
        }
    }
}

/// Makes a group task's `slot` watch its group's token (see the `Watcher`
/// impl above). A token cancelled already resolves the handle now.
///
/// Only a group's: the token keeps a weak reference to the slot, which
/// keeps the slot's allocation (not its value) until the token drops it,
/// when it next prunes its list (growing) or is dropped. A group's token
/// lives as long as the group; a token of the user's may live as long as
/// the program, and a burst of tasks under it would leave that many slots
/// allocated after they ended.
#[cfg(not(loom))]
#[inline]
pub(crate) fn watch_token<T: Send + 'static>(slot: &Arc<TaskSlot<T>>) {
    if let Some(token) = &slot.token {
        if !token.is_quiet() {
            watch_slot(slot, token);
        }
    }
}

#[cfg(not(loom))]
#[inline(never)]
fn watch_slot<T: Send + 'static>(slot: &Arc<TaskSlot<T>>, token: &crate::task::CancelToken) {
    let watcher: std::sync::Weak<dyn super::cancel::Watcher> = Arc::downgrade(slot) as _;
    if !token.watch_weak(watcher) {
        super::cancel::Watcher::cancelled(&**slot);
    }
}

/// Under loom a queued task learns of its token when a worker takes it.
#[cfg(loom)]
pub(crate) fn watch_token<T: Send + 'static>(_slot: &Arc<TaskSlot<T>>) {}

/// Hands a task's value, or its panic as `TaskError::Panicked`, to its
/// slot, and returns the outcome the worker counts (with the payload for
/// the panic handler).
pub(crate) fn deliver<T>(slot: Arc<TaskSlot<T>>, ran: std::thread::Result<T>) -> Outcome {
    let (result, payload) = match ran {
        Ok(value) => (Ok(value), None),
        Err(payload) => {
            let message = panic_message(&*payload);
            (Err(TaskError::Panicked { message }), Some(payload))
        }
    };
    slot.complete(result);
    // With the handle gone, this drops the value: its destructor must not
    // take the worker down.
    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(slot)));
    payload.map_or(Outcome::Done, Outcome::Panicked)
}

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
        deliver(slot, panic::catch_unwind(AssertUnwindSafe(f)))
    }

    fn discard(self, why: TaskError) {
        let Spawn { f, slot } = self;
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(f)));
        slot.complete(Err(why));
    }

    fn cancelled(&self) -> bool {
        self.slot.cancelled_before_start()
    }
}

impl<V: Send> crate::task::cancel::CancelSource for Slot<V> {
    fn requested(&self) -> bool {
        self.cancel_requested()
    }

    fn own_token(&self) -> crate::task::CancelToken {
        Slot::own_token(self)
    }
}
