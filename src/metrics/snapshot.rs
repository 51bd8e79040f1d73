//! The public snapshot of a pool: gauges, counters, histograms, locks.

use super::counters::Counts;
use super::histogram::Histogram;
use super::locks::{LockContention, LockStats};
use super::TenantMetrics;
use std::fmt;
use std::time::Duration;

/// A snapshot of a pool's state and counters, from [`PoolHandle::metrics`].
///
/// Counters and histograms are summed from per-worker slots without
/// stopping the pool: while it is busy, a snapshot may miss the last few
/// updates of each worker, and gauges (read one after another) may disagree
/// slightly. Once the pool is idle (`wait_idle` returned) or shut down,
/// every counter is exact and the identity holds:
///
/// `submitted = completed + failed + dead_lettered + panicked + rejected + dropped + abandoned + timed_out + cancelled + running + queued + timers_pending`
///
/// where `dropped` counts both `DropNewest` and `DropOldest`, `rejected`
/// includes circuit-breaker refusals, `running`
/// counts tasks started and not finished (including `install` calls), and
/// `queued` tasks accepted and not started.
///
/// [`PoolHandle::metrics`]: crate::PoolHandle::metrics
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Metrics {
    /// The pool's name (the `pool` label in the Prometheus export).
    pub name: String,
    /// Worker threads.
    pub workers: usize,
    /// The configured minimum of workers.
    pub min_workers: usize,
    /// The configured maximum of workers.
    pub max_workers: usize,
    /// The worker count the pool aims at.
    pub target_workers: usize,
    /// Workers running a task now.
    pub busy_workers: usize,
    /// Workers parked (sleeping for want of work).
    pub parked: usize,
    /// Workers searching other queues for work.
    pub searching: usize,
    /// Workers blocked in a wait that does not help (`join_blocking`).
    pub blocked_workers: usize,
    /// Workers waiting for room in another pool's full queue: a pipeline
    /// stage held up by the stage after it. The auto-scaler does not grow
    /// a pool while any of its workers wait so.
    pub backpressured_workers: usize,
    /// Tasks accepted and not yet started.
    pub queued: usize,
    /// Work reported waiting outside the pool through
    /// [`PoolHandle::backlog`](crate::PoolHandle::backlog) gauges (a
    /// broker's unread messages); the auto-scaler counts it as queued.
    pub external_backlog: usize,
    /// Jobs in the global injector.
    pub injector_len: usize,
    /// Jobs in each live worker's own deque, by worker index (an elastic
    /// pool's slots past its live workers are left out: they hold none).
    pub worker_queue_lens: Vec<usize>,
    /// Keyed tasks waiting in their shards (part of `queued`).
    pub keyed_queued: usize,
    /// The number of keyed shards.
    pub shards: usize,
    /// Tasks running now (started, not finished), the in-flight gauge.
    pub running: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Outside threads blocked waiting for room (`Backpressure::Block`).
    pub blocked_submitters: usize,
    /// Whether admission is closed (shutdown began).
    pub shut_down: bool,
    /// Whether the pool is paused (`PoolHandle::pause`).
    pub paused: bool,
    /// The circuit breaker's state, if the pool has one.
    pub breaker: Option<BreakerState>,
    /// Counters since the pool was built.
    pub counts: Counts,
    /// The busiest tenants (by tasks offered), at most 10, busiest first;
    /// empty for a pool that never saw a tenant.
    pub tenants: Vec<TenantMetrics>,
    /// The other tenants' figures summed (those not listed, and those
    /// reclaimed while idle).
    pub tenants_other: Option<TenantMetrics>,
    /// Tenants held now (busy, or configured); idle ones made on first use
    /// are forgotten.
    pub tenants_live: usize,
    /// Queue wait (accepted → started) of tasks run by workers.
    pub queue_wait: Histogram,
    /// Run time (started → finished) of tasks run by workers.
    pub run_time: Histogram,
    /// Contention of the pool's own locks.
    pub locks: Vec<LockContention>,
    /// Tasks waiting on the timing wheel: delayed tasks, periodic tasks
    /// between runs, retries waiting for their next attempt.
    pub timers_pending: usize,
    /// Fire time minus due time of the timers fired so far (the wheel's
    /// resolution is 1 ms).
    pub timer_lateness: Histogram,
    /// Dead letters kept (see `PoolHandle::take_dead_letters`).
    pub dead_letters: usize,
    /// How long each queue's oldest task has waited at most: a queue whose
    /// bound keeps growing is starving (see [`QueueAges`]).
    pub queue_ages: QueueAges,
}

/// For each queue of a pool, an upper bound on how long its oldest task
/// has waited: now minus the enqueue time of the last task taken from the
/// queue's oldest end, or minus the last time a worker found it empty
/// (every task still there came after). `None` for an empty queue, or when
/// tasks are not timed (`histograms(false)` and no stall threshold).
/// Workers serve every queue at a bounded interval, so in a healthy pool
/// these stay near the queue's own backlog.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueAges {
    /// The global injector (tasks submitted from outside the pool).
    pub injector: Option<Duration>,
    /// Each worker's inbox of scheduled keyed shards.
    pub inboxes: Vec<Option<Duration>>,
    /// Each worker's own deque (tasks submitted from its tasks).
    pub deques: Vec<Option<Duration>>,
}

impl QueueAges {
    /// The largest bound over every queue.
    pub fn oldest(&self) -> Option<Duration> {
        std::iter::once(self.injector)
            .chain(self.inboxes.iter().copied())
            .chain(self.deques.iter().copied())
            .flatten()
            .max()
    }
}

impl Metrics {
    pub(crate) fn lock_report(stats: &LockStats, ns_per_tick: f64) -> Vec<LockContention> {
        stats.report(ns_per_tick)
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "pool {}: workers {} (busy {}, parked {}, blocked {}), queued {}/{}, running {}; \
             submitted {}, completed {}, panicked {}, rejected {}, dropped {}, abandoned {}, \
             caller-runs {}, steals {}; queue wait p50 {:?} p99 {:?}, run time p50 {:?} p99 {:?}{}",
            self.name,
            self.workers,
            self.busy_workers,
            self.parked,
            self.blocked_workers,
            self.queued,
            self.queue_capacity,
            self.running,
            c.submitted,
            c.completed,
            c.panicked,
            c.rejected,
            c.dropped(),
            c.abandoned,
            c.caller_runs,
            c.steals,
            self.queue_wait.p50(),
            self.queue_wait.p99(),
            self.run_time.p50(),
            self.run_time.p99(),
            if self.shut_down {
                " [shut down]"
            } else if self.paused {
                " [paused]"
            } else {
                ""
            }
        )
    }
}

/// A circuit breaker's state.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Accepting submissions.
    Closed,
    /// Refusing submissions until the cool-down ends.
    Open,
    /// Letting a limited number of trial tasks through.
    HalfOpen,
}
