//! The core executor: every task once, result handles, waiting inside the
//! pool, shutdown accounting, builder validation.
#![cfg(not(loom))]

mod common;

use common::{block_workers, quiet_expected_panics, until, Arrivals, Gate, MARK};
use ebbtide::{BuildError, Pool, SubmitError, TaskError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn a_million_tasks_from_eight_threads_each_run_exactly_once() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 125_000;
    let pool = Pool::builder().workers(4).build().unwrap();
    let runs: Arc<Vec<AtomicU8>> = Arc::new(
        (0..THREADS * PER_THREAD)
            .map(|_| AtomicU8::new(0))
            .collect(),
    );
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (pool, runs) = (pool.handle(), Arc::clone(&runs));
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let runs = Arc::clone(&runs);
                    let id = t * PER_THREAD + i;
                    pool.execute(move || {
                        runs[id].fetch_add(1, SeqCst);
                    })
                    .unwrap_or_else(|_| panic!("task {id} not accepted"));
                }
            });
        }
    });
    common::idle(&pool);
    let wrong: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i].load(SeqCst) != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} tasks did not run exactly once, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let report = pool.shutdown();
    assert_eq!(report.submitted, (THREADS * PER_THREAD) as u64);
    assert_eq!(report.completed, (THREADS * PER_THREAD) as u64);
    assert_eq!(report.still_running, 0);
}

#[test]
fn running_tasks_never_exceed_workers_and_threads_are_reused() {
    let pool = Pool::builder().workers(3).build().unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let threads = Arc::new(Mutex::new(HashSet::new()));
    for _ in 0..20_000 {
        let (running, peak, threads) = (running.clone(), peak.clone(), threads.clone());
        pool.execute(move || {
            let now = running.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            threads.lock().unwrap().insert(std::thread::current().id());
            running.fetch_sub(1, SeqCst);
        })
        .unwrap();
    }
    common::idle(&pool);
    let peak = peak.load(SeqCst);
    assert!(
        (1..=3).contains(&peak),
        "peak running tasks {peak} with 3 workers"
    );
    let distinct = threads.lock().unwrap().len();
    assert!(
        (1..=3).contains(&distinct),
        "{distinct} distinct threads ran tasks with 3 workers"
    );
}

#[test]
fn spawn_returns_values_and_panics_through_handles() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let handles: Vec<_> = (0..100u64)
        .map(|i| pool.spawn(move || i * 3).unwrap())
        .collect();
    let values: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(values, (0..100u64).map(|i| i * 3).collect::<Vec<_>>());

    quiet_expected_panics();
    let h = pool.spawn(|| -> u32 { panic!("{MARK} {}", 7) }).unwrap();
    assert_eq!(
        h.join(),
        Err(TaskError::Panicked {
            message: format!("{MARK} 7")
        })
    );
    let h = pool
        .spawn(|| -> u32 { std::panic::panic_any(5u8) })
        .unwrap();
    assert_eq!(
        h.join(),
        Err(TaskError::Panicked {
            message: "<non-string panic payload>".into()
        })
    );
    // The worker survived.
    assert_eq!(pool.spawn(|| 1).unwrap().join(), Ok(1));
}

#[test]
fn is_finished_and_join_timeout() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let h = pool
        .spawn(move || {
            g.wait();
            9
        })
        .unwrap();
    assert!(!h.is_finished());
    let h = h
        .join_timeout(Duration::from_millis(20))
        .expect_err("gate is closed");
    gate.open();
    let result = h
        .join_timeout(Duration::from_secs(300))
        .expect("the gate is open");
    assert_eq!(result, Ok(9));
}

#[test]
fn dropped_handle_detaches_the_task() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    drop(pool.spawn(move || r.fetch_add(1, SeqCst)).unwrap());
    common::idle(&pool);
    assert_eq!(ran.load(SeqCst), 1);
}

