//! Panic isolation: a thousand panicking tasks, a panicking handler, and
//! user code the pool calls outside a task's body (clocks, a retry
//! predicate, an error's `Display`) that panics.
#![cfg(not(loom))]

mod common;

use common::{quiet_expected_panics, MARK};
use ebbtide::{Pool, TaskError};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

#[test]
fn a_thousand_panics_are_reported_and_the_pool_keeps_working() {
    quiet_expected_panics();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let pool = Pool::builder()
        .workers(2)
        .thread_name("panicky")
        .panic_handler(move |p| {
            s.lock()
                .unwrap()
                .push((p.thread_name().map(String::from), p.message().to_string()))
        })
        .build()
        .unwrap();
    for i in 0..1_000 {
        pool.execute(move || panic!("{MARK} {i}")).unwrap();
    }
    common::idle(&pool);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1_000);
    for (thread, message) in &seen {
        let thread = thread.as_deref().expect("workers are named");
        assert!(thread.starts_with("panicky-"), "{thread}");
        assert!(message.starts_with(MARK), "{message}");
    }
    let mut ids: Vec<usize> = seen
        .iter()
        .map(|(_, m)| m[MARK.len() + 1..].parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..1_000).collect::<Vec<_>>());
    let c = pool.metrics().counts;
    assert_eq!((c.panicked, c.completed), (1_000, 0));
    // Still works, on every worker.
    let handles: Vec<_> = (0..100).map(|i| pool.spawn(move || i).unwrap()).collect();
    assert_eq!(
        handles.into_iter().map(|h| h.join().unwrap()).sum::<i32>(),
        4950
    );
    assert_eq!(pool.shutdown().panicked, 1_000);
}

#[test]
fn a_panicking_panic_handler_is_contained() {
    quiet_expected_panics();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let pool = Pool::builder()
        .workers(1)
        .panic_handler(move |_| {
            c.fetch_add(1, SeqCst);
            panic!("{MARK}: from the handler");
        })
        .build()
        .unwrap();
    let h = pool
        .spawn(|| -> u8 { panic!("{MARK}: from the task") })
        .unwrap();
    assert_eq!(
        h.join(),
        Err(TaskError::Panicked {
            message: format!("{MARK}: from the task")
        })
    );
    assert_eq!(pool.spawn(|| 3).unwrap().join(), Ok(3));
    common::idle(&pool);
    assert_eq!(calls.load(SeqCst), 1);
}

#[test]
fn a_panicking_destructor_of_an_abandoned_task_is_contained() {
    quiet_expected_panics();
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("{MARK}: from a destructor");
        }
    }
    let pool = Pool::builder().workers(1).build().unwrap();
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let started = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (g, st) = (gate.clone(), started.clone());
    pool.execute(move || {
        *st.0.lock().unwrap() = true;
        st.1.notify_all();
        let mut open = g.0.lock().unwrap();
        while !*open {
            open = g.1.wait(open).unwrap();
        }
    })
    .unwrap();
    {
        let mut s = started.0.lock().unwrap();
        while !*s {
            s = started.1.wait(s).unwrap();
        }
    }
    let bomb = Bomb;
    pool.execute(move || {
        let _keep = &bomb;
    })
    .unwrap();
    let report = pool.shutdown_now();
    assert_eq!((report.abandoned, report.still_running), (1, 1));
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    assert_eq!(pool.shutdown().completed, 1);
}

/// A metrics clock that panics while `failing` is set, and otherwise reads
/// `now` (nanoseconds).
fn faulty_clock(
    now: &Arc<std::sync::atomic::AtomicU64>,
    failing: &Arc<std::sync::atomic::AtomicBool>,
) -> impl Fn() -> std::time::Duration + Send + Sync + 'static {
    let (now, failing) = (now.clone(), failing.clone());
    move || {
        if failing.load(SeqCst) {
            panic!("{MARK}: from the clock");
        }
        std::time::Duration::from_nanos(now.load(SeqCst))
    }
}

