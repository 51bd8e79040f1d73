//! Auto-scaling: a supervisor that sizes the pool between `min_workers` and
//! `max_workers`, and the pure policy it follows.
//!
//! Every `interval` (sooner when nudged: a submission finding no idle
//! worker, `block_in_place`; and every [`PROBE`] while a backlog waits and
//! the pool is growing or still gathering evidence) the supervisor observes
//! the pool (`Sampler`) and asks [`decide`]:
//!
//! 1. **Blocking or compute.** Each worker publishes its thread's CPU clock,
//!    which Linux keeps exact even for a running thread. A worker that spent
//!    most of the interval in tasks but less than half of that time on a CPU
//!    either slept or waited for a CPU; its run-queue wait (scheduler
//!    statistics, read for such workers only) tells which ([`classify`]).
//!    One that slept is *stalled*: blocked without announcing it. One that
//!    waited is *starved*: its waiting time is not held against its tasks'
//!    CPU share. Workers announced as blocked (`block_in_place`,
//!    `join_blocking`) count as blocked at once.
//! 2. **Little's law.** With λ the rate of new tasks entering service
//!    (arrivals, less those still queued) and W their mean run time (before
//!    any task finished: the running tasks' age, a lower bound), the tasks
//!    in service are L = λ·W and need L ÷ target utilisation workers. The
//!    queue needs Q·W ÷ `queue_wait_target` more: enough to drain it within
//!    that target. Workers *held* by a task that has run more than 2·W (a
//!    long block the mean does not foresee) are added on top. Before W can
//!    be known at all, each waiting worker is replaced.
//! 3. **CPU cap.** The tasks' CPU share s (CPU time ÷ busy time of the
//!    workers busy most of the interval) caps the pool at CPUs ÷ s (plus the
//!    announced-blocked workers): compute tasks (s ≈ 1) never get more
//!    workers than CPUs, extra threads only add switching; tasks that block
//!    90 % of the time may use ten per CPU. With the CPUs saturated the pool
//!    does not grow beyond max(live − blocked, CPUs) + blocked whatever s
//!    says (CPU-bound run times stretch under oversubscription, which lowers
//!    s). Without a reading the cap is CPUs + blocked.
//! 4. **Hysteresis.** Grow straight to the target when utilisation (the
//!    mean busy workers over live) is above the grow watermark, the queue
//!    needs a worker, the tasks that started waited longer than the
//!    queue-wait target, or blocked or held workers hold up queued work; shrink one worker at a time, only
//!    after utilisation stayed below the shrink watermark for `keep_alive`;
//!    in between, stay. A steady load inside the band never resizes.
//!
//! Retiring a worker never loses a task: the highest-numbered idle worker
//! hands its deque to the injector and its shards to the remaining workers'
//! inboxes, gives its deque back to its slot, and leaves; the supervisor
//! joins it. A key's shard never changes (the shard count is fixed); only
//! its home worker does.

use crate::clock::{ticks, Calibration};
use crate::cpu::{process_cpu_time, Sched, SchedStat, ThreadClock};
use crate::loom::sync::Arc;
use crate::metrics::WorkerState;
use crate::registry::Registry;
use crate::worker::WorkerThread;
use std::time::{Duration, Instant};

/// The scaling settings (`Builder` knobs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Scaling {
    pub(crate) interval: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) grow_above: f64,
    pub(crate) shrink_below: f64,
    pub(crate) target_utilisation: f64,
    pub(crate) queue_wait_target: Duration,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            interval: Duration::from_millis(20),
            keep_alive: Duration::from_secs(10),
            grow_above: 0.8,
            shrink_below: 0.3,
            target_utilisation: 0.7,
            queue_wait_target: Duration::from_millis(20),
        }
    }
}