#[test]
fn join_inside_a_one_worker_pool_helps_instead_of_deadlocking() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let handle = pool.handle();
    let outer = pool
        .spawn(move || {
            let inner: Vec<_> = (0..10u64)
                .map(|i| handle.spawn(move || i + 1).unwrap())
                .collect();
            inner.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
        .unwrap();
    assert_eq!(outer.join(), Ok(55));
}

#[test]
fn nested_joins_in_a_one_worker_pool() {
    fn tree(pool: ebbtide::PoolHandle, depth: u32) -> u64 {
        if depth == 0 {
            return 1;
        }
        let p = pool.clone();
        let left = pool.spawn(move || tree(p, depth - 1)).unwrap();
        let right = tree(pool, depth - 1);
        left.join().unwrap() + right
    }
    let pool = Pool::builder().workers(1).build().unwrap();
    let h = pool.handle();
    assert_eq!(pool.spawn(move || tree(h, 8)).unwrap().join(), Ok(256));
}

#[test]
fn wait_idle_inside_a_task_waits_for_the_others_and_helps() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let handle = pool.handle();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let seen = pool
        .spawn(move || {
            for _ in 0..10 {
                let c = c.clone();
                handle
                    .execute(move || {
                        c.fetch_add(1, SeqCst);
                    })
                    .unwrap();
            }
            handle.wait_idle();
            c.load(SeqCst)
        })
        .unwrap();
    assert_eq!(seen.join(), Ok(10));
    common::idle(&pool);
    assert_eq!(count.load(SeqCst), 10);
}

#[test]
fn wait_idle_is_a_barrier_between_batches() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    for batch in 1..=5 {
        for _ in 0..1000 {
            let c = count.clone();
            pool.execute(move || {
                c.fetch_add(1, SeqCst);
            })
            .unwrap();
        }
        common::idle(&pool);
        assert_eq!(count.load(SeqCst), batch * 1000);
        let m = pool.metrics();
        assert_eq!((m.queued, m.running), (0, 0));
    }
}

#[test]
fn shutdown_drains_every_queued_task() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let gate = block_workers(&pool, 2);
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let c = count.clone();
        pool.execute(move || {
            c.fetch_add(1, SeqCst);
        })
        .unwrap();
    }
    let opener = gate.clone();
    let report = std::thread::scope(|s| {
        let shutting = s.spawn(|| pool.shutdown());
        until(|| pool.is_shut_down());
        opener.open();
        shutting.join().unwrap()
    });
    assert_eq!(count.load(SeqCst), 100);
    assert_eq!(report.completed, 102);
    assert_eq!((report.abandoned, report.still_running), (0, 0));
    assert!(matches!(pool.execute(|| ()), Err(SubmitError::ShutDown(_))));
}

#[test]
fn shutdown_now_abandons_exactly_the_queued_tasks() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let gate = block_workers(&pool, 2);
    let ran = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..62)
        .map(|_| {
            let r = ran.clone();
            pool.spawn(move || r.fetch_add(1, SeqCst)).unwrap()
        })
        .collect();
    let report = pool.shutdown_now();
    assert_eq!(report.abandoned, 62);
    assert_eq!(report.still_running, 2);
    assert_eq!(report.completed, 0);
    for h in handles {
        assert_eq!(h.join(), Err(TaskError::Abandoned));
    }
    gate.open();
    let report = pool.shutdown();
    assert_eq!(
        (report.completed, report.abandoned, report.still_running),
        (2, 62, 0)
    );
    assert_eq!(report.submitted, 64);
    assert_eq!(ran.load(SeqCst), 0);
}

#[test]
fn shutdown_timeout_abandons_what_has_not_started_by_the_deadline() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let gate = block_workers(&pool, 2);
    let handles: Vec<_> = (0..10).map(|i| pool.spawn(move || i).unwrap()).collect();
    let report = pool.shutdown_timeout(Duration::from_millis(30));
    assert_eq!(
        (report.abandoned, report.still_running, report.completed),
        (10, 2, 0)
    );
    assert!(handles
        .into_iter()
        .all(|h| h.join() == Err(TaskError::Abandoned)));
    gate.open();
    drop(pool);
}

