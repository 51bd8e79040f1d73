//! Queue places returned in batches (`sched/starts.rs`).

use super::model;
use crate::loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::Arc;
use crate::{Backpressure, Pool};

/// A task that has started frees its place for a submitter blocked on the
/// full queue while it still runs: the task waits for that submission, so
/// a place kept until the worker's next payment would hang both.
#[test]
fn loom_a_started_task_frees_its_place_for_a_blocked_submitter() {
    model(3, || {
        let pool = Pool::builder()
            .workers(1)
            .queue_capacity(1)
            .backpressure(Backpressure::Block)
            .build()
            .unwrap();
        let second_in = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicUsize::new(0));
        let (s, r) = (second_in.clone(), ran.clone());
        pool.execute(move || {
            while !s.load(SeqCst) {
                loom::thread::yield_now();
            }
            r.fetch_add(1, SeqCst);
        })
        .unwrap_or_else(|_| panic!("accepted"));
        let r = ran.clone();
        pool.execute(move || {
            r.fetch_add(1, SeqCst);
        })
        .unwrap_or_else(|_| panic!("accepted"));
        second_in.store(true, SeqCst);
        let report = pool.shutdown();
        assert_eq!(ran.load(SeqCst), 2);
        assert_eq!(report.completed, 2);
    });
}

/// The queue's length read beside a worker that pays for two starts while
/// a third task waits: the reading never counts fewer tasks queued than
/// were accepted and not yet started (a place subtracted twice would let
/// a full queue take one more).
#[test]
fn loom_a_reading_beside_a_payment_never_undercounts_the_queue() {
    model(2, || reading_beside_three_starts(1));
}

/// The same reading in a pool whose third worker pays at every start
/// beside two that pay in batches (the first `BATCHED_SLOTS`, two under
/// loom): whichever workers start the tasks, the reading never counts
/// fewer queued than accepted and not started, and counts none at the end.
#[test]
fn loom_a_reading_beside_batching_and_paying_workers_never_undercounts_the_queue() {
    model(1, || reading_beside_three_starts(3));
}

/// Three tasks on a pool of `workers`, the queue read while they start.
fn reading_beside_three_starts(workers: usize) {
    let pool = Pool::builder().workers(workers).build().unwrap();
    for _ in 0..3 {
        pool.execute(|| {}).unwrap_or_else(|_| panic!("accepted"));
    }
    let registry = &pool.registry;
    let queued = registry.queued_now();
    let started = registry.starts_seen.load(SeqCst);
    assert!(
        queued + started >= 3,
        "read {queued} queued with only {started} of 3 started"
    );
    pool.wait_idle();
    assert_eq!(registry.queued_now(), 0);
    assert_eq!(pool.shutdown().completed, 3);
}
