//! Runtime metrics: exact counters, histograms, steals, the Prometheus
//! export (parsed with a real parser), the dump and the stall watchdog.

#![cfg(not(loom))]

mod common;

use common::{assert_identity, block_workers, quiet_expected_panics, Gate, MARK};
use ebbtide::{
    metrics::{StallReport, WorkerState},
    Backpressure, Pool, PoolHandle,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

#[test]
fn counters_are_exact_after_a_known_workload() {
    quiet_expected_panics();
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(4)
        .backpressure(Backpressure::Reject)
        .build()
        .unwrap();
    let gate = block_workers(&pool, 1);
    for _ in 0..4 {
        pool.execute(|| ()).unwrap();
    }
    for _ in 0..3 {
        assert!(pool.execute(|| ()).unwrap_err().is_full());
    }
    let m = pool.metrics();
    assert_eq!((m.queued, m.running, m.busy_workers), (4, 1, 1));
    assert_identity(&m);
    gate.open();
    common::idle(&pool);
    // 100 more, in groups that fit the queue, every tenth panicking.
    for group in 0..25 {
        for j in 0..4 {
            let i = group * 4 + j;
            pool.execute(move || {
                if i % 10 == 0 {
                    panic!("{MARK} {i}");
                }
            })
            .unwrap_or_else(|_| panic!("room was made for task {i}"));
        }
        common::idle(&pool);
    }
    let m = pool.metrics();
    let c = m.counts;
    assert_eq!(
        (c.submitted, c.rejected, c.completed, c.panicked, c.started),
        (108, 3, 95, 10, 105)
    );
    assert_eq!((m.queued, m.running), (0, 0));
    assert_identity(&m);
    assert_eq!(m.run_time.count(), 105);
    assert_eq!(m.queue_wait.count(), 105);

    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(2)
        .backpressure(Backpressure::DropNewest)
        .build()
        .unwrap();
    let gate = block_workers(&pool, 1);
    for _ in 0..5 {
        pool.execute(|| ()).unwrap();
    }
    gate.open();
    common::idle(&pool);
    let c = pool.metrics().counts;
    assert_eq!(
        (c.submitted, c.completed, c.dropped_newest, c.dropped_oldest),
        (6, 3, 3, 0)
    );
}

/// A one-worker pool timed by a clock only the test moves (nanoseconds,
/// starting at `start`).
fn one_worker_on_a_manual_clock(start: u64) -> (Pool, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(start));
    let clock = Arc::clone(&now);
    let pool = Pool::builder()
        .workers(1)
        .metrics_clock(move || Duration::from_nanos(clock.load(SeqCst)))
        .build()
        .unwrap();
    (pool, now)
}

#[test]
fn histograms_hold_exact_durations_from_a_manual_clock() {
    // The pool times tasks with a clock only the tasks move: each task
    // "runs" exactly 3 ms, so every figure below is known exactly.
    let (pool, now) = one_worker_on_a_manual_clock(0);
    // Paused while submitting: all 20 are stamped at 0 ms, then run in
    // order on the one worker, task k starting at 3k ms.
    pool.pause();
    for _ in 0..20 {
        let step = Arc::clone(&now);
        pool.execute(move || {
            step.fetch_add(3_000_000, SeqCst);
        })
        .unwrap();
    }
    pool.resume();
    common::idle(&pool);
    let m = pool.metrics();
    assert_eq!(m.run_time.count(), 20);
    assert_eq!(m.queue_wait.count(), 20);
    assert_eq!(m.run_time.sum(), Duration::from_millis(60));
    // Waits 0, 3, 6, …, 57 ms: 570 ms in all.
    assert_eq!(m.queue_wait.sum(), Duration::from_millis(570));
    // Quantiles are bucket midpoints, within 3.2 % of the value.
    let near = |actual: Duration, ms: u64| {
        let expected = ms as f64 * 1e6;
        let error = (actual.as_nanos() as f64 - expected).abs() / expected;
        assert!(error <= 0.032, "{actual:?} is not within 3.2 % of {ms} ms");
    };
    for q in [
        m.run_time.p50(),
        m.run_time.p90(),
        m.run_time.p99(),
        m.run_time.p999(),
    ] {
        near(q, 3);
    }
    // Rank ⌈q·20⌉ of the waits: the 10th (27 ms), 18th (51), 20th (57).
    near(m.queue_wait.p50(), 27);
    near(m.queue_wait.p90(), 51);
    near(m.queue_wait.p99(), 57);

    let off = Pool::builder()
        .workers(1)
        .histograms(false)
        .build()
        .unwrap();
    off.execute(|| ()).unwrap();
    common::idle(&off);
    let m = off.metrics();
    assert_eq!((m.run_time.count(), m.counts.completed), (0, 1));
}

