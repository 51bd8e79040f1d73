//! `scope`: tasks that may borrow from the caller's stack, shaped like
//! `std::thread::scope`.
//!
//! Protocol: the scope counts its unfinished tasks (`pending`). Spawning
//! adds one before the task is queued; a task, when done, records its
//! panic if nobody will see it, reads the owner's parker, then subtracts
//! one and, if that was the last, unparks the owner. The owner (the worker
//! running the scope body) waits for `pending == 0`, helping meanwhile, and
//! only then returns, so every borrow outlives every task.

use crate::error::TaskError;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Arc;
use crate::sched::worker::WorkerThread;
use crate::sched::Registry;
use crate::task::job::{drop_payload, panic_message, ClosureJob, JobRef, PanicPayload};
use crate::task::latch::{resume, SendPtr};
use crate::task::Parker;
use crate::task::Slot;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};

/// What a scope's tasks share.
struct ScopeBase {
    /// The pool the scope runs on; alive for the whole scope (the scope
    /// body runs inside an `install` on it).
    registry: *const Registry,
    /// The parker of the worker that runs the scope body; lives in the
    /// registry, so it outlives the scope.
    owner: *const Parker,
    pending: AtomicUsize,
    panic: parking_lot::Mutex<Option<PanicPayload>>,
    fifo: bool,
}

impl ScopeBase {
    fn record_panic(&self, payload: PanicPayload) {
        let mut first = self.panic.lock();
        if first.is_none() {
            *first = Some(payload);
        } else {
            drop(first);
            drop_payload(payload);
        }
    }

    /// Queues a task of this scope.
    fn push(&self, job: JobRef) {
        // Relaxed: the increment is sequenced before the push, which the
        // task's pop synchronizes with, so it precedes the task's decrement
        // in the counter's modification order; the owner cannot see zero
        // while this task is outstanding.
        self.pending.fetch_add(1, Ordering::Relaxed);
        // SAFETY: see `registry`.
        let registry = unsafe { &*self.registry };
        match registry.own_worker() {
            Some(worker) if !self.fifo => {
                worker.push_local(job);
                // The scope's owner runs its tasks itself if nobody else
                // does, so a hint suffices.
                registry.sleep.tickle();
            }
            // FIFO scopes, and spawns from threads outside the pool, use the
            // pool's FIFO side queue.
            _ => registry.push_side(job),
        }
    }

    /// A task is done (its last touch of the scope).
    ///
    /// # Safety
    /// `this` is valid on entry; the owner may free it once the count is
    /// zero, so it is not used after the decrement.
    unsafe fn complete_one(this: *const ScopeBase) {
        // SAFETY: valid on entry; read before the decrement.
        let owner = unsafe { (*this).owner };
        // AcqRel: release publishes the task's effects to the owner's
        // acquire load of zero.
        // SAFETY: valid until the decrement takes effect.
        if unsafe { (*this).pending.fetch_sub(1, Ordering::AcqRel) } == 1 {
            // SAFETY: the parker lives in the registry (see `owner`).
            unsafe { (*owner).unpark() };
        }
    }
}

/// A scope for spawning tasks that borrow from outside it; see
/// [`PoolHandle::scope`](crate::PoolHandle::scope).
pub struct Scope<'scope, 'env: 'scope> {
    base: ScopeBase,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

// SAFETY: the raw pointers in `ScopeBase` point into the pool's registry,
// which outlives the scope and is `Sync`; every other field is `Sync`.
// Sharing `&Scope` with the pool's workers is the point of a scope.
unsafe impl Sync for Scope<'_, '_> {}
// SAFETY: as for `Sync`.
unsafe impl Send for Scope<'_, '_> {}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            // Relaxed: a figure for display.
            .field("pending", &self.base.pending.load(Ordering::Relaxed))
            .field("fifo", &self.base.fifo)
            .finish()
    }
}

/// The result slot of a scoped task, recording an unobserved panic in the
/// scope when the last reference to it goes.
struct Packet<T> {
    slot: Slot<std::thread::Result<T>>,
    scope: *const ScopeBase,
}

// SAFETY: `scope` points to the scope's `ScopeBase`, which is `Sync` and
// outlives every packet (packets die before the scope returns: the task's
// reference before its `complete_one`, the handle's inside the scope).
unsafe impl<T: Send> Send for Packet<T> {}
// SAFETY: as for `Send`; the slot is `Sync` for `T: Send`.
unsafe impl<T: Send> Sync for Packet<T> {}

