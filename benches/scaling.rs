//! Auto-scaling against tokio's blocking pool (`spawn_blocking`, grows to
//! 512), rayon and `threadpool` (fixed at the CPU count) and fixed ebbtide
//! pools, in the same run. ebbtide: `min_workers = CPUs`, `max_workers =
//! 512`. Peak threads are sampled from `/proc/self/status` every 200 µs (minus
//! the threads present before). Each figure is the median of 3 runs.
//!
//! The `floor_` rows are floors, not pools: 256 threads (`FLOOR_THREADS=n`
//! for another count) woken by one broadcast and taking task numbers off
//! one counter, started before the clock (`floor_warm`) or at the first
//! burst's start as fast as the machine starts threads, then kept
//! (`floor_cold_start`): what a pool of that many threads could at best do.
//!
//! `release`: after 4,000 tasks sleeping 1 ms, how long the pool takes to
//! give its threads back, with a keep-alive of 1 s (ebbtide's
//! `keep_alive`, tokio's `thread_keep_alive`), sampled every 10 ms for at
//! most 20 s. `release-long`: the same, with one task sleeping 10 s
//! submitted 50 ms into the quiet (for ebbtide also announced, in
//! `block_in_place`).
//!
//! Run: `cargo bench --bench scaling [-- blocking|cpu|bursty|steady|release|release-long]`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;
use common::harness::median;
use common::workloads::spin;
use common::Countdown;

