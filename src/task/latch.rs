//! The completion latch of a fork-join job, and the job that lives on its
//! waiter's stack.
//!
//! Protocol (one setter, one waiter):
//! 1. The waiter creates the job and its latch on its stack, publishes the
//!    job (a queue), and later waits for `probe()` while helping (a worker:
//!    `WorkerThread::wait_until`, registered through its `Parker`) or
//!    parked (an outside thread: `Thread::park`).
//! 2. The setter writes the result, reads *everything it needs to wake the
//!    waiter out of the latch*, then sets the flag (release), then wakes
//!    through what it read. From the instant the flag is set the waiter may
//!    return and free the job, so the setter never touches it again.
//! 3. The waiter reads the result after `probe()` (acquire).

use crate::error::TaskError;
use crate::loom::sync::atomic::{AtomicBool, Ordering};
use crate::task::job::{InlineBuf, JobKind, JobRef, JobVTable, Outcome, PanicPayload};
use crate::task::Parker;
use crate::task::Waiter;
use std::cell::UnsafeCell;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;

/// A one-shot completion flag that wakes its waiter when set.
pub(crate) trait Latch {
    /// Whether the latch is set; an acquire load, so what the setter wrote
    /// before setting is visible after a `true`.
    fn probe(&self) -> bool;

    /// Sets the latch and wakes its waiter (step 2).
    ///
    /// # Safety
    /// `this` must be valid on entry. It may be freed by the waiter as soon
    /// as the flag is set, so the implementation must not use it afterwards.
    unsafe fn set(this: *const Self);
}

/// The latch of a `join` half: its waiter is a worker of the pool whose
/// workers run the job. That worker's `Parker` lives in the pool's registry,
/// which the setter (one of those workers) keeps alive, so a plain pointer
/// stays valid after the flag is set; nothing to clone, nothing to drop.
pub(crate) struct WorkerLatch {
    set: AtomicBool,
    owner: *const Parker,
}

impl WorkerLatch {
    #[inline]
    pub(crate) fn new(owner: &Parker) -> Self {
        WorkerLatch {
            set: AtomicBool::new(false),
            owner,
        }
    }
}

impl Latch for WorkerLatch {
    #[inline]
    fn probe(&self) -> bool {
        // Acquire: pairs with the release in `set`, so the job's result is
        // visible once this reads `true`.
        self.set.load(Ordering::Acquire)
    }

    #[inline]
    unsafe fn set(this: *const Self) {
        // SAFETY: valid on entry (contract); read before the flag is set.
        let owner = unsafe { (*this).owner };
        // SAFETY: still valid: the waiter frees it only after seeing `true`.
        // Release pairs with the acquire in `probe`.
        unsafe { (*this).set.store(true, Ordering::Release) };
        // SAFETY: the parker outlives this call (see the type's docs).
        unsafe { (*owner).unpark() };
    }
}

/// The latch of an `install`: its waiter is an outside thread or a worker
/// of another pool, so it holds an owned handle, cloned before the set.
pub(crate) struct OwnedLatch {
    set: AtomicBool,
    waiter: Waiter,
}

impl OwnedLatch {
    pub(crate) fn new(waiter: Waiter) -> Self {
        OwnedLatch {
            set: AtomicBool::new(false),
            waiter,
        }
    }
}

impl Latch for OwnedLatch {
    #[inline]
    fn probe(&self) -> bool {
        // Acquire: pairs with the release in `set`, so the job's result is
        // visible once this reads `true`.
        self.set.load(Ordering::Acquire)
    }

    unsafe fn set(this: *const Self) {
        // SAFETY: valid on entry (contract); cloned before the flag is set.
        let waiter = unsafe { (*this).waiter.clone() };
        // SAFETY: still valid: the waiter frees it only after seeing `true`.
        unsafe { (*this).set.store(true, Ordering::Release) };
        waiter.wake();
    }
}

/// A job that lives on its waiter's stack: the right half of a `join`, or
/// an `install` closure. No allocation: its `JobRef` holds a pointer.
///
/// `func` is taken exactly once (by the runner, or by the waiter after
/// popping the job back unrun); `result` is written only by a runner on
/// another thread and read exactly once, after the latch is set. Neither
/// has drop glue to run when the job goes out of scope.
pub(crate) struct StackJob<F, R, L> {
    func: UnsafeCell<ManuallyDrop<F>>,
    result: UnsafeCell<MaybeUninit<std::thread::Result<R>>>,
    pub(crate) latch: L,
}

