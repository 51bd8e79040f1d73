//! Model-based tests: random sequences of submissions (plain or keyed,
//! fire-and-forget or with a handle, some panicking), pauses, resumes,
//! cancellations and waits, ended by one of the shutdowns, checked against
//! a small reference model of what each task may have become.
//!
//! What must hold for every sequence:
//! - every closure is dropped exactly once and runs at most once;
//! - every handle's result agrees with what happened to its task (ran →
//!   its value or its panic; never ran → cancelled only if `cancel`
//!   returned true, dropped only under a dropping policy, abandoned only
//!   after `shutdown_now`/`shutdown_timeout`);
//! - a key's tasks ran in submission order;
//! - the report's counts equal the model's tallies and satisfy the
//!   accounting identity, with nothing left running.

#![cfg(not(loom))]

mod common;

use common::{quiet_expected_panics, MARK};
use ebbtide::{Backpressure, JoinHandle, Pool, SubmitError, TaskError};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
enum Op {
    Submit {
        spawn: bool,
        key: Option<u8>,
        panics: bool,
    },
    Pause,
    Resume,
    Cancel(usize),
    WaitIdle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Drain,
    Now,
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), prop::option::of(0u8..3), prop::bool::weighted(0.15))
            .prop_map(|(spawn, key, panics)| Op::Submit { spawn, key, panics }),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        2 => (0usize..64).prop_map(Op::Cancel),
        1 => Just(Op::WaitIdle),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![Just(End::Drain), Just(End::Now), Just(End::Timeout)]
}

fn policy() -> impl Strategy<Value = Backpressure> {
    prop_oneof![
        Just(Backpressure::Reject),
        Just(Backpressure::DropNewest),
        Just(Backpressure::DropOldest),
    ]
}

/// What the model knows of one task.
struct Task {
    id: usize,
    key: Option<u8>,
    panics: bool,
    ran: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
    handle: Option<JoinHandle<usize>>,
    accepted: bool,
    cancelled: bool,
}

