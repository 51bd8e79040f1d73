//! Type-erased jobs: what the queues carry.
//!
//! A queue slot holds a [`JobRef`]: a vtable pointer (how to run the job,
//! how to discard it unrun, which [`JobKind`] it is) and 24 bytes of inline
//! state. A small task (a closure capturing up to three words, plus its
//! result slot for `spawn`) lives in the slot itself, so submitting it
//! allocates nothing and the worker frees nothing: with a submitter
//! allocating and workers freeing, the allocator's cross-thread frees were
//! the largest cost of a tiny task. Larger tasks are boxed.
//!
//! Memory per queued task, beyond the closure: a 32-byte slot (40 in the
//! injector, which adds a state word), plus for a boxed task the allocation
//! holding the closure.

use crate::error::TaskError;
use std::any::Any;
use std::marker::PhantomData;
use std::mem::{align_of, size_of, ManuallyDrop, MaybeUninit};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;

/// A caught panic's payload.
pub(crate) type PanicPayload = Box<dyn Any + Send + 'static>;

/// What a job is, for accounting and for shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// A submitted task: counts towards `queue_capacity`, may be dropped by
    /// backpressure and abandoned by shutdown.
    Task,
    /// Work a running job waits for (its caller owns the result): never
    /// counted as queued, never abandoned; it always runs. The scheduler,
    /// eviction and shutdown already route these; fork-join jobs (`join`,
    /// `scope`, `install`) are what construct them.
    #[allow(dead_code)]
    Internal,
}

/// How many bytes of a task live inline in its queue slot. A task body
/// (closure plus bookkeeping) that fits, with alignment at most 8, is
/// stored in the slot itself: no allocation, and nothing for the worker to
/// free. Larger bodies are boxed and the slot holds the box.
pub(crate) const INLINE_BYTES: usize = 24;

/// A job's inline storage.
#[repr(C, align(8))]
pub(crate) struct InlineBuf([MaybeUninit<u8>; INLINE_BYTES]);

impl InlineBuf {
    const fn uninit() -> Self {
        InlineBuf([MaybeUninit::uninit(); INLINE_BYTES])
    }
}

/// The type-erased operations of a job.
pub(crate) struct JobVTable {
    /// The job's kind.
    pub(crate) kind: JobKind,
    /// Runs the job from its storage (which it then no longer owns);
    /// returns the panic payload if the pool must report a panic.
    run: unsafe fn(*mut InlineBuf) -> Result<(), PanicPayload>,
    /// Disposes of the job unrun, resolving its handle with `why`.
    discard: unsafe fn(*mut InlineBuf, TaskError),
}

/// A job in a queue: a vtable and up to [`INLINE_BYTES`] of state (the task
/// itself, a box holding it, or a pointer to a job on a waiting thread's
/// stack). Whoever pops it owns it and must [`run`](JobRef::run) or
/// [`discard`](JobRef::discard) it, exactly once; a `JobRef` dropped
/// otherwise leaks its task (never double-frees).
pub(crate) struct JobRef {
    vtable: &'static JobVTable,
    data: InlineBuf,
}

// SAFETY: the constructors only accept `Send` payloads (`Runnable: Send`;
// internal jobs are built from `Send` closures), so moving the job to another
// thread moves only `Send` data.
unsafe impl Send for JobRef {}

impl std::fmt::Debug for JobRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRef")
            .field("kind", &self.vtable.kind)
            .finish()
    }
}

impl JobRef {
    /// A job whose state is the value `state`, run and discarded by the
    /// functions of `vtable`.
    ///
    /// # Safety
    /// `size_of::<S>() <= INLINE_BYTES`, `align_of::<S>() <= 8`, and
    /// `vtable`'s functions must read the storage as an `S` (once).
    pub(crate) unsafe fn from_state<S: Send>(vtable: &'static JobVTable, state: S) -> Self {
        debug_assert!(size_of::<S>() <= INLINE_BYTES && align_of::<S>() <= 8);
        let mut data = InlineBuf::uninit();
        // SAFETY: the buffer is large and aligned enough (caller contract)
        // and uninitialised, so writing does not overwrite a live value.
        unsafe { ptr::write(data.0.as_mut_ptr().cast::<S>(), state) };
        JobRef { vtable, data }
    }

