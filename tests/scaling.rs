//! Auto-scaling: growth under blocking load, shrink after keep-alive,
//! never below min, CPU-bound load capped at the CPUs, and retirement that
//! loses nothing. Synchronized on observable state (worker counts, the
//! supervisor's sample counter), never on sleeps.

#![cfg(not(loom))]

mod common;

use common::{until, Gate};
use ebbtide::{block_in_place, metrics::ResizeReason, Backpressure, Pool};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits until the supervisor has taken `n` more samples.
fn samples(pool: &Pool, n: u64) {
    let start = pool.metrics().counts.scaling_samples;
    until(|| pool.metrics().counts.scaling_samples >= start + n);
}

#[test]
fn grows_to_max_under_blocked_load_and_shrinks_back_to_exactly_min() {
    let pool = Pool::builder()
        .min_workers(2)
        .max_workers(8)
        .keep_alive(Duration::from_millis(30))
        .scaling_interval(Duration::from_millis(2))
        .build()
        .unwrap();
    assert_eq!(pool.num_workers(), 2);
    // Twice: the second growth must not be undone by what is left of the
    // first shrink (every worker that leaves is a recorded resize).
    let mut shrinks = 0;
    for round in 1..=2u64 {
        let seen = pool.resize_history().len();
        let gate = Gate::new();
        for _ in 0..40 {
            let g = gate.clone();
            pool.execute(move || block_in_place(|| g.wait())).unwrap();
        }
        until(|| pool.num_workers() == 8);
        assert_eq!(pool.metrics().target_workers, 8);
        gate.open();
        common::idle(&pool);
        until(|| pool.num_workers() == 2);
        // Still 2 after many more samples: never below min.
        samples(&pool, 20);
        assert_eq!(pool.num_workers(), 2);
        let history = pool.resize_history();
        assert!(
            history.iter().all(|e| (2..=8).contains(&e.to)),
            "{history:?}"
        );
        // From 8 down to 2 in recorded steps, each from where the last
        // left the pool: one step, or two when a sample of the quiet spell
        // caught the last tasks still running. A worker that left without
        // a record would break the chain.
        let round_events = &history[seen..];
        let grown = round_events
            .iter()
            .rposition(|e| e.to > e.from)
            .expect("grew");
        let downs = &round_events[grown + 1..];
        assert!(!downs.is_empty(), "{history:?}");
        let mut at = 8;
        for e in downs {
            assert_eq!((e.from, e.reason), (at, ResizeReason::Idle), "{history:?}");
            at = e.to;
        }
        assert_eq!(at, 2, "{history:?}");
        shrinks += downs.len() as u64;
        let c = pool.metrics().counts;
        assert_eq!((c.resizes_down, c.completed), (shrinks, 40 * round));
        assert!(c.resizes_up >= round);
    }
}

/// Tasks that block without saying so (a plain condvar wait) are seen
/// blocked through their threads' CPU clocks and scheduler statistics: the
/// pool grows to its maximum for the work queued behind them, and every
/// task runs exactly once. (Linux keeps the statistics this needs.)
#[cfg(target_os = "linux")]
#[test]
fn a_long_task_from_a_quiet_pool_runs_on_the_lowest_worker_and_holds_no_shrink_up() {
    // A shrink retires the highest workers, so a long task on one of them
    // would hold it up; a wake goes to the lowest parked worker.
    let pool = Pool::builder()
        .thread_name("low")
        .min_workers(2)
        .max_workers(8)
        .keep_alive(Duration::from_secs(1))
        .scaling_interval(Duration::from_millis(2))
        .target_utilization(0.8)
        .build()
        .unwrap();
    let gate = Gate::new();
    for _ in 0..40 {
        let g = gate.clone();
        pool.execute(move || block_in_place(|| g.wait())).unwrap();
    }
    until(|| pool.num_workers() == 8);
    gate.open();
    common::idle(&pool);
    // Every worker parked, in whatever order they ran out of work (on a
    // loaded machine the shrink may have begun: its workers leave, and
    // worker 0 stays parked).
    until(|| {
        let m = pool.metrics();
        m.parked == m.workers
    });
    let long = Gate::new();
    let (ran_on, on) = std::sync::mpsc::channel();
    let l = long.clone();
    pool.execute(move || {
        let _ = ran_on.send(std::thread::current().name().map(str::to_owned));
        l.wait();
    })
    .unwrap();
    let name = on
        .recv_timeout(common::PATIENCE)
        .expect("the long task started");
    assert_eq!(name.as_deref(), Some("low-0"));
    // The shrink goes around the long task: the pool reaches the size its
    // last shrink asked for (to what the quiet spell used: 2, or 3 if a
    // sample on a loaded machine caught a straggler beside the long task).
    until(|| {
        let asked = pool.resize_history().last().map(|e| (e.from, e.to));
        asked.is_some_and(|(from, to)| to < from && pool.num_workers() == to)
    });
    assert!(pool.num_workers() <= 3);
    assert_eq!(pool.metrics().counts.completed, 40);
    long.open();
    common::idle(&pool);
    assert_eq!(pool.metrics().counts.completed, 41);
}

