//! Cooperative cancellation and deadlines: `CancelToken` (a tree),
//! `TaskOptions`, `TaskContext`.
//!
//! Rust threads cannot be pre-empted, so cancellation and deadlines are
//! cooperative once a task runs. The exact rules:
//! * A task whose token is cancelled, or whose deadline has passed, before
//!   it starts is never started: its handle resolves to `Cancelled` or
//!   `TimedOut`, and it is counted as such.
//! * A running task sees `is_cancelled()` turn true when its token is
//!   cancelled or its deadline passes; `check()?` returns early with
//!   `Cancelled`/`TimedOut`, which its handle then reports (and the counters
//!   count).
//! * A task that returns a value after its deadline still delivers it; the
//!   late finish is counted in `Counts::deadline_missed`.
//! * The deadline clock starts at submission by default (time in the queue
//!   counts); [`TaskOptions::start_at_run`] starts it when the task starts.

use super::job::{panic_message, Outcome, Runnable};
use super::slot::TaskSlot;
use crate::error::TaskError;
use crate::loom::sync::atomic::{AtomicBool, Ordering};
use crate::loom::sync::Mutex;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

struct Node {
    cancelled: AtomicBool,
    /// The token this one was made from: cancelling it cancels this one.
    parent: Option<CancelToken>,
    /// Who is told when this token is cancelled (see [`CancelToken::watch`]),
    /// or `None` for a token that tells no one (the pool's own).
    watchers: Option<Mutex<Vec<Weak<dyn Watcher>>>>,
}

/// Told when a token it watches is cancelled: what waits for a long time
/// and would otherwise learn of the cancellation only when it next looks
/// (a task on the timing wheel).
pub(crate) trait Watcher: Send + Sync {
    /// The token, or one of its ancestors, was cancelled. May be called
    /// more than once (once per watched ancestor cancelled), and from the
    /// cancelling thread with no lock of the token's held.
    fn cancelled(&self);
}

/// A watcher list at this length and full is pruned of the watchers gone
/// before it grows: a long-lived token watched by many short waits keeps
/// at most about twice the live ones.
const PRUNE_AT: usize = 8;

