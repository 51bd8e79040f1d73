//! Deadlines and cancellation, pause/resume, task groups and the circuit
//! breaker. Deterministic: gates and latches, deadlines already passed or
//! generous, and an injected clock for the breaker.

#![cfg(not(loom))]

mod common;

use common::{assert_identity, block_workers, quiet_expected_panics, Arrivals, MARK, PATIENCE};
use ebbtide::{metrics::BreakerState, BreakerConfig, CancelToken, GroupError, Pool, TaskError};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn the_100_ms_scenario_exactly_the_slow_tenth_times_out() {
    let pool = Pool::builder().workers(10).build().unwrap();
    let handles: Vec<_> = (0..1_000)
        .map(|i| {
            pool.task()
                .timeout(Duration::from_millis(100))
                .start_at_run()
                .spawn_with(move |cx| {
                    if i % 10 == 0 {
                        // Runs until its deadline stops it, checking its
                        // context as it goes: the outcome does not depend
                        // on how fast the machine is (only PATIENCE bounds
                        // a broken deadline).
                        let start = Instant::now();
                        while start.elapsed() < PATIENCE {
                            cx.check()?;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    Ok(i)
                })
                .unwrap()
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    for (i, r) in results.iter().enumerate() {
        if i % 10 == 0 {
            assert_eq!(r, &Err(TaskError::TimedOut), "task {i}");
        } else {
            assert_eq!(r, &Ok(i), "task {i}");
        }
    }
    common::idle(&pool);
    let c = pool.metrics().counts;
    assert_eq!((c.timed_out, c.completed, c.cancelled), (100, 900, 0));
}

#[test]
fn a_task_whose_deadline_passes_in_the_queue_never_starts() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let gate = block_workers(&pool, 1);
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    // The deadline has already passed when the blocked worker gets to it.
    let h = pool
        .task()
        .deadline(Instant::now())
        .spawn_with(move |_| {
            s.fetch_add(1, SeqCst);
            Ok(())
        })
        .unwrap();
    gate.open();
    assert_eq!(h.join(), Err(TaskError::TimedOut));
    common::idle(&pool);
    assert_eq!(started.load(SeqCst), 0);
    let c = pool.metrics().counts;
    assert_eq!((c.timed_out, c.completed), (1, 1));
}

#[test]
fn a_value_returned_after_the_deadline_is_delivered_and_counted_late() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let h = pool
        .task()
        .timeout(Duration::from_millis(5))
        .start_at_run()
        .spawn_with(|cx| {
            while !cx.is_cancelled() {
                std::thread::yield_now();
            }
            assert_eq!(cx.remaining(), Some(Duration::ZERO));
            Ok("late but delivered")
        })
        .unwrap();
    assert_eq!(h.join(), Ok("late but delivered"));
    common::idle(&pool);
    let c = pool.metrics().counts;
    assert_eq!((c.completed, c.deadline_missed, c.timed_out), (1, 1, 0));
}

#[test]
fn cancel_before_start_never_runs_and_cancel_while_running_is_observed() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let gate = block_workers(&pool, 1);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let queued = pool.spawn(move || r.fetch_add(1, SeqCst)).unwrap();
    assert!(queued.cancel());
    assert!(queued.is_finished());
    assert_eq!(queued.join(), Err(TaskError::Cancelled));
    gate.open();
    common::idle(&pool);
    assert_eq!(ran.load(SeqCst), 0);

    let started = Arrivals::new();
    let st = started.clone();
    let running = pool
        .task()
        .name("looper")
        .spawn_with(move |cx| {
            assert_eq!(cx.name(), Some("looper"));
            st.arrive();
            while !cx.is_cancelled() {
                std::thread::yield_now();
            }
            cx.check()?;
            Ok(())
        })
        .unwrap();
    started.wait_for(1);
    assert!(!running.cancel(), "already running: cannot be prevented");
    assert_eq!(running.join(), Err(TaskError::Cancelled));
    common::idle(&pool);
    let c = pool.metrics().counts;
    assert_eq!((c.cancelled, c.completed), (2, 1));
}

#[test]
fn cancelling_a_parent_token_cancels_its_children_and_shutdown_now_cancels_running_tasks() {
    let parent = CancelToken::new();
    let child = parent.child();
    let grandchild = child.child();
    parent.cancel();
    assert!(child.is_cancelled() && grandchild.is_cancelled());
    assert!(parent.child().is_cancelled(), "made after the cancel");

    let pool = Pool::builder().workers(1).build().unwrap();
    let token = CancelToken::new();
    let started = Arrivals::new();
    let st = started.clone();
    let h = pool
        .task()
        .cancel_token(&token)
        .spawn_with(move |cx| {
            st.arrive();
            while !cx.is_cancelled() {
                std::thread::yield_now();
            }
            cx.check()
        })
        .unwrap();
    started.wait_for(1);
    token.cancel();
    assert_eq!(h.join(), Err(TaskError::Cancelled));

    let started = Arrivals::new();
    let st = started.clone();
    let h = pool
        .task()
        .spawn_with(move |cx| {
            st.arrive();
            while !cx.is_cancelled() {
                std::thread::yield_now();
            }
            cx.check()
        })
        .unwrap();
    started.wait_for(1);
    let report = pool.shutdown_now();
    assert!(report.still_running <= 1);
    assert_eq!(h.join(), Err(TaskError::Cancelled));
}

#[test]
fn a_fail_fast_group_stops_at_the_first_error() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut group = pool.group::<u32, String>();
    for i in 1..=5u32 {
        let ran = ran.clone();
        group.spawn(move |_| {
            ran.lock().unwrap().push(i);
            if i == 3 {
                Err(format!("task {i} failed"))
            } else {
                Ok(i)
            }
        });
    }
    assert_eq!(
        group.wait(),
        Err(GroupError::Failed("task 3 failed".to_string()))
    );
    assert_eq!(*ran.lock().unwrap(), [1, 2, 3]);
}