/// What the supervisor saw over one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Observation {
    /// The interval's length.
    pub elapsed: Duration,
    /// Tasks submitted in the interval.
    pub arrivals: u64,
    /// Tasks that started running in the interval (entered service).
    pub started: u64,
    /// How long, on average, the tasks that started in the interval had
    /// waited in the queue (zero when tasks are not timed).
    pub queue_wait: Duration,
    /// Tasks that finished in the interval.
    pub finished: u64,
    /// Their summed run time.
    pub run_time: Duration,
    /// How long, on average, the tasks running at the end of the interval
    /// (blocked ones included) had run so far: a lower bound of the mean run time before any task
    /// finished (zero when tasks are not timed).
    pub running_age: Duration,
    /// CPU use as a share of all CPUs: the larger of the workers' own (exact
    /// thread clocks, over the interval) and the whole process's (over the
    /// last window of at least 50 ms: Linux folds other running threads'
    /// time into it only at scheduler ticks); `None` before any reading.
    pub machine_load: Option<f64>,
    /// CPU time ÷ time able to run, of the workers that ran tasks for most
    /// of the interval (time spent waiting for a CPU left out): near 1 for
    /// compute, near 0 for blocking work; `None` without thread clocks or
    /// without such a worker.
    pub task_cpu_share: Option<f64>,
    /// Live workers.
    pub live: usize,
    /// Workers running a task at the sample (blocked ones included).
    pub busy: usize,
    /// Workers running tasks on average over the interval: the tasks in
    /// service, as measured (Little's L).
    pub mean_busy: f64,
    /// Workers in a task that has run more than twice the mean run time of
    /// the tasks that finished in the interval (zero when none finished, or
    /// tasks are not timed).
    pub held: usize,
    /// Workers announced as blocked.
    pub blocked: usize,
    /// Workers that ran a task for most of the interval but slept (neither
    /// on a CPU nor waiting for one) for at least half of it: blocked
    /// without announcing it (see [`classify`]).
    pub stalled: usize,
    /// Workers that ran a task for most of the interval on less than half
    /// a CPU, whose run-queue wait is read for the first time: classified
    /// at the next sample.
    pub unsure: usize,
    /// Tasks queued.
    pub queued: usize,
}

/// Why the pool was resized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResizeReason {
    /// Little's law (or the backlog) asked for more workers.
    Load,
    /// Workers blocked (announced or seen) while work waited.
    Blocked,
    /// Utilisation stayed below the shrink watermark for `keep_alive`.
    Idle,
}

/// A resize, as recorded in the history and passed to `on_resize`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResizeEvent {
    /// When, since the pool was built.
    pub at: Duration,
    /// Live workers before.
    pub from: usize,
    /// Live workers after (for a shrink: asked for; the worker retires
    /// when idle).
    pub to: usize,
    /// Why.
    pub reason: ResizeReason,
    /// What the supervisor saw.
    pub observation: Observation,
}

/// The supervisor's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Stay,
    Grow(usize, ResizeReason),
    Shrink(usize),
}

/// What the policy remembers between decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PolicyState {
    /// Since when (pool time) utilisation has stayed below the shrink
    /// watermark.
    pub(crate) low_since: Option<Duration>,
}

/// The share of all CPUs above which the machine counts as saturated.
const SATURATED: f64 = 0.85;

/// How soon the supervisor looks again while a backlog waits and the pool
/// is growing or still gathering evidence (at most `interval`). Thread
/// clocks are exact, so a quarter of a millisecond tells a blocked worker
/// from a computing one.
pub(crate) const PROBE: Duration = Duration::from_micros(250);

/// Whether the CPUs are all taken (≥ 85 % load): more threads would only
/// add switching.
fn saturated(obs: &Observation) -> bool {
    obs.machine_load.is_some_and(|u| u >= SATURATED)
}

/// Workers holding a thread but not using a CPU: announced as blocked, or
/// seen stalled.
fn waiting(obs: &Observation) -> usize {
    obs.blocked + obs.stalled
}

