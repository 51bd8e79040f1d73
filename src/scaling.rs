//! Auto-scaling: a supervisor that sizes the pool between `min_workers` and
//! `max_workers`, and the pure policy it follows.
//!
//! Every `interval` (or at once when nudged: a submission finding no idle
//! worker, `block_in_place`) the supervisor observes the pool — arrivals,
//! finishes, the summed run time of finished tasks, busy and blocked
//! workers, the queue, and the process's CPU time — and asks [`decide`]:
//!
//! 1. **Little's law.** With arrival rate λ and mean run time W, the tasks
//!    in service are L = λ·W; the workers needed are L ÷ target utilisation,
//!    plus the workers announced as blocked (`block_in_place`,
//!    `join_blocking`).
//! 2. **CPU cap.** The process's CPU time as a share of all CPUs, over
//!    windows of at least 50 ms (shorter ones misread running threads), tells compute from blocking work: with the CPUs saturated
//!    (≥ 85 %) the pool does not grow beyond max(live − blocked, CPUs) +
//!    blocked, since extra threads only add switching; with headroom (the
//!    work blocks) it may grow to `max_workers`. Without a reading the cap is
//!    CPUs + blocked: growth beyond it waits for evidence.
//! 3. **Backlog.** With tasks queued and every worker busy, the pool grows
//!    at least to double its size (within the cap), not one thread per tick.
//! 4. **Hysteresis.** Grow straight to the target when utilisation is above
//!    the grow watermark or tasks are queued; shrink one worker at a time,
//!    only after utilisation stayed below the shrink watermark for
//!    `keep_alive`; in between, stay. A steady load inside the band never
//!    resizes.
//!
//! Retiring a worker never loses a task: the highest-numbered idle worker
//! hands its deque to the injector and its shards to the remaining workers'
//! inboxes, gives its deque back to its slot, and leaves; the supervisor
//! joins it. A key's shard never changes (the shard count is fixed); only
//! its home worker does.

use crate::loom::sync::Arc;
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
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            interval: Duration::from_millis(20),
            keep_alive: Duration::from_secs(10),
            grow_above: 0.8,
            shrink_below: 0.3,
            target_utilisation: 0.7,
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
    /// Tasks that finished in the interval.
    pub finished: u64,
    /// Their summed run time.
    pub run_time: Duration,
    /// The process's CPU time as a share of all CPUs, over the last window
    /// of at least 50 ms (Linux folds a running thread's CPU time in only
    /// at scheduler ticks, so shorter windows read spinning threads as
    /// idle); `None` before the first window.
    pub machine_load: Option<f64>,
    /// Live workers.
    pub live: usize,
    /// Workers running a task (blocked ones included).
    pub busy: usize,
    /// Workers announced as blocked.
    pub blocked: usize,
    /// Tasks queued.
    pub queued: usize,
}

/// Why the pool was resized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResizeReason {
    /// Little's law (or the backlog) asked for more workers.
    Load,
    /// Workers announced they block.
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