#[test]
fn histograms_count_the_tasks_workers_timed_not_other_starts() {
    // One worker, a queue of one, the caller runs what does not fit. A
    // task on the worker queues one task and runs a second itself (a
    // start on the worker's slot, untimed); three installs start on the
    // worker too, untimed. Timed: the outer task and the queued one.
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(1)
        .backpressure(Backpressure::CallerRuns)
        .build()
        .unwrap();
    let handle = pool.handle();
    let (done, rx) = mpsc::channel();
    pool.execute(move || {
        handle.execute(|| ()).unwrap();
        // The queue is full: this one runs here, before `execute` returns.
        let tx = done.clone();
        handle.execute(move || tx.send(()).unwrap()).unwrap();
        done.send(()).unwrap();
    })
    .unwrap();
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    for i in 0..3 {
        assert_eq!(pool.install(move || i), i);
    }
    common::idle(&pool);
    let m = pool.metrics();
    assert_eq!(m.counts.caller_runs, 1);
    assert_eq!((m.counts.started, m.counts.completed), (6, 6));
    assert_eq!((m.run_time.count(), m.queue_wait.count()), (2, 2));
    assert_eq!(m.run_time.octave_buckets().last().unwrap().1, 2);
}

#[test]
fn sampled_histograms_keep_exact_counts_past_the_warm_up() {
    // Far past each worker's first 1,024 tasks, where short tasks are
    // sampled one in 16: counts stay exact, and the cumulative buckets
    // and the quantiles agree with them.
    let pool = Pool::builder().workers(2).build().unwrap();
    let n = 20_007;
    for _ in 0..n {
        pool.execute(|| ()).unwrap();
    }
    common::idle(&pool);
    let m = pool.metrics();
    assert_eq!(m.counts.completed, n);
    for h in [&m.run_time, &m.queue_wait] {
        assert_eq!(h.count(), n);
        let buckets = h.octave_buckets();
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(buckets.last().unwrap().1, n);
        assert!(h.p50() <= h.p99() && h.p99() <= h.max());
    }
}

/// One task puts 100 tasks on its worker's own deque, then blocks without
/// helping until all have run: only thieves can run them, whichever of the
/// pool's workers holds them (in a pool wider than a searcher's look, a
/// search goes round the peers a window at a time).
fn flooded_worker_is_stolen_from(workers: usize) {
    const CHILDREN: usize = 100;
    let pool = Pool::builder().workers(workers).build().unwrap();
    let handle = pool.handle();
    let ran = common::Arrivals::new();
    let runners = Arc::new(Mutex::new(Vec::new()));
    let owner = Arc::new(Mutex::new(None));
    let (r, o, rs) = (ran.clone(), owner.clone(), runners.clone());
    pool.execute(move || {
        *o.lock().unwrap() = Some(std::thread::current().id());
        for _ in 0..CHILDREN {
            let (r, rs) = (r.clone(), rs.clone());
            handle
                .execute(move || {
                    rs.lock().unwrap().push(std::thread::current().id());
                    r.arrive();
                })
                .unwrap();
        }
        r.wait_for(CHILDREN);
    })
    .unwrap();
    ran.wait_for(CHILDREN);
    common::idle(&pool);
    let owner = owner.lock().unwrap().expect("the flooding task ran");
    let runners = runners.lock().unwrap();
    assert_eq!(runners.len(), CHILDREN, "each child ran exactly once");
    assert!(
        runners.iter().all(|t| *t != owner),
        "the blocked owner ran none"
    );
    let c = pool.metrics().counts;
    // Every child was stolen; the flooding task itself may have been too
    // (from the deque of a worker that took it from the injector).
    assert!(c.steals >= CHILDREN as u64, "{c:?}");
    assert!(c.steal_attempts >= c.steals);
    assert_eq!(c.completed, CHILDREN as u64 + 1);
}

#[test]
fn steals_happen_when_one_worker_is_flooded_and_another_idles() {
    flooded_worker_is_stolen_from(2);
}

#[test]
fn searchers_of_a_wide_pool_steal_from_any_worker() {
    flooded_worker_is_stolen_from(100);
}

