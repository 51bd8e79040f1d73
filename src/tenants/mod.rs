//! Tenants: weighted fair queueing across tenants, per-tenant concurrency
//! (in cost units), rate limits, queue limits and priority lanes.
//!
//! # The window
//! A task with a tenant (or a priority, or in a pool with a rate limit) is
//! admitted at once — it takes its `queued` place in the admission word,
//! so capacity, `wait_idle`, shutdown and the counts see it as queued —
//! but is *held* in its tenant's queue. Held tasks are let through to the
//! pool's queues only while fewer than one per live worker are there or
//! running (the window): so what waits, waits in its tenant's queue, where
//! the order is fair, and not in the pool's FIFO queues.
//!
//! # Fair order
//! Deficit round robin over the tenants with a task ready: the tenant at
//! the ring's front, given `weight` units of credit each time round, lets
//! tasks through while its credit covers their cost. Weight 3 against
//! weight 1 therefore gets 3 tasks through for every 1 while both are
//! backlogged. A tenant at its concurrency limit, or waiting for its rate
//! limit's refill, leaves the ring and comes back when a task of its ends
//! or the refill is due; an idle tenant is not in the ring at all. Each
//! step is O(1) per task (a rotation per tenant that lacks credit).
//!
//! # Idle tenants
//! A tenant created on first use, with nothing queued or running and a
//! full bucket, is forgotten (its figures go to `tenants_other`); one the
//! user configured stays.
//!
//! # Refills
//! A tenant waiting for tokens is put on this module's timer heap; a
//! driver thread (started by the first such wait) sleeps until the next
//! refill is due, polling every millisecond under a user's clock as the
//! timing wheel's driver does.

mod bucket;
mod cancel;
#[cfg(not(loom))]
mod driver;
mod held;
mod queue;

use crate::error::{InvalidOption, SubmitError, TaskError};
use crate::loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::{Arc, Condvar, Mutex};
use crate::metrics::TenantMetrics;
use crate::sched::config::Backpressure;
use crate::sched::held::HeldRefusal;
use crate::sched::tenancy::{Priority, RateLimit, TenantConfig};
use crate::sched::{Registry, Wait};
use crate::task::job::{Hold, Outcome, Runnable, TaskJob};
use crate::task::CancelToken;
use crate::time::clock::TimerClock;
use bucket::Bucket;
use queue::{State, Waiting};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc as StdArc;

/// The unnamed tenant: tasks with a priority but no tenant, and every
/// task of a pool with a rate limit.
const DEFAULT_TENANT: u64 = 0x9e37_79b9_7f4a_7c15;

/// Who a task belongs to, as the builder found it.
#[derive(Clone, Debug)]
pub(crate) struct TenantId {
    pub(crate) hash: u64,
    pub(crate) name: StdArc<str>,
}

impl TenantId {
    pub(crate) fn of<T: std::hash::Hash + std::fmt::Display + ?Sized>(t: &T) -> Self {
        // Fixed keys: a tenant's identity must not depend on the process.
        TenantId {
            hash: ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(t),
            name: t.to_string().into(),
        }
    }

    fn unnamed() -> Self {
        TenantId {
            hash: DEFAULT_TENANT,
            name: "(none)".into(),
        }
    }
}

/// The tenants of one pool (held by its registry, made on first use).
pub(crate) struct Tenants {
    /// The pool, for a job coming off the timing wheel (whose caller has
    /// no `Arc` to hand) to be let through at once.
    #[cfg(not(loom))]
    registry: std::sync::Weak<Registry>,
    state: Mutex<State>,
    wake: Condvar,
    /// Signalled when tasks leave a queue (submitters waiting under
    /// `Block` look again).
    room: Condvar,
    defaults: TenantConfig,
    pool_rate: Option<RateLimit>,
    clock: TimerClock,
    /// Per shard: keyed tasks of the unnamed tenant waiting in its queue
    /// or being put into their shard. While a shard's count is above zero,
    /// a keyed task with neither tenant, priority nor cost waits in that
    /// queue too, behind them, instead of going straight to the shard: so
    /// a key's tasks keep their order whichever of those options each has.
    /// Raised under the lock as such a task is queued, lowered once it is
    /// in its shard (SeqCst: a submitter that reads 0 sees the shard push
    /// that came before the lowering).
    unnamed_keyed: Box<[AtomicUsize]>,
}