#[test]
fn tasks_with_a_context_that_shutdown_catches_unstarted_are_abandoned_not_cancelled() {
    // `shutdown_now` (and an expired `shutdown_timeout`) cancels the
    // pool's token as it abandons the queues: a task a worker took just
    // before, and starts after, finds its token cancelled. It never ran
    // because the pool abandoned it, and says so. Many short rounds, since
    // that window is narrow.
    for round in 0..1500 {
        let pool = Pool::builder().workers(2).build().unwrap();
        let handles: Vec<_> = (0..8u32)
            .map(|i| pool.task().name("named").spawn(move || i).unwrap())
            .collect();
        let first = if round % 2 == 0 {
            pool.shutdown_now()
        } else {
            pool.shutdown_timeout(Duration::ZERO)
        };
        assert_eq!(first.cancelled, 0, "round {round}: {first:?}");
        let report = pool.shutdown();
        let mut done = 0;
        for (i, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(v) => {
                    assert_eq!(v as usize, i);
                    done += 1;
                }
                Err(e) => assert_eq!(e, TaskError::Abandoned, "round {round}, task {i}"),
            }
        }
        assert_eq!(
            (report.completed, report.abandoned, report.cancelled),
            (done, 8 - done, 0),
            "round {round}: {report:?}"
        );
    }
}

#[test]
fn shutdown_timeout_drains_when_there_is_time() {
    let pool = Pool::builder().workers(2).build().unwrap();
    for _ in 0..500 {
        pool.execute(|| ()).unwrap();
    }
    let report = pool.shutdown_timeout(Duration::from_secs(300));
    assert_eq!(
        (report.completed, report.abandoned, report.still_running),
        (500, 0, 0)
    );
}

#[test]
fn five_concurrent_shutdowns_all_return_once_the_pool_is_down() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..2_000 {
        let c = count.clone();
        pool.execute(move || {
            c.fetch_add(1, SeqCst);
        })
        .unwrap();
    }
    let reports: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..5).map(|_| s.spawn(|| pool.shutdown())).collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(count.load(SeqCst), 2_000);
    for r in reports {
        assert_eq!((r.completed, r.still_running), (2_000, 0));
    }
}

#[test]
fn submitting_from_a_task_during_shutdown_is_refused() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let handle = pool.handle();
    let gate = Gate::new();
    let started = Arrivals::new();
    let inner_ran = Arc::new(AtomicUsize::new(0));
    let (g, st, ir) = (gate.clone(), started.clone(), inner_ran.clone());
    let outcome = pool
        .spawn(move || {
            st.arrive();
            g.wait();
            let ir = ir.clone();
            match handle.execute(move || {
                ir.fetch_add(1, SeqCst);
            }) {
                Err(SubmitError::ShutDown(f)) => {
                    drop(f);
                    "refused"
                }
                Err(_) => "other error",
                Ok(()) => "accepted",
            }
        })
        .unwrap();
    started.wait_for(1);
    let report = std::thread::scope(|s| {
        let shutting = s.spawn(|| pool.shutdown());
        until(|| pool.is_shut_down());
        gate.open();
        shutting.join().unwrap()
    });
    assert_eq!(outcome.join(), Ok("refused"));
    assert_eq!(inner_ran.load(SeqCst), 0);
    assert_eq!((report.submitted, report.completed), (1, 1));
}

#[test]
fn submission_after_shutdown_hands_the_closure_back() {
    let pool = Pool::builder().workers(1).build().unwrap();
    pool.shutdown();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let err = pool.spawn(move || r.fetch_add(1, SeqCst)).unwrap_err();
    assert!(err.is_shut_down());
    assert_eq!(
        err.to_string(),
        "task rejected: the pool is shutting down or shut down"
    );
    (err.into_inner())();
    assert_eq!(ran.load(SeqCst), 1);
    // Idempotent.
    assert_eq!(pool.shutdown().still_running, 0);
    assert_eq!(pool.shutdown_now().abandoned, 0);
}

