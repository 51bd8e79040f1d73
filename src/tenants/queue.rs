//! The fair queue: each tenant's lanes, deficit round robin over the
//! tenants ready to go, their limits, and forgetting idle ones (see the
//! module docs of `tenants`).

use super::bucket::Bucket;
use super::{TenantId, Tenants};
use crate::loom::sync::Arc;
use crate::metrics::TenantMetrics;
use crate::sched::tenancy::TenantConfig;
use crate::sched::Registry;
use crate::task::job::JobRef;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

/// A held task.
pub(super) struct Waiting {
    pub(super) job: JobRef,
    pub(super) shard: Option<usize>,
    pub(super) cost: u32,
    pub(super) since: Instant,
    /// Its place in its tenant's arrival order (ties of `since`).
    pub(super) seq: u64,
    /// A job back from the timing wheel: no ticket yet (it gets one when
    /// let through), and where its own retries go.
    pub(super) bare: Option<Box<crate::task::job::Hold>>,
    /// A keyed task of the unnamed tenant, counted in
    /// `Tenants::unnamed_keyed` until it is in its shard.
    pub(super) counted: bool,
    /// What takes it out when its token is cancelled (see `cancel.rs`).
    /// Only held, never read: the token holds it weakly, and dropping it
    /// with the task forgets it.
    #[allow(dead_code)]
    pub(super) watch: Option<std::sync::Arc<super::cancel::TenantWatch>>,
}

pub(super) struct Tenant {
    pub(super) config: TenantConfig,
    pub(super) configured: bool,
    pub(super) lanes: [VecDeque<Waiting>; 3],
    /// Per shard with keyed tasks waiting: the lane of the latest one and
    /// how many wait. A keyed task never goes in a higher lane than an
    /// earlier one of its shard, so lanes never reorder a key.
    keyed: HashMap<usize, (usize, u32)>,
    pub(super) queued: usize,
    /// Tasks ever queued (the next one's `seq`).
    pub(super) arrivals: u64,
    pub(super) running: u32,
    pub(super) deficit: u64,
    pub(super) in_ring: bool,
    /// Waiting on the timer heap for its refill.
    pub(super) refilling: bool,
    pub(super) bucket: Option<Bucket>,
    pub(super) figures: TenantMetrics,
    /// Bumped when the slot is reused, so that stale timers and tickets
    /// of a forgotten tenant are recognised.
    pub(super) generation: u64,
}

