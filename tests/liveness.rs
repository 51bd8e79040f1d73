//! No accepted task waits forever: tasks that keep submitting successors
//! from inside the pool (chains) do not starve a task submitted from
//! outside, keyed or not, on a paused-then-resumed pool, or while every
//! worker helps inside a `join`. The bound is counted in tasks run, not
//! in time: every worker looks at each other queue first at least once
//! every `3 × 61` looks (`src/sched/fair.rs`).
//!
//! Also: a shutdown report taken while tasks finish always adds up.

#![cfg(not(loom))]

mod common;

use common::{Gate, PATIENCE};
use ebbtide::{Pool, PoolHandle, ShutdownReport};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

/// Looks between two fair looks (`FAIR_INTERVAL` in `src/sched/fair.rs`).
const INTERVAL: u64 = 61;
const CHAINS: usize = 4;

/// Chain tasks run so far, per worker (by the index in its thread name).
type Runs = Arc<[AtomicU64; 8]>;

/// The index of the worker running this code.
fn me() -> usize {
    let name = std::thread::current()
        .name()
        .unwrap_or_default()
        .to_string();
    name.rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("on a worker")
}

/// Chains of tasks, each submitting its successor from inside the pool.
struct Chains {
    runs: Runs,
    stop: Arc<AtomicBool>,
}

fn link(pool: PoolHandle, runs: Runs, stop: Arc<AtomicBool>) {
    if stop.load(SeqCst) {
        return;
    }
    runs[me()].fetch_add(1, SeqCst);
    // A little work, then the successor.
    std::hint::black_box((0..200u64).sum::<u64>());
    let next = pool.clone();
    pool.execute(move || link(next, runs, stop))
        .unwrap_or_else(|_| panic!("a chain link was refused"));
}

impl Chains {
    fn start(pool: &PoolHandle) -> Chains {
        let chains = Chains {
            runs: Arc::default(),
            stop: Arc::default(),
        };
        let started = Arc::new(AtomicU64::new(0));
        for _ in 0..CHAINS {
            let (p, r, s) = (pool.clone(), chains.runs.clone(), chains.stop.clone());
            let started = started.clone();
            pool.execute(move || {
                started.fetch_add(1, SeqCst);
                link(p, r, s)
            })
            .unwrap();
        }
        // Every chain running. Each first link waits in the injector until
        // a worker takes it, and an outside task queued behind one waits
        // for it too: with the submitting thread preempted between two of
        // these submissions, one worker can run a thousand links of the
        // first chain before the others are queued.
        common::until(|| started.load(SeqCst) == CHAINS as u64 && chains.total() >= 1_000);
        chains
    }

    fn total(&self) -> u64 {
        self.runs.iter().map(|r| r.load(SeqCst)).sum()
    }

    fn snapshot(&self) -> [u64; 8] {
        std::array::from_fn(|i| self.runs[i].load(SeqCst))
    }

    fn stop(&self, pool: &Pool) {
        self.stop.store(true, SeqCst);
        common::idle(pool);
    }
}

/// The most chain tasks the worker that starts an outside task may run
/// between the task's submission and its start: it looks at each queue
/// first within three intervals of looks (one look per task it runs), and
/// may be in the middle of one task (plus one for the counters' reads).
const BOUND: u64 = 3 * INTERVAL + 2;

/// Submits `submit`'s task while the chains run and returns how many chain
/// tasks the worker that started it ran after `submit` returned and before
/// the task started. (Other workers may run more meanwhile, when the OS
/// gives them more of the CPUs.)
///
/// The count starts when `submit` has returned, not before it is called:
/// the task is queued by then, and a submitting thread the OS preempts
/// before it queues the task must not count the chain tasks run meanwhile.
/// Counting from a little later only lowers the count, so a task passed
/// over more than the bound still fails the test.
fn passed_over(chains: &Chains, submit: impl FnOnce(Box<dyn FnOnce() + Send>)) -> u64 {
    let started = Arc::new(std::sync::Mutex::new(None));
    let (s, runs) = (started.clone(), chains.runs.clone());
    submit(Box::new(move || {
        let worker = me();
        *s.lock().unwrap() = Some((worker, runs[worker].load(SeqCst)));
    }));
    let queued = chains.snapshot();
    common::until(|| started.lock().unwrap().is_some());
    let (worker, at_start) = started.lock().unwrap().unwrap();
    at_start.saturating_sub(queued[worker])
}