/// What a worker that ran tasks for most of an interval did with the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// At least half of it on a CPU.
    Compute,
    /// At least half of it asleep (neither on a CPU nor runnable).
    Blocked,
    /// Less than half on a CPU, the rest mostly waiting for one.
    Starved,
    /// Less than half on a CPU, and no run-queue reading yet to say why.
    Unsure,
}

/// Classifies a worker's `in_tasks` time of an interval from its CPU time
/// and (where read) its run-queue wait over the interval and whether it is
/// runnable now. A runnable thread is not asleep, whatever its counters say:
/// a wait in progress is added to its run-queue wait only once it runs.
pub(crate) fn classify(in_tasks: Duration, cpu: Duration, sched: Option<(Duration, bool)>) -> Use {
    if cpu * 2 >= in_tasks {
        return Use::Compute;
    }
    match sched {
        None => Use::Unsure,
        Some((delay, false)) if in_tasks.saturating_sub(cpu + delay) * 2 >= in_tasks => {
            Use::Blocked
        }
        Some(_) => Use::Starved,
    }
}

/// The mean run time W in seconds: of the tasks that finished in the
/// interval, else the running tasks' age (a lower bound), else unknown.
fn mean_run_time(obs: &Observation) -> Option<f64> {
    if obs.finished > 0 && !obs.run_time.is_zero() {
        Some(obs.run_time.as_secs_f64() / obs.finished as f64)
    } else if !obs.running_age.is_zero() {
        Some(obs.running_age.as_secs_f64())
    } else {
        None
    }
}

/// The policy: a pure function of what was seen (see the module docs).
pub(crate) fn decide(
    obs: &Observation,
    now: Duration,
    state: PolicyState,
    scaling: &Scaling,
    (min, max, cpus): (usize, usize, usize),
) -> (Decision, usize, PolicyState) {
    let live = obs.live.max(1);
    let saturated = saturated(obs);
    let waiting = waiting(obs);
    let next = |low_since| PolicyState { low_since };
    let working = obs.busy.saturating_sub(waiting);
    let secs = obs.elapsed.as_secs_f64();
    // Little's law, the queue's term, and the held workers.
    let (needed, drain) = match mean_run_time(obs) {
        Some(w) if secs > 0.0 => {
            // λ: arrivals that entered service (those still queued are the
            // queue's, and tasks drained from an older queue are not new).
            let lambda = obs.arrivals.min(obs.started) as f64 / secs;
            let drain = obs.queued as f64 * w / scaling.queue_wait_target.as_secs_f64();
            let flow = lambda * w / scaling.target_utilisation;
            ((flow + drain).ceil() as usize + obs.held, drain)
        }
        // Nothing to size from yet: replace each waiting worker.
        _ if obs.queued > 0 => (live + waiting, 0.0),
        _ => (working, 0.0),
    };
    // The CPU cap (a cap from the machine's load alone would let CPU-bound
    // work grow whenever a moment of idleness showed headroom).
    let mut cap = match obs.task_cpu_share {
        Some(s) => ((cpus as f64 / s.max(1e-3)).floor() as usize).max(cpus) + obs.blocked,
        None if obs.machine_load.is_some() && waiting > 0 && !saturated => max,
        None => cpus + obs.blocked,
    };
    if saturated {
        cap = cap.min(obs.live.saturating_sub(waiting).max(cpus) + waiting);
    }
    let target = needed.min(cap).clamp(min, max);
    let pressure = obs.mean_busy / live as f64 > scaling.grow_above
        || drain >= 1.0
        || obs.queue_wait > scaling.queue_wait_target
        || (obs.queued > 0 && waiting + obs.held > 0);
    if target > obs.live && pressure {
        let reason = if waiting > 0 {
            ResizeReason::Blocked
        } else {
            ResizeReason::Load
        };
        return (Decision::Grow(target, reason), target, next(None));
    }
    let in_use = obs.busy as f64 / live as f64;
    if in_use < scaling.shrink_below && obs.queued == 0 && obs.live > min && obs.blocked == 0 {
        let since = state.low_since.unwrap_or(now);
        if now.saturating_sub(since) >= scaling.keep_alive {
            // One step, then wait another `keep_alive`.
            let to = obs.live - 1;
            return (Decision::Shrink(to), to, next(Some(now)));
        }
        return (Decision::Stay, obs.live, next(Some(since)));
    }
    (Decision::Stay, obs.live, next(None))
}