#[test]
fn a_shrink_held_up_by_a_busy_worker_is_recorded_once() {
    // Four workers, each blocked in a task of its own; then every task
    // ends but the highest worker's, which computes on. The shrink to two
    // retires from the top, so it waits for that task, however many
    // keep-alives pass: one shrink, recorded once.
    let pool = Pool::builder()
        .thread_name("held")
        .min_workers(2)
        .max_workers(4)
        .keep_alive(Duration::from_millis(30))
        .scaling_interval(Duration::from_millis(2))
        .target_utilization(0.8)
        .build()
        .unwrap();
    let gates: Vec<Gate> = (0..4).map(|_| Gate::new()).collect();
    let computes: Arc<Vec<AtomicU8>> = Arc::new((0..4).map(|_| AtomicU8::new(0)).collect());
    let (ran_on, on) = std::sync::mpsc::channel();
    for (task, gate) in gates.iter().enumerate() {
        let (g, tx, computes) = (gate.clone(), ran_on.clone(), Arc::clone(&computes));
        pool.execute(move || {
            let _ = tx.send((task, std::thread::current().name().map(str::to_owned)));
            block_in_place(|| g.wait());
            // 1: compute until told to stop (2).
            let deadline = Instant::now() + common::PATIENCE;
            while computes[task].load(SeqCst) == 1 {
                assert!(Instant::now() < deadline, "never told to stop");
                std::hint::spin_loop();
            }
        })
        .unwrap();
    }
    // Each task blocks its worker until its gate opens: four workers.
    let started: Vec<(usize, Option<String>)> = (0..4)
        .map(|_| {
            on.recv_timeout(common::PATIENCE)
                .expect("every task started")
        })
        .collect();
    let top = started
        .iter()
        .find(|(_, name)| name.as_deref() == Some("held-3"))
        .expect("a task on the fourth worker")
        .0;
    computes[top].store(1, SeqCst);
    gates.iter().for_each(Gate::open);
    let downs = |pool: &Pool| {
        let history = pool.resize_history();
        history
            .into_iter()
            .filter(|e| e.to < e.from)
            .collect::<Vec<_>>()
    };
    until(|| !downs(&pool).is_empty());
    // Several keep-alives with the shrink under way.
    samples(&pool, 60);
    assert_eq!(downs(&pool).len(), 1, "{:?}", pool.resize_history());
    computes[top].store(2, SeqCst);
    until(|| pool.num_workers() == 2);
    samples(&pool, 20);
    let downs = downs(&pool);
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert_eq!((downs[0].from, downs[0].to), (4, 2));
    let c = pool.metrics().counts;
    assert_eq!((c.completed, c.resizes_down), (4, 1));
}

