//! Keyed submission: per-key order, exclusivity, stealing under skew,
//! panics, backpressure, shutdown, per-shard state, self-wait detection.

#![cfg(not(loom))]

mod common;

use common::{quiet_expected_panics, Arrivals, Gate, MARK};
use ebbtide::{Backpressure, Pool, TaskError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

/// Per shard: a plain "someone is in here" flag and, per key, the
/// (submitting thread, sequence) pairs in the order they ran.
#[derive(Default)]
struct ShardLog {
    busy: bool,
    runs: HashMap<u32, Vec<(u8, u32)>>,
}

#[test]
fn a_million_keyed_tasks_from_eight_threads_keep_per_key_order_and_exclusivity() {
    const THREADS: u8 = 8;
    const KEYS: u32 = 1_000;
    const PER_THREAD: u32 = 125_000;
    let pool = Pool::builder().workers(4).build().unwrap();
    let shards = pool.shards();
    let in_use: Arc<Vec<AtomicBool>> =
        Arc::new((0..shards).map(|_| AtomicBool::new(false)).collect());
    let log = pool.keyed_state(|_| ShardLog::default());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (log, in_use) = (&log, &in_use);
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let key = (i * 7 + u32::from(t) * 131) % KEYS;
                    let seq = i;
                    let in_use = Arc::clone(in_use);
                    let shard = log.shard_of(&key);
                    log.execute(&key, move |state: &mut ShardLog| {
                        // Two checks of exclusivity: a plain flag in the
                        // state and an atomic per shard.
                        assert!(!state.busy, "shard state entered twice");
                        state.busy = true;
                        assert!(
                            !in_use[shard].swap(true, SeqCst),
                            "shard {shard} ran concurrently"
                        );
                        state.runs.entry(key).or_default().push((t, seq));
                        in_use[shard].store(false, SeqCst);
                        state.busy = false;
                    })
                    .unwrap_or_else(|_| panic!("keyed task not accepted"));
                }
            });
        }
    });
    common::idle(&pool);
    let states = log
        .into_states()
        .unwrap_or_else(|_| panic!("no task is left"));
    let mut total = 0usize;
    for state in states.into_iter().flatten() {
        for (key, runs) in state.runs {
            total += runs.len();
            // Per key, each submitting thread's tasks ran in its order.
            let mut last: HashMap<u8, u32> = HashMap::new();
            for (t, seq) in runs {
                if let Some(prev) = last.insert(t, seq) {
                    assert!(prev < seq, "key {key}: thread {t} ran {seq} after {prev}");
                }
            }
        }
    }
    assert_eq!(
        total,
        THREADS as usize * PER_THREAD as usize,
        "every task ran exactly once"
    );
    let c = pool.metrics().counts;
    assert_eq!(c.completed, u64::from(THREADS) * u64::from(PER_THREAD));
}

#[test]
fn other_keys_progress_while_a_hot_key_is_stuck() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let hot = "hot";
    let hot_shard = pool.shard_of(&hot);
    let gate = Gate::new();
    let started = Arrivals::new();
    let (g, st) = (gate.clone(), started.clone());
    pool.task()
        .key(&hot)
        .execute(move || {
            st.arrive();
            g.wait();
        })
        .unwrap();
    started.wait_for(1);
    // Half the load on the hot key, the other half on keys of other shards
    // (among them shards whose home is the stuck worker).
    let hot_ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..5_000 {
        let h = hot_ran.clone();
        pool.task()
            .key(&hot)
            .execute(move || {
                h.fetch_add(1, SeqCst);
            })
            .unwrap();
    }
    let done = Arrivals::new();
    let mut others = 0;
    for key in 0..10_000u32 {
        if pool.shard_of(&key) == hot_shard {
            continue;
        }
        others += 1;
        let d = done.clone();
        pool.task().key(&key).execute(move || d.arrive()).unwrap();
        if others == 5_000 {
            break;
        }
    }
    // All of them finish while the hot shard is still stuck.
    done.wait_for(others);
    assert_eq!(hot_ran.load(SeqCst), 0);
    gate.open();
    common::idle(&pool);
    assert_eq!(hot_ran.load(SeqCst), 5_000);
    assert!(pool.metrics().counts.steals > 0);
}

