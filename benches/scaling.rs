//! Auto-scaling against tokio's blocking pool (`spawn_blocking`, grows to
//! 512), rayon and `threadpool` (fixed at the CPU count) and fixed ebbtide
//! pools, in the same run. ebbtide: `min_workers = CPUs`, `max_workers =
//! 512`. Peak threads are sampled from `/proc/self/task` every 200 µs (minus
//! the threads present before). Each figure is the median of 3 runs.
//!
//! Run: `cargo bench --bench scaling`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::Countdown;

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
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

fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
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

/// Submits `n` copies of `job` to each pool kind and waits for all.
fn run_on(kind: &str, n: usize, job: Job) -> (Duration, usize) {
    let cpus = num_cpus::get();
    match kind {
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
            drop(pool);
            r
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
    }
}

fn table(title: &str, n: usize, job: Job, kinds: &[&str]) -> Vec<(String, Duration, usize)> {
    println!("\n{title}");
    println!("| pool | makespan (median of 3) | peak extra threads |");
    println!("|---|---|---|");
    let mut out = Vec::new();
    for kind in kinds {
        let runs: Vec<_> = (0..3).map(|_| run_on(kind, n, job.clone())).collect();
        let makespan = median(runs.iter().map(|r| r.0).collect());
        let peak = median(runs.iter().map(|r| r.1).collect());
        println!("| {kind} | {makespan:.1?} | {peak} |");
        out.push((kind.to_string(), makespan, peak));
    }
    out
}

/// Three bursts of `n` tasks blocking 2 ms, `gap` apart: submit-to-done
/// latencies (p50, p99) and peak threads.
fn bursty(kind: &str, n: usize, gap: Duration) -> (Duration, Duration, usize) {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(3 * n)));
    let work = |submitted: Instant, lat: &Arc<Mutex<Vec<Duration>>>| {
        std::thread::sleep(Duration::from_millis(2));
        lat.lock().unwrap().push(submitted.elapsed());
    };
    let cpus = num_cpus::get();
    let (_, peak) = match kind {
        "ebbtide" | "ebbtide_fixed_64" => {
            let pool = if kind == "ebbtide" {
                elastic()
            } else {
                ebbtide::Pool::builder().workers(64).build().unwrap()
            };
            let r = measure(|| {
                for b in 0..3 {
                    if b > 0 {
                        std::thread::sleep(gap);
                    }
                    for _ in 0..n {
                        let (lat, t) = (latencies.clone(), Instant::now());
                        pool.execute(move || work(t, &lat)).unwrap();
                    }
                }
                pool.wait_idle();
            });
            drop(pool);
            r
        }
        "tokio_spawn_blocking" => {
            let rt = tokio_blocking_runtime(cpus);
            let r = measure(|| {
                let latch = Countdown::new(3 * n);
                for b in 0..3 {
                    if b > 0 {
                        std::thread::sleep(gap);
                    }
                    for _ in 0..n {
                        let (lat, t, l) = (latencies.clone(), Instant::now(), latch.clone());
                        drop(rt.spawn_blocking(move || {
                            work(t, &lat);
                            l.count_down();
                        }));
                    }
                }
                latch.wait();
            });
            drop(rt);
            r
        }
        other => unreachable!("{other}"),
    };
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    (p(0.5), p(0.99), peak)
}

fn main() {
    let cpus = num_cpus::get();
    println!(
        "ebbtide auto-scaling benchmarks ({cpus} CPUs); min_workers = {cpus}, max_workers = 512"
    );

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

    let spin_200us: Job = Arc::new(|| spin(Duration::from_micros(200)));
    table(
        "CPU-bound: 4,000 tasks each spinning 200 µs",
        4_000,
        spin_200us,
        &["ebbtide", "ebbtide_fixed_cpus", "rayon"],
    );

    println!("\nbursty: 3 bursts of 1,000 tasks blocking 2 ms, 300 ms apart");
    println!("| pool | p50 latency | p99 latency | peak extra threads |");
    println!("|---|---|---|---|");
    for kind in ["ebbtide", "tokio_spawn_blocking", "ebbtide_fixed_64"] {
        let runs: Vec<_> = (0..3)
            .map(|_| bursty(kind, 1_000, Duration::from_millis(300)))
            .collect();
        let p50 = median(runs.iter().map(|r| r.0).collect());
        let p99 = median(runs.iter().map(|r| r.1).collect());
        let peak = median(runs.iter().map(|r| r.2).collect());
        println!("| {kind} | {p50:.1?} | {p99:.1?} | {peak} |");
    }

    // Steady load at ~70 % utilisation: tasks of 1 ms arriving at
    // 0.7 × CPUs per ms, for 10 s.
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