#[test]
fn lock_statistics_cover_every_pool_lock() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let names: Vec<_> = pool.metrics().locks.iter().map(|l| l.name).collect();
    assert_eq!(
        names,
        [
            "sleepers",
            "parker",
            "idle_waiters",
            "room",
            "threads",
            "shard",
            "result_slot"
        ]
    );
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid exposition text")
}

fn sample<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &str,
    label: Option<(&str, &str)>,
) -> &'a prometheus_parse::Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.map_or(true, |(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
}

fn value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn prometheus_export_parses_and_matches_the_snapshot() {
    quiet_expected_panics();
    let pool = Pool::builder()
        .name("ingest-eu")
        .workers(2)
        .build()
        .unwrap();
    for i in 0..50 {
        pool.execute(move || {
            if i == 7 {
                panic!("{MARK}");
            }
        })
        .unwrap();
    }
    common::idle(&pool);
    let m = pool.metrics();
    let text = m.to_prometheus("ebbtide");
    let scrape = parse(&text);
    let pool_label = ("pool", "ingest-eu");
    assert_eq!(
        value(sample(
            &scrape,
            "ebbtide_tasks_submitted_total",
            Some(pool_label)
        )),
        50.0
    );
    assert_eq!(
        value(sample(
            &scrape,
            "ebbtide_tasks_completed_total",
            Some(pool_label)
        )),
        49.0
    );
    assert_eq!(
        value(sample(
            &scrape,
            "ebbtide_tasks_panicked_total",
            Some(pool_label)
        )),
        1.0
    );
    assert_eq!(
        value(sample(&scrape, "ebbtide_workers", Some(pool_label))),
        2.0
    );
    assert_eq!(
        value(sample(&scrape, "ebbtide_tasks_queued", Some(pool_label))),
        0.0
    );
    assert_eq!(
        value(sample(
            &scrape,
            "ebbtide_lock_contended_total",
            Some(("lock", "sleepers"))
        )),
        m.locks[0].contended as f64
    );
    // Histograms: count and cumulative buckets.
    let hist = sample(&scrape, "ebbtide_run_time_seconds", Some(pool_label));
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let last = buckets.last().expect("buckets");
            assert!(last.less_than.is_infinite());
            assert_eq!(last.count, 50.0);
            assert!(buckets
                .windows(2)
                .all(|w| w[0].count <= w[1].count && w[0].less_than < w[1].less_than));
        }
        other => panic!("not a histogram: {other:?}"),
    }
    // Every family has HELP and TYPE lines, counters end in `_total`.
    let types: HashMap<_, _> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split(' ');
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            )
        })
        .collect();
    for (name, kind) in &types {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: {kind}"
        );
    }
    assert_eq!(
        types.get("ebbtide_queue_wait_seconds").map(String::as_str),
        Some("histogram")
    );
}

#[test]
fn prometheus_label_values_are_escaped() {
    // (The parser crate mishandles escaped quotes, so this is checked as
    // text against the exposition format's escaping rules.)
    let pool = Pool::builder()
        .name("a\\b \"c\"\nd")
        .workers(1)
        .build()
        .unwrap();
    let text = pool.metrics().to_prometheus("x");
    assert!(
        text.contains("x_workers{pool=\"a\\\\b \\\"c\\\"\\nd\"} 1\n"),
        "{text}"
    );
    // A batch stage's name is a label value too.
    let pipeline = ebbtide::pipeline::Pipeline::<u32>::builder()
        .batch(
            ebbtide::pipeline::Stage::new("b\"q"),
            10,
            std::time::Duration::from_secs(60),
        )
        .sink(ebbtide::pipeline::Stage::new("s"), |_: Vec<u32>| {})
        .build()
        .unwrap();
    pipeline.send(1).unwrap();
    let text = pipeline.to_prometheus("x");
    assert!(
        text.contains("x_batch_items_buffered{stage=\"b\\\"q\"} 1\n"),
        "{text}"
    );
    pipeline.shutdown();
}