#[test]
fn unannounced_blocking_is_seen_and_grows_the_pool() {
    let pool = Pool::builder()
        .min_workers(2)
        .max_workers(6)
        .scaling_interval(Duration::from_millis(2))
        .build()
        .unwrap();
    let gate = Gate::new();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..24 {
        let (g, r) = (gate.clone(), ran.clone());
        pool.execute(move || {
            g.wait();
            r.fetch_add(1, SeqCst);
        })
        .unwrap();
    }
    until(|| pool.num_workers() == 6);
    let history = pool.resize_history();
    assert!(
        history.iter().all(|e| e.reason == ResizeReason::Blocked
            && e.observation.blocked == 0
            && e.observation.stalled > 0),
        "grown for workers seen (not announced) blocked: {history:?}"
    );
    gate.open();
    common::idle(&pool);
    assert_eq!(ran.load(SeqCst), 24);
    assert_eq!(pool.shutdown().completed, 24);
}

#[test]
fn keep_alive_never_keeps_the_workers() {
    let pool = Pool::builder()
        .min_workers(1)
        .max_workers(4)
        .keep_alive(Duration::MAX)
        .scaling_interval(Duration::from_millis(2))
        .build()
        .unwrap();
    let gate = Gate::new();
    for _ in 0..20 {
        let g = gate.clone();
        pool.execute(move || block_in_place(|| g.wait())).unwrap();
    }
    until(|| pool.num_workers() == 4);
    gate.open();
    common::idle(&pool);
    samples(&pool, 30);
    assert_eq!(pool.num_workers(), 4);
    assert_eq!(pool.metrics().counts.resizes_down, 0);
}

#[test]
fn min_workers_exist_at_build_and_serve_without_spawning() {
    let pool = Pool::builder()
        .min_workers(3)
        .max_workers(16)
        .scaling_interval(Duration::from_millis(2))
        .build()
        .unwrap();
    assert_eq!((pool.num_workers(), pool.max_workers()), (3, 16));
    for _ in 0..5 {
        let handles: Vec<_> = (0..3).map(|i| pool.spawn(move || i).unwrap()).collect();
        assert_eq!(
            handles.into_iter().map(|h| h.join().unwrap()).sum::<i32>(),
            3
        );
    }
    samples(&pool, 10);
    assert_eq!(pool.num_workers(), 3);
    assert!(
        pool.resize_history().is_empty(),
        "{:?}",
        pool.resize_history()
    );
}

#[test]
fn cpu_bound_load_never_runs_more_than_the_cpus_plus_one() {
    let cpus = num_cpus::get();
    let pool = Pool::builder()
        .min_workers(cpus)
        .max_workers(512)
        .scaling_interval(Duration::from_millis(2))
        .build()
        .unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    for _ in 0..400 {
        let (running, peak) = (running.clone(), peak.clone());
        pool.execute(move || {
            let now = running.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            let end = Instant::now() + Duration::from_micros(500);
            while Instant::now() < end {
                std::hint::spin_loop();
            }
            running.fetch_sub(1, SeqCst);
        })
        .unwrap();
    }
    common::idle(&pool);
    let peak = peak.load(SeqCst);
    assert!(peak <= cpus + 1, "{peak} busy workers on {cpus} CPUs");
    assert!(pool.num_workers() <= cpus + 1);
}

