//! loom models of the pool's protocols, run over the real registry, worker
//! loop and sleep code with the simple queue backend:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --lib loom_
//! ```
//!
//! loom explores the interleavings of each model (up to the preemption
//! bound each sets) and fails on a deadlock, which is how a lost wake-up
//! shows: every thread parked with work still queued.

use crate::loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::{Arc, Condvar, Mutex};
use crate::sched::Registry;
use crate::{Backpressure, Pool, SubmitError, TaskError};

mod pipeline;
mod retire;
mod starts;
mod tenants;
mod tokens;

/// Runs a model with a preemption bound: 3 for one-worker models, 2 for
/// two-worker ones (three threads at bound 3 take minutes; bound 2 already
/// finds a removed pre-park re-check).
pub(crate) fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    builder.check(f);
}

pub(crate) fn pool(workers: usize) -> Pool {
    Pool::builder()
        .workers(workers)
        .build()
        .expect("pool builds under loom")
}

/// An elastic pool of one to two workers, its second slot free (the models
/// drive resizing themselves: no supervisor runs under loom).
fn elastic_pool() -> Pool {
    Pool::builder()
        .min_workers(1)
        .max_workers(2)
        .build()
        .expect("pool builds under loom")
}

/// A one-worker pool whose timer clock reads a start instant plus the
/// returned offset in milliseconds (the model moves it; it never moves by
/// itself, and no driver thread runs under loom).
fn clocked_pool() -> (Pool, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let base = std::time::Instant::now();
    let offset = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let o = std::sync::Arc::clone(&offset);
    let pool = Pool::builder()
        .workers(1)
        .timer_clock(move || base + std::time::Duration::from_millis(o.load(SeqCst)))
        .build()
        .expect("pool builds under loom");
    (pool, offset)
}

/// Sleep/wake: a task submitted while the worker may be searching, spinning
/// or parking is always run (no lost wake-up), exactly once.
#[test]
fn loom_sleep_wake_no_lost_wakeup() {
    model(3, || {
        let pool = pool(1);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        pool.execute(move || {
            r.fetch_add(1, SeqCst);
        })
        .unwrap_or_else(|_| panic!("accepted"));
        pool.wait_idle();
        assert_eq!(ran.load(SeqCst), 1);
        let report = pool.shutdown();
        assert_eq!(report.completed, 1);
    });
}

/// Sleep/wake with two workers and two tasks: both run, the pool drains.
#[test]
fn loom_two_workers_two_tasks() {
    model(2, || {
        let pool = pool(2);
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let r = ran.clone();
            pool.execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap_or_else(|_| panic!("accepted"));
        }
        let report = pool.shutdown();
        assert_eq!(ran.load(SeqCst), 2);
        assert_eq!(report.completed, 2);
    });
}

/// Shutdown racing a submission from another thread: the task is either
/// accepted and run, or refused with `ShutDown` and never run.
#[test]
fn loom_shutdown_races_submit() {
    model(2, || {
        let pool = Arc::new(pool(1));
        let ran = Arc::new(AtomicUsize::new(0));
        let (p, r) = (pool.clone(), ran.clone());
        let submitter = loom::thread::spawn(move || {
            let r2 = r.clone();
            match p.execute(move || {
                r2.fetch_add(1, SeqCst);
            }) {
                Ok(()) => 1,
                Err(SubmitError::ShutDown(_)) => 0,
                Err(_) => panic!("unexpected refusal"),
            }
        });
        let report = pool.shutdown();
        let accepted = submitter.join().unwrap();
        // An accepted task counted before the close was drained by it; one
        // accepted after the close is impossible.
        assert_eq!(ran.load(SeqCst), accepted);
        assert_eq!(report.completed as usize, accepted);
        assert_eq!(report.still_running, 0);
    });
}

/// The join latch: an outside thread joining a handle is always woken.
#[test]
fn loom_join_handle_wakes_outside_thread() {
    model(3, || {
        let pool = pool(1);
        let h = pool.spawn(|| 7).unwrap_or_else(|_| panic!("accepted"));
        assert_eq!(h.join(), Ok(7));
    });
}

/// The join latch from inside the pool: a one-worker task joining a task it
/// spawned runs it itself or is woken when it finishes.
#[test]
fn loom_join_inside_one_worker() {
    model(3, || {
        let pool = pool(1);
        let handle = pool.handle();
        let h = pool
            .spawn(move || {
                let inner = handle.spawn(|| 5).unwrap_or_else(|_| panic!("accepted"));
                inner.join().map(|v| v + 1)
            })
            .unwrap_or_else(|_| panic!("accepted"));
        assert_eq!(h.join(), Ok(Ok(6)));
    });
}