/// The policy: a pure function of what was seen (see the module docs).
pub(crate) fn decide(
    obs: &Observation,
    now: Duration,
    state: PolicyState,
    scaling: &Scaling,
    (min, max, cpus): (usize, usize, usize),
) -> (Decision, usize, PolicyState) {
    let live = obs.live.max(1);
    let working = obs.busy.saturating_sub(obs.blocked);
    let utilisation = working as f64 / live as f64;
    // Little's law over the interval.
    let needed = if obs.finished > 0 && !obs.elapsed.is_zero() {
        let w = obs.run_time.as_secs_f64() / obs.finished as f64;
        let lambda = obs.arrivals as f64 / obs.elapsed.as_secs_f64();
        ((lambda * w) / scaling.target_utilisation).ceil() as usize
    } else {
        working
    };
    // How much of the machine the process used: saturated CPUs mean more
    // threads would only add switching (CPU-bound work); headroom means the
    // work blocks, and Little's law decides. (A cap from CPU time ÷ run
    // time would justify any oversubscription of CPU-bound work, whose run
    // time stretches with it.)
    let cap = match obs.machine_load {
        Some(u) if u < SATURATED => max,
        Some(_) => obs.live.saturating_sub(obs.blocked).max(cpus) + obs.blocked,
        None => cpus + obs.blocked,
    };
    let mut want = needed + obs.blocked;
    if obs.queued > 0 && working + obs.blocked >= live {
        // A backlog with every worker busy: at least double.
        want = want.max(live * 2);
    }
    let target = want.min(cap).clamp(min, max);
    if target > obs.live && (utilisation > scaling.grow_above || obs.queued > 0 || obs.blocked > 0)
    {
        let reason = if obs.blocked > 0 && needed <= obs.live {
            ResizeReason::Blocked
        } else {
            ResizeReason::Load
        };
        return (
            Decision::Grow(target, reason),
            target,
            PolicyState::default(),
        );
    }
    if utilisation < scaling.shrink_below && obs.queued == 0 && obs.live > min && obs.blocked == 0 {
        let since = state.low_since.unwrap_or(now);
        if now.saturating_sub(since) >= scaling.keep_alive {
            // One step, then wait another `keep_alive`.
            let to = obs.live - 1;
            return (
                Decision::Shrink(to),
                to,
                PolicyState {
                    low_since: Some(now),
                },
            );
        }
        return (
            Decision::Stay,
            obs.live,
            PolicyState {
                low_since: Some(since),
            },
        );
    }
    (Decision::Stay, obs.live, PolicyState::default())
}

/// The process's CPU time (user + system).
fn process_cpu_time() -> Option<Duration> {
    #[cfg(all(unix, not(loom)))]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
        // SAFETY: `getrusage` writes a `rusage` into the pointer on success.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: initialised by the successful call above.
        let usage = unsafe { usage.assume_init() };
        let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
        Some(t(usage.ru_utime) + t(usage.ru_stime))
    }
    #[cfg(not(all(unix, not(loom))))]
    {
        None
    }
}

struct Totals {
    at: Instant,
    submitted: u64,
    finished: u64,
    run_time: Duration,
}

/// The machine-load window (see `Observation::machine_load`).
const LOAD_WINDOW: Duration = Duration::from_millis(50);