#[test]
fn a_panic_in_a_keyed_task_is_isolated() {
    quiet_expected_panics();
    let pool = Pool::builder().workers(2).build().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..10 {
        let order = order.clone();
        handles.push(
            pool.task()
                .key(&"k")
                .spawn(move || {
                    if i == 3 {
                        panic!("{MARK} {i}");
                    }
                    order.lock().unwrap().push(i);
                    i
                })
                .unwrap(),
        );
    }
    let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    assert!(
        matches!(&results[3], Err(TaskError::Panicked { message }) if message == &format!("{MARK} 3"))
    );
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    common::idle(&pool);
    let c = pool.metrics().counts;
    assert_eq!((c.completed, c.panicked), (9, 1));
}

#[test]
fn keyed_tasks_count_towards_capacity_and_shutdown_accounting() {
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(30)
        .backpressure(Backpressure::Reject)
        .build()
        .unwrap();
    let gate = Gate::new();
    let started = Arrivals::new();
    let (g, st) = (gate.clone(), started.clone());
    pool.task()
        .key(&"a")
        .execute(move || {
            st.arrive();
            g.wait();
        })
        .unwrap();
    started.wait_for(1);
    let ran = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..30u32 {
        let r = ran.clone();
        let key = if i < 10 { 0 } else { i };
        handles.push(
            pool.task()
                .key(&key)
                .spawn(move || r.fetch_add(1, SeqCst))
                .unwrap(),
        );
    }
    // The queue is full of keyed tasks.
    assert!(pool.task().key(&"b").execute(|| ()).unwrap_err().is_full());
    let m = pool.metrics();
    assert_eq!((m.queued, m.keyed_queued), (30, 30));
    let report = pool.shutdown_now();
    assert_eq!((report.abandoned, report.still_running), (30, 1));
    assert!(handles
        .into_iter()
        .all(|h| h.join() == Err(TaskError::Abandoned)));
    gate.open();
    let report = pool.shutdown();
    assert_eq!(
        (
            report.submitted,
            report.completed,
            report.abandoned,
            report.rejected
        ),
        (32, 1, 30, 1)
    );
    assert_eq!(ran.load(SeqCst), 0);
    assert!(pool
        .task()
        .key(&"a")
        .execute(|| ())
        .unwrap_err()
        .is_shut_down());
}

#[test]
fn shutdown_drains_keyed_tasks_in_order() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..1_000 {
        let order = order.clone();
        pool.task()
            .key(&(i % 3))
            .execute(move || order.lock().unwrap().push(i))
            .unwrap();
    }
    let report = pool.shutdown();
    assert_eq!(report.completed, 1_000);
    let order = order.lock().unwrap();
    for k in 0..3 {
        let per_key: Vec<_> = order.iter().filter(|&&i| i % 3 == k).collect();
        assert!(
            per_key.windows(2).all(|w| w[0] < w[1]),
            "key {k} out of order"
        );
        assert_eq!(per_key.len(), (0..1_000).filter(|i| i % 3 == k).count());
    }
}