/// Carried by every closure: counts its drop.
struct Token(Arc<AtomicUsize>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn run_case(workers: usize, capacity: usize, policy: Backpressure, ops: &[Op], end: End) {
    quiet_expected_panics();
    let pool = Pool::builder()
        .workers(workers)
        .queue_capacity(capacity)
        .backpressure(policy)
        .panic_handler(|_| {})
        .build()
        .unwrap();
    let log: Arc<Mutex<Vec<(u8, usize)>>> = Arc::default();
    let mut tasks: Vec<Task> = Vec::new();
    let mut rejected = 0u64;
    let mut paused = false;
    for op in ops {
        match *op {
            Op::Submit { spawn, key, panics } => {
                let id = tasks.len();
                let (ran, drops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
                let (r, token, log) = (ran.clone(), Token(drops.clone()), log.clone());
                let body = move || {
                    let _token = token;
                    r.fetch_add(1, SeqCst);
                    if let Some(k) = key {
                        log.lock().unwrap().push((k, id));
                    }
                    if panics {
                        panic!("{MARK}: task {id}");
                    }
                    id
                };
                let mut builder = pool.task();
                if let Some(k) = key {
                    builder = builder.key(&k);
                }
                let mut task = Task {
                    id,
                    key,
                    panics,
                    ran,
                    drops,
                    handle: None,
                    accepted: true,
                    cancelled: false,
                };
                // A refusal hands the closure back; dropping the error
                // drops it.
                let refused = if spawn {
                    match builder.try_spawn(body) {
                        Ok(h) => {
                            task.handle = Some(h);
                            None
                        }
                        Err(e) => Some(e.to_string()),
                    }
                } else {
                    builder
                        .try_execute(move || {
                            body();
                        })
                        .err()
                        .map(|e| e.to_string())
                };
                if let Some(e) = refused {
                    assert_eq!(e, full_message(), "only a full queue refuses");
                    assert_eq!(policy, Backpressure::Reject, "only Reject refuses");
                    task.accepted = false;
                    rejected += 1;
                }
                tasks.push(task);
            }
            Op::Pause => {
                pool.pause();
                paused = true;
            }
            Op::Resume => {
                pool.resume();
                paused = false;
            }
            Op::Cancel(i) => {
                if let Some(h) = tasks
                    .get_mut(i)
                    .and_then(|t| t.handle.as_ref().map(|h| (t.id, h)))
                {
                    let (id, handle) = h;
                    if handle.cancel() {
                        tasks[id].cancelled = true;
                    }
                }
            }
            Op::WaitIdle => {
                // A paused pool with queued work waits for `resume`.
                if !paused {
                    common::idle(&pool);
                }
            }
        }
    }
    let first = match end {
        End::Drain => pool.shutdown(),
        End::Now => pool.shutdown_now(),
        End::Timeout => pool.shutdown_timeout(Duration::ZERO),
    };
    // A second, draining call waits for tasks still running.
    let report = pool.shutdown();
    assert_eq!(report.still_running, 0, "{report:?}");
    assert!(first.completed <= report.completed);
    drop(pool);

    let ran = |t: &Task| t.ran.load(SeqCst);
    let mut ran_ok = 0;
    let mut ran_panicked = 0;
    let mut accepted = 0;
    for t in &mut tasks {
        assert_eq!(t.drops.load(SeqCst), 1, "task {} dropped once", t.id);
        let n = t.ran.load(SeqCst);
        assert!(n <= 1, "task {} ran {n} times", t.id);
        if !t.accepted {
            assert_eq!(n, 0, "a refused task never runs");
            continue;
        }
        accepted += 1;
        if n == 1 {
            if t.panics {
                ran_panicked += 1;
            } else {
                ran_ok += 1;
            }
        }
        if t.cancelled {
            assert_eq!(n, 0, "task {} ran after its cancel returned true", t.id);
        }
        if let Some(h) = t.handle.take() {
            let result = h.join();
            match (n, t.panics) {
                (1, false) => assert_eq!(result, Ok(t.id)),
                (1, true) => assert_eq!(
                    result,
                    Err(TaskError::Panicked {
                        message: format!("{MARK}: task {}", t.id)
                    })
                ),
                _ => match result {
                    Err(TaskError::Cancelled) => assert!(t.cancelled, "task {}", t.id),
                    Err(TaskError::Dropped) => assert!(
                        matches!(policy, Backpressure::DropNewest | Backpressure::DropOldest),
                        "task {} dropped under {policy:?}",
                        t.id
                    ),
                    Err(TaskError::Abandoned) => {
                        assert!(end != End::Drain, "task {} abandoned by a drain", t.id)
                    }
                    other => panic!("task {} never ran but resolved to {other:?}", t.id),
                },
            }
        }
    }
    let ran_total = tasks.iter().map(ran).sum::<usize>() as u64;

    // A key's tasks ran in submission order.
    let log = log.lock().unwrap();
    for key in 0..3u8 {
        let ids: Vec<usize> = log
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|&(_, id)| id)
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "key {key} ran out of order: {ids:?}"
        );
        let expected = tasks
            .iter()
            .filter(|t| t.key == Some(key) && ran(t) == 1)
            .count();
        assert_eq!(ids.len(), expected);
    }

    // The counts are the model's, and the identity holds.
    assert_eq!(report.completed, ran_ok, "{report:?}");
    assert_eq!(report.panicked, ran_panicked, "{report:?}");
    assert_eq!(report.rejected, rejected, "{report:?}");
    assert_eq!(report.submitted, accepted + rejected, "{report:?}");
    assert_eq!(
        report.dropped + report.abandoned + report.cancelled + report.timed_out,
        accepted - ran_total,
        "{report:?}"
    );
    if end == End::Drain {
        assert_eq!(report.abandoned, 0, "{report:?}");
    }
    if policy == Backpressure::Reject {
        assert_eq!(report.dropped, 0, "{report:?}");
    } else {
        assert_eq!(report.rejected, 0, "{report:?}");
    }
    assert_eq!(
        report.submitted,
        report.completed
            + report.panicked
            + report.abandoned
            + report.dropped
            + report.rejected
            + report.timed_out
            + report.cancelled
            + report.still_running,
        "{report:?}"
    );
}

/// How a `Full` refusal reads.
fn full_message() -> String {
    SubmitError::Full(()).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_accepted_task_ends_exactly_once(
        workers in 1usize..=3,
        capacity in prop_oneof![Just(2usize), Just(8), Just(1 << 20)],
        policy in policy(),
        ops in prop::collection::vec(op(), 1..48),
        end in end(),
    ) {
        run_case(workers, capacity, policy, &ops, end);
    }
}
