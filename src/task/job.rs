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
//! Memory per queued task, beyond the closure: a 40-byte slot (vtable,
//! queue timestamp, 24 inline bytes; 48 in the injector, which adds a state
//! word), plus for a boxed task the allocation holding the closure.

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
    /// Work a running job waits for (a `join` half, a scope's task): never
    /// counted, never abandoned; it always runs.
    Internal,
    /// An `install` call's closure: counted in `pending` (so shutdown waits
    /// for it) and in the task counters, but never abandoned: its caller is
    /// blocked on it.
    Install,
    /// A keyed shard with tasks to run (the unit of keyed scheduling). Its
    /// state is the shard's index; workers run it themselves
    /// (`WorkerThread::run_shard`), never through the vtable.
    Shard,
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
    /// Whether the state is a pointer to a `StackJob` (see `stack_ptr`).
    stack: bool,
    /// Runs the job from its storage (which it then no longer owns).
    run: unsafe fn(*mut InlineBuf) -> Outcome,
    /// Disposes of the job unrun, resolving its handle with `why`.
    discard: unsafe fn(*mut InlineBuf, TaskError),
    /// Whether the task is cancelled already: it would end unrun.
    cancelled: unsafe fn(*const InlineBuf) -> bool,
}

/// The `cancelled` of jobs that cannot tell.
unsafe fn never_cancelled(_: *const InlineBuf) -> bool {
    false
}

impl JobVTable {
    /// The operations of a job kind whose state is read by `run`/`discard`.
    pub(crate) const fn new(
        kind: JobKind,
        run: unsafe fn(*mut InlineBuf) -> Outcome,
        discard: unsafe fn(*mut InlineBuf, TaskError),
    ) -> Self {
        JobVTable {
            kind,
            stack: false,
            run,
            discard,
            cancelled: never_cancelled,
        }
    }

    /// As `new`, for tasks that can tell whether they are cancelled.
    const fn new_task(
        run: unsafe fn(*mut InlineBuf) -> Outcome,
        discard: unsafe fn(*mut InlineBuf, TaskError),
        cancelled: unsafe fn(*const InlineBuf) -> bool,
    ) -> Self {
        JobVTable {
            cancelled,
            ..Self::new(JobKind::Task, run, discard)
        }
    }

    /// As `new`, for jobs whose state is a pointer to a `StackJob`.
    pub(crate) const fn new_stack(
        kind: JobKind,
        run: unsafe fn(*mut InlineBuf) -> Outcome,
        discard: unsafe fn(*mut InlineBuf, TaskError),
    ) -> Self {
        JobVTable {
            stack: true,
            ..Self::new(kind, run, discard)
        }
    }
}

/// A job in a queue: a vtable and up to [`INLINE_BYTES`] of state (the task
/// itself, a box holding it, or a pointer to a job on a waiting thread's
/// stack). Whoever pops it owns it and must [`run`](JobRef::run) or
/// [`discard`](JobRef::discard) it, exactly once; a `JobRef` dropped
/// otherwise leaks its task (never double-frees).
pub(crate) struct JobRef {
    vtable: &'static JobVTable,
    /// Tick at which a task was queued (0 when timing is off).
    enqueued: u64,
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
    #[inline]
    pub(crate) unsafe fn from_state<S: Send>(vtable: &'static JobVTable, state: S) -> Self {
        debug_assert!(size_of::<S>() <= INLINE_BYTES && align_of::<S>() <= 8);
        let mut data = InlineBuf::uninit();
        // SAFETY: the buffer is large and aligned enough (caller contract)
        // and uninitialized, so writing does not overwrite a live value.
        unsafe { ptr::write(data.0.as_mut_ptr().cast::<S>(), state) };
        JobRef {
            vtable,
            enqueued: 0,
            data,
        }
    }

    /// Records the tick at which the job was queued.
    #[inline]
    pub(crate) fn stamp(&mut self, ticks: u64) {
        self.enqueued = ticks;
    }

    /// The tick at which the job was queued (0 if not stamped).
    #[inline]
    pub(crate) fn enqueued(&self) -> u64 {
        self.enqueued
    }

