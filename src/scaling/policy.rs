//! The auto-scaling policy: pure functions of what the supervisor saw
//! (see the module docs of `scaling`), unit-tested without threads.

use crate::metrics::{Observation, ResizeReason};
use crate::sched::config::ScalingConfig;
use std::time::Duration;

/// The supervisor's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Stay,
    Grow(usize, ResizeReason),
    Shrink(usize),
}

/// What the policy remembers between decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PolicyState {
    /// Since when (pool time) utilization has stayed below the shrink
    /// watermark.
    pub(crate) low_since: Option<Duration>,
    /// The most workers in use at any sample since `low_since`.
    pub(crate) low_peak: usize,
    /// The flow over the recent past, for λ and W.
    pub(crate) recent: Recent,
}

/// Tasks that entered service and finished over the recent past, each
/// earlier sample's counts weighed down by e^(−age ÷ [`MEMORY`]): a
/// probe of a quarter of a millisecond sees a handful of tasks, too few to
/// size a pool from alone.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Recent {
    /// Seconds.
    pub(crate) elapsed: f64,
    pub(crate) entered: f64,
    pub(crate) finished: f64,
    /// Seconds: the finished tasks' run times.
    pub(crate) run_time: f64,
}

/// How far back [`Recent`] remembers (its time constant).
pub(crate) const MEMORY: Duration = Duration::from_millis(100);

impl Recent {
    /// The past, faded by `obs`'s interval, with `obs` added.
    fn after(self, obs: &Observation) -> Recent {
        let secs = obs.elapsed.as_secs_f64();
        let keep = (-secs / MEMORY.as_secs_f64()).exp();
        Recent {
            elapsed: self.elapsed * keep + secs,
            entered: self.entered * keep + obs.arrivals.min(obs.started) as f64,
            finished: self.finished * keep + obs.finished as f64,
            run_time: self.run_time * keep + obs.run_time.as_secs_f64(),
        }
    }
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

/// Whether more tasks are queued than there are idle workers to take them:
/// queued work that the workers in tasks (blocked or held among them) hold
/// up. A task queued for the moment it takes an idle worker to wake holds
/// nothing up.
fn backlog(obs: &Observation) -> bool {
    obs.queued > obs.live.saturating_sub(obs.busy)
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

/// The mean run time W in seconds: of the tasks that finished recently,
/// else the running tasks' age (a lower bound), else unknown. While no
/// task finishes, the past's W is no news: the running tasks' age, once
/// longer, replaces it (tasks that ran for microseconds long ago must not
/// say that those blocked now for milliseconds will soon be done).
fn mean_run_time(obs: &Observation, recent: &Recent) -> Option<f64> {
    let age = (!obs.running_age.is_zero()).then_some(obs.running_age.as_secs_f64());
    if recent.finished > 0.0 && recent.run_time > 0.0 {
        let past = recent.run_time / recent.finished;
        Some(match age {
            Some(age) if obs.finished == 0 => past.max(age),
            _ => past,
        })
    } else {
        age
    }
}

/// The policy: a pure function of what was seen (see the module docs).
pub(crate) fn decide(
    obs: &Observation,
    now: Duration,
    state: PolicyState,
    scaling: &ScalingConfig,
    (min, max, cpus): (usize, usize, usize),
) -> (Decision, usize, PolicyState) {
    let live = obs.live.max(1);
    let saturated = saturated(obs);
    let waiting = waiting(obs);
    let recent = state.recent.after(obs);
    let has_backlog = backlog(obs);
    let next = |low_since| PolicyState {
        low_since,
        low_peak: 0,
        recent,
    };
    let working = obs.busy.saturating_sub(waiting);
    // Little's law, the queue's term, and the held workers.
    let (needed, drain) = match mean_run_time(obs, &recent) {
        Some(w) if recent.elapsed > 0.0 => {
            // λ: arrivals that entered service (those still queued are the
            // queue's, and tasks drained from an older queue are not new).
            let lambda = recent.entered / recent.elapsed;
            let drain = obs.queued as f64 * w / scaling.queue_wait_target.as_secs_f64();
            let flow = lambda * w / scaling.target_utilization;
            // Held workers are in λ·W already once their tasks end; they
            // need others beside them only while work waits behind them.
            let held = if has_backlog { obs.held } else { 0 };
            ((flow + drain).ceil() as usize + held, drain)
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
        || (drain >= 1.0 && backlog(obs))
        || obs.queue_wait > scaling.queue_wait_target
        || (backlog(obs) && waiting + obs.held > 0)
        // A pool shrunk to no workers (`min_workers(0)`): whatever waits,
        // nobody else will run it.
        || (obs.queued > 0 && obs.live == 0);
    // Workers waiting for room downstream: the pool's output is the
    // bottleneck, and more workers would only wait beside them.
    let held_downstream = obs.backpressured > 0;
    if target > obs.live && pressure && !held_downstream {
        let reason = if waiting > 0 {
            ResizeReason::Blocked
        } else {
            ResizeReason::Load
        };
        return (Decision::Grow(target, reason), target, next(None));
    }
    // Those waiting downstream are in a task but do no work of this pool's.
    let busy = obs.busy.saturating_sub(obs.backpressured);
    let in_use = busy as f64 / live as f64;
    if in_use < scaling.shrink_below && obs.queued == 0 && obs.live > min {
        // The most workers in use since the pool went quiet: at each
        // sample, or on average over its interval (but the interval that
        // ends at the first quiet sample was, for all it tells, busy).
        let (since, peak) = match state.low_since {
            Some(since) => {
                let mean = (obs.mean_busy - obs.backpressured as f64).ceil() as usize;
                (since, state.low_peak.max(busy).max(mean))
            }
            None => (now, busy),
        };
        if now.saturating_sub(since) >= scaling.keep_alive {
            // To what the quiet spell used, at the target utilization (at
            // least one worker fewer); then wait another `keep_alive`.
            let wanted = (peak as f64 / scaling.target_utilization).ceil() as usize;
            let to = wanted.clamp(min, obs.live - 1);
            return (Decision::Shrink(to), to, next(Some(now)));
        }
        let state = PolicyState {
            low_since: Some(since),
            low_peak: peak,
            recent,
        };
        return (Decision::Stay, obs.live, state);
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
/// waits, the pool may still grow (none of its workers waits for room
/// downstream), and it just grew (does the growth suffice?), or workers
/// wait while more is queued than idle workers can take, or the tasks' CPU
/// share is still unknown (is the work blocking?). Compute-bound backlogs,
/// once seen as such, and pools at their maximum are sampled at the
/// normal interval.
pub(crate) fn probe(obs: &Observation, decision: Decision, max: usize) -> bool {
    obs.queued > 0
        && obs.live < max
        && obs.backpressured == 0
        && (matches!(decision, Decision::Grow(..))
            || (waiting(obs) > 0 && backlog(obs))
            || obs.unsure > 0
            || obs.task_cpu_share.is_none())
}