/// What a submission asks for.
#[derive(Clone, Debug)]
pub(crate) struct Ask {
    pub(crate) tenant: Option<TenantId>,
    pub(crate) priority: Priority,
    pub(crate) cost: u32,
    pub(crate) shard: Option<usize>,
}

impl Ask {
    /// What a task asks for by default: no tenant, the normal lane, one
    /// unit; in `shard` if keyed.
    pub(crate) fn plain(shard: Option<usize>) -> Self {
        Ask {
            tenant: None,
            priority: Priority::Normal,
            cost: 1,
            shard,
        }
    }

    /// Where the task waits when it comes off the timing wheel.
    pub(crate) fn hold(&self, id: &TenantId) -> Hold {
        Hold {
            tenant: id.hash,
            name: StdArc::clone(&id.name),
            lane: self.priority.lane() as u8 | if self.shard.is_some() { KEYED } else { 0 },
            cost: self.cost,
            token: None,
        }
    }

    /// The tenant, the unnamed one if none was given.
    pub(crate) fn tenant_id(&self) -> TenantId {
        self.tenant.clone().unwrap_or_else(TenantId::unnamed)
    }
}

impl Tenants {
    fn new(registry: &Arc<Registry>) -> Self {
        let now = registry.timers.clock.now();
        let pool_rate = registry.config.rate_limit;
        Tenants {
            #[cfg(not(loom))]
            registry: Arc::downgrade(registry),
            state: Mutex::new(State {
                slots: HashMap::new(),
                generation: 0,
                ring: VecDeque::new(),
                in_window: 0,
                pool_bucket: pool_rate.as_ref().map(|r| Bucket::full(r, now)),
                pool_refilling: false,
                timers: BinaryHeap::new(),
                idle: VecDeque::new(),
                forgotten: TenantMetrics::new("(other)".into(), 0),
                transient: HashMap::new(),
                closed: false,
                driver: false,
            }),
            wake: Condvar::new(),
            room: Condvar::new(),
            defaults: registry.config.tenant_defaults.clone(),
            pool_rate,
            clock: registry.timers.clock.clone(),
            unnamed_keyed: (0..registry.shards.len())
                .map(|_| AtomicUsize::new(0))
                .collect(),
        }
    }

    /// The pool's tenants, made on first use.
    pub(crate) fn of(registry: &Arc<Registry>) -> &Tenants {
        let held = registry.held_or_init(|| StdArc::new(Tenants::new(registry)));
        held.as_any()
            .downcast_ref::<Tenants>()
            .expect("the held layer is the tenants")
    }

    /// Sets a tenant's configuration (creating it).
    pub(crate) fn configure(
        registry: &Arc<Registry>,
        id: TenantId,
        config: TenantConfig,
    ) -> Result<(), InvalidOption> {
        config.validate()?;
        let this = Self::of(registry);
        let now = this.clock.now();
        let mut st = this.state.lock();
        let i = st.slot_of(&id, &this.defaults, now);
        let t = st.slots.get_mut(&i).expect("a live tenant");
        if t.config.rate != config.rate {
            t.bucket = config.rate.as_ref().map(|r| Bucket::full(r, now));
            // Its refill under the old rate no longer applies: the new
            // bucket is full. (The old timer, when it fires, finds the
            // tenant back in the ring; `pick` re-checks the bucket.)
            t.refilling = false;
        }
        t.figures.weight = config.weight;
        t.config = config;
        t.configured = true;
        // The new limits hold now, not when its next task ends or its old
        // refill comes due: back in the ring with what it has queued, and
        // through what the window allows.
        if t.queued > 0 && !t.in_ring && !t.refilling {
            t.in_ring = true;
            st.ring.push_back(i);
        }
        let out = st.pump(this, registry, now);
        let start_driver = st.needs_driver();
        drop(st);
        // A larger queue capacity: submitters blocked for room look again.
        this.room.notify_all();
        this.after(registry, out, start_driver);
        Ok(())
    }

