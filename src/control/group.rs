//! Task groups: the errgroup of this pool.

use crate::error::{SubmitError, TaskError};
use crate::loom::sync::Arc as LoomArc;
use crate::metrics::BreakerState;
use crate::sched::breaker::{Breaker, BreakerConfig};
use crate::sched::{Registry, Wait};
use crate::task::cancel::{CancelToken, Deadline, TaskContext};
use crate::task::retry::{Fallible, FallibleSlot, Plan};
use crate::task::{Failed, JoinHandle, Slot};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a task of a group produced no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupError<E> {
    /// The task returned this error.
    Failed(E),
    /// The task did not return: it panicked, was cancelled (by the group's
    /// fail-fast, its token, or shutdown), timed out, or was refused by the
    /// pool (`Abandoned` after shutdown, `Dropped` when the queue was full).
    Task(TaskError),
}

impl<E: fmt::Display> fmt::Display for GroupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::Failed(e) => write!(f, "group task failed: {e}"),
            GroupError::Task(e) => write!(f, "group task did not finish: {e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for GroupError<E> {}

type Pending = Box<dyn FnOnce() + Send>;

struct Gate {
    /// Cost units of the group's tasks in the pool.
    in_pool: usize,
    /// Tasks waiting for units, first come first served, with their cost.
    waiting: VecDeque<(usize, Pending)>,
}

struct Shared {
    pool: LoomArc<Registry>,
    token: CancelToken,
    fail_fast: bool,
    limit: usize,
    /// Each task's deadline, from its `spawn`.
    timeout: Option<Duration>,
    /// The group's own tenant, when it has a rate limit: its tasks wait
    /// there for tokens (not on a worker).
    tenant: Option<crate::tenants::TenantId>,
    breaker: Option<Breaker>,
    /// Index of the first task to fail (by time), or `usize::MAX`.
    first_error: AtomicUsize,
    gate: Mutex<Gate>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(id) = &self.tenant {
            crate::tenants::Tenants::withdraw_transient(&self.pool, id);
        }
    }
}

impl Shared {
    /// Records a task's end with the group's breaker, and a failure with
    /// the group.
    fn failed(&self, index: usize, ok: bool) {
        if let Some(breaker) = &self.breaker {
            breaker.record(ok);
        }
        if !ok {
            self.fail(index);
        }
    }

