//! Fallible tasks: retries with backoff on the timing wheel, dead letters,
//! keyed retries holding their key, replay, the circuit breaker seeing
//! application errors, and group tasks counted the same way.

mod common;

use common::{assert_identity, until, Arrivals, ManualTime};
use ebbtide::{
    BreakerConfig, DeadLetter, GroupError, Jitter, Pool, RetryPolicy, SubmitError, TaskError,
};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

#[test]
fn a_retried_task_sees_exactly_the_policy_delays_then_is_dead_lettered() {
    let time = ManualTime::new();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = Arc::clone(&seen);
    let pool = time
        .pool(2)
        .on_dead_letter(move |d: &DeadLetter| s.lock().unwrap().push(format!("{d:?}")))
        .build()
        .unwrap();
    let t0 = time.now();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let arrivals = Arrivals::new();
    let (a, arr, clock) = (Arc::clone(&attempts), arrivals.clone(), time.clone());
    let policy = RetryPolicy::exponential(10 * MS)
        .factor(2.0)
        .max_attempts(4);
    let handle = pool
        .task()
        .name("sync")
        .retry(policy.clone())
        .spawn_fallible(move |_cx| -> Result<(), String> {
            let mut a = a.lock().unwrap();
            a.push(clock.now());
            let n = a.len();
            drop(a);
            arr.arrive();
            Err(format!("attempt {n} failed"))
        })
        .unwrap();
    for (k, delay) in [10u64, 20, 40].into_iter().enumerate() {
        arrivals.wait_for(k + 1);
        until(|| pool.metrics().timers_pending == 1);
        time.advance(Duration::from_millis(delay));
    }
    let failed = handle.join().unwrap().unwrap_err();
    assert!(failed.dead_lettered());
    assert_eq!(
        failed.clone().into_errors(),
        (1..=4)
            .map(|n| format!("attempt {n} failed"))
            .collect::<Vec<_>>()
    );
    let offsets: Vec<u64> = attempts
        .lock()
        .unwrap()
        .iter()
        .map(|t| (*t - t0).as_millis() as u64)
        .collect();
    assert_eq!(offsets, [0, 10, 30, 70]);
    let letters = pool.take_dead_letters();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.name(), Some("sync"));
    assert_eq!(letter.shard(), None);
    assert_eq!(letter.policy(), &policy);
    let texts: Vec<_> = letter.attempts().iter().map(|a| a.error.clone()).collect();
    assert_eq!(texts, failed.clone().into_errors());
    let times: Vec<_> = letter.attempts().iter().map(|a| a.at).collect();
    assert_eq!(
        times,
        failed.attempts().iter().map(|a| a.at).collect::<Vec<_>>()
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    let c = pool.metrics().counts;
    assert_eq!(
        (
            c.app_errors,
            c.retries,
            c.dead_lettered,
            c.started,
            c.completed
        ),
        (4, 3, 1, 4, 0)
    );
    common::idle(&pool);
    assert_identity(&pool.metrics());
}

#[test]
fn jittered_delays_stay_within_their_bounds() {
    for (jitter, low) in [(Jitter::Full, 0.0), (Jitter::Equal, 0.5)] {
        let time = ManualTime::new();
        let pool = time.pool(1).build().unwrap();
        let times = Arc::new(Mutex::new(Vec::new()));
        let (t, clock) = (Arc::clone(&times), time.clone());
        let policy = RetryPolicy::exponential(16 * MS)
            .jitter(jitter)
            .max_attempts(5);
        let handle = pool
            .task()
            .retry(policy)
            .spawn_fallible(move |_| -> Result<(), &str> {
                t.lock().unwrap().push(clock.now());
                Err("no")
            })
            .unwrap();
        // Step the clock 1 ms at a time until each next attempt arrives. A
        // probe due at each new time fires in the same poll as anything else
        // due by then, so once it ran (and the pool is idle) the attempt due
        // by then has run too.
        let probes = Arc::new(AtomicUsize::new(0));
        for k in 1..5 {
            until(|| times.lock().unwrap().len() == k);
            while times.lock().unwrap().len() == k {
                let p = Arc::clone(&probes);
                let seen = probes.load(SeqCst);
                pool.task()
                    .delay(MS)
                    .execute(move || {
                        p.fetch_add(1, SeqCst);
                    })
                    .unwrap();
                time.advance(MS);
                until(|| probes.load(SeqCst) > seen);
                common::idle(&pool);
            }
        }
        assert!(handle.join().unwrap().is_err());
        let times = times.lock().unwrap();
        for k in 1..5 {
            let raw = 16.0 * 2f64.powi(k as i32 - 1);
            let waited = (times[k] - times[k - 1]).as_secs_f64() * 1e3;
            // Stepped 1 ms at a time, a due time is reached within 1 ms.
            assert!(
                waited >= (raw * low).floor() && waited <= raw + 1.0,
                "{jitter:?} retry {k}: waited {waited} ms for a {raw} ms delay"
            );
        }
    }
}