    /// Sets a tenant's configuration without keeping it: the tenant is
    /// forgotten once idle, like one made on first use, and made again
    /// with this configuration by its next task (a group's own tenant).
    pub(crate) fn configure_transient(
        registry: &Arc<Registry>,
        id: TenantId,
        config: TenantConfig,
    ) {
        let this = Self::of(registry);
        let now = this.clock.now();
        let mut st = this.state.lock();
        st.transient.insert(id.hash, config.clone());
        if let Some(t) = st.slots.get_mut(&id.hash) {
            t.bucket = config.rate.as_ref().map(|r| Bucket::full(r, now));
            t.config = config;
        }
    }

    /// Withdraws a transient configuration (its group is gone).
    pub(crate) fn withdraw_transient(registry: &Arc<Registry>, id: &TenantId) {
        Self::of(registry).state.lock().transient.remove(&id.hash);
    }

    /// Checks a task's cost against its tenant's capacity.
    pub(crate) fn check_cost(registry: &Arc<Registry>, ask: &Ask) -> Result<(), InvalidOption> {
        if ask.cost == 0 {
            return Err(InvalidOption::new("cost", 0, "at least 1"));
        }
        let this = Self::of(registry);
        let id = ask.tenant.clone().unwrap_or_else(TenantId::unnamed);
        let st = this.state.lock();
        let config = st
            .slots
            .get(&id.hash)
            .map(|t| &t.config)
            .or_else(|| st.transient.get(&id.hash))
            .unwrap_or(&this.defaults);
        let cap = config.max_concurrency;
        match cap {
            Some(cap) if ask.cost > cap => Err(InvalidOption::new(
                "cost",
                ask.cost,
                "at most its tenant's max_concurrency",
            )),
            _ => Ok(()),
        }
    }

    /// Accepts `body` into its tenant's queue, then lets through what the
    /// window allows. The pool's circuit breaker, if any, is passed first,
    /// as by every task.
    pub(crate) fn submit<R: Runnable>(
        registry: &Arc<Registry>,
        body: R,
        ask: Ask,
        wait: Wait,
        token: Option<&CancelToken>,
    ) -> Result<(), SubmitError<R>> {
        if registry.breaker_refuses() {
            return Err(SubmitError::BreakerOpen(body));
        }
        let submitted = Self::hold(registry, body, ask, wait, token);
        if submitted.is_err() {
            registry.breaker_no_outcome();
        }
        submitted
    }

