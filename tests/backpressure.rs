//! Each backpressure policy with exact counts: one worker held at a gate, a
//! queue of capacity 2 filled with tasks A and B, then task C offered.
#![cfg(not(loom))]

mod common;

use common::{block_workers, until, Gate};
use ebbtide::{Backpressure, Pool, SubmitError, TaskError};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A one-worker pool with capacity 2, its worker held at the returned gate.
fn full_pool(policy: Backpressure) -> (Pool, Gate) {
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(2)
        .backpressure(policy)
        .build()
        .unwrap();
    let gate = block_workers(&pool, 1);
    (pool, gate)
}

/// Which of the tasks ran, in the order they ran.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<&'static str>>>);

impl Log {
    fn task(&self, name: &'static str) -> impl FnOnce() -> &'static str + Send + 'static {
        let log = self.clone();
        move || {
            log.0.lock().unwrap().push(name);
            name
        }
    }
    fn ran(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn reject_hands_the_task_back() {
    let (pool, gate) = full_pool(Backpressure::Reject);
    let log = Log::default();
    let a = pool.spawn(log.task("A")).unwrap();
    let b = pool.spawn(log.task("B")).unwrap();
    let err = pool.spawn(log.task("C")).unwrap_err();
    assert!(err.is_full());
    assert!(err.to_string().contains("queue is full"));
    gate.open();
    assert_eq!((a.join(), b.join()), (Ok("A"), Ok("B")));
    common::idle(&pool);
    assert_eq!(log.ran(), ["A", "B"]);
    // The closure came back whole: it can still be run.
    assert_eq!((err.into_inner())(), "C");
    let c = pool.metrics().counts;
    assert_eq!((c.submitted, c.rejected, c.completed), (4, 1, 3));
}

#[test]
fn drop_newest_discards_the_new_task() {
    let (pool, gate) = full_pool(Backpressure::DropNewest);
    let log = Log::default();
    let a = pool.spawn(log.task("A")).unwrap();
    let b = pool.spawn(log.task("B")).unwrap();
    let c = pool.spawn(log.task("C")).unwrap();
    assert_eq!(c.join(), Err(TaskError::Dropped));
    gate.open();
    assert_eq!((a.join(), b.join()), (Ok("A"), Ok("B")));
    common::idle(&pool);
    assert_eq!(log.ran(), ["A", "B"]);
    let counts = pool.metrics().counts;
    assert_eq!(
        (
            counts.dropped_newest,
            counts.dropped_oldest,
            counts.completed
        ),
        (1, 0, 3)
    );
}

#[test]
fn drop_oldest_evicts_the_oldest_waiting_task() {
    let (pool, gate) = full_pool(Backpressure::DropOldest);
    let log = Log::default();
    let a = pool.spawn(log.task("A")).unwrap();
    let b = pool.spawn(log.task("B")).unwrap();
    let c = pool.spawn(log.task("C")).unwrap();
    assert_eq!(a.join(), Err(TaskError::Dropped));
    gate.open();
    assert_eq!((b.join(), c.join()), (Ok("B"), Ok("C")));
    common::idle(&pool);
    assert_eq!(log.ran(), ["B", "C"]);
    let counts = pool.metrics().counts;
    assert_eq!(
        (counts.dropped_oldest, counts.completed, counts.submitted),
        (1, 3, 4)
    );
}

#[test]
fn caller_runs_on_the_submitting_thread_but_not_after_shutdown() {
    let (pool, gate) = full_pool(Backpressure::CallerRuns);
    let log = Log::default();
    let me = std::thread::current().id();
    pool.execute(|| ()).unwrap();
    pool.execute(|| ()).unwrap();
    let task = log.task("C");
    let h = pool
        .spawn(move || (task(), std::thread::current().id()))
        .unwrap();
    assert!(h.is_finished(), "CallerRuns finishes before spawn returns");
    assert_eq!(h.join(), Ok(("C", me)));
    assert_eq!(pool.metrics().counts.caller_runs, 1);
    gate.open();
    pool.shutdown();
    let task = log.task("D");
    let err = pool
        .execute(move || {
            task();
        })
        .unwrap_err();
    assert!(err.is_shut_down());
    assert_eq!(log.ran(), ["C"]);
}

#[test]
fn block_waits_for_room_and_then_everything_runs() {
    let (pool, gate) = full_pool(Backpressure::Block);
    let log = Log::default();
    pool.execute(move || ()).unwrap();
    pool.execute(move || ()).unwrap();
    // try_* never blocks, whatever the policy.
    assert!(pool.task().try_execute(|| ()).unwrap_err().is_full());
    let task = log.task("C");
    std::thread::scope(|s| {
        let blocked = s.spawn(|| {
            pool.execute(move || {
                task();
            })
            .is_ok()
        });
        until(|| pool.metrics().blocked_submitters == 1);
        assert!(log.ran().is_empty());
        gate.open();
        assert!(blocked.join().unwrap());
    });
    common::idle(&pool);
    assert_eq!(log.ran(), ["C"]);
    let c = pool.metrics().counts;
    assert_eq!((c.submitted, c.completed, c.rejected), (5, 4, 1));
}

#[test]
fn wait_for_room_gives_up_on_a_full_queue() {
    let (pool, gate) = full_pool(Backpressure::Block);
    pool.execute(|| ()).unwrap();
    pool.execute(|| ()).unwrap();
    let err = pool
        .task()
        .wait_for_room(Duration::from_millis(20))
        .execute(|| ())
        .unwrap_err();
    assert!(err.is_timeout());
    let err = pool
        .task()
        .wait_for_room(Duration::from_millis(1))
        .spawn(|| 1)
        .unwrap_err();
    assert!(matches!(err, SubmitError::Timeout(_)));
    gate.open();
    assert_eq!(
        pool.task()
            .wait_for_room(Duration::from_secs(300))
            .spawn(|| 2)
            .unwrap()
            .join(),
        Ok(2)
    );
}

#[test]
fn blocked_submitters_are_released_by_shutdown() {
    let (pool, gate) = full_pool(Backpressure::Block);
    pool.execute(|| ()).unwrap();
    pool.execute(|| ()).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        let r = ran.clone();
        let blocked = s.spawn(|| {
            pool.execute(move || {
                r.fetch_add(1, SeqCst);
            })
        });
        until(|| pool.metrics().blocked_submitters == 1);
        let report = pool.shutdown_now();
        assert_eq!((report.abandoned, report.still_running), (2, 1));
        assert!(blocked.join().unwrap().unwrap_err().is_shut_down());
    });
    gate.open();
    drop(pool);
    assert_eq!(ran.load(SeqCst), 0);
}