#[test]
fn wait_all_returns_every_result_in_order_and_panics_are_errors() {
    quiet_expected_panics();
    let pool = Pool::builder().workers(2).build().unwrap();
    let mut group = pool.group::<u32, String>().fail_fast(false);
    for i in 0..6u32 {
        group.spawn(move |_| match i {
            2 => Err("two".to_string()),
            4 => panic!("{MARK}: four"),
            _ => Ok(i * 10),
        });
    }
    let results = group.wait_all();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0], Ok(0));
    assert_eq!(results[1], Ok(10));
    assert_eq!(results[2], Err(GroupError::Failed("two".to_string())));
    assert_eq!(results[3], Ok(30));
    assert!(
        matches!(&results[4], Err(GroupError::Task(TaskError::Panicked { message })) if message.contains("four"))
    );
    assert_eq!(results[5], Ok(50));
}

#[test]
fn a_group_limit_of_two_never_has_three_running() {
    let pool = Pool::builder().workers(4).build().unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut group = pool.group::<(), ()>().limit(2);
    for _ in 0..40 {
        let (running, peak) = (running.clone(), peak.clone());
        group.spawn(move |_| {
            let now = running.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            running.fetch_sub(1, SeqCst);
            Ok(())
        });
    }
    assert_eq!(group.wait().map(|v| v.len()), Ok(40));
    let peak = peak.load(SeqCst);
    assert!((1..=2).contains(&peak), "peak {peak}");
    common::idle(&pool);
    assert_eq!(pool.metrics().counts.completed, 40);
}

#[test]
fn nested_groups_are_cancelled_with_their_parent() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let outer = pool.group::<(), ()>();
    let mut inner = outer.group::<u32, ()>();
    outer.token().cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    inner.spawn(move |_| {
        r.fetch_add(1, SeqCst);
        Ok(1)
    });
    assert_eq!(inner.wait(), Err(GroupError::Task(TaskError::Cancelled)));
    assert_eq!(ran.load(SeqCst), 0);
}

