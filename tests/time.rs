//! Delayed and periodic tasks on the timing wheel, driven by a manual
//! clock: what fires, when (never early), in which order, and how shutdown
//! accounts for what still waits.

mod common;

use common::{assert_identity, until, Arrivals, ManualTime, PATIENCE};
use ebbtide::{PendingTimers, Pool, Schedule, SubmitError, TaskError, MAX_DELAY};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

#[test]
fn delays_fire_in_due_order_and_never_early() {
    let time = ManualTime::new();
    let pool = time.pool(1).build().unwrap();
    let t0 = time.now();
    let log = Arc::new(Mutex::new(Vec::new()));
    let delays = [50u32, 10, 30, 20, 40];
    for (i, &d) in delays.iter().enumerate() {
        let (log, clock) = (Arc::clone(&log), time.clone());
        pool.task()
            .delay(d * MS)
            .execute(move || log.lock().unwrap().push((i, clock.now())))
            .unwrap();
    }
    assert_eq!(pool.metrics().timers_pending, 5);
    assert_identity(&pool.metrics());
    for step in 1..=10u32 {
        time.advance(5 * MS);
        let due = delays.iter().filter(|&&d| d <= step * 5).count();
        until(|| log.lock().unwrap().len() == due);
    }
    let log = log.lock().unwrap();
    let order: Vec<usize> = log.iter().map(|&(i, _)| i).collect();
    assert_eq!(order, [1, 3, 2, 4, 0]);
    for &(i, ran_at) in log.iter() {
        // The clock moves in 5 ms steps, each of which fires one task: it
        // ran in the step that reached its due time, not one step before.
        assert_eq!(ran_at, t0 + delays[i] * MS, "task {i}");
    }
    let m = pool.metrics();
    assert_eq!(
        (m.counts.delayed, m.counts.timers_fired, m.timers_pending),
        (5, 5, 0)
    );
    assert_eq!(m.timer_lateness.count(), 5);
    common::idle(&pool);
    assert_identity(&pool.metrics());
}

#[test]
fn a_delay_already_due_runs_now_and_delays_combine_with_keys_and_names() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let now = pool.task().at(time.now() - MS).spawn(|| 7).unwrap();
    assert_eq!(now.join(), Ok(7));
    let keyed = pool
        .task()
        .key(&"k")
        .name("later")
        .delay(3 * MS)
        .spawn_with(|cx| Ok(cx.name().map(str::to_owned)))
        .unwrap();
    time.advance(3 * MS);
    assert_eq!(keyed.join(), Ok(Some("later".to_owned())));
    assert_eq!(pool.metrics().counts.delayed, 1);
}

#[test]
fn a_cancelled_timer_never_runs() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let token = ebbtide::CancelToken::new();
    let r = Arc::clone(&ran);
    let by_handle = pool
        .task()
        .delay(10 * MS)
        .spawn(move || r.fetch_add(1, SeqCst))
        .unwrap();
    let r = Arc::clone(&ran);
    let by_token = pool
        .task()
        .delay(10 * MS)
        .cancel_token(&token)
        .spawn(move || r.fetch_add(1, SeqCst))
        .unwrap();
    assert!(by_handle.cancel());
    token.cancel();
    time.advance(10 * MS);
    assert_eq!(by_handle.join(), Err(TaskError::Cancelled));
    assert_eq!(by_token.join(), Err(TaskError::Cancelled));
    until(|| pool.metrics().counts.cancelled == 2);
    common::idle(&pool);
    assert_eq!(ran.load(SeqCst), 0);
    assert_identity(&pool.metrics());
}

#[test]
fn a_deadline_that_passes_on_the_wheel_means_the_task_never_starts() {
    let time = ManualTime::new();
    let pool = time.pool(1).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    let handle = pool
        .task()
        .delay(10 * MS)
        .timeout(MS)
        .spawn(move || r.fetch_add(1, SeqCst))
        .unwrap();
    let deadline = Instant::now() + MS;
    until(|| Instant::now() > deadline);
    time.advance(10 * MS);
    assert_eq!(handle.join(), Err(TaskError::TimedOut));
    assert_eq!(ran.load(SeqCst), 0);
    until(|| pool.metrics().counts.timed_out == 1);
}

