//! Reading the pool without stopping it: metrics snapshots and the dump.

use super::admission::closed;
use super::breaker::Breaker;
use super::fair::Served;
use super::registry::Registry;
use crate::loom::sync::atomic::Ordering::SeqCst;
use crate::metrics::clock::Calibration;
use crate::metrics::{
    Histogram, Metrics, PoolDump, QueueAges, TenantDump, WorkerDump, WorkerState,
};
use crate::sched::queue::{GlobalQueue, StealQueue};

impl Registry {
    /// The admission word's `queued`: tasks queued now, and in a pool
    /// that returns places in batches some started ones (`starts.rs`).
    #[inline]
    pub(crate) fn queued_unsettled(&self) -> usize {
        super::admission::queued(self.admission.load(SeqCst))
    }

    /// Tasks queued now (less the places the workers still owe, see
    /// `starts.rs`).
    #[inline]
    pub(crate) fn queued_now(&self) -> usize {
        self.settled_counts().0
    }

    /// Workers waiting for room in another pool's full queue now.
    pub(crate) fn backpressured_now(&self) -> usize {
        // Relaxed: a gauge (see `Registry::backpressure_guard`).
        self.backpressured
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tasks queued now (with the work reported waiting outside the pool)
    /// and workers announced as blocked: the supervisor's cheap reading
    /// (no snapshot of every slot and histogram).
    pub(crate) fn queued_and_blocked(&self) -> (usize, usize) {
        (
            self.settled_counts().0 + self.external.load(SeqCst),
            self.blocked.load(SeqCst),
        )
    }

    /// The bound on each queue's oldest wait (see `fair.rs`).
    pub(crate) fn queue_ages(&self) -> QueueAges {
        if !self.timing {
            return QueueAges::default();
        }
        let now = self.clock.now();
        let served = &self.served;
        let age = |slot, len| Served::age(slot, len, &self.clock, now);
        let live = self.live_workers();
        QueueAges {
            injector: age(&served.injector, self.injector.len()),
            inboxes: (0..live)
                .map(|i| age(&served.worker(i).inbox, self.inboxes[i].len()))
                .collect(),
            deques: (0..live)
                .map(|i| age(&served.worker(i).deque, self.stealers[i].len()))
                .collect(),
        }
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let (queued_now, pending_now) = self.settled_counts();
        let word = self.admission.load(SeqCst);
        let mut counts = self.counters.sum();
        counts.unparks += self.sleep.unparks();
        let keyed_queued = self
            .shards
            .iter()
            .map(|s| s.len(&self.counters.locks.shard))
            .sum();
        let running = pending_now.saturating_sub(queued_now);
        let busy_workers = if self.config.track_workers {
            self.counters
                .workers()
                .filter(|w| w.status.read().0 == WorkerState::Running)
                .count()
        } else {
            running.min(self.live_workers())
        };
        let (queue_wait, run_time) = if self.config.histograms {
            let timing = || self.counters.workers().map(|w| &w.timing);
            // Relaxed: a reading of counters still moving, like the
            // histograms it scales.
            let timed = self
                .counters
                .workers()
                .map(|w| {
                    w.timing
                        .timed(w.slot.started.load(std::sync::atomic::Ordering::Relaxed))
                })
                .sum();
            (
                Histogram::sampled(
                    timing().map(|t| &t.queue_wait),
                    timed,
                    self.clock.ns_per_tick(),
                ),
                Histogram::sampled(
                    timing().map(|t| &t.run_time),
                    timed,
                    self.clock.ns_per_tick(),
                ),
            )
        } else {
            (Histogram::empty(), Histogram::empty())
        };
        let (tenants, tenants_other, tenants_live) = match self.held() {
            Some(held) => held.tenant_metrics(10),
            None => (Vec::new(), None, 0),
        };
        Metrics {
            name: self.config.name.clone(),
            workers: self.live_workers(),
            min_workers: self.config.min_workers,
            max_workers: self.config.max_workers,
            // Relaxed: a gauge (see the field).
            target_workers: self.target.load(std::sync::atomic::Ordering::Relaxed),
            busy_workers,
            parked: self.sleep.parked(),
            searching: self.sleep.searching(),
            blocked_workers: self.blocked.load(SeqCst),
            backpressured_workers: self.backpressured_now(),
            queued: queued_now,
            external_backlog: self.external.load(SeqCst),
            injector_len: self.injector.len(),
            worker_queue_lens: self.live_queues().map(|(deque, _)| deque.len()).collect(),
            keyed_queued,
            shards: self.shards.len(),
            running,
            queue_capacity: self.config.queue_capacity,
            blocked_submitters: self.room_waiters.load(SeqCst),
            shut_down: closed(word),
            paused: self.is_paused(),
            breaker: self.breaker.as_ref().map(Breaker::state),
            counts,
            queue_wait,
            run_time,
            locks: Metrics::lock_report(&self.counters.locks, self.calibration.ns_per_tick()),
            timers_pending: self.timers.pending(),
            timer_lateness: Histogram::sum_of(std::iter::once(&self.timers.lateness), 1.0),
            dead_letters: self.dead_letter_count(),
            queue_ages: self.queue_ages(),
            tenants,
            tenants_other,
            tenants_live,
        }
    }

    /// The keyed shard worker `index` is running, if any.
    pub(crate) fn shard_running_on(&self, index: usize) -> Option<usize> {
        self.shards.iter().position(|s| s.runs_on(index))
    }

    /// What every worker is doing now.
    pub(crate) fn dump(&self) -> PoolDump {
        let now = self.clock.now();
        let ns_per_tick = self.clock.ns_per_tick();
        let queued_now = self.queued_now();
        let workers = (0..self.live_workers())
            .map(|i| {
                let (state, since) = self.counters.worker(i).status.read();
                // Relaxed: the worker's own count, read for the dump.
                let task = self
                    .counters
                    .slot(Some(i))
                    .started
                    .load(std::sync::atomic::Ordering::Relaxed);
                let running_for = (state == WorkerState::Running && self.timing)
                    .then(|| Calibration::to_duration(now.saturating_sub(since), ns_per_tick));
                let shard = self.shard_running_on(i);
                WorkerDump {
                    task_name: (state == WorkerState::Running)
                        .then(|| self.counters.worker(i).status.name())
                        .flatten(),
                    shard,
                    thread_name: self.worker_name(i),
                    state,
                    task,
                    running_for,
                    queue_len: self.stealers[i].len(),
                }
            })
            .collect();
        let tenants = match self.held() {
            Some(held) => {
                let (top, other, _) = held.tenant_metrics(10);
                top.iter()
                    .chain(other.iter().filter(|o| o.queued + o.running > 0))
                    .map(|t| TenantDump {
                        name: t.name.clone(),
                        queued: t.queued,
                        running: t.running,
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        PoolDump {
            name: self.config.name.clone(),
            workers,
            injector_len: self.injector.len(),
            queued: queued_now,
            tenants,
        }
    }
}