/// Cancelling a group resolves, at once, the results of its tasks that
/// have not started, wherever they wait: behind a busy worker, in a paused
/// pool, in the group's own queue. Each ends unrun, and is counted, when a
/// worker takes it.
#[test]
fn cancelling_a_group_resolves_its_queued_tasks_at_once() {
    for paused in [false, true] {
        let pool = Pool::builder().workers(1).build().unwrap();
        let gate = block_workers(&pool, 1);
        if paused {
            pool.pause();
        }
        let ran = Arc::new(AtomicUsize::new(0));
        // A group of limit 1: its second task waits in the group's queue.
        let mut group = pool.group::<usize, ()>().limit(1);
        // A nested group, cancelled with its parent.
        let mut inner = group.group::<usize, ()>();
        for _ in 0..2 {
            let (r1, r2) = (ran.clone(), ran.clone());
            group.spawn(move |_| Ok(r1.fetch_add(1, SeqCst)));
            inner.spawn(move |_| Ok(r2.fetch_add(1, SeqCst)));
        }
        let other = pool.spawn(|| 7).unwrap();
        group.token().cancel();
        let cancelled = Err(GroupError::Task(TaskError::Cancelled));
        assert_eq!(
            common::within("the inner group", move || inner.wait()),
            cancelled
        );
        assert_eq!(common::within("the group", move || group.wait()), cancelled);
        // Nothing started meanwhile: the worker is still held.
        assert_eq!(ran.load(SeqCst), 0);
        assert!(!other.is_finished());
        gate.open();
        if paused {
            pool.resume();
        }
        assert_eq!(other.join_timeout(PATIENCE).ok(), Some(Ok(7)));
        common::idle(&pool);
        assert_eq!(ran.load(SeqCst), 0);
        let m = pool.metrics();
        assert_eq!((m.counts.cancelled, m.counts.completed), (4, 2));
        assert_identity(&m);
    }
}

#[test]
fn pause_holds_exactly_the_queued_tasks_and_resume_runs_them() {
    let pool = Pool::builder().workers(2).build().unwrap();
    pool.pause();
    pool.pause(); // harmless
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..50u32 {
        let r = ran.clone();
        if i % 2 == 0 {
            pool.execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap();
        } else {
            pool.task()
                .key(&i)
                .execute(move || {
                    r.fetch_add(1, SeqCst);
                })
                .unwrap();
        }
    }
    // Work running tasks wait for still runs while paused: an install
    // completes, after a worker has looked at the queues.
    assert_eq!(pool.install(|| 7), 7);
    let m = pool.metrics();
    assert!(m.paused);
    assert_eq!((m.queued, ran.load(SeqCst)), (50, 0));
    pool.resume();
    common::idle(&pool);
    assert_eq!(ran.load(SeqCst), 50);
    let m = pool.metrics();
    assert!(!m.paused);
    // Tasks a pause held ran from a start read after it: none from a
    // start never taken (0 ticks, which would read as the machine's
    // uptime).
    assert!(m.run_time.max() < Duration::from_secs(3600), "{m:?}");

    // shutdown() on a paused pool resumes and drains.
    let _guard = pool.pause_guard();
    for _ in 0..10 {
        let r = ran.clone();
        pool.execute(move || {
            r.fetch_add(1, SeqCst);
        })
        .unwrap();
    }
    let report = pool.shutdown();
    assert_eq!(ran.load(SeqCst), 60);
    assert_eq!(report.completed, 61);
}

#[test]
fn shutdown_now_on_a_paused_pool_abandons_the_queue() {
    let pool = Pool::builder().workers(2).build().unwrap();
    pool.pause();
    let handles: Vec<_> = (0..20).map(|i| pool.spawn(move || i).unwrap()).collect();
    let report = pool.shutdown_now();
    assert_eq!(report.abandoned, 20);
    assert!(handles
        .into_iter()
        .all(|h| h.join() == Err(TaskError::Abandoned)));
}