    /// `submit` past the breaker.
    fn hold<R: Runnable>(
        registry: &Arc<Registry>,
        body: R,
        ask: Ask,
        wait: Wait,
        token: Option<&CancelToken>,
    ) -> Result<(), SubmitError<R>> {
        let this = Self::of(registry);
        let now = this.clock.now();
        let id = ask.tenant.clone().unwrap_or_else(TenantId::unnamed);
        let mut st = this.state.lock();
        let i = st.slot_of(&id, &this.defaults, now);
        let t = st.slots.get_mut(&i).expect("a live tenant");
        t.figures.submitted += 1;
        // A non-blocking submission does not wait for a refill.
        if wait == Wait::Never {
            let pool_ready = match (&mut st.pool_bucket, &this.pool_rate) {
                (Some(b), Some(r)) => b.ready(r, now),
                _ => true,
            };
            let t = st.slots.get_mut(&i).expect("a live tenant");
            let own_ready = match (&mut t.bucket, &t.config.rate) {
                (Some(b), Some(r)) => b.ready(r, now) && t.queued == 0,
                _ => true,
            };
            if !(pool_ready && own_ready) {
                t.figures.rejected += 1;
                drop(st);
                registry.count_refused_held();
                return Err(SubmitError::RateLimited(body));
            }
        }
        // A full queue under `Block`: wait for room (a worker helps
        // meanwhile instead of sleeping).
        let full = |st: &State| {
            st.slots.get(&i).is_some_and(|t| {
                t.queued >= t.config.capacity && t.config.backpressure == Backpressure::Block
            })
        };
        if full(&st) {
            let deadline = match wait {
                Wait::Never => Some(now),
                Wait::Until(d) => Some(d),
                Wait::Policy => None,
            };
            while full(&st) {
                if st.closed {
                    drop(st);
                    registry.count_refused_held();
                    return Err(SubmitError::ShutDown(body));
                }
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    let t = st.slots.get_mut(&i).expect("a full tenant is live");
                    t.figures.rejected += 1;
                    drop(st);
                    registry.count_refused_held();
                    return Err(match wait {
                        Wait::Never => SubmitError::Full(body),
                        _ => SubmitError::Timeout(body),
                    });
                }
                match registry.own_worker() {
                    Some(worker) => {
                        drop(st);
                        worker.help_once();
                        st = this.state.lock();
                    }
                    None => {
                        let until = deadline.unwrap_or_else(|| {
                            std::time::Instant::now() + std::time::Duration::from_millis(100)
                        });
                        this.room.wait_until(&mut st, until);
                    }
                }
            }
            // The tenant may have been forgotten and made again meanwhile.
            st.slot_of(&id, &this.defaults, now);
        }
        let t = st.slots.get_mut(&i).expect("a live tenant");
        let mut evict = None;
        if t.queued >= t.config.capacity {
            match t.config.backpressure {
                crate::Backpressure::DropNewest => {
                    t.figures.dropped += 1;
                    drop(st);
                    registry.count_dropped_unheld();
                    body.discard(TaskError::Dropped);
                    return Ok(());
                }
                crate::Backpressure::DropOldest => {
                    // The oldest of the lowest lane that has one.
                    let lane = (0..3).rev().find(|&l| !t.lanes[l].is_empty());
                    evict = lane.and_then(|l| t.lanes[l].pop_front().map(|w| (l, w)));
                    if let Some((_, w)) = &evict {
                        t.left(w);
                        t.queued -= 1;
                        t.figures.queued -= 1;
                        t.figures.dropped += 1;
                        if w.bare.is_none() {
                            // Discarding it ends its ticket as if it had
                            // been let through: count it so.
                            t.running += w.cost;
                            st.in_window += 1;
                        }
                    }
                }
                _ => {
                    t.figures.rejected += 1;
                    drop(st);
                    registry.count_refused_held();
                    return Err(SubmitError::Full(body));
                }
            }
        }
        match registry.admit_held() {
            Ok(()) => {}
            Err(refusal) => {
                let t = st.slots.get_mut(&i).expect("a live tenant");
                t.figures.rejected += 1;
                if let Some((lane, w)) = evict {
                    // Nothing was added: the evicted one keeps its place.
                    let ticketed = w.bare.is_none();
                    if ticketed {
                        t.running -= w.cost;
                    }
                    t.queued += 1;
                    t.figures.queued += 1;
                    t.figures.dropped -= 1;
                    t.put_back(lane, w);
                    if ticketed {
                        st.in_window -= 1;
                    }
                }
                return Err(match refusal {
                    HeldRefusal::Full => SubmitError::Full(body),
                    HeldRefusal::Closed => SubmitError::ShutDown(body),
                });
            }
        }
        let ticket = Ticket {
            registry: Arc::clone(registry),
            hold: ask.hold(&id),
        };
        let job = TaskJob::into_job_ref(Tenanted { body, ticket });
        let counted = this.count_in(i, ask.shard);
        let lane = st.push(
            i,
            ask.priority.lane(),
            Waiting {
                job,
                shard: ask.shard,
                cost: ask.cost,
                since: now,
                seq: 0,
                bare: None,
                counted,
                watch: None,
            },
        );
        // A keyed task keeps its place in its key's order.
        let cancelled = token
            .filter(|_| ask.shard.is_none())
            .and_then(|token| this.watch_last(&mut st, i, lane, token, now));
        let mut out = st.pump(this, registry, now);
        out.extend(cancelled);
        let start_driver = st.needs_driver();
        drop(st);
        if let Some((_, w)) = evict {
            registry.drop_held(w.job);
            this.count_out(&w.shard, w.counted);
        }
        this.after(registry, out, start_driver);
        Ok(())
    }

    /// A task let through ended (or was discarded): its window place and
    /// cost units come back.
    fn finished(registry: &Arc<Registry>, slot: u64, cost: u32) {
        let this = Self::of(registry);
        let now = this.clock.now();
        let mut st = this.state.lock();
        st.in_window = st.in_window.saturating_sub(1);
        // The tenant is there: one with a task let through and not ended
        // is never forgotten.
        if let Some(t) = st.slots.get_mut(&slot) {
            t.figures.completed += 1;
            t.running = t.running.saturating_sub(cost);
            t.figures.running = u64::from(t.running);
            if t.queued > 0 && !t.in_ring && !t.refilling {
                t.in_ring = true;
                st.ring.push_back(slot);
            }
            st.forget_if_idle(slot, now);
        }
        let out = st.pump(this, registry, now);
        let start_driver = st.needs_driver();
        drop(st);
        this.after(registry, out, start_driver);
    }

    /// Queues what the pump let through, outside the lock; starts the
    /// refill driver if it is needed and not running.
    fn after(&self, registry: &Arc<Registry>, out: Vec<Waiting>, start_driver: bool) {
        if !out.is_empty() {
            self.room.notify_all();
        }
        for w in out {
            self.release(registry, w);
        }
        if start_driver {
            self.start_driver(registry);
        } else {
            self.wake.notify_one();
        }
    }

    /// Queues a task let through (a job back from the timing wheel gets
    /// its ticket now).
    fn release(&self, registry: &Arc<Registry>, w: Waiting) {
        let job = match w.bare {
            Some(hold) => TaskJob::into_job_ref(Tenanted {
                body: w.job,
                ticket: Ticket {
                    registry: Arc::clone(registry),
                    hold: *hold,
                },
            }),
            None => w.job,
        };
        registry.release_held(job, w.shard);
        self.count_out(&w.shard, w.counted);
    }

    /// Whether a task of tenant slot `i` and shard `shard` is counted in
    /// `unnamed_keyed` (then counts it in). Called under the lock.
    fn count_in(&self, i: u64, shard: Option<usize>) -> bool {
        match shard {
            Some(shard) if i == DEFAULT_TENANT => {
                self.unnamed_keyed[shard].fetch_add(1, SeqCst);
                true
            }
            _ => false,
        }
    }

    /// A counted task is in its shard, or gone.
    fn count_out(&self, shard: &Option<usize>, counted: bool) {
        if let (Some(shard), true) = (shard, counted) {
            self.unnamed_keyed[*shard].fetch_sub(1, SeqCst);
        }
    }

    /// The refill driver: sleeps until the next due refill, then brings
    /// the tenant back into the ring and lets through what it can.
    #[cfg(not(loom))]
    fn start_driver(&self, registry: &Arc<Registry>) {
        let weak = Arc::downgrade(registry);
        let held = StdArc::clone(registry.held().expect("the tenants exist"));
        let name = format!("{}-tenants", registry.config.thread_name);
        let started = std::thread::Builder::new().name(name).spawn(move || {
            let _abort = crate::sched::abort::AbortOnPanic("the tenants' driver");
            driver::drive(&weak, &held);
        });
        if started.is_err() {
            // Without a driver, refills wait for the next submission or
            // completion, which tries to start one again.
            self.state.lock().driver = false;
        }
    }

    #[cfg(loom)]
    fn start_driver(&self, _registry: &Arc<Registry>) {}
}