#[test]
fn waiting_on_a_later_task_of_the_own_shard_is_refused() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let handle = pool.handle();
    let outcome = pool
        .task()
        .key(&"same")
        .spawn(move || {
            let later = handle.task().key(&"same").spawn(|| 1).unwrap();
            later.join()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(outcome, Err(TaskError::WouldDeadlock));
    assert!(TaskError::WouldDeadlock.to_string().contains("own shard"));
    // The refused task still ran.
    common::idle(&pool);
    assert_eq!(pool.metrics().counts.completed, 2);

    // With per-shard state too, and with join_blocking.
    let h = pool.handle();
    let st = pool.keyed_state(|_| ());
    let outcome = st
        .spawn(&"k", move |_| {
            h.task().key(&"k").spawn(|| ()).unwrap().join_blocking()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(outcome, Err(TaskError::WouldDeadlock));
}

#[test]
fn a_waiting_keyed_task_helps_but_never_with_its_own_shard() {
    // One worker: while task A of key `one` waits for a task of key `two`,
    // the worker runs that task (helping), but not the next task of `one`.
    let pool = Pool::builder().workers(1).build().unwrap();
    let two = (0..1000u32)
        .find(|k| pool.shard_of(k) != pool.shard_of(&"one"))
        .unwrap();
    let handle = pool.handle();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    pool.task()
        .key(&"one")
        .execute(move || {
            l.lock().unwrap().push("one: A starts");
            let l2 = l.clone();
            handle
                .task()
                .key(&"one")
                .execute(move || l2.lock().unwrap().push("one: B"))
                .unwrap();
            let l3 = l.clone();
            let other = handle
                .task()
                .key(&two)
                .spawn(move || l3.lock().unwrap().push("two: C"))
                .unwrap();
            other.join().unwrap();
            l.lock().unwrap().push("one: A ends");
        })
        .unwrap();
    common::idle(&pool);
    assert_eq!(
        *log.lock().unwrap(),
        ["one: A starts", "two: C", "one: A ends", "one: B"]
    );
}

#[test]
fn per_shard_state_is_created_lazily_and_handed_back() {
    let pool = Pool::builder().workers(2).shards(8).build().unwrap();
    assert_eq!(pool.shards(), 8);
    let created = Arc::new(AtomicUsize::new(0));
    let c = created.clone();
    let sums = pool.keyed_state(move |shard| {
        c.fetch_add(1, SeqCst);
        (shard, 0u64)
    });
    // A task of this handle held at a gate: the states are still in use.
    let gate = Gate::new();
    let started = Arrivals::new();
    let (g, st) = (gate.clone(), started.clone());
    sums.execute(&"held", move |_| {
        st.arrive();
        g.wait();
    })
    .unwrap();
    started.wait_for(1);
    for i in 0..1_000u64 {
        sums.execute(&(i % 5), move |(_, sum)| *sum += i).unwrap();
    }
    let sums = match sums.into_states() {
        Ok(_) => panic!("a task of this handle is running"),
        Err(sums) => sums,
    };
    gate.open();
    common::idle(&pool);
    let states = sums.into_states().unwrap_or_else(|_| panic!("idle"));
    assert_eq!(states.len(), 8);
    let used: Vec<_> = states.iter().flatten().collect();
    assert_eq!(used.len(), created.load(SeqCst));
    assert!(used.iter().all(|(shard, _)| states[*shard].is_some()));
    assert_eq!(
        used.iter().map(|(_, s)| s).sum::<u64>(),
        (0..1_000u64).sum::<u64>()
    );
}

#[test]
fn caller_runs_does_not_run_keyed_tasks_on_the_caller() {
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(1)
        .backpressure(Backpressure::CallerRuns)
        .build()
        .unwrap();
    let me = std::thread::current().id();
    let threads = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..200 {
        let t = threads.clone();
        pool.task()
            .key(&"k")
            .execute(move || t.lock().unwrap().push(std::thread::current().id()))
            .unwrap();
    }
    common::idle(&pool);
    let threads = threads.lock().unwrap();
    assert_eq!(threads.len(), 200);
    assert!(threads.iter().all(|&t| t != me));
}

#[test]
fn shards_setting_is_validated() {
    let e = Pool::builder().shards(0).build().unwrap_err();
    assert!(e.to_string().contains("shards"), "{e}");
    let pool = Pool::builder().max_workers(40).build().unwrap();
    assert_eq!(pool.shards(), 256);
    let pool = Pool::builder().workers(2).build().unwrap();
    assert_eq!(pool.shards(), 64);
    // The shard of a key is stable across pools of different sizes.
    let other = Pool::builder().workers(1).build().unwrap();
    assert!((0..100).all(|k| pool.shard_of(&k) == other.shard_of(&k)));
}