/// The process's thread count: the `Threads:` line of `/proc/self/status`.
/// (Listing `/proc/self/task` every 200 µs cost a good share of a CPU with
/// hundreds of threads; so did `/proc/self/stat`, which sums every
/// thread's CPU time: 51 µs a read with 500 threads against 11 µs here,
/// a burden that grew with the threads of the pool measured.)
fn threads_now() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `f`, sampling the thread count; returns (elapsed, peak extra threads).
fn measure(f: impl FnOnce()) -> (Duration, usize) {
    let base = threads_now();
    let peak = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(threads_now(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let t = Instant::now();
    f();
    let elapsed = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    // The sampler itself is one of the threads counted.
    (
        elapsed,
        peak.load(Ordering::Relaxed).saturating_sub(base + 1),
    )
}

fn elastic() -> ebbtide::Pool {
    ebbtide::Pool::builder()
        .min_workers(num_cpus::get())
        .max_workers(512)
        .build()
        .unwrap()
}

type Job = Arc<dyn Fn() + Send + Sync>;

/// Threads in the floor rows: half of tokio's 512 unless `FLOOR_THREADS`
/// says otherwise. Half is the most the targets allow a pool that is to
/// beat tokio with at most half its threads.
fn floor_threads() -> usize {
    std::env::var("FLOOR_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(256)
}

/// One round of [`Floor`]'s work: `n` calls of `job`, numbered off one
/// counter.
struct Round {
    n: usize,
    next: AtomicUsize,
    job: Arc<dyn Fn(usize) + Send + Sync>,
    left: Arc<Countdown>,
}

/// What a [`Floor`]'s threads share.
struct FloorShared {
    /// The round number and the round (`None`: leave).
    gate: Mutex<(u64, Option<Arc<Round>>)>,
    wake: Condvar,
    /// Threads still to start.
    to_start: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The floor for any pool of so many threads: threads woken together by
/// one broadcast a round, taking task numbers off one atomic counter. No
/// queue, no submission cost, no sizing: what the threads alone cost (their
/// start-up, wake-ups and switches). Started before the clock (`warm`), or
/// at the first round's start, by the submitter and by every new thread
/// before it works (`cold`), as fast as this machine starts threads.
struct Floor {
    shared: Arc<FloorShared>,
}

impl Floor {
    fn empty() -> Self {
        Floor {
            shared: Arc::new(FloorShared {
                gate: Mutex::new((0, None)),
                wake: Condvar::new(),
                to_start: AtomicUsize::new(0),
                threads: Mutex::new(Vec::new()),
            }),
        }
    }

    /// `threads` threads, started and parked before it returns.
    fn warm(threads: usize) -> Self {
        let floor = Floor::empty();
        floor.grow(threads);
        std::thread::sleep(Duration::from_millis(50));
        floor
    }

    /// The floor a bench kind names, its thread count, and whether they
    /// are started before the clock.
    fn of_kind(kind: &str) -> (Self, usize, bool) {
        let threads = floor_threads();
        match kind {
            "floor_warm" => (Floor::warm(threads), threads, true),
            _ => (Floor::empty(), threads, false),
        }
    }

    /// Starts `threads` more: this thread starts them until none is left
    /// to start, and every new one first starts one more.
    fn grow(&self, threads: usize) {
        self.shared.to_start.store(threads, Ordering::Relaxed);
        while Self::start_one(&self.shared) {}
    }

    fn start_one(shared: &Arc<FloorShared>) -> bool {
        let taken = shared
            .to_start
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if taken.is_err() {
            return false;
        }
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            Self::start_one(&s);
            Self::work(&s);
        });
        shared.threads.lock().unwrap().push(thread);
        true
    }

    /// A thread's life: each round once (a thread started during a round
    /// joins it), until told to leave.
    fn work(shared: &FloorShared) {
        let mut seen = 0;
        loop {
            let round = {
                let mut g = shared.gate.lock().unwrap();
                while g.0 == seen {
                    g = shared.wake.wait(g).unwrap();
                }
                seen = g.0;
                match &g.1 {
                    Some(r) => r.clone(),
                    None => return,
                }
            };
            loop {
                let i = round.next.fetch_add(1, Ordering::Relaxed);
                if i >= round.n {
                    break;
                }
                (round.job)(i);
                round.left.count_down();
            }
        }
    }

    /// Starts a round of `n` calls of `job`; the returned latch opens when
    /// all have returned.
    fn start(&self, n: usize, job: Arc<dyn Fn(usize) + Send + Sync>) -> Arc<Countdown> {
        let left = Countdown::new(n);
        let round = Arc::new(Round {
            n,
            next: AtomicUsize::new(0),
            job,
            left: left.clone(),
        });
        let mut g = self.shared.gate.lock().unwrap();
        g.0 += 1;
        g.1 = Some(round);
        drop(g);
        self.shared.wake.notify_all();
        left
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let mut g = self.shared.gate.lock().unwrap();
        g.0 += 1;
        g.1 = None;
        drop(g);
        self.shared.wake.notify_all();
        let threads = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for t in threads {
            t.join().unwrap();
        }
    }
}

/// tokio with one worker per CPU and a blocking pool of up to 512 threads.
fn tokio_blocking_runtime(cpus: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus)
        .max_blocking_threads(512)
        .build()
        .unwrap()
}

/// What one run measured: makespan, peak extra threads, and (elastic
/// ebbtide) the pool's resizes.
type Run = (Duration, usize, Vec<ebbtide::metrics::ResizeEvent>);

/// Prints an elastic run's workers over time, one row per resize.
fn timeline(title: &str, events: &[ebbtide::metrics::ResizeEvent]) {
    if events.is_empty() {
        return;
    }
    println!("\n{title}: workers over time");
    println!("| at | workers | reason | queued | busy | stalled | task CPU share |");
    println!("|---|---|---|---|---|---|---|");
    for e in events {
        let o = &e.observation;
        let share = o
            .task_cpu_share
            .map_or_else(|| "-".to_string(), |s| format!("{s:.3}"));
        println!(
            "| {:.1?} | {} → {} | {:?} | {} | {} | {} | {share} |",
            e.at, e.from, e.to, e.reason, o.queued, o.busy, o.stalled
        );
    }
}

/// Submits `n` copies of `job` to each pool kind and waits for all.
fn run_on(kind: &str, n: usize, job: Job) -> Run {
    let cpus = num_cpus::get();
    let r = match kind {
        "ebbtide" | "ebbtide_block_in_place" => {
            let pool = elastic();
            let announce = kind == "ebbtide_block_in_place";
            let r = measure(|| {
                for _ in 0..n {
                    let job = job.clone();
                    if announce {
                        pool.execute(move || ebbtide::block_in_place(|| job()))
                            .unwrap();
                    } else {
                        pool.execute(move || job()).unwrap();
                    }
                }
                pool.wait_idle();
            });
            let history = pool.resize_history();
            drop(pool);
            return (r.0, r.1, history);
        }
        "ebbtide_fixed_cpus" => {
            let pool = ebbtide::Pool::builder().workers(cpus).build().unwrap();
            measure(|| {
                for _ in 0..n {
                    let job = job.clone();
                    pool.execute(move || job()).unwrap();
                }
                pool.wait_idle();
            })
        }
        "floor_warm" | "floor_cold_start" => {
            let (floor, threads, warm) = Floor::of_kind(kind);
            let r = measure(|| {
                let done = floor.start(n, Arc::new(move |_| job()));
                if !warm {
                    floor.grow(threads);
                }
                done.wait();
            });
            // Started before the clock, or within it.
            return (r.0, if warm { threads } else { r.1 }, Vec::new());
        }
        "tokio_spawn_blocking" => {
            let rt = tokio_blocking_runtime(cpus);
            let r = measure(|| {
                let latch = Countdown::new(n);
                for _ in 0..n {
                    let (job, l) = (job.clone(), latch.clone());
                    drop(rt.spawn_blocking(move || {
                        job();
                        l.count_down();
                    }));
                }
                latch.wait();
            });
            drop(rt);
            r
        }
        "rayon" => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(cpus)
                .build()
                .unwrap();
            measure(|| {
                pool.scope(|s| {
                    for _ in 0..n {
                        let job = job.clone();
                        s.spawn(move |_| job());
                    }
                })
            })
        }
        "threadpool" => {
            let pool = threadpool::ThreadPool::new(cpus);
            measure(|| {
                for _ in 0..n {
                    let job = job.clone();
                    pool.execute(move || job());
                }
                pool.join();
            })
        }
        other => unreachable!("{other}"),
    };
    (r.0, r.1, Vec::new())
}

