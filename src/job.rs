//! Type-erased jobs: what the queues carry.
//!
//! A queue slot holds a [`JobRef`], one thin pointer to a [`JobHeader`] that
//! starts every job. The header's vtable says how to run the job, how to
//! discard it without running it, and which [`JobKind`] it is. Tasks
//! submitted with `execute`/`spawn` are [`HeapJob`]s: one allocation holding
//! the header and the closure, freed when the job runs or is discarded.
//!
//! Memory per queued task, beyond the closure: the 8-byte header in the box
//! (plus the allocator's own overhead) and one queue slot (8 bytes in a
//! worker's deque, 16 in the injector).

use crate::error::TaskError;
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;

/// A caught panic's payload.
pub(crate) type PanicPayload = Box<dyn Any + Send + 'static>;

/// What a job is, for accounting and for shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// A submitted task: counts towards `queue_capacity`, may be dropped by
    /// backpressure and abandoned by shutdown.
    Task,
    /// Work a running job waits for (its caller owns the result): never
    /// counted as queued, never abandoned; it always runs.
    Internal,
}

/// The type-erased operations of a job.
pub(crate) struct JobVTable {
    /// The job's kind.
    pub(crate) kind: JobKind,
    /// Runs the job and frees it; returns the panic payload if it panicked
    /// and the panic is the pool's to report (tasks), `Ok` otherwise.
    run: unsafe fn(NonNull<JobHeader>) -> Result<(), PanicPayload>,
    /// Frees the job without running it, resolving its handle with `why`.
    discard: unsafe fn(NonNull<JobHeader>, TaskError),
}

/// The first field of every job (`#[repr(C)]`), so a pointer to the job is a
/// pointer to its header.
#[repr(C)]
pub(crate) struct JobHeader {
    vtable: &'static JobVTable,
}

impl JobHeader {
    /// A header for a job with the given operations.
    pub(crate) const fn new(vtable: &'static JobVTable) -> Self {
        JobHeader { vtable }
    }
}

/// A pointer to a job in a queue. Whoever pops it owns it and must either
/// [`run`](JobRef::run) or [`discard`](JobRef::discard) it, exactly once.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct JobRef(NonNull<JobHeader>);

// SAFETY: a `JobRef` is a unique owning pointer to a job whose contents are
// `Send` (enforced by the constructors: `HeapJob<R: Runnable>` requires
// `R: Send`, internal jobs are built by `join`/`install`/`scope` from `Send`
// closures). Moving the pointer between threads moves that ownership.
unsafe impl Send for JobRef {}

impl std::fmt::Debug for JobHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHeader").field("kind", &self.vtable.kind).finish()
    }
}

impl JobRef {
    /// Wraps a pointer to a live job header.
    ///
    /// # Safety
    /// `header` must point to a job that stays valid until the returned
    /// `JobRef` is run or discarded, and whose vtable matches its layout.
    pub(crate) unsafe fn new(header: NonNull<JobHeader>) -> Self {
        JobRef(header)
    }

    /// The job's kind.
    pub(crate) fn kind(&self) -> JobKind {
        // SAFETY: the header is valid until the job is run or discarded,
        // which consumes `self`.
        unsafe { self.0.as_ref() }.vtable.kind
    }

    /// The raw pointer, to compare a popped job with a known one.
    pub(crate) fn as_ptr(&self) -> *const JobHeader {
        self.0.as_ptr()
    }

    /// Runs the job (consuming it).
    pub(crate) fn run(self) -> Result<(), PanicPayload> {
        // SAFETY: the header is valid (constructor contract) and the job is
        // run exactly once because `self` is consumed and not `Clone`.
        unsafe { (self.0.as_ref().vtable.run)(self.0) }
    }

    /// Discards the job without running it (consuming it).
    pub(crate) fn discard(self, why: TaskError) {
        // SAFETY: as for `run`.
        unsafe { (self.0.as_ref().vtable.discard)(self.0, why) }
    }
}

/// The body of a heap-allocated task.
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

/// A task in one allocation: header first, then the body.
#[repr(C)]
pub(crate) struct HeapJob<R> {
    header: JobHeader,
    body: R,
}

impl<R: Runnable> HeapJob<R> {
    const VTABLE: JobVTable = JobVTable {
        kind: JobKind::Task,
        run: Self::run_raw,
        discard: Self::discard_raw,
    };

    /// Boxes `body` as a task and returns the owning queue pointer.
    pub(crate) fn into_job_ref(body: R) -> JobRef {
        let boxed = Box::new(HeapJob {
            header: JobHeader::new(&Self::VTABLE),
            body,
        });
        let ptr = NonNull::from(Box::leak(boxed)).cast::<JobHeader>();
        // SAFETY: the box stays allocated until `run_raw`/`discard_raw`
        // reclaims it, and `VTABLE` matches `HeapJob<R>`.
        unsafe { JobRef::new(ptr) }
    }

    /// # Safety
    /// `ptr` came from `into_job_ref::<R>` and is reclaimed only here.
    unsafe fn run_raw(ptr: NonNull<JobHeader>) -> Result<(), PanicPayload> {
        // SAFETY: by the contract, `ptr` is the leaked `Box<HeapJob<R>>`.
        let job = unsafe { Box::from_raw(ptr.cast::<HeapJob<R>>().as_ptr()) };
        job.body.run()
    }

    /// # Safety
    /// As for `run_raw`.
    unsafe fn discard_raw(ptr: NonNull<JobHeader>, why: TaskError) {
        // SAFETY: as in `run_raw`.
        let job = unsafe { Box::from_raw(ptr.cast::<HeapJob<R>>().as_ptr()) };
        job.body.discard(why);
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
