//! Tests of the worker loop's status word and task starts under the
//! default metrics (`sched::worker`), read where only the crate can: the
//! word itself, through a pool.

use crate::metrics::clock::ticks;
use crate::metrics::WorkerState;
use crate::Pool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Worker 0's state and the tick it holds.
fn word(pool: &Pool) -> (WorkerState, u64) {
    pool.registry.counters.worker(0).status.read()
}

/// `wait_idle`, on a helper thread, for at most ten seconds.
fn idle(pool: &Pool) {
    let handle = pool.handle();
    let (done, rx) = mpsc::channel();
    std::thread::spawn(move || {
        handle.wait_idle();
        drop(handle);
        let _ = done.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the pool never went idle");
}

/// Waits (up to ten seconds) until worker 0 is parked.
fn until_parked(pool: &Pool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while word(pool).0 != WorkerState::Parked {
        assert!(Instant::now() < deadline, "the worker never parked");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs a task on worker 0 and returns, from inside it, the tick its
/// status word says it started at and a tick read in its body.
fn started_at(pool: &Pool) -> (u64, u64) {
    let registry = std::sync::Arc::clone(&pool.registry);
    let (tx, rx) = mpsc::channel();
    pool.execute(move || {
        let (state, since) = registry.counters.worker(0).status.read();
        assert_eq!(state, WorkerState::Running);
        tx.send((since, ticks())).unwrap();
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

#[test]
fn a_task_the_loop_ran_leaves_the_worker_idle_since_its_end() {
    let pool = Pool::builder().workers(1).build().unwrap();
    assert!(pool.registry.full_metrics);
    let (tx, rx) = mpsc::channel();
    for _ in 0..3 {
        let tx = tx.clone();
        pool.execute(move || tx.send(ticks()).unwrap()).unwrap();
    }
    let last = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .max()
        .unwrap();
    idle(&pool);
    // No task runs: the word is no longer `Running`, and the time it
    // holds is the last task's end (after its body's last tick), not
    // its start, whatever the worker did since (search, park).
    let (state, since) = word(&pool);
    assert_ne!(state, WorkerState::Running);
    assert!(
        since >= last,
        "{state:?} since {since}, last task's body at {last}"
    );
    until_parked(&pool);
    assert!(word(&pool).1 >= last);
}

#[test]
fn a_task_after_a_park_starts_after_the_wake_up() {
    let pool = Pool::builder().workers(1).build().unwrap();
    for _ in 0..20 {
        pool.execute(|| ()).unwrap();
        idle(&pool);
        until_parked(&pool);
        // The start is read after the wake-up, not taken from the end of
        // the task before the park.
        let before = ticks();
        let (since, body) = started_at(&pool);
        assert!(before <= since && since <= body, "{before} {since} {body}");
    }
}
