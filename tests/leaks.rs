//! No leaked threads or closures. One test in this binary, so the process's
//! thread count belongs to it alone.
#![cfg(not(loom))]

mod common;

use common::{block_workers, DropCounter, Gate};
use ebbtide::{Backpressure, Pool};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The thread count once the kernel has reaped exited threads. `join`
/// returns when a thread has cleared its id on exit, a moment before the
/// kernel drops it from `/proc/self/task`; a thread that was never joined
/// stays listed, and the bounded wait then ends with the higher count.
fn settled_threads(expected: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n = os_threads();
        if n == expected || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::yield_now();
    }
}

#[test]
fn every_thread_is_joined_and_every_closure_dropped_exactly_once() {
    let linux = std::path::Path::new("/proc/self/task").exists();
    let base = os_threads();
    let created = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let token = || {
        created.fetch_add(1, SeqCst);
        DropCounter(dropped.clone())
    };

    for round in 0..3 {
        let policy = [
            Backpressure::Block,
            Backpressure::DropOldest,
            Backpressure::Reject,
        ][round];
        let pool = Pool::builder()
            .workers(4)
            .queue_capacity(16)
            .backpressure(policy)
            .build()
            .unwrap();
        if linux {
            assert_eq!(os_threads(), base + 4, "round {round}: 4 workers running");
        }
        // Hold every worker so the queue fills and the policies apply.
        let gate: Gate = block_workers(&pool, 4);
        for _ in 0..40 {
            let (t, r) = (token(), ran.clone());
            let task = move || {
                let _t = t;
                r.fetch_add(1, SeqCst);
            };
            match pool.task().try_execute(task) {
                Ok(()) => {}
                Err(e) => drop(e.into_inner()),
            }
        }
        // Tasks queued with handles that are dropped unjoined.
        let report = pool.shutdown_now();
        assert_eq!(report.still_running, 4, "round {round}");
        gate.open();
        let report = pool.shutdown();
        assert_eq!(
            report.submitted,
            report.completed + report.abandoned + report.dropped + report.rejected,
            "round {round}: {report:?}"
        );
        drop(pool);
        if linux {
            assert_eq!(
                settled_threads(base),
                base,
                "round {round}: every worker joined"
            );
        }
        assert_eq!(dropped.load(SeqCst), created.load(SeqCst), "round {round}");
    }
    assert_eq!(ran.load(SeqCst), 0, "every queued task was abandoned");

    // Normal runs: dropping the pool drains and joins.
    {
        let pool = Pool::builder().workers(3).build().unwrap();
        for _ in 0..1_000 {
            let (t, r) = (token(), ran.clone());
            pool.execute(move || {
                let _t = t;
                r.fetch_add(1, SeqCst);
            })
            .unwrap();
        }
    }
    assert_eq!(ran.load(SeqCst), 1_000);
    assert_eq!(dropped.load(SeqCst), created.load(SeqCst));
    if linux {
        assert_eq!(settled_threads(base), base);
    }

    // A build that fails part-way stops and joins what it started.
    let err = Pool::builder().workers(3).stack_size(1 << 46).build();
    assert!(err.is_err());
    if linux {
        assert_eq!(settled_threads(base), base);
    }
}
