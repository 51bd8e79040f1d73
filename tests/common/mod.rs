//! Synchronization helpers for the tests: latches and gates, no sleeps.
//! Every wait here has a deadline ([`PATIENCE`]): a test whose condition
//! never comes fails with a message instead of hanging.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

/// The workloads the benchmarks run too (fib, quicksort, spin).
#[path = "../../benches/common/workloads.rs"]
pub mod workloads;

/// How long any helper waits before it fails the test: far beyond what a
/// passing test needs on a loaded 2-core machine, far below CI's limit.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Waits on `cv` until `done(&state)` or [`PATIENCE`] passed; panics with
/// `what` then.
fn wait_on<'a, T>(
    cv: &Condvar,
    mut guard: MutexGuard<'a, T>,
    what: &str,
    mut done: impl FnMut(&T) -> bool,
) -> MutexGuard<'a, T> {
    let deadline = Instant::now() + PATIENCE;
    while !done(&guard) {
        let now = Instant::now();
        assert!(
            now < deadline,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
    }
    guard
}

/// `wait_idle`, with a deadline: the pool is waited for on a helper
/// thread, and the test fails after [`PATIENCE`] instead of hanging. Only
/// from the test's own thread: called from a task, `wait_idle` leaves the
/// calling task out, which a helper thread would not.
pub fn idle(pool: &ebbtide::Pool) {
    idle_handle(pool.handle());
}

/// [`idle`], for a handle.
pub fn idle_handle(handle: ebbtide::PoolHandle) {
    let (done, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        handle.wait_idle();
        drop(handle);
        let _ = done.send(());
    });
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("gave up after {PATIENCE:?} waiting for the pool to go idle"));
}

/// Runs `f` (a wait with no deadline of its own, such as a group's `wait`)
/// on a thread of its own and returns what it returned; panics, naming
/// `what`, if it has not returned after [`PATIENCE`].
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("gave up after {PATIENCE:?} waiting for {what}"))
}

/// The marker expected test panics carry; [`quiet_expected_panics`] keeps
/// them out of the test output.
pub const MARK: &str = "expected test panic";

/// Installs (once per test binary) a panic hook that stays silent for
/// panics whose message contains [`MARK`]; other panics print as usual.
pub fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied());
            if !msg.is_some_and(|m| m.contains(MARK)) {
                default(info);
            }
        }));
    });
}

/// A gate tasks wait at until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
    pub fn wait(&self) {
        let open = self.0 .0.lock().unwrap();
        drop(wait_on(&self.0 .1, open, "a gate to open", |o| *o));
    }
}

/// Counts arrivals; `wait_for(n)` blocks until `n` have arrived.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<(Mutex<usize>, Condvar)>);

impl Arrivals {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn arrive(&self) {
        *self.0 .0.lock().unwrap() += 1;
        self.0 .1.notify_all();
    }
    /// How many arrived so far.
    pub fn seen(&self) -> usize {
        *self.0 .0.lock().unwrap()
    }
    pub fn wait_for(&self, n: usize) {
        let count = self.0 .0.lock().unwrap();
        drop(wait_on(&self.0 .1, count, &format!("{n} arrivals"), |c| {
            *c >= n
        }));
    }
}

/// What the helpers submit through: a `Pool` or a `PoolHandle`.
pub trait Submit {
    fn submit(&self, f: impl FnOnce() + Send + 'static);
}

impl Submit for ebbtide::Pool {
    fn submit(&self, f: impl FnOnce() + Send + 'static) {
        self.execute(f)
            .unwrap_or_else(|_| panic!("helper task not accepted"));
    }
}

impl Submit for ebbtide::PoolHandle {
    fn submit(&self, f: impl FnOnce() + Send + 'static) {
        self.execute(f)
            .unwrap_or_else(|_| panic!("helper task not accepted"));
    }
}

/// Occupies `n` workers of `pool` with tasks that wait at the returned gate;
/// returns once all `n` are running.
pub fn block_workers(pool: &impl Submit, n: usize) -> Gate {
    let gate = Gate::new();
    let started = Arrivals::new();
    for _ in 0..n {
        let (gate, started) = (gate.clone(), started.clone());
        pool.submit(move || {
            started.arrive();
            gate.wait();
        });
    }
    started.wait_for(n);
    gate
}

/// Spins (yielding) until `cond` holds: for states the test cannot be
/// notified of, such as "a thread is blocked inside the pool". Panics after
/// [`PATIENCE`].
pub fn until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for a condition"
        );
        std::thread::yield_now();
    }
}

/// A value that counts its drops.
pub struct DropCounter(pub Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Asserts the accounting identity of a snapshot:
/// `submitted = completed + failed + dead_lettered + panicked + rejected +
/// dropped + abandoned + timed_out + cancelled + running + queued +
/// timers_pending`.
pub fn assert_identity(m: &ebbtide::metrics::Metrics) {
    let c = &m.counts;
    assert_eq!(
        c.submitted,
        c.completed
            + c.failed
            + c.dead_lettered
            + m.timers_pending as u64
            + c.panicked
            + c.rejected
            + c.dropped()
            + c.abandoned
            + c.timed_out
            + c.cancelled
            + m.running as u64
            + m.queued as u64,
        "{m:?}"
    );
}

/// A clock the test moves by hand, for `Builder::timer_clock`.
#[derive(Clone)]
pub struct ManualTime(Arc<Mutex<Instant>>);

impl Default for ManualTime {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualTime {
    pub fn new() -> Self {
        ManualTime(Arc::new(Mutex::new(Instant::now())))
    }

    pub fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }

    pub fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }

    /// A pool builder of `workers` workers on this clock.
    pub fn pool(&self, workers: usize) -> ebbtide::Builder {
        let clock = self.clone();
        ebbtide::Pool::builder()
            .workers(workers)
            .timer_clock(move || clock.now())
    }
}