#[test]
fn retirement_loses_no_task() {
    // Workers retire and return continuously while tasks (and tasks they
    // submit to their own deques, and keyed tasks) flow.
    let pool = Pool::builder()
        .min_workers(1)
        .max_workers(4)
        .keep_alive(Duration::from_millis(1))
        .scaling_interval(Duration::from_millis(1))
        .build()
        .unwrap();
    const ROUNDS: usize = 40;
    const PER_ROUND: usize = 50;
    let runs: Arc<Vec<AtomicU8>> = Arc::new(
        (0..ROUNDS * PER_ROUND * 2)
            .map(|_| AtomicU8::new(0))
            .collect(),
    );
    let handle = pool.handle();
    for round in 0..ROUNDS {
        let gate = Gate::new();
        // Blocked tasks make the pool grow...
        for _ in 0..4 {
            let g = gate.clone();
            pool.execute(move || block_in_place(|| g.wait())).unwrap();
        }
        for i in 0..PER_ROUND {
            let id = (round * PER_ROUND + i) * 2;
            let (runs, h) = (runs.clone(), handle.clone());
            pool.execute(move || {
                runs[id].fetch_add(1, SeqCst);
                // ...and each task submits one more from inside: it lands on
                // the worker's own deque, which retirement must hand over.
                let r = runs.clone();
                h.task()
                    .key(&(id % 7))
                    .execute(move || {
                        r[id + 1].fetch_add(1, SeqCst);
                    })
                    .unwrap();
            })
            .unwrap();
        }
        // (The supervisor replaces the blocked worker before the gate
        // opens, so the pool grows at least in the first round.)
        until(|| pool.num_workers() > 1);
        gate.open();
        common::idle(&pool);
        // ...then idle rounds let it shrink.
        samples(&pool, 3);
    }
    common::idle(&pool);
    let wrong: Vec<_> = (0..runs.len())
        .filter(|&i| runs[i].load(SeqCst) != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} tasks did not run exactly once",
        wrong.len()
    );
    let c = pool.metrics().counts;
    assert!(c.resizes_down > 0 && c.resizes_up > 0, "{c:?}");
    let report = pool.shutdown();
    assert_eq!(report.completed, (ROUNDS * (PER_ROUND * 2 + 4)) as u64);
}

#[test]
fn scaling_settings_are_validated() {
    let e = Pool::builder()
        .min_workers(1)
        .max_workers(2)
        .keep_alive(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("keep_alive"), "{e}");
    let e = Pool::builder()
        .utilization_watermarks(0.3, 0.8)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("utilization_watermarks"), "{e}");
    let e = Pool::builder().target_utilization(1.5).build().unwrap_err();
    assert!(e.to_string().contains("target_utilization"), "{e}");
    let e = Pool::builder()
        .min_workers(1)
        .max_workers(2)
        .queue_wait_target(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("queue_wait_target"), "{e}");
}

/// Work waiting outside the pool, reported through a `Backlog` gauge,
/// grows the pool as queued work would: with every worker blocked, no
/// task queued and no recent arrivals the pool stays as it is, and grows
/// once the gauge
/// reports a backlog (to what the policy allows for the work: the CPUs
/// beside the blocked workers); dropping the gauge removes it.
#[test]
fn an_external_backlog_grows_the_pool() {
    let pool = Pool::builder()
        .min_workers(2)
        .max_workers(8)
        .scaling_interval(Duration::from_millis(2))
        .build()
        .unwrap();
    let gate = Gate::new();
    for _ in 0..2 {
        let g = gate.clone();
        pool.execute(move || block_in_place(|| g.wait())).unwrap();
    }
    until(|| pool.metrics().blocked_workers == 2);
    // The pool may have grown meanwhile: for the second task, if it waited
    // in the queue beside the first, blocked, worker (on a busy machine),
    // or for the arrivals its sizing expects after two (their rate is read
    // from the last 100 ms or so, their run time from the running tasks'
    // age). 300 samples (600 ms or more) on, that rate has faded.
    samples(&pool, 300);
    let (before, grown) = (pool.num_workers(), pool.resize_history().len());
    samples(&pool, 20);
    assert_eq!(pool.num_workers(), before, "nothing queued: no growth");
    assert_eq!(pool.resize_history().len(), grown);
    let backlog = pool.backlog();
    backlog.set(40);
    assert_eq!(pool.metrics().external_backlog, 40);
    until(|| pool.num_workers() > before);
    let history = pool.resize_history();
    assert!(
        history[grown..]
            .iter()
            .all(|e| e.to > e.from && e.observation.queued >= 40),
        "grown for the reported backlog: {history:?}"
    );
    let second = pool.backlog();
    second.set(5);
    assert_eq!(pool.metrics().external_backlog, 45);
    drop(backlog);
    assert_eq!(pool.metrics().external_backlog, 5);
    drop(second);
    assert_eq!(pool.metrics().external_backlog, 0);
    gate.open();
    common::idle(&pool);
    assert_eq!(pool.shutdown().completed, 2);
}