/// A let-through task's claim on its tenant: given back when it ends.
struct Ticket {
    registry: Arc<Registry>,
    /// Its tenant, lane and cost: where a retry of it waits next.
    hold: Hold,
}

impl Ticket {
    /// An attempt ended: a retry due later goes back to this tenant's
    /// queue (not for a keyed task, whose retry holds its shard instead),
    /// and the ticket comes back.
    fn end(self, mut outcome: Outcome) -> Outcome {
        if let Outcome::Again(again) = &mut outcome {
            if again.retry && self.hold.lane & KEYED == 0 {
                again.hold = Some(Box::new(self.hold.clone()));
            }
        }
        Tenants::finished(&self.registry, self.hold.tenant, self.hold.cost);
        outcome
    }
}

/// The mark of a keyed task's hold, beside its lane: its retries are not
/// held again.
const KEYED: u8 = 0x80;

/// A tenant's task: the body, then its ticket back. A job back from the
/// timing wheel (a delayed task, a retry) is wrapped again, as a `JobRef`
/// body, when let through.
struct Tenanted<R> {
    body: R,
    ticket: Ticket,
}

impl<R: Runnable> Runnable for Tenanted<R> {
    fn run(self) -> Outcome {
        let outcome = self.body.run();
        self.ticket.end(outcome)
    }

    fn discard(self, why: TaskError) {
        self.body.discard(why);
        self.ticket.end(Outcome::Done);
    }

    fn cancelled(&self) -> bool {
        self.body.cancelled()
    }
}