#[test]
fn a_fixed_rate_task_under_a_slow_body_skips_and_a_fixed_delay_one_spaces() {
    for schedule in [Schedule::FixedRate(10 * MS), Schedule::FixedDelay(10 * MS)] {
        let time = ManualTime::new();
        let pool = time.pool(1).build().unwrap();
        let t0 = time.now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arrivals::new();
        let (s, a, clock) = (Arc::clone(&starts), arrivals.clone(), time.clone());
        let handle = pool
            .task()
            .periodic(schedule, move |_cx| {
                s.lock().unwrap().push(clock.now());
                // A run that takes 25 ms of the clock.
                clock.advance(25 * MS);
                a.arrive();
            })
            .unwrap();
        arrivals.wait_for(1);
        // Each run is due at: fixed rate, the next multiple of 10 ms after
        // the slow run ended (two skipped each time); fixed delay, 10 ms
        // after it ended.
        let expected: [u32; 3] = match schedule {
            Schedule::FixedRate(_) => [0, 30, 60],
            Schedule::FixedDelay(_) => [0, 35, 70],
        };
        for (k, &offset) in expected.iter().enumerate().skip(1) {
            let next = t0 + offset * MS;
            until(|| pool.metrics().timers_pending == 1);
            // Run k has rescheduled itself: its skips are counted.
            let skipped = match schedule {
                Schedule::FixedRate(_) => 2 * k as u64,
                Schedule::FixedDelay(_) => 0,
            };
            assert_eq!(handle.skipped(), skipped);
            assert_eq!(handle.runs(), k as u64);
            let gap = next - time.now();
            time.advance(gap);
            arrivals.wait_for(k + 1);
        }
        handle.cancel();
        assert_eq!(handle.join(), Ok(3));
        let starts: Vec<u32> = starts
            .lock()
            .unwrap()
            .iter()
            .map(|s| (*s - t0).as_millis() as u32)
            .collect();
        assert_eq!(starts, expected, "{schedule:?}");
        common::idle(&pool);
        let m = pool.metrics();
        assert_eq!(m.counts.started, 3);
        assert_eq!(m.counts.cancelled, 1);
        assert_eq!(m.timers_pending, 0);
        assert_identity(&m);
    }
}

#[test]
fn a_periodic_task_stops_on_its_token_on_a_panic_and_at_shutdown() {
    common::quiet_expected_panics();
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let token = ebbtide::CancelToken::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let by_token = pool
        .task()
        .cancel_token(&token)
        .periodic(Schedule::FixedDelay(5 * MS), move |_| {
            r.fetch_add(1, SeqCst);
        })
        .unwrap();
    let panics = pool
        .task()
        .periodic(Schedule::FixedRate(5 * MS), |_| panic!("{}", common::MARK))
        .unwrap();
    assert!(matches!(panics.join(), Err(TaskError::Panicked { .. })));
    until(|| runs.load(SeqCst) == 1);
    token.cancel();
    time.advance(5 * MS);
    assert_eq!(by_token.join(), Ok(1));
    let at_shutdown = pool
        .task()
        .delay(MS)
        .periodic(Schedule::FixedRate(MS), |_| ())
        .unwrap();
    let report = pool.shutdown();
    assert_eq!(at_shutdown.join(), Ok(0));
    assert_eq!(report.cancelled, 2);
    assert_eq!(report.panicked, 1);
    assert_eq!(report.still_running, 0);
}

fn pending_work(pool: &Pool, time: &ManualTime) -> Vec<ebbtide::JoinHandle<u32>> {
    let handles = (0..3)
        .map(|i: u32| pool.task().delay((10 + i) * MS).spawn(move || i).unwrap())
        .collect();
    // A periodic task between runs, too.
    pool.task()
        .delay(MS)
        .periodic(Schedule::FixedRate(100 * MS), |_| ())
        .unwrap();
    time.advance(MS);
    until(|| pool.metrics().counts.started == 1 && pool.metrics().timers_pending == 4);
    handles
}