#[test]
fn builder_mistakes_are_errors_naming_the_setting() {
    fn err(b: ebbtide::Builder) -> BuildError {
        b.build().expect_err("invalid settings must not build")
    }
    let e = err(Pool::builder().workers(0));
    assert!(
        matches!(
            e,
            BuildError::Invalid {
                field: "workers",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "invalid workers = 0: expected at least 1");
    let e = err(Pool::builder().max_workers(0));
    assert!(matches!(
        e,
        BuildError::Invalid {
            field: "max_workers",
            ..
        }
    ));
    let e = err(Pool::builder().min_workers(5).max_workers(2));
    assert!(matches!(e, BuildError::MinAboveMax { min: 5, max: 2 }));
    assert!(e.to_string().contains("min_workers = 5"));
    let e = err(Pool::builder().workers(4).max_workers(8));
    assert!(matches!(
        e,
        BuildError::Conflict {
            workers: 4,
            other: "max_workers",
            value: 8
        }
    ));
    let e = err(Pool::builder().queue_capacity(0));
    assert!(matches!(
        e,
        BuildError::Invalid {
            field: "queue_capacity",
            ..
        }
    ));
    let e = err(Pool::builder().queue_capacity(ebbtide::MAX_QUEUE_CAPACITY + 1));
    assert!(matches!(
        e,
        BuildError::Invalid {
            field: "queue_capacity",
            ..
        }
    ));
    let e = err(Pool::builder().workers(ebbtide::MAX_WORKERS + 1));
    assert!(matches!(
        e,
        BuildError::Invalid {
            field: "workers",
            ..
        }
    ));
    let e = err(Pool::builder().stack_size(0));
    assert!(matches!(
        e,
        BuildError::Invalid {
            field: "stack_size",
            ..
        }
    ));
    let e = err(Pool::builder().thread_name("bad\0name"));
    assert!(matches!(
        e,
        BuildError::Invalid {
            field: "thread_name",
            ..
        }
    ));
    // Durations past what the pool's clocks add up: refused, where they
    // used to end the process from the supervisor or a worker.
    let e = err(Pool::builder()
        .min_workers(1)
        .max_workers(4)
        .scaling_interval(Duration::MAX));
    assert_eq!(
        e.to_string(),
        format!(
            "invalid scaling_interval = {:?}: expected at most MAX_DELAY (365 days)",
            Duration::MAX
        )
    );
    let e = err(Pool::builder()
        .workers(2)
        .circuit_breaker(ebbtide::BreakerConfig::new().cool_down(Duration::MAX)));
    assert!(
        matches!(
            e,
            BuildError::Invalid {
                field: "circuit_breaker.cool_down",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(Pool::builder()
        .workers(1)
        .circuit_breaker(ebbtide::BreakerConfig::new().cool_down(ebbtide::MAX_DELAY))
        .build()
        .is_ok());
    // Defaults and consistent combinations build; an elastic pool starts
    // at its minimum.
    let pool = Pool::builder()
        .min_workers(1)
        .max_workers(3)
        .build()
        .unwrap();
    assert_eq!(
        (pool.min_workers(), pool.num_workers(), pool.max_workers()),
        (1, 1, 3)
    );
    assert_eq!(Pool::new().unwrap().num_workers(), num_cpus::get());
}

#[test]
fn a_refused_thread_is_a_build_error() {
    // No OS gives a thread a 64 TiB stack.
    let e = Pool::builder()
        .workers(2)
        .stack_size(1 << 46)
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::Spawn { worker: 0, .. }), "{e:?}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn worker_threads_carry_the_configured_name() {
    let pool = Pool::builder()
        .workers(2)
        .thread_name("crunch")
        .build()
        .unwrap();
    let name = pool
        .spawn(|| std::thread::current().name().map(String::from))
        .unwrap()
        .join()
        .unwrap();
    let name = name.expect("workers are named");
    assert!(name == "crunch-0" || name == "crunch-1", "{name}");
}

#[test]
fn handles_can_be_awaited_without_blocking_the_runtime() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let handle = pool
        .spawn(move || {
            g.wait();
            "done"
        })
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let result = rt.block_on(async move {
        // One runtime thread: if awaiting blocked it, the opener never ran.
        let waiter = tokio::spawn(handle);
        tokio::spawn(async move { gate.open() }).await.unwrap();
        waiter.await.unwrap()
    });
    assert_eq!(result, Ok("done"));
}

/// A handle polled again after it gave its result says so with a panic,
/// instead of staying pending for good (the result is gone).
#[test]
fn a_handle_polled_after_its_result_panics_instead_of_hanging() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let pool = Pool::builder().workers(1).build().unwrap();
    let mut handle = pool.spawn(|| 7).unwrap();
    common::idle(&pool);
    let mut cx = Context::from_waker(Waker::noop());
    let mut handle = std::pin::Pin::new(&mut handle);
    assert_eq!(handle.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = handle.as_mut().poll(&mut cx);
    }))
    .unwrap_err();
    assert_eq!(
        again.downcast_ref::<&str>(),
        Some(&"a JoinHandle was polled after it completed")
    );
}