/// A prefix with characters a metric name cannot hold is made a valid
/// name, in every export: the text still parses, under the names said.
#[test]
fn prometheus_names_are_valid_whatever_the_prefix() {
    use ebbtide::metrics::prometheus_prefix;
    assert_eq!(prometheus_prefix("app:v1_x"), "app:v1_x");
    assert_eq!(prometheus_prefix("my-app.v2"), "my_app_v2");
    assert_eq!(prometheus_prefix("9lives"), "_9lives");
    assert_eq!(prometheus_prefix("é"), "_");
    let pool = Pool::builder().name("p").workers(1).build().unwrap();
    pool.spawn(|| ()).unwrap().join().unwrap();
    pool.wait_idle();
    let text = pool.metrics().to_prometheus("my-app.v2");
    let scrape = parse(&text);
    assert_eq!(
        value(sample(&scrape, "my_app_v2_tasks_completed_total", None)),
        1.0
    );
    assert!(
        scrape
            .samples
            .iter()
            .all(|s| s.metric.starts_with("my_app_v2_")),
        "{text}"
    );
    let mut all = String::new();
    ebbtide::metrics::Metrics::write_prometheus_all(&[pool.metrics()], "0x", &mut all).unwrap();
    assert!(parse(&all)
        .samples
        .iter()
        .all(|s| s.metric.starts_with("_0x_")));
}

#[test]
fn the_dump_names_a_stuck_task() {
    let pool = Pool::builder()
        .workers(2)
        .thread_name("dumpy")
        .build()
        .unwrap();
    for _ in 0..5 {
        pool.execute(|| ()).unwrap();
    }
    common::idle(&pool);
    let gate = Gate::new();
    let started = common::Arrivals::new();
    let (g, st) = (gate.clone(), started.clone());
    pool.task()
        .key(&"stuck-key")
        .execute(move || {
            st.arrive();
            g.wait();
        })
        .unwrap();
    started.wait_for(1);
    let dump = pool.dump();
    let stuck: Vec<_> = dump
        .workers
        .iter()
        .filter(|w| w.state == WorkerState::Running)
        .collect();
    assert_eq!(stuck.len(), 1, "{dump}");
    assert!(stuck[0].running_for.is_some());
    assert!(stuck[0].task >= 1);
    let text = dump.to_string();
    assert!(
        text.contains(&format!(
            "{} Running task #{}",
            stuck[0].thread_name, stuck[0].task
        )),
        "{text}"
    );
    assert!(stuck[0].thread_name.starts_with("dumpy-"));
    assert_eq!(stuck[0].shard, Some(pool.shard_of(&"stuck-key")));
    assert!(
        text.contains(&format!("in shard {}", pool.shard_of(&"stuck-key"))),
        "{text}"
    );
    gate.open();
}

/// Submits a task that calls `first`, then runs a nested task through
/// `join` (on a one-worker pool, itself) and blocks on the returned gate.
/// Returns once the nested task has run and ended and the outer task is
/// past its `join` (blocked on the gate, or about to be: it reads as
/// running either way).
fn outer_task_past_a_nested_one(
    pool: &Pool,
    handle: PoolHandle,
    first: impl FnOnce() + Send + 'static,
) -> Gate {
    let gate = Gate::new();
    let nested = common::Arrivals::new();
    let back = common::Arrivals::new();
    let (g, n, b) = (gate.clone(), nested.clone(), back.clone());
    pool.execute(move || {
        first();
        let inner = handle.spawn(move || n.arrive()).unwrap();
        inner.join().unwrap();
        b.arrive();
        g.wait();
    })
    .unwrap();
    nested.wait_for(1);
    back.wait_for(1);
    gate
}

#[test]
fn a_task_that_helped_a_nested_one_reads_as_running_since_its_own_start() {
    // One worker, a clock only the test moves. The outer task starts at
    // 1 µs, runs a nested task itself (its `join` helps) at 5 µs,
    // then blocks; at 9 µs the dump must show it running for 8 µs (its
    // own start put back), not 4 (the nested task's).
    let (pool, now) = one_worker_on_a_manual_clock(1_000);
    let handle = pool.handle();
    let step = Arc::clone(&now);
    let gate = outer_task_past_a_nested_one(&pool, handle, move || step.store(5_000, SeqCst));
    now.store(9_000, SeqCst);
    let dump = pool.dump();
    // Opened before asserting: a failure must not leave the task blocked.
    gate.open();
    let worker = &dump.workers[0];
    assert_eq!(worker.state, WorkerState::Running, "{dump}");
    assert_eq!(
        worker.running_for,
        Some(Duration::from_nanos(8_000)),
        "{dump}"
    );
    common::idle(&pool);
    // Both ended: no longer running (idle, searching or parked by now).
    let dump = pool.dump();
    assert_ne!(dump.workers[0].state, WorkerState::Running, "{dump}");
    assert_eq!(pool.metrics().counts.completed, 2);
}