/// A pool whose minimum is zero retires its last worker, and the tasks
/// that come next, keyed and not, still run: whatever was left in worker
/// 0's inbox waits there for the slot's next worker (it once moved it back
/// into the same inbox, round and round), and new work starts a worker.
#[test]
fn a_pool_that_shrinks_to_no_workers_runs_what_comes_next() {
    let pool = Pool::builder()
        .min_workers(0)
        .max_workers(2)
        .keep_alive(Duration::from_millis(1))
        .scaling_interval(Duration::from_millis(1))
        .build()
        .unwrap();
    const ROUNDS: usize = 20;
    const PER_ROUND: usize = 30;
    let runs: Arc<Vec<AtomicU8>> =
        Arc::new((0..ROUNDS * PER_ROUND).map(|_| AtomicU8::new(0)).collect());
    let done = Arc::new(AtomicUsize::new(0));
    for round in 0..ROUNDS {
        // Keyed and plain tasks, from outside, into a pool with no worker
        // (every round after the first) or one about to retire.
        for i in 0..PER_ROUND {
            let id = round * PER_ROUND + i;
            let (runs, done) = (runs.clone(), done.clone());
            let body = move || {
                runs[id].fetch_add(1, SeqCst);
                done.fetch_add(1, SeqCst);
            };
            if i % 2 == 0 {
                pool.task().key(&(i % 5)).execute(body).unwrap();
            } else {
                pool.execute(body).unwrap();
            }
        }
        until(|| done.load(SeqCst) == (round + 1) * PER_ROUND);
        common::idle(&pool);
        until(|| pool.num_workers() == 0);
    }
    let wrong: Vec<_> = (0..runs.len())
        .filter(|&i| runs[i].load(SeqCst) != 1)
        .collect();
    assert!(wrong.is_empty(), "tasks not run exactly once: {wrong:?}");
    assert_eq!(pool.shutdown().completed, (ROUNDS * PER_ROUND) as u64);
}

#[test]
fn a_pool_whose_workers_wait_for_room_in_another_does_not_grow() {
    // `a` feeds `b` as a pipeline stage feeds the next; `b` holds one task
    // at a gate and one in its queue, so `a`'s tasks wait for room.
    let a = Pool::builder()
        .min_workers(1)
        .max_workers(16)
        .scaling_interval(Duration::from_millis(2))
        .build()
        .unwrap();
    let b = Pool::builder()
        .workers(1)
        .queue_capacity(1)
        .backpressure(Backpressure::Block)
        .build()
        .unwrap();
    let gate = Gate::new();
    let ran = Arc::new(AtomicUsize::new(0));
    const TASKS: usize = 40;
    for _ in 0..TASKS {
        let (b, gate, ran) = (b.handle(), gate.clone(), ran.clone());
        a.execute(move || {
            b.execute(move || {
                gate.wait();
                ran.fetch_add(1, SeqCst);
            })
            .unwrap();
        })
        .unwrap();
    }
    until(|| a.metrics().backpressured_workers >= 1);
    // Every sample from here on sees a worker waiting downstream, with
    // tasks queued behind it: without the rule the pool grows to 16.
    samples(&a, 2);
    let resizes = a.resize_history().len();
    let workers = a.num_workers();
    samples(&a, 20);
    let (history, now, m) = (a.resize_history(), a.num_workers(), a.metrics());
    // Opened before any assertion, so that a failing one does not leave
    // the pools' shutdown waiting at the gate.
    gate.open();
    assert_eq!(history.len(), resizes, "{history:?}");
    assert_eq!(now, workers);
    assert_eq!(
        m.backpressured_workers, workers,
        "each worker waits for room"
    );
    assert!(m.queued > 0, "work waits behind them");
    common::idle(&a);
    common::idle(&b);
    assert_eq!(ran.load(SeqCst), TASKS);
    let m = a.metrics();
    assert_eq!(m.backpressured_workers, 0);
    assert_eq!(m.counts.completed, TASKS as u64);
    assert_eq!(b.metrics().counts.completed, TASKS as u64);
}