/// Runs each kind 3 times, the kinds taking turns; prints the medians and
/// each kind's ratios to tokio's, then the workers over time of each
/// elastic kind's median run.
fn table(title: &str, n: usize, job: Job, kinds: &[&str]) {
    let mut runs: Vec<Vec<Run>> = kinds.iter().map(|_| Vec::new()).collect();
    for _ in 0..3 {
        for (kind, runs) in kinds.iter().zip(&mut runs) {
            runs.push(run_on(kind, n, job.clone()));
        }
    }
    println!("\n{title}");
    println!("| pool | makespan (median of 3) | peak extra threads | makespan ÷ tokio's | threads ÷ tokio's |");
    println!("|---|---|---|---|---|");
    let medians: Vec<(Duration, usize)> = runs
        .iter()
        .map(|r| {
            (
                median(r.iter().map(|r| r.0).collect()),
                median(r.iter().map(|r| r.1).collect()),
            )
        })
        .collect();
    let tokio = kinds
        .iter()
        .position(|k| *k == "tokio_spawn_blocking")
        .map(|i| medians[i]);
    for (kind, (makespan, peak)) in kinds.iter().zip(&medians) {
        let (time, threads) = tokio.map_or((String::new(), String::new()), |(t, p)| {
            (
                format!("{:.2}", makespan.as_secs_f64() / t.as_secs_f64()),
                format!("{:.2}", *peak as f64 / p.max(1) as f64),
            )
        });
        println!("| {kind} | {makespan:.1?} | {peak} | {time} | {threads} |");
    }
    for (kind, mut runs) in kinds.iter().zip(runs) {
        runs.sort_by_key(|r| r.0);
        timeline(kind, &runs.swap_remove(1).2);
    }
}

/// What one bursty run measured.
struct Bursts {
    p50: Duration,
    p99: Duration,
    /// Mean over the bursts of first submission → last completion.
    makespan: Duration,
    /// Per burst: its makespan, and when (from its first submission) its
    /// tasks started and ended, at the 10th, 50th, 90th and 100th percentiles.
    detail: Vec<String>,
    peak: usize,
    history: Vec<ebbtide::metrics::ResizeEvent>,
}

/// Per task: its burst, its submit-to-done latency, when it finished, when
/// it started.
type Done = Arc<Mutex<Vec<(usize, Duration, Instant, Instant)>>>;