#[test]
fn shutdown_accounts_for_every_pending_timer() {
    // Abandoned (the default).
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let handles = pending_work(&pool, &time);
    let report = pool.shutdown();
    for h in handles {
        assert_eq!(h.join(), Err(TaskError::Abandoned));
    }
    assert_eq!(
        (
            report.submitted,
            report.timers_abandoned,
            report.abandoned,
            report.cancelled
        ),
        (4, 3, 3, 1)
    );
    assert_eq!(
        report.completed + report.still_running + report.timers_run_early,
        0
    );

    // Run now.
    let time = ManualTime::new();
    let pool = time
        .pool(2)
        .pending_timers(PendingTimers::RunNow)
        .build()
        .unwrap();
    let handles = pending_work(&pool, &time);
    let report = pool.shutdown();
    let values: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    assert_eq!(values, [Ok(0), Ok(1), Ok(2)]);
    assert_eq!(
        (
            report.submitted,
            report.timers_run_early,
            report.completed,
            report.cancelled
        ),
        (4, 3, 3, 1)
    );
    assert_eq!(report.abandoned + report.still_running, 0);

    // `shutdown_now` abandons whatever the policy.
    let time = ManualTime::new();
    let pool = time
        .pool(1)
        .pending_timers(PendingTimers::RunNow)
        .build()
        .unwrap();
    let h = pool.task().delay(MS).spawn(|| 1).unwrap();
    let report = pool.shutdown_now();
    assert_eq!(h.join(), Err(TaskError::Abandoned));
    assert_eq!((report.timers_abandoned, report.timers_run_early), (1, 0));
    // After shutdown, a delayed task is refused and handed back.
    let refused = pool.task().delay(MS).spawn(|| 2);
    assert!(matches!(refused, Err(SubmitError::ShutDown(_))));
}

#[test]
fn a_drain_runs_what_the_clock_has_reached_even_before_the_driver_polls() {
    // The driver polls a manual clock each millisecond of real time; each
    // shutdown here comes microseconds after the step that made its task
    // due, mostly before that poll. Ten pools: a drain that abandoned a due
    // task would show in nearly all of them.
    for _ in 0..10 {
        let time = ManualTime::new();
        let pool = time.pool(1).build().unwrap();
        let due = pool.task().delay(5 * MS).spawn(|| "due").unwrap();
        let later = pool.task().delay(6 * MS).spawn(|| "later").unwrap();
        time.advance(5 * MS);
        let report = pool.shutdown();
        assert_eq!(due.join(), Ok("due"));
        assert_eq!(later.join(), Err(TaskError::Abandoned));
        assert_eq!(
            (report.completed, report.timers_abandoned, report.abandoned),
            (1, 1, 1),
            "{report:?}"
        );
        assert_eq!(pool.metrics().counts.timers_fired, 1);
    }
    // `shutdown_now` abandons a due task as it abandons a queued one.
    let time = ManualTime::new();
    let pool = time.pool(1).build().unwrap();
    let h = pool.task().delay(5 * MS).spawn(|| 1).unwrap();
    time.advance(5 * MS);
    let report = pool.shutdown_now();
    let result = h.join();
    assert!(
        result == Ok(1) || result == Err(TaskError::Abandoned),
        "{result:?}"
    );
    assert_eq!(report.completed + report.abandoned, 1, "{report:?}");
}

#[test]
fn bad_timing_input_is_refused_with_the_option_named() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let too_far = pool.task().delay(MAX_DELAY + MS).spawn(|| 1).unwrap_err();
    assert_eq!(too_far.invalid_option().unwrap().option(), "delay");
    assert_eq!((too_far.into_inner())(), 1, "the closure is handed back");
    let at = pool
        .task()
        .at(Instant::now() + MAX_DELAY + Duration::from_secs(60))
        .execute(|| ())
        .unwrap_err();
    assert_eq!(at.invalid_option().unwrap().option(), "at");
    for schedule in [
        Schedule::FixedRate(Duration::ZERO),
        Schedule::FixedDelay(MAX_DELAY * 2),
    ] {
        let e = pool.task().periodic(schedule, |_| ()).unwrap_err();
        assert_eq!(e.invalid_option().unwrap().option(), "schedule.period");
        assert!(e.to_string().contains("schedule.period"), "{e}");
    }
    let e = pool
        .task()
        .timeout(MS)
        .periodic(Schedule::FixedRate(MS), |_| ())
        .unwrap_err();
    assert_eq!(e.invalid_option().unwrap().option(), "timeout");
    let m = pool.metrics();
    assert_eq!((m.counts.submitted, m.counts.delayed), (0, 0));
    let _ = PATIENCE;
}