#[test]
fn with_default_metrics_a_task_that_helped_a_nested_one_still_reads_as_running() {
    // The default metrics time tasks on the tick counter, in a copy of
    // the run of their own: a task run inside another (here by the outer
    // task's `join`, on the one worker) must put the outer task's word
    // back, and a task run by the worker's own loop must leave it not
    // running.
    let pool = Pool::builder().workers(1).build().unwrap();
    let handle = pool.handle();
    let gate = outer_task_past_a_nested_one(&pool, handle, || ());
    let dump = pool.dump();
    // Opened before asserting: a failure must not leave the task blocked.
    gate.open();
    let worker = &dump.workers[0];
    assert_eq!(worker.state, WorkerState::Running, "{dump}");
    assert!(worker.running_for.is_some(), "{dump}");
    // The number of the task it started last: the nested one.
    assert_eq!(worker.task, 2, "{dump}");
    common::idle(&pool);
    let dump = pool.dump();
    assert_ne!(dump.workers[0].state, WorkerState::Running, "{dump}");
    assert_eq!(dump.workers[0].running_for, None, "{dump}");
    assert_eq!(pool.metrics().counts.completed, 2);
}

#[test]
fn the_watchdog_reports_a_stuck_task_once_and_never_fast_ones() {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let pool = Pool::builder()
        .workers(2)
        .thread_name("watched")
        .stall_threshold(Duration::from_millis(20))
        .on_stall(move |report| tx.lock().unwrap().send(report.clone()).unwrap())
        .build()
        .unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let stuck = pool
        .task()
        .name("slow-query")
        .spawn_with(move |_| {
            g.wait();
            Ok(())
        })
        .unwrap();
    let report = rx.recv().expect("the stuck task is reported");
    match &report {
        StallReport::Task {
            thread_name,
            task,
            running_for,
            name,
            shard,
            ..
        } => {
            assert_eq!((name.as_deref(), *shard), (Some("slow-query"), None));
            assert!(thread_name.starts_with("watched-"), "{report}");
            assert_eq!(*task, 1);
            assert!(*running_for >= Duration::from_millis(20));
        }
        other => panic!("unexpected report {other:?}"),
    }
    assert!(
        report.to_string().contains("task #1 (slow-query)"),
        "{report}"
    );
    gate.open();
    stuck.join().unwrap();
    common::idle(&pool);
    assert_eq!(pool.metrics().counts.stalls, 1);
    drop(pool);
    // Reported once: nothing else arrived before the pool (and the handler
    // with its sender) went away.
    assert!(rx.recv().is_err());

    let fast_reports = Arc::new(AtomicUsize::new(0));
    let f = fast_reports.clone();
    let pool = Pool::builder()
        .workers(2)
        .stall_threshold(Duration::from_secs(10))
        .on_stall(move |_| {
            f.fetch_add(1, SeqCst);
        })
        .build()
        .unwrap();
    for _ in 0..10_000 {
        pool.execute(|| ()).unwrap();
    }
    common::idle(&pool);
    assert_eq!(pool.metrics().counts.stalls, 0);
    drop(pool);
    assert_eq!(fast_reports.load(SeqCst), 0);
}

#[test]
fn display_summarizes_and_a_zero_threshold_is_an_error() {
    let pool = Pool::builder().name("summary").workers(1).build().unwrap();
    pool.spawn(|| 1).unwrap().join().unwrap();
    common::idle(&pool);
    let text = pool.metrics().to_string();
    assert!(text.starts_with("pool summary: workers 1"), "{text}");
    assert!(text.contains("completed 1"), "{text}");
    let err = Pool::builder()
        .stall_threshold(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("stall_threshold"), "{err}");
}

/// An elastic pool reports and exports the deques of its live workers, not
/// one line for every slot up to its maximum.
#[test]
fn an_elastic_pool_exports_its_live_workers_deques_only() {
    let pool = Pool::builder()
        .min_workers(2)
        .max_workers(64)
        .build()
        .unwrap();
    let m = pool.metrics();
    assert_eq!(m.workers, 2);
    assert_eq!(m.worker_queue_lens, [0, 0]);
    let scrape = parse(&m.to_prometheus("ebbtide"));
    let workers: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "ebbtide_worker_queue_jobs")
        .map(|s| s.labels.get("worker").unwrap().to_string())
        .collect();
    assert_eq!(workers, ["0", "1"]);
}