/// shutdown_now against a task that is finishing and a queued one: the
/// queued task is run or abandoned, exactly once; the counts add up.
#[test]
fn loom_shutdown_now_abandons_queued() {
    model(2, || {
        let pool = pool(1);
        // (started, open) flags under one lock.
        let gate = Arc::new((Mutex::new((false, false)), Condvar::new()));
        let g = gate.clone();
        pool.execute(move || {
            let mut state = g.0.lock();
            state.0 = true;
            g.1.notify_all();
            while !state.1 {
                g.1.wait(&mut state);
            }
        })
        .unwrap_or_else(|_| panic!("accepted"));
        {
            let mut state = gate.0.lock();
            while !state.0 {
                gate.1.wait(&mut state);
            }
        }
        let queued = pool.spawn(|| 1).unwrap_or_else(|_| panic!("accepted"));
        let g = gate.clone();
        let opener = loom::thread::spawn(move || {
            g.0.lock().1 = true;
            g.1.notify_all();
        });
        let report = pool.shutdown_now();
        opener.join().unwrap();
        let result = queued.join();
        let report_after = pool.shutdown();
        match result {
            Ok(1) => assert_eq!(report.abandoned, 0),
            Err(TaskError::Abandoned) => assert_eq!(report.abandoned, 1),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(report_after.completed + report_after.abandoned, 2);
        assert_eq!(report_after.still_running, 0);
    });
}

/// Block backpressure: a submitter blocked for room is woken when the
/// worker starts a task.
#[test]
fn loom_block_for_room_is_woken() {
    model(3, || {
        let pool = Pool::builder()
            .workers(1)
            .queue_capacity(1)
            .backpressure(Backpressure::Block)
            .build()
            .unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let r = ran.clone();
            pool.execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap_or_else(|_| panic!("accepted"));
        }
        pool.shutdown();
        assert_eq!(ran.load(SeqCst), 2);
    });
}

/// The join latch: with two workers, `b` may be popped back or stolen; a
/// stolen `b`'s completion always wakes its owner, and both halves run once.
#[test]
fn loom_join_latch_stolen_half_wakes_owner() {
    model(2, || {
        let pool = pool(2);
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let (a, b) = pool.install(move || {
            crate::join(
                || {
                    r.fetch_add(1, SeqCst);
                    1
                },
                || {
                    r.fetch_add(10, SeqCst);
                    2
                },
            )
        });
        assert_eq!((a, b), (1, 2));
        assert_eq!(runs.load(SeqCst), 11);
        pool.shutdown();
    });
}

/// A data-parallel collect: the half of the items a thief takes is
/// written by the thief straight into the caller's `Vec`; the join latch
/// makes those writes visible before the caller reads them, and every
/// item is written once, in its place.
#[test]
fn loom_par_collect_stolen_half_is_visible() {
    use crate::par::IntoPar;
    model(2, || {
        let pool = pool(2);
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let v: Vec<u32> = pool.install(move || {
            (0..2u32)
                .into_par()
                .map(|x| {
                    c.fetch_add(1, SeqCst);
                    x + 10
                })
                .collect()
        });
        assert_eq!(v, [10, 11]);
        assert_eq!(calls.load(SeqCst), 2);
        pool.shutdown();
    });
}

/// Scope completion: the owner returns only after both tasks ran, however
/// they were spread over the workers, and is always woken.
#[test]
fn loom_scope_waits_for_every_task() {
    model(2, || {
        let pool = pool(2);
        let runs = AtomicUsize::new(0);
        pool.scope(|s| {
            for _ in 0..2 {
                s.execute(|| {
                    runs.fetch_add(1, SeqCst);
                });
            }
        });
        assert_eq!(runs.load(SeqCst), 2);
        pool.shutdown();
    });
}

