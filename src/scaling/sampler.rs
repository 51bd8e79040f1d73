//! The sampler: the supervisor's reading of the pool between two samples.

use super::policy::{classify, Use};
use crate::metrics::clock::Calibration;
use crate::metrics::cpu::{process_cpu_time, Sched, SchedStat, ThreadClock};
use crate::metrics::{Observation, WorkerState};
use crate::sched::Registry;
use std::time::{Duration, Instant};

/// One worker's readings at the last sample.
#[derive(Clone, Copy)]
struct Reading {
    /// Its thread's CPU clock and time, where the platform has them.
    cpu: Option<(ThreadClock, Duration)>,
    /// Ticks spent in tasks so far (finished ones and the running one).
    busy: u64,
    running: bool,
    /// Its run-queue wait so far (read for running workers only).
    run_delay: Option<Duration>,
    /// Short of CPU with no statistics to say why (a platform without
    /// them): the second such interval in a row counts as blocked.
    short: bool,
}

/// Workers whose run-queue wait one sample reads at most (~1 µs each):
/// enough to classify a pool's blocking, bounded for a pool of hundreds.
const RUN_DELAY_READS: usize = 32;

/// The process-wide CPU window (see `Observation::machine_load`).
const LOAD_WINDOW: Duration = Duration::from_millis(50);

/// What one sample needs to read each worker.
struct Frame {
    elapsed: Duration,
    now_ticks: u64,
    /// Twice the mean run time of the tasks just finished, in ticks.
    held_after: u64,
    /// Whether tasks are timed into histograms (else "busy" is read from
    /// the worker states alone).
    timed: bool,
    ns_per_tick: f64,
}

/// The workers' readings of one sample, added up.
#[derive(Default)]
struct Tally {
    busy: usize,
    busy_time: Duration,
    held: usize,
    /// Summed age (ticks) of the running tasks, and how many.
    age: u64,
    aged: u32,
    cpu_total: Duration,
    have_cpu: bool,
    /// CPU time and time able to run of the workers busy most of the
    /// interval (the tasks' CPU share).
    share_cpu: Duration,
    share_busy: Duration,
    stalled: usize,
    unsure: usize,
    /// Workers short of CPU beyond the read budget.
    unread: usize,
    delay_reads: usize,
}

/// The supervisor's view of the pool between two samples. Reads only what
/// the policy needs: counters and histogram sums of the slots ever used,
/// and each live worker's status and CPU clock (no snapshot of every
/// histogram, no shard locks).
pub(super) struct Sampler {
    pub(super) at: Instant,
    submitted: u64,
    started: u64,
    finished: u64,
    run_ticks: u64,
    wait_ticks: u64,
    /// Slots `0..used` have ever run a worker (the most live workers seen:
    /// only the supervisor starts workers beyond `min_workers`, and it
    /// samples before it grows again).
    used: usize,
    workers: Vec<Option<Reading>>,
    /// Per slot: the scheduler statistics of its thread, opened when first
    /// needed.
    stats: Vec<Option<(ThreadClock, SchedStat)>>,
    process_anchor: (Instant, Option<Duration>),
    process_load: Option<f64>,
    cpus: usize,
}

impl Sampler {
    pub(super) fn new(registry: &Registry, cpus: usize) -> Self {
        let mut sampler = Sampler {
            at: Instant::now(),
            submitted: 0,
            started: 0,
            finished: 0,
            run_ticks: 0,
            wait_ticks: 0,
            used: registry.live_workers(),
            workers: vec![None; registry.max_workers()],
            stats: (0..registry.max_workers()).map(|_| None).collect(),
            process_anchor: (Instant::now(), process_cpu_time()),
            process_load: None,
            cpus,
        };
        sampler.observe(registry);
        sampler
    }

    /// Worker `i`'s scheduler statistics, through its thread's files
    /// (opened on first need, reopened for a new thread).
    fn sched(&mut self, i: usize, clock: ThreadClock) -> Option<Sched> {
        let slot = &mut self.stats[i];
        if slot.as_ref().map(|(c, _)| *c) != Some(clock) {
            *slot = clock.tid().and_then(SchedStat::open).map(|s| (clock, s));
        }
        slot.as_ref()?.1.read()
    }