#[test]
fn retry_if_makes_an_error_permanent_and_no_policy_fails_at_once() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let permanent = pool
        .task()
        .retry(RetryPolicy::fixed(MS).max_attempts(5))
        .spawn_fallible_if(
            move |_| -> Result<(), u32> { Err(c.fetch_add(1, SeqCst) as u32) },
            |e: &u32| *e < 1,
        )
        .unwrap();
    let failed = permanent.join().unwrap().unwrap_err();
    assert_eq!(failed.into_errors(), [0, 1]);
    let once = pool
        .task()
        .spawn_fallible(|_| -> Result<(), &str> { Err("nope") })
        .unwrap()
        .join()
        .unwrap()
        .unwrap_err();
    assert!(!once.dead_lettered());
    assert_eq!(once.last(), &"nope");
    common::idle(&pool);
    let c = pool.metrics().counts;
    assert_eq!(
        (c.app_errors, c.retries, c.dead_lettered, c.failed),
        (3, 1, 1, 1)
    );
    assert_eq!(pool.dead_letter_count(), 1);
}

#[test]
fn a_keyed_retry_holds_its_key_while_other_keys_run() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let (a, b) = (
        "A",
        (0..)
            .map(|i| i.to_string())
            .find(|k| pool.shard_of(k) != pool.shard_of(&"A"))
            .unwrap(),
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    let first = Arrivals::new();
    let (l, f) = (Arc::clone(&log), first.clone());
    let mut attempt = 0;
    let retried = pool
        .task()
        .key(&a)
        .retry(RetryPolicy::fixed(10 * MS).max_attempts(2))
        .spawn_fallible(move |_| {
            attempt += 1;
            l.lock().unwrap().push(format!("A1#{attempt}"));
            f.arrive();
            if attempt == 1 {
                Err("transient")
            } else {
                Ok(attempt)
            }
        })
        .unwrap();
    first.wait_for(1);
    until(|| pool.metrics().timers_pending == 1);
    for (key, name) in [(a.to_string(), "A2"), (b.clone(), "B1")] {
        let l = Arc::clone(&log);
        pool.task()
            .key(&key)
            .execute(move || l.lock().unwrap().push(name.into()))
            .unwrap();
    }
    until(|| log.lock().unwrap().iter().any(|e| e == "B1"));
    // A2 waits in its shard behind the retry.
    let m = pool.metrics();
    assert_eq!((m.keyed_queued, m.timers_pending), (1, 1));
    assert!(!log.lock().unwrap().iter().any(|e| e == "A2"));
    time.advance(10 * MS);
    assert_eq!(retried.join(), Ok(Ok(2)));
    common::idle(&pool);
    let log = log.lock().unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| e.starts_with('A'))
            .collect::<Vec<_>>(),
        ["A1#1", "A1#2", "A2"]
    );
    assert_identity(&pool.metrics());
}

#[test]
fn a_dead_letter_replays_into_a_pool() {
    let pool = Pool::builder()
        .workers(2)
        .dead_letter_capacity(1)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    for name in ["first", "second"] {
        let c = Arc::clone(&calls);
        pool.task()
            .name(name)
            .key(&name)
            .retry(RetryPolicy::fixed(MS).max_attempts(2))
            .execute_fallible(move |_| {
                // Fails its first four calls in all, then succeeds.
                if c.fetch_add(1, SeqCst) < 4 {
                    Err("down")
                } else {
                    Ok(())
                }
            })
            .unwrap();
    }
    until(|| pool.metrics().counts.dead_lettered == 2);
    // Capacity 1: the oldest was evicted.
    let letters = pool.take_dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(pool.metrics().counts.dead_letters_evicted, 1);
    let letter = letters.into_iter().next().unwrap();
    assert_eq!(letter.shard(), Some(pool.shard_of(&letter.name().unwrap())));
    let replayed = pool.replay(letter).unwrap();
    assert_eq!(replayed.join(), Ok(Ok(())));
    assert_eq!(calls.load(SeqCst), 5);
    // A letter replayed into a shut-down pool is handed back.
    let other = Pool::builder().workers(1).build().unwrap();
    let c = Arc::clone(&calls);
    let h = other
        .task()
        .retry(RetryPolicy::fixed(MS).max_attempts(1))
        .spawn_fallible(move |_| -> Result<(), String> { Err(format!("call {}", c.load(SeqCst))) })
        .unwrap();
    assert!(h.join().unwrap().is_err());
    let letter = other.take_dead_letters().pop().unwrap();
    other.shutdown();
    let back = other.replay(letter).unwrap_err();
    assert!(back.is_shut_down());
    assert_eq!(back.into_inner().attempts()[0].error, "call 5");
}

