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

use crate::error::{InvalidOption, SubmitError, TaskError};
use crate::loom::sync::{Arc, Condvar, Mutex};
use crate::metrics::{Histogram, TenantMetrics};
use crate::sched::held::{Held, HeldRefusal};
use crate::sched::tenancy::{Priority, RateLimit, TenantConfig};
use crate::sched::{Registry, Wait};
use crate::task::job::{JobRef, Outcome, Runnable, TaskJob};
use crate::time::clock::TimerClock;
use bucket::Bucket;
use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc as StdArc;
use std::time::Instant;

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
        use std::hash::{BuildHasher, Hasher};
        // Fixed keys: a tenant's identity must not depend on the process.
        let mut h = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
        t.hash(&mut h);
        TenantId {
            hash: h.finish(),
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

/// A held task.
struct Waiting {
    job: JobRef,
    shard: Option<usize>,
    cost: u32,
    since: Instant,
    /// Its place in its tenant's arrival order (ties of `since`).
    seq: u64,
}

struct Tenant {
    config: TenantConfig,
    configured: bool,
    lanes: [VecDeque<Waiting>; 3],
    queued: usize,
    /// Tasks ever queued (the next one's `seq`).
    arrivals: u64,
    running: u32,
    deficit: u64,
    in_ring: bool,
    /// Waiting on the timer heap for its refill.
    refilling: bool,
    bucket: Option<Bucket>,
    figures: TenantMetrics,
    /// Bumped when the slot is reused, so that stale timers and tickets
    /// of a forgotten tenant are recognised.
    generation: u64,
}

impl Tenant {
    fn new(
        id: &TenantId,
        config: TenantConfig,
        configured: bool,
        now: Instant,
        generation: u64,
    ) -> Self {
        let figures = TenantMetrics::new(id.name.to_string(), config.weight);
        Tenant {
            bucket: config.rate.as_ref().map(|r| Bucket::full(r, now)),
            config,
            configured,
            lanes: Default::default(),
            queued: 0,
            arrivals: 0,
            running: 0,
            deficit: 0,
            in_ring: false,
            refilling: false,
            figures,
            generation,
        }
    }

    /// The lane whose head goes next: the highest non-empty lane, unless
    /// a lower lane's head has waited its aging (then the longest-waiting
    /// aged head).
    fn next_lane(&self, now: Instant) -> Option<usize> {
        let aged = (0..3)
            .filter_map(|l| self.lanes[l].front().map(|w| (l, w)))
            .filter(|(_, w)| now.saturating_duration_since(w.since) >= self.config.aging)
            .min_by_key(|(_, w)| (w.since, w.seq))
            .map(|(l, _)| l);
        aged.or_else(|| (0..3).find(|&l| !self.lanes[l].is_empty()))
    }

    fn idle(&mut self, now: Instant) -> bool {
        self.queued == 0
            && self.running == 0
            && !self.configured
            && match (&mut self.bucket, &self.config.rate) {
                (Some(b), Some(r)) => b.is_full(r, now),
                _ => true,
            }
    }
}

/// What waits on the timer heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Tenant(u64, u64),
    Pool,
}

struct State {
    /// The live tenants, by the hash of their identity.
    slots: HashMap<u64, Tenant>,
    /// Stamps each new tenant, so that timers and tickets of a forgotten
    /// one are recognised.
    generation: u64,
    ring: VecDeque<u64>,
    /// Let through and not yet ended.
    in_window: usize,
    pool_bucket: Option<Bucket>,
    pool_refilling: bool,
    timers: BinaryHeap<Reverse<(Instant, Due)>>,
    /// Idle tenants whose bucket was not yet full.
    idle: VecDeque<(u64, u64)>,
    /// Figures of forgotten tenants.
    forgotten: TenantMetrics,
    closed: bool,
    driver: bool,
}

/// The tenants of one pool (held by its registry, made on first use).
pub(crate) struct Tenants {
    state: Mutex<State>,
    wake: Condvar,
    defaults: TenantConfig,
    pool_rate: Option<RateLimit>,
    clock: TimerClock,
}

/// What a submission asks for.
#[derive(Clone, Debug)]
pub(crate) struct Ask {
    pub(crate) tenant: Option<TenantId>,
    pub(crate) priority: Priority,
    pub(crate) cost: u32,
    pub(crate) shard: Option<usize>,
}

