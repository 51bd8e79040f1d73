//! Model-based tests of the task builder's options combined: random tasks
//! that may be keyed, belong to a tenant, have a priority or a cost, be
//! delayed on a manual clock, fail and retry, panic, or carry a cancel
//! token; tenants with random concurrency caps, queue limits and full-queue
//! policies, and sometimes a pool rate limit; periodic tasks, keyed or
//! not, of a tenant or not, some of which panic; random clock steps, cancellations, pauses and
//! waits between them; ended by one of the shutdowns under either
//! `PendingTimers` policy.
//!
//! What must hold for every sequence:
//! - every closure is dropped exactly once (a refused one handed back), and
//!   a task never runs more attempts than its policy allows;
//! - only a cost above the cap is invalid, only a full queue under
//!   `Reject` refuses, and only the dropping policies drop;
//! - every handle's result agrees with what happened to its task (its
//!   value after the attempt that succeeded, every attempt's error after
//!   the last one failed, its panic; cancelled only if it was cancelled,
//!   abandoned only by a shutdown that may abandon);
//! - a task delayed to an instant the clock has reached when a draining
//!   shutdown begins is not abandoned: its time has come;
//! - within one tenant (or none), a key's undelayed tasks run in
//!   submission order, each one's attempts all before the next one's;
//! - a periodic task ends once, stopped with its runs or at its panic;
//! - the report's counts equal the model's tallies, the dead-letter handler
//!   saw exactly the dead-lettered tasks, and the identity holds.

#![cfg(not(loom))]

mod common;

use common::{quiet_expected_panics, DropCounter, ManualTime, MARK};
use ebbtide::{
    Backpressure, CancelToken, DeadLetter, Failed, JoinHandle, PendingTimers, PeriodicHandle,
    Priority, RateLimit, RetryPolicy, Schedule, SubmitError, TaskError, TenantConfig,
};
use proptest::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

#[derive(Clone, Debug)]
enum Body {
    /// A plain task that returns its id, or panics.
    Plain { panics: bool },
    /// A fallible task whose first `fails` attempts return an error, under
    /// a retry policy of `attempts` attempts (none: no policy).
    Fallible { fails: u32, attempts: Option<u32> },
}

#[derive(Clone, Debug)]
struct Spec {
    key: Option<u8>,
    tenant: Option<u8>,
    priority: u8,
    cost: u32,
    delay_ms: Option<u64>,
    token: bool,
    body: Body,
}

#[derive(Clone, Debug)]
enum Op {
    Submit(Spec),
    Advance(u64),
    CancelHandle(usize),
    CancelToken(usize),
    /// A periodic task, keyed or not, of a tenant or not, at a fixed rate
    /// or delay of `period` ms, whose run `panic_at` (if any) panics.
    Periodic {
        key: Option<u8>,
        tenant: Option<u8>,
        rate: bool,
        period: u64,
        panic_at: Option<u64>,
    },
    CancelPeriodic(usize),
    Pause,
    Resume,
    WaitIdle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Drain,
    Now,
    Timeout,
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        prop::bool::weighted(0.15).prop_map(|panics| Body::Plain { panics }),
        (0u32..4, prop::option::of(1u32..4))
            .prop_map(|(fails, attempts)| Body::Fallible { fails, attempts }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::option::of(0u8..3),
        prop::option::of(0u8..2),
        0u8..3,
        prop_oneof![4 => Just(1u32), 1 => Just(2), 1 => Just(3)],
        prop::option::weighted(0.3, prop_oneof![Just(0u64), Just(3), Just(20)]),
        prop::bool::weighted(0.2),
        body(),
    )
        .prop_map(
            |(key, tenant, priority, cost, delay_ms, token, body)| Spec {
                key,
                tenant,
                priority,
                cost,
                delay_ms,
                token,
                body,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => spec().prop_map(Op::Submit),
        3 => prop_oneof![Just(1u64), Just(5), Just(30)].prop_map(Op::Advance),
        1 => (0usize..48).prop_map(Op::CancelHandle),
        1 => (0usize..48).prop_map(Op::CancelToken),
        1 => (
            prop::option::of(0u8..3),
            prop::option::weighted(0.3, 0u8..3),
            any::<bool>(),
            prop_oneof![Just(1u64), Just(5)],
            prop::option::weighted(0.2, 1u64..4),
        )
            .prop_map(|(key, tenant, rate, period, panic_at)| Op::Periodic {
                key,
                tenant,
                rate,
                period,
                panic_at
            }),
        1 => (0usize..4).prop_map(Op::CancelPeriodic),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::WaitIdle),
    ]
}