#[test]
fn the_breaker_opens_on_application_errors() {
    let pool = Pool::builder()
        .workers(1)
        .circuit_breaker(
            BreakerConfig::new()
                .window(4)
                .min_calls(4)
                .failure_rate(0.5),
        )
        .build()
        .unwrap();
    for _ in 0..4 {
        let h = pool
            .task()
            .spawn_fallible(|_| -> Result<(), &str> { Err("down") })
            .unwrap();
        assert!(h.join().unwrap().is_err());
    }
    common::idle(&pool);
    assert!(matches!(
        pool.execute(|| ()),
        Err(SubmitError::BreakerOpen(_))
    ));
    assert!(matches!(
        pool.task().delay(MS).execute(|| ()),
        Err(SubmitError::BreakerOpen(_))
    ));
}

#[test]
fn group_tasks_are_counted_take_deadlines_and_have_their_own_breaker() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let breaker = BreakerConfig::new()
        .window(2)
        .min_calls(2)
        .failure_rate(0.5);
    let mut group = pool
        .group::<u32, String>()
        .fail_fast(false)
        .circuit_breaker(breaker)
        .unwrap();
    group.spawn(|_| Err("one".into()));
    group.spawn(|_| Err("two".into()));
    // Two failures of two: the group's breaker opens, and refuses the
    // group's next task, which never runs.
    until(|| group.breaker_state() == Some(ebbtide::metrics::BreakerState::Open));
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    group.spawn(move |_| Ok(r.fetch_add(1, SeqCst) as u32));
    let results = group.wait_all();
    assert_eq!(
        results,
        [
            Err(GroupError::Failed("one".into())),
            Err(GroupError::Failed("two".into())),
            Err(GroupError::Task(TaskError::BreakerOpen)),
        ]
    );
    assert_eq!(ran.load(SeqCst), 0);
    common::idle(&pool);
    let c = pool.metrics().counts;
    assert_eq!((c.failed, c.app_errors, c.completed), (2, 2, 0));
    // Another group has a breaker of its own, or none.
    let mut after = pool.group::<u32, String>();
    after.spawn(|_| Ok(1));
    assert_eq!(after.wait(), Ok(vec![1]));
    // A deadline passes while the task waits behind the group's limit:
    // the second task is spawned only once the first holds the group's
    // one place, which it gives up only after the second's deadline. (The
    // first has the same deadline; on a machine too busy to start it in
    // time, the round is tried again.)
    let timeout = 20 * MS;
    let mut rounds = 0;
    let r = loop {
        rounds += 1;
        assert!(
            rounds <= 50,
            "the first task never started within its deadline"
        );
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let mut timed = pool
            .group::<u32, String>()
            .limit(1)
            .fail_fast(false)
            .timeout(timeout);
        let (g, s) = (Arc::clone(&gate), Arc::clone(&started));
        timed.spawn(move |_| {
            s.store(1, SeqCst);
            drop(g.lock().unwrap());
            Ok(1)
        });
        // Started, or timed out in the queue (it then never starts).
        let spawned = Instant::now();
        until(|| started.load(SeqCst) == 1 || spawned.elapsed() > 2 * timeout);
        if started.load(SeqCst) == 0 {
            drop(held);
            let _ = timed.wait_all();
            continue;
        }
        timed.spawn(|_| Ok(2));
        let deadline = Instant::now() + 2 * timeout;
        until(|| Instant::now() > deadline);
        drop(held);
        break timed.wait_all();
    };
    assert_eq!(r[0], Ok(1));
    assert_eq!(r[1], Err(GroupError::Task(TaskError::TimedOut)));
    let bad = pool
        .group::<u32, String>()
        .circuit_breaker(BreakerConfig::new().window(0));
    assert_eq!(bad.unwrap_err().option(), "circuit_breaker.window");
}