    /// Reads worker `i` and adds what it did since the last sample to `t`.
    fn read_worker(&mut self, registry: &Registry, i: usize, f: &Frame, t: &mut Tally) {
        let counters = &registry.counters;
        let status = &counters.worker(i).status;
        let (state, since) = status.read();
        let running = state == WorkerState::Running;
        let in_task = running || state == WorkerState::Blocked;
        t.busy += usize::from(in_task);
        let current = if f.timed && in_task && since != 0 {
            f.now_ticks.saturating_sub(since)
        } else {
            0
        };
        if current != 0 {
            t.age += current;
            t.aged += 1;
        }
        t.held += usize::from(f.timed && in_task && current > f.held_after);
        let mut now = Reading {
            cpu: status
                .clock()
                .and_then(|clock| Some((clock, clock.read()?))),
            busy: counters
                .worker(i)
                .timing
                .run_time
                .sum_ticks()
                .wrapping_add(current),
            running,
            run_delay: None,
            short: false,
        };
        // The scheduler statistics of running workers (within the
        // budget): the time they could not run is not held against
        // their tasks, and a thread runnable now is not asleep.
        let (mut read, mut runnable) = (false, false);
        if let (true, Some((clock, _))) = (running, now.cpu) {
            if t.delay_reads < RUN_DELAY_READS {
                t.delay_reads += 1;
                read = true;
                let sched = self.sched(i, clock);
                now.run_delay = sched.map(|s| s.run_delay);
                runnable = sched.is_some_and(|s| s.runnable);
            }
        }
        let Some(prev) = self.workers[i] else {
            self.workers[i] = Some(now);
            return;
        };
        let in_tasks = if f.timed {
            Calibration::to_duration(now.busy.wrapping_sub(prev.busy), f.ns_per_tick)
        } else if in_task && prev.running {
            f.elapsed
        } else {
            Duration::ZERO
        };
        let in_tasks = in_tasks.min(f.elapsed);
        t.busy_time += in_tasks;
        // CPU readings of the same thread at both samples (a slot's
        // thread changes when a worker retires and another starts).
        let cpu = match (now.cpu, prev.cpu) {
            (Some((clock, cpu)), Some((was, before))) if clock == was => cpu.saturating_sub(before),
            _ => {
                self.workers[i] = Some(now);
                return;
            }
        };
        t.cpu_total += cpu;
        t.have_cpu = true;
        // Workers announced as blocked are counted apart; so are those
        // mostly idle this interval.
        if running && in_tasks * 2 >= f.elapsed {
            let delay = now
                .run_delay
                .zip(prev.run_delay)
                .map(|(a, b)| a.saturating_sub(b));
            let able = in_tasks.saturating_sub(delay.unwrap_or_default());
            match classify(in_tasks, cpu, delay.map(|d| (d, runnable))) {
                // A thread runnable now may be in a wait not yet counted;
                // it wants a CPU: its time counts as compute.
                Use::Compute | Use::Starved => {
                    t.share_cpu += if runnable { able } else { cpu };
                    t.share_busy += able;
                }
                Use::Blocked => {
                    t.stalled += 1;
                    t.share_cpu += cpu;
                    t.share_busy += able;
                }
                // No statistics on this platform: short of CPU twice in
                // a row counts as blocked.
                Use::Unsure if read && now.run_delay.is_none() => {
                    now.short = true;
                    if prev.short {
                        t.stalled += 1;
                    } else {
                        t.unsure += 1;
                    }
                }
                // First reading of its statistics: classified next time.
                Use::Unsure if read => t.unsure += 1,
                // Beyond the read budget: judged like the others.
                Use::Unsure => t.unread += 1,
            }
        }
        self.workers[i] = Some(now);
    }