/// The `q` quantile of sorted figures (the largest for 1).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Three bursts of `n` tasks blocking 2 ms, `gap` apart: submit-to-done
/// latencies (p50, p99), each burst's makespan and peak threads. (A task's
/// latency starts when its submission starts; tokio's `spawn_blocking`
/// starts a thread inside the call, so its thread start-up delays the later
/// submissions rather than the tasks: the burst makespan shows both.)
fn bursty(kind: &str, n: usize, gap: Duration) -> Bursts {
    let done: Done = Arc::new(Mutex::new(Vec::with_capacity(3 * n)));
    let mut starts = Vec::new();
    let work = |burst: usize, submitted: Instant, done: &Done| {
        let began = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        let now = Instant::now();
        done.lock()
            .unwrap()
            .push((burst, now - submitted, now, began));
    };
    let cpus = num_cpus::get();
    let (_, peak, history) = match kind {
        "ebbtide" | "ebbtide_wait_5ms" | "ebbtide_fixed_64" => {
            let pool = match kind {
                "ebbtide" => elastic(),
                "ebbtide_wait_5ms" => ebbtide::Pool::builder()
                    .min_workers(cpus)
                    .max_workers(512)
                    .queue_wait_target(Duration::from_millis(5))
                    .build()
                    .unwrap(),
                _ => ebbtide::Pool::builder().workers(64).build().unwrap(),
            };
            let r = measure(|| {
                for b in 0..3 {
                    if b > 0 {
                        std::thread::sleep(gap);
                    }
                    starts.push(Instant::now());
                    for _ in 0..n {
                        let (d, t) = (done.clone(), Instant::now());
                        pool.execute(move || work(b, t, &d)).unwrap();
                    }
                }
                pool.wait_idle();
            });
            let history = pool.resize_history();
            drop(pool);
            (r.0, r.1, history)
        }
        "floor_warm" | "floor_cold_start" => {
            let (floor, threads, warm) = Floor::of_kind(kind);
            let r = measure(|| {
                for b in 0..3 {
                    if b > 0 {
                        std::thread::sleep(gap);
                    }
                    // Every task of the burst is there at its start.
                    let start = Instant::now();
                    starts.push(start);
                    let d = done.clone();
                    let left = floor.start(n, Arc::new(move |_| work(b, start, &d)));
                    if b == 0 && !warm {
                        floor.grow(threads);
                    }
                    left.wait();
                }
            });
            (r.0, if warm { threads } else { r.1 }, Vec::new())
        }
        "tokio_spawn_blocking" => {
            let rt = tokio_blocking_runtime(cpus);
            let r = measure(|| {
                let latch = Countdown::new(3 * n);
                for b in 0..3 {
                    if b > 0 {
                        std::thread::sleep(gap);
                    }
                    starts.push(Instant::now());
                    for _ in 0..n {
                        let (d, t, l) = (done.clone(), Instant::now(), latch.clone());
                        drop(rt.spawn_blocking(move || {
                            work(b, t, &d);
                            l.count_down();
                        }));
                    }
                }
                latch.wait();
            });
            drop(rt);
            (r.0, r.1, Vec::new())
        }
        other => unreachable!("{other}"),
    };
    let done = done.lock().unwrap();
    let mut lat: Vec<Duration> = done.iter().map(|d| d.1).collect();
    lat.sort();
    let p = |q: f64| quantile(&lat, q);
    let spans: Vec<Duration> = starts
        .iter()
        .enumerate()
        .map(|(b, start)| {
            let last = done.iter().filter(|d| d.0 == b).map(|d| d.2).max();
            last.map_or(Duration::ZERO, |t| t - *start)
        })
        .collect();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let detail = starts
        .iter()
        .enumerate()
        .map(|(b, start)| {
            let since = |at: fn(&(usize, Duration, Instant, Instant)) -> Instant| {
                let mut v: Vec<Duration> = done
                    .iter()
                    .filter(|d| d.0 == b)
                    .map(|d| at(d) - *start)
                    .collect();
                v.sort();
                [0.1, 0.5, 0.9, 1.0]
                    .iter()
                    .map(|&q| ms(quantile(&v, q)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            format!(
                "burst {}: {} ms; started {}; ended {}",
                b + 1,
                ms(spans[b]),
                since(|d| d.3),
                since(|d| d.2)
            )
        })
        .collect();
    let makespan = spans.iter().sum::<Duration>() / 3;
    Bursts {
        p50: p(0.5),
        p99: p(0.99),
        makespan,
        detail,
        peak,
        history,
    }
}

fn main() {
    let cpus = num_cpus::get();
    println!(
        "ebbtide auto-scaling benchmarks ({cpus} CPUs); min_workers = {cpus}, max_workers = 512"
    );
    // `cargo bench --bench scaling -- bursty` runs one section (blocking,
    // cpu, bursty, steady).
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |section: &str| only.as_deref().map_or(true, |o| o == section);

    if run("blocking") {
        let sleep_1ms: Job = Arc::new(|| std::thread::sleep(Duration::from_millis(1)));
        table(
            "blocking: 4,000 tasks each sleeping 1 ms, submitted at once",
            4_000,
            sleep_1ms,
            &[
                "ebbtide",
                "ebbtide_block_in_place",
                "tokio_spawn_blocking",
                "floor_warm",
                "floor_cold_start",
                "rayon",
                "threadpool",
            ],
        );
    }

    if run("cpu") {
        let spin_200us: Job = Arc::new(|| spin(Duration::from_micros(200)));
        table(
            "CPU-bound: 4,000 tasks each spinning 200 µs",
            4_000,
            spin_200us,
            &["ebbtide", "ebbtide_fixed_cpus", "rayon"],
        );
    }

    if run("bursty") {
        bursty_table();
    }

    if run("steady") {
        steady(cpus);
    }

    if run("release") {
        release(cpus, None);
    }

    if run("release-long") {
        release(cpus, Some(Duration::from_secs(10)));
    }
}

/// Threads given back after a load: for ebbtide and tokio, three runs each,
/// taking turns. `long`: 50 ms into the quiet, one task sleeping that long
/// (its thread is not counted as one to give back).
fn release(cpus: usize, long: Option<Duration>) {
    const KEEP_ALIVE: Duration = Duration::from_secs(1);
    const LIMIT: Duration = Duration::from_secs(20);
    println!(
        "\nrelease: 4,000 tasks sleeping 1 ms, then quiet{}; keep-alive 1 s; \
         threads above the pool's resting count over time",
        long.map_or(String::new(), |l| format!(
            ", but for one task sleeping {} s from 50 ms in",
            l.as_secs()
        ))
    );
    for round in 1..=3 {
        let kinds: &[&str] = if long.is_some() {
            &["ebbtide", "ebbtide_block_in_place", "tokio_spawn_blocking"]
        } else {
            &["ebbtide", "tokio_spawn_blocking"]
        };
        for &kind in kinds {
            let base = threads_now();
            let done = Countdown::new(4_000);
            let (pool, rt) = match kind {
                "ebbtide" | "ebbtide_block_in_place" => {
                    let pool = ebbtide::Pool::builder()
                        .min_workers(cpus)
                        .max_workers(512)
                        .keep_alive(KEEP_ALIVE)
                        .build()
                        .unwrap();
                    (Some(pool), None)
                }
                _ => {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(cpus)
                        .max_blocking_threads(512)
                        .thread_keep_alive(KEEP_ALIVE)
                        .build()
                        .unwrap();
                    (None, Some(rt))
                }
            };
            // The pool at rest: its workers, and its supervisor or driver.
            std::thread::sleep(Duration::from_millis(50));
            let rest = threads_now() - base;
            for _ in 0..4_000 {
                let d = done.clone();
                let job = move || {
                    std::thread::sleep(Duration::from_millis(1));
                    d.count_down();
                };
                match (&pool, &rt) {
                    (Some(p), _) => p.execute(job).unwrap(),
                    (_, Some(rt)) => drop(rt.spawn_blocking(job)),
                    _ => unreachable!(),
                }
            }
            done.wait();
            let quiet = Instant::now();
            let peak = threads_now() - base - rest;
            // The long task's thread stays: one more at rest while it runs.
            let rest = rest + usize::from(long.is_some());
            let long_done = Countdown::new(1);
            if let Some(long) = long {
                std::thread::sleep(Duration::from_millis(50));
                let d = long_done.clone();
                let announce = kind == "ebbtide_block_in_place";
                let job = move || {
                    if announce {
                        ebbtide::block_in_place(|| std::thread::sleep(long));
                    } else {
                        std::thread::sleep(long);
                    }
                    d.count_down();
                };
                match (&pool, &rt) {
                    (Some(p), _) => p.execute(job).unwrap(),
                    (_, Some(rt)) => drop(rt.spawn_blocking(job)),
                    _ => unreachable!(),
                }
            }
            let mut marks = Vec::new();
            let mut half = None;
            let back = loop {
                let extra = (threads_now() - base).saturating_sub(rest);
                let at = quiet.elapsed();
                if half.is_none() && extra * 2 <= peak {
                    half = Some(at);
                }
                if extra == 0 || at >= LIMIT {
                    break (extra == 0).then_some(at);
                }
                if marks.last().map_or(true, |&(_, e)| e != extra) {
                    marks.push((at, extra));
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let left = (threads_now() - base).saturating_sub(rest);
            if long.is_some() {
                long_done.wait();
            }
            println!(
                "  round {round} {kind:<22} {peak:>3} threads above rest when quiet; half gone after {}; {}",
                half.map_or("-".into(), |h| format!("{:.2} s", h.as_secs_f64())),
                back.map_or(format!("{left} still there after {} s", LIMIT.as_secs()), |b| {
                    format!("all gone after {:.2} s", b.as_secs_f64())
                })
            );
            drop(pool);
            drop(rt);
        }
    }
}

/// Three bursts per pool kind, three runs each, the kinds taking turns: the
/// medians and their ratios to tokio's and to the fixed 64's, then the
/// median-p99 run's bursts one by one and its workers over time.
fn bursty_table() {
    let kinds = [
        "ebbtide",
        "ebbtide_wait_5ms",
        "tokio_spawn_blocking",
        "ebbtide_fixed_64",
        "floor_warm",
        "floor_cold_start",
    ];
    let mut runs: Vec<Vec<Bursts>> = kinds.iter().map(|_| Vec::new()).collect();
    for _ in 0..3 {
        for (kind, runs) in kinds.iter().zip(&mut runs) {
            runs.push(bursty(kind, 1_000, Duration::from_millis(300)));
        }
    }
    // Per kind: p50, the median-p99 run, makespan and peak (medians).
    let rows: Vec<(Duration, Bursts, Duration, usize)> = runs
        .into_iter()
        .map(|mut r| {
            let p50 = median(r.iter().map(|r| r.p50).collect());
            let makespan = median(r.iter().map(|r| r.makespan).collect());
            let peak = median(r.iter().map(|r| r.peak).collect());
            r.sort_by_key(|r| r.p99);
            (p50, r.swap_remove(1), makespan, peak)
        })
        .collect();
    let of = |kind: &str| &rows[kinds.iter().position(|k| *k == kind).unwrap()];
    let (tokio, fixed) = (of("tokio_spawn_blocking"), of("ebbtide_fixed_64"));
    let ratio = |a: Duration, b: Duration| format!("{:.2}", a.as_secs_f64() / b.as_secs_f64());
    println!("\nbursty: 3 bursts of 1,000 tasks blocking 2 ms, 300 ms apart");
    println!("| pool | p50 latency | p99 latency | burst makespan | peak extra threads | makespan ÷ tokio's | threads ÷ tokio's | p99 ÷ fixed 64's |");
    println!("|---|---|---|---|---|---|---|---|");
    for (kind, (p50, run, makespan, peak)) in kinds.iter().zip(&rows) {
        println!(
            "| {kind} | {p50:.1?} | {:.1?} | {makespan:.1?} | {peak} | {} | {:.2} | {} |",
            run.p99,
            ratio(*makespan, tokio.2),
            *peak as f64 / tokio.3.max(1) as f64,
            ratio(run.p99, fixed.1.p99),
        );
    }
    println!("\nthe median-p99 runs, burst by burst (ms from the burst's first submission; tasks started and ended at the 10th / 50th / 90th / 100th percentile):");
    for (kind, (_, run, _, _)) in kinds.iter().zip(&rows) {
        for line in &run.detail {
            println!("  {kind} {line}");
        }
    }
    for (kind, (_, run, _, _)) in kinds.iter().zip(&rows) {
        timeline(kind, &run.history);
    }
}

/// Steady load at ~70 % utilization: tasks of 1 ms arriving at 0.7 × CPUs
/// per ms, for 10 s.
fn steady(cpus: usize) {
    let pool = elastic();
    let period = Duration::from_micros((1_000.0 / (0.7 * cpus as f64)) as u64);
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < Duration::from_secs(10) {
        pool.execute(|| spin(Duration::from_millis(1))).unwrap();
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    pool.wait_idle();
    let resizes = pool.resize_history();
    println!("\nsteady: 1 ms tasks at 70 % of {cpus} CPUs for 10 s");
    println!("| pool | resize events | workers at the end |");
    println!("|---|---|---|");
    println!("| ebbtide | {} | {} |", resizes.len(), pool.num_workers());
    for e in &resizes {
        println!(
            "  resize at {:.1?}: {} → {} ({:?})",
            e.at, e.from, e.to, e.reason
        );
    }
}