impl Tenant {
    pub(super) fn new(
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
            keyed: HashMap::new(),
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
    pub(super) fn next_lane(&self, now: Instant) -> Option<usize> {
        let aged = (0..3)
            .filter_map(|l| self.lanes[l].front().map(|w| (l, w)))
            .filter(|(_, w)| now.saturating_duration_since(w.since) >= self.config.aging)
            .min_by_key(|(_, w)| (w.since, w.seq))
            .map(|(l, _)| l);
        aged.or_else(|| (0..3).find(|&l| !self.lanes[l].is_empty()))
    }

    /// The lane a task asking for `lane` takes: for a keyed task, no
    /// higher than the latest waiting task of its shard. Counts it in.
    fn lane_for(&mut self, lane: usize, shard: Option<usize>) -> usize {
        let Some(shard) = shard else {
            return lane;
        };
        let (latest, waiting) = self.keyed.entry(shard).or_insert((lane, 0));
        let lane = keyed_lane(lane, (*waiting > 0).then_some(*latest));
        *latest = lane;
        *waiting += 1;
        lane
    }

    /// `w` left its lane to go through: counted out of the queue, its
    /// cost running until its ticket comes back.
    fn went_through(&mut self, w: &Waiting, now: Instant) {
        self.left(w);
        self.queued -= 1;
        self.figures.queued -= 1;
        self.running += w.cost;
        self.figures.running = u64::from(self.running);
        self.figures.dispatched += 1;
        self.figures
            .queue_wait
            .record_ns(now.saturating_duration_since(w.since).as_nanos() as u64);
    }

    /// `w` left its lane (let through, evicted or taken back at shutdown).
    pub(super) fn left(&mut self, w: &Waiting) {
        if let Some(shard) = w.shard {
            if let Some((_, waiting)) = self.keyed.get_mut(&shard) {
                *waiting -= 1;
                if *waiting == 0 {
                    self.keyed.remove(&shard);
                }
            }
        }
    }

    /// Every waiting task was taken back (shutdown).
    pub(super) fn forget_keyed(&mut self) {
        self.keyed.clear();
    }

    /// `w`, evicted from `lane`, goes back to that lane's front.
    pub(super) fn put_back(&mut self, lane: usize, w: Waiting) {
        if let Some(shard) = w.shard {
            let (latest, waiting) = self.keyed.entry(shard).or_insert((lane, 0));
            *latest = (*latest).max(lane);
            *waiting += 1;
        }
        self.lanes[lane].push_front(w);
    }

    pub(super) fn idle(&mut self, now: Instant) -> bool {
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
pub(super) enum Due {
    Tenant(u64, u64),
    Pool,
}

pub(super) struct State {
    /// The live tenants, by the hash of their identity.
    pub(super) slots: HashMap<u64, Tenant>,
    /// Stamps each new tenant, so that timers and tickets of a forgotten
    /// one are recognised.
    pub(super) generation: u64,
    pub(super) ring: VecDeque<u64>,
    /// Let through and not yet ended.
    pub(super) in_window: usize,
    pub(super) pool_bucket: Option<Bucket>,
    pub(super) pool_refilling: bool,
    pub(super) timers: BinaryHeap<Reverse<(Instant, Due)>>,
    /// Idle tenants whose bucket was not yet full.
    pub(super) idle: VecDeque<(u64, u64)>,
    /// Configurations of tenants made again on their next task after
    /// being forgotten (groups' own tenants), until withdrawn.
    pub(super) transient: HashMap<u64, TenantConfig>,
    /// Figures of forgotten tenants.
    pub(super) forgotten: TenantMetrics,
    pub(super) closed: bool,
    pub(super) driver: bool,
}

impl State {
    /// The slot of `id`'s tenant, made with the defaults if new.
    pub(super) fn slot_of(&mut self, id: &TenantId, defaults: &TenantConfig, now: Instant) -> u64 {
        if !self.slots.contains_key(&id.hash) {
            self.generation += 1;
            let config = self.transient.get(&id.hash).unwrap_or(defaults).clone();
            let t = Tenant::new(id, config, false, now, self.generation);
            self.slots.insert(id.hash, t);
        }
        id.hash
    }

    /// Queues `w` in lane `lane` of tenant `i` (its arrival number given
    /// here), and puts the tenant in the ring unless it waits for a limit.
    /// Returns the lane it went in (a keyed task's may be lower).
    pub(super) fn push(&mut self, i: u64, lane: usize, mut w: Waiting) -> usize {
        let t = self.slots.get_mut(&i).expect("a live tenant");
        w.seq = t.arrivals;
        let lane = t.lane_for(lane, w.shard);
        t.lanes[lane].push_back(w);
        t.arrivals += 1;
        t.queued += 1;
        t.figures.queued += 1;
        if !t.in_ring && !t.refilling {
            t.in_ring = true;
            self.ring.push_back(i);
        }
        lane
    }

    /// Takes task `seq` out of lane `lane` of tenant `i` (of generation
    /// `generation`), its token cancelled: through now, free, as `pick`
    /// lets a cancelled task through. `None` if it is not there any more
    /// (let through, or its tenant forgotten), or if its cost would
    /// overflow its tenant's running count (it then waits its turn).
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn take_cancelled(
        &mut self,
        i: u64,
        generation: u64,
        lane: usize,
        seq: u64,
        now: Instant,
    ) -> Option<Waiting> {
        if self.closed {
            // Shutdown took the queues back.
            return None;
        }
        let t = self
            .slots
            .get_mut(&i)
            .filter(|t| t.generation == generation)?;
        // A lane is in arrival order: pushed at the back, and put back
        // at the front only by the eviction that took it from there.
        let at = t.lanes[lane].binary_search_by_key(&seq, |w| w.seq).ok()?;
        t.running.checked_add(t.lanes[lane][at].cost)?;
        let w = t.lanes[lane].remove(at).expect("found above");
        t.went_through(&w, now);
        if t.queued == 0 && t.in_ring {
            // Out of the ring with its last task, as `pick` takes it out:
            // an idle tenant may be forgotten, and the ring holds only
            // live ones.
            t.in_ring = false;
            t.deficit = 0;
            if let Some(at) = self.ring.iter().position(|&r| r == i) {
                self.ring.remove(at);
            }
        }
        self.in_window += 1;
        Some(w)
    }

    /// Forgets slot `i`'s tenant if it is idle; an idle one whose bucket
    /// is not full yet is looked at again later.
    pub(super) fn forget_if_idle(&mut self, i: u64, now: Instant) {
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
    pub(super) fn sweep(&mut self, now: Instant) {
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

    pub(super) fn needs_driver(&mut self) -> bool {
        if self.timers.is_empty() || self.driver || self.closed {
            return false;
        }
        self.driver = true;
        true
    }

    /// Lets tasks through while the window has room. A keyed task goes
    /// into its shard here, under the lock, so that two pumps cannot put
    /// one tenant's tasks of a key there out of their order; the others
    /// are returned, for the caller to queue after the lock.
    pub(super) fn pump(
        &mut self,
        this: &Tenants,
        registry: &Arc<Registry>,
        now: Instant,
    ) -> Vec<Waiting> {
        let window = registry.live_workers().max(1);
        let mut out = Vec::new();
        let mut keyed = false;
        while self.in_window < window {
            match self.pick(this, now) {
                Some(w) => {
                    self.in_window += 1;
                    if w.shard.is_some() {
                        this.release(registry, w);
                        keyed = true;
                    } else {
                        out.push(w);
                    }
                }
                None => break,
            }
        }
        if keyed {
            this.room.notify_all();
        }
        self.sweep(now);
        out
    }

    /// The next task by deficit round robin, or none.
    pub(super) fn pick(&mut self, this: &Tenants, now: Instant) -> Option<Waiting> {
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
            let front = t.lanes[lane].front().expect("a non-empty lane");
            let cost = front.cost;
            // A task cancelled already ends unrun as soon as a worker takes
            // it: through now, charged nothing (no rate token, no deficit),
            // whatever the limits. Its cost is counted running until it
            // ends, as every let-through task's, so that its ticket's
            // return balances.
            let free = front.job.is_cancelled() && t.running.checked_add(cost).is_some();
            if !free {
                if over_capacity(t.running, cost, t.config.max_concurrency) {
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
            }
            // Through.
            let w = t.lanes[lane].pop_front().expect("a non-empty lane");
            t.went_through(&w, now);
            if !free {
                t.deficit -= u64::from(cost);
                if let (Some(b), Some(_)) = (&mut t.bucket, &t.config.rate) {
                    b.take();
                }
                if let Some(b) = &mut self.pool_bucket {
                    b.take();
                }
            }
            if t.queued == 0 {
                t.in_ring = false;
                t.deficit = 0;
                self.ring.pop_front();
            }
            return Some(w);
        }
        None
    }

    /// Brings back the tenants (and the pool) whose refill is due, and
    /// lets through what it can.
    #[cfg(not(loom))]
    pub(super) fn fire_due(
        &mut self,
        this: &Tenants,
        registry: &Arc<Registry>,
        now: Instant,
    ) -> Vec<Waiting> {
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

/// Whether a task of `cost` must wait while `running` units of its tenant
/// run under `cap`. A task costlier than the cap (accepted before the cap
/// was lowered) runs alone: when nothing else of its tenant runs, and
/// nothing else does while it runs. It would otherwise never start.
pub(super) fn over_capacity(running: u32, cost: u32, cap: Option<u32>) -> bool {
    cap.is_some_and(|cap| running > 0 && u64::from(running) + u64::from(cost) > u64::from(cap))
}

/// The lane of a keyed task that asks for lane `asked` (0 is the highest)
/// while the latest waiting task of its shard, if any, is in `latest`: the
/// lower of the two, so that it cannot pass that task. Lanes go highest
/// first, and an aged head goes by its age, so a shard's tasks, each in a
/// lane no higher than the one before, leave in their order.
pub(super) fn keyed_lane(asked: usize, latest: Option<usize>) -> usize {
    latest.map_or(asked, |l| asked.max(l))
}

#[cfg(test)]
mod tests {
    use super::{keyed_lane, over_capacity};

    #[test]
    fn a_task_waits_only_while_its_cost_would_pass_a_cap_others_hold() {
        // (running, cost, cap) → must wait.
        let cases = [
            (0, 1, None, false),
            (7, 9, None, false),
            (0, 8, Some(8), false),
            (1, 7, Some(8), false),
            (1, 8, Some(8), true),
            (8, 1, Some(8), true),
            // Costlier than the cap: alone, and nothing beside it.
            (0, 9, Some(4), false),
            (1, 9, Some(4), true),
            (9, 1, Some(4), true),
            (u32::MAX, u32::MAX, Some(u32::MAX), true),
        ];
        for (running, cost, cap, waits) in cases {
            assert_eq!(
                over_capacity(running, cost, cap),
                waits,
                "{running} running, cost {cost}, cap {cap:?}"
            );
        }
    }

    #[test]
    fn a_keyed_task_takes_its_lane_unless_an_earlier_one_of_its_shard_waits_lower() {
        // (asked, latest waiting) → lane; 0 high, 1 normal, 2 low.
        let cases = [
            (0, None, 0),
            (2, None, 2),
            (0, Some(0), 0),
            (0, Some(2), 2),
            (1, Some(2), 2),
            (2, Some(0), 2),
            (1, Some(0), 1),
        ];
        for (asked, latest, lane) in cases {
            assert_eq!(keyed_lane(asked, latest), lane, "{asked} after {latest:?}");
        }
    }
}