/// The shard hand-off: keyed tasks of one shard submitted from two threads
/// while workers take, run and retire the shard. A shard is never run by
/// two workers at once, each submitter's tasks run in its order, and no
/// task is stranded between "queued" and "scheduled".
#[test]
fn loom_shard_hand_off() {
    model(2, || {
        let pool = Arc::new(Pool::builder().workers(2).shards(1).build().unwrap());
        let in_use = Arc::new(crate::loom::sync::atomic::AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = |tag: u32| {
            let (in_use, log) = (in_use.clone(), log.clone());
            move || {
                assert!(!in_use.swap(true, SeqCst), "shard ran on two workers");
                log.lock().push(tag);
                in_use.store(false, SeqCst);
            }
        };
        let p = pool.clone();
        let t2 = task(20);
        let other = loom::thread::spawn(move || {
            p.task()
                .key(&0u8)
                .execute(t2)
                .unwrap_or_else(|_| panic!("accepted"));
        });
        pool.task()
            .key(&0u8)
            .execute(task(10))
            .unwrap_or_else(|_| panic!("accepted"));
        pool.task()
            .key(&0u8)
            .execute(task(11))
            .unwrap_or_else(|_| panic!("accepted"));
        other.join().unwrap();
        pool.wait_idle();
        let log = log.lock().clone();
        assert_eq!(log.len(), 3);
        let mine: Vec<_> = log.iter().filter(|&&t| t < 20).collect();
        assert_eq!(mine, [&10, &11]);
        drop(pool);
    });
}

/// Cancel racing the start: a task is either run (and its handle says so)
/// or cancelled before it starts (never run, handle `Cancelled`); never
/// both, never neither; counted once either way.
#[test]
fn loom_cancel_races_start() {
    model(2, || {
        let pool = Arc::new(pool(1));
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let handle = pool
            .spawn(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap_or_else(|_| panic!("accepted"));
        let prevented = handle.cancel();
        let result = handle.join();
        pool.wait_idle();
        match (prevented, result) {
            (true, Err(TaskError::Cancelled)) => assert_eq!(ran.load(SeqCst), 0),
            (false, Ok(())) => assert_eq!(ran.load(SeqCst), 1),
            other => panic!("inconsistent: {other:?}"),
        }
        let c = pool.metrics().counts;
        assert_eq!(c.completed + c.cancelled, 1);
    });
}

/// Worker retirement: tasks queued (some batched into the retiring
/// worker's own deque) while the top worker is asked to retire all run,
/// exactly once; the retired worker's slot is free again.
#[test]
fn loom_retirement_loses_no_task() {
    model(2, || {
        let pool = elastic_pool();
        let registry = pool.registry.clone();
        assert!(matches!(Registry::spawn_worker(&registry, 2), Ok(Some(1))));
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let r = ran.clone();
            pool.execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap_or_else(|_| panic!("accepted"));
        }
        registry.request_retire(1);
        pool.wait_idle();
        assert_eq!(ran.load(SeqCst), 2);
        drop(pool);
        assert!(registry.live_workers() <= 2);
    });
}

/// Growing races shutdown: a worker started while shutdown joins the
/// threads is refused or joined too, never left running unjoined.
#[test]
fn loom_spawn_races_shutdown() {
    model(2, || {
        let pool = elastic_pool();
        let registry = pool.registry.clone();
        let grower = {
            let registry = registry.clone();
            loom::thread::spawn(move || {
                let _ = Registry::spawn_worker(&registry, 2);
            })
        };
        let report = pool.shutdown();
        grower.join().unwrap();
        assert_eq!(report.submitted, 0);
        assert_eq!(registry.unjoined_workers(), 0);
        assert!(registry.live_workers() <= 2);
    });
}

/// A task finishing while `shutdown_now` takes its report: the report adds
/// up whichever comes first (the task counted as completed or as still
/// running, never both), and a second, draining report has it completed.
#[test]
fn loom_report_adds_up_while_a_task_finishes() {
    model(3, || {
        let pool = pool(1);
        pool.execute(|| ()).unwrap_or_else(|_| panic!("accepted"));
        let report = pool.shutdown_now();
        let total = report.completed
            + report.abandoned
            + report.still_running
            + report.panicked
            + report.dropped
            + report.rejected
            + report.timed_out
            + report.cancelled;
        assert_eq!(report.submitted, 1);
        assert_eq!(total, 1, "{report:?}");
        let after = pool.shutdown();
        assert_eq!(after.completed + after.abandoned, 1, "{after:?}");
        assert_eq!(after.still_running, 0);
    });
}

/// The timing wheel: a due timer fired by the driver races the task's
/// cancellation and the pool's shutdown. Whatever the interleaving, the
/// task runs at most once, its handle and the counters agree, shutdown
/// accounts for it (run, cancelled or abandoned, never lost), and no worker
/// exits with it queued.
#[test]
fn loom_timer_fire_races_cancel_and_shutdown() {
    model(3, || {
        let (pool, offset) = clocked_pool();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let handle = pool
            .task()
            .delay(std::time::Duration::from_millis(1))
            .spawn(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap_or_else(|_| panic!("accepted"));
        offset.store(1, SeqCst);
        let registry = pool.registry.clone();
        let driver = loom::thread::spawn(move || {
            registry.poll_timers();
        });
        let canceller = loom::thread::spawn(move || {
            let prevented = handle.cancel();
            (prevented, handle.join())
        });
        let report = pool.shutdown();
        driver.join().unwrap();
        let (prevented, result) = canceller.join().unwrap();
        let ran = ran.load(SeqCst);
        assert!(ran <= 1);
        match result {
            Ok(()) => assert!(ran == 1 && !prevented),
            Err(TaskError::Cancelled) => assert!(ran == 0 && prevented),
            // Shutdown discarded it first (a cancel after that still finds
            // it unstarted, so it reports having prevented the run).
            Err(TaskError::Abandoned) => assert_eq!(ran, 0),
            Err(e) => panic!("unexpected {e:?}"),
        }
        let settled = pool.shutdown();
        assert_eq!(settled.submitted, 1);
        assert_eq!(
            settled.completed + settled.cancelled + settled.abandoned,
            1,
            "{settled:?} (first report {report:?})"
        );
        assert_eq!(settled.completed as usize, ran);
        assert_eq!(settled.still_running, 0);
        assert_eq!(pool.metrics().timers_pending, 0);
    });
}

/// A periodic task's handle cancels it while its first run goes: before
/// the run starts, during it, between the run's last look at its token and
/// its going back on the wheel, or after. Whatever the interleaving the
/// task stops and its handle resolves (a run put back on the wheel after
/// the cancel would wait there for ever: the clock here never moves), and
/// nothing is left on the wheel.
#[test]
fn loom_periodic_cancel_races_its_reschedule() {
    model(2, || {
        let (pool, offset) = clocked_pool();
        let handle = pool
            .task()
            .periodic(
                crate::Schedule::FixedRate(std::time::Duration::from_millis(10)),
                |_| {},
            )
            .unwrap_or_else(|_| panic!("accepted"));
        // The first run comes due; after it the clock stays put, so a run
        // put back on the wheel would never come due.
        offset.store(1, SeqCst);
        pool.registry.poll_timers();
        let canceller = loom::thread::spawn(move || {
            handle.cancel();
            handle.join()
        });
        let runs = canceller
            .join()
            .unwrap()
            .expect("a cancelled periodic task ends well");
        assert!(runs <= 1);
        assert_eq!(pool.metrics().timers_pending, 0);
        let report = pool.shutdown();
        assert_eq!(report.still_running, 0);
    });
}

/// A retry asking for the wheel races shutdown under
/// `PendingTimers::RunNow`: before the close, the close runs it now; after
/// it, the worker queues it at once. Either way the second attempt runs
/// exactly once and no worker exits with it queued (its own unretired place
/// keeps them alive).
#[test]
fn loom_retry_races_shutdown() {
    model(3, || {
        let pool = Pool::builder()
            .workers(1)
            .pending_timers(crate::PendingTimers::RunNow)
            .build()
            .expect("pool builds under loom");
        let attempts = Arc::new(AtomicUsize::new(0));
        let a = attempts.clone();
        let handle = pool
            .task()
            .retry(crate::RetryPolicy::fixed(std::time::Duration::from_secs(60)).max_attempts(2))
            .spawn_fallible(move |_| {
                if a.fetch_add(1, SeqCst) == 0 {
                    Err("first")
                } else {
                    Ok(())
                }
            })
            .unwrap_or_else(|_| panic!("accepted"));
        let report = pool.shutdown();
        assert_eq!(handle.join(), Ok(Ok(())));
        assert_eq!(attempts.load(SeqCst), 2);
        assert_eq!(report.completed, 1);
        assert_eq!(report.still_running, 0);
    });
}

/// A burst on parked workers: a searcher that finds work while more is
/// queued wakes another sleeper (the fan-out) besides the usual hand-over.
/// Every task runs and `wait_idle` returns (a lost wake-up would leave it
/// waiting: loom reports the deadlock); nothing is woken twice.
#[test]
fn loom_burst_fan_out_runs_every_task() {
    model(2, || {
        let pool = pool(2);
        // Both workers parked first: the burst must wake them.
        while pool.registry.sleep.parked() < 2 {
            loom::thread::yield_now();
        }
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let r = ran.clone();
            pool.execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap_or_else(|_| panic!("accepted"));
        }
        pool.wait_idle();
        assert_eq!(ran.load(SeqCst), 3);
        assert_eq!(pool.shutdown().completed, 3);
    });
}