impl Tenants {
    fn new(registry: &Registry) -> Self {
        let now = registry.timers.clock.now();
        let pool_rate = registry.config.rate_limit;
        Tenants {
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
                closed: false,
                driver: false,
            }),
            wake: Condvar::new(),
            defaults: registry.config.tenant_defaults.clone(),
            pool_rate,
            clock: registry.timers.clock.clone(),
        }
    }

    /// The pool's tenants, made on first use.
    pub(crate) fn of(registry: &Registry) -> &Tenants {
        let held = registry.held_or_init(|| StdArc::new(Tenants::new(registry)));
        held.as_any()
            .downcast_ref::<Tenants>()
            .expect("the held layer is the tenants")
    }

    /// Sets a tenant's configuration (creating it).
    pub(crate) fn configure(
        registry: &Registry,
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
        }
        t.figures.weight = config.weight;
        t.config = config;
        t.configured = true;
        Ok(())
    }

    /// Checks a task's cost against its tenant's capacity.
    pub(crate) fn check_cost(registry: &Registry, ask: &Ask) -> Result<(), InvalidOption> {
        if ask.cost == 0 {
            return Err(InvalidOption::new("cost", 0, "at least 1"));
        }
        let this = Self::of(registry);
        let id = ask.tenant.clone().unwrap_or_else(TenantId::unnamed);
        let st = this.state.lock();
        let cap = st
            .slots
            .get(&id.hash)
            .map_or(this.defaults.max_concurrency, |t| t.config.max_concurrency);
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
    /// window allows.
    pub(crate) fn submit<R: Runnable>(
        registry: &Arc<Registry>,
        body: R,
        ask: Ask,
        wait: Wait,
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
                        // Discarding it ends its ticket as if it had been
                        // let through: count it so.
                        t.queued -= 1;
                        t.figures.queued -= 1;
                        t.figures.dropped += 1;
                        t.running += w.cost;
                        st.in_window += 1;
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
                    t.running -= w.cost;
                    t.queued += 1;
                    t.figures.queued += 1;
                    t.figures.dropped -= 1;
                    t.lanes[lane].push_front(w);
                    st.in_window -= 1;
                }
                return Err(match refusal {
                    HeldRefusal::Full => SubmitError::Full(body),
                    HeldRefusal::Closed => SubmitError::ShutDown(body),
                });
            }
        }
        let generation = st.slots.get(&i).expect("a live tenant").generation;
        let ticket = Ticket {
            registry: Arc::clone(registry),
            slot: i,
            generation,
            cost: ask.cost,
        };
        let job = TaskJob::into_job_ref(Tenanted { body, ticket });
        let t = st.slots.get_mut(&i).expect("a live tenant");
        t.lanes[ask.priority.lane()].push_back(Waiting {
            job,
            shard: ask.shard,
            cost: ask.cost,
            since: now,
            seq: t.arrivals,
        });
        t.arrivals += 1;
        t.queued += 1;
        t.figures.queued += 1;
        if !t.in_ring && !t.refilling {
            t.in_ring = true;
            st.ring.push_back(i);
        }
        let out = st.pump(this, registry, now);
        let start_driver = st.needs_driver();
        drop(st);
        if let Some((_, w)) = evict {
            registry.drop_held(w.job);
        }
        this.after(registry, out, start_driver);
        Ok(())
    }

    /// A task let through ended (or was discarded): its window place and
    /// cost units come back.
    fn finished(registry: &Arc<Registry>, slot: u64, generation: u64, cost: u32) {
        let this = Self::of(registry);
        let now = this.clock.now();
        let mut st = this.state.lock();
        st.in_window = st.in_window.saturating_sub(1);
        if let Some(t) = st.slots.get_mut(&slot) {
            if t.generation == generation {
                t.running = t.running.saturating_sub(cost);
                t.figures.running = u64::from(t.running);
                if t.queued > 0 && !t.in_ring && !t.refilling {
                    t.in_ring = true;
                    st.ring.push_back(slot);
                }
                st.forget_if_idle(slot, now);
            }
        }
        let out = st.pump(this, registry, now);
        let start_driver = st.needs_driver();
        drop(st);
        this.after(registry, out, start_driver);
    }

    /// Queues what the pump let through, outside the lock; starts the
    /// refill driver if it is needed and not running.
    fn after(
        &self,
        registry: &Arc<Registry>,
        out: Vec<(JobRef, Option<usize>)>,
        start_driver: bool,
    ) {
        for (job, shard) in out {
            registry.release_held(job, shard);
        }
        if start_driver {
            self.start_driver(registry);
        } else {
            self.wake.notify_one();
        }
    }

    /// The refill driver: sleeps until the next due refill, then brings
    /// the tenant back into the ring and lets through what it can.
    #[cfg(not(loom))]
    fn start_driver(&self, registry: &Arc<Registry>) {
        let weak = Arc::downgrade(registry);
        let held = StdArc::clone(registry.held().expect("the tenants exist"));
        let name = format!("{}-tenants", registry.config.thread_name);
        let started = std::thread::Builder::new()
            .name(name)
            .spawn(move || drive(&weak, &held));
        if started.is_err() {
            // Without a driver, refills wait for the next submission or
            // completion, which tries to start one again.
            self.state.lock().driver = false;
        }
    }

    #[cfg(loom)]
    fn start_driver(&self, _registry: &Arc<Registry>) {}
}