#[test]
fn outside_tasks_start_while_chains_keep_every_deque_full() {
    for workers in [1, 2, 4] {
        let pool = Pool::builder().workers(workers).build().unwrap();
        let chains = Chains::start(&pool.handle());
        let plain = passed_over(&chains, |f| pool.execute(f).unwrap());
        assert!(
            plain <= BOUND,
            "{workers} workers: plain task passed over by {plain} > {BOUND}"
        );

        let keyed = passed_over(&chains, |f| pool.task().key(&"outside").execute(f).unwrap());
        assert!(
            keyed <= BOUND,
            "{workers} workers: keyed task passed over by {keyed} > {BOUND}"
        );

        // Paused, then resumed: the held chain links and the outside task
        // wait together in the injector, the links ahead of it; the task
        // still starts within a bound. Older tasks go first at a fair look:
        // a batch from the injector may carry the task and up to `CHAINS`
        // links older than it to the bottom of a worker's deque (one fair
        // look at the injector), where each fair look at the deque's
        // oldest end takes one of them (a link it takes pushes its
        // successor on top, not below); a steal may move the task once more.
        pool.pause();
        let resumed = passed_over(&chains, |f| {
            pool.execute(f).unwrap();
            pool.resume();
        });
        let resumed_bound = (CHAINS as u64 + 2) * BOUND;
        assert!(
            resumed <= resumed_bound,
            "{workers} workers: task on a resumed pool passed over by {resumed} > {resumed_bound}"
        );
        chains.stop(&pool);
        let report = pool.shutdown();
        assert_eq!(report.submitted, report.completed, "{report:?}");
    }
}

#[test]
fn outside_tasks_start_while_every_worker_helps_inside_a_join() {
    for workers in [1, 2, 4] {
        let pool = Pool::builder().workers(workers).build().unwrap();
        // Tasks on another pool that finish when the test says so: each
        // worker of `pool` joins one, helping with chain work meanwhile.
        let other = Pool::builder().workers(workers).build().unwrap();
        let gate = Gate::new();
        let helping = Arc::new(AtomicU64::new(0));
        let chains = Chains {
            runs: Arc::default(),
            stop: Arc::default(),
        };
        for _ in 0..workers {
            let g = gate.clone();
            let awaited = other.spawn(move || g.wait()).unwrap();
            let (h, runs, stop) = (pool.handle(), chains.runs.clone(), chains.stop.clone());
            let helping = helping.clone();
            pool.execute(move || {
                // Start a chain on this worker, then wait inside the pool.
                let next = h.clone();
                h.execute(move || link(next, runs, stop)).unwrap();
                helping.fetch_add(1, SeqCst);
                awaited.join().unwrap();
            })
            .unwrap();
        }
        common::until(|| helping.load(SeqCst) == workers as u64 && chains.total() >= 1_000);
        let plain = passed_over(&chains, |f| pool.execute(f).unwrap());
        assert!(
            plain <= BOUND,
            "{workers} helping workers: passed over by {plain} > {BOUND}"
        );
        let keyed = passed_over(&chains, |f| pool.task().key(&7u8).execute(f).unwrap());
        assert!(
            keyed <= BOUND,
            "{workers} helping workers: keyed passed over by {keyed} > {BOUND}"
        );
        chains.stop.store(true, SeqCst);
        gate.open();
        common::idle(&pool);
        drop(other);
        let report = pool.shutdown();
        assert_eq!(report.submitted, report.completed, "{report:?}");
    }
}

fn adds_up(r: &ShutdownReport) -> bool {
    r.submitted
        == r.completed
            + r.panicked
            + r.abandoned
            + r.dropped
            + r.rejected
            + r.timed_out
            + r.cancelled
            + r.still_running
}

#[test]
fn reports_taken_while_tasks_finish_always_add_up() {
    let deadline = std::time::Instant::now() + PATIENCE;
    for round in 0..1_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "round {round}: out of time"
        );
        let pool = Pool::builder().workers(2).build().unwrap();
        let handles: Vec<_> = (0..100u64)
            .map(|i| pool.spawn(move || i).unwrap())
            .collect();
        // Another thread joins them while this one shuts down: finishes and
        // the report race.
        let go = Gate::new();
        let g = go.clone();
        let joiner = std::thread::spawn(move || {
            g.wait();
            handles
                .into_iter()
                .map(|h| h.join())
                .filter(Result::is_ok)
                .count()
        });
        go.open();
        let now = pool.shutdown_now();
        assert!(adds_up(&now), "round {round}: {now:?}");
        let joined = joiner.join().unwrap() as u64;
        let last = pool.shutdown();
        assert!(adds_up(&last), "round {round}: {last:?}");
        assert_eq!(last.still_running, 0, "round {round}: {last:?}");
        assert_eq!(last.completed, joined, "round {round}: {last:?}");
        assert_eq!(
            last.completed + last.abandoned,
            100,
            "round {round}: {last:?}"
        );
    }
}