    fn fail(&self, index: usize) {
        // Relaxed: read after every task finished (joined), which orders it.
        let _ = self.first_error.compare_exchange(
            usize::MAX,
            index,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        if self.fail_fast {
            self.token.cancel();
        }
    }

    /// Admits a task of `cost` units: submits it now if they fit under
    /// `limit` and nothing waits before it, else keeps it in the group
    /// until enough units come back.
    fn admit(self: &Arc<Self>, cost: usize, submit: Pending) {
        let mut gate = self.gate.lock();
        // `in_pool <= limit` always: the subtraction cannot wrap, and a
        // cost near `usize::MAX` cannot overflow the sum.
        if gate.waiting.is_empty() && cost <= self.limit - gate.in_pool {
            gate.in_pool += cost;
            drop(gate);
            submit();
        } else {
            gate.waiting.push_back((cost, submit));
        }
    }

    /// A task of `cost` units left the pool (however it ended): submit
    /// the waiting ones that now fit, in order.
    fn release(&self, cost: usize) {
        let mut next = Vec::new();
        {
            let mut gate = self.gate.lock();
            gate.in_pool -= cost;
            while let Some(&(c, _)) = gate.waiting.front() {
                if c > self.limit - gate.in_pool {
                    break;
                }
                gate.in_pool += c;
                next.extend(gate.waiting.pop_front().map(|(_, s)| s));
            }
        }
        for submit in next {
            submit();
        }
    }
}

/// Released when a group task's closure is consumed or dropped, i.e. when
/// the task ran, was refused or was discarded: exactly once either way.
struct Ticket(Arc<Shared>, usize);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// A group of tasks waited for together, from [`PoolHandle::group`](crate::PoolHandle::group).
///
/// * Fail-fast (the default): the first task to return an error or panic
///   cancels the group's token; tasks not started yet never run (their
///   result is `Cancelled`), running ones see `cx.is_cancelled()`.
///   [`wait`](Self::wait) returns that first error. Turn it off with
///   [`fail_fast(false)`](Self::fail_fast) to run everything.
/// * [`wait_all`](Self::wait_all) returns every task's result, in
///   submission order.
/// * [`limit(n)`](Self::limit): at most `n` of the group's tasks are in the
///   pool at once; the rest wait in the group, not in the pool's queue.
/// * Groups nest: [`group`](Self::group) makes a group whose token is a
///   child of this one's.
///
/// ```
/// let pool = ebbtide::Pool::builder().workers(2).build()?;
/// let mut group = pool.group::<u32, String>().limit(2);
/// for i in 1..=5u32 {
///     group.spawn(move |_cx| if i == 9 { Err("nine".to_string()) } else { Ok(i * i) });
/// }
/// assert_eq!(group.wait(), Ok(vec![1, 4, 9, 16, 25]));
/// # Ok::<(), ebbtide::BuildError>(())
/// ```
pub struct TaskGroup<T, E> {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<Result<T, Failed<E>>>>,
}

impl<T, E> fmt::Debug for TaskGroup<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroup")
            .field("tasks", &self.handles.len())
            .field("fail_fast", &self.shared.fail_fast)
            .field("cancelled", &self.shared.token.is_cancelled())
            .finish()
    }
}

impl<T: Send + 'static, E: Send + 'static> TaskGroup<T, E> {
    pub(crate) fn new(pool: LoomArc<Registry>, token: CancelToken) -> Self {
        TaskGroup {
            shared: Arc::new(Shared {
                pool,
                token,
                fail_fast: true,
                limit: usize::MAX,
                timeout: None,
                tenant: None,
                breaker: None,
                first_error: AtomicUsize::new(usize::MAX),
                gate: Mutex::new(Gate {
                    in_pool: 0,
                    waiting: VecDeque::new(),
                }),
            }),
            handles: Vec::new(),
        }
    }

    fn configure(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("configure before spawning");
        f(shared);
        self
    }

    /// At most `n` (at least 1) cost units of the group's tasks in the
    /// pool at once: `n` tasks, or fewer when some cost more than one
    /// ([`spawn_with_cost`](Self::spawn_with_cost)).
    ///
    /// # Panics
    /// If called after the first `spawn`.
    pub fn limit(self, n: usize) -> Self {
        self.configure(|s| s.limit = n.max(1))
    }

    /// At most `limit.rate()` of the group's tasks start a second, in
    /// bursts of up to `limit.burst()`: the group's tasks go through a
    /// tenant of its own with this rate limit, so those over it wait in
    /// that tenant's queue, not on a worker.
    ///
    /// # Panics
    /// If called after the first `spawn`.
    pub fn rate_limit(self, limit: crate::RateLimit) -> Self {
        use std::sync::atomic::AtomicU64;
        static GROUPS: AtomicU64 = AtomicU64::new(0);
        // Relaxed: only distinct values matter.
        let n = GROUPS.fetch_add(1, Ordering::Relaxed);
        let id = crate::tenants::TenantId::of(format!("(group {n})").as_str());
        let config = crate::TenantConfig::new().rate_limit(limit);
        crate::tenants::Tenants::configure_transient(&self.shared.pool, id.clone(), config);
        self.configure(|s| s.tenant = Some(id))
    }

    /// Whether the first error cancels the rest (default `true`).
    ///
    /// # Panics
    /// If called after the first `spawn`.
    pub fn fail_fast(self, on: bool) -> Self {
        self.configure(|s| s.fail_fast = on)
    }