/// The driver's loop: it ends when the tenants close (shutdown) or the
/// pool is gone.
#[cfg(not(loom))]
fn drive(weak: &std::sync::Weak<Registry>, held: &StdArc<dyn Held>) {
    use std::time::Duration;
    let this = held
        .as_any()
        .downcast_ref::<Tenants>()
        .expect("the held layer is the tenants");
    let mut st = this.state.lock();
    loop {
        if st.closed || weak.strong_count() == 0 {
            st.driver = false;
            return;
        }
        let now = this.clock.now();
        let next = st.timers.peek().map(|Reverse((at, _))| *at);
        if next.is_some_and(|at| at <= now) {
            let Some(registry) = weak.upgrade() else {
                st.driver = false;
                return;
            };
            let out = st.fire_due(this, &registry, now);
            drop(st);
            for (job, shard) in out {
                registry.release_held(job, shard);
            }
            drop(registry);
            st = this.state.lock();
            continue;
        }
        // Under a user's clock, poll each millisecond; else sleep until
        // the next refill (at most a second, to notice a dropped pool).
        let wait = match next {
            _ if this.clock.is_manual() => Duration::from_millis(1),
            Some(at) => at
                .saturating_duration_since(now)
                .min(Duration::from_secs(1)),
            None => Duration::from_secs(1),
        };
        this.wake
            .wait_until(&mut st, std::time::Instant::now() + wait);
    }
}

impl State {
    /// The slot of `id`'s tenant, made with the defaults if new.
    fn slot_of(&mut self, id: &TenantId, defaults: &TenantConfig, now: Instant) -> u64 {
        if !self.slots.contains_key(&id.hash) {
            self.generation += 1;
            let t = Tenant::new(id, defaults.clone(), false, now, self.generation);
            self.slots.insert(id.hash, t);
        }
        id.hash
    }

    /// Forgets slot `i`'s tenant if it is idle; an idle one whose bucket
    /// is not full yet is looked at again later.
    fn forget_if_idle(&mut self, i: u64, now: Instant) {
        let Some(t) = self.slots.get_mut(&i) else {
            return;
        };
        if t.queued > 0 || t.running > 0 || t.configured {
            return;
        }
        if !t.idle(now) {
            let generation = t.generation;
            self.idle.push_back((i, generation));
            return;
        }
        let t = self.slots.remove(&i).expect("checked above");
        self.forgotten.add(&t.figures);
        // Memory goes back as the tenants go.
        if self.slots.capacity() > 64 && self.slots.len() * 4 < self.slots.capacity() {
            self.slots.shrink_to(self.slots.len() * 2);
        }
    }

    /// Looks at up to two idle tenants waiting to be forgotten.
    fn sweep(&mut self, now: Instant) {
        for _ in 0..2 {
            let Some((i, generation)) = self.idle.pop_front() else {
                return;
            };
            if self
                .slots
                .get(&i)
                .is_some_and(|t| t.generation == generation)
            {
                self.forget_if_idle(i, now);
            }
        }
    }

    fn needs_driver(&mut self) -> bool {
        if self.timers.is_empty() || self.driver || self.closed {
            return false;
        }
        self.driver = true;
        true
    }

    /// Lets tasks through while the window has room.
    fn pump(
        &mut self,
        this: &Tenants,
        registry: &Registry,
        now: Instant,
    ) -> Vec<(JobRef, Option<usize>)> {
        let window = registry.live_workers().max(1);
        let mut out = Vec::new();
        while self.in_window < window {
            match self.pick(this, now) {
                Some(w) => {
                    self.in_window += 1;
                    out.push((w.job, w.shard));
                }
                None => break,
            }
        }
        self.sweep(now);
        out
    }