fn totals(registry: &Registry) -> Totals {
    let m = registry.metrics();
    let c = m.counts;
    Totals {
        at: Instant::now(),
        submitted: c.submitted,
        finished: c.completed + c.panicked + c.timed_out + c.cancelled,
        run_time: m.run_time.sum(),
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
    let started = Instant::now();
    let slot = registry.counters.slot(None);
    let limits = (
        registry.config.min_workers,
        registry.max_workers(),
        num_cpus::get().max(1),
    );
    let mut state = PolicyState::default();
    let mut last = totals(registry);
    let mut load_anchor = (Instant::now(), process_cpu_time());
    let mut machine_load = None;
    loop {
        registry
            .supervisor
            .park_until(Instant::now() + scaling.interval);
        registry.take_nudge();
        if registry.is_closed() {
            return;
        }
        registry.reap_retired();
        crate::metrics::bump(&slot.scaling_samples);
        let now = totals(registry);
        let window = now.at.saturating_duration_since(load_anchor.0);
        if window >= LOAD_WINDOW {
            let cpu = process_cpu_time();
            if let (Some(a), Some(b)) = (cpu, load_anchor.1) {
                machine_load = Some(
                    a.saturating_sub(b).as_secs_f64() / (window.as_secs_f64() * limits.2 as f64),
                );
            }
            load_anchor = (now.at, cpu);
        }
        let m = registry.metrics();
        let obs = Observation {
            elapsed: now.at.saturating_duration_since(last.at),
            arrivals: now.submitted.saturating_sub(last.submitted),
            finished: now.finished.saturating_sub(last.finished),
            run_time: now.run_time.saturating_sub(last.run_time),
            machine_load,
            live: registry.live_workers(),
            busy: m.busy_workers,
            blocked: m.blocked_workers,
            queued: m.queued,
        };
        last = now;
        let (decision, target, next) = decide(&obs, started.elapsed(), state, &scaling, limits);
        state = next;
        registry
            .target
            .store(target, std::sync::atomic::Ordering::Relaxed);
        match decision {
            Decision::Stay => {}
            Decision::Grow(to, reason) => {
                let from = obs.live;
                let mut reached = from;
                while reached < to {
                    match Registry::spawn_worker(registry) {
                        Ok(_) => reached += 1,
                        Err(_) => break,
                    }
                }
                if reached > from {
                    registry.record_resize(ResizeEvent {
                        at: started.elapsed(),
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

    const LIMITS: (usize, usize, usize) = (2, 512, 2);

    fn obs(live: usize, busy: usize, queued: usize) -> Observation {
        Observation {
            elapsed: Duration::from_millis(100),
            live,
            busy,
            queued,
            ..Observation::default()
        }
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
        // 2 workers, one busy: 50 % utilisation, nothing queued.
        let mut o = obs(2, 1, 0);
        o.arrivals = 100;
        o.finished = 100;
        o.run_time = Duration::from_millis(100); // W = 1 ms, λ = 1000/s: L = 1
        o.machine_load = Some(0.5);
        assert_eq!(decide_now(&o), Decision::Stay);
    }

    #[test]
    fn a_blocking_burst_grows_straight_to_the_target() {
        // 2 workers busy, 4,000 queued; tasks take 1 ms and use 2 % CPU.
        let mut o = obs(2, 2, 4_000);
        o.arrivals = 4_000;
        o.finished = 40;
        o.run_time = Duration::from_millis(40);
        o.machine_load = Some(0.004);
        let Decision::Grow(to, ResizeReason::Load) = decide_now(&o) else {
            panic!("expected growth")
        };
        // λ = 40,000/s, W = 1 ms: L = 40, / 0.7 = 58; CPU cap 100.
        assert_eq!(to, 58);
    }

    #[test]
    fn cpu_bound_work_is_capped_at_the_cpus() {
        // Every worker busy, a backlog, tasks use all their run time as CPU.
        let mut o = obs(2, 2, 1_000);
        o.arrivals = 4_000;
        o.finished = 500;
        o.run_time = Duration::from_millis(100);
        o.machine_load = Some(1.0);
        assert_eq!(
            decide_now(&o),
            Decision::Stay,
            "2 CPUs: no more than 2 workers"
        );
        // Oversubscribed already (4 live, CPUs saturated): no further growth.
        let mut o = obs(4, 4, 1_000);
        o.finished = 400;
        o.run_time = Duration::from_millis(400);
        o.machine_load = Some(0.95);
        assert_eq!(decide_now(&o), Decision::Stay);
        // Unknown CPU share (nothing finished yet): capped at the CPUs too.
        let o = obs(2, 2, 1_000);
        assert_eq!(decide_now(&o), Decision::Stay);
    }

    #[test]
    fn a_ramp_doubles_under_backlog_once_blocking_is_known() {
        let mut o = obs(8, 8, 100);
        o.arrivals = 10;
        o.finished = 10;
        o.run_time = Duration::from_millis(80);
        o.machine_load = Some(0.005);
        // Little's law alone asks for 2; the backlog with all busy doubles.
        assert_eq!(decide_now(&o), Decision::Grow(16, ResizeReason::Load));
    }

    #[test]
    fn announced_blocking_with_a_backlog_adds_workers() {
        // Both workers blocked, work waiting: the CPU cap counts the
        // blocked ones out, so the pool can grow by as many at once.
        let mut o = obs(2, 2, 10);
        o.blocked = 2;
        assert_eq!(decide_now(&o), Decision::Grow(4, ResizeReason::Blocked));
        // Without demand, blocking alone adds nothing.
        let mut o = obs(2, 2, 0);
        o.blocked = 2;
        assert_eq!(decide_now(&o), Decision::Stay);
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