#[test]
fn bad_retry_policies_are_refused_with_the_option_named() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let base = RetryPolicy::exponential(10 * MS);
    for (policy, option) in [
        (base.clone().max_attempts(0), "retry.max_attempts"),
        (base.clone().factor(0.9), "retry.factor"),
        (base.clone().max_delay(MS), "retry.max_delay"),
    ] {
        let e = pool
            .task()
            .retry(policy)
            .spawn_fallible(|_| -> Result<(), &str> { Ok(()) })
            .unwrap_err();
        assert_eq!(e.invalid_option().unwrap().option(), option);
    }
    let e = pool.task().retry(base).execute(|| ()).unwrap_err();
    assert_eq!(e.invalid_option().unwrap().option(), "retry");
    assert_eq!(pool.metrics().counts.submitted, 0);
}

/// Cancelling the handle of a task that waits for its retry (an hour
/// away) ends it now: the handle resolves to `Cancelled`, `cancel` says it
/// stopped the task, and a keyed task's key goes on to its next task at
/// once. (Before, `cancel` returned `false` and the handle and the key
/// waited the hour.)
#[test]
fn cancelling_a_task_that_waits_for_its_retry_ends_it_now() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let hour = RetryPolicy::fixed(Duration::from_secs(3600)).max_attempts(3);
    for keyed in [true, false] {
        let attempts = Arrivals::new();
        let a = attempts.clone();
        let task = if keyed {
            pool.task().key(&7)
        } else {
            pool.task()
        };
        let handle = task
            .retry(hour.clone())
            .spawn_fallible(move |_| {
                a.arrive();
                Err::<(), _>("down")
            })
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (l, behind) = (Arc::clone(&log), Arrivals::new());
        let b = behind.clone();
        if keyed {
            // Waits behind the retry in its key's order.
            pool.task()
                .key(&7)
                .execute(move || {
                    l.lock().unwrap().push("behind");
                    b.arrive();
                })
                .unwrap();
        }
        attempts.wait_for(1);
        // The first attempt failed and its retry is on the wheel.
        until(|| pool.metrics().timers_pending == 1);
        assert!(log.lock().unwrap().is_empty(), "the key is held");
        assert!(handle.cancel(), "the waiting retry was stopped");
        assert_eq!(handle.join(), Err(TaskError::Cancelled));
        if keyed {
            behind.wait_for(1);
            assert_eq!(*log.lock().unwrap(), ["behind"]);
        }
        common::idle(&pool);
        let m = pool.metrics();
        assert_eq!(m.timers_pending, 0);
        assert_identity(&m);
    }
    let report = pool.shutdown();
    assert_eq!(
        (report.submitted, report.cancelled, report.completed),
        (3, 2, 1)
    );
}

/// A retry waiting under a token (the builder's `cancel_token`) ends as
/// soon as the token, or one it was made from, is cancelled, not at its
/// due time an hour away; a keyed one lets its key's later tasks run.
#[test]
fn a_cancelled_token_ends_a_waiting_retry_now() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let hour = RetryPolicy::fixed(Duration::from_secs(3600)).max_attempts(3);
    for keyed in [true, false] {
        let parent = ebbtide::CancelToken::new();
        let token = parent.child();
        let attempts = Arrivals::new();
        let a = attempts.clone();
        let task = if keyed {
            pool.task().key(&7)
        } else {
            pool.task()
        };
        let handle = task
            .cancel_token(&token)
            .retry(hour.clone())
            .spawn_fallible(move |_| {
                a.arrive();
                Err::<(), _>("down")
            })
            .unwrap();
        let behind = Arrivals::new();
        let b = behind.clone();
        if keyed {
            pool.task().key(&7).execute(move || b.arrive()).unwrap();
        }
        attempts.wait_for(1);
        until(|| pool.metrics().timers_pending == 1);
        parent.cancel();
        assert_eq!(
            handle.join_timeout(common::PATIENCE).ok(),
            Some(Err(TaskError::Cancelled))
        );
        if keyed {
            behind.wait_for(1);
        }
        common::idle(&pool);
        let m = pool.metrics();
        assert_eq!(m.timers_pending, 0);
        assert_eq!(m.counts.app_errors, if keyed { 1 } else { 2 });
        assert_identity(&m);
    }
    let report = pool.shutdown();
    assert_eq!(
        (report.submitted, report.cancelled, report.completed),
        (3, 2, 1)
    );
}