/// A cancellation flag that forms a tree: cancelling a token cancels every
/// token made from it with [`child`](Self::child), now and later. The pool
/// has one (cancelled by `shutdown_now` and by a deadline passing in
/// `shutdown_timeout`); each group has a child of its parent's; each task
/// started with [`TaskBuilder::spawn_with`](crate::TaskBuilder::spawn_with)
/// has its own child.
///
/// A child looks up its ancestors when asked (a few loads, as deep as the
/// tree), so making one takes no lock. Cancelling one tells only what the
/// pool set to watch it: a group's tasks not started yet (their results
/// resolve to [`TaskError::Cancelled`](crate::TaskError::Cancelled) at
/// once, however busy or paused the pool), and tasks waiting on the
/// timing wheel (a delay, a retry's backoff, a periodic task's next run)
/// or in a tenant's queue (for a rate limit's refill, say), which end at
/// once instead of at their due time or their turn. Any other task learns
/// of it when a worker takes it, and ends unrun then.
#[derive(Clone)]
pub struct CancelToken(Arc<Node>);

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A new, uncancelled root token.
    pub fn new() -> Self {
        Self::with(None, true)
    }

    /// A root token that tells no [watcher](Self::watch) when cancelled:
    /// the pool's own, cancelled only by shutdown after it emptied the
    /// timing wheel itself (so nothing is kept for it).
    pub(crate) fn quiet() -> Self {
        Self::with(None, false)
    }

    /// Whether cancelling this token tells no one (see [`quiet`](Self::quiet)).
    #[cfg_attr(loom, allow(dead_code))]
    #[inline]
    pub(crate) fn is_quiet(&self) -> bool {
        self.0.watchers.is_none()
    }

    fn with(parent: Option<CancelToken>, watched: bool) -> Self {
        CancelToken(Arc::new(Node {
            cancelled: AtomicBool::new(false),
            parent,
            watchers: watched.then(|| Mutex::new(Vec::new())),
        }))
    }

    /// A token cancelled when this one is (at once, if it already is).
    pub fn child(&self) -> CancelToken {
        Self::with(Some(self.clone()), true)
    }

    /// Cancels this token and all its descendants. Idempotent. Tasks of a
    /// pool waiting under this token on its timing wheel, or in a tenant's
    /// queue, end now (see
    /// [`TaskBuilder::cancel_token`](crate::TaskBuilder::cancel_token)).
    pub fn cancel(&self) {
        // Release: a task that sees the flag (acquire) sees what the
        // canceller did before cancelling. The flag is set before the
        // watchers' lock and read under it by `watch`: whichever of the
        // two takes the lock second sees the other's work, so a watcher is
        // either told here or told by `watch`'s `false` (no lost wake-up;
        // the loom model `loom_token_watch_races_cancel`).
        self.0.cancelled.store(true, Ordering::Release);
        let Some(watchers) = &self.0.watchers else {
            return;
        };
        let told = std::mem::take(&mut *watchers.lock());
        // Told with the lock let go: a watcher takes its pool's locks.
        for watcher in told {
            if let Some(watcher) = watcher.upgrade() {
                watcher.cancelled();
            }
        }
    }

    /// Keeps `watcher` to be told when this token or one of its ancestors
    /// is cancelled; held weakly, so dropping the watcher forgets it.
    /// Returns `false` if this token or an ancestor is cancelled already
    /// (the caller acts on it itself; the watcher may still be told by a
    /// token it was kept on on the way up). A quiet ancestor ends the walk.
    pub(crate) fn watch(&self, watcher: &Arc<dyn Watcher>) -> bool {
        self.watch_weak(Arc::downgrade(watcher))
    }

    /// [`watch`](Self::watch), given the weak reference to keep (one
    /// taken with no strong reference made for it).
    pub(crate) fn watch_weak(&self, watcher: Weak<dyn Watcher>) -> bool {
        let mut node = &self.0;
        let Some(mut watchers) = node.watchers.as_ref() else {
            return true;
        };
        loop {
            // The next ancestor that keeps watchers (a quiet root keeps
            // none): kept there too, so that its cancellation tells this one.
            let next = node
                .parent
                .as_ref()
                .and_then(|p| p.0.watchers.as_ref().map(|w| (&p.0, w)));
            {
                let mut list = watchers.lock();
                // Acquire: pairs with the release in `cancel` (the lock
                // orders the two as well; see there).
                if node.cancelled.load(Ordering::Acquire) {
                    return false;
                }
                if list.len() >= PRUNE_AT && list.len() == list.capacity() {
                    list.retain(|w| w.strong_count() > 0);
                }
                if next.is_none() {
                    list.push(watcher);
                    return true;
                }
                list.push(watcher.clone());
            }
            (node, watchers) = next.expect("checked above");
        }
    }

    /// Whether this token or an ancestor is cancelled.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        let mut node = &self.0;
        loop {
            // Acquire: pairs with the release in `cancel`.
            if node.cancelled.load(Ordering::Acquire) {
                return true;
            }
            match &node.parent {
                Some(parent) => node = &parent.0,
                None => return false,
            }
        }
    }
}

/// The options a task builder collects (see `PoolHandle::task`).
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) start_at_run: bool,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) parent: Option<CancelToken>,
    /// When the task is due (`delay`, `at`), by the pool's timer clock.
    pub(crate) at: Option<Instant>,
    pub(crate) retry: Option<crate::time::RetryPolicy>,
    /// An option found out of range when it was set, reported by the
    /// terminal call.
    pub(crate) invalid: Option<crate::error::InvalidOption>,
}

/// What a task started with `spawn_with` can ask about itself. Cheap: no
/// allocation per call; `is_cancelled` is a few atomic loads and, with a
/// deadline, one clock read. The task's own [`token`](Self::token) is made
/// only when first asked for.
pub struct TaskContext {
    /// The token that cancels the task from above (the pool's, a group's,
    /// the one given to the builder), or a periodic task's own.
    parent: CancelToken,
    /// The task's slot: its handle's cancel flag, and where its own token
    /// is made. Valid for the context's whole life (see `new`).
    source: Option<NonNull<dyn CancelSource>>,
    own: OnceLock<CancelToken>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) name: Option<Arc<str>>,
}

// SAFETY: `source` points to a `Sync` slot that outlives the context (the
// contract of `new`); every other field is `Send + Sync`.
unsafe impl Send for TaskContext {}
// SAFETY: as for `Send`: shared access to the slot goes through its atomics
// and its lock.
unsafe impl Sync for TaskContext {}