#[test]
fn the_breaker_opens_rejects_half_opens_and_closes() {
    quiet_expected_panics();
    let now = Arc::new(Mutex::new(Instant::now()));
    let clock = now.clone();
    let config = BreakerConfig::new()
        .window(10)
        .min_calls(4)
        .failure_rate(0.5)
        .cool_down(Duration::from_secs(30))
        .trial_calls(2)
        .clock(move || *clock.lock().unwrap());
    let pool = Pool::builder()
        .workers(1)
        .circuit_breaker(config)
        .build()
        .unwrap();
    let run = |fail: bool| {
        let h = pool.spawn(move || {
            if fail {
                panic!("{MARK}");
            }
        });
        match h {
            Ok(h) => {
                let _ = h.join();
                common::idle(&pool);
                true
            }
            Err(e) => {
                assert!(e.is_breaker_open(), "{e}");
                false
            }
        }
    };
    // Closed: 1 success and 3 failures → 75 % failures over 4 calls: opens.
    assert!(run(false));
    for _ in 0..3 {
        assert!(run(true));
    }
    assert_eq!(pool.metrics().breaker, Some(BreakerState::Open));
    assert!(!run(false), "open: refused");
    assert!(pool
        .metrics()
        .to_prometheus("x")
        .contains("x_breaker_state{pool=\"ebbtide\"} 1"));
    // Cool-down over: half-open lets 2 trials through; a failure reopens.
    *now.lock().unwrap() += Duration::from_secs(31);
    assert!(run(true));
    assert_eq!(pool.metrics().breaker, Some(BreakerState::Open));
    assert!(!run(false));
    // Again, and this time both trials succeed: closed.
    *now.lock().unwrap() += Duration::from_secs(31);
    assert!(run(false));
    assert_eq!(pool.metrics().breaker, Some(BreakerState::HalfOpen));
    assert!(run(false));
    assert_eq!(pool.metrics().breaker, Some(BreakerState::Closed));
    assert!(run(false));
    let c = pool.metrics().counts;
    assert_eq!(c.rejected, 2);
    assert_eq!(c.submitted, c.completed + c.panicked + c.rejected);
}

/// A one-trial breaker, opened by one failure, its clock moved past the
/// cool-down: the next submission is its trial.
fn half_open_pool(now: &Arc<Mutex<Instant>>, rate_limited: bool) -> Pool {
    quiet_expected_panics();
    let clock = Arc::clone(now);
    let config = BreakerConfig::new()
        .window(2)
        .min_calls(1)
        .failure_rate(0.5)
        .cool_down(Duration::from_secs(30))
        .trial_calls(1)
        .clock(move || *clock.lock().unwrap());
    let mut builder = Pool::builder().workers(1).circuit_breaker(config);
    if rate_limited {
        builder = builder.rate_limit(ebbtide::RateLimit::new(1e6, 1_000).unwrap());
    }
    let pool = builder.build().unwrap();
    assert!(pool.spawn(|| panic!("{MARK}")).unwrap().join().is_err());
    common::idle(&pool);
    assert_eq!(pool.metrics().breaker, Some(BreakerState::Open));
    *now.lock().unwrap() += Duration::from_secs(31);
    pool
}

/// The next plain task is let through as the trial, and closes the breaker.
fn closes(pool: &Pool) {
    assert_eq!(pool.spawn(|| 5).unwrap().join(), Ok(5));
    common::idle(pool);
    assert_eq!(pool.metrics().breaker, Some(BreakerState::Closed));
}

/// A half-open breaker's trial that ends with no outcome gives its place
/// back, and one submitted to run at an instant already past takes one
/// place, not two: in both cases the breaker used to stay half-open and
/// refuse every submission for good.
#[test]
fn trials_that_end_without_an_outcome_give_their_place_back() {
    let now = Arc::new(Mutex::new(Instant::now()));

    let pool = half_open_pool(&now, false);
    let token = CancelToken::new();
    token.cancel();
    let trial = pool.task().cancel_token(&token).spawn(|| ()).unwrap();
    assert_eq!(trial.join(), Err(TaskError::Cancelled));
    common::idle(&pool);
    assert_eq!(pool.metrics().breaker, Some(BreakerState::HalfOpen));
    closes(&pool);

    let pool = half_open_pool(&now, false);
    let past = Instant::now() - Duration::from_secs(1);
    assert_eq!(pool.task().at(past).spawn(|| 6).unwrap().join(), Ok(6));
    common::idle(&pool);
    assert_eq!(pool.metrics().breaker, Some(BreakerState::Closed));

    // A trial the breaker never hears the end of (a periodic task's runs
    // are no outcomes): once a cool-down passes with no trial let through
    // or ended, one more goes.
    let pool = half_open_pool(&now, false);
    let periodic = pool
        .task()
        .periodic(
            ebbtide::Schedule::FixedRate(Duration::from_secs(3600)),
            |_| {},
        )
        .unwrap();
    assert!(pool.spawn(|| ()).unwrap_err().is_breaker_open());
    *now.lock().unwrap() += Duration::from_secs(29);
    assert!(pool.spawn(|| ()).unwrap_err().is_breaker_open());
    *now.lock().unwrap() += Duration::from_secs(1);
    closes(&pool);
    periodic.cancel();
    let report = pool.shutdown();
    assert_eq!(report.rejected, 2);
}