    /// The job's kind.
    #[inline]
    pub(crate) fn kind(&self) -> JobKind {
        self.vtable.kind
    }

    /// For a shard job, the shard's index.
    #[inline]
    pub(crate) fn shard_index(&self) -> usize {
        debug_assert_eq!(self.vtable.kind, JobKind::Shard);
        // SAFETY: a shard job's state is one initialized `usize`.
        unsafe { ptr::read(self.data.0.as_ptr().cast::<usize>()) }
    }

    /// For a job on its waiter's stack (a `join` half, an `install`), the
    /// pointer to it; `None` for every other job.
    #[inline]
    pub(crate) fn stack_ptr(&self) -> Option<*const ()> {
        // Only `StackJob`s are looked up by address. Any other job's first
        // word may be padding, so it is never read.
        if !self.vtable.stack {
            return None;
        }
        // SAFETY: a stack job's state is one initialized pointer.
        Some(unsafe { ptr::read(self.data.0.as_ptr().cast::<*const ()>()) })
    }

    /// Runs the job where it lies (no move of the job to a new frame
    /// slot on the task path).
    ///
    /// # Safety
    ///
    /// The job must not be used again afterwards (not run, discarded, or
    /// read beyond its enqueue stamp): its state has been consumed.
    #[inline(always)]
    pub(crate) unsafe fn run_in_place(this: &mut ManuallyDrop<JobRef>) -> Outcome {
        // SAFETY: the storage holds the state `vtable` expects (constructor
        // contract); the caller promises this is its only read.
        unsafe { (this.vtable.run)(&mut this.data) }
    }

    /// Runs the job (consuming it).
    #[inline]
    pub(crate) fn run(self) -> Outcome {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: the storage holds the state `vtable` expects (constructor
        // contract) and is read exactly once, since `self` is consumed.
        unsafe { (this.vtable.run)(&mut this.data) }
    }

    /// Whether the task is cancelled already (its handle's `cancel`, its
    /// token): it would end unrun, as `Cancelled`. `false` for jobs that
    /// cannot tell (plain `execute` tasks, internal jobs).
    pub(crate) fn is_cancelled(&self) -> bool {
        // SAFETY: the storage holds the state `vtable` expects (constructor
        // contract); `cancelled` only reads it through a shared pointer.
        unsafe { (self.vtable.cancelled)(&self.data) }
    }

    /// Discards the job without running it (consuming it).
    #[inline]
    pub(crate) fn discard(self, why: TaskError) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: as for `run`.
        unsafe { (this.vtable.discard)(&mut this.data, why) }
    }
}

/// How a job ended.
pub(crate) enum Outcome {
    /// It returned.
    Done,
    /// It panicked and the pool reports the panic (handler, counters).
    Panicked(PanicPayload),
    /// It panicked and the panic was handed to whoever waits for the job
    /// (it is resumed there), so the pool only counts it.
    PanicForwarded,
    /// It returned a value after its deadline (counted as completed, and
    /// as a deadline miss).
    Late,
    /// Its deadline passed before it started, or it returned `TimedOut`.
    TimedOut,
    /// It was cancelled before it started, or it returned `Cancelled`.
    Cancelled,
    /// Its pool abandoned it before it started (it found its token
    /// cancelled by `shutdown_now` or an expired `shutdown_timeout`).
    Abandoned,
    /// It asks to run again later: a retry after an application error, or
    /// a periodic task's next run. Not an end: the pool puts the job on its
    /// timing wheel.
    Again(Box<Again>),
    /// It returned an application error and will not be tried again (an
    /// end; its handle holds every attempt's error).
    Failed,
    /// Its last attempt failed (or its error was permanent): an end; the
    /// pool puts it in its dead letters.
    DeadLettered(Box<super::dead::DeadLetter>),
}