#[test]
fn a_worker_blocked_for_room_runs_queued_work_instead() {
    // One worker, capacity 1: a task submitting 50 tasks under Block would
    // deadlock if it slept; it runs the queued ones itself instead.
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(1)
        .backpressure(Backpressure::Block)
        .build()
        .unwrap();
    let handle = pool.handle();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    pool.spawn(move || {
        for _ in 0..50 {
            let c = c.clone();
            handle
                .execute(move || {
                    c.fetch_add(1, SeqCst);
                })
                .unwrap();
        }
    })
    .unwrap()
    .join()
    .unwrap();
    common::idle(&pool);
    assert_eq!(count.load(SeqCst), 50);
}

#[test]
fn many_submitters_under_block_lose_nothing() {
    let pool = Pool::builder()
        .workers(2)
        .queue_capacity(8)
        .backpressure(Backpressure::Block)
        .build()
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..6 {
            let (pool, count) = (pool.handle(), count.clone());
            s.spawn(move || {
                for _ in 0..5_000 {
                    let c = count.clone();
                    pool.execute(move || {
                        c.fetch_add(1, SeqCst);
                    })
                    .unwrap();
                }
            });
        }
    });
    common::idle(&pool);
    assert_eq!(count.load(SeqCst), 30_000);
    assert_eq!(pool.metrics().counts.rejected, 0);
}

/// A worker returns the queue places of the tasks it starts in batches,
/// yet a started task holds no place: the capacity check, the queue's
/// length and the running count leave it out at once, while its worker
/// still owes its place.
#[test]
fn a_started_task_holds_no_place_while_its_worker_still_owes_it() {
    started_tasks_hold_no_place(1);
}

/// The same in a pool wider than the slots whose workers return places in
/// batches (the first 64): whichever workers start the tasks, those that
/// pay at every start or those that owe, the queue counts exactly.
#[test]
fn started_tasks_hold_no_place_beside_workers_that_pay_at_every_start() {
    started_tasks_hold_no_place(65);
}

/// Three quick tasks and a held one start on a pool of `workers` with a
/// queue of 4; then, paused, it takes exactly four more.
fn started_tasks_hold_no_place(workers: usize) {
    let pool = Pool::builder()
        .workers(workers)
        .queue_capacity(4)
        .backpressure(Backpressure::Reject)
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    // Three quick tasks and a held one, queued together so that a worker
    // may run them back to back.
    pool.pause();
    for _ in 0..3 {
        let r = ran.clone();
        pool.execute(move || {
            r.fetch_add(1, SeqCst);
        })
        .unwrap();
    }
    let gate = Gate::new();
    let started = common::Arrivals::new();
    let (g, s) = (gate.clone(), started.clone());
    pool.execute(move || {
        s.arrive();
        g.wait();
    })
    .unwrap();
    pool.resume();
    started.wait_for(1);
    // On a wide pool the quick tasks may run on other workers: each counts
    // as running until its worker has recorded its end, at its next start
    // or before it waits for work. (The held task runs on: `running` reads
    // 1 from then; less only if the reading subtracted too much, which the
    // submissions below then show.)
    until(|| ran.load(SeqCst) == 3 && pool.metrics().running <= 1);
    // Paused, no worker starts another task: four places are free, four
    // more tasks fit, the fifth is refused.
    pool.pause();
    for _ in 0..4 {
        let r = ran.clone();
        pool.execute(move || {
            r.fetch_add(1, SeqCst);
        })
        .unwrap_or_else(|_| panic!("a place held by a started task"));
    }
    assert!(matches!(pool.execute(|| {}), Err(SubmitError::Full(_))));
    let m = pool.metrics();
    assert_eq!((m.queued, m.running), (4, 1));
    pool.resume();
    gate.open();
    pool.wait_idle();
    assert_eq!(ran.load(SeqCst), 7);
    let m = pool.metrics();
    assert_eq!((m.queued, m.running), (0, 0));
    let c = m.counts;
    assert_eq!((c.submitted, c.completed, c.rejected), (9, 8, 1));
}