/// Where a running task's context finds its handle's cancellation (the
/// task's result slot).
pub(crate) trait CancelSource: Sync {
    /// Whether the handle's `cancel` was called.
    fn requested(&self) -> bool;
    /// The task's own token (made on first call).
    fn own_token(&self) -> CancelToken;
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("name", &self.name)
            .field("deadline", &self.deadline)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl TaskContext {
    /// A context cancelled by `parent` and, through `source`, by the task's
    /// handle; without a source, `parent` is the task's own token.
    ///
    /// # Safety
    /// `source`, if any, must stay valid as long as the context lives (the
    /// task body holds the slot while the context exists; the closure only
    /// borrows the context).
    pub(crate) unsafe fn new(
        parent: CancelToken,
        source: Option<&(dyn CancelSource + 'static)>,
        deadline: Option<Instant>,
        name: Option<Arc<str>>,
    ) -> Self {
        TaskContext {
            parent,
            source: source.map(NonNull::from),
            own: OnceLock::new(),
            deadline,
            name,
        }
    }

    fn source(&self) -> Option<&dyn CancelSource> {
        // SAFETY: valid while the context lives (`new`'s contract).
        self.source.map(|p| unsafe { p.as_ref() })
    }

    fn token_cancelled(&self) -> bool {
        self.parent.is_cancelled()
            || self.source().is_some_and(CancelSource::requested)
            || self.own.get().is_some_and(CancelToken::is_cancelled)
    }

    /// Whether the task should stop: it was cancelled (its handle's
    /// `cancel`, its token, its group, the pool's `shutdown_now`) or its
    /// deadline passed.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.token_cancelled() || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// `Err(TimedOut)` once the deadline passed, `Err(Cancelled)` once the
    /// task is cancelled, else `Ok(())`: use `cx.check()?` to return early.
    ///
    /// # Errors
    /// As described.
    #[inline]
    pub fn check(&self) -> Result<(), TaskError> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Err(TaskError::TimedOut)
        } else if self.token_cancelled() {
            Err(TaskError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (zero once passed; `None` without one).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The task's cancellation token (e.g. to make child tokens for work it
    /// starts): cancelled when the task is; cancelling it cancels the task.
    /// Made on the first call.
    pub fn token(&self) -> &CancelToken {
        match self.source() {
            None => &self.parent,
            Some(source) => self.own.get_or_init(|| source.own_token()),
        }
    }
}

/// When a context task's deadline falls.
#[derive(Clone, Copy)]
pub(crate) enum Deadline {
    None,
    /// Fixed at submission.
    At(Instant),
    /// `timeout` after the start.
    AfterStart(Duration),
}

impl TaskOptions {
    /// Whether no option asks for a context body (no name, no deadline, no
    /// token).
    pub(crate) fn is_plain(&self) -> bool {
        self.name.is_none()
            && self.timeout.is_none()
            && self.deadline.is_none()
            && self.parent.is_none()
    }

    /// The deadline rule, resolved at submission.
    pub(crate) fn resolve(&self) -> Deadline {
        match (self.deadline, self.timeout, self.start_at_run) {
            (Some(at), _, _) => Deadline::At(at),
            (None, Some(t), true) => Deadline::AfterStart(t),
            // A timeout past what an `Instant` holds is no deadline.
            (None, Some(t), false) => Instant::now()
                .checked_add(t)
                .map_or(Deadline::None, Deadline::At),
            (None, None, _) => Deadline::None,
        }
    }
}

/// Whether a task may start now: `Err(Cancelled)` if its token is
/// cancelled (`Err(Abandoned)` if its pool cancelled it to abandon its
/// queued tasks), `Err(TimedOut)` if its fixed deadline passed in the
/// queue; else its deadline as it runs.
pub(crate) fn may_start(
    token: &CancelToken,
    deadline: Deadline,
) -> Result<Option<Instant>, TaskError> {
    if token.is_cancelled() {
        return Err(cancelled());
    }
    let now = Instant::now();
    match deadline {
        Deadline::None => Ok(None),
        Deadline::At(at) if now >= at => Err(TaskError::TimedOut),
        Deadline::At(at) => Ok(Some(at)),
        Deadline::AfterStart(t) => Ok(now.checked_add(t)),
    }
}

/// Why a task that found its token cancelled before it started never
/// runs: `Abandoned` while its pool abandons its queued tasks (a shutdown
/// sets that mark before it cancels the pool's token, so a task that sees
/// the cancel sees the mark), else `Cancelled`.
pub(crate) fn cancelled() -> TaskError {
    match super::current::worker() {
        Some(worker) if worker.abandoning() => TaskError::Abandoned,
        _ => TaskError::Cancelled,
    }
}

/// The outcome a task that never ran for `why` reports.
pub(crate) fn unrun(why: &TaskError) -> Outcome {
    match why {
        TaskError::Cancelled => Outcome::Cancelled,
        TaskError::Abandoned => Outcome::Abandoned,
        _ => Outcome::TimedOut,
    }
}

/// Runs `f` (catching its panic) with the task's name shown in the dump
/// and the watchdog's reports while it runs.
pub(crate) fn run_named<R>(cx: &TaskContext, f: impl FnOnce() -> R) -> std::thread::Result<R> {
    #[cfg(feature = "tracing")]
    if let Some(name) = &cx.name {
        // The worker's task span declares the field.
        tracing::Span::current().record("name", &**name);
    }
    let worker = cx.name.as_ref().and_then(|_| super::current::worker());
    if let Some(worker) = worker {
        worker.set_task_name(cx.name.clone());
    }
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    if let Some(worker) = worker {
        worker.set_task_name(None);
    }
    result
}

/// The closure of a context task: one that takes the context
/// ([`WithCx`]), or a plain one submitted with options ([`NoCx`]), which
/// never sees the context but is still refused when cancelled or late
/// before it starts.
pub(crate) trait CxBody<T>: Send + 'static {
    /// The closure as submitted (handed back when a submission fails).
    type Inner;
    /// Runs the closure.
    fn call(self, cx: &TaskContext) -> Result<T, TaskError>;
    /// The closure as submitted.
    fn into_inner(self) -> Self::Inner;
}

/// A closure that takes the task's context.
pub(crate) struct WithCx<F>(pub(crate) F);

impl<F, T> CxBody<T> for WithCx<F>
where
    F: FnOnce(&TaskContext) -> Result<T, TaskError> + Send + 'static,
{
    type Inner = F;
    fn call(self, cx: &TaskContext) -> Result<T, TaskError> {
        (self.0)(cx)
    }
    fn into_inner(self) -> F {
        self.0
    }
}

/// A plain closure.
pub(crate) struct NoCx<F>(pub(crate) F);

impl<F, T> CxBody<T> for NoCx<F>
where
    F: FnOnce() -> T + Send + 'static,
{
    type Inner = F;
    fn call(self, _cx: &TaskContext) -> Result<T, TaskError> {
        Ok((self.0)())
    }
    fn into_inner(self) -> F {
        self.0
    }
}

/// A context task's deadline and name, boxed only when it has either, so
/// that the common task (neither) fits its queue slot with no allocation.
pub(crate) type Meta = Option<Box<(Deadline, Option<Arc<str>>)>>;

/// Boxes a deadline and a name, if there is either.
pub(crate) fn meta(deadline: Deadline, name: Option<Arc<str>>) -> Meta {
    match (deadline, name) {
        (Deadline::None, None) => None,
        (deadline, name) => Some(Box::new((deadline, name))),
    }
}

/// The body of a task submitted with options or a context.
pub(crate) struct ContextTask<F, T> {
    pub(crate) f: F,
    pub(crate) slot: crate::loom::sync::Arc<TaskSlot<T>>,
    pub(crate) meta: Meta,
}

impl<F, T> Runnable for ContextTask<F, T>
where
    F: CxBody<T>,
    T: Send + 'static,
{
    fn run(self) -> Outcome {
        let ContextTask { f, slot, meta } = self;
        let (deadline, name) = meta.map_or((Deadline::None, None), |m| *m);
        let parent = slot
            .token
            .clone()
            .expect("context tasks have a parent token");
        let refuse = |why: TaskError, outcome: Outcome, f: F| {
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(f)));
            slot.complete(Err(why));
            outcome
        };
        if !slot.try_start() {
            // `JoinHandle::cancel` came first and resolved the handle.
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(f)));
            return Outcome::Cancelled;
        }
        let deadline = match may_start(&parent, deadline) {
            Ok(deadline) => deadline,
            Err(why) => {
                let outcome = unrun(&why);
                return refuse(why, outcome, f);
            }
        };
        // SAFETY: `slot` lives to the end of this function, past `cx`.
        let cx = unsafe { TaskContext::new(parent, Some(&*slot), deadline, name) };
        let result = run_named(&cx, || f.call(&cx));
        let (value, outcome) = match result {
            Ok(Ok(v)) => {
                let late = deadline.is_some_and(|d| Instant::now() > d);
                (Ok(v), if late { Outcome::Late } else { Outcome::Done })
            }
            Ok(Err(e)) => {
                let outcome = match e {
                    TaskError::TimedOut => Outcome::TimedOut,
                    TaskError::Cancelled => Outcome::Cancelled,
                    _ => Outcome::Done,
                };
                (Err(e), outcome)
            }
            Err(payload) => {
                let message = panic_message(&*payload);
                (
                    Err(TaskError::Panicked { message }),
                    Outcome::Panicked(payload),
                )
            }
        };
        slot.complete(value);
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(slot)));
        outcome
    }

    fn discard(self, why: TaskError) {
        let ContextTask { f, slot, .. } = self;
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(f)));
        slot.complete(Err(why));
    }

    fn cancelled(&self) -> bool {
        self.slot.cancelled_before_start()
    }
}