impl<T> Drop for Packet<T> {
    fn drop(&mut self) {
        if let Some(Err(payload)) = self.slot.take() {
            // Nobody joined the panicked task: the scope re-raises it.
            // SAFETY: see the `Send` impl.
            unsafe { (*self.scope).record_panic(payload) };
        }
    }
}

/// The handle of a task spawned in a scope: [`join`](Self::join) it for the
/// task's value. A panic of a joined task is returned to the joiner and not
/// re-raised by the scope.
pub struct ScopedJoinHandle<'scope, T> {
    packet: Arc<Packet<T>>,
    _scope: PhantomData<&'scope ()>,
}

impl<T> fmt::Debug for ScopedJoinHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedJoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> ScopedJoinHandle<'_, T> {
    /// Waits for the task (helping the pool meanwhile on a worker) and
    /// returns its value, in the same shape as
    /// [`JoinHandle::join`](crate::JoinHandle::join).
    ///
    /// # Errors
    /// [`TaskError::Panicked`] with the panic's message if the task
    /// panicked (the panic is then not re-raised by the scope). To resume
    /// the panic itself, use [`join_unwind`](Self::join_unwind).
    pub fn join(self) -> Result<T, TaskError> {
        self.join_unwind().map_err(|payload| {
            let message = panic_message(&*payload);
            drop_payload(payload);
            TaskError::Panicked { message }
        })
    }

    /// Like [`join`](Self::join), but a panic comes back as its payload,
    /// as from `std::thread::ScopedJoinHandle::join`, e.g. to resume it
    /// with `std::panic::resume_unwind`.
    ///
    /// # Errors
    /// The task's panic payload if it panicked.
    pub fn join_unwind(self) -> std::thread::Result<T> {
        self.packet.slot.wait()
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.packet.slot.is_done()
    }
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Spawns a task that may borrow anything that outlives the scope,
    /// including the scope itself (to spawn more). The scope does not
    /// return before the task has finished.
    ///
    /// A task spawned from a worker goes to that worker's own deque (LIFO;
    /// idle workers steal the oldest), or, in a
    /// [`scope_fifo`](crate::PoolHandle::scope_fifo), to the pool's FIFO
    /// queue so tasks start in submission order.
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let packet = Arc::new(Packet {
            slot: Slot::new(),
            scope: &self.base,
        });
        let task_packet = Arc::clone(&packet);
        let base = SendPtr(&self.base as *const ScopeBase);
        let task = move || {
            let base = base;
            let result = panic::catch_unwind(AssertUnwindSafe(f));
            task_packet.slot.complete(result);
            drop(task_packet);
            // SAFETY: the scope is alive: this task has not completed yet.
            unsafe { ScopeBase::complete_one(base.0) };
        };
        // SAFETY: the task borrows only what outlives `'scope`, and the
        // scope waits for it before `'scope` ends.
        self.base.push(unsafe { ClosureJob::into_job_ref(task) });
        ScopedJoinHandle {
            packet,
            _scope: PhantomData,
        }
    }

    /// Like [`spawn`](Self::spawn) without a handle (and without the
    /// handle's allocation): a panic is re-raised when the scope ends.
    pub fn execute<F>(&'scope self, f: F)
    where
        F: FnOnce() + Send + 'scope,
    {
        let base = SendPtr(&self.base as *const ScopeBase);
        let task = move || {
            let base = base;
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
                // SAFETY: the scope is alive until `complete_one` below.
                unsafe { (*base.0).record_panic(payload) };
            }
            // SAFETY: as above.
            unsafe { ScopeBase::complete_one(base.0) };
        };
        // SAFETY: as in `spawn`.
        self.base.push(unsafe { ClosureJob::into_job_ref(task) });
    }
}

/// Runs a scope body on `worker` and waits for all its tasks.
pub(crate) fn run_scope<'env, F, R>(worker: &WorkerThread, fifo: bool, f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
        base: ScopeBase {
            registry: worker.registry(),
            owner: &**worker.parker(),
            pending: AtomicUsize::new(0),
            panic: parking_lot::Mutex::new(None),
            fifo,
        },
        _scope: PhantomData,
        _env: PhantomData,
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(&scope)));
    // Acquire pairs with the tasks' release decrements.
    worker.wait_until(&|| scope.base.pending.load(Ordering::Acquire) == 0);
    let task_panic = scope.base.panic.lock().take();
    match result {
        Err(payload) => {
            if let Some(p) = task_panic {
                drop_payload(p);
            }
            resume(payload)
        }
        Ok(value) => match task_panic {
            Some(p) => resume(p),
            None => value,
        },
    }
}