/// A job to run again at `at` (see [`Outcome::Again`]).
pub(crate) struct Again {
    pub(crate) job: JobRef,
    pub(crate) at: std::time::Instant,
    /// A retry after an error (a keyed retry holds its key meanwhile), not
    /// a periodic run.
    pub(crate) retry: bool,
    /// Where the wheel records the entry's id, so that the task's handle
    /// can take it off the wheel (periodic tasks).
    pub(crate) cell: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// The tenant's queue the job goes back to when due (a tenant task's
    /// retry), instead of the pool's queues.
    pub(crate) hold: Option<Box<Hold>>,
    /// A retry's means to be hurried by its handle's `cancel` while it
    /// waits (see [`RetryWait`]).
    pub(crate) wait: Option<RetryWait>,
    /// The token that cancels the task from above, for the wheel to watch
    /// while the task waits (see `CancelToken::watch`).
    pub(crate) token: Option<super::CancelToken>,
}

/// Hands a waiting retry's task the function that hurries the retry (its
/// handle's `cancel` calls it; it returns whether the retry was still
/// waiting). Returns `false`, without keeping the function, when the
/// cancellation came first: the caller hurries the retry itself.
pub(crate) type RetryWait = Box<dyn FnOnce(Hurry) -> bool + Send>;

/// Hurries a waiting retry; `true` if it was still waiting.
pub(crate) type Hurry = Box<dyn FnOnce() -> bool + Send>;

/// Where a job due on the timing wheel waits next: its tenant's queue
/// (see `tenants`): the tenant's identity, its lane, its cost, and the
/// token the queue watches while the job waits there.
#[derive(Clone, Debug)]
pub(crate) struct Hold {
    pub(crate) tenant: u64,
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) lane: u8,
    pub(crate) cost: u32,
    /// Set when the job goes onto the wheel (its task's token, if any).
    pub(crate) token: Option<super::CancelToken>,
}

impl Hold {
    /// This hold, watching `token`.
    pub(crate) fn watching(mut self: Box<Self>, token: Option<&super::CancelToken>) -> Box<Self> {
        self.token = token.cloned();
        self
    }
}

impl From<Result<(), PanicPayload>> for Outcome {
    fn from(r: Result<(), PanicPayload>) -> Self {
        match r {
            Ok(()) => Outcome::Done,
            Err(p) => Outcome::Panicked(p),
        }
    }
}

/// The body of a submitted task.
pub(crate) trait Runnable: Send + 'static {
    /// Runs the task, catching its panic.
    fn run(self) -> Outcome;
    /// Drops the task unrun; `why` resolves its handle if it has one.
    fn discard(self, why: TaskError);
    /// Whether it is cancelled already, so that it would end unrun (a
    /// queue that charges for a task lets it pass free). `false` unless
    /// the body can tell.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A queued job is itself a task body: a job back from the timing wheel is
/// wrapped again when a layer above lets it through.
impl Runnable for JobRef {
    fn run(self) -> Outcome {
        JobRef::run(self)
    }

    fn discard(self, why: TaskError) {
        JobRef::discard(self, why);
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }
}

/// A fire-and-forget task (`execute`).
pub(crate) struct Execute<F>(pub(crate) F);