    /// The job's kind.
    pub(crate) fn kind(&self) -> JobKind {
        self.vtable.kind
    }

    /// Runs the job (consuming it).
    pub(crate) fn run(self) -> Result<(), PanicPayload> {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: the storage holds the state `vtable` expects (constructor
        // contract) and is read exactly once, since `self` is consumed.
        unsafe { (this.vtable.run)(&mut this.data) }
    }

    /// Discards the job without running it (consuming it).
    pub(crate) fn discard(self, why: TaskError) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: as for `run`.
        unsafe { (this.vtable.discard)(&mut this.data, why) }
    }
}

/// The body of a submitted task.
pub(crate) trait Runnable: Send + 'static {
    /// Runs the task, catching its panic.
    fn run(self) -> Result<(), PanicPayload>;
    /// Drops the task unrun; `why` resolves its handle if it has one.
    fn discard(self, why: TaskError);
}

/// A fire-and-forget task (`execute`).
pub(crate) struct Execute<F>(pub(crate) F);

impl<F: FnOnce() + Send + 'static> Runnable for Execute<F> {
    fn run(self) -> Result<(), PanicPayload> {
        panic::catch_unwind(AssertUnwindSafe(self.0))
    }

    fn discard(self, _why: TaskError) {
        // A closure's destructor may panic; the pool must survive it.
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(self)));
    }
}

/// Task jobs: a `Runnable` stored inline when it fits, boxed otherwise.
pub(crate) struct TaskJob<R>(PhantomData<R>);

impl<R: Runnable> TaskJob<R> {
    const FITS: bool = size_of::<R>() <= INLINE_BYTES && align_of::<R>() <= 8;

    const INLINE: JobVTable = JobVTable {
        kind: JobKind::Task,
        run: Self::run_inline,
        discard: Self::discard_inline,
    };

    const BOXED: JobVTable = JobVTable {
        kind: JobKind::Task,
        run: Self::run_boxed,
        discard: Self::discard_boxed,
    };

    /// Wraps `body` as a queued task.
    pub(crate) fn into_job_ref(body: R) -> JobRef {
        if Self::FITS {
            // SAFETY: `FITS` checked size and alignment; `INLINE` reads an `R`.
            unsafe { JobRef::from_state(&Self::INLINE, body) }
        } else {
            // SAFETY: a `Box<R>` is one pointer; `BOXED` reads a `Box<R>`.
            unsafe { JobRef::from_state(&Self::BOXED, Box::new(body)) }
        }
    }

    /// # Safety
    /// `data` holds an `R` written by `into_job_ref`, read only here.
    unsafe fn run_inline(data: *mut InlineBuf) -> Result<(), PanicPayload> {
        // SAFETY: by the contract; the read moves the task out.
        unsafe { ptr::read(data.cast::<R>()) }.run()
    }

    /// # Safety
    /// As for `run_inline`.
    unsafe fn discard_inline(data: *mut InlineBuf, why: TaskError) {
        // SAFETY: as in `run_inline`.
        unsafe { ptr::read(data.cast::<R>()) }.discard(why)
    }

    /// # Safety
    /// `data` holds a `Box<R>` written by `into_job_ref`, read only here.
    unsafe fn run_boxed(data: *mut InlineBuf) -> Result<(), PanicPayload> {
        // SAFETY: by the contract; the read moves the box out.
        unsafe { ptr::read(data.cast::<Box<R>>()) }.run()
    }

    /// # Safety
    /// As for `run_boxed`.
    unsafe fn discard_boxed(data: *mut InlineBuf, why: TaskError) {
        // SAFETY: as in `run_boxed`.
        unsafe { ptr::read(data.cast::<Box<R>>()) }.discard(why)
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Drops a panic payload, containing a panic from its destructor.
pub(crate) fn drop_payload(payload: PanicPayload) {
    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
}