impl<F, R, L> StackJob<F, R, L>
where
    F: FnOnce() -> R + Send,
    R: Send,
    L: Latch,
{
    const INTERNAL: JobVTable =
        JobVTable::new_stack(JobKind::Internal, Self::run_raw, Self::discard_raw);
    const INSTALL: JobVTable =
        JobVTable::new_stack(JobKind::Install, Self::run_raw, Self::discard_raw);

    #[inline]
    pub(crate) fn new(func: F, latch: L) -> Self {
        StackJob {
            func: UnsafeCell::new(ManuallyDrop::new(func)),
            result: UnsafeCell::new(MaybeUninit::uninit()),
            latch,
        }
    }

    /// The address that identifies this job in a queue.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *const () {
        (self as *const Self).cast()
    }

    /// A queue entry for this job, of kind `Internal` or `Install`.
    ///
    /// # Safety
    /// `self` must stay where it is, alive, until its latch is set or the
    /// entry is popped back unrun; the waiter guarantees it by waiting for
    /// one of the two before it returns (also when it unwinds). The entry
    /// must be run at most once, and not after `run_here`.
    #[inline]
    pub(crate) unsafe fn as_job_ref(&self, kind: JobKind) -> JobRef {
        let vtable = match kind {
            JobKind::Install => &Self::INSTALL,
            _ => &Self::INTERNAL,
        };
        // SAFETY: the state is one pointer; `run_raw` reads it as such.
        // `F` and `R` are `Send`, so running the job elsewhere is sound.
        unsafe { JobRef::from_state(vtable, SendPtr(self as *const Self)) }
    }

    /// # Safety
    /// `data` holds a `SendPtr<Self>` to a live job (see `as_job_ref`).
    unsafe fn run_raw(data: *mut InlineBuf) -> Outcome {
        // SAFETY: by the contract.
        let this = unsafe { ptr::read(data.cast::<SendPtr<Self>>()) }.0;
        // SAFETY: the job is alive until its latch is set, and this runner
        // is the only user of `func` (taken once) and `result` until then.
        let func = unsafe { ManuallyDrop::take(&mut *(*this).func.get()) };
        let result = panic::catch_unwind(AssertUnwindSafe(func));
        let outcome = if result.is_ok() {
            Outcome::Done
        } else {
            Outcome::PanicForwarded
        };
        // SAFETY: as above; written once, read once by `take_result`.
        unsafe { (*(*this).result.get()).write(result) };
        // SAFETY: the latch is valid here and not used after.
        unsafe { L::set(&(*this).latch) };
        outcome
    }

    /// Internal jobs are never discarded (shutdown and eviction move them
    /// to the side queue); if one ever were, running it keeps its waiter's
    /// promise.
    ///
    /// # Safety
    /// As for `run_raw`.
    unsafe fn discard_raw(data: *mut InlineBuf, _why: TaskError) {
        // SAFETY: as for `run_raw`.
        let _ = unsafe { Self::run_raw(data) };
    }

    /// Runs the job on its waiter's thread after popping it back unrun.
    ///
    /// # Safety
    /// The job's entry was popped back (so it never runs elsewhere), and
    /// this is called at most once.
    #[inline]
    pub(crate) unsafe fn run_here(&self) -> std::thread::Result<R> {
        // SAFETY: by the contract, nobody else takes `func`.
        let func = unsafe { ManuallyDrop::take(&mut *self.func.get()) };
        panic::catch_unwind(AssertUnwindSafe(func))
    }

    /// The result, once `latch.probe()` is true.
    ///
    /// # Safety
    /// The latch is set (the job ran elsewhere), and this is called at most
    /// once.
    #[inline]
    pub(crate) unsafe fn take_result(&self) -> std::thread::Result<R> {
        debug_assert!(self.latch.probe());
        // SAFETY: the runner wrote `result` before setting the latch (its
        // release store pairs with the acquire in `probe`), and it is read
        // only here, once.
        unsafe { (*self.result.get()).assume_init_read() }
    }
}

/// A pointer that may cross threads: the job it points to is `Send`-safe
/// to run elsewhere (`F: Send`, `R: Send`) and outlives its queue entry.
pub(crate) struct SendPtr<T>(pub(crate) *const T);

// SAFETY: see the type's docs; the pointee is only used as `StackJob`'s
// protocol allows.
unsafe impl<T> Send for SendPtr<T> {}

/// Resumes the first panic of a pair: `a`'s if both panicked.
#[inline]
pub(crate) fn resume_first<A, B>(a: std::thread::Result<A>, b: std::thread::Result<B>) -> (A, B) {
    match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(p), _) | (Ok(_), Err(p)) => resume(p),
    }
}

/// Resumes a caught panic.
pub(crate) fn resume(payload: PanicPayload) -> ! {
    panic::resume_unwind(payload)
}