/// A token cancelled while its tasks wait on the wheel ends them now, not
/// at their due time: the clock never moves here. Tasks under another
/// token keep waiting, and a task given a token cancelled already never
/// waits.
#[test]
fn a_cancelled_token_ends_its_tasks_on_the_wheel_now() {
    const HOUR: Duration = Duration::from_secs(3600);
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let parent = ebbtide::CancelToken::new();
    let token = parent.child();
    let ran = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let task = || {
        let (ran, dropped) = (Arc::clone(&ran), common::DropCounter(Arc::clone(&drops)));
        move || {
            let _dropped = &dropped;
            ran.fetch_add(1, SeqCst)
        }
    };
    let delayed = pool
        .task()
        .delay(HOUR)
        .cancel_token(&token)
        .spawn(task())
        .unwrap();
    let t = task();
    pool.task()
        .key(&3)
        .at(time.now() + HOUR)
        .cancel_token(&token)
        .execute(move || {
            t();
        })
        .unwrap();
    let t = task();
    let periodic = pool
        .task()
        .delay(HOUR)
        .cancel_token(&token)
        .periodic(Schedule::FixedRate(HOUR), move |_| {
            t();
        })
        .unwrap();
    let other = ebbtide::CancelToken::new();
    let kept = pool
        .task()
        .delay(HOUR)
        .cancel_token(&other)
        .spawn(|| 5)
        .unwrap();
    assert_eq!(pool.metrics().timers_pending, 4);
    parent.cancel();
    assert_eq!(
        delayed.join_timeout(PATIENCE).ok(),
        Some(Err(TaskError::Cancelled))
    );
    until(|| periodic.is_finished());
    assert_eq!(periodic.join(), Ok(0));
    until(|| pool.metrics().counts.cancelled == 3);
    assert_eq!(
        pool.metrics().timers_pending,
        1,
        "the other token's task waits"
    );
    assert_eq!(drops.load(SeqCst), 3, "each closure dropped once, unrun");
    // Given a token cancelled already: ended now, never on the wheel.
    let late = pool
        .task()
        .delay(HOUR)
        .cancel_token(&token)
        .spawn(task())
        .unwrap();
    assert_eq!(
        late.join_timeout(PATIENCE).ok(),
        Some(Err(TaskError::Cancelled))
    );
    until(|| pool.metrics().counts.cancelled == 4);
    assert_eq!(drops.load(SeqCst), 4);
    assert_eq!(ran.load(SeqCst), 0);
    let m = pool.metrics();
    assert_eq!(m.timers_pending, 1);
    assert_identity(&m);
    other.cancel();
    assert_eq!(
        kept.join_timeout(PATIENCE).ok(),
        Some(Err(TaskError::Cancelled))
    );
    let report = pool.shutdown();
    assert_eq!((report.submitted, report.cancelled), (5, 5));
    assert_eq!(report.timers_abandoned, 0);
}

/// The token a running task hands to work it starts (`cx.token()`) ends
/// that work on the wheel when the task's handle is cancelled, even after
/// the task returned.
#[test]
fn cancelling_a_task_ends_the_delayed_work_it_started_under_its_token() {
    let time = ManualTime::new();
    let pool = Arc::new(time.pool(2).build().unwrap());
    let p = Arc::clone(&pool);
    let (tx, rx) = std::sync::mpsc::channel();
    let starter = pool
        .task()
        .spawn_with(move |cx| {
            let child = p
                .task()
                .delay(Duration::from_secs(3600))
                .cancel_token(cx.token())
                .spawn(|| 1)
                .unwrap();
            tx.send(child).unwrap();
            Ok(())
        })
        .unwrap();
    let child = rx.recv_timeout(PATIENCE).unwrap();
    until(|| starter.is_finished());
    assert_eq!(pool.metrics().timers_pending, 1);
    assert!(!child.is_finished());
    assert!(!starter.cancel(), "the starter had finished");
    assert_eq!(
        child.join_timeout(PATIENCE).ok(),
        Some(Err(TaskError::Cancelled))
    );
    assert_eq!(starter.join_timeout(PATIENCE).ok(), Some(Ok(())));
    common::idle(&pool);
    let m = pool.metrics();
    assert_eq!((m.timers_pending, m.counts.cancelled), (0, 1));
    assert_identity(&m);
}