impl<F: FnOnce() + Send + 'static> Runnable for Execute<F> {
    fn run(self) -> Outcome {
        panic::catch_unwind(AssertUnwindSafe(self.0)).into()
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

    const INLINE: JobVTable = JobVTable::new_task(
        Self::run_inline,
        Self::discard_inline,
        Self::cancelled_inline,
    );
    const BOXED: JobVTable =
        JobVTable::new_task(Self::run_boxed, Self::discard_boxed, Self::cancelled_boxed);

    /// Wraps `body` as a queued task.
    #[inline]
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
    unsafe fn run_inline(data: *mut InlineBuf) -> Outcome {
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
    unsafe fn run_boxed(data: *mut InlineBuf) -> Outcome {
        // SAFETY: by the contract; the read moves the box out.
        unsafe { ptr::read(data.cast::<Box<R>>()) }.run()
    }

    /// # Safety
    /// As for `run_boxed`.
    unsafe fn discard_boxed(data: *mut InlineBuf, why: TaskError) {
        // SAFETY: as in `run_boxed`.
        unsafe { ptr::read(data.cast::<Box<R>>()) }.discard(why)
    }

    /// # Safety
    /// `data` holds an `R` written by `into_job_ref`, not yet read out.
    unsafe fn cancelled_inline(data: *const InlineBuf) -> bool {
        // SAFETY: by the contract; a shared borrow, nothing moved.
        unsafe { &*data.cast::<R>() }.cancelled()
    }

    /// # Safety
    /// `data` holds a `Box<R>` written by `into_job_ref`, not yet read out.
    unsafe fn cancelled_boxed(data: *const InlineBuf) -> bool {
        // SAFETY: by the contract; a shared borrow, nothing moved.
        unsafe { &*data.cast::<Box<R>>() }.cancelled()
    }
}

/// The queue entry of a scheduled shard.
pub(crate) fn shard_job(index: usize) -> JobRef {
    const SHARD: JobVTable = JobVTable::new(JobKind::Shard, shard_not_run, shard_not_discarded);
    // SAFETY: the state is a `usize`, read back by `shard_index`.
    unsafe { JobRef::from_state(&SHARD, index) }
}

/// # Safety
/// Never called: workers handle shard jobs directly.
unsafe fn shard_not_run(_: *mut InlineBuf) -> Outcome {
    unreachable!("shard jobs are run by their worker, not through the vtable")
}

/// # Safety
/// Never called: shard jobs are never discarded (their tasks are).
unsafe fn shard_not_discarded(_: *mut InlineBuf, _: TaskError) {
    unreachable!("shard jobs are never discarded")
}

/// Internal jobs made of a closure that handles its own outcome (a scope's
/// task): stored inline when it fits, boxed otherwise. The closure need not
/// be `'static`; whoever creates the job keeps what it borrows alive until
/// it has run.
pub(crate) struct ClosureJob<C>(PhantomData<C>);

impl<C: FnOnce() + Send> ClosureJob<C> {
    const FITS: bool = size_of::<C>() <= INLINE_BYTES && align_of::<C>() <= 8;
    const INLINE: JobVTable =
        JobVTable::new(JobKind::Internal, Self::run_inline, Self::discard_inline);
    const BOXED: JobVTable =
        JobVTable::new(JobKind::Internal, Self::run_boxed, Self::discard_boxed);

    /// Wraps `c` as an internal job.
    ///
    /// # Safety
    /// Everything `c` borrows must stay alive until the job has run.
    pub(crate) unsafe fn into_job_ref(c: C) -> JobRef {
        if Self::FITS {
            // SAFETY: `FITS` checked size and alignment; `INLINE` reads a `C`.
            unsafe { JobRef::from_state(&Self::INLINE, c) }
        } else {
            // SAFETY: a box is one pointer; `BOXED` reads a `Box<C>`.
            unsafe { JobRef::from_state(&Self::BOXED, Box::new(c)) }
        }
    }

    /// # Safety
    /// `data` holds a `C` written by `into_job_ref`, read only here.
    unsafe fn run_inline(data: *mut InlineBuf) -> Outcome {
        // SAFETY: by the contract.
        (unsafe { ptr::read(data.cast::<C>()) })();
        Outcome::Done
    }

    /// Internal jobs always run (see `StackJob::discard_raw`).
    ///
    /// # Safety
    /// As for `run_inline`.
    unsafe fn discard_inline(data: *mut InlineBuf, _why: TaskError) {
        // SAFETY: as for `run_inline`.
        let _ = unsafe { Self::run_inline(data) };
    }

    /// # Safety
    /// `data` holds a `Box<C>` written by `into_job_ref`, read only here.
    unsafe fn run_boxed(data: *mut InlineBuf) -> Outcome {
        // SAFETY: by the contract.
        (unsafe { ptr::read(data.cast::<Box<C>>()) })();
        Outcome::Done
    }

    /// # Safety
    /// As for `run_boxed`.
    unsafe fn discard_boxed(data: *mut InlineBuf, _why: TaskError) {
        // SAFETY: as for `run_boxed`.
        let _ = unsafe { Self::run_boxed(data) };
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