/// What the model knows of one periodic task.
struct Repeating {
    runs: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
    panic_at: Option<u64>,
    handle: PeriodicHandle,
}

/// Every tenant's limits (the unnamed one's too), and the pool's rate.
#[derive(Clone, Debug)]
struct Limits {
    max_concurrency: Option<u32>,
    capacity: Option<(usize, Backpressure)>,
    /// Tasks a second of the timer clock, in bursts of 2.
    rate: Option<f64>,
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        prop::option::of(1u32..=2),
        prop::option::of((
            prop_oneof![Just(2usize), Just(4)],
            prop_oneof![
                Just(Backpressure::Reject),
                Just(Backpressure::DropNewest),
                Just(Backpressure::DropOldest)
            ],
        )),
        prop::option::weighted(0.3, prop_oneof![Just(500.0), Just(2000.0)]),
    )
        .prop_map(|(max_concurrency, capacity, rate)| Limits {
            max_concurrency,
            capacity,
            rate,
        })
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![Just(End::Drain), Just(End::Now), Just(End::Timeout)]
}

/// Why a submission was refused.
enum Refusal {
    Invalid(String),
    Full,
}

fn refusal<F>(e: &SubmitError<F>, invalid: Option<String>) -> Refusal {
    match (e, invalid) {
        (_, Some(option)) => Refusal::Invalid(option),
        (SubmitError::Full(_), None) => Refusal::Full,
        (_, None) => panic!("refused: {e}"),
    }
}

enum Handle {
    Plain(JoinHandle<usize>),
    Fallible(JoinHandle<Result<usize, Failed<String>>>),
}

/// What the model knows of one task.
struct Task {
    id: usize,
    spec: Spec,
    /// When it is due, by the manual clock (delayed tasks only).
    due: Option<Instant>,
    attempts: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
    token: Option<CancelToken>,
    handle: Option<Handle>,
    /// Refused at submission: `Some(true)` for a full queue (counted as
    /// rejected), `Some(false)` for an invalid option (not counted).
    refused: Option<bool>,
    /// A cancel was asked for: by its handle (and it returned true) or by
    /// its token.
    cancel_asked: bool,
    /// Its handle's `cancel` returned true, with this many attempts made
    /// then: none for a task not started yet, those before its retry for
    /// one waiting for it. No attempt follows.
    cancel_took: Option<usize>,
}

impl Task {
    fn allowed(&self) -> usize {
        match self.spec.body {
            Body::Plain { .. } => 1,
            Body::Fallible { attempts, .. } => attempts.unwrap_or(1) as usize,
        }
    }
}

/// A keyed task's attempt: its key, its tenant, its id.
type Attempt = (u8, Option<u8>, usize);

fn priority(p: u8) -> Priority {
    match p {
        0 => Priority::High,
        1 => Priority::Normal,
        _ => Priority::Low,
    }
}