/// Tasks that go through a tenant's queue (a tenant, a priority, or any
/// task of a pool with a rate limit) pass the breaker like the others:
/// they used to be let through while it was open.
#[test]
fn the_breaker_refuses_tasks_bound_for_a_tenants_queue() {
    let now = Arc::new(Mutex::new(Instant::now()));
    let pool = half_open_pool(&now, false);
    *now.lock().unwrap() -= Duration::from_secs(31);
    let e = pool.task().tenant("acme").spawn(|| ()).unwrap_err();
    assert!(e.is_breaker_open(), "{e}");
    let e = pool
        .task()
        .priority(ebbtide::Priority::High)
        .execute(|| ())
        .unwrap_err();
    assert!(e.is_breaker_open(), "{e}");
    // Cool-down over: a tenant's task is the trial, and closes it.
    *now.lock().unwrap() += Duration::from_secs(31);
    assert_eq!(
        pool.task().tenant("acme").spawn(|| 1).unwrap().join(),
        Ok(1)
    );
    common::idle(&pool);
    assert_eq!(pool.metrics().breaker, Some(BreakerState::Closed));

    let pool = half_open_pool(&now, true);
    *now.lock().unwrap() -= Duration::from_secs(31);
    let e = pool.spawn(|| ()).unwrap_err();
    assert!(e.is_breaker_open(), "{e}");
    *now.lock().unwrap() += Duration::from_secs(31);
    closes(&pool);
    let c = pool.metrics().counts;
    assert_eq!(
        (c.submitted, c.completed, c.panicked, c.rejected),
        (3, 1, 1, 1)
    );
}

/// A group's task refused by its pool's open breaker ends as
/// `BreakerOpen`, as one refused by the group's own breaker does (it was
/// reported as `Dropped`, as if backpressure had dropped it).
#[test]
fn a_group_task_refused_by_its_pools_breaker_says_so() {
    let now = Arc::new(Mutex::new(Instant::now()));
    let pool = half_open_pool(&now, false);
    *now.lock().unwrap() -= Duration::from_secs(31);
    let mut group = pool.group::<u32, String>();
    group.spawn(|_| Ok(1));
    assert_eq!(
        group.wait_all(),
        [Err(GroupError::Task(TaskError::BreakerOpen))]
    );
    // Its rate-limited groups' tasks go through a tenant's queue: the same.
    let mut group = pool
        .group::<u32, String>()
        .rate_limit(ebbtide::RateLimit::new(1e6, 100).unwrap());
    group.spawn(|_| Ok(2));
    assert_eq!(
        group.wait_all(),
        [Err(GroupError::Task(TaskError::BreakerOpen))]
    );
    assert_eq!(pool.metrics().counts.rejected, 2);
}

#[test]
fn bad_breaker_settings_are_build_errors() {
    let e = Pool::builder()
        .circuit_breaker(BreakerConfig::new().failure_rate(1.5))
        .build()
        .unwrap_err();
    assert!(
        e.to_string().contains("circuit_breaker.failure_rate"),
        "{e}"
    );
    let e = Pool::builder()
        .circuit_breaker(BreakerConfig::new().window(5).min_calls(6))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("min_calls"), "{e}");
}

#[test]
fn the_identity_holds_with_timeouts_and_cancellations() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let gate = block_workers(&pool, 1);
    let a = pool.spawn(|| ()).unwrap();
    let _b = pool
        .task()
        .deadline(Instant::now())
        .spawn_with(|_| Ok(()))
        .unwrap();
    assert!(a.cancel());
    gate.open();
    common::idle(&pool);
    let m = pool.metrics();
    let c = m.counts;
    assert_eq!(
        (c.submitted, c.completed, c.cancelled, c.timed_out),
        (3, 1, 1, 1)
    );
    assert_identity(&m);
}