/// Whether workers should take batches of tasks from the injector: not
/// while the tasks block (a worker holding a batch of blocking tasks runs
/// them one after another however many workers idle), yes once they are
/// seen to compute; `None` without evidence either way.
pub(crate) fn takes_batches(obs: &Observation) -> Option<bool> {
    if waiting(obs) > 0 {
        return Some(false);
    }
    obs.task_cpu_share.map(|s| s >= 0.5)
}

/// Whether to look again after [`PROBE`] rather than a whole interval: work
/// waits, the pool may still grow, and it just grew (does the growth
/// suffice?) or workers wait or the tasks' CPU share is still unknown (is
/// the work blocking?). Compute-bound backlogs, once seen as such, and
/// pools at their maximum are sampled at the normal interval.
pub(crate) fn probe(obs: &Observation, decision: Decision, max: usize) -> bool {
    obs.queued > 0
        && obs.live < max
        && (matches!(decision, Decision::Grow(..))
            || waiting(obs) > 0
            || obs.unsure > 0
            || obs.task_cpu_share.is_none())
}

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
struct Sampler {
    at: Instant,
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
    fn new(registry: &Registry, cpus: usize) -> Self {
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
        let status = &counters.status[i];
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
            busy: counters.run_time[i].sum_ticks().wrapping_add(current),
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

    fn observe(&mut self, registry: &Registry) -> Observation {
        let at = Instant::now();
        let now_ticks = ticks();
        let elapsed = at.saturating_duration_since(self.at);
        let ns_per_tick = registry.calibration.ns_per_tick();
        let to_time = |t: u64| Calibration::to_duration(t, ns_per_tick);
        let counters = &registry.counters;
        let live = registry.live_workers();
        self.used = self.used.max(live);
        let counts = counters.sum_of_first(self.used);
        let finished = counts.completed + counts.panicked + counts.timed_out + counts.cancelled;
        // Run times are known only when tasks are timed into histograms;
        // otherwise "busy" is read from the worker states alone.
        let timed = registry.config.histograms;
        let sum = |hs: &[crossbeam_utils::CachePadded<crate::histogram::AtomicHistogram>]| {
            hs[..self.used]
                .iter()
                .map(|h| h.sum_ticks())
                .fold(0u64, u64::wrapping_add)
        };
        let (run_ticks, wait_ticks) = if timed {
            (sum(&counters.run_time), sum(&counters.queue_wait))
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

pub(crate) fn spawn(
    registry: Arc<Registry>,
) -> std::io::Result<crate::loom::thread::JoinHandle<()>> {
    crate::loom::thread::Builder::new()
        .name(format!("{}-supervisor", registry.config.thread_name))
        .spawn(move || run(&registry))
}

fn run(registry: &Arc<Registry>) {
    let scaling = registry.config.scaling;
    let probe_period = PROBE.min(scaling.interval);
    let started = Instant::now();
    let slot = registry.counters.slot(None);
    let limits = (
        registry.config.min_workers,
        registry.max_workers(),
        num_cpus::get().max(1),
    );
    let mut state = PolicyState::default();
    let mut sampler = Sampler::new(registry, limits.2);
    let mut period = scaling.interval;
    loop {
        let due = sampler.at + period;
        registry.supervisor.park_until(due);
        if Instant::now() >= due {
            // A timed sample: the next nudge may wake the supervisor early.
            registry.rearm_nudge();
        }
        // A nudge wakes the supervisor early, but no sooner than a probe
        // after the last sample: rates over a shorter window mean little.
        let soonest = sampler.at + probe_period;
        if let Some(wait) = soonest.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if registry.is_closed() {
            return;
        }
        registry.reap_retired();
        crate::metrics::bump(&slot.scaling_samples);
        let obs = sampler.observe(registry);
        let (decision, target, next) = decide(&obs, started.elapsed(), state, &scaling, limits);
        state = next;
        if let Some(on) = takes_batches(&obs) {
            registry.set_batches(on);
        }
        period = if probe(&obs, decision, limits.1) {
            probe_period
        } else {
            scaling.interval
        };
        registry
            .target
            .store(target, std::sync::atomic::Ordering::Relaxed);
        match decision {
            Decision::Stay => {}
            Decision::Grow(to, reason) => {
                let from = obs.live;
                let at = started.elapsed();
                let reached = Registry::grow_to(registry, to);
                if reached > from {
                    registry.record_resize(ResizeEvent {
                        at,
                        from,
                        to: reached,
                        reason,
                        observation: obs,
                    });
                }
            }
            Decision::Shrink(to) => {
                registry.request_retire(to);
                registry.record_resize(ResizeEvent {
                    at: started.elapsed(),
                    from: obs.live,
                    to,
                    reason: ResizeReason::Idle,
                    observation: obs,
                });
            }
        }
    }
}

/// Runs `f`, announcing that it blocks (I/O, a lock, a sleep): on a worker
/// of an auto-scaling pool the worker is counted as blocked rather than busy
/// and the supervisor is woken at once, so it can add a worker while this
/// one waits (as Java's managed blocking and tokio's `block_in_place` do).
/// Elsewhere it just runs `f`.
///
/// ```
/// let pool = ebbtide::Pool::builder().min_workers(1).max_workers(4).build()?;
/// let read = pool.spawn(|| ebbtide::block_in_place(|| {
///     std::thread::sleep(std::time::Duration::from_millis(1)); // stands for I/O
///     42
/// }))?;
/// assert_eq!(read.join()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn block_in_place<R>(f: impl FnOnce() -> R) -> R {
    match WorkerThread::current() {
        Some(worker) => {
            let _blocked = worker.registry().block_guard();
            worker.registry().nudge();
            f()
        }
        None => f(),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// min 2, max 512, 2 CPUs.
    const LIMITS: (usize, usize, usize) = (2, 512, 2);
    const MS: Duration = Duration::from_millis(1);

    fn obs(live: usize, busy: usize, queued: usize) -> Observation {
        Observation {
            elapsed: 100 * MS,
            live,
            busy,
            queued,
            ..Observation::default()
        }
    }

    /// `n` tasks of `w` each started and finished in the interval.
    fn ran(mut o: Observation, n: u64, w: Duration) -> Observation {
        o.started = n;
        o.finished = n;
        o.run_time = w * n as u32;
        o
    }

    fn decide_now(o: &Observation) -> Decision {
        decide(
            o,
            Duration::ZERO,
            PolicyState::default(),
            &Scaling::default(),
            LIMITS,
        )
        .0
    }

    #[test]
    fn steady_load_inside_the_band_stays() {
        // λ = 1,000/s, W = 1 ms: L = 1, ÷ 0.7 → 2 workers, as live.
        let mut o = ran(obs(2, 1, 0), 100, MS);
        o.arrivals = 100;
        o.machine_load = Some(0.5);
        o.task_cpu_share = Some(1.0);
        assert_eq!(decide_now(&o), Decision::Stay);
        // A task queued for a moment at 70 % of 2 CPUs: the backlog term is
        // a twentieth of a worker, and the CPU cap holds 2 anyway.
        let mut o = ran(obs(2, 2, 1), 28, MS);
        o.elapsed = 20 * MS;
        o.mean_busy = 1.4;
        o.machine_load = Some(0.7);
        o.task_cpu_share = Some(1.0);
        assert_eq!(decide_now(&o), Decision::Stay);
        // The same without a CPU-share reading: capped at the CPUs.
        o.task_cpu_share = None;
        assert_eq!(decide_now(&o), Decision::Stay);
    }

    #[test]
    fn a_blocking_burst_grows_straight_to_drain_the_queue_in_the_target() {
        // 2 workers stalled in 1 ms tasks using 0.5 % CPU, 4,000 queued.
        let mut o = ran(obs(2, 2, 4_000), 40, MS);
        o.arrivals = 4_000;
        o.mean_busy = 2.0;
        o.stalled = 2;
        o.machine_load = Some(0.01);
        o.task_cpu_share = Some(0.005);
        // λ = 400/s entered service, W = 1 ms: L = 0.4 → 0.57; the queue
        // 4,000 × 1 ms ÷ 20 ms = 200.
        assert_eq!(decide_now(&o), Decision::Grow(201, ResizeReason::Blocked));
        // A shorter queue-wait target asks for 401, capped at CPUs ÷ share.
        let scaling = Scaling {
            queue_wait_target: 10 * MS,
            ..Scaling::default()
        };
        let (d, target, _) = decide(&o, Duration::ZERO, PolicyState::default(), &scaling, LIMITS);
        assert_eq!(
            (d, target),
            (Decision::Grow(400, ResizeReason::Blocked), 400)
        );
    }

    #[test]
    fn before_any_task_finished_the_running_age_bounds_the_run_time() {
        // A probe 250 µs into a burst: nothing finished, tasks 0.5 ms old.
        let mut o = obs(2, 2, 3_998);
        o.elapsed = Duration::from_micros(250);
        o.started = 2;
        o.running_age = Duration::from_micros(500);
        o.stalled = 2;
        o.machine_load = Some(0.02);
        o.task_cpu_share = Some(0.005);
        // No new arrivals entered service; the queue 3,998 × 0.5 ÷ 20 = 99.95.
        assert_eq!(decide_now(&o), Decision::Grow(100, ResizeReason::Blocked));
        // Without any timing: each waiting worker is replaced.
        o.running_age = Duration::ZERO;
        assert_eq!(decide_now(&o), Decision::Grow(4, ResizeReason::Blocked));
    }

    #[test]
    fn the_cpu_share_caps_the_pool_at_cpus_over_share() {
        // Tasks that compute half their run time: 2 ÷ 0.5 = 4 workers.
        let mut o = ran(obs(2, 2, 1_000), 100, 10 * MS);
        o.machine_load = Some(0.6);
        o.task_cpu_share = Some(0.5);
        assert_eq!(decide_now(&o), Decision::Grow(4, ResizeReason::Load));
        // 5 % CPU: 40 workers, though the backlog asks for 500.
        o.task_cpu_share = Some(0.05);
        o.stalled = 2;
        assert_eq!(decide_now(&o), Decision::Grow(40, ResizeReason::Blocked));
    }

    #[test]
    fn cpu_bound_work_is_capped_at_the_cpus() {
        // Every worker busy computing, a backlog.
        let mut o = ran(obs(2, 2, 1_000), 500, Duration::from_micros(200));
        o.machine_load = Some(1.0);
        o.task_cpu_share = Some(1.0);
        assert_eq!(
            decide_now(&o),
            Decision::Stay,
            "2 CPUs: no more than 2 workers"
        );
        // A noisy share (0.9) still rounds to the CPUs.
        o.task_cpu_share = Some(0.9);
        o.machine_load = Some(0.8);
        assert_eq!(decide_now(&o), Decision::Stay);
        // Oversubscribed already (4 live, CPUs saturated, so the share
        // reads 0.5): no further growth.
        let mut o = ran(obs(4, 4, 1_000), 400, MS);
        o.machine_load = Some(0.95);
        o.task_cpu_share = Some(0.5);
        assert_eq!(decide_now(&o), Decision::Stay);
        // Unknown CPU share (nothing measured yet): capped at the CPUs too.
        let o = obs(2, 2, 1_000);
        assert_eq!(decide_now(&o), Decision::Stay);
    }

    #[test]
    fn classify_tells_sleep_from_waiting_for_a_cpu() {
        let us = Duration::from_micros;
        let asleep = |d| Some((us(d), false));
        // Half or more on a CPU: compute, whatever else.
        assert_eq!(classify(us(1_000), us(500), None), Use::Compute);
        assert_eq!(classify(us(1_000), us(990), asleep(0)), Use::Compute);
        // Short of CPU, no statistics yet: unsure.
        assert_eq!(classify(us(1_000), us(10), None), Use::Unsure);
        // Short of CPU, not waiting for one, asleep now: blocked.
        assert_eq!(classify(us(1_000), us(10), asleep(5)), Use::Blocked);
        // Short of CPU because it waited for one (four spinners on two
        // CPUs): starved, not blocked.
        assert_eq!(classify(us(1_000), us(480), asleep(500)), Use::Starved);
        // Runnable now: its wait in progress is not counted yet, so the
        // counters cannot show it asleep.
        assert_eq!(
            classify(us(1_000), us(10), Some((us(5), true))),
            Use::Starved
        );
        // Asleep exactly half the time counts as blocked.
        assert_eq!(classify(us(1_000), us(250), asleep(250)), Use::Blocked);
        assert_eq!(classify(us(1_000), us(250), asleep(251)), Use::Starved);
    }

    #[test]
    fn a_queue_wait_above_the_target_grows_the_pool() {
        // 10 ms tasks at 200/s on 2 workers, 20 % CPU, one queued: the
        // queue's term is half a worker and utilisation 0.75 is under the
        // watermark, but the tasks that started waited 30 ms.
        let mut o = ran(obs(2, 2, 1), 20, 10 * MS);
        o.arrivals = 20;
        o.mean_busy = 1.5;
        o.machine_load = Some(0.3);
        o.task_cpu_share = Some(0.2);
        assert_eq!(decide_now(&o), Decision::Stay);
        o.queue_wait = 30 * MS;
        // λ·W ÷ 0.7 = 2.86, + the queue's 0.5: 4 workers.
        assert_eq!(decide_now(&o), Decision::Grow(4, ResizeReason::Load));
    }

    #[test]
    fn a_ramp_grows_to_the_backlogs_demand() {
        // 8 workers on 8 ms tasks of 0.5 % CPU, 100 queued.
        let mut o = ran(obs(8, 8, 100), 10, 8 * MS);
        o.arrivals = 10;
        o.machine_load = Some(0.005);
        o.task_cpu_share = Some(0.005);
        // L = 100/s × 8 ms = 0.8 → 1.14; the queue 100 × 8 ÷ 20 = 40.
        assert_eq!(decide_now(&o), Decision::Grow(42, ResizeReason::Load));
    }

    #[test]
    fn a_worker_held_by_a_long_task_is_added_though_short_tasks_set_w() {
        // One worker blocked in a long task; the tasks that finished were
        // 10 µs each, and 50 wait: W alone asks for one worker, which the
        // long task holds.
        let mut o = ran(obs(1, 1, 50), 20, Duration::from_micros(10));
        o.blocked = 1;
        o.mean_busy = 1.0;
        o.held = 1;
        o.machine_load = Some(0.01);
        let limits = (1, 4, 2);
        let (d, _, _) = decide(
            &o,
            Duration::ZERO,
            PolicyState::default(),
            &Scaling::default(),
            limits,
        );
        assert_eq!(d, Decision::Grow(2, ResizeReason::Blocked));
    }

    #[test]
    fn announced_blocking_with_a_backlog_adds_workers() {
        // Both workers blocked, work waiting, nothing measured: each
        // blocked worker is replaced (the CPU cap counts them out).
        let mut o = obs(2, 2, 10);
        o.blocked = 2;
        assert_eq!(decide_now(&o), Decision::Grow(4, ResizeReason::Blocked));
        // Without demand, blocking alone adds nothing.
        let mut o = obs(2, 2, 0);
        o.blocked = 2;
        assert_eq!(decide_now(&o), Decision::Stay);
    }

    #[test]
    fn blocking_tasks_are_taken_one_at_a_time_and_compute_in_batches() {
        let mut o = obs(4, 4, 100);
        assert_eq!(takes_batches(&o), None, "no evidence yet");
        o.task_cpu_share = Some(0.95);
        assert_eq!(takes_batches(&o), Some(true));
        o.task_cpu_share = Some(0.05);
        assert_eq!(takes_batches(&o), Some(false));
        // Workers seen blocked decide it, whatever the others compute.
        o.task_cpu_share = Some(0.9);
        o.stalled = 1;
        assert_eq!(takes_batches(&o), Some(false));
        o.stalled = 0;
        o.blocked = 2;
        assert_eq!(takes_batches(&o), Some(false));
    }

    #[test]
    fn probes_while_growing_or_unsure_and_not_otherwise() {
        let mut o = obs(2, 2, 1_000);
        // Backlog, CPU share unknown: look again soon.
        assert!(probe(&o, Decision::Stay, 512));
        // Known to compute: the normal interval.
        o.task_cpu_share = Some(1.0);
        o.machine_load = Some(1.0);
        assert!(!probe(&o, Decision::Stay, 512));
        // Just grew: does it suffice?
        assert!(probe(&o, Decision::Grow(4, ResizeReason::Load), 512));
        // Blocked workers with work waiting, or workers not yet classified.
        o.blocked = 1;
        assert!(probe(&o, Decision::Stay, 512));
        o.blocked = 0;
        o.unsure = 3;
        assert!(probe(&o, Decision::Stay, 512));
        // At max, or with nothing queued: never.
        o.live = 512;
        assert!(!probe(&o, Decision::Stay, 512));
        let o = obs(2, 2, 0);
        assert!(!probe(&o, Decision::Stay, 512));
    }

    #[test]
    fn shrink_waits_for_keep_alive_then_steps_one_at_a_time() {
        let scaling = Scaling {
            keep_alive: Duration::from_secs(1),
            ..Scaling::default()
        };
        let o = obs(10, 0, 0);
        let (d, _, s) = decide(
            &o,
            Duration::from_secs(5),
            PolicyState::default(),
            &scaling,
            LIMITS,
        );
        assert_eq!(d, Decision::Stay);
        let (d, _, s) = decide(&o, Duration::from_millis(5_500), s, &scaling, LIMITS);
        assert_eq!(d, Decision::Stay, "below the watermark for only 0.5 s");
        let (d, _, s) = decide(&o, Duration::from_secs(6), s, &scaling, LIMITS);
        assert_eq!(d, Decision::Shrink(9));
        let (d, _, _) = decide(&o, Duration::from_millis(6_500), s, &scaling, LIMITS);
        assert_eq!(d, Decision::Stay, "the next step waits another keep-alive");
        // Never below min.
        let o = obs(2, 0, 0);
        let (d, _, _) = decide(
            &o,
            Duration::from_secs(100),
            PolicyState {
                low_since: Some(Duration::ZERO),
            },
            &scaling,
            LIMITS,
        );
        assert_eq!(d, Decision::Stay);
    }

    #[test]
    fn busy_again_resets_the_shrink_clock() {
        let scaling = Scaling {
            keep_alive: Duration::from_secs(1),
            ..Scaling::default()
        };
        let (_, _, s) = decide(
            &obs(10, 0, 0),
            Duration::from_secs(1),
            PolicyState::default(),
            &scaling,
            LIMITS,
        );
        let (_, _, s) = decide(
            &obs(10, 5, 0),
            Duration::from_millis(1_500),
            s,
            &scaling,
            LIMITS,
        );
        assert_eq!(s, PolicyState::default());
        let (d, _, _) = decide(
            &obs(10, 0, 0),
            Duration::from_millis(2_100),
            s,
            &scaling,
            LIMITS,
        );
        assert_eq!(d, Decision::Stay);
    }
}
