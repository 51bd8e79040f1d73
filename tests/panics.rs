//! Panic isolation: a thousand panicking tasks, a panicking handler.
#![cfg(not(loom))]

mod common;

use common::{quiet_expected_panics, MARK};
use ebbtide::{Pool, TaskError};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

#[test]
fn a_thousand_panics_are_reported_and_the_pool_keeps_working() {
    quiet_expected_panics();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let pool = Pool::builder()
        .workers(2)
        .thread_name("panicky")
        .panic_handler(move |p| {
            s.lock()
                .unwrap()
                .push((p.thread_name().map(String::from), p.message().to_string()))
        })
        .build()
        .unwrap();
    for i in 0..1_000 {
        pool.execute(move || panic!("{MARK} {i}")).unwrap();
    }
    common::idle(&pool);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1_000);
    for (thread, message) in &seen {
        let thread = thread.as_deref().expect("workers are named");
        assert!(thread.starts_with("panicky-"), "{thread}");
        assert!(message.starts_with(MARK), "{message}");
    }
    let mut ids: Vec<usize> = seen
        .iter()
        .map(|(_, m)| m[MARK.len() + 1..].parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..1_000).collect::<Vec<_>>());
    let c = pool.metrics().counts;
    assert_eq!((c.panicked, c.completed), (1_000, 0));
    // Still works, on every worker.
    let handles: Vec<_> = (0..100).map(|i| pool.spawn(move || i).unwrap()).collect();
    assert_eq!(
        handles.into_iter().map(|h| h.join().unwrap()).sum::<i32>(),
        4950
    );
    assert_eq!(pool.shutdown().panicked, 1_000);
}

#[test]
fn a_panicking_panic_handler_is_contained() {
    quiet_expected_panics();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let pool = Pool::builder()
        .workers(1)
        .panic_handler(move |_| {
            c.fetch_add(1, SeqCst);
            panic!("{MARK}: from the handler");
        })
        .build()
        .unwrap();
    let h = pool
        .spawn(|| -> u8 { panic!("{MARK}: from the task") })
        .unwrap();
    assert_eq!(
        h.join(),
        Err(TaskError::Panicked {
            message: format!("{MARK}: from the task")
        })
    );
    assert_eq!(pool.spawn(|| 3).unwrap().join(), Ok(3));
    common::idle(&pool);
    assert_eq!(calls.load(SeqCst), 1);
}

#[test]
fn a_panicking_destructor_of_an_abandoned_task_is_contained() {
    quiet_expected_panics();
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("{MARK}: from a destructor");
        }
    }
    let pool = Pool::builder().workers(1).build().unwrap();
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let started = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (g, st) = (gate.clone(), started.clone());
    pool.execute(move || {
        *st.0.lock().unwrap() = true;
        st.1.notify_all();
        let mut open = g.0.lock().unwrap();
        while !*open {
            open = g.1.wait(open).unwrap();
        }
    })
    .unwrap();
    {
        let mut s = started.0.lock().unwrap();
        while !*s {
            s = started.1.wait(s).unwrap();
        }
    }
    let bomb = Bomb;
    pool.execute(move || {
        let _keep = &bomb;
    })
    .unwrap();
    let report = pool.shutdown_now();
    assert_eq!((report.abandoned, report.still_running), (1, 1));
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    assert_eq!(pool.shutdown().completed, 1);
}