#[test]
fn a_panicking_metrics_clock_takes_no_thread_down_and_loses_no_task() {
    quiet_expected_panics();
    let now = Arc::new(std::sync::atomic::AtomicU64::new(1_000));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pool = Pool::builder()
        .workers(2)
        .metrics_clock(faulty_clock(&now, &failing))
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let run = |n: usize| {
        for _ in 0..n {
            let ran = ran.clone();
            pool.execute(move || {
                ran.fetch_add(1, SeqCst);
            })
            .unwrap();
        }
    };
    run(10);
    common::idle(&pool);
    failing.store(true, SeqCst);
    // Submissions read the clock (their stamp), and so do the workers.
    run(1_000);
    common::idle(&pool);
    assert_eq!(ran.load(SeqCst), 1_010);
    failing.store(false, SeqCst);
    now.fetch_add(5_000, SeqCst);
    run(10);
    common::idle(&pool);
    assert_eq!(ran.load(SeqCst), 1_020);
    let c = pool.metrics().counts;
    assert_eq!((c.submitted, c.completed), (1_020, 1_020));
    // Timed while the clock failed: the last good reading, so no time
    // passed; the histograms still count every task.
    let m = pool.metrics();
    assert_eq!(m.run_time.count(), 1_020);
    assert!(m.run_time.max() <= std::time::Duration::from_nanos(5_000));
    assert_eq!(pool.shutdown().completed, 1_020);
}

#[test]
fn a_panicking_timer_clock_stops_time_and_loses_no_task() {
    quiet_expected_panics();
    let time = common::ManualTime::new();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (clock, f) = (time.clone(), failing.clone());
    let pool = Pool::builder()
        .workers(2)
        .timer_clock(move || {
            if f.load(SeqCst) {
                panic!("{MARK}: from the timer clock");
            }
            clock.now()
        })
        .build()
        .unwrap();
    let ms = std::time::Duration::from_millis(1);
    let early = pool.task().delay(10 * ms).spawn(|| "early").unwrap();
    failing.store(true, SeqCst);
    // While the clock fails, time stands at its last reading: a delay
    // counts from there, and nothing comes due.
    let late = pool.task().delay(20 * ms).spawn(|| "late").unwrap();
    let now = pool.spawn(|| "now").unwrap();
    assert_eq!(now.join_timeout(common::PATIENCE).ok(), Some(Ok("now")));
    time.advance(30 * ms);
    common::idle(&pool);
    assert_eq!(pool.metrics().counts.completed, 1);
    failing.store(false, SeqCst);
    common::until(|| pool.metrics().counts.completed == 3);
    let joined = |h: ebbtide::JoinHandle<&'static str>| h.join_timeout(common::PATIENCE).ok();
    assert_eq!(
        (joined(early), joined(late)),
        (Some(Ok("early")), Some(Ok("late")))
    );
    assert_eq!(pool.shutdown().completed, 3);
}

#[test]
fn a_panicking_retry_predicate_fails_its_task_as_panicked() {
    quiet_expected_panics();
    let panics = Arc::new(AtomicUsize::new(0));
    let p = panics.clone();
    let pool = Pool::builder()
        .workers(2)
        .panic_handler(move |_| {
            p.fetch_add(1, SeqCst);
        })
        .build()
        .unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let handle = pool
        .task()
        .retry(ebbtide::RetryPolicy::fixed(std::time::Duration::from_millis(1)).max_attempts(5))
        .spawn_fallible_if(
            move |_| -> Result<(), u32> { Err(a.fetch_add(1, SeqCst) as u32) },
            |_: &u32| -> bool { panic!("{MARK}: from the predicate") },
        )
        .unwrap();
    assert_eq!(
        handle.join_timeout(common::PATIENCE).ok(),
        Some(Err(TaskError::Panicked {
            message: format!("{MARK}: from the predicate")
        }))
    );
    assert_eq!(attempts.load(SeqCst), 1);
    let seven = pool.spawn(|| 7).unwrap();
    assert_eq!(seven.join_timeout(common::PATIENCE).ok(), Some(Ok(7)));
    common::idle(&pool);
    let c = pool.metrics().counts;
    assert_eq!((c.panicked, c.retries, c.completed), (1, 0, 1));
    assert_eq!(panics.load(SeqCst), 1);
    assert_eq!(pool.dead_letter_count(), 0);
}