    /// A deadline `d` after each task's `spawn`: a task still waiting (in
    /// the group or the pool's queue) at its deadline never starts
    /// (`Task(TimedOut)`); a running one sees `cx.is_cancelled()`. A `d`
    /// too far off for the clock (`Duration::MAX`) sets no deadline.
    ///
    /// # Panics
    /// If called after the first `spawn`.
    pub fn timeout(self, d: Duration) -> Self {
        self.configure(|s| s.timeout = Some(d))
    }

    /// A circuit breaker for this group alone: it counts the group's tasks
    /// (an `Err` or a panic is a failure, a value a success) and, while
    /// open, refuses new ones: their result is
    /// `Task(TaskError::BreakerOpen)` and they never run.
    ///
    /// # Errors
    /// [`InvalidOption`](crate::InvalidOption) naming a setting out of range.
    ///
    /// # Panics
    /// If called after the first `spawn`.
    pub fn circuit_breaker(self, config: BreakerConfig) -> Result<Self, crate::InvalidOption> {
        if let Some((field, value, expected)) = config.invalid() {
            return Err(crate::InvalidOption {
                option: field,
                value,
                expected,
            });
        }
        Ok(self.configure(|s| s.breaker = Some(Breaker::new(config))))
    }

    /// The state of the group's own circuit breaker, if it has one.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.shared.breaker.as_ref().map(Breaker::state)
    }

    /// The group's cancellation token. Cancelling it cancels the group:
    /// tasks not started yet never run and their results are
    /// `Task(Cancelled)` at once, however busy the pool; running ones see
    /// `cx.is_cancelled()`.
    pub fn token(&self) -> &CancelToken {
        &self.shared.token
    }

    /// A nested group on the same pool, cancelled when this one is.
    pub fn group<T2: Send + 'static, E2: Send + 'static>(&self) -> TaskGroup<T2, E2> {
        TaskGroup::new(LoomArc::clone(&self.shared.pool), self.shared.token.child())
    }

    /// Adds a task. It runs with a [`TaskContext`] whose token is a child
    /// of the group's. A task the pool refuses (after shutdown, a full
    /// queue under `Reject`/`DropNewest`, or the pool's open circuit
    /// breaker) ends as `Task(Abandoned)`, `Task(Dropped)` or
    /// `Task(BreakerOpen)`.
    pub fn spawn<F>(&mut self, f: F)
    where
        F: FnOnce(&TaskContext) -> Result<T, E> + Send + 'static,
    {
        self.spawn_units(1, f);
    }

    /// Adds a task that takes `cost` units of the group's
    /// [`limit`](Self::limit) while it is in the pool, so that one heavy
    /// task can count as several light ones (the weighted semaphore).
    /// Waiting tasks start in the order added.
    ///
    /// # Errors
    /// A cost of 0, or above the group's limit (it could never start):
    /// the task is not added.
    pub fn spawn_with_cost<F>(&mut self, cost: usize, f: F) -> Result<(), crate::InvalidOption>
    where
        F: FnOnce(&TaskContext) -> Result<T, E> + Send + 'static,
    {
        if cost == 0 {
            return Err(crate::InvalidOption::new("cost", 0, "at least 1"));
        }
        if cost > self.shared.limit {
            return Err(crate::InvalidOption::new(
                "cost",
                cost,
                "at most the group's limit",
            ));
        }
        self.spawn_units(cost, f);
        Ok(())
    }

    fn spawn_units<F>(&mut self, cost: usize, f: F)
    where
        F: FnOnce(&TaskContext) -> Result<T, E> + Send + 'static,
    {
        let index = self.handles.len();
        let slot: LoomArc<FallibleSlot<T, E>> =
            LoomArc::new(Slot::with_token(self.shared.token.clone()));
        self.handles.push(JoinHandle::new(LoomArc::clone(&slot)));
        if let Some(breaker) = &self.shared.breaker {
            if !breaker.admit() {
                slot.complete(Err(TaskError::BreakerOpen));
                return;
            }
        }
        // Cancelling the group resolves the handle of a task not started
        // yet at once, wherever it waits.
        crate::task::slot::watch_token(&slot);
        let deadline = self
            .shared
            .timeout
            .and_then(|d| Instant::now().checked_add(d))
            .map_or(Deadline::None, Deadline::At);
        let shared = Arc::clone(&self.shared);
        let submit: Pending = Box::new(move || {
            let ticket = Ticket(Arc::clone(&shared), cost);
            let owner = Arc::clone(&shared);
            let mut f = Some(f);
            // One attempt (no retry policy), so the closure runs once.
            let body = move |cx: &TaskContext| -> Result<T, E> {
                let _ticket = &ticket;
                let f = f.take().expect("a group task runs once");
                let ok = match panic::catch_unwind(AssertUnwindSafe(|| f(cx))) {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(e),
                    Err(payload) => {
                        owner.failed(index, false);
                        panic::resume_unwind(payload)
                    }
                };
                owner.failed(index, ok.is_ok());
                ok
            };
            let plan = (!matches!(deadline, Deadline::None)).then(|| {
                Box::new(Plan {
                    policy: None,
                    attempts: Vec::new(),
                    clock: shared.pool.timers.clock.clone(),
                    deadline,
                    name: None,
                    shard: None,
                    seed: 0,
                    to_text: None,
                })
            });
            let task = Fallible {
                f: body,
                retry_if: |_: &E| false,
                slot: LoomArc::clone(&slot),
                plan,
            };
            // Through the group's own tenant, or, under the pool's rate
            // limit, the unnamed one.
            let tenant = match &shared.tenant {
                Some(id) => Some(Some(id.clone())),
                None => shared.pool.config.rate_limit.map(|_| None),
            };
            let submitted = match tenant {
                Some(tenant) => crate::tenants::Tenants::submit(
                    &shared.pool,
                    task,
                    crate::tenants::Ask {
                        tenant,
                        priority: crate::Priority::Normal,
                        cost: 1,
                        shard: None,
                    },
                    Wait::Policy,
                    Some(&shared.token),
                ),
                None => shared.pool.submit(task, Wait::Policy, None).map(drop),
            };
            if let Err(refused) = submitted {
                let why = match refused {
                    SubmitError::ShutDown(_) => TaskError::Abandoned,
                    SubmitError::BreakerOpen(_) => TaskError::BreakerOpen,
                    _ => TaskError::Dropped,
                };
                // Dropping the task drops its ticket: the next one goes.
                drop(refused);
                slot.complete(Err(why));
            }
        });
        self.shared.admit(cost, submit);
    }

    /// Waits for every task and returns their values in submission order,
    /// or the first error (by time) — in a fail-fast group, the error that
    /// cancelled the rest. On a worker thread it helps while it waits.
    ///
    /// # Errors
    /// The first task's error (`Failed`) or failure to finish (`Task`).
    pub fn wait(self) -> Result<Vec<T>, GroupError<E>> {
        let first = Arc::clone(&self.shared);
        let mut results = self.join_all();
        match first.first_error.load(Ordering::Relaxed) {
            usize::MAX => results.into_iter().collect(),
            index => Err(results
                .swap_remove(index)
                .err()
                .expect("the first error is an error")),
        }
    }

    /// Waits for every task and returns every result, in submission order.
    pub fn wait_all(self) -> Vec<Result<T, GroupError<E>>> {
        self.join_all()
    }

    fn join_all(self) -> Vec<Result<T, GroupError<E>>> {
        self.handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(failed)) => Err(GroupError::Failed(
                    failed.into_errors().pop().expect("one attempt failed"),
                )),
                Err(e) => Err(GroupError::Task(e)),
            })
            .collect()
    }
}
