//! The system's thread limits: a pool that would start more threads than
//! the system allows is refused with `BuildError::ThreadLimit` (nothing
//! started, no thread leaked), and an elastic pool whose `max_workers` is
//! above the limit grows to the limit under a blocking load, says so in
//! its resize history, and still runs every task.
//!
//! The limit is made small for this process by lowering `RLIMIT_NPROC`
//! (one test in this binary: the limit is process-wide). As root the
//! kernel does not enforce that limit on thread creation, so nothing else
//! in the process is starved; elsewhere lowering it would also refuse the
//! test's own threads, so the test needs root (CI runs as root).

#![cfg(all(target_os = "linux", not(loom)))]

mod common;

use common::{until, Gate};
use ebbtide::metrics::ResizeReason;
use ebbtide::{BuildError, Pool};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Sets the soft `RLIMIT_NPROC`; returns the old limits.
fn set_nproc(soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit`/`setrlimit` read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NPROC, &mut old), 0);
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NPROC, &new), 0);
    }
    old
}

#[test]
fn pools_stay_within_the_system_thread_limit() {
    // SAFETY: `geteuid` has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test lowers RLIMIT_NPROC, which only root's threads ignore: run it as root"
    );
    let before = threads();
    // The pool keeps 64 threads of margin: room for 24 more here.
    let old = set_nproc((before + 64 + 24) as u64);

    // A fixed pool of 40 workers would pass the limit: refused, nothing
    // started.
    match Pool::builder().workers(40).build() {
        Err(BuildError::ThreadLimit {
            requested,
            available,
            limit,
        }) => {
            assert_eq!(requested, 40);
            assert!(available <= 24, "available {available}");
            assert_eq!(limit, "RLIMIT_NPROC");
        }
        other => panic!("expected a thread-limit error, got {other:?}"),
    }
    assert_eq!(threads(), before, "the refused build started no thread");

    // An elastic pool whose maximum is above the limit grows to the limit
    // under blocked tasks, records why, and runs every task.
    let pool = Pool::builder()
        .min_workers(1)
        .max_workers(200)
        .build()
        .unwrap();
    let gate = Gate::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let (g, r) = (gate.clone(), ran.clone());
            pool.spawn(move || {
                ebbtide::block_in_place(|| g.wait());
                r.fetch_add(1, SeqCst);
            })
            .unwrap()
        })
        .collect();
    until(|| {
        pool.resize_history()
            .iter()
            .any(|e| matches!(e.reason, ResizeReason::ThreadLimit { .. }))
    });
    let live = pool.num_workers();
    assert!(live <= 24 + 1, "grew to {live}, past the limit");
    let event = pool
        .resize_history()
        .into_iter()
        .find(|e| matches!(e.reason, ResizeReason::ThreadLimit { .. }))
        .unwrap();
    assert_eq!(
        event.reason,
        ResizeReason::ThreadLimit {
            limit: "RLIMIT_NPROC"
        }
    );
    gate.open();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(ran.load(SeqCst), 100);
    let report = pool.shutdown();
    assert_eq!((report.submitted, report.completed), (100, 100));
    drop(pool);
    // SAFETY: restores the limits read above.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_NPROC, &old), 0) };
}