#[test]
fn one_task_does_not_wake_every_sleeper() {
    let pool = Pool::builder().workers(8).build().unwrap();
    until(|| pool.metrics().parked == 8);
    let before = pool.metrics().counts.unparks;
    pool.execute(|| ()).unwrap();
    common::idle(&pool);
    until(|| pool.metrics().parked == 8);
    let woken = pool.metrics().counts.unparks - before;
    // The submission wakes one worker; finding the task, that last
    // searcher may hand the search to one more. Never the other six.
    assert!(
        (1..=2).contains(&woken),
        "{woken} of 8 sleepers woken for one task"
    );
}

/// A timeout or a wait of `Duration::MAX` (past what an `Instant` holds)
/// is no bound at all: the task runs, the wait lasts as long as it takes,
/// the shutdown drains. None of them panics.
#[test]
fn bounds_past_the_clock_are_no_bounds() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let forever = Duration::MAX;
    let h = pool.task().timeout(forever).spawn(|| 1).unwrap();
    assert_eq!(h.join().unwrap(), 1);
    let h = pool
        .task()
        .timeout(forever)
        .spawn_with(|cx| Ok(cx.deadline().is_none()))
        .unwrap();
    assert!(h.join().unwrap(), "no deadline");
    let h = pool.task().wait_for_room(forever).spawn(|| 2).unwrap();
    assert_eq!(h.join().unwrap(), 2);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = pool
        .spawn(move || {
            rx.recv_timeout(Duration::from_secs(30)).unwrap();
            3
        })
        .unwrap();
    let joiner = std::thread::spawn(move || h.join_timeout(forever).map_err(drop));
    tx.send(()).unwrap();
    assert_eq!(joiner.join().unwrap().unwrap().unwrap(), 3);
    let mut group = pool.group::<u32, String>().timeout(forever);
    group.spawn(|_| Ok(4));
    assert_eq!(group.wait().unwrap(), [4]);
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let d = Arc::clone(&done);
        pool.execute(move || {
            d.fetch_add(1, SeqCst);
        })
        .unwrap();
    }
    let report = pool.shutdown_timeout(forever);
    assert_eq!((report.abandoned, report.still_running), (0, 0));
    assert_eq!(done.load(SeqCst), 100);
    assert_eq!(report.completed, 105);

    use ebbtide::pipeline::{Pipeline, Stage};
    let sum = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&sum);
    let pipeline = Pipeline::<usize>::builder()
        .map(Stage::new("double"), |x| x * 2)
        .sink(Stage::new("add"), move |x| {
            s.fetch_add(x, SeqCst);
        })
        .build()
        .unwrap();
    for x in 1..=10 {
        pipeline.send_timeout(x, forever).unwrap();
    }
    let report = pipeline.shutdown_timeout(forever);
    assert_eq!(sum.load(SeqCst), 110);
    assert!(report.stages.iter().all(|s| s.abandoned == 0), "{report:?}");
}