    pub(super) fn observe(&mut self, registry: &Registry) -> Observation {
        let at = Instant::now();
        let now_ticks = registry.clock.now();
        let elapsed = at.saturating_duration_since(self.at);
        let ns_per_tick = registry.clock.ns_per_tick();
        let to_time = |t: u64| Calibration::to_duration(t, ns_per_tick);
        let counters = &registry.counters;
        let live = registry.live_workers();
        self.used = self.used.max(live);
        let counts = counters.sum_of_first(self.used);
        let finished = counts.completed + counts.panicked + counts.timed_out + counts.cancelled;
        // Run times are known only when tasks are timed into histograms;
        // otherwise "busy" is read from the worker states alone.
        let timed = registry.config.histograms;
        // (Sampled sums: unbiased estimates, exact for long spans.)
        let sum = |h: fn(&crate::metrics::TaskTiming) -> u64| {
            counters
                .workers()
                .take(self.used)
                .map(|w| h(&w.timing))
                .fold(0u64, u64::wrapping_add)
        };
        let (run_ticks, wait_ticks) = if timed {
            (
                sum(|t| t.run_time.sum_ticks()),
                sum(|t| t.queue_wait.sum_ticks()),
            )
        } else {
            (0, 0)
        };
        if at.saturating_duration_since(self.process_anchor.0) >= LOAD_WINDOW {
            let cpu = process_cpu_time();
            if let (Some(b), Some(a)) = (cpu, self.process_anchor.1) {
                let window = at.saturating_duration_since(self.process_anchor.0);
                self.process_load = Some(
                    b.saturating_sub(a).as_secs_f64() / (window.as_secs_f64() * self.cpus as f64),
                );
            }
            self.process_anchor = (at, cpu);
        }
        // Twice the mean run time of the tasks that finished since the last
        // sample, in ticks: a task running longer is held up.
        let held_after = match finished.saturating_sub(self.finished) {
            0 => u64::MAX,
            n => run_ticks.wrapping_sub(self.run_ticks) / n * 2,
        };
        let frame = Frame {
            elapsed,
            now_ticks,
            held_after,
            timed,
            ns_per_tick,
        };
        let (queued, blocked) = registry.queued_and_blocked();
        let mut t = Tally::default();
        for i in 0..live {
            self.read_worker(registry, i, &frame, &mut t);
        }
        for slot in &mut self.workers[live..] {
            *slot = None;
        }
        // Those beyond the read budget are judged like the ones read.
        let extra = (t.unread * t.stalled)
            .checked_div(t.stalled + t.unsure)
            .unwrap_or(0);
        let (stalled, unsure) = (t.stalled + extra, t.unsure + t.unread - extra);
        let pool_load = (t.have_cpu && !elapsed.is_zero())
            .then(|| t.cpu_total.as_secs_f64() / (elapsed.as_secs_f64() * self.cpus as f64));
        let machine_load = match (pool_load, self.process_load) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let obs = Observation {
            elapsed,
            arrivals: counts.submitted.saturating_sub(self.submitted),
            started: counts.started.saturating_sub(self.started),
            queue_wait: match counts.started.saturating_sub(self.started) {
                0 => Duration::ZERO,
                n => to_time(wait_ticks.wrapping_sub(self.wait_ticks) / n),
            },
            finished: finished.saturating_sub(self.finished),
            run_time: to_time(run_ticks.wrapping_sub(self.run_ticks)),
            running_age: if t.aged > 0 {
                to_time(t.age / u64::from(t.aged))
            } else {
                Duration::ZERO
            },
            machine_load,
            task_cpu_share: (!t.share_busy.is_zero())
                .then(|| t.share_cpu.as_secs_f64() / t.share_busy.as_secs_f64()),
            live,
            busy: t.busy,
            mean_busy: if elapsed.is_zero() {
                0.0
            } else {
                t.busy_time.as_secs_f64() / elapsed.as_secs_f64()
            },
            held: t.held,
            blocked,
            stalled,
            unsure,
            queued,
            backpressured: registry.backpressured_now(),
        };
        self.at = at;
        self.submitted = counts.submitted;
        self.started = counts.started;
        self.finished = finished;
        self.run_ticks = run_ticks;
        self.wait_ticks = wait_ticks;
        obs
    }
}