/// An error whose `Display` panics.
#[derive(Debug)]
struct Unprintable;

impl std::fmt::Display for Unprintable {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("{MARK}: from Display")
    }
}

#[test]
fn a_dead_letter_whose_error_cannot_be_printed_is_kept() {
    quiet_expected_panics();
    let pool = Pool::builder().workers(1).build().unwrap();
    let handle = pool
        .task()
        .retry(ebbtide::RetryPolicy::fixed(std::time::Duration::from_millis(1)).max_attempts(2))
        .spawn_fallible(|_| -> Result<(), Unprintable> { Err(Unprintable) })
        .unwrap();
    let failed = handle
        .join_timeout(common::PATIENCE)
        .unwrap_or_else(|_| panic!("the task never ended"))
        .unwrap()
        .unwrap_err();
    assert!(failed.dead_lettered());
    assert_eq!(failed.into_errors().len(), 2);
    common::idle(&pool);
    assert_eq!(pool.dead_letter_count(), 1);
    let letters = pool.take_dead_letters();
    assert_eq!(letters.len(), 1);
    let texts: Vec<String> = letters[0]
        .attempts()
        .iter()
        .map(|a| a.error.clone())
        .collect();
    assert_eq!(texts.len(), 2);
    for text in &texts {
        assert!(text.contains("its Display panicked"), "{text}");
        assert!(text.contains(MARK), "{text}");
    }
    assert_eq!(pool.shutdown().dead_lettered, 1);
}

#[test]
fn a_panicking_breaker_clock_stops_its_time_and_takes_no_thread_down() {
    quiet_expected_panics();
    let time = common::ManualTime::new();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (clock, f) = (time.clone(), failing.clone());
    let config = ebbtide::BreakerConfig::new()
        .window(4)
        .min_calls(2)
        .failure_rate(0.5)
        .cool_down(std::time::Duration::from_secs(30))
        .trial_calls(1)
        .clock(move || {
            if f.load(SeqCst) {
                panic!("{MARK}: from the breaker's clock");
            }
            clock.now()
        });
    let pool = Pool::builder()
        .workers(1)
        .circuit_breaker(config)
        .build()
        .unwrap();
    failing.store(true, SeqCst);
    // Two failures: the worker opens the breaker, reading the failing clock.
    for _ in 0..2 {
        let h = pool.spawn(|| -> () { panic!("{MARK}") }).unwrap();
        let joined = h.join_timeout(common::PATIENCE).ok();
        assert!(
            matches!(joined, Some(Err(TaskError::Panicked { .. }))),
            "{joined:?}"
        );
    }
    common::idle(&pool);
    assert_eq!(
        pool.metrics().breaker,
        Some(ebbtide::metrics::BreakerState::Open)
    );
    // Its time stands still while the clock fails: the cool-down never ends.
    time.advance(std::time::Duration::from_secs(31));
    assert!(pool.spawn(|| 0).unwrap_err().is_breaker_open());
    // The clock reads again: the cool-down is over, a trial passes, closed.
    failing.store(false, SeqCst);
    let trial = pool.spawn(|| 5).unwrap();
    assert_eq!(trial.join_timeout(common::PATIENCE).ok(), Some(Ok(5)));
    common::idle(&pool);
    assert_eq!(
        pool.metrics().breaker,
        Some(ebbtide::metrics::BreakerState::Closed)
    );
    let c = pool.metrics().counts;
    assert_eq!(
        (c.submitted, c.completed, c.panicked, c.rejected),
        (4, 1, 2, 1)
    );
}