fn run_case(workers: usize, timers: PendingTimers, limits: &Limits, ops: &[Op], end: End) {
    quiet_expected_panics();
    let time = ManualTime::new();
    let letters: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&letters);
    let mut tenants = TenantConfig::new();
    if let Some(n) = limits.max_concurrency {
        tenants = tenants.max_concurrency(n);
    }
    if let Some((n, policy)) = limits.capacity {
        tenants = tenants.queue_capacity(n, policy);
    }
    let mut builder = time.pool(workers).tenant_defaults(tenants);
    if let Some(rate) = limits.rate {
        builder = builder.rate_limit(RateLimit::new(rate, 2).unwrap());
    }
    let pool = builder
        .pending_timers(timers)
        .panic_handler(|_| {})
        .on_dead_letter(move |d: &DeadLetter| {
            seen.lock()
                .unwrap()
                .push(d.name().map(str::to_owned).unwrap_or_default())
        })
        .build()
        .unwrap();
    // (key, tenant, task id) at each attempt's start, keyed tasks only.
    let log: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let mut tasks: Vec<Task> = Vec::new();
    let mut periodic: Vec<Repeating> = Vec::new();
    let mut paused = false;
    for op in ops {
        match op {
            Op::Submit(spec) => {
                let id = tasks.len();
                let attempts = Arc::new(AtomicUsize::new(0));
                let drops = Arc::new(AtomicUsize::new(0));
                let mut builder = pool.task().name(format!("task {id}"));
                if let Some(k) = spec.key {
                    builder = builder.key(&k);
                }
                if let Some(t) = spec.tenant {
                    builder = builder.tenant(&format!("tenant {t}"));
                }
                if spec.priority != 1 {
                    builder = builder.priority(priority(spec.priority));
                }
                if spec.cost != 1 {
                    builder = builder.cost(spec.cost);
                }
                let due = spec.delay_ms.map(|ms| {
                    builder = std::mem::replace(&mut builder, pool.task())
                        .delay(Duration::from_millis(ms));
                    time.now() + Duration::from_millis(ms)
                });
                let token = spec.token.then(CancelToken::new);
                if let Some(t) = &token {
                    builder = builder.cancel_token(t);
                }
                let (a, dropped, log) = (attempts.clone(), DropCounter(drops.clone()), log.clone());
                let (key, tenant) = (spec.key, spec.tenant);
                let attempt = move || {
                    let n = a.fetch_add(1, SeqCst) + 1;
                    if let Some(k) = key {
                        log.lock().unwrap().push((k, tenant, id));
                    }
                    n
                };
                let handle = match spec.body {
                    Body::Plain { panics } => {
                        let handle = builder.spawn(move || {
                            let _dropped = dropped;
                            attempt();
                            if panics {
                                panic!("{MARK}: task {id}");
                            }
                            id
                        });
                        handle.map(Handle::Plain).map_err(|e| {
                            refusal(&e, e.invalid_option().map(|o| o.option().to_owned()))
                        })
                    }
                    Body::Fallible { fails, attempts } => {
                        if let Some(n) = attempts {
                            builder = builder.retry(RetryPolicy::fixed(2 * MS).max_attempts(n));
                        }
                        let handle = builder.spawn_fallible(move |_cx| {
                            let _held = &dropped;
                            let n = attempt();
                            if n <= fails as usize {
                                Err(format!("task {id} attempt {n}"))
                            } else {
                                Ok(id)
                            }
                        });
                        handle.map(Handle::Fallible).map_err(|e| {
                            refusal(&e, e.invalid_option().map(|o| o.option().to_owned()))
                        })
                    }
                };
                // A refusal hands the closure back; dropping the error drops
                // it. Only a cost above the tenants' limit is invalid, and
                // only a full tenant queue under `Reject` refuses.
                let refused = match &handle {
                    Ok(_) => None,
                    Err(Refusal::Invalid(option)) => {
                        assert_eq!(option, "cost", "task {id}");
                        assert!(
                            limits.max_concurrency.is_some_and(|n| spec.cost > n),
                            "task {id}"
                        );
                        Some(false)
                    }
                    Err(Refusal::Full) => {
                        assert!(
                            matches!(limits.capacity, Some((_, Backpressure::Reject))),
                            "task {id} refused as full: {limits:?}"
                        );
                        Some(true)
                    }
                };
                if limits.max_concurrency.is_some_and(|n| spec.cost > n) {
                    assert_eq!(
                        refused,
                        Some(false),
                        "task {id}: a cost above the limit is invalid"
                    );
                }
                tasks.push(Task {
                    id,
                    spec: spec.clone(),
                    due,
                    attempts,
                    drops,
                    token,
                    handle: handle.ok(),
                    refused,
                    cancel_asked: false,
                    cancel_took: None,
                });
            }
            Op::Advance(ms) => time.advance(Duration::from_millis(*ms)),
            Op::CancelHandle(i) => {
                if let Some(t) = tasks.get_mut(*i) {
                    let took = match t.handle.as_ref() {
                        Some(Handle::Plain(h)) => h.cancel(),
                        Some(Handle::Fallible(h)) => h.cancel(),
                        None => false,
                    };
                    // A fallible task waiting for its retry is stopped
                    // there (true); one in an attempt runs it to its end
                    // (false), and no attempt follows.
                    t.cancel_asked |= t.handle.is_some();
                    if took && t.cancel_took.is_none() {
                        t.cancel_took = Some(t.attempts.load(SeqCst));
                    }
                }
            }
            Op::CancelToken(i) => {
                if let Some(t) = tasks.get_mut(*i) {
                    if let Some(token) = &t.token {
                        token.cancel();
                        t.cancel_asked = true;
                    }
                }
            }
            Op::Periodic {
                key,
                tenant,
                rate,
                period,
                panic_at,
            } => {
                let id = periodic.len();
                let (runs, drops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
                let (r, dropped) = (runs.clone(), DropCounter(drops.clone()));
                let period = Duration::from_millis(*period);
                let schedule = if *rate {
                    Schedule::FixedRate(period)
                } else {
                    Schedule::FixedDelay(period)
                };
                let mut builder = pool.task().name(format!("periodic {id}"));
                if let Some(k) = key {
                    builder = builder.key(k);
                }
                if let Some(t) = tenant {
                    builder = builder.tenant(&format!("tenant {t}"));
                }
                let panic_at = *panic_at;
                let handle = builder
                    .periodic(schedule, move |_cx| {
                        let _held = &dropped;
                        let n = r.fetch_add(1, SeqCst) as u64 + 1;
                        if panic_at == Some(n) {
                            panic!("{MARK}: periodic {id}");
                        }
                    })
                    .unwrap_or_else(|e| panic!("periodic {id}: {e}"));
                periodic.push(Repeating {
                    runs,
                    drops,
                    panic_at,
                    handle,
                });
            }
            Op::CancelPeriodic(i) => {
                if let Some(p) = periodic.get(*i) {
                    p.handle.cancel();
                }
            }
            Op::Pause => {
                pool.pause();
                paused = true;
            }
            Op::Resume => {
                pool.resume();
                paused = false;
            }
            Op::WaitIdle => {
                // A keyed task waiting to retry holds its shard, and the
                // shard's later tasks stay queued until the clock moves on.
                // Under a pool rate limit each periodic run waits for a
                // token: periodic tasks that ask for more runs than the
                // rate gives always have one queued, and the pool is
                // never idle while they live.
                let outpaced =
                    limits.rate.is_some() && periodic.iter().any(|p| !p.handle.is_finished());
                if !paused && !outpaced {
                    let done = AtomicBool::new(false);
                    std::thread::scope(|s| {
                        s.spawn(|| {
                            while !done.load(SeqCst) {
                                time.advance(MS);
                                std::thread::sleep(MS);
                            }
                        });
                        common::idle(&pool);
                        done.store(true, SeqCst);
                    });
                }
            }
        }
    }
    let now = time.now();
    let first = match end {
        End::Drain => pool.shutdown(),
        End::Now => pool.shutdown_now(),
        End::Timeout => pool.shutdown_timeout(Duration::ZERO),
    };
    let report = pool.shutdown();
    assert_eq!(report.still_running, 0, "{report:?}");
    assert!(first.completed <= report.completed);
    // A dead letter keeps its task for a replay: drop them before counting
    // drops.
    let mut kept: Vec<String> = pool
        .take_dead_letters()
        .iter()
        .map(|d| d.name().map(str::to_owned).unwrap_or_default())
        .collect();
    drop(pool);

    let mut completed = 0;
    let mut panicked = 0;
    let mut failed = 0;
    let mut dead = Vec::new();
    let mut never_ran = 0;
    let mut rejected = 0;
    let mut offered = 0;
    for t in &mut tasks {
        let id = t.id;
        assert_eq!(
            t.drops.load(SeqCst),
            1,
            "task {id} dropped once: {t:?}",
            t = t.spec
        );
        let n = t.attempts.load(SeqCst);
        if let Some(full) = t.refused {
            assert_eq!(n, 0, "task {id} was refused, then ran");
            rejected += u64::from(full);
            offered += u64::from(full);
            continue;
        }
        offered += 1;
        assert!(n <= t.allowed(), "task {id} ran {n} attempts: {:?}", t.spec);
        if let Some(made) = t.cancel_took {
            assert_eq!(
                n, made,
                "task {id} ran an attempt after its cancel returned true"
            );
        }
        // `shutdown_now` and a `shutdown_timeout` past its deadline cancel
        // every task's token: a failed attempt is then not retried (a task
        // they catch unstarted is abandoned, not cancelled).
        let cancelled = t.cancel_asked || end != End::Drain;
        // Why a task that did not run to its end may not have.
        let may_not_finish = |e: &TaskError| match e {
            TaskError::Cancelled => t.cancel_asked,
            TaskError::Dropped => matches!(
                limits.capacity,
                Some((_, Backpressure::DropNewest | Backpressure::DropOldest))
            ),
            TaskError::Abandoned => {
                end != End::Drain
                    || (timers == PendingTimers::Abandon
                        && t.due.map_or(n > 0, |due| due > now || n > 0))
            }
            _ => false,
        };
        match t.handle.take().unwrap() {
            Handle::Plain(h) => match h.join() {
                Ok(v) => {
                    assert_eq!((v, n), (id, 1), "task {id}");
                    completed += 1;
                }
                Err(TaskError::Panicked { message }) => {
                    assert_eq!(message, format!("{MARK}: task {id}"));
                    assert_eq!(n, 1, "task {id}");
                    panicked += 1;
                }
                Err(e) => {
                    assert_eq!(n, 0, "task {id} ran, then resolved to {e:?}");
                    assert!(
                        may_not_finish(&e),
                        "task {id} resolved to {e:?}: {:?}, due {:?} at {now:?}",
                        t.spec,
                        t.due
                    );
                    never_ran += 1;
                }
            },
            Handle::Fallible(h) => {
                let Body::Fallible { fails, attempts } = t.spec.body else {
                    unreachable!()
                };
                match h.join() {
                    Ok(Ok(v)) => {
                        assert_eq!((v, n), (id, fails as usize + 1), "task {id}");
                        completed += 1;
                    }
                    Ok(Err(f)) => {
                        let errors: Vec<String> =
                            f.attempts().iter().map(|a| a.error.clone()).collect();
                        let expected: Vec<String> =
                            (1..=n).map(|k| format!("task {id} attempt {k}")).collect();
                        assert_eq!(errors, expected, "task {id}");
                        if !cancelled {
                            assert_eq!(n, t.allowed(), "task {id} failed before its last attempt");
                        }
                        assert_eq!(f.dead_lettered(), attempts.is_some(), "task {id}");
                        if attempts.is_some() {
                            dead.push(format!("task {id}"));
                        } else {
                            failed += 1;
                        }
                    }
                    Err(e) => {
                        assert!(
                            n < t.allowed().min(fails as usize + 1) || n == 0,
                            "task {id}: {n} attempts, then {e:?}"
                        );
                        assert!(
                            may_not_finish(&e),
                            "task {id} resolved to {e:?} after {n} attempts: {:?}, due {:?} at {now:?}",
                            t.spec,
                            t.due
                        );
                        never_ran += 1;
                    }
                }
            }
        }
    }

    // Within a tenant, a key's undelayed tasks ran in submission order,
    // every attempt of one before any of the next.
    let log = log.lock().unwrap();
    for key in 0..3u8 {
        for tenant in [None, Some(0u8), Some(1)] {
            let ids: Vec<usize> = log
                .iter()
                .filter(|&&(k, t, id)| k == key && t == tenant && tasks[id].due.is_none())
                .map(|&(_, _, id)| id)
                .collect();
            assert!(
                ids.windows(2).all(|w| w[0] <= w[1]),
                "key {key}, tenant {tenant:?}: attempts ran out of order: {ids:?}"
            );
        }
    }

    dead.sort();
    let mut letters = letters.lock().unwrap().clone();
    letters.sort();
    assert_eq!(
        letters, dead,
        "the dead-letter handler saw each dead letter once"
    );
    kept.sort();
    assert_eq!(kept, dead, "the pool kept each dead letter");

    // A periodic task ends once: stopped (counted as cancelled) or by its
    // panic, with its runs.
    let mut stopped = 0;
    for (id, p) in periodic.into_iter().enumerate() {
        let runs = p.runs.load(SeqCst) as u64;
        match p.handle.join() {
            Ok(n) => {
                assert_eq!(n, runs, "periodic {id}");
                assert!(p.panic_at.map_or(true, |k| runs < k), "periodic {id}");
                stopped += 1;
            }
            Err(TaskError::Panicked { message }) => {
                assert_eq!(message, format!("{MARK}: periodic {id}"));
                assert_eq!(Some(runs), p.panic_at, "periodic {id}");
                panicked += 1;
            }
            Err(e) => panic!("periodic {id} ended with {e:?}"),
        }
        assert_eq!(p.drops.load(SeqCst), 1, "periodic {id} dropped once");
        offered += 1;
    }
    never_ran += stopped;

    assert_eq!(report.submitted, offered, "{report:?}");
    assert_eq!(report.rejected, rejected, "{report:?}");
    assert_eq!(report.completed, completed, "{report:?}");
    assert_eq!(report.panicked, panicked, "{report:?}");
    assert_eq!(report.failed, failed, "{report:?}");
    assert_eq!(report.dead_lettered, dead.len() as u64, "{report:?}");
    assert_eq!(
        report.abandoned + report.cancelled + report.timed_out + report.dropped,
        never_ran,
        "{report:?}"
    );
    assert_eq!(
        report.submitted,
        report.completed
            + report.panicked
            + report.failed
            + report.dead_lettered
            + report.abandoned
            + report.dropped
            + report.rejected
            + report.timed_out
            + report.cancelled
            + report.still_running,
        "{report:?}"
    );
}

fn policy() -> impl Strategy<Value = PendingTimers> {
    prop_oneof![Just(PendingTimers::Abandon), Just(PendingTimers::RunNow)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_task_ends_as_its_options_say(
        workers in 1usize..=3,
        timers in policy(),
        limits in limits(),
        ops in prop::collection::vec(op(), 1..40),
        end in end(),
    ) {
        run_case(workers, timers, &limits, &ops, end);
    }
}
