//! Auto-scaling against tokio's blocking pool (`spawn_blocking`, grows to
//! 512), rayon and `threadpool` (fixed at the CPU count) and fixed ebbtide
//! pools, in the same run. ebbtide: `min_workers = CPUs`, `max_workers =
//! 512`. Peak threads are sampled from `/proc/self/status` every 200 µs (minus
//! the threads present before). Each figure is the median of 3 runs.
//!
//! Run: `cargo bench --bench scaling [-- blocking|cpu|bursty|steady]`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
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

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn elastic() -> ebbtide::Pool {
    ebbtide::Pool::builder()
        .min_workers(num_cpus::get())
        .max_workers(512)
        .build()
        .unwrap()
}

type Job = Arc<dyn Fn() + Send + Sync>;

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

/// Runs each kind 3 times; prints the medians, then the workers over time
/// of each elastic kind's median run.
fn table(title: &str, n: usize, job: Job, kinds: &[&str]) {
    println!("\n{title}");
    println!("| pool | makespan (median of 3) | peak extra threads |");
    println!("|---|---|---|");
    let mut timelines = Vec::new();
    for kind in kinds {
        let mut runs: Vec<_> = (0..3).map(|_| run_on(kind, n, job.clone())).collect();
        let peak = median(runs.iter().map(|r| r.1).collect());
        runs.sort_by_key(|r| r.0);
        let (makespan, _, history) = runs.swap_remove(1);
        println!("| {kind} | {makespan:.1?} | {peak} |");
        timelines.push((*kind, history));
    }
    for (kind, history) in timelines {
        timeline(kind, &history);
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
}

/// Three bursts per pool kind, three runs each: the medians, then the
/// median-p99 run's bursts one by one and its workers over time.
fn bursty_table() {
    println!("\nbursty: 3 bursts of 1,000 tasks blocking 2 ms, 300 ms apart");
    println!("| pool | p50 latency | p99 latency | burst makespan | peak extra threads |");
    println!("|---|---|---|---|---|");
    let mut details = Vec::new();
    for kind in [
        "ebbtide",
        "ebbtide_wait_5ms",
        "tokio_spawn_blocking",
        "ebbtide_fixed_64",
    ] {
        let mut runs: Vec<_> = (0..3)
            .map(|_| bursty(kind, 1_000, Duration::from_millis(300)))
            .collect();
        let p50 = median(runs.iter().map(|r| r.p50).collect());
        let makespan = median(runs.iter().map(|r| r.makespan).collect());
        let peak = median(runs.iter().map(|r| r.peak).collect());
        runs.sort_by_key(|r| r.p99);
        let run = runs.swap_remove(1);
        println!(
            "| {kind} | {p50:.1?} | {:.1?} | {makespan:.1?} | {peak} |",
            run.p99
        );
        details.push((kind, run));
    }
    println!("\nthe median-p99 runs, burst by burst (ms from the burst's first submission; tasks started and ended at the 10th / 50th / 90th / 100th percentile):");
    for (kind, run) in &details {
        for line in &run.detail {
            println!("  {kind} {line}");
        }
    }
    for (kind, run) in details {
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