    /// The next task by deficit round robin, or none.
    fn pick(&mut self, this: &Tenants, now: Instant) -> Option<Waiting> {
        if self.closed {
            return None;
        }
        while let Some(&i) = self.ring.front() {
            let t = self
                .slots
                .get_mut(&i)
                .expect("a tenant in the ring is live");
            let Some(lane) = t.next_lane(now) else {
                // Nothing queued (dropped): out of the ring.
                t.in_ring = false;
                t.deficit = 0;
                self.ring.pop_front();
                continue;
            };
            let cost = t.lanes[lane].front().expect("a non-empty lane").cost;
            if t.config
                .max_concurrency
                .is_some_and(|cap| t.running + cost > cap)
            {
                // Back when one of its tasks ends.
                t.in_ring = false;
                self.ring.pop_front();
                continue;
            }
            if let (Some(b), Some(r)) = (&mut t.bucket, &t.config.rate) {
                if !b.ready(r, now) {
                    let at = b.next_token(r);
                    t.in_ring = false;
                    t.refilling = true;
                    t.figures.rate_limited += 1;
                    let generation = t.generation;
                    self.ring.pop_front();
                    self.timers.push(Reverse((at, Due::Tenant(i, generation))));
                    continue;
                }
            }
            if let (Some(b), Some(r)) = (&mut self.pool_bucket, &this.pool_rate) {
                if !b.ready(r, now) {
                    if !self.pool_refilling {
                        self.pool_refilling = true;
                        t.figures.rate_limited += 1;
                        self.timers.push(Reverse((b.next_token(r), Due::Pool)));
                    }
                    return None;
                }
            }
            if t.deficit < u64::from(cost) {
                t.deficit += u64::from(t.config.weight);
                self.ring.rotate_left(1);
                continue;
            }
            // Through.
            let w = t.lanes[lane].pop_front().expect("a non-empty lane");
            t.deficit -= u64::from(cost);
            t.queued -= 1;
            t.figures.queued -= 1;
            t.running += cost;
            t.figures.running = u64::from(t.running);
            t.figures.dispatched += 1;
            t.figures
                .queue_wait
                .record_ns(now.saturating_duration_since(w.since).as_nanos() as u64);
            if let (Some(b), Some(_)) = (&mut t.bucket, &t.config.rate) {
                b.take();
            }
            if t.queued == 0 {
                t.in_ring = false;
                t.deficit = 0;
                self.ring.pop_front();
            }
            if let Some(b) = &mut self.pool_bucket {
                b.take();
            }
            return Some(w);
        }
        None
    }

    /// Brings back the tenants (and the pool) whose refill is due, and
    /// lets through what it can.
    #[cfg(not(loom))]
    fn fire_due(
        &mut self,
        this: &Tenants,
        registry: &Registry,
        now: Instant,
    ) -> Vec<(JobRef, Option<usize>)> {
        while let Some(Reverse((at, due))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match due {
                Due::Pool => self.pool_refilling = false,
                Due::Tenant(i, generation) => {
                    if let Some(t) = self
                        .slots
                        .get_mut(&i)
                        .filter(|t| t.generation == generation)
                    {
                        t.refilling = false;
                        if t.queued > 0 && !t.in_ring {
                            t.in_ring = true;
                            self.ring.push_back(i);
                        }
                    }
                }
            }
        }
        self.pump(this, registry, now)
    }
}

impl Held for Tenants {
    fn take_all(&self) -> Vec<(JobRef, Option<usize>)> {
        let mut st = self.state.lock();
        st.closed = true;
        st.ring.clear();
        st.timers.clear();
        let mut out = Vec::new();
        for t in st.slots.values_mut() {
            for lane in &mut t.lanes {
                for w in lane.drain(..) {
                    t.running += w.cost;
                    out.push((w.job, w.shard));
                }
            }
            t.queued = 0;
            t.figures.queued = 0;
            t.in_ring = false;
        }
        st.in_window += out.len();
        drop(st);
        self.wake.notify_all();
        out
    }

    fn tenant_metrics(&self, top: usize) -> (Vec<TenantMetrics>, Option<TenantMetrics>, usize) {
        let st = self.state.lock();
        let mut all: Vec<&Tenant> = st.slots.values().collect();
        all.sort_by_key(|t| Reverse((t.figures.submitted, t.figures.queued)));
        let listed = all.iter().take(top).map(|t| t.figures.clone()).collect();
        let mut other = st.forgotten.clone();
        for t in all.iter().skip(top) {
            other.add(&t.figures);
        }
        (listed, Some(other), st.slots.len())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A let-through task's claim on its tenant: given back when it ends.
struct Ticket {
    registry: Arc<Registry>,
    slot: u64,
    generation: u64,
    cost: u32,
}

impl Ticket {
    fn end(self) {
        Tenants::finished(&self.registry, self.slot, self.generation, self.cost);
    }
}

/// A tenant's task: the body, then its ticket back.
struct Tenanted<R> {
    body: R,
    ticket: Ticket,
}

impl<R: Runnable> Runnable for Tenanted<R> {
    fn run(self) -> Outcome {
        let outcome = self.body.run();
        self.ticket.end();
        outcome
    }

    fn discard(self, why: TaskError) {
        self.body.discard(why);
        self.ticket.end();
    }
}

// Keep the histogram type named where the figures are built.
#[allow(dead_code)]
fn _histogram(_: &Histogram) {}
